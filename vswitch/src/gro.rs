//! Receive-side coalescing of TCP segments (GRO, in software): consecutive segments of
//! one connection become one super-packet that a TAP takes in a single write, marked
//! for GSO (the receiving kernel cuts it, or takes it whole). The bytes stay with the
//! caller (a `Vec`, or a pool buffer); this tracks the run and fixes the headers.

use crate::frame::{MAX_GSO_SEGS, MIN_GSO_SIZE};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::{self, Ipv6Packet};
use crate::wire::tcp::{TcpPacket, ACK, PSH, RST, SYN};
use crate::wire::{pseudo_sum, pseudo_sum6, PROTO_TCP};

/// Headers plus payload of a super-packet at most (the IPv4 total length field).
pub const GSO_MAX: usize = 65535;

pub use crate::wire::checksum::{classify as checksums, Checksums};

/// Whether a segment may join a run: its checksums are valid, or its TCP checksum
/// was left partial by its sender. A merged run goes to the receiver as a GSO frame
/// with NEEDS_CSUM, its checksum field refilled with the pseudo-header sum (see
/// [`TcpRun::finish`]), so both kinds come out right; a segment whose checksum is
/// neither is never merged, but passed on alone for the receiver's check to drop.
pub fn mergeable(sums: Checksums) -> bool {
    matches!(sums, Checksums::Valid | Checksums::Partial { .. })
}

/// A run of TCP segments over IPv4 or IPv6 being merged into the first one's packet.
#[derive(Debug, Clone, Copy)]
pub struct TcpRun {
    /// Over IPv6 (the fixed header, TCP right after it).
    v6: bool,
    l4: usize,
    headers: usize,
    mss: usize,
    segments: usize,
    next_seq: u32,
    len: usize,
}

impl TcpRun {
    /// Starts a run at `p`, an IPv4 or IPv6 packet: a TCP data segment with only ACK
    /// (and PSH) set, its length as the IP header says; over IPv4 not a fragment,
    /// over IPv6 with TCP as the fixed header's next header (no extension headers:
    /// Linux's `ipv6_gro_receive` merges only headers it can compare).
    pub fn start(p: &[u8]) -> Option<TcpRun> {
        let (v6, l4) = tcp_at(p)?;
        let tcp = TcpPacket::new_checked(&p[l4..])?;
        let headers = l4 + tcp.header_len();
        if headers >= p.len() || tcp.flags() & !(ACK | PSH) != 0 {
            return None;
        }
        let mss = p.len() - headers;
        // A merged run goes into a bridge as a GSO frame, and the datapath's ingress
        // check (`frame::check_gso`) refuses one whose segments are under
        // MIN_GSO_SIZE bytes as bad GSO: a burst of small segments (pipelined
        // requests, say) would be merged into a frame that is then dropped whole.
        // Such segments are passed on as they came.
        if mss < MIN_GSO_SIZE as usize {
            return None;
        }
        Some(TcpRun {
            v6,
            l4,
            headers,
            mss,
            segments: 1,
            next_seq: tcp.seq().wrapping_add(mss as u32),
            len: p.len(),
        })
    }

    /// Whether the run is over IPv6 (its frame goes as GSO_TCPV6).
    pub fn is_v6(&self) -> bool {
        self.v6
    }

    /// The headers' length (IP and TCP): what of a following segment is not payload.
    pub fn headers(&self) -> usize {
        self.headers
    }

    /// The merged packet's length so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `p` continues the run whose packet starts with `first`'s headers: same
    /// addresses, ports, ACK, window and options (and IP header but for its length,
    /// and over IPv4 identifier and checksum; over IPv6 the same traffic class, flow
    /// label and hop limit, as `ipv6_gro_receive` asks), the next sequence number,
    /// only ACK and PSH set, every earlier segment full-sized and this one no bigger.
    pub fn accepts(&self, first: &[u8], p: &[u8]) -> bool {
        let h = self.headers;
        if p.len() <= h || first.len() < h || self.len + (p.len() - h) > GSO_MAX {
            return false;
        }
        // Nor does that check take more than MAX_GSO_SEGS segments in one frame.
        if self.segments >= MAX_GSO_SEGS {
            return false;
        }
        let last_len = self.len - h - (self.segments - 1) * self.mss;
        if last_len != self.mss || p.len() - h > self.mss {
            return false;
        }
        let same_ip = if self.v6 {
            same_ipv6_header(&first[..h], p)
        } else {
            same_ipv4_header(&first[..h], p)
        };
        let (true, Some(ta), Some(tb)) = (
            same_ip,
            TcpPacket::new_checked(&first[self.l4..h]),
            TcpPacket::new_checked(&p[self.l4..]),
        ) else {
            return false;
        };
        ta.src_port() == tb.src_port()
            && ta.dst_port() == tb.dst_port()
            && ta.ack() == tb.ack()
            && ta.header_len() == tb.header_len()
            && tb.flags() & !(ACK | PSH) == 0
            && ta.window() == tb.window()
            && ta.options() == tb.options()
            && tb.seq() == self.next_seq
    }

