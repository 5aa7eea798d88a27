//! The instance's key through its life (docs/protocol.md §5.5): role tokens signed with the current key,
//! and rotation after a successful request when the service sets `UpdateKeyPair` or the key is
//! older than `Profile.KeyAutoRotateDays`.
//!
//! A rotation is three steps, and a crash (or power cut) may stop it after any of them:
//! 1. [`KeyManager::begin`]: generate a key pair and store it as *pending* (durably);
//! 2. [`KeyManager::announce`]: `UpdateManagedInstancePublicKey`, signed with the old key;
//! 3. [`KeyManager::commit`]: sign with the new key from now on, save it as the registration's
//!    key, drop the pending copy.
//!
//! Whatever is on disk after a crash, the key the service knows is either the registration's or
//! the pending one, so a pending key found at start is settled by the first role-token request:
//! the new key is tried first, then the old; the one that works is kept ([`KeyManager::settle`]).
//! A failed step 2 keeps the old key (the rotation is tried again after the next refresh); when
//! its failure leaves open whether the service took the new key (no answer, 5xx), the pending key
//! is settled the same way before the next request.

use super::credentials::{ManagedInstanceService, RoleToken};
use super::keys::{KeyError, KeyPair};
use super::store::{Registration, RegistrationStore, StoreError};
use crate::aws::credentials::{Credentials, CredentialsError};
use crate::aws::jsonrpc::AwsError;
use crate::sync::lock;
use crate::timefmt::unix_now;
use std::sync::Mutex;

/// Where the registration and a pending key are kept: [`RegistrationStore`], or a fake in tests.
pub trait KeyStore: Send + Sync {
    fn save(&self, registration: &Registration) -> Result<(), StoreError>;
    fn save_pending_key(&self, key: &KeyPair, created: u64) -> Result<(), StoreError>;
    fn load_pending_key(&self) -> Result<Option<(KeyPair, u64)>, StoreError>;
    fn clear_pending_key(&self) -> Result<(), StoreError>;
}

impl KeyStore for RegistrationStore {
    fn save(&self, registration: &Registration) -> Result<(), StoreError> {
        RegistrationStore::save(self, registration)
    }
    fn save_pending_key(&self, key: &KeyPair, created: u64) -> Result<(), StoreError> {
        RegistrationStore::save_pending_key(self, key, created)
    }
    fn load_pending_key(&self) -> Result<Option<(KeyPair, u64)>, StoreError> {
        RegistrationStore::load_pending_key(self)
    }
    fn clear_pending_key(&self) -> Result<(), StoreError> {
        RegistrationStore::clear_pending_key(self)
    }
}

const SECONDS_PER_DAY: u64 = 86_400;

/// The registration in use, its key rotations, and role-token requests signed with its key.
pub struct KeyManager {
    service: Box<dyn ManagedInstanceService>,
    store: Box<dyn KeyStore>,
    generate: fn() -> Result<KeyPair, KeyError>,
    /// `Profile.KeyAutoRotateDays`; 0 = only when the service asks.
    auto_rotate_days: u32,
    state: Mutex<KeyState>,
}

struct KeyState {
    /// Its `key` signs every request.
    registration: Registration,
    /// A key of an unfinished rotation, and when it was made: the service may know it instead
    /// of the registration's.
    pending: Option<(KeyPair, u64)>,
}

impl KeyManager {
    /// At start: `registration` as loaded, plus any pending key an interrupted rotation left
    /// in `store` (an unreadable one is an error: it may be the only key the service accepts).
    pub fn open(
        registration: Registration,
        store: Box<dyn KeyStore>,
        service: Box<dyn ManagedInstanceService>,
        auto_rotate_days: u32,
    ) -> Result<KeyManager, StoreError> {
        let pending = store.load_pending_key()?;
        if pending.is_some() {
            log::info!(
                "onprem: a key rotation of {} was interrupted; the next role-token request settles which key is valid",
                registration.instance_id
            );
        }
        Ok(KeyManager {
            service,
            store,
            generate: KeyPair::generate,
            auto_rotate_days,
            state: Mutex::new(KeyState {
                registration,
                pending,
            }),
        })
    }

