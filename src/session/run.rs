//! One session, start to end, on its own thread: open the data channel (§4.6.3), run the
//! handshake when the plugin needs one, then a single `poll` loop over the websocket, the
//! plugin's fds and a stop waker — sequencing output, acknowledging input, resending what the
//! client has not acknowledged — until the plugin ends or the session is terminated.

use super::crypto::{self, SessionCipher};
use super::datachannel::{self, Ack, Incoming, Outgoing, payload_type};
use super::logging::{Logged, SessionLog};
use super::plugin::{Ended, Event, Plugin};
use super::task::{SessionTask, SessionType};
use crate::aws::credentials::CredentialsProvider;
use crate::aws::endpoint::Endpoint;
use crate::aws::http::HttpClient;
use crate::mgs::message::{self, AgentMessage};
use crate::mgs::rest::{self, MgsError};
use crate::mgs::websocket::{Connection, Frame, WsError};
use crate::sync::lock;
use crate::sys::poll::{PollFd, Waker, poll};
use serde_json::{Value, json};
use std::ops::ControlFlow;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a finished session waits for the client to acknowledge the last output.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Unacknowledged output frames beyond which input is no longer delivered (input can make
/// output, see `deliver_input`): twice the full frames of the send window.
const MAX_UNACKED: usize = 2 * datachannel::MAX_WINDOW / super::plugin::CHUNK;
const RECONNECT_ATTEMPTS: u32 = 5;

/// What the session needs from the agent.
pub struct SessionEnv {
    pub http: std::sync::Arc<HttpClient>,
    pub endpoint: Endpoint,
    pub credentials: std::sync::Arc<dyn CredentialsProvider>,
    pub instance_id: String,
    pub agent_version: String,
    pub denied_ips: Vec<String>,
    pub users: super::runas::Host,
    /// `kms:Decrypt` for encrypted sessions.
    pub kms: crate::aws::jsonrpc::JsonClient,
    /// `Kms.RequireKMSChallengeResponse`.
    pub require_kms_challenge: bool,
    /// Session logging to S3 and CloudWatch Logs (§4.9).
    pub logging: super::logging::LoggingEnv,
}

/// Why a session is being ended from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    /// `channel_closed` or a terminate request: a user-ended session is a successful one.
    Terminated,
    Shutdown,
}

/// Lets another thread end a session and wake its loop.
pub struct Stop {
    pub waker: Waker,
    kind: Mutex<Option<StopKind>>,
}

impl Stop {
    pub fn new() -> std::io::Result<Stop> {
        Ok(Stop {
            waker: Waker::new()?,
            kind: Mutex::new(None),
        })
    }

    pub fn stop(&self, kind: StopKind) {
        lock(&self.kind).get_or_insert(kind);
        self.waker.wake();
    }

    fn kind(&self) -> Option<StopKind> {
        *lock(&self.kind)
    }
}

/// Why the data channel cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Reconnecting is pointless: the service has ended the session.
    #[error("the service says session {0} is already terminated; start a new session")]
    Terminated(String),
    #[error(
        "{step} for session {session_id} failed: {source}; check the network path and the instance's ssmmessages permissions"
    )]
    Service {
        step: &'static str,
        session_id: String,
        source: MgsError,
    },
    #[error("cannot send on the data channel: {0}")]
    Send(#[from] WsError),
    /// Session output that could not be encrypted (the text comes from the cipher).
    #[error("cannot encrypt session output: {0}")]
    Encrypt(String),
    #[error("data channel lost and not reopened after {attempts} attempts: {last}")]
    Lost {
        attempts: u32,
        last: Box<ChannelError>,
    },
}

/// The websocket of one session, with its stream state.
struct DataChannel<'a> {
    env: &'a SessionEnv,
    session_id: &'a str,
    conn: Connection,
    out: Outgoing,
    inc: Incoming,
    /// Set once a KMS-encrypted session's keys are agreed.
    cipher: Option<SessionCipher>,
    /// The client's version, from its HandshakeResponse (smux needs it).
    client_version: String,
    /// When the HandshakeRequest went out (HandshakeComplete reports the duration).
    handshake_started: Option<Instant>,
}

