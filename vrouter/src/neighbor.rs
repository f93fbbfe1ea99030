//! The ARP table: IPv4 address -> MAC per router interface, with aging and a limit.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use vswitch::Mac;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbor {
    pub mac: Mac,
    pub updated: Instant,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NeighborStats {
    pub learned: u64,
    pub aged_out: u64,
    pub not_learned_full: u64,
}

#[derive(Clone)]
pub struct NeighborTable {
    entries: HashMap<(usize, Ipv4Addr), Neighbor>,
    max: usize,
    aging: Duration,
    stats: NeighborStats,
}

impl NeighborTable {
    /// Room for twice `max` is reserved so that churn never makes the map grow.
    pub fn new(max: usize, aging: Duration) -> NeighborTable {
        NeighborTable {
            entries: HashMap::with_capacity(max.saturating_mul(2)),
            max,
            aging,
            stats: NeighborStats::default(),
        }
    }

    /// Records `ip` at `mac` on interface `iface`. A full table refuses new addresses
    /// (they stay unresolved; counted) but keeps updating known ones.
    pub fn learn(&mut self, iface: usize, ip: Ipv4Addr, mac: Mac, now: Instant) {
        if let Some(e) = self.entries.get_mut(&(iface, ip)) {
            *e = Neighbor { mac, updated: now };
        } else if self.entries.len() >= self.max {
            self.stats.not_learned_full += 1;
        } else {
            self.entries
                .insert((iface, ip), Neighbor { mac, updated: now });
            self.stats.learned += 1;
        }
    }

    /// Updates `ip` only if it is known already (an ARP packet not meant for us).
    pub fn refresh(&mut self, iface: usize, ip: Ipv4Addr, mac: Mac, now: Instant) {
        if let Some(e) = self.entries.get_mut(&(iface, ip)) {
            *e = Neighbor { mac, updated: now };
        }
    }

    pub fn lookup(&self, iface: usize, ip: Ipv4Addr, now: Instant) -> Option<Mac> {
        self.entries
            .get(&(iface, ip))
            .filter(|e| now.saturating_duration_since(e.updated) < self.aging)
            .map(|e| e.mac)
    }

    pub fn age(&mut self, now: Instant) {
        let aging = self.aging;
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.updated) < aging);
        self.stats.aged_out += (before - self.entries.len()) as u64;
    }

    pub fn entries(&self) -> impl Iterator<Item = (usize, Ipv4Addr, Neighbor)> + '_ {
        self.entries.iter().map(|(&(i, ip), n)| (i, ip, *n))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn stats(&self) -> NeighborStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const N: Mac = Mac([2, 0, 0, 0, 0, 2]);

    #[test]
    fn learns_refreshes_ages_and_limits() {
        let t0 = Instant::now();
        let mut t = NeighborTable::new(2, Duration::from_secs(10));
        let a = Ipv4Addr::new(10, 0, 0, 2);
        let b = Ipv4Addr::new(10, 0, 0, 3);
        let c = Ipv4Addr::new(10, 0, 0, 4);
        t.refresh(0, a, M, t0);
        assert_eq!(t.lookup(0, a, t0), None, "refresh never creates");
        t.learn(0, a, M, t0);
        t.learn(0, b, M, t0);
        t.learn(0, c, M, t0);
        assert_eq!(t.lookup(0, c, t0), None, "full");
        assert_eq!(t.stats().not_learned_full, 1);
        t.refresh(0, a, N, t0 + Duration::from_secs(5));
        assert_eq!(t.lookup(0, a, t0), Some(N));
        assert_eq!(t.lookup(1, a, t0), None, "per interface");
        let later = t0 + Duration::from_secs(11);
        assert_eq!(t.lookup(0, b, later), None, "aged");
        assert_eq!(t.lookup(0, a, later), Some(N));
        t.age(later);
        assert_eq!(t.len(), 1);
        assert_eq!(t.stats().aged_out, 1);
    }
}
