//! EC2 Default Host Management (docs/protocol.md §5.3 steps 2–3, §5.5): an EC2 instance without an
//! instance-profile role registers itself with its instance identity credentials and then gets
//! role tokens with calls signed twice: plain SigV4 with the identity credentials, plus an
//! `SSM-AsymmetricKeyAuthorization` header that signs the `Authorization` value with its own key.

use super::credentials::{self, ManagedInstanceService, RoleToken};
use super::keys::KeyPair;
use super::rsasign::PssSigner;
use super::shared_credentials::SharedFile;
use super::store::{KEY_TYPE, Registration, RegistrationStore};
use crate::aws::credentials::{CredentialsError, CredentialsProvider, RefreshingCredentials};
use crate::aws::endpoint::{Endpoint, SSM};
use crate::aws::http::HttpClient;
use crate::aws::imds::ImdsClient;
use crate::aws::jsonrpc::{AwsError, Call};
use crate::aws::retry;
use crate::aws::signer::Key;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The header carrying the RSA signature of the `Authorization` value.
pub const ASYMMETRIC_HEADER: &str = "SSM-AsymmetricKeyAuthorization";

/// Deadline of one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// SSM calls signed with the instance identity credentials.
pub struct DhmcClient {
    http: Arc<HttpClient>,
    endpoint: Endpoint,
    identity: Arc<dyn CredentialsProvider>,
}

impl DhmcClient {
    /// `identity` provides the instance identity credentials (IMDS `identity-credentials`).
    pub fn new(
        http: Arc<HttpClient>,
        endpoint: Endpoint,
        identity: Arc<dyn CredentialsProvider>,
    ) -> DhmcClient {
        DhmcClient {
            http,
            endpoint,
            identity,
        }
    }

    /// Calls `AmazonSSM.<operation>` signed with the identity credentials; with `key`, also
    /// with the asymmetric-key header. Clock and credential refusals are fixed and resent once.
    pub fn call(
        &self,
        key: Option<&dyn PssSigner>,
        operation: &str,
        input: &Value,
    ) -> Result<Value, AwsError> {
        let call = Call::new(
            &self.http,
            &self.endpoint,
            SSM,
            operation,
            input,
            CALL_TIMEOUT,
        );
        let provider = self.identity.as_ref();
        retry::signed_call(provider, AwsError::Credentials, |credentials| {
            call.attempt(Key::Hmac(credentials), |headers| match key {
                Some(key) => add_asymmetric_signature(headers, key)
                    .map_err(|e| AwsError::Credentials(CredentialsError::Key(e))),
                None => Ok(()),
            })
        })
    }
}

/// Appends `SSM-AsymmetricKeyAuthorization: Signature=<base64 RSA-PSS of the Authorization
/// value>`; the request must already be signed.
pub fn add_asymmetric_signature(
    headers: &mut Vec<(String, String)>,
    key: &dyn PssSigner,
) -> Result<(), String> {
    let authorization = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("Authorization"))
        .map(|(_, value)| value.clone())
        .ok_or("cannot add the asymmetric-key signature: the request is not signed yet")?;
    let signature = key
        .sign_pss_sha256(authorization.as_bytes())
        .map_err(|e| format!("cannot sign with the EC2 registration key: {e}"))?;
    let value = format!("Signature={}", crate::base64::encode(&signature));
    headers.push((ASYMMETRIC_HEADER.to_owned(), value));
    Ok(())
}

impl ManagedInstanceService for DhmcClient {
    fn request_role_token(&self, key: &KeyPair, fingerprint: &str) -> Result<RoleToken, AwsError> {
        let input = json!({ "Fingerprint": fingerprint });
        let output = self.call(Some(key), "RequestManagedInstanceRoleToken", &input)?;
        credentials::parse_role_token(&output).map_err(AwsError::Decode)
    }

    fn update_public_key(&self, key: &KeyPair, new_key: &KeyPair) -> Result<(), AwsError> {
        let input = json!({ "NewPublicKey": new_key.public_b64(), "NewPublicKeyType": KEY_TYPE });
        self.call(Some(key), "UpdateManagedInstancePublicKey", &input)
            .map(drop)
    }
}

