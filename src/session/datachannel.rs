//! The data channel's stream protocol (docs/protocol.md §4.6.2) as a pure state machine: sequence
//! numbers, acknowledgements, retransmission with an adaptive timeout, pause/resume, and in-order
//! delivery of the client's input. No I/O here: the session loop feeds it frames and the clock,
//! and sends what it returns.

use super::plugin::{Input, Output};
use crate::mgs::message::{ACKNOWLEDGE, AgentMessage, FLAG_SYN, OUTPUT_STREAM_DATA};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Payload types (§4.6.1).
pub mod payload_type {
    pub const OUTPUT: u32 = 1;
    pub const SIZE: u32 = 3;
    pub const HANDSHAKE_REQUEST: u32 = 5;
    pub const HANDSHAKE_RESPONSE: u32 = 6;
    pub const HANDSHAKE_COMPLETE: u32 = 7;
    pub const ENC_CHALLENGE_REQUEST: u32 = 8;
    pub const ENC_CHALLENGE_RESPONSE: u32 = 9;
    pub const FLAG: u32 = 10;
    pub const STDERR: u32 = 11;
    pub const EXIT_CODE: u32 = 12;
}

/// Flag values of payload type `FLAG` (§4.6.1), 4 bytes big-endian.
pub mod flag {
    pub const DISCONNECT_TO_PORT: u32 = 1;
    pub const TERMINATE_SESSION: u32 = 2;
    pub const CONNECT_TO_PORT_ERROR: u32 = 3;
}

/// Client input of `payload_type` as a plugin takes it; `None` for what no plugin takes.
pub fn input(payload_type: u32, data: &[u8]) -> Option<Input<'_>> {
    match payload_type {
        payload_type::OUTPUT => Some(Input::Bytes(data)),
        payload_type::SIZE => parse_size(data).map(|(cols, rows)| Input::Resize { cols, rows }),
        payload_type::FLAG => match data.try_into().map(u32::from_be_bytes) {
            Ok(flag::DISCONNECT_TO_PORT) => Some(Input::DisconnectPort),
            Ok(flag::TERMINATE_SESSION) => Some(Input::Terminate),
            _ => None,
        },
        _ => None,
    }
}

/// A plugin's output as a stream message: payload type and bytes.
pub fn output(output: Output) -> (u32, Vec<u8>) {
    match output {
        Output::Stdout(bytes) => (payload_type::OUTPUT, bytes),
        Output::Stderr(bytes) => (payload_type::STDERR, bytes),
        Output::ExitCode(code) => (
            payload_type::EXIT_CODE,
            format!("EXIT_CODE: {code}").into_bytes(),
        ),
        Output::ConnectError => (
            payload_type::FLAG,
            flag::CONNECT_TO_PORT_ERROR.to_be_bytes().to_vec(),
        ),
    }
}

/// A `SIZE` payload: `{"cols":…,"rows":…}`.
pub fn parse_size(data: &[u8]) -> Option<(u16, u16)> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    let obj = v.as_object()?;
    let get = |k: &str| {
        crate::document::field(obj, k)?
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
    };
    Some((get("cols")?, get("rows")?))
}

/// Retransmission constants of upstream (§4 intro): RTO starts at 200 ms, at most 1 s.
const INITIAL_RTO: Duration = Duration::from_millis(200);
const MAX_RTO: Duration = Duration::from_secs(1);
const CLOCK_GRANULARITY: Duration = Duration::from_millis(10);

/// `AcknowledgeContent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    #[serde(rename = "AcknowledgedMessageType")]
    pub message_type: String,
    #[serde(rename = "AcknowledgedMessageId")]
    pub message_id: String,
    #[serde(rename = "AcknowledgedMessageSequenceNumber")]
    pub sequence_number: i64,
    #[serde(rename = "IsSequentialMessage")]
    pub is_sequential: bool,
}

impl Ack {
    /// The `acknowledge` frame for a received stream message (flags 3, sequence 0, as upstream).
    pub fn frame_for(msg: &AgentMessage) -> AgentMessage {
        let ack = Ack {
            message_type: msg.message_type.clone(),
            message_id: msg.message_id.clone(),
            sequence_number: msg.sequence_number,
            is_sequential: true,
        };
        AgentMessage::new(
            ACKNOWLEDGE,
            0,
            3,
            0,
            serde_json::to_vec(&ack).expect("acks serialise"),
        )
    }

