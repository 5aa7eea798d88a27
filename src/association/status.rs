//! What an association run reports: the engine's reply payloads turned into
//! UpdateInstanceAssociationStatus results with upstream's texts (docs/protocol.md §7.2).

use super::service::ExecutionResult;
use serde_json::{Map, Value};

pub const PENDING: &str = "Association is pending";
pub const EXECUTING: &str = "Executing association";

/// A result at the current time.
pub fn now(status: &str, error_code: &str, summary: String) -> ExecutionResult {
    ExecutionResult {
        status: status.to_owned(),
        error_code: error_code.to_owned(),
        date_ms: crate::timefmt::unix_millis(std::time::SystemTime::now()),
        summary,
        output_url: None,
    }
}

/// The result a reply of the engine stands for: `InProgress` with the summary so far after a
/// step (upstream `pluginExecutionReport`), the final status after the last (upstream
/// `associationExecutionReport`). `steps` is the number of steps of the document.
pub fn from_reply(payload: &str, terminal: bool, steps: usize) -> ExecutionResult {
    let reply: Value = serde_json::from_str(payload).unwrap_or_default();
    let runtime = reply["runtimeStatus"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let (status, code) = if terminal {
        final_status(reply["documentStatus"].as_str().unwrap_or_default())
    } else {
        ("InProgress", "")
    };
    let mut summary = summary(&runtime, steps.max(runtime.len()));
    if runtime.is_empty() {
        // A command refused before any step ran: its reason is the trace.
        if let Some(trace) = reply["documentTraceOutput"]
            .as_str()
            .filter(|t| !t.is_empty())
        {
            summary.push_str(trace);
        }
    }
    ExecutionResult {
        output_url: output_url(&runtime),
        ..now(status, code, summary)
    }
}

/// Upstream `listenToResponses`: Failed carries `ExecutionError`; Success, TimedOut and Skipped
/// are final as they are; a document still in progress goes back to Pending. A cancelled run
/// (the agent stopping for good) did not do its work: Failed.
fn final_status(document_status: &str) -> (&'static str, &'static str) {
    match document_status {
        "Success" => ("Success", ""),
        "TimedOut" => ("TimedOut", ""),
        "Skipped" => ("Skipped", ""),
        "InProgress" => ("Pending", ""),
        _ => ("Failed", "ExecutionError"),
    }
}

/// Upstream `buildOutput`'s summary: counts by status, then one sentence per failed step with
/// its standard error.
fn summary(runtime: &Map<String, Value>, total: usize) -> String {
    let count = |want: &[&str]| {
        runtime
            .values()
            .filter(|r| want.contains(&r["status"].as_str().unwrap_or_default()))
            .count()
    };
    let completed = runtime
        .values()
        .filter(|r| !r["status"].as_str().unwrap_or_default().is_empty())
        .count();
    let plural = if total > 1 { "s" } else { "" };
    let mut text = format!(
        "{completed} out of {total} plugin{plural} processed, {} success, {} failed, {} timedout, {} skipped. ",
        count(&["Success", "SuccessAndReboot", "PassedAndReboot"]),
        count(&["Failed"]),
        count(&["TimedOut"]),
        count(&["Skipped"]),
    );
    for (id, r) in runtime.iter().filter(|(_, r)| r["status"] == "Failed") {
        let err = r["standardError"].as_str().unwrap_or_default();
        text.push_str(&format!("\nThe operation {id} failed because {err}."));
    }
    text
}

/// `<bucket>/<key prefix without its last element>` of the first step with S3 output.
fn output_url(runtime: &Map<String, Value>) -> Option<String> {
    let r = runtime.values().next()?;
    let bucket = r["outputS3BucketName"].as_str().filter(|b| !b.is_empty())?;
    let prefix = r["outputS3KeyPrefix"].as_str().unwrap_or_default();
    let mut parts: Vec<&str> = prefix.split('/').collect();
    parts.pop();
    let mut url = vec![bucket];
    url.extend(parts.into_iter().filter(|p| !p.is_empty()));
    Some(url.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reply(status: &str, steps: Value) -> String {
        json!({"documentStatus": status, "runtimeStatus": steps}).to_string()
    }

    #[test]
    fn a_successful_step_reads_as_upstream_reports_it() {
        let payload = reply(
            "Success",
            json!({"aws:runShellScript": {"status": "Success", "standardError": ""}}),
        );
        let r = from_reply(&payload, true, 1);
        assert_eq!((r.status.as_str(), r.error_code.as_str()), ("Success", ""));
        assert_eq!(
            r.summary,
            "1 out of 1 plugin processed, 1 success, 0 failed, 0 timedout, 0 skipped. "
        );
        assert_eq!(r.output_url, None);
        let progress = from_reply(&payload, false, 2);
        assert_eq!(progress.status, "InProgress");
        assert!(progress.summary.starts_with("1 out of 2 plugins processed"));
    }

    #[test]
    fn a_failed_step_names_itself_and_its_error() {
        let payload = reply(
            "Failed",
            json!({
                "one": {"status": "Success"},
                "two": {"status": "Failed", "standardError": "boom\nfailed to run commands: exit status 3",
                        "outputS3BucketName": "b", "outputS3KeyPrefix": "p/i-1/a-1/r1/awsrunShellScript"}
            }),
        );
        let r = from_reply(&payload, true, 2);
        assert_eq!(
            (r.status.as_str(), r.error_code.as_str()),
            ("Failed", "ExecutionError")
        );
        assert_eq!(
            r.summary,
            "2 out of 2 plugins processed, 1 success, 1 failed, 0 timedout, 0 skipped. \nThe operation two failed because boom\nfailed to run commands: exit status 3."
        );
        assert_eq!(r.output_url, None, "the first step has no S3 output");
    }

    #[test]
    fn output_url_drops_the_plugin_element() {
        let payload = reply(
            "Success",
            json!({"s": {"status": "Success", "outputS3BucketName": "b",
                         "outputS3KeyPrefix": "p/i-1/a-1/r1/awsrunShellScript"}}),
        );
        assert_eq!(
            from_reply(&payload, true, 1).output_url.as_deref(),
            Some("b/p/i-1/a-1/r1")
        );
    }

    #[test]
    fn a_refused_document_reports_failed_with_its_reason() {
        let payload =
            json!({"documentStatus": "Failed", "documentTraceOutput": "bad doc"}).to_string();
        let r = from_reply(&payload, true, 1);
        assert_eq!(r.status, "Failed");
        assert!(r.summary.ends_with("skipped. bad doc"), "{}", r.summary);
    }
}
