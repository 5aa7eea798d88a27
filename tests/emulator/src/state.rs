//! Everything the emulator remembers, behind one mutex with one condvar that is notified on every
//! change, so tests (and held long polls) can wait for any condition without sleeping.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::Options;
use crate::associations::AssociationState;
use crate::documents::DocumentState;
use crate::faults::Faults;
use crate::imds::ImdsState;
use crate::inventory::InventoryState;
use crate::kms::{KmsDecrypt, KmsState};
use crate::mds::MdsState;
use crate::mgs::MgsState;
use crate::onprem::OnPremState;
use crate::parameters::{GetParametersCall, ParameterState};
use crate::sigv4::KeyInfo;

/// One `SendReply` as stored (first arrival of its ReplyId).
#[derive(Debug, Clone)]
pub struct Reply {
    pub message_id: String,
    pub reply_id: String,
    /// The `Payload` string parsed as JSON.
    pub payload: Value,
    pub arrived: Instant,
    pub arrived_at: SystemTime,
}

/// Document statuses after which the agent sends no more replies for a command.
fn is_terminal(status: &str) -> bool {
    !matches!(status, "" | "InProgress" | "Pending" | "NotStarted")
}

impl Reply {
    pub fn document_status(&self) -> &str {
        self.payload["documentStatus"].as_str().unwrap_or("")
    }

    pub fn is_final(&self) -> bool {
        is_terminal(self.document_status())
    }

    /// The `standardOutput` of every plugin in `runtimeStatus`, concatenated in key order.
    pub fn standard_output(&self) -> String {
        let Some(plugins) = self.payload["runtimeStatus"].as_object() else {
            return String::new();
        };
        plugins
            .values()
            .filter_map(|p| p["standardOutput"].as_str())
            .collect()
    }
}

/// How a request's signature fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigCheck {
    /// Not a signed API (IMDS, control interface, unknown target).
    NotChecked,
    Ok,
    Failed(String),
}

impl SigCheck {
    /// Why verification failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        match self {
            SigCheck::Failed(reason) => Some(reason),
            _ => None,
        }
    }
}

/// One entry of the request log.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// `X-Amz-Target` for JSON 1.1 calls, otherwise the path.
    pub target: String,
    /// Status answered; 0 when the connection was closed without an answer.
    pub status: u16,
    pub signature: SigCheck,
    /// Description of an injected fault, if one was applied.
    pub fault: Option<String>,
}

/// One `UpdateInstanceInformation` call.
#[derive(Debug, Clone)]
pub struct HealthPing {
    pub arrived: Instant,
    pub request: Value,
}

/// One `FailMessage` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailRecord {
    pub message_id: String,
    pub failure_type: String,
}

/// The emulator's whole state. Tests read it through [`crate::Emulator::wait_until`] closures.
pub struct State {
    pub(crate) options: Options,
    pub(crate) imds: ImdsState,
    pub(crate) mds: MdsState,
    pub(crate) mgs: MgsState,
    pub(crate) kms: KmsState,
    pub(crate) onprem: OnPremState,
    pub(crate) parameters: ParameterState,
    pub(crate) s3: crate::s3::S3State,
    pub(crate) documents: DocumentState,
    pub(crate) distributor: crate::distributor::DistributorState,
    pub(crate) associations: AssociationState,
    pub(crate) inventory: InventoryState,
    pub(crate) sts: Vec<crate::sts::CallerIdentityCall>,
    pub(crate) logs: crate::logs::LogsState,
    pub(crate) faults: Faults,
    pub(crate) health: Vec<HealthPing>,
    pub(crate) log: Vec<RequestRecord>,
    pub(crate) stopping: bool,
    version: u64,
}

impl State {
    /// The ssmmessages side: control channel, jobs, sessions.
    pub fn mgs(&self) -> &crate::mgs::MgsState {
        &self.mgs
    }

    /// CloudWatch Logs: groups, streams, events.
    pub fn logs(&self) -> &crate::logs::LogsState {
        &self.logs
    }

