//! The AgentMessage binary frame (docs/protocol.md §4.3) that carries everything on MGS websockets.
//!
//! Layout, all integers big-endian: HeaderLength u32 (116) | MessageType 32 bytes, space padded |
//! SchemaVersion u32 | CreatedDate u64 (epoch ms) | SequenceNumber i64 | Flags u64 |
//! MessageId 16 bytes (UUID, halves swapped) | PayloadDigest 32 bytes (SHA-256) |
//! PayloadType u32 | PayloadLength u32 | Payload.
//!
//! Decoding is strict where upstream is loose: HeaderLength must be 116 and PayloadLength must
//! equal the bytes after the header (upstream slices the payload by HeaderLength and ignores
//! PayloadLength). Every peer of the agent writes such frames; anything else is more likely
//! corruption than an extension, and a clear error beats guessing. The digest is not verified,
//! as upstream does not verify it either.

use ring::digest;
#[cfg(test)]
use serde_json::Value;

/// Flags bits.
pub const FLAG_SYN: u64 = 1;

/// Message types (docs/protocol.md §4.4).
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

/// The HeaderLength the agent writes and accepts: the offset of PayloadLength.
pub const HEADER_LENGTH: u32 = 116;
/// Bytes before the payload.
pub const PAYLOAD_OFFSET: usize = 120;
/// Longest message type; longer ones are cut when encoding.
pub const TYPE_LEN: usize = 32;
/// Larger payloads are refused when decoding. MGS payloads are stream chunks (≤ 1 KiB) and job
/// documents (tens of KiB), so this only stops a corrupt or hostile frame from being taken in.
pub const MAX_PAYLOAD: usize = 1024 * 1024;

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

/// A frame's `CreatedDate`: milliseconds since the epoch, never 0 (a clock before 1970 gives 1),
/// so that it never reads as unset.
pub fn created_date_now() -> u64 {
    crate::timefmt::unix_millis(std::time::SystemTime::now()).max(1)
}

impl AgentMessage {
    /// A new message of `message_type` with a fresh id, now as created date, schema 1.
    pub fn new(
        message_type: &str,
        sequence_number: i64,
        flags: u64,
        payload_type: u32,
        payload: Vec<u8>,
    ) -> AgentMessage {
        AgentMessage {
            message_type: message_type.to_string(),
            schema_version: 1,
            created_date: created_date_now(),
            sequence_number,
            flags,
            message_id: crate::random::uuid_v4(),
            payload_type,
            payload,
        }
    }

    /// A control-channel message (sequence 0, no flags, payload type 0) carrying `json`.
    #[cfg(test)]
    pub fn json(message_type: &str, json: &Value) -> AgentMessage {
        AgentMessage::new(message_type, 0, 0, 0, json.to_string().into_bytes())
    }

