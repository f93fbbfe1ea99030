//! `tapnet trace PORT 'PACKET'`: a synthetic packet entering at PORT, followed through
//! the datapath's own decisions, each step said in a line: the ingress checks every
//! frame passes ([`Datapath::admit`]), the bridge's forwarding decision
//! ([`vswitch::Bridge::peek`]), and what each internal port's handler would do
//! ([`vswitch::Handler::trace`]: the router deciding on a copy of itself, the VXLAN
//! endpoint's peer choice with its MTU and GSO checks). Nothing is sent, no table
//! changes, no drop is counted.
//!
//! PACKET is `PROTO SRC -> DST [size N]`: `tcp 172.16.1.3:40000 -> 172.16.1.2:3306`,
//! `udp 10.0.0.2:5000 -> 10.0.0.9:53 size 2000`, `icmp 172.16.1.3 -> 8.8.8.8` (an
//! echo request). `size` is the Ethernet frame's length in bytes, header included: the
//! payload is grown to fill it, or the frame cut short (under 14 bytes, a runt).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd;
use std::time::Instant;

use serde_json::{json, Value};
use vswitch::frame::{destination_mac, VnetHdr, ETH_HDR_LEN, VNET_HDR_LEN};
use vswitch::wire::ethernet::{EthernetRepr, ETHERTYPE_IPV4};
use vswitch::wire::icmpv4::{self, IcmpRepr};
use vswitch::wire::ipv4::{Ipv4Packet, Ipv4Repr, HEADER_LEN as IP_HEADER_LEN};
use vswitch::wire::tcp::{self, TcpRepr};
use vswitch::wire::{fill_l4_checksum, udp, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use vswitch::{Datapath, Decision, Handler, Mac, PortId, Traced};

use crate::namespaces::Namespaces;

/// A parsed packet description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketSpec {
    pub proto: u8,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// The Ethernet frame's length, if given.
    pub size: Option<usize>,
}

/// The largest `size`: a 64 KiB IP packet in its Ethernet frame.
const MAX_SIZE: usize = ETH_HDR_LEN + 65535;

/// Parses `PROTO SRC -> DST [size N]`; the error says what is expected.
pub fn parse(text: &str) -> Result<PacketSpec, String> {
    const FORM: &str = "expected `tcp|udp|icmp SRC -> DST [size BYTES]`, e.g. `tcp 172.16.1.3:40000 -> 172.16.1.2:3306` (no ports for icmp; over IPv6, `icmp6` or `tcp [fd00::3]:4000 -> [fd00::2]:80`)";
    let words: Vec<&str> = text.split_whitespace().collect();
    let (head, size) = match words[..] {
        [p, s, "->", d] => ([p, s, d], None),
        [p, s, "->", d, "size", n] => ([p, s, d], Some(n)),
        _ => return Err(format!("bad packet {text:?}: {FORM}")),
    };
    let [proto, src, dst] = head;
    let proto = match proto {
        "tcp" => PROTO_TCP,
        "udp" => PROTO_UDP,
        "icmp" => PROTO_ICMP,
        other => return Err(format!("bad protocol {other:?}: {FORM}")),
    };
    let addr = |s: &str| -> Result<SocketAddrV4, String> {
        if proto == PROTO_ICMP {
            s.parse::<Ipv4Addr>()
                .map(|ip| SocketAddrV4::new(ip, 0))
                .map_err(|_| format!("bad address {s:?}: {FORM}"))
        } else {
            s.parse::<SocketAddrV4>()
                .ok()
                .filter(|a| a.port() != 0)
                .ok_or_else(|| {
                    format!("bad address {s:?} (an IPv4 address and a port 1-65535): {FORM}")
                })
        }
    };
    let size = match size {
        None => None,
        Some(n) => Some(
            n.parse::<usize>()
                .ok()
                .filter(|&n| n <= MAX_SIZE)
                .ok_or_else(|| {
                    format!("bad size {n:?}: 0 to {MAX_SIZE} bytes of Ethernet frame")
                })?,
        ),
    };
    Ok(PacketSpec {
        proto,
        src: addr(src)?,
        dst: addr(dst)?,
        size,
    })
}

