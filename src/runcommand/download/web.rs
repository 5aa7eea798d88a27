//! `sourceType` `HTTP` (upstream `httpresource/`): a GET through the agent's HTTPS client, https
//! unless `allowInsecureDownload`, redirects followed as Go's client does, `None` or `Basic`
//! authentication with credentials that may be `{{ssm-secure:…}}` references.

use super::{
    MAX_FILE_BYTES, Staged, expected_sha256, field, info_text, is_directory_target,
    parameter_reference, resolve_reference, source_info,
};
use crate::aws::http::{HttpClient, HttpError, HttpRequest};
use crate::runcommand::sources::Sources;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Whole-download deadline (upstream's Go client has none): a stalled server fails the step
/// instead of holding its worker forever.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Go's `http.Client` gives up after this many redirects.
const MAX_REDIRECTS: usize = 10;

const INSECURE: &str = "Non secure URL provided and insecure download is not allowed. Provide a \
                        secure URL or set 'allowInsecureDownload' to true to perform the download \
                        operation";

/// Upstream `HTTPInfo`.
struct HttpInfo {
    url: String,
    auth_method: String,
    username: String,
    password: String,
    allow_insecure: bool,
    sha256: Option<String>,
}

fn parse(info: &str) -> Result<HttpInfo, String> {
    let map = source_info(info)?;
    let allow_insecure = match field(&map, "allowInsecureDownload") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(format!(
                "json: cannot unmarshal {} into Go struct field HTTPInfo.allowInsecureDownload of type bool",
                crate::document::go_kind(v)
            ));
        }
    };
    Ok(HttpInfo {
        url: info_text(&map, "url")?,
        auth_method: info_text(&map, "authMethod")?,
        username: info_text(&map, "username")?,
        password: info_text(&map, "password")?,
        allow_insecure,
        sha256: expected_sha256(&map)?,
    })
}

/// The scheme of `url`, lower-cased (empty when it has none).
fn scheme(url: &str) -> String {
    url.split_once("://")
        .map_or(String::new(), |(s, _)| s.to_ascii_lowercase())
}

/// Upstream `httpHandler.Validate`.
fn validate(info: &HttpInfo) -> Result<(), String> {
    if !matches!(scheme(&info.url).as_str(), "http" | "https") {
        return Err(
            "URL scheme for HTTP resource type is invalid. HTTP or HTTPS is accepted".into(),
        );
    }
    match info.auth_method.as_str() {
        "" | "None" | "Basic" | "Digest" => Ok(()),
        other => Err(format!(
            "Invalid authentication method: {other}. The following methods are accepted: None, Basic, Digest"
        )),
    }
}

pub(super) fn download(info: &str, dest: &str, sources: &Sources) -> Result<(), String> {
    let info = parse(info)
        .map_err(|e| format!("SourceInfo could not be unmarshalled for source type HTTP: {e}"))?;
    validate(&info)?;
    let target = target_file(dest);
    let dir = target.parent().unwrap_or(Path::new("/"));
    super::make_dirs(dir)
        .map_err(|e| format!("Cannot create download path {}: {e}", dir.display()))?;
    if scheme(&info.url) != "https" && !info.allow_insecure {
        return Err(INSECURE.into());
    }
    let headers =
        authorization(&info, sources).map_err(|e| format!("Failed to prepare the request: {e}"))?;
    let http = sources.http.as_deref().ok_or_else(no_client)?;
    // Upstream's typo ("destinaton") is kept: it is the text users see.
    let mut staged = Staged::create(&target, MAX_FILE_BYTES)
        .map_err(|e| format!("Cannot create destinaton file: {e}"))?;
    match get(http, &info.url, &headers, &mut staged) {
        Ok(()) => staged.commit(info.sha256.as_deref()),
        Err(Failure::Request(e)) => Err(format!("Failed to download file: {e}")),
        Err(Failure::Transfer(e)) => Err(format!("An error occurred during data transfer: {e}")),
    }
}

pub(super) fn no_client() -> String {
    "this run has no HTTPS client (ssm-lite run-document downloads nothing)".into()
}

/// Upstream `adjustDownloadPath`: into a directory, the file is `download<random>`.
fn target_file(dest: &str) -> PathBuf {
    match is_directory_target(dest) {
        true => Path::new(dest).join(format!(
            "download{}",
            crate::random::between(0, i64::MAX as u64)
        )),
        false => PathBuf::from(dest),
    }
}

/// Upstream `authRequest`: credentials that are Parameter Store references are resolved (with
/// decryption); Digest needs MD5, which the agent does not link.
fn authorization(info: &HttpInfo, sources: &Sources) -> Result<Vec<(String, String)>, String> {
    if matches!(info.auth_method.as_str(), "" | "None") {
        return Ok(Vec::new());
    }
    if info.auth_method == "Digest" {
        return Err("ssm-lite does not support Digest authentication; use Basic over https".into());
    }
    let resolve = |value: &str| match parameter_reference(value, false) {
        Some(reference) => resolve_reference(&reference, sources.secrets.as_ref()),
        None => Ok(value.to_owned()),
    };
    let pair = format!("{}:{}", resolve(&info.username)?, resolve(&info.password)?);
    Ok(vec![(
        "Authorization".into(),
        format!("Basic {}", crate::base64::encode(pair.as_bytes())),
    )])
}

