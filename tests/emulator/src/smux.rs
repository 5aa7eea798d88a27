//! The client half of multiplexed port forwarding, as session-manager-plugin plays it for
//! `type: LocalPortForwarding` with a client ≥ 1.1.70 (docs/protocol.md §4.7): the type-1 byte stream
//! in both directions carries xtaci/smux **version 1** frames, and every local connection is one
//! smux stream.
//!
//! Frame: version u8 (1), cmd u8 (0 SYN, 1 FIN, 2 PSH, 3 NOP), length u16 LE, stream id u32 LE,
//! then `length` data bytes for PSH only. The client numbers its streams 1, 3, 5, … (smux
//! clients open odd ids). A stream opens with SYN and carries data at once (v1 has no SYN
//! acknowledgement); FIN closes it for both directions, which is why reads after our own FIN
//! still return what arrived until the agent's FIN. NOP (stream 0) is the keep-alive.
//!
//! Frames may be cut anywhere across data-channel messages, so the agent's bytes go through an
//! incremental [`Decoder`]; what the client sends is cut into ≤ 1 KiB messages by the session.
//! This module is written from the protocol, independently of the agent's implementation.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::session::Session;

/// smux protocol version (session-manager-plugin uses smux's default configuration: 1).
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 8;
/// The most data the client puts in one PSH frame (smux's default `MaxFrameSize`).
pub const MAX_FRAME_DATA: usize = 32 * 1024;
/// How often the client sends a NOP while the session lives (smux's default keep-alive).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Readers re-check whether the session ended at least this often.
const READ_SLICE: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    Syn = 0,
    Fin = 1,
    Psh = 2,
    Nop = 3,
}

impl Cmd {
    fn from_code(code: u8) -> Option<Cmd> {
        [Cmd::Syn, Cmd::Fin, Cmd::Psh, Cmd::Nop]
            .into_iter()
            .find(|c| *c as u8 == code)
    }
}

/// One frame's bytes; `data` must be empty except for PSH and at most `u16::MAX` bytes.
pub fn encode(cmd: Cmd, stream: u32, data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).expect("an smux frame carries at most 65535 bytes");
    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.extend_from_slice(&[VERSION, cmd as u8]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&stream.to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// One frame from the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub cmd: Cmd,
    pub stream: u32,
    pub data: Vec<u8>,
}

/// Frames from a byte stream that arrives in arbitrary pieces.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// Appends `bytes` and returns every frame now complete. An error means the stream is not
    /// smux v1 and cannot be resynchronised; the decoder is then useless.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Frame>, String> {
        self.buf.extend_from_slice(bytes);
        let mut frames = Vec::new();
        let mut at = 0;
        while let Some(head) = self.buf.get(at..at + HEADER_LEN) {
            let len = usize::from(u16::from_le_bytes([head[2], head[3]]));
            let stream = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            let cmd = Cmd::from_code(head[1])
                .filter(|_| head[0] == VERSION)
                .ok_or_else(|| {
                    format!(
                        "agent sent a frame with smux version {} command {} (expected version 1, \
                         command 0-3)",
                        head[0], head[1]
                    )
                })?;
            if cmd != Cmd::Psh && len != 0 {
                return Err(format!(
                    "agent sent smux {cmd:?} for stream {stream} with {len} data bytes; only PSH \
                     carries data"
                ));
            }
            let Some(data) = self.buf.get(at + HEADER_LEN..at + HEADER_LEN + len) else {
                break;
            };
            frames.push(Frame {
                cmd,
                stream,
                data: data.to_vec(),
            });
            at += HEADER_LEN + len;
        }
        self.buf.drain(..at);
        Ok(frames)
    }
}

/// What arrived for one stream.
#[derive(Default)]
struct Inbox {
    data: VecDeque<u8>,
    /// The agent sent FIN: reads return 0 once `data` is drained.
    agent_fin: bool,
    /// We sent FIN: no more writes.
    local_fin: bool,
}

/// Counters for assertions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmuxStats {
    pub streams_opened: u32,
    pub frames_received: u64,
    pub nops_received: u64,
    pub fins_received: u64,
}

#[derive(Default)]
struct Demux {
    decoder: Decoder,
    streams: HashMap<u32, Inbox>,
    next_id: u32,
    /// The agent's byte stream was not smux: every read fails with this.
    broken: Option<String>,
    stats: SmuxStats,
}