/// The frame a container would send: virtio-net header, Ethernet, IPv4 (DF) and a TCP
/// SYN, a UDP datagram or an ICMP echo request, checksummed; grown or cut to `size`.
fn build(spec: &PacketSpec, src_mac: Mac, dst_mac: Mac) -> Vec<u8> {
    let l4_header = match spec.proto {
        PROTO_TCP => tcp::HEADER_LEN,
        PROTO_UDP => udp::HEADER_LEN,
        _ => icmpv4::HEADER,
    };
    let headers = ETH_HDR_LEN + IP_HEADER_LEN + l4_header;
    let payload = spec.size.map_or(0, |s| s.saturating_sub(headers));
    let mut f = vec![0u8; VNET_HDR_LEN + headers + payload];
    VnetHdr::default().emit(&mut f);
    EthernetRepr {
        dst: dst_mac,
        src: src_mac,
        ethertype: ETHERTYPE_IPV4,
    }
    .emit(&mut f[VNET_HDR_LEN..]);
    let ip = &mut f[VNET_HDR_LEN + ETH_HDR_LEN..];
    Ipv4Repr {
        src: *spec.src.ip(),
        dst: *spec.dst.ip(),
        protocol: spec.proto,
        ttl: 64,
        ident: 0,
        dont_frag: true,
        payload_len: l4_header + payload,
    }
    .emit(ip);
    let (src, dst) = (*spec.src.ip(), *spec.dst.ip());
    let l4 = &mut ip[IP_HEADER_LEN..];
    let (sp, dp) = (spec.src.port(), spec.dst.port());
    match spec.proto {
        PROTO_TCP | PROTO_UDP => {
            emit_probe_l4(spec.proto, sp, dp, payload, l4);
            fill_l4_checksum(src, dst, spec.proto, l4);
        }
        _ => {
            let data = vec![0u8; payload];
            IcmpRepr {
                kind: icmpv4::ECHO_REQUEST,
                code: 0,
                rest: [0x74, 0x6e, 0, 1],
                data: &data,
            }
            .emit_message(l4);
        }
    }
    if let Some(size) = spec.size {
        f.truncate(VNET_HDR_LEN + size);
    }
    f
}

/// The IP packet's ends and TTL (or hop limit), as a step prints them.
fn addrs_of(frame: &[u8]) -> String {
    if let Some(ip) = frame
        .get(VNET_HDR_LEN + ETH_HDR_LEN..)
        .and_then(vswitch::wire::ipv6::Ipv6Packet::new_checked)
    {
        return match vswitch::wire::ports(ip.payload())
            .filter(|_| ip.next_header() == PROTO_TCP || ip.next_header() == PROTO_UDP)
        {
            Some((sp, dp)) => format!(
                "[{}]:{sp} -> [{}]:{dp} hop limit {}",
                ip.src(),
                ip.dst(),
                ip.hop_limit()
            ),
            None => format!("{} -> {} hop limit {}", ip.src(), ip.dst(), ip.hop_limit()),
        };
    }
    let Some(ip) = frame
        .get(VNET_HDR_LEN + ETH_HDR_LEN..)
        .and_then(|p| Ipv4Packet::new_quoted(p).ok())
    else {
        return "(no IPv4 header)".into();
    };
    match vswitch::wire::ports(ip.payload()).filter(|_| ip.protocol() != PROTO_ICMP) {
        Some((sp, dp)) => format!("{}:{sp} -> {}:{dp} ttl {}", ip.src(), ip.dst(), ip.ttl()),
        None => format!("{} -> {} ttl {}", ip.src(), ip.dst(), ip.ttl()),
    }
}

