//! TCP through the host proxy: smoltcp terminates the container's side, a host socket
//! the other, and the bytes are spliced between them.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::Interest;
use smoltcp::iface::{PollIngressSingleResult, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};
use vswitch::wire::ip::IpHead;
use vswitch::wire::tcp::{TcpPacket, ACK, RST, SYN};

use super::errqueue::{self, IcmpError, Quote};
use super::{transient, unmapped, Entry, HostProxy, Reg, Unreachable, PROTO_TCP};
use std::cmp::Reverse;

const TCP_BUFFER: usize = 256 * 1024;
/// A connection smoltcp opens towards a container (a forward) gives up when the
/// container has not answered in this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// An established connection probes an idle container this often (TCP keep-alive),
/// and gives up on one that has not answered anything for [`DEAD_PEER`]: a
/// container that is gone (its namespace deleted) frees its flow, and both ends are
/// reset. A container that answers keeps its connection for as long as it likes.
const KEEPALIVE: Duration = Duration::from_secs(60);
const DEAD_PEER: Duration = Duration::from_secs(200);

/// One spliced connection.
pub(super) struct TcpConn {
    /// Unique among the proxy's connections (entry numbers are reused).
    pub id: u64,
    /// The connection's own smoltcp socket set: packets go straight to its socket,
    /// and polling it costs the same however many connections there are.
    pub set: SocketSet<'static>,
    /// `None` while a masquerade connection waits for its host connect: the
    /// container's SYN is held (`pending_syn`) so that the container learns the
    /// outcome as a real peer would tell it (SYN-ACK, reset, or an ICMP error).
    pub smol: Option<SocketHandle>,
    /// When the connection started waiting for its host connect.
    pub pending_since: Option<Instant>,
    pub pending_syn: Option<Vec<u8>>,
    pub host: TcpStream,
    pub last_active: Instant,
    /// The container side's view: (container address, the other end's address).
    pub container: SocketAddr,
    pub remote: SocketAddr,
    /// The container's MAC, whose share a masquerade connection counts against.
    pub owner: vswitch::Mac,
    pub rule: Option<usize>,
    pub connected: bool,
    /// The container's side reached ESTABLISHED.
    pub established: bool,
    pub host_eof: bool,
    pub container_eof: bool,
    /// Waiting in the proxy's list of connections to serve.
    pub dirty: bool,
    /// The wakeup armed for it in the proxy's timer heap (smoltcp time).
    pub timer: Option<smoltcp::time::Instant>,
    /// Added to its TCP timestamps (see [`tsval`]).
    pub ts_offset: u32,
    /// The MSS the container's SYN or SYN-ACK asked for (0 before it came, or if it
    /// had none): smoltcp is told [`PROXY_MSS`] instead and sends segments up to 64
    /// KiB, which go to the container as GSO super-frames cut at this size.
    pub segment: u16,
}

impl TcpConn {
    fn new(
        id: u64,
        host: TcpStream,
        container: SocketAddr,
        remote: SocketAddr,
        owner: vswitch::Mac,
        now: Instant,
    ) -> TcpConn {
        TcpConn {
            id,
            set: SocketSet::new(Vec::new()),
            smol: None,
            pending_since: None,
            pending_syn: None,
            host,
            last_active: now,
            container,
            remote,
            owner,
            rule: None,
            connected: false,
            established: false,
            host_eof: false,
            container_eof: false,
            dirty: false,
            timer: None,
            ts_offset: id as u32,
            segment: 0,
        }
    }
}

