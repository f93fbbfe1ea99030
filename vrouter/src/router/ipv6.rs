//! The router's IPv6, on dual-stack legs: neighbour discovery for its own addresses
//! (the leg's `gateway6` and its link-local address), router advertisements on
//! request and periodically (RFC 4861) with the prefix, so hosts autoconfigure
//! (SLAAC, RFC 4862), and pings to its addresses. It does not route IPv6 between
//! subnets yet.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use vswitch::frame::VNET_HDR_LEN;
use vswitch::wire::ethernet::{
    EthernetFrame, EthernetRepr, ETHERTYPE_IPV6, HEADER_LEN as ETH_HDR_LEN,
};
use vswitch::wire::icmpv6::{
    self, Icmpv6Packet, Ipv6Repr, RaRepr, ALL_NODES, ECHO_REPLY, ECHO_REQUEST, NA_LEN,
    ND_HOP_LIMIT, NEIGHBOR_ADVERT, NEIGHBOR_SOLICIT, NS_LEN, RA_LEN, ROUTER_ADVERT, ROUTER_SOLICIT,
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

impl Router {
    /// An IPv6 frame on leg `iface`: answered if it is for the router, dropped and
    /// counted otherwise.
    pub(super) fn ipv6(&mut self, iface: usize, frame: &mut [u8], _now: Instant) -> Action {
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
        let ours = dst == gw6 || dst == lla;
        let solicited_node = dst.segments()[..6] == [0xff02, 0, 0, 0, 0, 1];
        if next != icmpv6::NEXT_HEADER {
            return if dst.is_multicast() {
                // Multicast listener reports (behind a hop-by-hop header) and the
                // like: a router that does not route multicast lets them be.
                Action::Done
            } else if ours {
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
        match kind {
            NEIGHBOR_SOLICIT => {
                let Some(target) = target.filter(|t| *t == gw6 || *t == lla) else {
                    // Another host's resolution or duplicate address detection.
                    return Action::Done;
                };
                // To the solicitor; to all nodes when it asked from :: (its own DAD).
                let (to, to_mac) = if src.is_unspecified() {
                    (ALL_NODES, icmpv6::multicast_mac(ALL_NODES))
                } else {
                    (src, sender)
                };
                self.send_nd(iface, me.mac, target, to, to_mac, NA_LEN, |m| {
                    icmpv6::emit_na(m, target, me.mac, !src.is_unspecified())
                });
                self.stats.na_sent += 1;
                Action::Done
            }
            ROUTER_SOLICIT => {
                self.advertise(iface);
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
                msg[0] = ECHO_REPLY;
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
        let net = Ipv6Addr::from(
            u128::from(gw6) & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0),
        );
        let ra = RaRepr {
            mac: me.mac,
            mtu: self.mtu(iface),
            prefix: net,
            prefix_len: prefix,
            autonomous: prefix == 64,
            router_lifetime: ROUTER_LIFETIME,
        };
        let lla = icmpv6::link_local(me.mac);
        self.send_nd(
            iface,
            me.mac,
            lla,
            ALL_NODES,
            icmpv6::multicast_mac(ALL_NODES),
            RA_LEN,
            |m| ra.emit(m),
        );
        self.stats.ra_sent += 1;
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
