//! The identity the agent runs as, chosen by `Identity.ConsumptionOrder` (docs/protocol.md §5.1):
//! OnPrem (a hybrid-activation registration under the state dir), EC2 (IMDS), CustomIdentity.

use crate::aws::credentials::{
    self, CredentialsError, CredentialsProvider, Env, RefreshingCredentials,
};
use crate::aws::endpoint;
use crate::aws::http::HttpClient;
use crate::aws::imds::{ImdsClient, ImdsError};
use crate::config::Config;
use crate::onprem::credentials::{self as onprem_credentials, SsmService};
use crate::onprem::dhmc;
use crate::onprem::rsasign::RsaClient;
use crate::onprem::shared_credentials::SharedFile;
use crate::onprem::store::RegistrationStore;
use crate::session::runas;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    OnPrem,
    Ec2,
    Custom,
}

/// Who the agent is: ids for `Destination` and paths, region, placement, and credentials.
#[derive(Clone)]
pub struct Identity {
    pub kind: IdentityKind,
    pub instance_id: String,
    pub region: String,
    pub availability_zone: String,
    pub availability_zone_id: String,
    pub instance_type: String,
    pub credentials: Arc<dyn CredentialsProvider>,
    /// Where the role credentials are shared with scripts (docs/protocol.md §5.7), if anywhere.
    pub shared_credentials: Option<SharedFile>,
}

/// Everything but the credentials provider, which has nothing printable.
impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("kind", &self.kind)
            .field("instance_id", &self.instance_id)
            .field("region", &self.region)
            .field("availability_zone", &self.availability_zone)
            .field("availability_zone_id", &self.availability_zone_id)
            .field("instance_type", &self.instance_type)
            .field("shared_credentials", &self.shared_credentials)
            .finish_non_exhaustive()
    }
}

/// No identity matched: each entry of the consumption order tried, and why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityError {
    pub tried: Vec<(String, String)>,
    /// The last one tried is configured but broken (an unreadable registration): selection
    /// stopped there, and retrying will not help.
    pub fatal: bool,
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (true, Some((name, why))) = (self.fatal, self.tried.last()) {
            return write!(f, "identity {name} is configured but cannot be used: {why}");
        }
        f.write_str("no identity is usable; tried Identity.ConsumptionOrder:")?;
        for (name, why) in &self.tried {
            write!(f, " {name}: {why};")?;
        }
        f.write_str(
            " to fix: on EC2, let the agent reach IMDS with IMDSv2 and attach an instance profile; \
             elsewhere, add an entry {\"InstanceID\", \"Region\", \"CredentialsProvider\": \"DEFAULT\"} to \
             Identity.CustomIdentities in amazon-ssm-agent.json, list \"CustomIdentity\" in \
             Identity.ConsumptionOrder, and provide AWS credentials (environment or ~/.aws/credentials)",
        )
    }
}

impl std::error::Error for IdentityError {}

/// Where the instance runs, as the health ping reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    pub availability_zone: String,
    pub availability_zone_id: String,
}

/// Why one entry of the consumption order was not chosen.
enum Rejected {
    /// Not available on this host: try the next one.
    Unusable(String),
    /// Present but broken: stop, as falling back to another identity would hide it.
    Broken(String),
}

impl From<String> for Rejected {
    fn from(why: String) -> Rejected {
        Rejected::Unusable(why)
    }
}

/// On-prem instances report this as availability zone and instance type (docs/protocol.md §5.4).
const ONPREM: &str = "OnPrem";

/// The placement probe must not delay a host without IMDS: one attempt, one second.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Tries each identity of `Identity.ConsumptionOrder` in turn; the first usable one wins, and a
/// broken one (an unreadable registration) stops the search with a fatal error. `env` supplies
/// the IMDS endpoint switches and the default credential chain's variables; `state_dir` holds
/// the on-prem registration.
pub fn select(
    config: &Config,
    http: Arc<HttpClient>,
    env: &Env,
    state_dir: &Path,
) -> Result<Identity, IdentityError> {
    select_in_order(&config.identity.consumption_order, |name| match name {
        "OnPrem" => match onprem_identity(config, http.clone(), env, state_dir) {
            Ok(Some(identity)) => Ok(identity),
            Ok(None) => Err(Rejected::Unusable(format!(
                "not registered (nothing under {}); register with `ssm-lite register --code C --id I --region R`",
                state_dir.display()
            ))),
            Err(why) => Err(Rejected::Broken(why)),
        },
        "EC2" => {
            let imds = Arc::new(ImdsClient::new(http.clone(), env));
            ec2_identity(config, http.clone(), imds, state_dir).map_err(Rejected::from)
        }
        "CustomIdentity" => custom_identity(config, env).map_err(Rejected::from),
        "ECS" => {
            log::warn!(
                "identity: ECS in Identity.ConsumptionOrder is not supported by ssm-lite; skipping it"
            );
            Err("not supported by ssm-lite".to_owned().into())
        }
        other => Err(format!("unknown identity {other:?}").into()),
    })
}

