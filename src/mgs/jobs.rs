//! Run Command over the control channel (docs/protocol.md §4.5.1–§4.5.2): `agent_job` in, `agent_job_ack`
//! and `agent_job_reply` out, through the same engine as ec2messages.
//!
//! Replies of one job go out one at a time, in order: the next only after the service has
//! acknowledged the previous one (`agent_job_reply_ack`), so the final reply can never overtake a
//! step reply (upstream sends them concurrently, §9 item 2). Every reply is spooled until
//! acknowledged and re-sent, with the same MessageId, after a silence, a reconnect or a restart.

use super::control::{ControlHandler, ControlSender};
use super::message::{
    AGENT_JOB, AGENT_JOB_ACK, AGENT_JOB_REPLY, AGENT_JOB_REPLY_ACK, AgentMessage, created_date_now,
};
use crate::runcommand::payload::{get_ci, parse_cancel};
use crate::runcommand::reply::ReplyBuilder;
use crate::runcommand::{Engine, Offer, OutgoingReply, ReplySink, Stored, Transport};
use crate::state::spool::{ReplySpool, SpoolEntry};
use crate::sync::lock;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Upstream drops replies whose content exceeds this (`ControlChannelAgentReplyPayloadSizeLimit`);
/// ssm-lite holds the whole encoded `agent_job_reply` frame to it, which keeps the content below
/// it too, and cuts output instead of dropping anything.
const MAX_REPLY_FRAME: usize = 120_000;
const SEND_COMMAND_TOPIC: &str = "aws.ssm.sendCommand";
/// An unacknowledged reply is sent again after this long.
const RESEND_AFTER: Duration = Duration::from_secs(5);

/// `agent_job_ack` status codes (§4.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    Successful,
    ClosedProcessor,
    ProcessorBufferFull,
    DuplicateCommand,
    AgentJobMessageParseError,
}

impl AckCode {
    fn code_and_name(self) -> (&'static str, &'static str) {
        match self {
            AckCode::Successful => ("200", "Successful"),
            AckCode::ClosedProcessor => ("51401", "ClosedProcessor"),
            AckCode::ProcessorBufferFull => ("51402", "ProcessorBufferFull"),
            AckCode::DuplicateCommand => ("51405", "DuplicateCommand"),
            AckCode::AgentJobMessageParseError => ("51408", "AgentJobMessageParseError"),
        }
    }
}

/// The `agent_job` being answered: what its ack must quote.
#[derive(Debug, Clone)]
struct Received {
    message_id: String,
    created_date: u64,
}

struct Pending {
    job_id: String,
    stored: Option<Stored>,
    frame: AgentMessage,
    sent_at: Option<Instant>,
}

impl From<OutgoingReply> for Pending {
    /// The `agent_job_reply` frame that carries `reply`, not sent yet.
    fn from(reply: OutgoingReply) -> Pending {
        Pending {
            frame: reply_frame(
                &reply.reply_id,
                &reply.message_id,
                &reply.payload,
                SEND_COMMAND_TOPIC,
            ),
            job_id: reply.message_id,
            stored: reply.stored,
            sent_at: None,
        }
    }
}

pub struct MgsJobs {
    engine: OnceLock<Arc<Engine>>,
    sender: ControlSender,
    spool: ReplySpool,
    builder: ReplyBuilder,
    received: Mutex<HashMap<String, Received>>,
    /// Unacknowledged replies by job, each queue in send order; only the head is in flight.
    queues: Mutex<BTreeMap<String, VecDeque<Pending>>>,
}

fn reply_frame(reply_id: &str, job_id: &str, content: &str, topic: &str) -> AgentMessage {
    let body = json!({ "schemaVersion": 1, "jobId": job_id, "content": content, "topic": topic });
    let mut m = AgentMessage::new(AGENT_JOB_REPLY, 0, 0, 0, body.to_string().into_bytes());
    m.message_id = reply_id.to_owned();
    m
}

impl MgsJobs {
    /// Loads replies an earlier run left unacknowledged; they go out once connected.
    pub fn new(
        sender: ControlSender,
        spool: ReplySpool,
        leftovers: Vec<SpoolEntry>,
        builder: ReplyBuilder,
    ) -> Arc<MgsJobs> {
        let jobs = MgsJobs {
            engine: OnceLock::new(),
            sender,
            spool,
            builder,
            received: Mutex::default(),
            queues: Mutex::default(),
        };
        for entry in leftovers {
            let pending = Pending::from(OutgoingReply::from_spool(entry));
            lock(&jobs.queues)
                .entry(pending.job_id.clone())
                .or_default()
                .push_back(pending);
        }
        Arc::new(jobs)
    }

