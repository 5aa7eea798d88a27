//! YAML documents and `documentParameters` as JSON values (docs/protocol.md §3.13).
//!
//! Upstream decodes YAML with `gopkg.in/yaml.v2`, whose plain scalars follow YAML 1.1: `yes`/`no`/
//! `on`/`off` are booleans, `0777` is octal, `~` is null (its `resolve.go`); this module resolves
//! plain scalars the same way. Quoted and block scalars are strings. Only the first document of
//! a stream is read, as `yaml.Unmarshal` does. Timestamps stay text (upstream's would be
//! re-encoded as RFC 3339), `<<` merge keys are ordinary keys.
//!
//! Hostile input is bounded: the text's size, the nesting depth, and the number of values the
//! result holds, aliases counted at their expanded size (so "billion laughs" stops at the bound).
//! The events come from `saphyr-parser`, which keeps its own state on the heap, not the stack.

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, Tag};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;

/// Largest YAML text read; SSM documents are at most 64 KB, local ones get room to spare.
pub const MAX_INPUT_BYTES: usize = 1 << 20;
/// Deepest nesting of sequences and mappings.
pub const MAX_DEPTH: usize = 64;
/// Most values in the result, each alias counted as the values it copies.
pub const MAX_VALUES: usize = 200_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YamlError {
    #[error("the YAML text is {0} bytes; ssm-lite reads at most {MAX_INPUT_BYTES}")]
    TooLarge(usize),
    #[error("YAML syntax error at line {line} column {column}: {info}")]
    Syntax {
        line: usize,
        column: usize,
        info: String,
    },
    #[error("YAML nests deeper than {MAX_DEPTH} levels at line {0}; flatten the document")]
    TooDeep(usize),
    #[error(
        "YAML expands to more than {MAX_VALUES} values at line {0} (aliases count as the values \
         they copy); make the document smaller"
    )]
    TooManyValues(usize),
    #[error("YAML alias at line {0} refers to a node that is not complete (a recursive alias)")]
    OpenAlias(usize),
    #[error("YAML mapping key at line {0} is not a scalar; only scalar keys have a JSON form")]
    ComplexKey(usize),
    #[error("YAML mapping key {key:?} at line {line} is already defined in this mapping")]
    DuplicateKey { key: String, line: usize },
    #[error("YAML value {text:?} at line {line} has no JSON form")]
    NotJson { text: String, line: usize },
}

/// The first document of `text` as a JSON value; `Null` for an empty stream.
pub fn to_json(text: &str) -> Result<Value, YamlError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(YamlError::TooLarge(text.len()));
    }
    let mut builder = Builder::default();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(syntax)?;
        if builder.take(event, span)? {
            break;
        }
    }
    Ok(builder.root.unwrap_or(Value::Null))
}

fn syntax(e: ScanError) -> YamlError {
    YamlError::Syntax {
        line: e.marker().line(),
        column: e.marker().col() + 1,
        info: e.info().to_owned(),
    }
}

/// A sequence or mapping still open, with the anchor its value gets once closed.
enum Open {
    Seq(Vec<Value>, usize),
    Map {
        map: Map<String, Value>,
        key: Option<String>,
        anchor: usize,
    },
}

#[derive(Default)]
struct Builder {
    open: Vec<Open>,
    anchors: HashMap<usize, Value>,
    values: usize,
    root: Option<Value>,
}

