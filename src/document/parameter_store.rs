//! Parameter Store references, `{{ssm:name}}` and `{{ssm:name:version}}`, resolved with
//! `ssm:GetParameters` the way upstream's docparser does (docs/protocol.md §3.7): references are
//! collected from a whole value (document parameters, then each step's inputs), looked up ten
//! names a call, and replaced; a StringList reference that is a whole array element becomes one
//! element per item. Unknown names, SecureString values and a StringList used inside a string fail
//! the command with upstream's texts, so nothing literal ever reaches a script.

use serde_json::Value;
use std::collections::BTreeMap;

/// Names per `GetParameters` call: the service's limit (upstream `MaxParametersPerCall`).
pub const NAMES_PER_CALL: usize = 10;

/// One parameter as `GetParameters` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    pub name: String,
    pub kind: String,
    pub value: String,
    pub version: i64,
}

/// What one `GetParameters` call found.
#[derive(Debug, Default)]
pub struct Found {
    pub parameters: Vec<Parameter>,
    pub invalid: Vec<String>,
}

impl Found {
    /// Reads a `GetParameters` answer (AWS JSON: exact key spellings). Read by hand: a serde
    /// `from_value` would link serde_json's `Value` deserializer, about 35 KB, for this one use.
    pub fn from_answer(answer: &Value) -> Result<Found, String> {
        let text = |p: &Value, key: &str| match &p[key] {
            Value::String(s) => Ok(s.clone()),
            other => Err(format!("Parameters[].{key} is {other}, not a string")),
        };
        let list = |key: &str| match &answer[key] {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) => Ok(items.clone()),
            other => Err(format!("{key} is {other}, not a list")),
        };
        let parameters = list("Parameters")?
            .iter()
            .map(|p| {
                Ok(Parameter {
                    name: text(p, "Name")?,
                    kind: text(p, "Type")?,
                    value: text(p, "Value")?,
                    version: p["Version"].as_i64().unwrap_or(0),
                })
            })
            .collect::<Result<_, String>>()?;
        let invalid = list("InvalidParameters")?
            .iter()
            .map(|n| {
                n.as_str()
                    .map(str::to_owned)
                    .ok_or(format!("InvalidParameters holds {n}"))
            })
            .collect::<Result<_, String>>()?;
        Ok(Found {
            parameters,
            invalid,
        })
    }
}

/// Where values come from: `ssm:GetParameters` for at most `NAMES_PER_CALL` names (a name may
/// carry a `:version` selector). The error is the service's message, shown to the user as is.
pub trait ParameterSource {
    fn get_parameters(&self, names: &[String]) -> Result<Found, String>;
}

/// Why references could not be resolved; each text is upstream's, word for word, because it is
/// what the console shows as the command's output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParameterStoreError {
    #[error("Input contains invalid parameters {}", go_list(.0))]
    Invalid(Vec<String>),
    #[error("Parameters {} of type SecureString are not supported", go_list(.0))]
    SecureString(Vec<String>),
    #[error("Parameter {0} of type StringList cannot be used as a String")]
    StringListAsString(String),
    /// A returned parameter matched no reference (a label selector, say) or a value had a shape
    /// upstream cannot rewrite (an array of strings mixed with other values).
    #[error("Encountered error while parsing input - internal error")]
    Internal,
    #[error("{0}")]
    Service(String),
}

/// Go's `%v` of a `[]string`: `[a b]`.
fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Resolves references against `source`, remembering what it looked up so that the parameters'
/// values and the steps' inputs of one document cost one lookup per name.
pub struct Resolver<'a> {
    source: &'a dyn ParameterSource,
    /// Selector (the text after `ssm:`, e.g. `/app/db:3`) → its parameter.
    known: BTreeMap<String, Parameter>,
}

