//! Reply payloads (`SendReply.Payload`, MGS `agent_job_reply.content`) with upstream's exact shape,
//! status aggregation and output truncation (docs/protocol.md §2.6–§2.8).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Agent-side statuses (docs/protocol.md §2.7).
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
    /// Where the full output went in S3, when the command named a bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<super::output::OutputLocation>,
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
    /// `r` with `texts` as its output, standardOutput and standardError.
    fn of(r: &'a PluginResult, texts: &[&'a str; 3]) -> Self {
        RuntimeStatus {
            status: r.status.as_str(),
            // Upstream forces a non-zero code onto a Failed result.
            code: if r.status == Status::Failed && r.code == 0 {
                1
            } else {
                r.code
            },
            name: &r.plugin_name,
            output: texts[0],
            start_date_time: &r.start,
            end_date_time: &r.end,
            // Upstream `prepareRuntimeStatus`: only when a bucket was named.
            output_s3_bucket_name: r.s3.as_ref().map_or("", |l| &l.bucket),
            output_s3_key_prefix: r.s3.as_ref().map_or("", |l| &l.key_prefix),
            step_name: r.s3.as_ref().map_or("", |l| &l.step_name),
            standard_output: texts[1],
            standard_error: texts[2],
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
    /// The transport's limit on a payload's [`encoded_len`]; output is cut to fit it.
    pub max_encoded_len: Option<usize>,
}

/// A payload's size as it travels: both transports carry it as a JSON string inside a JSON
/// body, so every character its own JSON escaped once is escaped again (a NUL byte of output,
/// `\u0000` in the payload, takes 7 bytes on the wire).
pub fn encoded_len(payload: &str) -> usize {
    payload.chars().map(escaped_len).sum::<usize>() + 2
}

/// Bytes `c` takes in a JSON string (serde_json's escaping).
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Bytes one character of a text field takes in the payload's [`encoded_len`]: escaped twice.
fn escaped_twice(c: char) -> usize {
    match c {
        '"' | '\\' => 4,                             // \" and \\ become \\\" and \\\\
        '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 3, // \n becomes \\n
        c if (c as u32) < 0x20 => 7,                 // \u0001 becomes \\u0001
        c => c.len_utf8(),
    }
}

fn cost(text: &str) -> usize {
    text.chars().map(escaped_twice).sum()
}

/// The longest start of `text` costing at most `budget`, then `mark`.
fn cut_to(text: &str, budget: usize, mark: &str) -> String {
    let mut spent = 0;
    let end = text
        .char_indices()
        .find(|&(_, c)| {
            spent += escaped_twice(c);
            spent > budget
        })
        .map_or(text.len(), |(i, _)| i);
    format!("{}{mark}", &text[..end])
}

/// The largest per-field share such that fields cut to it cost at most `budget` in all.
fn share(costs: &[usize], budget: usize) -> usize {
    let total = |cap: usize| costs.iter().map(|&c| c.min(cap)).sum::<usize>();
    let (mut lo, mut hi) = (0, costs.iter().copied().max().unwrap_or(0));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if total(mid) <= budget {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
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

    /// Renders a payload showing `shown` (None: `runtimeStatus` null); when it is over the
    /// transport's limit, the longest texts (trace, output, standardOutput, standardError) are
    /// cut, each ending in a truncation mark, until it fits. A reply is never dropped for size.
    fn fitted(
        &self,
        status: Status,
        trace: &str,
        counts: Option<BTreeMap<&'static str, usize>>,
        shown: Option<&[&PluginResult]>,
    ) -> String {
        let draw = |texts: &[&str]| {
            let runtime = shown.map(|plugins| {
                plugins
                    .iter()
                    .zip(texts[1..].chunks(3))
                    .map(|(r, t)| {
                        let t = [t[0], t[1], t[2]];
                        (r.plugin_id.as_str(), RuntimeStatus::of(r, &t))
                    })
                    .collect()
            });
            self.render(status, texts[0], counts.clone(), runtime)
        };
        let mut texts = vec![trace];
        for r in shown.unwrap_or_default() {
            texts.extend([&*r.output, &*r.standard_output, &*r.standard_error]);
        }
        let full = draw(&texts);
        let Some(limit) = self.max_encoded_len else {
            return full;
        };
        let costs: Vec<usize> = texts.iter().map(|t| cost(t)).collect();
        let marks: Vec<&str> = (0..texts.len())
            .map(|i| match i {
                // the trace, then each plugin's output, standardOutput, standardError
                0 => OUTPUT_MARK,
                i if (i - 1) % 3 == 0 => OUTPUT_MARK,
                _ => STREAM_MARK,
            })
            .collect();
        let mut out = full;
        let mut budget = costs.iter().sum::<usize>();
        while encoded_len(&out) > limit && budget > 0 {
            budget = budget.saturating_sub(encoded_len(&out) - limit);
            let cap = share(&costs, budget);
            let cut: Vec<String> = texts
                .iter()
                .zip(&costs)
                .zip(&marks)
                .map(|((t, &c), m)| match c <= cap {
                    true => (*t).to_owned(),
                    false => cut_to(t, cap.saturating_sub(cost(m)), m),
                })
                .collect();
            out = draw(&cut.iter().map(String::as_str).collect::<Vec<_>>());
        }
        out
    }

    /// The reply sent on receipt: document `InProgress`, `runtimeStatus: null`.
    pub fn received(&self) -> String {
        self.render(Status::InProgress, "", None, None)
    }

    /// A document that could not be parsed or validated: `Failed` with the reason as trace output.
    pub fn rejected(&self, trace: &str) -> String {
        self.fitted(Status::Failed, trace, None, None)
    }

    /// After a step: document `InProgress`, only that step, counts over the results so far.
    pub fn step_done(&self, so_far: &[PluginResult], step: &PluginResult) -> String {
        self.fitted(Status::InProgress, "", Some(counts(so_far)), Some(&[step]))
    }

    /// The final reply: aggregated status; every plugin when there is at most one, else `{}`.
    pub fn finished(&self, results: &[PluginResult]) -> String {
        let shown: Vec<&PluginResult> = match results.len() {
            0 | 1 => results.iter().collect(),
            _ => Vec::new(),
        };
        self.fitted(
            document_status(results),
            "",
            Some(counts(results)),
            Some(&shown),
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

    /// Adds `bytes` to the end of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.append(&Head::whole(bytes));
    }

    /// Adds another stream to the end of this one. The kept start grows only while it is the
    /// whole stream, and never past `STREAM_CAPACITY`, which every truncation fits in.
    pub fn append(&mut self, next: &Head) {
        if self.len == self.bytes.len() {
            let room = STREAM_CAPACITY.saturating_sub(self.bytes.len());
            self.bytes.extend_from_slice(next.take(room));
        }
        self.len += next.len;
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
const OUT_CUT: &[u8] = OUTPUT_MARK.as_bytes();
/// The marks of a text cut to fit a transport's limit: `output` and the trace like upstream's
/// `output`, the streams like `standardOutput`.
const OUTPUT_MARK: &str = "\n---Output truncated---";
const STREAM_MARK: &str = "--output truncated--";
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
    const MARK: &[u8] = STREAM_MARK.as_bytes();
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

    /// The capacity-100 vectors of upstream's `TestTruncateOutput` (docs/protocol.md §7.1).
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

    /// Bytes added after a stream's kept start would be taken for its middle: only the length
    /// grows once the start is not the whole stream.
    #[test]
    fn a_head_grows_only_while_it_is_the_whole_stream() {
        let mut h = Head::whole(b"ab");
        h.push(b"c");
        assert_eq!((h.bytes.as_slice(), h.len), (&b"abc"[..], 3));
        let mut cut = Head {
            bytes: b"ab".to_vec(),
            len: 10,
        };
        cut.append(&h);
        assert_eq!((cut.bytes.as_slice(), cut.len), (&b"ab"[..], 13));
        let mut full = Head::whole(&vec![b'x'; STREAM_CAPACITY - 1]);
        full.push(b"yz");
        assert_eq!(
            (full.bytes.len(), full.len),
            (STREAM_CAPACITY, STREAM_CAPACITY + 1)
        );
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
            s3: None,
        }
    }

    fn builder() -> ReplyBuilder {
        ReplyBuilder {
            agent: AgentInfo::from_config(&crate::config::Config::default()),
            able_to_open_mgs_connection: Some(false),
            max_encoded_len: None,
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
    fn s3_fields_are_filled_only_for_a_result_that_names_a_bucket() {
        let b = builder();
        let plain: Value =
            serde_json::from_str(&b.finished(&[result("p", Status::Success, 0)])).unwrap();
        let rs = &plain["runtimeStatus"]["p"];
        assert_eq!(
            [
                &rs["outputS3BucketName"],
                &rs["outputS3KeyPrefix"],
                &rs["stepName"]
            ],
            ["", "", ""]
        );
        let mut uploaded = result("p", Status::Success, 0);
        uploaded.s3 = Some(super::super::output::OutputLocation {
            bucket: "bkt".into(),
            key_prefix: "pre/c/i-1/awsrunShellScript".into(),
            step_name: "0.awsrunShellScript".into(),
        });
        let v: Value = serde_json::from_str(&b.finished(&[uploaded.clone()])).unwrap();
        let rs = &v["runtimeStatus"]["p"];
        assert_eq!(rs["outputS3BucketName"], "bkt");
        assert_eq!(rs["outputS3KeyPrefix"], "pre/c/i-1/awsrunShellScript");
        assert_eq!(rs["stepName"], "0.awsrunShellScript");
        // Kept in the command record, and records written before the field still load.
        let stored = serde_json::to_string(&uploaded).unwrap();
        assert_eq!(
            serde_json::from_str::<PluginResult>(&stored).unwrap(),
            uploaded
        );
        let old = serde_json::to_string(&result("p", Status::Success, 0)).unwrap();
        assert!(!old.contains("\"s3\""), "{old}");
        assert_eq!(serde_json::from_str::<PluginResult>(&old).unwrap().s3, None);
    }

    #[test]
    fn encoded_len_is_the_length_as_a_json_string() {
        let all: String = (0u32..0x80)
            .chain([0xe9, 0x2028, 0xfffd, 0x1f600])
            .filter_map(char::from_u32)
            .collect();
        assert_eq!(
            encoded_len(&all),
            serde_json::to_string(&all).unwrap().len()
        );
        let once = serde_json::to_string(&all).unwrap();
        assert_eq!(
            cost(&all) + 6,
            encoded_len(&once),
            "escaped twice, quotes apart"
        );
    }

    #[test]
    fn replies_are_cut_to_the_encoded_limit_and_never_dropped() {
        let mut b = builder();
        let nul = "\0".repeat(STREAM_CAPACITY);
        let mut r = result("aws:runShellScript", Status::Success, 0);
        r.output = "\0".repeat(OUTPUT_CAPACITY);
        r.standard_output = nul.clone();
        r.standard_error = format!("{}\n\"quoted\"", "é".repeat(STREAM_CAPACITY / 2));
        let full = b.finished(std::slice::from_ref(&r));
        assert!(encoded_len(&full) > 200_000, "{}", encoded_len(&full));
        b.max_encoded_len = Some(100_000);
        for payload in [
            b.finished(std::slice::from_ref(&r)),
            b.step_done(std::slice::from_ref(&r), &r),
        ] {
            let n = encoded_len(&payload);
            assert!(
                (99_000..=100_000).contains(&n),
                "{n}: as much as fits is kept"
            );
            let v: Value = serde_json::from_str(&payload).unwrap();
            let p = &v["runtimeStatus"]["aws:runShellScript"];
            let stdout = p["standardOutput"].as_str().unwrap();
            assert!(stdout.ends_with("--output truncated--"));
            assert!(
                stdout.len() > 5000,
                "the longest text keeps the rest: {}",
                stdout.len()
            );
            assert_eq!(
                p["standardError"], r.standard_error,
                "shorter texts stay whole"
            );
            assert_eq!(p["output"], r.output);
            assert_eq!(p["status"], "Success");
        }
        b.max_encoded_len = Some(30_000);
        let v: Value = serde_json::from_str(&b.finished(std::slice::from_ref(&r))).unwrap();
        let p = &v["runtimeStatus"]["aws:runShellScript"];
        assert!(
            p["output"]
                .as_str()
                .unwrap()
                .ends_with("\n---Output truncated---")
        );
        assert!(
            p["standardError"]
                .as_str()
                .unwrap()
                .ends_with("--output truncated--")
        );
        b.max_encoded_len = Some(1_000_000);
        let runtime = |p: &str| serde_json::from_str::<Value>(p).unwrap()["runtimeStatus"].take();
        let same = runtime(&b.finished(std::slice::from_ref(&r))) == runtime(&full);
        assert!(same, "what fits is not cut");
        b.max_encoded_len = Some(5_000);
        let trace = "\u{1}".repeat(10_000);
        let rejected = b.rejected(&trace);
        assert!(encoded_len(&rejected) <= 5_000);
        let v: Value = serde_json::from_str(&rejected).unwrap();
        assert!(
            v["documentTraceOutput"]
                .as_str()
                .unwrap()
                .ends_with("---Output truncated---")
        );
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
