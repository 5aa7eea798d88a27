//! Send-command and cancel-command payloads (docs/protocol.md §2.4, §2.5), decoded as Go does:
//! keys matched case-insensitively, unknown keys ignored.

use crate::document::go_kind;
use serde_json::{Map, Value};

/// The largest payload ssm-lite accepts. SSM documents are limited to 64 KB and parameters to a
/// few KB by the service, so anything near this size is not a real command.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// A parsed `aws.ssm.sendCommand` payload.
#[derive(Debug, Clone, PartialEq)]
pub struct SendCommand {
    pub command_id: String,
    pub document_name: String,
    pub document_content: Value,
    pub parameters: Map<String, Value>,
    pub output_s3_bucket_name: String,
    pub output_s3_key_prefix: String,
    /// `Some(CloudWatchLogGroupName)` when `CloudWatchOutputEnabled` is true (the name may be
    /// empty: the default group then applies, docs/protocol.md §3.11).
    pub cloudwatch_log_group: Option<String>,
    /// A State Manager run (the scheduler's own payload fields).
    pub association: Option<AssociationRun>,
}

/// What a State Manager run's payload says of its association.
#[derive(Debug, Clone, PartialEq)]
pub struct AssociationRun {
    /// Its S3 output goes under `<prefix>/<InstanceId>/<AssociationId>/<RunId>`.
    pub id: String,
    pub run_id: String,
    /// Upstream's `CurrentAssociations` of the inventory plugin: this association and every
    /// other one with an inventory step that ran here and still exists (docs/protocol.md §8).
    pub inventory_associations: Vec<String>,
}

pub use crate::document::field as get_ci;

/// A payload the agent cannot run. The text goes to the service as `documentTraceOutput`, where
/// the sender of the command reads it: it names the field and what it held instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload is {0} bytes, more than the {MAX_PAYLOAD_BYTES} bytes ssm-lite accepts")]
    TooLarge(usize),
    #[error("payload is not valid JSON: {0}")]
    NotJson(String),
    /// `field` is `payload` for the payload itself; `found` is the JSON kind it held.
    #[error("{field} is JSON {found} where an object was expected")]
    NotObject {
        field: &'static str,
        found: &'static str,
    },
    #[error("payload has no DocumentContent")]
    NoDocumentContent,
    /// Go's `encoding/json` wording, kept for upstream compatibility.
    #[error("json: cannot unmarshal {found} into field {field} of type string")]
    NotString {
        field: &'static str,
        found: &'static str,
    },
    #[error("cancel payload has no CancelMessageId")]
    NoCancelMessageId,
}

fn string_field(obj: &Map<String, Value>, field: &'static str) -> Result<String, PayloadError> {
    match get_ci(obj, field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(PayloadError::NotString {
            field,
            found: go_kind(other),
        }),
    }
}

/// The object held by `field`, or `NotObject` naming what it held instead.
fn object_field(field: &'static str, value: &Value) -> Result<Map<String, Value>, PayloadError> {
    match value {
        Value::Object(m) => Ok(m.clone()),
        other => Err(PayloadError::NotObject {
            field,
            found: go_kind(other),
        }),
    }
}

fn object(text: &str) -> Result<Map<String, Value>, PayloadError> {
    if text.len() > MAX_PAYLOAD_BYTES {
        return Err(PayloadError::TooLarge(text.len()));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => object_field("payload", &other),
        Err(e) => Err(PayloadError::NotJson(e.to_string())),
    }
}

impl SendCommand {
    /// Decodes the payload; the error text goes to the service as `documentTraceOutput`.
    /// `fallback_command_id` is the id derived from the MessageId, used when the payload has none.
    pub fn parse(text: &str, fallback_command_id: &str) -> Result<SendCommand, PayloadError> {
        let m = object(text)?;
        let document_content = match get_ci(&m, "DocumentContent") {
            Some(v) => Value::Object(object_field("DocumentContent", v)?),
            None => return Err(PayloadError::NoDocumentContent),
        };
        let parameters = match get_ci(&m, "Parameters") {
            None | Some(Value::Null) => Map::new(),
            Some(p) => object_field("Parameters", p)?,
        };
        let mut command_id = string_field(&m, "CommandId")?;
        if command_id.is_empty() {
            command_id = fallback_command_id.to_owned();
        }
        Ok(SendCommand {
            command_id,
            document_name: string_field(&m, "DocumentName")?,
            document_content,
            parameters,
            output_s3_bucket_name: string_field(&m, "OutputS3BucketName")?,
            output_s3_key_prefix: string_field(&m, "OutputS3KeyPrefix")?,
            cloudwatch_log_group: cloudwatch_enabled(&m)
                .then(|| string_field(&m, "CloudWatchLogGroupName"))
                .transpose()?,
            association: Some(AssociationRun {
                id: string_field(&m, "AssociationId")?,
                run_id: string_field(&m, "RunId")?,
                inventory_associations: string_list(&m, "InventoryAssociations"),
            })
            .filter(|a| !a.id.is_empty() && !a.run_id.is_empty()),
        })
    }
}

