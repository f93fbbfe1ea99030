//! The host proxy: how containers reach the outside (masquerade) and how the outside
//! reaches containers (port forwards), through the host's own sockets, with no
//! iptables rule and no kernel forwarding.
//!
//! - TCP is terminated in tapnet by smoltcp with any-IP on (it accepts a connection to
//!   any address), and spliced to a host TCP socket: for masquerade, one connected to
//!   the real destination; for a forward, the connection the host listener accepted.
//!   The smoltcp side of a forward connects *from the real client's address*, so the
//!   container sees who is calling.
//! - UDP maps each flow to a host UDP socket (masquerade), or to the forward's listening
//!   socket and the client's address (forward).
//!
//! The proxy deals in IP packets: the router hands it what is for outside addresses and
//! routes what it makes ([`HostProxy::drain_output`]) to the containers.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint};

use crate::checksum;
use crate::nat::{PROTO_TCP, PROTO_UDP};
use vswitch::gro::TcpRun;

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
#[derive(Debug, Clone, Copy)]
pub struct ForwardRule {
    pub proto: u8,
    pub listen: SocketAddrV4,
    pub to: SocketAddrV4,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardStats {
    pub connections: u64,
    pub active: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub tcp_opened: u64,
    pub tcp_refused: u64,
    pub tcp_unreachable: u64,
    pub udp_flows: u64,
    pub flows_evicted: u64,
    /// Packets for outside addresses that masquerade is off for and no forward owns.
    pub no_flow: u64,
    /// ICMP sockets refused (net.ipv4.ping_group_range leaves our group out).
    pub ping_refused: u64,
    /// Packets for the outside too short or malformed to carry ports, or fragments:
    /// dropped.
    pub malformed: u64,
    /// accept() failing on a forward's listener (out of descriptors, say).
    pub accept_errors: u64,
    /// Spliced connections cut because one side failed or reset.
    pub tcp_reset: u64,
}

const TCP_BUFFER: usize = 256 * 1024;
const UDP_IDLE: Duration = Duration::from_secs(60);
/// A spliced TCP connection with no traffic either way for this long is let go.
const TCP_IDLE: Duration = Duration::from_secs(2 * 3600);

/// The smoltcp device: IP packets in from the router, out to the router.
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
    /// Buffers that carried packets before, reused so the proxy path does not allocate
    /// one per packet: rx ones come back from smoltcp, tx ones from `drain_output`.
    spare_rx: Vec<Vec<u8>>,
    spare_tx: Vec<Vec<u8>>,
}

/// Spare buffers kept at most, each way.
const SPARES: usize = 256;

impl Queues {
    /// Queues a packet for smoltcp, in a reused buffer when there is one.
    fn push_rx(&mut self, packet: &[u8]) {
        let mut buf = self.spare_rx.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(packet);
        self.rx.push_back(buf);
    }

    /// Gives a buffer that went out back for reuse.
    fn recycle_tx(&mut self, buf: Vec<u8>) {
        if self.spare_tx.len() < SPARES {
            self.spare_tx.push(buf);
        }
    }
}

struct Rx<'a>(Vec<u8>, &'a mut Vec<Vec<u8>>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>, &'a mut Vec<Vec<u8>>);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.0);
        if self.1.len() < SPARES {
            self.1.push(self.0);
        }
        r
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self.1.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len, 0);
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl phy::Device for Queues {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((
            Rx(packet, &mut self.spare_rx),
            Tx(&mut self.tx, &mut self.spare_tx),
        ))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx, &mut self.spare_tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        // Containers hand over 64 KiB TCP super-frames: take them whole.
        caps.max_transmission_unit = 65535;
        let mut sums = ChecksumCapabilities::default();
        // Their TCP checksums are often left to offload (partial): do not check them.
        sums.tcp = Checksum::Tx;
        caps.checksum = sums;
        caps
    }
}

enum Entry {
    TcpListener { socket: TcpListener, rule: usize },
    UdpListener { socket: UdpSocket, rule: usize },
    Tcp(TcpConn),
    Udp(UdpFlow),
    Ping(PingFlow),
}

/// A container's pings to one address, through an unprivileged ICMP socket
/// (SOCK_DGRAM/IPPROTO_ICMP): the kernel picks the echo identifier, so the
/// container's own is kept here and put back into the replies.
struct PingFlow {
    socket: socket2::Socket,
    container: Ipv4Addr,
    remote: Ipv4Addr,
    ident: u16,
    last_active: Instant,
}

const PROTO_ICMP: u8 = 1;

struct TcpConn {
    /// `None` while a masquerade connection waits for its host connect: the
    /// container's SYN is held (`pending_syn`) so that the container learns the
    /// outcome as a real peer would tell it (SYN-ACK, reset, or ICMP unreachable).
    smol: Option<SocketHandle>,
    pending_syn: Option<Vec<u8>>,
    host: TcpStream,
    last_active: Instant,
    /// The container side's view: (container address, the other end's address).
    container: SocketAddrV4,
    remote: SocketAddrV4,
    rule: Option<usize>,
    connected: bool,
    host_eof: bool,
    container_eof: bool,
}

