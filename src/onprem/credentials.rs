//! On-prem AWS credentials (docs/protocol.md §5.5): `RequestManagedInstanceRoleToken`, signed with the
//! instance's own RSA key, answers with temporary credentials. [`provider`] caches them and
//! refreshes at half their lifetime through [`RefreshingCredentials`] (a failed refresh keeps
//! the old credentials until they expire, with back-off); each successful request may be followed
//! by a key rotation, which [`super::rotation`] owns.

use super::keys::KeyPair;
use super::rotation::KeyManager;
use super::rsasign::RsaClient;
use super::shared_credentials::SharedFile;
use super::store::{Registration, RegistrationStore, StoreError};
use crate::aws::credentials::{Credentials, RefreshingCredentials};
use crate::aws::jsonrpc::AwsError;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Deadline of one RSA-signed call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What `RequestManagedInstanceRoleToken` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleToken {
    pub credentials: Credentials,
    /// The service asks for a new key pair (`UpdateKeyPair`).
    pub update_key_pair: bool,
}

/// The two RSA-signed operations of a managed instance: the real service ([`SsmService`]), or a
/// fake in tests.
pub trait ManagedInstanceService: Send + Sync {
    /// `RequestManagedInstanceRoleToken`, signed with `key`.
    fn request_role_token(&self, key: &KeyPair, fingerprint: &str) -> Result<RoleToken, AwsError>;

    /// `UpdateManagedInstancePublicKey`: tells the service `new_key`'s public half, signed with
    /// the current `key`.
    fn update_public_key(&self, key: &KeyPair, new_key: &KeyPair) -> Result<(), AwsError>;
}

/// The service at the SSM endpoint, through RSA-signed calls.
pub struct SsmService {
    client: RsaClient,
}

impl SsmService {
    pub fn new(client: RsaClient) -> SsmService {
        SsmService { client }
    }
}

impl ManagedInstanceService for SsmService {
    fn request_role_token(&self, key: &KeyPair, fingerprint: &str) -> Result<RoleToken, AwsError> {
        let input = json!({ "Fingerprint": fingerprint });
        let output =
            self.client
                .call(key, "RequestManagedInstanceRoleToken", &input, CALL_TIMEOUT)?;
        parse_role_token(&output).map_err(AwsError::Decode)
    }

    fn update_public_key(&self, key: &KeyPair, new_key: &KeyPair) -> Result<(), AwsError> {
        let input = json!({ "NewPublicKey": new_key.public_b64(), "NewPublicKeyType": "Rsa" });
        self.client
            .call(key, "UpdateManagedInstancePublicKey", &input, CALL_TIMEOUT)
            .map(drop)
    }
}

/// Reads a role-token answer. Errors name the field, never its value (these are secrets).
pub fn parse_role_token(output: &Value) -> Result<RoleToken, String> {
    let what = "RequestManagedInstanceRoleToken answer";
    let text = |name: &str| {
        output
            .get(name)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("{what}: {name} is missing or not a non-empty string"))
    };
    let expires_at = output
        .get("TokenExpirationDate")
        .and_then(expiration)
        .ok_or_else(|| {
            format!(
                "{what}: TokenExpirationDate is missing or not a time (epoch seconds or ISO 8601)"
            )
        })?;
    let update_key_pair = match output.get("UpdateKeyPair") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(format!("{what}: UpdateKeyPair is not a boolean")),
    };
    Ok(RoleToken {
        credentials: Credentials {
            access_key_id: text("AccessKeyId")?,
            secret_access_key: text("SecretAccessKey")?,
            session_token: Some(text("SessionToken")?),
            expires_at: Some(expires_at),
        },
        update_key_pair,
    })
}

/// A JSON 1.1 timestamp: epoch seconds (possibly fractional), or an ISO 8601 string.
fn expiration(value: &Value) -> Option<SystemTime> {
    match value {
        Value::Number(n) => {
            let secs = Duration::try_from_secs_f64(n.as_f64()?).ok()?;
            UNIX_EPOCH.checked_add(secs)
        }
        Value::String(s) => crate::timefmt::parse_iso8601(s),
        _ => None,
    }
}

