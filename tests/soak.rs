//! Reliability under load, faults and crashes: the real agent against the emulator.
//!
//! * Soak: commands over both transports and sessions while the emulator switches faults on one
//!   window at a time (5xx, throttling, a credential error, connection resets, slow answers,
//!   WebSocket drops, paused publication, a clock jump). Every command must end with its final
//!   reply, every session with its task-complete, and the agent must come back to its baseline
//!   fds and threads, with bounded memory and no CPU use while idle.
//! * Crash loop: SIGKILL at random points (receipt, step start, mid-step, spooling, anywhere) and
//!   restart, again and again: every command ends with exactly one terminal status, and no step
//!   runs twice except a step that exited 194 (reboot).
//!
//! The `_short` variants run in `make test` (about two minutes each, side by side); `make soak`
//! runs the full ones (10,000 commands and 200 sessions; 100 kills), sized by
//! `SSM_LITE_SOAK_COMMANDS`, `SSM_LITE_SOAK_SESSIONS` and `SSM_LITE_CRASH_KILLS`. Each run prints
//! its seed; `SSM_LITE_SOAK_SEED` replays one.

mod common;

use common::*;
use serde_json::{Value, json};
use ssm_emulator::{
    Emulator, FaultWindow, Options, Reply, SessionSpec, State, aws_run_shell_script_payload,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Shared pieces

/// splitmix64: a small deterministic generator, so a failing run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    /// Seeded from `SSM_LITE_SOAK_SEED`, else from the clock; the seed is printed.
    fn seeded(test: &str) -> Rng {
        let seed = std::env::var("SSM_LITE_SOAK_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap();
                t.as_nanos() as u64
            });
        eprintln!("{test}: seed {seed} (replay with SSM_LITE_SOAK_SEED={seed})");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn millis(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.below(max + 1))
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What /proc says about the agent process.
#[derive(Debug, Clone, Copy)]
struct ProcStats {
    rss_kib: u64,
    peak_rss_kib: u64,
    threads: u64,
    fds: usize,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
}

fn status_field(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/<pid>/status:\n{status}"))
}

fn proc_stats(pid: u32) -> ProcStats {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("agent alive");
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("agent alive");
    // Fields after the command name (which may contain spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| fields[i - 3].parse::<u64>().expect("stat number");
    ProcStats {
        rss_kib: status_field(&status, "VmRSS:"),
        peak_rss_kib: status_field(&status, "VmHWM:"),
        threads: status_field(&status, "Threads:"),
        fds: fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("agent alive")
            .count(),
        cpu_ticks: tick(14) + tick(15),
    }
}

fn clock_ticks_per_second() -> u64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf CLK_TCK");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK is a number")
}

/// Share of one CPU the agent used over `interval` while nothing was asked of it.
fn idle_cpu_percent(pid: u32, interval: Duration) -> f64 {
    let before = proc_stats(pid).cpu_ticks;
    std::thread::sleep(interval); // the interval being measured
    let used = proc_stats(pid).cpu_ticks - before;
    used as f64 / clock_ticks_per_second() as f64 / interval.as_secs_f64() * 100.0
}

fn agent_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').unwrap_or(0)..].starts_with(") Z"))
}

/// A CommandId; `tag` keeps the two tests' ids apart.
fn command_id(tag: u32, n: usize) -> String {
    format!("{tag:08x}-0000-4000-8000-{n:012x}")
}

/// Which transport a command went over, with its MessageId (ec2messages) or JobId (MGS).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Via {
    Mds(String),
    Mgs(String),
}

impl Via {
    fn id(&self) -> &str {
        match self {
            Via::Mds(id) | Via::Mgs(id) => id,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Via::Mds(_) => "ec2messages",
            Via::Mgs(_) => "MGS",
        }
    }

    fn replies<'a>(&self, st: &'a State) -> &'a [Reply] {
        match self {
            Via::Mds(id) => st.replies(id),
            Via::Mgs(id) => st.mgs().job_replies(id),
        }
    }

    /// The distinct terminal documentStatus values received, in arrival order.
    fn terminal_statuses(&self, st: &State) -> Vec<String> {
        let mut seen = Vec::new();
        for r in self.replies(st).iter().filter(|r| r.is_final()) {
            if !seen.iter().any(|s| s == r.document_status()) {
                seen.push(r.document_status().to_owned());
            }
        }
        seen
    }

    fn has_final(&self, st: &State) -> bool {
        self.replies(st).iter().any(Reply::is_final)
    }

    /// An MGS job the agent has not taken yet (no ack, or "buffer full"): the service sends
    /// such jobs again, and a job written to a connection that a fault then closed is lost.
    fn needs_resend(&self, st: &State) -> bool {
        match self {
            Via::Mds(_) => false,
            Via::Mgs(id) => {
                let acks = st.mgs().job_acks(id);
                !self.has_final(st)
                    && !acks
                        .iter()
                        .any(|a| a.status_code == "200" || a.status_code == "51405")
            }
        }
    }
}

