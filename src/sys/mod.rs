//! Every `unsafe` block and libc call of ssm-lite, behind small typed, safe functions.

pub mod child;
pub mod exec;
pub mod net;
pub mod oom;
pub mod poll;
pub mod process;
pub mod pty;
pub mod statvfs;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A libc return type whose failure value is -1 (errno then says why).
pub(crate) trait SysRc: Copy + PartialEq {
    const FAILED: Self;
}

impl SysRc for i32 {
    const FAILED: Self = -1;
}

impl SysRc for i64 {
    const FAILED: Self = -1;
}

/// The one check of a libc call's result: -1 becomes the errno it set, anything else is returned.
/// Allocates nothing, so it is async-signal-safe (pre-exec closures use it).
pub(crate) fn cvt<T: SysRc>(rc: T) -> io::Result<T> {
    if rc == T::FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `err` with `what` failed in front of it, its kind kept for callers that match on it.
pub(crate) fn context(err: io::Error, what: &str) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// A process (or process-group) id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pid(i32);

impl Pid {
    pub fn from_raw(raw: i32) -> Pid {
        Pid(raw)
    }
    pub fn as_raw(self) -> i32 {
        self.0
    }
}

/// Signals the agent sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Kill,
    Int,
    Quit,
}

impl Signal {
    fn raw(self) -> libc::c_int {
        match self {
            Signal::Kill => libc::SIGKILL,
            Signal::Int => libc::SIGINT,
            Signal::Quit => libc::SIGQUIT,
        }
    }
}

/// Sends `signal` to every process in the group `group`.
///
/// Errors: a group that no longer exists (ESRCH) gives an error of kind `NotFound`; test for it
/// with [`is_gone`]. Ids 0 and 1 and negative ids are refused with `InvalidInput` before any signal
/// is sent, because `kill` would read them as "my own group", "every process" or a single pid.
pub fn kill_group(group: Pid, signal: Signal) -> io::Result<()> {
    if group.0 <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "refusing to send {signal:?} to process group {}: not a job's group id",
                group.0
            ),
        ));
    }
    signal_group(group, signal.raw()).map_err(|e| {
        let kind = if e.raw_os_error() == Some(libc::ESRCH) {
            io::ErrorKind::NotFound
        } else {
            e.kind()
        };
        io::Error::new(
            kind,
            format!("cannot send {signal:?} to process group {}: {e}", group.0),
        )
    })
}

/// True when `err` (from [`kill_group`]) means the group had already disappeared.
pub fn is_gone(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound
}

/// True while any process of the group still exists; a killed member that its parent has not
/// reaped yet (a zombie) still counts. Ids ≤ 1 never name a job's group and give false. Tests
/// use it to see that a stopped job left nothing behind.
#[cfg(test)]
pub fn group_exists(group: Pid) -> bool {
    if group.0 <= 1 {
        return false;
    }
    match signal_group(group, 0) {
        Ok(()) => true,
        // EPERM: the group exists but belongs to someone we may not signal.
        Err(e) => e.raw_os_error() == Some(libc::EPERM),
    }
}

/// `kill(-group, sig)`; callers have checked that `group` > 1.
fn signal_group(group: Pid, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes plain integers and touches no memory of ours.
    cvt(unsafe { libc::kill(-group.0, sig) })?;
    Ok(())
}

/// Blocks until the child process `pid` has terminated, but leaves it unreaped (a zombie), so that
/// its pid and process-group id cannot be reused until the owner reaps it (e.g. std's
/// `Child::wait`). Meant for a helper thread while the `Child` stays with its owner.
pub fn wait_for_exit(pid: Pid) -> io::Result<()> {
    let id = libc::id_t::try_from(pid.0).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid child pid {}", pid.0),
        )
    })?;
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t that outlives the call.
        let rc = unsafe { libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT) };
        match cvt(rc) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(context(e, &format!("cannot wait for child {}", pid.0))),
        }
    }
}

/// The kernel's host name.
pub fn hostname() -> io::Result<String> {
    // Linux caps host names at 64 bytes; the spare room keeps a terminating NUL in any case.
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for the length passed; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    cvt(rc).map_err(|e| context(e, "gethostname failed"))?;
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..len].to_vec()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("host name is not UTF-8: {e}"),
        )
    })
}

