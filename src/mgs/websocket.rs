//! A WebSocket to MGS: `wss://` through rustls (or `ws://` for local emulators), optionally via an
//! HTTPS proxy (CONNECT), with SigV4 headers on the upgrade request. Non-blocking underneath so
//! that one thread can wait on the socket and other sources at once with `sys::poll`.
//! STUB: interface fixed; implementation in progress.

use std::os::fd::RawFd;
use std::time::Duration;

/// What arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    /// The peer closed the connection (close frame or EOF).
    Closed,
}

#[derive(Debug)]
pub struct WsError(pub String);

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WsError {}

pub struct Connection {}

impl Connection {
    /// Opens `url` (`wss://…` or `ws://…`), sending `headers` (e.g. SigV4) with the upgrade.
    /// Blocking, bounded by `timeout`; afterwards the socket is non-blocking.
    pub fn connect(http: &crate::aws::http::HttpClient, url: &str, headers: &[(String, String)], timeout: Duration) -> Result<Connection, WsError> {
        let _ = (http, url, headers, timeout);
        todo!()
    }

    /// The socket's fd, to wait on with `sys::poll` (readable → `read`; writable → `flush`).
    pub fn fd(&self) -> RawFd {
        todo!()
    }

    /// The next complete frame, `None` when nothing more is available right now. Pongs are
    /// consumed here (and noted for `last_pong`); pings are answered.
    pub fn read(&mut self) -> Result<Option<Frame>, WsError> {
        todo!()
    }

    /// Queues a frame and writes as much as the socket takes now.
    pub fn send_text(&mut self, text: String) -> Result<(), WsError> {
        let _ = text;
        todo!()
    }

    pub fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), WsError> {
        let _ = bytes;
        todo!()
    }

    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), WsError> {
        let _ = payload;
        todo!()
    }

    /// Writes queued bytes; true when nothing is left queued (else wait for POLLOUT).
    pub fn flush(&mut self) -> Result<bool, WsError> {
        todo!()
    }

    /// True while queued bytes wait for the socket to become writable.
    pub fn wants_write(&self) -> bool {
        todo!()
    }

    /// When the last pong arrived (or the connection opened).
    pub fn last_pong(&self) -> std::time::Instant {
        todo!()
    }
}
