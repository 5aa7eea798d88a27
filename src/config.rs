//! The `amazon-ssm-agent.json` model: the upstream schema, its defaults and its clamping rules.
//!
//! Upstream loads the file with Go's `encoding/json`, which matches keys case-insensitively and
//! ignores keys it does not know; an operator's existing file must keep working here, so this
//! module does the same. Values outside their allowed range are clamped (or reset to the default)
//! exactly where upstream's `appconfig_parser.go` does, and each such fix is logged.

use crate::aws::endpoint::{self, Endpoint, EndpointError, Service};
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where the configuration is looked for without `--config`, first match wins: ssm-lite's own
/// file (the .deb ships its template beside it), then amazon-ssm-agent's, so a host that already
/// has an upstream config keeps it when ssm-lite replaces the agent.
pub const CONFIG_SEARCH_PATH: [&str; 2] = [
    "/etc/ssm-lite/amazon-ssm-agent.json",
    "/etc/amazon/ssm/amazon-ssm-agent.json",
];

/// The upstream agent version ssm-lite is protocol-compatible with, advertised as `AgentVersion`
/// unless `Agent.Version` says otherwise (see README, "Agent name and version").
pub const COMPATIBLE_AGENT_VERSION: &str = "3.3.1142.0";

/// Configuration errors name the file and, for JSON errors, the line and column.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {} is not valid JSON at line {line}, column {column}: {message}", path.display())]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("config file {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProfileConfig {
    /// Share a hybrid node's role credentials with scripts (docs/protocol.md §5.7).
    pub share_creds: bool,
    /// The profile they are written to; empty: `default`.
    pub share_profile: String,

    pub key_auto_rotate_days: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MdsConfig {
    pub endpoint: String,
    pub command_workers_limit: usize,
    pub command_worker_buffer_limit: usize,
    pub stop_timeout_millis: u64,
    pub command_retry_limit: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SsmConfig {
    pub endpoint: String,
    pub health_frequency_minutes: u64,
    pub run_command_logs_retention_duration_hours: u64,
    /// Hours a session's orchestration directory (its transcript) is kept after it ends.
    pub session_logs_retention_duration_hours: u64,
    /// `disk`: transcripts are kept on disk even when the session logs nowhere else; `none`.
    pub session_logs_destination: String,
    /// ssm-lite's own: MiB of each step's stdout and of its stderr kept on disk.
    pub run_command_logs_max_step_output_mib: u64,
    /// ssm-lite's own: MiB all finished commands may keep on disk (oldest pruned first).
    pub run_command_logs_max_total_mib: u64,
    pub plugin_local_output_cleanup: String,
    pub orchestration_directory_cleanup: String,
    /// Minutes between ListInstanceAssociations polls (5–60, upstream's default 10).
    pub association_frequency_minutes: u64,
    /// How many agent starts an association run may see before it is given up.
    pub association_retry_limit: u32,
    /// Hours an association run's orchestration directory is kept.
    pub association_logs_retention_duration_hours: u64,
    /// Where custom inventory files are read; `""`: `<state dir>/inventory/custom`, upstream's
    /// `/var/lib/amazon/ssm/inventory/custom` under the default state directory.
    pub custom_inventory_default_location: String,
}

/// ssm-lite's own section: where `aws:updateSsmAgent` takes ssm-lite releases from.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateConfig {
    /// `Update.Channel`: an `https://` or `s3://` location holding `manifest.json` and the
    /// binaries it names (a published `dist/`).
    pub channel: String,
    /// `Update.PublicKey`: standard base64 of the Ed25519 key the channel's releases are signed
    /// with; without it nothing is installed.
    pub public_key: String,
    /// `Update.RollbackTimeoutSeconds`: how long a new binary has to reach the service.
    pub rollback_timeout_seconds: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MgsConfig {
    pub region: String,
    pub endpoint: String,
    pub stop_timeout_millis: u64,
    pub session_workers_limit: usize,
    pub denied_port_forwarding_remote_ips: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub name: String,
    /// Version advertised to the service; see [`COMPATIBLE_AGENT_VERSION`].
    pub version: String,
    pub region: String,
    pub service_domain: String,
    pub orchestration_root_dir: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OsConfig {
    pub lang: String,
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct EndpointConfig {
    pub endpoint: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KmsConfig {
    pub endpoint: String,
    pub require_kms_challenge_response: bool,
}

/// One entry of `Identity.CustomIdentities`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CustomIdentity {
    pub instance_id: String,
    pub region: String,
    pub availability_zone: String,
    pub availability_zone_id: String,
    pub instance_type: String,
    pub credentials_provider: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IdentityConfig {
    pub consumption_order: Vec<String>,
    pub custom_identities: Vec<CustomIdentity>,
}

/// The whole configuration, with upstream's defaults filled in and ranges enforced.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub profile: ProfileConfig,
    pub mds: MdsConfig,
    pub ssm: SsmConfig,
    pub mgs: MgsConfig,
    pub agent: AgentConfig,
    pub os: OsConfig,
    pub s3: EndpointConfig,
    pub kms: KmsConfig,
    /// `CloudWatchLogs.Endpoint`: ssm-lite's own key (upstream has none), for VPC endpoints
    /// and tests.
    pub cloudwatch_logs: EndpointConfig,
    pub identity: IdentityConfig,
    pub update: UpdateConfig,
}

/// Per step and stream: far above the reply's 24,000 bytes, small beside a small device's disk.
const DEFAULT_STEP_OUTPUT_MIB: u64 = 4;
/// Every finished command's files together: 14 days of ordinary use on a small device.
const DEFAULT_TOTAL_MIB: u64 = 200;

/// Upstream's default deny list for port forwarding: IMDS, the Amazon DNS resolver, Time Sync,
/// and the other link-local service addresses of EC2, each in its IPv4 and (Nitro) IPv6 form.
const DEFAULT_DENIED_IPS: [&str; 9] = [
    "169.254.169.254",
    "fd00:ec2::254",
    "169.254.169.253",
    "fd00:ec2::253",
    "169.254.169.123",
    "fd00:ec2::123",
    "169.254.169.250",
    "169.254.169.251",
    "fd00:ec2::240",
];

impl Default for Config {
    fn default() -> Self {
        Config {
            profile: ProfileConfig {
                share_creds: true,
                share_profile: String::new(),
                key_auto_rotate_days: 0,
            },
            mds: MdsConfig {
                endpoint: String::new(),
                command_workers_limit: 5,
                command_worker_buffer_limit: 5,
                stop_timeout_millis: 20_000,
                command_retry_limit: 15,
            },
            ssm: SsmConfig {
                endpoint: String::new(),
                health_frequency_minutes: 5,
                run_command_logs_retention_duration_hours: 336,
                session_logs_retention_duration_hours: 336,
                session_logs_destination: "none".into(),
                run_command_logs_max_step_output_mib: DEFAULT_STEP_OUTPUT_MIB,
                run_command_logs_max_total_mib: DEFAULT_TOTAL_MIB,
                plugin_local_output_cleanup: "default".into(),
                orchestration_directory_cleanup: "default".into(),
                association_frequency_minutes: 10,
                association_retry_limit: 5,
                association_logs_retention_duration_hours: 24,
                custom_inventory_default_location: String::new(),
            },
            mgs: MgsConfig {
                region: String::new(),
                endpoint: String::new(),
                stop_timeout_millis: 20_000,
                session_workers_limit: 1000,
                denied_port_forwarding_remote_ips: DEFAULT_DENIED_IPS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            },
            agent: AgentConfig {
                name: "amazon-ssm-agent".into(),
                version: COMPATIBLE_AGENT_VERSION.into(),
                region: String::new(),
                service_domain: String::new(),
                orchestration_root_dir: "orchestration".into(),
            },
            os: OsConfig {
                lang: "en-US".into(),
                name: "linux".into(),
                version: "1".into(),
            },
            s3: EndpointConfig::default(),
            kms: KmsConfig {
                endpoint: String::new(),
                require_kms_challenge_response: false,
            },
            cloudwatch_logs: EndpointConfig::default(),
            identity: IdentityConfig {
                consumption_order: vec!["OnPrem".into(), "EC2".into(), "CustomIdentity".into()],
                custom_identities: Vec::new(),
            },
            update: UpdateConfig {
                channel: String::new(),
                public_key: String::new(),
                rollback_timeout_seconds: 300,
            },
        }
    }
}

impl Config {
    /// Loads `path` if given; otherwise the first file of [`CONFIG_SEARCH_PATH`] that exists;
    /// otherwise the defaults. Says which in the log, as the answer to "why is my setting ignored".
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_searching(path, &CONFIG_SEARCH_PATH.map(Path::new))
    }

    /// The file [`Config::load`] reads for `path`; `None`: the built-in defaults.
    pub fn file_in_use(path: Option<&Path>) -> Option<PathBuf> {
        chosen(path, &CONFIG_SEARCH_PATH.map(Path::new)).map(Path::to_path_buf)
    }

    fn load_searching(path: Option<&Path>, search: &[&Path]) -> Result<Config, ConfigError> {
        match chosen(path, search) {
            Some(p) => {
                log::info!("configuration: {}", p.display());
                Config::from_file(p)
            }
            None => {
                log::info!(
                    "configuration: built-in defaults (none of {} exists)",
                    search
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                Ok(Config::default())
            }
        }
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Config::from_json(&text).map_err(|e| match e {
            JsonOrShape::Json {
                line,
                column,
                message,
            } => ConfigError::Json {
                path: path.to_owned(),
                line,
                column,
                message,
            },
            JsonOrShape::Shape(message) => ConfigError::Invalid {
                path: path.to_owned(),
                message,
            },
        })
    }

    /// Parses the file's text over the defaults. Public for tests and for `run-document`.
    pub fn from_json(text: &str) -> Result<Config, JsonOrShape> {
        let root: Value = serde_json::from_str(text).map_err(|e| JsonOrShape::Json {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        if !root.is_object() {
            return Err(JsonOrShape::Shape(
                "the top level must be a JSON object".into(),
            ));
        }
        let mut c = Config::default();
        let r = Reader { root: &root };
        for &(section, key, field) in STRINGS {
            r.string(section, key, field(&mut c))?;
        }
        for &(section, key, field) in BOOLS {
            r.bool(section, key, field(&mut c))?;
        }
        for &(section, key, field) in STRING_LISTS {
            r.strings(section, key, field(&mut c))?;
        }
        read_all(&r, U32S, &mut c)?;
        read_all(&r, USIZES, &mut c)?;
        read_all(&r, U64S, &mut c)?;
        if let Some(list) = r.get("Identity", "CustomIdentities") {
            c.identity.custom_identities = custom_identities(list)?;
        }
        c.clamp();
        Ok(c)
    }

    /// Upstream's `appconfig_parser.go` rules: out-of-range values fall back to a bound or default.
    fn clamp(&mut self) {
        U32S.iter().for_each(|u| u.clamp(self));
        USIZES.iter().for_each(|u| u.clamp(self));
        U64S.iter().for_each(|u| u.clamp(self));
        fix_enum(
            "Ssm.PluginLocalOutputCleanup",
            &mut self.ssm.plugin_local_output_cleanup,
            &["default", "after-execution", "after-upload"],
        );
        fix_enum(
            "Ssm.OrchestrationDirectoryCleanup",
            &mut self.ssm.orchestration_directory_cleanup,
            &["default", "clean-success", "clean-success-failed"],
        );
        fix_enum(
            "Ssm.SessionLogsDestination",
            &mut self.ssm.session_logs_destination,
            &["none", "disk"],
        );
        if self.agent.version.len() < 5 {
            log::warn!(
                "config: Agent.Version {:?} is shorter than the 5 characters the service requires; using {COMPATIBLE_AGENT_VERSION}",
                self.agent.version
            );
            self.agent.version = COMPATIBLE_AGENT_VERSION.into();
        }
        if self.agent.orchestration_root_dir.is_empty() {
            self.agent.orchestration_root_dir = "orchestration".into();
        }
        let allowed = ["OnPrem", "EC2", "CustomIdentity", "ECS"];
        self.identity.consumption_order.retain(|name| {
            let ok = allowed.contains(&name.as_str());
            if !ok {
                log::warn!(
                    "config: ignoring unknown identity {name:?} in Identity.ConsumptionOrder"
                );
            }
            ok
        });
        if self.identity.consumption_order.is_empty() {
            self.identity.consumption_order = Config::default().identity.consumption_order;
        }
    }
}

/// `path` if given, else the first file of `search` that exists.
fn chosen<'a>(path: Option<&'a Path>, search: &[&'a Path]) -> Option<&'a Path> {
    path.or_else(|| search.iter().copied().find(|p| p.exists()))
}

/// Keys read into a field that nothing uses (README, "Read but ignored").
const NO_EFFECT: &[(&str, &str)] = &[("Mgs", "StopTimeoutMillis")];

impl Config {
    /// `Section.Key` of every key of the file `text` that changes nothing in ssm-lite: keys it
    /// does not read (upstream settings it has no use for, misspellings) and the few it reads
    /// to no effect, so that `ssm-lite diagnose` can name them. Text that is not a JSON object
    /// has none (loading it fails and says why).
    pub fn keys_without_effect(text: &str) -> Vec<String> {
        let Ok(Value::Object(root)) = serde_json::from_str::<Value>(text) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (section, value) in &root {
            let Some(keys) = value.as_object() else {
                out.push(section.clone());
                continue;
            };
            let unused = keys.keys().filter(|key| !has_effect(section, key));
            out.extend(unused.map(|key| format!("{section}.{key}")));
        }
        out
    }
}

/// Whether `section.key` (any case, as Go's decoder matches) sets something ssm-lite uses.
fn has_effect(section: &str, key: &str) -> bool {
    let is = |(s, k): (&str, &str)| s.eq_ignore_ascii_case(section) && k.eq_ignore_ascii_case(key);
    let mut read = STRINGS
        .iter()
        .map(names)
        .chain(BOOLS.iter().map(names))
        .chain(STRING_LISTS.iter().map(names))
        .chain(U32S.iter().map(|u| names(&u.slot)))
        .chain(USIZES.iter().map(|u| names(&u.slot)))
        .chain(U64S.iter().map(|u| names(&u.slot)))
        .chain([("Identity", "CustomIdentities")]);
    read.any(is) && !NO_EFFECT.iter().copied().any(is)
}

fn names<T>(slot: &Slot<T>) -> (&'static str, &'static str) {
    (slot.0, slot.1)
}

impl Config {
    /// Where `service` is reached in `region`: its `<Section>.Endpoint` override when set, else
    /// `<prefix>.<region>.<Agent.ServiceDomain or the partition's domain>`.
    pub fn endpoint(&self, service: &Service, region: &str) -> Result<Endpoint, EndpointError> {
        let override_ = match service.endpoint_prefix {
            "ec2messages" => &self.mds.endpoint,
            "ssm" => &self.ssm.endpoint,
            "ssmmessages" => &self.mgs.endpoint,
            "kms" => &self.kms.endpoint,
            "s3" => &self.s3.endpoint,
            "logs" => &self.cloudwatch_logs.endpoint,
            _ => "",
        };
        let domain = &self.agent.service_domain;
        endpoint::resolve(service.endpoint_prefix, region, override_, domain)
    }
}

/// Upstream's `getStringEnum`: a value outside `allowed` becomes the first one, the default.
fn fix_enum(key: &str, v: &mut String, allowed: &[&str]) {
    if !allowed.contains(&v.as_str()) {
        log::warn!(
            "config: {key} = {v:?} is not one of {allowed:?}; using {:?}",
            allowed[0]
        );
        *v = allowed[0].to_owned();
    }
}

/// `Section.Key` in the file and the field it sets.
type Slot<T> = (&'static str, &'static str, fn(&mut Config) -> &mut T);

const STRINGS: &[Slot<String>] = &[
    ("Profile", "ShareProfile", |c| &mut c.profile.share_profile),
    ("Mds", "Endpoint", |c| &mut c.mds.endpoint),
    ("Ssm", "Endpoint", |c| &mut c.ssm.endpoint),
    ("Ssm", "PluginLocalOutputCleanup", |c| {
        &mut c.ssm.plugin_local_output_cleanup
    }),
    ("Ssm", "OrchestrationDirectoryCleanup", |c| {
        &mut c.ssm.orchestration_directory_cleanup
    }),
    ("Ssm", "SessionLogsDestination", |c| {
        &mut c.ssm.session_logs_destination
    }),
    ("Ssm", "CustomInventoryDefaultLocation", |c| {
        &mut c.ssm.custom_inventory_default_location
    }),
    ("Mgs", "Region", |c| &mut c.mgs.region),
    ("Mgs", "Endpoint", |c| &mut c.mgs.endpoint),
    ("Agent", "Name", |c| &mut c.agent.name),
    ("Agent", "Version", |c| &mut c.agent.version),
    ("Agent", "Region", |c| &mut c.agent.region),
    ("Agent", "ServiceDomain", |c| &mut c.agent.service_domain),
    ("Agent", "OrchestrationRootDir", |c| {
        &mut c.agent.orchestration_root_dir
    }),
    ("Os", "Lang", |c| &mut c.os.lang),
    ("Os", "Name", |c| &mut c.os.name),
    ("Os", "Version", |c| &mut c.os.version),
    ("S3", "Endpoint", |c| &mut c.s3.endpoint),
    ("Kms", "Endpoint", |c| &mut c.kms.endpoint),
    ("CloudWatchLogs", "Endpoint", |c| {
        &mut c.cloudwatch_logs.endpoint
    }),
    ("Update", "Channel", |c| &mut c.update.channel),
    ("Update", "PublicKey", |c| &mut c.update.public_key),
];

const BOOLS: &[Slot<bool>] = &[
    ("Profile", "ShareCreds", |c| &mut c.profile.share_creds),
    ("Kms", "RequireKMSChallengeResponse", |c| {
        &mut c.kms.require_kms_challenge_response
    }),
];

const STRING_LISTS: &[Slot<Vec<String>>] = &[
    ("Mgs", "DeniedPortForwardingRemoteIPs", |c| {
        &mut c.mgs.denied_port_forwarding_remote_ips
    }),
    ("Identity", "ConsumptionOrder", |c| {
        &mut c.identity.consumption_order
    }),
];

/// A whole-number setting and upstream's rule for it (`appconfig_parser.go`): a value outside
/// `min..=max` becomes `default`.
struct Uint<T: 'static> {
    slot: Slot<T>,
    min: T,
    max: T,
    default: T,
}

impl<T: TryFrom<u64> + PartialOrd + Copy + fmt::Display> Uint<T> {
    fn clamp(&self, c: &mut Config) {
        let (section, key, field) = self.slot;
        let v = field(c);
        let (min, max, default) = (self.min, self.max, self.default);
        if *v < min {
            log::warn!("config: {section}.{key} = {v} is below {min}; using {default}");
        } else if *v > max {
            log::warn!("config: {section}.{key} = {v} is above {max}; using {default}");
        } else {
            return;
        }
        *v = default;
    }
}

fn read_all<T: TryFrom<u64>>(
    r: &Reader<'_>,
    table: &[Uint<T>],
    c: &mut Config,
) -> Result<(), JsonOrShape> {
    table.iter().try_for_each(|u| {
        let (section, key, field) = u.slot;
        r.uint(section, key, field(c))
    })
}

const U32S: &[Uint<u32>] = &[
    Uint {
        slot: ("Ssm", "AssociationRetryLimit", |c| {
            &mut c.ssm.association_retry_limit
        }),
        min: 1,
        max: u32::MAX,
        default: 5,
    },
    Uint {
        slot: ("Profile", "KeyAutoRotateDays", |c| {
            &mut c.profile.key_auto_rotate_days
        }),
        min: 0,
        max: 365,
        default: 0,
    },
    Uint {
        slot: ("Mds", "CommandRetryLimit", |c| {
            &mut c.mds.command_retry_limit
        }),
        min: 1,
        max: 100,
        default: 15,
    },
];

const USIZES: &[Uint<usize>] = &[
    Uint {
        slot: ("Mds", "CommandWorkersLimit", |c| {
            &mut c.mds.command_workers_limit
        }),
        min: 1,
        max: usize::MAX,
        default: 5,
    },
    Uint {
        slot: ("Mds", "CommandWorkerBufferLimit", |c| {
            &mut c.mds.command_worker_buffer_limit
        }),
        min: 1,
        max: usize::MAX,
        default: 5,
    },
    Uint {
        slot: ("Mgs", "SessionWorkersLimit", |c| {
            &mut c.mgs.session_workers_limit
        }),
        min: 1,
        max: usize::MAX,
        default: 1000,
    },
];

const U64S: &[Uint<u64>] = &[
    Uint {
        slot: ("Update", "RollbackTimeoutSeconds", |c| {
            &mut c.update.rollback_timeout_seconds
        }),
        min: 30,
        max: 3600,
        default: 300,
    },
    Uint {
        slot: ("Mds", "StopTimeoutMillis", |c| {
            &mut c.mds.stop_timeout_millis
        }),
        min: 10_000,
        max: 1_000_000,
        default: 20_000,
    },
    Uint {
        slot: ("Ssm", "HealthFrequencyMinutes", |c| {
            &mut c.ssm.health_frequency_minutes
        }),
        min: 5,
        max: 60,
        default: 5,
    },
    Uint {
        slot: ("Ssm", "AssociationFrequencyMinutes", |c| {
            &mut c.ssm.association_frequency_minutes
        }),
        min: 5,
        max: 60,
        default: 10,
    },
    Uint {
        slot: ("Ssm", "AssociationLogsRetentionDurationHours", |c| {
            &mut c.ssm.association_logs_retention_duration_hours
        }),
        min: 8,
        max: u64::MAX,
        default: 24,
    },
    Uint {
        slot: ("Ssm", "RunCommandLogsRetentionDurationHours", |c| {
            &mut c.ssm.run_command_logs_retention_duration_hours
        }),
        min: 8,
        max: u64::MAX,
        default: 336,
    },
    // Upstream does not bound this one.
    Uint {
        slot: ("Ssm", "SessionLogsRetentionDurationHours", |c| {
            &mut c.ssm.session_logs_retention_duration_hours
        }),
        min: 0,
        max: u64::MAX,
        default: 336,
    },
    Uint {
        slot: ("Ssm", "RunCommandLogsMaxStepOutputMiB", |c| {
            &mut c.ssm.run_command_logs_max_step_output_mib
        }),
        min: 1,
        max: 1024,
        default: DEFAULT_STEP_OUTPUT_MIB,
    },
    Uint {
        slot: ("Ssm", "RunCommandLogsMaxTotalMiB", |c| {
            &mut c.ssm.run_command_logs_max_total_mib
        }),
        min: 8,
        max: 1 << 20,
        default: DEFAULT_TOTAL_MIB,
    },
    // Not clamped upstream: any value is kept.
    Uint {
        slot: ("Mgs", "StopTimeoutMillis", |c| {
            &mut c.mgs.stop_timeout_millis
        }),
        min: 0,
        max: u64::MAX,
        default: 0,
    },
];

/// A parse failure: either the text is not JSON, or a known key has a value of the wrong type.
/// [`ConfigError`] adds the file's path to it.
#[derive(Debug, thiserror::Error)]
pub enum JsonOrShape {
    #[error("not valid JSON at line {line}, column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    /// Names the key and what it must hold, e.g. `Mds.CommandWorkersLimit must be a whole number`.
    #[error("{0}")]
    Shape(String),
}

/// Case-insensitive access to `Section.Key`, as Go's decoder does it.
struct Reader<'a> {
    root: &'a Value,
}

fn get_ci<'v>(obj: &'v Value, key: &str) -> Option<&'v Value> {
    crate::document::field(obj.as_object()?, key)
}

impl<'a> Reader<'a> {
    fn get(&self, section: &str, key: &str) -> Option<&'a Value> {
        get_ci(self.root, section)
            .and_then(|s| get_ci(s, key))
            .filter(|v| !v.is_null())
    }

    fn wrong(section: &str, key: &str, want: &str, got: &Value) -> JsonOrShape {
        JsonOrShape::Shape(format!("{section}.{key} must be {want}, found {got}"))
    }

    fn string(&self, section: &str, key: &str, out: &mut String) -> Result<(), JsonOrShape> {
        match self.get(section, key) {
            None => Ok(()),
            Some(Value::String(s)) => {
                *out = s.clone();
                Ok(())
            }
            Some(v) => Err(Self::wrong(section, key, "a string", v)),
        }
    }

    fn bool(&self, section: &str, key: &str, out: &mut bool) -> Result<(), JsonOrShape> {
        match self.get(section, key) {
            None => Ok(()),
            Some(Value::Bool(b)) => {
                *out = *b;
                Ok(())
            }
            Some(v) => Err(Self::wrong(section, key, "true or false", v)),
        }
    }

    fn uint<T: TryFrom<u64>>(
        &self,
        section: &str,
        key: &str,
        out: &mut T,
    ) -> Result<(), JsonOrShape> {
        match self.get(section, key) {
            None => Ok(()),
            Some(v) => {
                // Negative numbers clamp like any other out-of-range value: to zero, then the rules.
                let n = match (v.as_u64(), v.as_i64()) {
                    (Some(n), _) => n,
                    (None, Some(_)) => 0,
                    _ => return Err(Self::wrong(section, key, "a whole number", v)),
                };
                *out = T::try_from(n)
                    .map_err(|_| Self::wrong(section, key, "a smaller whole number", v))?;
                Ok(())
            }
        }
    }

    fn strings(&self, section: &str, key: &str, out: &mut Vec<String>) -> Result<(), JsonOrShape> {
        match self.get(section, key) {
            None => Ok(()),
            Some(Value::Array(items)) => {
                *out = items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        Self::wrong(
                            section,
                            key,
                            "a list of strings",
                            &Value::Array(items.clone()),
                        )
                    })?;
                Ok(())
            }
            Some(v) => Err(Self::wrong(section, key, "a list of strings", v)),
        }
    }
}

