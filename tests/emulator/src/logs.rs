//! CloudWatch Logs (`Logs_20140328.*`, JSON 1.1 signed for `logs`), for Run Command output
//! (the agent's docs/protocol.md §3.11): CreateLogGroup, CreateLogStream and PutLogEvents with
//! the service's checks — the group and stream exist, at most 10,000 events and 1,048,576 bytes
//! (26 a event) a call, no empty or oversized event, chronological order within 24 hours, and
//! the sequence token when one is sent. Tests read streams with [`crate::Emulator::log_events`].
//! DescribeLogGroups (by prefix, 50 a page) answers the agent's session logging, which checks a
//! group and its KMS key (set with [`crate::Emulator::create_log_group`]) before a session.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::http::Response;

pub const TARGET_PREFIX: &str = "Logs_20140328";
pub const SERVICE: &str = "logs";
pub const OPERATIONS: &[&str] = &[
    "CreateLogGroup",
    "CreateLogStream",
    "PutLogEvents",
    "DescribeLogGroups",
];
/// Groups in one DescribeLogGroups answer (the service's default `limit`).
const DESCRIBE_PAGE: usize = 50;

const MAX_EVENTS: usize = 10_000;
const MAX_BATCH_BYTES: usize = 1_048_576;
const EVENT_OVERHEAD: usize = 26;
const MAX_EVENT_BYTES: usize = 256 * 1024;
const MAX_SPAN_MS: u64 = 24 * 3600 * 1000;

#[derive(Default)]
pub struct LogsState {
    /// Group → stream → its events.
    groups: BTreeMap<String, BTreeMap<String, LogStream>>,
    /// Every PutLogEvents is refused with this `(status, error type)` while set.
    refuse_puts: Option<(u16, String)>,
    /// Group → the KMS key it is encrypted with.
    kms_keys: BTreeMap<String, String>,
}

#[derive(Default)]
struct LogStream {
    events: Vec<(u64, String)>,
    /// Accepted PutLogEvents calls; the next expected sequence token is this number.
    puts: usize,
}

impl LogsState {
    pub(crate) fn handle(&mut self, op: &str, body: &Value) -> Response {
        let text = |field: &str| body[field].as_str().filter(|s| !s.is_empty());
        if op == "DescribeLogGroups" {
            return self.describe(text("logGroupNamePrefix").unwrap_or(""), text("nextToken"));
        }
        let (Some(group), stream) = (text("logGroupName"), text("logStreamName")) else {
            return invalid("logGroupName is required");
        };
        match (op, stream) {
            ("CreateLogGroup", _) => self.create_group(group),
            ("CreateLogStream", Some(stream)) => self.create_stream(group, stream),
            ("PutLogEvents", Some(stream)) => match self.refuse_puts.clone() {
                Some((status, code)) => Response::aws_error(status, &code, "refused by the test"),
                None => self.put(group, stream, body),
            },
            _ => invalid("logStreamName is required"),
        }
    }

    fn create_group(&mut self, group: &str) -> Response {
        if self.groups.contains_key(group) {
            return already_exists("The specified log group already exists");
        }
        self.groups.insert(group.to_owned(), BTreeMap::new());
        Response::json(200, &json!({}))
    }

    /// A test's group, encrypted with `kms_key` when one is given.
    pub(crate) fn create_group_with_key(&mut self, group: &str, kms_key: Option<&str>) {
        self.groups.entry(group.to_owned()).or_default();
        if let Some(key) = kms_key {
            self.kms_keys.insert(group.to_owned(), key.to_owned());
        }
    }

    /// Groups named `prefix…` in name order, a page after the group `after` (the token).
    fn describe(&self, prefix: &str, after: Option<&str>) -> Response {
        let names = self.groups.keys().filter(|g| g.starts_with(prefix));
        let names: Vec<&String> = names
            .filter(|g| after.is_none_or(|a| g.as_str() > a))
            .collect();
        let page: Vec<Value> = names
            .iter()
            .take(DESCRIBE_PAGE)
            .map(|g| {
                let mut group = json!({ "logGroupName": g, "storedBytes": 0 });
                if let Some(key) = self.kms_keys.get(*g) {
                    group["kmsKeyId"] = json!(key);
                }
                group
            })
            .collect();
        let mut answer = json!({ "logGroups": page });
        if names.len() > DESCRIBE_PAGE {
            answer["nextToken"] = json!(names[DESCRIBE_PAGE - 1]);
        }
        Response::json(200, &answer)
    }

