//! The `ssm-lite` command: parses the command line and hands off to the library.

#![forbid(unsafe_code)]

use cli::{Command, USAGE};
use ssm_lite::config::COMPATIBLE_AGENT_VERSION;
use ssm_lite::supervisor;
use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    // A script's supervisor (`__supervise <run dir>`): before any logging or config.
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == supervisor::SUBCOMMAND) {
        let run_dir = std::path::PathBuf::from(args.next().unwrap_or_default());
        return ExitCode::from(supervisor::main(&run_dir));
    }
    let command = match cli::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ssm-lite: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Version => {
            println!(
                "ssm-lite {} (protocol-compatible with amazon-ssm-agent {COMPATIBLE_AGENT_VERSION})",
                ssm_lite::update::version()
            );
            ExitCode::SUCCESS
        }
        Command::Help => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::RunDocument(args) => {
            ssm_lite::logging::init();
            match cli::run_document(&args) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("ssm-lite: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Diagnose(args) => ExitCode::from(cli::diagnose(&args)),
        Command::Register(args) => {
            ssm_lite::logging::init();
            ExitCode::from(cli::register(&args))
        }
        Command::Run(args) => {
            ssm_lite::logging::init();
            // Before anything else: a new binary that crashed on its first start is rolled back.
            ssm_lite::update::at_start(&args.state_dir);
            // Resolved once now: a self-update may rename the file later.
            if let Err(e) = supervisor::enable() {
                log::warn!("cannot find this program's path ({e}); scripts stop with the agent");
            }
            let result = ssm_lite::agent::run(&args);
            ssm_lite::update::exec_if_requested();
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("{e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