    /// Fresh credentials from `RequestManagedInstanceRoleToken`, then a key rotation when one
    /// is due (its failure is logged, never returned: the credentials are good).
    pub fn credentials(&self) -> Result<Credentials, CredentialsError> {
        let mut state = lock(&self.state);
        let token = match state.pending.take() {
            Some(pending) => self.settle(&mut state, pending),
            None => self.request(&state.registration.key, &state.registration),
        }
        .map_err(|e| {
            CredentialsError::Fetch(format!("RequestManagedInstanceRoleToken failed: {e}"))
        })?;
        let now = unix_now();
        if self.rotation_due(&state.registration, token.update_key_pair, now)
            && let Err(e) = self.rotate(&mut state, now)
        {
            log::warn!(
                "onprem: key rotation of {} failed: {e}; the old key stays in use and the rotation is tried again after the next refresh",
                state.registration.instance_id
            );
        }
        Ok(token.credentials)
    }

    fn request(&self, key: &KeyPair, registration: &Registration) -> Result<RoleToken, AwsError> {
        self.service
            .request_role_token(key, &registration.fingerprint)
    }

    /// Settles an interrupted rotation: a role-token request with the pending key, else with the
    /// registration's; the key that works is kept, the other dropped. When neither works the
    /// pending key stays, to be tried again next time.
    fn settle(&self, state: &mut KeyState, pending: (KeyPair, u64)) -> Result<RoleToken, AwsError> {
        let (new_key, created) = pending;
        let id = state.registration.instance_id.clone();
        match self.request(&new_key, &state.registration) {
            Ok(token) => {
                log::info!("onprem: the service knows the new key of {id}; switching to it");
                self.commit(state, new_key, created);
                return Ok(token);
            }
            Err(e) => {
                log::info!("onprem: the new key of {id} is not accepted ({e}); trying the old one")
            }
        }
        match self.request(&state.registration.key, &state.registration) {
            Ok(token) => {
                log::info!(
                    "onprem: the service still knows the old key of {id}; dropping the new one"
                );
                self.drop_pending(state);
                Ok(token)
            }
            Err(e) => {
                state.pending = Some((new_key, created));
                Err(e)
            }
        }
    }

    fn rotation_due(&self, registration: &Registration, asked: bool, now: u64) -> bool {
        let max_age = u64::from(self.auto_rotate_days) * SECONDS_PER_DAY;
        let too_old = max_age > 0 && now.saturating_sub(registration.key_created) >= max_age;
        asked || too_old
    }

    fn rotate(&self, state: &mut KeyState, now: u64) -> Result<(), String> {
        let id = state.registration.instance_id.clone();
        log::info!("onprem: rotating the key pair of {id}");
        let new_key = self.begin(state, now)?;
        match self.announce(state, &new_key) {
            Ok(()) => {
                self.commit(state, new_key, now);
                log::info!("onprem: {id} now signs with its new key");
                Ok(())
            }
            Err(e) if surely_not_applied(&e) => {
                self.drop_pending(state);
                Err(format!("UpdateManagedInstancePublicKey was refused: {e}"))
            }
            Err(e) => Err(format!(
                "UpdateManagedInstancePublicKey got no clear answer ({e}); the next role-token request finds out which key the service has"
            )),
        }
    }

    /// Step 1: a new key pair, stored as pending before the service hears of it.
    fn begin(&self, state: &mut KeyState, now: u64) -> Result<KeyPair, String> {
        let new_key = (self.generate)().map_err(|e| format!("cannot generate a key pair: {e}"))?;
        self.store
            .save_pending_key(&new_key, now)
            .map_err(|e| format!("cannot store the new key: {e}"))?;
        state.pending = Some((new_key.clone(), now));
        Ok(new_key)
    }

