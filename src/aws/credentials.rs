//! AWS credentials, the provider trait, a caching/refreshing provider, and the default chain
//! (environment, then the shared credentials and config files) used by `CustomIdentity`.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A set of AWS credentials. `Debug` never prints the secret or the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// When these stop working; `None` for long-lived keys.
    pub expires_at: Option<SystemTime>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// A cached source failed and nothing usable is held: which source, and why.
    #[error("cannot get AWS credentials from {source_name}: {reason}")]
    Source { source_name: String, reason: String },
    #[error(
        "the credentials returned expire at {0}, which is already past or too close; check the \
         system clock"
    )]
    Expiring(String),
    #[error(
        "no AWS credentials found; tried {tried}. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
         in the agent's environment, or put aws_access_key_id and aws_secret_access_key in \
         profile [{profile}] of the shared credentials file"
    )]
    NotFound { tried: String, profile: String },
    #[error("{0}")]
    Imds(#[from] super::imds::ImdsError),
    /// A key of the agent's own could not sign (on-prem RSA, DHMC); the text names the key.
    #[error("{0}")]
    Key(String),
    /// A call that hands out credentials failed (an on-prem role token, a test script).
    #[error("{0}")]
    Fetch(String),
}

/// Anything that can hand out current credentials; implementations refresh as needed.
pub trait CredentialsProvider: Send + Sync {
    fn credentials(&self) -> Result<Credentials, CredentialsError>;

    /// A service refused `rejected` (expired, revoked, unknown): the next [`credentials`] call
    /// should fetch fresh ones instead of answering from a cache. True when newer credentials may
    /// come of it, so that the refused request is worth sending again; fixed credentials say no.
    ///
    /// [`credentials`]: CredentialsProvider::credentials
    fn refresh_rejected(&self, rejected: &Credentials) -> bool {
        let _ = rejected;
        false
    }
}

/// Fixed credentials (tests, and the emulator's demo identity).
pub struct StaticCredentials(pub Credentials);

impl CredentialsProvider for StaticCredentials {
    fn credentials(&self) -> Result<Credentials, CredentialsError> {
        Ok(self.0.clone())
    }
}

/// A source that fetches fresh credentials (IMDS role credentials, the default chain, …).
pub type FetchCredentials = dyn Fn() -> Result<Credentials, CredentialsError> + Send + Sync;

/// Caches the credentials of one source and refreshes them lazily, inside `credentials()`, so no
/// thread is needed:
/// * refresh once half of the lifetime (retrieval → expiry) has passed, as upstream's refresher;
/// * credentials without an expiry are fetched once and kept;
/// * credentials are not handed out during the last quarter of their lifetime (at most the last
///   60 s), so that nothing signs a request with keys that expire while it is in flight;
/// * a failed refresh keeps the current credentials while they are usable (with a warning) and
///   is retried only after `min(30 s, remaining usable time / 4)` (at least 1 s); with nothing
///   usable the failure is answered from memory for 5 s, so busy callers cannot hammer the source.
///
/// The mutex is held during a fetch: concurrent callers wait for that one fetch instead of
/// starting their own.
pub struct RefreshingCredentials {
    source: String,
    fetch: Box<FetchCredentials>,
    state: Mutex<RefreshState>,
}

#[derive(Default)]
struct RefreshState {
    current: Option<Held>,
    /// A service refused `current`: fetch before handing anything out again.
    rejected: bool,
    /// The last failed fetch's error, and when the next fetch may be tried.
    last_failure: Option<(CredentialsError, SystemTime)>,
}

struct Held {
    credentials: Credentials,
    retrieved_at: SystemTime,
}

/// Longest time credentials are withheld before their expiry.
const MAX_EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// Upper and lower bounds of the wait after a failed refresh while old credentials still work.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
const MIN_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Wait after a failed fetch when there is nothing usable to fall back on.
const RETRY_DELAY_WITHOUT_CREDENTIALS: Duration = Duration::from_secs(5);

impl Held {
    fn lifetime(&self) -> Option<Duration> {
        let expires = self.credentials.expires_at?;
        Some(
            expires
                .duration_since(self.retrieved_at)
                .unwrap_or(Duration::ZERO),
        )
    }

    fn refresh_at(&self) -> Option<SystemTime> {
        Some(self.retrieved_at + self.lifetime()? / 2)
    }

