//! Service VIPs in the router: backend choice, stickiness, hairpin, and checksums kept
//! right through the rewrite (full, partial/offloaded, and absent).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use vrouter::checksum;
use vrouter::router::{Action, Iface, Router, RouterConfig, Service};
use vswitch::Mac;

const GW0: Mac = Mac([2, 0x74, 0x6e, 0, 0, 1]);
const GW1: Mac = Mac([2, 0x74, 0x6e, 0, 0, 2]);
const CLIENT_MAC: Mac = Mac([2, 0, 0, 0, 1, 2]);
const B1_MAC: Mac = Mac([2, 0, 0, 0, 2, 2]);
const B2_MAC: Mac = Mac([2, 0, 0, 0, 2, 3]);

fn sa(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn router() -> Router {
    let mut r = Router::new(
        vec![
            Iface {
                name: "front".into(),
                mac: GW0,
                ip: Some(Ipv4Addr::new(172, 16, 1, 1)),
                prefix: 24,
                ip6: None,
            },
            Iface {
                name: "back".into(),
                mac: GW1,
                ip: Some(Ipv4Addr::new(172, 16, 2, 1)),
                prefix: 24,
                ip6: None,
            },
        ],
        vec![
            Service {
                name: "api".into(),
                proto: 6,
                vip: sa("172.16.2.100:80").into(),
                backends: vec![sa("172.16.2.2:8080").into(), sa("172.16.2.3:8080").into()],
            },
            Service {
                name: "dns".into(),
                proto: 17,
                vip: sa("172.16.2.53:53").into(),
                backends: vec![sa("172.16.2.2:5353").into()],
            },
        ],
        RouterConfig::default(),
    );
    // Teach the router the backends' and the client's MACs, as ARP would.
    let now = Instant::now();
    for (iface, mac, ip, gw) in [
        (0, CLIENT_MAC, [172, 16, 1, 2], [172, 16, 1, 1]),
        (1, B1_MAC, [172, 16, 2, 2], [172, 16, 2, 1]),
        (1, B2_MAC, [172, 16, 2, 3], [172, 16, 2, 1]),
    ] {
        let mut f = arp_request(mac, ip.into(), gw.into());
        r.handle(iface, &mut f, now);
    }
    r
}

fn arp_request(sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 10 + 14 + 28];
    f[10..16].copy_from_slice(&[0xff; 6]);
    f[16..22].copy_from_slice(&sha.0);
    f[22..24].copy_from_slice(&0x0806u16.to_be_bytes());
    let a = &mut f[24..];
    a[0..2].copy_from_slice(&1u16.to_be_bytes());
    a[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&1u16.to_be_bytes());
    a[8..14].copy_from_slice(&sha.0);
    a[14..18].copy_from_slice(&spa.octets());
    a[24..28].copy_from_slice(&tpa.octets());
    f
}

/// The TCP/UDP checksum over the pseudo-header and segment, as a receiver checks it.
fn l4_sum(frame: &[u8]) -> u16 {
    let ip = &frame[24..];
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let seg = &ip[20..total];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, ip[9]]);
    pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(seg);
    checksum::sum(&pseudo)
}

fn ip_ok(frame: &[u8]) -> bool {
    checksum::sum(&frame[24..44]) == 0xffff
}

/// A TCP segment (20-byte header, `flags`, a payload), fully checksummed.
fn tcp(
    dst_mac: Mac,
    src_mac: Mac,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = vec![0u8; 10];
    f.extend_from_slice(&dst_mac.0);
    f.extend_from_slice(&src_mac.0);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = 20 + 20 + payload.len();
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.ip().octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let c = checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&src.port().to_be_bytes());
    t[2..4].copy_from_slice(&dst.port().to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    f.extend_from_slice(&t);
    f.extend_from_slice(payload);
    let c = !l4_sum(&f);
    f[24 + 20 + 16..24 + 20 + 18].copy_from_slice(&c.to_be_bytes());
    f
}

fn addrs(f: &[u8]) -> (SocketAddrV4, SocketAddrV4) {
    let ip = |o: usize| Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]);
    let port = |o: usize| u16::from_be_bytes([f[o], f[o + 1]]);
    (
        SocketAddrV4::new(ip(36), port(44)),
        SocketAddrV4::new(ip(40), port(46)),
    )
}

