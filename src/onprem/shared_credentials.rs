//! Credentials for scripts (docs/protocol.md §5.7): after every refresh of role credentials the
//! agent writes them into an AWS shared credentials file, so that the AWS CLI and SDKs in Run
//! Command scripts act as the node's role, and scripts are told where it is
//! (`AWS_SHARED_CREDENTIALS_FILE`, `AWS_PROFILE`), as upstream's credential refresher and
//! `setShareCredsEnvironment` do.
//!
//! The file is edited, not regenerated: every other profile, key, comment and blank line stays
//! as it was; only the three keys of the one profile are replaced. It is replaced atomically with
//! mode 0600, so a script never reads half a file.

use crate::aws::credentials::{Credentials, Env};
use crate::state::StateError;
use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The profile written when `Profile.ShareProfile` is empty, as upstream.
const DEFAULT_PROFILE: &str = "default";
const ACCESS_KEY_ID: &str = "aws_access_key_id";
const SECRET_ACCESS_KEY: &str = "aws_secret_access_key";
const SESSION_TOKEN: &str = "aws_session_token";
/// Larger than any credentials file: a bigger one is not edited.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why the credentials could not be written; each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SharedCredentialsError {
    #[error(
        "cannot tell where the shared credentials file is: neither AWS_SHARED_CREDENTIALS_FILE \
         nor HOME is set and uid {0} has no home directory in /etc/passwd; set one of them in \
         the agent's environment, or set Profile.ShareCreds to false"
    )]
    NoHome(u32),
    #[error("cannot read the shared credentials file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "the shared credentials file {} cannot be parsed: line {line} is neither a [profile], a \
         key = value nor a comment; fix or remove that line",
        path.display()
    )]
    Parse { path: PathBuf, line: usize },
    #[error(
        "the shared credentials file {} is larger than {MAX_FILE_BYTES} bytes; it is not edited, \
         check what wrote it",
        path.display()
    )]
    TooLarge { path: PathBuf },
    /// A value from the service that would break the file's lines (never written).
    #[error("the role credentials' {0} holds a line break; not writing them")]
    BadValue(&'static str),
    #[error(transparent)]
    Write(#[from] StateError),
}

/// Where role credentials are shared, and under which profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFile {
    pub path: PathBuf,
    /// `Profile.ShareProfile`; empty means `[default]`, and no `AWS_PROFILE` for scripts.
    pub profile: String,
}

impl SharedFile {
    /// A hybrid node's file, as upstream's `GetSharedCredsFilePath("")`:
    /// `$AWS_SHARED_CREDENTIALS_FILE`, else `$HOME/.aws/credentials`, else the agent user's home
    /// from passwd (`home_of_agent`; an agent under systemd without `User=` has no HOME).
    pub fn for_onprem(
        env: &Env,
        share_profile: &str,
        home_of_agent: impl FnOnce() -> Option<String>,
    ) -> Result<SharedFile, SharedCredentialsError> {
        let path = match env.get("AWS_SHARED_CREDENTIALS_FILE") {
            Some(file) => PathBuf::from(file),
            None => {
                let home = env.get("HOME").map(str::to_owned).or_else(home_of_agent);
                let home = home.ok_or_else(|| {
                    SharedCredentialsError::NoHome(crate::sys::pty::effective_uid())
                })?;
                Path::new(&home).join(".aws").join("credentials")
            }
        };
        Ok(SharedFile {
            path,
            profile: share_profile.to_owned(),
        })
    }

    /// An EC2 node's file under Default Host Management: upstream's
    /// `DefaultEC2SharedCredentialsFilePath` (`/var/lib/amazon/ssm/credentials`) is, for
    /// ssm-lite, `credentials` in the state dir; upstream writes no `ShareProfile` there.
    pub fn for_dhmc(state_dir: &Path) -> SharedFile {
        SharedFile {
            path: state_dir.join("credentials"),
            profile: String::new(),
        }
    }

    fn profile(&self) -> &str {
        match self.profile.as_str() {
            "" => DEFAULT_PROFILE,
            p => p,
        }
    }

    /// What scripts are told (upstream's `setShareCredsEnvironment`).
    pub fn script_env(&self) -> Vec<(String, String)> {
        let mut vars = vec![(
            "AWS_SHARED_CREDENTIALS_FILE".to_owned(),
            self.path.display().to_string(),
        )];
        if !self.profile.is_empty() {
            vars.push(("AWS_PROFILE".to_owned(), self.profile.clone()));
        }
        vars
    }

