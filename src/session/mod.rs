//! Session Manager (docs/protocol.md §4.5.3–§4.8): each `interactive_shell` from the control channel
//! becomes one thread that owns the session's data channel and its plugin — a shell on a PTY, a
//! command, or a port forward — and reports `agent_task_complete` when it ends.

pub mod commands;
pub mod crypto;
pub mod datachannel;
pub mod logging;
pub mod plugin;
pub mod port;
pub mod run;
pub mod runas;
pub mod shell;
pub mod smux;
pub mod task;

use crate::mgs::control::{ControlHandler, ControlSender};
use crate::mgs::message::{self, AgentMessage};
use crate::sync::{lock, wait_until};
use plugin::{Ended, Plugin};
use run::{SessionEnv, Stop, StopKind};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use task::{SessionTask, SessionType};

/// `agent_task_complete` is sent up to this many times, a second apart, until acknowledged.
const COMPLETE_TRIES: u32 = 3;
const COMPLETE_RETRY: Duration = Duration::from_secs(1);

/// Starts the plugin of `task`; `client_version` comes from the handshake when there was one.
/// A logged session's transcript begins once its user is known.
pub fn start_plugin(
    env: &SessionEnv,
    task: &SessionTask,
    client_version: Option<&str>,
    log: Option<&mut logging::SessionLog>,
) -> Result<Box<dyn Plugin>, String> {
    let user = || {
        let req = runas::Request {
            run_as_enabled: task.run_as_enabled,
            run_as_user: &task.run_as_user,
            run_as_default_user: &task.run_as_default_user,
            run_as_elevated: task.run_as_elevated,
        };
        let user = runas::resolve(&req, &env.users).map_err(|e| e.to_string())?;
        if let Some(log) = log {
            log.begin(&user.name);
        }
        Ok::<_, String>(user)
    };
    Ok(match task.session_type {
        SessionType::StandardStream => {
            Box::new(shell::Shell::start(&user()?, None, &task.shell_profile)?)
        }
        SessionType::InteractiveCommands => {
            if task.commands.trim().is_empty() {
                return Err("Commands cannot be empty for session type InteractiveCommands".into());
            }
            Box::new(shell::Shell::start(&user()?, Some(&task.commands), "")?)
        }
        SessionType::NonInteractiveCommands => Box::new(commands::Commands::start(
            &user()?,
            &task.commands,
            task.separate_output_stream,
            &task.stdout_prefix,
            &task.stderr_prefix,
        )?),
        SessionType::Port => {
            let dest = port::destination(&task.host, &task.port_number, &env.denied_ips)
                .map_err(|e| e.to_string())?;
            match client_version {
                // As upstream `port.go`: multiplexing for local forwarding by clients that know it.
                Some(client)
                    if task.port_type == "LocalPortForwarding"
                        && version_cmp(client, smux::MIN_CLIENT_VERSION).is_ge() =>
                {
                    let keepalive = version_cmp(client, smux::KEEPALIVE_OFF_AFTER_CLIENT)
                        .is_le()
                        .then_some(smux::KEEPALIVE_INTERVAL);
                    Box::new(smux::PortMux::start(dest, keepalive).map_err(|e| e.to_string())?)
                }
                _ => Box::new(port::Port::start(dest).map_err(|e| e.to_string())?),
            }
        }
    })
}

/// Orders dotted versions component by component, numerically where both components are
/// numbers and as text otherwise; a missing component counts as 0 (`1.2` = `1.2.0`).
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut xs, mut ys) = (a.trim().split('.'), b.trim().split('.'));
    loop {
        let (x, y) = match (xs.next(), ys.next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (x, y) => (x.unwrap_or("0"), y.unwrap_or("0")),
        };
        let order = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if order.is_ne() {
            return order;
        }
    }
}

struct Completion {
    session_id: String,
    status: &'static str,
    output: String,
    logged: logging::Logged,
    tries: u32,
    last_sent: Instant,
}

