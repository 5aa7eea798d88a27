//! Step preconditions of schema 2.2 documents (docs/protocol.md §3.3). Only `StringEquals` with two
//! arguments is understood; operator names and `platformType` are compared exactly (they are Go
//! map keys and string constants, not struct fields).

use serde_json::Value;

use super::params::{Values, find_reference, substitute_text};
use super::{DocumentError, text_or_empty, wrong_kind};

/// The agent's platform type, as upstream reports it on Linux.
const PLATFORM_TYPE: &str = "linux";
const PLATFORM_VARIABLE: &str = "platformType";
const STRING_EQUALS: &str = "StringEquals";

/// A step's `precondition`: operator → arguments, in map order.
pub(crate) type Preconditions = Vec<(String, Vec<String>)>;

/// The result of evaluating all operators of one step.
#[derive(Debug, PartialEq)]
pub(crate) struct Outcome {
    /// False when a comparison was understood and did not hold.
    pub(crate) allowed: bool,
    /// Unsatisfied or unrecognised conditions, in upstream's wording.
    pub(crate) notes: Vec<String>,
}

/// Decodes a `precondition` object (`null` arguments mean none, `null` elements are empty).
pub(crate) fn decode(
    precondition: Option<&Value>,
    path: &str,
) -> Result<Preconditions, DocumentError> {
    let operators = match precondition {
        None => return Ok(Vec::new()),
        Some(Value::Object(operators)) => operators,
        Some(other) => {
            return Err(wrong_kind(path, "an object", other));
        }
    };
    operators
        .iter()
        .map(|(operator, arguments)| {
            Ok((operator.clone(), arguments_of(arguments, path, operator)?))
        })
        .collect()
}

fn arguments_of(
    arguments: &Value,
    path: &str,
    operator: &str,
) -> Result<Vec<String>, DocumentError> {
    let wrong =
        |found: &Value| wrong_kind(&format!("{path}.{operator}"), "a list of strings", found);
    match arguments {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|item| text_or_empty(item).map_err(wrong))
            .collect(),
        other => Err(wrong(other)),
    }
}

/// Evaluates every operator; arguments are compared after parameter substitution.
pub(crate) fn evaluate(preconditions: &[(String, Vec<String>)], values: &Values) -> Outcome {
    let mut outcome = Outcome {
        allowed: true,
        notes: Vec::new(),
    };
    for (operator, arguments) in preconditions {
        if operator != STRING_EQUALS {
            outcome
                .notes
                .push(format!("unrecognized operator: \"{operator}\""));
            continue;
        }
        let [first, second] = arguments.as_slice() else {
            outcome.notes.push(format!(
                "\"{operator}\": operator accepts exactly 2 arguments"
            ));
            continue;
        };
        match string_equals(first, second, values) {
            Comparison::Holds => {}
            Comparison::Fails => {
                outcome.allowed = false;
                outcome
                    .notes
                    .push(format!("\"{operator}\": [{first}, {second}]"));
            }
            Comparison::Unrecognized(why) => outcome.notes.push(format!("\"{operator}\": {why}")),
        }
    }
    outcome
}

enum Comparison {
    Holds,
    Fails,
    Unrecognized(String),
}

fn string_equals(first: &str, second: &str, values: &Values) -> Comparison {
    if first == second {
        return Comparison::Unrecognized(match first == PLATFORM_VARIABLE {
            true => format!("[{first} {second}]"),
            // Upstream hides the arguments here: they may be customer constants.
            false => "operator's arguments can't be identical".to_owned(),
        });
    }
    if [first, second].iter().any(|a| contains_reference(a, false)) {
        return Comparison::Unrecognized(
            "operator's arguments can't contain SSM parameters".to_owned(),
        );
    }
    if [first, second].iter().any(|a| contains_reference(a, true)) {
        return Comparison::Unrecognized(
            "operator's arguments can't contain secure SSM parameters".to_owned(),
        );
    }
    if first == PLATFORM_VARIABLE || second == PLATFORM_VARIABLE {
        let wanted = if first == PLATFORM_VARIABLE {
            second
        } else {
            first
        };
        if !wanted.eq_ignore_ascii_case(&substitute_text(wanted, values)) {
            return Comparison::Unrecognized(
                "the second argument for the platformType variable can't contain document parameters".to_owned(),
            );
        }
        return holds(wanted.to_lowercase() == PLATFORM_TYPE);
    }
    let (first_value, second_value) = (
        substitute_text(first, values),
        substitute_text(second, values),
    );
    if first_value == first && second_value == second {
        return Comparison::Unrecognized(
            "at least one of operator's arguments must contain a valid document parameter"
                .to_owned(),
        );
    }
    holds(first_value == second_value)
}

fn holds(equal: bool) -> Comparison {
    if equal {
        Comparison::Holds
    } else {
        Comparison::Fails
    }
}

