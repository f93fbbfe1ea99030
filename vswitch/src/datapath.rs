//! The IO shell: one mio loop over every port. On each wakeup it reads a batch of frames
//! from each readable port into pool buffers, lets the port's bridge decide, and writes
//! each frame out. It never blocks on a port: a full egress queue drops (counted), and a
//! port whose device vanished is taken down while the others keep forwarding.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant, SystemTime};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};

use crate::bridge::{Bridge, BridgeConfig, BridgeId, Decision};
use crate::counters::{DropReason, PortCounters};
use crate::fdb::Mac;
use crate::frame::{VnetHdr, VNET_HDR_LEN};
use crate::guard::PortGuard;
use crate::impair::{Fate, Impairment, Shaper};
use crate::internal::{Emitter, Handler, HandlerId, HandlerRef, Verdict, HANDLER_TOKENS};
use crate::pool::{BufId, Pool, DATA_OFFSET, MAX_FRAME};
use crate::port::{is_fatal, Port, PortId};
use crate::shard::{BridgeView, FastPort, View, WorkerHandle};
use crate::uring::WriteBatch;

/// Frames read from one port per wakeup before moving on to the next, so one busy port
/// cannot starve the others.
pub const BATCH: usize = 64;
/// Tokens from here up belong to the caller (signals, control channel); below
/// [`HANDLER_TOKEN_BASE`] are ports; between, each handler has [`HANDLER_TOKENS`].
pub const FIRST_FOREIGN_TOKEN: usize = 1 << 30;
pub const HANDLER_TOKEN_BASE: usize = 1 << 24;
/// Wakes thread 0 when another datapath thread hands it frames.
const HANDOFF_TOKEN: Token = Token(FIRST_FOREIGN_TOKEN - 1);
/// Entries a copy of an FDB for the workers reserves at most up front: twice the
/// default `fdb_max` and the ports' own (see `Fdb::new`).
const VIEW_RESERVE: usize = 2 * 8192 + 64;
/// How often aged-out FDB entries are swept.
const AGE_SWEEP: Duration = Duration::from_secs(1);

/// What `show ports` says about a port, besides its counters.
#[derive(Debug, Clone)]
pub struct PortInfo {
    pub name: String,
    pub bridge: BridgeId,
    pub netns: Option<String>,
    pub ifname: String,
    pub mac: Mac,
    pub ip: Option<String>,
    /// The port's IPv6 address (`ip6`), if it has one.
    pub ip6: Option<std::net::Ipv6Addr>,
}

impl PortInfo {
    /// A port known only by its name: no namespace, MAC or address to show.
    pub fn named(name: &str, bridge: BridgeId) -> PortInfo {
        PortInfo {
            name: name.into(),
            bridge,
            netns: None,
            ifname: name.into(),
            mac: Mac::default(),
            ip: None,
            ip6: None,
        }
    }
}

struct PortSlot {
    info: PortInfo,
    /// `None` once the port is down (or for an internal port); dropping the IO closes
    /// its descriptor.
    io: Option<Box<dyn Port>>,
    /// For an internal port, the handler behind it.
    handler: Option<HandlerId>,
    counters: PortCounters,
    /// Edge-triggered readiness not yet drained to `WouldBlock`.
    readable: bool,
    down_reason: Option<String>,
    /// Where copies of the port's frames go while someone captures it.
    capture: Option<Sender<Captured>>,
    /// Shared with the capture's reader: more than one holder means it still reads;
    /// the value is the bytes of the copies queued for it.
    capture_alive: Option<Arc<AtomicUsize>>,
    /// The port's impairment and the frames it holds back, if it has one.
    shaper: Option<Shaper>,
    /// A device (a TAP in tapnet's namespace) that gets a copy of every frame.
    mirror: Option<Box<dyn Port>>,
    /// What the port may send as (`spoof_check`), if it is guarded.
    guard: Option<PortGuard>,
    /// The last write found the device's link down (EIO: the container set it
    /// down); the next write that goes clears it.
    link_down: bool,
    /// Detached at run time: the slot is free for the next port added.
    removed: bool,
}

/// A running capture, as its reader holds it: dropping it ends the capture.
pub struct CaptureStream {
    frames: Receiver<Captured>,
    /// The bytes of the copies queued (a port's capture counts them, up to
    /// [`CAPTURE_BYTES`]).
    queued: Arc<AtomicUsize>,
}

impl CaptureStream {
    /// A stream fed from outside the ports (VXLAN's underlay).
    pub fn outside(frames: Receiver<Captured>) -> CaptureStream {
        CaptureStream {
            frames,
            queued: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The next copy, waiting up to `timeout`. `Disconnected` once the capture ended
    /// on the datapath's side: the port went down or away, or the lab stopped.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Captured, RecvTimeoutError> {
        let c = self.frames.recv_timeout(timeout)?;
        // Saturating: an outside stream's producer does not count.
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                Some(q.saturating_sub(c.frame.len()))
            });
        Ok(c)
    }
}

/// A copy of a frame seen on a port (either way), for `tapnet capture`.
pub struct Captured {
    pub at: SystemTime,
    /// The Ethernet frame, without the virtio-net header.
    pub frame: Vec<u8>,
}

/// Copies waiting for a slow capture reader at most; past that they are dropped
/// (counted), never the datapath stalled.
pub const CAPTURE_QUEUE: usize = 4096;
/// Bytes of copies waiting for a slow reader of one port's capture at most (TSO
/// super-frames are 64 KiB each: 4096 of them would be 256 MiB); past that, as past
/// [`CAPTURE_QUEUE`], copies are dropped and counted.
pub const CAPTURE_BYTES: usize = 8 << 20;

/// Copies `data` (virtio-net header and frame) to the port's capture, if any. Costs a
/// branch when nobody captures.
fn capture_copy(slot: &mut PortSlot, data: &[u8]) {
    if let Some(mirror) = slot.mirror.as_mut() {
        // Best effort: a mirror nobody reads fills its queue and drops there.
        if mirror.send(data).is_err() {
            slot.counters.capture_dropped += 1;
        }
    }
    let Some(tx) = &slot.capture else { return };
    let frame = data.get(VNET_HDR_LEN..).unwrap_or_default();
    if let Some(queued) = &slot.capture_alive {
        if queued.load(Ordering::Relaxed) + frame.len() > CAPTURE_BYTES {
            slot.counters.capture_dropped += 1;
            return;
        }
        queued.fetch_add(frame.len(), Ordering::Relaxed);
    }
    match tx.try_send(Captured {
        at: SystemTime::now(),
        frame: frame.to_vec(),
    }) {
        Ok(()) => {}
        Err(TrySendError::Full(c)) => {
            slot.counters.capture_dropped += 1;
            if let Some(queued) = &slot.capture_alive {
                queued.fetch_sub(c.frame.len(), Ordering::Relaxed);
            }
        }
        // The reader went away: stop copying.
        Err(TrySendError::Disconnected(_)) => slot.capture = None,
    }
}

