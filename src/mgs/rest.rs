//! MGS REST calls (protocol §4.1): CreateControlChannel and CreateDataChannel, which return the
//! token that opens the websocket.
//! STUB: interface fixed; implementation in progress.

use crate::aws::credentials::CredentialsProvider;
use crate::aws::endpoint::Endpoint;
use crate::aws::http::HttpClient;

#[derive(Debug)]
pub enum MgsError {
    /// The service answered with something other than 201; `access_denied` when the body names
    /// `AccessDeniedException` (which switches Run Command back to ec2messages).
    Refused { status: u16, body: String, access_denied: bool },
    Transport(String),
}

impl std::fmt::Display for MgsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for MgsError {}

/// `POST /v1/control-channel/<instance id>` → TokenValue.
pub fn create_control_channel(http: &HttpClient, endpoint: &Endpoint, credentials: &dyn CredentialsProvider, instance_id: &str) -> Result<String, MgsError> {
    let _ = (http, endpoint, credentials, instance_id);
    todo!()
}

/// `POST /v1/data-channel/<session id>` → TokenValue.
pub fn create_data_channel(http: &HttpClient, endpoint: &Endpoint, credentials: &dyn CredentialsProvider, session_id: &str) -> Result<String, MgsError> {
    let _ = (http, endpoint, credentials, session_id);
    todo!()
}

/// SigV4 headers (service `ssmmessages`) for the websocket upgrade `GET <url>` (§1.3).
pub fn upgrade_headers(endpoint: &Endpoint, credentials: &dyn CredentialsProvider, url: &str) -> Result<Vec<(String, String)>, MgsError> {
    let _ = (endpoint, credentials, url);
    todo!()
}
