//! `ssm:PutInventory` for `aws:softwareInventory`: the wire items, their content hashes as
//! upstream computes them (`datauploader/uploader.go`), and the hashes the service last took
//! (upstream's `contentHash` file, `datauploader/optimizer.go`).

use super::gather::{Entry, Item};
use crate::aws::jsonrpc::{AwsError, JsonClient};
use crate::aws::md5::Md5;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Per attempt.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Upstream's file name under its inventory directory.
const HASH_FILE: &str = "contentHash";
/// A hash file is a few dozen short lines; anything larger is not ours and is ignored.
const HASH_FILE_MAX: u64 = 64 * 1024;

/// Why `PutInventory` failed. `ContentMismatch` is the service asking for the full content
/// again (`ItemContentMismatchException` or `InvalidItemContentException`, as upstream's
/// `shouldRetryWithNonOptimizedData`); the texts read as upstream's SDK errors, `Code: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PutError {
    #[error("{0}")]
    ContentMismatch(String),
    #[error("{0}")]
    Other(String),
}

pub trait InventoryService: Send + Sync {
    fn put_inventory(&self, instance_id: &str, items: &[Value]) -> Result<(), PutError>;
}

/// `AmazonSSM.PutInventory` through the agent's SSM client.
pub struct SsmInventory {
    client: JsonClient,
}

impl SsmInventory {
    pub fn new(client: JsonClient) -> SsmInventory {
        SsmInventory { client }
    }
}

impl InventoryService for SsmInventory {
    /// Retried on throttling and transient failures only, as the SDK upstream links does.
    fn put_inventory(&self, instance_id: &str, items: &[Value]) -> Result<(), PutError> {
        let input = json!({ "InstanceId": instance_id, "Items": items });
        self.client
            .call_retried("PutInventory", &input, CALL_TIMEOUT)
            .map(drop)
            .map_err(|e| refused(&e))
    }
}

fn refused(e: &AwsError) -> PutError {
    match e {
        AwsError::Service { code, message, .. } => {
            let text = format!("{code}: {message}");
            match code.as_str() {
                "ItemContentMismatchException" | "InvalidItemContentException" => {
                    PutError::ContentMismatch(text)
                }
                _ => PutError::Other(text),
            }
        }
        other => PutError::Other(format!("PutInventory failed: {other}")),
    }
}

/// One gathered type ready for the wire: the full item and its content hash.
pub(crate) struct WireItem {
    pub type_name: String,
    pub hash: String,
    pub full: Value,
    /// Bytes of `full`'s JSON, for upstream's size limits.
    pub size: usize,
}

impl WireItem {
    /// The item without `Content`, sent when the service already holds content of this hash.
    pub fn hash_only(&self) -> Value {
        let mut item = Map::new();
        for (name, value) in self.full.as_object().into_iter().flatten() {
            if name != "Content" {
                item.insert(name.clone(), value.clone());
            }
        }
        Value::Object(item)
    }
}

/// `{TypeName, SchemaVersion, CaptureTime, ContentHash, Content}` for `item`, its entries laid
/// out as upstream's Go structs marshal them (see [`fields_of`]).
pub(crate) fn wire_item(item: &Item, capture_time: &str) -> WireItem {
    let schema = fields_of(&item.type_name);
    let entries: Vec<Vec<(&str, &str)>> = item.content.iter().map(|e| lay_out(e, schema)).collect();
    let hash = content_hash(&go_json(&entries));
    let content: Vec<Value> = entries
        .iter()
        .map(|entry| {
            // Inserted one by one: collecting into the map would link a sort for nothing.
            let mut fields = Map::new();
            for (name, value) in entry {
                fields.insert((*name).to_owned(), json!(value));
            }
            Value::Object(fields)
        })
        .collect();
    let full = json!({
        "TypeName": item.type_name,
        "SchemaVersion": item.schema_version,
        "CaptureTime": capture_time,
        "ContentHash": hash,
        "Content": content,
    });
    WireItem {
        type_name: item.type_name.clone(),
        hash,
        size: full.to_string().len(),
        full,
    }
}

