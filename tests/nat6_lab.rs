//! Masquerade and port forwards over IPv6, through the host's own sockets. As in
//! `nat_lab`, tapnet runs inside a test "host" namespace whose only link is a veth to
//! a test "outside" namespace (here with IPv6 on it too), so nothing these tests send
//! can leave the machine.

mod common;

use common::*;

/// Container web on br0: 10.252.1.2 and fd00:252:1::2 (gateway6 fd00:252:1::1).
fn lab_text(name: &str, web: &str) -> LabText {
    LabText::new(name)
        .bridge("br0", "10.252.1.0/24")
        .with("subnet6", "fd00:252:1::/64")
        .port("web", "br0", web, "10.252.1.2/24")
        .with("ip6", "fd00:252:1::2/64")
}

#[test]
fn masquerade_over_ipv6_by_tcp_udp_and_ping() {
    let net = HostAndOutside::dual_stack();
    let (name, c) = (unique("l"), unique("n"));
    let text = lab_text(&name, &c).nat().with("masquerade", true).text();
    let lab = RunningLab::start_in(Some(&net.host.name), &name, std::slice::from_ref(&c), &text);
    let www = WebRoot::new("outside page over ipv6");
    let _web = http_server(&net.outside.name, OUTSIDE_IP6, 8000, &www.dir, &www.log);
    let _echo = udp_echo(&net.outside.name, OUTSIDE_IP6, 7000);

    let url = format!("http://[{OUTSIDE_IP6}]:8000/");
    let body = curl(&c, &url).expect("curl -6 through masquerade");
    assert_eq!(body, "outside page over ipv6");
    // The outside saw the host's IPv6 address: the host's socket made the connection.
    assert_eq!(www.clients(), vec![HOST_IP6.to_string()]);

    assert_eq!(
        udp_ask(&c, OUTSIDE_IP6, 7000, "hello6").as_deref(),
        Some("hello6")
    );
    let nat = lab.show("nat");
    let flows = nat["host_flows"].as_array().unwrap();
    assert!(
        flows.iter().any(|f| f["proto"] == "udp"
            && f["container"]
                .as_str()
                .unwrap()
                .starts_with("[fd00:252:1::2]:")
            && f["remote"] == format!("[{OUTSIDE_IP6}]:7000")),
        "{nat}"
    );
    // Echo through the host (raw ICMPv6 socket: root, the kernel's default
    // ping_group_range), the reply's hop limit counting the host's hop.
    let out = ns_run(
        &c,
        &["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", OUTSIDE_IP6],
        10,
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "ping -6 through masquerade: {text}");
    assert!(text.contains("ttl=63"), "{text}");
    assert!(
        lab.show("nat")["host_flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["proto"] == "icmp6"),
        "the echo flow is listed"
    );
    // Hop limit 1: time exceeded from the router, before anything leaves.
    let out = ns_run(
        &c,
        &["ping", "-6", "-c", "1", "-W", "2", "-t", "1", OUTSIDE_IP6],
        5,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("From fd00:252:1::1") && text.contains("Time exceeded"),
        "{text}"
    );
    // traceroute -6 (UDP) sees the router, the outside (its time exceeded reached the
    // host's socket and is passed on from it), then the far host (its port
    // unreachable, likewise), as through a kernel NAT.
    let path = vec![
        "fd00:252:1::1".to_string(),
        OUTSIDE_IP6.to_string(),
        FAR_IP6.to_string(),
    ];
    assert_eq!(traceroute(&c, FAR_IP6, &["-6"]), path, "traceroute -6");
    // A closed port outside: reset at once (curl exit 7).
    let out = ns_run(
        &c,
        &[
            "curl",
            "-s",
            "-m",
            "5",
            &format!("http://[{OUTSIDE_IP6}]:9/"),
        ],
        10,
    );
    assert_eq!(out.status.code(), Some(7), "refused");
    // The host's loopback is not the containers' to reach, by IPv6 or an
    // IPv4-mapped address.
    let _lo = http_server(&net.host.name, "::1", 8000, &www.dir, &www.log);
    for url in ["http://[::1]:8000/", "http://[::ffff:127.0.0.1]:8000/"] {
        let out = ns_run(&c, &["curl", "-s", "-m", "2", url], 5);
        assert!(!out.status.success(), "a container reached {url}");
    }
    // An address the network beyond has no route to: the router there says so, and
    // the container hears it from that router.
    let out = ns_run(&c, &["ping", "-6", "-c", "1", "-W", "2", "fd00:99::1"], 5);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("From {OUTSIDE_IP6}")) && text.contains("Destination unreachable"),
        "{text}"
    );
    // An address the host itself has no route to: the gateway says so.
    steps(&[&[
        "ip",
        "-n",
        &net.host.name,
        "-6",
        "route",
        "add",
        "unreachable",
        "fd00:98::/64",
    ]]);
    let out = ns_run(&c, &["ping", "-6", "-c", "1", "-W", "2", "fd00:98::1"], 5);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("From fd00:252:1::1") && text.contains("Destination unreachable"),
        "{text}"
    );
}

