//! Service VIPs over IPv6, over hand-built frames: neighbour advertisements for a
//! VIP, TCP and UDP translated both ways with L4 checksums that still verify (RFC 8200
//! section 8.1), the hairpin from gateway6, UDP with a zero checksum refused, resets
//! for idle flows, flows forgotten with their host, ICMPv6 errors quoting the packet as
//! sent; and the RDNSS option in router advertisements (RFC 8106).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};
use std::time::{Duration, Instant};

use vrouter::nat::Timeouts;
use vrouter::router::{Action, Iface, Router, RouterConfig, RouterDrop, Service};
use vswitch::wire::icmpv6::{self, fill_l4_checksum6, Icmpv6Packet, Ipv6Repr};
use vswitch::wire::ipv6::Ipv6Packet;
use vswitch::wire::tcp::{self, TcpPacket, TcpRepr};
use vswitch::wire::{udp, PROTO_TCP, PROTO_UDP};
use vswitch::Mac;

const GW0: Mac = Mac([2, 0x74, 0x6e, 0, 0, 1]);
const GW1: Mac = Mac([2, 0x74, 0x6e, 0, 0, 2]);
const CLIENT: Mac = Mac([2, 0, 0, 0, 1, 2]);
const B1: Mac = Mac([2, 0, 0, 0, 2, 2]);
const B2: Mac = Mac([2, 0, 0, 0, 2, 3]);
const NEAR: Mac = Mac([2, 0, 0, 0, 2, 5]);

fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn sa6(s: &str) -> SocketAddrV6 {
    s.parse().unwrap()
}

/// Leg 0 (front, fd00:16:1::/64) holds the client; leg 1 (back, fd00:16:2::/64) the
/// backends, the VIP and a client "near" them (the hairpin).
fn router() -> Router {
    let mut r = Router::new(
        vec![
            Iface {
                name: "front".into(),
                mac: GW0,
                ip: Some(Ipv4Addr::new(172, 16, 1, 1)),
                prefix: 24,
                ip6: Some((ip6("fd00:16:1::1"), 64)),
            },
            Iface {
                name: "back".into(),
                mac: GW1,
                ip: Some(Ipv4Addr::new(172, 16, 2, 1)),
                prefix: 24,
                ip6: Some((ip6("fd00:16:2::1"), 64)),
            },
        ],
        vec![
            Service {
                name: "api6".into(),
                proto: PROTO_TCP,
                vip: "[fd00:16:2::100]:80".parse().unwrap(),
                backends: vec![
                    "[fd00:16:2::2]:8080".parse().unwrap(),
                    "[fd00:16:2::3]:8080".parse().unwrap(),
                ],
            },
            Service {
                name: "dns6".into(),
                proto: PROTO_UDP,
                vip: "[fd00:16:2::53]:53".parse().unwrap(),
                backends: vec!["[fd00:16:2::2]:5353".parse().unwrap()],
            },
        ],
        RouterConfig {
            nat_timeouts: Timeouts {
                tcp: Duration::from_secs(60),
                ..Timeouts::default()
            },
            ..RouterConfig::default()
        },
    );
    r.set_mtu(0, 1500);
    r.set_mtu(1, 1500);
    let now = Instant::now();
    for (ip, mac) in [
        ("fd00:16:1::2", CLIENT),
        ("fd00:16:2::2", B1),
        ("fd00:16:2::3", B2),
        ("fd00:16:2::5", NEAR),
    ] {
        assert!(r.add_static_neighbor6(ip6(ip), mac, now));
    }
    r
}

