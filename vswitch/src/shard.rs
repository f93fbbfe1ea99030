//! The datapath's threads beyond the first: every core forwards.
//!
//! A TAP port has one queue per thread (`IFF_MULTI_QUEUE`, [`crate::tap::Tap::create_queues`]).
//! The kernel's flow hash picks the queue a container's frame arrives on, and a flow
//! tapnet writes on a queue answers on it, so each flow stays with one thread and in
//! order. Thread 0 is the [`crate::Datapath`] itself, with the bridges, the handlers
//! (router, NAT, VXLAN), captures and impairments, as with one thread. Every other
//! thread ("worker") reads its queue of every TAP and forwards the common case itself:
//! a unicast frame between two TAP ports of one bridge, from a source learned on its
//! port to a destination learned elsewhere ([`decide`]). Anything else (a flood, a frame
//! for the router or VXLAN, a source not learned yet or moved, a port captured, mirrored
//! or impaired) it hands to thread 0 as if thread 0 had read it ([`Handoff`]), so every
//! rule of the datapath holds unchanged. A frame thread 0 writes steers its flow to
//! queue 0, so flows through the router settle on thread 0 after their first exchange.
//!
//! The tables are read without locks: thread 0 owns the FDB and publishes a read-only
//! copy ([`View`]) through `arc-swap`: a change of ports before it next sleeps, an
//! address added, moved or gone at most so often that copying takes a tenth of its
//! time (see `Datapath::publish`); workers load it once per wakeup. Workers never write
//! a table; they report the learned sources they forwarded from, so thread 0 keeps
//! those entries from ageing out ([`crate::fdb::Fdb::refresh`]), and a source they
//! cannot report goes to thread 0 itself. Counters are per thread and summed into
//! thread 0's at each of its wakeups, so `show` sees them all. A worker takes its
//! ports in turn, starting one further on each wakeup, and one port may hand over at
//! most a quarter of its buffers a turn, so one flooding container cannot keep the
//! others unread.
//!
//! Nothing here allocates per frame: each worker reads into one buffer, hand-overs move
//! preallocated boxes through bounded channels, and the sets and vectors are sized up
//! front.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{bounded, Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::bridge::BridgeId;
use crate::counters::{DropReason, PortCounters};
use crate::fdb::Mac;
use crate::frame::{check_ingress, destination_mac, source_mac, VnetHdr, VNET_HDR_LEN};
use crate::guard::PortGuard;
use crate::pool::{BUF_SIZE, MAX_FRAME};
use crate::port::{is_fatal, Port, PortId};
use crate::uring::{WriteBatch, Written};

/// Frames a worker may have handed to thread 0 and thread 0 not taken yet. Each holds
/// a buffer of [`BUF_SIZE`] bytes, allocated at start. When all are out, the worker
/// stops reading until thread 0 gives some back and wakes it: frames wait in the
/// TAP's queue (and past its length the kernel drops them, counted as the container's
/// TX drops), as they would for one saturated thread.
pub const HANDOFF_QUEUE: usize = 64;
/// Frames a worker reads from one queue per wakeup before moving on to the next.
const BATCH: usize = 64;
/// Of those, how many one queue may hand to thread 0 in a turn: a quarter of the
/// hand-over buffers, so one flooding container leaves the rest to the others.
const HANDOFF_BUDGET: usize = HANDOFF_QUEUE / 4;
/// Distinct learned (source, port) pairs a worker remembers between reports to thread
/// 0 (and pairs a report holds until thread 0 takes it); with both full, frames from a
/// further source go to thread 0, which refreshes its entry itself.
const SEEN_MAX: usize = 4096;
/// How often a worker reports the sources it forwarded from.
const SEEN_REPORT: Duration = Duration::from_millis(500);
const WAKE: Token = Token(usize::MAX - 1);

/// What a worker knows of one port.
#[derive(Debug, Clone)]
pub struct FastPort {
    pub bridge: BridgeId,
    pub guard: Option<PortGuard>,
    /// A device port that is up, with nothing that only thread 0 does (capture,
    /// mirror, impairment): workers may forward from and to it.
    pub fast: bool,
}

