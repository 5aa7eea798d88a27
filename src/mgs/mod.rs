//! ssmmessages (Message Gateway Service): the control channel that brings Run Command jobs and
//! sessions, and the websockets both kinds of channel use. It knows the wire, not processes.

pub mod control;
pub mod jobs;
pub mod message;
pub mod rest;
pub mod websocket;

use control::{ControlHandler, ControlSender};
use message::{AGENT_JOB, AGENT_JOB_REPLY_ACK, AgentMessage};
use std::sync::Arc;
use std::time::Instant;

/// Routes control-channel messages: jobs to Run Command, everything else to sessions.
pub struct Dispatcher {
    pub jobs: Arc<jobs::MgsJobs>,
    pub sessions: Option<Arc<dyn ControlHandler>>,
}

impl ControlHandler for Dispatcher {
    fn connected(&self, sender: &ControlSender) {
        self.jobs.connected(sender);
        if let Some(s) = &self.sessions {
            s.connected(sender);
        }
    }

    fn message(&self, message: AgentMessage, sender: &ControlSender) {
        match (message.message_type.as_str(), &self.sessions) {
            (AGENT_JOB | AGENT_JOB_REPLY_ACK, _) => self.jobs.message(message, sender),
            (_, Some(sessions)) => sessions.message(message, sender),
            (other, None) => log::debug!("control channel: ignoring {other}"),
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let s = self.sessions.as_ref().and_then(|s| s.next_deadline());
        [self.jobs.next_deadline(), s].into_iter().flatten().min()
    }

    fn tick(&self, sender: &ControlSender) {
        self.jobs.tick(sender);
        if let Some(s) = &self.sessions {
            s.tick(sender);
        }
    }
}