/// A read-only view of one port for `show`.
pub struct PortView<'a> {
    pub id: PortId,
    pub info: &'a PortInfo,
    pub counters: &'a PortCounters,
    pub up: bool,
    pub down_reason: Option<&'a str>,
    /// The handler behind an internal port.
    pub internal: Option<HandlerId>,
    /// The device's link was down at the last frame written to it (the container
    /// set it down), or nobody is at its other end (no VM on a QEMU socket): frames
    /// for it are dropped (`egress_link_down`) until it is up.
    pub link_down: bool,
    /// What the port's IO is ([`Port::kind`]); None for an internal port or one that
    /// went down.
    pub io_kind: Option<&'static str>,
    /// The port's IO, for what it counts itself ([`Port::io_drops`], [`Port::io_stats`]).
    pub io: Option<&'a dyn Port>,
}

pub struct Datapath {
    poll: Poll,
    events: Events,
    pool: Pool,
    ports: Vec<PortSlot>,
    bridges: Vec<Bridge>,
    /// Frames read in the current batch: (buffer, length).
    rx: Vec<(BufId, usize)>,
    /// Ports that failed fatally while the current batch was being forwarded.
    failed: Vec<(PortId, String)>,
    fired: Vec<Token>,
    went_down: Vec<PortId>,
    next_sweep: Instant,
    handlers: Vec<Box<dyn Handler>>,
    /// Per handler: given a frame since its last [`Handler::flush`].
    flush_due: Vec<bool>,
    /// Handler descriptors that fired this wakeup: (handler, number).
    handler_events: Vec<(usize, usize)>,
    /// Handler descriptors to serve again next turn (they stopped at a batch limit).
    handler_again: Vec<(usize, usize)>,
    /// Frames bound for internal ports, and frames handlers send on; each pair is a
    /// queue and the batch being worked through, swapped so neither ever allocates.
    to_handlers: Vec<(PortId, BufId, usize)>,
    to_handlers_work: Vec<(PortId, BufId, usize)>,
    injected: Vec<(PortId, BufId, usize)>,
    injected_work: Vec<(PortId, BufId, usize)>,
    /// See [`Datapath::set_busy_poll`].
    busy_poll: Duration,
    /// Small frames forwarded to device ports and not written yet: written together,
    /// one system call per batch, before this thread sleeps ([`crate::uring`]). None
    /// where io_uring is not available or is turned off.
    batch: Option<WriteBatch>,
    /// Whether [`Datapath::batch`] is to be made at the first turn (on the thread
    /// that runs the datapath, which is the one that must submit to it).
    batch_wanted: bool,
    /// See [`Datapath::set_write_batching`]; workers get it when they start.
    write_batching: bool,
    last_frame: Option<Instant>,
    /// The other datapath threads (see [`crate::shard`]); empty with one thread.
    workers: Vec<WorkerHandle>,
    main_waker: Option<Arc<mio::Waker>>,
    /// Bumped when what workers know of the ports changes.
    ports_gen: u64,
    /// The copies of the tables for the workers, and the one they read now.
    views: Vec<Arc<View>>,
    current_view: Option<usize>,
    /// When an FDB change may next be published (see [`Datapath::publish`]).
    next_publish: Instant,
    /// Frames thread 0 read from its own queues, and its thread id.
    frames: u64,
    tid: u64,
}

/// One datapath thread, for `show threads`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadStats {
    /// 0 for the thread with the bridges and handlers.
    pub index: usize,
    /// Its Linux thread id (0 before it first ran): `/proc/self/task/TID/stat` has its
    /// CPU time.
    pub tid: u64,
    /// Frames it read (thread 0) or forwarded itself (the others).
    pub frames: u64,
    /// Frames it handed to thread 0 (the others; 0 for thread 0).
    pub handed_off: u64,
    /// Whether it writes small frames in batches through io_uring ([`crate::uring`])
    /// rather than one `write(2)` each.
    pub batched_writes: bool,
}

impl Datapath {
    /// A datapath with `buffers` frame buffers (at least [`BATCH`]).
    pub fn new(buffers: usize) -> io::Result<Datapath> {
        let buffers = buffers.max(BATCH);
        Ok(Datapath {
            poll: Poll::new()?,
            events: Events::with_capacity(256),
            pool: Pool::new(buffers),
            handlers: Vec::new(),
            flush_due: Vec::new(),
            handler_events: Vec::with_capacity(256),
            handler_again: Vec::with_capacity(16),
            // A queued frame holds a buffer, so no queue outgrows the pool.
            to_handlers: Vec::with_capacity(buffers),
            to_handlers_work: Vec::with_capacity(buffers),
            injected: Vec::with_capacity(buffers),
            injected_work: Vec::with_capacity(buffers),
            ports: Vec::new(),
            bridges: Vec::new(),
            rx: Vec::with_capacity(BATCH),
            failed: Vec::with_capacity(8),
            fired: Vec::with_capacity(8),
            went_down: Vec::new(),
            next_sweep: Instant::now() + AGE_SWEEP,
            busy_poll: Duration::ZERO,
            batch: None,
            batch_wanted: true,
            write_batching: true,
            last_frame: None,
            workers: Vec::new(),
            main_waker: None,
            ports_gen: 1,
            views: Vec::new(),
            current_view: None,
            next_publish: Instant::now(),
            frames: 0,
            tid: 0,
        })
    }

    /// Runs the datapath on `threads` threads (at least 1): this one, and `threads - 1`
    /// workers started now (see [`crate::shard`]). Call once, before adding ports; each
    /// device port may then get a queue per worker ([`Datapath::add_port_queues`]).
    pub fn set_threads(&mut self, threads: usize) -> io::Result<()> {
        if !self.workers.is_empty() || threads <= 1 {
            return Ok(());
        }
        let waker = Arc::new(mio::Waker::new(self.poll.registry(), HANDOFF_TOKEN)?);
        for index in 1..threads {
            self.workers.push(WorkerHandle::spawn(
                index,
                Arc::new(View::default()),
                waker.clone(),
                self.write_batching,
            )?);
        }
        self.main_waker = Some(waker);
        self.ports_gen += 1;
        Ok(())
    }

