//! Session Manager sessions: what to start ([`SessionSpec`]), and the client's role on the data
//! channel as session-manager-plugin plays it (docs/protocol.md §4.6, §8.2):
//!
//! * every `output_stream_data` is acknowledged by sequence number, duplicates included (the
//!   earlier ack may have been lost); output is delivered in sequence order, out-of-order
//!   messages are buffered and duplicates dropped;
//! * input (`input_stream_data`) is numbered from 0 across all payload types and re-sent every
//!   [`RETRANSMIT`] until acknowledged, because the agent drops input it cannot process yet
//!   without acking it; only the lowest-numbered unacknowledged messages, up to
//!   [`INPUT_WINDOW_MESSAGES`] and [`INPUT_WINDOW_BYTES`], are in flight, so an agent that
//!   withholds acks (backpressure) costs a window's resends, not a storm (session-manager-plugin
//!   resends only its oldest unacknowledged message);
//!   [`Session::send_input_out_of_order`] plays a hostile client instead;
//! * sessions with a handshake (NonInteractiveCommands, Port, or a KMS key) hold ordinary input
//!   back until HandshakeComplete, since the agent discards (after acking) input that arrives
//!   before it; the HandshakeResponse itself goes out at once;
//! * a KMSEncryption action is accepted as the plugin does (§4.6.3, §4.6.4): the client makes up
//!   a 64-byte data key and its "ciphertext", which the emulator's KMS (`kms.rs`) decrypts for
//!   the agent, answers the EncChallengeRequest, and from then on decrypts output (PayloadTypes
//!   1, 11, 12) with bytes 0..32 and encrypts input (PayloadType 1) with bytes 32..64;
//! * with [`Session::set_link`] the output crosses a slower link first (`link.rs`: round trip,
//!   bandwidth, loss) and every ack goes back late, as from a real client on a real network;
//!   without one, output is taken and acknowledged as soon as it arrives;
//! * a multiplexed Port session ([`SessionSpec::multiplexed`]) carries smux v1 in its type-1
//!   payloads (`smux.rs`): output goes to the streams' inboxes instead of [`Session::output`],
//!   writes on a [`SmuxStream`] wait while [`SMUX_WINDOW`] input messages are in flight (the
//!   plugin, too, blocks when its outgoing buffer is full), and a NOP goes out every
//!   [`SessionSpec::smux_keepalive`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Emulator;
use crate::agentmessage::{AgentMessage, FLAG_FIN, FLAG_SYN, payload_types as pt, types};
use crate::cipher::{Cipher, b64, unb64};
use crate::kms::KmsState;
use crate::link::{Link, LinkSpec};
use crate::mgs::{self, TaskComplete};
use crate::smux::{self, SmuxStats, SmuxStream};
use crate::state::{Shared, State};
use crate::util::random_string;
use crate::ws::{Incoming, WsConn};

/// How long unacknowledged input waits before it is sent again.
pub const RETRANSMIT: Duration = Duration::from_millis(200);
/// Largest input payload per message, like the plugin's `StreamDataPayloadSize`.
pub const INPUT_CHUNK: usize = 1024;
/// Client version announced in HandshakeResponse (a current session-manager-plugin).
pub const DEFAULT_CLIENT_VERSION: &str = "1.2.707.0";
/// Clients from this version on multiplex `LocalPortForwarding` sessions with smux.
pub const SMUX_MIN_CLIENT_VERSION: &str = "1.1.70";
/// Agents from this version on multiplex (the plugin's `TCPMultiplexingSupported`).
pub const SMUX_MIN_AGENT_VERSION: &str = "3.0.196.0";
/// Input messages (sent or held) beyond which smux writes wait for acknowledgements.
pub const SMUX_WINDOW: usize = 32;
/// Unacknowledged input messages (the lowest-numbered ones) sent and re-sent at most.
pub const INPUT_WINDOW_MESSAGES: usize = 512;
/// … and their payload bytes at most (the first message of the window goes in any case).
pub const INPUT_WINDOW_BYTES: usize = 1024 * 1024;

/// Port-forwarding Flag values (PayloadType 10).
pub mod flags {
    pub const DISCONNECT_TO_PORT: u32 = 1;
    pub const TERMINATE_SESSION: u32 = 2;
    pub const CONNECT_TO_PORT_ERROR: u32 = 3;
}

/// The Port session settings session-manager-plugin takes from the `Properties` of the
/// handshake's SessionType action (its `PortParameters`), and from nowhere else: the client
/// never sees the session document. Keys match in any case, as Go's JSON decoding does; a
/// value that is not a string reads as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortParameters {
    pub port_number: String,
    /// Where the client listens: `127.0.0.1:<localPortNumber>`, any free port when it is
    /// empty or "0"…
    pub local_port_number: String,
    /// … or this Unix socket when `localConnectionType` is `unix`.
    pub local_unix_socket: String,
    pub local_connection_type: String,
    /// `LocalPortForwarding` makes the session multiplexed (smux).
    pub port_type: String,
}

impl PortParameters {
    fn from_properties(properties: &Value) -> PortParameters {
        let get = |key: &str| {
            properties
                .as_object()
                .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)))
                .and_then(|(_, v)| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        PortParameters {
            port_number: get("portNumber"),
            local_port_number: get("localPortNumber"),
            local_unix_socket: get("localUnixSocket"),
            local_connection_type: get("localConnectionType"),
            port_type: get("type"),
        }
    }
}

/// What `start_session` sends in `interactive_shell`.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub session_id: String,
    pub document_name: String,
    /// `Standard_Stream`, `InteractiveCommands`, `NonInteractiveCommands` or `Port`.
    pub session_type: String,
    /// `DocumentContent.inputs` (SessionInputs).
    pub inputs: Value,
    /// `DocumentContent.parameters` (the declarations).
    pub declarations: Value,
    /// `DocumentContent.properties`.
    pub properties: Value,
    /// The payload's `Parameters`.
    pub parameters: Value,
    pub run_as_user: String,
    pub session_owner: String,
    /// Sent as `ClientVersion` in the HandshakeResponse.
    pub client_version: String,
    /// A Size message (PayloadType 3) sent as input 0, like the plugin does for shells.
    pub initial_size: Option<(u32, u32)>,
    /// How long `start_session` waits for the agent's data channel.
    pub connect_timeout: Duration,
    /// How often a multiplexed session sends an smux NOP.
    pub smux_keepalive: Duration,
}

fn default_inputs() -> Value {
    json!({
        "s3BucketName": "",
        "s3KeyPrefix": "",
        "s3EncryptionEnabled": true,
        "cloudWatchLogGroupName": "",
        "cloudWatchEncryptionEnabled": true,
        "cloudWatchStreamingEnabled": false,
        "kmsKeyId": "",
        "runAsEnabled": false,
        "runAsDefaultUser": "",
        "idleSessionTimeout": "20",
        "maxSessionDuration": "",
        "shellProfile": {"windows": "", "linux": ""}
    })
}

fn shell_properties(commands: &str, separate: bool) -> Value {
    let os = json!({
        "commands": commands,
        "runAsElevated": false,
        "separateOutputStream": separate,
        "stdOutSeparatorPrefix": "",
        "stdErrSeparatorPrefix": ""
    });
    json!({"windows": os, "linux": os, "macos": os})
}

