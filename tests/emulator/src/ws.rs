//! WebSocket plumbing on top of tungstenite: the server side of an upgrade that the emulator's
//! own HTTP server parsed (so SigV4 is checked on exactly the request that arrived), and a small
//! client for tests and fake agents.
//!
//! One thread owns each socket. Reads use a short socket timeout so that thread can also send
//! whatever the state asks for between reads, without a second thread touching the socket.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::derive_accept_key;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use tungstenite::{Error, Message};

use crate::http::{Request, Response};

/// How long one read waits before the owner gets to send.
pub const POLL: Duration = Duration::from_millis(10);

/// Why `req` is not a valid WebSocket upgrade (RFC 6455 §4.2.1), if it is not.
pub(crate) fn upgrade_problem(req: &Request) -> Option<String> {
    let has_token = |name: &str, token: &str| {
        req.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if req.method != "GET" {
        return Some(format!(
            "a WebSocket upgrade must be a GET, not {}",
            req.method
        ));
    }
    if !has_token("Upgrade", "websocket") || !has_token("Connection", "upgrade") {
        return Some("missing Upgrade: websocket / Connection: Upgrade".into());
    }
    if req.header("Sec-WebSocket-Version") != Some("13") {
        return Some("Sec-WebSocket-Version must be 13".into());
    }
    if req.header("Sec-WebSocket-Key").is_none_or(str::is_empty) {
        return Some("missing Sec-WebSocket-Key".into());
    }
    None
}

/// The `101 Switching Protocols` answer to a valid upgrade request.
pub(crate) fn accept_response(req: &Request) -> Response {
    let key = req.header("Sec-WebSocket-Key").unwrap_or_default();
    let mut resp = Response::new(101, "text/plain", Vec::new());
    resp.headers.clear();
    resp.with_header("Upgrade", "websocket")
        .with_header("Connection", "Upgrade")
        .with_header("Sec-WebSocket-Accept", derive_accept_key(key.as_bytes()))
}

/// What one poll of the socket produced.
#[derive(Debug)]
pub enum Incoming {
    Text(String),
    Binary(Vec<u8>),
    /// Nothing within [`POLL`] (pings are answered and reported as this too).
    Idle,
}

/// One end of an established WebSocket.
pub struct WsConn {
    ws: WebSocket<TcpStream>,
    raw: TcpStream,
}

fn config() -> WebSocketConfig {
    // AgentMessages are small; the limits only guard against a runaway peer.
    WebSocketConfig::default()
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
}

impl WsConn {
    /// The server end after a 101 was written; `buffered` are bytes already read past the request.
    pub(crate) fn server(stream: TcpStream, buffered: Vec<u8>) -> io::Result<WsConn> {
        let raw = stream.try_clone()?;
        raw.set_read_timeout(Some(POLL))?;
        raw.set_nodelay(true)?;
        let ws = WebSocket::from_partially_read(stream, buffered, Role::Server, Some(config()));
        Ok(WsConn { ws, raw })
    }

    /// Connects to `url` (`ws://127.0.0.1:…`) sending `headers` with the upgrade request.
    pub fn client(url: &str, headers: &[(String, String)]) -> Result<WsConn, String> {
        let mut req = url
            .into_client_request()
            .map_err(|e| format!("bad WebSocket URL {url:?}: {e}"))?;
        for (name, value) in headers {
            let name: tungstenite::http::HeaderName = name
                .parse()
                .map_err(|e| format!("header name {name:?}: {e}"))?;
            let value = HeaderValue::from_str(value).map_err(|e| format!("header {name}: {e}"))?;
            req.headers_mut().insert(name, value);
        }
        let host = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let stream = TcpStream::connect(&host).map_err(|e| format!("connecting {host}: {e}"))?;
        let raw = stream.try_clone().map_err(|e| e.to_string())?;
        let (ws, _) = tungstenite::client::client_with_config(req, stream, Some(config()))
            .map_err(|e| format!("WebSocket handshake with {url}: {e}"))?;
        raw.set_read_timeout(Some(POLL))
            .map_err(|e| e.to_string())?;
        raw.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(WsConn { ws, raw })
    }

    /// Waits up to [`POLL`] for a data frame. Errors mean the connection is over.
    pub fn poll(&mut self) -> Result<Incoming, String> {
        match self.ws.read() {
            Ok(Message::Text(t)) => Ok(Incoming::Text(t.as_str().to_string())),
            Ok(Message::Binary(b)) => Ok(Incoming::Binary(b.to_vec())),
            // tungstenite queued the pong; push it out now.
            Ok(Message::Ping(_)) => self.flush().map(|()| Incoming::Idle),
            Ok(Message::Pong(_) | Message::Frame(_)) => Ok(Incoming::Idle),
            Ok(Message::Close(c)) => Err(format!("closed by the peer ({c:?})")),
            Err(Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(Incoming::Idle)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn flush(&mut self) -> Result<(), String> {
        match self.ws.flush() {
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            r => r.map_err(|e| e.to_string()),
        }
    }

    pub fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        self.ws
            .send(Message::binary(bytes))
            .map_err(|e| format!("WebSocket send: {e}"))
    }

    pub fn send_text(&mut self, text: &str) -> Result<(), String> {
        self.ws
            .send(Message::text(text))
            .map_err(|e| format!("WebSocket send: {e}"))
    }

    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), String> {
        self.ws
            .send(Message::Ping(payload.to_vec().into()))
            .map_err(|e| format!("WebSocket ping: {e}"))
    }

    /// Waits up to `timeout` for a Pong (true) while discarding other frames.
    pub fn wait_pong(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Pong(_)) => return true,
                Ok(_) => {}
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
        }
        false
    }

    /// Closes the TCP connection at once, without a close handshake (like a crash or a
    /// network cut).
    pub fn abort(&self) {
        let _ = self.raw.shutdown(Shutdown::Both);
    }

    /// A polite close frame, then the TCP close.
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.flush();
        self.abort();
    }
}
