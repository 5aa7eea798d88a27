//! MGS REST calls (docs/protocol.md §4.1): CreateControlChannel and CreateDataChannel, which return the
//! token that opens the websocket, and the SigV4-signed websocket upgrade (§1.3). A refusal for
//! the request's time or its credentials is fixed and the request sent again once, as for the
//! JSON 1.1 calls (see [`retry`]).

use super::websocket::Connection;
use crate::aws::clock;
use crate::aws::credentials::{Credentials, CredentialsProvider};
use crate::aws::endpoint::Endpoint;
use crate::aws::http::{HttpClient, HttpResponse};
use crate::aws::rest::{RestClient, RestError};
use crate::aws::retry::{self, Fix};
use crate::aws::signer::{Key, SignRequest, Signer};
use serde_json::json;
use std::time::Duration;

/// The SigV4 signing name of every MGS call.
pub const SERVICE: &str = "ssmmessages";
/// Upstream's HTTP client timeout for both calls.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// How much of an error body an error keeps.
const BODY_SHOWN: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum MgsError {
    /// The service answered with something other than 201; `access_denied` when the body names
    /// `AccessDeniedException` (which switches Run Command back to ec2messages).
    #[error(
        "the Session Manager service (ssmmessages) refused the request with HTTP {status}: \
         {body}; check the instance's ssmmessages:* permissions and Mgs.Endpoint"
    )]
    Refused {
        status: u16,
        body: String,
        access_denied: bool,
    },
    /// No usable answer: connection, TLS, timeout, credentials, or a 201 without a token.
    #[error("{0}")]
    Transport(String),
}

/// `POST /v1/control-channel/<instance id>` → TokenValue.
pub fn create_control_channel(
    http: &HttpClient,
    endpoint: &Endpoint,
    credentials: &dyn CredentialsProvider,
    instance_id: &str,
) -> Result<String, MgsError> {
    let body = json!({"MessageSchemaVersion": "1.0", "RequestId": crate::random::uuid_v4()});
    let path = format!("/v1/control-channel/{instance_id}");
    create_channel(http, endpoint, credentials, &path, &body)
}

/// `POST /v1/data-channel/<session id>` → TokenValue. `ClientId` is empty, as upstream sends it.
pub fn create_data_channel(
    http: &HttpClient,
    endpoint: &Endpoint,
    credentials: &dyn CredentialsProvider,
    session_id: &str,
) -> Result<String, MgsError> {
    let body = json!({
        "MessageSchemaVersion": "1.0",
        "RequestId": crate::random::uuid_v4(),
        "ClientId": "",
    });
    let path = format!("/v1/data-channel/{session_id}");
    create_channel(http, endpoint, credentials, &path, &body)
}

/// SigV4 headers (service `ssmmessages`) for the websocket upgrade `GET <path_and_query>`
/// (§1.3): `X-Amz-Date`, `X-Amz-Security-Token` (with session credentials) and `Authorization`.
/// The signed `Host` is the URL's authority, which is what the upgrade request carries; for URLs
/// from [`websocket_url`] that is `endpoint.host`.
fn sign_upgrade(
    endpoint: &Endpoint,
    credentials: &Credentials,
    host: &str,
    path_and_query: &str,
) -> Result<Vec<(String, String)>, MgsError> {
    let signer = Signer {
        key: Key::Hmac(credentials),
        region: &endpoint.region,
        clock: &clock::PROCESS,
    };
    let mut request = SignRequest {
        method: "GET",
        path_and_query,
        headers: vec![("Host".to_string(), host.to_string())],
        body: b"",
    };
    signer
        .sign(&mut request, SERVICE)
        .map_err(|e| MgsError::Transport(e.to_string()))?;
    let mut headers = request.headers;
    headers.retain(|(name, _)| name != "Host");
    Ok(headers)
}