impl SessionSpec {
    fn new(session_type: &str, document_name: &str, properties: Value) -> SessionSpec {
        let shell = matches!(session_type, "Standard_Stream" | "InteractiveCommands");
        SessionSpec {
            session_id: format!("emulator-{}", random_string(17, b"0123456789abcdef")),
            document_name: document_name.into(),
            session_type: session_type.into(),
            inputs: default_inputs(),
            declarations: json!({}),
            properties,
            parameters: json!({}),
            run_as_user: String::new(),
            session_owner: "arn:aws:iam::123456789012:user/emulator".into(),
            client_version: DEFAULT_CLIENT_VERSION.into(),
            initial_size: shell.then_some((80, 24)),
            connect_timeout: Duration::from_secs(30),
            smux_keepalive: smux::KEEPALIVE_INTERVAL,
        }
    }

    /// An interactive shell (AWS's default `SSM-SessionManagerRunShell`).
    pub fn standard_stream() -> SessionSpec {
        SessionSpec::new("Standard_Stream", "SSM-SessionManagerRunShell", Value::Null)
    }

    /// `commands` run in a PTY (`AWS-StartInteractiveCommand`).
    pub fn interactive_commands(commands: &str) -> SessionSpec {
        let props = shell_properties(commands, false);
        SessionSpec::new("InteractiveCommands", "AWS-StartInteractiveCommand", props)
    }

    /// `commands` run without a PTY; `separate_streams` asks for stdout (1), stderr (11) and
    /// the exit code (12) apart.
    pub fn non_interactive_commands(commands: &str, separate_streams: bool) -> SessionSpec {
        let props = shell_properties(commands, separate_streams);
        SessionSpec::new(
            "NonInteractiveCommands",
            "AWS-StartNonInteractiveCommand",
            props,
        )
    }

    /// Port forwarding to `host` (default: the agent's localhost) : `port`. With
    /// `local_port_forwarding` the properties say `type: LocalPortForwarding`, which makes an
    /// agent multiplex with smux when the client version is ≥ 1.1.70 (the default; see
    /// [`Self::multiplexed`] and [`Session::smux_open`]).
    pub fn port(port: u16, host: Option<&str>, local_port_forwarding: bool) -> SessionSpec {
        let mut props = json!({"portNumber": port.to_string()});
        if let Some(h) = host {
            props["host"] = json!(h);
        }
        if local_port_forwarding {
            props["type"] = json!("LocalPortForwarding");
        }
        SessionSpec::new("Port", "AWS-StartPortForwardingSession", props)
    }

    /// `aws ssm start-session --document-name AWS-StartPortForwardingSession --parameters
    /// portNumber=R[,localPortNumber=L]`: AWS's document, its properties templated on its
    /// parameters, so only the agent's resolution puts `localPortNumber` into the handshake
    /// (where [`crate::attach::LocalForwarder`] reads it).
    pub fn port_forwarding_session(remote_port: u16, local_port: Option<u16>) -> SessionSpec {
        let pattern = "^([0-9]|[1-9][0-9]{1,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$";
        let props = json!({
            "portNumber": "{{ portNumber }}",
            "type": "LocalPortForwarding",
            "localPortNumber": "{{ localPortNumber }}",
        });
        let mut spec = SessionSpec::new("Port", "AWS-StartPortForwardingSession", props);
        spec.declarations = json!({
            "portNumber": {"type": "String", "allowedPattern": pattern, "default": "80"},
            "localPortNumber": {"type": "String", "allowedPattern": pattern, "default": "0"},
        });
        spec.parameters = json!({"portNumber": remote_port.to_string()});
        if let Some(local) = local_port {
            spec.parameters["localPortNumber"] = json!(local.to_string());
        }
        spec
    }

    /// Sets `inputs.kmsKeyId` (the agent then asks for KMS encryption, except for Port).
    pub fn kms_key_id(mut self, key_id: &str) -> SessionSpec {
        self.inputs["kmsKeyId"] = json!(key_id);
        self
    }

    pub fn client_version(mut self, version: &str) -> SessionSpec {
        self.client_version = version.into();
        self
    }

    /// `RunAsUser` in the payload and `inputs.runAsEnabled`.
    pub fn run_as(mut self, user: &str, enabled: bool) -> SessionSpec {
        self.run_as_user = user.into();
        self.inputs["runAsEnabled"] = json!(enabled);
        self
    }

    pub fn session_id(mut self, id: &str) -> SessionSpec {
        self.session_id = id.into();
        self
    }

    /// Whether a session with these literal properties carries smux: Port with `type:
    /// LocalPortForwarding` and a client version ≥ [`SMUX_MIN_CLIENT_VERSION`]. The client
    /// itself decides from the handshake (`SessionState::answer_handshake`).
    pub fn multiplexed(&self) -> bool {
        self.session_type == "Port"
            && self.properties["type"] == "LocalPortForwarding"
            && version_at_least(&self.client_version, SMUX_MIN_CLIENT_VERSION)
    }

    /// Whether the agent will run a handshake for this session (docs/protocol.md §4.6.3).
    pub fn needs_handshake(&self) -> bool {
        let kms = self.inputs["kmsKeyId"]
            .as_str()
            .is_some_and(|k| !k.is_empty());
        match self.session_type.as_str() {
            "NonInteractiveCommands" | "Port" => true,
            _ => kms,
        }
    }

    /// The AgentTaskPayload (the `Content` of `interactive_shell`).
    pub fn task_payload(&self) -> Value {
        json!({
            "SessionId": self.session_id,
            "DocumentName": self.document_name,
            "DocumentContent": {
                "schemaVersion": "1.0",
                "description": format!("{} session started by ssm-emulator", self.session_type),
                "sessionType": self.session_type,
                "inputs": self.inputs,
                "parameters": self.declarations,
                "properties": self.properties,
            },
            "Parameters": self.parameters,
            "RunAsUser": self.run_as_user,
            "SessionOwner": self.session_owner,
        })
    }
}

/// Dotted versions compared number by number (a missing or non-numeric part counts as 0).
fn version_at_least(version: &str, min: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    let (mut v, mut m) = (parts(version), parts(min));
    let len = v.len().max(m.len());
    v.resize(len, 0);
    m.resize(len, 0);
    v >= m
}

/// Input sent and waiting for its acknowledgement.
struct Outgoing {
    message: AgentMessage,
    last_sent: Option<Instant>,
}

/// Counters for assertions about the reliability logic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Data channels the agent opened for this session.
    pub connects: u32,
    /// Input messages numbered so far (the next sequence number).
    pub inputs_sequenced: i64,
    /// Input messages sent again because no ack came within [`RETRANSMIT`].
    pub input_retransmissions: u64,
    /// Input messages still waiting for their ack.
    pub inputs_unacked: usize,
    /// `output_stream_data` frames received (including dropped and duplicate ones).
    pub output_frames: u64,
    /// Output messages that arrived again after they had been delivered or buffered.
    pub output_duplicates: u64,
    /// Output messages that arrived ahead of a gap and waited in the buffer.
    pub output_out_of_order: u64,
    /// The next output sequence number expected.
    pub output_expected: i64,
    /// The highest output sequence number seen (processed or not); -1 before any.
    pub output_highest: i64,
    /// Session data (types 1, 11, 12) delivered after the agent's `agent_task_complete`: the
    /// service closes the client's channel at the completion, so a real client may never see
    /// it. The agent must wait for the acknowledgement of its last output first.
    pub output_after_task_complete: u64,
}

