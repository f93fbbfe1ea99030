//! What a TAP's offloads leave undone, done in software before a frame leaves by a
//! path that cannot take them (a UDP tunnel): finishing a checksum left partial
//! (NEEDS_CSUM), and cutting a TCP super-frame into MSS-sized segments (TSO). VXLAN
//! must not fragment (RFC 7348 section 4.3), so every segment must fit on its own.
//!
//! And the other way, for frames arriving from a tunnel: a checksum the sending
//! kernel left partial (CHECKSUM_PARTIAL, which a veth underlay carries through its
//! VXLAN device unfinished) is recognised and handed on marked NEEDS_CSUM, the way
//! a virtio NIC would see it, instead of as a checksum error.

use vswitch::frame::{
    max_frame_len, VnetHdr, ETH_HDR_LEN, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, MAX_GSO_SEGS,
    MIN_GSO_SIZE, VNET_F_NEEDS_CSUM, VNET_HDR_LEN,
};
use vswitch::gro::{self, Checksums};
use vswitch::wire::ethernet::{EthernetFrame, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use vswitch::wire::ipv4::Ipv4Packet;
use vswitch::wire::ipv6::{Ipv6Packet, HEADER_LEN as IP6_HEADER_LEN};
use vswitch::wire::tcp::{self, TcpPacket};
use vswitch::wire::{l4_checksum, pseudo_sum, pseudo_sum6, PROTO_TCP};

/// Why a frame could not be made ready for the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    /// A GSO type this software does not cut (TCP over IPv6, UDP: later).
    UnsupportedGso,
    /// Headers that do not match what the virtio-net header says.
    Malformed,
}

/// Finishes a partial checksum in place: `eth` is the Ethernet frame, and the field at
/// `start + offset` holds the pseudo-header sum to fold the rest into.
pub fn finish_checksum(eth: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    vswitch::wire::finish_checksum(eth, start, offset).ok_or(OffloadError::Malformed)
}

/// How a super-frame is cut: each segment carries `headers` bytes of headers
/// (Ethernet, IPv4, TCP, from the frame itself) and at most `mss` bytes of payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub headers: usize,
    pub mss: usize,
}

impl Cut {
    /// The longest segment's Ethernet frame, bytes.
    pub fn max_segment(&self) -> usize {
        self.headers + self.mss
    }
}

/// How the super-frame `eth`, described by `vnet`, would be cut, without cutting it:
/// what [`segment`] checks first. TCP over IPv4, or over IPv6 with no extension
/// header (no VLAN tag).
pub fn plan(vnet: &VnetHdr, eth: &[u8]) -> Result<Cut, OffloadError> {
    if vnet.gso_type & !GSO_ECN == GSO_TCPV6 {
        return plan6(vnet, eth);
    }
    if vnet.gso_type & !GSO_ECN != GSO_TCPV4 {
        return Err(OffloadError::UnsupportedGso);
    }
    let mss = vnet.gso_size as usize;
    let frame = EthernetFrame::new_checked(eth)
        .filter(|e| e.ethertype() == ETHERTYPE_IPV4 && mss > 0)
        .ok_or(OffloadError::Malformed)?;
    // The frame is cut whole: its IP length must say so, or the segments would be
    // more than the length (and the ingress check's count) says.
    let ip = Ipv4Packet::new_checked(frame.payload()).map_err(|_| OffloadError::Malformed)?;
    if ip.protocol() != PROTO_TCP || ip.total_len() != frame.payload().len() {
        return Err(OffloadError::Malformed);
    }
    let l4 = &frame.payload()[ip.header_len()..];
    let t = TcpPacket::new_checked(l4).ok_or(OffloadError::Malformed)?;
    Ok(Cut {
        headers: ETH_HDR_LEN + ip.header_len() + t.header_len(),
        mss,
    })
}

/// [`plan`] for TCP over IPv6: the TCP header right after the IPv6 header.
fn plan6(vnet: &VnetHdr, eth: &[u8]) -> Result<Cut, OffloadError> {
    let mss = vnet.gso_size as usize;
    let frame = EthernetFrame::new_checked(eth)
        .filter(|e| e.ethertype() == ETHERTYPE_IPV6 && mss > 0)
        .ok_or(OffloadError::Malformed)?;
    let ip = Ipv6Packet::new_checked(frame.payload()).ok_or(OffloadError::Malformed)?;
    if ip.next_header() != PROTO_TCP || IP6_HEADER_LEN + ip.payload_len() != frame.payload().len() {
        // Extension headers (or a length that does not say the whole frame) are not
        // cut here.
        return Err(OffloadError::Malformed);
    }
    let t = TcpPacket::new_checked(ip.payload()).ok_or(OffloadError::Malformed)?;
    Ok(Cut {
        headers: ETH_HDR_LEN + IP6_HEADER_LEN + t.header_len(),
        mss,
    })
}

