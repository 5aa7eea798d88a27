//! Pseudo-terminals for shell sessions: open a PTY pair, start a child on it as session leader
//! with the PTY as controlling terminal, resize it, and switch the child's user.
//!
//! Reading and writing the master is plain `File` I/O. When the child (and every process it left
//! holding the terminal) is gone, a read of the master fails with `EIO` instead of returning 0:
//! that is the normal end of the output; recognise it with [`is_closed`].

use super::child::ChildEnv;
use super::{context, cvt};
use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};

/// The user a child runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// The master side of a PTY whose child is running.
#[derive(Debug)]
pub struct Pty {
    pub master: File,
}

impl Pty {
    /// `TIOCSWINSZ`: tells the terminal (and, via SIGWINCH, its foreground job) its new size.
    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: the fd is our open master; TIOCSWINSZ reads one winsize that outlives the call.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        cvt(rc).map_err(|e| context(e, &format!("cannot resize the PTY to {cols}x{rows}")))?;
        Ok(())
    }

    /// Makes reads and writes of the master return `WouldBlock` instead of waiting (for callers
    /// that poll the fd), or makes them wait again.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        set_nonblocking(self.master.as_raw_fd(), nonblocking)
    }
}

/// Sets or clears `O_NONBLOCK` on an open fd (a PTY master, a child's pipe).
pub fn set_nonblocking(fd: RawFd, nonblocking: bool) -> io::Result<()> {
    // SAFETY: F_GETFL on an open fd takes no pointer.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    cvt(flags).map_err(|e| context(e, "cannot read file status flags"))?;
    let flags = if nonblocking {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: F_SETFL on an open fd takes a plain int.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
    cvt(rc).map_err(|e| context(e, "cannot set O_NONBLOCK"))?;
    Ok(())
}

/// True when `err`, from reading the master, means no process holds the terminal any more (the
/// session's shell has exited): the normal end of the output, not a failure.
pub fn is_closed(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::EIO)
}

/// The agent's effective user id (0 when it runs as root).
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// Starts `program args…` on a new PTY of `cols`×`rows` in a new session (setsid, controlling
/// terminal), with the environment `env`, optionally as `run_as`.
///
/// The master is close-on-exec, so later children of the agent do not inherit it; the agent keeps
/// no copy of the slave, so the master reads `EIO` once the child's side is closed.
pub fn spawn(
    program: &str,
    args: &[&str],
    env: ChildEnv<'_>,
    run_as: Option<&RunAs>,
    cols: u16,
    rows: u16,
) -> io::Result<(Child, Pty)> {
    let pty = Pty {
        master: open_master()?,
    };
    pty.resize(cols, rows)?;
    let slave = open_slave(&pty.master)?;
    let mut cmd = super::child::command(program);
    env.apply(&mut cmd);
    cmd.args(args)
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    let who = run_as.map_or(String::new(), |u| {
        format!(" as uid {} gid {}", u.uid, u.gid)
    });
    let run_as = run_as.cloned();
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // async-signal-safe system calls of `enter_session`; it allocates nothing (the group list
    // was allocated before the fork) and takes no locks.
    unsafe { cmd.pre_exec(move || enter_session(run_as.as_ref(), true)) };
    let child = cmd
        .spawn()
        .map_err(|e| context(e, &format!("cannot start {program} on a PTY{who}")))?;
    // The Command owns the parent's copies of the slave: closing them now lets the master see
    // EIO when the child is gone.
    drop(cmd);
    Ok((child, pty))
}

/// Starts `program args…` without a terminal, in a new session (so its whole process group can be
/// signalled), stdin from /dev/null, stdout and stderr piped, optionally as `run_as`.
pub fn spawn_piped(
    program: &str,
    args: &[&str],
    env: ChildEnv<'_>,
    run_as: Option<&RunAs>,
) -> io::Result<Child> {
    let mut cmd = super::child::command(program);
    env.apply(&mut cmd);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run_as = run_as.cloned();
    // SAFETY: as in `spawn`: only async-signal-safe system calls, no allocation, no locks.
    unsafe { cmd.pre_exec(move || enter_session(run_as.as_ref(), false)) };
    cmd.spawn()
        .map_err(|e| context(e, &format!("cannot start {program}")))
}