#[test]
fn a_connection_to_the_vip_goes_to_one_backend_and_replies_come_from_the_vip() {
    let now = Instant::now();
    let mut r = router();
    let client = sa("172.16.1.2:40000");
    let mut syn = tcp(GW0, CLIENT_MAC, client, sa("172.16.2.100:80"), 0x02, b"");
    assert_eq!(r.handle(0, &mut syn, now), Action::Send { iface: 1 });
    let (src, backend) = addrs(&syn);
    assert_eq!(src, client, "the backend sees the real client");
    assert!(backend == sa("172.16.2.2:8080") || backend == sa("172.16.2.3:8080"));
    assert!(ip_ok(&syn));
    assert_eq!(l4_sum(&syn), 0xffff, "TCP checksum still right");
    let mac = if backend == sa("172.16.2.2:8080") {
        B1_MAC
    } else {
        B2_MAC
    };
    assert_eq!(&syn[10..16], &mac.0);

    // The backend answers the client; it leaves the router as the VIP.
    let mut synack = tcp(GW1, mac, backend, client, 0x12, b"");
    assert_eq!(r.handle(1, &mut synack, now), Action::Send { iface: 0 });
    assert_eq!(addrs(&synack), (sa("172.16.2.100:80"), client));
    assert!(ip_ok(&synack));
    assert_eq!(l4_sum(&synack), 0xffff);

    // The rest of the connection sticks to the same backend.
    for _ in 0..5 {
        let mut data = tcp(
            GW0,
            CLIENT_MAC,
            client,
            sa("172.16.2.100:80"),
            0x18,
            b"GET / HTTP/1.0\r\n\r\n",
        );
        r.handle(0, &mut data, now);
        assert_eq!(addrs(&data).1, backend);
        assert_eq!(l4_sum(&data), 0xffff);
    }
    assert_eq!(r.flows().len(), 1);
}

#[test]
fn connections_spread_over_backends() {
    let now = Instant::now();
    let mut r = router();
    let mut per_backend: HashMap<SocketAddrV4, usize> = HashMap::new();
    for port in 40000..40200 {
        let client = SocketAddrV4::new(Ipv4Addr::new(172, 16, 1, 2), port);
        let mut syn = tcp(GW0, CLIENT_MAC, client, sa("172.16.2.100:80"), 0x02, b"");
        r.handle(0, &mut syn, now);
        *per_backend.entry(addrs(&syn).1).or_default() += 1;
    }
    assert_eq!(per_backend.len(), 2, "{per_backend:?}");
    assert!(per_backend.values().all(|&n| n > 60), "{per_backend:?}");
}

#[test]
fn a_hairpin_connection_is_sourced_from_the_gateway_so_replies_return() {
    let now = Instant::now();
    let mut r = router();
    // The client sits on the backends' own subnet.
    let client = sa("172.16.2.3:45000");
    let mut syn = tcp(GW1, B2_MAC, client, sa("172.16.2.100:80"), 0x02, b"");
    assert_eq!(r.handle(1, &mut syn, now), Action::Send { iface: 1 });
    let (src, backend) = addrs(&syn);
    assert_eq!(
        *src.ip(),
        Ipv4Addr::new(172, 16, 2, 1),
        "translated to the gateway"
    );
    assert_eq!(l4_sum(&syn), 0xffff);
    let mac = if backend == sa("172.16.2.2:8080") {
        B1_MAC
    } else {
        B2_MAC
    };
    // The backend answers the gateway's address; the router maps it back.
    let mut synack = tcp(GW1, mac, backend, src, 0x12, b"");
    assert_eq!(r.handle(1, &mut synack, now), Action::Send { iface: 1 });
    assert_eq!(addrs(&synack), (sa("172.16.2.100:80"), client));
    assert_eq!(&synack[10..16], &B2_MAC.0);
    assert_eq!(l4_sum(&synack), 0xffff);
}

#[test]
fn an_offloaded_checksum_keeps_the_pseudo_header_sum_of_the_new_addresses() {
    let now = Instant::now();
    let mut r = router();
    let client = sa("172.16.1.2:40001");
    let mut f = tcp(
        GW0,
        CLIENT_MAC,
        client,
        sa("172.16.2.100:80"),
        0x18,
        &[7; 100],
    );
    // As a container with checksum offload sends it: NEEDS_CSUM, and the field holds
    // the folded pseudo-header sum, not the checksum.
    f[0] = 1;
    f[6..8].copy_from_slice(&34u16.to_le_bytes());
    f[8..10].copy_from_slice(&16u16.to_le_bytes());
    let pseudo = |f: &[u8]| {
        let mut p = Vec::new();
        p.extend_from_slice(&f[36..44]);
        p.extend_from_slice(&[0, 6]);
        p.extend_from_slice(&((f.len() - 44) as u16).to_be_bytes());
        checksum::sum(&p)
    };
    let ps = pseudo(&f);
    f[60..62].copy_from_slice(&ps.to_be_bytes());
    r.handle(0, &mut f, now);
    let field = u16::from_be_bytes([f[60], f[61]]);
    let want = pseudo(&f);
    assert!(
        field == want || (field | want == 0xffff && (field == 0 || want == 0)),
        "{field:04x} {want:04x}"
    );
    assert!(ip_ok(&f));
}

