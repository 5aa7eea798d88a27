//! `Port` sessions (docs/protocol.md §4.7): bytes between the client and `host:portNumber` on this host's
//! network. Basic mode carries one TCP connection; Flag messages from the client disconnect it
//! (the next input reconnects) or end the session.
//!
//! Destinations in `Mgs.DeniedPortForwardingRemoteIPs` (addresses or CIDR blocks; by default the
//! instance metadata, DNS and time addresses) and, on EC2, the VPC's reserved addresses are
//! refused. The check is on what the name resolves to, every address of it, each in canonical
//! form (an IPv4-mapped or -compatible IPv6 address is its IPv4 address; an unspecified one is
//! the loopback address `connect` reaches), and the session connects only to those checked
//! addresses, never resolving the name again: no other spelling and no DNS answer that changes
//! between check and connect reaches a denied address.

use super::plugin::{
    CHUNK, Ended, Event, Input, Interest, Output, Pending, Plugin, ReadResult, read_chunk,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a Port session cannot reach its destination; the text is shown to the client.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("Port session needs a portNumber")]
    NoPort,
    #[error("invalid portNumber {0:?}")]
    BadPort(String),
    #[error("cannot resolve {label}: {source}")]
    Resolve {
        label: String,
        source: std::io::Error,
    },
    /// The refusal reads as upstream's.
    #[error("Forwarding to IP address {0} is forbidden.")]
    Forbidden(String),
    #[error("{0} resolves to no address")]
    NoAddress(String),
    #[error("cannot make the connection to {label} non-blocking: {source}")]
    NonBlocking {
        label: String,
        source: std::io::Error,
    },
    /// `last`: the last address tried and why it failed.
    #[error("cannot connect to {label} ({last})")]
    Connect { label: String, last: String },
    #[error("cannot start a thread to connect to {label}: {source}")]
    ConnectThread {
        label: String,
        source: std::io::Error,
    },
}

/// Where a Port session goes, resolved and checked: `addrs` are canonical and allowed.
#[derive(Debug, Clone)]
pub struct Destination {
    pub addrs: Vec<SocketAddr>,
    pub label: String,
}

/// Resolves `host:port` (host defaults to localhost) and refuses it when any address it resolves
/// to is in `denied` (addresses and CIDR blocks; entries that are neither are skipped, and
/// reported once at start by [`DenyList::parse`]'s caller). The refusal reads as upstream's.
pub fn destination(host: &str, port: &str, denied: &[String]) -> Result<Destination, PortError> {
    if port.trim().is_empty() {
        return Err(PortError::NoPort);
    }
    let port: u16 = port
        .trim()
        .parse()
        .map_err(|_| PortError::BadPort(port.to_string()))?;
    let host = if host.trim().is_empty() {
        "localhost"
    } else {
        host.trim()
    };
    let resolved = (host, port)
        .to_socket_addrs()
        .map_err(|source| PortError::Resolve {
            label: format!("{host}:{port}"),
            source,
        })?;
    checked(host, port, resolved, denied)
}

/// The destination of the addresses `host` resolved to, in canonical form, unless any of them is
/// denied.
fn checked(
    host: &str,
    port: u16,
    resolved: impl Iterator<Item = SocketAddr>,
    denied: &[String],
) -> Result<Destination, PortError> {
    let label = format!("{host}:{port}");
    let addrs: Vec<SocketAddr> = resolved
        // An address already canonical is kept whole: a link-local IPv6 one keeps its scope id.
        .map(|a| match canonical(a.ip()) {
            ip if ip == a.ip() => a,
            ip => SocketAddr::new(ip, a.port()),
        })
        .collect();
    let (denied, _) = DenyList::parse(denied);
    for addr in &addrs {
        if let Some(entry) = denied.matching(addr.ip()) {
            log::warn!(
                "session: port forwarding to {label} refused: it resolves to {}, which {entry} denies",
                addr.ip()
            );
            return Err(PortError::Forbidden(host.to_string()));
        }
    }
    if addrs.is_empty() {
        return Err(PortError::NoAddress(label));
    }
    Ok(Destination { addrs, label })
}

