//! AWS JSON 1.1 calls (`POST /`, `X-Amz-Target`), signed, with AWS error bodies decoded. A
//! refusal for the request's time or its credentials is fixed and the call sent again once (see
//! [`retry`]); what still fails says what it is with [`AwsError::kind`].

use super::clock::{self, Clock};
use super::credentials::{CredentialsError, CredentialsProvider};
use super::endpoint::{Endpoint, Service};
use super::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
use super::retry::{self, ErrorKind, Fix};
use super::signer::{Key, SignRequest, Signer};
use log::debug;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Error codes that mean "slow down" across the services we call.
const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
];

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// The service answered with an error status; `code` is the `__type` without any namespace.
    #[error("the service refused the call (HTTP {status}, {code}): {message}")]
    Service {
        status: u16,
        code: String,
        message: String,
    },
    /// No answer: connection, TLS or timeout failure.
    #[error("no answer from the service: {0}; check the network, proxy and endpoint settings")]
    Transport(HttpError),
    #[error("no credentials to sign the call with: {0}")]
    Credentials(CredentialsError),
    /// A 2xx answer whose body is not the JSON expected.
    #[error("unexpected answer: {0}")]
    Decode(String),
}

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

    /// What kind of failure this is for a caller that tries again later (see [`ErrorKind`]).
    /// Credential and clock refusals reach callers only after the call layer tried to fix them.
    pub fn kind(&self) -> ErrorKind {
        let AwsError::Service {
            status,
            code,
            message,
        } = self
        else {
            return match self {
                AwsError::Transport(_) => ErrorKind::Retryable,
                AwsError::Credentials(_) => ErrorKind::Credentials,
                _ => ErrorKind::Permanent,
            };
        };
        if self.is_throttling() {
            ErrorKind::Throttled
        } else if *status >= 500 || *status == 408 {
            ErrorKind::Retryable
        } else if is_time_refusal(code, message) {
            ErrorKind::ClockSkew
        } else if retry::CREDENTIAL_CODES.contains(&code.as_str()) {
            ErrorKind::Credentials
        } else {
            ErrorKind::Permanent
        }
    }
}

/// A refusal that names the request time itself, as opposed to codes that skew shares with
/// bad credentials.
fn is_time_refusal(code: &str, message: &str) -> bool {
    matches!(code, "RequestTimeTooSkewed" | "RequestInTheFuture")
        || message.starts_with("Signature expired")
        || message.starts_with("Signature not yet current")
}

/// A client for one service (e.g. [`super::endpoint::EC2MESSAGES`]) signed with HMAC
/// credentials. Cloning is cheap and shares the connection pool.
#[derive(Clone)]
pub struct JsonClient {
    http: Arc<HttpClient>,
    endpoint: Endpoint,
    service: Service,
    credentials: Arc<dyn CredentialsProvider>,
    /// [`clock::PROCESS`] but in tests of the skew correction.
    clock: &'static Clock,
}

impl JsonClient {
    pub fn new(
        http: Arc<HttpClient>,
        endpoint: Endpoint,
        service: Service,
        credentials: Arc<dyn CredentialsProvider>,
    ) -> JsonClient {
        JsonClient {
            http,
            endpoint,
            service,
            credentials,
            clock: &clock::PROCESS,
        }
    }

    /// The same client stamping its requests with `clock`.
    #[cfg(test)]
    fn with_clock(self, clock: &'static Clock) -> JsonClient {
        JsonClient { clock, ..self }
    }

    /// Calls `<target prefix>.<operation>` with `input` as the body; returns the response object.
    /// Credentials are fetched per attempt, so that refreshed ones are picked up.
    pub fn call(
        &self,
        operation: &str,
        input: &Value,
        timeout: Duration,
    ) -> Result<Value, AwsError> {
        let call = Call {
            clock: self.clock,
            ..Call::new(
                &self.http,
                &self.endpoint,
                self.service,
                operation,
                input,
                timeout,
            )
        };
        let provider = self.credentials.as_ref();
        retry::signed_call(provider, AwsError::Credentials, |credentials| {
            call.attempt(Key::Hmac(credentials), |_| Ok(()))
        })
    }
}

/// Retries after the first attempt of [`JsonClient::call_retried`] (the SDK's default for SSM).
const RETRIES: u32 = 3;
const BACKOFF_FIRST_MS: u64 = 200;
const BACKOFF_CAP: Duration = Duration::from_secs(5);