    fn create_stream(&mut self, group: &str, stream: &str) -> Response {
        let Some(streams) = self.groups.get_mut(group) else {
            return not_found("The specified log group does not exist.");
        };
        if streams.contains_key(stream) {
            return already_exists("The specified log stream already exists");
        }
        streams.insert(stream.to_owned(), LogStream::default());
        Response::json(200, &json!({}))
    }

    fn put(&mut self, group: &str, name: &str, body: &Value) -> Response {
        let Some(streams) = self.groups.get_mut(group) else {
            return not_found("The specified log group does not exist.");
        };
        let Some(stream) = streams.get_mut(name) else {
            return not_found("The specified log stream does not exist.");
        };
        let expected = (stream.puts > 0).then(|| stream.puts.to_string());
        if let Some(given) = body["sequenceToken"].as_str()
            && Some(given) != expected.as_deref()
        {
            let next = expected.as_deref().unwrap_or("null");
            let message = format!(
                "The given sequenceToken is invalid. The next expected sequenceToken is: {next}"
            );
            return Response::aws_error(400, "InvalidSequenceTokenException", &message);
        }
        let events = match checked_events(&body["logEvents"]) {
            Ok(events) => events,
            Err(why) => return invalid(&why),
        };
        stream.events.extend(events);
        stream.puts += 1;
        Response::json(
            200,
            &json!({ "nextSequenceToken": stream.puts.to_string() }),
        )
    }

    /// The messages of `stream` in `group`, in order (`None` when there is no such stream).
    pub fn messages(&self, group: &str, stream: &str) -> Option<Vec<String>> {
        let stream = self.groups.get(group)?.get(stream)?;
        Some(stream.events.iter().map(|(_, m)| m.clone()).collect())
    }

    /// Whether `stream` in `group` holds an event of exactly `message`.
    pub fn has(&self, group: &str, stream: &str, message: &str) -> bool {
        let stream = self.groups.get(group).and_then(|s| s.get(stream));
        stream.is_some_and(|s| s.events.iter().any(|(_, m)| m == message))
    }

    /// The accepted PutLogEvents calls for a stream.
    pub(crate) fn puts(&self, group: &str, stream: &str) -> usize {
        let stream = self.groups.get(group).and_then(|s| s.get(stream));
        stream.map_or(0, |s| s.puts)
    }

    /// The streams of `group`, sorted.
    pub(crate) fn streams(&self, group: &str) -> Vec<String> {
        let streams = self.groups.get(group).map(|s| s.keys().cloned().collect());
        streams.unwrap_or_default()
    }

    pub(crate) fn refuse_puts(&mut self, refusal: Option<(u16, String)>) {
        self.refuse_puts = refusal;
    }
}

/// The events of a PutLogEvents, or why the service would refuse them.
fn checked_events(events: &Value) -> Result<Vec<(u64, String)>, String> {
    let events = events.as_array().filter(|e| !e.is_empty());
    let events = events.ok_or("logEvents must hold at least one event")?;
    if events.len() > MAX_EVENTS {
        return Err(format!("{} events, more than {MAX_EVENTS}", events.len()));
    }
    let mut out: Vec<(u64, String)> = Vec::with_capacity(events.len());
    let mut bytes = 0;
    for (i, e) in events.iter().enumerate() {
        let (Some(at), Some(message)) = (e["timestamp"].as_u64(), e["message"].as_str()) else {
            return Err(format!("logEvents.{i} needs a timestamp and a message"));
        };
        if message.is_empty() || message.len() + EVENT_OVERHEAD > MAX_EVENT_BYTES {
            return Err(format!("logEvents.{i}: {} bytes", message.len()));
        }
        if out.last().is_some_and(|(last, _)| at < *last) {
            return Err(
                "Log events in a single PutLogEvents request must be in chronological \
                        order."
                    .into(),
            );
        }
        if out
            .first()
            .is_some_and(|(first, _)| at - first > MAX_SPAN_MS)
        {
            return Err(
                "A batch of log events in a single request cannot span more than 24 \
                        hours."
                    .into(),
            );
        }
        bytes += message.len() + EVENT_OVERHEAD;
        out.push((at, message.to_owned()));
    }
    if bytes > MAX_BATCH_BYTES {
        return Err(format!(
            "Upload too large: {bytes} bytes exceeds limit of {MAX_BATCH_BYTES}"
        ));
    }
    Ok(out)
}

