//! The rewrites NAT and routing make in place, with the checksums updated
//! incrementally (RFC 1624) instead of recomputed: a TTL, addresses and ports, over
//! IPv4 and IPv6.

use std::net::{SocketAddrV4, SocketAddrV6};

use super::ipv4::Ipv4Packet;
use super::ipv6::Ipv6Packet;
use super::{PROTO_TCP, PROTO_UDP};
use crate::checksum;

/// Where a TCP (16) or UDP (6) header keeps its checksum.
fn csum_offset(proto: u8) -> Option<usize> {
    match proto {
        PROTO_TCP => Some(16),
        PROTO_UDP => Some(6),
        _ => None,
    }
}

/// Whether [`rewrite_v4`] can rewrite `packet`: a valid IPv4 packet, TCP or UDP, whole
/// or a first fragment long enough to hold the ports and the checksum.
pub fn can_rewrite_v4(packet: &[u8]) -> bool {
    let Ok(ip) = Ipv4Packet::new_checked(packet) else {
        return false;
    };
    let Some(at) = csum_offset(ip.protocol()) else {
        return false;
    };
    ip.frag_offset() == 0 && ip.payload().len() >= at + 2
}

/// Rewrites an IPv4 TCP or UDP packet (`packet`: IP header first, whole or a first
/// fragment) to come from `new_src` and go to `new_dst`, updating the IP header
/// checksum and the L4 checksum incrementally. A checksum the sender left to offload
/// (`partial`: NEEDS_CSUM, the field holds the pseudo-header sum, not inverted) only
/// follows the addresses; the ports are summed later by whoever finishes it. A UDP
/// checksum of zero ("none sent") stays zero. False (nothing changed) for anything
/// else.
pub fn rewrite_v4(
    packet: &mut [u8],
    partial: bool,
    new_src: SocketAddrV4,
    new_dst: SocketAddrV4,
) -> bool {
    // Nothing changes unless all of it can: a first fragment too short for the
    // ports and checksum keeps its addresses too.
    if !can_rewrite_v4(packet) {
        return false;
    }
    let mut ip = Ipv4Packet::new_unchecked(&mut *packet);
    let (proto, ihl) = (ip.protocol(), ip.header_len());
    let (os, od) = (u32::from(ip.src()), u32::from(ip.dst()));
    let (ns, nd) = (u32::from(*new_src.ip()), u32::from(*new_dst.ip()));
    let c = checksum::update32(checksum::update32(ip.checksum(), os, ns), od, nd);
    ip.set_checksum(c);
    ip.set_src(*new_src.ip());
    ip.set_dst(*new_dst.ip());
    let addrs = |c| checksum::update32(checksum::update32(c, os, ns), od, nd);
    let ports = (new_src.port(), new_dst.port());
    rewrite_l4(&mut packet[ihl..], proto, partial, true, addrs, ports);
    true
}

/// Writes `ports` (source, destination) into a TCP or UDP header `l4` (`proto`) and
/// mends its checksum incrementally (RFC 1624): `addrs` folds the address change
/// into a checksum. A checksum the sender left to offload (`partial`: the field holds
/// the pseudo-header sum, not inverted) only follows the addresses; a UDP checksum of
/// zero ("none sent", IPv4 only: `zero_is_none`) stays zero, and a computed zero is
/// sent as all ones (RFC 768).
fn rewrite_l4(
    l4: &mut [u8],
    proto: u8,
    partial: bool,
    zero_is_none: bool,
    addrs: impl Fn(u16) -> u16,
    ports: (u16, u16),
) {
    let at = csum_offset(proto).expect("TCP or UDP, checked");
    let (osp, odp) = super::ports(l4).expect("checked");
    let old = u16::from_be_bytes([l4[at], l4[at + 1]]);
    let new = if partial {
        !addrs(!old)
    } else if zero_is_none && proto == PROTO_UDP && old == 0 {
        0
    } else {
        let c = checksum::update16(checksum::update16(addrs(old), osp, ports.0), odp, ports.1);
        if proto == PROTO_UDP && c == 0 {
            0xffff
        } else {
            c
        }
    };
    l4[at..at + 2].copy_from_slice(&new.to_be_bytes());
    l4[0..2].copy_from_slice(&ports.0.to_be_bytes());
    l4[2..4].copy_from_slice(&ports.1.to_be_bytes());
}

