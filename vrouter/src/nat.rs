//! NAT flows: each translated connection, found from either direction, with idle
//! timeouts and a hard limit (`nat_max_flows`): when full, the least recently used
//! flow is evicted (counted). A slab with an index-linked LRU list, so every operation
//! is O(1) and nothing is allocated after start-up. The timeouts follow conntrack's:
//! an established TCP connection lives for days unless the table needs its slot.

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub use vswitch::wire::flow::FlowKey;
pub use vswitch::wire::{PROTO_TCP, PROTO_UDP};

/// A translated flow: what the client sent (`original`), and what the far side sees
/// and answers (`reply`, as the reply arrives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// client -> service address, as the client sent it.
    pub original: FlowKey,
    /// backend -> client (or the address the client was translated to), as the
    /// backend answers.
    pub reply: FlowKey,
    /// Which service (or forward) the flow belongs to, for counting.
    pub owner: usize,
    pub last_seen: Instant,
    /// A FIN or RST was seen: the flow is let go soon.
    pub closing: bool,
    /// TCP: the next sequence number each way (index 0: as the client sends, 1: as
    /// the far side answers), to reset both ends in their windows should the flow
    /// be dropped while they still hold the connection.
    pub next_seq: [Option<u32>; 2],
    /// TCP: both FINs, or a reset, went by: the ends are done with it.
    pub finished: bool,
    /// TCP: which ends sent a FIN (bit 0 the client, bit 1 the far side).
    pub fins: u8,
}

/// Idle timeouts of flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// An established TCP connection with no packet either way (conntrack's
    /// `nf_conntrack_tcp_timeout_established`: 5 days; RFC 5382 asks at least 2 h 4 min).
    pub tcp: Duration,
    /// A TCP connection after a FIN or RST (conntrack's TIME_WAIT: 120 s).
    pub tcp_closing: Duration,
    /// A UDP flow (RFC 4787 REQ-5: at least 2 minutes).
    pub udp: Duration,
    /// An ICMP echo flow (conntrack's `nf_conntrack_icmp_timeout`: 30 s).
    pub icmp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp: Duration::from_secs(432_000),
            tcp_closing: Duration::from_secs(120),
            udp: Duration::from_secs(120),
            icmp: Duration::from_secs(30),
        }
    }
}

/// What [`FlowTable::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Added; the table was full and this flow, the least recently used, made room.
    Added { evicted: Option<Flow> },
    /// Not added: one of its keys belongs to a live flow.
    KeyTaken,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub created: u64,
    pub expired: u64,
    pub evicted: u64,
}

/// Which way a packet runs through a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Original,
    Reply,
}

const NIL: u32 = u32::MAX;

struct Slot {
    flow: Option<Flow>,
    prev: u32,
    next: u32,
}

pub struct FlowTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: HashMap<FlowKey, (u32, Direction)>,
    /// Most recently used first.
    head: u32,
    tail: u32,
    len: usize,
    timeouts: Timeouts,
    stats: FlowStats,
}