    /// Writes `credentials` into the profile. A file that cannot be parsed is replaced by one
    /// holding only this profile, as upstream's refresher does when its plain write fails (it
    /// then writes with `force`; `Profile.ForceUpdateCreds` is not consulted, there or here).
    pub fn store(&self, credentials: &Credentials) -> Result<(), SharedCredentialsError> {
        match self.write(credentials, false) {
            Err(SharedCredentialsError::Parse { path, line }) => {
                log::warn!(
                    "credentials: {} line {line} cannot be parsed; replacing the file with one holding only [{}]",
                    path.display(),
                    self.profile()
                );
                self.write(credentials, true)
            }
            other => other,
        }
    }

    /// [`store`](Self::store), logged: a failure is retried at the next refresh.
    pub fn store_logged(&self, credentials: &Credentials) {
        match self.store(credentials) {
            Ok(()) => log::info!(
                "credentials: shared the role credentials in [{}] of {}",
                self.profile(),
                self.path.display()
            ),
            Err(e) => log::error!("credentials: {e}; trying again at the next refresh"),
        }
    }

    fn write(&self, credentials: &Credentials, force: bool) -> Result<(), SharedCredentialsError> {
        // A symlinked file is updated where it points, not replaced by a plain file.
        let path = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        let text = read_bounded(&path)?;
        let keys = [
            (ACCESS_KEY_ID, credentials.access_key_id.as_str()),
            (SECRET_ACCESS_KEY, credentials.secret_access_key.as_str()),
            (
                SESSION_TOKEN,
                credentials.session_token.as_deref().unwrap_or_default(),
            ),
        ];
        if let Some((name, _)) = keys.iter().find(|(_, v)| v.contains(['\n', '\r'])) {
            return Err(SharedCredentialsError::BadValue(name));
        }
        let parsed = std::str::from_utf8(&text)
            .map_err(|e| line_of(&text, e.valid_up_to()))
            .and_then(|text| merge(text, self.profile(), &keys));
        let merged = match parsed {
            Ok(merged) => merged,
            Err(_) if force => merge("", self.profile(), &keys).unwrap_or_default(),
            Err(line) => return Err(SharedCredentialsError::Parse { path, line }),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(crate::state::err("create directory", dir))?;
        }
        crate::state::write_atomic(&path, merged.as_bytes(), true)?;
        Ok(())
    }
}

