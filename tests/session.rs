//! Session Manager end to end: the real agent, the emulator as service and client, a real PTY.

mod common;

use common::*;
use serde_json::json;
use ssm_emulator::{LinkSpec, SessionSpec};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn connected_agent(emu: &ssm_emulator::Emulator) -> Agent {
    let agent = Agent::start(emu, json!({}));
    assert!(
        emu.wait_mgs_connected(WAIT),
        "control channel connected; log:\n{}",
        agent.log()
    );
    agent
}

#[test]
fn a_shell_session_runs_as_the_run_as_user_resizes_and_ends_with_success() {
    let emu = emulator();
    let _agent = connected_agent(&emu);
    let s = emu
        .start_session(SessionSpec::standard_stream().run_as("nobody", true))
        .expect("session starts");
    s.send_input(b"echo $((6*7))\r");
    s.read_output_until("42", WAIT).expect("the shell answers");
    s.resize(100, 30);
    s.send_input(b"stty size; id -un\r");
    s.read_output_until("30 100", WAIT)
        .expect("resize seen by stty");
    s.read_output_until("nobody", WAIT)
        .expect("runs as the RunAs user");
    s.send_input(b"exit\r");
    assert!(s.wait_closed(WAIT), "exit ends the session");
    let done = emu
        .wait_task_complete(s.id(), WAIT)
        .expect("agent_task_complete");
    assert_eq!(done.final_status, "Success");
    assert!(
        s.wait_session_state("Terminating", WAIT),
        "{:?}",
        s.session_state()
    );
}

#[test]
fn twenty_megabytes_arrive_whole_through_drops_and_a_pause() {
    let emu = emulator();
    let agent = connected_agent(&emu);
    let file = agent.scratch().join("big.txt");
    let make = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 15000000 /dev/urandom | base64 > {}",
            file.display()
        ))
        .status()
        .unwrap();
    assert!(make.success());
    let expected = std::fs::read(&file).unwrap();
    assert!(expected.len() >= 20_000_000);
    let s = emu
        .start_session(SessionSpec::non_interactive_commands(
            &format!("cat {}", file.display()),
            false,
        ))
        .unwrap();
    s.drop_every_nth_output(50);
    assert!(
        s.wait_output(WAIT, |out| out.len() > 5_000_000),
        "output flowing"
    );
    s.pause_publication();
    std::thread::sleep(Duration::from_secs(2)); // the pause itself is what is being tested
    s.start_publication();
    assert!(
        s.wait_output(Duration::from_secs(120), |out| out.len() >= expected.len()),
        "got {} of {} bytes",
        s.output().len(),
        expected.len()
    );
    assert!(s.output() == expected, "output differs from the file");
    assert!(
        !s.dropped_output().is_empty(),
        "the emulator did drop frames"
    );
    assert_eq!(
        emu.wait_task_complete(s.id(), WAIT).unwrap().final_status,
        "Success"
    );
}

#[test]
fn a_slow_or_lossy_client_gets_its_output_whole_without_a_resend_storm() {
    // Issue 12: late acks drew a re-send of nearly every frame. The window, not re-sends, must
    // pace the output; a lost frame goes again once, when a later ack shows it missing.
    const SIZE: usize = 3_000_000;
    let emu = emulator();
    let _agent = connected_agent(&emu);
    let late = LinkSpec {
        ack_delay: Duration::from_millis(100),
        rtt: Duration::from_millis(50),
        bandwidth: 4 << 20,
        ..LinkSpec::default()
    };
    let lossy = LinkSpec { loss: 0.01, ..late };
    for link in [late, lossy] {
        let cmd = format!("yes 0123456789 | head -c {SIZE}");
        let s = emu
            .start_session(SessionSpec::non_interactive_commands(&cmd, false))
            .unwrap();
        s.set_link(link);
        assert!(
            s.wait_output(Duration::from_secs(60), |out| out.len() >= SIZE),
            "{link:?}: got {} of {SIZE} bytes; {:?}",
            s.output().len(),
            s.stats()
        );
        let out = s.output();
        assert_eq!(out.len(), SIZE);
        assert!(out.chunks(11).all(|l| l == &b"0123456789\n"[..l.len()]));
        let st = s.stats();
        let frames = st.output_highest as u64 + 1;
        let resent = st.output_frames - frames;
        assert!(
            resent <= s.link_lost() + frames / 100,
            "{link:?}: {resent} of {frames} frames re-sent, {} lost",
            s.link_lost()
        );
        assert_eq!(
            emu.wait_task_complete(s.id(), WAIT).unwrap().final_status,
            "Success"
        );
    }
    assert_eq!(emu.mgs_errors(), Vec::<String>::new());
}

#[test]
fn non_interactive_commands_keep_streams_and_exit_code_apart() {
    let emu = emulator();
    let _agent = connected_agent(&emu);
    let s = emu
        .start_session(SessionSpec::non_interactive_commands(
            "echo out; echo err >&2; exit 3",
            true,
        ))
        .unwrap();
    assert_eq!(s.wait_exit_code(WAIT), Some(3));
    assert_eq!(s.output_string(), "out\n");
    assert_eq!(String::from_utf8_lossy(&s.stderr()), "err\n");
    assert_eq!(
        emu.wait_task_complete(s.id(), WAIT).unwrap().final_status,
        "Success"
    );
}