/// Cuts a super-frame (`eth`, described by `vnet`) into segments (see [`plan`]), each
/// built in `scratch` after `headroom` bytes left free for the tunnel's own header;
/// `send` gets each as `scratch[..headroom + segment length]`. Returns how many.
pub fn segment(
    vnet: &VnetHdr,
    eth: &[u8],
    scratch: &mut [u8],
    headroom: usize,
    send: impl FnMut(&mut [u8]),
) -> Result<usize, OffloadError> {
    let cut = plan(vnet, eth)?;
    if vnet.gso_type & !GSO_ECN == GSO_TCPV6 {
        segment_tcp6(eth, cut, scratch, headroom, send)
    } else {
        segment_tcp4(eth, cut, scratch, headroom, send)
    }
}

/// Software TSO for TCP over IPv6 (no extension header, no VLAN tag): as
/// [`segment_tcp4`], with each segment's payload length in its IPv6 header (which has
/// no checksum) and its TCP checksum over the IPv6 pseudo-header.
fn segment_tcp6(
    eth: &[u8],
    cut: Cut,
    scratch: &mut [u8],
    headroom: usize,
    mut send: impl FnMut(&mut [u8]),
) -> Result<usize, OffloadError> {
    let Cut { headers, mss } = cut;
    if scratch.len() < headroom + headers + mss {
        return Err(OffloadError::Malformed);
    }
    let tcp_at = ETH_HDR_LEN + IP6_HEADER_LEN;
    let thl = headers - tcp_at;
    let ip = Ipv6Packet::new_checked(&eth[ETH_HDR_LEN..]).ok_or(OffloadError::Malformed)?;
    let (src, dst) = (ip.src(), ip.dst());
    let t = TcpPacket::new_checked(&eth[tcp_at..]).ok_or(OffloadError::Malformed)?;
    let (seq, flags) = (t.seq(), t.flags());
    let payload = &eth[headers..];
    let count = payload.len().div_ceil(mss).max(1);
    for i in 0..count {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let whole = &mut scratch[..headroom + headers + chunk.len()];
        let out = &mut whole[headroom..];
        out[..headers].copy_from_slice(&eth[..headers]);
        out[headers..].copy_from_slice(chunk);
        // The payload length: bytes 4 and 5 of the IPv6 header.
        out[ETH_HDR_LEN + 4..ETH_HDR_LEN + 6]
            .copy_from_slice(&((thl + chunk.len()) as u16).to_be_bytes());
        let segment = &mut out[tcp_at..];
        let mut t = TcpPacket::new_checked(&mut *segment).expect("copied whole");
        t.set_seq(seq.wrapping_add((i * mss) as u32));
        let mut f = flags;
        if i + 1 < count {
            f &= !(tcp::FIN | tcp::PSH);
        }
        if i > 0 {
            f &= !tcp::CWR;
        }
        t.set_flags(f);
        vswitch::wire::icmpv6::fill_l4_checksum6(src, dst, PROTO_TCP, segment);
        send(whole);
    }
    Ok(count)
}

/// Whether a partial checksum's offsets (NEEDS_CSUM) fall inside an Ethernet frame of
/// `len` bytes, as [`finish`] needs; true for a frame without one.
pub fn partial_fits(vnet: &VnetHdr, len: usize) -> bool {
    vnet.flags & VNET_F_NEEDS_CSUM == 0
        || vnet.csum_start as usize + vnet.csum_offset as usize + 2 <= len
}

/// Finishes a plain frame's partial checksum, if it has one.
pub fn finish(vnet: &VnetHdr, eth: &mut [u8]) -> Result<(), OffloadError> {
    if vnet.gso_type & !GSO_ECN != GSO_NONE {
        return Err(OffloadError::UnsupportedGso);
    }
    if vnet.flags & VNET_F_NEEDS_CSUM != 0 {
        finish_checksum(eth, vnet.csum_start as usize, vnet.csum_offset as usize)?;
    }
    Ok(())
}

