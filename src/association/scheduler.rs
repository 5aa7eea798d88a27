//! The association scheduler: one thread that polls ListInstanceAssociations, decides what is
//! due, runs it through the command engine (the same workers, records and crash recovery as Run
//! Command) and reports its status and compliance (docs/protocol.md §7).
//!
//! Runs go one at a time, as upstream's. What ran and when is kept in `associations/book.json`,
//! written before a run is handed to the engine, so that a restart neither runs an association
//! again before its schedule nor skips one whose time passed while the agent was down, even when
//! the service's `LastExecutionDate` lags.

use super::compliance;
use super::schedule::Schedule;
use super::service::{Association, AssociationService, ExecutionResult};
use super::status;
use crate::runcommand::sources::DocumentSource;
use crate::runcommand::{Engine, Offer, OutgoingReply, ReplySink, Transport};
use crate::state::{StateDir, StateError, write_atomic};
use crate::sync::{lock, wait_until};
use crate::timefmt::unix_now;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Upstream's `documentLevelTimeOutDurationHour`: a run with no final reply after this long is
/// reported Failed and forgotten.
const STUCK_AFTER_SECS: u64 = 2 * 3600;
const STUCK_TEXT: &str = "Association stuck at InProgress for longer than 2 hours";
/// A status the service did not take is tried again after this long.
const RETRY_REPORT: Duration = Duration::from_secs(30);
/// Associations handled at most (a bound on memory and on the book's size).
const MAX_ASSOCIATIONS: usize = 1000;

/// How the scheduler paces itself.
#[derive(Debug, Clone)]
pub struct Settings {
    pub instance_id: String,
    /// `Ssm.AssociationFrequencyMinutes`.
    pub frequency: Duration,
    /// Upstream's 30 s: the most random delay before each poll, and the wait before the second
    /// poll when the first found nothing. `SSM_LITE_ASSOCIATION_JITTER_SECS` sets it (tests,
    /// demos).
    pub jitter: Duration,
    /// Where the book lives (`associations/`), and the engine's command records: a run the
    /// book holds but the engine never stored (the agent stopped in between) is forgotten at
    /// start, and due again.
    pub state: StateDir,
}

impl Settings {
    fn book_path(&self) -> PathBuf {
        self.state.associations_dir().join("book.json")
    }
}

/// Where the engine's replies for association runs and refresh requests meet the scheduler
/// thread: it is the engine's [`ReplySink`] for [`Transport::Association`], and what
/// `aws:refreshAssociation` signals.
#[derive(Default)]
pub struct Mailbox {
    inbox: Mutex<Inbox>,
    changed: Condvar,
}

#[derive(Default)]
struct Inbox {
    replies: VecDeque<OutgoingReply>,
    /// `Some(ids)`: run these now (empty: all).
    refresh: Option<Vec<String>>,
    closed: bool,
}

impl Mailbox {
    /// Asks for the named associations (all when `ids` is empty) to run now.
    pub fn refresh(&self, ids: Vec<String>) {
        let mut inbox = lock(&self.inbox);
        match (&mut inbox.refresh, ids.is_empty()) {
            (Some(pending), false) if !pending.is_empty() => pending.extend(ids),
            (Some(_), false) => {}
            (slot, _) => *slot = Some(ids),
        }
        drop(inbox);
        self.changed.notify_all();
    }

    /// Ends the scheduler's wait for good (agent shutdown).
    pub fn close(&self) {
        lock(&self.inbox).closed = true;
        self.changed.notify_all();
    }

    /// Waits until something arrives, `deadline` passes or the mailbox closes.
    fn wait(&self, deadline: Instant) -> (Vec<OutgoingReply>, Option<Vec<String>>, bool) {
        let mut inbox = lock(&self.inbox);
        while inbox.replies.is_empty() && inbox.refresh.is_none() && !inbox.closed {
            let (guard, timed_out) = wait_until(&self.changed, inbox, deadline);
            inbox = guard;
            if timed_out {
                break;
            }
        }
        (
            inbox.replies.drain(..).collect(),
            inbox.refresh.take(),
            inbox.closed,
        )
    }
}

impl ReplySink for Mailbox {
    fn accepted(&self, _message_id: &str, _receipt: String) {}