thread_local! {
    /// The timestamp offset of the connection smoltcp is working on (see [`tsval`]):
    /// set around every call into its socket set.
    static TS_OFFSET: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// TCP timestamps (RFC 7323): the wall clock in milliseconds, plus an offset of the
/// connection's own that grows by one with each new connection. Within a connection
/// they rise with the clock and stay equal within a millisecond (so runs of segments
/// still merge into super-frames: GRO wants equal options). Across connections a
/// newer one's are always newer, even reconnecting within the same millisecond: a
/// container whose socket for a client's address and port
/// is still in TIME_WAIT takes the new SYN only with a newer timestamp than it last
/// saw (Linux's `tcp_timewait_state_process`); else it answers with an ACK that costs
/// the client a second.
fn tsval() -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u32);
    now.wrapping_add(TS_OFFSET.with(|o| o.get()))
}

/// Runs `f` with connection timestamps offset by `offset` (see [`tsval`]).
fn with_ts<R>(offset: u32, f: impl FnOnce() -> R) -> R {
    TS_OFFSET.with(|o| o.set(offset));
    f()
}

/// The MSS smoltcp is told in a container's SYN or SYN-ACK, whatever the container
/// asked for: smoltcp then sends segments of up to this much data, each handed to the
/// container as one GSO super-frame that its kernel takes whole (or cuts at the MSS
/// it asked for, [`TcpConn::segment`]), as a peer with TSO would send them, instead
/// of 45 segments to make and merge again. With its headers a segment still fits a
/// 64 KiB IPv4 or IPv6 packet.
pub(super) const PROXY_MSS: u16 = 65000;

/// Tells smoltcp [`PROXY_MSS`] in `packet` (an IP packet from a container) if it is
/// a SYN (or SYN-ACK) with an MSS option; what the container asked for. smoltcp
/// does not check TCP checksums on what it receives, so the checksum is left.
fn raise_mss(packet: &mut [u8]) -> Option<u16> {
    let l4 = {
        let ip = IpHead::parse(packet)?;
        ip.header_len(packet)
    };
    let mut tcp = TcpPacket::new_checked(packet.get_mut(l4..)?)?;
    if tcp.flags() & SYN == 0 {
        return None;
    }
    tcp.set_mss_option(PROXY_MSS)
}

/// A smoltcp socket for one spliced connection.
fn new_tcp_socket() -> tcp::Socket<'static> {
    let mut smol = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
    );
    smol.set_tsval_generator(Some(tsval));
    smol.set_timeout(Some(smol_duration(CONNECT_TIMEOUT)));
    // Set before the handshake, which arms it from the last packet: set later, it
    // would fire at once (a spurious probe right after the handshake).
    smol.set_keep_alive(Some(smol_duration(KEEPALIVE)));
    smol
}

fn smol_duration(d: Duration) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_micros(d.as_micros() as u64)
}

/// Half-open masquerade connections at most, per container address and in all: from
/// the container's SYN until both the host's connect and the container's side of the
/// handshake are done. A container that floods SYNs (to an address that never
/// answers, or one that does while it never completes its own side) holds no more
/// than these; past them its SYNs are dropped (counted) as by a full SYN backlog, and
/// it retries.
pub(super) const PENDING_PER_CONTAINER: u32 = 64;
pub(super) const PENDING_TOTAL: usize = 1024;
/// A half-open connection not done in this long is given up: a host connect not
/// answered (the container hears host unreachable from its gateway), or a container
/// that never answered its SYN-ACK (both ends are reset).
pub(super) const PENDING_TIMEOUT: Duration = Duration::from_secs(30);
/// Any connection not established at the container's side after this long is let
/// go (both ends reset): the net under smoltcp's own [`CONNECT_TIMEOUT`].
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(75);

