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

/// Retransmission timeout (docs/protocol.md §4.6.2, RFC 6298). Before the first sample: 1 s
/// (RFC 6298 2.1). The floor is 200 ms, Linux's TCP_RTO_MIN, not RFC 6298's 1 s: under the
/// data channel is TCP, so a frame is lost only with its connection (and then everything goes
/// again on reconnect) or by a service that drops it; a timeout is nearly always a late ack.
/// Upstream's RTO can fall to 10 ms on a fast link, so a client that stalls for a moment gets
/// everything again (the re-send storm of issue 12); 200 ms is above the jitter of a busy
/// client's ack path (session-manager-plugin scans its own re-sends every 100 ms). Back-off
/// stops at 4 s rather than RFC 6298's 60 s: one frame per 4 s is what a dead client costs,
/// and a client that comes back is served again within 4 s.
const INITIAL_RTO: Duration = Duration::from_secs(1);
const MIN_RTO: Duration = Duration::from_millis(200);
const MAX_RTO: Duration = Duration::from_secs(4);
const CLOCK_GRANULARITY: Duration = Duration::from_millis(10);

/// Send window, in bytes of encoded frames (~1.1 KB per full frame). It starts near RFC 6928's
/// ten segments, never falls below two frames, and stops at 1 MiB: that bounds what one busy
/// session holds for its client, and fills a 200 ms round trip at 5 MB/s.
const INITIAL_WINDOW: usize = 16 * 1024;
const MIN_WINDOW: usize = 4 * 1024;
pub const MAX_WINDOW: usize = 1024 * 1024;
/// What one session keeps for a client that acknowledges nothing: the frames a timeout set
/// aside (see [`Outgoing`]) and a window of new ones probing past them.
const MAX_HELD: usize = 2 * MAX_WINDOW;

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
    /// `None` while it waits to go (out again): paused, no room in the window, judged lost.
    last_sent: Option<Instant>,
    /// How often it went out: an ack of a re-sent frame says nothing about the round trip.
    sends: u32,
    /// Counted in `in_flight`: sent, and not set aside by a timeout.
    counted: bool,
}

/// Smoothed round trip and its variation (RFC 6298 2.2, 2.3).
#[derive(Clone, Copy)]
struct Rtt {
    srtt: Duration,
    rttvar: Duration,
}

/// The agent's outgoing stream: every `output_stream_data` is kept until acknowledged, and at
/// most a window of bytes is unacknowledged on the wire (docs/protocol.md §4.6.2).
///
/// Acks are per frame and the transport keeps order, so an ack of a frame tells that every
/// frame sent before it and still unacknowledged was lost: those go again at once (like TCP's
/// SACK recovery, without waiting for the timer). Such a loss is no sign of congestion — the
/// TCP under the data channel handles that, and a frame is lost only where the service drops
/// it — so the window stays. Congestion shows as a timeout: the one retransmission timer
/// (RFC 6298 5.1) runs from when the oldest frame became the oldest; when it fires only that
/// frame goes again, the timeout doubles, and the window halves (at most once per window of
/// frames). The other frames on the wire then stop filling the window, so new frames probe
/// the path (F-RTO, RFC 5682): an ack of a new one shows the others lost; an ack of one of
/// the others shows the timeout was only a late ack, and the window is given back (Eifel,
/// RFC 4015), or one slow round trip in slow start would cost minutes of additive increase.
pub struct Outgoing {
    next_sequence: i64,
    /// In sequence order: the front is the oldest.
    unacked: VecDeque<Unacked>,
    paused: bool,
    rtt: Option<Rtt>,
    /// The retransmission timeout, backed off.
    rto: Duration,
    /// When the oldest frame goes again, while any frame is on the wire.
    timer: Option<Instant>,
    /// Congestion window and slow-start threshold, in bytes.
    window: usize,
    threshold: usize,
    /// Bytes sent and not acknowledged (frames `counted`).
    in_flight: usize,
    /// Bytes not on the wire yet.
    waiting: usize,
    /// Bytes of all unacknowledged frames: with those a timeout set aside, up to [`MAX_HELD`].
    held: usize,
    /// The last decrease of the window, and the window and threshold before it.
    decreased: Option<Instant>,
    undo: Option<(usize, usize)>,
    /// Frames that went out more than once.
    resent: u64,
}

