//! `aws:softwareInventory`: gathers the inventory types a step enables and reports them with
//! `ssm:PutInventory`, as upstream's `agent/plugins/inventory/inventory.go` does. Only inside an
//! association; a type whose content the service already holds goes as its hash alone
//! (docs/protocol.md §8).

pub(crate) mod gather;
mod upload;

pub use upload::{InventoryService, PutError, SsmInventory};

use crate::exec::{StopReason, StopToken};
use crate::runcommand::payload::AssociationRun;
use gather::{GatherError, Host, Item};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use upload::{Hashes, WireItem};

pub const PLUGIN: &str = "aws:softwareInventory";

/// Upstream's words for the step's output.
const NO_DATA: &str = "Inventory policy has been successfully applied but there is no inventory data to upload to SSM";
const UPLOADED: &str = "Inventory policy has been successfully applied and collected inventory data has been uploaded to SSM";
const TOO_LARGE: &str = "the size of the collected data exceeded the maximum allowable size";

/// Upstream's `model.Enabled`; any other value, `enabled` included, leaves a type off.
const ENABLED: &str = "Enabled";
/// Upstream's `SizeLimitKBPerInventoryType` and `TotalSizeLimitKB`.
const ITEM_LIMIT: usize = 3072 * 1024;
const TOTAL_LIMIT: usize = 10240 * 1024;
/// Above this, upstream sends `AWS:File` in a call of its own (`largeSizeItem`).
const SPLIT_FILES_ABOVE: usize = 1024 * 1024;
const FILE_TYPE: &str = "AWS:File";

/// The plugin's inputs as upstream's `PluginInput` takes them. Go matches the keys without
/// regard to case and ignores unknown ones; a value that is not a string fails the step.
#[derive(Debug, Default, PartialEq, Eq)]
struct Inputs {
    applications: String,
    aws_components: String,
    network_config: String,
    files: String,
    instance_detailed_information: String,
    custom_inventory: String,
    custom_inventory_directory: String,
}

/// Inputs upstream accepts but runs nothing for here: its Windows-only types (skipped on Linux
/// as "installed but not supported"), and `billingInfo`, which ssm-lite does not gather.
const IGNORED_INPUTS: &[&str] = &[
    "billinginfo",
    "services",
    "windowsregistry",
    "windowsroles",
    "windowsupdates",
];

impl Inputs {
    fn parse(inputs: &Value) -> Result<Inputs, String> {
        let invalid = || format!("invalid or unrecognized input was received for {PLUGIN} plugin");
        let mut parsed = Inputs::default();
        let fields = match inputs {
            Value::Null => return Ok(parsed),
            Value::Object(fields) => fields,
            _ => return Err(invalid()),
        };
        for (key, value) in fields {
            let key = key.to_ascii_lowercase();
            let slot = match key.as_str() {
                "applications" => Some(&mut parsed.applications),
                "awscomponents" => Some(&mut parsed.aws_components),
                "networkconfig" => Some(&mut parsed.network_config),
                "files" => Some(&mut parsed.files),
                "instancedetailedinformation" => Some(&mut parsed.instance_detailed_information),
                "custominventory" => Some(&mut parsed.custom_inventory),
                "custominventorydirectory" => Some(&mut parsed.custom_inventory_directory),
                k if IGNORED_INPUTS.contains(&k) => None,
                _ => continue,
            };
            match (value, slot) {
                (Value::String(text), Some(slot)) => text.clone_into(slot),
                // Go leaves a field untouched for `null`.
                (Value::String(_) | Value::Null, _) => {}
                _ => return Err(invalid()),
            }
        }
        Ok(parsed)
    }
}

