//! `ssm-lite run-document`: a document run locally through the engine, no AWS involved.

use super::RunDocumentArgs;
use serde_json::{Map, Value, json};
use ssm_lite::config::{Config, ConfigError};
use ssm_lite::random;
use ssm_lite::runcommand::EngineConfig;
use ssm_lite::runcommand::local::run_payload;
use ssm_lite::runcommand::payload;
use ssm_lite::state::{StateDir, StateError};
use std::path::PathBuf;

/// Why `run-document` could not run the document at all (a failing document is not an error).
#[derive(Debug, thiserror::Error)]
pub enum RunDocumentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot read document {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("document {} is not valid JSON: {error}", path.display())]
    Json {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("--parameters is not a JSON object: {0}")]
    Parameters(serde_json::Error),
}

/// `ssm-lite run-document`: runs a document file (or a whole send-command payload) and prints
/// the final reply. Returns whether the document succeeded.
pub fn run_document(args: &RunDocumentArgs) -> Result<bool, RunDocumentError> {
    let config = Config::load(args.config.as_deref())?;
    let path = || args.file.clone();
    let text = std::fs::read_to_string(&args.file).map_err(|error| RunDocumentError::Read {
        path: path(),
        error,
    })?;
    let doc: Value = serde_json::from_str(&text).map_err(|error| RunDocumentError::Json {
        path: path(),
        error,
    })?;
    let parameters: Map<String, Value> = match &args.parameters {
        None => Map::new(),
        Some(p) => serde_json::from_str(p).map_err(RunDocumentError::Parameters)?,
    };
    let command_id = random::uuid_v4();
    let is_payload = doc
        .as_object()
        .is_some_and(|o| payload::get_ci(o, "DocumentContent").is_some());
    let mut payload = if is_payload {
        doc
    } else {
        json!({ "DocumentContent": doc })
    };
    if let Some(obj) = payload.as_object_mut() {
        obj.insert("CommandId".into(), Value::String(command_id.clone()));
        if !parameters.is_empty() {
            obj.insert("Parameters".into(), Value::Object(parameters));
        }
    }
    let temp = args
        .state_dir
        .is_none()
        .then(|| std::env::temp_dir().join(format!("ssm-lite-run-{command_id}")));
    let root = args
        .state_dir
        .clone()
        .or_else(|| temp.clone())
        .expect("one of the two is set");
    let dir = StateDir::open(&root, "local")?
        .with_orchestration_root(&config.agent.orchestration_root_dir)?;
    let cfg = EngineConfig::from_config(&config, Vec::new());
    let reply = run_payload(cfg, dir, &command_id, &payload.to_string());
    if let Some(t) = temp {
        let _ = std::fs::remove_dir_all(t);
    }
    let value: Value = serde_json::from_str(&reply).unwrap_or(Value::String(reply));
    println!(
        "{}",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    );
    Ok(value["documentStatus"] == "Success")
}
