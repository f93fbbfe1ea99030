//! The ARP table: IPv4 address -> MAC per router interface (leg), with states like the
//! kernel's neighbour table (`ip neigh`): INCOMPLETE while the router asks, REACHABLE
//! once a neighbour answered the router's own request, STALE for what a neighbour
//! said unasked (an ARP request aimed at the router), FAILED after the asking went
//! unanswered. Each leg has its own limit, so one bridge's flood cannot crowd out
//! another's neighbours; a full leg evicts its oldest unconfirmed (STALE or FAILED)
//! entry before it refuses a new one, and counts what it refuses. Asking follows the
//! kernel's `mcast_solicit` (3 requests, `retrans_time` 1 s apart) with a cap on the
//! addresses being asked for at once. Time is passed in.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use vswitch::Mac;

/// ARP requests for one address before it is given up (the kernel's `mcast_solicit`).
pub const PROBES: u8 = 3;
/// Time between them (`retrans_time`).
pub const RETRANS: Duration = Duration::from_secs(1);
/// How long a given-up address answers "unreachable" before it is asked for again.
pub const FAILED_HOLD: Duration = Duration::from_secs(3);
/// Addresses being asked for at once, per leg (past that, packets for new unresolved
/// addresses are dropped without a request).
pub const INCOMPLETE_MAX: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Being asked for: `probes` requests sent, the next due at `next`.
    Incomplete { probes: u8, next: Instant },
    /// Answered the router's own request.
    Reachable,
    /// Said where it is without being asked (a request aimed at the router), or was
    /// reachable once and not confirmed since.
    Stale,
    /// Did not answer: packets for it get host-unreachable until `until`.
    Failed { until: Instant },
    /// Known from the lab itself (a guarded port's own address and MAC): never asked
    /// for, aged, evicted or changed by ARP (`ip neigh ... nud permanent`).
    Permanent,
}