/// The strings of a list field; anything else in it, or another kind, counts as none.
fn string_list(m: &Map<String, Value>, field: &str) -> Vec<String> {
    let list = get_ci(m, field).and_then(Value::as_array);
    list.into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect()
}

/// `CloudWatchOutputEnabled`: upstream's field is a string read with Go's `strconv.ParseBool`
/// (anything else, an error there, leaves the output off); a JSON `true` is taken as well.
fn cloudwatch_enabled(m: &Map<String, Value>) -> bool {
    match get_ci(m, "CloudWatchOutputEnabled") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.as_str(), "1" | "t" | "T" | "TRUE" | "true" | "True"),
        _ => false,
    }
}

/// `{"CancelMessageId": "aws.ssm.<CommandId>.<InstanceId>"}`: returns the message id to cancel.
pub fn parse_cancel(text: &str) -> Result<String, PayloadError> {
    let m = object(text)?;
    match string_field(&m, "CancelMessageId")? {
        id if id.is_empty() => Err(PayloadError::NoCancelMessageId),
        id => Ok(id),
    }
}

/// CommandId from a MessageId `aws.ssm.<CommandId>.<InstanceId>` (upstream `GetCommandID`): the
/// second-to-last dot-separated part; the whole id when it does not have that form.
pub fn command_id_of(message_id: &str) -> &str {
    let parts: Vec<&str> = message_id.split('.').collect();
    if message_id.starts_with("aws.ssm.") && parts.len() >= 4 {
        parts[parts.len() - 2]
    } else {
        message_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_id_comes_from_the_message_id() {
        assert_eq!(
            command_id_of("aws.ssm.2b196342-d7d4-436e-8f09-3883a1116ac3.i-57c0a7be"),
            "2b196342-d7d4-436e-8f09-3883a1116ac3"
        );
        assert_eq!(command_id_of("something-else"), "something-else");
    }

    #[test]
    fn keys_are_case_insensitive() {
        let p = SendCommand::parse(
            r#"{"commandid":"c-1","documentContent":{"schemaVersion":"2.2"},"PARAMETERS":{"a":"b"},"DocumentName":"AWS-RunShellScript","Other":1}"#,
            "fallback",
        )
        .unwrap();
        assert_eq!(p.command_id, "c-1");
        assert_eq!(p.parameters["a"], "b");
        assert_eq!(p.document_name, "AWS-RunShellScript");
    }

    #[test]
    fn cloudwatch_output_is_on_only_when_enabled_parses_true() {
        let group = |extra: &str| {
            let text = format!(r#"{{"DocumentContent":{{}}{extra}}}"#);
            SendCommand::parse(&text, "x").unwrap().cloudwatch_log_group
        };
        assert_eq!(group(""), None);
        assert_eq!(group(r#","CloudWatchOutputEnabled":"false""#), None);
        assert_eq!(group(r#","CloudWatchOutputEnabled":"yes""#), None);
        assert_eq!(
            group(r#","cloudwatchoutputenabled":"True""#),
            Some(String::new())
        );
        assert_eq!(
            group(r#","CloudWatchOutputEnabled":true,"CloudWatchLogGroupName":"g""#),
            Some("g".to_owned())
        );
    }

    #[test]
    fn bad_payloads_say_why() {
        let why = |text: &str| SendCommand::parse(text, "x").unwrap_err().to_string();
        assert!(why("not json").contains("not valid JSON"));
        assert!(why("[1]").contains("array"));
        assert!(why("{}").contains("DocumentContent"));
        let huge = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_PAYLOAD_BYTES));
        assert!(why(&huge).contains("bytes"));
        assert_eq!(
            SendCommand::parse(r#"{"DocumentContent":{}}"#, "fb")
                .unwrap()
                .command_id,
            "fb"
        );
        assert_eq!(
            parse_cancel(r#"{"cancelMessageId":"aws.ssm.c.i-1"}"#).unwrap(),
            "aws.ssm.c.i-1"
        );
        assert!(parse_cancel("{}").is_err());
    }
}
