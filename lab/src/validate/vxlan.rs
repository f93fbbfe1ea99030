//! `[vxlan]`: this host's tunnel endpoint (a unicast address or 0.0.0.0 / `::`, on a
//! UDP port no `[[forward]]` takes) and its peers (unicast, each once, not the
//! endpoint itself), all of one family: an IPv4 or an IPv6 underlay.

use std::net::{IpAddr, SocketAddr};

use crate::model::{
    ForwardCfg, Proto, VxlanCfg, DEFAULT_ETCD_PORT, DEFAULT_ETCD_PREFIX, DEFAULT_ETCD_TTL_S,
};
use crate::reader::{Cx, Sec, F};

pub(crate) const VXLAN_KEYS: &[&str] = &["listen", "peers", "etcd", "etcd_prefix", "etcd_ttl_s"];

/// The `[vxlan]` table, if the lab has one and its `listen` could be read.
pub(super) fn vxlan(cx: &mut Cx<'_>, root: &Sec<'_>, forwards: &[ForwardCfg]) -> Option<VxlanCfg> {
    let s = cx.table(root, "vxlan", "[vxlan]")?;
    endpoint(cx, &s, forwards)
}

/// Whether `[vxlan] listen` reads as an IPv6 address (the bridges' default MTU
/// depends on it; its errors are reported by [`vxlan`]).
pub(super) fn underlay_v6(root: &Sec<'_>) -> bool {
    root.item("vxlan")
        .and_then(|(item, _)| item.as_table_like()?.get("listen")?.as_str())
        .and_then(|l| l.parse::<SocketAddr>().ok())
        .is_some_and(|l| l.is_ipv6())
}

