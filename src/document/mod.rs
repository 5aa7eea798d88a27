//! SSM Command documents: schema versions, parameters, preconditions, and the step list the
//! engine runs. Pure data in, data out: no I/O and no processes here.
//!
//! Decoding follows Go's `encoding/json`, which upstream uses: struct fields match keys
//! case-insensitively (`Properties` = `properties`), unknown keys are ignored and `null` reads as
//! absent. Map keys (plugin names in `runtimeConfig`, parameter names, precondition operators)
//! match exactly, as in Go. When a key occurs in two spellings, the exact one wins (Go keeps the
//! later one in the text, which a parsed `Value` no longer shows).
//!
//! Step order: `mainSteps` (2.x) in array order. For `runtimeConfig` (1.x) upstream iterates a Go
//! map, i.e. in no defined order; we take `serde_json::Map` order, which is sorted by plugin name
//! in this build (no `preserve_order` feature) and would be document order with it. Real 1.x
//! documents have a single entry.
//!
//! `{{ssm:…}}` Parameter Store references are kept as text when a command is admitted and
//! resolved before its first step runs (`References`, `parameter_store`). `{{ssm-secure:…}}` is
//! text here, as upstream, which resolves it only in the plugins that take secrets.

pub mod parameter_store;
mod params;
mod pattern;
mod precondition;
mod shell;
pub mod yaml;

use parameter_store::{ParameterStoreError, Resolver};
pub(crate) use params::{go_kind, go_value};
use serde_json::{Map, Value};

/// What to do with a step, decided when the document is parsed (preconditions, plugin support).
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Run,
    /// Reported `Skipped`, code 0, with this output.
    Skip(String),
    /// Reported `Failed`, code 1, with this output.
    Fail(String),
}

/// `onFailure` / `onSuccess` values from a step's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitAction {
    Exit,
    SuccessAndExit,
}

/// One plugin run: a 2.x `mainSteps` entry, or a 1.x `runtimeConfig` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// pluginId: the step `name` (2.x) or the plugin name (1.x); key of the reply's runtimeStatus.
    pub id: String,
    /// The action, e.g. `aws:runShellScript`.
    pub plugin: String,
    /// Inputs after parameter substitution (`inputs` for 2.x, `properties` for 1.x): each element
    /// when that value is an array (upstream runs each in turn, in both schemas; an empty array
    /// gives no element), otherwise the value itself as the only element (`null` when absent).
    pub inputs: Vec<Value>,
    pub verdict: Verdict,
    pub on_failure: Option<ExitAction>,
    pub on_success: Option<ExitAction>,
    pub finally_step: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub schema_version: String,
    pub steps: Vec<Step>,
    /// A parameter value or a step input holds a `{{ssm:…}}` reference left as text: parse the
    /// document again with `References::Resolve` before it runs.
    pub parameter_store: bool,
}

/// How `parse` treats `{{ssm:…}}` references (docs/protocol.md §3.7).
pub enum References<'r, 'a> {
    /// Left as text, so that admitting a command costs no service call; the values that hold
    /// one are validated once they are resolved.
    Keep,
    /// Looked up: parameter values are resolved for validation, the steps' inputs after
    /// substitution, as upstream does it.
    Resolve(&'r mut Resolver<'a>),
}

impl From<ParameterStoreError> for DocumentError {
    fn from(e: ParameterStoreError) -> DocumentError {
        DocumentError(e.to_string())
    }
}

/// The message is the upstream text, sent to the service as `documentTraceOutput`: its wording
/// is upstream's, so it stays one string rather than an enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DocumentError(pub String);

/// `appconfig.SupportedDocumentVersions`.
const SUPPORTED_SCHEMAS: [&str; 7] = ["1.0", "1.2", "2.0", "2.0.1", "2.0.2", "2.0.3", "2.2"];
/// The first schema with preconditions and cross-platform skipping.
const PRECONDITION_SCHEMA: &str = "2.2";
/// The plugins ssm-lite implements.
const IMPLEMENTED_PLUGINS: [&str; 7] = [
    "aws:runShellScript",
    "aws:runDocument",
    "aws:downloadContent",
    "aws:configurePackage",
    "aws:refreshAssociation",
    "aws:softwareInventory",
    "aws:updateSsmAgent",
];
/// The plugins upstream registers on Linux (`RegisteredWorkerPlugins`): it runs steps using them,
/// so where it would, ssm-lite fails those it does not implement rather than skip them.
const LINUX_PLUGINS: [&str; 12] = [
    "aws:runShellScript",
    "aws:runPowerShellScript",
    "aws:runDocument",
    "aws:downloadContent",
    "aws:configurePackage",
    "aws:softwareInventory",
    "aws:updateSsmAgent",
    "aws:domainJoin",
    "aws:cloudWatch",
    "aws:runDockerAction",
    "aws:configureDocker",
    "aws:refreshAssociation",
];
/// The other plugin names upstream knows (`allPlugins`, `allSessionPlugins`): not registered on
/// Linux, so upstream skips (2.2) or fails ("not found") their steps there, and so does ssm-lite.
/// A name in neither list needs a newer agent.
const OTHER_KNOWN_PLUGINS: [&str; 8] = [
    "aws:updateAgent",
    "aws:applications",
    "aws:configureDaemon",
    "aws:psModule",
    "Standard_Stream",
    "InteractiveCommands",
    "NonInteractiveCommands",
    "Port",
];

