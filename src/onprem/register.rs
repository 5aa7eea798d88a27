//! `ssm-lite register` (docs/protocol.md §5.4): a hybrid activation (code, id, region) becomes a managed
//! instance `mi-…` with its own RSA key; or amazon-ssm-agent's registration is taken over; or
//! the registration is removed.
//!
//! `RegisterManagedInstance` with an activation is the one SSM call made without credentials:
//! the activation code is the proof. With `-role` (upstream's Greengrass registration,
//! `core/agent_parser.go`, `agent/ssm/authregister/`) it is SigV4-signed with the machine's own
//! credentials instead and names the IAM role the instance is to assume. The registration on
//! disk is replaced only once the service has answered, so a failed or refused registration
//! leaves the previous one working.

use super::fingerprint::{self, Hardware};
use super::keys::KeyPair;
use super::store::{KEY_TYPE, Registration, RegistrationStore, StoreError};
use super::vault;
use crate::aws::credentials::{Credentials, Env};
use crate::aws::endpoint::{Endpoint, SSM};
use crate::aws::http::HttpClient;
use crate::aws::imds::ImdsClient;
use crate::aws::jsonrpc::{AwsError, Call};
use crate::aws::signer::Key;
use crate::config::Config;
use crate::timefmt::unix_now;
use serde_json::{Value, json};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const OPERATION: &str = "RegisterManagedInstance";
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A hybrid activation, as created in the Systems Manager console or with `create-activation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    pub code: String,
    pub id: String,
    pub region: String,
}

/// upstream's `-role` registration: no activation; the request is signed with the machine's
/// credentials and the instance gets `iam_role`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRegistration {
    pub iam_role: String,
    pub region: String,
    /// Sent as `Tags` when there are any.
    pub tags: Vec<Tag>,
}

/// One `{"Key":…,"Value":…}` of `-tags`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// `-tags` as upstream's `authregister` reads it: a JSON list of objects whose `Key` and `Value`
/// (matched case-insensitively, as Go's `encoding/json` does) are strings; other fields are
/// ignored, and a tag with an empty key or value is dropped.
pub fn parse_tags(text: &str) -> Result<Vec<Tag>, String> {
    let bad = |why: String| {
        format!(
            "-tags {text:?} is not a JSON list of tags ({why}); write it as              '[{{\"Key\":\"env\",\"Value\":\"lab\"}}]'"
        )
    };
    let list: Vec<serde_json::Map<String, Value>> =
        serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let mut tags = Vec::new();
    for item in &list {
        let field = |name: &str| -> Result<String, String> {
            match item.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
                None | Some((_, Value::Null)) => Ok(String::new()),
                Some((_, Value::String(s))) => Ok(s.clone()),
                Some((k, other)) => Err(bad(format!("{k} is {other}, not a string"))),
            }
        };
        let (key, value) = (field("Key")?, field("Value")?);
        if !key.is_empty() && !value.is_empty() {
            tags.push(Tag { key, value });
        }
    }
    Ok(tags)
}

/// `register`: at least one of `activation` or `role`, `import_amazon_ssm_agent` (never two of
/// them), `clear`, or `similarity_threshold`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterArgs {
    pub activation: Option<Activation>,
    pub role: Option<RoleRegistration>,
    /// `-disableSimilarityCheck`: the new fingerprint is kept whatever the hardware becomes.
    pub disable_similarity_check: bool,
    /// `-fingerprint -similarityThreshold N`: sets the stored fingerprint's threshold only.
    pub similarity_threshold: Option<i32>,
    pub import_amazon_ssm_agent: bool,
    /// Remove the current registration first (alone: only that).
    pub clear: bool,
    /// Replace an existing registration without asking.
    pub yes: bool,
    pub config: Option<PathBuf>,
    pub state_dir: PathBuf,
    /// Where amazon-ssm-agent's vault is, for the import (default: its standard place).
    pub vault_dir: Option<PathBuf>,
}

/// amazon-ssm-agent keeps its registration here (§5.4 vault layout).
pub const AMAZON_SSM_AGENT_VAULT: &str = "/var/lib/amazon/ssm/Vault";
const OVERRIDE_QUESTION: &str = "Instance already registered. Would you like to override existing \
     with new registration information? [Yes/No]: ";

/// Upstream's back-off for registration: 100 ms doubling up to 30 s, ±20 % jitter, 5 retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max_interval: Duration,
    pub retries: u32,
}

pub const REGISTER_RETRY: RetryPolicy = RetryPolicy {
    initial: Duration::from_millis(100),
    max_interval: Duration::from_secs(30),
    retries: 5,
};

impl RetryPolicy {
    /// The wait before retry `n` (0-based): `initial × 2ⁿ`, capped, then ±20 %.
    fn delay(&self, n: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(1 << n.min(20))
            .min(self.max_interval);
        let ms = base.as_millis() as u64;
        Duration::from_millis(crate::random::between(ms - ms / 5, ms + ms / 5))
    }
}

/// A registration that failed, in words for the person at the terminal.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RegisterError(pub String);

impl From<StoreError> for RegisterError {
    fn from(e: StoreError) -> RegisterError {
        RegisterError(e.0)
    }
}

/// Where and how `RegisterManagedInstance` is sent.
pub struct Service<'a> {
    pub http: &'a HttpClient,
    pub endpoint: Endpoint,
    pub retry: RetryPolicy,
}

/// Who vouches for a new registration.
pub enum Authority<'a> {
    /// The activation code, in the body of an unsigned call.
    Activation(&'a Activation),
    /// The machine's credentials, which sign the call; the body names the role.
    Role(&'a RoleRegistration, &'a Credentials),
}

impl Authority<'_> {
    fn region(&self) -> &str {
        match self {
            Authority::Activation(a) => &a.region,
            Authority::Role(r, _) => &r.region,
        }
    }

    /// The body of `RegisterManagedInstance`: the anonymous one's (`anonauth`), or the signed
    /// one's (`authregister`: `IamRole`, and `Tags` only when there are some).
    fn body(&self, fingerprint: &str, key: &KeyPair) -> Value {
        let mut body = json!({
            "Fingerprint": fingerprint,
            "PublicKey": key.public_b64(),
            "PublicKeyType": KEY_TYPE,
        });
        match self {
            Authority::Activation(a) => {
                body["ActivationCode"] = json!(a.code);
                body["ActivationId"] = json!(a.id);
            }
            Authority::Role(r, _) => {
                body["IamRole"] = json!(r.iam_role);
                if !r.tags.is_empty() {
                    let tags: Vec<Value> = r
                        .tags
                        .iter()
                        .map(|t| json!({"Key": t.key, "Value": t.value}))
                        .collect();
                    body["Tags"] = json!(tags);
                }
            }
        }
        body
    }

    fn key(&self) -> Key<'_> {
        match self {
            Authority::Activation(_) => Key::Anonymous,
            Authority::Role(_, credentials) => Key::Hmac(credentials),
        }
    }
}

/// Registers: new key pair, fingerprint (its check disabled when asked, as upstream does before
/// calling the service), `RegisterManagedInstance`, then the registration is saved (replacing
/// any previous one) and returned.
pub fn register(
    store: &RegistrationStore,
    hardware: &Hardware,
    service: &Service<'_>,
    authority: &Authority<'_>,
    disable_similarity_check: bool,
) -> Result<Registration, RegisterError> {
    let key = KeyPair::generate().map_err(|e| RegisterError(e.to_string()))?;
    let key_created = unix_now();
    // Also proves the state dir is writable before the service hears of the new key.
    let fingerprint = fingerprint::instance_fingerprint(store, hardware)?;
    if disable_similarity_check {
        fingerprint::set_similarity_threshold(store, fingerprint::CHECK_DISABLED)?;
    }
    let answer = call_with_retry(service, authority, &authority.body(&fingerprint, &key))?;
    let instance_id = instance_id_from(&answer)?;
    let registration = Registration {
        instance_id,
        region: authority.region().to_owned(),
        key,
        key_created,
        fingerprint,
    };
    store.save(&registration)?;
    store.clear_pending_key()?;
    Ok(registration)
}

/// One JSON 1.1 call, retried on transport errors and `TooManyUpdates` (§5.4).
fn call_with_retry(
    service: &Service<'_>,
    authority: &Authority<'_>,
    body: &Value,
) -> Result<Value, RegisterError> {
    let (http, endpoint) = (service.http, &service.endpoint);
    let call = Call::new(http, endpoint, SSM, OPERATION, body, CALL_TIMEOUT);
    let mut retry = 0;
    loop {
        let result = call
            .attempt(authority.key(), |_| Ok(()))
            .map_err(|(e, _)| e);
        match result {
            Err(e) if retry < service.retry.retries && worth_retrying(&e) => {
                let delay = service.retry.delay(retry);
                retry += 1;
                log::warn!(
                    "RegisterManagedInstance failed ({}); retry {retry} of {} in {} ms",
                    short(&e),
                    service.retry.retries,
                    delay.as_millis()
                );
                std::thread::sleep(delay);
            }
            Err(e) => return Err(explain(&e, &service.endpoint)),
            Ok(answer) => return Ok(answer),
        }
    }
}

fn worth_retrying(e: &AwsError) -> bool {
    match e {
        AwsError::Transport(_) => true,
        AwsError::Service { code, .. } => code == "TooManyUpdates",
        AwsError::Credentials(_) | AwsError::Decode(_) => false,
    }
}

fn short(e: &AwsError) -> String {
    match e {
        AwsError::Service { code, message, .. } => format!("{code}: {message}"),
        AwsError::Transport(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// The service's refusal in plain words, with its own code and message kept for support.
fn explain(e: &AwsError, endpoint: &Endpoint) -> RegisterError {
    let AwsError::Service { code, .. } = e else {
        return RegisterError(format!(
            "cannot reach Systems Manager at {} ({}); check the network, the region and any \
             HTTPS_PROXY setting",
            endpoint.url,
            short(e)
        ));
    };
    let meaning = match code.as_str() {
        "InvalidActivation" | "InvalidActivationId" => {
            "the activation code or id is not valid, or the activation has expired or is used up"
        }
        "TooManyUpdates" => "the service is busy with this activation; try again in a minute",
        "AccessDeniedException" | "UnrecognizedClientException" => {
            "the service refused the activation or the credentials in this region; check \
             --region, and for -role that this machine's credentials may call \
             ssm:RegisterManagedInstance and iam:PassRole on the role"
        }
        "InternalServerError" | "InternalFailure" | "ServiceUnavailable" => {
            "the service failed; try again later"
        }
        _ => "the service refused the registration",
    };
    RegisterError(format!("{meaning} (service said {})", short(e)))
}

fn instance_id_from(answer: &Value) -> Result<String, RegisterError> {
    let id = answer.get("InstanceId").and_then(Value::as_str);
    match id {
        Some(id) if id.starts_with("mi-") && crate::state::safe_file_name(id).is_some() => {
            Ok(id.to_string())
        }
        _ => Err(RegisterError(
            "RegisterManagedInstance answered without a usable InstanceId (expected mi-…); \
             nothing was saved, run register again"
                .into(),
        )),
    }
}

/// Whether an existing registration may be replaced: `--yes`, or the person at the terminal
/// says so; without a terminal, no.
pub fn may_replace(
    yes: bool,
    interactive: bool,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> Result<bool, RegisterError> {
    if yes {
        return Ok(true);
    }
    if !interactive {
        return Err(RegisterError(
            "this machine is already registered; add --yes (or -y) to replace the registration, \
             or run `ssm-lite register --clear` first"
                .into(),
        ));
    }
    let io_err = |e: std::io::Error| RegisterError(format!("cannot ask on the terminal: {e}"));
    output
        .write_all(OVERRIDE_QUESTION.as_bytes())
        .map_err(io_err)?;
    output.flush().map_err(io_err)?;
    let mut answer = String::new();
    input.read_line(&mut answer).map_err(io_err)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "yes" | "y"
    ))
}

/// The register command against injectable places: returns the instance id registered or
/// imported, `None` when the command only cleared.
pub fn run(
    args: &RegisterArgs,
    store: &RegistrationStore,
    hardware: &Hardware,
    vault_dir: &Path,
    confirm: &mut dyn FnMut(bool) -> Result<bool, RegisterError>,
) -> Result<Option<String>, RegisterError> {
    if args.clear {
        store.clear()?;
        eprintln!(
            "ssm-lite register: registration removed from {}",
            store.dir().display()
        );
    }
    if let Some(threshold) = args.similarity_threshold {
        fingerprint::set_similarity_threshold(store, threshold)?;
        eprintln!("ssm-lite register: fingerprint similarity threshold set to {threshold}");
    }
    if args.activation.is_none() && args.role.is_none() && !args.import_amazon_ssm_agent {
        return Ok(None);
    }
    // A corrupt registration stops here too: it is replaced only on purpose, with --clear.
    if store.load()?.is_some() && !confirm(args.yes)? {
        return Err(RegisterError("the existing registration was kept".into()));
    }
    if args.import_amazon_ssm_agent {
        let registration = vault::import(vault_dir, store, hardware).map_err(RegisterError)?;
        return Ok(Some(registration.instance_id));
    }
    let config = Config::load(args.config.as_deref()).map_err(|e| RegisterError(e.to_string()))?;
    let http = HttpClient::for_agent(&config)
        .map_err(|e| RegisterError(format!("cannot set up HTTPS: {e}")))?;
    let credentials;
    let authority = match (&args.activation, &args.role) {
        (Some(activation), _) => Authority::Activation(activation),
        (None, Some(role)) => {
            credentials = machine_credentials(&config)?;
            Authority::Role(role, &credentials)
        }
        (None, None) => unreachable!("checked above"),
    };
    let endpoint = config
        .endpoint(&SSM, authority.region())
        .map_err(|e| RegisterError(e.to_string()))?;
    let service = Service {
        http: &http,
        endpoint,
        retry: REGISTER_RETRY,
    };
    let registration = register(
        store,
        hardware,
        &service,
        &authority,
        args.disable_similarity_check,
    )?;
    Ok(Some(registration.instance_id))
}

/// The credentials a `-role` registration is signed with. Upstream takes the SDK's "remote"
/// provider: a container credentials endpoint, else the EC2 instance profile; ssm-lite reads the
/// instance profile (IMDS) only.
fn machine_credentials(config: &Config) -> Result<Credentials, RegisterError> {
    let http = HttpClient::for_agent(config)
        .map_err(|e| RegisterError(format!("cannot set up HTTP for IMDS: {e}")))?;
    let imds = ImdsClient::new(std::sync::Arc::new(http), &Env::capture());
    imds.role_credentials().map_err(|e| {
        RegisterError(format!(
            "-role registration needs this machine's own AWS credentials, from the EC2 instance              profile, and none could be read: {e}; use an activation (-code/-id) instead"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::endpoint;
    use crate::aws::http::HttpConfig;
    use crate::aws::http::test_server::{Received, Server, response, serve};
    use crate::onprem::fingerprint::tests::fake_machine;
    use crate::onprem::keys::test_key;
    use crate::state::testdir::TestDir;
    use std::io::Cursor;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const FAST: RetryPolicy = RetryPolicy {
        initial: Duration::from_millis(1),
        max_interval: Duration::from_millis(4),
        retries: 5,
    };
    const MI: &str = "mi-0123456789abcdef0";

    fn ok_answer() -> Vec<u8> {
        let body = format!(r#"{{"InstanceId":"{MI}"}}"#);
        response(200, &[], body.as_bytes())
    }

    fn error_answer(code: &str, message: &str) -> Vec<u8> {
        let body = json!({"__type": code, "message": message}).to_string();
        response(400, &[], body.as_bytes())
    }

    /// Answers from `answers` in turn (the last one repeats); `None` closes the connection.
    fn fake_ssm(answers: Vec<Option<Vec<u8>>>) -> Server {
        let next = AtomicUsize::new(0);
        serve(move |_| {
            let i = next.fetch_add(1, Ordering::SeqCst).min(answers.len() - 1);
            answers[i].clone()
        })
    }

    fn requests(server: &Server) -> Vec<Received> {
        server.requests.try_iter().collect()
    }

    struct Setup {
        t: TestDir,
        store: RegistrationStore,
        hardware: Hardware,
        http: HttpClient,
    }

    fn setup() -> Setup {
        let t = TestDir::new("register");
        fake_machine(&t.path().join("root"));
        let config = HttpConfig {
            user_agent: "ssm-lite-test".into(),
            extra_ca_files: vec![],
        };
        Setup {
            store: RegistrationStore::new(&t.path().join("state")),
            hardware: Hardware::under(&t.path().join("root")),
            http: HttpClient::with_proxies(&config, &Default::default()).unwrap(),
            t,
        }
    }

    fn activation() -> Activation {
        Activation {
            code: "Zx9+code/123".into(),
            id: "2e6b2c7a-1111-4444-8888-0123456789ab".into(),
            region: "eu-west-1".into(),
        }
    }

    fn register_with(s: &Setup, server: &Server) -> Result<Registration, RegisterError> {
        let service = Service {
            http: &s.http,
            endpoint: endpoint::resolve("ssm", "eu-west-1", &server.url(), "").unwrap(),
            retry: FAST,
        };
        let activation = activation();
        register(
            &s.store,
            &s.hardware,
            &service,
            &Authority::Activation(&activation),
            false,
        )
    }

    fn existing() -> Registration {
        Registration {
            instance_id: "mi-00000000000000001".into(),
            region: "us-east-1".into(),
            key: test_key().clone(),
            key_created: 1,
            fingerprint: "old".into(),
        }
    }

    #[test]
    fn registers_unsigned_and_stores_the_key_the_service_was_given() {
        let s = setup();
        let server = fake_ssm(vec![Some(ok_answer())]);
        let registration = register_with(&s, &server).unwrap();
        assert_eq!(registration.instance_id, MI);
        assert_eq!(registration.region, "eu-west-1");

        let [request] = <[Received; 1]>::try_from(requests(&server)).unwrap();
        assert_eq!(request.request_line, "POST / HTTP/1.1");
        assert_eq!(
            request.header("x-amz-target"),
            Some("AmazonSSM.RegisterManagedInstance")
        );
        assert_eq!(
            request.header("content-type"),
            Some("application/x-amz-json-1.1")
        );
        assert_eq!(request.header("authorization"), None);
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["ActivationCode"], "Zx9+code/123");
        assert_eq!(body["ActivationId"], activation().id);
        assert_eq!(body["PublicKeyType"], "Rsa");
        assert_eq!(body["Fingerprint"], registration.fingerprint.as_str());
        let public = body["PublicKey"].as_str().unwrap();
        assert!(public.len() >= 392, "{}", public.len());

        let stored = s.store.load().unwrap().unwrap();
        assert_eq!(stored, registration);
        assert_eq!(stored.key.public_b64(), public);
        assert!(stored.key_created > 1_700_000_000);
        // The fingerprint sent is the one kept for this machine.
        assert_eq!(
            fingerprint::instance_fingerprint(&s.store, &s.hardware).unwrap(),
            stored.fingerprint
        );
    }

    fn role(tags: Vec<Tag>) -> RoleRegistration {
        RoleRegistration {
            iam_role: "SSMServiceRole".into(),
            region: "eu-west-1".into(),
            tags,
        }
    }

    /// `authregister`: SigV4 with the machine's keys, `IamRole`, `Tags` only when there are any,
    /// no activation; `-disableSimilarityCheck` leaves the fingerprint's check off.
    #[test]
    fn a_role_registration_is_signed_and_names_the_role_and_tags() {
        let s = setup();
        let credentials = Credentials {
            access_key_id: "AKIDMACHINE".into(),
            secret_access_key: "secret".into(),
            session_token: Some("token".into()),
            expires_at: None,
        };
        let tag = Tag {
            key: "env".into(),
            value: "lab".into(),
        };
        for (tags, want_tags) in [
            (vec![tag], json!([{"Key": "env", "Value": "lab"}])),
            (vec![], Value::Null),
        ] {
            let server = fake_ssm(vec![Some(ok_answer())]);
            let service = Service {
                http: &s.http,
                endpoint: endpoint::resolve("ssm", "eu-west-1", &server.url(), "").unwrap(),
                retry: FAST,
            };
            let role = role(tags);
            let authority = Authority::Role(&role, &credentials);
            let registration = register(&s.store, &s.hardware, &service, &authority, true).unwrap();
            assert_eq!(
                (
                    registration.instance_id.as_str(),
                    registration.region.as_str()
                ),
                (MI, "eu-west-1")
            );
            let [request] = <[Received; 1]>::try_from(requests(&server)).unwrap();
            let auth = request.header("authorization").unwrap();
            assert!(
                auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDMACHINE/"),
                "{auth}"
            );
            assert!(auth.contains("/eu-west-1/ssm/aws4_request"), "{auth}");
            assert_eq!(request.header("x-amz-security-token"), Some("token"));
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            assert_eq!(body["IamRole"], "SSMServiceRole");
            assert_eq!(body["Tags"], want_tags);
            assert!(body.get("ActivationCode").is_none() && body.get("ActivationId").is_none());
            assert_eq!(body["Fingerprint"], registration.fingerprint.as_str());
            let record = s.store.load_fingerprint().unwrap().unwrap();
            assert_eq!(record.similarity_threshold, fingerprint::CHECK_DISABLED);
        }
    }

    #[test]
    fn tags_are_read_as_go_reads_them() {
        let tags = parse_tags(
            r#"[{"Key":"a","Value":"1"},{"KEY":"b","value":"2","Extra":3},{"Key":"c"},{"Key":"","Value":"4"},{"Key":null,"Value":"5"}]"#,
        )
        .unwrap();
        let pairs: Vec<(&str, &str)> = tags
            .iter()
            .map(|t| (t.key.as_str(), t.value.as_str()))
            .collect();
        assert_eq!(pairs, [("a", "1"), ("b", "2")]);
        assert_eq!(parse_tags("[]").unwrap(), []);
        for bad in [
            r#"{"Key":"a"}"#,
            r#"[{"Key":1,"Value":"x"}]"#,
            "[",
            r#"["a"]"#,
        ] {
            let err = parse_tags(bad).unwrap_err();
            assert!(err.contains("is not a JSON list of tags"), "{bad}: {err}");
        }
    }

    #[test]
    fn too_many_updates_and_dropped_connections_are_retried() {
        let s = setup();
        let busy = Some(error_answer("TooManyUpdates", "slow down"));
        let server = fake_ssm(vec![busy, None, Some(ok_answer())]);
        assert_eq!(register_with(&s, &server).unwrap().instance_id, MI);
        assert_eq!(requests(&server).len(), 3);
    }

    #[test]
    fn retries_stop_after_five() {
        let s = setup();
        let server = fake_ssm(vec![Some(error_answer("TooManyUpdates", "busy"))]);
        let err = register_with(&s, &server).unwrap_err().0;
        assert_eq!(requests(&server).len(), 6);
        assert!(err.contains("TooManyUpdates: busy"), "{err}");
        assert!(s.store.load().unwrap().is_none());
    }

    #[test]
    fn a_wrong_activation_is_explained_once_and_keeps_the_old_registration() {
        let s = setup();
        s.store.save(&existing()).unwrap();
        let server = fake_ssm(vec![Some(error_answer(
            "InvalidActivation",
            "Activation ID is not valid",
        ))]);
        let err = register_with(&s, &server).unwrap_err().0;
        assert_eq!(requests(&server).len(), 1);
        assert!(
            err.starts_with("the activation code or id is not valid"),
            "{err}"
        );
        assert!(
            err.contains("(service said InvalidActivation: Activation ID is not valid)"),
            "{err}"
        );
        assert_eq!(s.store.load().unwrap(), Some(existing()));
    }

    #[test]
    fn unusable_answers_save_nothing() {
        let s = setup();
        for body in [r#"{}"#, r#"{"InstanceId":"mi-../../etc"}"#, "not json"] {
            let server = fake_ssm(vec![Some(response(200, &[], body.as_bytes()))]);
            assert!(register_with(&s, &server).is_err(), "{body}");
        }
        assert!(s.store.load().unwrap().is_none());
    }

    #[test]
    fn an_unreachable_service_is_a_network_error() {
        let s = setup();
        let server = fake_ssm(vec![None]);
        let err = register_with(&s, &server).unwrap_err().0;
        assert!(err.starts_with("cannot reach Systems Manager"), "{err}");
        assert_eq!(requests(&server).len(), 6);
    }

    #[test]
    fn replacing_asks_on_a_terminal_and_refuses_without_one() {
        let mut out = Vec::new();
        let mut nothing = Cursor::new(Vec::new());
        assert!(may_replace(true, false, &mut nothing, &mut out).unwrap());
        assert!(out.is_empty());
        let err = may_replace(false, false, &mut nothing, &mut out)
            .unwrap_err()
            .0;
        assert!(err.contains("--yes"), "{err}");
        for (answer, want) in [("Yes\n", true), ("y\n", true), ("No\n", false), ("", false)] {
            let mut out = Vec::new();
            let mut input = Cursor::new(answer.as_bytes().to_vec());
            assert_eq!(
                may_replace(false, true, &mut input, &mut out).unwrap(),
                want
            );
            assert_eq!(String::from_utf8(out).unwrap(), OVERRIDE_QUESTION);
        }
    }

    fn args(s: &Setup, config: Option<&Path>) -> RegisterArgs {
        RegisterArgs {
            activation: Some(activation()),
            config: config.map(Path::to_owned),
            state_dir: s.t.path().join("state"),
            ..RegisterArgs::default()
        }
    }

    /// A config file pointing `Ssm.Endpoint` at the fake service.
    fn config_for(s: &Setup, server: &Server) -> std::path::PathBuf {
        let path = s.t.path().join("amazon-ssm-agent.json");
        let config = json!({"Ssm": {"Endpoint": server.url()}});
        std::fs::write(&path, config.to_string()).unwrap();
        path
    }

    #[test]
    fn the_command_asks_before_replacing_a_registration() {
        let s = setup();
        let server = fake_ssm(vec![Some(ok_answer())]);
        let config = config_for(&s, &server);
        let vault = s.t.path().join("no-vault");
        s.store.save(&existing()).unwrap();
        let mut asked = Vec::new();
        let mut refuse = |yes| {
            asked.push(yes);
            Ok(false)
        };
        let err = run(
            &args(&s, Some(&config)),
            &s.store,
            &s.hardware,
            &vault,
            &mut refuse,
        );
        assert!(err.unwrap_err().0.contains("kept"));
        assert_eq!(asked, [false]);
        assert!(requests(&server).is_empty());
        assert_eq!(s.store.load().unwrap(), Some(existing()));

        let mut agree = |yes: bool| Ok(yes);
        let yes = RegisterArgs {
            yes: true,
            ..args(&s, Some(&config))
        };
        let id = run(&yes, &s.store, &s.hardware, &vault, &mut agree).unwrap();
        assert_eq!(id.as_deref(), Some(MI));
        assert_eq!(s.store.load().unwrap().unwrap().instance_id, MI);
    }

    #[test]
    fn the_command_clears_and_refuses_over_a_corrupt_registration() {
        let s = setup();
        let vault = s.t.path().join("no-vault");
        s.store.save(&existing()).unwrap();
        std::fs::write(s.store.dir().join("registration.json"), "{").unwrap();
        let mut never = |_| -> Result<bool, RegisterError> { panic!("must not ask") };
        // Registering over a corrupt file is refused with the way out...
        let err = run(&args(&s, None), &s.store, &s.hardware, &vault, &mut never);
        assert!(err.unwrap_err().0.contains("register --clear"));
        // ...which is --clear.
        let clear = RegisterArgs {
            activation: None,
            clear: true,
            ..args(&s, None)
        };
        let done = run(&clear, &s.store, &s.hardware, &vault, &mut never).unwrap();
        assert_eq!(done, None);
        assert!(s.store.load().unwrap().is_none());
    }
}