/// Whether the agent holds a poll of ec2messages now, which a message sent then answers at once.
/// Between two polls a message could wait for good: once the control channel has been up for a
/// minute the agent stops polling and only an AccessDenied from MGS starts it again
/// (docs/protocol.md §0), while the service routes Run Command over MGS.
fn polling_mds(st: &State) -> bool {
    st.held_polls() > 0
}

/// Sends `payload` over ec2messages when `prefer_mds` and the agent is polling it, else over
/// MGS (queued while the control channel is down), as the service routes Run Command.
fn send(emu: &Emulator, payload: &Value, prefer_mds: bool) -> Via {
    if prefer_mds && emu.read(polling_mds) {
        Via::Mds(emu.send_command(payload))
    } else {
        Via::Mgs(emu.send_agent_job(payload))
    }
}

/// The replies spool of the agent (state dir of the EC2 instance the emulator plays).
fn spool_dir(agent: &Agent) -> PathBuf {
    agent
        .state_dir()
        .join(Options::default().instance_id)
        .join("replies")
}

fn dir_has_entries(p: &Path) -> bool {
    fs::read_dir(p).is_ok_and(|mut d| d.next().is_some())
}

fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !ready() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Soak

struct SoakScale {
    commands: usize,
    sessions: usize,
    /// How long each fault window stays open, and the clean gap after it.
    window: Duration,
    gap: Duration,
    /// Commands (and sessions) not final yet, at most.
    in_flight: usize,
    /// How long the last final replies may take after the last command was sent.
    drain: Duration,
    idle: Duration,
}

/// One fault window as it happened.
#[derive(Debug, Clone)]
struct Window {
    name: &'static str,
    from: Instant,
    to: Instant,
}

fn fault_kinds() -> Vec<(&'static str, FaultWindow)> {
    vec![
        (
            "credential error (ExpiredTokenException)",
            FaultWindow::expired_token(),
        ),
        ("5xx", FaultWindow::server_error()),
        ("throttling", FaultWindow::throttling()),
        ("connection resets", FaultWindow::Reset),
        (
            "slow answers (1.5 s)",
            FaultWindow::Slow(Duration::from_millis(1500)),
        ),
        (
            "WebSocket drops (every 1 s)",
            FaultWindow::WebSocketDrops {
                every: Duration::from_secs(1),
            },
        ),
        ("paused publication", FaultWindow::PausedPublication),
        (
            "clock jump (+10 min)",
            FaultWindow::ClockJump(Duration::from_secs(600)),
        ),
    ]
}

/// Opens each kind of fault in turn until `stop` is set and at least one full round is done.
fn run_faults(
    emu: &Emulator,
    scale: &SoakScale,
    stop: &AtomicBool,
    timeline: &Mutex<Vec<Window>>,
    limit: Instant,
) {
    let kinds = fault_kinds();
    for (n, (name, fault)) in kinds.iter().cycle().enumerate() {
        if (stop.load(Ordering::SeqCst) && n >= kinds.len()) || Instant::now() >= limit {
            return;
        }
        std::thread::sleep(scale.gap); // a clean gap before each fault
        let from = Instant::now();
        emu.fault_window(fault.clone(), scale.window);
        std::thread::sleep(scale.window); // the window is open this long
        timeline.lock().unwrap().push(Window {
            name,
            from,
            to: Instant::now(),
        });
    }
}

/// The faults open at any time between `from` and `to`.
fn faults_between(timeline: &[Window], from: Instant, to: Instant) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = timeline
        .iter()
        .filter(|w| w.from <= to && w.to >= from)
        .map(|w| w.name)
        .collect();
    names.dedup();
    names
}

struct Sent {
    via: Via,
    payload: Value,
    at: Instant,
    last_send: Instant,
    resends: u32,
}

/// A command open this long no longer counts against the in-flight limit: its final reply
/// may be lost for good.
const STALLED: Duration = Duration::from_secs(30);