    pub fn replies(&self, message_id: &str) -> &[Reply] {
        self.mds
            .replies
            .get(message_id)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn final_reply(&self, message_id: &str) -> Option<&Reply> {
        self.replies(message_id).iter().find(|r| r.is_final())
    }

    /// `ack`, `reply` (first arrival of each ReplyId) and `fail` for `message_id`, in arrival order.
    pub fn mds_events(&self, message_id: &str) -> Vec<&'static str> {
        let of = |(id, e): &(String, &'static str)| (id == message_id).then_some(*e);
        self.mds.events.iter().filter_map(of).collect()
    }

    /// Message ids acknowledged, in order.
    pub fn acks(&self) -> &[String] {
        &self.mds.acks
    }

    pub fn fails(&self) -> &[FailRecord] {
        &self.mds.fails
    }

    /// Message ids deleted with `DeleteMessage`, in order.
    pub fn deletes(&self) -> &[String] {
        &self.mds.deletes
    }

    /// ReplyIds that arrived again after their first arrival.
    pub fn duplicate_replies(&self) -> &[String] {
        &self.mds.duplicate_replies
    }

    /// When `message_id` was handed out by `GetMessages`, one entry per delivery.
    pub fn deliveries(&self, message_id: &str) -> &[Instant] {
        self.mds
            .deliveries
            .get(message_id)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// `GetMessages` calls being held open right now (the agent is polling).
    pub fn held_polls(&self) -> usize {
        self.mds.held_polls
    }

    /// `TrentService.Decrypt` calls that reached the operation, in order.
    pub fn kms_decrypts(&self) -> &[KmsDecrypt] {
        &self.kms.decrypts
    }

    /// `AmazonSSM.GetParameters` calls that reached the operation, in order.
    pub fn get_parameters_calls(&self) -> &[GetParametersCall] {
        &self.parameters.calls
    }

    pub fn health_pings(&self) -> &[HealthPing] {
        &self.health
    }

    pub fn requests(&self) -> &[RequestRecord] {
        &self.log
    }

    /// Requests whose target (X-Amz-Target, or path for non-JSON calls) is `target`.
    pub fn count(&self, target: &str) -> usize {
        self.log.iter().filter(|r| r.target == target).count()
    }

    pub fn signature_failures(&self) -> Vec<&RequestRecord> {
        self.log
            .iter()
            .filter(|r| matches!(r.signature, SigCheck::Failed(_)))
            .collect()
    }

    /// Credentials handed out by IMDS so far.
    pub fn credentials_issued(&self) -> usize {
        self.imds.keys.len()
    }

    /// What was issued for `access_key`: IMDS role credentials, hybrid-activation role tokens or
    /// configured static keys.
    pub(crate) fn key_info(&self, access_key: &str) -> Option<KeyInfo> {
        self.imds
            .key_info(access_key)
            .or_else(|| self.onprem.key_info(access_key))
            .or_else(|| {
                let k = self
                    .options
                    .static_credentials
                    .iter()
                    .find(|k| k.access_key_id == access_key)?;
                Some(KeyInfo {
                    secret: k.secret_access_key.clone(),
                    session_token: k.session_token.clone(),
                    expires: None,
                })
            })
    }

    /// The services' time: the real time moved by [`Options::clock_offset_secs`] and by an open
    /// [`crate::faults::FaultWindow::ClockJump`].
    pub fn now(&self) -> SystemTime {
        let secs = self.options.clock_offset_secs;
        let by = Duration::from_secs(secs.unsigned_abs());
        let now = SystemTime::now() + self.faults.clock_offset(std::time::Instant::now());
        if secs >= 0 { now + by } else { now - by }
    }

    /// Increases on every change; lets a watcher notice that something happened.
    pub fn version(&self) -> u64 {
        self.version
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    pub fn new(options: Options) -> Shared {
        let state = State {
            imds: ImdsState::default(),
            mds: MdsState::default(),
            mgs: MgsState::default(),
            kms: KmsState::default(),
            onprem: OnPremState::new(options.activations.clone()),
            parameters: ParameterState::default(),
            s3: Default::default(),
            documents: DocumentState::default(),
            distributor: Default::default(),
            associations: AssociationState::default(),
            inventory: InventoryState::default(),
            sts: Vec::new(),
            logs: Default::default(),
            faults: Faults::new(options.fault_target),
            options,
            health: Vec::new(),
            log: Vec::new(),
            stopping: false,
            version: 0,
        };
        Shared {
            state: Mutex::new(state),
            changed: Condvar::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    /// Changes the state and wakes every waiter.
    pub fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut st = self.lock();
        let r = f(&mut st);
        self.touch(&mut st);
        r
    }

    /// Records that `st` changed (for callers already holding the lock) and wakes waiters.
    pub fn touch(&self, st: &mut State) {
        st.version += 1;
        self.changed.notify_all();
    }

    /// Waits on the condvar until `deadline` at the latest; returns the re-acquired guard.
    pub fn wait<'a>(&self, st: MutexGuard<'a, State>, deadline: Instant) -> MutexGuard<'a, State> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.changed
            .wait_timeout(st, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    /// Waits until `f` yields a value, up to `timeout`.
    pub fn wait_for<R>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&State) -> Option<R>,
    ) -> Option<R> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if let Some(r) = f(&st) {
                return Some(r);
            }
            if Instant::now() >= deadline {
                return None;
            }
            st = self.wait(st, deadline);
        }
    }

    /// Sleeps for `d` unless the emulator stops first.
    pub fn sleep(&self, d: Duration) {
        self.wait_for(d, |st| st.stopping.then_some(()));
    }
}