impl Builder {
    /// Takes one event; true once the first document is complete.
    fn take(&mut self, event: Event<'_>, span: Span) -> Result<bool, YamlError> {
        let line = span.start.line();
        if self.expects_key() {
            return match event {
                Event::Scalar(text, ..) => self.set_key(text.into_owned(), line),
                Event::MappingEnd => self.close(line),
                _ => Err(YamlError::ComplexKey(line)),
            };
        }
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let value = scalar(&text, style, tag.as_deref(), line)?;
                self.add(value, anchor, 1, line)?;
            }
            Event::SequenceStart(anchor, _) => self.start(Open::Seq(Vec::new(), anchor), line)?,
            Event::MappingStart(anchor, _) => {
                let map = Map::new();
                let key = None;
                self.start(Open::Map { map, key, anchor }, line)?
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.close(line)?;
            }
            Event::Alias(id) => {
                let value = self.anchors.get(&id).cloned();
                let value = value.ok_or(YamlError::OpenAlias(line))?;
                let count = count_values(&value);
                self.add(value, 0, count, line)?;
            }
            Event::DocumentEnd => return Ok(self.root.is_some()),
            Event::StreamEnd => return Ok(true),
            Event::Nothing | Event::StreamStart | Event::DocumentStart(_) => {}
        }
        Ok(false)
    }

    fn expects_key(&self) -> bool {
        matches!(self.open.last(), Some(Open::Map { key: None, .. }))
    }

    fn set_key(&mut self, text: String, line: usize) -> Result<bool, YamlError> {
        if let Some(Open::Map { map, key, .. }) = self.open.last_mut() {
            if map.contains_key(&text) {
                return Err(YamlError::DuplicateKey { key: text, line });
            }
            *key = Some(text);
        }
        Ok(false)
    }

    fn start(&mut self, open: Open, line: usize) -> Result<(), YamlError> {
        if self.open.len() >= MAX_DEPTH {
            return Err(YamlError::TooDeep(line));
        }
        self.charge(1, line)?;
        self.open.push(open);
        Ok(())
    }

    fn close(&mut self, line: usize) -> Result<bool, YamlError> {
        let (value, anchor) = match self.open.pop() {
            Some(Open::Seq(items, anchor)) => (Value::Array(items), anchor),
            Some(Open::Map { map, anchor, .. }) => (Value::Object(map), anchor),
            None => return Ok(false),
        };
        // Charged when it was opened.
        self.add(value, anchor, 0, line)?;
        Ok(false)
    }

    /// Places a complete value in the open container (or as the root), keeping it for aliases
    /// when it has an anchor; `count` is how many values it adds to the total.
    fn add(
        &mut self,
        value: Value,
        anchor: usize,
        count: usize,
        line: usize,
    ) -> Result<(), YamlError> {
        self.charge(count, line)?;
        if anchor != 0 {
            self.anchors.insert(anchor, value.clone());
        }
        match self.open.last_mut() {
            None => self.root = Some(value),
            Some(Open::Seq(items, _)) => items.push(value),
            Some(Open::Map { map, key, .. }) => {
                if let Some(key) = key.take() {
                    map.insert(key, value);
                }
            }
        }
        Ok(())
    }

    fn charge(&mut self, count: usize, line: usize) -> Result<(), YamlError> {
        self.values = self.values.saturating_add(count);
        match self.values > MAX_VALUES {
            true => Err(YamlError::TooManyValues(line)),
            false => Ok(()),
        }
    }
}

/// Values in `value`, itself included.
fn count_values(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(count_values).sum::<usize>(),
        Value::Object(map) => 1 + map.values().map(count_values).sum::<usize>(),
        _ => 1,
    }
}

/// A scalar's value: plain ones resolved as yaml.v2 does, unless tagged `!!str`; the rest text.
fn scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    line: usize,
) -> Result<Value, YamlError> {
    let as_text = tag.is_some_and(|t| t.is_yaml_core_schema() && t.suffix == "str");
    if style != ScalarStyle::Plain || as_text {
        return Ok(Value::String(text.to_owned()));
    }
    let not_json = || YamlError::NotJson {
        text: text.to_owned(),
        line,
    };
    Ok(match resolve_plain(text) {
        Plain::Null => Value::Null,
        Plain::Bool(b) => Value::Bool(b),
        Plain::Int(n) => Value::from(n),
        Plain::Uint(n) => Value::from(n),
        Plain::Float(f) => Value::Number(Number::from_f64(f).ok_or_else(not_json)?),
        Plain::Text => Value::String(text.to_owned()),
    })
}

#[derive(Debug, PartialEq)]
enum Plain {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Text,
}

/// yaml.v2 `resolve`: the fixed words, then (for a leading digit or sign) an integer in Go's
/// `ParseInt(s, 0, 64)` syntax with `_` dropped, then a float; for a leading `.`, a float.
fn resolve_plain(text: &str) -> Plain {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Plain::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Plain::Bool(true);
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Plain::Bool(false);
        }
        ".nan" | ".NaN" | ".NAN" => return Plain::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Plain::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Plain::Float(f64::NEG_INFINITY),
        _ => {}
    }
    match text.as_bytes()[0] {
        b'.' => yaml_float(text).map_or(Plain::Text, Plain::Float),
        b'0'..=b'9' | b'+' | b'-' => {
            let plain = text.replace('_', "");
            go_int(&plain)
                .or_else(|| yaml_float(&plain).map(Plain::Float))
                .unwrap_or(Plain::Text)
        }
        _ => Plain::Text,
    }
}