impl<'a> DataChannel<'a> {
    fn open(env: &'a SessionEnv, session_id: &'a str) -> Result<DataChannel<'a>, ChannelError> {
        let conn = connect(env, session_id)?;
        Ok(DataChannel {
            env,
            session_id,
            conn,
            out: Outgoing::default(),
            inc: Incoming::default(),
            cipher: None,
            client_version: String::new(),
            handshake_started: None,
        })
    }

    /// CreateDataChannel + websocket again, then everything unacknowledged goes out again.
    fn reconnect(&mut self) -> Result<(), ChannelError> {
        let mut delay = Duration::from_millis(crate::random::between(100, 199));
        let mut last = None;
        for attempt in 1..=RECONNECT_ATTEMPTS {
            match connect(self.env, self.session_id) {
                Ok(conn) => {
                    log::info!(
                        "session {}: data channel reconnected (attempt {attempt})",
                        self.session_id
                    );
                    self.conn = conn;
                    self.out.resend_all();
                    return Ok(());
                }
                Err(e @ ChannelError::Terminated(_)) => return Err(e),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        Err(ChannelError::Lost {
            attempts: RECONNECT_ATTEMPTS,
            last: Box::new(last.expect("at least one attempt")),
        })
    }

    /// A message outside the stream (`agent_session_state`): flags 3, sequence 0.
    fn send_state(&mut self, state: &str) {
        let body =
            json!({ "SchemaVersion": 1, "SessionState": state, "SessionId": self.session_id });
        let msg = AgentMessage::new(
            message::AGENT_SESSION_STATE,
            0,
            3,
            0,
            body.to_string().into_bytes(),
        );
        let _ = self.conn.send_binary(msg.encode());
    }

    /// Sends a stream message; session data (types 1, 11, 12) is encrypted once keys are agreed.
    fn stream(&mut self, kind: u32, payload: Vec<u8>) -> Result<(), ChannelError> {
        let data = matches!(
            kind,
            payload_type::OUTPUT | payload_type::STDERR | payload_type::EXIT_CODE
        );
        let payload = match self.cipher.as_mut() {
            Some(c) if data && !payload.is_empty() => {
                c.encrypt(&payload).map_err(ChannelError::Encrypt)?
            }
            _ => payload,
        };
        if let Some(frame) = self.out.push(kind, payload, Instant::now()) {
            self.conn.send_binary(frame)?;
        }
        Ok(())
    }
}

/// The service's refusal of a session it has ended: the only sign is the text of its answer.
fn service_error(step: &'static str, session_id: &str, source: MgsError) -> ChannelError {
    match &source {
        MgsError::Refused { body, .. } if body.contains("Session is already terminated") => {
            ChannelError::Terminated(session_id.to_owned())
        }
        _ => ChannelError::Service {
            step,
            session_id: session_id.to_owned(),
            source,
        },
    }
}

fn connect(env: &SessionEnv, session_id: &str) -> Result<Connection, ChannelError> {
    let token = rest::create_data_channel(
        &env.http,
        &env.endpoint,
        env.credentials.as_ref(),
        session_id,
    )
    .map_err(|e| service_error("CreateDataChannel", session_id, e))?;
    let url = rest::websocket_url(
        &env.endpoint,
        &format!("/v1/data-channel/{session_id}?role=publish_subscribe"),
    );
    let credentials = env.credentials.as_ref();
    let mut conn =
        rest::open_websocket(&env.http, &env.endpoint, credentials, &url, CONNECT_TIMEOUT)
            .map_err(|e| service_error("opening the data channel websocket", session_id, e))?;
    let open = json!({
        "MessageSchemaVersion": "1.0",
        "RequestId": crate::random::uuid_v4(),
        "TokenValue": token,
        "ClientInstanceId": env.instance_id,
        "ClientId": "",
    });
    conn.send_text(open.to_string())?;
    Ok(conn)
}

/// Where the session is.
enum Phase {
    /// Waiting for the client's HandshakeResponse (§4.6.3).
    Handshake {
        since: Instant,
    },
    /// Encrypted sessions: waiting for the client to answer the encryption challenge.
    Challenge {
        since: Instant,
        expected: Box<[u8; crypto::CHALLENGE_LEN]>,
    },
    Running,
    /// The plugin ended; waiting for the client to acknowledge what is left.
    Draining {
        until: Instant,
        ended: Ended,
    },
}

/// Runs a session to its end and says how it ended and where it was logged.
pub fn run(env: &SessionEnv, task: &SessionTask, stop: &Stop) -> (Ended, Logged) {
    let mut ch = match DataChannel::open(env, &task.session_id) {
        Ok(ch) => ch,
        Err(e) => {
            let why = format!("cannot open the data channel: {e}");
            return (Ended::Failed(why), Logged::default());
        }
    };
    ch.send_state("Connected");
    // As upstream's `validate`: a refused destination fails the session before it runs.
    let log = match SessionLog::open(&env.logging, task) {
        Ok(log) => log,
        Err(why) => {
            log::warn!("session {}: {why}", task.session_id);
            ch.send_state("Terminating");
            return (Ended::Failed(why), Logged::default());
        }
    };
    let mut session = Session {
        ch,
        env,
        task,
        stop,
        plugin: None,
        phase: Phase::Running,
        challenge: None,
        events: Vec::new(),
        log,
    };
    let ended = session.start();
    let logged = session
        .log
        .take()
        .map(SessionLog::finish)
        .unwrap_or_default();
    (ended, logged)
}

impl Session<'_> {
    /// The handshake, or the plugin straight away; then the session to its end.
    fn start(&mut self) -> Ended {
        let task = self.task;
        let encrypt = !task.kms_key_id.is_empty() && task.session_type != SessionType::Port;
        self.challenge = match encrypt.then(crypto::random_challenge).transpose() {
            Ok(c) => c,
            Err(e) => return Ended::Failed(e),
        };
        if task.session_type.needs_handshake() || encrypt {
            if let Err(e) = self.start_handshake() {
                return Ended::Failed(e.to_string());
            }
        } else {
            match super::start_plugin(self.env, task, None, self.log.as_mut()) {
                Ok(p) => self.plugin = Some(p),
                Err(e) => return fail_visibly(&mut self.ch, e),
            }
        }
        self.run()
    }
}

