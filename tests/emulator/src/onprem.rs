//! Hybrid activation, the on-premises side of `ssm` (docs/protocol.md §5.4, §5.5): activations, the
//! unsigned `RegisterManagedInstance`, and the two private calls a managed instance signs with its
//! own RSA key — `RequestManagedInstanceRoleToken` (temporary credentials that every other API of
//! the emulator accepts) and `UpdateManagedInstancePublicKey` (key rotation). Every RSA signature
//! is verified against the key the instance has registered *now* and recorded, so tests can
//! assert that none failed.
//!
//! The emulator serves one instance: a successful registration makes its `mi-` id the
//! instance that commands are addressed to (`Options::instance_id`).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::cipher::unb64;
use crate::http::{Outcome, Request, Response};
use crate::imds::IssuedKey;
use crate::service::required;
use crate::sigv4::{self, KeyInfo, SigError};
use crate::state::{Shared, SigCheck, State};
use crate::util::{fill_random, hex, random_string, uuid_v4};

pub(crate) const REGISTER: &str = "RegisterManagedInstance";
pub(crate) const ROLE_TOKEN: &str = "RequestManagedInstanceRoleToken";
pub(crate) const UPDATE_KEY: &str = "UpdateManagedInstancePublicKey";
/// Operations signed with the instance's RSA key instead of HMAC credentials.
pub(crate) const RSA_SIGNED: [&str; 2] = [ROLE_TOKEN, UPDATE_KEY];
/// The header with which EC2 Default Host Management calls sign their `Authorization` value.
pub(crate) const ASYMMETRIC_HEADER: &str = "SSM-AsymmetricKeyAuthorization";
/// The service's minimum `PublicKey` length: base64 of a 2048-bit key's SubjectPublicKeyInfo.
pub const MIN_PUBLIC_KEY_LEN: usize = 392;
const KEY_TYPE: &str = "Rsa";
/// What ring's RSA-PSS verification accepts.
const MODULUS_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;
const CODE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A hybrid activation: what `ssm-lite register --id … --code …` is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    /// A UUID, as the service hands out.
    pub id: String,
    /// 20 letters and digits.
    pub code: String,
}

impl Activation {
    /// The activation every emulator accepts unless its [`crate::Options`] say otherwise (demos,
    /// `ssm-emulator serve`).
    pub const DEMO_ID: &str = "9e1f5a5c-7a3b-4d2e-8f60-0123456789ab";
    pub const DEMO_CODE: &str = "EmulatorDemoCode2024";

    pub fn demo() -> Activation {
        Activation {
            id: Activation::DEMO_ID.into(),
            code: Activation::DEMO_CODE.into(),
        }
    }

    pub fn random() -> Activation {
        Activation {
            id: uuid_v4(),
            code: random_string(20, CODE_CHARS),
        }
    }
}

/// One `RegisterManagedInstance` call with a JSON body (failed attempts included).
#[derive(Debug, Clone)]
pub struct Registration {
    pub at: Instant,
    pub activation_id: String,
    pub fingerprint: String,
    /// `PublicKey` as sent (base64 SubjectPublicKeyInfo DER).
    pub public_key: String,
    /// `IamRole` of a signed (`-role`) registration.
    pub iam_role: Option<String>,
    /// `Tags` as sent, when they were.
    pub tags: Option<Value>,
    /// The `mi-…` id answered, when the registration succeeded.
    pub instance_id: Option<String>,
    /// Error type and message answered, when it failed.
    pub error: Option<(String, String)>,
}

/// One RSA signature check of a private call.
#[derive(Debug, Clone)]
pub struct RsaCheck {
    pub at: Instant,
    /// `RequestManagedInstanceRoleToken` or `UpdateManagedInstancePublicKey`.
    pub operation: String,
    /// The access key of the Credential (a managed instance id); empty when none could be read.
    pub instance_id: String,
    /// The registered public key it was checked against; `None` for an unknown instance.
    pub public_key: Option<String>,
    /// [`SigCheck::Ok`] or [`SigCheck::Failed`] with the reason.
    pub result: SigCheck,
}

impl RsaCheck {
    pub fn ok(&self) -> bool {
        self.result == SigCheck::Ok
    }
}

/// One `RequestManagedInstanceRoleToken` call, whatever became of it.
#[derive(Debug, Clone)]
pub struct RoleTokenRequest {
    pub at: Instant,
    /// The access key of the Credential (a managed instance id); empty when none could be read.
    pub instance_id: String,
    /// `Fingerprint` from the body, if it was there.
    pub fingerprint: Option<String>,
    /// The RSA signature check.
    pub signature: SigCheck,
    /// Status answered; 0 when the connection was closed without an answer (injected drop).
    pub status: u16,
    /// The JSON answered (credentials, or an AWS error body); `Null` when there was none.
    pub answer: Value,
}

impl RoleTokenRequest {
    pub fn succeeded(&self) -> bool {
        self.status == 200
    }

    /// `AccessKeyId` of the credentials issued.
    pub fn access_key_id(&self) -> Option<&str> {
        self.answer["AccessKeyId"].as_str()
    }

    /// Whether the answer asked the agent for a new key pair.
    pub fn update_key_pair(&self) -> bool {
        self.answer["UpdateKeyPair"] == true
    }

    /// `TokenExpirationDate` of the credentials issued.
    pub fn expires(&self) -> Option<SystemTime> {
        let secs = self.answer["TokenExpirationDate"].as_f64()?;
        Some(UNIX_EPOCH + Duration::try_from_secs_f64(secs).ok()?)
    }

    /// The `__type` of an error answer.
    pub fn error_type(&self) -> Option<&str> {
        self.answer["__type"].as_str()
    }
}

/// One successful `UpdateManagedInstancePublicKey`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRotation {
    pub instance_id: String,
    pub old_public_key: String,
    pub new_public_key: String,
}

