//! ICMPv6 (RFC 4443) and the neighbour discovery messages a router answers and sends
//! (RFC 4861): a view with `new_checked`, the checksum over the IPv6 pseudo-header,
//! and emitters for an IPv6 header, a neighbour advertisement and a router
//! advertisement.

use std::net::Ipv6Addr;

use super::checksum;
use crate::Mac;

/// IPv6 next header: ICMPv6.
pub const NEXT_HEADER: u8 = 58;
/// Error messages (RFC 4443 section 3) and destination unreachable's codes.
pub const DST_UNREACHABLE: u8 = 1;
pub const PACKET_TOO_BIG: u8 = 2;
pub const TIME_EXCEEDED: u8 = 3;
pub const UNREACH_NO_ROUTE: u8 = 0;
pub const UNREACH_ADMIN_PROHIBITED: u8 = 1;
pub const UNREACH_ADDRESS: u8 = 3;
pub const UNREACH_PORT: u8 = 4;
pub const ECHO_REQUEST: u8 = 128;
pub const ECHO_REPLY: u8 = 129;
pub const ROUTER_SOLICIT: u8 = 133;
pub const ROUTER_ADVERT: u8 = 134;
pub const NEIGHBOR_SOLICIT: u8 = 135;
pub const NEIGHBOR_ADVERT: u8 = 136;
pub const REDIRECT: u8 = 137;
/// Neighbour discovery options (RFC 4861 section 4.6).
pub const OPT_SOURCE_LLADDR: u8 = 1;
pub const OPT_TARGET_LLADDR: u8 = 2;
pub const OPT_PREFIX_INFO: u8 = 3;
pub const OPT_MTU: u8 = 5;
/// Recursive DNS server option (RFC 8106 section 5.1).
pub const OPT_RDNSS: u8 = 25;
/// DNS servers one advertisement names at most (what a lab's `dns6` may list; the
/// option itself takes more, but the router's frames are small).
pub const RDNSS_MAX: usize = 3;
/// The hop limit every neighbour discovery message must carry (RFC 4861 section 6.1):
/// one from anywhere else was forwarded, and is dropped.
pub const ND_HOP_LIMIT: u8 = 255;
/// A neighbour solicitation or advertisement without options.
pub const NS_LEN: usize = 24;
/// A neighbour advertisement with its target link-layer address option.
pub const NA_LEN: usize = 32;
/// A router advertisement with source link-layer address, MTU and one prefix
/// information option (an RDNSS option comes on top: [`RaRepr::len`]).
pub const RA_LEN: usize = 16 + 8 + 8 + 32;

/// An ICMPv6 message: at least its 4-byte header.
#[derive(Debug, Clone, Copy)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    pub fn new_checked(buf: T) -> Option<Icmpv6Packet<T>> {
        (buf.as_ref().len() >= 4).then_some(Icmpv6Packet { buf })
    }

    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[0]
    }

    pub fn code(&self) -> u8 {
        self.buf.as_ref()[1]
    }

    /// An echo request's or reply's identifier and sequence number (RFC 4443
    /// section 4), if the message is long enough to hold them.
    pub fn echo_ident_seq(&self) -> Option<(u16, u16)> {
        let b = self.buf.as_ref().get(4..8)?;
        Some((
            u16::from_be_bytes([b[0], b[1]]),
            u16::from_be_bytes([b[2], b[3]]),
        ))
    }

    /// What follows the 8-byte header (an echo's data, an error's quote).
    pub fn body(&self) -> &[u8] {
        self.buf.as_ref().get(8..).unwrap_or_default()
    }

    /// Whether the checksum is right for a message from `src` to `dst`.
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        checksum_of(src, dst, self.buf.as_ref()) == 0
    }

    /// A solicitation's or advertisement's target address (bytes 8 to 24), if the
    /// message is long enough to hold one.
    pub fn nd_target(&self) -> Option<Ipv6Addr> {
        let b: [u8; 16] = self.buf.as_ref().get(8..24)?.try_into().ok()?;
        Some(Ipv6Addr::from(b))
    }

    /// Whether the neighbour discovery options from byte `at` on are well formed: each
    /// of a length (in 8 bytes) of at least 1, none past the end (RFC 4861 section
    /// 4.6: an option of length 0 makes the message invalid).
    pub fn nd_options_valid(&self, at: usize) -> bool {
        let b = self.buf.as_ref();
        let mut i = at;
        while i < b.len() {
            let Some(&len) = b.get(i + 1) else {
                return false;
            };
            if len == 0 {
                return false;
            }
            i += 8 * len as usize;
        }
        i == b.len()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Sets the message type (its checksum is then to be filled again).
    pub fn set_msg_type(&mut self, kind: u8) {
        self.buf.as_mut()[0] = kind;
    }
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// The link-layer addresses in the neighbour discovery options from byte `at` on
    /// (source and target link-layer address options), or None if an option is cut
    /// short, of length 0, or a link-layer option shorter than a MAC.
    pub fn nd_lladdrs(&self, at: usize) -> Option<Vec<Mac>> {
        let b = self.buf.as_ref();
        let mut out = Vec::new();
        let mut i = at;
        while i < b.len() {
            let (kind, len) = (*b.get(i)?, 8 * usize::from(*b.get(i + 1)?));
            if len == 0 || i + len > b.len() {
                return None;
            }
            if kind == OPT_SOURCE_LLADDR || kind == OPT_TARGET_LLADDR {
                out.push(Mac(b.get(i + 2..i + 8)?.try_into().ok()?));
            }
            i += len;
        }
        Some(out)
    }
}