    /// The last moment these may be handed out (`None`: forever).
    fn usable_until(&self) -> Option<SystemTime> {
        let expires = self.credentials.expires_at?;
        let margin = self
            .lifetime()
            .map_or(Duration::ZERO, |l| (l / 4).min(MAX_EXPIRY_MARGIN));
        Some(expires.checked_sub(margin).unwrap_or(expires))
    }

    fn usable_at(&self, now: SystemTime) -> bool {
        self.usable_until().is_none_or(|until| now < until)
    }
}

impl RefreshingCredentials {
    /// `source` names where the credentials come from, for log lines and errors.
    pub fn new(
        source: impl Into<String>,
        fetch: impl Fn() -> Result<Credentials, CredentialsError> + Send + Sync + 'static,
    ) -> RefreshingCredentials {
        RefreshingCredentials {
            source: source.into(),
            fetch: Box::new(fetch),
            state: Mutex::new(RefreshState::default()),
        }
    }

    /// `credentials()` at a fixed time (tests move it).
    #[cfg(test)]
    fn credentials_at(&self, now: SystemTime) -> Result<Credentials, CredentialsError> {
        self.credentials_by(&|| now)
    }

    /// `credentials()` by `clock`, read again after a fetch: the fetch itself may have corrected
    /// the clock (an on-prem role-token call refused for skew), and the new credentials' expiry
    /// is the service's time.
    fn credentials_by(
        &self,
        clock: &dyn Fn() -> SystemTime,
    ) -> Result<Credentials, CredentialsError> {
        let now = clock();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = state.current.as_ref().filter(|_| !state.rejected)
            && held.refresh_at().is_none_or(|at| now < at)
        {
            return Ok(held.credentials.clone());
        }
        let fallback = state
            .current
            .as_ref()
            .filter(|h| h.usable_at(now))
            .map(|h| (h.credentials.clone(), h.usable_until()));
        if let Some((error, retry_at)) = &state.last_failure
            && now < *retry_at
        {
            return match fallback {
                Some((credentials, _)) => Ok(credentials),
                None => Err(self.failure(error)),
            };
        }
        let fetched = (self.fetch)();
        let now = clock();
        match fetched.and_then(|credentials| usable(credentials, now)) {
            Ok(credentials) => {
                log::info!(
                    "credentials: got new credentials from {} (expire {})",
                    self.source,
                    credentials
                        .expires_at
                        .map_or("never".into(), crate::timefmt::iso8601_ms)
                );
                state.current = Some(Held {
                    credentials: credentials.clone(),
                    retrieved_at: now,
                });
                state.rejected = false;
                state.last_failure = None;
                Ok(credentials)
            }
            Err(error) => {
                let retry_delay = retry_delay(fallback.as_ref().and_then(|f| f.1), now);
                let answer = match fallback {
                    Some((credentials, until)) => {
                        log::warn!(
                            "credentials: refresh from {} failed: {error}; keeping the current credentials (usable until {}), next attempt in {} s",
                            self.source,
                            until.map_or("forever".into(), crate::timefmt::iso8601_ms),
                            retry_delay.as_secs()
                        );
                        Ok(credentials)
                    }
                    None => Err(self.failure(&error)),
                };
                state.last_failure = Some((error, now + retry_delay));
                answer
            }
        }
    }

    fn failure(&self, error: &CredentialsError) -> CredentialsError {
        CredentialsError::Source {
            source_name: self.source.to_string(),
            reason: error.to_string(),
        }
    }
}

/// `credentials` unless they are already inside their expiry margin at `now`.
fn usable(credentials: Credentials, now: SystemTime) -> Result<Credentials, CredentialsError> {
    let held = Held {
        credentials,
        retrieved_at: now,
    };
    if !held.usable_at(now) {
        let expires_at = held.credentials.expires_at;
        let shown = expires_at.map_or("?".into(), crate::timefmt::iso8601_ms);
        return Err(CredentialsError::Expiring(shown));
    }
    Ok(held.credentials)
}

/// How long to wait after a failed fetch; `usable_until` is when the fallback stops working.
fn retry_delay(usable_until: Option<SystemTime>, now: SystemTime) -> Duration {
    match usable_until {
        None => RETRY_DELAY_WITHOUT_CREDENTIALS,
        Some(until) => {
            let remaining = until.duration_since(now).unwrap_or(Duration::ZERO);
            (remaining / 4).clamp(MIN_RETRY_DELAY, MAX_RETRY_DELAY)
        }
    }
}