/// What a worker knows of one bridge.
#[derive(Debug, Clone, Default)]
pub struct BridgeView {
    pub mtu: u32,
    /// The FDB as thread 0 last published it: live entries, static ones included,
    /// each with its port and whether it was learned (so ages, unlike a static one).
    pub fdb: HashMap<Mac, (PortId, bool)>,
    /// The FDB's [`crate::fdb::Fdb::generation`] it was copied at.
    pub generation: u64,
}

/// The read-only copy of the tables that workers forward by. Thread 0 keeps a few
/// and refills one that no worker reads any more, in place, so publishing allocates
/// nothing once their tables have grown to size.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// By [`PortId`]; None for a removed or internal port.
    pub ports: Vec<Option<FastPort>>,
    /// The datapath's ports generation `ports` was made at.
    pub ports_gen: u64,
    pub bridges: Vec<BridgeView>,
}

/// What a worker does with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fast {
    /// Write it to port `egress`'s queue of the same thread. `learned`: the source's
    /// entry was learned, not static, so thread 0 must hear it was seen (or it ages).
    Forward { egress: PortId, learned: bool },
    /// Hand it to thread 0, which decides as if it had read it.
    Handoff,
    /// Drop it, counted on the ingress port: what thread 0 would drop for the same
    /// reason before looking at any table.
    Drop(DropReason),
}

/// The admission every frame passes before the bridge looks at it, on any thread:
/// its size, its virtio-net header against the bridge's MTU ([`check_ingress`]), and
/// the port's guard. `data` is the virtio-net header, then the Ethernet frame.
pub fn admit(guard: Option<&PortGuard>, mtu: u32, data: &[u8]) -> Result<VnetHdr, DropReason> {
    if data.len() > VNET_HDR_LEN + MAX_FRAME {
        // Longer than any frame a TAP may hand over (the buffer has a little slack).
        return Err(DropReason::Oversize);
    }
    let vnet = check_ingress(data, mtu)?;
    match guard {
        Some(g) => g.check(&data[VNET_HDR_LEN..]).map(|()| vnet),
        None => Ok(vnet),
    }
}

/// Decides what a worker does with `data` (virtio-net header and Ethernet frame) read
/// on its queue of `ingress`. Pure: the same view and frame give the same answer.
pub fn decide(view: &View, ingress: PortId, data: &[u8]) -> Fast {
    let Some(Some(port)) = view.ports.get(ingress.0) else {
        return Fast::Handoff;
    };
    if !port.fast {
        return Fast::Handoff;
    }
    let Some(bridge) = view.bridges.get(port.bridge.0) else {
        return Fast::Handoff;
    };
    if let Err(reason) = admit(port.guard.as_ref(), bridge.mtu, data) {
        return Fast::Drop(reason);
    }
    let eth = &data[VNET_HDR_LEN..];
    let (src, dst) = (source_mac(eth), destination_mac(eth));
    // Floods, and sources to learn or move (or bad ones, to count), are thread 0's.
    let learned = match bridge.fdb.get(&src) {
        Some(&(port, learned)) if port == ingress && !dst.is_multicast() => learned,
        _ => return Fast::Handoff,
    };
    match bridge.fdb.get(&dst) {
        Some(&(egress, _))
            if egress != ingress
                && view
                    .ports
                    .get(egress.0)
                    .and_then(Option::as_ref)
                    .is_some_and(|p| p.fast && p.bridge == port.bridge) =>
        {
            Fast::Forward { egress, learned }
        }
        _ => Fast::Handoff,
    }
}

/// A frame a worker read and thread 0 is to handle.
pub struct Handoff {
    pub port: PortId,
    /// Holds the frame (virtio-net header first) in `..len`; goes back to the worker's
    /// free list once thread 0 has copied it.
    pub buf: Box<[u8]>,
    pub len: usize,
}

/// Counts of one worker, summed into thread 0's at its next wakeup.
#[derive(Default)]
pub struct Report {
    pub counters: Vec<PortCounters>,
    /// Frames forwarded by bridge, for its `unicast` count.
    pub unicast: Vec<u64>,
    pub seen: Vec<(BridgeId, Mac, PortId)>,
}

