//! AWS Signature Version 4 (HMAC-SHA256), as the service verifies it.
//!
//! The layers are public so other signers can reuse them: [`canonical_request`] →
//! [`string_to_sign`] → [`hmac_signature`] → [`authorization`]. [`sign`] does all of it with the
//! HMAC key; [`stamp`] stops at the string to sign, which is the seam for the on-prem signer that
//! signs the same string with RSA-PSS and puts its own signature into [`authorization`].

use super::credentials::Credentials;
use crate::timefmt;
use ring::{digest, hmac};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

/// The algorithm name in the string to sign and the `Authorization` header (also used, as upstream
/// does, by the RSA variant).
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Headers never signed: proxies and tracing layers may add or rewrite them in flight.
const UNSIGNED_HEADERS: &[&str] = &["authorization", "user-agent", "x-amzn-trace-id"];

/// One request as the signer sees it.
pub struct Request<'a> {
    pub method: &'a str,
    /// The request target as sent (`/`, `/p?a=b`); the path is taken as raw (unescaped) text.
    pub path_and_query: &'a str,
    /// Every header that will be sent, `X-Amz-Date` included.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    /// Remove `.`/`..` segments and duplicate slashes before encoding: every AWS service except S3.
    pub normalize_path: bool,
}

/// Everything a signature covers, before the signature itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringToSign {
    /// `YYYYMMDDTHHMMSSZ`, as in the `X-Amz-Date` header.
    pub amz_date: String,
    /// `<yyyymmdd>/<region>/<service>/aws4_request`.
    pub scope: String,
    /// Lower-case names joined by `;`, for the `Authorization` header.
    pub signed_headers: String,
    pub canonical_request: String,
    /// The text the signature is computed over.
    pub text: String,
}

/// Signs a request: appends `X-Amz-Date`, `X-Amz-Security-Token` (when the credentials carry
/// one) and `Authorization` to `headers`. `headers` must already hold `Host` and every other
/// header that will be sent; `path_and_query` is the request target as sent (`/` or `/p?a=b`).
#[allow(clippy::too_many_arguments)]
pub fn sign(
    method: &str,
    path_and_query: &str,
    headers: &mut Vec<(String, String)>,
    body: &[u8],
    credentials: &Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
) {
    if let Some(token) = &credentials.session_token {
        headers.push(("X-Amz-Security-Token".to_string(), token.clone()));
    }
    let sts = stamp(method, path_and_query, headers, body, region, service, now);
    let signature = hmac_signature(&credentials.secret_access_key, &sts);
    let value = authorization(&credentials.access_key_id, &sts, &signature);
    headers.push(("Authorization".to_string(), value));
}

/// Appends `X-Amz-Date` for `now` and returns what must be signed (path normalised, as every
/// service we call expects). The caller signs `text` and appends [`authorization`].
pub fn stamp(
    method: &str,
    path_and_query: &str,
    headers: &mut Vec<(String, String)>,
    body: &[u8],
    region: &str,
    service: &str,
    now: SystemTime,
) -> StringToSign {
    let amz_date = timefmt::amz_date(now);
    headers.push(("X-Amz-Date".to_string(), amz_date.clone()));
    let request = Request {
        method,
        path_and_query,
        headers,
        body,
        normalize_path: true,
    };
    string_to_sign(&request, &amz_date, region, service)
}

/// Builds the canonical request and the string to sign for `amz_date` (`YYYYMMDDTHHMMSSZ`).
pub fn string_to_sign(
    request: &Request<'_>,
    amz_date: &str,
    region: &str,
    service: &str,
) -> StringToSign {
    let (canonical_request, signed_headers) = canonical_request(request);
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let text = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    StringToSign {
        amz_date: amz_date.to_string(),
        scope,
        signed_headers,
        canonical_request,
        text,
    }
}

/// Returns the canonical request and the signed-headers list.
pub fn canonical_request(request: &Request<'_>) -> (String, String) {
    let (path, query) = request
        .path_and_query
        .split_once('?')
        .unwrap_or((request.path_and_query, ""));
    let path = if request.normalize_path {
        normalize_path(path)
    } else {
        path.to_string()
    };
    let mut uri = String::new();
    encode_into(
        &mut uri,
        if path.is_empty() {
            b"/"
        } else {
            path.as_bytes()
        },
        true,
    );
    let payload = sha256_hex(request.body);
    canonical(request.method, &uri, query, request.headers, &payload)
}

/// The canonical request over an already canonical URI and the payload's hex SHA-256, and the
/// signed-headers list.
fn canonical(
    method: &str,
    uri: &str,
    query: &str,
    headers: &[(String, String)],
    payload_sha256: &str,
) -> (String, String) {
    let (headers, signed) = canonical_headers(headers);
    let canonical = format!(
        "{method}\n{uri}\n{}\n{headers}\n{signed}\n{payload_sha256}",
        canonical_query(query),
    );
    (canonical, signed)
}