/// Upstream's `CaptureTime`: Go's `time.RFC3339` of a UTC time, `2016-07-30T18:15:37Z`.
pub(crate) fn capture_time(t: SystemTime) -> String {
    let u = crate::timefmt::Utc::from_system(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        u.year, u.month, u.day, u.hour, u.minute, u.second
    )
}

/// The base64 MD5 of `json` (upstream's `calculateCheckSum`).
fn content_hash(json: &str) -> String {
    let mut md5 = Md5::default();
    md5.update(json.as_bytes());
    crate::base64::encode(&md5.finish())
}

/// A field of an upstream model struct: its name and whether it is `omitempty`.
type Field = (&'static str, bool);

const APPLICATION: &[Field] = &[
    ("Name", false),
    ("Publisher", false),
    ("Version", false),
    ("Release", true),
    ("Epoch", true),
    ("InstalledTime", true),
    ("ApplicationType", true),
    ("Architecture", false),
    ("URL", true),
    ("Summary", true),
    ("PackageId", true),
];
const NETWORK: &[Field] = &[
    ("Name", false),
    ("SubnetMask", true),
    ("Gateway", true),
    ("DHCPServer", true),
    ("DNSServer", true),
    ("MacAddress", false),
    ("IPV4", false),
    ("IPV6", false),
];
const INSTANCE_DETAILED_INFORMATION: &[Field] = &[
    ("CPUModel", false),
    ("CPUSpeedMHz", false),
    ("CPUs", false),
    ("CPUSockets", false),
    ("CPUCores", false),
    ("CPUHyperThreadEnabled", false),
    ("OSServicePack", false),
    ("KernelVersion", false),
];
const FILE: &[Field] = &[
    ("Name", false),
    ("Size", false),
    ("Description", false),
    ("FileVersion", false),
    ("InstalledDate", false),
    ("ModificationTime", false),
    ("LastAccessTime", false),
    ("ProductName", false),
    ("InstalledDir", false),
    ("CompanyName", false),
    ("ProductVersion", false),
    ("ProductLanguage", false),
];

/// Upstream's model struct for a built-in type (`inventory/model/model.go`), whose field order
/// and `omitempty` tags decide the JSON the hash covers. Custom types are Go maps there, which
/// marshal with sorted keys: an empty schema here.
fn fields_of(type_name: &str) -> &'static [Field] {
    match type_name {
        "AWS:Application" | "AWS:AWSComponent" => APPLICATION,
        "AWS:Network" => NETWORK,
        "AWS:InstanceDetailedInformation" => INSTANCE_DETAILED_INFORMATION,
        "AWS:File" => FILE,
        _ => &[],
    }
}

/// `entry` in the struct's order: every plain field (empty when the gatherer left it out),
/// `omitempty` ones only when set, then any attribute the struct lacks in sorted order, so that
/// nothing gathered is dropped.
fn lay_out<'a>(entry: &'a Entry, schema: &[Field]) -> Vec<(&'a str, &'a str)> {
    let mut out = Vec::with_capacity(entry.len().max(schema.len()));
    for &(name, omit_empty) in schema {
        let value = entry.get(name).map_or("", String::as_str);
        if !(omit_empty && value.is_empty()) {
            out.push((name, value));
        }
    }
    for (name, value) in entry {
        if !schema.iter().any(|(known, _)| known == name) {
            out.push((name.as_str(), value.as_str()));
        }
    }
    out
}

/// The JSON Go's `json.Marshal` writes for these entries: no spaces, and its string escaping.
/// An empty list is Go's nil slice, `null`: upstream's gatherers build their lists by appending.
fn go_json(entries: &[Vec<(&str, &str)>]) -> String {
    if entries.is_empty() {
        return "null".into();
    }
    let mut out = String::from("[");
    for (i, entry) in entries.iter().enumerate() {
        out.push_str(if i == 0 { "{" } else { ",{" });
        for (j, (name, value)) in entry.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            go_string(&mut out, name);
            out.push(':');
            go_string(&mut out, value);
        }
        out.push('}');
    }
    out.push(']');
    out
}

