//! The host proxy: how containers reach the outside (masquerade) and how the outside
//! reaches containers (port forwards), through the host's own sockets, with no
//! iptables rule and no kernel forwarding.
//!
//! - TCP ([`tcp`]) is terminated in tapnet by smoltcp with any-IP on (it accepts a
//!   connection to any address), and spliced to a host TCP socket: for masquerade,
//!   one connected to the real destination; for a forward, the connection the host
//!   listener accepted. The smoltcp side of a forward connects *from the real client's
//!   address*, so the container sees who is calling.
//! - UDP ([`udp`]) maps each flow to a host UDP socket (masquerade), or to the
//!   forward's listening socket and the client's address (forward).
//! - Echo requests ([`icmp`]) go out through unprivileged ICMP sockets, or, where the
//!   host's `net.ipv4.ping_group_range` refuses those and tapnet is root, through one
//!   raw ICMP socket for the lab.
//! - The container's TTL (less this hop) goes onto the host socket, and the ICMP
//!   errors the host's sockets receive come back to the container from the address
//!   that sent them, quoting the container's own packet ([`errqueue`]): traceroute,
//!   ECONNREFUSED and path MTU discovery work as through a kernel NAT.
//!
//! The proxy deals in IP packets: the router hands it what is for outside addresses
//! (whole: fragments are reassembled first) and routes what it makes
//! ([`HostProxy::drain_output`]) to the containers, cutting what is too big into
//! fragments.

mod device;
mod errqueue;
mod icmp;
mod lru;
mod tcp;
mod trace;
mod udp;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use lru::Lru;
use mio::net::{TcpListener, UdpSocket};
use mio::{Interest, Registry, Token};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use vswitch::wire::checksum::{classify, Checksums};
use vswitch::wire::icmpv4::{self, IcmpRepr};
use vswitch::wire::icmpv6;
use vswitch::wire::ip::IpHead;
use vswitch::wire::ipv4::Ipv4Packet;
use vswitch::Mac;

use crate::nat::{Timeouts, PROTO_TCP, PROTO_UDP};
use device::Queues;
use errqueue::{IcmpError, Quote};
use icmp::PingFlow;
pub use icmp::PingMode;
use tcp::TcpConn;
pub use trace::ProxyTrace;
use udp::UdpFlow;

const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = icmpv6::NEXT_HEADER;

/// Where the proxy registers its host sockets: the poll loop's registry and the first
/// of the tokens it may use (socket number n gets token `base + n`).
pub struct Reg<'a> {
    pub registry: &'a Registry,
    pub base: usize,
}

impl Reg<'_> {
    fn token(&self, n: usize) -> Token {
        Token(self.base + n)
    }
}

/// A published port: connections or datagrams to `listen` on the host go to `to`.
/// Either may be IPv4 or IPv6: an IPv6 `listen` takes IPv6 clients only
/// (IPV6_V6ONLY), and a client of the other family than `to` reaches the container
/// from the gateway of `to`'s subnet (it could not answer the client's address).
#[derive(Debug, Clone, Copy)]
pub struct ForwardRule {
    pub proto: u8,
    pub listen: SocketAddr,
    pub to: SocketAddr,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardStats {
    pub connections: u64,
    pub active: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Connections the container refused (or never answered): the client was reset.
    pub refused: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub tcp_opened: u64,
    pub tcp_refused: u64,
    pub tcp_unreachable: u64,
    pub udp_flows: u64,
    pub flows_evicted: u64,
    /// Flows let go after their idle timeout (`[nat]` timeouts).
    pub flows_expired: u64,
    /// Packets for outside addresses that masquerade is off for and no forward owns.
    pub no_flow: u64,
    /// Echo requests that no ICMP socket could carry (not root, and the host's
    /// `net.ipv4.ping_group_range` leaves tapnet's group out): the container was told
    /// "administratively prohibited".
    pub ping_refused: u64,
    /// Packets for the outside too short or malformed to carry ports, to or from port
    /// 0, with a TCP, UDP or ICMP checksum that does not verify (and was not left to
    /// offload), or UDP over IPv6 with no checksum: dropped.
    pub malformed: u64,
    /// IPv6 packets for the outside behind extension headers, or of an upper layer
    /// other than TCP, UDP and ICMPv6 (IPv4: other than TCP, UDP and ICMP): no host
    /// socket carries them as sent, so they are dropped.
    pub not_carried: u64,
    /// accept() failing on a forward's listener (out of descriptors, say).
    pub accept_errors: u64,
    /// Spliced connections cut because one side failed or reset (the other side was
    /// reset too).
    pub tcp_reset: u64,
    /// Containers' SYNs dropped because too many of their connections were already
    /// half open (the host connect, or the container's side of the handshake, not
    /// done), per container or in all.
    pub syn_limited: u64,
    /// Connections let go because their handshake did not finish in time: the host's
    /// connect (the container hears host unreachable), or the container's side (both
    /// ends reset).
    pub handshake_timeouts: u64,
    /// New flows refused (SYNs, datagrams, echo requests dropped) because their
    /// container already held its share of the host flows ([`HostProxy::max_per_container`]).
    pub container_limited: u64,
    /// ICMP errors the host's sockets received (TTL exceeded on the way, port or host
    /// unreachable, fragmentation needed) and passed on to the container.
    pub icmp_errors: u64,
}

/// One flow as `show nat` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFlow {
    /// 6 (TCP), 17 (UDP), 1 or 58 (ICMP or ICMPv6 echo: ports are the echo
    /// identifier, and 0).
    pub proto: u8,
    pub container: SocketAddr,
    pub remote: SocketAddr,
    /// Time since data last went either way.
    pub idle: Duration,
    /// Whether this is a forward's flow (else masquerade's).
    pub forward: bool,
}