/// The commands sent so far, and which of them have no final reply yet.
#[derive(Default)]
struct Load {
    sent: Vec<Sent>,
    open: Vec<usize>,
}

impl Load {
    fn push(&mut self, via: Via, payload: Value) {
        let now = Instant::now();
        self.open.push(self.sent.len());
        self.sent.push(Sent {
            via,
            payload,
            at: now,
            last_send: now,
            resends: 0,
        });
    }

    /// Forgets the finished ones and sends jobs again that the agent has not taken after
    /// `after` (at most 50 times each); returns how many are still open and younger than
    /// [`STALLED`] (older ones do not hold the load back; the report names them).
    fn refresh(&mut self, emu: &Emulator, after: Duration) -> usize {
        let sent = &mut self.sent;
        self.open
            .retain(|&i| !emu.read(|st| sent[i].via.has_final(st)));
        for &i in &self.open {
            let s = &mut sent[i];
            if s.resends < 50
                && s.last_send.elapsed() >= after
                && emu.read(|st| s.via.needs_resend(st))
            {
                let again = emu.send_agent_job(&s.payload);
                assert_eq!(again, s.via.id(), "a job keeps its id when sent again");
                s.last_send = Instant::now();
                s.resends += 1;
            }
        }
        self.open
            .iter()
            .filter(|&&i| self.sent[i].at.elapsed() < STALLED)
            .count()
    }

    /// How many have no final reply yet.
    fn open(&self) -> usize {
        self.open.len()
    }
}

/// The result of one session, for the report.
struct SessionOutcome {
    id: String,
    started: Instant,
    problem: Option<String>,
}

fn run_session(emu: &Emulator, n: usize) -> SessionOutcome {
    let started = Instant::now();
    let text = format!("soak-session-{n}");
    let spec = if n.is_multiple_of(2) {
        SessionSpec::non_interactive_commands(&format!("echo {text}"), false)
    } else {
        SessionSpec::interactive_commands(&format!("echo {text}"))
    };
    let s = emu.open_session(spec);
    let limit = Duration::from_secs(90);
    let problem = match emu.wait_task_complete(s.id(), limit) {
        None => Some(format!(
            "no agent_task_complete within {limit:?} (data channel opened {} time(s); \
             states {:?}; output {:?})",
            s.stats().connects,
            s.session_state(),
            s.output_string()
        )),
        Some(done) if done.final_status != "Success" => {
            Some(format!("ended {}: {}", done.final_status, done.payload))
        }
        Some(_) if !s.output_string().contains(&text) => {
            Some(format!("output {:?} lacks {text:?}", s.output_string()))
        }
        Some(_) => None,
    };
    SessionOutcome {
        id: s.id().to_owned(),
        started,
        problem,
    }
}

/// Starts `scale.sessions` sessions spread over `spread`, a few at a time.
fn run_sessions(emu: &Emulator, scale: &SoakScale, spread: Duration) -> Vec<SessionOutcome> {
    let outcomes = Mutex::new(Vec::new());
    let next = Mutex::new(0usize);
    let start = Instant::now();
    let per = spread / scale.sessions.max(1) as u32;
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                loop {
                    let n = {
                        let mut next = next.lock().unwrap();
                        *next += 1;
                        *next - 1
                    };
                    if n >= scale.sessions {
                        return;
                    }
                    let due = start + per * n as u32;
                    std::thread::sleep(due.saturating_duration_since(Instant::now())); // pacing
                    let outcome = run_session(emu, n);
                    outcomes.lock().unwrap().push(outcome);
                }
            });
        }
    });
    outcomes.into_inner().unwrap()
}

/// A few commands over each transport and one session, so every lazily made thread and
/// connection exists before the baseline is taken.
fn warm_up(emu: &Emulator, agent: &Agent) {
    assert!(
        emu.wait_mgs_connected(Duration::from_secs(30)),
        "control channel; log:\n{}",
        agent.log()
    );
    for n in 0..3 {
        let p = aws_run_shell_script_payload(&command_id(0x50a0, n), &["echo warm"], 60);
        let mds = Via::Mds(emu.send_command(&p));
        let p = aws_run_shell_script_payload(&command_id(0x50a1, n), &["echo warm"], 60);
        let mgs = Via::Mgs(emu.send_agent_job(&p));
        for via in [mds, mgs] {
            assert!(
                emu.wait_until(Duration::from_secs(30), |st| via.has_final(st)),
                "warm-up command {} over {} finished",
                via.id(),
                via.name()
            );
        }
    }
    let s = run_session(emu, 0);
    assert!(s.problem.is_none(), "warm-up session: {:?}", s.problem);
    settle(agent);
}

