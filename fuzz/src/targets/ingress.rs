//! Frame ingress: what a port hands the switch, through `check_ingress`, the port's
//! guard (port security), the bridge's decision (peeked, then decided) and, for
//! IPv4 that parses, GRO as the VXLAN endpoint runs it.
//!
//! Invariants: `Bridge::peek` gives the decision `Bridge::decide` then takes; a
//! unicast decision never goes back out the ingress port; GRO's output is a frame the
//! bridge takes (see `gro.rs`).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use vswitch::frame::{check_ingress, max_frame_len, VnetHdr, ETH_HDR_LEN, VNET_HDR_LEN};
use vswitch::gro;
use vswitch::guard::PortGuard;
use vswitch::wire::ethernet::{EthernetFrame, ETHERTYPE_IPV4};
use vswitch::wire::flow::FlowKey;
use vswitch::{Bridge, BridgeConfig, Decision, Mac, PortId};

use super::gro::Gro;
use super::step;
use crate::frames::*;
use crate::input::{self, decode};
use crate::{invariant, Cov, Target};

pub const TARGET: Target = Target {
    name: "ingress",
    seeds,
    run,
    max_len: 200_000,
    text: false,
};

const MTUS: [u32; 8] = [1500, 1450, 9000, 68, 576, 1280, 65521, 1400];
/// Port 0's container (guarded, 10.0.0.2), port 1's (guarded, 10.0.0.3), port 2's
/// (its MAC only), and port 3's (an internal port: the router's MAC, static).
const A: Mac = Mac([2, 0, 0, 0, 0, 0xa]);
const B: Mac = Mac([2, 0, 0, 0, 0, 0xb]);
const C: Mac = Mac([2, 0, 0, 0, 0, 0xc]);
const R: Mac = Mac([2, 0x74, 0x6e, 0, 0, 1]);

fn seeds() -> Vec<Vec<u8>> {
    let (a, b) = (sa("10.0.0.2:40000"), sa("10.0.0.3:5201"));
    let ip = |s: &str| -> Ipv4Addr { s.parse().unwrap() };
    let arp_a = arp_request(A, ip("10.0.0.2"), ip("10.0.0.3"));
    let arp_b = arp_reply(B, ip("10.0.0.3"), A, ip("10.0.0.2"));
    let ping_a = ipv4_frame(B, A, &ping(ip("10.0.0.2"), ip("10.0.0.3"), 64, 56));
    let syn = ipv4_frame(B, A, &tcp_syn(a, b));
    let udp_c = ipv4_frame(
        Mac::BROADCAST,
        C,
        &udp(sa("10.0.0.9:68"), sa("255.255.255.255:67"), 300),
    );
    let tagged_arp = tagged(&arp_request(A, ip("10.0.0.1"), ip("10.0.0.3")), 0);
    let super_frame = tso(B, A, a, b, 1448, 40);
    let big = ipv4_frame(B, A, &udp(a, b, 1472));
    let to_router = ipv4_frame(
        R,
        C,
        &tcp_data(sa("10.0.0.4:1000"), sa("10.0.1.2:80"), 1, 100),
    );
    let lldp = frame(
        VnetHdr::default(),
        Mac([1, 0x80, 0xc2, 0, 0, 0xe]),
        C,
        0x88cc,
        &[0; 46],
    );
    let segments: Vec<Vec<u8>> = (0..6)
        .map(|i| ipv4_frame(B, A, &tcp_data(a, b, 1 + i * 1000, 1000)))
        .collect();
    let small: Vec<Vec<u8>> = (0..6)
        .map(|i| ipv4_frame(B, A, &partial(tcp_data(a, b, 1 + i * 10, 10))))
        .collect();
    let mut out = vec![
        input::encode(
            0,
            &[
                (0, 0, 10, &arp_a),
                (0, 1, 10, &arp_b),
                (0, 0, 10, &ping_a),
                (0, 0, 10, &syn),
                (0, 2, 10, &udp_c),
                (0, 0, 10, &tagged_arp),
                (0x40, 3, 10, &to_router),
                (0, 2, 10, &lldp),
                (0x80, 1, 400, &arp_b),
                (0x40, 0, 10, &ping_a),
            ],
        ),
        input::encode(0, &[(0, 0, 1, &super_frame), (0, 0, 1, &big)]),
        input::encode(2, &[(0, 0, 1, &super_frame), (0, 0, 1, &big)]),
    ];
    for (config, run) in [(0u8, &segments), (1, &segments), (0, &small), (2, &small)] {
        let records: Vec<(u8, u8, u16, &[u8])> = run.iter().map(|f| (0, 0, 0, &f[..])).collect();
        out.push(input::encode(config, &records));
    }
    out
}

