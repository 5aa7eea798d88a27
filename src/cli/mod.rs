//! Command-line parsing (no framework: a few commands and a handful of flags).

use ssm_lite::agent::RunArgs;
use ssm_lite::onprem::register::{Activation, RegisterArgs};
use std::path::PathBuf;

mod register;
mod run_document;

pub use register::register;
pub use run_document::run_document;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/ssm-lite";

pub const USAGE: &str = "\
usage: ssm-lite [run] [--config PATH] [--state-dir DIR]
       ssm-lite run-document FILE [--parameters JSON] [--config PATH] [--state-dir DIR]
       ssm-lite register --code CODE --id ID --region REGION [--yes] [--clear]
                [--config PATH] [--state-dir DIR]
       ssm-lite register --import-amazon-ssm-agent [--amazon-ssm-agent-vault DIR] [--yes] [--state-dir DIR]
       ssm-lite register --clear [--state-dir DIR]
       ssm-lite -register -code CODE -id ID -region REGION [-y] [-clear]   (amazon-ssm-agent's form)
       ssm-lite --version | --help

Commands:
  run            run the agent in the foreground (the default)
  run-document   run an SSM document locally through the same engine (no AWS) and print the
                 final reply JSON; FILE holds a document or a whole send-command payload
  register       register this machine as a managed instance (mi-…) with a hybrid activation,
                 print its id; --clear removes the registration (before registering again, when
                 given with an activation); --import-amazon-ssm-agent takes over the registration
                 amazon-ssm-agent keeps in /var/lib/amazon/ssm/Vault (same id and key)

Options:
  --config PATH      amazon-ssm-agent.json to use (default: the first that exists of
                     /etc/ssm-lite/amazon-ssm-agent.json and /etc/amazon/ssm/amazon-ssm-agent.json,
                     otherwise built-in defaults)
  --state-dir DIR    where commands, replies and output are kept (default /var/lib/ssm-lite;
                     run-document defaults to a temporary directory)
  --parameters JSON  document parameters, e.g. '{\"commands\":[\"uname -a\"]}'
  --yes              replace an existing registration without asking
  --version          print the version and exit
  --help             print this help and exit

Logging goes to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more detail.";

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
    Register(RegisterArgs),
    Version,
    Help,
}

/// A command line that cannot be understood; printed with the usage, exit code 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

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
    let args: Vec<String> = args.into_iter().collect();
    // amazon-ssm-agent's Go-flag spelling, kept so existing provisioning scripts work unchanged.
    if args.iter().any(|a| a == "-register") {
        return parse_upstream_register(args);
    }
    if args.first().map(String::as_str) == Some("register") {
        return parse_register(args.into_iter().skip(1));
    }
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

/// The flags of `register`, collected before they are checked together.
#[derive(Default)]
struct RegisterFlags {
    code: Option<String>,
    id: Option<String>,
    region: Option<String>,
    import_amazon_ssm_agent: bool,
    clear: bool,
    yes: bool,
    config: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    vault_dir: Option<PathBuf>,
}

fn parse_register(args: impl IntoIterator<Item = String>) -> Result<Command, UsageError> {
    let mut flags = RegisterFlags::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || flag_value(&name, inline.clone(), &mut args);
        match name.as_str() {
            "--help" | "-h" => return Ok(Command::Help),
            "--code" => flags.code = Some(value()?),
            "--id" => flags.id = Some(value()?),
            "--region" => flags.region = Some(value()?),
            "--config" => flags.config = Some(value()?.into()),
            "--state-dir" => flags.state_dir = Some(value()?.into()),
            "--yes" | "-y" => flags.yes = true,
            "--clear" => flags.clear = true,
            "--import-amazon-ssm-agent" => flags.import_amazon_ssm_agent = true,
            "--amazon-ssm-agent-vault" => flags.vault_dir = Some(value()?.into()),
            _ => return Err(UsageError(format!("register: unexpected argument {arg:?}"))),
        }
    }
    flags.check()
}

/// `-register -code C -id I -region R [-y] [-clear]`, as Go's flag package reads it: one or two
/// dashes, values after a space or `=`.
fn parse_upstream_register(args: Vec<String>) -> Result<Command, UsageError> {
    let mut flags = RegisterFlags::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let bare = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'));
        let Some(bare) = bare else {
            return Err(UsageError(format!(
                "-register: unexpected argument {arg:?}"
            )));
        };
        let (name, inline) = match bare.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (bare, None),
        };
        let flag = format!("-{name}");
        let mut value = || flag_value(&flag, inline.clone(), &mut args);
        match name {
            "register" => {}
            "code" => flags.code = Some(value()?),
            "id" => flags.id = Some(value()?),
            "region" => flags.region = Some(value()?),
            "y" => flags.yes = true,
            "clear" => flags.clear = true,
            _ => {
                return Err(UsageError(format!(
                    "-register: {arg} is not supported (accepted: -code, -id, -region, -y, -clear)"
                )));
            }
        }
    }
    flags.check()
}

