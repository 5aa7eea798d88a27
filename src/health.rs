//! Health pings: `ssm:UpdateInstanceInformation` at start and every `Ssm.HealthFrequencyMinutes`
//! (docs/protocol.md §5.6). Upstream waits a random delay before its schedule; ssm-lite pings at
//! once, so the console shows the instance online as soon as the agent runs.

use crate::aws::credentials::Env;
use crate::aws::endpoint::{self, EndpointError};
use crate::aws::http::HttpClient;
use crate::aws::jsonrpc::{AwsError, JsonClient};
use crate::config::Config;
use crate::identity::{self, Identity, IdentityKind, Placement};
use crate::shutdown::Shutdown;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the platform name and version come from, in order (os-release(5)).
pub const OS_RELEASE_PATHS: [&str; 2] = ["/etc/os-release", "/usr/lib/os-release"];
const PING_TIMEOUT: Duration = Duration::from_secs(30);

/// The transport that currently carries Run Command, reported as `SSMConnectionChannel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Ec2Messages,
    SsmMessages,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Ec2Messages => "ec2messages",
            Channel::SsmMessages => "ssmmessages",
        }
    }
}

/// Shared between the transports (which set it) and the health thread (which reports it).
/// Starts as `ec2messages`, the transport ssm-lite runs first.
#[derive(Debug, Clone)]
pub struct ChannelHandle(Arc<Mutex<Channel>>);

impl Default for ChannelHandle {
    fn default() -> Self {
        ChannelHandle::new(Channel::Ec2Messages)
    }
}

impl ChannelHandle {
    pub fn new(initial: Channel) -> ChannelHandle {
        ChannelHandle(Arc::new(Mutex::new(initial)))
    }

    pub fn set(&self, channel: Channel) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = channel;
    }

    pub fn get(&self) -> Channel {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the ping says about the host, read afresh for each ping (addresses change).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostFacts {
    pub platform_name: String,
    pub platform_version: String,
    pub ip_address: String,
    pub computer_name: String,
}

impl HostFacts {
    /// Platform from the first readable os-release file of `os_release`; the rest from the OS.
    /// Whatever cannot be read is reported empty (and logged at debug).
    pub fn gather(os_release: &[PathBuf]) -> HostFacts {
        let (platform_name, platform_version) = platform(os_release);
        let ip_address = match crate::sys::interface_addresses() {
            Ok(addresses) => preferred_ip(&addresses)
                .map(|a| a.to_string())
                .unwrap_or_default(),
            Err(e) => {
                log::debug!("health: cannot list interface addresses: {e}");
                String::new()
            }
        };
        let computer_name = crate::sys::hostname().unwrap_or_else(|e| {
            log::debug!("health: cannot read the host name: {e}");
            String::new()
        });
        HostFacts {
            platform_name,
            platform_version,
            ip_address,
            computer_name,
        }
    }
}

/// The `UpdateInstanceInformation` request: every field present, as a string (§5.6).
pub fn instance_information(
    identity: &Identity,
    config: &Config,
    host: &HostFacts,
    placement: &Placement,
    channel: Channel,
) -> Value {
    json!({
        "AgentName": config.agent.name,
        "AgentStatus": "Active",
        "AgentVersion": config.agent.version,
        "AvailabilityZone": placement.availability_zone,
        "AvailabilityZoneId": placement.availability_zone_id,
        "ComputerName": host.computer_name,
        "IPAddress": host.ip_address,
        "InstanceId": identity.instance_id,
        "PlatformName": host.platform_name,
        "PlatformType": "Linux",
        "PlatformVersion": host.platform_version,
        "SSMConnectionChannel": channel.as_str(),
    })
}

/// The placement to report: IMDS's on EC2; for a custom identity IMDS's when it answered (as
/// upstream does, §9 item 7), else the configured one; on-prem sends empty strings (§9 item 12).
fn placement_for(identity: &Identity, probed: Option<Placement>) -> Placement {
    let configured = || Placement {
        availability_zone: identity.availability_zone.clone(),
        availability_zone_id: identity.availability_zone_id.clone(),
    };
    match identity.kind {
        IdentityKind::OnPrem => Placement::default(),
        IdentityKind::Ec2 => configured(),
        IdentityKind::Custom => probed.unwrap_or_else(configured),
    }
}

/// The first non-unspecified address, preferring neither loopback nor link-local, then IPv4;
/// among equals the interface order wins.
pub fn preferred_ip(addresses: &[IpAddr]) -> Option<IpAddr> {
    let local = |a: &IpAddr| match a {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unicast_link_local(),
    };
    addresses
        .iter()
        .filter(|a| !a.is_unspecified())
        .min_by_key(|a| (local(a), !a.is_ipv4()))
        .copied()
}

/// `NAME` and `VERSION_ID` of the first os-release file that can be read (os-release(5) says a
/// missing `NAME` means `Linux`).
fn platform(paths: &[PathBuf]) -> (String, String) {
    let Some(text) = paths.iter().find_map(|p| std::fs::read_to_string(p).ok()) else {
        log::debug!("health: none of {paths:?} can be read; platform name and version unknown");
        return (String::new(), String::new());
    };
    let mut fields = parse_os_release(&text);
    let name = fields.remove("NAME").unwrap_or_else(|| "Linux".into());
    (name, fields.remove("VERSION_ID").unwrap_or_default())
}

/// os-release(5): `KEY=value` lines, `#` comments, values optionally in single or double quotes
/// (backslash escapes `\" \\ \$ \`` inside double quotes). Malformed lines are skipped.
pub fn parse_os_release(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let (key, raw) = line.split_once('=')?;
            let key = key.trim();
            let valid =
                !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            valid.then_some(())?;
            Some((key.to_owned(), unquote(raw.trim())?))
        })
        .collect()
}

