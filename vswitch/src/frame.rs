//! Zero-copy views over what a port hands tapnet: a virtio-net header followed by an
//! Ethernet frame. Validate once at ingress with [`check_ingress`], then use the cheap
//! accessors.

use crate::counters::DropReason;
use crate::fdb::Mac;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::{self, Ipv6Packet};
use crate::wire::{tcp, udp, PROTO_TCP, PROTO_UDP};

pub use crate::wire::virtio::*;

use crate::wire::ethernet::{EthernetFrame, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
/// 802.1Q: the bridge allows one tag's room on top of the MTU, as the Linux bridge
/// does, but only for a frame that carries one.
pub use crate::wire::ethernet::{ETHERTYPE_QINQ, ETHERTYPE_VLAN, VLAN_TAG_LEN};

pub const ETH_HDR_LEN: usize = crate::wire::ethernet::HEADER_LEN;

/// The smallest segment size a GSO frame may ask for: Linux's `tcp_min_snd_mss`
/// default (no Linux sender cuts smaller). A segment size of 1 would make one 64 KiB
/// frame sixty thousand packets.
pub const MIN_GSO_SIZE: u16 = 48;
/// Segments one GSO frame may make at most: the kernel's `UDP_MAX_SEGMENTS` is 128;
/// TCP gets twice that, room for a 64 KiB frame at a 256-byte MSS.
pub const MAX_GSO_SEGS: usize = 256;
const MAX_UDP_GSO_SEGS: usize = 128;

/// Checks a frame as it enters the switch: `data` is the virtio-net header followed by
/// the Ethernet frame; `mtu` is the bridge's. Returns the header on success.
pub fn check_ingress(data: &[u8], mtu: u32) -> Result<VnetHdr, DropReason> {
    let Some(vnet) = VnetHdr::parse(data) else {
        return Err(DropReason::Runt);
    };
    let eth_len = data.len() - VNET_HDR_LEN;
    if eth_len < ETH_HDR_LEN {
        return Err(DropReason::Runt);
    }
    match vnet.gso_type & !GSO_ECN {
        GSO_NONE => {
            if eth_len > max_frame_len(mtu, &data[VNET_HDR_LEN..]) {
                return Err(DropReason::Oversize);
            }
        }
        GSO_TCPV4 | GSO_TCPV6 | GSO_UDP_L4 => {
            if vnet.gso_size == 0 {
                return Err(DropReason::BadVnetHeader);
            }
            let l3_and_l4 = check_gso(&vnet, &data[VNET_HDR_LEN..])?;
            // Each segment, with its headers, must fit the bridge's MTU once cut.
            if l3_and_l4 + vnet.gso_size as usize > mtu as usize {
                return Err(DropReason::Oversize);
            }
        }
        _ => return Err(DropReason::BadVnetHeader),
    }
    if vnet.flags & VNET_F_NEEDS_CSUM != 0 && !vnet.is_gso() {
        check_partial(&vnet, &data[VNET_HDR_LEN..])?;
    }
    let src = source_mac(&data[VNET_HDR_LEN..]);
    if src.is_multicast() || src.is_zero() {
        return Err(DropReason::BadSourceMac);
    }
    Ok(vnet)
}

/// Checks a checksum left partial (NEEDS_CSUM) on a frame that is not GSO: the field
/// must be a TCP (offset 16) or UDP (offset 6) checksum, starting at the L4 header of
/// an IPv4 (not a fragment) or IPv6 packet, as the kernel only ever leaves them.
/// Anything else would have whoever finishes the checksum (the VXLAN endpoint, the
/// router cutting fragments) write two bytes of the sender's choosing anywhere in the
/// frame: over an address port security already passed, say.
fn check_partial(vnet: &VnetHdr, eth: &[u8]) -> Result<(), DropReason> {
    let bad = DropReason::BadVnetHeader;
    let frame = EthernetFrame::new_checked(eth).ok_or(bad)?;
    let (ethertype, packet) = frame.inner().ok_or(bad)?;
    let l3 = eth.len() - packet.len();
    let (proto, l4) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ip = Ipv4Packet::new_checked(packet).map_err(|_| bad)?;
            if ip.is_fragment() {
                return Err(bad);
            }
            (ip.protocol(), l3 + ip.header_len())
        }
        ETHERTYPE_IPV6 => {
            let ip = Ipv6Packet::new_checked(packet).ok_or(bad)?;
            (ip.next_header(), l3 + ipv6::HEADER_LEN)
        }
        _ => return Err(bad),
    };
    let offset = match proto {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        _ => return Err(bad),
    };
    let fits = l4 + offset + 2 <= eth.len();
    if vnet.csum_start as usize == l4 && vnet.csum_offset as usize == offset && fits {
        Ok(())
    } else {
        Err(bad)
    }
}

