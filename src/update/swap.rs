//! The files of an update: the new binary staged beside the running one, the swap that keeps the
//! old one as `<binary>.previous`, the way back, and `update/pending.json`, which carries the
//! update across the restarts.

use crate::state::{StateError, ensure_private_dir, err as state_err, sync_dir, write_atomic};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Most bytes of pending.json (it holds a few lines of step output).
const MAX_PENDING_BYTES: u64 = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// The new binary is in place; it has not reached the service yet.
    Swapped,
    /// The new binary reached the service: it stays, whatever restarts follow.
    Confirmed,
    /// The old binary is back in place; `reason` says why.
    RolledBack,
}

/// `<state dir>/update/pending.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub command_id: String,
    pub from: String,
    pub to: String,
    pub binary: PathBuf,
    /// Seconds since the epoch by which the new binary must reach the service.
    pub deadline: u64,
    /// The rollback timeout the deadline came from, for the texts.
    pub rollback_secs: u64,
    /// How many times the new binary started.
    pub attempts: u32,
    pub stage: Stage,
    /// The step's output before the restart, which its final result starts with.
    pub output: String,
    #[serde(default)]
    pub reason: String,
}

pub fn pending_path(state_root: &Path) -> PathBuf {
    state_root.join("update/pending.json")
}

impl Pending {
    /// The record under `state_root`; `None` when there is none or it cannot be read (logged).
    pub fn load(state_root: &Path) -> Option<Pending> {
        let path = pending_path(state_root);
        let file = File::open(&path).ok()?;
        let mut bytes = Vec::new();
        let read = std::io::Read::read_to_end(
            &mut std::io::Read::take(file, MAX_PENDING_BYTES + 1),
            &mut bytes,
        );
        let parsed = match read {
            Ok(n) if n as u64 > MAX_PENDING_BYTES => Err("it is too large".to_owned()),
            Ok(_) => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        parsed
            .map_err(|e| {
                log::error!(
                    "update: {} is unreadable ({e}); ignoring it",
                    path.display()
                )
            })
            .ok()
    }

    pub fn save(&self, state_root: &Path) -> Result<(), StateError> {
        let path = pending_path(state_root);
        ensure_private_dir(path.parent().expect("a file under a directory"))?;
        let bytes = serde_json::to_vec(self).expect("records always serialise");
        write_atomic(&path, &bytes, true)
    }

    pub fn remove(state_root: &Path) {
        let _ = crate::state::remove_file(&pending_path(state_root));
    }
}

/// `<binary>.previous`.
pub fn previous_of(binary: &Path) -> PathBuf {
    let mut name = binary.as_os_str().to_owned();
    name.push(".previous");
    PathBuf::from(name)
}

/// A file being downloaded beside `binary` (same filesystem, so the swap is one rename),
/// removed on drop unless it was swapped in.
pub struct Staged {
    pub path: PathBuf,
    pub file: File,
    swapped: bool,
}

impl Staged {
    pub fn create(binary: &Path) -> Result<Staged, StateError> {
        let mut name = binary.as_os_str().to_owned();
        name.push(".update");
        let path = PathBuf::from(name);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o700)
            .open(&path)
            .map_err(state_err("create", &path))?;
        Ok(Staged {
            path,
            file,
            swapped: false,
        })
    }

    /// Makes the staged binary executable and durable, keeps the running one as
    /// `<binary>.previous` (a hard link: the running path never disappears; a copy as fallback
    /// for filesystems without links cost 3 KB of binary, and Linux root filesystems have them)
    /// and renames the new one over `binary`.
    pub fn swap_into(mut self, binary: &Path) -> Result<(), StateError> {
        self.file
            .sync_all()
            .map_err(state_err("flush", &self.path))?;
        fs::set_permissions(&self.path, fs::Permissions::from_mode(0o755))
            .map_err(state_err("make executable", &self.path))?;
        let previous = previous_of(binary);
        let _ = fs::remove_file(&previous);
        fs::hard_link(binary, &previous).map_err(state_err("keep the old binary at", &previous))?;
        fs::rename(&self.path, binary).map_err(state_err("move the new binary to", binary))?;
        // Closed on return: a binary still open for writing cannot be executed (ETXTBSY).
        self.swapped = true;
        sync_parent(binary)
    }
}

impl Write for Staged {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.swapped {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Puts `<binary>.previous` back at `binary` (one rename over the new binary).
pub fn restore_previous(binary: &Path) -> Result<(), StateError> {
    let previous = previous_of(binary);
    fs::rename(&previous, binary).map_err(state_err("move back the old binary", &previous))?;
    sync_parent(binary)
}

fn sync_parent(binary: &Path) -> Result<(), StateError> {
    sync_dir(binary.parent().unwrap_or(Path::new("/")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testdir::TestDir;

    #[test]
    fn a_swap_keeps_the_old_binary_and_a_restore_puts_it_back() {
        let t = TestDir::new("swap");
        let binary = t.path().join("ssm-lite");
        fs::write(&binary, b"old").unwrap();
        let mut staged = Staged::create(&binary).unwrap();
        staged.write_all(b"new").unwrap();
        staged.swap_into(&binary).unwrap();
        assert_eq!(fs::read(&binary).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&binary).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(fs::read(previous_of(&binary)).unwrap(), b"old");
        assert!(!t.path().join("ssm-lite.update").exists());
        restore_previous(&binary).unwrap();
        assert_eq!(fs::read(&binary).unwrap(), b"old");
        assert!(!previous_of(&binary).exists());
    }

    #[test]
    fn a_staged_file_not_swapped_is_removed() {
        let t = TestDir::new("swap");
        let binary = t.path().join("ssm-lite");
        fs::write(&binary, b"old").unwrap();
        let mut staged = Staged::create(&binary).unwrap();
        staged.write_all(b"half").unwrap();
        drop(staged);
        assert!(!t.path().join("ssm-lite.update").exists());
        assert_eq!(fs::read(&binary).unwrap(), b"old");
    }

    #[test]
    fn pending_round_trips_and_bad_files_are_ignored() {
        let t = TestDir::new("pending");
        assert!(Pending::load(t.path()).is_none());
        let p = Pending {
            command_id: "c1".into(),
            from: "0.1.0".into(),
            to: "0.1.1".into(),
            binary: "/usr/bin/ssm-lite".into(),
            deadline: 10,
            rollback_secs: 5,
            attempts: 0,
            stage: Stage::Swapped,
            output: "Updating".into(),
            reason: String::new(),
        };
        p.save(t.path()).unwrap();
        assert_eq!(Pending::load(t.path()), Some(p));
        fs::write(pending_path(t.path()), b"{").unwrap();
        assert!(Pending::load(t.path()).is_none());
        Pending::remove(t.path());
        assert!(!pending_path(t.path()).exists());
    }
}
