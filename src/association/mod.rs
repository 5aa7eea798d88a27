//! State Manager: the association scheduler (issue 13, being built).

pub(crate) mod schedule;
