//! Where a package comes from (upstream `birdwatcher/`): a Distributor document (`ssm:
//! DescribeDocument`, then `ssm:GetDocument`, whose `Content` is the manifest and whose
//! `AttachmentsContent` carries a presigned URL per file) or the older birdwatcher archive
//! (`ssm:GetManifest`, whose manifest names each file's `downloadLocation`); and where its
//! result goes (`ssm:PutConfigurePackageResult`).

use super::manifest::{self, Manifest};
use crate::aws::jsonrpc::{AwsError, JsonClient};
use serde_json::{Value, json};
use std::time::Duration;

/// Per attempt of each call.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Most attachments read from one GetDocument answer (the service allows 20 per document).
const MAX_ATTACHMENTS: usize = 100;

/// A package's manifest, with where its files are.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The name the package is kept and locked under: the document's name (an ARN when it is
    /// shared from another account), or the birdwatcher manifest's `packageArn`.
    pub arn: String,
    pub manifest: Manifest,
    /// The manifest's text, as cached.
    pub text: String,
    /// File name → presigned URL, for a document package; empty for a birdwatcher one, whose
    /// manifest has the URLs.
    pub attachments: Vec<(String, String)>,
    /// A document package: errors of PutConfigurePackageResult are only logged then.
    pub is_document: bool,
}

impl Resolved {
    /// Upstream `GetFileDownloadLocation`.
    pub fn url_of(&self, file: &str, info: &manifest::FileInfo) -> Result<String, String> {
        if !self.is_document {
            return Ok(info.download_location.clone());
        }
        if self.attachments.is_empty() {
            return Err("Could not retreive the attachments for installation".into());
        }
        self.attachments
            .iter()
            .find(|(name, _)| name == file)
            .map(|(_, url)| url.clone())
            .ok_or_else(|| "Install attachments for package does not exist".into())
    }
}

/// Upstream `IsLatest`.
pub fn is_latest(version: &str) -> bool {
    version.is_empty() || version.eq_ignore_ascii_case("latest")
}

/// Upstream `selectService`: a document ARN, or a version that is no birdwatcher version, is a
/// document package; otherwise GetManifest decides (`ResourceNotFoundException`: a document).
pub fn resolve(client: &JsonClient, name: &str, version: &str) -> Result<Resolved, String> {
    let birdwatcher_version = version
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.');
    if is_document_arn(name) || !birdwatcher_version {
        return document(client, name, version);
    }
    let asked = if is_latest(version) {
        "latest"
    } else {
        version
    };
    let input = json!({"PackageName": name, "PackageVersion": asked});
    match client.call_retried("GetManifest", &input, CALL_TIMEOUT) {
        Err(AwsError::Service { code, .. }) if code == "ResourceNotFoundException" => {
            document(client, name, version)
        }
        // Upstream adds the line to the trace, then ends it with the error itself.
        Err(e) => {
            let e = refused(&e);
            Err(format!("Error returned for GetManifest - {e}.\n{e}"))
        }
        Ok(answer) => {
            let text = answer["Manifest"].as_str().unwrap_or_default().to_owned();
            let manifest = manifest::parse(&text)?;
            Ok(Resolved {
                arn: manifest.package_arn.clone(),
                manifest,
                text,
                attachments: Vec::new(),
                is_document: false,
            })
        }
    }
}

/// Upstream `documentArnPattern`, without a regex: `arn:<partition>:<service>:[region]:
/// [account]:document/<name>`.
fn is_document_arn(name: &str) -> bool {
    let parts: Vec<&str> = name.splitn(6, ':').collect();
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c))
    };
    let [arn, partition, service, region, account, resource] = parts[..] else {
        return false;
    };
    let doc = resource.strip_prefix("document/").unwrap_or_default();
    arn == "arn"
        && label(partition)
        && label(service)
        && (region.is_empty() || label(region))
        && (account.is_empty() || label(account))
        && (1..=128).contains(&doc.len())
        && doc
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/:.-_".contains(c))
}

