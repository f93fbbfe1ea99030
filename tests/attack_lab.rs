//! One container against the others: forged ARP and IP sources, floods of ARP senders
//! and of unresolved destinations, martian sources. Each must cost the attacker, not
//! its neighbours. Floods are bounded in count and time; everything stays inside the
//! namespaces the test made.

mod common;

use common::*;

/// Two bridges: br0 10.70.0.0/16 with `a` (the attacker), `b` and a silent `s`; br1
/// 10.71.0.0/24 with `c`. `spoof` is `a`'s `spoof_check` line (empty: the default).
fn lab(spoof: &str) -> (RunningLab, Vec<String>) {
    let name = unique("l");
    let ns: Vec<String> = (0..4).map(|_| unique("n")).collect();
    let text = LabText::new(&name)
        .bridge("br0", "10.70.0.0/16")
        .bridge("br1", "10.71.0.0/24")
        .port("a", "br0", &ns[0], "10.70.0.2/16")
        .raw(spoof)
        .port("b", "br0", &ns[1], "10.70.0.3/16")
        .port("s", "br0", &ns[2], "10.70.0.4/16")
        .port("c", "br1", &ns[3], "10.71.0.2/24")
        .text();
    let lab = RunningLab::start(&name, &ns, &text);
    (lab, ns)
}

/// A port's drops once `done` holds of them, or after 5 s: the frames a test just
/// sent may still wait in the port's queue on a busy machine.
fn port_drops_until(
    lab: &RunningLab,
    port: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let of = |d: &serde_json::Value| {
        d["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"] == port)
            .map(|p| p["drops"].clone())
    };
    let d = lab.show_until("drops", std::time::Duration::from_secs(5), |d| {
        of(d).is_some_and(|p| done(&p))
    });
    of(&d).unwrap_or_else(|| panic!("no port {port} in {d}"))
}

/// Python that sends raw frames from eth0: `frames(src_mac)` builds the list.
fn send_frames(ns: &str, body: &str, args: &[&str]) {
    let code = format!(
        r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
mac = bytes(int(x, 16) for x in open("/sys/class/net/eth0/address").read().strip().split(":"))
def arp(op, sha, spa, tha, tpa, dst=b"\xff" * 6):
    return dst + sha + b"\x08\x06" + struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op,
        sha, socket.inet_aton(spa), tha, socket.inet_aton(tpa))
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
def udp(dst_mac, src, dst, payload=b"x"):
    u = struct.pack("!HHHH", 4000, 9, 8 + len(payload), 0) + payload
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(u), 1, 0, 64, 17, 0,
        socket.inet_aton(src), socket.inet_aton(dst))
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return dst_mac + mac + b"\x08\x00" + h + u
{body}
"#
    );
    let mut cmd = vec!["python3", "-c", &code];
    cmd.extend_from_slice(args);
    let out = ns_run(ns, &cmd, 30);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The router's MAC on br0, from `show ports`.
fn router_mac(lab: &RunningLab) -> String {
    lab.port("router:br0")["mac"].as_str().unwrap().to_string()
}

#[test]
fn a_container_cannot_take_over_the_gateway_or_a_neighbours_address() {
    let (lab, ns) = lab("");
    assert!(
        ping(&ns[1], "10.71.0.2", 2),
        "b reaches c across the router"
    );
    // a claims the gateway (a forged ARP reply to b), then b's address (to the
    // router), then sends IP from b's address.
    let rmac = router_mac(&lab);
    send_frames(
        &ns[0],
        r#"
b_mac = bytes(int(x, 16) for x in sys.argv[1].split(":"))
r_mac = bytes(int(x, 16) for x in sys.argv[2].split(":"))
for _ in range(5):
    s.send(arp(2, mac, "10.70.0.1", b_mac, "10.70.0.3", dst=b_mac))
    s.send(arp(2, mac, "10.70.0.3", r_mac, "10.70.0.1", dst=r_mac))
    s.send(udp(r_mac, "10.70.0.3", "10.71.0.2"))
    time.sleep(0.05)
"#,
        &[lab.port("b")["mac"].as_str().unwrap(), &rmac],
    );
    let d = port_drops_until(&lab, "a", |d| d["spoofed_ip"].as_u64() >= Some(15));
    assert!(d["spoofed_ip"].as_u64().unwrap() >= 15, "{d}");
    // b still reaches c through the real gateway, and the router still knows b.
    assert!(
        ping(&ns[1], "10.71.0.2", 5),
        "b's routed traffic is not blackholed"
    );
    assert!(ping(&ns[3], "10.70.0.3", 3));
    // a itself works as before.
    assert!(ping(&ns[0], "10.71.0.2", 2));
}