/// Parameter handling for documents that are not Command documents (session documents):
/// the document's `parameters` declarations (`declarations`), the caller's values, validation,
/// then substitution into each of `targets`, returned in order.
pub fn substitute_parameters(
    declarations: Option<&Value>,
    supplied: &Map<String, Value>,
    targets: &[&Value],
) -> Result<Vec<Value>, DocumentError> {
    let declared = params::declared(declarations)?;
    let values = params::values(&declared, supplied);
    params::validate(&declared, &values, |_| true, None)?;
    Ok(targets
        .iter()
        .map(|t| params::substitute(t, &values))
        .collect())
}

/// `content` is the `DocumentContent` object; `parameters` the caller's values.
pub fn parse(
    content: &Value,
    parameters: &Map<String, Value>,
    references: References<'_, '_>,
) -> Result<Document, DocumentError> {
    parse_as(content, parameters, references, false)
}

/// [`parse`] for a document `aws:runDocument` runs: upstream validates its parameters with the
/// optional validators too (min/max chars and items, allowed values; docs/protocol.md §3.13).
pub fn parse_sub_document(
    content: &Value,
    parameters: &Map<String, Value>,
    references: References<'_, '_>,
) -> Result<Document, DocumentError> {
    parse_as(content, parameters, references, true)
}

/// A document's text as upstream reads a file: JSON, else YAML (`execdoc.go` `ParseDocument`).
/// The error names both failures.
pub fn content_from_text(text: &str) -> Result<Value, DocumentError> {
    serde_json::from_str(text).or_else(|json_error| {
        yaml::to_json(text).map_err(|yaml_error| {
            DocumentError(format!(
                "the document is neither JSON ({json_error}) nor YAML ({yaml_error})"
            ))
        })
    })
}

fn parse_as(
    content: &Value,
    parameters: &Map<String, Value>,
    mut references: References<'_, '_>,
    sub_document: bool,
) -> Result<Document, DocumentError> {
    let Value::Object(content) = content else {
        return Err(wrong_kind("DocumentContent", "a JSON object", content));
    };
    let schema_version = match field(content, "schemaVersion") {
        // An unquoted `schemaVersion: 2.2` in a YAML sub-document: Go's YAML decoder gives a
        // string field the scalar's text.
        Some(Value::Number(n)) if sub_document => n.to_string(),
        _ => string_field(content, "schemaVersion")
            .map_err(|why| invalid("DocumentContent", &why))?
            .unwrap_or_default()
            .to_owned(),
    };
    if !SUPPORTED_SCHEMAS.contains(&schema_version.as_str()) {
        return Err(DocumentError(format!(
            "Document with schema version {schema_version} is not supported by this version of ssm agent, please update to latest version"
        )));
    }
    let declared = params::declared(field(content, "parameters"))?;
    let values = params::values(&declared, parameters);
    validate(&declared, &values, &mut references, sub_document)?;
    let mut resolve = |inputs: Value| match &mut references {
        References::Keep => Ok(inputs),
        References::Resolve(resolver) => Ok(resolver.resolve(&inputs)?),
    };
    let steps = match schema_version.starts_with("1.") {
        true => steps_v1(field(content, "runtimeConfig"), &values, &mut resolve)?,
        false => steps_v2(
            field(content, "mainSteps"),
            &schema_version,
            &values,
            &mut resolve,
        )?,
    };
    if steps.is_empty() {
        return Err(DocumentError("Unsupported schema format".to_owned()));
    }
    let keep = matches!(references, References::Keep);
    let parameter_store = keep
        && (values.values().any(parameter_store::holds_reference)
            || steps
                .iter()
                .flat_map(|s| &s.inputs)
                .any(parameter_store::holds_reference));
    Ok(Document {
        schema_version,
        steps,
        parameter_store,
    })
}

/// `allowedPattern` checks on the values as they will be used: resolved from Parameter Store
/// first (upstream `ValidateSSMParameters`), or, while references are kept, only the values
/// that hold none.
/// The optional validators of a sub-document skip a value that held a reference, resolved or
/// not (upstream `isParameterResolvedFromSSMParameterStore`).
fn validate(
    declared: &[params::Declared],
    values: &params::Values,
    references: &mut References<'_, '_>,
    sub_document: bool,
) -> Result<(), DocumentError> {
    let literal = |name: &str| {
        !values
            .get(name)
            .is_some_and(parameter_store::holds_reference)
    };
    let optional: Option<&dyn Fn(&str) -> bool> = sub_document.then_some(&literal);
    match references {
        References::Keep => params::validate(declared, values, literal, optional),
        References::Resolve(resolver) => match resolver.resolve(&Value::Object(values.clone()))? {
            Value::Object(resolved) => params::validate(declared, &resolved, |_| true, optional),
            _ => Err(ParameterStoreError::Internal.into()),
        },
    }
}

/// Resolves (or keeps) the `{{ssm:…}}` references of a step's substituted inputs.
type ResolveInputs<'f> = dyn FnMut(Value) -> Result<Value, DocumentError> + 'f;

/// One step per `runtimeConfig` entry; the plugin name is also the step id.
fn steps_v1(
    runtime_config: Option<&Value>,
    values: &params::Values,
    resolve: &mut ResolveInputs<'_>,
) -> Result<Vec<Step>, DocumentError> {
    let plugins = match runtime_config {
        None => return Ok(Vec::new()),
        Some(Value::Object(plugins)) => plugins,
        Some(other) => {
            return Err(wrong_kind("runtimeConfig", "an object", other));
        }
    };
    let mut steps = Vec::with_capacity(plugins.len());
    for (plugin, config) in plugins {
        let properties = match config {
            Value::Object(config) => field(config, "properties"),
            Value::Null => None,
            other => {
                let path = format!("runtimeConfig.{plugin}");
                return Err(wrong_kind(&path, "an object", other));
            }
        };
        let verdict = verdict(false, plugin, plugin, &[], values);
        steps.push(step(
            plugin.clone(),
            plugin.clone(),
            properties,
            values,
            verdict,
            resolve,
        )?);
    }
    Ok(steps)
}

