//! IPv4 reassembly (RFC 791 section 3.2, RFC 815's hole list kept as sorted ranges)
//! at the places that terminate flows or need ports: the host proxy and the service
//! translation. Bounded like the kernel's `ipfrag_high_thresh` (bytes held) and
//! `ipfrag_time` (seconds a datagram may take), with a cap on fragments per datagram;
//! overlapping fragments drop the whole datagram, as Linux does since 4.19. Sans-IO:
//! time is passed in, and the caller's buffer receives each whole datagram.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use vswitch::wire::ipv4::{Ipv4Packet, HEADER_LEN};

/// Limits of the reassembly table.
#[derive(Debug, Clone, Copy)]
pub struct ReasmConfig {
    /// Bytes of fragment data held at most, over all datagrams (Linux's
    /// `ipfrag_high_thresh` defaults to 4 MiB).
    pub max_bytes: usize,
    /// Datagrams being reassembled at most.
    pub max_datagrams: usize,
    /// How long a datagram may take to arrive whole (`ipfrag_time`, 30 s).
    pub timeout: Duration,
    /// Fragments one datagram may have: 1400 carries the largest datagram over the
    /// smallest IPv4 MTU (68 bytes: 48 of payload a fragment). It bounds the work a
    /// flood of tiny fragments can ask for, not any real sender.
    pub max_fragments: usize,
}

impl Default for ReasmConfig {
    fn default() -> Self {
        ReasmConfig {
            max_bytes: 4 << 20,
            max_datagrams: 256,
            timeout: Duration::from_secs(30),
            max_fragments: 1400,
        }
    }
}

/// Counters of the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReasmStats {
    pub fragments: u64,
    pub reassembled: u64,
    /// Datagrams that did not arrive whole in time.
    pub timed_out: u64,
    /// Datagrams dropped for fragments that overlap (not exact duplicates).
    pub overlapping: u64,
    /// Datagrams that would be longer than 65535 bytes, or a middle fragment whose
    /// length is not a multiple of 8.
    pub malformed: u64,
    /// Datagrams with more fragments than [`ReasmConfig::max_fragments`].
    pub too_many_fragments: u64,
    /// Datagrams dropped, oldest first, to make room (bytes or count at their limit).
    pub evicted: u64,
}

/// What became of a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reasm {
    /// Kept; the datagram is not whole yet.
    Incomplete,
    /// The datagram is whole: [`Reassembler::take`] it with this handle.
    Complete(usize),
    /// Dropped (counted), with the datagram it belonged to if it was bad.
    Dropped,
}

type Key = (Ipv4Addr, Ipv4Addr, u8, u16);

struct Datagram {
    key: Key,
    since: Instant,
    /// The first fragment's header (options included), once it came.
    header: [u8; 60],
    header_len: usize,
    /// Payload bytes at their offsets.
    data: Vec<u8>,
    /// Received payload ranges, sorted and disjoint.
    ranges: Vec<(usize, usize)>,
    /// The payload length, once the last fragment came.
    total: Option<usize>,
}

/// The reassembly table.
pub struct Reassembler {
    config: ReasmConfig,
    live: Vec<Datagram>,
    /// Buffers of finished datagrams, reused so reassembly does not allocate each time.
    spare: Vec<Vec<u8>>,
    held: usize,
    stats: ReasmStats,
}

impl Reassembler {
    pub fn new(config: ReasmConfig) -> Reassembler {
        Reassembler {
            config,
            live: Vec::new(),
            spare: Vec::new(),
            held: 0,
            stats: ReasmStats::default(),
        }
    }

    pub fn stats(&self) -> ReasmStats {
        self.stats
    }

