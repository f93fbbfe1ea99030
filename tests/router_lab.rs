//! The router in real namespaces: gateways answer, subnets reach each other through
//! tapnet, TTL expiry and unknown networks come back as ICMP errors from the gateway.

mod common;

use common::*;

struct TwoSubnets {
    lab: RunningLab,
    ns: Vec<String>,
}

fn two_subnets() -> TwoSubnets {
    let name = unique("l");
    let ns: Vec<String> = (0..3).map(|_| unique("n")).collect();
    let text = LabText::new(&name)
        .bridge("front", "10.220.1.0/24")
        .bridge("back", "10.220.2.0/24")
        .with("gateway", "10.220.2.254")
        .port("web", "front", &ns[0], "10.220.1.2/24")
        .port("db", "back", &ns[1], "10.220.2.2/24")
        .port("cache", "back", &ns[2], "10.220.2.3/24")
        .text();
    let lab = RunningLab::start(&name, &ns, &text);
    TwoSubnets { lab, ns }
}

#[test]
fn containers_ping_their_gateway_and_across_subnets() {
    let t = two_subnets();
    assert!(ping(&t.ns[0], "10.220.1.1", 2), "web to its gateway");
    assert!(ping(&t.ns[1], "10.220.2.254", 2), "db to its gateway");
    assert!(
        ping(&t.ns[0], "10.220.2.2", 3),
        "web to db across the router"
    );
    assert!(
        ping(&t.ns[2], "10.220.1.2", 3),
        "cache to web across the router"
    );
    assert!(
        ping(&t.ns[1], "10.220.2.3", 2),
        "db to cache on the same bridge"
    );
    // The received TTL shows one hop: 64 from the container, 63 after the router.
    let out = ns_run(&t.ns[0], &["ping", "-c", "1", "-W", "1", "10.220.2.2"], 5);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ttl=63"), "{text}");

    let routes = t.lab.show("routes");
    let dests: Vec<_> = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["destination"].as_str().unwrap().to_string())
        .collect();
    assert!(dests.contains(&"10.220.1.0/24".to_string()), "{routes}");
    assert!(dests.contains(&"10.220.2.0/24".to_string()), "{routes}");
    let arp = t.lab.show("arp");
    let ips: Vec<_> = arp["arp"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["ip"].as_str().unwrap().to_string(),
                e["mac"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        ips.contains(&("10.220.1.2".into(), "02:00:0a:dc:01:02".into())),
        "{arp}"
    );
    assert!(
        ips.contains(&("10.220.2.3".into(), "02:00:0a:dc:02:03".into())),
        "{arp}"
    );
}

#[test]
fn ttl_one_and_unknown_networks_come_back_from_the_gateway() {
    let t = two_subnets();
    let out = ns_run(
        &t.ns[0],
        &["ping", "-c", "1", "-W", "1", "-t", "1", "10.220.2.2"],
        5,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("From 10.220.1.1") && text.contains("Time to live exceeded"),
        "{text}"
    );
    let out = ns_run(&t.ns[0], &["ping", "-c", "1", "-W", "1", "10.99.99.99"], 5);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("From 10.220.1.1") && text.contains("Net Unreachable"),
        "{text}"
    );
    let drops = t.lab.show("drops");
    assert!(
        drops["router"]["drops"]["ttl_exceeded"].as_u64().unwrap() >= 1,
        "{drops}"
    );
    assert!(
        drops["router"]["drops"]["no_route"].as_u64().unwrap() >= 1,
        "{drops}"
    );
}

#[test]
fn an_address_nobody_holds_is_host_unreachable_after_arp_gives_up() {
    let t = two_subnets();
    let out = ns_run(&t.ns[0], &["ping", "-c", "1", "-W", "6", "10.220.2.77"], 10);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Destination Host Unreachable"), "{text}");
    let drops = t.lab.show("drops");
    assert!(
        drops["router"]["drops"]["neighbor_unresolved"]
            .as_u64()
            .unwrap()
            >= 1,
        "{drops}"
    );
}