impl CredentialsProvider for RefreshingCredentials {
    /// Judged by the corrected clock: expiry times are the issuing service's.
    fn credentials(&self) -> Result<Credentials, CredentialsError> {
        self.credentials_by(&super::clock::now)
    }

    /// Marks the cached credentials for a fetch when they are the ones refused; when they were
    /// replaced already (another caller got there first), nothing more is fetched. The failure
    /// back-off still applies, so a source that is down is not asked again at once.
    fn refresh_rejected(&self, rejected: &Credentials) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state
            .current
            .as_ref()
            .is_some_and(|held| held.credentials == *rejected)
        {
            log::info!(
                "credentials: the service refused the credentials from {}; fetching new ones",
                self.source
            );
            state.rejected = true;
        }
        true
    }
}

/// A snapshot of the process environment, passed to everything that reads AWS_* variables so
/// that tests can give each case its own values. Empty values count as unset (as the SDKs do).
/// `Debug` prints variable names only: the environment may hold secret keys.
#[derive(Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// The current process environment (variables that are not UTF-8 are skipped).
    pub fn capture() -> Env {
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Env { vars }
    }

    pub fn from_pairs(pairs: &[(&str, &str)]) -> Env {
        Env {
            vars: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.vars.keys().collect();
        names.sort();
        f.debug_struct("Env").field("names", &names).finish()
    }
}

/// The default chain behind `CredentialsProvider: "DEFAULT"`, wrapped for caching. The sources
/// hold long-lived keys, so they are read once.
pub fn default_chain_provider(env: Env) -> RefreshingCredentials {
    RefreshingCredentials::new("the default credential chain", move || default_chain(&env))
}

/// Static keys from the environment, then the shared credentials file, then the config file.
/// The error lists every source tried and why it gave nothing.
pub fn default_chain(env: &Env) -> Result<Credentials, CredentialsError> {
    let profile = env.get("AWS_PROFILE").unwrap_or("default");
    let mut tried = Vec::new();
    for source in [
        from_environment(env),
        from_credentials_file(env, profile),
        from_config_file(env, profile),
    ] {
        match source {
            Ok(credentials) => return Ok(credentials),
            Err(why) => tried.push(why),
        }
    }
    Err(CredentialsError::NotFound {
        tried: tried.join("; "),
        profile: profile.to_string(),
    })
}