/// Writes ICMPv6 error `kind`/`code` with `param` (the MTU of packet too big, the
/// pointer of a parameter problem) quoting `original` into `buf` (at least 8 +
/// `original.len()` bytes), its checksum left to [`fill_checksum`].
pub fn emit_error(buf: &mut [u8], kind: u8, code: u8, param: u32, original: &[u8]) {
    let b = &mut buf[..8 + original.len()];
    b[..4].copy_from_slice(&[kind, code, 0, 0]);
    b[4..8].copy_from_slice(&param.to_be_bytes());
    b[8..].copy_from_slice(original);
}

/// The packet an ICMPv6 error (`msg`: the message, type first) quotes, to rewrite in
/// place (RFC 4443 section 2.4 (c)); empty if `msg` is shorter than an error's header.
pub fn error_quote_mut(msg: &mut [u8]) -> &mut [u8] {
    msg.get_mut(8..).unwrap_or_default()
}

/// The ICMPv6 checksum of `msg` (its checksum field included: 0 when it is right)
/// with the IPv6 pseudo-header of `src`, `dst` (RFC 8200 section 8.1).
pub fn checksum_of(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut pseudo = [0u8; 40];
    pseudo[..16].copy_from_slice(&src.octets());
    pseudo[16..32].copy_from_slice(&dst.octets());
    pseudo[32..36].copy_from_slice(&(msg.len() as u32).to_be_bytes());
    pseudo[39] = NEXT_HEADER;
    let acc = u32::from(checksum::sum(&pseudo)) + u32::from(checksum::sum(msg));
    !checksum::fold(acc)
}

/// The checksum of a TCP or UDP segment (`proto` 6 or 17) over IPv6, filled in at its
/// field (the field zeroed first): false for another protocol or a segment too short.
pub fn fill_l4_checksum6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, segment: &mut [u8]) -> bool {
    let field = match proto {
        6 => 16,
        17 => 6,
        _ => return false,
    };
    if segment.len() < field + 2 {
        return false;
    }
    segment[field..field + 2].fill(0);
    let mut pseudo = [0u8; 40];
    pseudo[..16].copy_from_slice(&src.octets());
    pseudo[16..32].copy_from_slice(&dst.octets());
    pseudo[32..36].copy_from_slice(&(segment.len() as u32).to_be_bytes());
    pseudo[39] = proto;
    let acc = u32::from(checksum::sum(&pseudo)) + u32::from(checksum::sum(segment));
    let mut c = !checksum::fold(acc);
    if proto == 17 && c == 0 {
        // UDP over IPv6 never sends zero (RFC 8200 section 8.1).
        c = 0xffff;
    }
    segment[field..field + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// Fills in the checksum of `msg` (an ICMPv6 message from `src` to `dst`).
pub fn fill_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &mut [u8]) {
    if msg.len() < 4 {
        return;
    }
    msg[2..4].fill(0);
    let c = checksum_of(src, dst, msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
}

/// The most of an offending packet an ICMPv6 error quotes: all of it that keeps the
/// error within the minimum IPv6 MTU, 1280 bytes (RFC 4443 section 2.4 (c)).
pub const MAX_QUOTE: usize = 1280 - super::ipv6::HEADER_LEN - 8;

/// The part of `packet` an ICMPv6 error about it quotes ([`MAX_QUOTE`] bytes at most).
pub fn quote(packet: &[u8]) -> &[u8] {
    &packet[..packet.len().min(MAX_QUOTE)]
}

/// Writes a whole IPv6 packet carrying an ICMPv6 message from `src` to `dst` into
/// `buf`: `kind`, `code`, the 4 bytes after the checksum (`rest`: an echo's identifier
/// and sequence number, an error's MTU or pointer), then `data`; checksummed. Returns
/// its length, or `None` if `buf` is too short or the message too long.
#[allow(clippy::too_many_arguments)]
pub fn emit_packet(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    kind: u8,
    code: u8,
    rest: [u8; 4],
    data: &[u8],
    buf: &mut [u8],
) -> Option<usize> {
    let len = 8 + data.len();
    if len > 65535 {
        return None;
    }
    let total = super::ipv6::HEADER_LEN + len;
    let buf = buf.get_mut(..total)?;
    Ipv6Repr {
        src,
        dst,
        next_header: NEXT_HEADER,
        hop_limit,
        payload_len: len,
    }
    .emit(buf);
    let msg = &mut buf[super::ipv6::HEADER_LEN..];
    msg[..4].copy_from_slice(&[kind, code, 0, 0]);
    msg[4..8].copy_from_slice(&rest);
    msg[8..].copy_from_slice(data);
    fill_checksum(src, dst, msg);
    Some(total)
}

/// An IPv6 header to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub hop_limit: u8,
    pub payload_len: usize,
}

impl Ipv6Repr {
    /// Writes the 40-byte header into the start of `buf`.
    ///
    /// # Panics
    /// If `buf` is shorter than 40 bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..super::ipv6::HEADER_LEN];
        b[..4].copy_from_slice(&[0x60, 0, 0, 0]);
        b[4..6].copy_from_slice(&(self.payload_len as u16).to_be_bytes());
        b[6] = self.next_header;
        b[7] = self.hop_limit;
        b[8..24].copy_from_slice(&self.src.octets());
        b[24..40].copy_from_slice(&self.dst.octets());
    }
}