impl JsonClient {
    /// [`JsonClient::call`], tried again on throttling and transient failures only (3 retries,
    /// 200 ms doubling back-off, as the SDK upstream links does); a refusal is final at once.
    pub fn call_retried(
        &self,
        operation: &str,
        input: &Value,
        timeout: Duration,
    ) -> Result<Value, AwsError> {
        let mut attempt = 0;
        loop {
            match self.call(operation, input, timeout) {
                Err(e) if attempt < RETRIES && e.kind().is_retried() => {
                    attempt += 1;
                    log::warn!("{operation}: {e}; retry {attempt} of {RETRIES}");
                    let pause = crate::random::backoff(BACKOFF_FIRST_MS, attempt, BACKOFF_CAP);
                    std::thread::sleep(pause);
                }
                result => return result,
            }
        }
    }
}

/// One JSON 1.1 call (`POST /`, `X-Amz-Target: <target>`) to one endpoint, each attempt
/// signed with the key its caller holds: the one request path of every JSON 1.1 service,
/// whatever signs it.
pub struct Call<'a> {
    pub http: &'a HttpClient,
    pub endpoint: &'a Endpoint,
    /// Stamps the request; corrected when a refusal shows skew.
    pub clock: &'a Clock,
    /// The signing name.
    pub service: &'static str,
    pub target: String,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