    /// Binds datapath thread k to the k-th of the CPUs thread 0 (the caller) may run
    /// on, wrapping around when there are more threads than CPUs
    /// ([`crate::shard::WorkerHandle::pin`], [`crate::shard::pin_current`]), thread 0
    /// last. A flow then stays on one core with its caches, and the scheduler no
    /// longer moves a busy thread onto the core its flow's endpoints run on. Threads
    /// that thread 0 starts afterwards (for a control request) inherit its CPU.
    /// Returns each thread's CPU, thread 0 first; `show threads` has them as each
    /// thread's `cpus`.
    ///
    /// # Errors
    /// What `sched_setaffinity` (or, for a worker, `pthread_setaffinity_np`) says for
    /// one of the threads (named in the error).
    pub fn pin_threads(&self) -> io::Result<Vec<usize>> {
        let allowed = crate::shard::allowed_cpus()?;
        if allowed.is_empty() {
            return Err(io::Error::other("this thread may run on no CPU"));
        }
        let cpus: Vec<usize> = allowed
            .iter()
            .copied()
            .cycle()
            .take(self.threads())
            .collect();
        let named = |thread: usize, cpu: usize, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("pinning datapath thread {thread} to CPU {cpu}: {e}"),
            )
        };
        for (k, (w, &cpu)) in self.workers.iter().zip(cpus.iter().skip(1)).enumerate() {
            w.pin(cpu).map_err(|e| named(k + 1, cpu, e))?;
        }
        if let Some(&cpu) = cpus.first() {
            crate::shard::pin_current(cpu).map_err(|e| named(0, cpu, e))?;
        }
        Ok(cpus)
    }

    /// How many threads forward: 1 and the workers.
    pub fn threads(&self) -> usize {
        1 + self.workers.len()
    }

    /// Gives `port`'s other queues to the workers, the first to worker 1 and so on
    /// (a queue more than workers is closed). A port with fewer queues than workers
    /// is served by thread 0 alone on the rest.
    pub fn add_port_queues(&mut self, port: PortId, queues: Vec<Box<dyn Port>>) {
        for (worker, queue) in self.workers.iter().zip(queues) {
            worker.add(port, queue);
        }
        self.ports_gen += 1;
    }

    /// Every datapath thread's figures, thread 0 first.
    pub fn thread_stats(&self) -> Vec<ThreadStats> {
        let mut all = vec![ThreadStats {
            index: 0,
            tid: self.tid,
            frames: self.frames,
            handed_off: 0,
            batched_writes: self.batch.is_some(),
        }];
        for (i, w) in self.workers.iter().enumerate() {
            all.push(ThreadStats {
                index: i + 1,
                tid: w.shared.tid.load(std::sync::atomic::Ordering::Relaxed),
                frames: w
                    .shared
                    .forwarded
                    .load(std::sync::atomic::Ordering::Relaxed),
                handed_off: w
                    .shared
                    .handed_off
                    .load(std::sync::atomic::Ordering::Relaxed),
                batched_writes: w
                    .shared
                    .batched_writes
                    .load(std::sync::atomic::Ordering::Relaxed),
            });
        }
        all
    }

    pub fn add_bridge(&mut self, config: BridgeConfig) -> BridgeId {
        self.bridges.push(Bridge::new(config));
        BridgeId(self.bridges.len() - 1)
    }

    /// Attaches a port to its bridge and starts polling it. A slot freed by
    /// [`Datapath::remove_port`] is used again, so attaching and detaching for ever
    /// keeps the table as large as the most ports at once.
    pub fn add_port(&mut self, info: PortInfo, io: Box<dyn Port>) -> io::Result<PortId> {
        let id = PortId(
            self.ports
                .iter()
                .position(|p| p.removed)
                .unwrap_or(self.ports.len()),
        );
        if id.0 >= HANDLER_TOKEN_BASE {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("at most {HANDLER_TOKEN_BASE} ports"),
            ));
        }
        let bridge = self.bridges.get_mut(info.bridge.0).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "port on an unknown bridge")
        })?;
        self.poll
            .registry()
            .register(&mut SourceFd(&io.fd()), Token(id.0), Interest::READABLE)?;
        bridge.attach(id);
        let slot = PortSlot {
            info,
            io: Some(io),
            handler: None,
            counters: PortCounters::default(),
            readable: true,
            down_reason: None,
            capture: None,
            capture_alive: None,
            shaper: None,
            mirror: None,
            guard: None,
            link_down: false,
            removed: false,
        };
        match self.ports.get_mut(id.0) {
            Some(free) => *free = slot,
            None => self.ports.push(slot),
        }
        self.ports_gen += 1;
        Ok(id)
    }

    /// Detaches a device port at run time: it stops being polled, its descriptor (and
    /// so its TAP) closes, its bridge forgets every address learned on it and its
    /// static ones, its capture, mirror and impairment end, and its name is free.
    /// False for an internal port or an unknown one.
    pub fn remove_port(&mut self, port: PortId) -> bool {
        // Nothing may wait for its descriptor once it is closed (the number could be
        // another's by the next flush).
        self.flush_writes();
        let Some(slot) = self.ports.get_mut(port.0) else {
            return false;
        };
        if slot.handler.is_some() || slot.removed {
            return false;
        }
        if let Some(io) = slot.io.take() {
            let _ = self.poll.registry().deregister(&mut SourceFd(&io.fd()));
        }
        slot.readable = false;
        slot.removed = true;
        slot.capture = None;
        slot.capture_alive = None;
        slot.shaper = None;
        slot.mirror = None;
        slot.guard = None;
        self.bridges[slot.info.bridge.0].detach(port);
        self.went_down.retain(|p| *p != port);
        self.lost_port(port);
        true
    }

    /// Lets `port` send only as `guard` says (its own MAC, and its own IPv4 address in
    /// ARP and IPv4); other frames from it are dropped, counted.
    pub fn set_guard(&mut self, port: PortId, guard: PortGuard) -> bool {
        let Some(slot) = self.ports.get_mut(port.0) else {
            return false;
        };
        slot.guard = Some(guard);
        self.ports_gen += 1;
        true
    }

    /// Marks IPv6 address `ip` as taken (`true`: a port attached with it) or free
    /// again (`false`: detached) in the IPv6 guards of every port of `bridge` but
    /// `except`: no other guarded port may send from it or advertise it.
    pub fn guards_take_ipv6(
        &mut self,
        bridge: BridgeId,
        except: PortId,
        ip: std::net::Ipv6Addr,
        taken: bool,
    ) {
        for (i, slot) in self.ports.iter_mut().enumerate() {
            if i == except.0 || slot.removed || slot.info.bridge != bridge {
                continue;
            }
            if let Some(g) = slot.guard.as_mut().and_then(|g| g.ipv6.as_mut()) {
                if taken {
                    g.taken.insert(ip);
                } else {
                    g.taken.remove(&ip);
                }
            }
        }
        self.ports_gen += 1;
    }

    /// Makes `mac` a static entry of `port`'s bridge on `port` (the port's own
    /// address): no other port, nor a VXLAN peer, can take it over.
    pub fn add_static_mac(&mut self, port: PortId, mac: Mac) -> bool {
        let Some(slot) = self.ports.get(port.0) else {
            return false;
        };
        let bridge = slot.info.bridge;
        match self.bridges.get_mut(bridge.0) {
            Some(b) => {
                b.add_static(mac, port, Instant::now());
                true
            }
            None => false,
        }
    }

    /// Starts copying every frame port `port` receives or sends. Copying stops when the
    /// receiver is dropped; while it runs, a second capture of the port is refused.
    pub fn capture(&mut self, port: PortId) -> Result<CaptureStream, &'static str> {
        let slot = self.ports.get_mut(port.0).ok_or("no such port")?;
        // One capture a port: a second would silently end the first.
        if slot
            .capture_alive
            .as_ref()
            .is_some_and(|a| Arc::strong_count(a) > 1)
        {
            return Err("is already being captured");
        }
        let (tx, rx) = bounded(CAPTURE_QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        slot.capture = Some(tx);
        slot.capture_alive = Some(queued.clone());
        self.ports_gen += 1;
        Ok(CaptureStream { frames: rx, queued })
    }

    /// Copies every frame `port` receives or sends to `mirror` (a device port outside
    /// every bridge, e.g. a TAP that tcpdump opens).
    pub fn set_mirror(&mut self, port: PortId, mirror: Box<dyn Port>) -> bool {
        let Some(slot) = self.ports.get_mut(port.0) else {
            return false;
        };
        slot.mirror = Some(mirror);
        self.ports_gen += 1;
        true
    }

    /// A port by its name.
    pub fn port_by_name(&self, name: &str) -> Option<PortId> {
        self.ports
            .iter()
            .position(|p| !p.removed && p.info.name == name)
            .map(PortId)
    }

    /// The id the next port added will get (handlers need their ports' ids up front).
    pub fn next_port_id(&self) -> PortId {
        PortId(self.ports.len())
    }

    /// Adds the logic behind internal ports, keeping its type: the returned handle
    /// reaches it again ([`Datapath::handler_of`]).
    pub fn add_handler_of<T: Handler + 'static>(&mut self, handler: T) -> HandlerRef<T> {
        HandlerRef::new(self.add_handler(Box::new(handler)))
    }

    /// The handler behind `handle`.
    pub fn handler_of<T: Handler + 'static>(&self, handle: HandlerRef<T>) -> &T {
        self.handlers[handle.id.0]
            .as_any()
            .downcast_ref::<T>()
            .expect("a HandlerRef is made with its handler's type")
    }

    /// The handler `handle` names, to change it.
    pub fn handler_of_mut<T: Handler + 'static>(&mut self, handle: HandlerRef<T>) -> &mut T {
        self.handlers[handle.id.0]
            .as_any_mut()
            .downcast_mut::<T>()
            .expect("a HandlerRef is made with its handler's type")
    }

    /// Lets handler `id` register new sources with the poll loop (its `attach` again),
    /// after it was changed at run time (a forward's listener added).
    pub fn reattach(&mut self, id: HandlerId) {
        let Some(handler) = self.handlers.get_mut(id.0) else {
            return;
        };
        let mut out = Emitter {
            pool: &mut self.pool,
            inject: &mut self.injected,
            registry: self.poll.registry(),
            token_base: HANDLER_TOKEN_BASE + id.0 * HANDLER_TOKENS,
        };
        handler.attach(&mut out);
    }

    /// Adds the logic behind internal ports.
    pub fn add_handler(&mut self, mut handler: Box<dyn Handler>) -> HandlerId {
        let h = self.handlers.len();
        assert!(HANDLER_TOKEN_BASE + (h + 1) * HANDLER_TOKENS <= HANDOFF_TOKEN.0);
        let mut out = Emitter {
            pool: &mut self.pool,
            inject: &mut self.injected,
            registry: self.poll.registry(),
            token_base: HANDLER_TOKEN_BASE + h * HANDLER_TOKENS,
        };
        handler.attach(&mut out);
        self.handlers.push(handler);
        self.flush_due.push(false);
        HandlerId(h)
    }

    /// Attaches an internal port, served by `handler`, to its bridge.
    pub fn add_internal_port(&mut self, info: PortInfo, handler: HandlerId) -> io::Result<PortId> {
        let id = PortId(self.ports.len());
        if handler.0 >= self.handlers.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "unknown handler",
            ));
        }
        let bridge = self.bridges.get_mut(info.bridge.0).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "port on an unknown bridge")
        })?;
        bridge.attach(id);
        self.ports_gen += 1;
        self.ports.push(PortSlot {
            info,
            io: None,
            handler: Some(handler),
            counters: PortCounters::default(),
            readable: false,
            down_reason: None,
            capture: None,
            capture_alive: None,
            shaper: None,
            mirror: None,
            guard: None,
            link_down: false,
            removed: false,
        });
        Ok(id)
    }

    /// Starts a capture of what some handler exchanges outside the datapath (VXLAN's
    /// underlay): the first handler that has such traffic takes it.
    pub fn capture_outside(&mut self) -> Option<Receiver<Captured>> {
        let (tx, rx) = bounded(CAPTURE_QUEUE);
        self.handlers
            .iter_mut()
            .any(|h| h.capture_outside(tx.clone()))
            .then_some(rx)
    }

    /// The handler behind internal ports, for the control plane.
    pub fn handler(&self, id: HandlerId) -> Option<&dyn Handler> {
        self.handlers.get(id.0).map(|h| &**h)
    }

    /// After forwarding a frame, keep polling without sleeping for `window`. On a VM a
    /// sleeping datapath costs a vCPU wakeup (tens of microseconds) per burst; spinning
    /// trades a core for round-trip latency. Zero (the default) never spins.
    pub fn set_busy_poll(&mut self, window: Duration) {
        self.busy_poll = window;
    }

    /// Whether frames to TAP ports are written in batches through io_uring (the
    /// default, where the kernel allows it) or each with its own `write(2)`: see
    /// [`crate::uring`]. Takes effect for thread 0 at its next turn and for workers
    /// started after the call; set it before [`Datapath::set_threads`].
    pub fn set_write_batching(&mut self, on: bool) {
        self.batch_wanted = on;
        if !on {
            flush_batch(&mut self.ports, &mut self.failed, &mut self.batch);
            self.batch = None;
        }
        self.write_batching = on;
    }

    /// Whether thread 0 writes in batches now (false before its first turn, and where
    /// io_uring could not be set up).
    pub fn write_batching(&self) -> bool {
        self.batch.is_some()
    }

    /// For the caller's own event sources; use tokens from [`FIRST_FOREIGN_TOKEN`] up.
    pub fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// Waits up to `timeout` (less while ports have frames waiting) and forwards what
    /// arrived. Returns the caller's tokens that fired.
    pub fn poll_once(&mut self, timeout: Option<Duration>) -> io::Result<&[Token]> {
        self.fired.clear();
        if self.batch_wanted && self.batch.is_none() {
            // Once: where io_uring is refused, every frame is written by itself.
            self.batch_wanted = false;
            self.batch = WriteBatch::new().ok();
        }
        let now = Instant::now();
        // What the caller changed since the last turn (a capture, an impairment, a
        // port) reaches the workers before this thread sleeps.
        self.publish(now);
        let until_sweep = self.next_sweep.saturating_duration_since(now);
        let spinning = self
            .last_frame
            .is_some_and(|t| now.saturating_duration_since(t) < self.busy_poll);
        let until_handler = self
            .handlers
            .iter()
            .filter_map(|h| h.next_timeout())
            .chain(
                self.ports
                    .iter()
                    .filter_map(|p| p.shaper.as_ref()?.next_due()),
            )
            .chain(self.view_stale().1.then_some(self.next_publish))
            .min()
            .map_or(until_sweep, |t| t.saturating_duration_since(now));
        let handed_over = self.workers.iter().any(|w| !w.shared.handoff_rx.is_empty());
        let timeout = if spinning
            || handed_over
            || !self.handler_again.is_empty()
            || self.ports.iter().any(|p| p.readable)
        {
            Duration::ZERO
        } else {
            timeout
                .map_or(until_sweep, |t| t.min(until_sweep))
                .min(until_handler)
        };
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        for event in self.events.iter() {
            let token = event.token();
            if token.0 >= FIRST_FOREIGN_TOKEN {
                self.fired.push(token);
            } else if token == HANDOFF_TOKEN {
                // Taken below, every turn.
            } else if token.0 >= HANDLER_TOKEN_BASE {
                let t = token.0 - HANDLER_TOKEN_BASE;
                self.handler_events
                    .push((t / HANDLER_TOKENS, t % HANDLER_TOKENS));
            } else if let Some(slot) = self.ports.get_mut(token.0) {
                // Errors show up as a failed read, which takes the port down.
                slot.readable = true;
            }
        }
        let now = Instant::now();
        if self.tid == 0 {
            // For `show threads`, with one thread or several.
            // SAFETY: gettid has no preconditions.
            self.tid = unsafe { libc::gettid() } as u64;
        }
        if !self.workers.is_empty() {
            self.take_reports(now);
            self.take_handoffs(now);
        }
        for p in 0..self.ports.len() {
            if self.ports[p].readable {
                self.forward_from(PortId(p), now);
            }
        }
        self.release_impaired(now);
        // Handler descriptors still ready from the last turn go first, then new ones.
        self.handler_events.append(&mut self.handler_again);
        for i in 0..self.handler_events.len() {
            let (h, n) = self.handler_events[i];
            let mut out = Emitter {
                pool: &mut self.pool,
                inject: &mut self.injected,
                registry: self.poll.registry(),
                token_base: HANDLER_TOKEN_BASE + h * HANDLER_TOKENS,
            };
            let again = self
                .handlers
                .get_mut(h)
                .is_some_and(|handler| handler.ready(n, &mut out, now));
            // Forward what the handler injected before it reads more.
            self.run_internal(now);
            if again && !self.handler_again.contains(&(h, n)) {
                self.handler_again.push((h, n));
            }
        }
        self.handler_events.clear();
        for h in 0..self.handlers.len() {
            if self.handlers[h].next_timeout().is_some_and(|t| t <= now) {
                let mut out = Emitter {
                    pool: &mut self.pool,
                    inject: &mut self.injected,
                    registry: self.poll.registry(),
                    token_base: HANDLER_TOKEN_BASE + h * HANDLER_TOKENS,
                };
                self.handlers[h].timeout(&mut out, now);
            }
        }
        self.run_internal(now);
        if now >= self.next_sweep {
            for bridge in &mut self.bridges {
                bridge.age(now);
            }
            for (h, handler) in self.handlers.iter_mut().enumerate() {
                let mut out = Emitter {
                    pool: &mut self.pool,
                    inject: &mut self.injected,
                    registry: self.poll.registry(),
                    token_base: HANDLER_TOKEN_BASE + h * HANDLER_TOKENS,
                };
                handler.tick(&mut out, now);
            }
            self.run_internal(now);
            self.next_sweep = now + AGE_SWEEP;
            if self.fast_changed() {
                self.ports_gen += 1;
            }
        }
        self.flush_writes();
        // A port found dead by that last flush goes down now, not at some later turn.
        while let Some((port, reason)) = self.failed.pop() {
            self.take_down(port, reason);
        }
        self.publish(now);
        Ok(&self.fired)
    }

    /// Reads up to [`BATCH`] frames from `ingress`, then forwards them.
    fn forward_from(&mut self, ingress: PortId, now: Instant) {
        let slot = &mut self.ports[ingress.0];
        let Some(io) = slot.io.as_mut() else {
            slot.readable = false;
            return;
        };
        while self.rx.len() < BATCH {
            // An empty pool leaves frames queued in the port; `readable` stays set.
            let Some(buf) = self.pool.alloc() else { break };
            let room = &mut self.pool.buf_mut(buf)[DATA_OFFSET..];
            match io.recv(room) {
                Ok(len) => self.rx.push((buf, len)),
                Err(e) => {
                    self.pool.release(buf);
                    match e.kind() {
                        io::ErrorKind::Interrupted => continue,
                        io::ErrorKind::WouldBlock => slot.readable = false,
                        _ if is_fatal(&e) => self.failed.push((ingress, e.to_string())),
                        // Anything else: wait for the next readiness event rather than
                        // spinning on an error.
                        _ => slot.readable = false,
                    }
                    break;
                }
            }
        }
        // A port that came back by itself (a VM reconnected) is up before anything
        // is sent to it.
        if io.carrier() {
            slot.link_down = false;
        }
        if !self.rx.is_empty() {
            self.last_frame = Some(now);
            self.frames += self.rx.len() as u64;
        }
        for i in 0..self.rx.len() {
            let (buf, len) = self.rx[i];
            self.forward_frame(ingress, buf, len, now);
        }
        self.rx.clear();
        self.run_internal(now);
        self.flush_writes();
        while let Some((port, reason)) = self.failed.pop() {
            self.take_down(port, reason);
        }
    }

    /// Sends what impaired ports held back and is now due.
    fn release_impaired(&mut self, now: Instant) {
        let Datapath { ports, failed, .. } = self;
        for (p, slot) in ports.iter_mut().enumerate() {
            while let Some(frame) = slot.shaper.as_mut().and_then(|s| s.release(now)) {
                write_out(slot, failed, PortId(p), &frame);
            }
        }
        while let Some((port, reason)) = self.failed.pop() {
            self.take_down(port, reason);
        }
    }

    /// Sets (or, with [`Impairment::default`], clears) the impairment of `port`'s
    /// outgoing frames. Frames it was holding are sent at once on a change.
    pub fn set_impairment(&mut self, port: PortId, spec: Impairment) -> bool {
        let Some(slot) = self.ports.get_mut(port.0) else {
            return false;
        };
        if slot.io.is_none() {
            return false;
        }
        if let Some(mut old) = slot.shaper.take() {
            // What the old impairment held goes now, in order (none is lost).
            while let Some(f) = old.release_any() {
                write_out(slot, &mut self.failed, port, &f);
            }
        }
        if !spec.is_none() {
            let seed = (port.0 as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                ^ SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
            slot.shaper = Some(Shaper::new(spec, seed));
        }
        self.ports_gen += 1;
        true
    }

    /// A port's impairment, if it has one.
    pub fn impairment(&self, port: PortId) -> Option<Impairment> {
        self.ports.get(port.0)?.shaper.as_ref().map(|s| s.spec)
    }

    /// Hands queued frames to their handlers and forwards what the handlers send on,
    /// until both queues are empty. Bounded: a loop between handlers ends in drops.
    fn run_internal(&mut self, now: Instant) {
        const MAX_ROUNDS: usize = 16;
        for _ in 0..MAX_ROUNDS {
            if self.to_handlers.is_empty() && self.injected.is_empty() {
                // Everything is handed over: handlers send what they held back to
                // send together, and anything they inject goes round once more.
                if !self.flush_handlers() {
                    return;
                }
                continue;
            }
            std::mem::swap(&mut self.to_handlers, &mut self.to_handlers_work);
            for i in 0..self.to_handlers_work.len() {
                let (port, buf, len) = self.to_handlers_work[i];
                let handler = self.ports[port.0].handler.expect("queued for a handler");
                let mut out = Emitter {
                    pool: &mut self.pool,
                    inject: &mut self.injected,
                    registry: self.poll.registry(),
                    token_base: HANDLER_TOKEN_BASE + handler.0 * HANDLER_TOKENS,
                };
                self.flush_due[handler.0] = true;
                match self.handlers[handler.0].handle(port, buf, len, &mut out, now) {
                    Verdict::Inject { via, len } => self.injected.push((via, buf, len)),
                    Verdict::Keep => {}
                    Verdict::Release => self.pool.release(buf),
                }
            }
            self.to_handlers_work.clear();
            std::mem::swap(&mut self.injected, &mut self.injected_work);
            for i in 0..self.injected_work.len() {
                let (via, buf, len) = self.injected_work[i];
                self.forward_frame(via, buf, len, now);
            }
            self.injected_work.clear();
        }
        // Still going after MAX_ROUNDS: frames circling between handlers.
        for (port, buf, _) in self.to_handlers.drain(..).chain(self.injected.drain(..)) {
            self.ports[port.0].counters.drop(DropReason::InternalLoop);
            self.pool.release(buf);
        }
    }

    /// Calls [`Handler::flush`] on the handlers given frames since their last flush.
    /// Returns whether it called any.
    fn flush_handlers(&mut self) -> bool {
        let mut any = false;
        for h in 0..self.handlers.len() {
            if !std::mem::take(&mut self.flush_due[h]) {
                continue;
            }
            any = true;
            let mut out = Emitter {
                pool: &mut self.pool,
                inject: &mut self.injected,
                registry: self.poll.registry(),
                token_base: HANDLER_TOKEN_BASE + h * HANDLER_TOKENS,
            };
            self.handlers[h].flush(&mut out);
        }
        any
    }

    /// Writes the frames waiting in [`Datapath::batch`], counting each on its port.
    fn flush_writes(&mut self) {
        flush_batch(&mut self.ports, &mut self.failed, &mut self.batch);
    }

    /// Forwards one frame that entered at `ingress`; takes the buffer (releases it, or
    /// passes it on to a handler).
    fn forward_frame(&mut self, ingress: PortId, buf: BufId, len: usize, now: Instant) {
        let Datapath {
            ports,
            bridges,
            pool,
            failed,
            to_handlers,
            batch,
            ..
        } = self;
        let counters = &mut ports[ingress.0].counters;
        counters.rx_packets += 1;
        counters.rx_bytes += len.saturating_sub(VNET_HDR_LEN) as u64;
        capture_copy(
            &mut ports[ingress.0],
            &pool.buf(buf)[DATA_OFFSET..DATA_OFFSET + len.min(VNET_HDR_LEN + MAX_FRAME)],
        );
        let bridge = &mut bridges[ports[ingress.0].info.bridge.0];
        let data = &pool.buf(buf)[DATA_OFFSET..DATA_OFFSET + len];
        let vnet = match admit(&ports[ingress.0], bridge, data) {
            Ok(vnet) => vnet,
            Err(reason) => {
                ports[ingress.0].counters.drop(reason);
                return pool.release(buf);
            }
        };
        let gso = vnet.is_gso();
        match bridge.decide(ingress, &data[VNET_HDR_LEN..], now) {
            Decision::Unicast(egress) if ports[egress.0].handler.is_some() => {
                // The handler gets this very buffer: no copy.
                count_tx(&mut ports[egress.0].counters, len);
                capture_copy(&mut ports[egress.0], data);
                return to_handlers.push((egress, buf, len));
            }
            Decision::Unicast(egress) => send(ports, failed, batch, egress, data, gso, now),
            Decision::Flood => {
                for egress in bridge.flood_targets(ingress) {
                    if ports[egress.0].handler.is_none() {
                        // Writing does not consume the buffer: every copy is the same bytes.
                        send(
                            ports,
                            failed,
                            batch,
                            egress,
                            pool.buf(buf)[DATA_OFFSET..DATA_OFFSET + len].as_ref(),
                            gso,
                            now,
                        );
                        continue;
                    }
                    // A handler may rewrite its frame, so it gets a copy of its own.
                    let Some(copy) = pool.alloc() else {
                        ports[egress.0].counters.drop(DropReason::EgressFull);
                        continue;
                    };
                    let (src, dst) = pool.two_bufs(buf, copy);
                    dst[DATA_OFFSET..DATA_OFFSET + len]
                        .copy_from_slice(&src[DATA_OFFSET..DATA_OFFSET + len]);
                    count_tx(&mut ports[egress.0].counters, len);
                    capture_copy(
                        &mut ports[egress.0],
                        &pool.buf(copy)[DATA_OFFSET..DATA_OFFSET + len],
                    );
                    to_handlers.push((egress, copy, len));
                }
            }
            Decision::Drop(reason) => ports[ingress.0].counters.drop(reason),
        }
        pool.release(buf);
    }

    /// Whether `data` (virtio-net header, then Ethernet) entering at `ingress` is
    /// admitted: the checks every frame passes first ([`check_ingress`] against the
    /// bridge's MTU, and the port's guard). The datapath and `tapnet trace` both call
    /// this; it changes nothing.
    pub fn admit(&self, ingress: PortId, data: &[u8]) -> Result<VnetHdr, DropReason> {
        let slot = self.ports.get(ingress.0).ok_or(DropReason::Runt)?;
        admit(slot, &self.bridges[slot.info.bridge.0], data)
    }

    fn take_down(&mut self, port: PortId, reason: String) {
        // As in remove_port: its descriptor closes here.
        self.flush_writes();
        let slot = &mut self.ports[port.0];
        let Some(io) = slot.io.take() else { return };
        let _ = self.poll.registry().deregister(&mut SourceFd(&io.fd()));
        drop(io);
        slot.readable = false;
        slot.down_reason = Some(reason);
        // Its capture ends: the reader sees the stream close, not a silent one.
        slot.capture = None;
        slot.capture_alive = None;
        self.bridges[slot.info.bridge.0].detach(port);
        self.went_down.push(port);
        self.lost_port(port);
    }

    /// `port` went down or away: the workers close their queues of it.
    fn lost_port(&mut self, port: PortId) {
        for w in &self.workers {
            w.remove(port);
        }
        self.ports_gen += 1;
    }

    /// Sums what the workers counted since the last call into the ports and bridges,
    /// and refreshes the FDB entries they forwarded from.
    fn take_reports(&mut self, now: Instant) {
        for w in &self.workers {
            if !w
                .shared
                .reported
                .swap(false, std::sync::atomic::Ordering::Acquire)
            {
                continue;
            }
            let mut report = w.shared.report.lock().unwrap_or_else(|p| p.into_inner());
            for (slot, c) in self.ports.iter_mut().zip(report.counters.iter_mut()) {
                if c.rx_packets != 0 || c.tx_packets != 0 || c.total_drops() != 0 {
                    slot.counters.add(c);
                    *c = PortCounters::default();
                }
            }
            for (bridge, n) in self.bridges.iter_mut().zip(report.unicast.iter_mut()) {
                bridge.add_forwarded(std::mem::take(n));
            }
            for (bridge, mac, port) in report.seen.drain(..) {
                if let Some(b) = self.bridges.get_mut(bridge.0) {
                    b.refresh(mac, port, now);
                }
            }
        }
    }

    /// Forwards the frames the workers handed over, as if read here, and wakes a
    /// worker that waited for its buffers back.
    fn take_handoffs(&mut self, now: Instant) {
        for w in 0..self.workers.len() {
            while let Ok(h) = self.workers[w].shared.handoff_rx.try_recv() {
                let live = self
                    .ports
                    .get(h.port.0)
                    .is_some_and(|p| !p.removed && p.io.is_some());
                if self.pool.available() == 0 {
                    // Handlers hold buffers until they are run: let them go first.
                    self.run_internal(now);
                }
                match self.pool.alloc() {
                    Some(buf) if live => {
                        self.pool.buf_mut(buf)[DATA_OFFSET..DATA_OFFSET + h.len]
                            .copy_from_slice(&h.buf[..h.len]);
                        let _ = self.workers[w].shared.free_tx.try_send(h.buf);
                        self.forward_frame(h.port, buf, h.len, now);
                    }
                    other => {
                        if let Some(buf) = other {
                            self.pool.release(buf);
                        }
                        if let Some(slot) = self.ports.get_mut(h.port.0).filter(|_| live) {
                            slot.counters.rx_packets += 1;
                            slot.counters.drop(DropReason::HandoffFull);
                        }
                        let _ = self.workers[w].shared.free_tx.try_send(h.buf);
                    }
                }
            }
            let worker = &self.workers[w];
            if worker
                .shared
                .starved
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                worker.wake();
            }
        }
        self.run_internal(now);
        while let Some((port, reason)) = self.failed.pop() {
            self.take_down(port, reason);
        }
    }

    /// Gives the workers a new copy of the tables if a port or an FDB changed since
    /// the last one. The copy is one of a few kept here that no worker reads any
    /// more, refilled in place (only its parts that changed): no allocation once
    /// they have grown to size. If every copy is still being read, it tries again
    /// next turn.
    ///
    /// A change of ports (a capture, an impairment, a port attached or gone) goes out
    /// at once. FDB changes go out at most so often that copying takes a tenth of
    /// thread 0's time: a copy is as long as the table, and a MAC flood changes it
    /// every turn (the workers meanwhile hand the new sources to thread 0).
    fn publish(&mut self, now: Instant) {
        let (ports, fdbs) = self.view_stale();
        let due = ports || (fdbs && now >= self.next_publish);
        if !due {
            return;
        }
        let started = Instant::now();
        const VIEWS: usize = 3;
        let idx = match self.views.iter().position(|v| Arc::strong_count(v) == 1) {
            Some(i) => i,
            None if self.views.len() < VIEWS => {
                self.views.push(Arc::new(View::default()));
                self.views.len() - 1
            }
            None => return,
        };
        let view = Arc::get_mut(&mut self.views[idx]).expect("no other holder");
        if view.ports_gen != self.ports_gen || view.ports.len() != self.ports.len() {
            view.ports.resize_with(self.ports.len(), || None);
            for (v, slot) in view.ports.iter_mut().zip(&self.ports) {
                if slot.removed || slot.handler.is_some() {
                    *v = None;
                    continue;
                }
                match v {
                    Some(fp) => {
                        fp.bridge = slot.info.bridge;
                        fp.fast = fast(slot);
                        fp.guard.clone_from(&slot.guard);
                    }
                    None => {
                        *v = Some(FastPort {
                            bridge: slot.info.bridge,
                            guard: slot.guard.clone(),
                            fast: fast(slot),
                        })
                    }
                }
            }
            view.ports_gen = self.ports_gen;
        }
        view.bridges.truncate(self.bridges.len());
        for (i, b) in self.bridges.iter().enumerate() {
            if view.bridges.len() <= i {
                view.bridges.push(BridgeView {
                    mtu: b.mtu(),
                    // As the FDB itself reserves, so that refilling does not grow it,
                    // up to the default limit's room; a larger table grows as it fills.
                    fdb: HashMap::with_capacity(
                        b.fdb()
                            .max()
                            .saturating_mul(2)
                            .saturating_add(64)
                            .min(VIEW_RESERVE),
                    ),
                    generation: u64::MAX,
                });
            }
            let v = &mut view.bridges[i];
            if v.generation != b.fdb().generation() {
                v.fdb.clear();
                v.fdb
                    .extend(b.fdb().entries(now).map(|(m, e)| (m, (e.port, !e.fixed))));
                v.generation = b.fdb().generation();
            }
        }
        for w in &self.workers {
            w.shared.view.store(self.views[idx].clone());
        }
        self.current_view = Some(idx);
        self.next_publish = now + started.elapsed() * 9;
    }

    /// Whether the workers' view is out of date: (ports changed, an FDB changed).
    fn view_stale(&self) -> (bool, bool) {
        if self.workers.is_empty() {
            return (false, false);
        }
        let Some(v) = self.current_view.map(|i| &*self.views[i]) else {
            return (true, true);
        };
        let fdbs = v.bridges.len() != self.bridges.len()
            || v.bridges
                .iter()
                .zip(&self.bridges)
                .any(|(v, b)| v.generation != b.fdb().generation());
        (v.ports_gen != self.ports_gen, fdbs)
    }

    /// Whether a port's part of the published view is out of date: a capture ended
    /// (found only when its next copy fails), so the port may go back to the workers.
    fn fast_changed(&self) -> bool {
        let Some(current) = self.current_view else {
            return false;
        };
        self.views[current]
            .ports
            .iter()
            .zip(&self.ports)
            .any(|(v, slot)| v.as_ref().is_some_and(|v| v.fast != fast(slot)))
    }

    /// Ports that went down since the last call, with why.
    pub fn take_went_down(&mut self) -> Vec<(PortId, String)> {
        self.went_down
            .drain(..)
            .map(|p| {
                let reason = self.ports[p.0].down_reason.clone().unwrap_or_default();
                (p, reason)
            })
            .collect()
    }

    pub fn port(&self, id: PortId) -> Option<PortView<'_>> {
        self.ports
            .get(id.0)
            .filter(|s| !s.removed)
            .map(|slot| PortView {
                id,
                info: &slot.info,
                counters: &slot.counters,
                up: slot.io.is_some() || slot.handler.is_some(),
                internal: slot.handler,
                down_reason: slot.down_reason.as_deref(),
                link_down: slot.link_down || slot.io.as_ref().is_some_and(|io| !io.carrier()),
                io_kind: slot.io.as_ref().map(|io| io.kind()),
                io: slot.io.as_deref(),
            })
    }

    pub fn ports(&self) -> impl Iterator<Item = PortView<'_>> + '_ {
        (0..self.ports.len()).filter_map(|i| self.port(PortId(i)))
    }

    /// Device ports (not internal ones) that are up.
    pub fn up_ports(&self) -> usize {
        self.ports.iter().filter(|p| p.io.is_some()).count()
    }

    pub fn bridge(&self, id: BridgeId) -> Option<&Bridge> {
        self.bridges.get(id.0)
    }

    pub fn bridges(&self) -> impl Iterator<Item = (BridgeId, &Bridge)> + '_ {
        self.bridges
            .iter()
            .enumerate()
            .map(|(i, b)| (BridgeId(i), b))
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

