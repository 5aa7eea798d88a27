//! Session logging (docs/protocol.md §4.9), as upstream's shell plugin does it: the terminal
//! stream of a shell or command session, byte for byte as it went to the client, in a
//! transcript that reads like util-linux `script`'s; at the end it goes to S3 at
//! `<s3KeyPrefix>/<SessionId>.log`, and to CloudWatch Logs — streamed while the session runs
//! (JSON events, one stream per session) or uploaded whole at the end. Port sessions are not
//! logged. A session that asks for encrypted logging where there is none does not start.

use super::task::{LoggingInputs, SessionTask, SessionType};
use crate::aws::jsonrpc::AwsError;
use crate::aws::logs::{Event, LogsClient, LogsError};
use crate::aws::s3::S3Client;
use crate::sync::{lock, wait_until};
use crate::timefmt::Utc;
use serde::Serialize;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// A transcript keeps at most this many bytes of the session's stream (the rest is counted,
/// not kept), so one session cannot fill the disk.
pub const TRANSCRIPT_LIMIT: u64 = 64 * 1024 * 1024;
/// Upstream's `UploadFrequency`: how often the stream is sent to CloudWatch Logs.
const STREAM_EVERY: Duration = Duration::from_secs(1);
/// Upstream's `StreamMessageLengthThresholdInBytes` (streamed JSON events) and
/// `MessageLengthThresholdInBytes` (a transcript uploaded at the end).
const STREAM_EVENT_BYTES: usize = 33_000;
const UPLOAD_EVENT_BYTES: usize = 200_000;
/// Upstream's `maxNumberOfEventsPerCall`.
const EVENTS_PER_CALL: usize = 4;

/// upstream `mgsConfig.S3EncryptionErrorMsg` / `CloudWatchEncryptionErrorMsg`.
const S3_NOT_ENCRYPTED: &str = "We couldn't start the session because encryption is not set up on the selected Amazon S3 bucket. Either encrypt the bucket or choose an option to enable logging without encryption.";
const CWL_NOT_ENCRYPTED: &str = "We couldn't start the session because encryption is not set up on the selected CloudWatch Logs log group. Either encrypt the log group or choose an option to enable logging without encryption.";

/// What sessions need to log.
pub struct LoggingEnv {
    pub s3: Arc<S3Client>,
    /// The client, or why there is none (an unusable endpoint).
    pub logs: Result<LogsClient, String>,
    pub region: String,
    pub instance_id: String,
    /// One directory per session, holding its transcript until `retention` has passed.
    pub dir: PathBuf,
    /// `Ssm.SessionLogsDestination` = `disk`: a transcript even when nothing else wants one.
    pub keep_on_disk: bool,
    /// `Ssm.SessionLogsRetentionDurationHours`.
    pub retention: Duration,
}

/// Where a session was logged, for `agent_task_complete`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Logged {
    pub s3_bucket: String,
    pub s3_url_suffix: String,
    pub cwl_group: String,
    pub cwl_stream: String,
}

/// One session's transcript, from [`SessionLog::open`] to [`SessionLog::finish`].
pub struct SessionLog {
    inputs: LoggingInputs,
    session_id: String,
    s3: Arc<S3Client>,
    logs: Option<LogsClient>,
    /// Event fields of a streamed session; `None`: not streamed.
    stream: Option<Identity>,
    path: PathBuf,
    /// Set by `begin`, once the plugin runs; a session that never ran is not logged.
    file: Option<File>,
    /// Where the stream starts in the file (after the "Script started" line).
    start: u64,
    /// Bytes of the stream in the file.
    kept: u64,
    /// Bytes of the stream kept at most ([`TRANSCRIPT_LIMIT`]; what was kept when a write failed).
    limit: u64,
    streamer: Option<Streamer>,
}

/// The fixed part of a streamed event (upstream `CloudWatchMessage`), in upstream's field order.
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Identity {
    event_version: &'static str,
    event_time: String,
    aws_region: String,
    target: Target,
    user_identity: UserIdentity,
    run_as_user: String,
    session_id: String,
    session_data: Vec<String>,
}

#[derive(Clone, Serialize)]
struct Target {
    id: String,
}

#[derive(Clone, Serialize)]
struct UserIdentity {
    arn: String,
}

