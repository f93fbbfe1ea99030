//! IPv4 (RFC 791): a view over a header and its packet, an emitter, and fragmentation.

use std::net::Ipv4Addr;

use crate::checksum;

/// Bytes of a header without options.
pub const HEADER_LEN: usize = 20;
/// The don't-fragment and more-fragments flags, in the flags/offset word.
const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// Why bytes are not an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Error {
    /// Shorter than the header, or than the total length it claims.
    Truncated,
    /// Not version 4, or a header length under 20 or past the total length.
    Malformed,
}

/// A view over an IPv4 packet (header first). [`Ipv4Packet::new_checked`] makes sure
/// every accessor stays inside the buffer; the buffer may run past the total length
/// (Ethernet padding), and [`Ipv4Packet::packet`] gives the packet alone.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Checks the version, header length and total length against the buffer.
    pub fn new_checked(buf: T) -> Result<Ipv4Packet<T>, Ipv4Error> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Ipv4Error::Truncated);
        }
        let ihl = (b[0] & 0x0f) as usize * 4;
        let total = u16::from_be_bytes([b[2], b[3]]) as usize;
        if b[0] >> 4 != 4 || ihl < HEADER_LEN || total < ihl {
            return Err(Ipv4Error::Malformed);
        }
        if total > b.len() {
            return Err(Ipv4Error::Truncated);
        }
        Ok(Ipv4Packet { buf })
    }

    /// A view over the head of a packet quoted in an ICMP error: the header must be
    /// whole, the payload may be cut short ([`Ipv4Packet::payload`] gives what is
    /// there).
    pub fn new_quoted(buf: T) -> Result<Ipv4Packet<T>, Ipv4Error> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Ipv4Error::Truncated);
        }
        let ihl = (b[0] & 0x0f) as usize * 4;
        if b[0] >> 4 != 4 || ihl < HEADER_LEN {
            return Err(Ipv4Error::Malformed);
        }
        if ihl > b.len() {
            return Err(Ipv4Error::Truncated);
        }
        Ok(Ipv4Packet { buf })
    }

    /// A view with no checks, for a buffer known to hold a checked packet.
    pub fn new_unchecked(buf: T) -> Ipv4Packet<T> {
        Ipv4Packet { buf }
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    pub fn header_len(&self) -> usize {
        (self.b()[0] & 0x0f) as usize * 4
    }

    pub fn total_len(&self) -> usize {
        u16::from_be_bytes([self.b()[2], self.b()[3]]) as usize
    }

    pub fn ident(&self) -> u16 {
        u16::from_be_bytes([self.b()[4], self.b()[5]])
    }

    fn flags_offset(&self) -> u16 {
        u16::from_be_bytes([self.b()[6], self.b()[7]])
    }

    pub fn dont_frag(&self) -> bool {
        self.flags_offset() & FLAG_DF != 0
    }

    pub fn more_frags(&self) -> bool {
        self.flags_offset() & FLAG_MF != 0
    }

    /// The fragment's offset in the original datagram, in bytes.
    pub fn frag_offset(&self) -> usize {
        (self.flags_offset() & OFFSET_MASK) as usize * 8
    }

    /// A fragment: more to come, or not the first.
    pub fn is_fragment(&self) -> bool {
        self.flags_offset() & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// The type of service (DSCP and ECN) byte.
    pub fn tos(&self) -> u8 {
        self.b()[1]
    }

    pub fn ttl(&self) -> u8 {
        self.b()[8]
    }

    pub fn protocol(&self) -> u8 {
        self.b()[9]
    }

    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.b()[10], self.b()[11]])
    }

    pub fn src(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }

    pub fn dst(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }

    pub fn verify_checksum(&self) -> bool {
        checksum::sum(&self.b()[..self.header_len()]) == 0xffff
    }

    /// The header, options included.
    pub fn header(&self) -> &[u8] {
        &self.b()[..self.header_len()]
    }

    /// What follows the header, up to the total length (or the end of a quote).
    pub fn payload(&self) -> &[u8] {
        let end = self.total_len().min(self.b().len());
        &self.b()[self.header_len().min(end)..end]
    }

    /// Header and payload, without what pads the buffer past the total length.
    pub fn packet(&self) -> &[u8] {
        &self.b()[..self.total_len()]
    }
}

