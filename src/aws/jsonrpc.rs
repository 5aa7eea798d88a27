//! AWS JSON 1.1 calls (`POST /`, `X-Amz-Target`), signed, with AWS error bodies decoded.

use super::credentials::{CredentialsError, CredentialsProvider};
use super::endpoint::Endpoint;
use super::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
use super::sigv4;
use log::debug;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Error codes that mean "slow down" across the services we call.
const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
];

#[derive(Debug)]
pub enum AwsError {
    /// The service answered with an error status; `code` is the `__type` without any namespace.
    Service {
        status: u16,
        code: String,
        message: String,
    },
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
        match self {
            AwsError::Service { status, code, .. } => {
                *status == 429 || THROTTLING_CODES.contains(&code.as_str())
            }
            _ => false,
        }
    }

    /// Worth retrying: transport failures, 5xx, throttling.
    pub fn is_retryable(&self) -> bool {
        match self {
            AwsError::Transport(_) => true,
            AwsError::Service { status, .. } => *status >= 500 || self.is_throttling(),
            AwsError::Credentials(_) | AwsError::Decode(_) => false,
        }
    }
}

/// A client for one service: `target_prefix` e.g. `EC2WindowsMessageDeliveryService`,
/// `signing_name` e.g. `ec2messages`. Cloning is cheap and shares the connection pool.
#[derive(Clone)]
pub struct JsonClient {
    http: Arc<HttpClient>,
    endpoint: Endpoint,
    target_prefix: &'static str,
    signing_name: &'static str,
    credentials: Arc<dyn CredentialsProvider>,
}

impl JsonClient {
    pub fn new(
        http: Arc<HttpClient>,
        endpoint: Endpoint,
        target_prefix: &'static str,
        signing_name: &'static str,
        credentials: Arc<dyn CredentialsProvider>,
    ) -> JsonClient {
        JsonClient {
            http,
            endpoint,
            target_prefix,
            signing_name,
            credentials,
        }
    }

    /// Calls `<target_prefix>.<operation>` with `input` as the body; returns the response object.
    pub fn call(
        &self,
        operation: &str,
        input: &Value,
        timeout: Duration,
    ) -> Result<Value, AwsError> {
        // Fetched per call so that refreshed credentials are picked up.
        let credentials = self
            .credentials
            .credentials()
            .map_err(AwsError::Credentials)?;
        let target = format!("{}.{operation}", self.target_prefix);
        let body = input.to_string().into_bytes();
        let mut headers = request_headers(&self.endpoint, &target);
        let (region, service) = (&self.endpoint.region, self.signing_name);
        sigv4::sign(
            "POST",
            "/",
            &mut headers,
            &body,
            &credentials,
            region,
            service,
            SystemTime::now(),
        );
        send(&self.http, &self.endpoint, &target, headers, &body, timeout)
    }
}

/// The headers of a JSON 1.1 call before signing: `Host`, `Content-Type`, `X-Amz-Target`.
/// Shared with the on-prem RSA signer, which signs the same request differently.
pub fn request_headers(endpoint: &Endpoint, target: &str) -> Vec<(String, String)> {
    vec![
        ("Host".to_string(), endpoint.host.clone()),
        ("Content-Type".to_string(), CONTENT_TYPE.to_string()),
        ("X-Amz-Target".to_string(), target.to_string()),
    ]
}

/// Sends a signed `POST /` to `endpoint` and decodes the answer: the response object, or the
/// service's error.
pub fn send(
    http: &HttpClient,
    endpoint: &Endpoint,
    target: &str,
    headers: Vec<(String, String)>,
    body: &[u8],
    timeout: Duration,
) -> Result<Value, AwsError> {
    let url = format!("{}/", endpoint.url);
    let request = HttpRequest {
        method: "POST",
        url: &url,
        headers,
        body,
        timeout,
    };
    let response = http.send(request).map_err(AwsError::Transport)?;
    debug!("{target} at {}: HTTP {}", endpoint.url, response.status);
    if (200..300).contains(&response.status) {
        decode_success(target, &response.body)
    } else {
        Err(service_error(&response))
    }
}

/// The response object; an empty body is `{}`. The body itself never goes into the error, as
/// answers may carry credentials or command payloads.
fn decode_success(target: &str, body: &[u8]) -> Result<Value, AwsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(body).map_err(|e| {
        AwsError::Decode(format!(
            "{target}: the {}-byte answer is not valid JSON: {e}",
            body.len()
        ))
    })
}

