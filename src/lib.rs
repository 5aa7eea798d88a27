//! ssm-lite: a small, synchronous agent for AWS Systems Manager.
//!
//! Transports carry, one engine decides, `sys` touches the OS: `mds` (ec2messages) turns
//! messages into jobs for `runcommand`, which runs `document` steps through `exec` on a fixed
//! worker pool and hands replies back; `state` owns every byte on disk; `aws` signs and sends.
//! Every `unsafe` block lives in `sys`, each with a `// SAFETY:` comment; the lints below hold it.

#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod agent;
pub(crate) mod association;
pub mod aws;
pub(crate) mod base64;
pub mod config;
pub mod diagnose;
pub(crate) mod document;
pub(crate) mod exec;
/// The hidden `__supervise` subcommand, and turning it on for the agent's scripts.
pub use exec::supervisor;
pub mod fuzzing;
pub(crate) mod health;
pub(crate) mod identity;
pub(crate) mod inventory;
pub mod logging;
pub(crate) mod mds;
pub(crate) mod mgs;
pub mod onprem;
pub mod random;
pub mod runcommand;
pub(crate) mod session;
pub(crate) mod shutdown;
pub mod state;
pub(crate) mod sync;
#[allow(unsafe_code)]
pub(crate) mod sys;
pub mod timefmt;
pub mod update;