#[test]
fn forwards_over_ipv6_in_both_families() {
    let net = HostAndOutside::dual_stack();
    let (name, c) = (unique("l"), unique("n"));
    let text = lab_text(&name, &c)
        .forward("tcp", "[::]:8080", "[fd00:252:1::2]:80")
        .forward("tcp", "[::]:8081", "10.252.1.2:80")
        .forward("tcp", "8082", "[fd00:252:1::2]:80")
        .forward("udp", "[::]:7001", "[fd00:252:1::2]:7000")
        .forward("tcp", "[::]:5201", "[fd00:252:1::2]:5201")
        .text();
    let lab = RunningLab::start_in(Some(&net.host.name), &name, std::slice::from_ref(&c), &text);
    let w6 = WebRoot::new("web over ipv6");
    let w4 = WebRoot::new("web over ipv4");
    let _s6 = http_server(&c, "fd00:252:1::2", 80, &w6.dir, &w6.log);
    let _s4 = http_server(&c, "10.252.1.2", 80, &w4.dir, &w4.log);
    let _echo = udp_echo(&c, "fd00:252:1::2", 7000);

    // IPv6 client, IPv6 container: the container sees the real client address.
    let body = curl(&net.outside.name, &format!("http://[{HOST_IP6}]:8080/"));
    assert_eq!(body.as_deref(), Some("web over ipv6"));
    assert_eq!(w6.clients(), vec![OUTSIDE_IP6.to_string()]);
    // IPv6 client, IPv4 container: it could not answer an IPv6 address, so it sees
    // the gateway of its subnet.
    let body = curl(&net.outside.name, &format!("http://[{HOST_IP6}]:8081/"));
    assert_eq!(body.as_deref(), Some("web over ipv4"));
    assert_eq!(w4.clients(), vec!["10.252.1.1".to_string()]);
    // IPv4 client, IPv6 container: the gateway6.
    let body = curl(&net.outside.name, &format!("http://{HOST_IP}:8082/"));
    assert_eq!(body.as_deref(), Some("web over ipv6"));
    assert_eq!(
        w6.clients().last().map(String::as_str),
        Some("fd00:252:1::1")
    );
    // A bare port listens on IPv4 only: nothing answers it over IPv6.
    let out = ns_run(
        &net.outside.name,
        &[
            "curl",
            "-s",
            "-m",
            "2",
            &format!("http://[{HOST_IP6}]:8082/"),
        ],
        5,
    );
    assert!(!out.status.success(), "[::]:8082 is not forwarded");
    // UDP over IPv6, both ways.
    assert_eq!(
        udp_ask(&net.outside.name, HOST_IP6, 7001, "dgram6").as_deref(),
        Some("dgram6")
    );
    let fwd = lab.show("forwards");
    assert!(
        fwd.to_string().contains("[::]:8080") && fwd.to_string().contains("[fd00:252:1::2]:80"),
        "{fwd}"
    );
    // Bulk data: iperf3 through the IPv6 forward (TSO6 super-frames both ways).
    let _iperf = Background::spawn(&c, &["iperf3", "-s", "-B", "fd00:252:1::2", "-p", "5201"]);
    let bytes = iperf3(&net.outside.name, HOST_IP6, 5201).expect("iperf3 -6 through a forward");
    assert!(bytes > 10_000_000, "{bytes} bytes");
}

