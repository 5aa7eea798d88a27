//! Multiplexed port forwarding (docs/protocol.md §4.7, `port_mux.go` upstream): for
//! `type: LocalPortForwarding` with a client ≥ 1.1.70, the type-1 byte stream in both directions
//! carries xtaci/smux **version 1** frames, the version session-manager-plugin uses
//! (`smux.DefaultConfig()`). The client opens one stream (SYN) per local TCP connection; the agent
//! connects to the destination for each and relays PSH data both ways.
//!
//! Frame: version u8 (1), cmd u8 (0 SYN, 1 FIN, 2 PSH, 3 NOP), length u16 LE, stream id u32 LE,
//! then `length` data bytes, for PSH only (smux reads no data after other commands).
//!
//! Framing choice: every output message is one or more *whole* frames of at most [`CHUNK`]
//! bytes — TCP is read [`MAX_READ`] bytes at a time, one PSH frame per read — so messages stay
//! within upstream's 1 KiB stream payloads and nothing is held back waiting for a frame to fill.
//! Input is a byte stream: the client cuts its frames (up to 32 KiB of data) into messages
//! anywhere, so the [`Decoder`] is incremental.
//!
//! Closing: smux v1 has no half-close — a FIN closes the sender's stream for both directions.
//! Client FIN: pending data is written, then the TCP write side is shut down; whatever the
//! destination still sends is read and dropped until it closes (closing a socket with unread
//! data would reset it and could lose what we wrote). Destination EOF: FIN to the client; the
//! connection stays writable until the client's FIN, which upstream clients always answer with.
//!
//! Keep-alive: smux v1 peers with keep-alive on send NOP every 10 s and close the session when
//! nothing arrived for 30 s. Upstream turns it off for clients after 1.2.331.0 (and those clients
//! turn theirs off for agents ≥ 3.1.1511.0, since NOPs defeat the idle timeout); for older
//! clients this plugin sends NOPs. Client NOPs are ignored; a silent client is not timed out
//! here (the data channel has its own liveness).

use super::plugin::read_chunk;
use super::plugin::{
    CHUNK, Ended, Event, Input, Interest, Output, PENDING_LIMIT, Pending, Plugin, ReadResult,
};
use super::port::{Destination, PortError, connect};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// Input that is not smux v1: the stream cannot be resynchronised and the session ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error(
        "not an smux v1 frame at input byte {offset}: version {version}, command {code} \
         (expected version 1, command 0-3); the client must use smux protocol version 1"
    )]
    NotV1 {
        offset: usize,
        version: u8,
        code: u8,
    },
    #[error(
        "smux {cmd:?} frame for stream {stream} declares {len} data bytes; only PSH carries data"
    )]
    DataOnControl { cmd: Cmd, stream: u32, len: usize },
}

/// Why a multiplexed session cannot start; the text is shown to the client.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the smux wake-up socket: {0}")]
    WakeSocket(#[source] io::Error),
    #[error("cannot start the smux keep-alive thread: {0}")]
    KeepAlive(#[source] io::Error),
}

/// smux protocol version spoken (session-manager-plugin uses smux's default, 1).
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 8;
/// The most data one frame carries (the u16 length field).
pub const MAX_DATA: usize = u16::MAX as usize;
/// TCP bytes per PSH frame, so that one frame fills at most one output message.
pub const MAX_READ: usize = CHUNK - HEADER_LEN;
/// Clients from this version on multiplex `LocalPortForwarding` (upstream `port.go`).
pub const MIN_CLIENT_VERSION: &str = "1.1.70";
/// Clients after this version turn smux keep-alive off; older ones need our NOPs.
pub const KEEPALIVE_OFF_AFTER_CLIENT: &str = "1.2.331.0";
/// smux's default keep-alive interval (its timeout is 30 s).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Streams open at once; more SYNs are answered with FIN (bounds fds and connect threads).
const MAX_STREAMS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    Syn,
    Fin,
    Psh,
    Nop,
}

impl Cmd {
    fn code(self) -> u8 {
        match self {
            Cmd::Syn => 0,
            Cmd::Fin => 1,
            Cmd::Psh => 2,
            Cmd::Nop => 3,
        }
    }

