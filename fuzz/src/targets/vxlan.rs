//! VXLAN: a tunnel endpoint with two peers and two VNIs. Datagrams from a peer (or a
//! stranger) go through `Endpoint::accept` and then the receive path of the
//! endpoint's shell: `offload::rx_checksums`, `max_rx_frame`/`max_frame_len`,
//! `rx_super_frame` for a TCP super-frame, GRO for the rest. Frames leaving by a VNI
//! port go through `Endpoint::egress`, then `offload::segment` (a super-frame) or
//! `offload::finish`.
//!
//! Invariants: what the receive path hands a bridge is a frame that bridge takes
//! (never refused for the offloads or the size tapnet wrote); a super-frame is cut
//! into segments that each fit the VNI's MTU, carry valid IPv4 and TCP checksums and
//! together carry exactly its payload, and, for one the bridge admitted, no more of
//! them than the ingress check allows; a plain frame `egress` takes has its partial
//! checksum finished.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use encap::endpoint::{flow_hash, Endpoint};
use encap::offload;
use vswitch::frame::{check_ingress, max_frame_len, VnetHdr, MAX_GSO_SEGS, VNET_HDR_LEN};
use vswitch::wire::checksum::{classify, Checksums};
use vswitch::wire::ethernet::ETHERTYPE_IPV4;
use vswitch::wire::ipv4::Ipv4Packet;
use vswitch::wire::tcp::TcpPacket;
use vswitch::wire::{vxlan, PROTO_TCP, PROTO_UDP};
use vswitch::{Mac, PortId};

use super::gro::{sent, Gro};
use super::ingress::sums_code;
use super::step;
use crate::frames::*;
use crate::input::{self, decode};
use crate::{invariant, Cov, Target};

pub const TARGET: Target = Target {
    name: "vxlan",
    seeds,
    run,
    max_len: 200_000,
    text: false,
};

const PEERS: [&str; 3] = ["192.0.2.2:4789", "192.0.2.3:4789", "192.0.2.99:4789"];
/// VNI 42's bridge MTU, by the configuration byte (a VNI bridge's range: 68 to
/// 65485).
const MTUS: [u32; 8] = [1450, 1500, 9000, 68, 576, 65485, 1400, 1280];
const LOCAL: Mac = Mac([2, 0, 0, 0, 0, 1]);
const REMOTE: Mac = Mac([2, 0, 0, 0, 9, 1]);

const RX: u8 = 0;
const TX: u8 = 2;
const TICK: u8 = 3;