impl SessionLog {
    /// Checks the destinations `task` names, as upstream's `validate`: `Ok(None)` when the
    /// session is not logged, `Err` with upstream's text when it must not start.
    pub fn open(env: &LoggingEnv, task: &SessionTask) -> Result<Option<SessionLog>, String> {
        let inputs = &task.logging;
        let wanted = !inputs.s3_bucket.is_empty() || !inputs.cloudwatch_group.is_empty();
        if task.session_type == SessionType::Port || !(wanted || env.keep_on_disk) {
            return Ok(None);
        }
        let logs = match (&env.logs, inputs.cloudwatch_group.is_empty()) {
            (_, true) => None,
            (Ok(logs), false) => Some(logs.clone()),
            (Err(why), false) => {
                log::warn!("session {}: no CloudWatch Logs: {why}", task.session_id);
                None
            }
        };
        let streamed = check_group(logs.as_ref(), task)?;
        check_bucket(&env.s3, inputs)?;
        let stream = streamed.then(|| Identity {
            event_version: "1.0",
            event_time: String::new(),
            aws_region: env.region.clone(),
            target: Target {
                id: env.instance_id.clone(),
            },
            user_identity: UserIdentity {
                arn: inputs.session_owner.clone(),
            },
            run_as_user: String::new(),
            session_id: task.session_id.clone(),
            session_data: Vec::new(),
        });
        Ok(Some(SessionLog {
            inputs: inputs.clone(),
            session_id: task.session_id.clone(),
            s3: env.s3.clone(),
            logs,
            stream,
            path: env
                .dir
                .join(&task.session_id)
                .join(format!("{}.log", task.session_id)),
            file: None,
            start: 0,
            kept: 0,
            limit: TRANSCRIPT_LIMIT,
            streamer: None,
        }))
    }

    /// The plugin runs as `run_as_user`: the transcript starts, and its streaming.
    pub fn begin(&mut self, run_as_user: &str) {
        let opened = self
            .path
            .parent()
            .map_or(Ok(()), crate::state::ensure_private_dir)
            .map_err(|e| e.to_string())
            .and_then(|()| File::create(&self.path).map_err(|e| e.to_string()));
        let mut file = match opened {
            Ok(f) => f,
            Err(e) => return log::warn!("session {}: no transcript: {e}", self.session_id),
        };
        let header = format!(
            "Script started on {} [COMMAND=\"sh\"]\n",
            script_time(SystemTime::now())
        );
        if let Err(e) = file.write_all(header.as_bytes()) {
            return log::warn!("session {}: no transcript: {e}", self.session_id);
        }
        self.start = header.len() as u64;
        if let (Some(mut identity), Some(logs)) = (self.stream.take(), self.logs.clone()) {
            identity.run_as_user = run_as_user.to_owned();
            let group = self.inputs.cloudwatch_group.clone();
            match Streamer::start(logs, group, identity, &self.path, self.start) {
                Ok(s) => self.streamer = Some(s),
                Err(e) => log::warn!("session {}: not streamed: {e}", self.session_id),
            }
        }
        self.file = Some(file);
    }

    /// Session output as it went to the client.
    pub fn record(&mut self, bytes: &[u8]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let room = self.limit.saturating_sub(self.kept) as usize;
        let kept = &bytes[..bytes.len().min(room)];
        if kept.len() < bytes.len() && room > 0 {
            log::warn!(
                "session {}: the transcript reached {} bytes; the rest is not logged",
                self.session_id,
                self.limit
            );
        }
        match file.write_all(kept) {
            Ok(()) => self.kept += kept.len() as u64,
            Err(e) => {
                // What is in the file still goes out at the end; nothing more is written.
                log::warn!("session {}: transcript write failed: {e}", self.session_id);
                self.limit = self.kept;
            }
        }
    }