/// Tells the client why the session cannot run, then fails it.
fn fail_visibly(ch: &mut DataChannel<'_>, message: String) -> Ended {
    log::warn!("session {}: {message}", ch.session_id);
    let _ = ch.stream(payload_type::OUTPUT, format!("{message}\r\n").into_bytes());
    drain(ch, Instant::now() + DRAIN_TIMEOUT);
    ch.send_state("Terminating");
    Ended::Failed(message)
}

/// Sends what the window lets go now (waiting frames, the oldest one when its timer fired),
/// unless earlier bytes still wait in the socket's queue: then the client has not even had the
/// first copy, and re-sending would only pile duplicates onto a slow connection.
fn send_due(ch: &mut DataChannel<'_>, now: Instant) {
    if ch.conn.wants_write() {
        return;
    }
    for frame in ch.out.due(now) {
        if ch.conn.send_binary(frame).is_err() {
            break;
        }
    }
}

/// Waits (bounded) for the client to acknowledge everything sent.
fn drain(ch: &mut DataChannel<'_>, until: Instant) {
    while ch.out.unacked() > 0 && Instant::now() < until {
        let mut fds = [PollFd::new(ch.conn.fd(), true, ch.conn.wants_write())];
        let _ = poll(&mut fds, Some(Duration::from_millis(100)));
        let _ = ch.conn.flush();
        while let Ok(Some(frame)) = ch.conn.read() {
            if let Frame::Binary(b) = frame
                && let Ok(m) = AgentMessage::decode(&b)
                && m.message_type == message::ACKNOWLEDGE
                && let Some(a) = Ack::parse(&m.payload)
            {
                ch.out.acknowledged(a.sequence_number, Instant::now());
            }
        }
        send_due(ch, Instant::now());
    }
}