/// An RSA public key as registered.
#[derive(Clone)]
struct PublicKey {
    /// Base64 SubjectPublicKeyInfo DER, as sent.
    b64: String,
    /// The RSAPublicKey (PKCS#1) DER inside it, which ring verifies with.
    pkcs1: Vec<u8>,
}

struct Instance {
    key: PublicKey,
    fingerprint: String,
    rotation_requested: bool,
}

pub(crate) struct OnPremState {
    activations: Vec<Activation>,
    instances: HashMap<String, Instance>,
    issued: Vec<IssuedKey>,
    registrations: Vec<Registration>,
    role_tokens: Vec<RoleTokenRequest>,
    rsa_checks: Vec<RsaCheck>,
    rotations: Vec<KeyRotation>,
}

impl OnPremState {
    pub fn new(activations: Vec<Activation>) -> OnPremState {
        OnPremState {
            activations,
            instances: HashMap::new(),
            issued: Vec::new(),
            registrations: Vec::new(),
            role_tokens: Vec::new(),
            rsa_checks: Vec::new(),
            rotations: Vec::new(),
        }
    }

    /// A new random activation, remembered.
    pub fn create_activation(&mut self) -> Activation {
        let a = Activation::random();
        self.activations.push(a.clone());
        a
    }

    /// Makes the next role-token answers for `instance_id` say `UpdateKeyPair: true`, until the
    /// instance rotates its key. False if no such instance is registered.
    pub fn request_key_rotation(&mut self, instance_id: &str) -> bool {
        self.instances
            .get_mut(instance_id)
            .map(|i| i.rotation_requested = true)
            .is_some()
    }

    /// What was issued for `access_key` as role-token credentials.
    pub fn key_info(&self, access_key: &str) -> Option<KeyInfo> {
        self.issued
            .iter()
            .find(|k| k.access_key == access_key)
            .map(IssuedKey::key_info)
    }
}

/// Hybrid-activation records, for [`crate::Emulator::wait_until`] closures.
impl State {
    /// Every `RegisterManagedInstance` with a JSON body, in order.
    pub fn registrations(&self) -> &[Registration] {
        &self.onprem.registrations
    }

    pub fn role_token_requests(&self) -> &[RoleTokenRequest] {
        &self.onprem.role_tokens
    }

    /// Every RSA signature check, in order.
    pub fn rsa_checks(&self) -> &[RsaCheck] {
        &self.onprem.rsa_checks
    }

    pub fn key_rotations(&self) -> &[KeyRotation] {
        &self.onprem.rotations
    }

    /// The public key (base64 SubjectPublicKeyInfo DER) `instance_id` signs with now.
    pub fn current_public_key(&self, instance_id: &str) -> Option<&str> {
        let instance = self.onprem.instances.get(instance_id)?;
        Some(&instance.key.b64)
    }
}

/// Verifies an RSA-signed call against the caller's current key and records the check.
/// Returns the managed instance id.
pub(crate) fn verify(
    shared: &Shared,
    req: &Request,
    operation: &str,
    now: SystemTime,
) -> Result<String, SigError> {
    shared.update(|st| {
        let region = st.options.region.clone();
        let mut checked: Option<(String, Option<String>)> = None;
        let result = sigv4::verify_rsa(req, &region, "ssm", now, |iid| {
            let key = st.onprem.instances.get(iid).map(|i| i.key.clone());
            checked = Some((iid.to_string(), key.as_ref().map(|k| k.b64.clone())));
            key.map(|k| k.pkcs1)
        });
        let (instance_id, public_key) = checked.unwrap_or_default();
        st.onprem.rsa_checks.push(RsaCheck {
            at: Instant::now(),
            operation: operation.into(),
            instance_id,
            public_key,
            result: result
                .as_ref()
                .map_or_else(|e| SigCheck::Failed(e.message.clone()), |_| SigCheck::Ok),
        });
        result
    })
}

/// Verifies the `SSM-AsymmetricKeyAuthorization` header of an EC2 Default Host Management call
/// (whose HMAC signature was verified already) against the key the EC2 instance registered, and
/// records the check. Returns the instance id.
pub(crate) fn verify_asymmetric(
    shared: &Shared,
    req: &Request,
    operation: &str,
) -> Result<String, SigError> {
    shared.update(|st| {
        let instance_id = st.options.instance_id.clone();
        let key = st.onprem.instances.get(&instance_id).map(|i| i.key.clone());
        let result = match &key {
            Some(key) => check_asymmetric(req, &key.pkcs1),
            None => Err(SigError {
                code: "AccessDeniedException",
                message: format!("{instance_id} is not registered for Default Host Management"),
                status: 403,
            }),
        };
        st.onprem.rsa_checks.push(RsaCheck {
            at: Instant::now(),
            operation: operation.into(),
            instance_id: instance_id.clone(),
            public_key: key.map(|k| k.b64),
            result: result
                .as_ref()
                .map_or_else(|e| SigCheck::Failed(e.message.clone()), |_| SigCheck::Ok),
        });
        result.map(|()| instance_id)
    })
}

/// `Signature=<base64 RSA-PSS-SHA256>` over the whole `Authorization` value.
fn check_asymmetric(req: &Request, public_pkcs1: &[u8]) -> Result<(), SigError> {
    let bad = |message: String| SigError {
        code: "InvalidSignatureException",
        message,
        status: 403,
    };
    let authorization = req.header("Authorization").unwrap_or_default();
    let value = req.header(ASYMMETRIC_HEADER).unwrap_or_default();
    let b64 = value.strip_prefix("Signature=").ok_or_else(|| {
        bad(format!(
            "{ASYMMETRIC_HEADER} must be Signature=<base64>: {value:?}"
        ))
    })?;
    let signature = unb64(b64).map_err(|e| bad(format!("{ASYMMETRIC_HEADER}: {e}")))?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PSS_2048_8192_SHA256,
        public_pkcs1,
    )
    .verify(authorization.as_bytes(), &signature)
    .map_err(|_| {
        bad(format!(
            "{ASYMMETRIC_HEADER} is not an RSA-PSS-SHA256 signature of the Authorization value \
             by the registered key"
        ))
    })
}

