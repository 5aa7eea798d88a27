//! `aws:runDocument` (upstream `agent/plugins/rundocument/`, docs/protocol.md §3.13): runs the
//! steps of another Command document, an SSM document fetched with `ssm:GetDocument` or a local
//! file, inside this step, and reports them as this one step.
//!
//! As upstream: the sub-document's steps run one by one with the document's control flow (exit
//! codes 168/169, `onFailure`, `finallyStep`), without output destinations of their own; each
//! one's `standardOutput` and `standardError` join this step's streams with no separator (its
//! IOHandler's writers are open), their statuses merge into this step's, and the exit code is
//! 1 only when this plugin itself fails (a sub-step that fails to run, or a step the document
//! refuses); a failed script leaves it 0. Three levels of `aws:runDocument` may nest.

use super::engine::apply_control_flow;
use super::output::RunFiles;
use super::reply::{Head, PluginResult, Status};
use super::steps::{self, Output, Run, StepEnv, Uploads};
use crate::document::parameter_store::Resolver;
use crate::document::{self, Document, References, Step, Verdict, field, go_kind, go_value, yaml};
use crate::exec::Captured;
use crate::state::{ensure_private_dir, write_atomic};
use crate::sys::Pid;
use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const PLUGIN: &str = "aws:runDocument";
/// Upstream `executeCommandMaxDepth`: the deepest `aws:runDocument` that runs.
const MAX_DEPTH: usize = 3;
/// Upstream's document that does nothing: the step succeeds without a call.
const NOOP_DOCUMENT: &str = "AWS-Noop";
const SSM_DOCUMENT: &str = "SSMDocument";
const LOCAL_PATH: &str = "LocalPath";
/// Where `aws:downloadContent` puts files, under the command's (or sub-document's) directory.
const DOWNLOADS: &str = "downloads";

/// The plugin's inputs (upstream `RunDocumentPluginInput`).
#[derive(Debug, PartialEq)]
struct Input {
    ssm_document: bool,
    path: String,
    parameters: Option<Value>,
}

/// Runs one property set of an `aws:runDocument` step `depth` levels down.
pub(super) fn run(
    step: &Step,
    index: usize,
    inputs: &Value,
    env: &StepEnv<'_>,
    on_start: &mut dyn FnMut(Pid),
    depth: usize,
) -> Run {
    let run_path = steps::run_path(step, index, "");
    let dir = env.command_dir.join(&run_path);
    if let Err(e) = ensure_private_dir(&dir) {
        return Run::failed(format!(
            "cannot make the directory of step {}: {e}",
            step.id
        ));
    }
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let files = RunFiles::of(step, &run_path, &out_path, &err_path);
    let uploads = Uploads::start(env, &files);
    let mut outcome = Outcome {
        status: None,
        code: 0,
        stdout: Stream::create(out_path.clone()),
        stderr: Stream::create(err_path.clone()),
    };
    execute(inputs, env, on_start, depth, &dir, &mut outcome);
    outcome.finish(step, uploads, env)
}

/// Upstream `execute` and `runDocument`, in its order.
fn execute(
    inputs: &Value,
    env: &StepEnv<'_>,
    on_start: &mut dyn FnMut(Pid),
    depth: usize,
    dir: &Path,
    out: &mut Outcome,
) {
    let input = match decode(inputs) {
        Ok(input) => input,
        Err(text) => return out.fail(&text),
    };
    let level = depth + 1;
    if level > MAX_DEPTH {
        return out.fail(&format!(
            "Maximum depth for document execution exceeded. Maximum depth permitted - {MAX_DEPTH} and current depth - {level}"
        ));
    }
    if input.path == NOOP_DOCUMENT {
        out.status = Some(Status::Success);
        return;
    }
    let text = match input.ssm_document {
        // Upstream goes on after a failed fetch, with no file: "File is empty!" follows.
        true => fetch(&input.path, env, dir).unwrap_or_else(|e| {
            out.fail(&e);
            Ok(String::new())
        }),
        false => read_local(&local_path(&input.path, env.command_dir)),
    };
    let prepared = text.and_then(|text| prepare(&text, input.parameters.as_ref(), env));
    let document = match prepared {
        Ok(document) => document,
        Err(e) => {
            return out.fail(&format!(
                "There was an error while preparing documents - {e}"
            ));
        }
    };
    let sub_env = StepEnv {
        command_dir: dir,
        outputs: &[],
        ..*env
    };
    run_document(&document, &sub_env, on_start, level, out);
}