/// vnet header + Ethernet (to `dst_mac`, from `src_mac`) + IPv6 + a TCP segment or
/// UDP datagram with `payload`, checksummed.
fn l4(
    proto: u8,
    src_mac: Mac,
    dst_mac: Mac,
    src: SocketAddrV6,
    dst: SocketAddrV6,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let hl = if proto == PROTO_TCP { 20 } else { 8 };
    let mut seg = vec![0u8; hl + payload.len()];
    if proto == PROTO_TCP {
        TcpRepr {
            src_port: src.port(),
            dst_port: dst.port(),
            seq: 1000,
            ack: 1,
            flags,
            window: 65535,
        }
        .emit(&mut seg);
    } else {
        udp::emit_header(src.port(), dst.port(), payload.len(), &mut seg);
    }
    seg[hl..].copy_from_slice(payload);
    assert!(fill_l4_checksum6(*src.ip(), *dst.ip(), proto, &mut seg));
    let mut f = vec![0u8; 10];
    f.extend_from_slice(&dst_mac.0);
    f.extend_from_slice(&src_mac.0);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    let mut ip = [0u8; 40];
    Ipv6Repr {
        src: *src.ip(),
        dst: *dst.ip(),
        next_header: proto,
        hop_limit: 64,
        payload_len: seg.len(),
    }
    .emit(&mut ip);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&seg);
    f
}

/// The frame's destination MAC, its addresses and ports, and whether its TCP or UDP
/// checksum verifies.
fn seen(f: &[u8]) -> (Mac, SocketAddrV6, SocketAddrV6, bool) {
    let dst_mac = Mac(f[10..16].try_into().unwrap());
    let ip = Ipv6Packet::new_checked(&f[24..]).unwrap();
    let seg = ip.payload();
    let (sp, dp) = (
        u16::from_be_bytes([seg[0], seg[1]]),
        u16::from_be_bytes([seg[2], seg[3]]),
    );
    let mut copy = seg.to_vec();
    let field = if ip.next_header() == PROTO_TCP { 16 } else { 6 };
    let before = [copy[field], copy[field + 1]];
    fill_l4_checksum6(ip.src(), ip.dst(), ip.next_header(), &mut copy);
    (
        dst_mac,
        SocketAddrV6::new(ip.src(), sp, 0, 0),
        SocketAddrV6::new(ip.dst(), dp, 0, 0),
        before == [copy[field], copy[field + 1]],
    )
}

fn client(port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(ip6("fd00:16:1::2"), port, 0, 0)
}

fn vip() -> SocketAddrV6 {
    sa6("[fd00:16:2::100]:80")
}

#[test]
fn a_vip_is_answered_for_by_the_router_on_its_leg_only() {
    let mut r = router();
    let now = Instant::now();
    let ns = |target: Ipv6Addr, hops: u8| {
        let mut m = vec![0u8; 32];
        m[0] = icmpv6::NEIGHBOR_SOLICIT;
        m[8..24].copy_from_slice(&target.octets());
        m[24] = icmpv6::OPT_SOURCE_LLADDR;
        m[25] = 1;
        m[26..32].copy_from_slice(&NEAR.0);
        let (src, dst) = (ip6("fd00:16:2::5"), ip6("ff02::1:ff00:100"));
        icmpv6::fill_checksum(src, dst, &mut m);
        let mut f = vec![0u8; 10];
        f.extend_from_slice(&icmpv6::multicast_mac(dst).0);
        f.extend_from_slice(&NEAR.0);
        f.extend_from_slice(&0x86ddu16.to_be_bytes());
        let mut ip = [0u8; 40];
        Ipv6Repr {
            src,
            dst,
            next_header: icmpv6::NEXT_HEADER,
            hop_limit: hops,
            payload_len: m.len(),
        }
        .emit(&mut ip);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&m);
        f
    };
    assert_eq!(r.handle(1, &mut ns(*vip().ip(), 255), now), Action::Done);
    let mut frames = Vec::new();
    r.outbox().drain(|leg, f| frames.push((leg, f.to_vec())));
    assert_eq!(frames.len(), 1);
    let (leg, f) = &frames[0];
    assert_eq!(*leg, 1);
    let ip = Ipv6Packet::new_checked(&f[24..]).unwrap();
    let msg = ip.payload();
    assert!(Icmpv6Packet::new_checked(msg)
        .unwrap()
        .verify_checksum(ip.src(), ip.dst()));
    assert_eq!(msg[0], icmpv6::NEIGHBOR_ADVERT);
    assert_eq!(&msg[8..24], &vip().ip().octets(), "the VIP is the target");
    assert_eq!(&msg[26..32], &GW1.0, "at the router's MAC");
    // Not on the other leg, where the VIP is not on-link.
    assert_eq!(r.handle(0, &mut ns(*vip().ip(), 255), now), Action::Done);
    assert!(r.outbox().is_empty());
    // The same neighbour discovery rules as for gateway6: hop limit 255 only.
    assert_eq!(
        r.handle(1, &mut ns(*vip().ip(), 64), now),
        Action::Drop(RouterDrop::NdpHopLimit)
    );
    assert!(r.outbox().is_empty());
}

