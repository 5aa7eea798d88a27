//! SSM documents for `aws:runDocument` (and `aws:downloadContent` with `SSMDocument`):
//! `ssm:GetDocument` through the agent's SSM client, retried on throttling and transient failures
//! only, as the SDK upstream links does (docs/protocol.md §3.13). `InvalidDocument` (an unknown
//! name or version) is the service's final word: one call, no retry.

use super::sources::{DocumentSource, RemoteDocument};
use crate::aws::jsonrpc::{AwsError, JsonClient};
use serde_json::{Value, json};
use std::time::Duration;

/// Per attempt; a worker waits at most about four of these before the step fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

pub struct SsmDocuments {
    client: JsonClient,
}

impl SsmDocuments {
    pub fn new(client: JsonClient) -> SsmDocuments {
        SsmDocuments { client }
    }
}

impl DocumentSource for SsmDocuments {
    fn get_document(&self, name: &str, version: Option<&str>) -> Result<RemoteDocument, String> {
        let input = request(name, version);
        match self
            .client
            .call_retried("GetDocument", &input, CALL_TIMEOUT)
        {
            Ok(answer) => document(&answer, name),
            Err(e) => Err(refused(&e)),
        }
    }
}

/// Upstream `GetDocument`: `Name`, and `DocumentVersion` only when one is given (a number,
/// `$DEFAULT` or `$LATEST`, passed as written). No `DocumentFormat`: the content comes in the
/// format it was created in.
fn request(name: &str, version: Option<&str>) -> Value {
    let mut input = json!({ "Name": name });
    if let Some(version) = version.filter(|v| !v.is_empty()) {
        input["DocumentVersion"] = json!(version);
    }
    input
}

fn document(answer: &Value, asked: &str) -> Result<RemoteDocument, String> {
    let text = |key: &str| answer[key].as_str().unwrap_or_default().to_owned();
    let Some(content) = answer["Content"].as_str() else {
        return Err(format!(
            "GetDocument answered for {asked} without the document's Content"
        ));
    };
    Ok(RemoteDocument {
        name: text("Name"),
        document_version: text("DocumentVersion"),
        document_format: text("DocumentFormat"),
        content: content.to_owned(),
    })
}

/// The SDK's error text as upstream prints it, `Code: message` (the service's request id, which
/// the Go SDK adds on a second line, is not kept by ssm-lite's client).
fn refused(e: &AwsError) -> String {
    match e {
        AwsError::Service { code, message, .. } => format!("{code}: {message}"),
        other => format!("GetDocument failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_sent_only_when_given() {
        assert_eq!(request("Doc", None), json!({"Name": "Doc"}));
        assert_eq!(request("Doc", Some("")), json!({"Name": "Doc"}));
        assert_eq!(
            request("Doc", Some("$LATEST")),
            json!({"Name": "Doc", "DocumentVersion": "$LATEST"})
        );
        assert_eq!(
            request("Doc", Some("3")),
            json!({"Name": "Doc", "DocumentVersion": "3"})
        );
    }

    #[test]
    fn an_answer_without_content_is_an_error_naming_the_document() {
        let answer = json!({"Name": "Doc", "DocumentVersion": "2", "DocumentFormat": "YAML", "Content": "a: 1"});
        let doc = document(&answer, "Doc").unwrap();
        assert_eq!(
            (doc.document_version.as_str(), doc.document_format.as_str()),
            ("2", "YAML")
        );
        let err = document(&json!({"Name": "Doc"}), "Doc").unwrap_err();
        assert!(err.contains("Doc"), "{err}");
    }

    #[test]
    fn a_service_refusal_reads_as_the_sdks_code_and_message() {
        let e = AwsError::Service {
            status: 400,
            code: "InvalidDocument".into(),
            message: "The specified document does not exist.".into(),
        };
        assert_eq!(
            refused(&e),
            "InvalidDocument: The specified document does not exist."
        );
    }
}
