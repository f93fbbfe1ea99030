//! The steady state allocates nothing per packet: a counting global allocator watches
//! the datapath thread while it forwards thousands of frames through the real poll loop.

mod seqpacket_port;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use seqpacket_port::{frame, pair, tso_frame, Peer};
use vswitch::{BridgeConfig, Datapath, PortInfo};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
}
/// Threads watched by their Linux thread id (the datapath's workers, which the test
/// cannot reach to set `WATCHING`); 0 is a free slot.
static WATCHED_TIDS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

fn watched() -> bool {
    if WATCHING.with(Cell::get) {
        return true;
    }
    if WATCHED_TIDS[0].load(Ordering::Relaxed) == 0 {
        return false;
    }
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u64;
    WATCHED_TIDS
        .iter()
        .any(|t| t.load(Ordering::Relaxed) == tid)
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if watched() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if watched() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
const C: [u8; 6] = [2, 0, 0, 0, 0, 0xc];

/// A datapath on `threads` threads with bridge br0 and ports a, b and c, each with a
/// queue per thread; the test's ends of them, by port, then queue.
fn three_ports(threads: usize) -> (Datapath, Vec<Vec<Peer>>) {
    let mut dp = Datapath::new(128).unwrap();
    dp.set_threads(threads).unwrap();
    let br = dp.add_bridge(BridgeConfig {
        name: "br0".into(),
        mtu: 1500,
        fdb_max: 1024,
        fdb_aging: Duration::from_secs(300),
    });
    let mut peers = Vec::new();
    for name in ["a", "b", "c"] {
        let mut queues = Vec::new();
        let mut ends = Vec::new();
        for _ in 0..threads {
            let (io, peer) = pair(true);
            queues.push(Box::new(io) as Box<dyn vswitch::Port>);
            ends.push(peer);
        }
        let first = queues.remove(0);
        let id = dp.add_port(PortInfo::named(name, br), first).unwrap();
        dp.add_port_queues(id, queues);
        peers.push(ends);
    }
    (dp, peers)
}

/// What each round sends: unicast both ways, a 60 KB TCP super-frame as a container
/// with TSO hands it over, a broadcast, and a source MAC never seen before, to learn.
struct Frames {
    unicast_ab: Vec<u8>,
    unicast_ba: Vec<u8>,
    broadcast: Vec<u8>,
    super_frame: Vec<u8>,
    newcomer: Vec<u8>,
    n: u32,
}

impl Frames {
    fn new() -> Frames {
        Frames {
            unicast_ab: frame(B, A, 1000),
            unicast_ba: frame(A, B, 64),
            broadcast: frame([0xff; 6], C, 64),
            super_frame: tso_frame(B, A, 60_000, 1448),
            newcomer: frame(B, [2, 0, 1, 0, 0, 0], 64),
            n: 0,
        }
    }

    /// The next newcomer: its source MAC one more than the last.
    fn newcomer(&mut self) -> &[u8] {
        self.n += 1;
        self.newcomer[18..22].copy_from_slice(&self.n.to_be_bytes());
        &self.newcomer
    }
}

/// Per round: 40 unicast, one super-frame, one newcomer to B, a broadcast to two.
const PER_ROUND: usize = 40 + 1 + 1 + 2;

/// Frames waiting at the test's ends of every queue, taken and counted.
fn take(peers: &[Vec<Peer>], sink: &mut [u8]) -> usize {
    let mut got = 0;
    for p in peers.iter().flatten() {
        while p.recv(sink).is_some() {
            got += 1;
        }
    }
    got
}

#[test]
fn forwarding_allocates_nothing_per_packet() {
    let (mut dp, peers) = three_ports(1);
    let mut f = Frames::new();
    let mut sink = vec![0u8; 70_000];
    let mut round = |dp: &mut Datapath| {
        for _ in 0..20 {
            peers[0][0].send(&f.unicast_ab);
            peers[1][0].send(&f.unicast_ba);
        }
        peers[0][0].send(&f.super_frame);
        peers[2][0].send(f.newcomer());
        peers[2][0].send(&f.broadcast);
        for _ in 0..3 {
            dp.poll_once(Some(Duration::from_millis(1))).unwrap();
        }
        take(&peers, &mut sink)
    };
    // Warm up: learning, first flood, lazily sized kernel and mio state.
    for _ in 0..10 {
        round(&mut dp);
    }
    // Small frames go out in io_uring batches where the kernel allows io_uring: that
    // is the path watched below.
    assert_eq!(
        dp.write_batching(),
        vswitch::uring::WriteBatch::new().is_ok()
    );

    WATCHING.with(|w| w.set(true));
    let mut forwarded = 0;
    for _ in 0..200 {
        forwarded += round(&mut dp);
    }
    WATCHING.with(|w| w.set(false));

    assert_eq!(forwarded, 200 * PER_ROUND, "every frame delivered");
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "allocations while forwarding {forwarded} frames"
    );
}