/// Rewrites the head of a packet quoted in an ICMP error (`quote`: its IP header and
/// the first 8 bytes or more of TCP or UDP) to come from `src` and go to `dst`, the
/// way conntrack translates an error about a translated packet back
/// (`nf_nat_icmp_reply_translation`): the sender then learns about the addresses it
/// used. The quoted IP header's checksum is recomputed, and a quoted UDP checksum
/// updated (zero stays zero). False, and nothing changed, if `quote` is not the head of
/// an IPv4 TCP or UDP packet with its ports.
pub fn rewrite_quoted_v4(quote: &mut [u8], src: SocketAddrV4, dst: SocketAddrV4) -> bool {
    let Ok(mut ip) = Ipv4Packet::new_quoted(&mut *quote) else {
        return false;
    };
    let proto = ip.protocol();
    if csum_offset(proto).is_none() || ip.frag_offset() != 0 || ip.payload().len() < 4 {
        return false;
    }
    let (os, od) = (u32::from(ip.src()), u32::from(ip.dst()));
    ip.set_src(*src.ip());
    ip.set_dst(*dst.ip());
    ip.fill_checksum();
    let ihl = ip.header_len();
    let l4 = &mut quote[ihl..];
    let (osp, odp) = (
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
    );
    l4[0..2].copy_from_slice(&src.port().to_be_bytes());
    l4[2..4].copy_from_slice(&dst.port().to_be_bytes());
    if proto == PROTO_UDP && l4.len() >= 8 {
        let old = u16::from_be_bytes([l4[6], l4[7]]);
        if old != 0 {
            let (ns, nd) = (u32::from(*src.ip()), u32::from(*dst.ip()));
            let c = checksum::update32(checksum::update32(old, os, ns), od, nd);
            let c = checksum::update16(checksum::update16(c, osp, src.port()), odp, dst.port());
            l4[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
        }
    }
    true
}

/// What [`rewrite_v6`] can do with an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite6 {
    /// TCP or UDP right after the fixed header, long enough for the ports and the
    /// checksum: it can be rewritten.
    Yes,
    /// UDP with a checksum of zero, which IPv6 forbids (RFC 8200 section 8.1: a
    /// receiver discards it): it is to be dropped, not translated.
    UdpZeroChecksum,
    /// Anything else: not TCP or UDP, behind extension headers, or cut short.
    No,
}

/// Whether [`rewrite_v6`] can rewrite `packet` (an IPv6 packet, fixed header first):
/// only TCP or UDP directly after the fixed header is translated (what a translator
/// must read through extension headers for is left alone). `partial`: the checksum was
/// left to offload (NEEDS_CSUM), so a zero there is no "no checksum".
pub fn can_rewrite_v6(packet: &[u8], partial: bool) -> Rewrite6 {
    let Some(ip) = Ipv6Packet::new_checked(packet) else {
        return Rewrite6::No;
    };
    let proto = ip.next_header();
    let Some(at) = csum_offset(proto) else {
        return Rewrite6::No;
    };
    let l4 = ip.payload();
    if l4.len() < at + 2 {
        return Rewrite6::No;
    }
    if proto == PROTO_UDP && !partial && l4[at..at + 2] == [0, 0] {
        return Rewrite6::UdpZeroChecksum;
    }
    Rewrite6::Yes
}

/// Rewrites an IPv6 TCP or UDP packet (`packet`: the fixed header, then the segment)
/// to come from `new_src` and go to `new_dst`. IPv6 has no header checksum, but the
/// TCP and UDP checksums cover both addresses through the pseudo-header (RFC 8200
/// section 8.1), so they are updated incrementally (RFC 1624) for the addresses and
/// ports. A checksum the sender left to offload (`partial`: NEEDS_CSUM, the field
/// holds the pseudo-header sum, not inverted) only follows the addresses. False, and
/// nothing changed, unless [`can_rewrite_v6`] says [`Rewrite6::Yes`] (a UDP checksum of
/// zero is never rewritten into something that looks valid).
pub fn rewrite_v6(
    packet: &mut [u8],
    partial: bool,
    new_src: SocketAddrV6,
    new_dst: SocketAddrV6,
) -> bool {
    if can_rewrite_v6(packet, partial) != Rewrite6::Yes {
        return false;
    }
    let mut ip = Ipv6Packet::new_checked(&mut *packet).expect("checked");
    let proto = ip.next_header();
    let (os, od) = (u128::from(ip.src()), u128::from(ip.dst()));
    let (ns, nd) = (u128::from(*new_src.ip()), u128::from(*new_dst.ip()));
    ip.set_src(*new_src.ip());
    ip.set_dst(*new_dst.ip());
    // UDP over IPv6 never carries zero (RFC 8200 section 8.1): all ones instead.
    let addrs = |c| checksum::update128(checksum::update128(c, os, ns), od, nd);
    let ports = (new_src.port(), new_dst.port());
    rewrite_l4(ip.payload_mut(), proto, partial, false, addrs, ports);
    true
}

