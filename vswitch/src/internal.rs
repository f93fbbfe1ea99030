//! Internal ports: ports served inside the process rather than by a device, such as the
//! router's leg on each subnet. A frame the bridge sends to an internal port is handed,
//! buffer and all, to the port's [`Handler`], which may rewrite it in place and send it
//! on into another bridge through another internal port, answer it, keep it for a while,
//! or let it go. The datapath knows nothing of what the handler does.

use std::any::Any;
use std::marker::PhantomData;
use std::net::Ipv4Addr;
use std::time::Instant;

use mio::{Registry, Token};

use crate::fdb::Mac;
use crate::pool::{BufId, Pool, DATA_OFFSET};
use crate::port::PortId;

/// Index of a handler in the datapath.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandlerId(pub usize);

/// A handler of a known type in the datapath: what the lab keeps to reach its router
/// or its tunnel endpoint, instead of finding them by port name. Made by
/// [`crate::Datapath::add_handler_of`], read with [`crate::Datapath::handler_of`].
pub struct HandlerRef<T> {
    pub id: HandlerId,
    of: PhantomData<fn() -> T>,
}

impl<T> HandlerRef<T> {
    pub(crate) fn new(id: HandlerId) -> HandlerRef<T> {
        HandlerRef {
            id,
            of: PhantomData,
        }
    }
}

impl<T> Clone for HandlerRef<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for HandlerRef<T> {}

impl<T> std::fmt::Debug for HandlerRef<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HandlerRef({})", self.id.0)
    }
}

/// What a handler would do with a frame, as `tapnet trace` shows it: the same
/// decision [`Handler::handle`] takes, made without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Traced {
    /// Sent on into the bridge of internal port `via` (the frame rewritten as it
    /// would be); `step` says how.
    Inject { via: PortId, step: String },
    /// Leaves the datapath here (into a tunnel, through the host's sockets), for
    /// `egress`; `step` says how.
    Leaves { egress: String, step: String },
    /// Kept or answered here; nothing goes on yet.
    Done { step: String },
    /// Dropped, counted under `reason` (as `show drops` names it).
    Drop { reason: &'static str, step: String },
}

/// What becomes of a frame handed to a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Enter the bridge of internal port `via`, as if `via` had received it; `len` is
    /// the frame's length now (virtio-net header included).
    Inject { via: PortId, len: usize },
    /// The handler keeps the buffer and will inject or release it later.
    Keep,
    /// Done with it (consumed, or dropped and counted by the handler).
    Release,
}

/// The handler's way to the datapath's buffers and injection queue.
pub struct Emitter<'a> {
    pub(crate) pool: &'a mut Pool,
    pub(crate) inject: &'a mut Vec<(PortId, BufId, usize)>,
    pub(crate) registry: &'a Registry,
    pub(crate) token_base: usize,
}

/// Tokens each handler may use for its own descriptors.
pub const HANDLER_TOKENS: usize = 1 << 20;

impl Emitter<'_> {
    /// The poll loop's registry, for the handler's own descriptors (host sockets).
    pub fn registry(&self) -> &Registry {
        self.registry
    }

    /// The token for the handler's descriptor number `n` (below [`HANDLER_TOKENS`]);
    /// when it fires the datapath calls [`Handler::ready`] with `n`.
    pub fn token(&self, n: usize) -> Token {
        assert!(n < HANDLER_TOKENS, "handler token {n} out of range");
        Token(self.token_base + n)
    }

    /// A frame's bytes (virtio-net header, then Ethernet), for reading and rewriting.
    pub fn data(&mut self, buf: BufId, len: usize) -> &mut [u8] {
        &mut self.pool.buf_mut(buf)[DATA_OFFSET..DATA_OFFSET + len]
    }

    /// A frame's bytes, read-only (while other parts of the emitter are borrowed).
    pub fn frame(&self, buf: BufId, len: usize) -> &[u8] {
        &self.pool.buf(buf)[DATA_OFFSET..DATA_OFFSET + len]
    }

    /// Two frames at once: `a` (its first `len` bytes) to read, and all of `b`'s room
    /// to write.
    pub fn two(&mut self, a: BufId, len: usize, b: BufId) -> (&[u8], &mut [u8]) {
        let (ra, rb) = self.pool.two_bufs(a, b);
        (&ra[DATA_OFFSET..DATA_OFFSET + len], &mut rb[DATA_OFFSET..])
    }

    /// All the room a buffer has for a frame, for building a new one.
    pub fn room(&mut self, buf: BufId) -> &mut [u8] {
        &mut self.pool.buf_mut(buf)[DATA_OFFSET..]
    }

    /// A fresh buffer for a new frame (an ARP request, an ICMP error), if one is free.
    pub fn alloc(&mut self) -> Option<BufId> {
        self.pool.alloc()
    }

    /// Buffers free in the pool now.
    pub fn available(&self) -> usize {
        self.pool.available()
    }

    /// Sends a frame (one the handler kept or built) into the bridge of `via`.
    pub fn inject(&mut self, via: PortId, buf: BufId, len: usize) {
        self.inject.push((via, buf, len));
    }

    /// Gives back a buffer the handler kept or allocated.
    pub fn release(&mut self, buf: BufId) {
        self.pool.release(buf);
    }
}

