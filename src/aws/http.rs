//! The one HTTPS client: ureq with rustls (ring), built-in + system + configured CA roots,
//! proxies from the environment, the ssm-lite User-Agent. Always verifies certificates.
//! STUB: interface fixed; implementation in progress.

use std::path::PathBuf;
use std::time::Duration;

pub struct HttpConfig {
    /// Full User-Agent header value.
    pub user_agent: String,
    /// Extra PEM bundles to trust in addition to the built-in roots (missing files are skipped).
    pub extra_ca_files: Vec<PathBuf>,
}

pub struct HttpRequest<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
    /// Whole-request deadline (connect + send + wait for the answer + read the body).
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug)]
pub enum HttpError {
    Timeout(String),
    Connect(String),
    Io(String),
    Tls(String),
    TooLarge(String),
    Other(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for HttpError {}

pub struct HttpClient {}

impl HttpClient {
    pub fn new(config: &HttpConfig) -> Result<HttpClient, HttpError> {
        let _ = config;
        todo!("HttpClient::new")
    }

    /// Sends one request; 4xx/5xx are returned as responses, not errors.
    pub fn send(&self, request: HttpRequest<'_>) -> Result<HttpResponse, HttpError> {
        let _ = request;
        todo!("HttpClient::send")
    }
}