    /// Ends the transcript and sends it where the session asked; says where it went.
    pub fn finish(mut self) -> Logged {
        let Some(mut file) = self.file.take() else {
            return Logged::default();
        };
        if let Some(streamer) = self.streamer.take() {
            streamer.finish(self.start + self.kept);
        }
        let footer = format!(
            "\nScript done on {} [COMMAND_EXIT_CODE=\"0\"]\n",
            script_time(SystemTime::now())
        );
        if let Err(e) = file
            .write_all(footer.as_bytes())
            .and_then(|()| file.flush())
        {
            log::warn!("session {}: transcript write failed: {e}", self.session_id);
        }
        drop(file);
        let mut logged = Logged::default();
        let inputs = &self.inputs;
        if !inputs.s3_bucket.is_empty() {
            let key = s3_key(&inputs.s3_key_prefix, &format!("{}.log", self.session_id));
            if let Err(e) = self.s3.put_file(&inputs.s3_bucket, &key, &self.path) {
                log::error!(
                    "session {}: failed to upload the transcript to S3: {e}",
                    self.session_id
                );
            }
            logged.s3_bucket = inputs.s3_bucket.clone();
            logged.s3_url_suffix = key;
        }
        if !inputs.cloudwatch_group.is_empty() {
            if !inputs.cloudwatch_streaming
                && let Some(logs) = &self.logs
            {
                upload_whole(logs, &inputs.cloudwatch_group, &self.session_id, &self.path);
            }
            logged.cwl_group = inputs.cloudwatch_group.clone();
            logged.cwl_stream = self.session_id.clone();
        }
        logged
    }
}

/// Upstream's CloudWatch half of `validate`: a missing (or unreadable) group means no
/// streaming, only a warning — unless the group must be KMS-encrypted. Returns whether the
/// session is streamed.
fn check_group(logs: Option<&LogsClient>, task: &SessionTask) -> Result<bool, String> {
    let inputs = &task.logging;
    let Some(logs) = logs else {
        return if inputs.cloudwatch_encryption && !inputs.cloudwatch_group.is_empty() {
            Err(CWL_NOT_ENCRYPTED.into())
        } else {
            Ok(false)
        };
    };
    let group = logs
        .describe_log_group(&inputs.cloudwatch_group)
        .unwrap_or_else(|e| {
            log::warn!("session {}: {e}", task.session_id);
            None
        });
    if group.is_none() {
        log::warn!(
            "session {}: The CloudWatch log group specified in session preferences either does not exist or unable to validate its existence. This might result in no logging of session data to CloudWatch.",
            task.session_id
        );
    }
    if inputs.cloudwatch_encryption && group.as_ref().is_none_or(|g| g.kms_key_id.is_none()) {
        return Err(CWL_NOT_ENCRYPTED.into());
    }
    // Upstream streams a shell's terminal, not a command's pipes.
    let streams = task.session_type != SessionType::NonInteractiveCommands;
    Ok(group.is_some() && inputs.cloudwatch_streaming && streams)
}

/// Upstream's S3 half of `validate` (`IsBucketEncrypted`).
fn check_bucket(s3: &S3Client, inputs: &LoggingInputs) -> Result<(), String> {
    if inputs.s3_bucket.is_empty() || !inputs.s3_encryption {
        return Ok(());
    }
    match s3.default_encryption(&inputs.s3_bucket) {
        Ok((algorithm, _)) if matches!(algorithm.as_str(), "aws:kms" | "AES256") => Ok(()),
        Ok(_) => Err(S3_NOT_ENCRYPTED.into()),
        Err(e) => Err(format!(
            "Couldn't start the session because we are unable to validate encryption on Amazon S3 bucket. Error: {e}"
        )),
    }
}

/// Upstream's `fileutil.BuildS3Path`: the prefix and the name joined by one `/`.
fn s3_key(prefix: &str, name: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

/// util-linux `script`'s time stamp (`strtime_iso`, ISO_TIMESTAMP): `2024-05-01 12:00:00+00:00`.
fn script_time(t: SystemTime) -> String {
    let u = Utc::from_system(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}+00:00",
        u.year, u.month, u.day, u.hour, u.minute, u.second
    )
}

/// RFC 3339 in UTC, seconds (Go's `time.RFC3339` of a UTC time).
fn rfc3339(t: SystemTime) -> String {
    let u = Utc::from_system(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        u.year, u.month, u.day, u.hour, u.minute, u.second
    )
}

