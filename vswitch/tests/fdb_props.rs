//! The forwarding database against a model: arbitrary sequences of learn, lookup, age,
//! add_static, flush_port and the passing of time, each result compared with what a
//! plain map that follows `Fdb`'s documented contract says. Along the way: never more
//! learned entries than the limit, a static entry never moves or ages, a lookup after
//! learning gives the learned port until the entry ages out, the counters agree.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use vswitch::fdb::{Fdb, FdbStats, Learned};
use vswitch::Mac;

/// Ports are small numbers; `Fdb` is generic over them.
type Port = u8;

#[derive(Debug, Clone)]
enum Op {
    Learn(u8, Port),
    Lookup(u8),
    Age,
    AddStatic(u8, Port),
    FlushPort(Port),
    StaticElsewhere(u8, Port),
    /// Time passes (milliseconds).
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    // Few addresses and ports, so that they meet: moves, conflicts, a full table.
    let m = 0u8..12;
    let p = 0u8..4;
    prop_oneof![
        6 => (m.clone(), p.clone()).prop_map(|(m, p)| Op::Learn(m, p)),
        3 => m.clone().prop_map(Op::Lookup),
        1 => Just(Op::Age),
        1 => (m.clone(), p.clone()).prop_map(|(m, p)| Op::AddStatic(m, p)),
        1 => p.clone().prop_map(Op::FlushPort),
        1 => (m, p).prop_map(|(m, p)| Op::StaticElsewhere(m, p)),
        3 => prop_oneof![0u64..1500, Just(1000), Just(2000), Just(0)].prop_map(Op::Wait),
    ]
}

fn mac(n: u8) -> Mac {
    Mac([2, 0, 0, 0, 0, n])
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    port: Port,
    last_seen: Instant,
    fixed: bool,
}

/// What `Fdb` promises, as a plain map.
struct Model {
    entries: HashMap<Mac, Entry>,
    max: usize,
    aging: Duration,
    stats: FdbStats,
}

impl Model {
    fn stale(&self, e: &Entry, now: Instant) -> bool {
        !e.fixed && now.saturating_duration_since(e.last_seen) >= self.aging
    }

    /// Learned (not static) entries, expired ones not yet swept included: what the
    /// limit counts.
    fn learned(&self) -> usize {
        self.entries.values().filter(|e| !e.fixed).count()
    }

    fn learn(&mut self, mac: Mac, port: Port, now: Instant) -> Learned<Port> {
        if let Some(e) = self.entries.get(&mac).copied() {
            if e.fixed {
                if e.port == port {
                    return Learned::Refreshed;
                }
                self.stats.static_conflicts += 1;
                return Learned::StaticConflict;
            }
            let stale = self.stale(&e, now);
            self.entries.insert(
                mac,
                Entry {
                    port,
                    last_seen: now,
                    fixed: false,
                },
            );
            return if e.port == port {
                Learned::Refreshed
            } else if stale {
                self.stats.learned += 1;
                Learned::New
            } else {
                self.stats.moved += 1;
                Learned::Moved { from: e.port }
            };
        }
        if self.learned() >= self.max {
            self.stats.not_learned_full += 1;
            return Learned::TableFull;
        }
        self.entries.insert(
            mac,
            Entry {
                port,
                last_seen: now,
                fixed: false,
            },
        );
        self.stats.learned += 1;
        Learned::New
    }

    fn lookup(&self, mac: Mac, now: Instant) -> Option<Port> {
        self.entries
            .get(&mac)
            .filter(|e| !self.stale(e, now))
            .map(|e| e.port)
    }

    fn age(&mut self, now: Instant) -> usize {
        let before = self.entries.len();
        let aging = self.aging;
        self.entries
            .retain(|_, e| e.fixed || now.saturating_duration_since(e.last_seen) < aging);
        let removed = before - self.entries.len();
        self.stats.aged_out += removed as u64;
        removed
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1024,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_fdb_follows_its_model(
        max in 0usize..6,
        aging_ms in 1u64..3000,
        ops in prop::collection::vec(op(), 0..80),
    ) {
        let aging = Duration::from_millis(aging_ms);
        let mut now = Instant::now();
        let mut fdb: Fdb<Port> = Fdb::new(max, aging);
        let mut model = Model { entries: HashMap::new(), max, aging, stats: FdbStats::default() };
        // Static entries as they were made: (port) by address.
        let mut statics: HashMap<Mac, Port> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            match *op {
                Op::Learn(m, p) => {
                    let got = fdb.learn(mac(m), p, now);
                    let want = model.learn(mac(m), p, now);
                    prop_assert_eq!(got, want, "op {}: {:?}", i, op);
                    if matches!(got, Learned::New | Learned::Refreshed | Learned::Moved { .. }) {
                        prop_assert_eq!(fdb.lookup(mac(m), now), Some(p), "op {}: learned, then looked up", i);
                    }
                }
                Op::Lookup(m) => {
                    prop_assert_eq!(fdb.lookup(mac(m), now), model.lookup(mac(m), now), "op {}: {:?}", i, op);
                }
                Op::Age => {
                    prop_assert_eq!(fdb.age(now), model.age(now), "op {}: {:?}", i, op);
                }
                Op::AddStatic(m, p) => {
                    fdb.add_static(mac(m), p, now);
                    model.entries.insert(mac(m), Entry { port: p, last_seen: now, fixed: true });
                    statics.insert(mac(m), p);
                }
                Op::FlushPort(p) => {
                    fdb.flush_port(p);
                    model.entries.retain(|_, e| e.port != p);
                    statics.retain(|_, port| *port != p);
                }
                Op::StaticElsewhere(m, p) => {
                    let want = model.entries.get(&mac(m)).is_some_and(|e| e.fixed && e.port != p);
                    prop_assert_eq!(fdb.static_elsewhere(mac(m), p), want, "op {}: {:?}", i, op);
                }
                Op::Wait(ms) => now += Duration::from_millis(ms),
            }
            // After every step: the same entries, the limit kept, statics in place.
            prop_assert_eq!(fdb.len(), model.entries.len(), "op {}: {:?}", i, op);
            prop_assert!(model.learned() <= max, "op {}: more learned entries than the limit", i);
            prop_assert_eq!(fdb.stats(), model.stats, "op {}: {:?}", i, op);
            for (m, p) in &statics {
                prop_assert_eq!(fdb.lookup(*m, now), Some(*p), "op {}: a static entry moved or aged", i);
            }
            let mut live: Vec<(Mac, Port, bool)> = fdb.entries(now).map(|(m, e)| (m, e.port, e.fixed)).collect();
            live.sort();
            let mut want: Vec<(Mac, Port, bool)> = model
                .entries
                .iter()
                .filter(|(_, e)| !model.stale(e, now))
                .map(|(m, e)| (*m, e.port, e.fixed))
                .collect();
            want.sort();
            prop_assert_eq!(live, want, "op {}: {:?}", i, op);
        }
        // However the table got here, it can be filled to its limit and no further
        // once everything learned has aged out.
        now += aging + Duration::from_millis(1);
        fdb.age(now);
        model.age(now);
        let mut learned = 0;
        for n in 100..100 + max as u8 + 2 {
            if fdb.learn(mac(n), 0, now) == Learned::New {
                learned += 1;
            }
        }
        prop_assert_eq!(learned, max, "the table takes exactly its limit once empty");
    }
}
