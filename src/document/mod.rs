//! SSM Command documents: schema versions, parameters, preconditions, and the step list the
//! engine runs. Pure data in, data out: no I/O and no processes here.
//! STUB: interface fixed; implementation in progress.

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
    /// Inputs after parameter substitution: one element for 2.x; for 1.x each element of
    /// `properties` (an object becomes a one-element list).
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

/// `content` is the `DocumentContent` object; `parameters` the caller's values.
pub fn parse(content: &Value, parameters: &Map<String, Value>) -> Result<Document, DocumentError> {
    let _ = (content, parameters);
    todo!("document::parse")
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
    pub environment: Vec<(String, String)>,
}

/// Decodes one property set; the error is upstream's message for the step's output.
pub fn shell_script_input(inputs: &Value) -> Result<ShellScriptInput, String> {
    let _ = inputs;
    todo!("document::shell_script_input")
}
