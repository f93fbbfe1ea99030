//! The poll loop over real descriptors (socketpair ports): forwarding, flooding,
//! isolation, drops by reason, and a port going away.

mod seqpacket_port;

use std::time::Duration;

use seqpacket_port::{frame, pair, tso_frame, Peer};
use vswitch::{BridgeConfig, BridgeId, Datapath, DropReason, PortId, PortInfo};

const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
const C: [u8; 6] = [2, 0, 0, 0, 0, 0xc];
const BCAST: [u8; 6] = [0xff; 6];

fn bridge(dp: &mut Datapath, name: &str) -> BridgeId {
    dp.add_bridge(BridgeConfig {
        name: name.into(),
        mtu: 1500,
        fdb_max: 64,
        fdb_aging: Duration::from_secs(300),
    })
}

fn port(dp: &mut Datapath, bridge: BridgeId, name: &str) -> (PortId, Peer) {
    let (io, peer) = pair(true);
    let info = PortInfo::named(name, bridge);
    (dp.add_port(info, Box::new(io)).unwrap(), peer)
}

/// A datapath of 64 buffers with bridge br0 and N ports on it, named a, b, c, d.
fn one_bridge<const N: usize>() -> (Datapath, BridgeId, [(PortId, Peer); N]) {
    let mut dp = Datapath::new(64).unwrap();
    let br = bridge(&mut dp, "br0");
    let ports = std::array::from_fn(|i| port(&mut dp, br, ["a", "b", "c", "d"][i]));
    (dp, br, ports)
}

fn run(dp: &mut Datapath) {
    for _ in 0..4 {
        dp.poll_once(Some(Duration::from_millis(5))).unwrap();
    }
}

fn drain(peer: &Peer) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 70_000];
    let mut out = Vec::new();
    while let Some(n) = peer.recv(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

#[test]
fn learns_floods_and_forwards_between_real_descriptors() {
    let (mut dp, _, [(pa, a), (_, b), (_, c)]) = one_bridge();

    // Broadcast from A reaches B and C, never A.
    a.send(&frame(BCAST, A, 50));
    run(&mut dp);
    assert_eq!(drain(&b).len(), 1);
    assert_eq!(drain(&c).len(), 1);
    assert!(drain(&a).is_empty());

    // B answers A: A is learned, so only A gets it, byte for byte.
    let reply = frame(A, B, 60);
    b.send(&reply);
    run(&mut dp);
    assert_eq!(drain(&a), vec![reply]);
    assert!(drain(&c).is_empty());

    let view = dp.port(pa).unwrap();
    assert_eq!(view.counters.rx_packets, 1);
    assert_eq!(view.counters.tx_packets, 1);
    assert_eq!(view.counters.tx_bytes, 14 + 60);
}

#[test]
fn a_burst_larger_than_a_batch_is_all_forwarded() {
    let (mut dp, _, [(_, a), (_, b)]) = one_bridge();
    b.send(&frame(BCAST, B, 10));
    a.send(&frame(BCAST, A, 10));
    run(&mut dp);
    drain(&a);
    drain(&b);
    for _ in 0..150 {
        a.send(&frame(B, A, 100));
    }
    let mut got = 0;
    for _ in 0..20 {
        dp.poll_once(Some(Duration::from_millis(5))).unwrap();
        got += drain(&b).len();
    }
    assert_eq!(got, 150);
}

#[test]
fn bridges_do_not_leak_into_each_other() {
    let mut dp = Datapath::new(64).unwrap();
    let br0 = bridge(&mut dp, "br0");
    let br1 = bridge(&mut dp, "br1");
    let (_, a) = port(&mut dp, br0, "a");
    let (_, b) = port(&mut dp, br0, "b");
    let (_, c) = port(&mut dp, br1, "c");
    let (_, d) = port(&mut dp, br1, "d");
    a.send(&frame(BCAST, A, 10));
    a.send(&frame(C, A, 10));
    run(&mut dp);
    assert_eq!(drain(&b).len(), 2);
    assert!(drain(&c).is_empty());
    assert!(drain(&d).is_empty());
}

#[test]
fn bad_frames_are_counted_and_the_rest_still_flows() {
    let (mut dp, _, [(pa, a), (_, b)]) = one_bridge();
    a.send(&[0u8; 12]); // runt
    a.send(&frame(B, A, 1600)); // oversize for MTU 1500
    a.send(&frame(B, BCAST, 10)); // multicast source
    let mut bad_gso = frame(B, A, 100);
    bad_gso[1] = 0x42; // unknown GSO type
    a.send(&bad_gso);
    a.send(&frame(B, A, 100)); // good
    run(&mut dp);
    assert_eq!(drain(&b).len(), 1);
    let c = dp.port(pa).unwrap().counters.clone();
    assert_eq!(c.dropped(DropReason::Runt), 1);
    assert_eq!(c.dropped(DropReason::Oversize), 1);
    assert_eq!(c.dropped(DropReason::BadSourceMac), 1);
    assert_eq!(c.dropped(DropReason::BadVnetHeader), 1);
    assert_eq!(c.rx_packets, 5);
}

#[test]
fn gso_frames_to_a_port_without_gso_are_dropped_and_counted() {
    let (mut dp, br, [(_, a)]) = one_bridge();
    let (io, b) = pair(false);
    let info = PortInfo::named("nogso", br);
    let pb = dp.add_port(info, Box::new(io)).unwrap();
    let gso = tso_frame(B, A, 3000, 1448);
    a.send(&gso);
    run(&mut dp);
    assert!(drain(&b).is_empty());
    assert_eq!(
        dp.port(pb)
            .unwrap()
            .counters
            .dropped(DropReason::EgressNoGso),
        1
    );
}

#[test]
fn a_vanished_port_goes_down_and_the_others_keep_forwarding() {
    let (mut dp, _, [(_, a), (_, b), (pc, c)]) = one_bridge();
    c.send(&frame(BCAST, C, 10));
    run(&mut dp);
    drop(c);
    run(&mut dp);
    let down = dp.take_went_down();
    assert_eq!(down.len(), 1);
    assert_eq!(down[0].0, pc);
    assert!(!dp.port(pc).unwrap().up);
    drain(&a);
    drain(&b);
    a.send(&frame(C, A, 10)); // C's MAC was forgotten with its port: floods to B only
    b.send(&frame(A, B, 10));
    run(&mut dp);
    assert_eq!(drain(&b).len(), 1);
    assert_eq!(drain(&a).len(), 1);
    assert_eq!(dp.up_ports(), 2);
}

#[test]
fn busy_poll_keeps_the_loop_awake_after_traffic_only() {
    use std::time::Instant;
    let (mut dp, _, [(_, a), (_, _b)]) = one_bridge();
    dp.set_busy_poll(Duration::from_secs(30));
    run(&mut dp);
    // No frame yet: the loop sleeps for the timeout it was given.
    let t = Instant::now();
    dp.poll_once(Some(Duration::from_millis(200))).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(100));
    a.send(&frame(BCAST, A, 10));
    run(&mut dp);
    // After a frame it polls without sleeping, however long the timeout.
    let t = Instant::now();
    for _ in 0..10 {
        dp.poll_once(Some(Duration::from_millis(200))).unwrap();
    }
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
}

