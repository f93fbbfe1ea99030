//! The router: two dual-stack legs (front 172.16.1.0/24 and fd00:16:1::/64, back
//! 172.16.2.0/24 and fd00:16:2::/64), a TCP service
//! (172.16.2.100:80 over two backends, so a client on the back leg is a hairpin) and
//! a UDP one, as vrouter/tests/services.rs builds them; small NAT and ARP tables so
//! that eviction happens. Records are frames into a leg (through reassembly first
//! where the router wants it, as its datapath handler does), frames from the host
//! proxy, ticks, traces, and raw fragments into a `Reassembler`. Frames waiting for
//! ARP are kept and completed or given up on, as the handler does.
//!
//! Invariants: what the router sends (a frame sent on, completed after ARP, or one it
//! made itself) has a valid IPv4 header checksum, the sending leg's MAC as its source
//! and, where what came in passed the bridge's ingress check, passes the outgoing
//! bridge's; a TCP or UDP checksum that was valid stays valid through the rewrite; a
//! packet the handler has to cut into fragments can be cut, each fragment fitting;
//! `trace` decides what `handle` then does; a reassembled datagram is a whole,
//! checksummed IPv4 packet, and the reassembler stays within its limits.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use vrouter::handler::routed_len;
use vrouter::nat::Timeouts;
use vrouter::reasm::{Reasm, ReasmConfig, Reassembler};
use vrouter::router::{Action, Iface, Router, RouterConfig, Service};
use vswitch::frame::{check_ingress, VnetHdr, ETH_HDR_LEN, VNET_F_NEEDS_CSUM, VNET_HDR_LEN};
use vswitch::wire::arp::ArpPacket;
use vswitch::wire::checksum::{classify, Checksums};
use vswitch::wire::ethernet::{EthernetFrame, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use vswitch::wire::icmpv4::IcmpPacket;
use vswitch::wire::icmpv6::{self, Icmpv6Packet};
use vswitch::wire::ipv4::{self, Ipv4Packet};
use vswitch::wire::ipv6::Ipv6Packet;
use vswitch::wire::{self, PROTO_ICMP, PROTO_TCP};
use vswitch::Mac;

use super::step;
use crate::frames::*;
use crate::input::{self, decode};
use crate::{invariant, Cov, Target};

pub const TARGET: Target = Target {
    name: "router",
    seeds,
    run,
    max_len: 200_000,
    text: false,
};

const GW0: Mac = Mac([2, 0x74, 0x6e, 0, 0, 1]);
const GW1: Mac = Mac([2, 0x74, 0x6e, 0, 0, 2]);
const CLIENT: Mac = Mac([2, 0, 0, 0, 1, 2]);
const B1: Mac = Mac([2, 0, 0, 0, 2, 2]);
const B2: Mac = Mac([2, 0, 0, 0, 2, 3]);
/// Leg MTUs by the configuration byte (68-byte legs are left out: an ICMP error
/// quoting a 60-byte header does not fit one).
const MTUS: [(u32, u32); 4] = [(1500, 1500), (1500, 1400), (9000, 1450), (576, 1280)];
const IP_AT: usize = VNET_HDR_LEN + ETH_HDR_LEN;

/// Record ops (the low three bits; the top bit scales time).
const HANDLE: u8 = 0;
const FROM_HOST: u8 = 2;
const TICK: u8 = 3;
const TRACE: u8 = 4;
const REASM: u8 = 5;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn seeds() -> Vec<Vec<u8>> {
    let client = sa("172.16.1.2:40000");
    let vip = sa("172.16.2.100:80");
    let hairpin = sa("172.16.2.3:41000");
    let dns = sa("172.16.2.53:53");
    let learn = [
        arp_request(CLIENT, ip("172.16.1.2"), ip("172.16.1.1")),
        arp_request(B1, ip("172.16.2.2"), ip("172.16.2.1")),
        arp_request(B2, ip("172.16.2.3"), ip("172.16.2.1")),
    ];
    let syn = ipv4_frame(GW0, CLIENT, &tcp_syn(client, vip));
    let data = ipv4_frame(GW0, CLIENT, &tcp_data(client, vip, 1001, 500));
    let partial_data = {
        let mut f = frame(
            needs_csum(PROTO_TCP),
            GW0,
            CLIENT,
            ETHERTYPE_IPV4,
            &partial(tcp_data(client, vip, 1501, 300)),
        );
        f[IP_AT + 8] = 64;
        f
    };
    let hairpin_syn = ipv4_frame(GW1, B2, &tcp_syn(hairpin, vip));
    let query = ipv4_frame(GW0, CLIENT, &udp(sa("172.16.1.2:5000"), dns, 40));
    let routed = ipv4_frame(
        GW0,
        CLIENT,
        &udp(sa("172.16.1.2:5001"), sa("172.16.2.2:9"), 100),
    );
    let big = ipv4_frame(
        GW0,
        CLIENT,
        &udp(sa("172.16.1.2:5002"), sa("172.16.2.3:9"), 3000),
    );
    let mut df_big = big.clone();
    df_big[IP_AT + 6] = 0x40;
    Ipv4Packet::new_checked(&mut df_big[IP_AT..])
        .unwrap()
        .fill_checksum();
    let ping_gw = ipv4_frame(
        GW0,
        CLIENT,
        &ping(ip("172.16.1.2"), ip("172.16.1.1"), 64, 56),
    );
    let ttl1 = ipv4_frame(GW0, CLIENT, &ping(ip("172.16.1.2"), ip("172.16.2.2"), 1, 8));
    let unknown = ipv4_frame(
        GW0,
        CLIENT,
        &ping(ip("172.16.1.2"), ip("172.16.2.77"), 64, 8),
    );
    let outside = ipv4_frame(GW0, CLIENT, &tcp_syn(client, sa("93.184.216.34:443")));
    let reply_from_backend = ipv4_frame(GW1, B1, &tcp(sa("172.16.2.2:8080"), client, 7, 0x12, &[]));
    let arp_reply_b1 = arp_reply(B1, ip("172.16.2.2"), GW1, ip("172.16.2.1"));
    let frags: Vec<Vec<u8>> = fragments(&udp(sa("172.16.1.2:5003"), dns, 2500), 1000)
        .iter()
        .map(|p| ipv4_frame(GW0, CLIENT, p))
        .collect();
    let from_host = {
        let p = udp(sa("8.8.8.8:53"), sa("172.16.1.2:5000"), 60);
        let mut f = vec![0u8; IP_AT];
        f.extend_from_slice(&p);
        f
    };
    let from_host_vip = {
        let p = tcp_syn(sa("203.0.113.9:50000"), vip);
        let mut f = vec![0u8; IP_AT];
        f.extend_from_slice(&p);
        f
    };
    let tso_frame = tso(GW0, CLIENT, client, sa("172.16.2.2:5201"), 1448, 20);
    // IPv6: a solicitation for the gateway, a router solicitation, a ping to the
    // gateway, one routed to the back leg, one with hop limit 1, and the back host's
    // advertisement.
    let c6: std::net::Ipv6Addr = "fd00:16:1::2".parse().unwrap();
    let b6: std::net::Ipv6Addr = "fd00:16:2::2".parse().unwrap();
    let gw6: std::net::Ipv6Addr = "fd00:16:1::1".parse().unwrap();
    let mut ns = vec![0u8; 32];
    ns[0] = icmpv6::NEIGHBOR_SOLICIT;
    ns[8..24].copy_from_slice(&gw6.octets());
    ns[24..26].copy_from_slice(&[1, 1]);
    ns[26..32].copy_from_slice(&CLIENT.0);
    let snm: std::net::Ipv6Addr = "ff02::1:ff00:1".parse().unwrap();
    let ns_gw = ipv6_frame(
        icmpv6::multicast_mac(snm),
        CLIENT,
        c6,
        snm,
        255,
        icmpv6::NEXT_HEADER,
        ns,
    );
    let all_routers: std::net::Ipv6Addr = "ff02::2".parse().unwrap();
    let rs = ipv6_frame(
        icmpv6::multicast_mac(all_routers),
        CLIENT,
        icmpv6::link_local(CLIENT),
        all_routers,
        255,
        icmpv6::NEXT_HEADER,
        vec![icmpv6::ROUTER_SOLICIT, 0, 0, 0, 0, 0, 0, 0],
    );
    let echo6 = || vec![icmpv6::ECHO_REQUEST, 0, 0, 0, 0, 1, 0, 1, 7, 7, 7, 7];
    let ping6_gw = ipv6_frame(GW0, CLIENT, c6, gw6, 64, icmpv6::NEXT_HEADER, echo6());
    let routed6 = ipv6_frame(GW0, CLIENT, c6, b6, 64, icmpv6::NEXT_HEADER, echo6());
    let hop1 = ipv6_frame(GW0, CLIENT, c6, b6, 1, icmpv6::NEXT_HEADER, echo6());
    let mut na = vec![0u8; 32];
    icmpv6::emit_na(&mut na, b6, B1, true, true);
    let na_b = ipv6_frame(
        GW1,
        B1,
        b6,
        "fd00:16:2::1".parse().unwrap(),
        255,
        icmpv6::NEXT_HEADER,
        na,
    );

    let common: Vec<(u8, u8, u16, &[u8])> = learn
        .iter()
        .enumerate()
        .map(|(i, f)| (HANDLE, (i > 0) as u8, 1, &f[..]))
        .collect();
    let mut out = Vec::new();
    for config in [0u8, 1, 2, 3, 4 | 1] {
        let mut records = common.clone();
        records.extend_from_slice(&[
            (HANDLE, 0, 1, &syn[..]),
            (TRACE, 0, 1, &data[..]),
            (HANDLE, 0, 1, &data[..]),
            (HANDLE, 0, 1, &partial_data[..]),
            (HANDLE, 1, 1, &hairpin_syn[..]),
            (HANDLE, 1, 1, &reply_from_backend[..]),
            (HANDLE, 0, 1, &query[..]),
            (HANDLE, 0, 1, &routed[..]),
            (HANDLE, 0, 1, &big[..]),
            (HANDLE, 0, 1, &df_big[..]),
            (HANDLE, 0, 1, &ping_gw[..]),
            (HANDLE, 0, 1, &ttl1[..]),
            (HANDLE, 0, 1, &unknown[..]),
            (TICK | 0x80, 0, 2, &[][..]),
            (HANDLE, 0, 1, &outside[..]),
            (FROM_HOST, 0, 1, &from_host[..]),
            (FROM_HOST, 0, 1, &from_host_vip[..]),
            (HANDLE, 0, 1, &tso_frame[..]),
            (HANDLE, 1, 1, &arp_reply_b1[..]),
            (HANDLE, 0, 1, &ns_gw[..]),
            (HANDLE, 0, 1, &rs[..]),
            (HANDLE, 0, 1, &ping6_gw[..]),
            (HANDLE, 0, 1, &routed6[..]),
            (HANDLE, 1, 1, &na_b[..]),
            (HANDLE, 0, 1, &routed6[..]),
            (HANDLE, 0, 1, &hop1[..]),
        ]);
        for f in frags.iter().rev() {
            records.push((HANDLE, 0, 1, &f[..]));
        }
        for f in &frags {
            records.push((REASM, 0, 1, &f[IP_AT..]));
        }
        records.push((TICK | 0x80, 0, 400, &[][..]));
        records.push((HANDLE, 0, 1, &data[..]));
        out.push(input::encode(config, &records));
    }
    out
}

/// A frame waiting for ARP, as the handler keeps it.
struct Held {
    ingress: usize,
    sender: Mac,
    iface: usize,
    next_hop: std::net::IpAddr,
    frame: Vec<u8>,
    since: Instant,
    admitted: bool,
}

fn router(config: u8, now: Instant) -> Router {
    let mut r = Router::new(
        vec![
            Iface {
                name: "front".into(),
                mac: GW0,
                ip: Some(ip("172.16.1.1")),
                prefix: 24,
                ip6: Some(("fd00:16:1::1".parse().unwrap(), 64)),
            },
            Iface {
                name: "back".into(),
                mac: GW1,
                ip: Some(ip("172.16.2.1")),
                prefix: 24,
                ip6: Some(("fd00:16:2::1".parse().unwrap(), 64)),
            },
        ],
        vec![
            Service {
                name: "api".into(),
                proto: 6,
                vip: sa("172.16.2.100:80").into(),
                backends: vec![sa("172.16.2.2:8080").into(), sa("172.16.2.3:8080").into()],
            },
            Service {
                name: "dns".into(),
                proto: 17,
                vip: sa("172.16.2.53:53").into(),
                backends: vec![sa("172.16.2.2:5353").into()],
            },
            Service {
                name: "api6".into(),
                proto: 6,
                vip: "[fd00:16:2::100]:80".parse().unwrap(),
                backends: vec![
                    "[fd00:16:2::2]:8080".parse().unwrap(),
                    "[fd00:16:1::3]:8080".parse().unwrap(),
                ],
            },
        ],
        RouterConfig {
            neighbor_max: 8,
            nat_max_flows: 8,
            nat_timeouts: Timeouts {
                tcp: Duration::from_secs(600),
                ..Timeouts::default()
            },
            ..RouterConfig::default()
        },
    );
    let (m0, m1) = MTUS[config as usize % MTUS.len()];
    r.set_mtu(0, m0);
    r.set_mtu(1, m1);
    r.set_host_egress(config & 4 != 0);
    // The client's port is guarded: a permanent neighbour.
    r.add_static_neighbor(ip("172.16.1.2"), CLIENT, now);
    r
}

fn run(data: &[u8], cov: &mut Cov) {
    let (config, records) = decode(data);
    let mut now = Instant::now();
    let mut r = router(config, now);
    let mut reasm = Reassembler::new(ReasmConfig {
        max_bytes: 64 << 10,
        max_datagrams: 8,
        max_fragments: 64,
        ..ReasmConfig::default()
    });
    let mut held: Vec<Held> = Vec::new();
    let mut last = [0u64; 11];
    for rec in &records {
        now += step(rec);
        let leg = (rec.arg & 1) as usize;
        let mut frame = rec.frame.to_vec();
        match rec.op & 7 {
            HANDLE | 1 => {
                let admitted = check_ingress(&frame, r.mtu(leg)).is_ok() && offload_inside(&frame);
                cov.hit(1, admitted as u64);
                if r.wants_reassembly(leg, &frame) {
                    // As the handler: the whole datagram takes the last fragment's place.
                    match reasm.push(&frame[IP_AT..], now) {
                        Reasm::Complete(h) => {
                            let mut room = vec![0u8; IP_AT + 65535];
                            room[..IP_AT].copy_from_slice(&frame[..IP_AT]);
                            let Some(n) = reasm.take(h, &mut room[IP_AT..]) else {
                                continue;
                            };
                            whole(&room[IP_AT..IP_AT + n]);
                            VnetHdr::default().emit(&mut room);
                            room.truncate(IP_AT + n);
                            frame = room;
                            cov.hit(2, 1);
                        }
                        other => {
                            cov.hit(2, 2 + matches!(other, Reasm::Dropped) as u64);
                            continue;
                        }
                    }
                }
                // What trace says first, on a copy: the same as what handle does.
                let mut traced = frame.clone();
                let t = r.trace(leg, &mut traced, now);
                let before = frame.clone();
                let action = r.handle(leg, &mut frame, now);
                cov.hit(3, action_code(action));
                invariant!(t == action, "trace said {t:?}, handle did {action:?}");
                let ctx = (admitted, false);
                after(
                    &mut r, leg, &before, &mut frame, action, ctx, now, &mut held, cov,
                );
            }
            FROM_HOST => {
                if rec.arg & 2 == 0 {
                    // As the proxy writes them: no offloads, headers to be filled in.
                    let n = frame.len().min(IP_AT);
                    frame[..n].fill(0);
                }
                // What the proxy makes, for the checks on what leaves: a valid IPv4
                // packet behind zero headers, within the smaller leg's MTU unless it may
                // be cut (no DF). (IPv6 from the proxy goes through as well; its own
                // invariants are those of any IPv6 the router sends.)
                let small = r.mtu(0).min(r.mtu(1)) as usize;
                let made = frame.len() >= IP_AT
                    && frame[..IP_AT].iter().all(|&b| b == 0)
                    && Ipv4Packet::new_checked(&frame[IP_AT..]).is_ok_and(|ip| {
                        ip.verify_checksum()
                            && ip.total_len() == frame.len() - IP_AT
                            && (ip.total_len() <= small || !ip.dont_frag())
                    });
                let before = frame.clone();
                let action = r.from_host(&mut frame, now);
                cov.hit(4, action_code(action) | (made as u64) << 16);
                // The proxy set the hop limit the container sees: not routed again.
                let ctx = (made, true);
                after(
                    &mut r, 0, &before, &mut frame, action, ctx, now, &mut held, cov,
                );
            }
            TICK => {
                r.tick(now);
                reasm.expire(now);
                // Kept frames whose next hop never answered: host unreachable.
                let mut i = 0;
                while i < held.len() {
                    if now.saturating_duration_since(held[i].since) >= Duration::from_secs(3) {
                        let h = held.swap_remove(i);
                        if h.next_hop.is_ipv6() {
                            r.unresolved6(h.ingress, h.sender, &h.frame, now);
                        } else {
                            r.unresolved(h.ingress, h.sender, &h.frame, now);
                        }
                        cov.hit(5, 1);
                    } else {
                        i += 1;
                    }
                }
            }
            TRACE => {
                let a = r.trace(leg, &mut frame, now);
                cov.hit(6, action_code(a));
            }
            REASM => {
                // Any bytes as an IPv4 fragment.
                match reasm.push(&frame, now) {
                    Reasm::Complete(h) => {
                        let mut out = vec![0u8; 65535 + (rec.arg as usize)];
                        if let Some(n) = reasm.take(h, &mut out) {
                            whole(&out[..n]);
                            cov.hit(7, 1);
                        }
                    }
                    other => cov.hit(7, 2 + matches!(other, Reasm::Dropped) as u64),
                }
            }
            _ => {
                // An ARP answer may have come: send what waited for it.
                release(&mut r, &mut held, now, cov);
            }
        }
        // Which of the router's counters moved: a path taken.
        let st = r.stats();
        let counters = [
            st.routed,
            st.translated,
            st.arp_replies,
            st.arp_requests,
            st.echo_replies,
            st.icmp_errors,
            st.icmp_rate_limited,
            st.arp_rate_limited,
            st.outbox_full,
            st.fragmented,
            st.flow_resets,
        ];
        for (k, (&now_, &was)) in counters.iter().zip(&last).enumerate() {
            if now_ != was {
                cov.hit(13, k as u64 | ((rec.op & 7) as u64) << 8);
            }
        }
        last = counters;
        cov.hit(14, r.flows().len() as u64);
        cov.hit(15, held.len() as u64);
        invariant!(
            reasm.held_bytes() <= 64 << 10 && reasm.len() <= 8,
            "the reassembler holds {} bytes in {} datagrams",
            reasm.held_bytes(),
            reasm.len()
        );
        outbox(&mut r, cov);
    }
}

/// Whether a checksum left to offload lies inside the frame's IPv4 packet. One in
/// what trails the packet describes none of it: the router sends the packet without
/// its trailer, and the next bridge drops such a frame (bad_vnet_header), as Linux
/// drops an skb whose partial checksum lies past its trimmed length.
fn offload_inside(frame: &[u8]) -> bool {
    let vnet = VnetHdr::parse(frame).unwrap_or_default();
    if vnet.flags & VNET_F_NEEDS_CSUM == 0 {
        return true;
    }
    match Ipv4Packet::new_checked(frame.get(IP_AT..).unwrap_or_default()) {
        Ok(ip) => {
            vnet.csum_start as usize + vnet.csum_offset as usize + 2 <= ETH_HDR_LEN + ip.total_len()
        }
        Err(_) => true,
    }
}

/// A datagram reassembly gave back: a whole IPv4 packet, checksummed.
fn whole(p: &[u8]) {
    let ip = Ipv4Packet::new_checked(p);
    invariant!(
        ip.is_ok_and(|ip| !ip.is_fragment() && ip.verify_checksum() && ip.total_len() == p.len()),
        "a reassembled datagram is not a whole IPv4 packet"
    );
}

fn action_code(a: Action) -> u64 {
    match a {
        Action::Send { iface } => 1 + iface as u64,
        Action::Resolve { iface, .. } => 10 + iface as u64,
        Action::Resolve6 { iface, .. } => 12 + iface as u64,
        Action::ToHost => 20,
        Action::Done => 21,
        Action::Drop(reason) => 100 + reason as u64,
    }
}

/// What the handler does with an action, with the invariants on what is sent.
#[allow(clippy::too_many_arguments)]
/// `ctx`: whether what came in passed the bridge's ingress check, and whether it
/// came from the host proxy.
fn after(
    r: &mut Router,
    ingress: usize,
    before: &[u8],
    frame: &mut [u8],
    action: Action,
    ctx: (bool, bool),
    now: Instant,
    held: &mut Vec<Held>,
    cov: &mut Cov,
) {
    invariant!(
        frame.len() == before.len(),
        "the router changed a frame's length"
    );
    let admitted = ctx.0;
    match action {
        Action::Send { iface } => {
            invariant!(iface < 2, "sent on leg {iface}");
            sent(r, iface, before, frame, ctx, cov);
        }
        Action::Resolve {
            iface,
            next_hop,
            sender,
        } => hold(
            held,
            ingress,
            iface,
            next_hop.into(),
            sender,
            frame,
            now,
            admitted,
            r,
        ),
        Action::Resolve6 {
            iface,
            next_hop,
            sender,
        } => hold(
            held,
            ingress,
            iface,
            next_hop.into(),
            sender,
            frame,
            now,
            admitted,
            r,
        ),
        Action::ToHost | Action::Done | Action::Drop(_) => {}
    }
    if r.take_learned() {
        release(r, held, now, cov);
    }
}

/// Keeps a frame for its next hop, as the handler does (64 in all, 3 per next hop).
#[allow(clippy::too_many_arguments)]
fn hold(
    held: &mut Vec<Held>,
    ingress: usize,
    iface: usize,
    next_hop: std::net::IpAddr,
    sender: Mac,
    frame: &[u8],
    now: Instant,
    admitted: bool,
    r: &mut Router,
) {
    invariant!(iface < 2, "to resolve on leg {iface}");
    let per_hop = held.iter().filter(|h| h.next_hop == next_hop).count();
    if held.len() < 64 && per_hop < 3 {
        held.push(Held {
            ingress,
            sender,
            iface,
            next_hop,
            frame: frame.to_vec(),
            since: now,
            admitted,
        });
    } else {
        r.hold_queue_full();
    }
}

/// Sends every kept frame whose next hop is known now.
fn release(r: &mut Router, held: &mut Vec<Held>, now: Instant, cov: &mut Cov) {
    let mut i = 0;
    while i < held.len() {
        let h = &mut held[i];
        if r.complete(h.iface, h.next_hop, &mut h.frame, now) {
            let h = held.remove(i);
            cov.hit(8, h.iface as u64);
            // The frame was rewritten when it was kept: only its MAC is new.
            sent(r, h.iface, &h.frame, &h.frame, (h.admitted, false), cov);
        } else {
            i += 1;
        }
    }
}

/// The invariants of a frame the router sends on leg `iface` (`before`: as it came).
fn sent(
    r: &mut Router,
    iface: usize,
    before: &[u8],
    frame: &[u8],
    ctx: (bool, bool),
    cov: &mut Cov,
) {
    let (admitted, from_host) = ctx;
    let me = r.ifaces()[iface].mac;
    let eth = EthernetFrame::new_checked(&frame[VNET_HDR_LEN..]).expect("the router read it");
    invariant!(eth.src() == me, "sent on leg {iface} from {}", eth.src());
    if eth.ethertype() == ETHERTYPE_IPV6 {
        // Routed on (one hop less) or the router's own (an answer, an error, an
        // advertisement): a whole IPv6 header, and a right ICMPv6 checksum on what it
        // made.
        let Some(ip) = Ipv6Packet::new_checked(eth.payload()) else {
            panic!("invariant: an IPv6 frame the router sent whose header does not parse");
        };
        let came = Ipv6Packet::new_checked(&before[IP_AT.min(before.len())..]);
        let routed = came.is_some_and(|c| c.src() == ip.src() && c.dst() == ip.dst());
        // A frame kept for its next hop comes back already rewritten.
        let released = std::ptr::eq(before, frame);
        if routed {
            invariant!(
                released || from_host || came.is_some_and(|c| c.hop_limit() == ip.hop_limit() + 1),
                "a routed IPv6 packet whose hop limit did not go down by one"
            );
        } else if ip.next_header() == icmpv6::NEXT_HEADER {
            invariant!(
                Icmpv6Packet::new_checked(ip.payload())
                    .is_some_and(|m| m.verify_checksum(ip.src(), ip.dst())),
                "an ICMPv6 message the router made with a wrong checksum"
            );
        }
        cov.hit(13, routed as u64);
        return;
    }
    if eth.ethertype() == ETHERTYPE_ARP {
        // An ARP request answered in place.
        let arp = ArpPacket::new_checked(eth.payload());
        invariant!(
            arp.is_some_and(|a| a.sender_mac() == me && a.operation() == 2),
            "an ARP answer that is not the router's reply"
        );
        cov.hit(12, 0);
        return;
    }
    invariant!(
        eth.ethertype() == ETHERTYPE_IPV4,
        "a routed frame that is not IPv4 or ARP"
    );
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        panic!("invariant: a routed frame whose IPv4 header does not parse");
    };
    let was_valid = Ipv4Packet::new_checked(&before[IP_AT.min(before.len())..])
        .is_ok_and(|ip| ip.verify_checksum());
    invariant!(
        ip.verify_checksum() || !was_valid,
        "a routed packet's IPv4 header checksum does not verify"
    );
    let vnet = VnetHdr::parse(frame).unwrap_or_default();
    let was = classify(&before[IP_AT.min(before.len())..]);
    let now = classify(&frame[IP_AT..]);
    cov.hit(
        9,
        (was == Checksums::Valid) as u64 | ((now == Checksums::Valid) as u64) << 1,
    );
    let offload =
        VnetHdr::parse(before).is_some_and(|v| v.flags & VNET_F_NEEDS_CSUM != 0 || v.is_gso());
    if was == Checksums::Valid && !offload {
        invariant!(
            now == Checksums::Valid,
            "a valid checksum became {now:?} through the router"
        );
    }
    // As the handler sends it: the IPv4 packet, without what trailed it.
    let frame = &frame[..routed_len(frame)];
    let mtu = r.mtu(iface) as usize;
    let fits = ip.total_len() <= mtu || ip.dont_frag();
    if fits || vnet.is_gso() {
        if admitted {
            let checked = check_ingress(frame, mtu as u32);
            invariant!(
                checked.is_ok(),
                "a frame the router sends on leg {iface} is refused by its bridge (MTU {mtu}): {checked:?}"
            );
        }
        return;
    }
    // The handler cuts it into fragments, its partial checksum finished first.
    let mut scratch = frame[VNET_HDR_LEN..].to_vec();
    if vnet.flags & VNET_F_NEEDS_CSUM != 0
        && wire::finish_checksum(
            &mut scratch,
            vnet.csum_start as usize,
            vnet.csum_offset as usize,
        )
        .is_none()
    {
        return;
    }
    let (eth, packet) = scratch.split_at(ETH_HDR_LEN);
    let mut pieces = 0;
    let cut = ipv4::fragment(packet, mtu, |h, p| {
        pieces += 1;
        let f = [&[0u8; VNET_HDR_LEN][..], eth, h, p].concat();
        let ip = Ipv4Packet::new_checked(&f[IP_AT..]);
        invariant!(
            ip.is_ok_and(|ip| ip.verify_checksum() && ip.total_len() <= mtu),
            "a fragment is not a valid IPv4 packet within the MTU"
        );
        if admitted {
            let checked = check_ingress(&f, mtu as u32);
            invariant!(
                checked.is_ok(),
                "a fragment is refused by its bridge: {checked:?}"
            );
        }
    });
    cov.hit(10, pieces);
    invariant!(
        cut.is_some(),
        "a routed packet of {} bytes cannot be cut for MTU {mtu}",
        packet.len()
    );
}

