//! The router's IPv6, on dual-stack legs: neighbour discovery for its own addresses
//! (the leg's `gateway6` and its link-local address) and for next hops, router
//! advertisements on request and periodically (RFC 4861) with the prefix, so hosts
//! autoconfigure (SLAAC, RFC 4862), pings to its addresses, and routing between the
//! legs' subnets: the hop limit decremented, ICMPv6 time exceeded, destination
//! unreachable and packet too big sent back (RFC 4443, rate-limited; never about an
//! ICMPv6 error), never fragmenting.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use vswitch::frame::{VnetHdr, VNET_HDR_LEN};
use vswitch::wire::ethernet::{
    EthernetFrame, EthernetRepr, ETHERTYPE_IPV6, HEADER_LEN as ETH_HDR_LEN,
};
use vswitch::wire::icmpv6::{
    self, Icmpv6Packet, Ipv6Repr, RaRepr, ALL_NODES, ECHO_REPLY, ECHO_REQUEST, NA_LEN,
    ND_HOP_LIMIT, NEIGHBOR_ADVERT, NEIGHBOR_SOLICIT, NS_LEN, ROUTER_ADVERT, ROUTER_SOLICIT,
};
use vswitch::wire::ipv6::{Ipv6Packet, HEADER_LEN as IP6_HEADER_LEN};
use vswitch::Mac;

use super::{Action, Router, RouterDrop};

/// Unsolicited router advertisements go out this often on every dual-stack leg (RFC
/// 4861's MinRtrAdvInterval default, a third of 600 s), and once when the router starts.
pub const RA_EVERY: Duration = Duration::from_secs(200);
/// How long hosts keep this router as their default one (RFC 4861's default, three
/// times MaxRtrAdvInterval).
const ROUTER_LIFETIME: u16 = 1800;
/// How long hosts may use the DNS servers an advertisement names, seconds: RFC 8106
/// section 5.1 asks at least three times MaxRtrAdvInterval, and the router advertises
/// every [`RA_EVERY`].
pub const RDNSS_LIFETIME: u32 = 3 * RA_EVERY.as_secs() as u32;
/// IPv6 neighbours the router remembers, over every leg: past it, a new one is not
/// learned (its packets wait for the next solicitation's answer to find room).
pub const NEIGHBORS6_MAX: usize = 4096;
/// A learned IPv6 neighbour is forgotten this long after it was last confirmed.
pub const NEIGHBOR6_AGING: Duration = Duration::from_secs(300);
/// Addresses learned behind one MAC at most: one container cannot fill the table.
pub const NEIGHBORS6_PER_MAC: usize = 64;
/// Solicited router advertisements on a leg at most this often (RFC 4861 section
/// 6.2.6, MIN_DELAY_BETWEEN_RAS): a flood of solicitations is not a flood of
/// advertisements to every container.
pub const MIN_DELAY_BETWEEN_RAS: Duration = Duration::from_secs(3);
/// ICMPv6 error types and codes (RFC 4443).
const DST_UNREACHABLE: u8 = 1;
const PACKET_TOO_BIG: u8 = 2;
const TIME_EXCEEDED: u8 = 3;
/// The most of the offending packet an error quotes here: the router's small frames
/// hold its 40-byte header and 16 bytes after it (traceroute's UDP ports or ICMPv6
/// identifier and sequence, and more).
const QUOTE6: usize = 56;

