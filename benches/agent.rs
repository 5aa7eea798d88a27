//! `make bench`: size, idle memory, per-command latency and throughput of the real release binary
//! against the in-process emulator on 127.0.0.1. Prints a table; fails only on a broken run (every
//! wait has a limit and says what it waited for), never on a number.

use ssm_emulator::{Emulator, Options, aws_run_shell_script_payload, uuid_v4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use std::{env, fs};

const BIN: &str = env!("CARGO_BIN_EXE_ssm-lite");
const MUSL: &str = "x86_64-unknown-linux-musl";
const WAIT: Duration = Duration::from_secs(60);
const LATENCY_RUNS: usize = 200;
const BURST: usize = 500;
const MB: f64 = 1024.0 * 1024.0;

/// The agent under measurement, its emulator and its temp dir (config, state, log).
struct Bench {
    emu: Emulator,
    agent: Child,
    dir: PathBuf,
}

impl Bench {
    fn start() -> Bench {
        let emu = Emulator::start(Options::default());
        let dir = env::temp_dir().join(format!("ssm-lite-bench-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("creating the bench dir in the temp dir");
        let config = serde_json::json!({
            "Mds": { "Endpoint": emu.url(), "CommandWorkersLimit": 5 },
            "Ssm": { "Endpoint": emu.url() },
            "Identity": { "ConsumptionOrder": ["EC2"] }
        });
        fs::write(dir.join("config.json"), config.to_string()).expect("writing the agent config");
        let log = fs::File::create(dir.join("agent.log")).expect("creating the agent log");
        let agent = Command::new(BIN)
            .args(["run", "--config"])
            .arg(dir.join("config.json"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", emu.url())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e} (run `make bench`)"));
        Bench { emu, agent, dir }
    }

    /// Ends the run as broken: says why, shows the end of the agent's log, exits 1.
    fn die(&mut self, why: &str) -> ! {
        let log = fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        eprintln!("bench broken: {why}\n--- last agent log lines ---");
        tail.iter().rev().for_each(|l| eprintln!("{l}"));
        eprintln!("(full log and state kept in {})", self.dir.display());
        let _ = self.agent.kill();
        std::process::exit(1);
    }

    fn wait(
        &mut self,
        limit: Duration,
        what: &str,
        ready: impl FnMut(&ssm_emulator::State) -> bool,
    ) {
        if !self.emu.wait_until(limit, ready) {
            self.die(&format!("timed out after {limit:?} waiting for {what}"));
        }
    }

    /// (VmRSS, VmHWM) in bytes from /proc.
    fn memory(&mut self) -> (u64, u64) {
        let status = fs::read_to_string(format!("/proc/{}/status", self.agent.id()));
        let status = status.unwrap_or_else(|e| self.die(&format!("agent process is gone: {e}")));
        let kb = |key: &str| {
            status.lines().find_map(|l| {
                l.strip_prefix(key)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        };
        match (kb("VmRSS:"), kb("VmHWM:")) {
            (Some(rss), Some(hwm)) => (rss * 1024, hwm * 1024),
            _ => self.die("no VmRSS/VmHWM in /proc/<pid>/status"),
        }
    }

    fn send_true(&self) -> String {
        self.emu
            .send_command(&aws_run_shell_script_payload(&uuid_v4(), &["true"], 60))
    }

    /// One command at a time: (delivery → receipt reply, delivery → final reply) for each.
    fn latencies(&mut self) -> (Vec<Duration>, Vec<Duration>) {
        let (mut receipt, mut last) = (Vec::new(), Vec::new());
        for _ in 0..LATENCY_RUNS {
            self.wait(WAIT, "the agent's next held GetMessages", |s| {
                s.held_polls() > 0
            });
            let id = self.send_true();
            if self.emu.wait_final(&id, WAIT).is_none() {
                self.die(&format!("no final reply for {id} within {WAIT:?}"));
            }
            let replies = self.emu.replies(&id);
            let (Some(&given), Some(first), Some(fin)) = (
                self.emu.deliveries(&id).first(),
                replies.first(),
                replies.iter().find(|r| r.is_final()),
            ) else {
                self.die(&format!("{id}: no delivery or replies recorded"));
            };
            if fin.document_status() != "Success" {
                self.die(&format!(
                    "{id} ended {}: {}",
                    fin.document_status(),
                    fin.payload
                ));
            }
            receipt.push(first.arrived - given);
            last.push(fin.arrived - given);
        }
        (receipt, last)
    }

    /// Enqueues `BURST` commands at once; seconds until the last final reply, and redeliveries.
    fn burst(&mut self) -> (f64, usize) {
        let t0 = Instant::now();
        let ids: Vec<String> = (0..BURST).map(|_| self.send_true()).collect();
        let mut done = 0;
        self.wait(
            Duration::from_secs(600),
            "all burst commands to finish",
            |s| {
                while done < ids.len() && s.final_reply(&ids[done]).is_some() {
                    done += 1;
                }
                done == ids.len()
            },
        );
        let (end, failed, redelivered) = self.emu.read(|s| {
            let finals = ids.iter().filter_map(|id| s.final_reply(id));
            let end = finals.clone().map(|r| r.arrived).max().unwrap_or(t0);
            let failed = finals.filter(|r| r.document_status() != "Success").count();
            (
                end,
                failed,
                ids.iter().filter(|id| s.deliveries(id).len() > 1).count(),
            )
        });
        if failed > 0 {
            self.die(&format!(
                "{failed} of {BURST} `true` commands did not succeed"
            ));
        }
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
    println!("{what:<40} {value:<44} {goal}");
}

fn mb(bytes: u64) -> String {
    format!("{bytes} B ({:.2} MB)", bytes as f64 / MB)
}

fn goal(ok: bool, text: &str) -> String {
    format!("{text} ({})", if ok { "met" } else { "MISSED" })
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// median / p90 / p99 / max in ms (nearest rank).
fn spread(mut v: Vec<Duration>) -> (Duration, String) {
    v.sort();
    let at = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    let text = format!(
        "{} / {} / {} / {} ms",
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(0.99)),
        ms(at(1.0))
    );
    (at(0.5), text)
}

fn file_type(path: &Path) -> String {
    Command::new("file")
        .arg("-b")
        .arg(path)
        .output()
        .map_or_else(
            |e| format!("`file` unavailable: {e}"),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        )
}

fn binary_sizes() {
    let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let gnu = Path::new(BIN);
    let stripped = if file_type(gnu).contains(", stripped") {
        "stripped"
    } else {
        "NOT stripped"
    };
    row(
        &format!("binary size, gnu ({stripped})"),
        &mb(size(gnu)),
        &goal(size(gnu) <= 3 << 20, "≤ 3 MB"),
    );
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    if !installed.is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l == MUSL)
    }) {
        let hint = format!("skipped: rustup target add {MUSL} (and apt-get install musl-tools)");
        return row("binary size, musl", &hint, "≤ 3 MB");
    }
    // BIN is <target-dir>/release/ssm-lite; the musl build goes beside it.
    let target_dir = gnu
        .parent()
        .and_then(Path::parent)
        .expect("BIN lies in <target-dir>/release");
    let build = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--quiet",
            "--release",
            "--bin",
            "ssm-lite",
            "--target",
            MUSL,
        ])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .status();
    let musl = target_dir.join(MUSL).join("release/ssm-lite");
    if !build.is_ok_and(|s| s.success()) {
        return row(
            "binary size, musl",
            "build failed (see above; musl-tools installed?)",
            "≤ 3 MB",
        );
    }
    let ty = file_type(&musl);
    let linked = if ty.contains("static") {
        "static"
    } else {
        "NOT static"
    };
    row(
        &format!("binary size, musl ({linked})"),
        &mb(size(&musl)),
        &goal(size(&musl) <= 3 << 20, "≤ 3 MB"),
    );
    println!("  musl `file`: {ty}");
}

/// Median spawn+wait of `sh -c true`, the part of each command's latency that is the shell's own.
fn shell_start() -> Duration {
    let runs = (0..LATENCY_RUNS).map(|_| {
        let t = Instant::now();
        let ok = Command::new("sh")
            .args(["-c", "true"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "`sh -c true` failed");
        t.elapsed()
    });
    spread(runs.collect()).0
}

fn main() {
    let idle: u64 = env::var("SSM_BENCH_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    println!("ssm-lite bench: {BIN}");
    row("measurement", "value", "goal");
    binary_sizes();

    let mut b = Bench::start();
    b.wait(WAIT, "the first health ping and a held GetMessages", |s| {
        !s.health_pings().is_empty() && s.held_polls() > 0
    });
    std::thread::sleep(Duration::from_secs(idle));
    let (rss, hwm) = b.memory();
    row(
        &format!("idle VmRSS after {idle} s"),
        &mb(rss),
        &goal(rss <= 4 << 20, "≤ 4 MB"),
    );
    row(&format!("idle VmHWM after {idle} s"), &mb(hwm), "");

    let (receipt, last) = b.latencies();
    let (median, text) = spread(last);
    let shell = shell_start();
    let own = median.saturating_sub(shell);
    row(
        &format!("latency delivery→final, {LATENCY_RUNS}× true"),
        &text,
        "median/p90/p99/max",
    );
    row(
        "  minus median `sh -c true` start",
        &format!("{} - {} = {} ms", ms(median), ms(shell), ms(own)),
        &goal(own <= Duration::from_millis(5), "≤ 5 ms median"),
    );
    row(
        "latency delivery→receipt reply",
        &spread(receipt).1,
        "median/p90/p99/max",
    );

    let (secs, redelivered) = b.burst();
    let rate = format!(
        "{:.1} commands/s ({BURST} in {secs:.2} s)",
        BURST as f64 / secs
    );
    row(
        &format!("throughput, {BURST}× true enqueued at once"),
        &rate,
        "5 workers, buffer 5 (defaults)",
    );
    row(
        "  messages delivered more than once",
        &redelivered.to_string(),
        "",
    );
    let (rss, hwm) = b.memory();
    row(
        "VmRSS / VmHWM after the load",
        &format!("{:.2} MB / {:.2} MB", rss as f64 / MB, hwm as f64 / MB),
        "",
    );
    println!(
        "\nLatency is measured by the emulator: from handing the message out in a GetMessages answer to\n\
         the arrival of the reply. It includes the emulator's loopback HTTP handling and SigV4 checks,\n\
         and the shell's own start; the agent's own share is roughly the median minus `sh -c true`.\n\
         Throughput uses the default worker buffer (CommandWorkerBufferLimit 5), as users run it."
    );
}
