//! `make bench`, Session Manager part: session start latency, data-channel throughput of shells
//! and port forwarding, and the agent's memory per idle session — the real release binary against
//! the in-process emulator on 127.0.0.1. Prints a table; fails only on a broken run (every wait
//! has a limit and says what it waited for), never on a number.
//!
//! Times are taken from the emulator's own records (its AgentMessage log and request log), not
//! from when this thread wakes up, so how the bench waits does not blur them.

use serde_json::json;
use ssm_emulator::agentmessage::{payload_types, types};
use ssm_emulator::{
    Emulator, LinkSpec, MgsRecord, Options, Session, SessionSpec, SmuxStream, State,
};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use std::{env, fs, thread};

const BUILT: &str = env!("CARGO_BIN_EXE_ssm-lite");

/// The agent measured: `SSM_BENCH_AGENT` (say, the static musl build in `dist/`, the binary
/// devices run) or the host build cargo made.
fn bin() -> String {
    env::var("SSM_BENCH_AGENT").unwrap_or_else(|_| BUILT.to_owned())
}
const WAIT: Duration = Duration::from_secs(60);
/// Bulk transfers may take long: a slow run should print a slow number, not die.
const BULK_WAIT: Duration = Duration::from_secs(600);
const STARTS: usize = 50;
const IDLE_SESSIONS: usize = 100;
const BULK: usize = 50 << 20;
/// Per flow-control row: enough for the window to settle, few seconds on the slowest link.
const FLOW_BULK: usize = 10 << 20;
/// The link of the round-trip rows, bytes per second.
const LINK_BANDWIDTH: u64 = 4 << 20;
/// Port upload: bytes queued before waiting for the agent's acks. The emulator's client has no
/// send window and re-sends everything unacknowledged every 200 ms, so it is given one here.
const UPLOAD_WINDOW: usize = 1 << 20;
const MB: f64 = (1u64 << 20) as f64;
/// How often bulk transfers are checked. A condvar wait would wake this thread for every one of
/// the ~50,000 frames and compete for the 2 CPUs with the agent and the emulator.
const CHECK_EVERY: Duration = Duration::from_millis(20);
/// Lets the freshly connected agent finish its start-up work before its memory is read.
const SETTLE: Duration = Duration::from_secs(3);

/// The agent under measurement, its emulator and its temp dir (config, state, log, files).
struct Bench {
    emu: Emulator,
    agent: Child,
    dir: PathBuf,
}