/// Checks the checksums of a frame that arrived from a tunnel (`frame`: a virtio-net
/// header, all zero, then an untagged Ethernet frame) and returns what they hold
/// ([`gro::checksums`]; a frame that is not IPv4 or IPv6 is [`Checksums::NotChecked`]) with the
/// frame's length, `frame.len()` or less.
///
/// A TCP or UDP checksum left partial by the sending kernel (the field holds the
/// pseudo-header sum: `skb->ip_summed == CHECKSUM_PARTIAL`, never finished because
/// it crossed a veth and the sender's VXLAN device instead of a NIC) is marked in
/// the virtio-net header as NEEDS_CSUM with csum_start (Ethernet header plus IP
/// header) and csum_offset (16 for TCP, 6 for UDP), which is how the kernel itself
/// would have described the skb to a virtio NIC (`virtio_net_hdr_from_skb`). A TAP
/// turns that header back into a CHECKSUM_PARTIAL skb (`virtio_net_hdr_to_skb` in
/// include/linux/virtio_net.h, from drivers/net/tun.c), which the container's TCP
/// and UDP accept as checksummed, as the kernel at the other end of the veth would.
/// Anything after the IP packet (Ethernet padding) is cut off such a frame, so that
/// whoever finishes the checksum (`finish`, a NIC) sums exactly the segment.
///
/// A checksum that is simply wrong is left as it is, unmarked: the receiver drops
/// the packet. The virtio-net header is not touched for anything but a partial one.
pub fn rx_checksums(frame: &mut [u8]) -> (Checksums, usize) {
    let ip_at = VNET_HDR_LEN + ETH_HDR_LEN;
    let sums = match EthernetFrame::new_checked(frame.get(VNET_HDR_LEN..).unwrap_or_default()) {
        Some(eth) if matches!(eth.ethertype(), ETHERTYPE_IPV4 | ETHERTYPE_IPV6) => {
            gro::checksums(eth.payload())
        }
        _ => return (Checksums::NotChecked, frame.len()),
    };
    let Checksums::Partial {
        l4,
        csum_offset,
        len,
    } = sums
    else {
        return (sums, frame.len());
    };
    VnetHdr {
        flags: VNET_F_NEEDS_CSUM,
        csum_start: (ETH_HDR_LEN + l4) as u16,
        csum_offset: csum_offset as u16,
        ..VnetHdr::default()
    }
    .emit(frame);
    (sums, ip_at + len)
}

/// The longest inner Ethernet frame (header included) a tunnel may bring for a bridge
/// of `mtu`: [`max_frame_len`], except for a TCP packet over IPv4 or IPv6 (TCP the
/// fixed header's next header), which may be a whole super-frame (up to 65535 bytes
/// of IP packet; see [`rx_super_frame`]). Looks only at the Ethernet type and the IP
/// protocol.
pub fn max_rx_frame(mtu: u32, eth: &[u8]) -> usize {
    let proto = EthernetFrame::new_checked(eth).and_then(|e| match e.ethertype() {
        ETHERTYPE_IPV4 => Ipv4Packet::new_quoted(e.payload())
            .ok()
            .map(|ip| ip.protocol()),
        ETHERTYPE_IPV6 => Ipv6Packet::new_quoted(e.payload()).map(|ip| ip.next_header()),
        _ => None,
    });
    if proto == Some(PROTO_TCP) {
        ETH_HDR_LEN + gro::GSO_MAX
    } else {
        max_frame_len(mtu, eth)
    }
}

