//! Port security (what OVS calls port security and the CNI bridge plugin
//! `macspoofchk`): a port whose container was given an address may send only from
//! its own MAC, and from its own IPv4 address in ARP and IPv4. Frames claiming the
//! gateway, another container, or an address nobody gave it are dropped and counted,
//! so one container cannot take over another's traffic or the gateway's.

use std::net::Ipv4Addr;

use crate::counters::DropReason;
use crate::fdb::Mac;
use crate::wire::arp::ArpPacket;
use crate::wire::ethernet::{EthernetFrame, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use crate::wire::ipv4::Ipv4Packet;

/// What a port may send as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortGuard {
    pub mac: Mac,
    /// With it, ARP and IPv4 must come from this address (or 0.0.0.0: an ARP probe
    /// (RFC 5227) or a DHCP request, before the address is in use)...
    pub ipv4: Option<Ipv4Addr>,
    /// ... or from one of these: the container's addresses on its other ports (a
    /// multi-homed container answers from either address by either link).
    pub also: Vec<Ipv4Addr>,
}

impl PortGuard {
    /// Checks the Ethernet frame `eth` (validated: at least a header) against the
    /// guard.
    pub fn check(&self, eth: &[u8]) -> Result<(), DropReason> {
        let Some(frame) = EthernetFrame::new_checked(eth) else {
            return Err(DropReason::Runt);
        };
        if frame.src() != self.mac {
            return Err(DropReason::SpoofedMac);
        }
        let Some(own) = self.ipv4 else {
            return Ok(());
        };
        // Through every tag: Linux reads through priority tags (VLAN 0, 802.1Q and
        // 802.1ad, stacked), so a forgery wrapped in them must not pass unread.
        let (ethertype, payload) = frame.innermost().ok_or(DropReason::Unverifiable)?;
        let allowed = |ip: Ipv4Addr| ip == own || ip.is_unspecified() || self.also.contains(&ip);
        match ethertype {
            ETHERTYPE_ARP => match ArpPacket::new_checked(payload) {
                None => Err(DropReason::Unverifiable),
                Some(arp) if arp.sender_mac() != self.mac => Err(DropReason::SpoofedMac),
                Some(arp) if !allowed(arp.sender_ip()) => Err(DropReason::SpoofedIp),
                Some(_) => Ok(()),
            },
            ETHERTYPE_IPV4 => match Ipv4Packet::new_quoted(payload) {
                Err(_) => Err(DropReason::Unverifiable),
                Ok(ip) if !allowed(ip.src()) => Err(DropReason::SpoofedIp),
                Ok(_) => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINE: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const OTHER: Mac = Mac([2, 0, 0, 0, 0, 9]);

    fn arp(sha: Mac, spa: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 28];
        f[0..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&MINE.0);
        f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
        f[22..28].copy_from_slice(&sha.0);
        f[28..32].copy_from_slice(&spa);
        f
    }

    fn ipv4(src: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20];
        f[6..12].copy_from_slice(&MINE.0);
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&20u16.to_be_bytes());
        f[26..30].copy_from_slice(&src);
        f
    }

    #[test]
    fn only_its_own_mac_and_address() {
        let g = PortGuard {
            mac: MINE,
            ipv4: Some(Ipv4Addr::new(10, 0, 0, 2)),
            also: vec![Ipv4Addr::new(10, 0, 1, 2)],
        };
        assert_eq!(g.check(&ipv4([10, 0, 1, 2])), Ok(()), "its other address");
        assert_eq!(g.check(&ipv4([10, 0, 0, 2])), Ok(()));
        assert_eq!(g.check(&ipv4([0, 0, 0, 0])), Ok(()), "DHCP");
        assert_eq!(g.check(&ipv4([10, 0, 0, 1])), Err(DropReason::SpoofedIp));
        assert_eq!(g.check(&arp(MINE, [10, 0, 0, 2])), Ok(()));
        assert_eq!(g.check(&arp(MINE, [0, 0, 0, 0])), Ok(()), "ARP probe");
        // A forged reply claiming the gateway.
        assert_eq!(
            g.check(&arp(MINE, [10, 0, 0, 1])),
            Err(DropReason::SpoofedIp)
        );
        assert_eq!(
            g.check(&arp(OTHER, [10, 0, 0, 2])),
            Err(DropReason::SpoofedMac)
        );
        let mut f = ipv4([10, 0, 0, 2]);
        f[6..12].copy_from_slice(&OTHER.0);
        assert_eq!(g.check(&f), Err(DropReason::SpoofedMac));
        // Inside a VLAN tag too.
        let mut tagged = ipv4([10, 0, 0, 1]);
        tagged.splice(12..12, [0x81, 0x00, 0, 5]);
        assert_eq!(g.check(&tagged), Err(DropReason::SpoofedIp));
        // Through stacked and 802.1ad priority tags too.
        for tags in [&[0x88, 0xa8, 0, 0][..], &[0x81, 0, 0, 0, 0x81, 0, 0, 0][..]] {
            let mut f = arp(MINE, [10, 0, 0, 1]);
            f.splice(12..12, tags.iter().copied());
            assert_eq!(g.check(&f), Err(DropReason::SpoofedIp), "{tags:x?}");
        }
        let mut f = ipv4([10, 0, 0, 1]);
        f.splice(12..12, [0x88, 0xa8, 0, 0]);
        assert_eq!(g.check(&f), Err(DropReason::SpoofedIp));
        // What cannot be read is not let through: ARP of another hardware type (6,
        // IEEE 802, which Linux takes too), a broken IPv4 header, a cut tag.
        let mut hw6 = arp(MINE, [10, 0, 0, 1]);
        hw6[15] = 6;
        assert_eq!(g.check(&hw6), Err(DropReason::Unverifiable));
        let mut broken = ipv4([10, 0, 0, 1]);
        broken[14] = 0x41;
        assert_eq!(g.check(&broken), Err(DropReason::Unverifiable));
        let mut cut = ipv4([10, 0, 0, 2]);
        cut.truncate(14);
        cut[12..14].copy_from_slice(&[0x81, 0]);
        cut.extend_from_slice(&[0, 0]);
        assert_eq!(g.check(&cut), Err(DropReason::Unverifiable));
        // Other protocols pass (IPv6 is checked once IPv6 is routed).
        let mut other = ipv4([10, 0, 0, 1]);
        other[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert_eq!(g.check(&other), Ok(()));
        // Without an address, only the MAC is checked.
        let mac_only = PortGuard {
            mac: MINE,
            ..Default::default()
        };
        assert_eq!(mac_only.check(&ipv4([10, 0, 0, 1])), Ok(()));
    }
}