/// Waits until the agent has nothing spooled and no children, then a moment more.
fn settle(agent: &Agent) {
    let spool = spool_dir(agent);
    wait_until(Duration::from_secs(30), || !dir_has_entries(&spool));
    let children = format!("/proc/{0}/task/{0}/children", agent.pid());
    wait_until(Duration::from_secs(30), || {
        fs::read_to_string(&children).is_ok_and(|c| c.trim().is_empty())
    });
    std::thread::sleep(Duration::from_secs(2)); // let finished threads exit before sampling
}

fn soak(scale: SoakScale) {
    let mut rng = Rng::seeded("soak");
    let emu = Emulator::start(Options {
        poll_hold: Duration::from_secs(10),
        ..Options::default()
    });
    let agent = Agent::start_with_env(&emu, json!({}), &[("RUST_LOG", "info")]);
    let pid = agent.pid();
    warm_up(&emu, &agent);
    let base = proc_stats(pid);
    let round = (scale.window + scale.gap) * fault_kinds().len() as u32;
    let started = Instant::now();
    // Room for the load at 10 commands a second, three times over, and the drain.
    let limit = started + round.max(Duration::from_millis(100) * scale.commands as u32) * 3;
    let stop = AtomicBool::new(false);
    let timeline = Mutex::new(Vec::new());
    let mut load = Load::default();
    let resend_after = Duration::from_secs(10);
    let sessions = std::thread::scope(|scope| {
        let faults = scope.spawn(|| run_faults(&emu, &scale, &stop, &timeline, limit));
        let sessions = scope.spawn(|| run_sessions(&emu, &scale, round));
        let per = round / scale.commands.max(1) as u32;
        'sending: for n in 0..scale.commands {
            let due = started + per * n as u32;
            while Instant::now() < due || load.refresh(&emu, resend_after) >= scale.in_flight {
                if Instant::now() >= limit {
                    break 'sending;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let script = match n % 10 {
                0 => format!("echo soak-{n}; sleep 1"),
                _ => format!("echo soak-{n}"),
            };
            let payload = aws_run_shell_script_payload(&command_id(0x50a2, n), &[&script], 600);
            let via = send(&emu, &payload, rng.chance(50));
            load.push(via, payload);
        }
        stop.store(true, Ordering::SeqCst);
        faults.join().unwrap();
        let drain_end = Instant::now() + scale.drain;
        while Instant::now() < drain_end && {
            load.refresh(&emu, resend_after);
            load.open() > 0
        } {
            std::thread::sleep(Duration::from_millis(100));
        }
        sessions.join().unwrap()
    });
    let ended = Instant::now();
    let timeline = timeline.into_inner().unwrap();
    let alive = agent_alive(pid);
    let (after, idle_cpu) = if alive {
        settle(&agent);
        let after = proc_stats(pid);
        (Some(after), Some(idle_cpu_percent(pid, scale.idle)))
    } else {
        (None, None)
    };
    let run = SoakRun {
        load,
        sessions,
        timeline,
        base,
        after,
        idle_cpu,
        started,
        ended,
    };
    let verdict = report_soak(&emu, &agent, &scale, &run);
    drop(agent); // its log is in the verdict's tail; the whole of it would bury the verdict
    verdict.unwrap_or_else(|e| panic!("{e}"));
}

/// What one soak did and measured.
struct SoakRun {
    load: Load,
    sessions: Vec<SessionOutcome>,
    timeline: Vec<Window>,
    base: ProcStats,
    /// None when the agent died.
    after: Option<ProcStats>,
    idle_cpu: Option<f64>,
    started: Instant,
    ended: Instant,
}