struct UdpFlow {
    /// Masquerade: its own host socket; forward: the listener's entry.
    socket: Option<UdpSocket>,
    listener: Option<usize>,
    container: SocketAddrV4,
    /// The other end as the container sees it (the flow's key).
    remote: SocketAddrV4,
    /// The other end on the host side, where its datagrams go.
    peer: SocketAddrV4,
    rule: Option<usize>,
    last_active: Instant,
}

pub struct HostProxy {
    masquerade: bool,
    rules: Vec<ForwardRule>,
    forward_stats: Vec<ForwardStats>,
    iface: Interface,
    queues: Queues,
    sockets: SocketSet<'static>,
    /// Token number n is entries[n].
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
    /// (container side, other end) -> entry, for TCP and UDP flows.
    flows: HashMap<(u8, SocketAddrV4, SocketAddrV4), usize>,
    max_flows: usize,
    epoch: Instant,
    stats: ProxyStats,
    registered: bool,
    gateways: Vec<(u32, u8, Ipv4Addr)>,
    /// The last port handed out on a gateway's address for forwarded connections.
    next_port: u16,
}

fn v4(addr: SocketAddr) -> Option<SocketAddrV4> {
    match addr {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

impl HostProxy {
    /// Binds every forward's listening socket now, so that a port taken on the host is
    /// found before anything else is built.
    pub fn new(
        masquerade: bool,
        rules: Vec<ForwardRule>,
        max_flows: usize,
        now: Instant,
    ) -> io::Result<HostProxy> {
        let mut queues = Queues {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            spare_rx: Vec::new(),
            spare_tx: Vec::new(),
        };
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ip),
            &mut queues,
            smoltcp::time::Instant::ZERO,
        );
        iface.set_any_ip(true);
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::v4(169, 254, 0, 1), 16));
        });
        let _ = iface
            .routes_mut()
            .add_default_ipv4_route(Ipv4Addr::new(169, 254, 0, 2));
        let mut proxy = HostProxy {
            masquerade,
            forward_stats: vec![ForwardStats::default(); rules.len()],
            rules,
            iface,
            queues,
            sockets: SocketSet::new(Vec::new()),
            entries: Vec::new(),
            free: Vec::new(),
            flows: HashMap::new(),
            max_flows,
            epoch: now,
            stats: ProxyStats::default(),
            registered: false,
            gateways: Vec::new(),
            next_port: 0,
        };
        for (i, rule) in proxy.rules.clone().iter().enumerate() {
            let entry = match rule.proto {
                PROTO_TCP => Entry::TcpListener {
                    socket: TcpListener::bind(SocketAddr::V4(rule.listen))?,
                    rule: i,
                },
                _ => Entry::UdpListener {
                    socket: UdpSocket::bind(SocketAddr::V4(rule.listen))?,
                    rule: i,
                },
            };
            proxy.entries.push(Some(entry));
        }
        Ok(proxy)
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

    /// Live flows: (protocol, container side, other end).
    pub fn flows(&self) -> impl Iterator<Item = (u8, SocketAddrV4, SocketAddrV4)> + '_ {
        self.flows.keys().copied()
    }

    fn smol_now(&self, now: Instant) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(
            now.saturating_duration_since(self.epoch).as_micros() as i64
        )
    }

    fn add(&mut self, entry: Entry) -> usize {
        match self.free.pop() {
            Some(n) => {
                self.entries[n] = Some(entry);
                n
            }
            None => {
                self.entries.push(Some(entry));
                self.entries.len() - 1
            }
        }
    }

    /// Registers the listeners with the poll loop (once).
    pub fn register_listeners(&mut self, reg: &Reg<'_>) {
        if self.registered {
            return;
        }
        self.registered = true;
        for (n, e) in self.entries.iter_mut().enumerate() {
            let _ = match e {
                Some(Entry::TcpListener { socket, .. }) => {
                    reg.registry
                        .register(socket, reg.token(n), Interest::READABLE)
                }
                Some(Entry::UdpListener { socket, .. }) => {
                    reg.registry
                        .register(socket, reg.token(n), Interest::READABLE)
                }
                _ => Ok(()),
            };
        }
    }

    /// An IP packet from a container for an address outside every subnet.
    pub fn from_container(&mut self, packet: &[u8], reg: &Reg<'_>, now: Instant) {
        self.register_listeners(reg);
        let Some((proto, src, dst, l4)) = parse(packet) else {
            self.stats.malformed += 1;
            return;
        };
        let key = (proto, src, dst);
        // Gateways are tapnet's own addresses: only flows it made itself go there,
        // never a new connection out through the host.
        let to_gateway = self.gateways.iter().any(|g| g.2 == *dst.ip());
        match proto {
            PROTO_TCP => {
                let syn_only = packet.get(l4 + 13).is_some_and(|f| f & 0x12 == 0x02);
                match self.flows.get(&key).copied() {
                    Some(n) => {
                        if let Some(Some(Entry::Tcp(c))) = self.entries.get_mut(n) {
                            c.last_active = now;
                            if c.pending_syn.is_some() {
                                // Still connecting: keep the latest SYN (a retry).
                                if syn_only {
                                    c.pending_syn = Some(packet.to_vec());
                                }
                                return;
                            }
                        }
                    }
                    None if syn_only => {
                        if to_gateway {
                            // Nothing listens on a gateway: smoltcp answers with a reset.
                            self.queues.push_rx(packet);
                            return;
                        }
                        if !self.masquerade {
                            self.stats.no_flow += 1;
                            return;
                        }
                        return self.open_masquerade_tcp(src, dst, packet, reg, now);
                    }
                    None => {}
                }
                self.queues.push_rx(packet);
            }
            PROTO_UDP => {
                // The UDP length, not the frame's: Ethernet may have padded it.
                let udp_len = packet
                    .get(l4 + 4..l4 + 6)
                    .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]) as usize);
                let Some(payload) = packet.get(l4 + 8..l4 + udp_len.max(8)) else {
                    self.stats.malformed += 1;
                    return;
                };
                if let Some(&n) = self.flows.get(&key) {
                    let Some(Entry::Udp(flow)) = self.entries[n].as_mut() else {
                        return;
                    };
                    flow.last_active = now;
                    let (remote, rule, listener) = (flow.peer, flow.rule, flow.listener);
                    let sent = match (&flow.socket, listener) {
                        (Some(socket), _) => socket.send(payload),
                        (None, Some(l)) => match &self.entries[l] {
                            Some(Entry::UdpListener { socket, .. }) => {
                                socket.send_to(payload, SocketAddr::V4(remote))
                            }
                            _ => Ok(0),
                        },
                        _ => Ok(0),
                    };
                    if let (Ok(k), Some(r)) = (sent, rule) {
                        self.forward_stats[r].bytes_out += k as u64;
                    }
                    return;
                }
                if !self.masquerade || to_gateway {
                    self.stats.no_flow += 1;
                    return;
                }
                let Ok(socket) = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))) else {
                    return;
                };
                if let Err(e) = socket
                    .connect(SocketAddr::V4(dst))
                    .and_then(|()| socket.send(payload))
                {
                    return self.unreachable_for(packet, &e);
                }
                self.make_room();
                let n = self.add(Entry::Udp(UdpFlow {
                    socket: Some(socket),
                    listener: None,
                    container: src,
                    remote: dst,
                    peer: dst,
                    rule: None,
                    last_active: now,
                }));
                if let Some(Entry::Udp(UdpFlow {
                    socket: Some(s), ..
                })) = self.entries[n].as_mut()
                {
                    let _ = reg.registry.register(s, reg.token(n), Interest::READABLE);
                }
                self.flows.insert(key, n);
                self.stats.udp_flows += 1;
            }
            PROTO_ICMP => self.ping(packet, l4, reg, now),
            _ => self.stats.no_flow += 1,
        }
    }

    /// An ICMP echo request from a container to the outside.
    fn ping(&mut self, packet: &[u8], l4: usize, reg: &Reg<'_>, now: Instant) {
        let icmp = &packet[l4..];
        if !self.masquerade || icmp.len() < 8 || icmp[0] != 8 {
            self.stats.no_flow += 1;
            return;
        }
        let ip = |o: usize| Ipv4Addr::new(packet[o], packet[o + 1], packet[o + 2], packet[o + 3]);
        let (container, remote) = (ip(12), ip(16));
        let ident = u16::from_be_bytes([icmp[4], icmp[5]]);
        // Echo flows are keyed by (container, identifier) -> remote, ports unused.
        let key = (
            PROTO_ICMP,
            SocketAddrV4::new(container, ident),
            SocketAddrV4::new(remote, 0),
        );
        let n = match self.flows.get(&key) {
            Some(&n) => n,
            None => {
                let socket = match socket2::Socket::new(
                    socket2::Domain::IPV4,
                    socket2::Type::DGRAM,
                    Some(socket2::Protocol::ICMPV4),
                ) {
                    Ok(s) => s,
                    Err(_) => {
                        // net.ipv4.ping_group_range does not include our group.
                        self.stats.ping_refused += 1;
                        return;
                    }
                };
                let _ = socket.set_nonblocking(true);
                if let Err(e) = socket.connect(&SocketAddr::from((remote, 0)).into()) {
                    return self.unreachable_for(packet, &e);
                }
                self.make_room();
                let n = self.add(Entry::Ping(PingFlow {
                    socket,
                    container,
                    remote,
                    ident,
                    last_active: now,
                }));
                if let Some(Entry::Ping(f)) = &self.entries[n] {
                    use std::os::fd::AsRawFd;
                    let fd = f.socket.as_raw_fd();
                    let _ = reg.registry.register(
                        &mut mio::unix::SourceFd(&fd),
                        reg.token(n),
                        Interest::READABLE,
                    );
                }
                self.flows.insert(key, n);
                n
            }
        };
        let sent = match self.entries.get_mut(n) {
            Some(Some(Entry::Ping(f))) => {
                f.last_active = now;
                f.socket.send(icmp)
            }
            _ => return,
        };
        if let Err(e) = sent {
            self.unreachable_for(packet, &e);
        }
    }

    /// A host socket found no way to where `packet` goes: say so as a router would.
    fn unreachable_for(&mut self, packet: &[u8], e: &io::Error) {
        let code = match e.raw_os_error() {
            Some(libc::ENETUNREACH) => 0,
            Some(libc::EHOSTUNREACH) => 1,
            _ => return,
        };
        if let Some(p) = self.icmp_unreachable(packet, code) {
            self.queues.tx.push_back(p);
        }
    }

    fn receive_ping(&mut self, n: usize, now: Instant) {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 65536];
        loop {
            let Some(Some(Entry::Ping(flow))) = self.entries.get_mut(n) else {
                return;
            };
            let Ok(len) = flow.socket.recv(&mut buf) else {
                return;
            };
            flow.last_active = now;
            // SAFETY: recv initialised the first `len` bytes.
            let reply: Vec<u8> = buf[..len]
                .iter()
                .map(|b| unsafe { b.assume_init() })
                .collect();
            if reply.len() < 8 || reply[0] != 0 {
                continue;
            }
            let packet = icmp_echo_reply(flow.remote, flow.container, flow.ident, &reply);
            self.queues.tx.push_back(packet);
        }
    }

    /// Keeps the flow count within its limit: the flow idle longest goes (counted).
    fn make_room(&mut self) {
        if self.flows.len() < self.max_flows {
            return;
        }
        let oldest = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(n, e)| match e {
                Some(Entry::Udp(f)) => Some((f.last_active, n)),
                Some(Entry::Ping(f)) => Some((f.last_active, n)),
                Some(Entry::Tcp(c)) => Some((c.last_active, n)),
                _ => None,
            })
            .min();
        if let Some((_, n)) = oldest {
            self.remove(n);
            self.stats.flows_evicted += 1;
        }
    }

    /// Starts the host side of a container's new connection, holding its SYN.
    fn open_masquerade_tcp(
        &mut self,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        syn: &[u8],
        reg: &Reg<'_>,
        now: Instant,
    ) {
        let host = match TcpStream::connect(SocketAddr::V4(dst)) {
            Ok(host) => host,
            Err(e) => return self.host_connect_failed(&e, syn),
        };
        self.make_room();
        let n = self.add(Entry::Tcp(TcpConn {
            smol: None,
            pending_syn: Some(syn.to_vec()),
            host,
            last_active: now,
            container: src,
            remote: dst,
            rule: None,
            connected: false,
            host_eof: false,
            container_eof: false,
        }));
        self.track_tcp(n, reg);
        self.stats.tcp_opened += 1;
    }

    /// Watches connection `n`'s host socket and files it under its flow key.
    fn track_tcp(&mut self, n: usize, reg: &Reg<'_>) {
        if let Some(Entry::Tcp(c)) = self.entries[n].as_mut() {
            let _ = reg.registry.register(
                &mut c.host,
                reg.token(n),
                Interest::READABLE | Interest::WRITABLE,
            );
            self.flows.insert((PROTO_TCP, c.container, c.remote), n);
        }
    }

    /// The host could not connect where a container's SYN asked: tell the container
    /// as the network would. Refused: smoltcp, with no socket listening, answers the
    /// SYN with a reset. Unreachable: an ICMP destination-unreachable from the
    /// container's gateway, quoting the SYN.
    fn host_connect_failed(&mut self, e: &io::Error, syn: &[u8]) {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => {
                self.stats.tcp_refused += 1;
                self.queues.push_rx(syn);
            }
            code => {
                self.stats.tcp_unreachable += 1;
                let icmp_code = if code == Some(libc::ENETUNREACH) {
                    0
                } else {
                    1
                };
                if let Some(p) = self.icmp_unreachable(syn, icmp_code) {
                    self.queues.tx.push_back(p);
                }
            }
        }
    }

    /// An ICMP destination-unreachable about `packet` (a container's), from the
    /// gateway of the container's subnet.
    fn icmp_unreachable(&self, packet: &[u8], code: u8) -> Option<Vec<u8>> {
        if packet.len() < 28 {
            return None;
        }
        let to = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
        let from = self
            .gateways
            .iter()
            .find(|(net, prefix, _)| u32::from(to) & crate::route::mask(*prefix) == *net)
            .map(|(_, _, gw)| *gw)?;
        let quote = &packet[..((packet[0] & 0x0f) as usize * 4 + 8).min(packet.len())];
        let total = 20 + 8 + quote.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = PROTO_ICMP;
        p[12..16].copy_from_slice(&from.octets());
        p[16..20].copy_from_slice(&to.octets());
        let c = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[20] = 3;
        p[21] = code;
        p[28..].copy_from_slice(quote);
        let c = checksum::checksum(&p[20..]);
        p[22..24].copy_from_slice(&c.to_be_bytes());
        Some(p)
    }

    /// The gateways of the routed subnets: (network, prefix, gateway address).
    pub fn set_gateways(&mut self, gateways: Vec<(u32, u8, Ipv4Addr)>) {
        self.gateways = gateways;
    }

    /// Host socket number `n` is ready.
    /// Host socket `n` is ready. True if it could not be drained (accept failing for
    /// want of descriptors): the caller asks again on its next turn.
    pub fn ready(&mut self, n: usize, reg: &Reg<'_>, now: Instant) -> bool {
        self.register_listeners(reg);
        match self.entries.get_mut(n) {
            Some(Some(Entry::TcpListener { .. })) => return self.accept_tcp(n, reg),
            Some(Some(Entry::UdpListener { .. })) => self.receive_forward_udp(n, now),
            Some(Some(Entry::Udp(_))) => self.receive_masquerade_udp(n, now),
            Some(Some(Entry::Ping(_))) => self.receive_ping(n, now),
            // TCP connections are served by `poll`.
            _ => {}
        }
        false
    }

    /// Accepts what waits on forward listener `n`; true if accepting failed for a
    /// reason other than an empty queue (out of descriptors, say).
    fn accept_tcp(&mut self, n: usize, reg: &Reg<'_>) -> bool {
        loop {
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
            let Some(client) = v4(peer) else { continue };
            let to = self.rules[rule].to;
            let mut smol = new_tcp_socket();
            // Connect from the client's own address, so the container sees who calls;
            // but a client the container could not answer directly (the host's
            // loopback, or an address inside a lab subnet) is sourced from the
            // gateway of `to`'s subnet instead.
            let source = self.forward_source(client, to);
            let local = IpListenEndpoint {
                addr: Some(IpAddress::Ipv4(*source.ip())),
                port: source.port(),
            };
            if smol
                .connect(
                    self.iface.context(),
                    IpEndpoint::new(IpAddress::Ipv4(*to.ip()), to.port()),
                    local,
                )
                .is_err()
            {
                continue;
            }
            let handle = self.sockets.add(smol);
            self.make_room();
            let m = self.add(Entry::Tcp(TcpConn {
                smol: Some(handle),
                pending_syn: None,
                host,
                last_active: Instant::now(),
                container: to,
                remote: source,
                rule: Some(rule),
                connected: true,
                host_eof: false,
                container_eof: false,
            }));
            self.track_tcp(m, reg);
            self.forward_stats[rule].connections += 1;
            self.forward_stats[rule].active += 1;
        }
    }

    /// The address a forwarded connection from `client` comes from inside the lab.
    fn forward_source(&mut self, client: SocketAddrV4, to: SocketAddrV4) -> SocketAddrV4 {
        let in_lab = |ip: Ipv4Addr, gws: &[(u32, u8, Ipv4Addr)]| {
            gws.iter()
                .any(|(net, prefix, _)| u32::from(ip) & crate::route::mask(*prefix) == *net)
        };
        if !client.ip().is_loopback()
            && !client.ip().is_unspecified()
            && !in_lab(*client.ip(), &self.gateways)
        {
            return client;
        }
        let gw = self
            .gateways
            .iter()
            .find(|(net, prefix, _)| u32::from(*to.ip()) & crate::route::mask(*prefix) == *net)
            .or(self.gateways.first())
            .map_or(Ipv4Addr::new(169, 254, 0, 1), |g| g.2);
        // A free port on the gateway's address, towards `to`.
        for _ in 0..1024 {
            self.next_port = if self.next_port < 32768 || self.next_port >= 60999 {
                32768
            } else {
                self.next_port + 1
            };
            let source = SocketAddrV4::new(gw, self.next_port);
            if !self.flows.contains_key(&(PROTO_TCP, to, source))
                && !self.flows.contains_key(&(PROTO_UDP, to, source))
            {
                return source;
            }
        }
        client
    }

    fn receive_forward_udp(&mut self, n: usize, now: Instant) {
        let mut buf = [0u8; 65536];
        loop {
            let (got, rule) = match &self.entries[n] {
                Some(Entry::UdpListener { socket, rule }) => (socket.recv_from(&mut buf), *rule),
                _ => return,
            };
            let Ok((len, peer)) = got else { return };
            let Some(client) = v4(peer) else { continue };
            let to = self.rules[rule].to;
            // The flow this client already has: found by its own address, or (for a
            // client the lab sees from the gateway) by looking.
            let existing = self
                .flows
                .get(&(PROTO_UDP, to, client))
                .copied()
                .or_else(|| {
                    self.entries.iter().position(|e| {
                    matches!(e, Some(Entry::Udp(f)) if f.listener == Some(n) && f.peer == client)
                })
                });
            let source = match existing.and_then(|f| match self.entries[f].as_mut() {
                Some(Entry::Udp(flow)) => {
                    flow.last_active = now;
                    Some(flow.remote)
                }
                _ => None,
            }) {
                Some(source) => source,
                None => {
                    let source = self.forward_source(client, to);
                    self.make_room();
                    let f = self.add(Entry::Udp(UdpFlow {
                        socket: None,
                        listener: Some(n),
                        container: to,
                        remote: source,
                        peer: client,
                        rule: Some(rule),
                        last_active: now,
                    }));
                    self.flows.insert((PROTO_UDP, to, source), f);
                    self.forward_stats[rule].connections += 1;
                    self.stats.udp_flows += 1;
                    source
                }
            };
            self.forward_stats[rule].bytes_in += len as u64;
            self.queues
                .tx
                .push_back(udp_packet(source, to, &buf[..len]));
        }
    }

    fn receive_masquerade_udp(&mut self, n: usize, now: Instant) {
        let mut buf = [0u8; 65536];
        loop {
            let Some(Some(Entry::Udp(flow))) = self.entries.get_mut(n) else {
                return;
            };
            let Some(socket) = &flow.socket else { return };
            let Ok(len) = socket.recv(&mut buf) else {
                return;
            };
            flow.last_active = now;
            let packet = udp_packet(flow.remote, flow.container, &buf[..len]);
            self.queues.tx.push_back(packet);
        }
    }

    /// Runs smoltcp and moves bytes between each connection's two sides.
    pub fn poll(&mut self, now: Instant) {
        let ts = self.smol_now(now);
        for _ in 0..4 {
            self.iface.poll(ts, &mut self.queues, &mut self.sockets);
            if !self.splice() {
                break;
            }
        }
    }

    /// One pass over the TCP connections; true if anything moved.
    fn splice(&mut self) -> bool {
        let mut moved = false;
        let mut dead = Vec::new();
        for n in 0..self.entries.len() {
            let Some(Entry::Tcp(c)) = self.entries[n].as_mut() else {
                continue;
            };
            if !c.connected {
                let failed = match c.host.take_error() {
                    Ok(Some(e)) | Err(e) => Some(e),
                    Ok(None) => None,
                };
                if let Some(e) = failed {
                    let syn = c.pending_syn.take();
                    if let Some(h) = c.smol {
                        self.sockets.get_mut::<tcp::Socket>(h).abort();
                    }
                    dead.push(n);
                    moved = true;
                    if let Some(syn) = syn {
                        self.host_connect_failed(&e, &syn);
                    }
                    continue;
                }
                if c.host.peer_addr().is_err() {
                    continue; // still connecting
                }
                c.connected = true;
                if let Some(syn) = c.pending_syn.take() {
                    // Connected: now let smoltcp answer the held SYN.
                    let mut smol = new_tcp_socket();
                    let listening = smol.listen(IpListenEndpoint {
                        addr: Some(IpAddress::Ipv4(*c.remote.ip())),
                        port: c.remote.port(),
                    });
                    if listening.is_ok() {
                        c.smol = Some(self.sockets.add(smol));
                        self.queues.rx.push_back(syn);
                        moved = true;
                    }
                }
            }
            let Some(handle) = c.smol else { continue };
            let smol = self.sockets.get_mut::<tcp::Socket>(handle);
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
            while smol.can_recv() {
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
            if !c.container_eof
                && !smol.may_recv()
                && !smol.can_recv()
                && smol.state() != tcp::State::Listen
                && smol.state() != tcp::State::SynReceived
                && smol.state() != tcp::State::SynSent
            {
                c.container_eof = true;
                let _ = c.host.shutdown(Shutdown::Write);
                moved = true;
            }
            if bytes_in + bytes_out > 0 {
                c.last_active = Instant::now();
            }
            if let Some(r) = c.rule {
                self.forward_stats[r].bytes_in += bytes_in;
                self.forward_stats[r].bytes_out += bytes_out;
            }
            let state = smol.state();
            if broken {
                self.stats.tcp_reset += 1;
                dead.push(n);
                moved = true;
            } else if state == tcp::State::Closed {
                if !c.host_eof && !c.container_eof {
                    // The container reset the connection: reset the host side too
                    // (closing with a zero linger sends RST, not FIN).
                    let _ = socket2::SockRef::from(&c.host).set_linger(Some(Duration::ZERO));
                    self.stats.tcp_reset += 1;
                }
                dead.push(n);
            } else if state == tcp::State::TimeWait && c.host_eof && !smol.can_recv() {
                dead.push(n);
            }
        }
        for n in dead {
            self.remove(n);
        }
        moved
    }

    fn remove(&mut self, n: usize) {
        let Some(entry) = self.entries[n].take() else {
            return;
        };
        match entry {
            Entry::Tcp(c) => {
                self.flows.remove(&(PROTO_TCP, c.container, c.remote));
                // The socket may still owe the container a reset or a last ACK: it
                // stays in the set until `tick` finds it closed.
                if let Some(h) = c.smol {
                    let smol = self.sockets.get_mut::<tcp::Socket>(h);
                    if !matches!(smol.state(), tcp::State::Closed | tcp::State::TimeWait) {
                        smol.abort();
                    }
                }
                if let Some(r) = c.rule {
                    self.forward_stats[r].active = self.forward_stats[r].active.saturating_sub(1);
                }
            }
            Entry::Udp(f) => {
                self.flows.remove(&(PROTO_UDP, f.container, f.remote));
            }
            Entry::Ping(f) => {
                self.flows.remove(&(
                    PROTO_ICMP,
                    SocketAddrV4::new(f.container, f.ident),
                    SocketAddrV4::new(f.remote, 0),
                ));
            }
            other => {
                // Listeners stay for the lab's life.
                self.entries[n] = Some(other);
                return;
            }
        }
        self.free.push(n);
    }

    /// IP packets for containers, for the router to send on. Runs of TCP segments of
    /// one connection are merged into super-frames first (with `Some(segment size)`),
    /// to be handed to the container's TAP as one GSO frame instead of one write per
    /// 1448 bytes; everything else comes with `None`.
    pub fn drain_output(&mut self, mut f: impl FnMut(&[u8], Option<u16>)) {
        while let Some(mut first) = self.queues.tx.pop_front() {
            let Some(mut run) = TcpRun::start(&first) else {
                f(&first, None);
                self.queues.recycle_tx(first);
                continue;
            };
            while let Some(next) = self.queues.tx.front() {
                if !run.accepts(&first, next) {
                    break;
                }
                first.extend_from_slice(&next[run.headers()..]);
                run.appended(&mut first, next);
                if let Some(next) = self.queues.tx.pop_front() {
                    self.queues.recycle_tx(next);
                }
            }
            let mss = run.finish(&mut first);
            f(&first, mss);
            self.queues.recycle_tx(first);
        }
    }

    /// When smoltcp next needs polling (retransmissions, delayed ACKs).
    pub fn next_timeout(&mut self, now: Instant) -> Option<Instant> {
        let ts = self.smol_now(now);
        self.iface
            .poll_delay(ts, &self.sockets)
            .map(|d| now + Duration::from_micros(d.total_micros()))
    }

    /// Drops idle UDP flows, and sockets smoltcp has finished with.
    pub fn tick(&mut self, now: Instant) {
        let idle: Vec<usize> = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(n, e)| match e {
                Some(Entry::Udp(f)) if now.saturating_duration_since(f.last_active) >= UDP_IDLE => {
                    Some(n)
                }
                Some(Entry::Ping(f))
                    if now.saturating_duration_since(f.last_active) >= UDP_IDLE =>
                {
                    Some(n)
                }
                Some(Entry::Tcp(c)) if now.saturating_duration_since(c.last_active) >= TCP_IDLE => {
                    Some(n)
                }
                _ => None,
            })
            .collect();
        for n in idle {
            self.remove(n);
        }
        let live: Vec<SocketHandle> = self
            .entries
            .iter()
            .filter_map(|e| match e {
                Some(Entry::Tcp(c)) => c.smol,
                _ => None,
            })
            .collect();
        let finished: Vec<SocketHandle> = self
            .sockets
            .iter()
            .filter_map(|(h, s)| match s {
                smoltcp::socket::Socket::Tcp(t)
                    if t.state() == tcp::State::Closed && !live.contains(&h) =>
                {
                    Some(h)
                }
                _ => None,
            })
            .collect();
        for h in finished {
            self.sockets.remove(h);
        }
    }
}

