//! SigV4 verification, written independently of the agent's signer: the canonical request is
//! rebuilt from what arrived on the wire and the HMAC chain is computed with the hmac/sha2 crates.
//! The RSA variant of managed instances ([`verify_rsa`]) checks RSA-PSS with ring; the emulator's
//! tests sign those with a different RSA implementation.

use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use ring::signature::{RSA_PSS_2048_8192_SHA256, UnparsedPublicKey};
use sha2::Sha256;

use crate::cipher::unb64;
use crate::http::{Request, percent_decode};
use crate::util::{hex, parse_amz_date, sha256_hex};

/// How far `X-Amz-Date` may be from the emulator's clock, like the real services.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// What the emulator knows about an access key it handed out.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub secret: String,
    /// The session token issued with the key; the request must carry exactly this one.
    pub session_token: Option<String>,
    pub expires: Option<SystemTime>,
}

/// Why a request was refused; `code` is the AWS error type, answered with `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigError {
    pub code: &'static str,
    pub message: String,
    /// 403, but 400 for a refused request time, as the JSON 1.1 services answer it.
    pub status: u16,
}

fn invalid(message: String) -> SigError {
    SigError {
        code: "InvalidSignatureException",
        message,
        status: 403,
    }
}

fn too_skewed(message: String) -> SigError {
    SigError {
        status: 400,
        ..invalid(message)
    }
}

fn unrecognized(message: &str) -> SigError {
    SigError {
        code: "UnrecognizedClientException",
        message: message.to_string(),
        status: 403,
    }
}

/// The parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

impl Authorization {
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// Parses `AWS4-HMAC-SHA256 Credential=AK/date/region/service/aws4_request, SignedHeaders=a;b,
/// Signature=hex`.
pub fn parse_authorization(value: &str) -> Result<Authorization, SigError> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| {
            invalid(format!(
                "Authorization must start with {ALGORITHM}: {value:?}"
            ))
        })?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').unwrap_or((part.trim(), ""));
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => return Err(invalid(format!("unexpected Authorization element {k:?}"))),
        }
    }
    let missing = |what: &str| invalid(format!("Authorization lacks {what}: {value:?}"));
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let fields: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, "aws4_request"] = fields[..] else {
        return Err(invalid(format!("malformed Credential {credential:?}")));
    };
    Ok(Authorization {
        access_key: access_key.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers: signed.split(';').map(str::to_string).collect(),
        signature: signature.to_string(),
    })
}

/// RFC 3986 encoding of everything but unreserved characters (and `/` when `keep_slash`).
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Canonical URI for non-S3 services: dot segments and empty segments removed, then the path as
/// sent is encoded once more (so an already-encoded path ends up double-encoded, as AWS does).
pub fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing = path.ends_with('/') && !segments.is_empty();
    let joined = format!("/{}{}", segments.join("/"), if trailing { "/" } else { "" });
    uri_encode(&joined, true)
}

/// Canonical query: every pair decoded, re-encoded strictly, sorted by key then value.
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Trims a header value and collapses inner runs of whitespace to one space.
fn canonical_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical request built from the request as received and the headers it claims to sign.
pub fn canonical_request(req: &Request, signed: &[String]) -> Result<String, SigError> {
    canonical_request_for(
        req,
        signed,
        &canonical_uri(&req.path),
        &sha256_hex(&req.body),
    )
}

/// S3's canonical request: the path exactly as sent (encoded once, never normalised) and the
/// payload hash the client declared in `X-Amz-Content-Sha256` (checked against the body apart).
fn s3_canonical_request(req: &Request, signed: &[String]) -> Result<String, SigError> {
    let payload = req.header("X-Amz-Content-Sha256").unwrap_or_default();
    canonical_request_for(req, signed, &req.path, payload)
}

fn canonical_request_for(
    req: &Request,
    signed: &[String],
    uri: &str,
    payload_sha256: &str,
) -> Result<String, SigError> {
    let mut headers = String::new();
    for name in signed {
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| canonical_value(v))
            .collect();
        if values.is_empty() {
            return Err(invalid(format!(
                "signed header {name:?} is not in the request"
            )));
        }
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    Ok(format!(
        "{}\n{uri}\n{}\n{}\n{}\n{payload_sha256}",
        req.method,
        canonical_query(&req.query),
        headers,
        signed.join(";"),
    ))
}

pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Hex signature of `string_to_sign` under the key derived from `secret` and the scope parts.
pub fn signature(secret: &str, auth: &Authorization, string_to_sign: &str) -> String {
    let k = hmac(format!("AWS4{secret}").as_bytes(), &auth.date);
    let k = hmac(&k, &auth.region);
    let k = hmac(&k, &auth.service);
    let k = hmac(&k, "aws4_request");
    hex(&hmac(&k, string_to_sign))
}

/// Checks the SignedHeaders list: lower case, sorted, unique, and covering host and x-amz-date.
fn check_signed_list(signed: &[String]) -> Result<(), SigError> {
    let well_formed = signed
        .iter()
        .all(|h| !h.is_empty() && h.to_ascii_lowercase() == *h)
        && signed.windows(2).all(|w| w[0] < w[1]);
    if !well_formed {
        return Err(invalid(format!(
            "SignedHeaders must be lower case, sorted, unique: {signed:?}"
        )));
    }
    for required in ["host", "x-amz-date"] {
        if !signed.iter().any(|h| h == required) {
            return Err(invalid(format!(
                "SignedHeaders {signed:?} must include {required}"
            )));
        }
    }
    Ok(())
}

/// Checks `X-Amz-Date` against the credential scope date and the clock.
fn check_date(amz_date: &str, auth: &Authorization, now: SystemTime) -> Result<(), SigError> {
    let when = parse_amz_date(amz_date)
        .ok_or_else(|| invalid(format!("X-Amz-Date {amz_date:?} is not YYYYMMDDTHHMMSSZ")))?;
    if !amz_date.starts_with(&auth.date) {
        return Err(invalid(format!(
            "scope date {} does not match {amz_date}",
            auth.date
        )));
    }
    // The services' own words, which name the limit in their time.
    let stamp = crate::util::amz_date;
    if now.duration_since(when).is_ok_and(|d| d > MAX_SKEW) {
        return Err(too_skewed(format!(
            "Signature expired: {amz_date} is now earlier than {} ({} - 5 min.)",
            stamp(now - MAX_SKEW),
            stamp(now)
        )));
    }
    if when.duration_since(now).is_ok_and(|d| d > MAX_SKEW) {
        return Err(too_skewed(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 5 min.)",
            stamp(now + MAX_SKEW),
            stamp(now)
        )));
    }
    Ok(())
}

