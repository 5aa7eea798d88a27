//! Reply payloads (`SendReply.Payload`, MGS `agent_job_reply.content`) with upstream's exact shape,
//! status aggregation and output truncation (protocol §2.6–§2.8).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Agent-side statuses (protocol §2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Status {
    NotStarted,
    InProgress,
    Success,
    SuccessAndReboot,
    PassedAndReboot,
    Failed,
    Cancelled,
    TimedOut,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::NotStarted => "NotStarted",
            Status::InProgress => "InProgress",
            Status::Success => "Success",
            Status::SuccessAndReboot => "SuccessAndReboot",
            Status::PassedAndReboot => "PassedAndReboot",
            Status::Failed => "Failed",
            Status::Cancelled => "Cancelled",
            Status::TimedOut => "TimedOut",
            Status::Skipped => "Skipped",
        }
    }

    /// Upstream `MergeResultStatus` precedence, for one plugin run over several property sets.
    fn merge_rank(self) -> u8 {
        match self {
            Status::Skipped => 0,
            Status::Success => 1,
            Status::SuccessAndReboot => 2,
            Status::PassedAndReboot => 3,
            Status::NotStarted => 4,
            Status::InProgress => 5,
            Status::Failed => 6,
            Status::Cancelled => 7,
            Status::TimedOut => 8,
        }
    }

    pub fn merge(self, other: Status) -> Status {
        if other.merge_rank() > self.merge_rank() {
            other
        } else {
            self
        }
    }
}

/// The outcome of one plugin (step), as kept in the command record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginResult {
    pub plugin_id: String,
    pub plugin_name: String,
    pub status: Status,
    pub code: i32,
    /// Combined, truncated output (§2.8) or the error text.
    pub output: String,
    pub standard_output: String,
    pub standard_error: String,
    pub start: String,
    pub end: String,
}

/// `additionalInfo.agent`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentInfo {
    pub lang: String,
    pub name: String,
    pub os: String,
    pub osver: String,
    pub ver: String,
}

impl AgentInfo {
    pub fn from_config(c: &crate::config::Config) -> AgentInfo {
        AgentInfo {
            lang: c.os.lang.clone(),
            name: c.agent.name.clone(),
            os: c.os.name.clone(),
            osver: c.os.version.clone(),
            ver: c.agent.version.clone(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AdditionalInfo<'a> {
    agent: &'a AgentInfo,
    date_time: String,
    run_id: &'a str,
    runtime_status_counts: Option<BTreeMap<&'static str, usize>>,
    #[serde(
        rename = "ableToOpenMGSConnection",
        skip_serializing_if = "Option::is_none"
    )]
    able_to_open_mgs_connection: Option<bool>,
}

/// `PluginRuntimeStatus`: every key always present, in upstream's order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeStatus<'a> {
    status: &'static str,
    code: i32,
    name: &'a str,
    output: &'a str,
    start_date_time: &'a str,
    end_date_time: &'a str,
    #[serde(rename = "outputS3BucketName")]
    output_s3_bucket_name: &'a str,
    #[serde(rename = "outputS3KeyPrefix")]
    output_s3_key_prefix: &'a str,
    step_name: &'a str,
    standard_output: &'a str,
    standard_error: &'a str,
}