#[test]
fn an_ipv6_only_bridge_is_routed_and_masqueraded() {
    let net = HostAndOutside::dual_stack();
    let (name, a, b, c) = (unique("l"), unique("n"), unique("n"), unique("n"));
    // No IPv4 subnet anywhere: two IPv6-only bridges, b on SLAAC.
    let text = LabText::new(&name)
        .raw(&format!(
            "[[bridge]]\nname = \"br6\"\nsubnet6 = \"fd00:253:6::/64\"\n\
             [[bridge]]\nname = \"br0\"\nsubnet6 = \"fd00:253:1::/64\"\n\
             [[port]]\nname = \"a\"\nbridge = \"br6\"\nnetns = \"{a}\"\nip6 = \"fd00:253:6::2/64\"\n\
             [[port]]\nname = \"b\"\nbridge = \"br0\"\nnetns = \"{b}\"\nip6 = \"fd00:253:1::2/64\"\n\
             [[port]]\nname = \"c\"\nbridge = \"br6\"\nnetns = \"{c}\"\n"
        ))
        .nat()
        .with("masquerade", true)
        .text();
    let lab = RunningLab::start_in(
        Some(&net.host.name),
        &name,
        &[a.clone(), b.clone(), c.clone()],
        &text,
    );
    // No IPv4 in a: no address, no route.
    let addrs = ns_run(&a, &["ip", "-4", "-o", "addr"], 5);
    let addrs = String::from_utf8_lossy(&addrs.stdout).to_string();
    assert!(
        addrs.lines().all(|l| l.contains(" lo ")),
        "IPv4 in an IPv6-only container: {addrs}"
    );
    let out = ns_run(
        &a,
        &[
            "ping",
            "-6",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "2",
            "fd00:253:1::2",
        ],
        10,
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && text.contains("ttl=63"),
        "a -> b across the router: {text}"
    );
    let out = ns_run(
        &a,
        &["ping", "-6", "-c", "1", "-W", "2", "fd00:253:6::1"],
        5,
    );
    assert!(out.status.success(), "a -> its gateway6");
    // Through masquerade, from the IPv6-only bridge.
    let www = WebRoot::new("from an ipv6-only bridge");
    let _web = http_server(&net.outside.name, OUTSIDE_IP6, 8000, &www.dir, &www.log);
    let body = curl(&a, &format!("http://[{OUTSIDE_IP6}]:8000/"));
    assert_eq!(body.as_deref(), Some("from an ipv6-only bridge"));
    // IPv4 sent onto the IPv6-only bridge's router leg is dropped and counted.
    steps(&[&[
        "ip",
        "-n",
        &a,
        "addr",
        "add",
        "10.253.6.2/24",
        "dev",
        "eth0",
    ]]);
    let _ = ns_run(&a, &["ping", "-c", "1", "-W", "1", "10.253.6.1"], 5);
    let drops = lab.show("drops").to_string();
    assert!(drops.contains("no_ipv4"), "{drops}");
    // c has no address of its own (SLAAC), and is guarded all the same: it cannot
    // claim the gateway or advertise itself as a router to a.
    let out = ns_run(&c, &["python3", "-c", FORGE_ND, "fd00:253:6::1"], 10);
    assert!(out.status.success(), "{out:?}");
    let c_drops = lab.show_until("drops", std::time::Duration::from_secs(5), |d| {
        d["ports"].as_array().is_some_and(|ps| {
            ps.iter().any(|p| {
                p["port"] == "c"
                    && p["drops"]["spoofed_ip"].as_u64() >= Some(3)
                    && p["drops"]["ra_guard"].as_u64() >= Some(3)
            })
        })
    })["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == "c")
        .unwrap()["drops"]
        .clone();
    assert_eq!(
        (c_drops["spoofed_ip"].as_u64(), c_drops["ra_guard"].as_u64()),
        (Some(3), Some(3)),
        "{c_drops}"
    );
    let route = ns_run(&a, &["ip", "-6", "route", "show", "default"], 5);
    assert!(
        !String::from_utf8_lossy(&route.stdout).contains("fe80::bad"),
        "{route:?}"
    );
    // show routes: br6's subnet6 only, br0's subnet and subnet6.
    let routes = lab.show("routes").to_string();
    assert!(
        routes.contains("fd00:253:6::/64") && !routes.contains("br6\",\"destination\":\"0"),
        "{routes}"
    );
}

#[test]
fn iperf3_over_ipv6_on_a_bridge_and_routed() {
    let name = unique("l");
    let (a, b, c) = (unique("n"), unique("n"), unique("n"));
    let text = LabText::new(&name)
        .bridge("br0", "10.254.1.0/24")
        .with("subnet6", "fd00:254:1::/64")
        .bridge("br1", "10.254.2.0/24")
        .with("subnet6", "fd00:254:2::/64")
        .port("a", "br0", &a, "10.254.1.2/24")
        .with("ip6", "fd00:254:1::2/64")
        .port("b", "br0", &b, "10.254.1.3/24")
        .with("ip6", "fd00:254:1::3/64")
        .port("c", "br1", &c, "10.254.2.2/24")
        .with("ip6", "fd00:254:2::2/64")
        .text();
    let lab = RunningLab::start(&name, &[a.clone(), b.clone(), c.clone()], &text);
    let _sb = Background::spawn(&b, &["iperf3", "-s", "-p", "5411"]);
    let _sc = Background::spawn(&c, &["iperf3", "-s", "-p", "5412"]);
    let bridged = iperf3(&a, "fd00:254:1::3", 5411).expect("iperf3 -6 on a bridge");
    let routed = iperf3(&a, "fd00:254:2::2", 5412).expect("iperf3 -6 routed");
    assert!(
        bridged > 10_000_000 && routed > 10_000_000,
        "{bridged} {routed}"
    );
    let drops = lab.show("drops");
    assert_eq!(
        drops["router"]["too_big"].as_u64().unwrap_or(0),
        0,
        "super-frames routed whole: {drops}"
    );
}

#[test]
fn trace_follows_ipv6_through_the_host_proxy() {
    let net = HostAndOutside::dual_stack();
    let (name, c) = (unique("l"), unique("n"));
    let text = lab_text(&name, &c)
        .nat()
        .with("masquerade", true)
        .forward("tcp", "[::]:8080", "[fd00:252:1::2]:80")
        .text();
    let lab = RunningLab::start_in(Some(&net.host.name), &name, std::slice::from_ref(&c), &text);
    let trace = |packet: &str| {
        let mut cmd: Vec<&str> = lab.client.iter().map(String::as_str).collect();
        cmd.extend(["trace", "web", packet, "--lab", &name]);
        String::from_utf8_lossy(&run(&cmd, 10).stdout).to_string()
    };
    let text = trace(&format!("tcp [fd00:252:1::2]:4000 -> [{OUTSIDE_IP6}]:80"));
    assert!(
        text.contains("handed to the host proxy") && text.contains("masquerade"),
        "{text}"
    );
    let text = trace("tcp [fd00:252:1::2]:4000 -> [::1]:80");
    assert!(text.contains("no_route"), "the host's loopback: {text}");
    let text = trace(&format!("icmp6 fd00:252:1::2 -> {OUTSIDE_IP6}"));
    assert!(text.contains("echo request"), "{text}");
}

#[test]
fn a_container_using_many_addresses_of_its_prefix_holds_one_share() {
    let net = HostAndOutside::dual_stack();
    let (name, c, d) = (unique("l"), unique("n"), unique("n"));
    let text = lab_text(&name, &c)
        .port("api", "br0", &d, "10.252.1.3/24")
        .with("ip6", "fd00:252:1::3/64")
        .nat()
        .with("masquerade", true)
        .with("max_flows", 16)
        .text();
    let lab = RunningLab::start_in(Some(&net.host.name), &name, &[c.clone(), d.clone()], &text);
    let _echo = udp_echo(&net.outside.name, OUTSIDE_IP6, 7000);
    // web takes 20 more addresses of its /64 (port security allows any free one) and
    // sends a datagram from each: one container, one share (12 of 16 flows).
    const MANY: &str = r#"
import socket, subprocess, sys
for i in range(20):
    a = "fd00:252:1::1:%x" % i
    subprocess.run(["ip", "addr", "add", a + "/64", "dev", "eth0", "nodad"], check=True)
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind((a, 0))
    s.sendto(b"x", (sys.argv[1], 7000))
"#;
    let out = ns_run(&c, &["python3", "-c", MANY, OUTSIDE_IP6], 20);
    assert!(out.status.success(), "{out:?}");
    let nat = lab.show_until("nat", std::time::Duration::from_secs(5), |n| {
        n["host"]["container_limited"].as_u64() >= Some(8)
    });
    assert!(
        nat["host"]["container_limited"].as_u64().unwrap_or(0) >= 8,
        "{nat}"
    );
    // The other container still gets its flows.
    assert_eq!(
        udp_ask(&d, OUTSIDE_IP6, 7000, "still").as_deref(),
        Some("still")
    );
}