fn from_environment(env: &Env) -> Result<Credentials, String> {
    match (
        env.get("AWS_ACCESS_KEY_ID"),
        env.get("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(id), Some(secret)) => Ok(Credentials {
            access_key_id: id.to_owned(),
            secret_access_key: secret.to_owned(),
            session_token: env.get("AWS_SESSION_TOKEN").map(str::to_owned),
            expires_at: None,
        }),
        (Some(_), None) => {
            Err("environment: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into())
        }
        (None, Some(_)) => {
            Err("environment: AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into())
        }
        (None, None) => Err("environment: AWS_ACCESS_KEY_ID is not set".into()),
    }
}

fn from_credentials_file(env: &Env, profile: &str) -> Result<Credentials, String> {
    let path = aws_file(env, "AWS_SHARED_CREDENTIALS_FILE", "credentials")
        .map_err(|why| format!("shared credentials file: {why}"))?;
    let what = format!("shared credentials file {}", path.display());
    let ini = read_ini(&path).map_err(|why| format!("{what}: {why}"))?;
    let section = ini
        .get(profile)
        .ok_or_else(|| format!("{what}: no profile [{profile}]"))?;
    static_keys(section).map_err(|why| format!("{what}: profile [{profile}] {why}"))
}

fn from_config_file(env: &Env, profile: &str) -> Result<Credentials, String> {
    let path =
        aws_file(env, "AWS_CONFIG_FILE", "config").map_err(|why| format!("config file: {why}"))?;
    let what = format!("config file {}", path.display());
    let ini = read_ini(&path).map_err(|why| format!("{what}: {why}"))?;
    let section = ini
        .iter()
        .find(|(name, _)| config_profile_name(name) == Some(profile))
        .map(|(_, keys)| keys)
        .ok_or_else(|| format!("{what}: no profile {profile}"))?;
    static_keys(section).map_err(|why| format!("{what}: profile {profile} {why}"))
}

/// `$<var>`, else `$HOME/.aws/<name>`.
fn aws_file(env: &Env, var: &str, name: &str) -> Result<PathBuf, String> {
    if let Some(path) = env.get(var) {
        return Ok(PathBuf::from(path));
    }
    let home = env
        .get("HOME")
        .ok_or_else(|| format!("neither {var} nor HOME is set"))?;
    Ok(PathBuf::from(home).join(".aws").join(name))
}

/// The profile a config-file section describes: `[default]`, `[profile name]` (other sections,
/// such as `[sso-session x]`, are not profiles).
fn config_profile_name(section: &str) -> Option<&str> {
    if section == "default" {
        return Some(section);
    }
    let rest = section.strip_prefix("profile")?;
    rest.starts_with(char::is_whitespace).then(|| rest.trim())
}

/// Profile keys that name a credential source ssm-lite does not implement.
const UNSUPPORTED_PROFILE_KEYS: [&str; 5] = [
    "role_arn",
    "credential_process",
    "sso_session",
    "sso_start_url",
    "web_identity_token_file",
];

fn static_keys(section: &HashMap<String, String>) -> Result<Credentials, String> {
    let value = |k: &str| section.get(k).filter(|v| !v.is_empty()).cloned();
    match (value("aws_access_key_id"), value("aws_secret_access_key")) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials {
            access_key_id,
            secret_access_key,
            session_token: value("aws_session_token"),
            expires_at: None,
        }),
        (Some(_), None) => Err("has aws_access_key_id but no aws_secret_access_key".into()),
        (None, Some(_)) => Err("has aws_secret_access_key but no aws_access_key_id".into()),
        (None, None) => match UNSUPPORTED_PROFILE_KEYS
            .iter()
            .find(|k| section.contains_key(**k))
        {
            Some(key) => Err(format!(
                "uses {key}, which ssm-lite does not support; give static keys (aws_access_key_id, aws_secret_access_key)"
            )),
            None => Err("has no aws_access_key_id".into()),
        },
    }
}

/// Section name → (lower-case key → value).
type Ini = HashMap<String, HashMap<String, String>>;

fn read_ini(path: &std::path::Path) -> Result<Ini, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse_ini(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("not found".into()),
        Err(e) => Err(format!("cannot read it: {e}")),
    }
}

