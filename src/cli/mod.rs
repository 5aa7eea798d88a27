//! Command-line parsing (no framework: a few commands and a handful of flags).

use ssm_lite::agent::RunArgs;
use ssm_lite::onprem::register::{Activation, RegisterArgs, RoleRegistration, parse_tags};
use std::path::PathBuf;

mod diagnose;
mod register;
mod run_document;

pub use diagnose::diagnose;
pub use register::register;
pub use run_document::run_document;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/ssm-lite";

pub const USAGE: &str = "\
usage: ssm-lite [run] [--config PATH] [--state-dir DIR]
       ssm-lite run-document FILE [--parameters JSON] [--config PATH] [--state-dir DIR]
       ssm-lite diagnose [--json] [--config PATH] [--state-dir DIR]
       ssm-lite register --code CODE --id ID --region REGION [--yes] [--clear]
                [--disable-similarity-check] [--config PATH] [--state-dir DIR]
       ssm-lite register --role ROLE --region REGION [--tags JSON] [--yes] [--clear]
                [--disable-similarity-check] [--config PATH] [--state-dir DIR]
       ssm-lite register --import-amazon-ssm-agent [--amazon-ssm-agent-vault DIR] [--yes] [--state-dir DIR]
       ssm-lite register --clear [--state-dir DIR]
       ssm-lite register --similarity-threshold N [--state-dir DIR]
       ssm-lite -register -code CODE -id ID -region REGION [-y] [-clear] [-disableSimilarityCheck]
       ssm-lite -register -role ROLE -region REGION [-tags JSON] [-y] [-clear] [-disableSimilarityCheck]
       ssm-lite -fingerprint [-similarityThreshold N]         (the last three: amazon-ssm-agent's form)
       ssm-lite --version | --help

Commands:
  run            run the agent in the foreground (the default)
  run-document   run an SSM document locally through the same engine (no AWS) and print the
                 final reply JSON; FILE holds a document or a whole send-command payload
  diagnose       check what the agent needs, like `ssm-cli get-diagnostics`: each endpoint's
                 DNS, TCP and TLS, proxy, IMDS, registration, identity and credentials, clock
                 skew, state dir space, configuration; a table, or upstream's JSON with --json;
                 exit status 1 when a check failed
  register       register this machine as a managed instance (mi-…) with a hybrid activation,
                 print its id; --clear removes the registration (before registering again, when
                 given with an activation); --import-amazon-ssm-agent takes over the registration
                 amazon-ssm-agent keeps in /var/lib/amazon/ssm/Vault (same id and key);
                 --role registers without an activation, signed with this machine's EC2 instance
                 profile, for the IAM role ROLE, with --tags '[{\"Key\":\"k\",\"Value\":\"v\"}]';
                 --disable-similarity-check keeps the fingerprint whatever the hardware becomes;
                 --similarity-threshold N (1-100, or -1 for no check; -fingerprint's default 40)
                 sets how much of the hardware must still match for the fingerprint to stay

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
pub struct DiagnoseArgs {
    pub json: bool,
    pub config: Option<PathBuf>,
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(RunArgs),
    RunDocument(RunDocumentArgs),
    Diagnose(DiagnoseArgs),
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
    if args.iter().any(|a| a == "-register" || a == "-fingerprint") {
        return parse_upstream_register(args);
    }
    if args.first().map(String::as_str) == Some("register") {
        return parse_register(args.into_iter().skip(1));
    }
    let mut args = args.into_iter().peekable();
    let subcommand = match args.peek().map(String::as_str) {
        Some("run") | Some("run-document") | Some("diagnose") => args.next(),
        _ => None,
    };
    let mut config = None;
    let mut state_dir = None;
    let mut parameters = None;
    let mut json = false;
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
            "--json" => json = true,
            s if s.starts_with('-') => return Err(UsageError(format!("unknown option {s}"))),
            _ => positional.push(arg),
        }
    }
    if json && subcommand.as_deref() != Some("diagnose") {
        return Err(UsageError("--json goes with diagnose".into()));
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
            if subcommand.as_deref() == Some("diagnose") {
                return Ok(Command::Diagnose(DiagnoseArgs {
                    json,
                    config,
                    state_dir,
                }));
            }
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
    role: Option<String>,
    tags: Option<String>,
    disable_similarity_check: bool,
    similarity_threshold: Option<i32>,
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
            "--role" => flags.role = Some(value()?),
            "--tags" => flags.tags = Some(value()?),
            "--disable-similarity-check" => flags.disable_similarity_check = true,
            "--similarity-threshold" => {
                flags.similarity_threshold = Some(threshold(&name, &value()?)?);
            }
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

/// `N` of a similarity threshold; its range is checked where it is stored.
fn threshold(flag: &str, value: &str) -> Result<i32, UsageError> {
    value.parse().map_err(|_| {
        UsageError(format!(
            "{flag} takes a whole number (1 to 100, or -1 for no check), not {value:?}"
        ))
    })
}

/// amazon-ssm-agent's registration flags (`core/agent_parser.go`), as Go's flag package reads
/// them: one or two dashes, values after a space or `=`. `-register` registers (or clears);
/// otherwise `-fingerprint` sets the similarity threshold, 40 unless `-similarityThreshold`
/// says otherwise. `-config` and `-state-dir` are ssm-lite's own.
fn parse_upstream_register(args: Vec<String>) -> Result<Command, UsageError> {
    let mut flags = RegisterFlags::default();
    let (mut register, mut fingerprint) = (false, false);
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
            "register" => register = true,
            "fingerprint" => fingerprint = true,
            "code" => flags.code = Some(value()?),
            "id" => flags.id = Some(value()?),
            "region" => flags.region = Some(value()?),
            "role" => flags.role = Some(value()?),
            "tags" => flags.tags = Some(value()?),
            "disableSimilarityCheck" => flags.disable_similarity_check = true,
            "similarityThreshold" => {
                flags.similarity_threshold = Some(threshold(&flag, &value()?)?);
            }
            "y" => flags.yes = true,
            "clear" => flags.clear = true,
            "config" => flags.config = Some(value()?.into()),
            "state-dir" => flags.state_dir = Some(value()?.into()),
            _ => {
                return Err(UsageError(format!(
                    "-register: {arg} is not supported (accepted: -code, -id, -region, -role, \
                     -tags, -disableSimilarityCheck, -y, -clear; -fingerprint \
                     -similarityThreshold N)"
                )));
            }
        }
    }
    if register && (fingerprint || flags.similarity_threshold.is_some()) {
        return Err(UsageError(
            "-fingerprint and -similarityThreshold do not go with -register (amazon-ssm-agent \
             ignores them there): register with -disableSimilarityCheck, or run \
             -fingerprint -similarityThreshold N afterwards"
                .into(),
        ));
    }
    if !register {
        flags.similarity_threshold = Some(
            flags
                .similarity_threshold
                .unwrap_or(ssm_lite::onprem::fingerprint::DEFAULT_SIMILARITY_THRESHOLD),
        );
    }
    flags.check()
}

