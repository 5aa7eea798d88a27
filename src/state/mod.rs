//! Everything ssm-lite writes to disk, so that a crash or a power cut never leaves half a file and
//! never loses a command or a reply.
//!
//! Layout under the state dir (default `/var/lib/ssm-lite`), files 0600 and dirs 0700:
//! ```text
//! <instance-id>/commands/<CommandId>.json        one record per command (queue, progress, dedupe,
//!                                                its final reply until the service takes it)
//! <instance-id>/replies/<seq>_<ReplyId>.json     replies not yet accepted by the service, in order
//! <instance-id>/replies_mgs/<seq>_<MessageId>.json  the same for replies sent over MGS
//! <instance-id>/document/orchestration/<CommandId>/…   scripts and capped stdout/stderr
//! ```
//! Every file is replaced atomically: written to a temporary file in the same directory, flushed,
//! renamed over the old one, and the directory flushed, so a reader sees the old or the new bytes.

pub mod spool;

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

pub use spool::{ReplySpool, SpooledReply};

/// A state-dir failure, naming the path.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot {what} {}: {error} (check that the state dir is writable by the agent and the disk is not full)",
    path.display()
)]
pub struct StateError {
    pub path: PathBuf,
    pub what: &'static str,
    pub error: io::Error,
}

pub(crate) fn err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |error| StateError {
        path: path.to_owned(),
        what,
        error,
    }
}

/// Creates `dir` and its missing parents with mode 0700, and tightens an existing `dir` to 0700.
pub fn ensure_private_dir(dir: &Path) -> Result<(), StateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err("create directory", dir))?;
    let mode = fs::metadata(dir)
        .map_err(err("inspect", dir))?
        .permissions()
        .mode()
        & 0o777;
    if mode != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(err("chmod", dir))?;
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically (mode 0600). With `durable`, the data and the rename
/// are flushed to the device before returning, so the write survives a power cut.
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = write_new(&tmp, bytes, durable)
        .and_then(|()| fs::rename(&tmp, path).map_err(err("rename into place", path)));
    if written.is_err() {
        // A full disk leaves a partial temporary file: give its blocks back.
        let _ = fs::remove_file(&tmp);
    }
    written?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Creates (or truncates) `tmp` with `bytes`, flushed to the device with `durable`.
fn write_new(tmp: &Path, bytes: &[u8], durable: bool) -> Result<(), StateError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)
        .map_err(err("create", tmp))?;
    f.write_all(bytes).map_err(err("write", tmp))?;
    if durable {
        f.sync_all().map_err(err("flush", tmp))?;
    }
    Ok(())
}

/// Flushes a directory's entries (a rename or unlink in it) to the device.
pub fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err("flush directory", dir))
}

/// Removes a file; a file that is already gone is not an error.
pub fn remove_file(path: &Path) -> Result<(), StateError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(err("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Bytes in the files under `path` (or of `path` itself), symlinks not followed; what cannot be
/// read counts as empty.
pub fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| disk_usage(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

/// Ids that arrive from the network (command ids, step names) become path components only
/// through this: `None` for anything that could escape its directory or is unreasonably long.
pub fn safe_file_name(id: &str) -> Option<&str> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then_some(id)
}

/// A step or plugin name as a directory name: upstream drops ':' (`aws:runShellScript` →
/// `awsrunShellScript`); anything else outside `[A-Za-z0-9._-]` becomes `_`, and names that would
/// be special (`.`, `..`, empty) are prefixed so they stay inside their parent.
pub fn step_dir_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|&c| c != ':')
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    if cleaned.is_empty() || cleaned.starts_with('.') {
        format!("_{cleaned}")
    } else {
        cleaned
    }
}

/// Upstream's `Agent.OrchestrationRootDir` default.
const DEFAULT_ORCHESTRATION: &str = "orchestration";

/// The agent's directories for one instance id.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    /// `Agent.OrchestrationRootDir`: the directory under `document/` that holds each command's
    /// scripts and output (upstream's default `orchestration`).
    orchestration: PathBuf,
}

impl StateDir {
    /// Opens (creating when needed) `<state dir>/<instance id>/…`.
    pub fn open(state_dir: &Path, instance_id: &str) -> Result<StateDir, StateError> {
        let id = safe_file_name(instance_id).ok_or_else(|| StateError {
            path: state_dir.join(instance_id),
            what: "use instance id as a directory name",
            error: io::Error::new(io::ErrorKind::InvalidInput, "unsafe characters in the id"),
        })?;
        ensure_private_dir(state_dir)?;
        let s = StateDir {
            root: state_dir.join(id),
            orchestration: PathBuf::from(DEFAULT_ORCHESTRATION),
        };
        for dir in [
            s.commands_dir(),
            s.replies_dir(),
            s.mgs_replies_dir(),
            s.orchestration_root(),
        ] {
            ensure_private_dir(&dir)?;
        }
        Ok(s)
    }