/// Records a `RequestManagedInstanceRoleToken` call with how it was answered.
pub(crate) fn note_role_token(
    shared: &Shared,
    req: &Request,
    signature: &SigCheck,
    outcome: &Outcome,
) {
    let instance_id = if req.header(ASYMMETRIC_HEADER).is_some() {
        shared.read(|st| st.options.instance_id.clone())
    } else {
        req.header("Authorization")
            .and_then(|h| sigv4::parse_authorization(h).ok())
            .map(|a| a.access_key)
            .unwrap_or_default()
    };
    let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
    let (status, answer) = match outcome {
        Outcome::Respond(r) | Outcome::Upgrade(r, _) => (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or_default(),
        ),
        Outcome::Close => (0, Value::Null),
    };
    let record = RoleTokenRequest {
        at: Instant::now(),
        instance_id,
        fingerprint: body["Fingerprint"].as_str().map(str::to_string),
        signature: signature.clone(),
        status,
        answer,
    };
    shared.update(|st| st.onprem.role_tokens.push(record));
}

/// Answers an `AmazonSSM.*` operation of this module; `caller` is the instance id an RSA
/// signature was verified for (empty for the unsigned `RegisterManagedInstance`).
pub(crate) fn handle(shared: &Shared, op: &str, caller: &str, body: &Value) -> Response {
    let result = match op {
        REGISTER if body.get("IamRole").is_some() => shared.update(|st| register_role(st, body)),
        REGISTER if is_signed_registration(body) => shared.update(|st| register_ec2(st, body)),
        REGISTER => shared.update(|st| register(st, body)),
        ROLE_TOKEN => shared.update(|st| role_token(st, caller, body)),
        UPDATE_KEY => shared.update(|st| update_key(st, caller, body)),
        _ => Err(Response::aws_error(
            400,
            "UnknownOperationException",
            &format!("{op} is not a hybrid-activation operation"),
        )),
    };
    result.unwrap_or_else(|resp| resp)
}

/// Registers a new managed instance, recording the attempt whatever its outcome.
fn register(st: &mut State, body: &Value) -> Result<Response, Response> {
    let result = new_instance(st, body).map(|instance| {
        let iid = managed_instance_id();
        st.onprem.instances.insert(iid.clone(), instance);
        // The emulator serves one instance: from now on commands are addressed to this one.
        st.options.instance_id = iid.clone();
        iid
    });
    note_registration(st, body, result)
}

/// Records a registration attempt and answers it.
fn note_registration(
    st: &mut State,
    body: &Value,
    result: Result<String, Response>,
) -> Result<Response, Response> {
    let text = |field: &str| body[field].as_str().unwrap_or_default().to_string();
    st.onprem.registrations.push(Registration {
        at: Instant::now(),
        activation_id: text("ActivationId"),
        iam_role: body["IamRole"].as_str().map(str::to_owned),
        tags: body.get("Tags").cloned(),
        fingerprint: text("Fingerprint"),
        public_key: text("PublicKey"),
        instance_id: result.as_ref().ok().cloned(),
        error: result.as_ref().err().map(error_of),
    });
    result.map(|iid| Response::json(200, &json!({"InstanceId": iid})))
}

/// A registration without an activation is signed (HMAC): EC2 Default Host Management's
/// (docs/protocol.md §5.3, with the instance identity credentials), or, with `IamRole`,
/// amazon-ssm-agent's `-register -role` one (with whatever credentials the machine has).
pub(crate) fn is_signed_registration(body: &Value) -> bool {
    body.is_object() && body.get("ActivationCode").is_none()
}

/// Registers the EC2 instance itself (fingerprint = its instance id) for Default Host
/// Management; a second registration is `InstanceAlreadyRegistered`.
fn register_ec2(st: &mut State, body: &Value) -> Result<Response, Response> {
    let iid = st.options.instance_id.clone();
    let result = new_ec2_instance(st, &iid, body).map(|instance| {
        st.onprem.instances.insert(iid.clone(), instance);
        iid
    });
    note_registration(st, body, result)
}

/// Registers a new managed instance for `IamRole` (`-register -role`): no activation, the
/// signature is the proof; `Tags`, when sent, must be a list of `{Key, Value}` strings.
fn register_role(st: &mut State, body: &Value) -> Result<Response, Response> {
    let result = new_role_instance(body).map(|instance| {
        let iid = managed_instance_id();
        st.onprem.instances.insert(iid.clone(), instance);
        st.options.instance_id = iid.clone();
        iid
    });
    note_registration(st, body, result)
}

fn new_role_instance(body: &Value) -> Result<Instance, Response> {
    required(body, "IamRole", 1)?;
    let fingerprint = required(body, "Fingerprint", 1)?;
    let key_b64 = required(body, "PublicKey", MIN_PUBLIC_KEY_LEN)?;
    key_type(body, "PublicKeyType")?;
    if let Some(tags) = body.get("Tags") {
        check_tags(tags)?;
    }
    Ok(Instance {
        key: parse_public_key("PublicKey", key_b64)?,
        fingerprint: fingerprint.into(),
        rotation_requested: false,
    })
}

/// The service's `Tag` shape: `Key` of 1-128 characters, `Value` a string.
fn check_tags(tags: &Value) -> Result<(), Response> {
    let ok = |t: &Value| {
        let key = t["Key"].as_str().map_or(0, |k| k.chars().count());
        t.as_object().is_some_and(|o| o.len() == 2)
            && (1..=128).contains(&key)
            && t["Value"].is_string()
    };
    match tags.as_array() {
        Some(list) if list.iter().all(ok) => Ok(()),
        _ => Err(Response::aws_error(
            400,
            "ValidationException",
            &format!("Tags must be a list of {{\"Key\",\"Value\"}} strings, not {tags}"),
        )),
    }
}