    /// Progress replies need no durable home (the next one supersedes them); a final reply
    /// comes here only when its command record could not be written, and is kept in memory.
    fn spool(&self, message_id: &str, payload: String, terminal: bool) -> OutgoingReply {
        OutgoingReply {
            message_id: message_id.to_owned(),
            reply_id: crate::random::uuid_v4(),
            payload,
            terminal,
            stored: None,
        }
    }

    fn send(&self, reply: OutgoingReply) {
        lock(&self.inbox).replies.push_back(reply);
        self.changed.notify_all();
    }

    fn has_terminal_reply(&self, _message_id: &str) -> bool {
        false
    }
}

/// A run handed to the engine, until its final status is reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Run {
    association_id: String,
    document_name: String,
    document_version: String,
    steps: usize,
    started: u64,
}

/// What the scheduler keeps on disk.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Book {
    /// Association id → unix seconds of its last run's start here.
    last_runs: BTreeMap<String, u64>,
    /// CommandId → the run, while its final status is not reported.
    runs: BTreeMap<String, Run>,
    compliance: Vec<compliance::Item>,
    compliance_hash: String,
}

impl Book {
    fn load(path: &std::path::Path) -> Book {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                log::error!(
                    "{}: {e}; starting with no record of earlier association runs",
                    path.display()
                );
                Book::default()
            }),
            Err(_) => Book::default(),
        }
    }
}

impl Book {
    /// Drops the runs whose command record does not exist: the engine never took them, so no
    /// reply will come; their association is due again.
    fn forget_unstored(&mut self, state: &StateDir) {
        let unstored: Vec<String> = (self.runs.keys())
            .filter(|id| !state.command_record(id).exists())
            .cloned()
            .collect();
        for id in unstored {
            if let Some(run) = self.runs.remove(&id) {
                log::warn!(
                    "association {}: run {id} was never handed to the engine; it is due again",
                    run.association_id
                );
                if self.last_runs.get(&run.association_id) == Some(&run.started) {
                    self.last_runs.remove(&run.association_id);
                }
            }
        }
    }
}

/// An association as listed, with its parsed schedule and when it runs next.
struct Planned {
    association: Association,
    schedule: Schedule,
    next: Option<u64>,
}

pub struct Scheduler {
    service: Arc<dyn AssociationService>,
    documents: Arc<dyn DocumentSource>,
    engine: Arc<Engine>,
    mailbox: Arc<Mailbox>,
    settings: Settings,
    book: Book,
    planned: Vec<Planned>,
    /// Documents by association id, with the checksum they were fetched for.
    documents_cache: HashMap<String, (String, Value)>,
    /// Final statuses the service has not taken yet, with the reply that carries them.
    unreported: VecDeque<(String, ExecutionResult, OutgoingReply)>,
    /// (association id, checksum) pairs whose bad schedule was reported already.
    refused: HashSet<(String, String)>,
    /// Associations with an inventory step that ran since start, the latest first (upstream
    /// keeps this in memory too).
    inventory_runs: Vec<String>,
}

impl Scheduler {
    pub fn new(
        service: Arc<dyn AssociationService>,
        documents: Arc<dyn DocumentSource>,
        engine: Arc<Engine>,
        mailbox: Arc<Mailbox>,
        settings: Settings,
    ) -> Result<Scheduler, StateError> {
        crate::state::ensure_private_dir(&settings.state.associations_dir())?;
        let mut book = Book::load(&settings.book_path());
        book.forget_unstored(&settings.state);
        Ok(Scheduler {
            service,
            documents,
            engine,
            mailbox,
            settings,
            book,
            planned: Vec::new(),
            documents_cache: HashMap::new(),
            unreported: VecDeque::new(),
            refused: HashSet::new(),
            inventory_runs: Vec::new(),
        })
    }