impl Router {
    /// An IPv6 frame on leg `iface`: answered if it is for the router, dropped and
    /// counted otherwise.
    pub(super) fn ipv6(&mut self, iface: usize, frame: &mut [u8], now: Instant) -> Action {
        let me = self.ifaces[iface].clone();
        let Some((gw6, _)) = me.ip6 else {
            return Action::Drop(RouterDrop::Ipv6NotRouted);
        };
        let lla = icmpv6::link_local(me.mac);
        let (sender, src, dst, hops, next, payload_len) = {
            let eth = EthernetFrame::new_checked(&frame[VNET_HDR_LEN..]).expect("checked");
            let Some(ip) = Ipv6Packet::new_checked(eth.payload()) else {
                return Action::Drop(RouterDrop::BadIpv6Header);
            };
            (
                eth.src(),
                ip.src(),
                ip.dst(),
                ip.hop_limit(),
                ip.next_header(),
                ip.payload_len(),
            )
        };
        // Service translation first (TCP and UDP to a VIP, and the packets of its
        // flows both ways, a hairpin's replies to gateway6 too), only from addresses
        // that may be routed.
        let routable_src = !src.is_unspecified() && !src.is_multicast() && !is_link_local(src);
        if routable_src
            && !dst.is_multicast()
            && matches!(next, vswitch::wire::PROTO_TCP | vswitch::wire::PROTO_UDP)
        {
            match self.translate6(frame, now) {
                Ok(Some((new_dst, _))) => {
                    return self.forward6(iface, frame, src, new_dst, hops, now)
                }
                Ok(None) => {}
                Err(reason) => return Action::Drop(reason),
            }
        }
        // Any of the router's addresses: this leg's, or another leg's gateway6 (a
        // container may ping the far side's gateway), or a service VIP (pinged, or
        // sent what no service of it takes).
        let gateway = self
            .ifaces
            .iter()
            .any(|i| i.ip6.is_some_and(|(g, _)| g == dst));
        let ours = dst == lla || gateway || self.is_vip6(dst);
        let solicited_node = dst.segments()[..6] == [0xff02, 0, 0, 0, 0, 1];
        if !ours && !dst.is_multicast() {
            return self.forward6(iface, frame, src, dst, hops, now);
        }
        if next != icmpv6::NEXT_HEADER {
            return if dst.is_multicast() {
                // Multicast listener reports (behind a hop-by-hop header) and the
                // like: a router that does not route multicast lets them be.
                Action::Done
            } else if gateway
                && self.host_egress
                && (next == vswitch::wire::PROTO_TCP || next == vswitch::wire::PROTO_UDP)
            {
                // The host proxy sources some forwarded connections from gateway6 (for
                // clients a container could not answer directly): the replies are its.
                // (Not a VIP's: what no service of it takes is answered here.)
                Action::ToHost
            } else if ours {
                // UDP to the router (traceroute -6's last probe): port unreachable,
                // as a host says it (RFC 4443 section 3.1, code 4).
                if next == vswitch::wire::PROTO_UDP {
                    self.icmp6_error(iface, frame, DST_UNREACHABLE, 4, 0, now);
                }
                Action::Drop(RouterDrop::ToRouterUnsupported)
            } else {
                Action::Drop(RouterDrop::Ipv6NotRouted)
            };
        }
        let at = VNET_HDR_LEN + ETH_HDR_LEN + IP6_HEADER_LEN;
        let (kind, code, target, options_ok) = {
            let msg = &frame[at..at + payload_len];
            let Some(icmp) = Icmpv6Packet::new_checked(msg) else {
                return Action::Drop(RouterDrop::BadIcmpv6);
            };
            if !icmp.verify_checksum(src, dst) {
                return Action::Drop(RouterDrop::BadIcmpv6);
            }
            let opts_at = match icmp.msg_type() {
                ROUTER_SOLICIT => 8,
                NEIGHBOR_SOLICIT | NEIGHBOR_ADVERT => NS_LEN,
                _ => msg.len(),
            };
            (
                icmp.msg_type(),
                icmp.code(),
                icmp.nd_target(),
                msg.len() >= opts_at && icmp.nd_options_valid(opts_at),
            )
        };
        match kind {
            NEIGHBOR_SOLICIT | NEIGHBOR_ADVERT | ROUTER_SOLICIT | ROUTER_ADVERT => {
                if hops != ND_HOP_LIMIT {
                    return Action::Drop(RouterDrop::NdpHopLimit);
                }
                if code != 0 || !options_ok {
                    return Action::Drop(RouterDrop::BadIcmpv6);
                }
            }
            _ => {}
        }
        // From `::` (duplicate address detection) there is no source link-layer
        // address option (RFC 4861 sections 4.1 and 4.3): one there is invalid.
        if (kind == NEIGHBOR_SOLICIT || kind == ROUTER_SOLICIT)
            && src.is_unspecified()
            && Icmpv6Packet::new_checked(&frame[at..at + payload_len])
                .and_then(|m| m.nd_lladdrs(if kind == ROUTER_SOLICIT { 8 } else { NS_LEN }))
                .is_some_and(|macs| !macs.is_empty())
        {
            return Action::Drop(RouterDrop::BadIcmpv6);
        }
        // What a solicitation or advertisement tells of its sender (RFC 4861 section
        // 7.2.3 and 7.2.5): its link-layer address, for the next hops this router sends
        // to.
        if kind == NEIGHBOR_SOLICIT && !src.is_unspecified() {
            self.learn6(iface, src, sender, now);
        }
        if let (NEIGHBOR_ADVERT, Some(t)) = (kind, target) {
            self.learn6(iface, t, sender, now);
        }
        match kind {
            NEIGHBOR_SOLICIT => {
                // The leg's addresses, and the VIPs in its subnet6 (at the router's
                // MAC, as ARP answers for IPv4 VIPs).
                let Some(target) = target.filter(|t| {
                    *t == gw6
                        || *t == lla
                        || (self.is_vip6(*t) && me.ip6.is_some_and(|(g, p)| in_net6(*t, g, p)))
                }) else {
                    // Another host's resolution or duplicate address detection.
                    return Action::Done;
                };
                // To the solicitor; to all nodes when it asked from :: (its own DAD).
                let (to, to_mac) = if src.is_unspecified() {
                    (ALL_NODES, icmpv6::multicast_mac(ALL_NODES))
                } else {
                    (src, sender)
                };
                // gateway6 and a VIP may be answered for by another router too: the
                // gateway on a bridge stretched over VXLAN has a router on each host.
                // Without the override flag, the first answer (the host's own router,
                // nearest) stays in the container's cache (RFC 4861 section 7.2.5).
                let overrides = target == lla;
                self.send_nd(iface, me.mac, target, to, to_mac, NA_LEN, |m| {
                    icmpv6::emit_na(m, target, me.mac, !src.is_unspecified(), overrides)
                });
                self.stats.na_sent += 1;
                Action::Done
            }
            ROUTER_SOLICIT => {
                let last = self.last_solicited_ra.get(iface).copied().flatten();
                if last.is_some_and(|t| now.saturating_duration_since(t) < MIN_DELAY_BETWEEN_RAS) {
                    self.stats.ra_rate_limited += 1;
                } else {
                    if let Some(t) = self.last_solicited_ra.get_mut(iface) {
                        *t = Some(now);
                    }
                    self.advertise(iface);
                }
                Action::Done
            }
            ROUTER_ADVERT => Action::Drop(RouterDrop::RaFromContainer),
            NEIGHBOR_ADVERT => Action::Done,
            ECHO_REQUEST if ours => {
                // The reply in place: the same message back, with its type and
                // checksum changed and the addresses swapped.
                let mut eth =
                    EthernetFrame::new_checked(&mut frame[VNET_HDR_LEN..]).expect("checked");
                eth.set_dst(sender);
                eth.set_src(me.mac);
                Ipv6Repr {
                    src: dst,
                    dst: src,
                    next_header: icmpv6::NEXT_HEADER,
                    hop_limit: 64,
                    payload_len,
                }
                .emit(&mut frame[VNET_HDR_LEN + ETH_HDR_LEN..]);
                let msg = &mut frame[at..at + payload_len];
                Icmpv6Packet::new_checked(&mut *msg)
                    .expect("checked above")
                    .set_msg_type(ECHO_REPLY);
                icmpv6::fill_checksum(dst, src, msg);
                self.stats.echo_replies += 1;
                Action::Send { iface }
            }
            _ if ours || solicited_node || dst.is_multicast() => Action::Done,
            _ => Action::Drop(RouterDrop::Ipv6NotRouted),
        }
    }

