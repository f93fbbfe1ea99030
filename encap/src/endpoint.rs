//! The tunnel endpoint's state and decisions, with no IO (RFC 7348): the peers, the
//! VNIs served and the MACs learned behind each peer, which datagrams are accepted,
//! and where a frame leaving by a VNI port goes (one peer, or every peer: head-end
//! replication), with the MTU and GSO checks that come first. Time is passed in.
//! [`crate::Vtep`] is the IO shell around it: sockets, UDP GSO, the underlay
//! capture. Both sending and `tapnet trace` call [`Endpoint::egress`].

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use vswitch::frame::{VnetHdr, VLAN_TAG_LEN, VNET_HDR_LEN};
use vswitch::gro::Checksums;
use vswitch::wire::arp::{ArpPacket, OP_REQUEST};
use vswitch::wire::ethernet::{
    EthernetFrame, ETHERTYPE_ARP, ETHERTYPE_IPV4, HEADER_LEN as ETH_HDR_LEN,
};
use vswitch::wire::ipv4::Ipv4Packet;
use vswitch::wire::vxlan::{self, Vxlan};
use vswitch::{Fdb, Mac, PortId};

use crate::store::{Registration, RemotePort, StoreChange};

use crate::offload::{self, Cut, OffloadError};

vswitch::drop_reasons! {
    /// Why a frame or datagram went no further.
    pub enum VtepDrop {
        /// A datagram from an address that is not a peer.
        NotPeer => "not_peer",
        /// Shorter than a VXLAN header and an inner Ethernet header.
        Truncated => "truncated",
        /// Flags other than 0x08.
        BadFlags => "bad_flags",
        /// A VNI no bridge here has.
        UnknownVni => "unknown_vni",
        /// An inner frame larger than the bridge's MTU allows (it would need fragments).
        /// A TCP/IPv4 super-frame whose checksums are valid or partial is not one: it
        /// goes on as a GSO frame (see [`PeerStats::rx_gso_frames`]).
        Oversize => "oversize",
        /// A super-frame this software cannot cut (UDP).
        UnsupportedGso => "unsupported_gso",
        /// Headers that do not match what the virtio-net header says.
        Malformed => "malformed",
        /// No free buffer for an arriving datagram.
        NoBuffer => "no_buffer",
        /// Dropped by the kernel before tapnet read it: the underlay socket's receive
        /// buffer was full. Counted from the kernel's own count (`SO_MEMINFO`'s
        /// `SK_MEMINFO_DROPS`), read once a second.
        SocketOverflow => "socket_overflow",
        /// The underlay socket refused to send a batch (one datagram, or up to 64
        /// sent together) to one peer.
        SendError => "send_error",
    }
}

impl From<OffloadError> for VtepDrop {
    fn from(e: OffloadError) -> VtepDrop {
        match e {
            OffloadError::UnsupportedGso => VtepDrop::UnsupportedGso,
            OffloadError::Malformed => VtepDrop::Malformed,
        }
    }
}

/// What went to and came from one peer. Packets are VXLAN datagrams; bytes count
/// the VXLAN header and the inner frame (no outer IP or UDP header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Batches of datagrams sent to this peer as one UDP GSO send (`UDP_SEGMENT`):
    /// a super-frame's segments, or frames of one size that left in the same turn
    /// of the datapath; each also counts its datagrams in `tx_packets`.
    pub tx_gso_sends: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_errors: u64,
    /// Inner TCP or UDP packets (over IPv4 or IPv6) from this peer whose checksum the sending kernel
    /// left partial (CHECKSUM_PARTIAL: the field holds the pseudo-header sum), handed
    /// on marked NEEDS_CSUM rather than as checksum errors. A kernel VXLAN host over a
    /// veth with its default offloads sends most of its TCP and UDP like this.
    pub rx_partial_checksum: u64,
    /// Inner TCP or UDP packets (over IPv4 or IPv6) from this peer whose IP, TCP or UDP checksum was
    /// neither valid nor partial: passed on unchanged, for the receiver to drop.
    pub rx_bad_checksum: u64,
    /// Inner TCP super-frames from this peer (larger than the VNI's MTU: a sender's
    /// TSO skb that a kernel VXLAN device over a veth sends whole), handed on as GSO
    /// frames ([`offload::rx_super_frame`]). Each is also one `rx_partial_checksum`.
    pub rx_gso_frames: u64,
    /// Inner TCP segments from this peer merged into the one before them (GRO in
    /// software, before the container's TAP): a run of N segments counts N - 1.
    pub rx_gro_merged: u64,
    /// Of `rx_gro_merged`, the segments over IPv6 (merged into GSO_TCPV6 frames).
    pub rx_gro_merged_v6: u64,
}

#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub stats: PeerStats,
    /// Known from the store (etcd), not from the lab file's `peers`.
    pub from_store: bool,
    /// False for the slot of a store host that left (kept, so that the other peers'
    /// indices hold; a host that joins later takes it).
    pub live: bool,
    /// The container ports this host registered (store hosts only).
    pub registered: Vec<RemotePort>,
}

