//! What the section validators share: the names a lab may use (lab, bridge, port,
//! interface, namespace), IPv4 network arithmetic, MACs, and how messages name a
//! bridge, port or service whose name could not be read.

use std::net::Ipv4Addr;

use crate::model::Proto;
use crate::reader::q;

pub(crate) fn port_label(name: Option<&str>) -> String {
    name.map_or_else(|| "another port".to_string(), |n| format!("port {}", q(n)))
}

pub(crate) fn bridge_label(name: Option<&str>) -> String {
    name.map_or_else(
        || "another bridge".to_string(),
        |n| format!("bridge {}", q(n)),
    )
}

pub(crate) fn service_label(name: Option<&str>) -> String {
    name.map_or_else(
        || "another service".to_string(),
        |n| format!("service {}", q(n)),
    )
}

pub(crate) fn proto_name(p: Option<Proto>) -> &'static str {
    match p {
        Some(Proto::Tcp) => "tcp",
        Some(Proto::Udp) => "udp",
        None => "",
    }
}

/// 1..=max characters of [A-Za-z0-9_.-].
pub(crate) fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A Linux interface name: 1..=15 bytes, no '/', ':', '%' (the kernel reads "eth%d" as
/// a template and picks a name of its own) or whitespace, not "." or "..".
pub(crate) fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s
            .chars()
            .any(|c| c == '/' || c == ':' || c == '%' || c == '\0' || c.is_whitespace())
}

/// Why an interface name that is valid cannot be a port's or a mirror's: `lo` is the
/// loopback device every namespace has; the kernel refuses `all` and `default`
/// (they name its per-device settings, `net.ipv4.conf.all`).
pub(crate) fn reserved_ifname(s: &str) -> Option<&'static str> {
    match s {
        "lo" => Some("the loopback device every namespace has"),
        "all" | "default" => Some("reserved by the kernel (`net.ipv4.conf.all`, `.default`)"),
        _ => None,
    }
}

/// A network namespace: a name (a file name under /run/netns), or the absolute path of
/// an existing namespace file (`/proc/PID/ns/net`, a bind mount), see [`netns_is_path`].
pub(crate) fn valid_netns(s: &str) -> bool {
    if netns_is_path(s) {
        return s.len() <= 4096 && !s.contains('\0');
    }
    !s.is_empty() && s.len() <= 255 && s != "." && s != ".." && !s.contains(['/', '\0'])
}

/// Whether a port's `netns` is the path of an existing namespace (it starts with `/`)
/// rather than a name: a path is entered as it is, never created or removed.
pub fn netns_is_path(netns: &str) -> bool {
    netns.starts_with('/')
}

/// "a.b.c.d/len" with len 0..=32.
pub(crate) fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len: u8 = len.parse().ok()?;
    if len > 32 {
        return None;
    }
    Some((ip.parse().ok()?, len))
}

pub(crate) fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut out {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

pub(crate) fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// 02: followed by five bytes of the FNV-1a hash of "LAB/PORT": stable across runs.
pub(crate) fn hashed_mac(lab: &str, port: &str) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in lab.bytes().chain(std::iter::once(b'/')).chain(port.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [0x02, b[3], b[4], b[5], b[6], b[7]]
}

/// The router's MAC on a bridge: locally administered, "tn" in the second and third
/// bytes, then three bytes hashed from the lab and bridge names (stable across runs).
pub fn router_mac(lab: &str, bridge: &str) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in lab.bytes().chain([b'/']).chain(bridge.bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [0x02, 0x74, 0x6e, b[5], b[6], b[7]]
}

pub(crate) fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

pub(crate) fn broadcast(net: u32, prefix: u8) -> u32 {
    net | !mask(prefix)
}

pub(crate) fn in_net(a: u32, net: Option<(u32, u8)>) -> bool {
    net.is_some_and(|(n, p)| a & mask(p) == n)
}

pub(crate) fn cidr(net: u32, prefix: u8) -> String {
    format!("{}/{prefix}", Ipv4Addr::from(net))
}

/// The special-purpose range (if any) that `net/prefix` overlaps.
pub(crate) fn reserved_overlap(net: u32, prefix: u8) -> Option<&'static str> {
    const RESERVED: &[(u32, u8, &str)] = &[
        (0x0000_0000, 8, "0.0.0.0/8 (\"this network\")"),
        (0x7f00_0000, 8, "127.0.0.0/8 (loopback)"),
        (0xe000_0000, 4, "224.0.0.0/4 (multicast)"),
        (0xf000_0000, 4, "240.0.0.0/4 (reserved and broadcast)"),
    ];
    RESERVED.iter().find_map(|&(rn, rp, what)| {
        let m = mask(prefix.min(rp));
        (net & m == rn & m).then_some(what)
    })
}
