//! The tunnel endpoint's receive path in the real poll loop, without root: VXLAN
//! datagrams sent over loopback to a `Vtep` on a bridge whose other port is a
//! socketpair (a stand-in for a TAP: message boundaries and virtio-net headers
//! alike). What a kernel VXLAN host over a veth sends with its default offloads
//! (checksums left partial, TSO super-frames whole) must come out as frames a
//! container's kernel accepts; a checksum that is simply wrong must not.

#[allow(dead_code)]
#[path = "../../vswitch/tests/seqpacket_port.rs"]
mod seqpacket_port;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use encap::vtep::VtepDrop;
use encap::{Vtep, VtepConfig};
use seqpacket_port::{pair, Peer};
use vswitch::checksum;
use vswitch::frame::{VnetHdr, GSO_TCPV4, GSO_TCPV6, VNET_F_NEEDS_CSUM, VNET_HDR_LEN};
use vswitch::gro::{self, Checksums};
use vswitch::{BridgeConfig, Datapath, HandlerId, PortInfo};

const MTU: u32 = 1450;
const VNI: u32 = 42;
/// Headers of the TCP segments built here: IPv4 (20) and TCP (20), no options.
const HEADERS: usize = 40;
const MSS: usize = MTU as usize - HEADERS;

struct Lab {
    dp: Datapath,
    vtep: HandlerId,
    container: Peer,
    /// The "kernel" peer's socket, on 127.0.0.1 like the endpoint.
    peer: UdpSocket,
    listen: SocketAddr,
}

/// A free UDP port on `ip` (taken, read and let go).
fn free_port(ip: IpAddr) -> u16 {
    UdpSocket::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn lab() -> Lab {
    lab_on(Ipv4Addr::LOCALHOST.into())
}

/// The endpoint and its peer on loopback `ip`: 127.0.0.1, or ::1 (an IPv6
/// underlay).
fn lab_on(ip: IpAddr) -> Lab {
    let mut dp = Datapath::new(256).unwrap();
    let br = dp.add_bridge(BridgeConfig {
        name: "ov".into(),
        mtu: MTU,
        fdb_max: 64,
        fdb_aging: Duration::from_secs(300),
    });
    let (io, container) = pair(true);
    dp.add_port(PortInfo::named("c", br), Box::new(io)).unwrap();
    let peer = UdpSocket::bind((ip, 0)).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let listen = SocketAddr::new(ip, free_port(ip));
    let mut vtep = Vtep::bind(&VtepConfig {
        listen,
        peers: vec![peer_addr],
        remote_max: 64,
        remote_aging: Duration::from_secs(300),
    })
    .unwrap();
    vtep.add_vni(VNI, dp.next_port_id(), MTU);
    let handler = dp.add_handler(Box::new(vtep));
    dp.add_internal_port(PortInfo::named("vxlan:ov", br), handler)
        .unwrap();
    Lab {
        dp,
        vtep: handler,
        container,
        peer,
        listen,
    }
}

impl Lab {
    /// Sends `eth` from the peer in a VXLAN datagram for VNI 42.
    fn send(&self, eth: &[u8]) {
        let mut d = vec![0x08, 0, 0, 0, 0, 0, VNI as u8, 0];
        d.extend_from_slice(eth);
        self.peer.send_to(&d, self.listen).unwrap();
    }

    /// Runs the poll loop a little, and returns what reached the container.
    fn deliver(&mut self) -> Vec<Vec<u8>> {
        for _ in 0..6 {
            self.dp.poll_once(Some(Duration::from_millis(5))).unwrap();
        }
        let mut buf = vec![0u8; 70_000];
        let mut out = Vec::new();
        while let Some(n) = self.container.recv(&mut buf) {
            out.push(buf[..n].to_vec());
        }
        out
    }

    fn vtep(&self) -> &Vtep {
        self.dp
            .handler(self.vtep)
            .and_then(|h| h.as_any().downcast_ref::<Vtep>())
            .unwrap()
    }
}

/// The folded pseudo-header sum (not inverted) of IPv4 packet `ip`.
fn pseudo_sum(ip: &[u8]) -> u16 {
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let mut pseudo = [0u8; 12];
    pseudo[..8].copy_from_slice(&ip[12..20]);
    pseudo[9] = ip[9];
    pseudo[10..12].copy_from_slice(&((total - 20) as u16).to_be_bytes());
    checksum::sum(&pseudo)
}

#[derive(Clone, Copy, PartialEq)]
enum Sum {
    /// Finished, as a NIC (or a sender with tx offload off) leaves it.
    Valid,
    /// The pseudo-header sum: CHECKSUM_PARTIAL, as a veth leaves it.
    Partial,
    /// Neither.
    Wrong,
}

/// An Ethernet frame to the container (broadcast: the bridge floods it there) with
/// an IPv4 TCP (`proto` 6) or UDP (17) packet of `payload` bytes.
fn packet(proto: u8, seq: u32, payload: usize, sum: Sum) -> Vec<u8> {
    let l4 = if proto == 6 { 20 } else { 8 };
    let total = 20 + l4 + payload;
    let mut f = vec![0u8; 14 + total];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0x0b]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&[10, 62, 0, 3]);
    ip[16..20].copy_from_slice(&[10, 62, 0, 2]);
    let c = checksum::checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip[20..22].copy_from_slice(&5201u16.to_be_bytes());
    ip[22..24].copy_from_slice(&40000u16.to_be_bytes());
    let csum_at = if proto == 6 {
        ip[24..28].copy_from_slice(&seq.to_be_bytes());
        ip[28..32].copy_from_slice(&7u32.to_be_bytes());
        ip[32] = 5 << 4;
        ip[33] = 0x10; // ACK
        ip[34..36].copy_from_slice(&500u16.to_be_bytes());
        36
    } else {
        ip[24..26].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
        26
    };
    for (i, b) in ip[20 + l4..].iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(31).wrapping_add(seq) as u8;
    }
    let ps = pseudo_sum(ip);
    let field = match sum {
        Sum::Partial => ps,
        Sum::Valid | Sum::Wrong => !checksum::sum_with(&ip[20..], ps),
    };
    ip[csum_at..csum_at + 2].copy_from_slice(&field.to_be_bytes());
    if sum == Sum::Wrong {
        ip[csum_at + 1] ^= 0x04;
    }
    f
}

