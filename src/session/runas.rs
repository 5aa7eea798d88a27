//! Which OS user a shell session runs as (docs/protocol.md §4.8), and creating `ssm-user` for it.
//!
//! Accounts are read from `/etc/passwd` and `/etc/group` directly (users known only through NSS,
//! e.g. LDAP, are not seen). The session's HOME is the user's home directory from passwd, or
//! `/home/<user>` (what the reference agent always uses) when passwd leaves it empty.
//!
//! A session that switches user starts with a login-like environment of its own ([`environment`])
//! instead of the agent's: the agent's environment holds its credentials (`AWS_*` keys, a proxy
//! password) and is no business of the session's user. A session as the agent's own user (root
//! with `runAsElevated`, or any session of an agent not running as root) keeps the agent's
//! environment, as upstream's sessions do: that user can read the agent's anyway.

use crate::aws::credentials::Env;
use crate::sys::child::ChildEnv;
use crate::sys::pty::RunAs;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Mutex;

/// Why a session cannot run as the user it asks for; the text is shown to the client.
#[derive(Debug, thiserror::Error)]
pub enum RunAsError {
    #[error("please set the RunAs default user")]
    NoDefaultUser,
    #[error(
        "cannot run the session as RunAs user {0}: the agent is not running as root; run the \
         agent as root or disable runAsEnabled in the session preferences"
    )]
    AgentNotRoot(String),
    #[error("failed to start pty since RunAs user {0} does not exist")]
    NoSuchUser(String),
    #[error("user {name} is not in {passwd}")]
    NotInPasswd { name: String, passwd: String },
    #[error(
        "refusing to run the session as {name} (uid {uid}, gid {gid}): that is root; set \
         runAsElevated in the session document to run as root"
    )]
    IsRoot { name: String, uid: u32, gid: u32 },
    #[error("malformed entry for {name} at line {number} of {passwd}: {line:?}")]
    Malformed {
        name: String,
        number: usize,
        passwd: String,
        line: String,
    },
    #[error(
        "cannot create user {0}: neither useradd nor adduser is in PATH; create the user \
         yourself or enable RunAs in the session preferences"
    )]
    NoUserAdd(String),
    #[error("cannot run {program} to create user {name}: {source}")]
    UserAddSpawn {
        program: &'static str,
        name: String,
        source: std::io::Error,
    },
    #[error("{program} {name} failed ({status}): {stderr}")]
    UserAdd {
        program: &'static str,
        name: String,
        status: ExitStatus,
        stderr: String,
    },
    /// Reading the account files or writing the sudoers rule.
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn file_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RunAsError {
    let path = path.to_path_buf();
    move |source| RunAsError::File {
        action,
        path,
        source,
    }
}

/// The account created for sessions when the document names none.
pub const SSM_USER: &str = "ssm-user";
const SUDOERS_FILE: &str = "ssm-agent-users";
const SUDOERS_RULES: &str = "# User rules for ssm-user\nssm-user ALL=(ALL) NOPASSWD:ALL\n";

/// What the session document and the start payload say about the user.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// `inputs.runAsEnabled`.
    pub run_as_enabled: bool,
    /// `RunAsUser` of the start payload (the IAM principal's user); overrides the default.
    pub run_as_user: &'a str,
    /// `inputs.runAsDefaultUser`.
    pub run_as_default_user: &'a str,
    /// `properties.linux.runAsElevated`.
    pub run_as_elevated: bool,
}

/// Where accounts live and who the agent is; [`Host::system`] outside tests.
#[derive(Debug, Clone)]
pub struct Host {
    pub passwd: PathBuf,
    pub group: PathBuf,
    pub sudoers_dir: PathBuf,
    pub agent_uid: u32,
}

impl Host {
    pub fn system() -> Host {
        Host {
            passwd: PathBuf::from("/etc/passwd"),
            group: PathBuf::from("/etc/group"),
            sudoers_dir: PathBuf::from("/etc/sudoers.d"),
            agent_uid: crate::sys::pty::effective_uid(),
        }
    }
}

/// The user a session runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser {
    pub name: String,
    /// Credentials to switch to; `None`: the shell keeps the agent's.
    pub run_as: Option<RunAs>,
    /// HOME for the shell; `None`: it keeps the agent's.
    pub home: Option<String>,
    /// The login shell passwd names, for SHELL (the session itself runs `sh`).
    pub shell: Option<String>,
}

