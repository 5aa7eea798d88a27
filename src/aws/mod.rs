//! The AWS client toolkit: endpoints, the HTTPS client, SigV4, JSON 1.1 calls, credentials, IMDS.
//! Nothing here knows about commands, sessions, on-prem registration or which identity is chosen.

pub mod clock;
pub mod credentials;
pub mod endpoint;
pub mod http;
pub mod imds;
pub mod jsonrpc;
pub mod rest;
pub mod retry;
pub mod signer;
pub mod sigv4;