/// Go `strconv.ParseInt(s, 0, 64)`, then `ParseUint`: a sign, then `0x`/`0o`/`0b`, a leading
/// `0` (octal) or decimal digits; also yaml.v2's own `-0b…`.
fn go_int(s: &str) -> Option<Plain> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = digits.get(..2).map(str::to_ascii_lowercase);
    let (radix, body) = match lower.as_deref() {
        Some("0x") => (16, &digits[2..]),
        Some("0o") => (8, &digits[2..]),
        Some("0b") => (2, &digits[2..]),
        _ if digits.len() > 1 && digits.starts_with('0') => (8, &digits[1..]),
        _ => (10, digits),
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(body, radix).ok()?;
    match negative {
        false => Some(i64::try_from(magnitude).map_or(Plain::Uint(magnitude), Plain::Int)),
        true if magnitude <= i64::MAX as u64 + 1 => {
            Some(Plain::Int(0i64.wrapping_sub_unsigned(magnitude)))
        }
        true => None,
    }
}

/// yaml.v2's `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`, then `ParseFloat`.
fn yaml_float(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => digits(frac),
        Some((int, frac)) => digits(int) && (frac.is_empty() || digits(frac)),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e)));
    if !(mantissa_ok && exponent_ok) {
        return None;
    }
    // As JSON, for serde_json's parser (core's would add ~10 KB): no `+`, no leading zeros, a
    // digit on both sides of the point. Out of range is an error, as for Go's `ParseFloat`.
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let frac = if frac.is_empty() {
        String::new()
    } else {
        format!(".{frac}")
    };
    let sign = if s.starts_with('-') { "-" } else { "" };
    let exponent = exponent.map(|e| format!("e{e}")).unwrap_or_default();
    serde_json::from_str(&format!("{sign}{int}{frac}{exponent}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_command_document_in_yaml_becomes_its_json() {
        let text = r#"
# a comment
---
schemaVersion: '2.2'
description: "Runs \"echo\""
parameters:
  Message:
    type: String
    default: hello
    allowedValues: [hello, bye]
    minChars: 2
mainSteps:
  - action: aws:runShellScript
    name: say
    inputs:
      timeoutSeconds: 60
      runCommand:
        - echo {{ Message }}
        - |
          cat <<EOF
          literal
          EOF
        - >
          folded
          text
      flow: {a: 1, b: [x, 'y z']}
"#;
        let value = to_json(text).unwrap();
        assert_eq!(value["schemaVersion"], json!("2.2"));
        assert_eq!(value["description"], json!("Runs \"echo\""));
        assert_eq!(
            value["parameters"]["Message"],
            json!({"type": "String", "default": "hello", "allowedValues": ["hello", "bye"], "minChars": 2})
        );
        let inputs = &value["mainSteps"][0]["inputs"];
        assert_eq!(inputs["timeoutSeconds"], json!(60));
        assert_eq!(
            inputs["runCommand"],
            json!([
                "echo {{ Message }}",
                "cat <<EOF\nliteral\nEOF\n",
                "folded text\n"
            ])
        );
        assert_eq!(inputs["flow"], json!({"a": 1, "b": ["x", "y z"]}));
    }

    /// yaml.v2 (YAML 1.1) plain scalars, the upstream agent's parser.
    #[test]
    fn plain_scalars_resolve_as_yaml_v2() {
        let cases = [
            ("~", json!(null)),
            ("", json!(null)),
            ("yes", json!(true)),
            ("Off", json!(false)),
            ("n", json!(false)),
            ("42", json!(42)),
            ("-7", json!(-7)),
            ("0x1F", json!(31)),
            ("0777", json!(511)),
            ("0o17", json!(15)),
            ("0b101", json!(5)),
            ("1_000", json!(1000)),
            ("18446744073709551615", json!(18446744073709551615u64)),
            ("1.5", json!(1.5)),
            (".5", json!(0.5)),
            ("1e3", json!(1000.0)),
            ("+1.5e-2", json!(0.015)),
            ("-007.50", json!(-7.5)),
            ("5.", json!(5.0)),
            ("1e400", json!("1e400")),
            ("2.2", json!(2.2)),
            ("1.2.3", json!("1.2.3")),
            ("0x", json!("0x")),
            ("09", json!(9.0)),
            ("+", json!("+")),
            ("yes please", json!("yes please")),
            ("2024-01-02", json!("2024-01-02")),
        ];
        for (text, want) in cases {
            assert_eq!(
                to_json(&format!("v: {text}")).unwrap()["v"],
                want,
                "{text:?}"
            );
        }
        assert_eq!(to_json("v: '42'").unwrap()["v"], json!("42"));
        assert_eq!(to_json("v: !!str yes").unwrap()["v"], json!("yes"));
        assert!(matches!(to_json("v: .nan"), Err(YamlError::NotJson { .. })));
    }

    #[test]
    fn only_the_first_document_is_read_and_an_empty_stream_is_null() {
        assert_eq!(to_json("a: 1\n---\nb: 2\n").unwrap(), json!({"a": 1}));
        assert_eq!(to_json("").unwrap(), json!(null));
        assert_eq!(to_json("# nothing\n").unwrap(), json!(null));
        assert_eq!(to_json("[1, 2]").unwrap(), json!([1, 2]));
        // JSON is YAML.
        assert_eq!(
            to_json(r#"{"a": [1, {"b": "c"}]}"#).unwrap(),
            json!({"a": [1, {"b": "c"}]})
        );
    }

    #[test]
    fn aliases_copy_their_anchor() {
        let value = to_json("base: &b {x: 1}\ncopy: *b\nlist: [&s one, *s]\n").unwrap();
        assert_eq!(
            value,
            json!({"base": {"x": 1}, "copy": {"x": 1}, "list": ["one", "one"]})
        );
    }

    /// Nine levels of ten-fold aliases would be 10^9 values: refused at the bound, quickly.
    #[test]
    fn billion_laughs_stops_at_the_value_bound() {
        let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let started = std::time::Instant::now();
        assert!(matches!(to_json(&text), Err(YamlError::TooManyValues(_))));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn hostile_input_is_refused_with_a_reason() {
        let deep = |n| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert!(to_json(&deep(MAX_DEPTH)).is_ok());
        assert!(matches!(
            to_json(&deep(MAX_DEPTH + 1)),
            Err(YamlError::TooDeep(_))
        ));
        // The parser's own limit comes first for very deep flow nesting.
        assert!(to_json(&deep(400_000)).is_err());
        let nested_maps: String = (0..100)
            .map(|i| format!("{}k:\n", "  ".repeat(i)))
            .collect();
        assert!(matches!(to_json(&nested_maps), Err(YamlError::TooDeep(_))));
        let big = "a".repeat(MAX_INPUT_BYTES + 1);
        assert_eq!(to_json(&big), Err(YamlError::TooLarge(MAX_INPUT_BYTES + 1)));
        assert!(matches!(to_json("a: [1, 2"), Err(YamlError::Syntax { .. })));
        assert!(matches!(
            to_json("a: *nowhere"),
            Err(YamlError::Syntax { .. })
        ));
        assert!(matches!(
            to_json("? [a]\n: 1\n"),
            Err(YamlError::ComplexKey(_))
        ));
        assert_eq!(
            to_json("a: 1\na: 2\n"),
            Err(YamlError::DuplicateKey {
                key: "a".into(),
                line: 2
            })
        );
        // A recursive alias cannot name a node that is not complete.
        assert!(to_json("a: &x [*x]").is_err());
        let many = "- 1\n".repeat(MAX_VALUES + 1);
        assert!(matches!(to_json(&many), Err(YamlError::TooManyValues(_))));
    }

    /// Random token soup never panics: every input gives a value or an error.
    #[test]
    fn random_input_gives_a_value_or_an_error() {
        const TOKENS: [&str; 24] = [
            "a", ":", " ", "\n", "- ", "[", "]", "{", "}", ",", "&x ", "*x", "'", "\"", "|", ">",
            "#", "---", "? ", "!!str ", "  ", "0x1", ".5", "\\u12",
        ];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..3000 {
            let mut text = String::new();
            for _ in 0..(state % 40) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push_str(TOKENS[(state % TOKENS.len() as u64) as usize]);
            }
            let _ = to_json(&text);
        }
    }
}