    fn from_code(code: u8) -> Option<Cmd> {
        Some(match code {
            0 => Cmd::Syn,
            1 => Cmd::Fin,
            2 => Cmd::Psh,
            3 => Cmd::Nop,
            _ => return None,
        })
    }
}

/// One decoded frame; `data` is empty except for PSH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub cmd: Cmd,
    pub stream: u32,
    pub data: Vec<u8>,
}

fn header(cmd: Cmd, stream: u32, len: u16, out: &mut Vec<u8>) {
    out.push(VERSION);
    out.push(cmd.code());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&stream.to_le_bytes());
}

/// A data-less frame (SYN, FIN, NOP).
pub fn encode_control(cmd: Cmd, stream: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    header(cmd, stream, 0, &mut out);
    out
}

/// `data` as PSH frames of at most [`MAX_DATA`] bytes each (none for empty data).
pub fn encode_psh(stream: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + HEADER_LEN);
    for piece in data.chunks(MAX_DATA) {
        let len = u16::try_from(piece.len()).unwrap_or(u16::MAX); // chunks are ≤ u16::MAX
        header(Cmd::Psh, stream, len, &mut out);
        out.extend_from_slice(piece);
    }
    out
}

/// Frames from a byte stream that arrives in arbitrary pieces. Holds at most one partial frame
/// (≤ 8 + 65535 bytes) beyond what was pushed but not yet taken.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already decoded (dropped on the next push).
    taken: usize,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.drain(..self.taken.min(self.buf.len()));
        self.taken = 0;
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `None` until more bytes arrive. An error means the stream is
    /// not smux v1 (or is corrupt) and cannot be resynchronised.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let rest = self.buf.get(self.taken..).unwrap_or_default();
        let Some(head) = rest.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let [version, code, l0, l1, s0, s1, s2, s3] = *head;
        let len = usize::from(u16::from_le_bytes([l0, l1]));
        let stream = u32::from_le_bytes([s0, s1, s2, s3]);
        let offset = self.taken;
        let cmd = Cmd::from_code(code)
            .filter(|_| version == VERSION)
            .ok_or(FrameError::NotV1 {
                offset,
                version,
                code,
            })?;
        if cmd != Cmd::Psh && len != 0 {
            return Err(FrameError::DataOnControl { cmd, stream, len });
        }
        let Some(data) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        let frame = Frame {
            cmd,
            stream,
            data: data.to_vec(),
        };
        self.taken += HEADER_LEN + len;
        Ok(Some(frame))
    }
}

/// What helper threads hand to the plugin.
enum Mail {
    Connected(u32, Result<TcpStream, PortError>),
    KeepAlive,
}

/// Helper threads post mail, then write a byte to the wake socket, whose other end the session
/// loop polls.
#[derive(Clone)]
struct Mailbox {
    tx: Sender<Mail>,
    wake: std::sync::Arc<UnixStream>,
}

impl Mailbox {
    /// False once the plugin is gone.
    fn post(&self, mail: Mail) -> bool {
        if self.tx.send(mail).is_err() {
            return false;
        }
        match (&*self.wake).write_all(&[1]) {
            // A full socket already holds a wake-up.
            Ok(()) => true,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        }
    }
}

/// One client stream and its destination connection.
#[derive(Default)]
struct Stream {
    /// None while connecting.
    conn: Option<TcpStream>,
    /// Client data not yet taken by the destination.
    pending: Pending,
    /// The client closed the stream: nothing more to write, and what the destination sends is
    /// dropped (the client discards data for closed streams).
    client_fin: bool,
    write_shut: bool,
    /// We sent FIN (destination EOF or failure): nothing more to read.
    sent_fin: bool,
}

