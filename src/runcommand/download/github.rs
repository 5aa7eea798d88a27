//! `sourceType` `GitHub` (upstream `gitresource/github/`, go-github's `Repositories.GetContents`):
//! `GET {api}/repos/{owner}/{repo}/contents/{path}?ref=…`, a file (its base64 `content`, or
//! its `download_url` when GitHub sends none, above 1 MB) or a directory, fetched entry by entry.
//! A private repository's token is a `{{ssm-secure:name}}` reference in `tokenInfo`, read from
//! Parameter Store with decryption and sent as go-oauth2 sends it: `Authorization: Bearer …`.

use super::web::{self, Failure};
use super::{
    MAX_FILE_BYTES, Staged, base_name, expected_sha256, info_text, is_directory_target,
    parameter_reference, resolve_reference, source_info,
};
use crate::aws::http::{HttpClient, HttpRequest};
use crate::runcommand::sources::Sources;
use serde_json::Value;
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// go-github's base URL.
const API: &str = "https://api.github.com";
/// Another API base: GitHub Enterprise (`https://host/api/v3`) and tests.
pub const API_URL_ENV: &str = "SSM_LITE_GITHUB_API_URL";
/// Most contents calls of one download (upstream recurses without a bound): a directory tree
/// of up to this many files and directories.
const MAX_CALLS: usize = 1000;
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Upstream `GitHubInfo`.
struct GitHubInfo {
    owner: String,
    repository: String,
    path: String,
    get_options: String,
    token_info: String,
    sha256: Option<String>,
}

fn parse(info: &str) -> Result<GitHubInfo, String> {
    let map = source_info(info)?;
    Ok(GitHubInfo {
        owner: info_text(&map, "owner")?,
        repository: info_text(&map, "repository")?,
        path: info_text(&map, "path")?,
        get_options: info_text(&map, "getOptions")?,
        token_info: info_text(&map, "tokenInfo")?,
        sha256: expected_sha256(&map)?,
    })
}

pub(super) fn download(info: &str, dest: &str, sources: &Sources) -> Result<(), String> {
    let api = std::env::var(API_URL_ENV).unwrap_or_else(|_| API.to_owned());
    download_from(&api, info, dest, sources)
}

/// [`download`] from the API at `api`.
pub(super) fn download_from(
    api: &str,
    info: &str,
    dest: &str,
    sources: &Sources,
) -> Result<(), String> {
    let info = parse(info).map_err(|e| {
        format!(
            "Source Info could not be unmarshalled for source type GitHub. Please check JSON \
             format of sourceInfo - {e}"
        )
    })?;
    let token = match info.token_info.is_empty() {
        true => None,
        false => Some(token(&info.token_info, sources)?),
    };
    if info.owner.is_empty() {
        return Err("Owner for GitHub SourceType must be specified".into());
    }
    if info.repository.is_empty() {
        return Err("Repository for GitHub SourceType must be specified".into());
    }
    let git_ref = git_ref(&info.get_options)?;
    let repo = Repo {
        http: sources.http.as_deref().ok_or_else(web::no_client)?,
        base: format!(
            "{}/repos/{}/{}/contents/",
            api.trim_end_matches('/'),
            info.owner,
            info.repository
        ),
        git_ref,
        auth: token
            .map(|t| vec![("Authorization".to_owned(), format!("Bearer {t}"))])
            .unwrap_or_default(),
        calls: Cell::new(0),
    };
    repo.fetch(&info.path, dest, false, info.sha256.as_deref())
}

/// Upstream `GetOAuthClient`: `tokenInfo` must hold `{{ ssm-secure:name }}`; its value must be a
/// SecureString.
fn token(token_info: &str, sources: &Sources) -> Result<String, String> {
    let reference = parameter_reference(token_info, true).ok_or(
        "Format of specifying ssm parameter used for token-parameter-name is incorrect. \
         Please specify parameter as '{{ ssm-secure:parameter-name }}'",
    )?;
    resolve_reference(&reference, sources.secrets.as_ref())
        .map_err(|e| format!("Could not resolve ssm parameter - [{reference}]. Error - {e}"))
}

/// Upstream `ParseCheckoutOptions` + `ParseGetOptions`: `branch:name` or `commitID:sha`; the
/// default is `master`.
fn git_ref(options: &str) -> Result<String, String> {
    if options.is_empty() {
        return Ok("master".into());
    }
    let parts: Vec<&str> = options.split(':').collect();
    let value = match parts.as_slice() {
        [kind, _] if *kind != "branch" && *kind != "commitID" => {
            return Err(
                "Type of option is unknown. Please use either 'branch' or 'commitID'.".into(),
            );
        }
        [_, ""] => return Err("Option for retrieving git content is empty".into()),
        [_, value] => value.trim(),
        [_] => return Err("getOptions is not specified in the right format".into()),
        _ => return Err("Only specify one required option".into()),
    };
    Ok(match value.is_empty() {
        true => "master".into(),
        false => value.into(),
    })
}

/// One repository at one ref, and the calls made so far.
struct Repo<'a> {
    http: &'a HttpClient,
    /// `…/repos/{owner}/{repo}/contents/`.
    base: String,
    git_ref: String,
    auth: Vec<(String, String)>,
    calls: Cell<usize>,
}

