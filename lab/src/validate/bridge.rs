//! `[[bridge]]`: names, subnets and gateways (no overlaps, no special-purpose
//! ranges), VNIs and MTUs, FDB limits. Leaves [`BInfo`] for the sections after it.

use std::net::Ipv4Addr;

use super::values::{
    bridge_label, broadcast, cidr, mask, parse_cidr, reserved_overlap, valid_name,
};
use crate::model::{BridgeCfg, Subnet};
use crate::reader::{q, Cx, Sec};

pub(crate) const BRIDGE_KEYS: &[&str] = &[
    "name",
    "subnet",
    "gateway",
    "subnet6",
    "gateway6",
    "dns6",
    "mtu",
    "vni",
    "fdb_max",
    "fdb_aging_s",
];

/// The default inner MTU of a bridge with a vni: a 1500-byte underlay less VXLAN's
/// overhead ([`crate::overhead`]: 1450 over IPv4, 1430 over IPv6, as the kernel's
/// vxlan device picks from its lower device).
pub(crate) fn vxlan_mtu(underlay_v6: bool) -> i64 {
    1500 - crate::overhead(underlay_v6) as i64
}

/// The largest inner MTU any underlay of the family could carry: a 64 KiB packet
/// less the overhead (65485 over IPv4, 65465 over IPv6).
pub(crate) fn vxlan_max_inner_mtu(underlay_v6: bool) -> i64 {
    65535 - crate::overhead(underlay_v6) as i64
}

/// The largest MTU a TAP device takes: tun's MAX_MTU (65535) less the Ethernet
/// header.
pub(crate) const MAX_TAP_MTU: i64 = 65535 - 14;

/// What the bridge checks leave for the port, service and forward checks.
pub(super) struct BInfo<'a> {
    pub(super) name: Option<&'a str>,
    /// Network address and prefix of a valid `subnet`.
    pub(super) net: Option<(u32, u8)>,
    /// `subnet` is present (valid or not).
    pub(super) has_subnet: bool,
    pub(super) gateway: Option<u32>,
    /// A valid `subnet6`, and its gateway.
    pub(super) net6: Option<(std::net::Ipv6Addr, u8)>,
    pub(super) gateway6: Option<std::net::Ipv6Addr>,
}

