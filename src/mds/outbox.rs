//! Everything the agent sends to ec2messages besides polls — replies, acks, failures — goes
//! through one ordered queue drained by one thread. Order is what upstream gets wrong (§9 items
//! 2–3): here a message's ack precedes every reply for it (a message the poller took is held as
//! unacknowledged until the engine decides, and the first reply made for it queues the ack ahead
//! of itself), and a command's terminal reply is always its last. Replies are spooled on disk
//! first and re-sent with the same ReplyId until the service takes them, across outages and
//! restarts; only an answer in [`PERMANENT_ERRORS`] or the 48-hour age limit removes one unsent.

use super::client::MdsClient;
use crate::aws::jsonrpc::AwsError;
use crate::runcommand::{OutgoingReply, ReplySink};
use crate::state::spool::{ReplySpool, SpoolEntry};
use crate::sync::{lock, wait, wait_until};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Spooled replies older than this are dropped unsent: the service has long given up on them.
const MAX_REPLY_AGE_SECS: u64 = 48 * 3600;
/// The longest pause between two attempts, so that an item the service refused goes out within
/// this (plus one call) of the service taking it again.
const RETRY_CAP: Duration = Duration::from_secs(20);

/// ec2messages error codes after which re-sending the same request can never succeed; anything
/// else (credentials, signatures, a proxy's 407, authorization, throttling, 5xx, no answer) keeps
/// the item queued. Each with the reason:
/// - `InvalidMessageIdException`: the service no longer knows the message (it expired, or was
///   acknowledged or failed already), so nothing can be said about it any more;
/// - `UnsupportedMessageOperationException`: the message does not take this operation;
/// - `ValidationException`, `SerializationException`: the request itself (e.g. this reply's
///   payload) is invalid, and re-sending it unchanged gets the same answer.
pub const PERMANENT_ERRORS: [&str; 4] = [
    "InvalidMessageIdException",
    "UnsupportedMessageOperationException",
    "ValidationException",
    "SerializationException",
];

/// Whether `e` says the service will never take this request (see [`PERMANENT_ERRORS`]).
fn is_permanent(e: &AwsError) -> bool {
    matches!(e, AwsError::Service { status: 400..=499, code, .. }
        if PERMANENT_ERRORS.contains(&code.as_str()))
}

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
    /// Messages taken from a poll and not acknowledged yet: the first reply for one queues its
    /// ack ahead of itself.
    unacked: HashSet<String>,
}

impl Queue {
    /// Queues `reply`, preceded by its message's ack when that is still owed.
    fn push_reply(&mut self, reply: OutgoingReply) {
        if self.unacked.remove(&reply.message_id) {
            self.items.push_back(Item::Ack(reply.message_id.clone()));
        }
        self.items.push_back(Item::Reply(reply));
    }
}

pub struct Outbox {
    spool: ReplySpool,
    /// Which channel carries Run Command: MDS replies say whether MGS could be opened.
    channel: crate::health::ChannelHandle,
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Outbox {
    /// Opens the spool and queues what an earlier run left unsent, oldest first.
    pub fn open(
        spool: ReplySpool,
        leftovers: Vec<SpoolEntry>,
        channel: crate::health::ChannelHandle,
    ) -> Arc<Outbox> {
        let now = crate::timefmt::unix_now();
        let mut q = Queue::default();
        for entry in leftovers {
            if now.saturating_sub(entry.reply.created_at) > MAX_REPLY_AGE_SECS {
                log::warn!(
                    "reply {} for {} is older than 48 hours; dropping it unsent",
                    entry.reply.reply_id,
                    entry.reply.message_id
                );
                let _ = entry.remove();
                continue;
            }
            q.items
                .push_back(Item::Reply(OutgoingReply::from_spool(entry)));
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

    /// A message was taken from a poll and is about to be offered: its ack is owed.
    pub fn received(&self, message_id: &str) {
        lock(&self.queue).unacked.insert(message_id.to_owned());
    }

    /// The message will not be answered now (the agent is stopping): no ack; it is redelivered.
    pub fn forget(&self, message_id: &str) {
        lock(&self.queue).unacked.remove(message_id);
    }

    /// Acknowledges a message (ahead of any reply made for it later).
    pub fn ack(&self, message_id: &str) {
        let mut q = lock(&self.queue);
        q.unacked.remove(message_id);
        q.items.push_back(Item::Ack(message_id.to_owned()));
        drop(q);
        self.changed.notify_all();
    }

    pub fn fail(&self, message_id: &str) {
        self.push(Item::Fail(message_id.to_owned()));
    }

    /// Sends `payload` again as a new reply (a duplicate delivery of a finished command).
    pub fn resend(&self, message_id: &str, payload: String) {
        let reply = self.spool(message_id, payload, false);
        self.send(reply);
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
                    q = wait(&self.changed, q);
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
                            "ec2messages: {} accepted after {failures} refused attempt(s)",
                            describe(&item)
                        );
                    }
                    failures = 0;
                    self.done(&item);
                }
                Err(e) if is_permanent(&e) => {
                    log::error!(
                        "ec2messages refused {} for good: {e}; the service will never take it, removing it",
                        describe(&item)
                    );
                    failures = 0;
                    self.forget_item(&item);
                }
                Err(e) => {
                    failures += 1;
                    let delay = super::backoff(failures, RETRY_CAP);
                    if failures == 1 {
                        log::warn!(
                            "ec2messages: cannot send {} ({e}); keeping it and retrying (at most {} s apart)",
                            describe(&item),
                            RETRY_CAP.as_secs()
                        );
                    } else {
                        log::debug!(
                            "ec2messages: {} refused again ({e}); next try in {} ms",
                            describe(&item),
                            delay.as_millis()
                        );
                    }
                    lock(&self.queue).items.push_front(item);
                    if !self.pause(delay) {
                        return;
                    }
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
            if Instant::now() >= wake {
                return true;
            }
            q = wait_until(&self.changed, q, wake).0;
        }
    }

    /// The service took `item`.
    fn done(&self, item: &Item) {
        match item {
            Item::Reply(r) => {
                log::info!(
                    "reply accepted by ec2messages for {} ({})",
                    r.message_id,
                    if r.terminal { "final" } else { "progress" }
                );
                self.unspool(r);
            }
            Item::Ack(id) => log::debug!("acknowledged {id}"),
            Item::Fail(id) => log::info!("reported {id} as failed to the service"),
        }
    }

    /// The service will never take `item` (already logged why).
    fn forget_item(&self, item: &Item) {
        if let Item::Reply(r) = item {
            self.unspool(r);
        }
    }

    fn unspool(&self, r: &OutgoingReply) {
        if let Some(stored) = &r.stored {
            stored.release();
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
        q.unacked.remove(message_id);
        q.items.push_back(Item::Ack(message_id.to_owned()));
        q.items.push_back(Item::Reply(reply));
        drop(q);
        self.changed.notify_all();
    }

    fn spool(&self, message_id: &str, payload: String, terminal: bool) -> OutgoingReply {
        OutgoingReply::spooled(&self.spool, message_id, payload, terminal)
    }

    fn send(&self, reply: OutgoingReply) {
        lock(&self.queue).push_reply(reply);
        self.changed.notify_all();
    }

    fn has_terminal_reply(&self, message_id: &str) -> bool {
        self.spool.terminal_reply_for(message_id).is_some()
    }

    fn able_to_open_mgs_connection(&self) -> Option<bool> {
        Some(self.channel.get() == crate::health::Channel::SsmMessages)
    }
}