    /// Queues a router advertisement to all nodes on leg `iface` (none on a leg
    /// without IPv6).
    pub(super) fn advertise(&mut self, iface: usize) {
        let me = self.ifaces[iface].clone();
        let Some((gw6, prefix)) = me.ip6 else { return };
        let net = vswitch::wire::ipv6::network(gw6, prefix);
        let ra = RaRepr {
            mac: me.mac,
            mtu: self.mtu(iface),
            prefix: net,
            prefix_len: prefix,
            autonomous: prefix == 64,
            router_lifetime: ROUTER_LIFETIME,
            rdnss: self.dns6.get(iface).copied().unwrap_or_default(),
            rdnss_lifetime: RDNSS_LIFETIME,
        };
        let lla = icmpv6::link_local(me.mac);
        self.send_nd(
            iface,
            me.mac,
            lla,
            ALL_NODES,
            icmpv6::multicast_mac(ALL_NODES),
            ra.len(),
            |m| ra.emit(m),
        );
        self.stats.ra_sent += 1;
    }

    /// Routes an IPv6 packet for an address of another leg's subnet6 (not this
    /// router's): hop limit, MTU, next hop; the ICMPv6 errors that go back.
    #[allow(clippy::too_many_arguments)]
    fn forward6(
        &mut self,
        iface: usize,
        frame: &mut [u8],
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hops: u8,
        now: Instant,
    ) -> Action {
        if src.is_unspecified() || src.is_multicast() || is_link_local(src) || is_link_local(dst) {
            // Link-local addresses never leave their link (RFC 4291 section 2.5.6).
            return Action::Drop(RouterDrop::NotRoutable);
        }
        let Some(out) = self
            .ifaces
            .iter()
            .position(|i| i.ip6.is_some_and(|(gw, p)| in_net6(dst, gw, p)))
        else {
            if self.host_egress && outside_routable6(dst) {
                // Masquerade: out through the host's IPv6 sockets.
                if hops <= 1 {
                    self.icmp6_error(iface, frame, TIME_EXCEEDED, 0, 0, now);
                    return Action::Drop(RouterDrop::TtlExceeded);
                }
                return Action::ToHost;
            }
            self.icmp6_error(iface, frame, DST_UNREACHABLE, 0, 0, now);
            return Action::Drop(RouterDrop::NoRoute);
        };
        if hops <= 1 {
            self.icmp6_error(iface, frame, TIME_EXCEEDED, 0, 0, now);
            return Action::Drop(RouterDrop::TtlExceeded);
        }
        let chain_ok = Ipv6Packet::new_checked(&frame[VNET_HDR_LEN + ETH_HDR_LEN..])
            .is_some_and(|ip| vswitch::wire::ipv6::ext_chain_ok(ip.next_header(), ip.payload()));
        if !chain_ok {
            return Action::Drop(RouterDrop::Ipv6ExtHeaders);
        }
        // IPv6 routers never fragment: too big for the next link is an error back.
        let mtu = self.mtu(out);
        let vnet = VnetHdr::parse(frame).unwrap_or_default();
        let largest = if vnet.is_gso() {
            usize::from(vnet.hdr_len) + usize::from(vnet.gso_size) - ETH_HDR_LEN
        } else {
            frame.len() - VNET_HDR_LEN - ETH_HDR_LEN
        };
        if largest > mtu as usize {
            self.icmp6_error(iface, frame, PACKET_TOO_BIG, 0, mtu, now);
            return Action::Drop(RouterDrop::TooBig);
        }
        let out_mac = self.ifaces[out].mac;
        let mut eth = EthernetFrame::new_checked(&mut frame[VNET_HDR_LEN..]).expect("checked");
        let sender = eth.src();
        eth.set_src(out_mac);
        let known = self.neighbor6(out, dst, now);
        if let Some(mac) = known {
            eth.set_dst(mac);
        }
        Ipv6Packet::new_checked(&mut frame[VNET_HDR_LEN + ETH_HDR_LEN..])
            .expect("checked above")
            .set_hop_limit(hops - 1);
        if known.is_none() {
            // Asked for; the frame waits (as for ARP) for the answer.
            self.solicit(out, dst);
            return Action::Resolve6 {
                iface: out,
                next_hop: dst,
                sender,
            };
        }
        self.stats.routed += 1;
        Action::Send { iface: out }
    }