impl Default for Outgoing {
    fn default() -> Self {
        Outgoing {
            next_sequence: 0,
            unacked: VecDeque::new(),
            paused: false,
            rtt: None,
            rto: INITIAL_RTO,
            timer: None,
            window: INITIAL_WINDOW,
            threshold: MAX_WINDOW,
            in_flight: 0,
            waiting: 0,
            held: 0,
            decreased: None,
            undo: None,
            resent: 0,
        }
    }
}

impl Outgoing {
    /// Sequences a stream message. Returns the frame to send now, or `None` while paused or
    /// while the window is full (it then goes out through `due`).
    pub fn push(&mut self, payload_type: u32, payload: Vec<u8>, now: Instant) -> Option<Vec<u8>> {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let flags = if sequence == 0 { FLAG_SYN } else { 0 };
        let frame =
            AgentMessage::new(OUTPUT_STREAM_DATA, sequence, flags, payload_type, payload).encode();
        let len = frame.len();
        self.held += len;
        let send_now = !self.paused && self.waiting == 0 && self.fits(len);
        self.unacked.push_back(Unacked {
            sequence,
            frame,
            last_sent: None,
            sends: 0,
            counted: false,
        });
        if send_now {
            Some(self.mark_sent(self.unacked.len() - 1, now))
        } else {
            self.waiting += len;
            None
        }
    }

    /// Whether a frame of `len` bytes may go on the wire now (one always may, or nothing could
    /// ever go).
    fn fits(&self, len: usize) -> bool {
        self.in_flight == 0 || self.in_flight + len <= self.window
    }

    /// Whether the plugin's output should be read now: publication runs and the window has
    /// room beyond what already waits. Stopping here is the backpressure that reaches the PTY
    /// or the socket: nothing queues beyond the window.
    pub fn has_room(&self) -> bool {
        !self.paused && self.in_flight + self.waiting < self.window && self.held < MAX_HELD
    }

    /// Puts the frame at `index` on the wire: counts it, arms the timer, returns its bytes.
    fn mark_sent(&mut self, index: usize, now: Instant) -> Vec<u8> {
        let u = &mut self.unacked[index];
        if !u.counted {
            self.in_flight += u.frame.len();
            u.counted = true;
        }
        if u.sends > 0 {
            self.resent += 1;
        }
        u.last_sent = Some(now);
        u.sends += 1;
        let frame = u.frame.clone();
        self.timer.get_or_insert(now + self.rto);
        frame
    }

    /// An `acknowledge` for one of ours: forget it, take a round-trip sample, open the window,
    /// and mark what was sent before it as lost (§4.6.2).
    pub fn acknowledged(&mut self, sequence: i64, now: Instant) {
        self.paused = false;
        let Some(pos) = self.unacked.iter().position(|u| u.sequence == sequence) else {
            return;
        };
        let acked = self.unacked.remove(pos).expect("position is in range");
        let len = acked.frame.len();
        self.held -= len;
        if acked.counted {
            self.in_flight -= len;
        } else if acked.last_sent.is_none() {
            self.waiting -= len;
        }
        // Karn's rule: only a frame sent once gives a true round-trip sample, and only its
        // ack tells which earlier frames were lost; a re-sent frame's ack may be the first
        // copy's.
        if let (Some(sent), 1) = (acked.last_sent, acked.sends) {
            self.sample(now.saturating_duration_since(sent));
            self.lost_before(pos, sent);
            if self.decreased.is_some_and(|d| sent < d)
                && let Some((window, threshold)) = self.undo.take()
            {
                // Sent before the timeout and acked once: it was only late (RFC 4015).
                self.window = self.window.max(window);
                self.threshold = threshold;
            }
        }
        self.grow(len);
        if pos == 0 || self.in_flight == 0 {
            // RFC 6298 5.2, 5.3: the oldest frame changed; its timer starts now.
            let on_wire = self.in_flight > 0 || self.unacked.iter().any(|u| u.last_sent.is_some());
            self.timer = on_wire.then(|| now + self.rto);
        }
    }

