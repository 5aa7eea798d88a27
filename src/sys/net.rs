//! Network interfaces with their names, hardware addresses and IP addresses (getifaddrs).

use super::{IfAddrs, sockaddr_ip};
use std::ffi::CStr;
use std::io;
use std::net::IpAddr;

/// One interface as the kernel lists it, up or down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub loopback: bool,
    /// The link-layer address; empty when the link has none or it is all zeros (as Go's
    /// `net.Interface` leaves `HardwareAddr` empty then).
    pub mac: Vec<u8>,
    /// Addresses in the kernel's order.
    pub addrs: Vec<IpAddr>,
}

/// Link-layer addresses longer than this (InfiniBand's 20 bytes is the longest) are cut.
const MAX_MAC: usize = 32;

/// Every interface, in the order getifaddrs first names it (interface index order).
pub fn interfaces() -> io::Result<Vec<Interface>> {
    let list = IfAddrs::new()?;
    let mut out: Vec<Interface> = Vec::new();
    let mut cur = list.0;
    while !cur.is_null() {
        // SAFETY: `cur` is a non-null node of the list getifaddrs built; it lives until `list` drops.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_string_lossy();
        let at = match out.iter().position(|i| i.name == name) {
            Some(at) => at,
            None => {
                out.push(Interface {
                    name: name.into_owned(),
                    loopback: ifa.ifa_flags & libc::IFF_LOOPBACK as libc::c_uint != 0,
                    mac: Vec::new(),
                    addrs: Vec::new(),
                });
                out.len() - 1
            }
        };
        // SAFETY: ifa_addr is null or points to a sockaddr of the family it names, owned by the list.
        if let Some(addr) = unsafe { sockaddr_ip(ifa.ifa_addr) } {
            out[at].addrs.push(addr);
        // SAFETY: as above.
        } else if let Some(mac) = unsafe { sockaddr_mac(ifa.ifa_addr) } {
            out[at].mac = mac;
        }
    }
    Ok(out)
}

/// The hardware address in `sa` if it is a non-zero AF_PACKET (`sockaddr_ll`) address.
///
/// # Safety
/// `sa` must be null or point to a valid socket address whose storage matches its `sa_family`.
unsafe fn sockaddr_mac(sa: *const libc::sockaddr) -> Option<Vec<u8>> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees a valid sockaddr; sa_family is its common first field.
    if libc::c_int::from(unsafe { (*sa).sa_family }) != libc::AF_PACKET {
        return None;
    }
    // SAFETY: family AF_PACKET means the storage is a sockaddr_ll.
    let sll = unsafe { &*sa.cast::<libc::sockaddr_ll>() };
    let len = usize::from(sll.sll_halen)
        .min(sll.sll_addr.len())
        .min(MAX_MAC);
    let mac = &sll.sll_addr[..len];
    mac.iter().any(|&b| b != 0).then(|| mac.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_and_marked() {
        let all = interfaces().unwrap();
        let lo = all.iter().find(|i| i.name == "lo").expect("lo listed");
        assert!(lo.loopback);
        assert!(lo.mac.is_empty(), "lo's all-zero address is dropped");
        assert!(
            lo.addrs
                .contains(&IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
        );
        let sys: Vec<String> = std::fs::read_dir("/sys/class/net")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        for i in &all {
            assert!(
                sys.contains(&i.name),
                "{} not in /sys/class/net {sys:?}",
                i.name
            );
        }
    }
}
