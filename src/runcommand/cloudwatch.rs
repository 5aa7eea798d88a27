//! Run Command output to CloudWatch Logs (the payload's `CloudWatchOutputEnabled`,
//! docs/protocol.md §3.11): while a script runs, a thread per run tails its `stdout` and `stderr`
//! files and sends whole lines to the streams `<CommandId>/<InstanceId>/<step>/stdout` and
//! `…/stderr` of the command's group.

use super::output::{Destination, Destinations, RunFiles, Upload};
use super::payload::SendCommand;
use crate::aws::logs::{Event, LogsClient};
use crate::sync::{lock, wait_until};
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// How often new lines are sent (upstream `UploadFrequency`).
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// How long the step reply waits for the rest of the output to be sent once the script ended
/// (upstream: `maxCloudWatchUploadRetry` × `UploadFrequency`). Past it the sending goes on
/// without the reply waiting for it.
const FINISH_LIMIT: Duration = Duration::from_secs(60);
/// PutLogEvents' limits: an event counts its UTF-8 message plus 26 bytes; a batch holds at most
/// 1,048,576 such bytes and 10,000 events spanning at most 24 hours; an event at most 256 KiB.
const EVENT_OVERHEAD: usize = 26;
const MAX_BATCH_BYTES: usize = 1_048_576;
const MAX_BATCH_EVENTS: usize = 10_000;
const MAX_BATCH_SPAN_MS: u64 = 24 * 3600 * 1000;
const MAX_MESSAGE_BYTES: usize = 256 * 1024 - EVENT_OVERHEAD;
/// Empty lines held for the next event before they are sent on their own.
const MAX_HELD_NEWLINES: usize = 1024;
/// Bytes read from an output file at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Most bytes one stream reads in a pass before the run's other stream gets its turn (the last
/// pass reads to the end).
const PASS_BYTES: usize = 4 * 1024 * 1024;
/// Upstream's `CloudWatchLogGroupNamePrefix`.
const DEFAULT_GROUP_PREFIX: &str = "/aws/ssm/";

/// Gives commands with `CloudWatchOutputEnabled` their CloudWatch Logs destination.
pub struct CloudWatchDestinations {
    /// The client, or why there is none (an unusable endpoint), for each step's stderr.
    logs: Result<LogsClient, String>,
    instance_id: String,
}

impl CloudWatchDestinations {
    /// Output sent with `logs` (or, where the endpoint is unusable, the reason in each step's
    /// stderr), naming streams after `instance_id`.
    pub fn new(logs: Result<LogsClient, String>, instance_id: &str) -> Self {
        CloudWatchDestinations {
            logs,
            instance_id: instance_id.to_owned(),
        }
    }
}

impl Destinations for CloudWatchDestinations {
    fn for_command(&self, command: &SendCommand) -> Vec<Box<dyn Destination>> {
        let Some(given) = &command.cloudwatch_log_group else {
            return Vec::new();
        };
        let logs = match &self.logs {
            Ok(logs) => logs.clone(),
            Err(why) => return vec![Box::new(Unusable(why.clone()))],
        };
        let group = group_name(given, &command.document_name);
        log::info!(
            "command {}: output goes to CloudWatch Logs group {group}",
            command.command_id
        );
        vec![Box::new(CommandLogs {
            target: Arc::new(Target {
                logs,
                group,
                group_created: OnceLock::new(),
            }),
            stream_prefix: format!("{}/{}", command.command_id, self.instance_id),
        })]
    }
}

/// CloudWatch output a command asked for and the agent cannot send: every run says why.
struct Unusable(String);

impl Destination for Unusable {
    fn start(&self, _run: &RunFiles<'_>) -> Box<dyn Upload + '_> {
        Box::new(Refused(&self.0))
    }
}

struct Refused<'a>(&'a str);

impl Upload for Refused<'_> {
    fn finish(self: Box<Self>) -> Result<(), String> {
        Err(format!(
            "ssm-lite could not send this step's output to CloudWatch Logs: {}",
            self.0
        ))
    }
}

/// The group: the one given, else `/aws/ssm/<DocumentName>` with every character outside
/// `[a-zA-Z0-9_\-/.#]` replaced by `.` (upstream `cleanupLogGroupName`).
fn group_name(given: &str, document_name: &str) -> String {
    if !given.is_empty() {
        return given.to_owned();
    }
    format!("{DEFAULT_GROUP_PREFIX}{document_name}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | '.' | '#') {
                c
            } else {
                '.'
            }
        })
        .collect()
}

