//! Receive-side coalescing of TCP segments (GRO, in software): consecutive segments of
//! one connection become one super-packet that a TAP takes in a single write, marked
//! for GSO (the receiving kernel cuts it, or takes it whole). The bytes stay with the
//! caller (a `Vec`, or a pool buffer); this tracks the run and fixes the headers.

use crate::checksum;

/// Headers plus payload of a super-packet at most (the IPv4 total length field).
pub const GSO_MAX: usize = 65535;
const TCP: u8 = 6;

/// Whether a TCP/IPv4 packet's IP header and TCP checksums both verify. A merged run
/// goes to the receiver marked as checksummed by tapnet (the field left for it to
/// fill), so every segment merged must be checked here: a corrupt one is passed on
/// alone, for the receiver's own check to drop.
pub fn checksums_ok(p: &[u8]) -> bool {
    if p.len() < 20 {
        return false;
    }
    let ihl = (p[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([p[2], p[3]]) as usize;
    if ihl < 20 || total < ihl || total > p.len() || checksum::sum(&p[..ihl]) != 0xffff {
        return false;
    }
    let mut pseudo = [0u8; 12];
    pseudo[..8].copy_from_slice(&p[12..20]);
    pseudo[9] = p[9];
    pseudo[10..12].copy_from_slice(&((total - ihl) as u16).to_be_bytes());
    checksum::sum_with(&p[ihl..total], checksum::sum(&pseudo)) == 0xffff
}

/// A run of TCP/IPv4 segments being merged into the first one's packet.
#[derive(Debug, Clone, Copy)]
pub struct TcpRun {
    l4: usize,
    headers: usize,
    mss: usize,
    segments: usize,
    next_seq: u32,
    len: usize,
}

impl TcpRun {
    /// Starts a run at `p`, an IPv4 packet: a TCP data segment with only ACK (and PSH)
    /// set, not a fragment, its length as the IP header says.
    pub fn start(p: &[u8]) -> Option<TcpRun> {
        if p.len() < 40 || p[0] >> 4 != 4 || p[9] != TCP || p[6] & 0x3f != 0 || p[7] != 0 {
            return None;
        }
        let l4 = (p[0] & 0x0f) as usize * 4;
        if l4 < 20 || p.len() < l4 + 20 {
            return None;
        }
        let thl = (p[l4 + 12] >> 4) as usize * 4;
        let headers = l4 + thl;
        let total = u16::from_be_bytes([p[2], p[3]]) as usize;
        if thl < 20 || total != p.len() || headers >= total || p[l4 + 13] & !0x18 != 0 {
            return None;
        }
        let seq = u32::from_be_bytes([p[l4 + 4], p[l4 + 5], p[l4 + 6], p[l4 + 7]]);
        let mss = total - headers;
        Some(TcpRun {
            l4,
            headers,
            mss,
            segments: 1,
            next_seq: seq.wrapping_add(mss as u32),
            len: total,
        })
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
    /// addresses, ports, ACK, window and options, the next sequence number, every
    /// earlier segment full-sized and this one no bigger.
    pub fn accepts(&self, first: &[u8], p: &[u8]) -> bool {
        let (h, l4) = (self.headers, self.l4);
        if p.len() <= h || first.len() < h || self.len + (p.len() - h) > GSO_MAX {
            return false;
        }
        let last_len = self.len - h - (self.segments - 1) * self.mss;
        if last_len != self.mss || p.len() - h > self.mss {
            return false;
        }
        p[..2] == first[..2]
            && p[6..10] == first[6..10]
            && p[12..20] == first[12..20]
            && p[l4..l4 + 4] == first[l4..l4 + 4]
            && p[l4 + 8..l4 + 13] == first[l4 + 8..l4 + 13]
            && p[l4 + 13] & !0x18 == 0
            && p[l4 + 14..l4 + 16] == first[l4 + 14..l4 + 16]
            && p[l4 + 20..h] == first[l4 + 20..h]
            && u16::from_be_bytes([p[2], p[3]]) as usize == p.len()
            && u32::from_be_bytes([p[l4 + 4], p[l4 + 5], p[l4 + 6], p[l4 + 7]]) == self.next_seq
    }

    /// Records that `p`'s payload (`p[headers..]`) was appended to the packet that
    /// starts at `first`.
    pub fn appended(&mut self, first: &mut [u8], p: &[u8]) {
        let len = p.len() - self.headers;
        // The super-segment pushes if its last part did.
        first[self.l4 + 13] |= p[self.l4 + 13] & 0x08;
        self.segments += 1;
        self.len += len;
        self.next_seq = self.next_seq.wrapping_add(len as u32);
    }

    /// Fixes the merged packet's headers in place (IP length and checksum; the TCP
    /// checksum field left holding the pseudo-header sum over the whole length, as a
    /// GSO frame with NEEDS_CSUM expects) and returns the segment size; `None` (and
    /// nothing changed) if the run stayed one segment.
    pub fn finish(&self, packet: &mut [u8]) -> Option<u16> {
        if self.segments < 2 {
            return None;
        }
        let (l4, total) = (self.l4, self.len);
        let p = &mut packet[..total];
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[10..12].fill(0);
        let c = checksum::checksum(&p[..l4]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&p[12..20]);
        pseudo[9] = TCP;
        pseudo[10..12].copy_from_slice(&((total - l4) as u16).to_be_bytes());
        let sum = checksum::sum(&pseudo);
        p[l4 + 16..l4 + 18].copy_from_slice(&sum.to_be_bytes());
        Some(self.mss as u16)
    }

    /// Where the TCP header starts (for the virtio-net header's csum_start).
    pub fn l4(&self) -> usize {
        self.l4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn checksums_are_verified() {
        let mut p = segment(1, &[7; 100], 0x10);
        assert!(checksums_ok(&p));
        p[60] ^= 1;
        assert!(!checksums_ok(&p), "payload corruption");
        let mut q = segment(1, &[7; 100], 0x10);
        q[12] ^= 1;
        assert!(!checksums_ok(&q), "header corruption");
        assert!(!checksums_ok(&q[..10]));
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
