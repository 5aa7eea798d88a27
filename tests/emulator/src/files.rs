//! An HTTPS file server beside the emulator's HTTP port, for `aws:downloadContent`: files the test
//! puts (404 otherwise) and a double of GitHub's REST contents API
//! (`GET /repos/{owner}/{repo}/contents/{path}?ref=`), whose private repositories answer only a
//! request carrying their token (`Authorization: Bearer …`, as go-oauth2 sends it, or GitHub's
//! older `token …`). TLS with a fixed test CA ([`FILES_CA_PEM`]) the agent is told to trust
//! through `SSL_CERT_FILE`; one request per connection.

use crate::http::{percent_decode, read_headers, read_line, reason};
use base64::Engine;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// The CA that signed the server's certificate (for 127.0.0.1 and localhost, valid to 2126).
/// Generated once with openssl for these tests; its key is not kept.
pub const FILES_CA_PEM: &str = r"-----BEGIN CERTIFICATE-----
MIIBsjCCAVmgAwIBAgIUKUceQODO0e0j4npJpAgScSQu/yMwCgYIKoZIzj0EAwIw
JjEkMCIGA1UEAwwbc3NtLWVtdWxhdG9yIGZpbGUgc2VydmVyIENBMCAXDTI2MTIw
MzA5MjMyMFoYDzIxMjYxMTA5MDkyMzIwWjAmMSQwIgYDVQQDDBtzc20tZW11bGF0
b3IgZmlsZSBzZXJ2ZXIgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARtAN5r
3hpuQ4PmVhperrk2BqG74ms2BqP89q+KpPq4QEXQazXdncA6V8/DjVDQ3iDIgXse
fH0G9HNVUVBeqio1o2MwYTAdBgNVHQ4EFgQUVQ7GywJLMAhVMfUhqVhhQJC9u+Yw
HwYDVR0jBBgwFoAUVQ7GywJLMAhVMfUhqVhhQJC9u+YwDwYDVR0TAQH/BAUwAwEB
/zAOBgNVHQ8BAf8EBAMCAgQwCgYIKoZIzj0EAwIDRwAwRAIgHwHMuU94tiupACu1
B6HiBSTkc6xVNQQkAksXaDdLvTECIB2NO2Oz3hSU7ETd3JYoDKi7ErWOg0Ht0+wx
RpjzhHWE
-----END CERTIFICATE-----
";
const LEAF_PEM: &str = r"-----BEGIN CERTIFICATE-----
MIIBuzCCAWKgAwIBAgIUAShS/XRPHAqadOf+ZZQPjgp76UQwCgYIKoZIzj0EAwIw
JjEkMCIGA1UEAwwbc3NtLWVtdWxhdG9yIGZpbGUgc2VydmVyIENBMCAXDTI2MTIw
MzA5MjMyMFoYDzIxMjYxMTA5MDkyMzIwWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3Qw
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAATMFg+L69m9eGmYEh61JZ6Q068BguQz
YUNOhJI3CnIOqhzEOw9eCPR2j8SnZxDrMR1OjtGIfW6Xvik64Zu0uwFOo34wfDAa
BgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwCQYDVR0TBAIwADATBgNVHSUEDDAK
BggrBgEFBQcDATAdBgNVHQ4EFgQUycg7dehzBKL1LPq21+4mIzPKvQowHwYDVR0j
BBgwFoAUVQ7GywJLMAhVMfUhqVhhQJC9u+YwCgYIKoZIzj0EAwIDRwAwRAIgdxEV
G+83xdaXCKdFd+DHhqAccvTIjPQkOUjN+GGevYcCIAk7T94Z1CcZGeoOs11XymxR
neHkPvyCCd+hkAYp9zBZ
-----END CERTIFICATE-----
";
const LEAF_KEY_PEM: &str = r"-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgRNSvqloWLTKMUV0S
jM11OPwPgOxeR9wqU/CMqEe8SKehRANCAATMFg+L69m9eGmYEh61JZ6Q068BguQz
YUNOhJI3CnIOqhzEOw9eCPR2j8SnZxDrMR1OjtGIfW6Xvik64Zu0uwFO
-----END PRIVATE KEY-----
";

