//! A WebSocket to MGS: `wss://` through rustls (or `ws://` for local emulators), optionally via an
//! HTTP CONNECT proxy, with SigV4 headers on the upgrade request. Non-blocking underneath so
//! that one thread can wait on the socket and other sources at once with `sys::poll`.
//!
//! Driving a connection: call [`Connection::read`] until it returns `None` before every wait,
//! not only when the socket turned readable, because sending can pull input off the socket into
//! TLS buffers where `poll` no longer sees it; wait for writability while
//! [`Connection::wants_write`] and then call [`Connection::flush`].
//!
//! The connection shares the TLS settings (roots, versions) and the proxy choice
//! (`HTTPS_PROXY` for `wss://`, `HTTP_PROXY` for `ws://`, `NO_PROXY`) of the agent's
//! [`HttpClient`].

use crate::aws::http::{HttpClient, HttpResponse};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::{HeaderName, HeaderValue, Uri};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Bytes, Error as WsLibError, Message, WebSocket};

/// Largest message or frame accepted from the peer: AgentMessages stay far below it (their
/// payload is capped at 1 MiB), so anything bigger is a broken or hostile peer.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// Bytes that may wait for a slow peer before sending fails instead of queuing more.
/// Read buffer per connection; larger frames still arrive, over several reads.
const READ_BUFFER: usize = 16 * 1024;

pub const MAX_QUEUED: usize = 16 * 1024 * 1024;
/// How much of a refused upgrade's body an error shows.
const BODY_SHOWN: usize = 1000;
/// Longest CONNECT answer head read from a proxy.
const MAX_PROXY_HEAD: usize = 16 * 1024;

/// What arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    /// The peer closed the connection (close frame or EOF).
    Closed,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WsError(pub String);

pub struct Connection {
    ws: WebSocket<Stream>,
    fd: RawFd,
    /// Set when a write stopped at WouldBlock, cleared by a complete flush.
    blocked: bool,
    closed: bool,
    last_pong: Instant,
}

impl Connection {
    /// [`Connection::open`] without the refusal's answer.
    #[cfg(test)]
    pub fn connect(
        http: &HttpClient,
        url: &str,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<Connection, WsError> {
        Connection::open(http, url, headers, timeout).map_err(|(e, _)| e)
    }

    /// Opens `url` (`wss://…` or `ws://…`), sending `headers` (e.g. SigV4) with the upgrade.
    /// Blocking, bounded by `timeout` (name resolution aside); afterwards the socket is
    /// non-blocking. A refused upgrade also gives the service's answer (status, headers, body),
    /// from which a signer can tell whether signing again helps.
    pub fn open(
        http: &HttpClient,
        url: &str,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<Connection, (WsError, Option<HttpResponse>)> {
        let fail = |e: WsError| WsError(format!("websocket {url}: {}", e.0));
        let plain = |e: WsError| (fail(e), None);
        let deadline = Instant::now() + timeout;
        let target = Target::parse(url).map_err(plain)?;
        let tcp = match http.proxy_for(target.tls, &target.host) {
            Some(proxy) => tunnel(proxy, &target, deadline),
            None => tcp_connect(&target.host, target.port, deadline),
        }
        .map_err(plain)?;
        let fd = tcp.socket.as_raw_fd();
        let stream = if target.tls {
            Stream::Tls(Box::new(tls(http, &target.host, tcp).map_err(plain)?))
        } else {
            Stream::Plain(tcp)
        };
        let mut ws = upgrade(url, headers, stream, timeout).map_err(|(e, r)| (fail(e), r))?;
        let tcp = ws.get_mut().tcp();
        tcp.deadline = None;
        tcp.socket
            .set_nonblocking(true)
            .map_err(|e| plain(WsError(format!("cannot make the socket non-blocking: {e}"))))?;
        Ok(Connection {
            ws,
            fd,
            blocked: false,
            closed: false,
            last_pong: Instant::now(),
        })
    }

    /// The socket's fd, to wait on with `sys::poll` (readable → `read`; writable → `flush`).
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// The next complete frame, `None` when nothing more is available right now. Pongs are
    /// consumed here (and noted for `last_pong`); pings are answered. After `Closed`, every
    /// call returns `Closed` again.
    pub fn read(&mut self) -> Result<Option<Frame>, WsError> {
        while !self.closed {
            match self.ws.read() {
                Ok(Message::Text(text)) => return Ok(Some(Frame::Text(text.as_str().into()))),
                Ok(Message::Binary(bytes)) => return Ok(Some(Frame::Binary(bytes.into()))),
                // tungstenite has queued the pong; flushing here also notes whether it still waits.
                Ok(Message::Ping(_)) => {
                    self.flush()?;
                }
                Ok(Message::Pong(_)) => self.last_pong = Instant::now(),
                Ok(Message::Close(_)) => self.closed = true,
                // Raw frames are only ever written, never read.
                Ok(Message::Frame(_)) => {}
                Err(e) if would_block(&e) => return Ok(None),
                Err(e) if is_end(&e) => self.closed = true,
                Err(e) => return Err(WsError(format!("websocket read failed: {e}"))),
            }
        }
        Ok(Some(Frame::Closed))
    }

    /// Queues a frame and writes as much as the socket takes now.
    pub fn send_text(&mut self, text: String) -> Result<(), WsError> {
        self.send(Message::text(text))
    }

    pub fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), WsError> {
        self.send(Message::binary(bytes))
    }

    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), WsError> {
        self.send(Message::Ping(Bytes::copy_from_slice(payload)))
    }

