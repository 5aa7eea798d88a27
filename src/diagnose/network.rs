//! The network checks: each endpoint's DNS, TCP and TLS (upstream `connectivity_check.go`,
//! which only dials TCP), the clock against a service's `Date`, and the proxy settings
//! (`proxy_check.go`).

use super::{Context, Outcome, Status};
use crate::aws::endpoint::{Endpoint, SSM, Service};
use crate::aws::http::{HttpClient, HttpRequest, ProxySettings};
use crate::mgs::websocket::{Target, Tcp, tcp_connect, tunnel};
use crate::timefmt;
use rustls::ClientConnection;
use rustls::pki_types::ServerName;
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant, SystemTime};

/// Each network step's limit (upstream's `connectivityCheckTimeoutSeconds`).
const STEP_TIMEOUT: Duration = Duration::from_secs(3);
/// The request whose `Date` the clock is compared with.
const CLOCK_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The services refuse a signature dated further than this from their clock.
const MAX_SKEW_SECS: u64 = 5 * 60;

/// "Connectivity to `service` endpoint": the endpoint the agent would call, reached the way it
/// would be (directly, or through the CONNECT proxy the agent would use).
pub(super) fn endpoint(ctx: &Context, service: &Service) -> Outcome {
    let (endpoint, http) = match resolve(ctx, service) {
        Ok(found) => found,
        Err(skip) => return skip,
    };
    // The URL is `http(s)://host[:port]`; the websocket parser reads the same with ws(s)://.
    let target = match Target::parse(&endpoint.url.replacen("http", "ws", 1)) {
        Ok(target) => target,
        Err(e) => return failed(&endpoint, format!("not a usable URL: {e}")),
    };
    match reach(http, &target) {
        Ok(how) => (
            Status::Success,
            format!("{} is reachable: {how}", endpoint.host),
        ),
        Err(why) => failed(&endpoint, why),
    }
}

/// The endpoint of `service` and the HTTP client, or the outcome that says why there is none.
fn resolve<'c>(ctx: &'c Context, service: &Service) -> Result<(Endpoint, &'c HttpClient), Outcome> {
    let region = ctx.region(service).map_err(|e| (Status::Skipped, e))?;
    let endpoint = ctx.config.endpoint(service, region).map_err(|e| {
        let name = service.endpoint_prefix;
        (Status::Failed, format!("{name} endpoint: {e}"))
    })?;
    let http = ctx.http.as_deref().map_err(|e| {
        let why = format!("{}: no HTTP client: {e}", endpoint.url);
        (Status::Failed, why)
    })?;
    Ok((endpoint, http))
}

fn failed(endpoint: &Endpoint, why: String) -> Outcome {
    (
        Status::Failed,
        format!("{} is not reachable: {why}", endpoint.url),
    )
}

/// DNS, TCP and (for https) the TLS handshake to `target`; what was done, or what failed and
/// what to check.
fn reach(http: &HttpClient, target: &Target) -> Result<String, String> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    let (tcp, mut how) = match http.proxy_for(target.tls, &target.host) {
        Some(proxy) => {
            let shown = format!("{}:{}", proxy.host(), proxy.port());
            let tcp = tunnel(proxy, target, deadline).map_err(|e| e.0)?;
            (tcp, format!("tunnel through proxy {shown}"))
        }
        None => {
            let addr = lookup(&target.host, target.port)?;
            let tcp = tcp_connect(&target.host, target.port, deadline).map_err(|e| e.0)?;
            (tcp, format!("DNS {addr}, TCP connected"))
        }
    };
    if target.tls {
        let version = handshake(http, &target.host, tcp)?;
        how.push_str(&format!(", TLS handshake done ({version})"));
    } else {
        how.push_str(", no TLS (http:// endpoint)");
    }
    Ok(how)
}

