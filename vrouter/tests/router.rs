//! The router's decisions over hand-built frames, without root or devices.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use smoltcp::wire::{ArpOperation, ArpPacket, Icmpv4Message, Icmpv4Packet, Ipv4Packet};
use vrouter::checksum;
use vrouter::router::{Action, Iface, Router, RouterConfig, RouterDrop};
use vswitch::Mac;

const GW0: Mac = Mac([2, 0x74, 0x6e, 0, 0, 1]);
const GW1: Mac = Mac([2, 0x74, 0x6e, 0, 0, 2]);
const A: Mac = Mac([2, 0, 0xac, 0x10, 1, 2]);
const B: Mac = Mac([2, 0, 0xac, 0x10, 2, 2]);
const A_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 1, 2);
const B_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 2, 2);

fn router() -> Router {
    Router::new(
        vec![
            Iface {
                name: "br0".into(),
                mac: GW0,
                ip: Some(Ipv4Addr::new(172, 16, 1, 1)),
                prefix: 24,
                ip6: None,
            },
            Iface {
                name: "br1".into(),
                mac: GW1,
                ip: Some(Ipv4Addr::new(172, 16, 2, 1)),
                prefix: 24,
                ip6: None,
            },
        ],
        vec![],
        RouterConfig::default(),
    )
}