    /// Reads an `acknowledge` payload; key case is tolerated as Go's decoder does.
    pub fn parse(payload: &[u8]) -> Option<Ack> {
        let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
        let obj = v.as_object()?;
        let get = |k: &str| crate::runcommand::payload::get_ci(obj, k);
        Some(Ack {
            message_type: get("AcknowledgedMessageType")?.as_str()?.to_owned(),
            message_id: get("AcknowledgedMessageId")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned(),
            sequence_number: get("AcknowledgedMessageSequenceNumber")?.as_i64()?,
            is_sequential: get("IsSequentialMessage")
                .and_then(|v| v.as_bool())
                .unwrap_or(true),
        })
    }
}

struct Unacked {
    sequence: i64,
    frame: Vec<u8>,
    last_sent: Option<Instant>,
    /// How often it went out: an ack of a re-sent frame says nothing about the round trip.
    sends: u32,
}

/// The agent's outgoing stream: every `output_stream_data` is kept until acknowledged.
pub struct Outgoing {
    next_sequence: i64,
    unacked: VecDeque<Unacked>,
    paused: bool,
    srtt: Duration,
    rttvar: Duration,
    rto: Duration,
}

impl Default for Outgoing {
    fn default() -> Self {
        Outgoing {
            next_sequence: 0,
            unacked: VecDeque::new(),
            paused: false,
            srtt: Duration::from_millis(100),
            rttvar: Duration::ZERO,
            rto: INITIAL_RTO,
        }
    }
}

impl Outgoing {
    /// Sequences a stream message. Returns the frame to send now, or `None` while paused (it
    /// then goes out through `due_resends` once publication resumes).
    pub fn push(&mut self, payload_type: u32, payload: Vec<u8>, now: Instant) -> Option<Vec<u8>> {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let flags = if sequence == 0 { FLAG_SYN } else { 0 };
        let frame =
            AgentMessage::new(OUTPUT_STREAM_DATA, sequence, flags, payload_type, payload).encode();
        let send_now = !self.paused;
        self.unacked.push_back(Unacked {
            sequence,
            frame: frame.clone(),
            last_sent: send_now.then_some(now),
            sends: u32::from(send_now),
        });
        send_now.then_some(frame)
    }

    /// An `acknowledge` for one of ours: forget it and update the round-trip estimate (§4.6.2).
    pub fn acknowledged(&mut self, sequence: i64, now: Instant) {
        let Some(pos) = self.unacked.iter().position(|u| u.sequence == sequence) else {
            return;
        };
        let acked = self.unacked.remove(pos).expect("position is in range");
        // Karn's rule: only a frame sent once gives a true round-trip sample; timing a re-sent
        // one from its last send shrinks the timeout and feeds a storm of re-sends.
        if let (Some(sent), 1) = (acked.last_sent, acked.sends) {
            self.update_rto(now.saturating_duration_since(sent));
        }
        self.paused = false;
    }

    fn update_rto(&mut self, rtt: Duration) {
        let diff = self.srtt.abs_diff(rtt);
        self.rttvar = self.rttvar.mul_f64(0.75) + diff.mul_f64(0.25);
        self.srtt = self.srtt.mul_f64(0.875) + rtt.mul_f64(0.125);
        self.rto = (self.srtt + CLOCK_GRANULARITY.max(self.rttvar * 4)).min(MAX_RTO);
    }

    /// Frames whose timeout has passed, oldest first, at most `limit` (never while paused).
    /// Upstream resends only the oldest one per scan, which turns a few lost frames in a large
    /// transfer into minutes of trickle; every overdue frame goes again here instead.
    pub fn due_resends(&mut self, now: Instant, limit: usize) -> Vec<Vec<u8>> {
        if self.paused {
            return Vec::new();
        }
        let rto = self.rto;
        self.unacked
            .iter_mut()
            .filter(|u| {
                u.last_sent
                    .is_none_or(|t| now.saturating_duration_since(t) >= rto)
            })
            .take(limit)
            .map(|u| {
                u.last_sent = Some(now);
                u.sends += 1;
                u.frame.clone()
            })
            .collect()
    }

