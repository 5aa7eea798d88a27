//! `ssm-emulator`: a test double of the AWS services ssm-lite talks to — IMDS, `ssm`
//! (UpdateInstanceInformation), ec2messages, ssmmessages (MGS REST + WebSockets, see `mgs.rs`
//! and `session.rs`; smux for multiplexed port forwarding in `smux.rs`) and `kms` (Decrypt of
//! session data keys, see `kms.rs`), Parameter Store (GetParameters, see `parameters.rs`), SSM documents (GetDocument, see `documents.rs`), State Manager associations, their statuses and compliance (`associations.rs`), Inventory (PutInventory with content-hash checks, `inventory.rs`), STS GetCallerIdentity (`sts.rs`) — on one plain-HTTP port on 127.0.0.1. Point the agent's
//! `Mgs.Endpoint` at [`Emulator::url`] *with* its `http://` scheme (a bare host means https/wss).
//!
//! Every JSON 1.1 call is SigV4-verified with the emulator's own verifier against the credentials
//! it issued. Tests drive it in-process:
//!
//! ```no_run
//! use ssm_emulator::{Emulator, Options, aws_run_shell_script_payload};
//! use std::time::Duration;
//! let emu = Emulator::start(Options::default());
//! // … start the agent with AWS_EC2_METADATA_SERVICE_ENDPOINT=emu.url() …
//! let id = emu.send_command(&aws_run_shell_script_payload("cmd-1", &["echo hi"], 60));
//! let reply = emu.wait_final(&id, Duration::from_secs(30)).expect("final reply");
//! assert_eq!(reply.document_status(), "Success");
//! assert!(emu.signature_failures().is_empty());
//! ```

pub mod agentmessage;
pub mod associations;
pub mod attach;
mod cipher;
mod control;
pub mod demo;
pub mod demo_association;
mod distributor;
mod documents;
mod fault_windows;
mod faults;
mod files;
mod http;
mod imds;
mod inventory;
mod kms;
pub mod link;
mod logs;
mod mds;
mod mgs;
#[cfg(test)]
mod mgs_tests;
mod onprem;
mod parameters;
mod s3;
mod service;
mod session;
pub mod sigv4;
mod smux;
mod state;
mod sts;
#[cfg(test)]
mod tests;
mod util;
mod ws;

use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use agentmessage::AgentMessage;
pub use associations::{Association, S3OutputLocation};
pub use attach::LocalForwarder;
pub use distributor::Attachment;
pub use documents::GetDocumentCall;
pub use faults::{FaultTarget, FaultWindow};
pub use files::{FILES_CA_PEM, FileRequest, FileServer};
pub use kms::KmsDecrypt;
pub use link::LinkSpec;
pub use logs::LogsState;
pub use mgs::{AckPolicy, JobAck, MgsRecord, MgsState, TaskComplete};
pub use onprem::{
    Activation, KeyRotation, MIN_PUBLIC_KEY_LEN, Registration, RoleTokenRequest, RsaCheck,
};
pub use parameters::{GetParametersCall, ParameterType};
pub use s3::{S3Call, S3Object};
pub use session::{
    PortParameters, PortStream, Session, SessionSpec, SessionStats, flags as port_flags,
};
pub use smux::{SmuxStats, SmuxStream};
pub use state::{FailRecord, HealthPing, Reply, RequestRecord, SigCheck, State};
pub use sts::CallerIdentityCall;
pub use util::uuid_v4;
pub use ws::{Incoming, WsConn};