    /// RFC 6298 2.3, with the floor and cap above; a sample also ends a back-off.
    fn sample(&mut self, rtt: Duration) {
        let est = match self.rtt {
            None => Rtt {
                srtt: rtt,
                rttvar: rtt / 2,
            },
            Some(Rtt { srtt, rttvar }) => Rtt {
                rttvar: rttvar.mul_f64(0.75) + srtt.abs_diff(rtt).mul_f64(0.25),
                srtt: srtt.mul_f64(0.875) + rtt.mul_f64(0.125),
            },
        };
        self.rtt = Some(est);
        self.rto = (est.srtt + CLOCK_GRANULARITY.max(est.rttvar * 4)).clamp(MIN_RTO, MAX_RTO);
    }

    /// Slow start below the threshold (a frame's bytes per acked frame: doubling per round
    /// trip), then about one frame per window of acks.
    fn grow(&mut self, acked: usize) {
        let step = if self.window < self.threshold {
            acked
        } else {
            (acked * acked / self.window).max(1)
        };
        self.window = (self.window + step).min(MAX_WINDOW);
    }

    /// Multiplicative decrease on a timeout of a frame last sent at `sent`, once per window.
    fn decrease(&mut self, sent: Instant, now: Instant) {
        if self.decreased.is_some_and(|d| sent < d) {
            return;
        }
        self.undo = Some((self.window, self.threshold));
        self.threshold = (self.window / 2).max(MIN_WINDOW);
        self.window = self.threshold;
        self.decreased = Some(now);
    }

    /// Frames before `pos` sent before `sent` are lost: the transport keeps order, so their
    /// acks would have come first. They wait to go again.
    fn lost_before(&mut self, pos: usize, sent: Instant) {
        for u in self.unacked.iter_mut().take(pos) {
            if u.last_sent.is_some_and(|t| t < sent) {
                if u.counted {
                    self.in_flight -= u.frame.len();
                }
                u.last_sent = None;
                u.counted = false;
                self.waiting += u.frame.len();
            }
        }
    }

    /// What goes on the wire now, oldest first: the oldest frame when the timer fired, then
    /// waiting frames as far as the window takes them. Nothing while paused.
    pub fn due(&mut self, now: Instant) -> Vec<Vec<u8>> {
        if self.paused {
            return Vec::new();
        }
        let mut frames = Vec::new();
        if self.timer.is_some_and(|t| now >= t) {
            // Sending re-arms it; with nothing on the wire it stays off.
            self.timer = None;
            let mut sent = self.unacked.iter().enumerate();
            let oldest = sent.find_map(|(i, u)| u.last_sent.map(|t| (i, t)));
            if let Some((i, sent)) = oldest {
                self.decrease(sent, now);
                for u in self.unacked.iter_mut().filter(|u| u.counted) {
                    u.counted = false;
                    self.in_flight -= u.frame.len();
                }
                // RFC 6298 5.5, 5.6: back off, restart the timer for the frame sent again.
                self.rto = (self.rto * 2).min(MAX_RTO);
                frames.push(self.mark_sent(i, now));
            }
        }
        let mut i = 0;
        while self.waiting > 0 && i < self.unacked.len() {
            if self.unacked[i].last_sent.is_none() {
                let len = self.unacked[i].frame.len();
                if !self.fits(len) {
                    break;
                }
                self.waiting -= len;
                frames.push(self.mark_sent(i, now));
            }
            i += 1;
        }
        frames
    }