    /// The payload as JSON.
    #[cfg(test)]
    pub fn payload_json(&self) -> Result<Value, FrameError> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            FrameError(format!(
                "{} message {}: the {}-byte payload is not JSON: {e}",
                self.message_type,
                self.message_id,
                self.payload.len()
            ))
        })
    }

    /// The wire form. A type longer than 32 bytes is cut, and an id that is not a UUID is sent
    /// as the nil UUID (with a warning): both are programming errors, as types are the constants
    /// above and ids come from `new` or `decode`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PAYLOAD_OFFSET + self.payload.len());
        out.extend_from_slice(&HEADER_LENGTH.to_be_bytes());
        let mut kind = [b' '; TYPE_LEN];
        let name = self.message_type.as_bytes();
        let len = name.len().min(TYPE_LEN);
        kind[..len].copy_from_slice(&name[..len]);
        out.extend_from_slice(&kind);
        out.extend_from_slice(&self.schema_version.to_be_bytes());
        out.extend_from_slice(&self.created_date.to_be_bytes());
        out.extend_from_slice(&self.sequence_number.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        let id = parse_uuid(&self.message_id).unwrap_or_else(|| {
            log::warn!(
                "{} message: id {:?} is not a UUID; sending the nil UUID",
                self.message_type,
                self.message_id
            );
            [0; 16]
        });
        out.extend_from_slice(&id[8..]);
        out.extend_from_slice(&id[..8]);
        out.extend_from_slice(digest::digest(&digest::SHA256, &self.payload).as_ref());
        out.extend_from_slice(&self.payload_type.to_be_bytes());
        // MAX_PAYLOAD is far below 4 GiB; a longer payload could not be framed at all.
        let payload_len = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&payload_len.to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Decodes untrusted bytes; never panics.
    pub fn decode(bytes: &[u8]) -> Result<AgentMessage, FrameError> {
        let bad = |what: String| FrameError(format!("bad AgentMessage frame: {what}"));
        let Some((header, payload)) = bytes.split_first_chunk::<PAYLOAD_OFFSET>() else {
            return Err(bad(format!(
                "{} bytes, shorter than the {PAYLOAD_OFFSET}-byte header",
                bytes.len()
            )));
        };
        let r = Header(header);
        let header_length = r.u32(0);
        if header_length != HEADER_LENGTH {
            return Err(bad(format!(
                "HeaderLength {header_length}, expected {HEADER_LENGTH}"
            )));
        }
        let payload_length = r.u32(116);
        if usize::try_from(payload_length).ok() != Some(payload.len()) {
            return Err(bad(format!(
                "PayloadLength {payload_length} but {} payload bytes follow the header",
                payload.len()
            )));
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(bad(format!(
                "{}-byte payload exceeds the {MAX_PAYLOAD}-byte limit",
                payload.len()
            )));
        }
        let message_type = message_type(&header[4..4 + TYPE_LEN]).map_err(bad)?;
        let created_date = r.u64(40);
        if created_date == 0 {
            return Err(bad(format!("{message_type} message has CreatedDate 0")));
        }
        let mut id = [0u8; 16];
        id[8..].copy_from_slice(&header[64..72]);
        id[..8].copy_from_slice(&header[72..80]);
        Ok(AgentMessage {
            message_type,
            schema_version: r.u32(36),
            created_date,
            sequence_number: r.u64(48) as i64,
            flags: r.u64(56),
            message_id: format_uuid(&id),
            payload_type: r.u32(112),
            payload: payload.to_vec(),
        })
    }
}

/// Big-endian fields of the fixed-size header; offsets are constants inside it.
struct Header<'a>(&'a [u8; PAYLOAD_OFFSET]);

impl Header<'_> {
    fn u32(&self, at: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.0[at..at + 4]);
        u32::from_be_bytes(b)
    }

    fn u64(&self, at: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[at..at + 8]);
        u64::from_be_bytes(b)
    }
}

/// The type field without NUL padding and surrounding whitespace; must be non-empty UTF-8.
fn message_type(field: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(field)
        .map_err(|e| format!("MessageType {field:02x?} is not UTF-8 ({e})"))?;
    let text = text.replace('\0', "");
    match text.trim() {
        "" => Err("empty MessageType".into()),
        kind => Ok(kind.to_string()),
    }
}

/// `dd01e56b-ff48-483e-a508-b5f073f31b16` → its 16 bytes (RFC 4122 order); `None` unless it is
/// 32 hex digits, hyphens anywhere ignored.
fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let digits: Vec<u8> = text
        .chars()
        .filter(|&c| c != '-')
        .map(|c| c.to_digit(16).and_then(|d| u8::try_from(d).ok()))
        .collect::<Option<_>>()?;
    let mut out = [0u8; 16];
    if digits.len() != 2 * out.len() {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (pair[0] << 4) | pair[1];
    }
    Some(out)
}