fn select_in_order(
    order: &[String],
    mut try_one: impl FnMut(&str) -> Result<Identity, Rejected>,
) -> Result<Identity, IdentityError> {
    let mut tried = Vec::new();
    for name in order {
        match try_one(name) {
            Ok(identity) => {
                log::info!(
                    "identity: using {name}: instance {} in region {}",
                    identity.instance_id,
                    identity.region
                );
                return Ok(identity);
            }
            Err(Rejected::Unusable(why)) => {
                log::info!("identity: {name} is not usable: {why}");
                tried.push((name.clone(), why));
            }
            Err(Rejected::Broken(why)) => {
                tried.push((name.clone(), why));
                return Err(IdentityError { tried, fatal: true });
            }
        }
    }
    Err(IdentityError {
        tried,
        fatal: false,
    })
}

/// The `OnPrem` identity when `state_dir` holds a registration (docs/protocol.md §5.4), with
/// credentials from RSA-signed role-token requests (§5.5); `Ok(None)` when not registered.
/// `Err` when a registration exists but cannot be used: the agent must stop and say so rather
/// than run as another identity or register again. With `Profile.ShareCreds`, the credentials
/// are shared with scripts in the file `env` points to (§5.7).
pub fn onprem_identity(
    config: &Config,
    http: Arc<HttpClient>,
    env: &Env,
    state_dir: &Path,
) -> Result<Option<Identity>, String> {
    let store = RegistrationStore::new(state_dir);
    let registration = store.load().map_err(|e| {
        format!(
            "the registration under {} cannot be read: {e}; restore it from a backup, or clear it (`ssm-lite register --clear`) and register again",
            state_dir.display()
        )
    })?;
    let Some(registration) = registration else {
        return Ok(None);
    };
    let region = region(config, &registration.region);
    let endpoint = config
        .endpoint(&endpoint::SSM, &region)
        .map_err(|e| format!("SSM endpoint for {}: {e}", registration.instance_id))?;
    let instance_id = registration.instance_id.clone();
    let service = SsmService::new(RsaClient::new(http, endpoint, &instance_id));
    let rotate_days = config.profile.key_auto_rotate_days;
    let share = onprem_share(config, env);
    let credentials = onprem_credentials::provider(
        registration,
        store,
        Box::new(service),
        rotate_days,
        share.clone(),
    )
    .map_err(|e| {
        format!(
            "the new key of an interrupted key rotation under {} cannot be read: {e}",
            state_dir.display()
        )
    })?;
    Ok(Some(Identity {
        kind: IdentityKind::OnPrem,
        instance_id,
        region,
        availability_zone: ONPREM.to_owned(),
        availability_zone_id: String::new(),
        instance_type: ONPREM.to_owned(),
        credentials: Arc::new(credentials),
        shared_credentials: share,
    }))
}

/// The hybrid node's shared credentials file when `Profile.ShareCreds` is on; as upstream, a
/// path that cannot be found means not sharing, with an error in the log.
fn onprem_share(config: &Config, env: &Env) -> Option<SharedFile> {
    if !config.profile.share_creds {
        return None;
    }
    let agent_home = || runas::agent_home(&runas::Host::system());
    SharedFile::for_onprem(env, &config.profile.share_profile, agent_home)
        .inspect_err(|e| log::error!("identity: not sharing credentials with scripts: {e}"))
        .ok()
}

/// `Agent.Region` overrides the region the identity discovered (docs/protocol.md §1.1).
fn region(config: &Config, discovered: &str) -> String {
    if config.agent.region.is_empty() {
        discovered
    } else {
        &config.agent.region
    }
    .to_owned()
}