fn unquote(raw: &str) -> Option<String> {
    let Some(quote @ ('"' | '\'')) = raw.chars().next() else {
        return Some(raw.to_owned());
    };
    let inner = raw[1..].strip_suffix(quote)?;
    if quote == '\'' {
        return (!inner.contains('\'')).then(|| inner.to_owned());
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                escaped @ ('"' | '\\' | '$' | '`') => out.push(escaped),
                other => out.extend(['\\', other]),
            },
            '"' => return None,
            _ => out.push(c),
        }
    }
    Some(out)
}

/// Sends one ping; the real one is [`JsonClient`], tests use fakes.
pub trait PingSender: Send {
    fn update_instance_information(&self, request: &Value) -> Result<(), AwsError>;
}

impl PingSender for JsonClient {
    fn update_instance_information(&self, request: &Value) -> Result<(), AwsError> {
        self.call("UpdateInstanceInformation", request, PING_TIMEOUT)
            .map(|_| ())
    }
}

/// The SSM client the ping uses: `AmazonSSM.*`, signed for `ssm`, at `Ssm.Endpoint` or the
/// region's endpoint.
pub fn ssm_client(
    http: Arc<HttpClient>,
    identity: &Identity,
    config: &Config,
) -> Result<JsonClient, EndpointError> {
    let endpoint = config.endpoint(&endpoint::SSM, &identity.region)?;
    Ok(JsonClient::new(
        http,
        endpoint,
        endpoint::SSM,
        identity.credentials.clone(),
    ))
}

/// The longest pause before a failed ping is tried again.
const RETRY_CAP: Duration = Duration::from_secs(20);

type PlacementProbe = Box<dyn FnOnce() -> Option<Placement> + Send>;

/// The health module: build with [`Health::new`], optionally [`Health::with_imds_placement`],
/// then [`Health::spawn`].
pub struct Health {
    sender: Box<dyn PingSender>,
    identity: Identity,
    config: Config,
    channel: ChannelHandle,
    shutdown: Shutdown,
    interval: Duration,
    os_release: Vec<PathBuf>,
    placement_probe: Option<PlacementProbe>,
}

impl Health {
    /// `sender` is normally the [`ssm_client`]; pings every `Ssm.HealthFrequencyMinutes`.
    pub fn new(
        sender: impl PingSender + 'static,
        identity: Identity,
        config: Config,
        channel: ChannelHandle,
        shutdown: Shutdown,
    ) -> Health {
        let interval = Duration::from_secs(config.ssm.health_frequency_minutes * 60);
        Health {
            sender: Box::new(sender),
            identity,
            config,
            channel,
            shutdown,
            interval,
            os_release: OS_RELEASE_PATHS.iter().map(PathBuf::from).collect(),
            placement_probe: None,
        }
    }