fn handshake_request(
    task: &SessionTask,
    agent_version: &str,
    kms_challenge: Option<&str>,
) -> Vec<u8> {
    // Upstream's `GetPluginParameters` (§4.6.3): Port passes the resolved document properties
    // through whole, since the client takes its local listener from them; the shell and
    // command plugins pass nil.
    let properties = match task.session_type {
        SessionType::Port => &task.properties,
        _ => &Value::Null,
    };
    let mut actions = vec![json!({
        "ActionType": "SessionType",
        "ActionParameters": { "SessionType": task.session_type.as_str(), "Properties": properties },
    })];
    if let Some(challenge) = kms_challenge {
        actions.push(crypto::kms_action(&task.kms_key_id, challenge));
    }
    json!({ "AgentVersion": agent_version, "RequestedClientActions": actions })
        .to_string()
        .into_bytes()
}

/// The client's answer to the handshake.
#[derive(Debug)]
pub(crate) struct HandshakeResponse {
    client_version: String,
    /// `ActionResult` of the KMSEncryption action, when there was one.
    pub(crate) kms_result: Option<Value>,
}

/// Checks the client's HandshakeResponse: every requested action must have succeeded.
pub(crate) fn handshake_response(data: &[u8]) -> Result<HandshakeResponse, String> {
    let v: Value =
        serde_json::from_slice(data).map_err(|e| format!("HandshakeResponse is not JSON: {e}"))?;
    let obj = v.as_object().ok_or("HandshakeResponse is not an object")?;
    let field = |k: &str| crate::document::field(obj, k);
    let mut kms_result = None;
    for action in field("ProcessedClientActions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let a = action.as_object();
        let get = |k: &str| a.and_then(|a| crate::document::field(a, k));
        if get("ActionStatus").and_then(Value::as_u64) != Some(1) {
            let error = get("Error").and_then(Value::as_str).unwrap_or("");
            return Err(format!(
                "the client could not complete the handshake: {error}"
            ));
        }
        if get("ActionType").and_then(Value::as_str) == Some("KMSEncryption") {
            kms_result = Some(get("ActionResult").cloned().unwrap_or(Value::Null));
        }
    }
    let client_version = field("ClientVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    Ok(HandshakeResponse {
        client_version,
        kms_result,
    })
}

/// Agrees the session keys (§4.6.4): KMS decrypts the client's data key; the agent then
/// challenges the client to prove it holds the same keys. Returns what the answer must contain.
fn start_encryption(
    ch: &mut DataChannel<'_>,
    env: &SessionEnv,
    task: &SessionTask,
    result: Option<&Value>,
    challenge: &str,
) -> Result<Box<[u8; crypto::CHALLENGE_LEN]>, String> {
    let result = result
        .ok_or("the client did not accept KMS encryption; update the session manager plugin")?;
    let (key, acknowledged) = crypto::parse_kms_result(result)?;
    if !acknowledged && env.require_kms_challenge {
        return Err("client does not support required encryption context random challenge".into());
    }
    let challenge = acknowledged.then_some(challenge);
    let data_key = crypto::decrypt_data_key(
        &env.kms,
        &key,
        &task.kms_key_id,
        &task.session_id,
        &env.instance_id,
        challenge,
    )?;
    let mut cipher = SessionCipher::new(&data_key)?;
    let (payload, expected) = crypto::challenge_request(&mut cipher)?;
    ch.stream(payload_type::ENC_CHALLENGE_REQUEST, payload)
        .map_err(|e| e.to_string())?;
    ch.cipher = Some(cipher);
    Ok(Box::new(expected))
}