/// `X-Amz-Target` values, for [`Emulator::count`].
pub mod targets {
    pub const GET_MESSAGES: &str = "EC2WindowsMessageDeliveryService.GetMessages";
    pub const ACKNOWLEDGE_MESSAGE: &str = "EC2WindowsMessageDeliveryService.AcknowledgeMessage";
    pub const SEND_REPLY: &str = "EC2WindowsMessageDeliveryService.SendReply";
    pub const FAIL_MESSAGE: &str = "EC2WindowsMessageDeliveryService.FailMessage";
    pub const DELETE_MESSAGE: &str = "EC2WindowsMessageDeliveryService.DeleteMessage";
    pub const UPDATE_INSTANCE_INFORMATION: &str = "AmazonSSM.UpdateInstanceInformation";
    pub const KMS_DECRYPT: &str = "TrentService.Decrypt";
    pub const REGISTER_MANAGED_INSTANCE: &str = "AmazonSSM.RegisterManagedInstance";
    pub const REQUEST_MANAGED_INSTANCE_ROLE_TOKEN: &str =
        "AmazonSSM.RequestManagedInstanceRoleToken";
    pub const UPDATE_MANAGED_INSTANCE_PUBLIC_KEY: &str = "AmazonSSM.UpdateManagedInstancePublicKey";
    pub const GET_PARAMETERS: &str = "AmazonSSM.GetParameters";
    pub const GET_DOCUMENT: &str = "AmazonSSM.GetDocument";
    pub const LIST_INSTANCE_ASSOCIATIONS: &str = "AmazonSSM.ListInstanceAssociations";
    pub const UPDATE_INSTANCE_ASSOCIATION_STATUS: &str =
        "AmazonSSM.UpdateInstanceAssociationStatus";
    pub const PUT_COMPLIANCE_ITEMS: &str = "AmazonSSM.PutComplianceItems";
    pub const PUT_INVENTORY: &str = "AmazonSSM.PutInventory";
}

/// Long-lived keys accepted in addition to IMDS-issued ones (a custom identity's credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

/// How the emulator behaves; `Options::default()` suits most tests.
#[derive(Debug, Clone)]
pub struct Options {
    /// 0 = an ephemeral port.
    pub port: u16,
    pub region: String,
    /// Replaced by the `mi-` id of each successful `RegisterManagedInstance`.
    pub instance_id: String,
    pub instance_type: String,
    /// `None` = the region followed by `a`.
    pub availability_zone: Option<String>,
    pub availability_zone_id: String,
    pub account_id: String,
    /// Instance-profile role served by IMDS; `None` = no role attached (404).
    pub role_name: Option<String>,
    /// How long an empty `GetMessages` is held before answering with no messages.
    pub poll_hold: Duration,
    /// Overrides the request's `VisibilityTimeoutInSeconds`.
    pub visibility_timeout: Option<Duration>,
    pub max_messages_per_poll: usize,
    /// Lifetime of each set of IMDS role credentials.
    pub credential_lifetime: Duration,
    /// Serve IMDS GETs without a session token.
    pub imds_v1_allowed: bool,
    pub static_credentials: Vec<StaticKey>,
    /// Which APIs injected faults apply to.
    pub fault_target: FaultTarget,
    /// Hybrid activations `RegisterManagedInstance` accepts; more with
    /// [`Emulator::create_activation`]. Default: [`Activation::demo`].
    pub activations: Vec<Activation>,
    /// Lifetime of the credentials `RequestManagedInstanceRoleToken` hands out.
    pub role_token_lifetime: Duration,
    /// The VPC CIDR blocks (IPv4 and IPv6) IMDS lists for the instance's one network interface.
    pub vpc_cidr_blocks: Vec<String>,
    /// The services' clock minus the real one, in seconds: +3600 runs them an hour ahead of the
    /// agent, whose clock is then wrong by an hour. Signatures are judged, credentials dated and
    /// every answer's `Date` written by the shifted clock.
    pub clock_offset_secs: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 0,
            region: "us-east-1".into(),
            instance_id: "i-0123456789abcdef0".into(),
            instance_type: "t3.micro".into(),
            availability_zone: None,
            availability_zone_id: "use1-az1".into(),
            account_id: "123456789012".into(),
            role_name: Some("ssm-lite-emulator-role".into()),
            poll_hold: Duration::from_secs(15),
            visibility_timeout: None,
            max_messages_per_poll: 10,
            credential_lifetime: Duration::from_secs(6 * 3600),
            imds_v1_allowed: false,
            static_credentials: Vec::new(),
            fault_target: FaultTarget::Any,
            activations: vec![Activation::demo()],
            role_token_lifetime: Duration::from_secs(3600),
            vpc_cidr_blocks: vec!["172.31.0.0/16".into()],
            clock_offset_secs: 0,
        }
    }
}