impl Repo<'_> {
    /// Upstream `GitHubResource.download`: `path` into `dest`; inside a directory download
    /// (`in_dir`) each file goes exactly to `dest`.
    fn fetch(
        &self,
        path: &str,
        dest: &str,
        in_dir: bool,
        sha256: Option<&str>,
    ) -> Result<(), String> {
        match self.contents(path)? {
            Value::Array(entries) => {
                for entry in entries {
                    let child = entry["path"].as_str().unwrap_or_default();
                    let target = super::below(dest, base_name(child))?;
                    self.fetch(child, &target.to_string_lossy(), true, None)?;
                }
                Ok(())
            }
            file if file["type"] == "file" => {
                let name = file["path"].as_str().unwrap_or(path);
                let target = match !in_dir && is_directory_target(dest) {
                    true => Path::new(dest).join(base_name(name)),
                    false => PathBuf::from(dest),
                };
                self.save(&file, &target, sha256)
            }
            _ => Err("Could not download from GitHub repository".into()),
        }
    }

    /// go-github `GetContents`: the decoded answer, or its error text for any other status.
    fn contents(&self, path: &str) -> Result<Value, String> {
        let calls = self.calls.get() + 1;
        if calls > MAX_CALLS {
            return Err(format!(
                "the GitHub download needs more than {MAX_CALLS} contents calls, the most \
                 ssm-lite makes for one step"
            ));
        }
        self.calls.set(calls);
        let url = format!(
            "{}{}?ref={}",
            self.base,
            escape(path.trim_end_matches('/'), true),
            escape(&self.git_ref, false)
        );
        let mut headers = self.auth.clone();
        headers.push(("Accept".into(), "application/vnd.github.v3+json".into()));
        let request = HttpRequest {
            method: "GET",
            url: &url,
            headers,
            body: &[],
            timeout: CALL_TIMEOUT,
        };
        let response = self
            .http
            .send(request)
            .map_err(|e| format!("no response received when calling git API. Error: {e}"))?;
        let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        if !(200..300).contains(&response.status) {
            // go-github `ErrorResponse.Error`: method, URL, status, the body's message, errors.
            let message = body["message"].as_str().unwrap_or_default();
            return Err(format!("GET {url}: {} {message} []", response.status));
        }
        match body {
            Value::Null => Err(format!("GET {url}: the answer is not JSON")),
            body => Ok(body),
        }
    }

    /// go-github `RepositoryContent.GetContent`, or the raw `download_url` when the API sends
    /// no content (`encoding: none`, files above 1 MB).
    fn save(&self, file: &Value, target: &Path, sha256: Option<&str>) -> Result<(), String> {
        let mut staged = Staged::create(target, MAX_FILE_BYTES)?;
        match file["encoding"].as_str().unwrap_or_default() {
            "base64" => {
                let text = file["content"]
                    .as_str()
                    .ok_or("malformed response: base64 encoding of null content")?;
                // GitHub wraps the base64 text in lines; Go's decoder skips the newlines.
                let joined: String = text.split(['\n', '\r']).collect();
                let bytes = crate::base64::decode(&joined)?;
                staged.write_all_text(&bytes)?;
            }
            "" => staged.write_all_text(file["content"].as_str().unwrap_or_default().as_bytes())?,
            "none" => {
                let url = file["download_url"]
                    .as_str()
                    .ok_or("unsupported content encoding: none, and no download_url")?;
                web::get(self.http, url, &self.auth, &mut staged).map_err(|e| match e {
                    Failure::Request(e) | Failure::Transfer(e) => e,
                })?;
            }
            other => return Err(format!("unsupported content encoding: {other}")),
        }
        staged.commit(sha256)
    }
}

/// Go's URL escaping: a path keeps `/` and the sub-delimiters `$&+,:;=@` (`url.URL.String`),
/// a query value keeps only the unreserved characters and writes a space as `+`
/// (`url.QueryEscape`).
fn escape(text: &str, path: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (path
                && matches!(
                    b,
                    b'/' | b'$' | b'&' | b'+' | b',' | b':' | b';' | b'=' | b'@'
                ));
        match (keep, b) {
            (true, _) => out.push(char::from(b)),
            (false, b' ') if !path => out.push('+'),
            (false, _) => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_options_as_upstream() {
        assert_eq!(git_ref("").unwrap(), "master");
        assert_eq!(git_ref("branch:dev").unwrap(), "dev");
        assert_eq!(git_ref("commitID: abc123 ").unwrap(), "abc123");
        assert_eq!(
            git_ref("tag:v1").unwrap_err(),
            "Type of option is unknown. Please use either 'branch' or 'commitID'."
        );
        assert_eq!(
            git_ref("branch:").unwrap_err(),
            "Option for retrieving git content is empty"
        );
        assert_eq!(
            git_ref("a:b:c").unwrap_err(),
            "Only specify one required option"
        );
        assert_eq!(
            git_ref("dev").unwrap_err(),
            "getOptions is not specified in the right format"
        );
    }

    #[test]
    fn paths_and_refs_are_escaped_as_go_does() {
        assert_eq!(escape("dir/a b?.sh", true), "dir/a%20b%3F.sh");
        assert_eq!(escape("feature/x y", false), "feature%2Fx+y");
    }
}