/// Addresses of the host's network interfaces that are up (loopback included; callers filter).
pub fn interface_addresses() -> io::Result<Vec<IpAddr>> {
    let list = IfAddrs::new()?;
    let mut out = Vec::new();
    let mut cur = list.0;
    while !cur.is_null() {
        // SAFETY: `cur` is a non-null node of the list getifaddrs built; it lives until `list` drops.
        let ifa = unsafe { &*cur };
        if ifa.ifa_flags & libc::IFF_UP as libc::c_uint != 0 {
            // SAFETY: ifa_addr is null or points to a sockaddr of the family it names, owned by the list.
            if let Some(addr) = unsafe { sockaddr_ip(ifa.ifa_addr) } {
                out.push(addr);
            }
        }
        cur = ifa.ifa_next;
    }
    Ok(out)
}

/// The list from getifaddrs, freed on drop (so on every path out of `interface_addresses`).
struct IfAddrs(*mut libc::ifaddrs);

impl IfAddrs {
    fn new() -> io::Result<IfAddrs> {
        let mut head = std::ptr::null_mut();
        // SAFETY: head is a valid out-pointer; on success it owns a list we free in Drop.
        cvt(unsafe { libc::getifaddrs(&mut head) }).map_err(|e| context(e, "getifaddrs failed"))?;
        Ok(IfAddrs(head))
    }
}

impl Drop for IfAddrs {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from a successful getifaddrs and is freed exactly once.
            unsafe { libc::freeifaddrs(self.0) };
        }
    }
}

/// The IP address in `sa`, if it is an IPv4 or IPv6 socket address.
///
/// # Safety
/// `sa` must be null or point to a valid socket address whose storage matches its `sa_family`.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees a valid sockaddr; sa_family is its common first field.
    match libc::c_int::from(unsafe { (*sa).sa_family }) {
        libc::AF_INET => {
            // SAFETY: family AF_INET means the storage is a sockaddr_in.
            let sin = unsafe { &*sa.cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: family AF_INET6 means the storage is a sockaddr_in6.
            let sin6 = unsafe { &*sa.cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Child, Command};

    /// Two `sleep 60` children of ours in one process group: the leader and a member.
    fn sleeping_group() -> (Child, Child, Pid) {
        // Through the agent's spawn step: a signal ignored by whoever started the tests would
        // stay ignored in a plain child.
        let sleep = |group: i32| {
            child::command("sleep")
                .arg("60")
                .process_group(group)
                .spawn()
        };
        let leader = sleep(0).expect("spawn sleep");
        let group = Pid::from_raw(leader.id() as i32);
        let member = sleep(group.as_raw()).expect("spawn sleep into the group");
        (leader, member, group)
    }

    #[test]
    fn group_exists_while_any_member_is_left() {
        let (mut leader, mut member, group) = sleeping_group();
        assert!(group_exists(group));
        leader.kill().unwrap();
        leader.wait().unwrap();
        assert!(group_exists(group), "the member still holds the group");
        member.kill().unwrap();
        member.wait().unwrap();
        assert!(!group_exists(group));
    }

    #[test]
    fn kill_group_signals_every_member_and_reports_a_vanished_group() {
        for (signal, raw) in [(Signal::Kill, 9), (Signal::Int, 2)] {
            let (mut leader, mut member, group) = sleeping_group();
            kill_group(group, signal).unwrap();
            assert_eq!(member.wait().unwrap().signal(), Some(raw));
            assert_eq!(leader.wait().unwrap().signal(), Some(raw));
            assert!(!group_exists(group));
            let err = kill_group(group, Signal::Kill).unwrap_err();
            assert!(is_gone(&err), "{err}");
            assert!(
                err.to_string().contains(&group.as_raw().to_string()),
                "{err}"
            );
        }
    }

    #[test]
    fn kill_group_refuses_ids_that_mean_more_than_one_group() {
        for raw in [-5, -1, 0, 1] {
            let err = kill_group(Pid::from_raw(raw), Signal::Kill).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{raw}: {err}");
            assert!(!is_gone(&err));
            assert!(!group_exists(Pid::from_raw(raw)));
        }
    }

    #[test]
    fn wait_for_exit_leaves_the_status_to_the_owner() {
        let mut child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        wait_for_exit(pid).unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw())).unwrap();
        assert!(
            stat.contains(") Z "),
            "child should still be an unreaped zombie: {stat}"
        );
        assert_eq!(child.try_wait().unwrap().and_then(|s| s.code()), Some(3));
        assert!(
            wait_for_exit(pid).is_err(),
            "a reaped child cannot be waited for"
        );
    }

    #[test]
    fn hostname_matches_the_kernel() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(hostname().unwrap(), kernel.trim_end());
    }

    #[test]
    fn interface_addresses_include_loopback() {
        let addrs = interface_addresses().unwrap();
        assert!(
            addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
    }
}
