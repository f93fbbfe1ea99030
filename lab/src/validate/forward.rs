//! `[[forward]]`: published host ports (a bare port, "ip:port" or "[ipv6]:port"; one
//! forward per protocol, family and port) and their targets (IPv4 or IPv6), which a
//! port or a service must hold on a bridge with a `subnet` (or `subnet6`), so that
//! replies come back.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::bridge::BInfo;
use super::port::PInfo;
use super::service::SInfo;
use super::values::{in_net, proto_name};
use crate::model::{ForwardCfg, Proto};
use crate::reader::{q, Cx, Sec, F};

pub(crate) const FORWARD_KEYS: &[&str] = &["proto", "listen", "to"];

impl Cx<'_> {
    /// A forward's `listen`: "ip:port", "[ipv6]:port", or a bare port ("8080")
    /// meaning every IPv4 address of the host (0.0.0.0), as `docker -p 8080:80` does
    /// (IPv6 clients need a forward of their own, on "[::]:8080").
    fn listen_addr(&mut self, f: F<&str>) -> Option<SocketAddr> {
        if f.v.is_empty() || !f.v.bytes().all(|b| b.is_ascii_digit()) {
            if f.v.parse::<SocketAddr>().is_err() {
                self.err(
                    f.at,
                    format!(
                        "`listen` must be a port like \"8080\" or an address and port \
                         like \"127.0.0.1:8080\" or \"[::]:8080\", not {}",
                        q(f.v)
                    ),
                );
                return None;
            }
            let a = self.sockaddr_any(f, "`listen`", "127.0.0.1:8080")?;
            if a.ip().is_multicast() {
                self.err(
                    f.at,
                    format!("`listen` {a} must be a unicast address (or 0.0.0.0 or [::])"),
                );
                return None;
            }
            return Some(a);
        }
        match f.v.parse::<u16>() {
            Ok(port) if port > 0 => Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))),
            _ => {
                self.err(
                    f.at,
                    format!(
                        "`listen` port {}: the port must be between 1 and 65535",
                        q(f.v)
                    ),
                );
                None
            }
        }
    }
}