    /// Bytes of fragment data held now.
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// Datagrams being reassembled now.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    fn retire(&mut self, i: usize) {
        let mut d = self.live.swap_remove(i);
        self.held -= d.data.len();
        d.data.clear();
        if self.spare.len() < 16 {
            self.spare.push(d.data);
        }
    }

    /// Takes one fragment (`packet`: an IPv4 packet that is a fragment, checked by
    /// the caller with [`Ipv4Packet::new_checked`]).
    pub fn push(&mut self, packet: &[u8], now: Instant) -> Reasm {
        let Ok(ip) = Ipv4Packet::new_checked(packet) else {
            return Reasm::Dropped;
        };
        self.stats.fragments += 1;
        let key = (ip.src(), ip.dst(), ip.protocol(), ip.ident());
        let (start, payload) = (ip.frag_offset(), ip.payload());
        let end = start + payload.len();
        if end > 65535 - HEADER_LEN || (ip.more_frags() && payload.len() % 8 != 0) {
            self.drop_key(&key);
            self.stats.malformed += 1;
            return Reasm::Dropped;
        }
        let i = match self.live.iter().position(|d| d.key == key) {
            Some(i) => i,
            None => {
                while self.live.len() >= self.config.max_datagrams
                    || (!self.live.is_empty() && self.held + payload.len() > self.config.max_bytes)
                {
                    let oldest = (0..self.live.len())
                        .min_by_key(|&i| self.live[i].since)
                        .expect("not empty");
                    self.retire(oldest);
                    self.stats.evicted += 1;
                }
                self.live.push(Datagram {
                    key,
                    since: now,
                    header: [0; 60],
                    header_len: 0,
                    data: self.spare.pop().unwrap_or_default(),
                    ranges: Vec::new(),
                    total: None,
                });
                self.live.len() - 1
            }
        };
        // Room for this fragment, made by evicting other datagrams (oldest first).
        let mut i = i;
        let grow = loop {
            let grow = end.saturating_sub(self.live[i].data.len());
            if self.held + grow <= self.config.max_bytes {
                break grow;
            }
            let Some(oldest) = (0..self.live.len())
                .filter(|&j| j != i)
                .min_by_key(|&j| self.live[j].since)
            else {
                self.retire(i);
                self.stats.evicted += 1;
                return Reasm::Dropped;
            };
            self.retire(oldest);
            self.stats.evicted += 1;
            i = self.live.iter().position(|d| d.key == key).expect("kept");
        };
        let d = &mut self.live[i];
        // Exact duplicates are ignored; any other overlap drops the datagram.
        if d.ranges.contains(&(start, end)) {
            return Reasm::Incomplete;
        }
        let overlaps = d.ranges.iter().any(|&(s, e)| start < e && s < end);
        let beyond = d
            .total
            .is_some_and(|t| end > t || (!ip.more_frags() && end != t));
        let too_late = !ip.more_frags() && d.ranges.iter().any(|&(_, e)| e > end);
        if overlaps || beyond || too_late {
            self.retire(i);
            self.stats.overlapping += 1;
            return Reasm::Dropped;
        }
        if d.ranges.len() >= self.config.max_fragments {
            self.retire(i);
            self.stats.too_many_fragments += 1;
            return Reasm::Dropped;
        }
        if d.data.len() < end {
            d.data.resize(end, 0);
            self.held += grow;
        }
        d.data[start..end].copy_from_slice(payload);
        let at = d.ranges.partition_point(|&(s, _)| s < start);
        d.ranges.insert(at, (start, end));
        if start == 0 {
            d.header_len = ip.header_len();
            d.header[..d.header_len].copy_from_slice(ip.header());
        }
        if !ip.more_frags() {
            d.total = Some(end);
        }
        let whole = d.total.is_some_and(|t| {
            d.header_len > 0
                && d.ranges.windows(2).all(|w| w[0].1 == w[1].0)
                && d.ranges.first().is_some_and(|r| r.0 == 0)
                && d.ranges.last().is_some_and(|r| r.1 == t)
        });
        if whole {
            Reasm::Complete(i)
        } else {
            Reasm::Incomplete
        }
    }

    /// Writes the datagram that [`Reasm::Complete`] named, whole (the first fragment's
    /// header, no longer a fragment, its length and checksum set), into `out`, and
    /// forgets it. Returns its length, or `None` (and forgets it) if `out` is short.
    pub fn take(&mut self, handle: usize, out: &mut [u8]) -> Option<usize> {
        let d = self.live.get(handle)?;
        let (hl, total) = (d.header_len, d.total?);
        let len = hl + total;
        // A first fragment with options can push the whole past what IPv4 can say.
        let fits = out.len() >= len && len <= 65535;
        if len > 65535 {
            self.stats.malformed += 1;
        }
        if fits {
            out[..hl].copy_from_slice(&d.header[..hl]);
            out[hl..len].copy_from_slice(&d.data[..total]);
            let mut ip = Ipv4Packet::new_unchecked(&mut out[..len]);
            ip.set_total_len(len as u16);
            ip.set_fragment(0, false);
            ip.fill_checksum();
            self.stats.reassembled += 1;
        }
        self.retire(handle);
        fits.then_some(len)
    }

    fn drop_key(&mut self, key: &Key) {
        if let Some(i) = self.live.iter().position(|d| d.key == *key) {
            self.retire(i);
        }
    }

    /// Forgets datagrams older than the timeout.
    pub fn expire(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.live.len() {
            if now.saturating_duration_since(self.live[i].since) >= self.config.timeout {
                self.retire(i);
                self.stats.timed_out += 1;
            } else {
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch::wire::ipv4::{fragment, Ipv4Repr};

    fn datagram(ident: u16, payload: usize) -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN + payload];
        Ipv4Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 1, 2),
            protocol: 17,
            ttl: 64,
            ident,
            dont_frag: false,
            payload_len: payload,
        }
        .emit(&mut p);
        for (i, b) in p[HEADER_LEN..].iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        p
    }

    fn frags(p: &[u8], mtu: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        fragment(p, mtu, |h, pl| out.push([h, pl].concat())).unwrap();
        out
    }

    fn feed(r: &mut Reassembler, fs: &[Vec<u8>], now: Instant) -> Option<Vec<u8>> {
        for f in fs {
            if let Reasm::Complete(h) = r.push(f, now) {
                let mut out = vec![0u8; 65536];
                let n = r.take(h, &mut out).unwrap();
                return Some(out[..n].to_vec());
            }
        }
        None
    }

    #[test]
    fn fragments_in_any_order_make_the_datagram() {
        let now = Instant::now();
        let p = datagram(1, 5000);
        let mut fs = frags(&p, 1500);
        fs.reverse();
        let mut r = Reassembler::new(ReasmConfig::default());
        assert_eq!(feed(&mut r, &fs, now).unwrap(), p);
        assert!(r.is_empty() && r.held_bytes() == 0);
        assert_eq!(r.stats().reassembled, 1);
    }

    #[test]
    fn duplicates_are_ignored_and_overlaps_drop_the_datagram() {
        let now = Instant::now();
        let p = datagram(2, 3000);
        let fs = frags(&p, 1500);
        let mut r = Reassembler::new(ReasmConfig::default());
        assert_eq!(r.push(&fs[0], now), Reasm::Incomplete);
        assert_eq!(r.push(&fs[0], now), Reasm::Incomplete);
        // A fragment overlapping the first one's end.
        let mut odd = frags(&datagram(2, 3000), 1004)[1].clone();
        assert_eq!(r.push(&odd, now), Reasm::Dropped);
        assert_eq!(r.stats().overlapping, 1);
        assert!(r.is_empty());
        odd.truncate(10);
        assert_eq!(r.push(&odd, now), Reasm::Dropped);
    }

    #[test]
    fn memory_and_count_stay_bounded_under_a_flood_of_first_fragments() {
        let now = Instant::now();
        let config = ReasmConfig {
            max_bytes: 100_000,
            max_datagrams: 50,
            ..ReasmConfig::default()
        };
        let mut r = Reassembler::new(config);
        for id in 0..10_000u16 {
            let f = frags(&datagram(id, 3000), 1500).remove(0);
            assert_ne!(r.push(&f, now), Reasm::Dropped);
            assert!(r.held_bytes() <= 100_000 && r.len() <= 50);
        }
        assert!(r.stats().evicted > 9000);
        // A real datagram still gets through.
        let p = datagram(60000, 3000);
        assert_eq!(feed(&mut r, &frags(&p, 1500), now).unwrap(), p);
    }

    #[test]
    fn incomplete_datagrams_time_out() {
        let t0 = Instant::now();
        let mut r = Reassembler::new(ReasmConfig::default());
        let fs = frags(&datagram(3, 3000), 1500);
        r.push(&fs[0], t0);
        r.expire(t0 + Duration::from_secs(29));
        assert_eq!(r.len(), 1);
        r.expire(t0 + Duration::from_secs(31));
        assert!(r.is_empty());
        assert_eq!(r.stats().timed_out, 1);
        // The rest arriving later starts afresh and never completes on its own.
        assert_eq!(r.push(&fs[1], t0), Reasm::Incomplete);
    }

    #[test]
    fn too_long_or_too_many_pieces_are_refused() {
        let now = Instant::now();
        let mut r = Reassembler::new(ReasmConfig {
            max_fragments: 4,
            ..ReasmConfig::default()
        });
        let fs = frags(&datagram(4, 4000), 600);
        assert!(fs.len() > 4);
        let results: Vec<_> = fs.iter().map(|f| r.push(f, now)).collect();
        assert!(results.contains(&Reasm::Dropped));
        assert!(r.stats().too_many_fragments >= 1);
        // A fragment claiming an offset past 64 KiB.
        let mut f = frags(&datagram(5, 3000), 1500).remove(1);
        let mut v = Ipv4Packet::new_unchecked(&mut f[..]);
        v.set_fragment(65528, true);
        v.fill_checksum();
        assert_eq!(r.push(&f, now), Reasm::Dropped);
    }

    #[test]
    fn the_largest_datagram_over_the_smallest_mtu_is_reassembled() {
        let now = Instant::now();
        let p = datagram(9, 65535 - 20);
        let fs = frags(&p, 68);
        assert!(fs.len() > 1300);
        let mut r = Reassembler::new(ReasmConfig::default());
        assert_eq!(feed(&mut r, &fs, now).unwrap(), p);
    }

    #[test]
    fn random_fragments_never_panic() {
        let now = Instant::now();
        let mut r = Reassembler::new(ReasmConfig {
            max_bytes: 20_000,
            ..ReasmConfig::default()
        });
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = 20 + (next() % 1500) as usize;
            let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[12..20].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            p[4] = (next() % 4) as u8;
            if let Reasm::Complete(h) = r.push(&p, now) {
                let mut out = vec![0u8; 65536];
                r.take(h, &mut out);
            }
            assert!(r.held_bytes() <= 20_000);
        }
    }
}
