//! Service endpoints: `<service>.<region>.<domain>` or an override from the config file.

/// Where one AWS service is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `scheme://host[:port]`, no trailing slash, e.g. `https://ec2messages.eu-west-1.amazonaws.com`
    /// or `http://127.0.0.1:8080`.
    pub url: String,
    /// The `Host` header value (`host[:port]`, port only when not the scheme's default).
    pub host: String,
    /// The region used in the SigV4 scope.
    pub region: String,
}

/// One AWS service the agent calls. Adding a service is this value and its operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// The first label of its host name, `<prefix>.<region>.<domain>`.
    pub endpoint_prefix: &'static str,
    /// The SigV4 scope's service.
    pub signing_name: &'static str,
    /// The `X-Amz-Target` prefix of its JSON 1.1 operations (empty for REST services).
    pub target_prefix: &'static str,
}

impl Service {
    /// A service whose signing name is its endpoint prefix (every one the agent calls so far).
    const fn named(prefix: &'static str, target_prefix: &'static str) -> Service {
        Service {
            endpoint_prefix: prefix,
            signing_name: prefix,
            target_prefix,
        }
    }
}

/// Run Command's message delivery service (docs/protocol.md §2).
pub const EC2MESSAGES: Service = Service::named("ec2messages", "EC2WindowsMessageDeliveryService");
/// Systems Manager itself: health, registration, on-prem and DHMC credentials, Parameter Store.
pub const SSM: Service = Service::named("ssm", "AmazonSSM");
/// Session Manager's message gateway (MGS, REST and websockets).
pub const SSMMESSAGES: Service = Service::named("ssmmessages", "");
/// KMS, for session encryption.
pub const KMS: Service = Service::named("kms", "TrentService");
/// CloudWatch Logs, for Run Command output (docs/protocol.md §3.11).
pub const LOGS: Service = Service::named("logs", "Logs_20140328");
/// S3, for command output and downloads (REST; the bucket joins the host, see `super::s3`).
pub const S3: Service = Service::named("s3", "");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "invalid region {0:?}: expected 1-100 letters, digits or '-' (e.g. us-east-1); fix \
         Agent.Region in amazon-ssm-agent.json or the instance metadata"
    )]
    InvalidRegion(String),
    #[error(
        "endpoint override {value:?} has scheme {scheme:?}; use http://, https:// or a bare host"
    )]
    Scheme { value: String, scheme: String },
    #[error(
        "endpoint override {0:?} has no usable host; write it as host, host:port or \
         https://host[:port]"
    )]
    NoHost(String),
    #[error("endpoint {input:?}: port {port:?} is not a number in 1-65535")]
    Port { input: String, port: String },
}

/// Region prefixes of the partitions whose DNS suffix is not `amazonaws.com`.
const PARTITION_DOMAINS: &[(&str, &str)] = &[
    ("cn-", "amazonaws.com.cn"),
    ("us-iso-", "c2s.ic.gov"),
    ("us-isob-", "sc2s.sgov.gov"),
    ("us-isof-", "csp.hci.ic.gov"),
    ("eu-isoe-", "cloud.adc-e.uk"),
    ("eusc-de-", "amazonaws.eu"),
];

/// `service` is e.g. `ec2messages`; `override_` is the config's `<Section>.Endpoint` (a bare host
/// means https, a URL keeps its scheme and port); `service_domain` is `Agent.ServiceDomain`.
///
/// Every call we make is `POST /` or a fixed path, so any path, query or fragment in an override
/// URL is dropped: `https://vpce.example.com/prefix` reaches `https://vpce.example.com`.
pub fn resolve(
    service: &str,
    region: &str,
    override_: &str,
    service_domain: &str,
) -> Result<Endpoint, EndpointError> {
    check_region(region)?;
    let override_ = override_.trim();
    let (scheme, authority) = if override_.is_empty() {
        (
            "https",
            format!("{service}.{region}.{}", domain_for(region, service_domain)),
        )
    } else {
        split_override(override_)?
    };
    let host = strip_default_port(scheme, &authority, override_)?;
    Ok(Endpoint {
        url: format!("{scheme}://{host}"),
        host,
        region: region.to_string(),
    })
}

fn check_region(region: &str) -> Result<(), EndpointError> {
    let valid = !region.is_empty()
        && region.len() <= 100
        && region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(EndpointError::InvalidRegion(region.to_string()))
    }
}

fn domain_for<'a>(region: &str, service_domain: &'a str) -> &'a str {
    let service_domain = service_domain.trim();
    if !service_domain.is_empty() {
        return service_domain;
    }
    PARTITION_DOMAINS
        .iter()
        .find(|(prefix, _)| region.starts_with(prefix))
        .map_or("amazonaws.com", |(_, domain)| domain)
}

