//! Service endpoints: `<service>.<region>.<domain>` or an override from the config file.
//! STUB: interface fixed; implementation in progress.

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointError(pub String);

impl std::fmt::Display for EndpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EndpointError {}

/// `service` is e.g. `ec2messages`; `override_` is the config's `<Section>.Endpoint` (a bare host
/// means https, a URL keeps its scheme and port); `service_domain` is `Agent.ServiceDomain`.
pub fn resolve(
    service: &str,
    region: &str,
    override_: &str,
    service_domain: &str,
) -> Result<Endpoint, EndpointError> {
    let _ = (service, region, override_, service_domain);
    todo!("endpoint::resolve")
}
