//! The RSA variant of SigV4 that a managed (on-premises) instance signs its own SSM calls with
//! (docs/protocol.md §5.5): the usual canonical request and string to sign (service `ssm`), the managed
//! instance id as the access key id, no session token, and base64(RSASSA-PSS-SHA256) of the
//! string to sign in place of the hex HMAC.

use super::keys::KeyPair;
use crate::aws::endpoint::{Endpoint, SSM};
use crate::aws::http::HttpClient;
use crate::aws::jsonrpc::{AwsError, Call};
use crate::aws::retry;
use crate::aws::signer::Key;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

pub use crate::aws::signer::PssSigner;

impl PssSigner for KeyPair {
    fn sign_pss_sha256(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        KeyPair::sign_pss_sha256(self, message).map_err(|e| e.to_string())
    }
}

/// AmazonSSM calls signed with a managed instance's RSA key. Cloning shares the connection pool.
#[derive(Clone)]
pub struct RsaClient {
    http: Arc<HttpClient>,
    endpoint: Endpoint,
    instance_id: String,
}

impl RsaClient {
    /// `endpoint` is the SSM endpoint of the registration's region; `instance_id` is `mi-…`.
    pub fn new(http: Arc<HttpClient>, endpoint: Endpoint, instance_id: &str) -> RsaClient {
        RsaClient {
            http,
            endpoint,
            instance_id: instance_id.to_string(),
        }
    }

    /// Calls `AmazonSSM.<operation>` with `input` as the body, signed with `key`; returns the
    /// response object. A key that cannot sign is a `Credentials` error (nothing is sent). A
    /// refusal for the request's time is signed again with the service's time and resent once.
    pub fn call(
        &self,
        key: &dyn PssSigner,
        operation: &str,
        input: &Value,
        timeout: Duration,
    ) -> Result<Value, AwsError> {
        let call = Call::new(&self.http, &self.endpoint, SSM, operation, input, timeout);
        retry::keyed_call(|| {
            let instance_id = &self.instance_id;
            call.attempt(Key::Rsa { instance_id, key }, |_| Ok(()))
        })
    }
}

/// A fixed RSA-2048 test key (made with `openssl genrsa` for these tests only), a ring signer
/// for it, and the service's side of the signature check.
#[cfg(test)]
pub(crate) mod test_key {
    use super::PssSigner;
    use crate::aws::http::test_server::Received;
    use crate::aws::sigv4;
    use ring::rand::SystemRandom;
    use ring::signature::{self, KeyPair as _, RsaKeyPair};