    /// The thread's body: returns when the mailbox closes.
    pub fn run(mut self) {
        let jitter = self.settings.jitter;
        let mut next_poll = Instant::now() + random_up_to(jitter);
        let mut first_poll = true;
        loop {
            let deadline = self.next_wake(next_poll);
            let (replies, refresh, closed) = self.mailbox.wait(deadline);
            if closed {
                return;
            }
            for reply in replies {
                self.take_reply(reply);
            }
            self.report_unreported();
            if let Some(ids) = &refresh {
                // A refresh may name an association created since the last poll.
                next_poll = Instant::now();
                log::info!("associations: refresh requested for {}", names(ids));
            }
            if Instant::now() >= next_poll {
                // Upstream asks once more 30 s after a first poll that found nothing: tags may
                // not have reached the service yet at boot.
                let found = self.poll();
                let again_soon = first_poll && found == 0;
                first_poll = false;
                next_poll = Instant::now()
                    + match again_soon {
                        true => jitter,
                        false => self.settings.frequency + random_up_to(jitter),
                    };
            }
            if let Some(ids) = refresh {
                self.run_now(&ids);
            }
            self.forget_stuck_runs();
            self.start_due();
        }
    }

    /// The earliest of the next poll, the next due run and a pending status retry.
    fn next_wake(&self, next_poll: Instant) -> Instant {
        let now_secs = unix_now();
        let mut wake = next_poll;
        if self.book.runs.is_empty() {
            for next in self.planned.iter().filter_map(|p| p.next) {
                let wait = Duration::from_secs(next.saturating_sub(now_secs));
                wake = wake.min(Instant::now() + wait);
            }
        }
        if !self.unreported.is_empty() {
            wake = wake.min(Instant::now() + RETRY_REPORT);
        }
        wake
    }

    /// Lists the associations and plans each; the number found.
    fn poll(&mut self) -> usize {
        let listed = match self.service.list(&self.settings.instance_id) {
            Ok(listed) => listed,
            Err(e) => {
                log::warn!("associations: cannot list them: {e}; trying again at the next poll");
                return self.planned.len();
            }
        };
        let now = unix_now();
        let mut planned = Vec::with_capacity(listed.len().min(MAX_ASSOCIATIONS));
        for association in listed.into_iter().take(MAX_ASSOCIATIONS) {
            match Schedule::parse(&association.schedule_expression) {
                Ok(schedule) => {
                    let ours = self.book.last_runs.get(&association.id).copied();
                    let next = next_run(&association, &schedule, ours, now);
                    log::info!("association {}: {}", association.id, when(next, now));
                    planned.push(Planned {
                        association,
                        schedule,
                        next,
                    });
                }
                Err(e) => self.refuse_schedule(&association, &e.to_string()),
            }
        }
        let listed: HashSet<&str> = planned.iter().map(|p| p.association.id.as_str()).collect();
        self.book
            .compliance
            .retain(|i| listed.contains(i.association_id.as_str()));
        self.documents_cache
            .retain(|id, _| listed.contains(id.as_str()));
        log::info!("associations: {} listed", planned.len());
        self.planned = planned;
        self.planned.len()
    }

    /// Upstream `ParseExpression`'s failure: Failed with `InvalidExpression`, once per version.
    fn refuse_schedule(&mut self, a: &Association, error: &str) {
        if !self.refused.insert((a.id.clone(), a.checksum.clone())) {
            return;
        }
        let text = format!(
            "Encountered error while parsing expression for association {}",
            a.id
        );
        log::warn!("{text}, {error}");
        self.send_status(&a.id, &status::now("Failed", "InvalidExpression", text));
        self.record_compliance(&a.id, &a.name, &a.document_version, "Failed");
    }

    /// `aws:refreshAssociation`: the named associations (all for none) are due now.
    fn run_now(&mut self, ids: &[String]) {
        let now = unix_now();
        for p in &mut self.planned {
            if ids.is_empty() || ids.contains(&p.association.id) {
                p.next = Some(now);
            }
        }
    }

    /// Starts the first due association when none is running.
    fn start_due(&mut self) {
        if !self.book.runs.is_empty() {
            return;
        }
        let now = unix_now();
        let Some(index) = self
            .planned
            .iter()
            .position(|p| p.next.is_some_and(|n| n <= now))
        else {
            return;
        };
        let association = self.planned[index].association.clone();
        let started = self.start(&association, now);
        let p = &mut self.planned[index];
        p.next = match started {
            true => p.schedule.next_after(now),
            false => None,
        };
    }

