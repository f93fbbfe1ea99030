//! Echo requests (ping) through the host: an unprivileged ICMP socket per flow
//! (`SOCK_DGRAM`/`IPPROTO_ICMP`, allowed by the host's `net.ipv4.ping_group_range`),
//! or, when the host refuses those and tapnet is root, one raw ICMP socket for the
//! lab, its echo identifiers chosen by tapnet and replies matched by identifier and
//! address. With neither, the container is told "administratively prohibited", as a
//! firewall would. ICMPv6 echo requests get a socket per flow in either mode: an
//! unprivileged ICMPv6 socket, or a raw ICMPv6 socket connected to the remote address
//! (the kernel fills in its checksum, RFC 3542 section 3.1), its replies matched by
//! an identifier tapnet chose.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Instant;

use mio::Interest;
use vswitch::wire::icmpv4::{self, IcmpPacket, IcmpRepr};
use vswitch::wire::icmpv6;
use vswitch::wire::ip::IpHead;
use vswitch::wire::ipv4::Ipv4Packet;

use super::errqueue::{self, IcmpError, Quote};
use super::{Entry, HostProxy, Key, Reg, Unreachable, PROTO_ICMP, PROTO_ICMPV6};

/// How echo requests leave the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingMode {
    /// Unprivileged ICMP sockets, one per flow (the kernel picks their identifiers).
    Socket,
    /// One raw ICMP socket for the lab (root; the host's `ping_group_range` refuses
    /// ICMP sockets).
    Raw,
    /// Neither: containers' echo requests are answered "administratively prohibited".
    None,
}

/// Echo requests whose heads a flow keeps, to quote in errors about them.
const QUOTES: usize = 8;

/// A container's pings to one address.
pub(super) struct PingFlow {
    /// Its own ICMP socket, or `None` on the lab's raw socket.
    pub socket: Option<socket2::Socket>,
    pub container: IpAddr,
    pub remote: IpAddr,
    /// The container's MAC, whose share the flow counts against.
    pub owner: vswitch::Mac,
    /// The container's echo identifier, put back into the replies.
    pub ident: u16,
    /// On the raw socket: the identifier sent instead (unique among the lab's flows).
    pub wire_ident: u16,
    /// The TTL the socket sends with now (the container's less this hop).
    pub ttl: u8,
    pub last_active: Instant,
    /// The latest requests' heads by sequence number, for errors quoting them.
    quotes: [(u16, Quote); QUOTES],
    next_quote: usize,
}

impl PingFlow {
    /// A new flow from `container` (whose MAC is `owner`) to `remote`, on `socket`
    /// (`None`: the lab's raw socket); its identifiers are set by
    /// [`PingFlow::idents`].
    fn new(
        socket: Option<socket2::Socket>,
        container: IpAddr,
        remote: IpAddr,
        owner: vswitch::Mac,
        now: Instant,
    ) -> PingFlow {
        PingFlow {
            socket,
            container,
            remote,
            owner,
            ident: 0,
            wire_ident: 0,
            ttl: 0,
            last_active: now,
            quotes: [(0, Quote::default()); QUOTES],
            next_quote: 0,
        }
    }

    /// The container's echo identifier, and the one the flow sends with.
    fn idents(mut self, ident: u16, wire_ident: u16) -> PingFlow {
        (self.ident, self.wire_ident) = (ident, wire_ident);
        self
    }

    /// The flow's key: the container's identifier in the place of its port.
    pub fn key(&self) -> Key {
        let proto = if self.remote.is_ipv4() {
            PROTO_ICMP
        } else {
            PROTO_ICMPV6
        };
        (
            proto,
            SocketAddr::new(self.container, self.ident),
            SocketAddr::new(self.remote, 0),
        )
    }

    fn remember(&mut self, seq: u16, packet: &[u8]) {
        self.quotes[self.next_quote] = (seq, Quote::of(packet));
        self.next_quote = (self.next_quote + 1) % QUOTES;
    }

    fn quote(&self, seq: u16) -> Option<Quote> {
        self.quotes
            .iter()
            .find(|(s, q)| *s == seq && !q.is_empty())
            .map(|(_, q)| *q)
    }
}