impl Demux {
    fn frame(&mut self, f: Frame) -> Result<(), String> {
        self.stats.frames_received += 1;
        if f.cmd == Cmd::Nop {
            self.stats.nops_received += 1;
            return Ok(());
        }
        let Some(inbox) = self.streams.get_mut(&f.stream) else {
            return Err(format!(
                "agent sent smux {:?} for stream {}, which the client never opened (the agent \
                 must not open streams)",
                f.cmd, f.stream
            ));
        };
        match f.cmd {
            Cmd::Psh if inbox.agent_fin => Err(format!(
                "agent sent smux data for stream {} after its FIN",
                f.stream
            )),
            Cmd::Psh => {
                inbox.data.extend(&f.data);
                Ok(())
            }
            Cmd::Fin => {
                self.stats.fins_received += 1;
                inbox.agent_fin = true;
                Ok(())
            }
            Cmd::Syn => Err(format!(
                "agent sent SYN for stream {}, which the client opened",
                f.stream
            )),
            Cmd::Nop => Ok(()),
        }
    }

    /// Bytes of stream `id` into `buf`; `Some(0)` at its end, `None` when nothing is there yet.
    fn take(&mut self, id: u32, buf: &mut [u8]) -> Option<usize> {
        let inbox = self.streams.get_mut(&id)?;
        if inbox.data.is_empty() {
            return inbox.agent_fin.then_some(0);
        }
        let (front, _) = inbox.data.as_slices();
        let n = buf.len().min(front.len());
        buf[..n].copy_from_slice(&front[..n]);
        inbox.data.drain(..n);
        Some(n)
    }
}

/// The smux client of one session, shared by all its streams. Its own lock, apart from the
/// emulator's state, lets many reader threads wait without contending with the data channel.
#[derive(Default)]
pub(crate) struct Client {
    demux: Mutex<Demux>,
    changed: Condvar,
}

impl Client {
    fn lock(&self) -> MutexGuard<'_, Demux> {
        self.demux.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new stream id (1, 3, 5, …) with its inbox.
    pub(crate) fn open(&self) -> Result<u32, String> {
        let mut d = self.lock();
        let id = d
            .next_id
            .checked_mul(2)
            .and_then(|i| i.checked_add(1))
            .ok_or("the session has used up its smux stream ids")?;
        d.next_id += 1;
        d.stats.streams_opened += 1;
        d.streams.insert(id, Inbox::default());
        Ok(id)
    }

    /// The agent's type-1 output bytes; returns protocol errors to record.
    pub(crate) fn receive(&self, bytes: &[u8]) -> Vec<String> {
        let mut d = self.lock();
        if d.broken.is_some() {
            return Vec::new();
        }
        let mut errors = Vec::new();
        match d.decoder.push(bytes) {
            // Readers wake only when whole frames arrived.
            Ok(frames) if frames.is_empty() => return errors,
            Ok(frames) => {
                for f in frames {
                    if let Err(e) = d.frame(f) {
                        errors.push(e);
                    }
                }
            }
            Err(e) => {
                d.broken = Some(e.clone());
                errors.push(e);
            }
        }
        self.changed.notify_all();
        errors
    }

    /// Marks stream `id` closed for writing; false if it already was.
    fn close_local(&self, id: u32) -> bool {
        let mut d = self.lock();
        let inbox = d.streams.entry(id).or_default();
        !std::mem::replace(&mut inbox.local_fin, true)
    }

    fn closed_local(&self, id: u32) -> bool {
        self.lock().streams.get(&id).is_none_or(|i| i.local_fin)
    }

    pub(crate) fn stats(&self) -> SmuxStats {
        self.lock().stats.clone()
    }

    /// Waits for data of stream `id` until `deadline`; 0 after the agent's FIN or once
    /// `session_over()` says no more can come.
    fn read(
        &self,
        id: u32,
        buf: &mut [u8],
        deadline: Option<Instant>,
        session_over: impl Fn() -> bool,
    ) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut over = false;
        loop {
            let mut d = self.lock();
            if let Some(n) = d.take(id, buf) {
                return Ok(n);
            }
            if let Some(e) = &d.broken {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e.clone()));
            }
            if over {
                return Ok(0);
            }
            let now = Instant::now();
            if deadline.is_some_and(|t| now >= t) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no data on smux stream {id} in time"),
                ));
            }
            let wait = deadline.map_or(READ_SLICE, |t| (t - now).min(READ_SLICE));
            drop(self.changed.wait_timeout(d, wait));
            // Checked without the demux lock (the session lock is taken first elsewhere).
            over = session_over();
        }
    }
}

