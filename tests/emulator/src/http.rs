//! A small HTTP/1.1 server on std::net: one thread per connection, keep-alive, Content-Length
//! bodies. Hand-written so that faults (dropped connections, slow answers) are easy to inject and
//! so a connection can be handed over to a WebSocket after an upgrade ([`Outcome::Upgrade`]).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

/// Longest request line or header line accepted.
const MAX_LINE: usize = 16 * 1024;
const MAX_HEADERS: usize = 100;
/// Largest request body accepted (agent replies are far below this).
const MAX_BODY: usize = 32 * 1024 * 1024;

/// One request as it arrived on the wire.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path part of the request target, exactly as sent (still percent-encoded).
    pub path: String,
    /// Query part without the `?`, exactly as sent.
    pub query: String,
    /// Headers in arrival order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Percent-decoded value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }
}

/// Decodes `%XX` escapes (and `+` as space, as in form-encoded query strings).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, "text/plain", body.into())
    }

    /// An AWS JSON 1.1 answer.
    pub fn json(status: u16, body: &serde_json::Value) -> Response {
        Response::new(status, "application/x-amz-json-1.1", body.to_string())
    }

    /// The standard AWS JSON error body, also named in `X-Amzn-ErrorType`.
    pub fn aws_error(status: u16, error_type: &str, message: &str) -> Response {
        let body = serde_json::json!({"__type": error_type, "message": message});
        let mut r = Response::json(status, &body);
        r.headers
            .push(("X-Amzn-ErrorType".into(), error_type.into()));
        r
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Runs a connection after a protocol switch: the stream, and the bytes the HTTP reader had
/// already buffered past the request (they belong to the new protocol).
pub type Takeover = Box<dyn FnOnce(TcpStream, Vec<u8>) + Send>;

/// What the handler wants done with a request.
pub enum Outcome {
    Respond(Response),
    /// Close the connection without answering (fault injection).
    Close,
    /// Answer with this `101 Switching Protocols` response, then hand the connection over.
    Upgrade(Response, Takeover),
}

pub type Handler = dyn Fn(&Request) -> Outcome + Send + Sync;

/// Open connections, so `stop` can unblock their threads.
type Connections = Arc<Mutex<HashMap<u64, TcpStream>>>;

/// A running server; `stop` (or drop) closes the listener and every open connection.
pub struct Server {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    connections: Connections,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds 127.0.0.1:`port` (0 = ephemeral) and serves every request with `handler`.
    pub fn start(port: u16, handler: Arc<Handler>) -> io::Result<Server> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let connections: Connections = Arc::default();
        let (stop, conns) = (stopping.clone(), connections.clone());
        let acceptor = thread::Builder::new()
            .name("emu-accept".into())
            .spawn(move || accept_loop(listener, handler, stop, conns))?;
        Ok(Server {
            addr,
            stopping,
            connections,
            acceptor: Some(acceptor),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(&mut self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the blocking accept() so the acceptor sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        let conns = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for stream in conns.values() {
            // Only the read side: idle connections see end of stream and close, while a
            // request being answered (a held poll woken by the stop) can still respond.
            let _ = stream.shutdown(Shutdown::Read);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: TcpListener,
    handler: Arc<Handler>,
    stopping: Arc<AtomicBool>,
    connections: Connections,
) {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let Ok(registered) = stream.try_clone() else {
            continue;
        };
        connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, registered);
        let (handler, conns) = (handler.clone(), connections.clone());
        let spawned = thread::Builder::new()
            .name(format!("emu-conn-{id}"))
            .spawn(move || {
                serve_connection(stream, &*handler);
                conns
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
            });
        if spawned.is_err() {
            connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        }
    }
}

/// Answers requests on one connection until the client closes it, asks to close, or a fault
/// closes it.
fn serve_connection(stream: TcpStream, handler: &Handler) {
    // Answers go out in two writes (head, body): without this, Nagle's algorithm holds the body
    // for the client's delayed ACK, about 40 ms per answer.
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let request = match read_request(&mut reader, &mut writer) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                let bad = Response::text(400, format!("bad request: {e}\n"));
                let _ = write_response(&mut writer, &bad, true);
                return;
            }
        };
        let close = request
            .header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        match handler(&request) {
            Outcome::Respond(resp) => {
                if write_response(&mut writer, &resp, close).is_err() || close {
                    return;
                }
            }
            Outcome::Close => return,
            Outcome::Upgrade(resp, takeover) => {
                if write_response(&mut writer, &resp, false).is_ok() {
                    let buffered = reader.buffer().to_vec();
                    takeover(reader.into_inner(), buffered);
                }
                return;
            }
        }
    }
}