#[test]
fn tcp_to_a_vip_is_translated_both_ways_over_both_backends() {
    let mut r = router();
    let now = Instant::now();
    let mut by_backend = [0; 2];
    for port in 40000..40064 {
        let mut syn = l4(PROTO_TCP, CLIENT, GW0, client(port), vip(), tcp::SYN, b"");
        assert_eq!(r.handle(0, &mut syn, now), Action::Send { iface: 1 });
        let (mac, src, dst, ok) = seen(&syn);
        assert!(ok, "the checksum verifies after the rewrite");
        assert_eq!(src, client(port), "the backend sees the real client");
        assert_eq!(dst.port(), 8080);
        let (i, bmac) = match dst.ip().segments()[7] {
            2 => (0, B1),
            3 => (1, B2),
            _ => panic!("not a backend: {dst}"),
        };
        assert_eq!(mac, bmac);
        by_backend[i] += 1;
        // The backend's answer comes back from the VIP.
        let mut synack = l4(
            PROTO_TCP,
            bmac,
            GW1,
            dst,
            client(port),
            tcp::SYN | tcp::ACK,
            b"",
        );
        assert_eq!(r.handle(1, &mut synack, now), Action::Send { iface: 0 });
        let (mac, src, dst, ok) = seen(&synack);
        assert!(ok);
        assert_eq!((mac, src, dst), (CLIENT, vip(), client(port)));
        // Data with an odd length, still right.
        let mut data = l4(
            PROTO_TCP,
            CLIENT,
            GW0,
            client(port),
            vip(),
            tcp::ACK | tcp::PSH,
            b"GET / HTTP/1.1\r\n\r\n!",
        );
        assert_eq!(r.handle(0, &mut data, now), Action::Send { iface: 1 });
        assert!(seen(&data).3);
    }
    assert!(
        by_backend.iter().all(|&n| n > 10),
        "rendezvous hashing spreads flows: {by_backend:?}"
    );
    assert_eq!(r.flows().len(), 64);
    assert!(r.flows().flows().all(|f| f.original.as_v6().is_some()));
    // A packet the router did not expect is routed as it is: a backend's port
    // other than the service's is no flow.
    assert_eq!(r.stats().translated, 64 * 3);
}

#[test]
fn a_client_on_the_backends_own_subnet_is_seen_from_gateway6() {
    let mut r = router();
    let now = Instant::now();
    let near = sa6("[fd00:16:2::5]:41000");
    let mut syn = l4(PROTO_TCP, NEAR, GW1, near, vip(), tcp::SYN, b"");
    assert_eq!(r.handle(1, &mut syn, now), Action::Send { iface: 1 });
    let (mac, src, dst, ok) = seen(&syn);
    assert!(ok);
    assert_eq!(*src.ip(), ip6("fd00:16:2::1"), "from the leg's gateway6");
    assert!(src.port() >= 32768, "with a port of the router's");
    assert!(mac == B1 || mac == B2);
    // The backend answers the router, which hands it back from the VIP.
    let bmac = mac;
    let mut synack = l4(PROTO_TCP, bmac, GW1, dst, src, tcp::SYN | tcp::ACK, b"");
    assert_eq!(r.handle(1, &mut synack, now), Action::Send { iface: 1 });
    let (mac, from, to, ok) = seen(&synack);
    assert!(ok);
    assert_eq!((mac, from, to), (NEAR, vip(), near));
}