/// The decision of §4.8, before any account is looked at.
#[derive(Debug, PartialEq, Eq)]
enum Choice {
    /// Stay the agent's user; `elevated` sets HOME=/root.
    Agent { elevated: bool },
    /// Switch to this existing user.
    Named(String),
    /// Switch to ssm-user, creating it first if needed.
    SsmUser,
}

fn choose(req: &Request<'_>, agent_is_root: bool) -> Result<Choice, RunAsError> {
    if req.run_as_elevated {
        return Ok(Choice::Agent { elevated: true });
    }
    if req.run_as_enabled {
        let user = match req.run_as_user.trim() {
            "" => req.run_as_default_user.trim(),
            user => user,
        };
        if user.is_empty() {
            return Err(RunAsError::NoDefaultUser);
        }
        if !agent_is_root {
            return Err(RunAsError::AgentNotRoot(user.to_string()));
        }
        return Ok(Choice::Named(user.to_string()));
    }
    Ok(if agent_is_root {
        Choice::SsmUser
    } else {
        Choice::Agent { elevated: false }
    })
}

/// Decides the session user for `req` on `host`, creating ssm-user when it is needed and missing.
pub fn resolve(req: &Request<'_>, host: &Host) -> Result<SessionUser, RunAsError> {
    match choose(req, host.agent_uid == 0)? {
        Choice::Agent { elevated } => {
            let accounts = Accounts::load(host)?;
            let name = accounts
                .user_by_uid(host.agent_uid)
                .map_or_else(|| host.agent_uid.to_string(), |u| u.name.to_string());
            let home = elevated.then(|| "/root".to_string());
            Ok(SessionUser {
                name,
                run_as: None,
                home,
                shell: None,
            })
        }
        Choice::Named(name) => {
            let accounts = Accounts::load(host)?;
            if accounts.user(&name)?.is_none() {
                return Err(RunAsError::NoSuchUser(name));
            }
            switch_to(&accounts, &name)
        }
        Choice::SsmUser => {
            ensure_ssm_user(host)?;
            switch_to(&Accounts::load(host)?, SSM_USER)
        }
    }
}

/// The credentials and HOME of the existing, non-root user `name`.
fn switch_to(accounts: &Accounts, name: &str) -> Result<SessionUser, RunAsError> {
    let user = accounts
        .user(name)?
        .ok_or_else(|| RunAsError::NotInPasswd {
            name: name.to_string(),
            passwd: accounts.passwd_path.clone(),
        })?;
    if user.uid == 0 || user.gid == 0 {
        return Err(RunAsError::IsRoot {
            name: name.to_string(),
            uid: user.uid,
            gid: user.gid,
        });
    }
    let home = if user.home.is_empty() {
        format!("/home/{name}")
    } else {
        user.home.to_string()
    };
    Ok(SessionUser {
        name: name.to_string(),
        run_as: Some(RunAs {
            uid: user.uid,
            gid: user.gid,
            groups: accounts.groups_of(name, user.gid),
        }),
        home: Some(home),
        shell: Some(user.shell)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    })
}

/// The agent's own home directory in passwd (for files upstream keeps under the agent user's
/// home when HOME is unset, as under systemd without `User=`).
pub fn agent_home(host: &Host) -> Option<String> {
    let accounts = Accounts::load(host).ok()?;
    let user = accounts.user_by_uid(host.agent_uid)?;
    Some(user.home.to_string()).filter(|h| !h.is_empty())
}

/// Terminal type and language when the agent's environment names none, as upstream sets them.
const TERM: &str = "xterm-256color";
const DEFAULT_LANG: &str = "C.UTF-8";
/// PATH for a switched user when the agent has none (Debian's login.defs ENV_SUPATH plus
/// ENV_PATH, which is what a user of these small hosts finds after `su -`).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Proxy variables passed on to a switched user, each without any `user:password@`.
const PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];
/// Passed on as they are: not secrets, and what makes the session behave like the host.
const KEPT_VARS: [&str; 17] = [
    "NO_PROXY",
    "no_proxy",
    "TZ",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_NUMERIC",
    "LC_TIME",
    "LC_COLLATE",
    "LC_MONETARY",
    "LC_MESSAGES",
    "LC_PAPER",
    "LC_NAME",
    "LC_ADDRESS",
    "LC_TELEPHONE",
    "LC_MEASUREMENT",
    "LC_IDENTIFICATION",
];