/// S3's variant of [`sign`], so that a body can be streamed: the caller hashed the payload
/// (`payload_sha256`, sent as `X-Amz-Content-Sha256`, which the signature covers), and the path
/// is taken as sent, already encoded once ([`encode_path`]) and never normalised (S3 keys may
/// hold `//` and `.` segments).
#[allow(clippy::too_many_arguments)]
pub fn sign_s3(
    method: &str,
    path_and_query: &str,
    headers: &mut Vec<(String, String)>,
    payload_sha256: &str,
    credentials: &Credentials,
    region: &str,
    now: SystemTime,
) {
    headers.push(("X-Amz-Content-Sha256".into(), payload_sha256.to_string()));
    if let Some(token) = &credentials.session_token {
        headers.push(("X-Amz-Security-Token".to_string(), token.clone()));
    }
    let amz_date = timefmt::amz_date(now);
    headers.push(("X-Amz-Date".to_string(), amz_date.clone()));
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let (canonical_request, signed_headers) =
        canonical(method, path, query, headers, payload_sha256);
    let date = amz_date.get(..8).unwrap_or(&amz_date);
    let scope = format!("{date}/{region}/s3/aws4_request");
    let text = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let sts = StringToSign {
        amz_date,
        scope,
        signed_headers,
        canonical_request,
        text,
    };
    let signature = hmac_signature(&credentials.secret_access_key, &sts);
    let value = authorization(&credentials.access_key_id, &sts, &signature);
    headers.push(("Authorization".to_string(), value));
}

/// `raw` (a `/`-separated path, e.g. `/bucket/a key`) percent-encoded as S3 expects it on the
/// wire and in the canonical request: everything but RFC 3986 unreserved characters and `/`.
pub fn encode_path(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    encode_into(&mut out, raw.as_bytes(), true);
    out
}

/// The SigV4 signing key: HMAC chained over the scope's parts, starting from `AWS4<secret>`.
pub fn signing_key(secret_access_key: &str, scope: &str) -> hmac::Key {
    let seed = hmac::Key::new(
        hmac::HMAC_SHA256,
        format!("AWS4{secret_access_key}").as_bytes(),
    );
    scope.split('/').fold(seed, |key, part| {
        hmac::Key::new(
            hmac::HMAC_SHA256,
            hmac::sign(&key, part.as_bytes()).as_ref(),
        )
    })
}

/// The hex HMAC-SHA256 signature of `sts` with the key derived from the secret.
pub fn hmac_signature(secret_access_key: &str, sts: &StringToSign) -> String {
    let key = signing_key(secret_access_key, &sts.scope);
    hex(hmac::sign(&key, sts.text.as_bytes()).as_ref())
}

/// The `Authorization` header value for a finished signature.
pub fn authorization(access_key_id: &str, sts: &StringToSign, signature: &str) -> String {
    format!(
        "{ALGORITHM} Credential={access_key_id}/{}, SignedHeaders={}, Signature={signature}",
        sts.scope, sts.signed_headers
    )
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `name:value\n` lines (sorted, values trimmed with whitespace runs collapsed, repeated names
/// joined by `,`) and the `;`-joined names.
fn canonical_headers(headers: &[(String, String)]) -> (String, String) {
    let mut merged: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let name = name.trim().to_ascii_lowercase();
        if UNSIGNED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let value = value.split_ascii_whitespace().collect::<Vec<_>>().join(" ");
        merged
            .entry(name)
            .and_modify(|v| v.extend([",", value.as_str()]))
            .or_insert(value);
    }
    let lines = merged.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let names = merged.into_keys().collect::<Vec<_>>().join(";");
    (lines, names)
}

/// Removes empty and `.` segments and resolves `..`, keeping a trailing slash (RFC 3986 §5.2.4
/// plus the duplicate-slash collapsing AWS applies).
fn normalize_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = format!("/{}", segments.join("/"));
    let ends_in_dir = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    if !segments.is_empty() && ends_in_dir {
        out.push('/');
    }
    out
}

/// Query parameters decoded, re-encoded per RFC 3986 and sorted by name, then value. A `+` is
/// taken literally (it is `%2B` in the canonical form), as the AWS services read it.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let (mut ek, mut ev) = (String::new(), String::new());
            encode_into(&mut ek, &percent_decode(k), false);
            encode_into(&mut ev, &percent_decode(v), false);
            (ek, ev)
        })
        .collect();
    pairs.sort();
    let joined: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    joined.join("&")
}