/// Upstream `parseAndValidateInput`: Go's decoding of the properties, then its checks.
fn decode(inputs: &Value) -> Result<Input, String> {
    let unreadable = |error: String| {
        format!(
            "invalid format in plugin properties {}; \nerror {error}",
            go_value(inputs)
        )
    };
    let empty = Map::new();
    let map = match inputs {
        Value::Null => &empty,
        Value::Object(map) => map,
        other => {
            return Err(unreadable(format!(
                "json: cannot unmarshal {} into Go value of type rundocument.RunDocumentPluginInput",
                go_kind(other)
            )));
        }
    };
    let text = |key: &str| match field(map, key) {
        None => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(other) => Err(unreadable(format!(
            "json: cannot unmarshal {} into Go struct field RunDocumentPluginInput.{key} of type string",
            go_kind(other)
        ))),
    };
    let (document_type, path) = (text("documentType")?, text("documentPath")?);
    let invalid = |why: &str| Err(format!("invalid input: {why}"));
    if document_type.is_empty() {
        return invalid("Document Type must be specified to either by SSMDocument or LocalPath.");
    }
    if document_type != SSM_DOCUMENT && document_type != LOCAL_PATH {
        return invalid("Document type specified in invalid");
    }
    if path.is_empty() {
        return invalid("Document Path must be provided");
    }
    Ok(Input {
        ssm_document: document_type == SSM_DOCUMENT,
        path,
        parameters: field(map, "documentParameters").cloned(),
    })
}

/// Upstream `ParseDocumentNameAndVersion`: a version follows the first `:` of the path's last
/// `/` element (`Doc:3`, `arn:…:document/Doc:$LATEST`); none means `$DEFAULT`.
fn name_and_version(path: &str) -> (&str, &str) {
    let base = path.rsplit('/').next().unwrap_or(path);
    let version = base.split(':').nth(1).unwrap_or("");
    let name = path.strip_suffix(&format!(":{version}")).unwrap_or(path);
    (name, version)
}

/// `GetDocument`, then the content kept as upstream does, in `<dir>/downloads/<name>.json`. The
/// outer `Err` is the fetch's failure, the inner one a failure to keep the file.
fn fetch(path: &str, env: &StepEnv<'_>, dir: &Path) -> Result<Result<String, String>, String> {
    let (name, version) = name_and_version(path);
    let version = (!version.is_empty()).then_some(version);
    let document = env.sources.documents.get_document(name, version)?;
    let base = match name.rsplit('/').next() {
        Some(base) if !matches!(base, "" | "." | "..") => base,
        _ => "document",
    };
    let downloads = dir.join(DOWNLOADS);
    let file = downloads.join(format!("{base}.json"));
    let kept = ensure_private_dir(&downloads)
        .and_then(|()| write_atomic(&file, document.content.as_bytes(), false));
    Ok(kept.map(|()| document.content).map_err(|e| e.to_string()))
}

/// An absolute path as given; a relative one under the document's `downloads` directory, where
/// `aws:downloadContent` writes.
fn local_path(path: &str, command_dir: &Path) -> PathBuf {
    match Path::new(path).is_absolute() {
        true => PathBuf::from(path),
        false => command_dir.join(DOWNLOADS).join(path),
    }
}

/// The file's text; a missing file reads as empty, as upstream's `ReadAllText` has it.
fn read_local(path: &Path) -> Result<String, String> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut bytes = Vec::new();
    let limit = yaml::MAX_INPUT_BYTES as u64;
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "{} is larger than {limit} bytes, the most ssm-lite reads as a document",
            path.display()
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

/// Upstream `prepareDocumentForExecution`: the parameters, the file, then the parsed document,
/// its `{{ssm:…}}` references resolved (`ValidateSSMParameters`, `Resolve`).
fn prepare(text: &str, parameters: Option<&Value>, env: &StepEnv<'_>) -> Result<Document, String> {
    let parameters = document_parameters(parameters)?;
    if text.is_empty() {
        return Err("File is empty!".to_owned());
    }
    let content = document::content_from_text(text).map_err(|e| e.to_string())?;
    let mut resolver = Resolver::new(env.sources.parameters.as_ref());
    let references = References::Resolve(&mut resolver);
    document::parse_sub_document(&content, &parameters, references).map_err(|e| e.to_string())
}

