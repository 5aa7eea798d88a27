//! Packages on this host, kept under the state dir as upstream's `localpackages` keeps them
//! under its data dir: `packages/<name>/installstate` (JSON: name, version, state as a number,
//! time, last installed version, retry count), `packages/<name>/<version>/` (the unpacked
//! archive) and `manifests/<name>_<version>.json` (the manifest last seen). Names and versions
//! that are not plain directory names are normalized as upstream's `normalizeDirectory` does.

use crate::state::{ensure_private_dir, write_atomic};
use serde_json::{Value, json};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Upstream `localpackages.InstallState`, in its order (the file stores the number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    None,
    Unknown,
    Failed,
    Uninstalling,
    Uninstalled,
    New,
    Upgrading,
    Installing,
    Installed,
    RollbackUninstall,
    RollbackInstall,
    Updating,
}

const STATES: [State; 12] = [
    State::None,
    State::Unknown,
    State::Failed,
    State::Uninstalling,
    State::Uninstalled,
    State::New,
    State::Upgrading,
    State::Installing,
    State::Installed,
    State::RollbackUninstall,
    State::RollbackInstall,
    State::Updating,
];

impl State {
    fn number(self) -> u32 {
        STATES.iter().position(|s| *s == self).unwrap_or(0) as u32
    }
}

/// Upstream `PackageInstallState`, as its JSON file holds it.
#[derive(Debug, Clone, Default)]
struct InstallStateFile {
    name: String,
    version: String,
    state: u32,
    time: String,
    last_installed_version: String,
    retry_count: u32,
}

impl InstallStateFile {
    /// The file's JSON; a field of another type reads as empty, as nothing else reads it.
    fn parse(text: &str) -> Result<InstallStateFile, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if !v.is_object() {
            return Err("not a JSON object".into());
        }
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let number = |k: &str| {
            v[k].as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0)
        };
        Ok(InstallStateFile {
            name: text("name"),
            version: text("version"),
            state: number("state"),
            time: text("time"),
            last_installed_version: text("lastinstalledversion"),
            retry_count: number("retrycount"),
        })
    }

    fn to_json(&self) -> Vec<u8> {
        json!({
            "name": self.name,
            "version": self.version,
            "state": self.state,
            "time": self.time,
            "lastinstalledversion": self.last_installed_version,
            "retrycount": self.retry_count,
        })
        .to_string()
        .into_bytes()
    }
}

/// The most bytes of an installstate or cached manifest file read back.
const MAX_RECORD_BYTES: u64 = 1 << 20;

pub struct Repository {
    packages: PathBuf,
    manifests: PathBuf,
}

impl Repository {
    /// The repository under `state_dir` (the agent's per-instance state directory).
    pub fn new(state_dir: &Path) -> Repository {
        Repository {
            packages: state_dir.join("packages"),
            manifests: state_dir.join("manifests"),
        }
    }

    fn package_root(&self, name: &str) -> PathBuf {
        self.packages.join(normalize(name))
    }

    pub fn version_dir(&self, name: &str, version: &str) -> PathBuf {
        self.package_root(name).join(normalize(version))
    }

    fn state_path(&self, name: &str) -> PathBuf {
        self.package_root(name).join("installstate")
    }

    /// Upstream `loadInstallState`: no file but version directories is `Unknown` at the last one.
    fn load(&self, name: &str) -> InstallStateFile {
        let path = self.state_path(name);
        let unknown = |version: String| InstallStateFile {
            name: name.to_owned(),
            version,
            state: State::Unknown.number(),
            ..InstallStateFile::default()
        };
        match read_bounded(&path) {
            Some(text) => InstallStateFile::parse(&text).unwrap_or_else(|e| {
                log::warn!("InstallState file for package {name} is invalid: {e}");
                unknown(String::new())
            }),
            None => match self.version_dirs(name).pop() {
                Some(last) => unknown(last),
                None => InstallStateFile {
                    name: name.to_owned(),
                    ..InstallStateFile::default()
                },
            },
        }
    }

