//! Decoding one `aws:runShellScript` property set (docs/protocol.md §3.5), the way Go decodes
//! `RunScriptPluginInput`: case-insensitive keys, unknown keys ignored, `null` as absent.
//!
//! Only `runCommand` carries commands. Upstream has no `commands` alias (the 2.0 fixtures that use
//! `commands` run an empty script there), so neither do we: such input decodes to no commands.

use serde_json::Value;

use super::{ShellScriptInput, field, kind, string_field, text_or_empty};

const DEFAULT_TIMEOUT_SECONDS: u64 = 3600;
const MIN_TIMEOUT_SECONDS: i64 = 5;
const MAX_TIMEOUT_SECONDS: i64 = 172_800;

/// The error is the step's output text, worded as upstream's (`Invalid format in plugin
/// properties …`), so it stays a string here and in the helpers below that word its reason.
pub(crate) fn decode(inputs: &Value) -> Result<ShellScriptInput, String> {
    decode_fields(inputs)
        .map_err(|why| format!("Invalid format in plugin properties {inputs};\nerror {why}"))
}

fn decode_fields(inputs: &Value) -> Result<ShellScriptInput, String> {
    let empty = serde_json::Map::new();
    let inputs = match inputs {
        Value::Object(inputs) => inputs,
        Value::Null => &empty,
        other => {
            return Err(format!(
                "the properties must be an object, found {}",
                kind(other)
            ));
        }
    };
    let id = string_field(inputs, "id")?.unwrap_or_default();
    Ok(ShellScriptInput {
        run_command: run_command(field(inputs, "runCommand"))?,
        working_directory: string_field(inputs, "workingDirectory")?
            .unwrap_or_default()
            .to_owned(),
        timeout_seconds: timeout_seconds(field(inputs, "timeoutSeconds")),
        // Such ids would put the script directory outside the orchestration directory.
        id: match id.starts_with("../") || id.starts_with("~/") {
            true => String::new(),
            false => id.to_owned(),
        },
        environment: environment(field(inputs, "environment"))?,
    })
}

fn run_command(value: Option<&Value>) -> Result<Vec<String>, String> {
    let wrong = |found: &Value| {
        format!(
            "runCommand must be a list of strings, found {}",
            kind(found)
        )
    };
    match value {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| text_or_empty(item).map_err(wrong))
            .collect(),
        Some(other) => Err(wrong(other)),
    }
}

fn environment(value: Option<&Value>) -> Result<Vec<(String, String)>, String> {
    let wrong = |found: &Value| {
        format!(
            "environment must be an object of strings, found {}",
            kind(found)
        )
    };
    match value {
        None => Ok(Vec::new()),
        Some(Value::Object(variables)) => variables
            .iter()
            .map(|(name, value)| Ok((name.clone(), text_or_empty(value).map_err(wrong)?)))
            .collect(),
        Some(other) => Err(wrong(other)),
    }
}

/// Upstream `ValidateExecutionTimeout`: an integer or float, as a number or a string (floats
/// truncated); missing, unparsable or outside 5..=172800 gives 3600.
fn timeout_seconds(value: Option<&Value>) -> u64 {
    let seconds = match value {
        Some(Value::Number(number)) => number.as_f64().map(truncate),
        Some(Value::String(text)) => text
            .parse::<i64>()
            .ok()
            .or_else(|| text.parse::<f64>().ok().map(truncate)),
        _ => None,
    };
    match seconds {
        Some(s @ MIN_TIMEOUT_SECONDS..=MAX_TIMEOUT_SECONDS) => s.unsigned_abs(),
        _ => DEFAULT_TIMEOUT_SECONDS,
    }
}

