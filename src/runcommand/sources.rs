//! What plugins fetch from AWS while a step runs: SSM documents (`aws:runDocument`,
//! `aws:downloadContent` with `SSMDocument`), S3 objects (`aws:downloadContent` with `S3`) and
//! Parameter Store values (`{{ssm:…}}` in the documents `aws:runDocument` runs).
//! The engine holds one [`Sources`]; an agent without the calls (`ssm-lite run-document`) holds
//! [`Sources::unavailable`], whose calls fail with the reason.

use crate::document::parameter_store::{Found, ParameterSource};
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
}

#[derive(Clone)]
pub struct Sources {
    pub documents: Arc<dyn DocumentSource>,
    pub objects: Arc<dyn ObjectSource>,
    /// The engine's Parameter Store, for sub-documents.
    pub parameters: Arc<dyn ParameterSource + Send + Sync>,
}

impl Sources {
    /// Sources whose every call fails with `reason`.
    pub fn unavailable(reason: &str) -> Sources {
        let none = Arc::new(Unavailable(reason.to_owned()));
        Sources {
            documents: none.clone(),
            objects: none.clone(),
            parameters: none,
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
