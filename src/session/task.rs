//! The session a control-channel `interactive_shell` asks for (docs/protocol.md §4.5.3): its id, type,
//! inputs and plugin properties, decoded as Go does (case-insensitive keys, bools as strings).

use crate::document::{DocumentError, field, substitute_parameters};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionType {
    StandardStream,
    InteractiveCommands,
    NonInteractiveCommands,
    Port,
}

impl SessionType {
    fn parse(s: &str) -> Option<SessionType> {
        match s {
            "Standard_Stream" => Some(SessionType::StandardStream),
            "InteractiveCommands" => Some(SessionType::InteractiveCommands),
            "NonInteractiveCommands" => Some(SessionType::NonInteractiveCommands),
            "Port" => Some(SessionType::Port),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SessionType::StandardStream => "Standard_Stream",
            SessionType::InteractiveCommands => "InteractiveCommands",
            SessionType::NonInteractiveCommands => "NonInteractiveCommands",
            SessionType::Port => "Port",
        }
    }

    /// Plugins that always run the handshake (§4.6.3); the others only for KMS encryption.
    pub fn needs_handshake(self) -> bool {
        matches!(
            self,
            SessionType::NonInteractiveCommands | SessionType::Port
        )
    }
}

/// Everything a session needs from its start message.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionTask {
    pub session_id: String,
    pub session_type: SessionType,
    pub run_as_user: String,
    pub run_as_enabled: bool,
    pub run_as_default_user: String,
    pub shell_profile: String,
    pub kms_key_id: String,
    /// InteractiveCommands / NonInteractiveCommands (`properties.linux`).
    pub commands: String,
    pub run_as_elevated: bool,
    pub separate_output_stream: bool,
    pub stdout_prefix: String,
    pub stderr_prefix: String,
    /// Port.
    pub port_number: String,
    pub host: String,
    pub port_type: String,
    /// The document's `properties` with the parameters substituted, whole: upstream's Port
    /// plugin hands them to the client in the handshake (`GetPluginParameters`), which reads
    /// `localPortNumber`, `localUnixSocket` and `localConnectionType` from them (§4.6.3).
    pub properties: Value,
    pub logging: LoggingInputs,
}

/// Where a session's transcript goes (the document's logging inputs, docs/protocol.md §4.9).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoggingInputs {
    pub s3_bucket: String,
    pub s3_key_prefix: String,
    pub s3_encryption: bool,
    pub cloudwatch_group: String,
    pub cloudwatch_encryption: bool,
    pub cloudwatch_streaming: bool,
    /// The start message's `SessionOwner` (an ARN), for the CloudWatch events' `userIdentity`.
    pub session_owner: String,
}

impl LoggingInputs {
    fn parse(task: &Map<String, Value>, inputs: Option<&Map<String, Value>>) -> LoggingInputs {
        let flag = |key| truthy(inputs.and_then(|i| field(i, key)));
        LoggingInputs {
            s3_bucket: text(inputs, "s3BucketName"),
            s3_key_prefix: text(inputs, "s3KeyPrefix"),
            s3_encryption: flag("s3EncryptionEnabled"),
            cloudwatch_group: text(inputs, "cloudWatchLogGroupName"),
            cloudwatch_encryption: flag("cloudWatchEncryptionEnabled"),
            cloudwatch_streaming: flag("cloudWatchStreamingEnabled"),
            session_owner: text(Some(task), "SessionOwner"),
        }
    }
}

/// Go's lenient bool: true, "true", "True", "1"…
fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.to_ascii_lowercase().as_str(), "true" | "1" | "t"),
        _ => false,
    }
}

fn text(obj: Option<&Map<String, Value>>, key: &str) -> String {
    obj.and_then(|o| field(o, key))
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_default()
}