struct Shared {
    env: SessionEnv,
    limit: usize,
    sender: ControlSender,
    active: Mutex<HashMap<String, Arc<Stop>>>,
    /// Notified whenever a session leaves `active`.
    ended: std::sync::Condvar,
    threads: Mutex<Vec<JoinHandle<()>>>,
    completions: Mutex<Vec<Completion>>,
}

/// The sessions of this agent; also the control channel's handler for session messages.
pub struct Sessions {
    shared: Arc<Shared>,
}

impl Sessions {
    pub fn new(env: SessionEnv, limit: usize, sender: ControlSender) -> Sessions {
        Sessions {
            shared: Arc::new(Shared {
                env,
                limit,
                sender,
                active: Mutex::default(),
                ended: std::sync::Condvar::new(),
                threads: Mutex::default(),
                completions: Mutex::default(),
            }),
        }
    }

    /// Ends every session (reported as stopped by the agent) and waits for their threads.
    pub fn shutdown(&self, limit: Duration) {
        for stop in lock(&self.shared.active).values() {
            stop.stop(StopKind::Shutdown);
        }
        let deadline = Instant::now() + limit;
        let mut active = lock(&self.shared.active);
        while !active.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                log::warn!("shutdown: {} session(s) did not end in time", active.len());
                break;
            }
            active = wait_until(&self.shared.ended, active, deadline).0;
        }
        drop(active);
        // A session leaves `active` as the last thing its thread does; a thread still stuck
        // past the deadline is left to the process exit rather than waited for.
        for handle in lock(&self.shared.threads)
            .drain(..)
            .filter(|h| h.is_finished())
        {
            let _ = handle.join();
        }
    }

    fn start(&self, payload: &[u8]) {
        let task = match task::parse(payload) {
            Ok(t) => t,
            Err(e) => return log::warn!("session: cannot start: {e}"),
        };
        let shared = Arc::clone(&self.shared);
        let stop = match Stop::new() {
            Ok(s) => Arc::new(s),
            Err(e) => {
                return shared.complete(
                    &task.session_id,
                    &Ended::Failed(format!("cannot start: {e}")),
                );
            }
        };
        if !shared.admit(&task.session_id, &stop) {
            return;
        }
        log::info!(
            "session {}: starting {}",
            task.session_id,
            task.session_type.as_str()
        );
        let name = format!(
            "session-{}",
            task.session_id.chars().take(12).collect::<String>()
        );
        let thread_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let t0 = Instant::now();
            let (ended, logged) = run::run(&thread_shared.env, &task, &stop);
            log::info!(
                "session {}: ended {} after {} s",
                task.session_id,
                ended,
                t0.elapsed().as_secs()
            );
            thread_shared.complete_logged(&task.session_id, &ended, logged);
            logging::prune(&thread_shared.env.logging);
            lock(&thread_shared.active).remove(&task.session_id);
            thread_shared.ended.notify_all();
        });
        match spawned {
            Ok(h) => {
                let mut threads = lock(&shared.threads);
                threads.retain(|t| !t.is_finished());
                threads.push(h);
            }
            Err(e) => log::error!("session: cannot start a thread: {e}"),
        }
    }

    fn terminate(&self, payload: &[u8]) {
        let Some(id) = task::closed_session_id(payload) else {
            return;
        };
        match lock(&self.shared.active).get(&id) {
            Some(stop) => {
                log::info!("session {id}: terminated by the service");
                stop.stop(StopKind::Terminated);
            }
            None => log::debug!("session {id}: channel_closed for a session that is not running"),
        }
    }
}

impl Shared {
    /// Queues `agent_task_complete` for `session_id` and sends it the first time.
    fn complete(&self, session_id: &str, ended: &Ended) {
        self.complete_logged(session_id, ended, logging::Logged::default());
    }

    /// [`Shared::complete`] of a session logged to `logged`.
    fn complete_logged(&self, session_id: &str, ended: &Ended, logged: logging::Logged) {
        let (status, output) = match ended {
            Ended::Success => ("Success", String::new()),
            Ended::Failed(why) => ("Failed", why.clone()),
        };
        let mut c = Completion {
            session_id: session_id.to_owned(),
            status,
            output,
            logged,
            tries: 0,
            last_sent: Instant::now(),
        };
        self.send_completion(&mut c);
        lock(&self.completions).push(c);
    }

