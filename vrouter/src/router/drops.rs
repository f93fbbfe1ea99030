//! Why the router drops what it drops, and what it counts. Drops are values
//! ([`crate::Action::Drop`]): [`Router::handle`] counts them, `trace` only shows them.

use super::{Action, Router};

vswitch::drop_reasons! {
    /// Why the router did not forward a frame.
    pub enum RouterDrop {
        /// Too short for the headers it claims.
        Truncated => "truncated",
        /// An IPv4 header that does not parse (version, lengths).
        BadIpHeader => "bad_ip_header",
        BadIpChecksum => "bad_ip_checksum",
        /// TTL ran out here (an ICMP time-exceeded went back).
        TtlExceeded => "ttl_exceeded",
        /// No route to the destination (an ICMP network-unreachable went back).
        NoRoute => "no_route",
        /// The next hop never answered ARP (an ICMP host-unreachable went back).
        NeighborUnresolved => "neighbor_unresolved",
        /// Too many frames already waiting for ARP answers.
        HoldQueueFull => "hold_queue_full",
        /// Neither ARP nor IPv4 (IPv6 comes later).
        UnsupportedEthertype => "unsupported_ethertype",
        /// A unicast frame for another MAC that flooded onto the router's port.
        NotForRouter => "not_for_router",
        /// Addressed to the router but not something it serves (only ping is).
        ToRouterUnsupported => "to_router_unsupported",
        /// Sent to a subnet's broadcast or network address, or from a multicast,
        /// broadcast or unspecified source: not routed.
        NotRoutable => "not_routable",
        /// No free port to translate a hairpin service connection's source to.
        NatPortsExhausted => "nat_ports_exhausted",
        /// No free buffer for a frame the router or its proxy made.
        NoBuffer => "no_buffer",
        /// Larger than the outgoing bridge's MTU (fragmentation-needed went back if DF).
        TooBig => "too_big",
        /// IPv6, which this router does not route yet (the containers' own neighbour
        /// discovery and multicast listener reports, mostly).
        Ipv6NotRouted => "ipv6_not_routed",
        /// IPv4 or ARP on an IPv6-only bridge (one with no `subnet`): the router has
        /// no IPv4 address there.
        NoIpv4 => "no_ipv4",
        /// A source no container may use here: loopback, 0/8, link-local, the subnet's
        /// network or broadcast address, the router's own addresses, or one that is not on the ingress
        /// bridge's subnet (reverse-path check).
        MartianSource => "martian_source",
        /// For a next hop not yet known while its leg already asks ARP for
        /// [`crate::neighbor::INCOMPLETE_MAX`] others (dropped without another request).
        NeighborTableBusy => "neighbor_table_busy",
        /// An IPv6 header that does not parse, or whose payload is cut short.
        BadIpv6Header => "bad_ipv6_header",
        /// ICMPv6 with a wrong checksum, or neighbour discovery that RFC 4861 says to
        /// drop: cut short, an option of length 0, a code other than 0.
        BadIcmpv6 => "bad_icmpv6",
        /// Neighbour discovery with a hop limit other than 255: it crossed a router,
        /// so it is not from this link (RFC 4861 section 6.1).
        NdpHopLimit => "ndp_hop_limit",
        /// A router advertisement from a container: tapnet is the router here.
        RaFromContainer => "ra_from_container",
        /// An IPv6 packet to route whose extension headers run past
        /// [`vswitch::wire::ipv6::MAX_EXT_HEADERS`] or are cut short.
        Ipv6ExtHeaders => "ipv6_ext_headers",
        /// An IPv6 next hop that never answered the router's neighbour solicitations
        /// (an ICMPv6 address unreachable went back).
        Neighbor6Unknown => "neighbor6_unknown",
        /// UDP over IPv6 with a checksum of zero for a service VIP or one of its flows:
        /// IPv6 forbids it (RFC 8200 section 8.1), so it is not translated.
        Udp6ZeroChecksum => "udp6_zero_checksum",
    }
}

impl RouterDrop {
    /// The ICMP error the router sends back for this drop (rate permitting), for
    /// `trace` to say.
    pub fn answer(self) -> Option<&'static str> {
        match self {
            RouterDrop::TtlExceeded => Some("time-exceeded goes back to the sender"),
            RouterDrop::NoRoute => Some("net-unreachable goes back to the sender"),
            RouterDrop::NeighborUnresolved => Some("host-unreachable goes back to the sender"),
            RouterDrop::TooBig => Some(
                "a DF (or IPv6) sender gets fragmentation-needed (packet too big) with the MTU that fits",
            ),
            RouterDrop::Neighbor6Unknown => {
                Some("address-unreachable goes back to the sender")
            }
            RouterDrop::ToRouterUnsupported => {
                Some("UDP gets port-unreachable; nothing else is served here")
            }
            _ => None,
        }
    }
}

/// What the router did, counted since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterStats {
    pub routed: u64,
    pub translated: u64,
    pub arp_replies: u64,
    pub arp_requests: u64,
    pub echo_replies: u64,
    pub icmp_errors: u64,
    pub icmp_rate_limited: u64,
    /// ARP requests not sent: more than [`super::arp::ARP_RATE`] a second were due.
    pub arp_rate_limited: u64,
    pub outbox_full: u64,
    /// Packets routed on that had to be cut into fragments for the outgoing bridge.
    pub fragmented: u64,
    /// Resets sent to the ends of TCP flows dropped (idle past their timeout, or
    /// evicted for room) while they still held them.
    pub flow_resets: u64,
    /// Neighbour advertisements sent for the router's IPv6 addresses.
    pub na_sent: u64,
    /// Router advertisements sent: solicited, and every [`super::ipv6::RA_EVERY`].
    pub ra_sent: u64,
    /// Neighbour solicitations sent for IPv6 next hops.
    pub ns_sent: u64,
    /// IPv6 neighbours not learned: the table held [`super::ipv6::NEIGHBORS6_MAX`], or
    /// their MAC [`super::ipv6::NEIGHBORS6_PER_MAC`] addresses already.
    pub neighbors6_full: u64,
    /// Advertisements that would have moved a remembered IPv6 address to another MAC.
    pub neighbors6_moved_refused: u64,
    /// Router solicitations not answered: one came less than
    /// [`super::ipv6::MIN_DELAY_BETWEEN_RAS`] before on the leg.
    pub ra_rate_limited: u64,
    /// Drops, indexed by [`RouterDrop`].
    pub drops: [u64; RouterDrop::COUNT],
}

impl RouterStats {
    pub fn dropped(&self, reason: RouterDrop) -> u64 {
        self.drops[reason as usize]
    }
}

impl Router {
    /// Counts what an action dropped.
    pub(super) fn counted(&mut self, action: Action) -> Action {
        if let Action::Drop(reason) = action {
            self.count_drop(reason);
        }
        action
    }

    pub(super) fn count_drop(&mut self, reason: RouterDrop) {
        self.stats.drops[reason as usize] += 1;
    }

    /// A frame the datapath could not even keep while its next hop is resolved.
    pub fn hold_queue_full(&mut self) {
        self.count_drop(RouterDrop::HoldQueueFull);
    }

    /// A frame lost for want of a buffer.
    pub fn no_buffer(&mut self) {
        self.count_drop(RouterDrop::NoBuffer);
    }
}