impl Stream {
    fn fd(&self) -> Option<RawFd> {
        self.conn.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Writes pending data; after the client's FIN, ends our write side once it is all out.
    fn flush(&mut self) -> io::Result<()> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        self.pending.write_to(conn)?;
        if self.client_fin && self.pending.is_empty() && !self.write_shut {
            self.write_shut = true;
            match conn.shutdown(Shutdown::Write) {
                Err(e) if e.kind() != io::ErrorKind::NotConnected => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads one chunk: PSH to the client (dropped after its FIN), FIN at end of file.
    fn pump(&mut self, id: u32, events: &mut Vec<Event>) -> io::Result<()> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        match read_chunk(conn, MAX_READ)? {
            ReadResult::Data(data) if !self.client_fin => {
                events.push(output(encode_psh(id, &data)))
            }
            ReadResult::Data(_) | ReadResult::WouldBlock => {}
            ReadResult::Eof => self.send_fin(id, events),
        }
        Ok(())
    }

    fn send_fin(&mut self, id: u32, events: &mut Vec<Event>) {
        if !self.sent_fin {
            self.sent_fin = true;
            events.push(output(encode_control(Cmd::Fin, id)));
        }
    }

    /// Both directions are over.
    fn done(&self) -> bool {
        self.sent_fin && self.write_shut
    }
}

fn output(frames: Vec<u8>) -> Event {
    Event::Output(Output::Stdout(frames))
}

/// One non-blocking read of at most `max` bytes.
/// The multiplexed Port plugin: many TCP connections behind one smux session.
pub struct PortMux {
    dest: Destination,
    decoder: Decoder,
    streams: BTreeMap<u32, Stream>,
    mailbox: Mailbox,
    mail: Receiver<Mail>,
    wake: UnixStream,
    /// Dropping it stops the keep-alive thread.
    keepalive: Option<Sender<()>>,
    /// A SYN was refused for too many open streams (logged as a warning once).
    refused_any: bool,
    ended: bool,
}

impl PortMux {
    /// `keepalive`: send a NOP this often (for clients that time out a silent smux session).
    pub fn start(dest: Destination, keepalive: Option<Duration>) -> Result<PortMux, StartError> {
        let (wake, wake_tx) = UnixStream::pair().map_err(StartError::WakeSocket)?;
        for end in [&wake, &wake_tx] {
            end.set_nonblocking(true).map_err(StartError::WakeSocket)?;
        }
        let (tx, mail) = mpsc::channel();
        let mailbox = Mailbox {
            tx,
            wake: std::sync::Arc::new(wake_tx),
        };
        let keepalive = match keepalive {
            Some(every) => Some(spawn_keepalive(mailbox.clone(), every)?),
            None => None,
        };
        log::info!("session: multiplexed port forwarding to {}", dest.label);
        Ok(PortMux {
            dest,
            decoder: Decoder::default(),
            streams: BTreeMap::new(),
            mailbox,
            mail,
            wake,
            keepalive,
            refused_any: false,
            ended: false,
        })
    }

    fn end(&mut self, events: &mut Vec<Event>, how: Ended) {
        if !self.ended {
            self.stop();
            events.push(Event::End(how));
        }
    }

    fn frame(&mut self, frame: Frame, events: &mut Vec<Event>) {
        let id = frame.stream;
        match frame.cmd {
            Cmd::Syn => self.open(id, events),
            Cmd::Psh => match self.streams.get_mut(&id) {
                Some(s) if !s.client_fin => {
                    s.pending.push(&frame.data);
                    self.service(id, false, true, events);
                }
                _ => log::debug!("session: dropping data for closed smux stream {id}"),
            },
            Cmd::Fin => {
                if let Some(s) = self.streams.get_mut(&id) {
                    s.client_fin = true;
                    self.service(id, false, true, events);
                }
            }
            Cmd::Nop => {}
        }
    }

    /// A new client stream: connect on a helper thread so the session loop never waits.
    fn open(&mut self, id: u32, events: &mut Vec<Event>) {
        if self.streams.contains_key(&id) {
            return; // a repeated SYN, ignored as smux does
        }
        if self.streams.len() >= MAX_STREAMS {
            // Once per session: a client may send refused SYNs by the thousand.
            let level = if std::mem::replace(&mut self.refused_any, true) {
                log::Level::Debug
            } else {
                log::Level::Warn
            };
            log::log!(
                level,
                "session: refusing smux stream {id}: {MAX_STREAMS} connections to {} are open \
                 (further refusals are logged at debug level)",
                self.dest.label
            );
            return events.push(output(encode_control(Cmd::Fin, id)));
        }
        self.streams.insert(id, Stream::default());
        let mailbox = self.mailbox.clone();
        let dest = self.dest.clone();
        let spawned = std::thread::Builder::new()
            .name("port-connect".into())
            .spawn(move || {
                mailbox.post(Mail::Connected(id, connect(&dest)));
            });
        if let Err(source) = spawned {
            let label = self.dest.label.clone();
            let e = PortError::ConnectThread { label, source };
            self.connected(id, Err(e), events);
        }
    }

    fn connected(
        &mut self,
        id: u32,
        result: Result<TcpStream, PortError>,
        events: &mut Vec<Event>,
    ) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        match result {
            Ok(conn) => {
                log::debug!("session: smux stream {id} connected to {}", self.dest.label);
                s.conn = Some(conn);
                self.service(id, false, true, events);
            }
            Err(e) => {
                log::warn!("session: smux stream {id}: {e}");
                events.push(Event::Output(Output::ConnectError));
                events.push(output(encode_control(Cmd::Fin, id)));
                self.streams.remove(&id);
            }
        }
    }

    /// Moves stream `id`'s data and retires it when both directions are over or it failed.
    fn service(&mut self, id: u32, readable: bool, writable: bool, events: &mut Vec<Event>) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let mut moved = || -> io::Result<()> {
            if writable {
                s.flush()?;
            }
            if readable {
                s.pump(id, events)?;
            }
            Ok(())
        };
        if let Err(e) = moved() {
            log::info!("session: smux stream {id} to {}: {e}", self.dest.label);
            s.send_fin(id, events);
            self.streams.remove(&id);
        } else if s.done() {
            self.streams.remove(&id);
        }
    }

