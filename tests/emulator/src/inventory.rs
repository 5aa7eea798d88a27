//! Inventory (`AmazonSSM.PutInventory`, JSON 1.1 signed for `ssm`), for the agent's
//! `aws:softwareInventory`. The service keeps each type's last `ContentHash`: an item sent with
//! its hash only (no `Content`, the agent's unchanged-data optimisation) is accepted only when
//! that hash is the stored one, else the whole call is refused with
//! `ItemContentMismatchException`, which makes the agent send the full data again.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::http::Response;
use crate::service::required;
use crate::state::State;

/// The service's limit on `Items` in one call.
pub const MAX_ITEMS: usize = 30;

#[derive(Default)]
pub(crate) struct InventoryState {
    /// Every body that reached the operation, refused ones included.
    puts: Vec<Value>,
    /// TypeName → its last `ContentHash` and the last item sent with `Content`.
    stored: BTreeMap<String, (Option<String>, Value)>,
}

impl InventoryState {
    /// Forgets type `type_name`, as when the service lost or expired it; true if it was stored.
    pub(crate) fn forget(&mut self, type_name: &str) -> bool {
        self.stored.remove(type_name).is_some()
    }
}

impl State {
    /// `PutInventory` bodies that reached the operation, in order, refused ones included
    /// ([`State::inventory_of`] has what was stored).
    pub fn inventory_puts(&self) -> &[Value] {
        &self.inventory.puts
    }

    /// The last item of type `type_name` that was stored with its `Content`.
    pub fn inventory_of(&self, type_name: &str) -> Option<&Value> {
        self.inventory.stored.get(type_name).map(|(_, item)| item)
    }
}

fn refuse(error_type: &str, message: &str) -> Response {
    Response::aws_error(400, error_type, message)
}

/// An item's required members, checked as the service checks them.
fn check_item(item: &Value) -> Result<&str, Response> {
    let type_name = required(item, "TypeName", 1)?;
    required(item, "SchemaVersion", 3)?;
    required(item, "CaptureTime", 1)?;
    Ok(type_name)
}

/// `AmazonSSM.PutInventory`: records the call, refuses hash-only items whose hash is not the
/// stored one, else stores every item.
pub(crate) fn put_inventory(st: &mut State, body: &Value) -> Response {
    st.inventory.puts.push(body.clone());
    if let Err(resp) = required(body, "InstanceId", 10) {
        return resp;
    }
    let items = body["Items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if items.is_empty() || items.len() > MAX_ITEMS {
        let msg = format!(
            "1 validation error detected: Value at 'items' failed to satisfy constraint: Member \
             must have length between 1 and {MAX_ITEMS}, not {}",
            items.len()
        );
        return refuse("ValidationException", &msg);
    }
    for item in items {
        let type_name = match check_item(item) {
            Ok(t) => t,
            Err(resp) => return resp,
        };
        if item["Content"].is_null() {
            let sent = item["ContentHash"].as_str();
            let stored = st.inventory.stored.get(type_name);
            if sent.is_none() || stored.and_then(|(h, _)| h.as_deref()) != sent {
                return mismatch(type_name);
            }
        }
    }
    for item in items.iter().filter(|i| !i["Content"].is_null()) {
        let type_name = item["TypeName"].as_str().unwrap_or_default().to_owned();
        let hash = item["ContentHash"].as_str().map(str::to_owned);
        st.inventory.stored.insert(type_name, (hash, item.clone()));
    }
    Response::json(200, &json!({}))
}

/// The service's refusal of a hash-only item: the error names the type.
fn mismatch(type_name: &str) -> Response {
    let msg = format!(
        "The content hash of inventory type {type_name} does not match the content stored for \
         this instance; send the full content"
    );
    let body = json!({"__type": "ItemContentMismatchException", "Message": msg,
                      "TypeName": type_name});
    Response::json(400, &body).with_header("X-Amzn-ErrorType", "ItemContentMismatchException")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Emulator;
    use crate::tests::{call, role_credentials};

    const PUT: &str = "AmazonSSM.PutInventory";

    fn item(type_name: &str, hash: &str, content: Option<Value>) -> Value {
        let mut i = json!({"TypeName": type_name, "SchemaVersion": "1.0",
                           "CaptureTime": "2026-12-03T12:00:00Z", "ContentHash": hash});
        if let Some(c) = content {
            i["Content"] = c;
        }
        i
    }

    fn put(emu: &Emulator, items: Vec<Value>) -> crate::tests::Resp {
        let creds = role_credentials(emu);
        let body = json!({"InstanceId": "i-0123456789abcdef0", "Items": items});
        call(emu, &creds, PUT, &body)
    }

    #[test]
    fn hash_only_items_need_the_stored_hash() {
        let emu = Emulator::start(Default::default());
        let network = json!([{"Name": "eth0", "IPV4": "10.0.0.2"}]);
        let hash_only = put(&emu, vec![item("AWS:Network", "h1", None)]);
        assert_eq!(hash_only.status, 400, "nothing is stored yet");
        assert_eq!(hash_only.error_type(), "ItemContentMismatchException");
        assert_eq!(hash_only.json()["TypeName"], "AWS:Network");
        assert_eq!(emu.inventory_of("AWS:Network"), None);

        let full = put(&emu, vec![item("AWS:Network", "h1", Some(network.clone()))]);
        assert_eq!(full.status, 200);
        assert_eq!(emu.inventory_of("AWS:Network").unwrap()["Content"], network);
        assert_eq!(put(&emu, vec![item("AWS:Network", "h1", None)]).status, 200);
        assert_eq!(
            emu.inventory_of("AWS:Network").unwrap()["Content"],
            network,
            "a hash-only put keeps the stored content"
        );

        let apps = json!([{"Name": "bash", "Version": "5.2"}]);
        let mixed = put(
            &emu,
            vec![
                item("AWS:Application", "a1", Some(apps)),
                item("AWS:Network", "h2", None),
            ],
        );
        assert_eq!(mixed.error_type(), "ItemContentMismatchException");
        assert_eq!(mixed.json()["TypeName"], "AWS:Network");
        assert_eq!(
            emu.inventory_of("AWS:Application"),
            None,
            "a refused call stores nothing"
        );

        assert!(emu.forget_inventory("AWS:Network"));
        assert_eq!(
            put(&emu, vec![item("AWS:Network", "h1", None)]).error_type(),
            "ItemContentMismatchException"
        );
        assert_eq!(emu.inventory_puts().len(), 5);
    }

    #[test]
    fn items_are_validated() {
        let emu = Emulator::start(Default::default());
        assert_eq!(put(&emu, vec![]).error_type(), "ValidationException");
        let many = (0..=MAX_ITEMS)
            .map(|i| item(&format!("Custom:T{i}"), "h", Some(json!([]))))
            .collect();
        assert_eq!(put(&emu, many).error_type(), "ValidationException");
        let mut no_schema = item("AWS:Network", "h", Some(json!([])));
        no_schema.as_object_mut().unwrap().remove("SchemaVersion");
        assert_eq!(
            put(&emu, vec![no_schema]).error_type(),
            "ValidationException"
        );
        assert!(emu.inventory_of("AWS:Network").is_none());
    }
}