/// The client's view of one session, kept in the emulator's state.
pub(crate) struct SessionState {
    spec: SessionSpec,
    conn: Option<u64>,
    open_message: Option<Value>,
    expected: i64,
    early: BTreeMap<i64, AgentMessage>,
    output: Vec<u8>,
    stderr: Vec<u8>,
    exit_code: Option<i32>,
    states: Vec<String>,
    handshake_request: Option<Value>,
    /// A Port session's settings, from the handshake.
    port_parameters: Option<PortParameters>,
    handshake_complete: Option<Value>,
    /// The agent had sent `agent_task_complete` when the frame being handled arrived.
    task_completed: bool,
    /// Set once the client accepted a KMSEncryption action.
    cipher: Option<Cipher>,
    /// An EncChallengeResponse was queued.
    challenge_answered: bool,
    drop_every: u64,
    /// Output frames are neither processed nor acknowledged (see `withhold_output_acks`).
    ignore_output: bool,
    /// Output frames seen since `drop_every` was set.
    drop_count: u64,
    dropped: BTreeSet<i64>,
    next_seq: i64,
    /// Input not numbered yet (waiting for the handshake to complete).
    held: VecDeque<(u32, Vec<u8>)>,
    unacked: BTreeMap<i64, Outgoing>,
    /// Unnumbered messages to write (acks, channel_closed, publication control).
    outbox: Vec<AgentMessage>,
    drop_requested: bool,
    /// Send every never-sent input message at once, the lowest-numbered last.
    burst: bool,
    pub(crate) closed_by_service: bool,
    stats: SessionStats,
    /// The smux client of a multiplexed session, made when the handshake says so.
    smux: Option<Arc<smux::Client>>,
    /// A slower client (see [`Session::set_link`]).
    link: Option<Link>,
}

/// The emulator's KMS as the session client uses it: where its data keys are registered, and
/// the instance (`aws:ssm:TargetId`) they are bound to.
struct KmsClient<'a> {
    state: &'a mut KmsState,
    target_id: &'a str,
}

/// What the data-channel thread should do after a tick.
enum Next {
    Send(Vec<AgentMessage>),
    Drop,
    Stop,
}

impl SessionState {
    fn new(spec: SessionSpec) -> SessionState {
        let mut held = VecDeque::new();
        if let Some((cols, rows)) = spec.initial_size {
            held.push_back((pt::SIZE, size_payload(cols, rows)));
        }
        SessionState {
            smux: None,
            spec,
            conn: None,
            open_message: None,
            expected: 0,
            early: BTreeMap::new(),
            output: Vec::new(),
            stderr: Vec::new(),
            exit_code: None,
            states: Vec::new(),
            handshake_request: None,
            port_parameters: None,
            handshake_complete: None,
            task_completed: false,
            cipher: None,
            challenge_answered: false,
            drop_every: 0,
            ignore_output: false,
            drop_count: 0,
            dropped: BTreeSet::new(),
            next_seq: 0,
            held,
            unacked: BTreeMap::new(),
            outbox: Vec::new(),
            drop_requested: false,
            burst: false,
            closed_by_service: false,
            stats: SessionStats {
                output_highest: -1,
                ..SessionStats::default()
            },
            link: None,
        }
    }

    /// A data channel for this session was opened with `open_message`.
    pub(crate) fn attach(&mut self, conn: u64, open_message: Value) {
        self.conn = Some(conn);
        self.open_message = Some(open_message);
        self.stats.connects += 1;
        // A new connection: everything unacked goes out again at once.
        for o in self.unacked.values_mut() {
            o.last_sent = None;
        }
    }

    /// Whether a data channel is up right now.
    pub(crate) fn live(&self) -> bool {
        self.conn.is_some()
    }

    /// Closes the data channel abruptly on its thread's next tick.
    pub(crate) fn request_drop(&mut self) {
        self.drop_requested = self.conn.is_some();
    }

    /// Queues `start_publication` (true) or `pause_publication` (false).
    pub(crate) fn set_publication(&mut self, on: bool) {
        let kind = if on {
            types::START_PUBLICATION
        } else {
            types::PAUSE_PUBLICATION
        };
        self.outbox.push(publication(kind));
    }

    /// The service or the agent ended the session; no new data channel is accepted.
    pub(crate) fn terminated(&self) -> bool {
        self.closed_by_service || self.states.iter().any(|s| s == "Terminating")
    }

    fn input_ready(&self) -> bool {
        !self.spec.needs_handshake() || self.handshake_complete.is_some()
    }

    fn queue_input(&mut self, payload_type: u32, bytes: Vec<u8>) {
        self.held.push_back((payload_type, bytes));
    }

    /// Type-1 bytes in messages of at most [`INPUT_CHUNK`].
    fn queue_data(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(INPUT_CHUNK) {
            self.queue_input(pt::OUTPUT, chunk.to_vec());
        }
    }

    /// Input messages not yet acknowledged, sent or not.
    fn in_flight(&self) -> usize {
        self.held.len() + self.unacked.len()
    }

    /// Numbers an input message and puts it in the retransmission buffer.
    fn sequence(&mut self, payload_type: u32, bytes: Vec<u8>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let flags = if seq == 0 { FLAG_SYN } else { 0 };
        let message = AgentMessage::new(types::INPUT_STREAM_DATA, bytes)
            .with_sequence(seq, flags)
            .with_payload_type(payload_type);
        self.unacked.insert(
            seq,
            Outgoing {
                message,
                last_sent: None,
            },
        );
    }

    fn tick(&mut self, conn: u64, now: Instant) -> Next {
        if self.conn != Some(conn) {
            return Next::Stop;
        }
        if std::mem::take(&mut self.drop_requested) {
            self.conn = None;
            return Next::Drop;
        }
        while self.input_ready() {
            let Some((t, bytes)) = self.held.pop_front() else {
                break;
            };
            let bytes = match &mut self.cipher {
                Some(c) if t == pt::OUTPUT => c.encrypt(&bytes),
                _ => bytes,
            };
            self.sequence(t, bytes);
        }
        let mut out = std::mem::take(&mut self.outbox);
        if let Some(link) = &mut self.link {
            link.acks_due(now, &mut out);
        }
        if self.input_ready() && std::mem::take(&mut self.burst) {
            self.send_burst(now, &mut out);
        }
        let mut bytes = 0;
        for (n, o) in self.unacked.values_mut().enumerate() {
            bytes += o.message.payload.len();
            if n >= INPUT_WINDOW_MESSAGES || (n > 0 && bytes > INPUT_WINDOW_BYTES) {
                break;
            }
            let due = o
                .last_sent
                .is_none_or(|t| now.duration_since(t) >= RETRANSMIT);
            if due {
                if o.last_sent.is_some() {
                    self.stats.input_retransmissions += 1;
                }
                o.last_sent = Some(now);
                out.push(o.message.clone());
            }
        }
        Next::Send(out)
    }

