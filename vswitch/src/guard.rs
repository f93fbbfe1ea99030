//! Port security (what OVS calls port security and the CNI bridge plugin
//! `macspoofchk`): a port whose container was given an address may send only from
//! its own MAC, and from its own IPv4 address in ARP and IPv4. Frames claiming the
//! gateway, another container, or an address nobody gave it are dropped and counted,
//! so one container cannot take over another's traffic or the gateway's.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::counters::DropReason;
use crate::fdb::Mac;
use crate::wire::arp::ArpPacket;
use crate::wire::ethernet::{EthernetFrame, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::icmpv6::{self, Icmpv6Packet};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::Ipv6Packet;

/// What a port may send as.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PortGuard {
    pub mac: Mac,
    /// With it, ARP and IPv4 must come from this address (or 0.0.0.0: an ARP probe
    /// (RFC 5227) or a DHCP request, before the address is in use)...
    pub ipv4: Option<Ipv4Addr>,
    /// ... or from one of these: the container's addresses on its other ports (a
    /// multi-homed container answers from either address by either link).
    pub also: Vec<Ipv4Addr>,
    /// On a bridge with a `subnet6`: what IPv6 the port may send from.
    pub ipv6: Option<Ipv6Guard>,
}

/// IPv6 sources a guarded port may use: `::` (duplicate address detection), any
/// link-local address, and any address of the bridge's subnet6, that is not taken
/// (the gateway's and the router's link-local address, a VIP, another port's `ip6`
/// or EUI-64 link-local address). Addresses within the prefix are not tied to
/// the MAC, so that privacy and stable-privacy addresses (RFC 8981, RFC 7217) work.
/// Neighbour advertisements must advertise such an address, and neighbour discovery's
/// link-layer options the port's own MAC; router advertisements are dropped.
#[derive(Debug, PartialEq, Eq)]
pub struct Ipv6Guard {
    pub subnet: (Ipv6Addr, u8),
    /// A set: it holds two addresses for every other port of the bridge, and every
    /// IPv6 packet from the port is looked up in it.
    pub taken: std::collections::HashSet<Ipv6Addr>,
}

// By hand, for `clone_from`: the datapath refreshes its workers' copies of the guards
// in place, reusing their sets' memory (see `crate::shard::View`).
impl Clone for PortGuard {
    fn clone(&self) -> PortGuard {
        PortGuard {
            mac: self.mac,
            ipv4: self.ipv4,
            also: self.also.clone(),
            ipv6: self.ipv6.clone(),
        }
    }

    fn clone_from(&mut self, source: &PortGuard) {
        self.mac = source.mac;
        self.ipv4 = source.ipv4;
        self.also.clone_from(&source.also);
        self.ipv6.clone_from(&source.ipv6);
    }
}

impl Clone for Ipv6Guard {
    fn clone(&self) -> Ipv6Guard {
        Ipv6Guard {
            subnet: self.subnet,
            taken: self.taken.clone(),
        }
    }

    fn clone_from(&mut self, source: &Ipv6Guard) {
        self.subnet = source.subnet;
        self.taken.clone_from(&source.taken);
    }
}

impl Ipv6Guard {
    fn allows(&self, ip: Ipv6Addr) -> bool {
        let (net, prefix) = self.subnet;
        !self.taken.contains(&ip)
            && (ip.is_unspecified()
                || ip.segments()[0] & 0xffc0 == 0xfe80
                || crate::wire::ipv6::in_prefix(ip, net, prefix))
    }
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
        if self.ipv4.is_none() && self.ipv6.is_none() {
            return Ok(());
        }
        // Through every tag: Linux reads through priority tags (VLAN 0, 802.1Q and
        // 802.1ad, stacked), so a forgery wrapped in them must not pass unread.
        let (ethertype, payload) = frame.innermost().ok_or(DropReason::Unverifiable)?;
        if ethertype == ETHERTYPE_IPV6 {
            return match &self.ipv6 {
                Some(g) => self.check_ipv6(g, payload),
                None => Ok(()),
            };
        }
        let Some(own) = self.ipv4 else {
            return Ok(());
        };
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