#[test]
fn iperf3_tcp_across_subnets_completes() {
    let t = two_subnets();
    let _server = Background::spawn(&t.ns[1], &["iperf3", "-s", "-B", "10.220.2.2"]);
    let mut result = None;
    for _ in 0..30 {
        let o = ns_run(
            &t.ns[0],
            &["iperf3", "-c", "10.220.2.2", "-t", "2", "-J"],
            10,
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if o.status.success() && v["end"]["sum_received"]["bytes"].is_u64() {
            result = Some(v);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let v = result.expect("iperf3 never completed a test");
    let bytes = v["end"]["sum_received"]["bytes"].as_u64().unwrap();
    assert!(bytes > 1_000_000, "{bytes} bytes");
    eprintln!(
        "routed iperf3: {:.2} Gbit/s",
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap()
            / 1e9
    );
    let router = t.lab.port("router:front");
    assert!(router["tx_packets"].as_u64().unwrap() > 100, "{router}");
}

#[test]
fn a_packet_too_big_for_the_next_bridge_gets_fragmentation_needed() {
    let name = unique("l");
    let ns: Vec<String> = (0..2).map(|_| unique("n")).collect();
    let text = LabText::new(&name)
        .bridge("wide", "10.221.1.0/24")
        .bridge("narrow", "10.221.2.0/24")
        .with("mtu", 1400)
        .port("a", "wide", &ns[0], "10.221.1.2/24")
        .port("b", "narrow", &ns[1], "10.221.2.2/24")
        .text();
    let lab = RunningLab::start(&name, &ns, &text);
    assert!(ping(&ns[0], "10.221.2.2", 1));
    // First without DF (before a's kernel learns the path MTU below): a packet too big for the narrow bridge is cut into fragments there,
    // as a kernel router would (RFC 791, RFC 1812): ping and UDP get through whole,
    // both ways (the answer is fragmented by b's own kernel).
    let out = ns_run(
        &ns[0],
        &[
            "ping",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "2",
            "-M",
            "dont",
            "-s",
            "1450",
            "10.221.2.2",
        ],
        5,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _echo = udp_echo(&ns[1], "10.221.2.2", 7000);
    for size in [1400, 1473, 9000] {
        assert_eq!(
            udp_ask_big(&ns[0], "10.221.2.2", 7000, size),
            Some(size),
            "{size}"
        );
    }
    let out = ns_run(
        &ns[0],
        &[
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1450",
            "10.221.2.2",
        ],
        5,
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("mtu = 1400") || text.contains("Frag needed"),
        "{text}"
    );
    let drops = lab.show("drops");
    assert!(
        drops["router"]["drops"]["too_big"].as_u64().unwrap() >= 1,
        "{drops}"
    );
    // What fits still goes.
    let out = ns_run(
        &ns[0],
        &[
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1300",
            "10.221.2.2",
        ],
        5,
    );
    assert!(out.status.success());
    let drops = lab.show("drops");
    assert!(
        drops["router"]["fragmented"].as_u64().unwrap() >= 2,
        "{drops}"
    );
}

#[test]
fn a_container_on_two_routed_bridges_is_multi_homed() {
    // One namespace with a port on each of two routed bridges: both addresses, and
    // the default route from the first port in the file only.
    let name = unique("l");
    let ns: Vec<String> = (0..3).map(|_| unique("n")).collect();
    let text = LabText::new(&name)
        .bridge("front", "10.228.1.0/24")
        .bridge("back", "10.228.2.0/24")
        .port("m1", "front", &ns[0], "10.228.1.2/24")
        .port("m2", "back", &ns[0], "10.228.2.2/24")
        .with("ifname", "eth1")
        .port("f", "front", &ns[1], "10.228.1.3/24")
        .port("b", "back", &ns[2], "10.228.2.3/24")
        .text();
    let _lab = RunningLab::start(&name, &ns, &text);
    let routes = ns_run(&ns[0], &["ip", "route", "show", "default"], 10);
    let routes = String::from_utf8_lossy(&routes.stdout).to_string();
    assert_eq!(routes.lines().count(), 1, "{routes}");
    assert!(routes.contains("via 10.228.1.1 dev eth0"), "{routes}");
    assert!(ping(&ns[0], "10.228.1.3", 1));
    assert!(ping(&ns[0], "10.228.2.3", 1), "on link by eth1");
    assert!(ping(&ns[2], "10.228.1.2", 1), "routed to eth0's address");
}