/// Rewrites the head of an IPv6 packet quoted in an ICMPv6 error (`quote`: its fixed
/// header and at least the ports of TCP or UDP right after it) to come from `src` and
/// go to `dst`, as [`rewrite_quoted_v4`] does for IPv4: the sender learns about the
/// addresses it used. A quoted TCP or UDP checksum inside the quote is updated
/// (RFC 1624). False, and nothing changed, for anything else.
pub fn rewrite_quoted_v6(quote: &mut [u8], src: SocketAddrV6, dst: SocketAddrV6) -> bool {
    let Some(mut ip) = Ipv6Packet::new_quoted(&mut *quote) else {
        return false;
    };
    let proto = ip.next_header();
    let Some(at) = csum_offset(proto) else {
        return false;
    };
    if ip.payload().len() < 4 {
        return false;
    }
    let (os, od) = (u128::from(ip.src()), u128::from(ip.dst()));
    ip.set_src(*src.ip());
    ip.set_dst(*dst.ip());
    let l4 = ip.payload_mut();
    let (osp, odp) = super::ports(l4).expect("checked");
    l4[0..2].copy_from_slice(&src.port().to_be_bytes());
    l4[2..4].copy_from_slice(&dst.port().to_be_bytes());
    if let Some(field) = l4.get_mut(at..at + 2) {
        let old = u16::from_be_bytes([field[0], field[1]]);
        if old != 0 {
            let (ns, nd) = (u128::from(*src.ip()), u128::from(*dst.ip()));
            let c = checksum::update128(checksum::update128(old, os, ns), od, nd);
            let c = checksum::update16(checksum::update16(c, osp, src.port()), odp, dst.port());
            let c = if proto == PROTO_UDP && c == 0 {
                0xffff
            } else {
                c
            };
            field.copy_from_slice(&c.to_be_bytes());
        }
    }
    true
}

