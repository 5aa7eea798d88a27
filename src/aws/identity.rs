//! The identity the agent runs as, chosen by `Identity.ConsumptionOrder` (protocol.md §5.1):
//! EC2 (IMDS) and CustomIdentity now; OnPrem (hybrid activation) plugs in at [`onprem_identity`].

use super::credentials::{self, CredentialsError, CredentialsProvider, Env, RefreshingCredentials};
use super::http::HttpClient;
use super::imds::{ImdsClient, ImdsError};
use crate::config::Config;
use std::fmt;
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
            .finish_non_exhaustive()
    }
}

/// No identity matched: each entry of the consumption order tried, and why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityError {
    pub tried: Vec<(String, String)>,
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// The placement probe must not delay a host without IMDS: one attempt, one second.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Tries each identity of `Identity.ConsumptionOrder` in turn; the first usable one wins.
/// `env` supplies the IMDS endpoint switches and the default credential chain's variables.
pub fn select(
    config: &Config,
    http: Arc<HttpClient>,
    env: &Env,
) -> Result<Identity, IdentityError> {
    select_in_order(&config.identity.consumption_order, |name| match name {
        "OnPrem" => onprem_identity(config).ok_or_else(|| {
            "no hybrid activation registration (not supported by ssm-lite yet)".to_owned()
        }),
        "EC2" => ec2_identity(config, Arc::new(ImdsClient::new(http.clone(), env)))
            .map_err(|e| e.to_string()),
        "CustomIdentity" => custom_identity(config, env),
        "ECS" => {
            log::warn!(
                "identity: ECS in Identity.ConsumptionOrder is not supported by ssm-lite; skipping it"
            );
            Err("not supported by ssm-lite".to_owned())
        }
        other => Err(format!("unknown identity {other:?}")),
    })
}

fn select_in_order(
    order: &[String],
    mut try_one: impl FnMut(&str) -> Result<Identity, String>,
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
            Err(why) => {
                log::info!("identity: {name} is not usable: {why}");
                tried.push((name.clone(), why));
            }
        }
    }
    Err(IdentityError { tried })
}

/// SEAM for hybrid activation (a later issue): read the registration (protocol.md §5.4) and
/// return an `OnPrem` identity with RSA-signed credential refresh. Until then nothing is registered.
pub fn onprem_identity(_config: &Config) -> Option<Identity> {
    None
}

/// `Agent.Region` overrides the region the identity discovered (protocol.md §1.1).
fn region(config: &Config, discovered: &str) -> String {
    if config.agent.region.is_empty() {
        discovered
    } else {
        &config.agent.region
    }
    .to_owned()
}

/// The EC2 identity: instance id and identity document over IMDSv2; credentials are the instance
/// profile's, refreshed through the same client.
fn ec2_identity(config: &Config, imds: Arc<ImdsClient>) -> Result<Identity, ImdsError> {
    let instance_id = imds.instance_id()?;
    let document = imds.identity_document()?;
    let availability_zone_id = imds.availability_zone_id().unwrap_or_else(|e| {
        log::warn!("identity: no availability zone id from IMDS ({e}); reporting it empty");
        String::new()
    });
    let source = imds.clone();
    let credentials = RefreshingCredentials::new("IMDS instance-profile role", move || {
        source
            .role_credentials()
            .map_err(|e| CredentialsError(e.to_string()))
    });
    Ok(Identity {
        kind: IdentityKind::Ec2,
        instance_id,
        region: region(config, &document.region),
        availability_zone: document.availability_zone,
        availability_zone_id,
        instance_type: document.instance_type,
        credentials: Arc::new(credentials),
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
    })
}

/// One quick IMDS lookup of the placement (one attempt, one-second deadline), for the health
/// ping of a non-EC2 identity on a host where IMDS answers anyway (protocol.md §9 item 7).
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
    use crate::aws::imds::fake;

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
                Err("no".into())
            }
        })
        .unwrap();
        assert_eq!(chosen.instance_id, "i-0ec2");
        assert_eq!(asked, ["OnPrem", "EC2"]);
    }

    #[test]
    fn the_error_lists_every_attempt_and_what_to_configure() {
        let order: Vec<String> = ["OnPrem", "ECS"].map(String::from).to_vec();
        let err = select_in_order(&order, |name| Err(format!("{name} failed"))).unwrap_err();
        assert_eq!(err.tried.len(), 2);
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
    fn onprem_is_a_seam_that_finds_nothing_yet() {
        assert!(onprem_identity(&Config::default()).is_none());
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
        let id = select(&config(CUSTOM), http(), &env).unwrap();
        assert_eq!(id.kind, IdentityKind::Ec2);
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
    }

    #[test]
    fn without_imds_the_custom_identity_is_chosen() {
        let env = key_env(&[("AWS_EC2_METADATA_DISABLED", "true")]);
        let id = select(&config(CUSTOM), http(), &env).unwrap();
        assert_eq!(id.kind, IdentityKind::Custom);
        let err = select(
            &config(CUSTOM),
            http(),
            &Env::from_pairs(&[("AWS_EC2_METADATA_DISABLED", "true")]),
        )
        .err()
        .unwrap();
        let names: Vec<_> = err.tried.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["OnPrem", "EC2", "CustomIdentity"]);
        assert!(
            err.tried[1].1.contains("AWS_EC2_METADATA_DISABLED"),
            "{err}"
        );
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

        // Nothing listens on this port any more: connection refused, no retry.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let env = Env::from_pairs(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", url.as_str())]);
        let started = std::time::Instant::now();
        assert_eq!(probe_placement(http(), &env), None);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