fn icmp_socket(kind: socket2::Type) -> std::io::Result<socket2::Socket> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, kind, Some(socket2::Protocol::ICMPV4))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// An ICMPv6 socket of `kind` (datagram: a ping socket; raw) connected to `remote`,
/// reporting the hop limit of what it receives.
fn icmp6_socket(kind: socket2::Type, remote: Ipv6Addr) -> std::io::Result<socket2::Socket> {
    let s = socket2::Socket::new(socket2::Domain::IPV6, kind, Some(socket2::Protocol::ICMPV6))?;
    s.set_nonblocking(true)?;
    let _ = errqueue::want_ttl(s.as_raw_fd(), true);
    // Errors about the requests (a hop limit run out on the way): a ping socket
    // queues them; a raw one, connected, never sees a router's.
    let _ = errqueue::enable(s.as_raw_fd(), true);
    s.connect(&SocketAddr::from((remote, 0)).into())?;
    Ok(s)
}

impl HostProxy {
    /// Tries an ICMP socket, then a raw one: the first the host allows is the mode.
    pub(super) fn choose_ping_mode(&mut self) {
        if icmp_socket(socket2::Type::DGRAM).is_ok() {
            self.ping = PingMode::Socket;
        } else if let Ok(raw) = icmp_socket(socket2::Type::RAW) {
            self.ping = PingMode::Raw;
            let n = self.add(Entry::RawIcmp(raw));
            self.raw = Some(n);
            self.unregistered.push(n);
        }
    }

    /// An ICMP packet from a container to the outside: an echo request goes on.
    pub(super) fn ping(&mut self, packet: &[u8], reg: &Reg<'_>, now: Instant) {
        let ip = Ipv4Packet::new_unchecked(packet);
        let Some(icmp) = IcmpPacket::new_checked(ip.payload()) else {
            self.stats.malformed += 1;
            return;
        };
        if !self.masquerade || icmp.kind() != icmpv4::ECHO_REQUEST {
            self.stats.no_flow += 1;
            return;
        }
        if icmp.code() != 0 || !icmp.verify_checksum() {
            self.stats.malformed += 1;
            return;
        }
        if self.ping == PingMode::None {
            self.stats.ping_refused += 1;
            return self.error_from_gateway(packet, Unreachable::AdminProhibited);
        }
        let (container, remote, ident) = (ip.src(), ip.dst(), icmp.ident());
        let ttl = ip.ttl().saturating_sub(1);
        // Echo flows are keyed by (container, identifier) -> remote, ports unused.
        let key = (
            PROTO_ICMP,
            SocketAddr::from((container, ident)),
            SocketAddr::from((remote, 0)),
        );
        let n = match self.flows.get(&key) {
            Some(&n) => n,
            None => {
                if !self.within_share() {
                    return;
                }
                let (socket, wire_ident) = match self.ping {
                    PingMode::Socket => match icmp_socket(socket2::Type::DGRAM) {
                        Ok(s) => {
                            let _ = errqueue::enable(s.as_raw_fd(), false);
                            let _ = errqueue::want_ttl(s.as_raw_fd(), false);
                            if let Err(e) = s.connect(&SocketAddr::from((remote, 0)).into()) {
                                return self.unreachable_for(packet, &e);
                            }
                            (Some(s), ident)
                        }
                        Err(_) => {
                            self.stats.ping_refused += 1;
                            return;
                        }
                    },
                    _ => (None, self.free_ident(remote.into())),
                };
                self.make_room();
                let flow = PingFlow::new(socket, container.into(), remote.into(), self.from, now);
                let n = self.add(Entry::Ping(Box::new(flow.idents(ident, wire_ident))));
                match &self.entries[n] {
                    Some(Entry::Ping(f)) if f.socket.is_some() => {
                        let s = f.socket.as_ref().expect("checked");
                        let _ = reg.registry.register(
                            &mut mio::unix::SourceFd(&s.as_raw_fd()),
                            reg.token(n),
                            Interest::READABLE,
                        );
                    }
                    _ => {
                        self.raw_idents.insert((remote.into(), wire_ident), n);
                    }
                }
                self.flows.insert(key, n);
                n
            }
        };
        let raw = self.raw.and_then(|r| match &self.entries[r] {
            Some(Entry::RawIcmp(s)) => Some(s.as_raw_fd()),
            _ => None,
        });
        let Some(Some(Entry::Ping(f))) = self.entries.get_mut(n) else {
            return;
        };
        f.last_active = now;
        f.remember(icmp.seq(), packet);
        self.lru.touch(n);
        let Some(Some(Entry::Ping(f))) = self.entries.get_mut(n) else {
            return;
        };
        let sent = match &f.socket {
            Some(s) => {
                if f.ttl != ttl {
                    f.ttl = ttl;
                    let _ = errqueue::set_ttl(s.as_raw_fd(), false, ttl);
                }
                super::send_past_pending_error(|| s.send(ip.payload()))
            }
            None => {
                let Some(fd) = raw else { return };
                // The raw socket is the lab's: its TTL is set for each request.
                let _ = errqueue::set_ttl(fd, false, ttl);
                let mut request = [0u8; 65536];
                let body = ip.payload();
                request[..body.len()].copy_from_slice(body);
                icmpv4::set_echo_ident(&mut request[..body.len()], f.wire_ident);
                send_to(fd, &request[..body.len()], remote)
            }
        };
        if let Err(e) = sent {
            self.unreachable_for(packet, &e);
        }
    }