    /// Every input message not sent yet goes out now, whatever the window, the lowest-numbered
    /// one last: until it arrives the agent holds (or drops) all the others out of order.
    fn send_burst(&mut self, now: Instant, out: &mut Vec<AgentMessage>) {
        let fresh: Vec<i64> = self
            .unacked
            .iter()
            .filter(|(_, o)| o.last_sent.is_none())
            .map(|(seq, _)| *seq)
            .collect();
        if let Some((first, rest)) = fresh.split_first() {
            for seq in rest.iter().chain([first]) {
                if let Some(o) = self.unacked.get_mut(seq) {
                    o.last_sent = Some(now);
                    out.push(o.message.clone());
                }
            }
        }
    }

    fn on_message(&mut self, m: AgentMessage, kms: &mut KmsClient, errors: &mut Vec<String>) {
        match m.message_type.as_str() {
            types::OUTPUT_STREAM_DATA => self.on_output_frame(m, kms, errors),
            types::ACKNOWLEDGE => self.on_ack(&m, errors),
            types::AGENT_SESSION_STATE => {
                expect_flags(&m, 0, FLAG_SYN | FLAG_FIN, errors);
                match serde_json::from_slice::<Value>(&m.payload) {
                    Ok(v) => {
                        let state = v["SessionState"].as_str().unwrap_or_default();
                        if v["SessionId"].as_str() != Some(&self.spec.session_id) {
                            errors.push(format!("agent_session_state names another session: {v}"));
                        }
                        self.states.push(state.to_string());
                    }
                    Err(e) => errors.push(format!("agent_session_state is not JSON: {e}")),
                }
            }
            other => errors.push(format!("unexpected {other} from the agent")),
        }
    }

    /// An output frame as the agent sent it: counted, then across the link if there is one.
    fn on_output_frame(&mut self, m: AgentMessage, kms: &mut KmsClient, errors: &mut Vec<String>) {
        let seq = m.sequence_number;
        let syn = if seq == 0 { FLAG_SYN } else { 0 };
        expect_flags(&m, seq, syn, errors);
        self.stats.output_frames += 1;
        self.stats.output_highest = self.stats.output_highest.max(seq);
        match &mut self.link {
            Some(link) => {
                let wire = crate::agentmessage::PAYLOAD_OFFSET + m.payload.len();
                link.send(Instant::now(), m, wire);
            }
            None => self.on_output(m, kms, errors),
        }
    }

    /// An output frame as the client takes it.
    fn on_output(&mut self, m: AgentMessage, kms: &mut KmsClient, errors: &mut Vec<String>) {
        let seq = m.sequence_number;
        if self.ignore_output {
            return;
        }
        self.drop_count += 1;
        let n = self.drop_every;
        if n > 0 && self.drop_count.is_multiple_of(n) && self.dropped.insert(seq) {
            return; // injected loss: neither processed nor acked
        }
        let ack = json!({
            "AcknowledgedMessageType": types::OUTPUT_STREAM_DATA,
            "AcknowledgedMessageId": m.message_id,
            "AcknowledgedMessageSequenceNumber": seq,
            "IsSequentialMessage": true,
        });
        let ack = AgentMessage::new(types::ACKNOWLEDGE, ack.to_string().into_bytes())
            .with_sequence(0, FLAG_SYN | FLAG_FIN);
        match &mut self.link {
            Some(link) => link.ack(Instant::now(), ack),
            None => self.outbox.push(ack),
        }
        if seq < self.expected || self.early.contains_key(&seq) {
            self.stats.output_duplicates += 1;
            return;
        }
        if seq > self.expected {
            self.stats.output_out_of_order += 1;
            self.early.insert(seq, m);
            return;
        }
        self.deliver(m, kms, errors);
        self.expected += 1;
        while let Some(next) = self.early.remove(&self.expected) {
            self.deliver(next, kms, errors);
            self.expected += 1;
        }
        self.stats.output_expected = self.expected;
    }

    fn deliver(&mut self, m: AgentMessage, kms: &mut KmsClient, errors: &mut Vec<String>) {
        let payload = match (&self.cipher, m.payload_type) {
            (Some(c), pt::OUTPUT | pt::STDERR | pt::EXIT_CODE) => match c.decrypt(&m.payload) {
                Ok(plain) => plain,
                Err(e) => {
                    return errors.push(format!(
                        "output {} (PayloadType {}) of an encrypted session does not decrypt \
                         with the data key's bytes 0..32: {e}",
                        m.sequence_number, m.payload_type
                    ));
                }
            },
            _ => m.payload,
        };
        if self.task_completed && matches!(m.payload_type, pt::OUTPUT | pt::STDERR | pt::EXIT_CODE)
        {
            self.stats.output_after_task_complete += 1;
        }
        match m.payload_type {
            pt::OUTPUT => match &self.smux {
                Some(client) => errors.extend(client.receive(&payload)),
                None => self.output.extend_from_slice(&payload),
            },
            pt::STDERR => self.stderr.extend_from_slice(&payload),
            pt::EXIT_CODE => {
                let text = String::from_utf8_lossy(&payload);
                let code = text
                    .trim()
                    .strip_prefix("EXIT_CODE:")
                    .and_then(|c| c.trim().parse().ok());
                if code.is_none() {
                    errors.push(format!("ExitCode payload {text:?} is not `EXIT_CODE: <n>`"));
                }
                self.exit_code = code;
            }
            pt::HANDSHAKE_REQUEST => match serde_json::from_slice::<Value>(&payload) {
                Ok(req) => self.answer_handshake(req, kms, errors),
                Err(e) => errors.push(format!("HandshakeRequest is not JSON: {e}")),
            },
            pt::HANDSHAKE_COMPLETE => match serde_json::from_slice(&payload) {
                Ok(v) => {
                    if self.cipher.is_some() && !self.challenge_answered {
                        errors.push(
                            "HandshakeComplete of an encrypted session came without an \
                             EncChallengeRequest: the agent never checked the client's key"
                                .into(),
                        );
                    }
                    self.handshake_complete = Some(v);
                }
                Err(e) => errors.push(format!("HandshakeComplete is not JSON: {e}")),
            },
            pt::ENC_CHALLENGE_REQUEST => {
                if let Err(e) = self.answer_challenge(&payload) {
                    errors.push(format!("EncChallengeRequest: {e}"));
                }
            }
            other => errors.push(format!(
                "output_stream_data {} has PayloadType {other}, not one the agent sends",
                m.sequence_number
            )),
        }
    }

