//! The one HTTPS client: ureq with rustls (ring), built-in + system + configured CA roots,
//! proxies from the environment, the ssm-lite User-Agent. Always verifies certificates.
//!
//! TLS is our own ureq connector rather than ureq's: ureq takes either its built-in roots or a
//! list of certificates, never both, and we need the webpki roots *plus* the system bundle,
//! `SSL_CERT_FILE` and the agent's extra CA files.
//!
//! Certificate validity is judged at max(system time, build time) (see [`FloorClockVerifier`]):
//! a device that boots with its clock in 1970 must still reach the services, which then tell it
//! the time (see [`super::clock`]).
//!
//! Proxies: ureq 3 reads one proxy for every scheme (`ALL_PROXY`, then `HTTPS_PROXY`, then
//! `HTTP_PROXY`) and its `NO_PROXY` matches `example.com` only exactly, so we pick the proxy per
//! URL scheme and match `NO_PROXY` ourselves, with one ureq agent (and connection pool) per route.

use log::{debug, warn};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime, pem::PemObject};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
    StreamOwned,
};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{
    Buffers, ConnectProxyConnector, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout,
    TcpConnector, Transport, TransportAdapter,
};
use ureq::{Agent, Proxy, RequestExt, SendBody};

/// Larger answers are refused: no AWS response we read comes near it, and it bounds memory.
pub const MAX_BODY: u64 = 16 * 1024 * 1024;

/// System CA bundles (Debian/Alpine, RHEL/Amazon Linux, others); the first present is used.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// A custom CA bundle amazon-ssm-agent operators already use for TLS-inspecting proxies.
const AGENT_CA_FILE: &str = "/etc/amazon/ssm/amazon-ssm-agent.crt";

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

/// An answer's status line and headers, and what was asked, while its body is read.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    what: String,
    timeout: Duration,
}

impl Head {
    /// The whole answer, its body read up to `limit` bytes.
    fn read_body(
        self,
        response: &mut ureq::http::Response<ureq::Body>,
        limit: u64,
    ) -> Result<HttpResponse, HttpError> {
        let body = response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| classify(e, &self.what, self.timeout))?;
        debug!("{} -> {} ({} bytes)", self.what, self.status, body.len());
        Ok(HttpResponse {
            status: self.status,
            headers: self.headers,
            body,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("I/O error: {0}")]
    Io(String),
    #[error("TLS failure: {0}")]
    Tls(String),
    #[error("answer too large: {0}")]
    TooLarge(String),
    #[error("{0}")]
    Other(String),
}

/// Proxy settings, normally from the environment (see [`ProxySettings::from_env`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    /// Proxy for `https://` URLs (an HTTP CONNECT proxy: `http://host:port` or `host:port`).
    pub https_proxy: Option<String>,
    /// Proxy for `http://` URLs (also used through CONNECT).
    pub http_proxy: Option<String>,
    /// Comma list of hosts that bypass the proxies: `*`, host names, domain suffixes (`example.com`,
    /// `.example.com` and `*.example.com` all match the domain and its subdomains), IP addresses
    /// and CIDR blocks. Nothing is exempt implicitly: list `127.0.0.1,localhost` to reach local
    /// services directly when a proxy is set.
    pub no_proxy: Option<String>,
}

impl ProxySettings {
    /// `HTTPS_PROXY`/`https_proxy`, `HTTP_PROXY`/`http_proxy`, `NO_PROXY`/`no_proxy` (upper case
    /// first, as Go does for the upstream agent); empty values count as unset.
    pub fn from_env() -> ProxySettings {
        let var = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        };
        ProxySettings {
            https_proxy: var(["HTTPS_PROXY", "https_proxy"]),
            http_proxy: var(["HTTP_PROXY", "http_proxy"]),
            no_proxy: var(["NO_PROXY", "no_proxy"]),
        }
    }
}

pub struct HttpClient {
    direct: Agent,
    via_https_proxy: Option<Agent>,
    via_http_proxy: Option<Agent>,
    no_proxy: Vec<NoProxyRule>,
    // Kept for connections made outside ureq (the MGS websockets).
    tls: Arc<ClientConfig>,
    https_proxy: Option<Proxy>,
    http_proxy: Option<Proxy>,
}

impl HttpClient {
    /// The agent's client: its User-Agent (ssm-lite, then the amazon-ssm-agent version the
    /// service expects as a suffix, see README) and the CA bundle amazon-ssm-agent operators
    /// already use for TLS-inspecting proxies.
    pub fn for_agent(config: &crate::config::Config) -> Result<HttpClient, HttpError> {
        HttpClient::new(&HttpConfig {
            user_agent: format!(
                "ssm-lite/{} ({}; {}) amazon-ssm-agent/{}",
                crate::update::version(),
                std::env::consts::OS,
                std::env::consts::ARCH,
                config.agent.version
            ),
            extra_ca_files: vec![PathBuf::from(AGENT_CA_FILE)],
        })
    }

    pub fn new(config: &HttpConfig) -> Result<HttpClient, HttpError> {
        HttpClient::with_proxies(config, &ProxySettings::from_env())
    }