    /// An echo identifier for the raw socket that no flow to `remote` uses.
    fn free_ident(&mut self, remote: IpAddr) -> u16 {
        loop {
            self.next_ident = self.next_ident.wrapping_add(1);
            if !self.raw_idents.contains_key(&(remote, self.next_ident)) {
                return self.next_ident;
            }
        }
    }

    /// Replies and errors on echo flow `n`'s own ICMP socket; true if there may be
    /// more.
    pub(super) fn receive_ping(&mut self, n: usize, now: Instant) -> bool {
        let mut buf = [0u8; 65536];
        for _ in 0..super::RX_BATCH {
            let Some(Some(Entry::Ping(flow))) = self.entries.get_mut(n) else {
                return false;
            };
            let Some(socket) = &flow.socket else {
                return false;
            };
            // An error: the payload is the echo header the socket sent (the kernel's
            // identifier, the container's sequence number).
            if let Some(entry) = errqueue::read(socket.as_raw_fd()) {
                if let Some(err) = entry {
                    let seq = u16::from_be_bytes([err.payload[6], err.payload[7]]);
                    if let Some(quote) = flow.quote(seq) {
                        self.relay_error(&err, &quote);
                    }
                }
                continue;
            }
            let (len, ttl) = match errqueue::recv_with_ttl(socket.as_raw_fd(), &mut buf) {
                Ok(got) => got,
                Err(e) if e.raw_os_error().is_some_and(|c| c != libc::EAGAIN) => continue,
                Err(_) => return false,
            };
            flow.last_active = now;
            let reply = &buf[..len];
            let (remote, container, ident) = (flow.remote, flow.container, flow.ident);
            let wire_ident = flow.wire_ident;
            self.lru.touch(n);
            let ttl = ttl.unwrap_or(64);
            match (remote, container) {
                (IpAddr::V4(r), IpAddr::V4(c)) => {
                    self.echo_reply_to_container(r, c, ident, ttl, reply)
                }
                (IpAddr::V6(r), IpAddr::V6(c)) => {
                    self.echo6_reply_to_container(r, c, ident, wire_ident, ttl, reply)
                }
                _ => {}
            }
        }
        true
    }

