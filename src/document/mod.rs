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
//! `{{ssm:…}}` Parameter Store references are not resolved yet: they stay in the inputs as text.

mod params;
mod pattern;
mod precondition;
mod shell;

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
}

/// The message is the upstream text, sent to the service as `documentTraceOutput`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError(pub String);

impl std::fmt::Display for DocumentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DocumentError {}

/// `appconfig.SupportedDocumentVersions`.
const SUPPORTED_SCHEMAS: [&str; 7] = ["1.0", "1.2", "2.0", "2.0.1", "2.0.2", "2.0.3", "2.2"];
/// The first schema with preconditions and cross-platform skipping.
const PRECONDITION_SCHEMA: &str = "2.2";
/// The only plugin ssm-lite implements.
const SHELL_PLUGIN: &str = "aws:runShellScript";
/// Plugin names upstream knows (`allPlugins` and, on Unix, the session plugins): a document using
/// another name needs a newer agent; one using these needs a plugin ssm-lite does not have.
const KNOWN_PLUGINS: [&str; 21] = [
    "aws:runShellScript",
    "aws:runPowerShellScript",
    "aws:runDocument",
    "aws:downloadContent",
    "aws:configurePackage",
    "aws:softwareInventory",
    "aws:updateSsmAgent",
    "aws:updateAgent",
    "aws:domainJoin",
    "aws:cloudWatch",
    "aws:runDockerAction",
    "aws:configureDocker",
    "aws:configureContainers",
    "aws:refreshAssociation",
    "aws:psModule",
    "aws:applications",
    "aws:configureDaemon",
    "Standard_Stream",
    "InteractiveCommands",
    "NonInteractiveCommands",
    "Port",
];

/// `content` is the `DocumentContent` object; `parameters` the caller's values.
pub fn parse(content: &Value, parameters: &Map<String, Value>) -> Result<Document, DocumentError> {
    let Value::Object(content) = content else {
        return Err(invalid("the document", &format!("must be a JSON object, found {}", kind(content))));
    };
    let schema_version = string_field(content, "schemaVersion")
        .map_err(|why| invalid("the document", &why))?
        .unwrap_or_default()
        .to_owned();
    if !SUPPORTED_SCHEMAS.contains(&schema_version.as_str()) {
        return Err(DocumentError(format!(
            "Document with schema version {schema_version} is not supported by this version of ssm agent, please update to latest version"
        )));
    }
    let declared = params::declared(field(content, "parameters"))?;
    let values = params::values(&declared, parameters);
    params::validate(&declared, &values)?;
    let steps = match schema_version.starts_with("1.") {
        true => steps_v1(field(content, "runtimeConfig"), &values)?,
        false => steps_v2(field(content, "mainSteps"), &schema_version, &values)?,
    };
    if steps.is_empty() {
        return Err(DocumentError("Unsupported schema format".to_owned()));
    }
    Ok(Document { schema_version, steps })
}

/// One step per `runtimeConfig` entry; the plugin name is also the step id.
fn steps_v1(runtime_config: Option<&Value>, values: &params::Values) -> Result<Vec<Step>, DocumentError> {
    let plugins = match runtime_config {
        None => return Ok(Vec::new()),
        Some(Value::Object(plugins)) => plugins,
        Some(other) => return Err(invalid("runtimeConfig", &format!("must be an object, found {}", kind(other)))),
    };
    let mut steps = Vec::with_capacity(plugins.len());
    for (plugin, config) in plugins {
        let properties = match config {
            Value::Object(config) => field(config, "properties"),
            Value::Null => None,
            other => {
                let path = format!("runtimeConfig.{plugin}");
                return Err(invalid(&path, &format!("must be an object, found {}", kind(other))));
            }
        };
        let verdict = verdict(false, plugin, plugin, &[], values);
        steps.push(step(plugin.clone(), plugin.clone(), properties, values, verdict));
    }
    Ok(steps)
}