    /// Pending, the document, InProgress, then the engine; false when it could not start.
    fn start(&mut self, a: &Association, now: u64) -> bool {
        log::info!("association {} ({}): running", a.id, a.name);
        self.send_status(&a.id, &status::now("Pending", "", status::PENDING.into()));
        let content = match self.document(a) {
            Ok(content) => content,
            Err(e) => {
                let text = format!(
                    "Encountered error while loading association {} contents, {e}",
                    a.id
                );
                return self.refuse_run(a, "ListAssocError", text);
            }
        };
        let steps = step_count(&content);
        let run_id = run_id(crate::timefmt::unix_millis(std::time::SystemTime::now()));
        let command_id = format!("{}_{run_id}", a.id);
        let inventory = self.inventory_associations(a, &content);
        let payload = payload(a, content, &command_id, &run_id, &inventory);
        self.book.last_runs.insert(a.id.clone(), now);
        let run = Run {
            association_id: a.id.clone(),
            document_name: a.name.clone(),
            document_version: a.document_version.clone(),
            steps,
            started: now,
        };
        self.book.runs.insert(command_id.clone(), run);
        if let Err(e) = self.save() {
            self.book.runs.remove(&command_id);
            return self.refuse_run(a, "SubmitAssocError", format!("{e}"));
        }
        self.send_status(
            &a.id,
            &status::now("InProgress", "", status::EXECUTING.into()),
        );
        let message_id = format!("aws.ssm.{command_id}.{}", self.settings.instance_id);
        self.offer(&message_id, &payload.to_string(), a, &command_id)
    }

    /// Offers the run, waiting for room in the queue; a refusal arrives as its final reply.
    fn offer(
        &mut self,
        message_id: &str,
        payload: &str,
        a: &Association,
        command_id: &str,
    ) -> bool {
        loop {
            match self
                .engine
                .offer(Transport::Association, message_id, payload)
            {
                Offer::Accepted | Offer::Rejected => return true,
                // Never for a fresh RunId; were it so, no reply would ever come for it.
                Offer::Duplicate { .. } => {
                    self.book.runs.remove(command_id);
                    let text = format!("run {command_id} exists already");
                    return self.refuse_run(a, "SubmitAssocError", text);
                }
                Offer::Full => {
                    if !self.engine.wait_for_room(Duration::from_secs(60)) {
                        log::warn!("association {}: the engine is stopping", a.id);
                        return true;
                    }
                }
                // Stopping: the run is in the book and reported as stuck after a restart if
                // the engine never took it.
                Offer::Closed => return true,
            }
        }
    }

    fn refuse_run(&mut self, a: &Association, code: &str, text: String) -> bool {
        log::warn!("association {}: {text}", a.id);
        self.send_status(&a.id, &status::now("Failed", code, text));
        self.record_compliance(&a.id, &a.name, &a.document_version, "Failed");
        false
    }

    /// Upstream `updatePluginAssociationInstances` for the inventory plugin: this association,
    /// then the others with an inventory step that ran here and are still listed. Empty when
    /// the document has no inventory step.
    fn inventory_associations(&mut self, a: &Association, content: &Value) -> Vec<String> {
        if !uses_plugin(content, crate::inventory::PLUGIN) {
            return Vec::new();
        }
        let listed = |id: &String| self.planned.iter().any(|p| p.association.id == *id);
        let others = self
            .inventory_runs
            .iter()
            .filter(|id| **id != a.id && listed(id));
        let ids: Vec<String> = std::iter::once(a.id.clone())
            .chain(others.cloned())
            .collect();
        self.inventory_runs.clone_from(&ids);
        ids
    }

    /// The association's document, from the cache while its checksum holds.
    fn document(&mut self, a: &Association) -> Result<Value, String> {
        if let Some((checksum, content)) = self.documents_cache.get(&a.id)
            && *checksum == a.checksum
        {
            return Ok(content.clone());
        }
        let version = Some(a.document_version.as_str()).filter(|v| !v.is_empty());
        let remote = self.documents.get_document(&a.name, version)?;
        let content =
            crate::document::content_from_text(&remote.content).map_err(|e| e.to_string())?;
        self.documents_cache
            .insert(a.id.clone(), (a.checksum.clone(), content.clone()));
        Ok(content)
    }