/// One VNI: its bridge's port and MTU, and the MACs learned behind each peer (the
/// peer's index).
pub struct Segment {
    pub vni: u32,
    pub port: PortId,
    pub mtu: u32,
    pub remote: Fdb<usize>,
    /// Containers other hosts registered in the store on this VNI, by IPv4 address:
    /// their MAC and the peer behind which they are. ARP requests for them are
    /// answered here ([`Endpoint::suppress_arp`]).
    pub registered: HashMap<Ipv4Addr, (Mac, usize)>,
    /// Static entries in `remote` that came from the store: at most `remote_max`.
    pub registered_macs: usize,
}

/// An accepted datagram: inject its inner frame at `port` (a bridge of `mtu`); it
/// came from peer `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub port: PortId,
    pub peer: usize,
    pub mtu: u32,
}

/// Which peers a frame goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Targets {
    /// The one learned to have the destination MAC.
    One(usize),
    /// Every peer: the destination is multicast, broadcast, or not learned.
    All,
}

/// Where and how a frame leaving by a VNI port goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Egress {
    pub vni: u32,
    pub targets: Targets,
    /// The inner flow's hash: which source port (sender) it leaves from.
    pub flow: u64,
    /// For a super-frame: how it is cut (each segment fits the VNI's MTU).
    pub cut: Option<Cut>,
}

impl Targets {
    /// The peers' indices, of `count` peers.
    pub fn peers(self, count: usize) -> Range<usize> {
        match self {
            Targets::One(p) => p..p + 1,
            Targets::All => 0..count,
        }
    }
}

impl Egress {
    /// The peers' indices, of `count` peers.
    pub fn peers(&self, count: usize) -> Range<usize> {
        self.targets.peers(count)
    }
}

/// The tunnel endpoint's tables and counters.
pub struct Endpoint {
    /// The lab file's peers first, then the store's.
    peers: Vec<Peer>,
    static_peers: usize,
    segments: Vec<Segment>,
    drops: [u64; VtepDrop::COUNT],
    remote_max: usize,
    remote_aging: Duration,
    /// ARP requests answered for containers the store knows, instead of flooded.
    pub arp_suppressed: u64,
    /// Registered container MACs not taken because their VNI's table held
    /// `remote_max` registered MACs already (they are learned from traffic instead).
    pub registered_over_limit: u64,
    /// Registered MACs or addresses not taken because another host registered them
    /// first.
    pub registered_conflicts: u64,
}

impl Endpoint {
    /// An endpoint for `peers`, remembering at most `remote_max` MACs per VNI for
    /// `remote_aging` each.
    pub fn new(peers: &[SocketAddr], remote_max: usize, remote_aging: Duration) -> Endpoint {
        Endpoint {
            peers: peers
                .iter()
                .map(|&addr| Peer {
                    addr,
                    stats: PeerStats::default(),
                    from_store: false,
                    live: true,
                    registered: Vec::new(),
                })
                .collect(),
            static_peers: peers.len(),
            segments: Vec::new(),
            drops: [0; VtepDrop::COUNT],
            remote_max,
            remote_aging,
            arp_suppressed: 0,
            registered_over_limit: 0,
            registered_conflicts: 0,
        }
    }

    /// Applies what the store says changed, host by host: the work is that of the
    /// hosts that changed, not of every host (a join among 1,000 costs one host's
    /// ports). `own` is this endpoint's address, never a peer of its own.
    pub fn apply_store(&mut self, changes: &[StoreChange], own: SocketAddr, now: Instant) {
        for change in changes {
            match change {
                StoreChange::Put(r) => self.store_put(r, own, now),
                StoreChange::Gone(vtep) => self.store_gone(*vtep),
                StoreChange::Reset(hosts) => {
                    let leaving: Vec<SocketAddr> = self.peers[self.static_peers..]
                        .iter()
                        .filter(|p| p.live && !hosts.iter().any(|h| h.vtep == p.addr))
                        .map(|p| p.addr)
                        .collect();
                    for vtep in leaving {
                        self.store_gone(vtep);
                    }
                    for h in hosts {
                        self.store_put(h, own, now);
                    }
                }
            }
        }
    }