/// A run's streams are named after its step: the step id with `:` and `*` replaced by `-`
/// (upstream `runpluginutil.go`).
fn stream_step(run: &RunFiles<'_>) -> String {
    run.step_id.replace([':', '*'], "-")
}

/// One command's group, shared by the threads of its runs.
struct Target {
    logs: LogsClient,
    group: String,
    /// Created once, before the first stream (upstream creates it per plugin).
    group_created: OnceLock<()>,
}

impl Target {
    /// A refused CreateLogGroup does not stop the output: the group may exist and only its
    /// creation be denied (upstream then checks DescribeLogGroups); CreateLogStream decides.
    fn ensure_group(&self) {
        self.group_created.get_or_init(|| {
            if let Err(e) = self.logs.create_log_group(&self.group) {
                log::warn!("{e}; trying to create the log stream anyway");
            }
        });
    }
}

struct CommandLogs {
    target: Arc<Target>,
    stream_prefix: String,
}

impl Destination for CommandLogs {
    fn start(&self, run: &RunFiles<'_>) -> Box<dyn Upload + '_> {
        let prefix = format!("{}/{}", self.stream_prefix, stream_step(run));
        let streams = [("stdout", run.stdout), ("stderr", run.stderr)]
            .map(|(kind, path)| Stream::new(kind, format!("{prefix}/{kind}"), path));
        let handoff = Arc::new(Handoff::default());
        let (target, shared) = (self.target.clone(), handoff.clone());
        let started = std::thread::Builder::new()
            .name("cloudwatch-output".into())
            .spawn(move || shared.done(tail(&target, streams, &shared)))
            .map(drop)
            .map_err(|e| {
                format!("ssm-lite could not start sending output to CloudWatch Logs: {e}")
            });
        Box::new(Tailing { handoff, started })
    }
}

/// What a run's thread and its [`Upload`] tell each other: the files are complete; the thread
/// is done, with these failures.
#[derive(Default)]
struct Handoff {
    state: Mutex<HandoffState>,
    changed: Condvar,
}

#[derive(Default)]
struct HandoffState {
    /// The run's files are complete.
    stopped: bool,
    /// Set by the thread when it is done.
    failures: Option<Vec<String>>,
}

impl Handoff {
    fn stop(&self) {
        lock(&self.state).stopped = true;
        self.changed.notify_all();
    }

    fn done(&self, failures: Vec<String>) {
        lock(&self.state).failures = Some(failures);
        self.changed.notify_all();
    }

    /// Waits up to `limit` for the files to be complete; true when they are.
    fn wait_stop(&self, limit: Duration) -> bool {
        self.wait(limit, |s| s.stopped.then_some(())).is_some()
    }

    /// Waits up to `limit` for `ready` to find what it waits for.
    fn wait<R>(
        &self,
        limit: Duration,
        mut ready: impl FnMut(&mut HandoffState) -> Option<R>,
    ) -> Option<R> {
        let deadline = Instant::now() + limit;
        let mut state = lock(&self.state);
        loop {
            if let Some(found) = ready(&mut state) {
                return Some(found);
            }
            let (guard, timed_out) = wait_until(&self.changed, state, deadline);
            state = guard;
            if timed_out {
                return ready(&mut state);
            }
        }
    }
}

/// Sends what the files hold every [`FLUSH_INTERVAL`] until stopped, then the rest; returns
/// the failures, one line per stream.
fn tail(target: &Target, mut streams: [Stream; 2], handoff: &Handoff) -> Vec<String> {
    loop {
        let last = handoff.wait_stop(FLUSH_INTERVAL);
        for stream in &mut streams {
            stream.pump(target, last);
        }
        if last {
            return streams.into_iter().filter_map(|s| s.failure).collect();
        }
    }
}

struct Tailing {
    handoff: Arc<Handoff>,
    /// Why there is no thread.
    started: Result<(), String>,
}

impl Upload for Tailing {
    fn finish(self: Box<Self>) -> Result<(), String> {
        self.handoff.stop();
        let done = || (self.handoff).wait(FINISH_LIMIT, |s| s.failures.take());
        let failures = match self.started.map(|()| done()) {
            Ok(Some(failures)) => failures,
            Ok(None) => vec![format!(
                "ssm-lite had not sent all of this step's output to CloudWatch Logs {}s after \
                 it ended; the rest may arrive later or not at all",
                FINISH_LIMIT.as_secs()
            )],
            Err(line) => vec![line],
        };
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("\n"))
        }
    }
}