/// Appends `bytes` percent-encoded: everything but RFC 3986 unreserved characters (and `/`
/// when `keep_slash`). A `%` already in a path is encoded again, as AWS does for non-S3 services.
fn encode_into(out: &mut String, bytes: &[u8], keep_slash: bool) {
    for &b in bytes {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// `%XX` escapes decoded; malformed escapes are kept as they are.
pub(crate) fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match escaped
            .filter(|_| bytes[i] == b'%')
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// What a service rebuilds from a `POST` a test server received: the string to sign over the
/// headers named in `signed` (the `SignedHeaders` list) with `date` (its `X-Amz-Date`).
#[cfg(test)]
pub(crate) fn received_string_to_sign(
    r: &super::http::test_server::Received,
    signed: &str,
    date: &str,
    region: &str,
    service: &str,
) -> StringToSign {
    let headers: Vec<(String, String)> = signed
        .split(';')
        .map(|n| (n.to_string(), r.header(n).unwrap_or_default().to_string()))
        .collect();
    let request = Request {
        method: "POST",
        path_and_query: r.request_line.split(' ').nth(1).unwrap_or_default(),
        headers: &headers,
        body: &r.body,
        normalize_path: true,
    };
    string_to_sign(&request, date, region, service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// AWS's S3 SigV4 example "GET Object" (Authenticating Requests: Using the Authorization
    /// Header), whose signature the S3 documentation prints.
    #[test]
    fn s3_signing_matches_the_documented_get_object_example() {
        let credentials = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            expires_at: None,
        };
        let mut headers = vec![
            (
                "Host".to_string(),
                "examplebucket.s3.amazonaws.com".to_string(),
            ),
            ("Range".to_string(), "bytes=0-9".to_string()),
        ];
        let now = UNIX_EPOCH + Duration::from_secs(1_369_353_600);
        let empty = sha256_hex(b"");
        sign_s3(
            "GET",
            "/test.txt",
            &mut headers,
            &empty,
            &credentials,
            "us-east-1",
            now,
        );
        let authorization = &headers.last().unwrap().1;
        assert_eq!(
            authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        assert_eq!(encode_path("/a b/c+d~e"), "/a%20b/c%2Bd~e");
    }

    fn creds(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: token.map(str::to_string),
            expires_at: None,
        }
    }

    const SUITE_TIME: u64 = 1_440_938_160; // 2015-08-30T12:36:00Z

    #[test]
    fn signs_the_suite_vanilla_get() {
        let mut headers = vec![("Host".to_string(), "example.amazonaws.com".to_string())];
        let now = UNIX_EPOCH + Duration::from_secs(SUITE_TIME);
        sign(
            "GET",
            "/",
            &mut headers,
            b"",
            &creds(None),
            "us-east-1",
            "service",
            now,
        );
        assert_eq!(headers[1], ("X-Amz-Date".into(), "20150830T123600Z".into()));
        assert_eq!(
            headers[2].1,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn json_call_signs_target_and_token_but_not_user_agent() {
        let mut headers = vec![
            (
                "Host".to_string(),
                "ssm.eu-west-1.amazonaws.com".to_string(),
            ),
            (
                "Content-Type".to_string(),
                "application/x-amz-json-1.1".to_string(),
            ),
            (
                "X-Amz-Target".to_string(),
                "AmazonSSM.UpdateInstanceInformation".to_string(),
            ),
            ("User-Agent".to_string(), "ssm-lite/1".to_string()),
        ];
        let now = UNIX_EPOCH + Duration::from_secs(SUITE_TIME);
        sign(
            "POST",
            "/",
            &mut headers,
            b"{}",
            &creds(Some("tok")),
            "eu-west-1",
            "ssm",
            now,
        );
        let auth = &headers.last().unwrap().1;
        assert!(
            auth.contains("Credential=AKIDEXAMPLE/20150830/eu-west-1/ssm/aws4_request"),
            "{auth}"
        );
        assert!(
            auth.contains(
                "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target,"
            ),
            "{auth}"
        );
        assert!(headers.contains(&("X-Amz-Security-Token".into(), "tok".into())));
    }

    #[test]
    fn signature_changes_with_body_and_secret() {
        let base = |body: &[u8], secret: &str| {
            let mut headers = vec![("Host".to_string(), "h".to_string())];
            let mut c = creds(None);
            c.secret_access_key = secret.into();
            sign("POST", "/", &mut headers, body, &c, "r", "s", UNIX_EPOCH);
            headers.pop().unwrap().1
        };
        assert_ne!(base(b"{}", "a"), base(b"{ }", "a"));
        assert_ne!(base(b"{}", "a"), base(b"{}", "b"));
        assert_eq!(base(b"{}", "a"), base(b"{}", "a"));
    }

    #[test]
    fn path_normalisation_and_query_canonicalisation() {
        assert_eq!(normalize_path("/a/./b/../c/"), "/a/c/");
        assert_eq!(normalize_path("/a/b/.."), "/a/");
        assert_eq!(normalize_path("/.."), "/");
        assert_eq!(normalize_path(""), "/");
        assert_eq!(canonical_query("b=2&a=3&a=1&c"), "a=1&a=3&b=2&c=");
        assert_eq!(
            canonical_query("role=publish_subscribe&x=a+b%2f%zz"),
            "role=publish_subscribe&x=a%2Bb%2F%25zz"
        );
    }
}
