//! `ssm-lite run-document`: the engine with a sink that keeps replies in memory.

use super::{Engine, EngineConfig, Offer, OutgoingReply, ReplySink, Transport};
use crate::state::StateDir;
use crate::sync::lock;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Collects every reply of a local run, in order.
#[derive(Default)]
pub struct MemorySink {
    replies: Mutex<Vec<(String, bool)>>,
}

impl MemorySink {
    pub fn replies(&self) -> Vec<(String, bool)> {
        lock(&self.replies).clone()
    }
}

impl ReplySink for MemorySink {
    fn accepted(&self, _message_id: &str, receipt: String) {
        lock(&self.replies).push((receipt, false));
    }
    fn spool(&self, message_id: &str, payload: String, terminal: bool) -> OutgoingReply {
        OutgoingReply {
            message_id: message_id.into(),
            reply_id: crate::random::uuid_v4(),
            payload,
            terminal,
            stored: None,
        }
    }
    fn send(&self, reply: OutgoingReply) {
        if let Some(stored) = &reply.stored {
            stored.release(); // delivered: the caller has it
        }
        lock(&self.replies).push((reply.payload, reply.terminal));
    }
    fn has_terminal_reply(&self, _message_id: &str) -> bool {
        false
    }
}

/// Runs one send-command payload to its end and returns the terminal reply payload.
pub fn run_payload(cfg: EngineConfig, dir: StateDir, command_id: &str, payload: &str) -> String {
    let sink = Arc::new(MemorySink::default());
    let engine = Engine::start(cfg, dir, vec![(Transport::Local, sink.clone())]);
    let message_id = format!("aws.ssm.{command_id}.local");
    let offer = engine.offer(Transport::Local, &message_id, payload);
    if offer == Offer::Accepted {
        while !engine.wait_idle(Duration::from_secs(3600)) {}
    }
    engine.shutdown(Duration::ZERO);
    let replies = sink.replies();
    replies
        .into_iter()
        .rev()
        .find(|(_, terminal)| *terminal)
        .map(|(p, _)| p)
        .unwrap_or_else(|| no_final_reply(&offer))
}

/// The JSON printed instead of a final reply, saying why there is none.
fn no_final_reply(offer: &Offer) -> String {
    let why = match offer {
        Offer::Accepted => "the command ended without one",
        Offer::Duplicate { .. } => "the command id was seen before",
        Offer::Full => "the engine's queue is full",
        Offer::Rejected => "the payload or document is invalid",
        Offer::Closed => "the engine is shutting down",
    };
    serde_json::json!({ "error": format!("no final reply: {why}") }).to_string()
}