fn report_soak(
    emu: &Emulator,
    agent: &Agent,
    scale: &SoakScale,
    run: &SoakRun,
) -> Result<(), String> {
    let SoakRun {
        load,
        sessions,
        timeline,
        base,
        after,
        idle_cpu,
        started,
        ended,
    } = run;
    let (sent, base, started, ended) = (&load.sent, *base, *started, *ended);
    let mut problems = Vec::new();
    let mut finals = 0;
    let at = |t: Instant| format!("+{:.1} s", t.duration_since(started).as_secs_f64());
    for s in sent {
        let (statuses, output) = emu.read(|st| {
            let out = s
                .via
                .replies(st)
                .iter()
                .find(|r| r.is_final())
                .map(Reply::standard_output);
            (s.via.terminal_statuses(st), out)
        });
        let faults = faults_between(timeline, s.at, ended);
        let what = format!(
            "{} over {} (sent {}, re-sent {}×; faults while it was open: {faults:?})",
            s.via.id(),
            s.via.name(),
            at(s.at),
            s.resends
        );
        match statuses.as_slice() {
            [] => {
                let seen = emu.read(|st| match &s.via {
                    Via::Mds(id) => format!(
                        "delivered {}×, acked {}×, {} reply(ies)",
                        st.deliveries(id).len(),
                        st.acks().iter().filter(|a| *a == id).count(),
                        st.replies(id).len()
                    ),
                    Via::Mgs(id) => format!(
                        "{} ack(s), {} reply(ies)",
                        st.mgs().job_acks(id).len(),
                        st.mgs().job_replies(id).len()
                    ),
                });
                problems.push(format!("LOST: no final reply for {what}; {seen}"));
            }
            [one] if one == "Success" => {
                finals += 1;
                let n = s.payload["CommandId"].as_str().unwrap_or_default();
                let n = usize::from_str_radix(n.rsplit('-').next().unwrap_or("0"), 16).unwrap();
                let output = output.unwrap_or_default();
                if !output.contains(&format!("soak-{n}\n")) {
                    let replies: Vec<String> = emu.read(|st| {
                        (s.via.replies(st).iter())
                            .map(|r| r.payload.to_string().chars().take(1500).collect())
                            .collect()
                    });
                    let log = agent.log();
                    let lines: Vec<&str> =
                        (log.lines()).filter(|l| l.contains(s.via.id())).collect();
                    problems.push(format!(
                        "wrong output for {what}: stdout {output:?}\n    its replies: {replies:#?}\n    its log lines: {lines:#?}"
                    ));
                }
            }
            [one] => {
                finals += 1;
                problems.push(format!("final status {one} (not Success) for {what}"));
            }
            many => {
                finals += 1;
                problems.push(format!("several terminal statuses {many:?} for {what}"));
            }
        }
    }
    let sessions_ok = sessions.iter().filter(|s| s.problem.is_none()).count();
    for s in sessions.iter().filter(|s| s.problem.is_some()) {
        let faults = faults_between(timeline, s.started, ended);
        problems.push(format!(
            "session {} (started {}; faults while it was open: {faults:?}): {}",
            s.id,
            at(s.started),
            s.problem.as_deref().unwrap_or_default()
        ));
    }
    if sent.len() < scale.commands {
        problems.push(format!(
            "only {} of {} commands were sent before the time limit: the agent took too long",
            sent.len(),
            scale.commands
        ));
    }
    let mds = sent.iter().filter(|s| matches!(s.via, Via::Mds(_))).count();
    eprintln!(
        "soak: {} commands sent ({mds} over ec2messages, {} over MGS), {finals} final replies \
         received; {} sessions started, {sessions_ok} completed; {} fault windows of {:?} in {:.0} s",
        sent.len(),
        sent.len() - mds,
        sessions.len(),
        timeline.len(),
        scale.window,
        ended.duration_since(started).as_secs_f64()
    );
    eprintln!(
        "soak: baseline RSS {} KiB, threads {}, fds {}",
        base.rss_kib, base.threads, base.fds
    );
    match (*after, *idle_cpu) {
        (Some(a), Some(cpu)) => {
            eprintln!(
                "soak: after: RSS {} KiB (peak {} KiB), threads {}, fds {}; idle CPU {cpu:.2} % \
                 over {:?}",
                a.rss_kib, a.peak_rss_kib, a.threads, a.fds, scale.idle
            );
            check_resources(&mut problems, base, a, cpu);
        }
        _ => problems.push("the agent died during the soak".into()),
    }
    for w in timeline {
        let during: Vec<&Sent> = sent
            .iter()
            .filter(|s| s.at >= w.from && s.at <= w.to)
            .collect();
        let mds = during
            .iter()
            .filter(|s| matches!(s.via, Via::Mds(_)))
            .count();
        eprintln!(
            "soak: window {} – {} {}: {} commands sent ({mds} over ec2messages)",
            at(w.from),
            at(w.to),
            w.name,
            during.len()
        );
    }
    eprintln!("soak: the agent's log says: {}", dropped_replies(agent));
    let sig = emu.signature_failures().len();
    eprintln!("soak: {sig} signed calls refused by the verifier (the clock jump's window)",);
    verdict("soak", &problems, agent)
}

