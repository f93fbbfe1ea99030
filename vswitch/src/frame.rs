//! Zero-copy views over what a port hands tapnet: a virtio-net header followed by an
//! Ethernet frame. Validate once at ingress with [`check_ingress`], then use the cheap
//! accessors.

use crate::counters::DropReason;
use crate::fdb::Mac;

/// `struct virtio_net_hdr` without the `num_buffers` field: what TAPs with
/// `IFF_VNET_HDR` use unless TUNSETVNETHDRSZ says otherwise.
pub const VNET_HDR_LEN: usize = 10;
pub const ETH_HDR_LEN: usize = 14;
/// Room for one 802.1Q tag on top of the MTU, as the Linux bridge allows, but only for
/// a frame that carries one.
pub const VLAN_TAG_LEN: usize = 4;
/// 802.1Q and 802.1ad tag protocol identifiers.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

pub const VNET_F_NEEDS_CSUM: u8 = 1;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
pub const GSO_ECN: u8 = 0x80;

/// A parsed virtio-net header (little-endian, as on every host tapnet targets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b: &[u8; VNET_HDR_LEN] = b.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    pub fn emit(&self, b: &mut [u8]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }

    /// True for a super-frame that the receiver must segment (TSO/USO).
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }
}

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
        GSO_TCPV4 | GSO_TCPV6 | GSO_UDP | GSO_UDP_L4 => {
            if vnet.gso_size == 0 {
                return Err(DropReason::BadVnetHeader);
            }
            // Each segment must fit the bridge's MTU once cut.
            if vnet.gso_size as u32 > mtu {
                return Err(DropReason::Oversize);
            }
        }
        _ => return Err(DropReason::BadVnetHeader),
    }
    if vnet.flags & VNET_F_NEEDS_CSUM != 0
        && vnet.csum_start as usize + vnet.csum_offset as usize + 2 > eth_len
    {
        return Err(DropReason::BadVnetHeader);
    }
    let src = source_mac(&data[VNET_HDR_LEN..]);
    if src.is_multicast() || src.is_zero() {
        return Err(DropReason::BadSourceMac);
    }
    Ok(vnet)
}

/// The longest Ethernet frame (header included, no FCS) that a link of `mtu` carries:
/// the MTU and the 14-byte header, and 4 more only if `eth` carries an 802.1Q or
/// 802.1ad tag (as the Linux bridge counts it). An untagged 1515-byte frame on an
/// MTU-1500 link is oversize: its IP packet is 1501 bytes.
pub fn max_frame_len(mtu: u32, eth: &[u8]) -> usize {
    let tagged = eth
        .get(12..14)
        .map(|t| u16::from_be_bytes([t[0], t[1]]))
        .is_some_and(|t| t == ETHERTYPE_VLAN || t == ETHERTYPE_QINQ);
    mtu as usize + ETH_HDR_LEN + if tagged { VLAN_TAG_LEN } else { 0 }
}

/// Destination MAC of an Ethernet frame (at least [`ETH_HDR_LEN`] bytes).
pub fn destination_mac(eth: &[u8]) -> Mac {
    Mac(eth[0..6].try_into().expect("checked length"))
}

/// Source MAC of an Ethernet frame (at least [`ETH_HDR_LEN`] bytes).
pub fn source_mac(eth: &[u8]) -> Mac {
    Mac(eth[6..12].try_into().expect("checked length"))
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

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn vnet_header_roundtrip() {
        let h = VnetHdr {
            flags: 1,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut b = [0u8; VNET_HDR_LEN];
        h.emit(&mut b);
        assert_eq!(VnetHdr::parse(&b), Some(h));
        assert!(h.is_gso());
        assert!(VnetHdr::parse(&b[..9]).is_none());
    }

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
        let gso = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let f = frame(gso, B, A, 65000);
        assert!(check_ingress(&f, 1500).is_ok());
    }

    #[test]
    fn gso_segments_larger_than_the_mtu_are_oversize() {
        let gso = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 8948,
            ..Default::default()
        };
        let f = frame(gso, B, A, 20000);
        assert_eq!(check_ingress(&f, 1500), Err(DropReason::Oversize));
        assert!(check_ingress(&f, 9000).is_ok());
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