/// The credentials provider of a registered instance: role tokens through `service`, signed
/// with the registration's key, which is rotated (and persisted in `store`) as §5.5 says.
/// `auto_rotate_days` is `Profile.KeyAutoRotateDays` (0: only when the service asks). Fails when
/// a pending key left by an interrupted rotation cannot be read. With `share`, every set of
/// credentials fetched is also written there for scripts (docs/protocol.md §5.7).
pub fn provider(
    registration: Registration,
    store: RegistrationStore,
    service: Box<dyn ManagedInstanceService>,
    auto_rotate_days: u32,
    share: Option<SharedFile>,
) -> Result<RefreshingCredentials, StoreError> {
    let source = format!(
        "SSM RequestManagedInstanceRoleToken for {}",
        registration.instance_id
    );
    let keys = KeyManager::open(registration, Box::new(store), service, auto_rotate_days)?;
    Ok(RefreshingCredentials::new(source, move || {
        let credentials = keys.credentials()?;
        if let Some(share) = &share {
            share.store_logged(&credentials);
        }
        Ok(credentials)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::credentials::CredentialsProvider;
    use crate::aws::endpoint;
    use crate::aws::http::test_server::{Server, response, serve};
    use crate::aws::http::{HttpClient, HttpConfig};
    use crate::onprem::rsasign::test_key;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    fn parse(json: &str) -> Result<RoleToken, String> {
        parse_role_token(&serde_json::from_str(json).unwrap())
    }

    const OK: &str = r#"{"AccessKeyId":"ASIAONPREM","SecretAccessKey":"s3cr3t","SessionToken":"t0k3n",
        "TokenExpirationDate":1700000060.5,"UpdateKeyPair":true}"#;

    #[test]
    fn role_token_with_epoch_or_iso_expiry() {
        let token = parse(OK).unwrap();
        assert_eq!(token.credentials.access_key_id, "ASIAONPREM");
        assert_eq!(token.credentials.secret_access_key, "s3cr3t");
        assert_eq!(token.credentials.session_token.as_deref(), Some("t0k3n"));
        assert_eq!(
            token.credentials.expires_at,
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_060_500))
        );
        assert!(token.update_key_pair);

        let iso = OK
            .replace("1700000060.5", r#""2023-11-14T22:14:20Z""#)
            .replace(r#","UpdateKeyPair":true"#, "");
        let token = parse(&iso).unwrap();
        assert_eq!(
            token.credentials.expires_at,
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_060))
        );
        assert!(!token.update_key_pair, "absent UpdateKeyPair means no");
    }

    #[test]
    fn bad_answers_name_the_field_but_not_the_secrets() {
        let cases = [
            (OK.replace(r#""SessionToken":"t0k3n","#, ""), "SessionToken"),
            (OK.replace("1700000060.5", "-1"), "TokenExpirationDate"),
            (
                OK.replace("1700000060.5", r#""tomorrow""#),
                "TokenExpirationDate",
            ),
            (OK.replace("\"ASIAONPREM\"", "42"), "AccessKeyId"),
            (OK.replace("true", "\"yes\""), "UpdateKeyPair"),
        ];
        for (json, field) in cases {
            let err = parse(&json).unwrap_err();
            assert!(err.contains(field), "{err}");
            assert!(!err.contains("s3cr3t") && !err.contains("t0k3n"), "{err}");
        }
    }

    const MI: &str = "mi-0fedcba9876543210";
    /// Lifetime of the fake service's credentials.
    const LIFETIME: Duration = Duration::from_secs(2);

    /// A fake SSM whose `n`-th role token is `ASIA<n>`, valid for [`LIFETIME`] (as fractional
    /// epoch seconds); request 3 fails with a 500. Requests whose RSA signature does not verify
    /// are refused.
    fn fake_ssm() -> Server {
        let public = test_key::key().public_pkcs1();
        let count = AtomicUsize::new(0);
        serve(move |r| {
            if test_key::check_request(r, "ap-south-1", &public).as_deref() != Ok(MI) {
                return Some(response(400, &[], br#"{"__type":"AccessDeniedException"}"#));
            }
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            if n == 3 {
                return Some(response(500, &[], br#"{"__type":"InternalServerError"}"#));
            }
            let expires = (SystemTime::now() + LIFETIME)
                .duration_since(UNIX_EPOCH)
                .unwrap();
            let body = json!({"AccessKeyId": format!("ASIA{n}"), "SecretAccessKey": "s",
                "SessionToken": "t", "TokenExpirationDate": expires.as_secs_f64()});
            Some(response(200, &[], body.to_string().as_bytes()))
        })
    }

    fn provider_for(server: &Server, dir: &std::path::Path) -> RefreshingCredentials {
        let config = HttpConfig {
            user_agent: "ssm-lite-test".into(),
            extra_ca_files: vec![],
        };
        let http = Arc::new(HttpClient::with_proxies(&config, &Default::default()).unwrap());
        let endpoint = endpoint::resolve("ssm", "ap-south-1", &server.url(), "").unwrap();
        let registration = Registration {
            instance_id: MI.into(),
            region: "ap-south-1".into(),
            key: KeyPair::from_private_b64(test_key::PRIVATE_PKCS1_B64).unwrap(),
            key_created: 1_700_000_000,
            fingerprint: "2f1b6a4e-8f0c-4c3e-9d7a-0b5e6f7a8b9c".into(),
        };
        let service = SsmService::new(RsaClient::new(http, endpoint, MI));
        provider(
            registration,
            RegistrationStore::new(dir),
            Box::new(service),
            0,
            Some(SharedFile {
                path: dir.join("shared"),
                profile: "ssm".into(),
            }),
        )
        .unwrap()
    }

    /// Calls `credentials()` every 10 ms until `done` holds for the answer; returns it and when.
    fn poll_until(
        p: &RefreshingCredentials,
        done: impl Fn(&Result<Credentials, String>) -> bool,
    ) -> (Result<Credentials, String>, Instant) {
        let deadline = Instant::now() + 3 * LIFETIME;
        loop {
            let answer = p.credentials().map_err(|e| e.to_string());
            if done(&answer) {
                return (answer, Instant::now());
            }
            assert!(Instant::now() < deadline, "still {answer:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The access key id in the shared file's `[ssm]` profile.
    fn shared_key(dir: &std::path::Path) -> String {
        let text = std::fs::read_to_string(dir.join("shared")).unwrap();
        let line = text.lines().find(|l| l.starts_with("aws_access_key_id"));
        line.unwrap().rsplit(' ').next().unwrap().to_owned()
    }

    fn key_id(answer: &Result<Credentials, String>) -> &str {
        answer.as_ref().map_or("", |c| c.access_key_id.as_str())
    }

    #[test]
    fn refreshes_at_half_life_and_a_failed_refresh_keeps_the_old_credentials() {
        let dir =
            std::env::temp_dir().join(format!("ssm-lite-onprem-creds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let server = fake_ssm();
        let p = provider_for(&server, &dir);
        let start = Instant::now();
        assert_eq!(p.credentials().unwrap().access_key_id, "ASIA1");
        let r = server.requests.recv().unwrap();
        assert_eq!(
            r.header("x-amz-target"),
            Some("AmazonSSM.RequestManagedInstanceRoleToken")
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&r.body).unwrap(),
            json!({"Fingerprint": "2f1b6a4e-8f0c-4c3e-9d7a-0b5e6f7a8b9c"})
        );

        assert_eq!(shared_key(&dir), "ASIA1", "shared with scripts");
        let (second, at) = poll_until(&p, |a| key_id(a) != "ASIA1");
        assert_eq!(key_id(&second), "ASIA2");
        assert_eq!(shared_key(&dir), "ASIA2", "rewritten after the refresh");
        let waited = at - start;
        assert!(
            waited >= LIFETIME / 2 && waited < LIFETIME * 3 / 4,
            "refreshed after {waited:?}"
        );

        // Request 3 fails: ASIA2 is still handed out while it is usable, then the error shows.
        server.requests.recv().unwrap(); // request 2
        let (answer, _) = poll_until(&p, |_| server.requests.try_recv().is_ok());
        assert_eq!(key_id(&answer), "ASIA2", "kept after the failed refresh");
        let (failed, _) = poll_until(&p, |a| a.is_err());
        let err = failed.unwrap_err();
        assert!(
            err.contains(MI) && err.contains("InternalServerError"),
            "{err}"
        );
        let (fourth, _) = poll_until(&p, |a| a.is_ok());
        assert_eq!(key_id(&fourth), "ASIA4");
        assert_eq!(shared_key(&dir), "ASIA4");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// RSAPublicKey DER inside a 2048-bit key's SubjectPublicKeyInfo (after its fixed header).
    fn pkcs1_of_spki(spki: &[u8]) -> Vec<u8> {
        assert_eq!(spki.len(), 294, "RSA-2048 SubjectPublicKeyInfo");
        spki[24..].to_vec()
    }

    /// A fake SSM that knows one public key, checks every signature against it, asks for a new
    /// key pair in its first role token, and takes the key `UpdateManagedInstancePublicKey` sends.
    fn rotating_ssm() -> (Server, Arc<Mutex<Vec<u8>>>) {
        let known = Arc::new(Mutex::new(test_key::key().public_pkcs1()));
        let registered = known.clone();
        let tokens = AtomicUsize::new(0);
        let server = serve(move |r| {
            let mut key = registered.lock().unwrap();
            if test_key::check_request(r, "ap-south-1", &key).as_deref() != Ok(MI) {
                return Some(response(400, &[], br#"{"__type":"AccessDeniedException"}"#));
            }
            let input: Value = serde_json::from_slice(&r.body).unwrap();
            let answer = match r.header("x-amz-target").unwrap_or_default() {
                "AmazonSSM.UpdateManagedInstancePublicKey" => {
                    assert_eq!(input["NewPublicKeyType"], "Rsa");
                    let b64 = input["NewPublicKey"].as_str().unwrap();
                    assert!(b64.len() >= 392, "{b64}");
                    *key = pkcs1_of_spki(&crate::base64::decode(b64).unwrap());
                    json!({})
                }
                _ => json!({"AccessKeyId": "ASIA", "SecretAccessKey": "s", "SessionToken": "t",
                    "TokenExpirationDate": 4102444800u64,
                    "UpdateKeyPair": tokens.fetch_add(1, Ordering::SeqCst) == 0}),
            };
            Some(response(200, &[], answer.to_string().as_bytes()))
        });
        (server, known)
    }

    fn manager(server: &Server, store: RegistrationStore) -> KeyManager {
        let config = HttpConfig {
            user_agent: "ssm-lite-test".into(),
            extra_ca_files: vec![],
        };
        let http = Arc::new(HttpClient::with_proxies(&config, &Default::default()).unwrap());
        let endpoint = endpoint::resolve("ssm", "ap-south-1", &server.url(), "").unwrap();
        let service = SsmService::new(RsaClient::new(http, endpoint, MI));
        let registration = store.load().unwrap().unwrap();
        KeyManager::open(registration, Box::new(store), Box::new(service), 0).unwrap()
    }

    #[test]
    fn rotation_with_real_keys_is_signed_with_the_old_key_and_survives_a_restart() {
        let dir =
            std::env::temp_dir().join(format!("ssm-lite-onprem-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = RegistrationStore::new(&dir);
        let old = KeyPair::from_private_b64(test_key::PRIVATE_PKCS1_B64).unwrap();
        store
            .save(&Registration {
                instance_id: MI.into(),
                region: "ap-south-1".into(),
                key: old.clone(),
                key_created: 1_700_000_000,
                fingerprint: "fp".into(),
            })
            .unwrap();
        let (server, known) = rotating_ssm();
        let keys = manager(&server, RegistrationStore::new(&dir));
        keys.credentials().unwrap();
        let stored = store.load().unwrap().unwrap();
        assert_ne!(stored.key, old);
        assert_eq!(
            pkcs1_of_spki(&stored.key.public_pkix_der),
            *known.lock().unwrap()
        );
        assert_eq!(store.load_pending_key().unwrap(), None);
        let targets: Vec<_> = server
            .requests
            .try_iter()
            .map(|r| r.header("x-amz-target").map(str::to_string))
            .collect();
        assert_eq!(targets.len(), 2, "{targets:?}");
        // The fake refuses anything not signed with the key it knows: the new one from now on.
        keys.credentials().unwrap();
        drop(keys);
        manager(&server, RegistrationStore::new(&dir))
            .credentials()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
