//! UDP (RFC 768): a view and an emitter.

use std::net::SocketAddrV4;

use super::ipv4::{Ipv4Repr, HEADER_LEN as IP_HEADER_LEN};
use super::{l4_checksum, PROTO_UDP};

pub const HEADER_LEN: usize = 8;

/// A view over a UDP datagram (header first), its length field checked against the
/// buffer.
#[derive(Debug, Clone, Copy)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Checks that the header fits and its length field lies within `buf` (which may
    /// run longer: Ethernet padding).
    pub fn new_checked(buf: T) -> Option<UdpPacket<T>> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return None;
        }
        let len = u16::from_be_bytes([b[4], b[5]]) as usize;
        (HEADER_LEN..=b.len())
            .contains(&len)
            .then_some(UdpPacket { buf })
    }

    pub fn src_port(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn dst_port(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[2], b[3]])
    }

    pub fn len(&self) -> usize {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[4], b[5]]) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == HEADER_LEN
    }

    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..self.len()]
    }
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    pub fn checksum(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[6], b[7]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    pub fn set_src_port(&mut self, port: u16) {
        self.buf.as_mut()[0..2].copy_from_slice(&port.to_be_bytes());
    }

    pub fn set_dst_port(&mut self, port: u16) {
        self.buf.as_mut()[2..4].copy_from_slice(&port.to_be_bytes());
    }

    pub fn set_checksum(&mut self, check: u16) {
        self.buf.as_mut()[6..8].copy_from_slice(&check.to_be_bytes());
    }
}

/// Writes a UDP header (ports, length of header and `payload_len`, checksum zero)
/// into the first 8 bytes of `buf`.
///
/// # Panics
/// If `buf` is shorter than 8 bytes.
pub fn emit_header(src_port: u16, dst_port: u16, payload_len: usize, buf: &mut [u8]) {
    let h = &mut buf[..HEADER_LEN];
    h[0..2].copy_from_slice(&src_port.to_be_bytes());
    h[2..4].copy_from_slice(&dst_port.to_be_bytes());
    h[4..6].copy_from_slice(&((HEADER_LEN + payload_len).min(0xffff) as u16).to_be_bytes());
    h[6..8].fill(0);
}

/// Writes an IPv4/UDP packet from `src` to `dst` carrying `payload` into `buf`,
/// checksummed, the IPv4 header with `ttl` and without DF (tapnet may have to
/// fragment it on the way); returns its length, or `None` if `buf` is too short or
/// the datagram too long for IPv4.
pub fn emit_packet(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    ttl: u8,
    payload: &[u8],
    buf: &mut [u8],
) -> Option<usize> {
    let udp_len = HEADER_LEN + payload.len();
    let total = IP_HEADER_LEN + udp_len;
    if total > 65535 {
        return None;
    }
    let buf = buf.get_mut(..total)?;
    Ipv4Repr {
        src: *src.ip(),
        dst: *dst.ip(),
        protocol: PROTO_UDP,
        ttl,
        ident: 0,
        dont_frag: false,
        payload_len: udp_len,
    }
    .emit(buf);
    let udp = &mut buf[IP_HEADER_LEN..];
    emit_header(src.port(), dst.port(), payload.len(), udp);
    udp[HEADER_LEN..].copy_from_slice(payload);
    let c = l4_checksum(*src.ip(), *dst.ip(), PROTO_UDP, udp, 6);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    Some(total)
}

/// Writes an IPv6/UDP packet from `src` to `dst` carrying `payload` into `buf`, with
/// `hop_limit`, checksummed (never zero over IPv6, RFC 8200 section 8.1); returns its
/// length, or `None` if `buf` is too short or the datagram longer than UDP's 16-bit
/// length (no jumbograms).
pub fn emit_packet6(
    src: std::net::SocketAddrV6,
    dst: std::net::SocketAddrV6,
    hop_limit: u8,
    payload: &[u8],
    buf: &mut [u8],
) -> Option<usize> {
    let udp_len = HEADER_LEN + payload.len();
    if udp_len > 65535 {
        return None;
    }
    let total = super::ipv6::HEADER_LEN + udp_len;
    let buf = buf.get_mut(..total)?;
    super::icmpv6::Ipv6Repr {
        src: *src.ip(),
        dst: *dst.ip(),
        next_header: PROTO_UDP,
        hop_limit,
        payload_len: udp_len,
    }
    .emit(buf);
    let udp = &mut buf[super::ipv6::HEADER_LEN..];
    emit_header(src.port(), dst.port(), payload.len(), udp);
    udp[HEADER_LEN..].copy_from_slice(payload);
    super::icmpv6::fill_l4_checksum6(*src.ip(), *dst.ip(), PROTO_UDP, udp);
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum;
    use crate::wire::ipv4::Ipv4Packet;
    use crate::wire::pseudo_sum;

    #[test]
    fn emitted_datagrams_verify() {
        let (s, d): (SocketAddrV4, SocketAddrV4) = (
            "10.0.0.1:5000".parse().unwrap(),
            "10.0.0.2:53".parse().unwrap(),
        );
        let mut buf = vec![0u8; 2000];
        let n = emit_packet(s, d, 64, &[7; 1500], &mut buf).unwrap();
        let ip = Ipv4Packet::new_checked(&buf[..n]).unwrap();
        assert!(!ip.dont_frag() && ip.verify_checksum());
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (5000, 53));
        assert_eq!(udp.payload(), &[7; 1500][..]);
        let sum = checksum::sum_with(ip.payload(), pseudo_sum(*s.ip(), *d.ip(), 17, udp.len()));
        assert_eq!(sum, 0xffff);
        assert!(emit_packet(s, d, 64, &[0; 100], &mut buf[..100]).is_none());
        assert!(UdpPacket::new_checked(&[0u8; 7][..]).is_none());
    }
}
