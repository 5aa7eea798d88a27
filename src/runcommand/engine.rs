//! The engine: accepts jobs from any transport, persists them, runs them on a fixed pool of
//! worker threads, handles cancel, crash recovery and shutdown, and hands replies to a sink.

use super::output::{Destination, Destinations, OutputCleanup};
use super::payload::{AssociationRun, PayloadError, SendCommand, command_id_of};
use super::record::{CommandRecord, Phase, RunningStep, now_secs};
use super::reply::{AgentInfo, PluginResult, ReplyBuilder, Status, document_status};
use super::sources::Sources;
use super::steps::{self, EXIT_FAILURE_AND_STOP, EXIT_SUCCESS_AND_STOP, StepEnv};
use super::{OutgoingReply, ReplySink, Stored, Transport};
use crate::document::parameter_store::{ParameterSource, Resolver};
use crate::document::{self, Document, DocumentError, ExitAction, References, Step, Verdict};
use crate::exec::{StopReason, StopToken};
use crate::state::{StateDir, disk_usage, safe_file_name};
use crate::sync::{lock, wait, wait_until};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Commands older than this are not resumed after a restart (upstream: 48 hours).
const MAX_RESUME_AGE_SECS: u64 = 48 * 3600;
/// How often finished records and their output are pruned at most.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// How often an idle engine writes again the finished records the disk refused (a full disk).
const RETRY_UNSAVED: Duration = Duration::from_secs(10);

pub struct EngineConfig {
    /// `Mds.CommandWorkersLimit`: steps running at once.
    pub workers: usize,
    /// `Mds.CommandWorkerBufferLimit`: accepted commands waiting for a worker.
    pub queue_limit: usize,
    /// `Mds.CommandRetryLimit`: how many agent starts a command may see before it is given up.
    pub retry_limit: u32,
    /// `Ssm.AssociationRetryLimit`: the same for association runs.
    pub association_retry_limit: u32,
    /// `Ssm.RunCommandLogsRetentionDurationHours`.
    pub retention: Duration,
    /// `Ssm.AssociationLogsRetentionDurationHours`, for association runs.
    pub association_retention: Duration,
    /// `Ssm.RunCommandLogsMaxStepOutputMiB`, in bytes: each step's stdout and stderr file.
    pub max_step_output: u64,
    /// `Ssm.RunCommandLogsMaxTotalMiB`, in bytes: every finished command's files together.
    pub max_total_output: u64,
    /// `Ssm.PluginLocalOutputCleanup`: when a step's stdout/stderr files are removed.
    pub output_cleanup: OutputCleanup,
    /// `Ssm.OrchestrationDirectoryCleanup`: a finished command whose status is listed loses its
    /// orchestration directory at once.
    pub remove_output_of: Vec<Status>,
    /// Added to every script's environment (AWS_SSM_INSTANCE_ID, AWS_SSM_REGION_NAME, …).
    pub env: Vec<(String, String)>,
    /// `additionalInfo.agent` of every reply.
    pub agent: AgentInfo,
    /// Run after a step exits 194 (upstream: `shutdown -r +1`).
    pub reboot_command: Vec<String>,
    /// Where `{{ssm:…}}` references are looked up before a command's first step.
    pub parameter_store: Arc<dyn ParameterSource + Send + Sync>,
    /// Where a command's output goes besides its local files (S3, CloudWatch Logs): each asked
    /// in turn which destinations a command wants.
    pub destinations: Vec<Arc<dyn Destinations>>,
    /// What plugins fetch while they run (SSM documents, S3 objects).
    pub sources: Sources,
}

impl EngineConfig {
    /// The engine settings of `config`, with the per-host environment for scripts.
    pub fn from_config(config: &crate::config::Config, env: Vec<(String, String)>) -> EngineConfig {
        EngineConfig {
            workers: config.mds.command_workers_limit,
            queue_limit: config.mds.command_worker_buffer_limit,
            retry_limit: config.mds.command_retry_limit,
            association_retry_limit: config.ssm.association_retry_limit,
            retention: Duration::from_secs(
                config.ssm.run_command_logs_retention_duration_hours * 3600,
            ),
            association_retention: Duration::from_secs(
                config.ssm.association_logs_retention_duration_hours * 3600,
            ),
            max_step_output: config.ssm.run_command_logs_max_step_output_mib << 20,
            max_total_output: config.ssm.run_command_logs_max_total_mib << 20,
            output_cleanup: OutputCleanup::from_setting(&config.ssm.plugin_local_output_cleanup),
            remove_output_of: match config.ssm.orchestration_directory_cleanup.as_str() {
                "clean-success" => vec![Status::Success],
                "clean-success-failed" => vec![Status::Success, Status::Failed],
                _ => Vec::new(),
            },
            env,
            agent: AgentInfo::from_config(config),
            reboot_command: reboot_command(),
            parameter_store: Arc::new(NoParameterStore(
                "this run makes no AWS calls; put the values in the document's parameters instead"
                    .into(),
            )),
            destinations: Vec::new(),
            sources: Sources::unavailable("this run makes no AWS calls"),
        }
    }
}

/// The Parameter Store of an engine that cannot call ssm, and why (`ssm-lite run-document`, or
/// an agent whose ssm endpoint is unusable).
pub struct NoParameterStore(pub String);

impl ParameterSource for NoParameterStore {
    fn get_parameters(&self, names: &[String]) -> Result<document::parameter_store::Found, String> {
        Err(format!(
            "Parameter Store references ({}) cannot be resolved: {}",
            names.join(", "),
            self.0
        ))
    }
}

/// `SSM_LITE_REBOOT_COMMAND` (split on spaces) replaces `shutdown -r +1`, for containers and tests.
fn reboot_command() -> Vec<String> {
    match std::env::var("SSM_LITE_REBOOT_COMMAND") {
        Ok(c) if !c.trim().is_empty() => c.split_whitespace().map(str::to_owned).collect(),
        _ => vec!["shutdown".into(), "-r".into(), "+1".into()],
    }
}

/// What happened to an offered message.
#[derive(Debug, Clone, PartialEq)]
pub enum Offer {
    /// Stored and queued; the receipt reply went to the sink.
    Accepted,
    /// Seen before. `final_reply` is its terminal reply when it has finished.
    Duplicate { final_reply: Option<String> },
    /// The queue is full; try again after `wait_for_room`.
    Full,
    /// The payload or document is invalid; a `Failed` reply went to the sink.
    Rejected,
    /// The engine is shutting down.
    Closed,
}

