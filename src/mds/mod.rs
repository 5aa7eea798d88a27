//! ec2messages (Message Delivery Service): long-polls `GetMessages`, dispatches each message by
//! topic to the Run Command engine, and carries acks, failures and replies back through the
//! ordered [`outbox::Outbox`]. It knows the wire, not processes.

pub mod client;
pub mod outbox;

use crate::aws::http::HttpError;
use crate::aws::jsonrpc::AwsError;
use crate::runcommand::payload::parse_cancel;
use crate::runcommand::reply::ReplyBuilder;
use crate::runcommand::{Engine, Offer, ReplySink, Transport};
use crate::shutdown::Shutdown;
use crate::sync::lock;
use client::{MdsClient, Message};
use outbox::Outbox;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Back-off before retry number `attempt` (1-based): 2^(attempt-1) × 1.0–1.5 s, capped.
pub fn backoff(attempt: u32, cap: Duration) -> Duration {
    crate::random::backoff(1000, attempt, cap)
}

/// A poll answered this fast with no messages means the service is not holding polls; waiting a
/// moment keeps the agent from spinning (upstream waits 2–2.5 s too).
const QUICK_POLL: Duration = Duration::from_secs(1);
/// An error after this long is the normal end of a long poll, not a fault (upstream: 10 s).
const LONG_POLL_END: Duration = Duration::from_secs(10);
const POLL_RETRY_CAP: Duration = Duration::from_secs(60);
/// How long ec2messages keeps polling after the control channel opened (upstream: 1 minute).
const MGS_GRACE: Duration = Duration::from_secs(60);
const MGS_RECHECK: Duration = Duration::from_secs(5);
/// Send-commands held while the engine's queue is full; beyond this many, further ones stay with
/// the service (unacknowledged) until there is room, which bounds the memory they take.
const BACKLOG_LIMIT: usize = 32;

pub struct Poller {
    pub client: MdsClient,
    /// While MGS carries Run Command, polling pauses (after upstream's one-minute grace).
    pub channel: crate::health::ChannelHandle,
    pub engine: Arc<Engine>,
    pub outbox: Arc<Outbox>,
    pub builder: ReplyBuilder,
    pub shutdown: Shutdown,
    pub backlog: Backlog,
}

impl Poller {
    /// The poll loop; returns when shutdown is triggered.
    pub fn run(&self) {
        log::info!("ec2messages: polling for commands");
        std::thread::scope(|s| {
            let admission = std::thread::Builder::new()
                .name("mds-admit".into())
                .spawn_scoped(s, || self.admit());
            if let Err(e) = admission {
                log::error!("ec2messages: cannot start the admission thread: {e}");
                return;
            }
            self.poll_loop();
            self.backlog.changed.notify_all();
        });
        log::info!("ec2messages: polling stopped");
    }

    fn poll_loop(&self) {
        let mut errors: u32 = 0;
        let mut mgs_since: Option<Instant> = None;
        while !self.shutdown.is_triggered() {
            if self.channel.get() == crate::health::Channel::SsmMessages {
                let since = *mgs_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= MGS_GRACE {
                    if since.elapsed() < MGS_GRACE + MGS_RECHECK {
                        log::info!(
                            "ec2messages: polling paused; Run Command arrives over ssmmessages"
                        );
                    }
                    self.shutdown.wait_timeout(MGS_RECHECK);
                    continue;
                }
            } else if mgs_since.take().is_some() {
                log::info!("ec2messages: polling again; ssmmessages is not available");
            }
            let started = Instant::now();
            match self.client.get_messages() {
                Ok(messages) => {
                    if errors > 0 {
                        log::info!(
                            "ec2messages: connection restored after {errors} failed poll(s)"
                        );
                    }
                    errors = 0;
                    let empty = messages.is_empty();
                    for m in messages {
                        self.process(m);
                    }
                    if empty && started.elapsed() < QUICK_POLL {
                        self.shutdown
                            .wait_timeout(Duration::from_millis(crate::random::between(
                                2000, 2499,
                            )));
                    }
                }
                Err(AwsError::Transport(HttpError::Timeout(_)))
                    if started.elapsed() >= LONG_POLL_END =>
                {
                    log::debug!("ec2messages: long poll ended without an answer; polling again");
                }
                Err(e) => {
                    errors += 1;
                    let delay = backoff(errors, POLL_RETRY_CAP);
                    if errors == 1 {
                        log::warn!("ec2messages: connection lost: {e}; retrying with back-off");
                    } else {
                        log::debug!(
                            "ec2messages: poll failed again ({e}); next try in {} ms",
                            delay.as_millis()
                        );
                    }
                    self.shutdown.wait_timeout(delay);
                }
            }
        }
    }

    fn process(&self, m: Message) {
        if !m.is_complete() {
            log::warn!(
                "ec2messages: ignoring a message without MessageId, Topic, Destination or CreatedDate"
            );
            return;
        }
        if m.topic.starts_with("aws.ssm.sendCommand") {
            self.send_command(&m);
        } else if m.topic.starts_with("aws.ssm.cancelCommand") {
            self.cancel_command(&m);
        } else {
            log::warn!(
                "ec2messages: message {} has unknown topic {:?}; reporting it failed",
                m.message_id,
                m.topic
            );
            self.outbox.fail(&m.message_id);
        }
    }