    /// Records that `p`'s payload (`p[headers..]`) was appended to the packet that
    /// starts at `first`.
    pub fn appended(&mut self, first: &mut [u8], p: &[u8]) {
        let len = p.len() - self.headers;
        // The super-segment pushes if its last part did.
        let push = TcpPacket::new_checked(&p[self.l4..self.headers]).map_or(0, |t| t.flags() & PSH);
        if let Some(mut t) = TcpPacket::new_checked(&mut first[self.l4..self.headers]) {
            let flags = t.flags() | push;
            t.set_flags(flags);
        }
        self.segments += 1;
        self.len += len;
        self.next_seq = self.next_seq.wrapping_add(len as u32);
    }

    /// Fixes the merged packet's headers in place (IPv4's total length and checksum,
    /// or IPv6's payload length; the TCP checksum field left holding the
    /// pseudo-header sum over the whole length, RFC 793 3.1 or RFC 8200 8.1, as a GSO
    /// frame with NEEDS_CSUM expects) and returns the segment size; `None` (and
    /// nothing changed) if the run stayed one segment.
    pub fn finish(&self, packet: &mut [u8]) -> Option<u16> {
        if self.segments < 2 {
            return None;
        }
        let (l4, total) = (self.l4, self.len);
        let sum = if self.v6 {
            let mut ip = Ipv6Packet::new_quoted(&mut packet[..total])?;
            ip.set_payload_len((total - l4) as u16);
            pseudo_sum6(ip.src(), ip.dst(), PROTO_TCP, total - l4)
        } else {
            let mut ip = Ipv4Packet::new_unchecked(&mut packet[..total]);
            ip.set_total_len(total as u16);
            ip.fill_checksum();
            pseudo_sum(ip.src(), ip.dst(), PROTO_TCP, total - l4)
        };
        let mut tcp = TcpPacket::new_checked(&mut packet[l4..total])?;
        tcp.set_checksum(sum);
        Some(self.mss as u16)
    }

    /// Where the TCP header starts (for the virtio-net header's csum_start).
    pub fn l4(&self) -> usize {
        self.l4
    }
}

/// Where TCP starts in `p`, an IPv4 or IPv6 packet (and whether it is IPv6): TCP
/// right after the IPv4 header or IPv6's fixed one, the packet as long as its header
/// says, not a fragment.
fn tcp_at(p: &[u8]) -> Option<(bool, usize)> {
    if p.first().is_some_and(|b| b >> 4 == 6) {
        let ip = Ipv6Packet::new_checked(p)?;
        if ip.next_header() != PROTO_TCP || ipv6::HEADER_LEN + ip.payload_len() != p.len() {
            return None;
        }
        Some((true, ipv6::HEADER_LEN))
    } else {
        let ip = Ipv4Packet::new_checked(p).ok()?;
        if ip.protocol() != PROTO_TCP || ip.is_fragment() || ip.total_len() != p.len() {
            return None;
        }
        Some((false, ip.header_len()))
    }
}