/// Why a GET failed: before the body (upstream "Cannot execute request" / "Status: …") or while
/// it was being stored.
#[derive(Debug)]
pub(super) enum Failure {
    Request(String),
    Transfer(String),
}

/// GETs `url` into `out`, following redirects as Go's client does (at most 10; `Authorization`
/// only to the same host). A status other than 200 is upstream's `Status: 404 Not Found`.
pub(super) fn get(
    http: &HttpClient,
    url: &str,
    headers: &[(String, String)],
    out: &mut Staged,
) -> Result<(), Failure> {
    let mut url = url.to_owned();
    let mut headers = headers.to_vec();
    for _ in 0..=MAX_REDIRECTS {
        let request = HttpRequest {
            method: "GET",
            url: &url,
            headers: headers.clone(),
            body: &[],
            timeout: DOWNLOAD_TIMEOUT,
        };
        let response = match http.download(request, out, MAX_FILE_BYTES) {
            Ok((response, _)) => response,
            Err(e) => return Err(failure(e, out)),
        };
        let location = response
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("location"))
            .map(|(_, v)| v.clone());
        match (response.status, location) {
            (200, _) => return Ok(()),
            (301 | 302 | 303 | 307 | 308, Some(location)) => {
                let next = resolve(&url, &location);
                if host(&next) != host(&url) {
                    headers.retain(|(n, _)| !n.eq_ignore_ascii_case("authorization"));
                }
                url = next;
            }
            (status, _) => {
                return Err(Failure::Request(format!("Status: {}", status_text(status))));
            }
        }
    }
    Err(Failure::Request(format!(
        "Cannot execute request: Get \"{url}\": stopped after {MAX_REDIRECTS} redirects"
    )))
}

/// Go's `Response.Status`: `404 Not Found`.
pub(super) fn status_text(status: u16) -> String {
    let reason = ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("{status} {reason}").trim_end().to_owned()
}

/// A failure of the transfer itself (the file could not take more, the connection broke
/// mid-body) or of the request.
fn failure(e: HttpError, out: &Staged) -> Failure {
    match (&out.failure, e) {
        (Some(why), _) => Failure::Transfer(why.clone()),
        (None, e @ HttpError::TooLarge(_)) => Failure::Transfer(e.to_string()),
        (None, e) if out.written > 0 => Failure::Transfer(e.to_string()),
        (None, e) => Failure::Request(format!("Cannot execute request: {e}")),
    }
}

/// `scheme://host[:port]` of an absolute URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| after_scheme + i);
    &url[..end]
}

fn host(url: &str) -> String {
    let origin = origin(url);
    origin[origin.find("://").map_or(0, |i| i + 3)..].to_ascii_lowercase()
}

/// A `Location` resolved against the URL it came from (RFC 3986 §5.2, the forms servers send).
fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{}//{rest}", &base[..base.find("//").unwrap_or(0)]);
    }
    let origin = origin(base);
    if location.starts_with('/') {
        return format!("{origin}{location}");
    }
    let path = &base[origin.len()..];
    let path = &path[..path.find(['?', '#']).unwrap_or(path.len())];
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    format!("{origin}{dir}{location}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_redirecting_url() {
        let base = "https://h.example:8443/a/b/c.sh?x=1";
        assert_eq!(resolve(base, "https://o.example/z"), "https://o.example/z");
        assert_eq!(resolve(base, "//o.example/z"), "https://o.example/z");
        assert_eq!(resolve(base, "/z?y"), "https://h.example:8443/z?y");
        assert_eq!(resolve(base, "d.sh"), "https://h.example:8443/a/b/d.sh");
        assert_eq!(
            resolve("https://h.example", "d.sh"),
            "https://h.example/d.sh"
        );
        assert_eq!(host(base), "h.example:8443");
    }

    #[test]
    fn statuses_read_as_gos() {
        assert_eq!(status_text(404), "404 Not Found");
        assert_eq!(status_text(599), "599");
    }

    #[test]
    fn scheme_and_auth_method_are_validated_with_upstreams_texts() {
        let info = |url: &str, auth: &str| {
            parse(&format!(r#"{{"url":"{url}","authMethod":"{auth}"}}"#)).unwrap()
        };
        assert_eq!(
            validate(&info("ftp://h/x", "")).unwrap_err(),
            "URL scheme for HTTP resource type is invalid. HTTP or HTTPS is accepted"
        );
        assert_eq!(
            validate(&info("https://h/x", "NTLM")).unwrap_err(),
            "Invalid authentication method: NTLM. The following methods are accepted: None, Basic, Digest"
        );
        assert!(validate(&info("HTTP://h/x", "Basic")).is_ok());
        let bad = parse(r#"{"url":"https://h","allowInsecureDownload":"yes"}"#).err();
        assert!(bad.unwrap().contains("allowInsecureDownload of type bool"));
    }
}
