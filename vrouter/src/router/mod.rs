//! The router's decisions, with no IO: a frame that reached a router interface goes in
//! (a virtio-net header, then Ethernet), rewritten in place where it can be, and an
//! [`Action`] comes out. Frames the router makes itself (ARP requests, ICMP errors) wait
//! in a small fixed outbox. Time is passed in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use vswitch::frame::{VnetHdr, VNET_F_NEEDS_CSUM, VNET_HDR_LEN};
use vswitch::wire::ethernet::{
    EthernetFrame, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, HEADER_LEN as ETH_HDR_LEN,
};
use vswitch::wire::ipv4::{Ipv4Error, Ipv4Packet};
use vswitch::wire::{PROTO_TCP, PROTO_UDP};
use vswitch::Mac;

use crate::nat::{FlowTable, Timeouts};
use crate::neighbor::{NeighborTable, Resolution};
use crate::route::{mask, Route, RouteTable};

mod arp;
mod drops;
mod icmp;
pub(crate) mod ipv6;
mod services;

pub use drops::{RouterDrop, RouterStats};
use icmp::{IcmpError, TokenBucket};

/// One leg of the router: its address on one bridge's subnet.
#[derive(Debug, Clone)]
pub struct Iface {
    pub name: String,
    pub mac: Mac,
    /// The leg's IPv4 address (`gateway`) and its subnet's prefix length; `None` on
    /// an IPv6-only bridge (no `subnet`), where `prefix` means nothing.
    pub ip: Option<Ipv4Addr>,
    pub prefix: u8,
    /// The leg's IPv6 address and its subnet's prefix length (`gateway6`, `subnet6`),
    /// on a dual-stack bridge.
    pub ip6: Option<(std::net::Ipv6Addr, u8)>,
}

impl Iface {
    /// The leg's IPv4 network address, if it has IPv4.
    fn network(&self) -> Option<u32> {
        self.ip.map(|ip| u32::from(ip) & mask(self.prefix))
    }

    fn broadcast(&self) -> Option<Ipv4Addr> {
        self.network()
            .map(|n| Ipv4Addr::from(n | !mask(self.prefix)))
    }

    fn on_link(&self, ip: Ipv4Addr) -> bool {
        self.network() == Some(u32::from(ip) & mask(self.prefix))
    }

    /// The subnet's network or broadcast address (none on a /31 or /32, RFC 3021).
    fn is_network_or_broadcast(&self, ip: Ipv4Addr) -> bool {
        self.prefix < 31 && (Some(ip) == self.broadcast() || Some(u32::from(ip)) == self.network())
    }
}

/// A load-balanced virtual address: connections to `vip` go to one of `backends`.
/// One family per service: an IPv4 VIP has IPv4 backends, an IPv6 VIP IPv6 ones (a
/// backend of the other family is never chosen).
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    pub vip: SocketAddr,
    pub backends: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Copy)]
pub struct RouterConfig {
    pub neighbor_max: usize,
    pub neighbor_aging: Duration,
    /// ICMP errors per second, and the burst allowed above that rate.
    pub icmp_rate: u32,
    pub icmp_burst: u32,
    /// Translated flows (service connections) at most; the least recently used is
    /// evicted past that.
    pub nat_max_flows: usize,
    pub nat_timeouts: Timeouts,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            neighbor_max: 4096,
            neighbor_aging: Duration::from_secs(300),
            icmp_rate: 100,
            icmp_burst: 50,
            nat_max_flows: 65536,
            nat_timeouts: Timeouts::default(),
        }
    }
}

/// What becomes of a frame the router was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Rewritten in place: send it into the bridge of interface `iface`.
    Send { iface: usize },
    /// Rewritten but for the destination MAC, which is not known yet: keep the frame
    /// until `next_hop` answers ARP (an ARP request is in the outbox), then
    /// [`Router::complete`] it.
    Resolve {
        iface: usize,
        next_hop: Ipv4Addr,
        /// Who sent it, for the ICMP error should ARP fail (the frame's own source
        /// MAC has been rewritten by then).
        sender: Mac,
    },
    /// The IPv6 counterpart of [`Action::Resolve`]: rewritten but for the destination
    /// MAC; a neighbour solicitation for `next_hop` is in the outbox.
    Resolve6 {
        iface: usize,
        next_hop: std::net::Ipv6Addr,
        sender: Mac,
    },
    /// For an address outside every subnet, with the host proxy on (masquerade, or the
    /// return half of a port forward): hand the IP packet to the proxy.
    ToHost,
    /// Nothing more to do: answered or consumed.
    Done,
    /// Dropped, for this reason ([`Router::handle`] counts it).
    Drop(RouterDrop),
}

