//! TCP (RFC 9293): a view over the header, and resets.

use std::net::SocketAddrV4;

use super::ipv4::{Ipv4Repr, HEADER_LEN as IP_HEADER_LEN};
use super::PROTO_TCP;

pub const HEADER_LEN: usize = 20;
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
/// Congestion window reduced (RFC 3168).
pub const CWR: u8 = 0x80;

/// A view over a TCP segment (header first).
#[derive(Debug, Clone, Copy)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Checks that the header, options included, fits in `buf`.
    pub fn new_checked(buf: T) -> Option<TcpPacket<T>> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return None;
        }
        let thl = (b[12] >> 4) as usize * 4;
        (thl >= HEADER_LEN && thl <= b.len()).then_some(TcpPacket { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes([self.b()[0], self.b()[1]])
    }

    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes([self.b()[2], self.b()[3]])
    }

    pub fn seq(&self) -> u32 {
        let b = self.b();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }

    pub fn ack(&self) -> u32 {
        let b = self.b();
        u32::from_be_bytes([b[8], b[9], b[10], b[11]])
    }

    pub fn header_len(&self) -> usize {
        (self.b()[12] >> 4) as usize * 4
    }

    pub fn flags(&self) -> u8 {
        self.b()[13]
    }

    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..]
    }

    pub fn window(&self) -> u16 {
        u16::from_be_bytes([self.b()[14], self.b()[15]])
    }

    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.b()[16], self.b()[17]])
    }

    /// The options (between the fixed header and the data).
    pub fn options(&self) -> &[u8] {
        &self.b()[HEADER_LEN..self.header_len()]
    }

    /// The maximum segment size option's value (kind 2, RFC 9293 3.7.1), if the
    /// options carry one; None for options that do not parse.
    pub fn mss_option(&self) -> Option<u16> {
        let at = mss_option_at(self.options())?;
        let o = self.options();
        Some(u16::from_be_bytes([o[at + 2], o[at + 3]]))
    }

    /// The sequence number after this segment: its data, SYN and FIN each count.
    pub fn seq_end(&self) -> u32 {
        let f = self.flags();
        self.seq()
            .wrapping_add(self.payload().len() as u32)
            .wrapping_add((f & SYN != 0) as u32)
            .wrapping_add((f & FIN != 0) as u32)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }

    pub fn set_src_port(&mut self, port: u16) {
        self.m()[0..2].copy_from_slice(&port.to_be_bytes());
    }

    pub fn set_dst_port(&mut self, port: u16) {
        self.m()[2..4].copy_from_slice(&port.to_be_bytes());
    }

    pub fn set_seq(&mut self, seq: u32) {
        self.m()[4..8].copy_from_slice(&seq.to_be_bytes());
    }

    pub fn set_flags(&mut self, flags: u8) {
        self.m()[13] = flags;
    }

    pub fn set_checksum(&mut self, check: u16) {
        self.m()[16..18].copy_from_slice(&check.to_be_bytes());
    }

    /// Sets the maximum segment size option to `mss`, if the segment has one; its
    /// old value. The checksum is left as it was (the caller's to fix, if anyone
    /// checks it).
    pub fn set_mss_option(&mut self, mss: u16) -> Option<u16> {
        let at = HEADER_LEN + mss_option_at(self.options())?;
        let b = self.m();
        let old = u16::from_be_bytes([b[at + 2], b[at + 3]]);
        b[at + 2..at + 4].copy_from_slice(&mss.to_be_bytes());
        Some(old)
    }
}

/// Where the MSS option (kind 2, length 4) starts in `options`: walks the
/// kind-length list (RFC 9293 3.1), stopping at End of Option List.
fn mss_option_at(options: &[u8]) -> Option<usize> {
    const END: u8 = 0;
    const NOP: u8 = 1;
    const MSS: u8 = 2;
    let mut at = 0;
    while at < options.len() {
        match options[at] {
            END => return None,
            NOP => at += 1,
            kind => {
                let len = *options.get(at + 1)? as usize;
                if len < 2 || at + len > options.len() {
                    return None;
                }
                if kind == MSS {
                    return (len == 4).then_some(at);
                }
                at += len;
            }
        }
    }
    None
}

/// A TCP header (no options) to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
}