struct Job {
    transport: Transport,
    message_id: String,
    document: Document,
    /// `DocumentContent` and `Parameters`, kept when the document holds Parameter Store
    /// references: it is parsed again, resolving them, when the job starts.
    unresolved: Option<(
        serde_json::Value,
        serde_json::Map<String, serde_json::Value>,
    )>,
    env: Vec<(String, String)>,
    /// Where each step's output goes besides its files.
    outputs: Vec<Box<dyn Destination>>,
    /// The association of a State Manager run.
    association: Option<AssociationRun>,
    stop: StopToken,
    /// A shell step's script runs under its supervisor now: a shutdown leaves it at once, for
    /// the next start to report, instead of waiting for it. Set and cleared under the queue's
    /// lock, which `shutdown` waits on.
    leavable: AtomicBool,
    record: Mutex<CommandRecord>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Arc<Job>>,
    /// Queued and running jobs by MessageId.
    active: HashMap<String, Arc<Job>>,
    /// Messages being parsed and stored (outside the lock); each holds a place in the queue.
    admitting: HashSet<String>,
    closed: bool,
}

struct Inner {
    cfg: EngineConfig,
    dir: StateDir,
    sinks: Vec<(Transport, Arc<dyn ReplySink>)>,
    queue: Mutex<Queue>,
    changed: Condvar,
    last_prune: Mutex<Option<Instant>>,
    /// Bytes the finished commands keep on disk, as of the last prune plus those finished since.
    kept_bytes: Mutex<u64>,
    /// Finished records the disk refused, by CommandId, until a write succeeds.
    unsaved: Mutex<HashMap<String, CommandRecord>>,
}

pub struct Engine {
    inner: Arc<Inner>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Engine {
    /// Recovers what an earlier run left on disk, then starts the worker threads. `sinks` carry
    /// the replies of each transport; the first one also takes those of a transport not given.
    pub fn start(
        cfg: EngineConfig,
        dir: StateDir,
        sinks: Vec<(Transport, Arc<dyn ReplySink>)>,
    ) -> Engine {
        assert!(
            !sinks.is_empty(),
            "the engine needs somewhere to send replies"
        );
        let workers = cfg.workers.max(1);
        let inner = Arc::new(Inner {
            cfg,
            dir,
            sinks,
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
            last_prune: Mutex::new(None),
            kept_bytes: Mutex::new(0),
            unsaved: Mutex::new(HashMap::new()),
        });
        inner.recover();
        inner.prune(true);
        let handles = (0..workers)
            .map(|i| {
                let inner = Arc::clone(&inner);
                std::thread::Builder::new()
                    .name(format!("worker-{i}"))
                    .spawn(move || inner.work())
                    .expect("spawning a worker thread")
            })
            .collect();
        Engine {
            inner,
            workers: Mutex::new(handles),
        }
    }

    /// Offers a send-command message. Never blocks on the queue: a full queue says `Full`.
    pub fn offer(&self, transport: Transport, message_id: &str, payload: &str) -> Offer {
        self.inner.offer(transport, message_id, payload)
    }

    /// Cancels the command of `message_id`: a queued one never starts and is reported
    /// `Cancelled` at once; a running one has its process group killed. False when unknown.
    pub fn cancel(&self, message_id: &str) -> bool {
        let inner = &self.inner;
        let mut q = lock(&inner.queue);
        if let Some(pos) = q.waiting.iter().position(|j| j.message_id == message_id) {
            let job = q.waiting.remove(pos).expect("position is in range");
            q.active.remove(message_id);
            drop(q);
            inner.changed.notify_all();
            job.stop.stop(StopReason::Cancelled);
            log::info!("command {message_id}: cancelled while queued; it will not run");
            inner.finish_unstarted(&job, StopReason::Cancelled);
            return true;
        }
        match q.active.get(message_id) {
            Some(job) => {
                log::info!("command {message_id}: cancel requested; stopping it");
                job.stop.stop(StopReason::Cancelled);
                true
            }
            None => false,
        }
    }

    /// Blocks until the queue has room (true) or `timeout` passes or the engine closes (false).
    pub fn wait_for_room(&self, timeout: Duration) -> bool {
        let limit = self.inner.cfg.queue_limit;
        self.inner.wait_until(timeout, |q| {
            q.closed || q.waiting.len() + q.admitting.len() < limit
        }) && !lock(&self.inner.queue).closed
    }

    /// Blocks until no job is queued or running, or `timeout` passes; true when idle.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.inner.wait_until(timeout, |q| q.active.is_empty())
    }

    /// Stops taking work and joins the workers. A shell step whose script runs under its
    /// supervisor is left to it at once, for the next start to report: waiting would hold up an
    /// upgrade that the script itself runs (`dpkg -i` stops the agent and waits for it). Other
    /// running steps get up to `grace`, then are stopped too: a script of theirs is killed
    /// (reported as the agent stopping). Queued commands stay on disk and run after the next
    /// start.
    pub fn shutdown(&self, grace: Duration) {
        let inner = &self.inner;
        let running = {
            let mut q = lock(&inner.queue);
            q.closed = true;
            let queued: Vec<Arc<Job>> = q.waiting.drain(..).collect();
            for job in queued {
                q.active.remove(&job.message_id);
            }
            q.active.len()
        };
        inner.changed.notify_all();
        let leavable = |q: &Queue| q.active.values().all(|j| j.leavable.load(Ordering::SeqCst));
        if !leavable(&lock(&inner.queue)) {
            log::info!(
                "shutdown: waiting up to {} ms for {} running command(s)",
                grace.as_millis(),
                running
            );
        }
        let settled = inner.wait_until(grace, leavable);
        for job in lock(&inner.queue).active.values() {
            if job.leavable.load(Ordering::SeqCst) {
                log::info!(
                    "shutdown: leaving the script of command {} to its supervisor",
                    job.message_id
                );
            } else if settled {
                continue;
            } else {
                log::warn!(
                    "shutdown: stopping command {} that is still running",
                    job.message_id
                );
            }
            job.stop.stop(StopReason::Shutdown);
        }
        for h in lock(&self.workers).drain(..) {
            let _ = h.join();
        }
    }
}

impl Inner {
    /// Waits on the queue's condvar until `ready` holds (true) or `timeout` passes (false).
    fn wait_until(&self, timeout: Duration, ready: impl Fn(&Queue) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut q = lock(&self.queue);
        while !ready(&q) {
            if Instant::now() >= deadline {
                return false;
            }
            q = wait_until(&self.changed, q, deadline).0;
        }
        true
    }

    fn sink(&self, transport: Transport) -> &Arc<dyn ReplySink> {
        let found = self.sinks.iter().find(|(t, _)| *t == transport);
        &found.unwrap_or(&self.sinks[0]).1
    }

    fn builder(&self, transport: Transport, message_id: &str) -> ReplyBuilder {
        let sink = self.sink(transport);
        ReplyBuilder {
            agent: self.cfg.agent.clone(),
            able_to_open_mgs_connection: sink.able_to_open_mgs_connection(),
            max_encoded_len: sink.max_encoded_len(message_id),
        }
    }