    pub const PRIVATE_PKCS1_B64: &str = concat!(
        "MIIEogIBAAKCAQEAyxZVUQhNxt82/6rnIy35GbgzLm7ZMpFcPx9eIDGINIhWWL5mK7tuZAne0lFRw7R2PYkr+IyPTY5Uq+X7",
        "QFdpEHU36Io4+KqPjSC8cqLNuG4lxqdRirgvjFbbcBnZ2L8eFsGSIiR7vOJ0tLigTAZaQLUasXaz2CN7fkzkQwO2q0pKoeSi",
        "9U/58fBSViuW8qJDdMjesTJL38bGsh1T3XGCL37UYHwLTcEOKQYmcbjo0YxaR8O0arXqCMdjlwmWOqK0zeEGmBsI8w1cnRRr",
        "UTl4ZtwLBKaCC9A3ifuwVixX4R/LTSvUhYqMZjzo+iuNUHXCKFxOtQDAFmZ3Eg0cear7RwIDAQABAoIBADQsWiG1rOmE6ce3",
        "26Z9hou1dyycHJ9xmY273L4Pi4rXZbtpuqzMe5kmsgA9FPDemSvI5Ct3zM7jXFxG+ou2iQ7J1mGetPEpPDTI7rDSo2AYqArH",
        "bFrjY4+9tqUvdvhIbQ3yj7zGu6U0VkAhWEj/rssF28QwlxZVU0IItfGDcDfDqkHuxTBCZMAnpkOXCGCzaypJTluf5Y1FqgGb",
        "LbwRrXzA/0ZCKJKmsn86P7aH+K96Vs7YXIRTVLQApeIP0MICM9DH+9w81UduQv6ZeEGoKlxNOGLZwJ7KZj2SIgyyAV/dK+iA",
        "MC6zicCbmEBnXjh7QwTpjMKyXlIC45b1wo8Q8m0CgYEA9NQqsVBBxph/Zshu383POqoxe8SqRATLc4hfzCbtkLG5VW10j+Oq",
        "e+9aWtjBk6WwK0IjGnOf0UbdDhLTj/c61SDLBW6X6wgdo5Gr05CiTUy/IFr+VgBGa1piLMOhlXmTYBll8/jfHXLBOZp05bV/",
        "OOH/dSSmY7Di/LmCbaXZm2MCgYEA1FqV6eeo9SEpPLMNsMERKgygmykyGLr+nsA6yMOX1KfrjcFTLOnf/3t9c4C0I2QG92Q3",
        "KAvIYCfGvaFB3UXsPIieopNhz1dwaXiS5y5+bfGmq/DWWarNqjfheFan87ldwgVAaXUg/fXIDAiWMKSqBEnrbNI2M/nIVR5a",
        "sBeST80CgYAupACiGNz+/Ww/420j26xfy65zmqqpHJS5pMBDPyNAzmq1OI3dH40J4TZAWky+WPEvvIC9eEt47dwM409EfN/L",
        "XFzw4vmz/67Ny2GFg2c3/KfofQ04ywKfTu+nAXnV5PxLcWs3yDCRBpyC4cblP+dFqeAlq9663SbQ6HJNeyvyawKBgGfpD7SO",
        "dGHG4UvffhKA1upRlYF3bhkl35RFEj7NXw1jQeNyt0WiB8cXYXLUhtFOkA4cjtTctyc+L4T5VKZ3IbsZSy7YmaMA8XPa2V+g",
        "o6Me/WTji7AC4XKqt3zQQo0DprpbIYK5GvTKgSJKTVvuJ3fDyBzO3FEgqAPmv4+taR39AoGAM3S5Z9jAENiwCdDUn0pJ7LT0",
        "YdbffZ9iiFuHQP6uQggJjtLuwX36Mag25WSyHEcsBoD99OO7UX41c84DM5XoxVhGgdqKwRZrCd5q9/3kRdKVvs7ROAnBil0d",
        "aNbA6bLw653vR9tdnG4hhqJnPQmUF9c8uvTsYAwpLtKTigzJN8s=",
    );
    pub fn private_pkcs1_der() -> Vec<u8> {
        crate::base64::decode(PRIVATE_PKCS1_B64).unwrap()
    }

    pub struct TestKey(RsaKeyPair);

    pub fn key() -> TestKey {
        TestKey(RsaKeyPair::from_der(&private_pkcs1_der()).unwrap())
    }

    impl TestKey {
        /// PKCS#1 RSAPublicKey DER, as ring's verifier takes it.
        pub fn public_pkcs1(&self) -> Vec<u8> {
            self.0.public_key().as_ref().to_vec()
        }
    }

    impl PssSigner for TestKey {
        fn sign_pss_sha256(&self, message: &[u8]) -> Result<Vec<u8>, String> {
            let mut out = vec![0; self.0.public().modulus_len()];
            self.0
                .sign(
                    &signature::RSA_PSS_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut out,
                )
                .map_err(|e| format!("ring: {e}"))?;
            Ok(out)
        }
    }