    fn answer_handshake(&mut self, req: Value, kms: &mut KmsClient, errors: &mut Vec<String>) {
        let actions = req["RequestedClientActions"].as_array().cloned();
        let actions = actions.unwrap_or_default();
        self.check_kms_requested(&actions, errors);
        let mut processed = Vec::new();
        for a in actions {
            let kind = a["ActionType"].as_str().unwrap_or_default();
            let (status, result, error) = match kind {
                "SessionType" => {
                    let asked = &a["ActionParameters"]["SessionType"];
                    if asked != self.spec.session_type.as_str() {
                        errors.push(format!(
                            "HandshakeRequest SessionType {asked} but the session is {}",
                            self.spec.session_type
                        ));
                    }
                    if asked == "Port" {
                        let agent = req["AgentVersion"].as_str().unwrap_or_default();
                        self.take_port_parameters(&a["ActionParameters"]["Properties"], agent);
                    }
                    (1, Value::Null, String::new())
                }
                "KMSEncryption" => match self.accept_kms(&a["ActionParameters"], kms) {
                    Ok(result) => (1, result, String::new()),
                    Err(e) => {
                        errors.push(format!("HandshakeRequest: {e}"));
                        (2, Value::Null, e)
                    }
                },
                _ => (3, Value::Null, "unsupported action".into()),
            };
            processed.push(json!({
                "ActionType": kind,
                "ActionStatus": status,
                "ActionResult": result,
                "Error": error,
            }));
        }
        let response = json!({
            "ClientVersion": self.spec.client_version,
            "ProcessedClientActions": processed,
            "Errors": [],
        });
        self.handshake_request = Some(req);
        self.sequence(pt::HANDSHAKE_RESPONSE, response.to_string().into_bytes());
    }

    /// Settles the Port session as the plugin's `PortSession.Initialize` does: multiplexed
    /// when the properties say `LocalPortForwarding` and both sides are recent enough.
    fn take_port_parameters(&mut self, properties: &Value, agent_version: &str) {
        let params = PortParameters::from_properties(properties);
        if params.port_type == "LocalPortForwarding"
            && version_at_least(agent_version, SMUX_MIN_AGENT_VERSION)
            && version_at_least(&self.spec.client_version, SMUX_MIN_CLIENT_VERSION)
        {
            self.smux = Some(Arc::default());
        }
        self.port_parameters = Some(params);
    }

    /// The agent must ask for encryption exactly when the session has a KMS key and is not Port
    /// (docs/protocol.md §4.6.3).
    fn check_kms_requested(&self, actions: &[Value], errors: &mut Vec<String>) {
        let key = self.spec.inputs["kmsKeyId"].as_str().unwrap_or_default();
        let expected = !key.is_empty() && self.spec.session_type != "Port";
        let asked = actions.iter().any(|a| a["ActionType"] == "KMSEncryption");
        if asked != expected {
            errors.push(format!(
                "HandshakeRequest {} KMSEncryption for a {} session with kmsKeyId {key:?}",
                if asked { "asks for" } else { "lacks" },
                self.spec.session_type
            ));
        }
    }

    /// Makes up the data key (registered with the emulator's KMS under the session's encryption
    /// context) and returns the action's `ActionResult`.
    fn accept_kms(&mut self, params: &Value, kms: &mut KmsClient) -> Result<Value, String> {
        let key_id = params["KMSKeyId"]
            .as_str()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| format!("KMSEncryption action without a KMSKeyId: {params}"))?;
        let challenge = params["Challenge"].as_str().filter(|c| !c.is_empty());
        let mut context = BTreeMap::from([
            (
                "aws:ssm:SessionId".to_string(),
                self.spec.session_id.clone(),
            ),
            ("aws:ssm:TargetId".to_string(), kms.target_id.to_string()),
        ]);
        if let Some(c) = challenge {
            context.insert("aws:ssm:RandomChallenge".into(), c.into());
        }
        let (blob, data_key) = kms.state.generate_data_key(key_id, context);
        self.cipher = Some(Cipher::client(&data_key));
        Ok(json!({
            "KMSCipherTextKey": b64(&blob),
            "KMSCipherTextHash": b64(&Sha256::digest(&blob)),
            "ChallengeAcknowledgement": challenge.is_some(),
        }))
    }

    /// Opens the agent's challenge with the agent's key and seals it with the client's: the
    /// EncChallengeResponse (never itself encrypted as a payload).
    fn answer_challenge(&mut self, payload: &[u8]) -> Result<(), String> {
        let cipher = self
            .cipher
            .as_mut()
            .ok_or("arrived, but the client accepted no KMSEncryption action")?;
        let v: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
        let sealed = v["Challenge"]
            .as_str()
            .ok_or_else(|| format!("no Challenge string in {v}"))?;
        let plain = cipher.decrypt(&unb64(sealed)?).map_err(|e| {
            format!("Challenge does not decrypt with the data key's bytes 0..32: {e}")
        })?;
        let answer = json!({"Challenge": b64(&cipher.encrypt(&plain))});
        self.challenge_answered = true;
        self.sequence(pt::ENC_CHALLENGE_RESPONSE, answer.to_string().into_bytes());
        Ok(())
    }

    fn on_ack(&mut self, m: &AgentMessage, errors: &mut Vec<String>) {
        expect_flags(m, 0, FLAG_SYN | FLAG_FIN, errors);
        let v: Value = match serde_json::from_slice(&m.payload) {
            Ok(v) => v,
            Err(e) => return errors.push(format!("acknowledge is not JSON: {e}")),
        };
        if v["AcknowledgedMessageType"] != types::INPUT_STREAM_DATA {
            errors.push(format!("acknowledge for an unexpected type: {v}"));
        }
        let Some(seq) = v["AcknowledgedMessageSequenceNumber"].as_i64() else {
            return errors.push(format!("acknowledge without a sequence number: {v}"));
        };
        if let Some(o) = self.unacked.remove(&seq)
            && v["AcknowledgedMessageId"] != o.message.message_id.as_str()
        {
            errors.push(format!(
                "acknowledge of input {seq} names MessageId {} instead of {}",
                v["AcknowledgedMessageId"], o.message.message_id
            ));
        }
    }

    fn stats(&self) -> SessionStats {
        SessionStats {
            inputs_sequenced: self.next_seq,
            inputs_unacked: self.unacked.len(),
            output_expected: self.expected,
            ..self.stats.clone()
        }
    }
}

fn expect_flags(m: &AgentMessage, seq: i64, flags: u64, errors: &mut Vec<String>) {
    if m.sequence_number != seq || m.flags != flags {
        errors.push(format!(
            "{} {} has SequenceNumber {} Flags {} (expected {seq}, {flags})",
            m.message_type, m.message_id, m.sequence_number, m.flags
        ));
    }
}

fn size_payload(cols: u32, rows: u32) -> Vec<u8> {
    json!({"cols": cols, "rows": rows}).to_string().into_bytes()
}

fn publication(message_type: &str) -> AgentMessage {
    AgentMessage::new(message_type, b"{}".to_vec()).with_sequence(0, FLAG_SYN | FLAG_FIN)
}

