//! AWS credentials, the provider trait, and the default chain (environment, shared files).
//! STUB: interface fixed; implementation in progress.

use std::fmt;
use std::time::SystemTime;

/// A set of AWS credentials. `Debug` never prints the secret or the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// When these stop working; `None` for long-lived keys.
    pub expires_at: Option<SystemTime>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialsError(pub String);

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CredentialsError {}

/// Anything that can hand out current credentials; implementations refresh as needed.
pub trait CredentialsProvider: Send + Sync {
    fn credentials(&self) -> Result<Credentials, CredentialsError>;
}

/// Fixed credentials (tests, and the emulator's demo identity).
pub struct StaticCredentials(pub Credentials);

impl CredentialsProvider for StaticCredentials {
    fn credentials(&self) -> Result<Credentials, CredentialsError> {
        Ok(self.0.clone())
    }
}
