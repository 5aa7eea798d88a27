//! The state every child of the agent starts in, whoever started the agent.
//!
//! Whatever the agent inherited passes on to its children unless it is undone between fork and
//! exec: an init script that starts it with `&` from `sh` leaves SIGINT and SIGQUIT ignored (and
//! ignored signals stay ignored across exec), and a starter's descriptors without close-on-exec
//! reach every script. [`command`] gives a `Command` whose child starts with every signal at its
//! default action, an empty signal mask, only the descriptors it is given (0–2 and what std sets
//! up), the `RLIMIT_NOFILE` soft limit the agent was started with, and `oom_score_adj` 0; its
//! environment is the agent's plus additions, or only what [`ChildEnv::Only`] names.
//!
//! The agent itself runs with its soft descriptor limit raised to the hard limit
//! ([`raise_fd_limit`]: a thousand sessions need more than 1024 descriptors). Its children get the
//! starting soft limit back, as Go's runtime (amazon-ssm-agent) and systemd do: a program built
//! on `select()` cannot handle descriptors above 1023, and opts into more itself if it needs them.

use super::cvt;
use std::ffi::OsStr;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// The soft and hard `RLIMIT_NOFILE` children get; `u64::MAX` (the initial value): leave as is.
static CHILD_NOFILE: [AtomicU64; 2] = [AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)];

/// Signals 1..=64 are every signal Linux has on the architectures ssm-lite is built for.
const LAST_SIGNAL: libc::c_int = 64;
/// `CLOSE_RANGE_CLOEXEC` of <linux/close_range.h> (Linux 5.11); the libc crate lacks it.
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// `Command::new(program)`, with the reset step of this module run in the child before exec.
/// Later `pre_exec` steps (a user switch) run after it.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    super::oom::unshield_child(&mut cmd);
    // SAFETY: `reset_in_child` runs between fork and exec and only makes async-signal-safe
    // system calls on stack and static data: no allocation, no locks.
    unsafe { cmd.pre_exec(reset_in_child) };
    cmd
}

/// The environment a child starts with.
#[derive(Debug, Clone, Copy)]
pub enum ChildEnv<'a> {
    /// The agent's own, with these variables added or replaced.
    Agent(&'a [(String, String)]),
    /// These variables and no others.
    Only(&'a [(String, String)]),
}

impl ChildEnv<'_> {
    pub fn apply(self, cmd: &mut Command) {
        let vars = match self {
            ChildEnv::Agent(vars) => vars,
            ChildEnv::Only(vars) => {
                cmd.env_clear();
                vars
            }
        };
        cmd.envs(vars.iter().map(|(k, v)| (k, v)));
    }
}

/// Raises the agent's soft `RLIMIT_NOFILE` to its hard limit and remembers the old soft limit
/// for children. Returns (old soft, new soft).
pub fn raise_fd_limit() -> io::Result<(u64, u64)> {
    let (soft, hard) =
        fd_limit().map_err(|e| io::Error::new(e.kind(), format!("getrlimit failed: {e}")))?;
    CHILD_NOFILE[0].store(soft, Ordering::SeqCst);
    CHILD_NOFILE[1].store(hard, Ordering::SeqCst);
    if soft < hard {
        set_fd_limit(hard, hard).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot raise the descriptor limit from {soft} to {hard}: {e}"),
            )
        })?;
    }
    Ok((soft, hard))
}

/// The calling process's soft and hard `RLIMIT_NOFILE`; async-signal-safe (one system call,
/// nothing allocated, also on failure).
fn fd_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit that outlives the call.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// `setrlimit(RLIMIT_NOFILE)`; async-signal-safe (one system call, nothing allocated).
fn set_fd_limit(soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `lim` is a valid rlimit that outlives the call.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    Ok(())
}