/// Checks a GSO frame's metadata against its headers (`eth`: the Ethernet frame), as
/// the kernel's `virtio_net_hdr_to_skb` does and somewhat more: the GSO type matches
/// the protocol (TCPV4: IPv4/TCP, TCPV6: IPv6/TCP, UDP_L4: UDP), the checksum is left
/// partial at the L4 header, the header length covers the headers, the segment size
/// is at least [`MIN_GSO_SIZE`] and the segments are at most [`MAX_GSO_SEGS`] (128 for
/// UDP). Returns the bytes of the IP and L4 headers (what each segment repeats).
pub fn check_gso(vnet: &VnetHdr, eth: &[u8]) -> Result<usize, DropReason> {
    let bad = DropReason::BadGso;
    let frame = EthernetFrame::new_checked(eth).ok_or(bad)?;
    let (ethertype, packet) = frame.inner().ok_or(bad)?;
    let l3 = eth.len() - packet.len();
    let gso_type = vnet.gso_type & !GSO_ECN;
    let (proto, ip_header, l4) = match (gso_type, ethertype) {
        (GSO_TCPV4 | GSO_UDP_L4, ETHERTYPE_IPV4) => {
            let ip = Ipv4Packet::new_checked(packet).map_err(|_| bad)?;
            // The IP length must be the frame's: whoever cuts it (the kernel, the
            // VXLAN endpoint) cuts the whole frame, so a short length would hide
            // segments from the count below.
            if ip.is_fragment() || ip.total_len() != packet.len() {
                return Err(bad);
            }
            (ip.protocol(), ip.header_len(), ip.into_payload())
        }
        (GSO_TCPV6 | GSO_UDP_L4, ETHERTYPE_IPV6) => {
            let ip = Ipv6Packet::new_checked(packet).ok_or(bad)?;
            if ipv6::HEADER_LEN + ip.payload_len() != packet.len() {
                return Err(bad);
            }
            (ip.next_header(), ipv6::HEADER_LEN, ip.into_payload())
        }
        _ => return Err(bad),
    };
    let (l4_header, csum_offset, max_segs) = match (gso_type, proto) {
        (GSO_TCPV4 | GSO_TCPV6, PROTO_TCP) => {
            let t = tcp::TcpPacket::new_checked(l4).ok_or(bad)?;
            (t.header_len(), 16, MAX_GSO_SEGS)
        }
        (GSO_UDP_L4, PROTO_UDP) => {
            udp::UdpPacket::new_checked(l4).ok_or(bad)?;
            (udp::HEADER_LEN, 6, MAX_UDP_GSO_SEGS)
        }
        _ => return Err(bad),
    };
    let headers = l3 + ip_header + l4_header;
    let payload = l4.len() - l4_header;
    let ok = vnet.flags & VNET_F_NEEDS_CSUM != 0
        && vnet.csum_start as usize == l3 + ip_header
        && vnet.csum_offset as usize == csum_offset
        && (vnet.hdr_len as usize) >= headers
        && (vnet.hdr_len as usize) <= eth.len()
        && vnet.gso_size >= MIN_GSO_SIZE
        && payload.div_ceil(vnet.gso_size as usize) <= max_segs;
    if ok {
        Ok(ip_header + l4_header)
    } else {
        Err(bad)
    }
}

/// The longest Ethernet frame (header included, no FCS) that a link of `mtu` carries:
/// the MTU and the 14-byte header, and 4 more only if `eth` carries an 802.1Q or
/// 802.1ad tag (as the Linux bridge counts it). An untagged 1515-byte frame on an
/// MTU-1500 link is oversize: its IP packet is 1501 bytes.
pub fn max_frame_len(mtu: u32, eth: &[u8]) -> usize {
    let tagged = EthernetFrame::new_checked(eth).is_some_and(|f| f.is_tagged());
    mtu as usize + ETH_HDR_LEN + if tagged { VLAN_TAG_LEN } else { 0 }
}

/// Destination MAC of an Ethernet frame (at least [`ETH_HDR_LEN`] bytes).
///
/// # Panics
/// If `eth` is shorter than an Ethernet header.
pub fn destination_mac(eth: &[u8]) -> Mac {
    EthernetFrame::new_checked(eth)
        .expect("checked length")
        .dst()
}

