//! The registration on disk: `<state dir>/registration/…`, every file 0600, written atomically
//! (write, fsync, rename), so a power cut never leaves half a key. An unreadable or corrupt
//! registration is an error, never a silent re-registration.
//! STUB: interface fixed; implementation in progress.

use super::keys::KeyPair;
use std::path::{Path, PathBuf};

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

#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

pub struct RegistrationStore {
    dir: PathBuf,
}

impl RegistrationStore {
    /// The store under `state_dir` (not created until something is saved).
    pub fn new(state_dir: &Path) -> RegistrationStore {
        RegistrationStore { dir: state_dir.join("registration") }
    }

    /// `Ok(None)` when not registered; `Err` when a registration exists but cannot be read.
    pub fn load(&self) -> Result<Option<Registration>, StoreError> {
        let _ = &self.dir;
        todo!()
    }

    pub fn save(&self, registration: &Registration) -> Result<(), StoreError> {
        let _ = registration;
        todo!()
    }

    /// Removes the registration (`register --clear`).
    pub fn clear(&self) -> Result<(), StoreError> {
        todo!()
    }

    /// Key rotation (§5.5): the new key is stored here before the service learns of it, so a
    /// crash at any point leaves a key that works (the old one, or the pending one once tried).
    pub fn save_pending_key(&self, key: &KeyPair, created: u64) -> Result<(), StoreError> {
        let _ = (key, created);
        todo!()
    }

    pub fn load_pending_key(&self) -> Result<Option<(KeyPair, u64)>, StoreError> {
        todo!()
    }

    pub fn clear_pending_key(&self) -> Result<(), StoreError> {
        todo!()
    }
}
