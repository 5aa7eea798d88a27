//! The reply spool: every reply is written here before it is sent and removed once the service
//! has accepted it, so replies survive outages and restarts and go out in the order they were made.

use super::{StateError, err, remove_file, write_atomic};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// One reply as stored: the `SendReply` fields plus what the sender needs to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpooledReply {
    #[serde(rename = "MessageId")]
    pub message_id: String,
    #[serde(rename = "ReplyId")]
    pub reply_id: String,
    #[serde(rename = "Payload")]
    pub payload: String,
    /// The command's last reply (its final status).
    #[serde(rename = "Terminal")]
    pub terminal: bool,
    /// Seconds since the epoch when the reply was made (spool entries expire).
    #[serde(rename = "CreatedAt")]
    pub created_at: u64,
}

/// A spooled reply and the file that holds it.
#[derive(Debug, Clone)]
pub struct SpoolEntry {
    pub path: PathBuf,
    pub reply: SpooledReply,
}

impl SpoolEntry {
    /// Forgets a reply the service accepted (or refused for good).
    pub fn remove(&self) -> Result<(), StateError> {
        remove_file(&self.path)
    }
}

pub struct ReplySpool {
    dir: PathBuf,
    next_seq: AtomicU64,
}

impl ReplySpool {
    /// Opens the spool and returns what earlier runs left in it, oldest first. Unreadable entries
    /// are logged and removed: they can never be sent.
    pub fn open(dir: &Path) -> Result<(ReplySpool, Vec<SpoolEntry>), StateError> {
        let mut names: Vec<(u64, PathBuf)> = fs::read_dir(dir)
            .map_err(err("list", dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let seq = name.split('_').next()?.parse::<u64>().ok()?;
                name.ends_with(".json").then(|| (seq, e.path()))
            })
            .collect();
        names.sort();
        let next = names.last().map_or(0, |(s, _)| s + 1);
        let mut entries = Vec::with_capacity(names.len());
        for (_, path) in names {
            match fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                Some(reply) => entries.push(SpoolEntry { path, reply }),
                None => {
                    log::error!("reply spool: {} is unreadable; removing it", path.display());
                    remove_file(&path)?;
                }
            }
        }
        Ok((
            ReplySpool {
                dir: dir.to_owned(),
                next_seq: AtomicU64::new(next),
            },
            entries,
        ))
    }

    /// Stores a reply. Terminal replies are flushed to the device before this returns (those the
    /// engine makes live in their command record instead, flushed there); the others are only
    /// informational and skip the flush (a process crash still keeps them).
    pub fn add(&self, reply: SpooledReply) -> Result<SpoolEntry, StateError> {
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        let path = self.dir.join(format!("{seq:020}_{}.json", reply.reply_id));
        let bytes = serde_json::to_vec(&reply).expect("a reply always serialises");
        write_atomic(&path, &bytes, reply.terminal)?;
        Ok(SpoolEntry { path, reply })
    }

    /// The terminal reply of `message_id` still waiting in the spool, if any (crash recovery).
    pub fn terminal_reply_for(&self, message_id: &str) -> Option<SpooledReply> {
        let (_, entries) = ReplySpool::open(&self.dir).ok()?;
        entries
            .into_iter()
            .map(|e| e.reply)
            .find(|r| r.terminal && r.message_id == message_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testdir::TestDir;

    fn reply(id: &str, terminal: bool) -> SpooledReply {
        SpooledReply {
            message_id: "aws.ssm.c.i-1".into(),
            reply_id: id.into(),
            payload: "{}".into(),
            terminal,
            created_at: 1,
        }
    }

    #[test]
    fn entries_come_back_in_order_across_reopen() {
        let t = TestDir::new("spool");
        let (spool, left) = ReplySpool::open(t.path()).unwrap();
        assert!(left.is_empty());
        let a = spool.add(reply("r-a", false)).unwrap();
        spool.add(reply("r-b", false)).unwrap();
        spool.add(reply("r-c", true)).unwrap();
        a.remove().unwrap();
        drop(spool);
        let (spool, left) = ReplySpool::open(t.path()).unwrap();
        let ids: Vec<_> = left.iter().map(|e| e.reply.reply_id.as_str()).collect();
        assert_eq!(ids, ["r-b", "r-c"]);
        let d = spool.add(reply("r-d", false)).unwrap();
        assert!(d.path > left[1].path, "new entries sort after old ones");
        assert_eq!(
            spool.terminal_reply_for("aws.ssm.c.i-1").unwrap().reply_id,
            "r-c"
        );
    }

    #[test]
    fn unreadable_entries_are_dropped() {
        let t = TestDir::new("spool");
        fs::write(t.path().join("00000000000000000007_x.json"), b"{not json").unwrap();
        let (spool, left) = ReplySpool::open(t.path()).unwrap();
        assert!(left.is_empty());
        assert!(
            spool
                .add(reply("r", false))
                .unwrap()
                .path
                .ends_with("00000000000000000008_r.json")
        );
    }
}
