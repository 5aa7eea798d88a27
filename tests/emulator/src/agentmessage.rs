//! The MGS AgentMessage binary frame (docs/protocol.md §4.3), written independently of the agent's
//! codec: big-endian integers, a space-padded 32-byte MessageType, the UUID halves swapped and a
//! SHA-256 digest of the payload.

use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::util::{hex, uuid_v4};

/// Offset of PayloadLength, which is what HeaderLength holds.
pub const HEADER_LENGTH: u32 = 116;
/// Bytes before the payload.
pub const PAYLOAD_OFFSET: usize = 120;
const TYPE_LEN: usize = 32;

/// Message types (docs/protocol.md §4.4).
pub mod types {
    pub const INTERACTIVE_SHELL: &str = "interactive_shell";
    pub const CHANNEL_CLOSED: &str = "channel_closed";
    pub const AGENT_JOB: &str = "agent_job";
    pub const AGENT_JOB_ACK: &str = "agent_job_ack";
    pub const AGENT_JOB_REPLY: &str = "agent_job_reply";
    pub const AGENT_JOB_REPLY_ACK: &str = "agent_job_reply_ack";
    pub const AGENT_TASK_COMPLETE: &str = "agent_task_complete";
    pub const AGENT_TASK_ACKNOWLEDGE: &str = "agent_task_acknowledge";
    pub const INPUT_STREAM_DATA: &str = "input_stream_data";
    pub const OUTPUT_STREAM_DATA: &str = "output_stream_data";
    pub const ACKNOWLEDGE: &str = "acknowledge";
    pub const AGENT_SESSION_STATE: &str = "agent_session_state";
    pub const PAUSE_PUBLICATION: &str = "pause_publication";
    pub const START_PUBLICATION: &str = "start_publication";
}

/// Data-channel `PayloadType` values (docs/protocol.md §4.6.1).
pub mod payload_types {
    pub const OUTPUT: u32 = 1;
    pub const ERROR: u32 = 2;
    pub const SIZE: u32 = 3;
    pub const PARAMETER: u32 = 4;
    pub const HANDSHAKE_REQUEST: u32 = 5;
    pub const HANDSHAKE_RESPONSE: u32 = 6;
    pub const HANDSHAKE_COMPLETE: u32 = 7;
    pub const ENC_CHALLENGE_REQUEST: u32 = 8;
    pub const ENC_CHALLENGE_RESPONSE: u32 = 9;
    pub const FLAG: u32 = 10;
    pub const STDERR: u32 = 11;
    pub const EXIT_CODE: u32 = 12;
}

/// Header flag bits.
pub const FLAG_SYN: u64 = 1;
pub const FLAG_FIN: u64 = 2;

/// One decoded (or to-be-encoded) AgentMessage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentMessage {
    pub header_length: u32,
    pub message_type: String,
    pub schema_version: u32,
    /// Epoch milliseconds.
    pub created_date: u64,
    pub sequence_number: i64,
    pub flags: u64,
    /// Lower-case canonical UUID string.
    pub message_id: String,
    /// The digest as it arrived (computed on encode).
    pub payload_digest: [u8; 32],
    pub payload_type: u32,
    /// PayloadLength as it arrived (recomputed on encode).
    pub payload_length: u32,
    pub payload: Vec<u8>,
}

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

impl AgentMessage {
    /// A fresh message as the service sends it: schema 1, created now, a new UUID v4.
    pub fn new(message_type: &str, payload: Vec<u8>) -> AgentMessage {
        AgentMessage {
            header_length: HEADER_LENGTH,
            message_type: message_type.into(),
            schema_version: 1,
            created_date: now_ms(),
            sequence_number: 0,
            flags: 0,
            message_id: uuid_v4(),
            payload_digest: Sha256::digest(&payload).into(),
            payload_type: 0,
            payload_length: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            payload,
        }
    }

    pub fn with_sequence(mut self, sequence_number: i64, flags: u64) -> AgentMessage {
        self.sequence_number = sequence_number;
        self.flags = flags;
        self
    }

    pub fn with_payload_type(mut self, payload_type: u32) -> AgentMessage {
        self.payload_type = payload_type;
        self
    }