    fn read_mail(&mut self, events: &mut Vec<Event>) {
        let mut sink = [0u8; 64];
        while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
        while let Ok(mail) = self.mail.try_recv() {
            match mail {
                Mail::Connected(id, result) => self.connected(id, result, events),
                Mail::KeepAlive => events.push(output(encode_control(Cmd::Nop, 0))),
            }
        }
    }
}

/// Posts a keep-alive every `every` until the returned sender is dropped.
fn spawn_keepalive(mailbox: Mailbox, every: Duration) -> Result<Sender<()>, StartError> {
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("smux-keepalive".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                if !mailbox.post(Mail::KeepAlive) {
                    return;
                }
            }
        })
        .map_err(StartError::KeepAlive)?;
    Ok(stop)
}

impl Plugin for PortMux {
    fn interests(&self, reading: bool) -> Vec<Interest> {
        if self.ended {
            return Vec::new();
        }
        let mut all = vec![Interest {
            fd: self.wake.as_raw_fd(),
            read: true,
            write: false,
        }];
        all.extend(self.streams.values().filter_map(|s| {
            Some(Interest {
                fd: s.fd()?,
                // Dropped data (after the client's FIN) is read regardless of the client.
                read: !s.sent_fin && (reading || s.client_fin),
                write: !s.pending.is_empty(),
            })
        }));
        all
    }

    fn ready(&mut self, fd: RawFd, readable: bool, writable: bool, events: &mut Vec<Event>) {
        if self.ended {
            return;
        }
        if fd == self.wake.as_raw_fd() {
            return self.read_mail(events);
        }
        let id = self
            .streams
            .iter()
            .find_map(|(id, s)| (s.fd() == Some(fd)).then_some(*id));
        if let Some(id) = id {
            self.service(id, readable, writable, events);
        }
    }

    fn input(&mut self, input: Input<'_>, events: &mut Vec<Event>) {
        if self.ended {
            return;
        }
        match input {
            Input::Bytes(data) => {
                self.decoder.push(data);
                loop {
                    match self.decoder.next_frame() {
                        Ok(Some(frame)) => self.frame(frame, events),
                        Ok(None) => break,
                        Err(e) => return self.end(events, Ended::Failed(e.to_string())),
                    }
                }
            }
            Input::Terminate => self.end(events, Ended::Success),
            other => log::debug!("session: ignoring {other:?} in a multiplexed session"),
        }
    }

    /// All streams' unwritten data together is bounded, which bounds each stream's. One stream
    /// whose destination does not read holds up the others, as in smux v1 itself (its
    /// receive buffer is per session): the streams share one ordered input.
    fn wants_input(&self) -> bool {
        let pending: usize = self.streams.values().map(|s| s.pending.len()).sum();
        pending < PENDING_LIMIT
    }

