//! Inventory gatherers: what `aws:softwareInventory` reports, type by type, as amazon-ssm-agent's
//! `agent/plugins/inventory/gatherers` does (attribute names and omitempty rules of its
//! `model.go`), but reading package databases and /proc directly instead of running tools.
//! docs/protocol.md §8.3 lists where ssm-lite reads each type.

mod application;
mod component;
mod custom;
mod files;
mod instance;
mod network;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One entry of an inventory type's content: attribute name → value.
pub type Entry = BTreeMap<String, String>;

/// One inventory type, as gathered (capture time and hash are added by the uploader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub type_name: String,
    pub schema_version: String,
    pub content: Vec<Entry>,
}

/// Where the gatherers read the system: `/` on a host, a directory tree in tests.
pub struct Host<'a> {
    pub root: &'a Path,
    /// The agent version `AWS:AWSComponent` and the agent's own entries report.
    pub agent_version: &'a str,
}

/// Why a gatherer could not produce its type; Display says what and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatherError(pub String);

impl std::fmt::Display for GatherError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `AWS:Application` 1.1: dpkg, rpm, apk and opkg packages.
pub fn applications(host: &Host<'_>) -> Result<Item, GatherError> {
    Ok(item("AWS:Application", "1.1", application::gather(host)?))
}

/// `AWS:AWSComponent` 1.0.
pub fn aws_components(host: &Host<'_>) -> Result<Item, GatherError> {
    Ok(item("AWS:AWSComponent", "1.0", component::gather(host)?))
}

/// `AWS:Network` 1.0: every interface but loopback.
pub fn network(host: &Host<'_>) -> Result<Item, GatherError> {
    Ok(item("AWS:Network", "1.0", network::gather(host)?))
}

/// `AWS:InstanceDetailedInformation` 1.0.
pub fn instance_detailed_information(host: &Host<'_>) -> Result<Item, GatherError> {
    let content = vec![instance::gather(host)?];
    Ok(item("AWS:InstanceDetailedInformation", "1.0", content))
}

/// `AWS:File` 1.0 for the plugin's `files` input (a JSON text of filters).
pub fn files(host: &Host<'_>, filters: &str) -> Result<Item, GatherError> {
    Ok(item("AWS:File", "1.0", files::gather(host, filters)?))
}

/// Custom inventory: every `*.json` file of `dir` (`CustomInventoryDefaultLocation`).
pub fn custom(host: &Host<'_>, dir: &Path) -> Result<Vec<Item>, GatherError> {
    custom::gather(host, dir)
}

fn item(type_name: &str, schema_version: &str, content: Vec<Entry>) -> Item {
    Item {
        type_name: type_name.into(),
        schema_version: schema_version.into(),
        content,
    }
}

/// The host path `path` (absolute, as the system sees it) inside the tree at `root`.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// `path` as the host sees it: `full` (a path inside the tree at `root`) without the root.
fn host_view(root: &Path, full: &Path) -> PathBuf {
    match full.strip_prefix(root) {
        Ok(rel) => Path::new("/").join(rel),
        Err(_) => full.to_path_buf(),
    }
}

/// The text of `path`, at most `cap` bytes of it (the rest is ignored), invalid UTF-8 replaced;
/// `None` when the file does not exist.
fn read_capped(path: &Path, cap: u64) -> Result<Option<String>, GatherError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(GatherError(format!("cannot read {}: {e}", path.display()))),
    };
    let mut bytes = Vec::new();
    file.take(cap)
        .read_to_end(&mut bytes)
        .map_err(|e| GatherError(format!("cannot read {}: {e}", path.display())))?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// `2016-07-30T18:15:37Z` (Go's `time.RFC3339` of a UTC time), the format the service's
/// regex for inventory dates expects.
fn rfc3339(t: std::time::SystemTime) -> String {
    let u = crate::timefmt::Utc::from_system(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        u.year, u.month, u.day, u.hour, u.minute, u.second
    )
}

/// An entry of these attributes. Inserts one by one: collecting into a map would sort the pairs
/// with a stable sort monomorphised for them, kilobytes of binary for nothing.
fn entry_of(pairs: &[(&str, &str)]) -> Entry {
    let mut e = Entry::new();
    for (k, v) in pairs {
        e.insert((*k).into(), (*v).into());
    }
    e
}

/// Sets `key` only when `value` is not empty: the `omitempty` attributes of upstream's model.
fn put_nonempty(entry: &mut Entry, key: &str, value: &str) {
    if !value.is_empty() {
        entry.insert(key.into(), value.into());
    }
}

/// Test roots: a fresh directory per test, and files written into it.
#[cfg(test)]
pub(super) mod testing {
    use std::path::{Path, PathBuf};

    pub fn root(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ssm-lite-gather-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Writes `text` at the host path `path` of the tree at `root`.
    pub fn write(root: &Path, path: &str, text: &str) -> PathBuf {
        let full = super::under(root, Path::new(path));
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, text).unwrap();
        full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_seconds_and_z() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_469_902_537_250);
        assert_eq!(rfc3339(t), "2016-07-30T18:15:37Z");
    }

    #[test]
    fn host_paths_map_in_and_out_of_the_root() {
        let root = Path::new("/tmp/r");
        assert_eq!(under(root, Path::new("/etc/x")), Path::new("/tmp/r/etc/x"));
        assert_eq!(
            host_view(root, Path::new("/tmp/r/etc/x")),
            Path::new("/etc/x")
        );
        assert_eq!(
            host_view(Path::new("/"), Path::new("/etc")),
            Path::new("/etc")
        );
    }
}