/// `documentParameters`: an object, or a string holding one in JSON or YAML; `null` values are
/// dropped so that defaults apply.
fn document_parameters(value: Option<&Value>) -> Result<Map<String, Value>, String> {
    let mut parameters = match value {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(Value::String(text)) => parameters_from_text(text)?,
        Some(_) => return Err("parameter type specified to run document is unknown".to_owned()),
    };
    parameters.retain(|_, v| !v.is_null());
    Ok(parameters)
}

fn parameters_from_text(text: &str) -> Result<Map<String, Value>, String> {
    // Go decodes into a map: JSON that is not an object is a JSON error.
    let json_error = match serde_json::from_str(text) {
        Ok(Value::Object(map)) => return Ok(map),
        Ok(other) => format!(
            "the parameters are {}, not an object",
            document::kind(&other)
        ),
        Err(e) => e.to_string(),
    };
    let yaml_error = match yaml::to_json(text) {
        Ok(Value::Object(map)) => return Ok(map),
        Ok(Value::Null) => return Ok(Map::new()),
        Ok(other) => format!(
            "the parameters are {}, not a mapping",
            document::kind(&other)
        ),
        Err(e) => e.to_string(),
    };
    Err(format!(
        "Unmarshalling document parameters failed. Please make sure the parameters are specified in the right formatJSON format error - {json_error}, YAML format error - {yaml_error}."
    ))
}

/// Upstream runs the sub-document through its executer: `RunPlugins`' control flow, with the
/// results merged as `runDocument` merges them.
fn run_document(
    document: &Document,
    env: &StepEnv<'_>,
    on_start: &mut dyn FnMut(Pid),
    level: usize,
    out: &mut Outcome,
) {
    let mut exit_condition = false;
    let last = document.steps.len().saturating_sub(1);
    for (index, step) in document.steps.iter().enumerate() {
        // A skipped step's text is its `output` only, which upstream does not merge.
        if exit_condition && !(step.finally_step && index == last) {
            out.merge_status(Status::Skipped);
            continue;
        }
        if let Some(reason) = env.stop.reason() {
            out.absorb(&steps::stopped_before_start(step, reason));
            continue;
        }
        let mut result = match &step.verdict {
            Verdict::Skip(_) => {
                out.merge_status(Status::Skipped);
                continue;
            }
            // Upstream's `failStep` sets the result's `Error`, which this plugin fails with.
            Verdict::Fail(text) => {
                out.fail(text);
                continue;
            }
            Verdict::Run => steps::run_nested(step, env, on_start, level),
        };
        exit_condition |= apply_control_flow(step, &mut result);
        out.absorb(&result);
        if result.status == Status::SuccessAndReboot {
            break;
        }
    }
}

/// This step's result as upstream's IOHandler builds it while the plugin runs.
struct Outcome {
    status: Option<Status>,
    code: i32,
    stdout: Stream,
    stderr: Stream,
}

impl Outcome {
    /// Upstream `MarkAsFailed`.
    fn fail(&mut self, text: &str) {
        if self.code == 0 {
            self.code = 1;
        }
        self.status = Some(Status::Failed);
        self.stderr.write(text);
    }

    /// Upstream `MergeResultStatus`, where no status yet takes the other.
    fn merge_status(&mut self, status: Status) {
        self.status = Some(self.status.map_or(status, |s| s.merge(status)));
    }

    /// One sub-step's result: its streams as they are, then its status.
    fn absorb(&mut self, result: &PluginResult) {
        self.stdout.write(&result.standard_output);
        self.stderr.write(&result.standard_error);
        self.merge_status(result.status);
    }

