//! `aws:downloadContent` (docs/protocol.md §3.12): fetches a file or a directory over HTTPS, from
//! S3, from GitHub or from an SSM document into the command's `downloads/` directory or an
//! absolute path, with upstream's inputs and texts (`agent/plugins/downloadcontent/`).
//!
//! Every file is written beside its destination under a temporary name and renamed into place
//! once complete ([`Staged`]), so a failed download never leaves a partial file where a later
//! step would run it.

mod github;
mod s3;
mod web;

use super::sources::{SecretSource, Sources};
use crate::document::{field, go_kind};
use regex_lite::Regex;
use serde_json::{Map, Value};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const PLUGIN: &str = "aws:downloadContent";
/// Most bytes of one downloaded file, from any source (upstream has no limit): far above any
/// script or document, and a bound on what a mistyped URL can write to a device's disk.
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// Upstream `downloadsDir`: relative destinations are under `<command dir>/downloads/`.
const DOWNLOADS_DIR: &str = "downloads";

/// The inputs of one run (upstream `DownloadContentPlugin`).
#[derive(Debug, PartialEq)]
struct Input {
    source_type: String,
    /// A JSON object as text: the console and the CLI send a string, documents an object.
    source_info: String,
    destination_path: String,
}

/// Runs one property set of an `aws:downloadContent` step: `Ok` is its stdout, `Err` its stderr
/// (upstream's `MarkAsFailed` text), both whole.
pub fn run(inputs: &Value, command_dir: &Path, sources: &Sources) -> Result<String, String> {
    let input = parse_input(inputs)?;
    let destination = destination(&input.destination_path, command_dir);
    let info = &input.source_info;
    match input.source_type.as_str() {
        "HTTP" => web::download(info, &destination, sources)?,
        "S3" => s3::download(info, &destination, sources)?,
        "GitHub" => github::download(info, &destination, sources)?,
        "SSMDocument" => download_document(info, &destination, sources)?,
        _ => {
            return Err("ssm-lite does not support sourceType Git; use GitHub, HTTP or S3".into());
        }
    };
    Ok(format!("Content downloaded to {destination}"))
}

/// Upstream `parseAndValidateInput`: string fields (keys matched as Go does, ignoring case), a
/// `sourceInfo` object turned into its JSON text.
fn parse_input(inputs: &Value) -> Result<Input, String> {
    let malformed =
        |detail: String| format!("invalid format in plugin properties {inputs}; \nerror {detail}");
    let Some(map) = inputs.as_object() else {
        return Err(malformed(format!(
            "json: cannot unmarshal {} into Go value of type downloadcontent.DownloadContentPlugin",
            go_kind(inputs)
        )));
    };
    let text = |key: &str| match field(map, key) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v @ Value::Object(_)) if key == "sourceInfo" => Ok(v.to_string()),
        Some(v) => Err(malformed(format!(
            "json: cannot unmarshal {} into Go struct field DownloadContentPlugin.{key} of type string",
            go_kind(v)
        ))),
    };
    let input = Input {
        source_type: text("sourceType")?,
        source_info: text("sourceInfo")?,
        destination_path: text("destinationPath")?,
    };
    let invalid = |why: &str| Err(format!("invalid input: {why}"));
    match input.source_type.as_str() {
        "" => invalid("SourceType must be specified"),
        "Git" | "HTTP" | "GitHub" | "S3" | "SSMDocument" if input.source_info.is_empty() => {
            invalid("SourceInfo must be specified")
        }
        "Git" | "HTTP" | "GitHub" | "S3" | "SSMDocument" => Ok(input),
        _ => invalid("Unsupported source type"),
    }
}

/// Absolute → as given; otherwise `<command dir>/downloads/<path>`, joined as text so that a
/// trailing `/` (which means "into this directory") stays.
fn destination(path: &str, command_dir: &Path) -> String {
    if Path::new(path).is_absolute() {
        return path.to_owned();
    }
    format!("{}/{path}", command_dir.join(DOWNLOADS_DIR).display())
}

/// Upstream's test for "the file goes inside": an existing directory, or a path ending in `/`.
fn is_directory_target(dest: &str) -> bool {
    dest.ends_with('/') || Path::new(dest).is_dir()
}