    /// Writes queued bytes; true when nothing is left queued (else wait for POLLOUT).
    pub fn flush(&mut self) -> Result<bool, WsError> {
        match self.ws.flush() {
            Ok(()) => self.blocked = false,
            Err(e) if would_block(&e) => self.blocked = true,
            Err(e) => return Err(write_error(e)),
        }
        Ok(!self.blocked)
    }

    /// True while queued bytes wait for the socket to become writable.
    pub fn wants_write(&self) -> bool {
        self.blocked
    }

    /// When the last pong arrived (or the connection opened).
    pub fn last_pong(&self) -> Instant {
        self.last_pong
    }

    fn send(&mut self, message: Message) -> Result<(), WsError> {
        match self.ws.write(message) {
            // WouldBlock: the frame is in tungstenite's queue; flush reports what is left.
            Ok(()) => {}
            Err(e) if would_block(&e) => {}
            Err(WsLibError::WriteBufferFull(_)) => {
                return Err(WsError(format!(
                    "websocket send queue full ({MAX_QUEUED} bytes wait for the peer): the \
                     connection is too slow or stalled; reconnect"
                )));
            }
            Err(e) => return Err(write_error(e)),
        }
        self.flush().map(drop)
    }
}

fn would_block(e: &WsLibError) -> bool {
    matches!(e, WsLibError::Io(io) if io.kind() == io::ErrorKind::WouldBlock)
}

/// The peer went away: a close handshake, or EOF or a reset without one.
fn is_end(e: &WsLibError) -> bool {
    use tungstenite::error::ProtocolError;
    match e {
        WsLibError::ConnectionClosed | WsLibError::AlreadyClosed => true,
        WsLibError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => true,
        WsLibError::Io(io) => matches!(
            io.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
        ),
        _ => false,
    }
}

fn write_error(e: WsLibError) -> WsError {
    WsError(format!("websocket write failed: {e}; reconnect"))
}

/// Where a `ws://`/`wss://` URL points.
pub(crate) struct Target {
    pub(crate) tls: bool,
    /// Without IPv6 brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, WsError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| WsError(format!("not a URL ({e}); expected wss://host/path")))?;
        let tls = match uri.scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            _ => return Err(WsError("the scheme must be ws:// or wss://".into())),
        };
        let host = uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(WsError("the URL has no host".into()));
        }
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Target {
            tls,
            host: host.to_string(),
            port,
        })
    }

    /// `host:port` for CONNECT, IPv6 in brackets.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The TCP socket. While connecting, each blocking read or write is bounded by what is left of
/// the connect deadline, so a peer that trickles bytes cannot stretch the connect.
pub(crate) struct Tcp {
    socket: TcpStream,
    deadline: Option<Instant>,
}