#[test]
fn forgeries_hidden_in_vlan_tags_or_odd_arp_are_dropped_too() {
    let (lab, ns) = lab("");
    assert!(ping(&ns[1], "10.70.0.1", 1), "b knows its gateway");
    // A gratuitous reply claiming the gateway, wrapped as Linux reads through: in an
    // 802.1ad priority tag, in two stacked 802.1Q ones, and untagged with hardware
    // type 6 (IEEE 802, which Linux's ARP takes on Ethernet too); and IP from b's
    // address in an 802.1ad tag.
    send_frames(
        &ns[0],
        r#"
fake = bytes.fromhex("02deadbeef01")
bcast = b"\xff" * 6
reply = arp(2, fake, "10.70.0.1", bcast, "10.70.0.1")
body = reply[14:]
hw6 = body[:1] + b"\x06" + body[2:]
r_mac = bytes(int(x, 16) for x in sys.argv[1].split(":"))
frames = [
    bcast + mac + b"\x88\xa8\x00\x00\x08\x06" + body,
    bcast + mac + b"\x81\x00\x00\x00\x81\x00\x00\x00\x08\x06" + body,
    bcast + mac + b"\x08\x06" + hw6,
]
ip = udp(r_mac, "10.70.0.3", "10.71.0.2")
frames.append(ip[:12] + b"\x88\xa8\x00\x00" + ip[12:])
for _ in range(3):
    for f in frames:
        s.send(f)
    time.sleep(0.05)
"#,
        &[&router_mac(&lab)],
    );
    // Every one of the twelve dropped: the tagged replies for their sender MAC, the
    // tagged IP for its source, the hardware-type-6 reply as unreadable.
    let d = port_drops_until(&lab, "a", |d| {
        d["spoofed_mac"].as_u64() >= Some(6)
            && d["spoofed_ip"].as_u64() >= Some(3)
            && d["unverifiable"].as_u64() >= Some(3)
    });
    let n = |k: &str| d[k].as_u64().unwrap();
    assert_eq!(
        (n("spoofed_mac"), n("spoofed_ip"), n("unverifiable")),
        (6, 3, 3),
        "{d}"
    );
    // A frame whose sender fields are its own, but whose checksum "left to offload"
    // points at its source address: whoever finished it would write two bytes of the
    // sender's choosing there, after port security passed it.
    send_frames(
        &ns[0],
        r#"
v = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
v.setsockopt(263, 15, 1)  # PACKET_VNET_HDR
v.bind(("eth0", 0))
r_mac = bytes(int(x, 16) for x in sys.argv[1].split(":"))
ip = udp(r_mac, "10.70.0.2", "10.71.0.2")
for _ in range(3):
    v.send(struct.pack("<BBHHHH", 1, 0, 0, 0, 26, 0) + ip)
"#,
        &[&router_mac(&lab)],
    );
    let d = port_drops_until(&lab, "a", |d| d["bad_vnet_header"].as_u64() >= Some(3));
    assert_eq!(d["bad_vnet_header"], 3, "{d}");
    // b's neighbour entry for its gateway is still the router's MAC.
    let neigh = ns_run(&ns[1], &["ip", "neigh", "show", "10.70.0.1"], 10);
    let neigh = String::from_utf8_lossy(&neigh.stdout).to_lowercase();
    assert!(!neigh.contains("02:de:ad:be:ef:01"), "{neigh}");
    assert!(
        ping(&ns[1], "10.71.0.2", 3),
        "b still reaches the other bridge"
    );
}

