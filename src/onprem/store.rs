//! The registration on disk: `<state dir>/registration/…`, every file 0600 in a 0700 directory,
//! written atomically (write, fsync, rename), so a power cut never leaves half a key. An
//! unreadable or corrupt registration is an error, never a silent re-registration.
//!
//! ```text
//! registration.json   {instanceID, region, privateKey, privateKeyType, privateKeyCreatedDate, fingerprint}
//! pending_key.json    {privateKey, privateKeyType, privateKeyCreatedDate}   during a key rotation
//! fingerprint.json    {fingerprint, hardwareHash, similarityThreshold}      (see fingerprint.rs)
//! ```
//! Key material is never logged and never quoted in an error.

use super::fingerprint::FingerprintRecord;
use super::keys::KeyPair;
use crate::state;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const REGISTRATION_FILE: &str = "registration.json";
const PENDING_KEY_FILE: &str = "pending_key.json";
const FINGERPRINT_FILE: &str = "fingerprint.json";
/// The only key type the service knows (upstream's `privateKeyType`).
pub const KEY_TYPE: &str = "Rsa";

/// What registering produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// `mi-…`.
    pub instance_id: String,
    pub region: String,
    pub key: KeyPair,
    /// Seconds since the epoch when `key` was created (for `Profile.KeyAutoRotateDays`).
    pub key_created: u64,
    /// The fingerprint UUID sent with every role-token request.
    pub fingerprint: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

impl From<state::StateError> for StoreError {
    fn from(e: state::StateError) -> StoreError {
        StoreError(e.to_string())
    }
}

#[derive(Serialize, Deserialize)]
struct RegistrationFile {
    #[serde(rename = "instanceID")]
    instance_id: String,
    region: String,
    #[serde(flatten)]
    key: KeyFile,
    fingerprint: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyFile {
    private_key: String,
    private_key_type: String,
    /// Seconds since the epoch.
    private_key_created_date: u64,
}

impl KeyFile {
    fn new(key: &KeyPair, created: u64) -> KeyFile {
        KeyFile {
            private_key: key.private_b64(),
            private_key_type: KEY_TYPE.into(),
            private_key_created_date: created,
        }
    }

    fn key(&self) -> Result<KeyPair, String> {
        if self.private_key_type != KEY_TYPE {
            return Err(format!(
                "privateKeyType is {:?}, only {KEY_TYPE:?} is supported",
                self.private_key_type
            ));
        }
        KeyPair::from_private_b64(&self.private_key).map_err(|e| e.to_string())
    }
}

pub struct RegistrationStore {
    dir: PathBuf,
}

impl RegistrationStore {
    /// The store under `state_dir` (not created until something is saved).
    pub fn new(state_dir: &Path) -> RegistrationStore {
        RegistrationStore {
            dir: state_dir.join("registration"),
        }
    }

    /// The EC2 Default Host Management registration under `state_dir`, kept apart from the
    /// on-prem one (which a hybrid activation may add later).
    pub fn ec2(state_dir: &Path) -> RegistrationStore {
        RegistrationStore {
            dir: state_dir.join("registration-ec2"),
        }
    }

    /// `<state dir>/registration`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `Ok(None)` when not registered; `Err` when a registration exists but cannot be read.
    pub fn load(&self) -> Result<Option<Registration>, StoreError> {
        let Some(file) = self.read::<RegistrationFile>(REGISTRATION_FILE)? else {
            return Ok(None);
        };
        let bad = |detail: String| self.corrupt(REGISTRATION_FILE, &detail);
        if file.instance_id.trim().is_empty() || file.region.trim().is_empty() {
            return Err(bad("instanceID or region is empty".into()));
        }
        let key = file.key.key().map_err(bad)?;
        Ok(Some(Registration {
            instance_id: file.instance_id,
            region: file.region,
            key,
            key_created: file.key.private_key_created_date,
            fingerprint: file.fingerprint,
        }))
    }

