//! CloudWatch Logs over JSON 1.1 (`Logs_20140328.<Operation>`, signed for `logs`): the three
//! calls Run Command output needs (docs/protocol.md §3.11) and the DescribeLogGroups session
//! logging checks a group with (§4.9), each retried on throttling and transient failures as
//! upstream's SDK client is (`maxRetries = 5`).

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
/// DescribeLogGroups pages read looking for one group (50 groups a page) before giving up.
const DESCRIBE_PAGES: usize = 100;

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

/// What DescribeLogGroups tells of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogGroup {
    /// The KMS key the group is encrypted with.
    pub kms_key_id: Option<String>,
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

    /// The group named exactly `group`, or `None` when there is none: DescribeLogGroups by
    /// prefix, page after page, as upstream's `getLogGroupDetails`.
    pub fn describe_log_group(&self, group: &str) -> Result<Option<LogGroup>, LogsError> {
        let mut token: Option<String> = None;
        for _ in 0..DESCRIBE_PAGES {
            let mut input = json!({ "logGroupNamePrefix": group });
            if let Some(t) = &token {
                input["nextToken"] = json!(t);
            }
            let answer = self
                .call("DescribeLogGroups", &input)
                .map_err(|source| LogsError {
                    operation: "DescribeLogGroups",
                    target: group.to_owned(),
                    source,
                })?;
            let groups = answer["logGroups"].as_array().into_iter().flatten();
            if let Some(found) = groups.into_iter().find(|g| g["logGroupName"] == group) {
                let kms_key_id = found["kmsKeyId"].as_str().map(str::to_owned);
                return Ok(Some(LogGroup { kms_key_id }));
            }
            match answer["nextToken"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(None),
            }
        }
        Ok(None)
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
    use crate::aws::credentials::{Credentials, StaticCredentials};
    use crate::aws::endpoint::{self, resolve};
    use crate::aws::http::test_server::{Received, response, serve};
    use crate::aws::http::{HttpClient, HttpConfig};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A client of a local server answering with `respond`.
    fn client(
        respond: impl Fn(&Received) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> (LogsClient, crate::aws::http::test_server::Server) {
        let server = serve(respond);
        let config = HttpConfig {
            user_agent: "ssm-lite-test".into(),
            extra_ca_files: vec![],
        };
        let http = HttpClient::with_proxies(&config, &Default::default()).unwrap();
        let at = resolve("logs", "us-west-2", &server.url(), "").unwrap();
        let credentials = Arc::new(StaticCredentials(Credentials {
            access_key_id: "AKIDTEST".into(),
            secret_access_key: "secret".into(),
            session_token: None,
            expires_at: None,
        }));
        let json = JsonClient::new(Arc::new(http), at, endpoint::LOGS, credentials);
        (LogsClient::new(json), server)
    }

    fn refusal(code: &str, message: &str) -> Option<Vec<u8>> {
        let body = json!({ "__type": code, "message": message }).to_string();
        Some(response(400, &[], body.as_bytes()))
    }

    #[test]
    fn a_stale_token_is_replaced_by_the_one_the_refusal_names() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let (logs, server) = client(move |r| {
            seen.fetch_add(1, Ordering::SeqCst);
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(r.header("x-amz-target"), Some("Logs_20140328.PutLogEvents"));
            match body["sequenceToken"].as_str() {
                Some("42") => Some(response(200, &[], br#"{"nextSequenceToken":"43"}"#)),
                Some("dup") => refusal(
                    "DataAlreadyAcceptedException",
                    "The given batch of log events has already been accepted. The next batch \
                     can be sent with sequenceToken: 44",
                ),
                _ => refusal(
                    "InvalidSequenceTokenException",
                    "The given sequenceToken is invalid. The next expected sequenceToken is: 42",
                ),
            }
        });
        let events = [Event {
            timestamp_ms: 1,
            message: "a".into(),
        }];
        let put =
            |token: Option<&str>| logs.put_log_events("g", "s", &events, token.map(Into::into));
        assert_eq!(put(Some("stale")).unwrap().as_deref(), Some("43"));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let first: Value = serde_json::from_slice(&server.requests.recv().unwrap().body).unwrap();
        assert_eq!(
            first,
            json!({"logGroupName": "g", "logStreamName": "s", "sequenceToken": "stale",
                   "logEvents": [{"timestamp": 1, "message": "a"}]})
        );
        assert_eq!(put(Some("dup")).unwrap().as_deref(), Some("44"));
    }

    #[test]
    fn existing_groups_and_streams_are_fine_and_other_refusals_are_errors() {
        let (logs, _server) = client(|r| {
            if r.header("x-amz-target") == Some("Logs_20140328.CreateLogGroup") {
                refusal("ResourceAlreadyExistsException", "exists")
            } else {
                refusal("AccessDeniedException", "not allowed")
            }
        });
        assert!(logs.create_log_group("g").is_ok());
        let err = logs.create_log_stream("g", "s").unwrap_err().to_string();
        assert!(
            err.contains("CreateLogStream") && err.contains("g/s") && err.contains("not allowed"),
            "{err}"
        );
    }

    #[test]
    fn a_group_is_found_by_its_exact_name_across_pages() {
        let (logs, server) = client(|r| {
            assert_eq!(
                r.header("x-amz-target"),
                Some("Logs_20140328.DescribeLogGroups")
            );
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            let page = match body["nextToken"].as_str() {
                None => {
                    json!({ "logGroups": [{ "logGroupName": "/s/sessions-old" }], "nextToken": "p2" })
                }
                Some(_) => {
                    json!({ "logGroups": [{ "logGroupName": "/s/sessions", "kmsKeyId": "arn:aws:kms:k" }] })
                }
            };
            Some(response(200, &[], page.to_string().as_bytes()))
        });
        let found = logs.describe_log_group("/s/sessions").unwrap();
        assert_eq!(
            found,
            Some(LogGroup {
                kms_key_id: Some("arn:aws:kms:k".into())
            })
        );
        let first: Value = serde_json::from_slice(&server.requests.recv().unwrap().body).unwrap();
        assert_eq!(first, json!({ "logGroupNamePrefix": "/s/sessions" }));
        assert_eq!(logs.describe_log_group("/s/other").unwrap(), None);
    }

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
