//! Free space and free inodes of a file system (statvfs), for `ssm-lite diagnose`.

use super::{context, cvt};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What is left on the file system holding a path, as an unprivileged user may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsSpace {
    /// Bytes left (`f_bavail` × `f_frsize`).
    pub free_bytes: u64,
    /// Files that may still be created (`f_favail`).
    pub free_inodes: u64,
    /// Every inode of the file system; 0 where it has no fixed number of them (btrfs).
    pub total_inodes: u64,
}

/// [`FsSpace`] of the file system holding `path`.
// The field types are narrower on some 32-bit targets; u64 holds each of them.
#[allow(clippy::unnecessary_cast)]
pub fn fs_space(path: &Path) -> io::Result<FsSpace> {
    let what = || format!("statvfs {}", path.display());
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: NUL in the path", what()),
        )
    })?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is NUL-terminated and st is writable; both outlive the call.
    cvt(unsafe { libc::statvfs(c_path.as_ptr(), &mut st) }).map_err(|e| context(e, &what()))?;
    Ok(FsSpace {
        free_bytes: (st.f_bavail as u64).saturating_mul(st.f_frsize as u64),
        free_inodes: st.f_favail as u64,
        total_inodes: st.f_files as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// The same figures as coreutils' `stat -f` (free blocks, block size, free and all inodes),
    /// within what other processes may write or delete meanwhile.
    #[test]
    fn matches_stat_f() {
        let dir = std::env::temp_dir();
        let out = Command::new("stat")
            .args(["-f", "-c", "%a %S %d %c"])
            .arg(&dir)
            .output()
            .expect("run stat -f");
        let text = String::from_utf8(out.stdout).unwrap();
        let n: Vec<u64> = text
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect();
        let got = fs_space(&dir).unwrap();
        let near = |a: u64, b: u64, slack: u64| a.abs_diff(b) <= slack;
        assert!(
            near(got.free_bytes, n[0] * n[1], 64 << 20),
            "{got:?} vs {text}"
        );
        assert!(near(got.free_inodes, n[2], 1000), "{got:?} vs {text}");
        assert_eq!(got.total_inodes, n[3], "{text}");
    }

    #[test]
    fn a_missing_path_is_not_found_and_named() {
        let err = fs_space(Path::new("/nonexistent/ssm-lite")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("/nonexistent/ssm-lite"), "{err}");
    }
}