/// Room for a frame the router builds, bytes: the virtio-net header, Ethernet, IPv4 and
/// an ICMP error quoting at most a 60-byte IP header and 8 bytes; or IPv6 and a router
/// advertisement with three DNS servers (RFC 8106), the largest.
pub const SMALL_FRAME: usize = 192;
const OUTBOX_SLOTS: usize = 256;

/// Frames the router made, waiting to be sent. Fixed size: nothing is allocated.
#[derive(Clone)]
pub struct Outbox {
    frames: [(usize, usize, [u8; SMALL_FRAME]); OUTBOX_SLOTS],
    len: usize,
}

impl Outbox {
    fn new() -> Outbox {
        Outbox {
            frames: [(0, 0, [0; SMALL_FRAME]); OUTBOX_SLOTS],
            len: 0,
        }
    }

    /// Queues the frame `build` writes into a zeroed slot (returning its length) to
    /// leave by `iface`. False if the box is full, or `build` wrote nothing.
    fn push(&mut self, iface: usize, build: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        let Some(slot) = self.frames.get_mut(self.len) else {
            return false;
        };
        slot.2 = [0; SMALL_FRAME];
        match build(&mut slot.2) {
            Some(len) if len <= SMALL_FRAME => {
                (slot.0, slot.1) = (iface, len);
                self.len += 1;
                true
            }
            _ => false,
        }
    }

    /// Hands each waiting frame (interface, bytes) to `f`, then empties the box.
    pub fn drain(&mut self, mut f: impl FnMut(usize, &[u8])) {
        for (iface, len, bytes) in &self.frames[..self.len] {
            f(*iface, &bytes[..*len]);
        }
        self.len = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == OUTBOX_SLOTS
    }
}

const DEFAULT_TTL: u8 = 64;

pub struct Router {
    ifaces: Vec<Iface>,
    /// Each leg's bridge MTU (65535 until told).
    mtus: Vec<u32>,
    services: Vec<Service>,
    flows: FlowTable,
    routes: RouteTable,
    neighbors: NeighborTable,
    icmp: TokenBucket,
    outbox: Outbox,
    stats: RouterStats,
    /// Set when ARP taught the router something: kept frames may now go.
    learned: bool,
    /// Whether addresses outside every subnet go to the host proxy.
    host_egress: bool,
    /// ARP requests a second at most, over every leg (with a burst).
    arp_rate: TokenBucket,
    /// Addresses the neighbour table asked to be probed in a tick.
    probes: Vec<(usize, Ipv4Addr)>,
    /// When the next unsolicited router advertisements go (None: at the first tick).
    next_ra: Option<Instant>,
    /// IPv6 neighbours: (leg, address) -> MAC, when last confirmed, and whether it is
    /// permanent (a port's own `ip6`).
    neighbors6: std::collections::HashMap<(usize, std::net::Ipv6Addr), (Mac, Instant, bool)>,
    /// When each leg last answered a router solicitation.
    last_solicited_ra: Vec<Option<Instant>>,
    /// Each leg's recursive DNS servers for its advertisements (RFC 8106).
    dns6: Vec<[Option<Ipv6Addr>; vswitch::wire::icmpv6::RDNSS_MAX]>,
    /// Each error destination's share of the ICMP error budget.
    icmp_per_sender: std::collections::HashMap<std::net::IpAddr, TokenBucket>,
}

