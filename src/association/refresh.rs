//! `aws:refreshAssociation` (AWS-RefreshAssociation): asks the scheduler to run the named
//! associations now, all of them when none is named (docs/protocol.md §7.4). Upstream runs every
//! association whatever the ids; this agent runs only those named.

use super::scheduler::Mailbox;
use serde_json::Value;

pub const PLUGIN: &str = "aws:refreshAssociation";

/// The step's output, or why it failed.
pub fn run(inputs: &Value, scheduler: Option<&Mailbox>) -> Result<String, String> {
    let Some(scheduler) = scheduler else {
        return Err("this agent runs no association scheduler (no usable ssm endpoint, or ssm-lite run-document)".into());
    };
    let ids = association_ids(inputs)?;
    let text = match ids.is_empty() {
        true => "All associations have been requested to execute immediately".to_owned(),
        // Go's %v of a []string.
        false => format!(
            "Associations [{}] have been requested to execute immediately",
            ids.join(" ")
        ),
    };
    scheduler.refresh(ids);
    Ok(text)
}

/// `associationIds`: a list of strings (or one string); `[]` and `[""]` mean all.
fn association_ids(inputs: &Value) -> Result<Vec<String>, String> {
    let value = inputs
        .as_object()
        .and_then(|m| crate::document::field(m, "associationIds"));
    let ids: Vec<String> = match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| invalid(inputs))?,
        _ => return Err(invalid(inputs)),
    };
    Ok(ids.into_iter().filter(|id| !id.trim().is_empty()).collect())
}

/// Upstream's text for inputs it cannot read.
fn invalid(inputs: &Value) -> String {
    format!(
        "Invalid format in plugin properties {inputs};\nerror associationIds must be a list of strings"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn named_ids_are_honoured_and_none_means_all() {
        let mailbox = Mailbox::default();
        let named = run(&json!({"associationIds": ["a-1", "a-2"]}), Some(&mailbox)).unwrap();
        assert_eq!(
            named,
            "Associations [a-1 a-2] have been requested to execute immediately"
        );
        let all = run(&json!({"associationIds": [""]}), Some(&mailbox)).unwrap();
        assert_eq!(
            all,
            "All associations have been requested to execute immediately"
        );
        assert!(run(&json!({"associationIds": [1]}), Some(&mailbox)).is_err());
        assert!(
            run(&json!({}), None)
                .unwrap_err()
                .contains("no association scheduler")
        );
    }
}
