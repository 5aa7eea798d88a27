//! Command-line parsing (no framework: four commands and a handful of flags).

use std::path::PathBuf;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/ssm-lite";

pub const USAGE: &str = "\
usage: ssm-lite [run] [--config PATH] [--state-dir DIR]
       ssm-lite run-document FILE [--parameters JSON] [--config PATH] [--state-dir DIR]
       ssm-lite --version | --help

Commands:
  run            run the agent in the foreground (the default)
  run-document   run an SSM document locally through the same engine (no AWS) and print the
                 final reply JSON; FILE holds a document or a whole send-command payload

Options:
  --config PATH      amazon-ssm-agent.json to use (default /etc/amazon/ssm/amazon-ssm-agent.json
                     when it exists, otherwise built-in defaults)
  --state-dir DIR    where commands, replies and output are kept (default /var/lib/ssm-lite;
                     run-document defaults to a temporary directory)
  --parameters JSON  document parameters, e.g. '{\"commands\":[\"uname -a\"]}'
  --version          print the version and exit
  --help             print this help and exit

Logging goes to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more detail.";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunArgs {
    pub config: Option<PathBuf>,
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDocumentArgs {
    pub file: PathBuf,
    pub parameters: Option<String>,
    pub config: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(RunArgs),
    RunDocument(RunDocumentArgs),
    Version,
    Help,
}

/// A command line that cannot be understood; printed with the usage, exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits `--flag=value`, and takes the value of `--flag value` from the iterator.
fn flag_value(
    flag: &str,
    inline: Option<String>,
    rest: &mut impl Iterator<Item = String>,
) -> Result<String, UsageError> {
    match inline.or_else(|| rest.next()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(UsageError(format!("{flag} needs a value"))),
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, UsageError> {
    let mut args = args.into_iter().peekable();
    let subcommand = match args.peek().map(String::as_str) {
        Some("run") | Some("run-document") => args.next(),
        _ => None,
    };
    let mut config = None;
    let mut state_dir = None;
    let mut parameters = None;
    let mut positional = Vec::new();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        match name.as_str() {
            "--version" | "-V" => return Ok(Command::Version),
            "--help" | "-h" => return Ok(Command::Help),
            "--config" => config = Some(PathBuf::from(flag_value(&name, inline, &mut args)?)),
            "--state-dir" => state_dir = Some(PathBuf::from(flag_value(&name, inline, &mut args)?)),
            "--parameters" => parameters = Some(flag_value(&name, inline, &mut args)?),
            s if s.starts_with('-') => return Err(UsageError(format!("unknown option {s}"))),
            _ => positional.push(arg),
        }
    }
    match subcommand.as_deref() {
        Some("run-document") => {
            let [file] = <[String; 1]>::try_from(positional)
                .map_err(|_| UsageError("run-document needs exactly one FILE".into()))?;
            Ok(Command::RunDocument(RunDocumentArgs {
                file: file.into(),
                parameters,
                config,
                state_dir,
            }))
        }
        _ => {
            if let Some(extra) = positional.first() {
                return Err(UsageError(format!("unexpected argument {extra:?}")));
            }
            if parameters.is_some() {
                return Err(UsageError("--parameters goes with run-document".into()));
            }
            let state_dir = state_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
            Ok(Command::Run(RunArgs { config, state_dir }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn run_is_the_default() {
        let want = Command::Run(RunArgs {
            config: None,
            state_dir: DEFAULT_STATE_DIR.into(),
        });
        assert_eq!(p(&[]).unwrap(), want);
        assert_eq!(p(&["run"]).unwrap(), want);
        assert_eq!(
            p(&["--config=/x.json", "--state-dir", "/s"]).unwrap(),
            Command::Run(RunArgs {
                config: Some("/x.json".into()),
                state_dir: "/s".into()
            })
        );
    }

    #[test]
    fn run_document_takes_a_file_and_parameters() {
        assert_eq!(
            p(&["run-document", "doc.json", "--parameters", "{}"]).unwrap(),
            Command::RunDocument(RunDocumentArgs {
                file: "doc.json".into(),
                parameters: Some("{}".into()),
                config: None,
                state_dir: None
            })
        );
    }

    #[test]
    fn mistakes_are_usage_errors() {
        assert!(p(&["--bogus"]).unwrap_err().0.contains("--bogus"));
        assert!(p(&["--config"]).unwrap_err().0.contains("needs a value"));
        assert!(p(&["run-document"]).is_err());
        assert!(p(&["stray"]).is_err());
        assert_eq!(p(&["--version"]).unwrap(), Command::Version);
        assert_eq!(p(&["run", "--help"]).unwrap(), Command::Help);
    }
}
