//! `AWS:Network`: every interface but loopback, from getifaddrs (the kernel's, whatever the
//! test root: interfaces are not files). Upstream's Unix gatherer keeps only the last address of
//! each family; like its Windows gatherer, this one reports them all, comma-joined.

use super::{Entry, GatherError, Host, entry_of};
use crate::sys::net::{Interface, interfaces};
use std::fmt::Write;
use std::net::IpAddr;

/// At most this many interfaces are reported (a host with thousands of veths still uploads).
const MAX_INTERFACES: usize = 1000;

pub(super) fn gather(_host: &Host<'_>) -> Result<Vec<Entry>, GatherError> {
    let all =
        interfaces().map_err(|e| GatherError(format!("cannot list network interfaces: {e}")))?;
    Ok(all
        .iter()
        .filter(|i| !i.loopback)
        .take(MAX_INTERFACES)
        .map(entry)
        .collect())
}

fn entry(i: &Interface) -> Entry {
    let join = |v4: bool| {
        let ips: Vec<String> = i
            .addrs
            .iter()
            .filter(|a| matches!(a, IpAddr::V4(_)) == v4)
            .map(IpAddr::to_string)
            .collect();
        ips.join(",")
    };
    entry_of(&[
        ("Name", &i.name),
        ("MacAddress", &mac(&i.mac)),
        ("IPV4", &join(true)),
        ("IPV6", &join(false)),
    ])
}

/// Go's `HardwareAddr.String()`: lower-case hex bytes joined by colons.
fn mac(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (n, b) in bytes.iter().enumerate() {
        if n > 0 {
            s.push(':');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_join_each_family_and_format_the_mac() {
        let i = Interface {
            name: "eth0".into(),
            loopback: false,
            mac: vec![0x02, 0xab, 0, 0x10, 0xff, 0x0c],
            addrs: vec![
                "10.0.0.5".parse().unwrap(),
                "fe80::1".parse().unwrap(),
                "192.168.1.2".parse().unwrap(),
                "2001:db8::7".parse().unwrap(),
            ],
        };
        let e = entry(&i);
        assert_eq!(e["Name"], "eth0");
        assert_eq!(e["MacAddress"], "02:ab:00:10:ff:0c");
        assert_eq!(e["IPV4"], "10.0.0.5,192.168.1.2");
        assert_eq!(e["IPV6"], "fe80::1,2001:db8::7");
        assert_eq!(
            e.len(),
            4,
            "no SubnetMask, Gateway, DHCPServer, DNSServer: {e:?}"
        );
    }

    #[test]
    fn this_machine_lists_its_interfaces_but_not_loopback() {
        let host = Host {
            root: std::path::Path::new("/"),
            agent_version: "1",
        };
        let names: Vec<String> = gather(&host)
            .unwrap()
            .into_iter()
            .map(|e| e["Name"].clone())
            .collect();
        assert!(!names.iter().any(|n| n == "lo"), "{names:?}");
        let others = std::fs::read_dir("/sys/class/net")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "lo")
            .count();
        if others > 0 {
            assert!(
                !names.is_empty(),
                "the machine has {others} interface(s) besides lo"
            );
        }
    }
}