/// What a worker and thread 0 share.
pub struct Shared {
    pub view: ArcSwap<View>,
    pub handoff_rx: Receiver<Handoff>,
    pub free_tx: Sender<Box<[u8]>>,
    pub report: Mutex<Report>,
    pub reported: AtomicBool,
    /// The worker stopped reading for want of a hand-over buffer: thread 0 wakes it
    /// when it gives some back.
    pub starved: AtomicBool,
    /// The worker's thread id (for `show threads`: its CPU time) and totals.
    pub tid: AtomicU64,
    pub forwarded: AtomicU64,
    pub handed_off: AtomicU64,
    /// Whether the worker writes through its io_uring batch ([`crate::uring`]).
    pub batched_writes: AtomicBool,
}

enum Msg {
    Add(PortId, Box<dyn Port>),
    Remove(PortId),
    Stop,
}

/// The CPUs the calling thread may run on, lowest first (`sched_getaffinity(2)`): a
/// process started under `taskset` or in a cpuset gets that set.
///
/// # Errors
/// What `sched_getaffinity` says (it cannot fail for the calling thread on Linux).
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is an empty set; the size passed is its own.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size given; pid 0 is this thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the set's size in bits.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// The set holding `cpu` alone; EINVAL past CPU_SETSIZE.
fn only(cpu: usize) -> io::Result<libc::cpu_set_t> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: as in `allowed_cpus`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    Ok(set)
}