    /// The reply builder with the size limit of `job_id`'s replies.
    fn builder(&self, job_id: &str) -> ReplyBuilder {
        ReplyBuilder {
            max_encoded_len: self.max_encoded_len(job_id),
            ..self.builder.clone()
        }
    }

    /// The engine is made after its sinks; it is handed over here once.
    pub fn attach(&self, engine: Arc<Engine>) {
        let _ = self.engine.set(engine);
    }

    fn ack(&self, job_id: &str, received: &Received, code: AckCode) {
        let (status, name) = code.code_and_name();
        let created = crate::timefmt::iso8601_ms(
            std::time::UNIX_EPOCH + Duration::from_millis(received.created_date),
        );
        let body = json!({
            "jobId": job_id,
            "acknowledgedMessageId": received.message_id,
            "createdDate": created,
            "statusCode": status,
            "errorMessage": name,
        });
        self.sender.send(&AgentMessage::new(
            AGENT_JOB_ACK,
            0,
            0,
            0,
            body.to_string().into_bytes(),
        ));
    }

    /// An untracked reply (receipts), sent once.
    fn reply_now(&self, job_id: &str, content: &str, topic: &str) {
        self.sender.send(&reply_frame(
            &crate::random::uuid_v4(),
            job_id,
            content,
            topic,
        ));
    }