/// The internal ports on `port`'s bridge, with their handlers.
fn internal_ports<'a>(
    dp: &'a Datapath,
    port: PortId,
) -> impl Iterator<Item = (PortId, &'a dyn Handler)> + 'a {
    let bridge = dp.port(port).map(|p| p.info.bridge);
    dp.ports()
        .filter(move |p| Some(p.info.bridge) == bridge)
        .filter_map(move |p| Some((p.id, dp.handler(p.internal?)?)))
}

/// The container's own choice of a destination MAC: on its subnet, the holder of the
/// address (a port, or whoever answers ARP for it: the router for a VIP); elsewhere,
/// its gateway. `None` (with the step saying why) if it has no route.
fn first_hop(
    dp: &Datapath,
    namespaces: &Namespaces,
    ingress: PortId,
    spec: &PacketSpec,
    port: &str,
    now: Instant,
    steps: &mut Vec<String>,
) -> Option<Mac> {
    let view = dp.port(ingress)?;
    let (own, prefix) = view
        .info
        .ip
        .as_deref()
        .and_then(|ip| ip.split_once('/'))
        .and_then(|(a, p)| Some((a.parse::<Ipv4Addr>().ok()?, p.parse::<u8>().ok()?)))
        .map_or((None, 32), |(a, p)| (Some(a), p));
    let mask = vrouter::route::mask(prefix);
    let dst = *spec.dst.ip();
    let on_link = own.is_some_and(|o| u32::from(o) & mask == u32::from(dst) & mask);
    // A broadcast or a multicast group: no ARP, a MAC of its own (RFC 1112).
    let subnet_broadcast =
        own.is_some_and(|o| prefix < 31 && u32::from(dst) == u32::from(o) | !mask);
    if dst.is_broadcast() || subnet_broadcast {
        steps.push(format!(
            "{port}: {dst} is a broadcast: sent to ff:ff:ff:ff:ff:ff"
        ));
        return Some(Mac::BROADCAST);
    }
    if dst.is_multicast() {
        let o = dst.octets();
        let mac = Mac([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]);
        steps.push(format!("{port}: {dst} is a multicast group: sent to {mac}"));
        return Some(mac);
    }
    // What the container's own neighbour table says comes first: it is what the
    // container will use (a host behind a VXLAN peer, say, that tapnet only knows
    // by MAC).
    let next_hop = if on_link {
        Some(dst)
    } else {
        internal_ports(dp, ingress)
            .find_map(|(p, h)| h.gateway(p))
            .map(|(gw, _)| gw)
    };
    if let Some(mac) =
        next_hop.and_then(|ip| containers_neighbour(namespaces, view.info.netns.as_deref(), ip))
    {
        let via = if on_link {
            "is on its link".to_string()
        } else {
            format!(
                "is off its link: sent to its gateway {}",
                next_hop.expect("some")
            )
        };
        steps.push(format!(
            "{port}: {dst} {via}, at {mac} (from the container's own neighbour table)"
        ));
        return Some(mac);
    }
    if !on_link {
        return match internal_ports(dp, ingress).find_map(|(p, h)| h.gateway(p)) {
            Some((gw, mac)) => {
                steps.push(format!(
                    "{port}: {dst} is off its link: sent to its gateway {gw} at {mac}"
                ));
                Some(mac)
            }
            None => {
                steps.push(format!("{port}: {dst} is off its link and its bridge has no gateway: the container has no route"));
                None
            }
        };
    }
    let holder = dp.ports().find(|p| {
        p.internal.is_none()
            && p.info.bridge == view.info.bridge
            && p.info
                .ip
                .as_deref()
                .and_then(|ip| ip.split_once('/'))
                .map(|(a, _)| a)
                == Some(&dst.to_string())
    });
    if let Some(h) = holder {
        steps.push(format!(
            "{port}: {dst} is on its link, at {} (port {})",
            h.info.mac, h.info.name
        ));
        return Some(h.info.mac);
    }
    match internal_ports(dp, ingress).find_map(|(p, h)| h.answers_arp(p, dst, now)) {
        Some((mac, how)) => {
            steps.push(format!("{port}: {dst} is on its link, at {mac} ({how})"));
            Some(mac)
        }
        None => {
            steps.push(format!(
                "{port}: {dst} is on its link but not known here: its ARP request floods"
            ));
            Some(Mac::BROADCAST)
        }
    }
}

/// The MAC the neighbour table of namespace `netns` (a port's container) has for `ip`,
/// if any; tapnet's own namespace is not asked.
fn containers_neighbour(namespaces: &Namespaces, netns: Option<&str>, ip: Ipv4Addr) -> Option<Mac> {
    let ns = namespaces.open(Some(netns?)).ok()?;
    let mut rtnl = host::rtnl::Rtnl::in_netns_fd(ns.as_fd()).ok()?;
    rtnl.neighbour_v4(ip).ok()?.map(Mac)
}

/// Follows `packet` entering at the port named `port`; the steps as JSON, with where
/// the packet leaves (`egress`: a port, `flood: ...`, `host`, `vxlan PEERS`, or null
/// where it stops).
pub fn trace(
    dp: &Datapath,
    namespaces: &Namespaces,
    port: &str,
    packet: &str,
    now: Instant,
) -> Value {
    if let Some(spec) = v6::parse(packet) {
        return match spec {
            Ok(spec) => v6::trace(dp, port, &spec, now),
            Err(e) => json!({"error": e}),
        };
    }
    let spec = match parse(packet) {
        Ok(s) => s,
        Err(e) => return json!({"error": e}),
    };
    let Some(ingress) = dp.port_by_name(port) else {
        return json!({"error": format!("no port `{port}` in this lab")});
    };
    if let Some(kind) = dp
        .port(ingress)
        .and_then(|p| dp.handler(p.internal?))
        .map(|h| h.kind())
    {
        return json!({"error": format!("port `{port}` is the {kind}'s own: trace a packet from a container's port")});
    }
    let mut steps: Vec<String> = Vec::new();
    let Some(dst_mac) = first_hop(dp, namespaces, ingress, &spec, port, now, &mut steps) else {
        return json!({"steps": steps, "egress": null});
    };
    let src_mac = dp.port(ingress).expect("found by name").info.mac;
    let frame = build(&spec, src_mac, dst_mac);
    let egress = follow(dp, ingress, frame, now, &mut steps);
    json!({"steps": steps, "egress": egress})
}

/// Checks a packet text, IPv4 or IPv6, without a lab: the error says what is expected.
pub fn check(text: &str) -> Result<(), String> {
    match v6::parse(text) {
        Some(r) => r.map(drop),
        None => parse(text).map(drop),
    }
}

/// IPv6 packets: `icmp6 A -> B`, `tcp [A]:P -> [B]:P`, `udp [A]:P -> [B]:P`.
mod v6 {
    use std::net::{Ipv6Addr, SocketAddrV6};
    use std::time::Instant;

    use serde_json::{json, Value};
    use vswitch::frame::{VnetHdr, ETH_HDR_LEN, VNET_HDR_LEN};
    use vswitch::wire::ethernet::{EthernetRepr, ETHERTYPE_IPV6};
    use vswitch::wire::icmpv6::{self, Ipv6Repr};
    use vswitch::wire::tcp;
    use vswitch::wire::{udp, PROTO_TCP, PROTO_UDP};
    use vswitch::{Datapath, Mac};

    const FORM: &str = "expected `icmp6 ADDR -> ADDR` or `tcp|udp [ADDR]:PORT -> [ADDR]:PORT [size BYTES]`, e.g. `tcp [fd00:16:1::3]:4000 -> [fd00:16:1::2]:80`";

    pub struct Spec {
        proto: u8,
        src: SocketAddrV6,
        dst: SocketAddrV6,
        size: Option<usize>,
    }

    /// None: not an IPv6 packet (no `icmp6`, no `[`, no `icmp` between IPv6
    /// addresses); else the spec or why not.
    pub fn parse(text: &str) -> Option<Result<Spec, String>> {
        let words: Vec<&str> = text.split_whitespace().collect();
        // `icmp A -> B` with IPv6 addresses means ICMPv6, as `ping` takes either.
        let icmp_v6 = words.first() == Some(&"icmp")
            && words.get(1).is_some_and(|a| a.parse::<Ipv6Addr>().is_ok());
        let is_v6 = words.first() == Some(&"icmp6") || icmp_v6 || text.contains('[');
        if !is_v6 {
            return None;
        }
        let (head, size) = match words[..] {
            [p, s, "->", d] => ([p, s, d], None),
            [p, s, "->", d, "size", n] => ([p, s, d], Some(n)),
            _ => return Some(Err(format!("bad packet {text:?}: {FORM}"))),
        };
        let [proto, src, dst] = head;
        let proto = match proto {
            "tcp" => PROTO_TCP,
            "udp" => PROTO_UDP,
            "icmp6" | "icmp" => icmpv6::NEXT_HEADER,
            other => return Some(Err(format!("bad protocol {other:?}: {FORM}"))),
        };
        let addr = |s: &str| -> Result<SocketAddrV6, String> {
            if proto == icmpv6::NEXT_HEADER {
                s.parse::<Ipv6Addr>()
                    .map(|ip| SocketAddrV6::new(ip, 0, 0, 0))
                    .map_err(|_| format!("bad address {s:?}: {FORM}"))
            } else {
                s.parse::<SocketAddrV6>()
                    .ok()
                    .filter(|a| a.port() != 0)
                    .ok_or_else(|| {
                        format!("bad address {s:?} ([an IPv6 address]:a port 1-65535): {FORM}")
                    })
            }
        };
        let size = match size.map(|n| n.parse::<usize>().ok().filter(|n| *n <= super::MAX_SIZE)) {
            None => None,
            Some(Some(n)) => Some(n),
            Some(None) => {
                return Some(Err(format!(
                    "bad size: 0 to {} bytes of Ethernet frame",
                    super::MAX_SIZE
                )))
            }
        };
        Some((|| {
            Ok(Spec {
                proto,
                src: addr(src)?,
                dst: addr(dst)?,
                size,
            })
        })())
    }

    /// The IPv6 counterpart of [`super::trace`]: the container's first hop (on its
    /// subnet6 the holder's MAC, elsewhere its gateway's), then the real pipeline.
    pub fn trace(dp: &Datapath, port: &str, spec: &Spec, now: Instant) -> Value {
        let Some(ingress) = dp.port_by_name(port) else {
            return json!({"error": format!("no port `{port}` in this lab")});
        };
        let mut steps: Vec<String> = Vec::new();
        let view = dp.port(ingress).expect("found by name");
        let dst = *spec.dst.ip();
        let dst_mac = if dst.is_multicast() {
            let mac = icmpv6::multicast_mac(dst);
            steps.push(format!("{port}: {dst} is a multicast group: sent to {mac}"));
            mac
        } else if let Some(h) = dp.ports().find(|p| {
            p.internal.is_none() && p.info.bridge == view.info.bridge && p.info.ip6 == Some(dst)
        }) {
            steps.push(format!(
                "{port}: {dst} is on its link, at {} (port {})",
                h.info.mac, h.info.name
            ));
            h.info.mac
        } else {
            // The router's leg on this bridge, if it has one: the default IPv6 route.
            match super::internal_ports(dp, ingress).find(|(_, h)| h.kind() == "router") {
                Some((p, _)) => {
                    let mac = dp.port(p).expect("listed").info.mac;
                    steps.push(format!(
                        "{port}: {dst} is not a port of its bridge: sent to the router at {mac} (its default IPv6 route)"
                    ));
                    mac
                }
                None => {
                    steps.push(format!("{port}: {dst} is not on its bridge, which has no router: the container has no route"));
                    return json!({"steps": steps, "egress": null});
                }
            }
        };
        let frame = build(spec, view.info.mac, dst_mac);
        let egress = super::follow(dp, ingress, frame, now, &mut steps);
        json!({"steps": steps, "egress": egress})
    }

    fn build(spec: &Spec, src_mac: Mac, dst_mac: Mac) -> Vec<u8> {
        let l4_header = match spec.proto {
            PROTO_TCP => tcp::HEADER_LEN,
            PROTO_UDP => udp::HEADER_LEN,
            _ => 8,
        };
        let headers = ETH_HDR_LEN + 40 + l4_header;
        let payload = spec.size.map_or(0, |s| s.saturating_sub(headers));
        let mut f = vec![0u8; VNET_HDR_LEN + headers + payload];
        VnetHdr::default().emit(&mut f);
        EthernetRepr {
            dst: dst_mac,
            src: src_mac,
            ethertype: ETHERTYPE_IPV6,
        }
        .emit(&mut f[VNET_HDR_LEN..]);
        let (src, dst) = (*spec.src.ip(), *spec.dst.ip());
        Ipv6Repr {
            src,
            dst,
            next_header: spec.proto,
            hop_limit: 64,
            payload_len: l4_header + payload,
        }
        .emit(&mut f[VNET_HDR_LEN + ETH_HDR_LEN..]);
        let l4 = &mut f[VNET_HDR_LEN + ETH_HDR_LEN + 40..];
        match spec.proto {
            PROTO_TCP | PROTO_UDP => {
                let (sp, dp) = (spec.src.port(), spec.dst.port());
                super::emit_probe_l4(spec.proto, sp, dp, payload, l4);
                icmpv6::fill_l4_checksum6(src, dst, spec.proto, l4);
            }
            _ => {
                l4[..8].copy_from_slice(&[icmpv6::ECHO_REQUEST, 0, 0, 0, 0x74, 0x6e, 0, 1]);
                icmpv6::fill_checksum(src, dst, l4);
            }
        }
        if let Some(size) = spec.size {
            f.truncate(VNET_HDR_LEN + size);
        }
        f
    }
}

/// Writes the header of the probe `trace` sends for `proto` into `l4`: a TCP SYN
/// (what opens a connection: the decisions that matter are made on it), or a UDP
/// header for `payload` bytes; its checksum is the caller's, by family.
fn emit_probe_l4(proto: u8, src_port: u16, dst_port: u16, payload: usize, l4: &mut [u8]) {
    if proto == PROTO_TCP {
        TcpRepr {
            src_port,
            dst_port,
            seq: 1,
            ack: 0,
            flags: tcp::SYN,
            window: 64240,
        }
        .emit(l4);
    } else {
        udp::emit_header(src_port, dst_port, payload, l4);
    }
}

/// Hops a frame may take between bridges (through router legs) before trace stops.
const MAX_HOPS: usize = 8;

/// Follows `frame` from `at` hop by hop; where it leaves, if it does.
fn follow(
    dp: &Datapath,
    mut at: PortId,
    mut frame: Vec<u8>,
    now: Instant,
    steps: &mut Vec<String>,
) -> Option<String> {
    for _ in 0..MAX_HOPS {
        let here = dp.port(at)?;
        // The checks every frame entering a bridge passes, injected ones too.
        if let Err(reason) = dp.admit(at, &frame) {
            steps.push(format!(
                "port {}: dropped on entry ({}), {} bytes",
                here.info.name,
                reason.name(),
                frame.len().saturating_sub(VNET_HDR_LEN)
            ));
            return None;
        }
        let bridge = dp.bridge(here.info.bridge)?;
        let eth = &frame[VNET_HDR_LEN..];
        let dst = destination_mac(eth);
        let targets: Vec<PortId> = match bridge.peek(at, eth, now) {
            Decision::Unicast(p) => {
                let to = dp.port(p)?;
                steps.push(format!(
                    "bridge {}: {dst} learned on port {}: unicast there",
                    bridge.name(),
                    to.info.name
                ));
                vec![p]
            }
            Decision::Flood => {
                let targets: Vec<PortId> = bridge.flood_targets(at).collect();
                let names: Vec<String> = targets
                    .iter()
                    .filter_map(|p| dp.port(*p))
                    .map(|p| p.info.name.clone())
                    .collect();
                let why = if dst.is_multicast() {
                    "a broadcast or multicast"
                } else {
                    "not learned"
                };
                let to = if names.is_empty() {
                    "no other port: it goes nowhere".to_string()
                } else {
                    names.join(", ")
                };
                steps.push(format!(
                    "bridge {}: {dst} {why}: floods to {to}",
                    bridge.name()
                ));
                targets
            }
            Decision::Drop(r) => {
                steps.push(format!("bridge {}: dropped ({})", bridge.name(), r.name()));
                return None;
            }
        };
        let flood = targets.len() != 1;
        let mut next: Option<(PortId, Vec<u8>)> = None;
        let mut leaves: Vec<String> = Vec::new();
        for t in targets {
            let there = dp.port(t)?;
            let Some(handler) = there.internal.and_then(|h| dp.handler(h)) else {
                if there.link_down {
                    // As the last write found it: the container set its link down.
                    if !flood {
                        steps.push(format!(
                            "port {}: its link is down (the container set it down): dropped (egress_link_down)",
                            there.info.name
                        ));
                        return None;
                    }
                    continue;
                }
                if !flood {
                    let place = there
                        .info
                        .netns
                        .as_deref()
                        .map_or("tapnet's namespace".to_string(), |n| format!("netns {n}"));
                    let impaired = dp
                        .impairment(t)
                        .map_or(String::new(), |i| format!(", impaired there: {i}"));
                    steps.push(format!(
                        "leaves by port {} ({place}, {}): {}{impaired}",
                        there.info.name,
                        there.info.ifname,
                        addrs_of(&frame)
                    ));
                    return Some(there.info.name.clone());
                }
                leaves.push(there.info.name.clone());
                continue;
            };
            // Each internal port decides on a copy, as each gets its own in a flood.
            let mut copy = frame.clone();
            match handler.trace(t, &mut copy, now) {
                Traced::Inject { via, step } => {
                    steps.push(step);
                    if next.is_none() {
                        next = Some((via, copy));
                    }
                }
                Traced::Leaves { egress, step } => {
                    steps.push(step);
                    leaves.push(egress);
                }
                Traced::Done { step } => steps.push(step),
                // In a flood, an internal port that is not addressed drops its copy
                // (a router leg: not_for_router); only an addressed one's drop is news.
                Traced::Drop { step, .. } if !flood || destination_is(dp, t, dst) => {
                    steps.push(step);
                }
                Traced::Drop { .. } => {}
            }
        }
        match next {
            Some((via, copy)) => {
                at = via;
                frame = copy;
            }
            None if flood && !leaves.is_empty() => {
                return Some(format!("flood: {}", leaves.join(", ")));
            }
            None => return leaves.pop(),
        }
    }
    steps.push(format!("stopped after {MAX_HOPS} hops"));
    None
}

/// Whether `mac` is port `port`'s own.
fn destination_is(dp: &Datapath, port: PortId, mac: Mac) -> bool {
    dp.port(port).is_some_and(|p| p.info.mac == mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch::checksum;
    use vswitch::gro::{checksums, Checksums};

    #[test]
    fn packet_texts_parse_or_say_what_is_expected() {
        let p = parse("tcp 172.16.1.3:40000 -> 172.16.1.2:3306").unwrap();
        assert_eq!(p.proto, 6);
        assert_eq!(p.dst, "172.16.1.2:3306".parse().unwrap());
        assert_eq!(parse("icmp 10.0.0.1 -> 8.8.8.8").unwrap().proto, 1);
        assert_eq!(
            parse("udp 10.0.0.1:1 -> 10.0.0.2:2 size 2000")
                .unwrap()
                .size,
            Some(2000)
        );
        for bad in [
            "",
            "tcp 1.2.3.4:1 > 1.2.3.5:2",
            "sctp 1.2.3.4:1 -> 1.2.3.5:2",
            "udp 1.2.3.4 -> 1.2.3.5:2",
            "tcp 1.2.3.4:0 -> 1.2.3.5:2",
            "icmp 1.2.3.4:5 -> 1.2.3.5",
            "udp 1.2.3.4:1 -> 1.2.3.5:2 size",
            "udp 1.2.3.4:1 -> 1.2.3.5:2 size -1",
            "udp 1.2.3.4:1 -> 1.2.3.5:2 size 70000",
            "udp 1.2.3.4:1 -> 1.2.3.5:2 mtu 5",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                e.contains("expected") || e.contains("bad size"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn built_frames_carry_valid_checksums_and_their_size() {
        let (a, b) = (Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]));
        for text in [
            "tcp 10.0.0.2:40000 -> 10.0.1.2:80",
            "udp 10.0.0.2:5000 -> 10.0.1.2:53",
            "udp 10.0.0.2:5000 -> 10.0.1.2:53 size 1514",
            "tcp 10.0.0.2:40000 -> 10.0.1.2:80 size 9000",
        ] {
            let spec = parse(text).unwrap();
            let f = build(&spec, a, b);
            let ip = &f[VNET_HDR_LEN + ETH_HDR_LEN..];
            assert_eq!(checksums(ip), Checksums::Valid, "{text}");
            if let Some(size) = spec.size {
                assert_eq!(f.len() - VNET_HDR_LEN, size, "{text}");
            }
        }
        let icmp = build(&parse("icmp 10.0.0.2 -> 10.0.1.2").unwrap(), a, b);
        let ip = Ipv4Packet::new_checked(&icmp[VNET_HDR_LEN + ETH_HDR_LEN..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(checksum::sum(ip.payload()), 0xffff);
        // Cut short: a runt.
        let runt = build(&parse("icmp 10.0.0.2 -> 10.0.1.2 size 10").unwrap(), a, b);
        assert_eq!(runt.len(), VNET_HDR_LEN + 10);
    }
}
