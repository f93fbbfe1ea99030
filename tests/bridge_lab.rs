//! A bridge lab in real namespaces with real TAPs, checked with ping, iperf3 and
//! `tapnet show`. Every test uses its own names and tears down even when it fails.

mod common;

use std::time::Duration;

use common::*;

/// A lab with one bridge and three containers, all named uniquely.
struct ThreePorts {
    lab: RunningLab,
    ns: Vec<String>,
}

fn three_ports() -> ThreePorts {
    let name = unique("l");
    let ns: Vec<String> = (0..3).map(|_| unique("n")).collect();
    let text = LabText::new(&name)
        .bridge("br0", "10.200.1.0/24")
        .port("a", "br0", &ns[0], "10.200.1.2/24")
        .port("b", "br0", &ns[1], "10.200.1.3/24")
        .port("c", "br0", &ns[2], "10.200.1.4/24")
        .text();
    let lab = RunningLab::start(&name, &ns, &text);
    ThreePorts { lab, ns }
}

/// Port a's entry in `show drops`.
fn port_a(drops: &serde_json::Value) -> serde_json::Value {
    drops["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == "a")
        .cloned()
        .unwrap_or_else(|| panic!("no port a in {drops}"))
}

const IPS: [&str; 3] = ["10.200.1.2", "10.200.1.3", "10.200.1.4"];
const MACS: [&str; 3] = [
    "02:00:0a:c8:01:02",
    "02:00:0a:c8:01:03",
    "02:00:0a:c8:01:04",
];

#[test]
fn every_pair_pings_and_fdb_learns_each_mac_on_its_port() {
    let t = three_ports();
    let ready = format!("ready: lab {}, 3 ports, ", t.lab.name);
    assert!(t.lab.ready_line.starts_with(&ready), "{}", t.lab.ready_line);
    for (i, ns) in t.ns.iter().enumerate() {
        for (j, ip) in IPS.iter().enumerate() {
            if i != j {
                assert!(ping(ns, ip, 3), "ping from port {i} to {ip}");
            }
        }
    }
    let fdb = t.lab.show("fdb");
    let entries = fdb["fdb"].as_array().unwrap();
    for (mac, port) in MACS.iter().zip(["a", "b", "c"]) {
        let e = entries
            .iter()
            .find(|e| e["mac"] == *mac)
            .unwrap_or_else(|| panic!("{mac} not in fdb: {fdb}"));
        assert_eq!(e["port"], port);
        assert_eq!(e["bridge"], "br0");
    }
    // The table view lists the same.
    let out = run(&[TAPNET, "show", "fdb", "--lab", &t.lab.name], 10);
    let text = String::from_utf8_lossy(&out.stdout);
    for mac in MACS {
        assert!(text.contains(mac), "{text}");
    }

    // Counters agree with the traffic: each port sent 6 echo requests and got 6
    // replies at least (plus ARP).
    // (Each datapath thread adds its counts after its turn: wait for them.)
    let ports = t.lab.show_until("ports", Duration::from_secs(5), |v| {
        v["ports"].as_array().is_some_and(|ps| {
            ps.iter().filter(|p| p["kind"] == "tap").all(|p| {
                p["rx_packets"].as_u64() >= Some(12) && p["tx_packets"].as_u64() >= Some(12)
            })
        })
    });
    let taps = ports["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "tap");
    assert_eq!(taps.clone().count(), 3);
    for p in taps {
        assert_eq!(p["up"], true);
        assert!(p["rx_packets"].as_u64().unwrap() >= 12, "{p}");
        assert!(p["tx_packets"].as_u64().unwrap() >= 12, "{p}");
    }
}

#[test]
fn iperf3_tcp_transfer_completes() {
    let t = three_ports();
    let _server = Background::spawn(&t.ns[0], &["iperf3", "-s", "-B", IPS[0]]);
    // Retry until the server listens and a whole test ran (iperf3 can exit 0 with an
    // error in its JSON when it connects too early).
    let mut out = None;
    for _ in 0..30 {
        let o = ns_run(&t.ns[1], &["iperf3", "-c", IPS[0], "-t", "2", "-J"], 10);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if o.status.success() && v["end"]["sum_received"]["bytes"].is_u64() {
            out = Some(v);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let v = out.expect("iperf3 never completed a test");
    let received = v["end"]["sum_received"]["bytes"].as_u64().unwrap();
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    assert!(received > 1_000_000, "received {received} bytes");
    eprintln!("iperf3 through tapnet: {:.2} Gbit/s", bps / 1e9);
    // The transfer crossed tapnet as super-frames, unsegmented: far fewer frames than
    // 1448-byte segments would need.
    // (Each datapath thread adds its counts after its turn: wait for them.)
    t.lab.show_until("ports", Duration::from_secs(5), |v| {
        v["ports"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["name"] == "b" && p["rx_bytes"].as_u64() >= Some(received))
        })
    });
    let b = t.lab.port("b");
    let (pkts, bytes) = (
        b["rx_packets"].as_u64().unwrap(),
        b["rx_bytes"].as_u64().unwrap(),
    );
    assert!(bytes >= received, "port b handed over {bytes} bytes");
    assert!(
        bytes / pkts.max(1) > 4000,
        "{pkts} frames for {bytes} bytes: super-frames were not passed through"
    );
    eprintln!(
        "port b: {pkts} frames, {} bytes per frame",
        bytes / pkts.max(1)
    );
}

#[test]
fn two_bridges_cannot_reach_each_other() {
    let name = unique("l");
    let ns: Vec<String> = (0..4).map(|_| unique("n")).collect();
    // The same subnet on both bridges would be an error; so both ports of br1 sit in a
    // bridge without a subnet but with addresses in br0's range: only L2 could join them.
    let text = LabText::new(&name)
        .bridge("br0", "")
        .bridge("br1", "")
        .port("a", "br0", &ns[0], "10.201.0.1/24")
        .port("b", "br0", &ns[1], "10.201.0.2/24")
        .port("c", "br1", &ns[2], "10.201.0.3/24")
        .port("d", "br1", &ns[3], "10.201.0.4/24")
        .text();
    let lab = RunningLab::start(&name, &ns, &text);
    assert!(ping(&ns[0], "10.201.0.2", 2), "a-b on br0");
    assert!(ping(&ns[2], "10.201.0.4", 2), "c-d on br1");
    assert!(!ping(&ns[0], "10.201.0.3", 2), "a reached c across bridges");
    assert!(!ping(&ns[3], "10.201.0.2", 2), "d reached b across bridges");
    // Nothing from br1 ever came out on br0's ports beyond br0's own traffic: c's
    // and d's MACs are unknown to br0.
    let fdb = lab.show("fdb");
    for e in fdb["fdb"].as_array().unwrap() {
        let port = e["port"].as_str().unwrap();
        let bridge = e["bridge"].as_str().unwrap();
        assert_eq!(bridge == "br0", port == "a" || port == "b", "{e}");
    }
}

#[test]
fn deleting_a_namespace_takes_its_port_down_and_the_rest_keep_working() {
    let mut t = three_ports();
    assert!(ping(&t.ns[0], IPS[2], 1));
    let out = run(&["ip", "netns", "del", &t.ns[2]], 10);
    assert!(out.status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while t.lab.port("c")["up"] == true {
        assert!(
            std::time::Instant::now() < deadline,
            "port c never went down"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(ping(&t.ns[0], IPS[1], 3), "a to b after c's namespace went");
    assert!(ping(&t.ns[1], IPS[0], 3), "b to a after c's namespace went");
    assert_eq!(t.lab.port("a")["up"], true);
    let (code, stderr) = t.lab.stop();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("port `c` is down"), "{stderr}");
}

#[test]
fn teardown_leaves_nothing_behind() {
    let mut t = three_ports();
    let pid = t.lab.pid;
    assert!(t.ns.iter().all(|n| netns_exists(n)));
    assert!(std::path::Path::new(&format!("/run/tapnet/{}.sock", t.lab.name)).exists());
    let (code, stderr) = t.lab.stop_with(libc::SIGINT);
    assert_eq!(code, Some(0), "SIGINT exits 0: {stderr}");
    for n in &t.ns {
        assert!(!netns_exists(n), "namespace {n} left behind");
    }
    assert!(
        root_taps(&format!("tn{pid}p")).is_empty(),
        "TAPs left behind"
    );
    assert!(!std::path::Path::new(&format!("/run/tapnet/{}.sock", t.lab.name)).exists());
}

#[test]
fn a_namespace_tapnet_did_not_create_is_used_and_kept() {
    let existing = TestNetns::new("x");
    let name = unique("l");
    let fresh = unique("n");
    let lab = LabText::new(&name)
        .bridge("br0", "10.202.0.0/24")
        .port("a", "br0", &existing.name, "10.202.0.2/24")
        .with("ifname", "veth-like0");
    // Unknown key: refused, and nothing is created or changed.
    let file = LabFile::new(&lab.clone().with("mtu_note", 0).text());
    let out = run(&[TAPNET, "up", file.path.to_str().unwrap()], 20);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mtu_note"));
    let out = ns_run(&existing.name, &["ip", "link", "show", "veth-like0"], 10);
    assert!(!out.status.success(), "a refused lab created a device");

    let text = lab.port("b", "br0", &fresh, "10.202.0.3/24").text();
    let mut lab = RunningLab::start(&name, std::slice::from_ref(&fresh), &text);
    assert!(ping(&existing.name, "10.202.0.3", 2));
    let out = ns_run(
        &existing.name,
        &["ip", "-j", "link", "show", "veth-like0"],
        10,
    );
    let link: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(link[0]["address"], "02:00:0a:ca:00:02");
    assert_eq!(link[0]["mtu"], 1500);
    assert_eq!(link[0]["txqlen"], 1000);
    let out = ns_run(&existing.name, &["ip", "route", "show", "default"], 10);
    assert!(String::from_utf8_lossy(&out.stdout).contains("via 10.202.0.1"));
    let (code, _) = lab.stop();
    assert_eq!(code, Some(0));
    assert!(
        netns_exists(&existing.name),
        "tapnet removed a namespace it did not create"
    );
    assert!(
        !netns_exists(&fresh),
        "tapnet left the namespace it created"
    );
    let out = ns_run(&existing.name, &["ip", "link", "show", "veth-like0"], 10);
    assert!(!out.status.success(), "the TAP outlived tapnet");
}

#[test]
fn malformed_frames_are_dropped_counted_and_forwarding_goes_on() {
    let t = three_ports();
    // A raw packet socket inside container a sends frames with a multicast and an
    // all-zero source MAC, then ordinary traffic follows. (The kernel will not send a
    // runt or a bad virtio-net header from a namespace; the socketpair datapath tests
    // cover those.)
    let script = r#"
import socket
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
s.send(b"\xff" * 6 + b"\x01\x00\x5e\x00\x00\x01" + b"\x08\x00" + b"x" * 46)
s.send(b"\xff" * 6 + b"\x00" * 6 + b"\x08\x00" + b"x" * 46)
"#;
    let out = ns_run(&t.ns[0], &["python3", "-c", script], 10);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ping(&t.ns[0], IPS[1], 2));
    // The raw frames may sit in another queue than the pings' (another thread's).
    let drops = t.lab.show_until("drops", Duration::from_secs(5), |d| {
        port_a(d)["drops"]["bad_source_mac"].as_u64() >= Some(2)
    });
    let a = port_a(&drops);
    assert_eq!(a["drops"]["bad_source_mac"], 2, "{drops}");
    let out = run(&[TAPNET, "show", "drops", "--lab", &t.lab.name], 10);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| {
            let w: Vec<_> = l.split_whitespace().collect();
            w == ["a", "bad_source_mac", "2"]
        }),
        "{text}"
    );
}

#[test]
fn a_gso_frame_asking_for_one_byte_segments_is_dropped_not_cut() {
    let t = three_ports();
    // A container hands its TAP 60 KB super-frames whose virtio-net header asks for
    // 1-byte segments (AF_PACKET with PACKET_VNET_HDR, as in the reported attack): on a
    // path that segments (VXLAN, the router, smoltcp) each would be 60,000 packets.
    let script = r#"
import socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR
s.bind(("eth0", 0))
mac = open("/sys/class/net/eth0/address").read().strip()
src = bytes(int(x, 16) for x in mac.split(":"))
payload = 60000
vnet = struct.pack("<BBHHHH", 1, 1, 54, int(sys.argv[3]), 34, 16)
eth = b"\xff" * 6 + src + b"\x08\x00"
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + payload, 1, 0x4000, 64, 6, 0,
                 socket.inet_aton(sys.argv[1]), socket.inet_aton(sys.argv[2]))
tcp = struct.pack("!HHIIBBHHH", 40000, 9, 1, 0, 5 << 4, 0x10, 65535, 0, 0)
for _ in range(20):
    s.send(vnet + eth + ip + tcp + b"x" * payload)
"#;
    let rx_before = t.lab.port("b")["tx_packets"].as_u64().unwrap();
    let out = ns_run(
        &t.ns[0],
        &["python3", "-c", script, IPS[0], IPS[1], "1"],
        10,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drops = t.lab.show_until("drops", Duration::from_secs(5), |d| {
        port_a(d)["drops"]["bad_gso"].as_u64() >= Some(20)
    });
    let a = port_a(&drops);
    assert_eq!(a["drops"]["bad_gso"], 20, "{drops}");
    // Nothing of them reached the others, and they still talk.
    let rx_after = t.lab.port("b")["tx_packets"].as_u64().unwrap();
    assert!(rx_after - rx_before < 5, "{rx_before} -> {rx_after}");
    assert!(ping(&t.ns[0], IPS[1], 2));
    // The same frame with a sane segment size goes through.
    let out = ns_run(
        &t.ns[0],
        &["python3", "-c", script, IPS[0], IPS[1], "1448"],
        10,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tx_b = |v: &serde_json::Value| {
        v["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "b"))
            .and_then(|p| p["tx_packets"].as_u64())
            .unwrap_or(0)
    };
    let ports = t.lab.show_until("ports", Duration::from_secs(5), |v| {
        tx_b(v) >= rx_after + 20
    });
    let after = tx_b(&ports);
    assert!(after - rx_after >= 20, "{rx_after} -> {after}");
}

#[test]
fn a_port_without_netns_is_the_hosts_door_into_the_bridge() {
    // tapnet runs inside a test "host" namespace, so the door lands there, not in the
    // machine's own namespace.
    let host = TestNetns::new("h");
    let name = unique("l");
    let c = unique("n");
    let text = LabText::new(&name)
        .bridge("br0", "10.206.0.0/24")
        .port("door", "br0", "", "10.206.0.254/24")
        .with("ifname", "door0")
        .port("c", "br0", &c, "10.206.0.2/24")
        .text();
    let mut lab = RunningLab::start_in(Some(&host.name), &name, std::slice::from_ref(&c), &text);
    assert!(ping(&c, "10.206.0.254", 2), "container to the host's door");
    assert!(ping(&host.name, "10.206.0.2", 2), "host to the container");
    let out = ns_run(&host.name, &["ip", "route", "show", "default"], 10);
    assert!(
        out.stdout.is_empty(),
        "the door must not take the host's default route"
    );
    let (code, stderr) = lab.stop();
    assert_eq!(code, Some(0), "{stderr}");
    let out = ns_run(&host.name, &["ip", "link", "show", "door0"], 10);
    assert!(!out.status.success(), "the door outlived tapnet");
    assert!(!netns_exists(&c));
}

#[test]
fn a_killed_run_is_cleaned_up_by_the_next_run_of_the_lab() {
    let name = unique("l");
    let ns: Vec<String> = (0..2).map(|_| unique("n")).collect();
    let text = LabText::new(&name)
        .bridge("br0", "10.207.0.0/24")
        .port("a", "br0", &ns[0], "10.207.0.2/24")
        .port("b", "br0", &ns[1], "10.207.0.3/24")
        .text();
    let mut first = RunningLab::start(&name, &ns, &text);
    first.stop_with(libc::SIGKILL);
    assert!(
        ns.iter().all(|n| netns_exists(n)),
        "SIGKILL leaves them (no teardown)"
    );
    let mut second = RunningLab::start(&name, &ns, &text);
    assert!(ping(&ns[0], "10.207.0.3", 2));
    let (code, stderr) = second.stop();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("left behind by an earlier run"), "{stderr}");
    for n in &ns {
        assert!(!netns_exists(n), "namespace {n} left behind");
    }
    assert!(!std::path::Path::new(&format!("/run/tapnet/{name}.state")).exists());
}