    /// Step 2: the service learns the new public key, from a request signed with the old key.
    fn announce(&self, state: &KeyState, new_key: &KeyPair) -> Result<(), AwsError> {
        self.service
            .update_public_key(&state.registration.key, new_key)
    }

    /// Step 3: the new key signs from now on, and replaces the old one on disk. Should saving
    /// fail, the pending copy stays on disk, so a restart still finds the key that works.
    fn commit(&self, state: &mut KeyState, new_key: KeyPair, created: u64) {
        state.registration.key = new_key;
        state.registration.key_created = created;
        state.pending = None;
        match self.store.save(&state.registration) {
            Ok(()) => self.clear_stored_pending(&state.registration),
            Err(e) => log::error!(
                "onprem: cannot save the new key of {} ({e}); it is kept as the pending key and used after a restart",
                state.registration.instance_id
            ),
        }
    }

    /// The pending key is not what the service knows: forget it.
    fn drop_pending(&self, state: &mut KeyState) {
        state.pending = None;
        self.clear_stored_pending(&state.registration);
    }

    /// A stale pending file is harmless (the next start tries it and drops it), so failing to
    /// remove it is only worth a warning.
    fn clear_stored_pending(&self, registration: &Registration) {
        if let Err(e) = self.store.clear_pending_key() {
            log::warn!(
                "onprem: cannot remove the pending key of {} ({e}); the next start settles it again",
                registration.instance_id
            );
        }
    }
}