    /// Makes the session active unless it already is or the agent runs its limit of sessions
    /// (then the session is failed).
    fn admit(&self, session_id: &str, stop: &Arc<Stop>) -> bool {
        let mut active = lock(&self.active);
        if active.contains_key(session_id) {
            log::info!("session {session_id}: already running; ignoring the repeated start");
            return false;
        }
        if active.len() >= self.limit {
            drop(active);
            let why = format!(
                "the agent already runs {} sessions (Mgs.SessionWorkersLimit)",
                self.limit
            );
            self.complete(session_id, &Ended::Failed(why));
            return false;
        }
        active.insert(session_id.to_owned(), Arc::clone(stop));
        true
    }

    fn send_completion(&self, c: &mut Completion) {
        c.tries += 1;
        c.last_sent = Instant::now();
        let body = json!({
            "SchemaVersion": 1,
            "TaskId": c.session_id,
            "Topic": message::AGENT_TASK_COMPLETE,
            "FinalTaskStatus": c.status,
            "IsRoutingFailure": false,
            "AwsAccountId": "",
            "InstanceId": self.env.instance_id,
            "Output": c.output,
            "S3Bucket": c.logged.s3_bucket,
            "S3UrlSuffix": c.logged.s3_url_suffix,
            "CwlGroup": c.logged.cwl_group,
            "CwlStream": c.logged.cwl_stream,
            "RetryNumber": c.tries,
        });
        self.sender.send(&AgentMessage::new(
            message::AGENT_TASK_COMPLETE,
            0,
            0,
            0,
            body.to_string().into_bytes(),
        ));
    }
}

impl ControlHandler for Sessions {
    fn connected(&self, _sender: &ControlSender) {}

    fn message(&self, message: AgentMessage, _sender: &ControlSender) {
        match message.message_type.as_str() {
            message::INTERACTIVE_SHELL => self.start(&message.payload),
            message::CHANNEL_CLOSED => self.terminate(&message.payload),
            message::AGENT_TASK_ACKNOWLEDGE => {
                let v: serde_json::Value =
                    serde_json::from_slice(&message.payload).unwrap_or_default();
                let id = v
                    .as_object()
                    .and_then(|o| crate::document::field(o, "TaskId"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_owned();
                lock(&self.shared.completions).retain(|c| c.session_id != id);
            }
            other => log::debug!("control channel: ignoring {other}"),
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        lock(&self.shared.completions)
            .iter()
            .map(|c| c.last_sent + COMPLETE_RETRY)
            .min()
    }

    fn tick(&self, _sender: &ControlSender) {
        let now = Instant::now();
        let mut completions = lock(&self.shared.completions);
        for c in completions
            .iter_mut()
            .filter(|c| now.saturating_duration_since(c.last_sent) >= COMPLETE_RETRY)
        {
            if c.tries < COMPLETE_TRIES {
                self.shared.send_completion(c);
            }
        }
        completions.retain(|c| {
            c.tries < COMPLETE_TRIES || now.saturating_duration_since(c.last_sent) < COMPLETE_RETRY
        });
    }
}

#[cfg(test)]
mod tests {
    use super::version_cmp;
    use std::cmp::Ordering::{Equal, Greater, Less};

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(version_cmp("1.2.463.0", "1.1.70"), Greater);
        assert_eq!(version_cmp("1.1.9", "1.1.70"), Less);
        assert_eq!(version_cmp("1.1.70.0", "1.1.70"), Equal);
        assert_eq!(version_cmp("1.2.331.0", "1.2.331.0"), Equal);
        assert_eq!(version_cmp("1.10.0", "1.9.99"), Greater);
        assert_eq!(version_cmp("", "1.1.70"), Less);
        assert_eq!(version_cmp("abc", "1.1.70"), Greater); // text orders after digits, as upstream
    }
}
