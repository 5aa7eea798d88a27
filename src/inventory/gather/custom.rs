//! Custom inventory: each `*.json` file of a directory is one type,
//! `{"SchemaVersion": "1.0", "TypeName": "Custom:…", "Content": {…} or [{…}, …]}`, validated as
//! upstream's custom gatherer does, with its texts. A refused file is logged and skipped; more
//! than 20 files fail the whole gatherer, as upstream's.

use super::{Entry, GatherError, Host, Item, read_capped, under};
use serde_json::{Map, Value};
use std::path::Path;

const TYPE_PREFIX: &str = "Custom:";
const TYPE_NAME_LIMIT: usize = 100;
const FILE_COUNT_LIMIT: usize = 20;
const ATTRIBUTE_COUNT_LIMIT: usize = 50;
const ATTRIBUTE_NAME_LIMIT: usize = 64;
const ATTRIBUTE_VALUE_LIMIT: usize = 4096;
/// Upstream's `SizeLimitKBPerInventoryType` (3 MiB): a larger file cannot be uploaded anyway.
const FILE_CAP: u64 = 3 << 20;

pub(super) fn gather(host: &Host<'_>, dir: &Path) -> Result<Vec<Item>, GatherError> {
    let full = under(host.root, dir);
    let names: Vec<String> = match super::files::read_sorted(&full) {
        Ok(list) => list
            .into_iter()
            .filter(|(name, is_dir)| !is_dir && name.ends_with(".json"))
            .map(|(name, _)| name)
            .collect(),
        // A missing directory is no custom inventory, as upstream.
        Err(e) => {
            log::debug!(
                "inventory: no custom inventory: cannot read {}: {e}",
                full.display()
            );
            return Ok(Vec::new());
        }
    };
    if names.len() > FILE_COUNT_LIMIT {
        return Err(GatherError(format!(
            "Total custom inventory file count ({}) exceed limit ({FILE_COUNT_LIMIT}) in {}: \
             merge or remove files",
            names.len(),
            dir.display()
        )));
    }
    let mut items: Vec<Item> = Vec::new();
    for path in names.iter().map(|n| full.join(n)) {
        match from_file(&path) {
            Ok(item) if items.iter().any(|i| i.type_name == item.type_name) => log::warn!(
                "inventory: Custom inventory typeName ({}) from file ({}) already exists, i.e., \
                 other file under the same folder contains the same typeName, please remove \
                 duplicate custom inventory file.",
                item.type_name,
                path.display()
            ),
            Ok(item) => items.push(item),
            Err(e) => log::warn!(
                "inventory: Failed to get item from file {}, error {e}. continue...",
                path.display()
            ),
        }
    }
    Ok(items)
}

fn from_file(path: &Path) -> Result<Item, String> {
    let text = read_capped(path, FILE_CAP + 1)
        .map_err(|e| e.to_string())?
        .ok_or("the file disappeared")?;
    if text.len() as u64 > FILE_CAP {
        return Err(format!("the file is larger than {FILE_CAP} bytes"));
    }
    convert(&text)
}

/// Upstream's `convertToItem`: TypeName, then SchemaVersion, then every entry of Content.
fn convert(text: &str) -> Result<Item, String> {
    let doc: Map<String, Value> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let text_of = |key| doc.get(key).and_then(Value::as_str).unwrap_or("");
    let type_name = text_of("TypeName");
    if type_name.is_empty() {
        return Err("Custom inventory item has missed or empty TypeName".into());
    }
    if type_name.len() > TYPE_NAME_LIMIT {
        return Err(format!(
            "Custom inventory item TypeName ({type_name})'s length {} exceeded the limit: \
             {TYPE_NAME_LIMIT}",
            type_name.len()
        ));
    }
    if !type_name.starts_with(TYPE_PREFIX) {
        return Err(format!(
            "Custom inventory item's TypeName ({type_name}) has to start with {TYPE_PREFIX}"
        ));
    }
    let schema = text_of("SchemaVersion");
    if schema.is_empty() {
        return Err("Custom inventory item has missed SchemaVersion".into());
    }
    if !schema_version_ok(schema) {
        return Err(format!(
            "Custom inventory item ({type_name}) has invalid SchemaVersion ({schema}), the valid \
             schema version has to be like 1.0, 1.1, 2.0, 3.9, etc."
        ));
    }
    let content = match doc.get("Content") {
        None | Some(Value::Null) => {
            return Err("Custom inventory item missed Content property.".into());
        }
        Some(Value::Object(attrs)) => vec![entry(attrs)?],
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| match v {
                Value::Object(attrs) => entry(attrs),
                _ => Err("Custom inventory entry is not valid".into()),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(format!(
                "Custom inventory item {type_name}'s Content is not a valid json"
            ));
        }
    };
    Ok(Item {
        type_name: type_name.into(),
        schema_version: schema.into(),
        content,
    })
}