/// Why an `interactive_shell` message cannot start a session (logged: there is no session id
/// to report it to).
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("interactive_shell payload is not JSON: {0}")]
    PayloadNotJson(#[source] serde_json::Error),
    #[error("interactive_shell payload has no Content")]
    NoContent,
    #[error("session Content is not JSON: {0}")]
    ContentNotJson(#[source] serde_json::Error),
    #[error("session Content is not a JSON object")]
    ContentNotObject,
    #[error("invalid SessionId {0:?}")]
    SessionId(String),
    #[error("session has no DocumentContent")]
    NoDocument,
    #[error(
        "Document with schema version {0} is not supported by this version of ssm agent, please update to latest version"
    )]
    Schema(String),
    #[error("unsupported session type {0:?}")]
    SessionType(String),
    /// The document's parameters (the text is the document module's message).
    #[error(transparent)]
    Parameters(#[from] DocumentError),
}

/// The session object inside the `interactive_shell` payload (an MGSPayload whose `Content` is
/// a JSON string, or the object itself).
fn content(payload: &[u8]) -> Result<Map<String, Value>, TaskError> {
    let outer: Value = serde_json::from_slice(payload).map_err(TaskError::PayloadNotJson)?;
    let content = outer
        .as_object()
        .and_then(|o| field(o, "Content"))
        .ok_or(TaskError::NoContent)?;
    let task: Value = match content {
        Value::String(s) => serde_json::from_str(s).map_err(TaskError::ContentNotJson)?,
        other => other.clone(),
    };
    match task {
        Value::Object(task) => Ok(task),
        _ => Err(TaskError::ContentNotObject),
    }
}

/// Decodes the `interactive_shell` payload.
pub fn parse(payload: &[u8]) -> Result<SessionTask, TaskError> {
    let task = &content(payload)?;
    let session_id = text(Some(task), "SessionId");
    if session_id.is_empty() || crate::state::safe_file_name(&session_id).is_none() {
        return Err(TaskError::SessionId(session_id));
    }
    let doc = field(task, "DocumentContent")
        .and_then(Value::as_object)
        .ok_or(TaskError::NoDocument)?;
    let schema = text(Some(doc), "schemaVersion");
    if schema != "1.0" {
        return Err(TaskError::Schema(schema));
    }
    let kind = text(Some(doc), "sessionType");
    let session_type = SessionType::parse(&kind).ok_or(TaskError::SessionType(kind))?;
    let supplied = field(task, "Parameters")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let (empty, none) = (Value::Object(Map::new()), Value::Null);
    let inputs = field(doc, "inputs").unwrap_or(&empty);
    let properties = field(doc, "properties").unwrap_or(&none);
    let mut resolved =
        substitute_parameters(field(doc, "parameters"), &supplied, &[inputs, properties])?;
    let inputs = resolved[0].as_object();
    let properties = match &resolved[1] {
        // Command sessions keep per-OS properties; Port sessions keep them flat.
        Value::Object(p) => p
            .get("linux")
            .or_else(|| field(p, "linux"))
            .and_then(Value::as_object)
            .or(Some(p)),
        _ => None,
    };
    Ok(SessionTask {
        session_id,
        session_type,
        run_as_user: text(Some(task), "RunAsUser"),
        run_as_enabled: truthy(inputs.and_then(|i| field(i, "runAsEnabled"))),
        run_as_default_user: text(inputs, "runAsDefaultUser"),
        shell_profile: inputs
            .and_then(|i| field(i, "shellProfile"))
            .and_then(Value::as_object)
            .map(|p| text(Some(p), "linux"))
            .unwrap_or_default(),
        kms_key_id: text(inputs, "kmsKeyId"),
        commands: text(properties, "commands"),
        run_as_elevated: truthy(properties.and_then(|p| field(p, "runAsElevated"))),
        separate_output_stream: truthy(properties.and_then(|p| field(p, "separateOutputStream"))),
        stdout_prefix: text(properties, "stdOutSeparatorPrefix"),
        stderr_prefix: text(properties, "stdErrSeparatorPrefix"),
        port_number: text(properties, "portNumber"),
        host: text(properties, "host"),
        port_type: text(properties, "type"),
        logging: LoggingInputs::parse(task, inputs),
        properties: std::mem::take(&mut resolved[1]),
    })
}