/// Starts the plugin and tells the client the handshake is complete.
fn complete_handshake(
    ch: &mut DataChannel<'_>,
    env: &SessionEnv,
    task: &SessionTask,
    client_version: &str,
    log: Option<&mut SessionLog>,
) -> Result<Box<dyn Plugin>, String> {
    let plugin = super::start_plugin(env, task, Some(client_version), log)?;
    let message = if ch.cipher.is_some() {
        "This session is encrypted using AWS KMS."
    } else {
        ""
    };
    let nanos = ch
        .handshake_started
        .map_or(0, |t| t.elapsed().as_nanos() as u64);
    let done = json!({ "HandshakeTimeToComplete": nanos, "CustomerMessage": message });
    ch.stream(
        payload_type::HANDSHAKE_COMPLETE,
        done.to_string().into_bytes(),
    )
    .map_err(|e| e.to_string())?;
    Ok(plugin)
}

/// One running session: the channel, the plugin once started, where the handshake is, and the
/// plugin's output not yet sent. Each `on_*` method handles one event; `step` is one turn of
/// the poll loop. Flow control (window, resends) is decided in `Outgoing`; the loop asks it in
/// `reading`, `deadline` and `send_due` only.
struct Session<'a> {
    ch: DataChannel<'a>,
    env: &'a SessionEnv,
    task: &'a SessionTask,
    stop: &'a Stop,
    plugin: Option<Box<dyn Plugin>>,
    phase: Phase,
    /// The KMS challenge of an encrypted session's handshake.
    challenge: Option<String>,
    events: Vec<Event>,
    /// The transcript of a logged session.
    log: Option<SessionLog>,
}

/// `Break` ends the session with how it ended.
type Step = ControlFlow<Ended>;

