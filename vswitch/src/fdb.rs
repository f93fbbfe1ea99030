//! The forwarding database of one bridge: MAC address -> port, with aging and a size
//! limit, like the Linux bridge's `ageing_time` and `max_entries`. Time is passed in.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::port::PortId;

/// An Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// Group bit set: broadcast and multicast.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 != 0
    }

    pub fn is_zero(self) -> bool {
        self.0 == [0; 6]
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// `aa:bb:cc:dd:ee:ff` (six hex pairs, either case, `:`-separated), as `Display`
/// writes it.
impl std::str::FromStr for Mac {
    type Err = ();

    fn from_str(s: &str) -> Result<Mac, ()> {
        let mut m = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut m {
            let p = parts.next().ok_or(())?;
            if p.len() != 2 {
                return Err(());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| ())?;
        }
        if parts.next().is_some() {
            return Err(());
        }
        Ok(Mac(m))
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One learned (or static) address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry<P = PortId> {
    pub port: P,
    pub last_seen: Instant,
    /// A port's own address (`bridge fdb add ... static`): never ages, never moves.
    pub fixed: bool,
}

/// What learning a source address did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned<P = PortId> {
    New,
    Refreshed,
    Moved {
        from: P,
    },
    /// The table is full: the address was not learned (frames to it will flood).
    TableFull,
    /// The address is another port's own (static): not moved.
    StaticConflict,
}

/// Counters of table events (not drops: a full table still forwards, by flooding).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FdbStats {
    pub learned: u64,
    pub moved: u64,
    pub aged_out: u64,
    pub not_learned_full: u64,
    /// Sightings of a port's own (static) address elsewhere, refused.
    pub static_conflicts: u64,
}

pub struct Fdb<P = PortId> {
    entries: HashMap<Mac, FdbEntry<P>>,
    /// Entries that are not static.
    learned: usize,
    max: usize,
    aging: Duration,
    stats: FdbStats,
    /// Bumped whenever an address is added, moves or goes (not when one is only seen
    /// again): the datapath's other threads read a copy of the table, made again when
    /// this changes.
    generation: u64,
}

impl<P: Copy + Eq> Fdb<P> {
    /// A table of at most `max` entries that forgets an address `aging` after it was
    /// last seen. Room for twice `max` is reserved now: with at most half the slots
    /// full, the map clears its tombstones in place instead of growing, so learning
    /// never allocates, however much the addresses churn.
    pub fn new(max: usize, aging: Duration) -> Fdb<P> {
        Fdb {
            learned: 0,
            // Static entries (one a port) come on top.
            entries: HashMap::with_capacity(max.saturating_mul(2).saturating_add(64)),
            max,
            aging,
            stats: FdbStats::default(),
            generation: 0,
        }
    }

    fn expired(&self, e: &FdbEntry<P>, now: Instant) -> bool {
        !e.fixed && now.saturating_duration_since(e.last_seen) >= self.aging
    }

    /// Makes `mac` a static entry on `port`: a port's own address, which no other port
    /// (or VXLAN peer) can take over. Not counted against the table's limit.
    pub fn add_static(&mut self, mac: Mac, port: P, now: Instant) {
        self.generation += 1;
        let old = self.entries.insert(
            mac,
            FdbEntry {
                port,
                last_seen: now,
                fixed: true,
            },
        );
        // An address learned before it was made static leaves the learned count:
        // nothing else would ever take it off (aging and `flush_port` count only the
        // learned entries they remove), and the table would hold one address fewer
        // than its limit for good.
        if old.is_some_and(|e| !e.fixed) {
            self.learned -= 1;
        }
    }

    /// [`Fdb::add_static`], unless `mac` is static already: true if it was added.
    pub fn add_static_new(&mut self, mac: Mac, port: P, now: Instant) -> bool {
        if self.entries.get(&mac).is_some_and(|e| e.fixed) {
            return false;
        }
        self.add_static(mac, port, now);
        true
    }

    /// Removes `mac` if it is a static entry on `port`: true if it was.
    pub fn remove_static(&mut self, mac: Mac, port: P) -> bool {
        if self
            .entries
            .get(&mac)
            .is_some_and(|e| e.fixed && e.port == port)
        {
            self.entries.remove(&mac);
            self.generation += 1;
            true
        } else {
            false
        }
    }

    /// Whether `mac` is another port's static address than `port`'s.
    pub fn static_elsewhere(&self, mac: Mac, port: P) -> bool {
        self.entries
            .get(&mac)
            .is_some_and(|e| e.fixed && e.port != port)
    }

    /// Records that `mac` was seen as a source on `port` at `now`.
    pub fn learn(&mut self, mac: Mac, port: P, now: Instant) -> Learned<P> {
        let aging = self.aging;
        if let Some(e) = self.entries.get_mut(&mac) {
            if e.fixed {
                if e.port == port {
                    return Learned::Refreshed;
                }
                self.stats.static_conflicts += 1;
                return Learned::StaticConflict;
            }
            let from = e.port;
            let stale = now.saturating_duration_since(e.last_seen) >= aging;
            e.port = port;
            e.last_seen = now;
            if from != port || stale {
                self.generation += 1;
            }
            return if from == port {
                Learned::Refreshed
            } else if stale {
                // An expired entry that was not swept yet: a new sighting, not a move.
                self.stats.learned += 1;
                Learned::New
            } else {
                self.stats.moved += 1;
                Learned::Moved { from }
            };
        }
        if self.learned_len() >= self.max {
            self.stats.not_learned_full += 1;
            return Learned::TableFull;
        }
        self.entries.insert(
            mac,
            FdbEntry {
                port,
                last_seen: now,
                fixed: false,
            },
        );
        self.learned += 1;
        self.stats.learned += 1;
        self.generation += 1;
        Learned::New
    }

    /// The port `mac` was last seen on, unless it aged out.
    pub fn lookup(&self, mac: Mac, now: Instant) -> Option<P> {
        self.entries
            .get(&mac)
            .filter(|e| !self.expired(e, now))
            .map(|e| e.port)
    }

    /// Removes entries older than the aging time; returns how many.
    pub fn age(&mut self, now: Instant) -> usize {
        let aging = self.aging;
        let before = self.entries.len();
        self.entries
            .retain(|_, e| e.fixed || now.saturating_duration_since(e.last_seen) < aging);
        let removed = before - self.entries.len();
        if removed > 0 {
            self.generation += 1;
        }
        self.learned -= removed;
        self.stats.aged_out += removed as u64;
        removed
    }

    /// Forgets every address learned on `port`, and its static ones (it went down).
    pub fn flush_port(&mut self, port: P) {
        self.generation += 1;
        let before = self.learned;
        let mut gone = 0;
        self.entries.retain(|_, e| {
            let keep = e.port != port;
            if !keep && !e.fixed {
                gone += 1;
            }
            keep
        });
        self.learned = before - gone;
    }

    /// Marks `mac` seen on `port` at `now` if the table has it there (another thread
    /// forwarded from it): it never adds or moves an entry, so a stale sighting
    /// cannot undo a move learned since.
    pub fn refresh(&mut self, mac: Mac, port: P, now: Instant) {
        if let Some(e) = self.entries.get_mut(&mac) {
            if e.port == port && !e.fixed {
                e.last_seen = e.last_seen.max(now);
            }
        }
    }

    /// Changes with every address added, moved or removed (see the field).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Learned entries (static ones aside): what the limit counts.
    fn learned_len(&self) -> usize {
        self.learned
    }

    /// Entries, static ones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn aging(&self) -> Duration {
        self.aging
    }

    pub fn stats(&self) -> FdbStats {
        self.stats
    }

    /// Live entries, in no particular order.
    pub fn entries(&self, now: Instant) -> impl Iterator<Item = (Mac, FdbEntry<P>)> + '_ {
        self.entries
            .iter()
            .filter(move |(_, e)| !self.expired(e, now))
            .map(|(m, e)| (*m, *e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u32) -> Mac {
        let b = n.to_be_bytes();
        Mac([2, 0, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn learns_refreshes_and_moves() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(16, Duration::from_secs(300));
        assert_eq!(fdb.learn(mac(1), PortId(0), t0), Learned::New);
        assert_eq!(fdb.learn(mac(1), PortId(0), t0), Learned::Refreshed);
        assert_eq!(fdb.lookup(mac(1), t0), Some(PortId(0)));
        assert_eq!(
            fdb.learn(mac(1), PortId(2), t0),
            Learned::Moved { from: PortId(0) }
        );
        assert_eq!(fdb.lookup(mac(1), t0), Some(PortId(2)));
        assert_eq!(fdb.stats().moved, 1);
        assert_eq!(fdb.lookup(mac(9), t0), None);
    }

    #[test]
    fn entries_age_out_and_refresh_keeps_them() {
        let t0 = Instant::now();
        let aging = Duration::from_secs(10);
        let mut fdb = Fdb::new(16, aging);
        fdb.learn(mac(1), PortId(0), t0);
        fdb.learn(mac(2), PortId(1), t0);
        fdb.learn(mac(2), PortId(1), t0 + Duration::from_secs(8));
        let t1 = t0 + Duration::from_secs(11);
        assert_eq!(fdb.lookup(mac(1), t1), None, "expired before the sweep");
        assert_eq!(fdb.lookup(mac(2), t1), Some(PortId(1)));
        assert_eq!(fdb.age(t1), 1);
        assert_eq!(fdb.len(), 1);
        assert_eq!(fdb.stats().aged_out, 1);
        assert_eq!(fdb.age(t0 + Duration::from_secs(18)), 1);
        assert!(fdb.is_empty());
    }

    #[test]
    fn stale_entry_relearned_elsewhere_is_new_not_moved() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(4, Duration::from_secs(1));
        fdb.learn(mac(1), PortId(0), t0);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(fdb.learn(mac(1), PortId(1), t1), Learned::New);
        assert_eq!(fdb.lookup(mac(1), t1), Some(PortId(1)));
    }

    #[test]
    fn full_table_does_not_learn_and_counts() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(3, Duration::from_secs(300));
        for i in 0..3 {
            assert_eq!(fdb.learn(mac(i), PortId(0), t0), Learned::New);
        }
        assert_eq!(fdb.learn(mac(3), PortId(0), t0), Learned::TableFull);
        assert_eq!(fdb.lookup(mac(3), t0), None);
        assert_eq!(fdb.len(), 3);
        assert_eq!(fdb.stats().not_learned_full, 1);
        // Known addresses still move while the table is full.
        assert_eq!(
            fdb.learn(mac(0), PortId(1), t0),
            Learned::Moved { from: PortId(0) }
        );
    }

    #[test]
    fn flood_of_sources_stays_bounded() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(100, Duration::from_secs(300));
        let cap = fdb.entries.capacity();
        for i in 0..100_000 {
            fdb.learn(mac(i), PortId(0), t0);
        }
        assert_eq!(fdb.len(), 100);
        assert_eq!(
            fdb.entries.capacity(),
            cap,
            "never grows past the reservation"
        );
        assert_eq!(fdb.stats().not_learned_full, 100_000 - 100);
    }

    #[test]
    fn churn_of_learning_and_aging_never_grows_the_table() {
        let mut now = Instant::now();
        let aging = Duration::from_secs(1);
        let mut fdb = Fdb::new(1000, aging);
        let cap = fdb.entries.capacity();
        for round in 0..200u32 {
            for i in 0..1000 {
                fdb.learn(mac(round * 1000 + i), PortId(0), now);
            }
            now += aging;
            fdb.age(now);
            // Tombstones lower `capacity()` a little; growing would double it.
            assert!(fdb.entries.capacity() <= cap, "grew at round {round}");
        }
    }

    #[test]
    fn static_entries_never_move_or_age() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(2, Duration::from_secs(10));
        fdb.add_static(mac(1), PortId(0), t0);
        assert_eq!(
            fdb.learn(mac(1), PortId(3), t0),
            Learned::StaticConflict,
            "a peer claiming a port's own MAC"
        );
        assert_eq!(fdb.lookup(mac(1), t0), Some(PortId(0)));
        assert_eq!(fdb.stats().static_conflicts, 1);
        assert!(fdb.static_elsewhere(mac(1), PortId(3)));
        assert!(!fdb.static_elsewhere(mac(1), PortId(0)));
        let later = t0 + Duration::from_secs(100);
        fdb.age(later);
        assert_eq!(fdb.lookup(mac(1), later), Some(PortId(0)));
        // Static entries do not count against the limit.
        assert_eq!(fdb.learn(mac(2), PortId(1), later), Learned::New);
        assert_eq!(fdb.learn(mac(3), PortId(1), later), Learned::New);
        assert_eq!(fdb.learn(mac(4), PortId(1), later), Learned::TableFull);
        fdb.flush_port(PortId(0));
        assert_eq!(fdb.lookup(mac(1), later), None);
        assert_eq!(fdb.learn(mac(4), PortId(1), later), Learned::TableFull);
        fdb.flush_port(PortId(1));
        assert_eq!(fdb.learn(mac(4), PortId(1), later), Learned::New);
    }

    /// Found by the FDB's model test (vswitch/tests/fdb_props.rs): a learned address
    /// made static stayed in the learned count, so the table took one address fewer
    /// than its limit from then on.
    #[test]
    fn a_learned_address_made_static_frees_its_place() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(2, Duration::from_secs(10));
        assert_eq!(fdb.learn(mac(1), PortId(0), t0), Learned::New);
        fdb.add_static(mac(1), PortId(0), t0);
        assert_eq!(fdb.learn(mac(2), PortId(1), t0), Learned::New);
        assert_eq!(fdb.learn(mac(3), PortId(1), t0), Learned::New);
        assert_eq!(fdb.learn(mac(4), PortId(1), t0), Learned::TableFull);
        // And the static entry made static again changes nothing.
        fdb.add_static(mac(1), PortId(0), t0);
        let later = t0 + Duration::from_secs(100);
        assert_eq!(fdb.age(later), 2);
        assert_eq!(fdb.learn(mac(5), PortId(1), later), Learned::New);
        assert_eq!(fdb.learn(mac(6), PortId(1), later), Learned::New);
        assert_eq!(fdb.lookup(mac(1), later), Some(PortId(0)));
    }

    #[test]
    fn flush_port_forgets_only_that_port() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(16, Duration::from_secs(300));
        fdb.learn(mac(1), PortId(0), t0);
        fdb.learn(mac(2), PortId(1), t0);
        fdb.flush_port(PortId(0));
        assert_eq!(fdb.lookup(mac(1), t0), None);
        assert_eq!(fdb.lookup(mac(2), t0), Some(PortId(1)));
    }

    #[test]
    fn mac_display_and_group_bit() {
        assert_eq!(mac(0x0102_0304).to_string(), "02:00:01:02:03:04");
        assert!(Mac::BROADCAST.is_multicast());
        assert!(Mac([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!(!mac(1).is_multicast());
    }
}