    /// Takes the queue lock only to check and to reserve a place: reading, parsing and storing
    /// the command happen outside it, so cancels and workers never wait behind a disk flush.
    fn offer(&self, transport: Transport, message_id: &str, payload: &str) -> Offer {
        self.retry_unsaved();
        let command_id = command_id_of(message_id).to_owned();
        let Some(file_id) = safe_file_name(&command_id) else {
            self.reject(
                transport,
                message_id,
                None,
                &format!("invalid CommandId {command_id:?} in MessageId {message_id:?}"),
            );
            return Offer::Rejected;
        };
        if let Some(rec) = CommandRecord::load(&self.dir.command_record(file_id)) {
            return Offer::Duplicate {
                final_reply: rec.final_reply,
            };
        }
        {
            let mut q = lock(&self.queue);
            if q.closed {
                return Offer::Closed;
            }
            if q.active.contains_key(message_id) || q.admitting.contains(message_id) {
                return Offer::Duplicate { final_reply: None };
            }
            if q.waiting.len() + q.admitting.len() >= self.cfg.queue_limit {
                return Offer::Full;
            }
            q.admitting.insert(message_id.to_owned());
        }
        let admitted = self.admit(transport, message_id, file_id, payload, &command_id);
        let mut q = lock(&self.queue);
        q.admitting.remove(message_id);
        let offer = match admitted {
            // Stopping: the stored record runs after the next start.
            Some(_) if q.closed => Offer::Accepted,
            Some(job) => {
                q.active.insert(message_id.to_owned(), Arc::clone(&job));
                q.waiting.push_back(job);
                Offer::Accepted
            }
            None => Offer::Rejected,
        };
        drop(q);
        self.changed.notify_all();
        offer
    }

    /// Parses and stores a new command and sends its receipt; `None` when it was rejected.
    fn admit(
        &self,
        transport: Transport,
        message_id: &str,
        file_id: &str,
        payload: &str,
        command_id: &str,
    ) -> Option<Arc<Job>> {
        let (command, document) = match parse(payload, command_id) {
            Ok(parsed) => parsed,
            Err(e) => {
                log::warn!("command {message_id}: rejected: {e}");
                self.reject(transport, message_id, Some(file_id), &e.to_string());
                return None;
            }
        };
        let record = CommandRecord::new(transport, message_id, file_id, payload);
        if let Err(e) = record.save(&self.dir, true) {
            log::error!("command {message_id}: {e}");
            self.reject(
                transport,
                message_id,
                None,
                &format!("the agent could not store the command: {e}"),
            );
            return None;
        }
        log::info!(
            "command {message_id}: received {} ({} step(s), document {})",
            command.command_id,
            document.steps.len(),
            if command.document_name.is_empty() {
                "<unnamed>"
            } else {
                &command.document_name
            }
        );
        self.sink(transport)
            .accepted(message_id, self.builder(transport, message_id).received());
        Some(Arc::new(self.job(record, document, &command)))
    }

    fn job(&self, record: CommandRecord, document: Document, command: &SendCommand) -> Job {
        let mut env = self.cfg.env.clone();
        env.push(("SSM_COMMAND_ID".into(), command.command_id.clone()));
        let unresolved = document
            .parameter_store
            .then(|| (command.document_content.clone(), command.parameters.clone()));
        Job {
            transport: record.transport,
            message_id: record.message_id.clone(),
            document,
            unresolved,
            env,
            outputs: (self.cfg.destinations.iter())
                .flat_map(|d| d.for_command(command))
                .collect(),
            association: command.association.clone(),
            stop: StopToken::new(),
            leavable: AtomicBool::new(false),
            record: Mutex::new(record),
        }
    }

    /// A `Failed` reply for a message that cannot run; remembered (when the id allows) so a
    /// redelivery gets the same answer instead of another attempt.
    fn reject(&self, transport: Transport, message_id: &str, file_id: Option<&str>, trace: &str) {
        let payload = self.builder(transport, message_id).rejected(trace);
        match file_id {
            Some(id) => self.close(
                &mut CommandRecord::new(transport, message_id, id, ""),
                payload,
            ),
            None => {
                let sink = self.sink(transport);
                sink.send(sink.spool(message_id, payload, true));
            }
        }
    }

    /// Ends `rec` with `payload` as its final reply and sends that. One flush of the record makes
    /// both durable before the reply leaves (the record is the reply's home until the service
    /// takes it); when the record cannot be written, the reply goes to the sink's spool instead.
    fn close(&self, rec: &mut CommandRecord, payload: String) {
        let sink = self.sink(rec.transport);
        let reply_id = crate::random::uuid_v4();
        rec.phase = Phase::Done;
        rec.running = None;
        rec.final_reply = Some(payload.clone());
        rec.final_reply_id = Some(reply_id.clone());
        self.retry_unsaved();
        let ticket = match rec.save(&self.dir, true) {
            Ok(()) => {
                lock(&self.unsaved).remove(&rec.command_id);
                OutgoingReply {
                    message_id: rec.message_id.clone(),
                    reply_id,
                    payload,
                    terminal: true,
                    stored: Some(Stored::Record(self.dir.command_record(&rec.command_id))),
                }
            }
            Err(e) => {
                log::error!(
                    "command {}: {e}; its final reply goes to the reply spool, and its record is kept in memory and written again once the disk takes it",
                    rec.message_id
                );
                // The reply leaves through the spool under another id: the record written
                // later must not send it a second time after a restart.
                let mut later = rec.clone();
                later.final_reply_id = None;
                lock(&self.unsaved).insert(rec.command_id.clone(), later);
                sink.spool(&rec.message_id, payload, true)
            }
        };
        sink.send(ticket);
    }

    /// Sends again the final reply of a finished command the service had not taken when the
    /// agent stopped (it kept the same ReplyId, so the service takes it at most once).
    fn resend_final(&self, rec: &CommandRecord) {
        let (Some(payload), Some(reply_id)) = (&rec.final_reply, &rec.final_reply_id) else {
            return;
        };
        if rec.final_accepted || now_secs().saturating_sub(rec.received_at) > MAX_RESUME_AGE_SECS {
            return;
        }
        log::info!(
            "command {}: sending its final reply again (not taken before the restart)",
            rec.message_id
        );
        self.sink(rec.transport).send(OutgoingReply {
            message_id: rec.message_id.clone(),
            reply_id: reply_id.clone(),
            payload: payload.clone(),
            terminal: true,
            stored: Some(Stored::Record(self.dir.command_record(&rec.command_id))),
        });
    }

