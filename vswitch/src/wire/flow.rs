//! A transport flow as one packet shows it: protocol and both ends. Addresses are
//! `SocketAddr`, so IPv6 flows join IPv4 ones in the same tables.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

use super::ipv4::Ipv4Packet;
use super::ipv6::Ipv6Packet;
use super::{ports, PROTO_TCP, PROTO_UDP};

/// One direction of a TCP or UDP flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

impl FlowKey {
    /// An IPv4 flow.
    pub fn v4(proto: u8, src: SocketAddrV4, dst: SocketAddrV4) -> FlowKey {
        FlowKey {
            proto,
            src: SocketAddr::V4(src),
            dst: SocketAddr::V4(dst),
        }
    }

    /// An IPv6 flow.
    pub fn v6(proto: u8, src: SocketAddrV6, dst: SocketAddrV6) -> FlowKey {
        FlowKey {
            proto,
            src: SocketAddr::V6(src),
            dst: SocketAddr::V6(dst),
        }
    }

    /// Both ends, if this is an IPv6 flow.
    pub fn as_v6(&self) -> Option<(SocketAddrV6, SocketAddrV6)> {
        match (self.src, self.dst) {
            (SocketAddr::V6(s), SocketAddr::V6(d)) => Some((s, d)),
            _ => None,
        }
    }

    /// The flow of an IPv6 packet whose TCP or UDP header follows the fixed header
    /// (none behind extension headers: those are not translated).
    pub fn from_ipv6<T: AsRef<[u8]>>(ip: &Ipv6Packet<T>) -> Option<FlowKey> {
        if !matches!(ip.next_header(), PROTO_TCP | PROTO_UDP) {
            return None;
        }
        let (sport, dport) = ports(ip.payload())?;
        Some(FlowKey::v6(
            ip.next_header(),
            SocketAddrV6::new(ip.src(), sport, 0, 0),
            SocketAddrV6::new(ip.dst(), dport, 0, 0),
        ))
    }

    /// The other direction.
    pub fn reversed(self) -> FlowKey {
        FlowKey {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
        }
    }

    /// Both ends, if this is an IPv4 flow.
    pub fn as_v4(&self) -> Option<(SocketAddrV4, SocketAddrV4)> {
        match (self.src, self.dst) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => Some((s, d)),
            _ => None,
        }
    }

    /// The flow of an IPv4 packet (whole, or a first fragment): TCP or UDP only.
    pub fn from_ipv4<T: AsRef<[u8]>>(ip: &Ipv4Packet<T>) -> Option<FlowKey> {
        if ip.frag_offset() != 0 || !matches!(ip.protocol(), PROTO_TCP | PROTO_UDP) {
            return None;
        }
        let (sport, dport) = ports(ip.payload())?;
        Some(FlowKey::v4(
            ip.protocol(),
            SocketAddrV4::new(ip.src(), sport),
            SocketAddrV4::new(ip.dst(), dport),
        ))
    }

    /// The flow of an IPv4 or IPv6 packet in an Ethernet frame (`eth`: header first).
    pub fn from_frame(eth: &[u8]) -> Option<FlowKey> {
        let frame = super::ethernet::EthernetFrame::new_checked(eth)?;
        match frame.ethertype() {
            super::ethernet::ETHERTYPE_IPV4 => {
                FlowKey::from_ipv4(&Ipv4Packet::new_checked(frame.payload()).ok()?)
            }
            super::ethernet::ETHERTYPE_IPV6 => {
                FlowKey::from_ipv6(&Ipv6Packet::new_checked(frame.payload())?)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::udp;

    #[test]
    fn parsed_from_a_packet_and_reversed() {
        let mut buf = [0u8; 64];
        let n = udp::emit_packet(
            "10.0.0.1:5000".parse().unwrap(),
            "10.0.0.2:53".parse().unwrap(),
            64,
            b"x",
            &mut buf,
        )
        .unwrap();
        let key = FlowKey::from_ipv4(&Ipv4Packet::new_checked(&buf[..n]).unwrap()).unwrap();
        assert_eq!(key.proto, 17);
        assert_eq!(key.src, "10.0.0.1:5000".parse().unwrap());
        assert_eq!(key.reversed().src, key.dst);
        assert!(key.as_v4().is_some());
    }
}