/// The Ethernet address an IPv6 multicast group maps to (RFC 2464 section 7).
pub fn multicast_mac(group: Ipv6Addr) -> Mac {
    let o = group.octets();
    Mac([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// The all-nodes group, ff02::1.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The link-local address of an interface with `mac` (modified EUI-64, RFC 4291
/// appendix A).
pub fn link_local(mac: Mac) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

/// Writes a neighbour advertisement for `target` at `mac` into `buf` (at least
/// [`NA_LEN`] bytes), its checksum left to [`fill_checksum`]: router flag, solicited
/// and override as asked (RFC 4861 section 4.4: no override for an address others
/// may answer for too, an anycast one, section 7.2.7), and the target link-layer
/// address option.
pub fn emit_na(buf: &mut [u8], target: Ipv6Addr, mac: Mac, solicited: bool, overrides: bool) {
    let b = &mut buf[..NA_LEN];
    b.fill(0);
    b[0] = NEIGHBOR_ADVERT;
    b[4] = 0x80 | if solicited { 0x40 } else { 0 } | if overrides { 0x20 } else { 0 };
    b[8..24].copy_from_slice(&target.octets());
    b[24] = OPT_TARGET_LLADDR;
    b[25] = 1;
    b[26..32].copy_from_slice(&mac.0);
}

/// Writes a neighbour solicitation for `target` from `mac` into `buf` (at least
/// [`NS_LEN`] + 8 bytes: with the source link-layer address option), its checksum
/// left to [`fill_checksum`].
pub fn emit_ns(buf: &mut [u8], target: Ipv6Addr, mac: Mac) {
    let b = &mut buf[..NS_LEN + 8];
    b.fill(0);
    b[0] = NEIGHBOR_SOLICIT;
    b[8..24].copy_from_slice(&target.octets());
    b[24] = OPT_SOURCE_LLADDR;
    b[25] = 1;
    b[26..32].copy_from_slice(&mac.0);
}

/// What a router advertisement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaRepr {
    pub mac: Mac,
    pub mtu: u32,
    pub prefix: Ipv6Addr,
    pub prefix_len: u8,
    /// Hosts may autoconfigure from the prefix (the A flag; only a /64 does).
    pub autonomous: bool,
    /// Seconds this router is a default router (0: not one).
    pub router_lifetime: u16,
    /// Recursive DNS servers to name in an RDNSS option (RFC 8106), in order; none:
    /// no option.
    pub rdnss: [Option<Ipv6Addr>; RDNSS_MAX],
    /// Seconds hosts may use the servers (RFC 8106 section 5.1: at least three times
    /// the longest interval between advertisements).
    pub rdnss_lifetime: u32,
}

/// The prefix's lifetimes: valid a day, preferred four hours (RFC 4861's defaults
/// are 30 days and 7; a lab is shorter lived).
const VALID_LIFETIME: u32 = 86_400;
const PREFERRED_LIFETIME: u32 = 14_400;

impl RaRepr {
    /// The advertisement's length, bytes: [`RA_LEN`], and 8 + 16 per server of an
    /// RDNSS option when there is one.
    pub fn len(&self) -> usize {
        let n = self.rdnss.iter().flatten().count();
        RA_LEN + if n == 0 { 0 } else { 8 + 16 * n }
    }

    /// Never: an advertisement has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the advertisement into `buf` (at least [`RaRepr::len`] bytes), its
    /// checksum left to [`fill_checksum`].
    ///
    /// # Panics
    /// If `buf` is shorter than [`RaRepr::len`].
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..self.len()];
        b.fill(0);
        b[0] = ROUTER_ADVERT;
        b[4] = 64; // current hop limit for the hosts
        b[6..8].copy_from_slice(&self.router_lifetime.to_be_bytes());
        // Source link-layer address.
        b[16] = OPT_SOURCE_LLADDR;
        b[17] = 1;
        b[18..24].copy_from_slice(&self.mac.0);
        // MTU.
        b[24] = OPT_MTU;
        b[25] = 1;
        b[28..32].copy_from_slice(&self.mtu.to_be_bytes());
        // Prefix information: on-link, and autonomous where it can be.
        b[32] = OPT_PREFIX_INFO;
        b[33] = 4;
        b[34] = self.prefix_len;
        b[35] = 0x80 | if self.autonomous { 0x40 } else { 0 };
        b[36..40].copy_from_slice(&VALID_LIFETIME.to_be_bytes());
        b[40..44].copy_from_slice(&PREFERRED_LIFETIME.to_be_bytes());
        b[48..64].copy_from_slice(&self.prefix.octets());
        // Recursive DNS servers (RFC 8106 section 5.1): its length in 8 bytes is
        // 1 + 2 per address.
        let n = self.rdnss.iter().flatten().count();
        if n > 0 {
            let o = &mut b[RA_LEN..];
            o[0] = OPT_RDNSS;
            o[1] = (1 + 2 * n) as u8;
            o[4..8].copy_from_slice(&self.rdnss_lifetime.to_be_bytes());
            for (i, a) in self.rdnss.iter().flatten().enumerate() {
                o[8 + 16 * i..24 + 16 * i].copy_from_slice(&a.octets());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify_and_link_locals_follow_eui64() {
        let (src, dst) = ("fe80::1".parse().unwrap(), "fe80::2".parse().unwrap());
        let mut na = [0u8; NA_LEN];
        emit_na(
            &mut na,
            "fd00::1".parse().unwrap(),
            Mac([2, 0, 0, 0, 0, 1]),
            true,
            true,
        );
        fill_checksum(src, dst, &mut na);
        let v = Icmpv6Packet::new_checked(&na[..]).unwrap();
        assert!(v.verify_checksum(src, dst));
        assert!(!v.verify_checksum(dst, dst));
        assert!(v.nd_options_valid(NS_LEN));
        assert_eq!(v.nd_target(), Some("fd00::1".parse().unwrap()));
        assert_eq!(
            link_local(Mac([0x02, 0x00, 0xac, 0x10, 0x01, 0x02])),
            "fe80::acff:fe10:102".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            multicast_mac("ff02::1:ff10:102".parse().unwrap()),
            Mac([0x33, 0x33, 0xff, 0x10, 0x01, 0x02])
        );
        // An option of length 0 makes neighbour discovery invalid.
        let mut bad = na;
        bad[25] = 0;
        assert!(!Icmpv6Packet::new_checked(&bad[..])
            .unwrap()
            .nd_options_valid(NS_LEN));
    }

    #[test]
    fn an_advertisement_carries_its_dns_servers() {
        let dns: [Ipv6Addr; 2] = [
            "fd00:16:1::53".parse().unwrap(),
            "2001:db8::35".parse().unwrap(),
        ];
        let mut ra = RaRepr {
            mac: Mac([2, 0, 0, 0, 0, 1]),
            mtu: 1500,
            prefix: "fd00:16:1::".parse().unwrap(),
            prefix_len: 64,
            autonomous: true,
            router_lifetime: 1800,
            rdnss: [None; RDNSS_MAX],
            rdnss_lifetime: 600,
        };
        assert_eq!(ra.len(), RA_LEN, "no servers, no option");
        ra.rdnss = [Some(dns[0]), Some(dns[1]), None];
        assert_eq!(ra.len(), RA_LEN + 8 + 32);
        let mut buf = [0u8; RA_LEN + 8 + 32];
        ra.emit(&mut buf);
        let (src, dst) = ("fe80::1".parse().unwrap(), ALL_NODES);
        fill_checksum(src, dst, &mut buf);
        let v = Icmpv6Packet::new_checked(&buf[..]).unwrap();
        assert!(v.verify_checksum(src, dst));
        assert!(v.nd_options_valid(16), "every option whole");
        // RFC 8106 section 5.1: type 25, length 5 (1 + 2 x 2), reserved, lifetime,
        // then the addresses.
        let o = &buf[RA_LEN..];
        assert_eq!(&o[..8], &[25, 5, 0, 0, 0, 0, 0x02, 0x58]);
        assert_eq!(o[8..24], dns[0].octets());
        assert_eq!(o[24..40], dns[1].octets());
    }
}