/// A gatherer of one built-in type.
type Gatherer = fn(&Host<'_>) -> Result<Item, GatherError>;

/// The plugin, built once by the agent.
pub struct Inventory {
    service: Arc<dyn InventoryService>,
    instance_id: String,
    /// Holds upstream's `contentHash` file.
    state_dir: PathBuf,
    /// `/` on a host; the gatherers read below it.
    root: PathBuf,
    /// `CustomInventoryDefaultLocation`, unless the step's `customInventoryDirectory` is set.
    custom_dir: PathBuf,
    agent_version: String,
    /// Upper bound of the random wait before `PutInventory` (upstream: 0–29 s).
    max_wait: Duration,
}

impl Inventory {
    pub fn new(
        service: Arc<dyn InventoryService>,
        instance_id: String,
        state_dir: PathBuf,
        root: PathBuf,
        custom_dir: PathBuf,
        agent_version: String,
        max_wait: Duration,
    ) -> Inventory {
        Inventory {
            service,
            instance_id,
            state_dir,
            root,
            custom_dir,
            agent_version,
            max_wait,
        }
    }

    /// Runs one step: Ok is its output, Err its failure text, both in upstream's words.
    pub fn run(
        &self,
        inputs: &Value,
        association: Option<&AssociationRun>,
        stop: &StopToken,
    ) -> Result<String, String> {
        let Some(association) = association else {
            return Err(format!(
                "{PLUGIN} plugin can only be invoked via ssm-associate"
            ));
        };
        // Upstream `IsMulitpleAssociationPresent`: two inventory policies would overwrite each
        // other's data, so while both exist each of their runs fails.
        let mut ids = association.inventory_associations.iter();
        if let Some(other) = ids.find(|id| **id != association.id) {
            return Err(format!(
                "{PLUGIN} detected multiple inventory configurations associated with one \
                 instance. Each instance can be associated with just one inventory \
                 configuration. Conflicting inventory configuration IDs: {} and {other}",
                association.id
            ));
        }
        let inputs = Inputs::parse(inputs)?;
        let items = self.gather(&inputs)?;
        self.upload(&items, stop)
    }

    /// Runs the enabled gatherers; the first that fails fails the step, as upstream does not
    /// send part of one inventory policy's data.
    fn gather(&self, inputs: &Inputs) -> Result<Vec<Item>, String> {
        let host = Host {
            root: &self.root,
            agent_version: &self.agent_version,
        };
        let failed = |name: &str, e: GatherError| {
            format!("Encountered error while executing {name}. Error - {e}")
        };
        let builtin: [(&str, &str, Gatherer); 4] = [
            (
                "AWS:Application",
                &inputs.applications,
                gather::applications,
            ),
            (
                "AWS:AWSComponent",
                &inputs.aws_components,
                gather::aws_components,
            ),
            ("AWS:Network", &inputs.network_config, gather::network),
            (
                "AWS:InstanceDetailedInformation",
                &inputs.instance_detailed_information,
                gather::instance_detailed_information,
            ),
        ];
        let mut items = Vec::new();
        for (name, policy, gatherer) in builtin {
            if policy == ENABLED {
                items.push(gatherer(&host).map_err(|e| failed(name, e))?);
            }
        }
        // Upstream's file gatherer runs whenever filters are given.
        if !inputs.files.is_empty() {
            items.push(gather::files(&host, &inputs.files).map_err(|e| failed(FILE_TYPE, e))?);
        }
        if inputs.custom_inventory == ENABLED {
            let dir = match inputs.custom_inventory_directory.as_str() {
                "" => self.custom_dir.clone(),
                dir => PathBuf::from(dir),
            };
            items.extend(gather::custom(&host, &dir).map_err(|e| failed("CustomInventory", e))?);
        }
        Ok(items)
    }

    /// Sends `items` after the random wait: each call first with hash-only items where the
    /// service holds the content, then, if it asks, once more in full.
    fn upload(&self, items: &[Item], stop: &StopToken) -> Result<String, String> {
        if items.is_empty() {
            log::info!("{NO_DATA}");
            return Ok(NO_DATA.into());
        }
        let now = upload::capture_time(SystemTime::now());
        let wire: Vec<WireItem> = items.iter().map(|i| upload::wire_item(i, &now)).collect();
        within_limits(&wire)?;
        self.random_wait(stop)?;
        let mut hashes = Hashes::load(&self.state_dir);
        let mut errors = Vec::new();
        for (batch, files_only) in batches(&wire) {
            if let Err(e) = self.put(&batch, &mut hashes) {
                let what = if files_only {
                    "File inventory"
                } else {
                    "inventory"
                };
                errors.push(format!(
                    "{what} data could not be uploaded to Systems Manager. Additional troubleshooting information - {e}"
                ));
            }
        }
        if errors.is_empty() {
            log::info!("{PLUGIN} uploaded inventory data to SSM");
            Ok(UPLOADED.into())
        } else {
            Err(errors.join("\n"))
        }
    }

    /// One `PutInventory` for `batch`; its hashes are kept only once the service took it.
    fn put(&self, batch: &[&WireItem], hashes: &mut Hashes) -> Result<(), PutError> {
        let optimized: Vec<Value> = batch
            .iter()
            .map(|w| {
                if hashes.holds(w) {
                    w.hash_only()
                } else {
                    w.full.clone()
                }
            })
            .collect();
        match self.service.put_inventory(&self.instance_id, &optimized) {
            Err(PutError::ContentMismatch(e)) => {
                log::info!("PutInventory: {e}; sending the full inventory content again");
                let full: Vec<Value> = batch.iter().map(|w| w.full.clone()).collect();
                self.service.put_inventory(&self.instance_id, &full)?;
            }
            answer => answer?,
        }
        hashes.took(batch);
        Ok(())
    }

    /// Upstream's jitter before `PutInventory`, so that a fleet's associations do not all call
    /// at the same second; a cancel or the agent's stop ends it and fails the step.
    fn random_wait(&self, stop: &StopToken) -> Result<(), String> {
        let max_ms = u64::try_from(self.max_wait.as_millis()).unwrap_or(u64::MAX);
        let wait = Duration::from_millis(crate::random::between(0, max_ms));
        let why = match stop.wait_for_stop(wait) {
            None => return Ok(()),
            Some(StopReason::Cancelled) => "the step was cancelled",
            Some(StopReason::Shutdown) => "the agent is stopping",
        };
        Err(format!(
            "{PLUGIN} did not upload inventory data to Systems Manager: {why}"
        ))
    }
}

/// Upstream's `VerifyInventoryDataSize`: no type over 3 MiB, no call over 10 MiB.
fn within_limits(wire: &[WireItem]) -> Result<(), String> {
    let mut total = 0;
    for item in wire {
        let size = item.size;
        total += size;
        if size > ITEM_LIMIT || total > TOTAL_LIMIT {
            log::warn!("{}: {size} bytes, {total} in all", item.type_name);
            return Err(TOO_LARGE.into());
        }
    }
    Ok(())
}

/// The calls to make, each with whether it is the `AWS:File` one: everything at once, or, over
/// 1 MiB and with other types besides, `AWS:File` first on its own (upstream's
/// `uploadItemsToSSM`).
fn batches(wire: &[WireItem]) -> Vec<(Vec<&WireItem>, bool)> {
    let total: usize = wire.iter().map(|w| w.size).sum();
    let all: Vec<&WireItem> = wire.iter().collect();
    if total <= SPLIT_FILES_ABOVE || wire.len() < 2 {
        return vec![(all, false)];
    }
    let (files, rest): (Vec<&WireItem>, Vec<&WireItem>) =
        all.into_iter().partition(|w| w.type_name == FILE_TYPE);
    if files.is_empty() {
        vec![(rest, false)]
    } else {
        vec![(files, true), (rest, false)]
    }
}

/// A fresh directory under the system temp dir for one test.
#[cfg(test)]
fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ssm-lite-inv-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::lock;
    use gather::Entry;
    use serde_json::json;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// Records each call's items and answers from a script (then Ok).
    #[derive(Default)]
    struct FakeService {
        calls: Mutex<Vec<Vec<Value>>>,
        answers: Mutex<VecDeque<Result<(), PutError>>>,
    }

    impl InventoryService for FakeService {
        fn put_inventory(&self, instance_id: &str, items: &[Value]) -> Result<(), PutError> {
            assert_eq!(instance_id, "mi-0123456789abcdef0");
            lock(&self.calls).push(items.to_vec());
            lock(&self.answers).pop_front().unwrap_or(Ok(()))
        }
    }

    impl FakeService {
        fn answer(&self, answer: Result<(), PutError>) {
            lock(&self.answers).push_back(answer);
        }
        fn calls(&self) -> Vec<Vec<Value>> {
            lock(&self.calls).clone()
        }
        /// `TypeName → has Content` for each item of call `n`.
        fn sent(&self, n: usize) -> Vec<(String, bool)> {
            self.calls()[n]
                .iter()
                .map(|i| {
                    (
                        i["TypeName"].as_str().unwrap().to_owned(),
                        i.get("Content").is_some(),
                    )
                })
                .collect()
        }
    }

    fn plugin(name: &str, max_wait: Duration) -> (Inventory, Arc<FakeService>, PathBuf) {
        let dir = test_dir(name);
        let service = Arc::new(FakeService::default());
        let inventory = Inventory::new(
            service.clone(),
            "mi-0123456789abcdef0".into(),
            dir.join("state"),
            dir.join("root"),
            dir.join("custom"),
            "3.3.1142.0".into(),
            max_wait,
        );
        (inventory, service, dir)
    }

    fn item(type_name: &str, values: &[&str]) -> Item {
        let content = values
            .iter()
            .map(|v| Entry::from([("Name".to_owned(), (*v).to_owned())]))
            .collect();
        Item {
            type_name: type_name.into(),
            schema_version: "1.0".into(),
            content,
        }
    }

    fn owned(pairs: &[(&str, bool)]) -> Vec<(String, bool)> {
        pairs.iter().map(|(t, c)| ((*t).to_owned(), *c)).collect()
    }

    #[test]
    fn a_second_identical_run_sends_hashes_only_and_a_changed_type_its_content() {
        let (inv, service, _dir) = plugin("hash-only", Duration::ZERO);
        let stop = StopToken::new();
        let first = [
            item("AWS:Application", &["bash"]),
            item("AWS:Network", &["eth0"]),
        ];
        assert_eq!(inv.upload(&first, &stop), Ok(UPLOADED.into()));
        assert_eq!(
            service.sent(0),
            owned(&[("AWS:Application", true), ("AWS:Network", true)])
        );
        let sent = &service.calls()[0][0];
        assert_eq!(
            sent["Content"],
            json!([{"Name": "bash", "Publisher": "", "Version": "", "Architecture": ""}])
        );
        assert_eq!(sent["SchemaVersion"], json!("1.0"));
        assert!(sent["CaptureTime"].as_str().unwrap().ends_with('Z'));

        inv.upload(&first, &stop).unwrap();
        assert_eq!(
            service.sent(1),
            owned(&[("AWS:Application", false), ("AWS:Network", false)])
        );
        assert_eq!(
            service.calls()[1][0]["ContentHash"],
            service.calls()[0][0]["ContentHash"]
        );

        let changed = [
            item("AWS:Application", &["bash", "curl"]),
            item("AWS:Network", &["eth0"]),
        ];
        inv.upload(&changed, &stop).unwrap();
        assert_eq!(
            service.sent(2),
            owned(&[("AWS:Application", true), ("AWS:Network", false)])
        );
    }

    #[test]
    fn a_content_mismatch_resends_everything_in_full_once() {
        let (inv, service, _dir) = plugin("mismatch", Duration::ZERO);
        let stop = StopToken::new();
        let items = [item("AWS:Network", &["eth0"])];
        inv.upload(&items, &stop).unwrap();
        service.answer(Err(PutError::ContentMismatch(
            "ItemContentMismatchException: m".into(),
        )));
        assert_eq!(inv.upload(&items, &stop), Ok(UPLOADED.into()));
        assert_eq!(service.sent(1), owned(&[("AWS:Network", false)]));
        assert_eq!(service.sent(2), owned(&[("AWS:Network", true)]));

        for _ in 0..2 {
            service.answer(Err(PutError::ContentMismatch(
                "InvalidItemContentException: m".into(),
            )));
        }
        assert_eq!(
            inv.upload(&items, &stop),
            Err("inventory data could not be uploaded to Systems Manager. Additional troubleshooting information - InvalidItemContentException: m".into())
        );
        assert_eq!(service.calls().len(), 5, "one full resend, no more");
    }

    #[test]
    fn a_refused_call_keeps_the_hashes_of_the_last_one_taken() {
        let (inv, service, _dir) = plugin("refused", Duration::ZERO);
        let stop = StopToken::new();
        inv.upload(&[item("Custom:Rack", &["r1"])], &stop).unwrap();
        let changed = [item("Custom:Rack", &["r2"])];
        service.answer(Err(PutError::Other("AccessDeniedException: no".into())));
        let err = inv.upload(&changed, &stop).unwrap_err();
        assert!(
            err.ends_with("information - AccessDeniedException: no"),
            "{err}"
        );
        inv.upload(&changed, &stop).unwrap();
        assert_eq!(
            service.sent(2),
            owned(&[("Custom:Rack", true)]),
            "r2 was never taken"
        );
        inv.upload(&[item("Custom:Rack", &["r1"])], &stop).unwrap();
        assert_eq!(
            service.sent(3),
            owned(&[("Custom:Rack", true)]),
            "r1 was replaced"
        );
    }

    #[test]
    fn a_stop_ends_the_random_wait_and_fails_the_step_without_a_call() {
        let (inv, service, _dir) = plugin("stop", Duration::from_secs(3600));
        let items = [item("AWS:Network", &["eth0"])];
        let stop = StopToken::new();
        stop.stop(StopReason::Shutdown);
        let err = inv.upload(&items, &stop).unwrap_err();
        assert!(err.ends_with("the agent is stopping"), "{err}");

        let stop = StopToken::new();
        let started = std::time::Instant::now();
        let err = std::thread::scope(|s| {
            let waiting = s.spawn(|| inv.upload(&items, &stop));
            stop.stop(StopReason::Cancelled);
            waiting.join().unwrap()
        })
        .unwrap_err();
        assert_eq!(
            err,
            "aws:softwareInventory did not upload inventory data to Systems Manager: the step was cancelled"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(service.calls().is_empty());
    }

    #[test]
    fn outside_an_association_the_step_fails_with_upstreams_text() {
        let (inv, service, _dir) = plugin("not-assoc", Duration::ZERO);
        let inputs = json!({"applications": "Enabled"});
        assert_eq!(
            inv.run(&inputs, None, &StopToken::new()),
            Err("aws:softwareInventory plugin can only be invoked via ssm-associate".into())
        );
        assert!(service.calls().is_empty());
    }

    fn association(id: &str, inventory: &[&str]) -> AssociationRun {
        AssociationRun {
            id: id.into(),
            run_id: "2026-12-03T12:00:00.000Z".into(),
            inventory_associations: inventory.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_second_inventory_association_fails_with_upstreams_text() {
        let (inv, service, _dir) = plugin("two", Duration::ZERO);
        let inputs = json!({"applications": "Disabled"});
        let two = association("a-2", &["a-2", "a-1"]);
        assert_eq!(
            inv.run(&inputs, Some(&two), &StopToken::new()),
            Err("aws:softwareInventory detected multiple inventory configurations associated with one instance. Each instance can be associated with just one inventory configuration. Conflicting inventory configuration IDs: a-2 and a-1".into())
        );
        let one = association("a-1", &["a-1"]);
        assert_eq!(
            inv.run(&inputs, Some(&one), &StopToken::new()),
            Ok(NO_DATA.into())
        );
        assert!(service.calls().is_empty());
    }

    #[test]
    fn inputs_are_matched_without_case_and_only_strings_are_accepted() {
        let parsed = Inputs::parse(&json!({
            "Applications": "Enabled", "awscomponents": "Disabled", "files": "[{}]",
            "customInventoryDirectory": "/x", "windowsUpdates": "Enabled", "unknown": 7,
            "networkConfig": null,
        }))
        .unwrap();
        assert_eq!(
            parsed,
            Inputs {
                applications: "Enabled".into(),
                aws_components: "Disabled".into(),
                files: "[{}]".into(),
                custom_inventory_directory: "/x".into(),
                ..Inputs::default()
            }
        );
        let invalid = "invalid or unrecognized input was received for aws:softwareInventory plugin";
        for bad in [
            json!({"applications": true}),
            json!({"services": ["x"]}),
            json!("Enabled"),
        ] {
            assert_eq!(Inputs::parse(&bad), Err(invalid.to_owned()), "{bad}");
        }
        assert_eq!(Inputs::parse(&Value::Null), Ok(Inputs::default()));
    }

    #[test]
    fn only_enabled_types_are_gathered_and_sent() {
        let (inv, service, dir) = plugin("run", Duration::ZERO);
        let dpkg = dir.join("root/var/lib/dpkg");
        std::fs::create_dir_all(&dpkg).unwrap();
        std::fs::write(
            dpkg.join("status"),
            "Package: bash\nStatus: install ok installed\nVersion: 5.2\nArchitecture: amd64\n\n",
        )
        .unwrap();
        let stop = StopToken::new();
        let off =
            json!({"applications": "enabled", "windowsRoles": "Enabled", "services": "Enabled"});
        assert_eq!(
            inv.run(&off, Some(&association("a-1", &[])), &stop),
            Ok(NO_DATA.into())
        );
        assert!(service.calls().is_empty());

        let on = json!({"applications": "Enabled", "windowsUpdates": "Enabled"});
        assert_eq!(
            inv.run(&on, Some(&association("a-1", &[])), &stop),
            Ok(UPLOADED.into())
        );
        let types: Vec<_> = service.sent(0).into_iter().map(|(t, _)| t).collect();
        assert_eq!(types, ["AWS:Application"]);
    }

    #[test]
    fn upstreams_size_limits_fail_the_step_before_any_call() {
        let (inv, service, _dir) = plugin("size", Duration::ZERO);
        let big = "x".repeat(ITEM_LIMIT);
        let err = inv.upload(&[item("AWS:File", &[&big])], &StopToken::new());
        assert_eq!(err, Err(TOO_LARGE.into()));
        assert!(service.calls().is_empty());
    }

    #[test]
    fn over_one_mib_files_go_in_a_call_of_their_own_first() {
        let (inv, service, _dir) = plugin("split", Duration::ZERO);
        let big = "x".repeat(SPLIT_FILES_ABOVE);
        let items = [item("AWS:Network", &["eth0"]), item(FILE_TYPE, &[&big])];
        service.answer(Err(PutError::Other("ThrottlingException: slow".into())));
        let err = inv.upload(&items, &StopToken::new()).unwrap_err();
        assert!(
            err.starts_with("File inventory data could not be uploaded"),
            "{err}"
        );
        assert_eq!(service.sent(0), owned(&[(FILE_TYPE, true)]));
        assert_eq!(service.sent(1), owned(&[("AWS:Network", true)]));
        assert_eq!(service.calls().len(), 2);
    }
}
