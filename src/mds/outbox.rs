//! Everything the agent sends to ec2messages besides polls — replies, acks, failures — goes
//! through one ordered queue drained by one thread. Order is what upstream gets wrong (§9 items
//! 2–3): here the receipt reply precedes the ack, the ack precedes step replies, and a command's
//! terminal reply is always its last. Replies are spooled on disk first and re-sent with the same
//! ReplyId until the service takes them, across outages and restarts.

use super::client::MdsClient;
use crate::runcommand::{OutgoingReply, ReplySink};
use crate::state::spool::{ReplySpool, SpoolEntry, SpooledReply};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Spooled replies older than this are dropped unsent: the service has long given up on them.
const MAX_REPLY_AGE_SECS: u64 = 48 * 3600;
const RETRY_CAP: Duration = Duration::from_secs(60);

#[derive(Debug)]
enum Item {
    Reply(OutgoingReply),
    Ack(String),
    Fail(String),
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    /// Once set, the sender stops at this instant even with items left (they stay spooled).
    stop_at: Option<Instant>,
}

pub struct Outbox {
    spool: ReplySpool,
    /// Which channel carries Run Command: MDS replies say whether MGS could be opened.
    channel: crate::health::ChannelHandle,
    queue: Mutex<Queue>,
    changed: Condvar,
}

