//! Runs every header-signing case of the AWS SigV4 test suite (tests/data/sigv4, see its README)
//! through `ssm_lite::aws::sigv4`: canonical request, string to sign, signature and the
//! `Authorization` header through the building blocks, and the whole signed header set through
//! `sign` wherever the case normalises its path (as `sign` always does).

use ssm_lite::aws::credentials::Credentials;
use ssm_lite::aws::sigv4;
use ssm_lite::timefmt;
use std::fs;
use std::path::{Path, PathBuf};

/// A raw HTTP/1.1 request from `request.txt` or `header-signed-request.txt`.
struct RawRequest {
    method: String,
    target: String,
    /// Header values as written; continuation lines are kept, joined by `\n`.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn parse_request(text: &str) -> Result<RawRequest, String> {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let first = lines.next().ok_or("empty request")?;
    // The target may contain spaces (`GET /example space/ HTTP/1.1`).
    let (method, rest) = first.split_once(' ').ok_or("no method")?;
    let (target, _version) = rest.rsplit_once(' ').ok_or("no HTTP version")?;
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            let (_, value) = headers
                .last_mut()
                .ok_or("continuation line before any header")?;
            value.push('\n');
            value.push_str(line);
        } else {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("bad header line {line:?}"))?;
            headers.push((name.to_string(), value.to_string()));
        }
    }
    Ok(RawRequest {
        method: method.to_string(),
        target: target.to_string(),
        headers,
        body: body.as_bytes().to_vec(),
    })
}

struct Case {
    name: String,
    dir: PathBuf,
    context: serde_json::Value,
    request: RawRequest,
}

impl Case {
    fn load(dir: &Path) -> Result<Case, String> {
        let context =
            serde_json::from_str(&read(dir, "context.json")?).map_err(|e| e.to_string())?;
        let request = parse_request(&read(dir, "request.txt")?)?;
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        Ok(Case {
            name,
            dir: dir.to_path_buf(),
            context,
            request,
        })
    }

    fn str(&self, pointer: &str) -> Result<&str, String> {
        self.context
            .pointer(pointer)
            .and_then(|v| v.as_str())
            .ok_or(format!("context.json lacks {pointer}"))
    }

    fn flag(&self, pointer: &str) -> bool {
        self.context
            .pointer(pointer)
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }

    fn credentials(&self, with_token: bool) -> Result<Credentials, String> {
        let token = self
            .context
            .pointer("/credentials/token")
            .and_then(|v| v.as_str());
        Ok(Credentials {
            access_key_id: self.str("/credentials/access_key_id")?.to_string(),
            secret_access_key: self.str("/credentials/secret_access_key")?.to_string(),
            session_token: token.filter(|_| with_token).map(str::to_string),
            expires_at: None,
        })
    }

    /// The request's headers plus what the harness adds before signing: the payload hash header
    /// for `sign_body` cases (we never send it ourselves, §1.3 of docs/protocol.md).
    fn base_headers(&self) -> Vec<(String, String)> {
        let mut headers = self.request.headers.clone();
        if self.flag("/sign_body") {
            headers.push((
                "x-amz-content-sha256".into(),
                sigv4::sha256_hex(&self.request.body),
            ));
        }
        headers
    }

    /// Checks every intermediate result through the building blocks.
    fn check_parts(&self, failures: &mut Vec<String>) -> Result<(), String> {
        let creds = self.credentials(true)?;
        let time = timefmt::parse_iso8601(self.str("/timestamp")?).ok_or("bad timestamp")?;
        let amz_date = timefmt::amz_date(time);
        let mut headers = self.base_headers();
        headers.push(("X-Amz-Date".into(), amz_date.clone()));
        if let Some(token) = creds
            .session_token
            .as_ref()
            .filter(|_| !self.flag("/omit_session_token"))
        {
            headers.push(("X-Amz-Security-Token".into(), token.clone()));
        }
        let request = sigv4::Request {
            method: &self.request.method,
            path_and_query: &self.request.target,
            headers: &headers,
            body: &self.request.body,
            normalize_path: self.flag("/normalize"),
        };
        let sts = sigv4::string_to_sign(
            &request,
            &amz_date,
            self.str("/region")?,
            self.str("/service")?,
        );
        let signature = sigv4::hmac_signature(&creds.secret_access_key, &sts);
        let auth = sigv4::authorization(&creds.access_key_id, &sts, &signature);
        let signed = parse_request(&read(&self.dir, "header-signed-request.txt")?)?;
        let want_auth = header(&signed.headers, "authorization")
            .ok_or("signed request has no Authorization")?;
        self.compare(
            failures,
            "canonical request",
            &read(&self.dir, "header-canonical-request.txt")?,
            &sts.canonical_request,
        );
        self.compare(
            failures,
            "string to sign",
            &read(&self.dir, "header-string-to-sign.txt")?,
            &sts.text,
        );
        self.compare(
            failures,
            "signature",
            read(&self.dir, "header-signature.txt")?.trim(),
            &signature,
        );
        self.compare(failures, "Authorization", &want_auth, &auth);
        Ok(())
    }