impl Session<'_> {
    /// Sends the HandshakeRequest (§4.6.3); the plugin starts once the client answers.
    fn start_handshake(&mut self) -> Result<(), ChannelError> {
        let challenge = self.challenge.as_deref();
        let request = handshake_request(self.task, &self.env.agent_version, challenge);
        self.ch.stream(payload_type::HANDSHAKE_REQUEST, request)?;
        self.ch.handshake_started = Some(Instant::now());
        self.phase = Phase::Handshake {
            since: Instant::now(),
        };
        Ok(())
    }

    fn run(&mut self) -> Ended {
        let ended = loop {
            if let ControlFlow::Break(ended) = self.step() {
                break ended;
            }
        };
        if let Some(p) = self.plugin.as_mut() {
            p.stop();
        }
        self.ch.send_state("Terminating");
        let _ = self.ch.conn.flush();
        log::debug!(
            "session {}: {} output frames re-sent",
            self.task.session_id,
            self.ch.out.resent()
        );
        ended
    }

    /// One wait for the websocket, the plugin's fds, the stop waker or a timer, then every
    /// event that woke it, in the order that keeps input before the output it causes.
    fn step(&mut self) -> Step {
        self.on_stop()?;
        let now = Instant::now();
        self.on_timer(now)?;
        send_due(&mut self.ch, now);
        let mut fds = self.poll_fds();
        let timeout = self
            .deadline()
            .map(|d| d.saturating_duration_since(Instant::now()));
        if let Err(e) = poll(&mut fds, timeout) {
            return ControlFlow::Break(Ended::Failed(format!("poll failed: {e}")));
        }
        if fds[1].readable {
            self.stop.waker.reset();
        }
        if fds[0].writable {
            self.on_writable()?;
        }
        self.on_frames()?;
        self.on_plugin_ready(&fds[2..]);
        self.deliver_input()?;
        self.on_plugin_events();
        ControlFlow::Continue(())
    }

    fn on_stop(&self) -> Step {
        match self.stop.kind() {
            Some(StopKind::Terminated) => ControlFlow::Break(Ended::Success),
            Some(StopKind::Shutdown) => {
                ControlFlow::Break(Ended::Failed("the agent stopped during the session".into()))
            }
            None => ControlFlow::Continue(()),
        }
    }

    /// The handshake's timeout, and the end of draining.
    fn on_timer(&mut self, now: Instant) -> Step {
        let message = match &self.phase {
            Phase::Handshake { since }
                if now.saturating_duration_since(*since) > HANDSHAKE_TIMEOUT =>
            {
                "Handshake timed out. Please ensure that you have the latest version of the session manager plugin."
            }
            Phase::Challenge { since, .. }
                if now.saturating_duration_since(*since) > HANDSHAKE_TIMEOUT =>
            {
                "Timed out waiting for encryption challenge."
            }
            Phase::Draining { until, ended } if self.ch.out.unacked() == 0 || now >= *until => {
                return ControlFlow::Break(ended.clone());
            }
            _ => return ControlFlow::Continue(()),
        };
        ControlFlow::Break(fail_visibly(&mut self.ch, message.into()))
    }

    /// Whether the plugin's output is read now: not while publication is paused or the send
    /// window is full, so a slow client slows the PTY or socket read instead of a queue.
    fn reading(&self) -> bool {
        matches!(self.phase, Phase::Running) && self.ch.out.has_room()
    }

    /// The websocket, the stop waker, then the plugin's fds.
    fn poll_fds(&self) -> Vec<PollFd> {
        let interests = self
            .plugin
            .as_ref()
            .map(|p| p.interests(self.reading()))
            .unwrap_or_default();
        let mut fds = vec![
            PollFd::new(self.ch.conn.fd(), true, self.ch.conn.wants_write()),
            PollFd::new(self.stop.waker.fd(), true, false),
        ];
        fds.extend(
            interests
                .iter()
                .filter(|i| i.read || i.write)
                .map(|i| PollFd::new(i.fd, i.read, i.write)),
        );
        fds
    }

    /// The next resend, handshake timeout or end of draining.
    fn deadline(&self) -> Option<Instant> {
        // While bytes wait in the socket's queue nothing is sent (see `send_due`): the socket
        // becoming writable wakes the loop, not a deadline that has passed.
        let resend = if self.ch.conn.wants_write() {
            None
        } else {
            self.ch.out.next_deadline(Instant::now())
        };
        let phase = match &self.phase {
            Phase::Handshake { since } | Phase::Challenge { since, .. } => {
                Some(*since + HANDSHAKE_TIMEOUT)
            }
            Phase::Draining { until, .. } => Some(*until),
            Phase::Running => None,
        };
        match (resend, phase) {
            (Some(r), Some(p)) => Some(r.min(p)),
            (r, p) => r.or(p),
        }
    }

    fn on_writable(&mut self) -> Step {
        if self.ch.conn.flush().is_err() && self.ch.reconnect().is_err() {
            return ControlFlow::Break(Ended::Failed("data channel lost".into()));
        }
        ControlFlow::Continue(())
    }

    /// Every frame the websocket has; a lost connection is reopened.
    fn on_frames(&mut self) -> Step {
        loop {
            let frame = match self.ch.conn.read() {
                Ok(Some(f)) => f,
                Ok(None) => return ControlFlow::Continue(()),
                Err(e) => {
                    log::warn!("session {}: data channel error: {e}", self.task.session_id);
                    Frame::Closed
                }
            };
            let bytes = match frame {
                Frame::Binary(b) => b,
                Frame::Text(t) => t.into_bytes(),
                Frame::Closed => return self.on_connection_lost(),
            };
            match AgentMessage::decode(&bytes) {
                Ok(m) => self.on_message(m)?,
                Err(e) => log::warn!(
                    "session {}: dropping a malformed frame: {e}",
                    self.task.session_id
                ),
            }
        }
    }

    fn on_connection_lost(&mut self) -> Step {
        match self.ch.reconnect() {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(Ended::Failed(e.to_string())),
        }
    }

    fn on_message(&mut self, msg: AgentMessage) -> Step {
        match msg.message_type.as_str() {
            message::INPUT_STREAM_DATA => {
                if let Some(ack) = self.ch.inc.receive(msg) {
                    let _ = self.ch.conn.send_binary(ack.encode());
                }
                self.ch.out.resume();
            }
            message::ACKNOWLEDGE => self.on_ack(&msg.payload),
            message::PAUSE_PUBLICATION => self.ch.out.pause(),
            message::START_PUBLICATION => self.ch.out.resume(),
            message::CHANNEL_CLOSED => return ControlFlow::Break(Ended::Success),
            other => log::debug!("session {}: ignoring {other}", self.task.session_id),
        }
        ControlFlow::Continue(())
    }

    fn on_ack(&mut self, payload: &[u8]) {
        if let Some(a) = Ack::parse(payload) {
            self.ch.out.acknowledged(a.sequence_number, Instant::now());
            // Draining waits as long as the client keeps acknowledging.
            if let Phase::Draining { until, .. } = &mut self.phase {
                *until = Instant::now() + DRAIN_TIMEOUT;
            }
        }
    }

    fn on_plugin_ready(&mut self, fds: &[PollFd]) {
        if let Some(p) = self.plugin.as_mut() {
            for f in fds.iter().filter(|f| f.readable || f.writable) {
                p.ready(f.fd, f.readable, f.writable, &mut self.events);
            }
        }
    }

    /// Input in sequence, as far as the plugin takes it; the rest waits in the window. Input
    /// can make output too (an smux FIN for each refused SYN), beyond the send window that
    /// stops reading the plugin: a client that acknowledges none of it gets no further than
    /// `MAX_UNACKED` either, which bounds what waits for its acknowledgement. (Output from
    /// reading stops at the window, so a busy shell still takes its Ctrl-C.)
    fn deliver_input(&mut self) -> Step {
        while self.ch.out.unacked() + self.events.len() < MAX_UNACKED
            && self.plugin.as_ref().is_none_or(|p| p.wants_input())
        {
            let Some(m) = self.ch.inc.take_next() else {
                break;
            };
            if let Err(e) = self.deliver(m) {
                return ControlFlow::Break(fail_visibly(&mut self.ch, e));
            }
        }
        ControlFlow::Continue(())
    }

    /// One in-order input message, by phase. The error is the message shown to the client.
    fn deliver(&mut self, m: AgentMessage) -> Result<(), String> {
        match &self.phase {
            Phase::Handshake { .. } if m.payload_type == payload_type::HANDSHAKE_RESPONSE => {
                self.on_handshake_response(&m.payload)
            }
            Phase::Challenge { .. } if m.payload_type == payload_type::ENC_CHALLENGE_RESPONSE => {
                self.on_challenge_response(&m.payload)
            }
            Phase::Running => {
                self.on_client_input(m);
                Ok(())
            }
            // Before the handshake completes (and after the end) other input is dropped.
            _ => Ok(()),
        }
    }

    fn on_handshake_response(&mut self, payload: &[u8]) -> Result<(), String> {
        let response = handshake_response(payload)?;
        if let Some(challenge) = self.challenge.as_deref() {
            let kms_result = response.kms_result.as_ref();
            let expected =
                start_encryption(&mut self.ch, self.env, self.task, kms_result, challenge)?;
            self.phase = Phase::Challenge {
                since: Instant::now(),
                expected,
            };
            // The client version is needed again once the challenge is answered.
            self.ch.client_version = response.client_version;
            Ok(())
        } else {
            self.start_running(&response.client_version)
        }
    }

    fn on_challenge_response(&mut self, payload: &[u8]) -> Result<(), String> {
        let Phase::Challenge { expected, .. } = &self.phase else {
            return Ok(());
        };
        let cipher = self
            .ch
            .cipher
            .as_ref()
            .ok_or("encryption challenge without keys")?;
        crypto::check_challenge_response(cipher, payload, expected)?;
        let client_version = std::mem::take(&mut self.ch.client_version);
        self.start_running(&client_version)
    }

    fn start_running(&mut self, client_version: &str) -> Result<(), String> {
        self.plugin = Some(complete_handshake(
            &mut self.ch,
            self.env,
            self.task,
            client_version,
            self.log.as_mut(),
        )?);
        self.phase = Phase::Running;
        Ok(())
    }

    /// Session data, decrypted when keys are agreed, for the plugin.
    fn on_client_input(&mut self, m: AgentMessage) {
        let Some(p) = self.plugin.as_mut() else {
            return;
        };
        let data = match (&self.ch.cipher, m.payload_type) {
            (Some(c), payload_type::OUTPUT) => match c.decrypt(&m.payload) {
                Ok(d) => d,
                Err(e) => {
                    log::warn!(
                        "session {}: dropping input that does not decrypt: {e}",
                        self.task.session_id
                    );
                    return;
                }
            },
            _ => m.payload,
        };
        match datachannel::input(m.payload_type, &data) {
            Some(input) => p.input(input, &mut self.events),
            None => log::debug!(
                "session {}: ignoring input of payload type {}",
                self.task.session_id,
                m.payload_type
            ),
        }
    }

    /// The plugin's output goes out in sequence; its end starts draining.
    fn on_plugin_events(&mut self) {
        for event in self.events.drain(..) {
            match event {
                Event::Output(output) => {
                    let (kind, bytes) = datachannel::output(output);
                    if let Some(log) = self.log.as_mut() {
                        log.record(&bytes);
                    }
                    if let Err(e) = self.ch.stream(kind, bytes) {
                        log::warn!("session {}: cannot send output: {e}", self.task.session_id);
                    }
                }
                Event::End(ended) => {
                    if !matches!(self.phase, Phase::Draining { .. }) {
                        self.phase = Phase::Draining {
                            until: Instant::now() + DRAIN_TIMEOUT,
                            ended,
                        };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_responses_are_checked() {
        let ok = br#"{"ClientVersion":"1.2.463.0","ProcessedClientActions":[{"ActionType":"SessionType","ActionStatus":1}],"Errors":[]}"#;
        assert_eq!(handshake_response(ok).unwrap().client_version, "1.2.463.0");
        let bad = br#"{"ProcessedClientActions":[{"ActionType":"SessionType","ActionStatus":3,"Error":"unsupported"}]}"#;
        assert!(handshake_response(bad).unwrap_err().contains("unsupported"));
        assert!(handshake_response(b"[").is_err());
    }

    fn task(document: Value, parameters: Value) -> SessionTask {
        let content =
            json!({ "SessionId": "s-1", "DocumentContent": document, "Parameters": parameters });
        let payload = json!({ "Content": content.to_string() }).to_string();
        super::super::task::parse(payload.as_bytes()).unwrap()
    }

    fn handshake_properties(task: &SessionTask) -> Value {
        let request: Value =
            serde_json::from_slice(&handshake_request(task, "3.3.0", None)).unwrap();
        request["RequestedClientActions"][0]["ActionParameters"]["Properties"].clone()
    }

    #[test]
    fn the_handshake_carries_a_port_documents_resolved_properties_whole() {
        // AWS-StartPortForwardingSessionToSocket's shape: the client listens where these say.
        let port = task(
            json!({ "schemaVersion": "1.0", "sessionType": "Port",
                "parameters": {
                    "portNumber": { "type": "String", "default": "80" },
                    "localPortNumber": { "type": "String", "default": "0" },
                    "localUnixSocket": { "type": "String", "default": "" } },
                "properties": { "portNumber": "{{ portNumber }}", "type": "LocalPortForwarding",
                    "localPortNumber": "{{ localPortNumber }}", "localUnixSocket": "{{ localUnixSocket }}",
                    "localConnectionType": "unix" } }),
            json!({ "portNumber": "5432", "localUnixSocket": "/tmp/db.sock" }),
        );
        assert_eq!(
            handshake_properties(&port),
            json!({ "portNumber": "5432", "type": "LocalPortForwarding", "localPortNumber": "0",
                "localUnixSocket": "/tmp/db.sock", "localConnectionType": "unix" })
        );
        let commands = task(
            json!({ "schemaVersion": "1.0", "sessionType": "NonInteractiveCommands",
                "properties": { "linux": { "commands": "date" } } }),
            json!({}),
        );
        assert_eq!(
            handshake_properties(&commands),
            Value::Null,
            "upstream sends nil"
        );
    }
}
