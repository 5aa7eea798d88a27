//! ssmmessages (Message Gateway Service): CreateControlChannel / CreateDataChannel over REST,
//! the two WebSocket endpoints, and the service's side of the control channel (Run Command
//! `agent_job`s, session starts and terminations, task completions). The data channel's client
//! role lives in `session.rs`.
//!
//! Where docs/protocol.md leaves the service's behaviour open, this emulator chooses (and
//! `lib.rs`/report documents): the `interactive_shell` Topic is `aws.ssm.startSession`;
//! `pause_publication`/`start_publication` carry the payload `{}`; messages for the control
//! channel that are sent while it is down wait and go out when the agent connects again.

use std::collections::{HashMap, HashSet};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::agentmessage::{AgentMessage, types};
use crate::http::{Outcome, Request, Response};
use crate::session::{self, SessionState};
use crate::state::{Reply, Shared, SigCheck, State};
use crate::util::{iso8601_ms, random_string, uuid_v4};
use crate::ws::{Incoming, WsConn, accept_response, upgrade_problem};
use crate::{Emulator, sigv4};

pub(crate) const SERVICE: &str = "ssmmessages";
const CONTROL_PREFIX: &str = "/v1/control-channel/";
const DATA_PREFIX: &str = "/v1/data-channel/";
/// How long the first WebSocket frame (the open message) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Which channel a token (or a connection) is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Channel {
    Control(String),
    Data(String),
}

/// One `agent_job_ack` as received.
#[derive(Debug, Clone)]
pub struct JobAck {
    pub job_id: String,
    pub status_code: String,
    pub error_message: String,
    pub acknowledged_message_id: String,
    pub payload: Value,
    pub arrived: Instant,
}

/// One `agent_task_complete` as received (every retry is recorded).
#[derive(Debug, Clone)]
pub struct TaskComplete {
    /// The payload's TaskId (the session id for sessions).
    pub session_id: String,
    pub final_status: String,
    pub message_id: String,
    pub payload: Value,
    pub arrived: Instant,
}

/// One AgentMessage that crossed a channel, either way.
#[derive(Debug, Clone)]
pub struct MgsRecord {
    pub at: Instant,
    /// `control` or the session id of a data channel.
    pub channel: String,
    /// True for agent → emulator.
    pub inbound: bool,
    pub message: AgentMessage,
}

/// What the emulator knows about one Run Command job sent over the control channel.
#[derive(Default)]
pub(crate) struct Job {
    /// MessageId of every `agent_job` AgentMessage sent for it.
    sent_ids: Vec<String>,
    acks: Vec<JobAck>,
    replies: Vec<Reply>,
}

#[derive(Default)]
pub struct MgsState {
    tokens: HashMap<String, Channel>,
    next_conn: u64,
    /// The live control channel: (connection id, instance id from the URL).
    control: Option<(u64, String)>,
    pub control_connects: u32,
    pub control_open_frame: Option<Value>,
    /// Frames for the control channel not written yet.
    control_outbox: Vec<Vec<u8>>,
    pub refuse_control: Option<u16>,
    pub refuse_data: Option<u16>,
    pub reply_acks: AckPolicy,
    pub task_acks: AckPolicy,
    pub(crate) jobs: HashMap<String, Job>,
    reply_ids: HashSet<String>,
    pub duplicate_job_replies: Vec<String>,
    pub task_completes: Vec<TaskComplete>,
    pub(crate) sessions: HashMap<String, SessionState>,
    pub log: Vec<MgsRecord>,
    /// Protocol violations by the agent (bad tokens, malformed frames, wrong header values…).
    pub errors: Vec<String>,
}

/// Whether the emulator answers `agent_job_reply` / `agent_task_complete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckPolicy {
    #[default]
    Ack,
    /// Record but do not acknowledge (to exercise the agent's re-sends).
    Withhold,
}

