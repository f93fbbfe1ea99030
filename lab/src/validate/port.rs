//! `[[port]]`: names, the bridge each is on, namespaces and interface names (unique
//! within a namespace), addresses against their bridge's subnet, MACs (given or
//! derived, never shared), mirrors, impairments and port security. Leaves [`PInfo`]
//! for services and forwards.

use std::net::Ipv4Addr;

use super::bridge::BInfo;
use super::values::{
    bridge_label, broadcast, cidr, fmt_mac, hashed_mac, mask, parse_cidr, parse_mac, port_label,
    reserved_ifname, reserved_overlap, router_mac, valid_ifname, valid_name, valid_netns,
};
use crate::model::PortCfg;
use crate::reader::{q, Cx, Sec};

pub(crate) const PORT_KEYS: &[&str] = &[
    "name",
    "bridge",
    "netns",
    "ifname",
    "mac",
    "ip",
    "ip6",
    "impair",
    "mirror",
    "spoof_check",
    "qemu",
];

/// What the port checks leave for the service and forward checks.
pub(super) struct PInfo<'a> {
    pub(super) name: Option<&'a str>,
    pub(super) ip: Option<Ipv4Addr>,
    pub(super) ip6: Option<std::net::Ipv6Addr>,
    pub(super) mac: Option<[u8; 6]>,
    /// (netns, ifname) when both are valid.
    pub(super) iface: Option<(Option<&'a str>, String)>,
}

impl PInfo<'_> {
    pub(super) fn label(&self) -> String {
        port_label(self.name)
    }
}

