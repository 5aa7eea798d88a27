//! Association compliance (docs/protocol.md §7.3): after each final status, one
//! PutComplianceItems of type `Association` with an item per association that has run here and
//! is still listed; the items' hash alone when they have not changed since the last call the
//! service took.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One association's last final status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub association_id: String,
    pub document_name: String,
    pub document_version: String,
    /// `COMPLIANT` (Success) or `NON_COMPLIANT` (Failed, TimedOut).
    pub status: String,
    /// Unix milliseconds of the final status.
    pub executed_ms: u64,
}

/// Upstream `UpdateAssociationComplianceItem`: only Success, Failed and TimedOut count; `None`
/// for any other status.
pub fn item(
    association_id: &str,
    document_name: &str,
    document_version: &str,
    status: &str,
    executed_ms: u64,
) -> Option<Item> {
    let compliance = match status {
        "Success" => "COMPLIANT",
        "Failed" | "TimedOut" => "NON_COMPLIANT",
        _ => return None,
    };
    Some(Item {
        association_id: association_id.to_owned(),
        document_name: document_name.to_owned(),
        document_version: document_version.to_owned(),
        status: compliance.to_owned(),
        executed_ms,
    })
}

/// Replaces the item of the same association with `new` (unless it is older) or adds it.
pub fn record(items: &mut Vec<Item>, new: Item) {
    match items
        .iter_mut()
        .find(|i| i.association_id == new.association_id)
    {
        Some(old) if old.executed_ms <= new.executed_ms => *old = new,
        Some(_) => {}
        None => items.push(new),
    }
}

/// Base64 MD5 of the items' JSON, as upstream's `calculateCheckSum` of its own items.
pub fn hash(items: &[Item]) -> String {
    let json = serde_json::to_vec(items).unwrap_or_default();
    crate::base64::encode(&crate::aws::md5::digest(&json))
}

/// The PutComplianceItems body: the items in full, or none when `hash` is the one the service
/// last took.
pub fn body(instance_id: &str, items: &[Item], last_hash: &str, now_ms: u64) -> (Value, String) {
    let hash = hash(items);
    let entries: Vec<Value> = if hash == last_hash {
        Vec::new()
    } else {
        items
            .iter()
            .map(|i| {
                json!({
                    "Id": i.association_id,
                    "Status": i.status,
                    "Severity": "UNSPECIFIED",
                    "Title": "",
                    "Details": {
                        "DocumentName": i.document_name,
                        "DocumentVersion": i.document_version,
                    },
                })
            })
            .collect()
    };
    let body = json!({
        "ResourceId": instance_id,
        "ResourceType": "ManagedInstance",
        "ComplianceType": "Association",
        "ExecutionSummary": {
            "ExecutionId": "",
            "ExecutionType": "",
            "ExecutionTime": now_ms as f64 / 1000.0,
        },
        "ItemContentHash": hash,
        "Items": entries,
    });
    (body, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_final_statuses_count_and_newer_replaces_older() {
        assert!(item("a", "d", "1", "Pending", 1).is_none());
        let mut items = Vec::new();
        record(&mut items, item("a", "d", "1", "Failed", 10).unwrap());
        record(&mut items, item("a", "d", "1", "Success", 5).unwrap());
        assert_eq!(
            items[0].status, "NON_COMPLIANT",
            "an older result is ignored"
        );
        record(&mut items, item("a", "d", "1", "Success", 20).unwrap());
        record(&mut items, item("b", "d", "1", "TimedOut", 20).unwrap());
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].status, "COMPLIANT");
    }

    #[test]
    fn unchanged_items_go_as_their_hash_alone() {
        let items = vec![item("a", "AWS-RunShellScript", "1", "Success", 10).unwrap()];
        let (first, hash) = body("i-1", &items, "", 1000);
        assert_eq!(first["Items"][0]["Id"], "a");
        assert_eq!(
            first["Items"][0]["Details"]["DocumentName"],
            "AWS-RunShellScript"
        );
        assert_eq!(first["ComplianceType"], "Association");
        let (second, again) = body("i-1", &items, &hash, 2000);
        assert_eq!(again, hash);
        assert_eq!(second["Items"], json!([]));
        assert_eq!(second["ItemContentHash"], hash.as_str());
    }
}