/// Opens the websocket at `url` (from [`websocket_url`]) with a signed upgrade; a refused
/// upgrade whose answer shows clock skew or refused credentials is fixed, signed again and sent
/// once more.
pub fn open_websocket(
    http: &HttpClient,
    endpoint: &Endpoint,
    credentials: &dyn CredentialsProvider,
    url: &str,
    timeout: Duration,
) -> Result<Connection, MgsError> {
    let (host, path_and_query) = split_url(url).ok_or_else(|| not_websocket(url))?;
    retry::signed_call(
        credentials,
        |e| no_credentials(&e, url),
        |credentials| {
            let headers = sign_upgrade(endpoint, credentials, host, &path_and_query)
                .map_err(|e| (e, Fix::None))?;
            Connection::open(http, url, &headers, timeout).map_err(|(e, refused)| {
                let fix = refused.as_ref().map_or(Fix::None, fix);
                (MgsError::Transport(e.to_string()), fix)
            })
        },
    )
}

/// The websocket URL for `path_and_query` at `endpoint`: `ws://` for an `http://` endpoint (local
/// emulators), else `wss://`.
pub fn websocket_url(endpoint: &Endpoint, path_and_query: &str) -> String {
    let scheme = if endpoint.url.starts_with("http://") {
        "ws"
    } else {
        "wss"
    };
    format!("{scheme}://{}{path_and_query}", endpoint.host)
}

fn create_channel(
    http: &HttpClient,
    endpoint: &Endpoint,
    credentials: &dyn CredentialsProvider,
    path: &str,
    body: &serde_json::Value,
) -> Result<String, MgsError> {
    let url = format!("{}{path}", endpoint.url);
    let body = body.to_string().into_bytes();
    let client = RestClient {
        http,
        endpoint,
        service: SERVICE,
        credentials,
        clock: &clock::PROCESS,
    };
    let headers = [("Content-Type".to_string(), "application/json".to_string())];
    let response = match client.call("POST", path, &headers, &body, TIMEOUT) {
        Ok(response) if response.status == 201 => response,
        Ok(response) | Err(RestError::Refused { response, .. }) => return Err(refused(&response)),
        Err(e) => return Err(MgsError::Transport(e.to_string())),
    };
    token(&String::from_utf8_lossy(&response.body)).ok_or_else(|| {
        MgsError::Transport(format!(
            "POST {url}: the 201 answer ({} bytes) has no TokenValue",
            response.body.len()
        ))
    })
}

fn refused(response: &HttpResponse) -> MgsError {
    let text = String::from_utf8_lossy(&response.body);
    MgsError::Refused {
        status: response.status,
        body: text.chars().take(BODY_SHOWN).collect(),
        access_denied: text.contains("AccessDeniedException"),
    }
}

fn fix(response: &HttpResponse) -> Fix {
    retry::fix_for(&clock::PROCESS, response)
}

fn no_credentials(e: &impl std::fmt::Display, what: &str) -> MgsError {
    MgsError::Transport(format!("cannot sign the request to {what}: {e}"))
}

fn not_websocket(url: &str) -> MgsError {
    MgsError::Transport(format!(
        "cannot sign the websocket upgrade: {url:?} is not a ws:// or wss:// URL"
    ))
}

/// `ws[s]://host[:port]/path?query` → (`host[:port]`, `/path?query`), the request target as
/// the upgrade sends it (`/` when the URL has no path).
fn split_url(url: &str) -> Option<(&str, String)> {
    let rest = url
        .strip_prefix("wss://")
        .or_else(|| url.strip_prefix("ws://"))?;
    let at = rest.find(['/', '?']).unwrap_or(rest.len());
    let (host, path) = rest.split_at(at);
    let target = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    (!host.is_empty()).then_some((host, target))
}

/// The non-empty TokenValue of an XML answer (`<…><TokenValue>T</TokenValue></…>`, what the
/// service sends) or a JSON one (`{"TokenValue":"T"}`).
fn token(body: &str) -> Option<String> {
    let token = if body.trim_start().starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(body).ok()?;
        value.get("TokenValue")?.as_str()?.to_string()
    } else {
        let (_, rest) = body.split_once("<TokenValue>")?;
        let (raw, _) = rest.split_once("</TokenValue>")?;
        unescape_xml(raw.trim())
    };
    (!token.is_empty()).then_some(token)
}

