//! A slower client than the emulator's own, for the agent's flow control (docs/protocol.md
//! §4.6.2): the session's output crosses a link with a round trip, a bandwidth and random loss
//! on its way to the client, and the client acks late. Order is kept, as TCP keeps it under a
//! real data channel. See [`crate::Session::set_link`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::agentmessage::AgentMessage;

/// How the link and the client behave. The default is the emulator's own client: no delay, no
/// limit, no loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkSpec {
    /// Between the client taking an output frame and sending its ack.
    pub ack_delay: Duration,
    /// The link's round trip: half before the client sees a frame, half before its ack is back.
    pub rtt: Duration,
    /// Bytes per second towards the client (frames queue for it); 0 = no limit.
    pub bandwidth: u64,
    /// Fraction (0.0 to 1.0) of output frames lost on the way, drawn from `seed`.
    pub loss: f64,
    pub seed: u64,
}

impl Default for LinkSpec {
    fn default() -> Self {
        LinkSpec {
            ack_delay: Duration::ZERO,
            rtt: Duration::ZERO,
            bandwidth: 0,
            loss: 0.0,
            seed: 0x5eed_1e55,
        }
    }
}

/// Frames and acks on their way, each with when it arrives.
pub(crate) struct Link {
    spec: LinkSpec,
    /// When the link has sent what is queued on it.
    free_at: Option<Instant>,
    rng: u64,
    to_client: VecDeque<(Instant, AgentMessage)>,
    to_agent: VecDeque<(Instant, AgentMessage)>,
    pub(crate) lost: u64,
}

impl Link {
    pub(crate) fn new(spec: LinkSpec) -> Link {
        Link {
            spec,
            free_at: None,
            rng: spec.seed | 1,
            to_client: VecDeque::new(),
            to_agent: VecDeque::new(),
            lost: 0,
        }
    }

    /// xorshift64: the same losses in every run with the same seed.
    fn chance(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An output frame the agent sent at `now` enters the link (or is lost on it).
    pub(crate) fn send(&mut self, now: Instant, m: AgentMessage, wire_len: usize) {
        let start = self.free_at.map_or(now, |f| f.max(now));
        let serialise = match self.spec.bandwidth {
            0 => Duration::ZERO,
            bw => Duration::from_secs_f64(wire_len as f64 / bw as f64),
        };
        self.free_at = Some(start + serialise);
        if self.chance() < self.spec.loss {
            self.lost += 1;
            return;
        }
        let arrives = start + serialise + self.spec.rtt / 2;
        self.to_client.push_back((arrives, m));
    }

    /// The next output frame that has reached the client by `now`.
    pub(crate) fn arrived(&mut self, now: Instant) -> Option<AgentMessage> {
        pop_due(&mut self.to_client, now)
    }

    /// The client acks at `now`; the agent gets it after the ack delay and half the round trip.
    pub(crate) fn ack(&mut self, now: Instant, ack: AgentMessage) {
        let at = now + self.spec.ack_delay + self.spec.rtt / 2;
        self.to_agent.push_back((at, ack));
    }

    /// Acks that reach the agent by `now`.
    pub(crate) fn acks_due(&mut self, now: Instant, out: &mut Vec<AgentMessage>) {
        while let Some(a) = pop_due(&mut self.to_agent, now) {
            out.push(a);
        }
    }
}

fn pop_due(queue: &mut VecDeque<(Instant, AgentMessage)>, now: Instant) -> Option<AgentMessage> {
    match queue.front() {
        Some((at, _)) if *at <= now => queue.pop_front().map(|(_, m)| m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: i64) -> AgentMessage {
        AgentMessage::new("output_stream_data", vec![0; 1000]).with_sequence(seq, 0)
    }

    #[test]
    fn frames_queue_for_the_bandwidth_cross_half_the_rtt_and_acks_come_late() {
        let spec = LinkSpec {
            rtt: Duration::from_millis(100),
            bandwidth: 100_000,
            ack_delay: Duration::from_millis(30),
            ..LinkSpec::default()
        };
        let mut link = Link::new(spec);
        let t0 = Instant::now();
        link.send(t0, frame(0), 1000);
        link.send(t0, frame(1), 1000);
        let ms = Duration::from_millis;
        assert!(
            link.arrived(t0 + ms(59)).is_none(),
            "10 ms on the wire + 50 ms"
        );
        assert_eq!(link.arrived(t0 + ms(60)).unwrap().sequence_number, 0);
        assert!(
            link.arrived(t0 + ms(69)).is_none(),
            "the second queued behind it"
        );
        assert_eq!(link.arrived(t0 + ms(70)).unwrap().sequence_number, 1);
        link.ack(t0 + ms(70), frame(9));
        let mut acks = Vec::new();
        link.acks_due(t0 + ms(149), &mut acks);
        assert!(acks.is_empty());
        link.acks_due(t0 + ms(150), &mut acks);
        assert_eq!(acks.len(), 1, "30 ms late, then 50 ms back");
    }

    #[test]
    fn loss_takes_about_its_share() {
        let mut link = Link::new(LinkSpec {
            loss: 0.01,
            ..LinkSpec::default()
        });
        let t0 = Instant::now();
        (0..100_000).for_each(|i| link.send(t0, frame(i), 1000));
        assert!((800..1200).contains(&link.lost), "{}", link.lost);
    }
}