/// The frames the router made (ARP requests and replies, ICMP errors and echo
/// replies, resets, IPv6 neighbour discovery and ICMPv6 errors): each well formed,
/// and taken by its bridge.
fn outbox(r: &mut Router, cov: &mut Cov) {
    let mtus = [r.mtu(0), r.mtu(1)];
    let macs = [r.ifaces()[0].mac, r.ifaces()[1].mac];
    r.outbox().drain(|iface, f| {
        invariant!(iface < 2, "made for leg {iface}");
        let eth = EthernetFrame::new_checked(&f[VNET_HDR_LEN..]).expect("a frame");
        invariant!(eth.src() == macs[iface], "made from {}", eth.src());
        match eth.ethertype() {
            ETHERTYPE_ARP => {
                invariant!(
                    ArpPacket::new_checked(eth.payload()).is_some(),
                    "a broken ARP packet"
                );
                cov.hit(11, 0);
            }
            ETHERTYPE_IPV4 => {
                let ip = Ipv4Packet::new_checked(eth.payload());
                invariant!(
                    ip.is_ok_and(|ip| ip.verify_checksum()),
                    "a made IPv4 packet is broken"
                );
                let ip = ip.unwrap();
                match ip.protocol() {
                    PROTO_ICMP => {
                        let icmp = IcmpPacket::new_checked(ip.payload());
                        invariant!(
                            icmp.is_some_and(|i| i.verify_checksum()),
                            "a made ICMP message's checksum does not verify"
                        );
                        cov.hit(11, 1 + icmp.unwrap().kind() as u64);
                    }
                    PROTO_TCP => {
                        invariant!(
                            classify(eth.payload()) == Checksums::Valid,
                            "a made reset's checksum does not verify"
                        );
                        cov.hit(11, 300);
                    }
                    p => panic!("invariant: the router made a packet of protocol {p}"),
                }
            }
            ETHERTYPE_IPV6 => {
                // Neighbour discovery, advertisements, ICMPv6 errors: whole, and
                // checksummed.
                let ip = Ipv6Packet::new_checked(eth.payload());
                invariant!(
                    ip.is_some_and(|ip| ip.next_header() == icmpv6::NEXT_HEADER
                        && Icmpv6Packet::new_checked(ip.payload())
                            .is_some_and(|m| m.verify_checksum(ip.src(), ip.dst()))),
                    "a made ICMPv6 message is broken"
                );
                cov.hit(11, 400 + u64::from(ip.unwrap().payload()[0]));
            }
            t => panic!("invariant: the router made a frame of type {t:04x}"),
        }
        let checked = check_ingress(f, mtus[iface]);
        invariant!(
            checked.is_ok(),
            "a frame the router made is refused by its bridge (MTU {}): {checked:?}",
            mtus[iface]
        );
    });
}
