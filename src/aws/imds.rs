//! EC2 instance metadata (IMDS): the IMDSv2 token flow, and IMDSv1 fallback for role credentials
//! only, the way upstream's clients behave (docs/protocol.md §5.2).
//!
//! Timeouts are short and retries few: on a host that is not EC2 the first identity check must
//! give up within seconds, not hang the agent's start.

use super::credentials::{Credentials, Env};
use super::http::{HttpClient, HttpRequest, HttpResponse};
use serde_json::Value;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6` selects this one (as the SDKs do).
pub const DEFAULT_ENDPOINT_IPV6: &str = "http://[fd00:ec2::254]";
/// Per-request deadline and attempts per request (first try included) unless told otherwise.
/// IMDS answers within milliseconds on EC2; with 1 s (the AWS SDKs' IMDS timeout) a host where
/// nothing answers gives up after about 3.3 s instead of hanging.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_ATTEMPTS: u32 = 3;

const TOKEN_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const TOKEN_TTL_SECS: u64 = 21_600;
/// A token is replaced this long before IMDS would stop accepting it.
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImdsError {
    /// `AWS_EC2_METADATA_DISABLED=true`.
    Disabled,
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT` is not an http(s) URL.
    BadEndpoint(String),
    /// No answer (connection refused, timeout, …).
    Transport { path: String, error: String },
    /// The token PUT was refused (403/404/405) where IMDSv1 is not allowed.
    TokenRefused(u16),
    /// An unexpected HTTP status.
    Status { path: String, status: u16 },
    /// No IAM role is attached to the instance.
    NoRole,
    /// The answer is not what the path should return.
    Invalid { path: String, reason: String },
}

impl fmt::Display for ImdsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImdsError::Disabled => f.write_str(
                "IMDS is disabled by AWS_EC2_METADATA_DISABLED=true; unset it to use the EC2 identity",
            ),
            ImdsError::BadEndpoint(url) => write!(
                f,
                "AWS_EC2_METADATA_SERVICE_ENDPOINT={url:?} is not an http:// or https:// URL"
            ),
            ImdsError::Transport { path, error } => write!(
                f,
                "no answer from IMDS for {path}: {error} (not an EC2 instance, or IMDS disabled or unreachable)"
            ),
            ImdsError::TokenRefused(status) => write!(
                f,
                "IMDS refused an IMDSv2 session token (PUT /latest/api/token answered {status}); enable IMDSv2 on the instance"
            ),
            ImdsError::Status { path, status } => write!(f, "IMDS answered HTTP {status} for {path}"),
            ImdsError::NoRole => f.write_str(
                "no IAM role is attached to this instance; attach an instance profile whose role allows Systems Manager (e.g. AmazonSSMManagedInstanceCore)",
            ),
            ImdsError::Invalid { path, reason } => write!(f, "IMDS {path}: {reason}"),
        }
    }
}

impl std::error::Error for ImdsError {}

/// The fields of `dynamic/instance-identity/document` the agent uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentityDocument {
    pub instance_id: String,
    pub region: String,
    pub availability_zone: String,
    pub instance_type: String,
    pub account_id: String,
    pub image_id: String,
    pub architecture: String,
    pub private_ip: String,
}

/// Whether a call may fall back to IMDSv1 when the token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    V2Only,
    /// Instance-profile credentials only, as upstream's inner credential client allows.
    V1Fallback,
}

pub(crate) struct Token {
    value: String,
    expires_at: Instant,
}

impl Token {
    fn fresh_at(&self, now: Instant) -> bool {
        now + TOKEN_REFRESH_MARGIN < self.expires_at
    }
}

pub struct ImdsClient {
    http: Arc<HttpClient>,
    base: Result<String, ImdsError>,
    timeout: Duration,
    attempts: u32,
    token: Mutex<Option<Token>>,
    v1_fallback_logged: AtomicBool,
}