/// Splits an override into scheme and `host[:port]`, dropping any path, query or fragment.
fn split_override(value: &str) -> Result<(&'static str, String), EndpointError> {
    let (scheme, rest) = match value.split_once("://") {
        None => ("https", value),
        Some((s, rest)) if s.eq_ignore_ascii_case("https") => ("https", rest),
        Some((s, rest)) if s.eq_ignore_ascii_case("http") => ("http", rest),
        Some((s, _)) => {
            return Err(EndpointError::Scheme {
                value: value.to_string(),
                scheme: s.to_string(),
            });
        }
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(EndpointError::NoHost(value.to_string()));
    }
    Ok((scheme, authority.to_ascii_lowercase()))
}

/// Validates the port and drops it when it is the scheme's default.
fn strip_default_port(scheme: &str, authority: &str, input: &str) -> Result<String, EndpointError> {
    // A colon after the last `]` (IPv6 literal) separates the port.
    let tail_start = authority.rfind(']').unwrap_or(0);
    let Some(colon) = authority[tail_start..].rfind(':').map(|i| i + tail_start) else {
        return Ok(authority.to_string());
    };
    let (host, port) = (&authority[..colon], &authority[colon + 1..]);
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| EndpointError::Port {
            input: input.to_string(),
            port: port.to_string(),
        })?;
    let default = if scheme == "https" { 443 } else { 80 };
    Ok(if port == default {
        host.to_string()
    } else {
        format!("{host}:{port}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(service: &str, region: &str, ovr: &str, domain: &str) -> (String, String) {
        let e = resolve(service, region, ovr, domain).unwrap();
        assert_eq!(e.region, region);
        (e.url, e.host)
    }

    #[test]
    fn default_hosts_follow_the_partition() {
        let cases = [
            ("us-east-1", "ec2messages.us-east-1.amazonaws.com"),
            ("cn-north-1", "ec2messages.cn-north-1.amazonaws.com.cn"),
            ("us-iso-east-1", "ec2messages.us-iso-east-1.c2s.ic.gov"),
            ("us-isob-east-1", "ec2messages.us-isob-east-1.sc2s.sgov.gov"),
            (
                "us-isof-south-1",
                "ec2messages.us-isof-south-1.csp.hci.ic.gov",
            ),
            (
                "eu-isoe-west-1",
                "ec2messages.eu-isoe-west-1.cloud.adc-e.uk",
            ),
            ("eusc-de-east-1", "ec2messages.eusc-de-east-1.amazonaws.eu"),
        ];
        for (region, host) in cases {
            assert_eq!(
                ok("ec2messages", region, "", ""),
                (format!("https://{host}"), host.to_string()),
                "{region}"
            );
        }
    }

    #[test]
    fn service_domain_wins_over_the_partition() {
        let (url, host) = ok("ssm", "cn-north-1", "", "example.org");
        assert_eq!(url, "https://ssm.cn-north-1.example.org");
        assert_eq!(host, "ssm.cn-north-1.example.org");
    }

    #[test]
    fn overrides_keep_scheme_and_non_default_port_and_drop_the_path() {
        let cases = [
            (
                "vpce.example.com",
                "https://vpce.example.com",
                "vpce.example.com",
            ),
            (
                "vpce.example.com:8443",
                "https://vpce.example.com:8443",
                "vpce.example.com:8443",
            ),
            (
                "vpce.example.com:443",
                "https://vpce.example.com",
                "vpce.example.com",
            ),
            (
                "http://127.0.0.1:8080",
                "http://127.0.0.1:8080",
                "127.0.0.1:8080",
            ),
            ("http://127.0.0.1:80/", "http://127.0.0.1", "127.0.0.1"),
            (
                "HTTPS://Host.Example:443/a/b?c#d",
                "https://host.example",
                "host.example",
            ),
            ("https://[::1]:8443/x", "https://[::1]:8443", "[::1]:8443"),
            ("http://[::1]", "http://[::1]", "[::1]"),
        ];
        for (ovr, url, host) in cases {
            assert_eq!(
                ok("ssm", "us-east-1", ovr, ""),
                (url.to_string(), host.to_string()),
                "{ovr}"
            );
        }
    }

    #[test]
    fn rejects_bad_regions_and_overrides() {
        let long = "a".repeat(101);
        for region in [
            "",
            "us_east_1",
            "us-east-1.evil.com",
            "us-east-1/",
            long.as_str(),
        ] {
            let err = resolve("ssm", region, "", "").unwrap_err();
            assert!(
                err.to_string().contains("invalid region"),
                "{region}: {err}"
            );
        }
        assert!(resolve("ssm", &"a".repeat(100), "", "").is_ok());
        for ovr in [
            "ftp://host",
            "https://",
            "host:notaport",
            "host:0",
            "host:70000",
            "https://u@h",
        ] {
            assert!(resolve("ssm", "us-east-1", ovr, "").is_err(), "{ovr}");
        }
    }
}