    /// For a custom identity, ask IMDS once (quickly, on the health thread) for the placement,
    /// as upstream does; other identities already know theirs.
    pub fn with_imds_placement(mut self, http: Arc<HttpClient>, env: Env) -> Health {
        if self.identity.kind == IdentityKind::Custom {
            self.placement_probe = Some(Box::new(move || identity::probe_placement(http, &env)));
        }
        self
    }

    /// Starts the `health` thread: a ping now, then one per interval until shutdown.
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("health".into())
            .spawn(move || self.run())
    }

    fn run(mut self) {
        let probed = self.placement_probe.take().and_then(|probe| probe());
        let placement = placement_for(&self.identity, probed);
        let mut failures: u32 = 0;
        while !self.shutdown.is_triggered() {
            failures = match self.ping(&placement, failures > 0) {
                true => failures + 1,
                false => 0,
            };
            let wait = match failures {
                0 => self.interval,
                n => crate::mds::backoff(n, RETRY_CAP).min(self.interval),
            };
            if self.shutdown.wait_timeout(wait) {
                break;
            }
        }
        log::debug!("health: stopped");
    }

    /// One ping; returns whether it failed. A failed ping is retried with back-off, never more than
    /// [`RETRY_CAP`] apart (or the interval, if shorter), so the instance shows as online again
    /// soon after the service takes pings again; one log line each time.
    fn ping(&self, placement: &Placement, was_failing: bool) -> bool {
        let host = HostFacts::gather(&self.os_release);
        let request = instance_information(
            &self.identity,
            &self.config,
            &host,
            placement,
            self.channel.get(),
        );
        let sent = self.sender.update_instance_information(&request);
        if sent.is_ok() {
            crate::update::reached_service();
        }
        match sent {
            Ok(()) if was_failing => {
                log::info!("health: UpdateInstanceInformation succeeded again");
                false
            }
            Ok(()) => {
                log::debug!("health: UpdateInstanceInformation succeeded");
                false
            }
            Err(e) => {
                log::warn!(
                    "health: UpdateInstanceInformation failed: {}; retrying with back-off",
                    describe(&e)
                );
                true
            }
        }
    }
}