    /// A reply of the engine: progress goes out at once; a final status is reported (and kept
    /// until the service takes it), then compliance.
    fn take_reply(&mut self, reply: OutgoingReply) {
        let command_id = crate::runcommand::payload::command_id_of(&reply.message_id).to_owned();
        let Some(run) = self.book.runs.get(&command_id).cloned() else {
            log::warn!(
                "associations: a reply for {command_id}, which is no run of this agent; dropped"
            );
            release(&reply);
            return;
        };
        let result = status::from_reply(&reply.payload, reply.terminal, run.steps);
        if !reply.terminal {
            self.send_status(&run.association_id, &result);
            return;
        }
        log::info!(
            "association {}: {} ({})",
            run.association_id,
            result.status,
            result.summary.trim_end()
        );
        self.unreported.push_back((command_id, result, reply));
    }

    /// Sends the final statuses in order; the first the service refuses waits for a retry.
    fn report_unreported(&mut self) {
        while let Some((command_id, result, reply)) = self.unreported.pop_front() {
            let Some(run) = self.book.runs.get(&command_id).cloned() else {
                release(&reply);
                continue;
            };
            if !self.send_status(&run.association_id, &result) {
                self.unreported.push_front((command_id, result, reply));
                return;
            }
            // The book (written by `record_compliance`) is the run's home from here on: the
            // command record lets go only after it, so a crash in between sends the status
            // again rather than never.
            self.book.runs.remove(&command_id);
            self.record_compliance(
                &run.association_id,
                &run.document_name,
                &run.document_version,
                &result.status,
            );
            release(&reply);
        }
    }

    /// Runs the engine never finished (lost with a disk, or given up on) are reported Failed
    /// once they are older than upstream's document timeout.
    fn forget_stuck_runs(&mut self) {
        let now = unix_now();
        let stuck: Vec<(String, Run)> = (self.book.runs.iter())
            .filter(|(_, r)| now.saturating_sub(r.started) > STUCK_AFTER_SECS)
            .filter(|(id, _)| !self.unreported.iter().any(|(c, _, _)| c == *id))
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect();
        for (command_id, run) in stuck {
            log::error!("association {}: {STUCK_TEXT}", run.association_id);
            let result = status::now("Failed", "StuckAtInProgress", STUCK_TEXT.into());
            self.send_status(&run.association_id, &result);
            self.book.runs.remove(&command_id);
            self.record_compliance(
                &run.association_id,
                &run.document_name,
                &run.document_version,
                "Failed",
            );
        }
    }

    /// One UpdateInstanceAssociationStatus; false (logged) when the service did not take it.
    fn send_status(&self, association_id: &str, result: &ExecutionResult) -> bool {
        let instance = &self.settings.instance_id;
        match self.service.update_status(association_id, instance, result) {
            Ok(()) => true,
            Err(e) => {
                log::warn!(
                    "association {association_id}: status {} not taken: {e}",
                    result.status
                );
                false
            }
        }
    }

    /// Records a final status in the compliance items, writes the book, then sends the items
    /// (their hash alone when unchanged).
    fn record_compliance(&mut self, id: &str, name: &str, version: &str, final_status: &str) {
        let now_ms = crate::timefmt::unix_millis(std::time::SystemTime::now());
        let Some(item) = compliance::item(id, name, version, final_status, now_ms) else {
            self.save_or_log();
            return;
        };
        compliance::record(&mut self.book.compliance, item);
        self.save_or_log();
        let (body, hash) = compliance::body(
            &self.settings.instance_id,
            &self.book.compliance,
            &self.book.compliance_hash,
            now_ms,
        );
        match self.service.put_compliance(&body) {
            Ok(()) if hash != self.book.compliance_hash => {
                self.book.compliance_hash = hash;
                self.save_or_log();
            }
            Ok(()) => {}
            Err(e) => log::warn!("association compliance not taken: {e}"),
        }
    }

    fn save_or_log(&self) {
        if let Err(e) = self.save() {
            log::error!("{e}");
        }
    }