/// The stored EC2 registration of `instance_id`, or a new one: a fresh key pair, saved first (so
/// that a key the service may know is never lost), then `RegisterManagedInstance` with the
/// instance id as fingerprint. `InstanceAlreadyRegistered` counts as success.
pub fn register(
    store: &RegistrationStore,
    client: &DhmcClient,
    instance_id: &str,
    region: &str,
) -> Result<Registration, String> {
    let dir = store.dir().display();
    let stored = store.load().map_err(|e| {
        format!("the EC2 registration under {dir} cannot be read: {e}; remove that directory to register again")
    })?;
    if let Some(registration) = stored.filter(|r| r.instance_id == instance_id) {
        return Ok(registration);
    }
    let registration = Registration {
        instance_id: instance_id.to_owned(),
        region: region.to_owned(),
        key: KeyPair::generate().map_err(|e| e.to_string())?,
        key_created: crate::timefmt::unix_now(),
        fingerprint: instance_id.to_owned(),
    };
    store
        .save(&registration)
        .map_err(|e| format!("cannot save the EC2 registration under {dir}: {e}"))?;
    let input = json!({
        "PublicKey": registration.key.public_b64(),
        "PublicKeyType": KEY_TYPE,
        "Fingerprint": instance_id,
    });
    match client.call(None, "RegisterManagedInstance", &input) {
        Ok(_) => log::info!("dhmc: registered {instance_id} for Default Host Management"),
        Err(AwsError::Service { code, .. }) if code == "InstanceAlreadyRegistered" => {
            log::info!("dhmc: {instance_id} is already registered; using the stored key")
        }
        Err(e) => {
            // Not registered: the next start must try again with a new key.
            if let Err(clear) = store.clear() {
                log::warn!("dhmc: cannot remove the unused registration under {dir}: {clear}");
            }
            return Err(format!(
                "RegisterManagedInstance for {instance_id} (Default Host Management) failed: {e}; \
                 check that Default Host Management is enabled for this account and region"
            ));
        }
    }
    Ok(registration)
}