/// Writes one frame to `egress`, counting the outcome there: now, or, for a small
/// frame to a TAP while `batch` is on, at the next [`flush_batch`].
fn send(
    ports: &mut [PortSlot],
    failed: &mut Vec<(PortId, String)>,
    batch: &mut Option<WriteBatch>,
    egress: PortId,
    data: &[u8],
    gso: bool,
    now: Instant,
) {
    let slot = &mut ports[egress.0];
    let Some(io) = slot.io.as_ref() else { return };
    if gso && !io.accepts_gso() {
        return slot.counters.drop(DropReason::EgressNoGso);
    }
    if let Some(shaper) = slot.shaper.as_mut() {
        // An impaired port: the frame waits its turn in the port's queue (or is lost).
        match shaper.admit(data, now) {
            Fate::Held => {}
            Fate::Lost | Fate::Overflow => slot.counters.drop(DropReason::Impaired),
        }
        return;
    }
    if let (Some(b), Some(fd)) = (batch.as_mut(), io.write_fd()) {
        if WriteBatch::fits(data) {
            if b.is_full() {
                flush_batch(ports, failed, batch);
            }
            if batch.as_mut().is_some_and(|b| b.push(fd, egress, data)) {
                return;
            }
        }
    }
    // A super-frame, a port of another kind, or no batching: after what waits, so
    // each port's frames keep their order.
    flush_batch(ports, failed, batch);
    write_out(&mut ports[egress.0], failed, egress, data);
}