    fn save(&self) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(&self.book).unwrap_or_default();
        write_atomic(&self.settings.book_path(), &bytes, true)
    }
}

/// When a planned run comes, for the log.
fn when(next: Option<u64>, now: u64) -> String {
    match next {
        None => "not due again".into(),
        Some(t) if t <= now => "due now".into(),
        Some(t) => format!(
            "next run at {}",
            crate::timefmt::iso8601_ms(std::time::UNIX_EPOCH + Duration::from_secs(t))
        ),
    }
}

fn release(reply: &OutgoingReply) {
    if let Some(stored) = &reply.stored {
        stored.release();
    }
}

fn names(ids: &[String]) -> String {
    match ids.is_empty() {
        true => "all associations".into(),
        false => ids.join(", "),
    }
}

fn random_up_to(limit: Duration) -> Duration {
    Duration::from_millis(crate::random::between(0, limit.as_millis() as u64))
}

/// Upstream's RunId: the start time as `2006-01-02T15-04-05.000Z`, the dot made a dash (a
/// CommandId holds no `.`); milliseconds keep two runs of one second apart.
fn run_id(now_ms: u64) -> String {
    crate::timefmt::iso8601_ms(std::time::UNIX_EPOCH + Duration::from_millis(now_ms))
        .replace([':', '.'], "-")
}

/// When `a` runs next (unix seconds), `None` for never (upstream `SetNextScheduledDate`, with
/// this agent's own record `ours` of its last start):
/// - a Pending association runs now, unless it ran here since the service's last execution
///   (the service has not caught up with that run's report yet);
/// - a run-once association runs if it never ran (service status Associated or Pending);
/// - a scheduled one runs at once if it never ran (at its first fire time with
///   `ApplyOnlyAtCronInterval`), else at the schedule's next time after its last run.
pub fn next_run(a: &Association, schedule: &Schedule, ours: Option<u64>, now: u64) -> Option<u64> {
    let service_last = a.last_execution;
    let ran_here_since = ours.is_some_and(|o| service_last.is_none_or(|s| o > s));
    let last = match (service_last, ours) {
        (Some(s), Some(o)) => Some(s.max(o)),
        (s, o) => s.or(o),
    };
    if a.detailed_status == "Pending" && !ran_here_since {
        return Some(now);
    }
    if *schedule == Schedule::Once {
        let never = last.is_none() && matches!(a.detailed_status.as_str(), "Associated" | "");
        return never.then_some(now);
    }
    match last {
        None if a.apply_only_at_cron_interval => schedule.next_after(now),
        None => Some(now),
        Some(last) => schedule.next_after(last),
    }
}