    fn work(&self) {
        loop {
            let job = {
                let mut q = lock(&self.queue);
                loop {
                    if q.closed {
                        return;
                    }
                    if let Some(job) = q.waiting.pop_front() {
                        break job;
                    }
                    if lock(&self.unsaved).is_empty() {
                        q = wait(&self.changed, q);
                        continue;
                    }
                    let (guard, timed_out) =
                        wait_until(&self.changed, q, Instant::now() + RETRY_UNSAVED);
                    q = guard;
                    if timed_out {
                        drop(q);
                        self.retry_unsaved();
                        q = lock(&self.queue);
                    }
                }
            };
            self.changed.notify_all();
            self.run(&job);
            lock(&self.queue).active.remove(&job.message_id);
            self.changed.notify_all();
        }
    }

    fn run(&self, job: &Job) {
        let mut rec = lock(&job.record);
        rec.phase = Phase::Running;
        rec.run_count += 1;
        // Not flushed: the step about to start is (with this phase in it); lost to a power cut,
        // the command is merely still queued, and nothing has run yet.
        self.save(&rec, false);
        let dir = self.dir.orchestration_dir(&rec.command_id);
        if let Some(interrupted) = rec.running.clone() {
            let index = interrupted.index.min(job.document.steps.len() - 1);
            let step = &job.document.steps[index];
            let result = self.recover_step(job, &mut rec, step, &interrupted, &dir);
            // A script that exited 194 while the agent was down still asks for its reboot.
            if self.left_running(job, &rec, step)
                || !self.conclude(job, &mut rec, step, index, result)
            {
                return;
            }
        }
        let resolved;
        let document = match self.resolve(job) {
            Ok(None) => &job.document,
            Ok(Some(d)) => {
                resolved = d;
                &resolved
            }
            Err(e) => {
                log::warn!("command {}: {e}", job.message_id);
                let payload = self
                    .builder(job.transport, &job.message_id)
                    .rejected(&e.to_string());
                self.close(&mut rec, payload);
                return;
            }
        };
        let total = document.steps.len();
        while rec.next_step < total {
            let index = rec.next_step;
            let step = &document.steps[index];
            let result = self.run_one(job, &mut rec, document, index, &dir);
            if self.left_running(job, &rec, step) {
                return;
            }
            if result.status == Status::InProgress {
                // aws:updateSsmAgent swapped the binary: the step runs again after the restart.
                rec.running = None;
                rec.phase = Phase::RestartPending;
                self.save(&rec, true);
                crate::update::restart(&format!("command {}", job.message_id));
                return;
            }
            if !self.conclude(job, &mut rec, step, index, result) {
                return;
            }
        }
        self.finish(&mut rec);
    }

    /// Records the result of step `index`; false when the command stops there for a reboot
    /// (exit 194: the step runs again after it, as upstream does).
    fn conclude(
        &self,
        job: &Job,
        rec: &mut CommandRecord,
        step: &Step,
        index: usize,
        result: PluginResult,
    ) -> bool {
        let reboot = result.status == Status::SuccessAndReboot;
        self.step_finished(job, rec, step, result);
        if reboot {
            rec.results.pop();
            rec.next_step = index;
            rec.phase = Phase::RebootPending;
            self.save(rec, true);
            request_reboot(&self.cfg.reboot_command, &job.message_id);
        }
        !reboot
    }

    /// The document with its Parameter Store references resolved (`None`: it holds none), as
    /// upstream does before a command runs (docs/protocol.md §3.7).
    fn resolve(&self, job: &Job) -> Result<Option<Document>, DocumentError> {
        let Some((content, parameters)) = &job.unresolved else {
            return Ok(None);
        };
        let mut resolver = Resolver::new(self.cfg.parameter_store.as_ref());
        document::parse(content, parameters, References::Resolve(&mut resolver)).map(Some)
    }

    /// Decides and runs step `index`: skipped after an exit condition, stopped before start,
    /// the document's verdict, or a real run.
    fn run_one(
        &self,
        job: &Job,
        rec: &mut CommandRecord,
        document: &Document,
        index: usize,
        dir: &std::path::Path,
    ) -> PluginResult {
        let step = &document.steps[index];
        let is_last = index + 1 == document.steps.len();
        if rec.exit_condition && !(step.finally_step && is_last) {
            let text = format!(
                "Plugin with name {} and id {} skipped due to prior step with an exit condition",
                step.plugin, step.id
            );
            return steps::without_running(step, Status::Skipped, 0, &text);
        }
        if let Some(reason) = job.stop.reason() {
            return steps::stopped_before_start(step, reason);
        }
        match &step.verdict {
            Verdict::Skip(text) => steps::without_running(step, Status::Skipped, 0, text),
            Verdict::Fail(text) => steps::without_running(step, Status::Failed, 1, text),
            Verdict::Run => self.run_step(job, rec, step, index, dir),
        }
    }

    /// Runs a step whose verdict is Run, recording its start and process group as it goes, so
    /// that a crash in between is reported at once (docs/protocol.md §9 item 13).
    fn run_step(
        &self,
        job: &Job,
        rec: &mut CommandRecord,
        step: &Step,
        index: usize,
        dir: &std::path::Path,
    ) -> PluginResult {
        let started = crate::timefmt::iso8601_ms(std::time::SystemTime::now());
        rec.running = Some(RunningStep {
            index,
            process_group: None,
            started,
            supervisor: None,
        });
        self.save(rec, true);
        log::info!(
            "command {}: step {} ({}) started",
            job.message_id,
            step.id,
            step.plugin
        );
        let t0 = Instant::now();
        let env = self.step_env(job, dir);
        let result = steps::run_step(step, &env, &mut |pid| self.note_start(job, rec, step, pid));
        // Left to its supervisor at a shutdown: `left_running` says so, and the next start
        // reports how it ended.
        let left =
            job.leavable.load(Ordering::SeqCst) && job.stop.reason() == Some(StopReason::Shutdown);
        self.set_leavable(job, false);
        if !left {
            log::info!(
                "command {}: step {} finished: {} (code {}) in {} ms",
                job.message_id,
                step.id,
                result.status.as_str(),
                result.code,
                t0.elapsed().as_millis()
            );
        }
        result
    }