    /// The wire bytes; HeaderLength, digest and PayloadLength are computed here.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PAYLOAD_OFFSET + self.payload.len());
        out.extend_from_slice(&HEADER_LENGTH.to_be_bytes());
        let mut mtype = [b' '; TYPE_LEN];
        let name = self.message_type.as_bytes();
        let n = name.len().min(TYPE_LEN);
        mtype[..n].copy_from_slice(&name[..n]);
        out.extend_from_slice(&mtype);
        out.extend_from_slice(&self.schema_version.to_be_bytes());
        out.extend_from_slice(&self.created_date.to_be_bytes());
        out.extend_from_slice(&self.sequence_number.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.extend_from_slice(&uuid_to_wire(&self.message_id));
        out.extend_from_slice(&Sha256::digest(&self.payload));
        out.extend_from_slice(&self.payload_type.to_be_bytes());
        let len = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Parses wire bytes. Stricter than the agent: the header must be complete and HeaderLength
    /// must point inside the frame; the payload is everything after PayloadLength (as the agent
    /// reads it). Consistency (digest, length, flags) is left to [`AgentMessage::problems`].
    pub fn decode(b: &[u8]) -> Result<AgentMessage, String> {
        if b.len() < PAYLOAD_OFFSET {
            return Err(format!(
                "AgentMessage of {} bytes is shorter than the {PAYLOAD_OFFSET}-byte header",
                b.len()
            ));
        }
        let header_length = be_u32(b, 0);
        let payload_start = usize::try_from(header_length).unwrap_or(usize::MAX) + 4;
        if header_length == 0 || payload_start > b.len() {
            return Err(format!(
                "AgentMessage HeaderLength {header_length} does not fit a {}-byte frame",
                b.len()
            ));
        }
        let message_type = String::from_utf8_lossy(&b[4..4 + TYPE_LEN])
            .trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .to_string();
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&b[80..112]);
        Ok(AgentMessage {
            header_length,
            message_type,
            schema_version: be_u32(b, 36),
            created_date: be_u64(b, 40),
            sequence_number: be_u64(b, 48) as i64,
            flags: be_u64(b, 56),
            message_id: uuid_from_wire(&b[64..80]),
            payload_digest: digest,
            payload_type: be_u32(b, 112),
            payload_length: be_u32(b, 116),
            payload: b[payload_start..].to_vec(),
        })
    }

    /// Deviations from what docs/protocol.md says the agent writes (empty when well-formed).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let what = format!("{} {}", self.message_type, self.message_id);
        if self.header_length != HEADER_LENGTH {
            out.push(format!("{what}: HeaderLength {}", self.header_length));
        }
        if self.message_type.is_empty() {
            out.push(format!("{what}: empty MessageType"));
        }
        if self.schema_version != 1 {
            out.push(format!("{what}: SchemaVersion {}", self.schema_version));
        }
        if self.created_date == 0 {
            out.push(format!("{what}: CreatedDate 0"));
        }
        if self.payload_length as usize != self.payload.len() {
            out.push(format!(
                "{what}: PayloadLength {} but {} payload bytes",
                self.payload_length,
                self.payload.len()
            ));
        }
        let digest: [u8; 32] = Sha256::digest(&self.payload).into();
        if digest != self.payload_digest {
            out.push(format!(
                "{what}: PayloadDigest {} is not the SHA-256 of the payload",
                hex(&self.payload_digest)
            ));
        }
        out
    }

    /// The payload as UTF-8 text (lossy), for logs and JSON parsing.
    pub fn payload_text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// RFC-4122 bytes of a UUID string; unparsable strings give zeros (the emulator only encodes
/// ids it generated or received).
fn uuid_bytes(s: &str) -> [u8; 16] {
    let digits: Vec<u8> = s
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|c| (c as char).to_digit(16).unwrap_or(0) as u8)
        .collect();
    let mut out = [0u8; 16];
    if digits.len() == 32 {
        for (i, pair) in digits.chunks(2).enumerate() {
            out[i] = pair[0] << 4 | pair[1];
        }
    }
    out
}

/// The wire form: UUID bytes 8..16 first, then 0..8.
pub fn uuid_to_wire(s: &str) -> [u8; 16] {
    let u = uuid_bytes(s);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&u[8..]);
    out[8..].copy_from_slice(&u[..8]);
    out
}