fn verdict(what: &str, problems: &[String], agent: &Agent) -> Result<(), String> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{what} found {} problem(s):\n  {}\nagent log tail:\n{}",
        problems.len(),
        problems.join("\n  "),
        log_tail(agent, 60)
    ))
}

/// Back to the baseline: fds and threads no more than before; memory bounded; idle means idle.
fn check_resources(problems: &mut Vec<String>, base: ProcStats, after: ProcStats, cpu: f64) {
    // A pooled HTTP connection or two may be open or not, depending on the last calls made.
    const FD_SLACK: usize = 2;
    const RSS_GROWTH_KIB: u64 = 16 * 1024;
    const PEAK_ABOVE_BASE_KIB: u64 = 64 * 1024;
    if after.fds > base.fds + FD_SLACK {
        problems.push(format!(
            "fds {} -> {} (more than {FD_SLACK} above the baseline)",
            base.fds, after.fds
        ));
    }
    if after.threads > base.threads {
        problems.push(format!("threads {} -> {}", base.threads, after.threads));
    }
    if after.rss_kib > base.rss_kib + RSS_GROWTH_KIB {
        problems.push(format!(
            "RSS {} KiB -> {} KiB (grew more than {RSS_GROWTH_KIB} KiB)",
            base.rss_kib, after.rss_kib
        ));
    }
    if after.peak_rss_kib > base.rss_kib + PEAK_ABOVE_BASE_KIB {
        problems.push(format!(
            "peak RSS {} KiB is more than {PEAK_ABOVE_BASE_KIB} KiB above the baseline {} KiB",
            after.peak_rss_kib, base.rss_kib
        ));
    }
    if cpu > 2.0 {
        problems.push(format!("idle CPU {cpu:.2} % of one core (more than 2 %)"));
    }
}

/// How many replies the agent logged as refused for good and dropped, by error.
fn dropped_replies(agent: &Agent) -> String {
    let mut by_error: BTreeMap<String, usize> = BTreeMap::new();
    for line in agent.log().lines().filter(|l| l.contains("for good")) {
        let code = line
            .split("code: \"")
            .nth(1)
            .and_then(|c| c.split('"').next())
            .unwrap_or("?");
        *by_error.entry(code.to_owned()).or_default() += 1;
    }
    format!("{by_error:?} item(s) refused for good and dropped")
}

fn log_tail(agent: &Agent, lines: usize) -> String {
    let log = agent.log();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn soak_short() {
    soak(SoakScale {
        commands: 240,
        sessions: 16,
        window: Duration::from_secs(4),
        gap: Duration::from_secs(3),
        in_flight: 8,
        drain: Duration::from_secs(45),
        idle: Duration::from_secs(5),
    });
}

/// `make soak`: 10,000 commands and 200 sessions (or `SSM_LITE_SOAK_COMMANDS` / `_SESSIONS`).
#[test]
#[ignore = "long: run by `make soak`"]
fn soak_full() {
    soak(SoakScale {
        commands: env_usize("SSM_LITE_SOAK_COMMANDS", 10_000),
        sessions: env_usize("SSM_LITE_SOAK_SESSIONS", 200),
        window: Duration::from_secs(10),
        gap: Duration::from_secs(5),
        in_flight: 8,
        drain: Duration::from_secs(150),
        idle: Duration::from_secs(30),
    });
}

// ---------------------------------------------------------------------------------------------
// Crash loop

/// Where the agent is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum KillPoint {
    /// As soon as a new command was delivered (ec2messages) or acknowledged (MGS).
    Receipt,
    /// As soon as a step's script has started (its marker file grew).
    StepStart,
    /// A random moment (0–400 ms) after a step started.
    MidStep,
    /// While the replies spool has an entry.
    Spooling,
    /// After a random delay (0–1.5 s).
    Anywhere,
}

const KILL_POINTS: [KillPoint; 5] = [
    KillPoint::Receipt,
    KillPoint::StepStart,
    KillPoint::MidStep,
    KillPoint::Spooling,
    KillPoint::Anywhere,
];

/// One command of the crash loop: its steps append to one marker file each.
struct CrashCommand {
    n: usize,
    /// Marker file per step; the flag says whether the step may run twice (it exits 194 once).
    steps: Vec<(PathBuf, bool)>,
}

fn step(name: &str, script: &str) -> Value {
    json!({ "action": "aws:runShellScript", "name": name, "inputs": { "runCommand": [script] } })
}