/// Decrements an IPv4 packet's TTL by one, updating its header checksum
/// incrementally; false (nothing changed) if it is 0 or the packet not IPv4.
pub fn decrement_ttl(packet: &mut [u8]) -> bool {
    match Ipv4Packet::new_checked(packet) {
        Ok(mut ip) if ip.ttl() > 0 => {
            let ttl = ip.ttl();
            ip.set_ttl(ttl - 1);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{l4_checksum, pseudo_sum, udp};

    #[test]
    fn a_rewrite_keeps_every_checksum_right() {
        let mut buf = [0u8; 64];
        let n = udp::emit_packet(
            "10.0.0.1:5000".parse().unwrap(),
            "10.0.0.100:53".parse().unwrap(),
            64,
            b"hello",
            &mut buf,
        )
        .unwrap();
        let p = &mut buf[..n];
        let (s, d): (SocketAddrV4, SocketAddrV4) = (
            "10.0.0.1:5000".parse().unwrap(),
            "10.0.1.7:5353".parse().unwrap(),
        );
        // A (first-fragment) packet too short for the UDP checksum is left alone.
        let mut short = [0u8; 26];
        short.copy_from_slice(&p[..26]);
        Ipv4Packet::new_unchecked(&mut short[..]).set_total_len(26);
        let before = short;
        assert!(!rewrite_v4(&mut short, false, s, d));
        assert_eq!(short, before);
        assert!(rewrite_v4(p, false, s, d));
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.dst(), *d.ip());
        let l4 = ip.payload();
        let c = l4_checksum(*s.ip(), *d.ip(), 17, l4, 6);
        assert_eq!(u16::from_be_bytes([l4[6], l4[7]]), c);
        assert!(decrement_ttl(p));
        assert_eq!(Ipv4Packet::new_checked(&p[..]).unwrap().ttl(), 63);
        assert!(Ipv4Packet::new_checked(&p[..]).unwrap().verify_checksum());
    }

    #[test]
    fn a_quote_is_translated_back() {
        let mut buf = [0u8; 64];
        let (s, vip): (SocketAddrV4, SocketAddrV4) = (
            "10.0.0.2:5000".parse().unwrap(),
            "10.0.0.100:9000".parse().unwrap(),
        );
        let n = udp::emit_packet(s, vip, 64, b"hello", &mut buf).unwrap();
        let sent = buf;
        let backend: SocketAddrV4 = "10.0.1.2:9000".parse().unwrap();
        assert!(rewrite_v4(&mut buf[..n], false, s, backend));
        // The error quotes 28 bytes of the rewritten packet; back, they are as sent.
        let mut quote = [0u8; 28];
        quote.copy_from_slice(&buf[..28]);
        assert!(rewrite_quoted_v4(&mut quote, s, vip));
        assert_eq!(quote[..], sent[..28]);
        assert!(!rewrite_quoted_v4(&mut quote[..22], s, vip), "no ports");
    }

    #[test]
    fn a_partial_checksum_follows_the_addresses_only() {
        let mut buf = [0u8; 64];
        let (s, d): (SocketAddrV4, SocketAddrV4) = (
            "10.0.0.1:5000".parse().unwrap(),
            "10.0.0.100:53".parse().unwrap(),
        );
        let n = udp::emit_packet(s, d, 64, b"hello", &mut buf).unwrap();
        let ps = pseudo_sum(*s.ip(), *d.ip(), 17, 13);
        buf[26..28].copy_from_slice(&ps.to_be_bytes());
        let d2: SocketAddrV4 = "10.0.1.7:5353".parse().unwrap();
        assert!(rewrite_v4(&mut buf[..n], true, s, d2));
        assert_eq!(
            u16::from_be_bytes([buf[26], buf[27]]),
            pseudo_sum(*s.ip(), *d2.ip(), 17, 13)
        );
    }

    /// An IPv6 TCP or UDP packet from `s` to `d` with `payload`, checksum filled.
    fn packet6(
        proto: u8,
        s: SocketAddrV6,
        d: SocketAddrV6,
        payload: &[u8],
        buf: &mut [u8],
    ) -> usize {
        use crate::wire::icmpv6::{fill_l4_checksum6, Ipv6Repr};
        let hl = if proto == PROTO_TCP { 20 } else { 8 };
        let len = hl + payload.len();
        Ipv6Repr {
            src: *s.ip(),
            dst: *d.ip(),
            next_header: proto,
            hop_limit: 64,
            payload_len: len,
        }
        .emit(buf);
        let l4 = &mut buf[40..40 + len];
        l4[0..2].copy_from_slice(&s.port().to_be_bytes());
        l4[2..4].copy_from_slice(&d.port().to_be_bytes());
        if proto == PROTO_TCP {
            l4[12] = 5 << 4;
            l4[13] = 0x18;
        } else {
            l4[4..6].copy_from_slice(&(len as u16).to_be_bytes());
        }
        l4[hl..].copy_from_slice(payload);
        assert!(fill_l4_checksum6(*s.ip(), *d.ip(), proto, l4));
        40 + len
    }

    /// Whether the L4 checksum of an IPv6 packet verifies (the one's-complement sum
    /// over pseudo-header and segment is all ones).
    fn verifies6(p: &[u8]) -> bool {
        let ip = Ipv6Packet::new_checked(p).unwrap();
        let l4 = ip.payload();
        let mut pseudo = [0u8; 40];
        pseudo[..16].copy_from_slice(&ip.src().octets());
        pseudo[16..32].copy_from_slice(&ip.dst().octets());
        pseudo[32..36].copy_from_slice(&(l4.len() as u32).to_be_bytes());
        pseudo[39] = ip.next_header();
        checksum::sum_with(l4, checksum::sum(&pseudo)) == 0xffff
    }

    #[test]
    fn an_ipv6_rewrite_keeps_the_l4_checksum_right() {
        let c: SocketAddrV6 = "[fd00:16:1::2]:40000".parse().unwrap();
        let vip: SocketAddrV6 = "[fd00:16:1::100]:80".parse().unwrap();
        let backend: SocketAddrV6 = "[fd00:16:2::3]:8080".parse().unwrap();
        for proto in [PROTO_TCP, PROTO_UDP] {
            let mut buf = [0u8; 128];
            let n = packet6(proto, c, vip, b"hello, odd", &mut buf);
            assert!(verifies6(&buf[..n]));
            assert_eq!(can_rewrite_v6(&buf[..n], false), Rewrite6::Yes);
            assert!(rewrite_v6(&mut buf[..n], false, c, backend));
            let ip = Ipv6Packet::new_checked(&buf[..n]).unwrap();
            assert_eq!((ip.src(), ip.dst()), (*c.ip(), *backend.ip()));
            assert_eq!(super::super::ports(ip.payload()), Some((40000, 8080)));
            assert!(verifies6(&buf[..n]), "proto {proto}");
            // And back, as a reply is rewritten.
            assert!(rewrite_v6(&mut buf[..n], false, vip, c));
            assert!(verifies6(&buf[..n]));
        }
    }

    #[test]
    fn an_ipv6_udp_checksum_of_zero_is_refused() {
        let c: SocketAddrV6 = "[fd00:16:1::2]:5000".parse().unwrap();
        let vip: SocketAddrV6 = "[fd00:16:1::100]:53".parse().unwrap();
        let mut buf = [0u8; 64];
        let n = packet6(PROTO_UDP, c, vip, b"x", &mut buf);
        buf[46..48].fill(0);
        let before = buf;
        assert_eq!(can_rewrite_v6(&buf[..n], false), Rewrite6::UdpZeroChecksum);
        assert!(!rewrite_v6(&mut buf[..n], false, c, c));
        assert_eq!(buf, before);
        // Behind an extension header, or cut short: not rewritten.
        let mut hop = before;
        hop[6] = 0;
        assert_eq!(can_rewrite_v6(&hop[..n], false), Rewrite6::No);
        assert_eq!(can_rewrite_v6(&before[..44], false), Rewrite6::No);
    }

    #[test]
    fn an_ipv6_partial_checksum_follows_the_addresses_only() {
        let c: SocketAddrV6 = "[fd00:16:1::2]:40000".parse().unwrap();
        let vip: SocketAddrV6 = "[fd00:16:1::100]:80".parse().unwrap();
        let backend: SocketAddrV6 = "[fd00:16:2::3]:8080".parse().unwrap();
        let pseudo = |s: &SocketAddrV6, d: &SocketAddrV6, len: u32| {
            let mut p = [0u8; 40];
            p[..16].copy_from_slice(&s.ip().octets());
            p[16..32].copy_from_slice(&d.ip().octets());
            p[32..36].copy_from_slice(&len.to_be_bytes());
            p[39] = PROTO_TCP;
            checksum::sum(&p)
        };
        let mut buf = [0u8; 128];
        let n = packet6(PROTO_TCP, c, vip, b"data", &mut buf);
        buf[56..58].copy_from_slice(&pseudo(&c, &vip, 24).to_be_bytes());
        assert!(rewrite_v6(&mut buf[..n], true, c, backend));
        assert_eq!(
            u16::from_be_bytes([buf[56], buf[57]]),
            pseudo(&c, &backend, 24)
        );
        // Finished as the kernel or a NIC would, it verifies.
        crate::wire::finish_checksum(&mut buf[..n], 40, 16).unwrap();
        let mut whole = [0u8; 128];
        let m = packet6(PROTO_TCP, c, backend, b"data", &mut whole);
        assert_eq!(buf[..n], whole[..m]);
    }

    #[test]
    fn an_ipv6_quote_is_translated_back() {
        let c: SocketAddrV6 = "[fd00:16:1::2]:5000".parse().unwrap();
        let vip: SocketAddrV6 = "[fd00:16:1::100]:9000".parse().unwrap();
        let backend: SocketAddrV6 = "[fd00:16:2::3]:9000".parse().unwrap();
        let mut buf = [0u8; 128];
        let n = packet6(PROTO_UDP, c, vip, b"hello there, router", &mut buf);
        let sent = buf;
        assert!(rewrite_v6(&mut buf[..n], false, c, backend));
        // An error quotes 56 bytes of the rewritten packet; back, they are as sent.
        let mut quote = [0u8; 56];
        quote.copy_from_slice(&buf[..56]);
        assert!(rewrite_quoted_v6(&mut quote, c, vip));
        assert_eq!(quote[..], sent[..56]);
        assert!(!rewrite_quoted_v6(&mut quote[..42], c, vip), "no ports");
    }
}