/// Runs one data channel until it ends, is replaced, or a fault drops it.
pub(crate) fn data_loop(shared: &Shared, mut conn: WsConn, conn_id: u64, sid: &str) {
    loop {
        let bytes = match conn.poll() {
            Ok(Incoming::Idle) => None,
            Ok(Incoming::Binary(b)) => Some(b),
            Ok(Incoming::Text(t)) => Some(t.into_bytes()),
            Err(_) => break,
        };
        if let Some(b) = bytes {
            shared.update(|st| on_data_frame(st, sid, &b));
        }
        let next = {
            let mut st = shared.lock();
            if link_arrivals(&mut st, sid, Instant::now()) {
                shared.touch(&mut st);
            }
            let stopping = st.stopping;
            let next = match st.mgs.sessions.get_mut(sid) {
                Some(s) if !stopping => s.tick(conn_id, Instant::now()),
                _ => Next::Stop,
            };
            if let Next::Send(out) = &next
                && !out.is_empty()
            {
                for m in out {
                    st.mgs.record(sid, false, m.clone());
                }
                shared.touch(&mut st);
            }
            next
        };
        match next {
            Next::Send(out) => {
                if out
                    .into_iter()
                    .any(|m| conn.send_binary(m.encode()).is_err())
                {
                    break;
                }
            }
            Next::Drop => {
                conn.abort();
                return;
            }
            Next::Stop => break,
        }
    }
    conn.abort();
    shared.update(|st| {
        if let Some(s) = st.mgs.sessions.get_mut(sid)
            && s.conn == Some(conn_id)
        {
            s.conn = None;
        }
    });
}

fn on_data_frame(st: &mut State, sid: &str, bytes: &[u8]) {
    let m = match AgentMessage::decode(bytes) {
        Ok(m) => m,
        Err(e) => return st.mgs.error(format!("data channel {sid}: {e}")),
    };
    let mut errors = m.problems();
    st.mgs.record(sid, true, m.clone());
    let target_id = st.mgs.instance_id(&st.options.instance_id);
    let mut kms = KmsClient {
        state: &mut st.kms,
        target_id: &target_id,
    };
    let completed = !st.mgs.task_completes(sid).is_empty();
    if let Some(s) = st.mgs.sessions.get_mut(sid) {
        s.task_completed = completed;
        s.on_message(m, &mut kms, &mut errors);
    }
    for e in errors {
        st.mgs.error(format!("data channel {sid}: {e}"));
    }
}

/// Output frames that crossed the session's link by `now` reach its client; whether any did.
fn link_arrivals(st: &mut State, sid: &str, now: Instant) -> bool {
    if st.mgs.sessions.get(sid).is_none_or(|s| s.link.is_none()) {
        return false;
    }
    let target_id = st.mgs.instance_id(&st.options.instance_id);
    let mut kms = KmsClient {
        state: &mut st.kms,
        target_id: &target_id,
    };
    let (mut errors, mut any) = (Vec::new(), false);
    if let Some(s) = st.mgs.sessions.get_mut(sid) {
        while let Some(m) = s.link.as_mut().and_then(|l| l.arrived(now)) {
            s.on_output(m, &mut kms, &mut errors);
            any = true;
        }
    }
    for e in errors {
        st.mgs.error(format!("data channel {sid}: {e}"));
    }
    any
}

/// No more data will come: the emulator stops, the agent reported the task complete, or the
/// session was terminated and its data channel is gone (or it is unknown).
fn session_over(st: &State, id: &str) -> bool {
    st.stopping
        || !st.mgs.task_completes(id).is_empty()
        || st
            .mgs
            .sessions
            .get(id)
            .is_none_or(|s| s.conn.is_none() && s.terminated())
}

/// The client end of one session. Cheap to clone; all clones drive the same session.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
    id: String,
}

impl Session {
    pub fn id(&self) -> &str {
        &self.id
    }

    fn view<R>(&self, f: impl FnOnce(&SessionState) -> R) -> Option<R> {
        self.shared.read(|st| st.mgs.sessions.get(&self.id).map(f))
    }

    fn change<R>(&self, f: impl FnOnce(&mut SessionState) -> R) -> Option<R> {
        self.shared
            .update(|st| st.mgs.sessions.get_mut(&self.id).map(f))
    }

