//! The daemon: wires identity → transports → engine, then waits for SIGTERM/SIGINT and shuts
//! everything down in order (stop polling, let running steps finish or stop them, flush replies).

use crate::association::scheduler::{Mailbox, Scheduler, Settings as AssociationSettings};
use crate::association::service::SsmAssociations;
use crate::aws::credentials::Env;
use crate::aws::endpoint::{self, EndpointError};
use crate::aws::http::{HttpClient, HttpError};
use crate::aws::jsonrpc::JsonClient;
use crate::aws::logs::LogsClient;
use crate::aws::s3::{S3Client, S3Settings};
use crate::config::{COMPATIBLE_AGENT_VERSION, Config, ConfigError};
use crate::health::{self, ChannelHandle, Health, HostFacts};
use crate::identity::{self, Identity, IdentityError};
use crate::inventory::{Inventory, SsmInventory};
use crate::mds::client::MdsClient;
use crate::mds::{Poller, outbox::Outbox};
use crate::mgs::Dispatcher;
use crate::mgs::control::{ControlChannel, ControlSender};
use crate::mgs::jobs::MgsJobs;
use crate::runcommand::cloudwatch::CloudWatchDestinations;
use crate::runcommand::documents::SsmDocuments;
use crate::runcommand::engine::NoParameterStore;
use crate::runcommand::package::{Distributor, Ec2Facts};
use crate::runcommand::parameters::SsmParameterStore;
use crate::runcommand::reply::{AgentInfo, ReplyBuilder};
use crate::runcommand::s3output::S3Destinations;
use crate::runcommand::sources::Sources;
use crate::runcommand::{Engine, EngineConfig, ReplySink, Transport};
use crate::session::logging::LoggingEnv;
use crate::session::run::SessionEnv;
use crate::session::{Sessions, crypto, runas};
use crate::shutdown::Shutdown;
use crate::state::{ReplySpool, StateDir, StateError};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Identity selection is retried for as long as it takes (a SysV init does not restart an agent
/// that gave up, and `ssm-lite register` may come later): every 30 s at most during the first
/// minutes, when IMDS or the network come up late at boot, then every 5 minutes, to keep the
/// log readable.
const IDENTITY_PATIENCE: Duration = Duration::from_secs(300);
const IDENTITY_RETRY_MAX: Duration = Duration::from_secs(30);
const IDENTITY_RETRY_MAX_LATER: Duration = Duration::from_secs(300);
/// How long replies may take to drain at shutdown; what is left stays spooled for next start.
const REPLY_FLUSH: Duration = Duration::from_secs(5);

/// Why the agent could not start; logged once, then the process exits with code 1.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("stopped before an identity was found")]
    StoppedEarly,
    #[error("cannot set up HTTPS: {0}")]
    Https(#[from] HttpError),
    #[error("{service} endpoint: {source}")]
    Endpoint {
        service: &'static str,
        source: EndpointError,
    },
    /// `what` names the part that needs a thread, a pipe or a signal handler; all are out of
    /// the same process limits.
    #[error("cannot {what}: {source} (check the process and descriptor limits)")]
    Resource {
        what: String,
        source: std::io::Error,
    },
}

/// Maps an I/O failure while starting `what` to [`AgentError::Resource`].
fn resource(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let what = what.into();
    move |source| AgentError::Resource { what, source }
}

/// Maps an endpoint resolution failure for `service` to [`AgentError::Endpoint`].
fn endpoint_of(service: &'static str) -> impl FnOnce(EndpointError) -> AgentError {
    move |source| AgentError::Endpoint { service, source }
}

/// `ssm-lite run`: where the configuration is and where state is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunArgs {
    pub config: Option<PathBuf>,
    pub state_dir: PathBuf,
}