impl<'a> RuntimeStatus<'a> {
    fn of(r: &'a PluginResult) -> Self {
        RuntimeStatus {
            status: r.status.as_str(),
            // Upstream forces a non-zero code onto a Failed result.
            code: if r.status == Status::Failed && r.code == 0 {
                1
            } else {
                r.code
            },
            name: &r.plugin_name,
            output: &r.output,
            start_date_time: &r.start,
            end_date_time: &r.end,
            output_s3_bucket_name: "",
            output_s3_key_prefix: "",
            step_name: "",
            standard_output: &r.standard_output,
            standard_error: &r.standard_error,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    additional_info: AdditionalInfo<'a>,
    document_status: &'static str,
    document_trace_output: &'a str,
    runtime_status: Option<BTreeMap<&'a str, RuntimeStatus<'a>>>,
}

/// Builds reply payloads for one transport; MDS replies carry `ableToOpenMGSConnection`.
#[derive(Debug, Clone)]
pub struct ReplyBuilder {
    pub agent: AgentInfo,
    pub able_to_open_mgs_connection: Option<bool>,
}

fn counts(results: &[PluginResult]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for r in results {
        *m.entry(r.status.as_str()).or_insert(0) += 1;
    }
    m
}

impl ReplyBuilder {
    fn render(
        &self,
        status: Status,
        trace: &str,
        counts: Option<BTreeMap<&'static str, usize>>,
        runtime: Option<BTreeMap<&str, RuntimeStatus<'_>>>,
    ) -> String {
        let p = Payload {
            additional_info: AdditionalInfo {
                agent: &self.agent,
                date_time: crate::timefmt::iso8601_ms(std::time::SystemTime::now()),
                run_id: "",
                runtime_status_counts: counts,
                able_to_open_mgs_connection: self.able_to_open_mgs_connection,
            },
            document_status: status.as_str(),
            document_trace_output: trace,
            runtime_status: runtime,
        };
        serde_json::to_string(&p).expect("reply payloads always serialise")
    }

    /// The reply sent on receipt: document `InProgress`, `runtimeStatus: null`.
    pub fn received(&self) -> String {
        self.render(Status::InProgress, "", None, None)
    }

    /// A document that could not be parsed or validated: `Failed` with the reason as trace output.
    pub fn rejected(&self, trace: &str) -> String {
        self.render(Status::Failed, trace, None, None)
    }

    /// After a step: document `InProgress`, only that step, counts over the results so far.
    pub fn step_done(&self, so_far: &[PluginResult], step: &PluginResult) -> String {
        let runtime = BTreeMap::from([(step.plugin_id.as_str(), RuntimeStatus::of(step))]);
        self.render(Status::InProgress, "", Some(counts(so_far)), Some(runtime))
    }

    /// The final reply: aggregated status; every plugin when there is at most one, else `{}`.
    pub fn finished(&self, results: &[PluginResult]) -> String {
        let runtime = if results.len() <= 1 {
            results
                .iter()
                .map(|r| (r.plugin_id.as_str(), RuntimeStatus::of(r)))
                .collect()
        } else {
            BTreeMap::new()
        };
        self.render(
            document_status(results),
            "",
            Some(counts(results)),
            Some(runtime),
        )
    }
}

/// Upstream `DocumentResultAggregator`, checked in its order.
pub fn document_status(results: &[PluginResult]) -> Status {
    let any = |s: Status| results.iter().any(|r| r.status == s);
    for s in [
        Status::SuccessAndReboot,
        Status::Failed,
        Status::TimedOut,
        Status::Cancelled,
    ] {
        if any(s) {
            return s;
        }
    }
    let done = results
        .iter()
        .filter(|r| matches!(r.status, Status::Success | Status::Skipped))
        .count();
    if done == results.len() {
        Status::Success
    } else {
        Status::InProgress
    }
}

/// The start of a stream and its full length: truncation needs no more than that.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Head {
    pub bytes: Vec<u8>,
    pub len: usize,
}

impl Head {
    pub fn whole(bytes: &[u8]) -> Head {
        Head {
            bytes: bytes.to_vec(),
            len: bytes.len(),
        }
    }