/// Runs in the forked child. Failures are ignored: each step is a best effort the child cannot
/// report, and none of them is worth not running the script for.
fn reset_in_child() -> io::Result<()> {
    default_signals();
    let (soft, hard) = (
        CHILD_NOFILE[0].load(Ordering::Relaxed),
        CHILD_NOFILE[1].load(Ordering::Relaxed),
    );
    let limit = if soft == u64::MAX {
        fd_limit().map_or(1024, |(soft, _)| soft)
    } else {
        let _ = set_fd_limit(soft, hard);
        soft
    };
    close_on_exec_from_3(limit);
    Ok(())
}

/// Every signal's action back to SIG_DFL and an empty mask (std empties the mask too; this does
/// not rely on it). The system call, not libc's `sigaction`: the C library refuses to touch the
/// signals it reserves for its threads (32 and 33, or 32–34), and those can arrive ignored too.
fn default_signals() {
    // The kernel's struct sigaction on every architecture ssm-lite is built for is handler,
    // flags, restorer and an 8-byte mask, in some order: all zero is SIG_DFL, no flags, no mask.
    let dfl = [0u64; 4];
    for sig in 1..=LAST_SIGNAL {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: `dfl` is readable for more than the kernel reads; no old action is asked
            // for; 8 is the size of the kernel's signal set on these architectures.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                )
            };
        }
    }
    // SAFETY: an all-zero sigset_t is a valid value of this plain C type.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `empty` is a valid, writable sigset_t; sigemptyset and sigprocmask only touch it.
    unsafe {
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// Marks every descriptor from 3 up close-on-exec, so the exec closes them: closing them here
/// would also close the pipe std reports a failed exec through. close_range(2) where the kernel
/// has it (5.11); else the list in /proc/self/fd; else every number below `limit`.
fn close_on_exec_from_3(limit: u64) {
    // SAFETY: close_range takes plain integers; with CLOSE_RANGE_CLOEXEC it only sets flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 || close_on_exec_listed().is_ok() {
        return;
    }
    let last = libc::c_int::try_from(limit.min(1 << 20)).unwrap_or(1 << 20);
    for fd in 3..last {
        set_cloexec(fd);
    }
}

fn set_cloexec(fd: libc::c_int) {
    // SAFETY: F_SETFD takes a plain int; on a number that is no open fd it fails with EBADF.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
}