/// A TCP echo server on 127.0.0.1, one thread per connection.
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 16384];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn port_forwarding_basic_mode_echoes_and_denied_addresses_are_refused() {
    let emu = emulator();
    let _agent = connected_agent(&emu);
    let port = echo_server();
    let s = emu
        .start_session(SessionSpec::port(port, None, false))
        .unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    s.send_input(&payload);
    assert!(
        s.wait_output(WAIT, |out| out.len() >= payload.len()),
        "echo came back"
    );
    assert_eq!(s.output(), payload);
    s.send_flag(2); // TerminateSession
    assert_eq!(
        emu.wait_task_complete(s.id(), WAIT).unwrap().final_status,
        "Success"
    );

    let denied = emu
        .start_session(SessionSpec::port(80, Some("169.254.169.254"), false))
        .unwrap();
    let done = emu
        .wait_task_complete(denied.id(), WAIT)
        .expect("refused session completes");
    assert_eq!(done.final_status, "Failed");
    assert!(
        denied
            .read_output_until(
                "Forwarding to IP address 169.254.169.254 is forbidden.",
                WAIT
            )
            .is_ok(),
        "the client is told why, in upstream's words"
    );
}

/// A listener nobody answers: `accepted` tells whether anything connected to it.
struct Target(TcpListener);

impl Target {
    fn on(ip: &str) -> Target {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        Target(listener)
    }
    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }
    fn accepted(&self) -> bool {
        self.0.accept().is_ok()
    }
}

/// Starts a Port session to `host` and expects upstream's refusal, with no connection made.
fn assert_refused(emu: &ssm_emulator::Emulator, host: &str, target: &Target) {
    let s = emu
        .start_session(SessionSpec::port(target.port(), Some(host), false))
        .unwrap();
    let done = emu.wait_task_complete(s.id(), WAIT).expect("completes");
    assert_eq!(done.final_status, "Failed", "{host}");
    let refusal = format!("Forwarding to IP address {host} is forbidden.");
    assert!(s.read_output_until(&refusal, WAIT).is_ok(), "{host}");
    assert!(
        !target.accepted(),
        "{host}: a connection reached the target"
    );
}

#[test]
fn port_forwarding_refuses_other_spellings_of_a_denied_address() {
    let emu = emulator();
    let agent = Agent::start(
        &emu,
        json!({ "Mgs": { "DeniedPortForwardingRemoteIPs": ["127.0.0.1"] } }),
    );
    assert!(emu.wait_mgs_connected(WAIT), "log:\n{}", agent.log());
    let target = Target::on("127.0.0.1");
    for host in ["::ffff:127.0.0.1", "0.0.0.0", "2130706433"] {
        assert_refused(&emu, host, &target);
    }
}