    /// Like [`HttpClient::new`] with explicit proxy settings instead of the environment's.
    pub fn with_proxies(
        config: &HttpConfig,
        proxies: &ProxySettings,
    ) -> Result<HttpClient, HttpError> {
        let tls = Arc::new(tls_config(&ca_files(&config.extra_ca_files))?);
        let agent =
            |proxy: Option<&Proxy>| build_agent(&config.user_agent, proxy.cloned(), tls.clone());
        let https_proxy = proxies
            .https_proxy
            .as_deref()
            .map(parse_proxy)
            .transpose()?;
        let http_proxy = proxies.http_proxy.as_deref().map(parse_proxy).transpose()?;
        Ok(HttpClient {
            direct: agent(None),
            via_https_proxy: https_proxy.as_ref().map(|p| agent(Some(p))),
            via_http_proxy: http_proxy.as_ref().map(|p| agent(Some(p))),
            no_proxy: proxies
                .no_proxy
                .as_deref()
                .map(NoProxyRule::parse_list)
                .unwrap_or_default(),
            tls,
            https_proxy,
            http_proxy,
        })
    }

    /// The TLS settings (roots, protocol versions) of every connection this client makes.
    pub(crate) fn tls_config(&self) -> Arc<ClientConfig> {
        self.tls.clone()
    }

    /// The CONNECT proxy for a connection to `host`: the HTTPS proxy when the connection will
    /// use TLS, else the HTTP proxy; none when `NO_PROXY` exempts the host.
    pub(crate) fn proxy_for(&self, tls: bool, host: &str) -> Option<&Proxy> {
        let proxy = if tls {
            &self.https_proxy
        } else {
            &self.http_proxy
        };
        proxy.as_ref().filter(|_| !self.bypasses_proxy(host))
    }

    fn bypasses_proxy(&self, host: &str) -> bool {
        self.no_proxy.iter().any(|r| r.matches(host))
    }

    /// Sends one request; 4xx/5xx are returned as responses, not errors.
    pub fn send(&self, request: HttpRequest<'_>) -> Result<HttpResponse, HttpError> {
        let (mut response, head) = self.exchange(&request, request.body)?;
        head.read_body(&mut response, MAX_BODY)
    }

    /// [`HttpClient::send`] with `len` bytes read from `body` in place of `request.body`, sent
    /// with that `Content-Length`: a file is uploaded without being loaded whole.
    pub fn send_reader(
        &self,
        request: HttpRequest<'_>,
        body: &mut dyn Read,
        len: u64,
    ) -> Result<HttpResponse, HttpError> {
        let mut request = request;
        request
            .headers
            .push(("Content-Length".to_string(), len.to_string()));
        let (mut response, head) = self.exchange(&request, SendBody::from_reader(body))?;
        head.read_body(&mut response, MAX_BODY)
    }

    /// [`HttpClient::send`] whose 2xx answer body is streamed into `out` (at most `limit`
    /// bytes, else [`HttpError::TooLarge`]) rather than kept: the returned body is empty and
    /// the count is the bytes written. Other answers are read whole, as by `send`.
    pub fn download(
        &self,
        request: HttpRequest<'_>,
        out: &mut dyn Write,
        limit: u64,
    ) -> Result<(HttpResponse, u64), HttpError> {
        let (mut response, head) = self.exchange(&request, request.body)?;
        if !(200..300).contains(&response.status().as_u16()) {
            return Ok((head.read_body(&mut response, MAX_BODY)?, 0));
        }
        let mut reader = response
            .body_mut()
            .with_config()
            .limit(limit.saturating_add(1))
            .reader();
        let too_large = || HttpError::TooLarge(format!("{}: more than {limit} bytes", head.what));
        let over_limit = |e: &io::Error| {
            let inner = e.get_ref().and_then(|i| i.downcast_ref::<ureq::Error>());
            matches!(inner, Some(ureq::Error::BodyExceedsLimit(_)))
        };
        let written = io::copy(&mut reader, out).map_err(|e| {
            if over_limit(&e) {
                too_large()
            } else {
                classify_io(e, &head.what, head.timeout)
            }
        })?;
        if written > limit {
            return Err(too_large());
        }
        debug!(
            "{} -> {} ({written} bytes streamed)",
            head.what, head.status
        );
        let answer = HttpResponse {
            status: head.status,
            headers: head.headers,
            body: Vec::new(),
        };
        Ok((answer, written))
    }

    /// Sends `request` with `body` and returns the answer whose body is still to be read.
    fn exchange(
        &self,
        request: &HttpRequest<'_>,
        body: impl ureq::AsSendBody,
    ) -> Result<(ureq::http::Response<ureq::Body>, Head), HttpError> {
        let what = format!("{} {}", request.method, request.url);
        let mut builder = ureq::http::Request::builder()
            .method(request.method)
            .uri(request.url);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let http_request = builder
            .body(body)
            .map_err(|e| HttpError::Other(format!("{what}: cannot build the request: {e}")))?;
        let agent = self.agent_for(request.url);
        let response = http_request
            .with_agent(agent)
            .configure()
            .timeout_global(Some(request.timeout))
            .run()
            .map_err(|e| classify(e, &what, request.timeout))?;
        let head = Head {
            status: response.status().as_u16(),
            headers: response
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            what,
            timeout: request.timeout,
        };
        Ok((response, head))
    }