pub(super) fn forwards(
    cx: &mut Cx<'_>,
    root: &Sec<'_>,
    binfo: &[BInfo<'_>],
    pinfo: &[PInfo<'_>],
    sinfo: &[SInfo<'_>],
    targets_incomplete: bool,
) -> Vec<ForwardCfg> {
    let mut cfgs = Vec::new();
    // (proto, IPv6?, listen port, line of the first)
    let mut seen: Vec<(Proto, bool, u16, usize)> = Vec::new();
    for s in cx.array(root, "forward", "[[forward]]") {
        cx.check_keys(&s, FORWARD_KEYS);
        cx.require(&s, &["listen", "to"]);
        // `proto` may be left out: tcp, as `docker -p` does.
        let proto = if s.has("proto") {
            cx.proto(&s)
        } else {
            Some(Proto::Tcp)
        };
        let listen = cx.str_(&s, "listen").and_then(|f| {
            Some(F {
                v: cx.listen_addr(f)?,
                at: f.at,
            })
        });
        let to = cx.str_(&s, "to").and_then(|f| {
            Some(F {
                v: cx.sockaddr_any(f, "`to`", "172.16.1.3:80")?,
                at: f.at,
            })
        });
        if let (Some(p), Some(l)) = (proto, listen) {
            let v6 = l.v.is_ipv6();
            if let Some((_, _, _, line)) = seen
                .iter()
                .find(|(sp, s6, port, _)| *sp == p && *s6 == v6 && *port == l.v.port())
            {
                cx.err(
                    l.at,
                    format!(
                        "{} port {}{} is already forwarded by the [[forward]] on line {line}",
                        proto_name(Some(p)),
                        l.v.port(),
                        if v6 { " (IPv6)" } else { "" }
                    ),
                );
            } else {
                seen.push((p, v6, l.v.port(), cx.line(s.at)));
            }
        }
        if let Some(t) = to {
            let held = match t.v.ip() {
                IpAddr::V4(ip) => pinfo.iter().any(|p| p.ip == Some(ip)),
                IpAddr::V6(ip) => pinfo.iter().any(|p| p.ip6 == Some(ip)),
            } || sinfo.iter().any(|x| {
                x.vip == Some(t.v) && (proto.is_none() || x.proto.is_none() || x.proto == proto)
            });
            let routed = match t.v.ip() {
                IpAddr::V4(ip) => binfo.iter().any(|b| in_net(u32::from(ip), b.net)),
                IpAddr::V6(ip) => binfo.iter().any(|b| {
                    b.net6
                        .is_some_and(|(net, p)| super::ipv6::in_net6(ip, net, p))
                }),
            };
            let subnets_incomplete = binfo.iter().any(|b| b.has_subnet && b.net.is_none());
            if !held && !targets_incomplete {
                cx.err(
                    t.at,
                    format!("forward to {}: no port or service holds that address", t.v),
                );
            } else if held && !routed && !subnets_incomplete {
                cx.err(
                    t.at,
                    format!(
                        "forward to {}: that address is on no bridge with a `subnet` (or \
                         `subnet6`), so its replies could not come back (give its bridge one)",
                        t.v
                    ),
                );
            }
        }
        if let (Some(proto), Some(listen), Some(to)) = (proto, listen, to) {
            cfgs.push(ForwardCfg {
                pos: cx.pos(s.at),
                proto,
                listen: listen.v,
                to: to.v,
            });
        }
    }
    cfgs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn forwards_in_either_family() {
        let head = "name = \"x\"\n[[bridge]]\nname = \"br0\"\nsubnet = \"10.0.0.0/24\"\nsubnet6 = \"fd00:1::/64\"\n[[port]]\nname = \"web\"\nbridge = \"br0\"\nip = \"10.0.0.3/24\"\nip6 = \"fd00:1::3/64\"\n";
        let lab = lab(&format!(
            "{head}[[forward]]\nlisten = \"[::]:8080\"\nto = \"[fd00:1::3]:80\"\n[[forward]]\nlisten = \"8080\"\nto = \"[fd00:1::3]:80\"\n[[forward]]\nlisten = \"[::1]:8081\"\nto = \"10.0.0.3:80\"\n"
        ));
        assert_eq!(lab.forwards[0].listen, "[::]:8080".parse().unwrap());
        assert_eq!(lab.forwards[1].listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(lab.forwards[2].to, "10.0.0.3:80".parse().unwrap());
        let one = |extra: &str| format!("{head}[[forward]]\n{extra}\n");
        err1(
            &one("listen = \"[::]:8080\"\nto = \"[fd00:1::4]:80\""),
            13,
            6,
            "forward to [fd00:1::4]:80: no port or service holds that address",
        );
        err1(
            &one("listen = \"[::ffff:127.0.0.1]:8080\"\nto = \"10.0.0.3:80\""),
            12,
            10,
            "an IPv4-mapped address; write the IPv4 address (127.0.0.1:8080)",
        );
        err1(
            &one("listen = \"[ff02::1]:8080\"\nto = \"10.0.0.3:80\""),
            12,
            10,
            "must be a unicast address",
        );
        err1(
            &format!(
                "{head}[[forward]]\nlisten = \"[::]:80\"\nto = \"10.0.0.3:80\"\n[[forward]]\nlisten = \"[::1]:80\"\nto = \"10.0.0.3:80\"\n"
            ),
            15,
            10,
            "tcp port 80 (IPv6) is already forwarded by the [[forward]] on line 11",
        );
    }

    #[test]
    fn forwards() {
        // Lines 5-9 hold the port, 10-13 the forward.
        let ok = lab(&with_head(&format!(
            "{PORT_WEB}{}",
            fwd("udp", "127.0.0.1:53", "10.0.0.3:53")
        )));
        assert_eq!(ok.forwards[0].proto, Proto::Udp);
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                fwd("icmp", "0.0.0.0:1", "10.0.0.3:1")
            )),
            11,
            9,
            "`proto` must be \"tcp\" or \"udp\", not `icmp`",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                fwd("tcp", "0.0.0.0:0", "10.0.0.3:1")
            )),
            12,
            10,
            "`listen` 0.0.0.0:0: the port must be between 1 and 65535",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                fwd("tcp", "0.0.0.0:65536", "10.0.0.3:1")
            )),
            12,
            10,
            "`listen` must be a port like \"8080\" or an address and port like \"127.0.0.1:8080\" or \"[::]:8080\", not `0.0.0.0:65536`",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                fwd("tcp", "0.0.0.0:1", "10.0.0.3")
            )),
            13,
            6,
            "`to` must be an IPv4 or IPv6 address and port like",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                fwd("tcp", "0.0.0.0:8080", "172.16.9.9:80")
            )),
            13,
            6,
            "forward to 172.16.9.9:80: no port or service holds that address",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}{}",
                fwd("tcp", "0.0.0.0:8080", "10.0.0.3:80"),
                fwd("tcp", "127.0.0.1:8080", "10.0.0.3:81")
            )),
            16,
            10,
            "tcp port 8080 is already forwarded by the [[forward]] on line 10",
        );
        // The same port number over tcp and udp is fine.
        lab(&with_head(&format!(
            "{PORT_WEB}{}{}",
            fwd("tcp", "0.0.0.0:53", "10.0.0.3:53"),
            fwd("udp", "0.0.0.0:53", "10.0.0.3:53")
        )));
    }

    #[test]
    fn forward_listen_may_be_a_bare_port_and_proto_defaults_to_tcp() {
        // Lines 5-9 hold the port, 10-12 the forward.
        let l = lab(&with_head(&format!(
            "{PORT_WEB}[[forward]]\nlisten = \"8080\"\nto = \"10.0.0.3:80\"\n"
        )));
        let f = &l.forwards[0];
        assert_eq!(f.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(f.proto, Proto::Tcp);
        assert_eq!(f.pos, Pos { line: 10, col: 1 });
        // Inline, with proto given, and with leading zeros.
        let l = lab(&format!(
            "name = \"t\"\nforward = [{{ listen = \"53\", proto = \"udp\", to = \"10.0.0.3:53\" }}, {{ listen = \"0080\", to = \"10.0.0.3:80\" }}]\n[[bridge]]\nname = \"br0\"\nsubnet = \"10.0.0.0/24\"\n{PORT_WEB}"
        ));
        assert_eq!(l.forwards[0].listen, "0.0.0.0:53".parse().unwrap());
        assert_eq!(l.forwards[0].proto, Proto::Udp);
        assert_eq!(l.forwards[1].listen, "0.0.0.0:80".parse().unwrap());
        assert_eq!(l.forwards[1].proto, Proto::Tcp);
        // An address still works as before.
        let l = lab(&with_head(&format!(
            "{PORT_WEB}[[forward]]\nlisten = \"127.0.0.1:8080\"\nto = \"10.0.0.3:80\"\n"
        )));
        assert_eq!(l.forwards[0].listen, "127.0.0.1:8080".parse().unwrap());

        let bad = |listen: &str| {
            with_head(&format!(
                "{PORT_WEB}[[forward]]\nlisten = \"{listen}\"\nto = \"10.0.0.3:80\"\n"
            ))
        };
        for port in ["0", "65536", "99999999999999999999"] {
            err1(
                &bad(port),
                11,
                10,
                &format!("`listen` port `{port}`: the port must be between 1 and 65535"),
            );
        }
        for text in [
            "", "+8080", "-1", " 8080", "8080 ", "http", ":8080", "8080:80",
        ] {
            err1(
                &bad(text),
                11,
                10,
                &format!(
                    "`listen` must be a port like \"8080\" or an address and port like \"127.0.0.1:8080\" or \"[::]:8080\", not `{text}`"
                ),
            );
        }
        // Not a string at all.
        err1(
            &with_head(&format!(
                "{PORT_WEB}[[forward]]\nlisten = 8080\nto = \"10.0.0.3:80\"\n"
            )),
            11,
            10,
            "`listen` must be a string, not an integer",
        );
        // A bare port and an address with the same port are the same port.
        err1(
            &with_head(&format!(
                "{PORT_WEB}[[forward]]\nlisten = \"8080\"\nto = \"10.0.0.3:80\"\n[[forward]]\nproto = \"tcp\"\nlisten = \"127.0.0.1:8080\"\nto = \"10.0.0.3:81\"\n"
            )),
            15,
            10,
            "tcp port 8080 is already forwarded by the [[forward]] on line 10",
        );
        // A bad proto is still an error when given.
        err1(
            &with_head(&format!(
                "{PORT_WEB}[[forward]]\nproto = \"TCP\"\nlisten = \"8080\"\nto = \"10.0.0.3:80\"\n"
            )),
            11,
            9,
            "`proto` must be \"tcp\" or \"udp\", not `TCP`",
        );
        // Without proto the forward is tcp, so a udp service's VIP is not its target.
        let svc = "[[service]]\nname = \"dns\"\nvip = \"10.0.0.100:53\"\nproto = \"udp\"\nbackends = [\"10.0.0.3:53\"]\n";
        err1(
            &with_head(&format!(
                "{PORT_WEB}{svc}[[forward]]\nlisten = \"53\"\nto = \"10.0.0.100:53\"\n"
            )),
            17,
            6,
            "forward to 10.0.0.100:53: no port or service holds that address",
        );
    }

    #[test]
    fn forward_to_a_service_vip() {
        let svc = "[[service]]\nname = \"api\"\nvip = \"10.0.0.100:80\"\nproto = \"tcp\"\nbackends = [\"10.0.0.3:80\"]\n";
        lab(&with_head(&format!(
            "{PORT_WEB}{svc}{}",
            fwd("tcp", "0.0.0.0:8080", "10.0.0.100:80")
        )));
        // Wrong protocol or port: not the service.
        let e = errs(&with_head(&format!(
            "{PORT_WEB}{svc}{}",
            fwd("udp", "0.0.0.0:8080", "10.0.0.100:80")
        )));
        assert_eq!(
            e,
            vec!["18:6: forward to 10.0.0.100:80: no port or service holds that address"]
        );
        let e = errs(&with_head(&format!(
            "{PORT_WEB}{svc}{}",
            fwd("tcp", "0.0.0.0:8080", "10.0.0.100:81")
        )));
        assert_eq!(
            e,
            vec!["18:6: forward to 10.0.0.100:81: no port or service holds that address"]
        );
    }
}