/// The EC2 identity: instance id and identity document over IMDSv2; credentials are the instance
/// profile's, refreshed through the same client, or without a role Default Host Management's
/// (registration under `state_dir`), whose credentials are shared with scripts (§5.7).
fn ec2_identity(
    config: &Config,
    http: Arc<HttpClient>,
    imds: Arc<ImdsClient>,
    state_dir: &Path,
) -> Result<Identity, String> {
    let instance_id = imds.instance_id().map_err(|e| e.to_string())?;
    let document = imds.identity_document().map_err(|e| e.to_string())?;
    let region = region(config, &document.region);
    let availability_zone_id = imds.availability_zone_id().unwrap_or_else(|e| {
        log::warn!("identity: no availability zone id from IMDS ({e}); reporting it empty");
        String::new()
    });
    let dhmc_share = SharedFile::for_dhmc(state_dir);
    let (credentials, shared_credentials): (Arc<dyn CredentialsProvider>, _) = match imds
        .role_credentials()
    {
        Err(ImdsError::NoRole) => {
            log::info!("identity: no instance-profile role; using EC2 Default Host Management");
            let endpoint = config
                .endpoint(&endpoint::SSM, &region)
                .map_err(|e| format!("SSM endpoint for {instance_id}: {e}"))?;
            let store = RegistrationStore::ec2(state_dir);
            let rotate_days = config.profile.key_auto_rotate_days;
            let share = Some(dhmc_share);
            let provider = dhmc::provider(
                http,
                imds,
                endpoint,
                &instance_id,
                store,
                rotate_days,
                share.clone(),
            )?;
            (Arc::new(provider) as Arc<dyn CredentialsProvider>, share)
        }
        _ => {
            // Upstream purges Default Host Management's file once an instance profile is in
            // use: scripts must not pick up a role the node no longer has.
            if let Err(e) = crate::state::remove_file(&dhmc_share.path) {
                log::warn!("identity: {e}");
            }
            let provider = RefreshingCredentials::new("IMDS instance-profile role", move || {
                imds.role_credentials().map_err(CredentialsError::Imds)
            });
            (Arc::new(provider) as Arc<dyn CredentialsProvider>, None)
        }
    };
    Ok(Identity {
        kind: IdentityKind::Ec2,
        instance_id,
        region,
        availability_zone: document.availability_zone,
        availability_zone_id,
        instance_type: document.instance_type,
        credentials,
        shared_credentials,
    })
}

/// The first `Identity.CustomIdentities` entry, with credentials from the default chain; the
/// credentials are read now so that a missing key shows up in the selection error.
fn custom_identity(config: &Config, env: &Env) -> Result<Identity, String> {
    let entry = config.identity.custom_identities.first().ok_or(
        "Identity.CustomIdentities is empty; add an entry with InstanceID, Region and CredentialsProvider \"DEFAULT\"",
    )?;
    let provider = &entry.credentials_provider;
    // An omitted CredentialsProvider means the default chain, which is all ssm-lite offers.
    if !(provider.is_empty() || provider.eq_ignore_ascii_case("DEFAULT")) {
        return Err(format!(
            "CredentialsProvider {provider:?} is not supported; use \"DEFAULT\" (environment, then the shared credentials and config files)"
        ));
    }
    let credentials = credentials::default_chain_provider(env.clone());
    credentials.credentials().map_err(|e| e.to_string())?;
    Ok(Identity {
        kind: IdentityKind::Custom,
        instance_id: entry.instance_id.clone(),
        region: region(config, &entry.region),
        availability_zone: entry.availability_zone.clone(),
        availability_zone_id: entry.availability_zone_id.clone(),
        instance_type: entry.instance_type.clone(),
        credentials: Arc::new(credentials),
        shared_credentials: None,
    })
}

