//! On-premises (hybrid activation) identity: registration with an activation code, the RSA key
//! pair, RSA-signed role-token requests, key rotation, and import from amazon-ssm-agent.

pub(crate) mod credentials;
pub(crate) mod dhmc;
pub mod fingerprint;
pub(crate) mod keys;
pub mod register;
pub(crate) mod rotation;
pub(crate) mod rsasign;
pub(crate) mod shared_credentials;
pub mod store;
pub(crate) mod vault;