    fn stop(&mut self) {
        self.ended = true;
        self.streams.clear();
        self.keepalive = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::datachannel::{self, payload_type};
    use crate::session::port::destination;
    use crate::sys::poll::{PollFd, poll};
    use std::collections::{HashMap, HashSet};
    use std::net::TcpListener;
    use std::time::Instant;

    fn decode_all(bytes: &[u8]) -> Vec<Frame> {
        let mut d = Decoder::default();
        d.push(bytes);
        std::iter::from_fn(|| d.next_frame().unwrap()).collect()
    }

    fn psh(stream: u32, data: &[u8]) -> Frame {
        Frame {
            cmd: Cmd::Psh,
            stream,
            data: data.to_vec(),
        }
    }

    fn control(cmd: Cmd, stream: u32) -> Frame {
        Frame {
            cmd,
            stream,
            data: Vec::new(),
        }
    }

    #[test]
    fn frames_round_trip_in_the_smux_v1_layout() {
        let syn = encode_control(Cmd::Syn, 0x0102_0304);
        assert_eq!(syn, [1, 0, 0, 0, 4, 3, 2, 1]);
        let hello = encode_psh(3, b"hello");
        assert_eq!(hello[..8], [1, 2, 5, 0, 3, 0, 0, 0]);
        let big: Vec<u8> = (0..MAX_DATA + 10).map(|i| (i % 251) as u8).collect();
        let mut wire = syn.clone();
        wire.extend(hello);
        wire.extend(encode_psh(5, &big));
        wire.extend(encode_control(Cmd::Nop, 0));
        wire.extend(encode_control(Cmd::Fin, 5));
        assert!(encode_psh(7, b"").is_empty());
        assert_eq!(
            decode_all(&wire),
            vec![
                control(Cmd::Syn, 0x0102_0304),
                psh(3, b"hello"),
                psh(5, &big[..MAX_DATA]),
                psh(5, &big[MAX_DATA..]),
                control(Cmd::Nop, 0),
                control(Cmd::Fin, 5),
            ]
        );
    }

    #[test]
    fn frames_fed_byte_by_byte_come_out_whole() {
        let mut wire = encode_control(Cmd::Syn, 1);
        wire.extend(encode_psh(1, b"abcdefgh"));
        wire.extend(encode_control(Cmd::Fin, 1));
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in &wire {
            d.push(std::slice::from_ref(b));
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(
            got,
            vec![
                control(Cmd::Syn, 1),
                psh(1, b"abcdefgh"),
                control(Cmd::Fin, 1)
            ]
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &[2u8, 0, 0, 0, 1, 0, 0, 0][..], // smux v2
            &[1, 4, 8, 0, 1, 0, 0, 0],       // UPD is v2 only
            &[1, 9, 0, 0, 1, 0, 0, 0],
            &[1, 0, 3, 0, 1, 0, 0, 0, 1, 2, 3], // SYN with data
            b"GET / HTTP/1.1\r\n",
        ] {
            let mut d = Decoder::default();
            d.push(bad);
            let e = d.next_frame().unwrap_err().to_string();
            assert!(e.contains("smux"), "{e}");
        }
        let mut d = Decoder::default();
        d.push(&[1, 2]);
        assert_eq!(d.next_frame(), Ok(None), "a partial header waits");
    }

    #[test]
    fn the_largest_length_waits_for_all_its_data() {
        let data = vec![7u8; MAX_DATA];
        let wire = encode_psh(9, &data);
        assert_eq!(wire[2..4], [0xFF, 0xFF]);
        let mut d = Decoder::default();
        d.push(&wire[..HEADER_LEN + 100]);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&wire[HEADER_LEN + 100..wire.len() - 1]);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&wire[wire.len() - 1..]);
        assert_eq!(d.next_frame(), Ok(Some(psh(9, &data))));
        assert_eq!(d.next_frame(), Ok(None));
    }

    /// The client side of a session: feeds frames to the plugin, drives it with poll as the
    /// session loop does, and decodes what it sends back.
    struct Client {
        mux: PortMux,
        received: HashMap<u32, Vec<u8>>,
        fins: HashSet<u32>,
        flags: Vec<Vec<u8>>,
        nops: usize,
        ended: Option<Ended>,
        messages: usize,
    }