#[test]
fn port_forwarding_refuses_the_vpc_reserved_addresses_from_imds() {
    // The emulator's IMDS puts the VPC on loopback, so its DNS address (base + 2) is local.
    let emu = ssm_emulator::Emulator::start(ssm_emulator::Options {
        poll_hold: Duration::from_secs(2),
        vpc_cidr_blocks: vec!["127.0.0.0/8".into()],
        ..ssm_emulator::Options::default()
    });
    let _agent = connected_agent(&emu);
    assert_refused(&emu, "127.0.0.2", &Target::on("127.0.0.2"));
    let allowed = Target::on("127.0.0.9");
    let s = emu
        .start_session(SessionSpec::port(allowed.port(), Some("127.0.0.9"), false))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while !allowed.accepted() {
        assert!(Instant::now() < deadline, "no connection to 127.0.0.9");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.send_flag(2); // TerminateSession
}

#[test]
fn terminating_from_the_service_kills_the_shell_and_reports_success() {
    let emu = emulator();
    let _agent = connected_agent(&emu);
    let s = emu
        .start_session(SessionSpec::standard_stream().run_as("nobody", true))
        .unwrap();
    s.send_input(b"echo pid=$$=\r");
    // The terminal echoes the typed line too: wait for the answer, where digits follow `pid=`.
    let pid_in = |out: &[u8]| {
        let text = String::from_utf8_lossy(out);
        text.split("pid=").skip(1).find_map(|t| {
            t.split('=')
                .next()
                .filter(|p| p.parse::<u32>().is_ok())
                .map(str::to_owned)
        })
    };
    assert!(
        s.wait_output(WAIT, |out| pid_in(out).is_some()),
        "the shell printed its pid"
    );
    let pid = pid_in(&s.output()).unwrap();
    emu.send_channel_closed(s.id());
    assert_eq!(
        emu.wait_task_complete(s.id(), WAIT).unwrap().final_status,
        "Success"
    );
    assert!(
        group_gone_within(&pid, Duration::from_secs(10)),
        "the shell's group is gone"
    );
}

/// Threads of the agent process.
fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Live (non-zombie) children of the agent process.
fn children(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter(|c| {
            !std::fs::read_to_string(format!("/proc/{c}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
        })
        .count()
}

#[test]
fn fifty_concurrent_shells_echo_and_leave_nothing_behind() {
    let emu = emulator();
    let agent = connected_agent(&emu);
    let baseline = thread_count(agent.pid());
    let sessions: Vec<_> = (0..50)
        .map(|_| {
            emu.start_session(SessionSpec::standard_stream().run_as("nobody", true))
                .unwrap()
        })
        .collect();
    for (i, s) in sessions.iter().enumerate() {
        s.send_input(format!("echo marker-$((1000+{i}))\r").as_bytes());
    }
    for (i, s) in sessions.iter().enumerate() {
        s.read_output_until(&format!("marker-{}", 1000 + i), WAIT)
            .expect("each session answers");
    }
    for s in &sessions {
        s.send_input(b"exit\r");
    }
    for s in &sessions {
        assert_eq!(
            emu.wait_task_complete(s.id(), WAIT).unwrap().final_status,
            "Success"
        );
    }
    let deadline = Instant::now() + WAIT;
    while (thread_count(agent.pid()) > baseline || children(agent.pid()) > 0)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        thread_count(agent.pid()),
        baseline,
        "session threads all ended"
    );
    assert_eq!(children(agent.pid()), 0, "no shell left");
}

#[test]
fn malformed_control_frames_are_dropped_and_sessions_still_work() {
    let emu = emulator();
    let agent = connected_agent(&emu);
    emu.send_control_raw(b"\x00\x00\x00\x01garbage".to_vec());
    emu.send_control_raw(vec![0u8; 3]);
    let s = emu
        .start_session(SessionSpec::non_interactive_commands("echo alive", true))
        .unwrap();
    assert_eq!(s.wait_exit_code(WAIT), Some(0));
    assert_eq!(s.output_string(), "alive\n");
    assert!(
        agent.log().contains("malformed"),
        "the bad frames were logged"
    );
}

#[test]
fn a_dropped_data_channel_reconnects_and_the_session_goes_on() {
    let emu = emulator();
    let _agent = connected_agent(&emu);
    let s = emu
        .start_session(SessionSpec::standard_stream().run_as("nobody", true))
        .unwrap();
    s.send_input(b"echo before-$((1+1))\r");
    s.read_output_until("before-2", WAIT).expect("first answer");
    s.drop_data_channel();
    s.send_input(b"echo after-$((2+2))\r");
    s.read_output_until("after-4", WAIT)
        .expect("the session answers after the reconnect");
    s.send_input(b"exit\r");
    assert_eq!(
        emu.wait_task_complete(s.id(), WAIT).unwrap().final_status,
        "Success"
    );
}

#[test]
fn a_kms_encrypted_shell_session_works() {
    let emu = emulator();
    let _agent = connected_agent(&emu);
    let spec = SessionSpec::standard_stream()
        .run_as("nobody", true)
        .kms_key_id("alias/ssm-lite-test");
    let s = emu.start_session(spec).unwrap();
    s.send_input(b"echo secret-$((6*7))\r");
    s.read_output_until("secret-42", WAIT)
        .expect("the encrypted shell answers");
    assert!(s.encrypted(), "keys agreed and the challenge answered");
    let decrypts = emu.kms_decrypts();
    assert_eq!(decrypts.len(), 1);
    assert!(decrypts[0].succeeded());
    assert!(
        decrypts[0]
            .encryption_context()
            .get("aws:ssm:RandomChallenge")
            .is_some()
    );
    let complete = s.handshake_complete().expect("HandshakeComplete");
    assert!(
        complete["CustomerMessage"]
            .as_str()
            .unwrap()
            .contains("encrypted using AWS KMS")
    );
    assert!(emu.mgs_errors().is_empty(), "{:?}", emu.mgs_errors());
    s.send_input(b"exit\r");
    assert_eq!(
        emu.wait_task_complete(s.id(), WAIT).unwrap().final_status,
        "Success"
    );
}

#[test]
fn port_forwarding_smux_mode_carries_ten_parallel_connections() {
    const STREAMS: u32 = 10;
    const LEN: usize = 1 << 20;
    let emu = emulator();
    let _agent = connected_agent(&emu);
    let port = echo_server();
    let started = Instant::now();
    let s = emu
        .start_session(SessionSpec::port(port, None, true))
        .unwrap();
    // Distinct per stream: a different multiplier and offset for each.
    let payload = |k: u32| -> Vec<u8> {
        (0..LEN as u32)
            .map(|i| (i.wrapping_mul(2 * k + 1).wrapping_add(k * 37) >> 3) as u8)
            .collect()
    };
    std::thread::scope(|scope| {
        for k in 0..STREAMS {
            let mut stream = s.smux_open().expect("smux stream opens");
            scope.spawn(move || {
                let sent = payload(k);
                let mut writer = stream.try_clone();
                let data = sent.clone();
                let writing = std::thread::spawn(move || writer.write_all(&data));
                stream.set_read_timeout(Some(WAIT));
                let mut echoed = vec![0u8; LEN];
                stream.read_exact(&mut echoed).expect("the echo comes back");
                writing.join().unwrap().expect("all bytes written");
                assert!(echoed == sent, "stream {} echoed other bytes", stream.id());
                stream.shutdown().unwrap();
                assert_eq!(
                    stream.read(&mut [0u8; 16]).unwrap(),
                    0,
                    "the agent answers FIN with FIN"
                );
            });
        }
    });
    let stats = s.smux_stats();
    assert_eq!(
        (stats.streams_opened, stats.fins_received),
        (STREAMS, u64::from(STREAMS))
    );
    s.send_flag(2); // TerminateSession
    let done = emu
        .wait_task_complete(s.id(), WAIT)
        .expect("agent_task_complete");
    assert_eq!(done.final_status, "Success");
    assert!(emu.mgs_errors().is_empty(), "{:?}", emu.mgs_errors());
    eprintln!(
        "smux: {STREAMS} × {LEN} bytes echoed in {:?}; {:?}",
        started.elapsed(),
        s.stats()
    );
}

/// Waits until `out` has a line `pid=<digits>=` and returns the digits.
fn printed_pid(s: &ssm_emulator::Session) -> String {
    let pid_in = |out: &[u8]| {
        let text = String::from_utf8_lossy(out);
        text.split("pid=").skip(1).find_map(|t| {
            t.split('=')
                .next()
                .filter(|p| p.parse::<u32>().is_ok())
                .map(str::to_owned)
        })
    };
    assert!(
        s.wait_output(WAIT, |out| pid_in(out).is_some()),
        "the command printed its pid: {:?}",
        s.output_string()
    );
    pid_in(&s.output()).unwrap()
}

/// A command that closed its output but runs on (`sleep 25`) ends at once when terminated.
#[test]
fn terminating_a_command_that_closed_its_output_kills_it_at_once() {
    let emu = emulator();
    let _agent = connected_agent(&emu);
    let script = "echo pid=$$=; exec <&- >&- 2>&-; sleep 25";
    for spec in [
        SessionSpec::non_interactive_commands(script, true),
        SessionSpec::non_interactive_commands(script, false),
        SessionSpec::interactive_commands(script),
    ] {
        let kind = spec.session_type.clone();
        let s = emu.start_session(spec).unwrap();
        let pid = printed_pid(&s);
        // The output is closed once the shell's pid is out; the session must still run.
        assert!(
            emu.wait_task_complete(s.id(), Duration::from_millis(500))
                .is_none(),
            "{kind}: the session waits for the command"
        );
        let asked = Instant::now();
        emu.send_channel_closed(s.id());
        let done = emu
            .wait_task_complete(s.id(), Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{kind}: not ended 10 s after the terminate"));
        assert_eq!(done.final_status, "Success", "{kind}");
        assert!(
            group_gone_within(&pid, Duration::from_secs(10)),
            "{kind}: the sleep is gone"
        );
        eprintln!(
            "{kind}: agent_task_complete arrived {:?} after the terminate",
            done.arrived.saturating_duration_since(asked)
        );
    }
}

/// `field` (`VmRSS`, `VmHWM`) of process `pid`, in bytes.
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = status.lines().find_map(|l| {
        let value = l.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
    });
    kb.unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status")) * 1024
}

/// How far input may push the agent above idle: a session's input window (4 MiB, plus one
/// message beyond it) and its plugin's unwritten input (1 MiB), with room for the allocator.
/// Everything the client sends beyond that waits unacknowledged on the client.
const INPUT_GROWTH_LIMIT: u64 = 16 << 20;

/// Distinct bytes, so that a lost, repeated or reordered piece shows.
fn numbered_bytes(len: usize) -> Vec<u8> {
    (0..len as u32)
        .flat_map(|i| (i / 4).to_le_bytes().into_iter().nth((i % 4) as usize))
        .collect()
}

/// A port listener for one connection that reads nothing until `go` fires, then reads `len`
/// bytes and returns them.
fn sink(
    len: usize,
) -> (
    u16,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<Vec<u8>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (go, start) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        start.recv().unwrap();
        conn.set_read_timeout(Some(WAIT)).unwrap();
        let mut got = vec![0u8; len];
        conn.read_exact(&mut got).expect("every byte arrives");
        got
    });
    (port, go, reader)
}