/// Runs in the child between fork and exec. std applies `CommandExt::uid/gid` *before* pre_exec
/// closures, after which setgroups would fail with EPERM, so the whole user switch happens here,
/// in the only working order: supplementary groups, then gid, then uid (which drops the right to
/// change the other two).
fn enter_session(run_as: Option<&RunAs>, controlling_terminal: bool) -> io::Result<()> {
    // SAFETY: setsid takes no arguments; the forked child is not a group leader, so it succeeds.
    cvt(unsafe { libc::setsid() })?;
    if controlling_terminal {
        // SAFETY: fd 0 is the PTY slave (std dup'ed it there); TIOCSCTTY takes an int argument.
        cvt(unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) })?;
    }
    if let Some(user) = run_as {
        // SAFETY: the pointer and length describe the live `groups` vector.
        cvt(unsafe { libc::setgroups(user.groups.len(), user.groups.as_ptr()) })?;
        // SAFETY: setgid and setuid take plain integers.
        cvt(unsafe { libc::setgid(user.gid) })?;
        // SAFETY: as above.
        cvt(unsafe { libc::setuid(user.uid) })?;
    }
    Ok(())
}

/// A new PTY master, close-on-exec, with its slave unlocked.
fn open_master() -> io::Result<File> {
    // SAFETY: posix_openpt takes flags only and returns a new fd or -1.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    cvt(fd).map_err(|e| context(e, "cannot open a PTY (posix_openpt)"))?;
    // SAFETY: fd is a new, valid descriptor that nothing else owns.
    let master = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // SAFETY: grantpt and unlockpt take our open master fd.
    cvt(unsafe { libc::grantpt(fd) }).map_err(|e| context(e, "grantpt failed"))?;
    // SAFETY: as above.
    cvt(unsafe { libc::unlockpt(fd) }).map_err(|e| context(e, "unlockpt failed"))?;
    Ok(master)
}

