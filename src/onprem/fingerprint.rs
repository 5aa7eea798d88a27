//! The instance fingerprint (docs/protocol.md §5.4 step 4): a random UUID, sent with registration and
//! every role-token request, kept while the machine stays recognisably the same. Beside it we
//! keep a hash of each of a few hardware values; when fewer than `similarityThreshold` percent
//! of them still match (a disk cloned onto another machine), a new UUID is made, and the service
//! no longer hands credentials to the copy.
//!
//! Values are read from files only (cheap, no commands run): machine id, host name, IP and MAC
//! addresses, CPU model, memory size, DMI system/BIOS ids. Each is stored as its SHA-256, so the
//! file holds no addresses or serial numbers. Values that cannot be read are left out.

use super::store::{RegistrationStore, StoreError};
use crate::aws::sigv4::sha256_hex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Upstream's default: at least 40 % of the stored values must still match.
pub const DEFAULT_SIMILARITY_THRESHOLD: i32 = 40;
/// The threshold that turns the check off (`-disableSimilarityCheck`).
pub const CHECK_DISABLED: i32 = -1;

/// `fingerprint.json`, in amazon-ssm-agent's `InstanceFingerprint` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FingerprintRecord {
    pub fingerprint: String,
    /// Hardware value name → hex SHA-256 of the value.
    pub hardware_hash: BTreeMap<String, String>,
    /// Percent of values that must match to keep the fingerprint; negative disables the check.
    pub similarity_threshold: i32,
}

/// Where the hardware values are read from: `/` normally, a fake tree in tests.
#[derive(Debug, Clone)]
pub struct Hardware {
    root: PathBuf,
}

impl Hardware {
    pub fn system() -> Hardware {
        Hardware::under(Path::new("/"))
    }

    /// Reads `<root>/etc/machine-id`, `<root>/proc/…`, `<root>/sys/…`.
    pub fn under(root: &Path) -> Hardware {
        Hardware {
            root: root.to_owned(),
        }
    }

