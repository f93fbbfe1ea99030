//! Packet formats in one place: typed views over byte buffers, validated once with
//! `new_checked`, and emitters that build headers into a caller's buffer. The rest of
//! tapnet reads and writes packets through these instead of indexing bytes by hand.
//!
//! The shape follows smoltcp's `wire` module: a view (`Ipv4Packet<T: AsRef<[u8]>>`)
//! with cheap accessors, and a `Repr` that emits.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod flow;
pub mod icmpv4;
pub mod icmpv6;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod nat;
pub mod tcp;
pub mod udp;
pub mod virtio;
pub mod vxlan;

use checksum::fold;
use std::net::{Ipv4Addr, Ipv6Addr};

/// IP protocol numbers (IANA).
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// The one's-complement sum of the IPv4 pseudo-header (RFC 793 section 3.1, RFC 768)
/// for an L4 segment of `len` bytes, folded and not inverted: the value a sender that
/// leaves its checksum to offload (CHECKSUM_PARTIAL) puts in the checksum field.
pub fn pseudo_sum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u16 {
    let mut acc: u32 = 0;
    for half in [src, dst] {
        let o = half.octets();
        acc += u16::from_be_bytes([o[0], o[1]]) as u32;
        acc += u16::from_be_bytes([o[2], o[3]]) as u32;
    }
    acc += proto as u32;
    acc += (len as u32) & 0xffff;
    acc += (len as u32) >> 16;
    fold(acc)
}

/// The one's-complement sum of the IPv6 pseudo-header (RFC 8200 section 8.1: source,
/// destination, 32-bit upper-layer length, next header) for an L4 segment of `len`
/// bytes, folded and not inverted: what Linux leaves in a CHECKSUM_PARTIAL TCP or UDP
/// segment over IPv6 (`tcp_v6_send_check`: `~tcp_v6_check(len, saddr, daddr, 0)`).
pub fn pseudo_sum6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: usize) -> u16 {
    let mut acc: u32 = 0;
    for half in [src, dst] {
        for w in half.segments() {
            acc += w as u32;
        }
    }
    acc += proto as u32;
    acc += (len as u32) & 0xffff;
    acc += (len as u32) >> 16;
    fold(acc)
}

/// The full L4 checksum of `segment` (its checksum field zeroed or not: pass the
/// offset of the field to skip it) under the pseudo-header of `src`, `dst`, `proto`.
pub fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8], field: usize) -> u16 {
    let pseudo = pseudo_sum(src, dst, proto, segment.len());
    let before = checksum::sum_with(&segment[..field.min(segment.len())], pseudo);
    let after = segment.get(field + 2..).unwrap_or_default();
    // Bytes after the field start at an even offset (the field is 16-bit aligned).
    let c = !checksum::sum_with(after, before);
    // UDP sends all ones for a computed zero (zero means "no checksum").
    if c == 0 && proto == PROTO_UDP {
        0xffff
    } else {
        c
    }
}

/// Computes and writes the checksum of a TCP or UDP `segment` (header first) under
/// the pseudo-header of `src`, `dst` and `proto`; false (nothing written) for another
/// protocol or a segment too short for its checksum field.
pub fn fill_l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &mut [u8]) -> bool {
    let field = match proto {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        _ => return false,
    };
    if segment.len() < field + 2 {
        return false;
    }
    let c = l4_checksum(src, dst, proto, segment, field);
    segment[field..field + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// The source and destination ports of a TCP or UDP header (its first four bytes).
pub fn ports(l4: &[u8]) -> Option<(u16, u16)> {
    let p = l4.get(..4)?;
    Some((
        u16::from_be_bytes([p[0], p[1]]),
        u16::from_be_bytes([p[2], p[3]]),
    ))
}

/// Finishes a checksum left partial (CHECKSUM_PARTIAL, virtio-net NEEDS_CSUM) in place:
/// the field at `start + offset` of `buf` holds the pseudo-header sum; everything from
/// `start` on is folded into it. `None` if the offsets fall outside `buf`.
pub fn finish_checksum(buf: &mut [u8], start: usize, offset: usize) -> Option<()> {
    let at = start.checked_add(offset)?;
    if at + 2 > buf.len() || start > buf.len() {
        return None;
    }
    let c = checksum::checksum(&buf[start..]);
    // A UDP checksum of zero means "none": send its equal, all ones, instead.
    let c = if c == 0 && offset == 6 { 0xffff } else { c };
    buf[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_sum_matches_a_byte_wise_pseudo_header() {
        let (s, d) = (
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(192, 168, 255, 254),
        );
        let mut p = Vec::new();
        p.extend_from_slice(&s.octets());
        p.extend_from_slice(&d.octets());
        p.extend_from_slice(&[0, PROTO_TCP]);
        p.extend_from_slice(&1480u16.to_be_bytes());
        assert_eq!(pseudo_sum(s, d, PROTO_TCP, 1480), checksum::sum(&p));
    }

    #[test]
    fn l4_checksum_skips_its_own_field() {
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let mut seg = vec![0u8; 8 + 5];
        seg[0..2].copy_from_slice(&1000u16.to_be_bytes());
        seg[2..4].copy_from_slice(&53u16.to_be_bytes());
        seg[4..6].copy_from_slice(&13u16.to_be_bytes());
        seg[6..8].copy_from_slice(&0xabcdu16.to_be_bytes()); // garbage in the field
        seg[8..].copy_from_slice(b"hello");
        let c = l4_checksum(s, d, PROTO_UDP, &seg, 6);
        seg[6..8].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            checksum::sum_with(&seg, pseudo_sum(s, d, PROTO_UDP, seg.len())),
            0xffff
        );
    }
}