impl State {
    /// The kernel's name for the state (`ip neigh`: NUD_INCOMPLETE, ...).
    pub fn name(&self) -> &'static str {
        match self {
            State::Incomplete { .. } => "INCOMPLETE",
            State::Reachable => "REACHABLE",
            State::Stale => "STALE",
            State::Failed { .. } => "FAILED",
            State::Permanent => "PERMANENT",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbor {
    /// Zero while incomplete or failed.
    pub mac: Mac,
    pub state: State,
    /// Last confirmed or learned.
    pub updated: Instant,
}

/// What [`NeighborTable::resolve`] says about a next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Known(Mac),
    /// Not known: send an ARP request now (the first of [`PROBES`]).
    Ask,
    /// Not known, and being asked for: wait.
    Wait,
    /// Asked for and never answered, recently.
    Failed,
    /// Not known, and the leg already asks for [`INCOMPLETE_MAX`] addresses.
    Busy,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NeighborStats {
    pub learned: u64,
    pub aged_out: u64,
    /// New addresses refused: the leg's table was full of confirmed neighbours.
    pub not_learned_full: u64,
    /// Unconfirmed entries dropped to make room.
    pub evicted: u64,
    /// Addresses given up after [`PROBES`] unanswered requests.
    pub failed: u64,
    /// Packets for new addresses that found the leg asking for too many already.
    pub busy: u64,
}

/// One leg's entries.
#[derive(Clone, Default)]
struct Leg {
    map: HashMap<Ipv4Addr, Neighbor>,
    /// Entries INCOMPLETE now.
    incomplete: usize,
    /// Unconfirmed entries (STALE, FAILED) in the order they were last updated, for
    /// evicting the oldest in O(1); an address updated since is found later in it
    /// again, and its older mention skipped.
    unconfirmed: VecDeque<(Ipv4Addr, Instant)>,
}

impl Leg {
    fn note_unconfirmed(&mut self, ip: Ipv4Addr, at: Instant, max: usize) {
        self.unconfirmed.push_back((ip, at));
        // Mentions outdated by later updates pile up under a flood of the same
        // senders: drop them now and then, keeping the queue within a few times the
        // leg's size.
        if self.unconfirmed.len() > 4 * max.max(16) {
            let map = &self.map;
            self.unconfirmed.retain(|(ip, at)| {
                map.get(ip).is_some_and(|n| {
                    n.updated == *at && matches!(n.state, State::Stale | State::Failed { .. })
                })
            });
        }
    }
}

#[derive(Clone)]
pub struct NeighborTable {
    legs: Vec<Leg>,
    /// Entries per leg at most.
    max: usize,
    aging: Duration,
    stats: NeighborStats,
}

impl NeighborTable {
    /// A table for `legs` interfaces, each holding at most `max` entries, forgetting a
    /// neighbour `aging` after it was last heard from.
    pub fn new(legs: usize, max: usize, aging: Duration) -> NeighborTable {
        NeighborTable {
            // Room reserved so that churn never makes a leg's map grow.
            legs: (0..legs)
                .map(|_| Leg {
                    map: HashMap::with_capacity(max.saturating_mul(2).min(1 << 16)),
                    ..Leg::default()
                })
                .collect(),
            max,
            aging,
            stats: NeighborStats::default(),
        }
    }

    fn usable(&self, n: &Neighbor, now: Instant) -> bool {
        n.state == State::Permanent
            || matches!(n.state, State::Reachable | State::Stale)
                && now.saturating_duration_since(n.updated) < self.aging
    }

    /// Makes `ip` on leg `iface` a PERMANENT entry at `mac` (not counted against the
    /// leg's limit).
    pub fn add_permanent(&mut self, iface: usize, ip: Ipv4Addr, mac: Mac, now: Instant) {
        if let Some(leg) = self.legs.get_mut(iface) {
            if let Some(Neighbor {
                state: State::Incomplete { .. },
                ..
            }) = leg.map.get(&ip)
            {
                leg.incomplete -= 1;
            }
            leg.map.insert(
                ip,
                Neighbor {
                    mac,
                    state: State::Permanent,
                    updated: now,
                },
            );
        }
    }

    /// The MAC of `ip` on leg `iface`, if known and not aged out.
    /// Forgets `ip` on every leg, permanent or not (a container detached); true if it
    /// was known.
    pub fn forget(&mut self, ip: Ipv4Addr) -> bool {
        // A mention left in `unconfirmed` finds no entry later, and is skipped.
        let mut known = false;
        for leg in &mut self.legs {
            known |= leg.map.remove(&ip).is_some();
        }
        known
    }

    pub fn lookup(&self, iface: usize, ip: Ipv4Addr, now: Instant) -> Option<Mac> {
        let n = self.legs.get(iface)?.map.get(&ip)?;
        self.usable(n, now).then_some(n.mac)
    }

    /// Makes room on leg `iface` for one more entry: evicts the least recently updated
    /// unconfirmed (STALE or FAILED) entry; false if every entry is confirmed or being
    /// asked for.
    fn make_room(&mut self, iface: usize) -> bool {
        let leg = &mut self.legs[iface];
        if leg.map.len() < self.max {
            return true;
        }
        while let Some((ip, at)) = leg.unconfirmed.pop_front() {
            let current = leg.map.get(&ip).is_some_and(|n| {
                n.updated == at && matches!(n.state, State::Stale | State::Failed { .. })
            });
            if current {
                leg.map.remove(&ip);
                self.stats.evicted += 1;
                return true;
            }
        }
        self.stats.not_learned_full += 1;
        false
    }

    /// A packet must go to `ip` on leg `iface`: is its MAC known, or must the router
    /// ask? Starts the asking (INCOMPLETE) for a new address.
    pub fn resolve(&mut self, iface: usize, ip: Ipv4Addr, now: Instant) -> Resolution {
        let Some(leg) = self.legs.get(iface) else {
            return Resolution::Busy;
        };
        let known = leg.map.get(&ip);
        match known {
            Some(n) if self.usable(n, now) => return Resolution::Known(n.mac),
            Some(Neighbor {
                state: State::Incomplete { .. },
                ..
            }) => return Resolution::Wait,
            Some(Neighbor {
                state: State::Failed { until },
                ..
            }) if now < *until => return Resolution::Failed,
            _ => {}
        }
        if leg.incomplete >= INCOMPLETE_MAX {
            self.stats.busy += 1;
            return Resolution::Busy;
        }
        if known.is_none() && !self.make_room(iface) {
            return Resolution::Busy;
        }
        let leg = &mut self.legs[iface];
        leg.incomplete += 1;
        leg.map.insert(
            ip,
            Neighbor {
                mac: Mac::default(),
                state: State::Incomplete {
                    probes: 1,
                    next: now + RETRANS,
                },
                updated: now,
            },
        );
        Resolution::Ask
    }

    /// The state of `ip` on leg `iface`, if the table has it.
    pub fn state(&self, iface: usize, ip: Ipv4Addr) -> Option<State> {
        Some(self.legs.get(iface)?.map.get(&ip)?.state)
    }

    /// The first request for `ip` (after [`Resolution::Ask`]) could not be sent (the
    /// rate limit): it is not counted as a probe, and the next tick asks.
    pub fn not_asked(&mut self, iface: usize, ip: Ipv4Addr, now: Instant) {
        if let Some(n) = self.legs.get_mut(iface).and_then(|l| l.map.get_mut(&ip)) {
            if let State::Incomplete { probes: 1, .. } = n.state {
                n.state = State::Incomplete {
                    probes: 0,
                    next: now,
                };
            }
        }
    }

    /// An ARP reply to the router's own request: `ip` is at `mac` (REACHABLE). A reply
    /// nobody asked for only refreshes what is known (as [`NeighborTable::refresh`]).
    /// True if this taught the router a new MAC for an address it was waiting on.
    pub fn confirm(&mut self, iface: usize, ip: Ipv4Addr, mac: Mac, now: Instant) -> bool {
        let Some(leg) = self.legs.get_mut(iface) else {
            return false;
        };
        let Some(n) = leg.map.get_mut(&ip) else {
            return false;
        };
        if n.state == State::Permanent {
            return false;
        }
        let waited = matches!(n.state, State::Incomplete { .. } | State::Failed { .. });
        if !waited {
            // Unasked: no more than any other ARP not aimed at the router.
            return {
                self.refresh(iface, ip, mac, now);
                false
            };
        }
        if matches!(n.state, State::Incomplete { .. }) {
            leg.incomplete -= 1;
        }
        *n = Neighbor {
            mac,
            state: State::Reachable,
            updated: now,
        };
        self.stats.learned += 1;
        true
    }

    /// An ARP request aimed at the router from `ip` at `mac` (on the leg's subnet): the
    /// router will answer it and, like the kernel, keeps the asker as STALE (evicting
    /// an older unconfirmed entry if the leg is full).
    pub fn learn_request(&mut self, iface: usize, ip: Ipv4Addr, mac: Mac, now: Instant) -> bool {
        let max = self.max;
        let Some(leg) = self.legs.get_mut(iface) else {
            return false;
        };
        if let Some(n) = leg.map.get_mut(&ip) {
            if n.state == State::Permanent {
                return false;
            }
            if matches!(n.state, State::Incomplete { .. }) {
                leg.incomplete -= 1;
            }
            let waited = matches!(n.state, State::Incomplete { .. } | State::Failed { .. });
            let state = if n.mac == mac && n.state == State::Reachable {
                State::Reachable
            } else {
                State::Stale
            };
            *n = Neighbor {
                mac,
                state,
                updated: now,
            };
            if state == State::Stale {
                leg.note_unconfirmed(ip, now, max);
            }
            return waited;
        }
        if !self.make_room(iface) {
            return false;
        }
        let leg = &mut self.legs[iface];
        leg.map.insert(
            ip,
            Neighbor {
                mac,
                state: State::Stale,
                updated: now,
            },
        );
        leg.note_unconfirmed(ip, now, max);
        self.stats.learned += 1;
        false
    }

    /// ARP traffic not aimed at the router (a gratuitous announcement, a moved
    /// address): updates `ip` only if it is known already.
    pub fn refresh(&mut self, iface: usize, ip: Ipv4Addr, mac: Mac, now: Instant) {
        let max = self.max;
        let Some(leg) = self.legs.get_mut(iface) else {
            return;
        };
        if let Some(n) = leg.map.get_mut(&ip) {
            if matches!(n.state, State::Reachable | State::Stale) {
                n.state = if n.mac == mac { n.state } else { State::Stale };
                n.mac = mac;
                n.updated = now;
                if n.state == State::Stale {
                    leg.note_unconfirmed(ip, now, max);
                }
            }
        }
    }

    /// Ordinary traffic from `ip` with source MAC `mac`: confirms a known neighbour (as
    /// TCP's ACKs do for the kernel), but never changes its MAC: a forged source MAC on
    /// an IP packet must not redirect anyone's traffic.
    pub fn traffic_from(&mut self, iface: usize, ip: Ipv4Addr, mac: Mac, now: Instant) {
        let max = self.max;
        let Some(leg) = self.legs.get_mut(iface) else {
            return;
        };
        if let Some(n) = leg.map.get_mut(&ip) {
            if n.mac == mac && matches!(n.state, State::Reachable | State::Stale) {
                n.updated = now;
                if n.state == State::Stale {
                    leg.note_unconfirmed(ip, now, max);
                }
            }
        }
    }

    /// Advances the asking: calls `ask(iface, ip)` for each address whose next request
    /// is due, gives up (FAILED) on those asked [`PROBES`] times, forgets aged and
    /// expired entries.
    pub fn tick(&mut self, now: Instant, mut ask: impl FnMut(usize, Ipv4Addr) -> bool) {
        let (aging, max) = (self.aging, self.max);
        for (iface, leg) in self.legs.iter_mut().enumerate() {
            let before = leg.map.len();
            let (mut failed, mut gone_incomplete) = (0, 0);
            let mut newly_failed = Vec::new();
            leg.map.retain(|&ip, n| match n.state {
                State::Incomplete { probes, next } if now >= next => {
                    if probes >= PROBES {
                        n.state = State::Failed {
                            until: now + FAILED_HOLD,
                        };
                        n.updated = now;
                        failed += 1;
                        gone_incomplete += 1;
                        newly_failed.push(ip);
                    } else if ask(iface, ip) {
                        n.state = State::Incomplete {
                            probes: probes + 1,
                            next: now + RETRANS,
                        };
                    }
                    // A request not sent (the rate limit) is not a probe: it is
                    // asked again at the next tick.
                    true
                }
                State::Incomplete { .. } => true,
                State::Failed { until } => now < until,
                State::Permanent => true,
                _ => now.saturating_duration_since(n.updated) < aging,
            });
            leg.incomplete -= gone_incomplete;
            for ip in newly_failed {
                leg.note_unconfirmed(ip, now, max);
            }
            self.stats.failed += failed;
            self.stats.aged_out += (before - leg.map.len()) as u64;
        }
    }

    /// Every entry: (leg, address, neighbour).
    pub fn entries(&self) -> impl Iterator<Item = (usize, Ipv4Addr, Neighbor)> + '_ {
        self.legs
            .iter()
            .enumerate()
            .flat_map(|(i, leg)| leg.map.iter().map(move |(&ip, n)| (i, ip, *n)))
    }

    pub fn len(&self) -> usize {
        self.legs.iter().map(|l| l.map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    fn ip(n: u32) -> Ipv4Addr {
        Ipv4Addr::from(0x0a00_0000 + n)
    }

    #[test]
    fn a_request_the_rate_limit_held_back_is_not_a_probe() {
        let t0 = Instant::now();
        let mut t = NeighborTable::new(1, 16, Duration::from_secs(300));
        assert_eq!(t.resolve(0, ip(2), t0), Resolution::Ask);
        t.not_asked(0, ip(2), t0);
        // Held back for ten seconds: never FAILED, never asked.
        for s in 1..=10 {
            t.tick(t0 + Duration::from_secs(s), |_, _| false);
        }
        assert_eq!(t.stats().failed, 0);
        // Then three requests a second apart, and only then FAILED.
        let mut asked = 0;
        for s in 11..=14 {
            t.tick(t0 + Duration::from_secs(s), |_, _| {
                asked += 1;
                true
            });
        }
        assert_eq!((asked, t.stats().failed), (3, 1));
    }

    #[test]
    fn asks_three_times_a_second_apart_then_fails_then_asks_again() {
        let t0 = Instant::now();
        let mut t = NeighborTable::new(1, 16, Duration::from_secs(300));
        assert_eq!(t.resolve(0, ip(2), t0), Resolution::Ask);
        // More packets while asking: no more requests until the next is due.
        for _ in 0..1000 {
            assert_eq!(t.resolve(0, ip(2), t0), Resolution::Wait);
        }
        let mut asked = Vec::new();
        for s in 1..=4 {
            t.tick(t0 + Duration::from_secs(s), |i, a| {
                asked.push((i, a));
                true
            });
        }
        assert_eq!(asked.len(), 2, "three requests in all");
        assert_eq!(t.stats().failed, 1);
        assert_eq!(
            t.resolve(0, ip(2), t0 + Duration::from_secs(4)),
            Resolution::Failed
        );
        t.tick(t0 + Duration::from_secs(8), |_, _| true);
        assert_eq!(
            t.resolve(0, ip(2), t0 + Duration::from_secs(8)),
            Resolution::Ask
        );
    }

    #[test]
    fn only_answers_to_its_own_requests_confirm() {
        let t0 = Instant::now();
        let mut t = NeighborTable::new(1, 16, Duration::from_secs(300));
        // A reply nobody asked for teaches nothing.
        assert!(!t.confirm(0, ip(2), M, t0));
        assert_eq!(t.lookup(0, ip(2), t0), None);
        assert_eq!(t.resolve(0, ip(2), t0), Resolution::Ask);
        assert!(t.confirm(0, ip(2), M, t0));
        assert_eq!(t.lookup(0, ip(2), t0), Some(M));
        // IP traffic with another source MAC changes nothing.
        t.traffic_from(0, ip(2), N, t0);
        assert_eq!(t.lookup(0, ip(2), t0), Some(M));
        // A request aimed at the router from the address is believed (STALE).
        t.learn_request(0, ip(3), N, t0);
        assert_eq!(t.lookup(0, ip(3), t0), Some(N));
        assert_eq!(t.lookup(1, ip(3), t0), None, "per leg");
    }

    #[test]
    fn a_flood_of_requests_cannot_lock_out_a_new_neighbour() {
        let t0 = Instant::now();
        let mut t = NeighborTable::new(2, 100, Duration::from_secs(300));
        // Leg 1 has a confirmed neighbour; leg 0 gets a flood of senders.
        t.resolve(1, ip(1), t0);
        t.confirm(1, ip(1), M, t0);
        for k in 0..100_000 {
            t.learn_request(0, ip(1000 + k), N, t0 + Duration::from_micros(k as u64));
            assert!(t.len() <= 200);
        }
        assert_eq!(t.lookup(1, ip(1), t0), Some(M), "the other leg untouched");
        // A new neighbour on the flooded leg is still asked for and learned.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(t.resolve(0, ip(7), later), Resolution::Ask);
        assert!(t.confirm(0, ip(7), M, later));
        assert_eq!(t.lookup(0, ip(7), later), Some(M));
        assert!(t.stats().evicted > 99_000);
    }

    #[test]
    fn asking_for_too_many_at_once_is_refused_without_requests() {
        let t0 = Instant::now();
        let mut t = NeighborTable::new(1, 4096, Duration::from_secs(300));
        let asks = (0..100_000)
            .filter(|&k| t.resolve(0, ip(k), t0) == Resolution::Ask)
            .count();
        assert_eq!(asks, INCOMPLETE_MAX);
        assert_eq!(t.stats().busy, 100_000 - INCOMPLETE_MAX as u64);
    }

    #[test]
    fn permanent_entries_stay_whatever_arp_says() {
        let t0 = Instant::now();
        let mut t = NeighborTable::new(1, 16, Duration::from_secs(10));
        t.add_permanent(0, ip(2), M, t0);
        assert_eq!(t.resolve(0, ip(2), t0), Resolution::Known(M));
        t.learn_request(0, ip(2), N, t0);
        t.refresh(0, ip(2), N, t0);
        t.confirm(0, ip(2), N, t0);
        t.tick(t0 + Duration::from_secs(100), |_, _| true);
        assert_eq!(t.lookup(0, ip(2), t0 + Duration::from_secs(100)), Some(M));
    }

    #[test]
    fn entries_age_out() {
        let t0 = Instant::now();
        let mut t = NeighborTable::new(1, 16, Duration::from_secs(10));
        t.learn_request(0, ip(2), M, t0);
        t.tick(t0 + Duration::from_secs(5), |_, _| true);
        assert_eq!(t.len(), 1);
        t.tick(t0 + Duration::from_secs(11), |_, _| true);
        assert!(t.is_empty());
        assert_eq!(t.stats().aged_out, 1);
    }
}