/// Upstream `ParseDocumentForPayload`: the association's parameters (lists of strings) typed by
/// the document's definitions: String and StringMap take the first value, StringList the list;
/// others are passed as their first value for the document's own validation.
fn payload(
    a: &Association,
    content: Value,
    command_id: &str,
    run_id: &str,
    inventory_associations: &[String],
) -> Value {
    let definitions = content["parameters"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut parameters = Map::new();
    for (name, values) in &a.parameters {
        let Some(definition) = definitions.get(name) else {
            continue;
        };
        let list = values.as_array().cloned().unwrap_or_default();
        let value = match definition["type"].as_str() {
            Some("StringList") => Value::Array(list),
            _ => match list.into_iter().next() {
                Some(first) => first,
                None => continue,
            },
        };
        parameters.insert(name.clone(), value);
    }
    let (bucket, prefix) = match &a.s3_output {
        Some(s3) => (s3.bucket.as_str(), s3.key_prefix.as_str()),
        None => ("", ""),
    };
    json!({
        "DocumentContent": content,
        "DocumentName": a.name,
        "CommandId": command_id,
        "Parameters": parameters,
        "OutputS3BucketName": bucket,
        "OutputS3KeyPrefix": prefix,
        "AssociationId": a.id,
        "RunId": run_id,
        "InventoryAssociations": inventory_associations,
    })
}

/// Whether a step of the document (`mainSteps` of 2.x, `runtimeConfig` of 1.x) is `plugin`.
fn uses_plugin(content: &Value, plugin: &str) -> bool {
    let mut steps = content["mainSteps"].as_array().into_iter().flatten();
    steps.any(|s| s["action"] == plugin)
        || content["runtimeConfig"]
            .as_object()
            .is_some_and(|c| c.contains_key(plugin))
}

/// Steps of a document: `mainSteps` (2.x) or `runtimeConfig` entries (1.x).
fn step_count(content: &Value) -> usize {
    match (
        content["mainSteps"].as_array(),
        content["runtimeConfig"].as_object(),
    ) {
        (Some(steps), _) => steps.len(),
        (None, Some(plugins)) => plugins.len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn association(schedule: &str, last: Option<u64>, status: &str) -> Association {
        Association::from_json(&json!({
            "AssociationId": "a-1", "Name": "AWS-RunShellScript", "ScheduleExpression": schedule,
            "DetailedStatus": status,
        }))
        .map(|a| Association {
            last_execution: last,
            ..a
        })
        .unwrap()
    }

    #[test]
    fn a_scheduled_association_runs_at_once_then_on_its_rate() {
        let rate = Schedule::Rate(1800);
        let a = association("rate(30 minutes)", None, "Associated");
        assert_eq!(next_run(&a, &rate, None, 1000), Some(1000));
        let a = association("rate(30 minutes)", Some(1000), "Success");
        assert_eq!(next_run(&a, &rate, None, 1100), Some(2800));
        // Our own later start counts though the service still shows the older one.
        assert_eq!(next_run(&a, &rate, Some(2000), 2100), Some(3800));
    }

    #[test]
    fn pending_runs_now_unless_it_already_ran_here_since() {
        let rate = Schedule::Rate(1800);
        let a = association("rate(30 minutes)", Some(1000), "Pending");
        assert_eq!(next_run(&a, &rate, None, 1100), Some(1100));
        assert_eq!(next_run(&a, &rate, Some(1050), 1100), Some(2850));
    }

    #[test]
    fn a_run_once_association_runs_once() {
        let a = association("", None, "Associated");
        assert_eq!(next_run(&a, &Schedule::Once, None, 5), Some(5));
        assert_eq!(next_run(&a, &Schedule::Once, Some(4), 5), None);
        let done = association("", Some(3), "Success");
        assert_eq!(next_run(&done, &Schedule::Once, None, 5), None);
    }

    #[test]
    fn a_run_the_engine_never_stored_is_forgotten_and_due_again() {
        let t = crate::state::testdir::TestDir::new("book");
        let state = StateDir::open(t.path(), "i-1").unwrap();
        let run = |started| Run {
            association_id: "a-1".into(),
            document_name: "d".into(),
            document_version: "1".into(),
            steps: 1,
            started,
        };
        let mut book = Book::default();
        book.runs.insert("a-1_stored".into(), run(5));
        book.runs.insert("a-1_lost".into(), run(9));
        book.last_runs.insert("a-1".into(), 9);
        std::fs::write(state.command_record("a-1_stored"), "{}").unwrap();
        book.forget_unstored(&state);
        assert_eq!(book.runs.keys().collect::<Vec<_>>(), ["a-1_stored"]);
        assert!(
            book.last_runs.is_empty(),
            "the lost run's start no longer counts"
        );
    }

    #[test]
    fn parameters_take_the_documents_types() {
        let a = Association {
            parameters: serde_json::from_value(json!({
                "commands": ["echo a", "echo b"], "workingDirectory": ["/tmp"],
                "unknown": ["x"], "empty": []
            }))
            .unwrap(),
            ..association("", None, "Associated")
        };
        let content = json!({"parameters": {
            "commands": {"type": "StringList"}, "workingDirectory": {"type": "String"},
            "empty": {"type": "String"}
        }, "mainSteps": [{}, {}]});
        let p = payload(&a, content.clone(), "a-1_r", "r", &[]);
        assert_eq!(
            p["Parameters"],
            json!({"commands": ["echo a", "echo b"], "workingDirectory": "/tmp"})
        );
        assert_eq!(p["AssociationId"], "a-1");
        assert_eq!(step_count(&content), 2);
        assert!(!run_id(1764765000123).contains(['.', ':']));
        assert_ne!(run_id(1764765000123), run_id(1764765000124));
    }
}