    /// The MAC of IPv6 neighbour `ip` on leg `iface`, if known and not aged out.
    pub(super) fn neighbor6(&self, iface: usize, ip: Ipv6Addr, now: Instant) -> Option<Mac> {
        let &(mac, seen, permanent) = self.neighbors6.get(&(iface, ip))?;
        (permanent || now.saturating_duration_since(seen) < NEIGHBOR6_AGING).then_some(mac)
    }

    /// Remembers that `ip` is at `mac` on leg `iface` (not over a permanent entry,
    /// not past [`NEIGHBORS6_MAX`], never a multicast or zero MAC).
    ///
    /// Only addresses of the leg's subnet6 (the next hops it routes to), never the
    /// router's own. A learned address never moves to another MAC while it is
    /// remembered (a container advertising another's address, say): it is refreshed
    /// by its own MAC, and forgotten [`NEIGHBOR6_AGING`] after the last time. One MAC
    /// holds at most [`NEIGHBORS6_PER_MAC`] addresses.
    fn learn6(&mut self, iface: usize, ip: Ipv6Addr, mac: Mac, now: Instant) {
        if mac.is_multicast() || mac.is_zero() {
            return;
        }
        let Some((gw6, prefix)) = self.ifaces[iface].ip6 else {
            return;
        };
        let own = self
            .ifaces
            .iter()
            .any(|i| i.ip6.is_some_and(|(g, _)| g == ip));
        if !in_net6(ip, gw6, prefix) || own {
            return;
        }
        match self.neighbors6.get_mut(&(iface, ip)) {
            Some((_, _, true)) => {}
            Some(e) if e.0 == mac => {
                e.1 = now;
                self.learned = true;
            }
            Some(e) if now.saturating_duration_since(e.1) >= NEIGHBOR6_AGING => {
                *e = (mac, now, false)
            }
            Some(_) => self.stats.neighbors6_moved_refused += 1,
            None => {
                let per_mac = self
                    .neighbors6
                    .values()
                    .filter(|e| e.0 == mac && !e.2)
                    .count();
                if self.neighbors6.len() >= NEIGHBORS6_MAX || per_mac >= NEIGHBORS6_PER_MAC {
                    self.stats.neighbors6_full += 1;
                } else {
                    self.neighbors6.insert((iface, ip), (mac, now, false));
                    self.learned = true;
                }
            }
        }
    }

