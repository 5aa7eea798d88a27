//! Processes that are not (or no longer) the agent's children: a script supervisor the agent
//! started before a restart. Identified by pid plus the start time the kernel gives it in
//! `/proc/<pid>/stat`, so that a recycled pid is never taken for the process the record names.

use super::{Pid, context, cvt};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// How often a process is checked where the kernel has no pidfd_open (before Linux 5.3).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The start time of process `pid` (clock ticks since boot, field 22 of `/proc/<pid>/stat`),
/// also of a zombie; `None` when there is no such process.
pub fn start_time(pid: Pid) -> Option<u64> {
    stat(pid).map(|(_, started)| started)
}

/// True while the process `pid` that started at `started` still runs (is not a zombie).
pub fn is_running(pid: Pid, started: u64) -> bool {
    stat(pid).is_some_and(|(zombie, at)| !zombie && at == started)
}

fn stat(pid: Pid) -> Option<(bool, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw())).ok()?;
    parse_stat(&stat)
}

/// (zombie, start time) from a stat line. The fields after the command name (which may hold
/// spaces and parentheses, hence the last `)`): state is field 3, start time field 22.
fn parse_stat(stat: &str) -> Option<(bool, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let zombie = fields.next()? == "Z";
    Some((zombie, fields.nth(18)?.parse().ok()?))
}

/// Blocks until the process `pid` that started at `started` has ended (at once when it already
/// has, or the pid now names another process). Works for a process that is not our child: a
/// pidfd where the kernel has one, else a check of `/proc` every second.
pub fn wait_gone(pid: Pid, started: u64) -> io::Result<()> {
    let fd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            while is_running(pid, started) {
                std::thread::sleep(CHECK_EVERY);
            }
            return Ok(());
        }
        Err(e) => return Err(context(e, &format!("pidfd_open({}) failed", pid.as_raw()))),
    };
    // Checked after the open: the pidfd now pins the process it names, which may be a newcomer.
    if !is_running(pid, started) {
        return Ok(());
    }
    let raw: RawFd = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // A pidfd turns readable when its process ends.
    super::poll::poll(&mut [super::poll::PollFd::new(raw, true, false)], None)?;
    Ok(())
}

fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) })?;
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("pidfd_open gave no valid fd"))?;
    // SAFETY: `fd` is a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends SIGTERM to the one process `pid` (not its group). A process already gone is no error.
pub fn terminate(pid: Pid) -> io::Result<()> {
    if pid.as_raw() <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to send SIGTERM to pid {}", pid.as_raw()),
        ));
    }
    // SAFETY: kill takes plain integers and touches no memory of ours.
    match cvt(unsafe { libc::kill(pid.as_raw(), libc::SIGTERM) }) {
        Err(e) if e.raw_os_error() != Some(libc::ESRCH) => Err(context(
            e,
            &format!("cannot send SIGTERM to process {}", pid.as_raw()),
        )),
        _ => Ok(()),
    }
}

/// Makes `cmd`'s child the leader of a new session (and process group) before it execs, so that
/// nothing aimed at the agent's group or terminal reaches it and it outlives the agent.
pub fn new_session(cmd: &mut Command) {
    // SAFETY: setsid is async-signal-safe and touches no memory; it runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            cvt(libc::setsid())?;
            Ok(())
        })
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn the_start_time_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let tail = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 99 100";
        assert_eq!(parse_stat(&format!("7 (a) b) {tail}")), Some((false, 4242)));
        let zombie = tail.replacen('S', "Z", 1);
        assert_eq!(parse_stat(&format!("7 (sh) {zombie}")), Some((true, 4242)));
        assert_eq!(parse_stat("7 (sh) S 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_process_is_followed_to_its_end_and_a_recycled_pid_is_not_it() {
        let mut child = Command::new("sleep").arg("0.3").spawn().unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let started = start_time(pid).expect("a running child has a start time");
        assert!(is_running(pid, started));
        assert!(
            !is_running(pid, started + 1),
            "another start time is another process"
        );
        // Reaped by another thread, as init reaps an orphan: the pidfd still sees the end.
        let reaper = std::thread::spawn(move || child.wait().unwrap());
        let t0 = Instant::now();
        wait_gone(pid, started).unwrap();
        assert!(
            t0.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t0.elapsed()
        );
        reaper.join().unwrap();
        assert!(!is_running(pid, started));
        wait_gone(pid, started).unwrap();
    }

    #[test]
    fn terminate_ends_a_process_and_refuses_special_pids() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        terminate(Pid::from_raw(child.id() as i32)).unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGTERM));
        assert!(terminate(Pid::from_raw(1)).is_err());
    }
}
