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

    /// A view over the head of a packet whose payload may be cut short (quoted in an
    /// ICMPv6 error, RFC 4443 section 2.4 (c), or a GRO run's first headers): the
    /// fixed header must be whole;
    /// [`Ipv6Packet::payload`] gives what is there.
    pub fn new_quoted(buf: T) -> Option<Ipv6Packet<T>> {
        let b = buf.as_ref();
        (b.len() >= HEADER_LEN && b[0] >> 4 == 6).then_some(Ipv6Packet { buf })
    }

    pub fn payload_len(&self) -> usize {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[4], b[5]]) as usize
    }

    /// The traffic class (DSCP and ECN), RFC 8200 section 7.
    pub fn traffic_class(&self) -> u8 {
        let b = self.buf.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }

    /// The 20-bit flow label, RFC 8200 section 6.
    pub fn flow_label(&self) -> u32 {
        let b = self.buf.as_ref();
        u32::from_be_bytes([0, b[1] & 0x0f, b[2], b[3]])
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

    /// The payload (for a quoted packet, [`Ipv6Packet::new_quoted`], what of it the
    /// quote holds).
    pub fn payload(&self) -> &[u8] {
        let b = self.buf.as_ref();
        &b[HEADER_LEN..(HEADER_LEN + self.payload_len()).min(b.len())]
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

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets the hop limit (IPv6 has no header checksum to mend).
    pub fn set_hop_limit(&mut self, hops: u8) {
        self.buf.as_mut()[7] = hops;
    }

    /// Sets the payload length (bytes after the fixed header). The caller keeps it
    /// within the buffer (GRO grows a packet, then says so).
    pub fn set_payload_len(&mut self, len: u16) {
        self.buf.as_mut()[4..6].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the source address (no header checksum; an upper-layer checksum covers
    /// it through the pseudo-header, RFC 8200 section 8.1: the caller mends that).
    pub fn set_src(&mut self, ip: Ipv6Addr) {
        self.buf.as_mut()[8..24].copy_from_slice(&ip.octets());
    }

    /// Sets the destination address (see [`Ipv6Packet::set_src`]).
    pub fn set_dst(&mut self, ip: Ipv6Addr) {
        self.buf.as_mut()[24..40].copy_from_slice(&ip.octets());
    }

    /// The payload, to rewrite in place.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.buf.as_ref().len().min(HEADER_LEN + self.payload_len());
        &mut self.buf.as_mut()[HEADER_LEN..end]
    }
}

/// The network address of `ip` under a /`prefix` (0 to 128; more is taken as 128).
pub fn network(ip: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let mask = u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0);
    Ipv6Addr::from(u128::from(ip) & mask)
}

/// Whether `ip` is inside `net`/`prefix` (`net` may have host bits: they are ignored).
pub fn in_prefix(ip: Ipv6Addr, net: Ipv6Addr, prefix: u8) -> bool {
    network(ip, prefix) == network(net, prefix)
}

/// Extension headers read through at most (RFC 8200 section 4 puts no limit; a router
/// that reads them must): a routed packet with a longer chain (or one cut short) is
/// dropped, so that no one can make the hosts behind the router walk an endless one.
pub const MAX_EXT_HEADERS: usize = 8;

/// One step through an extension header chain: the header `next` at the start of
/// `rest`, its length in bytes (hop-by-hop, routing, destination options: in 8 bytes,
/// less one; fragment: 8; authentication: in 4 bytes, less two) and the next header
/// after it. None if `next` is not an extension header, or it is cut short.
fn ext_step(next: u8, rest: &[u8]) -> Option<(usize, u8)> {
    let len = match next {
        0 | 43 | 60 => 8 * (usize::from(*rest.get(1)?) + 1),
        44 => 8,
        51 => 4 * (usize::from(*rest.get(1)?) + 2),
        _ => return None,
    };
    (len <= rest.len()).then(|| (len, rest[0]))
}

fn is_extension(next: u8) -> bool {
    matches!(next, 0 | 43 | 60 | 44 | 51)
}

/// The upper-layer protocol and its bytes behind the extension headers from `next` on
/// (at most [`MAX_EXT_HEADERS`] read); None if one is cut short, the chain is
/// longer, or a fragment header hides what follows.
pub fn upper_layer(mut next: u8, mut rest: &[u8]) -> Option<(u8, &[u8])> {
    for _ in 0..MAX_EXT_HEADERS {
        if !is_extension(next) {
            return Some((next, rest));
        }
        if next == 44 {
            return None;
        }
        let (len, after) = ext_step(next, rest)?;
        next = after;
        rest = &rest[len..];
    }
    (!is_extension(next)).then_some((next, rest))
}

/// Whether the extension headers from `next` on are whole and at most
/// [`MAX_EXT_HEADERS`]; behind a fragment other than the first, nothing more is read.
pub fn ext_chain_ok(mut next: u8, mut rest: &[u8]) -> bool {
    for _ in 0..=MAX_EXT_HEADERS {
        if !is_extension(next) {
            return true;
        }
        if next == 44 {
            // The fragment offset, in 8-byte units: a later fragment carries no header.
            let later = rest
                .get(2..4)
                .is_some_and(|b| u16::from_be_bytes([b[0], b[1]]) >> 3 != 0);
            if later {
                return rest.len() >= 8;
            }
        }
        let Some((len, after)) = ext_step(next, rest) else {
            return false;
        };
        next = after;
        rest = &rest[len..];
    }
    false
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

    #[test]
    fn prefixes_from_0_to_128() {
        let a: Ipv6Addr = "fd00:1:2:3:4:5:6:7".parse().unwrap();
        assert_eq!(network(a, 64), "fd00:1:2:3::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(network(a, 0), Ipv6Addr::UNSPECIFIED);
        assert_eq!(network(a, 128), a);
        assert_eq!(network(a, 200), a);
        assert!(in_prefix(a, "fd00:1:2:3::1".parse().unwrap(), 64));
        assert!(!in_prefix(a, "fd00:1:2:4::".parse().unwrap(), 64));
        assert!(in_prefix(a, "::".parse().unwrap(), 0));
    }
}
