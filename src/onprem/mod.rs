//! On-premises (hybrid activation) identity: registration with an activation code, the RSA key
//! pair, RSA-signed role-token requests, key rotation, and import from amazon-ssm-agent.

pub mod credentials;
pub mod dhmc;
pub mod fingerprint;
pub mod keys;
pub mod register;
pub mod rotation;
pub mod rsasign;
pub mod store;
pub mod vault;
