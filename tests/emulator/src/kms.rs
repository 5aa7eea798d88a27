//! KMS (`TrentService.Decrypt`, JSON 1.1 signed for `kms`) for KMS-encrypted sessions
//! (docs/protocol.md §4.6.4). Real clients ask KMS for a data key and hand its ciphertext to the agent;
//! here the emulated session client invents both ([`KmsState::generate_data_key`]): the
//! "ciphertext" is opaque random bytes this KMS remembers with the key id and encryption context
//! it was made for. `Decrypt` gives the key back only for exactly that key id and context, as
//! real KMS does.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde_json::{Value, json};

use crate::cipher::{DATA_KEY_LEN, b64, unb64};
use crate::http::Response;
use crate::state::State;
use crate::util::fill_random;

pub(crate) const TARGET_PREFIX: &str = "TrentService";
pub(crate) const SERVICE: &str = "kms";
const BLOB_LEN: usize = 32;

/// A data key as KMS would have encrypted it.
struct Issued {
    key_id: String,
    context: BTreeMap<String, String>,
    data_key: [u8; DATA_KEY_LEN],
}

#[derive(Default)]
pub(crate) struct KmsState {
    /// Ciphertext blob → what it stands for.
    issued: HashMap<Vec<u8>, Issued>,
    pub(crate) decrypts: Vec<KmsDecrypt>,
}

/// One `TrentService.Decrypt` that reached the operation (signature verified, no injected
/// fault; the request log has every call).
#[derive(Debug, Clone)]
pub struct KmsDecrypt {
    pub at: Instant,
    /// The request body as sent.
    pub request: Value,
    /// `None` when the key was returned, else the error type and message answered.
    pub error: Option<(String, String)>,
}

impl KmsDecrypt {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }

    pub fn encryption_context(&self) -> &Value {
        &self.request["EncryptionContext"]
    }
}

impl KmsState {
    /// A fresh random data key under `key_id` and `context`, and its ciphertext blob.
    pub(crate) fn generate_data_key(
        &mut self,
        key_id: &str,
        context: BTreeMap<String, String>,
    ) -> (Vec<u8>, [u8; DATA_KEY_LEN]) {
        let mut data_key = [0u8; DATA_KEY_LEN];
        fill_random(&mut data_key);
        let mut blob = vec![0u8; BLOB_LEN];
        fill_random(&mut blob);
        let issued = Issued {
            key_id: key_id.into(),
            context,
            data_key,
        };
        self.issued.insert(blob.clone(), issued);
        (blob, data_key)
    }

    /// The data key for `body`, or the error type and message KMS would answer.
    fn decrypt(
        &self,
        body: &Value,
    ) -> Result<(String, [u8; DATA_KEY_LEN]), (&'static str, String)> {
        let invalid = |msg: String| ("InvalidCiphertextException", msg);
        let blob = body["CiphertextBlob"].as_str().ok_or_else(|| {
            (
                "ValidationException",
                "CiphertextBlob must be a base64 string".into(),
            )
        })?;
        let blob =
            unb64(blob).map_err(|e| ("ValidationException", format!("CiphertextBlob: {e}")))?;
        let issued = self
            .issued
            .get(&blob)
            .ok_or_else(|| invalid("the ciphertext was not produced by this KMS".into()))?;
        let key_id = body["KeyId"].as_str().unwrap_or_default();
        if key_id != issued.key_id {
            let msg = format!(
                "KeyId {key_id:?} is not the key {:?} the ciphertext was encrypted under",
                issued.key_id
            );
            return Err(("IncorrectKeyException", msg));
        }
        let context = string_map(&body["EncryptionContext"])
            .ok_or_else(|| invalid("EncryptionContext must be an object of strings".into()))?;
        if context != issued.context {
            return Err(invalid(format!(
                "EncryptionContext {context:?} differs from the one the data key was encrypted \
                 with: {:?}",
                issued.context
            )));
        }
        Ok((issued.key_id.clone(), issued.data_key))
    }
}

/// A JSON object of strings as a map; an absent context is empty, anything else `None`.
fn string_map(v: &Value) -> Option<BTreeMap<String, String>> {
    match v {
        Value::Null => Some(BTreeMap::new()),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect(),
        _ => None,
    }
}

/// `TrentService.Decrypt`: records the call, answers the key or a KMS error.
pub(crate) fn decrypt(st: &mut State, body: &Value) -> Response {
    let result = st.kms.decrypt(body);
    st.kms.decrypts.push(KmsDecrypt {
        at: Instant::now(),
        request: body.clone(),
        error: result
            .as_ref()
            .err()
            .map(|(t, m)| (t.to_string(), m.clone())),
    });
    match result {
        Ok((key_id, data_key)) => Response::json(
            200,
            &json!({
                "KeyId": key_id,
                "Plaintext": b64(&data_key),
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            }),
        ),
        Err((error_type, message)) => Response::aws_error(400, error_type, &message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(sid: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("aws:ssm:SessionId".to_string(), sid.to_string()),
            (
                "aws:ssm:TargetId".to_string(),
                "i-0123456789abcdef0".to_string(),
            ),
        ])
    }

    #[test]
    fn only_the_issued_key_id_and_context_open_a_blob() {
        let mut kms = KmsState::default();
        let (blob, key) = kms.generate_data_key("alias/ssm", context("s-1"));
        let (other_blob, other_key) = kms.generate_data_key("alias/ssm", context("s-2"));
        assert_ne!(key, other_key);
        assert_eq!(blob.len(), BLOB_LEN);
        let body = |blob: &[u8], key_id: &str, sid: &str| json!({"CiphertextBlob": b64(blob), "KeyId": key_id, "EncryptionContext": context(sid)});
        assert_eq!(
            kms.decrypt(&body(&blob, "alias/ssm", "s-1")).unwrap(),
            ("alias/ssm".to_string(), key)
        );
        assert_eq!(
            kms.decrypt(&body(&other_blob, "alias/ssm", "s-2"))
                .unwrap()
                .1,
            other_key
        );
        let error_type = |b: Value| kms.decrypt(&b).unwrap_err().0;
        assert_eq!(
            error_type(body(&blob, "alias/ssm", "s-2")),
            "InvalidCiphertextException"
        );
        assert_eq!(
            error_type(body(&blob, "alias/other", "s-1")),
            "IncorrectKeyException"
        );
        assert_eq!(
            error_type(body(&[1, 2, 3], "alias/ssm", "s-1")),
            "InvalidCiphertextException"
        );
        let mut extra = body(&blob, "alias/ssm", "s-1");
        extra["EncryptionContext"]["aws:ssm:RandomChallenge"] = json!("AAAA");
        assert_eq!(error_type(extra), "InvalidCiphertextException");
        let mut missing = body(&blob, "alias/ssm", "s-1");
        missing.as_object_mut().unwrap().remove("EncryptionContext");
        assert_eq!(error_type(missing), "InvalidCiphertextException");
        assert_eq!(
            error_type(json!({"CiphertextBlob": "%%"})),
            "ValidationException"
        );
    }
}