/// One quick IMDS lookup of the placement (one attempt, one-second deadline), for the health
/// ping of a non-EC2 identity on a host where IMDS answers anyway (docs/protocol.md §9 item 7).
pub fn probe_placement(http: Arc<HttpClient>, env: &Env) -> Option<Placement> {
    let imds = ImdsClient::new(http, env).with_limits(PROBE_TIMEOUT, 1);
    let document = match imds.identity_document() {
        Ok(document) => document,
        Err(e) => {
            log::debug!("identity: no placement from IMDS: {e}");
            return None;
        }
    };
    Some(Placement {
        availability_zone: document.availability_zone,
        availability_zone_id: imds.availability_zone_id().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::http::HttpConfig;
    use crate::aws::http::test_server::{Server, response, serve};
    use crate::aws::imds::fake;
    use crate::onprem::keys::KeyPair;
    use crate::onprem::rsasign::test_key;
    use crate::onprem::store::Registration;
    use std::path::PathBuf;

    fn config(json: &str) -> Config {
        match Config::from_json(json) {
            Ok(c) => c,
            Err(e) => panic!("{e:?}"),
        }
    }

    const CUSTOM: &str = r#"{"Identity":{"ConsumptionOrder":["OnPrem","EC2","CustomIdentity"],"CustomIdentities":[
        {"InstanceID":"i-0custom000000000","Region":"eu-west-1","AvailabilityZone":"eu-west-1b","CredentialsProvider":"DEFAULT"}]}}"#;

    fn key_env(extra: &[(&str, &str)]) -> Env {
        let mut pairs = vec![
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ];
        pairs.extend_from_slice(extra);
        Env::from_pairs(&pairs)
    }

    fn http() -> Arc<HttpClient> {
        let config = HttpConfig {
            user_agent: "ssm-lite-test".into(),
            extra_ca_files: Vec::new(),
        };
        Arc::new(HttpClient::new(&config).unwrap())
    }

    fn fake_identity(id: &str) -> Identity {
        let c = config(CUSTOM);
        Identity {
            instance_id: id.into(),
            ..custom_identity(&c, &key_env(&[])).unwrap()
        }
    }

    #[test]
    fn first_usable_identity_wins_and_later_ones_are_not_tried() {
        let order: Vec<String> = ["OnPrem", "EC2", "CustomIdentity"]
            .map(String::from)
            .to_vec();
        let mut asked = Vec::new();
        let chosen = select_in_order(&order, |name| {
            asked.push(name.to_owned());
            if name == "EC2" {
                Ok(fake_identity("i-0ec2"))
            } else {
                Err(Rejected::Unusable("no".into()))
            }
        })
        .unwrap();
        assert_eq!(chosen.instance_id, "i-0ec2");
        assert_eq!(asked, ["OnPrem", "EC2"]);
    }

    #[test]
    fn the_error_lists_every_attempt_and_what_to_configure() {
        let order: Vec<String> = ["OnPrem", "ECS"].map(String::from).to_vec();
        let err = select_in_order(&order, |name| Err(format!("{name} failed").into())).unwrap_err();
        assert_eq!(err.tried.len(), 2);
        assert!(!err.fatal);
        let text = err.to_string();
        assert!(
            text.contains("OnPrem: OnPrem failed;") && text.contains("ECS: ECS failed;"),
            "{text}"
        );
        assert!(
            text.contains("Identity.CustomIdentities") && text.contains("IMDSv2"),
            "{text}"
        );
    }

    #[test]
    fn custom_identity_uses_the_entry_and_the_default_chain() {
        let id = custom_identity(&config(CUSTOM), &key_env(&[])).unwrap();
        assert_eq!(id.kind, IdentityKind::Custom);
        assert_eq!(
            (id.instance_id.as_str(), id.region.as_str()),
            ("i-0custom000000000", "eu-west-1")
        );
        assert_eq!(id.availability_zone, "eu-west-1b");
        assert_eq!(
            id.credentials.credentials().unwrap().access_key_id,
            "AKIDEXAMPLE"
        );
    }

    #[test]
    fn agent_region_overrides_the_identity_region() {
        let c = config(&CUSTOM.replacen('{', r#"{"Agent":{"Region":"us-east-2"},"#, 1));
        assert_eq!(
            custom_identity(&c, &key_env(&[])).unwrap().region,
            "us-east-2"
        );
    }

    #[test]
    fn custom_identity_errors_say_what_is_missing() {
        let err = custom_identity(&config(CUSTOM), &Env::default())
            .err()
            .unwrap();
        assert!(err.contains("no AWS credentials found"), "{err}");
        let c = config(&CUSTOM.replace("\"DEFAULT\"", "\"SharedCredentials\""));
        let err = custom_identity(&c, &key_env(&[])).unwrap_err();
        assert!(
            err.contains("\"SharedCredentials\" is not supported"),
            "{err}"
        );
        let err = custom_identity(&Config::default(), &key_env(&[]))
            .err()
            .unwrap();
        assert!(err.contains("Identity.CustomIdentities is empty"), "{err}");
    }

    #[test]
    fn a_broken_identity_stops_the_search() {
        let order: Vec<String> = ["OnPrem", "EC2"].map(String::from).to_vec();
        let mut asked = Vec::new();
        let err = select_in_order(&order, |name| {
            asked.push(name.to_owned());
            Err(Rejected::Broken("registration unreadable".into()))
        })
        .unwrap_err();
        assert_eq!(asked, ["OnPrem"]);
        assert!(err.fatal);
        assert_eq!(
            err.to_string(),
            "identity OnPrem is configured but cannot be used: registration unreadable"
        );
    }

    /// A fresh, empty state dir for one test.
    fn state_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ssm-lite-identity-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const MI: &str = "mi-0a1b2c3d4e5f60718";

    /// Registers the test key as `MI` in eu-north-1 under `dir`.
    fn register(dir: &Path) -> Registration {
        let registration = Registration {
            instance_id: MI.into(),
            region: "eu-north-1".into(),
            key: KeyPair::from_private_b64(test_key::PRIVATE_PKCS1_B64).unwrap(),
            key_created: 1_700_000_000,
            fingerprint: crate::random::uuid_v4(),
        };
        RegistrationStore::new(dir).save(&registration).unwrap();
        registration
    }

    /// A fake SSM that answers role-token requests whose RSA signature verifies.
    fn fake_ssm() -> Server {
        let public = test_key::key().public_pkcs1();
        serve(move |r| {
            match test_key::check_request(r, "eu-north-1", &public) {
            Ok(who) if who == MI => Some(response(
                200,
                &[],
                br#"{"AccessKeyId":"ASIAONPREM","SecretAccessKey":"s","SessionToken":"t","TokenExpirationDate":4102444800}"#,
            )),
            _ => Some(response(400, &[], br#"{"__type":"AccessDeniedException"}"#)),
        }
        })
    }

    #[test]
    fn a_registration_gives_the_onprem_identity_with_rsa_signed_credentials() {
        let dir = state_dir("registered");
        let registration = register(&dir);
        let server = fake_ssm();
        let c = config(&CUSTOM.replacen(
            '{',
            &format!(r#"{{"Ssm":{{"Endpoint":"{}"}},"#, server.url()),
            1,
        ));
        let shared = dir.join("aws/credentials");
        let env = key_env(&[
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_SHARED_CREDENTIALS_FILE", shared.to_str().unwrap()),
        ]);
        let id = select(&c, http(), &env, &dir).unwrap();
        assert_eq!(id.kind, IdentityKind::OnPrem);
        assert_eq!(id.shared_credentials.as_ref().unwrap().path, shared);
        assert_eq!(
            (id.instance_id.as_str(), id.region.as_str()),
            (MI, "eu-north-1")
        );
        assert_eq!(
            (id.availability_zone.as_str(), id.instance_type.as_str()),
            ("OnPrem", "OnPrem")
        );
        assert_eq!(id.availability_zone_id, "");
        assert_eq!(server.connections(), 0, "no network call to select it");
        assert_eq!(
            id.credentials.credentials().unwrap().access_key_id,
            "ASIAONPREM"
        );
        let r = server.requests.recv().unwrap();
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"Fingerprint": registration.fingerprint})
        );
        let text = std::fs::read_to_string(&shared).unwrap();
        assert!(
            text.starts_with("[default]\naws_access_key_id = ASIAONPREM\n"),
            "shared with scripts: {text}"
        );

        let c = config(r#"{"Profile":{"ShareCreds":false}}"#);
        let id = onprem_identity(&c, http(), &env, &dir).unwrap().unwrap();
        assert!(id.shared_credentials.is_none(), "Profile.ShareCreds false");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Overwrites every file under `dir` with bytes no store can read.
    fn corrupt(dir: &Path) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                corrupt(&path);
            } else {
                std::fs::write(&path, b"\x00 not a registration").unwrap();
            }
        }
    }

    #[test]
    fn an_unreadable_registration_stops_the_agent_instead_of_falling_back() {
        let dir = state_dir("corrupt");
        register(&dir);
        corrupt(&dir);
        let env = key_env(&[("AWS_EC2_METADATA_DISABLED", "true")]);
        let err = select(&config(CUSTOM), http(), &env, &dir).unwrap_err();
        assert!(err.fatal, "{err}");
        assert_eq!(
            err.tried.len(),
            1,
            "CustomIdentity was usable but must not be tried"
        );
        let text = err.to_string();
        assert!(
            text.starts_with(
                "identity OnPrem is configured but cannot be used: the registration under"
            ),
            "{text}"
        );
        assert!(text.contains(&dir.display().to_string()), "{text}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn ec2_identity_from_imds_with_refreshing_role_credentials() {
        let server = fake::imds(vec![
            ("meta-data/instance-id", "i-0123456789abcdef0".into()),
            ("dynamic/instance-identity/document", fake::identity_document("i-0123456789abcdef0", "eu-west-1", "eu-west-1a")),
            ("meta-data/placement/availability-zone-id", "euw1-az1".into()),
            ("meta-data/iam/security-credentials/", "ssm-role".into()),
            (
                "meta-data/iam/security-credentials/ssm-role",
                r#"{"Code":"Success","AccessKeyId":"ASIAEC2","SecretAccessKey":"s","Token":"t","Expiration":"2999-01-01T00:00:00Z"}"#.into(),
            ),
        ]);
        let env = key_env(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.url.as_str())]);
        let dir = state_dir("ec2");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("credentials"), "[default]\n").unwrap();
        let id = select(&config(CUSTOM), http(), &env, &dir).unwrap();
        assert_eq!(id.kind, IdentityKind::Ec2);
        assert!(
            id.shared_credentials.is_none(),
            "an instance profile is not shared"
        );
        assert!(
            !dir.join("credentials").exists(),
            "Default Host Management's file is purged"
        );
        assert_eq!(
            (id.instance_id.as_str(), id.region.as_str()),
            ("i-0123456789abcdef0", "eu-west-1")
        );
        assert_eq!(
            (
                id.availability_zone.as_str(),
                id.availability_zone_id.as_str()
            ),
            ("eu-west-1a", "euw1-az1")
        );
        assert_eq!(id.instance_type, "t3.micro");
        assert_eq!(
            id.credentials.credentials().unwrap().access_key_id,
            "ASIAEC2"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn without_imds_the_custom_identity_is_chosen() {
        let env = key_env(&[("AWS_EC2_METADATA_DISABLED", "true")]);
        let dir = state_dir("unregistered");
        let id = select(&config(CUSTOM), http(), &env, &dir).unwrap();
        assert_eq!(id.kind, IdentityKind::Custom);
        let err = select(
            &config(CUSTOM),
            http(),
            &Env::from_pairs(&[("AWS_EC2_METADATA_DISABLED", "true")]),
            &dir,
        )
        .err()
        .unwrap();
        let names: Vec<_> = err.tried.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["OnPrem", "EC2", "CustomIdentity"]);
        assert!(
            err.tried[1].1.contains("AWS_EC2_METADATA_DISABLED"),
            "{err}"
        );
        assert!(err.tried[0].1.starts_with("not registered"), "{err}");
        assert!(!err.fatal);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn placement_probe_reads_imds_or_gives_up() {
        let server = fake::imds(vec![
            (
                "dynamic/instance-identity/document",
                fake::identity_document("i-0abc", "eu-west-1", "eu-west-1c"),
            ),
            (
                "meta-data/placement/availability-zone-id",
                "euw1-az3".into(),
            ),
        ]);
        let env = Env::from_pairs(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.url.as_str())]);
        let placement = probe_placement(http(), &env).unwrap();
        assert_eq!(
            placement,
            Placement {
                availability_zone: "eu-west-1c".into(),
                availability_zone_id: "euw1-az3".into()
            }
        );

        // Port 0: nobody can listen there, so the connection is refused; no retry.
        let url = "http://127.0.0.1:0".to_string();
        let env = Env::from_pairs(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", url.as_str())]);
        let started = std::time::Instant::now();
        assert_eq!(probe_placement(http(), &env), None);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