    /// The same directories with `name` (`Agent.OrchestrationRootDir`) as the orchestration
    /// directory: a relative path, joined under `document/` as upstream joins it.
    pub fn with_orchestration_root(mut self, name: &str) -> Result<StateDir, StateError> {
        let path = Path::new(name.trim_start_matches('/'));
        let plain = path.components().all(|c| matches!(c, Component::Normal(_)));
        if name.is_empty() || !plain {
            return Err(StateError {
                path: self.root.join("document").join(name),
                what: "use Agent.OrchestrationRootDir as the orchestration directory",
                error: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "it must be a directory name (or names joined by '/') without '.' or '..'",
                ),
            });
        }
        self.orchestration = path.to_owned();
        ensure_private_dir(&self.orchestration_root())?;
        Ok(self)
    }

    /// `<state dir>/<instance id>`: where aws:configurePackage keeps its `packages/`.
    pub fn instance_dir(&self) -> &Path {
        &self.root
    }

    pub fn commands_dir(&self) -> PathBuf {
        self.root.join("commands")
    }

    pub fn replies_dir(&self) -> PathBuf {
        self.root.join("replies")
    }

    /// Run Command replies made for the MGS control channel, until the service acknowledges them.
    pub fn mgs_replies_dir(&self) -> PathBuf {
        self.root.join("replies_mgs")
    }

    /// The association scheduler's record of runs and compliance.
    pub fn associations_dir(&self) -> PathBuf {
        self.root.join("associations")
    }

    /// What the inventory plugin keeps: the content hashes the service last took.
    pub fn inventory_dir(&self) -> PathBuf {
        self.root.join("inventory")
    }

    pub fn orchestration_root(&self) -> PathBuf {
        self.root.join("document").join(&self.orchestration)
    }

    /// Upstream's session orchestration directory: one directory per session (its transcript).
    pub fn session_orchestration_root(&self) -> PathBuf {
        self.root.join("session").join(&self.orchestration)
    }

    pub fn command_record(&self, command_id: &str) -> PathBuf {
        self.commands_dir().join(format!("{command_id}.json"))
    }

    pub fn orchestration_dir(&self, command_id: &str) -> PathBuf {
        self.orchestration_root().join(command_id)
    }
}

#[cfg(test)]
pub(crate) mod testdir {
    use std::path::{Path, PathBuf};

    /// A unique temporary directory removed on drop.
    pub struct TestDir(pub PathBuf);

    impl TestDir {
        pub fn new(tag: &str) -> TestDir {
            let p =
                std::env::temp_dir().join(format!("ssm-lite-{tag}-{}", crate::random::uuid_v4()));
            std::fs::create_dir_all(&p).unwrap();
            TestDir(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testdir::TestDir;
    use super::*;

    #[test]
    fn atomic_write_replaces_content_with_private_mode() {
        let t = TestDir::new("state");
        let p = t.path().join("a.json");
        write_atomic(&p, b"one", true).unwrap();
        write_atomic(&p, b"two", false).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let leftovers: Vec<_> = fs::read_dir(t.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file may be left behind");
    }

    #[test]
    fn the_orchestration_root_is_a_relative_name_under_document() {
        let t = TestDir::new("orch");
        let s = StateDir::open(&t.path().join("st"), "i-1").unwrap();
        let s = s.with_orchestration_root("runs/cmd").unwrap();
        let want = t.path().join("st/i-1/document/runs/cmd/C1");
        assert_eq!(s.orchestration_dir("C1"), want);
        let mode = fs::metadata(s.orchestration_root())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        for bad in ["", "..", "a/../../b", "./x"] {
            let e = s.clone().with_orchestration_root(bad).unwrap_err();
            assert!(e.to_string().contains("OrchestrationRootDir"), "{bad}: {e}");
        }
    }

    #[test]
    fn state_dir_layout_is_private() {
        let t = TestDir::new("state");
        let s = StateDir::open(&t.path().join("st"), "i-0123456789abcdef0").unwrap();
        for d in [
            s.commands_dir(),
            s.replies_dir(),
            s.orchestration_root(),
            t.path().join("st"),
        ] {
            assert_eq!(
                fs::metadata(&d).unwrap().permissions().mode() & 0o777,
                0o700,
                "{d:?}"
            );
        }
        assert!(StateDir::open(t.path(), "../etc").is_err());
    }

    #[test]
    fn network_ids_cannot_escape() {
        assert_eq!(
            safe_file_name("2b196342-d7d4-436e-8f09-3883a1116ac3"),
            Some("2b196342-d7d4-436e-8f09-3883a1116ac3")
        );
        for bad in ["", "..", "../x", "a/b", ".hidden", "a b"] {
            assert_eq!(safe_file_name(bad), None, "{bad}");
        }
        assert_eq!(step_dir_name("aws:runShellScript"), "awsrunShellScript");
        assert_eq!(step_dir_name("0.aws:runShellScript"), "0.awsrunShellScript");
        assert_eq!(step_dir_name("../../etc"), "_.._.._etc");
        assert_eq!(step_dir_name(".."), "_..");
        assert_eq!(step_dir_name(""), "_");
    }
}
