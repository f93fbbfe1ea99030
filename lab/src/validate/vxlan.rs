//! `[vxlan]`: this host's tunnel endpoint (a unicast address or 0.0.0.0) and its
//! peers (unicast, each once, not the endpoint itself).

use std::net::SocketAddrV4;

use crate::model::VxlanCfg;
use crate::reader::{Cx, Sec, F};

pub(crate) const VXLAN_KEYS: &[&str] = &["listen", "peers"];

/// The `[vxlan]` table, if the lab has one and its `listen` could be read.
pub(super) fn vxlan(cx: &mut Cx<'_>, root: &Sec<'_>) -> Option<VxlanCfg> {
    let s = cx.table(root, "vxlan", "[vxlan]")?;
    endpoint(cx, &s)
}

fn endpoint(cx: &mut Cx<'_>, s: &Sec<'_>) -> Option<VxlanCfg> {
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
}