    fn step_env<'a>(&'a self, job: &'a Job, dir: &'a std::path::Path) -> StepEnv<'a> {
        StepEnv {
            command_dir: dir,
            env: &job.env,
            stop: &job.stop,
            max_output_bytes: match job.outputs.iter().any(|d| d.takes_whole_files()) {
                true => self.cfg.max_total_output.max(self.cfg.max_step_output),
                false => self.cfg.max_step_output,
            },
            cleanup: self.cfg.output_cleanup,
            outputs: &job.outputs,
            sources: &self.cfg.sources,
            association: job.association.as_ref(),
        }
    }

    /// Records the process a step started: its script's supervisor (followed after a restart)
    /// or, for a script run inside this process, its group. A shell step's supervised script
    /// may be left running from then on.
    fn note_start(&self, job: &Job, rec: &mut CommandRecord, step: &Step, pid: crate::sys::Pid) {
        let mut supervised = false;
        if let Some(r) = rec.running.as_mut() {
            match job.stop.supervised().filter(|s| s.pid == pid.as_raw()) {
                Some(s) => {
                    r.supervisor = Some(s);
                    supervised = true;
                }
                None => r.process_group = Some(pid.as_raw()),
            }
        }
        self.save(rec, false);
        self.set_leavable(job, supervised && step.plugin == steps::SHELL_PLUGIN);
    }

    /// Marks whether a shutdown may leave the job's running script to its supervisor.
    fn set_leavable(&self, job: &Job, leavable: bool) {
        let _q = lock(&self.queue);
        job.leavable.store(leavable, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// The result of the step an earlier agent left running: its script followed to its end when
    /// it still runs under its supervisor or left a status (shell steps); otherwise nothing says
    /// how it ended, and the step is reported interrupted.
    fn recover_step(
        &self,
        job: &Job,
        rec: &mut CommandRecord,
        step: &Step,
        interrupted: &RunningStep,
        dir: &std::path::Path,
    ) -> PluginResult {
        if let Some(supervised) = &interrupted.supervisor {
            if step.plugin == steps::SHELL_PLUGIN {
                log::info!(
                    "command {}: following step {} under its supervisor (pid {})",
                    job.message_id,
                    step.id,
                    supervised.pid
                );
                let env = self.step_env(job, dir);
                let started = interrupted.started.clone();
                self.set_leavable(job, true);
                let result = steps::reattach(step, supervised, started, &env, &mut |pid| {
                    self.note_start(job, rec, step, pid)
                });
                self.set_leavable(job, false);
                if let Some(result) = result {
                    return result;
                }
            } else {
                crate::exec::supervisor::cancel(supervised);
            }
        }
        log::warn!(
            "command {}: step {} was interrupted by an agent stop; reporting it Failed",
            job.message_id,
            step.id
        );
        steps::without_running(step, Status::Failed, 1, &interrupted_message(interrupted))
    }

    /// After a step ended by the agent's shutdown: true when it is a shell step whose script
    /// was left to its supervisor, which the record (saved here) keeps for the next start. Only
    /// shell steps are followed after a restart: the script of any other step is cancelled.
    fn left_running(&self, job: &Job, rec: &CommandRecord, step: &Step) -> bool {
        if job.stop.reason() != Some(StopReason::Shutdown) {
            return false;
        }
        let Some(supervised) = rec.running.as_ref().and_then(|r| r.supervisor.as_ref()) else {
            return false;
        };
        if step.plugin != steps::SHELL_PLUGIN {
            crate::exec::supervisor::cancel(supervised);
            return false;
        }
        log::info!(
            "command {}: step {} left running under its supervisor (pid {}); the next start reports it",
            job.message_id,
            step.id,
            supervised.pid
        );
        self.save(rec, true);
        true
    }

    /// Records a step's result, applies the document's control flow, sends the step reply.
    fn step_finished(
        &self,
        job: &Job,
        rec: &mut CommandRecord,
        step: &Step,
        mut result: PluginResult,
    ) {
        if apply_control_flow(step, &mut result) {
            rec.exit_condition = true;
        }
        rec.results.push(result);
        rec.next_step += 1;
        rec.running = None;
        let last = rec.results.last().expect("just pushed");
        let sink = self.sink(job.transport);
        let ticket = sink.spool(
            &job.message_id,
            self.builder(job.transport, &job.message_id)
                .step_done(&rec.results, last),
            false,
        );
        self.save(rec, false);
        sink.send(ticket);
    }

    /// The terminal reply is made durable with the record that says Done, and released to the
    /// sender only after: a crash at any point leaves either a resumable command or a reply.
    fn finish(&self, rec: &mut CommandRecord) {
        let payload = self
            .builder(rec.transport, &rec.message_id)
            .finished(&rec.results);
        self.close(rec, payload);
        let status = document_status(&rec.results);
        log::info!(
            "command {}: finished: {} ({} step(s))",
            rec.message_id,
            status.as_str(),
            rec.results.len()
        );
        if self.cfg.remove_output_of.contains(&status) {
            let _ = std::fs::remove_dir_all(self.dir.orchestration_dir(&rec.command_id));
        }
        self.account(&rec.command_id);
    }

    /// A job that never started (cancelled while queued): every step reported stopped.
    fn finish_unstarted(&self, job: &Job, reason: StopReason) {
        let mut rec = lock(&job.record);
        let results: Vec<PluginResult> = job.document.steps
            [rec.next_step.min(job.document.steps.len())..]
            .iter()
            .map(|s| steps::stopped_before_start(s, reason))
            .collect();
        rec.results.extend(results);
        rec.next_step = job.document.steps.len();
        self.finish(&mut rec);
    }

    fn save(&self, rec: &CommandRecord, durable: bool) {
        if let Err(e) = rec.save(&self.dir, durable) {
            log::error!("command {}: {e}", rec.message_id);
        }
    }

    /// Writes the record of a finished command (durably). When the disk refuses it, the record
    /// is kept in memory and written again before the next command is stored, when the next one
    /// finishes, and every `RETRY_UNSAVED` while idle: once space returns, a restart neither
    /// resumes the command nor reports it a second time.
    fn save_done(&self, rec: &CommandRecord) {
        self.retry_unsaved();
        match rec.save(&self.dir, true) {
            Ok(()) => {
                lock(&self.unsaved).remove(&rec.command_id);
            }
            Err(e) => {
                log::error!(
                    "command {}: {e}; its final state is kept in memory and written again once the disk takes it",
                    rec.message_id
                );
                lock(&self.unsaved).insert(rec.command_id.clone(), rec.clone());
            }
        }
    }

    /// Writes again the finished records the disk refused; stops at the first refusal.
    fn retry_unsaved(&self) {
        let pending: Vec<CommandRecord> = lock(&self.unsaved).values().cloned().collect();
        for rec in pending {
            if rec.save(&self.dir, true).is_err() {
                return;
            }
            log::info!(
                "command {}: its record is stored now (the disk had refused it)",
                rec.message_id
            );
            lock(&self.unsaved).remove(&rec.command_id);
        }
    }

    /// Loads every unfinished record an earlier run left and queues it, oldest first.
    fn recover(&self) {
        let (done, mut pending): (Vec<CommandRecord>, Vec<CommandRecord>) = list_records(&self.dir)
            .into_iter()
            .partition(|r| r.phase == Phase::Done);
        for rec in &done {
            self.resend_final(rec);
        }
        pending.sort_by_key(|r| (r.phase == Phase::Queued, r.received_at));
        for mut rec in pending {
            if self.sink(rec.transport).has_terminal_reply(&rec.message_id) {
                // The final reply was made just before the crash; only the record lagged.
                rec.phase = Phase::Done;
                self.save_done(&rec);
                continue;
            }
            let (command, document) = match parse(&rec.payload, &rec.command_id) {
                Ok(p) => p,
                Err(e) => {
                    log::error!(
                        "command {}: stored payload no longer parses ({e}); reporting it Failed",
                        rec.message_id
                    );
                    self.reject(
                        rec.transport,
                        &rec.message_id,
                        Some(&rec.command_id.clone()),
                        &e.to_string(),
                    );
                    continue;
                }
            };
            let too_old = now_secs().saturating_sub(rec.received_at) > MAX_RESUME_AGE_SECS;
            let limit = match rec.transport {
                Transport::Association => self.cfg.association_retry_limit,
                _ => self.cfg.retry_limit,
            };
            if too_old || rec.run_count >= limit {
                log::error!(
                    "command {}: not resumed ({}); reporting it Failed",
                    rec.message_id,
                    if too_old {
                        "older than 48 hours"
                    } else {
                        "started too many times"
                    }
                );
                self.give_up(rec, &document);
                continue;
            }
            log::info!(
                "command {}: resuming after restart ({:?}, step {})",
                rec.message_id,
                rec.phase,
                rec.next_step
            );
            let job = Arc::new(self.job(rec, document, &command));
            let mut q = lock(&self.queue);
            q.active.insert(job.message_id.clone(), Arc::clone(&job));
            q.waiting.push_back(job);
        }
    }

    fn give_up(&self, mut rec: CommandRecord, document: &Document) {
        let text = "the agent restarted too often while this command ran, or the command is older than 48 hours; it was not resumed";
        for step in &document.steps[rec.next_step.min(document.steps.len())..] {
            rec.results
                .push(steps::without_running(step, Status::Failed, 1, text));
        }
        rec.next_step = document.steps.len();
        self.finish(&mut rec);
    }

    /// Counts a finished command's output against the total cap, and prunes when it is over or
    /// the periodic prune is due.
    fn account(&self, command_id: &str) {
        let added = disk_usage(&self.dir.orchestration_dir(command_id));
        let over = {
            let mut kept = lock(&self.kept_bytes);
            *kept += added;
            *kept > self.cfg.max_total_output
        };
        self.prune(over);
    }

    /// Removes finished commands (record and output) older than the retention period; then, when
    /// all output together is over `max_total_output`, the output of the oldest finished ones
    /// until it is down to 90% (so that a full cap is not walked again after every command).
    /// Their records stay until the retention period ends: they keep a redelivered message from
    /// running twice. Commands still queued or running are never touched. Runs at most every
    /// `PRUNE_EVERY` unless `now`.
    fn prune(&self, now: bool) {
        {
            let mut last = lock(&self.last_prune);
            if !now && last.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let cutoff = |transport: Transport| {
            let retention = match transport {
                Transport::Association => self.cfg.association_retention,
                _ => self.cfg.retention,
            };
            now_secs().saturating_sub(retention.as_secs())
        };
        // Oldest finished first: a Done record is last written when its command finishes.
        let mut finished: Vec<(Option<std::time::SystemTime>, bool, String)> =
            list_records(&self.dir)
                .into_iter()
                .filter(|r| r.phase == Phase::Done)
                .map(|r| {
                    let path = self.dir.command_record(&r.command_id);
                    let at = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                    (at, r.received_at < cutoff(r.transport), r.command_id)
                })
                .collect();
        finished.sort();
        let sizes: Vec<u64> = finished
            .iter()
            .map(|(_, _, id)| disk_usage(&self.dir.orchestration_dir(id)))
            .collect();
        let mut total: u64 = sizes.iter().sum();
        let cap = self.cfg.max_total_output;
        let target = if total > cap { cap / 10 * 9 } else { cap };
        let mut trimmed = 0usize;
        for ((_, expired, id), size) in finished.iter().zip(sizes) {
            let expired = *expired;
            if !expired && total <= target {
                continue;
            }
            if expired {
                let _ = crate::state::remove_file(&self.dir.command_record(id));
            }
            if size > 0 {
                let _ = std::fs::remove_dir_all(self.dir.orchestration_dir(id));
                total -= size;
                trimmed += 1;
            }
        }
        if trimmed > 0 {
            log::info!(
                "removed the output of {trimmed} finished command(s), past retention or over the {} MiB total; {} MiB kept",
                cap >> 20,
                total >> 20
            );
        }
        *lock(&self.kept_bytes) = total;
    }
}

/// A command that cannot run; the text is the reply's `documentTraceOutput`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommandError {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Document(#[from] DocumentError),
    /// Upstream's wording for a document with no steps it can run.
    #[error("Unsupported schema format")]
    NoSteps,
}

pub(crate) fn parse(
    payload: &str,
    fallback_command_id: &str,
) -> Result<(SendCommand, Document), CommandError> {
    let command = SendCommand::parse(payload, fallback_command_id)?;
    let document = document::parse(
        &command.document_content,
        &command.parameters,
        References::Keep,
    )?;
    if document.steps.is_empty() {
        return Err(CommandError::NoSteps);
    }
    Ok((command, document))
}

fn list_records(dir: &StateDir) -> Vec<CommandRecord> {
    let Ok(entries) = std::fs::read_dir(dir.commands_dir()) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| CommandRecord::load(&e.path()))
        .collect()
}