impl<'a> Ipv4Packet<&'a [u8]> {
    /// The payload, borrowed for as long as the buffer (not the view).
    pub fn into_payload(self) -> &'a [u8] {
        let (start, end) = {
            let p = self.payload();
            let base = self.buf.as_ptr() as usize;
            (
                p.as_ptr() as usize - base,
                p.as_ptr() as usize - base + p.len(),
            )
        };
        &self.buf[start..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }

    /// Sets the TTL, updating the header checksum incrementally (RFC 1624).
    pub fn set_ttl(&mut self, ttl: u8) {
        let (old, proto) = (self.ttl(), self.protocol());
        let c = checksum::update16(
            self.checksum(),
            u16::from_be_bytes([old, proto]),
            u16::from_be_bytes([ttl, proto]),
        );
        let b = self.m();
        b[8] = ttl;
        b[10..12].copy_from_slice(&c.to_be_bytes());
    }

    /// Recomputes the header checksum.
    pub fn fill_checksum(&mut self) {
        let ihl = self.header_len();
        let b = self.m();
        b[10..12].fill(0);
        let c = checksum::checksum(&b[..ihl]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
    }

    pub fn set_src(&mut self, ip: Ipv4Addr) {
        self.m()[12..16].copy_from_slice(&ip.octets());
    }

    pub fn set_dst(&mut self, ip: Ipv4Addr) {
        self.m()[16..20].copy_from_slice(&ip.octets());
    }

    pub fn set_ident(&mut self, ident: u16) {
        self.m()[4..6].copy_from_slice(&ident.to_be_bytes());
    }

    pub fn set_checksum(&mut self, check: u16) {
        self.m()[10..12].copy_from_slice(&check.to_be_bytes());
    }

    /// The header, options included, to write.
    pub fn header_mut(&mut self) -> &mut [u8] {
        let ihl = self.header_len();
        &mut self.m()[..ihl]
    }

    /// Sets the total length (header and payload, bytes); the checksum is left to
    /// [`Ipv4Packet::fill_checksum`].
    pub fn set_total_len(&mut self, len: u16) {
        self.m()[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Makes the packet a fragment at `offset` bytes (a multiple of 8) with or without
    /// more to come, or with (0, false) a whole datagram again; DF is kept. The
    /// checksum is left to [`Ipv4Packet::fill_checksum`].
    pub fn set_fragment(&mut self, offset: usize, more: bool) {
        let word = (self.flags_offset() & FLAG_DF)
            | ((offset / 8) as u16 & OFFSET_MASK)
            | if more { FLAG_MF } else { 0 };
        self.m()[6..8].copy_from_slice(&word.to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (ihl, total) = (self.header_len(), self.total_len());
        &mut self.m()[ihl..total]
    }
}

/// An IPv4 header to emit (no options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub ident: u16,
    pub dont_frag: bool,
    /// Bytes after the header.
    pub payload_len: usize,
}

impl Ipv4Repr {
    /// Writes the 20-byte header, checksummed, into the start of `buf`.
    ///
    /// # Panics
    /// If `buf` is shorter than 20 bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        let h = &mut buf[..HEADER_LEN];
        h[0] = 0x45;
        h[1] = 0;
        h[2..4].copy_from_slice(&((HEADER_LEN + self.payload_len) as u16).to_be_bytes());
        h[4..6].copy_from_slice(&self.ident.to_be_bytes());
        h[6..8].copy_from_slice(&(if self.dont_frag { FLAG_DF } else { 0 }).to_be_bytes());
        h[8] = self.ttl;
        h[9] = self.protocol;
        h[10..12].fill(0);
        h[12..16].copy_from_slice(&self.src.octets());
        h[16..20].copy_from_slice(&self.dst.octets());
        let c = checksum::checksum(h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
    }
}

/// Cuts `packet` (a whole IPv4 packet, or itself a fragment) into fragments of at most
/// `mtu` bytes (RFC 791 section 3.2): each fragment's payload but the last a multiple
/// of 8 bytes, MF on all but the last (and on the last if `packet` had it), offsets
/// counted from the original datagram, only the options marked "copied" repeated
/// after the first. `emit` gets each fragment's header and payload part, in order.
/// Returns the count, or `None` (and emits nothing) if `packet` is not a valid
/// packet or `mtu` leaves no room for 8 bytes of payload.
pub fn fragment(packet: &[u8], mtu: usize, mut emit: impl FnMut(&[u8], &[u8])) -> Option<usize> {
    let p = Ipv4Packet::new_checked(packet).ok()?;
    let ihl = p.header_len();
    let mut first = [0u8; 60];
    first[..ihl].copy_from_slice(p.header());
    // Options copied into later fragments (the copy bit set), padded to 4 bytes.
    let mut later = [0u8; 60];
    later[..HEADER_LEN].copy_from_slice(&first[..HEADER_LEN]);
    let mut later_len = HEADER_LEN;
    let mut o = HEADER_LEN;
    while o < ihl {
        match first[o] {
            0 => break, // end of options
            1 => o += 1,
            kind => {
                let len = (*first.get(o + 1)? as usize).max(2);
                if o + len > ihl {
                    return None;
                }
                if kind & 0x80 != 0 {
                    later[later_len..later_len + len].copy_from_slice(&first[o..o + len]);
                    later_len += len;
                }
                o += len;
            }
        }
    }
    let later_len = later_len.div_ceil(4) * 4;
    later[0] = 0x40 | (later_len / 4) as u8;
    let payload = p.payload();
    let base = p.frag_offset();
    let last_mf = p.more_frags();
    let mut at = 0;
    let mut count = 0;
    while at < payload.len() || count == 0 {
        let (hdr, hlen) = if count == 0 {
            (&mut first, ihl)
        } else {
            (&mut later, later_len)
        };
        let room = mtu.checked_sub(hlen)? / 8 * 8;
        if room == 0 {
            return None;
        }
        let end = (at + room).min(payload.len());
        let mf = end < payload.len() || last_mf;
        let offset = ((base + at) / 8) as u16;
        let word = (offset & OFFSET_MASK) | if mf { FLAG_MF } else { 0 };
        let h = &mut hdr[..hlen];
        h[2..4].copy_from_slice(&((hlen + end - at) as u16).to_be_bytes());
        h[6..8].copy_from_slice(&word.to_be_bytes());
        h[10..12].fill(0);
        let c = checksum::checksum(h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        emit(h, &payload[at..end]);
        count += 1;
        at = end;
    }
    Some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(payload: usize, df: bool) -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN + payload];
        Ipv4Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 1, 2),
            protocol: 17,
            ttl: 64,
            ident: 0x1234,
            dont_frag: df,
            payload_len: payload,
        }
        .emit(&mut p);
        for (i, b) in p[HEADER_LEN..].iter_mut().enumerate() {
            *b = i as u8;
        }
        p
    }