impl Router {
    pub fn new(ifaces: Vec<Iface>, services: Vec<Service>, config: RouterConfig) -> Router {
        let legs = ifaces.len();
        let mut routes = RouteTable::default();
        for (i, iface) in ifaces.iter().enumerate() {
            if let Some(network) = iface.network() {
                routes.add(Route {
                    network: Ipv4Addr::from(network),
                    prefix: iface.prefix,
                    iface: i,
                    gateway: None,
                });
            }
        }
        Router {
            mtus: vec![65535; ifaces.len()],
            ifaces,
            services,
            flows: FlowTable::new(config.nat_max_flows, config.nat_timeouts),
            routes,
            neighbors: NeighborTable::new(legs, config.neighbor_max, config.neighbor_aging),
            icmp: TokenBucket::new(config.icmp_rate, config.icmp_burst),
            outbox: Outbox::new(),
            stats: RouterStats::default(),
            learned: false,
            host_egress: false,
            arp_rate: TokenBucket::new(arp::ARP_RATE, arp::ARP_BURST),
            probes: Vec::new(),
            next_ra: None,
            neighbors6: std::collections::HashMap::new(),
            last_solicited_ra: vec![None; legs],
            dns6: vec![[None; vswitch::wire::icmpv6::RDNSS_MAX]; legs],
            icmp_per_sender: std::collections::HashMap::new(),
        }
    }

    /// The MTU of leg `iface`'s bridge: larger packets are not routed into it.
    pub fn set_mtu(&mut self, iface: usize, mtu: u32) {
        if let Some(m) = self.mtus.get_mut(iface) {
            *m = mtu;
        }
    }

    /// The recursive DNS servers leg `iface`'s router advertisements name (RFC 8106;
    /// the first [`vswitch::wire::icmpv6::RDNSS_MAX`] of `servers`).
    pub fn set_dns6(&mut self, iface: usize, servers: &[Ipv6Addr]) {
        if let Some(d) = self.dns6.get_mut(iface) {
            *d = [None; vswitch::wire::icmpv6::RDNSS_MAX];
            for (slot, a) in d.iter_mut().zip(servers) {
                *slot = Some(*a);
            }
        }
    }

    /// Forgets a host that left (a container detached at run time): its neighbour
    /// entry, static or learned, and every service flow from or to it. How many flows
    /// went.
    pub fn forget_host(&mut self, ip: Ipv4Addr) -> usize {
        self.neighbors.forget(ip);
        self.forget_flows_of(IpAddr::V4(ip))
    }

    /// Forgets every service flow from or to `ip` (either family). How many.
    pub(crate) fn forget_flows_of(&mut self, ip: IpAddr) -> usize {
        self.flows
            .forget(|f| f.original.src.ip() == ip || f.reply.src.ip() == ip)
    }

    /// Tells the router where a port of the lab is: `ip` at `mac`, for good (a
    /// PERMANENT neighbour on the leg whose subnet holds `ip`; no ARP for it, and none
    /// can change it). False if no leg's subnet holds it.
    pub fn add_static_neighbor(&mut self, ip: Ipv4Addr, mac: Mac, now: Instant) -> bool {
        match self.ifaces.iter().position(|i| i.on_link(ip)) {
            Some(leg) => {
                self.neighbors.add_permanent(leg, ip, mac, now);
                true
            }
            None => false,
        }
    }

    /// The MTU of leg `iface`'s bridge.
    pub fn mtu(&self, iface: usize) -> u32 {
        self.mtus.get(iface).copied().unwrap_or(65535)
    }