/// The AWS CLI's INI dialect: `[section]`, `key = value`, full-line comments with `#` or `;`,
/// and inline comments only after whitespace (values hold no whitespace but may hold `#`/`;`,
/// so only a whitespace-led one can start a comment). Keys outside a section and lines
/// without `=` are ignored; repeated sections are merged.
fn parse_ini(text: &str) -> Ini {
    let mut ini = Ini::new();
    let mut section: Option<String> = None;
    for raw in text.lines() {
        let line = strip_inline_comment(raw).trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            ini.entry(name.clone()).or_default();
            section = Some(name);
        } else if let (Some(name), Some((key, value))) = (&section, line.split_once('=')) {
            let keys = ini.entry(name.clone()).or_default();
            keys.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    ini
}

fn strip_inline_comment(line: &str) -> &str {
    let cut = line
        .char_indices()
        .zip(line.chars().skip(1))
        .find(|((_, c), next)| c.is_whitespace() && matches!(next, '#' | ';'))
        .map(|((i, _), _)| i);
    cut.map_or(line, |i| &line[..i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::UNIX_EPOCH;

    fn creds(id: &str, expires_at: Option<SystemTime>) -> Credentials {
        Credentials {
            access_key_id: id.into(),
            secret_access_key: format!("secret-{id}"),
            session_token: Some(format!("token-{id}")),
            expires_at,
        }
    }

    /// A provider whose fetches return `script` in order, and a counter of fetches.
    fn scripted(
        script: Vec<Result<Credentials, CredentialsError>>,
    ) -> (RefreshingCredentials, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let script = Mutex::new(VecDeque::from(script));
        let provider = RefreshingCredentials::new("test source", move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let next = script.lock().unwrap().pop_front();
            next.unwrap_or_else(|| Err(CredentialsError::Fetch("script exhausted".into())))
        });
        (provider, calls)
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn fail() -> Result<Credentials, CredentialsError> {
        Err(CredentialsError::Fetch("IMDS unreachable".into()))
    }

    #[test]
    fn long_lived_credentials_are_fetched_once() {
        let (p, calls) = scripted(vec![Ok(creds("A", None))]);
        for t in [0, 10, 1_000_000] {
            assert_eq!(p.credentials_at(at(t)).unwrap().access_key_id, "A");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn refreshes_at_half_the_lifetime_from_retrieval() {
        // Retrieved at t=100 with 3600 s to live: refresh due at t=1900.
        let (p, calls) = scripted(vec![
            Ok(creds("A", Some(at(3700)))),
            Ok(creds("B", Some(at(7300)))),
        ]);
        assert_eq!(p.credentials_at(at(100)).unwrap().access_key_id, "A");
        assert_eq!(p.credentials_at(at(1899)).unwrap().access_key_id, "A");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(p.credentials_at(at(1900)).unwrap().access_key_id, "B");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn failed_refresh_keeps_valid_credentials_and_backs_off() {
        let (p, calls) = scripted(vec![
            Ok(creds("A", Some(at(3600)))),
            fail(),
            fail(),
            Ok(creds("B", None)),
        ]);
        assert_eq!(p.credentials_at(at(0)).unwrap().access_key_id, "A");
        // Due at 1800; the refresh fails, A is kept. Usable until 3540 → retry after 30 s.
        assert_eq!(p.credentials_at(at(1800)).unwrap().access_key_id, "A");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(p.credentials_at(at(1829)).unwrap().access_key_id, "A");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "no fetch inside the back-off"
        );
        assert_eq!(p.credentials_at(at(1830)).unwrap().access_key_id, "A");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(p.credentials_at(at(1860)).unwrap().access_key_id, "B");
    }

    #[test]
    fn back_off_shrinks_near_expiry_and_expired_credentials_are_not_handed_out() {
        let (p, calls) = scripted(vec![Ok(creds("A", Some(at(400)))), fail(), fail(), fail()]);
        p.credentials_at(at(0)).unwrap();
        // Lifetime 400 s: margin 60 s → usable until 340. At 300, 40 s remain → retry after 10 s.
        assert!(p.credentials_at(at(300)).is_ok());
        assert!(p.credentials_at(at(309)).is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(p.credentials_at(at(310)).is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let err = p.credentials_at(at(340)).unwrap_err().to_string();
        assert!(
            err.contains("test source") && err.contains("IMDS unreachable"),
            "{err}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn with_nothing_usable_failures_are_remembered_for_a_few_seconds() {
        let (p, calls) = scripted(vec![fail(), Ok(creds("A", None))]);
        assert!(p.credentials_at(at(0)).is_err());
        assert!(p.credentials_at(at(4)).is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(p.credentials_at(at(5)).unwrap().access_key_id, "A");
    }

    #[test]
    fn refused_credentials_are_fetched_again_once_whoever_reports_them() {
        let (p, calls) = scripted(vec![Ok(creds("A", None)), Ok(creds("B", None))]);
        let a = p.credentials_at(at(0)).unwrap();
        assert!(p.refresh_rejected(&a));
        // A second thread refused with A at the same time: it must not cause a third fetch.
        assert!(p.refresh_rejected(&a));
        assert_eq!(p.credentials_at(at(1)).unwrap().access_key_id, "B");
        assert!(
            p.refresh_rejected(&a),
            "A was replaced already: worth resending"
        );
        assert_eq!(p.credentials_at(at(2)).unwrap().access_key_id, "B");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(!StaticCredentials(a.clone()).refresh_rejected(&a));
    }

    #[test]
    fn credentials_that_arrive_expired_are_refused() {
        let (p, _) = scripted(vec![Ok(creds("A", Some(at(50))))]);
        let err = p.credentials_at(at(100)).unwrap_err().to_string();
        assert!(err.contains("system clock"), "{err}");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let text = format!("{:?}", creds("AKIDEXAMPLE", None));
        assert!(
            text.contains("AKIDEXAMPLE") && !text.contains("secret-") && !text.contains("token-")
        );
        let env = Env::from_pairs(&[("AWS_SECRET_ACCESS_KEY", "s3cr3t")]);
        let text = format!("{env:?}");
        assert!(
            text.contains("AWS_SECRET_ACCESS_KEY") && !text.contains("s3cr3t"),
            "{text}"
        );
    }

    #[test]
    fn ini_parsing_handles_comments_spacing_and_case() {
        let ini = parse_ini(
            "ignored = before any section\n# comment\n; comment\n[default]\n  AWS_Access_Key_Id=AKID ; inline\n\
             aws_secret_access_key = abc#def/+= \n[ profile   dev ] # note\nregion=eu-west-1\nnot a pair\n",
        );
        assert_eq!(ini["default"]["aws_access_key_id"], "AKID");
        assert_eq!(ini["default"]["aws_secret_access_key"], "abc#def/+=");
        assert_eq!(ini["profile dev"]["region"], "eu-west-1");
        assert_eq!(ini.len(), 2);
        assert_eq!(config_profile_name("profile dev"), Some("dev"));
        assert_eq!(config_profile_name("default"), Some("default"));
        assert_eq!(config_profile_name("profiledev"), None);
        assert_eq!(config_profile_name("sso-session x"), None);
    }

    /// A fresh directory under the system temp dir for one test.
    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ssm-lite-creds-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join(".aws")).unwrap();
        dir
    }

    #[test]
    fn environment_comes_first() {
        let env = Env::from_pairs(&[
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "tok"),
            ("HOME", "/nonexistent"),
        ]);
        let c = default_chain(&env).unwrap();
        assert_eq!(c.access_key_id, "AKIDENV");
        assert_eq!(c.session_token.as_deref(), Some("tok"));
        assert_eq!(c.expires_at, None);
    }

    #[test]
    fn shared_credentials_file_under_home_with_aws_profile() {
        let home = temp_dir("home");
        std::fs::write(
            home.join(".aws/credentials"),
            "[default]\naws_access_key_id = AKIDDEF\naws_secret_access_key = s1\n\n[ops]\naws_access_key_id = AKIDOPS\naws_secret_access_key = s2\n",
        )
        .unwrap();
        let home_str = home.to_str().unwrap();
        let env = Env::from_pairs(&[("HOME", home_str), ("AWS_ACCESS_KEY_ID", "")]);
        assert_eq!(default_chain(&env).unwrap().access_key_id, "AKIDDEF");
        let env = Env::from_pairs(&[("HOME", home_str), ("AWS_PROFILE", "ops")]);
        assert_eq!(default_chain(&env).unwrap().access_key_id, "AKIDOPS");
        std::fs::remove_dir_all(home).unwrap();
    }

    #[test]
    fn config_file_profile_section_and_explicit_paths() {
        let dir = temp_dir("config");
        let config = dir.join("cfg");
        std::fs::write(
            &config,
            "[profile ops]\nregion = eu-west-1\naws_access_key_id = AKIDCFG\naws_secret_access_key = s\n",
        )
        .unwrap();
        let env = Env::from_pairs(&[
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.join("missing").to_str().unwrap(),
            ),
            ("AWS_PROFILE", "ops"),
        ]);
        assert_eq!(default_chain(&env).unwrap().access_key_id, "AKIDCFG");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_error_names_every_source_tried() {
        let dir = temp_dir("errors");
        std::fs::write(
            dir.join(".aws/credentials"),
            "[default]\nrole_arn = arn:aws:iam::1:role/x\n",
        )
        .unwrap();
        let env = Env::from_pairs(&[
            ("HOME", dir.to_str().unwrap()),
            ("AWS_ACCESS_KEY_ID", "AKID"),
        ]);
        let err = default_chain(&env).unwrap_err().to_string();
        assert!(err.contains("AWS_SECRET_ACCESS_KEY is not"), "{err}");
        assert!(
            err.contains("uses role_arn, which ssm-lite does not support"),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "config file {}: not found",
                dir.join(".aws/config").display()
            )),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();

        let err = default_chain(&Env::default()).unwrap_err().to_string();
        assert!(
            err.contains("neither AWS_SHARED_CREDENTIALS_FILE nor HOME is set"),
            "{err}"
        );
    }

    #[test]
    fn default_chain_provider_reads_once() {
        let env = Env::from_pairs(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ]);
        let p = default_chain_provider(env);
        assert_eq!(p.credentials().unwrap().access_key_id, "AKID");
    }
}