impl Options {
    pub fn availability_zone(&self) -> String {
        self.availability_zone
            .clone()
            .unwrap_or_else(|| format!("{}a", self.region))
    }
}

/// A running emulator. Stops (and unblocks held polls) on [`Emulator::stop`] or drop.
pub struct Emulator {
    shared: Arc<state::Shared>,
    server: Mutex<Option<http::Server>>,
    url: String,
    files: FileServer,
}

impl Emulator {
    /// Starts the emulator; panics if 127.0.0.1:`options.port` cannot be bound.
    pub fn start(options: Options) -> Emulator {
        let port = options.port;
        Emulator::try_start(options)
            .unwrap_or_else(|e| panic!("ssm-emulator could not listen on 127.0.0.1:{port}: {e}"))
    }

    pub fn try_start(options: Options) -> io::Result<Emulator> {
        let shared = Arc::new(state::Shared::new(options.clone()));
        let handler_state = shared.clone();
        let handler: Arc<http::Handler> = Arc::new(move |req| service::handle(&handler_state, req));
        let server = http::Server::start(options.port, handler)?;
        let url = format!("http://{}", server.addr());
        Ok(Emulator {
            shared,
            server: Mutex::new(Some(server)),
            url,
            files: FileServer::start()?,
        })
    }

    /// `http://127.0.0.1:PORT`: the IMDS endpoint and every service endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops serving, closes open connections and answers held polls. Idempotent.
    pub fn stop(&self) {
        self.shared.update(|st| st.stopping = true);
        let server = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut s) = server {
            s.stop();
        }
        self.files.stop();
    }

    /// The HTTPS file server and GitHub double (trust [`FILES_CA_PEM`] to reach it).
    pub fn files(&self) -> &FileServer {
        &self.files
    }

    /// Serves `bytes` at `<files().url()><path>`.
    pub fn put_file(&self, path: &str, bytes: &[u8]) {
        self.files.put(path, bytes);
    }

    /// Enqueues a send-command message; returns its MessageId `aws.ssm.<CommandId>.<instance>`
    /// (CommandId from the payload, or a fresh UUID).
    pub fn send_command(&self, payload: &Value) -> String {
        mds::send_command(&self.shared, payload)
    }

    /// Enqueues a cancel-command message for `target_message_id`; returns the cancel's MessageId.
    pub fn send_cancel(&self, target_message_id: &str) -> String {
        mds::send_cancel(&self.shared, target_message_id)
    }

    /// Enqueues a message exactly as given (malformed payloads, odd topics, replays).
    pub fn enqueue_raw(&self, topic: &str, payload: &str, message_id: &str) {
        mds::enqueue_raw(&self.shared, topic, payload, message_id)
    }

    /// Reads anything from the state in one consistent view.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        self.shared.read(f)
    }

    /// Waits until `ready` holds; false on timeout. `ready` is re-checked on every change.
    pub fn wait_until(&self, timeout: Duration, mut ready: impl FnMut(&State) -> bool) -> bool {
        self.shared
            .wait_for(timeout, |st| ready(st).then_some(()))
            .is_some()
    }

    /// Replies for `message_id` in arrival order (first arrival of each ReplyId).
    pub fn replies(&self, message_id: &str) -> Vec<Reply> {
        self.read(|st| st.replies(message_id).to_vec())
    }

    /// The first reply with a terminal documentStatus.
    pub fn final_reply(&self, message_id: &str) -> Option<Reply> {
        self.read(|st| st.final_reply(message_id).cloned())
    }

    pub fn wait_final(&self, message_id: &str, timeout: Duration) -> Option<Reply> {
        self.shared
            .wait_for(timeout, |st| st.final_reply(message_id).cloned())
    }

    /// Waits until at least `n` replies arrived for `message_id`; returns all of them.
    pub fn wait_replies(
        &self,
        message_id: &str,
        n: usize,
        timeout: Duration,
    ) -> Option<Vec<Reply>> {
        self.shared.wait_for(timeout, |st| {
            let r = st.replies(message_id);
            (r.len() >= n).then(|| r.to_vec())
        })
    }

    /// `ack`, `reply` and `fail` for `message_id`, in the order they reached the service.
    pub fn mds_events(&self, message_id: &str) -> Vec<&'static str> {
        self.read(|st| st.mds_events(message_id))
    }

    pub fn acks(&self) -> Vec<String> {
        self.read(|st| st.acks().to_vec())
    }

    pub fn fails(&self) -> Vec<FailRecord> {
        self.read(|st| st.fails().to_vec())
    }

    pub fn duplicate_replies(&self) -> Vec<String> {
        self.read(|st| st.duplicate_replies().to_vec())
    }

    /// When `message_id` was delivered by `GetMessages`, one entry per delivery.
    pub fn deliveries(&self, message_id: &str) -> Vec<Instant> {
        self.read(|st| st.deliveries(message_id).to_vec())
    }

    /// `TrentService.Decrypt` calls that reached the operation (signature verified, no injected
    /// fault), in order, with what was answered.
    pub fn kms_decrypts(&self) -> Vec<KmsDecrypt> {
        self.read(|st| st.kms_decrypts().to_vec())
    }

    pub fn health_pings(&self) -> Vec<HealthPing> {
        self.read(|st| st.health_pings().to_vec())
    }

    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.read(|st| st.requests().to_vec())
    }

    pub fn signature_failures(&self) -> Vec<RequestRecord> {
        self.read(|st| st.signature_failures().into_iter().cloned().collect())
    }

    /// Requests received for `target` (an `X-Amz-Target`, see [`targets`], or an IMDS path).
    pub fn count(&self, target: &str) -> usize {
        self.read(|st| st.count(target))
    }

    /// A JSON summary of replies, acks, fails, health pings and signature failures.
    pub fn snapshot(&self) -> Value {
        let mut snap = self.read(control::snapshot);
        snap["url"] = json!(self.url);
        snap
    }

    /// The next `n` signed calls are answered `status` with `{"__type": error_type}`.
    pub fn fail_next(&self, n: u32, status: u16, error_type: &str) {
        self.shared
            .update(|st| st.faults.fail_next(n, status, error_type));
    }

    /// Every signed call during the next `d` is answered `status` / `error_type`.
    pub fn fail_for(&self, d: Duration, status: u16, error_type: &str) {
        self.shared
            .update(|st| st.faults.fail_for(d, status, error_type));
    }

    /// The next `n` signed calls get their connection closed without an answer.
    pub fn drop_next(&self, n: u32) {
        self.shared.update(|st| st.faults.drop_next(n));
    }

    /// The next `n` signed calls are answered only after `d`.
    pub fn delay_next(&self, n: u32, d: Duration) {
        self.shared.update(|st| st.faults.delay_next(n, d));
    }

    /// A new random hybrid activation that `RegisterManagedInstance` accepts: (id, code).
    pub fn create_activation(&self) -> (String, String) {
        let a = self.shared.update(|st| st.onprem.create_activation());
        (a.id, a.code)
    }

    /// Role tokens issued from now on live `d` (e.g. 60 s to exercise refreshes).
    /// Moves the services' clock to `secs` from the real time (see [`Options::clock_offset_secs`]).
    pub fn set_clock_offset(&self, secs: i64) {
        self.shared.update(|st| st.options.clock_offset_secs = secs);
    }

    pub fn set_role_token_lifetime(&self, d: Duration) {
        self.shared.update(|st| st.options.role_token_lifetime = d);
    }

    /// Role-token answers for `instance_id` say `UpdateKeyPair: true` until it rotates its key
    /// with `UpdateManagedInstancePublicKey`. Panics if no such managed instance is registered.
    pub fn request_key_rotation(&self, instance_id: &str) {
        let known = self
            .shared
            .update(|st| st.onprem.request_key_rotation(instance_id));
        assert!(known, "no managed instance {instance_id} is registered");
    }

    /// Every `RegisterManagedInstance` with a JSON body, failed ones included.
    pub fn registrations(&self) -> Vec<Registration> {
        self.read(|st| st.registrations().to_vec())
    }

    /// Every `RequestManagedInstanceRoleToken`, with its signature check and answer.
    pub fn role_token_requests(&self) -> Vec<RoleTokenRequest> {
        self.read(|st| st.role_token_requests().to_vec())
    }

    /// Every RSA signature check (role tokens and key updates), in order.
    pub fn rsa_checks(&self) -> Vec<RsaCheck> {
        self.read(|st| st.rsa_checks().to_vec())
    }

    /// RSA signature checks that failed; tests of a well-behaved agent expect none.
    pub fn rsa_signature_failures(&self) -> Vec<RsaCheck> {
        self.read(|st| {
            st.rsa_checks()
                .iter()
                .filter(|c| !c.ok())
                .cloned()
                .collect()
        })
    }

    pub fn key_rotations(&self) -> Vec<KeyRotation> {
        self.read(|st| st.key_rotations().to_vec())
    }

    /// The public key (base64 SubjectPublicKeyInfo DER) `instance_id` is registered with now.
    pub fn current_public_key(&self, instance_id: &str) -> Option<String> {
        self.read(|st| st.current_public_key(instance_id).map(str::to_string))
    }

    /// Stores a new version of Parameter Store parameter `name` (as `PutParameter` with
    /// `Overwrite` does) for `GetParameters`; returns its version number, 1 for a new name.
    pub fn put_parameter(&self, name: &str, kind: ParameterType, value: &str) -> i64 {
        self.shared.update(|st| {
            let now = st.now();
            st.parameters.put(name, kind, value, now)
        })
    }

    /// `AmazonSSM.GetParameters` calls that reached the operation, in order.
    pub fn get_parameters_calls(&self) -> Vec<GetParametersCall> {
        self.read(|st| st.get_parameters_calls().to_vec())
    }

    /// Creates (or empties) S3 bucket `name` in `region`.
    pub fn create_bucket(&self, name: &str, region: &str) {
        self.shared.update(|st| st.s3.create_bucket(name, region));
    }

    /// Gives bucket `name` a default encryption rule (`AES256` or `aws:kms`).
    pub fn set_bucket_encryption(&self, name: &str, algorithm: &str) {
        self.shared
            .update(|st| st.s3.set_encryption(name, algorithm));
    }

    /// Stores `body` at `s3://bucket/key` (the bucket made with [`Emulator::create_bucket`]).
    pub fn put_s3_object(&self, bucket: &str, key: &str, body: &[u8]) {
        self.shared.update(|st| st.s3.put_object(bucket, key, body));
    }

    /// The bytes stored at `s3://bucket/key`.
    pub fn s3_object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        self.s3_object_with_headers(bucket, key).map(|o| o.body)
    }

    /// The object at `s3://bucket/key` with the headers it was uploaded with.
    pub fn s3_object_with_headers(&self, bucket: &str, key: &str) -> Option<S3Object> {
        self.read(|st| st.s3.object(bucket, key).cloned())
    }

    /// S3 requests whose signature held, in order.
    pub fn s3_calls(&self) -> Vec<S3Call> {
        self.read(|st| st.s3.calls.clone())
    }

    /// Multipart uploads neither completed nor aborted.
    pub fn s3_open_uploads(&self) -> usize {
        self.read(|st| st.s3.open_uploads())
    }

    /// Adds a version of SSM document `name` (`format`: `JSON`, `YAML` or `TEXT`) for
    /// `GetDocument`; returns its version number. The default version stays the first.
    pub fn put_document(&self, name: &str, format: &str, content: &str) -> usize {
        self.shared.update(|st| {
            let now = st.now();
            st.documents.put(name, format, content, now)
        })
    }

    /// Adds version `version_name` of Distributor package document `name`, whose `Content` is
    /// `manifest` and whose attachments are `attachments`; returns its document version.
    pub fn put_package(
        &self,
        name: &str,
        version_name: &str,
        manifest: &str,
        attachments: Vec<Attachment>,
    ) -> usize {
        self.shared.update(|st| {
            st.distributor
                .put(name, version_name, manifest, attachments)
        })
    }

    /// `PutConfigurePackageResult` requests, in order.
    pub fn package_results(&self) -> Vec<Value> {
        self.read(|st| st.distributor.results.clone())
    }

    /// `AmazonSSM.GetDocument` calls that reached the operation, in order.
    pub fn get_document_calls(&self) -> Vec<GetDocumentCall> {
        self.read(|st| st.documents.calls.clone())
    }

    /// Adds State Manager association `a` for `ListInstanceAssociations`, or replaces the one
    /// with its id. Its document comes from [`Emulator::put_document`].
    pub fn add_association(&self, a: Association) {
        self.shared.update(|st| st.associations.add(a));
    }

    /// Removes association `id` (later status updates for it are `AssociationDoesNotExist`);
    /// false when there was none.
    pub fn remove_association(&self, id: &str) -> bool {
        self.shared.update(|st| st.associations.remove(id))
    }

    /// Association `id` as the service has it now (`DetailedStatus` and `LastExecutionDate`
    /// move with status updates).
    pub fn association(&self, id: &str) -> Option<Association> {
        self.read(|st| st.associations.get(id).cloned())
    }

    /// Caps every `ListInstanceAssociations` page at `n` associations (below `MaxResults`), so
    /// tests exercise `NextToken`; `None` lifts the cap.
    pub fn set_association_page_size(&self, n: Option<usize>) {
        self.shared.update(|st| st.associations.page_size = n);
    }

    /// `ListInstanceAssociations` bodies that reached the operation, with when they arrived.
    pub fn list_associations_calls(&self) -> Vec<(Instant, Value)> {
        self.read(|st| st.list_associations_calls().to_vec())
    }

    /// The `ExecutionResult`s `UpdateInstanceAssociationStatus` accepted for association `id`,
    /// in order.
    pub fn association_statuses(&self, id: &str) -> Vec<Value> {
        self.read(|st| st.association_statuses(id).to_vec())
    }

    /// Accepted `PutComplianceItems` bodies, in order.
    pub fn compliance_puts(&self) -> Vec<Value> {
        self.read(|st| st.compliance_puts().to_vec())
    }

    /// `PutInventory` bodies that reached the operation, in order, refused ones included.
    pub fn inventory_puts(&self) -> Vec<Value> {
        self.read(|st| st.inventory_puts().to_vec())
    }

    /// The last inventory item of type `type_name` stored with its `Content`.
    pub fn inventory_of(&self, type_name: &str) -> Option<Value> {
        self.read(|st| st.inventory_of(type_name).cloned())
    }

    /// Forgets inventory type `type_name`, so the next hash-only put of it is refused with
    /// `ItemContentMismatchException`; true if it was stored.
    pub fn forget_inventory(&self, type_name: &str) -> bool {
        self.shared.update(|st| st.inventory.forget(type_name))
    }

    /// Every STS `GetCallerIdentity`, in order.
    pub fn caller_identity_calls(&self) -> Vec<CallerIdentityCall> {
        self.read(|st| st.sts.clone())
    }

    /// The messages of CloudWatch Logs stream `stream` in `group`, in order; `None` when the
    /// stream was never created.
    pub fn log_events(&self, group: &str, stream: &str) -> Option<Vec<String>> {
        self.read(|st| st.logs.messages(group, stream))
    }

    /// The accepted PutLogEvents calls for a stream, and the streams of a group.
    pub fn log_puts(&self, group: &str, stream: &str) -> usize {
        self.read(|st| st.logs.puts(group, stream))
    }

    /// Creates CloudWatch Logs group `group`, encrypted with `kms_key` when one is given.
    pub fn create_log_group(&self, group: &str, kms_key: Option<&str>) {
        self.shared
            .update(|st| st.logs.create_group_with_key(group, kms_key));
    }

    pub fn log_streams(&self, group: &str) -> Vec<String> {
        self.read(|st| st.logs.streams(group))
    }

    /// Refuses every PutLogEvents with `(status, error type)`, or stops refusing (`None`).
    pub fn refuse_put_log_events(&self, refusal: Option<(u16, &str)>) {
        let refusal = refusal.map(|(status, code)| (status, code.to_owned()));
        self.shared.update(|st| st.logs.refuse_puts(refusal));
    }

    /// Restricts injected faults to one API family (or lifts the restriction).
    pub fn set_fault_target(&self, target: FaultTarget) {
        self.shared.update(|st| st.faults.target = target);
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `executionTimeout` pattern of the real AWS-RunShellScript document (1–172800 seconds).
pub const EXECUTION_TIMEOUT_PATTERN: &str =
    "([1-9][0-9]{0,4})|(1[0-6][0-9]{4})|(17[0-1][0-9]{3})|(172[0-7][0-9]{2})|(172800)";

/// A send-command payload for AWS-RunShellScript (schema 1.2, the real parameter block) running
/// `commands` with `executionTimeout` = `timeout_seconds`. Parameter values are shaped as the
/// service sends them: String parameters as strings, StringList ones as arrays.
pub fn aws_run_shell_script_payload(
    command_id: &str,
    commands: &[&str],
    timeout_seconds: u64,
) -> Value {
    let document = json!({
        "schemaVersion": "1.2",
        "description": "Runs shell commands or a shell script.",
        "parameters": {
            "commands": {
                "type": "StringList",
                "description": "(Required) The commands or script to run.",
                "minItems": 1,
                "displayType": "textarea"
            },
            "workingDirectory": {
                "type": "String",
                "default": "",
                "description": "(Optional) Directory to run the commands in.",
                "maxChars": 4096
            },
            "executionTimeout": {
                "type": "String",
                "default": "3600",
                "description": "(Optional) Seconds before the commands are stopped and reported \
                                as failed; default 3600, at most 172800.",
                "allowedPattern": EXECUTION_TIMEOUT_PATTERN
            }
        },
        "runtimeConfig": {
            "aws:runShellScript": {
                "properties": [{
                    "id": "0.aws:runShellScript",
                    "runCommand": "{{ commands }}",
                    "workingDirectory": "{{ workingDirectory }}",
                    "timeoutSeconds": "{{ executionTimeout }}"
                }]
            }
        }
    });
    json!({
        "Parameters": {
            "commands": commands,
            "workingDirectory": "",
            "executionTimeout": timeout_seconds.to_string()
        },
        "DocumentContent": document,
        "CommandId": command_id,
        "DocumentName": "AWS-RunShellScript",
        "OutputS3KeyPrefix": "",
        "OutputS3BucketName": "",
        "CloudWatchLogGroupName": "",
        "CloudWatchOutputEnabled": "false"
    })
}