fn new_ec2_instance(st: &State, iid: &str, body: &Value) -> Result<Instance, Response> {
    let fingerprint = required(body, "Fingerprint", 1)?;
    let key_b64 = required(body, "PublicKey", MIN_PUBLIC_KEY_LEN)?;
    key_type(body, "PublicKeyType")?;
    if fingerprint != iid {
        let msg = format!(
            "an EC2 registration's Fingerprint must be the instance id {iid}, not {fingerprint:?}"
        );
        return Err(Response::aws_error(400, "InvalidInstanceId", &msg));
    }
    if st.onprem.instances.contains_key(iid) {
        let msg = format!("{iid} is already registered");
        return Err(Response::aws_error(400, "InstanceAlreadyRegistered", &msg));
    }
    Ok(Instance {
        key: parse_public_key("PublicKey", key_b64)?,
        fingerprint: iid.into(),
        rotation_requested: false,
    })
}

/// The `__type` and `message` of an AWS error answer.
fn error_of(resp: &Response) -> (String, String) {
    let err: Value = serde_json::from_slice(&resp.body).unwrap_or_default();
    let field = |k: &str| err[k].as_str().unwrap_or_default().to_string();
    (field("__type"), field("message"))
}

/// Validates a registration request the way the service does.
fn new_instance(st: &State, body: &Value) -> Result<Instance, Response> {
    let code = required(body, "ActivationCode", 1)?;
    let activation_id = required(body, "ActivationId", 1)?;
    let fingerprint = required(body, "Fingerprint", 1)?;
    let key_b64 = required(body, "PublicKey", MIN_PUBLIC_KEY_LEN)?;
    key_type(body, "PublicKeyType")?;
    check_activation(st, activation_id, code)?;
    Ok(Instance {
        key: parse_public_key("PublicKey", key_b64)?,
        fingerprint: fingerprint.into(),
        rotation_requested: false,
    })
}

fn check_activation(st: &State, id: &str, code: &str) -> Result<(), Response> {
    if !is_uuid(id) {
        return Err(Response::aws_error(
            400,
            "InvalidActivationId",
            &format!(
                "The activation ID {id:?} is not valid: an activation ID is a UUID. \
                 Check the ActivationId you were given with the activation code."
            ),
        ));
    }
    let known = st.onprem.activations.iter().find(|a| a.id == id);
    if known.is_none_or(|a| a.code != code) {
        return Err(Response::aws_error(
            400,
            "InvalidActivation",
            &format!(
                "Activation {id} is not valid: it does not exist, was deleted or expired, or \
                 the ActivationCode does not belong to it."
            ),
        ));
    }
    Ok(())
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// `mi-` and 17 lower-case hex digits.
fn managed_instance_id() -> String {
    let mut b = [0u8; 9];
    fill_random(&mut b);
    format!("mi-{}", &hex(&b)[..17])
}

fn key_type(body: &Value, field: &str) -> Result<(), Response> {
    match body[field].as_str() {
        Some(KEY_TYPE) => Ok(()),
        other => Err(Response::aws_error(
            400,
            "ValidationException",
            &format!(
                "1 validation error detected: Value {other:?} at '{field}' failed to satisfy \
                 constraint: Member must satisfy enum value set: [{KEY_TYPE}]"
            ),
        )),
    }
}

fn role_token(st: &mut State, caller: &str, body: &Value) -> Result<Response, Response> {
    let fingerprint = required(body, "Fingerprint", 1)?;
    let lifetime = st.options.role_token_lifetime;
    let instance = registered(st, caller)?;
    if instance.fingerprint != fingerprint {
        return Err(Response::aws_error(
            400,
            "InvalidInstanceId",
            &format!(
                "Fingerprint {fingerprint} does not match the one {caller} registered with; \
                 the machine changed or its registration is stale: register it again."
            ),
        ));
    }
    let update_key_pair = instance.rotation_requested;
    let key = IssuedKey::new(lifetime, st.now());
    let expires = key.expires.duration_since(UNIX_EPOCH).unwrap_or_default();
    let answer = json!({
        "AccessKeyId": key.access_key,
        "SecretAccessKey": key.secret,
        "SessionToken": key.token,
        // Epoch seconds with milliseconds, as the service's JSON timestamps are.
        "TokenExpirationDate": expires.as_millis() as f64 / 1000.0,
        "UpdateKeyPair": update_key_pair,
    });
    st.onprem.issued.push(key);
    Ok(Response::json(200, &answer))
}

fn update_key(st: &mut State, caller: &str, body: &Value) -> Result<Response, Response> {
    let new_b64 = required(body, "NewPublicKey", MIN_PUBLIC_KEY_LEN)?;
    key_type(body, "NewPublicKeyType")?;
    let new_key = parse_public_key("NewPublicKey", new_b64)?;
    let instance = registered_mut(st, caller)?;
    let old = std::mem::replace(&mut instance.key, new_key);
    instance.rotation_requested = false;
    st.onprem.rotations.push(KeyRotation {
        instance_id: caller.into(),
        old_public_key: old.b64,
        new_public_key: new_b64.into(),
    });
    Ok(Response::json(200, &json!({})))
}

fn not_registered(caller: &str) -> Response {
    Response::aws_error(
        400,
        "InvalidInstanceId",
        &format!("{caller} is not a registered managed instance"),
    )
}

fn registered<'a>(st: &'a State, caller: &str) -> Result<&'a Instance, Response> {
    st.onprem
        .instances
        .get(caller)
        .ok_or_else(|| not_registered(caller))
}

fn registered_mut<'a>(st: &'a mut State, caller: &str) -> Result<&'a mut Instance, Response> {
    st.onprem
        .instances
        .get_mut(caller)
        .ok_or_else(|| not_registered(caller))
}