    /// A port's own `ip6` at its MAC: known for good, as its IPv4 address is.
    pub fn add_static_neighbor6(&mut self, ip: Ipv6Addr, mac: Mac, now: Instant) -> bool {
        let Some(leg) = self
            .ifaces
            .iter()
            .position(|i| i.ip6.is_some_and(|(gw, p)| in_net6(ip, gw, p)))
        else {
            return false;
        };
        self.neighbors6.insert((leg, ip), (mac, now, true));
        true
    }

    /// A frame kept for an IPv6 next hop that never answered: address unreachable
    /// back to `sender` (RFC 4443 section 3.1, code 3), as for IPv4's host unreachable.
    pub fn unresolved6(&mut self, ingress: usize, sender: Mac, frame: &[u8], now: Instant) {
        self.count_drop(RouterDrop::Neighbor6Unknown);
        // The host proxy's packets (sent as from the broadcast MAC) have nobody on the
        // bridge to tell: the proxy's side times out on its own.
        if sender != Mac::BROADCAST {
            self.icmp6_error_to(ingress, sender, frame, DST_UNREACHABLE, 3, 0, now);
        }
    }

    /// An IPv6 packet from the host proxy (in `frame`, after a zeroed Ethernet header)
    /// for a container: to the leg whose subnet6 holds its destination, with the
    /// leg's MAC as source; [`Action::Resolve6`] if the neighbour is not known yet.
    pub(super) fn routed_from_host6(&mut self, frame: &mut [u8], now: Instant) -> Action {
        let at = VNET_HDR_LEN + ETH_HDR_LEN;
        let Some(dst) = frame
            .get(at..)
            .and_then(Ipv6Packet::new_checked)
            .map(|ip| ip.dst())
        else {
            return Action::Drop(RouterDrop::BadIpv6Header);
        };
        let Some(out) = self
            .ifaces
            .iter()
            .position(|i| i.ip6.is_some_and(|(gw, p)| in_net6(dst, gw, p)))
        else {
            return Action::Drop(RouterDrop::NoRoute);
        };
        let mac = self.ifaces[out].mac;
        let known = self.neighbor6(out, dst, now);
        let mut eth = EthernetFrame::new_checked(&mut frame[VNET_HDR_LEN..]).expect("checked");
        eth.set_ethertype(ETHERTYPE_IPV6);
        eth.set_src(mac);
        match known {
            Some(neighbor) => {
                eth.set_dst(neighbor);
                self.stats.routed += 1;
                Action::Send { iface: out }
            }
            None => {
                self.solicit(out, dst);
                Action::Resolve6 {
                    iface: out,
                    next_hop: dst,
                    sender: Mac::BROADCAST,
                }
            }
        }
    }