fn interrupted_message(r: &RunningStep) -> String {
    let group = r
        .process_group
        .map(|g| format!(" (process group {g})"))
        .unwrap_or_default();
    format!(
        "The agent stopped while this step was running{group}, started {}; its outcome is unknown and it was not run again.",
        r.started
    )
}

/// Exit codes 168/169 and `onFailure`/`onSuccess` (§3.6); true when later steps are skipped.
pub(super) fn apply_control_flow(step: &Step, r: &mut PluginResult) -> bool {
    if r.code == EXIT_SUCCESS_AND_STOP || r.code == EXIT_FAILURE_AND_STOP {
        return true;
    }
    match (r.status, step.on_failure, step.on_success) {
        // Its words are in the step's streams already (steps.rs, as upstream puts them).
        (Status::Failed, Some(ExitAction::Exit), _) => true,
        (Status::Failed, Some(ExitAction::SuccessAndExit), _) => {
            r.status = Status::Success;
            r.code = EXIT_SUCCESS_AND_STOP;
            true
        }
        (Status::Success, _, Some(_)) => true,
        _ => false,
    }
}

fn request_reboot(command: &[String], message_id: &str) {
    let Some((program, args)) = command.split_first() else {
        return;
    };
    log::warn!("command {message_id}: a step asked for a reboot (exit 194); running {command:?}");
    match crate::sys::child::command(program).args(args).status() {
        Ok(s) if s.success() => {}
        Ok(s) => log::error!("reboot command {command:?} failed: {s}"),
        Err(e) => log::error!("cannot run reboot command {command:?}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runcommand::local::MemorySink;
    use crate::runcommand::reply::AgentInfo;
    use crate::state::testdir::TestDir;
    use serde_json::{Value, json};

    fn config(reboot: &[&str]) -> EngineConfig {
        EngineConfig {
            workers: 2,
            queue_limit: 5,
            retry_limit: 15,
            association_retry_limit: 5,
            retention: Duration::from_secs(3600),
            association_retention: Duration::from_secs(3600),
            max_step_output: 1 << 20,
            max_total_output: 1 << 30,
            output_cleanup: OutputCleanup::Keep,
            remove_output_of: Vec::new(),
            env: vec![],
            agent: AgentInfo::from_config(&crate::config::Config::default()),
            reboot_command: reboot.iter().map(|s| s.to_string()).collect(),
            parameter_store: Arc::new(NoParameterStore("tests".into())),
            destinations: Vec::new(),
            sources: Sources::unavailable("tests"),
        }
    }

    fn payload(steps: Value) -> String {
        json!({ "DocumentContent": { "schemaVersion": "2.2", "mainSteps": steps } }).to_string()
    }

    fn step(name: &str, commands: &[&str], extra: Value) -> Value {
        let mut inputs = json!({ "runCommand": commands });
        inputs
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({ "action": "aws:runShellScript", "name": name, "inputs": inputs })
    }

    /// Runs `payload` to the end on a fresh engine and returns every reply, parsed.
    fn run(dir: &StateDir, cfg: EngineConfig, message_id: &str, payload: &str) -> Vec<Value> {
        let sink = Arc::new(MemorySink::default());
        let engine = Engine::start(cfg, dir.clone(), vec![(Transport::Local, sink.clone())]);
        if !payload.is_empty() {
            assert_eq!(
                engine.offer(Transport::Local, message_id, payload),
                Offer::Accepted
            );
        }
        assert!(engine.wait_idle(Duration::from_secs(30)));
        engine.shutdown(Duration::ZERO);
        sink.replies()
            .iter()
            .map(|(p, _)| serde_json::from_str(p).unwrap())
            .collect()
    }

    fn step_results(replies: &[Value]) -> Vec<Value> {
        replies
            .iter()
            .filter_map(|r| r["runtimeStatus"].as_object())
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// A Parameter Store holding `/app/greeting` = `hello`, counting its calls.
    #[derive(Default)]
    struct Greeting(std::sync::atomic::AtomicUsize);

    impl ParameterSource for Greeting {
        fn get_parameters(
            &self,
            names: &[String],
        ) -> Result<document::parameter_store::Found, String> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut found = document::parameter_store::Found::default();
            for name in names {
                match name.as_str() {
                    "/app/greeting" => {
                        found.parameters.push(document::parameter_store::Parameter {
                            name: name.clone(),
                            kind: "String".into(),
                            value: "hello".into(),
                            version: 1,
                        })
                    }
                    _ => found.invalid.push(name.clone()),
                }
            }
            Ok(found)
        }
    }

    #[test]
    fn parameter_store_references_are_resolved_before_the_first_step() {
        let t = TestDir::new("engine");
        let dir = StateDir::open(t.path(), "i-1").unwrap();
        let store = Arc::new(Greeting::default());
        let cfg = EngineConfig {
            parameter_store: store.clone(),
            ..config(&[])
        };
        let p = json!({ "DocumentContent": {
            "schemaVersion": "2.2",
            "parameters": { "who": { "type": "String", "allowedPattern": "^[a-z]+$" } },
            "mainSteps": [step("say", &["echo {{ who }} {{ssm:/app/greeting}}"], json!({}))],
        }, "Parameters": { "who": "{{ ssm:/app/greeting }}" } })
        .to_string();
        let replies = run(&dir, cfg, "aws.ssm.c-ps.i-1", &p);
        let steps = step_results(&replies);
        assert_eq!(steps[0]["standardOutput"], "hello hello\n");
        assert_eq!(replies.last().unwrap()["documentStatus"], "Success");
        // The value and the input name the same parameter: one lookup serves both.
        assert_eq!(store.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn an_unknown_parameter_fails_the_command_with_upstreams_text_and_runs_nothing() {
        let t = TestDir::new("engine");
        let dir = StateDir::open(t.path(), "i-1").unwrap();
        let marker = t.path().join("ran");
        let cfg = EngineConfig {
            parameter_store: Arc::new(Greeting::default()),
            ..config(&[])
        };
        let script = format!("touch {} {{{{ssm:/app/missing}}}}", marker.display());
        let p = payload(json!([step("touch", &[&script], json!({}))]));
        let replies = run(&dir, cfg, "aws.ssm.c-ps2.i-1", &p);
        let last = replies.last().unwrap();
        assert_eq!(last["documentStatus"], "Failed");
        assert_eq!(
            last["documentTraceOutput"],
            "Input contains invalid parameters [/app/missing]"
        );
        assert!(!marker.exists());
    }

    #[test]
    fn exit_168_skips_later_steps_but_not_a_final_finally_step() {
        let t = TestDir::new("engine");
        let dir = StateDir::open(t.path(), "i-1").unwrap();
        let p = payload(json!([
            step("stop", &["echo first", "exit 168"], json!({})),
            step("skipped", &["echo never"], json!({})),
            step("cleanup", &["echo cleanup"], json!({ "finallyStep": true })),
        ]));
        let replies = run(&dir, config(&[]), "aws.ssm.c-168.i-1", &p);
        let steps = step_results(&replies);
        assert_eq!(steps[0]["status"], "Success");
        assert_eq!(steps[0]["code"], 168);
        assert!(
            steps[0]["standardOutput"]
                .as_str()
                .unwrap()
                .ends_with("Further document steps will be skipped.")
        );
        assert_eq!(steps[1]["status"], "Skipped");
        assert!(
            steps[1]["output"]
                .as_str()
                .unwrap()
                .contains("skipped due to prior step with an exit condition")
        );
        assert_eq!(steps[2]["standardOutput"], "cleanup\n");
        assert_eq!(replies.last().unwrap()["documentStatus"], "Success");
    }

    #[test]
    fn upstreams_cleanup_settings_remove_output_once_the_reply_is_made() {
        let t = TestDir::new("engine");
        let dir = StateDir::open(t.path(), "i-1").unwrap();
        let cleaning = || EngineConfig {
            output_cleanup: OutputCleanup::AfterExecution,
            remove_output_of: vec![Status::Success],
            ..config(&[])
        };
        let ok = payload(json!([step("ok", &["echo in the reply"], json!({}))]));
        let replies = run(&dir, cleaning(), "aws.ssm.c-clean-ok.i-1", &ok);
        assert_eq!(
            step_results(&replies)[0]["standardOutput"],
            "in the reply\n"
        );
        assert!(!dir.orchestration_dir("c-clean-ok").exists());

        let bad = payload(json!([step("bad", &["echo out", "exit 4"], json!({}))]));
        let replies = run(&dir, cleaning(), "aws.ssm.c-clean-bad.i-1", &bad);
        assert_eq!(step_results(&replies)[0]["standardOutput"], "out\n");
        let run_dir = dir
            .orchestration_dir("c-clean-bad")
            .join("awsrunShellScript")
            .join("bad");
        assert!(
            run_dir.join("_script.sh").is_file(),
            "Failed is not cleaned"
        );
        assert!(!run_dir.join("stdout").exists() && !run_dir.join("stderr").exists());
    }

    #[test]
    fn on_failure_success_and_exit_reports_success_168() {
        let t = TestDir::new("engine");
        let dir = StateDir::open(t.path(), "i-1").unwrap();
        let p = payload(json!([
            step(
                "fails",
                &["exit 5"],
                json!({ "onFailure": "successAndExit" })
            ),
            step("after", &["echo never"], json!({})),
        ]));
        let replies = run(&dir, config(&[]), "aws.ssm.c-of.i-1", &p);
        let steps = step_results(&replies);
        assert_eq!(
            (steps[0]["status"].as_str(), steps[0]["code"].as_i64()),
            (Some("Success"), Some(168))
        );
        assert_eq!(steps[1]["status"], "Skipped");
        assert_eq!(replies.last().unwrap()["documentStatus"], "Success");
    }

    #[test]
    fn a_reboot_step_runs_again_after_the_restart_and_the_document_completes() {
        let t = TestDir::new("engine");
        let dir = StateDir::open(&t.path().join("state"), "i-1").unwrap();
        let (runs, mark) = (t.path().join("runs"), t.path().join("rebooted"));
        let script = format!(
            "echo run >> {r}; [ -f {m} ] && exit 0; touch {m}; exit 194",
            r = runs.display(),
            m = mark.display()
        );
        let p = payload(json!([
            step("reboot", &[&script], json!({})),
            step("after", &["echo after"], json!({}))
        ]));
        let before = run(&dir, config(&["true"]), "aws.ssm.c-194.i-1", &p);
        assert!(
            before.iter().all(|r| r["documentStatus"] == "InProgress"),
            "no final reply before the reboot"
        );
        assert_eq!(step_results(&before)[0]["status"], "SuccessAndReboot");
        let after = run(&dir, config(&["true"]), "", "");
        let steps = step_results(&after);
        assert_eq!(
            steps
                .iter()
                .map(|s| s["status"].as_str().unwrap())
                .collect::<Vec<_>>(),
            ["Success", "Success"]
        );
        assert_eq!(after.last().unwrap()["documentStatus"], "Success");
        assert_eq!(
            std::fs::read_to_string(&runs).unwrap().lines().count(),
            2,
            "the reboot step ran again, once"
        );
    }

    /// A sink that never delivers: the agent stops before the service took anything.
    struct Unreachable(Mutex<Vec<OutgoingReply>>);

    impl ReplySink for Unreachable {
        fn accepted(&self, _message_id: &str, _receipt: String) {}
        fn spool(&self, message_id: &str, payload: String, terminal: bool) -> OutgoingReply {
            MemorySink::default().spool(message_id, payload, terminal)
        }
        fn send(&self, reply: OutgoingReply) {
            lock(&self.0).push(reply);
        }
        fn has_terminal_reply(&self, _message_id: &str) -> bool {
            false
        }
    }

    /// The record that says Done holds the final reply durably (no second copy is flushed): a
    /// restart before the service took it sends it again under the same ReplyId, and once it
    /// was taken, never again.
    #[test]
    fn a_final_reply_not_taken_before_a_restart_is_sent_again_with_its_reply_id() {
        let t = TestDir::new("engine");
        let dir = StateDir::open(t.path(), "i-1").unwrap();
        let start = |offer: &str| {
            let sink = Arc::new(Unreachable(Mutex::default()));
            let engine = Engine::start(
                config(&[]),
                dir.clone(),
                vec![(Transport::Local, sink.clone())],
            );
            if !offer.is_empty() {
                assert_eq!(
                    engine.offer(Transport::Local, "aws.ssm.c-f.i-1", offer),
                    Offer::Accepted
                );
            }
            assert!(engine.wait_idle(Duration::from_secs(30)));
            engine.shutdown(Duration::ZERO);
            std::mem::take(&mut *lock(&sink.0))
        };
        let sent = start(&payload(json!([step("one", &["echo one"], json!({}))])))
            .pop()
            .unwrap();
        assert!(sent.terminal);
        assert!(
            matches!(&sent.stored, Some(Stored::Record(path)) if *path == dir.command_record("c-f"))
        );
        let stored = CommandRecord::load(&dir.command_record("c-f")).unwrap();
        assert_eq!(stored.final_reply.as_deref(), Some(sent.payload.as_str()));

        let resent = start("");
        assert_eq!(resent.len(), 1, "only the final reply is sent again");
        assert_eq!(
            (&resent[0].reply_id, &resent[0].payload),
            (&sent.reply_id, &sent.payload)
        );
        let again = run(&dir, config(&[]), "", "");
        assert_eq!(again[0]["documentStatus"], "Success");
        assert_eq!(
            serde_json::from_str::<Value>(&sent.payload).unwrap(),
            again[0]
        );
        let stored = CommandRecord::load(&dir.command_record("c-f")).unwrap();
        assert!(stored.final_accepted, "the memory sink delivered it");
        assert!(
            run(&dir, config(&[]), "", "").is_empty(),
            "taken: not sent again"
        );
    }

    #[test]
    fn a_step_interrupted_by_a_crash_is_reported_failed_and_the_rest_runs() {
        let t = TestDir::new("engine");
        let dir = StateDir::open(t.path(), "i-1").unwrap();
        let p = payload(json!([
            step("one", &["sleep 60"], json!({})),
            step("two", &["echo two"], json!({}))
        ]));
        let mut rec = CommandRecord::new(Transport::Local, "aws.ssm.c-crash.i-1", "c-crash", &p);
        rec.phase = Phase::Running;
        rec.running = Some(RunningStep {
            index: 0,
            process_group: Some(4242),
            started: "2026-01-01T00:00:00.000Z".into(),
            supervisor: None,
        });
        rec.save(&dir, true).unwrap();
        let replies = run(&dir, config(&[]), "", "");
        let steps = step_results(&replies);
        assert_eq!(steps[0]["status"], "Failed");
        assert!(
            steps[0]["output"]
                .as_str()
                .unwrap()
                .contains("process group 4242")
        );
        assert_eq!(steps[1]["standardOutput"], "two\n");
        assert_eq!(replies.last().unwrap()["documentStatus"], "Failed");
        let stored = CommandRecord::load(&dir.command_record("c-crash")).unwrap();
        assert_eq!(stored.phase, Phase::Done);
    }
}