    /// Whether `frame`, arriving on `iface`, is an IPv4 fragment that must be whole
    /// before the router decides on it: one for the host proxy (an outside address, or
    /// a gateway's), for a service VIP, or from a service backend (whose replies are
    /// translated). Those need ports, which only a first fragment carries. Fragments
    /// routed between subnets go on as they are.
    pub fn wants_reassembly(&self, iface: usize, frame: &[u8]) -> bool {
        let Some(me) = self.ifaces.get(iface) else {
            return false;
        };
        let Some(eth) = EthernetFrame::new_checked(frame.get(VNET_HDR_LEN..).unwrap_or_default())
        else {
            return false;
        };
        if eth.dst() != me.mac || eth.ethertype() != ETHERTYPE_IPV4 {
            return false;
        }
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            return false;
        };
        if !ip.is_fragment() {
            return false;
        }
        let (src, dst) = (ip.src(), ip.dst());
        self.is_own_ip(dst)
            || (self.host_egress && self.routes.lookup(dst).is_none())
            || self
                .services
                .iter()
                .any(|s| s.backends.iter().any(|b| b.ip() == IpAddr::V4(src)))
    }

    /// Sends what no subnet holds to the host proxy instead of answering "no route".
    pub fn set_host_egress(&mut self, on: bool) {
        self.host_egress = on;
    }

    pub fn ifaces(&self) -> &[Iface] {
        &self.ifaces
    }

    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    pub fn neighbors(&self) -> &NeighborTable {
        &self.neighbors
    }

    /// Adds a service at run time: its VIP answers ARP from now on.
    /// An IPv6 VIP answers neighbour solicitations on the leg whose subnet6 holds it.
    pub fn add_service(&mut self, service: Service) {
        self.services.push(service);
    }

    /// Removes the service `name` at run time, with its flows (both TCP ends reset);
    /// false if there is none.
    pub fn remove_service(&mut self, name: &str, now: Instant) -> bool {
        let Some(i) = self.services.iter().position(|s| s.name == name) else {
            return false;
        };
        let mut gone = Vec::new();
        self.flows.forget(|f| {
            let of = f.owner == i;
            if of {
                gone.push(*f);
            }
            of
        });
        for flow in &gone {
            self.reset_flow(flow, now);
        }
        self.services.remove(i);
        self.flows.owner_removed(i);
        true
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    pub fn stats(&self) -> &RouterStats {
        &self.stats
    }

    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// True once after ARP taught the router an address.
    pub fn take_learned(&mut self) -> bool {
        std::mem::take(&mut self.learned)
    }

    /// Queues a frame the router made (see [`Outbox::push`]), counting a full outbox.
    fn queue(&mut self, iface: usize, build: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        if self.outbox.is_full() {
            self.stats.outbox_full += 1;
            return false;
        }
        self.outbox.push(iface, build)
    }

    /// The gateways' addresses and the services' VIPs: the router answers for them.
    fn is_own_ip(&self, ip: Ipv4Addr) -> bool {
        self.ifaces.iter().any(|i| i.ip == Some(ip))
            || self.services.iter().any(|s| s.vip.ip() == IpAddr::V4(ip))
    }

    /// Decides over `frame`, which arrived on interface `iface` at `now`, and counts a
    /// drop under its reason.
    pub fn handle(&mut self, iface: usize, frame: &mut [u8], now: Instant) -> Action {
        let action = self.decide(iface, frame, now);
        self.counted(action)
    }

    /// [`Router::handle`] without counting a drop: the decision itself, which `trace`
    /// shows as it is.
    pub fn decide(&mut self, iface: usize, frame: &mut [u8], now: Instant) -> Action {
        let Some(me) = self.ifaces.get(iface) else {
            return Action::Drop(RouterDrop::Truncated);
        };
        let Some(eth) = EthernetFrame::new_checked(frame.get(VNET_HDR_LEN..).unwrap_or_default())
        else {
            return Action::Drop(RouterDrop::Truncated);
        };
        let dst = eth.dst();
        let ours = dst == me.mac;
        if me.ip.is_none() && matches!(eth.ethertype(), ETHERTYPE_ARP | ETHERTYPE_IPV4) {
            return Action::Drop(RouterDrop::NoIpv4);
        }
        match eth.ethertype() {
            ETHERTYPE_ARP if ours || dst == Mac::BROADCAST => self.arp(iface, frame, now),
            ETHERTYPE_IPV4 if ours => self.ipv4(iface, frame, now),
            _ if !ours && !dst.is_multicast() => Action::Drop(RouterDrop::NotForRouter),
            // Multicast and broadcast that is not ARP (IPv6 neighbour discovery, mDNS):
            // a router does not forward it.
            ETHERTYPE_IPV4 => Action::Drop(RouterDrop::NotRoutable),
            // Neighbour discovery, router solicitations, pings to the gateway.
            ETHERTYPE_IPV6 => self.ipv6(iface, frame, now),
            _ => Action::Drop(RouterDrop::UnsupportedEthertype),
        }
    }

    /// An IPv4 packet addressed to the router's MAC: routed on, translated, answered,
    /// or handed to the host proxy.
    fn ipv4(&mut self, iface: usize, frame: &mut [u8], now: Instant) -> Action {
        let (sender, src, dst, ttl, proto, first, df) = {
            let eth = EthernetFrame::new_checked(&frame[VNET_HDR_LEN..]).expect("checked");
            let ip = match Ipv4Packet::new_checked(eth.payload()) {
                Ok(ip) => ip,
                Err(Ipv4Error::Truncated | Ipv4Error::Malformed) => {
                    return Action::Drop(RouterDrop::BadIpHeader)
                }
            };
            if !ip.verify_checksum() {
                return Action::Drop(RouterDrop::BadIpChecksum);
            }
            let first = ip.frag_offset() == 0;
            let (src, dst) = (ip.src(), ip.dst());
            (
                eth.src(),
                src,
                dst,
                ip.ttl(),
                ip.protocol(),
                first,
                ip.dont_frag(),
            )
        };
        if src.is_multicast() || src.is_broadcast() || src.is_unspecified() {
            return Action::Drop(RouterDrop::NotRoutable);
        }
        // Martian sources, which Linux drops too (ip_route_input_slow, rp_filter): the
        // host's loopback, "this network", link-local, the subnet's broadcast, the
        // router's own addresses; and reverse-path filtering: a source must be on the
        // ingress bridge's subnet (the only way back to it), so no address of another
        // bridge, and nothing from outside every subnet, comes in here.
        let leg = &self.ifaces[iface];
        if src.is_loopback()
            || src.octets()[0] == 0
            || src.is_link_local()
            || leg.is_network_or_broadcast(src)
            || self.is_own_ip(src)
            || !leg.on_link(src)
        {
            return Action::Drop(RouterDrop::MartianSource);
        }
        // Traffic from a neighbour confirms where it is, as TCP's ACKs do for Linux:
        // a busy next hop does not have to go through ARP again every few minutes.
        self.neighbors.traffic_from(iface, src, sender, now);
        let mut dst = dst;
        // A translated packet's flow as its sender sent it: an ICMP error about it
        // quotes that, so the sender knows which of its packets it is about.
        let mut sent_as = None;
        if first {
            match self.translate(frame, now) {
                Ok(Some((new_dst, key))) => {
                    dst = new_dst;
                    sent_as = Some(key);
                }
                Ok(None) => {}
                Err(reason) => return Action::Drop(reason),
            }
        }
        if sent_as.is_none() && self.is_own_ip(dst) {
            // The host proxy sources some forwarded connections from a gateway (for
            // clients a container could not answer directly): their replies are its.
            let gateway = self.ifaces.iter().any(|i| i.ip == Some(dst));
            if self.host_egress && gateway && matches!(proto, PROTO_TCP | PROTO_UDP) {
                return Action::ToHost;
            }
            return self.addressed_to_router(iface, frame, now);
        }
        let Some(route) = self.routes.lookup(dst).copied() else {
            if self.host_egress && outside_routable(dst) {
                if ttl <= 1 {
                    return self.ttl_expired(iface, frame, sent_as, now);
                }
                return Action::ToHost;
            }
            self.icmp_error(iface, frame, IcmpError::NET_UNREACHABLE, now);
            return Action::Drop(RouterDrop::NoRoute);
        };
        let out = &self.ifaces[route.iface];
        if Some(dst) == out.broadcast()
            || Some(u32::from(dst)) == out.network()
            || dst.is_multicast()
        {
            return Action::Drop(RouterDrop::NotRoutable);
        }
        if ttl <= 1 {
            return self.ttl_expired(iface, frame, sent_as, now);
        }
        // Too big for the outgoing bridge (a VXLAN bridge's 1450, say): a DF sender
        // (or a super-frame) is told the size that fits (RFC 1191), as a router would;
        // any other packet goes on, cut into fragments on its way out (RFC 791,
        // RFC 1812 section 5.2.6).
        let out_mtu = self.mtus[route.iface];
        if ip_size(frame) > out_mtu as usize {
            let gso = VnetHdr::parse(frame).is_some_and(|v| v.is_gso());
            if df || gso {
                if df {
                    let err = IcmpError::frag_needed(out_mtu).quoting(sent_as);
                    self.icmp_error_to(iface, sender, frame, err, now);
                }
                return Action::Drop(RouterDrop::TooBig);
            }
            self.stats.fragmented += 1;
        }
        let mut eth = EthernetFrame::new_checked(&mut frame[VNET_HDR_LEN..]).expect("checked");
        Ipv4Packet::new_unchecked(eth.payload_mut()).set_ttl(ttl - 1);
        self.send_via(frame, Some(iface), route, dst, sender, now)
    }

    /// Addresses `frame` from the leg of `route` to its next hop, or asks ARP for it.
    fn send_via(
        &mut self,
        frame: &mut [u8],
        ingress: Option<usize>,
        route: Route,
        dst: Ipv4Addr,
        sender: Mac,
        now: Instant,
    ) -> Action {
        let next_hop = route.gateway.unwrap_or(dst);
        let out_mac = self.ifaces[route.iface].mac;
        let Some(mut eth) = EthernetFrame::new_checked(&mut frame[VNET_HDR_LEN..]) else {
            return Action::Drop(RouterDrop::Truncated);
        };
        eth.set_src(out_mac);
        self.stats.routed += 1;
        match self.neighbors.resolve(route.iface, next_hop, now) {
            Resolution::Known(mac) => {
                eth.set_dst(mac);
                Action::Send { iface: route.iface }
            }
            asked @ (Resolution::Ask | Resolution::Wait) => {
                // The first request goes now (rate permitting); the table's tick sends
                // the next ones, a second apart, and never one per packet.
                if asked == Resolution::Ask {
                    if self.arp_allowed(now) {
                        self.arp_request(route.iface, next_hop);
                    } else {
                        self.neighbors.not_asked(route.iface, next_hop, now);
                    }
                }
                Action::Resolve {
                    iface: route.iface,
                    next_hop,
                    sender,
                }
            }
            // Asked for lately and never answered: unreachable at once, as the kernel
            // says for a FAILED neighbour, without asking again for each packet.
            Resolution::Failed => {
                if let Some(ingress) = ingress.filter(|_| sender != Mac::BROADCAST) {
                    let err = IcmpError::HOST_UNREACHABLE;
                    self.icmp_error_to(ingress, sender, frame, err, now);
                }
                Action::Drop(RouterDrop::NeighborUnresolved)
            }
            Resolution::Busy => Action::Drop(RouterDrop::NeighborTableBusy),
        }
    }

    /// A packet the host proxy made (from a remote or a forward's client, to a
    /// container or a VIP), in `frame` after a virtio-net and an Ethernet header to be
    /// filled in: translated if it is for a VIP, then sent to its container.
    pub fn from_host(&mut self, frame: &mut [u8], now: Instant) -> Action {
        let action = self.decide_from_host(frame, now);
        self.counted(action)
    }

    fn decide_from_host(&mut self, frame: &mut [u8], now: Instant) -> Action {
        let Some(mut eth) =
            EthernetFrame::new_checked(frame.get_mut(VNET_HDR_LEN..).unwrap_or_default())
        else {
            return Action::Drop(RouterDrop::Truncated);
        };
        if eth.payload().first().is_some_and(|b| b >> 4 == 6) {
            return self.routed_from_host6(frame, now);
        }
        eth.set_ethertype(ETHERTYPE_IPV4);
        let Ok(dst) = Ipv4Packet::new_checked(eth.payload()).map(|ip| ip.dst()) else {
            return Action::Drop(RouterDrop::BadIpHeader);
        };
        let dst = match self.translate(frame, now) {
            Ok(Some((new_dst, _))) => new_dst,
            Ok(None) => dst,
            Err(reason) => return Action::Drop(reason),
        };
        let Some(route) = self.routes.lookup(dst).copied() else {
            return Action::Drop(RouterDrop::NoRoute);
        };
        // Nobody to tell should ARP fail: the proxy's side times out on its own.
        self.send_via(frame, None, route, dst, Mac::BROADCAST, now)
    }

    /// Fills in the destination MAC of a frame kept by [`Action::Resolve`], if the next
    /// hop is known by now.
    pub fn complete(&self, iface: usize, next_hop: IpAddr, frame: &mut [u8], now: Instant) -> bool {
        let eth = frame
            .get_mut(VNET_HDR_LEN..)
            .and_then(EthernetFrame::new_checked);
        let mac = match next_hop {
            IpAddr::V4(ip) => self.neighbors.lookup(iface, ip, now),
            IpAddr::V6(ip) => self.neighbor6(iface, ip, now),
        };
        match (mac, eth) {
            (Some(mac), Some(mut eth)) => {
                eth.set_dst(mac);
                true
            }
            _ => false,
        }
    }

    /// What [`Router::handle`] would do with `frame` (rewritten in place, as it would
    /// be), decided on a copy of the router: no table changes, nothing is sent. For
    /// `tapnet trace`.
    pub fn trace(&self, iface: usize, frame: &mut [u8], now: Instant) -> Action {
        // A copy of the router, but for its NAT table: of that, only the flow this
        // packet may belong to (the whole table could be tens of megabytes).
        let key = services::flow_key(frame);
        let mut copy = Router {
            ifaces: self.ifaces.clone(),
            mtus: self.mtus.clone(),
            services: self.services.clone(),
            flows: self.flows.excerpt(key.as_slice()),
            routes: self.routes.clone(),
            neighbors: self.neighbors.clone(),
            icmp: self.icmp.clone(),
            outbox: Outbox::new(),
            stats: self.stats.clone(),
            learned: false,
            host_egress: self.host_egress,
            arp_rate: self.arp_rate.clone(),
            probes: Vec::new(),
            next_ra: self.next_ra,
            neighbors6: self.neighbors6.clone(),
            last_solicited_ra: self.last_solicited_ra.clone(),
            dns6: self.dns6.clone(),
            icmp_per_sender: self.icmp_per_sender.clone(),
        };
        copy.decide(iface, frame, now)
    }

    /// Ages the ARP table and the NAT flows; a TCP flow dropped while its ends still
    /// hold the connection gets a reset sent to each.
    pub fn tick(&mut self, now: Instant) {
        // The neighbour table's next ARP requests (a second apart, three at most).
        // Only the requests the rate limit lets go count as probes.
        let mut probes = std::mem::take(&mut self.probes);
        let (rate, stats) = (&mut self.arp_rate, &mut self.stats);
        self.neighbors.tick(now, |iface, ip| {
            let allowed = rate.take(now);
            if allowed {
                probes.push((iface, ip));
            } else {
                stats.arp_rate_limited += 1;
            }
            allowed
        });
        for &(iface, ip) in &probes {
            self.arp_request(iface, ip);
        }
        probes.clear();
        self.probes = probes;
        self.expire_flows(now);
        self.advertise_when_due(now);
        self.age_neighbors6(now);
    }
}

