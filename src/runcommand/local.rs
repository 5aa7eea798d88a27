//! `ssm-lite run-document`: the engine with a sink that keeps replies in memory.

use super::{Engine, EngineConfig, Offer, OutgoingReply, ReplySink, Transport};
use crate::state::StateDir;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Collects every reply of a local run, in order.
#[derive(Default)]
pub struct MemorySink {
    replies: Mutex<Vec<(String, bool)>>,
}

impl MemorySink {
    pub fn replies(&self) -> Vec<(String, bool)> {
        self.replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ReplySink for MemorySink {
    fn accepted(&self, _message_id: &str, receipt: String) {
        self.replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((receipt, false));
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
        self.replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((reply.payload, reply.terminal));
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
        .unwrap_or_else(|| format!("{{\"error\":\"no final reply ({offer:?})\"}}"))
}

/// `ssm-lite run-document`: runs a document file (or a whole send-command payload) and prints
/// the final reply. Returns whether the document succeeded.
pub fn run_document_cli(args: &crate::cli::RunDocumentArgs) -> Result<bool, String> {
    use crate::config::Config;
    use serde_json::{Map, Value, json};
    let config = Config::load(args.config.as_deref()).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| format!("cannot read document {}: {e}", args.file.display()))?;
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| format!("document {} is not valid JSON: {e}", args.file.display()))?;
    let parameters: Map<String, Value> = match &args.parameters {
        None => Map::new(),
        Some(p) => serde_json::from_str(p)
            .map_err(|e| format!("--parameters is not a JSON object: {e}"))?,
    };
    let command_id = crate::random::uuid_v4();
    let is_payload = doc
        .as_object()
        .is_some_and(|o| super::payload::get_ci(o, "DocumentContent").is_some());
    let mut payload = if is_payload {
        doc
    } else {
        json!({ "DocumentContent": doc })
    };
    if let Some(obj) = payload.as_object_mut() {
        obj.insert("CommandId".into(), Value::String(command_id.clone()));
        if !parameters.is_empty() {
            obj.insert("Parameters".into(), Value::Object(parameters));
        }
    }
    let temp = args
        .state_dir
        .is_none()
        .then(|| std::env::temp_dir().join(format!("ssm-lite-run-{command_id}")));
    let root = args
        .state_dir
        .clone()
        .or_else(|| temp.clone())
        .expect("one of the two is set");
    let dir = StateDir::open(&root, "local").map_err(|e| e.to_string())?;
    let cfg = EngineConfig::from_config(&config, Vec::new());
    let reply = run_payload(cfg, dir, &command_id, &payload.to_string());
    if let Some(t) = temp {
        let _ = std::fs::remove_dir_all(t);
    }
    let value: Value = serde_json::from_str(&reply).unwrap_or(Value::String(reply));
    println!(
        "{}",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    );
    Ok(value["documentStatus"] == "Success")
}
