//! The State Manager calls the agent makes (docs/protocol.md §7.1): ListInstanceAssociations,
//! UpdateInstanceAssociationStatus and PutComplianceItems, through the agent's one ssm client.

use crate::aws::jsonrpc::{AwsError, JsonClient};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// Per call; the scheduler thread is the only one waiting on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// `MaxResults` of each ListInstanceAssociations page (upstream's value).
const PAGE_SIZE: u64 = 20;
/// Pages read at most: 100 × 20 associations is far past any node's.
const MAX_PAGES: usize = 100;
/// Upstream truncates `ExecutionSummary` to this many bytes (`pluginutil.ReadPrefix`).
const SUMMARY_MAX: usize = 510;
const TRUNCATED: &str = "--output truncated--";

/// One entry of ListInstanceAssociations, with what the agent uses of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Association {
    pub id: String,
    pub name: String,
    pub document_version: String,
    pub instance_id: String,
    pub checksum: String,
    /// `""`: run once.
    pub schedule_expression: String,
    /// Unix seconds.
    pub last_execution: Option<u64>,
    pub detailed_status: String,
    /// Name → list of strings, as the service sends them.
    pub parameters: Map<String, Value>,
    pub s3_output: Option<S3Output>,
    pub apply_only_at_cron_interval: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Output {
    pub bucket: String,
    pub key_prefix: String,
}

impl Association {
    /// `None` for an entry without an id or document name (nothing could run it).
    pub fn from_json(v: &Value) -> Option<Association> {
        let text = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (id, name) = (text("AssociationId"), text("Name"));
        if id.is_empty() || name.is_empty() {
            return None;
        }
        let s3 = &v["OutputLocation"]["S3Location"];
        let s3_output = s3["OutputS3BucketName"]
            .as_str()
            .filter(|b| !b.is_empty())
            .map(|bucket| S3Output {
                bucket: bucket.to_owned(),
                key_prefix: s3["OutputS3KeyPrefix"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            });
        Some(Association {
            id,
            name,
            document_version: text("DocumentVersion"),
            instance_id: text("InstanceId"),
            checksum: text("Checksum"),
            schedule_expression: text("ScheduleExpression"),
            // JSON 1.1 timestamps are epoch seconds, with a fraction.
            last_execution: v["LastExecutionDate"]
                .as_f64()
                .filter(|s| *s >= 0.0)
                .map(|s| s as u64),
            detailed_status: text("DetailedStatus"),
            parameters: v["Parameters"].as_object().cloned().unwrap_or_default(),
            s3_output,
            apply_only_at_cron_interval: v["ApplyOnlyAtCronInterval"].as_bool().unwrap_or(false),
        })
    }
}

/// `ExecutionResult` of UpdateInstanceAssociationStatus.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExecutionResult {
    pub status: String,
    /// `""` when none.
    pub error_code: String,
    /// Unix milliseconds.
    pub date_ms: u64,
    pub summary: String,
    /// `<bucket>/<prefix>/<InstanceId>/<AssociationId>/<RunId>` with S3 output.
    pub output_url: Option<String>,
}

impl ExecutionResult {
    /// The request body: the summary cut to upstream's 510 bytes, the date as the SDK sends a
    /// timestamp (epoch seconds with milliseconds).
    fn body(&self, association_id: &str, instance_id: &str) -> Value {
        let mut result = json!({
            "Status": self.status,
            "ErrorCode": self.error_code,
            "ExecutionDate": self.date_ms as f64 / 1000.0,
            "ExecutionSummary": truncate_summary(&self.summary),
        });
        if let Some(url) = &self.output_url {
            result["OutputUrl"] = json!({ "S3OutputUrl": { "OutputUrl": url } });
        }
        json!({
            "AssociationId": association_id,
            "InstanceId": instance_id,
            "ExecutionResult": result,
        })
    }
}

/// Upstream `StringPrefix`: longer texts keep their first bytes and end with the suffix, within
/// the limit; cut on a character boundary.
fn truncate_summary(summary: &str) -> String {
    if summary.len() <= SUMMARY_MAX {
        return summary.to_owned();
    }
    let mut end = SUMMARY_MAX - TRUNCATED.len();
    while !summary.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATED}", &summary[..end])
}