/// The session id of a `channel_closed` payload.
pub fn closed_session_id(payload: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    Some(text(v.as_object(), "SessionId")).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wrap(task: Value) -> Vec<u8> {
        json!({ "Content": task.to_string(), "TaskId": "t", "Topic": "", "SchemaVersion": 1 })
            .to_string()
            .into_bytes()
    }

    #[test]
    fn a_shell_session_with_lower_case_keys() {
        let t = parse(&wrap(json!({
            "sessionId": "s-1", "runAsUser": "",
            "documentContent": { "schemaVersion": "1.0", "sessionType": "Standard_Stream",
                "inputs": { "runAsEnabled": "true", "runAsDefaultUser": "ops", "shellProfile": { "linux": "cd /tmp" } } }
        })))
        .unwrap();
        assert_eq!(t.session_type, SessionType::StandardStream);
        assert!(t.run_as_enabled);
        assert_eq!(
            (t.run_as_default_user.as_str(), t.shell_profile.as_str()),
            ("ops", "cd /tmp")
        );
        assert_eq!(t.logging, LoggingInputs::default());
    }

    #[test]
    fn logging_inputs_as_the_console_writes_them() {
        let t = parse(&wrap(json!({
            "SessionId": "s-4", "SessionOwner": "arn:aws:iam::123456789012:user/ops",
            "DocumentContent": { "schemaVersion": "1.0", "sessionType": "Standard_Stream",
                "inputs": { "s3BucketName": "logs-bucket", "s3KeyPrefix": "sessions/", "s3EncryptionEnabled": true,
                    "cloudWatchLogGroupName": "/ssm/sessions", "cloudWatchEncryptionEnabled": "false",
                    "cloudWatchStreamingEnabled": "true" } }
        })))
        .unwrap();
        assert_eq!(
            t.logging,
            LoggingInputs {
                s3_bucket: "logs-bucket".into(),
                s3_key_prefix: "sessions/".into(),
                s3_encryption: true,
                cloudwatch_group: "/ssm/sessions".into(),
                cloudwatch_encryption: false,
                cloudwatch_streaming: true,
                session_owner: "arn:aws:iam::123456789012:user/ops".into(),
            }
        );
    }

    #[test]
    fn command_and_port_properties_with_parameters() {
        let t = parse(&wrap(json!({
            "SessionId": "s-2",
            "Parameters": { "cmd": ["echo hi"] },
            "DocumentContent": { "schemaVersion": "1.0", "sessionType": "NonInteractiveCommands",
                "parameters": { "cmd": { "type": "StringList" } },
                "properties": { "linux": { "commands": "{{ cmd }}", "separateOutputStream": "true", "stdOutSeparatorPrefix": "STDOUT:\n" } } }
        })))
        .unwrap();
        assert_eq!(
            t.commands, "[\"echo hi\"]",
            "non-string values render as JSON inside strings"
        );
        assert!(t.separate_output_stream);
        let p = parse(&wrap(json!({
            "SessionId": "s-3",
            "DocumentContent": { "schemaVersion": "1.0", "sessionType": "Port",
                "properties": { "portNumber": "8080", "type": "LocalPortForwarding" } }
        })))
        .unwrap();
        assert_eq!(
            (
                p.port_number.as_str(),
                p.port_type.as_str(),
                p.host.as_str()
            ),
            ("8080", "LocalPortForwarding", "")
        );
        assert_eq!(
            p.properties,
            json!({ "portNumber": "8080", "type": "LocalPortForwarding" }),
            "kept whole for the handshake"
        );
    }

    #[test]
    fn bad_start_messages_say_why() {
        assert!(parse(b"nope").unwrap_err().to_string().contains("not JSON"));
        let e = parse(&wrap(json!({ "SessionId": "../x", "DocumentContent": {} })))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SessionId"), "{e}");
        let e = parse(&wrap(json!({ "SessionId": "s", "DocumentContent": { "schemaVersion": "1.0", "sessionType": "Telepathy" } })))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Telepathy"));
        assert_eq!(
            closed_session_id(br#"{"MessageType":"channel_closed","sessionId":"s-9"}"#).as_deref(),
            Some("s-9")
        );
    }
}