/// Go's `encoding/json` string (1.22 and later): `<`, `>`, `&`, U+2028 and U+2029 as `\u` escapes
/// (its HTML-safe default), `\b \f \n \r \t` short, other control characters `\u00xx`.
fn go_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\0'..='\u{1f}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The content hash of each type the service last took, kept in `<state dir>/contentHash` as
/// upstream keeps it: a JSON object, type name → hash.
pub(crate) struct Hashes {
    path: PathBuf,
    by_type: BTreeMap<String, String>,
}

impl Hashes {
    /// What the file holds; nothing when it is missing, unreadable, too large or not a JSON
    /// object of strings (a full upload then sets it right).
    pub fn load(state_dir: &Path) -> Hashes {
        let path = state_dir.join(HASH_FILE);
        let by_type = read_bounded(&path)
            .and_then(|text| serde_json::from_slice(&text).ok())
            .unwrap_or_default();
        Hashes { path, by_type }
    }

    /// Whether the service holds `item`'s content already.
    pub fn holds(&self, item: &WireItem) -> bool {
        self.by_type.get(&item.type_name) == Some(&item.hash)
    }

    /// Records the hashes of `items`, which the service just took, and writes the file.
    pub fn took(&mut self, items: &[&WireItem]) {
        for item in items {
            self.by_type
                .insert(item.type_name.clone(), item.hash.clone());
        }
        let text = serde_json::to_vec(&self.by_type).unwrap_or_default();
        let written = self
            .path
            .parent()
            .map_or(Ok(()), crate::state::ensure_private_dir)
            .and_then(|()| crate::state::write_atomic(&self.path, &text, false));
        if let Err(e) = written {
            // As upstream: the upload stands; the next run sends full content again.
            log::warn!("inventory content hashes not kept: {e}");
        }
    }
}