/// Variables every script sees, besides SSM_COMMAND_ID (§3.5 item 7), and where the node's
/// credentials are shared with them (§5.7).
fn script_env(identity: &Identity, host: &HostFacts) -> Vec<(String, String)> {
    let shared = identity.shared_credentials.iter();
    let mut env = vec![
        ("AWS_SSM_INSTANCE_ID".into(), identity.instance_id.clone()),
        ("AWS_SSM_REGION_NAME".into(), identity.region.clone()),
        ("AWS_SSM_PLATFORM_NAME".into(), host.platform_name.clone()),
        (
            "AWS_SSM_PLATFORM_VERSION".into(),
            host.platform_version.clone(),
        ),
    ];
    env.extend(shared.flat_map(|file| file.script_env()));
    env
}

fn select_identity(
    config: &Config,
    http: &Arc<HttpClient>,
    env: &Env,
    state_dir: &Path,
    shutdown: &Shutdown,
) -> Result<Identity, AgentError> {
    let patient_until = Instant::now() + IDENTITY_PATIENCE;
    let mut attempt = 0;
    loop {
        match identity::select(config, http.clone(), env, state_dir) {
            Ok(id) => return Ok(id),
            Err(e) if e.fatal => return Err(e.into()),
            Err(e) => {
                attempt += 1;
                let cap = if Instant::now() < patient_until {
                    IDENTITY_RETRY_MAX
                } else {
                    IDENTITY_RETRY_MAX_LATER
                };
                let delay = crate::mds::backoff(attempt, cap);
                log::warn!(
                    "no usable identity yet ({e}); trying again in {} s",
                    delay.as_secs()
                );
                if shutdown.wait_timeout(delay) {
                    return Err(AgentError::StoppedEarly);
                }
            }
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, AgentError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(resource(format!("start thread {name}")))
}

/// Keeps credentials fresh while nothing uses them (an idle agent on MGS makes few signed calls):
/// wakes at half the remaining lifetime and asks the provider, which refreshes from half-life on.
fn refresh_credentials(
    provider: &dyn crate::aws::credentials::CredentialsProvider,
    shutdown: &Shutdown,
) {
    const RETRY: Duration = Duration::from_secs(30);
    loop {
        let delay = match provider.credentials() {
            Ok(c) => match c
                .expires_at
                .and_then(|t| t.duration_since(std::time::SystemTime::now()).ok())
            {
                Some(left) => (left / 2 + Duration::from_secs(1)).max(Duration::from_secs(1)),
                None if c.expires_at.is_none() => return, // long-lived keys never need a refresh
                None => RETRY,
            },
            Err(e) => {
                log::warn!("credentials: {e}; trying again in {} s", RETRY.as_secs());
                RETRY
            }
        };
        if shutdown.wait_timeout(delay) {
            return;
        }
    }
}

/// What the transports share.
struct Context<'a> {
    config: &'a Config,
    http: &'a Arc<HttpClient>,
    identity: &'a Identity,
    region: &'a str,
    channel: &'a ChannelHandle,
    shutdown: &'a Shutdown,
    /// Where session transcripts are kept.
    session_logs: PathBuf,
    /// The one S3 client (command output, downloads, session transcripts).
    s3: Arc<S3Client>,
    /// The one CloudWatch Logs client, or why there is none.
    logs: Result<LogsClient, String>,
}

/// ec2messages: the reply sender thread (returned, joined at shutdown) and the poll thread.
fn start_mds(
    ctx: &Context<'_>,
    engine: &Arc<Engine>,
    outbox: &Arc<Outbox>,
) -> Result<JoinHandle<()>, AgentError> {
    let (config, identity) = (ctx.config, ctx.identity);
    let endpoint = config
        .endpoint(&endpoint::EC2MESSAGES, ctx.region)
        .map_err(endpoint_of("ec2messages"))?;
    log::info!("ec2messages endpoint {}", endpoint.url);
    let timeout = Duration::from_millis(config.mds.stop_timeout_millis);
    let client = || {
        let json = JsonClient::new(
            ctx.http.clone(),
            endpoint.clone(),
            endpoint::EC2MESSAGES,
            identity.credentials.clone(),
        );
        MdsClient::new(json, &identity.instance_id, timeout)
    };
    let (sender_client, sender_outbox) = (client(), outbox.clone());
    let sender = spawn("mds-replies", move || sender_outbox.run(&sender_client))?;
    let poller = Poller {
        client: client(),
        channel: ctx.channel.clone(),
        engine: engine.clone(),
        outbox: outbox.clone(),
        builder: ReplyBuilder {
            agent: AgentInfo::from_config(config),
            able_to_open_mgs_connection: Some(false),
            max_encoded_len: None,
        },
        shutdown: ctx.shutdown.clone(),
        backlog: Default::default(),
    };
    spawn("mds-poll", move || poller.run())?;
    Ok(sender)
}

/// The CloudWatch Logs client of command output and session transcripts, signed with the
/// identity's credentials, at `logs.<region>.<domain>` or `CloudWatchLogs.Endpoint`; or why
/// there is none, which each command or session that asks for CloudWatch is told.
fn logs_client(
    http: &Arc<HttpClient>,
    identity: &Identity,
    config: &Config,
) -> Result<LogsClient, String> {
    let at = config
        .endpoint(&endpoint::LOGS, &identity.region)
        .map_err(|e| {
            log::error!("logs endpoint: {e}; nothing goes to CloudWatch Logs");
            format!("the logs endpoint is not usable: {e}")
        })?;
    let credentials = identity.credentials.clone();
    Ok(LogsClient::new(JsonClient::new(
        http.clone(),
        at,
        endpoint::LOGS,
        credentials,
    )))
}

/// S3 and CloudWatch Logs for session transcripts: the clients command output uses.
fn session_logging(ctx: &Context<'_>) -> LoggingEnv {
    let (config, identity) = (ctx.config, ctx.identity);
    LoggingEnv {
        s3: ctx.s3.clone(),
        logs: ctx.logs.clone(),
        region: ctx.region.to_owned(),
        instance_id: identity.instance_id.clone(),
        dir: ctx.session_logs.clone(),
        keep_on_disk: config.ssm.session_logs_destination == "disk",
        retention: Duration::from_secs(
            config
                .ssm
                .session_logs_retention_duration_hours
                .saturating_mul(3600),
        ),
    }
}

/// ssmmessages: the control channel thread, carrying Run Command jobs and sessions.
fn start_mgs(
    ctx: &Context<'_>,
    jobs: Arc<MgsJobs>,
    control: ControlSender,
) -> Result<Arc<Sessions>, AgentError> {
    let config = ctx.config;
    let region = if config.mgs.region.is_empty() {
        ctx.region
    } else {
        &config.mgs.region
    };
    let endpoint = config
        .endpoint(&endpoint::SSMMESSAGES, region)
        .map_err(endpoint_of("ssmmessages"))?;
    log::info!("ssmmessages endpoint {}", endpoint.url);
    let env = SessionEnv {
        http: ctx.http.clone(),
        endpoint: endpoint.clone(),
        credentials: ctx.identity.credentials.clone(),
        instance_id: ctx.identity.instance_id.clone(),
        agent_version: config.agent.version.clone(),
        denied_ips: denied_ips(ctx),
        users: runas::Host::system(),
        kms: crypto::kms_client(
            ctx.http.clone(),
            ctx.region,
            config,
            ctx.identity.credentials.clone(),
        )
        .map_err(endpoint_of("kms"))?,
        require_kms_challenge: config.kms.require_kms_challenge_response,
        logging: session_logging(ctx),
    };
    let sessions = Arc::new(Sessions::new(
        env,
        config.mgs.session_workers_limit,
        control.clone(),
    ));
    let channel = ControlChannel {
        http: ctx.http.clone(),
        endpoint,
        credentials: ctx.identity.credentials.clone(),
        instance_id: ctx.identity.instance_id.clone(),
        agent_version: config.agent.version.clone(),
        channel: ctx.channel.clone(),
        sender: control,
        shutdown: ctx.shutdown.clone(),
    };
    let dispatcher = Dispatcher {
        jobs,
        sessions: Some(sessions.clone()),
    };
    spawn("mgs-control", move || channel.run(&dispatcher))?;
    Ok(sessions)
}

/// `Mgs.DeniedPortForwardingRemoteIPs` and, on EC2, the reserved addresses of the VPC's CIDR
/// blocks (its DNS resolver among them), as upstream denies them. The VPC's blocks do not change
/// while the instance runs, so IMDS is asked once; if it cannot say, that is logged and the
/// configured list applies alone (as upstream does).
fn denied_ips(ctx: &Context<'_>) -> Vec<String> {
    let mut denied = ctx.config.mgs.denied_port_forwarding_remote_ips.clone();
    let (_, bad) = crate::session::port::DenyList::parse(&denied);
    if !bad.is_empty() {
        log::warn!(
            "Mgs.DeniedPortForwardingRemoteIPs: ignoring {bad:?}: neither an IP address nor a CIDR block"
        );
    }
    if ctx.identity.kind == identity::IdentityKind::Ec2 {
        let imds = crate::aws::imds::ImdsClient::new(ctx.http.clone(), &Env::capture());
        match imds.vpc_cidr_blocks() {
            Ok(blocks) => {
                let reserved = crate::session::port::vpc_reserved(&blocks);
                log::info!(
                    "port forwarding also denied to {reserved:?} (reserved in VPC {blocks:?})"
                );
                denied.extend(reserved);
            }
            Err(e) => log::warn!(
                "cannot read the VPC's CIDR blocks ({e}); port forwarding to the VPC's reserved addresses (its DNS resolver) is not refused"
            ),
        }
    }
    denied
}

/// Logs what is starting and raises the descriptor limit sessions need.
fn announce(config: &Config) {
    log::info!(
        "ssm-lite {} starting (advertised as {} {}; upstream-compatible with {COMPATIBLE_AGENT_VERSION})",
        crate::update::version(),
        config.agent.name,
        config.agent.version
    );
    match crate::sys::child::raise_fd_limit() {
        Ok((old, new)) if old < new => {
            log::info!("descriptor limit raised from {old} to {new} (children get {old})")
        }
        Ok(_) => {}
        Err(e) => log::warn!("{e}; sessions may run out of descriptors"),
    }
}

/// The first SIGTERM or SIGINT triggers `shutdown`; the handle closes the signal thread.
fn watch_signals(shutdown: &Shutdown) -> Result<signal_hook::iterator::Handle, AgentError> {
    let mut signals =
        Signals::new([SIGTERM, SIGINT]).map_err(resource("install signal handlers"))?;
    let (shutdown, handle) = (shutdown.clone(), signals.handle());
    spawn("signals", move || {
        if let Some(sig) = signals.forever().next() {
            log::info!("received signal {sig}; shutting down");
            shutdown.trigger();
        }
    })?;
    Ok(handle)
}

/// Health pings to ssm; without an ssm endpoint the agent runs on, without them.
fn start_health(ctx: &Context<'_>, ssm: Option<JsonClient>, env: Env) -> Result<(), AgentError> {
    let Some(ssm) = ssm else {
        log::error!("health pings disabled: no usable ssm endpoint");
        return Ok(());
    };
    Health::new(
        ssm,
        ctx.identity.clone(),
        ctx.config.clone(),
        ctx.channel.clone(),
        ctx.shutdown.clone(),
    )
    .with_imds_placement(ctx.http.clone(), env)
    .spawn()
    .map_err(resource("start the health thread"))?;
    Ok(())
}

/// `aws:softwareInventory` over the agent's ssm client: the host's own files, custom inventory
/// from `Ssm.CustomInventoryDefaultLocation` (default `<state dir>/inventory/custom`), upstream's
/// random wait of up to 29 s before PutInventory (`SSM_LITE_INVENTORY_MAX_WAIT_SECS` for tests).
fn inventory(
    client: &JsonClient,
    config: &Config,
    identity: &Identity,
    state: &StateDir,
    state_root: &Path,
) -> Inventory {
    let custom = match config.ssm.custom_inventory_default_location.as_str() {
        "" => state_root.join("inventory/custom"),
        dir => PathBuf::from(dir),
    };
    Inventory::new(
        Arc::new(SsmInventory::new(client.clone())),
        identity.instance_id.clone(),
        state.inventory_dir(),
        PathBuf::from("/"),
        custom,
        config.agent.version.clone(),
        env_secs("SSM_LITE_INVENTORY_MAX_WAIT_SECS", 29),
    )
}

/// Seconds from the environment variable `name` (tests and demos shorten upstream's random
/// waits), else `default`.
fn env_secs(name: &str, default: u64) -> Duration {
    let secs = std::env::var(name).ok().and_then(|s| s.trim().parse().ok());
    Duration::from_secs(secs.unwrap_or(default))
}

/// Runs the agent until SIGTERM or SIGINT; `Ok` is a clean stop (exit code 0).
pub fn run(args: &RunArgs) -> Result<(), AgentError> {
    let config = Config::load(args.config.as_deref())?;
    announce(&config);
    let shutdown = Shutdown::new();
    crate::update::configure(&config, &args.state_dir, &shutdown);
    let signal_handle = watch_signals(&shutdown)?;
    let http = Arc::new(HttpClient::for_agent(&config)?);
    let env = Env::capture();
    let identity = select_identity(&config, &http, &env, &args.state_dir, &shutdown)?;
    let (provider, refresher_shutdown) = (identity.credentials.clone(), shutdown.clone());
    spawn("credentials", move || {
        refresh_credentials(provider.as_ref(), &refresher_shutdown)
    })?;
    let region = if config.agent.region.is_empty() {
        identity.region.clone()
    } else {
        config.agent.region.clone()
    };
    let state = StateDir::open(&args.state_dir, &identity.instance_id)?
        .with_orchestration_root(&config.agent.orchestration_root_dir)?;
    let session_logs_dir = state.session_orchestration_root();
    let host = HostFacts::gather(&health::OS_RELEASE_PATHS.map(PathBuf::from));

    let channel = ChannelHandle::default();
    let (spool, leftovers) = ReplySpool::open(&state.replies_dir())?;
    let outbox = Outbox::open(spool, leftovers, channel.clone());
    let (mgs_spool, mgs_leftovers) = ReplySpool::open(&state.mgs_replies_dir())?;
    let control = ControlSender::new().map_err(resource("set up the control channel"))?;
    let builder = ReplyBuilder {
        agent: AgentInfo::from_config(&config),
        able_to_open_mgs_connection: None,
        max_encoded_len: None,
    };
    let jobs = MgsJobs::new(control.clone(), mgs_spool, mgs_leftovers, builder);
    let mut engine_cfg = EngineConfig::from_config(&config, script_env(&identity, &host));
    let mailbox = Arc::new(Mailbox::default());
    engine_cfg.sources.http = Some(http.clone());
    // One ssm client serves health pings, Parameter Store lookups and SSM documents.
    let ssm = match health::ssm_client(http.clone(), &identity, &config) {
        Ok(client) => {
            // The same store reads downloadContent's `{{ssm-secure:…}}` tokens, with decryption.
            let store = Arc::new(SsmParameterStore::new(client.clone()));
            engine_cfg.parameter_store = store.clone();
            engine_cfg.sources.secrets = store;
            engine_cfg.sources.documents = Arc::new(SsmDocuments::new(client.clone()));
            engine_cfg.sources.associations = Some(mailbox.clone());
            engine_cfg.sources.packages = Some(Arc::new(Distributor::new(
                client.clone(),
                http.clone(),
                state.instance_dir(),
                Ec2Facts {
                    instance_id: identity.instance_id.clone(),
                    instance_type: identity.instance_type.clone(),
                    region: identity.region.clone(),
                    availability_zone: identity.availability_zone.clone(),
                },
            )));
            engine_cfg.sources.inventory = Some(Arc::new(inventory(
                &client,
                &config,
                &identity,
                &state,
                &args.state_dir,
            )));
            Some(client)
        }
        Err(e) => {
            log::error!("ssm endpoint: {e}; no health pings and no Parameter Store lookups");
            let why = format!("the ssm endpoint is not usable: {e}");
            engine_cfg.sources.documents = Sources::unavailable(&why).documents;
            engine_cfg.parameter_store = Arc::new(NoParameterStore(why));
            None
        }
    };
    let logs = logs_client(&http, &identity, &config);
    let cloudwatch = CloudWatchDestinations::new(logs.clone(), &identity.instance_id);
    engine_cfg.destinations.push(Arc::new(cloudwatch));
    // One S3 client uploads command output and transcripts and serves downloads; buckets find
    // their region once.
    let s3 = S3Settings::from_config(&config, &region);
    let s3 = Arc::new(S3Client::new(
        http.clone(),
        identity.credentials.clone(),
        s3,
    ));
    let s3_output = S3Destinations::new(s3.clone(), &identity.instance_id);
    engine_cfg.destinations.push(Arc::new(s3_output));
    engine_cfg.sources.objects = s3.clone();
    engine_cfg.sources.parameters = engine_cfg.parameter_store.clone();
    let sinks: Vec<(Transport, Arc<dyn ReplySink>)> = vec![
        (Transport::Mds, outbox.clone()),
        (Transport::Mgs, jobs.clone()),
        (Transport::Association, mailbox.clone()),
    ];
    let associations = AssociationSettings {
        instance_id: identity.instance_id.clone(),
        frequency: Duration::from_secs(config.ssm.association_frequency_minutes * 60),
        jitter: env_secs("SSM_LITE_ASSOCIATION_JITTER_SECS", 30),
        state: state.clone(),
    };
    let documents = engine_cfg.sources.documents.clone();
    let engine = Arc::new(Engine::start(engine_cfg, state, sinks));
    jobs.attach(engine.clone());
    if let Some(client) = &ssm {
        let service = Arc::new(SsmAssociations::new(client.clone()));
        let scheduler = Scheduler::new(
            service,
            documents,
            engine.clone(),
            mailbox.clone(),
            associations,
        )?;
        spawn("associations", move || scheduler.run())?;
    }

    let ctx = Context {
        config: &config,
        http: &http,
        identity: &identity,
        region: &region,
        channel: &channel,
        shutdown: &shutdown,
        session_logs: session_logs_dir,
        s3,
        logs,
    };
    let sender = start_mds(&ctx, &engine, &outbox)?;
    let sessions = start_mgs(&ctx, jobs, control)?;

    start_health(&ctx, ssm, env)?;

    log::info!(
        "ssm-lite is running as {} in {region}",
        identity.instance_id
    );
    while !shutdown.wait_timeout(Duration::from_secs(3600)) {}

    let running = Running {
        sessions,
        associations: mailbox,
        engine,
        outbox,
        sender,
    };
    running.stop(Duration::from_millis(config.mds.stop_timeout_millis));
    signal_handle.close();
    log::info!("ssm-lite stopped");
    Ok(())
}

/// What runs once the agent is up, stopped in this order at shutdown.
struct Running {
    sessions: Arc<Sessions>,
    associations: Arc<Mailbox>,
    engine: Arc<Engine>,
    outbox: Arc<Outbox>,
    /// The ec2messages reply sender, joined once the outbox is closed.
    sender: JoinHandle<()>,
}

impl Running {
    /// Sessions and steps get `grace` to end, then the outbox `REPLY_FLUSH` to drain.
    fn stop(self, grace: Duration) {
        // The poll thread may sit in a long poll for up to Mds.StopTimeoutMillis; it is not
        // joined. Anything it receives from now on is refused by the closed engine and
        // redelivered later.
        self.sessions.shutdown(grace);
        self.associations.close();
        self.engine.shutdown(grace);
        self.outbox.close(Instant::now() + REPLY_FLUSH);
        let _ = self.sender.join();
        if !self.outbox.is_empty() {
            log::warn!(
                "some replies could not be sent before exit; they stay spooled and go out at the next start"
            );
        }
    }
}