/// The same with two datapath threads: each port has a queue per thread, and the test
/// sends on both. The worker forwards known unicast itself and hands the rest (the
/// newcomer, the broadcast) to thread 0, which learns and publishes a new copy of the
/// FDB for the worker every round: none of it allocates, on either thread.
/// A turn of thread 0 with nothing sent (5 ms at most), and the frames that came out.
fn round_quiet(dp: &mut Datapath, peers: &[Vec<Peer>]) -> usize {
    let mut sink = vec![0u8; 70_000];
    dp.poll_once(Some(Duration::from_millis(5))).unwrap();
    take(peers, &mut sink)
}

#[test]
fn forwarding_on_two_threads_allocates_nothing_per_packet() {
    let (mut dp, peers) = three_ports(2);
    let mut f = Frames::new();
    let mut sink = vec![0u8; 70_000];
    // One round: the frames in, three turns of thread 0, then what came out. On a busy
    // machine the worker may lag; with `wait`, the round goes on taking until its own
    // frames are out (up to 5 s), so that no backlog of rounds fills a test socket.
    let mut round = |dp: &mut Datapath, wait: bool| {
        for _ in 0..20 {
            // The worker's queues (thread 0 learns these sources once, at warm-up).
            peers[0][1].send(&f.unicast_ab);
            peers[1][1].send(&f.unicast_ba);
        }
        peers[0][1].send(&f.super_frame);
        peers[2][1].send(f.newcomer());
        peers[2][0].send(&f.broadcast);
        for _ in 0..3 {
            dp.poll_once(Some(Duration::from_millis(1))).unwrap();
        }
        let mut got = take(&peers, &mut sink);
        let deadline = Instant::now() + Duration::from_secs(5);
        while wait && got < PER_ROUND && Instant::now() < deadline {
            dp.poll_once(Some(Duration::from_millis(1))).unwrap();
            got += take(&peers, &mut sink);
        }
        got
    };
    // Warm up: learning (through thread 0), the first copies of the tables; then
    // 50 ms with nothing new, so that nothing of it is counted below.
    let mut warm = 0;
    for _ in 0..20 {
        warm += round(&mut dp, false);
    }
    assert!(warm > 0);
    let mut quiet = 0;
    while quiet < 10 {
        quiet = if round_quiet(&mut dp, &peers) == 0 {
            quiet + 1
        } else {
            0
        };
    }
    let worker = dp.thread_stats()[1];
    assert_ne!(worker.tid, 0, "the worker runs");
    // Both threads write small frames in io_uring batches (where the kernel allows
    // io_uring), so that path is the one watched here.
    let uring = vswitch::uring::WriteBatch::new().is_ok();
    assert_eq!(dp.write_batching(), uring);
    assert_eq!(worker.batched_writes, uring);
    WATCHED_TIDS[1].store(worker.tid, Ordering::Relaxed);
    // SAFETY: gettid has no preconditions.
    WATCHED_TIDS[0].store(unsafe { libc::gettid() } as u64, Ordering::Relaxed);
    let mut forwarded = 0;
    for _ in 0..200 {
        forwarded += round(&mut dp, true);
    }
    WATCHED_TIDS[0].store(0, Ordering::Relaxed);
    let after = dp.thread_stats();

    let drops: Vec<_> = dp
        .ports()
        .flat_map(|p| {
            vswitch::DropReason::ALL
                .iter()
                .filter(move |r| p.counters.drops[**r as usize] > 0)
                .map(move |r| (p.id, r.name(), p.counters.drops[*r as usize]))
        })
        .collect();
    assert_eq!(
        forwarded,
        200 * PER_ROUND,
        "every frame delivered (drops: {drops:?})"
    );
    assert!(
        after[1].frames >= 200 * 41,
        "the worker forwarded the known unicast itself: {after:?}"
    );
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "allocations while forwarding {forwarded} frames on two threads"
    );
}