fn run(data: &[u8], cov: &mut Cov) {
    let (config, records) = decode(data);
    let mtu = MTUS[config as usize % MTUS.len()];
    let mut bridge = Bridge::new(BridgeConfig {
        name: "br0".into(),
        mtu,
        fdb_max: 1 + (config as usize >> 3) % 8,
        fdb_aging: Duration::from_secs(300),
    });
    for p in 0..4 {
        bridge.attach(PortId(p));
    }
    let mut now = Instant::now();
    bridge.add_static(A, PortId(0), now);
    bridge.add_static(R, PortId(3), now);
    let guards = [
        Some(PortGuard {
            mac: A,
            ipv4: Some(Ipv4Addr::new(10, 0, 0, 2)),
            ..Default::default()
        }),
        Some(PortGuard {
            mac: B,
            ipv4: Some(Ipv4Addr::new(10, 0, 0, 3)),
            ..Default::default()
        }),
        Some(PortGuard {
            mac: C,
            ..Default::default()
        }),
        None,
    ];
    let mut gro = Gro::default();
    for r in &records {
        now += step(r);
        let port = r.arg as usize % 4;
        let ingress = PortId(port);
        let data = r.frame;
        let eth = data.get(VNET_HDR_LEN..).unwrap_or_default();
        let checked = check_ingress(data, mtu);
        cov.hit(1, checked.map_or_else(|e| 1 + e as u64, |_| 0));
        let _ = max_frame_len(mtu, eth);
        let _ = FlowKey::from_frame(eth);
        // The guard reads anything (it is documented to take a checked frame, but
        // must not fall over on another).
        let guarded = guards[port].as_ref().map(|g| g.check(eth));
        cov.hit(
            2,
            guarded.map_or(0, |g| g.map_or_else(|e| 2 + e as u64, |_| 1)),
        );
        if let Ok(vnet) = checked {
            cov.hit(3, vnet.gso_type as u64 | (vnet.flags as u64) << 8);
        }
        let admitted = checked.is_ok() && guarded.is_none_or(|g| g.is_ok());
        if !admitted {
            if eth.len() >= ETH_HDR_LEN {
                let _ = bridge.peek(ingress, eth, now);
            }
            continue;
        }
        let peeked = bridge.peek(ingress, eth, now);
        let decided = bridge.decide(ingress, eth, now);
        invariant!(
            peeked == decided,
            "Bridge::peek said {peeked:?}, Bridge::decide {decided:?}"
        );
        if let Decision::Unicast(p) = decided {
            invariant!(p != ingress && p.0 < 4, "unicast to {p:?} from {ingress:?}");
        }
        cov.hit(
            4,
            match decided {
                Decision::Unicast(p) => 10 + p.0 as u64,
                Decision::Flood => 1,
                Decision::Drop(r) => 100 + r as u64,
            },
        );
        if r.op & 0x40 != 0 {
            bridge.age(now);
        }
        // GRO, as the VXLAN endpoint merges what a tunnel brings: an untagged IPv4
        // frame without offloads, its checksums as they are.
        let vnet = checked.expect("admitted");
        let ipv4 = EthernetFrame::new_checked(eth).is_some_and(|e| e.ethertype() == ETHERTYPE_IPV4);
        if ipv4 && !vnet.is_gso() && vnet.flags == 0 {
            let sums = gro::checksums(&eth[ETH_HDR_LEN..]);
            cov.hit(5, sums_code(sums));
            gro.push(data, sums, mtu, cov);
        } else {
            gro.flush(mtu, cov);
        }
    }
    gro.flush(mtu, cov);
}

pub fn sums_code(s: gro::Checksums) -> u64 {
    match s {
        gro::Checksums::NotChecked => 0,
        gro::Checksums::Valid => 1,
        gro::Checksums::Partial { csum_offset, .. } => 2 + csum_offset as u64,
        gro::Checksums::Wrong => 30,
    }
}