#[test]
fn udp_is_translated_but_a_zero_checksum_is_dropped_and_counted() {
    let mut r = router();
    let now = Instant::now();
    let dns = sa6("[fd00:16:2::53]:53");
    let mut q = l4(PROTO_UDP, CLIENT, GW0, client(5000), dns, 0, b"query");
    assert_eq!(r.handle(0, &mut q, now), Action::Send { iface: 1 });
    let (_, _, dst, ok) = seen(&q);
    assert!(ok);
    assert_eq!(dst, sa6("[fd00:16:2::2]:5353"));
    // The same datagram with no checksum: IPv6 forbids it (RFC 8200 section 8.1).
    let mut q = l4(PROTO_UDP, CLIENT, GW0, client(5001), dns, 0, b"query");
    let at = 10 + 14 + 40 + 6;
    q[at..at + 2].fill(0);
    assert_eq!(
        r.handle(0, &mut q, now),
        Action::Drop(RouterDrop::Udp6ZeroChecksum)
    );
    assert_eq!(r.stats().dropped(RouterDrop::Udp6ZeroChecksum), 1);
    assert_eq!(r.flows().len(), 1, "no flow for it");
}

#[test]
fn an_idle_flow_resets_both_ends_and_a_detached_host_takes_its_flows() {
    let mut r = router();
    let now = Instant::now();
    let mut syn = l4(PROTO_TCP, CLIENT, GW0, client(40000), vip(), tcp::SYN, b"");
    r.handle(0, &mut syn, now);
    let (bmac, _, backend, _) = seen(&syn);
    let mut synack = l4(
        PROTO_TCP,
        bmac,
        GW1,
        backend,
        client(40000),
        tcp::SYN | tcp::ACK,
        b"",
    );
    r.handle(1, &mut synack, now);
    r.outbox().drain(|_, _| {});
    r.tick(now + Duration::from_secs(61));
    let mut resets = Vec::new();
    r.outbox().drain(|leg, f| {
        let ip = Ipv6Packet::new_checked(&f[24..]).unwrap();
        if ip.next_header() == PROTO_TCP {
            resets.push((leg, f.to_vec()));
        }
    });
    assert_eq!(resets.len(), 2, "one to each end");
    for (leg, f) in &resets {
        let (mac, from, to, ok) = seen(f);
        assert!(ok);
        let t = TcpPacket::new_checked(&f[64..]).unwrap();
        assert_eq!(t.flags() & tcp::RST, tcp::RST);
        match leg {
            0 => assert_eq!((mac, from, to), (CLIENT, vip(), client(40000))),
            _ => assert_eq!((mac, from, to), (bmac, client(40000), backend)),
        }
    }
    assert_eq!(r.stats().flow_resets, 2);
    // Flows from and to a host that left go with it.
    for port in [1, 2, 3] {
        let mut syn = l4(PROTO_TCP, CLIENT, GW0, client(port), vip(), tcp::SYN, b"");
        r.handle(0, &mut syn, now);
    }
    assert_eq!(r.flows().len(), 3);
    assert_eq!(r.forget_host6(ip6("fd00:16:1::2")), 3);
    assert!(r.flows().is_empty());
}

