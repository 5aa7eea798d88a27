//! Inventory end to end: an AWS-GatherSoftwareInventory association on this machine reports every
//! dpkg package, the network interfaces and the CPU; the next run sends hashes only, and the
//! full data again when the service no longer holds it.

mod common;

use common::*;
use serde_json::{Value, json};
use ssm_emulator::{Association, Emulator};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// AWS-GatherSoftwareInventory's shape (schema 2.0, one aws:softwareInventory step).
fn inventory_document() -> String {
    let enabled = |d: &str| json!({"type": "String", "default": "Enabled", "description": d});
    json!({
        "schemaVersion": "2.0",
        "description": "Software Inventory Policy Document.",
        "parameters": {
            "applications": enabled("applications"),
            "awsComponents": enabled("awsComponents"),
            "networkConfig": enabled("networkConfig"),
            "instanceDetailedInformation": enabled("instanceDetailedInformation"),
        },
        "mainSteps": [{
            "action": "aws:softwareInventory",
            "name": "collectSoftwareInventoryItems",
            "inputs": {
                "applications": "{{ applications }}",
                "awsComponents": "{{ awsComponents }}",
                "networkConfig": "{{ networkConfig }}",
                "instanceDetailedInformation": "{{ instanceDetailedInformation }}"
            }
        }]
    })
    .to_string()
}

/// An agent that polls its associations within a second and sends inventory without
/// upstream's random wait.
fn inventory_agent(emu: &Emulator) -> Agent {
    Agent::start_with_env(
        emu,
        json!({}),
        &[
            ("SSM_LITE_ASSOCIATION_JITTER_SECS", "1"),
            ("SSM_LITE_INVENTORY_MAX_WAIT_SECS", "0"),
        ],
    )
}

/// The final statuses among `statuses` (neither Pending nor InProgress).
fn finals(statuses: &[Value]) -> Vec<&Value> {
    statuses
        .iter()
        .filter(|r| !matches!(r["Status"].as_str(), Some("Pending" | "InProgress")))
        .collect()
}

fn wait_finals(emu: &Emulator, agent: &Agent, id: &str, n: usize) -> Value {
    assert!(
        emu.wait_until(WAIT, |st| finals(st.association_statuses(id)).len() >= n),
        "{n} final statuses of {id}: {:?}\nlog:\n{}",
        emu.association_statuses(id),
        agent.log()
    );
    let all = emu.association_statuses(id);
    finals(&all).last().map(|r| (*r).clone()).unwrap()
}

/// The items of the latest PutInventory, by TypeName.
fn last_put(emu: &Emulator) -> BTreeMap<String, Value> {
    let puts = emu.inventory_puts();
    let last = puts.last().expect("a PutInventory call");
    (last["Items"].as_array().unwrap().iter())
        .map(|i| (i["TypeName"].as_str().unwrap().to_owned(), i.clone()))
        .collect()
}

/// `dpkg-query`'s packages and versions, when this machine has dpkg.
fn dpkg_packages() -> Option<BTreeMap<String, String>> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Status} ${Package} ${Version}\n"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Some(
        text.lines()
            .filter_map(|l| l.strip_prefix("installed "))
            .filter_map(|l| l.split_once(' '))
            .map(|(p, v)| (p.to_owned(), v.to_owned()))
            .collect(),
    )
}

