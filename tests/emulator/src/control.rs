//! A small unsigned HTTP interface under `/_emulator/` so shell scripts can drive a running
//! `ssm-emulator serve`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::http::{Request, Response};
use crate::mds;
use crate::state::{Reply, Shared, State};
use crate::util::iso8601_ms;

/// Longest `timeout_ms` honoured by `/_emulator/final`.
const MAX_WAIT: Duration = Duration::from_secs(600);

pub(crate) fn handle(shared: &Shared, req: &Request) -> Response {
    let route = req.path.trim_start_matches("/_emulator/");
    match (req.method.as_str(), route) {
        ("POST", "send-command") => match serde_json::from_slice::<Value>(&req.body) {
            Ok(payload) if payload.is_object() => {
                json_ok(&json!({"MessageId": mds::send_command(shared, &payload)}))
            }
            _ => Response::text(
                400,
                "body must be the send-command payload as a JSON object\n",
            ),
        },
        ("POST", "send-cancel") => match req.query_param("message_id") {
            Some(target) => json_ok(&json!({"MessageId": mds::send_cancel(shared, &target)})),
            None => Response::text(400, "send-cancel needs ?message_id=<target MessageId>\n"),
        },
        ("GET", "replies") => with_message_id(req, |id| {
            let replies: Vec<Value> =
                shared.read(|st| st.replies(id).iter().map(reply_json).collect());
            json_ok(&Value::Array(replies))
        }),
        ("GET", "final") => with_message_id(req, |id| {
            let ms = req
                .query_param("timeout_ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let wait = Duration::from_millis(ms).min(MAX_WAIT);
            match shared.wait_for(wait, |st| st.final_reply(id).map(reply_json)) {
                Some(r) => json_ok(&r),
                None => Response::text(404, format!("no final reply for {id} yet\n")),
            }
        }),
        ("GET", "state") => json_ok(&shared.read(snapshot)),
        _ => Response::text(
            404,
            format!("unknown control route {} {}\n", req.method, req.path),
        ),
    }
}

fn json_ok(v: &Value) -> Response {
    Response::new(200, "application/json", v.to_string())
}

fn with_message_id(req: &Request, f: impl FnOnce(&str) -> Response) -> Response {
    match req.query_param("message_id") {
        Some(id) => f(&id),
        None => Response::text(400, "this route needs ?message_id=<MessageId>\n"),
    }
}

pub(crate) fn reply_json(r: &Reply) -> Value {
    json!({
        "MessageId": r.message_id,
        "ReplyId": r.reply_id,
        "ArrivedAt": iso8601_ms(r.arrived_at),
        "Payload": r.payload,
    })
}

/// A JSON summary of what the emulator has seen (for `--state-file` and `/_emulator/state`).
pub(crate) fn snapshot(st: &State) -> Value {
    let mut replies: Vec<&Reply> = st.mds.replies.values().flatten().collect();
    replies.sort_by_key(|r| r.arrived);
    let fails: Vec<Value> = st
        .fails()
        .iter()
        .map(|f| json!({"MessageId": f.message_id, "FailureType": f.failure_type}))
        .collect();
    let signature_failures: Vec<Value> = st
        .signature_failures()
        .iter()
        .map(|r| json!({"target": r.target, "reason": r.signature.failure()}))
        .collect();
    json!({
        "replies": replies.into_iter().map(reply_json).collect::<Vec<_>>(),
        "acks": st.acks(),
        "fails": fails,
        "duplicate_replies": st.duplicate_replies(),
        "health_pings": st.health_pings().iter().map(|p| &p.request).collect::<Vec<_>>(),
        "requests": st.requests().len(),
        "signature_failures": signature_failures,
    })
}