fn format_uuid(b: &[u8; 16]) -> String {
    let hex =
        |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const CREATED: u64 = 1503434274948;
    const ID_2_3: &str = "0b8e4c1a-2f0d-4c6e-9b8a-1c2d3e4f5a6b";

    fn message(
        kind: &str,
        seq: i64,
        flags: u64,
        id: &str,
        ptype: u32,
        payload: &[u8],
    ) -> AgentMessage {
        AgentMessage {
            message_type: kind.into(),
            schema_version: 1,
            created_date: CREATED,
            sequence_number: seq,
            flags,
            message_id: id.into(),
            payload_type: ptype,
            payload: payload.to_vec(),
        }
    }

    /// Protocol §7.3 vector 1.
    fn vector_1() -> (AgentMessage, Vec<u8>) {
        let m = message(
            INTERACTIVE_SHELL,
            1,
            2,
            "dd01e56b-ff48-483e-a508-b5f073f31b16",
            0,
            b"payload",
        );
        let hex = "00 00 00 74 69 6e 74 65 72 61 63 74 69 76 65 5f
                   73 68 65 6c 6c 20 20 20 20 20 20 20 20 20 20 20
                   20 20 20 20 00 00 00 01 00 00 01 5e 0b aa 78 84
                   00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 02
                   a5 08 b5 f0 73 f3 1b 16 dd 01 e5 6b ff 48 48 3e
                   23 9f 59 ed 55 e7 37 c7 71 47 cf 55 ad 0c 1b 03
                   0b 6d 7e e7 48 a7 42 69 52 f9 b8 52 d5 a9 35 e5
                   00 00 00 00 00 00 00 07 70 61 79 6c 6f 61 64";
        (m, unhex(hex))
    }

    #[test]
    fn protocol_vectors_encode_and_decode() {
        let (m1, wire1) = vector_1();
        let m2 = message(OUTPUT_STREAM_DATA, 0, FLAG_SYN, ID_2_3, 1, b"hello\r\n");
        let wire2 = unhex(
            "000000746f75747075745f73747265616d5f646174612020202020202020202020202020000000010000015e0baa7884000000000000000000000000000000019b8a1c2d3e4f5a6b0b8e4c1a2f0d4c6ecd2eca3535741f27a8ae40c31b0c41d4057a7a7b912b33b9aed86485d1c84676000000010000000768656c6c6f0d0a",
        );
        let ack = br#"{"AcknowledgedMessageType":"input_stream_data","AcknowledgedMessageId":"dd01e56b-ff48-483e-a508-b5f073f31b16","AcknowledgedMessageSequenceNumber":0,"IsSequentialMessage":true}"#;
        let m3 = message(ACKNOWLEDGE, 0, 3, ID_2_3, 0, ack);
        let mut wire3 = unhex(
            "0000007461636b6e6f776c65646765202020202020202020202020202020202020202020000000010000015e0baa7884000000000000000000000000000000039b8a1c2d3e4f5a6b0b8e4c1a2f0d4c6e77da25ed457f36d5ef4271e023d964ca11f69a556446bb3411c3b0e9c43ed89100000000000000af",
        );
        wire3.extend_from_slice(ack);
        assert_eq!((wire1.len(), wire2.len(), wire3.len()), (127, 127, 295));
        for (m, wire) in [(m1, wire1), (m2, wire2), (m3, wire3)] {
            assert_eq!(m.encode(), wire, "{}", m.message_type);
            assert_eq!(AgentMessage::decode(&wire).unwrap(), m);
        }
    }

    #[test]
    fn type_padding_is_stripped_and_digest_not_checked() {
        let (_, mut wire) = vector_1();
        // NUL padding and a leading space, as other writers might produce.
        wire[4..36].copy_from_slice(&[0; 32]);
        wire[4..14].copy_from_slice(b" agent_job");
        wire[80..112].copy_from_slice(&[0xee; 32]);
        let m = AgentMessage::decode(&wire).unwrap();
        assert_eq!(
            (m.message_type.as_str(), m.payload.as_slice()),
            (AGENT_JOB, &b"payload"[..])
        );
    }

    #[test]
    fn malformed_frames_are_clear_errors() {
        let (_, good) = vector_1();
        let edit = |at: usize, bytes: &[u8]| {
            let mut w = good.clone();
            w[at..at + bytes.len()].copy_from_slice(bytes);
            w
        };
        let mut empty_type = good.clone();
        empty_type[4..36].copy_from_slice(&[b' '; 32]);
        let mut too_big = good[..PAYLOAD_OFFSET].to_vec();
        too_big[116..120].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_be_bytes());
        too_big.resize(PAYLOAD_OFFSET + MAX_PAYLOAD + 1, b'x');
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "0 bytes, shorter"),
            (good[..119].to_vec(), "119 bytes, shorter"),
            (edit(0, &[0, 0, 0, 0]), "HeaderLength 0"),
            (edit(0, &[0, 0, 1, 0]), "HeaderLength 256"),
            (edit(0, &[0xff; 4]), "HeaderLength 4294967295"),
            (edit(116, &[0, 0, 0, 8]), "PayloadLength 8 but 7"),
            (edit(116, &[0, 0, 0, 6]), "PayloadLength 6 but 7"),
            (good[..125].to_vec(), "PayloadLength 7 but 5"),
            (empty_type, "empty MessageType"),
            (edit(4, &[0xc3, 0x28]), "not UTF-8"),
            (edit(40, &[0; 8]), "CreatedDate 0"),
            (too_big, "exceeds the 1048576-byte limit"),
        ];
        for (wire, expected) in cases {
            let err = AgentMessage::decode(&wire).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
        }
    }

    #[test]
    fn new_fills_the_header_and_json_helpers_round_trip() {
        let before = crate::timefmt::unix_millis(std::time::SystemTime::now());
        let m = AgentMessage::json(AGENT_JOB_ACK, &serde_json::json!({"statusCode": "200"}));
        assert!(m.created_date >= before && m.created_date < before + 60_000);
        assert_eq!(
            (m.schema_version, m.sequence_number, m.flags, m.payload_type),
            (1, 0, 0, 0)
        );
        assert_eq!(
            parse_uuid(&m.message_id).map(|b| format_uuid(&b)),
            Some(m.message_id.clone())
        );
        let back = AgentMessage::decode(&m.encode()).unwrap();
        assert_eq!(back.payload_json().unwrap()["statusCode"], "200");
        assert_ne!(
            m.message_id,
            AgentMessage::new(ACKNOWLEDGE, 0, 3, 0, vec![]).message_id
        );
        let err = AgentMessage::new(ACKNOWLEDGE, 0, 3, 0, b"{".to_vec()).payload_json();
        assert!(err.unwrap_err().to_string().contains("not JSON"));
    }

    #[test]
    fn empty_payload_and_odd_ids_encode() {
        let m = message(
            ACKNOWLEDGE,
            -1,
            u64::MAX,
            "DD01E56BFF48483EA508B5F073F31B16",
            7,
            b"",
        );
        let back = AgentMessage::decode(&m.encode()).unwrap();
        assert_eq!(back.message_id, "dd01e56b-ff48-483e-a508-b5f073f31b16");
        assert_eq!(
            (back.sequence_number, back.flags, back.payload.len()),
            (-1, u64::MAX, 0)
        );
        let nil = message(ACKNOWLEDGE, 0, 0, "not-a-uuid", 0, b"");
        assert_eq!(
            AgentMessage::decode(&nil.encode()).unwrap().message_id,
            "00000000-0000-0000-0000-000000000000"
        );
    }

    /// xorshift64*: reproducible pseudo-random input for the property tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn decode_never_panics_on_random_or_mutated_input() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (_, good) = vector_1();
        let mut accepted = 0;
        for i in 0..20_000 {
            let input = if i % 2 == 0 {
                let len = rng.below(300);
                rng.bytes(len)
            } else {
                // Valid frames with a few random bytes changed or the length cut reach the
                // checks beyond the first.
                let mut w = good.clone();
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(w.len() as u64);
                    w[at] = rng.next() as u8;
                }
                w.truncate(rng.below(w.len() as u64 + 8));
                w
            };
            if let Ok(m) = AgentMessage::decode(&input) {
                accepted += 1;
                assert_eq!(AgentMessage::decode(&m.encode()).unwrap(), m);
            }
        }
        assert!(
            accepted > 100,
            "mutations should often stay valid: {accepted}"
        );
    }

    #[test]
    fn random_messages_round_trip() {
        let mut rng = Rng(42);
        let alphabet = b"abcdefghijklmnopqrstuvwxyz_ -.0123456789";
        for _ in 0..2_000 {
            let len = 1 + rng.below(TYPE_LEN as u64);
            let mut kind: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len() as u64)])
                .collect();
            kind[0] = b'a'; // no surrounding whitespace: the reader strips it
            *kind.last_mut().unwrap() = b'z';
            let mut id = [0u8; 16];
            id.copy_from_slice(&rng.bytes(16));
            let payload_len = rng.below(2048);
            let m = AgentMessage {
                message_type: String::from_utf8(kind).unwrap(),
                schema_version: rng.next() as u32,
                created_date: rng.next().max(1),
                sequence_number: rng.next() as i64,
                flags: rng.next(),
                message_id: format_uuid(&id),
                payload_type: rng.next() as u32,
                payload: rng.bytes(payload_len),
            };
            let wire = m.encode();
            assert_eq!(wire.len(), PAYLOAD_OFFSET + payload_len);
            assert_eq!(AgentMessage::decode(&wire).unwrap(), m);
        }
    }
}