    #[test]
    fn emit_then_view() {
        let p = packet(100, true);
        let v = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert_eq!(v.total_len(), 120);
        assert!(v.dont_frag() && !v.is_fragment());
        assert!(v.verify_checksum());
        assert_eq!(v.src(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(v.payload().len(), 100);
    }

    #[test]
    fn bad_headers_are_refused() {
        let p = packet(10, false);
        for n in 0..p.len() {
            assert!(Ipv4Packet::new_checked(&p[..n]).is_err(), "{n}");
        }
        let mut v6 = p.clone();
        v6[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&v6[..]).unwrap_err(),
            Ipv4Error::Malformed
        );
        let mut short_ihl = p.clone();
        short_ihl[0] = 0x44;
        assert!(Ipv4Packet::new_checked(&short_ihl[..]).is_err());
    }

    #[test]
    fn set_ttl_keeps_the_checksum_right() {
        let mut p = packet(10, false);
        let mut v = Ipv4Packet::new_unchecked(&mut p[..]);
        v.set_ttl(1);
        assert!(v.verify_checksum());
        assert_eq!(v.ttl(), 1);
    }

    /// Reassembles fragments the simple way, for checking.
    fn join(frags: &[Vec<u8>]) -> Vec<u8> {
        let mut out = vec![];
        for f in frags {
            let v = Ipv4Packet::new_checked(&f[..]).unwrap();
            assert!(v.verify_checksum());
            let at = v.frag_offset();
            if out.len() < at + v.payload().len() {
                out.resize(at + v.payload().len(), 0);
            }
            out[at..at + v.payload().len()].copy_from_slice(v.payload());
        }
        out
    }

    #[test]
    fn a_packet_is_cut_into_fragments_that_fit() {
        let p = packet(4000, false);
        let mut frags = Vec::new();
        let n = fragment(&p, 1500, |h, pl| frags.push([h, pl].concat())).unwrap();
        assert_eq!(n, 3);
        for (i, f) in frags.iter().enumerate() {
            let v = Ipv4Packet::new_checked(&f[..]).unwrap();
            assert!(f.len() <= 1500);
            assert_eq!(v.more_frags(), i < 2);
            assert_eq!(v.ident(), 0x1234);
            if i < 2 {
                assert_eq!(v.payload().len() % 8, 0);
            }
        }
        assert_eq!(join(&frags), p[HEADER_LEN..].to_vec());
    }

    #[test]
    fn a_fragment_cut_again_keeps_its_offset_and_more_fragments() {
        let p = packet(3000, false);
        let mut frags = Vec::new();
        fragment(&p, 1500, |h, pl| frags.push([h, pl].concat())).unwrap();
        let mut small = Vec::new();
        for f in &frags {
            fragment(f, 576, |h, pl| small.push([h, pl].concat())).unwrap();
        }
        assert!(small.len() > frags.len());
        assert!(small.iter().all(|f| f.len() <= 576));
        let last = Ipv4Packet::new_checked(&small.last().unwrap()[..]).unwrap();
        assert!(!last.more_frags());
        let mids = small[..small.len() - 1]
            .iter()
            .all(|f| Ipv4Packet::new_checked(&f[..]).unwrap().more_frags());
        assert!(mids);
        assert_eq!(join(&small), p[HEADER_LEN..].to_vec());
    }

    #[test]
    fn only_copied_options_are_repeated() {
        // Header with options: a copied one (0x83, loose source route, 7 bytes) and a
        // non-copied one (0x07, record route, 7 bytes), then end of list and padding.
        let mut p = vec![0u8; 36 + 2000];
        p[0] = 0x49;
        p[2..4].copy_from_slice(&(2036u16).to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[20..27].copy_from_slice(&[0x83, 7, 4, 1, 2, 3, 4]);
        p[27..34].copy_from_slice(&[0x07, 7, 4, 5, 6, 7, 8]);
        let mut frags = Vec::new();
        fragment(&p, 1000, |h, pl| frags.push((h.to_vec(), pl.len()))).unwrap();
        assert_eq!(frags[0].0.len(), 36);
        assert_eq!(frags[1].0.len(), 28);
        assert_eq!(&frags[1].0[20..27], &[0x83, 7, 4, 1, 2, 3, 4]);
        assert_eq!(frags.iter().map(|f| f.1).sum::<usize>(), 2000);
    }

    #[test]
    fn no_room_is_refused() {
        assert!(fragment(&packet(100, false), 24, |_, _| {}).is_none());
        assert!(fragment(&[0x45, 0, 0], 1500, |_, _| {}).is_none());
    }
}
