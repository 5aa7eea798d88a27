//! State Manager: associations polled, scheduled and run through the command engine, their
//! status and compliance reported (docs/protocol.md §7).

pub(crate) mod compliance;
pub(crate) mod refresh;
pub(crate) mod schedule;
pub(crate) mod scheduler;
pub(crate) mod service;
pub(crate) mod status;
