//! The router's IPv6 on a dual-stack leg, over hand-built frames: neighbour
//! discovery for its addresses, router advertisements, pings, and what RFC 4861 says
//! to drop.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use vrouter::router::{Action, Iface, Router, RouterConfig, RouterDrop};
use vswitch::wire::icmpv6::{self, Icmpv6Packet, Ipv6Repr};
use vswitch::wire::ipv6::Ipv6Packet;
use vswitch::Mac;

const GW: Mac = Mac([2, 0x74, 0x6e, 0, 0, 1]);
const A: Mac = Mac([2, 0, 0xac, 0x10, 1, 2]);

fn gw6() -> Ipv6Addr {
    "fd00:16:1::1".parse().unwrap()
}

fn a6() -> Ipv6Addr {
    "fd00:16:1::2".parse().unwrap()
}

fn router() -> Router {
    let mut r = Router::new(
        vec![Iface {
            name: "br0".into(),
            mac: GW,
            ip: Some(Ipv4Addr::new(172, 16, 1, 1)),
            prefix: 24,
            ip6: Some((gw6(), 64)),
        }],
        vec![],
        RouterConfig::default(),
    );
    r.set_mtu(0, 1500);
    r
}

/// vnet header + Ethernet + IPv6 + the ICMPv6 message `msg` (checksummed here).
fn icmp6(dst_mac: Mac, src: Ipv6Addr, dst: Ipv6Addr, hops: u8, mut msg: Vec<u8>) -> Vec<u8> {
    icmpv6::fill_checksum(src, dst, &mut msg);
    let mut f = vec![0u8; 10];
    f.extend_from_slice(&dst_mac.0);
    f.extend_from_slice(&A.0);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    let mut ip = [0u8; 40];
    Ipv6Repr {
        src,
        dst,
        next_header: icmpv6::NEXT_HEADER,
        hop_limit: hops,
        payload_len: msg.len(),
    }
    .emit(&mut ip);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&msg);
    f
}

fn ns(target: Ipv6Addr) -> Vec<u8> {
    let mut m = vec![0u8; 32];
    m[0] = icmpv6::NEIGHBOR_SOLICIT;
    m[8..24].copy_from_slice(&target.octets());
    m[24] = icmpv6::OPT_SOURCE_LLADDR;
    m[25] = 1;
    m[26..32].copy_from_slice(&A.0);
    m
}

fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::from([
        0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// The one frame the router queued: its IPv6 view's fields and ICMPv6 message.
fn sent(r: &mut Router) -> (Mac, Ipv6Addr, Ipv6Addr, u8, Vec<u8>) {
    let mut frames = Vec::new();
    r.outbox().drain(|_, f| frames.push(f.to_vec()));
    assert_eq!(frames.len(), 1, "one frame");
    let f = &frames[0][10..];
    let dst_mac = Mac(f[..6].try_into().unwrap());
    let ip = Ipv6Packet::new_checked(&f[14..]).unwrap();
    let msg = ip.payload().to_vec();
    assert!(Icmpv6Packet::new_checked(&msg[..])
        .unwrap()
        .verify_checksum(ip.src(), ip.dst()));
    (dst_mac, ip.src(), ip.dst(), ip.hop_limit(), msg)
}

#[test]
fn the_gateway_answers_neighbour_solicitations_and_pings() {
    let mut r = router();
    let now = Instant::now();
    let dst = solicited_node(gw6());
    let mut f = icmp6(icmpv6::multicast_mac(dst), a6(), dst, 255, ns(gw6()));
    assert_eq!(r.handle(0, &mut f, now), Action::Done);
    let (mac, src, to, hops, msg) = sent(&mut r);
    assert_eq!((mac, to, hops), (A, a6(), 255));
    assert_eq!(src, gw6());
    assert_eq!(msg[0], icmpv6::NEIGHBOR_ADVERT);
    // No override for gateway6: on a bridge stretched over VXLAN each host's router
    // answers for it, and the first answer (the nearest) must stay.
    assert_eq!(msg[4] & 0xe0, 0xc0, "router, solicited, no override");
    assert_eq!(&msg[26..32], &GW.0, "target link-layer address");

    // A solicitation for another host is not the router's to answer.
    let other: Ipv6Addr = "fd00:16:1::9".parse().unwrap();
    let mut f = icmp6(
        icmpv6::multicast_mac(dst),
        a6(),
        solicited_node(other),
        255,
        ns(other),
    );
    assert_eq!(r.handle(0, &mut f, now), Action::Done);
    assert!(r.outbox().is_empty());

    // An echo request to the gateway comes back in place, checksummed.
    let mut echo = vec![icmpv6::ECHO_REQUEST, 0, 0, 0, 0, 7, 0, 1];
    echo.extend_from_slice(b"tapnet ping");
    let mut f = icmp6(GW, a6(), gw6(), 64, echo);
    assert_eq!(r.handle(0, &mut f, now), Action::Send { iface: 0 });
    let ip = Ipv6Packet::new_checked(&f[24..]).unwrap();
    assert_eq!((ip.src(), ip.dst()), (gw6(), a6()));
    assert_eq!(&f[10..16], &A.0);
    let msg = ip.payload();
    assert_eq!(msg[0], icmpv6::ECHO_REPLY);
    assert!(Icmpv6Packet::new_checked(msg)
        .unwrap()
        .verify_checksum(gw6(), a6()));
    assert_eq!(&msg[8..], b"tapnet ping");
}

#[test]
fn solicitations_get_advertisements_with_the_prefix_and_mtu() {
    let mut r = router();
    let now = Instant::now();
    let all_routers: Ipv6Addr = "ff02::2".parse().unwrap();
    let lla = icmpv6::link_local(A);
    let mut rs = vec![icmpv6::ROUTER_SOLICIT, 0, 0, 0, 0, 0, 0, 0, 1, 1];
    rs.extend_from_slice(&A.0);
    let mut f = icmp6(
        icmpv6::multicast_mac(all_routers),
        lla,
        all_routers,
        255,
        rs,
    );
    assert_eq!(r.handle(0, &mut f, now), Action::Done);
    let (mac, src, to, hops, msg) = sent(&mut r);
    assert_eq!((to, hops), (icmpv6::ALL_NODES, 255));
    assert_eq!(mac, Mac([0x33, 0x33, 0, 0, 0, 1]));
    assert_eq!(
        src,
        icmpv6::link_local(GW),
        "from the router's link-local address"
    );
    assert_eq!(msg[0], icmpv6::ROUTER_ADVERT);
    assert_eq!(
        u16::from_be_bytes([msg[6], msg[7]]),
        1800,
        "router lifetime"
    );
    assert_eq!(
        u32::from_be_bytes(msg[28..32].try_into().unwrap()),
        1500,
        "MTU"
    );
    assert_eq!(msg[34], 64, "prefix length");
    assert_eq!(msg[35], 0xc0, "on-link and autonomous");
    assert_eq!(
        &msg[48..64],
        &"fd00:16:1::".parse::<Ipv6Addr>().unwrap().octets()
    );

    // Unsolicited ones: at the first tick, then every 200 s.
    r.tick(now);
    sent(&mut r);
    r.tick(now + std::time::Duration::from_secs(100));
    assert!(r.outbox().is_empty());
    r.tick(now + std::time::Duration::from_secs(201));
    sent(&mut r);
}

#[test]
fn what_rfc_4861_says_to_drop_is_dropped_and_counted() {
    let mut r = router();
    let now = Instant::now();
    let dst = solicited_node(gw6());
    // Hop limit other than 255: it crossed a router.
    let mut f = icmp6(icmpv6::multicast_mac(dst), a6(), dst, 64, ns(gw6()));
    assert_eq!(
        r.handle(0, &mut f, now),
        Action::Drop(RouterDrop::NdpHopLimit)
    );
    // An option of length 0.
    let mut bad = ns(gw6());
    bad[25] = 0;
    let mut f = icmp6(icmpv6::multicast_mac(dst), a6(), dst, 255, bad);
    assert_eq!(
        r.handle(0, &mut f, now),
        Action::Drop(RouterDrop::BadIcmpv6)
    );
    // A wrong checksum.
    let mut f = icmp6(icmpv6::multicast_mac(dst), a6(), dst, 255, ns(gw6()));
    let last = f.len() - 1;
    f[last] ^= 0xff;
    assert_eq!(
        r.handle(0, &mut f, now),
        Action::Drop(RouterDrop::BadIcmpv6)
    );
    // A container advertising itself as a router.
    let ra = vec![
        icmpv6::ROUTER_ADVERT,
        0,
        0,
        0,
        64,
        0,
        7,
        8,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    let mut f = icmp6(
        icmpv6::multicast_mac(icmpv6::ALL_NODES),
        icmpv6::link_local(A),
        icmpv6::ALL_NODES,
        255,
        ra,
    );
    assert_eq!(
        r.handle(0, &mut f, now),
        Action::Drop(RouterDrop::RaFromContainer)
    );
    // Cut short.
    let mut f = icmp6(GW, a6(), gw6(), 64, vec![icmpv6::ECHO_REQUEST, 0, 0, 0]);
    f.truncate(f.len() - 2);
    assert_eq!(
        r.handle(0, &mut f, now),
        Action::Drop(RouterDrop::BadIpv6Header)
    );
    for reason in [
        RouterDrop::NdpHopLimit,
        RouterDrop::RaFromContainer,
        RouterDrop::BadIpv6Header,
    ] {
        assert_eq!(r.stats().dropped(reason), 1, "{reason:?}");
    }
    assert_eq!(r.stats().dropped(RouterDrop::BadIcmpv6), 2);
}

fn two_legs() -> Router {
    let mut r = Router::new(
        vec![
            Iface {
                name: "br0".into(),
                mac: GW,
                ip: Some(Ipv4Addr::new(172, 16, 1, 1)),
                prefix: 24,
                ip6: Some((gw6(), 64)),
            },
            Iface {
                name: "br1".into(),
                mac: Mac([2, 0x74, 0x6e, 0, 0, 2]),
                ip: Some(Ipv4Addr::new(172, 16, 2, 1)),
                prefix: 24,
                ip6: Some(("fd00:16:2::1".parse().unwrap(), 64)),
            },
        ],
        vec![],
        RouterConfig::default(),
    );
    r.set_mtu(0, 1500);
    r.set_mtu(1, 1400);
    r
}

#[test]
fn ipv6_is_routed_with_the_hop_limit_decremented_and_errors_sent_back() {
    let mut r = two_legs();
    let now = Instant::now();
    let b6: Ipv6Addr = "fd00:16:2::2".parse().unwrap();
    let b_mac = Mac([2, 0, 0, 0, 2, 2]);
    assert!(r.add_static_neighbor6(b6, b_mac, now));
    let echo = || vec![icmpv6::ECHO_REQUEST, 0, 0, 0, 0, 1, 0, 1];
    let mut f = icmp6(GW, a6(), b6, 64, echo());
    assert_eq!(r.handle(0, &mut f, now), Action::Send { iface: 1 });
    assert_eq!(&f[10..16], &b_mac.0);
    assert_eq!(Ipv6Packet::new_checked(&f[24..]).unwrap().hop_limit(), 63);

    // Hop limit 1: time exceeded, from the ingress leg's gateway6, quoting the packet.
    let mut f = icmp6(GW, a6(), b6, 1, echo());
    assert_eq!(
        r.handle(0, &mut f, now),
        Action::Drop(RouterDrop::TtlExceeded)
    );
    let (mac, src, to, _, msg) = sent(&mut r);
    assert_eq!((mac, src, to), (A, gw6(), a6()));
    assert_eq!((msg[0], msg[1]), (3, 0));
    assert_eq!(&msg[8..48], &f[24..64], "the offending header, quoted");

    // Never an error about an ICMPv6 error.
    let mut err = vec![1u8, 0, 0, 0, 0, 0, 0, 0];
    err.extend_from_slice(&[0; 48]);
    let mut f = icmp6(GW, a6(), b6, 1, err);
    assert_eq!(
        r.handle(0, &mut f, now),
        Action::Drop(RouterDrop::TtlExceeded)
    );
    assert!(r.outbox().is_empty());

    // Larger than br1's MTU: packet too big with 1400; no fragment.
    let mut big = echo();
    big.resize(1400, 0x5a);
    let mut f = icmp6(GW, a6(), b6, 64, big);
    assert_eq!(r.handle(0, &mut f, now), Action::Drop(RouterDrop::TooBig));
    let (_, _, _, _, msg) = sent(&mut r);
    assert_eq!(msg[0], 2);
    assert_eq!(u32::from_be_bytes(msg[4..8].try_into().unwrap()), 1400);

    // An unknown next hop: a solicitation to its solicited-node group, the packet
    // rewritten but for its destination MAC and kept for the answer.
    let c6: Ipv6Addr = "fd00:16:2::3".parse().unwrap();
    let mut held = icmp6(GW, a6(), c6, 64, echo());
    assert_eq!(
        r.handle(0, &mut held, now),
        Action::Resolve6 {
            iface: 1,
            next_hop: c6,
            sender: A
        }
    );
    assert!(!r.complete(1, c6.into(), &mut held, now), "not known yet");
    let (mac, _, to, hops, msg) = sent(&mut r);
    assert_eq!(to, solicited_node(c6));
    assert_eq!(mac, icmpv6::multicast_mac(solicited_node(c6)));
    assert_eq!((hops, msg[0]), (255, icmpv6::NEIGHBOR_SOLICIT));
    // Its advertisement teaches the router: the next packet goes.
    let c_mac = Mac([2, 0, 0, 0, 2, 3]);
    let mut na = vec![0u8; 32];
    icmpv6::emit_na(&mut na, c6, c_mac, true, true);
    let mut f = icmp6(
        Mac([2, 0x74, 0x6e, 0, 0, 2]),
        c6,
        "fd00:16:2::1".parse().unwrap(),
        255,
        na,
    );
    f[16..22].copy_from_slice(&c_mac.0);
    assert_eq!(r.handle(1, &mut f, now), Action::Done);
    assert!(r.take_learned(), "kept frames may go");
    assert!(r.complete(1, c6.into(), &mut held, now));
    assert_eq!(&held[10..16], &c_mac.0);
    let mut f = icmp6(GW, a6(), c6, 64, echo());
    assert_eq!(r.handle(0, &mut f, now), Action::Send { iface: 1 });

    // Link-local addresses are never routed; another prefix has no route.
    let mut f = icmp6(GW, icmpv6::link_local(A), b6, 64, echo());
    assert_eq!(
        r.handle(0, &mut f, now),
        Action::Drop(RouterDrop::NotRoutable)
    );
    let mut f = icmp6(GW, a6(), "fd00:99::1".parse().unwrap(), 64, echo());
    assert_eq!(r.handle(0, &mut f, now), Action::Drop(RouterDrop::NoRoute));
}

#[test]
fn a_container_cannot_take_anothers_address_or_fill_the_table() {
    let mut r = two_legs();
    let now = Instant::now();
    let gw1: Ipv6Addr = "fd00:16:2::1".parse().unwrap();
    let victim: Ipv6Addr = "fd00:16:2::77".parse().unwrap();
    let (v_mac, att) = (Mac([2, 0, 0, 0, 2, 0x77]), Mac([2, 0, 0, 0, 2, 0x66]));
    let na_from = |target: Ipv6Addr, mac: Mac| {
        let mut m = vec![0u8; 32];
        icmpv6::emit_na(&mut m, target, mac, false, true);
        let mut f = icmp6(
            icmpv6::multicast_mac(icmpv6::ALL_NODES),
            target,
            icmpv6::ALL_NODES,
            255,
            m,
        );
        f[16..22].copy_from_slice(&mac.0);
        f
    };
    // The victim's own advertisement is learned...
    assert_eq!(r.handle(1, &mut na_from(victim, v_mac), now), Action::Done);
    // ... and another MAC advertising its address does not move it.
    assert_eq!(r.handle(1, &mut na_from(victim, att), now), Action::Done);
    let mut f = icmp6(
        GW,
        a6(),
        victim,
        64,
        vec![icmpv6::ECHO_REQUEST, 0, 0, 0, 0, 1, 0, 1],
    );
    assert_eq!(r.handle(0, &mut f, now), Action::Send { iface: 1 });
    assert_eq!(&f[10..16], &v_mac.0, "still to the victim");
    assert_eq!(r.stats().neighbors6_moved_refused, 1);
    // Addresses outside the leg's subnet6, and the router's own, are never learned.
    assert_eq!(
        r.handle(1, &mut na_from("2001:db8::1".parse().unwrap(), att), now),
        Action::Done
    );
    assert_eq!(r.handle(1, &mut na_from(gw1, att), now), Action::Done);
    assert!(r.neighbors6(now).iter().all(|n| n.2 != att));
    // One MAC holds at most 64 addresses.
    for i in 0..100u16 {
        let ip = Ipv6Addr::new(0xfd00, 0x16, 2, 0, 0, 0, 1, i);
        r.handle(1, &mut na_from(ip, att), now);
    }
    assert_eq!(r.neighbors6(now).iter().filter(|n| n.2 == att).count(), 64);
    assert_eq!(r.stats().neighbors6_full, 36);

    // The far leg's gateway answers a ping from this side.
    let mut f = icmp6(
        GW,
        a6(),
        gw1,
        64,
        vec![icmpv6::ECHO_REQUEST, 0, 0, 0, 0, 1, 0, 1],
    );
    assert_eq!(r.handle(0, &mut f, now), Action::Send { iface: 0 });

    // A solicitation from :: may carry no link-layer address (RFC 4861 4.3).
    let mut f = icmp6(
        icmpv6::multicast_mac(solicited_node(gw6())),
        Ipv6Addr::UNSPECIFIED,
        solicited_node(gw6()),
        255,
        ns(gw6()),
    );
    assert_eq!(
        r.handle(0, &mut f, now),
        Action::Drop(RouterDrop::BadIcmpv6)
    );

    // Router solicitations are answered at most every 3 s per leg.
    let all_routers: Ipv6Addr = "ff02::2".parse().unwrap();
    let rs = || vec![icmpv6::ROUTER_SOLICIT, 0, 0, 0, 0, 0, 0, 0];
    for _ in 0..50 {
        let mut f = icmp6(
            icmpv6::multicast_mac(all_routers),
            icmpv6::link_local(A),
            all_routers,
            255,
            rs(),
        );
        r.handle(0, &mut f, now);
    }
    let mut sent_ras = 0;
    r.outbox().drain(|_, _| sent_ras += 1);
    assert_eq!(sent_ras, 1);
    assert_eq!(r.stats().ra_rate_limited, 49);
    let mut f = icmp6(
        icmpv6::multicast_mac(all_routers),
        icmpv6::link_local(A),
        all_routers,
        255,
        rs(),
    );
    r.handle(0, &mut f, now + std::time::Duration::from_secs(4));
    sent(&mut r);
}

#[test]
fn no_error_about_an_error_behind_extension_headers_and_udp_to_the_router_is_refused() {
    let mut r = two_legs();
    let now = Instant::now();
    let b6: Ipv6Addr = "fd00:16:2::2".parse().unwrap();
    r.add_static_neighbor6(b6, Mac([2, 0, 0, 0, 2, 2]), now);
    // Hop limit 1, a destination-options header, then an ICMPv6 destination unreachable.
    let mut f = icmp6(GW, a6(), b6, 1, vec![1, 0, 0, 0, 0, 0, 0, 0]);
    let at = 10 + 14 + 40;
    f.splice(at..at, [58u8, 0, 1, 4, 0, 0, 0, 0]);
    f[10 + 14 + 6] = 60;
    let plen = u16::from_be_bytes([f[28], f[29]]) + 8;
    f[28..30].copy_from_slice(&plen.to_be_bytes());
    assert_eq!(
        r.handle(0, &mut f, now),
        Action::Drop(RouterDrop::TtlExceeded)
    );
    assert!(r.outbox().is_empty(), "no error about an error");

    // UDP to the gateway: port unreachable, as a host answers traceroute.
    let mut udp = vec![0u8; 8];
    udp[0..2].copy_from_slice(&33434u16.to_be_bytes());
    udp[2..4].copy_from_slice(&33434u16.to_be_bytes());
    udp[4..6].copy_from_slice(&8u16.to_be_bytes());
    let mut f = icmp6(GW, a6(), gw6(), 64, vec![0u8; 8]);
    f[10 + 14 + 6] = 17;
    let at = 10 + 14 + 40;
    f[at..at + 8].copy_from_slice(&udp);
    assert_eq!(
        r.handle(0, &mut f, now),
        Action::Drop(RouterDrop::ToRouterUnsupported)
    );
    let (_, _, to, _, msg) = sent(&mut r);
    assert_eq!((to, msg[0], msg[1]), (a6(), 1, 4));
}

#[test]
fn a_routed_packet_with_too_many_extension_headers_is_dropped() {
    let mut r = two_legs();
    let now = Instant::now();
    let b6: Ipv6Addr = "fd00:16:2::2".parse().unwrap();
    r.add_static_neighbor6(b6, Mac([2, 0, 0, 0, 2, 2]), now);
    let chained = |n: usize| {
        let echo = vec![icmpv6::ECHO_REQUEST, 0, 0, 0, 0, 1, 0, 1];
        let mut f = icmp6(GW, a6(), b6, 64, echo);
        let at = 10 + 14 + 40;
        for i in 0..n {
            let next = if i + 1 == n { 58 } else { 60 };
            f.splice(at + 8 * i..at + 8 * i, [next, 0, 1, 4, 0, 0, 0, 0]);
        }
        if n > 0 {
            f[10 + 14 + 6] = 60;
        }
        let plen = (f.len() - at) as u16;
        f[28..30].copy_from_slice(&plen.to_be_bytes());
        f
    };
    assert_eq!(r.handle(0, &mut chained(3), now), Action::Send { iface: 1 });
    assert_eq!(r.handle(0, &mut chained(8), now), Action::Send { iface: 1 });
    assert_eq!(
        r.handle(0, &mut chained(9), now),
        Action::Drop(RouterDrop::Ipv6ExtHeaders)
    );
    assert_eq!(
        r.handle(0, &mut chained(150), now),
        Action::Drop(RouterDrop::Ipv6ExtHeaders)
    );
}