impl RegisterFlags {
    fn check(mut self) -> Result<Command, UsageError> {
        let (activation, role) = self.authority()?;
        let registers = activation.is_some() || role.is_some();
        if let Some(text) = self.refused_combination(registers, role.is_some()) {
            return Err(UsageError(text.into()));
        }
        Ok(Command::Register(RegisterArgs {
            activation,
            role,
            disable_similarity_check: self.disable_similarity_check,
            similarity_threshold: self.similarity_threshold,
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

    /// The activation or the role the flags give (or neither), with the tags that go with a role.
    fn authority(&mut self) -> Result<(Option<Activation>, Option<RoleRegistration>), UsageError> {
        let usage = |text: &str| Err(UsageError(text.into()));
        match (
            self.code.take(),
            self.id.take(),
            self.role.take(),
            self.region.take(),
        ) {
            (None, None, None, None) => Ok((None, None)),
            (Some(code), Some(id), None, Some(region)) => {
                Ok((Some(Activation { code, id, region }), None))
            }
            (None, None, Some(iam_role), Some(region)) => {
                let tags = match &self.tags {
                    Some(text) => parse_tags(text).map_err(UsageError)?,
                    None => Vec::new(),
                };
                let role = RoleRegistration {
                    iam_role,
                    region,
                    tags,
                };
                Ok((None, Some(role)))
            }
            (code, id, Some(_), _) if code.is_some() || id.is_some() => usage(
                "register: --role registers without an activation; give --code and --id, \
                 or --role, not both",
            ),
            (_, _, Some(_), None) => usage("register: --role needs --region too"),
            _ => usage("register needs all of --code, --id and --region"),
        }
    }

    /// Flags that do not go together, in words; upstream ignores most of these silently.
    fn refused_combination(&self, registers: bool, with_role: bool) -> Option<&'static str> {
        if self.tags.is_some() && !with_role {
            return Some(
                "register: --tags go with --role (an activation carries its own tags, and \
                 amazon-ssm-agent ignores --tags with one)",
            );
        }
        if registers && self.import_amazon_ssm_agent {
            return Some(
                "register: --import-amazon-ssm-agent takes no activation or role \
                 (--code/--id/--role/--region)",
            );
        }
        if self.disable_similarity_check && !registers {
            return Some(
                "register: --disable-similarity-check goes with a registration (--code/--id or \
                 --role); to change an existing fingerprint use --similarity-threshold -1",
            );
        }
        if self.similarity_threshold.is_some() && (registers || self.import_amazon_ssm_agent) {
            return Some(
                "register: --similarity-threshold changes an existing fingerprint and goes \
                 alone; when registering use --disable-similarity-check",
            );
        }
        let alone =
            self.import_amazon_ssm_agent || self.clear || self.similarity_threshold.is_some();
        (!registers && !alone).then_some(
            "register needs --code, --id and --region, or --role and --region, or \
             --import-amazon-ssm-agent, or --clear, or --similarity-threshold",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use ssm_lite::onprem::register::Tag;

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
    fn diagnose_takes_json_config_and_state_dir() {
        assert_eq!(
            p(&[
                "diagnose",
                "--json",
                "--config",
                "/c.json",
                "--state-dir=/s"
            ])
            .unwrap(),
            Command::Diagnose(DiagnoseArgs {
                json: true,
                config: Some("/c.json".into()),
                state_dir: "/s".into()
            })
        );
        let plain = p(&["diagnose"]).unwrap();
        let want = DiagnoseArgs {
            json: false,
            config: None,
            state_dir: DEFAULT_STATE_DIR.into(),
        };
        assert_eq!(plain, Command::Diagnose(want));
        assert!(
            p(&["run", "--json"])
                .unwrap_err()
                .0
                .contains("goes with diagnose")
        );
        assert!(
            p(&["diagnose", "x"])
                .unwrap_err()
                .0
                .contains("unexpected argument")
        );
    }

    fn register(activation: Option<(&str, &str, &str)>) -> RegisterArgs {
        RegisterArgs {
            activation: activation.map(|(code, id, region)| Activation {
                code: code.into(),
                id: id.into(),
                region: region.into(),
            }),
            state_dir: DEFAULT_STATE_DIR.into(),
            ..RegisterArgs::default()
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

    /// `core/agent_parser.go`: `-role` instead of an activation, `-tags` with it,
    /// `-disableSimilarityCheck`, and `-fingerprint` (default threshold 40) on its own.
    #[test]
    fn register_takes_upstreams_role_tags_and_fingerprint_flags() {
        let got = p(&[
            "-register",
            "-role",
            "SSMServiceRole",
            "-region=eu-west-1",
            "-tags",
            r#"[{"Key":"env","Value":"lab"},{"key":"team","value":"edge"},{"Key":"","Value":"x"},{"Key":"y"}]"#,
            "-disableSimilarityCheck",
            "-y",
        ])
        .unwrap();
        let tag = |key: &str, value: &str| Tag {
            key: key.into(),
            value: value.into(),
        };
        let want = RegisterArgs {
            role: Some(RoleRegistration {
                iam_role: "SSMServiceRole".into(),
                region: "eu-west-1".into(),
                tags: vec![tag("env", "lab"), tag("team", "edge")],
            }),
            disable_similarity_check: true,
            yes: true,
            ..register(None)
        };
        assert_eq!(got, Command::Register(want.clone()));
        let same = p(&[
            "register",
            "--role=SSMServiceRole",
            "--region",
            "eu-west-1",
            "--tags",
            r#"[{"Key":"env","Value":"lab"},{"KEY":"team","VALUE":"edge"}]"#,
            "--disable-similarity-check",
            "--yes",
        ]);
        assert_eq!(same.unwrap(), Command::Register(want));

        let threshold = |n: Option<i32>| {
            Command::Register(RegisterArgs {
                similarity_threshold: n,
                ..register(None)
            })
        };
        assert_eq!(p(&["-fingerprint"]).unwrap(), threshold(Some(40)));
        let minus_one = ["-fingerprint", "-similarityThreshold", "-1"];
        assert_eq!(p(&minus_one).unwrap(), threshold(Some(-1)));
        let own = ["register", "--similarity-threshold=75"];
        assert_eq!(p(&own).unwrap(), threshold(Some(75)));
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
        assert!(
            err(&["-register", "-disableSimilarityCheck"]).contains("goes with a registration")
        );
        assert!(err(&["-register", "-bogus"]).contains("not supported"));
        assert!(err(&["-register", "-role", "R"]).contains("needs --region"));
        let role = ["-register", "-role", "R", "-region", "r"];
        assert!(err(&[&role[..], &["-code", "c", "-id", "i"]].concat()).contains("not both"));
        assert!(err(&[&role[..], &["-tags", "{}"]].concat()).contains("not a JSON list"));
        let activation = ["-register", "-code", "c", "-id", "i", "-region", "r"];
        assert!(err(&[&activation[..], &["-tags", "[]"]].concat()).contains("go with --role"));
        assert!(
            err(&[&activation[..], &["-similarityThreshold", "50"]].concat())
                .contains("do not go with -register")
        );
        assert!(err(&["-fingerprint", "-similarityThreshold", "x"]).contains("whole number"));
        let fingerprint_and_activation = ["-fingerprint", "-code", "c", "-id", "i", "-region", "r"];
        assert!(err(&fingerprint_and_activation).contains("goes alone"));
        assert!(
            err(&[
                "register",
                "--similarity-threshold",
                "5",
                "--role",
                "R",
                "--region",
                "r"
            ])
            .contains("goes alone")
        );
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
