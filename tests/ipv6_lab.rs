//! IPv6 on a dual-stack bridge: a container with a static `ip6`, one autoconfigured
//! from the router's advertisements (SLAAC), pings between them and to the gateway,
//! and tshark reading a capture of the neighbour discovery and the echo.

mod common;

use std::time::Duration;

use common::*;

/// `ping -6 -c COUNT` from `ns` to `ip`: true if any answer came.
fn ping6(ns: &str, ip: &str, count: u32) -> bool {
    let c = count.to_string();
    ns_run(
        ns,
        &["ping", "-6", "-c", &c, "-W", "1", "-i", "0.2", ip],
        20,
    )
    .status
    .success()
}

/// The global IPv6 addresses on `ns`'s eth0.
fn global6(ns: &str) -> Vec<String> {
    let out = ns_run(
        ns,
        &[
            "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global",
        ],
        5,
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.find(|x| *x == "inet6")?;
            Some(w.next()?.split('/').next()?.to_string())
        })
        .collect()
}

#[test]
fn containers_ping_over_ipv6_and_one_without_ip6_autoconfigures() {
    let name = unique("l");
    let (a, b) = (unique("n"), unique("n"));
    let text = LabText::new(&name)
        .bridge("br0", "10.231.0.0/24")
        .with("subnet6", "fd00:231::/64")
        .port("a", "br0", &a, "10.231.0.2/24")
        .with("ip6", "fd00:231::2/64")
        .port("b", "br0", &b, "10.231.0.3/24")
        .text();
    let lab = RunningLab::start(&name, &[a.clone(), b.clone()], &text);
    let file = std::env::temp_dir().join(format!("{}.pcap", unique("cap6")));
    let capture = capture_to_file(&lab, "a", &file);

    // The static address, and the gateway (the default IPv6 route).
    assert!(
        global6(&a).contains(&"fd00:231::2".to_string()),
        "{:?}",
        global6(&a)
    );
    assert!(ping6(&a, "fd00:231::1", 3), "a -> gateway6");

    // b has no ip6: it takes an address in the prefix from the router's
    // advertisement (its interface identifier from its MAC, RFC 4862).
    let mut slaac = Vec::new();
    for _ in 0..50 {
        slaac = global6(&b);
        if slaac.iter().any(|x| x.starts_with("fd00:231::")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let b6 = slaac
        .iter()
        .find(|x| x.starts_with("fd00:231::"))
        .unwrap_or_else(|| panic!("no SLAAC address in b: {slaac:?}"))
        .clone();
    let route = ns_run(&b, &["ip", "-6", "route", "show", "default"], 5);
    assert!(
        String::from_utf8_lossy(&route.stdout).contains("proto ra"),
        "a default route from the advertisement: {route:?}"
    );
    // SLAAC's own duplicate address detection takes a second before b may use it.
    let mut both = false;
    for _ in 0..10 {
        if ping6(&a, &b6, 1) {
            both = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(both, "a -> b at {b6}");
    assert!(ping6(&b, "fd00:231::2", 3), "b -> a");
    assert!(ping6(&b, "fd00:231::1", 2), "b -> gateway6");

    // tshark reads the capture: neighbour discovery and the echo (read again until
    // the capture wrote them).
    let wanted = [
        "Echo (ping) request",
        "Echo (ping) reply",
        "Neighbor Solicitation",
        "Neighbor Advertisement",
    ];
    let text = run_until(
        &["tshark", "-n", "-r", file.to_str().unwrap(), "-Y", "icmpv6"],
        Duration::from_secs(10),
        |t| wanted.iter().all(|w| t.contains(w)),
    );
    drop(capture);
    let _ = std::fs::remove_file(&file);
    for what in wanted {
        assert!(text.contains(what), "no {what} in:\n{text}");
    }

    // A container forging neighbour discovery: an advertisement claiming the gateway's
    // address, and a router advertisement of its own. Port security drops both.
    let out = ns_run(&b, &["python3", "-c", FORGE_ND, "fd00:231::1"], 10);
    assert!(out.status.success(), "{out:?}");
    let port_drops = |d: &serde_json::Value, port: &str| {
        d["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["port"] == port))
            .map(|p| p["drops"].clone())
    };
    let drops = lab.show_until("drops", Duration::from_secs(5), |d| {
        port_drops(d, "b").is_some_and(|b| {
            b["spoofed_ip"].as_u64() >= Some(3) && b["ra_guard"].as_u64() >= Some(3)
        })
    });
    let b_drops = port_drops(&drops, "b").expect("port b in show drops");
    assert_eq!(b_drops["spoofed_ip"], 3, "{b_drops}");
    assert_eq!(b_drops["ra_guard"], 3, "{b_drops}");
    assert!(ping6(&a, "fd00:231::1", 2), "a still reaches the gateway");
    let route = ns_run(&a, &["ip", "-6", "route", "show", "default"], 5);
    assert!(
        !String::from_utf8_lossy(&route.stdout).contains("fe80::bad"),
        "{route:?}"
    );

    // The containers' neighbour discovery was all well formed.
    let drops = lab.show("drops");
    for reason in [
        "bad_icmpv6",
        "ndp_hop_limit",
        "ra_from_container",
        "bad_ipv6_header",
    ] {
        assert_eq!(drops["router"]["drops"][reason], 0, "{reason}: {drops}");
    }
    drop(lab);
}

#[test]
fn the_router_routes_ipv6_between_subnets_with_its_errors() {
    let name = unique("l");
    let (a, b, c) = (unique("n"), unique("n"), unique("n"));
    let text = LabText::new(&name)
        .bridge("br0", "10.232.1.0/24")
        .with("subnet6", "fd00:232:1::/64")
        .bridge("br1", "10.232.2.0/24")
        .with("subnet6", "fd00:232:2::/64")
        .with("mtu", 1400)
        .port("a", "br0", &a, "10.232.1.2/24")
        .with("ip6", "fd00:232:1::2/64")
        .port("b", "br1", &b, "10.232.2.2/24")
        .with("ip6", "fd00:232:2::2/64")
        .port("c", "br1", &c, "10.232.2.3/24")
        .text();
    let lab = RunningLab::start(&name, &[a.clone(), b.clone(), c.clone()], &text);

    // Across the router: one hop less on arrival.
    let out = ns_run(
        &a,
        &["ping", "-6", "-c", "2", "-W", "1", "fd00:232:2::2"],
        10,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("ttl=63"), "{text}");

    // traceroute -6 sees the router's address on a's side, then b. One probe at a
    // time: its 16 simultaneous probes are 16 flows, which several datapath threads
    // may deliver in any order, and b's kernel answers only the first few of a burst
    // (ICMPv6 rate limit), so which hop it answers first would be chance.
    let hops = ns_run(
        &a,
        &[
            "traceroute",
            "-6",
            "-n",
            "-q",
            "1",
            "-N",
            "1",
            "-w",
            "1",
            "fd00:232:2::2",
        ],
        20,
    );
    let hops = String::from_utf8_lossy(&hops.stdout).to_string();
    let lines: Vec<&str> = hops.lines().skip(1).collect();
    assert!(
        lines.first().is_some_and(|l| l.contains("fd00:232:1::1")),
        "{hops}"
    );
    assert!(
        lines.get(1).is_some_and(|l| l.contains("fd00:232:2::2")),
        "{hops}"
    );

    // Too big for br1 with "don't fragment" (IPv6 never fragments on the way):
    // packet too big from the router, with br1's MTU.
    let out = ns_run(
        &a,
        &[
            "ping",
            "-6",
            "-c",
            "1",
            "-W",
            "1",
            "-M",
            "do",
            "-s",
            "1400",
            "fd00:232:2::2",
        ],
        10,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Packet too big: mtu=1400"), "{text}");

    // c autoconfigured on br1; the router finds it by neighbour solicitation.
    let mut c6 = None;
    for _ in 0..50 {
        c6 = global6(&c)
            .into_iter()
            .find(|x| x.starts_with("fd00:232:2::"));
        if c6.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let c6 = c6.expect("c autoconfigures");
    let mut reached = false;
    for _ in 0..10 {
        if ping6(&a, &c6, 2) {
            reached = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(reached, "a -> c at {c6}");
    // The packets that needed c's link-layer address waited for it, none was lost.
    assert_eq!(lab.show("drops")["router"]["drops"]["neighbor6_unknown"], 0);
    // The neighbour table (`show arp`) has both: a port's own ip6 for good, c learned.
    let arp = lab.show("arp").to_string();
    assert!(arp.contains("\"ip\":\"fd00:232:1::2\""), "{arp}");
    assert!(arp.contains(&format!("\"ip\":\"{c6}\"")), "{arp}");
    // A port attached at run time with an ip6 is routed to at once, and shown.
    let d = unique("n");
    let out = run(
        &[
            TAPNET,
            "attach",
            "br1",
            "--name",
            "d",
            "--netns",
            &d,
            "--ip",
            "10.232.2.9/24",
            "--ip6",
            "fd00:232:2::9/64",
            "--lab",
            &name,
        ],
        20,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(ping6(&a, "fd00:232:2::9", 3), "a -> the attached port");
    assert_eq!(lab.port("d")["ip6"], "fd00:232:2::9");
    // c, there before d, may not send from d's address now.
    assert!(ns_run(
        &c,
        &[
            "ip",
            "-6",
            "addr",
            "add",
            "fd00:232:2::9/64",
            "dev",
            "eth0",
            "nodad"
        ],
        5
    )
    .status
    .success());
    let _ = ns_run(
        &c,
        &[
            "ping",
            "-6",
            "-c",
            "2",
            "-W",
            "1",
            "-I",
            "fd00:232:2::9",
            "fd00:232:2::1",
        ],
        10,
    );
    let c_drops = lab.show("drops")["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == "c")
        .unwrap()["drops"]["spoofed_ip"]
        .as_u64()
        .unwrap_or(0);
    assert!(c_drops >= 2, "c sent from d's address: {c_drops} dropped");
    // c gives the address up (else, d gone, it may take it: it is free then).
    steps(&[&[
        "ip",
        "-n",
        &c,
        "-6",
        "addr",
        "del",
        "fd00:232:2::9/64",
        "dev",
        "eth0",
    ]]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(run(&[TAPNET, "detach", "d", "--lab", &name], 10)
        .status
        .success());
    let arp = lab.show("arp").to_string();
    assert!(!arp.contains("fd00:232:2::9"), "{arp}");

    // show routes lists the IPv6 subnets too.
    let routes = lab.show("routes").to_string();
    for net in ["fd00:232:1::/64", "fd00:232:2::/64"] {
        assert!(routes.contains(net), "{routes}");
    }

    // trace takes IPv6 packets and follows them through the same pipeline.
    let trace = |packet: &str| {
        let out = run(&[TAPNET, "trace", "a", packet, "--lab", &name], 10);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, text) = trace("icmp6 fd00:232:1::2 -> fd00:232:2::2");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("hop limit now 63") && text.contains("egress: b"),
        "{text}"
    );
    let (_, text) = trace("tcp [fd00:232:1::2]:4000 -> [fd00:232:2::2]:80");
    assert!(text.contains("egress: b"), "{text}");
    let (_, text) = trace("udp [fd00:232:1::2]:4000 -> [fd00:99::9]:53");
    assert!(
        text.contains("no_route") && text.contains("egress: none"),
        "{text}"
    );
    let out = run(
        &[
            TAPNET,
            "trace",
            "a",
            "icmp6 fd00::zz -> ::1",
            "--lab",
            &name,
        ],
        10,
    );
    assert_eq!(out.status.code(), Some(1));

    let drops = lab.show("drops");
    assert_eq!(drops["router"]["drops"]["too_big"], 1, "{drops}");
    assert!(
        drops["router"]["drops"]["ttl_exceeded"].as_u64() >= Some(1),
        "{drops}"
    );
}

/// Two hosts joined by one veth: 10.66.0.1 and 10.66.0.2.
fn two_hosts() -> (TestNetns, TestNetns) {
    hosts_linked("10.66.0.1/24", "10.66.0.2/24")
}

#[test]
fn tcp_over_ipv6_crosses_vxlan_between_two_tapnets() {
    let (ha, hb) = two_hosts();
    let (ca, cb, cl) = (unique("n"), unique("n"), unique("n"));
    let (la, lb) = (unique("l"), unique("l"));
    let lab = |name: &str, me: &str, peer: &str, c: &str, ip: &str, ip6: &str| {
        LabText::new(name)
            // A plain bridge (MTU 1500) beside the VNI bridge (1450) on host a.
            .raw(&if name == la {
                format!(
                    "[[bridge]]\nname = \"lo6\"\nsubnet6 = \"fd00:68::/64\"\n\
                     [[port]]\nname = \"l\"\nbridge = \"lo6\"\nnetns = \"{cl}\"\nip6 = \"fd00:68::2/64\"\n"
                )
            } else {
                String::new()
            })
            .bridge("ov", "10.67.0.0/24")
            .with("subnet6", "fd00:67::/64")
            .with("vni", 42)
            .vxlan(&format!("{me}:4789"), &[&format!("{peer}:4789")])
            .port("c", "ov", c, ip)
            .with("ip6", ip6)
            .text()
    };
    let a = RunningLab::start_in(
        Some(&ha.name),
        &la,
        &[ca.clone(), cl.clone()],
        &lab(
            &la,
            "10.66.0.1",
            "10.66.0.2",
            &ca,
            "10.67.0.2/24",
            "fd00:67::2/64",
        ),
    );
    let b = RunningLab::start_in(
        Some(&hb.name),
        &lb,
        std::slice::from_ref(&cb),
        &lab(
            &lb,
            "10.66.0.2",
            "10.66.0.1",
            &cb,
            "10.67.0.3/24",
            "fd00:67::3/64",
        ),
    );
    assert!(ping6(&ca, "fd00:67::3", 3), "a -> b over VXLAN");
    // From the 1500 bridge into the VNI bridge (1450): packet too big, MTU 1450,
    // from the router. (A 1500-byte
    // packet: 1452 bytes of echo data; one of 2000 would not leave a 1500 link.)
    let out = ns_run(
        &cl,
        &[
            "ping",
            "-6",
            "-c",
            "1",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1452",
            "fd00:67::3",
        ],
        5,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Packet too big: mtu=1450"), "{text}");
    // What fits is routed into the VNI bridge. (To a's container: b's, across the
    // tunnel, answers through its own host's router, which has no route to lo6;
    // each host routes for its own containers.)
    assert!(ping6(&cl, "fd00:67::2", 2), "routed into the VNI bridge");
    // The containers' TCP goes as TSO super-frames (GSO_TCPV6): cut into segments
    // that fit the VNI's MTU, none dropped as unsupported.
    let _server = Background::spawn(&cb, &["iperf3", "-s", "-p", "5406"]);
    let got = iperf3(&ca, "fd00:67::3", 5406);
    assert!(
        got.is_some_and(|b| b > 1_000_000),
        "iperf3 -6 over VXLAN: {got:?}"
    );
    let drops = a.show("vxlan")["drops"].clone();
    assert_eq!(drops["unsupported_gso"], 0, "{drops}");
    assert_eq!(drops["oversize"], 0, "{drops}");
    // b's endpoint merged a's segments again (GRO) into GSO_TCPV6 frames for c.
    let peers = b.show("vxlan")["peers"].clone();
    assert!(
        peers[0]["rx_gro_merged_v6"].as_u64().unwrap_or(0) > 100,
        "{peers}"
    );
    drop(b);
}

/// An HTTP server on [ip6]:port in `ns` answering every GET with `name` (the backend
/// says who it is) and logging each client's address to `log`.
fn http6_server(ns: &str, ip6: &str, port: u16, name: &str, log: &std::path::Path) -> Background {
    const CODE: &str = r#"
import http.server as h, socket, sys
socket.getfqdn = lambda *a: "x"
ip, port, name, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
class Server(h.ThreadingHTTPServer):
    address_family = socket.AF_INET6
class Handler(h.BaseHTTPRequestHandler):
    def do_GET(self):
        body = name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *args):
        with open(log, "a") as f:
            f.write(self.client_address[0] + "\n")
Server((ip, port), Handler).serve_forever()
"#;
    Background::spawn(
        ns,
        &[
            "python3",
            "-c",
            CODE,
            ip6,
            &port.to_string(),
            name,
            log.to_str().unwrap(),
        ],
    )
}

/// A log file removed on drop.
struct Log(std::path::PathBuf);

impl Log {
    fn new() -> Log {
        Log(std::env::temp_dir().join(format!("{}.log", unique("clients6"))))
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `curl -6` from `ns` to `url`, from source port `port`: the body, if it answered.
fn curl6_from(ns: &str, url: &str, port: u16) -> Option<String> {
    let p = port.to_string();
    let out = ns_run(
        ns,
        &["curl", "-6", "-s", "-m", "5", "--local-port", &p, url],
        10,
    );
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

#[test]
fn curl_6_to_an_ipv6_service_vip_spreads_over_two_backends_and_hairpins() {
    let name = unique("l");
    let (client, b1, b2, near) = (unique("n"), unique("n"), unique("n"), unique("n"));
    let text = LabText::new(&name)
        .bridge("front", "10.233.1.0/24")
        .with("subnet6", "fd00:233:1::/64")
        .bridge("back", "10.233.2.0/24")
        .with("subnet6", "fd00:233:2::/64")
        .port("client", "front", &client, "10.233.1.2/24")
        .with("ip6", "fd00:233:1::2/64")
        .port("b1", "back", &b1, "10.233.2.2/24")
        .with("ip6", "fd00:233:2::2/64")
        .port("b2", "back", &b2, "10.233.2.3/24")
        .with("ip6", "fd00:233:2::3/64")
        .port("near", "back", &near, "10.233.2.5/24")
        .with("ip6", "fd00:233:2::5/64")
        .service(
            "web6",
            "[fd00:233:2::100]:80",
            "tcp",
            &["[fd00:233:2::2]:8080", "[fd00:233:2::3]:8080"],
        )
        .text();
    let all = [client.clone(), b1.clone(), b2.clone(), near.clone()];
    let lab = RunningLab::start(&name, &all, &text);
    let logs = [Log::new(), Log::new()];
    let _servers = [
        http6_server(&b1, "fd00:233:2::2", 8080, "b1", &logs[0].0),
        http6_server(&b2, "fd00:233:2::3", 8080, "b2", &logs[1].0),
    ];
    wait_listening(&b1, 8080);
    wait_listening(&b2, 8080);

    // The first request may wait for neighbour discovery: retried.
    let url = "http://[fd00:233:2::100]/";
    let first = (0..50).find_map(|i| {
        curl6_from(&client, url, 42000 + i).or_else(|| {
            std::thread::sleep(Duration::from_millis(100));
            None
        })
    });
    assert!(
        matches!(first.as_deref(), Some("b1" | "b2")),
        "curl -6 to the VIP: {first:?}"
    );
    // Many requests from different source ports reach both backends, each reply
    // whole from one of them.
    let mut seen = [0; 2];
    for port in 43000..43030 {
        let body = curl6_from(&client, url, port).unwrap_or_default();
        match body.as_str() {
            "b1" => seen[0] += 1,
            "b2" => seen[1] += 1,
            other => panic!("reply {other:?} from port {port}"),
        }
    }
    assert!(seen[0] > 0 && seen[1] > 0, "one backend took all: {seen:?}");
    // Each backend saw the client's real IPv6 address, never the router's.
    for (i, log) in logs.iter().enumerate() {
        let clients = log.lines();
        assert!(!clients.is_empty(), "b{} logged nobody", i + 1);
        assert!(
            clients.iter().all(|c| c == "fd00:233:1::2"),
            "b{} saw {clients:?}",
            i + 1
        );
    }
    // show services counts per backend; show nat lists IPv6 flows.
    let services = lab.show("services");
    let svc = &services["services"][0];
    assert_eq!(svc["vip"], "[fd00:233:2::100]:80");
    assert_eq!(svc["backends"].as_array().unwrap().len(), 2);
    let nat = lab.show("nat");
    assert!(
        nat["nat"].to_string().contains("[fd00:233:1::2]:43"),
        "IPv6 flows in show nat: {nat}"
    );

    // Hairpin: a client on the backends' own subnet6 is served, and the backend sees
    // the router's gateway6 (so its answer comes back through the router).
    let body = (0..30).find_map(|i| {
        curl6_from(&near, url, 44000 + i).or_else(|| {
            std::thread::sleep(Duration::from_millis(100));
            None
        })
    });
    assert!(
        matches!(body.as_deref(), Some("b1" | "b2")),
        "hairpin: {body:?}"
    );
    let all_clients: Vec<String> = logs.iter().flat_map(|l| l.lines()).collect();
    assert!(
        all_clients.iter().any(|c| c == "fd00:233:2::1"),
        "the hairpin comes from gateway6: {all_clients:?}"
    );

    // A service added at run time with an IPv6 VIP: answered at once, by its one
    // backend; one with an IPv4 backend is refused in one line.
    let add = |vip: &str, backend: &str| {
        run(
            &[
                TAPNET, "service", "add", "late6", vip, "tcp", backend, "--lab", &name,
            ],
            10,
        )
    };
    let refused = add("[fd00:233:2::101]:80", "10.233.2.3:8080");
    assert!(!refused.status.success(), "mixed families: {refused:?}");
    let out = add("[fd00:233:2::101]:80", "[fd00:233:2::3]:8080");
    assert!(out.status.success(), "service add: {out:?}");
    let late = (0..30).find_map(|i| {
        curl6_from(&client, "http://[fd00:233:2::101]/", 46000 + i).or_else(|| {
            std::thread::sleep(Duration::from_millis(100));
            None
        })
    });
    assert_eq!(late.as_deref(), Some("b2"), "the VIP added at run time");

    // trace shows the translation.
    let out = run(
        &[
            TAPNET,
            "trace",
            "client",
            "tcp [fd00:233:1::2]:45000 -> [fd00:233:2::100]:80",
            "--lab",
            &name,
        ],
        10,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "trace: {out:?}");
    assert!(
        text.contains("[fd00:233:2::2]:8080") || text.contains("[fd00:233:2::3]:8080"),
        "trace names the backend:\n{text}"
    );
}

#[test]
fn rdisc6_sees_the_dns_server_of_dns6() {
    let name = unique("l");
    let a = unique("n");
    let text = LabText::new(&name)
        .bridge("br0", "10.234.0.0/24")
        .with("subnet6", "fd00:234::/64")
        .raw("dns6 = [\"fd00:234::53\", \"fd00:99::35\"]")
        .port("a", "br0", &a, "10.234.0.2/24")
        .text();
    let lab = RunningLab::start(&name, std::slice::from_ref(&a), &text);
    // rdisc6 solicits and prints the advertisement it gets (retried: the first
    // solicitations may go before the link is up).
    let mut printed = String::new();
    for _ in 0..10 {
        let out = ns_run(&a, &["rdisc6", "-1", "-w", "1500", "eth0"], 15);
        printed = String::from_utf8_lossy(&out.stdout).to_string();
        if printed.contains("Recursive DNS server") {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for dns in ["fd00:234::53", "fd00:99::35"] {
        assert!(
            printed
                .lines()
                .any(|l| l.contains("Recursive DNS server") && l.contains(dns)),
            "rdisc6 shows {dns}:\n{printed}"
        );
    }
    assert!(printed.contains("DNS servers lifetime"), "{printed}");
    // show lab writes it back.
    let lab_text = lab.show("lab").to_string();
    assert!(lab_text.contains("dns6"), "show lab: {lab_text}");
}