fn seeds() -> Vec<Vec<u8>> {
    let (l, r) = (sa("10.42.0.2:5201"), sa("10.42.0.9:40000"));
    let eth = |f: Vec<u8>| f[VNET_HDR_LEN..].to_vec();
    let arp = eth(arp_request(
        REMOTE,
        "10.42.0.9".parse().unwrap(),
        "10.42.0.2".parse().unwrap(),
    ));
    let rx_arp = vxlan(42, &arp);
    let segs: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            vxlan(
                42,
                &eth(ipv4_frame(
                    LOCAL,
                    REMOTE,
                    &tcp_data(r, l, 1 + i * 1398, 1398),
                )),
            )
        })
        .collect();
    let partial_segs: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            vxlan(
                42,
                &eth(ipv4_frame(
                    LOCAL,
                    REMOTE,
                    &partial(tcp_data(r, l, 1 + i * 100, 100)),
                )),
            )
        })
        .collect();
    let small_segs: Vec<Vec<u8>> = (0..8)
        .map(|i| {
            vxlan(
                42,
                &eth(ipv4_frame(LOCAL, REMOTE, &tcp_data(r, l, 1 + i * 20, 20))),
            )
        })
        .collect();
    let super_rx = vxlan(
        42,
        &eth(ipv4_frame(
            LOCAL,
            REMOTE,
            &partial(tcp_data(r, l, 1, 20000)),
        )),
    );
    let udp_rx = vxlan(7, &eth(ipv4_frame(LOCAL, REMOTE, &partial(udp(r, l, 200)))));
    let big_udp = vxlan(42, &eth(ipv4_frame(LOCAL, REMOTE, &udp(r, l, 3000))));
    let tso_tx = tso(REMOTE, LOCAL, l, r, 1398, 30);
    let plain_tx = frame(
        needs_csum(PROTO_UDP),
        REMOTE,
        LOCAL,
        ETHERTYPE_IPV4,
        &partial(udp(l, r, 500)),
    );
    let bcast_tx = arp_request(
        LOCAL,
        "10.42.0.2".parse().unwrap(),
        "10.42.0.9".parse().unwrap(),
    );
    let tcp_tx = frame(
        needs_csum(PROTO_TCP),
        REMOTE,
        LOCAL,
        ETHERTYPE_IPV4,
        &partial(tcp_data(l, r, 9, 700)),
    );

    let mut out = Vec::new();
    for config in [0u8, 1, 2, 4, 6] {
        let mut records: Vec<(u8, u8, u16, &[u8])> = vec![
            (RX, 0, 1, &rx_arp[..]),
            (TX, 0, 1, &bcast_tx[..]),
            (TX, 0, 1, &tcp_tx[..]),
            (TX, 0, 1, &tso_tx[..]),
            (TX, 0, 1, &plain_tx[..]),
        ];
        for s in segs.iter().chain(&partial_segs).chain(&small_segs) {
            records.push((RX, 0, 0, &s[..]));
        }
        records.extend_from_slice(&[
            (RX, 1, 1, &super_rx[..]),
            (RX, 1, 1, &udp_rx[..]),
            (RX, 0, 1, &big_udp[..]),
            (RX, 2, 1, &rx_arp[..]),
            (TICK | 0x80, 0, 400, &[][..]),
            (TX, 0, 1, &tcp_tx[..]),
        ]);
        out.push(input::encode(config, &records));
    }
    out
}

fn run(data: &[u8], cov: &mut Cov) {
    let (config, records) = decode(data);
    let peers: Vec<SocketAddr> = PEERS[..2].iter().map(|p| SocketAddr::V4(sa(p))).collect();
    let mut ep = Endpoint::new(
        &peers,
        4 + (config as usize >> 3) % 8,
        Duration::from_secs(300),
    );
    let mtu42 = MTUS[config as usize % MTUS.len()];
    ep.add_vni(42, PortId(1), mtu42);
    ep.add_vni(7, PortId(2), 1450);
    let mut now = Instant::now();
    let mut gro = Gro::default();
    let mut gro_port = None;
    let mut scratch = vec![0u8; vxlan::HEADER_LEN + 65535 + 64];
    for rec in &records {
        now += step(rec);
        match rec.op & 3 {
            RX | 1 => {
                let from = SocketAddr::V4(sa(PEERS[rec.arg as usize % 3]));
                let got = match ep.accept(from, rec.frame, now) {
                    Ok(got) => got,
                    Err(reason) => {
                        cov.hit(1, reason as u64);
                        continue;
                    }
                };
                let (port, mtu) = (got.port, got.mtu);
                cov.hit(2, port.0 as u64);
                // The inner frame behind a zero virtio-net header, where the VXLAN
                // header was.
                let mut buf = vec![0u8; VNET_HDR_LEN];
                buf.extend_from_slice(&rec.frame[vxlan::HEADER_LEN..]);
                let (sums, len) = offload::rx_checksums(&mut buf);
                invariant!(len <= buf.len(), "rx_checksums made the frame longer");
                ep.rx_checksums(got.peer, sums);
                cov.hit(3, sums_code(sums));
                let frame = &mut buf[..len];
                if gro_port != Some(port) {
                    if let Some(m) = gro_port.and_then(|p: PortId| mtu_of(&ep, p)) {
                        gro.flush(m, cov);
                    }
                    gro_port = Some(port);
                }
                if len - VNET_HDR_LEN > max_frame_len(mtu, &frame[VNET_HDR_LEN..]) {
                    if offload::rx_super_frame(frame, mtu, sums) {
                        cov.hit(4, 1);
                        gro.flush(mtu, cov);
                        sent(frame, mtu, "a super-frame from a tunnel", cov);
                    } else {
                        cov.hit(4, 0);
                    }
                    continue;
                }
                gro.push(frame, sums, mtu, cov);
            }
            TX => {
                if let Some(m) = gro_port.take().and_then(|p| mtu_of(&ep, p)) {
                    gro.flush(m, cov);
                }
                let port = PortId(1 + rec.arg as usize % 3);
                egress(&ep, port, rec.frame, now, &mut scratch, cov);
            }
            _ => {
                if let Some(m) = gro_port.take().and_then(|p| mtu_of(&ep, p)) {
                    gro.flush(m, cov);
                }
                ep.tick(now);
            }
        }
    }
    if let Some(m) = gro_port.and_then(|p| mtu_of(&ep, p)) {
        gro.flush(m, cov);
    }
}

