//! The router's ICMP (RFC 792, RFC 1812 section 4.3): echo replies for its own
//! addresses, and errors back to senders, rate-limited as Linux does.

use std::time::Instant;

use vswitch::frame::VNET_HDR_LEN;
use vswitch::wire::ethernet::{EthernetFrame, EthernetRepr, ETHERTYPE_IPV4, HEADER_LEN};
use vswitch::wire::icmpv4::{self, IcmpPacket, IcmpRepr};
use vswitch::wire::ipv4::Ipv4Packet;
use vswitch::wire::{nat, PROTO_ICMP, PROTO_UDP};
use vswitch::Mac;

use super::{clear_vnet, Action, Router, RouterDrop, DEFAULT_TTL};
use crate::nat::FlowKey;

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Clone)]
pub(super) struct TokenBucket {
    rate: u32,
    burst: u32,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    pub(super) fn new(rate: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            tokens: burst as f64,
            last: None,
        }
    }

    pub(super) fn take(&mut self, now: Instant) -> bool {
        let elapsed = self
            .last
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.last = Some(now);
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.burst as f64);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// ICMP errors a second to any one address, and the burst above that: one sender
/// flooding packets that earn errors uses up its own share, not everyone's.
pub(super) const PER_SENDER_RATE: u32 = 10;
pub(super) const PER_SENDER_BURST: u32 = 10;
/// Senders whose share is remembered at most; past it, the shares start over.
const PER_SENDER_MAX: usize = 1024;

impl Router {
    /// Whether an ICMP (or ICMPv6) error may go to `to` now: its own share first, then
    /// the router's whole budget (counted as rate-limited either way).
    pub(super) fn may_send_error(&mut self, to: std::net::IpAddr, now: Instant) -> bool {
        if !self.icmp_per_sender.contains_key(&to) && self.icmp_per_sender.len() >= PER_SENDER_MAX {
            self.icmp_per_sender.clear();
        }
        let own = self
            .icmp_per_sender
            .entry(to)
            .or_insert_with(|| TokenBucket::new(PER_SENDER_RATE, PER_SENDER_BURST))
            .take(now);
        if !own || !self.icmp.take(now) {
            self.stats.icmp_rate_limited += 1;
            return false;
        }
        true
    }
}

/// An ICMP error to send: type, code, and the header's last four bytes (the next-hop
/// MTU for fragmentation-needed).
#[derive(Debug, Clone, Copy)]
pub(super) struct IcmpError {
    pub kind: u8,
    pub code: u8,
    pub rest: u32,
    /// For a packet the router translated: the flow as its sender sent it, which the
    /// quote is translated back to (and whose source the error goes to).
    pub sent_as: Option<FlowKey>,
}

impl IcmpError {
    pub(super) const NET_UNREACHABLE: IcmpError = IcmpError::unreachable(icmpv4::UNREACH_NET);
    pub(super) const HOST_UNREACHABLE: IcmpError = IcmpError::unreachable(icmpv4::UNREACH_HOST);
    pub(super) const PORT_UNREACHABLE: IcmpError = IcmpError::unreachable(icmpv4::UNREACH_PORT);
    pub(super) const TIME_EXCEEDED: IcmpError = IcmpError {
        kind: icmpv4::TIME_EXCEEDED,
        code: 0,
        rest: 0,
        sent_as: None,
    };

    const fn unreachable(code: u8) -> IcmpError {
        IcmpError {
            kind: icmpv4::DEST_UNREACHABLE,
            code,
            rest: 0,
            sent_as: None,
        }
    }

    /// The same error about a packet translated from `sent_as`.
    pub(super) fn quoting(self, sent_as: Option<FlowKey>) -> IcmpError {
        IcmpError { sent_as, ..self }
    }

    /// Fragmentation needed and DF set, with the MTU that fits (RFC 1191).
    pub(super) fn frag_needed(mtu: u32) -> IcmpError {
        IcmpError {
            rest: mtu.min(0xffff),
            ..IcmpError::unreachable(icmpv4::UNREACH_FRAG_NEEDED)
        }
    }
}

/// Who sent `frame` (its source MAC), if it has an Ethernet header.
fn sender_of(frame: &[u8]) -> Option<Mac> {
    EthernetFrame::new_checked(frame.get(VNET_HDR_LEN..)?).map(|e| e.src())
}