impl FlowTable {
    pub fn new(max: usize, timeouts: Timeouts) -> FlowTable {
        let max = max.max(1);
        FlowTable {
            slots: (0..max)
                .map(|_| Slot {
                    flow: None,
                    prev: NIL,
                    next: NIL,
                })
                .collect(),
            free: (0..max as u32).rev().collect(),
            // Two keys per flow; twice that again so churn never grows the map.
            index: HashMap::with_capacity(max * 4),
            head: NIL,
            tail: NIL,
            len: 0,
            timeouts,
            stats: FlowStats::default(),
        }
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = (self.slots[i as usize].prev, self.slots[i as usize].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
    }

    fn push_front(&mut self, i: u32) {
        self.slots[i as usize].prev = NIL;
        self.slots[i as usize].next = self.head;
        if self.head != NIL {
            self.slots[self.head as usize].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    fn timeout(&self, flow: &Flow) -> Duration {
        match (flow.original.proto, flow.closing) {
            (PROTO_TCP, false) => self.timeouts.tcp,
            (PROTO_TCP, true) => self.timeouts.tcp_closing,
            _ => self.timeouts.udp,
        }
    }

    fn remove_slot(&mut self, i: u32) -> Option<Flow> {
        let flow = self.slots[i as usize].flow.take()?;
        self.index.remove(&flow.original);
        self.index.remove(&flow.reply);
        self.unlink(i);
        self.free.push(i);
        self.len -= 1;
        Some(flow)
    }

    /// The flow a packet with this key belongs to, refreshed, and which way it runs.
    /// An expired flow is removed and not found.
    pub fn lookup(&mut self, key: &FlowKey, now: Instant) -> Option<(Flow, Direction)> {
        let &(i, dir) = self.index.get(key)?;
        let flow = self.slots[i as usize].flow?;
        if now.saturating_duration_since(flow.last_seen) >= self.timeout(&flow) {
            self.remove_slot(i);
            self.stats.expired += 1;
            return None;
        }
        let slot = &mut self.slots[i as usize];
        let f = slot.flow.as_mut().expect("checked");
        f.last_seen = now;
        let flow = *f;
        self.unlink(i);
        self.push_front(i);
        Some((flow, dir))
    }

    /// The flow `key` belongs to and which way, as it is: not refreshed, not expired
    /// (for an error about a packet of it).
    pub fn get(&self, key: &FlowKey) -> Option<(Flow, Direction)> {
        let &(i, dir) = self.index.get(key)?;
        Some((self.slots[i as usize].flow?, dir))
    }

    /// Records a TCP segment of the flow of `key` going `dir`: the sequence number
    /// after it (`next_seq`), and its FIN and RST flags.
    pub fn tcp_segment(
        &mut self,
        key: &FlowKey,
        dir: Direction,
        next_seq: u32,
        fin: bool,
        rst: bool,
    ) {
        let Some(&(i, _)) = self.index.get(key) else {
            return;
        };
        let Some(f) = self.slots[i as usize].flow.as_mut() else {
            return;
        };
        let side = match dir {
            Direction::Original => 0,
            Direction::Reply => 1,
        };
        // Only forward in sequence space: a keepalive or zero-window probe carries
        // snd.nxt - 1, and a reset sent there would be ignored (RFC 5961 3.2).
        match f.next_seq[side] {
            Some(cur) if (next_seq.wrapping_sub(cur) as i32) < 0 => {}
            _ => f.next_seq[side] = Some(next_seq),
        }
        if fin {
            f.fins |= 1 << side;
        }
        f.finished |= rst || f.fins == 3;
        f.closing |= fin || rst;
    }

    /// A small table holding only the flows of `keys` (either direction), for
    /// deciding on a copy (`tapnet trace`) without copying the whole table.
    pub fn excerpt(&self, keys: &[FlowKey]) -> FlowTable {
        let mut t = FlowTable::new(8, self.timeouts);
        for key in keys {
            let found = self
                .index
                .get(key)
                .or_else(|| self.index.get(&key.reversed()));
            if let Some(flow) = found.and_then(|&(i, _)| self.slots[i as usize].flow) {
                t.insert(flow);
            }
        }
        t
    }

    /// Whether a key is taken by a live flow (for choosing a free translated port).
    pub fn contains(&self, key: &FlowKey) -> bool {
        self.index.contains_key(key)
    }

    /// Adds a flow, evicting the least recently used one if the table is full.
    pub fn insert(&mut self, flow: Flow) -> Inserted {
        if self.index.contains_key(&flow.original) || self.index.contains_key(&flow.reply) {
            return Inserted::KeyTaken;
        }
        let mut evicted = None;
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                let victim = self.tail;
                evicted = self.remove_slot(victim);
                self.stats.evicted += 1;
                self.free.pop().expect("just freed")
            }
        };
        self.slots[i as usize].flow = Some(flow);
        self.index.insert(flow.original, (i, Direction::Original));
        self.index.insert(flow.reply, (i, Direction::Reply));
        self.push_front(i);
        self.len += 1;
        self.stats.created += 1;
        Inserted::Added { evicted }
    }

    /// Removes every flow `of` says belongs to something gone (a detached container),
    /// whatever its age; how many.
    pub fn forget(&mut self, mut of: impl FnMut(&Flow) -> bool) -> usize {
        let mut gone = 0;
        for i in 0..self.slots.len() {
            if self.slots[i].flow.as_ref().is_some_and(&mut of) {
                self.remove_slot(i as u32);
                gone += 1;
            }
        }
        gone
    }

    /// Renumbers flows' owners after owner `gone` was removed from a list: those
    /// after it move down by one.
    pub fn owner_removed(&mut self, gone: usize) {
        for slot in &mut self.slots {
            if let Some(f) = slot.flow.as_mut() {
                if f.owner > gone {
                    f.owner -= 1;
                }
            }
        }
    }

    /// Removes flows idle past their timeout, oldest first, handing each to `gone`
    /// (which may say "enough for now" by returning false: the rest wait).
    pub fn expire(&mut self, now: Instant, mut gone: impl FnMut(&Flow) -> bool) {
        let mut i = self.tail;
        while i != NIL {
            let prev = self.slots[i as usize].prev;
            if let Some(flow) = self.slots[i as usize].flow {
                if now.saturating_duration_since(flow.last_seen) >= self.timeout(&flow) {
                    if !gone(&flow) {
                        return;
                    }
                    self.remove_slot(i);
                    self.stats.expired += 1;
                }
            }
            i = prev;
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn stats(&self) -> FlowStats {
        self.stats
    }

    /// Live flows, most recently used first.
    pub fn flows(&self) -> impl Iterator<Item = &Flow> + '_ {
        let mut i = self.head;
        std::iter::from_fn(move || {
            while i != NIL {
                let slot = &self.slots[i as usize];
                i = slot.next;
                if let Some(f) = &slot.flow {
                    return Some(f);
                }
            }
            None
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddrV4;

    fn sa(last: u8, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new([10, 0, 0, last].into(), port)
    }

    fn flow(client_port: u16, now: Instant) -> Flow {
        let original = FlowKey::v4(PROTO_TCP, sa(2, client_port), sa(100, 80));
        Flow {
            original,
            reply: FlowKey::v4(PROTO_TCP, sa(3, 80), sa(2, client_port)),
            owner: 0,
            last_seen: now,
            closing: false,
            next_seq: [None; 2],
            finished: false,
            fins: 0,
        }
    }

    #[test]
    fn found_from_both_directions() {
        let now = Instant::now();
        let mut t = FlowTable::new(8, Timeouts::default());
        let f = flow(40000, now);
        assert_eq!(t.insert(f), Inserted::Added { evicted: None });
        assert_eq!(t.insert(f), Inserted::KeyTaken);
        assert_eq!(t.lookup(&f.original, now).unwrap().1, Direction::Original);
        assert_eq!(t.lookup(&f.reply, now).unwrap().1, Direction::Reply);
        assert!(t.lookup(&f.original.reversed(), now).is_none());
    }

    #[test]
    fn idle_flows_expire_and_closing_ones_sooner() {
        let now = Instant::now();
        let mut t = FlowTable::new(8, Timeouts::default());
        let a = flow(1, now);
        let b = flow(2, now);
        t.insert(a);
        t.insert(b);
        t.tcp_segment(&b.reply, Direction::Reply, 5, true, false);
        let later = now + Duration::from_secs(121);
        let mut gone = Vec::new();
        t.expire(later, |f| {
            gone.push(*f);
            true
        });
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].next_seq, [None, Some(5)]);
        assert!(gone[0].closing && !gone[0].finished);
        assert_eq!(t.len(), 1);
        assert!(t.lookup(&a.original, later).is_some());
        assert!(
            t.lookup(&a.original, later + Duration::from_secs(3 * 86_400))
                .is_some(),
            "established TCP lives for days"
        );
        assert!(t
            .lookup(&a.original, later + Duration::from_secs(9 * 86_400))
            .is_none());
        assert!(t.is_empty());
        assert_eq!(t.stats().expired, 2);
    }

    #[test]
    fn a_flood_of_flows_stays_within_the_limit_evicting_the_least_recent() {
        let now = Instant::now();
        let mut t = FlowTable::new(100, Timeouts::default());
        let keep = flow(1, now);
        t.insert(keep);
        let cap = t.index.capacity();
        for p in 2..10_000u16 {
            match t.insert(flow(p, now)) {
                Inserted::Added { evicted: Some(old) } => assert_ne!(old.original, keep.original),
                Inserted::Added { evicted: None } => assert!(p <= 100),
                Inserted::KeyTaken => panic!("fresh keys"),
            }
            // The flow in use stays: it is looked up all along.
            assert!(t.lookup(&keep.original, now).is_some(), "evicted at {p}");
        }
        assert_eq!(t.len(), 100);
        assert_eq!(t.stats().evicted, 10_000 - 1 - 100);
        assert!(t.index.capacity() <= cap, "the index never grew");
        assert_eq!(t.flows().count(), 100);
    }
}
