//! `--allow-from CIDR`: which peers may talk to the server at all. Anyone else gets 403
//! before the request is looked at further (before authentication and before any file
//! system access).
//!
//! An IPv4 peer reaching a dual-stack (`::`) socket shows up as an IPv4-mapped IPv6
//! address (`::ffff:192.0.2.1`); it is matched as the IPv4 address it is. Peers over a
//! unix socket have no address: they are always allowed (whoever can open the socket file
//! is already trusted by its permissions, `--mode`).

use std::net::IpAddr;

/// One `--allow-from` network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask(
                u32::from(net).into(),
                u32::from(ip).into(),
                self.prefix_len,
                32,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(net), u128::from(ip), self.prefix_len, 128)
            }
            _ => false,
        }
    }
}

/// Whether the peer may be served: no list, no address (unix socket), or inside one of the
/// networks.
pub fn allowed(networks: &[Cidr], peer: Option<IpAddr>) -> bool {
    match peer {
        _ if networks.is_empty() => true,
        None => true,
        Some(ip) => networks.iter().any(|n| n.contains(ip)),
    }
}

/// Parses `192.0.2.0/24`, `2001:db8::/32`, or a single address (`/32` or `/128`). Bits
/// set past the prefix are refused (`10.0.0.1/8` is most likely a typo).
pub fn parse_cidr(value: &str) -> Result<Cidr, String> {
    let (addr, len) = match value.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (value, None),
    };
    let network: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    let network = canonical(network);
    let max = if network.is_ipv4() { 32 } else { 128 };
    let prefix_len = match len {
        None => max,
        Some(len) => len
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| format!("{len:?} is not a prefix length from 0 to {max}"))?,
    };
    let cidr = Cidr {
        network,
        prefix_len,
    };
    if !cidr.contains(network) || host_bits(network, prefix_len) {
        return Err(format!(
            "{value}: bits are set past the /{prefix_len} prefix"
        ));
    }
    Ok(cidr)
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn mask(net: u128, ip: u128, prefix_len: u8, bits: u8) -> bool {
    let shift = u32::from(bits - prefix_len);
    let net = net.checked_shr(shift).unwrap_or(0);
    let ip = ip.checked_shr(shift).unwrap_or(0);
    net == ip
}

fn host_bits(ip: IpAddr, prefix_len: u8) -> bool {
    let (value, bits) = match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    };
    let host = u32::from(bits - prefix_len);
    let low = if host == 128 {
        u128::MAX
    } else {
        (1u128 << host) - 1
    };
    value & low != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        let net = parse_cidr("192.168.1.0/24").unwrap();
        assert!(net.contains(ip("192.168.1.7")));
        assert!(!net.contains(ip("192.168.2.7")));
        assert!(net.contains(ip("::ffff:192.168.1.7")), "IPv4-mapped");
        assert!(!net.contains(ip("2001:db8::1")));
        let v6 = parse_cidr("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::5")));
        assert!(!v6.contains(ip("10.0.0.1")));
    }

    #[test]
    fn single_addresses_and_everything() {
        let one = parse_cidr("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")));
        assert!(!one.contains(ip("127.0.0.2")));
        assert!(parse_cidr("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(parse_cidr("::/0").unwrap().contains(ip("::1")));
        assert!(parse_cidr("::1").unwrap().contains(ip("::1")));
        assert_eq!(parse_cidr("::ffff:10.0.0.0/8"), parse_cidr("10.0.0.0/8"));
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0.1/8",
            "x/8",
            "10.0.0.0/",
            "::/129",
            "10.0.0.0/-1",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unix_peers_and_empty_lists_are_allowed() {
        let nets = [parse_cidr("10.0.0.0/8").unwrap()];
        assert!(allowed(&nets, None));
        assert!(allowed(&[], Some(ip("8.8.8.8"))));
        assert!(allowed(&nets, Some(ip("10.1.2.3"))));
        assert!(!allowed(&nets, Some(ip("11.1.2.3"))));
    }
}
