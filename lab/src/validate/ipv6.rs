//! The IPv6 keys: a bridge's `subnet6` and `gateway6`, a port's `ip6`. A bridge may be
//! IPv4-only, IPv6-only or dual-stack; a port on a `subnet6` bridge without `ip6`
//! autoconfigures from the router's advertisements (SLAAC, RFC 4862).

use std::net::Ipv6Addr;

use super::bridge::BInfo;

/// `ADDR/PREFIX` as an IPv6 address and prefix length, or None.
pub(super) fn parse_cidr6(text: &str) -> Option<(Ipv6Addr, u8)> {
    let (a, p) = text.split_once('/')?;
    let p: u8 = p.parse().ok().filter(|p| *p <= 128)?;
    Some((a.parse().ok()?, p))
}

pub(super) use vswitch::wire::ipv6::in_prefix as in_net6;

/// Why `subnet6` cannot be a bridge's, or None. `others` are the other bridges' valid
/// subnets, by label.
pub(super) fn check_subnet6(
    net: Ipv6Addr,
    prefix: u8,
    others: &[(String, Ipv6Addr, u8)],
) -> Option<String> {
    let fixed = vswitch::wire::ipv6::network(net, prefix);
    if fixed != net {
        return Some(format!(
            "subnet6 {net}/{prefix} has host bits set; did you mean {fixed}/{prefix}?"
        ));
    }
    if !(16..=126).contains(&prefix) {
        return Some(format!(
            "subnet6 {net}/{prefix}: the prefix must be between 16 and 126 (64 for SLAAC)"
        ));
    }
    // IPv4-mapped and -compatible space (the first 80 bits zero) and the NAT64
    // well-known prefix are IPv4 addresses in IPv6 clothes, not a subnet.
    let v4_space = u128::from(net) >> 48 == 0 || in_net6(net, "64:ff9b::".parse().ok()?, 96);
    if net.is_multicast()
        || v4_space
        || net.is_loopback()
        || net.is_unspecified()
        || in_net6(net, "fe80::".parse().ok()?, 10)
    {
        return Some(format!(
            "subnet6 {net}/{prefix} is not a unicast global or unique local network (like \"fd00:16:1::/64\")"
        ));
    }
    for (label, on, op) in others {
        let p = prefix.min(*op);
        if in_net6(net, *on, p) {
            return Some(format!(
                "subnet6 {net}/{prefix} overlaps subnet6 {on}/{op} of {label}"
            ));
        }
    }
    None
}

/// Why `gateway6` cannot be on `net`/`prefix`, or None.
pub(super) fn check_gateway6(gw: Ipv6Addr, net: Ipv6Addr, prefix: u8) -> Option<String> {
    if !in_net6(gw, net, prefix) {
        Some(format!("gateway6 {gw} is outside subnet6 {net}/{prefix}"))
    } else if gw == net {
        Some(format!(
            "gateway6 {gw} is the subnet-router anycast address of {net}/{prefix} (RFC 4291)"
        ))
    } else {
        None
    }
}

/// Why a port's `ip6` cannot be on bridge `br`, or None.
pub(super) fn check_port_ip6(a: Ipv6Addr, p: u8, br: Option<&BInfo<'_>>) -> Option<String> {
    let br = br?;
    let Some((net, prefix)) = br.net6 else {
        return Some(format!(
            "`ip6` needs a `subnet6` on {} to live in",
            super::values::bridge_label(br.name)
        ));
    };
    if !in_net6(a, net, prefix) {
        return Some(format!("ip6 {a}/{p} is outside subnet6 {net}/{prefix}"));
    }
    if p != prefix {
        return Some(format!(
            "ip6 {a}/{p}: the prefix length must be subnet6's, /{prefix}"
        ));
    }
    if a == net {
        return Some(format!(
            "ip6 {a} is the subnet-router anycast address of {net}/{prefix}"
        ));
    }
    if br.gateway6 == Some(a) {
        return Some(format!(
            "ip6 {a} is the gateway6 of {}",
            super::values::bridge_label(br.name)
        ));
    }
    None
}