/// The environment of a session's shell or command; [`UserEnv::child`] hands it to the spawn.
#[derive(Debug)]
pub struct UserEnv {
    vars: Vec<(String, String)>,
    /// The variables are the whole environment, not additions to the agent's.
    only: bool,
}

impl UserEnv {
    pub fn child(&self) -> ChildEnv<'_> {
        if self.only {
            ChildEnv::Only(&self.vars)
        } else {
            ChildEnv::Agent(&self.vars)
        }
    }
}

/// The environment of `user`'s shell or command, given the agent's own (`agent`): for a switched
/// user only TERM, LANG, USER, HOME, LOGNAME, SHELL, PATH, the locale variables, TZ and the proxy
/// variables without credentials; for the agent's own user its environment plus TERM, LANG when
/// unset, USER and HOME.
pub fn environment(user: &SessionUser, agent: &Env) -> UserEnv {
    let mut vars = vec![("TERM".to_string(), TERM.to_string())];
    let mut set = |k: &str, v: &str| vars.push((k.to_string(), v.to_string()));
    set("LANG", agent.get("LANG").unwrap_or(DEFAULT_LANG));
    set("USER", &user.name);
    if let Some(home) = &user.home {
        set("HOME", home);
    }
    let only = user.run_as.is_some();
    if only {
        set("LOGNAME", &user.name);
        set("SHELL", user.shell.as_deref().unwrap_or("/bin/sh"));
        set("PATH", agent.get("PATH").unwrap_or(DEFAULT_PATH));
        for k in PROXY_VARS {
            if let Some(v) = agent.get(k) {
                set(k, &without_credentials(v));
            }
        }
        for k in KEPT_VARS {
            if let Some(v) = agent.get(k) {
                set(k, v);
            }
        }
    }
    UserEnv { vars, only }
}

/// A proxy URL without its `user:password@` part: everything before the last `@` of the
/// authority goes (a password may itself hold `/` or `@` when not percent-encoded).
fn without_credentials(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    match scheme {
        "" => host.to_string(),
        scheme => format!("{scheme}://{host}"),
    }
}

/// Serialises the check-then-create of ssm-user between sessions starting together.
static CREATING: Mutex<()> = Mutex::new(());

/// Creates ssm-user with sudo rights unless it exists.
fn ensure_ssm_user(host: &Host) -> Result<(), RunAsError> {
    let _guard = crate::sync::lock(&CREATING);
    if Accounts::load(host)?.user(SSM_USER)?.is_some() {
        return Ok(());
    }
    create_user(SSM_USER)?;
    log::info!("created user {SSM_USER} for Session Manager sessions");
    write_sudoers(&host.sudoers_dir)
}