    /// A store host registered (or changed) what it has: a peer (a static peer or
    /// this endpoint itself are not made twice, though their ports are taken), with
    /// its ports as static remote MACs and ARP answers per VNI.
    fn store_put(&mut self, r: &Registration, own: SocketAddr, now: Instant) {
        if r.vtep == own {
            return;
        }
        let at = match self.peers.iter().position(|p| p.live && p.addr == r.vtep) {
            Some(at) if self.peers[at].registered == r.ports => return,
            Some(at) => {
                self.forget_registered(at);
                at
            }
            None => {
                let fresh = Peer {
                    addr: r.vtep,
                    stats: PeerStats::default(),
                    from_store: true,
                    live: true,
                    registered: Vec::new(),
                };
                match self.peers.iter().position(|p| !p.live) {
                    Some(slot) => {
                        self.peers[slot] = fresh;
                        slot
                    }
                    None => {
                        self.peers.push(fresh);
                        self.peers.len() - 1
                    }
                }
            }
        };
        for port in &r.ports {
            let Some(seg) = self.segments.iter_mut().find(|s| s.vni == port.vni) else {
                continue;
            };
            if seg.registered_macs >= self.remote_max {
                self.registered_over_limit += 1;
                continue;
            }
            // The first host to register a MAC or an address keeps it: a second
            // claim (a copied lab file, a stale or forged key) is counted, not taken.
            if seg.remote.static_elsewhere(port.mac, at) {
                self.registered_conflicts += 1;
                continue;
            }
            if let Some(ip) = port.ip {
                match seg.registered.get(&ip) {
                    Some(&(_, other)) if other != at => {
                        self.registered_conflicts += 1;
                        continue;
                    }
                    _ => {
                        seg.registered.insert(ip, (port.mac, at));
                    }
                }
            }
            if seg.remote.add_static_new(port.mac, at, now) {
                seg.registered_macs += 1;
            }
        }
        // As asked: an unchanged put then costs nothing, and taking it back removes
        // only what is this peer's.
        self.peers[at].registered = r.ports.clone();
    }

    /// Takes back the static MACs and ARP answers of peer `at`'s registration.
    fn forget_registered(&mut self, at: usize) {
        let ports = std::mem::take(&mut self.peers[at].registered);
        for port in &ports {
            let Some(seg) = self.segments.iter_mut().find(|s| s.vni == port.vni) else {
                continue;
            };
            if seg.remote.remove_static(port.mac, at) {
                seg.registered_macs -= 1;
            }
            if let Some(ip) = port.ip {
                if seg.registered.get(&ip).is_some_and(|&(_, p)| p == at) {
                    seg.registered.remove(&ip);
                }
            }
        }
    }

    /// A store host left (its key deleted, its lease expired, or a value no longer
    /// read): its peer slot goes dead with what was learned and registered behind it.
    fn store_gone(&mut self, vtep: SocketAddr) {
        let Some(at) =
            (0..self.peers.len()).find(|&i| self.peers[i].live && self.peers[i].addr == vtep)
        else {
            return;
        };
        self.forget_registered(at);
        if at < self.static_peers {
            // A static peer stays a peer; only what it registered goes.
            return;
        }
        for seg in &mut self.segments {
            seg.remote.flush_port(at);
        }
        let p = &mut self.peers[at];
        p.live = false;
        p.stats = PeerStats::default();
    }

    /// For an ARP request (untagged, broadcast) leaving by VNI port `port` that asks
    /// for a container another host registered: the MAC to answer with, and the peer
    /// it is behind. The request then need not be flooded to every peer.
    pub fn suppress_arp(&self, port: PortId, frame: &[u8]) -> Option<(Ipv4Addr, Mac, usize)> {
        let seg = self.segments.iter().find(|s| s.port == port)?;
        if seg.registered.is_empty() {
            return None;
        }
        let eth = EthernetFrame::new_checked(frame.get(VNET_HDR_LEN..)?)?;
        if eth.ethertype() != ETHERTYPE_ARP || !eth.dst().is_multicast() {
            return None;
        }
        let arp = ArpPacket::new_checked(eth.payload())?;
        if arp.operation() != OP_REQUEST {
            return None;
        }
        let target = arp.target_ip();
        let &(mac, peer) = seg.registered.get(&target)?;
        Some((target, mac, peer))
    }

    /// How many live peers came from the store.
    pub fn store_peers(&self) -> usize {
        self.peers[self.static_peers..]
            .iter()
            .filter(|p| p.live)
            .count()
    }