/// Makes a frame that arrived from a tunnel larger than its bridge's MTU allows
/// (`frame`: virtio-net header, then an untagged Ethernet frame; its checksums
/// `sums`, from [`rx_checksums`]) into a GSO super-frame, if it is one a sender's TSO
/// made: a TCP packet over IPv4, or over IPv6 with TCP right after the fixed header,
/// whose checksums are valid or partial. A kernel VXLAN device over a veth underlay
/// sends its TCP super-skbs whole (UDP tunnel GSO: the veth takes
/// `NETIF_F_GSO_UDP_TUNNEL`), where a NIC would have cut them, and a plain UDP socket
/// receives one as a single datagram of up to 64 KiB, its segment size not told. The
/// header says GSO_TCPV4 or GSO_TCPV6 (with GSO_ECN if CWR is set, as the kernel
/// marks such an skb SKB_GSO_TCP_ECN) and NEEDS_CSUM, with gso_size the largest
/// segment the bridge's MTU takes with these headers (what the sender's MSS is when
/// it is derived from the same MTU), and the TCP checksum field the pseudo-header sum
/// over the whole length (RFC 793 3.1, RFC 8200 8.1), as a GSO frame needs. The
/// receiving kernel takes it whole; whatever forwards it cuts it by gso_size. False,
/// and the frame left as it was, for anything else (a UDP super-datagram's
/// boundaries are lost: it cannot be rebuilt), which the caller drops as oversize.
pub fn rx_super_frame(frame: &mut [u8], mtu: u32, sums: Checksums) -> bool {
    if !gro::mergeable(sums) {
        return false;
    }
    let Some(mut eth) =
        EthernetFrame::new_checked(frame.get_mut(VNET_HDR_LEN..).unwrap_or_default())
    else {
        return false;
    };
    let ethertype = eth.ethertype();
    let available = eth.payload().len();
    // The IP header's length, the packet's, and the pseudo-header sum over its TCP
    // segment (the field's value for NEEDS_CSUM).
    let (ihl, total, pseudo, gso_type) = match ethertype {
        ETHERTYPE_IPV4 => {
            let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
                return false;
            };
            if ip.protocol() != PROTO_TCP {
                return false;
            }
            let (ihl, total) = (ip.header_len(), ip.total_len());
            let sum = pseudo_sum(ip.src(), ip.dst(), PROTO_TCP, total.saturating_sub(ihl));
            (ihl, total, sum, GSO_TCPV4)
        }
        ETHERTYPE_IPV6 => {
            let Some(ip) = Ipv6Packet::new_checked(eth.payload()) else {
                return false;
            };
            if ip.next_header() != PROTO_TCP {
                return false;
            }
            let total = IP6_HEADER_LEN + ip.payload_len();
            let sum = pseudo_sum6(ip.src(), ip.dst(), PROTO_TCP, ip.payload_len());
            (IP6_HEADER_LEN, total, sum, GSO_TCPV6)
        }
        _ => return false,
    };
    // Exactly the packet (no padding): only a whole TCP packet.
    if total != available {
        return false;
    }
    let Some(mut t) = TcpPacket::new_checked(&mut eth.payload_mut()[ihl..total]) else {
        return false;
    };
    let headers = ihl + t.header_len();
    if headers >= total {
        return false;
    }
    // The segment size must also be one the bridge's ingress check takes
    // (`frame::check_gso`): at least MIN_GSO_SIZE bytes, and at most MAX_GSO_SEGS
    // segments. A bridge with a small MTU (a VNI bridge may have 68) would otherwise
    // get a GSO frame it drops as bad GSO, counted as taken here.
    let Some(mss) = (mtu as usize)
        .checked_sub(headers)
        .filter(|&m| m >= MIN_GSO_SIZE as usize)
        .filter(|&m| (total - headers).div_ceil(m) <= MAX_GSO_SEGS)
        .and_then(|m| u16::try_from(m).ok())
    else {
        return false;
    };
    if sums == Checksums::Valid {
        // Finished by the sender: leave the field as NEEDS_CSUM expects it.
        t.set_checksum(pseudo);
    }
    let ecn = if t.flags() & tcp::CWR != 0 {
        GSO_ECN
    } else {
        0
    };
    VnetHdr {
        flags: VNET_F_NEEDS_CSUM,
        gso_type: gso_type | ecn,
        hdr_len: (ETH_HDR_LEN + headers) as u16,
        gso_size: mss,
        csum_start: (ETH_HDR_LEN + ihl) as u16,
        csum_offset: 16,
    }
    .emit(frame);
    true
}

