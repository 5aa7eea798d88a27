//! Inventory gatherers (skeleton; the gatherers helper fills it in).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

/// One entry of an inventory type's content: attribute name → value.
pub type Entry = BTreeMap<String, String>;

/// One inventory type, as gathered (capture time and hash are added by the uploader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub type_name: String,
    pub schema_version: String,
    pub content: Vec<Entry>,
}

/// Where the gatherers read the system: `/` on a host, a directory tree in tests.
pub struct Host<'a> {
    pub root: &'a Path,
    /// The agent version `AWS:AWSComponent` and the agent's own entries report.
    pub agent_version: &'a str,
}

/// Why a gatherer could not produce its type; Display says what and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatherError(pub String);

impl std::fmt::Display for GatherError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `AWS:Application` 1.1: dpkg, rpm, apk and opkg packages.
pub fn applications(host: &Host<'_>) -> Result<Item, GatherError> {
    Ok(empty(host, "AWS:Application", "1.1"))
}

/// `AWS:AWSComponent` 1.0.
pub fn aws_components(host: &Host<'_>) -> Result<Item, GatherError> {
    Ok(empty(host, "AWS:AWSComponent", "1.0"))
}

/// `AWS:Network` 1.0: every interface but loopback.
pub fn network(host: &Host<'_>) -> Result<Item, GatherError> {
    Ok(empty(host, "AWS:Network", "1.0"))
}

/// `AWS:InstanceDetailedInformation` 1.0.
pub fn instance_detailed_information(host: &Host<'_>) -> Result<Item, GatherError> {
    Ok(empty(host, "AWS:InstanceDetailedInformation", "1.0"))
}

/// `AWS:File` 1.0 for the plugin's `files` input (a JSON text of filters).
pub fn files(host: &Host<'_>, filters: &str) -> Result<Item, GatherError> {
    let _ = filters;
    Ok(empty(host, "AWS:File", "1.0"))
}

/// Custom inventory: every `*.json` file of `dir` (`CustomInventoryDefaultLocation`).
pub fn custom(host: &Host<'_>, dir: &Path) -> Result<Vec<Item>, GatherError> {
    let _ = (host, dir);
    Ok(Vec::new())
}

fn empty(_host: &Host<'_>, type_name: &str, schema_version: &str) -> Item {
    Item {
        type_name: type_name.into(),
        schema_version: schema_version.into(),
        content: Vec::new(),
    }
}