    /// Verifies an RSA-PSS-SHA256 signature with ring (the salt length is read from the
    /// signature, as the service does).
    pub fn verifies(public_pkcs1: &[u8], message: &[u8], signature: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::RSA_PSS_2048_8192_SHA256, public_pkcs1)
            .verify(message, signature)
            .is_ok()
    }

    /// What the service does with a request: rebuild the string to sign from the headers
    /// named in `SignedHeaders`, check the scope, and verify the RSA signature. Returns the
    /// credential (instance id) that signed, or why it does not verify.
    pub fn check_request(
        r: &Received,
        region: &str,
        public_pkcs1: &[u8],
    ) -> Result<String, String> {
        let auth = r.header("authorization").ok_or("no Authorization")?;
        let field = |name: &str| {
            auth.split(", ")
                .find_map(|part| part.split_once(name)?.1.strip_prefix('='))
                .ok_or(format!("no {name} in {auth}"))
        };
        let (credential, signed, signature) = (
            field("Credential")?,
            field("SignedHeaders")?,
            field("Signature")?,
        );
        let date = r.header("x-amz-date").ok_or("no X-Amz-Date")?;
        let sts = sigv4::received_string_to_sign(r, signed, date, region, "ssm");
        let (who, scope) = credential.split_once('/').ok_or("bad Credential")?;
        if scope != sts.scope {
            return Err(format!("scope {scope} is not {}", sts.scope));
        }
        let signature = crate::base64::decode(signature)?;
        if !verifies(public_pkcs1, sts.text.as_bytes(), &signature) {
            return Err("the RSA-PSS signature does not verify".into());
        }
        Ok(who.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::test_key::{self, TestKey};
    use super::*;
    use crate::aws::endpoint;
    use crate::aws::http::HttpConfig;
    use crate::aws::http::test_server::{response, serve};
    use crate::aws::signer::{SignRequest, Signer};
    use crate::aws::sigv4;
    use serde_json::json;
    use std::time::UNIX_EPOCH;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const HELLO_SHA256: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    /// The headers of upstream's `ssm_rsaV4_test.go` request (docs/protocol.md §7.1).
    fn upstream_headers(body: &[u8]) -> Vec<(String, String)> {
        [
            ("Host", "ssm.us-east-1.amazonaws.com".to_string()),
            (
                "X-Amz-Target",
                "AmazonSSM.RequestManagedInstanceRoleToken".into(),
            ),
            ("Content-Type", "application/x-amz-json-1.1".into()),
            ("Content-Length", body.len().to_string()),
            ("X-Amz-Meta-Other-Header", "some-value=!@#$%^&* (+)".into()),
        ]
        .map(|(n, v)| (n.to_string(), v))
        .to_vec()
    }

    fn sign_at_epoch(body: &[u8], key: &TestKey) -> Vec<(String, String)> {
        let instance = "s-1234567890abcdefa";
        let signer = Signer {
            key: Key::Rsa {
                instance_id: instance,
                key,
            },
            region: "us-east-1",
            clock: &crate::aws::clock::PROCESS,
        };
        let mut request = SignRequest {
            method: "POST",
            path_and_query: "/",
            headers: upstream_headers(body),
            body,
        };
        signer.sign_at(&mut request, "ssm", UNIX_EPOCH).unwrap();
        request.headers
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
        let found = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str()).unwrap_or_default()
    }

    #[test]
    fn matches_the_upstream_vector_and_the_signature_verifies() {
        let key = test_key::key();
        let headers = sign_at_epoch(b"{}", &key);
        assert_eq!(header(&headers, "x-amz-date"), "19700101T000000Z");
        let auth = header(&headers, "authorization");
        let prefix = "AWS4-HMAC-SHA256 Credential=s-1234567890abcdefa/19700101/us-east-1/ssm/aws4_request, \
             SignedHeaders=content-length;content-type;host;x-amz-date;x-amz-meta-other-header;x-amz-target, \
             Signature=";
        let signature = auth
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{auth}"));
        let signature = crate::base64::decode(signature).unwrap();
        assert_eq!(signature.len(), 256, "RSA-2048 signature, base64");

        // The signature covers the string to sign of the headers as sent (before the body hash).
        let mut unsigned = upstream_headers(b"{}");
        let sts = sigv4::stamp(
            "POST",
            "/",
            &mut unsigned,
            b"{}",
            "us-east-1",
            "ssm",
            UNIX_EPOCH,
        );
        assert!(sts.text.starts_with(
            "AWS4-HMAC-SHA256\n19700101T000000Z\n19700101/us-east-1/ssm/aws4_request\n"
        ));
        let public = key.public_pkcs1();
        assert!(test_key::verifies(&public, sts.text.as_bytes(), &signature));
        assert!(!test_key::verifies(&public, b"another text", &signature));
        // PSS is randomised: two signatures differ, both verify.
        let again = sign_at_epoch(b"{}", &key);
        assert_ne!(header(&again, "authorization"), auth);
    }

    #[test]
    fn body_hash_header_is_sent_but_not_signed_and_no_token() {
        let key = test_key::key();
        let empty = sign_at_epoch(b"", &key);
        assert_eq!(header(&empty, "x-amz-content-sha256"), EMPTY_SHA256);
        let hello = sign_at_epoch(b"hello", &key);
        assert_eq!(header(&hello, "x-amz-content-sha256"), HELLO_SHA256);
        assert_eq!(
            hello.last().map(|(n, _)| n.as_str()),
            Some("X-Amz-Content-Sha256"),
            "added after Authorization"
        );
        let auth = header(&hello, "authorization");
        assert!(
            !auth.contains("x-amz-content-sha256") && !auth.contains("security-token"),
            "{auth}"
        );
        assert!(
            hello
                .iter()
                .all(|(n, _)| !n.eq_ignore_ascii_case("x-amz-security-token"))
        );
    }

    struct BrokenKey;

    impl PssSigner for BrokenKey {
        fn sign_pss_sha256(&self, _: &[u8]) -> Result<Vec<u8>, String> {
            Err("key unusable".into())
        }
    }

    fn client(url: &str) -> RsaClient {
        let config = HttpConfig {
            user_agent: "ssm-lite-test".into(),
            extra_ca_files: vec![],
        };
        let http = HttpClient::with_proxies(&config, &Default::default()).unwrap();
        let endpoint = endpoint::resolve("ssm", "eu-central-1", url, "").unwrap();
        RsaClient::new(Arc::new(http), endpoint, "mi-0123456789abcdef0")
    }

    #[test]
    fn signed_call_verifies_on_the_service_side() {
        let server = serve(|_| Some(response(200, &[], br#"{"AccessKeyId":"ASIA"}"#)));
        let key = test_key::key();
        let input = json!({"Fingerprint": "f00d"});
        let timeout = Duration::from_secs(5);
        let answer = client(&server.url())
            .call(&key, "RequestManagedInstanceRoleToken", &input, timeout)
            .unwrap();
        assert_eq!(answer, json!({"AccessKeyId": "ASIA"}));
        let r = server.requests.recv().unwrap();
        assert_eq!(
            r.header("x-amz-target"),
            Some("AmazonSSM.RequestManagedInstanceRoleToken")
        );
        assert_eq!(serde_json::from_slice::<Value>(&r.body).unwrap(), input);
        assert_eq!(
            r.header("x-amz-content-sha256"),
            Some(sigv4::sha256_hex(&r.body).as_str())
        );
        let who = test_key::check_request(&r, "eu-central-1", &key.public_pkcs1());
        assert_eq!(who.as_deref(), Ok("mi-0123456789abcdef0"));
        let mut tampered = r.clone();
        tampered.body = br#"{"Fingerprint":"beef"}"#.to_vec();
        assert!(test_key::check_request(&tampered, "eu-central-1", &key.public_pkcs1()).is_err());
    }

    #[test]
    fn service_errors_are_decoded_and_a_broken_key_sends_nothing() {
        let body =
            br#"{"__type":"com.amazonaws.ssm#InvalidInstanceId","message":"not registered"}"#;
        let server = serve(move |_| Some(response(400, &[], body)));
        let c = client(&server.url());
        let timeout = Duration::from_secs(5);
        let err = c.call(
            &test_key::key(),
            "UpdateManagedInstancePublicKey",
            &json!({}),
            timeout,
        );
        assert!(
            matches!(&err, Err(AwsError::Service { status: 400, code, message }) if code == "InvalidInstanceId" && message == "not registered"),
            "{err:?}"
        );
        let err = c.call(
            &BrokenKey,
            "RequestManagedInstanceRoleToken",
            &json!({}),
            timeout,
        );
        assert!(
            matches!(&err, Err(AwsError::Credentials(e)) if e.to_string().contains("mi-0123456789abcdef0") && e.to_string().contains("key unusable")),
            "{err:?}"
        );
        assert_eq!(server.connections(), 1);
    }
}