/// The file's bytes (none when it does not exist yet), at most [`MAX_FILE_BYTES`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, SharedCredentialsError> {
    use std::io::Read;
    let read_error = |error| SharedCredentialsError::Read {
        path: path.to_owned(),
        error,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_error(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(SharedCredentialsError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// The 1-based line holding byte `offset`.
fn line_of(text: &[u8], offset: usize) -> usize {
    text[..offset].iter().filter(|b| **b == b'\n').count() + 1
}

/// One line of a shared credentials file, as the CLI's parser (configparser) reads it.
enum Line {
    /// Blank, or a `#`/`;` comment.
    Other,
    Section(String),
    /// `key = value` or `key: value`; the key lower-cased, as the CLI matches it.
    Key(String),
    /// An indented line after a key: more of that key's value.
    Continuation,
}

fn classify(raw: &str, after_key: bool) -> Option<Line> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
        return Some(Line::Other);
    }
    if after_key && raw.starts_with([' ', '\t']) {
        return Some(Line::Continuation);
    }
    if let Some(rest) = line.strip_prefix('[') {
        let name = &rest[..rest.find(']')?];
        return Some(Line::Section(
            name.split_whitespace().collect::<Vec<_>>().join(" "),
        ));
    }
    let key = &line[..line.find(['=', ':'])?];
    Some(Line::Key(key.trim().to_ascii_lowercase()))
}

/// `text` with `keys` set in `[profile]`: every earlier line of those keys in that profile (and
/// their continuation lines) is dropped, and the keys go after the last other key of the
/// profile's first section, or into a new section at the end. `Err` is the 1-based number of a
/// line that is not INI.
fn merge(text: &str, profile: &str, keys: &[(&str, &str); 3]) -> Result<String, usize> {
    let mut out: Vec<&str> = Vec::new();
    // In a section of `profile`; in its first one; any seen yet.
    let (mut in_profile, mut in_first, mut seen) = (false, false, false);
    let (mut after_key, mut dropping, mut insert_at) = (false, false, None);
    for (number, raw) in text.split_inclusive('\n').enumerate() {
        let line = classify(raw.trim_end_matches(['\n', '\r']), after_key).ok_or(number + 1)?;
        match &line {
            Line::Continuation if dropping => continue,
            Line::Section(name) => {
                in_profile = name == profile;
                in_first = in_profile && !seen;
                seen |= in_profile;
                (after_key, dropping) = (false, false);
            }
            Line::Key(key) => {
                after_key = true;
                dropping = in_profile && keys.iter().any(|(k, _)| k == key);
                if dropping {
                    continue;
                }
            }
            Line::Other | Line::Continuation => {}
        }
        out.push(raw);
        if in_first && !matches!(line, Line::Other) {
            insert_at = Some(out.len());
        }
    }
    let entries: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    let mut result = String::with_capacity(text.len() + entries.len() + profile.len() + 4);
    match insert_at {
        Some(at) => {
            out[..at].iter().for_each(|l| push_line(&mut result, l));
            result.push_str(&entries);
            out[at..].iter().for_each(|l| result.push_str(l));
        }
        None => {
            out.iter().for_each(|l| result.push_str(l));
            if !result.is_empty() && !result.ends_with('\n') {
                result.push('\n');
            }
            if !result.is_empty() && !result.ends_with("\n\n") {
                result.push('\n');
            }
            result.push_str(&format!("[{profile}]\n{entries}"));
        }
    }
    Ok(result)
}

/// Appends `line`, ending it with a newline when it is the file's unterminated last line.
fn push_line(out: &mut String, line: &str) {
    out.push_str(line);
    if !line.ends_with('\n') {
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testdir::TestDir;
    use std::os::unix::fs::PermissionsExt;

    fn creds(id: &str) -> Credentials {
        Credentials {
            access_key_id: id.into(),
            secret_access_key: "s3cr3t".into(),
            session_token: Some("t0k3n".into()),
            expires_at: None,
        }
    }

    const KEYS: [(&str, &str); 3] = [
        (ACCESS_KEY_ID, "ASIANEW"),
        (SECRET_ACCESS_KEY, "secret"),
        (SESSION_TOKEN, "token"),
    ];

    #[test]
    fn merge_replaces_the_profiles_keys_and_keeps_everything_else() {
        let text = "# my keys\n[default]\nregion = eu-west-1\nAWS_ACCESS_KEY_ID = OLD\naws_session_token=old\n  more-of-the-token\n\n; work\n[work]\naws_access_key_id = WORK\n";
        let merged = merge(text, "default", &KEYS).unwrap();
        assert_eq!(
            merged,
            "# my keys\n[default]\nregion = eu-west-1\naws_access_key_id = ASIANEW\naws_secret_access_key = secret\naws_session_token = token\n\n; work\n[work]\naws_access_key_id = WORK\n"
        );
        // Writing again changes nothing more: the merge is idempotent.
        assert_eq!(merge(&merged, "default", &KEYS).unwrap(), merged);
    }

    #[test]
    fn merge_adds_a_missing_profile_at_the_end_and_drops_repeated_sections_keys() {
        let merged = merge("[default]\naws_access_key_id = MINE", "ssm", &KEYS).unwrap();
        assert_eq!(
            merged,
            "[default]\naws_access_key_id = MINE\n\n[ssm]\naws_access_key_id = ASIANEW\naws_secret_access_key = secret\naws_session_token = token\n"
        );
        assert!(merge("", "ssm", &KEYS).unwrap().starts_with("[ssm]\n"));
        let repeated = "[ ssm ]\nregion = x\n[a]\nk = v\n[ssm]\naws_access_key_id = OLD\n";
        let merged = merge(repeated, "ssm", &KEYS).unwrap();
        assert_eq!(merged.matches("aws_access_key_id").count(), 1, "{merged}");
        assert!(merged.starts_with("[ ssm ]\nregion = x\naws_access_key_id = ASIANEW\n"));
        assert!(merged.ends_with("[a]\nk = v\n[ssm]\n"), "{merged}");
    }

    #[test]
    fn merge_keeps_crlf_lines_and_finds_lines_that_are_not_ini() {
        let merged = merge("[default]\r\nregion = x\r\n", "default", &KEYS).unwrap();
        assert!(merged.starts_with("[default]\r\nregion = x\r\naws_access_key_id"));
        assert_eq!(
            merge("[default]\nkey = v\njunk\n", "default", &KEYS),
            Err(3)
        );
        assert_eq!(merge("[unclosed\n", "default", &KEYS), Err(1));
    }

    #[test]
    fn store_writes_a_private_file_atomically_and_keeps_other_profiles() {
        let t = TestDir::new("shared-creds");
        let path = t.path().join("home/.aws/credentials");
        let file = SharedFile {
            path: path.clone(),
            profile: String::new(),
        };
        file.store(&creds("ASIA1")).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(dir_mode.permissions().mode() & 0o777, 0o700);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[default]\naws_access_key_id = ASIA1\naws_secret_access_key = s3cr3t\naws_session_token = t0k3n\n"
        );

        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("\n# the admin's own\n[admin]\naws_access_key_id = AKIAADMIN\n");
        std::fs::write(&path, &text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        file.store(&creds("ASIA2")).unwrap();
        let after = std::fs::read_to_string(&path).unwrap();
        assert_eq!(after, text.replace("ASIA1", "ASIA2"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "tightened to 0600 again");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["credentials"], "no temporary file stays behind");
    }

    #[test]
    fn store_follows_a_symlink_and_replaces_an_unparseable_file() {
        let t = TestDir::new("shared-creds-link");
        let real = t.path().join("real");
        std::fs::write(&real, "junk\n").unwrap();
        let link = t.path().join("credentials");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let file = SharedFile {
            path: link.clone(),
            profile: "ssm".into(),
        };
        let err = file.write(&creds("ASIA1"), false).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&real).unwrap(),
            "junk\n",
            "untouched"
        );
        file.store(&creds("ASIA1")).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert!(
            std::fs::read_to_string(&real)
                .unwrap()
                .starts_with("[ssm]\naws_access_key_id = ASIA1\n")
        );
    }

    #[test]
    fn an_oversized_file_and_values_with_line_breaks_are_refused() {
        let t = TestDir::new("shared-creds-bounds");
        let path = t.path().join("credentials");
        let file = SharedFile {
            path: path.clone(),
            profile: String::new(),
        };
        let mut bad = creds("ASIA1");
        bad.session_token = Some("t\n[evil]".into());
        let err = file.store(&bad).unwrap_err();
        assert!(err.to_string().contains("aws_session_token"), "{err}");
        assert!(!path.exists());
        std::fs::write(&path, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let err = file.store(&creds("ASIA1")).unwrap_err();
        assert!(
            matches!(err, SharedCredentialsError::TooLarge { .. }),
            "{err}"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), MAX_FILE_BYTES + 1);
    }

    #[test]
    fn the_path_follows_upstreams_order_and_scripts_get_the_profile() {
        let env = Env::from_pairs(&[("AWS_SHARED_CREDENTIALS_FILE", "/x/creds"), ("HOME", "/h")]);
        let file = SharedFile::for_onprem(&env, "", || None).unwrap();
        assert_eq!(file.path, Path::new("/x/creds"));
        assert_eq!(
            file.script_env(),
            [(
                "AWS_SHARED_CREDENTIALS_FILE".to_owned(),
                "/x/creds".to_owned()
            )]
        );
        let env = Env::from_pairs(&[("AWS_SHARED_CREDENTIALS_FILE", ""), ("HOME", "/h")]);
        let file = SharedFile::for_onprem(&env, "ssm", || None).unwrap();
        assert_eq!(file.path, Path::new("/h/.aws/credentials"));
        assert_eq!(file.script_env()[1], ("AWS_PROFILE".into(), "ssm".into()));
        let file = SharedFile::for_onprem(&Env::default(), "", || Some("/root".into())).unwrap();
        assert_eq!(file.path, Path::new("/root/.aws/credentials"));
        let err = SharedFile::for_onprem(&Env::default(), "", || None).unwrap_err();
        assert!(err.to_string().contains("Profile.ShareCreds"), "{err}");
        let dhmc = SharedFile::for_dhmc(Path::new("/var/lib/ssm-lite"));
        assert_eq!(dhmc.path, Path::new("/var/lib/ssm-lite/credentials"));
        assert_eq!(dhmc.script_env().len(), 1, "no AWS_PROFILE under DHMC");
    }
}