/// The first address of `host` (no timeout of its own: a hanging resolver makes the whole
/// check time out, and the report says so).
fn lookup(host: &str, port: u16) -> Result<String, String> {
    let dns =
        |why: String| format!("DNS lookup of {host} {why}; check /etc/resolv.conf and the network");
    match (host, port).to_socket_addrs().map(|mut addrs| addrs.next()) {
        Ok(Some(addr)) => Ok(addr.ip().to_string()),
        Ok(None) => Err(dns("gave no address".into())),
        Err(e) => Err(dns(format!("failed: {e}"))),
    }
}

/// A TLS handshake over `tcp` with the agent's TLS settings (roots, versions); the protocol
/// version agreed.
fn handshake(http: &HttpClient, host: &str, mut tcp: Tcp) -> Result<String, String> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host:?} is not a valid TLS server name: {e}"))?;
    let mut conn = ClientConnection::new(http.tls_config(), name)
        .map_err(|e| format!("cannot start TLS with {host}: {e}"))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| {
            format!(
                "TLS handshake with {host} failed: {e}; behind a TLS-inspecting proxy, add its CA \
                 to /etc/amazon/ssm/amazon-ssm-agent.crt or SSL_CERT_FILE"
            )
        })?;
    }
    let version = conn.protocol_version().map(|v| format!("{v:?}"));
    Ok(version.unwrap_or_default())
}

/// "Clock skew": the system clock against the `Date` of an answer from the ssm endpoint
/// (any answer: the request is not signed).
pub(super) fn clock(ctx: &Context) -> Outcome {
    let (endpoint, http) = match resolve(ctx, &SSM) {
        Ok(found) => found,
        Err(skip) => return skip,
    };
    let request = HttpRequest {
        method: "GET",
        url: &format!("{}/", endpoint.url),
        headers: Vec::new(),
        body: &[],
        timeout: CLOCK_REQUEST_TIMEOUT,
    };
    let answer = match http.send(request) {
        Ok(answer) => answer,
        Err(e) => {
            let why = format!(
                "no answer from {} to compare the clock with: {e}",
                endpoint.url
            );
            return (Status::Skipped, why);
        }
    };
    let date = answer
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("date"))
        .map(|(_, value)| value.as_str());
    match date.and_then(timefmt::parse_http_date) {
        Some(service) => skew(&endpoint.host, service, SystemTime::now()),
        None => (
            Status::Skipped,
            format!(
                "the answer of {} has no valid Date header ({date:?})",
                endpoint.url
            ),
        ),
    }
}

/// The clock check's outcome for a service time `service` seen at local time `local`.
fn skew(host: &str, service: SystemTime, local: SystemTime) -> Outcome {
    let (secs, way) = match service.duration_since(local) {
        Ok(ahead) => (ahead.as_secs(), "behind"),
        Err(e) => (e.duration().as_secs(), "ahead of"),
    };
    let said = format!(
        "the system clock is {secs} s {way} the clock of {host} (its Date: {})",
        timefmt::iso8601_ms(service)
    );
    if secs > MAX_SKEW_SECS {
        let fix = "AWS refuses requests signed more than 5 minutes off: set the clock / enable \
                   NTP (e.g. `timedatectl set-ntp true`)";
        (Status::Failed, format!("{said}; {fix}"))
    } else {
        (Status::Success, said)
    }
}

/// "Proxy configuration": the variables the agent honours, in upstream's `NAME: value` form
/// (`NULL` when unset), passwords hidden; Failed when the agent would refuse them.
pub(super) fn proxy(ctx: &Context) -> Outcome {
    let settings = ProxySettings::from_env();
    let vars = [
        ("https_proxy", &settings.https_proxy),
        ("http_proxy", &settings.http_proxy),
        ("no_proxy", &settings.no_proxy),
    ];
    if settings.https_proxy.is_none() && settings.http_proxy.is_none() {
        return (Status::Skipped, "No proxy configuration detected".into());
    }
    let shown: Vec<String> = vars
        .iter()
        .map(|(name, value)| {
            format!(
                "{name}: {}",
                value.as_deref().map_or("NULL".into(), hide_password)
            )
        })
        .collect();
    let detected = format!("Detected proxy configuration: {}", shown.join(" "));
    match &ctx.http {
        Ok(_) => (Status::Success, detected),
        Err(e) => (Status::Failed, format!("{detected}; {e}")),
    }
}

