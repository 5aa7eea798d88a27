//! What the call layer does when a service refuses a signed request, and how what is left of a
//! failure is named for the callers that retry it later.
//!
//! The call layer fixes what it can, once each, before an error reaches its caller:
//! * a clock-skew refusal ([`SKEW_CODES`], and the answer's `Date` more than 4 minutes from
//!   [`clock::now`]): the clock takes the service's time, the request is signed again and resent;
//! * a credentials refusal ([`CREDENTIAL_CODES`]): the provider fetches fresh credentials
//!   ([`CredentialsProvider::refresh_rejected`]) and the request is signed with them and resent.
//!
//! What still fails is classified by [`ErrorKind`] (`AwsError::kind`).

use super::clock::Clock;
use super::credentials::{Credentials, CredentialsError, CredentialsProvider};
use super::http::HttpResponse;
use crate::timefmt;

/// Codes a refused request time comes back with across the services (as the AWS SDKs that
/// correct skew list them). Most also mean other things (a wrong key signs badly too): only an
/// answer `Date` far from ours makes them skew.
pub const SKEW_CODES: &[&str] = &[
    "RequestTimeTooSkewed",
    "RequestExpired",
    "RequestInTheFuture",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "AuthFailure",
];

/// Codes that mean the credentials themselves were refused: expired or revoked session tokens,
/// unknown keys, a signature made with a stale secret.
pub const CREDENTIAL_CODES: &[&str] = &[
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "AuthFailure",
];

/// How a failed AWS call should be treated by whoever tries it again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No complete answer (connection, TLS, timeout), a 5xx or a 408: try again with back-off.
    Retryable,
    /// The service asks to slow down (throttling codes, 429): try again, later than usual.
    Throttled,
    /// The credentials were refused, or none could be had; the call layer has already fetched
    /// fresh ones once. Try again later: a role's next credentials, a repaired key file or a
    /// re-registration can make the same request succeed.
    Credentials,
    /// The service refused the request's time, and taking the time from its answer did not help
    /// (no usable `Date`, or the clock jumped again). Try again later.
    ClockSkew,
    /// The service (or a proxy in the way) refused this request as it is: validation, access
    /// denied, an unknown instance or operation, a proxy's own error page (status 400–499 other
    /// than the above). Sending it again unchanged gets the same answer until something outside
    /// the agent changes. Also a 2xx whose body is not the JSON expected: the service did take
    /// the request.
    Permanent,
}

impl ErrorKind {
    /// Tried again at once by a caller that waits for the answer (with back-off).
    pub fn is_retried(self) -> bool {
        matches!(self, ErrorKind::Retryable | ErrorKind::Throttled)
    }
}

/// What a refused attempt needs before it is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// Nothing the call layer can do.
    None,
    /// The clock was corrected: sign again.
    Resign,
    /// The credentials were refused: fetch new ones and sign again.
    Refresh,
}

/// The error code of a refusal: `X-Amzn-ErrorType`, else the body's JSON `__type`/`code`/`Code`,
/// else its XML `<Code>` or root element (MGS answers in XML); the namespace and any `:…` suffix
/// are cut (`aws.ns#Code:http://…` → `Code`). `None` when no code is found.
pub fn error_code(response: &HttpResponse) -> Option<String> {
    let header = response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-amzn-errortype"))
        .map(|(_, v)| v.clone());
    let json = || {
        let value: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
        let obj = value.as_object()?;
        ["__type", "code", "Code"]
            .iter()
            .find_map(|n| obj.get(*n)?.as_str().map(str::to_string))
    };
    let xml = || xml_code(&String::from_utf8_lossy(&response.body)).map(str::to_string);
    header
        .or_else(json)
        .or_else(xml)
        .map(|c| short_code(&c).to_string())
        .filter(|c| !c.is_empty())
}

/// `aws.namespace#Code:http://doc` → `Code`.
pub fn short_code(raw: &str) -> &str {
    let code = raw.rsplit_once('#').map_or(raw, |(_, c)| c);
    code.split(':').next().unwrap_or_default().trim()
}

/// `<Error><Code>C</Code>…` or `<C><Message>…` (after any `<?xml …?>` prolog) → `C`; other
/// markup (a proxy's HTML page) names no code.
fn xml_code(body: &str) -> Option<&str> {
    if let Some((_, rest)) = body.split_once("<Code>") {
        return rest.split_once("</Code>").map(|(code, _)| code.trim());
    }
    if !body.contains("<Message>") {
        return None;
    }
    let mut rest = body;
    loop {
        let (_, tag) = rest.split_once('<')?;
        if tag.starts_with(['?', '!']) {
            rest = tag;
            continue;
        }
        let end = tag
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            .unwrap_or(tag.len());
        return tag.get(..end).filter(|name| !name.is_empty());
    }
}

/// What a refusal needs: [`Fix::Resign`] when its code can mean skew and its `Date` shows our
/// clock was off (the clock is corrected here), [`Fix::Refresh`] for a credentials code.
pub fn fix_for(clock: &Clock, response: &HttpResponse) -> Fix {
    let Some(code) = error_code(response) else {
        return Fix::None;
    };
    let date = response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("date"))
        .and_then(|(_, v)| timefmt::parse_http_date(v));
    if SKEW_CODES.contains(&code.as_str()) && date.is_some_and(|d| clock.correct(d)) {
        Fix::Resign
    } else if CREDENTIAL_CODES.contains(&code.as_str()) {
        Fix::Refresh
    } else {
        Fix::None
    }
}