/// Makes `packet`, one TCP segment (IPv4 or IPv6, as [`TcpRun::start`] takes them)
/// whose data is longer than `segment` bytes, a super-frame for GSO to cut into
/// `segment`-byte segments: the TCP checksum field is left holding the pseudo-header
/// sum, as a frame with NEEDS_CSUM expects; returns the segment size. This is for
/// a sender told a larger MSS than its peer's link carries (the host proxy's TCP
/// stack), so that one segment of 64 KiB replaces 45 (the kernel's TSO does the
/// same, `tcp_gso_segment`, which also puts FIN and PSH on the last piece only).
/// None, and nothing changed, if the data fits one segment, if it is a SYN or a
/// reset, or if GSO would refuse the result (segments under [`MIN_GSO_SIZE`], more
/// than [`MAX_GSO_SEGS`]).
pub fn cut_super_frame(packet: &mut [u8], segment: usize) -> Option<u16> {
    let (v6, l4) = tcp_at(packet)?;
    let tcp = TcpPacket::new_checked(&packet[l4..])?;
    let data = tcp.payload().len();
    if data <= segment
        || segment < MIN_GSO_SIZE as usize
        || data.div_ceil(segment) > MAX_GSO_SEGS
        || tcp.flags() & (SYN | RST) != 0
    {
        return None;
    }
    let len = packet.len() - l4;
    let sum = if v6 {
        let ip = Ipv6Packet::new_checked(&packet[..])?;
        pseudo_sum6(ip.src(), ip.dst(), PROTO_TCP, len)
    } else {
        let ip = Ipv4Packet::new_checked(&packet[..]).ok()?;
        pseudo_sum(ip.src(), ip.dst(), PROTO_TCP, len)
    };
    TcpPacket::new_checked(&mut packet[l4..])?.set_checksum(sum);
    Some(segment as u16)
}

/// Whether `b`, an IPv4 packet whose length is its own, has the IPv4 header `a` but
/// for what each segment has of its own: total length, identifier and checksum.
fn same_ipv4_header(a: &[u8], b: &[u8]) -> bool {
    let len = b.len();
    let (Ok(a), Ok(b)) = (Ipv4Packet::new_quoted(a), Ipv4Packet::new_checked(b)) else {
        return false;
    };
    a.header_len() == b.header_len()
        && b.total_len() == len
        && a.src() == b.src()
        && a.dst() == b.dst()
        && a.ttl() == b.ttl()
        && a.protocol() == b.protocol()
        && a.dont_frag() == b.dont_frag()
        && a.tos() == b.tos()
        && a.header()[20..] == b.header()[20..]
}