/// One smux stream of a multiplexed Port session: Read + Write, usable from any thread (clone
/// it with [`SmuxStream::try_clone`] for a separate reader and writer). Dropping it sends
/// nothing; [`SmuxStream::shutdown`] closes it.
pub struct SmuxStream {
    session: Session,
    client: Arc<Client>,
    id: u32,
    read_timeout: Option<Duration>,
}

impl SmuxStream {
    pub(crate) fn new(session: Session, client: Arc<Client>, id: u32) -> SmuxStream {
        SmuxStream {
            session,
            client,
            id,
            read_timeout: None,
        }
    }

    /// The smux stream id (odd).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// `None` = block until data, the agent's FIN or the end of the session.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// Another handle on the same stream.
    pub fn try_clone(&self) -> SmuxStream {
        SmuxStream {
            session: self.session.clone(),
            client: self.client.clone(),
            id: self.id,
            read_timeout: self.read_timeout,
        }
    }

    /// Sends FIN (once): the stream takes no more writes; reads go on until the agent's FIN.
    pub fn shutdown(&self) -> io::Result<()> {
        if !self.client.close_local(self.id) {
            return Ok(());
        }
        let fin = encode(Cmd::Fin, self.id, &[]);
        self.session.send_smux(&fin, false)
    }
}

impl io::Read for SmuxStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let deadline = self.read_timeout.map(|t| Instant::now() + t);
        let session = &self.session;
        self.client
            .read(self.id, buf, deadline, || session.is_over())
    }
}