pub(super) fn bridges<'a>(
    cx: &mut Cx<'_>,
    root: &Sec<'a>,
    has_vxlan: bool,
    underlay_v6: bool,
) -> (Vec<BridgeCfg>, Vec<BInfo<'a>>) {
    let mut cfgs = Vec::new();
    let mut infos: Vec<BInfo<'a>> = Vec::new();
    let mut name_lines: Vec<usize> = Vec::new();
    let mut vnis: Vec<(u32, Option<&str>)> = Vec::new();
    for s in cx.array(root, "bridge", "[[bridge]]") {
        cx.check_keys(&s, BRIDGE_KEYS);
        cx.require(&s, &["name"]);
        let name = cx.str_(&s, "name");
        if let Some(n) = name {
            if !valid_name(n.v, 15) {
                cx.err(
                    n.at,
                    format!(
                        "bridge name {} must be 1 to 15 characters of A-Z a-z 0-9 _ . -",
                        q(n.v)
                    ),
                );
            } else if let Some(i) = infos.iter().position(|b| b.name == Some(n.v)) {
                cx.err(
                    n.at,
                    format!(
                        "duplicate bridge name {} (first defined on line {})",
                        q(n.v),
                        name_lines[i]
                    ),
                );
            }
        }
        let label = name.map_or_else(
            || "this bridge".to_string(),
            |n| format!("bridge {}", q(n.v)),
        );

        // subnet
        let mut net = None;
        if let Some(sn) = cx.str_(&s, "subnet") {
            match parse_cidr(sn.v) {
                None => cx.err(
                    sn.at,
                    format!(
                        "`subnet` must be an IPv4 network like \"172.16.1.0/24\", not {}",
                        q(sn.v)
                    ),
                ),
                Some((ip, p)) => {
                    let a = u32::from(ip);
                    let n = a & mask(p);
                    if n != a {
                        cx.err(
                            sn.at,
                            format!(
                                "subnet {ip}/{p} has host bits set; did you mean {}/{p}?",
                                Ipv4Addr::from(n)
                            ),
                        );
                    } else if p > 30 {
                        cx.err(
                            sn.at,
                            format!(
                                "subnet {ip}/{p} has no room for a gateway and hosts; \
                                 use a prefix of at most 30"
                            ),
                        );
                    } else if let Some(r) = reserved_overlap(n, p) {
                        cx.err(
                            sn.at,
                            format!("subnet {ip}/{p} overlaps {r}, which a bridge cannot use"),
                        );
                    } else {
                        for other in &infos {
                            if let Some((on, op)) = other.net {
                                let m = mask(p.min(op));
                                if n & m == on & m {
                                    cx.err(
                                        sn.at,
                                        format!(
                                            "subnet {ip}/{p} overlaps subnet {}/{op} of {}",
                                            Ipv4Addr::from(on),
                                            bridge_label(other.name)
                                        ),
                                    );
                                }
                            }
                        }
                        net = Some((n, p));
                    }
                }
            }
        }
        let has_subnet = s.has("subnet");

        // gateway
        let mut gateway = net.map(|(n, _)| n + 1);
        if let Some(g) = cx.str_(&s, "gateway") {
            gateway = None;
            match g.v.parse::<Ipv4Addr>() {
                Err(_) => cx.err(
                    g.at,
                    format!(
                        "`gateway` must be an IPv4 address like \"172.16.1.1\", not {}",
                        q(g.v)
                    ),
                ),
                Ok(a) => {
                    let a32 = u32::from(a);
                    if !has_subnet {
                        cx.err(
                            g.at,
                            format!("`gateway` needs a `subnet` on {label} to live in"),
                        );
                    } else if let Some((n, p)) = net {
                        let sn = cidr(n, p);
                        if a32 & mask(p) != n {
                            cx.err(g.at, format!("gateway {a} is outside subnet {sn}"));
                        } else if a32 == n {
                            cx.err(
                                g.at,
                                format!("gateway {a} is the network address of subnet {sn}"),
                            );
                        } else if a32 == broadcast(n, p) {
                            cx.err(
                                g.at,
                                format!("gateway {a} is the broadcast address of subnet {sn}"),
                            );
                        } else {
                            gateway = Some(a32);
                        }
                    }
                }
            }
        } else if s.has("gateway") {
            gateway = None;
        }

        // subnet6, gateway6
        let mut net6 = None;
        if let Some(sn) = cx.str_(&s, "subnet6") {
            match super::ipv6::parse_cidr6(sn.v) {
                None => cx.err(
                    sn.at,
                    format!(
                        "`subnet6` must be an IPv6 network like \"fd00:16:1::/64\", not {}",
                        q(sn.v)
                    ),
                ),
                Some((a, p)) => {
                    let others: Vec<(String, std::net::Ipv6Addr, u8)> = infos
                        .iter()
                        .filter_map(|o| o.net6.map(|(n, p)| (bridge_label(o.name), n, p)))
                        .collect();
                    match super::ipv6::check_subnet6(a, p, &others) {
                        Some(msg) => cx.err(sn.at, msg),
                        None => net6 = Some((a, p)),
                    }
                }
            }
        }
        let mut gateway6 = net6.map(|(n, _)| super::ipv6::default_gateway6(n));
        if let Some(g) = cx.str_(&s, "gateway6") {
            gateway6 = None;
            match g.v.parse::<std::net::Ipv6Addr>() {
                Err(_) => cx.err(
                    g.at,
                    format!(
                        "`gateway6` must be an IPv6 address like \"fd00:16:1::1\", not {}",
                        q(g.v)
                    ),
                ),
                Ok(a) if !s.has("subnet6") => cx.err(
                    g.at,
                    format!("`gateway6` {a} needs a `subnet6` on {label} to live in"),
                ),
                Ok(a) => {
                    if let Some((n, p)) = net6 {
                        match super::ipv6::check_gateway6(a, n, p) {
                            Some(msg) => cx.err(g.at, msg),
                            None => gateway6 = Some(a),
                        }
                    }
                }
            }
        }

        let dns6 = dns6(cx, &s, &label);

        // vni, mtu, fdb
        let has_vni = s.has("vni");
        let vni = cx.int(&s, "vni", 1, 16_777_215);
        if let Some(v) = vni {
            let v32 = v.v as u32;
            if let Some((_, other)) = vnis.iter().find(|(x, _)| *x == v32) {
                cx.err(
                    v.at,
                    format!("vni {v32} is already used by {}", bridge_label(*other)),
                );
            }
            vnis.push((v32, name.map(|n| n.v)));
            if !has_vxlan {
                cx.err(
                    v.at,
                    format!(
                        "{label} has vni {v32}, but there is no [vxlan] table \
                         (`listen` and `peers`) to carry it"
                    ),
                );
            }
        }
        // A TAP takes at most 65535 less its Ethernet header (tun's MAX_MTU).
        let mtu = cx.int(&s, "mtu", 68, MAX_TAP_MTU);
        if let Some(m) = mtu {
            // Whether the underlay carries it is known only at `up`, from its MTU;
            // here only what no underlay of the family could carry is refused.
            let max = vxlan_max_inner_mtu(underlay_v6);
            if has_vni && m.v > max {
                cx.err(
                    m.at,
                    format!(
                        "mtu {} leaves no room for the {} bytes of VXLAN encapsulation \
                         in a 64 KiB datagram; use at most {max}",
                        m.v,
                        crate::overhead(underlay_v6)
                    ),
                );
            }
        }
        let fdb_max = cx.int(&s, "fdb_max", 1, 1_000_000);
        let fdb_aging_s = cx.int(&s, "fdb_aging_s", 1, 86_400);

        cfgs.push(BridgeCfg {
            pos: cx.pos(s.at),
            name: name.map_or_else(String::new, |n| n.v.to_string()),
            subnet: net.map(|(n, p)| Subnet {
                addr: Ipv4Addr::from(n),
                prefix: p,
            }),
            gateway: gateway.map(Ipv4Addr::from),
            subnet6: net6,
            gateway6,
            dns6,
            mtu: mtu.map_or(
                if has_vni {
                    vxlan_mtu(underlay_v6) as u32
                } else {
                    1500
                },
                |m| m.v as u32,
            ),
            vni: vni.map(|v| (v.v as u32, cx.pos(v.at))),
            fdb_max: fdb_max.map_or(8192, |f| f.v as usize),
            fdb_aging_s: fdb_aging_s.map_or(300, |f| f.v as u64),
        });
        name_lines.push(cx.line(name.map_or(s.at, |n| n.at)));
        infos.push(BInfo {
            name: name.map(|n| n.v),
            net,
            has_subnet,
            gateway,
            net6,
            gateway6,
        });
    }
    (cfgs, infos)
}