impl<'a> Call<'a> {
    /// `<service's target prefix>.<operation>` with `input` as the body, stamped by the
    /// process clock.
    pub fn new(
        http: &'a HttpClient,
        endpoint: &'a Endpoint,
        service: Service,
        operation: &str,
        input: &Value,
        timeout: Duration,
    ) -> Call<'a> {
        Call {
            http,
            endpoint,
            clock: &clock::PROCESS,
            service: service.signing_name,
            target: format!("{}.{operation}", service.target_prefix),
            body: input.to_string().into_bytes(),
            timeout,
        }
    }

    /// Signs the request with `key`, lets `extend` add what goes after the signature (DHMC's
    /// asymmetric-key header), sends it and decodes the answer; a refusal says what would fix
    /// it, for [`retry::signed_call`] and [`retry::keyed_call`]. A key that cannot sign is a
    /// `Credentials` error and nothing is sent.
    pub fn attempt(
        &self,
        key: Key<'_>,
        extend: impl FnOnce(&mut Vec<(String, String)>) -> Result<(), AwsError>,
    ) -> Result<Value, (AwsError, Fix)> {
        let signer = Signer {
            key,
            region: &self.endpoint.region,
            clock: self.clock,
        };
        let mut request = SignRequest {
            method: "POST",
            path_and_query: "/",
            headers: vec![
                ("Host".to_string(), self.endpoint.host.clone()),
                ("Content-Type".to_string(), CONTENT_TYPE.to_string()),
                ("X-Amz-Target".to_string(), self.target.to_string()),
            ],
            body: &self.body,
        };
        signer.sign(&mut request, self.service).map_err(|e| {
            let e = CredentialsError::Key(e.to_string());
            (AwsError::Credentials(e), Fix::None)
        })?;
        extend(&mut request.headers).map_err(|e| (e, Fix::None))?;
        self.send(request.headers)
    }

    fn send(&self, headers: Vec<(String, String)>) -> Result<Value, (AwsError, Fix)> {
        let (target, endpoint) = (self.target.as_str(), self.endpoint);
        let url = format!("{}/", endpoint.url);
        let request = HttpRequest {
            method: "POST",
            url: &url,
            headers,
            body: &self.body,
            timeout: self.timeout,
        };
        let response = self
            .http
            .send(request)
            .map_err(|e| (AwsError::Transport(e), Fix::None))?;
        debug!("{target} at {}: HTTP {}", endpoint.url, response.status);
        if (200..300).contains(&response.status) {
            decode_success(target, &response.body).map_err(|e| (e, Fix::None))
        } else {
            let fix = retry::fix_for(self.clock, &response);
            if fix != Fix::None {
                debug!("{target} refused ({fix:?}); sending it again unless that was tried");
            }
            Err((service_error(&response), fix))
        }
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

/// Decodes an AWS error: the code from `X-Amzn-ErrorType`, `__type` or an XML body (see
/// [`retry::error_code`]), the message from `message`/`Message`.
pub(crate) fn service_error(response: &HttpResponse) -> AwsError {
    let json: Option<Value> = serde_json::from_slice(&response.body).ok();
    let field = |names: &[&str]| {
        let obj = json.as_ref()?.as_object()?;
        names
            .iter()
            .find_map(|n| obj.get(*n)?.as_str().map(str::to_string))
    };
    let code = retry::error_code(response).unwrap_or_else(|| "UnknownError".to_string());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::credentials::{Credentials, RefreshingCredentials, StaticCredentials};
    use crate::aws::endpoint;
    use crate::aws::http::HttpConfig;
    use crate::aws::http::test_server::{Received, Server, response, serve};
    use crate::aws::sigv4;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::SystemTime;

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
        JsonClient::new(Arc::new(http), endpoint, endpoint::EC2MESSAGES, credentials)
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
        let date = r.header("x-amz-date").unwrap_or_default();
        let sts = sigv4::received_string_to_sign(r, signed, date, "us-west-2", "ec2messages");
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
        assert!(!err.kind().is_retried());
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
        assert!(err.is_throttling() && err.kind().is_retried());

        let status = serve(|_| Some(response(429, &[], b"")));
        let err = call(&status, "GetMessages").unwrap_err();
        assert!(err.is_throttling() && err.kind().is_retried(), "{err}");

        let auth = serve(|_| Some(response(400, &[], br#"{"__type":"AccessDeniedException"}"#)));
        let err = call(&auth, "GetMessages").unwrap_err();
        assert!(!err.is_throttling() && !err.kind().is_retried(), "{err}");
    }

    #[test]
    fn server_errors_and_transport_failures_are_retryable() {
        let server = serve(|_| Some(response(503, &[], b"<html>Service Unavailable</html>")));
        let err = call(&server, "GetMessages").unwrap_err();
        assert!(
            matches!(&err, AwsError::Service { status: 503, code, message } if code == "UnknownError" && message.contains("Service Unavailable"))
        );
        assert!(err.kind().is_retried() && !err.is_throttling());

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
        assert!(err.kind().is_retried());
    }

    struct NoCredentials;

    impl CredentialsProvider for NoCredentials {
        fn credentials(&self) -> Result<Credentials, CredentialsError> {
            Err(CredentialsError::Fetch("no credentials in test".into()))
        }
    }

    #[test]
    fn credential_failure_sends_nothing() {
        let server = serve(|_| Some(response(200, &[], b"{}")));
        let err = client_for(&server.url(), Arc::new(NoCredentials))
            .call("GetMessages", &json!({}), Duration::from_secs(5))
            .unwrap_err();
        assert!(matches!(err, AwsError::Credentials(_)), "{err}");
        assert!(!err.kind().is_retried());
        assert_eq!(server.connections(), 0);
    }

    /// A service whose clock is `ahead` of ours: it refuses an `X-Amz-Date` more than 5 minutes
    /// from its time as ec2messages does, and dates every answer.
    fn skewed_service(ahead: Duration) -> Server {
        serve(move |r| {
            let service_now = SystemTime::now() + ahead;
            let date = crate::timefmt::http_date(service_now);
            let sent = r.header("x-amz-date").unwrap_or_default();
            let skew = crate::timefmt::amz_date(service_now)
                .get(..11)
                .is_none_or(|hour| !sent.starts_with(hour));
            if skew {
                let body = format!(
                    r#"{{"__type":"InvalidSignatureException","message":"Signature expired: {sent} is now earlier than ..."}}"#
                );
                return Some(response(400, &[("Date", &date)], body.as_bytes()));
            }
            Some(response(200, &[("Date", &date)], b"{}"))
        })
    }

    fn leaked_clock() -> &'static Clock {
        Box::leak(Box::new(Clock::new()))
    }

    #[test]
    fn a_skewed_clock_is_corrected_from_the_answer_date_and_the_call_resent() {
        let server = skewed_service(Duration::from_secs(3600));
        let clock = leaked_clock();
        let c =
            client_for(&server.url(), Arc::new(StaticCredentials(credentials()))).with_clock(clock);
        let input = json!({});
        assert_eq!(
            c.call("GetMessages", &input, Duration::from_secs(5))
                .unwrap(),
            json!({})
        );
        let (first, second) = (
            server.requests.recv().unwrap(),
            server.requests.recv().unwrap(),
        );
        assert_ne!(first.header("x-amz-date"), second.header("x-amz-date"));
        assert!(signature_verifies(&second), "re-signed, not just re-dated");
        assert!(
            (clock.offset_ms() - 3_600_000).abs() < 3000,
            "{}",
            clock.offset_ms()
        );
        // Later calls are signed right the first time.
        c.call("GetMessages", &input, Duration::from_secs(5))
            .unwrap();
        assert_eq!(server.connections(), 1);
        assert_eq!(server.requests.try_iter().count(), 1);
    }

    #[test]
    fn a_refusal_without_skew_in_its_date_is_not_a_clock_problem() {
        // The same refusal, dated with our own time: the clock stays, StaticCredentials cannot
        // refresh, so the error comes back after one request, named as a credentials error.
        let server = serve(|_| {
            let date = crate::timefmt::http_date(SystemTime::now());
            let body = br#"{"__type":"InvalidSignatureException","message":"The request signature we calculated does not match"}"#;
            Some(response(400, &[("Date", &date)], body))
        });
        let clock = leaked_clock();
        let c =
            client_for(&server.url(), Arc::new(StaticCredentials(credentials()))).with_clock(clock);
        let err = c
            .call("GetMessages", &json!({}), Duration::from_secs(5))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Credentials, "{err}");
        assert_eq!((clock.offset_ms(), server.connections()), (0, 1));
        assert_eq!(server.requests.try_iter().count(), 1);
    }

    /// A provider whose `n`-th fetch gives access key `AK<n>`, counted.
    fn numbered_keys() -> (Arc<RefreshingCredentials>, Arc<AtomicUsize>) {
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = fetches.clone();
        let provider = RefreshingCredentials::new("test keys", move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            Ok(Credentials {
                access_key_id: format!("AK{n}"),
                ..credentials()
            })
        });
        (Arc::new(provider), fetches)
    }

    fn key_of(r: &Received) -> String {
        let auth = r.header("authorization").unwrap_or_default();
        let credential = auth.split("Credential=").nth(1).unwrap_or_default();
        credential.split('/').next().unwrap_or_default().to_string()
    }

    #[test]
    fn refused_credentials_are_refreshed_and_the_call_resent_once() {
        let server = serve(|r| {
            Some(if key_of(r) == "AK0" {
                let body = br#"{"__type":"ExpiredTokenException","message":"The security token included in the request is expired"}"#;
                response(400, &[], body)
            } else {
                response(200, &[], b"{}")
            })
        });
        let (provider, fetches) = numbered_keys();
        let c = client_for(&server.url(), provider.clone());
        assert_eq!(
            c.call("SendReply", &json!({}), Duration::from_secs(5))
                .unwrap(),
            json!({})
        );
        let keys: Vec<String> = server.requests.try_iter().map(|r| key_of(&r)).collect();
        assert_eq!(keys, ["AK0", "AK1"]);
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // The fresh credentials are kept.
        c.call("SendReply", &json!({}), Duration::from_secs(5))
            .unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn credentials_refused_again_come_back_typed_after_one_refresh() {
        let server = serve(|_| {
            let body = br#"{"__type":"UnrecognizedClientException","message":"The security token included in the request is invalid."}"#;
            Some(response(403, &[], body))
        });
        let (provider, fetches) = numbered_keys();
        let err = client_for(&server.url(), provider)
            .call("SendReply", &json!({}), Duration::from_secs(5))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Credentials, "{err}");
        assert!(!err.kind().is_retried() && !err.is_throttling());
        assert_eq!(server.requests.try_iter().count(), 2);
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn error_kinds() {
        let service = |status: u16, code: &str, message: &str| AwsError::Service {
            status,
            code: code.into(),
            message: message.into(),
        };
        let cases = [
            (
                service(400, "ThrottlingException", ""),
                ErrorKind::Throttled,
            ),
            (service(429, "UnknownError", ""), ErrorKind::Throttled),
            (service(503, "UnknownError", ""), ErrorKind::Retryable),
            (service(408, "UnknownError", ""), ErrorKind::Retryable),
            (
                service(400, "ExpiredTokenException", ""),
                ErrorKind::Credentials,
            ),
            (
                service(
                    403,
                    "InvalidSignatureException",
                    "The request signature we calculated does not match",
                ),
                ErrorKind::Credentials,
            ),
            (
                service(
                    400,
                    "InvalidSignatureException",
                    "Signature expired: 20260101T000000Z is now earlier than 20260101T010000Z",
                ),
                ErrorKind::ClockSkew,
            ),
            (
                service(403, "RequestTimeTooSkewed", ""),
                ErrorKind::ClockSkew,
            ),
            (
                service(400, "AccessDeniedException", ""),
                ErrorKind::Permanent,
            ),
            (
                service(407, "UnknownError", "HTTP 407: proxy"),
                ErrorKind::Permanent,
            ),
            (
                AwsError::Transport(HttpError::Timeout("t".into())),
                ErrorKind::Retryable,
            ),
            (
                AwsError::Credentials(CredentialsError::Fetch("none".into())),
                ErrorKind::Credentials,
            ),
            (AwsError::Decode("bad".into()), ErrorKind::Permanent),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error}");
        }
    }

    #[test]
    fn short_codes() {
        use retry::short_code;
        assert_eq!(short_code("a.b#Code:http://x"), "Code");
        assert_eq!(short_code("Code"), "Code");
        assert_eq!(short_code("Code:"), "Code");
        assert_eq!(short_code(""), "");
    }
}