/// One output file on its way to one log stream.
struct Stream {
    kind: &'static str,
    name: String,
    path: PathBuf,
    file: Option<File>,
    lines: Lines,
    batch: Batch,
    token: Option<String>,
    created: bool,
    /// Why the stream stopped; nothing more is read or sent once set.
    failure: Option<String>,
}

impl Stream {
    fn new(kind: &'static str, name: String, path: &Path) -> Stream {
        Stream {
            kind,
            name,
            path: path.to_owned(),
            file: None,
            lines: Lines::default(),
            batch: Batch::default(),
            token: None,
            created: false,
            failure: None,
        }
    }

    /// Reads what the file gained and sends it; `last`: the file is complete.
    fn pump(&mut self, target: &Target, last: bool) {
        if self.failure.is_some() {
            return;
        }
        let Some(mut file) = self.file.take().or_else(|| self.open()) else {
            return;
        };
        let mut chunk = vec![0; READ_CHUNK];
        let mut read = 0;
        while self.failure.is_none() && (last || read < PASS_BYTES) {
            match file.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    read += n;
                    let messages = self.lines.feed(&chunk[..n]);
                    self.add(target, messages);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => self.fail(format!("cannot read {}: {e}", self.path.display())),
            }
        }
        let messages = self.lines.end_pass(last);
        self.add(target, messages);
        self.send(target);
        self.file = Some(file);
    }

    /// The file, once the script has created it.
    fn open(&mut self) -> Option<File> {
        match File::open(&self.path) {
            Ok(file) => Some(file),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => {
                self.fail(format!("cannot read {}: {e}", self.path.display()));
                None
            }
        }
    }

    fn add(&mut self, target: &Target, messages: Vec<String>) {
        let timestamp_ms = crate::timefmt::unix_millis(SystemTime::now());
        for message in messages {
            let event = Event {
                timestamp_ms,
                message,
            };
            if !self.batch.fits(&event) {
                self.send(target);
            }
            self.batch.push(event);
        }
    }

    fn send(&mut self, target: &Target) {
        let events = self.batch.take();
        if events.is_empty() || self.failure.is_some() {
            return;
        }
        let logs = &target.logs;
        if !self.created {
            target.ensure_group();
            if let Err(e) = logs.create_log_stream(&target.group, &self.name) {
                return self.fail(e.to_string());
            }
            self.created = true;
        }
        match logs.put_log_events(&target.group, &self.name, &events, self.token.take()) {
            Ok(token) => self.token = token,
            Err(e) => self.fail(e.to_string()),
        }
    }

    fn fail(&mut self, why: String) {
        let line = format!(
            "ssm-lite could not send this step's {} to CloudWatch Logs: {why}",
            self.kind
        );
        log::error!("{line}");
        self.failure = Some(line);
    }
}

/// Cuts an output stream into event messages of whole lines, without their `\n`, so that the
/// messages joined with `\n` are the output (less a last `\n`). CloudWatch refuses empty events,
/// so an empty line joins the event before it, or, when that was sent, starts the next one; a
/// line longer than an event is cut (at a character boundary) into several.
#[derive(Default)]
struct Lines {
    /// The current line, shorter than an event.
    partial: Vec<u8>,
    /// The last message, which empty lines may still join.
    open: Option<String>,
    /// Empty lines waiting for the next message.
    held: usize,
    /// The current line was cut: its end is not an empty line.
    cut: bool,
}