/// Upstream's `{{\s*(ssm:[\w-/]+)\s*}}` test (`ssm-secure:` when `secure`).
fn contains_reference(text: &str, secure: bool) -> bool {
    let prefix = if secure { "ssm-secure:" } else { "ssm:" };
    find_reference(text, &[prefix], |c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/')
    })
    .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(precondition: Value, values: Value) -> Outcome {
        let preconditions = decode(Some(&precondition), "mainSteps[0].precondition").unwrap();
        let Value::Object(values) = values else {
            panic!("values")
        };
        evaluate(&preconditions, &values)
    }

    #[test]
    fn platform_type_in_either_order() {
        let ok = Outcome {
            allowed: true,
            notes: vec![],
        };
        assert_eq!(
            run(
                json!({"StringEquals": ["platformType", "Linux"]}),
                json!({})
            ),
            ok
        );
        assert_eq!(
            run(
                json!({"StringEquals": ["linux", "platformType"]}),
                json!({})
            ),
            ok
        );
        assert_eq!(
            run(
                json!({"StringEquals": ["platformType", "Windows"]}),
                json!({})
            ),
            Outcome {
                allowed: false,
                notes: vec!["\"StringEquals\": [platformType, Windows]".to_owned()]
            }
        );
        let with_param = run(
            json!({"StringEquals": ["platformType", "{{ os }}"]}),
            json!({"os": "Linux"}),
        );
        assert_eq!(
            with_param.notes,
            [
                "\"StringEquals\": the second argument for the platformType variable can't contain document parameters"
            ]
        );
        assert!(with_param.allowed);
    }

    #[test]
    fn parameter_comparisons() {
        let values = json!({"p1": "a", "p2": "a", "p3": "b"});
        let holds = run(json!({"StringEquals": ["{{ p1 }}", "a"]}), values.clone());
        assert_eq!((holds.allowed, holds.notes.len()), (true, 0));
        let two = run(
            json!({"StringEquals": ["{{p1}}", "{{p2}}"]}),
            values.clone(),
        );
        assert_eq!((two.allowed, two.notes.len()), (true, 0));
        let fails = run(
            json!({"StringEquals": ["{{ p1 }}", "{{ p3 }}"]}),
            values.clone(),
        );
        assert_eq!(fails.notes, ["\"StringEquals\": [{{ p1 }}, {{ p3 }}]"]);
        assert!(!fails.allowed);
        let literals = run(json!({"StringEquals": ["a", "b"]}), values.clone());
        assert_eq!(
            literals.notes,
            [
                "\"StringEquals\": at least one of operator's arguments must contain a valid document parameter"
            ]
        );
        let unknown = run(json!({"StringEquals": ["{{ nope }}", "a"]}), values);
        assert_eq!(unknown.notes.len(), 1);
    }

    #[test]
    fn unrecognised_forms() {
        let notes = |p| run(p, json!({"p1": "x"})).notes;
        assert_eq!(
            notes(json!({"StringEquals": ["platformType"]})),
            ["\"StringEquals\": operator accepts exactly 2 arguments"]
        );
        assert_eq!(
            notes(json!({"StringEquals": null})),
            ["\"StringEquals\": operator accepts exactly 2 arguments"]
        );
        assert_eq!(
            notes(json!({"StringEquals": ["platformType", "platformType"]})),
            ["\"StringEquals\": [platformType platformType]"]
        );
        assert_eq!(
            notes(json!({"StringEquals": ["{{ p1 }}", "{{ p1 }}"]})),
            ["\"StringEquals\": operator's arguments can't be identical"]
        );
        assert_eq!(
            notes(json!({"StringEquals": ["{{ ssm:/my/param }}", "{{ p1 }}"]})),
            ["\"StringEquals\": operator's arguments can't contain SSM parameters"]
        );
        assert_eq!(
            notes(json!({"StringEquals": ["{{ssm-secure:key}}", "{{ p1 }}"]})),
            ["\"StringEquals\": operator's arguments can't contain secure SSM parameters"]
        );
        assert_eq!(
            notes(json!({"StringLike": ["a", "b"]})),
            ["unrecognized operator: \"StringLike\""]
        );
        assert_eq!(
            notes(json!({"stringequals": ["platformType", "Linux"]})).len(),
            1
        );
    }

    #[test]
    fn decoding_rejects_impossible_types() {
        assert_eq!(decode(None, "p"), Ok(Vec::new()));
        assert!(decode(Some(&json!(["StringEquals"])), "p").is_err());
        let err = decode(
            Some(&json!({"StringEquals": "platformType"})),
            "mainSteps[1].precondition",
        )
        .unwrap_err();
        assert!(
            err.0.contains("mainSteps[1].precondition.StringEquals"),
            "{err}"
        );
        assert!(decode(Some(&json!({"StringEquals": [1, 2]})), "p").is_err());
        assert_eq!(
            decode(Some(&json!({"StringEquals": [null, "a"]})), "p"),
            Ok(vec![(
                "StringEquals".to_owned(),
                vec![String::new(), "a".to_owned()]
            )])
        );
        assert!(evaluate(&[], &Values::new()).allowed);
    }
}