/// The agent's highest resident size, sampled while `busy()` holds (at most `limit`).
fn peak_rss_while(pid: u32, limit: Duration, mut busy: impl FnMut() -> bool) -> u64 {
    let deadline = Instant::now() + limit;
    let mut peak = memory(pid, "VmRSS");
    while busy() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        peak = peak.max(memory(pid, "VmRSS"));
    }
    peak
}

/// Input messages of `s` the agent has acknowledged so far.
fn acked(s: &ssm_emulator::Session) -> i64 {
    let st = s.stats();
    st.inputs_sequenced - st.inputs_unacked as i64
}

#[test]
fn input_to_a_port_that_does_not_read_waits_on_the_client_not_in_the_agent() {
    const LEN: usize = 40 << 20;
    let emu = emulator();
    let agent = connected_agent(&emu);
    let (port, go, reader) = sink(LEN);
    let s = emu
        .start_session(SessionSpec::port(port, None, false))
        .unwrap();
    assert!(
        s.wait_input_acked(WAIT),
        "handshake done; log:\n{}",
        agent.log()
    );
    let idle = memory(agent.pid(), "VmRSS");
    let data = numbered_bytes(LEN);
    let total = acked(&s) + LEN.div_ceil(1024) as i64;
    s.send_input(&data);
    // Acknowledgements stop once the agent's buffers are full; wait until they have stood
    // still for a while (or everything was taken).
    let (mut last, mut since) = (acked(&s), Instant::now());
    let peak = peak_rss_while(agent.pid(), Duration::from_secs(60), || {
        let now = acked(&s);
        if now != last {
            (last, since) = (now, Instant::now());
        }
        now < total && since.elapsed() < Duration::from_secs(2)
    });
    let growth = peak.saturating_sub(idle);
    eprintln!(
        "held back: agent RSS {} KiB above idle with {} of {total} KiB acknowledged; {:?}",
        growth / 1024,
        acked(&s),
        s.stats()
    );
    assert!(
        growth < INPUT_GROWTH_LIMIT,
        "the agent grew {} KiB above idle on input its destination does not read",
        growth / 1024
    );
    assert!(acked(&s) < total, "the agent stopped acknowledging input");
    go.send(()).unwrap();
    let peak = peak_rss_while(agent.pid(), Duration::from_secs(120), || {
        !reader.is_finished()
    });
    let got = reader.join().unwrap();
    assert!(
        got == data,
        "the destination got other bytes than were sent"
    );
    let growth = peak.max(memory(agent.pid(), "VmHWM")).saturating_sub(idle);
    assert!(
        growth < INPUT_GROWTH_LIMIT,
        "the agent grew {} KiB above idle while the held input drained",
        growth / 1024
    );
    assert!(s.stats().input_retransmissions > 0, "input was held back");
    s.send_flag(2); // TerminateSession
    assert_eq!(
        emu.wait_task_complete(s.id(), WAIT).unwrap().final_status,
        "Success"
    );
    assert!(emu.mgs_errors().is_empty(), "{:?}", emu.mgs_errors());
}