    /// Closes the files, finishes the uploads (a failure is a line of stderr, as for scripts),
    /// and makes the run's result.
    fn finish(self, step: &Step, uploads: Uploads<'_>, env: &StepEnv<'_>) -> Run {
        let (out_path, err_path) = (self.stdout.path.clone(), self.stderr.path.clone());
        let stdout = self.stdout.into_captured();
        let mut err = Output::new(&err_path, self.stderr.into_captured());
        let s3 = uploads.s3.clone();
        let uploaded = uploads.finish(step, |line| err.own_line(line));
        steps::clean_up(env, uploaded, &[&out_path, &err_path]);
        Run {
            status: self.status.unwrap_or(Status::Success),
            code: self.code,
            stdout: Head {
                len: usize::try_from(stdout.total).unwrap_or(usize::MAX),
                bytes: stdout.head,
            },
            stderr: err.head,
            s3,
        }
    }
}

/// One of this step's streams: each text right after the last, in its file and in the reply's
/// share.
struct Stream {
    path: PathBuf,
    file: Option<File>,
    captured: Captured,
}

impl Stream {
    fn create(path: PathBuf) -> Stream {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path);
        let mut captured = Captured::default();
        let file = file
            .map_err(|e| captured.write_error = Some(format!("{}: {e}", path.display())))
            .ok();
        Stream {
            path,
            file,
            captured,
        }
    }

    fn write(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        let mut head = Head {
            bytes: std::mem::take(&mut self.captured.head),
            len: usize::try_from(self.captured.total).unwrap_or(usize::MAX),
        };
        head.push(text.as_bytes());
        self.captured.head = head.bytes;
        self.captured.total += text.len() as u64;
        if let Some(file) = self.file.as_mut()
            && let Err(e) = file.write_all(text.as_bytes())
        {
            log::warn!("cannot write {}: {e}", self.path.display());
            self.captured.write_error = Some(format!("{}: {e}", self.path.display()));
            self.file = None;
        }
    }

    fn into_captured(self) -> Captured {
        self.captured
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::StopToken;
    use crate::runcommand::sources::{DocumentSource, RemoteDocument, Sources};
    use crate::state::testdir::TestDir;
    use serde_json::json;
    use std::sync::{Arc, Mutex};

    /// Documents by name, counting the calls.
    #[derive(Default)]
    struct Documents {
        stored: Vec<(String, String)>,
        calls: Mutex<Vec<(String, Option<String>)>>,
    }

    impl DocumentSource for Documents {
        fn get_document(
            &self,
            name: &str,
            version: Option<&str>,
        ) -> Result<RemoteDocument, String> {
            let call = (name.to_owned(), version.map(str::to_owned));
            self.calls.lock().unwrap().push(call);
            let (_, content) = self.stored.iter().find(|(n, _)| n == name).ok_or_else(|| {
                "InvalidDocument: The specified document does not exist.".to_owned()
            })?;
            Ok(RemoteDocument {
                name: name.to_owned(),
                document_version: "1".into(),
                document_format: "YAML".into(),
                content: content.clone(),
            })
        }
    }

    fn run_document_step(t: &TestDir, inputs: Value, documents: Arc<Documents>) -> PluginResult {
        let step = Step {
            id: "sub".into(),
            plugin: PLUGIN.into(),
            inputs: vec![inputs],
            verdict: Verdict::Run,
            on_failure: None,
            on_success: None,
            finally_step: false,
        };
        let mut sources = Sources::unavailable("tests");
        sources.documents = documents;
        let stop = StopToken::new();
        let env = StepEnv {
            command_dir: t.path(),
            env: &[],
            stop: &stop,
            max_output_bytes: 1 << 20,
            cleanup: crate::runcommand::output::OutputCleanup::Keep,
            outputs: &[],
            sources: &sources,
            association: None,
        };
        steps::run_step(&step, &env, &mut |_| {})
    }

    const SHELL_DOC: &str = "schemaVersion: '2.2'
parameters:
  Who: {type: String, default: world, allowedValues: [world, moon]}
mainSteps:
  - action: aws:runShellScript
    name: one
    inputs: {runCommand: ['echo hello {{ Who }}']}
  - action: aws:runShellScript
    name: two
    inputs: {runCommand: ['echo oops >&2', 'exit 3']}
  - action: aws:runShellScript
    name: three
    inputs: {runCommand: ['echo three']}
";

    /// Streams joined with no separator, statuses merged, exit code 0 for a failed script.
    #[test]
    fn a_sub_documents_steps_merge_into_this_step_as_upstream() {
        let t = TestDir::new("rundocument");
        let documents = Arc::new(Documents {
            stored: vec![("Shell".into(), SHELL_DOC.into())],
            ..Documents::default()
        });
        let inputs = json!({"documentType": "SSMDocument", "documentPath": "Shell:$LATEST",
            "documentParameters": "Who: moon"});
        let r = run_document_step(&t, inputs, documents.clone());
        assert_eq!((r.status, r.code), (Status::Failed, 0));
        assert_eq!(r.standard_output, "hello moon\nthree\n");
        assert_eq!(
            r.standard_error,
            "oops\nfailed to run commands: exit status 3"
        );
        assert_eq!(
            *documents.calls.lock().unwrap(),
            [("Shell".to_owned(), Some("$LATEST".to_owned()))]
        );
        let dir = t.path().join("awsrunDocument/sub");
        assert_eq!(
            fs::read_to_string(dir.join("stdout")).unwrap(),
            r.standard_output
        );
        assert_eq!(
            fs::read_to_string(dir.join("downloads/Shell.json")).unwrap(),
            SHELL_DOC
        );
        let sub = dir.join("awsrunShellScript/one/stdout");
        assert_eq!(fs::read_to_string(sub).unwrap(), "hello moon\n");
    }

    #[test]
    fn an_unknown_document_fails_with_upstreams_two_texts() {
        let t = TestDir::new("rundocument");
        let documents = Arc::new(Documents::default());
        let inputs = json!({"documentType": "SSMDocument", "documentPath": "Nope"});
        let r = run_document_step(&t, inputs, documents.clone());
        assert_eq!((r.status, r.code), (Status::Failed, 1));
        assert_eq!(
            r.standard_error,
            "InvalidDocument: The specified document does not exist.There was an error while preparing documents - File is empty!"
        );
        assert_eq!(documents.calls.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_parameter_outside_allowed_values_fails_with_the_validators_text() {
        let t = TestDir::new("rundocument");
        let documents = Arc::new(Documents {
            stored: vec![("Shell".into(), SHELL_DOC.into())],
            ..Documents::default()
        });
        let inputs = json!({"documentType": "SSMDocument", "documentPath": "Shell",
            "documentParameters": {"Who": "sun"}});
        let r = run_document_step(&t, inputs, documents);
        assert_eq!((r.status, r.code), (Status::Failed, 1));
        assert_eq!(
            r.standard_error,
            "There was an error while preparing documents - all errors during param validation errors: error thrown in 'AllowedValueParamValidator' while validating parameter /Who/: parameter value /sun/ is not in the allowed list [world moon]"
        );
        assert_eq!(r.standard_output, "");
    }

    /// A local document that runs itself: levels 1 to 3 run, the fourth fails, and only this
    /// plugin's own failures set code 1.
    #[test]
    fn nesting_stops_at_upstreams_depth_of_three() {
        let t = TestDir::new("rundocument");
        let path = t.path().join("self.yaml");
        let doc = format!(
            "schemaVersion: '2.2'\nmainSteps:\n  - action: aws:runShellScript\n    name: say\n    inputs: {{runCommand: [echo level]}}\n  - action: aws:runDocument\n    name: again\n    inputs: {{documentType: LocalPath, documentPath: '{}'}}\n",
            path.display()
        );
        fs::write(&path, doc).unwrap();
        let inputs = json!({"documentType": "LocalPath", "documentPath": path.to_str().unwrap()});
        let r = run_document_step(&t, inputs, Arc::new(Documents::default()));
        assert_eq!(r.status, Status::Failed);
        assert_eq!(r.standard_output, "level\nlevel\nlevel\n");
        assert_eq!(
            r.standard_error,
            "Maximum depth for document execution exceeded. Maximum depth permitted - 3 and current depth - 4"
        );
    }

    #[test]
    fn a_missing_local_document_and_aws_noop() {
        let t = TestDir::new("rundocument");
        let inputs = json!({"documentType": "LocalPath", "documentPath": "absent.yaml"});
        let r = run_document_step(&t, inputs, Arc::new(Documents::default()));
        assert_eq!((r.status, r.code), (Status::Failed, 1));
        assert_eq!(
            r.standard_error,
            "There was an error while preparing documents - File is empty!"
        );
        let inputs = json!({"documentType": "SSMDocument", "documentPath": "AWS-Noop"});
        let documents = Arc::new(Documents::default());
        let r = run_document_step(&t, inputs, documents.clone());
        assert_eq!(
            (r.status, r.code, r.output.as_str()),
            (Status::Success, 0, "")
        );
        assert!(documents.calls.lock().unwrap().is_empty());
    }

    use std::fs;

    #[test]
    fn inputs_are_decoded_and_checked_with_upstreams_words() {
        let ok = decode(
            &json!({"documentType": "SSMDocument", "documentPath": "Doc:2", "documentParameters": {"a": "b"}}),
        );
        assert_eq!(
            ok,
            Ok(Input {
                ssm_document: true,
                path: "Doc:2".into(),
                parameters: Some(json!({"a": "b"})),
            })
        );
        // Go's decoding matches field names ignoring case.
        let ok = decode(&json!({"DocumentType": "LocalPath", "DOCUMENTPATH": "d.yaml"})).unwrap();
        assert!(!ok.ssm_document);
        let cases = [
            (
                json!(null),
                "invalid input: Document Type must be specified to either by SSMDocument or LocalPath.",
            ),
            (
                json!({"documentType": "S3", "documentPath": "x"}),
                "invalid input: Document type specified in invalid",
            ),
            (
                json!({"documentType": "LocalPath"}),
                "invalid input: Document Path must be provided",
            ),
            (
                json!({"documentType": 5}),
                "invalid format in plugin properties map[documentType:5]; \nerror json: cannot unmarshal number into Go struct field RunDocumentPluginInput.documentType of type string",
            ),
            (
                json!("text"),
                "invalid format in plugin properties text; \nerror json: cannot unmarshal string into Go value of type rundocument.RunDocumentPluginInput",
            ),
        ];
        for (inputs, text) in cases {
            assert_eq!(decode(&inputs), Err(text.to_owned()));
        }
    }

    #[test]
    fn names_and_versions_split_as_upstream() {
        assert_eq!(name_and_version("Doc"), ("Doc", ""));
        assert_eq!(name_and_version("Doc:3"), ("Doc", "3"));
        assert_eq!(name_and_version("Doc:$LATEST"), ("Doc", "$LATEST"));
        assert_eq!(
            name_and_version("arn:aws:ssm:us-east-1:123456789012:document/Doc:2"),
            ("arn:aws:ssm:us-east-1:123456789012:document/Doc", "2")
        );
        assert_eq!(
            name_and_version("arn:aws:ssm:us-east-1:123456789012:document/Doc"),
            ("arn:aws:ssm:us-east-1:123456789012:document/Doc", "")
        );
    }

    #[test]
    fn parameters_come_as_an_object_or_json_or_yaml_text() {
        let want: Map<String, Value> = json!({"a": "x", "n": 2}).as_object().unwrap().clone();
        let given = json!({"a": "x", "n": 2, "gone": null});
        assert_eq!(document_parameters(Some(&given)), Ok(want.clone()));
        let text = json!(r#"{"a": "x", "n": 2}"#);
        assert_eq!(document_parameters(Some(&text)), Ok(want.clone()));
        let text = json!("a: x\nn: 2\ngone: ~\n");
        assert_eq!(document_parameters(Some(&text)), Ok(want));
        assert_eq!(document_parameters(Some(&json!(""))), Ok(Map::new()));
        assert_eq!(
            document_parameters(Some(&json!([1]))),
            Err("parameter type specified to run document is unknown".to_owned())
        );
        let err = document_parameters(Some(&json!("- a\n- b\n"))).unwrap_err();
        assert!(
            err.starts_with("Unmarshalling document parameters failed. Please make sure the parameters are specified in the right formatJSON format error - "),
            "{err}"
        );
        assert!(err.contains("YAML format error - the parameters are an array, not a mapping."));
    }

    #[test]
    fn local_paths_are_under_downloads_unless_absolute() {
        let dir = Path::new("/state/orchestration/cmd");
        assert_eq!(
            local_path("scripts/doc.yaml", dir),
            PathBuf::from("/state/orchestration/cmd/downloads/scripts/doc.yaml")
        );
        assert_eq!(
            local_path("/opt/doc.json", dir),
            PathBuf::from("/opt/doc.json")
        );
    }
}