    /// When `due_resends` may next have something, for the session loop's wait.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.paused {
            return None;
        }
        let earliest = self.unacked.iter().map(|u| u.last_sent).min()?;
        Some(earliest.map_or_else(Instant::now, |t| t + self.rto))
    }

    /// After a reconnect: every unacknowledged frame is due again at once.
    pub fn resend_all(&mut self) {
        for u in &mut self.unacked {
            u.last_sent = None;
        }
    }

    pub fn pause(&mut self) {
        self.paused = true;
    }

    pub fn resume(&mut self) {
        self.paused = false;
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    #[cfg(test)]
    pub fn rto(&self) -> Duration {
        self.rto
    }
}

/// Input a session holds acknowledged but not yet handed to its plugin — messages waiting for an
/// earlier one, and in-order ones waiting for the plugin to take more — counted in bytes (see
/// [`cost`]). Beyond it input is not acknowledged: the client keeps it and sends it again, so
/// a client can never make the agent hold more (upstream reaches the same backpressure by
/// writing input synchronously, which stops its acknowledgements). session-manager-plugin
/// re-sends only its oldest unacknowledged message, one per 100 ms scan, so held-back input
/// costs no resend storm; it gives up after 3,000 re-sends of one message (about 5 minutes
/// of a destination that takes nothing), as it would with upstream.
pub const INPUT_WINDOW: usize = 4 * 1024 * 1024;
/// What one held message costs beyond its payload (its other fields and its map entry), so that
/// a flood of empty messages is bounded as well.
const MESSAGE_COST: usize = 256;

fn cost(msg: &AgentMessage) -> usize {
    msg.payload.len() + msg.message_type.len() + msg.message_id.len() + MESSAGE_COST
}

/// The client's input stream, handed over in sequence order exactly once, with at most
/// [`INPUT_WINDOW`] bytes held (plus the next message in sequence, which is always taken so
/// that a window full of later messages cannot stall the stream).
#[derive(Default)]
pub struct Incoming {
    /// The next sequence number to hand over.
    expected: i64,
    held: BTreeMap<i64, AgentMessage>,
    held_bytes: usize,
}

impl Incoming {
    /// Takes one `input_stream_data` and returns the acknowledgement to send, or `None` when it
    /// does not fit into the window: then it is dropped unacknowledged and the client sends it
    /// again later. Duplicates are acknowledged again (the first ack may have been lost).
    pub fn receive(&mut self, msg: AgentMessage) -> Option<AgentMessage> {
        let seq = msg.sequence_number;
        if seq < self.expected || self.held.contains_key(&seq) {
            return Some(Ack::frame_for(&msg));
        }
        let cost = cost(&msg);
        if seq != self.expected && self.held_bytes + cost > INPUT_WINDOW {
            return None;
        }
        let ack = Ack::frame_for(&msg);
        self.held_bytes += cost;
        self.held.insert(seq, msg);
        Some(ack)
    }

    /// The next message in sequence, once it has arrived.
    pub fn take_next(&mut self) -> Option<AgentMessage> {
        let msg = self.held.remove(&self.expected)?;
        self.expected += 1;
        self.held_bytes -= cost(&msg);
        Some(msg)
    }

