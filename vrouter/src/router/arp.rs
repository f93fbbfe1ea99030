//! The router's ARP (RFC 826): answering for its gateways and VIPs, learning only
//! what a router should, and asking for next hops at a bounded rate.

use std::net::Ipv4Addr;
use std::time::Instant;

use vswitch::frame::VNET_HDR_LEN;
use vswitch::wire::arp::{ArpPacket, ArpRepr, OP_REPLY, OP_REQUEST, PACKET_LEN};
use vswitch::wire::ethernet::{EthernetFrame, EthernetRepr, ETHERTYPE_ARP, HEADER_LEN};
use vswitch::Mac;

use super::{Action, Router, RouterDrop};

/// ARP requests per second the router sends at most, and the burst above that.
pub(super) const ARP_RATE: u32 = 200;
pub(super) const ARP_BURST: u32 = 100;

impl Router {
    /// An ARP packet in `frame` (virtio-net header, Ethernet) that arrived on `iface`:
    /// a request for one of the router's addresses becomes the reply, in place.
    pub(super) fn arp(&mut self, iface: usize, frame: &mut [u8], now: Instant) -> Action {
        let me = self.ifaces[iface].clone();
        let Some(mut eth) = EthernetFrame::new_checked(&mut frame[VNET_HDR_LEN..]) else {
            return Action::Drop(RouterDrop::Truncated);
        };
        let Some(arp) = ArpPacket::new_checked(eth.payload()) else {
            // Short, or not IPv4 over Ethernet.
            return Action::Drop(if eth.payload().len() < PACKET_LEN {
                RouterDrop::Truncated
            } else {
                RouterDrop::UnsupportedEthertype
            });
        };
        let (op, sha, spa, tpa) = (
            arp.operation(),
            arp.sender_mac(),
            arp.sender_ip(),
            arp.target_ip(),
        );
        // A sender worth remembering: a unicast MAC at an ordinary address of this
        // leg's subnet, never the router's own addresses, the subnet's network or
        // broadcast address, or 0.0.0.0 (an RFC 5227 probe).
        let sender_ok = me.on_link(spa)
            && !me.is_network_or_broadcast(spa)
            && !self.is_own_ip(spa)
            && !sha.is_multicast()
            && !sha.is_zero();
        let answers_for = me.ip == Some(tpa)
            || (me.on_link(tpa)
                && self
                    .services
                    .iter()
                    .any(|s| s.vip.ip() == std::net::IpAddr::V4(tpa)));
        if !answers_for {
            // Not for us: only refresh what we know (gratuitous ARP, a moved address).
            if sender_ok {
                self.neighbors.refresh(iface, spa, sha, now);
            }
            return Action::Done;
        }
        // Learn only what a router should: an answer to its own request, or the
        // sender of a request aimed at it (which it answers).
        if sender_ok {
            let waited_for = if op == OP_REQUEST {
                self.neighbors.learn_request(iface, spa, sha, now)
            } else {
                self.neighbors.confirm(iface, spa, sha, now)
            };
            self.learned |= waited_for;
        }
        if op != OP_REQUEST {
            return Action::Done;
        }
        // Turn the request into the reply, in place.
        eth.set_dst(sha);
        eth.set_src(me.mac);
        ArpRepr {
            operation: OP_REPLY,
            sender_mac: me.mac,
            sender_ip: tpa,
            target_mac: sha,
            target_ip: spa,
        }
        .emit(eth.payload_mut());
        self.stats.arp_replies += 1;
        Action::Send { iface }
    }

    /// Queues an ARP request for `target` out of `iface`.
    pub fn arp_request(&mut self, iface: usize, target: Ipv4Addr) {
        let me = self.ifaces[iface].clone();
        // A leg on an IPv6-only bridge has nothing to ask from.
        let Some(me_ip) = me.ip else { return };
        let queued = self.queue(iface, |buf| {
            let eth = &mut buf[VNET_HDR_LEN..];
            EthernetRepr {
                dst: Mac::BROADCAST,
                src: me.mac,
                ethertype: ETHERTYPE_ARP,
            }
            .emit(eth);
            ArpRepr {
                operation: OP_REQUEST,
                sender_mac: me.mac,
                sender_ip: me_ip,
                target_mac: Mac([0; 6]),
                target_ip: target,
            }
            .emit(&mut eth[HEADER_LEN..]);
            Some(VNET_HDR_LEN + HEADER_LEN + PACKET_LEN)
        });
        if !queued {
            return;
        }
        self.stats.arp_requests += 1;
    }

    /// The ARP request rate limit: true if a request may go now.
    pub(super) fn arp_allowed(&mut self, now: Instant) -> bool {
        if self.arp_rate.take(now) {
            true
        } else {
            self.stats.arp_rate_limited += 1;
            false
        }
    }
}
