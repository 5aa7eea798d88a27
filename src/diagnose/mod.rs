//! `ssm-lite diagnose`: the checks of upstream's `ssm-cli get-diagnostics`
//! (`agent/cli/diagnostics/`), with its check names, statuses and, where they fit, its notes,
//! plus ssm-lite's own (clock skew, state directory, configuration keys). Each check runs on its
//! own thread under a deadline, so one hanging DNS lookup cannot hold up the report.

mod host;
mod network;

use crate::aws::credentials::Env;
use crate::aws::endpoint::{self, Service};
use crate::aws::http::HttpClient;
use crate::config::Config;
use crate::identity::{self, Identity};
use crate::sync::{lock, wait_until};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Upstream's `DiagnosticsStatus*` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    Failed,
    Skipped,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Success => "Success",
            Status::Failed => "Failed",
            Status::Skipped => "Skipped",
        })
    }
}

/// One line of the report (upstream's `DiagnosticOutput`: `Check`, `Status`, `Note`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub check: String,
    pub status: Status,
    /// What was found, and when it failed, what to do.
    pub note: String,
}

/// A check's outcome before its name is attached.
type Outcome = (Status, String);

/// How long all checks together may take once the identity is known (the identity chain and
/// each check bound their own requests; only a hanging DNS lookup has no limit of its own).
const CHECKS_DEADLINE: Duration = Duration::from_secs(20);

/// The endpoints the agent uses, in upstream's order (its `monitoring` is not used by ssm-lite).
const SERVICES: [Service; 6] = [
    endpoint::SSM,
    endpoint::EC2MESSAGES,
    endpoint::SSMMESSAGES,
    endpoint::S3,
    endpoint::KMS,
    endpoint::LOGS,
];

/// What every check reads, gathered once: the configuration and identity as the agent would
/// find them with the same `--config` and `--state-dir`.
struct Context {
    config: Config,
    config_file: Option<PathBuf>,
    /// Why the configuration could not be loaded (the checks then use the defaults).
    config_error: Option<String>,
    state_dir: PathBuf,
    env: Env,
    http: Result<Arc<HttpClient>, String>,
    identity: Result<Identity, String>,
}

impl Context {
    fn gather(config_path: Option<&Path>, state_dir: &Path) -> Context {
        let (config, config_error) = match Config::load(config_path) {
            Ok(config) => (config, None),
            Err(e) => (Config::default(), Some(e.to_string())),
        };
        let env = Env::capture();
        let http = HttpClient::for_agent(&config)
            .map(Arc::new)
            .map_err(|e| e.to_string());
        let identity = match &http {
            Ok(http) => select_identity(&config, http, &env, state_dir),
            Err(e) => Err(format!("no identity without an HTTP client: {e}")),
        };
        Context {
            config_file: Config::file_in_use(config_path),
            config,
            config_error,
            state_dir: state_dir.to_owned(),
            env,
            http,
            identity,
        }
    }

    /// The region `service` is reached in, as the agent picks it (`Mgs.Region` for
    /// ssmmessages), or why there is none.
    fn region(&self, service: &Service) -> Result<&str, String> {
        if *service == endpoint::SSMMESSAGES && !self.config.mgs.region.is_empty() {
            return Ok(&self.config.mgs.region);
        }
        match &self.identity {
            Ok(identity) => Ok(&identity.region),
            Err(_) if !self.config.agent.region.is_empty() => Ok(&self.config.agent.region),
            Err(_) => Err(
                "Unable to fetch AWS region details (no identity, see AWS Credentials); \
                 set Agent.Region to check the endpoints anyway"
                    .into(),
            ),
        }
    }
}

/// The identity chain the agent runs (`Identity.ConsumptionOrder`), without sharing credentials
/// with scripts: diagnosing must not rewrite the operator's `~/.aws/credentials`.
fn select_identity(
    config: &Config,
    http: &Arc<HttpClient>,
    env: &Env,
    state_dir: &Path,
) -> Result<Identity, String> {
    let mut config = config.clone();
    config.profile.share_creds = false;
    identity::select(&config, http.clone(), env, state_dir).map_err(|e| e.to_string())
}

type Probe = Box<dyn FnOnce(&Context) -> Outcome + Send>;

/// Every check in the report's order, with its upstream name where upstream has it.
fn probes() -> Vec<(String, Probe)> {
    let mut all: Vec<(String, Probe)> = vec![
        ("EC2 IMDS".into(), Box::new(host::imds)),
        (
            "Hybrid instance registration".into(),
            Box::new(host::registration),
        ),
    ];
    for service in SERVICES {
        let name = format!("Connectivity to {} endpoint", service.endpoint_prefix);
        all.push((name, Box::new(move |ctx| network::endpoint(ctx, &service))));
    }
    all.extend([
        (
            "AWS Credentials".into(),
            Box::new(host::credentials) as Probe,
        ),
        ("Clock skew".into(), Box::new(network::clock)),
        ("Proxy configuration".into(), Box::new(network::proxy)),
        ("State directory".into(), Box::new(host::state_dir)),
        ("Configuration".into(), Box::new(host::configuration)),
        ("SSM Agent version".into(), Box::new(host::version)),
    ]);
    all
}

/// Runs every check against the configuration at `config_path` (else the agent's search path)
/// and the state under `state_dir`; the report, in a fixed order.
pub fn run(config_path: Option<&Path>, state_dir: &Path) -> Vec<Check> {
    let ctx = Arc::new(Context::gather(config_path, state_dir));
    let (names, probes): (Vec<String>, Vec<Probe>) = probes().into_iter().unzip();
    let board = Arc::new(Board {
        outcomes: Mutex::new(vec![None; probes.len()]),
        arrived: Condvar::new(),
    });
    for (slot, probe) in probes.into_iter().enumerate() {
        let (ctx, on_board) = (ctx.clone(), board.clone());
        let started = std::thread::Builder::new()
            .name("diagnose".into())
            .spawn(move || on_board.post(slot, probe(&ctx)));
        if let Err(e) = started {
            board.post(
                slot,
                (Status::Failed, format!("cannot start a thread: {e}")),
            );
        }
    }
    let deadline = Instant::now() + CHECKS_DEADLINE;
    let mut outcomes = lock(&board.outcomes);
    while outcomes.iter().any(Option::is_none) {
        let late;
        (outcomes, late) = wait_until(&board.arrived, outcomes, deadline);
        if late {
            break;
        }
    }
    let hung = || {
        let why = format!(
            "did not finish within {} s: a DNS lookup or a connection hangs; check \
             /etc/resolv.conf, the network and the proxy settings",
            CHECKS_DEADLINE.as_secs()
        );
        (Status::Failed, why)
    };
    let report = names.into_iter().zip(outcomes.iter_mut());
    report
        .map(|(check, outcome)| {
            let (status, note) = outcome.take().unwrap_or_else(hung);
            Check {
                check,
                status,
                note,
            }
        })
        .collect()
}

/// Where the checks' threads leave their outcomes, by position in the report. A thread still
/// running at the deadline is left to finish (the process exits soon after the report).
struct Board {
    outcomes: Mutex<Vec<Option<Outcome>>>,
    arrived: Condvar,
}

impl Board {
    fn post(&self, slot: usize, outcome: Outcome) {
        lock(&self.outcomes)[slot] = Some(outcome);
        self.arrived.notify_all();
    }
}