/// One line for a failed call, leading with the AWS error code when the service gave one.
fn describe(error: &AwsError) -> String {
    match error {
        AwsError::Service {
            status,
            code,
            message,
        } => format!("{code} (HTTP {status}): {message}"),
        AwsError::Transport(e) => format!("no answer from SSM: {e}"),
        AwsError::Credentials(e) => format!("no credentials: {e}"),
        AwsError::Decode(e) => format!("unexpected answer: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::credentials::{Credentials, StaticCredentials};
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::mpsc;
    use std::time::Instant;

    fn identity(kind: IdentityKind) -> Identity {
        Identity {
            kind,
            instance_id: "i-0123456789abcdef0".into(),
            region: "eu-west-1".into(),
            availability_zone: "eu-west-1a".into(),
            availability_zone_id: "euw1-az1".into(),
            instance_type: "t3.micro".into(),
            credentials: Arc::new(StaticCredentials(Credentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "secret".into(),
                session_token: None,
                expires_at: None,
            })),
            shared_credentials: None,
        }
    }

    #[test]
    fn os_release_values_are_unquoted_and_comments_skipped() {
        let fields = parse_os_release(
            "# comment\nNAME=\"Amazon Linux\"\nVERSION_ID='2023'\nID=amzn\n\n  PRETTY_NAME=\"Say \\\"hi\\\" \\$x \\n\"\n\
             BROKEN=\"unterminated\nbad key=1\nEMPTY=\n",
        );
        assert_eq!(fields["NAME"], "Amazon Linux");
        assert_eq!(fields["VERSION_ID"], "2023");
        assert_eq!(fields["ID"], "amzn");
        assert_eq!(fields["PRETTY_NAME"], "Say \"hi\" $x \\n");
        assert_eq!(fields["EMPTY"], "");
        assert!(!fields.contains_key("BROKEN") && !fields.contains_key("bad key"));
    }

    #[test]
    fn platform_falls_back_to_the_second_file() {
        let dir = std::env::temp_dir().join(format!("ssm-lite-health-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let second = dir.join("usr-lib-os-release");
        std::fs::write(&second, "VERSION_ID=\"12\"\n").unwrap();
        let paths = [dir.join("missing"), second];
        assert_eq!(platform(&paths), ("Linux".to_owned(), "12".to_owned()));
        assert_eq!(platform(&paths[..1]), (String::new(), String::new()));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn ip_preference_skips_unspecified_then_local_then_prefers_ipv4() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let link = IpAddr::V4(Ipv4Addr::new(169, 254, 1, 2));
        let v6_link: IpAddr = "fe80::1".parse().unwrap();
        let v6: IpAddr = "2001:db8::5".parse().unwrap();
        let v4: IpAddr = "10.0.0.7".parse().unwrap();
        let v4b: IpAddr = "10.0.0.8".parse().unwrap();
        assert_eq!(preferred_ip(&[lo, v6_link, v6, v4, v4b]), Some(v4));
        assert_eq!(preferred_ip(&[lo, link, v6]), Some(v6));
        assert_eq!(
            preferred_ip(&[IpAddr::V6(Ipv6Addr::LOCALHOST), link, lo]),
            Some(link)
        );
        assert_eq!(preferred_ip(&[IpAddr::V4(Ipv4Addr::UNSPECIFIED)]), None);
        assert_eq!(preferred_ip(&[]), None);
    }

    #[test]
    fn request_has_every_field_as_a_string() {
        let config =
            Config::from_json(r#"{"Agent":{"Name":"ssm-lite","Version":"3.3.1142.0"}}"#).unwrap();
        let host = HostFacts {
            platform_name: "Debian GNU/Linux".into(),
            platform_version: "12".into(),
            ip_address: "10.0.0.7".into(),
            computer_name: "web-1.example.com".into(),
        };
        let placement = Placement {
            availability_zone: "eu-west-1a".into(),
            availability_zone_id: String::new(),
        };
        let request = instance_information(
            &identity(IdentityKind::Ec2),
            &config,
            &host,
            &placement,
            Channel::Ec2Messages,
        );
        let expected = json!({
            "AgentName": "ssm-lite", "AgentStatus": "Active", "AgentVersion": "3.3.1142.0",
            "AvailabilityZone": "eu-west-1a", "AvailabilityZoneId": "", "ComputerName": "web-1.example.com",
            "IPAddress": "10.0.0.7", "InstanceId": "i-0123456789abcdef0", "PlatformName": "Debian GNU/Linux",
            "PlatformType": "Linux", "PlatformVersion": "12", "SSMConnectionChannel": "ec2messages",
        });
        assert_eq!(request, expected);
    }

    #[test]
    fn placement_depends_on_the_identity_kind() {
        let probed = Placement {
            availability_zone: "eu-west-1c".into(),
            availability_zone_id: "euw1-az3".into(),
        };
        assert_eq!(
            placement_for(&identity(IdentityKind::OnPrem), Some(probed.clone())),
            Placement::default()
        );
        assert_eq!(
            placement_for(&identity(IdentityKind::Ec2), None).availability_zone_id,
            "euw1-az1"
        );
        assert_eq!(
            placement_for(&identity(IdentityKind::Custom), Some(probed.clone())),
            probed
        );
        assert_eq!(
            placement_for(&identity(IdentityKind::Custom), None).availability_zone,
            "eu-west-1a"
        );
    }

    /// Records each ping, answering from `answers` in order (then success).
    struct FakeSender {
        pings: mpsc::Sender<(Instant, Value)>,
        answers: Mutex<Vec<Result<(), AwsError>>>,
    }

    impl PingSender for FakeSender {
        fn update_instance_information(&self, request: &Value) -> Result<(), AwsError> {
            let answer = self.answers.lock().unwrap().pop().unwrap_or(Ok(()));
            self.pings.send((Instant::now(), request.clone())).unwrap();
            answer
        }
    }

    fn health(
        interval: Duration,
        answers: Vec<Result<(), AwsError>>,
    ) -> (Health, mpsc::Receiver<(Instant, Value)>) {
        let (tx, rx) = mpsc::channel();
        let mut answers = answers;
        answers.reverse();
        let sender = FakeSender {
            pings: tx,
            answers: Mutex::new(answers),
        };
        let mut h = Health::new(
            sender,
            identity(IdentityKind::Custom),
            Config::default(),
            ChannelHandle::default(),
            Shutdown::new(),
        );
        h.interval = interval;
        (h, rx)
    }

    #[test]
    fn pings_at_start_and_stops_promptly_on_shutdown() {
        let (mut h, rx) = health(Duration::from_secs(3600), Vec::new());
        h.placement_probe = Some(Box::new(|| {
            Some(Placement {
                availability_zone: "eu-west-1c".into(),
                availability_zone_id: "euw1-az3".into(),
            })
        }));
        let shutdown = h.shutdown.clone();
        let started = Instant::now();
        let thread = h.spawn().unwrap();
        assert_eq!(thread.thread().name(), Some("health"));
        let (_, request) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(request["AvailabilityZone"], "eu-west-1c");
        assert_eq!(request["InstanceId"], "i-0123456789abcdef0");
        shutdown.trigger();
        thread.join().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(rx.try_recv().is_err(), "exactly one ping");
    }

    #[test]
    fn failures_are_retried_on_the_next_tick_and_the_channel_is_read_each_time() {
        let interval = Duration::from_millis(100);
        let throttled = AwsError::Service {
            status: 400,
            code: "ThrottlingException".into(),
            message: "slow down".into(),
        };
        assert_eq!(
            describe(&throttled),
            "ThrottlingException (HTTP 400): slow down"
        );
        let (h, rx) = health(interval, vec![Err(throttled)]);
        let (shutdown, channel) = (h.shutdown.clone(), h.channel.clone());
        let thread = h.spawn().unwrap();
        let (first, request) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(request["SSMConnectionChannel"], "ec2messages");
        channel.set(Channel::SsmMessages);
        let (second, request) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            second - first >= interval,
            "retried after {:?}",
            second - first
        );
        assert_eq!(request["SSMConnectionChannel"], "ssmmessages");
        shutdown.trigger();
        thread.join().unwrap();
    }

    #[test]
    fn a_refused_ping_is_retried_within_seconds_not_at_the_next_interval() {
        let refused = AwsError::Service {
            status: 400,
            code: "InvalidSignatureException".into(),
            message: "Signature expired".into(),
        };
        let (h, rx) = health(Duration::from_secs(3600), vec![Err(refused)]);
        let shutdown = h.shutdown.clone();
        let thread = h.spawn().unwrap();
        let (first, _) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let (second, _) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the refused ping is tried again after a short back-off");
        assert!(
            second - first >= Duration::from_millis(900),
            "{:?}",
            second - first
        );
        shutdown.trigger();
        thread.join().unwrap();
    }

    #[test]
    fn a_triggered_shutdown_means_no_ping() {
        let (h, rx) = health(Duration::from_secs(3600), Vec::new());
        h.shutdown.trigger();
        h.spawn().unwrap().join().unwrap();
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn ping_goes_out_as_a_signed_json_call_to_ssm() {
        let server = crate::aws::imds::fake::serve(|_| crate::aws::imds::fake::reply(200, "{}"));
        let http = Arc::new(
            HttpClient::new(&crate::aws::http::HttpConfig {
                user_agent: "t".into(),
                extra_ca_files: Vec::new(),
            })
            .unwrap(),
        );
        let config =
            Config::from_json(&format!(r#"{{"Ssm":{{"Endpoint":"{}"}}}}"#, server.url)).unwrap();
        let id = identity(IdentityKind::Ec2);
        let client = ssm_client(http, &id, &config).unwrap();
        let request = instance_information(
            &id,
            &config,
            &HostFacts::default(),
            &Placement::default(),
            Channel::Ec2Messages,
        );
        client.update_instance_information(&request).unwrap();
        let seen = server.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].header("x-amz-target"),
            Some("AmazonSSM.UpdateInstanceInformation")
        );
        assert!(
            seen[0]
                .header("authorization")
                .is_some_and(|a| a.contains("/eu-west-1/ssm/aws4_request"))
        );
        let body: Value = serde_json::from_slice(&seen[0].body).unwrap();
        assert_eq!(body, request);
    }
}
