//! The AgentMessage binary frame (protocol §4.3) that carries everything on MGS websockets.
//! STUB: interface fixed; implementation in progress.

/// Flags bits.
pub const FLAG_SYN: u64 = 1;
pub const FLAG_FIN: u64 = 2;

/// One decoded frame. `message_id` is the canonical lower-case UUID string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentMessage {
    pub message_type: String,
    pub schema_version: u32,
    /// Epoch milliseconds.
    pub created_date: u64,
    pub sequence_number: i64,
    pub flags: u64,
    pub message_id: String,
    pub payload_type: u32,
    pub payload: Vec<u8>,
}

/// Why bytes are not an AgentMessage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub String);

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FrameError {}

impl AgentMessage {
    /// A new message of `message_type` with a fresh id, now as created date, schema 1.
    pub fn new(message_type: &str, sequence_number: i64, flags: u64, payload_type: u32, payload: Vec<u8>) -> AgentMessage {
        let _ = (message_type, sequence_number, flags, payload_type, payload);
        todo!()
    }

    pub fn encode(&self) -> Vec<u8> {
        todo!()
    }

    /// Decodes untrusted bytes; never panics.
    pub fn decode(bytes: &[u8]) -> Result<AgentMessage, FrameError> {
        let _ = bytes;
        todo!()
    }
}
