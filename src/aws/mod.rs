//! The AWS client toolkit: endpoints, the HTTPS client, SigV4, JSON 1.1 calls, credentials, IMDS
//! and the identity the agent runs as. Nothing here knows about commands or sessions.

pub mod clock;
pub mod credentials;
pub mod endpoint;
pub mod http;
pub mod identity;
pub mod imds;
pub mod jsonrpc;
pub mod retry;
pub mod sigv4;
