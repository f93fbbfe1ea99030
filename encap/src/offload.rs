//! What a TAP's offloads leave undone, done in software before a frame leaves by a
//! path that cannot take them (a UDP tunnel): finishing a checksum left partial
//! (NEEDS_CSUM), and cutting a TCP super-frame into MSS-sized segments (TSO). VXLAN
//! must not fragment (RFC 7348 section 4.3), so every segment must fit on its own.

use vswitch::checksum;
use vswitch::frame::{VnetHdr, GSO_ECN, GSO_NONE, GSO_TCPV4, VNET_F_NEEDS_CSUM};

/// Why a frame could not be made ready for the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    /// A GSO type this software does not cut (TCP over IPv6, UDP: later).
    UnsupportedGso,
    /// Headers that do not match what the virtio-net header says.
    Malformed,
}

/// Finishes a partial checksum in place: `eth` is the Ethernet frame, and the field at
/// `start + offset` holds the pseudo-header sum to fold the rest into.
pub fn finish_checksum(eth: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    let at = start + offset;
    if at + 2 > eth.len() || start > eth.len() {
        return Err(OffloadError::Malformed);
    }
    let c = checksum::checksum(&eth[start..]);
    // A UDP checksum of zero means "none": send its equal, all ones, instead.
    let c = if c == 0 && offset == 6 { 0xffff } else { c };
    eth[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Cuts a super-frame (`eth`, described by `vnet`) into segments, each built in
/// `scratch` after `headroom` bytes left free for the tunnel's own header; `send`
/// gets each as `scratch[..headroom + segment length]`. Returns how many.
pub fn segment(
    vnet: &VnetHdr,
    eth: &[u8],
    scratch: &mut [u8],
    headroom: usize,
    send: impl FnMut(&mut [u8]),
) -> Result<usize, OffloadError> {
    match vnet.gso_type & !GSO_ECN {
        GSO_TCPV4 => segment_tcp4(eth, vnet.gso_size as usize, scratch, headroom, send),
        _ => Err(OffloadError::UnsupportedGso),
    }
}

/// Finishes a plain frame's partial checksum, if it has one.
pub fn finish(vnet: &VnetHdr, eth: &mut [u8]) -> Result<(), OffloadError> {
    if vnet.gso_type & !GSO_ECN != GSO_NONE {
        return Err(OffloadError::UnsupportedGso);
    }
    if vnet.flags & VNET_F_NEEDS_CSUM != 0 {
        finish_checksum(eth, vnet.csum_start as usize, vnet.csum_offset as usize)?;
    }
    Ok(())
}

/// Software TSO for TCP over IPv4 (no VLAN tag): each segment gets the headers with
/// its own IP length, identifier and checksum, its own sequence number, FIN and PSH
/// only on the last, CWR only on the first, and a full TCP checksum.
fn segment_tcp4(
    eth: &[u8],
    mss: usize,
    scratch: &mut [u8],
    headroom: usize,
    mut send: impl FnMut(&mut [u8]),
) -> Result<usize, OffloadError> {
    const ETH: usize = 14;
    if eth.len() < ETH + 20 || eth[12..14] != [0x08, 0x00] || mss == 0 {
        return Err(OffloadError::Malformed);
    }
    let ihl = (eth[ETH] & 0x0f) as usize * 4;
    if ihl < 20 || eth[ETH + 9] != 6 || eth.len() < ETH + ihl + 20 {
        return Err(OffloadError::Malformed);
    }
    let tcp = ETH + ihl;
    let thl = (eth[tcp + 12] >> 4) as usize * 4;
    let headers = tcp + thl;
    if thl < 20 || eth.len() < headers || scratch.len() < headroom + headers + mss {
        return Err(OffloadError::Malformed);
    }
    let payload = &eth[headers..];
    let id = u16::from_be_bytes([eth[ETH + 4], eth[ETH + 5]]);
    let seq = u32::from_be_bytes([eth[tcp + 4], eth[tcp + 5], eth[tcp + 6], eth[tcp + 7]]);
    let flags = eth[tcp + 13];
    let count = payload.len().div_ceil(mss).max(1);
    for i in 0..count {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let whole = &mut scratch[..headroom + headers + chunk.len()];
        let out = &mut whole[headroom..];
        out[..headers].copy_from_slice(&eth[..headers]);
        out[headers..].copy_from_slice(chunk);
        let ip = &mut out[ETH..ETH + ihl];
        ip[2..4].copy_from_slice(&((ihl + thl + chunk.len()) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        ip[10..12].fill(0);
        let c = checksum::checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let t = &mut out[tcp..];
        t[4..8].copy_from_slice(&seq.wrapping_add((i * mss) as u32).to_be_bytes());
        let mut f = flags;
        if i + 1 < count {
            f &= !0x09; // FIN, PSH: only on the last segment
        }
        if i > 0 {
            f &= !0x80; // CWR: only on the first
        }
        t[13] = f;
        t[16..18].fill(0);
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&eth[ETH + 12..ETH + 20]);
        pseudo[9] = 6;
        pseudo[10..12].copy_from_slice(&((thl + chunk.len()) as u16).to_be_bytes());
        let c = !checksum::sum_with(&out[tcp..], checksum::sum(&pseudo));
        out[tcp + 16..tcp + 18].copy_from_slice(&c.to_be_bytes());
        send(whole);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 frame with `payload` bytes, its checksum finished or left partial.
    fn tcp_frame(payload: usize, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + payload];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let c = checksum::checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let t = &mut f[34..54];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&5201u16.to_be_bytes());
        t[4..8].copy_from_slice(&1000u32.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        for (i, b) in f[54..].iter_mut().enumerate() {
            *b = i as u8;
        }
        f
    }

    /// Whether a TCP/IPv4 frame's IP and TCP checksums verify.
    fn verifies(f: &[u8]) -> bool {
        let total = u16::from_be_bytes([f[16], f[17]]) as usize;
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[26..34]);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&((total - 20) as u16).to_be_bytes());
        pseudo.extend_from_slice(&f[34..14 + total]);
        checksum::sum(&f[14..34]) == 0xffff && checksum::sum(&pseudo) == 0xffff
    }

    #[test]
    fn a_partial_checksum_is_finished() {
        let mut f = tcp_frame(100, 0x18);
        // Partial: the field holds the pseudo-header sum (length 120).
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&f[26..34]);
        pseudo[9] = 6;
        pseudo[10..12].copy_from_slice(&120u16.to_be_bytes());
        let ps = checksum::sum(&pseudo);
        f[50..52].copy_from_slice(&ps.to_be_bytes());
        let vnet = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..Default::default()
        };
        finish(&vnet, &mut f).unwrap();
        assert!(verifies(&f));
    }

    #[test]
    fn a_super_frame_is_cut_into_valid_segments() {
        let f = tcp_frame(5000, 0x19); // FIN, PSH, ACK
        let vnet = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut scratch = vec![0u8; 8 + 54 + 1448];
        let mut segs = Vec::new();
        let n = segment(&vnet, &f, &mut scratch, 8, |s| segs.push(s[8..].to_vec())).unwrap();
        assert_eq!(n, 4);
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(verifies(s), "segment {i}");
            let seq = u32::from_be_bytes(s[38..42].try_into().unwrap());
            assert_eq!(seq, 1000 + (i * 1448) as u32);
            assert_eq!(u16::from_be_bytes([s[18], s[19]]), 0x1234 + i as u16);
            let last = i == 3;
            assert_eq!(s[47] & 0x09 != 0, last, "FIN/PSH only on the last");
            assert!(s.len() <= 14 + 40 + 1448);
            joined.extend_from_slice(&s[54..]);
        }
        assert_eq!(joined, f[54..].to_vec(), "the payload, in order, whole");
    }

    #[test]
    fn what_cannot_be_cut_is_refused_not_panicked_on() {
        let vnet = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 100,
            ..Default::default()
        };
        let mut scratch = vec![0u8; 2000];
        for len in 0..80 {
            let mut f = tcp_frame(26, 0x10);
            f.truncate(len);
            let _ = segment(&vnet, &f, &mut scratch, 8, |_| {});
        }
        let v6 = VnetHdr {
            gso_type: 4,
            gso_size: 100,
            ..Default::default()
        };
        let mut f = tcp_frame(500, 0x10);
        assert_eq!(
            segment(&v6, &f, &mut scratch, 8, |_| {}),
            Err(OffloadError::UnsupportedGso)
        );
        let partial_past_end = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            csum_start: 50,
            csum_offset: 600,
            ..Default::default()
        };
        assert_eq!(
            finish(&partial_past_end, &mut f),
            Err(OffloadError::Malformed)
        );
    }
}