    /// Offers a send-command at once unless earlier ones wait for room; then it waits behind
    /// them, on the admission thread, so that the poll thread (and the cancels it brings) never
    /// waits for a full queue.
    fn send_command(&self, m: &Message) {
        let in_line = {
            let backlog = lock(&self.backlog.waiting);
            if backlog.iter().any(|w| w.message.message_id == m.message_id) {
                return; // redelivered while waiting for room: it is already in line
            }
            !backlog.is_empty()
        };
        // Only this thread adds to the backlog, so it is still empty if it was.
        if !in_line && self.offer(m) {
            return;
        }
        let mut backlog = lock(&self.backlog.waiting);
        if backlog.len() >= BACKLOG_LIMIT {
            // Not acknowledged: the service delivers it again after its visibility timeout.
            log::debug!(
                "command {}: the backlog is full; leaving it to the service",
                m.message_id
            );
            return;
        }
        log::info!(
            "command {}: all workers busy and the queue is full; waiting for room",
            m.message_id
        );
        backlog.push_back(Waiting {
            message: m.clone(),
            cancelled: false,
        });
        drop(backlog);
        self.backlog.changed.notify_all();
    }

    /// Offers one send-command to the engine; false when the queue is full.
    fn offer(&self, m: &Message) -> bool {
        self.outbox.received(&m.message_id);
        match self.engine.offer(Transport::Mds, &m.message_id, &m.payload) {
            // Accepted and Rejected replies queued the ack ahead of themselves.
            Offer::Accepted | Offer::Rejected => {}
            Offer::Closed => self.outbox.forget(&m.message_id),
            Offer::Full => {
                self.outbox.forget(&m.message_id); // owed again when it is offered again
                return false;
            }
            Offer::Duplicate { final_reply } => {
                log::info!(
                    "command {}: delivered again; not running it twice{}",
                    m.message_id,
                    if final_reply.is_some() {
                        " (re-sending its final reply)"
                    } else {
                        ""
                    }
                );
                self.outbox.ack(&m.message_id);
                if let Some(reply) = final_reply {
                    self.outbox.resend(&m.message_id, reply);
                }
            }
        }
        true
    }

    /// The admission thread: offers waiting send-commands in order as room appears.
    fn admit(&self) {
        while !self.shutdown.is_triggered() {
            let Some(head) = lock(&self.backlog.waiting).front().cloned() else {
                let q = lock(&self.backlog.waiting);
                if q.is_empty() {
                    let _ = self.backlog.changed.wait_timeout(q, Duration::from_secs(1));
                }
                continue;
            };
            if !self.offer(&head.message) {
                self.engine.wait_for_room(Duration::from_secs(1));
                continue;
            }
            let id = &head.message.message_id;
            let mut q = lock(&self.backlog.waiting);
            let cancelled = q.front().is_some_and(|w| w.cancelled);
            q.pop_front();
            drop(q);
            if cancelled {
                // Cancelled while it waited: now queued, it is reported Cancelled at once.
                self.engine.cancel(id);
            }
        }
    }

    /// Marks a send-command still waiting for room as cancelled; false when none waits.
    fn cancel_waiting(&self, target: &str) -> bool {
        let mut q = lock(&self.backlog.waiting);
        let Some(w) = q.iter_mut().find(|w| w.message.message_id == target) else {
            return false;
        };
        log::info!("command {target}: cancelled while waiting for room; it will not run");
        w.cancelled = true;
        true
    }

    fn cancel_command(&self, m: &Message) {
        match parse_cancel(&m.payload) {
            Ok(target) => {
                if !self.engine.cancel(&target) && !self.cancel_waiting(&target) {
                    log::info!(
                        "cancel {}: command {target} is not queued or running; nothing to cancel",
                        m.message_id
                    );
                }
                // Upstream answers the cancel message itself with a receipt reply and an ack.
                self.outbox.accepted(&m.message_id, self.builder.received());
            }
            Err(e) => {
                log::warn!("cancel {}: {e}; reporting it failed", m.message_id);
                self.outbox.fail(&m.message_id);
            }
        }
    }
}

/// Send-commands that found the engine's queue full, in arrival order.
#[derive(Default)]
pub struct Backlog {
    waiting: Mutex<VecDeque<Waiting>>,
    changed: Condvar,
}

#[derive(Clone)]
struct Waiting {
    message: Message,
    /// A cancel for it arrived while it waited.
    cancelled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let cap = Duration::from_secs(60);
        let first = backoff(1, cap);
        assert!(
            first >= Duration::from_millis(1000) && first <= Duration::from_millis(1500),
            "{first:?}"
        );
        let third = backoff(3, cap);
        assert!(
            third >= Duration::from_millis(4000) && third <= Duration::from_millis(6000),
            "{third:?}"
        );
        assert_eq!(backoff(30, cap), cap);
    }
}