/// One step per `mainSteps` entry, in order.
fn steps_v2(
    main_steps: Option<&Value>,
    schema: &str,
    values: &params::Values,
    resolve: &mut ResolveInputs<'_>,
) -> Result<Vec<Step>, DocumentError> {
    let entries = match main_steps {
        None => return Ok(Vec::new()),
        Some(Value::Array(entries)) => entries,
        Some(other) => {
            return Err(wrong_kind("mainSteps", "an array", other));
        }
    };
    let preconditions_enabled = schema == PRECONDITION_SCHEMA;
    let mut steps = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let path = format!("mainSteps[{index}]");
        let Value::Object(entry) = entry else {
            return Err(wrong_kind(&path, "an object", entry));
        };
        let text = |key| string_field(entry, key).map_err(|why| invalid(&path, &why));
        let plugin = text("action")?.unwrap_or_default().to_owned();
        let id = text("name")?.unwrap_or_default().to_owned();
        let preconditions = precondition::decode(
            field(entry, "precondition"),
            &format!("{path}.precondition"),
        )?;
        let verdict = verdict(preconditions_enabled, &plugin, &id, &preconditions, values);
        steps.push(step(
            id,
            plugin,
            field(entry, "inputs"),
            values,
            verdict,
            resolve,
        )?);
    }
    Ok(steps)
}

/// Substitutes parameters in the step's inputs, resolves Parameter Store references, unrolls an
/// array, and reads the control inputs.
fn step(
    id: String,
    plugin: String,
    inputs: Option<&Value>,
    values: &params::Values,
    verdict: Verdict,
    resolve: &mut ResolveInputs<'_>,
) -> Result<Step, DocumentError> {
    let inputs = resolve(inputs.map_or(Value::Null, |inputs| params::substitute(inputs, values)))?;
    // Upstream reads the control inputs only from an object (so not from a 1.x properties list).
    let control = |key| match &inputs {
        Value::Object(map) => control_value(map, key),
        _ => None,
    };
    let on_failure = match control("onFailure").as_deref() {
        Some("exit") => Some(ExitAction::Exit),
        Some("successAndExit") => Some(ExitAction::SuccessAndExit),
        _ => None,
    };
    let on_success = (control("onSuccess").as_deref() == Some("exit")).then_some(ExitAction::Exit);
    let finally_step = control("finallyStep").as_deref() == Some("true");
    let inputs = match inputs {
        Value::Array(items) => items,
        single => vec![single],
    };
    Ok(Step {
        id,
        plugin,
        inputs,
        verdict,
        on_failure,
        on_success,
        finally_step,
    })
}