/// The address a connection to `ip` really reaches, in the form deny entries are compared in.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => canonical(IpAddr::V4(v4)),
            // `::a.b.c.d` (IPv4-compatible, deprecated); `::1` is IPv6's own loopback.
            None if v6.segments()[..6] == [0; 6] && !v6.is_loopback() => {
                IpAddr::V4(Ipv4Addr::from(v6.to_bits() as u32))
            }
            None => IpAddr::V6(v6),
        },
    }
}

/// Denied networks, each a canonical address and a prefix length (an address: the full length).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DenyList(Vec<(IpAddr, u8)>);

impl DenyList {
    /// Parses `a.b.c.d`, `a.b.c.d/n`, IPv6 addresses and `addr/n` for IPv6. Entries that are none
    /// of these come back apart, to be reported.
    pub fn parse(entries: &[String]) -> (DenyList, Vec<String>) {
        let mut list = DenyList::default();
        let mut bad = Vec::new();
        for entry in entries {
            match parse_net(entry.trim()) {
                Some(net) => list.0.push(net),
                None => bad.push(entry.clone()),
            }
        }
        (list, bad)
    }

    /// The entry that denies `ip` (compared in canonical form), shown as written in CIDR form.
    pub fn matching(&self, ip: IpAddr) -> Option<String> {
        let ip = canonical(ip);
        self.0
            .iter()
            .find(|(net, len)| in_net(ip, *net, *len))
            .map(|(net, len)| format!("{net}/{len}"))
    }
}

fn parse_net(entry: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match entry.split_once('/') {
        Some((addr, len)) => (addr, Some(len.parse::<u8>().ok()?)),
        None => (entry, None),
    };
    let raw: IpAddr = addr.parse().ok()?;
    let ip = canonical(raw);
    // A prefix written for the IPv6 form of an IPv4 address counts the 96 bits before it.
    let shift = if raw.is_ipv6() && ip.is_ipv4() { 96 } else { 0 };
    let full = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => full,
        Some(len) => len.checked_sub(shift).filter(|l| *l <= full)?,
    };
    Some((ip, len))
}

fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    let mask = |bits: u32| u128::MAX.checked_shl(bits - u32::from(len)).unwrap_or(0);
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            (u128::from(a.to_bits()) ^ u128::from(n.to_bits())) & mask(32) & 0xffff_ffff == 0
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => (a.to_bits() ^ n.to_bits()) & mask(128) == 0,
        _ => false,
    }
}

/// The addresses AWS keeps for itself in each of the VPC's CIDR blocks `cidrs` (network address,
/// router, DNS, reserved, and the last one), as upstream adds them to the deny list. Blocks that
/// do not parse are skipped.
pub fn vpc_reserved(cidrs: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (net, len) in cidrs.iter().filter_map(|c| parse_net(c.trim())) {
        let (bits, width) = match net {
            IpAddr::V4(v4) => (u128::from(v4.to_bits()), 32),
            IpAddr::V6(v6) => (v6.to_bits(), 128),
        };
        let host_bits = width - u32::from(len);
        let host_mask = u128::MAX.checked_shr(128 - host_bits).unwrap_or(0);
        let base = bits & !host_mask;
        let addr = |b: u128| match net {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from_bits(b as u32)).to_string(),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from_bits(b)).to_string(),
        };
        out.extend((0..4).map(|i| addr(base | (i & host_mask))));
        out.push(addr(base | host_mask));
    }
    out
}

