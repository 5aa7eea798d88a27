//! The identity the agent runs as (EC2, CustomIdentity; OnPrem in a later issue).
//! STUB: interface fixed; implementation in progress.

use super::credentials::CredentialsProvider;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    OnPrem,
    Ec2,
    Custom,
}

/// Who the agent is: ids for `Destination` and paths, region, placement, and credentials.
#[derive(Clone)]
pub struct Identity {
    pub kind: IdentityKind,
    pub instance_id: String,
    pub region: String,
    pub availability_zone: String,
    pub availability_zone_id: String,
    pub instance_type: String,
    pub credentials: Arc<dyn CredentialsProvider>,
}