/// Adds the local user `name` with a home directory, with `useradd` or else busybox `adduser`.
fn create_user(name: &str) -> Result<(), RunAsError> {
    let (program, option) = if in_path("useradd") {
        ("useradd", "-m")
    } else if in_path("adduser") {
        ("adduser", "-D")
    } else {
        return Err(RunAsError::NoUserAdd(name.to_string()));
    };
    let out = crate::sys::child::command(program)
        .args([option, name])
        .output()
        .map_err(|source| RunAsError::UserAddSpawn {
            program,
            name: name.to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(RunAsError::UserAdd {
            program,
            name: name.to_string(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Gives ssm-user password-less sudo: writes `<dir>/ssm-agent-users` unless it exists, and makes
/// it 0440 (sudo ignores writable rule files) in either case. Without `dir` sudo is not set up
/// here, and that is only logged.
fn write_sudoers(dir: &Path) -> Result<(), RunAsError> {
    if !dir.is_dir() {
        log::warn!(
            "{} does not exist: {SSM_USER} gets no sudo rights",
            dir.display()
        );
        return Ok(());
    }
    let path = dir.join(SUDOERS_FILE);
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o440)
        .open(&path);
    match created {
        Ok(mut file) => file
            .write_all(SUDOERS_RULES.as_bytes())
            .map_err(file_error("write", &path))?,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(file_error("create", &path)(e)),
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o440))
        .map_err(file_error("chmod 0440", &path))
}

/// The contents of the passwd and group files.
struct Accounts {
    passwd_path: String,
    passwd: String,
    group: String,
}

/// One passwd entry.
#[derive(Debug, PartialEq, Eq)]
struct User<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
    shell: &'a str,
}

impl Accounts {
    fn load(host: &Host) -> Result<Accounts, RunAsError> {
        let read = |path: &Path| fs::read_to_string(path).map_err(file_error("read", path));
        Ok(Accounts {
            passwd_path: host.passwd.display().to_string(),
            passwd: read(&host.passwd)?,
            group: read(&host.group)?,
        })
    }

    /// The entry of `name`; an error if that entry is malformed.
    fn user(&self, name: &str) -> Result<Option<User<'_>>, RunAsError> {
        let Some((number, line)) = entries(&self.passwd).find(|(_, l)| field(l, 0) == Some(name))
        else {
            return Ok(None);
        };
        parse_user(line)
            .map(Some)
            .ok_or_else(|| RunAsError::Malformed {
                name: name.to_string(),
                number,
                passwd: self.passwd_path.clone(),
                line: line.to_string(),
            })
    }

    fn user_by_uid(&self, uid: u32) -> Option<User<'_>> {
        entries(&self.passwd)
            .filter_map(|(_, line)| parse_user(line))
            .find(|user| user.uid == uid)
    }

    /// `primary` and the gid of every group that lists `name` as a member.
    fn groups_of(&self, name: &str, primary: u32) -> Vec<u32> {
        let mut groups = vec![primary];
        for (_, line) in entries(&self.group) {
            let is_member = field(line, 3).is_some_and(|m| m.split(',').any(|m| m.trim() == name));
            let gid = field(line, 2).and_then(|g| g.parse().ok());
            if let (true, Some(gid)) = (is_member, gid)
                && !groups.contains(&gid)
            {
                groups.push(gid);
            }
        }
        groups
    }
}

/// Numbered account lines, without blanks, comments and NIS `+`/`-` entries.
fn entries(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim_end()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with(['#', '+', '-']))
}

fn field(line: &str, index: usize) -> Option<&str> {
    line.split(':').nth(index)
}

