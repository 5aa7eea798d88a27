//! The one way a request to AWS gets signed: a [`Signer`] holds the key (HMAC credentials or an
//! on-prem RSA key), the region and the clock, and signs a [`SignRequest`] for a signing name.
//! Both kinds build the same SigV4 string to sign ([`sigv4::stamp`]); only the signature over it
//! differs (docs/protocol.md §5.5 for the RSA variant).

use super::clock::Clock;
use super::credentials::Credentials;
use super::sigv4;
use std::time::SystemTime;

/// What signs an RSA string to sign: an on-prem registration's key pair (tests sign with ring).
pub trait PssSigner {
    /// RSASSA-PSS, SHA-256, 32-byte salt.
    fn sign_pss_sha256(&self, message: &[u8]) -> Result<Vec<u8>, String>;
}

/// The key a request is signed with.
pub enum Key<'a> {
    /// SigV4 with HMAC-SHA256 and the secret access key (plus the session token, if any).
    Hmac(&'a Credentials),
    /// The managed-instance variant: `instance_id` as the access key id, base64 RSA-PSS in place
    /// of the hex HMAC.
    Rsa {
        instance_id: &'a str,
        key: &'a dyn PssSigner,
    },
    /// No signature: the calls that create a registration, authorised by the activation code in
    /// their body (docs/protocol.md §5.4).
    Anonymous,
}

/// One request as it is sent: `headers` must already hold `Host` and every other header that
/// will be sent; signing appends its own.
pub struct SignRequest<'a> {
    pub method: &'a str,
    /// The request target as sent (`/` or `/p?a=b`).
    pub path_and_query: &'a str,
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(
        "cannot sign a request as {instance_id} with its RSA key: {reason}; check the \
         registration's private key or register the instance again"
    )]
    RsaKey { instance_id: String, reason: String },
}

/// A key, the region of the endpoint called and the clock whose (skew-corrected) time stamps
/// the request.
pub struct Signer<'a> {
    pub key: Key<'a>,
    pub region: &'a str,
    pub clock: &'a Clock,
}

impl Signer<'_> {
    /// Signs `request` for `service` (the scope's signing name, e.g. `ec2messages`): appends
    /// `X-Amz-Date`, `X-Amz-Security-Token` (HMAC credentials with a token) and `Authorization`;
    /// the RSA kind then adds `X-Amz-Content-Sha256`, which the service reads but the signature
    /// does not cover (as upstream sends it).
    pub fn sign(&self, request: &mut SignRequest<'_>, service: &str) -> Result<(), SignError> {
        self.sign_at(request, service, self.clock.now())
    }

    /// [`Signer::sign`] as of `now` rather than the clock's time (fixed test vectors).
    pub fn sign_at(
        &self,
        request: &mut SignRequest<'_>,
        service: &str,
        now: SystemTime,
    ) -> Result<(), SignError> {
        let (method, path, body) = (request.method, request.path_and_query, request.body);
        let headers = &mut request.headers;
        match &self.key {
            Key::Hmac(credentials) => {
                sigv4::sign(
                    method,
                    path,
                    headers,
                    body,
                    credentials,
                    self.region,
                    service,
                    now,
                );
            }
            Key::Rsa { instance_id, key } => {
                let sts = sigv4::stamp(method, path, headers, body, self.region, service, now);
                let signature = key.sign_pss_sha256(sts.text.as_bytes()).map_err(|reason| {
                    SignError::RsaKey {
                        instance_id: instance_id.to_string(),
                        reason,
                    }
                })?;
                let encoded = crate::base64::encode(&signature);
                let value = sigv4::authorization(instance_id, &sts, &encoded);
                headers.push(("Authorization".to_string(), value));
                headers.push(("X-Amz-Content-Sha256".to_string(), sigv4::sha256_hex(body)));
            }
            Key::Anonymous => {}
        }
        Ok(())
    }
}
