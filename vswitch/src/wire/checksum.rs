//! Internet checksums (RFC 1071) and their incremental update (RFC 1624), so that a
//! rewritten field costs a few additions instead of a pass over the packet.

/// The one's-complement sum of `data` folded to 16 bits (not inverted).
pub fn sum(data: &[u8]) -> u16 {
    sum_with(data, 0)
}

/// [`sum`], starting from `init` (another part's sum, a pseudo-header's say).
pub fn sum_with(data: &[u8], init: u16) -> u16 {
    let mut acc: u32 = init as u32;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [last] = chunks.remainder() {
        acc += (*last as u32) << 8;
    }
    fold(acc)
}

/// Folds a 32-bit one's-complement accumulator into 16 bits.
pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum field value for `data` (with its checksum field zeroed).
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit word of the covered data changed
/// from `old` to `new`: HC' = ~(~HC + ~m + m').
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    !fold(!check as u32 + !old as u32 + new as u32)
}

/// [`update16`] for a 32-bit field (an IPv4 address), one half at a time.
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    let c = update16(check, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

/// [`update16`] for a 128-bit field (an IPv6 address, RFC 1624 over each of its eight
/// words).
pub fn update128(check: u16, old: u128, new: u128) -> u16 {
    (0..8).rev().fold(check, |c, i| {
        update16(c, (old >> (16 * i)) as u16, (new >> (16 * i)) as u16)
    })
}

/// What an IPv4 packet's IP header and TCP or UDP checksums hold, or an IPv6
/// packet's TCP or UDP checksum, found in one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksums {
    /// Not a whole TCP or UDP packet over IPv4 or IPv6 with consistent lengths
    /// (another protocol, a fragment, IPv6 extension headers, a runt, a UDP length
    /// that is not the IP payload's): nothing was checked.
    NotChecked,
    /// The IP header checksum (IPv4) and the TCP or UDP checksum verify (for UDP
    /// over IPv4, also a checksum of zero: "none sent", RFC 768; over IPv6 zero is
    /// not allowed, RFC 8200 section 8.1, and is [`Checksums::Wrong`]).
    Valid,
    /// The IP header checksum verifies (IPv4), and the TCP or UDP checksum field
    /// holds exactly the folded, not inverted, one's-complement sum of the
    /// pseudo-header (RFC 793 section 3.1, RFC 768; RFC 8200 section 8.1 for IPv6)
    /// over the packet's L4 length: what the Linux kernel leaves in an skb it sends
    /// CHECKSUM_PARTIAL, for a NIC to finish (`tcp_v4_send_check`, `udp4_hwcsum`,
    /// `tcp_v6_send_check`, `udp6_hwcsum_outgoing`). A kernel that hands such an skb
    /// to a veth or a tunnel never finishes it.
    Partial {
        /// Where the TCP or UDP header starts in the packet (the IP header length,
        /// bytes; 40 for IPv6): the virtio-net header's csum_start, less the
        /// Ethernet header.
        l4: usize,
        /// Where the checksum field is in the TCP (16) or UDP (6) header, bytes:
        /// the virtio-net header's csum_offset.
        csum_offset: usize,
        /// The IP packet's length (its total length field; for IPv6 40 and the
        /// payload length), bytes.
        len: usize,
    },
    /// The IP header checksum, or the TCP or UDP checksum, is neither valid nor
    /// partial: the packet was damaged (or made wrong).
    Wrong,
}