/// A smoltcp socket for one spliced connection. Data unacknowledged for two minutes
/// means the container is gone: the socket aborts and the connection is let go.
fn new_tcp_socket() -> tcp::Socket<'static> {
    let mut smol = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
    );
    smol.set_timeout(Some(smoltcp::time::Duration::from_secs(120)));
    smol
}

/// Errors after which a socket is still fine: try again later.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// (protocol, source, destination, offset of the L4 header) of an IPv4 packet.
fn parse(packet: &[u8]) -> Option<(u8, SocketAddrV4, SocketAddrV4, usize)> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    // Fragments carry no ports past the first: not followed (counted as malformed).
    if packet[6] & 0x3f != 0 || packet[7] != 0 {
        return None;
    }
    let l4 = (packet[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([packet[2], packet[3]]) as usize;
    if l4 < 20 || packet.len() < l4 + 4 || total < l4 + 4 || total > packet.len() {
        return None;
    }
    let ip = |o: usize| Ipv4Addr::new(packet[o], packet[o + 1], packet[o + 2], packet[o + 3]);
    let port = |o: usize| u16::from_be_bytes([packet[o], packet[o + 1]]);
    Some((
        packet[9],
        SocketAddrV4::new(ip(12), port(l4)),
        SocketAddrV4::new(ip(16), port(l4 + 2)),
        l4,
    ))
}

/// An IPv4 ICMP echo reply from `src` to `dst`: the reply the kernel gave us (ICMP
/// header and data), with the container's identifier put back.
fn icmp_echo_reply(src: Ipv4Addr, dst: Ipv4Addr, ident: u16, icmp: &[u8]) -> Vec<u8> {
    let total = 20 + icmp.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = PROTO_ICMP;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..].copy_from_slice(icmp);
    p[24..26].copy_from_slice(&ident.to_be_bytes());
    p[22..24].fill(0);
    let c = checksum::checksum(&p[20..]);
    p[22..24].copy_from_slice(&c.to_be_bytes());
    p
}