/// Reads one line (without CRLF); `None` at a clean end of stream.
pub(crate) fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = reader
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "line too long or truncated",
        ));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads one request; `Ok(None)` when the client closed the connection between requests.
fn read_request(reader: &mut impl BufRead, writer: &mut impl Write) -> io::Result<Option<Request>> {
    let Some(line) = read_line(reader)? else {
        return Ok(None);
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(format!("malformed request line {line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!("unsupported protocol {version:?}")));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers = read_headers(reader)?;
    let mut req = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body: Vec::new(),
    };
    if req.header("Transfer-Encoding").is_some() {
        return Err(invalid(
            "Transfer-Encoding is not supported; send Content-Length".into(),
        ));
    }
    let len = match req.header("Content-Length") {
        None => 0,
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map_err(|_| invalid(format!("Content-Length {v:?}")))?,
    };
    if len > MAX_BODY {
        return Err(invalid(format!("body of {len} bytes exceeds {MAX_BODY}")));
    }
    if req
        .header("Expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    req.body = vec![0; len];
    reader.read_exact(&mut req.body)?;
    Ok(Some(req))
}

/// Reads header lines up to the blank line; folded continuation lines join the previous value.
pub(crate) fn read_headers(reader: &mut impl BufRead) -> io::Result<Vec<(String, String)>> {
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let line = read_line(reader)?.ok_or_else(|| invalid("end of stream in headers".into()))?;
        if line.is_empty() {
            return Ok(headers);
        }
        if line.starts_with([' ', '\t']) {
            let last = headers
                .last_mut()
                .ok_or_else(|| invalid("continuation first".into()))?;
            last.1.push(' ');
            last.1.push_str(line.trim());
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("malformed header {line:?}")))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
        if headers.len() > MAX_HEADERS {
            return Err(invalid(format!("more than {MAX_HEADERS} headers")));
        }
    }
}

pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn write_response(w: &mut impl Write, resp: &Response, close: bool) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (name, value) in &resp.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    // A 1xx answer has no body and must not announce one.
    if resp.status >= 200 {
        head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    w.write_all(&resp.body)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_folded_headers_query_and_body() {
        let raw = b"POST /a%20b?x=1&y=%41+B HTTP/1.1\r\nHost: h\r\nX-Multi: one\r\n  two\r\n\
                    Content-Length: 3\r\n\r\nabcNEXT";
        let mut reader = BufReader::new(&raw[..]);
        let req = read_request(&mut reader, &mut Vec::new()).unwrap().unwrap();
        assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/a%20b"));
        assert_eq!(req.query_param("y").as_deref(), Some("A B"));
        assert_eq!(req.header("x-multi"), Some("one two"));
        assert_eq!(req.body, b"abc");
        assert!(
            read_request(&mut reader, &mut Vec::new()).is_err(),
            "garbage after the body"
        );
    }

    #[test]
    fn rejects_chunked_and_eof_is_none() {
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(read_request(&mut BufReader::new(&raw[..]), &mut Vec::new()).is_err());
        assert!(
            read_request(&mut BufReader::new(&b""[..]), &mut Vec::new())
                .unwrap()
                .is_none()
        );
    }
}