    /// Serves VNI `vni` through internal port `port` of a bridge with MTU `mtu`.
    pub fn add_vni(&mut self, vni: u32, port: PortId, mtu: u32) {
        self.segments.push(Segment {
            vni,
            port,
            mtu,
            remote: Fdb::new(self.remote_max, self.remote_aging),
            registered: HashMap::new(),
            registered_macs: 0,
        });
    }

    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    pub fn peer_mut(&mut self, peer: usize) -> &mut Peer {
        &mut self.peers[peer]
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub fn dropped(&self, reason: VtepDrop) -> u64 {
        self.drops[reason as usize]
    }

    /// Counts `n` drops for `reason`.
    pub fn count(&mut self, reason: VtepDrop, n: u64) {
        self.drops[reason as usize] += n;
    }

    /// Checks a datagram from `from` (the VXLAN header, then the inner frame) and
    /// learns its inner source MAC behind the peer it came from. Peers are known by
    /// address alone: the kernel's VXLAN sends from source ports of its own choosing.
    /// Counts the datagram for the peer, not a drop (the caller does).
    pub fn accept(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Result<Accepted, VtepDrop> {
        // An IPv6 socket is IPV6_V6ONLY: an IPv4 peer never arrives mapped.
        let peer = self
            .peers
            .iter()
            .position(|p| p.live && p.addr.ip() == from.ip())
            .ok_or(VtepDrop::NotPeer)?;
        let v = Vxlan::new_checked(datagram).map_err(|e| match e {
            vxlan::HeaderError::Truncated => VtepDrop::Truncated,
            vxlan::HeaderError::BadFlags => VtepDrop::BadFlags,
        })?;
        let seg = self
            .segments
            .iter_mut()
            .find(|s| s.vni == v.vni())
            .ok_or(VtepDrop::UnknownVni)?;
        let inner = v.inner();
        if inner.len() > offload::max_rx_frame(seg.mtu, inner) {
            return Err(VtepDrop::Oversize);
        }
        let src = EthernetFrame::new_checked(inner)
            .ok_or(VtepDrop::Truncated)?
            .src();
        if !src.is_multicast() && !src.is_zero() {
            seg.remote.learn(src, peer, now);
        }
        let stats = &mut self.peers[peer].stats;
        stats.rx_packets += 1;
        stats.rx_bytes += datagram.len() as u64;
        Ok(Accepted {
            port: seg.port,
            peer,
            mtu: seg.mtu,
        })
    }

    /// Counts what [`offload::rx_checksums`] found in a frame from `peer`.
    pub fn rx_checksums(&mut self, peer: usize, sums: Checksums) {
        let stats = &mut self.peers[peer].stats;
        match sums {
            Checksums::Partial { .. } => stats.rx_partial_checksum += 1,
            Checksums::Wrong => stats.rx_bad_checksum += 1,
            Checksums::Valid | Checksums::NotChecked => {}
        }
    }

    /// Where `frame` (a virtio-net header, then Ethernet), leaving by VNI port `port`,
    /// goes: one peer if it is learned to have the destination, every peer otherwise.
    /// A frame that cannot go is refused with the reason: larger than the VNI's MTU
    /// allows (VXLAN never fragments, RFC 7348 section 4.3; for a super-frame, each
    /// segment it would be cut into), a GSO type that cannot be cut, or offloads that
    /// do not describe the frame. Changes nothing: `trace` calls it too.
    pub fn egress(&self, port: PortId, frame: &[u8], now: Instant) -> Result<Egress, VtepDrop> {
        let seg = self
            .segments
            .iter()
            .find(|s| s.port == port)
            .ok_or(VtepDrop::UnknownVni)?;
        let vnet = VnetHdr::parse(frame).ok_or(VtepDrop::Truncated)?;
        let eth = &frame[VNET_HDR_LEN..];
        let dst = EthernetFrame::new_checked(eth)
            .ok_or(VtepDrop::Truncated)?
            .dst();
        let mtu = seg.mtu as usize;
        let cut = if vnet.is_gso() {
            let cut = offload::plan(&vnet, eth)?;
            if cut.max_segment() > mtu + ETH_HDR_LEN {
                return Err(VtepDrop::Oversize);
            }
            Some(cut)
        } else {
            // Room for one VLAN tag, as the bridge allows.
            if eth.len() > mtu + ETH_HDR_LEN + VLAN_TAG_LEN {
                return Err(VtepDrop::Oversize);
            }
            if !offload::partial_fits(&vnet, eth.len()) {
                return Err(VtepDrop::Malformed);
            }
            None
        };
        let known = (!dst.is_multicast())
            .then(|| seg.remote.lookup(dst, now))
            .flatten();
        Ok(Egress {
            vni: seg.vni,
            targets: known.map_or(Targets::All, Targets::One),
            flow: flow_hash(eth),
            cut,
        })
    }

    /// Ages the learned MACs.
    pub fn tick(&mut self, now: Instant) {
        for seg in &mut self.segments {
            seg.remote.age(now);
        }
    }
}

/// A hash of the inner flow (MACs, and IP addresses and ports when there are any),
/// to spread flows over the source ports while keeping each flow on one.
pub fn flow_hash(eth: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |b: &[u8]| {
        for &x in b {
            h = (h ^ x as u64).wrapping_mul(0x0100_0000_01b3);
        }
    };
    let Some(frame) = EthernetFrame::new_checked(eth) else {
        return h;
    };
    mix(&frame.dst().0);
    mix(&frame.src().0);
    if frame.ethertype() == ETHERTYPE_IPV4 {
        if let Ok(ip) = Ipv4Packet::new_quoted(frame.payload()) {
            mix(&ip.src().octets());
            mix(&ip.dst().octets());
            // Not a fragment's "ports": every fragment of a datagram leaves by one port.
            let ports = (!ip.is_fragment()).then(|| vswitch::wire::ports(ip.payload()));
            if let Some((s, d)) = ports.flatten() {
                mix(&s.to_be_bytes());
                mix(&d.to_be_bytes());
            }
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch::frame::{GSO_TCPV4, GSO_UDP_L4, VNET_F_NEEDS_CSUM};
    use vswitch::wire::ethernet::EthernetRepr;
    use vswitch::wire::udp;
    use vswitch::Mac;

    const PEER_A: &str = "192.0.2.1:4789";
    const PEER_B: &str = "192.0.2.2:4789";
    const HERE: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const THERE: Mac = Mac([2, 0, 0, 0, 0, 2]);

    fn endpoint() -> Endpoint {
        let peers = [PEER_A.parse().unwrap(), PEER_B.parse().unwrap()];
        let mut e = Endpoint::new(&peers, 16, Duration::from_secs(300));
        e.add_vni(42, PortId(7), 1450);
        e
    }

    /// A virtio-net header (`vnet`), Ethernet from `src` to `dst`, and a UDP/IPv4
    /// packet with `payload` bytes.
    fn frame(vnet: VnetHdr, src: Mac, dst: Mac, payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN + ETH_HDR_LEN + 28 + payload];
        vnet.emit(&mut f);
        EthernetRepr {
            dst,
            src,
            ethertype: ETHERTYPE_IPV4,
        }
        .emit(&mut f[VNET_HDR_LEN..]);
        let data = vec![0x5a; payload];
        let (s, d) = (
            "10.0.0.1:5000".parse().unwrap(),
            "10.0.0.2:53".parse().unwrap(),
        );
        udp::emit_packet(s, d, 64, &data, &mut f[VNET_HDR_LEN + ETH_HDR_LEN..]).unwrap();
        f
    }

    /// `inner` (an Ethernet frame, after a virtio-net header) as a VXLAN datagram.
    fn datagram(vni: u32, inner: &[u8]) -> Vec<u8> {
        let mut d = vec![0u8; vxlan::HEADER_LEN];
        vxlan::emit(&mut d, vni);
        d.extend_from_slice(&inner[VNET_HDR_LEN..]);
        d
    }

    fn arp_request(src: Mac, target: Ipv4Addr) -> Vec<u8> {
        use vswitch::wire::arp::ArpRepr;
        let mut f = vec![0u8; VNET_HDR_LEN + ETH_HDR_LEN + 28];
        EthernetRepr {
            dst: Mac::BROADCAST,
            src,
            ethertype: ETHERTYPE_ARP,
        }
        .emit(&mut f[VNET_HDR_LEN..]);
        ArpRepr {
            operation: OP_REQUEST,
            sender_mac: src,
            sender_ip: Ipv4Addr::new(172, 16, 2, 1),
            target_mac: Mac([0; 6]),
            target_ip: target,
        }
        .emit(&mut f[VNET_HDR_LEN + ETH_HDR_LEN..]);
        f
    }

    #[test]
    fn store_hosts_become_peers_with_their_macs_and_arp_answers() {
        use crate::store::{Registration, RemotePort};
        let mut e = endpoint();
        let now = Instant::now();
        let own: SocketAddr = "192.0.2.9:4789".parse().unwrap();
        let c = Mac([2, 0, 0, 0, 0, 0x33]);
        let c_ip = Ipv4Addr::new(172, 16, 2, 33);
        let host = |vtep: &str, mac: Mac, ip: Ipv4Addr| Registration {
            vtep: vtep.parse().unwrap(),
            vnis: vec![42],
            ports: vec![RemotePort {
                vni: 42,
                mac,
                ip: Some(ip),
            }],
        };
        // Learned behind a static peer before: kept.
        let from_b: SocketAddr = "192.0.2.2:51000".parse().unwrap();
        e.accept(
            from_b,
            &datagram(42, &frame(VnetHdr::default(), THERE, HERE, 10)),
            now,
        )
        .unwrap();
        let hosts = vec![
            host("192.0.2.3:4789", c, c_ip),
            // Ourselves, and a static peer again: neither is a new peer.
            host("192.0.2.9:4789", HERE, Ipv4Addr::new(172, 16, 2, 9)),
            host(
                PEER_A,
                Mac([2, 0, 0, 0, 0, 0xaa]),
                Ipv4Addr::new(172, 16, 2, 10),
            ),
        ];
        let puts: Vec<StoreChange> = hosts.iter().cloned().map(StoreChange::Put).collect();
        e.apply_store(&puts, own, now);
        assert_eq!(e.peers().len(), 3);
        assert_eq!(e.store_peers(), 1);
        assert!(e.peers()[2].from_store);
        // Unicast to a registered MAC goes to its host alone, before any frame came.
        let to_c = frame(VnetHdr::default(), HERE, c, 10);
        assert_eq!(
            e.egress(PortId(7), &to_c, now).unwrap().targets,
            Targets::One(2)
        );
        let to_there = frame(VnetHdr::default(), HERE, THERE, 10);
        assert_eq!(
            e.egress(PortId(7), &to_there, now).unwrap().targets,
            Targets::One(1)
        );
        // Datagrams from the new host are accepted.
        let from_c: SocketAddr = "192.0.2.3:40000".parse().unwrap();
        assert!(e
            .accept(
                from_c,
                &datagram(42, &frame(VnetHdr::default(), c, HERE, 10)),
                now
            )
            .is_ok());
        // ARP for the registered container is answered; for others, or on another
        // port, it is not.
        assert_eq!(
            e.suppress_arp(PortId(7), &arp_request(HERE, c_ip)),
            Some((c_ip, c, 2))
        );
        let a_ip = Ipv4Addr::new(172, 16, 2, 10);
        assert_eq!(
            e.suppress_arp(PortId(7), &arp_request(HERE, a_ip))
                .map(|(_, m, p)| (m, p)),
            Some((Mac([2, 0, 0, 0, 0, 0xaa]), 0))
        );
        assert_eq!(
            e.suppress_arp(PortId(7), &arp_request(HERE, Ipv4Addr::new(172, 16, 2, 99))),
            None
        );
        assert_eq!(e.suppress_arp(PortId(8), &arp_request(HERE, c_ip)), None);
        // The same again changes nothing; a reset to what is there neither.
        e.apply_store(&puts, own, now);
        e.apply_store(&[StoreChange::Reset(hosts.clone())], own, now);
        assert_eq!(e.store_peers(), 1);
        assert_eq!(e.segments()[0].registered_macs, 2);
        // The host leaves: its peer, its MACs and its answers go with it; what was
        // learned behind the static peers stays.
        e.apply_store(&[StoreChange::Reset(vec![hosts[2].clone()])], own, now);
        assert_eq!(e.store_peers(), 0);
        assert!(!e.peers()[2].live);
        assert_eq!(e.segments()[0].registered_macs, 1, "the static peer's");
        assert_eq!(
            e.egress(PortId(7), &to_c, now).unwrap().targets,
            Targets::All
        );
        assert_eq!(
            e.egress(PortId(7), &to_there, now).unwrap().targets,
            Targets::One(1)
        );
        assert_eq!(e.suppress_arp(PortId(7), &arp_request(HERE, c_ip)), None);
        assert_eq!(
            e.accept(from_c, &datagram(42, &to_c), now),
            Err(VtepDrop::NotPeer)
        );
        // A new host takes the dead slot; a changed registration replaces the old one.
        let d_ip = Ipv4Addr::new(172, 16, 2, 44);
        let d = host("192.0.2.4:4789", Mac([2, 0, 0, 0, 0, 0x44]), d_ip);
        e.apply_store(&[StoreChange::Put(d.clone())], own, now);
        assert_eq!(e.peers().len(), 3, "slot 2 reused");
        assert_eq!(e.peers()[2].addr, d.vtep);
        let mut d2 = d.clone();
        d2.ports[0].mac = Mac([2, 0, 0, 0, 0, 0x45]);
        e.apply_store(&[StoreChange::Put(d2)], own, now);
        assert_eq!(
            e.suppress_arp(PortId(7), &arp_request(HERE, d_ip))
                .map(|(_, m, _)| m),
            Some(Mac([2, 0, 0, 0, 0, 0x45]))
        );
        let old_mac = frame(VnetHdr::default(), HERE, Mac([2, 0, 0, 0, 0, 0x44]), 10);
        assert_eq!(
            e.egress(PortId(7), &old_mac, now).unwrap().targets,
            Targets::All
        );
        assert_eq!(e.segments()[0].registered_macs, 2);
        e.apply_store(&[StoreChange::Gone(d.vtep)], own, now);
        assert_eq!(e.segments()[0].registered_macs, 1);
        // The static peer's key goes: what it registered goes, the peer stays.
        e.apply_store(&[StoreChange::Gone(PEER_A.parse().unwrap())], own, now);
        assert_eq!(e.segments()[0].registered_macs, 0);
        assert!(e.peers()[0].live);
    }

    #[test]
    fn registered_macs_per_vni_stop_at_the_tables_limit() {
        use crate::store::{Registration, RemotePort};
        let mut e = endpoint();
        let now = Instant::now();
        let ports: Vec<RemotePort> = (0..40u8)
            .map(|i| RemotePort {
                vni: 42,
                mac: Mac([2, 1, 0, 0, 0, i]),
                ip: Some(Ipv4Addr::new(172, 16, 3, i)),
            })
            .collect();
        let r = Registration {
            vtep: "192.0.2.5:4789".parse().unwrap(),
            vnis: vec![42],
            ports,
        };
        e.apply_store(
            &[StoreChange::Put(r)],
            "192.0.2.9:4789".parse().unwrap(),
            now,
        );
        assert_eq!(e.segments()[0].registered_macs, 16, "remote_max");
        assert_eq!(e.registered_over_limit, 24);
    }

    #[test]
    fn only_peers_with_a_served_vni_and_a_fitting_frame_are_accepted() {
        let mut e = endpoint();
        let now = Instant::now();
        let inner = frame(VnetHdr::default(), THERE, HERE, 100);
        let from_b: SocketAddr = "192.0.2.2:51000".parse().unwrap();
        let got = e.accept(from_b, &datagram(42, &inner), now).unwrap();
        assert_eq!(
            got,
            Accepted {
                port: PortId(7),
                peer: 1,
                mtu: 1450
            }
        );
        assert_eq!(e.peers()[1].stats.rx_packets, 1);
        let stranger: SocketAddr = "198.51.100.1:4789".parse().unwrap();
        assert_eq!(
            e.accept(stranger, &datagram(42, &inner), now),
            Err(VtepDrop::NotPeer)
        );
        assert_eq!(
            e.accept(from_b, &datagram(43, &inner), now),
            Err(VtepDrop::UnknownVni)
        );
        let mut bad = datagram(42, &inner);
        bad[0] = 0x0c;
        assert_eq!(e.accept(from_b, &bad, now), Err(VtepDrop::BadFlags));
        assert_eq!(
            e.accept(from_b, &bad[..vxlan::HEADER_LEN + 13], now),
            Err(VtepDrop::Truncated)
        );
        // UDP larger than the VNI's MTU: it would have needed fragments.
        let big = frame(VnetHdr::default(), THERE, HERE, 1450);
        assert_eq!(
            e.accept(from_b, &datagram(42, &big), now),
            Err(VtepDrop::Oversize)
        );
        assert_eq!(
            e.peers()[1].stats.rx_packets,
            1,
            "refused ones are not counted"
        );
    }

    #[test]
    fn ipv6_peers_are_known_by_address_and_learned_behind() {
        let peers = [
            "[2001:db8::1]:4789".parse().unwrap(),
            "[2001:db8::2]:4789".parse().unwrap(),
        ];
        let mut e = Endpoint::new(&peers, 16, Duration::from_secs(300));
        e.add_vni(42, PortId(7), 1430);
        let now = Instant::now();
        let inner = frame(VnetHdr::default(), THERE, HERE, 100);
        // The kernel sends from a source port of its own: the address is the peer.
        let from_b: SocketAddr = "[2001:db8::2]:51000".parse().unwrap();
        let got = e.accept(from_b, &datagram(42, &inner), now).unwrap();
        assert_eq!((got.peer, got.mtu), (1, 1430));
        for stranger in [
            "[2001:db8::3]:4789",
            "192.0.2.2:4789",
            "[::ffff:192.0.2.2]:4789",
        ] {
            assert_eq!(
                e.accept(stranger.parse().unwrap(), &datagram(42, &inner), now),
                Err(VtepDrop::NotPeer),
                "{stranger}"
            );
        }
        // The MAC learned behind peer 1 is sent to it alone.
        let out = frame(VnetHdr::default(), HERE, THERE, 100);
        let egress = e.egress(PortId(7), &out, now).unwrap();
        assert_eq!(egress.targets, Targets::One(1));
        assert_eq!(e.peers()[1].addr, peers[1]);
        // The VNI's MTU is what the lab gave (1430 over IPv6): 1431 bytes of IP do
        // not go.
        let over = frame(VnetHdr::default(), HERE, THERE, 1430 - 28 + 1);
        assert_eq!(
            e.egress(PortId(7), &over, now).map(|_| ()),
            Ok(()),
            "a VLAN tag's room"
        );
        let over = frame(VnetHdr::default(), HERE, THERE, 1430 - 28 + 5);
        assert_eq!(
            e.egress(PortId(7), &over, now).map(|_| ()),
            Err(VtepDrop::Oversize)
        );
        // Store hosts of the underlay's family join as peers, keyed by address.
        use crate::store::Registration;
        let own: SocketAddr = "[2001:db8::9]:4789".parse().unwrap();
        let c: SocketAddr = "[2001:db8::c]:4789".parse().unwrap();
        let reg = Registration {
            vtep: c,
            vnis: vec![42],
            ports: vec![],
        };
        e.apply_store(&[StoreChange::Put(reg)], own, now);
        assert_eq!(e.peers()[2].addr, c);
        let from_c: SocketAddr = "[2001:db8::c]:40000".parse().unwrap();
        assert!(e.accept(from_c, &datagram(42, &inner), now).is_ok());
        e.apply_store(&[StoreChange::Gone(c)], own, now);
        assert_eq!(
            e.accept(from_c, &datagram(42, &inner), now),
            Err(VtepDrop::NotPeer)
        );
    }

    #[test]
    fn a_learned_mac_goes_to_its_peer_and_the_rest_to_every_peer() {
        let mut e = endpoint();
        let now = Instant::now();
        let out = frame(VnetHdr::default(), HERE, THERE, 100);
        assert_eq!(
            e.egress(PortId(7), &out, now).unwrap().targets,
            Targets::All
        );
        let from_b: SocketAddr = "192.0.2.2:51000".parse().unwrap();
        let inner = frame(VnetHdr::default(), THERE, HERE, 100);
        e.accept(from_b, &datagram(42, &inner), now).unwrap();
        let egress = e.egress(PortId(7), &out, now).unwrap();
        assert_eq!((egress.vni, egress.targets), (42, Targets::One(1)));
        assert_eq!(egress.peers(2), 1..2);
        // Broadcast always floods; a learned MAC is forgotten after the aging time.
        let bcast = frame(VnetHdr::default(), HERE, Mac::BROADCAST, 100);
        assert_eq!(e.egress(PortId(7), &bcast, now).unwrap().peers(2), 0..2);
        let later = now + Duration::from_secs(301);
        e.tick(later);
        assert_eq!(
            e.egress(PortId(7), &out, later).unwrap().targets,
            Targets::All
        );
        // A multicast source is never learned.
        let mut e = endpoint();
        let odd = frame(VnetHdr::default(), Mac([3, 0, 0, 0, 0, 2]), HERE, 10);
        e.accept(from_b, &datagram(42, &odd), now).unwrap();
        assert_eq!(e.segments()[0].remote.len(), 0);
    }

    #[test]
    fn frames_that_cannot_go_whole_are_refused_with_the_reason() {
        let e = endpoint();
        let now = Instant::now();
        // 1450 bytes of IP fit (and a VLAN tag's room more); one byte over does not.
        let fits = frame(VnetHdr::default(), HERE, THERE, 1450 - 28);
        assert!(e.egress(PortId(7), &fits, now).is_ok());
        let over = frame(VnetHdr::default(), HERE, THERE, 1450 - 28 + 5);
        assert_eq!(e.egress(PortId(7), &over, now), Err(VtepDrop::Oversize));
        assert_eq!(e.egress(PortId(8), &fits, now), Err(VtepDrop::UnknownVni));
        assert_eq!(
            e.egress(PortId(7), &fits[..VNET_HDR_LEN + 10], now),
            Err(VtepDrop::Truncated)
        );
        // A partial checksum whose offsets run past the frame.
        let partial = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 2000,
            ..VnetHdr::default()
        };
        let bad = frame(partial, HERE, THERE, 100);
        assert_eq!(e.egress(PortId(7), &bad, now), Err(VtepDrop::Malformed));
        // UDP segmentation offload is not cut here.
        let usso = VnetHdr {
            gso_type: GSO_UDP_L4,
            gso_size: 1000,
            ..VnetHdr::default()
        };
        let f = frame(usso, HERE, THERE, 3000);
        assert_eq!(e.egress(PortId(7), &f, now), Err(VtepDrop::UnsupportedGso));
    }

    #[test]
    fn a_super_frame_goes_only_if_each_segment_fits() {
        let e = endpoint();
        let now = Instant::now();
        let mut f = frame(VnetHdr::default(), HERE, THERE, 4000);
        // Make it TCP: a 20-byte header where the UDP header was.
        let ip = VNET_HDR_LEN + ETH_HDR_LEN;
        f[ip + 9] = 6;
        f[ip + 20 + 12] = 5 << 4;
        let gso = |mss: u16| VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: mss,
            csum_start: 34,
            csum_offset: 16,
        };
        gso(1410).emit(&mut f);
        let egress = e.egress(PortId(7), &f, now).unwrap();
        assert_eq!(
            egress.cut,
            Some(Cut {
                headers: 54,
                mss: 1410
            })
        );
        gso(1411).emit(&mut f);
        assert_eq!(e.egress(PortId(7), &f, now), Err(VtepDrop::Oversize));
    }

    #[test]
    fn a_flow_hashes_alike_and_its_fragments_with_it() {
        let a = frame(VnetHdr::default(), HERE, THERE, 100);
        let mut b = frame(VnetHdr::default(), HERE, THERE, 200);
        assert_eq!(flow_hash(&a[VNET_HDR_LEN..]), flow_hash(&b[VNET_HDR_LEN..]));
        let ip = VNET_HDR_LEN + ETH_HDR_LEN;
        b[ip + 20] ^= 1; // another source port
        assert_ne!(flow_hash(&a[VNET_HDR_LEN..]), flow_hash(&b[VNET_HDR_LEN..]));
        // Fragments (MF set, then an offset) hash by addresses alone.
        let mut first = a.clone();
        first[ip + 6] = 0x20;
        let mut later = b.clone();
        later[ip + 6] = 0x00;
        later[ip + 7] = 0x10;
        assert_eq!(
            flow_hash(&first[VNET_HDR_LEN..]),
            flow_hash(&later[VNET_HDR_LEN..])
        );
        for n in 0..40 {
            let _ = flow_hash(&a[VNET_HDR_LEN..VNET_HDR_LEN + n]);
        }
    }
}