/// Binds the calling thread to `cpu` alone (`sched_setaffinity(2)`). Threads it starts
/// afterwards inherit the binding.
///
/// # Errors
/// EINVAL for a CPU outside the process's cpuset or offline.
pub fn pin_current(cpu: usize) -> io::Result<()> {
    let set = only(cpu)?;
    // SAFETY: `set` is a valid cpu_set_t of the size given; pid 0 is this thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Thread 0's handle on one worker.
pub struct WorkerHandle {
    pub shared: Arc<Shared>,
    msgs: Sender<Msg>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Starts worker `index` (1 and up); it wakes thread 0 through `main_waker` when it
    /// hands over frames. With `write_batching` it writes small frames in batches
    /// through io_uring where the kernel allows ([`crate::uring`]).
    pub fn spawn(
        index: usize,
        view: Arc<View>,
        main_waker: Arc<Waker>,
        write_batching: bool,
    ) -> io::Result<WorkerHandle> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let (handoff_tx, handoff_rx) = bounded(HANDOFF_QUEUE);
        let (free_tx, free_rx) = bounded(HANDOFF_QUEUE);
        for _ in 0..HANDOFF_QUEUE {
            let _ = free_tx.send(vec![0u8; BUF_SIZE].into_boxed_slice());
        }
        let shared = Arc::new(Shared {
            view: ArcSwap::new(view),
            handoff_rx,
            free_tx,
            report: Mutex::new(Report {
                seen: Vec::with_capacity(SEEN_MAX),
                ..Report::default()
            }),
            reported: AtomicBool::new(false),
            starved: AtomicBool::new(false),
            tid: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            handed_off: AtomicU64::new(0),
            batched_writes: AtomicBool::new(false),
        });
        let (msgs, msgs_rx) = bounded(1024);
        let worker = Worker {
            poll,
            events: Events::with_capacity(256),
            queues: Vec::new(),
            buf: vec![0u8; BUF_SIZE].into_boxed_slice(),
            shared: shared.clone(),
            msgs: msgs_rx,
            handoff_tx,
            free_rx,
            main_waker,
            counters: Vec::new(),
            unicast: Vec::new(),
            seen: HashSet::with_capacity(SEEN_MAX),
            last_seen: None,
            next_report: Instant::now() + SEEN_REPORT,
            dirty: false,
            starved: false,
            first: 0,
            batch: None,
            write_batching,
        };
        let thread = std::thread::Builder::new()
            .name(format!("tapnet-dp{index}"))
            .spawn(move || worker.run())?;
        Ok(WorkerHandle {
            shared,
            msgs,
            waker,
            thread: Some(thread),
        })
    }

    /// Binds the worker's thread to `cpu` alone (`pthread_setaffinity_np(3)` on its
    /// own handle: no need to wait for its thread id, and a worker that has exited is
    /// ESRCH, never a thread of another process that was given its old id).
    ///
    /// # Errors
    /// EINVAL for a CPU outside the process's cpuset or offline, ESRCH for a worker
    /// that has exited.
    pub fn pin(&self, cpu: usize) -> io::Result<()> {
        use std::os::unix::thread::JoinHandleExt;
        let Some(thread) = &self.thread else {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        };
        let set = only(cpu)?;
        // SAFETY: the handle is not joined yet, so its pthread_t is valid; `set` is a
        // valid cpu_set_t of the size given.
        let rc = unsafe {
            libc::pthread_setaffinity_np(thread.as_pthread_t(), std::mem::size_of_val(&set), &set)
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(())
    }

    /// Gives the worker its queue of `port`.
    pub fn add(&self, port: PortId, queue: Box<dyn Port>) {
        self.send(Msg::Add(port, queue));
    }

    /// Takes `port`'s queue from the worker (it closes it).
    pub fn remove(&self, port: PortId) {
        self.send(Msg::Remove(port));
    }

    /// Wakes the worker (it was starved: see [`Shared::starved`]).
    pub fn wake(&self) {
        let _ = self.waker.wake();
    }

    fn send(&self, msg: Msg) {
        // The queue holds far more messages than a control request makes; a worker
        // that died has nothing left to tell.
        let _ = self.msgs.send(msg);
        let _ = self.waker.wake();
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Queue {
    io: Box<dyn Port>,
    readable: bool,
}

struct Worker {
    poll: Poll,
    events: Events,
    /// By [`PortId`].
    queues: Vec<Option<Queue>>,
    buf: Box<[u8]>,
    shared: Arc<Shared>,
    msgs: Receiver<Msg>,
    handoff_tx: Sender<Handoff>,
    free_rx: Receiver<Box<[u8]>>,
    main_waker: Arc<Waker>,
    counters: Vec<PortCounters>,
    unicast: Vec<u64>,
    seen: HashSet<(BridgeId, Mac, PortId)>,
    last_seen: Option<(BridgeId, Mac, PortId)>,
    next_report: Instant,
    /// Counts not reported yet.
    dirty: bool,
    /// Waiting for thread 0 to give hand-over buffers back.
    starved: bool,
    /// The port this turn's round over the queues starts at.
    first: usize,
    /// Small frames forwarded and not written yet, written together at the end of a
    /// queue's turn; None where io_uring is not available (each frame is then written
    /// as it is forwarded).
    batch: Option<WriteBatch>,
    /// Whether to set up [`Worker::batch`] when the thread starts.
    write_batching: bool,
}

impl Worker {
    fn run(mut self) {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        self.shared.tid.store(tid as u64, Ordering::Relaxed);
        // Made here: the ring belongs to the thread that submits to it.
        if self.write_batching {
            self.batch = WriteBatch::new().ok();
        }
        self.shared
            .batched_writes
            .store(self.batch.is_some(), Ordering::Relaxed);
        loop {
            if self.starved && !self.free_rx.is_empty() {
                self.starved = false;
            }
            let busy = !self.starved && self.queues.iter().flatten().any(|q| q.readable);
            let timeout = if busy {
                Duration::ZERO
            } else {
                self.next_report.saturating_duration_since(Instant::now())
            };
            match self.poll.poll(&mut self.events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Cannot happen with a valid epoll fd; the frames steered to this
                // thread's queues then wait there, thread 0's keep flowing.
                Err(_) => return,
            }
            let mut woken = false;
            for event in self.events.iter() {
                if event.token() == WAKE {
                    woken = true;
                } else if let Some(Some(q)) = self.queues.get_mut(event.token().0) {
                    q.readable = true;
                }
            }
            if woken && !self.messages() {
                return;
            }
            let view = self.shared.view.load();
            let mut handed = false;
            // Each turn starts one port further on: a port that takes every
            // hand-over buffer (a flood) cannot keep the ones after it unread.
            let n = self.queues.len();
            self.first = if n == 0 { 0 } else { (self.first + 1) % n };
            for k in 0..n {
                let p = (self.first + k) % n;
                if self.starved {
                    break;
                }
                if self.queues[p].as_ref().is_some_and(|q| q.readable) {
                    handed |= self.forward_from(&view, PortId(p));
                }
            }
            drop(view);
            if handed {
                let _ = self.main_waker.wake();
            }
            self.report(Instant::now());
        }
    }

    /// Applies thread 0's messages; false once told to stop.
    fn messages(&mut self) -> bool {
        while let Ok(msg) = self.msgs.try_recv() {
            match msg {
                Msg::Add(port, io) => {
                    if self
                        .poll
                        .registry()
                        .register(&mut SourceFd(&io.fd()), Token(port.0), Interest::READABLE)
                        .is_err()
                    {
                        // Its frames stay queued and are lost with the queue; thread 0
                        // keeps forwarding everything on its own queue.
                        continue;
                    }
                    if self.queues.len() <= port.0 {
                        self.queues.resize_with(port.0 + 1, || None);
                        self.counters.resize_with(port.0 + 1, PortCounters::default);
                    }
                    self.queues[port.0] = Some(Queue { io, readable: true });
                }
                Msg::Remove(port) => {
                    if let Some(q) = self.queues.get_mut(port.0).and_then(Option::take) {
                        let _ = self.poll.registry().deregister(&mut SourceFd(&q.io.fd()));
                    }
                }
                Msg::Stop => return false,
            }
        }
        true
    }

    /// Reads up to [`BATCH`] frames from this thread's queue of `ingress` and forwards
    /// each, all written by the time it returns; true if some went to thread 0.
    fn forward_from(&mut self, view: &View, ingress: PortId) -> bool {
        let handed = self.forward_batch(view, ingress);
        flush_writes(&mut self.batch, &mut self.counters, &self.shared);
        handed
    }

    /// [`Worker::forward_from`] but for the frames left in [`Worker::batch`].
    fn forward_batch(&mut self, view: &View, ingress: PortId) -> bool {
        let mut handed = false;
        let mut budget = HANDOFF_BUDGET;
        for _ in 0..BATCH {
            if budget == 0 {
                // Its share of the hand-over buffers this turn: the rest next turn.
                return handed;
            }
            if self.free_rx.is_empty() {
                // Any frame may be one for thread 0: read on only with a buffer for it.
                // Said before looking again, so thread 0 either sees it or gave back
                // a buffer this sees.
                self.shared.starved.store(true, Ordering::SeqCst);
                if self.free_rx.is_empty() {
                    self.starved = true;
                    return handed;
                }
            }
            let Some(q) = self.queues[ingress.0].as_mut() else {
                return handed;
            };
            let len = match q.io.recv(&mut self.buf) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    q.readable = false;
                    if is_fatal(&e) {
                        // The device is gone: thread 0 sees it on its own queue and
                        // takes the port down (and this queue with it).
                        let _ = self.poll.registry().deregister(&mut SourceFd(&q.io.fd()));
                    }
                    return handed;
                }
            };
            self.dirty = true;
            match decide(view, ingress, &self.buf[..len]) {
                Fast::Forward { egress, learned } => {
                    let bridge = view.ports[ingress.0]
                        .as_ref()
                        .map_or(BridgeId(0), |p| p.bridge);
                    let src = source_mac(&self.buf[VNET_HDR_LEN..len]);
                    // A sighting thread 0 cannot hear of would let the entry age
                    // while its traffic flows: such a frame goes to thread 0, which
                    // refreshes the entry itself.
                    let noted = !learned || self.note_seen(bridge, src, ingress);
                    let out = self.queues.get_mut(egress.0).and_then(Option::as_mut);
                    let (true, Some(out)) = (noted, out) else {
                        // (Or this thread has no queue of it, yet: thread 0 has.)
                        budget = budget.saturating_sub(1);
                        handed |= self.hand_off(ingress, len);
                        continue;
                    };
                    let c = &mut self.counters[ingress.0];
                    c.rx_packets += 1;
                    c.rx_bytes += len.saturating_sub(VNET_HDR_LEN) as u64;
                    let frame = &self.buf[..len];
                    if self.batch.as_ref().is_some_and(WriteBatch::is_full) {
                        flush_writes(&mut self.batch, &mut self.counters, &self.shared);
                    }
                    let queued = match (self.batch.as_mut(), out.io.write_fd()) {
                        (Some(batch), Some(fd)) => batch.push(fd, egress, frame),
                        _ => false,
                    };
                    if !queued {
                        // Too long for a slot (a TSO super-frame), or no ring: after
                        // what waits, so the port's frames keep their order.
                        flush_writes(&mut self.batch, &mut self.counters, &self.shared);
                        let result = out
                            .io
                            .send(frame)
                            .map_err(|e| e.raw_os_error().unwrap_or(0));
                        count_written(
                            &mut self.counters,
                            &self.shared,
                            Written {
                                egress,
                                len,
                                result,
                            },
                        );
                    }
                    if self.unicast.len() <= bridge.0 {
                        self.unicast.resize(bridge.0 + 1, 0);
                    }
                    self.unicast[bridge.0] += 1;
                }
                Fast::Drop(reason) => {
                    let c = &mut self.counters[ingress.0];
                    c.rx_packets += 1;
                    c.rx_bytes += len.saturating_sub(VNET_HDR_LEN) as u64;
                    c.drop(reason);
                }
                Fast::Handoff => {
                    budget -= 1;
                    handed |= self.hand_off(ingress, len);
                }
            }
        }
        handed
    }

    /// Hands the frame in `self.buf[..len]` to thread 0; thread 0 counts it.
    fn hand_off(&mut self, ingress: PortId, len: usize) -> bool {
        // Frames forwarded before it leave before thread 0 can send it on.
        flush_writes(&mut self.batch, &mut self.counters, &self.shared);
        let Ok(mut buf) = self.free_rx.try_recv() else {
            let c = &mut self.counters[ingress.0];
            c.rx_packets += 1;
            c.rx_bytes += len.saturating_sub(VNET_HDR_LEN) as u64;
            c.drop(DropReason::HandoffFull);
            return false;
        };
        buf[..len].copy_from_slice(&self.buf[..len]);
        self.shared.handed_off.fetch_add(1, Ordering::Relaxed);
        // As many boxes as the channel holds: it is never full.
        let _ = self.handoff_tx.try_send(Handoff {
            port: ingress,
            buf,
            len,
        });
        true
    }

    /// Remembers that learned source `mac` was forwarded from `port`, for the next
    /// report; false if it cannot (its set is full and thread 0 has not taken the
    /// last full one yet).
    fn note_seen(&mut self, bridge: BridgeId, mac: Mac, port: PortId) -> bool {
        let key = (bridge, mac, port);
        // Bursts come from one source: skip the hash for a repeat.
        if self.last_seen == Some(key) {
            return true;
        }
        if self.seen.len() >= SEEN_MAX && !self.seen.contains(&key) && !self.report_seen() {
            return false;
        }
        self.seen.insert(key);
        self.last_seen = Some(key);
        true
    }

    /// Passes the sources seen to thread 0 now, if its report has room for them all;
    /// false (and nothing passed) if not.
    fn report_seen(&mut self) -> bool {
        let mut report = self.shared.report.lock().unwrap_or_else(|p| p.into_inner());
        if report.seen.len() + self.seen.len() > SEEN_MAX {
            return false;
        }
        report.seen.extend(self.seen.drain());
        drop(report);
        self.last_seen = None;
        self.shared.reported.store(true, Ordering::Release);
        true
    }

    /// Adds this thread's counts to what thread 0 sums next; the sources seen, every
    /// [`SEEN_REPORT`].
    fn report(&mut self, now: Instant) {
        let seen_due = now >= self.next_report;
        if !self.dirty && !seen_due {
            return;
        }
        let mut report = self.shared.report.lock().unwrap_or_else(|p| p.into_inner());
        if self.dirty {
            if report.counters.len() < self.counters.len() {
                report
                    .counters
                    .resize_with(self.counters.len(), PortCounters::default);
            }
            for (total, mine) in report.counters.iter_mut().zip(self.counters.iter_mut()) {
                if mine.rx_packets != 0 || mine.tx_packets != 0 || mine.total_drops() != 0 {
                    total.add(mine);
                    *mine = PortCounters::default();
                }
            }
            if report.unicast.len() < self.unicast.len() {
                report.unicast.resize(self.unicast.len(), 0);
            }
            for (total, mine) in report.unicast.iter_mut().zip(self.unicast.iter_mut()) {
                *total += std::mem::take(mine);
            }
            self.dirty = false;
        }
        // All of them or none: what does not fit waits for the next report.
        if seen_due && report.seen.len() + self.seen.len() <= SEEN_MAX {
            report.seen.extend(self.seen.drain());
            self.last_seen = None;
            self.next_report = now + SEEN_REPORT;
        }
        drop(report);
        self.shared.reported.store(true, Ordering::Release);
    }
}

/// Writes what waits in `batch` and counts each frame on its egress port. A ring
/// that fails is dropped, and the worker writes frame by frame from then on.
fn flush_writes(batch: &mut Option<WriteBatch>, counters: &mut [PortCounters], shared: &Shared) {
    let Some(b) = batch.as_mut() else { return };
    if b.flush(|w, _| count_written(counters, shared, w)).is_err() {
        *batch = None;
        shared.batched_writes.store(false, Ordering::Relaxed);
    }
}

/// Counts one forwarded frame's write on its egress port: sent, or dropped by reason
/// (`EAGAIN`: the port's queue was full; `EIO`: its link is down).
fn count_written(counters: &mut [PortCounters], shared: &Shared, w: Written) {
    let c = &mut counters[w.egress.0];
    match w.result {
        Ok(()) => {
            c.tx_packets += 1;
            c.tx_bytes += w.len.saturating_sub(VNET_HDR_LEN) as u64;
            shared.forwarded.fetch_add(1, Ordering::Relaxed);
        }
        Err(errno) => c.drop(DropReason::of_write_error(Some(errno))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = Mac([2, 0, 0, 0, 0, 0xa]);
    const B: Mac = Mac([2, 0, 0, 0, 0, 0xb]);

    fn frame(dst: Mac, src: Mac) -> Vec<u8> {
        // An all-zero virtio-net header: no offload.
        let mut f = vec![0u8; VNET_HDR_LEN];
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&[0x88, 0xb5]);
        f.resize(VNET_HDR_LEN + 64, 0);
        f
    }

    fn view(fast_b: bool) -> View {
        let port = |fast| {
            Some(FastPort {
                bridge: BridgeId(0),
                guard: None,
                fast,
            })
        };
        let mut fdb = HashMap::new();
        fdb.insert(A, (PortId(0), false));
        fdb.insert(B, (PortId(1), true));
        View {
            ports: vec![port(true), port(fast_b), None],
            ports_gen: 0,
            bridges: vec![BridgeView {
                mtu: 1500,
                fdb,
                generation: 0,
            }],
        }
    }

    #[test]
    fn known_unicast_between_fast_ports_is_forwarded() {
        // A's entry is static (no report needed), B's learned.
        assert_eq!(
            decide(&view(true), PortId(0), &frame(B, A)),
            Fast::Forward {
                egress: PortId(1),
                learned: false
            }
        );
        assert_eq!(
            decide(&view(true), PortId(1), &frame(A, B)),
            Fast::Forward {
                egress: PortId(0),
                learned: true
            }
        );
    }

    #[test]
    fn everything_else_goes_to_thread_0() {
        let v = view(true);
        // A flood, an unknown destination, a source not learned there, a port removed.
        assert_eq!(
            decide(&v, PortId(0), &frame(Mac([0xff; 6]), A)),
            Fast::Handoff
        );
        assert_eq!(
            decide(&v, PortId(0), &frame(Mac([2, 0, 0, 0, 0, 0xc]), A)),
            Fast::Handoff
        );
        assert_eq!(decide(&v, PortId(1), &frame(B, A)), Fast::Handoff);
        assert_eq!(decide(&v, PortId(2), &frame(B, A)), Fast::Handoff);
        assert_eq!(decide(&v, PortId(7), &frame(B, A)), Fast::Handoff);
        // An egress port captured (not fast), and a destination on the ingress port.
        assert_eq!(decide(&view(false), PortId(0), &frame(B, A)), Fast::Handoff);
        assert_eq!(decide(&v, PortId(0), &frame(A, A)), Fast::Handoff);
    }

    #[test]
    fn bad_frames_and_spoofs_are_dropped_by_the_worker() {
        let mut v = view(true);
        assert_eq!(
            decide(&v, PortId(0), &frame(B, A)[..20]),
            Fast::Drop(DropReason::Runt)
        );
        v.ports[0].as_mut().unwrap().guard = Some(PortGuard {
            mac: Mac([2, 0, 0, 0, 0, 0xd]),
            ..PortGuard::default()
        });
        assert_eq!(
            decide(&v, PortId(0), &frame(B, A)),
            Fast::Drop(DropReason::SpoofedMac)
        );
    }
}