    fn take(&self, n: usize) -> &[u8] {
        &self.bytes[..n.min(self.bytes.len())]
    }
}

/// Capacity of the combined `output` field (upstream `MaximumPluginOutputSize`).
pub const OUTPUT_CAPACITY: usize = 2500;
/// Capacity of `standardOutput`/`standardError`.
pub const STREAM_CAPACITY: usize = 24_000;

const ERROR_TITLE: &[u8] = b"\n----------ERROR-------\n";
const OUT_CUT: &[u8] = b"\n---Output truncated---";
const ERR_CUT: &[u8] = b"\n---Error truncated----";

/// Upstream `TruncateOutput`: stdout and stderr in `capacity` bytes with markers where cut.
/// `out` and `err` must hold at least `capacity` bytes of their streams (or all of them).
pub fn truncate_output(out: &Head, err: &Head, capacity: usize) -> String {
    let title: &[u8] = if err.len > 0 { ERROR_TITLE } else { b"" };
    let avail = capacity.saturating_sub(title.len());
    let cut = OUT_CUT.len();
    let mut s = Vec::with_capacity(capacity);
    if out.len + err.len < avail {
        s.extend_from_slice(out.take(out.len));
        s.extend_from_slice(title);
        s.extend_from_slice(err.take(err.len));
    } else if out.len > avail / 2 && err.len > avail / 2 {
        let half = avail.saturating_sub(2 * cut) / 2;
        s.extend_from_slice(out.take(half));
        s.extend_from_slice(OUT_CUT);
        s.extend_from_slice(title);
        s.extend_from_slice(err.take(half));
        s.extend_from_slice(ERR_CUT);
    } else if out.len <= avail / 2 {
        s.extend_from_slice(out.take(out.len));
        s.extend_from_slice(title);
        s.extend_from_slice(err.take(avail.saturating_sub(cut + out.len)));
        s.extend_from_slice(ERR_CUT);
    } else {
        s.extend_from_slice(out.take(avail.saturating_sub(cut + err.len)));
        s.extend_from_slice(OUT_CUT);
        s.extend_from_slice(title);
        s.extend_from_slice(err.take(err.len));
    }
    String::from_utf8_lossy(&s).into_owned()
}

/// `standardOutput`/`standardError`: cut to 24000 bytes ending in `--output truncated--`.
pub fn truncate_stream(h: &Head) -> String {
    const MARK: &[u8] = b"--output truncated--";
    if h.len < STREAM_CAPACITY {
        return String::from_utf8_lossy(h.take(h.len)).into_owned();
    }
    let mut s = h.take(STREAM_CAPACITY - MARK.len()).to_vec();
    s.extend_from_slice(MARK);
    String::from_utf8_lossy(&s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn long_message() -> String {
        let line = "This is a sample text. ".repeat(5);
        let mut m = String::new();
        for _ in 0..10 {
            m.push_str(line.trim_end());
            m.push('\n');
        }
        m + "1234567890. This is a sample text. This is a sample text"
    }

    /// The capacity-100 vectors of upstream's `TestTruncateOutput` (protocol §7.1).
    #[test]
    fn truncation_matches_upstream_vectors() {
        let long = long_message();
        let cases: [(&str, &str, &str); 7] = [
            ("", "", ""),
            ("sample output", "", "sample output"),
            ("", "sample error", "\n----------ERROR-------\nsample error"),
            (
                "sample output",
                "sample error",
                "sample output\n----------ERROR-------\nsample error",
            ),
            (
                &long,
                "",
                "This is a sample text. This is a sample text. This is a sample text. This is \n---Output truncated---",
            ),
            (
                "",
                &long,
                "\n----------ERROR-------\nThis is a sample text. This is a sample text. This is\n---Error truncated----",
            ),
            (
                &long,
                &long,
                "This is a sampl\n---Output truncated---\n----------ERROR-------\nThis is a sampl\n---Error truncated----",
            ),
        ];
        for (i, (out, err, want)) in cases.iter().enumerate() {
            let got = truncate_output(
                &Head::whole(out.as_bytes()),
                &Head::whole(err.as_bytes()),
                100,
            );
            assert_eq!(&got, want, "case {i}");
        }
    }

    #[test]
    fn truncation_works_from_heads_of_long_streams() {
        let big = vec![b'x'; 3000];
        let head = Head {
            bytes: big[..2500].to_vec(),
            len: 1_000_000,
        };
        let s = truncate_output(&head, &Head::default(), OUTPUT_CAPACITY);
        assert_eq!(s.len(), OUTPUT_CAPACITY);
        assert!(s.ends_with("\n---Output truncated---"));
        let std = truncate_stream(&Head {
            bytes: vec![b'y'; STREAM_CAPACITY],
            len: 50_000,
        });
        assert_eq!(std.len(), STREAM_CAPACITY);
        assert!(std.ends_with("--output truncated--"));
        assert_eq!(truncate_stream(&Head::whole(b"short")), "short");
    }

    fn result(id: &str, status: Status, code: i32) -> PluginResult {
        PluginResult {
            plugin_id: id.into(),
            plugin_name: "aws:runShellScript".into(),
            status,
            code,
            output: "out".into(),
            standard_output: "out".into(),
            standard_error: String::new(),
            start: "2026-01-01T00:00:00.000Z".into(),
            end: "2026-01-01T00:00:01.000Z".into(),
        }
    }

    fn builder() -> ReplyBuilder {
        ReplyBuilder {
            agent: AgentInfo::from_config(&crate::config::Config::default()),
            able_to_open_mgs_connection: Some(false),
        }
    }

    #[test]
    fn receipt_reply_has_null_runtime_status_and_counts() {
        let v: Value = serde_json::from_str(&builder().received()).unwrap();
        assert_eq!(v["documentStatus"], "InProgress");
        assert!(v["runtimeStatus"].is_null());
        assert!(v["additionalInfo"]["runtimeStatusCounts"].is_null());
        assert_eq!(v["additionalInfo"]["runId"], "");
        assert_eq!(v["additionalInfo"]["ableToOpenMGSConnection"], false);
        assert_eq!(v["documentTraceOutput"], "");
    }

    #[test]
    fn final_reply_lists_one_plugin_but_not_several() {
        let b = builder();
        let one: Value =
            serde_json::from_str(&b.finished(&[result("aws:runShellScript", Status::Success, 0)]))
                .unwrap();
        let rs = &one["runtimeStatus"]["aws:runShellScript"];
        let keys: Vec<_> = rs.as_object().unwrap().keys().cloned().collect();
        let mut want = vec![
            "code",
            "endDateTime",
            "name",
            "output",
            "outputS3BucketName",
            "outputS3KeyPrefix",
            "standardError",
            "standardOutput",
            "startDateTime",
            "status",
            "stepName",
        ];
        want.sort();
        assert_eq!(keys, want);
        assert_eq!(one["additionalInfo"]["runtimeStatusCounts"]["Success"], 1);
        let two = b.finished(&[
            result("a", Status::Success, 0),
            result("b", Status::Skipped, 0),
        ]);
        let two: Value = serde_json::from_str(&two).unwrap();
        assert_eq!(two["runtimeStatus"], serde_json::json!({}));
        assert_eq!(two["documentStatus"], "Success");
        let raw = b.step_done(
            &[result("a", Status::Failed, 0)],
            &result("a", Status::Failed, 0),
        );
        let v: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(v["documentStatus"], "InProgress");
        assert_eq!(
            v["runtimeStatus"]["a"]["code"], 1,
            "Failed with code 0 is reported as 1"
        );
        assert!(raw.find("\"status\"").unwrap() < raw.find("\"standardError\"").unwrap());
    }

    #[test]
    fn aggregation_follows_upstream_order() {
        let r = |s| result("x", s, 0);
        assert_eq!(
            document_status(&[r(Status::Failed), r(Status::SuccessAndReboot)]),
            Status::SuccessAndReboot
        );
        assert_eq!(
            document_status(&[r(Status::TimedOut), r(Status::Failed)]),
            Status::Failed
        );
        assert_eq!(
            document_status(&[r(Status::Cancelled), r(Status::TimedOut)]),
            Status::TimedOut
        );
        assert_eq!(
            document_status(&[r(Status::Success), r(Status::Cancelled)]),
            Status::Cancelled
        );
        assert_eq!(
            document_status(&[r(Status::Success), r(Status::InProgress)]),
            Status::InProgress
        );
        assert_eq!(Status::Success.merge(Status::Failed), Status::Failed);
        assert_eq!(Status::TimedOut.merge(Status::Cancelled), Status::TimedOut);
    }
}
