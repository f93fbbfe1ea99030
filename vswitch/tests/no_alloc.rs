//! The steady state allocates nothing per packet: a counting global allocator watches
//! the datapath thread while it forwards thousands of frames through the real poll loop.

mod seqpacket_port;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use seqpacket_port::{frame, pair, tso_frame};
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

#[test]
fn forwarding_allocates_nothing_per_packet() {
    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
    const C: [u8; 6] = [2, 0, 0, 0, 0, 0xc];
    let mut dp = Datapath::new(128).unwrap();
    let br = dp.add_bridge(BridgeConfig {
        name: "br0".into(),
        mtu: 1500,
        fdb_max: 1024,
        fdb_aging: Duration::from_secs(300),
    });
    let mut peers = Vec::new();
    for name in ["a", "b", "c"] {
        let (io, peer) = pair(true);
        let info = PortInfo::named(name, br);
        dp.add_port(info, Box::new(io)).unwrap();
        peers.push(peer);
    }
    let unicast_ab = frame(B, A, 1000);
    let unicast_ba = frame(A, B, 64);
    let broadcast = frame([0xff; 6], C, 64);
    // A 60 KB TCP super-frame as a container with TSO hands it over.
    let super_frame = tso_frame(B, A, 60_000, 1448);
    // Each round also brings a source MAC never seen before, to be learned.
    let mut newcomer = frame(B, [2, 0, 1, 0, 0, 0], 64);
    let mut sink = vec![0u8; 70_000];

    let mut n: u32 = 0;
    let mut round = |dp: &mut Datapath| {
        for _ in 0..20 {
            peers[0].send(&unicast_ab);
            peers[1].send(&unicast_ba);
        }
        peers[0].send(&super_frame);
        n += 1;
        newcomer[18..22].copy_from_slice(&n.to_be_bytes());
        peers[2].send(&newcomer);
        peers[2].send(&broadcast);
        for _ in 0..3 {
            dp.poll_once(Some(Duration::from_millis(1))).unwrap();
        }
        let mut got = 0;
        for p in &peers {
            while p.recv(&mut sink).is_some() {
                got += 1;
            }
        }
        got
    };
    // Warm up: learning, first flood, lazily sized kernel and mio state.
    for _ in 0..10 {
        round(&mut dp);
    }

    WATCHING.with(|w| w.set(true));
    let mut forwarded = 0;
    for _ in 0..200 {
        forwarded += round(&mut dp);
    }
    WATCHING.with(|w| w.set(false));

    // Per round: 40 unicast, one super-frame, one newcomer to B, a broadcast to two.
    assert_eq!(forwarded, 200 * (40 + 1 + 1 + 2), "every frame delivered");
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
#[test]
fn forwarding_on_two_threads_allocates_nothing_per_packet() {
    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
    const C: [u8; 6] = [2, 0, 0, 0, 0, 0xc];
    let mut dp = Datapath::new(128).unwrap();
    dp.set_threads(2).unwrap();
    let br = dp.add_bridge(BridgeConfig {
        name: "br0".into(),
        mtu: 1500,
        fdb_max: 1024,
        fdb_aging: Duration::from_secs(300),
    });
    // peers[port][queue]
    let mut peers = Vec::new();
    for name in ["a", "b", "c"] {
        let (io0, peer0) = pair(true);
        let (io1, peer1) = pair(true);
        let id = dp
            .add_port(PortInfo::named(name, br), Box::new(io0))
            .unwrap();
        dp.add_port_queues(id, vec![Box::new(io1)]);
        peers.push([peer0, peer1]);
    }
    let unicast_ab = frame(B, A, 1000);
    let unicast_ba = frame(A, B, 64);
    let broadcast = frame([0xff; 6], C, 64);
    let super_frame = tso_frame(B, A, 60_000, 1448);
    let mut newcomer = frame(B, [2, 0, 1, 0, 0, 0], 64);
    let mut sink = vec![0u8; 70_000];

    let mut n: u32 = 0;
    let mut round = |dp: &mut Datapath| {
        for _ in 0..20 {
            // The worker's queues (thread 0 learns these sources once, at warm-up).
            peers[0][1].send(&unicast_ab);
            peers[1][1].send(&unicast_ba);
        }
        peers[0][1].send(&super_frame);
        n += 1;
        newcomer[18..22].copy_from_slice(&n.to_be_bytes());
        peers[2][1].send(&newcomer);
        peers[2][0].send(&broadcast);
        for _ in 0..3 {
            dp.poll_once(Some(Duration::from_millis(1))).unwrap();
        }
        let mut got = 0;
        for queues in &peers {
            for p in queues {
                while p.recv(&mut sink).is_some() {
                    got += 1;
                }
            }
        }
        got
    };
    // Warm up: learning (through thread 0), the first copies of the tables.
    let mut warm = 0;
    for _ in 0..20 {
        warm += round(&mut dp);
    }
    assert!(warm > 0);
    let worker = dp.thread_stats()[1];
    assert_ne!(worker.tid, 0, "the worker runs");
    WATCHED_TIDS[1].store(worker.tid, Ordering::Relaxed);
    // SAFETY: gettid has no preconditions.
    WATCHED_TIDS[0].store(unsafe { libc::gettid() } as u64, Ordering::Relaxed);
    let mut forwarded = 0;
    for _ in 0..200 {
        forwarded += round(&mut dp);
    }
    // Whatever the worker still had in hand.
    for _ in 0..100 {
        if forwarded >= 200 * 44 {
            break;
        }
        dp.poll_once(Some(Duration::from_millis(5))).unwrap();
        for queues in &peers {
            for p in queues {
                while p.recv(&mut sink).is_some() {
                    forwarded += 1;
                }
            }
        }
    }
    WATCHED_TIDS[0].store(0, Ordering::Relaxed);
    let after = dp.thread_stats();

    assert_eq!(forwarded, 200 * (40 + 1 + 1 + 2), "every frame delivered");
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
