//! `ssm-emulator shell` and `ssm-emulator port`: a real agent behind the emulator, with the
//! emulator playing session-manager-plugin for the person at the terminal.
//!
//! * `shell --agent PATH`: a Standard_Stream session on this terminal (raw mode through
//!   `stty` on /dev/tty, restored on exit; the window size is sent at start and re-sent when it
//!   changes, checked once a second). Ends when the shell exits.
//! * `port --agent PATH --local-port L --remote-port R`: every connection to 127.0.0.1:L gets
//!   its own Port session to the agent's localhost:R (basic mode, no smux).
//! * `port … --mux`: one multiplexed (LocalPortForwarding) Port session; every connection to
//!   127.0.0.1:L is one smux stream in it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::demo::AgentRun;
use crate::{Emulator, Session, SessionSpec};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `stty args` on the controlling terminal; its standard output.
fn stty(args: &[&str]) -> Result<String, String> {
    let tty = File::open("/dev/tty").map_err(|e| format!("opening /dev/tty: {e}"))?;
    let out = Command::new("stty")
        .args(args)
        .stdin(Stdio::from(tty))
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running stty {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("stty {args:?} failed: {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// (cols, rows) of the terminal.
fn terminal_size() -> Option<(u32, u32)> {
    let size = stty(&["size"]).ok()?;
    let (rows, cols) = size.split_once(' ')?;
    Some((cols.parse().ok()?, rows.parse().ok()?))
}

/// Raw mode for as long as it lives.
struct RawTerminal {
    saved: String,
}

impl RawTerminal {
    fn enter() -> Result<RawTerminal, String> {
        let saved = stty(&["-g"])?;
        stty(&["raw", "-echo"])?;
        Ok(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = stty(&[&self.saved]);
    }
}

/// Waits for the agent's control channel, failing early if the agent exits.
fn await_control_channel(run: &AgentRun) -> Result<(), String> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while Instant::now() < deadline {
        if run.emu.wait_mgs_connected(Duration::from_millis(500)) {
            return Ok(());
        }
        if let Ok(status) = run.exited.try_recv() {
            return Err(format!(
                "the agent exited ({status}) before opening the control channel"
            ));
        }
    }
    Err(format!(
        "the agent opened no control channel within {CONNECT_TIMEOUT:?}; MGS errors: {:?}",
        run.emu.mgs_errors()
    ))
}

/// Forwards this process's stdin to the session until stdin ends.
fn forward_stdin(session: Session) {
    thread::spawn(move || {
        let mut buf = [0u8; 1024];
        let mut stdin = io::stdin();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                break;
            }
            session.send_input(&buf[..n]);
        }
    });
}

/// Copies session output to stdout until the session ends; re-sends the size when it changes.
fn pump_output(session: &Session) {
    let mut output = session.port_stream();
    output.set_read_timeout(Some(Duration::from_secs(1)));
    let mut size = terminal_size();
    let mut stdout = io::stdout();
    let mut buf = [0u8; 4096];
    loop {
        match output.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let _ = stdout.write_all(&buf[..n]);
                let _ = stdout.flush();
            }
            Err(_) => {
                let now = terminal_size();
                if let (Some((cols, rows)), true) = (now, now != size) {
                    session.resize(cols, rows);
                }
                size = now;
            }
        }
    }
}

fn shell_session(emu: &Emulator) -> Result<String, String> {
    let mut spec = SessionSpec::standard_stream();
    spec.initial_size = terminal_size().or(spec.initial_size);
    let session = emu.start_session(spec)?;
    let raw = RawTerminal::enter()?;
    forward_stdin(session.clone());
    pump_output(&session);
    drop(raw);
    let status = session
        .wait_task_complete(Duration::from_secs(5))
        .map_or_else(|| "no agent_task_complete".into(), |t| t.final_status);
    Ok(status)
}

/// `ssm-emulator shell`: Ok(true) when the session ended with `Success`.
pub fn shell(agent: &Path) -> Result<bool, String> {
    let run = AgentRun::start(agent, "shell")?;
    let outcome = await_control_channel(&run).and_then(|()| shell_session(&run.emu));
    run.stop("shell");
    let status = outcome?;
    eprintln!("shell: session ended: {status}");
    Ok(status == "Success")
}

/// Relays one local connection through its own Port session.
fn forward_connection(emu: &Emulator, local: TcpStream, remote_port: u16) -> Result<(), String> {
    let session = emu.start_session(SessionSpec::port(remote_port, None, false))?;
    let mut to_agent = session.port_stream();
    let mut from_agent = session.port_stream();
    let mut reader = local.try_clone().map_err(|e| e.to_string())?;
    let upstream = thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = to_agent.write_all(&buf[..n]);
        }
        to_agent.terminate();
    });
    let mut writer = local;
    let _ = io::copy(&mut from_agent, &mut writer);
    let _ = writer.shutdown(Shutdown::Both);
    let _ = upstream.join();
    Ok(())
}

/// Relays one local connection through its own smux stream of `session`.
fn forward_over_smux(session: &Session, local: TcpStream) -> Result<(), String> {
    let mut to_agent = session.smux_open()?;
    let mut from_agent = to_agent.try_clone();
    let mut reader = local.try_clone().map_err(|e| e.to_string())?;
    let upstream = thread::spawn(move || {
        let _ = io::copy(&mut reader, &mut to_agent);
        let _ = to_agent.shutdown();
    });
    let mut writer = local;
    let _ = io::copy(&mut from_agent, &mut writer);
    let _ = writer.shutdown(Shutdown::Both);
    let _ = upstream.join();
    Ok(())
}

/// `ssm-emulator port`: serves until the process is interrupted. With `mux`, one multiplexed
/// session carries every connection.
pub fn port(agent: &Path, local_port: u16, remote_port: u16, mux: bool) -> Result<bool, String> {
    let listener = TcpListener::bind(("127.0.0.1", local_port))
        .map_err(|e| format!("listening on 127.0.0.1:{local_port}: {e}"))?;
    let run = AgentRun::start(agent, "port")?;
    if let Err(e) = await_control_channel(&run) {
        run.stop("port");
        return Err(e);
    }
    eprintln!(
        "port: forwarding 127.0.0.1:{local_port} to the agent's localhost:{remote_port}; Ctrl-C stops"
    );
    let emu = &run.emu;
    let session = if mux {
        match emu.start_session(SessionSpec::port(remote_port, None, true)) {
            Ok(s) => Some(s),
            Err(e) => {
                run.stop("port");
                return Err(e);
            }
        }
    } else {
        None
    };
    thread::scope(|scope| {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let session = session.as_ref();
            scope.spawn(move || {
                let relayed = match session {
                    Some(s) => forward_over_smux(s, conn),
                    None => forward_connection(emu, conn, remote_port),
                };
                if let Err(e) = relayed {
                    eprintln!("port: {e}");
                }
            });
        }
    });
    run.stop("port");
    Ok(true)
}
