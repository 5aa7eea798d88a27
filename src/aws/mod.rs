//! The AWS client toolkit: endpoints, the HTTPS client, SigV4, JSON 1.1 calls, credentials, IMDS.
//! Nothing here knows about commands, sessions, on-prem registration or which identity is chosen.

pub(crate) mod clock;
pub mod credentials;
pub(crate) mod endpoint;
pub(crate) mod http;
pub(crate) mod imds;
pub(crate) mod jsonrpc;
pub(crate) mod logs;
pub(crate) mod md5;
pub(crate) mod rest;
pub(crate) mod retry;
pub mod s3;
pub(crate) mod signer;
pub mod sigv4;