/// `sourceInfo` as an object (upstream unmarshals it into a struct; keys match ignoring case).
fn source_info(info: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(info) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!(
            "json: cannot unmarshal {} into Go value of type struct",
            go_kind(&other)
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// A string field of `sourceInfo`, trimmed; absent is empty.
fn info_text(info: &Map<String, Value>, key: &str) -> Result<String, String> {
    match field(info, key) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.trim().to_owned()),
        Some(v) => Err(format!(
            "json: cannot unmarshal {} into Go struct field .{key} of type string",
            go_kind(v)
        )),
    }
}

/// The optional `sha256` of `sourceInfo` (an ssm-lite addition upstream ignores): 64 hex digits,
/// lower-cased.
fn expected_sha256(info: &Map<String, Value>) -> Result<Option<String>, String> {
    let text = info_text(info, "sha256")?;
    if text.is_empty() {
        return Ok(None);
    }
    match text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        true => Ok(Some(text.to_ascii_lowercase())),
        false => Err(format!(
            "sha256 in sourceInfo must be 64 hexadecimal digits, not {text:?}"
        )),
    }
}

/// Upstream `ssmParamReferencePattern`: the first `{{ ssm:name }}` or `{{ ssm-secure:name }}`
/// in `text`, as the reference (`ssm-secure:name`).
fn parameter_reference(text: &str, secure_only: bool) -> Option<String> {
    let prefixes = if secure_only {
        "ssm-secure:"
    } else {
        "ssm-secure:|ssm:"
    };
    let pattern = format!(r"\{{\{{\s*((?:{prefixes})[\w\-./]+)\s*\}}\}}");
    let re = Regex::new(&pattern).expect("a constant pattern");
    re.captures(text).map(|c| c[1].to_owned())
}

/// Resolves `reference` (`ssm-secure:name` or `ssm:name`) with decryption and upstream's prefix
/// check (`validateParameterReferencePrefix`); the value is never logged.
fn resolve_reference(reference: &str, secrets: &dyn SecretSource) -> Result<String, String> {
    let (prefix, name) = reference.split_once(':').unwrap_or(("", reference));
    let parameter = secrets.get_decrypted(name)?;
    let secure = parameter.kind == "SecureString";
    match (prefix, secure) {
        ("ssm-secure", false) => Err(format!(
            "secure prefix ssm-secure: is used for a non-secure type {}",
            parameter.kind
        )),
        ("ssm", true) => Err(format!(
            "non-secure prefix ssm: is used for a secure type {}",
            parameter.kind
        )),
        _ => Ok(parameter.value),
    }
}

/// `SSMDocument` (upstream `ssmdocresource`): `{"name": "Name[:version]"}`, the content as the
/// service returns it, into `<dest>/<name>.json` when `dest` is a directory (whatever the
/// document's format: upstream always names it `.json`), else into `dest`.
fn download_document(info: &str, dest: &str, sources: &Sources) -> Result<(), String> {
    let name = source_info(info)
        .and_then(|map| info_text(&map, "name"))
        .map_err(|_| {
            "SSMDocument SourceInfo parsing failed. SourceInfo could not be unmarshalled for \
             SourceType SSMDocument. Please check JSON format of SourceInfo"
                .to_owned()
        })?;
    if name.is_empty() {
        return Err("SSM Document name in SourceType must be specified".into());
    }
    let (doc, version) = document_name_and_version(&name);
    let document = sources.documents.get_document(doc, version)?;
    let target = match is_directory_target(dest) {
        true => Path::new(dest).join(format!("{}.json", base_name(doc))),
        false => PathBuf::from(dest),
    };
    let mut staged = Staged::create(&target, MAX_FILE_BYTES)?;
    staged.write_all_text(document.content.as_bytes())?;
    staged.commit(None)
}

/// Upstream `docparser.ParseDocumentNameAndVersion`: `Name:3` or `arn:…:document/Name:3`.
fn document_name_and_version(name: &str) -> (&str, Option<&str>) {
    let base = base_name(name);
    match base.split(':').nth(1) {
        Some(version) => {
            let doc = name.strip_suffix(&format!(":{version}")).unwrap_or(name);
            (doc, Some(version).filter(|v| !v.is_empty()))
        }
        None => (name, None),
    }
}