/// The credentials of an EC2 instance without a role: registers if needed, then role tokens
/// signed as DHMC asks, refreshed at half-life and key-rotated like on-prem ones, and written to
/// `share` for scripts after every refresh (upstream always shares them, docs/protocol.md §5.7).
pub fn provider(
    http: Arc<HttpClient>,
    imds: Arc<ImdsClient>,
    endpoint: Endpoint,
    instance_id: &str,
    store: RegistrationStore,
    auto_rotate_days: u32,
    share: Option<SharedFile>,
) -> Result<RefreshingCredentials, String> {
    let identity = RefreshingCredentials::new("IMDS instance identity credentials", move || {
        imds.identity_credentials().map_err(CredentialsError::Imds)
    });
    let region = endpoint.region.clone();
    let client = DhmcClient::new(http, endpoint, Arc::new(identity));
    let registration = register(&store, &client, instance_id, &region)?;
    credentials::provider(
        registration,
        store,
        Box::new(client),
        auto_rotate_days,
        share,
    )
    .map_err(|e| format!("EC2 registration key of an interrupted rotation: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::credentials::Env;
    use crate::aws::endpoint;
    use crate::aws::http::HttpConfig;
    use crate::aws::http::test_server::{Received, Server, response, serve};
    use crate::aws::imds::fake;
    use crate::onprem::rsasign::test_key;
    use std::sync::Mutex;

    const IID: &str = "i-0123456789abcdef0";
    const IDENTITY_KEY: &str = "ASIAIDENTITY";

    fn http() -> Arc<HttpClient> {
        let config = HttpConfig {
            user_agent: "ssm-lite-test".into(),
            extra_ca_files: vec![],
        };
        Arc::new(HttpClient::new(&config).unwrap())
    }

    fn imds() -> (fake::Server, Arc<ImdsClient>) {
        let server = fake::imds(vec![(
            "meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
            format!(
                r#"{{"Code":"Success","AccessKeyId":"{IDENTITY_KEY}","SecretAccessKey":"s","Token":"t","Expiration":"2999-01-01T00:00:00Z"}}"#
            ),
        )]);
        let env = Env::from_pairs(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.url.as_str())]);
        (server, Arc::new(ImdsClient::new(http(), &env)))
    }

    fn error(code: &str) -> Vec<u8> {
        response(400, &[], format!(r#"{{"__type":"{code}"}}"#).as_bytes())
    }

    /// Whether `r` is HMAC-signed with the identity credentials and its asymmetric header
    /// verifies against `public_pkcs1`.
    fn asymmetric_ok(r: &Received, public_pkcs1: &[u8]) -> bool {
        let authorization = r.header("authorization").unwrap_or_default();
        let signature = r
            .header("ssm-asymmetrickeyauthorization")
            .and_then(|v| v.strip_prefix("Signature="))
            .and_then(|b64| crate::base64::decode(b64).ok());
        authorization.starts_with(&format!("AWS4-HMAC-SHA256 Credential={IDENTITY_KEY}/"))
            && r.header("x-amz-security-token") == Some("t")
            && signature
                .is_some_and(|s| test_key::verifies(public_pkcs1, authorization.as_bytes(), &s))
    }

    /// A fake SSM: registers the first key it is sent (answering `register_error` when set),
    /// and hands out role tokens only to requests whose asymmetric signature verifies.
    fn fake_ssm(register_error: Option<&'static str>) -> Server {
        let known: Mutex<Option<Vec<u8>>> = Mutex::new(None);
        serve(move |r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            let mut key = known.lock().unwrap();
            match r.header("x-amz-target").unwrap_or_default() {
                "AmazonSSM.RegisterManagedInstance" => {
                    assert!(r.header("ssm-asymmetrickeyauthorization").is_none());
                    assert_eq!((body["Fingerprint"].as_str(), body["PublicKeyType"].as_str()), (Some(IID), Some("Rsa")));
                    let spki = crate::base64::decode(body["PublicKey"].as_str().unwrap()).unwrap();
                    key.get_or_insert(spki[24..].to_vec());
                    Some(register_error.map_or_else(|| response(200, &[], b"{}"), error))
                }
                "AmazonSSM.RequestManagedInstanceRoleToken"
                    if body["Fingerprint"] == IID
                        && key.as_ref().is_some_and(|k| asymmetric_ok(r, k)) =>
                {
                    Some(response(200, &[], br#"{"AccessKeyId":"ASIADHMC","SecretAccessKey":"s","SessionToken":"t","TokenExpirationDate":4102444800}"#))
                }
                _ => Some(error("AccessDeniedException")),
            }
        })
    }

    fn state_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ssm-lite-dhmc-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn provider_at(
        ssm: &Server,
        imds: &Arc<ImdsClient>,
        dir: &std::path::Path,
    ) -> Result<RefreshingCredentials, String> {
        let endpoint = endpoint::resolve("ssm", "eu-west-1", &ssm.url(), "").unwrap();
        provider(
            http(),
            imds.clone(),
            endpoint,
            IID,
            RegistrationStore::ec2(dir),
            0,
            Some(SharedFile::for_dhmc(dir)),
        )
    }

    fn targets(ssm: &Server) -> Vec<String> {
        ssm.requests
            .try_iter()
            .map(|r| r.header("x-amz-target").unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn registers_once_then_gets_role_tokens_with_the_asymmetric_signature() {
        let dir = state_dir("register");
        let (_imds_server, imds) = imds();
        let ssm = fake_ssm(None);
        let p = provider_at(&ssm, &imds, &dir).unwrap();
        assert_eq!(p.credentials().unwrap().access_key_id, "ASIADHMC");
        let shared = std::fs::read_to_string(dir.join("credentials")).unwrap();
        assert!(
            shared.starts_with("[default]\naws_access_key_id = ASIADHMC\n"),
            "{shared}"
        );
        assert_eq!(
            targets(&ssm),
            [
                "AmazonSSM.RegisterManagedInstance",
                "AmazonSSM.RequestManagedInstanceRoleToken"
            ]
        );
        let stored = RegistrationStore::ec2(&dir).load().unwrap().unwrap();
        assert_eq!(
            (stored.instance_id.as_str(), stored.fingerprint.as_str()),
            (IID, IID)
        );
        assert!(
            RegistrationStore::new(&dir).load().unwrap().is_none(),
            "on-prem store untouched"
        );

        // A restart reuses the stored key: no second registration.
        let p = provider_at(&ssm, &imds, &dir).unwrap();
        assert_eq!(p.credentials().unwrap().access_key_id, "ASIADHMC");
        assert_eq!(targets(&ssm), ["AmazonSSM.RequestManagedInstanceRoleToken"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn already_registered_is_accepted_and_other_errors_leave_no_registration() {
        let dir = state_dir("already");
        let (_imds_server, imds) = imds();
        let ssm = fake_ssm(Some("InstanceAlreadyRegistered"));
        let p = provider_at(&ssm, &imds, &dir).unwrap();
        assert_eq!(p.credentials().unwrap().access_key_id, "ASIADHMC");

        let dir = state_dir("denied");
        let ssm = fake_ssm(Some("AccessDeniedException"));
        let err = provider_at(&ssm, &imds, &dir).err().unwrap();
        assert!(
            err.contains("RegisterManagedInstance for i-0123456789abcdef0")
                && err.contains("AccessDeniedException"),
            "{err}"
        );
        assert!(RegistrationStore::ec2(&dir).load().unwrap().is_none());
        let _ = std::fs::remove_dir_all(state_dir("already"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
