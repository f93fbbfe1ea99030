//! `tapnet trace PORT 'PACKET'`: a synthetic packet entering at PORT, followed through
//! the same decisions the datapath takes (bridge lookup, router with services and NAT,
//! VXLAN), each step said in a line. Bridges are only peeked at and the router decides
//! on a copy of itself: nothing is sent, no table changes.
//!
//! PACKET is `PROTO SRC -> DST`: `tcp 172.16.1.3:40000 -> 172.16.1.2:3306`,
//! `udp 10.0.0.2:5000 -> 10.0.0.9:53`, `icmp 172.16.1.3 -> 8.8.8.8` (an echo request).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use encap::Vtep;
use serde_json::{json, Value};
use vrouter::{Action, RouterHandler};
use vswitch::checksum;
use vswitch::frame::{ETH_HDR_LEN, VNET_HDR_LEN};
use vswitch::{Datapath, Decision, Mac, PortId};

/// A parsed packet description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketSpec {
    pub proto: u8,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
}

/// Parses `PROTO SRC -> DST`; the error says what is expected.
pub fn parse(text: &str) -> Result<PacketSpec, String> {
    const FORM: &str = "expected `tcp|udp|icmp SRC -> DST`, e.g. `tcp 172.16.1.3:40000 -> 172.16.1.2:3306` (no ports for icmp)";
    let words: Vec<&str> = text.split_whitespace().collect();
    let [proto, src, "->", dst] = words[..] else {
        return Err(format!("bad packet {text:?}: {FORM}"));
    };
    let proto = match proto {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        other => return Err(format!("bad protocol {other:?}: {FORM}")),
    };
    let addr = |s: &str| -> Result<SocketAddrV4, String> {
        if proto == 1 {
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
    Ok(PacketSpec {
        proto,
        src: addr(src)?,
        dst: addr(dst)?,
    })
}

/// The frame a container would send: virtio-net header, Ethernet, IPv4 and a TCP SYN,
/// a UDP header or an ICMP echo request, checksummed.
fn build(spec: &PacketSpec, src_mac: Mac, dst_mac: Mac) -> Vec<u8> {
    let l4: Vec<u8> = match spec.proto {
        6 => {
            let mut t = vec![0u8; 20];
            t[0..2].copy_from_slice(&spec.src.port().to_be_bytes());
            t[2..4].copy_from_slice(&spec.dst.port().to_be_bytes());
            t[4..8].copy_from_slice(&1u32.to_be_bytes());
            t[12] = 5 << 4;
            t[13] = 0x02;
            t[14..16].copy_from_slice(&64240u16.to_be_bytes());
            t
        }
        17 => {
            let mut u = vec![0u8; 8];
            u[0..2].copy_from_slice(&spec.src.port().to_be_bytes());
            u[2..4].copy_from_slice(&spec.dst.port().to_be_bytes());
            u[4..6].copy_from_slice(&8u16.to_be_bytes());
            u
        }
        _ => {
            let mut i = vec![8u8, 0, 0, 0, 0x74, 0x6e, 0, 1];
            let c = checksum::checksum(&i);
            i[2..4].copy_from_slice(&c.to_be_bytes());
            i
        }
    };
    let mut f = vec![0u8; VNET_HDR_LEN];
    f.extend_from_slice(&dst_mac.0);
    f.extend_from_slice(&src_mac.0);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = spec.proto;
    ip[12..16].copy_from_slice(&spec.src.ip().octets());
    ip[16..20].copy_from_slice(&spec.dst.ip().octets());
    let c = checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let l4_at = f.len();
    f.extend_from_slice(&l4);
    if spec.proto != 1 {
        let mut pseudo = Vec::with_capacity(12 + l4.len());
        pseudo.extend_from_slice(&ip[12..20]);
        pseudo.extend_from_slice(&[0, spec.proto, 0, l4.len() as u8]);
        pseudo.extend_from_slice(&l4);
        let c = checksum::checksum(&pseudo);
        let at = l4_at + if spec.proto == 6 { 16 } else { 6 };
        f[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    f
}

fn addrs_of(frame: &[u8]) -> String {
    let ip = &frame[VNET_HDR_LEN + ETH_HDR_LEN..];
    let a = |o: usize| Ipv4Addr::new(ip[o], ip[o + 1], ip[o + 2], ip[o + 3]);
    let l4 = (ip[0] & 0x0f) as usize * 4;
    match ip[9] {
        6 | 17 => {
            let p = |o: usize| u16::from_be_bytes([ip[l4 + o], ip[l4 + o + 1]]);
            format!("{}:{} -> {}:{} ttl {}", a(12), p(0), a(16), p(2), ip[8])
        }
        _ => format!("{} -> {} ttl {}", a(12), a(16), ip[8]),
    }
}

fn mac_at(frame: &[u8], at: usize) -> Mac {
    Mac(frame[VNET_HDR_LEN + at..VNET_HDR_LEN + at + 6]
        .try_into()
        .expect("6 bytes"))
}

/// Follows `packet` entering at the port named `port`; the steps as JSON.
pub fn trace(dp: &Datapath, port: &str, packet: &str, now: Instant) -> Value {
    let spec = match parse(packet) {
        Ok(s) => s,
        Err(e) => return json!({"error": e}),
    };
    let Some(ingress) = dp.port_by_name(port) else {
        return json!({"error": format!("no port `{port}` in this lab")});
    };
    let view = dp.port(ingress).expect("found by name");
    let router = dp
        .ports()
        .find_map(|p| p.internal)
        .and_then(|h| dp.handler(h))
        .and_then(|h| h.as_any().downcast_ref::<RouterHandler>());
    let vtep = dp
        .ports()
        .filter_map(|p| p.internal)
        .filter_map(|h| dp.handler(h))
        .find_map(|h| h.as_any().downcast_ref::<Vtep>());
    let mut steps: Vec<String> = Vec::new();

    // The container's own choice of first hop: on its subnet, the holder of the
    // address (a port, or a VIP at the router's MAC); elsewhere, its gateway.
    let prefix = view
        .info
        .ip
        .as_deref()
        .and_then(|ip| ip.split_once('/'))
        .and_then(|(_, p)| p.parse::<u8>().ok())
        .unwrap_or(32);
    let own = view
        .info
        .ip
        .as_deref()
        .and_then(|ip| ip.split_once('/'))
        .and_then(|(a, _)| a.parse::<Ipv4Addr>().ok());
    let mask = vrouter::route::mask(prefix);
    let on_link = own.is_some_and(|o| u32::from(o) & mask == u32::from(*spec.dst.ip()) & mask);
    let router_leg = dp.ports().find(|p| {
        p.internal.is_some()
            && p.info.bridge == view.info.bridge
            && p.info.name.starts_with("router:")
    });
    let holder = dp.ports().find(|p| {
        p.internal.is_none()
            && p.info
                .ip
                .as_deref()
                .and_then(|ip| ip.split_once('/'))
                .map(|(a, _)| a)
                == Some(&spec.dst.ip().to_string())
    });
    let is_vip = router.is_some_and(|r| {
        r.router()
            .services()
            .iter()
            .any(|s| s.vip.ip() == spec.dst.ip())
    });
    let router_leg_id = router_leg.as_ref().map(|l| l.id);
    let dst_mac = match (on_link, holder, router_leg) {
        (true, Some(h), _) if h.info.bridge == view.info.bridge => {
            steps.push(format!(
                "{port}: {} is on its link, at {} (port {})",
                spec.dst.ip(),
                h.info.mac,
                h.info.name
            ));
            h.info.mac
        }
        (true, _, Some(leg)) if is_vip => {
            steps.push(format!(
                "{port}: {} is a service VIP on its link, answered by the router at {}",
                spec.dst.ip(),
                leg.info.mac
            ));
            leg.info.mac
        }
        (false, _, Some(leg)) => {
            steps.push(format!(
                "{port}: {} is off its link: sent to its gateway at {}",
                spec.dst.ip(),
                leg.info.mac
            ));
            leg.info.mac
        }
        (true, ..) => {
            // Not a port of this tapnet: the router's ARP table may know it (behind a
            // VXLAN peer, say); if not, the container's ARP request floods.
            let known = router.and_then(|r| {
                let leg = router_leg_id.and_then(|l| r.leg_of(l))?;
                r.router().neighbors().lookup(leg, *spec.dst.ip(), now)
            });
            match known {
                Some(mac) => {
                    steps.push(format!(
                        "{port}: {} is on its link, at {mac} (from the router's ARP table)",
                        spec.dst.ip()
                    ));
                    mac
                }
                None => {
                    steps.push(format!(
                        "{port}: {} is on its link but not known here: its ARP request floods",
                        spec.dst.ip()
                    ));
                    Mac::BROADCAST
                }
            }
        }
        (false, _, None) => {
            steps.push(format!("{port}: {} is off its link and its bridge has no gateway: the container has no route", spec.dst.ip()));
            return json!({"steps": steps, "egress": null});
        }
    };
    let mut frame = build(&spec, view.info.mac, dst_mac);
    let mut at = ingress;
    for _ in 0..8 {
        let here = dp.port(at).expect("a port");
        let Some(bridge) = dp.bridge(here.info.bridge) else {
            break;
        };
        let eth = &frame[VNET_HDR_LEN..];
        let dst = mac_at(&frame, 0);
        let decision = bridge.peek(at, eth, now);
        // A frame for a router's MAC reaches the router even while its bridge has not
        // learned that MAC yet (it floods there).
        let next = match decision {
            Decision::Unicast(p) => {
                let to = dp.port(p).expect("a port");
                steps.push(format!(
                    "bridge {}: {} learned on port {}: unicast there",
                    bridge.name(),
                    dst,
                    to.info.name
                ));
                p
            }
            Decision::Flood => {
                let targets: Vec<PortId> = bridge.flood_targets(at).collect();
                let names: Vec<String> = targets
                    .iter()
                    .filter_map(|p| dp.port(*p))
                    .map(|p| p.info.name.clone())
                    .collect();
                match targets
                    .iter()
                    .copied()
                    .find(|p| dp.port(*p).is_some_and(|v| v.info.mac == dst))
                {
                    Some(p) => {
                        steps.push(format!(
                            "bridge {}: {} not learned yet: floods to {}, and port {} takes it",
                            bridge.name(),
                            dst,
                            names.join(", "),
                            dp.port(p).expect("a port").info.name
                        ));
                        p
                    }
                    None => {
                        steps.push(format!(
                            "bridge {}: {} not learned: floods to {}",
                            bridge.name(),
                            dst,
                            names.join(", ")
                        ));
                        let tunnel = targets.iter().copied().find(|p| {
                            dp.port(*p)
                                .is_some_and(|v| v.info.name.starts_with("vxlan:"))
                        });
                        if let (Some(v), Some(t)) = (vtep, tunnel) {
                            let (vni, peers) = v
                                .trace(t, &frame, now)
                                .map(|(e, a)| (e.vni, a))
                                .unwrap_or_default();
                            let peers: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
                            let how = if peers.len() == 1 {
                                "to the peer that has it"
                            } else {
                                "to every peer"
                            };
                            steps.push(format!(
                                "vxlan: encapsulated with VNI {vni}, sent {how}: {}",
                                peers.join(", ")
                            ));
                        }
                        return json!({"steps": steps, "egress": format!("flood: {}", names.join(", "))});
                    }
                }
            }
            Decision::Drop(r) => {
                steps.push(format!("bridge {}: dropped ({})", bridge.name(), r.name()));
                return json!({"steps": steps, "egress": null});
            }
        };
        let there = dp.port(next).expect("a port");
        if there.internal.is_none() {
            let place = there
                .info
                .netns
                .as_deref()
                .map_or("tapnet's namespace".to_string(), |n| format!("netns {n}"));
            let impaired = dp
                .impairment(next)
                .map_or(String::new(), |i| format!(", impaired there: {i}"));
            steps.push(format!(
                "leaves by port {} ({place}, {}): {}{impaired}",
                there.info.name,
                there.info.ifname,
                addrs_of(&frame)
            ));
            return json!({"steps": steps, "egress": there.info.name});
        }
        if let (Some(v), true) = (vtep, there.info.name.starts_with("vxlan:")) {
            let (vni, peers) = v
                .trace(next, &frame, now)
                .map(|(e, a)| (e.vni, a))
                .unwrap_or_default();
            let peers: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
            let how = if peers.len() == 1 {
                "to the peer that has it"
            } else {
                "to every peer (not learned)"
            };
            steps.push(format!(
                "vxlan: encapsulated with VNI {vni}, sent {how}: {}",
                peers.join(", ")
            ));
            return json!({"steps": steps, "egress": format!("vxlan {}", peers.join(", "))});
        }
        let Some(r) = router else { break };
        let Some(leg) = r.leg_of(next) else { break };
        let before = addrs_of(&frame);
        let action = r.router().trace(leg, &mut frame, now);
        let after = addrs_of(&frame);
        let rewrite = if before == after {
            String::new()
        } else {
            format!(" ({before} becomes {after})")
        };
        match action {
            Action::Send { iface } => {
                let out_port = r.port_of(iface).expect("a leg");
                let route = r
                    .router()
                    .routes()
                    .lookup(*spec.dst.ip())
                    .map_or("its own address".to_string(), |rt| {
                        format!("{}/{}", rt.network, rt.prefix)
                    });
                steps.push(format!(
                    "router: leg {}: route {route}, out by leg {} to {}{rewrite}",
                    r.router().ifaces()[leg].name,
                    r.router().ifaces()[iface].name,
                    mac_at(&frame, 0)
                ));
                at = out_port;
            }
            Action::Resolve { next_hop, .. } => {
                steps.push(format!("router: {next_hop} is not in the ARP table: the router would ask and hold the frame{rewrite}"));
                return json!({"steps": steps, "egress": null});
            }
            Action::ToHost => {
                let what = if r.proxy().is_some_and(|p| p.masquerade()) {
                    "masquerade"
                } else {
                    "the host proxy"
                };
                steps.push(format!("router: {} is outside every subnet: handed to {what}, out through a host socket{rewrite}", spec.dst.ip()));
                return json!({"steps": steps, "egress": "host"});
            }
            Action::Done => {
                steps.push(format!("router: answered by the router itself{rewrite}"));
                return json!({"steps": steps, "egress": null});
            }
            Action::Drop(reason) => {
                steps.push(format!("router: dropped ({}){rewrite}", reason.name()));
                return json!({"steps": steps, "egress": null});
            }
        }
    }
    steps.push("stopped after 8 hops".into());
    json!({"steps": steps, "egress": null})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_texts_parse_or_say_what_is_expected() {
        let p = parse("tcp 172.16.1.3:40000 -> 172.16.1.2:3306").unwrap();
        assert_eq!(p.proto, 6);
        assert_eq!(p.dst, "172.16.1.2:3306".parse().unwrap());
        assert_eq!(parse("icmp 10.0.0.1 -> 8.8.8.8").unwrap().proto, 1);
        for bad in [
            "",
            "tcp 1.2.3.4:1 > 1.2.3.5:2",
            "sctp 1.2.3.4:1 -> 1.2.3.5:2",
            "udp 1.2.3.4 -> 1.2.3.5:2",
            "tcp 1.2.3.4:0 -> 1.2.3.5:2",
            "icmp 1.2.3.4:5 -> 1.2.3.5",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("expected"), "{bad}: {e}");
        }
    }

    #[test]
    fn built_frames_carry_valid_checksums() {
        for text in [
            "tcp 10.0.0.2:40000 -> 10.0.1.2:80",
            "udp 10.0.0.2:5000 -> 10.0.1.2:53",
            "icmp 10.0.0.2 -> 10.0.1.2",
        ] {
            let spec = parse(text).unwrap();
            let f = build(&spec, Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]));
            let ip = &f[VNET_HDR_LEN + ETH_HDR_LEN..];
            assert_eq!(checksum::sum(&ip[..20]), 0xffff, "{text}");
            let l4 = &ip[20..];
            if spec.proto == 1 {
                assert_eq!(checksum::sum(l4), 0xffff);
            } else {
                let mut pseudo = ip[12..20].to_vec();
                pseudo.extend_from_slice(&[0, spec.proto, 0, l4.len() as u8]);
                pseudo.extend_from_slice(l4);
                assert_eq!(checksum::sum(&pseudo), 0xffff, "{text}");
            }
        }
    }
}