    impl Client {
        fn new(port: u16, keepalive: Option<Duration>) -> Client {
            let dest = destination("127.0.0.1", &port.to_string(), &[]).unwrap();
            Client {
                mux: PortMux::start(dest, keepalive).unwrap(),
                received: HashMap::new(),
                fins: HashSet::new(),
                flags: Vec::new(),
                nops: 0,
                ended: None,
                messages: 0,
            }
        }

        /// Sends `wire` in 1 KiB messages, as the client does: frames span messages.
        fn send(&mut self, wire: &[u8]) {
            for piece in wire.chunks(CHUNK) {
                let mut events = Vec::new();
                self.mux.input(Input::Bytes(piece), &mut events);
                self.absorb(events);
            }
        }

        fn absorb(&mut self, events: Vec<Event>) {
            for event in events {
                match event {
                    Event::Output(Output::Stdout(bytes)) => {
                        self.messages += 1;
                        assert!(bytes.len() <= CHUNK, "message of {} bytes", bytes.len());
                        let frames = decode_all(&bytes);
                        let framed: usize = frames.iter().map(|f| HEADER_LEN + f.data.len()).sum();
                        assert_eq!(framed, bytes.len(), "messages carry whole frames");
                        for f in frames {
                            match f.cmd {
                                Cmd::Psh => {
                                    assert!(!self.fins.contains(&f.stream), "data after FIN");
                                    self.received.entry(f.stream).or_default().extend(f.data);
                                }
                                Cmd::Fin => assert!(self.fins.insert(f.stream), "second FIN"),
                                Cmd::Nop => self.nops += 1,
                                Cmd::Syn => panic!("the agent opened stream {}", f.stream),
                            }
                        }
                    }
                    Event::Output(other) => {
                        let (kind, bytes) = datachannel::output(other);
                        assert_eq!(kind, payload_type::FLAG, "unexpected payload type {kind}");
                        self.flags.push(bytes);
                    }
                    Event::End(how) => self.ended = Some(how),
                }
            }
        }

        /// One turn of the session loop.
        fn step(&mut self) {
            let mut fds: Vec<PollFd> = self
                .mux
                .interests(true)
                .iter()
                .filter(|i| i.read || i.write)
                .map(|i| PollFd::new(i.fd, i.read, i.write))
                .collect();
            poll(&mut fds, Some(Duration::from_millis(200))).unwrap();
            let mut events = Vec::new();
            for f in fds.iter().filter(|f| f.readable || f.writable) {
                self.mux.ready(f.fd, f.readable, f.writable, &mut events);
            }
            self.absorb(events);
        }

        fn run_until(&mut self, what: &str, done: impl Fn(&Client) -> bool) {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !done(self) {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                self.step();
            }
        }

        /// Only the wake-up socket is left: every stream is retired.
        fn idle(&self) -> bool {
            self.mux.interests(true).len() == 1
        }
    }