/// Go `filepath.Base`: the last element, ignoring trailing `/`.
fn base_name(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// `relative` (a GitHub entry's name, an S3 key below its folder) under `dest`, refused when a
/// `..` would take it outside: the names come from the network.
fn below(dest: &str, relative: &str) -> Result<PathBuf, String> {
    let escapes = Path::new(relative)
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)));
    match escapes || relative.is_empty() {
        true => Err(format!(
            "{relative:?} is not a name inside {dest}; ssm-lite does not write it"
        )),
        false => Ok(Path::new(dest).join(relative)),
    }
}

/// Upstream `MakeDirs`: missing directories are made 0700; existing ones are left as they are.
fn make_dirs(dir: &Path) -> Result<(), String> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))
}

/// An HTTPS GET of `url` into `dest` for another plugin (`aws:configurePackage`): redirects
/// followed, at most [`MAX_FILE_BYTES`], and put in place only when its SHA-256 is `sha256`
/// (lower-case hex). `Err` says what failed.
pub(super) fn fetch_verified(
    http: &crate::aws::http::HttpClient,
    url: &str,
    dest: &Path,
    sha256: &str,
) -> Result<(), String> {
    let mut staged = Staged::create(dest, MAX_FILE_BYTES)?;
    web::get(http, url, &[], &mut staged).map_err(|e| match e {
        web::Failure::Request(m) | web::Failure::Transfer(m) => m,
    })?;
    let got = crate::aws::sigv4::hex(staged.hash.clone().finish().as_ref());
    if got != sha256 {
        return Err(format!(
            "the file has SHA-256 {got}, not {sha256} as the package manifest says; it was not kept"
        ));
    }
    staged.commit(None)
}

/// A file on its way to `dest`: written beside it under a temporary name, at most `limit` bytes,
/// SHA-256 hashed as it goes; [`Staged::commit`] renames it into place, dropping it removes it.
struct Staged {
    dest: PathBuf,
    tmp: PathBuf,
    file: File,
    hash: ring::digest::Context,
    written: u64,
    limit: u64,
    /// Why a write failed (disk full, over the limit): the download's error, not the network's.
    failure: Option<String>,
}

impl Staged {
    fn create(dest: &Path, limit: u64) -> Result<Staged, String> {
        let dir = dest.parent().unwrap_or(Path::new("/"));
        make_dirs(dir)?;
        let name = dest
            .file_name()
            .map_or("download".into(), |n| n.to_string_lossy());
        let tmp = dir.join(format!(
            ".{name}.{}.part",
            crate::random::between(0, u32::MAX.into())
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        Ok(Staged {
            dest: dest.to_owned(),
            tmp,
            file,
            hash: ring::digest::Context::new(&ring::digest::SHA256),
            written: 0,
            limit,
            failure: None,
        })
    }

    /// Writes content held in memory (a GitHub file, an SSM document).
    fn write_all_text(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.write_all(bytes)
            .map_err(|e| self.failure.clone().unwrap_or_else(|| e.to_string()))
    }

    /// Checks the SHA-256 when one is `expected`, makes the file 0700 (upstream
    /// `SetFilePermissions`: downloaded scripts run) and renames it into place.
    fn commit(self, expected: Option<&str>) -> Result<(), String> {
        let dest = self.dest.display().to_string();
        self.file
            .sync_all()
            .map_err(|e| format!("cannot write {dest}: {e}"))?;
        let got = crate::aws::sigv4::hex(self.hash.clone().finish().as_ref());
        if let Some(want) = expected.filter(|want| *want != got) {
            return Err(format!(
                "the content for {dest} has SHA-256 {got}, not {want} as sourceInfo's sha256 \
                 says; it was not kept"
            ));
        }
        fs::set_permissions(&self.tmp, fs::Permissions::from_mode(0o700))
            .and_then(|()| fs::rename(&self.tmp, &self.dest))
            .map_err(|e| format!("cannot put the download in place at {dest}: {e}"))
    }
}

impl Write for Staged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.limit {
            let why = format!(
                "{} is larger than {} bytes, the most ssm-lite downloads into one file",
                self.dest.display(),
                self.limit
            );
            self.failure = Some(why.clone());
            return Err(io::Error::other(why));
        }
        let n = self.file.write(buf).inspect_err(|e| {
            self.failure = Some(format!("cannot write {}: {e}", self.dest.display()));
        })?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // After a commit the temporary name is gone and this fails harmlessly.
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests;