/// Opens the slave of `master`, close-on-exec and without making it the agent's terminal.
fn open_slave(master: &File) -> io::Result<OwnedFd> {
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: `name` is writable for the length passed; ptsname_r NUL-terminates on success.
    let rc = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
    if rc != 0 {
        let err = io::Error::from_raw_os_error(rc);
        return Err(context(err, "cannot get the PTY slave's name (ptsname_r)"));
    }
    // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated string.
    let path = unsafe { CStr::from_ptr(name.as_ptr()) };
    // SAFETY: `path` is a valid C string; open returns a new fd or -1.
    let fd: RawFd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    cvt(fd).map_err(|e| context(e, &format!("cannot open the PTY slave {path:?}")))?;
    // SAFETY: fd is a new, valid descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::mpsc::{Receiver, channel};
    use std::time::Duration;

    /// Everything the master yields, chunk by chunk, ending with the read error, from a thread.
    fn reader(pty: &Pty) -> Receiver<io::Result<Vec<u8>>> {
        let mut master = pty.master.try_clone().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            loop {
                let chunk = master.read(&mut buf).map(|n| buf[..n].to_vec());
                let end = chunk.is_err() || chunk.as_ref().is_ok_and(|c| c.is_empty());
                if tx.send(chunk).is_err() || end {
                    return;
                }
            }
        });
        rx
    }

    /// Output up to and including `needle`; fails after 10 s or at the end of the output.
    fn read_until(rx: &Receiver<io::Result<Vec<u8>>>, needle: &str) -> String {
        let mut seen = String::new();
        while !seen.contains(needle) {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(chunk)) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Err(e)) => panic!("output ended ({e}) before {needle:?}: {seen:?}"),
                Err(e) => panic!("no {needle:?} in the output ({e}): {seen:?}"),
            }
        }
        seen
    }

    /// The output of a child that ends by itself, up to the read error that ends it.
    fn read_to_end(rx: &Receiver<io::Result<Vec<u8>>>) -> (String, io::Error) {
        let mut seen = String::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(chunk)) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Err(e)) => return (seen, e),
                Err(e) => panic!("the output did not end ({e}): {seen:?}"),
            }
        }
    }

    fn sh(script: &str) -> (Child, Pty) {
        spawn("sh", &["-c", script], ChildEnv::Agent(&[]), None, 80, 24).unwrap()
    }

    /// A shell reading commands from the 80x24 terminal.
    fn interactive_sh() -> (Child, Pty) {
        spawn("sh", &[], ChildEnv::Agent(&[]), None, 80, 24).unwrap()
    }

    #[test]
    fn an_interactive_shell_runs_what_is_typed() {
        let (mut child, mut pty) = interactive_sh();
        let rx = reader(&pty);
        pty.master.write_all(b"echo $((6*7))\n").unwrap();
        read_until(&rx, "42");
        pty.master.write_all(b"exit 5\n").unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(5));
    }

    #[test]
    fn output_ends_with_eio_once_the_child_has_exited() {
        let (mut child, pty) = sh("echo done");
        let (out, err) = read_to_end(&reader(&pty));
        assert!(out.contains("done"), "{out:?}");
        assert!(is_closed(&err), "{err}");
        assert!(child.wait().unwrap().success());
    }

    #[test]
    fn env_is_added_to_the_agent_environment() {
        let env = [("SSM_LITE_PTY_TEST".to_string(), "x-y".to_string())];
        let (mut child, pty) = spawn(
            "sh",
            &["-c", "echo \"[$SSM_LITE_PTY_TEST:${PATH:+path}]\""],
            ChildEnv::Agent(&env),
            None,
            80,
            24,
        )
        .unwrap();
        read_until(&reader(&pty), "[x-y:path]");
        child.wait().unwrap();
    }

    #[test]
    fn only_env_replaces_the_agent_environment() {
        let env = [("SSM_LITE_PTY_TEST".to_string(), "only".to_string())];
        let script = "echo \"[$SSM_LITE_PTY_TEST:${HOME:-no home}]\"";
        let (mut child, pty) =
            spawn("sh", &["-c", script], ChildEnv::Only(&env), None, 80, 24).unwrap();
        read_until(&reader(&pty), "[only:no home]");
        child.wait().unwrap();
    }

    #[test]
    fn the_window_size_is_set_and_changed() {
        let (mut child, mut pty) = interactive_sh();
        let rx = reader(&pty);
        pty.master.write_all(b"stty size\n").unwrap();
        read_until(&rx, "24 80");
        pty.resize(100, 30).unwrap();
        pty.master.write_all(b"stty size\n").unwrap();
        read_until(&rx, "30 100");
        pty.master.write_all(b"exit\n").unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn the_child_leads_a_session_on_the_pty_and_the_agent_keeps_no_slave() {
        let (mut child, pty) = sh("tty; cat /proc/$$/stat");
        let (out, _) = read_to_end(&reader(&pty));
        let tty = out.lines().next().unwrap_or_default().trim();
        assert!(tty.starts_with("/dev/pts/"), "{out:?}");
        // Fields after "(comm)": state ppid pgrp session tty_nr.
        let stat = out.rsplit(')').next().unwrap_or_default();
        let fields: Vec<&str> = stat.split_whitespace().collect();
        let pid = child.id().to_string();
        assert_eq!(fields[2], pid, "process group: {out:?}");
        assert_eq!(fields[3], pid, "session: {out:?}");
        assert_ne!(fields[4], "0", "controlling terminal: {out:?}");
        for fd in std::fs::read_dir("/proc/self/fd").unwrap() {
            let target = std::fs::read_link(fd.unwrap().path()).unwrap_or_default();
            assert_ne!(
                target.to_string_lossy(),
                tty,
                "the agent still holds the slave"
            );
        }
        child.wait().unwrap();
    }

    #[test]
    fn the_master_is_close_on_exec() {
        let (mut child, pty) = sh("exit 0");
        // SAFETY: F_GETFD on our open fd takes no pointer.
        let flags = unsafe { libc::fcntl(pty.master.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        child.wait().unwrap();
    }

    #[test]
    fn nonblocking_reads_return_would_block_until_there_is_output() {
        let (mut child, mut pty) = sh("read x; echo got-$x");
        pty.set_nonblocking(true).unwrap();
        let err = pty.master.read(&mut [0u8; 64]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        pty.set_nonblocking(false).unwrap();
        pty.master.write_all(b"hi\n").unwrap();
        read_until(&reader(&pty), "got-hi");
        child.wait().unwrap();
    }

    #[test]
    fn run_as_switches_user_and_replaces_the_groups() {
        if effective_uid() != 0 {
            eprintln!("skipped: switching users needs root");
            return;
        }
        let nobody = RunAs {
            uid: 65534,
            gid: 65534,
            groups: vec![65534, 4242],
        };
        let (mut child, pty) = spawn(
            "sh",
            &["-c", "echo \"u=$(id -u) g=$(id -g) G=$(id -G).\""],
            ChildEnv::Agent(&[]),
            Some(&nobody),
            80,
            24,
        )
        .unwrap();
        read_until(&reader(&pty), "u=65534 g=65534 G=65534 4242.");
        assert!(child.wait().unwrap().success());
    }

    #[test]
    fn a_failed_spawn_names_the_program() {
        let err = spawn(
            "/nonexistent/ssm-lite-shell",
            &[],
            ChildEnv::Agent(&[]),
            None,
            80,
            24,
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string().contains("/nonexistent/ssm-lite-shell"),
            "{err}"
        );
    }
}