/// One step per `mainSteps` entry, in order.
fn steps_v2(main_steps: Option<&Value>, schema: &str, values: &params::Values) -> Result<Vec<Step>, DocumentError> {
    let entries = match main_steps {
        None => return Ok(Vec::new()),
        Some(Value::Array(entries)) => entries,
        Some(other) => return Err(invalid("mainSteps", &format!("must be an array, found {}", kind(other)))),
    };
    let preconditions_enabled = schema == PRECONDITION_SCHEMA;
    let mut steps = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let path = format!("mainSteps[{index}]");
        let Value::Object(entry) = entry else {
            return Err(invalid(&path, &format!("must be an object, found {}", kind(entry))));
        };
        let text = |key| string_field(entry, key).map_err(|why| invalid(&path, &why));
        let plugin = text("action")?.unwrap_or_default().to_owned();
        let id = text("name")?.unwrap_or_default().to_owned();
        let preconditions = precondition::decode(field(entry, "precondition"), &format!("{path}.precondition"))?;
        let verdict = verdict(preconditions_enabled, &plugin, &id, &preconditions, values);
        steps.push(step(id, plugin, field(entry, "inputs"), values, verdict));
    }
    Ok(steps)
}

/// Substitutes parameters in the step's inputs, unrolls an array, and reads the control inputs.
fn step(id: String, plugin: String, inputs: Option<&Value>, values: &params::Values, verdict: Verdict) -> Step {
    let inputs = inputs.map_or(Value::Null, |inputs| params::substitute(inputs, values));
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
    Step {
        id,
        plugin,
        inputs,
        verdict,
        on_failure,
        on_success,
        finally_step,
    }
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

/// Upstream `getStepExecutionOperation` (protocol.md §3.3), with "supported on this platform"
/// meaning "implemented by ssm-lite".
fn verdict(
    preconditions_enabled: bool,
    plugin: &str,
    id: &str,
    preconditions: &[(String, Vec<String>)],
    values: &params::Values,
) -> Verdict {
    let known = KNOWN_PLUGINS.contains(&plugin);
    let implemented = plugin == SHELL_PLUGIN;
    let unknown = || {
        Verdict::Fail(format!(
            "Plugin with name {plugin} is not supported by this version of ssm agent, please update to latest version. Step name: {id}"
        ))
    };
    let unsupported = || Verdict::Skip(format!("Step execution skipped due to unsupported plugin: {plugin}. Step name: {id}"));
    if !preconditions_enabled {
        return if !known {
            unknown()
        } else if !implemented {
            Verdict::Fail(format!("Plugin with name {plugin} is not supported in current platform. Step name: {id}"))
        } else if !preconditions.is_empty() {
            Verdict::Fail(format!(
                "Precondition is not supported for document schema version prior to 2.2. Step name: {id}"
            ))
        } else {
            Verdict::Run
        };
    }
    if preconditions.is_empty() {
        return if !known {
            unknown()
        } else if implemented {
            Verdict::Run
        } else {
            unsupported()
        };
    }
    let outcome = precondition::evaluate(preconditions, values);
    let notes = outcome.notes.join(", ");
    if outcome.allowed && !known {
        unknown()
    } else if !implemented {
        unsupported()
    } else if !outcome.allowed {
        Verdict::Skip(format!(
            "Step execution skipped due to unsatisfied preconditions: '{notes}'. Step name: {id}"
        ))
    } else if !notes.is_empty() {
        Verdict::Fail(format!(
            "Unrecognized precondition(s): '{notes}', please update agent to latest version. Step name: {id}"
        ))
    } else {
        Verdict::Run
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
pub(crate) fn field<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object
        .get(key)
        .or_else(|| object.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
        .filter(|value| !value.is_null())
}

/// [`field`] for a string; the error names the key and what was found instead.
pub(crate) fn string_field<'a>(object: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
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

/// A document whose shape cannot be decoded; `place` says where.
pub(crate) fn invalid(place: &str, problem: &str) -> DocumentError {
    DocumentError(format!("Invalid document content: {place}: {problem}; correct the document and send the command again"))
}