    fn agent_for(&self, url: &str) -> &Agent {
        let uri: Option<ureq::http::Uri> = url.parse().ok();
        let proxied = match uri.as_ref().and_then(|u| u.scheme_str()) {
            Some(s) if s.eq_ignore_ascii_case("https") => self.via_https_proxy.as_ref(),
            Some(s) if s.eq_ignore_ascii_case("http") => self.via_http_proxy.as_ref(),
            _ => None,
        };
        let host = uri.as_ref().and_then(|u| u.host()).unwrap_or_default();
        match proxied {
            Some(agent) if !self.bypasses_proxy(host) => agent,
            _ => &self.direct,
        }
    }
}

const INPUT_BUFFER: usize = 12 * 1024;
/// A request's line and headers must fit (a presigned URL with a session token is about 2 KiB).
const OUTPUT_BUFFER: usize = 8 * 1024;
const MAX_RESPONSE_HEADER: usize = 8 * 1024;

fn build_agent(user_agent: &str, proxy: Option<Proxy>, tls: Arc<ClientConfig>) -> Agent {
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .user_agent(user_agent)
        // A redirect would carry a signature made for another host; callers see the 3xx instead.
        .max_redirects(0)
        .proxy(proxy)
        // Every pooled connection keeps its buffers, and an HTTPS one has two pairs (TCP and
        // TLS): at ureq's 128 KiB defaults an idle agent held about 0.5 MiB per connection.
        // Bodies stream through them in pieces, so small ones cost only syscalls; AWS response
        // headers are well under 8 KiB (the limit of most web servers), and the header limit
        // stays under the input buffer so an oversized header is refused as one instead of
        // filling the buffer.
        .input_buffer_size(INPUT_BUFFER)
        .output_buffer_size(OUTPUT_BUFFER)
        .max_response_header_size(MAX_RESPONSE_HEADER)
        .build();
    let connector =
        ().chain(ConnectProxyConnector::default())
            .chain(TcpConnector::default())
            .chain(TlsConnector(tls));
    Agent::with_parts(config, connector, DefaultResolver::default())
}

fn parse_proxy(value: &str) -> Result<Proxy, HttpError> {
    // Messages show the proxy without any `user:password@`.
    let shown = value
        .rsplit_once('@')
        .map_or(value.to_string(), |(_, host)| {
            format!("<credentials>@{host}")
        });
    let value = value.trim();
    let proxy = Proxy::new(value).map_err(|e| {
        HttpError::Other(format!(
            "proxy {shown:?} is not a valid URL ({e}); use http://host:port"
        ))
    })?;
    if proxy.protocol() != ureq::ProxyProtocol::Http
        && proxy.protocol() != ureq::ProxyProtocol::Https
    {
        return Err(HttpError::Other(format!(
            "proxy {shown:?}: only HTTP CONNECT proxies (http:// or https://) are supported; \
             change or unset HTTPS_PROXY/HTTP_PROXY"
        )));
    }
    Ok(proxy)
}

/// Maps a ureq failure onto our variants; the text names the request and the cause.
fn classify(e: ureq::Error, what: &str, timeout: Duration) -> HttpError {
    use ureq::Error as E;
    match e {
        E::Timeout(phase) => HttpError::Timeout(format!(
            "{what}: no complete answer within {timeout:?} ({phase})"
        )),
        E::HostNotFound => HttpError::Connect(format!(
            "{what}: host not found (check DNS and the endpoint)"
        )),
        E::ConnectionFailed | E::ConnectProxyFailed(_) => HttpError::Connect(format!(
            "{what}: {e} (check the network and proxy settings)"
        )),
        E::BodyExceedsLimit(_) => {
            HttpError::TooLarge(format!("{what}: response body exceeds {MAX_BODY} bytes"))
        }
        E::LargeResponseHeader(..) => HttpError::TooLarge(format!(
            "{what}: response header exceeds {MAX_RESPONSE_HEADER} bytes"
        )),
        E::Tls(_) | E::Rustls(_) | E::Pem(_) | E::TlsRequired => tls_error(what, &e),
        E::Io(io) => classify_io(io, what, timeout),
        E::Other(inner) if inner.is::<HandshakeFailed>() => tls_error(what, &inner),
        other => HttpError::Other(format!("{what}: {other}")),
    }
}

fn classify_io(e: io::Error, what: &str, timeout: Duration) -> HttpError {
    use io::ErrorKind as K;
    // rustls reports handshake and record failures as io errors wrapping its own error.
    if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
        return tls_error(what, &e);
    }
    match e.kind() {
        K::TimedOut | K::WouldBlock => {
            HttpError::Timeout(format!("{what}: no answer within {timeout:?}: {e}"))
        }
        K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => {
            HttpError::Connect(format!(
                "{what}: cannot connect: {e} (check the endpoint and network)"
            ))
        }
        _ => HttpError::Io(format!("{what}: connection failed mid-way: {e}")),
    }
}

fn tls_error(what: &str, e: &dyn std::fmt::Display) -> HttpError {
    HttpError::Tls(format!(
        "{what}: TLS failed: {e} (is the server's CA in the system bundle, SSL_CERT_FILE or the \
         agent's CA file?)"
    ))
}