enum Entry {
    TcpListener {
        socket: TcpListener,
        rule: usize,
    },
    UdpListener {
        socket: UdpSocket,
        rule: usize,
    },
    Tcp(TcpConn),
    Udp(UdpFlow),
    /// Boxed: it keeps the heads of its latest requests.
    Ping(Box<PingFlow>),
    /// The lab's raw ICMP socket (root, when ICMP sockets are refused).
    RawIcmp(socket2::Socket),
}

/// A flow's key: (protocol, container side, other end); for an echo flow, the
/// container's identifier stands in the container side's port.
type Key = (u8, SocketAddr, SocketAddr);

pub struct HostProxy {
    masquerade: bool,
    rules: Vec<ForwardRule>,
    forward_stats: Vec<ForwardStats>,
    timeouts: Timeouts,
    iface: Interface,
    queues: Queues,
    /// An empty socket set: a segment for no connection, handed to it, gets smoltcp's
    /// reset.
    no_socket: SocketSet<'static>,
    /// smoltcp's clock at the last poll.
    last_ts: smoltcp::time::Instant,
    /// TCP connections with something to do on the next poll.
    dirty: Vec<usize>,
    /// TCP connections' smoltcp wakeups: (when, entry, connection id), earliest first.
    timers: BinaryHeap<Reverse<(smoltcp::time::Instant, usize, u64)>>,
    next_conn: u64,
    /// Half-open masquerade connections, per container address, and in all.
    pending: HashMap<Mac, u32>,
    pending_total: usize,
    /// Masquerade flows (TCP, UDP, echo) per container address, and the most one
    /// container may hold.
    owned: HashMap<Mac, u32>,
    max_per_container: u32,
    /// Flows in order of last activity, to evict the least recently used in O(1).
    lru: Lru,
    /// Token number n is entries[n].
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
    flows: HashMap<Key, usize>,
    max_flows: usize,
    epoch: Instant,
    stats: ProxyStats,
    /// Entries (listeners, the raw ICMP socket) not yet registered with the poll loop.
    unregistered: Vec<usize>,
    /// Forwards removed at run time: their slot in `rules` waits for the next one.
    gone: Vec<bool>,
    gateways: Vec<(u32, u8, Ipv4Addr)>,
    /// The gateways of the routed subnet6s: (gateway6, prefix length).
    gateways6: Vec<(Ipv6Addr, u8)>,
    /// The sender (its MAC) of the packet [`HostProxy::from_container`] works on: new
    /// masquerade flows are its, and count against its share.
    from: Mac,
    /// The last port handed out on a gateway's address for forwarded connections.
    next_port: u16,
    ping: PingMode,
    /// The raw ICMP socket's entry, in [`PingMode::Raw`].
    raw: Option<usize>,
    /// In [`PingMode::Raw`]: (remote, identifier sent) -> echo flow.
    raw_idents: HashMap<(IpAddr, u16), usize>,
    next_ident: u16,
    /// Where host sockets' datagrams are read (64 KiB, allocated once).
    rx_buf: Vec<u8>,
}

/// The masquerade flows one container may hold by default: three quarters of the
/// table, and no more than 4096, so that no one container can take every host flow
/// (and every descriptor) from the others.
fn default_share(max_flows: usize) -> u32 {
    (max_flows.saturating_mul(3) / 4).clamp(1, 4096) as u32
}

/// The container a masquerade flow belongs to (forwards' flows belong to their
/// clients, and listeners to the lab).
fn owner(entry: &Entry) -> Option<Mac> {
    match entry {
        Entry::Tcp(c) if c.rule.is_none() => Some(c.owner),
        Entry::Udp(f) if f.rule.is_none() => Some(f.owner),
        Entry::Ping(f) => Some(f.owner),
        _ => None,
    }
}

/// Datagrams read from one host socket per readiness event at most, so one busy
/// flow cannot hold the poll loop (edge-triggered: the rest is read next turn).
const RX_BATCH: usize = 64;

/// A listener's peer as the proxy keys it: an IPv4-mapped IPv6 address (none come
/// with IPV6_V6ONLY, but a lab's own sockets may differ) as the IPv4 one.
fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, a.port())),
            None => addr,
        },
        v4 => v4,
    }
}

use vswitch::wire::ipv6::in_prefix as in_net6;