/// A refusal from the service (4xx) means the new key was not taken; no answer or a 5xx leaves
/// it open.
fn surely_not_applied(error: &AwsError) -> bool {
    matches!(error, AwsError::Service { status, .. } if *status < 500)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::http::HttpError;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    const NOW: u64 = 1_700_000_000;

    /// A key that is only bytes: the fake service tells keys apart by their public half.
    fn fake_key() -> Result<KeyPair, KeyError> {
        Ok(KeyPair {
            private_pkcs1_der: crate::random::uuid_v4().into_bytes(),
            public_pkix_der: crate::random::uuid_v4().into_bytes(),
        })
    }

    fn no_key() -> Result<KeyPair, KeyError> {
        Err(KeyError::NoRandom)
    }

    /// How the fake service treats the next `UpdateManagedInstancePublicKey`.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Update {
        Accept,
        Refuse,
        /// Takes the new key, but the answer never arrives.
        ApplyAndLoseAnswer,
        /// Fails before taking it (a 503).
        Unavailable,
    }

    /// The service side: one registered public key, and every call with the key that signed it.
    struct FakeService {
        known: Mutex<Vec<u8>>,
        ask_new_key: Mutex<bool>,
        down: Mutex<bool>,
        update: Mutex<Update>,
        calls: Mutex<Vec<(&'static str, Vec<u8>)>>,
    }

    impl FakeService {
        fn knowing(key: &KeyPair) -> Arc<FakeService> {
            Arc::new(FakeService {
                known: Mutex::new(key.public_pkix_der.clone()),
                ask_new_key: Mutex::new(false),
                down: Mutex::new(false),
                update: Mutex::new(Update::Accept),
                calls: Mutex::new(Vec::new()),
            })
        }

        fn known(&self) -> Vec<u8> {
            self.known.lock().unwrap().clone()
        }

        fn set<T>(field: &Mutex<T>, value: T) {
            *field.lock().unwrap() = value;
        }

        fn calls(&self) -> Vec<(&'static str, Vec<u8>)> {
            self.calls.lock().unwrap().clone()
        }

        /// Records the call; fails unless the service is up and `key` is the registered one.
        fn check(&self, op: &'static str, key: &KeyPair) -> Result<(), AwsError> {
            self.calls
                .lock()
                .unwrap()
                .push((op, key.public_pkix_der.clone()));
            if *self.down.lock().unwrap() {
                return Err(AwsError::Transport(HttpError::Connect(
                    "service down".into(),
                )));
            }
            if key.public_pkix_der != self.known() {
                return Err(AwsError::Service {
                    status: 400,
                    code: "AccessDeniedException".into(),
                    message: "signature does not match the registered key".into(),
                });
            }
            Ok(())
        }
    }

    impl ManagedInstanceService for Arc<FakeService> {
        fn request_role_token(
            &self,
            key: &KeyPair,
            fingerprint: &str,
        ) -> Result<RoleToken, AwsError> {
            self.check("RequestManagedInstanceRoleToken", key)?;
            assert_eq!(fingerprint, "fp-1");
            Ok(RoleToken {
                credentials: Credentials {
                    access_key_id: format!("ASIA{}", self.calls().len()),
                    secret_access_key: "s".into(),
                    session_token: Some("t".into()),
                    expires_at: Some(SystemTime::now() + Duration::from_secs(3600)),
                },
                update_key_pair: *self.ask_new_key.lock().unwrap(),
            })
        }

        fn update_public_key(&self, key: &KeyPair, new_key: &KeyPair) -> Result<(), AwsError> {
            self.check("UpdateManagedInstancePublicKey", key)?;
            let unavailable = |message: &str| AwsError::Service {
                status: 503,
                code: "ServiceUnavailable".into(),
                message: message.into(),
            };
            match *self.update.lock().unwrap() {
                Update::Accept => {}
                Update::Refuse => {
                    return Err(AwsError::Service {
                        status: 400,
                        code: "ValidationException".into(),
                        message: "NewPublicKey too short".into(),
                    });
                }
                Update::Unavailable => return Err(unavailable("try later")),
                Update::ApplyAndLoseAnswer => {
                    FakeService::set(&self.known, new_key.public_pkix_der.clone());
                    return Err(AwsError::Transport(HttpError::Timeout(
                        "answer lost".into(),
                    )));
                }
            }
            FakeService::set(&self.known, new_key.public_pkix_der.clone());
            Ok(())
        }
    }

    /// The disk: survives "crashes" (dropping the manager) and "restarts" (opening a new one).
    #[derive(Clone)]
    struct Disk {
        registration: Registration,
        pending: Option<(KeyPair, u64)>,
        fail_saves: bool,
    }

    impl KeyStore for Arc<Mutex<Disk>> {
        fn save(&self, registration: &Registration) -> Result<(), StoreError> {
            let mut disk = self.lock().unwrap();
            if disk.fail_saves {
                return Err(StoreError("disk full".into()));
            }
            disk.registration = registration.clone();
            Ok(())
        }
        fn save_pending_key(&self, key: &KeyPair, created: u64) -> Result<(), StoreError> {
            let mut disk = self.lock().unwrap();
            if disk.fail_saves {
                return Err(StoreError("disk full".into()));
            }
            disk.pending = Some((key.clone(), created));
            Ok(())
        }
        fn load_pending_key(&self) -> Result<Option<(KeyPair, u64)>, StoreError> {
            Ok(self.lock().unwrap().pending.clone())
        }
        fn clear_pending_key(&self) -> Result<(), StoreError> {
            self.lock().unwrap().pending = None;
            Ok(())
        }
    }

    fn registered(key_created: u64) -> (Arc<Mutex<Disk>>, Arc<FakeService>) {
        let key = fake_key().unwrap();
        let service = FakeService::knowing(&key);
        let registration = Registration {
            instance_id: "mi-0123456789abcdef0".into(),
            region: "eu-west-1".into(),
            key,
            key_created,
            fingerprint: "fp-1".into(),
        };
        let disk = Disk {
            registration,
            pending: None,
            fail_saves: false,
        };
        (Arc::new(Mutex::new(disk)), service)
    }

    /// What the agent does at start: load the registration and open the manager.
    fn start(disk: &Arc<Mutex<Disk>>, service: &Arc<FakeService>, days: u32) -> KeyManager {
        let registration = disk.lock().unwrap().registration.clone();
        let mut manager = KeyManager::open(
            registration,
            Box::new(disk.clone()),
            Box::new(service.clone()),
            days,
        )
        .unwrap();
        manager.generate = fake_key;
        manager
    }

    fn signing_key(manager: &KeyManager) -> Vec<u8> {
        manager
            .state
            .lock()
            .unwrap()
            .registration
            .key
            .public_pkix_der
            .clone()
    }

    /// After a restart: credentials work, the key on disk is the service's, nothing is pending.
    fn assert_settled(disk: &Arc<Mutex<Disk>>, service: &Arc<FakeService>) {
        let manager = start(disk, service, 0);
        manager.credentials().unwrap();
        let disk = disk.lock().unwrap().clone();
        assert_eq!(disk.registration.key.public_pkix_der, service.known());
        assert_eq!(signing_key(&manager), service.known());
        assert!(disk.pending.is_none());
    }

    const ROLE_TOKEN: &str = "RequestManagedInstanceRoleToken";
    const UPDATE: &str = "UpdateManagedInstancePublicKey";

    #[test]
    fn update_key_pair_rotates_and_later_calls_use_the_new_key() {
        let (disk, service) = registered(NOW);
        let manager = start(&disk, &service, 0);
        let old = service.known();
        FakeService::set(&service.ask_new_key, true);
        manager.credentials().unwrap();
        let new = service.known();
        assert_ne!(new, old);
        let calls = service.calls();
        assert_eq!(
            calls,
            [(ROLE_TOKEN, old.clone()), (UPDATE, old)],
            "update signed with the old key"
        );
        let stored = disk.lock().unwrap().clone();
        assert_eq!(stored.registration.key.public_pkix_der, new);
        assert!(stored.registration.key_created >= NOW && stored.pending.is_none());

        FakeService::set(&service.ask_new_key, false);
        manager.credentials().unwrap();
        assert_eq!(service.calls().last(), Some(&(ROLE_TOKEN, new)));
        assert_eq!(service.calls().len(), 3, "no rotation unless asked");
    }

    #[test]
    fn a_crash_after_any_step_ends_with_a_working_key() {
        // 1: pending stored; 2: the service took it; 3: registration saved, pending not cleared.
        for steps_done in 1..=3 {
            let (disk, service) = registered(NOW);
            let old = service.known();
            let manager = start(&disk, &service, 0);
            {
                let mut state = manager.state.lock().unwrap();
                let new_key = manager.begin(&mut state, NOW).unwrap();
                if steps_done >= 2 {
                    manager.announce(&state, &new_key).unwrap();
                }
                if steps_done >= 3 {
                    let mut saved = state.registration.clone();
                    saved.key = new_key;
                    disk.save(&saved).unwrap();
                }
            }
            drop(manager); // the crash
            assert!(disk.lock().unwrap().pending.is_some());
            assert_settled(&disk, &service);
            let expect_new = steps_done >= 2;
            assert_eq!(
                service.known() != old,
                expect_new,
                "after step {steps_done}"
            );
        }
    }

    #[test]
    fn settling_waits_for_the_service_and_keeps_the_pending_key_meanwhile() {
        let (disk, service) = registered(NOW);
        let manager = start(&disk, &service, 0);
        {
            let mut state = manager.state.lock().unwrap();
            let new_key = manager.begin(&mut state, NOW).unwrap();
            manager.announce(&state, &new_key).unwrap();
        }
        drop(manager);
        FakeService::set(&service.down, true);
        let manager = start(&disk, &service, 0);
        let err = manager.credentials().unwrap_err();
        assert!(err.to_string().contains("service down"), "{err}");
        assert!(disk.lock().unwrap().pending.is_some(), "pending key kept");
        FakeService::set(&service.down, false);
        manager.credentials().unwrap();
        assert_eq!(signing_key(&manager), service.known());
        assert!(disk.lock().unwrap().pending.is_none());
    }

    #[test]
    fn a_refused_update_keeps_the_old_key_and_is_retried_on_the_next_refresh() {
        let (disk, service) = registered(NOW);
        let old = service.known();
        let manager = start(&disk, &service, 0);
        FakeService::set(&service.ask_new_key, true);
        FakeService::set(&service.update, Update::Refuse);
        manager.credentials().unwrap();
        assert_eq!(
            (service.known(), signing_key(&manager)),
            (old.clone(), old.clone())
        );
        assert!(
            disk.lock().unwrap().pending.is_none(),
            "a refused key is dropped"
        );

        FakeService::set(&service.update, Update::Accept);
        manager.credentials().unwrap();
        assert_ne!(service.known(), old);
        assert_eq!(signing_key(&manager), service.known());
        assert_eq!(
            disk.lock().unwrap().registration.key.public_pkix_der,
            service.known()
        );
    }

    #[test]
    fn an_unclear_update_is_settled_by_the_next_request() {
        for (update, expect_new) in [
            (Update::ApplyAndLoseAnswer, true),
            (Update::Unavailable, false),
        ] {
            let (disk, service) = registered(NOW);
            let old = service.known();
            let manager = start(&disk, &service, 0);
            FakeService::set(&service.ask_new_key, true);
            FakeService::set(&service.update, update);
            manager.credentials().unwrap();
            assert_eq!(signing_key(&manager), old, "old key until settled");
            assert!(disk.lock().unwrap().pending.is_some());

            FakeService::set(&service.ask_new_key, false);
            manager.credentials().unwrap();
            let calls = service.calls();
            let last = calls.last().unwrap();
            assert_eq!((last.0, &last.1), (ROLE_TOKEN, &service.known()));
            assert_eq!(service.known() != old, expect_new);
            assert_eq!(signing_key(&manager), service.known());
            let stored = disk.lock().unwrap().clone();
            assert_eq!(stored.registration.key.public_pkix_der, service.known());
            assert!(stored.pending.is_none());
        }
    }

    #[test]
    fn key_auto_rotate_days_rotates_old_keys_only() {
        let day = SECONDS_PER_DAY;
        let now = unix_now();
        for (days, created, rotates) in [
            (0, now - 1000 * day, false),
            (30, now - 29 * day, false),
            (30, now - 30 * day, true),
        ] {
            let (disk, service) = registered(created);
            let old = service.known();
            start(&disk, &service, days).credentials().unwrap();
            assert_eq!(
                service.known() != old,
                rotates,
                "{days} days, key {} days old",
                (now - created) / day
            );
        }
    }

    #[test]
    fn a_rotation_that_cannot_start_keeps_the_old_key_and_tells_nobody() {
        let (disk, service) = registered(NOW);
        let old = service.known();
        FakeService::set(&service.ask_new_key, true);
        let mut manager = start(&disk, &service, 0);
        manager.generate = no_key;
        manager.credentials().unwrap();
        let manager = start(&disk, &service, 0);
        disk.lock().unwrap().fail_saves = true;
        manager.credentials().unwrap();
        assert!(service.calls().iter().all(|(op, _)| *op == ROLE_TOKEN));
        assert_eq!((service.known(), signing_key(&manager)), (old.clone(), old));
        assert!(disk.lock().unwrap().pending.is_none());
    }

    #[test]
    fn a_new_key_that_cannot_be_saved_is_used_now_and_found_again_after_a_restart() {
        let (disk, service) = registered(NOW);
        let manager = start(&disk, &service, 0);
        FakeService::set(&service.ask_new_key, true);
        // The pending key is stored, then saving the registration fails.
        {
            let mut state = manager.state.lock().unwrap();
            let new_key = manager.begin(&mut state, NOW).unwrap();
            manager.announce(&state, &new_key).unwrap();
            disk.lock().unwrap().fail_saves = true;
            manager.commit(&mut state, new_key, NOW);
        }
        assert_eq!(signing_key(&manager), service.known(), "switched in memory");
        assert!(
            disk.lock().unwrap().pending.is_some(),
            "the pending copy is the durable one"
        );
        drop(manager);
        disk.lock().unwrap().fail_saves = false;
        FakeService::set(&service.ask_new_key, false);
        assert_settled(&disk, &service);
    }
}