/// Terminal bytes as text for a log event: escape sequences (CSI, OSC, two-byte `ESC x`) and
/// other control characters dropped, as upstream's `ansi.Strip`; tabs and line ends are kept.
fn strip_controls(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                Some('[') => {
                    // Parameters and intermediates up to the final byte (@ to ~).
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    // To BEL or ST (ESC \).
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                Some(c) if (' '..='/').contains(&c) => {
                    chars.next(); // ESC ( B and the like: one more byte
                }
                _ => {}
            },
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Lines of the stream as upstream's `buildEventInfo` puts them into `sessionData`.
fn session_data(text: &str) -> Vec<String> {
    let text = text.replace('\t', " ").replace('\r', "");
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    if lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

/// Splits `bytes` into pieces of whole lines of at most `limit` bytes (a longer line is cut).
fn pieces(bytes: &[u8], limit: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let window = &rest[..rest.len().min(limit)];
        let cut = match window.iter().rposition(|&b| b == b'\n') {
            Some(n) if window.len() < rest.len() => n + 1,
            _ => window.len(),
        };
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    out
}

/// Sends `events` in calls of [`EVENTS_PER_CALL`].
fn send(
    logs: &LogsClient,
    group: &str,
    stream: &str,
    events: &[Event],
    token: &mut Option<String>,
) -> Result<(), LogsError> {
    for batch in events.chunks(EVENTS_PER_CALL) {
        *token = logs.put_log_events(group, stream, batch, token.take())?;
    }
    Ok(())
}

/// A failure that ends streaming (upstream `StreamData`): the stream could not be made, or the
/// group or stream is gone. Others are tried again at the next tick.
fn ends_streaming(e: &LogsError) -> bool {
    e.operation == "CreateLogStream"
        || matches!(&e.source, AwsError::Service { code, .. } if code == "ResourceNotFoundException")
}

/// Logging without streaming: the whole transcript at the end, as plain events.
fn upload_whole(logs: &LogsClient, group: &str, session_id: &str, path: &Path) {
    let mut bytes = Vec::new();
    if let Err(e) =
        File::open(path).and_then(|f| f.take(TRANSCRIPT_LIMIT + 4096).read_to_end(&mut bytes))
    {
        return log::warn!("session {session_id}: cannot read the transcript: {e}");
    }
    if let Err(e) = logs.create_log_stream(group, session_id) {
        return log::warn!("session {session_id}: {e}");
    }
    let now = crate::timefmt::unix_millis(SystemTime::now());
    let events: Vec<Event> = pieces(&bytes, UPLOAD_EVENT_BYTES)
        .into_iter()
        .map(|p| {
            let text = String::from_utf8_lossy(p).replace("\r\n", "\n");
            Event {
                timestamp_ms: now,
                message: text.strip_suffix('\n').map(str::to_owned).unwrap_or(text),
            }
        })
        .filter(|e| !e.message.is_empty())
        .collect();
    if let Err(e) = send(logs, group, session_id, &events, &mut None) {
        log::warn!("session {session_id}: failed to upload session data to CloudWatch: {e}");
    }
}

/// Streams the transcript to CloudWatch Logs while the session runs (upstream `StreamData`):
/// every second the whole lines written since the last send; at the end the rest.
struct Streamer {
    /// The transcript's length at the end of the session's stream, once it has ended.
    end: Arc<(Mutex<Option<u64>>, Condvar)>,
    thread: JoinHandle<()>,
}

impl Streamer {
    fn start(
        logs: LogsClient,
        group: String,
        identity: Identity,
        path: &Path,
        start: u64,
    ) -> std::io::Result<Streamer> {
        let end = Arc::new((Mutex::new(None), Condvar::new()));
        let file = File::open(path)?;
        let mut tail = Tail {
            logs,
            group,
            identity,
            file,
            at: start,
            token: None,
            created: false,
        };
        let shared = end.clone();
        let thread = std::thread::Builder::new()
            .name(format!(
                "cwl-{}",
                tail.identity
                    .session_id
                    .chars()
                    .take(12)
                    .collect::<String>()
            ))
            .spawn(move || tail.run(&shared))?;
        Ok(Streamer { end, thread })
    }

    /// The stream ended at byte `end` of the transcript: what is left goes out, then the thread ends.
    fn finish(self, end: u64) {
        *lock(&self.end.0) = Some(end);
        self.end.1.notify_all();
        let _ = self.thread.join();
    }
}

struct Tail {
    logs: LogsClient,
    group: String,
    identity: Identity,
    file: File,
    /// Where the next unsent line starts.
    at: u64,
    token: Option<String>,
    created: bool,
}

impl Tail {
    fn run(&mut self, end: &(Mutex<Option<u64>>, Condvar)) {
        loop {
            let mut done = lock(&end.0);
            let deadline = Instant::now() + STREAM_EVERY;
            while done.is_none() {
                let (guard, timed_out) = wait_until(&end.1, done, deadline);
                done = guard;
                if timed_out {
                    break;
                }
            }
            let last = *done;
            drop(done);
            if !self.send_new(last) || last.is_some() {
                return;
            }
        }
    }

    /// Sends what was written since the last call: whole lines, or all of it up to `end`.
    /// False once streaming has failed for good; what failed otherwise is sent again next time.
    fn send_new(&mut self, end: Option<u64>) -> bool {
        loop {
            let want = EVENTS_PER_CALL * STREAM_EVENT_BYTES;
            let limit = end.map_or(want as u64, |e| e.saturating_sub(self.at).min(want as u64));
            let mut chunk = Vec::new();
            let read = self
                .file
                .seek(SeekFrom::Start(self.at))
                .and_then(|_| (&mut self.file).take(limit).read_to_end(&mut chunk));
            if let Err(e) = read {
                log::warn!(
                    "session {}: cannot read the transcript: {e}",
                    self.identity.session_id
                );
                return false;
            }
            let complete = end.is_some() || chunk.len() == want;
            let used = match chunk.iter().rposition(|&b| b == b'\n') {
                _ if complete => chunk.len(),
                Some(n) => n + 1,
                None => 0,
            };
            if used == 0 {
                return true;
            }
            if let Err(e) = self.put(&chunk[..used]) {
                let id = &self.identity.session_id;
                log::warn!("session {id}: failed to upload session data to CloudWatch: {e}");
                return !ends_streaming(&e);
            }
            self.at += used as u64;
            if used < want {
                return true;
            }
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), LogsError> {
        let stream = self.identity.session_id.clone();
        if !self.created {
            self.logs.create_log_stream(&self.group, &stream)?;
            self.created = true;
        }
        let now = SystemTime::now();
        let events: Vec<Event> = pieces(bytes, STREAM_EVENT_BYTES)
            .into_iter()
            .filter_map(|p| {
                let lines = session_data(&strip_controls(p));
                if lines.is_empty() {
                    return None;
                }
                let mut message = self.identity.clone();
                message.event_time = rfc3339(now);
                message.session_data = lines;
                let message = serde_json::to_string(&message).ok()?;
                Some(Event {
                    timestamp_ms: crate::timefmt::unix_millis(now),
                    message,
                })
            })
            .collect();
        send(&self.logs, &self.group, &stream, &events, &mut self.token)
    }
}

/// Removes the directories of sessions that ended longer than the retention ago (upstream
/// `DeleteSessionOrchestrationDirectories`, run after each session).
pub fn prune(env: &LoggingEnv) {
    let Ok(entries) = std::fs::read_dir(&env.dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > env.retention);
        if old && let Err(e) = std::fs::remove_dir_all(entry.path()) {
            log::warn!(
                "session logs: cannot remove {}: {e}",
                entry.path().display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::credentials::{Credentials, StaticCredentials};
    use crate::aws::http::{HttpClient, HttpConfig};
    use crate::state::testdir::TestDir;

    /// Sessions logged to disk only (`Ssm.SessionLogsDestination` = `disk`) under `dir`.
    fn disk_only(dir: &Path) -> LoggingEnv {
        let config = HttpConfig {
            user_agent: "ssm-lite-test".into(),
            extra_ca_files: vec![],
        };
        let http = Arc::new(HttpClient::with_proxies(&config, &Default::default()).unwrap());
        let credentials = Arc::new(StaticCredentials(Credentials {
            access_key_id: "AKIDTEST".into(),
            secret_access_key: "secret".into(),
            session_token: None,
            expires_at: None,
        }));
        let settings = crate::aws::s3::S3Settings {
            endpoint: "http://127.0.0.1:9".into(),
            service_domain: "amazonaws.com".into(),
            region: "us-east-1".into(),
        };
        LoggingEnv {
            s3: Arc::new(S3Client::new(http, credentials, settings)),
            logs: Err("not in this test".into()),
            region: "us-east-1".into(),
            instance_id: "i-1".into(),
            dir: dir.to_owned(),
            keep_on_disk: true,
            retention: Duration::from_secs(3600),
        }
    }

    fn task(kind: &str) -> SessionTask {
        let content = serde_json::json!({ "SessionId": "s-log", "DocumentContent": {
            "schemaVersion": "1.0", "sessionType": kind } });
        let payload = serde_json::json!({ "Content": content.to_string() }).to_string();
        super::super::task::parse(payload.as_bytes()).unwrap()
    }

    #[test]
    fn a_transcript_on_disk_reads_like_scripts_and_is_bounded() {
        let dir = TestDir::new("session-log");
        let env = disk_only(dir.path());
        assert!(
            SessionLog::open(&env, &task("Port")).unwrap().is_none(),
            "ports are not logged"
        );
        let mut log = SessionLog::open(&env, &task("Standard_Stream"))
            .unwrap()
            .unwrap();
        log.limit = 10;
        log.begin("ops");
        log.record(b"$ ls\r\n");
        log.record(b"a.txt b.txt\r\n");
        assert_eq!(
            log.finish(),
            Logged::default(),
            "logged nowhere but on disk"
        );
        let text = std::fs::read_to_string(dir.path().join("s-log/s-log.log")).unwrap();
        let (head, rest) = text.split_once('\n').unwrap();
        assert!(
            head.starts_with("Script started on ") && head.ends_with(" [COMMAND=\"sh\"]"),
            "{head}"
        );
        let (body, foot) = rest.split_once("\nScript done on ").unwrap();
        assert_eq!(
            body, "$ ls\r\na.tx",
            "the first 10 bytes of the stream, as they were"
        );
        assert!(foot.ends_with(" [COMMAND_EXIT_CODE=\"0\"]\n"), "{foot}");
    }

    #[test]
    fn sessions_past_the_retention_are_pruned() {
        let dir = TestDir::new("session-prune");
        let env = disk_only(dir.path());
        for name in ["s-old", "s-new"] {
            std::fs::create_dir_all(dir.path().join(name)).unwrap();
        }
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        File::open(dir.path().join("s-old"))
            .and_then(|d| d.set_modified(two_hours_ago))
            .unwrap();
        prune(&env);
        assert!(!dir.path().join("s-old").exists(), "past the retention");
        assert!(dir.path().join("s-new").exists(), "within the retention");
    }

    #[test]
    fn events_carry_the_lines_without_terminal_controls() {
        let raw = b"\x1b[?2004h\x1b]0;ops@host: ~\x07$ echo hi\r\r\nhi\r\n\x1b(B\x1b[01;32mok\x1b[0m\tdone\r\n";
        assert_eq!(
            session_data(&strip_controls(raw)),
            vec!["$ echo hi", "hi", "ok done"]
        );
        let identity = Identity {
            event_version: "1.0",
            event_time: rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            aws_region: "us-east-1".into(),
            target: Target { id: "i-1".into() },
            user_identity: UserIdentity {
                arn: "arn:aws:iam::1:user/u".into(),
            },
            run_as_user: "ssm-user".into(),
            session_id: "s-1".into(),
            session_data: vec!["hi".into()],
        };
        assert_eq!(
            serde_json::to_string(&identity).unwrap(),
            r#"{"eventVersion":"1.0","eventTime":"2023-11-14T22:13:20Z","awsRegion":"us-east-1","target":{"id":"i-1"},"userIdentity":{"arn":"arn:aws:iam::1:user/u"},"runAsUser":"ssm-user","sessionId":"s-1","sessionData":["hi"]}"#
        );
    }

    #[test]
    fn long_streams_split_at_line_ends_within_the_limit() {
        let text = b"aaaa\nbbbb\ncccccccccc\nd";
        let got = pieces(text, 8);
        assert_eq!(got, vec![&b"aaaa\n"[..], b"bbbb\n", b"cccccccc", b"cc\nd"]);
        assert!(pieces(b"", 8).is_empty());
    }

    #[test]
    fn keys_and_time_stamps_as_upstream() {
        assert_eq!(s3_key("sessions/", "s-1.log"), "sessions/s-1.log");
        assert_eq!(s3_key("", "s-1.log"), "s-1.log");
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(script_time(t), "2023-11-14 22:13:20+00:00");
    }
}