impl io::Write for SmuxStream {
    /// Sends one PSH frame of up to [`MAX_FRAME_DATA`] bytes, waiting while the session has
    /// too much input in flight.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.client.closed_local(self.id) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("smux stream {} was shut down", self.id),
            ));
        }
        let n = buf.len().min(MAX_FRAME_DATA);
        if n > 0 {
            let frame = encode(Cmd::Psh, self.id, &buf[..n]);
            self.session.send_smux(&frame, true)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sends a NOP every `every` until the session is over (run on its own thread).
pub(crate) fn keepalive(session: &Session, every: Duration) {
    let nop = encode(Cmd::Nop, 0, &[]);
    while !session.wait_over(every) {
        if session.send_smux(&nop, false).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_with_streams(n: usize) -> Client {
        let c = Client::default();
        for _ in 0..n {
            c.open().unwrap();
        }
        c
    }

    fn read_now(c: &Client, id: u32, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        let deadline = Some(Instant::now() + Duration::from_millis(50));
        let n = c.read(id, &mut buf, deadline, || false)?;
        buf.truncate(n);
        Ok(buf)
    }

    #[test]
    fn frames_are_encoded_little_endian_with_version_1() {
        assert_eq!(
            encode(Cmd::Psh, 0x0403_0201, b"hey"),
            [1, 2, 3, 0, 1, 2, 3, 4, b'h', b'e', b'y']
        );
        assert_eq!(encode(Cmd::Syn, 1, &[]), [1, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(encode(Cmd::Fin, 3, &[]), [1, 1, 0, 0, 3, 0, 0, 0]);
        assert_eq!(encode(Cmd::Nop, 0, &[]), [1, 3, 0, 0, 0, 0, 0, 0]);
        let big = vec![7u8; 300];
        let f = encode(Cmd::Psh, 5, &big);
        assert_eq!(&f[2..4], &[0x2c, 0x01], "300 = 0x012c, little-endian");
    }

    #[test]
    fn the_decoder_takes_frames_cut_anywhere() {
        let mut wire = encode(Cmd::Psh, 1, b"hello");
        wire.extend(encode(Cmd::Nop, 0, &[]));
        wire.extend(encode(Cmd::Psh, 3, &[9; 2000]));
        wire.extend(encode(Cmd::Fin, 1, &[]));
        for cut in [1, 3, 8, 9, 13, 1000] {
            let mut d = Decoder::default();
            let frames: Vec<Frame> = wire
                .chunks(cut)
                .flat_map(|piece| d.push(piece).unwrap())
                .collect();
            let summary: Vec<_> = frames
                .iter()
                .map(|f| (f.cmd, f.stream, f.data.len()))
                .collect();
            assert_eq!(
                summary,
                [
                    (Cmd::Psh, 1, 5),
                    (Cmd::Nop, 0, 0),
                    (Cmd::Psh, 3, 2000),
                    (Cmd::Fin, 1, 0)
                ],
                "cut every {cut} bytes"
            );
            assert_eq!(frames[0].data, b"hello");
            assert!(d.buf.is_empty(), "nothing left over");
        }
    }

    #[test]
    fn the_decoder_refuses_other_versions_commands_and_data_on_control_frames() {
        let mut v2 = encode(Cmd::Psh, 1, b"x");
        v2[0] = 2;
        assert!(
            Decoder::default()
                .push(&v2)
                .unwrap_err()
                .contains("version 2")
        );
        let mut bad_cmd = encode(Cmd::Nop, 0, &[]);
        bad_cmd[1] = 4;
        assert!(Decoder::default().push(&bad_cmd).is_err());
        let mut fin_with_data = encode(Cmd::Psh, 1, b"xy");
        fin_with_data[1] = Cmd::Fin as u8;
        assert!(
            Decoder::default()
                .push(&fin_with_data)
                .unwrap_err()
                .contains("only PSH")
        );
    }

    #[test]
    fn stream_ids_are_odd_from_one() {
        let c = Client::default();
        let ids: Vec<u32> = (0..4).map(|_| c.open().unwrap()).collect();
        assert_eq!(ids, [1, 3, 5, 7]);
        assert_eq!(c.stats().streams_opened, 4);
    }

    #[test]
    fn data_is_demultiplexed_by_stream_and_ends_with_the_agents_fin() {
        let c = client_with_streams(2);
        let mut wire = encode(Cmd::Psh, 3, b"three");
        wire.extend(encode(Cmd::Psh, 1, b"one"));
        wire.extend(encode(Cmd::Nop, 0, &[]));
        wire.extend(encode(Cmd::Psh, 3, b"-more"));
        wire.extend(encode(Cmd::Fin, 3, &[]));
        let (a, b) = wire.split_at(11); // inside the second frame's header
        assert!(c.receive(a).is_empty());
        assert!(c.receive(b).is_empty());
        assert_eq!(read_now(&c, 1, 64).unwrap(), b"one");
        assert_eq!(read_now(&c, 3, 7).unwrap(), b"three-m");
        assert_eq!(read_now(&c, 3, 64).unwrap(), b"ore");
        assert_eq!(read_now(&c, 3, 64).unwrap(), b"", "0 after the FIN");
        let err = read_now(&c, 1, 64).unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::TimedOut,
            "stream 1 is still open"
        );
        let stats = c.stats();
        assert_eq!((stats.nops_received, stats.fins_received), (1, 1));
    }

    #[test]
    fn a_reader_waiting_on_one_thread_wakes_for_data_from_another() {
        let c = Arc::new(client_with_streams(1));
        let reader = {
            let c = c.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8];
                let deadline = Some(Instant::now() + Duration::from_secs(5));
                let n = c.read(1, &mut buf, deadline, || false).unwrap();
                buf[..n].to_vec()
            })
        };
        c.receive(&encode(Cmd::Psh, 1, b"wake"));
        assert_eq!(reader.join().unwrap(), b"wake");
    }

    #[test]
    fn a_blocked_read_returns_0_when_the_session_ends() {
        let c = client_with_streams(1);
        let mut buf = [0u8; 8];
        let t0 = Instant::now();
        assert_eq!(c.read(1, &mut buf, None, || true).unwrap(), 0);
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    /// The type-1 bytes a session has queued, checking each message is at most 1 KiB.
    fn queued_wire(session: &Session) -> Vec<u8> {
        let held = session.held_input();
        assert!(held.iter().all(|(t, m)| *t == 1 && m.len() <= 1024));
        held.into_iter().flat_map(|(_, m)| m).collect()
    }

    /// A Port session whose (absent) agent's handshake carried the spec's properties.
    fn port_session(emu: &crate::Emulator, spec: crate::SessionSpec) -> Session {
        let properties = spec.properties.clone();
        let session = emu.open_session(spec);
        session.receive_port_handshake(&properties);
        session
    }

    #[test]
    fn only_local_port_forwarding_with_a_recent_client_is_multiplexed() {
        use crate::SessionSpec;
        assert!(SessionSpec::port(22, None, true).multiplexed());
        assert!(
            SessionSpec::port(22, None, true)
                .client_version("1.1.70")
                .multiplexed()
        );
        assert!(
            SessionSpec::port(22, None, true)
                .client_version("1.2")
                .multiplexed()
        );
        assert!(
            !SessionSpec::port(22, None, true)
                .client_version("1.1.69.0")
                .multiplexed()
        );
        assert!(!SessionSpec::port(22, None, false).multiplexed());
        assert!(!SessionSpec::standard_stream().multiplexed());
        let emu = crate::Emulator::start(crate::Options::default());
        let basic = port_session(&emu, SessionSpec::port(22, None, false));
        let err = basic.smux_open().err().expect("no smux on a basic session");
        assert!(err.contains("not multiplexed"), "{err}");
    }

    #[test]
    fn a_stream_sends_syn_psh_in_1k_messages_and_one_fin() {
        let emu = crate::Emulator::start(crate::Options::default());
        let session = port_session(&emu, crate::SessionSpec::port(22, None, true));
        let mut a = session.smux_open().unwrap();
        let mut b = session.smux_open().unwrap();
        assert_eq!((a.id(), b.id()), (1, 3));
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
        let n = io::Write::write(&mut a, &data).unwrap();
        assert_eq!(n, MAX_FRAME_DATA, "one write is one frame");
        a.shutdown().unwrap();
        a.shutdown().unwrap();
        let err = io::Write::write(&mut a, b"late").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        let frames = Decoder::default().push(&queued_wire(&session)).unwrap();
        let summary: Vec<_> = frames
            .iter()
            .map(|f| (f.cmd, f.stream, f.data.len()))
            .collect();
        assert_eq!(
            summary,
            [
                (Cmd::Syn, 1, 0),
                (Cmd::Syn, 3, 0),
                (Cmd::Psh, 1, MAX_FRAME_DATA),
                (Cmd::Fin, 1, 0),
            ]
        );
        assert_eq!(frames[2].data, data[..MAX_FRAME_DATA]);
        // No agent acknowledges anything: the window is full and writes wait, until the end.
        let blocked = std::thread::spawn(move || io::Write::write(&mut b, b"x"));
        std::thread::sleep(Duration::from_millis(300)); // proving a wait needs one
        assert!(!blocked.is_finished(), "the write waits for the window");
        emu.stop();
        let err = blocked.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn a_nop_goes_out_every_keepalive_interval() {
        let emu = crate::Emulator::start(crate::Options::default());
        let mut spec = crate::SessionSpec::port(22, None, true);
        spec.smux_keepalive = Duration::from_millis(50);
        let session = port_session(&emu, spec);
        let nops = || {
            let frames = Decoder::default().push(&queued_wire(&session)).unwrap();
            assert!(frames.iter().all(|f| (f.cmd, f.stream) == (Cmd::Nop, 0)));
            frames.len()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while nops() < 3 && Instant::now() < deadline {
            let seen = emu.read(crate::State::version);
            emu.wait_until(Duration::from_secs(1), |st| st.version() != seen);
        }
        assert!(nops() >= 3, "NOPs keep coming");
        emu.stop();
        let after_stop = nops();
        std::thread::sleep(Duration::from_millis(200)); // proving an absence needs a wait
        assert_eq!(nops(), after_stop, "no NOP once the session is over");
    }

    #[test]
    fn protocol_errors_are_reported_and_garbage_breaks_every_stream() {
        let c = client_with_streams(1);
        let errors = c.receive(&encode(Cmd::Psh, 9, b"x"));
        assert!(errors[0].contains("never opened"), "{errors:?}");
        let errors = c.receive(&encode(Cmd::Syn, 1, &[]));
        assert_eq!(errors.len(), 1, "the agent must not send SYN");
        let errors = c.receive(b"\x05\x00\x00\x00\x00\x00\x00\x00");
        assert!(errors[0].contains("version 5"), "{errors:?}");
        let err = read_now(&c, 1, 8).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