/// `^([0-9]{1,6})(\.[0-9]{1,6})$`
fn schema_version_ok(v: &str) -> bool {
    let digits = |s: &str| (1..=6).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    v.split_once('.')
        .is_some_and(|(a, b)| digits(a) && digits(b))
}

/// Upstream's `validateContentEntryAttributes`: at most 50 string attributes with names of
/// 1–64 bytes and values of at most 4096.
fn entry(attrs: &Map<String, Value>) -> Result<Entry, String> {
    if attrs.len() > ATTRIBUTE_COUNT_LIMIT {
        return Err(format!(
            "One of custom inventory item's content has {} attributes, exceed the limit \
             {ATTRIBUTE_COUNT_LIMIT}",
            attrs.len()
        ));
    }
    let mut entry = Entry::new();
    for (name, value) in attrs {
        if name.len() > ATTRIBUTE_NAME_LIMIT {
            return Err(format!(
                "Custom inventory attribute name ({name}) length: {}, exceeded the limit: \
                 {ATTRIBUTE_NAME_LIMIT}",
                name.len()
            ));
        }
        if name.is_empty() {
            return Err("Custom inventory contains empty attribute name, which is illegal".into());
        }
        let Value::String(text) = value else {
            return Err(format!(
                "Custom inventory attribute ({name})'s value ({value})'s type ({}) is not \
                 supported. Only string type is supported, suggest to use empty string for Nil \
                 or Null value.",
                go_type(value)
            ));
        };
        if text.len() > ATTRIBUTE_VALUE_LIMIT {
            return Err(format!(
                "Custom inventory attribute ({name})'s value length ({}) exceeded the limit \
                 ({ATTRIBUTE_VALUE_LIMIT}). Please either reduce the length or split the \
                 attribute into multiple attributes.",
                text.len()
            ));
        }
        entry.insert(name.clone(), text.clone());
    }
    Ok(entry)
}

