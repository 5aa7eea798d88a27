//! CloudWatch Logs over JSON 1.1 (`Logs_20140328.<Operation>`, signed for `logs`): the three
//! calls Run Command output needs (docs/protocol.md §3.10), each retried on throttling and
//! transient failures as upstream's SDK client is (`maxRetries = 5`).

use super::jsonrpc::{AwsError, JsonClient};
use serde_json::{Value, json};
use std::time::Duration;

/// Per attempt.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Retries after the first attempt (upstream `cloudwatchlogsservice.go`: `maxRetries`).
const RETRIES: u32 = 5;
const BACKOFF_FIRST_MS: u64 = 200;
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Sends of one batch with the token a refusal named, before giving up on the stream.
const TOKEN_RETRIES: u32 = 3;

/// One log event: milliseconds since the epoch and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub timestamp_ms: u64,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
#[error("CloudWatch Logs {operation} for {target:?} failed: {source}")]
pub struct LogsError {
    pub operation: &'static str,
    /// The group, or `group/stream`.
    pub target: String,
    #[source]
    pub source: AwsError,
}

/// A CloudWatch Logs client; cheap to clone.
#[derive(Clone)]
pub struct LogsClient {
    client: JsonClient,
}

impl LogsClient {
    /// `client` is a [`JsonClient`] for [`super::endpoint::LOGS`].
    pub fn new(client: JsonClient) -> LogsClient {
        LogsClient { client }
    }

    /// Creates `group`; one that exists already is fine.
    pub fn create_log_group(&self, group: &str) -> Result<(), LogsError> {
        let input = json!({ "logGroupName": group });
        self.create("CreateLogGroup", group.to_owned(), &input)
    }

    /// Creates `stream` in `group`; one that exists already is fine.
    pub fn create_log_stream(&self, group: &str, stream: &str) -> Result<(), LogsError> {
        let input = json!({ "logGroupName": group, "logStreamName": stream });
        self.create("CreateLogStream", format!("{group}/{stream}"), &input)
    }

    /// Sends `events` (in time order, within the batch limits) with the stream's sequence
    /// token, if it has one; returns the token for the next batch. A refusal that names the
    /// expected token (`InvalidSequenceTokenException`) is sent again with it; one that says the
    /// batch was taken already (`DataAlreadyAcceptedException`) counts as sent.
    pub fn put_log_events(
        &self,
        group: &str,
        stream: &str,
        events: &[Event],
        mut token: Option<String>,
    ) -> Result<Option<String>, LogsError> {
        let events: Vec<Value> = events
            .iter()
            .map(|e| json!({ "timestamp": e.timestamp_ms, "message": e.message }))
            .collect();
        let mut resends = 0;
        loop {
            let mut input = json!({
                "logGroupName": group, "logStreamName": stream, "logEvents": events,
            });
            if let Some(t) = &token {
                input["sequenceToken"] = json!(t);
            }
            let err = match self.call("PutLogEvents", &input) {
                Ok(answer) => return Ok(next_token(&answer)),
                Err(err) => err,
            };
            let (code, message) = match &err {
                AwsError::Service { code, message, .. } => (code.as_str(), message.as_str()),
                _ => ("", ""),
            };
            match code {
                "DataAlreadyAcceptedException" => return Ok(expected_token(message)),
                "InvalidSequenceTokenException" if resends < TOKEN_RETRIES => {
                    resends += 1;
                    token = expected_token(message);
                }
                _ => {
                    return Err(LogsError {
                        operation: "PutLogEvents",
                        target: format!("{group}/{stream}"),
                        source: err,
                    });
                }
            }
        }
    }

    fn create(
        &self,
        operation: &'static str,
        target: String,
        input: &Value,
    ) -> Result<(), LogsError> {
        match self.call(operation, input) {
            Ok(_) => Ok(()),
            Err(AwsError::Service { code, .. }) if code == "ResourceAlreadyExistsException" => {
                Ok(())
            }
            Err(source) => Err(LogsError {
                operation,
                target,
                source,
            }),
        }
    }

    fn call(&self, operation: &str, input: &Value) -> Result<Value, AwsError> {
        let mut attempt = 0;
        loop {
            match self.client.call(operation, input, CALL_TIMEOUT) {
                Err(e) if attempt < RETRIES && e.kind().is_retried() => {
                    attempt += 1;
                    log::warn!("CloudWatch Logs {operation}: {e}; retry {attempt} of {RETRIES}");
                    let pause = crate::random::backoff(BACKOFF_FIRST_MS, attempt, BACKOFF_CAP);
                    std::thread::sleep(pause);
                }
                other => return other,
            }
        }
    }
}

fn next_token(answer: &Value) -> Option<String> {
    answer["nextSequenceToken"].as_str().map(str::to_owned)
}

/// The token a sequence-token refusal names at its end ("… The next expected sequenceToken
/// is: 4959…" / "… can be sent with sequenceToken: 4959…"); `null` or none is no token.
fn expected_token(message: &str) -> Option<String> {
    let (_, token) = message.rsplit_once(": ")?;
    let token = token.trim();
    (!token.is_empty() && token != "null").then(|| token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_token_comes_from_the_refusal() {
        assert_eq!(
            expected_token(
                "The given sequenceToken is invalid. The next expected sequenceToken is: 4959"
            ),
            Some("4959".to_owned())
        );
        assert_eq!(
            expected_token(
                "The given batch of log events has already been accepted. The next batch can be \
                 sent with sequenceToken: 77"
            ),
            Some("77".to_owned())
        );
        assert_eq!(
            expected_token("The next expected sequenceToken is: null"),
            None
        );
        assert_eq!(expected_token("no token here"), None);
    }
}