    pub fn save(&self, registration: &Registration) -> Result<(), StoreError> {
        let file = RegistrationFile {
            instance_id: registration.instance_id.clone(),
            region: registration.region.clone(),
            key: KeyFile::new(&registration.key, registration.key_created),
            fingerprint: registration.fingerprint.clone(),
        };
        self.write(REGISTRATION_FILE, &file)
    }

    /// Removes the registration (`register --clear`), with any pending key and the fingerprint.
    pub fn clear(&self) -> Result<(), StoreError> {
        for name in [REGISTRATION_FILE, PENDING_KEY_FILE, FINGERPRINT_FILE] {
            state::remove_file(&self.dir.join(name))?;
        }
        if self.dir.is_dir() {
            state::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Key rotation (§5.5): the new key is stored here before the service learns of it, so a
    /// crash at any point leaves a key that works (the old one, or the pending one once tried).
    pub fn save_pending_key(&self, key: &KeyPair, created: u64) -> Result<(), StoreError> {
        self.write(PENDING_KEY_FILE, &KeyFile::new(key, created))
    }

    pub fn load_pending_key(&self) -> Result<Option<(KeyPair, u64)>, StoreError> {
        let Some(file) = self.read::<KeyFile>(PENDING_KEY_FILE)? else {
            return Ok(None);
        };
        let key = file
            .key()
            .map_err(|detail| self.corrupt(PENDING_KEY_FILE, &detail))?;
        Ok(Some((key, file.private_key_created_date)))
    }

    pub fn clear_pending_key(&self) -> Result<(), StoreError> {
        state::remove_file(&self.dir.join(PENDING_KEY_FILE))?;
        if self.dir.is_dir() {
            state::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The fingerprint and the hardware it was made on (§5.4 step 4).
    pub fn load_fingerprint(&self) -> Result<Option<FingerprintRecord>, StoreError> {
        self.read(FINGERPRINT_FILE)
    }

    pub fn save_fingerprint(&self, record: &FingerprintRecord) -> Result<(), StoreError> {
        self.write(FINGERPRINT_FILE, record)
    }

    fn write(&self, name: &str, value: &impl Serialize) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(value)
            .map_err(|e| StoreError(format!("cannot encode {name}: {e}")))?;
        state::ensure_private_dir(&self.dir)?;
        state::write_atomic(&self.dir.join(name), &bytes, true)?;
        Ok(())
    }

    /// `None` when the file does not exist. Parse errors give only the position and kind:
    /// serde's messages can quote values, and these files hold private keys.
    fn read<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StoreError> {
        let path = self.dir.join(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StoreError(format!(
                    "cannot read {}: {e} (ssm-lite needs read access to its state dir; run it \
                     as root)",
                    path.display()
                )));
            }
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            let detail = format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            );
            self.corrupt(name, &detail)
        })
    }