impl ImdsClient {
    /// Endpoint and the disable switch come from `env` (see [`endpoint_from_env`]); a disabled
    /// or malformed endpoint makes every call fail with that reason.
    pub fn new(http: Arc<HttpClient>, env: &Env) -> ImdsClient {
        ImdsClient {
            http,
            base: endpoint_from_env(env),
            timeout: DEFAULT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
            token: Mutex::new(None),
            v1_fallback_logged: AtomicBool::new(false),
        }
    }

    /// Per-request deadline and attempts (at least 1) per request.
    pub fn with_limits(mut self, timeout: Duration, attempts: u32) -> ImdsClient {
        self.timeout = timeout;
        self.attempts = attempts.max(1);
        self
    }

    pub fn instance_id(&self) -> Result<String, ImdsError> {
        let path = "meta-data/instance-id";
        non_empty(path, self.get(path, Access::V2Only)?)
    }

    pub fn identity_document(&self) -> Result<IdentityDocument, ImdsError> {
        let path = "dynamic/instance-identity/document";
        let text = self.get(path, Access::V2Only)?;
        parse_identity_document(&text).map_err(|reason| invalid(path, reason))
    }

    pub fn availability_zone_id(&self) -> Result<String, ImdsError> {
        let path = "meta-data/placement/availability-zone-id";
        non_empty(path, self.get(path, Access::V2Only)?)
    }

    /// The instance profile's credentials: the first role listed, then its credential document.
    pub fn role_credentials(&self) -> Result<Credentials, ImdsError> {
        let list_path = "meta-data/iam/security-credentials/";
        let list = match self.get(list_path, Access::V1Fallback) {
            Err(ImdsError::Status { status: 404, .. }) => return Err(ImdsError::NoRole),
            other => other?,
        };
        let role = first_role(&list).map_err(|reason| match reason {
            None => ImdsError::NoRole,
            Some(reason) => invalid(list_path, reason),
        })?;
        let path = format!("{list_path}{role}");
        let text = self.get(&path, Access::V1Fallback)?;
        parse_role_credentials(&text).map_err(|reason| invalid(&path, reason))
    }

    /// The instance identity credentials (EC2 Default Host Management, docs/protocol.md §5.3), in the
    /// same document format as role credentials.
    pub fn identity_credentials(&self) -> Result<Credentials, ImdsError> {
        let path = "meta-data/identity-credentials/ec2/security-credentials/ec2-instance";
        let text = self.get(path, Access::V2Only)?;
        parse_role_credentials(&text).map_err(|reason| invalid(path, reason))
    }

