//! Run Command: the one engine every transport (ec2messages today, MGS next) and the
//! `run-document` CLI share. A transport offers messages and carries replies back through a
//! [`ReplySink`]; everything in between — parsing, queueing, running, reporting — happens here.

pub(crate) mod cloudwatch;
pub(crate) mod documents;
mod download;
pub(crate) mod engine;
pub mod local;
pub(crate) mod output;
pub(crate) mod package;
pub(crate) mod parameters;
pub mod payload;
pub(crate) mod record;
pub(crate) mod reply;
mod rundocument;
pub(crate) mod s3output;
pub(crate) mod sources;
mod spooled;
mod steps;

pub use engine::{Engine, EngineConfig, Offer};

/// Which channel a command arrived on, and so where its replies go. Kept in the command record so
/// that a command recovered after a restart answers on the channel it came from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum Transport {
    /// ec2messages.
    #[default]
    Mds,
    /// ssmmessages control channel.
    Mgs,
    /// `ssm-lite run-document`.
    Local,
    /// A State Manager association run, started by the association scheduler.
    Association,
}

/// A reply on its way out: spooled (when the sink keeps a spool), not yet handed to the sender.
#[derive(Debug)]
pub struct OutgoingReply {
    pub message_id: String,
    /// Unique per reply; re-sends of the same reply keep it (the service dedupes on it).
    pub reply_id: String,
    pub payload: String,
    pub terminal: bool,
    /// Where the reply is kept until the service takes it.
    pub stored: Option<Stored>,
}

/// The durable home of a reply not yet taken by the service.
#[derive(Debug, Clone)]
pub enum Stored {
    /// An entry of the transport's reply spool.
    Spool(crate::state::spool::SpoolEntry),
    /// The final reply kept in its command record (`final_reply`), so that one flush of the
    /// record makes both the command's end and its reply durable.
    Record(std::path::PathBuf),
}

impl Stored {
    /// The service took the reply (or will never take it): it need not be kept any more.
    pub fn release(&self) {
        let done = match self {
            Stored::Spool(entry) => entry.remove(),
            Stored::Record(path) => record::CommandRecord::mark_final_accepted(path),
        };
        if let Err(e) = done {
            log::error!("{e}");
        }
    }
}

/// Where a transport takes replies. Calls for one command arrive in the order they must be
/// delivered; the receipt first, the terminal reply last.
pub trait ReplySink: Send + Sync {
    /// The command was stored and queued: send the receipt reply (and the transport's ack).
    fn accepted(&self, message_id: &str, receipt: String);
    /// Stores a reply. Terminal replies must be durable when this returns.
    fn spool(&self, message_id: &str, payload: String, terminal: bool) -> OutgoingReply;
    /// Releases a stored reply to the sender.
    fn send(&self, reply: OutgoingReply);
    /// Whether a terminal reply for `message_id` is stored and not yet delivered (recovery).
    fn has_terminal_reply(&self, message_id: &str) -> bool;
    /// The longest reply payload (by [`reply::encoded_len`]) this transport can carry for
    /// `message_id`; the reply builder cuts output to fit it. `None`: no limit.
    fn max_encoded_len(&self, _message_id: &str) -> Option<usize> {
        None
    }
    /// `additionalInfo.ableToOpenMGSConnection` for this transport's replies (MDS only).
    fn able_to_open_mgs_connection(&self) -> Option<bool> {
        None
    }
}
