//! Hybrid activation, the on-premises side of `ssm` (protocol.md §5.4, §5.5): activations, the
//! unsigned `RegisterManagedInstance`, and the two private calls a managed instance signs with its
//! own RSA key — `RequestManagedInstanceRoleToken` (temporary credentials that every other API of
//! the emulator accepts) and `UpdateManagedInstancePublicKey` (key rotation). Every RSA signature
//! is verified against the key the instance has registered *now* and recorded, so tests can
//! assert that none failed.

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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
        Some(UNIX_EPOCH + std::time::Duration::from_secs_f64(secs))
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

/// Records a `RequestManagedInstanceRoleToken` call with how it was answered.
pub(crate) fn note_role_token(
    shared: &Shared,
    req: &Request,
    signature: &SigCheck,
    outcome: &Outcome,
) {
    let instance_id = req
        .header("Authorization")
        .and_then(|h| sigv4::parse_authorization(h).ok())
        .map(|a| a.access_key)
        .unwrap_or_default();
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
        REGISTER => register(shared, body),
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

fn register(shared: &Shared, body: &Value) -> Result<Response, Response> {
    let text = |field: &str| body[field].as_str().unwrap_or_default().to_string();
    let mut record = Registration {
        at: Instant::now(),
        activation_id: text("ActivationId"),
        fingerprint: text("Fingerprint"),
        public_key: text("PublicKey"),
        instance_id: None,
        error: None,
    };
    let result = shared.update(|st| {
        let instance = new_instance(st, body)?;
        let iid = managed_instance_id();
        st.onprem.instances.insert(iid.clone(), instance);
        // The emulator serves one instance: from now on commands are addressed to this one.
        st.options.instance_id = iid.clone();
        Ok(iid)
    });
    let answer = match result {
        Ok(iid) => {
            record.instance_id = Some(iid.clone());
            Ok(Response::json(200, &json!({"InstanceId": iid})))
        }
        Err(resp) => {
            let err: Value = serde_json::from_slice(&resp.body).unwrap_or_default();
            let field = |k: &str| err[k].as_str().unwrap_or_default().to_string();
            record.error = Some((field("__type"), field("message")));
            Err(resp)
        }
    };
    shared.update(|st| st.onprem.registrations.push(record));
    answer
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
        && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
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
    let key = IssuedKey::new(lifetime);
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
        return Err(format!("the algorithm is OID {}, not rsaEncryption", hex(oid)));
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
    let significant = modulus.iter().skip_while(|b| **b == 0).as_slice();
    let bits = match significant.first() {
        Some(top) => significant.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    };
    Ok((pkcs1.to_vec(), bits))
}
