//! `make bench`: size, idle memory, per-command latency and throughput of the real release binary
//! against the in-process emulator on 127.0.0.1. Prints a table; fails only on a broken run (every
//! wait has a limit and says what it waited for), never on a number. Commands that end other than
//! Success are counted and shown, not fatal.

use ssm_emulator::{Emulator, Options, Reply, State, aws_run_shell_script_payload, uuid_v4};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use std::{env, fs};

const BIN: &str = env!("CARGO_BIN_EXE_ssm-lite");

/// The agent run: `SSM_BENCH_AGENT` (say, the static musl build in `dist/`, the binary devices
/// run) or the host build cargo made.
fn agent_bin() -> String {
    env::var("SSM_BENCH_AGENT").unwrap_or_else(|_| BIN.to_owned())
}
const WAIT: Duration = Duration::from_secs(60);
const RUNS: usize = 200;
const BURST: usize = 500;
const MB: u64 = 1 << 20;

/// The agent under measurement, its emulator and its temp dir (config, state, log).
struct Bench {
    emu: Emulator,
    agent: Child,
    dir: PathBuf,
    /// Commands that did not end in Success: reported in the table, not fatal.
    failed: Vec<String>,
}

impl Bench {
    /// An agent on ec2messages, or with `mgs` on the control channel of its own emulator.
    fn start(emu: Emulator, mgs: bool) -> Bench {
        let name = format!("ssm-lite-bench-{}-{}", std::process::id(), u8::from(mgs));
        let dir = env::temp_dir().join(name);
        fs::create_dir_all(&dir).expect("creating the bench dir in the temp dir");
        let mut config = serde_json::json!({
            "Mds": { "Endpoint": emu.url(), "CommandWorkersLimit": 5 },
            "Ssm": { "Endpoint": emu.url() },
            "Identity": { "ConsumptionOrder": ["EC2"] }
        });
        if mgs {
            config["Mgs"] = serde_json::json!({ "Endpoint": emu.url() });
        }
        fs::write(dir.join("config.json"), config.to_string()).expect("writing the agent config");
        let log = fs::File::create(dir.join("agent.log")).expect("creating the agent log");
        let agent = Command::new(agent_bin())
            .args(["run", "--config"])
            .arg(dir.join("config.json"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", emu.url())
            // The association scheduler polls within a second: idle memory counts it.
            .env("SSM_LITE_ASSOCIATION_JITTER_SECS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (build it with `make bench`)",
                    agent_bin()
                )
            });
        Bench {
            emu,
            agent,
            dir,
            failed: Vec::new(),
        }
    }

    /// Ends the run as broken: says why, shows the end of the agent's log, keeps the dir, exits 1.
    fn die(&mut self, why: &str) -> ! {
        let log = fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        eprintln!("bench broken: {why}\n--- last agent log lines ---");
        tail.iter().rev().for_each(|l| eprintln!("{l}"));
        eprintln!("(agent log and state kept in {})", self.dir.display());
        let _ = self.agent.kill();
        std::process::exit(1);
    }

    fn wait(&mut self, limit: Duration, what: &str, ready: impl FnMut(&State) -> bool) {
        if !self.emu.wait_until(limit, ready) {
            self.die(&format!("timed out after {limit:?} waiting for {what}"));
        }
    }

    /// (VmRSS, VmHWM, RssAnon) in bytes, from /proc.
    fn memory(&mut self) -> (u64, u64, u64) {
        let status = fs::read_to_string(format!("/proc/{}/status", self.agent.id()));
        let status = status.unwrap_or_else(|e| self.die(&format!("agent process is gone: {e}")));
        let kb = |key: &str| {
            let line = status.lines().find_map(|l| l.strip_prefix(key))?;
            line.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        };
        match (kb("VmRSS:"), kb("VmHWM:"), kb("RssAnon:")) {
            (Some(rss), Some(hwm), Some(anon)) => (rss * 1024, hwm * 1024, anon * 1024),
            _ => self.die("no VmRSS/VmHWM/RssAnon in /proc/<pid>/status"),
        }
    }

    /// Remembers a `true` that did not succeed, with the first line of its stderr.
    fn check(&mut self, fin: &Reply) {
        if fin.document_status() != "Success" {
            let plugins = fin.payload["runtimeStatus"].as_object();
            let stderr = plugins.and_then(|p| p.values().next()?["standardError"].as_str());
            let why = stderr.unwrap_or("").lines().next().unwrap_or("");
            self.failed.push(format!(
                "{} {}: {why}",
                fin.message_id,
                fin.document_status()
            ));
        }
    }

    fn send_true(&self) -> String {
        let payload = aws_run_shell_script_payload(&uuid_v4(), &["true"], 60);
        self.emu.send_command(&payload)
    }