impl HostProxy {
    /// Binds every forward's listening socket now, so that a port taken on the host is
    /// found before anything else is built; with masquerade, finds out how echo
    /// requests can leave ([`HostProxy::ping_mode`]).
    pub fn new(
        masquerade: bool,
        rules: Vec<ForwardRule>,
        max_flows: usize,
        timeouts: Timeouts,
        now: Instant,
    ) -> io::Result<HostProxy> {
        let mut queues = Queues::default();
        let mut config = Config::new(HardwareAddress::Ip);
        // Initial sequence numbers differ from run to run (smoltcp's default seed is 0).
        config.random_seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()) << 32;
        let mut iface = Interface::new(config, &mut queues, smoltcp::time::Instant::ZERO);
        iface.set_any_ip(true);
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::v4(169, 254, 0, 1), 16));
            let _ = addrs.push(IpCidr::new(IpAddress::v6(0xfe80, 0, 0, 0, 0, 0, 0, 1), 64));
        });
        let routes = iface.routes_mut();
        let _ = routes.add_default_ipv4_route(Ipv4Addr::new(169, 254, 0, 2));
        let _ = routes.add_default_ipv6_route(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2));
        let mut proxy = HostProxy {
            masquerade,
            forward_stats: vec![ForwardStats::default(); rules.len()],
            gone: vec![false; rules.len()],
            rules,
            timeouts,
            iface,
            queues,
            no_socket: SocketSet::new(Vec::new()),
            last_ts: smoltcp::time::Instant::ZERO,
            dirty: Vec::new(),
            timers: BinaryHeap::new(),
            next_conn: 0,
            pending: HashMap::new(),
            pending_total: 0,
            owned: HashMap::new(),
            max_per_container: default_share(max_flows),
            lru: Lru::new(),
            entries: Vec::new(),
            free: Vec::new(),
            flows: HashMap::new(),
            max_flows,
            epoch: now,
            stats: ProxyStats::default(),
            unregistered: Vec::new(),
            gateways: Vec::new(),
            gateways6: Vec::new(),
            from: Mac::default(),
            next_port: 0,
            ping: PingMode::None,
            raw: None,
            raw_idents: HashMap::new(),
            next_ident: (std::process::id() as u16).wrapping_mul(40503),
            rx_buf: Vec::new(),
        };
        for (i, rule) in proxy.rules.clone().iter().enumerate() {
            let entry = listener(rule, i)?;
            proxy.entries.push(Some(entry));
            proxy.unregistered.push(i);
        }
        if masquerade {
            proxy.choose_ping_mode();
        }
        Ok(proxy)
    }

    /// Adds a forward at run time: its socket bound now (an error if the host refuses
    /// it), registered with the poll loop at the next [`HostProxy::register_listeners`].
    pub fn add_forward(&mut self, rule: ForwardRule) -> io::Result<()> {
        let i = self
            .gone
            .iter()
            .position(|g| *g)
            .unwrap_or(self.rules.len());
        let entry = listener(&rule, i)?;
        if i == self.rules.len() {
            self.rules.push(rule);
            self.forward_stats.push(ForwardStats::default());
            self.gone.push(false);
        } else {
            self.rules[i] = rule;
            self.forward_stats[i] = ForwardStats::default();
            self.gone[i] = false;
        }
        let n = self.add(entry);
        self.unregistered.push(n);
        Ok(())
    }

    /// Removes the forward listening on `listen` for `proto`: its socket closes (so it
    /// leaves the poll loop), and so do its connections, both ends reset. False if
    /// there is none.
    pub fn remove_forward(&mut self, proto: u8, listen: SocketAddr) -> bool {
        let Some(i) = (0..self.rules.len()).find(|&i| {
            !self.gone[i] && self.rules[i].proto == proto && self.rules[i].listen == listen
        }) else {
            return false;
        };
        let of: Vec<usize> = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(n, e)| {
                let rule = match e {
                    Some(Entry::TcpListener { rule, .. } | Entry::UdpListener { rule, .. }) => {
                        Some(*rule)
                    }
                    Some(Entry::Tcp(c)) => c.rule,
                    Some(Entry::Udp(f)) => f.rule,
                    _ => None,
                };
                (rule == Some(i)).then_some(n)
            })
            .collect();
        for n in of {
            if matches!(
                self.entries[n],
                Some(Entry::TcpListener { .. } | Entry::UdpListener { .. })
            ) {
                self.entries[n] = None;
                self.unregistered.retain(|&u| u != n);
                self.free.push(n);
            } else {
                self.remove(n);
            }
        }
        self.gone[i] = true;
        true
    }

    /// The forwards in place, with their counters.
    pub fn forwards(&self) -> impl Iterator<Item = (&ForwardRule, &ForwardStats)> + '_ {
        self.rules
            .iter()
            .zip(&self.forward_stats)
            .zip(&self.gone)
            .filter(|(_, gone)| !**gone)
            .map(|(pair, _)| pair)
    }

    pub fn rules(&self) -> &[ForwardRule] {
        &self.rules
    }

    pub fn forward_stats(&self) -> &[ForwardStats] {
        &self.forward_stats
    }

    pub fn stats(&self) -> ProxyStats {
        self.stats
    }

    pub fn masquerade(&self) -> bool {
        self.masquerade
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// How echo requests leave the host.
    pub fn ping_mode(&self) -> PingMode {
        self.ping
    }

    /// Live flows, with how long each has been idle.
    pub fn flows(&self, now: Instant) -> impl Iterator<Item = HostFlow> + '_ {
        self.flows
            .iter()
            .map(move |(&(proto, container, remote), &n)| {
                let (last, forward) = match &self.entries[n] {
                    Some(Entry::Tcp(c)) => (c.last_active, c.rule.is_some()),
                    Some(Entry::Udp(f)) => (f.last_active, f.rule.is_some()),
                    Some(Entry::Ping(f)) => (f.last_active, false),
                    _ => (now, false),
                };
                HostFlow {
                    proto,
                    container,
                    remote,
                    idle: now.saturating_duration_since(last),
                    forward,
                }
            })
    }

    fn smol_now(&self, now: Instant) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(
            now.saturating_duration_since(self.epoch).as_micros() as i64
        )
    }

    /// The most masquerade flows one container may hold.
    pub fn max_per_container(&self) -> u32 {
        self.max_per_container
    }

    /// Sets [`HostProxy::max_per_container`] (at least 1).
    pub fn set_max_per_container(&mut self, max: u32) {
        self.max_per_container = max.max(1);
    }

    /// Whether container `ip` may open another masquerade flow; counts a refusal.
    fn within_share(&mut self) -> bool {
        let ok = self.owned.get(&self.from).copied().unwrap_or(0) < self.max_per_container;
        if !ok {
            self.stats.container_limited += 1;
        }
        ok
    }

    fn add(&mut self, entry: Entry) -> usize {
        let flow = matches!(entry, Entry::Tcp(_) | Entry::Udp(_) | Entry::Ping(_));
        if let Some(ip) = owner(&entry) {
            *self.owned.entry(ip).or_insert(0) += 1;
        }
        let n = match self.free.pop() {
            Some(n) => {
                self.entries[n] = Some(entry);
                n
            }
            None => {
                self.entries.push(Some(entry));
                self.entries.len() - 1
            }
        };
        if flow {
            self.lru.touch(n);
        }
        n
    }

    /// Registers the listeners (and the raw ICMP socket) not registered yet with the
    /// poll loop.
    pub fn register_listeners(&mut self, reg: &Reg<'_>) {
        for n in std::mem::take(&mut self.unregistered) {
            let _ = match &mut self.entries[n] {
                Some(Entry::TcpListener { socket, .. }) => {
                    reg.registry
                        .register(socket, reg.token(n), Interest::READABLE)
                }
                Some(Entry::UdpListener { socket, .. }) => {
                    reg.registry
                        .register(socket, reg.token(n), Interest::READABLE)
                }
                Some(Entry::RawIcmp(socket)) => reg.registry.register(
                    &mut mio::unix::SourceFd(&socket.as_raw_fd()),
                    reg.token(n),
                    Interest::READABLE,
                ),
                _ => Ok(()),
            };
        }
    }

    /// An IP packet from a container for an address outside every subnet (or a
    /// gateway's, for the return half of a forward sourced from it).
    /// `packet` is IPv4 or IPv6 (an IPv6 packet's next header must be TCP, UDP or
    /// ICMPv6 itself: extension headers are not followed here).
    ///
    /// `sender` is the MAC the packet came from: a container's flows, half-open
    /// connections and share are counted by it, not by source address (a container may
    /// use many addresses of its /64, or forge another's). `partial`: the frame's
    /// TCP or UDP checksum was left to offload (NEEDS_CSUM); else it must verify, or
    /// the packet was damaged and is dropped (`malformed`) rather than carried on.
    pub fn from_container(
        &mut self,
        packet: &[u8],
        sender: Mac,
        partial: bool,
        reg: &Reg<'_>,
        now: Instant,
    ) {
        self.register_listeners(reg);
        self.from = sender;
        let Some(ip) = IpHead::parse(packet) else {
            self.stats.malformed += 1;
            return;
        };
        if !partial && classify(packet) == Checksums::Wrong {
            self.stats.malformed += 1;
            return;
        }
        // The router reassembles what comes here: a fragment left is one it could not.
        if ip.fragment {
            self.stats.malformed += 1;
            return;
        }
        // Without what pads the frame past the packet's own length.
        let packet = &packet[..ip.header_len(packet) + ip.payload.len()];
        match (ip.proto, ip.src) {
            (PROTO_TCP, _) => self.tcp_from_container(&ip, packet, reg, now),
            (PROTO_UDP, _) => self.udp_from_container(&ip, packet, reg, now),
            (PROTO_ICMP, IpAddr::V4(_)) => self.ping(packet, reg, now),
            (PROTO_ICMPV6, IpAddr::V6(_)) => self.ping6(&ip, packet, reg, now),
            _ => self.stats.not_carried += 1,
        }
    }

    /// Whether `ip` is one of the gateways: tapnet's own addresses.
    fn is_gateway(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => self.gateways.iter().any(|g| g.2 == ip),
            IpAddr::V6(ip) => self.gateways6.iter().any(|g| g.0 == ip),
        }
    }

    /// Whether `ip` is inside one of the lab's subnets (or subnet6s).
    fn in_lab(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => self
                .gateways
                .iter()
                .any(|(net, prefix, _)| u32::from(ip) & crate::route::mask(*prefix) == *net),
            IpAddr::V6(ip) => self.gateways6.iter().any(|&(gw, p)| in_net6(ip, gw, p)),
        }
    }

    /// The gateway of the subnet (or subnet6) `ip` is on.
    fn gateway_for(&self, ip: IpAddr) -> Option<IpAddr> {
        match ip {
            IpAddr::V4(ip) => self
                .gateways
                .iter()
                .find(|(net, prefix, _)| u32::from(ip) & crate::route::mask(*prefix) == *net)
                .map(|(_, _, gw)| IpAddr::V4(*gw)),
            IpAddr::V6(ip) => self
                .gateways6
                .iter()
                .find(|&&(gw, p)| in_net6(ip, gw, p))
                .map(|(gw, _)| IpAddr::V6(*gw)),
        }
    }

    /// Queues an ICMPv6 message from `from` to `to` for the containers.
    #[allow(clippy::too_many_arguments)]
    fn send_icmp6(
        &mut self,
        from: Ipv6Addr,
        to: Ipv6Addr,
        hops: u8,
        kind: u8,
        code: u8,
        rest: [u8; 4],
        data: &[u8],
    ) {
        self.queues.emit(icmpv6::MAX_QUOTE + 48, |buf| {
            icmpv6::emit_packet(from, to, hops, kind, code, rest, data, buf)
        });
    }

    /// Queues an ICMP message from `from` to `to` for the containers.
    fn send_icmp(&mut self, from: Ipv4Addr, to: Ipv4Addr, icmp: IcmpRepr<'_>) {
        self.send_icmp_ttl(from, to, 64, icmp);
    }

    /// [`HostProxy::send_icmp`] with the TTL given.
    fn send_icmp_ttl(&mut self, from: Ipv4Addr, to: Ipv4Addr, ttl: u8, icmp: IcmpRepr<'_>) {
        let room = icmp.packet_len();
        self.queues
            .emit(room, |buf| icmp.emit_ttl(from, to, ttl, buf));
    }

    /// An ICMP error the network sent about a container's packet (as a host socket
    /// learnt it), passed on to the container from the same sender, quoting the
    /// container's own packet.
    fn relay_error(&mut self, err: &IcmpError, quote: &Quote) {
        if let IpAddr::V6(from) = err.offender {
            // ICMPv6 (RFC 4443): the error's type and code as the network sent them,
            // packet too big with its MTU.
            let Some(to) =
                vswitch::wire::ipv6::Ipv6Packet::new_quoted(quote.bytes()).map(|q| q.src())
            else {
                return;
            };
            let rest = if err.kind == icmpv6::PACKET_TOO_BIG {
                err.info.to_be_bytes()
            } else {
                [0; 4]
            };
            self.stats.icmp_errors += 1;
            return self.send_icmp6(from, to, 64, err.kind, err.code, rest, quote.bytes());
        }
        let IpAddr::V4(offender) = err.offender else {
            return;
        };
        let Ok(to) = Ipv4Packet::new_quoted(quote.bytes()).map(|q| q.src()) else {
            return;
        };
        let mut rest = [0u8; 4];
        if err.kind == icmpv4::DEST_UNREACHABLE && err.code == icmpv4::UNREACH_FRAG_NEEDED {
            rest[2..4].copy_from_slice(&(err.info.min(0xffff) as u16).to_be_bytes());
        }
        self.stats.icmp_errors += 1;
        self.send_icmp(
            offender,
            to,
            IcmpRepr {
                kind: err.kind,
                code: err.code,
                rest,
                data: quote.bytes(),
            },
        );
    }

    /// An ICMP (or ICMPv6) destination unreachable about a container's `packet` from
    /// the gateway of its subnet, as the router would say it (no route on the host,
    /// say).
    fn error_from_gateway(&mut self, packet: &[u8], why: Unreachable) {
        if let Some(ip) = IpHead::parse(packet) {
            if let (IpAddr::V6(to), Some(IpAddr::V6(from))) = (ip.src, self.gateway_for(ip.src)) {
                let (kind, code) = (icmpv6::DST_UNREACHABLE, why.v6());
                let quote = icmpv6::quote(packet);
                return self.send_icmp6(from, to, 64, kind, code, [0; 4], quote);
            }
        }
        let (kind, code) = (icmpv4::DEST_UNREACHABLE, why.v4());
        let Ok(ip) = Ipv4Packet::new_checked(packet) else {
            return;
        };
        let to = ip.src();
        let Some(IpAddr::V4(from)) = self.gateway_for(to.into()) else {
            return;
        };
        self.send_icmp(
            from,
            to,
            IcmpRepr {
                kind,
                code,
                rest: [0; 4],
                data: icmpv4::quote(packet),
            },
        );
    }

    /// A container's DF `packet` is larger than the host's path MTU (`mtu`): the
    /// gateway says so, as a router on the path would (RFC 1191).
    fn fragmentation_needed(&mut self, packet: &[u8], mtu: u32) {
        if let Some(ip) = IpHead::parse(packet) {
            if let (IpAddr::V6(to), Some(IpAddr::V6(from))) = (ip.src, self.gateway_for(ip.src)) {
                // IPv6's packet too big (RFC 8201), never below the minimum MTU.
                let rest = mtu.max(1280).to_be_bytes();
                let quote = icmpv6::quote(packet);
                let kind = icmpv6::PACKET_TOO_BIG;
                return self.send_icmp6(from, to, 64, kind, 0, rest, quote);
            }
        }
        let Ok(ip) = Ipv4Packet::new_checked(packet) else {
            return;
        };
        let to = ip.src();
        let Some(IpAddr::V4(from)) = self.gateway_for(to.into()) else {
            return;
        };
        let mut rest = [0u8; 4];
        rest[2..].copy_from_slice(&(mtu.min(0xffff) as u16).to_be_bytes());
        self.send_icmp(
            from,
            to,
            IcmpRepr {
                kind: icmpv4::DEST_UNREACHABLE,
                code: icmpv4::UNREACH_FRAG_NEEDED,
                rest,
                data: icmpv4::quote(packet),
            },
        );
    }

    /// A host socket found no way to where `packet` goes: say so as a router would.
    fn unreachable_for(&mut self, packet: &[u8], e: &io::Error) {
        let why = match e.raw_os_error() {
            Some(libc::ENETUNREACH) => Unreachable::Net,
            Some(libc::EHOSTUNREACH) => Unreachable::Host,
            _ => return,
        };
        self.error_from_gateway(packet, why);
    }

    /// Keeps the flow count within its limit: the flow idle longest goes (counted).
    fn make_room(&mut self) {
        if self.flows.len() < self.max_flows {
            return;
        }
        if let Some(n) = self.lru.oldest() {
            self.remove(n);
            self.stats.flows_evicted += 1;
        }
    }

    /// Flow `n` moved data now.
    fn touch(&mut self, n: usize, now: Instant) {
        match self.entries.get_mut(n) {
            Some(Some(Entry::Tcp(c))) => c.last_active = now,
            Some(Some(Entry::Udp(f))) => f.last_active = now,
            Some(Some(Entry::Ping(f))) => f.last_active = now,
            _ => return,
        }
        self.lru.touch(n);
    }

    /// A number no other connection of this proxy had.
    fn next_id(&mut self) -> u64 {
        self.next_conn += 1;
        self.next_conn
    }

    /// The gateways of the routed subnets: (network, prefix, gateway address).
    pub fn set_gateways(&mut self, gateways: Vec<(u32, u8, Ipv4Addr)>) {
        self.gateways = gateways;
    }

    /// The gateways of the routed subnet6s: (gateway6, prefix length).
    pub fn set_gateways6(&mut self, gateways: Vec<(Ipv6Addr, u8)>) {
        self.gateways6 = gateways;
    }

    /// Host socket `n` is ready. True if it was not drained (a batch limit, or accept
    /// failing for want of descriptors): the caller asks again on its next turn.
    pub fn ready(&mut self, n: usize, reg: &Reg<'_>, now: Instant) -> bool {
        self.register_listeners(reg);
        match self.entries.get_mut(n) {
            Some(Some(Entry::TcpListener { .. })) => self.accept_tcp(n, reg, now),
            Some(Some(Entry::UdpListener { .. })) => self.receive_forward_udp(n, now),
            Some(Some(Entry::Udp(_))) => self.receive_masquerade_udp(n, now),
            Some(Some(Entry::Ping(_))) => self.receive_ping(n, now),
            Some(Some(Entry::RawIcmp(_))) => self.receive_raw(n, now),
            // A connection's host socket: served by the next `poll`.
            Some(Some(Entry::Tcp(_))) => {
                self.mark(n);
                false
            }
            _ => false,
        }
    }

    /// Forgets flow `n`. A TCP connection that either end still holds is reset on
    /// both sides, so that neither waits on a connection that goes nowhere.
    fn remove(&mut self, n: usize) {
        let Some(entry) = self.entries[n].take() else {
            return;
        };
        if let Some(ip) = owner(&entry) {
            if let Some(k) = self.owned.get_mut(&ip) {
                *k -= 1;
                if *k == 0 {
                    self.owned.remove(&ip);
                }
            }
        }
        self.lru.unlink(n);
        match entry {
            Entry::Tcp(c) => self.forget_tcp(c),
            Entry::Udp(f) => {
                self.flows.remove(&(PROTO_UDP, f.container, f.remote));
            }
            Entry::Ping(f) => {
                self.flows.remove(&f.key());
                // A raw IPv4 flow's identifier, or any IPv6 flow's.
                if self.raw_idents.get(&(f.remote, f.wire_ident)) == Some(&n) {
                    self.raw_idents.remove(&(f.remote, f.wire_ident));
                }
            }
            other => {
                // Listeners stay for the lab's life.
                self.entries[n] = Some(other);
                return;
            }
        }
        self.free.push(n);
    }

    /// Packets for the containers, for the router to send on; runs of TCP segments of
    /// one connection merged into super-frames (with `Some(segment size)`).
    /// `f` returns false when it has no room: the rest waits for the next call (the
    /// proxy asks for one at once: [`HostProxy::next_timeout`]).
    pub fn drain_output(&mut self, f: impl FnMut(&[u8], Option<u16>) -> bool) {
        let (flows, entries) = (&self.flows, &self.entries);
        // A connection's segments longer than its container asked for (see
        // `tcp::PROXY_MSS`): how much data a segment the container takes.
        let segment = |p: &[u8]| -> Option<usize> {
            let ip = IpHead::parse(p)?;
            let tcp = vswitch::wire::tcp::TcpPacket::new_checked(ip.payload)?;
            // The smallest MSS IPv4 promises (RFC 9293): no lookup for what fits it.
            if ip.proto != PROTO_TCP || tcp.payload().len() <= 536 {
                return None;
            }
            let key = (
                PROTO_TCP,
                SocketAddr::new(ip.dst, tcp.dst_port()),
                SocketAddr::new(ip.src, tcp.src_port()),
            );
            let Some(Entry::Tcp(c)) = entries.get(*flows.get(&key)?)?.as_ref() else {
                return None;
            };
            // The container's MSS counts data without options; smoltcp's segments
            // carry some (timestamps).
            let options = tcp.header_len() - vswitch::wire::tcp::HEADER_LEN;
            (c.segment > 0).then(|| (c.segment as usize).saturating_sub(options))
        };
        self.queues.drain(segment, f);
    }

    /// When a connection next needs serving (smoltcp's retransmissions, delayed ACKs,
    /// keep-alives), or now if some wait to be.
    pub fn next_timeout(&mut self, now: Instant) -> Option<Instant> {
        if !self.dirty.is_empty() || self.queues.has_output() {
            return Some(now);
        }
        let Reverse((at, _, _)) = self.timers.peek()?;
        let us = at.total_micros().max(0) as u64;
        Some((self.epoch + Duration::from_micros(us)).max(now))
    }

    /// Lets go of flows idle past their timeout (closing TCP sooner), and of sockets
    /// smoltcp has finished with.
    /// Closes every flow of the container at `ip` (it was detached): masquerade's and
    /// forwards' alike, their host sockets closed. How many.
    pub fn forget_container(&mut self, ip: IpAddr) -> usize {
        let of: Vec<usize> = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(n, e)| {
                let container = match e {
                    Some(Entry::Tcp(c)) => c.container.ip(),
                    Some(Entry::Udp(f)) => f.container.ip(),
                    Some(Entry::Ping(f)) => f.container,
                    _ => return None,
                };
                (container == ip).then_some(n)
            })
            .collect();
        for &n in &of {
            self.remove(n);
        }
        of.len()
    }

    pub fn tick(&mut self, now: Instant) {
        let t = self.timeouts;
        let idle: Vec<usize> = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(n, e)| {
                let (last, timeout) = match e {
                    Some(Entry::Udp(f)) => (f.last_active, t.udp),
                    Some(Entry::Ping(f)) => (f.last_active, t.icmp),
                    // Not yet established: the handshake's own limits apply (a
                    // masquerade's pending timeout; smoltcp's connect timeout for a
                    // forward, with this as the net under it).
                    Some(Entry::Tcp(c)) if !c.established => {
                        (c.last_active, tcp::HANDSHAKE_TIMEOUT)
                    }
                    Some(Entry::Tcp(c)) if c.host_eof || c.container_eof => {
                        (c.last_active, t.tcp_closing)
                    }
                    Some(Entry::Tcp(c)) => (c.last_active, t.tcp),
                    _ => return None,
                };
                (now.saturating_duration_since(last) >= timeout).then_some(n)
            })
            .collect();
        for n in idle {
            self.remove(n);
            self.stats.flows_expired += 1;
        }
        self.expire_pending(now);
    }
}

