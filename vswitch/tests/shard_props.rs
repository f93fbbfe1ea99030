//! A worker thread decides as thread 0 would: for any frame, what `shard::decide`
//! forwards, the bridge (`Bridge::peek`, over the same FDB) sends to the same port,
//! and what it drops, thread 0's admission drops for the same reason. Anything else
//! goes to thread 0, which decides itself.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use vswitch::shard::{admit, decide, BridgeView, Fast, FastPort, View};
use vswitch::{Bridge, BridgeConfig, BridgeId, Decision, Mac, PortId};

const MACS: [[u8; 6]; 5] = [
    [2, 0, 0, 0, 0, 1],
    [2, 0, 0, 0, 0, 2],
    [2, 0, 0, 0, 0, 3],
    [0xff; 6],
    [0x33, 0x33, 0, 0, 0, 1],
];

/// A bridge of three ports that has learned MACS[p] on port p, and the view a worker
/// would read of it (port 2 captured, say, so not fast).
fn setup(now: Instant) -> (Bridge, View) {
    let mut bridge = Bridge::new(BridgeConfig {
        name: "br0".into(),
        mtu: 1500,
        fdb_max: 16,
        fdb_aging: Duration::from_secs(300),
    });
    for p in 0..3 {
        bridge.attach(PortId(p));
    }
    for (p, mac) in MACS[..3].iter().enumerate() {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&MACS[4]);
        f[6..12].copy_from_slice(mac);
        bridge.decide(PortId(p), &f, now);
    }
    let fdb: HashMap<Mac, (PortId, bool)> = bridge
        .fdb()
        .entries(now)
        .map(|(m, e)| (m, (e.port, !e.fixed)))
        .collect();
    let port = |fast| {
        Some(FastPort {
            bridge: BridgeId(0),
            guard: None,
            fast,
        })
    };
    let view = View {
        ports: vec![port(true), port(true), port(false)],
        ports_gen: 0,
        bridges: vec![BridgeView {
            mtu: 1500,
            fdb,
            generation: 0,
        }],
    };
    (bridge, view)
}

proptest! {
    #[test]
    fn a_worker_forwards_only_where_thread_0_would(
        ingress in 0usize..3,
        dst in 0usize..5,
        src in 0usize..5,
        vnet in proptest::collection::vec(any::<u8>(), 10),
        zero_vnet in any::<bool>(),
        rest in proptest::collection::vec(any::<u8>(), 0..1600),
    ) {
        let now = Instant::now();
        let (bridge, view) = setup(now);
        let mut data = if zero_vnet { vec![0u8; 10] } else { vnet };
        data.extend_from_slice(&MACS[dst]);
        data.extend_from_slice(&MACS[src]);
        data.extend_from_slice(&rest);
        let ingress = PortId(ingress);
        match decide(&view, ingress, &data) {
            Fast::Forward { egress, learned } => {
                prop_assert!(learned, "every entry here was learned");
                prop_assert!(admit(None, 1500, &data).is_ok());
                prop_assert_eq!(bridge.peek(ingress, &data[10..], now), Decision::Unicast(egress));
                prop_assert!(egress != PortId(2), "never to a port that is not fast");
            }
            Fast::Drop(reason) => prop_assert_eq!(admit(None, 1500, &data).err(), Some(reason)),
            Fast::Handoff => {}
        }
        // A view that is gone (no ports) hands everything over.
        let empty = View { ports: Vec::new(), ..view.clone() };
        prop_assert_eq!(decide(&empty, ingress, &data), Fast::Handoff);
    }
}