/// Finishes a NEEDS_CSUM frame's checksum as the receiving kernel's offload would
/// (`frame`: virtio-net header, then Ethernet), and says whether the IP packet then
/// verifies.
fn finishes_valid(frame: &[u8]) -> bool {
    let vnet = VnetHdr::parse(frame).unwrap();
    let mut eth = frame[VNET_HDR_LEN..].to_vec();
    if vnet.flags & VNET_F_NEEDS_CSUM != 0 {
        encap::offload::finish_checksum(
            &mut eth,
            vnet.csum_start as usize,
            vnet.csum_offset as usize,
        )
        .unwrap();
    }
    gro::checksums(&eth[14..]) == Checksums::Valid
}

#[test]
fn partial_checksums_from_a_kernel_peer_reach_the_container_as_needs_csum() {
    let mut lab = lab();
    // A UDP datagram and a lone TCP segment (a pure ACK), both partial.
    let udp = packet(17, 0, 100, Sum::Partial);
    lab.send(&udp);
    let ack = packet(6, 1000, 0, Sum::Partial);
    lab.send(&ack);
    let got = lab.deliver();
    assert_eq!(got.len(), 2, "both delivered");
    let v = VnetHdr::parse(&got[0]).unwrap();
    assert_eq!(
        (v.flags, v.csum_start, v.csum_offset),
        (VNET_F_NEEDS_CSUM, 34, 6)
    );
    assert_eq!(&got[0][VNET_HDR_LEN..], &udp[..]);
    let v = VnetHdr::parse(&got[1]).unwrap();
    assert_eq!(
        (v.flags, v.csum_start, v.csum_offset),
        (VNET_F_NEEDS_CSUM, 34, 16)
    );
    assert!(!v.is_gso());
    assert!(got.iter().all(|f| finishes_valid(f)));
    let stats = lab.vtep().peers()[0].stats;
    assert_eq!((stats.rx_partial_checksum, stats.rx_bad_checksum), (2, 0));
}