#[test]
fn a_flood_of_arp_senders_cannot_lock_out_a_new_neighbour() {
    // Port security off for the attacker, as for a container that routes for others:
    // only the router's own ARP policy stands in the way.
    let (lab, ns) = lab("spoof_check = false");
    // 60,000 requests for the gateway, each from another sender address of the /16.
    let t = std::time::Instant::now();
    send_frames(
        &ns[0],
        r#"
for k in range(60000):
    s.send(arp(1, mac, "10.70.%d.%d" % (1 + k // 250, 1 + k % 250), b"\0" * 6, "10.70.0.1"))
"#,
        &[],
    );
    eprintln!("flood sent in {:?}", t.elapsed());
    // s never spoke; c reaches it across the router at once (the router asks ARP for
    // it, and learns its answer even with its table full of the flood).
    assert!(
        ping(&ns[3], "10.70.0.4", 3),
        "a silent neighbour is reachable"
    );
    let arp = lab.show("arp");
    let entries = arp["arp"].as_array().unwrap().len();
    assert!(entries <= 4096 + 8, "{entries} entries");
    // (Not every request reaches tapnet: the attacker's own TAP queue overflows.)
    // The flood's last requests may still be on their way to the router.
    let drops = lab.show_until("drops", std::time::Duration::from_secs(5), |d| {
        d["router"]["neighbors"]["evicted"].as_u64() > Some(10_000)
    });
    let n = &drops["router"]["neighbors"];
    assert!(n["evicted"].as_u64().unwrap() > 10_000, "{drops}");
    assert_eq!(n["not_learned_full"], 0, "{drops}");
}

#[test]
fn unresolved_destinations_cost_a_few_arp_requests_not_one_each() {
    let (lab, ns) = lab("");
    assert!(ping(&ns[1], "10.71.0.2", 2));
    // 20,000 datagrams from c to 20,000 addresses of br0 that nobody holds.
    let code = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for k in range(20000):
    try:
        s.sendto(b"x", ("10.70.%d.%d" % (10 + k // 250, 1 + k % 250), 9))
    except OSError:
        pass
"#;
    let out = ns_run(&ns[3], &["python3", "-c", code], 30);
    assert!(out.status.success());
    // Meanwhile and after, the others are fine.
    assert!(ping(&ns[1], "10.71.0.2", 20), "b to c, during the storm");
    std::thread::sleep(std::time::Duration::from_secs(4));
    let drops = lab.show("drops");
    let asked = drops["router"]["arp_requests"].as_u64().unwrap();
    // At most 256 addresses asked for at once per leg, three times each, and the
    // rate limit: far below one request per datagram.
    assert!(
        asked < 2500,
        "{asked} ARP requests for 20,000 datagrams: {drops}"
    );
    assert!(
        drops["router"]["drops"]["neighbor_table_busy"]
            .as_u64()
            .unwrap()
            > 0,
        "{drops}"
    );
}

#[test]
fn martian_sources_are_dropped_not_routed() {
    let (lab, ns) = lab("spoof_check = false");
    let rmac = router_mac(&lab);
    let _server = udp_echo(&ns[3], "10.71.0.2", 9);
    send_frames(
        &ns[0],
        r#"
r_mac = bytes(int(x, 16) for x in sys.argv[1].split(":"))
for src in ["127.0.0.1", "0.1.2.3", "169.254.1.1", "10.70.255.255", "10.70.0.1",
            "10.71.0.9", "192.0.2.7"]:
    s.send(udp(r_mac, src, "10.71.0.2"))
"#,
        &[&rmac],
    );
    let drops = lab.show_until("drops", std::time::Duration::from_secs(5), |d| {
        d["router"]["drops"]["martian_source"].as_u64() >= Some(7)
    });
    assert_eq!(
        drops["router"]["drops"]["martian_source"].as_u64().unwrap(),
        7,
        "{drops}"
    );
    // The attacker's own address still goes (reverse path is fine).
    assert_eq!(
        udp_ask(&ns[0], "10.71.0.2", 9, "real").as_deref(),
        Some("real")
    );
}
