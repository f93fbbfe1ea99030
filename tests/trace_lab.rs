//! `tapnet trace`: a synthetic packet followed through the lab's own decisions, with
//! nothing sent and no table changed.

mod common;

use common::*;

fn trace(lab: &RunningLab, port: &str, packet: &str) -> (Option<i32>, String) {
    let out = run(&[TAPNET, "trace", port, packet, "--lab", &lab.name], 10);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

#[test]
fn traces_name_the_egress_the_route_and_the_rewrite() {
    let name = unique("l");
    let ns: Vec<String> = (0..3).map(|_| unique("n")).collect();
    let text = LabText::new(&name)
        .bridge("front", "10.224.1.0/24")
        .bridge("back", "10.224.2.0/24")
        .port("web", "front", &ns[0], "10.224.1.2/24")
        .port("db", "back", &ns[1], "10.224.2.2/24")
        .port("db2", "back", &ns[2], "10.224.2.3/24")
        .service(
            "api",
            "10.224.2.100:80",
            "tcp",
            &["10.224.2.2:8080", "10.224.2.3:8080"],
        )
        .text();
    let lab = RunningLab::start(&name, &ns, &text);
    // Let the router and bridges learn everyone.
    assert!(ping(&ns[0], "10.224.2.2", 1));
    assert!(ping(&ns[0], "10.224.2.3", 1));

    let (code, t) = trace(&lab, "db", "udp 10.224.2.2:5000 -> 10.224.2.3:53");
    assert_eq!(code, Some(0), "{t}");
    assert!(t.contains("leaves by port db2"), "{t}");

    let (_, t) = trace(&lab, "web", "tcp 10.224.1.2:40000 -> 10.224.2.2:3306");
    assert!(t.contains("route 10.224.2.0/24, out by leg back"), "{t}");
    assert!(t.contains("ttl 63"), "{t}");
    assert!(t.contains("leaves by port db "), "{t}");

    let (_, t) = trace(&lab, "web", "tcp 10.224.1.2:40001 -> 10.224.2.100:80");
    assert!(t.contains("becomes 10.224.1.2:40001 -> 10.224.2."), "{t}");
    assert!(t.contains(":8080"), "{t}");
    assert!(t.contains("leaves by port db"), "{t}");

    let no_route = || {
        lab.show("drops")["router"]["drops"]["no_route"]
            .as_u64()
            .unwrap()
    };
    let before = no_route();
    let (_, t) = trace(&lab, "web", "icmp 10.224.1.2 -> 192.0.2.1");
    assert!(t.contains("dropped (no_route)"), "{t}");
    assert_eq!(
        no_route(),
        before,
        "a traced drop was counted as a real one"
    );

    // Nothing was changed: no NAT flow from the service trace.
    assert_eq!(lab.show("nat")["table"]["flows"], 0);

    let (code, t) = trace(&lab, "nosuch", "icmp 10.224.1.2 -> 10.224.2.2");
    assert_eq!(code, Some(1), "{t}");
    assert!(t.contains("no port `nosuch`"), "{t}");
    let (code, t) = trace(&lab, "web", "tcp 10.224.1.2 -> 10.224.2.2");
    assert_eq!(code, Some(1), "{t}");
    assert!(t.contains("expected"), "{t}");
}

#[test]
fn traces_show_the_drops_the_datapath_takes_where_it_takes_them() {
    // tapnet in a namespace of its own, its VXLAN endpoint on that namespace's
    // loopback, its one peer an address there that nobody answers on.
    let host = TestNetns::new("h");
    assert!(
        run(&["ip", "-n", &host.name, "link", "set", "lo", "up"], 10)
            .status
            .success()
    );
    let name = unique("l");
    let ns: Vec<String> = (0..2).map(|_| unique("n")).collect();
    let text = LabText::new(&name)
        .bridge("front", "10.226.1.0/24")
        .bridge("ov", "10.226.3.0/24")
        .with("vni", 42i64)
        .port("web", "front", &ns[0], "10.226.1.2/24")
        .port("c", "ov", &ns[1], "10.226.3.2/24")
        .vxlan("127.0.0.1:4789", &["127.0.0.2:4789"])
        .text();
    let lab = RunningLab::start_in(Some(&host.name), &name, &ns, &text);

    // Cut short at the ingress port: a runt, never reaching the bridge.
    let (code, t) = trace(&lab, "web", "icmp 10.226.1.2 -> 10.226.1.1 size 10");
    assert_eq!(code, Some(0), "{t}");
    assert!(t.contains("port web: dropped on entry (runt)"), "{t}");

    // Larger than the VNI bridge's MTU (1450): dropped as the port's frame enters.
    let (_, t) = trace(&lab, "c", "udp 10.226.3.2:5000 -> 10.226.3.9:53 size 1500");
    assert!(t.contains("port c: dropped on entry (oversize)"), "{t}");
    // One that fits floods, and the tunnel sends it to its peer.
    let (_, t) = trace(&lab, "c", "udp 10.226.3.2:5000 -> 10.226.3.9:53 size 1464");
    assert!(
        t.contains("vxlan: encapsulated with VNI 42") && t.contains("127.0.0.2:4789"),
        "{t}"
    );
    // Routed into the VNI bridge, a DF packet too big for it is refused by the
    // router, with the MTU that fits.
    let (_, t) = trace(
        &lab,
        "web",
        "udp 10.226.1.2:5000 -> 10.226.3.2:53 size 1514",
    );
    assert!(t.contains("dropped (too_big)"), "{t}");

    // Frames for an address nobody answers wait for ARP, three per next hop: with
    // those held, the next one would be dropped, and trace says so.
    let held = ns_run(
        &ns[0],
        &[
            "python3",
            "-c",
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor _ in range(5): s.sendto(b'x', ('10.226.3.77', 9))",
        ],
        10,
    );
    assert!(held.status.success());
    let (_, t) = trace(&lab, "web", "udp 10.226.1.2:5000 -> 10.226.3.77:9");
    assert!(t.contains("dropped (hold_queue_full)"), "{t}");
    let drops = lab.show("drops");
    let full = drops["router"]["drops"]["hold_queue_full"]
        .as_u64()
        .unwrap();
    assert_eq!(
        full, 2,
        "the real drops: 5 sent, 3 held; the trace counts none"
    );
}

#[test]
fn trace_agrees_with_broadcasts_links_neighbours_and_the_host_proxy() {
    // Masquerade, so tapnet runs in a test host namespace whose only link leads to a
    // test outside namespace.
    let net = HostAndOutside::new();
    let name = unique("l");
    let ns: Vec<String> = (0..2).map(|_| unique("n")).collect();
    let text = LabText::new(&name)
        .bridge("front", "10.227.1.0/24")
        .port("a", "front", &ns[0], "10.227.1.2/24")
        .port("b", "front", &ns[1], "10.227.1.3/24")
        .nat()
        .with("masquerade", true)
        .with("max_flows", 16)
        .text();
    let lab = RunningLab::start_in(Some(&net.host.name), &name, &ns, &text);
    assert!(ping(&ns[0], "10.227.1.3", 1));

    // A broadcast is no unicast for the gateway: it floods to b.
    let (_, t) = trace(&lab, "a", "udp 10.227.1.2:5353 -> 255.255.255.255:5353");
    assert!(
        t.contains("is a broadcast") && t.contains("egress: flood: b"),
        "{t}"
    );
    // b is in a's own neighbour table now.
    let (_, t) = trace(&lab, "a", "udp 10.227.1.2:5000 -> 10.227.1.3:53");
    assert!(
        t.contains("from the container's own neighbour table"),
        "{t}"
    );
    assert!(t.contains("egress: b"), "{t}");

    // To the gateway's address: TCP is reset, UDP answered port-unreachable, as a
    // real packet is.
    let (_, t) = trace(&lab, "a", "tcp 10.227.1.2:40000 -> 10.227.1.1:22");
    assert!(t.contains("answered with a reset"), "{t}");
    let (_, t) = trace(&lab, "a", "udp 10.227.1.2:5000 -> 10.227.1.1:53");
    assert!(t.contains("port unreachable from the gateway"), "{t}");
    let refused = ns_run(
        &ns[0],
        &[
            "python3",
            "-c",
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(3)\ns.connect(('10.227.1.1', 53))\ns.send(b'x')\ntry:\n    s.recv(100)\nexcept ConnectionRefusedError:\n    print('refused')",
        ],
        10,
    );
    assert_eq!(String::from_utf8_lossy(&refused.stdout).trim(), "refused");

    // Past its share of host flows (12 of 16), a's next flow is refused: trace says so.
    let fill = "import socket\nfor k in range(12):\n    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('10.250.0.2', 20000 + k))";
    assert!(ns_run(&ns[0], &["python3", "-c", fill], 10)
        .status
        .success());
    let (_, t) = trace(&lab, "a", "udp 10.227.1.2:6000 -> 10.250.0.2:9");
    assert!(t.contains("dropped (container_limited)"), "{t}");
    let (_, t) = trace(&lab, "b", "udp 10.227.1.3:6000 -> 10.250.0.2:9");
    assert!(
        t.contains("a new host socket") && t.contains("egress: host"),
        "{t}"
    );

    // b sets its link down: frames for it are dropped, and trace says so.
    steps(&[&["ip", "-n", &ns[1], "link", "set", "eth0", "down"]]);
    assert!(!ping(&ns[0], "10.227.1.3", 1));
    let (_, t) = trace(&lab, "a", "udp 10.227.1.2:5000 -> 10.227.1.3:53");
    assert!(t.contains("its link is down"), "{t}");
    assert_eq!(lab.port("b")["link_down"], true);
    // Tracing from the router's own port is refused.
    let (code, t) = trace(&lab, "router:front", "udp 10.227.1.1:1 -> 10.227.1.2:2");
    assert_eq!(code, Some(1), "{t}");
}