impl Bench {
    fn start() -> Bench {
        let emu = Emulator::start(Options::default());
        let dir = env::temp_dir().join(format!("ssm-lite-bench-sessions-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("creating the bench dir in the temp dir");
        // The shells run as `nobody` and must reach the bulk file in here.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod of the dir");
        let url = emu.url();
        let config = json!({
            "Mds": { "Endpoint": url },
            "Ssm": { "Endpoint": url },
            "Mgs": { "Endpoint": url },
            "Kms": { "Endpoint": url },
            "Identity": { "ConsumptionOrder": ["EC2"] }
        });
        fs::write(dir.join("config.json"), config.to_string()).expect("writing the agent config");
        let log = fs::File::create(dir.join("agent.log")).expect("creating the agent log");
        // RUST_LOG, if set, reaches the agent: `RUST_LOG=debug` for timestamps of its steps.
        let agent = Command::new(bin())
            .args(["run", "--config"])
            .arg(dir.join("config.json"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e} (build it with `make bench`)", bin()));
        let mut b = Bench { emu, agent, dir };
        b.wait(WAIT, "the control channel and the first health ping", |s| {
            s.mgs().control_connected() && !s.health_pings().is_empty()
        });
        b
    }

    /// Ends the run as broken: says why, shows the end of the agent's log, keeps the dir, exits 1.
    fn die(&mut self, why: &str) -> ! {
        let log = fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        eprintln!("bench broken: {why}\n--- last agent log lines ---");
        tail.iter().rev().for_each(|l| eprintln!("{l}"));
        eprintln!("MGS errors: {:?}", self.emu.mgs_errors());
        eprintln!("(agent log and state kept in {})", self.dir.display());
        let _ = self.agent.kill();
        std::process::exit(1);
    }

    fn wait(&mut self, limit: Duration, what: &str, ready: impl FnMut(&State) -> bool) {
        if !self.emu.wait_until(limit, ready) {
            self.die(&format!("timed out after {limit:?} waiting for {what}"));
        }
    }

    /// Like `wait`, but looks every [`CHECK_EVERY`] instead of on every change.
    fn poll(&mut self, limit: Duration, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !ready() {
            if Instant::now() >= deadline {
                self.die(&format!("timed out after {limit:?} waiting for {what}"));
            }
            thread::sleep(CHECK_EVERY);
        }
    }

    fn pid(&self) -> u32 {
        self.agent.id()
    }

    /// A shell session whose prompt has arrived.
    fn shell(&mut self) -> Session {
        let s = self.emu.open_session(shell_spec());
        if !s.wait_output(WAIT, |out| !out.is_empty()) {
            self.die(&format!(
                "no prompt from session {} within {WAIT:?}",
                s.id()
            ));
        }
        s
    }

    /// Waits for the session's `agent_task_complete`; a status other than Success is fatal
    /// (the numbers of a failed session mean nothing).
    fn task_done(&mut self, s: &Session, limit: Duration) {
        match s.wait_task_complete(limit) {
            Some(t) if t.final_status == "Success" => {}
            Some(t) => self.die(&format!("session {} ended {}", s.id(), t.final_status)),
            None => self.die(&format!("session {} did not complete in {limit:?}", s.id())),
        }
    }

    fn end_shell(&mut self, s: &Session) {
        s.send_input(b"exit\r");
        self.task_done(s, WAIT);
    }

    /// The steps of one session start, from the emulator's records.
    fn start_steps(&mut self, sid: &str) -> Steps {
        let path = format!("/v1/data-channel/{sid}");
        let steps = self.emu.read(|st| {
            let log = &st.mgs().log;
            let request = |method: &str| {
                let mut all = st.requests().iter();
                all.find(|r| r.method == method && r.path == path)
                    .map(|r| r.at)
            };
            Some(Steps {
                sent: log.iter().find(|r| starts(r, sid))?.at,
                created: request("POST")?,
                upgraded: request("GET")?,
                first_output: log.iter().find(|r| is_output(r, sid))?.at,
            })
        });
        steps.unwrap_or_else(|| self.die(&format!("session {sid}: a start step is not on record")))
    }

    /// First and last output frame of `sid` since `since`, and the bytes between them.
    fn span(&mut self, sid: &str, since: Instant, bytes: usize) -> Span {
        let found = self.emu.read(|st| {
            let mut frames = st
                .mgs()
                .log
                .iter()
                .filter(|r| r.at >= since && is_output(r, sid));
            let first = frames.next()?.at;
            Some(Span {
                first,
                last: frames.next_back().map_or(first, |r| r.at),
                bytes,
            })
        });
        found.unwrap_or_else(|| self.die(&format!("session {sid}: no output frames on record")))
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn shell_spec() -> SessionSpec {
    SessionSpec::standard_stream().run_as("nobody", true)
}

fn starts(r: &MgsRecord, sid: &str) -> bool {
    r.channel == "control"
        && !r.inbound
        && r.message.message_type == types::INTERACTIVE_SHELL
        && String::from_utf8_lossy(&r.message.payload).contains(sid)
}

fn is_output(r: &MgsRecord, sid: &str) -> bool {
    r.inbound
        && r.channel == sid
        && r.message.message_type == types::OUTPUT_STREAM_DATA
        && r.message.payload_type == payload_types::OUTPUT
}

/// When each step of a session start happened.
struct Steps {
    /// `interactive_shell` queued for the control channel.
    sent: Instant,
    /// CreateDataChannel answered.
    created: Instant,
    /// The data channel's WebSocket upgrade answered.
    upgraded: Instant,
    first_output: Instant,
}

struct Span {
    first: Instant,
    last: Instant,
    bytes: usize,
}

impl Span {
    fn text(&self) -> String {
        let secs = (self.last - self.first).as_secs_f64();
        let rate = self.bytes as f64 / MB / secs.max(1e-9);
        format!(
            "{rate:.1} MB/s ({:.1} MB in {secs:.2} s)",
            self.bytes as f64 / MB
        )
    }
}

fn row(what: &str, value: &str, note: &str) {
    println!("{what:<44} {value:<42} {note}");
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// "median / p90 / max ms" (nearest rank).
fn spread(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    let [a, b, c] = [0.5, 0.9, 1.0].map(|p| ms(at(p)));
    format!("{a} / {b} / {c} ms")
}

/// A `key:   123 kB` line of a /proc file, in kB.
fn proc_kb(path: &str, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix(key))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

fn vm_rss_kb(pid: u32) -> Option<u64> {
    proc_kb(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Proportional set size: shared pages (libc, `sh` itself) split among the processes using them.
fn pss_kb(pid: u32) -> Option<u64> {
    proc_kb(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// Every descendant of `pid`. Children are listed per thread, and each session thread starts
/// its own shell, so all threads are asked.
fn descendants(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut all = Vec::new();
    for task in tasks.flatten() {
        let kids = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for kid in kids.split_whitespace().filter_map(|k| k.parse().ok()) {
            all.push(kid);
            all.extend(descendants(kid));
        }
    }
    all
}

fn threads(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

fn kb(v: Option<u64>) -> String {
    v.map_or_else(
        || "?".into(),
        |k| format!("{k} KB ({:.2} MB)", k as f64 / 1024.0),
    )
}

/// 4. VmRSS of a fresh agent, then with `IDLE_SESSIONS` idle shells open, then after they closed.
fn memory(b: &mut Bench) {
    thread::sleep(SETTLE);
    let pid = b.pid();
    let rss0 = vm_rss_kb(pid);
    let sessions: Vec<Session> = (0..IDLE_SESSIONS)
        .map(|_| b.emu.open_session(shell_spec()))
        .collect();
    for s in &sessions {
        if !s.wait_output(WAIT, |out| !out.is_empty()) || !s.wait_input_acked(WAIT) {
            b.die(&format!("idle session {} did not get going", s.id()));
        }
    }
    let rss = vm_rss_kb(pid);
    let shells = descendants(pid);
    let shell_rss: u64 = shells.iter().filter_map(|&p| vm_rss_kb(p)).sum();
    let shell_pss: u64 = shells.iter().filter_map(|&p| pss_kb(p)).sum();
    let n = IDLE_SESSIONS;
    row(
        "agent VmRSS, 0 sessions",
        &kb(rss0),
        "fresh agent, control channel up",
    );
    row(&format!("agent VmRSS, {n} idle shells"), &kb(rss), "");
    row("  agent threads now", &threads(pid).to_string(), "");
    if let (Some(r0), Some(r)) = (rss0, rss) {
        let per = r.saturating_sub(r0) as f64 / n as f64;
        let goal = if per <= 150.0 { "met" } else { "MISSED" };
        let text = format!("{per:.1} KB");
        row("  per idle session", &text, &format!("≤ 150 KB ({goal})"));
    }
    let kids = format!(
        "{} processes, VmRSS {shell_rss} KB, PSS {shell_pss} KB",
        shells.len()
    );
    row(
        "  shells (not in the agent's VmRSS)",
        &kids,
        "for reference",
    );
    sessions.iter().for_each(|s| s.send_input(b"exit\r"));
    sessions.iter().for_each(|s| b.task_done(s, WAIT));
    b.wait(WAIT, "the shells to be gone", |_| {
        descendants(pid).is_empty()
    });
    row("agent VmRSS after they all ended", &kb(vm_rss_kb(pid)), "");
    let hwm = proc_kb(&format!("/proc/{pid}/status"), "VmHWM:");
    row("agent VmHWM so far", &kb(hwm), "");
}

/// 1. `STARTS` shells one after another: `interactive_shell` sent → first output byte.
fn session_starts(b: &mut Bench) {
    let mut steps = Vec::new();
    for _ in 0..STARTS {
        let s = b.shell();
        steps.push(b.start_steps(s.id()));
        b.end_shell(&s);
    }
    let of = |f: fn(&Steps) -> Duration| steps.iter().map(f).collect::<Vec<_>>();
    let total = spread(of(|s| s.first_output - s.sent));
    row(
        &format!("session start, {STARTS} shells"),
        &total,
        "median / p90 / max",
    );
    let steps_of = [
        (
            "  (a) → CreateDataChannel answered",
            of(|s| s.created - s.sent),
        ),
        (
            "  (b) → WebSocket upgrade answered",
            of(|s| s.upgraded - s.created),
        ),
        (
            "  (c) → first output byte",
            of(|s| s.first_output - s.upgraded),
        ),
    ];
    for (what, times) in steps_of {
        row(what, &spread(times), "");
    }
}

/// A text file of 100-byte lines, `size` bytes (text, so a terminal passes it unchanged but
/// for CR before LF).
fn text_file(dir: &Path, name: &str, size: usize) -> PathBuf {
    let line = format!("{:099}\n", 0).replace('0', "x");
    let path = dir.join(name);
    let text = line.repeat(size / line.len());
    fs::write(&path, text).expect("writing the bulk file");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod of the bulk file");
    path
}

fn output_len(s: &Session) -> usize {
    let mut len = 0;
    s.wait_output(Duration::ZERO, |out| {
        len = out.len();
        true
    });
    len
}

/// 2a. `cat` without a terminal: raw bytes, NonInteractiveCommands in one stream.
fn cat_raw(b: &mut Bench, file: &Path) {
    let since = Instant::now();
    let cmd = format!("cat {}", file.display());
    let spec = SessionSpec::non_interactive_commands(&cmd, false).run_as("nobody", true);
    let s = b.emu.open_session(spec);
    b.poll(BULK_WAIT, "the whole file through `cat`", || {
        s.wait_output(Duration::ZERO, |out| out.len() >= BULK)
    });
    let span = b.span(s.id(), since, output_len(&s));
    b.task_done(&s, WAIT);
    row(
        "shell throughput, `cat` no PTY",
        &span.text(),
        "NonInteractiveCommands",
    );
    retransmissions(&s);
}

/// Types `cat <file>` into shell `s` and waits until all `size` bytes of it are at the client;
/// the output length before.
fn cat_in(b: &mut Bench, s: &Session, file: &Path, size: usize) -> usize {
    let before = output_len(s);
    s.send_input(format!("cat {}; echo END-$((6*7))\r", file.display()).as_bytes());
    // The typed line echoes `END-$((6*7))`; only the shell's answer reads END-42.
    b.poll(BULK_WAIT, "the whole file through the shell", || {
        s.wait_output(Duration::ZERO, |out| {
            out.len() >= before + size && out[out.len() - 64..].windows(6).any(|w| w == b"END-42")
        })
    });
    before
}

/// 2b. `cat` typed into a Standard_Stream shell: the same bytes through the PTY.
fn cat_shell(b: &mut Bench, file: &Path) {
    let s = b.shell();
    let since = Instant::now();
    let before = cat_in(b, &s, file, BULK);
    let span = b.span(s.id(), since, output_len(&s) - before);
    b.end_shell(&s);
    row(
        "shell throughput, `cat` in a shell",
        &span.text(),
        "Standard_Stream (LF → CRLF)",
    );
    retransmissions(&s);
}

/// Section 5, flow control: `cat` of `FLOW_BULK` in a shell whose client sits behind `link`,
/// timed from typing the command to the last byte at the client (the link delays it past the
/// emulator's records). `limit` is what the link allows at most, MB/s.
fn flow(b: &mut Bench, file: &Path, what: &str, link: Option<LinkSpec>, limit: Option<f64>) {
    let s = b.shell();
    if let Some(spec) = link {
        s.set_link(spec);
    }
    let since = Instant::now();
    let before = cat_in(b, &s, file, FLOW_BULK);
    let secs = since.elapsed().as_secs_f64();
    let bytes = output_len(&s) - before;
    b.end_shell(&s);
    let rate = bytes as f64 / MB / secs;
    let st = s.stats();
    let frames = st.output_highest + 1;
    let resent = st.output_frames.saturating_sub(frames as u64);
    let share = 100.0 * resent as f64 / frames.max(1) as f64;
    let value = format!("{rate:.1} MB/s, re-sent {resent} of {frames} ({share:.2} %)");
    let note = limit.map_or_else(String::new, |l| {
        format!("limit {l:.1} MB/s, {:.0} % of it", 100.0 * rate / l)
    });
    row(what, &value, &note);
    if s.link_lost() > 0 {
        row("  frames the link lost", &s.link_lost().to_string(), "");
    }
}

/// The flow-control rows of issue 12: a fast client, late acks, round trips, loss.
fn flow_rows(b: &mut Bench) {
    let file = text_file(&b.dir, "flow.txt", FLOW_BULK);
    let window = 1024.0 * 1024.0 / MB; // the agent's send window, MB
    let bw = LINK_BANDWIDTH as f64 / MB;
    let ms = Duration::from_millis;
    let link = |rtt, loss| LinkSpec {
        rtt: ms(rtt),
        bandwidth: LINK_BANDWIDTH,
        loss,
        ..LinkSpec::default()
    };
    flow(b, &file, "flow: fast local client", None, None);
    let late = LinkSpec {
        ack_delay: ms(100),
        ..LinkSpec::default()
    };
    flow(
        b,
        &file,
        "flow: acks 100 ms late",
        Some(late),
        Some(window / 0.1),
    );
    for rtt in [50, 200] {
        let what = format!("flow: {rtt} ms round trip, {bw:.0} MB/s");
        let limit = bw.min(window / (rtt as f64 / 1e3));
        flow(b, &file, &what, Some(link(rtt, 0.0)), Some(limit));
    }
    let what = format!("flow: 1 % loss, 50 ms, {bw:.0} MB/s");
    flow(b, &file, &what, Some(link(50, 0.01)), Some(bw));
}

fn retransmissions(s: &Session) {
    let st = s.stats();
    let text = format!("{} of {}", st.output_duplicates, st.output_frames);
    row("  frames that came twice / frames", &text, "agent re-sends");
}

/// A server on 127.0.0.1 that sends `bytes` to its first client, then closes.
fn source(bytes: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the source server");
    let port = listener.local_addr().expect("source address").port();
    thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        let chunk = vec![b'p'; 64 << 10];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            if conn.write_all(&chunk[..n]).is_err() {
                return;
            }
            left -= n;
        }
    });
    port
}

/// A server on 127.0.0.1 that reads its first client and reports when the first and the
/// `expected`th byte arrived.
fn sink(expected: usize) -> (u16, mpsc::Receiver<(Instant, Instant)>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the sink server");
    let port = listener.local_addr().expect("sink address").port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        let (mut buf, mut got, mut first) = (vec![0u8; 64 << 10], 0, None);
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                return;
            }
            let first = *first.get_or_insert_with(Instant::now);
            got += n;
            if got >= expected {
                let _ = tx.send((first, Instant::now()));
                return;
            }
        }
    });
    (port, rx)
}

/// 3a. Basic-mode port forwarding, server → client.
fn port_download(b: &mut Bench) {
    let since = Instant::now();
    let s = b
        .emu
        .open_session(SessionSpec::port(source(BULK), None, false));
    b.poll(
        BULK_WAIT,
        "the whole download through the port session",
        || s.wait_output(Duration::ZERO, |out| out.len() >= BULK),
    );
    let span = b.span(s.id(), since, output_len(&s));
    b.task_done(&s, WAIT);
    row("port forwarding, basic, server → client", &span.text(), "");
    retransmissions(&s);
}

/// 3b. Basic-mode port forwarding, client → server, in windows of `UPLOAD_WINDOW`.
fn port_upload(b: &mut Bench) {
    let (port, arrived) = sink(BULK);
    let s = b.emu.open_session(SessionSpec::port(port, None, false));
    let window = vec![b'u'; UPLOAD_WINDOW];
    for _ in 0..BULK / UPLOAD_WINDOW {
        s.send_input(&window);
        if !s.wait_input_acked(WAIT) {
            b.die("the agent did not acknowledge a window of upload input");
        }
    }
    let Ok((first, last)) = arrived.recv_timeout(BULK_WAIT) else {
        b.die("the sink did not receive the whole upload");
    };
    s.send_flag(ssm_emulator::port_flags::TERMINATE_SESSION);
    b.task_done(&s, WAIT);
    let span = Span {
        first,
        last,
        bytes: BULK,
    };
    let note = format!("acked windows of {} KB", UPLOAD_WINDOW >> 10);
    row(
        "port forwarding, basic, client → server",
        &span.text(),
        &note,
    );
    let re = s.stats().input_retransmissions.to_string();
    row("  input messages the client re-sent", &re, "");
}

/// A multiplexed Port session to `port` and one smux stream on it.
fn smux_stream(b: &mut Bench, port: u16) -> (Session, SmuxStream) {
    let s = b.emu.open_session(SessionSpec::port(port, None, true));
    let mut stream = s
        .smux_open()
        .unwrap_or_else(|e| b.die(&format!("no smux stream: {e}")));
    stream.set_read_timeout(Some(WAIT));
    (s, stream)
}

/// 3c. smux port forwarding, server → client, timed where the stream is read.
fn smux_download(b: &mut Bench) {
    let (s, mut stream) = smux_stream(b, source(BULK));
    let (mut buf, mut got) = (vec![0u8; 64 << 10], 0);
    let (mut first, mut last) = (None, Instant::now());
    while got < BULK {
        match stream.read(&mut buf) {
            Ok(0) => b.die(&format!("the smux stream ended after {got} bytes")),
            Ok(n) => {
                first.get_or_insert_with(Instant::now);
                got += n;
                last = Instant::now();
            }
            Err(e) => b.die(&format!("smux read after {got} bytes: {e}")),
        }
    }
    s.send_flag(ssm_emulator::port_flags::TERMINATE_SESSION);
    b.task_done(&s, WAIT);
    let span = Span {
        first: first.unwrap_or(last),
        last,
        bytes: got,
    };
    row("port forwarding, smux, server → client", &span.text(), "");
    retransmissions(&s);
}

/// 3d. smux port forwarding, client → server (the smux client's own flow control).
fn smux_upload(b: &mut Bench) {
    let (port, arrived) = sink(BULK);
    let (s, mut stream) = smux_stream(b, port);
    let block = vec![b'u'; 64 << 10];
    for _ in 0..BULK / block.len() {
        if let Err(e) = stream.write_all(&block) {
            b.die(&format!("smux write: {e}"));
        }
    }
    let Ok((first, last)) = arrived.recv_timeout(BULK_WAIT) else {
        b.die("the sink did not receive the whole smux upload");
    };
    s.send_flag(ssm_emulator::port_flags::TERMINATE_SESSION);
    b.task_done(&s, WAIT);
    let span = Span {
        first,
        last,
        bytes: BULK,
    };
    row("port forwarding, smux, client → server", &span.text(), "");
    let re = s.stats().input_retransmissions.to_string();
    row("  input messages the client re-sent", &re, "");
}

/// Sections 1 to 4.
fn everything_but_flow(b: &mut Bench) {
    memory(b);
    session_starts(b);
    let file = text_file(&b.dir, "bulk.txt", BULK);
    cat_raw(b, &file);
    cat_shell(b, &file);
    port_download(b);
    port_upload(b);
    smux_download(b);
    smux_upload(b);
}

fn main() {
    println!("ssm-lite session bench: {}\n", bin());
    row("measurement", "value", "note");
    let mut b = Bench::start();
    // `cargo bench --bench sessions -- flow` (or `memory`): only those rows.
    let only = |name: &str| env::args().any(|a| a == name);
    match (only("flow"), only("memory")) {
        (true, _) => flow_rows(&mut b),
        (_, true) => memory(&mut b),
        _ => {
            everything_but_flow(&mut b);
            flow_rows(&mut b);
        }
    }
    let errors = b.emu.mgs_errors();
    row(
        "protocol errors seen by the emulator",
        &errors.len().to_string(),
        "0",
    );
    errors.iter().take(3).for_each(|e| println!("  {e}"));
    println!(
        "
Session start runs from the emulator queueing `interactive_shell` to the first output byte (the
shell's prompt) arriving at its client, and so includes the data channel's setup on loopback:
(a) control channel delivery, the agent's session thread and CreateDataChannel (SigV4, HTTP);
(b) the WebSocket upgrade; (c) the open message, the shell's start (as `nobody`) and its prompt.
The emulator's channel threads read with a 10 ms timeout and send queued frames in between, so
up to ~10 ms of (a) is the emulator's, not the agent's. Throughput runs from the first to the
last output frame at the client (1 KB payloads, each acknowledged by the client); the client is
this process, sharing the 2 CPUs; uploads and smux are timed where the bytes are read (sink or
smux stream). MB = 2^20 bytes. The shells are separate processes, not
counted in the agent's VmRSS; their sum double-counts shared pages, PSS does not. Flow rows
(issue 12): {FLOW_BULK_MB} MB `cat` in a shell whose client sits behind the emulator's link
(`LinkSpec`: ack delay, round trip, bandwidth, loss), timed from typing the command to the last
byte at the client; the limit is the link's bandwidth or the agent's 1 MiB window per round
trip; re-sent = frames beyond one per sequence number.",
        FLOW_BULK_MB = FLOW_BULK >> 20
    );
}