    fn corrupt(&self, name: &str, detail: &str) -> StoreError {
        StoreError(format!(
            "the registration file {} is corrupt ({detail}); restore it from a backup, or run \
             `ssm-lite register --clear` and register again with an activation code",
            self.dir.join(name).display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onprem::keys::test_key;
    use crate::state::testdir::TestDir;
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    fn registration() -> Registration {
        Registration {
            instance_id: "mi-0123456789abcdef0".into(),
            region: "eu-west-1".into(),
            key: test_key().clone(),
            key_created: 1_700_000_000,
            fingerprint: "2b6ab4a6-0a3f-4b8e-9d2c-7f1e2d3c4b5a".into(),
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn nothing_stored_is_not_registered() {
        let t = TestDir::new("store");
        let store = RegistrationStore::new(t.path());
        assert!(store.load().unwrap().is_none());
        assert!(store.load_pending_key().unwrap().is_none());
        assert!(store.load_fingerprint().unwrap().is_none());
        store.clear().unwrap();
        assert!(!store.dir().exists());
    }

    #[test]
    fn a_saved_registration_loads_back_with_private_modes_and_documented_fields() {
        let t = TestDir::new("store");
        let store = RegistrationStore::new(t.path());
        let want = registration();
        store.save(&want).unwrap();
        assert_eq!(store.load().unwrap(), Some(want.clone()));

        let file = t.path().join("registration/registration.json");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(store.dir()), 0o700);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(json["instanceID"], "mi-0123456789abcdef0");
        assert_eq!(json["region"], "eu-west-1");
        assert_eq!(json["privateKey"], want.key.private_b64());
        assert_eq!(json["privateKeyType"], "Rsa");
        assert_eq!(json["privateKeyCreatedDate"], 1_700_000_000);
        assert_eq!(json["fingerprint"], want.fingerprint);
        // Only the final files: no temporary left behind.
        let names: Vec<_> = std::fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["registration.json"]);
    }

    #[test]
    fn corrupt_files_are_errors_that_name_the_file_and_the_way_out() {
        let t = TestDir::new("store");
        let store = RegistrationStore::new(t.path());
        store.save(&registration()).unwrap();
        let file = store.dir().join("registration.json");
        let key = registration().key.private_b64();

        // Truncated by hand (a crash cannot do this: writes are atomic).
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, &text[..text.len() / 2]).unwrap();
        let err = store.load().unwrap_err().0;
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(err.contains("ssm-lite register --clear"), "{err}");
        assert!(!err.contains(&key[..40]), "key material in {err}");

        // Valid JSON, broken key: the error must not quote the key.
        let damaged = text.replace(&key[100..140], "AAAA");
        std::fs::write(&file, damaged).unwrap();
        let err = store.load().unwrap_err().0;
        assert!(err.contains("corrupt"), "{err}");
        assert!(!err.contains(&key[..40]), "key material in {err}");

        // A value of the wrong type, where serde would quote the string.
        std::fs::write(&file, format!(r#"{{"instanceID":1,"region":"{key}"}}"#)).unwrap();
        let err = store.load().unwrap_err().0;
        assert!(!err.contains(&key[..40]), "key material in {err}");

        std::fs::write(&file, text.replace("mi-0123456789abcdef0", "")).unwrap();
        assert!(store.load().unwrap_err().0.contains("instanceID"));
    }

    #[test]
    fn an_unreadable_file_is_an_error_not_unregistered() {
        let t = TestDir::new("store");
        let store = RegistrationStore::new(t.path());
        // A directory where the file should be: reading fails with something other than NotFound.
        std::fs::create_dir_all(store.dir().join("registration.json")).unwrap();
        let err = store.load().unwrap_err().0;
        assert!(err.contains("cannot read"), "{err}");
    }

    #[test]
    fn pending_keys_are_kept_apart_and_cleared() {
        let t = TestDir::new("store");
        let store = RegistrationStore::new(t.path());
        store.save(&registration()).unwrap();
        store.save_pending_key(test_key(), 1_800_000_000).unwrap();
        assert_eq!(
            store.load_pending_key().unwrap(),
            Some((test_key().clone(), 1_800_000_000))
        );
        assert_eq!(mode(&store.dir().join("pending_key.json")), 0o600);
        store.clear_pending_key().unwrap();
        assert!(store.load_pending_key().unwrap().is_none());
        assert!(store.load().unwrap().is_some());
        store.clear_pending_key().unwrap();

        std::fs::write(store.dir().join("pending_key.json"), "{").unwrap();
        let err = store.load_pending_key().unwrap_err().0;
        assert!(err.contains("pending_key.json"), "{err}");
    }

    #[test]
    fn clear_removes_registration_pending_key_and_fingerprint() {
        let t = TestDir::new("store");
        let store = RegistrationStore::new(t.path());
        store.save(&registration()).unwrap();
        store.save_pending_key(test_key(), 1).unwrap();
        store
            .save_fingerprint(&FingerprintRecord {
                fingerprint: "f".into(),
                hardware_hash: BTreeMap::new(),
                similarity_threshold: 40,
            })
            .unwrap();
        assert!(store.load_fingerprint().unwrap().is_some());
        store.clear().unwrap();
        assert!(store.load().unwrap().is_none());
        assert!(store.load_pending_key().unwrap().is_none());
        assert!(store.load_fingerprint().unwrap().is_none());
    }
}
