//! Per-port counters and the reasons a frame can be dropped.

/// Defines a drop-reason enum from one list of `Variant => "name"` (with doc comments):
/// the enum (`repr(usize)`, so a reason indexes its counter), `ALL` in declaration
/// order, `COUNT`, and `name()`, the word `show drops` prints. The datapath's, the
/// router's and the VXLAN endpoint's reasons are all made by it.
#[macro_export]
macro_rules! drop_reasons {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
        }

        impl $name {
            /// Every reason, in declaration order (a reason's index is its value).
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
            pub const COUNT: usize = Self::ALL.len();

            /// The name `show drops` prints.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// Why a frame was dropped. Every drop increments exactly one of these on one port.
    pub enum DropReason {
        /// Shorter than an Ethernet header (or than the virtio-net header in front of it).
        Runt => "runt",
        /// Longer than the bridge's MTU allows, and not a GSO super-frame.
        Oversize => "oversize",
        /// A virtio-net header that does not describe the frame (unknown GSO type,
        /// checksum offsets past the end, GSO with no segment size).
        BadVnetHeader => "bad_vnet_header",
        /// Source MAC is multicast, broadcast or all-zero: no real NIC sends that.
        BadSourceMac => "bad_source_mac",
        /// The destination was learned on the ingress port itself: the segment has it already.
        DestinationOnIngress => "destination_on_ingress",
        /// The egress port's queue was full (EAGAIN); dropped rather than stalling the loop.
        EgressFull => "egress_full",
        /// The egress port refused the frame with an error other than "full".
        EgressError => "egress_error",
        /// The egress port cannot take a GSO super-frame (no vnet-header support).
        EgressNoGso => "egress_no_gso",
        /// The egress device is administratively down (the container set its link down).
        EgressLinkDown => "egress_link_down",
        /// IEEE 802.1D reserved link-local group (01:80:c2:00:00:0x: STP, LACP, LLDP,
        /// 802.1X, pause): a bridge consumes these and never forwards them.
        LinkLocalGroup => "link_local_group",
        /// A frame still circling between internal ports after many hand-overs.
        InternalLoop => "internal_loop",
        /// Lost to the port's impairment (`loss=`), or its hold-back queue was full.
        Impaired => "impaired",
        /// A GSO super-frame whose metadata does not describe it: a segment size under
        /// [`crate::frame::MIN_GSO_SIZE`], more than [`crate::frame::MAX_GSO_SEGS`]
        /// segments, a header length or checksum offsets that do not match its headers, or
        /// a GSO type that does not match its protocol (the kernel drops the like from
        /// virtio-net).
        BadGso => "bad_gso",
        /// From a guarded port (`spoof_check`), a frame with another source MAC (or ARP
        /// sender MAC) than the port's own.
        SpoofedMac => "spoofed_mac",
        /// From a guarded port, ARP or IPv4 from an address other than the port's own (the
        /// gateway's, another container's).
        SpoofedIp => "spoofed_ip",
        /// From a guarded port, ARP or IPv4 that port security cannot read, so cannot
        /// vouch for: ARP for another hardware type or cut short, an IPv4 header that
        /// does not parse, a VLAN tag cut short. Linux would read some of these (ARP of
        /// hardware type 6): dropped, not let through unchecked.
        Unverifiable => "unverifiable",
        /// A source MAC that is another port's own (a static FDB entry: tapnet's TAPs and
        /// router legs), arriving elsewhere: from a VXLAN peer, say. Not learned, dropped.
        StaticMacConflict => "static_mac_conflict",
        /// From a guarded port, a router advertisement or a redirect: tapnet is the
        /// router, and a rogue one would take the other containers' IPv6 (RA guard,
        /// RFC 6105).
        RaGuard => "ra_guard",
        /// Read by another datapath thread than the first, a frame only the first may
        /// handle (a flood, one for the router or VXLAN, from a source not learned yet)
        /// found no buffer for it on the first thread: its pool was taken by frames
        /// waiting for handlers (workers otherwise wait rather than drop).
        HandoffFull => "handoff_full",
    }
}

impl DropReason {
    /// Why a frame a port's write refused is dropped, from the `errno` the write gave
    /// (`write(2)`'s or io_uring's): EAGAIN, the port's queue is full; EIO, a TAP whose
    /// link the container set down (`tun_get_user`); anything else, an error.
    pub fn of_write_error(errno: Option<i32>) -> DropReason {
        match errno {
            Some(libc::EAGAIN) => DropReason::EgressFull,
            Some(libc::EIO) => DropReason::EgressLinkDown,
            _ => DropReason::EgressError,
        }
    }
}

/// Traffic and drop counters of one port. Received and sent are from tapnet's side:
/// `rx` is what the port handed to tapnet, `tx` what tapnet wrote to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: [u64; DropReason::COUNT],
    /// Copies a slow capture reader could not take (the frames themselves went on).
    pub capture_dropped: u64,
}

impl PortCounters {
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Adds `other`'s counts (another datapath thread's, for the same port).
    pub fn add(&mut self, other: &PortCounters) {
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
        self.tx_packets += other.tx_packets;
        self.tx_bytes += other.tx_bytes;
        for (a, b) in self.drops.iter_mut().zip(other.drops.iter()) {
            *a += b;
        }
        self.capture_dropped += other.capture_dropped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_slot_and_name() {
        let mut c = PortCounters::default();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            c.drop(*r);
        }
        assert_eq!(c.total_drops(), DropReason::COUNT as u64);
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }
}