fn mtu_of(ep: &Endpoint, port: PortId) -> Option<u32> {
    ep.segments().iter().find(|s| s.port == port).map(|s| s.mtu)
}

/// A frame (virtio-net header, then Ethernet) leaving by VNI port `port`.
fn egress(
    ep: &Endpoint,
    port: PortId,
    frame: &[u8],
    now: Instant,
    scratch: &mut [u8],
    cov: &mut Cov,
) {
    let e = match ep.egress(port, frame, now) {
        Ok(e) => e,
        Err(reason) => {
            cov.hit(5, reason as u64);
            return;
        }
    };
    let mtu = mtu_of(ep, port).expect("egress found it") as usize;
    let admitted = check_ingress(frame, mtu as u32).is_ok();
    let vnet = VnetHdr::parse(frame).expect("egress parsed it");
    let eth = &frame[VNET_HDR_LEN..];
    let _ = flow_hash(eth);
    cov.hit(6, e.cut.is_some() as u64 | (admitted as u64) << 1);
    let Some(cut) = e.cut else {
        let mut copy = eth.to_vec();
        let done = offload::finish(&vnet, &mut copy);
        invariant!(
            done.is_ok(),
            "a plain frame egress took cannot be finished: {done:?}"
        );
        return;
    };
    invariant!(
        cut.max_segment() <= mtu + 14,
        "segments of {} bytes for MTU {mtu}",
        cut.max_segment()
    );
    let headers = cut.headers;
    let mut payload = Vec::new();
    let mut seqs = Vec::new();
    let result = offload::segment(&vnet, eth, scratch, vxlan::HEADER_LEN, |d| {
        vxlan::emit(d, e.vni);
        let seg = &d[vxlan::HEADER_LEN..];
        invariant!(
            seg.len() <= mtu + 14,
            "a segment of {} bytes for MTU {mtu}",
            seg.len()
        );
        let ip = Ipv4Packet::new_checked(&seg[14..]);
        invariant!(
            ip.is_ok_and(|ip| ip.verify_checksum() && ip.total_len() == seg.len() - 14),
            "a segment's IPv4 header is broken"
        );
        // (For what the bridge admitted: a fragment, say, is cut too, but never
        // reaches this far.)
        let sums = classify(&seg[14..]);
        invariant!(
            sums == Checksums::Valid || !admitted,
            "a segment's checksums: {sums:?}"
        );
        let ip = Ipv4Packet::new_checked(&seg[14..]).unwrap();
        seqs.push(TcpPacket::new_checked(ip.payload()).map(|t| t.seq()));
        payload.extend_from_slice(&seg[headers..]);
    });
    let n = match result {
        Ok(n) => n,
        Err(err) => {
            cov.hit(7, err as u64);
            return;
        }
    };
    cov.hit(8, n.min(300) as u64);
    invariant!(n == seqs.len(), "segment said {n}, sent {}", seqs.len());
    invariant!(
        payload[..] == eth[headers.min(eth.len())..],
        "the segments do not carry the super-frame's payload"
    );
    if let Some(first) = Ipv4Packet::new_checked(&eth[14..])
        .ok()
        .filter(|ip| ip.protocol() == PROTO_TCP)
        .and_then(|ip| TcpPacket::new_checked(ip.payload()).map(|t| t.seq()))
    {
        invariant!(
            seqs[0] == Some(first),
            "the first segment's sequence number moved"
        );
    }
    if admitted {
        invariant!(
            n <= MAX_GSO_SEGS,
            "a super-frame the bridge admitted was cut into {n} segments"
        );
    }
}
