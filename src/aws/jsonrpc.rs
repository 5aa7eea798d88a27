//! AWS JSON 1.1 calls (`POST /`, `X-Amz-Target`), signed, with AWS error bodies decoded.
//! STUB: interface fixed; implementation in progress.

use super::credentials::{CredentialsError, CredentialsProvider};
use super::endpoint::Endpoint;
use super::http::{HttpClient, HttpError};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub enum AwsError {
    /// The service answered with an error status; `code` is the `__type` without any namespace.
    Service { status: u16, code: String, message: String },
    /// No answer: connection, TLS or timeout failure.
    Transport(HttpError),
    Credentials(CredentialsError),
    /// A 2xx answer whose body is not the JSON expected.
    Decode(String),
}

impl std::fmt::Display for AwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for AwsError {}

impl AwsError {
    /// Throttling codes (`ThrottlingException`, `TooManyRequestsException`, …) or HTTP 429.
    pub fn is_throttling(&self) -> bool {
        todo!()
    }
    /// Worth retrying: transport failures, 5xx, throttling.
    pub fn is_retryable(&self) -> bool {
        todo!()
    }
}

/// A client for one service: `target_prefix` e.g. `EC2WindowsMessageDeliveryService`,
/// `signing_name` e.g. `ec2messages`.
pub struct JsonClient {}

impl JsonClient {
    pub fn new(
        http: Arc<HttpClient>,
        endpoint: Endpoint,
        target_prefix: &'static str,
        signing_name: &'static str,
        credentials: Arc<dyn CredentialsProvider>,
    ) -> JsonClient {
        let _ = (http, endpoint, target_prefix, signing_name, credentials);
        todo!()
    }

    /// Calls `<target_prefix>.<operation>` with `input` as the body; returns the response object.
    pub fn call(
        &self,
        operation: &str,
        input: &serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, AwsError> {
        let _ = (operation, input, timeout);
        todo!()
    }
}
