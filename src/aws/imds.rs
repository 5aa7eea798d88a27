//! EC2 instance metadata (IMDSv2 token flow, v1 fallback where allowed).
//! STUB: implementation in progress.