/// Upstream `documentarchive.DownloadArchiveInfo` and `getDocument` (the random pause of up to
/// 15 s before DescribeDocument is not made: one device asks once per command).
fn document(client: &JsonClient, name: &str, version: &str) -> Result<Resolved, String> {
    let wrap = |e: String| format!("failed to download manifest - {e}");
    let mut input = json!({"Name": name});
    if !is_latest(version) {
        input["VersionName"] = json!(version);
    }
    let described = client
        .call_retried("DescribeDocument", &input, CALL_TIMEOUT)
        .map_err(|e| {
            wrap(format!(
                "failed to retrieve package document description: {}",
                refused(&e)
            ))
        })?;
    let doc = &described["Document"];
    active(doc["Status"].as_str()).map_err(wrap)?;
    if doc["Name"].as_str().is_none_or(str::is_empty) {
        return Err(wrap("document name cannot be empty".into()));
    }
    let answer = client
        .call_retried("GetDocument", &input, CALL_TIMEOUT)
        .map_err(|e| {
            wrap(format!(
                "failed to retrieve package document: {}",
                refused(&e)
            ))
        })?;
    active(answer["Status"].as_str()).map_err(wrap)?;
    let arn = answer["Name"].as_str().unwrap_or_default().to_owned();
    if arn.is_empty() {
        return Err(wrap("document name cannot be empty".into()));
    }
    let text = answer["Content"].as_str().unwrap_or_default().to_owned();
    if text.is_empty() {
        return Err(wrap(
            "failed to retrieve manifest from package document".into(),
        ));
    }
    // Upstream returns a manifest that does not parse without the prefix.
    let manifest = manifest::parse(&text)?;
    let attachments = answer["AttachmentsContent"]
        .as_array()
        .into_iter()
        .flatten()
        .take(MAX_ATTACHMENTS)
        .filter_map(|a| {
            Some((
                a["Name"].as_str()?.to_owned(),
                a["Url"].as_str()?.to_owned(),
            ))
        })
        .collect();
    Ok(Resolved {
        arn,
        manifest,
        text,
        attachments,
        is_document: true,
    })
}

fn active(status: Option<&str>) -> Result<(), String> {
    match status {
        Some("Active") => Ok(()),
        other => Err(format!(
            "package document is not currently active, kindly retry when the status is active. Current document status - {}",
            other.unwrap_or_default()
        )),
    }
}

/// The SDK's `Code: message`, as upstream prints a refusal.
fn refused(e: &AwsError) -> String {
    match e {
        AwsError::Service { code, message, .. } => format!("{code}: {message}"),
        other => other.to_string(),
    }
}

/// Upstream `PackageResult` / `PutConfigurePackageResultInput`.
pub struct Report<'a> {
    pub package_name: &'a str,
    pub version: &'a str,
    pub previous_version: &'a str,
    pub operation: &'a str,
    pub overall_ms: i64,
    pub exit_code: i64,
    pub attributes: Value,
    pub steps: Vec<Value>,
}

/// Upstream `birdwatcherservice.ReportResult`: `PreviousPackageVersion` only when there was one.
pub fn report(client: &JsonClient, r: &Report<'_>) -> Result<(), String> {
    let mut input = json!({
        "PackageName": r.package_name,
        "PackageVersion": r.version,
        "Operation": r.operation,
        "OverallTiming": r.overall_ms,
        "Result": r.exit_code,
        "Attributes": r.attributes,
        "Steps": r.steps,
    });
    if !r.previous_version.is_empty() {
        input["PreviousPackageVersion"] = json!(r.previous_version);
    }
    client
        .call_retried("PutConfigurePackageResult", &input, CALL_TIMEOUT)
        .map(drop)
        .map_err(|e| format!("failed to report results: {}", refused(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_arns_are_told_from_names() {
        assert!(is_document_arn(
            "arn:aws:ssm:us-east-1:123456789012:document/MyPackage"
        ));
        assert!(is_document_arn("arn:aws:ssm:::document/AWS-Pkg_1.0"));
        assert!(!is_document_arn("AmazonCloudWatchAgent"));
        assert!(!is_document_arn(
            "arn:aws:ssm:us-east-1:123456789012:parameter/x"
        ));
        assert!(!is_document_arn("arn:AWS:ssm:us-east-1:1:document/x"));
    }

    #[test]
    fn attachments_are_matched_by_file_name() {
        let info = manifest::FileInfo {
            sha256: None,
            download_location: "https://bucket/x.zip".into(),
        };
        let mut r = Resolved {
            arn: "Pkg".into(),
            manifest: manifest::parse("{}").unwrap(),
            text: "{}".into(),
            attachments: vec![("x.zip".into(), "https://presigned/x".into())],
            is_document: true,
        };
        assert_eq!(r.url_of("x.zip", &info).unwrap(), "https://presigned/x");
        assert_eq!(
            r.url_of("y.zip", &info).unwrap_err(),
            "Install attachments for package does not exist"
        );
        r.is_document = false;
        assert_eq!(r.url_of("y.zip", &info).unwrap(), "https://bucket/x.zip");
    }
}