/// Software TSO for TCP over IPv4 (no VLAN tag): each segment gets the headers with
/// its own IP length, identifier and checksum, its own sequence number, FIN and PSH
/// only on the last, CWR only on the first, and a full TCP checksum.
fn segment_tcp4(
    eth: &[u8],
    cut: Cut,
    scratch: &mut [u8],
    headroom: usize,
    mut send: impl FnMut(&mut [u8]),
) -> Result<usize, OffloadError> {
    let Cut { headers, mss } = cut;
    if scratch.len() < headroom + headers + mss {
        return Err(OffloadError::Malformed);
    }
    let ip = Ipv4Packet::new_quoted(&eth[ETH_HDR_LEN..]).map_err(|_| OffloadError::Malformed)?;
    let ihl = ip.header_len();
    let tcp_at = ETH_HDR_LEN + ihl;
    let thl = headers - tcp_at;
    let t = TcpPacket::new_checked(&eth[tcp_at..]).ok_or(OffloadError::Malformed)?;
    let (id, seq, flags) = (ip.ident(), t.seq(), t.flags());
    let (src, dst) = (ip.src(), ip.dst());
    let payload = &eth[headers..];
    let count = payload.len().div_ceil(mss).max(1);
    for i in 0..count {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let whole = &mut scratch[..headroom + headers + chunk.len()];
        let out = &mut whole[headroom..];
        out[..headers].copy_from_slice(&eth[..headers]);
        out[headers..].copy_from_slice(chunk);
        let mut ip = Ipv4Packet::new_unchecked(&mut out[ETH_HDR_LEN..]);
        ip.set_total_len((ihl + thl + chunk.len()) as u16);
        ip.set_ident(id.wrapping_add(i as u16));
        ip.fill_checksum();
        let segment = &mut out[tcp_at..];
        let mut t = TcpPacket::new_checked(&mut *segment).expect("copied whole");
        t.set_seq(seq.wrapping_add((i * mss) as u32));
        let mut f = flags;
        if i + 1 < count {
            f &= !(tcp::FIN | tcp::PSH); // only on the last segment
        }
        if i > 0 {
            f &= !tcp::CWR; // only on the first
        }
        t.set_flags(f);
        let c = l4_checksum(src, dst, PROTO_TCP, segment, 16);
        TcpPacket::new_checked(segment)
            .expect("copied whole")
            .set_checksum(c);
        send(whole);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch::checksum;

    /// A TCP/IPv4 frame with `payload` bytes, its checksum finished or left partial.
    fn tcp_frame(payload: usize, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + payload];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let c = checksum::checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let t = &mut f[34..54];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&5201u16.to_be_bytes());
        t[4..8].copy_from_slice(&1000u32.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        for (i, b) in f[54..].iter_mut().enumerate() {
            *b = i as u8;
        }
        f
    }

    /// Whether a TCP/IPv4 frame's IP and TCP checksums verify.
    fn verifies(f: &[u8]) -> bool {
        let total = u16::from_be_bytes([f[16], f[17]]) as usize;
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[26..34]);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&((total - 20) as u16).to_be_bytes());
        pseudo.extend_from_slice(&f[34..14 + total]);
        checksum::sum(&f[14..34]) == 0xffff && checksum::sum(&pseudo) == 0xffff
    }

    #[test]
    fn a_partial_checksum_is_finished() {
        let mut f = tcp_frame(100, 0x18);
        // Partial: the field holds the pseudo-header sum (length 120).
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&f[26..34]);
        pseudo[9] = 6;
        pseudo[10..12].copy_from_slice(&120u16.to_be_bytes());
        let ps = checksum::sum(&pseudo);
        f[50..52].copy_from_slice(&ps.to_be_bytes());
        let vnet = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..Default::default()
        };
        finish(&vnet, &mut f).unwrap();
        assert!(verifies(&f));
    }

    #[test]
    fn a_super_frame_is_cut_into_valid_segments() {
        let f = tcp_frame(5000, 0x19); // FIN, PSH, ACK
        let vnet = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut scratch = vec![0u8; 8 + 54 + 1448];
        let mut segs = Vec::new();
        let n = segment(&vnet, &f, &mut scratch, 8, |s| segs.push(s[8..].to_vec())).unwrap();
        assert_eq!(n, 4);
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(verifies(s), "segment {i}");
            let seq = u32::from_be_bytes(s[38..42].try_into().unwrap());
            assert_eq!(seq, 1000 + (i * 1448) as u32);
            assert_eq!(u16::from_be_bytes([s[18], s[19]]), 0x1234 + i as u16);
            let last = i == 3;
            assert_eq!(s[47] & 0x09 != 0, last, "FIN/PSH only on the last");
            assert!(s.len() <= 14 + 40 + 1448);
            joined.extend_from_slice(&s[54..]);
        }
        assert_eq!(joined, f[54..].to_vec(), "the payload, in order, whole");
    }

    /// `eth` behind a zero virtio-net header, as a tunnel's frame arrives.
    fn with_vnet(eth: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN];
        f.extend_from_slice(eth);
        f
    }

    /// The folded pseudo-header sum (not inverted) of the IPv4 packet in `eth`.
    fn pseudo_sum(eth: &[u8]) -> u16 {
        let total = u16::from_be_bytes([eth[16], eth[17]]) as usize;
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&eth[26..34]);
        pseudo[9] = eth[23];
        pseudo[10..12].copy_from_slice(&((total - 20) as u16).to_be_bytes());
        checksum::sum(&pseudo)
    }

    /// `eth` (TCP) with its checksum left partial, as a Linux sender leaves a
    /// CHECKSUM_PARTIAL skb.
    fn partial_tcp(mut eth: Vec<u8>) -> Vec<u8> {
        let ps = pseudo_sum(&eth);
        eth[50..52].copy_from_slice(&ps.to_be_bytes());
        eth
    }

    /// A UDP/IPv4 frame with `payload` bytes, its checksum left partial.
    fn partial_udp(payload: usize) -> Vec<u8> {
        let mut f = tcp_frame(payload - 12, 0);
        f[23] = 17;
        f.truncate(14 + 28 + payload);
        let total = (28 + payload) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[24..26].fill(0);
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f[38..40].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
        let ps = pseudo_sum(&f);
        f[40..42].copy_from_slice(&ps.to_be_bytes());
        f
    }

    #[test]
    fn a_partial_tcp_checksum_from_a_tunnel_is_marked_needs_csum() {
        let eth = partial_tcp(tcp_frame(100, 0x18));
        let mut f = with_vnet(&eth);
        // Ethernet padding (as a NIC adds to short frames) is cut off.
        f.extend_from_slice(&[0x5a; 4]);
        let (sums, len) = rx_checksums(&mut f);
        assert!(matches!(sums, Checksums::Partial { .. }), "{sums:?}");
        assert_eq!(len, VNET_HDR_LEN + eth.len());
        let vnet = VnetHdr::parse(&f).unwrap();
        assert_eq!(
            vnet,
            VnetHdr {
                flags: VNET_F_NEEDS_CSUM,
                csum_start: 34,
                csum_offset: 16,
                ..Default::default()
            }
        );
        // Sent on through another tunnel, the send path finishes it: it verifies.
        let mut out = f[VNET_HDR_LEN..len].to_vec();
        finish(&vnet, &mut out).unwrap();
        assert!(verifies(&out));
    }

    #[test]
    fn a_partial_udp_checksum_from_a_tunnel_is_marked_needs_csum() {
        let eth = partial_udp(37);
        let mut f = with_vnet(&eth);
        let (sums, len) = rx_checksums(&mut f);
        assert!(matches!(sums, Checksums::Partial { .. }), "{sums:?}");
        assert_eq!(len, f.len());
        let vnet = VnetHdr::parse(&f).unwrap();
        assert_eq!((vnet.flags, vnet.csum_start, vnet.csum_offset), (1, 34, 6));
        let mut out = f[VNET_HDR_LEN..].to_vec();
        finish(&vnet, &mut out).unwrap();
        assert_eq!(gro::checksums(&out[14..]), Checksums::Valid);
    }

    #[test]
    fn a_wrong_checksum_from_a_tunnel_is_left_as_it_is() {
        // A partial sum one off, and a finished checksum damaged on the way.
        let mut off = partial_tcp(tcp_frame(100, 0x18));
        off[51] ^= 0x01;
        let mut damaged = tcp_frame(100, 0x18);
        let c = !checksum::sum_with(&damaged[34..], pseudo_sum(&damaged));
        damaged[50..52].copy_from_slice(&c.to_be_bytes());
        assert!(verifies(&damaged));
        damaged[80] ^= 0x40;
        let mut udp = partial_udp(20);
        udp[40] ^= 0x10;
        for eth in [off, damaged, udp] {
            let mut f = with_vnet(&eth);
            let before = f.clone();
            assert_eq!(rx_checksums(&mut f), (Checksums::Wrong, f.len()));
            assert_eq!(f, before, "not marked, not fixed");
        }
        // Not IPv4, or not whole: not judged, not touched.
        let mut arp = with_vnet(&tcp_frame(10, 0));
        arp[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(rx_checksums(&mut arp).0, Checksums::NotChecked);
        for n in 0..VNET_HDR_LEN + 60 {
            let mut f = with_vnet(&partial_tcp(tcp_frame(100, 0x18)));
            f.truncate(n);
            let (sums, len) = rx_checksums(&mut f);
            assert_eq!(sums, Checksums::NotChecked, "{n} bytes");
            assert_eq!(len, n);
        }
    }

    #[test]
    fn a_tcp_super_frame_from_a_tunnel_goes_on_as_gso() {
        // A 64 KiB-style TSO skb a kernel sent whole (partial, as TSO leaves it),
        // for a bridge of MTU 1450: GSO_TCPV4, segments of 1450 - 40 bytes.
        let mut f = with_vnet(&partial_tcp(tcp_frame(5000, 0x98))); // CWR, PSH, ACK
        let (sums, _) = rx_checksums(&mut f);
        assert!(rx_super_frame(&mut f, 1450, sums));
        let vnet = VnetHdr::parse(&f).unwrap();
        assert_eq!(
            vnet,
            VnetHdr {
                flags: VNET_F_NEEDS_CSUM,
                gso_type: GSO_TCPV4 | GSO_ECN,
                hdr_len: 54,
                gso_size: 1410,
                csum_start: 34,
                csum_offset: 16,
            }
        );
        // Cut (as on the way to another peer), every segment verifies and fits.
        let mut scratch = vec![0u8; 8 + 54 + 1410];
        let mut payload = Vec::new();
        let n = segment(&vnet, &f[VNET_HDR_LEN..], &mut scratch, 8, |s| {
            assert!(verifies(&s[8..]));
            assert!(s.len() - 8 <= 14 + 1450);
            payload.extend_from_slice(&s[8 + 54..]);
        })
        .unwrap();
        assert_eq!(n, 4);
        assert_eq!(payload, f[VNET_HDR_LEN + 54..].to_vec());

        // A valid one too: its field then holds the pseudo-header sum, as GSO needs.
        let mut eth = tcp_frame(3000, 0x10);
        let c = !checksum::sum_with(&eth[34..], pseudo_sum(&eth));
        eth[50..52].copy_from_slice(&c.to_be_bytes());
        let mut f = with_vnet(&eth);
        let (sums, _) = rx_checksums(&mut f);
        assert_eq!(sums, Checksums::Valid);
        assert!(rx_super_frame(&mut f, 1450, sums));
        assert_eq!(
            u16::from_be_bytes([f[VNET_HDR_LEN + 50], f[VNET_HDR_LEN + 51]]),
            pseudo_sum(&eth)
        );
        assert_eq!(VnetHdr::parse(&f).unwrap().gso_type, GSO_TCPV4);

        // A wrong checksum, UDP (whose datagram boundaries are lost), an MTU too
        // small for the headers: not made GSO, not touched.
        let mut wrong = partial_tcp(tcp_frame(3000, 0x10));
        wrong[50] ^= 0x01;
        let udp = partial_udp(3000);
        for (eth, mtu) in [(&wrong, 1450), (&udp, 1450), (&eth, 40)] {
            let mut f = with_vnet(eth);
            let (sums, _) = rx_checksums(&mut f);
            let before = f.clone();
            assert!(!rx_super_frame(&mut f, mtu, sums));
            assert_eq!(f, before);
        }
        assert_eq!(max_rx_frame(1450, &udp), 1464);
        assert_eq!(max_rx_frame(1450, &wrong), 14 + 65535);
    }

    /// Found by the fuzz targets (bench/fuzz.sh): on a bridge with a small MTU a
    /// super-frame was handed on as a GSO frame with segments under 48 bytes (MTU 68:
    /// 28), or more than 256 of them, which the bridge's ingress check drops as bad
    /// GSO. It is refused here instead (the caller counts it oversize), and every
    /// GSO frame made here is one the bridge takes.
    #[test]
    fn a_super_frame_is_made_gso_only_as_the_bridge_takes_it() {
        use vswitch::frame::check_ingress;
        for (mtu, payload, taken) in [
            (68, 3000, false),
            (87, 3000, false),
            (88, 3000, true),
            (200, 65000, false),
            (576, 65000, true),
            (1450, 65000, true),
        ] {
            let mut f = with_vnet(&partial_tcp(tcp_frame(payload, 0x10)));
            let (sums, _) = rx_checksums(&mut f);
            let before = f.clone();
            assert_eq!(rx_super_frame(&mut f, mtu, sums), taken, "MTU {mtu}");
            if taken {
                assert_eq!(check_ingress(&f, mtu), Ok(VnetHdr::parse(&f).unwrap()));
            } else {
                assert_eq!(f, before, "MTU {mtu}: left as it was");
            }
        }
    }

    #[test]
    fn arbitrary_frames_from_a_tunnel_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for len in 0..200 {
            for _ in 0..100 {
                let mut f: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                // Mostly IPv4 TCP or UDP, so that the deeper checks are reached.
                if len > VNET_HDR_LEN + ETH_HDR_LEN + 9 {
                    f[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14].copy_from_slice(&[0x08, 0x00]);
                    let ip = VNET_HDR_LEN + ETH_HDR_LEN;
                    f[ip] = 0x40 | (f[ip] & 0x0f);
                    f[ip + 6] &= 0x40;
                    f[ip + 7] = 0;
                    f[ip + 9] = [6, 17][f[ip + 9] as usize & 1];
                    let total = (next() as usize % len) as u16;
                    f[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
                }
                let (sums, n) = rx_checksums(&mut f);
                assert!(n <= f.len());
                let mtu = [0, 68, 1450, 9000, 70000][next() as usize % 5];
                let _ = rx_super_frame(&mut f[..n], mtu, sums);
                let _ = rx_super_frame(&mut f, mtu, Checksums::Valid);
                let _ = max_rx_frame(mtu, &f);
            }
        }
    }

    #[test]
    fn a_tcp_over_ipv6_super_frame_is_cut_into_valid_segments() {
        let (src, dst): (std::net::Ipv6Addr, std::net::Ipv6Addr) =
            ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let payload = 2500;
        let mut f = vec![0u8; 14 + 40 + 20 + payload];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        vswitch::wire::icmpv6::Ipv6Repr {
            src,
            dst,
            next_header: 6,
            hop_limit: 64,
            payload_len: 20 + payload,
        }
        .emit(&mut f[14..]);
        let t = &mut f[54..74];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&5201u16.to_be_bytes());
        t[4..8].copy_from_slice(&1000u32.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = 0x18 | 0x01; // PSH, ACK, FIN
        for (i, b) in f[74..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let vnet = VnetHdr {
            gso_type: GSO_TCPV6,
            gso_size: 1000,
            hdr_len: 74,
            ..Default::default()
        };
        assert_eq!(plan(&vnet, &f).unwrap().max_segment(), 1074);
        let mut scratch = vec![0u8; 1200];
        let mut segs = Vec::new();
        let n = segment(&vnet, &f, &mut scratch, 8, |s| segs.push(s[8..].to_vec())).unwrap();
        assert_eq!(n, 3);
        let mut data = Vec::new();
        for (i, seg) in segs.iter().enumerate() {
            let ip = Ipv6Packet::new_checked(&seg[14..]).unwrap();
            assert_eq!(ip.payload_len(), seg.len() - 54);
            let mut tcp = seg[54..].to_vec();
            let sent = u16::from_be_bytes([tcp[16], tcp[17]]);
            vswitch::wire::icmpv6::fill_l4_checksum6(src, dst, 6, &mut tcp);
            assert_eq!(u16::from_be_bytes([tcp[16], tcp[17]]), sent, "segment {i}");
            let t = TcpPacket::new_checked(&seg[54..]).unwrap();
            assert_eq!(t.seq(), 1000 + (i * 1000) as u32);
            assert_eq!(
                t.flags() & (tcp::FIN | tcp::PSH) != 0,
                i == 2,
                "segment {i}"
            );
            data.extend_from_slice(&seg[74..]);
        }
        assert_eq!(data, f[74..].to_vec());
    }

    #[test]
    fn what_cannot_be_cut_is_refused_not_panicked_on() {
        let vnet = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 100,
            ..Default::default()
        };
        let mut scratch = vec![0u8; 2000];
        for len in 0..80 {
            let mut f = tcp_frame(26, 0x10);
            f.truncate(len);
            let _ = segment(&vnet, &f, &mut scratch, 8, |_| {});
        }
        let v6 = VnetHdr {
            gso_type: 4,
            gso_size: 100,
            ..Default::default()
        };
        let mut f = tcp_frame(500, 0x10);
        // TCPv6 segmentation asked of an IPv4 frame: the header does not match.
        assert_eq!(
            segment(&v6, &f, &mut scratch, 8, |_| {}),
            Err(OffloadError::Malformed)
        );
        let udp_l4 = VnetHdr {
            gso_type: vswitch::frame::GSO_UDP_L4,
            gso_size: 100,
            ..Default::default()
        };
        assert_eq!(
            segment(&udp_l4, &f, &mut scratch, 8, |_| {}),
            Err(OffloadError::UnsupportedGso)
        );
        let partial_past_end = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            csum_start: 50,
            csum_offset: 600,
            ..Default::default()
        };
        assert_eq!(
            finish(&partial_past_end, &mut f),
            Err(OffloadError::Malformed)
        );
    }
}