/// The default gateway6 of a subnet6: its `::1`.
pub(super) fn default_gateway6(net: Ipv6Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(net) | 1)
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;

    fn b(extra: &str) -> String {
        format!("name = \"x\"\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n{extra}\n")
    }

    #[test]
    fn ipv6_keys() {
        let l = lab(&format!(
            "{}[[port]]\nname = \"p\"\nbridge = \"b\"\nnetns = \"n\"\nip6 = \"fd00:16:1::3/64\"\n",
            b("subnet6 = \"fd00:16:1::/64\"")
        ));
        assert_eq!(
            l.bridges[0].subnet6,
            Some(("fd00:16:1::".parse().unwrap(), 64))
        );
        assert_eq!(l.bridges[0].gateway6, Some("fd00:16:1::1".parse().unwrap()));
        assert_eq!(l.ports[0].ip6, Some(("fd00:16:1::3".parse().unwrap(), 64)));
        err1(
            &b("subnet6 = \"fd00:16:1::1/64\""),
            5,
            11,
            "has host bits set; did you mean fd00:16:1::/64?",
        );
        err1(
            &b("subnet6 = \"172.16.1.0/24\""),
            5,
            11,
            "`subnet6` must be an IPv6 network",
        );
        for v4ish in ["::ffff:0:0/96", "64:ff9b::/96"] {
            let t = b(&format!("subnet6 = \"{v4ish}\""));
            err1(&t, 5, 11, "not a unicast global or unique local");
        }
        err1(
            &b("subnet6 = \"fe80::/64\""),
            5,
            11,
            "not a unicast global or unique local",
        );
        err1(
            &b("subnet6 = \"fd00::/8\""),
            5,
            11,
            "the prefix must be between 16 and 126",
        );
        err1(&b("gateway6 = \"fd00::1\""), 5, 12, "needs a `subnet6`");
        err1(
            &b("subnet6 = \"fd00:16:1::/64\"\ngateway6 = \"fd00:16:2::1\""),
            6,
            12,
            "gateway6 fd00:16:2::1 is outside subnet6 fd00:16:1::/64",
        );
        err1(
            &format!(
                "{}[[bridge]]\nname = \"c\"\nsubnet = \"10.8.0.0/24\"\nsubnet6 = \"fd00:16::/32\"\n",
                b("subnet6 = \"fd00:16:1::/64\"")
            ),
            9,
            11,
            "overlaps subnet6 fd00:16:1::/64 of bridge `b`",
        );
        let port = |ip6: &str| {
            format!(
                "{}[[port]]\nname = \"p\"\nbridge = \"b\"\nnetns = \"n\"\nip6 = \"{ip6}\"\n",
                b("subnet6 = \"fd00:16:1::/64\"")
            )
        };
        err1(&port("fd00:16:2::3/64"), 10, 7, "outside subnet6");
        err1(
            &port("fd00:16:1::1/64"),
            10,
            7,
            "is the gateway6 of bridge `b`",
        );
        err1(
            &port("fd00:16:1::3"),
            10,
            7,
            "`ip6` must be an IPv6 address with prefix",
        );
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\n[[port]]\nname = \"p\"\nbridge = \"b\"\nnetns = \"n\"\nip6 = \"fd00::3/64\"\n",
            8,
            7,
            "`ip6` needs a `subnet6` on bridge `b`",
        );
        // An IPv6-only bridge: routed, with no IPv4 on it.
        let l = lab("name = \"x\"\n[[bridge]]\nname = \"b\"\nsubnet6 = \"fd00::/64\"\n[[port]]\nname = \"p\"\nbridge = \"b\"\nnetns = \"n\"\nip6 = \"fd00::3/64\"\n");
        assert_eq!(l.bridges[0].subnet, None);
        assert_eq!(l.bridges[0].gateway6, Some("fd00::1".parse().unwrap()));
    }

    #[test]
    fn dns6_servers() {
        let l = lab(&b(
            "subnet6 = \"fd00:16:1::/64\"\ndns6 = [\"fd00:16:1::53\", \"2001:db8::35\"]",
        ));
        assert_eq!(
            l.bridges[0].dns6,
            vec![
                "fd00:16:1::53".parse::<std::net::Ipv6Addr>().unwrap(),
                "2001:db8::35".parse().unwrap()
            ]
        );
        let t = |list: &str| b(&format!("subnet6 = \"fd00:16:1::/64\"\ndns6 = {list}"));
        err1(
            &t("[\"fe80::53\"]"),
            6,
            9,
            "dns6 fe80::53 is not a unicast global",
        );
        err1(&t("[\"ff02::fb\"]"), 6, 9, "is not a unicast global");
        err1(&t("[\"::ffff:10.0.0.53\"]"), 6, 9, "IPv4-mapped");
        err1(
            &t("[\"10.0.0.53\"]"),
            6,
            9,
            "each `dns6` server must be an IPv6 address",
        );
        err1(
            &t("[\"fd00::1\", \"fd00::2\", \"fd00::3\", \"fd00::4\"]"),
            6,
            8,
            "`dns6` lists 4 servers; at most 3",
        );
        err1(
            &t("[\"fd00::1\", \"fd00::1\"]"),
            6,
            20,
            "dns6 fd00::1 is listed twice",
        );
        err1(
            &b("dns6 = [\"fd00::53\"]"),
            5,
            8,
            "`dns6` needs a `subnet6` on bridge `b`",
        );
        // Written back by `show lab`, and read again the same.
        let l = lab(&t("[\"fd00:16:1::53\"]"));
        let again = lab(&crate::to_toml(&l));
        assert_eq!(again.bridges[0].dns6, l.bridges[0].dns6);
    }
}
