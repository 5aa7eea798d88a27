//! The on-disk record of one command: what arrived, how far it got, what each step reported.
//! It is written before the message is acknowledged and after every step, which is what lets a
//! restarted agent finish, resume or report every command exactly once.

use super::Transport;
use super::reply::PluginResult;
use crate::exec::Supervised;
use crate::state::{StateDir, StateError, write_atomic};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Accepted, waiting for a worker.
    Queued,
    /// A worker owns it; `running` says whether a step process was live.
    Running,
    /// A step exited 194 and asked for a reboot; the step runs again after the restart.
    RebootPending,
    /// `aws:updateSsmAgent` swapped the binary; the step runs again in the restarted agent.
    RestartPending,
    /// The final reply was made; the record stays for duplicate detection until retention ends.
    Done,
}

/// The step that had a process running, so a restart can report it, or follow its script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningStep {
    pub index: usize,
    pub process_group: Option<i32>,
    pub started: String,
    /// The supervisor of the script the step started last: a restarted agent follows it to its
    /// end. Absent in records written before supervisors, and for steps run in the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<Supervised>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// Records written before MGS existed have no transport: they came over ec2messages.
    #[serde(default)]
    pub transport: Transport,
    pub message_id: String,
    pub command_id: String,
    /// The send-command payload as received (parsed again on restart).
    pub payload: String,
    /// Seconds since the epoch.
    pub received_at: u64,
    pub phase: Phase,
    pub next_step: usize,
    pub running: Option<RunningStep>,
    pub results: Vec<PluginResult>,
    /// A step ended the document early (168, 169, onFailure, onSuccess).
    pub exit_condition: bool,
    /// How many times the agent started on this command (crash-loop guard).
    pub run_count: u32,
    /// The terminal reply, re-sent when the service delivers the message again.
    pub final_reply: Option<String>,
    /// The ReplyId `final_reply` was first sent with; an agent restarted before the service took
    /// it sends it again under the same id.
    #[serde(default)]
    pub final_reply_id: Option<String>,
    /// The service took the final reply (written without a flush: losing it only means one
    /// more send of the same ReplyId, which the service ignores).
    #[serde(default)]
    pub final_accepted: bool,
}

impl CommandRecord {
    pub fn new(
        transport: Transport,
        message_id: &str,
        command_id: &str,
        payload: &str,
    ) -> CommandRecord {
        CommandRecord {
            transport,
            message_id: message_id.into(),
            command_id: command_id.into(),
            payload: payload.into(),
            received_at: now_secs(),
            phase: Phase::Queued,
            next_step: 0,
            running: None,
            results: Vec::new(),
            exit_condition: false,
            run_count: 0,
            final_reply: None,
            final_reply_id: None,
            final_accepted: false,
        }
    }

    /// Writes the record; `durable` flushes it to the device first.
    pub fn save(&self, dir: &StateDir, durable: bool) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(self).expect("records always serialise");
        write_atomic(&dir.command_record(&self.command_id), &bytes, durable)
    }

    /// Notes in the record at `path` that the service took its final reply.
    pub fn mark_final_accepted(path: &Path) -> Result<(), StateError> {
        let Some(mut rec) = CommandRecord::load(path) else {
            return Ok(()); // pruned meanwhile: nothing left to note
        };
        rec.final_accepted = true;
        let bytes = serde_json::to_vec(&rec).expect("records always serialise");
        write_atomic(path, &bytes, false)
    }

    pub fn load(path: &Path) -> Option<CommandRecord> {
        let bytes = std::fs::read(path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                log::error!(
                    "command record {} is unreadable ({e}); leaving it aside",
                    path.display()
                );
                None
            }
        }
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