/// Checks the scope, SignedHeaders and date of a request whose key is known, then rebuilds what
/// it signed: (canonical request, string to sign).
fn signed_strings(
    req: &Request,
    auth: &Authorization,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Result<(String, String), SigError> {
    if auth.region != region || auth.service != service {
        return Err(invalid(format!(
            "credential scope {} must name region {region:?} and service {service:?}",
            auth.scope()
        )));
    }
    check_signed_list(&auth.signed_headers)?;
    let amz_date = req.header("X-Amz-Date").unwrap_or_default();
    check_date(amz_date, auth, now)?;
    let canonical = if service == "s3" {
        s3_canonical_request(req, &auth.signed_headers)?
    } else {
        canonical_request(req, &auth.signed_headers)?
    };
    let sts = string_to_sign(amz_date, &auth.scope(), &canonical);
    Ok((canonical, sts))
}

/// Verifies a SigV4-signed request for `region`/`service` at time `now`; `lookup` returns what
/// was issued for an access key. Returns the access key on success.
pub fn verify(
    req: &Request,
    region: &str,
    service: &str,
    now: SystemTime,
    lookup: impl Fn(&str) -> Option<KeyInfo>,
) -> Result<String, SigError> {
    let header = req
        .header("Authorization")
        .ok_or_else(|| invalid("request has no Authorization header".into()))?;
    let auth = parse_authorization(header)?;
    let key = lookup(&auth.access_key)
        .ok_or_else(|| unrecognized("The security token included in the request is invalid."))?;
    if key.expires.is_some_and(|e| e <= now) {
        return Err(unrecognized(
            "The security token included in the request is expired",
        ));
    }
    if key.session_token.as_deref() != req.header("X-Amz-Security-Token") {
        return Err(unrecognized(
            "X-Amz-Security-Token does not match the one issued for the key",
        ));
    }
    let (canonical, sts) = signed_strings(req, &auth, region, service, now)?;
    if signature(&key.secret, &auth, &sts) != auth.signature {
        return Err(invalid(format!(
            "The request signature we calculated does not match the signature you provided. \
             Canonical request:\n{canonical}\nString to sign:\n{sts}"
        )));
    }
    Ok(auth.access_key)
}

/// Verifies the RSA variant of SigV4 that managed instances use for their private `ssm` calls
/// (docs/protocol.md §5.5): the same canonical request and string to sign, the managed instance id as
/// access key, no session token, and `Signature=` base64 RSASSA-PSS-SHA256 (salt 32) over the
/// string to sign instead of hex HMAC. `lookup` gives the public key registered for the instance
/// as PKCS#1 RSAPublicKey DER. Returns the instance id.
pub fn verify_rsa(
    req: &Request,
    region: &str,
    service: &str,
    now: SystemTime,
    lookup: impl FnOnce(&str) -> Option<Vec<u8>>,
) -> Result<String, SigError> {
    let header = req
        .header("Authorization")
        .ok_or_else(|| invalid("request has no Authorization header".into()))?;
    let auth = parse_authorization(header)?;
    let public_key = lookup(&auth.access_key).ok_or_else(|| {
        unrecognized(&format!(
            "{:?} in the Credential is not a registered managed instance",
            auth.access_key
        ))
    })?;
    if req.header("X-Amz-Security-Token").is_some() {
        return Err(invalid(
            "an RSA-signed call carries no X-Amz-Security-Token (it has no session)".into(),
        ));
    }
    check_content_sha256(req)?;
    let (canonical, sts) = signed_strings(req, &auth, region, service, now)?;
    if auth.signature.len() == 64 && auth.signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(format!(
            "Signature {} is 64 hex digits, an HMAC signature: managed instances sign this call \
             with RSA-PSS and send the signature base64-encoded",
            auth.signature
        )));
    }
    let signature = unb64(&auth.signature).map_err(|e| {
        invalid(format!(
            "the RSA variant's Signature must be base64 of the RSA-PSS signature: {e}"
        ))
    })?;
    UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, public_key)
        .verify(sts.as_bytes(), &signature)
        .map_err(|_| {
            invalid(format!(
                "the RSA-PSS-SHA256 signature does not verify with the public key registered \
                 for {}. Canonical request:\n{canonical}\nString to sign:\n{sts}",
                auth.access_key
            ))
        })?;
    Ok(auth.access_key)
}

/// An `X-Amz-Content-Sha256` header (sent unsigned beside RSA signatures) must be the body's hash.
fn check_content_sha256(req: &Request) -> Result<(), SigError> {
    match req.header("X-Amz-Content-Sha256") {
        Some(sent) if sent != sha256_hex(&req.body) => Err(invalid(format!(
            "X-Amz-Content-Sha256 {sent:?} is not the SHA-256 of the body"
        ))),
        _ => Ok(()),
    }
}

/// A test-side signer built from the same vector-checked primitives: adds `X-Amz-Date`,
/// the session token and `Authorization` to `req`.
#[cfg(test)]
pub fn sign_for_tests(
    req: &mut Request,
    access_key: &str,
    secret: &str,
    token: Option<&str>,
    region: &str,
    service: &str,
    now: SystemTime,
) {
    let scope = Scope {
        access_key,
        token,
        region,
        service,
        now,
    };
    sign_with(req, &scope, |auth, sts| signature(secret, auth, sts));
}

/// Who signs a test request, for what and when.
#[cfg(test)]
pub struct Scope<'a> {
    pub access_key: &'a str,
    pub token: Option<&'a str>,
    pub region: &'a str,
    pub service: &'a str,
    pub now: SystemTime,
}