impl<'a> Resolver<'a> {
    pub fn new(source: &'a dyn ParameterSource) -> Resolver<'a> {
        Resolver {
            source,
            known: BTreeMap::new(),
        }
    }

    /// `value` with every reference replaced; `value` itself when it holds none.
    pub fn resolve(&mut self, value: &Value) -> Result<Value, ParameterStoreError> {
        let mut references = Vec::new();
        collect(value, &mut references);
        if references.is_empty() {
            return Ok(value.clone());
        }
        self.look_up(&references)?;
        let table: Vec<(&str, &Parameter)> = references
            .iter()
            .filter_map(|r| Some((r.text, self.known.get(r.selector)?)))
            .collect();
        replace(value, &table)
    }

    /// Fetches the selectors not known yet, in batches, then checks them as upstream does: every
    /// name found, every reference matched, no SecureString.
    fn look_up(&mut self, references: &[Reference<'_>]) -> Result<(), ParameterStoreError> {
        let mut names: Vec<String> = Vec::new();
        for r in references {
            if !self.known.contains_key(r.selector) && !names.iter().any(|n| n == r.selector) {
                names.push(r.selector.to_owned());
            }
        }
        let mut found = Found::default();
        for batch in names.chunks(NAMES_PER_CALL) {
            let mut part = self
                .source
                .get_parameters(batch)
                .map_err(ParameterStoreError::Service)?;
            found.parameters.append(&mut part.parameters);
            found.invalid.append(&mut part.invalid);
        }
        if found.parameters.len() != names.len() || !found.invalid.is_empty() {
            return Err(ParameterStoreError::Invalid(found.invalid));
        }
        let secure: Vec<String> = found
            .parameters
            .iter()
            .filter(|p| p.kind == "SecureString")
            .map(|p| p.name.clone())
            .collect();
        let mut unmatched = names;
        for parameter in found.parameters {
            let selector =
                claim(&mut unmatched, &parameter).ok_or(ParameterStoreError::Internal)?;
            self.known.insert(selector, parameter);
        }
        match secure.is_empty() {
            true => Ok(()),
            false => Err(ParameterStoreError::SecureString(secure)),
        }
    }
}

/// Takes the selector `parameter` answers out of `unmatched`: its `name:version` when that was
/// asked for, else its bare name (upstream tries the versioned form first). A bare name and
/// `name:1` both come back named `name`, in no promised order, so a parameter is matched by its
/// version, never by its place in the answer.
fn claim(unmatched: &mut Vec<String>, parameter: &Parameter) -> Option<String> {
    let versioned = format!("{}:{}", parameter.name, parameter.version);
    let at = unmatched
        .iter()
        .position(|s| *s == versioned)
        .or_else(|| unmatched.iter().position(|s| *s == parameter.name))?;
    Some(unmatched.remove(at))
}

/// Whether `value` holds a reference `Resolver::resolve` would look up.
pub fn holds_reference(value: &Value) -> bool {
    let mut found = Vec::new();
    collect(value, &mut found);
    !found.is_empty()
}

/// One `{{ ssm:selector }}` occurrence: the whole text, and the selector inside it.
struct Reference<'t> {
    text: &'t str,
    selector: &'t str,
}

/// Every reference in the string values of `value` (object keys are not searched, as upstream).
fn collect<'t>(value: &'t Value, into: &mut Vec<Reference<'t>>) {
    match value {
        Value::String(text) => into.extend(references_in(text)),
        Value::Array(items) => items.iter().for_each(|v| collect(v, into)),
        Value::Object(map) => map.values().for_each(|v| collect(v, into)),
        _ => {}
    }
}

/// Upstream's pattern `\{\{ *ssm:[/\w.:-]+ *\}\}`, leftmost and non-overlapping.
fn references_in(text: &str) -> Vec<Reference<'_>> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '.' | ':' | '-');
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find("{{") {
        let start = from + open;
        let inner = text[start + 2..].trim_start_matches(' ');
        let reference = inner.strip_prefix("ssm:").and_then(|rest| {
            let len = rest.find(|c| !is_name(c)).unwrap_or(rest.len());
            let tail = rest[len..].trim_start_matches(' ');
            let end = text.len() - tail.len() + 2;
            (len > 0 && tail.starts_with("}}")).then(|| Reference {
                text: &text[start..end],
                selector: &rest[..len],
            })
        });
        match reference {
            Some(r) => {
                from = start + r.text.len();
                found.push(r);
            }
            None => from = start + 1,
        }
    }
    found
}

