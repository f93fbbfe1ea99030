//! The IP header fields that do not depend on the family: one view over an IPv4 or
//! IPv6 packet, for code that treats both alike (the host proxy).

use std::net::IpAddr;

use super::ipv4::Ipv4Packet;
use super::ipv6::Ipv6Packet;

/// IPv6's fragment header (RFC 8200 section 4.5).
pub const NEXT_HEADER_FRAGMENT: u8 = 44;

/// An IP packet's head, whichever the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHead<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4's protocol, or IPv6's next header (an extension header is not followed:
    /// it is what the fixed header says).
    pub proto: u8,
    /// IPv4's TTL or IPv6's hop limit.
    pub ttl: u8,
    /// IPv4's DF; always true over IPv6 (routers never fragment it, RFC 8200 section 5).
    pub dont_frag: bool,
    /// Whether this is a fragment (IPv4 offset or MF, or an IPv6 fragment header first).
    pub fragment: bool,
    /// The packet's payload, within its stated length.
    pub payload: &'a [u8],
}

impl<'a> IpHead<'a> {
    /// Reads `packet` (an IP header first: version 4 or 6). None if neither family's
    /// checks pass (too short, lengths that disagree, a bad IPv4 checksum).
    pub fn parse(packet: &'a [u8]) -> Option<IpHead<'a>> {
        match packet.first().map(|b| b >> 4) {
            Some(4) => {
                let ip = Ipv4Packet::new_checked(packet).ok()?;
                let (src, dst, proto, ttl) = (ip.src(), ip.dst(), ip.protocol(), ip.ttl());
                let (dont_frag, fragment) = (ip.dont_frag(), ip.is_fragment());
                let payload = ip.into_payload();
                Some(IpHead {
                    src: src.into(),
                    dst: dst.into(),
                    proto,
                    ttl,
                    dont_frag,
                    fragment,
                    payload,
                })
            }
            Some(6) => {
                let ip = Ipv6Packet::new_checked(packet)?;
                let (src, dst, proto, ttl) = (ip.src(), ip.dst(), ip.next_header(), ip.hop_limit());
                Some(IpHead {
                    src: src.into(),
                    dst: dst.into(),
                    proto,
                    ttl,
                    dont_frag: true,
                    fragment: proto == NEXT_HEADER_FRAGMENT,
                    payload: ip.into_payload(),
                })
            }
            _ => None,
        }
    }

    /// The length of the IP header before [`IpHead::payload`] in `packet`.
    pub fn header_len(&self, packet: &[u8]) -> usize {
        self.payload.as_ptr() as usize - packet.as_ptr() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::icmpv6::Ipv6Repr;
    use crate::wire::udp;

    #[test]
    fn reads_both_families() {
        let mut b4 = [0u8; 64];
        let n = udp::emit_packet(
            "10.0.0.1:5".parse().unwrap(),
            "10.0.0.2:6".parse().unwrap(),
            9,
            b"xy",
            &mut b4,
        )
        .unwrap();
        let h = IpHead::parse(&b4[..n]).unwrap();
        assert_eq!(h.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((h.proto, h.ttl, h.payload.len()), (17, 9, 10));
        assert_eq!(h.header_len(&b4[..n]), 20);
        let mut b6 = [0u8; 60];
        Ipv6Repr {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            next_header: 6,
            hop_limit: 3,
            payload_len: 20,
        }
        .emit(&mut b6);
        let h = IpHead::parse(&b6).unwrap();
        assert_eq!(h.dst, "fd00::2".parse::<IpAddr>().unwrap());
        assert_eq!(
            (h.proto, h.ttl, h.payload.len(), h.fragment),
            (6, 3, 20, false)
        );
        assert!(IpHead::parse(&b6[..50]).is_none());
        assert!(IpHead::parse(&[0x50; 40]).is_none());
        assert!(IpHead::parse(&[]).is_none());
    }
}
