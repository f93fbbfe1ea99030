//! A learning bridge: decides where a frame goes from its ingress port, its MACs and
//! `now`. No IO here: the datapath carries the decision out.

use std::time::{Duration, Instant};

use crate::counters::DropReason;
use crate::fdb::{Fdb, FdbStats, Learned, Mac};
use crate::frame::{destination_mac, source_mac, ETH_HDR_LEN};
use crate::port::PortId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BridgeId(pub usize);

#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub name: String,
    pub mtu: u32,
    pub fdb_max: usize,
    pub fdb_aging: Duration,
}

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// To exactly this port.
    Unicast(PortId),
    /// To every port of the bridge but the ingress one.
    Flood,
    Drop(DropReason),
}

/// Counters of the bridge as a whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeStats {
    pub unicast: u64,
    pub flooded: u64,
}

pub struct Bridge {
    config: BridgeConfig,
    ports: Vec<PortId>,
    fdb: Fdb,
    stats: BridgeStats,
}

impl Bridge {
    pub fn new(config: BridgeConfig) -> Bridge {
        let fdb = Fdb::new(config.fdb_max, config.fdb_aging);
        Bridge {
            config,
            ports: Vec::new(),
            fdb,
            stats: BridgeStats::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn mtu(&self) -> u32 {
        self.config.mtu
    }

    pub fn attach(&mut self, port: PortId) {
        if !self.ports.contains(&port) {
            self.ports.push(port);
        }
    }

    /// Takes a port off the bridge and forgets what was learned on it.
    pub fn detach(&mut self, port: PortId) {
        self.ports.retain(|&p| p != port);
        self.fdb.flush_port(port);
    }

    pub fn ports(&self) -> &[PortId] {
        &self.ports
    }

    /// The ports a flood from `ingress` reaches.
    pub fn flood_targets(&self, ingress: PortId) -> impl Iterator<Item = PortId> + '_ {
        self.ports.iter().copied().filter(move |&p| p != ingress)
    }

    /// Learns the source of `eth` (a validated Ethernet frame) on `ingress` and decides
    /// where the frame goes.
    pub fn decide(&mut self, ingress: PortId, eth: &[u8], now: Instant) -> Decision {
        let decision = self.peek(ingress, eth, now);
        if !matches!(
            decision,
            Decision::Drop(
                DropReason::BadSourceMac | DropReason::Runt | DropReason::StaticMacConflict
            )
        ) {
            // A full table still forwards: the frames to this source will flood.
            let _: Learned = self.fdb.learn(source_mac(eth), ingress, now);
        }
        match decision {
            Decision::Unicast(_) => self.stats.unicast += 1,
            Decision::Flood => self.stats.flooded += 1,
            Decision::Drop(_) => {}
        }
        decision
    }

    /// The decision [`decide`](Self::decide) would take, without learning or counting:
    /// what `tapnet trace` shows.
    pub fn peek(&self, ingress: PortId, eth: &[u8], now: Instant) -> Decision {
        if eth.len() < ETH_HDR_LEN {
            return Decision::Drop(DropReason::Runt);
        }
        let src = source_mac(eth);
        if src.is_multicast() || src.is_zero() {
            return Decision::Drop(DropReason::BadSourceMac);
        }
        if self.fdb.static_elsewhere(src, ingress) {
            return Decision::Drop(DropReason::StaticMacConflict);
        }
        let dst = destination_mac(eth);
        if dst.is_multicast() {
            if dst.0[..5] == [0x01, 0x80, 0xc2, 0x00, 0x00] && dst.0[5] <= 0x0f {
                return Decision::Drop(DropReason::LinkLocalGroup);
            }
            return Decision::Flood;
        }
        match self.fdb.lookup(dst, now) {
            Some(port) if port == ingress => Decision::Drop(DropReason::DestinationOnIngress),
            Some(port) => Decision::Unicast(port),
            None => Decision::Flood,
        }
    }

    /// Makes `mac` a static entry on `port` (the port's own address).
    pub fn add_static(&mut self, mac: Mac, port: PortId, now: Instant) {
        self.fdb.add_static(mac, port, now);
    }

    /// Sweeps aged-out addresses.
    pub fn age(&mut self, now: Instant) -> usize {
        self.fdb.age(now)
    }

    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// Another datapath thread forwarded `n` frames of this bridge to a known port.
    pub fn add_forwarded(&mut self, n: u64) {
        self.stats.unicast += n;
    }

    /// Another datapath thread forwarded from source `mac` on `port` at about `now`
    /// (see [`crate::fdb::Fdb::refresh`]).
    pub fn refresh(&mut self, mac: Mac, port: PortId, now: Instant) {
        self.fdb.refresh(mac, port, now);
    }

    pub fn fdb_stats(&self) -> FdbStats {
        self.fdb.stats()
    }

    pub fn stats(&self) -> BridgeStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = Mac([2, 0, 0, 0, 0, 0xa]);
    const B: Mac = Mac([2, 0, 0, 0, 0, 0xb]);
    const C: Mac = Mac([2, 0, 0, 0, 0, 0xc]);

    fn eth(dst: Mac, src: Mac) -> [u8; 14] {
        let mut f = [0u8; 14];
        f[0..6].copy_from_slice(&dst.0);
        f[6..12].copy_from_slice(&src.0);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f
    }

    fn bridge(max: usize, aging_s: u64) -> Bridge {
        let mut b = Bridge::new(BridgeConfig {
            name: "br0".into(),
            mtu: 1500,
            fdb_max: max,
            fdb_aging: Duration::from_secs(aging_s),
        });
        for p in 0..3 {
            b.attach(PortId(p));
        }
        b
    }

    #[test]
    fn unknown_unicast_floods_then_learned_goes_direct() {
        let now = Instant::now();
        let mut br = bridge(16, 300);
        assert_eq!(br.decide(PortId(0), &eth(B, A), now), Decision::Flood);
        assert_eq!(
            br.decide(PortId(1), &eth(A, B), now),
            Decision::Unicast(PortId(0))
        );
        assert_eq!(
            br.decide(PortId(0), &eth(B, A), now),
            Decision::Unicast(PortId(1))
        );
        assert_eq!(
            br.stats(),
            BridgeStats {
                unicast: 2,
                flooded: 1
            }
        );
    }

    #[test]
    fn broadcast_and_multicast_flood_even_when_learned() {
        let now = Instant::now();
        let mut br = bridge(16, 300);
        br.decide(PortId(1), &eth(A, B), now);
        assert_eq!(
            br.decide(PortId(0), &eth(Mac::BROADCAST, A), now),
            Decision::Flood
        );
        let mcast = Mac([0x01, 0x00, 0x5e, 0, 0, 1]);
        assert_eq!(br.decide(PortId(0), &eth(mcast, A), now), Decision::Flood);
    }

    #[test]
    fn flood_never_returns_to_ingress() {
        let br = bridge(16, 300);
        let targets: Vec<_> = br.flood_targets(PortId(1)).collect();
        assert_eq!(targets, vec![PortId(0), PortId(2)]);
    }

    #[test]
    fn frame_for_a_mac_on_the_ingress_port_is_dropped() {
        let now = Instant::now();
        let mut br = bridge(16, 300);
        br.decide(PortId(0), &eth(B, A), now);
        br.decide(PortId(0), &eth(A, C), now);
        assert_eq!(
            br.decide(PortId(0), &eth(A, C), now),
            Decision::Drop(DropReason::DestinationOnIngress)
        );
    }

    #[test]
    fn a_moved_mac_is_followed() {
        let now = Instant::now();
        let mut br = bridge(16, 300);
        br.decide(PortId(0), &eth(B, A), now);
        br.decide(PortId(2), &eth(B, A), now);
        assert_eq!(
            br.decide(PortId(1), &eth(A, B), now),
            Decision::Unicast(PortId(2))
        );
        assert_eq!(br.fdb_stats().moved, 1);
    }

    #[test]
    fn aged_mac_floods_again() {
        let t0 = Instant::now();
        let mut br = bridge(16, 5);
        br.decide(PortId(0), &eth(B, A), t0);
        let t1 = t0 + Duration::from_secs(6);
        assert_eq!(br.decide(PortId(1), &eth(A, B), t1), Decision::Flood);
        assert_eq!(br.age(t1), 1, "the sweep removes A, keeps B");
    }

    #[test]
    fn full_table_floods_frames_to_unlearned_macs() {
        let now = Instant::now();
        let mut br = bridge(1, 300);
        br.decide(PortId(0), &eth(Mac::BROADCAST, A), now);
        br.decide(PortId(1), &eth(Mac::BROADCAST, B), now);
        assert_eq!(br.fdb().len(), 1);
        assert_eq!(br.fdb_stats().not_learned_full, 1);
        assert_eq!(br.decide(PortId(2), &eth(B, C), now), Decision::Flood);
        assert_eq!(
            br.decide(PortId(2), &eth(A, C), now),
            Decision::Unicast(PortId(0))
        );
    }

    #[test]
    fn bad_source_is_dropped_and_not_learned() {
        let now = Instant::now();
        let mut br = bridge(16, 300);
        assert_eq!(
            br.decide(PortId(0), &eth(B, Mac::BROADCAST), now),
            Decision::Drop(DropReason::BadSourceMac)
        );
        assert!(br.fdb().is_empty());
    }

    #[test]
    fn bridges_are_isolated() {
        let now = Instant::now();
        let mut br0 = bridge(16, 300);
        let mut br1 = Bridge::new(BridgeConfig {
            name: "br1".into(),
            mtu: 1500,
            fdb_max: 16,
            fdb_aging: Duration::from_secs(300),
        });
        br1.attach(PortId(7));
        br1.attach(PortId(8));
        br0.decide(PortId(0), &eth(Mac::BROADCAST, A), now);
        // br1 has not seen A, so a frame to A floods within br1 only.
        assert_eq!(br1.decide(PortId(7), &eth(A, C), now), Decision::Flood);
        assert!(br1.flood_targets(PortId(7)).all(|p| p == PortId(8)));
        assert!(br0.flood_targets(PortId(0)).all(|p| p.0 < 3));
    }

    #[test]
    fn detach_forgets_the_port() {
        let now = Instant::now();
        let mut br = bridge(16, 300);
        br.decide(PortId(0), &eth(B, A), now);
        br.detach(PortId(0));
        assert_eq!(br.decide(PortId(1), &eth(A, B), now), Decision::Flood);
        assert!(br.flood_targets(PortId(1)).all(|p| p == PortId(2)));
    }

    #[test]
    fn short_frames_are_runts_not_panics() {
        let now = Instant::now();
        let mut br = bridge(16, 300);
        for len in 0..14 {
            let f = vec![2u8; len];
            assert_eq!(
                br.decide(PortId(0), &f, now),
                Decision::Drop(DropReason::Runt)
            );
        }
        assert!(br.fdb().is_empty());
    }

    #[test]
    fn reserved_link_local_groups_are_not_forwarded() {
        let now = Instant::now();
        let mut br = bridge(16, 300);
        let stp = Mac([0x01, 0x80, 0xc2, 0, 0, 0]);
        let lldp = Mac([0x01, 0x80, 0xc2, 0, 0, 0x0e]);
        let above = Mac([0x01, 0x80, 0xc2, 0, 0, 0x10]);
        let drop = Decision::Drop(DropReason::LinkLocalGroup);
        assert_eq!(br.decide(PortId(0), &eth(stp, A), now), drop);
        assert_eq!(br.decide(PortId(0), &eth(lldp, A), now), drop);
        assert_eq!(br.decide(PortId(0), &eth(above, A), now), Decision::Flood);
    }

    #[test]
    fn a_ports_own_mac_from_elsewhere_is_dropped_not_learned() {
        let now = Instant::now();
        let mut br = bridge(16, 300);
        br.add_static(A, PortId(0), now);
        assert_eq!(
            br.decide(PortId(2), &eth(Mac::BROADCAST, A), now),
            Decision::Drop(DropReason::StaticMacConflict)
        );
        assert_eq!(
            br.decide(PortId(1), &eth(A, B), now),
            Decision::Unicast(PortId(0)),
            "still goes to its own port"
        );
        assert_eq!(
            br.decide(PortId(0), &eth(B, A), now),
            Decision::Unicast(PortId(1))
        );
    }

    #[test]
    fn peek_changes_nothing() {
        let now = Instant::now();
        let br = bridge(16, 300);
        assert_eq!(br.peek(PortId(0), &eth(B, A), now), Decision::Flood);
        assert!(br.fdb().is_empty());
        assert_eq!(br.stats(), BridgeStats::default());
    }
}
