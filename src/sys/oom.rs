//! The kernel OOM killer's view of the agent's children.
//!
//! The packaged systemd unit shields the agent (`OOMScoreAdjust=-900`): it is the login path of
//! last resort, so under memory pressure the kernel should pick something else. Children inherit
//! the adjustment, and a runaway script must not be shielded too, so every child the agent starts
//! goes back to the default, 0, whatever the agent's own score is: that score is about the agent,
//! not about the work it runs.

use std::ffi::CStr;
use std::os::unix::process::CommandExt;
use std::process::Command;

const SCORE_ADJ: &CStr = c"/proc/self/oom_score_adj";

/// The calling process's `oom_score_adj`; `None` where /proc does not say.
pub fn own_score_adj() -> Option<i32> {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Makes `cmd`'s child start with `oom_score_adj` 0 when the agent's own is not 0. Add it before
/// any pre-exec step that drops privileges: the write needs the agent's own user.
pub fn unshield_child(cmd: &mut Command) {
    if own_score_adj().is_some_and(|adj| adj != 0) {
        // SAFETY: the closure runs in the forked child before exec; `reset_in_child` makes only
        // async-signal-safe system calls on static data, allocates nothing and takes no locks.
        unsafe { cmd.pre_exec(reset_in_child) };
    }
}

/// Writes 0 to the child's own `oom_score_adj`. Failure is not fatal: the script would run
/// shielded, as it would under amazon-ssm-agent; the child has no way to report it anyway.
fn reset_in_child() -> std::io::Result<()> {
    // SAFETY: SCORE_ADJ is a NUL-terminated static string; open returns a new fd or -1.
    let fd = unsafe { libc::open(SCORE_ADJ.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if let Ok(fd) = super::cvt(fd) {
        // SAFETY: writes one byte from a static buffer to the fd opened above.
        unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        // SAFETY: closes the fd opened above, which nothing else holds.
        unsafe { libc::close(fd) };
    }
    Ok(())
}
