//! Property tests of the wire layer (`vswitch::wire`): every view's `new_checked` takes
//! any bytes without panicking and a view it accepts answers every accessor inside its
//! buffer; what the emitters write parses back to what they were given; emitted
//! packets' checksums verify, and stay valid through the NAT rewrites; fragments
//! reassemble to the original payload; a flow key read from a packet is the one it was
//! built from.
//!
//! Case counts are kept small enough for the whole file to run in a few seconds in
//! `cargo test --release` (PROPTEST_CASES raises them for a longer hunt).

use std::net::{Ipv4Addr, SocketAddrV4};

use proptest::prelude::*;
use vswitch::wire::arp::{self, ArpPacket, ArpRepr};
use vswitch::wire::checksum::{self, classify, Checksums};
use vswitch::wire::ethernet::{self, EthernetFrame, EthernetRepr};
use vswitch::wire::flow::FlowKey;
use vswitch::wire::icmpv4::{self, IcmpPacket, IcmpRepr};
use vswitch::wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use vswitch::wire::ipv6::Ipv6Packet;
use vswitch::wire::tcp::{self, TcpPacket, TcpRepr};
use vswitch::wire::udp::{self, UdpPacket};
use vswitch::wire::virtio::VnetHdr;
use vswitch::wire::vxlan::{self, Vxlan};
use vswitch::wire::{self, nat, pseudo_sum, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use vswitch::Mac;

/// Cases per property: enough to find what these find in practice, few enough for
/// the file to take a couple of seconds.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // No regression files are written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn mac() -> impl Strategy<Value = Mac> {
    any::<[u8; 6]>().prop_map(Mac)
}

fn addr() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn sock() -> impl Strategy<Value = SocketAddrV4> {
    (addr(), any::<u16>()).prop_map(|(a, p)| SocketAddrV4::new(a, p))
}

/// Random bytes, and random bytes with the first byte made to look like an IPv4 (or
/// IPv6) header and a plausible length, so the deeper checks are reached.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..160),
        (
            prop::collection::vec(any::<u8>(), 20..160),
            5u8..16,
            any::<bool>()
        )
            .prop_map(|(mut b, ihl, v6)| {
                b[0] = if v6 { 0x60 | (b[0] & 0x0f) } else { 0x40 | ihl };
                let len = b.len() as u16;
                // A total length at, under or just over the buffer.
                let total = len
                    .saturating_sub(b[1] as u16 % 24)
                    .saturating_add(b[3] as u16 % 3);
                b[2..4].copy_from_slice(&total.to_be_bytes());
                b
            }),
    ]
}

/// An IPv4/TCP packet (no options) with a payload and a finished checksum.
fn tcp_packet(src: SocketAddrV4, dst: SocketAddrV4, flags: u8, payload: &[u8]) -> Vec<u8> {
    let l4 = tcp::HEADER_LEN + payload.len();
    let mut p = vec![0u8; ipv4::HEADER_LEN + l4];
    Ipv4Repr {
        src: *src.ip(),
        dst: *dst.ip(),
        protocol: PROTO_TCP,
        ttl: 64,
        ident: 7,
        dont_frag: true,
        payload_len: l4,
    }
    .emit(&mut p);
    let seg = &mut p[ipv4::HEADER_LEN..];
    TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        seq: 1,
        ack: 2,
        flags,
        window: 1000,
    }
    .emit(seg);
    seg[tcp::HEADER_LEN..].copy_from_slice(payload);
    assert!(wire::fill_l4_checksum(*src.ip(), *dst.ip(), PROTO_TCP, seg));
    p
}

/// An IPv4/UDP packet with a finished checksum.
fn udp_packet(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; ipv4::HEADER_LEN + udp::HEADER_LEN + payload.len()];
    let n = udp::emit_packet(src, dst, 64, payload, &mut p).expect("room");
    assert_eq!(n, p.len());
    p
}

/// 0x0000 and 0xffff are the same number in one's complement.
fn same(a: u16, b: u16) -> bool {
    a == b || (a | b == 0xffff && (a == 0 || b == 0))
}

/// A TCP or UDP packet, by `tcp`.
fn l4_packet(tcp: bool, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    if tcp {
        tcp_packet(src, dst, tcp::ACK | tcp::PSH, payload)
    } else {
        udp_packet(src, dst, payload)
    }
}

/// Where a TCP (16) or UDP (6) header keeps its checksum.
fn csum_at(proto: u8) -> usize {
    if proto == PROTO_TCP {
        16
    } else {
        6
    }
}

