//! `[[service]]`: names, VIPs (IPv4: inside a routed bridge's subnet; IPv6: inside a
//! bridge's subnet6 or outside every one; never a host's or gateway's address; one
//! per protocol), and backends (hosts, not VIPs or gateways, of the VIP's family).
//! Leaves [`SInfo`] for forwards to a VIP.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};

use super::bridge::BInfo;
use super::ipv6::in_net6;
use super::port::PInfo;
use super::values::{bridge_label, broadcast, cidr, in_net, proto_name, service_label, valid_name};
use crate::model::{Proto, ServiceCfg};
use crate::reader::{q, Cx, Sec, F};

pub(crate) const SERVICE_KEYS: &[&str] = &["name", "vip", "proto", "backends"];

/// What the service checks leave for the forward checks.
pub(super) struct SInfo<'a> {
    pub(super) name: Option<&'a str>,
    pub(super) proto: Option<Proto>,
    /// The VIP, either family (what a forward may target).
    pub(super) vip: Option<SocketAddr>,
    pub(super) backends: Vec<F<SocketAddr>>,
}

/// Parses one "ip:port" or "[ip6]:port" string; `what` names it in messages.
fn sockaddr(cx: &mut Cx<'_>, f: F<&str>, what: &str, example: &str) -> Option<SocketAddr> {
    cx.sockaddr_any(f, what, example)
}