    /// The CIDR blocks (IPv4, then IPv6 where the VPC has some) of the VPC of each network
    /// interface of the instance.
    pub fn vpc_cidr_blocks(&self) -> Result<Vec<String>, ImdsError> {
        let macs_path = "meta-data/network/interfaces/macs/";
        let macs = self.get(macs_path, Access::V2Only)?;
        let mut blocks = Vec::new();
        let is_mac =
            |m: &&str| !m.is_empty() && m.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
        for mac in macs
            .lines()
            .map(|m| m.trim().trim_end_matches('/'))
            .filter(is_mac)
        {
            for family in ["vpc-ipv4-cidr-blocks", "vpc-ipv6-cidr-blocks"] {
                match self.get(&format!("{macs_path}{mac}/{family}"), Access::V2Only) {
                    Ok(text) => blocks.extend(
                        text.lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(String::from),
                    ),
                    // A VPC without IPv6 blocks.
                    Err(ImdsError::Status { status: 404, .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(blocks)
    }

    /// GET `/latest/<path>` with the session token, renewing the token once on a 401.
    fn get(&self, path: &str, access: Access) -> Result<String, ImdsError> {
        let url = format!("{}/latest/{path}", self.base.clone()?);
        let mut renewed = false;
        loop {
            let token = self.token(access)?;
            let headers = token
                .iter()
                .map(|t| (TOKEN_HEADER.to_owned(), t.clone()))
                .collect();
            let response = self.send("GET", &url, headers, path)?;
            match response.status {
                200 => {
                    return String::from_utf8(response.body)
                        .map_err(|_| invalid(path, "the answer is not UTF-8 text".into()));
                }
                401 if token.is_some() && !renewed => {
                    log::debug!("imds: token rejected (401) for {path}; getting a new one");
                    *self.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    renewed = true;
                }
                status => {
                    return Err(ImdsError::Status {
                        path: path.to_owned(),
                        status,
                    });
                }
            }
        }
    }

    /// The current session token, fetching one when needed; `None` means "use IMDSv1".
    fn token(&self, access: Access) -> Result<Option<String>, ImdsError> {
        let mut slot = self.token.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(token) = slot.as_ref().filter(|t| t.fresh_at(Instant::now())) {
            return Ok(Some(token.value.clone()));
        }
        let url = format!("{}/latest/api/token", self.base.clone()?);
        let headers = vec![(TOKEN_TTL_HEADER.to_owned(), TOKEN_TTL_SECS.to_string())];
        let response = self.send("PUT", &url, headers, "api/token")?;
        match (response.status, access) {
            (200, _) => {
                let token = parse_token(&response, Instant::now())?;
                let value = token.value.clone();
                *slot = Some(token);
                Ok(Some(value))
            }
            (status @ 403..=405, Access::V1Fallback) => {
                if !self.v1_fallback_logged.swap(true, Ordering::Relaxed) {
                    log::info!(
                        "IMDSv2 token refused (status {status}); falling back to IMDSv1 for role credentials"
                    );
                }
                Ok(None)
            }
            (status @ 403..=405, Access::V2Only) => Err(ImdsError::TokenRefused(status)),
            (status, _) => Err(ImdsError::Status {
                path: "api/token".into(),
                status,
            }),
        }
    }

    /// One request with bounded retries on no answer, 5xx and 429 (100 ms, then 200 ms, … plus
    /// jitter); the last answer is returned whatever its status.
    fn send(
        &self,
        method: &str,
        url: &str,
        headers: Vec<(String, String)>,
        path: &str,
    ) -> Result<HttpResponse, ImdsError> {
        let mut attempt = 1;
        loop {
            let request = HttpRequest {
                method,
                url,
                headers: headers.clone(),
                body: b"",
                timeout: self.timeout,
            };
            let result = self.http.send(request);
            let retry = match &result {
                Ok(response) => response.status == 429 || response.status >= 500,
                Err(_) => true,
            };
            if !retry || attempt >= self.attempts {
                return result.map_err(|e| ImdsError::Transport {
                    path: path.to_owned(),
                    error: e.to_string(),
                });
            }
            let pause = (100u64 << (attempt - 1).min(4)) + crate::random::between(0, 50);
            std::thread::sleep(Duration::from_millis(pause));
            attempt += 1;
        }
    }
}

/// The IMDS base URL: `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else the IPv4 (or, with
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6`, IPv6) address; `AWS_EC2_METADATA_DISABLED=true`
/// disables IMDS.
pub fn endpoint_from_env(env: &Env) -> Result<String, ImdsError> {
    if env
        .get("AWS_EC2_METADATA_DISABLED")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        return Err(ImdsError::Disabled);
    }
    let ipv6 = env
        .get("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE")
        .is_some_and(|m| m.eq_ignore_ascii_case("ipv6"));
    let default = if ipv6 {
        DEFAULT_ENDPOINT_IPV6
    } else {
        DEFAULT_ENDPOINT
    };
    let url = env
        .get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .unwrap_or(default)
        .trim()
        .trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ImdsError::BadEndpoint(url.to_owned()));
    }
    Ok(url.to_owned())
}

fn invalid(path: &str, reason: String) -> ImdsError {
    ImdsError::Invalid {
        path: path.to_owned(),
        reason,
    }
}

fn non_empty(path: &str, text: String) -> Result<String, ImdsError> {
    let value = text.trim();
    if value.is_empty() {
        return Err(invalid(path, "the answer is empty".into()));
    }
    Ok(value.to_owned())
}

/// The token from a 200 answer to the PUT; its lifetime from the TTL header (else the TTL asked),
/// never longer than asked: a huge TTL would overflow the clock (a panic).
pub(crate) fn parse_token(response: &HttpResponse, now: Instant) -> Result<Token, ImdsError> {
    let value = std::str::from_utf8(&response.body)
        .map(str::trim)
        .unwrap_or("");
    // The token goes back in a header: refuse anything that could not be sent as one.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "api/token",
            "the token is empty or not printable ASCII".into(),
        ));
    }
    let ttl = response
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(TOKEN_TTL_HEADER))
        .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        .map_or(TOKEN_TTL_SECS, |ttl| ttl.min(TOKEN_TTL_SECS));
    Ok(Token {
        value: value.to_owned(),
        expires_at: now + Duration::from_secs(ttl),
    })
}

/// The first role of the `iam/security-credentials/` listing. `Err(None)`: the list is empty.
pub(crate) fn first_role(list: &str) -> Result<&str, Option<String>> {
    let role = list
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or(None)?;
    // IAM role names are `[\w+=,.@-]+`; anything else must not reach a URL path.
    let ok = role
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    if !ok {
        return Err(Some(format!(
            "role name {role:?} is not a valid IAM role name"
        )));
    }
    Ok(role)
}

/// A string field of a JSON object, key matched case-insensitively (as Go's decoder does).
fn field<'v>(object: &'v Value, key: &str) -> Option<&'v str> {
    let map = object.as_object()?;
    let value = map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    });
    value?.as_str()
}

pub fn parse_identity_document(text: &str) -> Result<IdentityDocument, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let get = |key: &str| field(&doc, key).unwrap_or("").to_owned();
    let document = IdentityDocument {
        instance_id: get("instanceId"),
        region: get("region"),
        availability_zone: get("availabilityZone"),
        instance_type: get("instanceType"),
        account_id: get("accountId"),
        image_id: get("imageId"),
        architecture: get("architecture"),
        private_ip: get("privateIp"),
    };
    if document.region.is_empty() {
        return Err("the document has no region".into());
    }
    Ok(document)
}

/// A credential document. Errors never quote the text: it holds the secret key.
pub fn parse_role_credentials(text: &str) -> Result<Credentials, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let code = field(&doc, "Code").unwrap_or("");
    if code != "Success" {
        let message = field(&doc, "Message").unwrap_or("");
        return Err(format!(
            "credentials not available: Code {code:?}, Message {message:?}"
        ));
    }
    let required = |key: &str| {
        field(&doc, key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("the credential document has no {key}"))
    };
    let expiration = required("Expiration")?;
    let expires_at = crate::timefmt::parse_iso8601(expiration)
        .ok_or_else(|| format!("Expiration {expiration:?} is not an ISO-8601 time"))?;
    Ok(Credentials {
        access_key_id: required("AccessKeyId")?.to_owned(),
        secret_access_key: required("SecretAccessKey")?.to_owned(),
        session_token: field(&doc, "Token")
            .filter(|t| !t.is_empty())
            .map(str::to_owned),
        expires_at: Some(expires_at),
    })
}

/// A scripted HTTP/1.1 server on 127.0.0.1 for IMDS and AWS tests (one request per connection).
#[cfg(test)]
pub(crate) mod fake {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone)]
    pub struct Seen {
        pub method: String,
        pub path: String,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl Seen {
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    pub struct Reply {
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub body: String,
    }

    pub fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
        }
    }

    pub struct Server {
        pub url: String,
        pub seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Server {
        pub fn requests(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    /// Serves until the test process ends; `handler` answers each request in arrival order.
    pub fn serve(mut handler: impl FnMut(&Seen) -> Reply + Send + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(stream);
                let Some(request) = read_request(&mut reader) else {
                    continue;
                };
                log.lock().unwrap().push(request.clone());
                let r = handler(&request);
                let mut head = format!(
                    "HTTP/1.1 {} Fake\r\nContent-Length: {}\r\nConnection: close\r\n",
                    r.status,
                    r.body.len()
                );
                for (k, v) in &r.headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                let mut stream = reader.into_inner();
                let _ = stream.write_all(format!("{head}\r\n{}", r.body).as_bytes());
            }
        });
        Server { url, seen }
    }

    fn read_request(reader: &mut BufReader<std::net::TcpStream>) -> Option<Seen> {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).ok()?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':')?;
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        let seen = Seen {
            method,
            path,
            headers,
            body: Vec::new(),
        };
        let length = seen
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        Some(Seen { body, ..seen })
    }

    /// An IMDS with IMDSv2 (token `T1`, or `T2` after the first) serving `routes` (path → body).
    pub fn imds(routes: Vec<(&'static str, String)>) -> Server {
        let mut tokens = 0;
        serve(move |req| {
            if req.method == "PUT" && req.path == "/latest/api/token" {
                tokens += 1;
                let mut r = reply(200, &format!("T{tokens}"));
                r.headers.push((
                    "x-aws-ec2-metadata-token-ttl-seconds".into(),
                    "21600".into(),
                ));
                return r;
            }
            if req
                .header("x-aws-ec2-metadata-token")
                .is_none_or(|t| !t.starts_with('T'))
            {
                return reply(401, "");
            }
            match routes
                .iter()
                .find(|(p, _)| req.path == format!("/latest/{p}"))
            {
                Some((_, body)) => reply(200, body),
                None => reply(404, ""),
            }
        })
    }

    pub fn identity_document(instance_id: &str, region: &str, az: &str) -> String {
        format!(
            r#"{{"instanceId":"{instance_id}","region":"{region}","availabilityZone":"{az}","instanceType":"t3.micro","accountId":"123456789012","architecture":"x86_64"}}"#
        )
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{self, reply};
    use super::*;
    use crate::aws::http::HttpConfig;

    fn http() -> Arc<HttpClient> {
        let config = HttpConfig {
            user_agent: "ssm-lite-test".into(),
            extra_ca_files: Vec::new(),
        };
        Arc::new(HttpClient::new(&config).unwrap())
    }

    fn client(server: &fake::Server) -> ImdsClient {
        let env = Env::from_pairs(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.url.as_str())]);
        ImdsClient::new(http(), &env).with_limits(Duration::from_secs(2), 3)
    }

    const ROLE_DOC: &str = r#"{"Code":"Success","LastUpdated":"2024-05-01T11:00:00Z","Type":"AWS-HMAC","AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"s3cr3t","Token":"tok","Expiration":"2024-05-01T18:00:00Z"}"#;

    #[test]
    fn endpoint_comes_from_the_environment() {
        assert_eq!(
            endpoint_from_env(&Env::default()).unwrap(),
            DEFAULT_ENDPOINT
        );
        let env = Env::from_pairs(&[(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            "http://127.0.0.1:1338/",
        )]);
        assert_eq!(endpoint_from_env(&env).unwrap(), "http://127.0.0.1:1338");
        let env = Env::from_pairs(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv6")]);
        assert_eq!(endpoint_from_env(&env).unwrap(), DEFAULT_ENDPOINT_IPV6);
        let env = Env::from_pairs(&[("AWS_EC2_METADATA_DISABLED", "TRUE")]);
        assert_eq!(endpoint_from_env(&env), Err(ImdsError::Disabled));
        assert!(
            ImdsError::Disabled
                .to_string()
                .contains("AWS_EC2_METADATA_DISABLED")
        );
        let env = Env::from_pairs(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", "169.254.169.254")]);
        assert!(matches!(
            endpoint_from_env(&env),
            Err(ImdsError::BadEndpoint(_))
        ));
    }

    #[test]
    fn token_lifetime_comes_from_the_ttl_header() {
        let now = Instant::now();
        let response = |body: &str, ttl: Option<&str>| HttpResponse {
            status: 200,
            headers: ttl
                .map(|t| vec![("X-Aws-Ec2-Metadata-Token-Ttl-Seconds".into(), t.into())])
                .unwrap_or_default(),
            body: body.as_bytes().to_vec(),
        };
        let t = parse_token(&response("AQAE-tok\n", Some("60")), now).unwrap();
        assert_eq!(t.value, "AQAE-tok");
        assert!(t.fresh_at(now + Duration::from_secs(29)));
        assert!(!t.fresh_at(now + Duration::from_secs(30)));
        let t = parse_token(&response("tok", None), now).unwrap();
        assert_eq!(t.expires_at, now + Duration::from_secs(TOKEN_TTL_SECS));
        let huge = u64::MAX.to_string();
        let t = parse_token(&response("tok", Some(&huge)), now).unwrap();
        assert_eq!(
            t.expires_at,
            now + Duration::from_secs(TOKEN_TTL_SECS),
            "capped"
        );
        assert!(parse_token(&response("bad\r\ntoken", None), now).is_err());
        assert!(parse_token(&response("", None), now).is_err());
    }

    #[test]
    fn role_credentials_document_is_checked_and_case_insensitive() {
        let c = parse_role_credentials(ROLE_DOC).unwrap();
        assert_eq!(c.access_key_id, "ASIAEXAMPLE");
        assert_eq!(c.session_token.as_deref(), Some("tok"));
        assert_eq!(
            c.expires_at,
            crate::timefmt::parse_iso8601("2024-05-01T18:00:00Z")
        );
        let lower = r#"{"code":"Success","accesskeyid":"A","secretaccesskey":"S","token":"T","expiration":"2024-05-01T18:00:00Z"}"#;
        assert_eq!(parse_role_credentials(lower).unwrap().access_key_id, "A");
        let failed = r#"{"Code":"AssumeRoleUnauthorizedAccess","Message":"denied"}"#;
        let err = parse_role_credentials(failed).unwrap_err();
        assert!(
            err.contains("AssumeRoleUnauthorizedAccess") && err.contains("denied"),
            "{err}"
        );
        let no_secret =
            r#"{"Code":"Success","AccessKeyId":"A","Expiration":"2024-05-01T18:00:00Z"}"#;
        assert!(
            parse_role_credentials(no_secret)
                .unwrap_err()
                .contains("SecretAccessKey")
        );
        let bad_date = ROLE_DOC.replace("2024-05-01T18:00:00Z", "tomorrow");
        let err = parse_role_credentials(&bad_date).unwrap_err();
        assert!(err.contains("tomorrow") && !err.contains("s3cr3t"), "{err}");
        assert!(
            parse_role_credentials("[1,2")
                .unwrap_err()
                .starts_with("not JSON")
        );
    }

    #[test]
    fn identity_document_needs_a_region() {
        let d = parse_identity_document(&fake::identity_document(
            "i-0abc",
            "eu-west-1",
            "eu-west-1a",
        ))
        .unwrap();
        assert_eq!(
            (d.instance_id.as_str(), d.region.as_str()),
            ("i-0abc", "eu-west-1")
        );
        assert_eq!(
            (d.availability_zone.as_str(), d.instance_type.as_str()),
            ("eu-west-1a", "t3.micro")
        );
        assert!(
            parse_identity_document(r#"{"instanceId":"i-0abc"}"#)
                .unwrap_err()
                .contains("region")
        );
        assert!(parse_identity_document("<html>").is_err());
    }

    #[test]
    fn first_role_is_validated() {
        assert_eq!(first_role("\nMyRole\nOther\n"), Ok("MyRole"));
        assert_eq!(first_role(" \n"), Err(None));
        assert!(matches!(first_role("../../x"), Err(Some(_))));
    }

    #[test]
    fn token_is_fetched_once_and_sent_with_each_get() {
        let server = fake::imds(vec![
            ("meta-data/instance-id", "i-0123456789abcdef0\n".into()),
            (
                "meta-data/placement/availability-zone-id",
                "euw1-az1".into(),
            ),
        ]);
        let imds = client(&server);
        assert_eq!(imds.instance_id().unwrap(), "i-0123456789abcdef0");
        assert_eq!(imds.availability_zone_id().unwrap(), "euw1-az1");
        let seen = server.requests();
        let puts: Vec<_> = seen.iter().filter(|r| r.method == "PUT").collect();
        assert_eq!(puts.len(), 1);
        assert_eq!(puts[0].header(TOKEN_TTL_HEADER), Some("21600"));
        assert!(
            seen.iter()
                .filter(|r| r.method == "GET")
                .all(|r| r.header(TOKEN_HEADER) == Some("T1"))
        );
    }

    #[test]
    fn a_401_renews_the_token() {
        let mut answered = 0;
        let server =
            fake::serve(
                move |req| match (req.method.as_str(), req.header(TOKEN_HEADER)) {
                    ("PUT", _) => {
                        answered += 1;
                        reply(200, &format!("T{answered}"))
                    }
                    (_, Some("T2")) => reply(200, "i-0123456789abcdef0"),
                    _ => reply(401, ""),
                },
            );
        assert_eq!(
            client(&server).instance_id().unwrap(),
            "i-0123456789abcdef0"
        );
        assert_eq!(server.requests().len(), 4, "PUT, GET (401), PUT, GET");
    }

    #[test]
    fn identity_calls_never_fall_back_to_v1_but_role_credentials_do() {
        let server = fake::serve(|req| match (req.method.as_str(), req.path.as_str()) {
            ("PUT", _) => reply(403, ""),
            (_, "/latest/meta-data/iam/security-credentials/") => reply(200, "ssm-role\n"),
            (_, "/latest/meta-data/iam/security-credentials/ssm-role") => reply(200, ROLE_DOC),
            _ => reply(200, "i-0123456789abcdef0"),
        });
        let imds = client(&server);
        assert_eq!(imds.instance_id(), Err(ImdsError::TokenRefused(403)));
        assert!(
            server.requests().iter().all(|r| r.method == "PUT"),
            "no GET without a token"
        );
        let c = imds.role_credentials().unwrap();
        assert_eq!(c.access_key_id, "ASIAEXAMPLE");
        let gets: Vec<_> = server
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET")
            .collect();
        assert_eq!(gets.len(), 2);
        assert!(gets.iter().all(|r| r.header(TOKEN_HEADER).is_none()));
    }

    #[test]
    fn role_credentials_over_v2_and_no_role() {
        let server = fake::imds(vec![
            ("meta-data/iam/security-credentials/", "ssm-role".into()),
            (
                "meta-data/iam/security-credentials/ssm-role",
                ROLE_DOC.into(),
            ),
        ]);
        assert_eq!(
            client(&server)
                .role_credentials()
                .unwrap()
                .secret_access_key,
            "s3cr3t"
        );
        let server = fake::imds(Vec::new());
        assert_eq!(client(&server).role_credentials(), Err(ImdsError::NoRole));
    }

    #[test]
    fn server_errors_are_retried_a_bounded_number_of_times() {
        let mut count = 0;
        let server = fake::serve(move |req| {
            count += 1;
            match req.method.as_str() {
                "PUT" if count < 3 => reply(500, ""),
                "PUT" => reply(200, "T1"),
                _ => reply(503, ""),
            }
        });
        let err = client(&server).instance_id().unwrap_err();
        assert_eq!(
            err,
            ImdsError::Status {
                path: "meta-data/instance-id".into(),
                status: 503
            }
        );
        let methods: Vec<_> = server.requests().into_iter().map(|r| r.method).collect();
        assert_eq!(methods, ["PUT", "PUT", "PUT", "GET", "GET", "GET"]);
    }

    #[test]
    fn a_silent_endpoint_gives_up_within_the_timeout() {
        // Accepts connections (the kernel backlog) but never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let env = Env::from_pairs(&[(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://{}", listener.local_addr().unwrap()).as_str(),
        )]);
        let imds = ImdsClient::new(http(), &env).with_limits(Duration::from_millis(300), 2);
        let started = Instant::now();
        let err = imds.instance_id().unwrap_err();
        assert!(matches!(err, ImdsError::Transport { .. }), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        drop(listener);
    }

    #[test]
    fn disabled_imds_sends_nothing() {
        let server = fake::imds(Vec::new());
        let env = Env::from_pairs(&[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.url.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]);
        assert_eq!(
            ImdsClient::new(http(), &env).instance_id(),
            Err(ImdsError::Disabled)
        );
        assert!(server.requests().is_empty());
    }
}