impl HostProxy {
    /// A TCP segment from a container for the outside.
    pub(super) fn tcp_from_container(
        &mut self,
        ip: &IpHead<'_>,
        packet: &[u8],
        reg: &Reg<'_>,
        now: Instant,
    ) {
        let Some(tcp) = TcpPacket::new_checked(ip.payload) else {
            self.stats.malformed += 1;
            return;
        };
        let src = SocketAddr::new(ip.src, tcp.src_port());
        let dst = SocketAddr::new(ip.dst, tcp.dst_port());
        if src.port() == 0 || dst.port() == 0 {
            self.stats.malformed += 1;
            return;
        }
        let syn_only = tcp.flags() & (SYN | ACK | RST) == SYN;
        let Some(n) = self.flows.get(&(PROTO_TCP, src, dst)).copied() else {
            if syn_only && !self.is_gateway(dst.ip()) {
                if !self.masquerade {
                    self.stats.no_flow += 1;
                    return;
                }
                return self.open_masquerade_tcp(src, dst, packet, ip.ttl, reg, now);
            }
            // No connection (a stray segment, or a SYN to a gateway, where nothing
            // listens): smoltcp with no socket answers with a reset.
            return self.ingress(None, packet, now);
        };
        let Some(Some(Entry::Tcp(c))) = self.entries.get_mut(n) else {
            return;
        };
        if c.pending_syn.is_some() {
            // Still connecting: keep the latest SYN (a retry).
            if syn_only {
                c.pending_syn = Some(packet.to_vec());
            }
            return;
        }
        self.ingress(Some(n), packet, now);
        self.mark(n);
    }

    /// Hands one packet to connection `n`'s socket (or to none: a reset comes back).
    fn ingress(&mut self, n: Option<usize>, packet: &[u8], now: Instant) {
        let ts = self.smol_now(now);
        self.queues.push_rx(packet);
        let (set, offset) = match n.and_then(|n| self.entries.get_mut(n)) {
            Some(Some(Entry::Tcp(c))) => {
                if let Some(mss) = self.queues.last_rx().and_then(raise_mss) {
                    c.segment = mss;
                }
                (&mut c.set, c.ts_offset)
            }
            _ => (&mut self.no_socket, 0),
        };
        let (iface, queues) = (&mut self.iface, &mut self.queues);
        with_ts(offset, || {
            while iface.poll_ingress_single(ts, queues, set) != PollIngressSingleResult::None {}
        });
        if n.is_none() {
            while self
                .iface
                .poll_egress(ts, &mut self.queues, &mut self.no_socket)
                != PollResult::None
            {}
        }
    }