/// Connections a forward's listener queues before tapnet accepts them: the kernel's
/// own ceiling (`net.core.somaxconn` defaults to 4096), so a burst of clients is not
/// dropped at the door to retry a second later.
const LISTEN_BACKLOG: i32 = 4096;

/// Whether forward `rule`'s socket can be bound on this host now (bound as the proxy
/// binds it, then closed): the error the host gives if not.
pub fn can_listen(rule: &ForwardRule) -> io::Result<()> {
    listener(rule, 0).map(drop)
}

/// The listening socket of forward `rule` (index `i`).
fn listener(rule: &ForwardRule, i: usize) -> io::Result<Entry> {
    Ok(match rule.proto {
        PROTO_TCP => Entry::TcpListener {
            socket: listen_tcp(rule.listen)?,
            rule: i,
        },
        _ => Entry::UdpListener {
            socket: listen_udp(rule.listen)?,
            rule: i,
        },
    })
}

/// A socket of `kind` for `addr`'s family; an IPv6 one takes IPv6 only (IPV6_V6ONLY),
/// so that `[::]:P` and `0.0.0.0:P` are two forwards, as the lab file writes them.
fn host_socket(addr: SocketAddr, kind: socket2::Type) -> io::Result<socket2::Socket> {
    let proto = if kind == socket2::Type::STREAM {
        socket2::Protocol::TCP
    } else {
        socket2::Protocol::UDP
    };
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), kind, Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// A forward's TCP listener on `addr`.
fn listen_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = host_socket(addr, socket2::Type::STREAM)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(s.into()))
}