    /// One command at a time: (delivery → receipt reply, delivery → final reply) of each.
    fn latencies(&mut self) -> (Vec<Duration>, Vec<Duration>) {
        let (mut receipt, mut last) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            self.wait(WAIT, "the agent's next held GetMessages", |s| {
                s.held_polls() > 0
            });
            let id = self.send_true();
            let Some(fin) = self.emu.wait_final(&id, WAIT) else {
                self.die(&format!("no final reply for {id} within {WAIT:?}"));
            };
            self.check(&fin);
            let (deliveries, replies) = (self.emu.deliveries(&id), self.emu.replies(&id));
            let (Some(&given), Some(first)) = (deliveries.first(), replies.first()) else {
                self.die(&format!("{id}: the emulator recorded no delivery"));
            };
            receipt.push(first.arrived - given);
            last.push(fin.arrived - given);
        }
        (receipt, last)
    }

    /// One job at a time over the control channel: job sent → final reply of each.
    fn mgs_latencies(&mut self) -> Vec<Duration> {
        let mut last = Vec::new();
        for _ in 0..RUNS {
            let payload = aws_run_shell_script_payload(&uuid_v4(), &["true"], 60);
            let sent = Instant::now();
            let job = self.emu.send_agent_job(&payload);
            let Some(fin) = self.emu.wait_job_final(&job, WAIT) else {
                self.die(&format!("no final reply for job {job} within {WAIT:?}"));
            };
            self.check(&fin);
            last.push(fin.arrived - sent);
        }
        last
    }

    /// Enqueues `BURST` commands at once: seconds until the last final reply, and how many
    /// messages the emulator had to deliver more than once (not acknowledged in time).
    fn burst(&mut self) -> (f64, usize) {
        let t0 = Instant::now();
        let ids: Vec<String> = (0..BURST).map(|_| self.send_true()).collect();
        let mut done = 0;
        self.wait(
            Duration::from_secs(900),
            "every burst command's final reply",
            |s| {
                while done < ids.len() && s.final_reply(&ids[done]).is_some() {
                    done += 1;
                }
                done == ids.len()
            },
        );
        let (end, finals, redelivered) = self.emu.read(|s| {
            let finals: Vec<Reply> = ids
                .iter()
                .filter_map(|id| s.final_reply(id).cloned())
                .collect();
            let end = finals.iter().map(|r| r.arrived).max().unwrap_or(t0);
            let again = ids.iter().filter(|id| s.deliveries(id).len() > 1);
            (end, finals, again.count())
        });
        finals.iter().for_each(|r| self.check(r));
        ((end - t0).as_secs_f64(), redelivered)
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn row(what: &str, value: &str, goal: &str) {
    println!("{what:<42} {value:<44} {goal}");
}

fn mb(bytes: u64) -> String {
    format!("{bytes} B ({:.2} MB)", bytes as f64 / MB as f64)
}

fn goal(met: bool, text: &str) -> String {
    format!("{text} ({})", if met { "met" } else { "MISSED" })
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// The median, and "median / p90 / p99 / max ms" (nearest rank).
fn spread(mut v: Vec<Duration>) -> (Duration, String) {
    v.sort();
    let at = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    let [a, b, c, d] = [0.5, 0.9, 0.99, 1.0].map(|p| ms(at(p)));
    (at(0.5), format!("{a} / {b} / {c} / {d} ms"))
}

/// A size row, then what `file` says (stripped? statically linked?).
fn size_rows(label: &str, path: &Path) {
    let size = fs::metadata(path).map_or(0, |m| m.len());
    row(label, &mb(size), &goal(size <= 3 * MB, "≤ 3 MB"));
    let out = Command::new("file").arg("-b").arg(path).output();
    let kind = out.map_or_else(
        |e| e.to_string(),
        |o| String::from_utf8_lossy(&o.stdout).into(),
    );
    println!(
        "  file: {}",
        kind.split(", BuildID").next().unwrap_or("").trim()
    );
}

fn binary_sizes() {
    size_rows("binary size, gnu", Path::new(BIN));
    // The static binary that ships: `make release` builds it with the pinned cross toolchain.
    let musl = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "dist/ssm-lite-{}-x86_64",
        env!("CARGO_PKG_VERSION")
    ));
    if !musl.exists() {
        return row(
            "binary size, musl",
            "skipped: run `make release` first",
            "≤ 3 MB",
        );
    }
    size_rows("binary size, musl", &musl);
}

/// median − shell − 4 emulator round trips, unless those round trips swamp the difference.
fn own_share(median: Duration, shell: Duration, rtt: Duration) -> String {
    let own = median.saturating_sub(shell + 4 * rtt);
    let sum = format!("{} - {} - 4 × {}", ms(median), ms(shell), ms(rtt));
    if rtt > Duration::from_millis(2) {
        return format!("not measurable: {sum} (emulator too slow)");
    }
    let verdict = if own <= Duration::from_millis(5) {
        "met"
    } else {
        "MISSED"
    };
    format!("{sum} = {} ms ({verdict})", ms(own))
}