#[test]
fn an_inventory_association_reports_this_machine_then_hashes_only() {
    let emu = emulator();
    emu.put_document("AWS-GatherSoftwareInventory", "JSON", &inventory_document());
    emu.add_association(
        Association::new("AWS-GatherSoftwareInventory")
            .id("a-inv")
            .schedule("rate(30 minutes)")
            .detailed_status("Associated"),
    );
    let agent = inventory_agent(&emu);
    let first = wait_finals(&emu, &agent, "a-inv", 1);
    assert_eq!(first["Status"], "Success", "{first}");
    let items = last_put(&emu);
    for t in [
        "AWS:Application",
        "AWS:AWSComponent",
        "AWS:Network",
        "AWS:InstanceDetailedInformation",
    ] {
        let item = &items[t];
        assert!(item["Content"].is_array(), "{t} has content: {item}");
        assert!(item["ContentHash"].as_str().is_some_and(|h| !h.is_empty()));
    }
    if let Some(packages) = dpkg_packages() {
        let reported: BTreeMap<String, String> = (items["AWS:Application"]["Content"]
            .as_array()
            .unwrap()
            .iter())
        .map(|a| {
            (
                a["Name"].as_str().unwrap_or_default().to_owned(),
                a["Version"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
        for (name, version) in &packages {
            assert_eq!(reported.get(name), Some(version), "dpkg package {name}");
        }
    }
    let cpu = &items["AWS:InstanceDetailedInformation"]["Content"][0];
    assert!(
        cpu["CPUs"]
            .as_str()
            .is_some_and(|n| n.parse::<u32>().unwrap_or(0) >= 1),
        "{cpu}"
    );
    assert!(
        !cpu["KernelVersion"].as_str().unwrap_or_default().is_empty(),
        "{cpu}"
    );

    // The next run: nothing changed, so hashes only.
    assert_eq!(
        refresh_associations(&emu, "22222222-0000-4000-8000-000000000001", &["a-inv"])["documentStatus"],
        "Success"
    );
    assert_eq!(wait_finals(&emu, &agent, "a-inv", 2)["Status"], "Success");
    let again = last_put(&emu);
    assert_eq!(again.len(), items.len());
    for (t, item) in &again {
        assert!(
            item.get("Content").is_none(),
            "{t} sent as its hash alone: {item}"
        );
        assert_eq!(item["ContentHash"], items[t]["ContentHash"]);
    }

    // The service lost one type: it refuses the hash, and the agent sends everything again.
    assert!(emu.forget_inventory("AWS:Network"));
    let puts = emu.inventory_puts().len();
    assert_eq!(
        refresh_associations(&emu, "22222222-0000-4000-8000-000000000002", &["a-inv"])["documentStatus"],
        "Success"
    );
    assert_eq!(wait_finals(&emu, &agent, "a-inv", 3)["Status"], "Success");
    assert_eq!(
        emu.inventory_puts().len(),
        puts + 2,
        "refused once, then sent in full"
    );
    assert!(last_put(&emu)["AWS:Network"]["Content"].is_array());
    assert!(emu.inventory_of("AWS:Network").is_some());
}

#[test]
fn two_inventory_associations_fail_as_upstream_once_both_have_run() {
    let emu = emulator();
    emu.put_document("AWS-GatherSoftwareInventory", "JSON", &inventory_document());
    for id in ["a-one", "a-two"] {
        emu.add_association(
            Association::new("AWS-GatherSoftwareInventory")
                .id(id)
                .schedule("rate(30 minutes)")
                .parameter("applications", &["Disabled"])
                .detailed_status("Associated"),
        );
    }
    let agent = inventory_agent(&emu);
    let (one, two) = (
        wait_finals(&emu, &agent, "a-one", 1),
        wait_finals(&emu, &agent, "a-two", 1),
    );
    // One at a time: the first to run is alone, the second meets the first.
    let (first, second, failed) = match (one["Status"].as_str(), two["Status"].as_str()) {
        (Some("Success"), Some("Failed")) => ("a-one", "a-two", two),
        (Some("Failed"), Some("Success")) => ("a-two", "a-one", one),
        other => panic!(
            "one Success and one Failed, got {other:?}\nlog:\n{}",
            agent.log()
        ),
    };
    let conflict = format!(
        "aws:softwareInventory detected multiple inventory configurations associated with one instance. Each instance can be associated with just one inventory configuration. Conflicting inventory configuration IDs: {second} and {first}"
    );
    assert_eq!(failed["ErrorCode"], "ExecutionError", "{failed}");
    assert!(
        failed["ExecutionSummary"]
            .as_str()
            .is_some_and(|s| s.contains(&conflict)),
        "{failed}"
    );
    // Now the first fails as well, naming the second.
    assert_eq!(
        refresh_associations(&emu, "22222222-0000-4000-8000-000000000003", &[first])["documentStatus"],
        "Success"
    );
    let again = wait_finals(&emu, &agent, first, 2);
    assert_eq!(again["Status"], "Failed", "{again}");
    assert!(
        again["ExecutionSummary"]
            .as_str()
            .is_some_and(|s| s.contains(&format!("IDs: {first} and {second}"))),
        "{again}"
    );
}
