//! Every `unsafe` block and libc call of ssm-lite, behind small typed, safe functions.
//! STUB: interface fixed; implementation in progress.

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
    Term,
    Int,
}

/// Sends `signal` to every process in the group `group`.
pub fn kill_group(group: Pid, signal: Signal) -> std::io::Result<()> {
    let _ = (group, signal);
    todo!("sys::kill_group")
}

/// True while any process of the group still exists.
pub fn group_exists(group: Pid) -> bool {
    let _ = group;
    todo!("sys::group_exists")
}

/// The kernel's host name.
pub fn hostname() -> std::io::Result<String> {
    todo!("sys::hostname")
}

/// Addresses of the host's network interfaces that are up (loopback included; callers filter).
pub fn interface_addresses() -> std::io::Result<Vec<std::net::IpAddr>> {
    todo!("sys::interface_addresses")
}