fn read_bounded(path: &Path) -> Option<Vec<u8>> {
    let file = std::fs::File::open(path).ok()?;
    let mut text = Vec::new();
    file.take(HASH_FILE_MAX + 1).read_to_end(&mut text).ok()?;
    if text.len() as u64 > HASH_FILE_MAX {
        log::warn!(
            "{} is over {HASH_FILE_MAX} bytes; ignored, full inventory content is sent",
            path.display()
        );
        return None;
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pairs: &[(&str, &str)]) -> Entry {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn item(type_name: &str, content: Vec<Entry>) -> Item {
        Item {
            type_name: type_name.into(),
            schema_version: "1.1".into(),
            content,
        }
    }

    #[test]
    fn the_hash_is_md5_of_the_json_go_marshals_for_the_struct() {
        let app = item(
            "AWS:Application",
            vec![entry(&[
                ("Name", "libc6"),
                ("Version", "2.36-9"),
                ("Publisher", "GNU <libc@gnu.org> & co"),
                ("Architecture", "x86_64"),
                ("ApplicationType", "libs"),
                ("Summary", "tab\there \"q\" \\ \u{1} \u{2028}"),
                ("URL", ""),
            ])],
        );
        let expected_json = concat!(
            r#"[{"Name":"libc6","Publisher":"GNU \u003clibc@gnu.org\u003e \u0026 co","#,
            r#""Version":"2.36-9","ApplicationType":"libs","Architecture":"x86_64","#,
            r#""Summary":"tab\there \"q\" \\ \u0001 \u2028"}]"#
        );
        let schema = fields_of(&app.type_name);
        let laid: Vec<_> = app.content.iter().map(|e| lay_out(e, schema)).collect();
        assert_eq!(go_json(&laid), expected_json);
        // Computed independently of this code, from the JSON above:
        // python3 -c 'import hashlib,base64,sys; print(base64.b64encode(hashlib.md5(
        //   sys.argv[1].encode()).digest()).decode())' "$expected_json"
        let wire = wire_item(&app, "2026-12-03T12:00:00Z");
        assert_eq!(wire.hash, "G+4oTv+7psLlCLAQDfdFGg==");
        assert_eq!(wire.full["ContentHash"], json!(wire.hash));
    }

    #[test]
    fn custom_types_marshal_sorted_and_empty_content_is_null() {
        let custom = item("Custom:Rack", vec![entry(&[("b", "2"), ("a", "1")])]);
        let laid: Vec<_> = custom
            .content
            .iter()
            .map(|e| lay_out(e, fields_of("Custom:Rack")))
            .collect();
        assert_eq!(go_json(&laid), r#"[{"a":"1","b":"2"}]"#);
        assert_eq!(go_json(&[]), "null");
        // MD5 of "null": python3 -c 'import hashlib,base64; print(base64.b64encode(
        //   hashlib.md5(b"null").digest()).decode())'
        let empty = wire_item(&item("AWS:Network", vec![]), "2026-12-03T12:00:00Z");
        assert_eq!(empty.hash, "N6YlnMDB2uKZp4Zkid/wvQ==");
        assert_eq!(empty.full["Content"], json!([]));
    }

    #[test]
    fn plain_fields_are_filled_in_and_unknown_attributes_kept() {
        let net = item(
            "AWS:Network",
            vec![entry(&[("Name", "eth0"), ("Extra", "x")])],
        );
        let wire = wire_item(&net, "2026-12-03T12:00:00Z");
        assert_eq!(
            wire.full["Content"],
            json!([{"Name": "eth0", "MacAddress": "", "IPV4": "", "IPV6": "", "Extra": "x"}])
        );
        let hash_only = wire.hash_only();
        let fields: Vec<&String> = hash_only.as_object().unwrap().keys().collect();
        assert_eq!(
            fields,
            ["CaptureTime", "ContentHash", "SchemaVersion", "TypeName"]
        );
        assert_eq!(hash_only["ContentHash"], json!(wire.hash));
        assert_eq!(hash_only["TypeName"], json!("AWS:Network"));
    }

    #[test]
    fn capture_time_is_rfc3339_seconds_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_469_902_537_999);
        assert_eq!(capture_time(t), "2016-07-30T18:15:37Z");
    }

    #[test]
    fn a_refusal_is_a_mismatch_only_for_the_content_codes() {
        let service = |code: &str| AwsError::Service {
            status: 400,
            code: code.into(),
            message: "m".into(),
        };
        assert_eq!(
            refused(&service("ItemContentMismatchException")),
            PutError::ContentMismatch("ItemContentMismatchException: m".into())
        );
        assert!(matches!(
            refused(&service("InvalidItemContentException")),
            PutError::ContentMismatch(_)
        ));
        assert_eq!(
            refused(&service("AccessDeniedException")),
            PutError::Other("AccessDeniedException: m".into())
        );
    }

    #[test]
    fn hashes_survive_a_reload_and_a_foreign_or_oversized_file_is_ignored() {
        let state = super::super::test_dir("hashes").join("inventory");
        let wire = wire_item(&item("Custom:A", vec![]), "2026-12-03T12:00:00Z");
        Hashes::load(&state).took(&[&wire]);
        let kept = std::fs::read_to_string(state.join(HASH_FILE)).unwrap();
        assert_eq!(kept, format!(r#"{{"Custom:A":"{}"}}"#, wire.hash));
        assert!(Hashes::load(&state).holds(&wire));

        std::fs::write(state.join(HASH_FILE), b"[1,2]").unwrap();
        assert!(!Hashes::load(&state).holds(&wire));
        // The same object, padded past the bound: not read at all.
        let padded = kept.clone() + &" ".repeat(HASH_FILE_MAX as usize);
        std::fs::write(state.join(HASH_FILE), padded).unwrap();
        assert!(!Hashes::load(&state).holds(&wire));
    }
}
