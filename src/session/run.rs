//! One session, start to end, on its own thread: open the data channel (§4.6.3), run the
//! handshake when the plugin needs one, then a single `poll` loop over the websocket, the
//! plugin's fds and a stop waker — sequencing output, acknowledging input, resending what the
//! client has not acknowledged — until the plugin ends or the session is terminated.

use super::crypto::{self, SessionCipher};
use super::datachannel::{ACKNOWLEDGE, Ack, INPUT_STREAM, Incoming, Outgoing, payload_type};
use super::plugin::{Ended, Event, Plugin};
use super::task::{SessionTask, SessionType};
use crate::aws::credentials::CredentialsProvider;
use crate::aws::endpoint::Endpoint;
use crate::aws::http::HttpClient;
use crate::mgs::message::AgentMessage;
use crate::mgs::rest;
use crate::mgs::websocket::{Connection, Frame};
use crate::sys::poll::{PollFd, Waker, poll};
use serde_json::{Value, json};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a finished session waits for the client to acknowledge the last output.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Output frames in flight before the plugin is no longer read (bounds memory per session;
/// twice as many stop its input as well).
const WINDOW: usize = 512;
const RESENDS_PER_SCAN: usize = 64;
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
        self.kind
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(kind);
        self.waker.wake();
    }

    fn kind(&self) -> Option<StopKind> {
        *self.kind.lock().unwrap_or_else(|e| e.into_inner())
    }
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
    fn open(env: &'a SessionEnv, session_id: &'a str) -> Result<DataChannel<'a>, String> {
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
    fn reconnect(&mut self) -> Result<(), String> {
        let mut delay = Duration::from_millis(crate::random::between(100, 199));
        let mut last = String::new();
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
                Err(e) if e.contains("Session is already terminated") => return Err(e),
                Err(e) => last = e,
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        Err(format!(
            "data channel lost and not reopened after {RECONNECT_ATTEMPTS} attempts: {last}"
        ))
    }

    /// A message outside the stream (`agent_session_state`): flags 3, sequence 0.
    fn send_state(&mut self, state: &str) {
        let body =
            json!({ "SchemaVersion": 1, "SessionState": state, "SessionId": self.session_id });
        let msg = AgentMessage::new(
            "agent_session_state",
            0,
            3,
            0,
            body.to_string().into_bytes(),
        );
        let _ = self.conn.send_binary(msg.encode());
    }

    /// Sends a stream message; session data (types 1, 11, 12) is encrypted once keys are agreed.
    fn stream(&mut self, kind: u32, payload: Vec<u8>) -> Result<(), String> {
        let data = matches!(
            kind,
            payload_type::OUTPUT | payload_type::STDERR | payload_type::EXIT_CODE
        );
        let payload = match self.cipher.as_mut() {
            Some(c) if data && !payload.is_empty() => c.encrypt(&payload)?,
            _ => payload,
        };
        if let Some(frame) = self.out.push(kind, payload, Instant::now()) {
            self.conn.send_binary(frame).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn connect(env: &SessionEnv, session_id: &str) -> Result<Connection, String> {
    let token = rest::create_data_channel(
        &env.http,
        &env.endpoint,
        env.credentials.as_ref(),
        session_id,
    )
    .map_err(|e| e.to_string())?;
    let url = rest::websocket_url(
        &env.endpoint,
        &format!("/v1/data-channel/{session_id}?role=publish_subscribe"),
    );
    let credentials = env.credentials.as_ref();
    let mut conn =
        rest::open_websocket(&env.http, &env.endpoint, credentials, &url, CONNECT_TIMEOUT)
            .map_err(|e| e.to_string())?;
    let open = json!({
        "MessageSchemaVersion": "1.0",
        "RequestId": crate::random::uuid_v4(),
        "TokenValue": token,
        "ClientInstanceId": env.instance_id,
        "ClientId": "",
    });
    conn.send_text(open.to_string())
        .map_err(|e| e.to_string())?;
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

/// Runs a session to its end and says how it ended.
pub fn run(env: &SessionEnv, task: &SessionTask, stop: &Stop) -> Ended {
    let mut ch = match DataChannel::open(env, &task.session_id) {
        Ok(ch) => ch,
        Err(e) => return Ended::Failed(format!("cannot open the data channel: {e}")),
    };
    ch.send_state("Connected");
    let mut plugin: Option<Box<dyn Plugin>> = None;
    let encrypt = !task.kms_key_id.is_empty() && task.session_type != SessionType::Port;
    let challenge = match encrypt.then(crypto::random_challenge).transpose() {
        Ok(c) => c,
        Err(e) => return Ended::Failed(e),
    };
    let mut phase = if task.session_type.needs_handshake() || encrypt {
        let request = handshake_request(task, &env.agent_version, challenge.as_deref());
        if let Err(e) = ch.stream(payload_type::HANDSHAKE_REQUEST, request) {
            return Ended::Failed(e);
        }
        ch.handshake_started = Some(Instant::now());
        Phase::Handshake {
            since: Instant::now(),
        }
    } else {
        match super::start_plugin(env, task, None) {
            Ok(p) => plugin = Some(p),
            Err(e) => return fail_visibly(&mut ch, e),
        }
        Phase::Running
    };
    let ended = session_loop(
        &mut ch,
        task,
        env,
        stop,
        &mut plugin,
        &mut phase,
        challenge.as_deref(),
    );
    if let Some(p) = plugin.as_mut() {
        p.stop();
    }
    ch.send_state("Terminating");
    let _ = ch.conn.flush();
    ended
}

/// Tells the client why the session cannot run, then fails it.
fn fail_visibly(ch: &mut DataChannel<'_>, message: String) -> Ended {
    log::warn!("session {}: {message}", ch.session_id);
    let _ = ch.stream(payload_type::OUTPUT, format!("{message}\r\n").into_bytes());
    drain(ch, Instant::now() + DRAIN_TIMEOUT);
    ch.send_state("Terminating");
    Ended::Failed(message)
}

/// Sends again what the client has not acknowledged in time, unless earlier bytes still wait in
/// the socket's queue: then the client has not even had the first copy, and re-sending would
/// only pile duplicates onto a slow connection.
fn resend_due(ch: &mut DataChannel<'_>, now: Instant) {
    if ch.conn.wants_write() {
        return;
    }
    for frame in ch.out.due_resends(now, RESENDS_PER_SCAN) {
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
            if let Frame::Binary(b) = frame {
                if let Ok(m) = AgentMessage::decode(&b) {
                    if m.message_type == ACKNOWLEDGE {
                        if let Some(a) = Ack::parse(&m.payload) {
                            ch.out.acknowledged(a.sequence_number, Instant::now());
                        }
                    }
                }
            }
        }
        resend_due(ch, Instant::now());
    }
}

fn handshake_request(
    task: &SessionTask,
    agent_version: &str,
    kms_challenge: Option<&str>,
) -> Vec<u8> {
    let properties = match task.session_type {
        SessionType::Port => {
            json!({ "portNumber": task.port_number, "type": task.port_type, "host": task.host })
        }
        _ => Value::Null,
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
    ch.stream(payload_type::ENC_CHALLENGE_REQUEST, payload)?;
    ch.cipher = Some(cipher);
    Ok(Box::new(expected))
}

/// Starts the plugin and tells the client the handshake is complete.
fn complete_handshake(
    ch: &mut DataChannel<'_>,
    env: &SessionEnv,
    task: &SessionTask,
    client_version: &str,
) -> Result<Box<dyn Plugin>, String> {
    let plugin = super::start_plugin(env, task, Some(client_version))?;
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
    )?;
    Ok(plugin)
}

#[allow(clippy::too_many_lines)]
fn session_loop(
    ch: &mut DataChannel<'_>,
    task: &SessionTask,
    env: &SessionEnv,
    stop: &Stop,
    plugin: &mut Option<Box<dyn Plugin>>,
    phase: &mut Phase,
    challenge: Option<&str>,
) -> Ended {
    let mut events = Vec::new();
    loop {
        if let Some(kind) = stop.kind() {
            return match kind {
                StopKind::Terminated => Ended::Success,
                StopKind::Shutdown => Ended::Failed("the agent stopped during the session".into()),
            };
        }
        let now = Instant::now();
        match phase {
            Phase::Handshake { since }
                if now.saturating_duration_since(*since) > HANDSHAKE_TIMEOUT =>
            {
                return fail_visibly(ch, "Handshake timed out. Please ensure that you have the latest version of the session manager plugin.".into());
            }
            Phase::Challenge { since, .. }
                if now.saturating_duration_since(*since) > HANDSHAKE_TIMEOUT =>
            {
                return fail_visibly(ch, "Timed out waiting for encryption challenge.".into());
            }
            Phase::Draining { until, ended } if ch.out.unacked() == 0 || now >= *until => {
                return ended.clone();
            }
            _ => {}
        }
        resend_due(ch, now);
        let reading =
            matches!(phase, Phase::Running) && !ch.out.is_paused() && ch.out.unacked() < WINDOW;
        let interests = plugin
            .as_ref()
            .map(|p| p.interests(reading))
            .unwrap_or_default();
        let mut fds: Vec<PollFd> = vec![
            PollFd::new(ch.conn.fd(), true, ch.conn.wants_write()),
            PollFd::new(stop.waker.fd(), true, false),
        ];
        fds.extend(
            interests
                .iter()
                .filter(|i| i.read || i.write)
                .map(|i| PollFd::new(i.fd, i.read, i.write)),
        );
        // While bytes wait in the socket's queue nothing is re-sent (see `resend_due`): the
        // socket becoming writable wakes the loop, not a resend deadline that has passed.
        let mut deadline = if ch.conn.wants_write() {
            None
        } else {
            ch.out.next_deadline()
        };
        if let Phase::Handshake { since } | Phase::Challenge { since, .. } = phase {
            deadline = Some(deadline.map_or(*since + HANDSHAKE_TIMEOUT, |d| {
                d.min(*since + HANDSHAKE_TIMEOUT)
            }));
        }
        if let Phase::Draining { until, .. } = phase {
            deadline = Some(deadline.map_or(*until, |d| d.min(*until)));
        }
        if let Err(e) = poll(
            &mut fds,
            deadline.map(|d| d.saturating_duration_since(Instant::now())),
        ) {
            return Ended::Failed(format!("poll failed: {e}"));
        }
        if fds[1].readable {
            stop.waker.reset();
        }
        if fds[0].writable && ch.conn.flush().is_err() && ch.reconnect().is_err() {
            return Ended::Failed("data channel lost".into());
        }
        // Websocket frames.
        loop {
            let frame = match ch.conn.read() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    log::warn!("session {}: data channel error: {e}", task.session_id);
                    Frame::Closed
                }
            };
            let bytes = match frame {
                Frame::Binary(b) => b,
                Frame::Text(t) => t.into_bytes(),
                Frame::Closed => {
                    if let Err(e) = ch.reconnect() {
                        return Ended::Failed(e);
                    }
                    break;
                }
            };
            let msg = match AgentMessage::decode(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    log::warn!(
                        "session {}: dropping a malformed frame: {e}",
                        task.session_id
                    );
                    continue;
                }
            };
            match msg.message_type.as_str() {
                INPUT_STREAM => {
                    if let Some(ack) = ch.inc.receive(msg) {
                        let _ = ch.conn.send_binary(ack.encode());
                    }
                    ch.out.resume();
                }
                ACKNOWLEDGE => {
                    if let Some(a) = Ack::parse(&msg.payload) {
                        ch.out.acknowledged(a.sequence_number, Instant::now());
                        // Draining waits as long as the client keeps acknowledging.
                        if let Phase::Draining { until, .. } = phase {
                            *until = Instant::now() + DRAIN_TIMEOUT;
                        }
                    }
                }
                "pause_publication" => ch.out.pause(),
                "start_publication" => ch.out.resume(),
                "channel_closed" => return Ended::Success,
                other => log::debug!("session {}: ignoring {other}", task.session_id),
            }
        }
        // Plugin fds.
        if let Some(p) = plugin.as_mut() {
            for f in fds.iter().skip(2).filter(|f| f.readable || f.writable) {
                p.ready(f.fd, f.readable, f.writable, &mut events);
            }
        }
        // Input in sequence, as far as the plugin takes it; the rest waits in the window. Input
        // can make output too (an smux FIN for each refused SYN), beyond the `WINDOW` that
        // stops reading the plugin: a client that acknowledges none of it gets no further
        // either, which bounds what waits for its acknowledgement. (Output from reading stops
        // at `WINDOW`, so a busy shell still takes its Ctrl-C.)
        while ch.out.unacked() + events.len() < 2 * WINDOW
            && plugin.as_ref().is_none_or(|p| p.wants_input())
        {
            let Some(m) = ch.inc.take_next() else { break };
            if let Err(e) = deliver(ch, env, task, plugin, phase, challenge, m, &mut events) {
                return fail_visibly(ch, e);
            }
        }
        for event in events.drain(..) {
            match event {
                Event::Output(kind, bytes) => {
                    if let Err(e) = ch.stream(kind, bytes) {
                        log::warn!("session {}: cannot send output: {e}", task.session_id);
                    }
                }
                Event::End(ended) => {
                    if !matches!(phase, Phase::Draining { .. }) {
                        *phase = Phase::Draining {
                            until: Instant::now() + DRAIN_TIMEOUT,
                            ended,
                        };
                    }
                }
            }
        }
    }
}

