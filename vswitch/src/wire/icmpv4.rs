//! ICMPv4 (RFC 792): the messages tapnet makes itself (errors quoting a packet, echo
//! replies) and a view over the ones it reads from host sockets.

use std::net::Ipv4Addr;

use super::ipv4::{Ipv4Repr, HEADER_LEN};
use super::PROTO_ICMP;
use crate::checksum;

pub const ECHO_REPLY: u8 = 0;
pub const DEST_UNREACHABLE: u8 = 3;
pub const ECHO_REQUEST: u8 = 8;
pub const TIME_EXCEEDED: u8 = 11;
pub const PARAMETER_PROBLEM: u8 = 12;

/// Destination-unreachable codes.
pub const UNREACH_NET: u8 = 0;
pub const UNREACH_HOST: u8 = 1;
pub const UNREACH_PORT: u8 = 3;
pub const UNREACH_FRAG_NEEDED: u8 = 4;
pub const UNREACH_ADMIN_PROHIBITED: u8 = 13;

/// ICMP header bytes before the data (type, code, checksum, and four more).
pub const HEADER: usize = 8;
/// What an error quotes at most: a 60-byte header and 8 bytes of its payload.
pub const MAX_QUOTE: usize = 68;

/// Whether an ICMP type is an error (so never answered with another error).
pub fn is_error(kind: u8) -> bool {
    !matches!(kind, ECHO_REPLY | ECHO_REQUEST | 13..=18)
}

/// What to quote of `packet` in an error about it: its header and 8 bytes of payload
/// (RFC 792), at most what `packet` holds.
pub fn quote(packet: &[u8]) -> &[u8] {
    let ihl = packet
        .first()
        .map_or(0, |b| (b & 0x0f) as usize * 4)
        .max(HEADER_LEN);
    &packet[..packet.len().min(ihl + 8).min(MAX_QUOTE)]
}

/// An ICMP message to emit inside IPv4: `kind`, `code`, the four bytes after the
/// checksum (`rest`: the next-hop MTU for fragmentation-needed, the identifier and
/// sequence of an echo), then `data` (the quoted packet of an error, or echo data).
#[derive(Debug, Clone, Copy)]
pub struct IcmpRepr<'a> {
    pub kind: u8,
    pub code: u8,
    pub rest: [u8; 4],
    pub data: &'a [u8],
}

impl IcmpRepr<'_> {
    /// Bytes of the whole IPv4 packet.
    pub fn packet_len(&self) -> usize {
        HEADER_LEN + HEADER + self.data.len()
    }

    /// Writes the IPv4 packet from `src` to `dst` (TTL 64) into `buf`; returns its
    /// length, or `None` if `buf` is too short.
    pub fn emit(&self, src: Ipv4Addr, dst: Ipv4Addr, buf: &mut [u8]) -> Option<usize> {
        self.emit_ttl(src, dst, 64, buf)
    }

    /// [`IcmpRepr::emit`] with the TTL given (a reply that crossed routers).
    pub fn emit_ttl(&self, src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, buf: &mut [u8]) -> Option<usize> {
        let len = self.packet_len();
        let buf = buf.get_mut(..len)?;
        Ipv4Repr {
            src,
            dst,
            protocol: PROTO_ICMP,
            ttl,
            ident: 0,
            dont_frag: false,
            payload_len: HEADER + self.data.len(),
        }
        .emit(buf);
        self.emit_message(&mut buf[HEADER_LEN..]);
        Some(len)
    }

    /// Bytes of the ICMP message alone (header and data).
    pub fn message_len(&self) -> usize {
        HEADER + self.data.len()
    }

    /// Writes the ICMP message alone, checksummed, into the start of `buf` (for a
    /// caller that writes the IP header itself).
    ///
    /// # Panics
    /// If `buf` is shorter than [`IcmpRepr::message_len`].
    pub fn emit_message(&self, buf: &mut [u8]) {
        let icmp = &mut buf[..self.message_len()];
        icmp[0] = self.kind;
        icmp[1] = self.code;
        icmp[2..4].fill(0);
        icmp[4..8].copy_from_slice(&self.rest);
        icmp[HEADER..].copy_from_slice(self.data);
        let c = checksum::checksum(icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
    }
}