/// A forward's UDP socket on `addr`.
fn listen_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = host_socket(addr, socket2::Type::DGRAM)?;
    s.bind(&addr.into())?;
    Ok(UdpSocket::from_std(s.into()))
}

/// Why a container's packet could not go, as its gateway says it: ICMP destination
/// unreachable's codes (RFC 792), or ICMPv6's (RFC 4443 section 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unreachable {
    Net,
    Host,
    Port,
    AdminProhibited,
}

impl Unreachable {
    fn v4(self) -> u8 {
        match self {
            Unreachable::Net => icmpv4::UNREACH_NET,
            Unreachable::Host => icmpv4::UNREACH_HOST,
            Unreachable::Port => icmpv4::UNREACH_PORT,
            Unreachable::AdminProhibited => icmpv4::UNREACH_ADMIN_PROHIBITED,
        }
    }

    fn v6(self) -> u8 {
        match self {
            Unreachable::Net => icmpv6::UNREACH_NO_ROUTE,
            Unreachable::Host => icmpv6::UNREACH_ADDRESS,
            Unreachable::Port => icmpv6::UNREACH_PORT,
            Unreachable::AdminProhibited => icmpv6::UNREACH_ADMIN_PROHIBITED,
        }
    }
}

/// Sends with `send`, once more if the first attempt only returned an error the
/// socket held from an earlier ICMP error (IP_RECVERR sets it, and the next call
/// returns it in place of sending): that error is read from the error queue and
/// passed on separately, and this datagram must still go.
fn send_past_pending_error(mut send: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    match send() {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(
                    libc::ECONNREFUSED
                        | libc::EHOSTUNREACH
                        | libc::ENETUNREACH
                        | libc::EMSGSIZE
                        | libc::EPROTO
                        | libc::EACCES
                )
            ) =>
        {
            send()
        }
        other => other,
    }
}