impl Lines {
    /// Takes the next bytes of the output; returns the messages they complete.
    fn feed(&mut self, mut bytes: &[u8]) -> Vec<String> {
        let mut done = Vec::new();
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.extend(&bytes[..end], &mut done);
            self.end_line(&mut done);
            bytes = &bytes[end + 1..];
        }
        self.extend(bytes, &mut done);
        done
    }

    /// What a pass over the file leaves: the open message, and when the output is complete
    /// (`last`) its last line without `\n` and the empty lines held.
    fn end_pass(&mut self, last: bool) -> Vec<String> {
        let mut done = Vec::new();
        if last && !self.partial.is_empty() {
            self.end_line(&mut done);
        }
        self.close(&mut done);
        if last && self.held > 1 {
            // Joined after the message before it, n-1 newlines stand for n empty lines.
            done.push("\n".repeat(self.held - 1));
        }
        if last {
            self.held = 0;
        }
        done
    }

    fn extend(&mut self, bytes: &[u8], done: &mut Vec<String>) {
        self.partial.extend_from_slice(bytes);
        while self.partial.len() > MAX_MESSAGE_BYTES - self.held {
            let cut = char_boundary(&self.partial, MAX_MESSAGE_BYTES - self.held);
            let rest = self.partial.split_off(cut);
            let piece = std::mem::replace(&mut self.partial, rest);
            self.begin(&piece, done);
            self.close(done);
            self.cut = true;
        }
    }

    fn end_line(&mut self, done: &mut Vec<String>) {
        let line = std::mem::take(&mut self.partial);
        let was_cut = std::mem::take(&mut self.cut);
        if !line.is_empty() {
            return self.begin(&line, done);
        }
        if was_cut {
            return;
        }
        match &mut self.open {
            Some(open) if open.len() < MAX_MESSAGE_BYTES => open.push('\n'),
            _ => {
                self.close(done);
                self.held += 1;
                if self.held == MAX_HELD_NEWLINES {
                    done.push("\n".repeat(self.held - 1));
                    self.held = 0;
                }
            }
        }
    }

    /// Starts a message with a non-empty line, after the empty lines held.
    fn begin(&mut self, line: &[u8], done: &mut Vec<String>) {
        self.close(done);
        let mut message = "\n".repeat(self.held);
        message.push_str(&String::from_utf8_lossy(line));
        self.held = 0;
        self.open = Some(message);
    }

    /// Sends the open message on; cut in pieces if invalid UTF-8 made it longer than an event.
    fn close(&mut self, done: &mut Vec<String>) {
        let Some(mut message) = self.open.take() else {
            return;
        };
        while message.len() > MAX_MESSAGE_BYTES {
            let cut = (0..=MAX_MESSAGE_BYTES)
                .rev()
                .find(|&i| message.is_char_boundary(i))
                .unwrap_or(0);
            let rest = message.split_off(cut);
            done.push(std::mem::replace(&mut message, rest));
        }
        done.push(message);
    }
}

/// The largest index ≤ `limit` that does not split a UTF-8 sequence (or `limit` itself, for
/// bytes that are not UTF-8).
fn char_boundary(bytes: &[u8], limit: usize) -> usize {
    (limit.saturating_sub(3)..=limit)
        .rev()
        .find(|&i| bytes.get(i).is_none_or(|b| b & 0xC0 != 0x80))
        .filter(|&i| i > 0)
        .unwrap_or(limit)
}

/// Events for one PutLogEvents, within its limits.
#[derive(Default)]
struct Batch {
    events: Vec<Event>,
    bytes: usize,
}

impl Batch {
    fn fits(&self, event: &Event) -> bool {
        let first = self
            .events
            .first()
            .map_or(event.timestamp_ms, |e| e.timestamp_ms);
        self.events.len() < MAX_BATCH_EVENTS
            && self.bytes + event.message.len() + EVENT_OVERHEAD <= MAX_BATCH_BYTES
            && event.timestamp_ms.saturating_sub(first) < MAX_BATCH_SPAN_MS
    }

    fn push(&mut self, event: Event) {
        self.bytes += event.message.len() + EVENT_OVERHEAD;
        self.events.push(event);
    }