fn endpoint(cx: &mut Cx<'_>, s: &Sec<'_>, forwards: &[ForwardCfg]) -> Option<VxlanCfg> {
    cx.check_keys(s, VXLAN_KEYS);
    cx.require(s, &["listen"]);
    let etcd = etcd_endpoints(cx, s);
    if !s.has("peers") && !s.has("etcd") {
        cx.err(
            s.at,
            "[vxlan] needs `peers` (static tunnel endpoints), `etcd` (endpoints found through the store), or both",
        );
    }
    let listen = cx.str_(s, "listen").and_then(|f| {
        cx.sockaddr_any(f, "`listen`", "192.0.2.1:4789")
            .map(|v| F { v, at: f.at })
    });
    if let Some(l) = listen {
        let ip = l.v.ip();
        if !unicast_or_any(ip) {
            let any = if ip.is_ipv6() { "::" } else { "0.0.0.0" };
            cx.err(
                l.at,
                format!("`listen` {} must be a unicast address (or {any})", l.v),
            );
        } else if ip.is_unspecified() && !etcd.is_empty() {
            cx.err(
                l.at,
                format!(
                    "`listen` {}: with `etcd`, the other hosts reach this one at the address it registers: give this host's own address, like \"{}:{}\"",
                    l.v,
                    if ip.is_ipv6() { "[2001:db8::1]" } else { "192.0.2.1" },
                    l.v.port()
                ),
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
    let mut peers: Vec<SocketAddr> = Vec::new();
    if let Some(list) = cx.str_list(s, "peers") {
        if list.v.is_empty() && etcd.is_empty() {
            cx.err(
                list.at,
                "`peers` must list at least one \"ip:port\" tunnel endpoint",
            );
        }
        for f in list.v {
            let Some(p) = cx.sockaddr_any(f, "each peer", "192.0.2.2:4789") else {
                continue;
            };
            let ip = p.ip();
            if ip.is_unspecified() || !unicast_or_any(ip) {
                cx.err(f.at, format!("peer {p} must be a unicast address"));
            } else if let Some(l) = listen.filter(|l| l.v.is_ipv6() != p.is_ipv6()) {
                // One socket family carries the tunnel: an IPv4 socket cannot reach an
                // IPv6 peer, nor the other way round.
                let (fam, other) = if l.v.is_ipv6() {
                    ("IPv6", "IPv4")
                } else {
                    ("IPv4", "IPv6")
                };
                cx.err(
                    f.at,
                    format!(
                        "peer {p} is {other}, but `listen` {} is {fam}: the underlay is one family, give every peer as {fam}",
                        l.v
                    ),
                );
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
    let etcd_prefix = cx.str_(s, "etcd_prefix").and_then(|f| {
        let ok = f.v.len() <= 200 && f.v.ends_with('/') && !f.v.chars().any(char::is_control);
        if !ok {
            cx.err(
                f.at,
                "`etcd_prefix` must be up to 200 printable characters ending in `/`, like \"/tapnet/\"",
            );
        }
        ok.then(|| f.v.to_string())
    });
    if etcd.is_empty() && !s.has("etcd") {
        for key in ["etcd_prefix", "etcd_ttl_s"] {
            if s.has(key) {
                cx.err(
                    s.key_at(key),
                    format!("`{key}` needs `etcd` (the store it is for)"),
                );
            }
        }
    }
    let etcd_ttl_s = cx
        .int(s, "etcd_ttl_s", 2, 3600)
        .map_or(DEFAULT_ETCD_TTL_S, |t| t.v as u64);
    Some(VxlanCfg {
        pos: cx.pos(s.at),
        listen: listen?.v,
        peers,
        etcd,
        etcd_prefix: etcd_prefix.unwrap_or_else(|| DEFAULT_ETCD_PREFIX.to_string()),
        etcd_ttl_s,
    })
}

/// `etcd`: endpoints of etcd's client API, each `http://HOST[:PORT]` (HOST an IPv4
/// address or a name; PORT 2379 if left off), each once. Written back with the port.
fn etcd_endpoints(cx: &mut Cx<'_>, s: &Sec<'_>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let Some(list) = cx.str_list(s, "etcd") else {
        return out;
    };
    if list.v.is_empty() {
        cx.err(
            list.at,
            "`etcd` must list at least one endpoint, like \"http://192.0.2.10:2379\"",
        );
    }
    for f in list.v {
        match endpoint_url(f.v) {
            Ok(url) if out.contains(&url) => {
                cx.err(f.at, format!("etcd endpoint {url} is listed twice"))
            }
            Ok(url) => out.push(url),
            Err(why) => cx.err(f.at, format!("etcd endpoint `{}`: {why}", f.v)),
        }
    }
    out
}

/// `http://HOST[:PORT]` as `http://HOST:PORT`, or why not.
fn endpoint_url(text: &str) -> Result<String, String> {
    if text.starts_with("https://") {
        return Err("https is not supported: tapnet speaks plain HTTP to etcd's JSON gateway (put etcd's client port on the underlay, or a TLS proxy on this host)".into());
    }
    let rest = text
        .strip_prefix("http://")
        .ok_or("must be a URL like \"http://192.0.2.10:2379\"")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err("must have no path (etcd's API paths are tapnet's to add), like \"http://192.0.2.10:2379\"".into());
    }
    if rest.chars().any(char::is_whitespace) {
        return Err("must hold no spaces".into());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or("the port must be between 1 and 65535")?,
        ),
        None => (rest, DEFAULT_ETCD_PORT),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !host_ok {
        return Err("the host must be an IPv4 address or a DNS name, with no path".into());
    }
    Ok(format!("http://{host}:{port}"))
}

/// Not multicast, not IPv4's limited broadcast, not an IPv4-mapped IPv6 address (an
/// IPv6 socket that is IPV6_V6ONLY cannot reach one).
fn unicast_or_any(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !a.is_multicast() && !a.is_broadcast(),
        IpAddr::V6(a) => !a.is_multicast() && a.to_ipv4_mapped().is_none(),
    }
}

/// Whether a UDP forward listens where the endpoint would: the same port, on the same
/// address or on every address (0.0.0.0) of either. The two sockets could never both
/// be bound, on any host.
/// Both kinds of socket of an IPv6 address are IPV6_V6ONLY: only the same family
/// can clash.
fn shares_udp_port(forward: &ForwardCfg, listen: SocketAddr) -> bool {
    let (a, b) = (forward.listen.ip(), listen.ip());
    forward.proto == Proto::Udp
        && forward.listen.port() == listen.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a == b || a.is_unspecified() || b.is_unspecified())
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;

    #[test]
    fn etcd_endpoints_and_their_keys() {
        let l = lab("name = \"x\"\n[vxlan]\nlisten = \"192.0.2.1:4789\"\netcd = [\"http://192.0.2.10\", \"http://etcd-2.lab:12379/\"]\n");
        let v = l.vxlan.unwrap();
        assert_eq!(
            v.etcd,
            ["http://192.0.2.10:2379", "http://etcd-2.lab:12379"]
        );
        assert!(v.peers.is_empty());
        assert_eq!(v.etcd_prefix, "/tapnet/");
        assert_eq!(v.etcd_ttl_s, 10);
        let vx =
            |extra: &str| format!("name = \"x\"\n[vxlan]\nlisten = \"192.0.2.1:4789\"\n{extra}\n");
        err1(&vx(""), 2, 1, "[vxlan] needs `peers`");
        err1(
            &vx("etcd = [\"https://192.0.2.10:2379\"]"),
            4,
            9,
            "https is not supported",
        );
        err1(&vx("etcd = [\"192.0.2.10:2379\"]"), 4, 9, "must be a URL");
        err1(&vx("etcd = [\"http://a:0\"]"), 4, 9, "the port must be");
        err1(&vx("etcd = [\"http://a/v3\"]"), 4, 9, "must have no path");
        err1(
            &vx("etcd = [\"http://a:2379/v3\"]"),
            4,
            9,
            "must have no path",
        );
        err1(&vx("etcd = [\"http://a:2379 \"]"), 4, 9, "no spaces");
        err1(
            &vx("etcd = [\"http://a\"]\netcd_prefix = \"tapnet\""),
            5,
            15,
            "ending in `/`",
        );
        err1(
            &vx("peers = [\"192.0.2.2:4789\"]\netcd_ttl_s = 5"),
            5,
            1,
            "needs `etcd`",
        );
        err1(&vx("etcd = []"), 4, 8, "`etcd` must list at least one");
        err1(
            &vx("etcd = [\"http://a\", \"http://a:2379\"]"),
            4,
            21,
            "listed twice",
        );
        err1(
            &vx("etcd = [\"http://a\"]\netcd_ttl_s = 1"),
            5,
            14,
            "`etcd_ttl_s`",
        );
        err1(
            &vx("etcd = [\"http://a\"]\netcd_prefix = \"\""),
            5,
            15,
            "`etcd_prefix`",
        );
        err1(
            "name = \"x\"\n[vxlan]\nlisten = \"0.0.0.0:4789\"\netcd = [\"http://a\"]\n",
            3,
            10,
            "give this host's own address",
        );
    }

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
            "each peer must be an IPv4 or IPv6 address and port like \"192.0.2.2:4789\"",
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
            "`listen` must be an IPv4 or IPv6 address and port like \"192.0.2.1:4789\"",
        );
        err1(
            &vx("192.0.2.1:0", "[\"192.0.2.2:4789\"]"),
            3,
            10,
            "`listen` 192.0.2.1:0: the port must be between 1 and 65535",
        );
    }

    #[test]
    fn an_ipv6_underlay_is_one_family() {
        let vx = |listen: &str, peers: &str| {
            format!("name = \"x\"\n[vxlan]\nlisten = \"{listen}\"\npeers = {peers}\n")
        };
        let l = lab(&vx(
            "[2001:db8::1]:4789",
            "[\"[2001:db8::2]:4789\", \"[2001:db8::3]:4789\"]",
        ));
        let v = l.vxlan.unwrap();
        assert_eq!(v.listen, "[2001:db8::1]:4789".parse().unwrap());
        assert_eq!(v.peers[1], "[2001:db8::3]:4789".parse().unwrap());
        // Written back as the file had it, and read again.
        let back = crate::to_toml(&lab(&vx("[2001:db8::1]:4789", "[\"[2001:db8::2]:4789\"]")));
        assert!(back.contains("listen = \"[2001:db8::1]:4789\""), "{back}");
        lab(&back);
        // Every address, as 0.0.0.0 for IPv4.
        lab(&vx("[::]:4789", "[\"[2001:db8::2]:4789\"]"));
        err1(
            &vx("[2001:db8::1]:4789", "[\"[2001:db8::2]:4789\", \"192.0.2.2:4789\"]"),
            4,
            32,
            "peer 192.0.2.2:4789 is IPv4, but `listen` [2001:db8::1]:4789 is IPv6: the underlay is one family",
        );
        err1(
            &vx("192.0.2.1:4789", "[\"[2001:db8::2]:4789\"]"),
            4,
            10,
            "peer [2001:db8::2]:4789 is IPv6, but `listen` 192.0.2.1:4789 is IPv4",
        );
        err1(
            &vx("[ff02::1]:4789", "[\"[2001:db8::2]:4789\"]"),
            3,
            10,
            "`listen` [ff02::1]:4789 must be a unicast address (or ::)",
        );
        err1(
            &vx("[2001:db8::1]:4789", "[\"[::]:4789\"]"),
            4,
            10,
            "peer [::]:4789 must be a unicast address",
        );
        err1(
            &vx("[2001:db8::1]:4789", "[\"[::ffff:192.0.2.2]:4789\"]"),
            4,
            10,
            "an IPv4-mapped address; write the IPv4 address (192.0.2.2:4789)",
        );
        err1(
            &vx("[2001:db8::1]:4789", "[\"[2001:db8::1]:4789\"]"),
            4,
            10,
            "is this host's own `listen` address",
        );
        err1(
            &vx("2001:db8::1:4789", "[\"[2001:db8::2]:4789\"]"),
            3,
            10,
            "`listen` must be an IPv4 or IPv6 address and port like \"192.0.2.1:4789\" or \"[2001:db8::1]:4789\"",
        );
        err1(
            "name = \"x\"\n[vxlan]\nlisten = \"[::]:4789\"\netcd = [\"http://a\"]\n",
            3,
            10,
            "give this host's own address, like \"[2001:db8::1]:4789\"",
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