impl MgsState {
    pub(crate) fn next_conn_id(&mut self) -> u64 {
        self.next_conn += 1;
        self.next_conn
    }

    /// The instance id the agent connected with, else the configured one.
    pub(crate) fn instance_id(&self, fallback: &str) -> String {
        self.control
            .as_ref()
            .map_or_else(|| fallback.to_string(), |(_, iid)| iid.clone())
    }

    pub(crate) fn send_control(&mut self, m: AgentMessage) {
        self.control_outbox.push(m.encode());
        self.record("control", false, m);
    }

    pub(crate) fn record(&mut self, channel: &str, inbound: bool, message: AgentMessage) {
        self.log.push(MgsRecord {
            at: Instant::now(),
            channel: channel.into(),
            inbound,
            message,
        });
    }

    pub(crate) fn error(&mut self, e: String) {
        self.errors.push(e);
    }

    /// Closes the control channel's connection abruptly (its thread notices on the next tick).
    pub(crate) fn drop_control(&mut self) {
        self.control = None;
    }

    pub fn control_connected(&self) -> bool {
        self.control.is_some()
    }

    pub fn job_acks(&self, job_id: &str) -> &[JobAck] {
        self.jobs
            .get(job_id)
            .map(|j| &j.acks[..])
            .unwrap_or_default()
    }

    pub fn job_replies(&self, job_id: &str) -> &[Reply] {
        self.jobs
            .get(job_id)
            .map(|j| &j.replies[..])
            .unwrap_or_default()
    }

    pub fn job_final(&self, job_id: &str) -> Option<&Reply> {
        self.job_replies(job_id).iter().find(|r| r.is_final())
    }

    pub fn task_completes(&self, session_id: &str) -> Vec<&TaskComplete> {
        self.task_completes
            .iter()
            .filter(|t| t.session_id == session_id)
            .collect()
    }
}

/// Routes `/v1/…` requests; `None` when the path is not an MGS one.
pub(crate) fn route(shared: &Arc<Shared>, req: &Request) -> Option<(Outcome, SigCheck)> {
    let (channel, id) = if let Some(id) = req.path.strip_prefix(CONTROL_PREFIX) {
        (Channel::Control(id.to_string()), id)
    } else if let Some(id) = req.path.strip_prefix(DATA_PREFIX) {
        (Channel::Data(id.to_string()), id)
    } else {
        return None;
    };
    if id.is_empty() || id.contains('/') {
        return Some((not_found(req), SigCheck::NotChecked));
    }
    let verified = shared.read(|st| {
        sigv4::verify(req, &st.options.region, SERVICE, st.now(), |ak| {
            st.key_info(ak)
        })
    });
    if let Err(e) = verified {
        let body = xml_error(e.code, &e.message);
        return Some((
            Outcome::Respond(Response::new(403, "application/xml", body)),
            SigCheck::Failed(e.message),
        ));
    }
    let outcome = match req.method.as_str() {
        "POST" => Outcome::Respond(create_channel(shared, &channel, &req.body)),
        "GET" => upgrade(shared, req, channel),
        _ => not_found(req),
    };
    Some((outcome, SigCheck::Ok))
}

