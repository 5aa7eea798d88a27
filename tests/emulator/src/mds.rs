//! ec2messages (Message Delivery Service): the message queue with visibility timeouts, the held
//! `GetMessages` long poll, replies deduplicated by ReplyId, acks and failures.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::http::Response;
use crate::service::{required, validation};
use crate::state::{FailRecord, Reply, Shared};
use crate::util::{iso8601_ms, sha256_hex, uuid_v4};

pub(crate) const TARGET_PREFIX: &str = "EC2WindowsMessageDeliveryService";
pub(crate) const OPERATIONS: [&str; 5] = [
    "GetMessages",
    "AcknowledgeMessage",
    "SendReply",
    "FailMessage",
    "DeleteMessage",
];
/// Visibility when neither the request nor the options name one (the agent always sends 10).
const DEFAULT_VISIBILITY: Duration = Duration::from_secs(10);
const FAILURE_TYPES: [&str; 2] = ["NoHandlerExists", "InternalHandlerException"];

struct Queued {
    id: String,
    topic: String,
    payload: String,
    destination: String,
    created: SystemTime,
    visible_at: Instant,
}

impl Queued {
    fn to_json(&self) -> Value {
        json!({
            "CreatedDate": iso8601_ms(self.created),
            "Destination": self.destination,
            "MessageId": self.id,
            "Payload": self.payload,
            "PayloadDigest": sha256_hex(self.payload.as_bytes()),
            "Topic": self.topic,
        })
    }
}

#[derive(Default)]
pub(crate) struct MdsState {
    /// Messages not yet acknowledged, failed or deleted, in enqueue order.
    queue: Vec<Queued>,
    pub deliveries: HashMap<String, Vec<Instant>>,
    pub replies: HashMap<String, Vec<Reply>>,
    reply_ids: HashSet<String>,
    pub duplicate_replies: Vec<String>,
    pub acks: Vec<String>,
    /// What the agent said about each message, in arrival order: `ack`, `reply`, `fail`.
    pub events: Vec<(String, &'static str)>,
    pub fails: Vec<FailRecord>,
    pub deletes: Vec<String>,
    /// `GetMessages` calls currently held open waiting for a message.
    pub held_polls: usize,
}

impl MdsState {
    fn enqueue(&mut self, destination: &str, id: &str, topic: &str, payload: String) {
        self.queue.push(Queued {
            id: id.into(),
            topic: topic.into(),
            payload,
            destination: destination.into(),
            created: SystemTime::now(),
            visible_at: Instant::now(),
        });
    }

    /// When the next invisible message for `destination` becomes visible again.
    fn next_visible(&self, destination: &str) -> Option<Instant> {
        self.queue
            .iter()
            .filter(|m| m.destination == destination)
            .map(|m| m.visible_at)
            .min()
    }

    /// Hands out up to `max` visible messages and hides them for `visibility`.
    fn take_visible(
        &mut self,
        dest: &str,
        now: Instant,
        visibility: Duration,
        max: usize,
    ) -> Vec<Value> {
        let mut out = Vec::new();
        for m in self
            .queue
            .iter_mut()
            .filter(|m| m.destination == dest && m.visible_at <= now)
        {
            if out.len() == max {
                break;
            }
            m.visible_at = now + visibility;
            self.deliveries.entry(m.id.clone()).or_default().push(now);
            out.push(m.to_json());
        }
        out
    }