    fn version_dirs(&self, name: &str) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.package_root(name)) else {
            return Vec::new();
        };
        let mut dirs: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .take(10_000)
            .collect();
        dirs.sort();
        dirs
    }

    /// Upstream `GetInstallState`.
    pub fn install_state(&self, name: &str) -> (State, String) {
        let s = self.load(name);
        let state = STATES
            .get(s.state as usize)
            .copied()
            .unwrap_or(State::Unknown);
        (state, s.version)
    }

    /// Upstream `GetInstalledVersion`.
    pub fn installed_version(&self, name: &str) -> String {
        let s = self.load(name);
        let unknown = State::Unknown.number();
        if s.state == State::Installed.number()
            || (s.state == unknown && s.last_installed_version.is_empty())
        {
            s.version
        } else {
            s.last_installed_version
        }
    }

    /// Upstream `SetInstallState`: `New` only over `None`; the retry count grows while the state
    /// stays; `Installed` and `Uninstalled` move the last installed version.
    pub fn set_state(&self, name: &str, version: &str, state: State) -> Result<(), String> {
        let mut s = self.load(name);
        let number = state.number();
        if state == State::New && s.state != State::None.number() {
            return Ok(());
        }
        s.name = name.to_owned();
        s.version = version.to_owned();
        s.time = crate::timefmt::iso8601_ms(SystemTime::now());
        s.retry_count = if s.state == number {
            s.retry_count + 1
        } else {
            0
        };
        s.state = number;
        match state {
            State::Installed => s.last_installed_version = version.to_owned(),
            State::Uninstalled => s.last_installed_version.clear(),
            _ => {}
        }
        let root = self.package_root(name);
        let text = s.to_json();
        ensure_private_dir(&root)
            .and_then(|()| write_atomic(&self.state_path(name), &text, true))
            .map_err(|e| e.to_string())
    }

    /// Upstream `ValidatePackage`: more than one file or any directory, and an `install.sh`.
    pub fn validate(&self, name: &str, version: &str) -> Result<(), String> {
        let dir = self.version_dir(name, version);
        let entries: Vec<_> = fs::read_dir(&dir)
            .map(|d| d.flatten().take(3).collect())
            .unwrap_or_default();
        let has_dir = entries
            .iter()
            .any(|e| e.file_type().is_ok_and(|t| t.is_dir()));
        if entries.len() < 2 && !has_dir {
            return Err("Package is incomplete".into());
        }
        if !dir.join("install.sh").is_file() {
            return Err("Package is not supported (package is missing install action)".into());
        }
        Ok(())
    }

    /// Upstream `AddPackage`: a fresh version directory filled by `fill`; removed again when
    /// `fill` fails. The state becomes `New` when there was none.
    pub fn add(
        &self,
        name: &str,
        version: &str,
        fill: impl FnOnce(&Path) -> Result<(), String>,
    ) -> Result<(), String> {
        let dir = self.version_dir(name, version);
        let _ = fs::remove_dir_all(&dir);
        ensure_private_dir(&dir).map_err(|e| e.to_string())?;
        if let Err(e) = fill(&dir) {
            if let Err(cleanup) = fs::remove_dir_all(&dir) {
                log::warn!(
                    "cleaning up package version path: {}: {cleanup}",
                    dir.display()
                );
            }
            return Err(e);
        }
        self.set_state(name, version, State::New)
    }

    /// Upstream `RemovePackage`.
    pub fn remove(&self, name: &str, version: &str) -> Result<(), String> {
        let dir = self.version_dir(name, version);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("cannot remove {}: {e}", dir.display()))
            }
            _ => Ok(()),
        }
    }

    fn manifest_path(&self, name: &str, version: &str) -> PathBuf {
        self.manifests
            .join(format!("{}_{}.json", normalize(name), normalize(version)))
    }

    pub fn read_manifest(&self, name: &str, version: &str) -> Option<String> {
        read_bounded(&self.manifest_path(name, version))
    }

    pub fn write_manifest(&self, name: &str, version: &str, text: &str) -> Result<(), String> {
        ensure_private_dir(&self.manifests)
            .and_then(|()| write_atomic(&self.manifest_path(name, version), text.as_bytes(), false))
            .map_err(|e| format!("failed to write manifest to file: {e}"))
    }
}