#[test]
fn a_run_of_partial_segments_is_merged_into_one_valid_super_frame() {
    let mut lab = lab();
    // Ten full segments of one flow, partial but for one finished among them, then
    // one whose checksum is simply wrong, then one more partial.
    let mut payload = Vec::new();
    for k in 0..10u32 {
        let sum = if k == 4 { Sum::Valid } else { Sum::Partial };
        let seg = packet(6, 1000 + k * MSS as u32, MSS, sum);
        payload.extend_from_slice(&seg[14 + HEADERS..]);
        lab.send(&seg);
    }
    let wrong = packet(6, 1000 + 10 * MSS as u32, MSS, Sum::Wrong);
    lab.send(&wrong);
    let after = packet(6, 1000 + 11 * MSS as u32, MSS, Sum::Partial);
    lab.send(&after);
    let got = lab.deliver();
    assert_eq!(
        got.len(),
        3,
        "one super-frame, the wrong one alone, the last"
    );
    let v = VnetHdr::parse(&got[0]).unwrap();
    assert_eq!(
        v,
        VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: (14 + HEADERS) as u16,
            gso_size: MSS as u16,
            csum_start: 34,
            csum_offset: 16,
        }
    );
    assert_eq!(&got[0][VNET_HDR_LEN + 14 + HEADERS..], &payload[..]);
    assert!(
        finishes_valid(&got[0]),
        "the super-frame, finished, verifies"
    );
    // The wrong one goes on unmarked and unchanged, for the container to drop.
    assert_eq!(VnetHdr::parse(&got[1]).unwrap(), VnetHdr::default());
    assert_eq!(&got[1][VNET_HDR_LEN..], &wrong[..]);
    assert!(!finishes_valid(&got[1]));
    assert_eq!(
        VnetHdr::parse(&got[2]).unwrap().flags,
        VNET_F_NEEDS_CSUM,
        "the segment after the wrong one goes on alone, NEEDS_CSUM"
    );
    let stats = lab.vtep().peers()[0].stats;
    assert_eq!((stats.rx_partial_checksum, stats.rx_bad_checksum), (10, 1));
}

#[test]
fn a_tso_super_frame_sent_whole_goes_to_the_container_as_gso() {
    let mut lab = lab();
    // What a kernel VXLAN device over a veth sends for a 20 KB TSO skb: one
    // datagram, its checksum partial over the whole length.
    let big = packet(6, 5000, 20_000, Sum::Partial);
    lab.send(&big);
    // UDP that large cannot be cut back into its datagrams: oversize (before its
    // checksum is looked at).
    lab.send(&packet(17, 0, 3000, Sum::Partial));
    // Nor is a TCP one whose checksum is wrong taken (counted as such, then dropped).
    lab.send(&packet(6, 90_000, 3000, Sum::Wrong));
    let got = lab.deliver();
    assert_eq!(got.len(), 1);
    let v = VnetHdr::parse(&got[0]).unwrap();
    assert_eq!(
        (v.gso_type, v.gso_size, v.hdr_len),
        (GSO_TCPV4, MSS as u16, 54)
    );
    assert_eq!(&got[0][VNET_HDR_LEN..], &big[..]);
    assert!(finishes_valid(&got[0]));
    let vtep = lab.vtep();
    let stats = vtep.peers()[0].stats;
    assert_eq!(stats.rx_gso_frames, 1);
    assert_eq!(stats.rx_partial_checksum, 1);
    assert_eq!(stats.rx_bad_checksum, 1);
    assert_eq!(vtep.dropped(VtepDrop::Oversize), 2);
}

#[test]
fn an_ipv6_underlay_takes_datagrams_from_its_ipv6_peer_only() {
    let mut lab = lab_on(Ipv6Addr::LOCALHOST.into());
    assert!(lab.listen.is_ipv6());
    let udp = packet(17, 0, 100, Sum::Partial);
    lab.send(&udp);
    let got = lab.deliver();
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0][VNET_HDR_LEN..], &udp[..]);
    assert_eq!(lab.vtep().peers()[0].stats.rx_packets, 1);
    // A stranger on the same loopback, from another port: the address is the
    // peer's, so it is taken (peers are known by address, as the kernel's are).
    let other = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
    let mut d = vec![0x08, 0, 0, 0, 0, 0, VNI as u8, 0];
    d.extend_from_slice(&udp);
    other.send_to(&d, lab.listen).unwrap();
    assert_eq!(lab.deliver().len(), 1);
    // IPv4 cannot reach an IPv6 endpoint's socket (IPV6_V6ONLY): nothing arrives,
    // not even a stranger to count.
    let v4 = UdpSocket::bind("127.0.0.1:0").unwrap();
    let _ = v4.send_to(&d, (Ipv4Addr::LOCALHOST, lab.listen.port()));
    assert!(lab.deliver().is_empty());
    assert_eq!(lab.vtep().dropped(VtepDrop::NotPeer), 0);
}

