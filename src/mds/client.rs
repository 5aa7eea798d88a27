//! The ec2messages operations the agent uses (docs/protocol.md §2.1), as typed calls.

use crate::aws::jsonrpc::{AwsError, JsonClient};
use serde_json::{Value, json};
use std::time::Duration;

/// One delivered message. Field names follow the service's (case-sensitive) JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub message_id: String,
    pub topic: String,
    pub payload: String,
    pub created_date: String,
    pub destination: String,
}

impl Message {
    /// Upstream ignores a message that lacks any of these (no ack, no reply).
    pub fn is_complete(&self) -> bool {
        ![
            &self.message_id,
            &self.topic,
            &self.created_date,
            &self.destination,
        ]
        .iter()
        .any(|s| s.is_empty())
    }
}

pub struct MdsClient {
    json: JsonClient,
    destination: String,
    /// The HTTP timeout of every call, `Mds.StopTimeoutMillis` (also bounds the long poll).
    timeout: Duration,
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

impl MdsClient {
    pub fn new(json: JsonClient, destination: &str, timeout: Duration) -> MdsClient {
        MdsClient {
            json,
            destination: destination.to_owned(),
            timeout,
        }
    }

    /// One long poll. Returns the delivered messages (often none).
    pub fn get_messages(&self) -> Result<Vec<Message>, AwsError> {
        let input = json!({
            "Destination": self.destination,
            "MessagesRequestId": crate::random::uuid_v4(),
            "VisibilityTimeoutInSeconds": 10,
        });
        let out = self.json.call("GetMessages", &input, self.timeout)?;
        let messages = match out.get("Messages") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(m)) => m,
            Some(other) => {
                return Err(AwsError::Decode(format!(
                    "GetMessages: Messages is not a list: {other}"
                )));
            }
        };
        Ok(messages
            .iter()
            .map(|m| Message {
                message_id: text(m, "MessageId"),
                topic: text(m, "Topic"),
                payload: text(m, "Payload"),
                created_date: text(m, "CreatedDate"),
                destination: text(m, "Destination"),
            })
            .collect())
    }

    pub fn acknowledge(&self, message_id: &str) -> Result<(), AwsError> {
        self.json
            .call(
                "AcknowledgeMessage",
                &json!({ "MessageId": message_id }),
                self.timeout,
            )
            .map(drop)
    }

    pub fn send_reply(
        &self,
        message_id: &str,
        reply_id: &str,
        payload: &str,
    ) -> Result<(), AwsError> {
        let input = json!({ "MessageId": message_id, "Payload": payload, "ReplyId": reply_id });
        self.json.call("SendReply", &input, self.timeout).map(drop)
    }

    pub fn fail_message(&self, message_id: &str) -> Result<(), AwsError> {
        let input = json!({ "FailureType": "InternalHandlerException", "MessageId": message_id });
        self.json
            .call("FailMessage", &input, self.timeout)
            .map(drop)
    }
}
