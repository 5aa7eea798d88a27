//! Document parameters (docs/protocol.md §3.2): which values apply, `allowedPattern` checks (and,
//! for `aws:runDocument`'s sub-documents, upstream's other validators, §3.13), and `{{ name }}`
//! substitution.
//!
//! `{{ssm:…}}` Parameter Store references are not resolved yet: [`super::parse`] refuses a
//! command that holds one before its values are checked here.

use serde_json::{Map, Value};

use super::pattern::Pattern;
use super::{DocumentError, field, invalid, kind, string_field, wrong_kind};

/// Parameter name → value, after dropping invalid names and adding defaults.
pub(crate) type Values = Map<String, Value>;

/// One entry of the document's `parameters`.
pub(crate) struct Declared {
    name: String,
    kind: String,
    default: Value,
    allowed_pattern: String,
    allowed_values: Vec<String>,
    /// `minChars`, `maxChars`, `minItems`, `maxItems` as written (Go `json.Number` text).
    min_chars: Option<String>,
    max_chars: Option<String>,
    min_items: Option<String>,
    max_items: Option<String>,
}

/// Decodes the document's `parameters` object (absent or `null` means none).
pub(crate) fn declared(parameters: Option<&Value>) -> Result<Vec<Declared>, DocumentError> {
    let Some(parameters) = parameters else {
        return Ok(Vec::new());
    };
    let Value::Object(parameters) = parameters else {
        return Err(wrong_kind("parameters", "an object", parameters));
    };
    let mut out = Vec::with_capacity(parameters.len());
    for (name, definition) in parameters {
        let path = format!("parameters.{name}");
        let definition = match definition {
            Value::Object(definition) => definition,
            Value::Null => &Map::new(),
            other => {
                return Err(wrong_kind(&path, "an object", other));
            }
        };
        let text = |key| string_field(definition, key).map_err(|why| invalid(&path, &why));
        let number = |key| number_text(definition, key).map_err(|why| invalid(&path, &why));
        out.push(Declared {
            name: name.clone(),
            kind: text("type")?.unwrap_or_default().to_owned(),
            default: field(definition, "default").cloned().unwrap_or(Value::Null),
            allowed_pattern: text("allowedPattern")?.unwrap_or_default().to_owned(),
            allowed_values: string_list(definition, "allowedValues")
                .map_err(|why| invalid(&path, &why))?,
            min_chars: number("minChars")?,
            max_chars: number("maxChars")?,
            min_items: number("minItems")?,
            max_items: number("maxItems")?,
        });
    }
    Ok(out)
}

/// A `json.Number` field: a number, or a string (as YAML gives it), as its text.
fn number_text(definition: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match field(definition, key) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(format!("{key} must be a number, found {}", kind(other))),
    }
}

/// A `[]string` field.
fn string_list(definition: &Map<String, Value>, key: &str) -> Result<Vec<String>, String> {
    match field(definition, key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                super::text_or_empty(item)
                    .map_err(|v| format!("{key} must hold strings, found {}", kind(v)))
            })
            .collect(),
        Some(other) => Err(format!("{key} must be an array, found {}", kind(other))),
    }
}

/// Supplied values with valid names, plus the default of every declared parameter not supplied.
pub(crate) fn values(declared: &[Declared], supplied: &Map<String, Value>) -> Values {
    let mut values = Values::new();
    for (name, value) in supplied {
        if valid_name(name) {
            values.insert(name.clone(), value.clone());
        } else {
            log::warn!(
                "document: ignoring parameter {name:?}: names may only contain letters and digits"
            );
        }
    }
    for parameter in declared {
        values
            .entry(parameter.name.clone())
            .or_insert_with(|| parameter.default.clone());
    }
    values
}

/// Upstream's `^[a-zA-Z0-9]+$`.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Automaton steps all `allowedPattern` compiles and checks of one document may take: about
/// 0.6 s on a 2 GHz x86_64 core at worst (a pattern of Go size 2,000, such as
/// `^[a-z0-9._-]{1,1000}$`, against 10,000 characters). Documents are parsed as they arrive, so
/// this bounds how long one command can hold up the others; a check beyond it fails, as one
/// that cannot be made.
const MATCH_BUDGET: u64 = 20_000_000;

/// Checks every declared `allowedPattern` (unanchored, like Go's `MatchString`). A pattern that
/// cannot be compiled fails the check, as upstream (where `regexp.Compile` fails), and so does a
/// check that would exceed [`MATCH_BUDGET`]. Error messages name the parameter and the pattern,
/// never the value.
/// Checks the `allowedPattern` of each declared parameter whose name `checked` accepts; with
/// `optional` (a sub-document of `aws:runDocument`, upstream `GetOptionalValidators`), also
/// min/max chars, min/max items and allowed values of the parameters it accepts.
pub(crate) fn validate(
    declared: &[Declared],
    values: &Values,
    checked: impl Fn(&str) -> bool,
    optional: Option<&dyn Fn(&str) -> bool>,
) -> Result<(), DocumentError> {
    let mut errors = pattern_errors(declared, values, checked);
    if let Some(optional) = optional {
        for parameter in declared.iter().filter(|p| optional(&p.name)) {
            let value = values.get(&parameter.name).unwrap_or(&Value::Null);
            errors.extend(optional_errors(parameter, value));
        }
    }
    match errors.is_empty() {
        true => Ok(()),
        false => Err(DocumentError(format!(
            "all errors during param validation errors: {}",
            errors.join("\n")
        ))),
    }
}