/// Tries the destination's addresses in order; the connection comes back non-blocking.
pub fn connect(dest: &Destination) -> Result<TcpStream, PortError> {
    let mut last = String::from("no address");
    for addr in &dest.addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(conn) => {
                conn.set_nonblocking(true)
                    .map_err(|source| PortError::NonBlocking {
                        label: dest.label.clone(),
                        source,
                    })?;
                let _ = conn.set_nodelay(true);
                return Ok(conn);
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(PortError::Connect {
        label: dest.label.clone(),
        last,
    })
}

/// Basic mode: one TCP connection at a time.
pub struct Port {
    dest: Destination,
    conn: Option<TcpStream>,
    input: Pending,
    ended: bool,
}

impl Port {
    pub fn start(dest: Destination) -> Result<Port, PortError> {
        let mut port = Port {
            dest,
            conn: None,
            input: Pending::default(),
            ended: false,
        };
        port.connect()?;
        Ok(port)
    }

    fn connect(&mut self) -> Result<(), PortError> {
        self.conn = Some(connect(&self.dest)?);
        log::info!("session: connected to {}", self.dest.label);
        Ok(())
    }

    fn end(&mut self, events: &mut Vec<Event>, how: Ended) {
        if !self.ended {
            self.ended = true;
            self.conn = None;
            events.push(Event::End(how));
        }
    }
}

impl Plugin for Port {
    fn interests(&self, reading: bool) -> Vec<Interest> {
        match (&self.conn, self.ended) {
            (Some(c), false) => vec![Interest {
                fd: c.as_raw_fd(),
                read: reading,
                write: !self.input.is_empty(),
            }],
            _ => Vec::new(),
        }
    }

    fn ready(&mut self, _fd: i32, readable: bool, writable: bool, events: &mut Vec<Event>) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if writable && let Err(e) = self.input.write_to(conn) {
            log::info!("session: write to {} failed: {e}", self.dest.label);
            return self.end(events, Ended::Success);
        }
        if !readable {
            return;
        }
        match read_chunk(conn, CHUNK) {
            Ok(ReadResult::Data(data)) => events.push(Event::Output(Output::Stdout(data))),
            Ok(ReadResult::WouldBlock) => {}
            // The server closed: in basic mode that ends the forwarded connection, and the session.
            Ok(ReadResult::Eof) | Err(_) => self.end(events, Ended::Success),
        }
    }

    fn input(&mut self, input: Input<'_>, events: &mut Vec<Event>) {
        match input {
            Input::Bytes(data) => {
                if self.conn.is_none()
                    && let Err(e) = self.connect()
                {
                    return self.end(events, Ended::Failed(e.to_string()));
                }
                self.input.push(data);
                if let Some(conn) = self.conn.as_mut()
                    && let Err(e) = self.input.write_to(conn)
                {
                    log::info!("session: write to {} failed: {e}", self.dest.label);
                }
            }
            Input::DisconnectPort => {
                self.conn = None;
                self.input = Pending::default();
            }
            Input::Terminate => self.end(events, Ended::Success),
            other => log::debug!("session: ignoring {other:?} in a port session"),
        }
    }

    fn wants_input(&self) -> bool {
        self.input.has_room()
    }

    fn stop(&mut self) {
        self.conn = None;
        self.ended = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_addresses_are_refused_after_resolution() {
        let denied = vec!["127.0.0.1".to_owned()];
        let e = destination("localhost", "22", &denied)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "Forwarding to IP address localhost is forbidden.");
        assert!(
            destination("127.0.0.1", "", &[])
                .unwrap_err()
                .to_string()
                .contains("portNumber")
        );
        assert!(destination("127.0.0.1", "http", &[]).is_err());
        let ok = destination("", "8080", &[]).unwrap();
        assert!(ok.addrs.iter().any(|a| a.ip().is_loopback()));
    }

    #[test]
    fn other_spellings_of_a_denied_address_are_refused() {
        let denied = vec!["127.0.0.1".to_owned(), "169.254.169.254".to_owned()];
        for host in [
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::127.0.0.1",
            "0:0:0:0:0:ffff:a9fe:a9fe",
            "0.0.0.0",
            "::ffff:0.0.0.0",
            "2852039166",
            "0251.0376.0251.0376",
        ] {
            let e = destination(host, "80", &denied).unwrap_err().to_string();
            assert_eq!(e, format!("Forwarding to IP address {host} is forbidden."));
        }
        let ok = destination("::ffff:127.0.0.2", "80", &denied).unwrap();
        assert_eq!(
            ok.addrs,
            ["127.0.0.2:80".parse().unwrap()],
            "connects as IPv4"
        );
        assert!(
            destination("::1", "80", &denied).is_ok(),
            "IPv6 loopback is not 127.0.0.1"
        );
    }

    #[test]
    fn cidr_entries_deny_their_whole_block_in_either_form() {
        let list =
            |e: &[&str]| DenyList::parse(&e.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let (denied, bad) = list(&[
            "10.1.0.0/16",
            "fd00:ec2::/32",
            "::ffff:192.168.0.0/112",
            "x",
            "1.2.3.4/33",
        ]);
        assert_eq!(bad, ["x", "1.2.3.4/33"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            denied.matching(ip("10.1.200.7")).as_deref(),
            Some("10.1.0.0/16")
        );
        assert_eq!(
            denied.matching(ip("::ffff:10.1.0.1")).as_deref(),
            Some("10.1.0.0/16")
        );
        assert_eq!(denied.matching(ip("10.2.0.1")), None);
        assert!(denied.matching(ip("fd00:ec2::254")).is_some());
        assert!(denied.matching(ip("fd00:ec3::254")).is_none());
        assert!(denied.matching(ip("192.168.77.1")).is_some());
        assert!(denied.matching(ip("192.169.0.1")).is_none());
        let (all, _) = list(&["0.0.0.0/0"]);
        assert!(all.matching(ip("8.8.8.8")).is_some());
        assert!(all.matching(ip("2001:db8::1")).is_none());
    }

    #[test]
    fn a_name_is_refused_when_any_of_its_addresses_is_denied() {
        let resolved: Vec<SocketAddr> = [
            "192.0.2.1:443",
            "[::ffff:198.51.100.7]:443",
            "[2001:db8::5]:443",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let name = |denied: &[&str]| {
            let denied: Vec<String> = denied.iter().map(|d| d.to_string()).collect();
            checked("svc.example", 443, resolved.iter().copied(), &denied)
        };
        for denied in ["192.0.2.1", "198.51.100.0/24", "2001:db8::/32"] {
            let e = name(&[denied]).unwrap_err().to_string();
            assert_eq!(
                e, "Forwarding to IP address svc.example is forbidden.",
                "{denied}"
            );
        }
        let ok = name(&["203.0.113.1"]).unwrap();
        let want: Vec<SocketAddr> = ["192.0.2.1:443", "198.51.100.7:443", "[2001:db8::5]:443"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(
            ok.addrs, want,
            "every address kept, canonical, in order, for connect"
        );
        assert_eq!(ok.label, "svc.example:443");
        assert!(checked("none.example", 1, std::iter::empty(), &[]).is_err());
    }

    #[test]
    fn the_vpc_reserved_addresses_are_the_first_four_and_the_last() {
        let got = vpc_reserved(&[
            "172.31.0.0/16".into(),
            "2600:1f18:aaa:bb00::/56".into(),
            "junk".into(),
        ]);
        assert_eq!(
            got,
            [
                "172.31.0.0",
                "172.31.0.1",
                "172.31.0.2",
                "172.31.0.3",
                "172.31.255.255",
                "2600:1f18:aaa:bb00::",
                "2600:1f18:aaa:bb00::1",
                "2600:1f18:aaa:bb00::2",
                "2600:1f18:aaa:bb00::3",
                "2600:1f18:aaa:bbff:ffff:ffff:ffff:ffff",
            ]
        );
        assert_eq!(
            vpc_reserved(&["10.0.0.9/24".into()])[2],
            "10.0.0.2",
            "from the block's base"
        );
    }
}