/// Whether `b`, an IPv6 packet whose length is its own, has the fixed header `a` but
/// for the payload length: the flow (addresses, flow label), traffic class, hop limit
/// and next header (TCP, no extension headers) all the same.
fn same_ipv6_header(a: &[u8], b: &[u8]) -> bool {
    let len = b.len();
    let (Some(a), Some(b)) = (Ipv6Packet::new_quoted(a), Ipv6Packet::new_checked(b)) else {
        return false;
    };
    ipv6::HEADER_LEN + b.payload_len() == len
        && a.next_header() == b.next_header()
        && a.src() == b.src()
        && a.dst() == b.dst()
        && a.flow_label() == b.flow_label()
        && a.traffic_class() == b.traffic_class()
        && a.hop_limit() == b.hop_limit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum;

    /// A TCP/IPv4 segment with valid checksums.
    fn segment(seq: u32, payload: &[u8], flags: u8) -> Vec<u8> {
        let total = 40 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let c = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[20..22].copy_from_slice(&1000u16.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = flags;
        p[40..].copy_from_slice(payload);
        let mut pseudo = p[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&((total - 20) as u16).to_be_bytes());
        pseudo.extend_from_slice(&p[20..]);
        let c = checksum::checksum(&pseudo);
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// The folded pseudo-header sum (not inverted) of an IPv4 packet `p`: what a
    /// CHECKSUM_PARTIAL sender leaves in the checksum field.
    fn pseudo_sum(p: &[u8]) -> u16 {
        let ihl = (p[0] & 0x0f) as usize * 4;
        let total = u16::from_be_bytes([p[2], p[3]]) as usize;
        let mut pseudo = p[12..20].to_vec();
        pseudo.extend_from_slice(&[0, p[9]]);
        pseudo.extend_from_slice(&((total - ihl) as u16).to_be_bytes());
        checksum::sum(&pseudo)
    }

    /// `p` (TCP, or UDP with `csum_at` 26) with its checksum left partial, as the
    /// Linux kernel leaves it for a NIC to finish.
    fn partial(mut p: Vec<u8>, csum_at: usize) -> Vec<u8> {
        let ps = pseudo_sum(&p);
        p[csum_at..csum_at + 2].copy_from_slice(&ps.to_be_bytes());
        p
    }

    /// A UDP/IPv4 datagram with a valid checksum.
    fn udp(payload: &[u8]) -> Vec<u8> {
        let total = 28 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let c = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[20..22].copy_from_slice(&5000u16.to_be_bytes());
        p[22..24].copy_from_slice(&53u16.to_be_bytes());
        p[24..26].copy_from_slice(&((total - 20) as u16).to_be_bytes());
        p[28..].copy_from_slice(payload);
        let c = !checksum::sum_with(&p[20..], pseudo_sum(&p));
        p[26..28].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// Finishes a partial TCP checksum as a NIC would: the sum from the TCP header
    /// on (the field holding the pseudo-header sum), inverted.
    fn finish_tcp(p: &mut [u8]) {
        let total = u16::from_be_bytes([p[2], p[3]]) as usize;
        let c = checksum::checksum(&p[20..total]);
        p[36..38].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn checksums_are_verified() {
        let mut p = segment(1, &[7; 100], 0x10);
        assert_eq!(checksums(&p), Checksums::Valid);
        p[60] ^= 1;
        assert_eq!(checksums(&p), Checksums::Wrong, "payload corruption");
        let mut q = segment(1, &[7; 100], 0x10);
        q[12] ^= 1;
        assert_eq!(checksums(&q), Checksums::Wrong, "header corruption");
        assert_eq!(checksums(&q[..10]), Checksums::NotChecked);
        assert_eq!(checksums(&udp(&[1, 2, 3])), Checksums::Valid);
        let mut none = udp(&[1, 2, 3]);
        none[26..28].fill(0);
        assert_eq!(checksums(&none), Checksums::Valid, "UDP sent without one");
    }

    #[test]
    fn a_partial_tcp_or_udp_checksum_is_told_from_a_wrong_one() {
        let p = partial(segment(1, &[7; 101], 0x18), 36);
        let want = Checksums::Partial {
            l4: 20,
            csum_offset: 16,
            len: 141,
        };
        assert_eq!(checksums(&p), want);
        // Ethernet padding after the packet changes nothing.
        let mut padded = p.clone();
        padded.extend_from_slice(&[0xee; 6]);
        assert_eq!(checksums(&padded), want);
        let u = partial(udp(&[9; 33]), 26);
        let want_udp = Checksums::Partial {
            l4: 20,
            csum_offset: 6,
            len: 61,
        };
        assert_eq!(checksums(&u), want_udp);
        // Finished, it verifies.
        let mut done = p.clone();
        finish_tcp(&mut done);
        assert_eq!(checksums(&done), Checksums::Valid);

        // A wrong checksum is not taken for a partial one: off by one, or the
        // pseudo-header summed over another length; nor is a damaged IP header.
        let mut off = p.clone();
        off[37] ^= 1;
        assert_eq!(checksums(&off), Checksums::Wrong);
        let mut other_len = p.clone();
        let wrong = checksum::sum_with(&[0, 1], pseudo_sum(&p));
        other_len[36..38].copy_from_slice(&wrong.to_be_bytes());
        assert_eq!(checksums(&other_len), Checksums::Wrong);
        let mut bad_ip = p.clone();
        bad_ip[8] = 1;
        assert_eq!(checksums(&bad_ip), Checksums::Wrong, "IP header damaged");
        let mut bad_udp = u.clone();
        bad_udp[27] ^= 0x80;
        assert_eq!(checksums(&bad_udp), Checksums::Wrong);

        // What is not a whole TCP or UDP packet is not judged.
        let mut frag = p.clone();
        frag[6] = 0x20; // more fragments
        assert_eq!(checksums(&frag), Checksums::NotChecked);
        let mut icmp = p.clone();
        icmp[9] = 1;
        assert_eq!(checksums(&icmp), Checksums::NotChecked);
        let mut udp_len = u.clone();
        udp_len[25] -= 1;
        assert_eq!(checksums(&udp_len), Checksums::NotChecked);
        assert_eq!(checksums(&p[..100]), Checksums::NotChecked, "truncated");
    }

    #[test]
    fn one_big_segment_becomes_a_super_frame_for_gso() {
        // 10,000 bytes for a peer whose segments carry 1448: FIN stays (GSO puts it
        // on the last piece).
        let mut p = segment(7, &[9; 10_000], 0x19);
        let before = p.clone();
        assert_eq!(cut_super_frame(&mut p, 1448), Some(1448));
        assert_eq!(p[..36], before[..36], "headers but the checksum unchanged");
        assert_eq!(u16::from_be_bytes([p[36], p[37]]), pseudo_sum(&p));
        assert_eq!(p[40..], before[40..]);
        let mut p6 = segment6(7, &[9; 3000], 1, 0, false);
        assert_eq!(cut_super_frame(&mut p6, 1000), Some(1000));
        assert_eq!(u16::from_be_bytes([p6[56], p6[57]]), pseudo6(&p6));
    }

    #[test]
    fn what_fits_or_gso_would_refuse_is_not_cut() {
        for (mut p, segment) in [
            (segment(7, &[9; 1448], 0x10), 1448),  // fits one segment
            (segment(7, &[9; 3000], 0x12), 1448),  // a SYN
            (segment(7, &[9; 3000], 0x14), 1448),  // a reset
            (segment(7, &[9; 3000], 0x10), 47),    // segments under MIN_GSO_SIZE
            (segment(7, &[9; 60_000], 0x10), 200), // 300 segments
        ] {
            let before = p.clone();
            assert_eq!(cut_super_frame(&mut p, segment), None);
            assert_eq!(p, before);
        }
    }

    /// A TCP/IPv6 segment (TCP right after the fixed header), flow label `flow`,
    /// traffic class `tc`, its checksum partial (the pseudo-header sum, RFC 8200
    /// 8.1) if `partial`, else valid.
    fn segment6(seq: u32, payload: &[u8], flow: u32, tc: u8, partial: bool) -> Vec<u8> {
        let plen = 20 + payload.len();
        let mut p = vec![0u8; 40 + plen];
        let word = (6u32 << 28) | ((tc as u32) << 20) | (flow & 0xfffff);
        p[..4].copy_from_slice(&word.to_be_bytes());
        p[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
        p[6] = 6;
        p[7] = 64;
        p[8..24].copy_from_slice(&"fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&"fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        p[40..42].copy_from_slice(&1000u16.to_be_bytes());
        p[42..44].copy_from_slice(&80u16.to_be_bytes());
        p[44..48].copy_from_slice(&seq.to_be_bytes());
        p[52] = 5 << 4;
        p[53] = 0x10;
        p[60..].copy_from_slice(payload);
        let ps = pseudo6(&p);
        let c = if partial {
            ps
        } else {
            !checksum::sum_with(&p[40..], ps)
        };
        p[56..58].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// The IPv6 pseudo-header sum of `p` (addresses, payload length, TCP), by hand.
    fn pseudo6(p: &[u8]) -> u16 {
        let mut pseudo = p[8..40].to_vec();
        pseudo.extend_from_slice(&(u16::from_be_bytes([p[4], p[5]]) as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, p[6]]);
        checksum::sum(&pseudo)
    }

    #[test]
    fn ipv6_checksums_are_classified_without_extension_headers() {
        let p = segment6(1, &[5; 200], 7, 0, false);
        assert_eq!(checksums(&p), Checksums::Valid);
        let q = segment6(1, &[5; 200], 7, 0, true);
        assert_eq!(
            checksums(&q),
            Checksums::Partial {
                l4: 40,
                csum_offset: 16,
                len: 260
            }
        );
        let mut damaged = p.clone();
        damaged[100] ^= 1;
        assert_eq!(checksums(&damaged), Checksums::Wrong);
        // An extension header first (hop-by-hop): not judged, nor merged.
        let mut ext = p.clone();
        ext[6] = 0;
        assert_eq!(checksums(&ext), Checksums::NotChecked);
        assert!(TcpRun::start(&ext).is_none());
        // Cut short: the payload length says more than there is.
        assert_eq!(checksums(&p[..100]), Checksums::NotChecked);
    }

    #[test]
    fn ipv6_segments_of_one_flow_merge_into_a_tcpv6_super_packet() {
        let mss = 1428;
        let payload = |k: u32| -> Vec<u8> { (0..mss).map(|i| (i as u32 * 3 + k) as u8).collect() };
        let first = segment6(0, &payload(0), 0x12345, 0, true);
        let mut run = TcpRun::start(&first).unwrap();
        assert!(run.is_v6());
        assert_eq!((run.l4(), run.headers()), (40, 60));
        let mut merged = first.clone();
        let mut expect = payload(0);
        for k in 1..4u32 {
            let next = segment6(k * mss as u32, &payload(k), 0x12345, 0, k != 2);
            assert!(mergeable(checksums(&next)));
            assert!(run.accepts(&merged, &next), "segment {k}");
            merged.extend_from_slice(&next[60..]);
            run.appended(&mut merged, &next);
            expect.extend_from_slice(&payload(k));
        }
        // Another flow label, another traffic class, another hop limit, or a
        // sequence gap: not the same run (ipv6_gro_receive's flush rules).
        let seq = 4 * mss as u32;
        assert!(!run.accepts(&merged, &segment6(seq, &payload(4), 0x12346, 0, true)));
        assert!(!run.accepts(&merged, &segment6(seq, &payload(4), 0x12345, 0x20, true)));
        let mut hops = segment6(seq, &payload(4), 0x12345, 0, true);
        hops[7] = 63;
        assert!(!run.accepts(&merged, &hops));
        assert!(!run.accepts(&merged, &segment6(seq + 1, &payload(4), 0x12345, 0, true)));
        let mut ext = segment6(seq, &payload(4), 0x12345, 0, true);
        ext[6] = 60;
        assert!(!run.accepts(&merged, &ext), "destination options header");
        assert_eq!(run.finish(&mut merged), Some(mss as u16));
        // The payload length covers every segment; the field holds the IPv6
        // pseudo-header sum over it, and finished (as a NIC would), it verifies.
        assert_eq!(
            u16::from_be_bytes([merged[4], merged[5]]) as usize,
            20 + 4 * mss
        );
        assert_eq!(&merged[60..], &expect[..]);
        assert_eq!(
            u16::from_be_bytes([merged[56], merged[57]]),
            pseudo6(&merged)
        );
        assert_eq!(
            checksums(&merged),
            Checksums::Partial {
                l4: 40,
                csum_offset: 16,
                len: merged.len()
            }
        );
        let c = checksum::checksum(&merged[40..]);
        merged[56..58].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksums(&merged), Checksums::Valid);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for len in 0..120 {
            for _ in 0..200 {
                let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if len > 9 && next() % 4 == 0 {
                    // IPv6: TCP or UDP after the fixed header, a payload length
                    // anywhere around the buffer's.
                    p[0] = 0x60 | (p[0] & 0x0f);
                    p[6] = [6, 17, 0][next() as usize % 3];
                    let plen = (next() as usize % (len + 8)) as u16;
                    p[4..6].copy_from_slice(&plen.to_be_bytes());
                    let _ = checksums(&p);
                    if let Some(mut run) = TcpRun::start(&p) {
                        let q = p.clone();
                        if run.accepts(&p, &q) {
                            run.appended(&mut p, &q);
                        }
                        let _ = run.finish(&mut p);
                    }
                    continue;
                }
                if len > 9 {
                    p[0] = 0x40 | (p[0] & 0x0f);
                    p[6] &= 0x40;
                    p[7] = 0;
                    p[9] = [6, 17][p[9] as usize & 1];
                }
                if len > 3 {
                    let total = (next() as usize % (len + 8)) as u16;
                    p[2..4].copy_from_slice(&total.to_be_bytes());
                }
                let _ = checksums(&p);
            }
        }
    }

    #[test]
    fn partial_segments_merge_into_a_super_packet_that_finishes_valid() {
        // A run of segments left partial by their sender, with a valid one among
        // them: one super-packet whose field holds the pseudo-header sum over its
        // whole length, which, finished, verifies.
        let mss = 1448;
        let payload = |k: u32| -> Vec<u8> { (0..mss).map(|i| (i as u32 * 7 + k) as u8).collect() };
        let first = partial(segment(0, &payload(0), 0x10), 36);
        assert!(mergeable(checksums(&first)));
        let mut run = TcpRun::start(&first).unwrap();
        let mut merged = first.clone();
        let mut expect = payload(0);
        for k in 1..6u32 {
            let mut next = segment(k * mss as u32, &payload(k), 0x10);
            if k != 3 {
                next = partial(next, 36);
            }
            let sums = checksums(&next);
            assert!(mergeable(sums), "segment {k}: {sums:?}");
            assert!(run.accepts(&merged, &next), "segment {k}");
            merged.extend_from_slice(&next[run.headers()..]);
            run.appended(&mut merged, &next);
            expect.extend_from_slice(&payload(k));
        }
        assert_eq!(run.finish(&mut merged), Some(mss as u16));
        let total = merged.len();
        assert_eq!(total, 40 + 6 * mss);
        assert_eq!(
            checksums(&merged),
            Checksums::Partial {
                l4: 20,
                csum_offset: 16,
                len: total
            },
            "the super-packet is NEEDS_CSUM: the field holds its pseudo-header sum"
        );
        finish_tcp(&mut merged);
        assert_eq!(checksums(&merged), Checksums::Valid);
        assert_eq!(&merged[40..], &expect[..], "the payload, in order, whole");

        // A segment whose checksum is neither valid nor partial never joins.
        let mut wrong = segment(6 * mss as u32, &payload(6), 0x10);
        wrong[36] ^= 1;
        assert!(run.accepts(&merged, &wrong) && !mergeable(checksums(&wrong)));
    }

    /// Found by the fuzz targets (bench/fuzz.sh): runs of small segments were merged
    /// into GSO frames that the datapath's ingress check drops as bad GSO (segments
    /// under 48 bytes, or more than 256 of them), losing every segment of the run.
    #[test]
    fn a_run_makes_only_gso_frames_the_datapath_takes() {
        use crate::frame::{check_ingress, VnetHdr, GSO_TCPV4, VNET_F_NEEDS_CSUM, VNET_HDR_LEN};
        // Segments under the smallest GSO segment size start no run.
        let small = segment(0, &[1; MIN_GSO_SIZE as usize - 1], 0x10);
        assert!(TcpRun::start(&small).is_none());
        // Segments of the smallest size merge, 256 at most.
        let mss = MIN_GSO_SIZE as usize;
        let first = segment(0, &[1; MIN_GSO_SIZE as usize], 0x10);
        let mut run = TcpRun::start(&first).unwrap();
        let mut merged = first.clone();
        let mut seq = mss as u32;
        loop {
            let next = segment(seq, &[2; MIN_GSO_SIZE as usize], 0x10);
            if !run.accepts(&merged, &next) {
                break;
            }
            merged.extend_from_slice(&next[run.headers()..]);
            run.appended(&mut merged, &next);
            seq += mss as u32;
        }
        assert_eq!(run.len(), 40 + MAX_GSO_SEGS * mss);
        let gso_size = run.finish(&mut merged).unwrap();
        // As the VXLAN endpoint sends it into a bridge: the bridge takes it.
        let mut frame = vec![0u8; VNET_HDR_LEN + 14];
        VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: (14 + run.headers()) as u16,
            gso_size,
            csum_start: 14 + run.l4() as u16,
            csum_offset: 16,
        }
        .emit(&mut frame);
        frame[VNET_HDR_LEN..VNET_HDR_LEN + 6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        frame[VNET_HDR_LEN + 6..VNET_HDR_LEN + 12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        frame[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14].copy_from_slice(&[0x08, 0]);
        frame.extend_from_slice(&merged);
        assert!(check_ingress(&frame, 1500).is_ok());
    }

    #[test]
    fn a_run_stops_at_its_size_limit_and_keeps_psh() {
        let first = segment(0, &[1; 1000], 0x10);
        let mut run = TcpRun::start(&first).unwrap();
        let mut merged = first.clone();
        let mut seq = 1000;
        loop {
            let next = segment(seq, &[2; 1000], 0x18);
            if !run.accepts(&merged, &next) {
                break;
            }
            merged.extend_from_slice(&next[run.headers()..]);
            run.appended(&mut merged, &next);
            seq += 1000;
        }
        assert!(
            run.len() <= GSO_MAX && run.len() + 1000 > GSO_MAX,
            "{}",
            run.len()
        );
        assert_eq!(run.finish(&mut merged), Some(1000));
        assert_eq!(merged[33] & 0x08, 0x08, "PSH carried over");
        assert_eq!(checksum::sum(&merged[..20]), 0xffff);
        // A segment from another connection never joins.
        let run = TcpRun::start(&first).unwrap();
        let mut other = segment(1000, &[2; 1000], 0x10);
        other[22..24].copy_from_slice(&81u16.to_be_bytes());
        assert!(!run.accepts(&first, &other));
    }
}