/// A 2.2 document of one of four shapes: a quick step, three short steps, one slow step, or a
/// reboot step (exit 194 on its first run) and a step after it.
fn crash_command(scratch: &Path, n: usize, kind: u64) -> (CrashCommand, Value) {
    let mark = |i: usize| scratch.join(format!("{n}-s{i}.runs"));
    let run = |i: usize, rest: &str| format!("echo run >> {}{rest}", mark(i).display());
    let flag = scratch.join(format!("{n}.rebooted"));
    let reboot = run(
        0,
        &format!(
            "; [ -f {f} ] && exit 0; touch {f}; exit 194",
            f = flag.display()
        ),
    );
    let (steps, may_rerun): (Vec<String>, Vec<bool>) = match kind {
        0 => (vec![run(0, "")], vec![false]),
        1 => (
            (0..3).map(|i| run(i, "; sleep 0.3")).collect(),
            vec![false; 3],
        ),
        2 => (vec![run(0, "; sleep 1.5")], vec![false]),
        _ => (vec![reboot, run(1, "")], vec![true, false]),
    };
    let main_steps: Vec<Value> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| step(&format!("s{i}"), s))
        .collect();
    let payload = json!({
        "CommandId": command_id(0xc4a5, n),
        "DocumentName": "CrashLoop",
        "Parameters": {},
        "DocumentContent": {
            "schemaVersion": "2.2",
            "description": "crash loop",
            "mainSteps": main_steps
        }
    });
    let steps = may_rerun
        .into_iter()
        .enumerate()
        .map(|(i, r)| (mark(i), r))
        .collect();
    (CrashCommand { n, steps }, payload)
}

fn runs(marker: &Path) -> usize {
    fs::read_to_string(marker).map_or(0, |s| s.lines().count())
}

fn total_runs(cmds: &[CrashCommand]) -> usize {
    cmds.iter()
        .flat_map(|c| &c.steps)
        .map(|(m, _)| runs(m))
        .sum()
}

/// Waits (at most 6 s) for the moment `point` names; false if it did not come.
fn wait_for_point(
    point: KillPoint,
    rng: &mut Rng,
    emu: &Emulator,
    agent: &Agent,
    cmds: &[CrashCommand],
    fresh: &[Via],
) -> bool {
    let limit = Duration::from_secs(6);
    let deadline = Instant::now() + limit;
    let poll = |ready: &mut dyn FnMut() -> bool| {
        while !ready() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    };
    match point {
        KillPoint::Receipt => poll(&mut || {
            emu.read(|st| {
                fresh.iter().any(|v| match v {
                    Via::Mds(id) => !st.deliveries(id).is_empty(),
                    Via::Mgs(id) => !st.mgs().job_acks(id).is_empty(),
                })
            })
        }),
        KillPoint::StepStart | KillPoint::MidStep => {
            let before = total_runs(cmds);
            let seen = poll(&mut || total_runs(cmds) > before);
            if seen && point == KillPoint::MidStep {
                std::thread::sleep(rng.millis(400)); // the random point inside the step
            }
            seen
        }
        KillPoint::Spooling => {
            let spool = spool_dir(agent);
            poll(&mut || dir_has_entries(&spool))
        }
        KillPoint::Anywhere => {
            std::thread::sleep(rng.millis(1500)); // the random point
            true
        }
    }
}