/// Decodes and checks a base64 SubjectPublicKeyInfo RSA key sent in `field`.
fn parse_public_key(field: &str, b64: &str) -> Result<PublicKey, Response> {
    let checked = unb64(b64).and_then(|der| rsa_public_key_from_spki(&der));
    match checked {
        Ok((pkcs1, bits)) if MODULUS_BITS.contains(&bits) => Ok(PublicKey {
            b64: b64.into(),
            pkcs1,
        }),
        Ok((_, bits)) => Err(bad_key(
            field,
            &format!("an RSA key of {bits} bits (2048 to 8192 are accepted)"),
        )),
        Err(e) => Err(bad_key(field, &e)),
    }
}

fn bad_key(field: &str, problem: &str) -> Response {
    Response::aws_error(
        400,
        "ValidationException",
        &format!(
            "{field} must be base64 of a PKIX (SubjectPublicKeyInfo) DER RSA public key: {problem}"
        ),
    )
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OID: u8 = 0x06;
/// 1.2.840.113549.1.1.1, rsaEncryption.
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// Splits one DER element of type `tag` off `input`: (contents, what follows).
fn der<'a>(input: &'a [u8], tag: u8, what: &str) -> Result<(&'a [u8], &'a [u8]), String> {
    let truncated = || format!("DER {what} is truncated");
    let [found, first, rest @ ..] = input else {
        return Err(truncated());
    };
    if *found != tag {
        return Err(format!(
            "expected DER tag 0x{tag:02x} for {what}, found 0x{found:02x}"
        ));
    }
    let (len, rest) = match *first {
        short @ 0..0x80 => (usize::from(short), rest),
        long => {
            let n = usize::from(long & 0x7f);
            if !(1..=4).contains(&n) {
                return Err(format!("DER {what} has an unsupported length form"));
            }
            let (bytes, rest) = rest.split_at_checked(n).ok_or_else(truncated)?;
            let len = bytes.iter().fold(0, |acc, b| acc << 8 | usize::from(*b));
            (len, rest)
        }
    };
    rest.split_at_checked(len).ok_or_else(truncated)
}

