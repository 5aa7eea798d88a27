//! What plugins fetch while a step runs: SSM documents (`aws:runDocument`,
//! `aws:downloadContent` with `SSMDocument`), S3 objects (`aws:downloadContent` with `S3`),
//! Parameter Store values (`{{ssm:…}}` in the documents `aws:runDocument` runs, decrypted
//! `{{ssm-secure:…}}` in `aws:downloadContent`) and web resources through the agent's HTTPS
//! client (`aws:downloadContent` with `HTTP` and `GitHub`).
//! The engine holds one [`Sources`]; an agent without the calls (`ssm-lite run-document`) holds
//! [`Sources::unavailable`], whose calls fail with the reason.

use crate::aws::http::HttpClient;
use crate::document::parameter_store::{Found, Parameter, ParameterSource};
use std::io::Write;
use std::sync::Arc;

/// A document as `ssm:GetDocument` returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteDocument {
    pub name: String,
    pub document_version: String,
    /// `JSON`, `YAML` or `TEXT`.
    pub document_format: String,
    pub content: String,
}

pub trait DocumentSource: Send + Sync {
    /// `name` (a name or an ARN) at `version`: a number, `$DEFAULT` or `$LATEST`; `None` is
    /// `$DEFAULT`. `Err` is the text the step reports.
    fn get_document(&self, name: &str, version: Option<&str>) -> Result<RemoteDocument, String>;
}

pub trait ObjectSource: Send + Sync {
    /// Streams `s3://bucket/key` into `out`, refusing more than `limit` bytes; the bytes written.
    /// `Err` is the text the step reports.
    fn get_object(
        &self,
        bucket: &str,
        key: &str,
        out: &mut dyn Write,
        limit: u64,
    ) -> Result<u64, String>;

    /// The keys under `prefix` (a "folder" download); more than `limit` of them is an `Err`.
    /// `Err` is the text the step reports; a source that cannot list says so, and a key without a trailing `/` is
    /// then fetched as one object, as upstream does when its listing fails.
    fn list_keys(&self, bucket: &str, prefix: &str, _limit: usize) -> Result<Vec<String>, String> {
        Err(format!(
            "cannot list s3://{bucket}/{prefix}: this agent's S3 client does not list objects"
        ))
    }
}

/// Parameter Store values read with decryption: only `{{ssm-secure:…}}` references in the
/// inputs upstream resolves them in (docs/protocol.md §3.7).
pub trait SecretSource: Send + Sync {
    /// `ssm:GetParameters` of `[name]` with `WithDecryption: true`. `Err` is upstream's text for
    /// the failure (an unknown name: `The following parameter(s) cannot be resolved: name`).
    fn get_decrypted(&self, name: &str) -> Result<Parameter, String>;
}

#[derive(Clone)]
pub struct Sources {
    pub documents: Arc<dyn DocumentSource>,
    pub objects: Arc<dyn ObjectSource>,
    pub secrets: Arc<dyn SecretSource>,
    /// The agent's HTTPS client (proxies, CA bundle); `None` where the run has none.
    pub http: Option<Arc<HttpClient>>,
    /// The engine's Parameter Store, for sub-documents.
    pub parameters: Arc<dyn ParameterSource + Send + Sync>,
    /// The association scheduler `aws:refreshAssociation` signals; `None` without one.
    pub associations: Option<Arc<crate::association::scheduler::Mailbox>>,
    /// `aws:softwareInventory`'s gatherers and PutInventory; `None` without an ssm client.
    pub inventory: Option<Arc<crate::inventory::Inventory>>,
    /// `aws:configurePackage`'s Distributor; `None` without an ssm client.
    pub packages: Option<Arc<super::package::Distributor>>,
}

impl Sources {
    /// Sources whose every call fails with `reason`.
    pub fn unavailable(reason: &str) -> Sources {
        let none = Arc::new(Unavailable(reason.to_owned()));
        Sources {
            documents: none.clone(),
            objects: none.clone(),
            secrets: none.clone(),
            http: None,
            parameters: none,
            associations: None,
            inventory: None,
            packages: None,
        }
    }
}

struct Unavailable(String);

impl DocumentSource for Unavailable {
    fn get_document(&self, name: &str, _version: Option<&str>) -> Result<RemoteDocument, String> {
        Err(format!("cannot fetch SSM document {name}: {}", self.0))
    }
}

impl ParameterSource for Unavailable {
    fn get_parameters(&self, names: &[String]) -> Result<Found, String> {
        let names = names.join(", ");
        Err(format!(
            "cannot look up Parameter Store values ({names}): {}",
            self.0
        ))
    }
}

impl ObjectSource for Unavailable {
    fn get_object(
        &self,
        bucket: &str,
        key: &str,
        _: &mut dyn Write,
        _: u64,
    ) -> Result<u64, String> {
        Err(format!("cannot fetch s3://{bucket}/{key}: {}", self.0))
    }
}

impl SecretSource for Unavailable {
    fn get_decrypted(&self, name: &str) -> Result<Parameter, String> {
        Err(format!("cannot read parameter {name}: {}", self.0))
    }
}