/// Writes what waits in `batch` and counts each frame on its port, as [`write_out`]
/// does. A ring that fails is dropped: frames are written one by one from then on.
fn flush_batch(
    ports: &mut [PortSlot],
    failed: &mut Vec<(PortId, String)>,
    batch: &mut Option<WriteBatch>,
) {
    let Some(b) = batch.as_mut() else { return };
    let flushed = b.flush(|w, frame| {
        let result = w.result.map_err(io::Error::from_raw_os_error);
        written(&mut ports[w.egress.0], failed, w.egress, frame, result);
    });
    if flushed.is_err() {
        *batch = None;
    }
}

/// Writes one frame to a port now, counting the outcome there.
fn write_out(slot: &mut PortSlot, failed: &mut Vec<(PortId, String)>, egress: PortId, data: &[u8]) {
    let Some(io) = slot.io.as_mut() else { return };
    let result = io.send(data);
    written(slot, failed, egress, data, result);
}

/// Counts the outcome of writing `data` to a port.
fn written(
    slot: &mut PortSlot,
    failed: &mut Vec<(PortId, String)>,
    egress: PortId,
    data: &[u8],
    result: io::Result<()>,
) {
    match result {
        Ok(()) => {
            slot.link_down = false;
            count_tx(&mut slot.counters, data.len());
            capture_copy(slot, data);
        }
        Err(e) => {
            let reason = DropReason::of_write_error(e.raw_os_error());
            slot.counters.drop(reason);
            slot.link_down |= reason == DropReason::EgressLinkDown;
            if is_fatal(&e) && !failed.iter().any(|(p, _)| *p == egress) {
                failed.push((egress, e.to_string()));
            }
        }
    }
}

/// [`Datapath::admit`], over the port's slot and its bridge.
fn admit(slot: &PortSlot, bridge: &Bridge, data: &[u8]) -> Result<VnetHdr, DropReason> {
    crate::shard::admit(slot.guard.as_ref(), bridge.mtu(), data)
}

/// Whether the workers may forward from and to this port (see [`FastPort::fast`]).
fn fast(slot: &PortSlot) -> bool {
    slot.io.is_some()
        && slot.handler.is_none()
        && slot.capture.is_none()
        && slot.mirror.is_none()
        && slot.shaper.is_none()
}

fn count_tx(counters: &mut PortCounters, len: usize) {
    counters.tx_packets += 1;
    counters.tx_bytes += len.saturating_sub(VNET_HDR_LEN) as u64;
}