/// Source MAC of an Ethernet frame (at least [`ETH_HDR_LEN`] bytes).
///
/// # Panics
/// If `eth` is shorter than an Ethernet header.
pub fn source_mac(eth: &[u8]) -> Mac {
    EthernetFrame::new_checked(eth)
        .expect("checked length")
        .src()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(vnet: VnetHdr, dst: [u8; 6], src: [u8; 6], payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN + ETH_HDR_LEN + payload];
        vnet.emit(&mut f);
        f[10..16].copy_from_slice(&dst);
        f[16..22].copy_from_slice(&src);
        f[22..24].copy_from_slice(&0x0800u16.to_be_bytes());
        f
    }

    /// A TCP/IPv4 super-frame with `payload` bytes after 54 bytes of headers, its
    /// virtio-net header as a Linux sender writes it.
    fn tso(gso_size: u16, payload: usize) -> Vec<u8> {
        let vnet = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut f = frame(vnet, B, A, 40 + payload);
        let ip = &mut f[VNET_HDR_LEN + 14..];
        crate::wire::ipv4::Ipv4Repr {
            src: std::net::Ipv4Addr::new(10, 0, 0, 1),
            dst: std::net::Ipv4Addr::new(10, 0, 0, 2),
            protocol: 6,
            ttl: 64,
            ident: 0,
            dont_frag: true,
            payload_len: 20 + payload,
        }
        .emit(ip);
        ip[20 + 12] = 5 << 4;
        f
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn accepts_a_plain_frame_at_mtu() {
        let f = frame(VnetHdr::default(), B, A, 1500);
        assert!(check_ingress(&f, 1500).is_ok());
    }

    #[test]
    fn runts_are_dropped() {
        assert_eq!(check_ingress(&[0u8; 5], 1500), Err(DropReason::Runt));
        let f = frame(VnetHdr::default(), B, A, 0);
        assert_eq!(
            check_ingress(&f[..f.len() - 1], 1500),
            Err(DropReason::Runt)
        );
        assert!(check_ingress(&f, 1500).is_ok(), "a bare header is a frame");
    }

    #[test]
    fn one_byte_over_the_mtu_is_oversize_unless_tagged() {
        let f = frame(VnetHdr::default(), B, A, 1501);
        assert_eq!(check_ingress(&f, 1500), Err(DropReason::Oversize));
        let mut tagged = frame(VnetHdr::default(), B, A, 1504);
        tagged[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        assert!(check_ingress(&tagged, 1500).is_ok());
        let mut over = frame(VnetHdr::default(), B, A, 1505);
        over[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        assert_eq!(check_ingress(&over, 1500), Err(DropReason::Oversize));
    }

    #[test]
    fn oversize_unless_gso() {
        let f = frame(VnetHdr::default(), B, A, 1505);
        assert_eq!(check_ingress(&f, 1500), Err(DropReason::Oversize));
        let f = tso(1460, 65000);
        assert!(check_ingress(&f, 1500).is_ok());
    }

    #[test]
    fn gso_segments_larger_than_the_mtu_are_oversize() {
        let f = tso(8948, 20000);
        assert_eq!(check_ingress(&f, 1500), Err(DropReason::Oversize));
        assert!(check_ingress(&f, 9000).is_ok());
        // Headers count: 1461 bytes of payload a segment is one too many at 1500.
        assert_eq!(
            check_ingress(&tso(1461, 20000), 1500),
            Err(DropReason::Oversize)
        );
    }

    #[test]
    fn inconsistent_vnet_headers_are_dropped() {
        let bad_type = VnetHdr {
            gso_type: 9,
            gso_size: 100,
            ..Default::default()
        };
        let f = frame(bad_type, B, A, 100);
        assert_eq!(check_ingress(&f, 1500), Err(DropReason::BadVnetHeader));
        let no_size = VnetHdr {
            gso_type: GSO_TCPV4,
            ..Default::default()
        };
        let f = frame(no_size, B, A, 100);
        assert_eq!(check_ingress(&f, 1500), Err(DropReason::BadVnetHeader));
        let csum_past_end = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            csum_start: 100,
            csum_offset: 16,
            ..Default::default()
        };
        let f = frame(csum_past_end, B, A, 100);
        assert_eq!(check_ingress(&f, 1500), Err(DropReason::BadVnetHeader));
    }

    #[test]
    fn a_partial_checksum_must_be_the_tcp_or_udp_one() {
        // A TCP segment (not GSO) left partial as the kernel leaves it: taken.
        let mut f = tso(1448, 100);
        VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..Default::default()
        }
        .emit(&mut f);
        assert!(check_ingress(&f, 1500).is_ok());
        // Pointed anywhere else (the IP source address, the UDP field of a TCP
        // segment, past the IP header's end), whoever finished it would write two
        // bytes of the sender's choosing there: dropped.
        for (start, offset) in [(14, 12), (34, 6), (26, 0), (30, 0), (0, 6), (54, 16)] {
            VnetHdr {
                flags: VNET_F_NEEDS_CSUM,
                csum_start: start,
                csum_offset: offset,
                ..Default::default()
            }
            .emit(&mut f);
            assert_eq!(
                check_ingress(&f, 1500),
                Err(DropReason::BadVnetHeader),
                "{start}+{offset}"
            );
        }
        // Nor on a frame that is not TCP or UDP over IP.
        let mut arp = frame(VnetHdr::default(), B, A, 28);
        arp[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14].copy_from_slice(&0x0806u16.to_be_bytes());
        VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            csum_start: 14,
            csum_offset: 14,
            ..Default::default()
        }
        .emit(&mut arp);
        assert_eq!(check_ingress(&arp, 1500), Err(DropReason::BadVnetHeader));
    }

    #[test]
    fn gso_metadata_that_does_not_describe_the_frame_is_dropped() {
        let good = tso(1448, 60000);
        assert!(check_ingress(&good, 1500).is_ok());
        // A segment size of one byte: sixty thousand segments.
        let mut f = good.clone();
        f[4..6].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(check_ingress(&f, 1500), Err(DropReason::BadGso));
        // Too many segments for the kernel's own limits, even at a legal size.
        assert_eq!(
            check_ingress(&tso(200, 60000), 1500),
            Err(DropReason::BadGso)
        );
        assert!(check_ingress(&tso(256, 60000), 1500).is_ok());
        // A header length short of the headers, or past the frame.
        for hdr_len in [0u16, 53, 65535] {
            let mut f = good.clone();
            f[2..4].copy_from_slice(&hdr_len.to_le_bytes());
            assert_eq!(
                check_ingress(&f, 1500),
                Err(DropReason::BadGso),
                "{hdr_len}"
            );
        }
        // The checksum not at TCP's, or not left partial.
        let mut f = good.clone();
        f[8..10].copy_from_slice(&6u16.to_le_bytes());
        assert_eq!(check_ingress(&f, 1500), Err(DropReason::BadGso));
        let mut f = good.clone();
        f[0] = 0;
        assert_eq!(check_ingress(&f, 1500), Err(DropReason::BadGso));
        // A type that does not match the protocol: TCPV6 over IPv4, UDP_L4 over TCP.
        for t in [GSO_TCPV6, GSO_UDP_L4] {
            let mut f = good.clone();
            f[1] = t;
            assert_eq!(check_ingress(&f, 1500), Err(DropReason::BadGso), "{t}");
        }
        // An IP length shorter than the frame: the frame would be cut whole, into
        // more segments than the length says (an underlay flood through VXLAN).
        for total in [1500u16, 30000] {
            let mut f = good.clone();
            let at = VNET_HDR_LEN + ETH_HDR_LEN;
            let mut ip = Ipv4Packet::new_unchecked(&mut f[at..]);
            ip.set_total_len(total);
            ip.fill_checksum();
            assert_eq!(check_ingress(&f, 1500), Err(DropReason::BadGso), "{total}");
        }
        // Legacy UFO is not taken.
        let mut f = good.clone();
        f[1] = GSO_UDP;
        assert_eq!(check_ingress(&f, 1500), Err(DropReason::BadVnetHeader));
    }

    #[test]
    fn multicast_or_zero_source_is_dropped() {
        let f = frame(VnetHdr::default(), B, [0xff; 6], 10);
        assert_eq!(check_ingress(&f, 1500), Err(DropReason::BadSourceMac));
        let f = frame(VnetHdr::default(), B, [0; 6], 10);
        assert_eq!(check_ingress(&f, 1500), Err(DropReason::BadSourceMac));
        let f = frame(VnetHdr::default(), B, [1, 0, 0x5e, 0, 0, 1], 10);
        assert_eq!(check_ingress(&f, 1500), Err(DropReason::BadSourceMac));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..200 {
            for _ in 0..50 {
                let buf: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    })
                    .collect();
                let _ = check_ingress(&buf, 68);
            }
        }
    }
}