/// A view over an ICMP message (the IP payload), at least its 8-byte header.
#[derive(Debug, Clone, Copy)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    pub fn new_checked(buf: T) -> Option<IcmpPacket<T>> {
        (buf.as_ref().len() >= HEADER).then_some(IcmpPacket { buf })
    }

    pub fn kind(&self) -> u8 {
        self.buf.as_ref()[0]
    }

    pub fn code(&self) -> u8 {
        self.buf.as_ref()[1]
    }

    /// Echo identifier (bytes 4-5).
    pub fn ident(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[4], b[5]])
    }

    /// Echo sequence number (bytes 6-7).
    pub fn seq(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[6], b[7]])
    }

    /// Bytes 4-7 (the next-hop MTU of fragmentation-needed is in 6-7).
    pub fn rest(&self) -> [u8; 4] {
        let b = self.buf.as_ref();
        [b[4], b[5], b[6], b[7]]
    }

    /// What follows the header: echo data, or the packet an error quotes.
    pub fn data(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER..]
    }

    pub fn verify_checksum(&self) -> bool {
        checksum::sum(self.buf.as_ref()) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    pub fn set_kind(&mut self, kind: u8) {
        self.buf.as_mut()[0] = kind;
    }

    /// Recomputes the checksum over the whole message.
    pub fn fill_checksum(&mut self) {
        let b = self.buf.as_mut();
        b[2..4].fill(0);
        let c = checksum::checksum(b);
        b[2..4].copy_from_slice(&c.to_be_bytes());
    }
}

/// Rewrites an echo message's identifier, fixing its checksum incrementally.
pub fn set_echo_ident(icmp: &mut [u8], ident: u16) {
    if icmp.len() < HEADER {
        return;
    }
    let old = u16::from_be_bytes([icmp[4], icmp[5]]);
    let c = checksum::update16(u16::from_be_bytes([icmp[2], icmp[3]]), old, ident);
    // An incremental update gives 0x0000 for one's complement zero, never 0xffff.
    // Both verify for a message whose other words sum to zero, but only 0xffff
    // verifies for a message that is zero everywhere else (an echo reply with
    // identifier, sequence number and data all zero): a receiver's sum would be 0.
    // 0xffff is right in either case, so it is what goes in the field.
    let c = if c == 0 { 0xffff } else { c };
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    icmp[4..6].copy_from_slice(&ident.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4::Ipv4Packet;

    #[test]
    fn an_error_quotes_header_and_eight_bytes() {
        let mut orig = vec![0u8; 100];
        orig[0] = 0x45;
        let q = quote(&orig);
        assert_eq!(q.len(), 28);
        let mut buf = [0u8; 128];
        let len = IcmpRepr {
            kind: TIME_EXCEEDED,
            code: 0,
            rest: [0; 4],
            data: q,
        }
        .emit(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            &mut buf,
        )
        .unwrap();
        assert_eq!(len, 20 + 8 + 28);
        let ip = Ipv4Packet::new_checked(&buf[..len]).unwrap();
        assert!(ip.verify_checksum());
        let icmp = IcmpPacket::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.kind(), TIME_EXCEEDED);
        assert_eq!(icmp.data(), q);
        assert!(IcmpRepr {
            kind: 0,
            code: 0,
            rest: [0; 4],
            data: &[0; 200]
        }
        .emit(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, &mut buf)
        .is_none());
    }

    #[test]
    fn echo_ident_rewrite_keeps_the_checksum() {
        let mut e = vec![ECHO_REQUEST, 0, 0, 0, 0, 7, 0, 1, 1, 2, 3];
        let c = checksum::checksum(&e);
        e[2..4].copy_from_slice(&c.to_be_bytes());
        set_echo_ident(&mut e, 0xbeef);
        let v = IcmpPacket::new_checked(&e[..]).unwrap();
        assert_eq!(v.ident(), 0xbeef);
        assert!(v.verify_checksum());
        assert!(is_error(TIME_EXCEEDED) && !is_error(ECHO_REPLY));
    }

    /// Found by the property tests (vswitch/tests/wire_props.rs): an echo reply whose
    /// identifier, sequence number and data are all zero has checksum 0xffff; setting
    /// its identifier (to zero, or back to zero) made the checksum 0x0000, which no
    /// receiver verifies.
    #[test]
    fn echo_ident_rewrite_of_an_all_zero_reply_keeps_the_checksum() {
        for (from, to) in [(0u16, 0u16), (5, 0)] {
            let mut e = vec![ECHO_REPLY, 0, 0, 0, 0, 0, 0, 0];
            e[4..6].copy_from_slice(&from.to_be_bytes());
            let c = checksum::checksum(&e);
            e[2..4].copy_from_slice(&c.to_be_bytes());
            assert!(IcmpPacket::new_checked(&e[..]).unwrap().verify_checksum());
            set_echo_ident(&mut e, to);
            let v = IcmpPacket::new_checked(&e[..]).unwrap();
            assert_eq!(v.ident(), to);
            assert!(v.verify_checksum(), "{from} -> {to}: {e:02x?}");
        }
    }
}