impl Tcp {
    /// Time left until the deadline (`None`: no deadline); an error once it has passed.
    fn left(&self) -> io::Result<Option<Duration>> {
        let Some(deadline) = self.deadline else {
            return Ok(None);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connect timeout passed",
            ));
        }
        Ok(Some(left))
    }
}

impl Read for Tcp {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(left) = self.left()? {
            self.socket.set_read_timeout(Some(left))?;
        }
        self.socket.read(buf)
    }
}

impl Write for Tcp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(left) = self.left()? {
            self.socket.set_write_timeout(Some(left))?;
        }
        self.socket.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

enum Stream {
    Plain(Tcp),
    Tls(Box<StreamOwned<ClientConnection, Tcp>>),
}

impl Stream {
    fn tcp(&mut self) -> &mut Tcp {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => &mut tls.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            // rustls takes nothing while its own send buffer is full, and says so with Ok(0),
            // which tungstenite would read as a reset: it means "try again when writable".
            Stream::Tls(tls) => match tls.write(buf)? {
                0 if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
                n => Ok(n),
            },
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

pub(crate) fn tcp_connect(host: &str, port: u16, deadline: Instant) -> Result<Tcp, WsError> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| WsError(format!("cannot resolve {host}: {e} (check DNS)")))?;
    let mut last = format!("{host} has no address");
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            last = format!("no connection to {host}:{port} within the timeout");
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(socket) => {
                // Small frames (acks, keystrokes) must not wait for Nagle's algorithm.
                let _ = socket.set_nodelay(true);
                return Ok(Tcp {
                    socket,
                    deadline: Some(deadline),
                });
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(WsError(format!(
        "{last} (check the endpoint, network and proxy settings)"
    )))
}

/// A TCP connection to `target` through an HTTP CONNECT proxy.
pub(crate) fn tunnel(
    proxy: &ureq::Proxy,
    target: &Target,
    deadline: Instant,
) -> Result<Tcp, WsError> {
    let shown = format!("proxy {}:{}", proxy.host(), proxy.port());
    if proxy.protocol() != ureq::ProxyProtocol::Http {
        return Err(WsError(format!(
            "{shown}: websockets reach proxies only over plain HTTP; use an http:// proxy URL"
        )));
    }
    let proxy_host = proxy.host().trim_start_matches('[').trim_end_matches(']');
    let mut tcp = tcp_connect(proxy_host, proxy.port(), deadline)
        .map_err(|e| WsError(format!("{shown}: {}", e.0)))?;
    let authority = target.authority();
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(user) = proxy.username() {
        let secret = format!("{user}:{}", proxy.password().unwrap_or_default());
        head.push_str(&format!(
            "Proxy-Authorization: Basic {}\r\n",
            crate::base64::encode(secret.as_bytes())
        ));
    }
    head.push_str("\r\n");
    let io_fail = |e: io::Error| WsError(format!("{shown}: CONNECT {authority} failed: {e}"));
    tcp.write_all(head.as_bytes()).map_err(io_fail)?;
    let answer = read_head(&mut tcp).map_err(io_fail)?;
    let status_line = answer.lines().next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if !(200..300).contains(&status) {
        return Err(WsError(format!(
            "{shown} refused CONNECT {authority}: {status_line:?} (check the proxy settings)"
        )));
    }
    Ok(tcp)
}

/// Reads an HTTP answer head up to its blank line, byte by byte so that nothing of the tunnel
/// behind it is consumed.
fn read_head(tcp: &mut Tcp) -> io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_PROXY_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "answer head too long",
            ));
        }
        tcp.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// TLS over `tcp` with the HttpClient's settings; the handshake runs with the upgrade's first
/// write.
fn tls(
    http: &HttpClient,
    host: &str,
    tcp: Tcp,
) -> Result<StreamOwned<ClientConnection, Tcp>, WsError> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| WsError(format!("{host:?} is not a valid TLS server name: {e}")))?;
    let conn = ClientConnection::new(http.tls_config(), name)
        .map_err(|e| WsError(format!("cannot start TLS with {host}: {e}")))?;
    Ok(StreamOwned::new(conn, tcp))
}