/// Errors after which a socket is still fine: try again later.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch::checksum;

    /// A TCP data segment from smoltcp's point of view (checksum irrelevant here).
    fn segment(seq: u32, payload: &[u8], flags: u8) -> Vec<u8> {
        let total = 20 + 20 + payload.len();
        let mut p = vec![0u8; total];
        vswitch::wire::ipv4::Ipv4Repr {
            src: Ipv4Addr::new(10, 250, 0, 2),
            dst: Ipv4Addr::new(10, 251, 1, 2),
            protocol: PROTO_TCP,
            ttl: 64,
            ident: 0,
            dont_frag: true,
            payload_len: 20 + payload.len(),
        }
        .emit(&mut p);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[28..32].copy_from_slice(&7u32.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = flags;
        p[34..36].copy_from_slice(&1024u16.to_be_bytes());
        p[40..].copy_from_slice(payload);
        p
    }

    fn proxy(masquerade: bool, max_flows: usize) -> HostProxy {
        HostProxy::new(
            masquerade,
            vec![],
            max_flows,
            Timeouts::default(),
            Instant::now(),
        )
        .unwrap()
    }

    #[test]
    fn segments_longer_than_their_container_asked_for_leave_as_super_frames() {
        let mut proxy = proxy(false, 16);
        // smoltcp, told a 65000-byte MSS, sends 5000 bytes at once to a container that
        // asked for 1448.
        let big = segment(1000, &[1; 5000], 0x18);
        let small = segment(6000, &[2; 800], 0x10);
        proxy.queues.tx.extend([big.clone(), small.clone()]);
        let mut out = Vec::new();
        proxy.queues.drain(
            |p| (p.len() > 1500).then_some(1448),
            |p, gso| {
                out.push((p.to_vec(), gso));
                true
            },
        );
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].1, Some(1448));
        assert_eq!(out[0].0[..36], big[..36]);
        assert_eq!(out[0].0[40..], big[40..], "the data as it was");
        assert_eq!(out[1], (small, None));
    }

    fn run_of(packets: &[Vec<u8>]) -> Vec<(Vec<u8>, Option<u16>)> {
        let mut proxy = proxy(false, 16);
        proxy.queues.tx.extend(packets.iter().cloned());
        let mut out = Vec::new();
        proxy.drain_output(|p, gso| {
            out.push((p.to_vec(), gso));
            true
        });
        out
    }

    fn udp(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 28 + payload.len()];
        let n = vswitch::wire::udp::emit_packet(
            src.parse().unwrap(),
            dst.parse().unwrap(),
            64,
            payload,
            &mut buf,
        )
        .unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn contiguous_segments_become_one_super_packet() {
        let a = segment(1000, &[1; 100], 0x10);
        let b = segment(1100, &[2; 100], 0x10);
        let c = segment(1200, &[3; 40], 0x18);
        let out = run_of(&[a, b, c]);
        assert_eq!(out.len(), 1);
        let (p, gso) = &out[0];
        assert_eq!(*gso, Some(100));
        assert_eq!(p.len(), 40 + 240);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]) as usize, p.len());
        assert_eq!(checksum::sum(&p[..20]), 0xffff, "IP checksum");
        assert_eq!(p[33], 0x18, "PSH from the last part");
        assert_eq!(&p[40..140], &[1; 100]);
        assert_eq!(&p[240..280], &[3; 40]);
        // The TCP field holds the pseudo-header sum over the whole segment.
        let ps = vswitch::wire::pseudo_sum(
            Ipv4Addr::new(10, 250, 0, 2),
            Ipv4Addr::new(10, 251, 1, 2),
            6,
            p.len() - 20,
        );
        assert_eq!(u16::from_be_bytes([p[36], p[37]]), ps);
    }

    #[test]
    fn gaps_short_segments_and_control_flags_break_a_run() {
        let out = run_of(&[
            segment(1000, &[1; 100], 0x10),
            segment(1200, &[2; 100], 0x10), // gap
            segment(1300, &[3; 50], 0x10),  // short, then
            segment(1350, &[4; 50], 0x10),  // one after a short one
            segment(1400, &[5; 10], 0x11),  // FIN
        ]);
        assert_eq!(out.len(), 4);
        assert_eq!(out[0].1, None);
        assert_eq!(out[1].1, Some(100), "1200 and the short 1300 merge");
        assert_eq!(out[2].1, None);
        assert_eq!(out[3].1, None);
    }

    #[test]
    fn a_flood_of_flows_stays_within_the_limit() {
        // Loopback only: the discard port on 127.0.0.1.
        let now = Instant::now();
        let mut proxy = proxy(true, 16);
        let poll = mio::Poll::new().unwrap();
        let reg = Reg {
            registry: poll.registry(),
            base: 0,
        };
        // Four containers, taking turns.
        for port in 0..100u16 {
            let from = format!("10.0.0.{}:{}", 2 + port % 4, 20000 + port);
            let p = udp(&from, "127.0.0.1:9", b"x");
            let mac = Mac([2, 0, 0, 0, 0, 2 + (port % 4) as u8]);
            proxy.from_container(
                &p,
                mac,
                false,
                &reg,
                now + Duration::from_millis(port as u64),
            );
        }
        assert_eq!(proxy.flows(now).count(), 16);
        assert_eq!(proxy.stats().flows_evicted, 84);
        assert_eq!(proxy.stats().udp_flows, 100);
        // The survivors are the newest.
        assert!(proxy.flows(now).all(|f| f.container.port() >= 20084));
    }

    #[test]
    fn one_container_holds_its_share_of_the_flows_and_no_more() {
        let now = Instant::now();
        let mut proxy = proxy(true, 16);
        assert_eq!(proxy.max_per_container(), 12);
        let poll = mio::Poll::new().unwrap();
        let reg = Reg {
            registry: poll.registry(),
            base: 0,
        };
        // One container (one MAC), sending from many addresses: its share is one.
        let (one, other) = (Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]));
        for port in 0..100u16 {
            let from = format!("10.0.0.{}:{}", 2 + port % 7 * 10, 20000 + port);
            let p = udp(&from, "127.0.0.1:9", b"x");
            proxy.from_container(&p, one, false, &reg, now);
        }
        assert_eq!(proxy.flows(now).count(), 12);
        assert_eq!(proxy.stats().container_limited, 88);
        assert_eq!(proxy.stats().flows_evicted, 0);
        // Another container still gets its flows, and the first one's known flows go on.
        let p = udp("10.0.0.3:20000", "127.0.0.1:9", b"x");
        proxy.from_container(&p, other, false, &reg, now);
        assert_eq!(proxy.flows(now).count(), 13);
        let p = udp("10.0.0.2:20000", "127.0.0.1:9", b"x");
        proxy.from_container(&p, one, false, &reg, now);
        assert_eq!(proxy.stats().container_limited, 88);
    }

    #[test]
    fn idle_flows_expire_by_their_timeout() {
        let now = Instant::now();
        let mut proxy = HostProxy::new(
            true,
            vec![],
            16,
            Timeouts {
                udp: Duration::from_secs(5),
                ..Timeouts::default()
            },
            now,
        )
        .unwrap();
        let poll = mio::Poll::new().unwrap();
        let reg = Reg {
            registry: poll.registry(),
            base: 0,
        };
        proxy.from_container(
            &udp("10.0.0.2:1000", "127.0.0.1:9", b"x"),
            Mac([2, 0, 0, 0, 0, 1]),
            false,
            &reg,
            now,
        );
        proxy.tick(now + Duration::from_secs(4));
        let flows: Vec<_> = proxy.flows(now + Duration::from_secs(4)).collect();
        assert_eq!(flows.len(), 1);
        assert_eq!(flows[0].idle, Duration::from_secs(4));
        proxy.tick(now + Duration::from_secs(6));
        assert_eq!(proxy.flows(now).count(), 0);
        assert_eq!(proxy.stats().flows_expired, 1);
    }

    #[test]
    fn damaged_checksums_are_dropped_unless_left_to_offload() {
        let mut proxy = proxy(true, 16);
        let poll = mio::Poll::new().unwrap();
        let reg = Reg {
            registry: poll.registry(),
            base: 0,
        };
        let mac = Mac([2, 0, 0, 0, 0, 1]);
        let mut p = udp("10.0.0.2:1000", "127.0.0.1:9", b"xy");
        p[27] ^= 0xff; // a payload byte: the UDP checksum no longer verifies
        proxy.from_container(&p, mac, false, &reg, Instant::now());
        assert_eq!(proxy.stats().malformed, 1);
        assert_eq!(proxy.flows(Instant::now()).count(), 0);
        // The same bytes with the checksum left to offload: not checked here.
        proxy.from_container(&p, mac, true, &reg, Instant::now());
        assert_eq!(proxy.flows(Instant::now()).count(), 1);
    }

    #[test]
    fn truncated_packets_are_counted_not_followed() {
        let mut proxy = proxy(true, 16);
        let poll = mio::Poll::new().unwrap();
        let full = udp("10.0.0.2:1", "127.0.0.1:9", b"x");
        for cut in 0..28 {
            let reg = Reg {
                registry: poll.registry(),
                base: 0,
            };
            proxy.from_container(
                &full[..cut],
                Mac([2, 0, 0, 0, 0, 1]),
                false,
                &reg,
                Instant::now(),
            );
        }
        assert_eq!(proxy.stats().malformed, 28);
        assert_eq!(proxy.flows(Instant::now()).count(), 0);
    }

    #[test]
    fn odd_packets_pass_through_untouched() {
        let udp = udp("10.0.0.1:1", "10.0.0.2:2", b"x");
        let out = run_of(&[udp.clone(), vec![0x45, 0, 0], udp.clone()]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], (udp.clone(), None));
        assert_eq!(out[1], (vec![0x45, 0, 0], None));
    }
}