/// Upstream `AllowedRegexParamValidator` for each parameter `checked` accepts.
fn pattern_errors(
    declared: &[Declared],
    values: &Values,
    checked: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut errors = Vec::new();
    let mut budget = MATCH_BUDGET;
    let with_pattern = declared.iter().filter(|p| !p.allowed_pattern.is_empty());
    for parameter in with_pattern.filter(|p| checked(&p.name)) {
        let value = values.get(&parameter.name).unwrap_or(&Value::Null);
        let outcome = match Pattern::new(&parameter.allowed_pattern, &mut budget) {
            Ok(pattern) => check(parameter, &pattern, value, &mut budget),
            Err(why) => Err(format!(
                "encountered error while compiling allowed pattern /{}/ - internal error: {why}",
                parameter.allowed_pattern
            )),
        };
        if let Err(why) = outcome {
            errors.push(format!(
                "error thrown in 'AllowedRegexParamValidator' while validating parameter /{}/: {why}",
                parameter.name
            ));
        }
    }
    errors
}

/// One of upstream's validators; the error is its text.
type Validator = fn(&Declared, &Value) -> Result<(), String>;

/// Upstream's optional validators in its order, each error in its words.
fn optional_errors(parameter: &Declared, value: &Value) -> Vec<String> {
    let checks: [(&str, Validator); 3] = [
        ("MinMaxCharParamValidator", min_max_chars),
        ("MinMaxItemParamValidator", min_max_items),
        ("AllowedValueParamValidator", allowed_value),
    ];
    checks
        .iter()
        .filter_map(|(name, check)| {
            let why = check(parameter, value).err()?;
            Some(format!(
                "error thrown in '{name}' while validating parameter /{}/: {why}",
                parameter.name
            ))
        })
        .collect()
}

/// Upstream `GetCleanedUpVal`: the bound, or `fallback` when it is not an integer in 0..=2^31-1.
fn bound(text: &Option<String>, fallback: i64) -> Option<i64> {
    let text = text.as_deref().filter(|t| !t.is_empty())?;
    Some(
        text.parse::<i64>()
            .ok()
            .filter(|n| (0..=i64::from(i32::MAX)).contains(n))
            .unwrap_or(fallback),
    )
}

/// Go's `invalid parameter type …` for a value a validator cannot read.
fn invalid_type(parameter: &Declared, value: &Value) -> String {
    format!(
        "invalid parameter type {} with parameter value {}",
        parameter.kind,
        go_value(value)
    )
}

/// `minmaxcharparamvalidator`: strings by their byte length, list elements one by one
/// (non-strings as JSON), maps as JSON; not for `Integer` or `Boolean` parameters.
fn min_max_chars(parameter: &Declared, value: &Value) -> Result<(), String> {
    let (min, max) = (
        bound(&parameter.min_chars, 0),
        bound(&parameter.max_chars, i64::from(i32::MAX)),
    );
    if (min.is_none() && max.is_none()) || matches!(parameter.kind.as_str(), "Integer" | "Boolean")
    {
        return Ok(());
    }
    let check = |text: &str| {
        let len = text.len() as i64;
        if min.is_some_and(|min| len < min) {
            return Err(format!(
                "parameter value /{text}/ is less than the min char limit /{}/",
                min.unwrap_or_default()
            ));
        }
        match max.filter(|max| len > *max) {
            Some(max) => Err(format!(
                "parameter value /{text}/ is exceeding the max chars /{max}/"
            )),
            None => Ok(()),
        }
    };
    each_text(parameter, value, check)
}