/// Marks the descriptors /proc/self/fd lists, read with getdents64 into a stack buffer.
fn close_on_exec_listed() -> io::Result<()> {
    // SAFETY: the path is a NUL-terminated static string; open returns a new fd or -1.
    let dir = unsafe {
        libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    cvt(dir)?;
    let mut buf = [0u8; 1024];
    let result = loop {
        // SAFETY: `buf` is writable for the length passed; getdents64 fills it with records.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len()) };
        match cvt(n) {
            Ok(0) => break Ok(()),
            Ok(n) => for_each_fd(
                &buf[..usize::try_from(n).unwrap_or(0).min(buf.len())],
                |fd| {
                    if fd >= 3 && fd != dir {
                        set_cloexec(fd);
                    }
                },
            ),
            Err(e) => break Err(e),
        }
    };
    // SAFETY: closes the directory fd opened above, which nothing else holds.
    unsafe { libc::close(dir) };
    result
}

/// Calls `f` with the number of each `linux_dirent64` record in `records` whose name is one
/// (`.` and `..` are skipped). Record layout: d_ino u64, d_off i64, d_reclen u16, d_type u8,
/// then the NUL-terminated name.
fn for_each_fd(records: &[u8], mut f: impl FnMut(libc::c_int)) {
    const NAME: usize = 19;
    let mut at = 0;
    while let Some(len) = records.get(at + 16..at + 18) {
        let len = usize::from(u16::from_ne_bytes([len[0], len[1]]));
        let Some(record) = records.get(at..at + len).filter(|_| len > NAME) else {
            return;
        };
        let name = &record[NAME..];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        if let Some(fd) = parse_fd(name) {
            f(fd);
        }
        at += len;
    }
}

fn parse_fd(name: &[u8]) -> Option<libc::c_int> {
    if name.is_empty() || name.len() > 9 || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        name.iter()
            .fold(0, |n, d| n * 10 + libc::c_int::from(d - b'0')),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::fd::AsRawFd;

    /// Sets `sig`'s action in this process (for tests that need an inherited disposition).
    fn set_action(sig: libc::c_int, handler: libc::sighandler_t) {
        // SAFETY: an all-zero sigaction is valid; only the handler field is set.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = handler;
        // SAFETY: `act` is a valid sigaction.
        let rc = unsafe { libc::sigaction(sig, &act, std::ptr::null_mut()) };
        assert_eq!(rc, 0);
    }

    /// A descriptor without close-on-exec, as a careless starter would leave one.
    fn inheritable(file: &File) {
        // SAFETY: F_SETFD on our open fd takes a plain int.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFD, 0) };
        assert_eq!(rc, 0);
    }

    fn field<'a>(status: &'a str, name: &str) -> &'a str {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .trim()
    }

    #[test]
    fn the_child_gets_default_signals_no_extra_fds_and_the_starting_fd_limit() {
        // SIGQUIT is changed nowhere else in the test binary; SIGINT is left alone here because
        // other tests of this binary send it to their children.
        set_action(libc::SIGQUIT, libc::SIG_IGN);
        let leaked = File::open("/dev/null").unwrap();
        inheritable(&leaked);
        // As if the agent had raised its limit from 512 (children of other tests get 512 too
        // meanwhile, which is harmless).
        let (_, hard) = fd_limit().unwrap();
        CHILD_NOFILE[0].store(512.min(hard), Ordering::SeqCst);
        CHILD_NOFILE[1].store(hard, Ordering::SeqCst);
        let out = command("sh")
            .args([
                "-c",
                "cat /proc/self/status; echo soft=$(ulimit -Sn)=; ls /proc/self/fd",
            ])
            .output()
            .unwrap();
        CHILD_NOFILE[0].store(u64::MAX, Ordering::SeqCst);
        set_action(libc::SIGQUIT, libc::SIG_DFL);
        let out = String::from_utf8(out.stdout).unwrap();
        assert!(out.contains(&format!("soft={}=", 512.min(hard))), "{out}");
        assert_eq!(field(&out, "SigIgn:"), "0000000000000000", "{out}");
        assert_eq!(field(&out, "SigBlk:"), "0000000000000000", "{out}");
        // `ls` holds 0-2 and the directory it reads.
        let fds: Vec<&str> = out.lines().filter(|l| l.parse::<u32>().is_ok()).collect();
        assert_eq!(fds, ["0", "1", "2", "3"], "{out}");
        let _ = leaked;
    }

    #[test]
    fn the_fd_list_is_parsed_from_dirent_records() {
        let record = |name: &[u8]| {
            let len = (19 + name.len() + 1).next_multiple_of(8);
            let mut r = vec![0u8; len];
            r[16..18].copy_from_slice(&(len as u16).to_ne_bytes());
            r[19..19 + name.len()].copy_from_slice(name);
            r
        };
        let records: Vec<u8> = [&b"."[..], b"..", b"0", b"17", b"123456"]
            .iter()
            .flat_map(|n| record(n))
            .collect();
        let mut seen = Vec::new();
        for_each_fd(&records, |fd| seen.push(fd));
        assert_eq!(seen, [0, 17, 123456]);
        for_each_fd(&records[..records.len() - 3], |fd| assert!(fd < 100));
        assert_eq!(parse_fd(b"12a"), None);
        assert_eq!(parse_fd(b"9999999999"), None);
    }

    #[test]
    fn every_way_of_marking_fds_reaches_an_inherited_one() {
        let file = File::open("/dev/null").unwrap();
        let fd = file.as_raw_fd();
        // SAFETY: F_GETFD on our open fd takes no pointer.
        let cloexec = || unsafe { libc::fcntl(fd, libc::F_GETFD) } & libc::FD_CLOEXEC != 0;
        inheritable(&file);
        close_on_exec_listed().unwrap();
        assert!(cloexec(), "via /proc/self/fd");
        inheritable(&file);
        close_on_exec_from_3(1024);
        assert!(cloexec(), "via close_range or the fallbacks");
    }
}
