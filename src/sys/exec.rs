//! The process image: replacing it with a new binary (an update keeps its PID, so systemd and
//! init scripts see no exit) and reading bytes of it as the file on disk holds them.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// Replaces this process with `binary`, given this process's own arguments (its `argv[0]` too)
/// and environment. Returns only when `execve` failed, with why.
pub fn exec_self(binary: &Path) -> io::Error {
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| binary.as_os_str().to_owned());
    // std's exec resets the signal mask and SIGPIPE before execve; every descriptor std opens
    // is close-on-exec, so the new image starts with stdio only.
    let err = Command::new(binary).arg0(arg0).args(args).exec();
    super::context(err, &format!("cannot execute {}", binary.display()))
}

/// A copy of `bytes` read from memory at run time: the compiler may not fold it into the value it
/// saw, so a copy of the binary whose bytes were patched (the version stamp) reads the patch.
pub fn read_image<const N: usize>(bytes: &'static [u8; N]) -> [u8; N] {
    // SAFETY: a reference is valid, aligned and initialised for a read of its type.
    unsafe { std::ptr::read_volatile(bytes) }
}

#[cfg(test)]
mod tests {
    use super::*;

    static BYTES: [u8; 4] = *b"abcd";

    #[test]
    fn read_image_reads_the_static() {
        assert_eq!(&read_image(&BYTES), b"abcd");
    }

    #[test]
    fn a_missing_binary_is_an_error_naming_it() {
        let err = exec_self(Path::new("/nonexistent/ssm-lite"));
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("/nonexistent/ssm-lite"), "{err}");
    }
}