/// The Go type upstream's text names for a JSON value it decoded.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{root, write};
    use super::*;

    const DIR: &str = "/var/lib/amazon/ssm/inventory/custom";

    fn run(root: &Path) -> Result<Vec<Item>, GatherError> {
        gather(
            &Host {
                root,
                agent_version: "1",
            },
            Path::new(DIR),
        )
    }

    #[test]
    fn valid_files_become_items_and_refused_ones_are_skipped() {
        let root = root("custom");
        let file = |name: &str, text: &str| write(&root, &format!("{DIR}/{name}"), text);
        file(
            "rack.json",
            r#"{"SchemaVersion": "1.0", "TypeName": "Custom:RackInfo",
                             "Content": {"RackLocation": "Bay B", "Slot": "7"}}"#,
        );
        file(
            "disks.json",
            r#"{"SchemaVersion": "2.1", "TypeName": "Custom:Disks",
                              "Content": [{"Name": "sda"}, {"Name": "sdb", "Size": "1T"}]}"#,
        );
        file(
            "rack2.json",
            r#"{"SchemaVersion": "1.0", "TypeName": "Custom:RackInfo", "Content": {}}"#,
        );
        file(
            "number.json",
            r#"{"SchemaVersion": "1.0", "TypeName": "Custom:N", "Content": {"n": 1}}"#,
        );
        file("notes.txt", "not json and not looked at");
        let items = run(&root).unwrap();
        let names: Vec<&str> = items.iter().map(|i| i.type_name.as_str()).collect();
        assert_eq!(
            names,
            ["Custom:Disks", "Custom:RackInfo"],
            "rack2.json repeats rack.json's type: the first file by name wins"
        );
        assert_eq!(items[0].schema_version, "2.1");
        assert_eq!(items[0].content.len(), 2);
        assert_eq!(items[0].content[1]["Size"], "1T");
        assert_eq!(items[1].content[0]["RackLocation"], "Bay B");
    }

    #[test]
    fn refusals_use_upstreams_texts() {
        let cases = [
            (
                r#"{"SchemaVersion": "1.0", "Content": {}}"#,
                "Custom inventory item has missed or empty TypeName",
            ),
            (
                r#"{"SchemaVersion": "1.0", "TypeName": "Rack", "Content": {}}"#,
                "Custom inventory item's TypeName (Rack) has to start with Custom:",
            ),
            (
                r#"{"TypeName": "Custom:A", "Content": {}}"#,
                "Custom inventory item has missed SchemaVersion",
            ),
            (
                r#"{"SchemaVersion": "1", "TypeName": "Custom:A", "Content": {}}"#,
                "Custom inventory item (Custom:A) has invalid SchemaVersion (1), the valid schema version has to be like 1.0, 1.1, 2.0, 3.9, etc.",
            ),
            (
                r#"{"SchemaVersion": "1.0", "TypeName": "Custom:A"}"#,
                "Custom inventory item missed Content property.",
            ),
            (
                r#"{"SchemaVersion": "1.0", "TypeName": "Custom:A", "Content": "x"}"#,
                "Custom inventory item Custom:A's Content is not a valid json",
            ),
            (
                r#"{"SchemaVersion": "1.0", "TypeName": "Custom:A", "Content": [{"a": "b"}, 3]}"#,
                "Custom inventory entry is not valid",
            ),
            (
                r#"{"SchemaVersion": "1.0", "TypeName": "Custom:A", "Content": {"": "b"}}"#,
                "Custom inventory contains empty attribute name, which is illegal",
            ),
            (
                r#"{"SchemaVersion": "1.0", "TypeName": "Custom:A", "Content": {"ok": true}}"#,
                "Custom inventory attribute (ok)'s value (true)'s type (bool) is not supported.",
            ),
        ];
        for (text, want) in cases {
            let err = convert(text).unwrap_err();
            assert!(err.starts_with(want), "{text}: {err}");
        }
        let long_name = format!(
            r#"{{"SchemaVersion": "1.0", "TypeName": "Custom:{}", "Content": {{}}}}"#,
            "x".repeat(94)
        );
        assert!(
            convert(&long_name)
                .unwrap_err()
                .contains("exceeded the limit: 100")
        );
        let long_value = format!(
            r#"{{"SchemaVersion": "1.0", "TypeName": "Custom:A", "Content": {{"v": "{}"}}}}"#,
            "x".repeat(4097)
        );
        assert!(
            convert(&long_value)
                .unwrap_err()
                .contains("value length (4097) exceeded the limit (4096)")
        );
        let attrs: Vec<String> = (0..51).map(|n| format!(r#""a{n}": """#)).collect();
        let wide = format!(
            r#"{{"SchemaVersion": "1.0", "TypeName": "Custom:A", "Content": {{{}}}}}"#,
            attrs.join(",")
        );
        assert!(
            convert(&wide)
                .unwrap_err()
                .contains("has 51 attributes, exceed the limit 50")
        );
    }

    #[test]
    fn more_than_twenty_files_fail_and_a_missing_directory_is_empty() {
        let root = root("custom-many");
        assert!(run(&root).unwrap().is_empty());
        for n in 0..=FILE_COUNT_LIMIT {
            write(&root, &format!("{DIR}/{n}.json"), "{}");
        }
        let err = run(&root).unwrap_err();
        assert!(
            err.0
                .starts_with("Total custom inventory file count (21) exceed limit (20)"),
            "{err}"
        );
    }
}