    /// Echoes each connection until EOF, then closes it.
    fn echo_server() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                std::thread::spawn(move || {
                    let mut reader = conn.try_clone().unwrap();
                    let _ = io::copy(&mut reader, &mut conn);
                });
            }
        });
        port
    }

    fn pattern(stream: u32, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8 ^ stream as u8)
            .collect()
    }

    #[test]
    fn ten_streams_each_echo_one_mebibyte() {
        const LEN: usize = 1 << 20;
        let mut client = Client::new(echo_server(), None);
        let ids: Vec<u32> = (0..10).map(|i| 2 * i + 1).collect();
        let sent: HashMap<u32, Vec<u8>> = ids.iter().map(|&id| (id, pattern(id, LEN))).collect();
        let mut wire = Vec::new();
        for &id in &ids {
            wire.extend(encode_control(Cmd::Syn, id));
        }
        client.send(&wire);
        let t0 = Instant::now();
        let mut offset = 0;
        // Interleave the streams in 4000-byte frames, a round at a time.
        while offset < LEN {
            let end = (offset + 4000).min(LEN);
            let mut wire = Vec::new();
            for &id in &ids {
                wire.extend(encode_psh(id, &sent[&id][offset..end]));
            }
            client.send(&wire);
            client.step();
            offset = end;
        }
        // The client's FIN closes its stream both ways (smux v1), so it waits for the echo.
        client.run_until("every echo", |c| {
            c.received.values().map(Vec::len).sum::<usize>() == 10 * LEN
        });
        let elapsed = t0.elapsed();
        let mut wire = Vec::new();
        for &id in &ids {
            wire.extend(encode_control(Cmd::Fin, id));
        }
        client.send(&wire);
        client.run_until("every stream's FIN", |c| c.fins.len() == ids.len());
        for &id in &ids {
            let got = client.received.get(&id).map_or(0, Vec::len);
            assert_eq!(got, LEN, "stream {id} echoed {got} bytes");
            assert!(
                client.received[&id] == sent[&id],
                "stream {id}: bytes differ"
            );
        }
        client.run_until("all streams retired", Client::idle);
        assert!(client.flags.is_empty() && client.ended.is_none());
        eprintln!(
            "10 x 1 MiB echoed in {elapsed:?} ({} output messages)",
            client.messages
        );
    }

    #[test]
    fn client_fin_ends_the_destination_write_side() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let read = conn.read_to_end(&mut got).map(|_| got); // returns at EOF only
            conn.write_all(b"late").unwrap();
            tx.send(read.unwrap()).unwrap();
        });
        let mut client = Client::new(port, None);
        let mut wire = encode_control(Cmd::Syn, 1);
        wire.extend(encode_psh(1, b"request"));
        wire.extend(encode_control(Cmd::Fin, 1));
        client.send(&wire);
        let mut server_got = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while server_got.is_none() {
            assert!(Instant::now() < deadline, "the destination never saw EOF");
            client.step();
            server_got = rx.try_recv().ok();
        }
        assert_eq!(server_got.unwrap(), b"request");
        // The destination closes after answering: FIN goes out, the answer is dropped (the
        // client closed its stream), and the stream is retired.
        client.run_until("FIN after the destination closed", |c| c.fins.contains(&1));
        assert!(
            !client.received.contains_key(&1),
            "data after the client's FIN"
        );
        client.run_until("the stream retired", Client::idle);
    }

    #[test]
    fn destination_close_sends_fin_and_the_client_fin_retires_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.write_all(b"bye").unwrap();
            conn.shutdown(Shutdown::Write).unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).unwrap();
            tx.send(got).unwrap();
        });
        let mut client = Client::new(port, None);
        client.send(&encode_control(Cmd::Syn, 3));
        client.run_until("FIN from the agent", |c| c.fins.contains(&3));
        assert_eq!(client.received[&3], b"bye");
        assert!(
            !client.idle(),
            "the stream stays writable until the client's FIN"
        );
        let mut wire = encode_psh(3, b"still writable");
        wire.extend(encode_control(Cmd::Fin, 3));
        client.send(&wire);
        client.run_until("the stream retired", Client::idle);
        let got = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(got, b"still writable");
        // Frames for a retired stream are dropped, not errors.
        client.send(&encode_psh(3, b"ignored"));
        assert!(client.ended.is_none());
    }

    #[test]
    fn refused_connection_reports_the_flag_and_fin() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut client = Client::new(port, None);
        client.send(&encode_control(Cmd::Syn, 5));
        client.run_until("FIN for the refused stream", |c| c.fins.contains(&5));
        assert_eq!(client.flags, vec![vec![0, 0, 0, 3]]);
        assert!(client.idle());
    }

    #[test]
    fn keepalive_sends_nops_and_client_nops_are_ignored() {
        let mut client = Client::new(echo_server(), Some(Duration::from_millis(20)));
        client.send(&encode_control(Cmd::Nop, 0));
        client.run_until("two NOPs", |c| c.nops >= 2);
        assert!(client.ended.is_none());
    }

    #[test]
    fn protocol_errors_and_terminate_end_the_session() {
        let mut client = Client::new(echo_server(), None);
        client.send(&[2, 0, 0, 0, 1, 0, 0, 0]);
        assert!(
            matches!(&client.ended, Some(Ended::Failed(e)) if e.contains("version 2")),
            "{:?}",
            client.ended
        );
        assert!(client.mux.interests(true).is_empty());

        let mut client = Client::new(echo_server(), None);
        let mut events = Vec::new();
        client.mux.input(Input::Terminate, &mut events);
        assert_eq!(events, vec![Event::End(Ended::Success)]);
    }
}