/// An IPv4/UDP packet from `src` to `dst`, checksummed.
pub fn udp_packet(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = PROTO_UDP;
    p[12..16].copy_from_slice(&src.ip().octets());
    p[16..20].copy_from_slice(&dst.ip().octets());
    let c = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&src.port().to_be_bytes());
    p[22..24].copy_from_slice(&dst.port().to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    let mut pseudo = Vec::with_capacity(12 + 8 + payload.len());
    pseudo.extend_from_slice(&p[12..20]);
    pseudo.extend_from_slice(&[0, PROTO_UDP]);
    pseudo.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    pseudo.extend_from_slice(&p[20..]);
    let c = match checksum::checksum(&pseudo) {
        0 => 0xffff,
        c => c,
    };
    p[26..28].copy_from_slice(&c.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP data segment from smoltcp's point of view (checksum irrelevant here).
    fn segment(seq: u32, payload: &[u8], flags: u8) -> Vec<u8> {
        let total = 20 + 20 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = PROTO_TCP;
        p[12..16].copy_from_slice(&[10, 250, 0, 2]);
        p[16..20].copy_from_slice(&[10, 251, 1, 2]);
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

    fn run_of(packets: &[Vec<u8>]) -> Vec<(Vec<u8>, Option<u16>)> {
        let mut proxy = HostProxy::new(false, vec![], 16, Instant::now()).unwrap();
        proxy.queues.tx.extend(packets.iter().cloned());
        let mut out = Vec::new();
        proxy.drain_output(|p, gso| out.push((p.to_vec(), gso)));
        out
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
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&((p.len() - 20) as u16).to_be_bytes());
        assert_eq!(u16::from_be_bytes([p[36], p[37]]), checksum::sum(&pseudo));
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
        let mut proxy = HostProxy::new(true, vec![], 16, now).unwrap();
        let poll = mio::Poll::new().unwrap();
        let reg = Reg {
            registry: poll.registry(),
            base: 0,
        };
        for port in 0..100u16 {
            let src: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 20000 + port);
            let p = udp_packet(src, "127.0.0.1:9".parse().unwrap(), b"x");
            proxy.from_container(&p, &reg, now + Duration::from_millis(port as u64));
        }
        assert_eq!(proxy.flows().count(), 16);
        assert_eq!(proxy.stats().flows_evicted, 84);
        assert_eq!(proxy.stats().udp_flows, 100);
        // The survivors are the newest.
        assert!(proxy.flows().all(|(_, c, _)| c.port() >= 20084));
    }

    #[test]
    fn truncated_packets_are_counted_not_followed() {
        let mut proxy = HostProxy::new(true, vec![], 16, Instant::now()).unwrap();
        let poll = mio::Poll::new().unwrap();
        let full = udp_packet(
            "10.0.0.2:1".parse().unwrap(),
            "127.0.0.1:9".parse().unwrap(),
            b"x",
        );
        for cut in 0..23 {
            let reg = Reg {
                registry: poll.registry(),
                base: 0,
            };
            proxy.from_container(&full[..cut], &reg, Instant::now());
        }
        assert_eq!(proxy.stats().malformed, 23);
        assert_eq!(proxy.flows().count(), 0);
    }

    #[test]
    fn odd_packets_pass_through_untouched() {
        let udp = udp_packet(
            "10.0.0.1:1".parse().unwrap(),
            "10.0.0.2:2".parse().unwrap(),
            b"x",
        );
        let out = run_of(&[udp.clone(), vec![0x45, 0, 0], udp.clone()]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], (udp.clone(), None));
        assert_eq!(out[1], (vec![0x45, 0, 0], None));
    }
}