/// Checks `p`, an IPv4 or IPv6 packet (it may be followed by padding), for
/// [`Checksums`]: an IPv4 header's checksum and, for TCP or UDP, the checksum over
/// the pseudo-header and the segment. One pass over the packet. Over IPv6 only TCP
/// or UDP directly after the fixed header is checked (no extension headers, as
/// Linux's GRO takes them: `ipv6_gro_receive` merges nothing else at once).
pub fn classify(p: &[u8]) -> Checksums {
    use super::ipv4::Ipv4Packet;
    use super::{udp::UdpPacket, PROTO_TCP, PROTO_UDP};
    if p.first().is_some_and(|b| b >> 4 == 6) {
        return classify6(p);
    }
    let Ok(ip) = Ipv4Packet::new_checked(p) else {
        return Checksums::NotChecked;
    };
    if ip.is_fragment() {
        return Checksums::NotChecked;
    }
    let (proto, l4, ihl) = (ip.protocol(), ip.payload(), ip.header_len());
    let (csum_offset, min_header) = match proto {
        PROTO_TCP => (16, 20),
        PROTO_UDP => (6, 8),
        _ => return Checksums::NotChecked,
    };
    if l4.len() < min_header {
        return Checksums::NotChecked;
    }
    if proto == PROTO_UDP && UdpPacket::new_checked(l4).is_none_or(|u| u.len() != l4.len()) {
        return Checksums::NotChecked;
    }
    if !ip.verify_checksum() {
        return Checksums::Wrong;
    }
    let field = u16::from_be_bytes([l4[csum_offset], l4[csum_offset + 1]]);
    if proto == PROTO_UDP && field == 0 {
        return Checksums::Valid;
    }
    let pseudo = super::pseudo_sum(ip.src(), ip.dst(), proto, l4.len());
    if sum_with(l4, pseudo) == 0xffff {
        Checksums::Valid
    } else if field == pseudo {
        Checksums::Partial {
            l4: ihl,
            csum_offset,
            len: ip.total_len(),
        }
    } else {
        Checksums::Wrong
    }
}

/// [`classify`] for an IPv6 packet.
fn classify6(p: &[u8]) -> Checksums {
    use super::ipv6::{Ipv6Packet, HEADER_LEN};
    use super::{udp::UdpPacket, PROTO_TCP, PROTO_UDP};
    let Some(ip) = Ipv6Packet::new_checked(p) else {
        return Checksums::NotChecked;
    };
    let (proto, l4) = (ip.next_header(), ip.payload());
    let (csum_offset, min_header) = match proto {
        PROTO_TCP => (16, 20),
        PROTO_UDP => (6, 8),
        _ => return Checksums::NotChecked,
    };
    if l4.len() < min_header {
        return Checksums::NotChecked;
    }
    if proto == PROTO_UDP && UdpPacket::new_checked(l4).is_none_or(|u| u.len() != l4.len()) {
        return Checksums::NotChecked;
    }
    let field = u16::from_be_bytes([l4[csum_offset], l4[csum_offset + 1]]);
    let pseudo = super::pseudo_sum6(ip.src(), ip.dst(), proto, l4.len());
    if field == 0 && proto == PROTO_UDP {
        // A zero UDP checksum over IPv6 is not "none": the receiver drops it.
        return Checksums::Wrong;
    }
    if sum_with(l4, pseudo) == 0xffff {
        Checksums::Valid
    } else if field == pseudo {
        Checksums::Partial {
            l4: HEADER_LEN,
            csum_offset,
            len: HEADER_LEN + l4.len(),
        }
    } else {
        Checksums::Wrong
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xorshift(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    /// 0x0000 and 0xffff are the same number in one's complement.
    fn same(a: u16, b: u16) -> bool {
        a == b || (a | b == 0xffff && (a == 0 || b == 0))
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2.
        assert_eq!(
            sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn incremental_update_agrees_with_recomputation() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let len = 20 + (xorshift(&mut seed) % 40) as usize * 2;
            let mut data: Vec<u8> = (0..len).map(|_| xorshift(&mut seed) as u8).collect();
            data[10] = 0;
            data[11] = 0;
            let check = checksum(&data);
            // Change a 16-bit word and a 32-bit field somewhere past the checksum.
            let w = 12 + 2 * (xorshift(&mut seed) as usize % ((len - 16) / 2));
            let old16 = u16::from_be_bytes([data[w], data[w + 1]]);
            let new16 = xorshift(&mut seed) as u16;
            data[w..w + 2].copy_from_slice(&new16.to_be_bytes());
            let c1 = update16(check, old16, new16);
            assert!(same(c1, checksum(&data)), "16-bit change at {w}");
            let a = 12 + 2 * (xorshift(&mut seed) as usize % ((len - 16) / 2));
            let old32 = u32::from_be_bytes(data[a..a + 4].try_into().unwrap());
            let new32 = xorshift(&mut seed) as u32;
            data[a..a + 4].copy_from_slice(&new32.to_be_bytes());
            let c2 = update32(c1, old32, new32);
            assert!(same(c2, checksum(&data)), "32-bit change at {a}");
        }
    }
}