/// An Ethernet frame to the container (broadcast) with a TCP/IPv6 segment of
/// `payload` bytes, its checksum partial (as a veth leaves it) or valid.
fn packet6(seq: u32, payload: usize, partial: bool) -> Vec<u8> {
    let plen = 20 + payload;
    let mut f = vec![0u8; 14 + 40 + plen];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0x0b]);
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    let ip = &mut f[14..];
    ip[0] = 0x60;
    ip[1..4].copy_from_slice(&[0x0a, 0xbc, 0xde]); // flow label 0xabcde
    ip[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
    ip[6] = 6;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&"fd00:62::3".parse::<Ipv6Addr>().unwrap().octets());
    ip[24..40].copy_from_slice(&"fd00:62::2".parse::<Ipv6Addr>().unwrap().octets());
    ip[40..42].copy_from_slice(&5201u16.to_be_bytes());
    ip[42..44].copy_from_slice(&40000u16.to_be_bytes());
    ip[44..48].copy_from_slice(&seq.to_be_bytes());
    ip[48..52].copy_from_slice(&7u32.to_be_bytes());
    ip[52] = 5 << 4;
    ip[53] = 0x10;
    ip[54..56].copy_from_slice(&500u16.to_be_bytes());
    for (i, b) in ip[60..].iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(13).wrapping_add(seq) as u8;
    }
    let mut pseudo = ip[8..40].to_vec();
    pseudo.extend_from_slice(&(plen as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 6]);
    let ps = checksum::sum(&pseudo);
    let field = if partial {
        ps
    } else {
        !checksum::sum_with(&ip[40..], ps)
    };
    ip[56..58].copy_from_slice(&field.to_be_bytes());
    f
}

#[test]
fn ipv6_segments_from_a_kernel_peer_merge_into_a_tcpv6_super_frame() {
    let mut lab = lab_on(Ipv6Addr::LOCALHOST.into());
    // Headers: IPv6 (40) and TCP (20).
    let mss = MTU as usize - 60;
    let mut payload = Vec::new();
    for k in 0..8u32 {
        let seg = packet6(100 + k * mss as u32, mss, k != 5);
        payload.extend_from_slice(&seg[14 + 60..]);
        lab.send(&seg);
    }
    // A lone partial pure ACK goes on NEEDS_CSUM at the IPv6 offsets.
    let ack = packet6(100 + 8 * mss as u32, 0, true);
    lab.send(&ack);
    let got = lab.deliver();
    assert_eq!(got.len(), 2, "one super-frame and the ACK");
    let v = VnetHdr::parse(&got[0]).unwrap();
    assert_eq!(
        v,
        VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: GSO_TCPV6,
            hdr_len: 14 + 60,
            gso_size: mss as u16,
            csum_start: 54,
            csum_offset: 16,
        }
    );
    assert_eq!(&got[0][VNET_HDR_LEN + 14 + 60..], &payload[..]);
    assert!(
        finishes_valid(&got[0]),
        "the super-frame, finished, verifies"
    );
    let v = VnetHdr::parse(&got[1]).unwrap();
    assert_eq!(
        (v.flags, v.gso_type, v.csum_start, v.csum_offset),
        (VNET_F_NEEDS_CSUM, 0, 54, 16)
    );
    assert!(finishes_valid(&got[1]));
    let stats = lab.vtep().peers()[0].stats;
    assert_eq!((stats.rx_gro_merged, stats.rx_gro_merged_v6), (7, 7));
    assert_eq!((stats.rx_partial_checksum, stats.rx_bad_checksum), (8, 0));

    // A TSO super-frame sent whole (a kernel vxlan over a veth): on as GSO_TCPV6.
    let big = packet6(90_000, 20_000, true);
    lab.send(&big);
    let got = lab.deliver();
    assert_eq!(got.len(), 1);
    let v = VnetHdr::parse(&got[0]).unwrap();
    assert_eq!(
        (v.gso_type, v.gso_size, v.hdr_len, v.csum_start),
        (GSO_TCPV6, mss as u16, 74, 54)
    );
    assert!(finishes_valid(&got[0]));
    assert_eq!(lab.vtep().peers()[0].stats.rx_gso_frames, 1);
}