    fn take(&mut self) -> Vec<Event> {
        self.bytes = 0;
        std::mem::take(&mut self.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` (one pass each, the last one final) and joins the messages with `\n`.
    fn messages(chunks: &[&[u8]]) -> Vec<String> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            out.extend(lines.feed(chunk));
            out.extend(lines.end_pass(i + 1 == chunks.len()));
        }
        out
    }

    #[test]
    fn messages_are_whole_lines_and_join_back_to_the_output() {
        assert_eq!(messages(&[b"a\nb\n"]), ["a", "b"]);
        assert_eq!(messages(&[b"a\nb", b"c\nd"]), ["a", "bc", "d"]);
        for output in [
            &b"one\n\ntwo\n\n\nthree\n"[..],
            b"\n\nlead\n",
            b"tail\n\n\n",
            b"no newline at the end",
        ] {
            let joined = messages(&[output]).join("\n");
            let expected = String::from_utf8_lossy(output);
            assert_eq!(joined, expected.strip_suffix('\n').unwrap_or(&expected));
            assert!(messages(&[output]).iter().all(|m| !m.is_empty()));
        }
        // Empty lines arriving after their line was sent start the next message.
        assert_eq!(messages(&[b"a\n", b"\n\nb\n"]), ["a", "\n\nb"]);
    }

    #[test]
    fn long_lines_are_cut_within_an_event_at_character_boundaries() {
        let long = "é".repeat(MAX_MESSAGE_BYTES); // two bytes each
        let out = messages(&[format!("{long}\nshort\n").as_bytes()]);
        assert!(out.iter().all(|m| m.len() <= MAX_MESSAGE_BYTES), "too long");
        assert_eq!(out.len(), 3);
        assert_eq!(out[..2].concat(), long);
        assert_eq!(out[2], "short");
        // A line exactly as long as an event's cut ends with no empty line after it.
        let exact = "x".repeat(MAX_MESSAGE_BYTES + 1);
        let out = messages(&[format!("{exact}\nnext\n").as_bytes()]);
        assert_eq!(
            out.join("\n"),
            format!("{}\n{}\nnext", &exact[..MAX_MESSAGE_BYTES], "x")
        );
        // Bytes that are not UTF-8 become U+FFFD, three bytes each, still within an event.
        let out = messages(&[&vec![0xFF; MAX_MESSAGE_BYTES - 1]]);
        assert!(out.iter().all(|m| m.len() <= MAX_MESSAGE_BYTES));
        assert_eq!(out.concat().chars().count(), MAX_MESSAGE_BYTES - 1);
    }

    #[test]
    fn a_batch_keeps_to_putlogevents_limits() {
        let event = |timestamp_ms, len| Event {
            timestamp_ms,
            message: "x".repeat(len),
        };
        let mut batch = Batch::default();
        for _ in 0..MAX_BATCH_EVENTS {
            assert!(batch.fits(&event(0, 1)));
            batch.push(event(0, 1));
        }
        assert!(!batch.fits(&event(0, 1)), "10,000 events");
        assert_eq!(batch.take().len(), MAX_BATCH_EVENTS);

        batch.push(event(0, MAX_MESSAGE_BYTES));
        batch.push(event(0, MAX_MESSAGE_BYTES));
        batch.push(event(0, MAX_MESSAGE_BYTES));
        let left = MAX_BATCH_BYTES - 3 * (MAX_MESSAGE_BYTES + EVENT_OVERHEAD) - EVENT_OVERHEAD;
        assert!(batch.fits(&event(0, left)));
        assert!(
            !batch.fits(&event(0, left + 1)),
            "1 MiB with 26 bytes an event"
        );
        batch.take();

        batch.push(event(1_000, 1));
        assert!(batch.fits(&event(1_000 + MAX_BATCH_SPAN_MS - 1, 1)));
        assert!(!batch.fits(&event(1_000 + MAX_BATCH_SPAN_MS, 1)), "24 h");
    }

    #[test]
    fn the_default_group_is_the_document_name_cleaned_up() {
        assert_eq!(
            group_name("", "AWS-RunShellScript"),
            "/aws/ssm/AWS-RunShellScript"
        );
        assert_eq!(group_name("", "My doc:v2ü"), "/aws/ssm/My.doc.v2.");
        assert_eq!(group_name("given group", "Doc"), "given group");
    }

    #[test]
    fn streams_are_named_after_the_step() {
        let run = |step_id| RunFiles {
            plugin: "aws:runShellScript",
            step_id,
            run_path: "awsrunShellScript/x",
            stdout: Path::new("o"),
            stderr: Path::new("e"),
        };
        assert_eq!(
            stream_step(&run("aws:runShellScript")),
            "aws-runShellScript"
        );
        assert_eq!(stream_step(&run("second*")), "second-");
    }
}