/// Why an IPv6 VIP cannot be, or None: inside a bridge's subnet6 it must not be the
/// subnet-router anycast address, the gateway6 or a port's ip6; outside every subnet6
/// it is reached through the containers' default route (the router). Never a
/// link-local, multicast, loopback or unspecified address.
fn check_vip6(
    v: SocketAddr,
    a: Ipv6Addr,
    binfo: &[BInfo<'_>],
    pinfo: &[PInfo<'_>],
) -> Option<String> {
    if a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || in_net6(a, Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10)
    {
        return Some(format!(
            "vip {v} is not a unicast global or unique local address"
        ));
    }
    let b = binfo
        .iter()
        .find(|b| b.net6.is_some_and(|(n, p)| in_net6(a, n, p)))?;
    let (n, p) = b.net6.unwrap_or((Ipv6Addr::UNSPECIFIED, 0));
    if a == n {
        Some(format!(
            "vip {v} is the subnet-router anycast address of {n}/{p} (RFC 4291)"
        ))
    } else if b.gateway6 == Some(a) {
        Some(format!(
            "vip {v} is the gateway6 of {}",
            bridge_label(b.name)
        ))
    } else {
        pinfo
            .iter()
            .find(|p| p.ip6 == Some(a))
            .map(|p| format!("vip {v} uses the ip6 of {}", p.label()))
    }
}

/// Why an IPv4 VIP cannot be, or None.
fn check_vip4(
    v: SocketAddr,
    a: Ipv4Addr,
    binfo: &[BInfo<'_>],
    pinfo: &[PInfo<'_>],
    subnets_incomplete: bool,
) -> Option<String> {
    let a32 = u32::from(a);
    match binfo.iter().find(|b| in_net(a32, b.net)) {
        None if subnets_incomplete => None,
        None => Some(format!("vip {v} is not inside any bridge's subnet")),
        Some(b) => {
            let (n, p) = b.net.unwrap_or_default();
            if a32 == n {
                Some(format!(
                    "vip {v} is the network address of subnet {}",
                    cidr(n, p)
                ))
            } else if a32 == broadcast(n, p) {
                Some(format!(
                    "vip {v} is the broadcast address of subnet {}",
                    cidr(n, p)
                ))
            } else if b.gateway == Some(a32) {
                Some(format!(
                    "vip {v} is the gateway of {}",
                    bridge_label(b.name)
                ))
            } else {
                pinfo
                    .iter()
                    .find(|p| p.ip == Some(a))
                    .map(|p| format!("vip {v} uses the address of {}", p.label()))
            }
        }
    }
}

/// Why an IPv6 backend cannot be, or None: a port's ip6, or an address inside a
/// bridge's subnet6 that is not its subnet-router anycast address or gateway6.
fn check_backend6(
    b: SocketAddr,
    a: Ipv6Addr,
    binfo: &[BInfo<'_>],
    pinfo: &[PInfo<'_>],
) -> Option<String> {
    if let Some(br) = binfo
        .iter()
        .find(|x| x.net6.is_some_and(|(n, p)| in_net6(a, n, p)))
    {
        let (n, p) = br.net6.unwrap_or((Ipv6Addr::UNSPECIFIED, 0));
        if br.gateway6 == Some(a) {
            Some(format!(
                "backend {b} is the gateway6 of {}",
                bridge_label(br.name)
            ))
        } else if a == n {
            Some(format!(
                "backend {b} is the subnet-router anycast address of {n}/{p}"
            ))
        } else {
            None
        }
    } else if pinfo.iter().any(|p| p.ip6 == Some(a)) {
        None
    } else {
        Some(format!(
            "backend {b} is not inside any bridge's subnet6 and no port holds it"
        ))
    }
}

/// Returns the services, what the forward checks need, and whether some VIP could not
/// be read.
pub(super) fn services<'a>(
    cx: &mut Cx<'_>,
    root: &Sec<'a>,
    binfo: &[BInfo<'_>],
    pinfo: &[PInfo<'_>],
    subnets_incomplete: bool,
) -> (Vec<ServiceCfg>, Vec<SInfo<'a>>, bool) {
    let mut cfgs = Vec::new();
    let mut infos: Vec<SInfo<'a>> = Vec::new();
    let mut name_lines: Vec<usize> = Vec::new();
    let mut incomplete = false;
    for s in cx.array(root, "service", "[[service]]") {
        cx.check_keys(&s, SERVICE_KEYS);
        cx.require(&s, &["name", "vip", "proto", "backends"]);
        let name = cx.str_(&s, "name");
        let mut name_ok = false;
        if let Some(n) = name {
            if !valid_name(n.v, 32) {
                cx.err(
                    n.at,
                    format!(
                        "service name {} must be 1 to 32 characters of A-Z a-z 0-9 _ . -",
                        q(n.v)
                    ),
                );
            } else if let Some(i) = infos.iter().position(|x| x.name == Some(n.v)) {
                cx.err(
                    n.at,
                    format!(
                        "duplicate service name {} (first defined on line {})",
                        q(n.v),
                        name_lines[i]
                    ),
                );
            } else {
                name_ok = true;
            }
        }
        let proto = cx.proto(&s);

        let mut vip = None;
        let vipf = cx.str_(&s, "vip");
        if let Some(f) = vipf {
            vip = sockaddr(cx, f, "`vip`", "172.16.1.100:80");
            if let Some(v) = vip {
                let msg = match v.ip() {
                    std::net::IpAddr::V4(a) => check_vip4(v, a, binfo, pinfo, subnets_incomplete),
                    std::net::IpAddr::V6(a) => check_vip6(v, a, binfo, pinfo),
                };
                if let Some(msg) = msg {
                    cx.err(f.at, msg);
                }
                if let Some(other) = infos
                    .iter()
                    .find(|o| o.vip == Some(v) && proto.is_some() && o.proto == proto)
                {
                    cx.err(
                        f.at,
                        format!(
                            "{} vip {v} is already used by {}",
                            proto_name(proto),
                            service_label(other.name)
                        ),
                    );
                }
            }
        }
        if vip.is_none() && s.has("vip") {
            incomplete = true;
        }

        let mut backends = Vec::new();
        if let Some(list) = cx.str_list(&s, "backends") {
            if list.v.is_empty() {
                cx.err(
                    list.at,
                    "`backends` must list at least one \"ip:port\" address",
                );
            }
            for f in list.v {
                if let Some(b) = sockaddr(cx, f, "each backend", "172.16.1.3:80") {
                    if backends.iter().any(|x: &F<SocketAddr>| x.v == b) {
                        cx.err(f.at, format!("backend {b} is listed twice"));
                    } else if let Some(v) = vip.filter(|v| v.is_ipv4() != b.is_ipv4()) {
                        // The router translates within a family; crossing families is
                        // NAT64's business (RFC 6146), not a service's.
                        cx.err(
                            f.at,
                            format!(
                                "backend {b} is not of the vip's family: vip {v} takes {} backends",
                                if v.is_ipv4() { "IPv4" } else { "IPv6" }
                            ),
                        );
                    } else {
                        backends.push(F { v: b, at: f.at });
                    }
                }
            }
        }

        cfgs.push(ServiceCfg {
            pos: cx.pos(s.at),
            name: name.map_or_else(String::new, |n| n.v.to_string()),
            vip: vip.unwrap_or(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))),
            proto: proto.unwrap_or(Proto::Tcp),
            backends: backends.iter().map(|b| b.v).collect(),
        });
        name_lines.push(cx.line(name.map_or(s.at, |n| n.at)));
        infos.push(SInfo {
            name: if name_ok { name.map(|n| n.v) } else { None },
            proto,
            vip,
            backends,
        });
    }

    // Backends, now that every VIP is known.
    for svc in &infos {
        for b in &svc.backends {
            let msg = if let Some(other) = infos
                .iter()
                .find(|o| o.vip.map(|v| v.ip()) == Some(b.v.ip()))
            {
                Some(format!(
                    "backend {} is the vip of {}, not a host",
                    b.v,
                    service_label(other.name)
                ))
            } else {
                match b.v.ip() {
                    std::net::IpAddr::V4(a) => {
                        check_backend4(b.v, a, binfo, pinfo, subnets_incomplete)
                    }
                    std::net::IpAddr::V6(a) => check_backend6(b.v, a, binfo, pinfo),
                }
            };
            if let Some(msg) = msg {
                cx.err(b.at, msg);
            }
        }
    }
    (cfgs, infos, incomplete)
}

/// Why an IPv4 backend cannot be, or None.
fn check_backend4(
    b: SocketAddr,
    a: Ipv4Addr,
    binfo: &[BInfo<'_>],
    pinfo: &[PInfo<'_>],
    subnets_incomplete: bool,
) -> Option<String> {
    let a32 = u32::from(a);
    let holder = pinfo.iter().find(|p| p.ip == Some(a));
    if let Some(br) = binfo.iter().find(|x| in_net(a32, x.net)) {
        let (n, p) = br.net.unwrap_or_default();
        if br.gateway == Some(a32) {
            Some(format!(
                "backend {b} is the gateway of {}",
                bridge_label(br.name)
            ))
        } else if a32 == n || a32 == broadcast(n, p) {
            Some(format!(
                "backend {b} is not a host address of subnet {}",
                cidr(n, p)
            ))
        } else {
            None
        }
    } else if subnets_incomplete {
        None
    } else if let Some(p) = holder {
        // A port on a bridge without a subnet: the router has no leg there.
        Some(format!(
            "backend {b} is {}'s address, on a bridge with no subnet: the router reaches only hosts inside a bridge's subnet",
            p.label()
        ))
    } else {
        Some(format!(
            "backend {b} is not inside any bridge's subnet and no port holds it"
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;

    #[test]
    fn services() {
        // Port on lines 5-9, the service's name on 11, vip 12, proto 13, backends 14.
        let good = svc(
            "api",
            "10.0.0.100:80",
            "tcp",
            "[\"10.0.0.3:80\", \"10.0.0.4:80\"]",
        );
        let l = lab(&with_head(&format!("{PORT_WEB}{good}")));
        assert_eq!(l.services[0].backends.len(), 2);
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                svc("api", "10.9.0.100:80", "tcp", "[\"10.0.0.3:80\"]")
            )),
            12,
            7,
            "vip 10.9.0.100:80 is not inside any bridge's subnet",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                svc("api", "10.0.0.3:80", "tcp", "[\"10.0.0.4:80\"]")
            )),
            12,
            7,
            "vip 10.0.0.3:80 uses the address of port `web`",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                svc("api", "10.0.0.1:80", "tcp", "[\"10.0.0.3:80\"]")
            )),
            12,
            7,
            "vip 10.0.0.1:80 is the gateway of bridge `br0`",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                svc("api", "10.0.0.100", "tcp", "[\"10.0.0.3:80\"]")
            )),
            12,
            7,
            "`vip` must be an IPv4 or IPv6 address and port like \"172.16.1.100:80\" or \"[2001:db8::1]:80\"",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                svc("api", "10.0.0.100:80", "sctp", "[\"10.0.0.3:80\"]")
            )),
            13,
            9,
            "`proto` must be \"tcp\" or \"udp\", not `sctp`",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                svc("api", "10.0.0.100:80", "tcp", "[]")
            )),
            14,
            12,
            "`backends` must list at least one",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                svc(
                    "api",
                    "10.0.0.100:80",
                    "tcp",
                    "[\"10.0.0.3:80\", \"10.5.0.3:80\"]"
                )
            )),
            14,
            28,
            "backend 10.5.0.3:80 is not inside any bridge's subnet and no port holds it",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                svc(
                    "api",
                    "10.0.0.100:80",
                    "tcp",
                    "[\"10.0.0.3:80\", \"10.0.0.3:80\"]"
                )
            )),
            14,
            28,
            "backend 10.0.0.3:80 is listed twice",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                svc("api", "10.0.0.100:80", "tcp", "[\"10.0.0.3:0\"]")
            )),
            14,
            13,
            "each backend 10.0.0.3:0: the port must be between 1 and 65535",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                svc("api", "10.0.0.100:80", "tcp", "[\"10.0.0.1:80\"]")
            )),
            14,
            13,
            "backend 10.0.0.1:80 is the gateway of bridge `br0`",
        );
        // Duplicate names and VIPs; the same VIP over udp is another service.
        let two = format!(
            "{PORT_WEB}{good}{}",
            svc("api", "10.0.0.100:80", "tcp", "[\"10.0.0.3:80\"]")
        );
        assert_eq!(
            errs(&with_head(&two)),
            vec![
                "16:8: duplicate service name `api` (first defined on line 11)",
                "17:7: tcp vip 10.0.0.100:80 is already used by service `api`",
            ]
        );
        lab(&with_head(&format!(
            "{PORT_WEB}{good}{}",
            svc("dns", "10.0.0.100:80", "udp", "[\"10.0.0.3:80\"]")
        )));
    }

    #[test]
    fn backend_on_a_bridge_without_subnet_is_out_of_the_routers_reach() {
        err1("name = \"x\"\n[[bridge]]\nname = \"b\"\nsubnet = \"10.0.0.0/24\"\n[[bridge]]\nname = \"flat\"\n[[port]]\nname = \"p\"\nbridge = \"flat\"\nip = \"192.168.5.5/24\"\n[[service]]\nname = \"s\"\nvip = \"10.0.0.50:1\"\nproto = \"udp\"\nbackends = [\"192.168.5.5:1\", \"10.0.0.77:1\"]\n",
            15,
            13,
            "backend 192.168.5.5:1 is port `p`'s address, on a bridge with no subnet",
        );
    }

    #[test]
    fn ipv6_services() {
        // Bridge br0 (lines 2-5) dual-stack; web on 6-11; the service's vip on 14,
        // backends on 16.
        let head = "name = \"t\"\n[[bridge]]\nname = \"br0\"\nsubnet = \"10.0.0.0/24\"\nsubnet6 = \"fd00:16:1::/64\"\n[[port]]\nname = \"web\"\nbridge = \"br0\"\nnetns = \"web\"\nip = \"10.0.0.3/24\"\nip6 = \"fd00:16:1::3/64\"\n";
        let t = |vip: &str, backends: &str| format!("{head}{}", svc("api", vip, "tcp", backends));
        let l = lab(&t(
            "[fd00:16:1::100]:80",
            "[\"[fd00:16:1::3]:80\", \"[fd00:16:1::4]:8080\"]",
        ));
        assert_eq!(l.services[0].vip, "[fd00:16:1::100]:80".parse().unwrap());
        assert_eq!(l.services[0].backends.len(), 2);
        // Outside every subnet6: reached by the default route.
        lab(&t("[fd00:99::100]:80", "[\"[fd00:16:1::3]:80\"]"));
        err1(
            &t("[fd00:16:1::100]:80", "[\"10.0.0.3:80\"]"),
            16,
            13,
            "backend 10.0.0.3:80 is not of the vip's family: vip [fd00:16:1::100]:80 takes IPv6 backends",
        );
        err1(
            &t("10.0.0.100:80", "[\"[fd00:16:1::3]:80\"]"),
            16,
            13,
            "takes IPv4 backends",
        );
        err1(
            &t("[fd00:16:1::1]:80", "[\"[fd00:16:1::3]:80\"]"),
            14,
            7,
            "vip [fd00:16:1::1]:80 is the gateway6 of bridge `br0`",
        );
        err1(
            &t("[fd00:16:1::3]:80", "[\"[fd00:16:1::4]:80\"]"),
            14,
            7,
            "vip [fd00:16:1::3]:80 uses the ip6 of port `web`",
        );
        err1(
            &t("[fd00:16:1::]:80", "[\"[fd00:16:1::3]:80\"]"),
            14,
            7,
            "subnet-router anycast address",
        );
        err1(
            &t("[fe80::1]:80", "[\"[fd00:16:1::3]:80\"]"),
            14,
            7,
            "is not a unicast global or unique local address",
        );
        err1(
            &t("[fe80::1%2]:80", "[\"[fd00:16:1::3]:80\"]"),
            14,
            7,
            "no scope here",
        );
        err1(
            &t("[fd00:16:1::100]:80", "[\"[fd00:16:9::3]:80\"]"),
            16,
            13,
            "backend [fd00:16:9::3]:80 is not inside any bridge's subnet6 and no port holds it",
        );
        err1(
            &t("[fd00:16:1::100]:80", "[\"[fd00:16:1::1]:80\"]"),
            16,
            13,
            "backend [fd00:16:1::1]:80 is the gateway6 of bridge `br0`",
        );
        err1(
            &t("[fd00:16:1::100]", "[\"[fd00:16:1::3]:80\"]"),
            14,
            7,
            "`vip` must be an IPv4 or IPv6 address and port like",
        );
    }
}