/// A handler joining two internal ports: what enters one leaves by the other, with the
/// MACs rewritten the way a router would. Counts what it saw.
struct Joiner {
    ports: [PortId; 2],
    macs: [[u8; 6]; 2],
    peer_macs: [[u8; 6]; 2],
    seen: usize,
}

impl vswitch::Handler for Joiner {
    fn handle(
        &mut self,
        port: PortId,
        buf: vswitch::pool::BufId,
        len: usize,
        out: &mut vswitch::Emitter<'_>,
        _now: std::time::Instant,
    ) -> vswitch::Verdict {
        self.seen += 1;
        let data = out.data(buf, len);
        if data[10] & 1 == 1 {
            return vswitch::Verdict::Release; // broadcasts end here
        }
        let to = if port == self.ports[0] { 1 } else { 0 };
        data[10..16].copy_from_slice(&self.peer_macs[to]);
        data[16..22].copy_from_slice(&self.macs[to]);
        vswitch::Verdict::Inject {
            via: self.ports[to],
            len,
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[test]
fn internal_ports_carry_frames_between_bridges_through_their_handler() {
    const R0: [u8; 6] = [2, 0, 0, 0, 1, 0];
    const R1: [u8; 6] = [2, 0, 0, 0, 1, 1];
    let mut dp = Datapath::new(64).unwrap();
    let br0 = bridge(&mut dp, "br0");
    let br1 = bridge(&mut dp, "br1");
    let (_, a) = port(&mut dp, br0, "a");
    let (_, c) = port(&mut dp, br1, "c");
    // Port ids of the internal ports are known before they are added: 2 and 3.
    let h = dp.add_handler(Box::new(Joiner {
        ports: [PortId(2), PortId(3)],
        macs: [R0, R1],
        peer_macs: [A, C],
        seen: 0,
    }));
    let r0 = dp.add_internal_port(PortInfo::named("r0", br0), h).unwrap();
    let r1 = dp.add_internal_port(PortInfo::named("r1", br1), h).unwrap();
    assert_eq!((r0, r1), (PortId(2), PortId(3)));
    // A broadcast reaches the handler as a copy (and c never sees it: other bridge).
    a.send(&frame(BCAST, A, 20));
    run(&mut dp);
    assert!(drain(&c).is_empty());
    // Unicast to the router MAC crosses to br1, rewritten, and reaches c.
    c.send(&frame(BCAST, C, 20)); // let br1 learn C
    run(&mut dp);
    let sent = frame(R0, A, 100);
    a.send(&sent);
    run(&mut dp);
    let got = drain(&c);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0][10..16], &C);
    assert_eq!(&got[0][16..22], &R1);
    assert_eq!(&got[0][22..], &sent[22..]);
    let j = dp
        .handler(h)
        .unwrap()
        .as_any()
        .downcast_ref::<Joiner>()
        .unwrap();
    assert_eq!(j.seen, 3);
    assert_eq!(dp.port(r0).unwrap().counters.tx_packets, 2);
    assert_eq!(dp.port(r1).unwrap().counters.rx_packets, 1);
    assert_eq!(
        dp.pool().available(),
        dp.pool().capacity(),
        "no buffer leaked"
    );
}

/// A handler that sends everything straight back into its own bridge, addressed to
/// itself: a loop the datapath must cut.
struct Boomerang {
    me: [u8; 6],
}

impl vswitch::Handler for Boomerang {
    fn handle(
        &mut self,
        port: PortId,
        buf: vswitch::pool::BufId,
        len: usize,
        out: &mut vswitch::Emitter<'_>,
        _now: std::time::Instant,
    ) -> vswitch::Verdict {
        let data = out.data(buf, len);
        data[10..16].copy_from_slice(&self.me);
        data[16..22].copy_from_slice(&[2, 9, 9, 9, 9, 9]);
        // Injected via another internal port on the same bridge, towards us again.
        let via = PortId(if port.0 == 1 { 2 } else { 1 });
        vswitch::Verdict::Inject { via, len }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[test]
fn a_loop_between_handlers_is_cut_and_counted() {
    let mut dp = Datapath::new(64).unwrap();
    let br0 = bridge(&mut dp, "br0");
    let (_, a) = port(&mut dp, br0, "a");
    let h = dp.add_handler(Box::new(Boomerang {
        me: [2, 7, 7, 7, 7, 7],
    }));
    dp.add_internal_port(PortInfo::named("x", br0), h).unwrap();
    dp.add_internal_port(PortInfo::named("y", br0), h).unwrap();
    a.send(&frame([2, 7, 7, 7, 7, 7], A, 20));
    run(&mut dp);
    let loops: u64 = dp
        .ports()
        .map(|p| p.counters.dropped(DropReason::InternalLoop))
        .sum();
    assert!(loops >= 1, "the loop was not cut");
    assert_eq!(
        dp.pool().available(),
        dp.pool().capacity(),
        "no buffer leaked"
    );
}

#[test]
fn a_removed_port_is_forgotten_and_its_slot_reused() {
    let (mut dp, br, [(_, a), (pb, b), (_, c)]) = one_bridge();
    // B is learned on its port; then B's port is detached.
    b.send(&frame(A, B, 50));
    run(&mut dp);
    drain(&a);
    drain(&c);
    assert!(dp.remove_port(pb));
    assert!(!dp.remove_port(pb), "once");
    assert!(dp.port(pb).is_none());
    assert_eq!(dp.port_by_name("b"), None);
    // B is no longer known: a frame for it floods to the ports left.
    a.send(&frame(B, A, 50));
    run(&mut dp);
    assert_eq!(drain(&c).len(), 1);
    // The next port takes the free slot, under its own name.
    let (pd, d) = port(&mut dp, br, "d");
    assert_eq!(pd, pb);
    assert_eq!(dp.port_by_name("d"), Some(pd));
    a.send(&frame(BCAST, A, 50));
    run(&mut dp);
    assert_eq!(drain(&d).len(), 1);
}

/// Frames to one port leave in the order they were forwarded, whether they go out in
/// a batch of small frames (io_uring) or by themselves (a super-frame too long for a
/// batch slot), and the counters see each.
#[test]
fn small_frames_and_super_frames_to_one_port_keep_their_order() {
    let (mut dp, _, [(_, a), (pb, b)]) = one_bridge();
    b.send(&frame(BCAST, B, 10));
    run(&mut dp);
    drain(&a);
    let mut sent = Vec::new();
    for i in 0..30u8 {
        let mut f = if i % 10 == 5 {
            tso_frame(B, A, 20_000 + usize::from(i), 1448)
        } else {
            frame(B, A, 40 + usize::from(i))
        };
        let last = f.len() - 1;
        f[last] = i;
        a.send(&f);
        sent.push(f);
    }
    run(&mut dp);
    assert_eq!(drain(&b), sent);
    let c = dp.port(pb).unwrap().counters.clone();
    assert_eq!(c.tx_packets, 30);
    assert_eq!(
        c.tx_bytes,
        sent.iter().map(|f| f.len() as u64 - 10).sum::<u64>()
    );
    assert!(
        dp.write_batching() || vswitch::uring::WriteBatch::new().is_err(),
        "thread 0 writes in batches where io_uring works"
    );
}

/// A container that stops reading fills its port's queue: what does not fit is
/// dropped and counted as egress_full, as a write(2) that says EAGAIN is, the loop
/// never waits for it, and the other ports keep getting their frames.
#[test]
fn a_port_that_stops_reading_costs_only_its_own_frames() {
    let (mut dp, _, [(_, a), (pb, b), (_, c)]) = one_bridge();
    b.send(&frame(BCAST, B, 10));
    c.send(&frame(BCAST, C, 10));
    run(&mut dp);
    drain(&a);
    drain(&b);
    drain(&c);
    let before = dp.port(pb).unwrap().counters.tx_packets;
    // B never reads again: a socket pair holds a few hundred small messages.
    let started = std::time::Instant::now();
    for round in 0..40 {
        for _ in 0..50 {
            a.send(&frame(B, A, 200));
        }
        a.send(&frame(C, A, 60 + round));
        run(&mut dp);
        assert_eq!(drain(&c).len(), 1, "round {round}: C gets its frame");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the loop waited for a full queue"
    );
    let counters = dp.port(pb).unwrap().counters.clone();
    let full = counters.dropped(DropReason::EgressFull);
    assert!(full > 0, "B's queue filled: {counters:?}");
    assert_eq!(counters.tx_packets - before + full, 40 * 50);
    assert_eq!(drain(&b).len() as u64, counters.tx_packets - before);
}

/// A capture whose reader stops reading holds at most CAPTURE_BYTES of copies (TSO
/// super-frames would otherwise queue CAPTURE_QUEUE x 64 KiB): the rest are counted
/// as capture_dropped, and every frame still reaches its port.
#[test]
fn a_stalled_capture_holds_at_most_capture_bytes_of_copies() {
    let (mut dp, _, [(_, a), (pb, b)]) = one_bridge();
    b.send(&frame(BCAST, B, 10));
    run(&mut dp);
    drain(&a);
    let capture = dp.capture(pb).unwrap();
    let sent = 300;
    let len = tso_frame(B, A, 60_000, 1448).len();
    let mut delivered = 0;
    for _ in 0..sent {
        // One at a time: a socket pair holds only a few of them.
        a.send(&tso_frame(B, A, 60_000, 1448));
        for _ in 0..2 {
            dp.poll_once(Some(Duration::ZERO)).unwrap();
        }
        delivered += drain(&b).len();
    }
    run(&mut dp);
    delivered += drain(&b).len();
    assert_eq!(delivered, sent, "every frame reaches its port");
    // Now the reader reads: what waited, and its size.
    let (mut queued, mut bytes) = (0u64, 0usize);
    while let Ok(c) = capture.recv_timeout(Duration::ZERO) {
        queued += 1;
        bytes += c.frame.len();
    }
    let dropped = dp.port(pb).unwrap().counters.capture_dropped;
    assert!(
        bytes <= vswitch::datapath::CAPTURE_BYTES,
        "{bytes} bytes queued"
    );
    assert!(
        bytes + len > vswitch::datapath::CAPTURE_BYTES,
        "{bytes} bytes queued: the bound is {} bytes, not fewer",
        vswitch::datapath::CAPTURE_BYTES
    );
    assert_eq!(
        queued + dropped,
        sent as u64,
        "{queued} queued, {dropped} dropped"
    );
    // Read, the room is back: the next copies queue again.
    a.send(&tso_frame(B, A, 60_000, 1448));
    run(&mut dp);
    assert!(capture.recv_timeout(Duration::from_secs(1)).is_ok());
    assert_eq!(dp.port(pb).unwrap().counters.capture_dropped, dropped);
}