fn lock(m: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Outbox {
    /// Opens the spool and queues what an earlier run left unsent, oldest first.
    pub fn open(
        spool: ReplySpool,
        leftovers: Vec<SpoolEntry>,
        channel: crate::health::ChannelHandle,
    ) -> Arc<Outbox> {
        let now = crate::runcommand::record::now_secs();
        let mut q = Queue::default();
        for entry in leftovers {
            if now.saturating_sub(entry.reply.created_at) > MAX_REPLY_AGE_SECS {
                log::warn!(
                    "reply {} for {} is older than 48 hours; dropping it unsent",
                    entry.reply.reply_id,
                    entry.reply.message_id
                );
                let _ = spool.remove(&entry);
                continue;
            }
            q.items.push_back(Item::Reply(OutgoingReply {
                message_id: entry.reply.message_id.clone(),
                reply_id: entry.reply.reply_id.clone(),
                payload: entry.reply.payload.clone(),
                terminal: entry.reply.terminal,
                stored: Some(entry),
            }));
        }
        if !q.items.is_empty() {
            log::info!(
                "re-sending {} reply(ies) spooled by an earlier run",
                q.items.len()
            );
        }
        Arc::new(Outbox {
            spool,
            channel,
            queue: Mutex::new(q),
            changed: Condvar::new(),
        })
    }

    fn push(&self, item: Item) {
        lock(&self.queue).items.push_back(item);
        self.changed.notify_all();
    }

    pub fn ack(&self, message_id: &str) {
        self.push(Item::Ack(message_id.to_owned()));
    }

    pub fn fail(&self, message_id: &str) {
        self.push(Item::Fail(message_id.to_owned()));
    }

    /// Sends `payload` again as a new reply (a duplicate delivery of a finished command).
    pub fn resend(&self, message_id: &str, payload: String) {
        let reply = self.spool(message_id, payload, false);
        self.push(Item::Reply(reply));
    }

    /// True when nothing is waiting to be sent.
    pub fn is_empty(&self) -> bool {
        lock(&self.queue).items.is_empty()
    }

    /// Asks the sender to finish: it keeps sending until the queue is empty or `deadline`.
    pub fn close(&self, deadline: Instant) {
        lock(&self.queue).stop_at = Some(deadline);
        self.changed.notify_all();
    }

    /// The sender thread's loop: one item at a time, in order, retrying what may succeed later.
    pub fn run(&self, client: &MdsClient) {
        let mut failures: u32 = 0;
        loop {
            let item = {
                let mut q = lock(&self.queue);
                loop {
                    if q.stop_at.is_some_and(|t| Instant::now() >= t)
                        || (q.stop_at.is_some() && q.items.is_empty())
                    {
                        return;
                    }
                    if let Some(item) = q.items.pop_front() {
                        break item;
                    }
                    q = self.changed.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            };
            let result = match &item {
                Item::Reply(r) => client.send_reply(&r.message_id, &r.reply_id, &r.payload),
                Item::Ack(id) => client.acknowledge(id),
                Item::Fail(id) => client.fail_message(id),
            };
            match result {
                Ok(()) => {
                    if failures > 0 {
                        log::info!(
                            "ec2messages: sending works again after {failures} failed attempt(s)"
                        );
                    }
                    failures = 0;
                    self.done(&item);
                }
                Err(e) if e.is_retryable() => {
                    failures += 1;
                    if failures == 1 {
                        log::warn!(
                            "ec2messages: cannot send {} ({e}); will retry with back-off",
                            describe(&item)
                        );
                    }
                    lock(&self.queue).items.push_front(item);
                    if !self.pause(super::backoff(failures, RETRY_CAP)) {
                        return;
                    }
                }
                Err(e) => {
                    log::error!(
                        "ec2messages refused {} for good: {e}; dropping it",
                        describe(&item)
                    );
                    self.done(&item);
                }
            }
        }
    }

    /// Waits `delay` before a retry; false when `close` set a deadline that comes first.
    fn pause(&self, delay: Duration) -> bool {
        let wake = Instant::now() + delay;
        let mut q = lock(&self.queue);
        loop {
            if q.stop_at.is_some_and(|t| wake >= t) {
                return false;
            }
            let now = Instant::now();
            if now >= wake {
                return true;
            }
            q = self
                .changed
                .wait_timeout(q, wake - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn done(&self, item: &Item) {
        match item {
            Item::Reply(r) => {
                log::info!(
                    "reply sent for {} ({})",
                    r.message_id,
                    if r.terminal { "final" } else { "progress" }
                );
                if let Some(entry) = &r.stored {
                    if let Err(e) = self.spool.remove(entry) {
                        log::error!("{e}");
                    }
                }
            }
            Item::Ack(id) => log::debug!("acknowledged {id}"),
            Item::Fail(id) => log::info!("reported {id} as failed to the service"),
        }
    }
}

fn describe(item: &Item) -> String {
    match item {
        Item::Reply(r) => format!("reply {} for {}", r.reply_id, r.message_id),
        Item::Ack(id) => format!("acknowledgement of {id}"),
        Item::Fail(id) => format!("failure report for {id}"),
    }
}

impl ReplySink for Outbox {
    fn accepted(&self, message_id: &str, receipt: String) {
        let reply = self.spool(message_id, receipt, false);
        let mut q = lock(&self.queue);
        q.items.push_back(Item::Reply(reply));
        q.items.push_back(Item::Ack(message_id.to_owned()));
        drop(q);
        self.changed.notify_all();
    }

    fn spool(&self, message_id: &str, payload: String, terminal: bool) -> OutgoingReply {
        let record = SpooledReply {
            message_id: message_id.to_owned(),
            reply_id: crate::random::uuid_v4(),
            payload,
            terminal,
            created_at: crate::runcommand::record::now_secs(),
        };
        match self.spool.add(record.clone()) {
            Ok(entry) => OutgoingReply {
                message_id: record.message_id,
                reply_id: record.reply_id,
                payload: record.payload,
                terminal,
                stored: Some(entry),
            },
            Err(e) => {
                log::error!("reply for {message_id} kept in memory only: {e}");
                OutgoingReply {
                    message_id: record.message_id,
                    reply_id: record.reply_id,
                    payload: record.payload,
                    terminal,
                    stored: None,
                }
            }
        }
    }

    fn send(&self, reply: OutgoingReply) {
        self.push(Item::Reply(reply));
    }

    fn has_terminal_reply(&self, message_id: &str) -> bool {
        self.spool.terminal_reply_for(message_id).is_some()
    }

    fn able_to_open_mgs_connection(&self) -> Option<bool> {
        Some(self.channel.get() == crate::health::Channel::SsmMessages)
    }
}