/// Decodes an AWS JSON error: the code from `X-Amzn-ErrorType` or `__type`, the message from
/// `message`/`Message`.
pub(crate) fn service_error(response: &HttpResponse) -> AwsError {
    let json: Option<Value> = serde_json::from_slice(&response.body).ok();
    let field = |names: &[&str]| {
        let obj = json.as_ref()?.as_object()?;
        names
            .iter()
            .find_map(|n| obj.get(*n)?.as_str().map(str::to_string))
    };
    let header = response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-amzn-errortype"))
        .map(|(_, v)| v.clone());
    let code = header
        .or_else(|| field(&["__type", "code", "Code"]))
        .map(|c| short_code(&c).to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "UnknownError".to_string());
    let message = field(&["message", "Message"]).unwrap_or_else(|| {
        // Not an AWS error body (e.g. a proxy's error page): show its start to help diagnose.
        let text = String::from_utf8_lossy(&response.body);
        format!(
            "HTTP {}: {}",
            response.status,
            text.chars().take(200).collect::<String>()
        )
    });
    AwsError::Service {
        status: response.status,
        code,
        message,
    }
}

/// `aws.namespace#Code:http://doc` → `Code`.
fn short_code(raw: &str) -> &str {
    let code = raw.rsplit_once('#').map_or(raw, |(_, c)| c);
    code.split(':').next().unwrap_or_default().trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::credentials::{Credentials, StaticCredentials};
    use crate::aws::endpoint;
    use crate::aws::http::HttpConfig;
    use crate::aws::http::test_server::{Received, Server, response, serve};
    use serde_json::json;

    const SECRET: &str = "test-secret";

    fn credentials() -> Credentials {
        Credentials {
            access_key_id: "AKIDTEST".into(),
            secret_access_key: SECRET.into(),
            session_token: Some("session-token".into()),
            expires_at: None,
        }
    }

    fn client_for(server_url: &str, credentials: Arc<dyn CredentialsProvider>) -> JsonClient {
        let config = HttpConfig {
            user_agent: "ssm-lite-test".into(),
            extra_ca_files: vec![],
        };
        let http = HttpClient::with_proxies(&config, &Default::default()).unwrap();
        let endpoint = endpoint::resolve("ec2messages", "us-west-2", server_url, "").unwrap();
        JsonClient::new(
            Arc::new(http),
            endpoint,
            "EC2WindowsMessageDeliveryService",
            "ec2messages",
            credentials,
        )
    }

    fn call(server: &Server, op: &str) -> Result<Value, AwsError> {
        let c = client_for(&server.url(), Arc::new(StaticCredentials(credentials())));
        c.call(
            op,
            &json!({"Destination": "i-0123456789abcdef0"}),
            Duration::from_secs(5),
        )
    }

    /// Recomputes the signature from the request as received, as the service would.
    fn signature_verifies(r: &Received) -> bool {
        let auth = r.header("authorization").unwrap_or_default();
        let Some(signed) = auth
            .split("SignedHeaders=")
            .nth(1)
            .and_then(|s| s.split(',').next())
        else {
            return false;
        };
        let headers: Vec<(String, String)> = signed
            .split(';')
            .map(|n| (n.to_string(), r.header(n).unwrap_or_default().to_string()))
            .collect();
        let target = r.request_line.split(' ').nth(1).unwrap_or_default();
        let request = sigv4::Request {
            method: "POST",
            path_and_query: target,
            headers: &headers,
            body: &r.body,
            normalize_path: true,
        };
        let date = r.header("x-amz-date").unwrap_or_default();
        let sts = sigv4::string_to_sign(&request, date, "us-west-2", "ec2messages");
        auth == sigv4::authorization("AKIDTEST", &sts, &sigv4::hmac_signature(SECRET, &sts))
    }

    #[test]
    fn signed_call_returns_the_object() {
        let server = serve(|_| Some(response(200, &[], br#"{"Messages":[]}"#)));
        assert_eq!(
            call(&server, "GetMessages").unwrap(),
            json!({"Messages": []})
        );
        let r = server.requests.recv().unwrap();
        assert_eq!(r.request_line, "POST / HTTP/1.1");
        assert_eq!(
            r.header("x-amz-target"),
            Some("EC2WindowsMessageDeliveryService.GetMessages")
        );
        assert_eq!(r.header("content-type"), Some(CONTENT_TYPE));
        assert_eq!(
            r.header("host"),
            Some(format!("127.0.0.1:{}", server.port).as_str())
        );
        assert_eq!(r.header("x-amz-security-token"), Some("session-token"));
        let auth = r.header("authorization").unwrap();
        assert!(
            auth.contains("Credential=AKIDTEST/")
                && auth.contains("/us-west-2/ec2messages/aws4_request"),
            "{auth}"
        );
        assert!(
            auth.contains(
                "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target,"
            ),
            "{auth}"
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&r.body).unwrap(),
            json!({"Destination": "i-0123456789abcdef0"})
        );
        assert!(signature_verifies(&r), "signature does not verify: {r:?}");
    }

    #[test]
    fn empty_success_body_is_an_empty_object() {
        let server = serve(|_| Some(response(200, &[], b"")));
        assert_eq!(call(&server, "AcknowledgeMessage").unwrap(), json!({}));
    }

    #[test]
    fn invalid_success_body_is_a_decode_error() {
        let server = serve(|_| Some(response(200, &[], b"<html>")));
        let err = call(&server, "GetMessages").unwrap_err();
        assert!(
            matches!(&err, AwsError::Decode(m) if m.contains("GetMessages")),
            "{err}"
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn service_errors_are_decoded() {
        let body = br#"{"__type":"com.amazonaws.ssm#InvalidInstanceId:http://internal.amazon.com/","message":"no such instance"}"#;
        let server = serve(move |_| Some(response(400, &[], body)));
        match call(&server, "GetMessages").unwrap_err() {
            AwsError::Service {
                status,
                code,
                message,
            } => {
                assert_eq!(
                    (status, code.as_str(), message.as_str()),
                    (400, "InvalidInstanceId", "no such instance")
                );
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn throttling_from_header_code_or_status() {
        let header = serve(|_| {
            Some(response(
                400,
                &[("X-Amzn-ErrorType", "ThrottlingException:http://x")],
                br#"{"Message":"slow"}"#,
            ))
        });
        let err = call(&header, "GetMessages").unwrap_err();
        assert!(
            matches!(&err, AwsError::Service { code, message, .. } if code == "ThrottlingException" && message == "slow")
        );
        assert!(err.is_throttling() && err.is_retryable());

        let status = serve(|_| Some(response(429, &[], b"")));
        let err = call(&status, "GetMessages").unwrap_err();
        assert!(err.is_throttling() && err.is_retryable(), "{err}");

        let auth = serve(|_| Some(response(400, &[], br#"{"__type":"AccessDeniedException"}"#)));
        let err = call(&auth, "GetMessages").unwrap_err();
        assert!(!err.is_throttling() && !err.is_retryable(), "{err}");
    }

    #[test]
    fn server_errors_and_transport_failures_are_retryable() {
        let server = serve(|_| Some(response(503, &[], b"<html>Service Unavailable</html>")));
        let err = call(&server, "GetMessages").unwrap_err();
        assert!(
            matches!(&err, AwsError::Service { status: 503, code, message } if code == "UnknownError" && message.contains("Service Unavailable"))
        );
        assert!(err.is_retryable() && !err.is_throttling());

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = client_for(
            &format!("http://127.0.0.1:{port}"),
            Arc::new(StaticCredentials(credentials())),
        );
        let err = c
            .call("GetMessages", &json!({}), Duration::from_secs(5))
            .unwrap_err();
        assert!(
            matches!(err, AwsError::Transport(HttpError::Connect(_))),
            "{err}"
        );
        assert!(err.is_retryable());
    }

    struct NoCredentials;

    impl CredentialsProvider for NoCredentials {
        fn credentials(&self) -> Result<Credentials, CredentialsError> {
            Err(CredentialsError("no credentials in test".into()))
        }
    }

    #[test]
    fn credential_failure_sends_nothing() {
        let server = serve(|_| Some(response(200, &[], b"{}")));
        let err = client_for(&server.url(), Arc::new(NoCredentials))
            .call("GetMessages", &json!({}), Duration::from_secs(5))
            .unwrap_err();
        assert!(matches!(err, AwsError::Credentials(_)), "{err}");
        assert!(!err.is_retryable());
        assert_eq!(server.connections(), 0);
    }

    #[test]
    fn short_codes() {
        assert_eq!(short_code("a.b#Code:http://x"), "Code");
        assert_eq!(short_code("Code"), "Code");
        assert_eq!(short_code("Code:"), "Code");
        assert_eq!(short_code(""), "");
    }
}