/// `value` with the references of `table` replaced (upstream `replaceSSMParameters`).
fn replace(value: &Value, table: &[(&str, &Parameter)]) -> Result<Value, ParameterStoreError> {
    match value {
        Value::String(text) => replace_in_string(text, table).map(Value::String),
        Value::Array(items) if matches!(items.first(), Some(Value::String(_))) => {
            replace_in_list(items, table)
        }
        Value::Array(items) => items.iter().map(|v| replace(v, table)).collect(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| Ok((k.clone(), replace(v, table)?)))
            .collect::<Result<_, _>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

fn replace_in_string(
    text: &str,
    table: &[(&str, &Parameter)],
) -> Result<String, ParameterStoreError> {
    let mut out = text.to_owned();
    for (reference, parameter) in table {
        if parameter.kind == "StringList" && out.contains(reference) {
            return Err(ParameterStoreError::StringListAsString(
                parameter.name.clone(),
            ));
        }
        out = out.replace(reference, &parameter.value);
    }
    Ok(out)
}

/// An array of strings: an element that is exactly a StringList reference becomes one element
/// per comma-separated item (upstream `parseStringList`); a StringList anywhere else is an error.
fn replace_in_list(
    items: &[Value],
    table: &[(&str, &Parameter)],
) -> Result<Value, ParameterStoreError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(text) = item else {
            return Err(ParameterStoreError::Internal);
        };
        let whole_list = table
            .iter()
            .find(|(r, p)| p.kind == "StringList" && *r == text.trim());
        match whole_list {
            Some((_, list)) => out.extend(list.value.split(',').map(|s| Value::String(s.into()))),
            None => out.push(Value::String(replace_in_string(text, table)?)),
        }
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::cell::RefCell;

    /// A Parameter Store double that records every call.
    struct Store {
        parameters: Vec<Parameter>,
        calls: RefCell<Vec<Vec<String>>>,
    }

    fn parameter(name: &str, kind: &str, value: &str, version: i64) -> Parameter {
        Parameter {
            name: name.into(),
            kind: kind.into(),
            value: value.into(),
            version,
        }
    }

    impl Store {
        fn new(parameters: Vec<Parameter>) -> Store {
            Store {
                parameters,
                calls: RefCell::new(Vec::new()),
            }
        }
    }

    impl ParameterSource for Store {
        fn get_parameters(&self, names: &[String]) -> Result<Found, String> {
            self.calls.borrow_mut().push(names.to_vec());
            let mut found = Found::default();
            for name in names {
                let (plain, version) = match name.split_once(':') {
                    Some((n, v)) => (n, v.parse::<i64>().ok()),
                    None => (name.as_str(), None),
                };
                let hit = self
                    .parameters
                    .iter()
                    .filter(|p| p.name == plain && version.is_none_or(|v| p.version == v))
                    .max_by_key(|p| p.version);
                match hit {
                    Some(p) => found.parameters.push(p.clone()),
                    None => found.invalid.push(name.clone()),
                }
            }
            Ok(found)
        }
    }

    fn store() -> Store {
        Store::new(vec![
            parameter("/app/greeting", "String", "hello", 1),
            parameter("/app/greeting", "String", "hi", 2),
            parameter("cmds", "StringList", "ls,date", 1),
            parameter("db.password", "SecureString", "s3cret", 1),
        ])
    }

    #[test]
    fn references_in_strings_arrays_and_objects_are_replaced() {
        let store = store();
        let mut resolver = Resolver::new(&store);
        let input = json!({"runCommand": ["echo {{ssm:/app/greeting}} {{ ssm:/app/greeting:1 }}"],
                           "workingDirectory": "{{ssm:/app/greeting}}", "timeout": 5});
        let out = resolver.resolve(&input).unwrap();
        assert_eq!(
            out,
            json!({"runCommand": ["echo hi hello"], "workingDirectory": "hi", "timeout": 5})
        );
        assert_eq!(
            *store.calls.borrow(),
            [vec![
                "/app/greeting".to_owned(),
                "/app/greeting:1".to_owned()
            ]]
        );
        // The same names again are not looked up twice within one document.
        resolver.resolve(&input).unwrap();
        assert_eq!(store.calls.borrow().len(), 1);
    }

    #[test]
    fn versions_are_matched_whatever_the_order_of_the_answer() {
        /// Answers as `store()` does, last name first (moto answers in hash order).
        struct Reversed(Store);
        impl ParameterSource for Reversed {
            fn get_parameters(&self, names: &[String]) -> Result<Found, String> {
                let mut found = self.0.get_parameters(names)?;
                found.parameters.reverse();
                Ok(found)
            }
        }
        let store = Reversed(store());
        let input = json!("{{ssm:/app/greeting}} {{ssm:/app/greeting:1}}");
        let out = Resolver::new(&store).resolve(&input).unwrap();
        assert_eq!(out, json!("hi hello"));
    }

    #[test]
    fn string_lists_expand_as_whole_elements_and_fail_inside_strings() {
        let store = store();
        let out = Resolver::new(&store)
            .resolve(&json!({"runCommand": ["{{ssm:cmds}}", "pwd"]}))
            .unwrap();
        assert_eq!(out, json!({"runCommand": ["ls", "date", "pwd"]}));
        let err = Resolver::new(&store)
            .resolve(&json!({"runCommand": ["echo {{ssm:cmds}}"]}))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Parameter cmds of type StringList cannot be used as a String"
        );
    }

    #[test]
    fn unknown_names_and_secure_strings_fail_with_upstreams_texts() {
        let store = store();
        let err = Resolver::new(&store)
            .resolve(&json!([
                "{{ssm:nope}} {{ssm:/app/greeting}} {{ssm:gone:4}}"
            ]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Input contains invalid parameters [nope gone:4]"
        );
        let err = Resolver::new(&store)
            .resolve(&json!("{{ssm:db.password}}"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Parameters [db.password] of type SecureString are not supported"
        );
    }

    #[test]
    fn answers_are_read_in_the_services_shape() {
        let found = Found::from_answer(&json!({
            "Parameters": [{"Name": "/a", "Type": "String", "Value": "v", "Version": 3,
                            "ARN": "arn:aws:ssm:r:1:parameter/a", "DataType": "text"}],
            "InvalidParameters": ["/b"]}))
        .unwrap();
        assert_eq!(found.parameters, [parameter("/a", "String", "v", 3)]);
        assert_eq!(found.invalid, ["/b"]);
        assert!(
            Found::from_answer(&json!({}))
                .unwrap()
                .parameters
                .is_empty()
        );
        let bad = Found::from_answer(&json!({"Parameters": [{"Name": 1}]})).unwrap_err();
        assert_eq!(bad, "Parameters[].Name is 1, not a string");
    }

    #[test]
    fn names_go_ten_to_a_call() {
        let parameters = (0..23)
            .map(|i| parameter(&format!("p{i}"), "String", &i.to_string(), 1))
            .collect();
        let store = Store::new(parameters);
        let text: Vec<String> = (0..23).map(|i| format!("{{{{ssm:p{i}}}}}")).collect();
        let out = Resolver::new(&store)
            .resolve(&json!(text.join(",")))
            .unwrap();
        let want: Vec<String> = (0..23).map(|i| i.to_string()).collect();
        assert_eq!(out, json!(want.join(",")));
        let sizes: Vec<usize> = store.calls.borrow().iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 3]);
    }

    #[test]
    fn text_that_is_no_reference_is_left_alone_without_a_call() {
        let store = store();
        for text in [
            "{{ssm:}}",
            "{{ssm: x }}",
            "{{ssmx:/a}}",
            "ssm:/a",
            "{{\tssm:a}}",
            "{{ssm:a b}}",
        ] {
            assert_eq!(
                Resolver::new(&store).resolve(&json!(text)).unwrap(),
                json!(text)
            );
        }
        assert!(store.calls.borrow().is_empty());
    }

    #[test]
    fn a_service_error_is_passed_through_and_a_label_selector_is_an_internal_error() {
        struct Failing;
        impl ParameterSource for Failing {
            fn get_parameters(&self, _: &[String]) -> Result<Found, String> {
                Err("AccessDeniedException: not allowed".into())
            }
        }
        let err = Resolver::new(&Failing)
            .resolve(&json!("{{ssm:a}}"))
            .unwrap_err();
        assert_eq!(err.to_string(), "AccessDeniedException: not allowed");
        struct Labelled;
        impl ParameterSource for Labelled {
            fn get_parameters(&self, _: &[String]) -> Result<Found, String> {
                Ok(Found {
                    parameters: vec![parameter("a", "String", "v", 3)],
                    invalid: vec![],
                })
            }
        }
        let err = Resolver::new(&Labelled)
            .resolve(&json!("{{ssm:a:prod}}"))
            .unwrap_err();
        assert_eq!(err, ParameterStoreError::Internal);
    }
}