/// The PEM files whose certificates are trusted besides the webpki roots: the first system
/// bundle present, `SSL_CERT_FILE`, then `extra`.
fn ca_files(extra: &[PathBuf]) -> Vec<PathBuf> {
    let system = SYSTEM_BUNDLES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let env = std::env::var_os("SSL_CERT_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    system
        .into_iter()
        .chain(env)
        .chain(extra.iter().cloned())
        .collect()
}

/// rustls with ring, TLS 1.2+, verification always on (by webpki, at a time no earlier than the
/// build's).
fn tls_config(ca_files: &[PathBuf]) -> Result<ClientConfig, HttpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let fail = |e: &dyn std::fmt::Display| HttpError::Tls(format!("cannot set up TLS: {e}"));
    let roots = Arc::new(root_store(ca_files));
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| fail(&e))?;
    let verifier = FloorClockVerifier {
        inner: webpki,
        floor: UnixTime::since_unix_epoch(Duration::from_secs(BUILD_TIME)),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(&e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

/// When this binary was built (seconds since the epoch; 0 if unknown), from build.rs.
const BUILD_TIME: u64 = match u64::from_str_radix(env!("SSM_LITE_BUILD_TIME"), 10) {
    Ok(t) => t,
    Err(_) => 0,
};

/// webpki's verifier, judging certificate validity at `max(now, floor)`. Every other check
/// (chain, name, signatures, key usage) is webpki's own. A clock behind the build time is surely
/// wrong: certificates that expired before the build are still refused, and ones not yet valid
/// at the build accepted as soon as the build time reaches them.
#[derive(Debug)]
struct FloorClockVerifier {
    inner: Arc<WebPkiServerVerifier>,
    floor: UnixTime,
}

impl ServerCertVerifier for FloorClockVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let at = if now.as_secs() < self.floor.as_secs() {
            self.floor
        } else {
            now
        };
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, at)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn root_store(ca_files: &[PathBuf]) -> RootCertStore {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for path in ca_files {
        add_pem_file(&mut roots, path);
    }
    roots
}

/// Adds every certificate of a PEM file; problems are warnings, never fatal, since the
/// built-in roots still work for the public AWS endpoints.
fn add_pem_file(roots: &mut RootCertStore, path: &Path) {
    let pem = match std::fs::read(path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            debug!("CA file {} not present, skipped", path.display());
            return;
        }
        Err(e) => {
            warn!(
                "cannot read CA file {}: {e}; its certificates are not trusted",
                path.display()
            );
            return;
        }
    };
    let (mut added, mut known, mut bad) = (0, 0, 0);
    for cert in CertificateDer::pem_slice_iter(&pem) {
        match cert.map(|c| roots.add(c)) {
            Ok(Ok(())) if is_known(&roots.roots) => {
                // A system bundle repeats most built-in roots: keeping a second, owned copy of
                // each cost every agent about 60 KB of heap for nothing.
                roots.roots.pop();
                known += 1;
            }
            Ok(Ok(())) => added += 1,
            _ => bad += 1,
        }
    }
    roots.roots.shrink_to_fit();
    if added + known == 0 || bad > 0 {
        warn!(
            "CA file {}: {added} certificate(s) trusted, {known} already trusted, {bad} unusable \
             (expected PEM 'BEGIN CERTIFICATE' blocks)",
            path.display()
        );
    } else {
        debug!(
            "CA file {}: {added} certificate(s) trusted, {known} already trusted",
            path.display()
        );
    }
}

/// Whether the last root of `roots` (just added) is one of the others: same subject and key.
fn is_known(roots: &[TrustAnchor<'_>]) -> bool {
    let Some((new, others)) = roots.split_last() else {
        return false;
    };
    others.iter().any(|r| {
        r.subject == new.subject && r.subject_public_key_info == new.subject_public_key_info
    })
}

/// Wraps the TCP (or proxy tunnel) transport in TLS with our client config.
#[derive(Debug)]
struct TlsConnector(Arc<ClientConfig>);

impl<In: Transport> Connector<In> for TlsConnector {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details
            .uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| ureq::Error::Tls("invalid TLS server name"))?;
        let mut conn = ClientConnection::new(self.0.clone(), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock).map_err(handshake_error)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(TlsTransport {
            buffers,
            stream: StreamOwned::new(conn, sock),
        })))
    }
}

/// A handshake cut short (peer closed, sent something that is not TLS) is a TLS failure, not a
/// mid-request one; timeouts stay timeouts.
fn handshake_error(e: io::Error) -> ureq::Error {
    match ureq::Error::from(e) {
        ureq::Error::Io(e)
            if !matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            ureq::Error::Other(Box::new(HandshakeFailed(e)))
        }
        other => other,
    }
}

#[derive(Debug)]
struct HandshakeFailed(io::Error);

impl std::fmt::Display for HandshakeFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "handshake failed: {}", self.0)
    }
}

impl std::error::Error for HandshakeFailed {}

struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTransport").finish_non_exhaustive()
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.sock.set_timeout(timeout);
        let output = self.buffers.output().get(..amount).unwrap_or_default();
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.sock.set_timeout(timeout);
        let amount = self.stream.read(self.buffers.input_append_buf())?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.sock.get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

/// One `NO_PROXY` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NoProxyRule {
    All,
    /// The domain itself and every name under it.
    Domain(String),
    Net(IpAddr, u8),
}

impl NoProxyRule {
    fn parse_list(list: &str) -> Vec<NoProxyRule> {
        list.split(',')
            .filter_map(|e| NoProxyRule::parse(e.trim()))
            .collect()
    }