    fn read(&self, path: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.root.join(path.trim_start_matches('/'))).ok()?;
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_string())
    }

    /// The current values, hashed, by name.
    pub fn hash(&self) -> BTreeMap<String, String> {
        let values = [
            (
                "machine-id",
                self.read("etc/machine-id")
                    .or_else(|| self.read("var/lib/dbus/machine-id")),
            ),
            ("hostname-info", self.read("proc/sys/kernel/hostname")),
            ("ipaddress-info", self.ip_addresses()),
            ("macaddr-info", self.mac_addresses()),
            ("processor-hash", self.processor()),
            ("memory-hash", self.memory()),
            (
                "system-hash",
                self.joined(&[
                    "sys/class/dmi/id/sys_vendor",
                    "sys/class/dmi/id/product_name",
                    "sys/class/dmi/id/product_uuid",
                ]),
            ),
            (
                "bios-hash",
                self.joined(&[
                    "sys/class/dmi/id/bios_vendor",
                    "sys/class/dmi/id/bios_version",
                ]),
            ),
        ];
        values
            .into_iter()
            .filter_map(|(name, value)| Some((name.to_string(), sha256_hex(value?.as_bytes()))))
            .collect()
    }

    /// The readable ones of `paths`, joined; `None` when none is.
    fn joined(&self, paths: &[&str]) -> Option<String> {
        let parts: Vec<String> = paths.iter().filter_map(|p| self.read(p)).collect();
        (!parts.is_empty()).then(|| parts.join("\n"))
    }

    /// Local, non-loopback addresses, sorted: IPv4 from the kernel's FIB (`/32 host LOCAL`
    /// entries), IPv6 from `if_inet6`.
    fn ip_addresses(&self) -> Option<String> {
        let mut addresses = BTreeSet::new();
        if let Some(fib) = self.read("proc/net/fib_trie") {
            let mut last = "";
            for line in fib.lines() {
                let line = line.trim();
                if let Some(address) = line.strip_prefix("|-- ") {
                    last = address;
                } else if line.starts_with("/32 host LOCAL") && !last.starts_with("127.") {
                    addresses.insert(last.to_string());
                }
            }
        }
        if let Some(inet6) = self.read("proc/net/if_inet6") {
            for line in inet6.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                match fields[..] {
                    [address, .., interface] if interface != "lo" => {
                        addresses.insert(address.to_string());
                    }
                    _ => {}
                }
            }
        }
        non_empty_lines(addresses)
    }

    /// MAC addresses of the network interfaces except loopback and all-zero ones, sorted.
    fn mac_addresses(&self) -> Option<String> {
        let dir = std::fs::read_dir(self.root.join("sys/class/net")).ok()?;
        let macs = dir
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                let mac = self.read(&format!("sys/class/net/{name}/address"))?;
                (name != "lo" && mac != "00:00:00:00:00:00").then_some(mac)
            })
            .collect();
        non_empty_lines(macs)
    }

    /// CPU identity lines of `/proc/cpuinfo` (not the changing ones such as `cpu MHz`), and the
    /// number of processors.
    fn processor(&self) -> Option<String> {
        const STABLE: &[&str] = &[
            "vendor_id",
            "cpu family",
            "model",
            "model name",
            "stepping",
            "Hardware",
            "CPU implementer",
            "CPU architecture",
            "CPU variant",
            "CPU part",
        ];
        let cpuinfo = self.read("proc/cpuinfo")?;
        let mut identity = BTreeSet::new();
        let mut processors = 0;
        for (key, value) in cpuinfo.lines().filter_map(|l| l.split_once(':')) {
            let key = key.trim();
            if key == "processor" {
                processors += 1;
            } else if STABLE.contains(&key) {
                identity.insert(format!("{key}: {}", value.trim()));
            }
        }
        identity.insert(format!("processors: {processors}"));
        non_empty_lines(identity)
    }

    fn memory(&self) -> Option<String> {
        let meminfo = self.read("proc/meminfo")?;
        meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

fn non_empty_lines(values: BTreeSet<String>) -> Option<String> {
    (!values.is_empty()).then(|| values.into_iter().collect::<Vec<_>>().join("\n"))
}

/// Percent of the stored values that are the same now. With nothing stored, 100 when nothing
/// can be read now either (so the fingerprint stays put), else 0.
pub fn similarity_percent(saved: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> u32 {
    if saved.is_empty() {
        return if now.is_empty() { 100 } else { 0 };
    }
    let matching = saved
        .iter()
        .filter(|(name, value)| now.get(*name) == Some(*value))
        .count();
    (matching * 100 / saved.len()) as u32
}

/// The fingerprint to send now: the stored one while the hardware is similar enough, otherwise
/// (or when there is none) a new random UUID. The record is saved with the current hardware, so
/// gradual change (a new address, more memory) does not add up to a new fingerprint.
pub fn instance_fingerprint(
    store: &RegistrationStore,
    hardware: &Hardware,
) -> Result<String, StoreError> {
    let now = hardware.hash();
    let saved = store.load_fingerprint()?;
    let kept = saved.as_ref().and_then(|record| {
        let threshold = record.similarity_threshold;
        let similar = threshold < 0
            || similarity_percent(&record.hardware_hash, &now) >= threshold.unsigned_abs();
        similar.then(|| (record.fingerprint.clone(), threshold))
    });
    if saved.is_some() && kept.is_none() {
        log::warn!(
            "this machine's hardware differs from when it registered: using a new fingerprint \
             (the service may refuse credentials until the instance is registered again)"
        );
    }
    let (fingerprint, similarity_threshold) =
        kept.unwrap_or_else(|| (crate::random::uuid_v4(), DEFAULT_SIMILARITY_THRESHOLD));
    let record = FingerprintRecord {
        fingerprint,
        hardware_hash: now,
        similarity_threshold,
    };
    if saved.as_ref() != Some(&record) {
        store.save_fingerprint(&record)?;
    }
    Ok(record.fingerprint)
}

/// `-fingerprint -similarityThreshold N` (upstream `fingerprint.SetSimilarityThreshold`):
/// -1, or 1 to 100, with upstream's words for anything else. Upstream stores a threshold set
/// before the first fingerprint and then resets it to 40 when the fingerprint is made; here
/// that is refused instead, so the setting is never silently lost.
pub fn set_similarity_threshold(store: &RegistrationStore, value: i32) -> Result<(), StoreError> {
    if value != CHECK_DISABLED && !(1..=100).contains(&value) {
        return Err(StoreError(format!(
            "Invalid Similarity Threshold value of {value}. Value must be between 1 and 100 or -1 (check disabled)"
        )));
    }
    let Some(record) = store.load_fingerprint()? else {
        return Err(StoreError(format!(
            "no fingerprint under {} yet to set the similarity threshold of; register first \
             (add -disableSimilarityCheck there to turn the check off)",
            store.dir().display()
        )));
    };
    store.save_fingerprint(&FingerprintRecord {
        similarity_threshold: value,
        ..record
    })
}

/// Keeps `fingerprint` (taken over from amazon-ssm-agent) for this machine's current hardware.
pub fn adopt(
    store: &RegistrationStore,
    hardware: &Hardware,
    fingerprint: &str,
    similarity_threshold: i32,
) -> Result<(), StoreError> {
    store.save_fingerprint(&FingerprintRecord {
        fingerprint: fingerprint.to_string(),
        hardware_hash: hardware.hash(),
        similarity_threshold,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::state::testdir::TestDir;

    /// A fake machine: eight readable values.
    pub(crate) fn fake_machine(root: &Path) {
        let files: &[(&str, &str)] = &[
            ("etc/machine-id", "0123456789abcdef0123456789abcdef\n"),
            ("proc/sys/kernel/hostname", "edge-board-7\n"),
            (
                "proc/net/fib_trie",
                "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 127.0.0.1\n        /32 host LOCAL\n     \
                 |-- 192.168.1.20\n        /32 host LOCAL\n     |-- 192.168.1.255\n        \
                 /32 link BROADCAST\n",
            ),
            (
                "proc/net/if_inet6",
                "00000000000000000000000000000001 01 80 10 80       lo\n\
                 fe80000000000000021122fffe334455 02 40 20 80     eth0\n",
            ),
            ("sys/class/net/eth0/address", "00:11:22:33:44:55\n"),
            ("sys/class/net/lo/address", "00:00:00:00:00:00\n"),
            (
                "proc/cpuinfo",
                "processor\t: 0\nmodel name\t: ARMv7 Processor rev 4 (v7l)\nBogoMIPS\t: 38.40\n\n\
                 processor\t: 1\nmodel name\t: ARMv7 Processor rev 4 (v7l)\nBogoMIPS\t: 38.40\n",
            ),
            (
                "proc/meminfo",
                "MemTotal:        3884096 kB\nMemFree:  12 kB\n",
            ),
            ("sys/class/dmi/id/sys_vendor", "Raspberry\n"),
            ("sys/class/dmi/id/bios_vendor", "U-Boot\n"),
        ];
        for (path, content) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
    }

    fn write(root: &Path, path: &str, content: &str) {
        std::fs::write(root.join(path), content).unwrap();
    }

    #[test]
    fn hardware_values_are_read_hashed_and_stable() {
        let t = TestDir::new("fp");
        fake_machine(t.path());
        let hw = Hardware::under(t.path());
        let hash = hw.hash();
        let names: Vec<&str> = hash.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "bios-hash",
                "hostname-info",
                "ipaddress-info",
                "macaddr-info",
                "machine-id",
                "memory-hash",
                "processor-hash",
                "system-hash"
            ]
        );
        assert_eq!(hash["hostname-info"], sha256_hex(b"edge-board-7"));
        assert_eq!(
            hash["ipaddress-info"],
            sha256_hex(b"192.168.1.20\nfe80000000000000021122fffe334455")
        );
        assert_eq!(hash["macaddr-info"], sha256_hex(b"00:11:22:33:44:55"));
        // Changing values that are not identity (clock speed, free memory) changes nothing.
        write(
            t.path(),
            "proc/meminfo",
            "MemTotal:        3884096 kB\nMemFree:  99 kB\n",
        );
        assert_eq!(hw.hash(), hash);
        // A missing source is left out rather than hashed as empty.
        std::fs::remove_file(t.path().join("etc/machine-id")).unwrap();
        assert!(!hw.hash().contains_key("machine-id"));
    }

    #[test]
    fn similarity_is_the_share_of_stored_values_still_the_same() {
        let m = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let saved = m(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5")]);
        assert_eq!(similarity_percent(&saved, &saved), 100);
        let now = m(&[("a", "1"), ("b", "2"), ("c", "x"), ("d", "x"), ("e", "x")]);
        assert_eq!(similarity_percent(&saved, &now), 40);
        let now = m(&[("a", "1"), ("b", "x"), ("c", "x"), ("d", "x"), ("e", "x")]);
        assert_eq!(similarity_percent(&saved, &now), 20);
        // A value no longer readable counts against; a newly readable one does not count.
        let now = m(&[("a", "1"), ("b", "2"), ("f", "6")]);
        assert_eq!(similarity_percent(&saved, &now), 40);
        assert_eq!(similarity_percent(&m(&[]), &m(&[])), 100);
        assert_eq!(similarity_percent(&m(&[]), &now), 0);
    }

    #[test]
    fn the_fingerprint_survives_small_changes_and_is_replaced_on_another_machine() {
        let t = TestDir::new("fp");
        let root = t.path().join("root");
        fake_machine(&root);
        let hw = Hardware::under(&root);
        let store = RegistrationStore::new(&t.path().join("state"));

        let first = instance_fingerprint(&store, &hw).unwrap();
        assert_eq!(first.len(), 36);
        assert_eq!(instance_fingerprint(&store, &hw).unwrap(), first);
        let record = store.load_fingerprint().unwrap().unwrap();
        assert_eq!(record.similarity_threshold, 40);
        assert_eq!(record.hardware_hash, hw.hash());

        // New host name and address: 6 of 8 match (75 %), same fingerprint, hash updated.
        write(&root, "proc/sys/kernel/hostname", "renamed\n");
        write(&root, "proc/net/fib_trie", "|-- 10.0.0.9\n/32 host LOCAL\n");
        assert_eq!(instance_fingerprint(&store, &hw).unwrap(), first);
        assert_eq!(
            store.load_fingerprint().unwrap().unwrap().hardware_hash,
            hw.hash()
        );

        // The disk moved to another board: 3 of 8 still match (37 % < 40 %).
        write(&root, "etc/machine-id", "ffff\n");
        write(&root, "sys/class/net/eth0/address", "66:77:88:99:aa:bb\n");
        write(&root, "proc/meminfo", "MemTotal: 1024 kB\n");
        write(&root, "proc/sys/kernel/hostname", "other\n");
        write(
            &root,
            "proc/net/fib_trie",
            "|-- 10.0.0.10\n/32 host LOCAL\n",
        );
        let second = instance_fingerprint(&store, &hw).unwrap();
        assert_ne!(second, first);
        assert_eq!(instance_fingerprint(&store, &hw).unwrap(), second);
    }

    #[test]
    fn the_threshold_is_set_within_upstreams_bounds_on_an_existing_fingerprint() {
        let t = TestDir::new("fp");
        let root = t.path().join("root");
        fake_machine(&root);
        let hw = Hardware::under(&root);
        let store = RegistrationStore::new(&t.path().join("state"));
        let err = set_similarity_threshold(&store, 60).unwrap_err().0;
        assert!(err.contains("register first"), "{err}");
        assert!(store.load_fingerprint().unwrap().is_none());

        let fingerprint = instance_fingerprint(&store, &hw).unwrap();
        for bad in [0, 101, -2] {
            let err = set_similarity_threshold(&store, bad).unwrap_err().0;
            assert_eq!(
                err,
                format!(
                    "Invalid Similarity Threshold value of {bad}. Value must be between 1 and 100 or -1 (check disabled)"
                )
            );
        }
        for good in [1, 100, CHECK_DISABLED] {
            set_similarity_threshold(&store, good).unwrap();
            let record = store.load_fingerprint().unwrap().unwrap();
            assert_eq!(
                (record.fingerprint.as_str(), record.similarity_threshold),
                (fingerprint.as_str(), good)
            );
            assert_eq!(record.hardware_hash, hw.hash());
        }
    }

    #[test]
    fn a_negative_threshold_disables_the_check() {
        let t = TestDir::new("fp");
        let root = t.path().join("root");
        fake_machine(&root);
        let store = RegistrationStore::new(&t.path().join("state"));
        adopt(&store, &Hardware::under(&root), "kept-fingerprint", -1).unwrap();
        let elsewhere = Hardware::under(&t.path().join("empty"));
        assert_eq!(
            instance_fingerprint(&store, &elsewhere).unwrap(),
            "kept-fingerprint"
        );
        // With the default threshold the same change gives a new one.
        adopt(&store, &Hardware::under(&root), "kept-fingerprint", 40).unwrap();
        assert_ne!(
            instance_fingerprint(&store, &elsewhere).unwrap(),
            "kept-fingerprint"
        );
    }
}