    fn remove(&mut self, id: &str) {
        self.queue.retain(|m| m.id != id);
    }
}

/// `aws.ssm.sendCommand.us.east.1.1`-style topic for this region.
fn topic(kind: &str, region: &str) -> String {
    format!("aws.ssm.{kind}.{}.1", region.replace('-', "."))
}

/// Enqueues a send-command message; the CommandId comes from the payload or is made up.
pub(crate) fn send_command(shared: &Shared, payload: &Value) -> String {
    let command_id = payload["CommandId"]
        .as_str()
        .map_or_else(uuid_v4, str::to_string);
    shared.update(|st| {
        let iid = st.options.instance_id.clone();
        let id = format!("aws.ssm.{command_id}.{iid}");
        let topic = topic("sendCommand", &st.options.region);
        st.mds.enqueue(&iid, &id, &topic, payload.to_string());
        id
    })
}

/// Enqueues a cancel-command message for `target_message_id`; returns the cancel's MessageId.
pub(crate) fn send_cancel(shared: &Shared, target_message_id: &str) -> String {
    let payload = json!({"CancelMessageId": target_message_id}).to_string();
    shared.update(|st| {
        let iid = st.options.instance_id.clone();
        let id = format!("aws.ssm.{}.{iid}", uuid_v4());
        let topic = topic("cancelCommand", &st.options.region);
        st.mds.enqueue(&iid, &id, &topic, payload);
        id
    })
}

/// Enqueues any message as given, for malformed and replayed cases.
pub(crate) fn enqueue_raw(shared: &Shared, topic: &str, payload: &str, message_id: &str) {
    shared.update(|st| {
        let iid = st.options.instance_id.clone();
        st.mds.enqueue(&iid, message_id, topic, payload.to_string());
    });
}

/// Answers one ec2messages operation (already authenticated).
pub(crate) fn handle(shared: &Shared, op: &str, body: &Value) -> Response {
    let result = match op {
        "GetMessages" => get_messages(shared, body),
        "AcknowledgeMessage" => required(body, "MessageId", 16).map(|id| {
            shared.update(|st| {
                st.mds.acks.push(id.into());
                st.mds.events.push((id.into(), "ack"));
                st.mds.remove(id);
            });
            json!({})
        }),
        "SendReply" => send_reply(shared, body),
        "FailMessage" => fail_message(shared, body),
        "DeleteMessage" => required(body, "MessageId", 16).map(|id| {
            shared.update(|st| {
                st.mds.deletes.push(id.into());
                st.mds.remove(id);
            });
            json!({})
        }),
        _ => Err(Response::aws_error(400, "UnknownOperationException", op)),
    };
    result.map_or_else(|e| e, |v| Response::json(200, &v))
}

/// Returns visible messages at once, or holds the request until one is enqueued, one becomes
/// visible again, `poll_hold` passes, or the emulator stops.
fn get_messages(shared: &Shared, body: &Value) -> Result<Value, Response> {
    let dest = required(body, "Destination", 10)?;
    let request_id = required(body, "MessagesRequestId", 16)?;
    let asked = body["VisibilityTimeoutInSeconds"]
        .as_u64()
        .map(Duration::from_secs);
    let mut st = shared.lock();
    let visibility = st
        .options
        .visibility_timeout
        .or(asked)
        .unwrap_or(DEFAULT_VISIBILITY);
    let deadline = Instant::now() + st.options.poll_hold;
    let max = st.options.max_messages_per_poll.max(1);
    let mut holding = false;
    let messages = loop {
        let now = Instant::now();
        let taken = st.mds.take_visible(dest, now, visibility, max);
        if !taken.is_empty() || st.stopping || now >= deadline {
            break taken;
        }
        if !holding {
            holding = true;
            st.mds.held_polls += 1;
            shared.touch(&mut st);
        }
        let wake = st
            .mds
            .next_visible(dest)
            .map_or(deadline, |t| t.min(deadline));
        st = shared.wait(st, wake);
    };
    st.mds.held_polls -= usize::from(holding);
    shared.touch(&mut st);
    Ok(json!({"Destination": dest, "Messages": messages, "MessagesRequestId": request_id}))
}

fn send_reply(shared: &Shared, body: &Value) -> Result<Value, Response> {
    let message_id = required(body, "MessageId", 16)?;
    let reply_id = required(body, "ReplyId", 16)?;
    let raw = body["Payload"]
        .as_str()
        .ok_or_else(|| validation("Payload", 1))?;
    let payload: Value = serde_json::from_str(raw).map_err(|e| {
        Response::aws_error(
            400,
            "ValidationException",
            &format!("Payload is not JSON: {e}"),
        )
    })?;
    shared.update(|st| {
        if !st.mds.reply_ids.insert(reply_id.into()) {
            st.mds.duplicate_replies.push(reply_id.into());
            return;
        }
        st.mds.events.push((message_id.into(), "reply"));
        let reply = Reply {
            message_id: message_id.into(),
            reply_id: reply_id.into(),
            payload,
            arrived: Instant::now(),
            arrived_at: SystemTime::now(),
        };
        st.mds
            .replies
            .entry(message_id.into())
            .or_default()
            .push(reply);
    });
    Ok(json!({
        "Description": "",
        "MessageId": message_id,
        "ReplyId": reply_id,
        "ReplyStatus": "Queued",
    }))
}

/// Records the failure and drops the message: the agent has said it cannot handle it.
fn fail_message(shared: &Shared, body: &Value) -> Result<Value, Response> {
    let message_id = required(body, "MessageId", 16)?;
    let failure_type = body["FailureType"].as_str().unwrap_or_default();
    if !FAILURE_TYPES.contains(&failure_type) {
        let msg = format!("FailureType {failure_type:?} must be one of {FAILURE_TYPES:?}");
        return Err(Response::aws_error(400, "ValidationException", &msg));
    }
    shared.update(|st| {
        let record = FailRecord {
            message_id: message_id.into(),
            failure_type: failure_type.into(),
        };
        st.mds.fails.push(record);
        st.mds.events.push((message_id.into(), "fail"));
        st.mds.remove(message_id);
    });
    Ok(json!({}))
}