/// The HTTP upgrade with `headers` added (replacing any of the same name); a refusal comes
/// with the service's answer.
fn upgrade(
    url: &str,
    headers: &[(String, String)],
    stream: Stream,
    timeout: Duration,
) -> Result<WebSocket<Stream>, (WsError, Option<HttpResponse>)> {
    let mut request = url.into_client_request().map_err(|e| {
        (
            WsError(format!("cannot build the upgrade request: {e}")),
            None,
        )
    })?;
    for (name, value) in headers {
        let bad = || {
            let e = format!("header {name:?} cannot be sent (invalid name or value)");
            (WsError(e), None)
        };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        // The value is not shown: it may be a signature or token.
        let value = HeaderValue::from_str(value).map_err(|_| bad())?;
        request.headers_mut().insert(name, value);
    }
    // tungstenite fills its whole read buffer up front (128 KiB by default): with one websocket
    // per session that is most of a session's memory, and MGS frames are about 1 KiB.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        .max_write_buffer_size(MAX_QUEUED);
    let failure = match tungstenite::client::client_with_config(request, stream, Some(config)) {
        Ok((ws, _response)) => return Ok(ws),
        // Blocking sockets only stop short of the end when a timeout hit.
        Err(HandshakeError::Interrupted(_)) => {
            let e = WsError(format!("no upgrade answer within {timeout:?}"));
            return Err((e, None));
        }
        Err(HandshakeError::Failure(e)) => e,
    };
    if let WsLibError::Http(response) = failure {
        let refused = HttpResponse {
            status: response.status().as_u16(),
            headers: response
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect(),
            body: response.body().clone().unwrap_or_default(),
        };
        let body = String::from_utf8_lossy(&refused.body);
        let body: String = body.chars().take(BODY_SHOWN).collect();
        let e = format!("upgrade refused with HTTP {}: {body}", refused.status);
        return Err((WsError(e), Some(refused)));
    }
    Err((
        WsError(match failure {
            WsLibError::Io(e) if e.get_ref().is_some_and(|i| i.is::<rustls::Error>()) => format!(
                "TLS failed: {e} (is the server's CA in the system bundle, SSL_CERT_FILE or the \
             agent's CA file?)"
            ),
            WsLibError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                format!("no upgrade answer within {timeout:?}")
            }
            other => format!("upgrade failed: {other}"),
        }),
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::http::test_server::{
        Server, TEST_CA, connect_proxy, response, serve, serve_raw, tls_server_config,
    };
    use crate::aws::http::{HttpConfig, ProxySettings};
    use crate::sys::poll::{PollFd, poll};
    use std::path::PathBuf;
    use std::sync::mpsc::{Receiver, Sender, channel};
    use std::sync::{Arc, Mutex, OnceLock};
    use tungstenite::handshake::server::{Request, Response};

    const WAIT: Duration = Duration::from_secs(10);

    fn ca_file() -> PathBuf {
        static FILE: OnceLock<PathBuf> = OnceLock::new();
        FILE.get_or_init(|| {
            let path =
                std::env::temp_dir().join(format!("ssm-lite-ws-ca-{}.pem", std::process::id()));
            std::fs::write(&path, TEST_CA).unwrap();
            path
        })
        .clone()
    }

    fn client(proxies: ProxySettings) -> HttpClient {
        let config = HttpConfig {
            user_agent: "ssm-lite-test".into(),
            extra_ca_files: vec![ca_file()],
        };
        HttpClient::with_proxies(&config, &proxies).unwrap()
    }

    /// A websocket server on 127.0.0.1 that echoes text and binary messages and obeys the text
    /// commands `close` (close handshake), `drop` (hang up) and `ping me` (sends a ping).
    struct WsServer {
        server: Server,
        /// Each upgrade request's headers.
        upgrades: Receiver<Vec<(String, String)>>,
        /// Payloads of pongs the server received.
        pongs: Receiver<Vec<u8>>,
        /// When gated, each connection reads nothing until it receives a unit here.
        gate: Sender<()>,
    }

    impl WsServer {
        fn url(&self, tls: bool) -> String {
            let scheme = if tls { "wss" } else { "ws" };
            format!(
                "{scheme}://127.0.0.1:{}/v1/control-channel/i-1?role=subscribe",
                self.server.port
            )
        }
    }

    fn ws_server(tls: bool, gated: bool) -> WsServer {
        let (upgrade_tx, upgrades) = channel();
        let (pong_tx, pongs) = channel();
        let (gate, gate_rx) = channel::<()>();
        let gate_rx = Arc::new(Mutex::new(gate_rx));
        let server = serve_raw(move |tcp| {
            let (upgrade_tx, pong_tx) = (upgrade_tx.clone(), pong_tx.clone());
            let gate = gated.then(|| gate_rx.clone());
            if tls {
                let conn = rustls::ServerConnection::new(tls_server_config()).unwrap();
                echo(StreamOwned::new(conn, tcp), upgrade_tx, pong_tx, gate);
            } else {
                echo(tcp, upgrade_tx, pong_tx, gate);
            }
        });
        WsServer {
            server,
            upgrades,
            pongs,
            gate,
        }
    }

    // The upgrade callback's error type is tungstenite's, large or not.
    #[allow(clippy::result_large_err)]
    fn echo(
        stream: impl Read + Write,
        upgrades: Sender<Vec<(String, String)>>,
        pongs: Sender<Vec<u8>>,
        gate: Option<Arc<Mutex<Receiver<()>>>>,
    ) {
        let record = |request: &Request, response: Response| {
            let headers = request
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_string()))
                .collect();
            let _ = upgrades.send(headers);
            Ok(response)
        };
        let Ok(mut ws) = tungstenite::accept_hdr(stream, record) else {
            return;
        };
        if let Some(gate) = gate {
            let _ = gate.lock().unwrap().recv();
        }
        loop {
            let Ok(message) = ws.read() else { return };
            let reply = match message {
                Message::Text(t) if t.as_str() == "close" => {
                    let _ = ws.close(None);
                    while ws.read().is_ok() {}
                    return;
                }
                Message::Text(t) if t.as_str() == "drop" => return,
                Message::Text(t) if t.as_str() == "ping me" => {
                    Message::Ping(Bytes::from_static(b"srv"))
                }
                Message::Pong(p) => {
                    let _ = pongs.send(p.to_vec());
                    continue;
                }
                m @ (Message::Text(_) | Message::Binary(_)) => m,
                _ => continue,
            };
            if ws.send(reply).is_err() {
                return;
            }
        }
    }

    /// Drives `conn` as the agent will: drain reads, then wait for the socket (readable, and
    /// writable while output is queued), flush when writable.
    fn next_frame(conn: &mut Connection) -> Frame {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(frame) = conn.read().unwrap() {
                return frame;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no frame within {WAIT:?}");
            let mut fds = [PollFd::new(conn.fd(), true, conn.wants_write())];
            poll(&mut fds, Some(left)).unwrap();
            if fds[0].writable {
                conn.flush().unwrap();
            }
        }
    }

    fn connect(url: &str, http: &HttpClient) -> Connection {
        let headers = [
            (
                "Authorization".to_string(),
                "AWS4-HMAC-SHA256 Credential=x".to_string(),
            ),
            ("X-Amz-Date".to_string(), "20260101T000000Z".to_string()),
        ];
        Connection::connect(http, url, &headers, WAIT).unwrap()
    }

    #[test]
    fn upgrade_carries_headers_and_text_and_binary_echo() {
        for tls in [false, true] {
            let server = ws_server(tls, false);
            let mut conn = connect(&server.url(tls), &client(ProxySettings::default()));
            let headers = server.upgrades.recv().unwrap();
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(
                header("authorization"),
                Some("AWS4-HMAC-SHA256 Credential=x")
            );
            assert_eq!(header("x-amz-date"), Some("20260101T000000Z"));
            assert_eq!(
                header("host"),
                Some(format!("127.0.0.1:{}", server.server.port).as_str())
            );
            conn.send_text("{\"hello\":1}".into()).unwrap();
            assert_eq!(next_frame(&mut conn), Frame::Text("{\"hello\":1}".into()));
            conn.send_binary(vec![0, 1, 2, 255]).unwrap();
            assert_eq!(next_frame(&mut conn), Frame::Binary(vec![0, 1, 2, 255]));
            assert_eq!(conn.read().unwrap(), None, "tls={tls}");
        }
    }

    #[test]
    fn mebibyte_frames_pass_a_stalled_peer_and_come_back() {
        for tls in [false, true] {
            let server = ws_server(tls, true);
            let mut conn = connect(&server.url(tls), &client(ProxySettings::default()));
            let frames: Vec<Vec<u8>> = (0..8u8)
                .map(|i| (0..1024 * 1024).map(|j: u32| (j % 251) as u8 ^ i).collect())
                .collect();
            // The peer reads nothing yet: sending soon stops at WouldBlock with data queued.
            let mut sent = 0;
            while sent < frames.len() && !conn.wants_write() {
                conn.send_binary(frames[sent].clone()).unwrap();
                sent += 1;
            }
            assert!(
                conn.wants_write(),
                "tls={tls}: {sent} MiB went out without blocking"
            );
            assert!(!conn.flush().unwrap(), "the peer still reads nothing");
            server.gate.send(()).unwrap();
            let started = Instant::now();
            for frame in &frames[..sent] {
                let Frame::Binary(echoed) = next_frame(&mut conn) else {
                    panic!("expected a binary frame")
                };
                assert!(echoed == *frame, "tls={tls}: echo differs");
            }
            assert!(!conn.wants_write());
            eprintln!(
                "tls={tls}: {sent} x 1 MiB echoed in {:?}",
                started.elapsed()
            );
        }
    }

    #[test]
    fn pings_are_answered_and_pongs_noted() {
        for tls in [false, true] {
            let server = ws_server(tls, false);
            let mut conn = connect(&server.url(tls), &client(ProxySettings::default()));
            let opened = conn.last_pong();
            conn.send_ping(b"keepalive").unwrap();
            conn.send_text("after the ping".into()).unwrap();
            // The pong arrives before the echo, and read consumes it on the way.
            assert_eq!(next_frame(&mut conn), Frame::Text("after the ping".into()));
            assert!(conn.last_pong() > opened, "tls={tls}: pong not noted");

            // The server's ping is answered by reading alone, with nothing else to send.
            conn.send_text("ping me".into()).unwrap();
            let deadline = Instant::now() + WAIT;
            let pong = loop {
                assert_eq!(conn.read().unwrap(), None);
                if let Ok(pong) = server.pongs.try_recv() {
                    break pong;
                }
                assert!(
                    Instant::now() < deadline,
                    "tls={tls}: no pong reached the server"
                );
                let mut fds = [PollFd::new(conn.fd(), true, conn.wants_write())];
                poll(&mut fds, Some(Duration::from_millis(20))).unwrap();
            };
            assert_eq!(pong, b"srv");
        }
    }

    #[test]
    fn close_handshake_and_hang_up_are_closed() {
        for (tls, command) in [
            (false, "close"),
            (true, "close"),
            (false, "drop"),
            (true, "drop"),
        ] {
            let server = ws_server(tls, false);
            let mut conn = connect(&server.url(tls), &client(ProxySettings::default()));
            conn.send_text(command.into()).unwrap();
            assert_eq!(next_frame(&mut conn), Frame::Closed, "{command} tls={tls}");
            assert_eq!(conn.read().unwrap(), Some(Frame::Closed));
        }
    }

    /// A refused upgrade hands back the service's answer, from which a signer learns the
    /// service's time (the `Date`) and what was refused.
    #[test]
    fn a_refused_upgrade_gives_the_services_answer() {
        let body = br#"{"message":"Signature expired: 20260101T000000Z is now earlier than 20260101T010000Z"}"#;
        let headers = [
            ("Date", "Thu, 01 Jan 2026 01:05:00 GMT"),
            ("X-Amzn-ErrorType", "InvalidSignatureException"),
        ];
        let refusing = serve(move |_| Some(response(403, &headers, body)));
        let url = format!("ws://127.0.0.1:{}/v1/control-channel/i-1", refusing.port);
        let (err, refused) = Connection::open(&client(ProxySettings::default()), &url, &[], WAIT)
            .err()
            .unwrap();
        assert!(err.0.contains("HTTP 403"), "{err}");
        let refused = refused.expect("the refusal's answer");
        assert_eq!((refused.status, refused.body.as_slice()), (403, &body[..]));
        let header = |name: &str| {
            let found = refused
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name));
            found.map(|(_, v)| v.as_str())
        };
        assert_eq!(header("date"), Some("Thu, 01 Jan 2026 01:05:00 GMT"));
        assert_eq!(
            header("x-amzn-errortype"),
            Some("InvalidSignatureException")
        );
        // Port 0: nobody can listen there, so the connection is refused.
        let url = "ws://127.0.0.1:0/x".to_string();
        let (_, refused) = Connection::open(&client(ProxySettings::default()), &url, &[], WAIT)
            .err()
            .unwrap();
        assert!(refused.is_none(), "no answer, nothing to learn from");
    }

    #[test]
    fn refused_upgrades_and_unreachable_servers_are_errors() {
        let denied = serve(|_| Some(response(403, &[], b"<AccessDeniedException/>")));
        let url = format!("ws://127.0.0.1:{}/v1/data-channel/s", denied.port);
        let err = Connection::connect(&client(ProxySettings::default()), &url, &[], WAIT)
            .err()
            .unwrap();
        assert!(
            err.0.contains("HTTP 403") && err.0.contains("<AccessDeniedException/>"),
            "{err}"
        );
        assert!(err.0.contains(&url), "{err}");

        // A server that accepts and never answers: the connect gives up after its timeout.
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        let silent = serve_raw(move |s| keep.lock().unwrap().push(s));
        let started = Instant::now();
        let url = format!("ws://127.0.0.1:{}/", silent.port);
        let err = Connection::connect(
            &client(ProxySettings::default()),
            &url,
            &[],
            Duration::from_millis(300),
        )
        .err()
        .unwrap();
        assert!(err.0.contains("within 300ms"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));

        // A server whose CA is not trusted.
        let server = ws_server(true, false);
        let config = HttpConfig {
            user_agent: "t".into(),
            extra_ca_files: vec![],
        };
        let untrusting = HttpClient::with_proxies(&config, &ProxySettings::default()).unwrap();
        let err = Connection::connect(&untrusting, &server.url(true), &[], WAIT)
            .err()
            .unwrap();
        assert!(err.0.contains("TLS failed"), "{err}");

        for bad in ["https://127.0.0.1/", "wss:///x", "not a url"] {
            let err = Connection::connect(&client(ProxySettings::default()), bad, &[], WAIT)
                .err()
                .unwrap();
            assert!(err.0.contains(bad), "{err}");
        }
    }

    #[test]
    fn http_proxy_tunnels_ws_and_refusals_are_reported() {
        let server = ws_server(false, false);
        let (proxy, seen) = connect_proxy();
        let via = client(ProxySettings {
            http_proxy: Some(format!("http://user:p%40ss@127.0.0.1:{}", proxy.port)),
            ..Default::default()
        });
        let mut conn = connect(&server.url(false), &via);
        conn.send_text("through".into()).unwrap();
        assert_eq!(next_frame(&mut conn), Frame::Text("through".into()));
        assert_eq!(
            *seen.lock().unwrap(),
            vec![format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.server.port)]
        );

        let (requests_tx, requests) = channel();
        let requests_tx = Mutex::new(requests_tx);
        let refusing = serve(move |r| {
            let _ = requests_tx
                .lock()
                .unwrap()
                .send(r.header("proxy-authorization").map(str::to_string));
            Some(response(407, &[], b""))
        });
        let via = client(ProxySettings {
            http_proxy: Some(format!("http://user:p%40ss@127.0.0.1:{}", refusing.port)),
            ..Default::default()
        });
        let err = Connection::connect(&via, &server.url(false), &[], WAIT)
            .err()
            .unwrap();
        assert!(err.0.contains("407"), "{err}");
        // "user:p@ss" in base64.
        assert_eq!(
            requests.recv().unwrap().as_deref(),
            Some("Basic dXNlcjpwQHNz")
        );
    }
}