/// One request the file server answered.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRequest {
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    pub authorization: Option<String>,
    pub status: u16,
}

#[derive(Default)]
struct Content {
    files: BTreeMap<String, Vec<u8>>,
    /// `(owner, repo)` → its token when private, and its files by `(ref, path)`.
    repos: BTreeMap<(String, String), Repo>,
    requests: Vec<FileRequest>,
}

#[derive(Default)]
struct Repo {
    token: Option<String>,
    files: BTreeMap<(String, String), Vec<u8>>,
}

/// A running HTTPS file server; stops on [`FileServer::stop`] or drop.
pub struct FileServer {
    content: Arc<Mutex<Content>>,
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl FileServer {
    pub fn start() -> io::Result<FileServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let config = tls_config()?;
        let content: Arc<Mutex<Content>> = Arc::default();
        let stopping = Arc::new(AtomicBool::new(false));
        let (shared, stop) = (content.clone(), stopping.clone());
        let acceptor = thread::Builder::new()
            .name("emu-files".into())
            .spawn(move || accept_loop(&listener, &config, &shared, &stop))?;
        Ok(FileServer {
            content,
            addr,
            stopping,
            acceptor: Mutex::new(Some(acceptor)),
        })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Serves `bytes` at `path` (e.g. `/scripts/hello.sh`).
    pub fn put(&self, path: &str, bytes: &[u8]) {
        self.with(|c| c.files.insert(path.to_owned(), bytes.to_vec()));
    }

    /// Adds `path` at `git_ref` to GitHub repository `owner/repo` (created public).
    pub fn put_github_file(
        &self,
        owner: &str,
        repo: &str,
        git_ref: &str,
        path: &str,
        bytes: &[u8],
    ) {
        self.with(|c| {
            let repo = c.repos.entry((owner.into(), repo.into())).or_default();
            repo.files
                .insert((git_ref.into(), path.into()), bytes.to_vec())
        });
    }

    /// Makes `owner/repo` private: only requests with `token` see it.
    pub fn make_private(&self, owner: &str, repo: &str, token: &str) {
        self.with(|c| {
            let repo = c.repos.entry((owner.into(), repo.into())).or_default();
            repo.token = Some(token.into());
        });
    }

    /// Requests answered so far, in order.
    pub fn requests(&self) -> Vec<FileRequest> {
        self.with(|c| c.requests.clone())
    }

    pub fn stop(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = TcpStream::connect(self.addr);
        let acceptor = self
            .acceptor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = acceptor {
            let _ = t.join();
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Content) -> R) -> R {
        f(&mut self.content.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tls_config() -> io::Result<Arc<rustls::ServerConfig>> {
    let bad = |e: &dyn std::fmt::Display| io::Error::other(format!("test certificate: {e}"));
    let cert = CertificateDer::from_pem_slice(LEAF_PEM.as_bytes()).map_err(|e| bad(&e))?;
    let key = PrivateKeyDer::from_pem_slice(LEAF_KEY_PEM.as_bytes()).map_err(|e| bad(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| bad(&e))?;
    Ok(Arc::new(config))
}

fn accept_loop(
    listener: &TcpListener,
    config: &Arc<rustls::ServerConfig>,
    content: &Arc<Mutex<Content>>,
    stopping: &AtomicBool,
) {
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let (config, content) = (config.clone(), content.clone());
        let _ = thread::Builder::new()
            .name("emu-files-conn".into())
            .spawn(move || {
                // A client that stalls mid-handshake or mid-request frees the thread.
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = serve(stream, config, &content);
            });
    }
}

/// Answers one request on one TLS connection, then closes it.
fn serve(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    content: &Mutex<Content>,
) -> io::Result<()> {
    let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, stream);
    // A GET has no body, and the client sends nothing more before the answer: the reader may
    // go once the head is read.
    let (line, headers) = {
        let mut reader = BufReader::new(&mut tls);
        let line = read_line(&mut reader)?.unwrap_or_default();
        (line, read_headers(&mut reader)?)
    };
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let authorization = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.clone());
    let mut content = content.lock().unwrap_or_else(PoisonError::into_inner);
    let (status, body) = match method {
        "GET" => answer(&content, target, authorization.as_deref()),
        _ => (405, b"GET only\n".to_vec()),
    };
    content.requests.push(FileRequest {
        method: method.to_owned(),
        target: target.to_owned(),
        authorization,
        status,
    });
    drop(content);
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    tls.write_all(head.as_bytes())?;
    tls.write_all(&body)?;
    tls.flush()?;
    tls.conn.send_close_notify();
    tls.flush()
}

fn answer(content: &Content, target: &str, authorization: Option<&str>) -> (u16, Vec<u8>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = percent_decode(path);
    if let Some(rest) = path.strip_prefix("/repos/") {
        let git_ref = query
            .split('&')
            .find_map(|p| p.strip_prefix("ref="))
            .map_or("master".to_owned(), percent_decode);
        return github(content, rest, &git_ref, authorization);
    }
    match content.files.get(&path) {
        Some(bytes) => (200, bytes.clone()),
        None => (404, b"404 page not found\n".to_vec()),
    }
}

/// `{owner}/{repo}/contents/{path}` at `git_ref`: a file, a directory listing, or GitHub's
/// errors (a private repository without its token is `404 Not Found`, as GitHub hides it).
fn github(
    content: &Content,
    rest: &str,
    git_ref: &str,
    authorization: Option<&str>,
) -> (u16, Vec<u8>) {
    let error =
        |status: u16, message: &str| (status, json!({"message": message}).to_string().into_bytes());
    let mut parts = rest.splitn(4, '/');
    let (Some(owner), Some(name), Some("contents")) = (parts.next(), parts.next(), parts.next())
    else {
        return error(404, "Not Found");
    };
    let path = parts.next().unwrap_or("").trim_end_matches('/');
    let Some(repo) = content.repos.get(&(owner.to_owned(), name.to_owned())) else {
        return error(404, "Not Found");
    };
    if let Some(token) = &repo.token {
        let accepted = [format!("Bearer {token}"), format!("token {token}")];
        match authorization {
            None => return error(404, "Not Found"),
            Some(a) if !accepted.iter().any(|ok| ok == a) => return error(401, "Bad credentials"),
            Some(_) => {}
        }
    }
    if let Some(bytes) = repo.files.get(&(git_ref.to_owned(), path.to_owned())) {
        return (200, file_entry(path, bytes).to_string().into_bytes());
    }
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    let mut children: BTreeMap<String, &str> = BTreeMap::new();
    for (r, p) in repo.files.keys() {
        let Some(below) = p.strip_prefix(&prefix).filter(|_| r == git_ref) else {
            continue;
        };
        match below.split_once('/') {
            Some((dir, _)) => children.insert(format!("{prefix}{dir}"), "dir"),
            None => children.insert(p.clone(), "file"),
        };
    }
    if children.is_empty() {
        return error(404, "Not Found");
    }
    let listing: Vec<Value> = children
        .iter()
        .map(|(p, kind)| json!({"type": kind, "path": p, "name": p.rsplit('/').next()}))
        .collect();
    (200, Value::Array(listing).to_string().into_bytes())
}

/// A file as the contents API returns it: base64 in lines of 60 characters, each ending `\n`.
fn file_entry(path: &str, bytes: &[u8]) -> Value {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let wrapped: String = encoded
        .as_bytes()
        .chunks(60)
        .map(|line| format!("{}\n", String::from_utf8_lossy(line)))
        .collect();
    json!({
        "type": "file",
        "encoding": "base64",
        "size": bytes.len(),
        "name": path.rsplit('/').next(),
        "path": path,
        "content": wrapped,
    })
}
