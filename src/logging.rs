//! Log lines on stderr for journald or a log file: `<UTC time> <LEVEL> <message>`, info by default,
//! `RUST_LOG` respected. Nothing logs credentials, tokens or parameter values.

use std::io::Write;

pub fn init() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,ureq=warn,rustls=warn".into());
    env_logger::Builder::new()
        .parse_filters(&filter)
        .format(|buf, record| {
            let stamp = crate::timefmt::log_stamp(std::time::SystemTime::now());
            writeln!(buf, "{stamp} {:<5} {}", record.level(), record.args())
        })
        .target(env_logger::Target::Stderr)
        .init();
}