#[test]
fn a_burst_of_out_of_order_input_is_bounded_and_arrives_in_order_once() {
    const CHUNK: usize = 1 << 20;
    const LEN: usize = 40 * CHUNK;
    let emu = emulator();
    let agent = connected_agent(&emu);
    let (port, go, reader) = sink(LEN);
    go.send(()).unwrap();
    let s = emu
        .start_session(SessionSpec::port(port, None, false))
        .unwrap();
    assert!(s.wait_input_acked(WAIT), "handshake done");
    let idle = memory(agent.pid(), "VmRSS");
    let data = numbered_bytes(LEN);
    // Messages 1..40 first, then 0: the agent holds what fits its window and drops the rest
    // unacknowledged, which the client then sends again.
    s.send_input_out_of_order(&data, CHUNK);
    let peak = peak_rss_while(agent.pid(), Duration::from_secs(120), || {
        !reader.is_finished()
    });
    let got = reader.join().unwrap();
    assert!(
        got == data,
        "the destination got other bytes than were sent"
    );
    let growth = peak.max(memory(agent.pid(), "VmHWM")).saturating_sub(idle);
    eprintln!(
        "out of order: agent peak {} KiB above idle; {:?}",
        growth / 1024,
        s.stats()
    );
    assert!(
        growth < INPUT_GROWTH_LIMIT,
        "the agent grew {} KiB above idle on out-of-order input",
        growth / 1024
    );
    s.send_flag(2);
    assert_eq!(
        emu.wait_task_complete(s.id(), WAIT).unwrap().final_status,
        "Success"
    );
    assert!(emu.mgs_errors().is_empty(), "{:?}", emu.mgs_errors());
}

#[test]
fn an_smux_stream_whose_destination_does_not_read_is_held_back_then_arrives_whole() {
    const LEN: usize = 32 << 20;
    let emu = emulator();
    let agent = connected_agent(&emu);
    let (port, go, reader) = sink(LEN);
    let s = emu
        .start_session(SessionSpec::port(port, None, true))
        .unwrap();
    let stream = s.smux_open().expect("smux stream opens");
    assert!(s.wait_input_acked(WAIT), "SYN taken");
    let idle = memory(agent.pid(), "VmRSS");
    let data = numbered_bytes(LEN);
    let mut writer = stream.try_clone();
    let sent = data.clone();
    let writing = std::thread::spawn(move || writer.write_all(&sent));
    let (mut last, mut since) = (acked(&s), Instant::now());
    let peak = peak_rss_while(agent.pid(), Duration::from_secs(60), || {
        let now = acked(&s);
        if now != last {
            (last, since) = (now, Instant::now());
        }
        !writing.is_finished() && since.elapsed() < Duration::from_secs(2)
    });
    let growth = peak.saturating_sub(idle);
    eprintln!(
        "smux held back: agent RSS {} KiB above idle; {:?}",
        growth / 1024,
        s.stats()
    );
    assert!(
        growth < INPUT_GROWTH_LIMIT,
        "the agent grew {} KiB above idle on a stream its destination does not read",
        growth / 1024
    );
    assert!(!writing.is_finished(), "the client's writes wait");
    go.send(()).unwrap();
    let peak = peak_rss_while(agent.pid(), Duration::from_secs(120), || {
        !reader.is_finished()
    });
    writing.join().unwrap().expect("all bytes written");
    assert!(
        reader.join().unwrap() == data,
        "the destination got other bytes than were sent"
    );
    let growth = peak.max(memory(agent.pid(), "VmHWM")).saturating_sub(idle);
    assert!(
        growth < INPUT_GROWTH_LIMIT,
        "the agent grew {} KiB above idle while the stream drained",
        growth / 1024
    );
    s.send_flag(2);
    assert_eq!(
        emu.wait_task_complete(s.id(), WAIT).unwrap().final_status,
        "Success"
    );
    assert!(emu.mgs_errors().is_empty(), "{:?}", emu.mgs_errors());
}

