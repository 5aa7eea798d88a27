//! `Port` sessions (protocol §4.7): bytes between the client and `host:portNumber` on this host's
//! network. Basic mode carries one TCP connection; Flag messages from the client disconnect it
//! (the next input reconnects) or end the session. Destinations in
//! `Mgs.DeniedPortForwardingRemoteIPs` (the instance metadata and DNS addresses by default) are
//! refused, after name resolution, so a session cannot reach them under another name.

use super::datachannel::payload_type;
use super::plugin::{CHUNK, Ended, Event, Interest, Pending, Plugin, ReadResult, read_chunk};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Flag values (§4.6.1).
pub const FLAG_DISCONNECT_TO_PORT: u32 = 1;
pub const FLAG_TERMINATE_SESSION: u32 = 2;
pub const FLAG_CONNECT_TO_PORT_ERROR: u32 = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a Port session goes, resolved and checked.
#[derive(Debug, Clone)]
pub struct Destination {
    pub addrs: Vec<SocketAddr>,
    pub label: String,
}

/// Resolves `host:port` (host defaults to localhost) and refuses denied addresses.
pub fn destination(host: &str, port: &str, denied: &[String]) -> Result<Destination, String> {
    if port.trim().is_empty() {
        return Err("Port session needs a portNumber".into());
    }
    let port: u16 = port
        .trim()
        .parse()
        .map_err(|_| format!("invalid portNumber {port:?}"))?;
    let host = if host.trim().is_empty() {
        "localhost"
    } else {
        host.trim()
    };
    let label = format!("{host}:{port}");
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {label}: {e}"))?
        .collect();
    let denied: Vec<IpAddr> = denied.iter().filter_map(|d| d.parse().ok()).collect();
    if let Some(bad) = addrs.iter().find(|a| denied.contains(&a.ip())) {
        return Err(format!(
            "Port forwarding to {label} ({}) is not allowed: the address is in Mgs.DeniedPortForwardingRemoteIPs",
            bad.ip()
        ));
    }
    if addrs.is_empty() {
        return Err(format!("{label} resolves to no address"));
    }
    Ok(Destination { addrs, label })
}

/// Tries the destination's addresses in order; the connection comes back non-blocking.
pub fn connect(dest: &Destination) -> Result<TcpStream, String> {
    let mut last = String::from("no address");
    for addr in &dest.addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(conn) => {
                conn.set_nonblocking(true).map_err(|e| {
                    format!(
                        "cannot make the connection to {} non-blocking: {e}",
                        dest.label
                    )
                })?;
                let _ = conn.set_nodelay(true);
                return Ok(conn);
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(format!("cannot connect to {} ({last})", dest.label))
}

/// Basic mode: one TCP connection at a time.
pub struct Port {
    dest: Destination,
    conn: Option<TcpStream>,
    input: Pending,
    ended: bool,
}

impl Port {
    pub fn start(dest: Destination) -> Result<Port, String> {
        let mut port = Port {
            dest,
            conn: None,
            input: Pending::default(),
            ended: false,
        };
        port.connect()?;
        Ok(port)
    }

    fn connect(&mut self) -> Result<(), String> {
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
        if writable {
            if let Err(e) = self.input.write_to(conn) {
                log::info!("session: write to {} failed: {e}", self.dest.label);
                return self.end(events, Ended::Success);
            }
        }
        if !readable {
            return;
        }
        match read_chunk(conn, CHUNK) {
            Ok(ReadResult::Data(data)) => events.push(Event::Output(payload_type::OUTPUT, data)),
            Ok(ReadResult::WouldBlock) => {}
            // The server closed: in basic mode that ends the forwarded connection, and the session.
            Ok(ReadResult::Eof) | Err(_) => self.end(events, Ended::Success),
        }
    }

    fn input(&mut self, kind: u32, data: &[u8], events: &mut Vec<Event>) {
        match kind {
            payload_type::OUTPUT => {
                if self.conn.is_none() {
                    if let Err(e) = self.connect() {
                        return self.end(events, Ended::Failed(e));
                    }
                }
                self.input.push(data);
                if let Some(conn) = self.conn.as_mut() {
                    if let Err(e) = self.input.write_to(conn) {
                        log::info!("session: write to {} failed: {e}", self.dest.label);
                    }
                }
            }
            payload_type::FLAG => match data.try_into().map(u32::from_be_bytes) {
                Ok(FLAG_DISCONNECT_TO_PORT) => {
                    self.conn = None;
                    self.input = Pending::default();
                }
                Ok(FLAG_TERMINATE_SESSION) => self.end(events, Ended::Success),
                other => log::debug!("session: ignoring flag {other:?}"),
            },
            other => log::debug!("session: ignoring input of payload type {other}"),
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
        let e = destination("localhost", "22", &denied).unwrap_err();
        assert!(e.contains("not allowed"), "{e}");
        assert!(
            destination("127.0.0.1", "", &[])
                .unwrap_err()
                .contains("portNumber")
        );
        assert!(destination("127.0.0.1", "http", &[]).is_err());
        let ok = destination("", "8080", &[]).unwrap();
        assert!(ok.addrs.iter().any(|a| a.ip().is_loopback()));
    }
}