/// A frame the router rewrote and fully checksummed: no offload work is left.
fn clear_vnet(frame: &mut [u8]) {
    if let Some(vnet) = VnetHdr::parse(frame) {
        if vnet.flags & VNET_F_NEEDS_CSUM != 0 || vnet.is_gso() {
            VnetHdr::default().emit(frame);
        }
    }
}

/// Whether an address may be reached through the host's sockets: never the host's own
/// loopback (a container must not reach services bound to 127.0.0.1 there), nor
/// "this network", class E, multicast or broadcast.
pub fn outside_routable(dst: Ipv4Addr) -> bool {
    let first = dst.octets()[0];
    !(dst.is_loopback() || first == 0 || first >= 224)
}

/// The size of the IP packets a frame will be on the wire: a super-frame's segments
/// (headers plus one segment), or the packet itself: its total length, not the
/// frame's, as what trails the packet in its frame (Ethernet padding, or anything a
/// sender put there) does not leave with it (see [`crate::handler::routed_len`]).
fn ip_size(frame: &[u8]) -> usize {
    match VnetHdr::parse(frame) {
        Some(v) if v.is_gso() => {
            (v.hdr_len as usize).saturating_sub(ETH_HDR_LEN) + v.gso_size as usize
        }
        _ => {
            let packet = frame.get(VNET_HDR_LEN + ETH_HDR_LEN..).unwrap_or_default();
            Ipv4Packet::new_checked(packet).map_or(packet.len(), |ip| ip.total_len())
        }
    }
}
