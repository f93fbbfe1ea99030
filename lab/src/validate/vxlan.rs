//! `[vxlan]`: this host's tunnel endpoint (a unicast address or 0.0.0.0, on a UDP
//! port no `[[forward]]` takes) and its peers (unicast, each once, not the endpoint
//! itself).

use std::net::SocketAddrV4;

use crate::model::{ForwardCfg, Proto, VxlanCfg};
use crate::reader::{Cx, Sec, F};

pub(crate) const VXLAN_KEYS: &[&str] = &["listen", "peers"];

/// The `[vxlan]` table, if the lab has one and its `listen` could be read.
pub(super) fn vxlan(cx: &mut Cx<'_>, root: &Sec<'_>, forwards: &[ForwardCfg]) -> Option<VxlanCfg> {
    let s = cx.table(root, "vxlan", "[vxlan]")?;
    endpoint(cx, &s, forwards)
}

fn endpoint(cx: &mut Cx<'_>, s: &Sec<'_>, forwards: &[ForwardCfg]) -> Option<VxlanCfg> {
    cx.check_keys(s, VXLAN_KEYS);
    cx.require(s, &["listen", "peers"]);
    let listen = cx.str_(s, "listen").and_then(|f| {
        cx.sockaddr(f, "`listen`", "192.0.2.1:4789")
            .map(|v| F { v, at: f.at })
    });
    if let Some(l) = listen {
        let ip = *l.v.ip();
        if ip.is_multicast() || ip.is_broadcast() {
            cx.err(
                l.at,
                format!("`listen` {} must be a unicast address (or 0.0.0.0)", l.v),
            );
        } else if let Some(f) = forwards.iter().find(|f| shares_udp_port(f, l.v)) {
            cx.err(
                l.at,
                format!(
                    "`listen` {}: udp port {} is already forwarded by the [[forward]] on line {}",
                    l.v,
                    l.v.port(),
                    f.pos.line
                ),
            );
        }
    }
    let mut peers: Vec<SocketAddrV4> = Vec::new();
    if let Some(list) = cx.str_list(s, "peers") {
        if list.v.is_empty() {
            cx.err(
                list.at,
                "`peers` must list at least one \"ip:port\" tunnel endpoint",
            );
        }
        for f in list.v {
            let Some(p) = cx.sockaddr(f, "each peer", "192.0.2.2:4789") else {
                continue;
            };
            let ip = *p.ip();
            if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
                cx.err(f.at, format!("peer {p} must be a unicast address"));
            } else if peers.contains(&p) {
                cx.err(f.at, format!("peer {p} is listed twice"));
            } else if listen.is_some_and(|l| l.v == p) {
                cx.err(
                    f.at,
                    format!("peer {p} is this host's own `listen` address"),
                );
            } else {
                peers.push(p);
            }
        }
    }
    Some(VxlanCfg {
        pos: cx.pos(s.at),
        listen: listen?.v,
        peers,
    })
}

/// Whether a UDP forward listens where the endpoint would: the same port, on the same
/// address or on every address (0.0.0.0) of either. The two sockets could never both
/// be bound, on any host.
fn shares_udp_port(forward: &ForwardCfg, listen: SocketAddrV4) -> bool {
    let (a, b) = (forward.listen.ip(), listen.ip());
    forward.proto == Proto::Udp
        && forward.listen.port() == listen.port()
        && (a == b || a.is_unspecified() || b.is_unspecified())
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;

    #[test]
    fn vxlan_table() {
        let vx = |listen: &str, peers: &str| {
            format!("name = \"x\"\n[vxlan]\nlisten = \"{listen}\"\npeers = {peers}\n")
        };
        lab(&vx("192.0.2.1:4789", "[\"192.0.2.2:4789\"]"));
        err1(
            &vx("192.0.2.1:4789", "[]"),
            4,
            9,
            "`peers` must list at least one",
        );
        err1(
            &vx("192.0.2.1:4789", "[\"192.0.2.2:4789\", \"192.0.2.2:4789\"]"),
            4,
            28,
            "peer 192.0.2.2:4789 is listed twice",
        );
        err1(
            &vx("192.0.2.1:4789", "[\"192.0.2.1:4789\"]"),
            4,
            10,
            "peer 192.0.2.1:4789 is this host's own `listen` address",
        );
        err1(
            &vx("192.0.2.1:4789", "[\"192.0.2.2\"]"),
            4,
            10,
            "each peer must be an IPv4 address and port like \"192.0.2.2:4789\"",
        );
        err1(
            &vx("192.0.2.1:4789", "[\"0.0.0.0:4789\"]"),
            4,
            10,
            "peer 0.0.0.0:4789 must be a unicast address",
        );
        err1(
            &vx("192.0.2.1", "[\"192.0.2.2:4789\"]"),
            3,
            10,
            "`listen` must be an IPv4 address and port like \"192.0.2.1:4789\"",
        );
        err1(
            &vx("192.0.2.1:0", "[\"192.0.2.2:4789\"]"),
            3,
            10,
            "`listen` 192.0.2.1:0: the port must be between 1 and 65535",
        );
    }

    #[test]
    fn a_udp_forward_and_the_endpoint_never_share_a_port() {
        // Lines 5-9 hold a port, 10-13 the forward, 14-16 [vxlan].
        let text = |proto: &str, fwd: &str, vx: &str| {
            with_head(&format!(
                "{PORT_WEB}[[forward]]\nproto = \"{proto}\"\nlisten = \"{fwd}\"\nto = \"10.0.0.3:53\"\n\
                 [vxlan]\nlisten = \"{vx}\"\npeers = [\"192.0.2.2:4789\"]\n"
            ))
        };
        for (fwd, vx) in [
            ("4789", "192.0.2.1:4789"),
            ("192.0.2.1:4789", "0.0.0.0:4789"),
            ("192.0.2.1:4789", "192.0.2.1:4789"),
        ] {
            err1(
                &text("udp", fwd, vx),
                15,
                10,
                &format!(
                    "`listen` {vx}: udp port 4789 is already forwarded by the [[forward]] on line 10"
                ),
            );
        }
        // TCP, another port or another address: both can be bound.
        lab(&text("tcp", "4789", "192.0.2.1:4789"));
        lab(&text("udp", "4790", "192.0.2.1:4789"));
        lab(&text("udp", "127.0.0.1:4789", "192.0.2.1:4789"));
    }
}
