//! AWS REST calls (MGS; S3 has its own client, `super::s3`, for streamed bodies and its signing
//! variant): a method, a path and query, headers and a body, signed
//! with SigV4 for the service and sent over the one HTTP layer. A refusal for the request's time
//! or its credentials is fixed and the call sent again once (see [`retry`]); the caller reads
//! the answer, whose shape differs per service.

use super::clock::Clock;
use super::credentials::{CredentialsError, CredentialsProvider};
use super::endpoint::Endpoint;
use super::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
use super::retry::{self, Fix};
use super::signer::{Key, SignError, SignRequest, Signer};
use std::time::Duration;

/// One service at one endpoint, with the credentials its calls are signed with.
pub struct RestClient<'a> {
    pub http: &'a HttpClient,
    pub endpoint: &'a Endpoint,
    /// The SigV4 signing name, e.g. `ssmmessages`.
    pub service: &'a str,
    pub credentials: &'a dyn CredentialsProvider,
    pub clock: &'a Clock,
}

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("cannot sign the request to {url}: {source}")]
    Credentials {
        url: String,
        source: CredentialsError,
    },
    #[error("cannot sign the request to {url}: {source}")]
    Sign { url: String, source: SignError },
    #[error("no answer from {url}: {source}; check the network, proxy and endpoint settings")]
    Transport { url: String, source: HttpError },
    /// An answer outside 2xx after what could be fixed was: the caller decodes its body.
    #[error("{url} refused the request with HTTP {}", .response.status)]
    Refused { url: String, response: HttpResponse },
}

impl RestClient<'_> {
    /// Sends `method path_and_query` with `headers` (`Host` is added) and `body`; returns a 2xx
    /// answer, or the refusal that signing again with a corrected clock or refreshed credentials
    /// did not fix.
    pub fn call(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(String, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<HttpResponse, RestError> {
        let url = format!("{}{path_and_query}", self.endpoint.url);
        let no_credentials = |source| RestError::Credentials {
            url: url.clone(),
            source,
        };
        retry::signed_call(self.credentials, no_credentials, |credentials| {
            let signer = Signer {
                key: Key::Hmac(credentials),
                region: &self.endpoint.region,
                clock: self.clock,
            };
            let mut request = SignRequest {
                method,
                path_and_query,
                headers: [("Host".to_string(), self.endpoint.host.clone())]
                    .into_iter()
                    .chain(headers.iter().cloned())
                    .collect(),
                body,
            };
            signer.sign(&mut request, self.service).map_err(|source| {
                let url = url.clone();
                (RestError::Sign { url, source }, Fix::None)
            })?;
            let http_request = HttpRequest {
                method,
                url: &url,
                headers: request.headers,
                body,
                timeout,
            };
            let response = self.http.send(http_request).map_err(|source| {
                let url = url.clone();
                (RestError::Transport { url, source }, Fix::None)
            })?;
            if (200..300).contains(&response.status) {
                return Ok(response);
            }
            let fix = retry::fix_for(self.clock, &response);
            let url = url.clone();
            Err((RestError::Refused { url, response }, fix))
        })
    }
}