    /// Bytes held now, as counted against [`INPUT_WINDOW`].
    #[cfg(test)]
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_messages_parse() {
        assert_eq!(parse_size(br#"{"cols":120,"rows":40}"#), Some((120, 40)));
        assert_eq!(parse_size(br#"{"Cols":1,"Rows":2}"#), Some((1, 2)));
        assert_eq!(parse_size(b"{}"), None);
        assert_eq!(parse_size(br#"{"cols":99999999,"rows":1}"#), None);
    }

    fn input(seq: i64, data: &str) -> AgentMessage {
        AgentMessage::new(
            crate::mgs::message::INPUT_STREAM_DATA,
            seq,
            0,
            payload_type::OUTPUT,
            data.as_bytes().to_vec(),
        )
    }

    fn acked_seq(ack: Option<AgentMessage>) -> Option<i64> {
        ack.map(|a| Ack::parse(&a.payload).unwrap().sequence_number)
    }

    fn drain(inc: &mut Incoming) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| inc.take_next())
            .map(|m| m.payload)
            .collect()
    }

    #[test]
    fn input_is_delivered_in_order_once() {
        let mut inc = Incoming::default();
        assert_eq!(
            acked_seq(inc.receive(input(1, "b"))),
            Some(1),
            "out-of-order input is acked and held"
        );
        assert!(inc.take_next().is_none(), "nothing before 0 arrives");
        assert_eq!(acked_seq(inc.receive(input(0, "a"))), Some(0));
        assert_eq!(drain(&mut inc), [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(
            acked_seq(inc.receive(input(0, "a"))),
            Some(0),
            "a duplicate is acked again"
        );
        assert!(inc.take_next().is_none(), "and not delivered twice");
        assert_eq!(inc.held_bytes(), 0);
    }

    #[test]
    fn the_window_bounds_held_input_by_bytes_and_the_rest_comes_again() {
        let big = "x".repeat(1 << 20);
        let mut inc = Incoming::default();
        // Messages 1.. arrive first: only what fits into the window is taken.
        let taken: Vec<i64> = (1..=20)
            .filter(|&seq| inc.receive(input(seq, &big)).is_some())
            .collect();
        assert_eq!(taken, [1, 2, 3], "three 1 MiB messages fit into 4 MiB");
        assert!(inc.held_bytes() <= INPUT_WINDOW);
        // The next in sequence is always taken, so the stream moves on.
        assert!(inc.receive(input(0, &big)).is_some());
        assert!(inc.held_bytes() > INPUT_WINDOW);
        assert_eq!(drain(&mut inc).len(), 4);
        assert_eq!(inc.held_bytes(), 0);
        // What was dropped comes again and is taken now, in order, exactly once.
        for seq in 4..=20 {
            assert_eq!(acked_seq(inc.receive(input(seq, &big))), Some(seq));
            assert_eq!(inc.take_next().map(|m| m.sequence_number), Some(seq));
        }
        assert!(
            inc.receive(input(2, &big)).is_some(),
            "old duplicates acked"
        );
        assert!(inc.take_next().is_none());
    }

    #[test]
    fn empty_messages_count_against_the_window_too() {
        let mut inc = Incoming::default();
        let taken = (1..1_000_000)
            .take_while(|&seq| inc.receive(input(seq, "")).is_some())
            .count();
        assert!(
            taken > 1000 && taken <= INPUT_WINDOW / MESSAGE_COST,
            "{taken}"
        );
    }

    #[test]
    fn output_is_sequenced_and_kept_until_acked() {
        let mut out = Outgoing::default();
        let t0 = Instant::now();
        let first =
            AgentMessage::decode(&out.push(payload_type::OUTPUT, b"hi".to_vec(), t0).unwrap())
                .unwrap();
        assert_eq!((first.sequence_number, first.flags), (0, FLAG_SYN));
        let second = AgentMessage::decode(
            &out.push(payload_type::OUTPUT, b"there".to_vec(), t0)
                .unwrap(),
        )
        .unwrap();
        assert_eq!((second.sequence_number, second.flags), (1, 0));
        assert_eq!(out.unacked(), 2);
        assert!(
            out.due_resends(t0 + Duration::from_millis(50), 10)
                .is_empty()
        );
        let again = out.due_resends(t0 + Duration::from_millis(250), 10);
        assert_eq!(again.len(), 2, "every overdue frame goes again");
        assert_eq!(
            AgentMessage::decode(&again[0]).unwrap().message_id,
            first.message_id,
            "same bytes, same id"
        );
        assert_eq!(
            out.due_resends(t0 + Duration::from_millis(250), 10).len(),
            0,
            "not twice in one RTO"
        );
        out.acknowledged(0, t0 + Duration::from_millis(260));
        out.acknowledged(1, t0 + Duration::from_millis(260));
        assert_eq!(out.unacked(), 0);
        assert!(out.next_deadline().is_none());
        assert!(out.rto() <= MAX_RTO);
    }

    #[test]
    fn paused_output_waits_and_then_trickles_through_resend() {
        let mut out = Outgoing::default();
        let t0 = Instant::now();
        out.pause();
        assert!(out.push(payload_type::OUTPUT, b"x".to_vec(), t0).is_none());
        assert!(out.due_resends(t0 + Duration::from_secs(5), 10).is_empty());
        out.resume();
        assert_eq!(
            out.due_resends(t0 + Duration::from_secs(5), 10).len(),
            1,
            "never-sent messages go out at once"
        );
    }

    #[test]
    fn ack_payload_round_trips_and_tolerates_key_case() {
        let a = Ack::parse(br#"{"acknowledgedmessagetype":"output_stream_data","AcknowledgedMessageId":"x","AcknowledgedMessageSequenceNumber":7}"#).unwrap();
        assert_eq!(a.sequence_number, 7);
        assert!(Ack::parse(b"not json").is_none());
    }
}