fn read_bounded(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    fs::File::open(path)
        .ok()?
        .take(MAX_RECORD_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// Upstream `normalizeDirectory`: names of letters, digits, spaces, `_+=()[]{}-` and single
/// dots, starting with a letter or digit, at most 255 bytes, stay as they are; any other (an
/// ARN, `..`) becomes `_<safe chars>_<length in hex>_<base32 of its SHA-256>`, lower-cased first.
pub fn normalize(name: &str) -> String {
    if name.len() <= 255 && is_plain(name) && !name.ends_with(' ') {
        return name.to_owned();
    }
    let lower = name.to_lowercase();
    let digest = ring::digest::digest(&ring::digest::SHA256, lower.as_bytes());
    let suffix = format!("_{:X}_{}", lower.len(), base32(digest.as_ref()));
    let mut normal: String = lower
        .replace('.', "-")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    if normal.len() > 255 - suffix.len() {
        normal.truncate(255 - suffix.len() - 1);
    }
    format!("_{normal}{suffix}")
}

fn is_plain(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || " _+=()[]{}-".contains(c);
    let mut segments = name.split('.');
    let first = segments.next().unwrap_or_default();
    first.starts_with(|c: char| c.is_ascii_alphanumeric())
        && first.chars().all(allowed)
        && segments.all(|s| !s.is_empty() && s.chars().all(allowed))
}

/// RFC 4648 base32 with padding (Go's `base32.StdEncoding`).
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    for chunk in bytes.chunks(5) {
        let mut block = [0u8; 5];
        block[..chunk.len()].copy_from_slice(chunk);
        let bits = block.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
        let chars = (chunk.len() * 8).div_ceil(5);
        for i in 0..8 {
            if i < chars {
                out.push(ALPHABET[(bits >> (35 - i * 5) & 31) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testdir::TestDir;

    #[test]
    fn plain_names_stay_and_others_are_hashed_into_one_safe_directory() {
        assert_eq!(normalize("AmazonCloudWatchAgent"), "AmazonCloudWatchAgent");
        assert_eq!(normalize("1.247.0b"), "1.247.0b");
        let arn = normalize("arn:aws:ssm:us-east-1:123456789012:document/My.Pkg");
        assert!(
            arn.starts_with("_arnawsssmus-east-1123456789012documentmy-pkg_32_"),
            "{arn}"
        );
        for evil in ["..", "../x", "a/b", ".hidden"] {
            let n = normalize(evil);
            assert!(
                n.starts_with('_') && !n.contains('/') && !n.contains(".."),
                "{n}"
            );
        }
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI======");
    }

    #[test]
    fn install_state_round_trips_as_upstreams_file() {
        let t = TestDir::new("pkgrepo");
        let repo = Repository::new(t.path());
        assert_eq!(repo.install_state("Pkg"), (State::None, String::new()));
        repo.set_state("Pkg", "1.0", State::Installing).unwrap();
        repo.set_state("Pkg", "1.0", State::Installed).unwrap();
        assert_eq!(repo.install_state("Pkg"), (State::Installed, "1.0".into()));
        assert_eq!(repo.installed_version("Pkg"), "1.0");
        let file: serde_json::Value =
            serde_json::from_slice(&fs::read(t.path().join("packages/Pkg/installstate")).unwrap())
                .unwrap();
        assert_eq!(file["state"], 8);
        assert_eq!(file["lastinstalledversion"], "1.0");
        repo.set_state("Pkg", "2.0", State::Upgrading).unwrap();
        assert_eq!(repo.installed_version("Pkg"), "1.0");
        repo.set_state("Pkg", "1.0", State::None).unwrap();
        repo.set_state("Pkg", "1.0", State::New).unwrap();
        assert_eq!(repo.install_state("Pkg").0, State::New);
    }

    #[test]
    fn a_version_directory_without_a_state_file_is_unknown() {
        let t = TestDir::new("pkgrepo");
        let repo = Repository::new(t.path());
        fs::create_dir_all(repo.version_dir("Pkg", "2.0")).unwrap();
        fs::create_dir_all(repo.version_dir("Pkg", "1.0")).unwrap();
        assert_eq!(repo.install_state("Pkg"), (State::Unknown, "2.0".into()));
        assert_eq!(repo.installed_version("Pkg"), "2.0");
    }

    #[test]
    fn a_failed_fill_leaves_no_version_directory() {
        let t = TestDir::new("pkgrepo");
        let repo = Repository::new(t.path());
        let err = repo.add("Pkg", "1.0", |dir| {
            fs::write(dir.join("install.sh"), "x").unwrap();
            Err("bad hash".into())
        });
        assert_eq!(err.unwrap_err(), "bad hash");
        assert!(!repo.version_dir("Pkg", "1.0").exists());
        assert!(repo.validate("Pkg", "1.0").is_err());
        repo.add("Pkg", "1.0", |dir| {
            fs::write(dir.join("install.sh"), "x").unwrap();
            fs::write(dir.join("uninstall.sh"), "x").map_err(|e| e.to_string())
        })
        .unwrap();
        assert_eq!(repo.validate("Pkg", "1.0"), Ok(()));
        // As upstream: with the directory there and no state file the state reads `Unknown`,
        // which `New` does not overwrite.
        assert_eq!(repo.install_state("Pkg"), (State::Unknown, "1.0".into()));
    }
}