/// vnet header + Ethernet + IPv4 (+ `l4`), checksummed.
fn ipv4(
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    proto: u8,
    l4: &[u8],
) -> Vec<u8> {
    let mut f = vec![0u8; 10];
    f.extend_from_slice(&dst_mac.0);
    f.extend_from_slice(&src_mac.0);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip[8] = ttl;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

fn echo_request(payload: &[u8]) -> Vec<u8> {
    let mut icmp = vec![8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
    icmp.extend_from_slice(payload);
    let c = checksum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    icmp
}

fn arp(op: ArpOperation, dst_mac: Mac, sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 10 + 14 + 28];
    f[10..16].copy_from_slice(&dst_mac.0);
    f[16..22].copy_from_slice(&sha.0);
    f[22..24].copy_from_slice(&0x0806u16.to_be_bytes());
    let mut p = ArpPacket::new_unchecked(&mut f[24..]);
    p.set_hardware_type(smoltcp::wire::ArpHardware::Ethernet);
    p.set_protocol_type(smoltcp::wire::EthernetProtocol::Ipv4);
    p.set_hardware_len(6);
    p.set_protocol_len(4);
    p.set_operation(op);
    p.set_source_hardware_addr(&sha.0);
    p.set_source_protocol_addr(&spa.octets());
    p.set_target_hardware_addr(&[0; 6]);
    p.set_target_protocol_addr(&tpa.octets());
    f
}

fn outbox(r: &mut Router) -> Vec<(usize, Vec<u8>)> {
    let mut v = Vec::new();
    r.outbox().drain(|i, b| v.push((i, b.to_vec())));
    v
}

#[test]
fn the_gateway_answers_arp_in_place_and_learns_the_asker() {
    let now = Instant::now();
    let mut r = router();
    let mut f = arp(
        ArpOperation::Request,
        Mac::BROADCAST,
        A,
        A_IP,
        Ipv4Addr::new(172, 16, 1, 1),
    );
    assert_eq!(r.handle(0, &mut f, now), Action::Send { iface: 0 });
    assert_eq!(&f[10..16], &A.0);
    assert_eq!(&f[16..22], &GW0.0);
    let p = ArpPacket::new_checked(&f[24..]).unwrap();
    assert_eq!(p.operation(), ArpOperation::Reply);
    assert_eq!(p.source_hardware_addr(), &GW0.0);
    assert_eq!(p.source_protocol_addr(), &[172, 16, 1, 1]);
    assert_eq!(p.target_hardware_addr(), &A.0);
    assert_eq!(p.target_protocol_addr(), &A_IP.octets());
    assert_eq!(r.neighbors().lookup(0, A_IP, now), Some(A));
}

#[test]
fn arp_for_someone_else_is_not_answered_nor_learned() {
    let now = Instant::now();
    let mut r = router();
    let mut f = arp(
        ArpOperation::Request,
        Mac::BROADCAST,
        A,
        A_IP,
        Ipv4Addr::new(172, 16, 1, 9),
    );
    assert_eq!(r.handle(0, &mut f, now), Action::Done);
    assert!(r.neighbors().is_empty());
    // An asker from outside the interface's subnet is answered but not learned.
    let mut f = arp(
        ArpOperation::Request,
        Mac::BROADCAST,
        A,
        Ipv4Addr::new(10, 9, 9, 9),
        Ipv4Addr::new(172, 16, 1, 1),
    );
    assert_eq!(r.handle(0, &mut f, now), Action::Send { iface: 0 });
    assert!(r.neighbors().is_empty());
}

#[test]
fn the_gateway_answers_ping_with_valid_checksums() {
    let now = Instant::now();
    let mut r = router();
    let mut f = ipv4(
        GW0,
        A,
        A_IP,
        Ipv4Addr::new(172, 16, 1, 1),
        64,
        1,
        &echo_request(b"hello, gateway"),
    );
    assert_eq!(r.handle(0, &mut f, now), Action::Send { iface: 0 });
    assert_eq!(&f[10..16], &A.0);
    assert_eq!(&f[16..22], &GW0.0);
    let ip = Ipv4Packet::new_checked(&f[24..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.src_addr(), Ipv4Addr::new(172, 16, 1, 1));
    assert_eq!(ip.dst_addr(), A_IP);
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(icmp.msg_type(), Icmpv4Message::EchoReply);
    assert!(icmp.verify_checksum());
    assert_eq!(icmp.echo_seq_no(), 1);
    assert_eq!(icmp.data(), b"hello, gateway");
    // The other gateway's address answers from this leg too.
    let mut f = ipv4(
        GW0,
        A,
        A_IP,
        Ipv4Addr::new(172, 16, 2, 1),
        64,
        1,
        &echo_request(b"x"),
    );
    assert_eq!(r.handle(0, &mut f, now), Action::Send { iface: 0 });
    assert_eq!(r.stats().echo_replies, 2);
}

#[test]
fn routes_between_subnets_resolving_the_next_hop_first() {
    let now = Instant::now();
    let mut r = router();
    let udp = [0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, 1, 2, 3, 4];
    let mut f = ipv4(GW0, A, A_IP, B_IP, 64, 17, &udp);
    let original = f.clone();
    let action = r.handle(0, &mut f, now);
    assert_eq!(
        action,
        Action::Resolve {
            iface: 1,
            next_hop: B_IP,
            sender: A,
        }
    );
    // TTL down by one, checksum updated incrementally and equal to a fresh one.
    let ip = Ipv4Packet::new_checked(&f[24..]).unwrap();
    assert_eq!(ip.hop_limit(), 63);
    assert!(ip.verify_checksum());
    assert_eq!(&f[16..22], &GW1.0, "source MAC is the outgoing leg's");
    assert_eq!(&f[44..], &original[44..], "payload untouched");
    // An ARP request for B went into the outbox, on br1.
    let out = outbox(&mut r);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 1);
    let req = ArpPacket::new_checked(&out[0].1[24..]).unwrap();
    assert_eq!(req.operation(), ArpOperation::Request);
    assert_eq!(req.target_protocol_addr(), &B_IP.octets());
    assert_eq!(req.source_protocol_addr(), &[172, 16, 2, 1]);
    assert!(!r.complete(1, B_IP.into(), &mut f, now));
    // B answers; the kept frame can go.
    let mut reply = arp(
        ArpOperation::Reply,
        GW1,
        B,
        B_IP,
        Ipv4Addr::new(172, 16, 2, 1),
    );
    assert_eq!(r.handle(1, &mut reply, now), Action::Done);
    assert!(r.take_learned());
    assert!(r.complete(1, B_IP.into(), &mut f, now));
    assert_eq!(&f[10..16], &B.0);
    // The next frame goes at once.
    let mut g = ipv4(GW0, A, A_IP, B_IP, 64, 17, &udp);
    assert_eq!(r.handle(0, &mut g, now), Action::Send { iface: 1 });
    assert_eq!(&g[10..16], &B.0);
    assert_eq!(r.stats().routed, 2);
}

#[test]
fn ttl_expiry_sends_time_exceeded_quoting_the_packet() {
    let now = Instant::now();
    let mut r = router();
    let udp = [0x30, 0x39, 0x82, 0x9a, 0x00, 0x0c, 0x00, 0x00, 1, 2, 3, 4];
    let mut f = ipv4(GW0, A, A_IP, B_IP, 1, 17, &udp);
    assert_eq!(
        r.handle(0, &mut f, now),
        Action::Drop(RouterDrop::TtlExceeded)
    );
    assert_eq!(r.stats().dropped(RouterDrop::TtlExceeded), 1);
    let out = outbox(&mut r);
    assert_eq!(out.len(), 1);
    let (iface, err) = &out[0];
    assert_eq!(*iface, 0);
    assert_eq!(&err[10..16], &A.0);
    let ip = Ipv4Packet::new_checked(&err[24..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.src_addr(), Ipv4Addr::new(172, 16, 1, 1));
    assert_eq!(ip.dst_addr(), A_IP);
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!(icmp.msg_type(), Icmpv4Message::TimeExceeded);
    // The quote: the original IP header and the first 8 bytes (the UDP header).
    assert_eq!(&icmp.data()[..28], &f[24..52]);
}

#[test]
fn no_route_sends_net_unreachable() {
    let now = Instant::now();
    let mut r = router();
    let mut f = ipv4(GW0, A, A_IP, Ipv4Addr::new(10, 1, 2, 3), 64, 17, &[0; 8]);
    assert_eq!(r.handle(0, &mut f, now), Action::Drop(RouterDrop::NoRoute));
    assert_eq!(r.stats().dropped(RouterDrop::NoRoute), 1);
    let out = outbox(&mut r);
    let ip = Ipv4Packet::new_checked(&out[0].1[24..]).unwrap();
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(icmp.msg_type(), Icmpv4Message::DstUnreachable);
    assert_eq!(icmp.msg_code(), 0);
}

#[test]
fn icmp_errors_are_rate_limited_and_never_about_icmp_errors() {
    let now = Instant::now();
    let mut r = router();
    // One sender flooding gets its own share (10 at once), not the router's budget.
    for _ in 0..200 {
        let mut f = ipv4(GW0, A, A_IP, B_IP, 1, 17, &[0; 8]);
        r.handle(0, &mut f, now);
        outbox(&mut r);
    }
    assert_eq!(r.stats().icmp_errors, 10);
    assert_eq!(r.stats().icmp_rate_limited, 190);
    // The others still get theirs, up to the router's whole budget (a burst of 50).
    for k in 0..60u8 {
        let mut f = ipv4(
            GW0,
            A,
            Ipv4Addr::new(172, 16, 1, 100 + k),
            B_IP,
            1,
            17,
            &[0; 8],
        );
        r.handle(0, &mut f, now);
        outbox(&mut r);
    }
    assert_eq!(
        r.stats().icmp_errors,
        RouterConfig::default().icmp_burst as u64
    );
    // A second later the buckets have refilled some.
    let later = now + Duration::from_secs(1);
    let mut f = ipv4(GW0, A, A_IP, B_IP, 1, 17, &[0; 8]);
    r.handle(0, &mut f, later);
    assert_eq!(outbox(&mut r).len(), 1);
    // A time-exceeded about an ICMP error (type 3) is never sent.
    let mut f = ipv4(GW0, A, A_IP, B_IP, 1, 1, &[3, 1, 0, 0, 0, 0, 0, 0]);
    r.handle(0, &mut f, later);
    assert!(outbox(&mut r).is_empty());
}

#[test]
fn bad_headers_are_dropped_by_reason() {
    let now = Instant::now();
    let mut r = router();
    // One bit of the source address flipped: the header checksum fails.
    let mut g = ipv4(GW0, A, A_IP, B_IP, 64, 17, &[0; 8]);
    g[10 + 14 + 12] ^= 1;
    assert_eq!(
        r.handle(0, &mut g, now),
        Action::Drop(RouterDrop::BadIpChecksum)
    );
    assert_eq!(r.stats().dropped(RouterDrop::BadIpChecksum), 1);
    let mut short = ipv4(GW0, A, A_IP, B_IP, 64, 17, &[0; 8]);
    short.truncate(10 + 14 + 10);
    assert_eq!(
        r.handle(0, &mut short, now),
        Action::Drop(RouterDrop::BadIpHeader)
    );
    assert_eq!(r.stats().dropped(RouterDrop::BadIpHeader), 1);
    let mut other = ipv4(B, A, A_IP, B_IP, 64, 17, &[0; 8]);
    assert_eq!(
        r.handle(0, &mut other, now),
        Action::Drop(RouterDrop::NotForRouter)
    );
    assert_eq!(r.stats().dropped(RouterDrop::NotForRouter), 1);
    // IPv6 is named for what it is until the router routes it.
    let mut v6 = ipv4(GW0, A, A_IP, B_IP, 64, 17, &[0; 8]);
    v6[22..24].copy_from_slice(&0x86ddu16.to_be_bytes());
    assert_eq!(
        r.handle(0, &mut v6, now),
        Action::Drop(RouterDrop::Ipv6NotRouted)
    );
    assert_eq!(r.stats().dropped(RouterDrop::Ipv6NotRouted), 1);
    let mut other = ipv4(GW0, A, A_IP, B_IP, 64, 17, &[0; 8]);
    other[22..24].copy_from_slice(&0x88b5u16.to_be_bytes());
    assert_eq!(
        r.handle(0, &mut other, now),
        Action::Drop(RouterDrop::UnsupportedEthertype)
    );
    assert_eq!(r.stats().dropped(RouterDrop::UnsupportedEthertype), 1);
}

#[test]
fn garbage_never_panics() {
    let now = Instant::now();
    let mut r = router();
    let seeds = [
        arp(
            ArpOperation::Request,
            Mac::BROADCAST,
            A,
            A_IP,
            Ipv4Addr::new(172, 16, 1, 1),
        ),
        ipv4(
            GW0,
            A,
            A_IP,
            Ipv4Addr::new(172, 16, 1, 1),
            64,
            1,
            &echo_request(b"ping"),
        ),
        ipv4(GW0, A, A_IP, B_IP, 1, 17, &[0; 8]),
    ];
    let mut x = 0x1234_5678_9abc_def1u64;
    for seed in &seeds {
        for cut in 0..seed.len() {
            let mut f = seed[..cut].to_vec();
            r.handle(0, &mut f, now);
        }
        for _ in 0..3000 {
            let mut f = seed.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = 10 + (x as usize % (f.len() - 10));
                f[i] = (x >> 32) as u8;
            }
            r.handle((x % 2) as usize, &mut f, now);
            outbox(&mut r);
        }
    }
}

#[test]
fn with_host_egress_outside_goes_to_the_host_but_never_loopback() {
    let now = Instant::now();
    let mut r = router();
    r.set_host_egress(true);
    let mut f = ipv4(GW0, A, A_IP, Ipv4Addr::new(192, 0, 2, 1), 64, 17, &[0; 8]);
    assert_eq!(r.handle(0, &mut f, now), Action::ToHost);
    for dst in [[127, 0, 0, 1], [0, 1, 2, 3], [240, 0, 0, 1]] {
        let mut f = ipv4(GW0, A, A_IP, Ipv4Addr::from(dst), 64, 17, &[0; 8]);
        assert_eq!(
            r.handle(0, &mut f, now),
            Action::Drop(RouterDrop::NoRoute),
            "{dst:?}"
        );
    }
    // TTL is checked before the host takes it.
    let mut f = ipv4(GW0, A, A_IP, Ipv4Addr::new(192, 0, 2, 1), 1, 17, &[0; 8]);
    assert_eq!(
        r.handle(0, &mut f, now),
        Action::Drop(RouterDrop::TtlExceeded)
    );
    assert_eq!(r.stats().dropped(RouterDrop::TtlExceeded), 1);
}

#[test]
fn too_big_for_the_next_bridge_gets_fragmentation_needed_with_its_mtu() {
    let now = Instant::now();
    let mut r = router();
    r.set_mtu(1, 1400);
    let mut f = ipv4(GW0, A, A_IP, B_IP, 64, 17, &vec![0; 1480 - 20]);
    f[10 + 14 + 6] = 0x40; // DF
    let c = checksum::checksum(&{
        let mut h = f[24..44].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    });
    f[34..36].copy_from_slice(&c.to_be_bytes());
    assert_eq!(r.handle(0, &mut f, now), Action::Drop(RouterDrop::TooBig));
    assert_eq!(r.stats().dropped(RouterDrop::TooBig), 1);
    let out = outbox(&mut r);
    assert_eq!(out.len(), 1);
    let ip = Ipv4Packet::new_checked(&out[0].1[24..]).unwrap();
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(icmp.msg_type(), Icmpv4Message::DstUnreachable);
    assert_eq!(icmp.msg_code(), 4);
    assert!(icmp.verify_checksum());
    assert_eq!(&ip.payload()[6..8], &1400u16.to_be_bytes(), "next-hop MTU");
    // Without DF: routed on (the handler cuts it into fragments on the way out, as
    // RFC 1812 has a router do), no ICMP.
    let mut f = ipv4(GW0, A, A_IP, B_IP, 64, 17, &vec![0; 1460]);
    assert!(matches!(r.handle(0, &mut f, now), Action::Resolve { .. }));
    assert_eq!(r.stats().fragmented, 1);
    assert_eq!(r.stats().dropped(RouterDrop::TooBig), 1);
    assert_eq!(outbox(&mut r).len(), 1, "only the ARP request");
    // A super-frame whose segments would not fit is too big too.
    let mut g = ipv4(GW0, A, A_IP, B_IP, 64, 6, &vec![0; 3000]);
    g[1] = 1; // GSO TCPv4
    g[2..4].copy_from_slice(&66u16.to_le_bytes());
    g[4..6].copy_from_slice(&1448u16.to_le_bytes());
    assert_eq!(r.handle(0, &mut g, now), Action::Drop(RouterDrop::TooBig));
    assert_eq!(r.stats().dropped(RouterDrop::TooBig), 2);
    // One that fits goes.
    let mut ok = ipv4(GW0, A, A_IP, B_IP, 64, 17, &vec![0; 1000]);
    assert!(matches!(r.handle(0, &mut ok, now), Action::Resolve { .. }));
}

/// Found by the fuzz targets (bench/fuzz.sh): bytes trailing the IPv4 packet in its
/// frame counted as part of it, so a small DF packet with a long trailer got
/// fragmentation-needed (and one without DF was counted as fragmented), and the
/// trailer went on with it into a bridge too narrow for it, which dropped the frame
/// as oversize. The packet alone decides, and only it leaves (`routed_len`).
#[test]
fn what_trails_a_packet_in_its_frame_is_not_part_of_it() {
    let now = Instant::now();
    let mut r = router();
    r.set_mtu(1, 1400);
    for df in [true, false] {
        let mut f = ipv4(GW0, A, A_IP, B_IP, 64, 17, &[0; 48]);
        if df {
            f[10 + 14 + 6] = 0x40;
            let mut ip = Ipv4Packet::new_checked(&mut f[24..]).unwrap();
            ip.fill_checksum();
        }
        let packet = f.len();
        f.extend_from_slice(&[0xee; 2000]);
        assert!(
            matches!(r.handle(0, &mut f, now), Action::Resolve { .. }),
            "DF {df}"
        );
        assert_eq!(vrouter::handler::routed_len(&f), packet, "DF {df}");
    }
    assert_eq!(r.stats().dropped(RouterDrop::TooBig), 0);
    assert_eq!(r.stats().fragmented, 0);
    // Not IPv4 (an ARP reply): as it is.
    let a = arp(
        ArpOperation::Reply,
        GW0,
        A,
        A_IP,
        Ipv4Addr::new(172, 16, 1, 1),
    );
    assert_eq!(vrouter::handler::routed_len(&a), a.len());
}