/// Leaves `p`'s L4 checksum partial, as a CHECKSUM_PARTIAL sender does: the field
/// holds the pseudo-header sum.
fn make_partial(p: &mut [u8]) {
    let ip = Ipv4Packet::new_checked(&*p).unwrap();
    let (proto, ihl, l4_len) = (ip.protocol(), ip.header_len(), ip.payload().len());
    let sum = pseudo_sum(ip.src(), ip.dst(), proto, l4_len);
    let at = ihl + csum_at(proto);
    p[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

/// A destination whose pseudo-header sum with `src` (for `proto` and `len`) folds to
/// 0xffff, one's complement zero: the edge of every incremental update.
fn zero_sum_dst(src: Ipv4Addr, proto: u8, len: usize, high: u16) -> Ipv4Addr {
    let partial = pseudo_sum(src, Ipv4Addr::from((high as u32) << 16), proto, len);
    // partial + low == 0xffff in one's complement.
    let low = 0xffff - partial;
    Ipv4Addr::from(((high as u32) << 16) | low as u32)
}

proptest! {
    #![proptest_config(config(512))]

    // ---- views over arbitrary bytes ----

    #[test]
    fn ethernet_view_stays_in_bounds(mut b in bytes()) {
        if let Some(f) = EthernetFrame::new_checked(&b[..]) {
            prop_assert!(b.len() >= ethernet::HEADER_LEN);
            let _ = (f.dst(), f.src(), f.ethertype(), f.is_tagged());
            prop_assert_eq!(f.payload().len(), b.len() - ethernet::HEADER_LEN);
            if let Some((_, p)) = f.inner() {
                prop_assert!(p.len() <= f.payload().len());
            }
            if let Some((t, p)) = f.innermost() {
                prop_assert!(p.len() <= f.payload().len());
                prop_assert!(!matches!(t, ethernet::ETHERTYPE_VLAN | ethernet::ETHERTYPE_QINQ));
            }
            let mut m = EthernetFrame::new_checked(&mut b[..]).unwrap();
            m.set_dst(Mac::BROADCAST);
            m.set_src(Mac([2, 0, 0, 0, 0, 1]));
            m.set_ethertype(0x0800);
            let _ = m.payload_mut().len();
        } else {
            prop_assert!(b.len() < ethernet::HEADER_LEN);
        }
    }

    #[test]
    fn ipv4_view_stays_in_bounds(mut b in bytes(), ttl in any::<u8>(), off in 0usize..9000, more in any::<bool>()) {
        match Ipv4Packet::new_checked(&b[..]) {
            Ok(ip) => {
                let (ihl, total) = (ip.header_len(), ip.total_len());
                prop_assert!(ihl >= ipv4::HEADER_LEN && ihl <= total && total <= b.len());
                let _ = (ip.ident(), ip.dont_frag(), ip.more_frags(), ip.frag_offset());
                let _ = (ip.is_fragment(), ip.tos(), ip.ttl(), ip.protocol(), ip.checksum());
                let _ = (ip.src(), ip.dst(), ip.verify_checksum());
                prop_assert_eq!(ip.header().len(), ihl);
                prop_assert_eq!(ip.payload().len(), total - ihl);
                prop_assert_eq!(ip.packet().len(), total);
                prop_assert_eq!(ip.into_payload().len(), total - ihl);
                let _ = FlowKey::from_ipv4(&ip);
                let mut m = Ipv4Packet::new_checked(&mut b[..]).unwrap();
                m.set_ttl(ttl);
                prop_assert_eq!(m.ttl(), ttl);
                m.set_fragment(off / 8 * 8, more);
                m.set_ident(9);
                m.set_src(Ipv4Addr::LOCALHOST);
                m.set_dst(Ipv4Addr::BROADCAST);
                m.fill_checksum();
                prop_assert!(m.verify_checksum());
                prop_assert_eq!(m.header_mut().len(), ihl);
                prop_assert_eq!(m.payload_mut().len(), total - ihl);
                // A TTL rewrite keeps a valid checksum valid.
                m.set_ttl(ttl.wrapping_add(1));
                prop_assert!(m.verify_checksum());
            }
            Err(ipv4::Ipv4Error::Truncated | ipv4::Ipv4Error::Malformed) => {}
        }
        // The quoted view: a whole header, and what there is of the payload.
        if let Ok(q) = Ipv4Packet::new_quoted(&b[..]) {
            prop_assert!(q.header_len() <= b.len());
            prop_assert_eq!(q.header().len(), q.header_len());
            prop_assert!(q.payload().len() <= b.len() - q.header_len());
            let _ = (q.src(), q.dst(), q.protocol(), q.frag_offset(), q.verify_checksum());
        }
    }

    #[test]
    fn ipv6_view_stays_in_bounds(b in bytes()) {
        if let Some(ip) = Ipv6Packet::new_checked(&b[..]) {
            let _ = (ip.next_header(), ip.hop_limit(), ip.src(), ip.dst());
            prop_assert_eq!(ip.payload().len(), ip.payload_len());
            prop_assert!(40 + ip.payload_len() <= b.len());
            prop_assert_eq!(ip.into_payload().len(), ip.payload_len());
        }
    }

    #[test]
    fn tcp_view_stays_in_bounds(mut b in bytes()) {
        if let Some(t) = TcpPacket::new_checked(&b[..]) {
            let thl = t.header_len();
            prop_assert!(thl >= tcp::HEADER_LEN && thl <= b.len());
            let _ = (t.src_port(), t.dst_port(), t.seq(), t.ack(), t.flags());
            let _ = (t.window(), t.checksum(), t.seq_end());
            prop_assert_eq!(t.options().len(), thl - tcp::HEADER_LEN);
            prop_assert_eq!(t.payload().len(), b.len() - thl);
            let mut m = TcpPacket::new_checked(&mut b[..]).unwrap();
            m.set_src_port(1);
            m.set_dst_port(2);
            m.set_seq(3);
            m.set_flags(tcp::SYN);
            m.set_checksum(4);
            prop_assert_eq!((m.src_port(), m.dst_port(), m.seq(), m.flags(), m.checksum()), (1, 2, 3, tcp::SYN, 4));
        }
    }

    #[test]
    fn udp_view_stays_in_bounds(mut b in bytes()) {
        if let Some(u) = UdpPacket::new_checked(&b[..]) {
            prop_assert!(u.len() >= udp::HEADER_LEN && u.len() <= b.len());
            prop_assert_eq!(u.payload().len(), u.len() - udp::HEADER_LEN);
            let _ = (u.src_port(), u.dst_port(), u.checksum(), u.is_empty());
            let mut m = UdpPacket::new_checked(&mut b[..]).unwrap();
            m.set_src_port(1);
            m.set_dst_port(2);
            m.set_checksum(3);
            prop_assert_eq!((m.src_port(), m.dst_port(), m.checksum()), (1, 2, 3));
        }
    }

    #[test]
    fn icmp_view_stays_in_bounds(mut b in bytes(), ident in any::<u16>()) {
        if let Some(i) = IcmpPacket::new_checked(&b[..]) {
            let _ = (i.kind(), i.code(), i.ident(), i.seq(), i.rest(), i.verify_checksum());
            prop_assert_eq!(i.data().len(), b.len() - icmpv4::HEADER);
            let mut m = IcmpPacket::new_checked(&mut b[..]).unwrap();
            m.set_kind(icmpv4::ECHO_REPLY);
            m.fill_checksum();
            prop_assert!(m.verify_checksum());
            // An identifier rewrite keeps the checksum right.
            icmpv4::set_echo_ident(&mut b, ident);
            let i = IcmpPacket::new_checked(&b[..]).unwrap();
            prop_assert_eq!(i.ident(), ident);
            prop_assert!(i.verify_checksum());
        } else {
            let before = b.clone();
            icmpv4::set_echo_ident(&mut b, ident);
            prop_assert_eq!(&b, &before);
        }
        let q = icmpv4::quote(&b);
        prop_assert!(q.len() <= icmpv4::MAX_QUOTE && q.len() <= b.len());
    }

    #[test]
    fn arp_vxlan_virtio_views_stay_in_bounds(b in bytes()) {
        if let Some(a) = ArpPacket::new_checked(&b[..]) {
            let _ = (a.operation(), a.sender_mac(), a.sender_ip(), a.target_mac(), a.target_ip());
        } else {
            prop_assert!(b.len() < arp::PACKET_LEN || b[..6] != [0, 1, 8, 0, 6, 4]);
        }
        match Vxlan::new_checked(&b[..]) {
            Ok(v) => {
                prop_assert!(v.vni() <= vxlan::MAX_VNI);
                prop_assert_eq!(v.inner().len(), b.len() - vxlan::HEADER_LEN);
                prop_assert!(v.inner().len() >= ethernet::HEADER_LEN);
            }
            Err(_) => prop_assert!(b.len() < 22 || b[0] != vxlan::FLAG_VNI),
        }
        prop_assert_eq!(VnetHdr::parse(&b).is_some(), b.len() >= 10);
    }

    #[test]
    fn checksum_and_rewrite_helpers_take_any_bytes(
        mut b in bytes(),
        start in 0usize..200,
        offset in 0usize..200,
        field in 0usize..200,
        partial in any::<bool>(),
        s in sock(),
        d in sock(),
        mtu in 0usize..200,
    ) {
        let _ = classify(&b);
        let _ = wire::l4_checksum(*s.ip(), *d.ip(), PROTO_UDP, &b, field / 2 * 2);
        let _ = wire::ports(&b);
        let _ = FlowKey::from_frame(&b);
        let _ = ipv4::fragment(&b, mtu, |h, p| assert!(h.len() + p.len() <= mtu));
        let mut c = b.clone();
        let _ = wire::fill_l4_checksum(*s.ip(), *d.ip(), PROTO_TCP, &mut c);
        let _ = wire::finish_checksum(&mut c, start, offset);
        // A rewrite that says no changes nothing.
        type Rewrite = fn(&mut [u8], bool, SocketAddrV4, SocketAddrV4) -> bool;
        let rewrites: [Rewrite; 3] = [
            |p, partial, s, d| nat::rewrite_v4(p, partial, s, d),
            |p, _, s, d| nat::rewrite_quoted_v4(p, s, d),
            |p, _, _, _| nat::decrement_ttl(p),
        ];
        for rewrite in rewrites {
            let before = b.clone();
            if !rewrite(&mut b, partial, s, d) {
                prop_assert_eq!(&b, &before);
            }
        }
    }

    // ---- emit, then parse ----

    #[test]
    fn ipv4_repr_round_trips(
        src in addr(), dst in addr(), protocol in any::<u8>(), ttl in any::<u8>(),
        ident in any::<u16>(), dont_frag in any::<bool>(), payload_len in 0usize..3000,
    ) {
        let r = Ipv4Repr { src, dst, protocol, ttl, ident, dont_frag, payload_len };
        let mut b = vec![0xa5u8; ipv4::HEADER_LEN + payload_len];
        r.emit(&mut b);
        let ip = Ipv4Packet::new_checked(&b[..]).unwrap();
        prop_assert!(ip.verify_checksum());
        prop_assert_eq!((ip.src(), ip.dst(), ip.protocol(), ip.ttl()), (src, dst, protocol, ttl));
        prop_assert_eq!((ip.ident(), ip.dont_frag()), (ident, dont_frag));
        prop_assert!(!ip.more_frags() && !ip.is_fragment() && ip.frag_offset() == 0);
        prop_assert_eq!((ip.header_len(), ip.total_len()), (20, 20 + payload_len));
        prop_assert_eq!(ip.payload().len(), payload_len);
        prop_assert_eq!(ip.tos(), 0);
    }

    #[test]
    fn tcp_repr_round_trips(
        src_port in any::<u16>(), dst_port in any::<u16>(), seq in any::<u32>(),
        ack in any::<u32>(), flags in any::<u8>(), window in any::<u16>(),
        payload in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let r = TcpRepr { src_port, dst_port, seq, ack, flags, window };
        let mut b = vec![0xffu8; tcp::HEADER_LEN + payload.len()];
        r.emit(&mut b);
        b[tcp::HEADER_LEN..].copy_from_slice(&payload);
        let t = TcpPacket::new_checked(&b[..]).unwrap();
        prop_assert_eq!(
            (t.src_port(), t.dst_port(), t.seq(), t.ack(), t.flags(), t.window()),
            (src_port, dst_port, seq, ack, flags, window)
        );
        prop_assert_eq!((t.header_len(), t.checksum()), (tcp::HEADER_LEN, 0));
        prop_assert!(t.options().is_empty());
        prop_assert_eq!(t.payload(), &payload[..]);
        let syn_fin = (flags & tcp::SYN != 0) as u32 + (flags & tcp::FIN != 0) as u32;
        prop_assert_eq!(t.seq_end(), seq.wrapping_add(payload.len() as u32).wrapping_add(syn_fin));
    }

    #[test]
    fn udp_emit_packet_round_trips_and_verifies(
        src in sock(), dst in sock(), ttl in any::<u8>(),
        payload in prop::collection::vec(any::<u8>(), 0..1600),
        short in 0usize..64,
    ) {
        let total = 28 + payload.len();
        let mut b = vec![0u8; total + 3];
        let n = udp::emit_packet(src, dst, ttl, &payload, &mut b).unwrap();
        prop_assert_eq!(n, total);
        let ip = Ipv4Packet::new_checked(&b[..n]).unwrap();
        prop_assert!(ip.verify_checksum());
        prop_assert_eq!((ip.src(), ip.dst(), ip.ttl(), ip.protocol()), (*src.ip(), *dst.ip(), ttl, PROTO_UDP));
        prop_assert!(!ip.dont_frag());
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        prop_assert_eq!((u.src_port(), u.dst_port(), u.len()), (src.port(), dst.port(), 8 + payload.len()));
        prop_assert_eq!(u.payload(), &payload[..]);
        prop_assert_ne!(u.checksum(), 0, "a computed zero is sent as all ones");
        prop_assert_eq!(classify(&b[..n]), Checksums::Valid);
        prop_assert_eq!(classify(&b), Checksums::Valid, "padding changes nothing");
        // Too short a buffer: nothing.
        prop_assert!(udp::emit_packet(src, dst, ttl, &payload, &mut b[..total.saturating_sub(short + 1)]).is_none());
    }

    #[test]
    fn udp_emit_packet_refuses_what_ipv4_cannot_carry(extra in 0usize..100) {
        let payload = vec![0u8; 65535 - 28 + 1 + extra];
        let mut b = vec![0u8; 70000];
        prop_assert!(udp::emit_packet("1.2.3.4:1".parse().unwrap(), "5.6.7.8:2".parse().unwrap(), 1, &payload, &mut b).is_none());
        let fits = vec![0u8; 65535 - 28];
        prop_assert_eq!(udp::emit_packet("1.2.3.4:1".parse().unwrap(), "5.6.7.8:2".parse().unwrap(), 1, &fits, &mut b), Some(65535));
    }

    #[test]
    fn tcp_packets_and_resets_verify(
        src in sock(), dst in sock(), flags in any::<u8>(), seq in any::<u32>(), ack in any::<u32>(),
        payload in prop::collection::vec(any::<u8>(), 0..1600),
    ) {
        let p = tcp_packet(src, dst, flags, &payload);
        prop_assert_eq!(classify(&p), Checksums::Valid);
        let mut b = [0u8; 64];
        let n = tcp::emit_rst(src, dst, seq, ack, &mut b).unwrap();
        prop_assert_eq!(classify(&b[..n]), Checksums::Valid);
        let t = TcpPacket::new_checked(Ipv4Packet::new_checked(&b[..n]).unwrap().into_payload()).unwrap();
        prop_assert_eq!((t.seq(), t.ack(), t.flags()), (seq, ack, tcp::RST | tcp::ACK));
        prop_assert!(tcp::emit_rst(src, dst, seq, ack, &mut b[..39]).is_none());
    }

    #[test]
    fn icmp_repr_round_trips_and_verifies(
        kind in any::<u8>(), code in any::<u8>(), rest in any::<[u8; 4]>(),
        data in prop::collection::vec(any::<u8>(), 0..200),
        src in addr(), dst in addr(), ttl in any::<u8>(),
    ) {
        let r = IcmpRepr { kind, code, rest, data: &data };
        let mut b = vec![0u8; r.packet_len() + 5];
        let n = r.emit_ttl(src, dst, ttl, &mut b).unwrap();
        prop_assert_eq!(n, 28 + data.len());
        let ip = Ipv4Packet::new_checked(&b[..n]).unwrap();
        prop_assert!(ip.verify_checksum());
        prop_assert_eq!((ip.src(), ip.dst(), ip.ttl(), ip.protocol()), (src, dst, ttl, PROTO_ICMP));
        let i = IcmpPacket::new_checked(ip.payload()).unwrap();
        prop_assert!(i.verify_checksum());
        prop_assert_eq!((i.kind(), i.code(), i.rest()), (kind, code, rest));
        prop_assert_eq!(i.data(), &data[..]);
        prop_assert_eq!(i.ident(), u16::from_be_bytes([rest[0], rest[1]]));
        prop_assert_eq!(i.seq(), u16::from_be_bytes([rest[2], rest[3]]));
        // The message alone is the same bytes.
        let mut m = vec![0u8; r.message_len()];
        r.emit_message(&mut m);
        prop_assert_eq!(&m[..], ip.payload());
        prop_assert!(r.emit(src, dst, &mut b[..n - 1]).is_none());
    }

    #[test]
    fn arp_ethernet_vxlan_virtio_round_trip(
        operation in any::<u16>(), sender_mac in mac(), sender_ip in addr(),
        target_mac in mac(), target_ip in addr(), dst in mac(), src in mac(),
        ethertype in any::<u16>(), vni in any::<u32>(),
        inner in prop::collection::vec(any::<u8>(), 14..100),
        vnet in any::<(u8, u8, u16, u16, u16, u16)>(),
    ) {
        let a = ArpRepr { operation, sender_mac, sender_ip, target_mac, target_ip };
        let mut b = [0u8; arp::PACKET_LEN];
        a.emit(&mut b);
        let v = ArpPacket::new_checked(&b[..]).unwrap();
        prop_assert_eq!(
            ArpRepr { operation: v.operation(), sender_mac: v.sender_mac(), sender_ip: v.sender_ip(), target_mac: v.target_mac(), target_ip: v.target_ip() },
            a
        );

        let e = EthernetRepr { dst, src, ethertype };
        let mut f = vec![0u8; 14 + inner.len()];
        e.emit(&mut f);
        f[14..].copy_from_slice(&inner);
        let v = EthernetFrame::new_checked(&f[..]).unwrap();
        prop_assert_eq!(EthernetRepr { dst: v.dst(), src: v.src(), ethertype: v.ethertype() }, e);
        prop_assert_eq!(v.payload(), &inner[..]);

        let mut d = vec![0xeeu8; vxlan::HEADER_LEN + inner.len()];
        d[vxlan::HEADER_LEN..].copy_from_slice(&inner);
        vxlan::emit(&mut d, vni);
        let v = Vxlan::new_checked(&d[..]).unwrap();
        prop_assert_eq!(v.vni(), vni & vxlan::MAX_VNI);
        prop_assert_eq!(v.inner(), &inner[..]);
        prop_assert_eq!(&d[..8], &[vxlan::FLAG_VNI, 0, 0, 0, d[4], d[5], d[6], 0][..], "reserved bits zero");

        let h = VnetHdr { flags: vnet.0, gso_type: vnet.1, hdr_len: vnet.2, gso_size: vnet.3, csum_start: vnet.4, csum_offset: vnet.5 };
        let mut hb = [0u8; 10];
        h.emit(&mut hb);
        prop_assert_eq!(VnetHdr::parse(&hb), Some(h));
    }

    // ---- checksums ----

    #[test]
    fn a_partial_checksum_is_told_and_finishes_valid(
        tcp in any::<bool>(), src in sock(), dst in sock(),
        payload in prop::collection::vec(any::<u8>(), 0..1500),
    ) {
        let mut p = l4_packet(tcp, src, dst, &payload);
        make_partial(&mut p);
        let sums = classify(&p);
        let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
        // (Valid too, for the one payload in 65536 whose sum happens to check.)
        prop_assert!(
            sums == Checksums::Partial { l4: 20, csum_offset: csum_at(proto), len: p.len() }
                || sums == Checksums::Valid,
            "{:?}", sums
        );
        prop_assert!(wire::finish_checksum(&mut p, 20, csum_at(proto)).is_some());
        prop_assert_eq!(classify(&p), Checksums::Valid);
    }

    #[test]
    fn incremental_updates_agree_with_recomputation(
        words in prop::collection::vec(any::<u16>(), 2..100),
        at in any::<prop::sample::Index>(),
        new in any::<u32>(),
    ) {
        let mut data: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        let w = at.index(words.len() - 1) * 2;
        let before = checksum::checksum(&data);
        let old = u32::from_be_bytes(data[w..w + 4].try_into().unwrap());
        data[w..w + 4].copy_from_slice(&new.to_be_bytes());
        let c = checksum::update32(before, old, new);
        prop_assert!(same(c, checksum::checksum(&data)), "{:04x} {:04x}", c, checksum::checksum(&data));
        let old16 = u16::from_be_bytes([data[w], data[w + 1]]);
        let c0 = checksum::checksum(&data);
        data[w..w + 2].copy_from_slice(&(new as u16).to_be_bytes());
        let c = checksum::update16(c0, old16, new as u16);
        prop_assert!(same(c, checksum::checksum(&data)));
    }

    #[test]
    fn an_echo_identifier_rewrite_keeps_the_checksum_valid(
        reply in any::<bool>(),
        ident in prop_oneof![Just(0u16), any::<u16>()],
        new_ident in prop_oneof![Just(0u16), any::<u16>()],
        seq in prop_oneof![Just(0u16), any::<u16>()],
        data in prop_oneof![
            (0usize..16).prop_map(|n| vec![0u8; n]),
            prop::collection::vec(any::<u8>(), 0..16),
        ],
    ) {
        let mut rest = [0u8; 4];
        rest[..2].copy_from_slice(&ident.to_be_bytes());
        rest[2..].copy_from_slice(&seq.to_be_bytes());
        let kind = if reply { icmpv4::ECHO_REPLY } else { icmpv4::ECHO_REQUEST };
        let r = IcmpRepr { kind, code: 0, rest, data: &data };
        let mut m = vec![0u8; r.message_len()];
        r.emit_message(&mut m);
        prop_assert!(IcmpPacket::new_checked(&m[..]).unwrap().verify_checksum());
        icmpv4::set_echo_ident(&mut m, new_ident);
        let v = IcmpPacket::new_checked(&m[..]).unwrap();
        prop_assert_eq!((v.ident(), v.seq()), (new_ident, seq));
        prop_assert!(v.verify_checksum(), "{:02x?}", m);
    }

    // ---- NAT rewrites ----

    #[test]
    fn a_rewrite_keeps_ip_and_l4_checksums_valid(
        tcp in any::<bool>(), src in sock(), dst in sock(), new_src in sock(), new_dst in sock(),
        payload in prop::collection::vec(any::<u8>(), 0..600),
        zero_udp in any::<bool>(), edge in any::<bool>(),
    ) {
        let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
        let l4_len = payload.len() + if tcp { 20 } else { 8 };
        // Sometimes a destination whose pseudo-header sum is one's complement zero.
        let new_dst = if edge {
            SocketAddrV4::new(zero_sum_dst(*new_src.ip(), proto, l4_len, new_dst.ip().octets()[0] as u16), new_dst.port())
        } else {
            new_dst
        };
        let mut p = l4_packet(tcp, src, dst, &payload);
        if !tcp && zero_udp {
            p[26..28].fill(0);
        }
        prop_assert!(nat::can_rewrite_v4(&p));
        prop_assert!(nat::rewrite_v4(&mut p, false, new_src, new_dst));
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        prop_assert!(ip.verify_checksum());
        prop_assert_eq!(FlowKey::from_ipv4(&ip), Some(FlowKey::v4(proto, new_src, new_dst)));
        prop_assert_eq!(classify(&p), Checksums::Valid);
        if !tcp {
            let field = u16::from_be_bytes([p[26], p[27]]);
            prop_assert_eq!(field == 0, zero_udp, "zero (none sent) stays zero, and only it");
        }
        let l4 = &p[20..];
        prop_assert_eq!(&l4[if tcp { 20 } else { 8 }..], &payload[..], "payload untouched");
    }

    #[test]
    fn a_partial_checksum_stays_the_pseudo_header_sum(
        tcp in any::<bool>(), src in sock(), dst in sock(), new_src in sock(), new_dst in sock(),
        payload in prop::collection::vec(any::<u8>(), 0..300), edge in any::<bool>(),
    ) {
        let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
        let l4_len = payload.len() + if tcp { 20 } else { 8 };
        let new_dst = if edge {
            SocketAddrV4::new(zero_sum_dst(*new_src.ip(), proto, l4_len, new_dst.ip().octets()[1] as u16), new_dst.port())
        } else {
            new_dst
        };
        let mut p = l4_packet(tcp, src, dst, &payload);
        make_partial(&mut p);
        prop_assert!(nat::rewrite_v4(&mut p, true, new_src, new_dst));
        prop_assert!(Ipv4Packet::new_checked(&p[..]).unwrap().verify_checksum());
        let at = 20 + csum_at(proto);
        let field = u16::from_be_bytes([p[at], p[at + 1]]);
        prop_assert_eq!(field, pseudo_sum(*new_src.ip(), *new_dst.ip(), proto, l4_len));
        // Finished, it verifies under the new addresses and ports.
        prop_assert!(wire::finish_checksum(&mut p, 20, csum_at(proto)).is_some());
        prop_assert_eq!(classify(&p), Checksums::Valid);
    }

    #[test]
    fn a_quoted_rewrite_restores_the_packet_as_sent(
        tcp in any::<bool>(), src in sock(), vip in sock(), backend in sock(),
        payload in prop::collection::vec(any::<u8>(), 0..100), edge in any::<bool>(),
        extra in 0usize..8,
    ) {
        let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
        let l4_len = payload.len() + if tcp { 20 } else { 8 };
        let backend = if edge {
            SocketAddrV4::new(zero_sum_dst(*src.ip(), proto, l4_len, backend.ip().octets()[2] as u16), backend.port())
        } else {
            backend
        };
        let sent = l4_packet(tcp, src, vip, &payload);
        let mut p = sent.clone();
        prop_assert!(nat::rewrite_v4(&mut p, false, src, backend));
        // An error quotes the header and 8 bytes (RFC 792), here maybe a little more
        // of a UDP datagram (never past a TCP checksum, which is not translated back).
        let n = (28 + if tcp { 0 } else { extra }).min(p.len());
        let mut quote = p[..n].to_vec();
        prop_assert!(nat::rewrite_quoted_v4(&mut quote, src, vip));
        prop_assert_eq!(&quote[..], &sent[..n]);
        prop_assert!(Ipv4Packet::new_quoted(&quote[..]).unwrap().verify_checksum());
    }

    // ---- fragments ----

    #[test]
    fn fragments_reassemble_to_the_payload(
        payload in prop::collection::vec(any::<u8>(), 0..4000),
        mtu in 28usize..1600,
        second_mtu in 28usize..1600,
        ident in any::<u16>(),
        options in prop::sample::select(vec![0usize, 1, 2]),
    ) {
        // A header without options, with a copied option (loose source route) and
        // with one that is not copied (record route), each padded to 4 bytes.
        let opts: &[u8] = match options {
            0 => &[],
            1 => &[0x83, 7, 4, 1, 2, 3, 4, 0],
            _ => &[0x07, 7, 4, 5, 6, 7, 8, 0],
        };
        let ihl = 20 + opts.len();
        let mut p = vec![0u8; ihl + payload.len()];
        Ipv4Repr {
            src: Ipv4Addr::new(10, 0, 0, 1), dst: Ipv4Addr::new(10, 0, 1, 2), protocol: PROTO_UDP,
            ttl: 64, ident, dont_frag: false, payload_len: payload.len(),
        }
        .emit(&mut p);
        p[0] = 0x40 | (ihl / 4) as u8;
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[20..ihl].copy_from_slice(opts);
        Ipv4Packet::new_checked(&mut p[..]).unwrap().fill_checksum();
        p[ihl..].copy_from_slice(&payload);

        let cut = |packet: &[u8], mtu: usize| -> Option<Vec<Vec<u8>>> {
            let mut out = Vec::new();
            let n = ipv4::fragment(packet, mtu, |h, pl| out.push([h, pl].concat()));
            match n {
                Some(n) => { assert_eq!(n, out.len()); Some(out) }
                None => { assert!(out.is_empty(), "nothing emitted on refusal"); None }
            }
        };
        let Some(frags) = cut(&p, mtu) else {
            prop_assert!(mtu < ihl + 8, "refused with room for 8 bytes");
            return Ok(());
        };
        // Cut again (a second, narrower hop), in the same order.
        let mut all = Vec::new();
        for f in &frags {
            prop_assert!(f.len() <= mtu);
            match cut(f, second_mtu) {
                Some(more) => all.extend(more),
                None => { prop_assert!(second_mtu < Ipv4Packet::new_checked(&f[..]).unwrap().header_len() + 8); all.push(f.clone()); }
            }
        }
        for set in [&frags, &all] {
            let mut joined = vec![None; payload.len()];
            let mut end_seen = false;
            for (i, f) in set.iter().enumerate() {
                let v = Ipv4Packet::new_checked(&f[..]).unwrap();
                prop_assert!(v.verify_checksum());
                prop_assert_eq!((v.ident(), v.src(), v.protocol()), (ident, Ipv4Addr::new(10, 0, 0, 1), PROTO_UDP));
                prop_assert!(!v.dont_frag());
                let last = i + 1 == set.len();
                prop_assert_eq!(v.more_frags(), !last);
                if !last {
                    prop_assert_eq!(v.payload().len() % 8, 0);
                }
                // The first keeps every option; later ones only the copied ones.
                let want_ihl = if v.frag_offset() == 0 { ihl } else if options == 1 { 28 } else { 20 };
                prop_assert_eq!(v.header_len(), want_ihl);
                for (k, &byte) in v.payload().iter().enumerate() {
                    let slot = &mut joined[v.frag_offset() + k];
                    prop_assert!(slot.is_none(), "overlap");
                    *slot = Some(byte);
                }
                end_seen |= !v.more_frags();
            }
            prop_assert!(end_seen);
            let joined: Option<Vec<u8>> = joined.into_iter().collect();
            prop_assert_eq!(joined.as_deref(), Some(&payload[..]));
        }
    }

    // ---- flow keys ----

    #[test]
    fn a_flow_key_is_read_back_from_its_packet(
        tcp in any::<bool>(), src in sock(), dst in sock(),
        payload in prop::collection::vec(any::<u8>(), 0..64),
        dst_mac in mac(), src_mac in mac(), frag in 1u16..100,
    ) {
        let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
        let p = l4_packet(tcp, src, dst, &payload);
        let mut f = vec![0u8; 14 + p.len()];
        EthernetRepr { dst: dst_mac, src: src_mac, ethertype: ethernet::ETHERTYPE_IPV4 }.emit(&mut f);
        f[14..].copy_from_slice(&p);
        let key = FlowKey::v4(proto, src, dst);
        prop_assert_eq!(FlowKey::from_frame(&f), Some(key));
        prop_assert_eq!(FlowKey::from_ipv4(&Ipv4Packet::new_checked(&p[..]).unwrap()), Some(key));
        prop_assert_eq!(key.reversed().reversed(), key);
        prop_assert_eq!(key.reversed(), FlowKey::v4(proto, dst, src));
        prop_assert_eq!(key.as_v4(), Some((src, dst)));
        // A later fragment has no ports; another protocol no flow.
        let mut later = p.clone();
        Ipv4Packet::new_checked(&mut later[..]).unwrap().set_fragment(frag as usize * 8, false);
        prop_assert_eq!(FlowKey::from_ipv4(&Ipv4Packet::new_checked(&later[..]).unwrap()), None);
        let mut icmp = p.clone();
        icmp[9] = PROTO_ICMP;
        prop_assert_eq!(FlowKey::from_ipv4(&Ipv4Packet::new_checked(&icmp[..]).unwrap()), None);
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&ethernet::ETHERTYPE_ARP.to_be_bytes());
        prop_assert_eq!(FlowKey::from_frame(&arp), None);
    }
}
