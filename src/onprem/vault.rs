//! Taking over amazon-ssm-agent's on-prem registration (`register --import-amazon-ssm-agent`),
//! so replacing the official agent on a device needs no new activation: same `mi-` id, same key,
//! same fingerprint.
//!
//! Its vault (docs/protocol.md §5.4): `<vault>/Manifest` is a JSON map from key to data file (absolute
//! paths, normally `<vault>/Store/<key>`); `RegistrationKey` holds `{instanceID, region,
//! privateKey, privateKeyType, privateKeyCreatedDate}` with a Go time string, and
//! `InstanceFingerprint` holds `{fingerprint, hardwareHash, similarityThreshold}`.

use super::fingerprint::{self, DEFAULT_SIMILARITY_THRESHOLD, Hardware};
use super::keys::KeyPair;
use super::store::{KEY_TYPE, Registration, RegistrationStore};
use crate::timefmt::{unix_now, unix_secs};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MANIFEST: &str = "Manifest";
const REGISTRATION_KEY: &str = "RegistrationKey";
const FINGERPRINT_KEY: &str = "InstanceFingerprint";

#[derive(Deserialize)]
struct VaultRegistration {
    #[serde(rename = "instanceID", default)]
    instance_id: String,
    #[serde(default)]
    region: String,
    #[serde(rename = "privateKey", default)]
    private_key: String,
    #[serde(rename = "privateKeyType", default)]
    private_key_type: String,
    #[serde(rename = "privateKeyCreatedDate", default)]
    private_key_created_date: String,
}

#[derive(Deserialize)]
struct VaultFingerprint {
    #[serde(default)]
    fingerprint: String,
    #[serde(rename = "similarityThreshold")]
    similarity_threshold: Option<i32>,
}

/// Reads the registration in the vault at `vault_dir` and saves it into `store`.
pub fn import(
    vault_dir: &Path,
    store: &RegistrationStore,
    hardware: &Hardware,
) -> Result<Registration, String> {
    let vault = Vault::open(vault_dir)?;
    let record: VaultRegistration = vault.read(REGISTRATION_KEY)?.ok_or_else(|| {
        format!(
            "{} has no {REGISTRATION_KEY}: amazon-ssm-agent is not registered on this machine; \
             register with an activation instead",
            vault.manifest_path().display()
        )
    })?;
    let bad = |what: &str| {
        format!(
            "amazon-ssm-agent's registration in {} is not usable: {what}",
            vault_dir.display()
        )
    };
    let instance_id = record.instance_id.trim();
    if !instance_id.starts_with("mi-") || crate::state::safe_file_name(instance_id).is_none() {
        return Err(bad("instanceID is not a managed instance id (mi-…)"));
    }
    if record.region.trim().is_empty() {
        return Err(bad("region is empty"));
    }
    if !record.private_key_type.is_empty() && record.private_key_type != KEY_TYPE {
        return Err(bad("privateKeyType is not Rsa"));
    }
    let key = KeyPair::from_private_b64(&record.private_key).map_err(|e| bad(&e.to_string()))?;
    let key_created = parse_go_time(&record.private_key_created_date).unwrap_or_else(|| {
        log::warn!("the imported key's creation date is missing or unreadable; counting from now");
        unix_now()
    });
    let fingerprint = import_fingerprint(&vault, store, hardware)?;
    let registration = Registration {
        instance_id: instance_id.to_string(),
        region: record.region.trim().to_string(),
        key,
        key_created,
        fingerprint,
    };
    store.save(&registration).map_err(|e| e.0)?;
    store.clear_pending_key().map_err(|e| e.0)?;
    Ok(registration)
}

/// The vault's fingerprint, kept for this machine as it is now: amazon-ssm-agent hashes its
/// hardware values differently, so its stored hashes would never match ours.
fn import_fingerprint(
    vault: &Vault,
    store: &RegistrationStore,
    hardware: &Hardware,
) -> Result<String, String> {
    let record: Option<VaultFingerprint> = vault.read(FINGERPRINT_KEY)?;
    match record.filter(|r| !r.fingerprint.trim().is_empty()) {
        Some(r) => {
            let threshold = r
                .similarity_threshold
                .unwrap_or(DEFAULT_SIMILARITY_THRESHOLD);
            let fingerprint = r.fingerprint.trim();
            fingerprint::adopt(store, hardware, fingerprint, threshold).map_err(|e| e.0)?;
            Ok(fingerprint.to_string())
        }
        None => {
            log::warn!(
                "amazon-ssm-agent's vault has no {FINGERPRINT_KEY}: using a new fingerprint \
                 (as amazon-ssm-agent itself would)"
            );
            fingerprint::instance_fingerprint(store, hardware).map_err(|e| e.0)
        }
    }
}