#[test]
fn an_error_about_a_translated_packet_quotes_it_as_sent() {
    let mut r = router();
    let now = Instant::now();
    let mut syn = l4(PROTO_TCP, CLIENT, GW0, client(40000), vip(), tcp::SYN, b"");
    syn[10 + 14 + 7] = 1; // hop limit 1: time exceeded
    assert_eq!(
        r.handle(0, &mut syn, now),
        Action::Drop(RouterDrop::TtlExceeded)
    );
    let mut frames = Vec::new();
    r.outbox().drain(|leg, f| frames.push((leg, f.to_vec())));
    assert_eq!(frames.len(), 1);
    let (leg, f) = &frames[0];
    assert_eq!(*leg, 0);
    let ip = Ipv6Packet::new_checked(&f[24..]).unwrap();
    assert_eq!(ip.dst(), *client(0).ip(), "to the client");
    let msg = ip.payload();
    assert!(Icmpv6Packet::new_checked(msg)
        .unwrap()
        .verify_checksum(ip.src(), ip.dst()));
    assert_eq!(msg[0], 3, "time exceeded");
    let quoted = Ipv6Packet::new_quoted(&msg[8..]).unwrap();
    assert_eq!(
        (quoted.src(), quoted.dst()),
        (*client(0).ip(), *vip().ip()),
        "the packet as the client sent it"
    );
    assert_eq!(&quoted.payload()[..4], &[0x9c, 0x40, 0, 80]);
}

#[test]
fn advertisements_name_the_dns_servers() {
    let mut r = router();
    let now = Instant::now();
    let dns = [ip6("fd00:16:1::53"), ip6("2001:db8::35")];
    r.set_dns6(0, &dns);
    r.tick(now);
    let mut frames = Vec::new();
    r.outbox().drain(|leg, f| frames.push((leg, f.to_vec())));
    let ra = |leg: usize| {
        frames
            .iter()
            .find(|(l, _)| *l == leg)
            .map(|(_, f)| f.clone())
            .unwrap()
    };
    let with = ra(0);
    let ip = Ipv6Packet::new_checked(&with[24..]).unwrap();
    let msg = ip.payload();
    assert_eq!(msg[0], icmpv6::ROUTER_ADVERT);
    assert!(Icmpv6Packet::new_checked(msg)
        .unwrap()
        .verify_checksum(ip.src(), ip.dst()));
    assert!(Icmpv6Packet::new_checked(msg).unwrap().nd_options_valid(16));
    let o = &msg[icmpv6::RA_LEN..];
    assert_eq!(o[0], icmpv6::OPT_RDNSS);
    assert_eq!(o[1], 5);
    assert_eq!(u32::from_be_bytes(o[4..8].try_into().unwrap()), 600);
    assert_eq!(&o[8..24], &dns[0].octets());
    assert_eq!(&o[24..40], &dns[1].octets());
    // The other leg has none: no option.
    let without = ra(1);
    assert_eq!(without.len(), 10 + 14 + 40 + icmpv6::RA_LEN);
}

#[test]
fn what_no_service_takes_at_a_vip_never_goes_to_the_host() {
    // With the host proxy on (masquerade), TCP or UDP to a VIP's port no service
    // serves is the router's to answer, not something to send out of the host.
    let mut r = router();
    r.set_host_egress(true);
    let now = Instant::now();
    let other_port = sa6("[fd00:16:2::100]:81");
    let mut f = l4(
        PROTO_TCP,
        CLIENT,
        GW0,
        client(40000),
        other_port,
        tcp::SYN,
        b"",
    );
    let action = r.handle(0, &mut f, now);
    assert!(matches!(action, Action::Drop(_)), "{action:?}");
    let mut f = l4(PROTO_UDP, CLIENT, GW0, client(40000), other_port, 0, b"x");
    let action = r.handle(0, &mut f, now);
    assert!(matches!(action, Action::Drop(_)), "{action:?}");
    // Port unreachable back to the client, from the router.
    let mut frames = Vec::new();
    r.outbox().drain(|leg, f| frames.push((leg, f.to_vec())));
    assert_eq!(frames.len(), 1);
    // A gateway6's TCP (a forward's return half) is the host proxy's.
    let gw = sa6("[fd00:16:1::1]:33000");
    let mut f = l4(
        PROTO_TCP,
        CLIENT,
        GW0,
        client(80),
        gw,
        tcp::SYN | tcp::ACK,
        b"",
    );
    assert_eq!(r.handle(0, &mut f, now), Action::ToHost);
}