/// An smux SYN frame (version 1, command 0, no data) for `stream`.
fn smux_syn(stream: u32) -> Vec<u8> {
    let mut frame = vec![1, 0, 0, 0];
    frame.extend_from_slice(&stream.to_le_bytes());
    frame
}

#[test]
fn output_that_input_makes_is_bounded_while_the_client_acknowledges_none() {
    // Every SYN beyond the agent's 256 open streams is refused with a FIN: input that makes
    // output. A client that takes none of that output must not make the agent keep it all.
    const OPEN: u32 = 256;
    const REFUSED: u32 = 120_000;
    /// More FINs than the agent may keep unacknowledged: its input moves again.
    const DRAINED: u64 = 3 * 1024;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (accepted, all_accepted) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(OPEN as usize).collect();
        accepted.send(held.len()).unwrap();
        std::thread::park(); // keeps the connections open
    });
    let emu = emulator();
    let agent = connected_agent(&emu);
    let s = emu
        .start_session(SessionSpec::port(port, None, true))
        .unwrap();
    let open: Vec<u8> = (0..OPEN).flat_map(|i| smux_syn(2 * i + 1)).collect();
    s.send_input(&open);
    assert_eq!(
        all_accepted.recv_timeout(WAIT),
        Ok(OPEN as usize),
        "the streams open"
    );
    s.withhold_output_acks(true);
    let idle = memory(agent.pid(), "VmRSS");
    let flood: Vec<u8> = (0..REFUSED)
        .flat_map(|i| smux_syn(2 * (OPEN + i) + 1))
        .collect();
    s.send_input(&flood);
    // The agent re-sends what is not acknowledged: wait until no new output comes.
    let (mut last, mut since) = (s.stats().output_highest, Instant::now());
    let peak = peak_rss_while(agent.pid(), Duration::from_secs(60), || {
        let now = s.stats().output_highest;
        if now != last {
            (last, since) = (now, Instant::now());
        }
        since.elapsed() < Duration::from_secs(2)
    });
    let growth = peak.saturating_sub(idle);
    eprintln!(
        "unacknowledged output: agent RSS {} KiB above idle; {:?}",
        growth / 1024,
        s.stats()
    );
    assert!(
        growth < INPUT_GROWTH_LIMIT,
        "the agent grew {} KiB above idle keeping output nobody acknowledges",
        growth / 1024
    );
    s.withhold_output_acks(false);
    // The FINs flow again (all of them would take long: each is a message of its own).
    let flowing = || s.smux_stats().frames_received >= DRAINED;
    let peak = peak_rss_while(agent.pid(), WAIT, || !flowing());
    assert!(
        flowing(),
        "the refusals flow again once the client acknowledges: {:?}",
        s.smux_stats()
    );
    let growth = peak.max(memory(agent.pid(), "VmHWM")).saturating_sub(idle);
    assert!(
        growth < INPUT_GROWTH_LIMIT,
        "the agent grew {} KiB above idle",
        growth / 1024
    );
    // A Flag would wait behind the refusals still held: the service ends it out of band.
    emu.send_channel_closed(s.id());
    assert_eq!(
        emu.wait_task_complete(s.id(), WAIT).unwrap().final_status,
        "Success"
    );
}

/// A directory a session user other than root may write to.
fn shared_dir(agent: &Agent) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = agent.scratch().join("shared");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// Types `line` into a shell session as nobody and waits for it to have run.
fn in_shell_as_nobody(emu: &ssm_emulator::Emulator, line: &str) {
    let s = emu
        .start_session(SessionSpec::standard_stream().run_as("nobody", true))
        .unwrap();
    s.send_input(format!("{line}; echo done-$((6*7))\r").as_bytes());
    s.read_output_until("done-42", WAIT)
        .expect("the shell ran it");
    s.send_input(b"exit\r");
    assert_eq!(
        emu.wait_task_complete(s.id(), WAIT).unwrap().final_status,
        "Success"
    );
}

/// nobody's passwd entry: (home, shell).
fn nobody() -> (String, String) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd.lines().find(|l| l.starts_with("nobody:")).unwrap();
    let f: Vec<&str> = line.split(':').collect();
    (f[5].to_owned(), f[6].to_owned())
}