    fn handle_job(&self, message: &AgentMessage) {
        let received = Received {
            message_id: message.message_id.clone(),
            created_date: message.created_date,
        };
        let job: Value = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
        let field = |k: &str| {
            job.as_object()
                .and_then(|o| get_ci(o, k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let (Some(job_id), Some(content)) = (field("JobId"), field("Content")) else {
            log::warn!(
                "control channel: agent_job {} has no JobId or Content; refusing it",
                message.message_id
            );
            self.ack(
                &field("JobId").unwrap_or_default(),
                &received,
                AckCode::AgentJobMessageParseError,
            );
            return;
        };
        let topic = field("Topic").unwrap_or_default();
        let Some(engine) = self.engine.get() else {
            return self.ack(&job_id, &received, AckCode::ClosedProcessor);
        };
        if topic.starts_with("aws.ssm.cancelCommand") {
            return self.cancel(engine, &job_id, &content, &received);
        }
        if !topic.starts_with(SEND_COMMAND_TOPIC) {
            log::warn!("control channel: job {job_id} has unknown topic {topic:?}");
            self.ack(&job_id, &received, AckCode::AgentJobMessageParseError);
            // A final reply: spooled and re-sent until acknowledged, like the engine's.
            let failed = self
                .builder(&job_id)
                .rejected(&format!("unknown topic {topic:?}"));
            let ticket = self.spool(&job_id, failed, true);
            return self.send(ticket);
        }
        lock(&self.received).insert(job_id.clone(), received.clone());
        let code = match engine.offer(Transport::Mgs, &job_id, &content) {
            Offer::Accepted | Offer::Rejected => None, // the sink acked it (200, or 51408 with the Failed reply)
            Offer::Duplicate { .. } => Some(AckCode::DuplicateCommand),
            Offer::Full => Some(AckCode::ProcessorBufferFull),
            Offer::Closed => Some(AckCode::ClosedProcessor),
        };
        if let Some(code) = code {
            lock(&self.received).remove(&job_id);
            log::info!(
                "command {job_id}: answered {:?} on the control channel",
                code
            );
            self.ack(&job_id, &received, code);
        }
    }

    fn cancel(&self, engine: &Engine, job_id: &str, content: &str, received: &Received) {
        match parse_cancel(content) {
            Ok(target) => {
                if !engine.cancel(&target) {
                    log::info!("cancel {job_id}: command {target} is not queued or running");
                }
                self.ack(job_id, received, AckCode::Successful);
                self.reply_now(job_id, &self.builder.received(), "aws.ssm.cancelCommand");
            }
            Err(e) => {
                log::warn!("cancel {job_id}: {e}");
                self.ack(job_id, received, AckCode::AgentJobMessageParseError);
            }
        }
    }

    fn reply_acked(&self, message: &AgentMessage) {
        let v: Value = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
        let field = |k: &str| {
            v.as_object()
                .and_then(|o| get_ci(o, k))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let (job_id, acked) = (field("jobId"), field("acknowledgedMessageId"));
        let mut queues = lock(&self.queues);
        let Some(queue) = queues.get_mut(&job_id) else {
            return;
        };
        if queue.front().is_none_or(|p| p.frame.message_id != acked) {
            return;
        }
        let done = queue.pop_front().expect("front exists");
        if let Some(stored) = &done.stored {
            stored.release();
        }
        log::info!("reply acknowledged for {job_id}");
        match queue.front_mut() {
            Some(next) => self.transmit(next),
            None => {
                queues.remove(&job_id);
            }
        }
    }

    fn transmit(&self, pending: &mut Pending) {
        pending.frame.created_date = created_date_now();
        pending.sent_at = Some(Instant::now());
        self.sender.send(&pending.frame);
    }
}

impl ReplySink for MgsJobs {
    fn accepted(&self, job_id: &str, receipt: String) {
        if let Some(received) = lock(&self.received).remove(job_id) {
            self.ack(job_id, &received, AckCode::Successful);
        }
        self.reply_now(job_id, &receipt, SEND_COMMAND_TOPIC);
    }

    fn spool(&self, job_id: &str, payload: String, terminal: bool) -> OutgoingReply {
        OutgoingReply::spooled(&self.spool, job_id, payload, terminal)
    }

    fn send(&self, reply: OutgoingReply) {
        if let Some(received) = lock(&self.received).remove(&reply.message_id) {
            // Only a rejected job reaches here unacknowledged: upstream's parse-error answer.
            self.ack(
                &reply.message_id,
                &received,
                AckCode::AgentJobMessageParseError,
            );
        }
        let mut pending = Pending::from(reply);
        let size = pending.frame.encode().len();
        if size > MAX_REPLY_FRAME {
            // Only a reply not made by this version's builder (spooled by an older one) gets here;
            // sent anyway: dropping it would leave the command unfinished for good.
            log::warn!(
                "reply for {} is {size} bytes encoded, over the service's {MAX_REPLY_FRAME}; sending it anyway",
                pending.job_id
            );
        }
        let mut queues = lock(&self.queues);
        let queue = queues.entry(pending.job_id.clone()).or_default();
        if queue.is_empty() {
            self.transmit(&mut pending);
        }
        queue.push_back(pending);
    }

    fn has_terminal_reply(&self, job_id: &str) -> bool {
        self.spool.terminal_reply_for(job_id).is_some()
    }

    /// What is left of [`MAX_REPLY_FRAME`] for the content once the frame around it is counted.
    fn max_encoded_len(&self, job_id: &str) -> Option<usize> {
        let empty = reply_frame(&crate::random::uuid_v4(), job_id, "", SEND_COMMAND_TOPIC);
        // The empty content's `""` is counted in both.
        Some((MAX_REPLY_FRAME + 2).saturating_sub(empty.encode().len()))
    }
}

impl ControlHandler for MgsJobs {
    fn connected(&self, _sender: &ControlSender) {
        for queue in lock(&self.queues).values_mut() {
            if let Some(head) = queue.front_mut() {
                self.transmit(head);
            }
        }
    }

    fn message(&self, message: AgentMessage, _sender: &ControlSender) {
        match message.message_type.as_str() {
            AGENT_JOB => self.handle_job(&message),
            AGENT_JOB_REPLY_ACK => self.reply_acked(&message),
            other => log::debug!("control channel: ignoring {other}"),
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        lock(&self.queues)
            .values()
            .filter_map(|q| q.front()?.sent_at)
            .min()
            .map(|t| t + RESEND_AFTER)
    }

    fn tick(&self, _sender: &ControlSender) {
        let now = Instant::now();
        for queue in lock(&self.queues).values_mut() {
            if let Some(head) = queue.front_mut()
                && head
                    .sent_at
                    .is_none_or(|t| now.saturating_duration_since(t) >= RESEND_AFTER)
            {
                log::info!(
                    "reply for {} not acknowledged yet; sending it again",
                    head.job_id
                );
                self.transmit(head);
            }
        }
    }
}