/// What the scheduler needs of the service; the agent's is [`SsmAssociations`], tests hold fakes.
pub trait AssociationService: Send + Sync {
    /// Every association of `instance_id`, following NextToken.
    fn list(&self, instance_id: &str) -> Result<Vec<Association>, String>;
    fn update_status(
        &self,
        association_id: &str,
        instance_id: &str,
        result: &ExecutionResult,
    ) -> Result<(), String>;
    /// PutComplianceItems with `body` as built by `compliance`.
    fn put_compliance(&self, body: &Value) -> Result<(), String>;
}

pub struct SsmAssociations {
    client: JsonClient,
}

impl SsmAssociations {
    pub fn new(client: JsonClient) -> SsmAssociations {
        SsmAssociations { client }
    }

    fn call(&self, operation: &str, input: &Value) -> Result<Value, String> {
        self.client
            .call_retried(operation, input, CALL_TIMEOUT)
            .map_err(|e| refused(operation, &e))
    }
}

fn refused(operation: &str, e: &AwsError) -> String {
    format!("{operation}: {e}")
}

impl AssociationService for SsmAssociations {
    fn list(&self, instance_id: &str) -> Result<Vec<Association>, String> {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut input = json!({ "InstanceId": instance_id, "MaxResults": PAGE_SIZE });
            if let Some(t) = &token {
                input["NextToken"] = json!(t);
            }
            let answer = self.call("ListInstanceAssociations", &input)?;
            let page = answer["Associations"].as_array().map(Vec::as_slice);
            found.extend(
                page.unwrap_or_default()
                    .iter()
                    .filter_map(Association::from_json),
            );
            match answer["NextToken"].as_str().filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(found),
            }
        }
        log::warn!("ListInstanceAssociations: more than {MAX_PAGES} pages; the rest is ignored");
        Ok(found)
    }

    fn update_status(
        &self,
        association_id: &str,
        instance_id: &str,
        result: &ExecutionResult,
    ) -> Result<(), String> {
        let body = result.body(association_id, instance_id);
        self.call("UpdateInstanceAssociationStatus", &body)
            .map(drop)
    }

    fn put_compliance(&self, body: &Value) -> Result<(), String> {
        self.call("PutComplianceItems", body).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_as_the_service_sends_it() {
        let a = Association::from_json(&json!({
            "AssociationId": "a-1", "Name": "AWS-RunShellScript", "DocumentVersion": "$DEFAULT",
            "InstanceId": "i-1", "Checksum": "c1", "ScheduleExpression": "rate(30 minutes)",
            "LastExecutionDate": 1764765000.25, "DetailedStatus": "Success",
            "Parameters": {"commands": ["echo hi"]},
            "OutputLocation": {"S3Location": {"OutputS3BucketName": "b", "OutputS3KeyPrefix": "p"}}
        }))
        .unwrap();
        assert_eq!(a.last_execution, Some(1764765000));
        assert_eq!(a.parameters["commands"], json!(["echo hi"]));
        assert_eq!(a.s3_output.unwrap().key_prefix, "p");
        assert!(Association::from_json(&json!({"Name": "x"})).is_none());
    }

    #[test]
    fn the_status_body_has_upstreams_fields_and_a_cut_summary() {
        let r = ExecutionResult {
            status: "Failed".into(),
            error_code: "ExecutionError".into(),
            date_ms: 1764765000123,
            summary: "é".repeat(400),
            output_url: Some("b/p/i-1/a-1/r".into()),
        };
        let body = r.body("a-1", "i-1");
        let summary = body["ExecutionResult"]["ExecutionSummary"]
            .as_str()
            .unwrap();
        assert!(summary.len() <= SUMMARY_MAX && summary.ends_with(TRUNCATED));
        assert_eq!(
            body["ExecutionResult"]["ExecutionDate"],
            json!(1764765000.123)
        );
        assert_eq!(
            body["ExecutionResult"]["OutputUrl"]["S3OutputUrl"]["OutputUrl"],
            "b/p/i-1/a-1/r"
        );
        assert_eq!(body["ExecutionResult"]["ErrorCode"], "ExecutionError");
    }
}
