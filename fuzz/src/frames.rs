//! Valid frames for the seeds, built with the wire layer's own emitters: a virtio-net
//! header, Ethernet, then ARP, IPv4 with TCP, UDP or ICMP, fragments, TSO
//! super-frames and VXLAN datagrams.

use std::net::{Ipv4Addr, SocketAddrV4};

use vswitch::frame::{VNET_F_NEEDS_CSUM, VNET_HDR_LEN};
use vswitch::wire::arp::{ArpRepr, OP_REPLY, OP_REQUEST};
use vswitch::wire::ethernet::{EthernetRepr, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_VLAN};
use vswitch::wire::icmpv4::{IcmpRepr, ECHO_REQUEST};
use vswitch::wire::ipv4::{self, Ipv4Repr};
use vswitch::wire::tcp::{TcpRepr, ACK, PSH, SYN};
use vswitch::wire::virtio::{VnetHdr, GSO_TCPV4};
use vswitch::wire::{self, pseudo_sum, udp, vxlan, PROTO_TCP};
use vswitch::Mac;

pub fn sa(s: &str) -> SocketAddrV4 {
    s.parse().expect("a socket address")
}

/// A zero virtio-net header (or `vnet`), an Ethernet header, then `payload`.
pub fn frame(vnet: VnetHdr, dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN + 14 + payload.len()];
    vnet.emit(&mut f);
    EthernetRepr {
        dst,
        src,
        ethertype,
    }
    .emit(&mut f[VNET_HDR_LEN..]);
    f[VNET_HDR_LEN + 14..].copy_from_slice(payload);
    f
}

pub fn ipv4_frame(dst: Mac, src: Mac, packet: &[u8]) -> Vec<u8> {
    frame(VnetHdr::default(), dst, src, ETHERTYPE_IPV4, packet)
}

/// The same frame with an 802.1Q tag (VLAN `vid`) after the MACs.
pub fn tagged(f: &[u8], vid: u16) -> Vec<u8> {
    let at = VNET_HDR_LEN + 12;
    let mut t = f[..at].to_vec();
    t.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
    t.extend_from_slice(&vid.to_be_bytes());
    t.extend_from_slice(&f[at..]);
    t
}

pub fn arp(op: u16, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = [0u8; 28];
    ArpRepr {
        operation: op,
        sender_mac: sha,
        sender_ip: spa,
        target_mac: tha,
        target_ip: tpa,
    }
    .emit(&mut a);
    let dst = if op == OP_REQUEST {
        Mac::BROADCAST
    } else {
        tha
    };
    frame(VnetHdr::default(), dst, sha, ETHERTYPE_ARP, &a)
}

pub fn arp_request(sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    arp(OP_REQUEST, sha, spa, Mac::default(), tpa)
}

pub fn arp_reply(sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr) -> Vec<u8> {
    arp(OP_REPLY, sha, spa, tha, tpa)
}

/// An IPv4/TCP packet (20-byte headers) with `payload`, its checksum finished.
pub fn tcp(src: SocketAddrV4, dst: SocketAddrV4, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let l4 = 20 + payload.len();
    let mut p = vec![0u8; 20 + l4];
    Ipv4Repr {
        src: *src.ip(),
        dst: *dst.ip(),
        protocol: PROTO_TCP,
        ttl: 64,
        ident: 1,
        dont_frag: true,
        payload_len: l4,
    }
    .emit(&mut p);
    TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        seq,
        ack: 1,
        flags,
        window: 502,
    }
    .emit(&mut p[20..]);
    p[40..].copy_from_slice(payload);
    wire::fill_l4_checksum(*src.ip(), *dst.ip(), PROTO_TCP, &mut p[20..]);
    p
}

pub fn tcp_syn(src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    tcp(src, dst, 1000, SYN, &[])
}

pub fn tcp_data(src: SocketAddrV4, dst: SocketAddrV4, seq: u32, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
    tcp(src, dst, seq, ACK | PSH, &payload)
}

/// `packet` (IPv4, TCP or UDP) with its checksum left partial, as a CHECKSUM_PARTIAL
/// sender leaves it.
pub fn partial(mut packet: Vec<u8>) -> Vec<u8> {
    let proto = packet[9];
    let (src, dst) = (
        Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
        Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]),
    );
    let at = 20 + if proto == PROTO_TCP { 16 } else { 6 };
    let sum = pseudo_sum(src, dst, proto, packet.len() - 20);
    packet[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    packet
}

/// The virtio-net header of a frame whose IPv4 TCP or UDP checksum is left partial.
pub fn needs_csum(proto: u8) -> VnetHdr {
    VnetHdr {
        flags: VNET_F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: if proto == PROTO_TCP { 16 } else { 6 },
        ..VnetHdr::default()
    }
}

pub fn udp(src: SocketAddrV4, dst: SocketAddrV4, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    let mut p = vec![0u8; 28 + len];
    udp::emit_packet(src, dst, 64, &payload, &mut p).expect("room");
    p
}

pub fn ping(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, len: usize) -> Vec<u8> {
    let data = vec![0x5au8; len];
    let r = IcmpRepr {
        kind: ECHO_REQUEST,
        code: 0,
        rest: [0x12, 0x34, 0, 1],
        data: &data,
    };
    let mut p = vec![0u8; r.packet_len()];
    r.emit_ttl(src, dst, ttl, &mut p).expect("room");
    p
}

/// `packet` cut into fragments of at most `mtu` bytes.
pub fn fragments(packet: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    ipv4::fragment(packet, mtu, |h, p| out.push([h, p].concat())).expect("fragments");
    out
}

/// A TCP/IPv4 super-frame with `segments` segments of `mss` bytes, as a Linux sender
/// with TSO hands it to its TAP: GSO_TCPV4, the checksum left partial.
pub fn tso(
    dst: Mac,
    src: Mac,
    from: SocketAddrV4,
    to: SocketAddrV4,
    mss: u16,
    segments: usize,
) -> Vec<u8> {
    let packet = partial(tcp_data(from, to, 5000, mss as usize * segments));
    let vnet = VnetHdr {
        flags: VNET_F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: mss,
        csum_start: 34,
        csum_offset: 16,
    };
    frame(vnet, dst, src, ETHERTYPE_IPV4, &packet)
}

/// A VXLAN datagram (the UDP payload): the header for `vni`, then `eth` (an Ethernet
/// frame, no virtio-net header).
pub fn vxlan(vni: u32, eth: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; vxlan::HEADER_LEN + eth.len()];
    vxlan::emit(&mut d, vni);
    d[vxlan::HEADER_LEN..].copy_from_slice(eth);
    d
}

/// A vnet header, Ethernet and an IPv6 packet of `next` header carrying `l4` (an
/// ICMPv6 message gets its checksum).
#[allow(clippy::too_many_arguments)]
pub fn ipv6_frame(
    dst: Mac,
    src: Mac,
    from: std::net::Ipv6Addr,
    to: std::net::Ipv6Addr,
    hops: u8,
    next: u8,
    mut l4: Vec<u8>,
) -> Vec<u8> {
    use vswitch::wire::icmpv6;
    if next == icmpv6::NEXT_HEADER {
        icmpv6::fill_checksum(from, to, &mut l4);
    }
    let mut f = vec![0u8; 10];
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    let mut ip = [0u8; 40];
    icmpv6::Ipv6Repr {
        src: from,
        dst: to,
        next_header: next,
        hop_limit: hops,
        payload_len: l4.len(),
    }
    .emit(&mut ip);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&l4);
    f
}