impl Router {
    /// Traffic to one of the router's own addresses: answer ping, refuse the rest.
    pub(super) fn addressed_to_router(
        &mut self,
        iface: usize,
        frame: &mut [u8],
        now: Instant,
    ) -> Action {
        let me = self.ifaces[iface].mac;
        let (proto, echo) = {
            let Some(ip) = frame
                .get(VNET_HDR_LEN + HEADER_LEN..)
                .and_then(|b| Ipv4Packet::new_checked(b).ok())
            else {
                return Action::Drop(RouterDrop::BadIpHeader);
            };
            let icmp = IcmpPacket::new_checked(ip.payload());
            (
                ip.protocol(),
                icmp.map(|i| i.kind() == icmpv4::ECHO_REQUEST),
            )
        };
        match (proto, echo) {
            (PROTO_ICMP, Some(true)) => {}
            (PROTO_ICMP, None) => return Action::Drop(RouterDrop::Truncated),
            (PROTO_UDP, _) => {
                self.icmp_error(iface, frame, IcmpError::PORT_UNREACHABLE, now);
                return Action::Drop(RouterDrop::ToRouterUnsupported);
            }
            _ => return Action::Drop(RouterDrop::ToRouterUnsupported),
        }
        let mut eth =
            EthernetFrame::new_checked(&mut frame[VNET_HDR_LEN..]).expect("checked above");
        let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
        // Echo request -> echo reply, in place: swap the addresses, reset the TTL, fix
        // both checksums. The ICMP checksum is computed afresh, so a checksum the
        // sender left to offload does not matter.
        let (src, dst) = (ip.src(), ip.dst());
        ip.set_src(dst);
        ip.set_dst(src);
        ip.set_ttl(DEFAULT_TTL);
        ip.fill_checksum();
        let mut icmp = IcmpPacket::new_checked(ip.payload_mut()).expect("checked above");
        icmp.set_kind(icmpv4::ECHO_REPLY);
        icmp.fill_checksum();
        let requester = eth.src();
        eth.set_dst(requester);
        eth.set_src(me);
        clear_vnet(frame);
        self.stats.echo_replies += 1;
        Action::Send { iface }
    }

    /// A packet whose TTL runs out here: time-exceeded back to its sender.
    pub(super) fn ttl_expired(
        &mut self,
        iface: usize,
        frame: &[u8],
        sent_as: Option<FlowKey>,
        now: Instant,
    ) -> Action {
        let err = IcmpError::TIME_EXCEEDED.quoting(sent_as);
        self.icmp_error(iface, frame, err, now);
        Action::Drop(RouterDrop::TtlExceeded)
    }

    /// A kept frame whose next hop never answered: count it, and tell its sender
    /// (`sender` on interface `ingress`) that the host is unreachable.
    pub fn unresolved(&mut self, ingress: usize, sender: Mac, frame: &[u8], now: Instant) {
        self.count_drop(RouterDrop::NeighborUnresolved);
        if sender != Mac::BROADCAST {
            self.icmp_error_to(ingress, sender, frame, IcmpError::HOST_UNREACHABLE, now);
        }
    }

    /// Queues an ICMP error about `frame` (as received on `iface`) back to its sender,
    /// unless the rules or the rate limit say not to.
    pub(super) fn icmp_error(&mut self, iface: usize, frame: &[u8], err: IcmpError, now: Instant) {
        if let Some(sender) = sender_of(frame) {
            self.icmp_error_to(iface, sender, frame, err, now);
        }
    }

    /// [`Router::icmp_error`] to a given MAC. Never about a non-first fragment, an
    /// ICMP error, or a packet from an address no one could answer (RFC 1812 section
    /// 4.3.2.7); at most `icmp_rate` a second.
    pub(super) fn icmp_error_to(
        &mut self,
        iface: usize,
        requester: Mac,
        frame: &[u8],
        err: IcmpError,
        now: Instant,
    ) {
        let Some(orig) = frame.get(VNET_HDR_LEN + HEADER_LEN..) else {
            return;
        };
        let mut quote = [0u8; icmpv4::MAX_QUOTE];
        let quote = {
            let q = icmpv4::quote(orig);
            quote[..q.len()].copy_from_slice(q);
            &mut quote[..q.len()]
        };
        if let Some((src, dst)) = err.sent_as.and_then(|k| k.as_v4()) {
            nat::rewrite_quoted_v4(quote, src, dst);
        }
        let Ok(ip) = Ipv4Packet::new_quoted(&*quote) else {
            return;
        };
        let src = ip.src();
        if ip.frag_offset() != 0 || src.is_unspecified() || src.is_broadcast() || src.is_multicast()
        {
            return;
        }
        if ip.protocol() == PROTO_ICMP
            && IcmpPacket::new_checked(ip.payload()).is_some_and(|i| icmpv4::is_error(i.kind()))
        {
            return;
        }
        if !self.may_send_error(src.into(), now) {
            return;
        }
        let me = self.ifaces[iface].clone();
        let Some(me_ip) = me.ip else { return };
        let queued = self.queue(iface, |buf| {
            let eth = &mut buf[VNET_HDR_LEN..];
            EthernetRepr {
                dst: requester,
                src: me.mac,
                ethertype: ETHERTYPE_IPV4,
            }
            .emit(eth);
            let icmp = IcmpRepr {
                kind: err.kind,
                code: err.code,
                rest: err.rest.to_be_bytes(),
                data: quote,
            };
            let n = icmp.emit(me_ip, src, &mut eth[HEADER_LEN..])?;
            Some(VNET_HDR_LEN + HEADER_LEN + n)
        });
        if !queued {
            return;
        }
        self.stats.icmp_errors += 1;
    }
}