    /// An IPv6 packet from the port: its source, and what its neighbour discovery
    /// claims.
    fn check_ipv6(&self, g: &Ipv6Guard, payload: &[u8]) -> Result<(), DropReason> {
        let ip = Ipv6Packet::new_checked(payload).ok_or(DropReason::Unverifiable)?;
        if !g.allows(ip.src()) {
            return Err(DropReason::SpoofedIp);
        }
        if ip.next_header() != icmpv6::NEXT_HEADER {
            return Ok(());
        }
        let Some(msg) = Icmpv6Packet::new_checked(ip.payload()) else {
            return Err(DropReason::Unverifiable);
        };
        let opts_at = match msg.msg_type() {
            // Advertising a router, or redirecting to a better first hop (RFC 4861
            // section 8: only a router may): tapnet is the router.
            icmpv6::ROUTER_ADVERT | icmpv6::REDIRECT => return Err(DropReason::RaGuard),
            icmpv6::NEIGHBOR_ADVERT => {
                let target = msg.nd_target().ok_or(DropReason::Unverifiable)?;
                if !g.allows(target) || target.is_unspecified() {
                    return Err(DropReason::SpoofedIp);
                }
                icmpv6::NS_LEN
            }
            icmpv6::NEIGHBOR_SOLICIT => icmpv6::NS_LEN,
            icmpv6::ROUTER_SOLICIT => 8,
            _ => return Ok(()),
        };
        // Link-layer address options: the port's own MAC, nothing else.
        let macs = msg.nd_lladdrs(opts_at).ok_or(DropReason::Unverifiable)?;
        if macs.iter().any(|m| *m != self.mac) {
            return Err(DropReason::SpoofedMac);
        }
        Ok(())
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

    /// An IPv6 packet from MINE: `src`, with ICMPv6 `msg` (its checksum not needed here).
    fn ipv6(src: &str, msg: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40];
        f[6..12].copy_from_slice(&MINE.0);
        f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        f[14] = 0x60;
        f[18..20].copy_from_slice(&(msg.len() as u16).to_be_bytes());
        f[20] = 58;
        f[21] = 255;
        f[22..38].copy_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(msg);
        f
    }

    fn na(target: &str, mac: Mac) -> Vec<u8> {
        let mut m = vec![0u8; 32];
        crate::wire::icmpv6::emit_na(&mut m, target.parse().unwrap(), mac, false, true);
        m
    }

    #[test]
    fn ipv6_from_its_prefix_but_never_the_gateways_or_another_ports() {
        let g = PortGuard {
            mac: MINE,
            ipv4: Some(Ipv4Addr::new(10, 0, 0, 2)),
            also: vec![],
            ipv6: Some(Ipv6Guard {
                subnet: ("fd00::".parse().unwrap(), 64),
                // The gateway, another port's ip6, the router's link-local address.
                taken: ["fd00::1", "fd00::3", "fe80::74:6eff:fe00:1"]
                    .map(|a| a.parse().unwrap())
                    .into(),
            }),
        };
        let echo = [128u8, 0, 0, 0, 0, 1, 0, 1];
        for ok in ["fd00::2", "fd00::1234:5678", "fe80::1", "::"] {
            assert_eq!(g.check(&ipv6(ok, &echo)), Ok(()), "{ok}");
        }
        for bad in ["fd00::1", "fd00::3", "fd01::2"] {
            assert_eq!(
                g.check(&ipv6(bad, &echo)),
                Err(DropReason::SpoofedIp),
                "{bad}"
            );
        }
        // Neighbour advertisements: for what it may use, with its own MAC.
        assert_eq!(g.check(&ipv6("fe80::9", &na("fd00::2", MINE))), Ok(()));
        assert_eq!(
            g.check(&ipv6("fe80::9", &na("fd00::1", MINE))),
            Err(DropReason::SpoofedIp),
            "claims the gateway"
        );
        assert_eq!(
            g.check(&ipv6("fe80::9", &na("fd00::2", OTHER))),
            Err(DropReason::SpoofedMac)
        );
        // Nor the router's link-local address (the SLAAC containers' default router),
        // as a source or in an advertisement.
        assert_eq!(
            g.check(&ipv6("fe80::9", &na("fe80::74:6eff:fe00:1", MINE))),
            Err(DropReason::SpoofedIp),
            "claims the router's link-local address"
        );
        assert_eq!(
            g.check(&ipv6("fe80::74:6eff:fe00:1", &echo)),
            Err(DropReason::SpoofedIp)
        );
        // A rogue router: an advertisement, or a redirect.
        let ra = [134u8, 0, 0, 0, 64, 0, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(g.check(&ipv6("fe80::9", &ra)), Err(DropReason::RaGuard));
        let mut redirect = vec![137u8, 0, 0, 0, 0, 0, 0, 0];
        redirect.extend_from_slice(&[0; 32]);
        assert_eq!(
            g.check(&ipv6("fe80::9", &redirect)),
            Err(DropReason::RaGuard)
        );
    }

    #[test]
    fn only_its_own_mac_and_address() {
        let g = PortGuard {
            mac: MINE,
            ipv4: Some(Ipv4Addr::new(10, 0, 0, 2)),
            also: vec![Ipv4Addr::new(10, 0, 1, 2)],
            ipv6: None,
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