    /// Forgets IPv6 host `ip` (a port detached): its neighbour entry and every
    /// service flow from or to it. How many flows went.
    pub fn forget_host6(&mut self, ip: Ipv6Addr) -> usize {
        self.neighbors6.retain(|(_, a), _| *a != ip);
        self.forget_flows_of(ip.into())
    }

    /// Whether `ip` is an IPv6 service VIP.
    fn is_vip6(&self, ip: Ipv6Addr) -> bool {
        self.services
            .iter()
            .any(|s| s.vip.ip() == std::net::IpAddr::V6(ip))
    }

    /// Forgets every IPv6 neighbour at `mac` (a port detached: its SLAAC and
    /// link-local addresses too).
    pub fn forget_mac6(&mut self, mac: Mac) {
        self.neighbors6.retain(|_, e| e.0 != mac);
    }

    /// Forgets learned IPv6 neighbours not confirmed for [`NEIGHBOR6_AGING`].
    pub(super) fn age_neighbors6(&mut self, now: Instant) {
        self.neighbors6.retain(|_, (_, seen, permanent)| {
            *permanent || now.saturating_duration_since(*seen) < NEIGHBOR6_AGING
        });
    }

    /// The IPv6 neighbours, for `show`: (leg, address, MAC, seconds since confirmed,
    /// permanent).
    pub fn neighbors6(&self, now: Instant) -> Vec<(usize, Ipv6Addr, Mac, u64, bool)> {
        let mut v: Vec<_> = self
            .neighbors6
            .iter()
            .map(|(&(leg, ip), &(mac, seen, perm))| {
                (
                    leg,
                    ip,
                    mac,
                    now.saturating_duration_since(seen).as_secs(),
                    perm,
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Queues a neighbour solicitation for `target` on leg `iface`, to its
    /// solicited-node group, from the leg's link-local address with its MAC (rate-limited
    /// with the ARP requests).
    fn solicit(&mut self, iface: usize, target: Ipv6Addr) {
        let me = self.ifaces[iface].clone();
        if me.ip6.is_none() {
            return;
        }
        let o = target.octets();
        let group = Ipv6Addr::from([
            0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
        ]);
        // From the link-local address, not gateway6: the solicited host learns the
        // sender's address from it (RFC 4861 section 7.2.3), and on a bridge
        // stretched over VXLAN another host's router asking would otherwise move that
        // host's gateway6 to itself. The link-local address is this router's alone.
        self.send_nd(
            iface,
            me.mac,
            icmpv6::link_local(me.mac),
            group,
            icmpv6::multicast_mac(group),
            icmpv6::NS_LEN + 8,
            |m| icmpv6::emit_ns(m, target, me.mac),
        );
        self.stats.ns_sent += 1;
    }

    /// Sends ICMPv6 error `kind`/`code` (with `param`: the MTU of packet too big)
    /// about the IPv6 packet in `frame` back to its sender, from this leg's
    /// `gateway6`; rate-limited, and never about an ICMPv6 error (RFC 4443 section
    /// 2.4 (e)) or a packet from an unspecified or multicast source.
    #[allow(clippy::too_many_arguments)]
    fn icmp6_error(
        &mut self,
        iface: usize,
        frame: &[u8],
        kind: u8,
        code: u8,
        param: u32,
        now: Instant,
    ) {
        let Some(sender) = frame
            .get(VNET_HDR_LEN..)
            .and_then(EthernetFrame::new_checked)
            .map(|e| e.src())
        else {
            return;
        };
        self.icmp6_error_to(iface, sender, frame, kind, code, param, now);
    }

    /// [`Router::icmp6_error`] back to `sender`'s MAC.
    #[allow(clippy::too_many_arguments)]
    fn icmp6_error_to(
        &mut self,
        iface: usize,
        sender: Mac,
        frame: &[u8],
        kind: u8,
        code: u8,
        param: u32,
        now: Instant,
    ) {
        let me = self.ifaces[iface].clone();
        let Some((gw6, _)) = me.ip6 else { return };
        let at = VNET_HDR_LEN + ETH_HDR_LEN;
        let Some(ip) = Ipv6Packet::new_checked(&frame[at..]) else {
            return;
        };
        // A translated packet: the error goes to its sender, quoting it as sent.
        let sent_as = self.sent_as6(frame);
        let src = sent_as.map_or(ip.src(), |(s, _)| *s.ip());
        // The upper layer behind any extension headers: never an error about an error,
        // however it is wrapped.
        let is_error = match vswitch::wire::ipv6::upper_layer(ip.next_header(), ip.payload()) {
            Some((icmpv6::NEXT_HEADER, l4)) => l4.first().is_some_and(|t| *t < ECHO_REQUEST),
            Some(_) => false,
            // Headers that cannot be read through: no error about them either.
            None => true,
        };
        if is_error || src.is_unspecified() || src.is_multicast() {
            return;
        }
        if !self.may_send_error(src.into(), now) {
            return;
        }
        let original = &frame[at..frame.len().min(at + QUOTE6)];
        let len = 8 + original.len();
        self.queue(iface, |buf| {
            let eth = &mut buf[VNET_HDR_LEN..];
            EthernetRepr {
                dst: sender,
                src: me.mac,
                ethertype: ETHERTYPE_IPV6,
            }
            .emit(eth);
            Ipv6Repr {
                src: gw6,
                dst: src,
                next_header: icmpv6::NEXT_HEADER,
                hop_limit: 64,
                payload_len: len,
            }
            .emit(&mut eth[ETH_HDR_LEN..]);
            let msg = &mut eth[ETH_HDR_LEN + IP6_HEADER_LEN..ETH_HDR_LEN + IP6_HEADER_LEN + len];
            icmpv6::emit_error(msg, kind, code, param, original);
            if let Some((s, d)) = sent_as {
                vswitch::wire::nat::rewrite_quoted_v6(icmpv6::error_quote_mut(msg), s, d);
            }
            icmpv6::fill_checksum(gw6, src, msg);
            Some(VNET_HDR_LEN + ETH_HDR_LEN + IP6_HEADER_LEN + len)
        });
        self.stats.icmp_errors += 1;
    }

    /// Unsolicited advertisements: when due, on every dual-stack leg.
    pub(super) fn advertise_when_due(&mut self, now: Instant) {
        if self.next_ra.is_some_and(|t| now < t) {
            return;
        }
        for i in 0..self.ifaces.len() {
            self.advertise(i);
        }
        self.next_ra = Some(now + RA_EVERY);
    }

    /// Queues a neighbour discovery message of `len` bytes that `body` writes, from
    /// the leg's link-local address (or `from`, for an advertisement of `from`) to
    /// `to` at `to_mac`, hop limit 255.
    #[allow(clippy::too_many_arguments)]
    fn send_nd(
        &mut self,
        iface: usize,
        mac: Mac,
        from: Ipv6Addr,
        to: Ipv6Addr,
        to_mac: Mac,
        len: usize,
        body: impl FnOnce(&mut [u8]),
    ) {
        self.queue(iface, |buf| {
            let eth = &mut buf[VNET_HDR_LEN..];
            EthernetRepr {
                dst: to_mac,
                src: mac,
                ethertype: ETHERTYPE_IPV6,
            }
            .emit(eth);
            Ipv6Repr {
                src: from,
                dst: to,
                next_header: icmpv6::NEXT_HEADER,
                hop_limit: ND_HOP_LIMIT,
                payload_len: len,
            }
            .emit(&mut eth[ETH_HDR_LEN..]);
            let msg = &mut eth[ETH_HDR_LEN + IP6_HEADER_LEN..ETH_HDR_LEN + IP6_HEADER_LEN + len];
            body(msg);
            icmpv6::fill_checksum(from, to, msg);
            Some(VNET_HDR_LEN + ETH_HDR_LEN + IP6_HEADER_LEN + len)
        });
    }
}

/// Whether an IPv6 address may be reached through the host's sockets: never the
/// host's loopback, nor an IPv4-mapped or -compatible address (a socket would take it
/// to the host's IPv4 addresses, 127.0.0.1 among them), nor unspecified, multicast or
/// link-local.
pub fn outside_routable6(dst: Ipv6Addr) -> bool {
    !(dst.is_loopback()
        || dst.is_unspecified()
        || dst.is_multicast()
        || is_link_local(dst)
        || dst.to_ipv4_mapped().is_some()
        // ::/96, the IPv4-compatible addresses (RFC 4291 section 2.5.5.1).
        || u128::from(dst) >> 32 == 0)
}

fn is_link_local(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

pub(super) use vswitch::wire::ipv6::in_prefix as in_net6;