/// A session as another user gets a login environment: none of the agent's credentials, its
/// proxy without the password, and that user's HOME, USER, LOGNAME and SHELL.
#[test]
fn a_run_as_session_sees_none_of_the_agents_secrets() {
    let emu = emulator();
    let agent = Agent::start_with_env(
        &emu,
        json!({}),
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDAGENTONLY"),
            ("AWS_SECRET_ACCESS_KEY", "agent-secret-key"),
            ("HTTPS_PROXY", "http://proxyuser:proxy-password@127.0.0.1:9"),
            ("NO_PROXY", "127.0.0.1"),
            ("LANG", "C.UTF-8"),
        ],
    );
    assert!(emu.wait_mgs_connected(WAIT), "log:\n{}", agent.log());
    let dir = shared_dir(&agent);
    in_shell_as_nobody(&emu, &format!("env > {}/env", dir.display()));
    let shell_env = std::fs::read_to_string(dir.join("env")).unwrap();
    let s = emu
        .start_session(SessionSpec::non_interactive_commands("env", true).run_as("nobody", true))
        .unwrap();
    assert_eq!(s.wait_exit_code(WAIT), Some(0), "env ran");
    let command_env = s.output_string();
    let (home, shell) = nobody();
    for env in [&shell_env, &command_env] {
        for secret in [
            "agent-secret-key",
            "AKIDAGENTONLY",
            "proxy-password",
            "proxyuser",
        ] {
            assert!(!env.contains(secret), "{secret} leaked:\n{env}");
        }
        let vars: Vec<&str> = env.lines().collect();
        for want in [
            format!("HOME={home}"),
            "USER=nobody".into(),
            "LOGNAME=nobody".into(),
            format!("SHELL={shell}"),
            "TERM=xterm-256color".into(),
            "LANG=C.UTF-8".into(),
            "HTTPS_PROXY=http://127.0.0.1:9".into(),
            "NO_PROXY=127.0.0.1".into(),
        ] {
            assert!(vars.contains(&want.as_str()), "no {want}:\n{env}");
        }
        assert!(vars.iter().any(|v| v.starts_with("PATH=/")), "{env}");
        assert!(!vars.iter().any(|v| v.starts_with("AWS_")), "{env}");
    }
}

/// A session shell (and what it starts) inherits nothing the agent was started with: not the
/// ignored SIGINT and SIGQUIT of an init script's `&`, not a starter's open fd 7.
#[test]
fn a_session_shell_inherits_default_signals_and_only_fds_0_to_2() {
    let emu = emulator();
    let agent = Agent::start_from_shell(&emu, json!({}), "trap '' INT QUIT\nexec 7</dev/null");
    assert!(emu.wait_mgs_connected(WAIT), "log:\n{}", agent.log());
    let dir = shared_dir(&agent);
    let d = dir.display();
    in_shell_as_nobody(
        &emu,
        &format!("grep -E '^Sig(Blk|Ign)' /proc/self/status > {d}/sig; ls /proc/self/fd > {d}/fds"),
    );
    let sig = std::fs::read_to_string(dir.join("sig")).unwrap();
    assert_eq!(
        sig,
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
    // `ls` holds 0-2 (the terminal) and 3, the directory it reads.
    let fds = std::fs::read_to_string(dir.join("fds")).unwrap();
    assert_eq!(
        fds.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "3"]
    );
    assert!(
        std::fs::metadata(format!("/proc/{}/fd/7", agent.pid())).is_ok(),
        "the agent itself holds fd 7"
    );
}

/// A port nothing listens on now (the kernel's pick, released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `sent` on `writer` while reading as many bytes from `reader`; whether they match.
fn echoes<S: Read + Write + Send + 'static>(mut reader: S, mut writer: S, sent: &[u8]) -> bool {
    let data = sent.to_vec();
    let writing = std::thread::spawn(move || writer.write_all(&data));
    let mut echoed = vec![0u8; sent.len()];
    reader.read_exact(&mut echoed).expect("the echo comes back");
    writing.join().unwrap().expect("all bytes written");
    echoed == sent
}

fn handshake_properties(s: &ssm_emulator::Session) -> serde_json::Value {
    let request = s.handshake_request().expect("a HandshakeRequest");
    request["RequestedClientActions"][0]["ActionParameters"]["Properties"].clone()
}

