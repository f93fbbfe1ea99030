//! IPv6 (RFC 8200): a view over the fixed header. (Extension headers and an emitter
//! come with IPv6 routing.)

use std::net::Ipv6Addr;

/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 40;

/// A view over an IPv6 packet (fixed header first), its payload length checked
/// against the buffer.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub fn new_checked(buf: T) -> Option<Ipv6Packet<T>> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN || b[0] >> 4 != 6 {
            return None;
        }
        let plen = u16::from_be_bytes([b[4], b[5]]) as usize;
        (HEADER_LEN + plen <= b.len()).then_some(Ipv6Packet { buf })
    }

    pub fn payload_len(&self) -> usize {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[4], b[5]]) as usize
    }

    pub fn next_header(&self) -> u8 {
        self.buf.as_ref()[6]
    }

    pub fn hop_limit(&self) -> u8 {
        self.buf.as_ref()[7]
    }

    pub fn src(&self) -> Ipv6Addr {
        let b: [u8; 16] = self.buf.as_ref()[8..24].try_into().expect("checked length");
        Ipv6Addr::from(b)
    }

    pub fn dst(&self) -> Ipv6Addr {
        let b: [u8; 16] = self.buf.as_ref()[24..40]
            .try_into()
            .expect("checked length");
        Ipv6Addr::from(b)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..HEADER_LEN + self.payload_len()]
    }
}

impl<'a> Ipv6Packet<&'a [u8]> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_checks_version_and_length() {
        let mut p = [0u8; 48];
        p[0] = 0x60;
        p[5] = 8;
        p[6] = 17;
        p[7] = 64;
        let v = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(
            (v.payload_len(), v.next_header(), v.hop_limit()),
            (8, 17, 64)
        );
        assert_eq!(v.payload().len(), 8);
        assert!(Ipv6Packet::new_checked(&p[..47]).is_none());
        p[0] = 0x40;
        assert!(Ipv6Packet::new_checked(&p[..]).is_none());
    }
}