    fn parse(entry: &str) -> Option<NoProxyRule> {
        if entry == "*" {
            return Some(NoProxyRule::All);
        }
        if let Some((addr, bits)) = entry.split_once('/') {
            let (addr, bits): (IpAddr, u8) = (addr.parse().ok()?, bits.parse().ok()?);
            return (bits <= if addr.is_ipv4() { 32 } else { 128 })
                .then_some(NoProxyRule::Net(addr, bits));
        }
        let bare = entry.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Some(NoProxyRule::Net(ip, if ip.is_ipv4() { 32 } else { 128 }));
        }
        // `host:port` entries: the port is ignored, as every port of that host bypasses.
        let host = entry.trim_start_matches('*').trim_start_matches('.');
        let host = host
            .rsplit_once(':')
            .map_or(host, |(h, _)| h)
            .to_ascii_lowercase();
        (!host.is_empty()).then_some(NoProxyRule::Domain(host))
    }

    fn matches(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.');
        match self {
            NoProxyRule::All => true,
            NoProxyRule::Domain(d) => {
                let host = host.to_ascii_lowercase();
                host == *d
                    || host
                        .strip_suffix(d.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            }
            NoProxyRule::Net(net, bits) => host
                .parse::<IpAddr>()
                .is_ok_and(|ip| in_net(ip, *net, *bits)),
        }
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let prefix = |a: u128, b: u128, width: u32| {
        let shift = width - u32::from(bits);
        shift >= width || (a >> shift) == (b >> shift)
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => prefix(u32::from(a).into(), u32::from(b).into(), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => prefix(a.into(), b.into(), 128),
        _ => false,
    }
}

/// HTTP/1.1 servers, a CONNECT proxy and a test CA on 127.0.0.1 for the tests of this module,
/// the JSON client and the MGS websockets.
#[cfg(test)]
pub(crate) mod test_server {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    use std::io::{self, BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, mpsc};
    use std::thread;

    /// One request as received.
    #[derive(Debug, Clone)]
    pub struct Received {
        pub request_line: String,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl Received {
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// Reads one request (head plus `Content-Length` body); `None` at end of stream.
    pub fn read_request(reader: &mut impl BufRead) -> Option<Received> {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).ok()? == 0 {
            return None;
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).ok()?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (n, v) = line.split_once(':')?;
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
        let mut received = Received {
            request_line: request_line.trim_end().to_string(),
            headers,
            body: Vec::new(),
        };
        let len: usize = received
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        received.body = vec![0; len];
        reader.read_exact(&mut received.body).ok()?;
        Some(received)
    }

    pub struct Server {
        pub port: u16,
        /// Connections accepted so far.
        pub connections: Arc<AtomicUsize>,
        pub requests: mpsc::Receiver<Received>,
    }

    impl Server {
        pub fn url(&self) -> String {
            format!("http://127.0.0.1:{}", self.port)
        }
        pub fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }
    }

    /// Serves every connection on its own thread; `respond` returns the raw bytes to write for
    /// each request, or `None` to close the connection without answering. Requests are
    /// forwarded to [`Server::requests`].
    pub fn serve(respond: impl Fn(&Received) -> Option<Vec<u8>> + Send + Sync + 'static) -> Server {
        let (tx, rx) = mpsc::channel();
        let mut server = serve_raw(move |stream| {
            let mut reader = BufReader::new(stream.try_clone().expect("clone test socket"));
            while let Some(request) = read_request(&mut reader) {
                let answer = respond(&request);
                let _ = tx.send(request);
                match answer {
                    Some(bytes) if (&stream).write_all(&bytes).is_ok() => {}
                    _ => return,
                }
            }
        });
        server.requests = rx;
        server
    }

    /// Hands each accepted connection to `handle` on a new thread.
    pub fn serve_raw(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let (handle, counter) = (Arc::new(handle), connections.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                let handle = handle.clone();
                thread::spawn(move || handle(stream));
            }
        });
        Server {
            port,
            connections,
            requests: mpsc::channel().1,
        }
    }

    // A test CA and a leaf for localhost/127.0.0.1 it signed (P-256, valid until 2126), made with
    // `openssl req -x509` and `openssl x509 -req` for these tests only.
    pub const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBnTCCAUOgAwIBAgIUCxIl3MgeQeLPyZgx/HsSnruvfL4wCgYIKoZIzj0EAwIw
GzEZMBcGA1UEAwwQc3NtLWxpdGUgdGVzdCBDQTAgFw0yNjExMjIwMTU3MTBaGA8y
MTI2MTAyOTAxNTcxMFowGzEZMBcGA1UEAwwQc3NtLWxpdGUgdGVzdCBDQTBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABLPTYZI7QVy9bLZWYuLvfvS+dEQUMkTf2xfk
ZYKSAtU19mmXMyAbQdkBgTS8OfOhMkFmt4bxbiMDtDRXDFyCKqajYzBhMB0GA1Ud
DgQWBBSARySBqbOGp7uaOH9b/7+p6R4XKDAfBgNVHSMEGDAWgBSARySBqbOGp7ua
OH9b/7+p6R4XKDAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB/wQEAwICBDAKBggq
hkjOPQQDAgNIADBFAiEAqF+gHeHMqKi0bJdcFd45+cbm8F82KwVM5IzbAMgPjy4C
IDmNh24cZHnXASI+RNryHSS+jGhqUX1UyzAdRi/dwfLO
-----END CERTIFICATE-----
";
    pub const TEST_LEAF: &str = "-----BEGIN CERTIFICATE-----
MIIBsTCCAVegAwIBAgIUM/L/YybLTTPIQvAl12WJBMltge8wCgYIKoZIzj0EAwIw
GzEZMBcGA1UEAwwQc3NtLWxpdGUgdGVzdCBDQTAgFw0yNjExMjIwMTU3MTBaGA8y
MTI2MTAyOTAxNTcxMFowFDESMBAGA1UEAwwJbG9jYWxob3N0MFkwEwYHKoZIzj0C
AQYIKoZIzj0DAQcDQgAE3zbkHPMdaEUP/NkrLNR3TrEPbm9Asa4w/JSdfVp734Df
dBgdnGVBVkY7MI1K/pR4ubmSrnN225+uBcSLFPv2/aN+MHwwGgYDVR0RBBMwEYIJ
bG9jYWxob3N0hwR/AAABMAkGA1UdEwQCMAAwEwYDVR0lBAwwCgYIKwYBBQUHAwEw
HQYDVR0OBBYEFGM7WrdolaNaZyZ1o6sAwR30ZkiWMB8GA1UdIwQYMBaAFIBHJIGp
s4anu5o4f1v/v6npHhcoMAoGCCqGSM49BAMCA0gAMEUCIQCdI82SQM4KAp2bCQ4z
d8Vh9B47w5VnKD5ngkGEudi45QIgOOfXf1MhmziMAZa2uCB90cnWxmD+pkWfxUQ5
84QmFUk=
-----END CERTIFICATE-----
";
    pub const TEST_LEAF_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgeGRGsGXWE1DqTTPG
/IPcg+EkD9QIrD7dbxiL1EVYjlKhRANCAATfNuQc8x1oRQ/82Sss1HdOsQ9ub0Cx
rjD8lJ19WnvfgN90GB2cZUFWRjswjUr+lHi5uZKuc3bbn64FxIsU+/b9
-----END PRIVATE KEY-----
";

    /// A server config with the test leaf certificate (trusted via [`TEST_CA`]).
    pub fn tls_server_config() -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = vec![CertificateDer::from_pem_slice(TEST_LEAF.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(TEST_LEAF_KEY.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Arc::new(config)
    }

    /// A CONNECT proxy that records each CONNECT line and then tunnels bytes both ways.
    pub fn connect_proxy() -> (Server, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let server = serve_raw(move |client| {
            let Some(req) = read_request(&mut BufReader::new(client.try_clone().unwrap())) else {
                return;
            };
            log.lock().unwrap().push(req.request_line.clone());
            let target = req
                .request_line
                .split(' ')
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let Ok(upstream) = TcpStream::connect(&target) else {
                return;
            };
            let _ = (&client).write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
            let (mut c_read, mut u_write) =
                (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            std::thread::spawn(move || io::copy(&mut c_read, &mut u_write));
            let _ = io::copy(&mut &upstream, &mut &client);
        });
        (server, seen)
    }

    /// A complete HTTP/1.1 response with a `Content-Length`.
    pub fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
        for (n, v) in headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::test_server::{
        Server, TEST_CA, connect_proxy, read_request, response, serve, serve_raw, tls_server_config,
    };
    use super::*;
    use std::io::BufReader;
    use std::sync::Mutex;
    use std::time::Instant;

    fn client(proxies: &ProxySettings) -> HttpClient {
        let config = HttpConfig {
            user_agent: "ssm-lite-test/1.0".into(),
            extra_ca_files: vec![],
        };
        HttpClient::with_proxies(&config, proxies).unwrap()
    }

    fn get(c: &HttpClient, url: &str, timeout: Duration) -> Result<HttpResponse, HttpError> {
        c.send(HttpRequest {
            method: "GET",
            url,
            headers: vec![],
            body: b"",
            timeout,
        })
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn returns_body_and_reuses_the_connection() {
        let server = serve(|_| Some(response(200, &[("X-Test", "yes")], b"hello")));
        let c = client(&ProxySettings::default());
        let started = Instant::now();
        for _ in 0..3 {
            let r = c
                .send(HttpRequest {
                    method: "POST",
                    url: &format!("{}/", server.url()),
                    headers: vec![("X-Amz-Target".into(), "A.B".into())],
                    body: b"{}",
                    timeout: 5 * SECOND,
                })
                .unwrap();
            assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
            assert!(
                r.headers.iter().any(|(n, v)| n == "x-test" && v == "yes"),
                "{:?}",
                r.headers
            );
        }
        eprintln!("3 requests on one connection took {:?}", started.elapsed());
        let seen = server.requests.recv().unwrap();
        assert_eq!(seen.request_line, "POST / HTTP/1.1");
        assert_eq!(seen.header("user-agent"), Some("ssm-lite-test/1.0"));
        assert_eq!(seen.header("x-amz-target"), Some("A.B"));
        assert_eq!(seen.body, b"{}");
        assert_eq!(
            server.connections(),
            1,
            "keep-alive should reuse one connection"
        );
    }

    #[test]
    fn error_status_is_a_response() {
        let server = serve(|_| Some(response(503, &[], b"{\"__type\":\"x\"}")));
        let r = get(
            &client(&ProxySettings::default()),
            &server.url(),
            5 * SECOND,
        )
        .unwrap();
        assert_eq!(
            (r.status, r.body.as_slice()),
            (503, &b"{\"__type\":\"x\"}"[..])
        );
    }

    #[test]
    fn silent_server_times_out_within_the_deadline() {
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        let server = serve_raw(move |s| keep.lock().unwrap().push(s));
        let started = Instant::now();
        let err = get(
            &client(&ProxySettings::default()),
            &server.url(),
            Duration::from_millis(300),
        )
        .unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, HttpError::Timeout(_)), "{err}");
        assert!(
            took >= Duration::from_millis(300) && took < 3 * SECOND,
            "took {took:?}"
        );
        assert!(err.to_string().contains(&server.url()), "{err}");
    }

    #[test]
    fn stalled_body_times_out() {
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        let server = serve_raw(move |mut s| {
            read_request(&mut BufReader::new(s.try_clone().unwrap()));
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
            keep.lock().unwrap().push(s); // open, the body never finished
        });
        let err = get(
            &client(&ProxySettings::default()),
            &server.url(),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(matches!(err, HttpError::Timeout(_)), "{err}");
    }

    #[test]
    fn refused_port_is_a_connect_error() {
        // Port 0: nobody can listen there (a port bound and released could be taken again by a
        // test running beside this one).
        let url = "http://127.0.0.1:0/".to_string();
        let err = get(&client(&ProxySettings::default()), &url, 5 * SECOND).unwrap_err();
        assert!(matches!(err, HttpError::Connect(_)), "{err}");
        assert!(err.to_string().contains(&url), "{err}");
    }

    #[test]
    fn close_mid_response_is_an_io_error() {
        let server = serve_raw(|mut s| {
            read_request(&mut BufReader::new(s.try_clone().unwrap()));
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
        });
        let err = get(
            &client(&ProxySettings::default()),
            &server.url(),
            5 * SECOND,
        )
        .unwrap_err();
        assert!(matches!(err, HttpError::Io(_)), "{err}");
    }

    #[test]
    fn oversized_body_is_refused() {
        let big = vec![b'x'; MAX_BODY as usize + 1];
        let server = serve(move |_| Some(response(200, &[], &big)));
        let err = get(
            &client(&ProxySettings::default()),
            &server.url(),
            20 * SECOND,
        )
        .unwrap_err();
        assert!(matches!(err, HttpError::TooLarge(_)), "{err}");
    }

    #[test]
    fn headers_up_to_the_limit_pass_and_bigger_ones_are_refused_at_once() {
        let header = |len: usize| ("X-Amz-Meta-Big".to_string(), "v".repeat(len));
        let (fits, over) = (
            header(MAX_RESPONSE_HEADER - 1024),
            header(MAX_RESPONSE_HEADER),
        );
        let server = serve(move |r| {
            let (name, value) = if r.request_line.contains("/over") {
                &over
            } else {
                &fits
            };
            Some(response(200, &[(name.as_str(), value.as_str())], b"body"))
        });
        let c = client(&ProxySettings::default());
        let ok = get(&c, &format!("{}/fits", server.url()), 5 * SECOND).unwrap();
        assert_eq!((ok.status, ok.body.as_slice()), (200, &b"body"[..]));
        let started = Instant::now();
        let err = get(&c, &format!("{}/over", server.url()), 5 * SECOND).unwrap_err();
        assert!(matches!(err, HttpError::TooLarge(_)), "{err}");
        assert!(
            started.elapsed() < 5 * SECOND,
            "{err} after {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn failed_handshakes_are_tls_errors() {
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        let plain = serve_raw(move |mut s| {
            let _ = s.write_all(&response(400, &[], b"not tls"));
            keep.lock().unwrap().push(s);
        });
        let hang_up = serve_raw(drop);
        for server in [plain, hang_up] {
            let url = format!("https://127.0.0.1:{}/", server.port);
            let err = get(&client(&ProxySettings::default()), &url, 5 * SECOND).unwrap_err();
            assert!(matches!(err, HttpError::Tls(_)), "{err}");
            assert!(err.to_string().contains(&url), "{err}");
        }
    }

    /// An HTTPS server on 127.0.0.1 with the test leaf certificate, answering `secure`.
    fn tls_server() -> Server {
        let config = tls_server_config();
        serve_raw(move |tcp| {
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                return;
            };
            let mut reader = BufReader::new(StreamOwned::new(conn, tcp));
            while read_request(&mut reader).is_some() {
                if reader
                    .get_mut()
                    .write_all(&response(200, &[], b"secure"))
                    .is_err()
                {
                    return;
                }
            }
        })
    }

    #[test]
    fn https_verifies_against_the_extra_ca_file_only_when_given() {
        let server = tls_server();
        let ca = std::env::temp_dir().join(format!("ssm-lite-test-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, TEST_CA).unwrap();
        let trusting = HttpConfig {
            user_agent: "t".into(),
            extra_ca_files: vec![ca.clone()],
        };
        let trusting = HttpClient::with_proxies(&trusting, &ProxySettings::default()).unwrap();
        for host in ["127.0.0.1", "localhost"] {
            let url = format!("https://{host}:{}/", server.port);
            assert_eq!(
                get(&trusting, &url, 5 * SECOND).unwrap().body,
                b"secure",
                "{url}"
            );
        }
        let url = format!("https://127.0.0.1:{}/", server.port);
        let err = get(&client(&ProxySettings::default()), &url, 5 * SECOND).unwrap_err();
        assert!(matches!(err, HttpError::Tls(_)), "{err}");
        std::fs::remove_file(&ca).unwrap();
    }

    /// A device whose clock says 1970 still accepts a valid chain: validity is judged at the
    /// build time. The test chain is valid from 2026-11-22 to 2126.
    #[test]
    fn certificates_are_judged_no_earlier_than_the_build_time() {
        let ca = CertificateDer::from_pem_slice(TEST_CA.as_bytes()).unwrap();
        let leaf = CertificateDer::from_pem_slice(test_server::TEST_LEAF.as_bytes()).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let at = |floor: u64, now: u64| {
            let verifier = FloorClockVerifier {
                inner: webpki.clone(),
                floor: UnixTime::since_unix_epoch(Duration::from_secs(floor)),
            };
            let now = UnixTime::since_unix_epoch(Duration::from_secs(now));
            verifier.verify_server_cert(&leaf, &[], &name, &[], now)
        };
        let not_before = 1_795_312_630; // 2026-11-22T01:57:10Z
        assert!(
            BUILD_TIME >= not_before,
            "build time {BUILD_TIME}: build from a git checkout or set SOURCE_DATE_EPOCH"
        );
        assert!(at(BUILD_TIME, 0).is_ok(), "1970 clock, real build time");
        let not_yet = at(0, 0).unwrap_err().to_string();
        assert!(not_yet.contains("not valid yet"), "{not_yet}");
        assert!(at(BUILD_TIME, not_before + 86_400).is_ok(), "a right clock");
        let expired = at(BUILD_TIME, 5_000_000_000).unwrap_err().to_string(); // 2128
        assert!(expired.contains("expired"), "{expired}");
        let other = ServerName::try_from("example.com").unwrap();
        let floor = FloorClockVerifier {
            inner: webpki.clone(),
            floor: UnixTime::since_unix_epoch(Duration::from_secs(BUILD_TIME)),
        };
        let wrong_name = floor.verify_server_cert(&leaf, &[], &other, &[], UnixTime::now());
        assert!(wrong_name.is_err(), "names are still checked");
    }

    #[test]
    fn http_proxy_is_used_per_scheme_and_no_proxy_bypasses_it() {
        let origin = serve(|_| Some(response(200, &[], b"origin")));
        let (proxy, seen) = connect_proxy();
        let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
        let url = format!("{}/x", origin.url());

        let via = client(&ProxySettings {
            http_proxy: Some(proxy_url.clone()),
            ..Default::default()
        });
        assert_eq!(get(&via, &url, 5 * SECOND).unwrap().body, b"origin");
        assert_eq!(
            *seen.lock().unwrap(),
            vec![format!("CONNECT 127.0.0.1:{} HTTP/1.1", origin.port)]
        );

        // An https proxy does not apply to http URLs, and NO_PROXY exempts the host.
        let https_only = client(&ProxySettings {
            https_proxy: Some(proxy_url.clone()),
            ..Default::default()
        });
        let exempt = client(&ProxySettings {
            http_proxy: Some(proxy_url),
            no_proxy: Some("example.com, 127.0.0.1".into()),
            ..Default::default()
        });
        for c in [&https_only, &exempt] {
            assert_eq!(get(c, &url, 5 * SECOND).unwrap().body, b"origin");
        }
        assert_eq!(
            seen.lock().unwrap().len(),
            1,
            "bypassed requests went through the proxy"
        );
    }

    #[test]
    fn rejects_unsupported_proxies() {
        let config = HttpConfig {
            user_agent: "t".into(),
            extra_ca_files: vec![],
        };
        let socks = ProxySettings {
            https_proxy: Some("socks5://127.0.0.1:1080".into()),
            ..Default::default()
        };
        let err = HttpClient::with_proxies(&config, &socks)
            .err()
            .expect("socks accepted");
        assert!(err.to_string().contains("socks5://127.0.0.1:1080"), "{err}");
    }

    #[test]
    fn no_proxy_rules() {
        let rules = NoProxyRule::parse_list(
            "example.com, .corp.local,*.svc, 10.0.0.0/8, ::1, host:8080,,bad/99",
        );
        let m = |h: &str| rules.iter().any(|r| r.matches(h));
        for host in [
            "example.com",
            "a.b.example.com",
            "x.corp.local",
            "corp.local",
            "a.svc",
            "10.2.3.4",
            "[::1]",
            "HOST",
        ] {
            assert!(m(host), "{host} should bypass");
        }
        for host in [
            "notexample.com",
            "example.com.evil",
            "11.0.0.1",
            "127.0.0.1",
            "localhost",
            "svc2",
        ] {
            assert!(!m(host), "{host} should use the proxy");
        }
        assert!(
            NoProxyRule::parse_list("*")
                .iter()
                .any(|r| r.matches("anything"))
        );
    }

    #[test]
    fn ca_files_add_roots_once_and_bad_files_are_skipped() {
        let dir = std::env::temp_dir().join(format!("ssm-lite-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let builtin = webpki_roots::TLS_SERVER_ROOTS.len();
        let bad = [garbage, dir.join("missing.pem"), dir.clone()];
        assert_eq!(root_store(&bad).roots.len(), builtin);
        // The same CA twice in one file and once more in another is one root more.
        let (twice, again) = (dir.join("twice.pem"), dir.join("again.pem"));
        std::fs::write(&twice, format!("{TEST_CA}{TEST_CA}")).unwrap();
        std::fs::write(&again, TEST_CA).unwrap();
        let store = root_store(&[twice, again]);
        assert_eq!(store.roots.len(), builtin + 1);
        assert_eq!(store.roots.capacity(), builtin + 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