/// A control input as upstream sees it: a string as is, a boolean as `true`/`false`. Values are
/// compared exactly (`exit`, `successAndExit`, `true`), as upstream does.
fn control_value(inputs: &Map<String, Value>, key: &str) -> Option<String> {
    match field(inputs, key)? {
        Value::String(text) => Some(text.clone()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// Upstream `getStepExecutionOperation` (docs/protocol.md §3.3) with Linux's plugin registry; where
/// upstream would run a plugin ssm-lite lacks, the step fails saying so.
fn verdict(
    preconditions_enabled: bool,
    plugin: &str,
    id: &str,
    preconditions: &[(String, Vec<String>)],
    values: &params::Values,
) -> Verdict {
    let registered = LINUX_PLUGINS.contains(&plugin);
    let known = registered || OTHER_KNOWN_PLUGINS.contains(&plugin);
    if !preconditions_enabled {
        return if !known {
            unknown_plugin(plugin, id)
        } else if !preconditions.is_empty() {
            Verdict::Fail(format!(
                "Precondition is not supported for document schema version prior to 2.2. Step name: {id}"
            ))
        } else if !registered {
            Verdict::Fail(format!(
                "Plugin with name {plugin} not found. Step name: {id}"
            ))
        } else {
            run_plugin(plugin, id)
        };
    }
    if preconditions.is_empty() {
        return if !known {
            unknown_plugin(plugin, id)
        } else if registered {
            run_plugin(plugin, id)
        } else {
            unsupported_plugin(plugin, id)
        };
    }
    let outcome = precondition::evaluate(preconditions, values);
    if outcome.allowed && !known {
        return unknown_plugin(plugin, id);
    }
    if !registered {
        return unsupported_plugin(plugin, id);
    }
    precondition_verdict(&outcome, plugin, id)
}

/// A registered plugin's verdict once its preconditions are evaluated.
fn precondition_verdict(outcome: &precondition::Outcome, plugin: &str, id: &str) -> Verdict {
    let notes = outcome.notes.join(", ");
    if !outcome.allowed {
        Verdict::Skip(format!(
            "Step execution skipped due to unsatisfied preconditions: '{notes}'. Step name: {id}"
        ))
    } else if !notes.is_empty() {
        Verdict::Fail(format!(
            "Unrecognized precondition(s): '{notes}', please update agent to latest version. Step name: {id}"
        ))
    } else {
        run_plugin(plugin, id)
    }
}

/// Upstream's words for a plugin on none of its lists.
fn unknown_plugin(plugin: &str, id: &str) -> Verdict {
    Verdict::Fail(format!(
        "Plugin with name {plugin} is not supported by this version of ssm agent, please update to latest version. Step name: {id}"
    ))
}

/// Upstream's words for a plugin known on other platforms only.
fn unsupported_plugin(plugin: &str, id: &str) -> Verdict {
    Verdict::Skip(format!(
        "Step execution skipped due to unsupported plugin: {plugin}. Step name: {id}"
    ))
}

/// A Linux plugin: runs if ssm-lite implements it.
fn run_plugin(plugin: &str, id: &str) -> Verdict {
    match IMPLEMENTED_PLUGINS.contains(&plugin) {
        true => Verdict::Run,
        false => Verdict::Fail(format!(
            "ssm-lite does not implement plugin {plugin} yet, so this step did not run. Step name: {id}"
        )),
    }
}

/// Decodes one property set of an `aws:runShellScript` step (an element of [`Step::inputs`]).
/// The error is the step's output, in upstream's wording: `Invalid format in plugin properties …`.
pub fn shell_script_input(inputs: &Value) -> Result<ShellScriptInput, String> {
    shell::decode(inputs)
}

/// The inputs of one `aws:runShellScript` run (one property set).
#[derive(Debug, Clone, PartialEq)]
pub struct ShellScriptInput {
    pub run_command: Vec<String>,
    pub working_directory: String,
    /// Already validated: 5..=172800, otherwise 3600.
    pub timeout_seconds: u64,
    /// The `id` input, empty when absent or starting with `../` or `~/`.
    pub id: String,
    /// The `environment` input, sorted by name.
    pub environment: Vec<(String, String)>,
}

/// Go-style key lookup in a decoded object: the exact key, else the first key equal to it ignoring
/// ASCII case; `null` counts as absent.
pub fn field<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object
        .get(key)
        .or_else(|| {
            object
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
        .filter(|value| !value.is_null())
}

/// [`field`] for a string; the error names the key and what was found instead.
pub(crate) fn string_field<'a>(
    object: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, String> {
    match field(object, key) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(format!("{key} must be a string, found {}", kind(other))),
    }
}

/// "a string", "an array", … for error messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// [`invalid`] for a value of the wrong JSON type: `want` is what `place` must hold.
pub(crate) fn wrong_kind(place: &str, want: &str, found: &Value) -> DocumentError {
    invalid(place, &format!("must be {want}, found {}", kind(found)))
}

/// A string list element or map value as Go decodes it into a string: `null` is empty, any
/// other non-string is returned as the error, for the caller to name its place.
pub(crate) fn text_or_empty(value: &Value) -> Result<String, &Value> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Null => Ok(String::new()),
        other => Err(other),
    }
}

/// A document whose shape cannot be decoded; `place` says where.
pub(crate) fn invalid(place: &str, problem: &str) -> DocumentError {
    DocumentError(format!(
        "Invalid document content: {place}: {problem}; correct the document and send the command again"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TIMEOUT_PATTERN: &str =
        "([1-9][0-9]{0,4})|(1[0-6][0-9]{4})|(17[0-1][0-9]{3})|(172[0-7][0-9]{2})|(172800)";

    /// Shaped like AWS-RunShellScript (schema 1.2) with its real parameter block.
    fn run_shell_script_v12() -> Value {
        json!({
            "schemaVersion": "1.2",
            "description": "Run a shell script or specify the commands to run.",
            "parameters": {
                "commands": {"type": "StringList", "description": "(Required) commands", "minItems": 1, "displayType": "textarea"},
                "workingDirectory": {"type": "String", "default": "", "description": "(Optional) dir", "maxChars": 4096},
                "executionTimeout": {"type": "String", "default": "3600", "description": "(Optional) seconds",
                                     "allowedPattern": TIMEOUT_PATTERN}
            },
            "runtimeConfig": {
                "aws:runShellScript": {
                    "properties": [{
                        "id": "0.aws:runShellScript",
                        "runCommand": "{{ commands }}",
                        "workingDirectory": "{{ workingDirectory }}",
                        "timeoutSeconds": "{{ executionTimeout }}"
                    }]
                }
            }
        })
    }

    fn params(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn parsed(content: Value, supplied: Value) -> Document {
        parse(&content, &params(supplied), References::Keep).unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(content: Value, supplied: Value) -> String {
        match parse(&content, &params(supplied), References::Keep) {
            Err(DocumentError(message)) => message,
            Ok(document) => panic!("parsed: {document:?}"),
        }
    }

    fn v22(steps: Value) -> Value {
        json!({"schemaVersion": "2.2", "mainSteps": steps})
    }

    fn verdicts(document: &Document) -> Vec<&Verdict> {
        document.steps.iter().map(|step| &step.verdict).collect()
    }

    #[test]
    fn run_shell_script_v12_end_to_end() {
        let document = parsed(
            run_shell_script_v12(),
            json!({"commands": ["echo This message goes to stdout", "echo This message goes to stderr >&2"]}),
        );
        assert_eq!(document.schema_version, "1.2");
        let [step] = document.steps.as_slice() else {
            panic!("{document:?}")
        };
        assert_eq!(
            (step.id.as_str(), step.plugin.as_str()),
            ("aws:runShellScript", "aws:runShellScript")
        );
        assert_eq!(step.verdict, Verdict::Run);
        assert_eq!(
            step.inputs,
            [json!({
                "id": "0.aws:runShellScript",
                "runCommand": ["echo This message goes to stdout", "echo This message goes to stderr >&2"],
                "workingDirectory": "",
                "timeoutSeconds": "3600"
            })]
        );
        assert_eq!(
            (step.on_failure, step.on_success, step.finally_step),
            (None, None, false)
        );
        let input = shell_script_input(&step.inputs[0]).unwrap();
        assert_eq!(input.run_command.len(), 2);
        assert_eq!(
            (input.timeout_seconds, input.id.as_str()),
            (3600, "0.aws:runShellScript")
        );
    }

    #[test]
    fn execution_timeout_is_validated_against_its_pattern() {
        let ok = parsed(
            run_shell_script_v12(),
            json!({"commands": ["true"], "executionTimeout": "172800"}),
        );
        assert_eq!(ok.steps[0].inputs[0]["timeoutSeconds"], "172800");
        let message = error(
            run_shell_script_v12(),
            json!({"commands": ["true"], "executionTimeout": "forever"}),
        );
        assert!(
            message.starts_with("all errors during param validation errors: ")
                && message.contains("/executionTimeout/")
                && message.contains(TIMEOUT_PATTERN)
                && !message.contains("forever"),
            "{message}"
        );
    }

    #[test]
    fn keys_match_case_insensitively() {
        let document = parsed(
            json!({
                "SchemaVersion": "1.2",
                "Parameters": {"cmd": {"Type": "StringList", "Default": ["uptime"]}},
                "RuntimeConfig": {"aws:runShellScript": {"Properties": {"RunCommand": "{{ cmd }}", "OnFailure": "exit"}}}
            }),
            json!({}),
        );
        let [step] = document.steps.as_slice() else {
            panic!("{document:?}")
        };
        // An object `properties` is one property set.
        assert_eq!(
            step.inputs,
            [json!({"RunCommand": ["uptime"], "OnFailure": "exit"})]
        );
        assert_eq!(step.on_failure, Some(ExitAction::Exit));
        let v2 = parsed(
            json!({"schemaversion": "2.0", "MAINSTEPS": [{"Action": "aws:runShellScript", "NAME": "s1", "Inputs": {"runCommand": ["id"]}}]}),
            json!({}),
        );
        assert_eq!(
            (v2.steps[0].id.as_str(), v2.steps[0].verdict.clone()),
            ("s1", Verdict::Run)
        );
    }

    #[test]
    fn properties_array_gives_one_input_per_element() {
        let document = parsed(
            json!({"schemaVersion": "1.0", "runtimeConfig": {"aws:runShellScript": {"properties": [
                {"id": "0.aws:runShellScript", "runCommand": ["echo 0"]},
                {"id": "1.aws:runShellScript", "runCommand": ["echo {{ word }}"]}
            ]}}}),
            json!({"word": "one"}),
        );
        let inputs = &document.steps[0].inputs;
        assert_eq!(inputs.len(), 2);
        assert_eq!(inputs[1]["runCommand"], json!(["echo one"]));
        // 2.x inputs that are an array are unrolled the same way; absent inputs are one `null`.
        let v2 = parsed(
            v22(json!([
                {"action": "aws:runShellScript", "name": "a", "inputs": [{"runCommand": ["x"]}, {"runCommand": ["y"]}]},
                {"action": "aws:runShellScript", "name": "b"}
            ])),
            json!({}),
        );
        assert_eq!(v2.steps[0].inputs.len(), 2);
        assert_eq!(v2.steps[1].inputs, [Value::Null]);
    }

    #[test]
    fn runtime_config_entries_follow_map_order() {
        let content = json!({"schemaVersion": "1.2", "runtimeConfig": {
            "aws:runShellScript": {"properties": {}}, "aws:applications": {}, "aws:zzz": null
        }});
        let expected: Vec<&String> = content["runtimeConfig"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        let document = parsed(content.clone(), json!({}));
        let ids: Vec<&String> = document.steps.iter().map(|step| &step.id).collect();
        assert_eq!(ids, expected);
    }

    #[test]
    fn an_unquoted_yaml_schema_version_is_read_in_a_sub_document_only() {
        let yaml = "schemaVersion: 2.2\nmainSteps:\n- action: aws:runShellScript\n  name: a\n  inputs:\n    runCommand: [id]\n";
        let content = content_from_text(yaml).unwrap();
        let doc = parse_sub_document(&content, &Map::new(), References::Keep).unwrap();
        assert_eq!(doc.steps.len(), 1);
        let e = parse(&content, &Map::new(), References::Keep).unwrap_err();
        assert!(e.to_string().contains("schemaVersion"), "{e}");
    }

    #[test]
    fn unsupported_schema_versions_are_rejected_verbatim() {
        for version in [
            json!("1.1"),
            json!("2.1"),
            json!("9999.0"),
            json!("2.2.0"),
            json!(""),
        ] {
            let content = json!({"schemaVersion": version, "mainSteps": [{"action": "aws:runShellScript", "name": "a"}]});
            assert_eq!(
                error(content, json!({})),
                format!(
                    "Document with schema version {} is not supported by this version of ssm agent, please update to latest version",
                    version.as_str().unwrap()
                )
            );
        }
        assert_eq!(
            error(json!({"mainSteps": []}), json!({})),
            "Document with schema version  is not supported by this version of ssm agent, please update to latest version"
        );
        for version in SUPPORTED_SCHEMAS {
            let content = json!({"schemaVersion": version,
                "runtimeConfig": {"aws:runShellScript": {}},
                "mainSteps": [{"action": "aws:runShellScript", "name": "a"}]});
            assert_eq!(parsed(content, json!({})).schema_version, version);
        }
    }

    #[test]
    fn empty_step_lists_are_an_unsupported_schema_format() {
        for content in [
            json!({"schemaVersion": "1.2", "runtimeConfig": {}}),
            json!({"schemaVersion": "1.0"}),
            json!({"schemaVersion": "2.2", "mainSteps": []}),
            json!({"schemaVersion": "2.0", "mainSteps": null, "runtimeConfig": {"aws:runShellScript": {}}}),
        ] {
            assert_eq!(error(content, json!({})), "Unsupported schema format");
        }
    }

    #[test]
    fn impossible_shapes_are_clear_errors() {
        for (content, place) in [
            (
                json!("schemaVersion: 2.2"),
                "DocumentContent: must be a JSON object, found a string",
            ),
            (
                json!({"schemaVersion": 2.2}),
                "schemaVersion must be a string",
            ),
            (
                json!({"schemaVersion": "2.2", "mainSteps": {"a": 1}}),
                "mainSteps",
            ),
            (
                json!({"schemaVersion": "2.2", "mainSteps": ["step"]}),
                "mainSteps[0]",
            ),
            (
                json!({"schemaVersion": "2.2", "mainSteps": [{"action": 1}]}),
                "action must be a string",
            ),
            (
                json!({"schemaVersion": "2.2", "mainSteps": [{"name": {}}]}),
                "name must be a string",
            ),
            (
                json!({"schemaVersion": "2.2", "mainSteps": [{"name": "a", "precondition": {"StringEquals": "x"}}]}),
                "mainSteps[0].precondition.StringEquals",
            ),
            (
                json!({"schemaVersion": "1.2", "runtimeConfig": []}),
                "runtimeConfig",
            ),
            (
                json!({"schemaVersion": "1.2", "runtimeConfig": {"aws:runShellScript": "x"}}),
                "runtimeConfig.aws:runShellScript",
            ),
            (
                json!({"schemaVersion": "2.2", "parameters": {"p": 3}}),
                "parameters.p",
            ),
        ] {
            let message = error(content, json!({}));
            assert!(
                message.starts_with("Invalid document content: ") && message.contains(place),
                "{message}"
            );
        }
    }

    #[test]
    fn linux_step_runs_and_windows_step_is_skipped() {
        let document = parsed(
            v22(json!([
                {"action": "aws:runShellScript", "name": "pluginLinux",
                 "precondition": {"StringEquals": ["platformType", "Linux"]}, "inputs": {"runCommand": ["echo ship_it"]}},
                {"action": "aws:runPowerShellScript", "name": "pluginWindows",
                 "precondition": {"StringEquals": ["platformType", "Windows"]}, "inputs": {"runCommand": ["echo ship_it"]}},
                {"action": "aws:runShellScript", "name": "shellOnWindows",
                 "precondition": {"StringEquals": ["platformType", "Windows"]}}
            ])),
            json!({}),
        );
        assert_eq!(
            verdicts(&document),
            [
                &Verdict::Run,
                &Verdict::Skip(
                    "Step execution skipped due to unsatisfied preconditions: '\"StringEquals\": [platformType, Windows]'. \
                     Step name: pluginWindows"
                        .into()
                ),
                &Verdict::Skip(
                    "Step execution skipped due to unsatisfied preconditions: '\"StringEquals\": [platformType, Windows]'. \
                     Step name: shellOnWindows"
                        .into()
                ),
            ]
        );
    }

    #[test]
    fn preconditions_with_parameters() {
        let content = v22(json!([
            {"action": "aws:runShellScript", "name": "param", "precondition": {"StringEquals": ["{{ mode }}", "install"]}},
            {"action": "aws:runShellScript", "name": "twoParams", "precondition": {"StringEquals": ["{{ mode }}", "{{ other }}"]}},
            {"action": "aws:runShellScript", "name": "literal", "precondition": {"StringEquals": ["a", "b"]}},
            {"action": "aws:runShellScript", "name": "ssm", "precondition": {"StringEquals": ["{{ssm:/p}}", "{{ mode }}"]}},
            {"action": "aws:runShellScript", "name": "operator", "precondition": {"StringLike": ["{{ mode }}", "i*"]}}
        ]));
        let mut content = content;
        content["parameters"] =
            json!({"mode": {"type": "String", "default": "install"}, "other": {"type": "String"}});
        let document = parsed(content.clone(), json!({"other": "install"}));
        let fail = |id: &str, notes: &str| {
            Verdict::Fail(format!(
                "Unrecognized precondition(s): '{notes}', please update agent to latest version. Step name: {id}"
            ))
        };
        assert_eq!(
            verdicts(&document),
            [
                &Verdict::Run,
                &Verdict::Run,
                &fail(
                    "literal",
                    "\"StringEquals\": at least one of operator's arguments must contain a valid document parameter"
                ),
                &fail(
                    "ssm",
                    "\"StringEquals\": operator's arguments can't contain SSM parameters"
                ),
                &fail("operator", "unrecognized operator: \"StringLike\""),
            ]
        );
        let document = parsed(content, json!({"mode": "remove", "other": "install"}));
        assert_eq!(
            document.steps[1].verdict,
            Verdict::Skip(
                "Step execution skipped due to unsatisfied preconditions: '\"StringEquals\": [{{ mode }}, {{ other }}]'. \
                 Step name: twoParams"
                    .into()
            )
        );
    }

    #[test]
    fn plugin_support_by_schema() {
        let steps = json!([
            {"action": "aws:runShellScript", "name": "shell"},
            {"action": "aws:fancyNewThing", "name": "unknown"},
            {"action": "aws:applications", "name": "known"},
            {"action": "aws:runShellScript", "name": "guarded", "precondition": {"StringEquals": ["platformType", "Linux"]}}
        ]);
        let v20 = parsed(
            json!({"schemaVersion": "2.0", "mainSteps": steps}),
            json!({}),
        );
        assert_eq!(
            verdicts(&v20),
            [
                &Verdict::Run,
                &Verdict::Fail(
                    "Plugin with name aws:fancyNewThing is not supported by this version of ssm agent, please update to latest version. Step name: unknown".into()
                ),
                &Verdict::Fail("Plugin with name aws:applications not found. Step name: known".into()),
                &Verdict::Fail("Precondition is not supported for document schema version prior to 2.2. Step name: guarded".into()),
            ]
        );
        let v12 = parsed(
            json!({"schemaVersion": "1.2", "runtimeConfig": {"aws:runScript": {}}}),
            json!({}),
        )
        .steps;
        assert!(
            matches!(&v12[0].verdict, Verdict::Fail(m) if m.starts_with("Plugin with name aws:runScript is not supported by this version"))
        );
        let v22 = parsed(v22(steps), json!({}));
        assert_eq!(v22.steps[0].verdict, Verdict::Run);
        assert!(
            matches!(&v22.steps[1].verdict, Verdict::Fail(m) if m.contains("please update to latest version. Step name: unknown"))
        );
        assert_eq!(
            v22.steps[2].verdict,
            Verdict::Skip("Step execution skipped due to unsupported plugin: aws:applications. Step name: known".into())
        );
        assert_eq!(v22.steps[3].verdict, Verdict::Run);
    }

    #[test]
    fn plugins_upstream_runs_on_linux_fail_unless_implemented() {
        let document = parsed(
            v22(json!([
                {"action": "aws:domainJoin", "name": "install",
                 "inputs": {"directoryId": "d-1234567890"}},
                {"action": "aws:runPowerShellScript", "name": "pwsh", "inputs": {"runCommand": ["echo"]}},
                {"action": "aws:downloadContent", "name": "linux",
                 "precondition": {"StringEquals": ["platformType", "Linux"]}},
                {"action": "aws:runDocument", "name": "windows",
                 "precondition": {"StringEquals": ["platformType", "Windows"]}},
                {"action": "aws:psModule", "name": "module"},
                {"action": "aws:applications", "name": "apps",
                 "precondition": {"StringEquals": ["platformType", "Linux"]}}
            ])),
            json!({}),
        );
        let missing = |plugin: &str, id: &str| {
            Verdict::Fail(format!(
                "ssm-lite does not implement plugin {plugin} yet, so this step did not run. Step name: {id}"
            ))
        };
        assert_eq!(
            verdicts(&document),
            [
                &missing("aws:domainJoin", "install"),
                &missing("aws:runPowerShellScript", "pwsh"),
                &Verdict::Run,
                &Verdict::Skip(
                    "Step execution skipped due to unsatisfied preconditions: '\"StringEquals\": [platformType, Windows]'. \
                     Step name: windows"
                        .into()
                ),
                // Not registered on Linux upstream: skipped there, in its words.
                &Verdict::Skip(
                    "Step execution skipped due to unsupported plugin: aws:psModule. Step name: module".into()
                ),
                &Verdict::Skip(
                    "Step execution skipped due to unsupported plugin: aws:applications. Step name: apps".into()
                ),
            ]
        );
        let v12 = parsed(
            json!({"schemaVersion": "1.2", "runtimeConfig": {"aws:domainJoin": {"properties": {}}}}),
            json!({}),
        );
        assert_eq!(
            v12.steps[0].verdict,
            missing("aws:domainJoin", "aws:domainJoin")
        );
        // Not a plugin name upstream knows, though its registry comment mentions it.
        let v22 = parsed(
            v22(json!([{"action": "aws:configureContainers", "name": "c"}])),
            json!({}),
        );
        assert!(
            matches!(&v22.steps[0].verdict, Verdict::Fail(m) if m.contains("not supported by this version of ssm agent"))
        );
    }

    #[test]
    fn unknown_plugin_in_22_fails_only_when_its_precondition_holds() {
        let document = parsed(
            v22(json!([
                {"action": "aws:future", "name": "here", "precondition": {"StringEquals": ["platformType", "linux"]}},
                {"action": "aws:future", "name": "elsewhere", "precondition": {"StringEquals": ["platformType", "macos"]}}
            ])),
            json!({}),
        );
        assert!(
            matches!(&document.steps[0].verdict, Verdict::Fail(m) if m.starts_with("Plugin with name aws:future is not supported by this version"))
        );
        // Upstream checks the registry before the precondition: an unknown plugin has no handler.
        assert_eq!(
            document.steps[1].verdict,
            Verdict::Skip(
                "Step execution skipped due to unsupported plugin: aws:future. Step name: elsewhere"
                    .into()
            )
        );
    }

    #[test]
    fn control_inputs_are_read_after_substitution() {
        let step = |inputs: Value| {
            let document = parsed(
                json!({"schemaVersion": "2.2", "parameters": {"mode": {"default": "successAndExit"}},
                       "mainSteps": [{"action": "aws:runShellScript", "name": "s", "inputs": inputs}]}),
                json!({}),
            );
            let step = &document.steps[0];
            (step.on_failure, step.on_success, step.finally_step)
        };
        assert_eq!(
            step(json!({"onFailure": "exit"})),
            (Some(ExitAction::Exit), None, false)
        );
        assert_eq!(
            step(json!({"onFailure": "{{ mode }}"})),
            (Some(ExitAction::SuccessAndExit), None, false)
        );
        assert_eq!(
            step(json!({"ONSUCCESS": "exit", "finallystep": true})),
            (None, Some(ExitAction::Exit), true)
        );
        assert_eq!(step(json!({"finallyStep": "true"})), (None, None, true));
        // Values compare exactly, as upstream; anything else means "no modifier".
        assert_eq!(
            step(
                json!({"onFailure": "Exit", "onSuccess": "successAndExit", "finallyStep": "True"})
            ),
            (None, None, false)
        );
        assert_eq!(
            step(json!({"onFailure": true, "finallyStep": 1})),
            (None, None, false)
        );
        assert_eq!(step(json!([{"onFailure": "exit"}])), (None, None, false));
    }

    #[test]
    fn parameter_handling_through_parse() {
        let content = json!({"schemaVersion": "2.0", "parameters": {"commands": {"type": "StringList"}},
        "mainSteps": [{"action": "aws:runShellScript", "name": "s", "inputs": {
            "runCommand": "{{ commands }}",
            "note": "{{ bad-name }} {{ count }} {{ p3 }} {{ commands }}",
            "environment": {"COUNT": "n={{count}}"}
        }}]});
        let document = parsed(
            content,
            json!({"commands": ["echo $$HOME", "ls"], "bad-name": "x", "count": 3}),
        );
        let inputs = &document.steps[0].inputs[0];
        assert_eq!(inputs["runCommand"], json!(["echo $$HOME", "ls"]));
        assert_eq!(
            inputs["note"],
            r#"{{ bad-name }} 3 {{ p3 }} ["echo $HOME","ls"]"#
        );
        let input = shell_script_input(inputs).unwrap();
        assert_eq!(input.environment, [("COUNT".to_owned(), "n=3".to_owned())]);
        // Whole-value substitution keeps the number, which is not a valid environment value.
        let mut whole = inputs.clone();
        whole["environment"] =
            params::substitute(&json!({"COUNT": "{{count}}"}), &params(json!({"count": 3})));
        assert!(
            shell_script_input(&whole)
                .unwrap_err()
                .ends_with("environment must be an object of strings, found a number")
        );
        // A declared parameter that nobody supplies and has no default substitutes as null.
        let document = parsed(
            json!({"schemaVersion": "2.0", "parameters": {"commands": {"type": "StringList"}},
                   "mainSteps": [{"action": "aws:runShellScript", "name": "s", "inputs": {"runCommand": "{{ commands }}"}}]}),
            json!({}),
        );
        assert_eq!(document.steps[0].inputs[0]["runCommand"], Value::Null);
    }

    #[test]
    fn parameter_store_references_are_kept_on_admission_and_resolved_on_request() {
        use parameter_store::{Found, Parameter, ParameterSource};
        struct Token;
        impl ParameterSource for Token {
            fn get_parameters(&self, names: &[String]) -> Result<Found, String> {
                let parameters = names
                    .iter()
                    .map(|name| Parameter {
                        name: name.clone(),
                        kind: "String".into(),
                        value: "t0k3n".into(),
                        version: 1,
                    })
                    .collect();
                Ok(Found {
                    parameters,
                    invalid: vec![],
                })
            }
        }
        let content = json!({"schemaVersion": "2.2",
               "parameters": {"token": {"type": "String", "allowedPattern": "^[a-z0-9]+$"}},
               "mainSteps": [{"action": "aws:runShellScript", "name": "use",
                              "inputs": {"runCommand": ["echo {{ token }} {{ssm:/b}}"]}}]});
        let supplied = json!({"token": "{{ssm:/app/token}}"});
        // Admission: the pattern is not checked against the reference's text.
        let kept = parsed(content.clone(), supplied.clone());
        assert!(kept.parameter_store);
        assert_eq!(
            kept.steps[0].inputs[0]["runCommand"][0],
            "echo {{ssm:/app/token}} {{ssm:/b}}"
        );
        let mut resolver = parameter_store::Resolver::new(&Token);
        let resolved = parse(
            &content,
            &params(supplied),
            References::Resolve(&mut resolver),
        )
        .unwrap();
        assert!(!resolved.parameter_store);
        assert_eq!(
            resolved.steps[0].inputs[0]["runCommand"][0],
            "echo t0k3n t0k3n"
        );
        // The resolved value is what allowedPattern sees.
        let mut resolver = parameter_store::Resolver::new(&Token);
        let strict = json!({"schemaVersion": "2.2",
               "parameters": {"token": {"type": "String", "allowedPattern": "^x$"}},
               "mainSteps": [{"action": "aws:runShellScript", "name": "use",
                              "inputs": {"runCommand": ["echo {{ token }}"]}}]});
        let refused = parse(
            &strict,
            &params(json!({"token": "{{ssm:/app/token}}"})),
            References::Resolve(&mut resolver),
        )
        .unwrap_err();
        assert!(
            refused.0.contains("validating parameter /token/"),
            "{refused}"
        );
        // ssm-secure is resolved only by plugins that take secrets; elsewhere it is text.
        let document = parsed(
            v22(json!([{"action": "aws:runShellScript", "name": "s",
                        "inputs": {"runCommand": ["{{ssm-secure:key}}"]}}])),
            json!({}),
        );
        assert!(!document.parameter_store);
    }
}