    /// What the lab's raw ICMP socket received (every ICMP packet the host gets): the
    /// replies to tapnet's requests, and the errors about them; true if there may be
    /// more.
    pub(super) fn receive_raw(&mut self, n: usize, now: Instant) -> bool {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 65536];
        for _ in 0..super::RX_BATCH {
            let Some(Some(Entry::RawIcmp(socket))) = self.entries.get(n) else {
                return false;
            };
            let len = match socket.recv(&mut buf) {
                Ok(len) => len,
                Err(e) if e.raw_os_error().is_some_and(|c| c != libc::EAGAIN) => continue,
                Err(_) => return false,
            };
            // SAFETY: recv initialised the first `len` bytes.
            let packet: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), len) };
            let Ok(ip) = Ipv4Packet::new_checked(packet) else {
                continue;
            };
            let Some(icmp) = IcmpPacket::new_checked(ip.payload()) else {
                continue;
            };
            match icmp.kind() {
                icmpv4::ECHO_REPLY => {
                    let Some(&f) = self.raw_idents.get(&(ip.src().into(), icmp.ident())) else {
                        continue;
                    };
                    let Some(Entry::Ping(flow)) = self.entries[f].as_mut() else {
                        continue;
                    };
                    flow.last_active = now;
                    let (IpAddr::V4(remote), IpAddr::V4(container)) = (flow.remote, flow.container)
                    else {
                        continue;
                    };
                    let ident = flow.ident;
                    self.lru.touch(f);
                    let ttl = ip.ttl();
                    self.echo_reply_to_container(remote, container, ident, ttl, ip.payload());
                }
                icmpv4::DEST_UNREACHABLE | icmpv4::TIME_EXCEEDED | icmpv4::PARAMETER_PROBLEM => {
                    // An error about one of tapnet's requests: it quotes the request.
                    let Ok(inner) = Ipv4Packet::new_quoted(icmp.data()) else {
                        continue;
                    };
                    let Some(req) = IcmpPacket::new_checked(inner.payload()) else {
                        continue;
                    };
                    if inner.protocol() != PROTO_ICMP || req.kind() != icmpv4::ECHO_REQUEST {
                        continue;
                    }
                    let Some(&f) = self.raw_idents.get(&(inner.dst().into(), req.ident())) else {
                        continue;
                    };
                    let Some(Entry::Ping(flow)) = self.entries[f].as_ref() else {
                        continue;
                    };
                    let Some(quote) = flow.quote(req.seq()) else {
                        continue;
                    };
                    let rest = icmp.rest();
                    let err = IcmpError {
                        kind: icmp.kind(),
                        code: icmp.code(),
                        info: u16::from_be_bytes([rest[2], rest[3]]) as u32,
                        offender: ip.src().into(),
                        payload: [0; 8],
                    };
                    self.relay_error(&err, &quote);
                }
                _ => {}
            }
        }
        true
    }

    /// An ICMPv6 echo request from a container (`ip`, `packet`) for the outside.
    pub(super) fn ping6(&mut self, ip: &IpHead<'_>, packet: &[u8], reg: &Reg<'_>, now: Instant) {
        let (IpAddr::V6(container), IpAddr::V6(remote)) = (ip.src, ip.dst) else {
            return;
        };
        let Some(icmp) = icmpv6::Icmpv6Packet::new_checked(ip.payload) else {
            self.stats.malformed += 1;
            return;
        };
        let Some((ident, _)) = icmp.echo_ident_seq() else {
            self.stats.malformed += 1;
            return;
        };
        if !self.masquerade || icmp.msg_type() != icmpv6::ECHO_REQUEST {
            self.stats.no_flow += 1;
            return;
        }
        if icmp.code() != 0 || !icmp.verify_checksum(container, remote) {
            self.stats.malformed += 1;
            return;
        }
        let key = (
            PROTO_ICMPV6,
            SocketAddr::from((container, ident)),
            SocketAddr::from((remote, 0)),
        );
        let n = match self.flows.get(&key) {
            Some(&n) => n,
            None => {
                let kind = match self.ping {
                    PingMode::Socket => socket2::Type::DGRAM,
                    PingMode::Raw => socket2::Type::RAW,
                    PingMode::None => {
                        self.stats.ping_refused += 1;
                        return self.error_from_gateway(packet, Unreachable::AdminProhibited);
                    }
                };
                if !self.within_share() {
                    return;
                }
                let socket = match icmp6_socket(kind, remote) {
                    Ok(s) => s,
                    Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                        self.stats.ping_refused += 1;
                        return self.error_from_gateway(packet, Unreachable::AdminProhibited);
                    }
                    Err(e) => return self.unreachable_for(packet, &e),
                };
                // A raw socket sees every reply from `remote`: this flow's carry an
                // identifier no other flow to it uses. A ping socket's are the kernel's.
                let wire_ident = self.free_ident(remote.into());
                self.make_room();
                let flow = PingFlow::new(
                    Some(socket),
                    container.into(),
                    remote.into(),
                    self.from,
                    now,
                );
                let n = self.add(Entry::Ping(Box::new(flow.idents(ident, wire_ident))));
                if let Some(Entry::Ping(f)) = &self.entries[n] {
                    if let Some(s) = &f.socket {
                        let _ = reg.registry.register(
                            &mut mio::unix::SourceFd(&s.as_raw_fd()),
                            reg.token(n),
                            Interest::READABLE,
                        );
                    }
                }
                self.raw_idents.insert((remote.into(), wire_ident), n);
                self.flows.insert(key, n);
                n
            }
        };
        let hops = ip.ttl.saturating_sub(1);
        let Some(Some(Entry::Ping(f))) = self.entries.get_mut(n) else {
            return;
        };
        f.last_active = now;
        if let Some((_, seq)) = icmp.echo_ident_seq() {
            f.remember(seq, packet);
        }
        self.lru.touch(n);
        let Some(Some(Entry::Ping(f))) = self.entries.get_mut(n) else {
            return;
        };
        let Some(s) = &f.socket else { return };
        if f.ttl != hops {
            f.ttl = hops;
            let _ = errqueue::set_ttl(s.as_raw_fd(), true, hops);
        }
        let mut request = [0u8; 65536];
        let body = ip.payload;
        request[..body.len()].copy_from_slice(body);
        // The kernel sums ICMPv6 on both kinds of socket: the checksum is not ours.
        icmpv4::set_echo_ident(&mut request[..body.len()], f.wire_ident);
        if let Err(e) = super::send_past_pending_error(|| s.send(&request[..body.len()])) {
            self.unreachable_for(packet, &e);
        }
    }

    /// An ICMPv6 echo reply (`reply`: its header and data) from `remote` on a flow's
    /// socket, to the container with its identifier put back; others (another flow's
    /// identifier on a raw socket, other messages) are not for it.
    fn echo6_reply_to_container(
        &mut self,
        remote: Ipv6Addr,
        container: Ipv6Addr,
        ident: u16,
        wire_ident: u16,
        hops: u8,
        reply: &[u8],
    ) {
        let Some(icmp) = icmpv6::Icmpv6Packet::new_checked(reply) else {
            return;
        };
        let Some((got, seq)) = icmp.echo_ident_seq() else {
            return;
        };
        if icmp.msg_type() != icmpv6::ECHO_REPLY
            || (self.ping == PingMode::Raw && got != wire_ident)
        {
            return;
        }
        let [i0, i1] = ident.to_be_bytes();
        let [s0, s1] = seq.to_be_bytes();
        let hops = hops.saturating_sub(1).max(1);
        let kind = icmpv6::ECHO_REPLY;
        self.send_icmp6(
            remote,
            container,
            hops,
            kind,
            0,
            [i0, i1, s0, s1],
            icmp.body(),
        );
    }

    /// An echo reply (`reply`: its ICMP header and data) from `remote` to the
    /// container, with the container's identifier put back and the TTL it reached the
    /// host with less the gateway's hop, as through a kernel NAT.
    fn echo_reply_to_container(
        &mut self,
        remote: Ipv4Addr,
        container: Ipv4Addr,
        ident: u16,
        ttl: u8,
        reply: &[u8],
    ) {
        let Some(icmp) = IcmpPacket::new_checked(reply) else {
            return;
        };
        if icmp.kind() != icmpv4::ECHO_REPLY {
            return;
        }
        let mut rest = [0u8; 4];
        rest[..2].copy_from_slice(&ident.to_be_bytes());
        rest[2..].copy_from_slice(&icmp.seq().to_be_bytes());
        self.send_icmp_ttl(
            remote,
            container,
            ttl.saturating_sub(1).max(1),
            IcmpRepr {
                kind: icmpv4::ECHO_REPLY,
                code: 0,
                rest,
                data: icmp.data(),
            },
        );
    }
}

/// Sends `icmp` (an ICMP message) to `to` on the raw socket `fd`.
fn send_to(fd: std::os::fd::RawFd, icmp: &[u8], to: Ipv4Addr) -> std::io::Result<usize> {
    let addr = socket2::SockAddr::from(SocketAddr::from((to, 0)));
    // SAFETY: `icmp` and `addr` are alive for the call and their lengths given.
    let n = unsafe {
        libc::sendto(
            fd,
            icmp.as_ptr().cast(),
            icmp.len(),
            0,
            addr.as_ptr().cast(),
            addr.len(),
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