struct Vault {
    dir: PathBuf,
    manifest: BTreeMap<String, String>,
}

impl Vault {
    fn open(dir: &Path) -> Result<Vault, String> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read(&path).map_err(|e| {
            format!(
                "cannot read amazon-ssm-agent's vault manifest {}: {e} (is amazon-ssm-agent \
                 registered here? run as root)",
                path.display()
            )
        })?;
        let manifest = serde_json::from_slice(&text).map_err(|e| {
            format!(
                "{} is not a JSON map of key to file ({:?} error at line {} column {})",
                path.display(),
                e.classify(),
                e.line(),
                e.column()
            )
        })?;
        Ok(Vault {
            dir: dir.to_owned(),
            manifest,
        })
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir.join(MANIFEST)
    }

    /// The data stored under `key`: the manifest's file, or `<vault>/Store/<key>` when that
    /// path is gone (a vault copied or mounted elsewhere). `None` when the key is not there.
    fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, String> {
        let Some(listed) = self.manifest.get(key) else {
            return Ok(None);
        };
        let listed = PathBuf::from(listed);
        let path = if listed.exists() {
            listed
        } else {
            self.dir.join("Store").join(key)
        };
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("cannot read the vault's {key} at {}: {e}", path.display()))?;
        // Only position and kind: serde's messages can quote values, and this may be a key.
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            format!(
                "the vault's {key} at {} is not valid ({:?} error at line {} column {})",
                path.display(),
                e.classify(),
                e.line(),
                e.column()
            )
        })
    }
}