/// One in-order input message, by phase.
#[allow(clippy::too_many_arguments)]
fn deliver(
    ch: &mut DataChannel<'_>,
    env: &SessionEnv,
    task: &SessionTask,
    plugin: &mut Option<Box<dyn Plugin>>,
    phase: &mut Phase,
    challenge: Option<&str>,
    m: AgentMessage,
    events: &mut Vec<Event>,
) -> Result<(), String> {
    match phase {
        Phase::Handshake { .. } if m.payload_type == payload_type::HANDSHAKE_RESPONSE => {
            let response = handshake_response(&m.payload)?;
            if let Some(challenge) = challenge {
                let expected =
                    start_encryption(ch, env, task, response.kms_result.as_ref(), challenge)?;
                *phase = Phase::Challenge {
                    since: Instant::now(),
                    expected,
                };
                // The client version is needed again once the challenge is answered.
                ch.client_version = response.client_version;
            } else {
                *plugin = Some(complete_handshake(ch, env, task, &response.client_version)?);
                *phase = Phase::Running;
            }
        }
        Phase::Challenge { expected, .. }
            if m.payload_type == payload_type::ENC_CHALLENGE_RESPONSE =>
        {
            let cipher = ch
                .cipher
                .as_ref()
                .ok_or("encryption challenge without keys")?;
            crypto::check_challenge_response(cipher, &m.payload, expected)?;
            let client_version = std::mem::take(&mut ch.client_version);
            *plugin = Some(complete_handshake(ch, env, task, &client_version)?);
            *phase = Phase::Running;
        }
        Phase::Running => {
            let Some(p) = plugin.as_mut() else {
                return Ok(());
            };
            let data = match (&ch.cipher, m.payload_type) {
                (Some(c), payload_type::OUTPUT) => match c.decrypt(&m.payload) {
                    Ok(d) => d,
                    Err(e) => {
                        log::warn!(
                            "session {}: dropping input that does not decrypt: {e}",
                            task.session_id
                        );
                        return Ok(());
                    }
                },
                _ => m.payload,
            };
            p.input(m.payload_type, &data, events);
        }
        // Before the handshake completes (and after the end) other input is dropped.
        _ => {}
    }
    Ok(())
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
}
