//! Parameter Store (`AmazonSSM.GetParameters`, JSON 1.1 signed for `ssm`), for the agent's
//! `{{ssm:name}}` references (docs/protocol.md §3.7). Tests put parameters with
//! [`crate::Emulator::put_parameter`]; answers take the real service's shape: `Parameters` in the
//! order asked, `InvalidParameters` for names (or `name:version` selectors) that match nothing,
//! at most ten names a call, and SecureString values as KMS ciphertext unless `WithDecryption`.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::cipher::b64;
use crate::http::Response;
use crate::state::State;
use crate::util::fill_random;

/// The service's limit on `Names`.
pub const MAX_NAMES: usize = 10;

/// A parameter's `Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParameterType {
    String,
    StringList,
    SecureString,
}

impl ParameterType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParameterType::String => "String",
            ParameterType::StringList => "StringList",
            ParameterType::SecureString => "SecureString",
        }
    }
}

/// One version of a parameter as stored.
struct Version {
    number: i64,
    kind: ParameterType,
    value: String,
    /// What the service hands out for a SecureString read without decryption.
    ciphertext: String,
    modified: SystemTime,
}

#[derive(Default)]
pub(crate) struct ParameterState {
    /// Name → its versions, oldest first.
    stored: BTreeMap<String, Vec<Version>>,
    pub(crate) calls: Vec<GetParametersCall>,
}

/// One `GetParameters` that reached the operation (signature verified, no injected fault; the
/// request log has every call).
#[derive(Debug, Clone)]
pub struct GetParametersCall {
    pub at: Instant,
    /// The request body as sent.
    pub request: Value,
    /// `None` when parameters were answered, else the error type and message.
    pub error: Option<(String, String)>,
}

impl GetParametersCall {
    /// `Names` as sent (empty when it was not a list of strings).
    pub fn names(&self) -> Vec<String> {
        let names = self.request["Names"].as_array().map(Vec::as_slice);
        names
            .unwrap_or_default()
            .iter()
            .filter_map(|n| Some(n.as_str()?.to_owned()))
            .collect()
    }

    /// `WithDecryption` as sent; absent is false, as for the service.
    pub fn with_decryption(&self) -> bool {
        self.request["WithDecryption"].as_bool().unwrap_or(false)
    }
}

impl ParameterState {
    /// Stores a new version of `name` (PutParameter with `Overwrite`); returns its number.
    pub(crate) fn put(
        &mut self,
        name: &str,
        kind: ParameterType,
        value: &str,
        now: SystemTime,
    ) -> i64 {
        let versions = self.stored.entry(name.to_owned()).or_default();
        let number = versions.last().map_or(1, |v| v.number + 1);
        versions.push(Version {
            number,
            kind,
            value: value.to_owned(),
            ciphertext: ciphertext(value),
            modified: now,
        });
        number
    }

    /// The version a `name` or `name:version` selector asks for. A label selector (`name:prod`)
    /// or a name with more colons matches nothing: tests set no labels.
    fn find<'s>(&'s self, selector: &str) -> Option<(&'s str, &'s Version)> {
        let (name, version) = match selector.split_once(':') {
            Some((name, v)) => (name, Some(v)),
            None => (selector, None),
        };
        let (name, versions) = self.stored.get_key_value(name)?;
        let found = match version {
            None => versions.last(),
            Some(v) => {
                let number: i64 = v
                    .parse()
                    .ok()
                    .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))?;
                versions.iter().find(|x| x.number == number)
            }
        };
        Some((name, found?))
    }

    /// The answer to a `GetParameters` body, or the error type and message.
    fn answer(&self, body: &Value, region: &str, account: &str) -> Result<Value, (String, String)> {
        let names = names(body)?;
        let decrypt = body["WithDecryption"].as_bool().unwrap_or(false);
        let mut parameters = Vec::new();
        let mut invalid = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for selector in names {
            if seen.contains(&selector) {
                continue;
            }
            seen.push(selector);
            match self.find(selector) {
                Some((name, v)) => {
                    let version = selector.split_once(':').map(|(_, v)| v);
                    parameters.push(parameter(name, v, version, decrypt, region, account))
                }
                None => invalid.push(selector),
            }
        }
        Ok(json!({"Parameters": parameters, "InvalidParameters": invalid}))
    }
}

/// `Names`: one to ten strings, or the service's validation error.
fn names(body: &Value) -> Result<Vec<&str>, (String, String)> {
    let invalid = |constraint: String| {
        let msg = format!("1 validation error detected: {constraint}");
        ("ValidationException".to_owned(), msg)
    };
    let Some(list) = body["Names"].as_array() else {
        return Err(invalid(
            "Value null at 'names' failed to satisfy constraint: Member must not be null".into(),
        ));
    };
    let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
    if names.len() != list.len() {
        return Err((
            "SerializationException".into(),
            "Names must be strings".into(),
        ));
    }
    let shown = format!("[{}]", names.join(", "));
    match names.len() {
        0 => Err(invalid(format!(
            "Value '{shown}' at 'names' failed to satisfy constraint: Member must have length \
             greater than or equal to 1"
        ))),
        n if n > MAX_NAMES => Err(invalid(format!(
            "Value '{shown}' at 'names' failed to satisfy constraint: Member must have length \
             less than or equal to {MAX_NAMES}"
        ))),
        _ => Ok(names),
    }
}

/// One entry of `Parameters`, as the service writes it; `Selector` only when one was asked.
fn parameter(
    name: &str,
    v: &Version,
    selector: Option<&str>,
    decrypt: bool,
    region: &str,
    account: &str,
) -> Value {
    let value = match (v.kind, decrypt) {
        (ParameterType::SecureString, false) => &v.ciphertext,
        _ => &v.value,
    };
    let modified = v
        .modified
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as f64
        / 1000.0;
    // The ARN's resource is `parameter` followed by the name, with one `/` between them.
    let arn = format!(
        "arn:aws:ssm:{region}:{account}:parameter/{}",
        name.trim_start_matches('/')
    );
    let mut p = json!({
        "Name": name,
        "Type": v.kind.as_str(),
        "Value": value,
        "Version": v.number,
        "LastModifiedDate": modified,
        "ARN": arn,
        "DataType": "text",
    });
    if let Some(s) = selector {
        p["Selector"] = json!(format!(":{s}"));
    }
    p
}

/// A KMS ciphertext blob's look (`AQICAH…`): random bytes, nothing of `value` in them.
fn ciphertext(value: &str) -> String {
    let mut blob = vec![0u8; 5 + 64 + value.len()];
    fill_random(&mut blob);
    blob[..5].copy_from_slice(&[0x01, 0x02, 0x02, 0x00, 0x78]);
    b64(&blob)
}

/// `AmazonSSM.GetParameters`: records the call, answers the parameters or the service's error.
pub(crate) fn get_parameters(st: &mut State, body: &Value) -> Response {
    let result = st
        .parameters
        .answer(body, &st.options.region, &st.options.account_id);
    st.parameters.calls.push(GetParametersCall {
        at: Instant::now(),
        request: body.clone(),
        error: result.as_ref().err().cloned(),
    });
    match result {
        Ok(answer) => Response::json(200, &answer),
        Err((error_type, message)) => Response::aws_error(400, &error_type, &message),
    }
}