/// Float to integer toward zero; NaN and out-of-range values land outside the valid range.
fn truncate(value: f64) -> i64 {
    value as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_a_full_property_set_case_insensitively() {
        let input = decode(&json!({
            "RunCommand": ["echo hello", null, "ls"],
            "WORKINGDIRECTORY": "/tmp",
            "timeoutseconds": "120",
            "Id": "0.aws:runShellScript",
            "Environment": {"B": "2", "A": "1", "C": null},
            "commands": ["ignored"],
            "unknown": {"x": 1}
        }))
        .unwrap();
        assert_eq!(
            input,
            ShellScriptInput {
                run_command: vec!["echo hello".into(), String::new(), "ls".into()],
                working_directory: "/tmp".into(),
                timeout_seconds: 120,
                id: "0.aws:runShellScript".into(),
                environment: vec![
                    ("A".into(), "1".into()),
                    ("B".into(), "2".into()),
                    ("C".into(), String::new())
                ],
            }
        );
    }

    #[test]
    fn exact_key_wins_over_other_case() {
        let input = decode(&json!({"runCommand": ["exact"], "RUNCOMMAND": ["folded"]})).unwrap();
        assert_eq!(input.run_command, ["exact"]);
    }

    #[test]
    fn missing_or_null_fields_take_defaults() {
        let expected = ShellScriptInput {
            run_command: vec![],
            working_directory: String::new(),
            timeout_seconds: 3600,
            id: String::new(),
            environment: vec![],
        };
        assert_eq!(decode(&json!({})), Ok(expected.clone()));
        assert_eq!(decode(&Value::Null), Ok(expected.clone()));
        assert_eq!(
            decode(
                &json!({"runCommand": null, "workingDirectory": null, "id": null, "environment": null})
            ),
            Ok(expected.clone())
        );
        // `commands` is not an alias of `runCommand` (upstream ignores it too).
        assert_eq!(decode(&json!({"commands": ["ls"]})), Ok(expected));
    }

    #[test]
    fn a_bare_string_run_command_is_rejected_with_the_inputs() {
        let inputs = json!({"runCommand": "echo hi", "id": "0.x"});
        assert_eq!(
            decode(&inputs),
            Err(
                r#"Invalid format in plugin properties {"id":"0.x","runCommand":"echo hi"};
error runCommand must be a list of strings, found a string"#
                    .to_owned()
            )
        );
        for bad in [
            json!({"runCommand": ["ok", 5]}),
            json!({"runCommand": {"a": "b"}}),
            json!({"workingDirectory": 1}),
            json!({"id": ["x"]}),
            json!({"environment": ["A=1"]}),
            json!({"environment": {"A": 1}}),
            json!("echo hi"),
            json!([{"runCommand": ["ls"]}]),
        ] {
            let err = decode(&bad).unwrap_err();
            assert!(
                err.starts_with("Invalid format in plugin properties "),
                "{err}"
            );
        }
    }

    #[test]
    fn timeout_follows_validate_execution_timeout() {
        let timeout = |v: Value| {
            decode(&json!({ "timeoutSeconds": v }))
                .unwrap()
                .timeout_seconds
        };
        for (value, expected) in [
            (json!("5"), 5),
            (json!("4"), 3600),
            (json!(172800), 172800),
            (json!(172801), 3600),
            (json!("172800.9"), 172800),
            (json!(10.7), 10),
            (json!("1e3"), 1000),
            (json!(" 10"), 3600),
            (json!("abc"), 3600),
            (json!(""), 3600),
            (json!("NaN"), 3600),
            (json!("-20"), 3600),
            (json!(1e300), 3600),
            (json!(true), 3600),
            (json!(["60"]), 3600),
        ] {
            assert_eq!(timeout(value.clone()), expected, "{value}");
        }
        assert_eq!(decode(&json!({})).unwrap().timeout_seconds, 3600);
    }

    #[test]
    fn escaping_ids_are_dropped() {
        let id = |v: &str| decode(&json!({ "id": v })).unwrap().id;
        assert_eq!(id("../etc"), "");
        assert_eq!(id("~/x"), "");
        assert_eq!(id("0.aws:runShellScript"), "0.aws:runShellScript");
        assert_eq!(id("a/../b"), "a/../b");
    }
}