    fn wait<R>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&State, &SessionState) -> Option<R>,
    ) -> Option<R> {
        self.shared
            .wait_for(timeout, |st| f(st, st.mgs.sessions.get(&self.id)?))
    }

    /// Waits until the agent has opened this session's data channel. It may have closed it
    /// again by the time the waiter looks (a refused session opens and ends at once, and a busy
    /// machine may not run the waiter in between), so this asks whether it ever connected.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        self.wait(timeout, |_, s| (s.stats.connects > 0).then_some(()))
            .is_some()
    }

    /// Waits until the agent has reported `state` (`agent_session_state`) on the data channel,
    /// which the emulator reads apart from the control channel's task-complete message.
    pub fn wait_session_state(&self, state: &str, timeout: Duration) -> bool {
        self.wait(timeout, |_, s| {
            s.states.iter().any(|st| st == state).then_some(())
        })
        .is_some()
    }

    /// The data channel's open message (`{…,"ClientInstanceId":…,"ClientId":""}`).
    pub fn open_message(&self) -> Option<Value> {
        self.view(|s| s.open_message.clone()).flatten()
    }

    /// Queues keystrokes / stdin / TCP bytes (PayloadType 1) in chunks of [`INPUT_CHUNK`].
    pub fn send_input(&self, bytes: &[u8]) {
        self.change(|s| s.queue_data(bytes));
    }

    /// A hostile client's input: `bytes` (PayloadType 1) in messages of `chunk` bytes, all sent
    /// at once (after the handshake), ignoring the window, and the first of them last. Messages
    /// the agent drops unacknowledged are then re-sent as usual, within the window.
    pub fn send_input_out_of_order(&self, bytes: &[u8], chunk: usize) {
        self.change(|s| {
            for piece in bytes.chunks(chunk.max(1)) {
                s.queue_input(pt::OUTPUT, piece.to_vec());
            }
            s.burst = true;
        });
    }

    /// A terminal size message (PayloadType 3).
    pub fn resize(&self, cols: u32, rows: u32) {
        self.change(|s| s.queue_input(pt::SIZE, size_payload(cols, rows)));
    }

    /// A Flag message (PayloadType 10, big-endian u32; see [`flags`]).
    pub fn send_flag(&self, flag: u32) {
        self.change(|s| s.queue_input(pt::FLAG, flag.to_be_bytes().to_vec()));
    }

    /// Output (PayloadType 1) delivered so far, in sequence order.
    pub fn output(&self) -> Vec<u8> {
        self.view(|s| s.output.clone()).unwrap_or_default()
    }

    pub fn output_string(&self) -> String {
        String::from_utf8_lossy(&self.output()).into_owned()
    }

    /// Standard error (PayloadType 11) delivered so far.
    pub fn stderr(&self) -> Vec<u8> {
        self.view(|s| s.stderr.clone()).unwrap_or_default()
    }

    /// The exit code from an ExitCode message (PayloadType 12), once one arrived.
    pub fn exit_code(&self) -> Option<i32> {
        self.view(|s| s.exit_code).flatten()
    }

    /// Waits for the ExitCode message (NonInteractiveCommands with separate streams).
    pub fn wait_exit_code(&self, timeout: Duration) -> Option<i32> {
        self.wait(timeout, |_, s| s.exit_code)
    }

    /// `agent_session_state` values in arrival order (`Connected`, `Terminating`).
    pub fn session_state(&self) -> Vec<String> {
        self.view(|s| s.states.clone()).unwrap_or_default()
    }

    pub fn handshake_request(&self) -> Option<Value> {
        self.view(|s| s.handshake_request.clone()).flatten()
    }

    pub fn handshake_complete(&self) -> Option<Value> {
        self.view(|s| s.handshake_complete.clone()).flatten()
    }

    /// Whether the session runs KMS-encrypted: the client accepted a KMSEncryption action and
    /// the handshake completed. [`Session::output`] and friends are plaintext either way; the
    /// wire payloads are in [`crate::MgsState::log`].
    pub fn encrypted(&self) -> bool {
        self.view(|s| s.cipher.is_some() && s.handshake_complete.is_some())
            .unwrap_or(false)
    }

    /// Waits until `ready(output so far)` holds.
    pub fn wait_output(&self, timeout: Duration, mut ready: impl FnMut(&[u8]) -> bool) -> bool {
        self.wait(timeout, |_, s| ready(&s.output).then_some(()))
            .is_some()
    }

    /// Waits until the output contains `pattern`; Ok(all output so far) or Err(a message with
    /// the output so far).
    pub fn read_output_until(&self, pattern: &str, timeout: Duration) -> Result<String, String> {
        let needle = pattern.as_bytes();
        let found = self.wait_output(timeout, |out| {
            needle.is_empty() || out.windows(needle.len()).any(|w| w == needle)
        });
        let out = self.output_string();
        if found {
            Ok(out)
        } else {
            Err(format!(
                "session {}: no {pattern:?} in the output within {timeout:?}; output so far: \
                 {out:?}; states {:?}",
                self.id,
                self.session_state()
            ))
        }
    }

    /// Waits until every input queued so far has been acknowledged.
    pub fn wait_input_acked(&self, timeout: Duration) -> bool {
        self.wait(timeout, |_, s| {
            (s.held.is_empty() && s.unacked.is_empty()).then_some(())
        })
        .is_some()
    }

    /// Waits until the session is over: the agent sent `Terminating` and closed the data
    /// channel, or reported the task complete.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let id = self.id.clone();
        self.wait(timeout, |st, s| {
            let ended = s.conn.is_none() && s.states.iter().any(|x| x == "Terminating");
            (ended || !st.mgs.task_completes(&id).is_empty()).then_some(())
        })
        .is_some()
    }

    /// Sends `channel_closed` on the data channel (the agent ends the session).
    pub fn send_channel_closed(&self) {
        self.shared.update(|st| {
            let m = mgs::channel_closed(st, &self.id).with_sequence(0, FLAG_SYN | FLAG_FIN);
            if let Some(s) = st.mgs.sessions.get_mut(&self.id) {
                s.closed_by_service = true;
                s.outbox.push(m);
            }
        });
    }

    pub fn pause_publication(&self) {
        self.change(|s| s.outbox.push(publication(types::PAUSE_PUBLICATION)));
    }

    pub fn start_publication(&self) {
        self.change(|s| s.outbox.push(publication(types::START_PUBLICATION)));
    }

    /// Drops (neither processes nor acks) every `n`th incoming output frame, each sequence
    /// number at most once, so the agent has to re-send it; 0 turns this off. Counting starts
    /// at this call.
    pub fn drop_every_nth_output(&self, n: u64) {
        self.change(|s| {
            s.drop_every = n;
            s.drop_count = 0;
        });
    }

    /// While `on`, every output frame is dropped unprocessed and unacknowledged, as by a
    /// client that stopped reading; off again, the agent's re-sends are taken as usual.
    pub fn withhold_output_acks(&self, on: bool) {
        self.change(|s| s.ignore_output = on);
    }

    /// From now on the session's output crosses a slower link to a client that acks late
    /// ([`LinkSpec`]); frames already on their way are not affected.
    pub fn set_link(&self, spec: LinkSpec) {
        self.change(|s| s.link = Some(Link::new(spec)));
    }

    /// Output frames the link lost so far.
    pub fn link_lost(&self) -> u64 {
        self.view(|s| s.link.as_ref().map_or(0, |l| l.lost))
            .unwrap_or_default()
    }

    /// Sequence numbers of the output frames dropped so far.
    pub fn dropped_output(&self) -> Vec<i64> {
        self.view(|s| s.dropped.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Closes the data channel's TCP connection abruptly (the agent should reconnect).
    pub fn drop_data_channel(&self) {
        self.change(|s| s.drop_requested = s.conn.is_some());
    }

    pub fn stats(&self) -> SessionStats {
        self.view(SessionState::stats).unwrap_or_default()
    }

    /// The first `agent_task_complete` for this session.
    pub fn task_complete(&self) -> Option<TaskComplete> {
        self.shared.read(|st| {
            st.mgs
                .task_completes(&self.id)
                .first()
                .map(|t| (*t).clone())
        })
    }

    pub fn wait_task_complete(&self, timeout: Duration) -> Option<TaskComplete> {
        let id = self.id.clone();
        self.wait(timeout, |st, _| {
            st.mgs.task_completes(&id).first().map(|t| (*t).clone())
        })
    }

    /// A Port session's settings from the handshake; waits up to `timeout` for the
    /// HandshakeRequest. None for other sessions, and for one that ended without it.
    pub fn wait_port_parameters(&self, timeout: Duration) -> Option<PortParameters> {
        self.wait(timeout, |st, s| {
            let settled = s.spec.session_type != "Port"
                || s.handshake_request.is_some()
                || session_over(st, &self.id);
            match (&s.port_parameters, settled) {
                (Some(p), _) => Some(Some(p.clone())),
                (None, true) => Some(None),
                (None, false) => None,
            }
        })
        .flatten()
    }

    /// Unit tests without an agent: takes `properties` as if a recent agent had sent them in
    /// a Port session's HandshakeRequest.
    #[cfg(test)]
    pub(crate) fn receive_port_handshake(&self, properties: &Value) {
        self.change(|s| s.take_port_parameters(properties, SMUX_MIN_AGENT_VERSION));
    }

    /// Whether the handshake made this a multiplexed (smux) Port session.
    pub fn multiplexed(&self) -> bool {
        self.view(|s| s.smux.is_some()) == Some(true)
    }

    /// Opens an smux stream on a Port session the handshake made multiplexed (first waiting
    /// for the handshake, up to the spec's `connect_timeout`): a SYN with the next odd stream
    /// id goes out. Streams work from any thread, many at once.
    pub fn smux_open(&self) -> Result<SmuxStream, String> {
        let timeout = self.view(|s| s.spec.connect_timeout).unwrap_or_default();
        self.wait_port_parameters(timeout);
        let opened = self.shared.update(|st| {
            if session_over(st, &self.id) {
                return Err(format!("session {} is over", self.id));
            }
            let s = st
                .mgs
                .sessions
                .get_mut(&self.id)
                .ok_or_else(|| format!("no session {}", self.id))?;
            let client = s.smux.clone().ok_or_else(|| {
                format!(
                    "session {} is not multiplexed: smux needs a Port session whose handshake \
                     says LocalPortForwarding (SessionSpec::port(_, _, true)), an agent ≥ \
                     {SMUX_MIN_AGENT_VERSION} and client version ≥ {SMUX_MIN_CLIENT_VERSION} \
                     (it has {}); handshake properties: {:?}",
                    self.id, s.spec.client_version, s.port_parameters
                )
            })?;
            let id = client.open()?;
            s.queue_data(&smux::encode(smux::Cmd::Syn, id, &[]));
            Ok((client, id))
        });
        let (client, id) = opened?;
        Ok(SmuxStream::new(self.clone(), client, id))
    }

    /// Counters of the session's smux client (default for an unmultiplexed session).
    pub fn smux_stats(&self) -> SmuxStats {
        self.view(|s| s.smux.as_ref().map(|c| c.stats()))
            .flatten()
            .unwrap_or_default()
    }

    /// Queues smux frames as type-1 input in one piece, so frames from different threads never
    /// interleave. With `wait_window`, first waits until fewer than [`SMUX_WINDOW`] input
    /// messages are in flight.
    pub(crate) fn send_smux(&self, frames: &[u8], wait_window: bool) -> io::Result<()> {
        let mut st = self.shared.lock();
        loop {
            if session_over(&st, &self.id) {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    format!("session {} is over", self.id),
                ));
            }
            if let Some(s) = st.mgs.sessions.get_mut(&self.id)
                && (!wait_window || s.in_flight() < SMUX_WINDOW)
            {
                s.queue_data(frames);
                self.shared.touch(&mut st);
                return Ok(());
            }
            // Acks change the state; the slice bounds the wait if none come.
            st = self
                .shared
                .wait(st, Instant::now() + Duration::from_millis(200));
        }
    }

    /// Whether no more data will come (see `session_over`).
    pub(crate) fn is_over(&self) -> bool {
        self.shared.read(|st| session_over(st, &self.id))
    }

    /// Waits up to `timeout` for the session to be over; whether it is.
    pub(crate) fn wait_over(&self, timeout: Duration) -> bool {
        self.shared
            .wait_for(timeout, |st| session_over(st, &self.id).then_some(()))
            .is_some()
    }

    /// Input not sent yet (all of it before the handshake): (PayloadType, payload) per message.
    #[cfg(test)]
    pub(crate) fn held_input(&self) -> Vec<(u32, Vec<u8>)> {
        self.view(|s| s.held.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A byte stream over a basic-mode Port session: reads consume the session's output.
    pub fn port_stream(&self) -> PortStream {
        PortStream {
            session: self.clone(),
            read_timeout: None,
        }
    }
}

/// Read/Write over a Port session's data (basic mode). `read` returns 0 once the session is
/// over and its output is drained.
pub struct PortStream {
    session: Session,
    read_timeout: Option<Duration>,
}

impl PortStream {
    /// `None` = block until data or the end of the session.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// Another handle on the same stream (e.g. for a writer thread).
    pub fn try_clone(&self) -> PortStream {
        PortStream {
            session: self.session.clone(),
            read_timeout: self.read_timeout,
        }
    }

    /// Sends Flag TerminateSession: the agent closes the port connection and ends the session.
    pub fn terminate(&self) {
        self.session.send_flag(flags::TERMINATE_SESSION);
    }
}

impl io::Read for PortStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Wait in slices so a forever-blocking read still notices a stopped emulator.
        let deadline = self.read_timeout.map(|t| Instant::now() + t);
        let id = self.session.id.clone();
        loop {
            let got = self.session.shared.update(|st| {
                let over = session_over(st, &id);
                let s = st.mgs.sessions.get_mut(&id)?;
                if !s.output.is_empty() {
                    let n = buf.len().min(s.output.len());
                    buf[..n].copy_from_slice(&s.output[..n]);
                    s.output.drain(..n);
                    return Some(n);
                }
                over.then_some(0)
            });
            if let Some(n) = got {
                return Ok(n);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no port data in time",
                ));
            }
            let slice = Duration::from_millis(200);
            let wait = deadline.map_or(slice, |d| {
                d.saturating_duration_since(Instant::now()).min(slice)
            });
            let version = self.session.shared.read(State::version);
            self.session
                .shared
                .wait_for(wait, |st| (st.version() != version).then_some(()));
        }
    }
}