fn custom_identities(list: &Value) -> Result<Vec<CustomIdentity>, JsonOrShape> {
    let items = list.as_array().ok_or_else(|| {
        JsonOrShape::Shape(format!(
            "Identity.CustomIdentities must be a list, found {list}"
        ))
    })?;
    items
        .iter()
        .map(|item| {
            let field = |k: &str| {
                get_ci(item, k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            let id = CustomIdentity {
                instance_id: field("InstanceID"),
                region: field("Region"),
                availability_zone: field("AvailabilityZone"),
                availability_zone_id: field("AvailabilityZoneId"),
                instance_type: field("InstanceType"),
                credentials_provider: field("CredentialsProvider"),
            };
            if id.instance_id.is_empty() || id.region.is_empty() {
                return Err(JsonOrShape::Shape(
                    "each Identity.CustomIdentities entry needs InstanceID and Region".into(),
                ));
            }
            Ok(id)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_gives_defaults() {
        assert_eq!(Config::from_json("{}").unwrap(), Config::default());
    }

    #[test]
    fn keys_match_case_insensitively_and_unknown_keys_are_ignored() {
        let c = Config::from_json(
            r#"{"mds":{"commandworkerslimit":2,"Whatever":1},"Ssm":{"endpoint":"http://127.0.0.1:9"},"Extra":{}}"#,
        )
        .unwrap();
        assert_eq!(c.mds.command_workers_limit, 2);
        assert_eq!(c.ssm.endpoint, "http://127.0.0.1:9");
    }

    #[test]
    fn the_logs_endpoint_is_its_own_key_else_the_regions() {
        let logs = |json: &str| {
            let c = Config::from_json(json).unwrap();
            c.endpoint(&endpoint::LOGS, "eu-west-1").unwrap().url
        };
        assert_eq!(logs("{}"), "https://logs.eu-west-1.amazonaws.com");
        assert_eq!(
            logs(r#"{"Agent":{"ServiceDomain":"example.org"}}"#),
            "https://logs.eu-west-1.example.org"
        );
        assert_eq!(
            logs(r#"{"CloudWatchLogs":{"Endpoint":"http://127.0.0.1:9"}}"#),
            "http://127.0.0.1:9"
        );
    }

    #[test]
    fn out_of_range_values_are_clamped_as_upstream() {
        let c = Config::from_json(
            r#"{"Mds":{"CommandWorkersLimit":0,"StopTimeoutMillis":5,"CommandRetryLimit":1000},
                "Ssm":{"HealthFrequencyMinutes":1,"RunCommandLogsRetentionDurationHours":2},
                "Agent":{"Version":"1"}}"#,
        )
        .unwrap();
        assert_eq!(c.mds.command_workers_limit, 5);
        assert_eq!(c.mds.stop_timeout_millis, 20_000);
        assert_eq!(c.mds.command_retry_limit, 15);
        assert_eq!(c.ssm.health_frequency_minutes, 5);
        assert_eq!(c.ssm.run_command_logs_retention_duration_hours, 336);
        assert_eq!(c.agent.version, COMPATIBLE_AGENT_VERSION);
    }

    #[test]
    fn update_settings_are_read_and_the_timeout_kept_in_range() {
        let c = Config::from_json(
            r#"{"Update":{"Channel":"s3://b/stable","PublicKey":"k","RollbackTimeoutSeconds":60}}"#,
        )
        .unwrap();
        assert_eq!(c.update.channel, "s3://b/stable");
        assert_eq!(c.update.public_key, "k");
        assert_eq!(c.update.rollback_timeout_seconds, 60);
        let c = Config::from_json(r#"{"Update":{"RollbackTimeoutSeconds":5}}"#).unwrap();
        assert_eq!(c.update.rollback_timeout_seconds, 300);
    }

    #[test]
    fn session_log_settings_as_upstream() {
        let c = Config::from_json(
            r#"{"Ssm":{"SessionLogsDestination":"disk","SessionLogsRetentionDurationHours":1}}"#,
        )
        .unwrap();
        assert_eq!(
            (
                c.ssm.session_logs_destination.as_str(),
                c.ssm.session_logs_retention_duration_hours
            ),
            ("disk", 1)
        );
        let c = Config::from_json(r#"{"Ssm":{"SessionLogsDestination":"tape"}}"#).unwrap();
        assert_eq!(c.ssm.session_logs_destination, "none");
        assert_eq!(c.ssm.session_logs_retention_duration_hours, 336);
    }

    #[test]
    fn output_caps_are_read_and_kept_in_range() {
        let c = Config::from_json(
            r#"{"Ssm":{"RunCommandLogsMaxStepOutputMiB":16,"runcommandlogsmaxtotalmib":1000}}"#,
        )
        .unwrap();
        assert_eq!(c.ssm.run_command_logs_max_step_output_mib, 16);
        assert_eq!(c.ssm.run_command_logs_max_total_mib, 1000);
        let c = Config::from_json(
            r#"{"Ssm":{"RunCommandLogsMaxStepOutputMiB":0,"RunCommandLogsMaxTotalMiB":1}}"#,
        )
        .unwrap();
        assert_eq!(c.ssm.run_command_logs_max_step_output_mib, 4);
        assert_eq!(c.ssm.run_command_logs_max_total_mib, 200);
    }

    #[test]
    fn cleanup_settings_outside_upstreams_values_fall_back_to_default() {
        let c = Config::from_json(
            r#"{"Ssm":{"PluginLocalOutputCleanup":"after-execution","OrchestrationDirectoryCleanup":"always"}}"#,
        )
        .unwrap();
        assert_eq!(c.ssm.plugin_local_output_cleanup, "after-execution");
        assert_eq!(c.ssm.orchestration_directory_cleanup, "default");
    }

    #[test]
    fn json_errors_carry_line_and_column() {
        let dir = std::env::temp_dir().join(format!("ssm-lite-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.json");
        std::fs::write(
            &path,
            "{\n  \"Mds\": {\n    \"CommandWorkersLimit\": ,\n  }\n}",
        )
        .unwrap();
        let err = Config::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("bad.json") && err.contains("line 3"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_first_existing_file_of_the_search_path_wins_and_a_given_path_beats_both() {
        let dir = std::env::temp_dir().join(format!("ssm-lite-search-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (own, upstream) = (dir.join("own.json"), dir.join("upstream.json"));
        let search = [own.as_path(), upstream.as_path()];
        let workers = |c: Config| c.mds.command_workers_limit;
        assert_eq!(workers(Config::load_searching(None, &search).unwrap()), 5);
        std::fs::write(&upstream, r#"{"Mds":{"CommandWorkersLimit":2}}"#).unwrap();
        assert_eq!(workers(Config::load_searching(None, &search).unwrap()), 2);
        std::fs::write(&own, r#"{"Mds":{"CommandWorkersLimit":3}}"#).unwrap();
        assert_eq!(workers(Config::load_searching(None, &search).unwrap()), 3);
        let given = Config::load_searching(Some(&dir.join("missing.json")), &search);
        assert!(matches!(given, Err(ConfigError::Read { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn wrong_types_are_errors_naming_the_key() {
        let err = match Config::from_json(r#"{"Mds":{"CommandWorkersLimit":"two"}}"#) {
            Err(JsonOrShape::Shape(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(err.contains("Mds.CommandWorkersLimit"), "{err}");
    }

    #[test]
    fn keys_without_effect_are_the_unread_and_the_ignored_ones() {
        let text = r#"{"mds":{"commandworkerslimit":3,"Bogus":1},"Mgs":{"StopTimeoutMillis":5},
            "Agent":{"Region":"eu-west-1","TelemetryMetricsToCloudWatch":true},"Extra":[1],
            "Identity":{"CustomIdentities":[]}}"#;
        assert_eq!(
            Config::keys_without_effect(text),
            [
                "Agent.TelemetryMetricsToCloudWatch",
                "Extra",
                "Mgs.StopTimeoutMillis",
                "mds.Bogus"
            ]
        );
        assert!(Config::keys_without_effect("[1]").is_empty());
        assert!(Config::keys_without_effect("{").is_empty());
    }

    #[test]
    fn custom_identities_are_read() {
        let c = Config::from_json(
            r#"{"Identity":{"ConsumptionOrder":["CustomIdentity"],"CustomIdentities":[
                {"InstanceID":"i-0123456789abcdef0","Region":"eu-west-1","CredentialsProvider":"DEFAULT"}]}}"#,
        )
        .unwrap();
        assert_eq!(c.identity.consumption_order, vec!["CustomIdentity"]);
        assert_eq!(c.identity.custom_identities[0].region, "eu-west-1");
    }
}