    /// Runs `sign` itself and compares the full header set with `header-signed-request.txt`.
    fn check_sign(&self, failures: &mut Vec<String>) -> Result<(), String> {
        let omit_token = self.flag("/omit_session_token");
        let creds = self.credentials(!omit_token)?;
        let time = timefmt::parse_iso8601(self.str("/timestamp")?).ok_or("bad timestamp")?;
        let mut headers = self.base_headers();
        let (region, service) = (self.str("/region")?, self.str("/service")?);
        let (method, target) = (&self.request.method, &self.request.target);
        sigv4::sign(
            method,
            target,
            &mut headers,
            &self.request.body,
            &creds,
            region,
            service,
            time,
        );
        if omit_token {
            // post-sts-header-after: the token is sent but added after signing.
            let token = self
                .credentials(true)?
                .session_token
                .ok_or("omit_session_token case without token")?;
            headers.push(("X-Amz-Security-Token".into(), token));
        }
        let signed = parse_request(&read(&self.dir, "header-signed-request.txt")?)?;
        self.compare(
            failures,
            "signed headers (sign)",
            &header_lines(&signed.headers),
            &header_lines(&headers),
        );
        Ok(())
    }

    fn compare(&self, failures: &mut Vec<String>, what: &str, want: &str, got: &str) {
        if want != got {
            failures.push(format!(
                "case {}: {what} differs\n{}",
                self.name,
                diff(want, got)
            ));
        }
    }
}

fn read(dir: &Path, file: &str) -> Result<String, String> {
    fs::read_to_string(dir.join(file)).map_err(|e| format!("{}: {e}", dir.join(file).display()))
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

/// Headers as sorted `name:value` lines (names lower-cased), so order does not matter.
fn header_lines(headers: &[(String, String)]) -> String {
    let mut lines: Vec<String> = headers
        .iter()
        .map(|(n, v)| format!("{}:{v}", n.to_ascii_lowercase()))
        .collect();
    lines.sort();
    lines.join("\n")
}

/// A line-by-line comparison: `  ` same, `- ` expected only, `+ ` ours only.
fn diff(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.split('\n').collect(), got.split('\n').collect());
    let mut out = String::new();
    for i in 0..w.len().max(g.len()) {
        match (w.get(i), g.get(i)) {
            (Some(a), Some(b)) if a == b => out.push_str(&format!("    {a:?}\n")),
            (a, b) => {
                if let Some(a) = a {
                    out.push_str(&format!("  - {a:?}\n"));
                }
                if let Some(b) = b {
                    out.push_str(&format!("  + {b:?}\n"));
                }
            }
        }
    }
    out
}

#[test]
fn every_header_signing_case_of_the_suite_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sigv4");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert_eq!(
        dirs.len(),
        38,
        "expected the 38 suite cases under {}",
        root.display()
    );
    assert!(
        dirs.iter()
            .any(|d| d.ends_with("get-vanilla-with-session-token"))
    );

    let (mut failures, mut signed_whole) = (Vec::new(), 0);
    for dir in &dirs {
        let case = match Case::load(dir) {
            Ok(case) => case,
            Err(e) => {
                failures.push(format!("case {}: cannot load: {e}", dir.display()));
                continue;
            }
        };
        if let Err(e) = case.check_parts(&mut failures) {
            failures.push(format!("case {}: {e}", case.name));
        }
        if case.flag("/normalize") {
            signed_whole += 1;
            if let Err(e) = case.check_sign(&mut failures) {
                failures.push(format!("case {}: {e}", case.name));
            }
        }
    }
    assert!(
        signed_whole >= 30,
        "only {signed_whole} cases went through sign()"
    );
    assert!(
        failures.is_empty(),
        "{} SigV4 suite failure(s):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}