/// Median time of `sh -c true`: the shell's own share of each command.
fn shell_start() -> Duration {
    let run = |_: usize| {
        let t = Instant::now();
        let status = Command::new("sh").args(["-c", "true"]).status();
        assert!(status.is_ok_and(|s| s.success()), "`sh -c true` failed");
        t.elapsed()
    };
    spread((0..RUNS).map(run).collect()).0
}

/// Median keep-alive round trip of a tiny request to the emulator: its HTTP handling alone, the
/// cost of each call the agent makes to it.
fn emulator_round_trip(url: &str) -> io::Result<Duration> {
    let mut conn = TcpStream::connect(url.trim_start_matches("http://"))?;
    conn.set_read_timeout(Some(WAIT))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut times = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        conn.write_all(b"GET /_emulator/replies?message_id=none HTTP/1.1\r\nHost: bench\r\n\r\n")?;
        let (mut body_len, mut line) = (0, String::new());
        while line != "\r\n" {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                body_len = v.trim().parse().unwrap_or(0);
            }
        }
        reader.read_exact(&mut vec![0; body_len])?;
        times.push(t.elapsed());
    }
    Ok(spread(times).0)
}

fn main() {
    let idle = env::var("SSM_BENCH_IDLE_SECS").map_or(60, |s| s.parse().unwrap_or(60));
    println!("ssm-lite bench: {}\n", agent_bin());
    row("measurement", "value", "goal");
    binary_sizes();

    let emu = Emulator::start(Options::default());
    let rtt = emulator_round_trip(emu.url()).expect("a plain request to the in-process emulator");
    let mut b = Bench::start(emu, false);
    b.wait(
        WAIT,
        "the first health ping, a held GetMessages and both association polls",
        |s| {
            !s.health_pings().is_empty()
                && s.held_polls() > 0
                && s.list_associations_calls().len() >= 2
        },
    );
    std::thread::sleep(Duration::from_secs(idle));
    let (rss, hwm, anon) = b.memory();
    let rss_goal = goal(rss <= 3 * MB, "≤ 3 MiB");
    row(&format!("idle VmRSS after {idle} s"), &mb(rss), &rss_goal);
    row(&format!("idle VmHWM after {idle} s"), &mb(hwm), "");
    // The rest of VmRSS is the binary's own code pages (shared, reclaimable page cache).
    row("  of it anonymous (RssAnon)", &mb(anon), "heap, stacks");

    let (receipt, last) = b.latencies();
    let (median, text) = spread(last);
    let spread_goal = "median/p90/p99/max";
    row(
        &format!("delivery → final reply, {RUNS}× true"),
        &text,
        &goal(median <= Duration::from_millis(5), "≤ 5 ms median"),
    );
    row("delivery → receipt reply", &spread(receipt).1, spread_goal);
    let shell = shell_start();
    row("  reference: `sh -c true`, median", &ms(shell), "");
    row("  reference: emulator round trip, median", &ms(rtt), "");
    row(
        "  agent's own share (estimate)",
        &own_share(median, shell, rtt),
        "≤ 5 ms median",
    );

    let mut m = Bench::start(Emulator::start(Options::default()), true);
    if !m.emu.wait_mgs_connected(WAIT) {
        m.die("the control channel did not connect");
    }
    let (mgs_median, text) = spread(m.mgs_latencies());
    row(
        &format!("MGS: job → final reply, {RUNS}× true"),
        &text,
        &goal(mgs_median <= Duration::from_millis(5), "≤ 5 ms median"),
    );
    b.failed.append(&mut m.failed);
    drop(m);

    let (secs, redelivered) = b.burst();
    let rate = format!("{:.1}/s ({BURST} in {secs:.2} s)", BURST as f64 / secs);
    row(
        &format!("throughput, {BURST}× true enqueued at once"),
        &rate,
        "",
    );
    row(
        "  messages delivered more than once",
        &redelivered.to_string(),
        "",
    );
    let failed = b.failed.len().to_string();
    row(
        "commands of `true` that did not succeed",
        &failed,
        "0 (else an agent bug)",
    );
    b.failed.iter().take(3).for_each(|f| println!("  {f}"));
    let (rss, hwm, _) = b.memory();
    row(
        "VmRSS / VmHWM after the burst",
        &format!("{} / {}", mb(rss), mb(hwm)),
        "",
    );
    println!(
        "\nLatencies are taken by the emulator, from handing the message out in a GetMessages answer
to the arrival of the reply, so they include the emulator's loopback HTTP handling (SigV4 checks
included) and the shell's own start. The final reply is the 4th call of the agent's one sender
thread (ack, receipt, step reply, final reply), hence the estimate subtracts 4 round trips. The
MGS row runs a second agent on its own emulator's control channel: from queueing the agent_job to
the arrival of the final agent_job_reply.
Throughput: Mds.CommandWorkersLimit 5 and the default CommandWorkerBufferLimit 5, as users run it."
    );
}