/// `value` with the password of any `user:password@` replaced by `***`.
fn hide_password(value: &str) -> String {
    let (scheme, rest) = match value.split_once("://") {
        Some((scheme, rest)) => (&value[..scheme.len() + 3], rest),
        None => ("", value),
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}{user}:***@{host}")
        }
        _ => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::http::HttpConfig;
    use crate::aws::http::test_server::{TEST_CA, connect_proxy, serve_raw, tls_server_config};
    use std::path::PathBuf;

    /// The agent's client, trusting the test CA when `ca` says so.
    fn client(ca: bool, proxies: ProxySettings) -> HttpClient {
        let path =
            std::env::temp_dir().join(format!("ssm-lite-diag-ca-{}.pem", std::process::id()));
        std::fs::write(&path, TEST_CA).unwrap();
        let config = HttpConfig {
            user_agent: "ssm-lite-test".into(),
            extra_ca_files: if ca {
                vec![path]
            } else {
                Vec::<PathBuf>::new()
            },
        };
        HttpClient::with_proxies(&config, &proxies).unwrap()
    }

    fn target(port: u16) -> Target {
        Target {
            tls: true,
            host: "127.0.0.1".into(),
            port,
        }
    }

    #[test]
    fn tls_endpoints_are_reached_directly_or_through_the_proxy() {
        let server = serve_raw(|mut tcp| {
            let mut conn = rustls::ServerConnection::new(tls_server_config()).unwrap();
            while conn.is_handshaking() && conn.complete_io(&mut tcp).is_ok() {}
        });
        let direct = reach(
            &client(true, ProxySettings::default()),
            &target(server.port),
        )
        .unwrap();
        assert!(
            direct.starts_with("DNS 127.0.0.1, TCP connected, TLS handshake done (TLSv1_"),
            "{direct}"
        );

        let (proxy, seen) = connect_proxy();
        let via = ProxySettings {
            https_proxy: Some(format!("http://127.0.0.1:{}", proxy.port)),
            ..ProxySettings::default()
        };
        let tunnelled = reach(&client(true, via), &target(server.port)).unwrap();
        let want = format!(
            "tunnel through proxy 127.0.0.1:{}, TLS handshake done",
            proxy.port
        );
        assert!(tunnelled.starts_with(&want), "{tunnelled}");
        let connect = format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.port);
        assert_eq!(*seen.lock().unwrap(), [connect]);

        let untrusted = reach(
            &client(false, ProxySettings::default()),
            &target(server.port),
        );
        let err = untrusted.unwrap_err();
        assert!(
            err.starts_with("TLS handshake with 127.0.0.1 failed: invalid peer certificate"),
            "{err}"
        );
        assert!(
            err.contains("amazon-ssm-agent.crt or SSL_CERT_FILE"),
            "{err}"
        );
    }

    #[test]
    fn skew_over_five_minutes_fails_and_says_what_to_do() {
        let local = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (status, note) = skew("h", local + Duration::from_secs(1200), local);
        assert_eq!(status, Status::Failed);
        assert!(note.contains("1200 s behind the clock of h"), "{note}");
        assert!(note.contains("set the clock / enable NTP"), "{note}");
        let (status, note) = skew("h", local - Duration::from_secs(301), local);
        assert_eq!(status, Status::Failed, "{note}");
        assert!(note.contains("301 s ahead of"), "{note}");
        let (status, note) = skew("h", local + Duration::from_secs(300), local);
        assert_eq!(status, Status::Success, "{note}");
    }

    #[test]
    fn proxy_passwords_are_hidden() {
        let cases = [
            ("http://u:secret@proxy:3128", "http://u:***@proxy:3128"),
            ("u:p@ss@proxy:3128", "u:***@proxy:3128"),
            ("http://u@proxy:3128", "http://u@proxy:3128"),
            ("http://proxy:3128", "http://proxy:3128"),
        ];
        for (value, shown) in cases {
            assert_eq!(hide_password(value), shown, "{value}");
        }
    }
}