/// Signs `req` as [`sign_for_tests`] does, with `sign` turning (authorization so far, string to
/// sign) into the `Signature=` value: hex HMAC, or base64 RSA-PSS for the managed-instance
/// variant.
#[cfg(test)]
pub fn sign_with(
    req: &mut Request,
    scope: &Scope,
    sign: impl FnOnce(&Authorization, &str) -> String,
) {
    let amz_date = crate::util::amz_date(scope.now);
    req.headers.push(("X-Amz-Date".into(), amz_date.clone()));
    if let Some(t) = scope.token {
        req.headers.push(("X-Amz-Security-Token".into(), t.into()));
    }
    let mut signed: Vec<String> = req
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .filter(|n| n != "user-agent" && n != "authorization")
        .collect();
    signed.sort();
    signed.dedup();
    let auth = Authorization {
        access_key: scope.access_key.into(),
        date: amz_date[..8].into(),
        region: scope.region.into(),
        service: scope.service.into(),
        signed_headers: signed,
        signature: String::new(),
    };
    let canonical = canonical_request(req, &auth.signed_headers).expect("signed headers present");
    let sig = sign(&auth, &string_to_sign(&amz_date, &auth.scope(), &canonical));
    let value = format!(
        "{ALGORITHM} Credential={}/{}, SignedHeaders={}, Signature={sig}",
        scope.access_key,
        auth.scope(),
        auth.signed_headers.join(";")
    );
    req.headers.push(("Authorization".into(), value));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// The AWS SigV4 suite, as the workspace keeps it in tests/data/sigv4.
    fn suite_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/sigv4")
    }

    fn read(case: &Path, file: &str) -> String {
        std::fs::read_to_string(case.join(file))
            .unwrap_or_else(|e| panic!("reading {}: {e}", case.join(file).display()))
    }

    /// Parses the suite's raw request format (path may contain spaces, folded headers).
    fn parse_suite_request(text: &str) -> Request {
        let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let first = lines.next().unwrap();
        let (method, rest) = first.split_once(' ').unwrap();
        let target = rest.rsplit_once(" HTTP/").unwrap().0;
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                let last = headers.last_mut().unwrap();
                last.1.push(' ');
                last.1.push_str(line.trim());
            } else {
                let (n, v) = line.split_once(':').unwrap();
                headers.push((n.into(), v.into()));
            }
        }
        Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    fn context(case: &Path) -> serde_json::Value {
        serde_json::from_str(&read(case, "context.json")).unwrap()
    }

    fn key_from(ctx: &serde_json::Value) -> KeyInfo {
        let creds = &ctx["credentials"];
        KeyInfo {
            secret: creds["secret_access_key"].as_str().unwrap().into(),
            session_token: creds["token"].as_str().map(str::to_string),
            expires: None,
        }
    }

    fn suite_time(ctx: &serde_json::Value) -> SystemTime {
        let ts = ctx["timestamp"].as_str().unwrap().replace(['-', ':'], "");
        parse_amz_date(&ts).unwrap()
    }

    #[test]
    fn whole_vector_suite_verifies() {
        // Unnormalised cases are S3's path rules, which ec2messages and ssm do not use.
        let mut cases: Vec<PathBuf> = std::fs::read_dir(suite_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir() && context(p)["normalize"] != false)
            .collect();
        cases.sort();
        assert!(
            cases.len() >= 20,
            "suite cases found in tests/data/sigv4: {}",
            cases.len()
        );
        for case in cases {
            let ctx = context(&case);
            let signed = parse_suite_request(&read(&case, "header-signed-request.txt"));
            let original = parse_suite_request(&read(&case, "request.txt"));
            let signed = Request {
                body: original.body,
                ..signed
            };
            let auth = parse_authorization(signed.header("Authorization").unwrap()).unwrap();
            let canonical = canonical_request(&signed, &auth.signed_headers).unwrap();
            assert_eq!(
                canonical,
                read(&case, "header-canonical-request.txt"),
                "{case:?}"
            );
            let key = key_from(&ctx);
            let result = verify(&signed, "us-east-1", "service", suite_time(&ctx), |ak| {
                (ak == "AKIDEXAMPLE").then(|| key.clone())
            });
            assert_eq!(result, Ok("AKIDEXAMPLE".into()), "{case:?}");
        }
    }

    #[test]
    fn known_answer_session_token_case() {
        let case = suite_dir().join("get-vanilla-with-session-token");
        let ctx = context(&case);
        let mut req = parse_suite_request(&read(&case, "request.txt"));
        let creds = &ctx["credentials"];
        sign_for_tests(
            &mut req,
            "AKIDEXAMPLE",
            creds["secret_access_key"].as_str().unwrap(),
            creds["token"].as_str(),
            "us-east-1",
            "service",
            suite_time(&ctx),
        );
        let auth = parse_authorization(req.header("Authorization").unwrap()).unwrap();
        assert_eq!(auth.signature, read(&case, "header-signature.txt").trim());
        let sts = string_to_sign(
            req.header("X-Amz-Date").unwrap(),
            &auth.scope(),
            &canonical_request(&req, &auth.signed_headers).unwrap(),
        );
        assert_eq!(sts, read(&case, "header-string-to-sign.txt"));
    }

    fn signed_vanilla() -> (Request, KeyInfo, SystemTime) {
        let case = suite_dir().join("get-vanilla-with-session-token");
        let ctx = context(&case);
        let signed = parse_suite_request(&read(&case, "header-signed-request.txt"));
        (signed, key_from(&ctx), suite_time(&ctx))
    }

    fn check(req: &Request, key: &KeyInfo, now: SystemTime) -> Result<String, SigError> {
        verify(req, "us-east-1", "service", now, |ak| {
            (ak == "AKIDEXAMPLE").then(|| key.clone())
        })
    }

    #[test]
    fn rejects_tampering_and_wrong_context() {
        let (req, key, now) = signed_vanilla();
        assert!(check(&req, &key, now).is_ok());

        let tampered = Request {
            body: b"x".to_vec(),
            ..req.clone()
        };
        assert_eq!(
            check(&tampered, &key, now).unwrap_err().code,
            "InvalidSignatureException"
        );
        let other_query = Request {
            query: "a=b".into(),
            ..req.clone()
        };
        assert!(check(&other_query, &key, now).is_err());

        let wrong_region = verify(&req, "eu-west-1", "service", now, |_| Some(key.clone()));
        assert!(wrong_region.unwrap_err().message.contains("eu-west-1"));
        let unknown = verify(&req, "us-east-1", "service", now, |_| None);
        assert_eq!(unknown.unwrap_err().code, "UnrecognizedClientException");

        let stale = check(&req, &key, now + MAX_SKEW + Duration::from_secs(1));
        let stale = stale.unwrap_err();
        assert!(stale.message.starts_with("Signature expired"), "{stale:?}");
        assert_eq!(
            stale.status, 400,
            "as the JSON 1.1 services answer a skewed time"
        );
        let early = check(&req, &key, now - MAX_SKEW - Duration::from_secs(1)).unwrap_err();
        assert!(
            early.message.starts_with("Signature not yet current"),
            "{early:?}"
        );
        assert!(
            check(&req, &key, now - MAX_SKEW).is_ok(),
            "skew limit is inclusive"
        );

        let expired = KeyInfo {
            expires: Some(now),
            ..key.clone()
        };
        assert_eq!(
            check(&req, &expired, now).unwrap_err().code,
            "UnrecognizedClientException"
        );
        let other_token = KeyInfo {
            session_token: Some("other".into()),
            ..key
        };
        assert!(
            check(&req, &other_token, now)
                .unwrap_err()
                .message
                .contains("Security-Token")
        );
    }

    #[test]
    fn canonical_uri_normalises_and_double_encodes() {
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri("//a/./b/../c/"), "/a/c/");
        assert_eq!(canonical_uri("/a%20b"), "/a%2520b");
        assert_eq!(canonical_query("b=2&a=%41&a=1"), "a=1&a=A&b=2");
    }
}