/// The text of the agent's current run's log.
fn current_log(agent: &Agent) -> String {
    let log = agent.log();
    log.rsplit("--- restart ---")
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn crash_loop(kills: usize) {
    let mut rng = Rng::seeded("crash loop");
    let emu = Emulator::start(Options {
        poll_hold: Duration::from_secs(2),
        visibility_timeout: Some(Duration::from_secs(3)),
        ..Options::default()
    });
    let mut agent = Agent::start(&emu, json!({ "Mds": { "CommandWorkersLimit": 2 } }));
    let scratch = agent.scratch();
    let mut cmds = Vec::new();
    let mut load = Load::default();
    let mut kill_log: Vec<(KillPoint, bool)> = Vec::new();
    for _ in 0..kills {
        let mut fresh = Vec::new();
        for _ in 0..1 + rng.below(2) {
            let (cmd, payload) = crash_command(&scratch, cmds.len(), rng.below(4));
            let via = send(&emu, &payload, rng.chance(50));
            fresh.push(via.clone());
            load.push(via, payload);
            cmds.push(cmd);
        }
        let point = KILL_POINTS[rng.below(KILL_POINTS.len() as u64) as usize];
        let seen = wait_for_point(point, &mut rng, &emu, &agent, &cmds, &fresh);
        agent.kill9();
        kill_log.push((point, seen));
        agent.start_again();
        load.refresh(&emu, Duration::from_secs(3));
    }
    let mut reboots = 0;
    // Each reboot command asks for at most one reboot; each restart serves every pending one.
    let reboot_commands = cmds.iter().filter(|c| c.steps.iter().any(|s| s.1)).count();
    let drain_end = Instant::now() + Duration::from_secs(120);
    while Instant::now() < drain_end && {
        load.refresh(&emu, Duration::from_secs(3));
        load.open() > 0
    } {
        if reboots < reboot_commands && current_log(&agent).contains("asked for a reboot") {
            // The reboot command ran (`true` in tests): this restart is the machine's reboot.
            agent.restart();
            reboots += 1;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let verdict = report_crash_loop(&emu, &agent, &cmds, &load.sent, &kill_log, reboots);
    drop(agent);
    verdict.unwrap_or_else(|e| panic!("{e}"));
}

/// Each step's last reported status, by step name, over all replies of a command.
fn step_statuses(replies: &[Reply]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for r in replies {
        if let Some(steps) = r.payload["runtimeStatus"].as_object() {
            for (name, s) in steps {
                if let Some(status) = s["status"].as_str() {
                    out.insert(name.clone(), status.to_owned());
                }
            }
        }
    }
    out
}

fn check_crash_command(
    emu: &Emulator,
    cmd: &CrashCommand,
    via: &Via,
    problems: &mut Vec<String>,
) -> String {
    let (replies, statuses) = emu.read(|st| (via.replies(st).to_vec(), via.terminal_statuses(st)));
    let id = format!("command #{} {} over {}", cmd.n, via.id(), via.name());
    let status = match statuses.as_slice() {
        [] => {
            problems.push(format!("LOST: {id} has no final reply"));
            "(none)".to_owned()
        }
        [one] => one.clone(),
        many => {
            problems.push(format!("{id} has several terminal statuses {many:?}"));
            format!("{many:?}")
        }
    };
    if let Some(first) = replies.iter().position(Reply::is_final)
        && let Some(late) = replies[first..].iter().find(|r| !r.is_final())
    {
        problems.push(format!(
            "{id}: a {:?} reply arrived after its final reply",
            late.document_status()
        ));
    }
    let reported = step_statuses(&replies);
    for (i, (marker, may_rerun)) in cmd.steps.iter().enumerate() {
        let n = runs(marker);
        let allowed = if *may_rerun { 2 } else { 1 };
        if n > allowed {
            problems.push(format!("{id}: step s{i} ran {n} times (at most {allowed})"));
        }
        let said = reported.get(&format!("s{i}")).map(String::as_str);
        if n == 0 && (said == Some("Success") || status == "Success") {
            problems.push(format!(
                "{id}: step s{i} never ran but is reported {said:?} (document {status})"
            ));
        }
    }
    status
}

fn report_crash_loop(
    emu: &Emulator,
    agent: &Agent,
    cmds: &[CrashCommand],
    sent: &[Sent],
    kill_log: &[(KillPoint, bool)],
    reboots: usize,
) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for (cmd, s) in cmds.iter().zip(sent) {
        let status = check_crash_command(emu, cmd, &s.via, &mut problems);
        *by_status.entry(status).or_default() += 1;
    }
    let mut points: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (p, seen) in kill_log {
        let e = points.entry(format!("{p:?}")).or_default();
        e.0 += 1;
        e.1 += usize::from(*seen);
    }
    let reruns: BTreeSet<usize> = cmds
        .iter()
        .filter(|c| c.steps.iter().any(|(m, r)| *r && runs(m) == 2))
        .map(|c| c.n)
        .collect();
    eprintln!(
        "crash loop: {} SIGKILLs (point: (kills, point observed) {points:?}), {reboots} reboot \
         restart(s); {} commands, final statuses {by_status:?}; {} reboot step(s) ran twice",
        kill_log.len(),
        cmds.len(),
        reruns.len()
    );
    verdict("crash loop", &problems, agent)
}

#[test]
fn crash_loop_short() {
    crash_loop(20);
}

/// `make soak`: 100 kills (or `SSM_LITE_CRASH_KILLS`).
#[test]
#[ignore = "long: run by `make soak`"]
fn crash_loop_full() {
    crash_loop(env_usize("SSM_LITE_CRASH_KILLS", 100));
}
