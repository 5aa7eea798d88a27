//! Distributor, for the agent's `aws:configurePackage`: Package documents answered by
//! `AmazonSSM.DescribeDocument` and by `GetDocument` (with `AttachmentsContent`, whose `Url`s
//! point wherever the test says, usually the emulator's file server, as presigned S3 URLs would),
//! `GetManifest` (no birdwatcher packages: `ResourceNotFoundException`, so the agent turns to
//! the document) and `PutConfigurePackageResult`, whose requests are kept for tests. Tests add
//! packages with [`crate::Emulator::put_package`].

use crate::http::Response;
use crate::state::State;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// One file of a package version, where the agent fetches it.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub name: String,
    pub url: String,
    pub sha256: String,
    pub size: u64,
}

struct Version {
    name: String,
    manifest: String,
    attachments: Vec<Attachment>,
}

#[derive(Default)]
pub(crate) struct DistributorState {
    /// Package document name → its versions, version 1 (the default) first.
    packages: BTreeMap<String, Vec<Version>>,
    /// `PutConfigurePackageResult` requests, in order.
    pub(crate) results: Vec<Value>,
}

impl DistributorState {
    /// Adds version `version_name` of package document `name`; its document version number.
    pub(crate) fn put(
        &mut self,
        name: &str,
        version_name: &str,
        manifest: &str,
        attachments: Vec<Attachment>,
    ) -> usize {
        let versions = self.packages.entry(name.to_owned()).or_default();
        versions.push(Version {
            name: version_name.to_owned(),
            manifest: manifest.to_owned(),
            attachments,
        });
        versions.len()
    }

    /// True when `body` asks for a package document (others are Command documents).
    pub(crate) fn has(&self, body: &Value) -> bool {
        body["Name"]
            .as_str()
            .is_some_and(|n| self.packages.contains_key(n))
    }

    /// The version `body` names by `VersionName` (or `DocumentVersion`), the default otherwise.
    fn find(&self, body: &Value) -> Result<(&str, usize, &Version), Response> {
        let name = body["Name"].as_str().unwrap_or_default();
        let Some((name, versions)) = self.packages.get_key_value(name) else {
            let msg = "The specified document does not exist.";
            return Err(Response::aws_error(400, "InvalidDocument", msg));
        };
        let found = match (
            body["VersionName"].as_str(),
            body["DocumentVersion"].as_str(),
        ) {
            (Some(v), _) => versions.iter().position(|x| x.name == v),
            (None, Some(n)) => n.parse::<usize>().ok().and_then(|n| n.checked_sub(1)),
            (None, None) => Some(0),
        };
        match found.and_then(|i| versions.get(i).map(|v| (i + 1, v))) {
            Some((number, v)) => Ok((name, number, v)),
            None => {
                let msg = "The document version is not valid or does not exist.";
                Err(Response::aws_error(400, "InvalidDocumentVersion", msg))
            }
        }
    }
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `AmazonSSM.DescribeDocument` of a package document.
pub(crate) fn describe_document(st: &mut State, body: &Value) -> Response {
    match st.distributor.find(body) {
        Err(r) => r,
        Ok((name, number, v)) => Response::json(
            200,
            &json!({"Document": {
                "Name": name,
                "DocumentVersion": number.to_string(),
                "VersionName": v.name,
                "Status": "Active",
                "DocumentType": "Package",
                "DocumentFormat": "JSON",
                "SchemaVersion": "2.0",
                "Hash": sha256_hex(&v.manifest),
                "HashType": "Sha256",
                "AttachmentsInformation": v.attachments.iter().map(|a| json!({"Name": a.name})).collect::<Vec<_>>(),
            }}),
        ),
    }
}

/// `AmazonSSM.GetDocument` of a package document: the manifest and its attachments.
pub(crate) fn get_document(st: &mut State, body: &Value) -> Response {
    match st.distributor.find(body) {
        Err(r) => r,
        Ok((name, number, v)) => Response::json(
            200,
            &json!({
                "Name": name,
                "DocumentVersion": number.to_string(),
                "VersionName": v.name,
                "Status": "Active",
                "DocumentType": "Package",
                "DocumentFormat": "JSON",
                "Content": v.manifest,
                "AttachmentsContent": v.attachments.iter().map(|a| json!({
                    "Name": a.name, "Size": a.size, "Hash": a.sha256, "HashType": "Sha256", "Url": a.url
                })).collect::<Vec<_>>(),
            }),
        ),
    }
}

/// `AmazonSSM.GetManifest`: the emulator has no birdwatcher packages.
pub(crate) fn get_manifest(body: &Value) -> Response {
    let name = body["PackageName"].as_str().unwrap_or_default();
    let msg = format!("package {name} not found");
    Response::aws_error(400, "ResourceNotFoundException", &msg)
}

/// `AmazonSSM.PutConfigurePackageResult`: kept for tests.
pub(crate) fn put_result(st: &mut State, body: &Value) -> Response {
    st.distributor.results.push(body.clone());
    Response::json(200, &json!({}))
}