#[test]
fn a_udp_packet_without_checksum_keeps_none_and_the_vip_answers_arp() {
    let now = Instant::now();
    let mut r = router();
    let mut f = tcp(
        GW0,
        CLIENT_MAC,
        sa("172.16.1.2:5000"),
        sa("172.16.2.53:53"),
        0,
        b"",
    );
    f[33] = 17; // UDP
    f[34..36].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&f[24..44]);
    f[34..36].copy_from_slice(&c.to_be_bytes());
    let udp_len = (f.len() - 44) as u16;
    f[48..50].copy_from_slice(&udp_len.to_be_bytes());
    f[50..52].copy_from_slice(&[0, 0]);
    assert_eq!(r.handle(0, &mut f, now), Action::Send { iface: 1 });
    assert_eq!(addrs(&f).1, sa("172.16.2.2:5353"));
    assert_eq!(&f[50..52], &[0, 0]);
    assert!(ip_ok(&f));

    let mut who_has = arp_request(
        B1_MAC,
        Ipv4Addr::new(172, 16, 2, 2),
        Ipv4Addr::new(172, 16, 2, 100),
    );
    assert_eq!(r.handle(1, &mut who_has, now), Action::Send { iface: 1 });
    assert_eq!(&who_has[32..38], &GW1.0, "the VIP is at the router's MAC");
    assert_eq!(&who_has[38..42], &[172, 16, 2, 100]);
    // On another subnet the VIP is not on link: no answer there.
    let mut elsewhere = arp_request(
        CLIENT_MAC,
        Ipv4Addr::new(172, 16, 1, 2),
        Ipv4Addr::new(172, 16, 2, 100),
    );
    assert_eq!(r.handle(0, &mut elsewhere, now), Action::Done);
}

#[test]
fn an_error_about_a_translated_packet_quotes_it_as_the_client_sent_it() {
    // The backends' bridge takes 1000 bytes; the client sends a DF segment of 1400
    // to the VIP. Its fragmentation-needed must quote the VIP, not the backend, or
    // the client's kernel learns a path MTU for an address it never uses.
    let now = Instant::now();
    let mut r = router();
    r.set_mtu(1, 1000);
    let (client, vip) = (sa("172.16.1.2:40000"), sa("172.16.2.100:80"));
    let mut f = tcp(GW0, CLIENT_MAC, client, vip, 0x18, &[7u8; 1360]);
    f[30] |= 0x40; // DF
    f[34..36].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&f[24..44]);
    f[34..36].copy_from_slice(&c.to_be_bytes());
    assert_eq!(
        r.handle(0, &mut f, now),
        Action::Drop(vrouter::RouterDrop::TooBig)
    );
    let mut errors = Vec::new();
    r.outbox()
        .drain(|iface, bytes| errors.push((iface, bytes.to_vec())));
    let (iface, e) = errors.last().expect("an ICMP error");
    assert_eq!(*iface, 0);
    assert_eq!(&e[10..16], &CLIENT_MAC.0);
    // ICMP type 3 code 4, next-hop MTU 1000, to the client.
    assert_eq!(&e[24 + 16..24 + 20], &[172, 16, 1, 2]);
    assert_eq!((e[44], e[45]), (3, 4));
    assert_eq!(u16::from_be_bytes([e[50], e[51]]), 1000);
    // The quoted header and ports: the client's own packet, its checksum right.
    let quoted = &e[52..];
    assert_eq!(&quoted[12..16], &[172, 16, 1, 2]);
    assert_eq!(&quoted[16..20], &[172, 16, 2, 100]);
    assert_eq!(u16::from_be_bytes([quoted[22], quoted[23]]), 80);
    assert_eq!(checksum::sum(&quoted[..20]), 0xffff);
}

#[test]
fn a_service_removed_at_run_time_takes_its_flows_and_leaves_the_others_theirs() {
    let now = Instant::now();
    let mut r = router();
    // A connection to "api".
    let client = sa("172.16.1.2:40000");
    let mut syn = tcp(GW0, CLIENT_MAC, client, sa("172.16.2.100:80"), 0x02, b"");
    assert_eq!(r.handle(0, &mut syn, now), Action::Send { iface: 1 });
    assert_eq!(r.flows().len(), 1);
    // Removing "api" (the first) takes its flow; "dns" moves up.
    assert!(r.remove_service("api", now));
    assert!(!r.remove_service("api", now), "once");
    assert_eq!(r.flows().len(), 0);
    assert_eq!(r.services().len(), 1);
    assert_eq!(r.services()[0].name, "dns");
    let mut again = tcp(GW0, CLIENT_MAC, client, sa("172.16.2.100:80"), 0x02, b"");
    assert_ne!(
        r.handle(0, &mut again, now),
        Action::Send { iface: 1 },
        "the VIP is no one's now"
    );
    // Added back at run time, it answers again.
    r.add_service(Service {
        name: "api".into(),
        proto: 6,
        vip: sa("172.16.2.100:80").into(),
        backends: vec![sa("172.16.2.2:8080").into()],
    });
    let mut syn = tcp(
        GW0,
        CLIENT_MAC,
        sa("172.16.1.2:40002"),
        sa("172.16.2.100:80"),
        0x02,
        b"",
    );
    assert_eq!(r.handle(0, &mut syn, now), Action::Send { iface: 1 });
    assert_eq!(addrs(&syn).1, sa("172.16.2.2:8080"));
}