impl TcpRepr {
    /// Writes the 20-byte header into the start of `buf`, its checksum zero (see
    /// [`super::fill_l4_checksum`]).
    ///
    /// # Panics
    /// If `buf` is shorter than 20 bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        let t = &mut buf[..HEADER_LEN];
        t.fill(0);
        t[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        t[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        t[4..8].copy_from_slice(&self.seq.to_be_bytes());
        t[8..12].copy_from_slice(&self.ack.to_be_bytes());
        t[12] = (HEADER_LEN as u8 / 4) << 4;
        t[13] = self.flags;
        t[14..16].copy_from_slice(&self.window.to_be_bytes());
    }
}

/// Writes an IPv4/TCP reset from `src` to `dst` with sequence number `seq` into `buf`
/// (RFC 9293 section 3.10.7: a reset in the window, ACK set with `ack`); returns its
/// length, or `None` if `buf` is too short.
pub fn emit_rst(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    buf: &mut [u8],
) -> Option<usize> {
    let total = IP_HEADER_LEN + HEADER_LEN;
    let buf = buf.get_mut(..total)?;
    Ipv4Repr {
        src: *src.ip(),
        dst: *dst.ip(),
        protocol: PROTO_TCP,
        ttl: 64,
        ident: 0,
        dont_frag: true,
        payload_len: HEADER_LEN,
    }
    .emit(buf);
    let t = &mut buf[IP_HEADER_LEN..];
    TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        seq,
        ack,
        flags: RST | ACK,
        window: 0,
    }
    .emit(t);
    super::fill_l4_checksum(*src.ip(), *dst.ip(), PROTO_TCP, t);
    Some(total)
}

/// Writes a TCP reset (RST and ACK, in the window of `seq`/`ack`) from `src` to `dst`
/// over IPv6 into `buf` (RFC 9293 section 3.5.2, RFC 8200): the fixed header and 20
/// bytes of TCP, checksum filled in. Its length, or None if `buf` is too short.
pub fn emit_rst6(
    src: std::net::SocketAddrV6,
    dst: std::net::SocketAddrV6,
    seq: u32,
    ack: u32,
    buf: &mut [u8],
) -> Option<usize> {
    use super::ipv6::HEADER_LEN as IP6_HEADER_LEN;
    let total = IP6_HEADER_LEN + HEADER_LEN;
    let buf = buf.get_mut(..total)?;
    super::icmpv6::Ipv6Repr {
        src: *src.ip(),
        dst: *dst.ip(),
        next_header: PROTO_TCP,
        hop_limit: 64,
        payload_len: HEADER_LEN,
    }
    .emit(buf);
    let t = &mut buf[IP6_HEADER_LEN..];
    TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        seq,
        ack,
        flags: RST | ACK,
        window: 0,
    }
    .emit(t);
    super::icmpv6::fill_l4_checksum6(*src.ip(), *dst.ip(), PROTO_TCP, t);
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum;
    use crate::wire::ipv4::Ipv4Packet;
    use crate::wire::pseudo_sum;

    #[test]
    fn a_reset_verifies_and_reads_back() {
        let (s, d): (SocketAddrV4, SocketAddrV4) = (
            "10.0.0.1:80".parse().unwrap(),
            "10.0.0.2:40000".parse().unwrap(),
        );
        let mut buf = [0u8; 64];
        let n = emit_rst(s, d, 1000, 2000, &mut buf).unwrap();
        let ip = Ipv4Packet::new_checked(&buf[..n]).unwrap();
        let t = TcpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(
            (t.src_port(), t.dst_port(), t.seq(), t.ack()),
            (80, 40000, 1000, 2000)
        );
        assert_eq!(t.flags(), RST | ACK);
        assert_eq!(t.seq_end(), 1000);
        let sum = checksum::sum_with(ip.payload(), pseudo_sum(*s.ip(), *d.ip(), 6, 20));
        assert_eq!(sum, 0xffff);
        assert!(TcpPacket::new_checked(&[0u8; 19][..]).is_none());
    }

    fn syn(options: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; HEADER_LEN];
        t[12] = (((HEADER_LEN + options.len()) / 4) as u8) << 4;
        t[13] = SYN;
        t.extend_from_slice(options);
        t
    }

    #[test]
    fn the_mss_option_is_found_and_set_among_others() {
        // NOP, NOP, timestamps (10 bytes), MSS 1460, window scale 7, NOP.
        let opts = [
            1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 2, 4, 0x05, 0xb4, 3, 3, 7, 1,
        ];
        let mut seg = syn(&opts);
        assert_eq!(
            TcpPacket::new_checked(&seg[..]).unwrap().mss_option(),
            Some(1460)
        );
        let mut t = TcpPacket::new_checked(&mut seg[..]).unwrap();
        assert_eq!(t.set_mss_option(65000), Some(1460));
        assert_eq!(t.mss_option(), Some(65000));
        assert_eq!(&seg[HEADER_LEN + 12..HEADER_LEN + 16], &[2, 4, 0xfd, 0xe8]);
    }

    #[test]
    fn options_without_a_whole_mss_are_left_alone() {
        for opts in [
            &[][..],
            &[1, 1, 1, 1],
            // After End of Option List; a wrong length; a zero one; one past the end.
            &[0, 0, 2, 4, 0x05, 0xb4, 0, 0],
            &[2, 3, 0x05, 0xb4],
            &[8, 0, 2, 4],
            &[8, 40, 2, 4],
        ] {
            let mut seg = syn(opts);
            let mut t = TcpPacket::new_checked(&mut seg[..]).unwrap();
            assert_eq!(t.mss_option(), None, "{opts:?}");
            assert_eq!(t.set_mss_option(1), None, "{opts:?}");
        }
    }
}