impl io::Write for PortStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.session.send_input(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Session Manager: starting sessions.
impl Emulator {
    /// Sends `interactive_shell` for `spec` on the control channel (queued while it is down)
    /// without waiting for the agent.
    pub fn open_session(&self, spec: SessionSpec) -> Session {
        let id = spec.session_id.clone();
        let content = spec.task_payload().to_string();
        let payload = json!({
            "Content": content,
            "TaskId": id,
            "Topic": "aws.ssm.startSession",
            "SchemaVersion": 1,
        });
        let m = AgentMessage::new(types::INTERACTIVE_SHELL, payload.to_string().into_bytes());
        // The handshake comes after the connection, which may take `connect_timeout`; the
        // agent gives up on the handshake after 15 s.
        let settled = spec.connect_timeout + Duration::from_secs(15);
        let keepalive = (spec.session_type == "Port").then_some((spec.smux_keepalive, settled));
        self.shared.update(|st| {
            st.mgs.sessions.insert(id.clone(), SessionState::new(spec));
            st.mgs.send_control(m);
        });
        let session = Session {
            shared: self.shared.clone(),
            id,
        };
        if let Some((every, timeout)) = keepalive {
            let s = session.clone();
            std::thread::Builder::new()
                .name("smux-keepalive".into())
                .spawn(move || {
                    // Only a session the handshake made multiplexed has smux to keep alive.
                    if s.wait_port_parameters(timeout).is_some() && s.multiplexed() {
                        smux::keepalive(&s, every);
                    }
                })
                .expect("cannot start the smux keep-alive thread");
        }
        session
    }

    /// Like [`Emulator::open_session`], then waits `spec.connect_timeout` for the agent's data
    /// channel.
    pub fn start_session(&self, spec: SessionSpec) -> Result<Session, String> {
        let timeout = spec.connect_timeout;
        let session = self.open_session(spec);
        if session.wait_connected(timeout) {
            return Ok(session);
        }
        Err(format!(
            "session {}: the agent opened no data channel within {timeout:?} (control channel \
             connected: {}); MGS errors: {:?}",
            session.id,
            self.mgs_connected(),
            self.mgs_errors()
        ))
    }

    /// A handle on a session started earlier.
    pub fn session(&self, session_id: &str) -> Option<Session> {
        self.read(|st| st.mgs.sessions.contains_key(session_id))
            .then(|| Session {
                shared: self.shared.clone(),
                id: session_id.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_parameters_are_read_as_go_decodes_them() {
        let p = PortParameters::from_properties(&json!({
            "PortNumber": "22", "localportnumber": "8080", "type": "LocalPortForwarding",
            "localUnixSocket": 7, "host": "db"
        }));
        assert_eq!(
            p,
            PortParameters {
                port_number: "22".into(),
                local_port_number: "8080".into(),
                local_unix_socket: String::new(),
                local_connection_type: String::new(),
                port_type: "LocalPortForwarding".into(),
            },
            "keys in any case; a non-string is absent"
        );
        assert_eq!(
            PortParameters::from_properties(&Value::Null),
            PortParameters::default()
        );
    }
}