/// `name:password:uid:gid:gecos:home:shell`.
fn parse_user(line: &str) -> Option<User<'_>> {
    let fields: Vec<&str> = line.split(':').collect();
    let [name, _, uid, gid, _, home, shell] = fields.as_slice() else {
        return None;
    };
    Some(User {
        name,
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
        home,
        shell,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment

+nisuser::::::
alice:x:1000:1000:Alice:/srv/alice:/bin/sh
bob:x:1001:1001::/home/bob:/bin/sh
nohome:x:1002:1002:::/bin/sh
ssm-user:x:1003:1003::/home/ssm-user:/bin/sh
wheelie:x:1004:0::/home/wheelie:/bin/sh
broken:x:notanumber:1005::/home/broken:/bin/sh
agent:x:1500:1500::/var/lib/agent:/bin/sh
";
    const GROUP: &str = "\
root:x:0:
wheel:x:10:alice, bob
docker:x:998:alice
alice:x:1000:
bob:x:1001:
users:x:100:bob,alice
bad:x:nonnumeric:alice
";

    /// A temp dir with the fixture passwd and group files and an empty sudoers.d.
    fn fixture(agent_uid: u32) -> Host {
        let dir = std::env::temp_dir().join(format!("ssm-lite-runas-{}", crate::random::uuid_v4()));
        fs::create_dir_all(dir.join("sudoers.d")).unwrap();
        fs::write(dir.join("passwd"), PASSWD).unwrap();
        fs::write(dir.join("group"), GROUP).unwrap();
        Host {
            passwd: dir.join("passwd"),
            group: dir.join("group"),
            sudoers_dir: dir.join("sudoers.d"),
            agent_uid,
        }
    }

    fn request(enabled: bool, user: &'static str, default: &'static str) -> Request<'static> {
        Request {
            run_as_enabled: enabled,
            run_as_user: user,
            run_as_default_user: default,
            run_as_elevated: false,
        }
    }

    #[test]
    fn the_decision_table_of_section_4_8() {
        let elevated = Request {
            run_as_elevated: true,
            ..request(true, "alice", "bob")
        };
        let named = |n: &str| Ok(Choice::Named(n.to_string()));
        let cases = [
            (elevated, true, Ok(Choice::Agent { elevated: true })),
            (elevated, false, Ok(Choice::Agent { elevated: true })),
            (request(true, "alice", "bob"), true, named("alice")),
            (request(true, "  ", "bob"), true, named("bob")),
            (request(true, "", " bob "), true, named("bob")),
            (
                request(true, " ", ""),
                true,
                Err("please set the RunAs default user".to_string()),
            ),
            (request(false, "alice", "bob"), true, Ok(Choice::SsmUser)),
            (
                request(false, "alice", "bob"),
                false,
                Ok(Choice::Agent { elevated: false }),
            ),
        ];
        for (req, root, want) in cases {
            let got = choose(&req, root).map_err(|e| e.to_string());
            assert_eq!(got, want, "{req:?} root={root}");
        }
        let err = choose(&request(true, "alice", ""), false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("alice") && err.contains("not running as root"),
            "{err}"
        );
    }

    #[test]
    fn a_runas_user_gets_its_ids_groups_and_passwd_home() {
        let host = fixture(0);
        let user = resolve(&request(true, "alice", "bob"), &host).unwrap();
        let want = RunAs {
            uid: 1000,
            gid: 1000,
            groups: vec![1000, 10, 998, 100],
        };
        assert_eq!(user.name, "alice");
        assert_eq!(user.run_as, Some(want));
        assert_eq!(user.home.as_deref(), Some("/srv/alice"));
        let user = resolve(&request(true, "", "nohome"), &host).unwrap();
        assert_eq!(user.home.as_deref(), Some("/home/nohome"));
        assert_eq!(user.run_as.unwrap().groups, vec![1002]);
    }

    #[test]
    fn unknown_root_and_malformed_users_are_refused() {
        let host = fixture(0);
        let err = resolve(&request(true, "carol", ""), &host)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "failed to start pty since RunAs user carol does not exist"
        );
        for (name, needle) in [
            ("root", "uid 0"),
            ("wheelie", "gid 0"),
            ("broken", "line 10"),
        ] {
            let err = resolve(&request(true, name, ""), &host)
                .unwrap_err()
                .to_string();
            assert!(err.contains(name) && err.contains(needle), "{err}");
        }
        let gone = Host {
            passwd: "/nonexistent/passwd".into(),
            ..host
        };
        let err = resolve(&request(true, "alice", ""), &gone)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/passwd"), "{err}");
    }

    #[test]
    fn a_root_agent_uses_an_existing_ssm_user_without_touching_sudoers() {
        let host = fixture(0);
        let user = resolve(&Request::default(), &host).unwrap();
        assert_eq!(user.name, SSM_USER);
        assert_eq!(user.run_as.map(|r| r.uid), Some(1003));
        assert_eq!(user.home.as_deref(), Some("/home/ssm-user"));
        assert_eq!(fs::read_dir(&host.sudoers_dir).unwrap().count(), 0);
    }

    #[test]
    fn a_non_root_or_elevated_session_does_not_switch() {
        let host = fixture(1500);
        let user = resolve(&Request::default(), &host).unwrap();
        let agent = SessionUser {
            name: "agent".to_string(),
            run_as: None,
            home: None,
            shell: None,
        };
        assert_eq!(user, agent);
        let elevated = Request {
            run_as_elevated: true,
            ..Request::default()
        };
        let user = resolve(&elevated, &fixture(0)).unwrap();
        assert_eq!(user.name, "root");
        assert_eq!((user.run_as, user.home.as_deref()), (None, Some("/root")));
        let unnamed = resolve(&Request::default(), &fixture(4321)).unwrap();
        assert_eq!(unnamed.name, "4321");
    }

    #[test]
    fn a_switched_user_gets_a_login_environment_without_the_agents_secrets() {
        let agent = Env::from_pairs(&[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("AWS_SESSION_TOKEN", "t0ken"),
            ("HOME", "/root"),
            ("PATH", "/usr/bin:/bin"),
            ("LC_TIME", "de_DE.UTF-8"),
            ("HTTPS_PROXY", "http://u:p/w@proxy.example:3128"),
            ("http_proxy", "proxy.example:3128"),
            ("NO_PROXY", "169.254.169.254"),
        ]);
        let user = resolve(&request(true, "alice", ""), &fixture(0)).unwrap();
        let env = environment(&user, &agent);
        let ChildEnv::Only(vars) = env.child() else {
            panic!("a switched user must not inherit the agent's environment: {env:?}");
        };
        let want = [
            ("TERM", "xterm-256color"),
            ("LANG", "C.UTF-8"),
            ("USER", "alice"),
            ("HOME", "/srv/alice"),
            ("LOGNAME", "alice"),
            ("SHELL", "/bin/sh"),
            ("PATH", "/usr/bin:/bin"),
            ("http_proxy", "proxy.example:3128"),
            ("HTTPS_PROXY", "http://proxy.example:3128"),
            ("NO_PROXY", "169.254.169.254"),
            ("LC_TIME", "de_DE.UTF-8"),
        ];
        let got: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, want);

        let mut bash_user = user.clone();
        bash_user.shell = Some("/bin/bash".into());
        let env = environment(&bash_user, &Env::default());
        let ChildEnv::Only(vars) = env.child() else {
            panic!()
        };
        assert!(
            vars.contains(&("SHELL".into(), "/bin/bash".into())),
            "{vars:?}"
        );
        assert!(
            vars.contains(&("PATH".into(), DEFAULT_PATH.into())),
            "{vars:?}"
        );
    }

    #[test]
    fn the_agents_own_user_keeps_its_environment() {
        let user = resolve(&Request::default(), &fixture(1500)).unwrap();
        let env = environment(&user, &Env::from_pairs(&[("LANG", "en_GB.UTF-8")]));
        let ChildEnv::Agent(vars) = env.child() else {
            panic!("{env:?}");
        };
        let got: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            [
                ("TERM", "xterm-256color"),
                ("LANG", "en_GB.UTF-8"),
                ("USER", "agent")
            ]
        );
    }

    #[test]
    fn proxy_credentials_are_cut_whatever_they_hold() {
        for (url, want) in [
            ("http://user:pass@proxy:3128", "http://proxy:3128"),
            ("http://us%40er:p@ss/w@proxy:3128/", "http://proxy:3128/"),
            ("user:pass@proxy:3128", "proxy:3128"),
            ("https://proxy:3128", "https://proxy:3128"),
            ("socks5h://only-user@[::1]:1080", "socks5h://[::1]:1080"),
        ] {
            assert_eq!(without_credentials(url), want, "{url}");
        }
    }

    #[test]
    fn the_sudoers_file_is_written_once_and_always_0440() {
        let host = fixture(0);
        let path = host.sudoers_dir.join(SUDOERS_FILE);
        write_sudoers(&host.sudoers_dir).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), SUDOERS_RULES);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&path), 0o440);

        fs::remove_file(&path).unwrap();
        fs::write(&path, "# edited by the admin\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_sudoers(&host.sudoers_dir).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "# edited by the admin\n"
        );
        assert_eq!(mode(&path), 0o440);

        let missing = host.sudoers_dir.join("absent");
        write_sudoers(&missing).unwrap();
        assert!(!missing.exists());
    }

    /// Creates a real user: only as root with useradd, and removed again at the end.
    #[test]
    fn create_user_adds_a_real_account() {
        const NAME: &str = "ssm-lite-test-user";
        if crate::sys::pty::effective_uid() != 0 || !in_path("useradd") {
            eprintln!("skipped: creating {NAME} needs root and useradd");
            return;
        }
        let host = Host::system();
        let delete = || {
            std::process::Command::new("userdel")
                .args(["-r", NAME])
                .output()
        };
        let _ = delete();
        create_user(NAME).unwrap();
        let user = resolve(&request(true, NAME, ""), &host);
        let home_made = Path::new("/home").join(NAME).is_dir();
        let err = create_user(NAME).unwrap_err().to_string();
        let removed = delete().unwrap();
        assert!(removed.status.success(), "{removed:?}");
        let user = user.unwrap();
        let run_as = user.run_as.unwrap();
        assert!(run_as.uid > 0 && run_as.gid > 0, "{run_as:?}");
        assert_eq!(user.home.as_deref(), Some("/home/ssm-lite-test-user"));
        assert!(home_made, "useradd -m made no home directory");
        assert!(err.contains("useradd") && err.contains(NAME), "{err}");
    }
}
