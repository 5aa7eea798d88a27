//! The `ssm-lite` command: parses the command line and hands off to the library.

#![forbid(unsafe_code)]

use cli::{Command, USAGE};
use ssm_lite::config::COMPATIBLE_AGENT_VERSION;
use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
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
        Command::Register(args) => {
            ssm_lite::logging::init();
            ExitCode::from(cli::register(&args))
        }
        Command::Run(args) => {
            ssm_lite::logging::init();
            // Before anything else: a new binary that crashed on its first start is rolled back.
            ssm_lite::update::at_start(&args.state_dir);
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