/// Returns the ports, what later checks need of them, and whether some port's `ip`
/// could not be read (so "no port holds that address" cannot be trusted).
pub(super) fn ports<'a>(
    cx: &mut Cx<'_>,
    root: &Sec<'a>,
    lab_name: &str,
    binfo: &[BInfo<'_>],
) -> (Vec<PortCfg>, Vec<PInfo<'a>>, bool) {
    let mut cfgs = Vec::new();
    let mut infos: Vec<PInfo<'a>> = Vec::new();
    let mut name_lines: Vec<usize> = Vec::new();
    let mut incomplete = false;
    // Each mirror, with the name of the port it mirrors (when that could be read).
    let mut mirrors: Vec<(&str, Option<&str>)> = Vec::new();
    // Each QEMU socket, with its port's label.
    let mut sockets: Vec<(&str, String)> = Vec::new();
    for s in cx.array(root, "port", "[[port]]") {
        cx.check_keys(&s, PORT_KEYS);
        cx.require(&s, &["name", "bridge"]);
        let name = cx.str_(&s, "name");
        let mut name_ok = false;
        if let Some(n) = name {
            if !valid_name(n.v, 15) {
                cx.err(
                    n.at,
                    format!(
                        "port name {} must be 1 to 15 characters of A-Z a-z 0-9 _ . -",
                        q(n.v)
                    ),
                );
            } else if n.v == "underlay" {
                cx.err(
                    n.at,
                    "port name `underlay` is taken: `tapnet capture underlay` means VXLAN's underlay"
                        .to_string(),
                );
            } else if let Some(i) = infos.iter().position(|p| p.name == Some(n.v)) {
                cx.err(
                    n.at,
                    format!(
                        "duplicate port name {} (first defined on line {})",
                        q(n.v),
                        name_lines[i]
                    ),
                );
            } else {
                name_ok = true;
            }
        }
        let label = name.map_or_else(|| "this port".to_string(), |n| format!("port {}", q(n.v)));

        let bridge = cx.str_(&s, "bridge");
        let mut br = None;
        if let Some(b) = bridge {
            br = binfo.iter().find(|x| x.name == Some(b.v));
            // A bridge whose name could not be read may be the one meant.
            if br.is_none() && binfo.iter().all(|x| x.name.is_some()) {
                cx.err(
                    b.at,
                    format!(
                        "{label} names bridge {}, which no [[bridge]] defines",
                        q(b.v)
                    ),
                );
            }
        }

        // netns and ifname
        let netns = cx.str_(&s, "netns");
        let mut netns_ok = !s.has("netns") || netns.is_some();
        if let Some(ns) = netns {
            if !valid_netns(ns.v) {
                netns_ok = false;
                cx.err(
                    ns.at,
                    format!(
                        "netns name {} must be 1 to 255 bytes, without `/`, and not `.` or `..`; or the absolute path of an existing namespace (`/proc/PID/ns/net`)",
                        q(ns.v)
                    ),
                );
            }
        }
        // qemu: a VM's socket instead of a TAP; no namespace, no interface.
        let qemu = cx.str_(&s, "qemu");
        if let Some(qf) = qemu {
            if !qf.v.starts_with('/') || qf.v.len() > 107 || qf.v.contains('\0') {
                cx.err(
                    qf.at,
                    format!(
                        "qemu {} must be an absolute path of at most 107 bytes (a unix socket's)",
                        q(qf.v)
                    ),
                );
            } else if let Some((_, other)) = sockets.iter().find(|(p, _)| *p == qf.v) {
                cx.err(
                    qf.at,
                    format!("qemu {} is already the socket of {other}", q(qf.v)),
                );
            } else {
                sockets.push((qf.v, label.clone()));
            }
            for key in ["netns", "ifname"] {
                if let Some(f) = cx.str_(&s, key) {
                    cx.err(
                        f.at,
                        format!("a port with `qemu` has no `{key}`: the VM is at the other end of its socket"),
                    );
                }
            }
        }
        let ifname = cx.str_(&s, "ifname");
        let mut ifname_ok = if qemu.is_some() {
            false
        } else if s.has("ifname") {
            ifname.is_some()
        } else {
            netns.is_some() || name_ok
        };
        if let Some(i) = ifname {
            if !valid_ifname(i.v) {
                ifname_ok = false;
                cx.err(
                    i.at,
                    format!(
                        "ifname {} is not a valid interface name (1 to 15 bytes, \
                         no `/`, `:` or whitespace, not `.` or `..`)",
                        q(i.v)
                    ),
                );
            }
        }
        let ifname_v = match (ifname, netns) {
            _ if qemu.is_some() => String::new(),
            (Some(i), _) => i.v.to_string(),
            (None, Some(_)) => "eth0".to_string(),
            (None, None) => name.map_or_else(String::new, |n| n.v.to_string()),
        };
        if ifname_ok {
            if let Some(why) = reserved_ifname(&ifname_v) {
                ifname_ok = false;
                let (at, key) = match ifname {
                    Some(i) => (i.at, "ifname"),
                    None => (name.map_or(s.at, |n| n.at), "interface (the port's name)"),
                };
                cx.err(at, format!("{key} {} cannot be used: {why}", q(&ifname_v)));
            }
        }
        let mut iface = None;
        if netns_ok && ifname_ok {
            let key = (netns.map(|n| n.v), ifname_v.clone());
            let at = ifname
                .map(|i| i.at)
                .or(netns.map(|n| n.at))
                .or(name.map(|n| n.at))
                .unwrap_or(s.at);
            // Mirrors are TAPs in tapnet's own namespace too.
            let mirrored = mirrors.iter().find(|(m, _)| key.0.is_none() && *m == key.1);
            if let Some(other) = infos.iter().find(|p| p.iface.as_ref() == Some(&key)) {
                let place = match key.0 {
                    Some(ns) => format!("netns {}", q(ns)),
                    None => "tapnet's own namespace".to_string(),
                };
                let hint = if ifname.is_none() {
                    "; give one of them an `ifname`"
                } else {
                    ""
                };
                cx.err(
                    at,
                    format!(
                        "interface {} in {place} is already used by {}{hint}",
                        q(&key.1),
                        other.label()
                    ),
                );
            } else if let Some((_, of)) = mirrored {
                cx.err(
                    at,
                    format!(
                        "interface {} in tapnet's own namespace is already the mirror of {}",
                        q(&key.1),
                        port_label(*of)
                    ),
                );
            } else {
                iface = Some(key);
            }
        }

        // ip
        let ipf = cx.str_(&s, "ip");
        if s.has("ip") && ipf.is_none() {
            incomplete = true;
        }
        let mut ip = None;
        let mut ip_dup = false;
        if let Some(f) = ipf {
            match parse_cidr(f.v) {
                None => {
                    incomplete = true;
                    cx.err(
                        f.at,
                        format!(
                            "`ip` must be an IPv4 address with prefix like \"172.16.1.3/24\", \
                             not {}",
                            q(f.v)
                        ),
                    );
                }
                Some((a, p)) => {
                    if let Some(msg) = check_port_ip(a, p, br) {
                        cx.err(f.at, msg);
                    }
                    if let Some(other) = infos.iter().find(|o| o.ip == Some(a)) {
                        ip_dup = true;
                        cx.err(f.at, format!("ip {a} is already used by {}", other.label()));
                    }
                    ip = Some((a, p));
                }
            }
        }

        // ip6
        let mut ip6 = None;
        if let Some(f) = cx.str_(&s, "ip6") {
            match super::ipv6::parse_cidr6(f.v) {
                None => cx.err(
                    f.at,
                    format!(
                        "`ip6` must be an IPv6 address with prefix like \"fd00:16:1::3/64\", not {}",
                        q(f.v)
                    ),
                ),
                Some((a, p)) => {
                    if let Some(msg) = super::ipv6::check_port_ip6(a, p, br) {
                        cx.err(f.at, msg);
                    } else if let Some(other) = infos.iter().find(|o| o.ip6 == Some(a)) {
                        cx.err(f.at, format!("ip6 {a} is already used by {}", other.label()));
                    } else {
                        ip6 = Some((a, p));
                    }
                }
            }
        }

        // mac
        let macf = cx.str_(&s, "mac");
        let mut mac = None;
        let mut mac_at = s.at;
        let mut mac_what = "mac";
        if let Some(m) = macf {
            mac_at = m.at;
            match parse_mac(m.v) {
                None => cx.err(
                    m.at,
                    format!(
                        "`mac` must be six hex bytes like \"02:00:ac:10:01:03\", not {}",
                        q(m.v)
                    ),
                ),
                Some(x) if x == [0; 6] => {
                    cx.err(m.at, "mac 00:00:00:00:00:00 is not a usable address")
                }
                Some(x) if x[0] & 1 == 1 => cx.err(
                    m.at,
                    format!(
                        "mac {} is a multicast address; a port needs a unicast mac \
                         (first byte even)",
                        fmt_mac(&x)
                    ),
                ),
                Some(x) => mac = Some(x),
            }
        } else if !s.has("mac") {
            mac_what = "default mac";
            // A default derived from a duplicate (or unreadable) `ip` or `name` would
            // only repeat the error already reported for those.
            if let Some((a, _)) = ip {
                if !ip_dup {
                    let o = a.octets();
                    mac = Some([0x02, 0x00, o[0], o[1], o[2], o[3]]);
                    mac_at = ipf.map_or(s.at, |f| f.at);
                }
            } else if !s.has("ip") && name_ok {
                mac = Some(hashed_mac(lab_name, name.map_or("", |n| n.v)));
            }
        }
        // The router's own MAC on the port's bridge is a static FDB entry there:
        // a port using it would have every frame dropped as static_mac_conflict.
        let router = br
            .filter(|b| b.has_subnet || b.net6.is_some())
            .and_then(|b| b.name)
            .map(|b| (b, router_mac(lab_name, b)));
        if let (Some(m), Some((b, r))) = (mac, router) {
            if m == r {
                cx.err(
                    mac_at,
                    format!(
                        "{mac_what} {} of {label} is the router's own on bridge {} (derived from the lab's and the bridge's names): set `mac` to another address",
                        fmt_mac(&m),
                        q(b)
                    ),
                );
                mac = None;
            }
        }
        if let Some(m) = mac {
            if let Some(other) = infos.iter().find(|o| o.mac == Some(m)) {
                let hint = if mac_what == "mac" {
                    ""
                } else {
                    "; set `mac` to another address"
                };
                cx.err(
                    mac_at,
                    format!(
                        "{mac_what} {} of {label} is already used by {}{hint}",
                        fmt_mac(&m),
                        other.label()
                    ),
                );
                mac = None;
            }
        }

        let mirror = cx.str_(&s, "mirror").and_then(|m| {
            // A mirror is a TAP in tapnet's own namespace, where ports without a
            // `netns` have theirs: this port's or an earlier one's.
            let here = |i: &Option<(Option<&str>, String)>| {
                i.as_ref().is_some_and(|(ns, n)| ns.is_none() && n == m.v)
            };
            let taken_by = if here(&iface) {
                Some(label.clone())
            } else {
                infos.iter().find(|p| here(&p.iface)).map(PInfo::label)
            };
            if mirrors.iter().any(|(x, _)| *x == m.v) {
                cx.err(m.at, format!("mirror {} is already another port's mirror", q(m.v)));
                None
            } else if let Some(why) = reserved_ifname(m.v) {
                cx.err(m.at, format!("mirror {} cannot be used: {why}", q(m.v)));
                None
            } else if valid_ifname(m.v) {
                if let Some(port) = taken_by {
                    cx.err(
                        m.at,
                        format!(
                            "mirror {} is already the interface of {port} in tapnet's own namespace",
                            q(m.v)
                        ),
                    );
                    return None;
                }
                mirrors.push((m.v, if name_ok { name.map(|n| n.v) } else { None }));
                Some(m.v.to_string())
            } else {
                cx.err(
                    m.at,
                    format!(
                        "mirror {} is not a valid interface name (1 to 15 bytes, no `/`, `:` or whitespace)",
                        q(m.v)
                    ),
                );
                None
            }
        });
        let impair = cx.str_(&s, "impair").and_then(|f| {
            vswitch::impair::Impairment::parse(f.v)
                .map_err(|e| cx.err(f.at, format!("`impair`: {e}")))
                .ok()
        });
        // A VM picks its own MAC: port security on a QEMU port is asked for, with `mac`.
        // A port on a bridge with a subnet6 is guarded even without addresses of its
        // own (SLAAC): else it could advertise itself as the router or take another's
        // address in neighbour discovery.
        let routed6 = br.is_some_and(|b| b.net6.is_some());
        let spoof_check = cx
            .bool_(&s, "spoof_check")
            .map_or((ip.is_some() || routed6) && qemu.is_none(), |f| f.v);
        cfgs.push(PortCfg {
            impair,
            mirror,
            spoof_check,
            pos: cx.pos(s.at),
            name: name.map_or_else(String::new, |n| n.v.to_string()),
            bridge: bridge.map_or_else(String::new, |b| b.v.to_string()),
            netns: netns.map(|n| n.v.to_string()),
            qemu: qemu.map(|f| f.v.to_string()),
            ifname: ifname_v,
            mac: mac.unwrap_or_default(),
            ip,
            ip6,
        });
        name_lines.push(cx.line(name.map_or(s.at, |n| n.at)));
        infos.push(PInfo {
            name: if name_ok { name.map(|n| n.v) } else { None },
            ip: ip.map(|(a, _)| a),
            ip6: ip6.map(|(a, _)| a),
            mac,
            iface,
        });
    }
    (cfgs, infos, incomplete)
}