/// The logic behind one or more internal ports.
pub trait Handler: Send {
    /// A frame sent to internal port `port`; the handler owns `buf` until it says
    /// otherwise.
    fn handle(
        &mut self,
        port: PortId,
        buf: BufId,
        len: usize,
        out: &mut Emitter<'_>,
        now: Instant,
    ) -> Verdict;

    /// Called once, when the handler joins the datapath: register descriptors here.
    fn attach(&mut self, _out: &mut Emitter<'_>) {}

    /// Called once the datapath has handed over every frame it had for now (after
    /// each batch it read, at most [`crate::datapath::BATCH`] frames a port), if
    /// [`Handler::handle`] was called since the last time: a handler that holds
    /// frames back to send them together (VXLAN's UDP GSO batches) sends them now.
    fn flush(&mut self, _out: &mut Emitter<'_>) {}

    /// Called about once a second: aging, retries, giving up on kept frames.
    fn tick(&mut self, _out: &mut Emitter<'_>, _now: Instant) {}

    /// One of the handler's own descriptors (token number `n`) is ready. Returns true
    /// if it stopped before draining it (a batch limit): the datapath calls again on
    /// its next turn, as readiness is edge-triggered and will not be reported again.
    fn ready(&mut self, _n: usize, _out: &mut Emitter<'_>, _now: Instant) -> bool {
        false
    }

    /// When the handler next needs [`Handler::timeout`] called (TCP timers, say).
    fn next_timeout(&self) -> Option<Instant> {
        None
    }

    /// Its [`Handler::next_timeout`] has come.
    fn timeout(&mut self, _out: &mut Emitter<'_>, _now: Instant) {}

    /// Starts copying the frames the handler exchanges outside the datapath (VXLAN's
    /// underlay datagrams, with their outer headers) to `tx`; false if it has none.
    fn capture_outside(
        &mut self,
        _tx: crossbeam_channel::Sender<crate::datapath::Captured>,
    ) -> bool {
        false
    }

    /// What the handler's ports are, as `show ports` names them ("router", "vxlan").
    fn kind(&self) -> &'static str {
        "internal"
    }

    /// What [`Handler::handle`] would do with `frame` (virtio-net header, then
    /// Ethernet) sent to internal port `port` at `now`, decided without changing
    /// anything: no table learns, nothing is sent or kept. `frame` is rewritten as
    /// `handle` would rewrite it. For `tapnet trace`.
    fn trace(&self, _port: PortId, _frame: &mut [u8], _now: Instant) -> Traced {
        Traced::Done {
            step: "internal port: not traced further".into(),
        }
    }

    /// For `tapnet trace`: the MAC that answers an ARP request for `ip` on internal
    /// port `port`'s bridge, and how it is known (the handler's own address, or one
    /// it learned); `None` if the handler does not know.
    fn answers_arp(&self, _port: PortId, _ip: Ipv4Addr, _now: Instant) -> Option<(Mac, String)> {
        None
    }

    /// For `tapnet trace`: if internal port `port` is its bridge's gateway, its
    /// address and MAC.
    fn gateway(&self, _port: PortId) -> Option<(Ipv4Addr, Mac)> {
        None
    }

    /// For the control plane to reach the concrete handler (`show`), through a
    /// [`HandlerRef`].
    fn as_any(&self) -> &dyn Any;
    /// The same, to change it (a port attached or detached at run time).
    fn as_any_mut(&mut self) -> &mut dyn Any;
}
