//! The rewrites NAT and routing make in place, with the checksums updated
//! incrementally (RFC 1624) instead of recomputed: a TTL, addresses and ports.

use std::net::SocketAddrV4;

use super::ipv4::Ipv4Packet;
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
    let at = csum_offset(proto).expect("checked");
    let (os, od) = (u32::from(ip.src()), u32::from(ip.dst()));
    let (ns, nd) = (u32::from(*new_src.ip()), u32::from(*new_dst.ip()));
    let c = checksum::update32(checksum::update32(ip.checksum(), os, ns), od, nd);
    ip.set_checksum(c);
    ip.set_src(*new_src.ip());
    ip.set_dst(*new_dst.ip());
    let l4 = &mut packet[ihl..];
    let (osp, odp) = (
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
    );
    let old = u16::from_be_bytes([l4[at], l4[at + 1]]);
    let new = if partial {
        !checksum::update32(checksum::update32(!old, os, ns), od, nd)
    } else if proto == PROTO_UDP && old == 0 {
        0
    } else {
        let c = checksum::update32(checksum::update32(old, os, ns), od, nd);
        let c = checksum::update16(c, osp, new_src.port());
        let c = checksum::update16(c, odp, new_dst.port());
        if proto == PROTO_UDP && c == 0 {
            0xffff
        } else {
            c
        }
    };
    l4[at..at + 2].copy_from_slice(&new.to_be_bytes());
    l4[0..2].copy_from_slice(&new_src.port().to_be_bytes());
    l4[2..4].copy_from_slice(&new_dst.port().to_be_bytes());
    true
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
}
