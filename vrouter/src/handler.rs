//! The router as the logic behind one internal port per routed bridge: the thin shell
//! around [`Router`] that owns buffers. It sends what the router made, and keeps frames
//! waiting for ARP answers (a few per next hop, a few seconds at most).

use std::any::Any;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use vswitch::pool::BufId;
use vswitch::{Emitter, Handler, Mac, PortId, Traced, Verdict};

use crate::proxy::{HostProxy, ProxyTrace, Reg};
use crate::reasm::{Reasm, ReasmConfig, Reassembler};
use crate::router::{Action, Router};

use vswitch::frame::{VnetHdr, ETH_HDR_LEN, GSO_TCPV4, GSO_TCPV6, VNET_F_NEEDS_CSUM, VNET_HDR_LEN};
use vswitch::wire::ipv4::{self, Ipv4Packet};
use vswitch::wire::tcp::TcpPacket;

/// Where the IP packet starts in a frame: after the virtio-net and Ethernet headers.
const IP_AT: usize = VNET_HDR_LEN + ETH_HDR_LEN;

/// Frames kept waiting for ARP, in all.
const HOLD_MAX: usize = 64;
/// ... and for any one next hop (Linux keeps 3 by default too).
const HOLD_PER_NEXT_HOP: usize = 3;
/// How long a kept frame waits before the router gives up (host unreachable).
const HOLD_TIMEOUT: Duration = Duration::from_secs(3);

struct Held {
    ingress: usize,
    sender: Mac,
    iface: usize,
    next_hop: std::net::IpAddr,
    buf: BufId,
    len: usize,
    since: Instant,
}

pub struct RouterHandler {
    router: Router,
    proxy: Option<HostProxy>,
    /// When the proxy next wants polling (cached: `next_timeout` borrows immutably).
    proxy_due: Option<Instant>,
    /// The internal port of each router interface, by interface index.
    ports: Vec<PortId>,
    held: Vec<Held>,
    /// Fragments waiting for the rest of their datagram (for the proxy and services).
    reasm: Reassembler,
    /// A packet being cut into fragments is copied here first (a slow path).
    scratch: Vec<u8>,
}

impl RouterHandler {
    /// `ports[i]` is the internal port of `router.ifaces()[i]`.
    pub fn new(router: Router, ports: Vec<PortId>) -> RouterHandler {
        assert_eq!(router.ifaces().len(), ports.len());
        RouterHandler {
            router,
            proxy: None,
            proxy_due: None,
            ports,
            held: Vec::with_capacity(HOLD_MAX),
            reasm: Reassembler::new(ReasmConfig::default()),
            scratch: Vec::new(),
        }
    }

    /// The reassembly table (for `show`).
    pub fn reassembler(&self) -> &Reassembler {
        &self.reasm
    }

    /// Hands outside addresses to `proxy` (masquerade, port forwards).
    pub fn with_proxy(mut self, mut proxy: HostProxy) -> RouterHandler {
        self.router.set_host_egress(true);
        proxy.set_gateways(
            self.router
                .ifaces()
                .iter()
                .filter_map(|i| {
                    let ip = i.ip?;
                    Some((u32::from(ip) & crate::route::mask(i.prefix), i.prefix, ip))
                })
                .collect(),
        );
        proxy.set_gateways6(self.router.ifaces().iter().filter_map(|i| i.ip6).collect());
        self.proxy = Some(proxy);
        self
    }

    /// Forgets a container that was detached, at `ip`: the router's neighbour entry
    /// and service flows, and the host proxy's flows from and to it. How many flows.
    pub fn forget_host(&mut self, ip: std::net::Ipv4Addr) -> usize {
        let proxied = self
            .proxy
            .as_mut()
            .map_or(0, |p| p.forget_container(ip.into()));
        self.router.forget_host(ip) + proxied
    }

    /// The host proxy, to change at run time (forwards added and removed); None in a lab
    /// built without one (no masquerade and no forward).
    pub fn proxy_mut(&mut self) -> Option<&mut HostProxy> {
        self.proxy.as_mut()
    }