/// Runs `attempt` with `provider`'s credentials until it succeeds or fails with nothing left to
/// fix: again at most once after a clock correction and once after a credentials refresh.
/// `attempt` signs with the clock it was given to [`fix_for`] and returns the refusal's fix.
pub fn signed_call<T, E>(
    provider: &dyn CredentialsProvider,
    no_credentials: impl Fn(CredentialsError) -> E,
    mut attempt: impl FnMut(&Credentials) -> Result<T, (E, Fix)>,
) -> Result<T, E> {
    let (mut resigned, mut refreshed) = (false, false);
    loop {
        let credentials = provider.credentials().map_err(&no_credentials)?;
        let (error, fix) = match attempt(&credentials) {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        match fix {
            Fix::Resign if !resigned => resigned = true,
            Fix::Refresh if !refreshed && provider.refresh_rejected(&credentials) => {
                refreshed = true;
            }
            _ => return Err(error),
        }
    }
}

/// [`signed_call`] for requests signed with a key of the agent's own (the on-prem RSA key):
/// only a clock correction can help.
pub fn keyed_call<T, E>(mut attempt: impl FnMut() -> Result<T, (E, Fix)>) -> Result<T, E> {
    let mut resigned = false;
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err((_, Fix::Resign)) if !resigned => resigned = true,
            Err((error, _)) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn refusal(headers: &[(&str, &str)], body: &str) -> HttpResponse {
        HttpResponse {
            status: 403,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    use timefmt::http_date;

    #[test]
    fn codes_from_header_json_and_xml() {
        let code = |h: &[(&str, &str)], b: &str| error_code(&refusal(h, b));
        assert_eq!(
            code(
                &[("X-Amzn-ErrorType", "ExpiredTokenException:http://x")],
                "{}"
            )
            .as_deref(),
            Some("ExpiredTokenException")
        );
        assert_eq!(
            code(
                &[],
                r#"{"__type":"com.amazon#UnrecognizedClientException"}"#
            )
            .as_deref(),
            Some("UnrecognizedClientException")
        );
        assert_eq!(
            code(&[], "<?xml version=\"1.0\"?><InvalidSignatureException><Message>m</Message></InvalidSignatureException>").as_deref(),
            Some("InvalidSignatureException")
        );
        assert_eq!(
            code(
                &[],
                "<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code></Error></ErrorResponse>"
            )
            .as_deref(),
            Some("SignatureDoesNotMatch")
        );
        let junk = [
            "",
            "<",
            "<>",
            "<?",
            "plain text",
            "<\u{e9}<Message>",
            "<html>503</html>",
        ];
        for junk in junk.into_iter().chain(["{\"__type\":\"\"}"]) {
            assert_eq!(code(&[], junk), None, "{junk:?}");
        }
    }

    #[test]
    fn skew_needs_a_far_date_and_credentials_codes_ask_for_a_refresh() {
        let clock = Clock::new();
        let far = http_date(SystemTime::now() + Duration::from_secs(3600));
        let near = http_date(SystemTime::now() + Duration::from_secs(60));
        let body = r#"{"__type":"InvalidSignatureException","message":"Signature expired"}"#;
        assert_eq!(
            fix_for(&clock, &refusal(&[("Date", &near)], body)),
            Fix::Refresh
        );
        assert_eq!(clock.offset_ms(), 0);
        assert_eq!(
            fix_for(&clock, &refusal(&[("Date", &far)], body)),
            Fix::Resign
        );
        assert!(clock.offset_ms() > 3_500_000);
        let skewed = r#"{"__type":"RequestTimeTooSkewed"}"#;
        assert_eq!(
            fix_for(&clock, &refusal(&[("Date", "garbage")], skewed)),
            Fix::None
        );
        let denied = r#"{"__type":"AccessDeniedException"}"#;
        let later = http_date(SystemTime::now() - Duration::from_secs(7200));
        assert_eq!(
            fix_for(&clock, &refusal(&[("Date", &later)], denied)),
            Fix::None
        );
    }

    struct Rotating(std::sync::Mutex<u32>);

    impl CredentialsProvider for Rotating {
        fn credentials(&self) -> Result<Credentials, CredentialsError> {
            Ok(Credentials {
                access_key_id: format!("AK{}", self.0.lock().unwrap()),
                secret_access_key: "s".into(),
                session_token: None,
                expires_at: None,
            })
        }
        fn refresh_rejected(&self, _: &Credentials) -> bool {
            *self.0.lock().unwrap() += 1;
            true
        }
    }

    #[test]
    fn each_fix_is_tried_once() {
        let provider = Rotating(std::sync::Mutex::new(0));
        let mut seen = Vec::new();
        let result: Result<(), &str> = signed_call(
            &provider,
            |_| "none",
            |c| {
                seen.push(c.access_key_id.clone());
                Err((
                    "refused",
                    if seen.len() == 1 {
                        Fix::Resign
                    } else {
                        Fix::Refresh
                    },
                ))
            },
        );
        assert_eq!(result, Err("refused"));
        assert_eq!(
            seen,
            ["AK0", "AK0", "AK1"],
            "resigned, refreshed, then given up"
        );
        let mut tries = 0;
        let result: Result<(), &str> = keyed_call(|| {
            tries += 1;
            Err(("refused", Fix::Resign))
        });
        assert_eq!((result, tries), (Err("refused"), 2));
    }
}