/// `AWS-StartPortForwardingSession` with `localPortNumber`: the client, knowing only the
/// handshake, listens on that port, and ten connections through it are ten smux streams.
#[test]
fn port_forwarding_listens_on_the_handshakes_local_port_and_carries_ten_connections() {
    const CONNECTIONS: usize = 10;
    const LEN: usize = 256 * 1024;
    let emu = emulator();
    let _agent = connected_agent(&emu);
    let (echo, local) = (echo_server(), free_port());
    let s = emu
        .start_session(SessionSpec::port_forwarding_session(echo, Some(local)))
        .unwrap();
    let forwarder = ssm_emulator::LocalForwarder::start(&s, WAIT).expect("the client listens");
    assert_eq!(
        handshake_properties(&s),
        json!({ "portNumber": echo.to_string(), "type": "LocalPortForwarding",
            "localPortNumber": local.to_string() }),
        "the document's properties, resolved, whole"
    );
    assert_eq!(forwarder.local_port(), Some(local));
    std::thread::scope(|scope| {
        for k in 0..CONNECTIONS {
            scope.spawn(move || {
                let conn = std::net::TcpStream::connect(("127.0.0.1", local)).unwrap();
                conn.set_read_timeout(Some(WAIT)).unwrap();
                let sent: Vec<u8> = (0..LEN).map(|i| (i * (2 * k + 1) + k) as u8).collect();
                assert!(
                    echoes(conn.try_clone().unwrap(), conn.try_clone().unwrap(), &sent),
                    "connection {k} echoed other bytes"
                );
                conn.shutdown(std::net::Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                (&conn).read_to_end(&mut rest).unwrap();
                assert!(rest.is_empty(), "the stream ends with the FIN");
            });
        }
    });
    let stats = s.smux_stats();
    assert_eq!(
        (stats.streams_opened, stats.fins_received),
        (CONNECTIONS as u32, CONNECTIONS as u64)
    );
    s.send_flag(ssm_emulator::port_flags::TERMINATE_SESSION);
    let done = emu
        .wait_task_complete(s.id(), WAIT)
        .expect("agent_task_complete");
    assert_eq!(done.final_status, "Success");
    assert!(emu.mgs_errors().is_empty(), "{:?}", emu.mgs_errors());
}

/// The plugin's other listeners: a free port when `localPortNumber` is "0" (the document's
/// default), and a Unix socket when `localConnectionType` is `unix`.
#[test]
fn port_forwarding_listens_on_a_free_port_or_the_handshakes_unix_socket() {
    let emu = emulator();
    let agent = connected_agent(&emu);
    let echo = echo_server();
    let s = emu
        .start_session(SessionSpec::port_forwarding_session(echo, None))
        .unwrap();
    let forwarder = ssm_emulator::LocalForwarder::start(&s, WAIT).expect("the client listens");
    assert_eq!(handshake_properties(&s)["localPortNumber"], "0");
    let port = forwarder.local_port().expect("a TCP listener");
    assert_ne!(port, 0);
    let conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    assert!(echoes(conn.try_clone().unwrap(), conn, b"over a free port"));

    let socket = agent.scratch().join("forward.sock");
    let mut spec = SessionSpec::port(echo, None, true);
    spec.properties["localConnectionType"] = json!("unix");
    spec.properties["localUnixSocket"] = json!(socket.display().to_string());
    let u = emu.start_session(spec).unwrap();
    let forwarder = ssm_emulator::LocalForwarder::start(&u, WAIT).expect("the client listens");
    assert_eq!(forwarder.local_port(), None);
    let conn = std::os::unix::net::UnixStream::connect(&socket).expect("the socket listens");
    conn.set_read_timeout(Some(WAIT)).unwrap();
    assert!(echoes(
        conn.try_clone().unwrap(),
        conn,
        b"over a unix socket"
    ));
    drop(forwarder);
    assert!(!socket.exists(), "the socket goes with the forwarder");
    assert!(emu.mgs_errors().is_empty(), "{:?}", emu.mgs_errors());
}

/// Output written just before a command exits reaches the client before the session ends:
/// both pipes are read to their end and acknowledged before `agent_task_complete` (at which
/// the service closes the client's channel), fifty times, ten at a time for load; every other
/// session keeps the streams apart and must also deliver the exit code.
#[test]
fn a_commands_last_output_on_both_streams_always_arrives_before_the_end() {
    let emu = emulator();
    let _agent = connected_agent(&emu);
    for round in 0..5 {
        let sessions: Vec<_> = (0..10)
            .map(|i| {
                let separate = i % 2 == 1;
                let command = "echo out; echo err >&2; exit 3";
                let spec = SessionSpec::non_interactive_commands(command, separate);
                (separate, emu.open_session(spec))
            })
            .collect();
        for (separate, s) in sessions {
            let done = emu
                .wait_task_complete(s.id(), WAIT)
                .expect("agent_task_complete");
            assert_eq!(done.final_status, "Success");
            let seen = if separate {
                let stderr = String::from_utf8_lossy(&s.stderr()).into_owned();
                (s.output_string(), stderr, s.exit_code())
            } else {
                let mut lines: Vec<_> = s.output_string().lines().map(String::from).collect();
                lines.sort_unstable();
                (lines.concat(), String::new(), s.exit_code())
            };
            let expected = match separate {
                true => ("out\n".to_string(), "err\n".to_string(), Some(3)),
                false => ("errout".to_string(), String::new(), None),
            };
            assert_eq!(seen, expected, "round {round}, session {}", s.id());
            let stats = s.stats();
            assert_eq!(
                stats.output_after_task_complete, 0,
                "round {round}: {stats:?}"
            );
        }
    }
    assert!(emu.mgs_errors().is_empty(), "{:?}", emu.mgs_errors());
}