/// Applies `check` as upstream's text validators see a value: a string as it is, each element of
/// a list (non-strings as JSON), a map as JSON; other kinds are the wrong type.
fn each_text(
    parameter: &Declared,
    value: &Value,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<(), String> {
    match value {
        Value::String(text) => check(text),
        Value::Array(items) => items.iter().try_for_each(|item| match item {
            Value::String(text) => check(text),
            other => check(&go_json(other)),
        }),
        Value::Object(_) => check(&go_json(value)),
        other => Err(invalid_type(parameter, other)),
    }
}

/// `minmaxitemparamvalidator`: the length of a list or a map; a string passes (a StringMap from
/// the console); not for `String`, `Integer` or `Boolean` parameters.
fn min_max_items(parameter: &Declared, value: &Value) -> Result<(), String> {
    let (min, max) = (
        bound(&parameter.min_items, 0),
        bound(&parameter.max_items, i64::from(i32::MAX)),
    );
    let ignored = matches!(parameter.kind.as_str(), "Integer" | "Boolean" | "String");
    if (min.is_none() && max.is_none()) || ignored {
        return Ok(());
    }
    let len = match value {
        Value::String(_) => return Ok(()),
        Value::Array(items) => items.len() as i64,
        Value::Object(map) => map.len() as i64,
        other => return Err(invalid_type(parameter, other)),
    };
    if min.is_some_and(|min| len < min) {
        return Err(format!(
            "parameter value list length /{len}/ is less the min item count"
        ));
    }
    match max.filter(|max| len > *max) {
        // Upstream names the limit here, not the length.
        Some(max) => Err(format!(
            "parameter value list length /{max}/ has exceeded the max item count"
        )),
        None => Ok(()),
    }
}

/// `allowedvalueparamvalidator`. As upstream, an `Integer` or `Boolean` parameter must equal its
/// default (its values are not compared with `allowedValues` at all); others must be in
/// `allowedValues` when it has any: strings as they are, list elements one by one (non-strings
/// as JSON), maps as JSON.
fn allowed_value(parameter: &Declared, value: &Value) -> Result<(), String> {
    match parameter.kind.as_str() {
        "Integer" => return integer_is_default(parameter, value),
        "Boolean" => {
            return match (value, &parameter.default) {
                (Value::Bool(v), Value::Bool(d)) if v == d => Ok(()),
                _ => Err(format!(
                    "parameter value /{}/ not equal to default for Boolean",
                    go_value(value)
                )),
            };
        }
        _ => {}
    }
    let allowed = &parameter.allowed_values;
    if allowed.is_empty() {
        return Ok(());
    }
    let check = |text: &str| match allowed.iter().any(|a| a == text) {
        true => Ok(()),
        false => Err(format!(
            "parameter value /{text}/ is not in the allowed list [{}]",
            allowed.join(" ")
        )),
    };
    each_text(parameter, value, check)
}

/// Upstream `isIntegerParamValueSetToDefault`: a number within int32, printed as the default is.
fn integer_is_default(parameter: &Declared, value: &Value) -> Result<(), String> {
    let Some(number) = value.as_f64() else {
        return Err(format!(
            "could not convert /{}/ to float64 for Integer",
            go_value(value)
        ));
    };
    let shown = go_value(value);
    if number >= f64::from(i32::MAX) || number <= f64::from(i32::MIN) {
        return Err(format!(
            "out-of-boundary error for parameter value /{shown}/ for type Integer "
        ));
    }
    let default = go_value(&parameter.default);
    match shown == default {
        true => Ok(()),
        false => Err(format!(
            "parameter value /{shown}/ not equal to default /{default}/ for Integer"
        )),
    }
}

/// The JSON type of `value` as Go's decoding errors name it (`json: cannot unmarshal number …`).
pub(crate) fn go_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as Go's `%v` prints what `encoding/json` decoded: `<nil>`, `[a b]`, `map[k:v]`,
/// numbers as float64 (`5`, `0.5`, `1e+21`).
pub(crate) fn go_value(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_float(n),
        Value::String(text) => text.clone(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(go_value).collect();
            format!("[{}]", items.join(" "))
        }
        Value::Object(map) => {
            let entries: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}:{}", go_value(v)))
                .collect();
            format!("map[{}]", entries.join(" "))
        }
    }
}

/// Go `%v` of a JSON number, which Go decodes as a float64: `%g` with the shortest digits, in
/// exponent form for a decimal exponent below -4 or from 6 on (`1e+06`, `1.5e-05`). Made from
/// serde_json's own float text, which saves linking core's float formatting (~24 KB with the
/// parsing in yaml.rs).
fn go_float(n: &serde_json::Number) -> String {
    let float = n.as_f64().and_then(serde_json::Number::from_f64);
    let text = float.map_or_else(|| n.to_string(), |f| f.to_string());
    let (sign, text) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    let (mantissa, exponent) = text.split_once(['e', 'E']).unwrap_or((text, "0"));
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let lead = digits.len() - digits.trim_start_matches('0').len();
    let digits = digits[lead..].trim_end_matches('0');
    if digits.is_empty() {
        return "0".to_owned();
    }
    // The decimal point is `point` digits into `digits`.
    let point = int.len() as i64 - lead as i64 + exponent.parse::<i64>().unwrap_or(0);
    let e = point - 1;
    let len = digits.len() as i64;
    let body = if !(-4..6).contains(&e) {
        let rest = &digits[1..];
        let dot = if rest.is_empty() { "" } else { "." };
        let e_sign = if e < 0 { '-' } else { '+' };
        format!("{}{dot}{rest}e{e_sign}{:02}", &digits[..1], e.abs())
    } else if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point >= len {
        format!("{digits}{}", "0".repeat((point - len) as usize))
    } else {
        format!(
            "{}.{}",
            &digits[..point as usize],
            &digits[point as usize..]
        )
    };
    format!("{sign}{body}")
}

/// Strings are matched as they are, list elements one by one (non-strings as JSON), maps as JSON;
/// any other value (including a missing one) is an error, as upstream.
/// The error is one line of upstream's validation message for the reply, hence a string.
fn check(
    parameter: &Declared,
    pattern: &Pattern,
    value: &Value,
    budget: &mut u64,
) -> Result<(), String> {
    let mut one = |text: &str| check_text(parameter, pattern, text, budget);
    match value {
        Value::String(text) => one(text),
        Value::Array(items) => items.iter().try_for_each(|item| match item {
            Value::String(text) => one(text),
            other => one(&go_json(other)),
        }),
        Value::Object(_) => one(&go_json(value)),
        other => Err(format!(
            "invalid parameter type {} with {} parameter value",
            parameter.kind,
            kind(other)
        )),
    }
}