/// Decodes the five predefined XML entities; anything else is kept as written.
fn unescape_xml(text: &str) -> String {
    const ENTITIES: [(&str, char); 5] = [
        ("&amp;", '&'),
        ("&lt;", '<'),
        ("&gt;", '>'),
        ("&quot;", '"'),
        ("&apos;", '\''),
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        match ENTITIES.iter().find(|(name, _)| rest.starts_with(name)) {
            Some((name, c)) => {
                out.push(*c);
                rest = &rest[name.len()..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::credentials::StaticCredentials;
    use crate::aws::http::test_server::{Received, response, serve};
    use crate::aws::http::{HttpConfig, ProxySettings};
    use crate::aws::sigv4;

    fn http() -> HttpClient {
        let config = HttpConfig {
            user_agent: "ssm-lite-test".into(),
            extra_ca_files: vec![],
        };
        HttpClient::with_proxies(&config, &ProxySettings::default()).unwrap()
    }

    fn creds(token: Option<&str>) -> StaticCredentials {
        StaticCredentials(Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: token.map(str::to_string),
            expires_at: None,
        })
    }

    fn endpoint(port: u16) -> Endpoint {
        Endpoint {
            url: format!("http://127.0.0.1:{port}"),
            host: format!("127.0.0.1:{port}"),
            region: "eu-west-1".into(),
        }
    }

    /// Recomputes the signature of `seen` with the test secret: equal only if every signed part
    /// (method, path, query, the signed headers, body) arrived as signed.
    fn assert_signed(seen: &Received, method_path: (&str, &str), body: &[u8]) {
        let auth = seen.header("authorization").expect("Authorization");
        let signed = auth
            .split("SignedHeaders=")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap();
        assert!(signed.split(';').any(|h| h == "host"), "{auth}");
        assert!(
            auth.contains("/eu-west-1/ssmmessages/aws4_request"),
            "{auth}"
        );
        let headers: Vec<(String, String)> = signed
            .split(';')
            .map(|h| (h.to_string(), seen.header(h).unwrap().to_string()))
            .collect();
        let request = sigv4::Request {
            method: method_path.0,
            path_and_query: method_path.1,
            headers: &headers,
            body,
            normalize_path: true,
        };
        let date = seen.header("x-amz-date").unwrap();
        let sts = sigv4::string_to_sign(&request, date, "eu-west-1", SERVICE);
        let signature = sigv4::hmac_signature("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", &sts);
        assert!(auth.ends_with(&format!("Signature={signature}")), "{auth}");
    }

    const XML_OK: &[u8] =
        b"<CreateControlChannelResponse><MessageSchemaVersion>1.0</MessageSchemaVersion>\
        <TokenValue>tok&amp;en&lt;&gt;&quot;&apos;&x</TokenValue></CreateControlChannelResponse>";

    #[test]
    fn control_channel_posts_signed_json_and_reads_the_xml_token() {
        let server = serve(|_| Some(response(201, &[], XML_OK)));
        let token = create_control_channel(
            &http(),
            &endpoint(server.port),
            &creds(Some("SESSION")),
            "i-0123456789abcdef0",
        )
        .unwrap();
        assert_eq!(token, "tok&en<>\"'&x");
        let seen = server.requests.recv().unwrap();
        assert_eq!(
            seen.request_line,
            "POST /v1/control-channel/i-0123456789abcdef0 HTTP/1.1"
        );
        assert_eq!(seen.header("content-type"), Some("application/json"));
        assert_eq!(seen.header("x-amz-security-token"), Some("SESSION"));
        let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
        assert_eq!(body["MessageSchemaVersion"], "1.0");
        assert_eq!(body["RequestId"].as_str().unwrap().len(), 36);
        assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
        assert_signed(
            &seen,
            ("POST", "/v1/control-channel/i-0123456789abcdef0"),
            &seen.body,
        );
    }

    #[test]
    fn data_channel_sends_an_empty_client_id_and_accepts_a_json_token() {
        let server = serve(|_| Some(response(201, &[], br#"{"TokenValue":"json-token"}"#)));
        let token =
            create_data_channel(&http(), &endpoint(server.port), &creds(None), "sess-1").unwrap();
        assert_eq!(token, "json-token");
        let seen = server.requests.recv().unwrap();
        assert_eq!(seen.request_line, "POST /v1/data-channel/sess-1 HTTP/1.1");
        assert_eq!(seen.header("x-amz-security-token"), None);
        let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
        assert_eq!(body["ClientId"], "");
        assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
        assert_signed(&seen, ("POST", "/v1/data-channel/sess-1"), &seen.body);
    }

    #[test]
    fn anything_but_201_with_a_token_is_an_error() {
        let cases: [(u16, &[u8], &str); 5] = [
            (200, XML_OK, "Refused"),
            (
                400,
                b"<AccessDeniedException><Message>no</Message></AccessDeniedException>",
                "denied",
            ),
            (403, br#"{"__type":"AccessDeniedException"}"#, "denied"),
            (500, b"<InternalServerException/>", "Refused"),
            (201, b"<R><TokenValue></TokenValue></R>", "no TokenValue"),
        ];
        for (status, body, expected) in cases {
            let server = serve(move |_| Some(response(status, &[], body)));
            let err = create_control_channel(&http(), &endpoint(server.port), &creds(None), "i-1")
                .unwrap_err();
            match &err {
                MgsError::Refused {
                    status: s,
                    body: b,
                    access_denied,
                } => {
                    assert_ne!(expected, "no TokenValue", "{err}");
                    assert_eq!((*s, b.as_bytes()), (status, body));
                    assert_eq!(*access_denied, expected == "denied", "{err}");
                }
                MgsError::Transport(text) => assert!(text.contains(expected), "{text}"),
            }
        }
        // Port 0: nobody can listen there (a port bound and released could be taken again by a
        // test running beside this one, as it once was).
        let err = create_control_channel(&http(), &endpoint(0), &creds(None), "i-1").unwrap_err();
        assert!(matches!(err, MgsError::Transport(_)), "{err}");
    }

    #[test]
    fn upgrade_headers_sign_the_get_with_its_query() {
        let ep = Endpoint {
            url: "https://ssmmessages.eu-west-1.amazonaws.com".into(),
            host: "ssmmessages.eu-west-1.amazonaws.com".into(),
            region: "eu-west-1".into(),
        };
        let path = "/v1/control-channel/i-1?role=subscribe&stream=input";
        let url = websocket_url(&ep, path);
        assert_eq!(
            url,
            format!("wss://ssmmessages.eu-west-1.amazonaws.com{path}")
        );
        let (host, path_and_query) = split_url(&url).unwrap();
        let headers = sign_upgrade(&ep, &creds(Some("TOKEN")).0, host, &path_and_query).unwrap();
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["X-Amz-Security-Token", "X-Amz-Date", "Authorization"]
        );
        // What the server sees: these headers plus the Host of the URL.
        let mut all = headers.clone();
        all.push(("Host".into(), ep.host.clone()));
        let seen = Received {
            request_line: format!("GET {path} HTTP/1.1"),
            headers: all,
            body: vec![],
        };
        assert_signed(&seen, ("GET", path), b"");
        let auth = &headers[2].1;
        assert!(
            auth.contains("SignedHeaders=host;x-amz-date;x-amz-security-token"),
            "{auth}"
        );

        assert_eq!(
            websocket_url(&endpoint(8080), "/x"),
            "ws://127.0.0.1:8080/x"
        );
        let err = open_websocket(&http(), &ep, &creds(None), "https://h/x", TIMEOUT)
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("not a ws:// or wss:// URL"),
            "{err}"
        );
    }

    #[test]
    fn xml_tokens_and_urls_parse() {
        assert_eq!(
            token("<a><TokenValue> t </TokenValue></a>").as_deref(),
            Some("t")
        );
        assert_eq!(token("<a><TokenValue>t</a>"), None);
        assert_eq!(token("{\"TokenValue\":5}"), None);
        assert_eq!(unescape_xml("&amp;amp;&bogus;&"), "&amp;&bogus;&");
        assert_eq!(split_url("ws://h:1"), Some(("h:1", "/".into())));
        assert_eq!(split_url("wss://h?a=b"), Some(("h", "/?a=b".into())));
        assert_eq!(split_url("wss:///p"), None);
    }
}