impl RegisterFlags {
    fn check(self) -> Result<Command, UsageError> {
        let activation = match (self.code, self.id, self.region) {
            (None, None, None) => None,
            (Some(code), Some(id), Some(region)) => Some(Activation { code, id, region }),
            _ => {
                return Err(UsageError(
                    "register needs all of --code, --id and --region".into(),
                ));
            }
        };
        if activation.is_some() && self.import_amazon_ssm_agent {
            return Err(UsageError(
                "register: --import-amazon-ssm-agent takes no activation (--code/--id/--region)"
                    .into(),
            ));
        }
        if activation.is_none() && !self.import_amazon_ssm_agent && !self.clear {
            return Err(UsageError(
                "register needs --code, --id and --region, or --import-amazon-ssm-agent, or --clear"
                    .into(),
            ));
        }
        Ok(Command::Register(RegisterArgs {
            activation,
            import_amazon_ssm_agent: self.import_amazon_ssm_agent,
            clear: self.clear,
            yes: self.yes,
            vault_dir: self.vault_dir,
            config: self.config,
            state_dir: self
                .state_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        }))
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

    fn register(activation: Option<(&str, &str, &str)>) -> RegisterArgs {
        RegisterArgs {
            activation: activation.map(|(code, id, region)| Activation {
                code: code.into(),
                id: id.into(),
                region: region.into(),
            }),
            import_amazon_ssm_agent: false,
            clear: false,
            yes: false,
            config: None,
            state_dir: DEFAULT_STATE_DIR.into(),
            vault_dir: None,
        }
    }

    #[test]
    fn register_takes_an_activation_and_options() {
        let want = RegisterArgs {
            yes: true,
            clear: true,
            config: Some("/c.json".into()),
            state_dir: "/s".into(),
            ..register(Some(("CODE+/=", "a1b2", "eu-west-1")))
        };
        let got = p(&[
            "register",
            "--code",
            "CODE+/=",
            "--id=a1b2",
            "--region",
            "eu-west-1",
            "--yes",
            "--clear",
            "--config",
            "/c.json",
            "--state-dir=/s",
        ]);
        assert_eq!(got.unwrap(), Command::Register(want));
        let import = p(&["register", "--import-amazon-ssm-agent"]).unwrap();
        let want = RegisterArgs {
            import_amazon_ssm_agent: true,
            ..register(None)
        };
        assert_eq!(import, Command::Register(want));
        let clear = p(&["register", "--clear"]).unwrap();
        let want = RegisterArgs {
            clear: true,
            ..register(None)
        };
        assert_eq!(clear, Command::Register(want));
    }

    #[test]
    fn register_accepts_amazon_ssm_agent_spelling() {
        let got = p(&[
            "-register",
            "-code",
            "C0de",
            "-id",
            "I-d",
            "-region",
            "us-east-1",
            "-y",
        ]);
        let want = RegisterArgs {
            yes: true,
            ..register(Some(("C0de", "I-d", "us-east-1")))
        };
        assert_eq!(got.unwrap(), Command::Register(want));
        // Go flags: any order, `=` values, two dashes.
        let got = p(&[
            "-code=C0de",
            "--id",
            "I-d",
            "-region=us-east-1",
            "-register",
        ]);
        let want = register(Some(("C0de", "I-d", "us-east-1")));
        assert_eq!(got.unwrap(), Command::Register(want));
        let got = p(&["-register", "-clear"]).unwrap();
        let want = RegisterArgs {
            clear: true,
            ..register(None)
        };
        assert_eq!(got, Command::Register(want));
    }

    #[test]
    fn register_mistakes_are_usage_errors() {
        let err = |args: &[&str]| p(args).unwrap_err().0;
        assert!(err(&["register"]).contains("--code"));
        assert!(err(&["register", "--code", "c", "--id", "i"]).contains("all of"));
        assert!(err(&["register", "--code"]).contains("needs a value"));
        assert!(err(&["register", "--bogus"]).contains("--bogus"));
        assert!(err(&["register", "-code", "c"]).contains("-code"));
        let both = [
            "register",
            "--import-amazon-ssm-agent",
            "--code",
            "c",
            "--id",
            "i",
        ];
        assert!(err(&[&both[..], &["--region", "r"]].concat()).contains("takes no activation"));
        assert!(err(&["-register", "-code", "c", "-id", "i"]).contains("all of"));
        assert!(err(&["-register", "-disableSimilarityCheck"]).contains("not supported"));
        assert!(err(&["-register", "stray"]).contains("stray"));
        assert!(err(&["-register", "-region"]).contains("needs a value"));
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