/// Checks a port's address against its bridge (when that bridge exists).
fn check_port_ip(a: Ipv4Addr, p: u8, br: Option<&BInfo<'_>>) -> Option<String> {
    let br = br?;
    let a32 = u32::from(a);
    match br.net {
        Some((n, np)) => {
            let sn = cidr(n, np);
            let of = bridge_label(br.name);
            if a32 & mask(np) != n {
                Some(format!("ip {a}/{p} is outside subnet {sn} of {of}"))
            } else if p != np {
                Some(format!(
                    "ip {a}/{p} must have the prefix of subnet {sn} of {of}: use {a}/{np}"
                ))
            } else if a32 == n {
                Some(format!("ip {a}/{p} is the network address of subnet {sn}"))
            } else if a32 == broadcast(n, np) {
                Some(format!(
                    "ip {a}/{p} is the broadcast address of subnet {sn}"
                ))
            } else if Some(a32) == br.gateway {
                Some(format!("ip {a}/{p} is the gateway of {of}"))
            } else {
                None
            }
        }
        None if br.has_subnet => None,
        None => {
            let n = a32 & mask(p);
            if reserved_overlap(a32, 32).is_some() {
                Some(format!("ip {a}/{p} is not a usable unicast address"))
            } else if p <= 30 && a32 == n {
                Some(format!(
                    "ip {a}/{p} is the network address of {}/{p}",
                    Ipv4Addr::from(n)
                ))
            } else if p <= 30 && a32 == broadcast(n, p) {
                Some(format!(
                    "ip {a}/{p} is the broadcast address of {}/{p}",
                    Ipv4Addr::from(n)
                ))
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn bridge_and_port_names() {
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"averyveryverylong\"\n",
            3,
            8,
            "bridge name `averyveryverylong` must be 1 to 15 characters",
        );
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b0\"\n[[bridge]]\nname = \"b0\"\n",
            5,
            8,
            "duplicate bridge name `b0` (first defined on line 3)",
        );
        err1(
            &with_head("[[port]]\nname = \"a/b\"\nbridge = \"br0\"\n"),
            6,
            8,
            "port name `a/b` must be 1 to 15",
        );
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\n[[port]]\nname = \"p\"\nbridge = \"br0\"\nnetns = \"n\"\n"),
            9,
            8,
            "duplicate port name `p` (first defined on line 6)",
        );
    }

    #[test]
    fn names_every_namespace_or_the_kernel_reserves_are_refused() {
        for (port, line, col, needle) in [
            (
                "netns = \"n\"\nifname = \"lo\"",
                9,
                10,
                "ifname `lo` cannot be used: the loopback",
            ),
            (
                "ifname = \"all\"",
                8,
                10,
                "ifname `all` cannot be used: reserved by the kernel",
            ),
            (
                "ifname = \"default\"",
                8,
                10,
                "ifname `default` cannot be used",
            ),
            (
                "mirror = \"default\"",
                8,
                10,
                "mirror `default` cannot be used",
            ),
        ] {
            err1(
                &with_head(&format!(
                    "[[port]]\nname = \"p\"\nbridge = \"br0\"\n{port}\n"
                )),
                line,
                col,
                needle,
            );
        }
        // A port with no namespace is named after itself there.
        err1(
            &with_head("[[port]]\nname = \"all\"\nbridge = \"br0\"\n"),
            6,
            8,
            "interface (the port's name) `all` cannot be used",
        );
    }

    #[test]
    fn a_port_cannot_take_the_routers_mac() {
        let r = fmt_mac(&router_mac("t", "br0"));
        err1(
            &with_head(&format!(
                "[[port]]\nname = \"p\"\nbridge = \"br0\"\nmac = \"{r}\"\n"
            )),
            8,
            7,
            "is the router's own on bridge `br0`",
        );
    }

    #[test]
    fn a_qemu_port_is_a_socket_with_no_namespace() {
        let l = lab(&with_head(
            "[[port]]\nname = \"vm\"\nbridge = \"br0\"\nqemu = \"/run/vm.sock\"\nip = \"10.0.0.9/24\"\n",
        ));
        let vm = &l.ports[0];
        assert_eq!(vm.qemu.as_deref(), Some("/run/vm.sock"));
        assert_eq!((vm.netns.as_deref(), vm.ifname.as_str()), (None, ""));
        assert!(!vm.spoof_check, "a VM picks its own MAC");
        // Two VMs may not share a socket; a socket needs an absolute path that fits.
        err1(
            &with_head("[[port]]\nname = \"a\"\nbridge = \"br0\"\nqemu = \"/s\"\n[[port]]\nname = \"b\"\nbridge = \"br0\"\nqemu = \"/s\"\n"),
            12,
            8,
            "qemu `/s` is already the socket of port `a`",
        );
        err1(
            &with_head("[[port]]\nname = \"a\"\nbridge = \"br0\"\nqemu = \"vm.sock\"\n"),
            8,
            8,
            "must be an absolute path of at most 107 bytes",
        );
        err1(
            &with_head("[[port]]\nname = \"a\"\nbridge = \"br0\"\nqemu = \"/s\"\nnetns = \"n\"\n"),
            9,
            9,
            "a port with `qemu` has no `netns`",
        );
        // Its port name is no interface: a TAP port may have it as its ifname.
        lab(&with_head("[[port]]\nname = \"vm\"\nbridge = \"br0\"\nqemu = \"/s\"\n[[port]]\nname = \"t\"\nbridge = \"br0\"\nifname = \"vm\"\n"));
    }

    #[test]
    fn netns_and_ifname() {
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\nnetns = \"a/b\"\n"),
            8,
            9,
            "netns name `a/b` must be",
        );
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\nnetns = \"..\"\n"),
            8,
            9,
            "netns name `..`",
        );
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\nnetns = \"\"\n"),
            8,
            9,
            "netns name ``",
        );
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\nifname = \"eth0:1\"\n"),
            8,
            10,
            "ifname `eth0:1` is not a valid interface name",
        );
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\nifname = \"a b\"\n"),
            8,
            10,
            "ifname `a b`",
        );
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\nifname = \"0123456789abcdef\"\n"),
            8,
            10,
            "ifname `0123456789abcdef`",
        );
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\nifname = \".\"\n"),
            8,
            10,
            "ifname `.`",
        );
        // Two ports in one namespace, both defaulting to eth0: reported at the second netns.
        err1(
            &with_head("[[port]]\nname = \"a\"\nbridge = \"br0\"\nnetns = \"n\"\n[[port]]\nname = \"b\"\nbridge = \"br0\"\nnetns = \"n\"\n"),
            12,
            9,
            "interface `eth0` in netns `n` is already used by port `a`; give one of them an `ifname`",
        );
        // In tapnet's own namespace, an explicit ifname clashing with a port's name.
        err1(
            &with_head("[[port]]\nname = \"a\"\nbridge = \"br0\"\n[[port]]\nname = \"b\"\nbridge = \"br0\"\nifname = \"a\"\n"),
            11,
            10,
            "interface `a` in tapnet's own namespace is already used by port `a`",
        );
        // Same ifname in different namespaces is fine.
        lab(&with_head("[[port]]\nname = \"a\"\nbridge = \"br0\"\nnetns = \"n1\"\n[[port]]\nname = \"b\"\nbridge = \"br0\"\nnetns = \"n2\"\n"));
    }

    #[test]
    fn port_bridge_must_exist() {
        err1(
            &with_head("[[port]]\nname = \"web\"\nbridge = \"br9\"\n"),
            7,
            10,
            "port `web` names bridge `br9`, which no [[bridge]] defines",
        );
    }

    #[test]
    fn no_cascades() {
        // A bridge whose name cannot be read: its ports are not "on a missing bridge".
        err1(
            "name = \"x\"\n[[bridge]]\nname = 5\n[[port]]\nname = \"p\"\nbridge = \"br0\"\n",
            3,
            8,
            "`name` must be a string, not an integer",
        );
        // A port whose address cannot be read: forwards to it are not "to nowhere".
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\nip = \"10.0.0.3\"\n[[forward]]\nproto = \"tcp\"\nlisten = \"0.0.0.0:80\"\nto = \"10.0.0.3:80\"\n"),
            8,
            6,
            "`ip` must be an IPv4 address",
        );
        // A bad subnet: addresses on that bridge are not checked against it.
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\nsubnet = \"10.0.0.1/24\"\n[[port]]\nname = \"p\"\nbridge = \"b\"\nip = \"10.0.0.3/16\"\n",
            4,
            10,
            "host bits set",
        );
        // A port without a name is "this port".
        assert_eq!(
            errs(&with_head("[[port]]\nbridge = \"br9\"\n")),
            vec![
                "5:1: missing required key `name` in [[port]]",
                "6:10: this port names bridge `br9`, which no [[bridge]] defines",
            ]
        );
        // Dotted keys make tables without headers; still reported at the key.
        err1(
            "name = \"x\"\nbridge.name = \"b\"\n",
            2,
            1,
            "`bridge` must be an array of tables ([[bridge]]), not a table",
        );
    }

    #[test]
    fn port_macs() {
        let p = |mac: &str| {
            with_head(&format!(
                "[[port]]\nname = \"p\"\nbridge = \"br0\"\nmac = \"{mac}\"\n"
            ))
        };
        err1(
            &p("01:00:5e:00:00:01"),
            8,
            7,
            "mac 01:00:5e:00:00:01 is a multicast address",
        );
        err1(
            &p("00:00:00:00:00:00"),
            8,
            7,
            "mac 00:00:00:00:00:00 is not a usable address",
        );
        err1(
            &p("02:00:00:00:00"),
            8,
            7,
            "`mac` must be six hex bytes like \"02:00:ac:10:01:03\", not `02:00:00:00:00`",
        );
        err1(&p("02:00:00:00:00:0g"), 8, 7, "`mac` must be six hex bytes");
        err1(&p("02-00-00-00-00-01"), 8, 7, "`mac` must be six hex bytes");
        err1(
            &p("02:00:00:00:00:01:02"),
            8,
            7,
            "`mac` must be six hex bytes",
        );
        // Explicit duplicate.
        err1(
            &with_head("[[port]]\nname = \"a\"\nbridge = \"br0\"\nmac = \"02:00:00:00:00:01\"\n[[port]]\nname = \"b\"\nbridge = \"br0\"\nmac = \"02:00:00:00:00:01\"\n"),
            12,
            7,
            "mac 02:00:00:00:00:01 of port `b` is already used by port `a`",
        );
        // An explicit mac clashing with one generated from an address (reported at the later port's ip).
        err1(
            &with_head("[[port]]\nname = \"a\"\nbridge = \"br0\"\nmac = \"02:00:0a:00:00:05\"\n[[port]]\nname = \"b\"\nbridge = \"br0\"\nip = \"10.0.0.5/24\"\n"),
            12,
            6,
            "default mac 02:00:0a:00:00:05 of port `b` is already used by port `a`; set `mac`",
        );
    }

    #[test]
    fn port_ips() {
        let p = |ip: &str| {
            with_head(&format!(
                "[[port]]\nname = \"p\"\nbridge = \"br0\"\nip = \"{ip}\"\n"
            ))
        };
        err1(
            &p("10.0.1.5/24"),
            8,
            6,
            "ip 10.0.1.5/24 is outside subnet 10.0.0.0/24 of bridge `br0`",
        );
        err1(&p("10.0.0.5/16"), 8, 6, "ip 10.0.0.5/16 must have the prefix of subnet 10.0.0.0/24 of bridge `br0`: use 10.0.0.5/24");
        err1(
            &p("10.0.0.0/24"),
            8,
            6,
            "ip 10.0.0.0/24 is the network address of subnet 10.0.0.0/24",
        );
        err1(
            &p("10.0.0.255/24"),
            8,
            6,
            "ip 10.0.0.255/24 is the broadcast address",
        );
        err1(
            &p("10.0.0.1/24"),
            8,
            6,
            "ip 10.0.0.1/24 is the gateway of bridge `br0`",
        );
        err1(
            &p("10.0.0.5"),
            8,
            6,
            "`ip` must be an IPv4 address with prefix like \"172.16.1.3/24\", not `10.0.0.5`",
        );
        err1(&p("10.0.0.256/24"), 8, 6, "`ip` must be an IPv4 address");
        lab(&p("10.0.0.2/24"));
        // Explicit gateway moves the forbidden address.
        lab(&with_head("gateway = \"10.0.0.254\"\n[[port]]\nname = \"p\"\nbridge = \"br0\"\nip = \"10.0.0.1/24\"\n"));
        err1(
            &with_head("[[port]]\nname = \"a\"\nbridge = \"br0\"\nip = \"10.0.0.9/24\"\n[[port]]\nname = \"b\"\nbridge = \"br0\"\nip = \"10.0.0.9/24\"\n"),
            12,
            6,
            "ip 10.0.0.9 is already used by port `a`",
        );
        // No subnet on the bridge: any ordinary address.
        lab("name = \"x\"\n[[bridge]]\nname = \"b\"\n[[port]]\nname = \"p\"\nbridge = \"b\"\nip = \"203.0.113.7/32\"\n");
        err1("name = \"x\"\n[[bridge]]\nname = \"b\"\n[[port]]\nname = \"p\"\nbridge = \"b\"\nip = \"224.0.0.1/24\"\n", 7, 6, "not a usable unicast address");
    }

    #[test]
    fn hashed_macs_are_stable_unicast_and_local() {
        let text = with_head(
            "[[port]]\nname = \"a\"\nbridge = \"br0\"\n[[port]]\nname = \"b\"\nbridge = \"br0\"\n",
        );
        let l1 = lab(&text);
        let l2 = lab(&text);
        let (a, b) = (l1.ports[0].mac, l1.ports[1].mac);
        assert_eq!(a, l2.ports[0].mac);
        assert_ne!(a, b);
        assert_eq!(a[0], 0x02);
        assert_eq!(a, hashed_mac("t", "a"));
        // Another lab name gives other addresses.
        assert_ne!(hashed_mac("u", "a"), a);
    }

    #[test]
    fn a_port_impairment_is_parsed_or_refused_at_its_value() {
        let l = lab(&with_head(
            "[[port]]\nname = \"p\"\nbridge = \"br0\"\nimpair = \"delay=20ms loss=1%\"\n",
        ));
        let i = l.ports[0].impair.unwrap();
        assert_eq!(i.delay, std::time::Duration::from_millis(20));
        let e = errs(&with_head(
            "[[port]]\nname = \"p\"\nbridge = \"br0\"\nimpair = \"loss=200%\"\n",
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains(":10: `impair`: `loss=200%`"), "{e:?}");
    }

    #[test]
    fn mirrors_are_unique_and_underlay_is_reserved() {
        let e = errs(&with_head(
            "[[port]]\nname = \"p\"\nbridge = \"br0\"\nmirror = \"m0\"\n[[port]]\nname = \"q\"\nbridge = \"br0\"\nmirror = \"m0\"\n[[port]]\nname = \"underlay\"\nbridge = \"br0\"\n",
        ));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("already another port's mirror"), "{e:?}");
        assert!(e[1].contains("`underlay` is taken"), "{e:?}");
    }

    #[test]
    fn names_the_kernel_would_rewrite_and_mtus_a_tap_refuses_are_errors() {
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\nifname = \"eth%d\"\n"),
            8,
            10,
            "not a valid interface name",
        );
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\nmirror = \"m%d\"\n"),
            8,
            10,
            "not a valid interface name",
        );
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\nmtu = 65535\n",
            4,
            7,
            "`mtu` must be between 68 and 65521",
        );
        assert!(parse("t", "name = \"x\"\n[[bridge]]\nname = \"b\"\nmtu = 65521\n").is_ok());
    }

    #[test]
    fn mirrors_and_the_interfaces_of_ports_in_tapnets_own_namespace_are_not_shared() {
        // A mirror named as an earlier port's interface (its name, without `netns`).
        err1(
            &with_head("[[port]]\nname = \"a\"\nbridge = \"br0\"\n[[port]]\nname = \"b\"\nbridge = \"br0\"\nnetns = \"n\"\nmirror = \"a\"\n"),
            12,
            10,
            "mirror `a` is already the interface of port `a` in tapnet's own namespace",
        );
        // ... or as its own port's.
        err1(
            &with_head(
                "[[port]]\nname = \"a\"\nbridge = \"br0\"\nifname = \"tap0\"\nmirror = \"tap0\"\n",
            ),
            9,
            10,
            "mirror `tap0` is already the interface of port `a` in tapnet's own namespace",
        );
        // A later port's interface named as an earlier mirror.
        err1(
            &with_head("[[port]]\nname = \"a\"\nbridge = \"br0\"\nnetns = \"n\"\nmirror = \"m0\"\n[[port]]\nname = \"b\"\nbridge = \"br0\"\nifname = \"m0\"\n"),
            13,
            10,
            "interface `m0` in tapnet's own namespace is already the mirror of port `a`",
        );
        // Inside a container's namespace the same name is another device.
        lab(&with_head("[[port]]\nname = \"a\"\nbridge = \"br0\"\nnetns = \"n\"\nifname = \"m0\"\nmirror = \"m0\"\n"));
    }
}