    /// Queues connection `n` to be served on the next [`HostProxy::poll`].
    pub(super) fn mark(&mut self, n: usize) {
        if let Some(Some(Entry::Tcp(c))) = self.entries.get_mut(n) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(n);
            }
        }
    }

    /// Starts the host side of a container's new connection, holding its SYN. The
    /// host's SYN leaves with the container's TTL less this hop, so a `traceroute -T`
    /// from the container counts the routers beyond the host.
    fn open_masquerade_tcp(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        syn: &[u8],
        ttl: u8,
        reg: &Reg<'_>,
        now: Instant,
    ) {
        let mine = self.pending.get(&self.from).copied().unwrap_or(0);
        if mine >= PENDING_PER_CONTAINER || self.pending_total >= PENDING_TOTAL {
            self.stats.syn_limited += 1;
            return;
        }
        if !self.within_share() {
            return;
        }
        let host = match connect(dst, ttl.saturating_sub(1)) {
            Ok(host) => host,
            Err(e) => return self.host_connect_failed(&e, syn, None, now),
        };
        self.make_room();
        let id = self.next_id();
        let mut conn = TcpConn::new(id, host, src, dst, self.from, now);
        conn.pending_syn = Some(syn.to_vec());
        conn.pending_since = Some(now);
        let n = self.add(Entry::Tcp(conn));
        *self.pending.entry(self.from).or_insert(0) += 1;
        self.pending_total += 1;
        self.track_tcp(n, reg, now);
        self.stats.tcp_opened += 1;
    }

    /// Watches connection `n`'s host socket and files it under its flow key.
    fn track_tcp(&mut self, n: usize, reg: &Reg<'_>, now: Instant) {
        if let Some(Entry::Tcp(c)) = self.entries[n].as_mut() {
            let _ = reg.registry.register(
                &mut c.host,
                reg.token(n),
                Interest::READABLE | Interest::WRITABLE,
            );
            self.flows.insert((PROTO_TCP, c.container, c.remote), n);
        }
        self.touch(n, now);
        self.mark(n);
    }

    /// The host could not connect where a container's SYN asked: tell the container
    /// as the network would. An ICMP error from the network (TTL exceeded on the way,
    /// host unreachable): the same error, from the same sender. Refused: smoltcp,
    /// with no socket listening, answers the SYN with a reset. No route on the host
    /// (or no answer in time): an ICMP unreachable from the container's gateway.
    fn host_connect_failed(
        &mut self,
        e: &io::Error,
        syn: &[u8],
        icmp: Option<IcmpError>,
        now: Instant,
    ) {
        if let Some(err) = icmp {
            self.stats.tcp_unreachable += 1;
            return self.relay_error(&err, &Quote::of(syn));
        }
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => {
                self.stats.tcp_refused += 1;
                self.ingress(None, syn, now);
            }
            code => {
                self.stats.tcp_unreachable += 1;
                let why = if code == Some(libc::ENETUNREACH) {
                    Unreachable::Net
                } else {
                    Unreachable::Host
                };
                self.error_from_gateway(syn, why);
            }
        }
    }

    /// Gives up on half-open connections older than [`PENDING_TIMEOUT`].
    pub(super) fn expire_pending(&mut self, now: Instant) {
        let stale: Vec<usize> = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(n, e)| match e {
                Some(Entry::Tcp(c))
                    if c.pending_since
                        .is_some_and(|t| now.saturating_duration_since(t) >= PENDING_TIMEOUT) =>
                {
                    Some(n)
                }
                _ => None,
            })
            .collect();
        for n in stale {
            let syn = match self.entries.get_mut(n) {
                Some(Some(Entry::Tcp(c))) => c.pending_syn.take(),
                _ => None,
            };
            self.stats.handshake_timeouts += 1;
            self.remove(n);
            if let Some(syn) = syn {
                let timed_out = io::Error::from_raw_os_error(libc::ETIMEDOUT);
                self.host_connect_failed(&timed_out, &syn, None, now);
            }
        }
    }

    /// Accepts what waits on forward listener `n`; true if it stopped before the queue
    /// was empty (a batch limit, or accept failing for want of descriptors).
    pub(super) fn accept_tcp(&mut self, n: usize, reg: &Reg<'_>, now: Instant) -> bool {
        for _ in 0..super::RX_BATCH {
            self.make_room();
            let (accepted, rule) = match &self.entries[n] {
                Some(Entry::TcpListener { socket, rule }) => (socket.accept(), *rule),
                _ => return false,
            };
            let (host, peer) = match accepted {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.stats.accept_errors += 1;
                    return true;
                }
            };
            let client = unmapped(peer);
            let to = self.rules[rule].to;
            let mut smol = new_tcp_socket();
            // Connect from the client's own address, so the container sees who calls;
            // but a client the container could not answer directly (the host's
            // loopback, or an address inside a lab subnet) is sourced from the
            // gateway of `to`'s subnet instead.
            let source = self.forward_source(client, to);
            // The client's last connection from this port may still be closing on
            // the container's side (its FIN or last ACK in flight): the host took a
            // new connection on the same four-tuple, so the old one is over. Reset it
            // now, before the new SYN: else the container, still in FIN_WAIT, answers
            // the SYN with an ACK of the old connection, and the new one waits a
            // retransmission (a second) to start.
            if let Some(&old) = self.flows.get(&(PROTO_TCP, to, source)) {
                self.remove(old);
            }
            let local = IpListenEndpoint {
                addr: Some(IpAddress::from(source.ip())),
                port: source.port(),
            };
            if smol
                .connect(
                    self.iface.context(),
                    IpEndpoint::new(IpAddress::from(to.ip()), to.port()),
                    local,
                )
                .is_err()
            {
                reset(&host);
                continue;
            }
            let id = self.next_id();
            let mut conn = TcpConn::new(id, host, to, source, vswitch::Mac::default(), now);
            conn.smol = Some(conn.set.add(smol));
            conn.rule = Some(rule);
            conn.connected = true;
            let m = self.add(Entry::Tcp(conn));
            self.track_tcp(m, reg, now);
            self.forward_stats[rule].connections += 1;
            self.forward_stats[rule].active += 1;
        }
        true
    }

    /// The address a forwarded connection from `client` comes from inside the lab:
    /// the client's own, or, for a client the container could not answer directly
    /// (the host's loopback, an address inside a lab subnet, or one of the other
    /// family than the container's), the gateway of `to`'s subnet with a free port.
    pub(super) fn forward_source(&mut self, client: SocketAddr, to: SocketAddr) -> SocketAddr {
        if !client.ip().is_loopback()
            && !client.ip().is_unspecified()
            && client.is_ipv4() == to.is_ipv4()
            && !self.in_lab(client.ip())
        {
            return client;
        }
        let gw = match self.gateway_for(to.ip()) {
            Some(gw) => gw,
            None if to.is_ipv4() => self
                .gateways
                .first()
                .map_or(IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 0, 1)), |g| {
                    IpAddr::V4(g.2)
                }),
            None => self.gateways6.first().map_or(
                IpAddr::V6(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
                |g| IpAddr::V6(g.0),
            ),
        };
        // A free port on the gateway's address, towards `to`.
        for _ in 0..1024 {
            self.next_port = if self.next_port < 32768 || self.next_port >= 60999 {
                32768
            } else {
                self.next_port + 1
            };
            let source = SocketAddr::new(gw, self.next_port);
            if !self.flows.contains_key(&(PROTO_TCP, to, source))
                && !self.flows.contains_key(&(super::PROTO_UDP, to, source))
            {
                return source;
            }
        }
        client
    }

    /// Serves the connections that have something to do: those whose host socket
    /// became ready, that got packets from their container, or whose smoltcp timer
    /// (retransmission, delayed ACK, keep-alive) is due. The work is proportional to
    /// them, not to every connection open.
    pub fn poll(&mut self, now: Instant) {
        let ts = self.smol_now(now);
        self.last_ts = ts;
        while let Some(&Reverse((at, n, id))) = self.timers.peek() {
            if at > ts {
                break;
            }
            self.timers.pop();
            if let Some(Some(Entry::Tcp(c))) = self.entries.get_mut(n) {
                if c.id == id && c.timer == Some(at) {
                    c.timer = None;
                    self.mark(n);
                }
            }
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        for &n in &dirty {
            if let Some(Some(Entry::Tcp(c))) = self.entries.get_mut(n) {
                c.dirty = false;
                self.serve(n, now, ts);
            }
        }
        dirty.clear();
        // Work queued while serving (none today) waits for the next call.
        dirty.append(&mut self.dirty);
        self.dirty = dirty;
    }

    /// Moves bytes between connection `n`'s two sides until nothing moves, sends what
    /// smoltcp has for the container, and arms its next wakeup.
    fn serve(&mut self, n: usize, now: Instant, ts: smoltcp::time::Instant) {
        for _ in 0..4 {
            if !self.splice(n, now) {
                break;
            }
            let Some(Some(Entry::Tcp(c))) = self.entries.get_mut(n) else {
                return;
            };
            egress(&mut self.iface, &mut self.queues, c, ts);
        }
        let Some(Some(Entry::Tcp(c))) = self.entries.get_mut(n) else {
            return;
        };
        egress(&mut self.iface, &mut self.queues, c, ts);
        // An earlier wakeup already armed stays (it fires, finds less to do, re-arms):
        // the heap holds about one entry per connection.
        if let Some(at) = self.iface.poll_at(ts, &c.set) {
            if c.timer.is_none_or(|t| at < t) {
                c.timer = Some(at);
                self.timers.push(Reverse((at, n, c.id)));
            }
        }
    }

    /// One pass over connection `n`'s two sides; true if anything moved (or it ended).
    fn splice(&mut self, n: usize, now: Instant) -> bool {
        let Some(Some(Entry::Tcp(c))) = self.entries.get_mut(n) else {
            return false;
        };
        if !c.connected {
            let failed = match c.host.take_error() {
                Ok(Some(e)) | Err(e) => Some(e),
                Ok(None) => None,
            };
            if let Some(e) = failed {
                // What the network said, if it said anything (IP_RECVERR).
                let mut icmp = None;
                while let Some(entry) = errqueue::read(c.host.as_raw_fd()) {
                    icmp = icmp.or(entry);
                }
                let syn = c.pending_syn.take();
                self.remove(n);
                if let Some(syn) = syn {
                    self.host_connect_failed(&e, &syn, icmp, now);
                }
                return true;
            }
            if c.host.peer_addr().is_err() {
                return false; // still connecting
            }
            c.connected = true;
            let syn = c.pending_syn.take();
            if let Some(syn) = syn {
                // Connected: now let smoltcp answer the held SYN.
                let mut smol = new_tcp_socket();
                let listening = smol.listen(IpListenEndpoint {
                    addr: Some(IpAddress::from(c.remote.ip())),
                    port: c.remote.port(),
                });
                if listening.is_ok() {
                    c.smol = Some(c.set.add(smol));
                    self.ingress(Some(n), &syn, now);
                }
            }
            return true;
        }
        let Some(handle) = c.smol else {
            return false;
        };
        let smol = c.set.get_mut::<tcp::Socket>(handle);
        let state = smol.state();
        if !c.established
            && !matches!(
                state,
                tcp::State::Closed
                    | tcp::State::Listen
                    | tcp::State::SynSent
                    | tcp::State::SynReceived
            )
        {
            c.established = true;
            smol.set_timeout(Some(smol_duration(DEAD_PEER)));
            if c.pending_since.take().is_some() {
                unpend(&mut self.pending, &mut self.pending_total, c.owner);
            }
        }
        if state == tcp::State::Closed {
            // Closed with no FIN from the container: it reset the connection,
            // refused it (a forward to a port where nothing listens), or never
            // answered. The client must not see a clean, empty connection: it is
            // reset at once, as kernel DNAT would have it refused.
            if !c.container_eof {
                reset(&c.host);
                match (c.established, c.rule) {
                    (false, Some(r)) => self.forward_stats[r].refused += 1,
                    _ => self.stats.tcp_reset += 1,
                }
            }
            c.host_eof = true;
            c.container_eof = true;
            self.remove(n);
            return true;
        }
        let mut moved = false;
        let mut bytes_in = 0u64;
        let mut bytes_out = 0u64;
        let mut broken = false;
        // Host -> container.
        while !c.host_eof && smol.can_send() {
            let host = &mut c.host;
            let r = smol.send(|buf| match host.read(buf) {
                Ok(0) => (0, Ok(0)),
                Ok(k) => (k, Ok(k)),
                Err(e) => (0, Err(e)),
            });
            match r {
                Ok(Ok(0)) => {
                    c.host_eof = true;
                    smol.close();
                    moved = true;
                }
                Ok(Ok(k)) => {
                    bytes_in += k as u64;
                    moved = true;
                }
                Ok(Err(e)) if !transient(&e) => {
                    // The far side reset (or worse): so does the container's side.
                    smol.abort();
                    broken = true;
                    break;
                }
                _ => break,
            }
        }
        // Container -> host.
        while !broken && smol.can_recv() {
            let host = &mut c.host;
            let r = smol.recv(|buf| match host.write(buf) {
                Ok(k) => (k, Ok(k)),
                Err(e) => (0, Err(e)),
            });
            match r {
                Ok(Ok(k)) if k > 0 => {
                    bytes_out += k as u64;
                    moved = true;
                }
                Ok(Err(e)) if !transient(&e) => {
                    smol.abort();
                    broken = true;
                    break;
                }
                _ => break,
            }
        }
        if !broken && !c.container_eof && c.established && !smol.may_recv() && !smol.can_recv() {
            // The container's FIN: pass it on.
            c.container_eof = true;
            let _ = c.host.shutdown(Shutdown::Write);
            moved = true;
        }
        let finished = state == tcp::State::TimeWait && c.host_eof && !smol.can_recv();
        if let Some(r) = c.rule {
            self.forward_stats[r].bytes_in += bytes_in;
            self.forward_stats[r].bytes_out += bytes_out;
        }
        if bytes_in + bytes_out > 0 {
            self.touch(n, now);
        }
        if broken {
            self.stats.tcp_reset += 1;
            self.remove(n);
            return true;
        }
        if finished {
            self.remove(n);
            return true;
        }
        moved
    }

    /// Forgets a connection. Unless both ends closed it cleanly, both are reset: the
    /// host side by closing with a zero linger (RST, not FIN), the container's by
    /// smoltcp, whose reset is sent now, before its socket goes.
    pub(super) fn forget_tcp(&mut self, mut c: TcpConn) {
        self.flows.remove(&(PROTO_TCP, c.container, c.remote));
        if c.pending_since.is_some() {
            unpend(&mut self.pending, &mut self.pending_total, c.owner);
        }
        if !(c.host_eof && c.container_eof) {
            reset(&c.host);
        }
        if let Some(h) = c.smol {
            let smol = c.set.get_mut::<tcp::Socket>(h);
            if !matches!(smol.state(), tcp::State::Closed | tcp::State::TimeWait) {
                smol.abort();
                // With the connection's own timestamps: a reset that looks older
                // than what the container last saw is dropped (PAWS, RFC 7323).
                egress(&mut self.iface, &mut self.queues, &mut c, self.last_ts);
            }
        }
        if let Some(r) = c.rule {
            self.forward_stats[r].active = self.forward_stats[r].active.saturating_sub(1);
        }
    }
}