fn invalid(message: &str) -> Response {
    Response::aws_error(400, "InvalidParameterException", message)
}

fn not_found(message: &str) -> Response {
    Response::aws_error(400, "ResourceNotFoundException", message)
}

fn already_exists(message: &str) -> Response {
    Response::aws_error(400, "ResourceAlreadyExistsException", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(st: &mut LogsState, events: Value, token: Option<&str>) -> Response {
        let mut body = json!({"logGroupName": "g", "logStreamName": "s", "logEvents": events});
        if let Some(t) = token {
            body["sequenceToken"] = json!(t);
        }
        st.handle("PutLogEvents", &body)
    }

    #[test]
    fn groups_are_described_by_prefix_a_page_at_a_time() {
        let mut st = LogsState::default();
        for n in 0..60 {
            st.create_group_with_key(&format!("/g/{n:02}"), None);
        }
        st.create_group_with_key("/g/kms", Some("arn:aws:kms:us-east-1:1:key/k"));
        st.create_group_with_key("/other", None);
        let first = st.handle("DescribeLogGroups", &json!({ "logGroupNamePrefix": "/g/" }));
        let first: Value = serde_json::from_slice(&first.body).unwrap();
        assert_eq!(first["logGroups"].as_array().unwrap().len(), 50);
        let token = first["nextToken"].as_str().unwrap();
        let rest = st.handle(
            "DescribeLogGroups",
            &json!({ "logGroupNamePrefix": "/g/", "nextToken": token }),
        );
        let rest: Value = serde_json::from_slice(&rest.body).unwrap();
        let names: Vec<&str> = rest["logGroups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["logGroupName"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 11);
        assert_eq!(names.last(), Some(&"/g/kms"));
        assert_eq!(
            rest["logGroups"][10]["kmsKeyId"],
            "arn:aws:kms:us-east-1:1:key/k"
        );
        assert!(rest.get("nextToken").is_none());
    }

    #[test]
    fn puts_are_checked_as_the_service_checks_them() {
        let mut st = LogsState::default();
        let group = json!({"logGroupName": "g", "logStreamName": "s"});
        assert_eq!(
            put(&mut st, json!([{"timestamp": 1, "message": "a"}]), None).status,
            400
        );
        assert_eq!(st.handle("CreateLogGroup", &group).status, 200);
        assert_eq!(st.handle("CreateLogGroup", &group).status, 400);
        assert_eq!(st.handle("CreateLogStream", &group).status, 200);
        let ok = |r: Response| r.status == 200;
        assert!(ok(put(
            &mut st,
            json!([{"timestamp": 1, "message": "a"}]),
            None
        )));
        assert!(!ok(put(
            &mut st,
            json!([{"timestamp": 2, "message": "b"}]),
            Some("7")
        )));
        assert!(ok(put(
            &mut st,
            json!([{"timestamp": 2, "message": "b"}]),
            Some("1")
        )));
        let unordered = json!([{"timestamp": 5, "message": "x"}, {"timestamp": 4, "message": "y"}]);
        assert!(!ok(put(&mut st, unordered, None)));
        assert!(!ok(put(
            &mut st,
            json!([{"timestamp": 5, "message": ""}]),
            None
        )));
        let big = "x".repeat(MAX_EVENT_BYTES - EVENT_OVERHEAD);
        let five: Vec<Value> = (0..5)
            .map(|_| json!({"timestamp": 6, "message": big}))
            .collect();
        assert!(!ok(put(&mut st, json!(five), None)), "over 1 MiB");
        assert!(ok(put(&mut st, json!(five[..4]), None)), "1 MiB exactly");
        assert_eq!(st.messages("g", "s").unwrap()[..2], ["a", "b"]);
        assert_eq!(st.puts("g", "s"), 3);
    }
}