    /// The router, to change at run time (a container attached or detached).
    pub fn router_mut(&mut self) -> &mut Router {
        &mut self.router
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn proxy(&self) -> Option<&HostProxy> {
        self.proxy.as_ref()
    }

    /// The router leg (interface index) behind internal port `port`.
    pub fn leg_of(&self, port: PortId) -> Option<usize> {
        self.iface_of(port)
    }

    /// The internal port of router leg `iface`.
    pub fn port_of(&self, iface: usize) -> Option<PortId> {
        self.ports.get(iface).copied()
    }

    /// Runs the proxy and routes what it made to the containers.
    fn run_proxy(&mut self, out: &mut Emitter<'_>, now: Instant) {
        let Some(proxy) = self.proxy.as_mut() else {
            return;
        };
        proxy.poll(now);
        let RouterHandler {
            router,
            ports,
            held,
            scratch,
            ..
        } = self;
        let (mut dropped, mut full) = (0, 0);
        proxy.drain_output(|packet, gso| {
            // No free buffer: the packet waits in the proxy for the next turn, when the
            // frames in flight have been written out.
            let Some(buf) = out.alloc() else {
                return false;
            };
            let len = VNET_HDR_LEN + ETH_HDR_LEN + packet.len();
            let room = out.room(buf);
            if room.len() < len {
                out.release(buf);
                dropped += 1;
                return true;
            }
            room[..VNET_HDR_LEN + ETH_HDR_LEN].fill(0);
            room[VNET_HDR_LEN + ETH_HDR_LEN..len].copy_from_slice(packet);
            if let Some(mss) = gso {
                // A TCP super-frame: the container's kernel cuts it (or takes it whole).
                let Some(ip) = vswitch::wire::ip::IpHead::parse(packet) else {
                    out.release(buf);
                    dropped += 1;
                    return true;
                };
                let ihl = ip.header_len(packet);
                let thl = TcpPacket::new_checked(ip.payload).map_or(0, |t| t.header_len());
                let gso_type = if ip.src.is_ipv4() {
                    GSO_TCPV4
                } else {
                    GSO_TCPV6
                };
                VnetHdr {
                    flags: VNET_F_NEEDS_CSUM,
                    gso_type,
                    hdr_len: (ETH_HDR_LEN + ihl + thl) as u16,
                    gso_size: mss,
                    csum_start: (ETH_HDR_LEN + ihl) as u16,
                    csum_offset: 16,
                }
                .emit(room);
            }
            let (iface, next_hop, sender) = match router.from_host(&mut out.data(buf, len)[..], now)
            {
                Action::Send { iface } => {
                    send(router, ports, scratch, out, iface, buf, len);
                    return true;
                }
                Action::Resolve {
                    iface,
                    next_hop,
                    sender,
                } => (iface, std::net::IpAddr::V4(next_hop), sender),
                Action::Resolve6 {
                    iface,
                    next_hop,
                    sender,
                } => (iface, std::net::IpAddr::V6(next_hop), sender),
                _ => {
                    out.release(buf);
                    return true;
                }
            };
            let kept = try_hold(
                held,
                Held {
                    ingress: iface,
                    sender,
                    iface,
                    next_hop,
                    buf,
                    len,
                    since: now,
                },
            );
            if !kept {
                full += 1;
                out.release(buf);
            }
            true
        });
        for _ in 0..dropped {
            router.no_buffer();
        }
        for _ in 0..full {
            router.hold_queue_full();
        }
        self.flush_outbox(out);
        self.proxy_due = self.proxy.as_mut().and_then(|p| p.next_timeout(now));
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Keeps frame `buf` (from leg `ingress`, routed to leg `iface`) until `next_hop`
    /// answers ARP or neighbour solicitation, within the hold limits.
    #[allow(clippy::too_many_arguments)]
    fn hold(
        &mut self,
        ingress: usize,
        iface: usize,
        next_hop: std::net::IpAddr,
        sender: Mac,
        buf: BufId,
        len: usize,
        now: Instant,
    ) -> Verdict {
        let held = Held {
            ingress,
            sender,
            iface,
            next_hop,
            buf,
            len,
            since: now,
        };
        if try_hold(&mut self.held, held) {
            Verdict::Keep
        } else {
            self.router.hold_queue_full();
            Verdict::Release
        }
    }

    fn iface_of(&self, port: PortId) -> Option<usize> {
        self.ports.iter().position(|&p| p == port)
    }

    /// Sends what the router built (ARP requests, ICMP errors) in fresh buffers.
    fn flush_outbox(&mut self, out: &mut Emitter<'_>) {
        let ports = &self.ports;
        let mut no_buffer = 0;
        self.router.outbox().drain(|iface, bytes| {
            let Some(buf) = out.alloc() else {
                no_buffer += 1;
                return;
            };
            out.room(buf)[..bytes.len()].copy_from_slice(bytes);
            out.inject(ports[iface], buf, bytes.len());
        });
        for _ in 0..no_buffer {
            self.router.no_buffer();
        }
    }

    /// Sends every kept frame whose next hop is known now.
    fn release_resolved(&mut self, out: &mut Emitter<'_>, now: Instant) {
        let mut i = 0;
        while i < self.held.len() {
            let h = &self.held[i];
            if self
                .router
                .complete(h.iface, h.next_hop, out.data(h.buf, h.len), now)
            {
                // In order: frames for one next hop leave as they came.
                let h = self.held.remove(i);
                send(
                    &mut self.router,
                    &self.ports,
                    &mut self.scratch,
                    out,
                    h.iface,
                    h.buf,
                    h.len,
                );
            } else {
                i += 1;
            }
        }
    }
}

impl Handler for RouterHandler {
    fn handle(
        &mut self,
        port: PortId,
        buf: BufId,
        len: usize,
        out: &mut Emitter<'_>,
        now: Instant,
    ) -> Verdict {
        let Some(ingress) = self.iface_of(port) else {
            return Verdict::Release;
        };
        let mut len = len;
        if self.router.wants_reassembly(ingress, out.frame(buf, len)) {
            match self.reasm.push(&out.frame(buf, len)[IP_AT..], now) {
                Reasm::Complete(h) => {
                    // The whole datagram takes the last fragment's place in its buffer.
                    let room = out.room(buf);
                    let Some(n) = self.reasm.take(h, &mut room[IP_AT..]) else {
                        return Verdict::Release;
                    };
                    VnetHdr::default().emit(room);
                    len = IP_AT + n;
                }
                Reasm::Incomplete | Reasm::Dropped => return Verdict::Release,
            }
        }
        let action = self.router.handle(ingress, out.data(buf, len), now);
        self.flush_outbox(out);
        if self.router.take_learned() && !self.held.is_empty() {
            self.release_resolved(out, now);
        }
        match action {
            Action::Send { iface } => {
                send(
                    &mut self.router,
                    &self.ports,
                    &mut self.scratch,
                    out,
                    iface,
                    buf,
                    len,
                );
                Verdict::Keep
            }
            Action::Resolve {
                iface,
                next_hop,
                sender,
            } => self.hold(
                ingress,
                iface,
                std::net::IpAddr::V4(next_hop),
                sender,
                buf,
                len,
                now,
            ),
            Action::Resolve6 {
                iface,
                next_hop,
                sender,
            } => self.hold(
                ingress,
                iface,
                std::net::IpAddr::V6(next_hop),
                sender,
                buf,
                len,
                now,
            ),
            Action::ToHost => {
                if let Some(proxy) = self.proxy.as_mut() {
                    let frame = out.frame(buf, len);
                    let sender = vswitch::frame::source_mac(&frame[VNET_HDR_LEN..]);
                    let partial =
                        VnetHdr::parse(frame).is_some_and(|v| v.flags & VNET_F_NEEDS_CSUM != 0);
                    let packet = &frame[VNET_HDR_LEN + ETH_HDR_LEN..];
                    proxy.from_container(packet, sender, partial, &reg(out), now);
                    self.run_proxy(out, now);
                }
                Verdict::Release
            }
            Action::Done | Action::Drop(_) => Verdict::Release,
        }
    }

    fn attach(&mut self, out: &mut Emitter<'_>) {
        if let Some(proxy) = self.proxy.as_mut() {
            proxy.register_listeners(&reg(out));
        }
    }

    fn ready(&mut self, n: usize, out: &mut Emitter<'_>, now: Instant) -> bool {
        let Some(proxy) = self.proxy.as_mut() else {
            return false;
        };
        let again = proxy.ready(n, &reg(out), now);
        self.run_proxy(out, now);
        again
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.proxy_due
    }

    fn timeout(&mut self, out: &mut Emitter<'_>, now: Instant) {
        self.run_proxy(out, now);
    }

    fn tick(&mut self, out: &mut Emitter<'_>, now: Instant) {
        self.router.tick(now);
        self.reasm.expire(now);
        if let Some(proxy) = self.proxy.as_mut() {
            proxy.tick(now);
            self.run_proxy(out, now);
        }
        let mut i = 0;
        while i < self.held.len() {
            if now.saturating_duration_since(self.held[i].since) >= HOLD_TIMEOUT {
                let h = self.held.swap_remove(i);
                if h.next_hop.is_ipv6() {
                    self.router
                        .unresolved6(h.ingress, h.sender, out.data(h.buf, h.len), now);
                } else {
                    self.router
                        .unresolved(h.ingress, h.sender, out.data(h.buf, h.len), now);
                }
                out.release(h.buf);
            } else {
                i += 1;
            }
        }
        self.flush_outbox(out);
    }

    fn kind(&self) -> &'static str {
        "router"
    }

    fn trace(&self, port: PortId, frame: &mut [u8], now: Instant) -> Traced {
        let Some(leg) = self.iface_of(port) else {
            return Traced::Done {
                step: "router: not one of its legs".into(),
            };
        };
        let ifaces = self.router.ifaces();
        let addrs = |f: &[u8]| {
            let packet = f.get(IP_AT..).unwrap_or_default();
            match Ipv4Packet::new_checked(packet) {
                Ok(ip) => describe(&ip),
                Err(_) => vswitch::wire::ipv6::Ipv6Packet::new_checked(packet)
                    .map(|ip| describe6(&ip))
                    .unwrap_or_default(),
            }
        };
        let before = addrs(frame);
        let action = self.router.trace(leg, frame, now);
        let after = addrs(frame);
        let rewrite = if before == after {
            String::new()
        } else {
            format!(" ({before} becomes {after})")
        };
        let name = &ifaces[leg].name;
        let v6 = frame
            .get(IP_AT..)
            .and_then(vswitch::wire::ipv6::Ipv6Packet::new_checked)
            .map(|ip| (ip.dst(), ip.hop_limit()));
        match action {
            Action::Send { iface } if v6.is_some() => {
                let (dst, hops) = v6.expect("some");
                let mac = vswitch::frame::destination_mac(&frame[VNET_HDR_LEN..]);
                let how = if iface == leg && hops == 64 {
                    "answered by the router".to_string()
                } else {
                    format!("to {dst} on leg {}'s subnet6, hop limit now {hops}", ifaces[iface].name)
                };
                Traced::Inject {
                    via: self.ports[iface],
                    step: format!("router: leg {name}: {how}{rewrite}, out by leg {} to {mac}", ifaces[iface].name),
                }
            }
            Action::Send { iface } => {
                let dst = frame
                    .get(IP_AT..)
                    .and_then(|p| Ipv4Packet::new_checked(p).ok())
                    .map(|ip| ip.dst());
                let route = dst
                    .and_then(|d| self.router.routes().lookup(d))
                    .map_or("its own address".to_string(), |rt| {
                        format!("{}/{}", rt.network, rt.prefix)
                    });
                let mac = vswitch::frame::destination_mac(&frame[VNET_HDR_LEN..]);
                Traced::Inject {
                    via: self.ports[iface],
                    step: format!(
                        "router: leg {name}: route {route}, out by leg {} to {mac}{rewrite}",
                        ifaces[iface].name
                    ),
                }
            }
            // The same limits `handle` keeps frames under.
            Action::Resolve6 { next_hop, .. } if !may_hold(&self.held, next_hop.into()) => Traced::Drop {
                reason: crate::RouterDrop::HoldQueueFull.name(),
                step: format!(
                    "router: {next_hop} is not in the neighbour table, and the frames waiting for neighbours are at their limit: dropped (hold_queue_full)"
                ),
            },
            Action::Resolve6 { next_hop, .. } => Traced::Done {
                step: format!(
                    "router: {next_hop} is not in the neighbour table: the router would solicit it and hold the frame"
                ),
            },
            Action::Resolve { next_hop, .. } if !may_hold(&self.held, next_hop.into()) => Traced::Drop {
                reason: crate::RouterDrop::HoldQueueFull.name(),
                step: format!(
                    "router: {next_hop} is not in the ARP table, and the frames waiting for ARP are at their limit ({HOLD_PER_NEXT_HOP} per next hop, {HOLD_MAX} in all): dropped (hold_queue_full){rewrite}"
                ),
            },
            Action::Resolve {
                next_hop, iface, ..
            } => {
                let asking = matches!(
                    self.router.neighbors().state(iface, next_hop),
                    Some(crate::neighbor::State::Incomplete { .. })
                );
                let what = if asking {
                    "is being asked for (INCOMPLETE): the frame would wait for the answer"
                } else {
                    "is not in the ARP table: the router would ask and hold the frame"
                };
                Traced::Done {
                    step: format!("router: {next_hop} {what}{rewrite}"),
                }
            }
            Action::ToHost => {
                let packet = frame.get(IP_AT..).unwrap_or_default();
                let Some(proxy) = self.proxy.as_ref() else {
                    return Traced::Done {
                        step: "router: for the host, which has no proxy".into(),
                    };
                };
                let whose = if dst_is_gateway(&self.router, packet) {
                    "for a gateway address: handed to the host proxy"
                } else {
                    "outside every subnet: handed to the host proxy"
                };
                let sender = frame
                    .get(VNET_HDR_LEN..)
                    .and_then(vswitch::wire::ethernet::EthernetFrame::new_checked)
                    .map_or(Mac::default(), |e| e.src());
                match proxy.trace(packet, sender) {
                    ProxyTrace::Out(how) => Traced::Leaves {
                        egress: "host".into(),
                        step: format!("router: {whose}{rewrite}; {how}"),
                    },
                    ProxyTrace::Answered(how) => Traced::Done {
                        step: format!("router: {whose}{rewrite}; {how}"),
                    },
                    ProxyTrace::Dropped { reason, why } => Traced::Drop {
                        reason,
                        step: format!("router: {whose}{rewrite}; dropped ({reason}): {why}"),
                    },
                }
            }
            Action::Done => Traced::Done {
                step: format!("router: answered by the router itself{rewrite}"),
            },
            Action::Drop(reason) => Traced::Drop {
                reason: reason.name(),
                step: format!(
                    "router: leg {name}: dropped ({}){rewrite}{}",
                    reason.name(),
                    reason.answer().map_or(String::new(), |a| format!("; {a}"))
                ),
            },
        }
    }

    fn answers_arp(&self, port: PortId, ip: Ipv4Addr, now: Instant) -> Option<(Mac, String)> {
        let leg = self.iface_of(port)?;
        let me = &self.router.ifaces()[leg];
        let gw = me.ip?;
        let on_link = u32::from(ip) & crate::route::mask(me.prefix)
            == u32::from(gw) & crate::route::mask(me.prefix);
        if ip == gw {
            return Some((me.mac, "the gateway".into()));
        }
        if on_link
            && self
                .router
                .services()
                .iter()
                .any(|s| s.vip.ip() == std::net::IpAddr::V4(ip))
        {
            return Some((me.mac, "a service VIP, answered by the router".into()));
        }
        let mac = self.router.neighbors().lookup(leg, ip, now)?;
        Some((mac, "from the router's ARP table".into()))
    }

    fn gateway(&self, port: PortId) -> Option<(Ipv4Addr, Mac)> {
        let me = &self.router.ifaces()[self.iface_of(port)?];
        Some((me.ip?, me.mac))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Whether `packet` is addressed to one of the router's gateway addresses.
fn dst_is_gateway(router: &Router, packet: &[u8]) -> bool {
    Ipv4Packet::new_checked(packet)
        .is_ok_and(|ip| router.ifaces().iter().any(|i| i.ip == Some(ip.dst())))
}

/// An IPv4 packet's ends and TTL, as `trace` prints them.
fn describe<T: AsRef<[u8]>>(ip: &Ipv4Packet<T>) -> String {
    match vswitch::wire::flow::FlowKey::from_ipv4(ip) {
        Some(k) => format!("{} -> {} ttl {}", k.src, k.dst, ip.ttl()),
        None => format!("{} -> {} ttl {}", ip.src(), ip.dst(), ip.ttl()),
    }
}

/// An IPv6 packet's flow (or addresses) and hop limit, for `trace`.
fn describe6<T: AsRef<[u8]>>(ip: &vswitch::wire::ipv6::Ipv6Packet<T>) -> String {
    match vswitch::wire::flow::FlowKey::from_ipv6(ip) {
        Some(k) => format!("{} -> {} hop limit {}", k.src, k.dst, ip.hop_limit()),
        None => format!("{} -> {} hop limit {}", ip.src(), ip.dst(), ip.hop_limit()),
    }
}

/// The handler's share of the poll loop, for the proxy's host sockets.
fn reg<'a>(out: &'a Emitter<'_>) -> Reg<'a> {
    Reg {
        registry: out.registry(),
        base: out.token(0).0,
    }
}

/// Sends a routed frame into the bridge of leg `iface`: as it is if it fits the
/// bridge's MTU (or is a super-frame, already checked), else cut into fragments, each
/// in a buffer of its own (the frame's partial checksum finished first: fragments
/// cannot leave it to offload). Takes the buffer either way.
fn send(
    router: &mut Router,
    ports: &[PortId],
    scratch: &mut Vec<u8>,
    out: &mut Emitter<'_>,
    iface: usize,
    buf: BufId,
    len: usize,
) {
    let mtu = router.mtu(iface) as usize;
    let len = routed_len(out.frame(buf, len));
    let frame = out.frame(buf, len);
    let vnet = VnetHdr::parse(frame).unwrap_or_default();
    let fits = Ipv4Packet::new_checked(&frame[IP_AT.min(len)..])
        .map_or(true, |ip| ip.total_len() <= mtu || ip.dont_frag());
    if fits || vnet.is_gso() {
        return out.inject(ports[iface], buf, len);
    }
    scratch.clear();
    scratch.extend_from_slice(&frame[VNET_HDR_LEN..]);
    out.release(buf);
    if vnet.flags & VNET_F_NEEDS_CSUM != 0
        && vswitch::wire::finish_checksum(
            scratch,
            vnet.csum_start as usize,
            vnet.csum_offset as usize,
        )
        .is_none()
    {
        return router.no_buffer();
    }
    let (eth, packet) = scratch.split_at(ETH_HDR_LEN);
    let mut short = false;
    ipv4::fragment(packet, mtu, |header, payload| {
        let Some(piece) = out.alloc() else {
            short = true;
            return;
        };
        let room = out.room(piece);
        VnetHdr::default().emit(room);
        let at = IP_AT + header.len();
        room[VNET_HDR_LEN..IP_AT].copy_from_slice(eth);
        room[IP_AT..at].copy_from_slice(header);
        room[at..at + payload.len()].copy_from_slice(payload);
        out.inject(ports[iface], piece, at + payload.len());
    });
    if short {
        router.no_buffer();
    }
}

/// The length a frame the router sends leaves with (`frame`: a virtio-net header,
/// then Ethernet): up to the end of its IPv4 packet. What trailed the packet in the
/// frame it came in (Ethernet padding, or anything else a sender put after it) is not
/// part of it: a router forwards the packet, not the frame (Linux trims it in
/// `ip_rcv`). Carried on, a trailer could make the frame longer than the next
/// bridge takes, which drops it as oversize although the packet fits. A frame that is
/// not IPv4 (an ARP reply) keeps its length. (A checksum left to offload that lies in
/// the trailer described no byte of the packet; the next bridge drops that frame as
/// `bad_vnet_header`, as Linux drops an skb whose partial checksum is past its end.)
pub fn routed_len(frame: &[u8]) -> usize {
    let Some(packet) = frame.get(IP_AT..) else {
        return frame.len();
    };
    if let Ok(ip) = Ipv4Packet::new_checked(packet) {
        return IP_AT + ip.total_len();
    }
    match vswitch::wire::ipv6::Ipv6Packet::new_checked(packet) {
        Some(ip) => IP_AT + vswitch::wire::ipv6::HEADER_LEN + ip.payload_len(),
        None => frame.len(),
    }
}

/// Keeps `h` if its next hop may have one more frame waiting; false (`h` not kept,
/// its buffer still the caller's) if not.
fn try_hold(held: &mut Vec<Held>, h: Held) -> bool {
    let room = may_hold(held, h.next_hop);
    if room {
        held.push(h);
    }
    room
}

/// Whether one more frame may wait for `next_hop`: a few per next hop, a few dozen in all.
fn may_hold(held: &[Held], next_hop: std::net::IpAddr) -> bool {
    held.len() < HOLD_MAX
        && held.iter().filter(|h| h.next_hop == next_hop).count() < HOLD_PER_NEXT_HOP
}
