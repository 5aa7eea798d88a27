//! `ssm-emulator shell` and `ssm-emulator port`: a real agent behind the emulator, with the
//! emulator playing session-manager-plugin for the person at the terminal.
//!
//! * `shell --agent PATH`: a Standard_Stream session on this terminal (raw mode through
//!   `stty` on /dev/tty, restored on exit; the window size is sent at start and re-sent when it
//!   changes, checked once a second). Ends when the shell exits.
//! * `port --agent PATH --local-port L --remote-port R`: every connection to 127.0.0.1:L gets
//!   its own Port session to the agent's localhost:R (basic mode, no smux).
//! * `port … --mux`: one `AWS-StartPortForwardingSession` with `localPortNumber=L`; a
//!   [`LocalForwarder`] listens where the handshake says, and every connection is one smux
//!   stream in the session.
//!
//! [`LocalForwarder`] is session-manager-plugin's local end of a multiplexed Port session: like
//! the plugin, it knows nothing of the session document and takes its listener from the
//! handshake's Properties only ([`PortParameters`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::demo::AgentRun;
use crate::session::PortParameters;
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

/// A connection to the forwarder's listener.
enum Local {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Local {
    fn try_clone(&self) -> io::Result<Local> {
        Ok(match self {
            Local::Tcp(s) => Local::Tcp(s.try_clone()?),
            Local::Unix(s) => Local::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self) {
        let _ = match self {
            Local::Tcp(s) => s.shutdown(Shutdown::Both),
            Local::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Local {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Local::Tcp(s) => s.read(buf),
            Local::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Local {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Local::Tcp(s) => s.write(buf),
            Local::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where the forwarder listens.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// The plugin's `getListener`: the Unix socket when `localConnectionType` is `unix`, else
    /// `localhost:<localPortNumber>`, a free port when that is empty.
    fn bind(p: &PortParameters) -> Result<Listener, String> {
        if p.local_connection_type == "unix" {
            let path = PathBuf::from(&p.local_unix_socket);
            return UnixListener::bind(&path)
                .map(|l| Listener::Unix(l, path))
                .map_err(|e| format!("listening on {}: {e}", p.local_unix_socket));
        }
        let port = if p.local_port_number.is_empty() {
            "0"
        } else {
            &p.local_port_number
        };
        TcpListener::bind(format!("127.0.0.1:{port}"))
            .map(Listener::Tcp)
            .map_err(|e| format!("listening on 127.0.0.1:{port}: {e}"))
    }

    fn accept(&self) -> io::Result<Local> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Local::Tcp(s)),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Local::Unix(s)),
        }
    }

    /// Unblocks `accept` (by connecting to it).
    fn wake(&self) {
        let _ = match self {
            Listener::Tcp(l) => l.local_addr().and_then(TcpStream::connect).map(drop),
            Listener::Unix(_, path) => UnixStream::connect(path).map(drop),
        };
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The local end of a multiplexed Port session: listens where the handshake's Properties say
/// and relays every connection through its own smux stream, until dropped.
pub struct LocalForwarder {
    listener: Arc<Listener>,
    stopping: Arc<AtomicBool>,
    accepting: Option<thread::JoinHandle<()>>,
}

impl LocalForwarder {
    /// Waits up to `timeout` for the session's HandshakeRequest, then listens.
    pub fn start(session: &Session, timeout: Duration) -> Result<LocalForwarder, String> {
        let params = session
            .wait_port_parameters(timeout)
            .ok_or_else(|| format!("session {}: no Port handshake", session.id()))?;
        if !session.multiplexed() {
            return Err(format!(
                "session {}: the handshake did not make it multiplexed ({params:?})",
                session.id()
            ));
        }
        let listener = Arc::new(Listener::bind(&params)?);
        let stopping = Arc::new(AtomicBool::new(false));
        let (l, stop, s) = (listener.clone(), stopping.clone(), session.clone());
        let accepting = thread::Builder::new()
            .name("port-forwarder".into())
            .spawn(move || accept_loop(&l, &stop, &s))
            .map_err(|e| format!("cannot start the forwarder: {e}"))?;
        Ok(LocalForwarder {
            listener,
            stopping,
            accepting: Some(accepting),
        })
    }

    /// The TCP port listened on (None for a Unix socket).
    pub fn local_port(&self) -> Option<u16> {
        match &*self.listener {
            Listener::Tcp(l) => l.local_addr().ok().map(|a| a.port()),
            Listener::Unix(..) => None,
        }
    }
}

impl Drop for LocalForwarder {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.listener.wake();
        if let Some(t) = self.accepting.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &Listener, stopping: &AtomicBool, session: &Session) {
    while let Ok(conn) = listener.accept() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let session = session.clone();
        thread::spawn(move || {
            if let Err(e) = forward_over_smux(&session, conn) {
                eprintln!("port: {e}");
            }
        });
    }
}

/// Relays one local connection through its own smux stream of `session`.
fn forward_over_smux(session: &Session, local: Local) -> Result<(), String> {
    let mut to_agent = session.smux_open()?;
    let mut from_agent = to_agent.try_clone();
    let mut reader = local.try_clone().map_err(|e| e.to_string())?;
    let upstream = thread::spawn(move || {
        let _ = io::copy(&mut reader, &mut to_agent);
        let _ = to_agent.shutdown();
    });
    let mut writer = local;
    let _ = io::copy(&mut from_agent, &mut writer);
    writer.shutdown();
    let _ = upstream.join();
    Ok(())
}

/// `ssm-emulator port`: serves until the process is interrupted. With `mux`, one multiplexed
/// session carries every connection.
pub fn port(agent: &Path, local_port: u16, remote_port: u16, mux: bool) -> Result<bool, String> {
    // Without smux the emulator listens itself; with it, the handshake says where.
    let listener = match mux {
        false => Some(
            TcpListener::bind(("127.0.0.1", local_port))
                .map_err(|e| format!("listening on 127.0.0.1:{local_port}: {e}"))?,
        ),
        true => None,
    };
    let run = AgentRun::start(agent, "port")?;
    let served = await_control_channel(&run).and_then(|()| {
        eprintln!(
            "port: forwarding 127.0.0.1:{local_port} to the agent's localhost:{remote_port}; Ctrl-C stops"
        );
        match listener {
            Some(l) => {
                serve_basic(&run.emu, &l, remote_port);
                Ok(())
            }
            None => serve_multiplexed(&run.emu, local_port, remote_port),
        }
    });
    run.stop("port");
    served.map(|()| true)
}

/// Every connection gets its own (basic) Port session.
fn serve_basic(emu: &Emulator, listener: &TcpListener, remote_port: u16) {
    thread::scope(|scope| {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            scope.spawn(move || {
                if let Err(e) = forward_connection(emu, conn, remote_port) {
                    eprintln!("port: {e}");
                }
            });
        }
    });
}

/// One AWS-StartPortForwardingSession, served until it ends.
fn serve_multiplexed(emu: &Emulator, local_port: u16, remote_port: u16) -> Result<(), String> {
    let spec = SessionSpec::port_forwarding_session(remote_port, Some(local_port));
    let session = emu.start_session(spec)?;
    let _forwarder = LocalForwarder::start(&session, CONNECT_TIMEOUT)?;
    while !session.wait_over(CONNECT_TIMEOUT) {}
    Ok(())
}