/// `dns6`: the recursive DNS servers the router advertises on the bridge (RFC 8106),
/// at most [`vswitch::wire::icmpv6::RDNSS_MAX`], each a unicast address a container
/// can reach from any link: not link-local (RFC 8106 section 5.1 allows one, but
/// then the server must be on this very link, which a lab's router cannot promise),
/// multicast, loopback, unspecified or IPv4-mapped. Only with a `subnet6`.
fn dns6(cx: &mut Cx<'_>, s: &Sec<'_>, label: &str) -> Vec<std::net::Ipv6Addr> {
    use std::net::Ipv6Addr;
    let mut out: Vec<Ipv6Addr> = Vec::new();
    let Some(list) = cx.str_list(s, "dns6") else {
        return out;
    };
    if !s.has("subnet6") {
        cx.err(
            list.at,
            format!("`dns6` needs a `subnet6` on {label}: the servers are named in its router advertisements"),
        );
        return out;
    }
    let max = vswitch::wire::icmpv6::RDNSS_MAX;
    if list.v.len() > max {
        cx.err(
            list.at,
            format!("`dns6` lists {} servers; at most {max}", list.v.len()),
        );
        return out;
    }
    for f in list.v {
        let a = match f.v.parse::<Ipv6Addr>() {
            Ok(a) => a,
            Err(_) => {
                cx.err(
                    f.at,
                    format!(
                        "each `dns6` server must be an IPv6 address like \"fd00:16:1::53\", not {}",
                        q(f.v)
                    ),
                );
                continue;
            }
        };
        let link_local = super::ipv6::in_net6(a, Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10);
        if a.is_unspecified()
            || a.is_loopback()
            || a.is_multicast()
            || link_local
            || a.to_ipv4_mapped().is_some()
        {
            cx.err(
                f.at,
                format!("dns6 {a} is not a unicast global or unique local address (link-local, multicast, loopback and IPv4-mapped ones are refused)"),
            );
        } else if out.contains(&a) {
            cx.err(f.at, format!("dns6 {a} is listed twice"));
        } else {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn subnets() {
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\nsubnet = \"10.0.0.1/24\"\n",
            4,
            10,
            "subnet 10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?",
        );
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\nsubnet = \"10.0.0.0\"\n",
            4,
            10,
            "`subnet` must be an IPv4 network like \"172.16.1.0/24\", not `10.0.0.0`",
        );
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\nsubnet = \"10.0.0.0/33\"\n",
            4,
            10,
            "`subnet` must be an IPv4 network",
        );
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\nsubnet = \"10.0.0.0/+8\"\n",
            4,
            10,
            "`subnet` must be an IPv4 network",
        );
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\nsubnet = \"10.0.0.0/31\"\n",
            4,
            10,
            "no room for a gateway and hosts",
        );
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\nsubnet = \"127.0.0.0/8\"\n",
            4,
            10,
            "overlaps 127.0.0.0/8 (loopback)",
        );
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\nsubnet = \"0.0.0.0/0\"\n",
            4,
            10,
            "overlaps 0.0.0.0/8",
        );
        err1(
            &with_head("[[bridge]]\nname = \"br1\"\nsubnet = \"10.0.0.128/25\"\n"),
            7,
            10,
            "subnet 10.0.0.128/25 overlaps subnet 10.0.0.0/24 of bridge `br0`",
        );
        err1(
            &with_head("[[bridge]]\nname = \"br1\"\nsubnet = \"10.0.0.0/8\"\n"),
            7,
            10,
            "overlaps subnet 10.0.0.0/24 of bridge `br0`",
        );
        lab(&with_head(
            "[[bridge]]\nname = \"br1\"\nsubnet = \"10.0.1.0/24\"\n",
        ));
    }

    #[test]
    fn gateways() {
        err1(
            &with_head("gateway = \"10.0.1.1\"\n"),
            5,
            11,
            "gateway 10.0.1.1 is outside subnet 10.0.0.0/24",
        );
        err1(
            &with_head("gateway = \"10.0.0.0\"\n"),
            5,
            11,
            "gateway 10.0.0.0 is the network address of subnet 10.0.0.0/24",
        );
        err1(
            &with_head("gateway = \"10.0.0.255\"\n"),
            5,
            11,
            "gateway 10.0.0.255 is the broadcast address",
        );
        err1(
            &with_head("gateway = \"10.0.0\"\n"),
            5,
            11,
            "`gateway` must be an IPv4 address",
        );
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\ngateway = \"10.0.0.1\"\n",
            4,
            11,
            "`gateway` needs a `subnet` on bridge `b`",
        );
    }

    #[test]
    fn bridge_numbers() {
        err1(
            &with_head("mtu = 67\n"),
            5,
            7,
            "`mtu` must be between 68 and 65521, not 67",
        );
        err1(
            &with_head("mtu = 65536\n"),
            5,
            7,
            "`mtu` must be between 68 and 65521, not 65536",
        );
        err1(
            &with_head("fdb_max = 0\n"),
            5,
            11,
            "`fdb_max` must be between 1 and 1000000, not 0",
        );
        err1(
            &with_head("fdb_aging_s = 86401\n"),
            5,
            15,
            "`fdb_aging_s` must be between 1 and 86400",
        );
        err1(
            &with_head(
                "vni = 16777216\n[vxlan]\nlisten = \"1.2.3.4:4789\"\npeers = [\"1.2.3.5:4789\"]\n",
            ),
            5,
            7,
            "`vni` must be between 1 and 16777215, not 16777216",
        );
        err1(
            &with_head("vni = 0\n[vxlan]\nlisten = \"1.2.3.4:4789\"\npeers = [\"1.2.3.5:4789\"]\n"),
            5,
            7,
            "`vni` must be between 1 and 16777215, not 0",
        );
    }

    #[test]
    fn vxlan_bridges() {
        const VX: &str = "[vxlan]\nlisten = \"1.2.3.4:4789\"\npeers = [\"1.2.3.5:4789\"]\n";
        err1(
            &with_head(&format!("vni = 5\nmtu = 65500\n{VX}")),
            6,
            7,
            "mtu 65500 leaves no room for the 50 bytes of VXLAN encapsulation in a 64 KiB datagram; use at most 65485",
        );
        lab(&with_head(&format!("vni = 5\nmtu = 1450\n{VX}")));
        err1(
            &with_head("vni = 5\n"),
            5,
            7,
            "bridge `br0` has vni 5, but there is no [vxlan] table",
        );
        err1(
            &with_head(&format!(
                "vni = 5\n[[bridge]]\nname = \"br1\"\nvni = 5\n{VX}"
            )),
            8,
            7,
            "vni 5 is already used by bridge `br0`",
        );
    }

    #[test]
    fn an_ipv6_underlay_leaves_70_bytes_for_vxlan() {
        const VX6: &str =
            "[vxlan]\nlisten = \"[2001:db8::1]:4789\"\npeers = [\"[2001:db8::2]:4789\"]\n";
        let l = lab(&with_head(&format!("vni = 7\n{VX6}")));
        assert_eq!(l.bridges[0].mtu, 1430);
        assert_eq!(l.vxlan.unwrap().overhead(), 70);
        err1(
            &with_head(&format!("vni = 5\nmtu = 65480\n{VX6}")),
            6,
            7,
            "mtu 65480 leaves no room for the 70 bytes of VXLAN encapsulation in a 64 KiB datagram; use at most 65465",
        );
        lab(&with_head(&format!("vni = 5\nmtu = 65465\n{VX6}")));
    }

    #[test]
    fn vni_bridge_defaults_to_1450() {
        let l = lab(&with_head(
            "vni = 7\n[vxlan]\nlisten = \"0.0.0.0:4789\"\npeers = [\"192.0.2.2:4789\", \"192.0.2.3:4789\"]\n",
        ));
        assert_eq!(l.bridges[0].mtu, 1450);
        assert_eq!(l.bridges[0].vni, Some((7, Pos { line: 5, col: 7 })));
        assert_eq!(l.vxlan.unwrap().peers.len(), 2);
    }

    #[test]
    fn defaults_and_explicit_values() {
        let l = lab(&with_head(
            "gateway = \"10.0.0.254\"\nfdb_max = 10\nfdb_aging_s = 5\nmtu = 9000\n\
             [[port]]\nname = \"p\"\nbridge = \"br0\"\nnetns = \"ns\"\nifname = \"veth7\"\n\
             mac = \"0A:00:00:00:00:01\"\n[nat]\n",
        ));
        let b = &l.bridges[0];
        assert_eq!(b.gateway, Some(Ipv4Addr::new(10, 0, 0, 254)));
        assert_eq!((b.fdb_max, b.fdb_aging_s, b.mtu), (10, 5, 9000));
        assert_eq!(l.ports[0].ifname, "veth7");
        assert_eq!(l.ports[0].mac, [0x0a, 0, 0, 0, 0, 1]);
        assert_eq!(l.ports[0].ip, None);
        // An empty [nat] means masquerade.
        assert!(l.nat.unwrap().masquerade);
    }
}