/// One of container `ip`'s half-open connections is no longer: both handshakes are
/// done, or it is gone.
fn unpend(pending: &mut HashMap<vswitch::Mac, u32>, total: &mut usize, ip: vswitch::Mac) {
    *total -= 1;
    if let Some(k) = pending.get_mut(&ip) {
        *k -= 1;
        if *k == 0 {
            pending.remove(&ip);
        }
    }
}

/// Sends what connection `c`'s socket has for its container.
fn egress(
    iface: &mut smoltcp::iface::Interface,
    queues: &mut super::device::Queues,
    c: &mut TcpConn,
    ts: smoltcp::time::Instant,
) {
    with_ts(c.ts_offset, || {
        while iface.poll_egress(ts, queues, &mut c.set) != PollResult::None {}
    });
}

/// A non-blocking connect to `dst` whose packets leave with `ttl` (the hop limit,
/// over IPv6), with ICMP errors queued (IP_RECVERR, IPv4) so a failed connect says
/// what the network said.
fn connect(dst: SocketAddr, ttl: u8) -> io::Result<TcpStream> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(dst),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.set_nonblocking(true)?;
    let _ = errqueue::enable(s.as_raw_fd(), dst.is_ipv6());
    let _ = errqueue::set_ttl(s.as_raw_fd(), dst.is_ipv6(), ttl);
    match s.connect(&dst.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(s.into()))
}

/// Resets a host connection: closing it with a zero linger sends RST, not FIN.
fn reset(host: &TcpStream) {
    let _ = socket2::SockRef::from(host).set_linger(Some(Duration::ZERO));
}
