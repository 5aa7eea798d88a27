//! Log lines on stderr for journald or a log file: `<UTC time> <LEVEL> <message>`, info by default,
//! `RUST_LOG` respected. Nothing logs credentials, tokens or parameter values.
//!
//! `RUST_LOG` is read as env_logger reads its usual form: comma-separated directives, each a level
//! (`debug`: the default for every target), `target=level`, or a bare `target` (all its levels);
//! a target matches every module path it begins (`ureq` covers `ureq_proto`), and the longest
//! match wins. A directive that is not one of these is skipped and named on stderr. The agent
//! used nothing else of env_logger, whose filter parser and formatter cost more than this file.

use log::{LevelFilter, Log, Metadata, Record};
use std::io::Write;

/// What the agent logs without `RUST_LOG`: its own info lines, the HTTP and TLS crates' warnings.
const DEFAULT: &str = "info,ureq=warn,rustls=warn";

pub fn init() {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT.into());
    let (filter, bad) = Filter::parse(&spec);
    for directive in bad {
        eprintln!("RUST_LOG: '{directive}' is not a level or target=level; skipped");
    }
    let max = filter.max();
    // Once per process: a second call (tests) keeps the first logger.
    if log::set_logger(Box::leak(Box::new(filter))).is_ok() {
        log::set_max_level(max);
    }
}

/// The parsed `RUST_LOG`: a default level and per-target levels.
#[derive(Debug, PartialEq)]
struct Filter {
    default: LevelFilter,
    targets: Vec<(String, LevelFilter)>,
}

impl Filter {
    /// The filter, and the directives it skipped.
    fn parse(spec: &str) -> (Filter, Vec<&str>) {
        let mut filter = Filter {
            default: LevelFilter::Error,
            targets: Vec::new(),
        };
        let mut bad = Vec::new();
        for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match directive.split_once('=') {
                Some((target, level)) => match level.trim().parse() {
                    Ok(level) if !target.trim().is_empty() => {
                        filter.targets.push((target.trim().to_owned(), level));
                    }
                    _ => bad.push(directive),
                },
                None => match directive.parse() {
                    Ok(level) => filter.default = level,
                    Err(_) => filter
                        .targets
                        .push((directive.to_owned(), LevelFilter::Trace)),
                },
            }
        }
        (filter, bad)
    }

    fn level_for(&self, target: &str) -> LevelFilter {
        let matching = self
            .targets
            .iter()
            .filter(|(t, _)| target.starts_with(t.as_str()));
        matching
            .max_by_key(|(t, _)| t.len())
            .map_or(self.default, |(_, level)| *level)
    }

    /// The most detailed level any target gets: `log` skips everything beyond it cheaply.
    fn max(&self) -> LevelFilter {
        let levels = self.targets.iter().map(|(_, level)| *level);
        levels.fold(self.default, Ord::max)
    }
}

impl Log for Filter {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level_for(metadata.target())
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let stamp = crate::timefmt::log_stamp(std::time::SystemTime::now());
        // One write a line, so lines of different threads do not interleave.
        let line = format!("{stamp} {:<5} {}\n", record.level(), record.args());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_info_with_the_http_crates_at_warn() {
        let (filter, bad) = Filter::parse(DEFAULT);
        assert!(bad.is_empty());
        assert_eq!(
            filter.level_for("ssm_lite::runcommand::engine"),
            LevelFilter::Info
        );
        assert_eq!(filter.level_for("ureq::pool"), LevelFilter::Warn);
        assert_eq!(filter.level_for("ureq_proto::client"), LevelFilter::Warn);
        assert_eq!(filter.level_for("rustls::client::hs"), LevelFilter::Warn);
        assert_eq!(filter.max(), LevelFilter::Info);
    }

    #[test]
    fn the_longest_target_wins_and_bad_directives_are_skipped() {
        let spec = "warn, ssm_lite=debug,ssm_lite::mgs=TRACE,tungstenite,ureq=loud,=info";
        let (filter, bad) = Filter::parse(spec);
        assert_eq!(bad, ["ureq=loud", "=info"]);
        assert_eq!(filter.level_for("ssm_lite::health"), LevelFilter::Debug);
        assert_eq!(
            filter.level_for("ssm_lite::mgs::control"),
            LevelFilter::Trace
        );
        assert_eq!(
            filter.level_for("tungstenite::protocol"),
            LevelFilter::Trace
        );
        assert_eq!(filter.level_for("ureq::unversioned"), LevelFilter::Warn);
        assert_eq!(filter.max(), LevelFilter::Trace);
        let (off, _) = Filter::parse("off");
        assert_eq!(
            (off.level_for("ssm_lite"), off.max()),
            (LevelFilter::Off, LevelFilter::Off)
        );
    }
}
