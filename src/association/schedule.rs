//! Association schedules: `rate(…)` and `cron(…)` expressions (skeleton; the schedule helper
//! fills it in).
#![allow(dead_code)]

/// A parsed `ScheduleExpression`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// No expression: the association runs once.
    Once,
    /// `rate(N minutes|hours|days)`, in seconds.
    Rate(u64),
    /// `cron(…)`.
    Cron(Cron),
}

/// A parsed cron expression (fields as the schedule helper defines them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {}

/// Why an expression was refused; Display gives upstream's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError(pub String);

impl std::fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Schedule {
    /// Parses an association's `ScheduleExpression` ("" or absent: `Once`).
    pub fn parse(expression: &str) -> Result<Schedule, ScheduleError> {
        Err(ScheduleError(format!("not built yet: {expression}")))
    }

    /// The first time (unix seconds, UTC) strictly after `after` at which the schedule fires;
    /// `None` for `Once` and for a cron expression that never fires again.
    pub fn next_after(&self, after: u64) -> Option<u64> {
        let _ = after;
        None
    }
}