fn check_text(
    parameter: &Declared,
    pattern: &Pattern,
    text: &str,
    budget: &mut u64,
) -> Result<(), String> {
    let source = &parameter.allowed_pattern;
    let cost = pattern.cost(text);
    if cost > *budget {
        return Err(format!(
            "parameter value of {} bytes is too long for ssm-lite to check against the allowed \
             pattern /{source}/ (it checks at most {MATCH_BUDGET} automaton steps a command)",
            text.len()
        ));
    }
    *budget -= cost;
    match pattern.is_match(text) {
        true => Ok(()),
        false => Err(format!(
            "parameter value does not match the allowed pattern /{source}/"
        )),
    }
}

/// Replaces parameter references in every string of `value` (array elements and object values,
/// not keys). A string that is exactly `{{ name }}` becomes the value itself (any JSON type);
/// otherwise each `{{ name }}` inside a string becomes the value as text (strings verbatim, other
/// values as JSON) with `$$` collapsed to `$`. Single pass: substituted text is not re-scanned.
/// Unknown names are left as they are.
pub(crate) fn substitute(value: &Value, values: &Values) -> Value {
    match value {
        Value::String(text) => match whole_reference(text, values) {
            Some(replacement) => replacement.clone(),
            None => Value::String(substitute_text(text, values)),
        },
        Value::Array(items) => {
            Value::Array(items.iter().map(|item| substitute(item, values)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| (key.clone(), substitute(item, values)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The value of `text` when it is exactly `{{ name }}` for a known, validly named parameter.
fn whole_reference<'v>(text: &str, values: &'v Values) -> Option<&'v Value> {
    let inner = text.strip_prefix("{{")?.strip_suffix("}}")?;
    let name = trim_go_space(inner);
    valid_name(name).then(|| values.get(name)).flatten()
}

/// In-string substitution; also what precondition arguments use (always text).
pub(crate) fn substitute_text(text: &str, values: &Values) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let known = after.find("}}").and_then(|close| {
            values
                .get(trim_go_space(&after[..close]))
                .map(|value| (close, value))
        });
        match known {
            Some((close, value)) => {
                out.push_str(&rest[..open]);
                out.push_str(&as_text(value).replace("$$", "$"));
                rest = &after[close + 2..];
            }
            None => {
                // Not a reference here; one may still start at the next `{`.
                out.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Go regexp `\s`.
fn go_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0C' | '\r' | ' ')
}

fn trim_go_space(text: &str) -> &str {
    text.trim_matches(go_space)
}

/// The first Parameter Store reference in `text`: `{{`, Go whitespace, one of `prefixes`
/// (`ssm:`, `ssm-secure:`), one or more characters `name_char` accepts, Go whitespace, `}}`.
/// Upstream finds them with regular expressions of that shape; this scan is linear in the text,
/// whatever substitution made it.
pub(crate) fn find_reference<'t>(
    text: &'t str,
    prefixes: &[&str],
    name_char: fn(char) -> bool,
) -> Option<&'t str> {
    let mut from = 0;
    while let Some(open) = text[from..].find("{{") {
        let start = from + open;
        let rest = &text[start + 2..];
        let name = rest.trim_start_matches(go_space);
        let found = prefixes
            .iter()
            .find_map(|p| name.strip_prefix(p))
            .and_then(|name| {
                let len = name.find(|c| !name_char(c)).unwrap_or(name.len());
                let tail = name[len..].trim_start_matches(go_space);
                (len > 0 && tail.starts_with("}}"))
                    .then(|| &text[start..text.len() - tail.len() + 2])
            });
        if found.is_some() {
            return found;
        }
        // `{` is neither space nor a name character: the next scan starts past this one's text.
        from = start + 1;
    }
    None
}

/// A value as upstream renders it inside a string: strings verbatim, the rest as JSON.
pub(crate) fn as_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => go_json(other),
    }
}

/// JSON as Go's `json.Marshal` writes it: keys sorted (as `serde_json::Map` already is) and
/// `<`, `>`, `&`, U+2028, U+2029 escaped. (Go also rewrites numbers via float64, e.g. `5.0` as
/// `5`; numbers are kept as written here.)
fn go_json(value: &Value) -> String {
    let mut out = String::new();
    for c in value.to_string().chars() {
        match c {
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values_of(value: Value) -> Values {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn whole_value_reference_becomes_the_value_itself() {
        let values = values_of(json!({"p1": ["echo hello", "ls"], "n": 5, "o": {"k": "v"}}));
        assert_eq!(
            substitute(&json!("{{ p1 }}"), &values),
            json!(["echo hello", "ls"])
        );
        assert_eq!(
            substitute(&json!("{{p1}}"), &values),
            json!(["echo hello", "ls"])
        );
        assert_eq!(substitute(&json!("{{\t n \n}}"), &values), json!(5));
        assert_eq!(substitute(&json!("{{ o }}"), &values), json!({"k": "v"}));
        // Two references, or text around one, is in-string substitution.
        assert_eq!(substitute(&json!("{{ n }}{{ n }}"), &values), json!("55"));
        assert_eq!(substitute(&json!("a {{ n }}"), &values), json!("a 5"));
    }

    #[test]
    fn in_string_substitution_matches_upstream_vectors() {
        let values = values_of(json!({"p1": "name", "p2": "p2-value"}));
        for (text, expected) in [
            ("A {{ p1 }}", "A name"),
            ("A {{p1 }} is a {{ p1}}", "A name is a name"),
            ("{{p1}} and {{p2}}", "name and p2-value"),
            ("there is no parameter", "there is no parameter"),
            (
                " we have {{p1}} and {{p2}}, but no {{p3}}",
                " we have name and p2-value, but no {{p3}}",
            ),
            ("{{{ p1 }}}", "{name}"),
            ("{{ {{p1}} }}", "{{ name }}"),
            ("{{ P1 }}", "{{ P1 }}"),
        ] {
            assert_eq!(substitute_text(text, &values), expected, "{text}");
        }
    }

    #[test]
    fn dollars_collapse_and_no_re_expansion() {
        let values = values_of(json!({
            "Path": "C:\\$$Recycle.Bin", "Plain": "C:\\$Recycle.Bin", "p1": "{{p2}}", "p2": "p2-value"
        }));
        for (text, expected) in [
            ("Write-Host '{{ Path }}'", "Write-Host 'C:\\$Recycle.Bin'"),
            ("Write-Host '{{Plain}}'", "Write-Host 'C:\\$Recycle.Bin'"),
            (
                " embedded {{p1}} and {{p2}}, not {{p2}} twice",
                " embedded {{p2}} and p2-value, not p2-value twice",
            ),
        ] {
            assert_eq!(substitute_text(text, &values), expected, "{text}");
        }
        // The whole-value form hands the value over untouched.
        assert_eq!(
            substitute(&json!("{{ Path }}"), &values),
            json!("C:\\$$Recycle.Bin")
        );
    }

    #[test]
    fn non_strings_render_as_go_json() {
        let values = values_of(json!({
            "list": ["a", "plane"], "n": 5, "obj": {"S": "p2-string", "I": 10}, "t": true, "nil": null,
            "html": ["a > b && c < d"]
        }));
        assert_eq!(
            substitute_text("put {{ list }} here", &values),
            r#"put ["a","plane"] here"#
        );
        assert_eq!(substitute_text("put {{ n }} here", &values), "put 5 here");
        assert_eq!(
            substitute_text("{{obj}}", &values),
            r#"{"I":10,"S":"p2-string"}"#
        );
        assert_eq!(substitute_text("{{t}}/{{nil}}", &values), "true/null");
        assert_eq!(
            substitute_text("x{{html}}", &values),
            r#"x["a \u003e b \u0026\u0026 c \u003c d"]"#
        );
    }

    #[test]
    fn recursion_reaches_values_not_keys() {
        let values = values_of(json!({"p": "v", "cmds": ["echo hello; ls; whoami;"], "wd": ""}));
        let input = json!([{
            "workingDirectory": "{{ workingDirectory }}",
            "timeoutSeconds": "{{ timeoutSeconds }}",
            "runCommand": "{{ cmds }}",
            "{{ p }}": ["{{ p }}", {"deep": "x{{p}}y"}, 3, true, null],
            "id": "0.aws:runScript"
        }]);
        let expected = json!([{
            "workingDirectory": "{{ workingDirectory }}",
            "timeoutSeconds": "{{ timeoutSeconds }}",
            "runCommand": ["echo hello; ls; whoami;"],
            "{{ p }}": ["v", {"deep": "xvy"}, 3, true, null],
            "id": "0.aws:runScript"
        }]);
        assert_eq!(substitute(&input, &values), expected);
    }

    #[test]
    fn invalid_names_are_dropped_and_defaults_fill_in() {
        let declared = declared(Some(&json!({
            "commands": {"type": "StringList"},
            "workingDirectory": {"type": "String", "default": ""},
            "executionTimeout": {"Type": "String", "Default": "3600"}
        })))
        .unwrap();
        let supplied = values_of(
            json!({"commands": ["ls"], "bad-name": "x", "run Command": "y", "extra1": 1}),
        );
        let values = values(&declared, &supplied);
        assert_eq!(
            Value::Object(values),
            json!({"commands": ["ls"], "workingDirectory": "", "executionTimeout": "3600", "extra1": 1})
        );
        let none = super::values(&declared, &Map::new());
        assert_eq!(none.get("commands"), Some(&Value::Null));
    }

    #[test]
    fn parameter_definitions_must_be_objects() {
        let err = declared(Some(&json!({"p": "String"}))).err().unwrap();
        assert!(
            err.0.contains("parameters.p") && err.0.contains("a string"),
            "{err}"
        );
        let err = declared(Some(&json!({"p": {"allowedPattern": 5}})))
            .err()
            .unwrap();
        assert!(err.0.contains("allowedPattern must be a string"), "{err}");
        assert!(declared(Some(&json!([1]))).is_err());
    }

    const TIMEOUT_PATTERN: &str =
        "([1-9][0-9]{0,4})|(1[0-6][0-9]{4})|(17[0-1][0-9]{3})|(172[0-7][0-9]{2})|(172800)";

    fn validated(definition: Value, supplied: Value) -> Result<(), DocumentError> {
        let declared = declared(Some(&definition))?;
        let values = values(&declared, &values_of(supplied));
        validate(&declared, &values, |_| true, None)
    }

    #[test]
    fn allowed_pattern_validation() {
        let definition = json!({"executionTimeout": {"type": "String", "default": "3600", "allowedPattern": TIMEOUT_PATTERN}});
        assert_eq!(validated(definition.clone(), json!({})), Ok(()));
        assert_eq!(
            validated(definition.clone(), json!({"executionTimeout": "172800"})),
            Ok(())
        );
        assert_eq!(
            validated(
                definition.clone(),
                json!({"executionTimeout": ["60", "90"]})
            ),
            Ok(())
        );
        let err =
            validated(definition.clone(), json!({"executionTimeout": "secret-x"})).unwrap_err();
        assert_eq!(
            err.0,
            format!(
                "all errors during param validation errors: error thrown in 'AllowedRegexParamValidator' \
                 while validating parameter /executionTimeout/: parameter value does not match the allowed \
                 pattern /{TIMEOUT_PATTERN}/"
            )
        );
        assert!(!err.0.contains("secret"));
        assert!(validated(definition.clone(), json!({"executionTimeout": ["60", "x"]})).is_err());
        // Numbers, booleans and null are not checkable: an error, as upstream.
        let err = validated(definition, json!({"executionTimeout": 60})).unwrap_err();
        assert!(
            err.0
                .contains("invalid parameter type String with a number"),
            "{err}"
        );
    }

    #[test]
    fn maps_and_list_elements_are_matched_as_json() {
        let definition =
            json!({"m": {"type": "StringMap", "allowedPattern": "^\\{\"k\":\"v\"\\}$"}});
        assert_eq!(
            validated(definition.clone(), json!({"m": {"k": "v"}})),
            Ok(())
        );
        assert!(validated(definition, json!({"m": {"k": "w"}})).is_err());
        let definition = json!({"l": {"type": "StringList", "allowedPattern": "^\\d+$"}});
        assert_eq!(
            validated(definition.clone(), json!({"l": ["1", 2]})),
            Ok(())
        );
        assert!(validated(definition, json!({"l": [true]})).is_err());
    }

    #[test]
    fn every_failure_is_reported_and_every_pattern_is_checked() {
        let definition = json!({
            "a": {"allowedPattern": "^x$"}, "b": {"allowedPattern": "^y$"}, "c": {"allowedPattern": "(?i)^z$"}
        });
        let err = validated(definition.clone(), json!({"a": "1", "b": "2", "c": "3"})).unwrap_err();
        let lines: Vec<&str> = err.0.lines().collect();
        assert_eq!(lines.len(), 3, "{err}");
        assert!(
            lines[0].contains("/a/") && lines[1].contains("/b/") && lines[2].contains("/c/"),
            "{err}"
        );
        assert_eq!(
            validated(definition, json!({"a": "x", "b": "y", "c": "Z"})),
            Ok(())
        );
    }

    /// Patterns the old engine skipped, so that `x; touch /tmp/pwned` passed them.
    #[test]
    fn go_syntax_is_enforced_not_skipped() {
        for pattern in [r"(?i)^[a-z0-9]+$", r"^\w+\b$", "^[[:alnum:]]+$"] {
            let definition = json!({"p": {"type": "String", "allowedPattern": pattern}});
            let err = validated(definition.clone(), json!({"p": "x; touch /tmp/pwned"}))
                .expect_err(pattern);
            assert!(
                err.0
                    .contains("parameter value does not match the allowed pattern"),
                "{err}"
            );
            assert_eq!(
                validated(definition, json!({"p": "Abc"})),
                Ok(()),
                "{pattern}"
            );
        }
        // Unicode classes cannot be checked yet: refused, whatever the value.
        let definition = json!({"p": {"type": "String", "allowedPattern": r"^\pL+$"}});
        for value in ["x; touch /tmp/pwned", "Abc"] {
            let err = validated(definition.clone(), json!({ "p": value })).unwrap_err();
            assert!(
                err.0.contains(
                    "parameter /p/: encountered error while compiling allowed pattern /^\\pL+$/"
                ) && err.0.contains("ssm-lite cannot check Unicode classes"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_pattern_that_cannot_be_compiled_fails_closed() {
        let hostile = "((((){1000}){1000}){1000}){1000}";
        let definition =
            json!({"p": {"allowedPattern": hostile}, "q": {"allowedPattern": "a{1001}"}});
        let err = validated(definition, json!({"p": "x", "q": "a"})).unwrap_err();
        assert_eq!(
            err.0,
            format!(
                "all errors during param validation errors: error thrown in 'AllowedRegexParamValidator' \
                 while validating parameter /p/: encountered error while compiling allowed pattern /{hostile}/ \
                 - internal error: error parsing regexp: expression too large\n\
                 error thrown in 'AllowedRegexParamValidator' while validating parameter /q/: encountered \
                 error while compiling allowed pattern /a{{1001}}/ - internal error: error parsing regexp: \
                 invalid repeat count: `{{1001}}`"
            )
        );
    }

    #[test]
    fn checks_beyond_the_match_budget_fail_closed() {
        // Linear, but 18,000 automaton states over 100,000 characters would match for a minute.
        let definition = json!({"p": {"allowedPattern": "(a{1,100}){1,90}x"}});
        let err = validated(definition, json!({"p": "a".repeat(100_000)})).unwrap_err();
        assert!(
            err.0.contains(
                "parameter value of 100000 bytes is too long for ssm-lite to check against the allowed pattern"
            ),
            "{err}"
        );
        // The budget is per command: many parameters share it. Each compile and check here costs
        // 2,001 + 2,003,001.
        let (mut definitions, mut supplied) = (Map::new(), Map::new());
        for i in 0..100 {
            definitions.insert(
                format!("p{i}"),
                json!({"allowedPattern": "^[a-z]{1,1000}$"}),
            );
            supplied.insert(format!("p{i}"), json!("a".repeat(1000)));
        }
        let err = validated(Value::Object(definitions), Value::Object(supplied)).unwrap_err();
        assert_eq!(
            err.0.matches("is too long for ssm-lite").count(),
            91,
            "{err}"
        );
        assert!(!err.0.contains("does not match"), "{err}");
        // Compiling is charged too: 100 patterns of Go size 1,002,001: 19 are compiled (and refused), 81 not.
        let (mut definitions, mut supplied) = (Map::new(), Map::new());
        for i in 0..100 {
            definitions.insert(
                format!("p{i}"),
                json!({"allowedPattern": "^(a{1000}){1000}"}),
            );
            supplied.insert(format!("p{i}"), json!(""));
        }
        let err = validated(Value::Object(definitions), Value::Object(supplied)).unwrap_err();
        assert_eq!(
            err.0
                .matches("with what is left of this command's budget")
                .count(),
            81,
            "{err}"
        );
    }

    /// What a sub-document of aws:runDocument gets: every validator, in upstream's order.
    fn sub_validated(definition: Value, supplied: Value) -> Result<(), String> {
        let declared = declared(Some(&definition)).map_err(|e| e.0)?;
        let values = values(&declared, &values_of(supplied));
        validate(&declared, &values, |_| true, Some(&|_: &str| true)).map_err(|e| e.0)
    }

    const PREFIX: &str = "all errors during param validation errors: ";

    #[test]
    fn optional_validators_apply_only_to_sub_documents() {
        let definition = json!({"p": {"type": "String", "allowedValues": ["a"]}});
        let declared = declared(Some(&definition)).unwrap();
        let values = values(&declared, &values_of(json!({"p": "b"})));
        assert_eq!(validate(&declared, &values, |_| true, None), Ok(()));
        assert!(sub_validated(definition, json!({"p": "b"})).is_err());
    }

    #[test]
    fn optional_validators_min_max_chars() {
        let definition = json!({"p": {"type": "String", "minChars": 2, "maxChars": "4"}});
        assert_eq!(
            sub_validated(definition.clone(), json!({"p": "abc"})),
            Ok(())
        );
        assert_eq!(
            sub_validated(definition.clone(), json!({"p": "a"})),
            Err(format!(
                "{PREFIX}error thrown in 'MinMaxCharParamValidator' while validating parameter /p/: parameter value /a/ is less than the min char limit /2/"
            ))
        );
        assert_eq!(
            sub_validated(definition.clone(), json!({"p": "abcde"})),
            Err(format!(
                "{PREFIX}error thrown in 'MinMaxCharParamValidator' while validating parameter /p/: parameter value /abcde/ is exceeding the max chars /4/"
            ))
        );
        // List elements one by one, non-strings as JSON; a missing value cannot be read.
        let list = json!({"p": {"type": "StringList", "maxChars": 3}});
        assert!(sub_validated(list.clone(), json!({"p": ["ab", "abc"]})).is_ok());
        let err = sub_validated(list.clone(), json!({"p": ["ab", {"k": 1}]})).unwrap_err();
        assert!(
            err.ends_with("parameter value /{\"k\":1}/ is exceeding the max chars /3/"),
            "{err}"
        );
        let err = sub_validated(list, json!({})).unwrap_err();
        assert!(
            err.ends_with("invalid parameter type StringList with parameter value <nil>"),
            "{err}"
        );
        // A bound that is not a non-negative int32 is upstream's fallback: 0 for a minimum.
        let odd = json!({"p": {"type": "String", "minChars": "-3", "maxChars": "x"}});
        assert!(sub_validated(odd, json!({"p": ""})).is_ok());
        // Integer and Boolean parameters have no char limits.
        let int = json!({"p": {"type": "Integer", "default": 5, "maxChars": 0}});
        assert!(sub_validated(int, json!({"p": 5})).is_ok());
    }

    #[test]
    fn optional_validators_min_max_items() {
        let definition = json!({"p": {"type": "StringList", "minItems": 2, "maxItems": 3}});
        assert!(sub_validated(definition.clone(), json!({"p": ["a", "b"]})).is_ok());
        assert_eq!(
            sub_validated(definition.clone(), json!({"p": ["a"]})),
            Err(format!(
                "{PREFIX}error thrown in 'MinMaxItemParamValidator' while validating parameter /p/: parameter value list length /1/ is less the min item count"
            ))
        );
        // Upstream names the limit, not the length, when there are too many.
        assert_eq!(
            sub_validated(definition.clone(), json!({"p": ["a", "b", "c", "d", "e"]})),
            Err(format!(
                "{PREFIX}error thrown in 'MinMaxItemParamValidator' while validating parameter /p/: parameter value list length /3/ has exceeded the max item count"
            ))
        );
        // A string (a StringMap from the console) passes; String parameters are not counted.
        assert!(sub_validated(definition, json!({"p": "a"})).is_ok());
        let string = json!({"p": {"type": "String", "maxItems": 0}});
        assert!(sub_validated(string, json!({"p": "abc"})).is_ok());
        let map = json!({"p": {"type": "StringMap", "maxItems": 1}});
        assert!(sub_validated(map, json!({"p": {"a": "1", "b": "2"}})).is_err());
    }

    #[test]
    fn optional_validators_allowed_values() {
        let definition = json!({"p": {"type": "StringList", "allowedValues": ["a", "b"]}});
        assert!(sub_validated(definition.clone(), json!({"p": ["a", "b"]})).is_ok());
        assert_eq!(
            sub_validated(definition.clone(), json!({"p": ["a", "c", "d"]})),
            Err(format!(
                "{PREFIX}error thrown in 'AllowedValueParamValidator' while validating parameter /p/: parameter value /c/ is not in the allowed list [a b]"
            ))
        );
        let err = sub_validated(definition, json!({"p": 5})).unwrap_err();
        assert!(
            err.ends_with("invalid parameter type StringList with parameter value 5"),
            "{err}"
        );
        // As upstream: Integer and Boolean values must equal their defaults.
        let int = json!({"n": {"type": "Integer", "default": 3, "allowedValues": ["4"]}});
        assert!(sub_validated(int.clone(), json!({})).is_ok());
        assert_eq!(
            sub_validated(int.clone(), json!({"n": 4})),
            Err(format!(
                "{PREFIX}error thrown in 'AllowedValueParamValidator' while validating parameter /n/: parameter value /4/ not equal to default /3/ for Integer"
            ))
        );
        let err = sub_validated(int.clone(), json!({"n": "3"})).unwrap_err();
        assert!(
            err.ends_with("could not convert /3/ to float64 for Integer"),
            "{err}"
        );
        let err = sub_validated(int, json!({"n": 3_000_000_000u64})).unwrap_err();
        assert!(
            err.ends_with("out-of-boundary error for parameter value /3e+09/ for type Integer "),
            "{err}"
        );
        let boolean = json!({"b": {"type": "Boolean", "default": true}});
        assert!(sub_validated(boolean.clone(), json!({"b": true})).is_ok());
        let err = sub_validated(boolean, json!({"b": false})).unwrap_err();
        assert!(
            err.ends_with("parameter value /false/ not equal to default for Boolean"),
            "{err}"
        );
    }

    /// Pattern errors first, then each parameter's optional errors in validator order.
    #[test]
    fn every_validator_reports_in_upstreams_order() {
        let definition = json!({
            "a": {"type": "StringList", "maxItems": 1, "allowedValues": ["x"], "maxChars": 1},
            "b": {"type": "String", "allowedPattern": "^[0-9]+$"}
        });
        let err = sub_validated(definition, json!({"a": ["yy", "z"], "b": "q"})).unwrap_err();
        let validators: Vec<&str> = err
            .split('\n')
            .map(|line| line.split('\'').nth(1).unwrap_or_default())
            .collect();
        assert_eq!(
            validators,
            [
                "AllowedRegexParamValidator",
                "MinMaxCharParamValidator",
                "MinMaxItemParamValidator",
                "AllowedValueParamValidator"
            ]
        );
    }

    #[test]
    fn values_print_as_gos_percent_v() {
        let cases = [
            (json!(null), "<nil>"),
            (json!(5), "5"),
            (json!(5.0), "5"),
            (json!(0.5), "0.5"),
            (json!(100000), "100000"),
            (json!(1234567), "1.234567e+06"),
            (json!(1e21), "1e+21"),
            (json!(0.00001), "1e-05"),
            (json!(0.000015), "1.5e-05"),
            (json!(0.0001), "0.0001"),
            (json!(-2.5), "-2.5"),
            (json!(0), "0"),
            (json!(3_000_000_000u64), "3e+09"),
            (json!(123.456), "123.456"),
            (json!(["a", 1]), "[a 1]"),
            (json!({"b": true, "a": "x"}), "map[a:x b:true]"),
        ];
        for (value, text) in cases {
            assert_eq!(go_value(&value), text);
        }
    }
}
