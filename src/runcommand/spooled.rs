//! The spooling half of every transport's reply queue (ec2messages' outbox, MGS jobs): a reply is
//! written to the transport's spool before it is queued, and what an earlier run left there comes
//! back as the same reply. The transports keep only how one reply is sent and what an ack or a
//! permanent refusal looks like.

use super::{OutgoingReply, Stored};
use crate::state::spool::{ReplySpool, SpoolEntry, SpooledReply};

impl OutgoingReply {
    /// A new reply for `message_id`, spooled first. If the disk refuses it the reply still goes
    /// out, from memory only (logged): losing it on a restart beats never sending it.
    pub fn spooled(
        spool: &ReplySpool,
        message_id: &str,
        payload: String,
        terminal: bool,
    ) -> OutgoingReply {
        let record = SpooledReply {
            message_id: message_id.to_owned(),
            reply_id: crate::random::uuid_v4(),
            payload,
            terminal,
            created_at: crate::timefmt::unix_now(),
        };
        let stored = spool
            .add(record.clone())
            .map_err(|e| log::error!("reply for {message_id} kept in memory only: {e}"))
            .ok()
            .map(Stored::Spool);
        OutgoingReply {
            message_id: record.message_id,
            reply_id: record.reply_id,
            payload: record.payload,
            terminal,
            stored,
        }
    }

    /// A reply an earlier run spooled and did not get taken, with its original ReplyId (the
    /// service dedupes re-sends on it).
    pub fn from_spool(entry: SpoolEntry) -> OutgoingReply {
        OutgoingReply {
            message_id: entry.reply.message_id.clone(),
            reply_id: entry.reply.reply_id.clone(),
            payload: entry.reply.payload.clone(),
            terminal: entry.reply.terminal,
            stored: Some(Stored::Spool(entry)),
        }
    }
}