    /// When `due` may next have something, for the session loop's wait (acks wake it too).
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        if self.paused {
            return None;
        }
        let ready = self
            .unacked
            .iter()
            .find(|u| u.last_sent.is_none())
            .is_some_and(|u| self.fits(u.frame.len()));
        if ready { Some(now) } else { self.timer }
    }

    /// After a reconnect: every unacknowledged frame goes again, as the window allows.
    pub fn resend_all(&mut self) {
        for u in &mut self.unacked {
            u.last_sent = None;
            u.counted = false;
        }
        self.waiting = self.unacked.iter().map(|u| u.frame.len()).sum();
        self.in_flight = 0;
        self.timer = None;
    }

    pub fn pause(&mut self) {
        self.paused = true;
    }

    pub fn resume(&mut self) {
        self.paused = false;
    }

    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// Frames that went out more than once so far.
    pub fn resent(&self) -> u64 {
        self.resent
    }

    #[cfg(test)]
    fn rto(&self) -> Duration {
        self.rto
    }

    #[cfg(test)]
    fn window(&self) -> usize {
        self.window
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

    const MS: Duration = Duration::from_millis(1);

    fn seq(frame: &[u8]) -> i64 {
        AgentMessage::decode(frame).unwrap().sequence_number
    }

    /// Pushes a 1 KB frame; its sequence number if it went out at once.
    fn push(out: &mut Outgoing, now: Instant) -> Option<i64> {
        out.push(payload_type::OUTPUT, vec![b'x'; 1000], now)
            .map(|f| seq(&f))
    }

    /// Pushes frames while the window has room, as the session loop reads its plugin; what
    /// went out at once.
    fn fill(out: &mut Outgoing, now: Instant) -> Vec<i64> {
        let mut sent = Vec::new();
        while out.has_room() {
            sent.extend(push(out, now));
        }
        sent
    }

    #[test]
    fn output_is_sequenced_and_kept_until_acked() {
        let mut out = Outgoing::default();
        let t0 = Instant::now();
        let first =
            AgentMessage::decode(&out.push(payload_type::OUTPUT, b"hi".to_vec(), t0).unwrap())
                .unwrap();
        assert_eq!((first.sequence_number, first.flags), (0, FLAG_SYN));
        let again = out
            .push(payload_type::OUTPUT, b"there".to_vec(), t0)
            .unwrap();
        let second = AgentMessage::decode(&again).unwrap();
        assert_eq!((second.sequence_number, second.flags), (1, 0));
        assert_eq!(out.unacked(), 2);
        assert!(out.due(t0 + 500 * MS).is_empty(), "the first RTO is 1 s");
        let resent = out.due(t0 + 1000 * MS);
        assert_eq!(resent.len(), 1, "a timeout re-sends the oldest frame only");
        let resent = AgentMessage::decode(&resent[0]).unwrap();
        assert_eq!(resent.message_id, first.message_id, "same bytes, same id");
        out.acknowledged(0, t0 + 1010 * MS);
        out.acknowledged(1, t0 + 1010 * MS);
        assert_eq!(out.unacked(), 0);
        assert_eq!(out.next_deadline(t0), None);
        assert_eq!(out.resent(), 1);
    }

    #[test]
    fn the_window_bounds_what_is_in_flight_and_slow_start_opens_it() {
        let mut out = Outgoing::default();
        let t0 = Instant::now();
        let first = fill(&mut out, t0);
        assert_eq!(first.len(), 14, "16 KiB of ~1.1 KB frames, one more waits");
        assert_eq!(out.unacked(), 15);
        assert!(!out.has_room());
        assert!(out.due(t0).is_empty(), "nothing beyond the window goes");
        // Each ack opens the window by the acked bytes: about twice as much per round trip.
        let mut now = t0;
        let mut sent = first;
        for round in 1..=6 {
            now += 50 * MS;
            let before = sent.len();
            for s in std::mem::take(&mut sent) {
                out.acknowledged(s, now);
            }
            sent = out.due(now).iter().map(|f| seq(f)).collect();
            sent.extend(fill(&mut out, now));
            assert!(
                sent.len() >= 2 * before - 1,
                "round {round}: {before} → {}",
                sent.len()
            );
        }
        for _ in 0..10 {
            now += 50 * MS;
            for s in std::mem::take(&mut sent) {
                out.acknowledged(s, now);
            }
            sent = out.due(now).iter().map(|f| seq(f)).collect();
            sent.extend(fill(&mut out, now));
        }
        assert_eq!(out.window(), MAX_WINDOW, "the window stops at its cap");
        let queued: usize = out.unacked.iter().map(|u| u.frame.len()).sum();
        assert!(queued <= MAX_WINDOW + 1100, "{queued}");
        assert_eq!(out.resent(), 0, "acks in time: nothing goes twice");
        assert_eq!(out.rto(), MIN_RTO, "a 50 ms round trip keeps the floor");
    }

    #[test]
    fn rto_follows_the_round_trip_and_karn_ignores_re_sent_frames() {
        let mut out = Outgoing::default();
        let t0 = Instant::now();
        let mut now = t0;
        for _ in 0..20 {
            let s = push(&mut out, now).unwrap();
            now += 400 * MS;
            out.acknowledged(s, now);
        }
        let rto = out.rto();
        assert!(
            rto >= 400 * MS && rto < 500 * MS,
            "steady 400 ms round trips: {rto:?}"
        );
        // A frame that times out goes again; its late ack is no sample (Karn's rule).
        let s = push(&mut out, now).unwrap();
        now += rto;
        assert_eq!(out.due(now).len(), 1);
        assert_eq!(out.rto(), rto * 2, "backed off");
        now += 3000 * MS;
        out.acknowledged(s, now);
        assert_eq!(out.rto(), rto * 2, "no sample from a re-sent frame");
        let s = push(&mut out, now).unwrap();
        now += 400 * MS;
        out.acknowledged(s, now);
        assert!(out.rto() < 500 * MS, "a true sample ends the back-off");
    }

    #[test]
    fn repeated_timeouts_back_off_and_re_send_only_the_oldest_frame() {
        let mut out = Outgoing::default();
        let t0 = Instant::now();
        let sent = fill(&mut out, t0);
        let window = out.window();
        let mut now = t0;
        let mut gaps = Vec::new();
        for _ in 0..5 {
            let next = out.next_deadline(now).unwrap();
            gaps.push((next - now).as_millis());
            now = next;
            let again = out.due(now);
            assert_eq!(seq(&again[0]), sent[0], "the oldest goes again");
        }
        assert_eq!(gaps, [1000, 2000, 4000, 4000, 4000], "doubling up to 4 s");
        assert_eq!(out.resent(), 5, "one frame, not the window");
        assert!(out.window() < window, "a timeout shrinks the window");
        assert!(out.window() >= MIN_WINDOW);
    }

    #[test]
    fn after_a_timeout_new_frames_probe_and_show_the_others_lost() {
        let mut out = Outgoing::default();
        let t0 = Instant::now();
        let sent = fill(&mut out, t0);
        let now = out.next_deadline(t0).unwrap();
        let due: Vec<i64> = out.due(now).iter().map(|f| seq(f)).collect();
        let waited = sent.len() as i64;
        assert_eq!(
            due,
            [sent[0], waited],
            "the oldest again, then the one that waited"
        );
        assert_eq!(out.resent(), 1);
        // The client takes acks again: the oldest's copy is acked, new frames go and are acked.
        out.acknowledged(sent[0], now + 10 * MS);
        let probe = fill(&mut out, now + 10 * MS);
        assert!(
            !probe.is_empty(),
            "the set-aside frames do not fill the window"
        );
        out.acknowledged(waited, now + 20 * MS);
        let mut again: Vec<i64> = out.due(now + 20 * MS).iter().map(|f| seq(f)).collect();
        for p in probe {
            out.acknowledged(p, now + 30 * MS);
            again.extend(out.due(now + 30 * MS).iter().map(|f| seq(f)));
        }
        again.retain(|s| sent.contains(s));
        assert!(again.len() >= 5, "{again:?}");
        assert_eq!(
            again[..],
            sent[1..=again.len()],
            "shown lost, they go again in order"
        );
    }

    #[test]
    fn a_client_that_acknowledges_nothing_gets_a_bounded_queue() {
        let mut out = Outgoing::default();
        let mut now = Instant::now();
        for _ in 0..50 {
            fill(&mut out, now);
            now = out.next_deadline(now).unwrap();
            out.due(now);
        }
        assert!(out.held <= MAX_HELD + 1200, "{}", out.held);
        assert_eq!(out.resent(), 50, "one frame per timeout");
    }

    #[test]
    fn a_late_ack_after_a_timeout_keeps_the_others_from_going_again() {
        let mut out = Outgoing::default();
        let t0 = Instant::now();
        let sent = fill(&mut out, t0);
        let window = out.window();
        let now = out.next_deadline(t0).unwrap();
        let mut probe: Vec<i64> = out.due(now).iter().skip(1).map(|f| seq(f)).collect();
        assert!(out.window() < window, "halved on the timeout");
        probe.extend(fill(&mut out, now));
        for s in sent.iter().chain(&probe) {
            out.acknowledged(*s, now + 100 * MS);
        }
        out.due(now + 100 * MS);
        assert_eq!(out.resent(), 1, "only the oldest went twice");
        assert!(
            out.window() >= window,
            "given back: the timeout was spurious"
        );
    }

    #[test]
    fn a_later_ack_shows_a_loss_and_it_goes_again_at_once() {
        let mut out = Outgoing::default();
        let t0 = Instant::now();
        let a = push(&mut out, t0).unwrap();
        let b = push(&mut out, t0 + MS).unwrap();
        let c = push(&mut out, t0 + 2 * MS).unwrap();
        let window = out.window();
        out.acknowledged(c, t0 + 60 * MS);
        let again: Vec<i64> = out.due(t0 + 60 * MS).iter().map(|f| seq(f)).collect();
        assert_eq!(again, [a, b], "both sent before the acked one");
        assert!(out.window() > window, "a lost frame is no congestion");
        out.acknowledged(b, t0 + 120 * MS);
        out.acknowledged(a, t0 + 120 * MS);
        assert_eq!(out.unacked(), 0);
        assert_eq!(out.resent(), 2);
    }

    #[test]
    fn paused_output_waits_and_goes_on_resume() {
        let mut out = Outgoing::default();
        let t0 = Instant::now();
        out.pause();
        assert!(!out.has_room(), "a paused session reads no output");
        assert_eq!(push(&mut out, t0), None);
        assert!(out.due(t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(out.next_deadline(t0), None);
        out.resume();
        assert_eq!(out.next_deadline(t0), Some(t0), "waiting frames go at once");
        assert_eq!(out.due(t0).len(), 1);
        assert_eq!(out.resent(), 0, "a frame sent late is sent once");
    }

    #[test]
    fn after_a_reconnect_everything_goes_again_within_the_window() {
        let mut out = Outgoing::default();
        let t0 = Instant::now();
        let sent = fill(&mut out, t0);
        out.resend_all();
        let again: Vec<i64> = out.due(t0 + MS).iter().map(|f| seq(f)).collect();
        assert_eq!(again, sent);
        assert!(out.due(t0 + MS).is_empty(), "not twice");
    }

    #[test]
    fn ack_payload_round_trips_and_tolerates_key_case() {
        let a = Ack::parse(br#"{"acknowledgedmessagetype":"output_stream_data","AcknowledgedMessageId":"x","AcknowledgedMessageSequenceNumber":7}"#).unwrap();
        assert_eq!(a.sequence_number, 7);
        assert!(Ack::parse(b"not json").is_none());
    }
}