fn not_found(req: &Request) -> Outcome {
    Outcome::Respond(Response::text(
        404,
        format!("nothing at {} {}\n", req.method, req.path),
    ))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn xml_error(code: &str, message: &str) -> String {
    format!(
        "<{code}><Message>{}</Message></{code}>",
        xml_escape(message)
    )
}

fn xml_response(status: u16, body: String) -> Response {
    Response::new(status, "application/xml", body)
}

/// CreateControlChannel / CreateDataChannel: 201 with an XML token (docs/protocol.md §4.1).
fn create_channel(shared: &Shared, channel: &Channel, body: &[u8]) -> Response {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let problem = if body["MessageSchemaVersion"] != "1.0" {
        Some("MessageSchemaVersion must be \"1.0\"")
    } else if body["RequestId"].as_str().is_none_or(str::is_empty) {
        Some("RequestId is required")
    } else if matches!(channel, Channel::Data(_)) && !body["ClientId"].is_string() {
        Some("ClientId is required (the agent sends \"\")")
    } else {
        None
    };
    if let Some(p) = problem {
        shared.update(|st| st.mgs.error(format!("{channel:?}: {p}: {body}")));
        return xml_response(400, xml_error("ValidationException", p));
    }
    shared.update(|st| {
        let (root, refusal) = match channel {
            Channel::Control(_) => ("CreateControlChannelResponse", st.mgs.refuse_control),
            Channel::Data(sid) => {
                let refusal = st.mgs.refuse_data;
                match st.mgs.sessions.get(sid) {
                    None => {
                        let msg = format!("no session {sid} was started");
                        return xml_response(400, xml_error("ValidationException", &msg));
                    }
                    Some(s) if s.terminated() => {
                        let msg = "Session is already terminated";
                        return xml_response(400, xml_error("BadRequestException", msg));
                    }
                    Some(_) => ("CreateDataChannelResponse", refusal),
                }
            }
        };
        if let Some(status) = refusal {
            let msg = "User is not authorized to perform: ssmmessages:* (refused by the emulator)";
            return xml_response(status, xml_error("AccessDeniedException", msg));
        }
        let token = random_string(
            64,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        );
        st.mgs.tokens.insert(token.clone(), channel.clone());
        xml_response(
            201,
            format!(
                "<{root}><MessageSchemaVersion>1.0</MessageSchemaVersion>\
                 <TokenValue>{token}</TokenValue></{root}>"
            ),
        )
    })
}

/// The WebSocket endpoints: query check, then 101 and a connection thread.
fn upgrade(shared: &Arc<Shared>, req: &Request, channel: Channel) -> Outcome {
    let query_ok = match &channel {
        Channel::Control(_) => {
            req.query_param("role").as_deref() == Some("subscribe")
                && req.query_param("stream").as_deref() == Some("input")
        }
        Channel::Data(_) => req.query_param("role").as_deref() == Some("publish_subscribe"),
    };
    let problem = upgrade_problem(req).or_else(|| {
        (!query_ok).then(|| format!("unexpected query {:?} for {channel:?}", req.query))
    });
    if let Some(p) = problem {
        shared.update(|st| st.mgs.error(format!("upgrade of {}: {p}", req.path)));
        return Outcome::Respond(Response::text(400, format!("{p}\n")));
    }
    let shared = shared.clone();
    let takeover = Box::new(move |stream: TcpStream, buffered: Vec<u8>| {
        let Ok(conn) = WsConn::server(stream, buffered) else {
            return;
        };
        run_channel(&shared, conn, channel);
    });
    Outcome::Upgrade(accept_response(req), takeover)
}

/// Reads the open frame, then runs the channel until it ends.
fn run_channel(shared: &Shared, mut conn: WsConn, channel: Channel) {
    let frame = match read_open_frame(&mut conn) {
        Ok(f) => f,
        Err(e) => {
            shared.update(|st| st.mgs.error(format!("{channel:?}: {e}")));
            conn.abort();
            return;
        }
    };
    let accepted = shared.update(|st| accept_open(st, &channel, frame));
    let conn_id = match accepted {
        Ok(id) => id,
        Err(e) => {
            shared.update(|st| st.mgs.error(format!("{channel:?}: {e}")));
            conn.abort();
            return;
        }
    };
    match channel {
        Channel::Control(_) => control_loop(shared, conn, conn_id),
        Channel::Data(sid) => session::data_loop(shared, conn, conn_id, &sid),
    }
}

fn read_open_frame(conn: &mut WsConn) -> Result<Value, String> {
    let deadline = Instant::now() + OPEN_TIMEOUT;
    while Instant::now() < deadline {
        match conn.poll()? {
            Incoming::Idle => continue,
            Incoming::Text(t) => {
                return serde_json::from_str(&t)
                    .map_err(|e| format!("open message is not JSON ({e}): {t:?}"));
            }
            Incoming::Binary(_) => {
                return Err("the first frame must be the TEXT open message, got BINARY".into());
            }
        }
    }
    Err(format!("no open message within {OPEN_TIMEOUT:?}"))
}

/// Checks the open message (docs/protocol.md §4.2) and makes the connection current.
fn accept_open(st: &mut State, channel: &Channel, frame: Value) -> Result<u64, String> {
    let token = frame["TokenValue"].as_str().unwrap_or_default();
    if st.mgs.tokens.get(token) != Some(channel) {
        return Err(format!(
            "open message TokenValue {token:?} was not issued for this channel"
        ));
    }
    if frame["MessageSchemaVersion"] != "1.0" || !frame["RequestId"].is_string() {
        st.mgs.error(format!(
            "{channel:?}: open message lacks MessageSchemaVersion 1.0 / RequestId: {frame}"
        ));
    }
    let id = st.mgs.next_conn_id();
    match channel {
        Channel::Control(iid) => {
            for key in ["AgentVersion", "PlatformType"] {
                if !frame[key].is_string() {
                    st.mgs
                        .error(format!("control open message lacks {key}: {frame}"));
                }
            }
            st.mgs.control = Some((id, iid.clone()));
            st.mgs.control_connects += 1;
            st.mgs.control_open_frame = Some(frame);
        }
        Channel::Data(sid) => {
            let Some(s) = st.mgs.sessions.get_mut(sid) else {
                return Err(format!("no session {sid}"));
            };
            s.attach(id, frame);
        }
    }
    Ok(id)
}

/// The control channel: writes queued frames, handles the agent's messages.
fn control_loop(shared: &Shared, mut conn: WsConn, conn_id: u64) {
    while let Ok(incoming) = conn.poll() {
        let bytes = match incoming {
            Incoming::Idle => None,
            Incoming::Binary(b) => Some(b),
            Incoming::Text(t) => Some(t.into_bytes()),
        };
        if let Some(b) = bytes {
            shared.update(|st| on_control_message(st, &b));
        }
        let (frames, current) = {
            let mut st = shared.lock();
            let current = !st.stopping && st.mgs.control.as_ref().is_some_and(|c| c.0 == conn_id);
            let frames = if current {
                std::mem::take(&mut st.mgs.control_outbox)
            } else {
                Vec::new()
            };
            (frames, current)
        };
        if !current {
            conn.abort();
            return;
        }
        for f in frames {
            if conn.send_binary(f).is_err() {
                break;
            }
        }
    }
    conn.abort();
    shared.update(|st| {
        if st.mgs.control.as_ref().is_some_and(|c| c.0 == conn_id) {
            st.mgs.control = None;
        }
    });
}

fn parse_json(st: &mut State, m: &AgentMessage) -> Value {
    serde_json::from_slice(&m.payload).unwrap_or_else(|e| {
        st.mgs.error(format!(
            "{} {}: payload is not JSON ({e}): {:?}",
            m.message_type,
            m.message_id,
            m.payload_text()
        ));
        Value::Null
    })
}

fn str_of(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

fn on_control_message(st: &mut State, bytes: &[u8]) {
    let m = match AgentMessage::decode(bytes) {
        Ok(m) => m,
        Err(e) => return st.mgs.error(format!("control channel: {e}")),
    };
    for p in m.problems() {
        st.mgs.error(format!("control channel: {p}"));
    }
    if m.sequence_number != 0 || m.flags != 0 {
        st.mgs.error(format!(
            "control channel: {} {} has SequenceNumber {} Flags {} (expected 0, 0)",
            m.message_type, m.message_id, m.sequence_number, m.flags
        ));
    }
    st.mgs.record("control", true, m.clone());
    match m.message_type.as_str() {
        types::AGENT_JOB_ACK => on_job_ack(st, &m),
        types::AGENT_JOB_REPLY => on_job_reply(st, &m),
        types::AGENT_TASK_COMPLETE => on_task_complete(st, &m),
        _ => {} // telemetry and anything unknown: logged only
    }
}

fn on_job_ack(st: &mut State, m: &AgentMessage) {
    let v = parse_json(st, m);
    let ack = JobAck {
        job_id: str_of(&v, "jobId"),
        status_code: str_of(&v, "statusCode"),
        error_message: str_of(&v, "errorMessage"),
        acknowledged_message_id: str_of(&v, "acknowledgedMessageId"),
        payload: v,
        arrived: Instant::now(),
    };
    let job = st.mgs.jobs.entry(ack.job_id.clone()).or_default();
    let known = job.sent_ids.contains(&ack.acknowledged_message_id);
    job.acks.push(ack.clone());
    if !known {
        st.mgs.error(format!(
            "agent_job_ack for {} names acknowledgedMessageId {:?}, not an agent_job sent for it",
            ack.job_id, ack.acknowledged_message_id
        ));
    }
}

/// The service takes no `agent_job_reply` whose content is longer (upstream's
/// `ControlChannelAgentReplyPayloadSizeLimit`).
pub const MAX_REPLY_CONTENT: usize = 120_000;

fn on_job_reply(st: &mut State, m: &AgentMessage) {
    let v = parse_json(st, m);
    let job_id = str_of(&v, "jobId");
    let content = v["content"].as_str().unwrap_or_default();
    if content.len() > MAX_REPLY_CONTENT {
        return st.mgs.error(format!(
            "agent_job_reply {} for {job_id}: content of {} bytes is over {MAX_REPLY_CONTENT}; not taken",
            m.message_id,
            content.len()
        ));
    }
    let payload = serde_json::from_str(content).unwrap_or_else(|e| {
        st.mgs.error(format!(
            "agent_job_reply {} for {job_id}: content is not JSON ({e})",
            m.message_id
        ));
        Value::String(content.to_string())
    });
    if st.mgs.reply_ids.insert(m.message_id.clone()) {
        let reply = Reply {
            message_id: job_id.clone(),
            reply_id: m.message_id.clone(),
            payload,
            arrived: Instant::now(),
            arrived_at: SystemTime::now(),
        };
        st.mgs
            .jobs
            .entry(job_id.clone())
            .or_default()
            .replies
            .push(reply);
    } else {
        st.mgs.duplicate_job_replies.push(m.message_id.clone());
    }
    if st.mgs.reply_acks == AckPolicy::Ack {
        let ack = json!({"jobId": job_id, "acknowledgedMessageId": m.message_id});
        let out = AgentMessage::new(types::AGENT_JOB_REPLY_ACK, ack.to_string().into_bytes());
        st.mgs.send_control(out);
    }
}

fn on_task_complete(st: &mut State, m: &AgentMessage) {
    let v = parse_json(st, m);
    let done = TaskComplete {
        session_id: str_of(&v, "TaskId"),
        final_status: str_of(&v, "FinalTaskStatus"),
        message_id: m.message_id.clone(),
        payload: v,
        arrived: Instant::now(),
    };
    if st.mgs.task_acks == AckPolicy::Ack {
        let ack = json!({
            "SchemaVersion": 1,
            "MessageId": m.message_id,
            "TaskId": done.session_id,
            "Topic": "agent_task_complete",
        });
        let out = AgentMessage::new(types::AGENT_TASK_ACKNOWLEDGE, ack.to_string().into_bytes());
        st.mgs.send_control(out);
    }
    st.mgs.task_completes.push(done);
}

/// Queues an `agent_job` for `job_id`.
fn send_job(st: &mut State, job_id: &str, topic: &str, content: String) {
    let payload = json!({"Content": content, "JobId": job_id, "Topic": topic, "SchemaVersion": 1});
    let m = AgentMessage::new(types::AGENT_JOB, payload.to_string().into_bytes());
    st.mgs
        .jobs
        .entry(job_id.to_string())
        .or_default()
        .sent_ids
        .push(m.message_id.clone());
    st.mgs.send_control(m);
}

/// The `channel_closed` message for `session_id` (docs/protocol.md §4.5.4).
pub(crate) fn channel_closed(st: &State, session_id: &str) -> AgentMessage {
    let mut m = AgentMessage::new(types::CHANNEL_CLOSED, Vec::new());
    let payload = json!({
        "MessageType": types::CHANNEL_CLOSED,
        "MessageId": m.message_id,
        "DestinationId": st.mgs.instance_id(&st.options.instance_id),
        "SessionId": session_id,
        "SchemaVersion": 1,
        "CreatedDate": iso8601_ms(SystemTime::now()),
    });
    m.payload = payload.to_string().into_bytes();
    m
}

/// The ssmmessages side of the emulator: control channel, Run Command over MGS, sessions.
impl Emulator {
    /// Whether the agent holds an open control channel right now.
    pub fn mgs_connected(&self) -> bool {
        self.read(|st| st.mgs.control_connected())
    }

    /// Waits until the agent has an open control channel.
    pub fn wait_mgs_connected(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |st| st.mgs.control_connected())
    }

    /// Control-channel open messages accepted so far (1 + reconnects).
    pub fn mgs_connects(&self) -> u32 {
        self.read(|st| st.mgs.control_connects)
    }

    /// The last control-channel open message (`{"Cookie":null,…,"PlatformType":"linux"}`).
    pub fn control_open_message(&self) -> Option<Value> {
        self.read(|st| st.mgs.control_open_frame.clone())
    }

    /// Sends a send-command payload as an `agent_job` (queued while the channel is down);
    /// returns its JobId `aws.ssm.<CommandId>.<instance>` (CommandId from the payload, or a
    /// fresh UUID).
    pub fn send_agent_job(&self, payload: &Value) -> String {
        let cmd = payload["CommandId"]
            .as_str()
            .map_or_else(uuid_v4, str::to_string);
        self.shared.update(|st| {
            let job_id = format!(
                "aws.ssm.{cmd}.{}",
                st.mgs.instance_id(&st.options.instance_id)
            );
            send_job(st, &job_id, "aws.ssm.sendCommand", payload.to_string());
            job_id
        })
    }

    /// Sends a cancel `agent_job` for `target_job_id`; returns the cancel's JobId.
    pub fn send_agent_cancel(&self, target_job_id: &str) -> String {
        self.shared.update(|st| {
            let iid = st.mgs.instance_id(&st.options.instance_id);
            let job_id = format!("aws.ssm.{}.{iid}", uuid_v4());
            let content = json!({"CancelMessageId": target_job_id}).to_string();
            send_job(st, &job_id, "aws.ssm.cancelCommand", content);
            job_id
        })
    }

    /// Sends an `agent_job` exactly as given (odd topics, malformed content, replays).
    pub fn send_agent_job_raw(&self, job_id: &str, topic: &str, content: &str) {
        self.shared
            .update(|st| send_job(st, job_id, topic, content.to_string()));
    }

    /// Sends any AgentMessage on the control channel (queued while it is down).
    pub fn send_control_message(&self, message: AgentMessage) {
        self.shared.update(|st| st.mgs.send_control(message));
    }

    /// Sends raw bytes as one binary frame on the control channel (malformed-frame tests).
    pub fn send_control_raw(&self, bytes: Vec<u8>) {
        self.shared.update(|st| st.mgs.control_outbox.push(bytes));
    }

    pub fn job_acks(&self, job_id: &str) -> Vec<JobAck> {
        self.read(|st| st.mgs.job_acks(job_id).to_vec())
    }

    pub fn wait_job_ack(&self, job_id: &str, timeout: Duration) -> Option<JobAck> {
        self.shared
            .wait_for(timeout, |st| st.mgs.job_acks(job_id).first().cloned())
    }

    /// `agent_job_reply` contents for `job_id` in arrival order (first arrival of each
    /// MessageId); `Reply::reply_id` is the reply's AgentMessage MessageId.
    pub fn job_replies(&self, job_id: &str) -> Vec<Reply> {
        self.read(|st| st.mgs.job_replies(job_id).to_vec())
    }

    pub fn wait_job_replies(
        &self,
        job_id: &str,
        n: usize,
        timeout: Duration,
    ) -> Option<Vec<Reply>> {
        self.shared.wait_for(timeout, |st| {
            let r = st.mgs.job_replies(job_id);
            (r.len() >= n).then(|| r.to_vec())
        })
    }

    /// The first reply with a terminal documentStatus.
    pub fn wait_job_final(&self, job_id: &str, timeout: Duration) -> Option<Reply> {
        self.shared
            .wait_for(timeout, |st| st.mgs.job_final(job_id).cloned())
    }

    /// MessageIds of `agent_job_reply`s that arrived again (re-sends).
    pub fn duplicate_job_replies(&self) -> Vec<String> {
        self.read(|st| st.mgs.duplicate_job_replies.clone())
    }

    /// Whether `agent_job_reply` messages get an `agent_job_reply_ack` (default: yes).
    pub fn set_reply_acks(&self, policy: AckPolicy) {
        self.shared.update(|st| st.mgs.reply_acks = policy);
    }

    /// Whether `agent_task_complete` messages get an `agent_task_acknowledge` (default: yes).
    pub fn set_task_acks(&self, policy: AckPolicy) {
        self.shared.update(|st| st.mgs.task_acks = policy);
    }

    /// Every `agent_task_complete` for `session_id` (retries included), in arrival order.
    pub fn task_completes(&self, session_id: &str) -> Vec<TaskComplete> {
        self.read(|st| {
            st.mgs
                .task_completes(session_id)
                .into_iter()
                .cloned()
                .collect()
        })
    }

    pub fn wait_task_complete(&self, session_id: &str, timeout: Duration) -> Option<TaskComplete> {
        self.shared.wait_for(timeout, |st| {
            st.mgs
                .task_completes(session_id)
                .first()
                .map(|t| (*t).clone())
        })
    }

    /// Sends `channel_closed` for `session_id` on the control channel.
    pub fn send_channel_closed(&self, session_id: &str) {
        self.shared.update(|st| {
            let m = channel_closed(st, session_id);
            if let Some(s) = st.mgs.sessions.get_mut(session_id) {
                s.closed_by_service = true;
            }
            st.mgs.send_control(m);
        });
    }

    /// Closes the control channel's TCP connection abruptly (the agent should reconnect).
    pub fn drop_control_channel(&self) {
        self.shared.update(|st| st.mgs.control = None);
    }

    /// `Some(status)`: CreateControlChannel is answered `status` with an
    /// `<AccessDeniedException>` body (the agent's cue to fall back to ec2messages).
    pub fn refuse_control_channel(&self, status: Option<u16>) {
        self.shared.update(|st| st.mgs.refuse_control = status);
    }

    /// `Some(status)`: CreateDataChannel is answered `status` with `<AccessDeniedException>`.
    pub fn refuse_data_channel(&self, status: Option<u16>) {
        self.shared.update(|st| st.mgs.refuse_data = status);
    }

    /// Every AgentMessage on every MGS channel, both directions, in order.
    pub fn mgs_log(&self) -> Vec<MgsRecord> {
        self.read(|st| st.mgs.log.clone())
    }

    /// Protocol violations the emulator noticed (empty for a well-behaved agent).
    pub fn mgs_errors(&self) -> Vec<String> {
        self.read(|st| st.mgs.errors.clone())
    }
}