/// Go's `time.Time.String()` layout, `2006-01-02 15:04:05.999999999 -0700 MST` (a monotonic
/// `m=+…` suffix is ignored), as seconds since the epoch.
fn parse_go_time(text: &str) -> Option<u64> {
    let mut fields = text.split_whitespace();
    let (date, time, offset) = (fields.next()?, fields.next()?, fields.next()?);
    let (sign_hours, minutes) = offset.split_at_checked(3)?;
    let iso = format!("{date} {time}{sign_hours}:{minutes}");
    let t = crate::timefmt::parse_iso8601(&iso)?;
    Some(unix_secs(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onprem::fingerprint::tests::fake_machine;
    use crate::onprem::keys::test_key;
    use crate::state::testdir::TestDir;
    use serde_json::json;

    /// An amazon-ssm-agent vault as its fsvault writes it: manifest of absolute paths, one JSON
    /// file per key under Store/.
    fn build_vault(dir: &Path, registration: &serde_json::Value, fingerprint: Option<&str>) {
        let store = dir.join("Store");
        std::fs::create_dir_all(&store).unwrap();
        let mut manifest = serde_json::Map::new();
        let mut put = |key: &str, value: &serde_json::Value| {
            let path = store.join(key);
            std::fs::write(&path, value.to_string()).unwrap();
            manifest.insert(key.into(), path.display().to_string().into());
        };
        put(REGISTRATION_KEY, registration);
        if let Some(fp) = fingerprint {
            let record = json!({
                "fingerprint": fp,
                "hardwareHash": {"machine-id": "upstream-hash", "hostname-info": "x"},
                "similarityThreshold": 40
            });
            put(FINGERPRINT_KEY, &record);
        }
        std::fs::write(dir.join(MANIFEST), serde_json::to_vec(&manifest).unwrap()).unwrap();
    }

    fn upstream_record() -> serde_json::Value {
        json!({
            "instanceID": "mi-0a1b2c3d4e5f60718",
            "region": "ap-southeast-2",
            "instanceType": "",
            "availabilityZone": "",
            "privateKey": test_key().private_b64(),
            "privateKeyType": "Rsa",
            "privateKeyCreatedDate": "2024-05-01 12:00:00.123456789 +0200 CEST"
        })
    }

    struct Setup {
        _t: TestDir,
        vault: PathBuf,
        store: RegistrationStore,
        hardware: Hardware,
    }

    fn setup() -> Setup {
        let t = TestDir::new("vault");
        fake_machine(&t.path().join("root"));
        Setup {
            vault: t.path().join("Vault"),
            store: RegistrationStore::new(&t.path().join("state")),
            hardware: Hardware::under(&t.path().join("root")),
            _t: t,
        }
    }

    #[test]
    fn an_amazon_ssm_agent_registration_is_taken_over() {
        let s = setup();
        let fp = "6f1c3a52-8a4e-4c1f-9a7e-0d2b5c8e9f10";
        build_vault(&s.vault, &upstream_record(), Some(fp));
        let imported = import(&s.vault, &s.store, &s.hardware).unwrap();
        assert_eq!(imported.instance_id, "mi-0a1b2c3d4e5f60718");
        assert_eq!(imported.region, "ap-southeast-2");
        assert_eq!(&imported.key, test_key());
        // 2024-05-01T10:00:00Z
        assert_eq!(imported.key_created, 1_714_557_600);
        assert_eq!(imported.fingerprint, fp);
        assert_eq!(s.store.load().unwrap(), Some(imported));
        // The fingerprint stays the same on later checks on this machine.
        assert_eq!(
            fingerprint::instance_fingerprint(&s.store, &s.hardware).unwrap(),
            fp
        );
    }

    #[test]
    fn a_vault_moved_elsewhere_is_read_from_its_store_dir() {
        let s = setup();
        build_vault(&s.vault, &upstream_record(), Some("f"));
        let moved = s.vault.with_file_name("Moved");
        std::fs::rename(&s.vault, &moved).unwrap();
        let imported = import(&moved, &s.store, &s.hardware).unwrap();
        assert_eq!(imported.instance_id, "mi-0a1b2c3d4e5f60718");
    }

    #[test]
    fn without_a_fingerprint_record_a_new_one_is_made() {
        let s = setup();
        let mut record = upstream_record();
        record["privateKeyCreatedDate"] = json!("");
        build_vault(&s.vault, &record, None);
        let before = unix_now();
        let imported = import(&s.vault, &s.store, &s.hardware).unwrap();
        assert_eq!(imported.fingerprint.len(), 36);
        assert!(imported.key_created >= before);
    }

    #[test]
    fn unusable_vaults_are_explained_and_import_nothing() {
        let s = setup();
        let err = import(&s.vault, &s.store, &s.hardware).unwrap_err();
        assert!(err.contains("Manifest"), "{err}");

        let cases = [
            ("instanceID", json!("i-0123456789abcdef0"), "mi-"),
            ("region", json!(""), "region"),
            ("privateKeyType", json!("Ecdsa"), "Rsa"),
            ("privateKey", json!("AAAA"), "PKCS#1"),
        ];
        for (field, value, expect) in cases {
            let mut record = upstream_record();
            record[field] = value;
            build_vault(&s.vault, &record, Some("f"));
            let err = import(&s.vault, &s.store, &s.hardware).unwrap_err();
            assert!(err.contains(expect), "{field}: {err}");
        }
        std::fs::write(
            s.vault.join("Store").join(REGISTRATION_KEY),
            "{\"privateKey\": 1",
        )
        .unwrap();
        let err = import(&s.vault, &s.store, &s.hardware).unwrap_err();
        assert!(err.contains("RegistrationKey"), "{err}");
        std::fs::write(s.vault.join(MANIFEST), "{}").unwrap();
        let err = import(&s.vault, &s.store, &s.hardware).unwrap_err();
        assert!(err.contains("not registered"), "{err}");
        assert!(s.store.load().unwrap().is_none());
    }

    #[test]
    fn go_time_strings_parse() {
        assert_eq!(
            parse_go_time("2024-05-01 12:00:00.5 +0000 UTC"),
            Some(1_714_564_800)
        );
        assert_eq!(
            parse_go_time("2024-05-01 12:00:00 -0700 MST m=+0.012"),
            Some(1_714_590_000)
        );
        assert_eq!(parse_go_time(""), None);
        assert_eq!(parse_go_time("yesterday"), None);
        assert_eq!(parse_go_time("2024-05-01 12:00:00 +"), None);
    }
}
