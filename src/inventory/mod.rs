//! Inventory: `aws:softwareInventory` (issue 13, being built).

pub(crate) mod gather;
