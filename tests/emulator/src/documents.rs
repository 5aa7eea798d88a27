//! SSM documents (`AmazonSSM.GetDocument`, JSON 1.1 signed for `ssm`), for the agent's
//! `aws:runDocument` (docs/protocol.md §3.13). Tests store documents with
//! [`crate::Emulator::put_document`]; each put adds a version, and the default version stays the
//! first, as `UpdateDocument` leaves it. Unknown names are `InvalidDocument`, unknown versions
//! `InvalidDocumentVersion`, with the service's texts.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::http::Response;
use crate::state::State;

struct Version {
    format: String,
    content: String,
    created: SystemTime,
}

#[derive(Default)]
pub(crate) struct DocumentState {
    /// Name → its versions, version 1 first.
    stored: BTreeMap<String, Vec<Version>>,
    pub(crate) calls: Vec<GetDocumentCall>,
}

/// One `GetDocument` that reached the operation (signature verified, no injected fault).
#[derive(Debug, Clone)]
pub struct GetDocumentCall {
    pub at: Instant,
    /// The request body as sent.
    pub request: Value,
    /// `None` when the document was answered, else the error type and message.
    pub error: Option<(String, String)>,
}

impl DocumentState {
    /// Adds a version of `name` with `format` (`JSON`, `YAML` or `TEXT`); returns its number.
    pub(crate) fn put(
        &mut self,
        name: &str,
        format: &str,
        content: &str,
        now: SystemTime,
    ) -> usize {
        let versions = self.stored.entry(name.to_owned()).or_default();
        versions.push(Version {
            format: format.to_owned(),
            content: content.to_owned(),
            created: now,
        });
        versions.len()
    }

    pub(crate) fn answer(&self, body: &Value) -> Result<Value, (String, String)> {
        let Some(asked) = body["Name"].as_str() else {
            let msg = "1 validation error detected: Value null at 'name' failed to satisfy \
                       constraint: Member must not be null";
            return Err(("ValidationException".into(), msg.into()));
        };
        // An ARN names the document after `document/`.
        let name = asked.rsplit_once(":document/").map_or(asked, |(_, n)| n);
        let Some(versions) = self.stored.get(name) else {
            let msg = "The specified document does not exist.";
            return Err(("InvalidDocument".into(), msg.into()));
        };
        let number = match body["DocumentVersion"].as_str() {
            None | Some("$DEFAULT") => Some(1),
            Some("$LATEST") => Some(versions.len()),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=versions.len()).contains(n)),
        };
        let Some(number) = number else {
            let msg = "The document version is not valid or does not exist.";
            return Err(("InvalidDocumentVersion".into(), msg.into()));
        };
        let v = &versions[number - 1];
        let created = v.created.duration_since(UNIX_EPOCH).unwrap_or_default();
        Ok(json!({
            "Name": name,
            "CreatedDate": created.as_millis() as f64 / 1000.0,
            "DocumentVersion": number.to_string(),
            "Status": "Active",
            "Content": v.content,
            "DocumentType": "Command",
            "DocumentFormat": v.format,
        }))
    }
}

/// `AmazonSSM.GetDocument`: records the call, answers the document or the service's error.
pub(crate) fn get_document(st: &mut State, body: &Value) -> Response {
    let result = st.documents.answer(body);
    st.documents.calls.push(GetDocumentCall {
        at: Instant::now(),
        request: body.clone(),
        error: result.as_ref().err().cloned(),
    });
    match result {
        Ok(answer) => Response::json(200, &answer),
        Err((error_type, message)) => Response::aws_error(400, &error_type, &message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_default_latest_and_errors() {
        let mut docs = DocumentState::default();
        let now = SystemTime::now();
        assert_eq!(docs.put("Doc", "YAML", "v: 1", now), 1);
        assert_eq!(docs.put("Doc", "JSON", "{\"v\": 2}", now), 2);
        let content = |body: Value| docs.answer(&body).map(|a| a["Content"].clone());
        assert_eq!(content(json!({"Name": "Doc"})), Ok(json!("v: 1")));
        let arn = "arn:aws:ssm:us-east-1:123456789012:document/Doc";
        assert_eq!(
            content(json!({"Name": arn, "DocumentVersion": "$DEFAULT"})),
            Ok(json!("v: 1"))
        );
        assert_eq!(
            content(json!({"Name": "Doc", "DocumentVersion": "$LATEST"})),
            Ok(json!("{\"v\": 2}"))
        );
        assert_eq!(
            content(json!({"Name": "Doc", "DocumentVersion": "3"}))
                .unwrap_err()
                .0,
            "InvalidDocumentVersion"
        );
        assert_eq!(
            content(json!({"Name": "Other"})),
            Err((
                "InvalidDocument".into(),
                "The specified document does not exist.".into()
            ))
        );
        assert_eq!(content(json!({})).unwrap_err().0, "ValidationException");
    }
}