pub fn uuid_from_wire(w: &[u8]) -> String {
    let mut u = [0u8; 16];
    u[..8].copy_from_slice(&w[8..16]);
    u[8..].copy_from_slice(&w[..8]);
    let h = hex(&u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATED: u64 = 1_503_434_274_948;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn message(mtype: &str, seq: i64, flags: u64, id: &str, ptype: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = AgentMessage::new(mtype, payload.to_vec())
            .with_sequence(seq, flags)
            .with_payload_type(ptype);
        m.created_date = CREATED;
        m.message_id = id.into();
        m.encode()
    }

    #[test]
    fn vector_1_interactive_shell() {
        let want = unhex(
            "00 00 00 74 69 6e 74 65 72 61 63 74 69 76 65 5f 73 68 65 6c 6c 20 20 20 20 20 20 20 \
             20 20 20 20 20 20 20 20 00 00 00 01 00 00 01 5e 0b aa 78 84 00 00 00 00 00 00 00 01 \
             00 00 00 00 00 00 00 02 a5 08 b5 f0 73 f3 1b 16 dd 01 e5 6b ff 48 48 3e 23 9f 59 ed \
             55 e7 37 c7 71 47 cf 55 ad 0c 1b 03 0b 6d 7e e7 48 a7 42 69 52 f9 b8 52 d5 a9 35 e5 \
             00 00 00 00 00 00 00 07 70 61 79 6c 6f 61 64",
        );
        let id = "dd01e56b-ff48-483e-a508-b5f073f31b16";
        let got = message("interactive_shell", 1, 2, id, 0, b"payload");
        assert_eq!(hex(&got), hex(&want));
        let m = AgentMessage::decode(&want).unwrap();
        assert_eq!(m.message_type, "interactive_shell");
        assert_eq!((m.schema_version, m.created_date), (1, CREATED));
        assert_eq!((m.sequence_number, m.flags, m.payload_type), (1, 2, 0));
        assert_eq!(m.message_id, id);
        assert_eq!(m.payload, b"payload");
        assert!(m.problems().is_empty(), "{:?}", m.problems());
    }

    #[test]
    fn vector_2_output_stream_data() {
        let want = "000000746f75747075745f73747265616d5f6461746120202020202020202020202020200000\
                    00010000015e0baa7884000000000000000000000000000000019b8a1c2d3e4f5a6b0b8e4c1a\
                    2f0d4c6ecd2eca3535741f27a8ae40c31b0c41d4057a7a7b912b33b9aed86485d1c846760000\
                    00010000000768656c6c6f0d0a";
        let id = "0b8e4c1a-2f0d-4c6e-9b8a-1c2d3e4f5a6b";
        let got = message("output_stream_data", 0, 1, id, 1, b"hello\r\n");
        assert_eq!(hex(&got), want);
        let m = AgentMessage::decode(&got).unwrap();
        assert_eq!((m.message_id.as_str(), m.payload_type), (id, 1));
    }

    #[test]
    fn vector_3_acknowledge() {
        let payload = br#"{"AcknowledgedMessageType":"input_stream_data","AcknowledgedMessageId":"dd01e56b-ff48-483e-a508-b5f073f31b16","AcknowledgedMessageSequenceNumber":0,"IsSequentialMessage":true}"#;
        assert_eq!(payload.len(), 175);
        let head = "0000007461636b6e6f776c656467652020202020202020202020202020202020202020200000\
                    00010000015e0baa7884000000000000000000000000000000039b8a1c2d3e4f5a6b0b8e4c1a\
                    2f0d4c6e77da25ed457f36d5ef4271e023d964ca11f69a556446bb3411c3b0e9c43ed8910000\
                    0000000000af";
        let id = "0b8e4c1a-2f0d-4c6e-9b8a-1c2d3e4f5a6b";
        let got = message("acknowledge", 0, 3, id, 0, payload);
        assert_eq!(got.len(), 295);
        assert_eq!(hex(&got[..120]), head);
        assert_eq!(&got[120..], payload);
    }

    #[test]
    fn decode_rejects_short_frames_and_reports_problems() {
        assert!(AgentMessage::decode(&[0; 119]).is_err());
        let mut frame = message("acknowledge", 0, 3, &uuid_v4(), 0, b"{}");
        frame[3] = 0; // HeaderLength 0
        assert!(AgentMessage::decode(&frame).is_err());
        frame[3] = 200; // beyond the frame
        assert!(AgentMessage::decode(&frame).is_err());
        let mut frame = message("acknowledge", 0, 3, &uuid_v4(), 0, b"{}");
        frame[119] = 9; // PayloadLength lies
        frame[80] ^= 1; // digest corrupted
        let m = AgentMessage::decode(&frame).unwrap();
        let problems = m.problems().join("\n");
        assert!(problems.contains("PayloadLength 9"), "{problems}");
        assert!(problems.contains("PayloadDigest"), "{problems}");
        // NUL padding is stripped like spaces.
        let mut frame = message("ack", 0, 3, &uuid_v4(), 0, b"x");
        frame[4 + 3..4 + 32].fill(0);
        assert_eq!(AgentMessage::decode(&frame).unwrap().message_type, "ack");
    }

    #[test]
    fn uuid_wire_order_round_trips() {
        let id = "dd01e56b-ff48-483e-a508-b5f073f31b16";
        let w = uuid_to_wire(id);
        assert_eq!(hex(&w), "a508b5f073f31b16dd01e56bff48483e");
        assert_eq!(uuid_from_wire(&w), id);
    }
}