/// The RSAPublicKey (PKCS#1 DER) inside a SubjectPublicKeyInfo, and its modulus size in bits.
fn rsa_public_key_from_spki(spki: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let (info, trailing) = der(spki, SEQUENCE, "SubjectPublicKeyInfo")?;
    let (algorithm, rest) = der(info, SEQUENCE, "AlgorithmIdentifier")?;
    let (oid, _parameters) = der(algorithm, OID, "algorithm")?;
    if oid != RSA_ENCRYPTION {
        return Err(format!(
            "the algorithm is OID {}, not rsaEncryption",
            hex(oid)
        ));
    }
    let (bits, rest2) = der(rest, BIT_STRING, "subjectPublicKey")?;
    if !trailing.is_empty() || !rest2.is_empty() {
        return Err("bytes follow the SubjectPublicKeyInfo".into());
    }
    let [0, pkcs1 @ ..] = bits else {
        return Err("subjectPublicKey is not a whole number of bytes".into());
    };
    let (fields, after) = der(pkcs1, SEQUENCE, "RSAPublicKey")?;
    let (modulus, rest) = der(fields, INTEGER, "modulus")?;
    der(rest, INTEGER, "public exponent")?;
    if !after.is_empty() {
        return Err("bytes follow the RSAPublicKey".into());
    }
    let leading_zeros = modulus.iter().take_while(|b| **b == 0).count();
    let significant = &modulus[leading_zeros..];
    let bits = match significant.first() {
        Some(top) => significant.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    };
    Ok((pkcs1.to_vec(), bits))
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use std::convert::Infallible;

    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::pkcs8::EncodePublicKey;
    use rsa::rand_core::{TryCryptoRng, TryRng};
    use rsa::sha2::Sha256;
    use rsa::signature::{RandomizedSigner, SignatureEncoding};
    use rsa::{RsaPrivateKey, pss};

    use super::*;
    use crate::cipher::b64;
    use crate::sigv4::{Scope, sign_with};
    use crate::targets::*;
    use crate::tests::{Creds, Resp, call, health_body, json_request, send};
    use crate::util::sha256_hex;
    use crate::{Emulator, Options};

    /// The kernel's random source for the rsa crate.
    struct Urandom;

    impl TryRng for Urandom {
        type Error = Infallible;

        fn try_next_u32(&mut self) -> Result<u32, Infallible> {
            let mut b = [0; 4];
            fill_random(&mut b);
            Ok(u32::from_le_bytes(b))
        }

        fn try_next_u64(&mut self) -> Result<u64, Infallible> {
            let mut b = [0; 8];
            fill_random(&mut b);
            Ok(u64::from_le_bytes(b))
        }

        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
            fill_random(dst);
            Ok(())
        }
    }

    impl TryCryptoRng for Urandom {}

    /// RSA-2048 keys made once per test run: generating one takes seconds in a debug build.
    fn key(n: usize) -> &'static RsaPrivateKey {
        static KEYS: [OnceLock<RsaPrivateKey>; 2] = [OnceLock::new(), OnceLock::new()];
        KEYS[n].get_or_init(|| RsaPrivateKey::new(&mut Urandom, 2048).expect("RSA-2048 keygen"))
    }

    fn public_b64(key: &RsaPrivateKey) -> String {
        let der = key.to_public_key().to_public_key_der().expect("SPKI DER");
        b64(der.as_bytes())
    }

    fn register_with(emu: &Emulator, id: &str, code: &str, key_b64: &str) -> Resp {
        let body = json!({"ActivationCode": code, "ActivationId": id, "Fingerprint": FINGERPRINT,
                          "PublicKey": key_b64, "PublicKeyType": "Rsa"});
        send(emu, &json_request(emu, REGISTER_MANAGED_INSTANCE, &body)).expect("an answer")
    }

    const FINGERPRINT: &str = "0d9c1b52-8f43-4a65-9b1e-6a7d2c3e4f50";

    /// Registers `key` with the demo activation; returns the `mi-` id.
    fn register(emu: &Emulator, key: &RsaPrivateKey) -> String {
        let demo = Activation::demo();
        let resp = register_with(emu, &demo.id, &demo.code, &public_b64(key));
        assert_eq!(resp.status, 200, "{:?}", resp.json());
        resp.json()["InstanceId"].as_str().unwrap().to_string()
    }

    /// A request signed the way §5.5 describes, with an RSA implementation other than ring.
    fn rsa_signed(
        emu: &Emulator,
        instance: &str,
        key: &RsaPrivateKey,
        target: &str,
        body: &Value,
    ) -> Request {
        let mut req = json_request(emu, target, body);
        let scope = Scope {
            access_key: instance,
            token: None,
            region: "us-east-1",
            service: "ssm",
            now: SystemTime::now(),
        };
        let signer = pss::SigningKey::<Sha256>::new(key.clone());
        sign_with(&mut req, &scope, |_, sts| {
            b64(&signer.sign_with_rng(&mut Urandom, sts.as_bytes()).to_vec())
        });
        let hash = sha256_hex(&req.body);
        req.headers.push(("X-Amz-Content-Sha256".into(), hash));
        req
    }

    fn role_token(emu: &Emulator, instance: &str, key: &RsaPrivateKey) -> Resp {
        let body = json!({"Fingerprint": FINGERPRINT});
        let req = rsa_signed(
            emu,
            instance,
            key,
            REQUEST_MANAGED_INSTANCE_ROLE_TOKEN,
            &body,
        );
        send(emu, &req).expect("an answer")
    }

    fn is_managed_instance_id(s: &str) -> bool {
        s.strip_prefix("mi-").is_some_and(|h| {
            h.len() == 17
                && h.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        })
    }

    #[test]
    fn registration_checks_the_activation_and_the_key() {
        let emu = Emulator::start(Options::default());
        let good_key = public_b64(key(0));
        let demo = Activation::demo();
        let reject = |id: &str, code: &str, key: &str, error: &str| {
            let resp = register_with(&emu, id, code, key);
            assert_eq!((resp.status, resp.error_type()), (400, error.into()));
            resp.json()["message"].as_str().unwrap().to_string()
        };
        let msg = reject(
            &demo.id,
            "WrongCode00000000000",
            &good_key,
            "InvalidActivation",
        );
        assert!(msg.contains(&demo.id), "{msg}");
        let unknown = uuid_v4();
        reject(&unknown, &demo.code, &good_key, "InvalidActivation");
        reject("not-a-uuid", &demo.code, &good_key, "InvalidActivationId");
        let short = &good_key[..MIN_PUBLIC_KEY_LEN - 1];
        let msg = reject(&demo.id, &demo.code, short, "ValidationException");
        assert!(msg.contains("392"), "{msg}");
        let garbage = b64(&[7u8; 300]);
        let msg = reject(&demo.id, &demo.code, &garbage, "ValidationException");
        assert!(msg.contains("SubjectPublicKeyInfo"), "{msg}");
        let mut wrong_type = json_request(&emu, REGISTER_MANAGED_INSTANCE, &json!({}));
        wrong_type.body = json!({"ActivationCode": demo.code, "ActivationId": demo.id,
            "Fingerprint": FINGERPRINT, "PublicKey": good_key, "PublicKeyType": "Ecdsa"})
        .to_string()
        .into_bytes();
        assert_eq!(
            send(&emu, &wrong_type).unwrap().error_type(),
            "ValidationException"
        );
        assert!(emu.read(|st| st.onprem.instances.is_empty()));

        // Unsigned: a stray Authorization header is ignored. A created activation works too.
        let (id, code) = emu.create_activation();
        assert_ne!(
            (id.as_str(), code.as_str()),
            (demo.id.as_str(), demo.code.as_str())
        );
        let body = json!({"ActivationCode": code, "ActivationId": id, "Fingerprint": FINGERPRINT,
                          "PublicKey": good_key, "PublicKeyType": "Rsa"});
        let mut req = json_request(&emu, REGISTER_MANAGED_INSTANCE, &body);
        req.headers
            .push(("Authorization".into(), "AWS4-HMAC-SHA256 nonsense".into()));
        let resp = send(&emu, &req).unwrap();
        assert_eq!(resp.status, 200, "{:?}", resp.json());
        let iid = resp.json()["InstanceId"].as_str().unwrap().to_string();
        assert!(is_managed_instance_id(&iid), "{iid}");
        assert_eq!(emu.current_public_key(&iid), Some(good_key.clone()));
        assert!(
            emu.send_command(&json!({})).ends_with(&iid),
            "commands go to {iid}"
        );

        let regs = emu.registrations();
        assert_eq!(regs.len(), 7);
        assert!(
            regs[..6]
                .iter()
                .all(|r| r.instance_id.is_none() && r.error.is_some())
        );
        assert_eq!(regs[6].instance_id.as_deref(), Some(iid.as_str()));
        assert_eq!(
            (regs[6].activation_id.as_str(), regs[6].error.as_ref()),
            (id.as_str(), None)
        );
        assert!(emu.signature_failures().is_empty());
    }

    #[test]
    fn role_tokens_need_the_registered_key() {
        let emu = Emulator::start(Options::default());
        let iid = register(&emu, key(0));

        let resp = role_token(&emu, &iid, key(0));
        assert_eq!(resp.status, 200, "{:?}", resp.json());
        let answer = resp.json();
        assert_eq!(answer["UpdateKeyPair"], false);
        let expires = answer["TokenExpirationDate"].as_f64().unwrap();
        let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
        let delta = in_an_hour.duration_since(UNIX_EPOCH).unwrap().as_secs_f64() - expires;
        assert!((0.0..5.0).contains(&delta), "expires {expires}");
        let creds = Creds {
            key: answer["AccessKeyId"].as_str().unwrap().into(),
            secret: answer["SecretAccessKey"].as_str().unwrap().into(),
            token: answer["SessionToken"].as_str().map(str::to_string),
        };
        let ping = call(&emu, &creds, UPDATE_INSTANCE_INFORMATION, &health_body());
        assert_eq!(ping.status, 200, "role-token credentials sign other calls");
        assert!(emu.rsa_signature_failures().is_empty());

        // Tampered after signing, signed with another key, or a hex HMAC: all refused.
        let body = json!({"Fingerprint": FINGERPRINT});
        let mut tampered = rsa_signed(
            &emu,
            &iid,
            key(0),
            REQUEST_MANAGED_INSTANCE_ROLE_TOKEN,
            &body,
        );
        tampered.body = json!({"Fingerprint": uuid_v4()}).to_string().into_bytes();
        let resp = send(&emu, &tampered).unwrap();
        assert!(
            resp.json()["message"]
                .as_str()
                .unwrap()
                .contains("X-Amz-Content-Sha256")
        );
        let content_hash = tampered
            .headers
            .iter_mut()
            .find(|h| h.0 == "X-Amz-Content-Sha256");
        content_hash.unwrap().1 = sha256_hex(&tampered.body);
        let resp = send(&emu, &tampered).unwrap();
        assert_eq!(
            (resp.status, resp.error_type()),
            (403, "InvalidSignatureException".into())
        );
        assert_eq!(role_token(&emu, &iid, key(1)).status, 403);
        let mut hmac = json_request(
            &emu,
            REQUEST_MANAGED_INSTANCE_ROLE_TOKEN,
            &json!({"Fingerprint": FINGERPRINT}),
        );
        let scope = Scope {
            access_key: &iid,
            token: None,
            region: "us-east-1",
            service: "ssm",
            now: SystemTime::now(),
        };
        sign_with(&mut hmac, &scope, |auth, sts| {
            sigv4::signature("secret", auth, sts)
        });
        let resp = send(&emu, &hmac).unwrap();
        assert!(
            resp.json()["message"]
                .as_str()
                .unwrap()
                .contains("an HMAC signature")
        );
        let unknown = role_token(&emu, "mi-00000000000000000", key(0));
        assert_eq!(unknown.error_type(), "UnrecognizedClientException");
        let failures = emu.rsa_signature_failures();
        assert_eq!(failures.len(), 5, "{failures:?}");
        assert_eq!(failures[0].public_key, emu.current_public_key(&iid));
        assert_eq!(
            (failures[4].instance_id.as_str(), &failures[4].public_key),
            ("mi-00000000000000000", &None)
        );

        // A valid signature with another fingerprint is a service error, not a signature one.
        let req = rsa_signed(
            &emu,
            &iid,
            key(0),
            REQUEST_MANAGED_INSTANCE_ROLE_TOKEN,
            &json!({"Fingerprint": uuid_v4()}),
        );
        let resp = send(&emu, &req).unwrap();
        assert_eq!(
            (resp.status, resp.error_type()),
            (400, "InvalidInstanceId".into())
        );

        // Knobs: injected faults apply; lifetime 0 issues credentials that are already expired.
        emu.fail_next(1, 500, "InternalServerError");
        assert_eq!(role_token(&emu, &iid, key(0)).status, 500);
        emu.set_role_token_lifetime(Duration::ZERO);
        let answer = role_token(&emu, &iid, key(0)).json();
        let stale = Creds {
            key: answer["AccessKeyId"].as_str().unwrap().into(),
            secret: answer["SecretAccessKey"].as_str().unwrap().into(),
            token: answer["SessionToken"].as_str().map(str::to_string),
        };
        let refused = call(&emu, &stale, UPDATE_INSTANCE_INFORMATION, &health_body());
        assert_eq!(refused.error_type(), "UnrecognizedClientException");

        let requests = emu.role_token_requests();
        let summary: Vec<(u16, bool)> = requests
            .iter()
            .map(|r| (r.status, r.signature == SigCheck::Ok))
            .collect();
        let refused = (403, false);
        assert_eq!(
            summary,
            [
                (200, true),
                refused,
                refused,
                refused,
                refused,
                refused,
                (400, true),
                (500, true),
                (200, true)
            ]
        );
        assert_eq!(requests[0].access_key_id(), Some(creds.key.as_str()));
        assert_eq!(requests[0].fingerprint.as_deref(), Some(FINGERPRINT));
        assert_eq!(emu.count(REQUEST_MANAGED_INSTANCE_ROLE_TOKEN), 9);
        assert_eq!(emu.rsa_checks().len(), 9);
    }

    #[test]
    fn rotation_switches_to_the_new_key() {
        let emu = Emulator::start(Options::default());
        let iid = register(&emu, key(0));
        emu.request_key_rotation(&iid);
        for _ in 0..2 {
            assert_eq!(role_token(&emu, &iid, key(0)).json()["UpdateKeyPair"], true);
        }
        let (old, new) = (public_b64(key(0)), public_b64(key(1)));
        let body = json!({"NewPublicKey": new, "NewPublicKeyType": "Rsa"});
        // Signed with the key being replaced by: refused, nothing changes.
        let req = rsa_signed(
            &emu,
            &iid,
            key(1),
            UPDATE_MANAGED_INSTANCE_PUBLIC_KEY,
            &body,
        );
        assert_eq!(send(&emu, &req).unwrap().status, 403);
        assert_eq!(emu.current_public_key(&iid), Some(old.clone()));

        let req = rsa_signed(
            &emu,
            &iid,
            key(0),
            UPDATE_MANAGED_INSTANCE_PUBLIC_KEY,
            &body,
        );
        let resp = send(&emu, &req).unwrap();
        assert_eq!((resp.status, resp.json()), (200, json!({})));
        assert_eq!(emu.current_public_key(&iid), Some(new.clone()));
        let rotation = KeyRotation {
            instance_id: iid.clone(),
            old_public_key: old,
            new_public_key: new.clone(),
        };
        assert_eq!(emu.key_rotations(), [rotation]);

        assert_eq!(
            role_token(&emu, &iid, key(0)).status,
            403,
            "the old key stops working"
        );
        let resp = role_token(&emu, &iid, key(1));
        assert_eq!(
            (resp.status, &resp.json()["UpdateKeyPair"]),
            (200, &json!(false))
        );
        let last = emu.rsa_checks().pop().unwrap();
        assert!(last.ok());
        assert_eq!(last.public_key, Some(new));
        assert_eq!(emu.rsa_signature_failures().len(), 2);
    }

    /// The instance identity credentials from the emulator's IMDS (IMDSv1 allowed).
    fn identity_credentials(emu: &Emulator) -> Creds {
        let path = "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance";
        let get = Request {
            method: "GET".into(),
            path: path.into(),
            query: String::new(),
            headers: vec![(
                "Host".into(),
                emu.url().trim_start_matches("http://").into(),
            )],
            body: Vec::new(),
        };
        let doc = send(emu, &get).expect("an answer").json();
        let text = |k: &str| doc[k].as_str().unwrap().to_string();
        Creds {
            key: text("AccessKeyId"),
            secret: text("SecretAccessKey"),
            token: Some(text("Token")),
        }
    }

    /// A call signed the EC2 Default Host Management way: HMAC with `c`, plus `key`'s
    /// RSA-PSS signature of the Authorization value.
    fn dhmc_signed(emu: &Emulator, c: &Creds, key: &RsaPrivateKey, body: &Value) -> Request {
        let mut req = json_request(emu, REQUEST_MANAGED_INSTANCE_ROLE_TOKEN, body);
        let (token, now) = (c.token.as_deref(), SystemTime::now());
        sigv4::sign_for_tests(&mut req, &c.key, &c.secret, token, "us-east-1", "ssm", now);
        let authorization = req.header("Authorization").unwrap().to_string();
        let signer = pss::SigningKey::<Sha256>::new(key.clone());
        let signature = signer.sign_with_rng(&mut Urandom, authorization.as_bytes());
        let value = format!("Signature={}", b64(&signature.to_vec()));
        req.headers.push((ASYMMETRIC_HEADER.into(), value));
        req
    }

    #[test]
    fn ec2_default_host_management_registers_and_checks_the_asymmetric_signature() {
        let emu = Emulator::start(Options {
            imds_v1_allowed: true,
            ..Options::default()
        });
        let iid = emu.read(|st| st.options.instance_id.clone());
        let body =
            json!({"Fingerprint": iid, "PublicKey": public_b64(key(0)), "PublicKeyType": "Rsa"});
        let unsigned = send(&emu, &json_request(&emu, REGISTER_MANAGED_INSTANCE, &body)).unwrap();
        assert_eq!(unsigned.status, 403, "{:?}", unsigned.json());
        let creds = identity_credentials(&emu);
        let resp = call(&emu, &creds, REGISTER_MANAGED_INSTANCE, &body);
        assert_eq!(resp.json(), json!({"InstanceId": iid}));
        let again = call(&emu, &creds, REGISTER_MANAGED_INSTANCE, &body);
        assert_eq!(again.error_type(), "InstanceAlreadyRegistered");

        let token = json!({"Fingerprint": iid});
        let resp = send(&emu, &dhmc_signed(&emu, &creds, key(0), &token)).unwrap();
        assert_eq!(resp.status, 200, "{:?}", resp.json());
        let issued = Creds {
            key: resp.json()["AccessKeyId"].as_str().unwrap().into(),
            secret: resp.json()["SecretAccessKey"].as_str().unwrap().into(),
            token: resp.json()["SessionToken"].as_str().map(str::to_string),
        };
        assert_eq!(
            call(&emu, &issued, UPDATE_INSTANCE_INFORMATION, &health_body()).status,
            200
        );

        let wrong_key = send(&emu, &dhmc_signed(&emu, &creds, key(1), &token)).unwrap();
        assert_eq!(wrong_key.status, 403);
        let checks = emu.rsa_checks();
        let results: Vec<(bool, &str)> = checks
            .iter()
            .map(|c| (c.ok(), c.instance_id.as_str()))
            .collect();
        assert_eq!(results, [(true, iid.as_str()), (false, iid.as_str())]);
        let requests = emu.read(|st| st.role_token_requests().to_vec());
        assert_eq!(requests[0].instance_id, iid);
    }

    #[test]
    fn finds_the_pkcs1_key_inside_the_spki() {
        let spki = key(0)
            .to_public_key()
            .to_public_key_der()
            .unwrap()
            .into_vec();
        let pkcs1 = key(0).to_public_key().to_pkcs1_der().unwrap();
        assert_eq!(
            rsa_public_key_from_spki(&spki),
            Ok((pkcs1.as_bytes().to_vec(), 2048))
        );
        let truncated = rsa_public_key_from_spki(&spki[..spki.len() - 1]);
        assert!(truncated.unwrap_err().contains("truncated"));
        let mut not_rsa = spki.clone();
        let oid_at = spki.windows(9).position(|w| w == RSA_ENCRYPTION).unwrap();
        not_rsa[oid_at + 8] = 0x0b;
        assert!(
            rsa_public_key_from_spki(&not_rsa)
                .unwrap_err()
                .contains("not rsaEncryption")
        );
        let mut trailing = spki.clone();
        trailing.push(0);
        assert!(rsa_public_key_from_spki(&trailing).is_err());
    }
}
