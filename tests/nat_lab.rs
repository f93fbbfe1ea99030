//! Masquerade and port forwards through the host's own sockets. tapnet runs inside a
//! test "host" namespace whose only link is a veth to a test "outside" namespace, so
//! nothing these tests send can leave the machine.

mod common;

use common::*;
use std::time::Duration;

/// Containers web (10.251.1.2) and api (.3) on br0, 10.251.1.0/24; each test adds
/// its masquerade, forwards or services.
fn lab_text(name: &str, c: &str, d: &str) -> LabText {
    LabText::new(name)
        .bridge("br0", "10.251.1.0/24")
        .port("web", "br0", c, "10.251.1.2/24")
        .port("api", "br0", d, "10.251.1.3/24")
}

#[test]
fn masquerade_reaches_the_outside_by_tcp_udp_and_ping() {
    let net = HostAndOutside::new();
    let (name, c, d) = (unique("l"), unique("n"), unique("n"));
    let text = lab_text(&name, &c, &d)
        .nat()
        .with("masquerade", true)
        .text();
    let lab = RunningLab::start_in(Some(&net.host.name), &name, &[c.clone(), d.clone()], &text);
    let www = WebRoot::new("outside page");
    let _web = http_server(&net.outside.name, OUTSIDE_IP, 8000, &www.dir, &www.log);
    let _echo = udp_echo(&net.outside.name, OUTSIDE_IP, 7000);

    let body = curl(&c, &format!("http://{OUTSIDE_IP}:8000/")).expect("curl through masquerade");
    assert_eq!(body, "outside page");
    // The outside saw the host's address: the connection came from the host's socket.
    assert_eq!(www.clients(), vec![HOST_IP.to_string()]);

    // The TCP flow is gone once both sides closed.
    let t = std::time::Instant::now();
    while lab.show("nat")["host_flows"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["proto"] == "tcp")
    {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "TCP host flow left behind"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    assert_eq!(
        udp_ask(&c, OUTSIDE_IP, 7000, "hello").as_deref(),
        Some("hello")
    );
    // The host namespace keeps the kernel's default ping_group_range ("1 0"): no ICMP
    // socket for anyone, so tapnet (root) uses its raw socket.
    assert!(ping(&c, OUTSIDE_IP, 3), "ping through masquerade");
    assert_eq!(lab.show("nat")["host"]["ping_mode"], "raw");
    // Big pings: fragments reassembled on the way out, the reply cut again on the way in.
    let out = ns_run(
        &c,
        &[
            "ping", "-c", "2", "-i", "0.2", "-W", "2", "-s", "4000", OUTSIDE_IP,
        ],
        10,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // TTL still counts on the way out.
    let out = ns_run(
        &c,
        &["ping", "-c", "1", "-W", "2", "-t", "1", OUTSIDE_IP],
        5,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("From 10.251.1.1") && text.contains("Time to live exceeded"),
        "{text}"
    );
    // The host's own loopback is not the containers' to reach.
    let out = ns_run(&c, &["curl", "-s", "-m", "2", "http://127.0.0.2:8000/"], 5);
    assert!(
        !out.status.success(),
        "a container reached the host's loopback"
    );

    // A closed port on the outside: the host's connect is refused, the container gets
    // a reset at once (curl exit 7), not a timeout.
    let t = std::time::Instant::now();
    let out = ns_run(
        &c,
        &["curl", "-s", "-m", "5", &format!("http://{OUTSIDE_IP}:9/")],
        10,
    );
    assert_eq!(out.status.code(), Some(7), "refused");
    assert!(t.elapsed() < std::time::Duration::from_secs(3));

    // An address the network beyond the host has no route to: the router there says
    // so, and the container hears it from that router, as through a kernel NAT.
    // (Linux TCP treats that as a soft error while it retries, so curl times out; the
    // proxy's counter shows the verdict.)
    let out = ns_run(&c, &["ping", "-c", "1", "-W", "2", "10.99.0.1"], 5);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("From {OUTSIDE_IP}")) && text.contains("Unreachable"),
        "{text}"
    );
    let _ = ns_run(&c, &["curl", "-s", "-m", "1", "http://10.99.0.1/"], 5);
    // An address the host itself has no route to: the gateway answers, as a router
    // that has no route would.
    steps(&[&[
        "ip",
        "-n",
        &net.host.name,
        "route",
        "add",
        "unreachable",
        "10.98.0.0/16",
    ]]);
    let out = ns_run(&c, &["ping", "-c", "1", "-W", "2", "10.98.0.1"], 5);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("From 10.251.1.1") && text.contains("Unreachable"),
        "{text}"
    );

    let nat = lab.show("nat");
    assert!(
        nat["host"]["tcp_unreachable"].as_u64().unwrap() >= 1,
        "{nat}"
    );
    assert!(nat["host"]["tcp_opened"].as_u64().unwrap() >= 2, "{nat}");
    assert!(nat["host"]["tcp_refused"].as_u64().unwrap() >= 1, "{nat}");
    assert!(nat["host"]["udp_flows"].as_u64().unwrap() >= 1, "{nat}");
}

#[test]
fn forwards_publish_container_ports_with_the_real_client_address() {
    let net = HostAndOutside::new();
    let (name, c, d) = (unique("l"), unique("n"), unique("n"));
    let text = lab_text(&name, &c, &d)
        .forward("tcp", "0.0.0.0:8080", "10.251.1.2:80")
        .forward("udp", "0.0.0.0:5353", "10.251.1.3:5353")
        .text();
    let lab = RunningLab::start_in(Some(&net.host.name), &name, &[c.clone(), d.clone()], &text);
    let www = WebRoot::new("inside page");
    let _web = http_server(&c, "10.251.1.2", 80, &www.dir, &www.log);
    let _echo = udp_echo(&d, "10.251.1.3", 5353);

    let body = curl(&net.outside.name, &format!("http://{HOST_IP}:8080/"))
        .expect("curl through the forward");
    assert_eq!(body, "inside page");
    assert_eq!(
        www.clients(),
        vec![OUTSIDE_IP.to_string()],
        "the container saw the real client"
    );
    // From the host itself (loopback), the container sees the gateway instead: it
    // could not answer 127.0.0.1.
    let host_curl = ns_run(
        &net.host.name,
        &["curl", "-s", "-m", "5", "http://127.0.0.1:8080/"],
        10,
    );
    assert_eq!(String::from_utf8_lossy(&host_curl.stdout), "inside page");
    assert_eq!(www.clients().last().map(String::as_str), Some("10.251.1.1"));

    assert_eq!(
        udp_ask(&net.outside.name, HOST_IP, 5353, "ping?").as_deref(),
        Some("ping?")
    );

    let fw = lab.show("forwards");
    let tcp = &fw["forwards"][0];
    assert_eq!(tcp["listen"], "0.0.0.0:8080");
    assert!(tcp["connections"].as_u64().unwrap() >= 1, "{fw}");
    assert!(
        tcp["bytes_in"].as_u64().unwrap() > 0 && tcp["bytes_out"].as_u64().unwrap() > 0,
        "{fw}"
    );
    assert!(fw["forwards"][1]["bytes_in"].as_u64().unwrap() >= 5, "{fw}");
}

#[test]
fn a_forward_to_a_service_vip_is_balanced_too() {
    let net = HostAndOutside::new();
    let (name, c, d) = (unique("l"), unique("n"), unique("n"));
    let text = lab_text(&name, &c, &d)
        .service(
            "site",
            "10.251.1.100:80",
            "tcp",
            &["10.251.1.2:80", "10.251.1.3:80"],
        )
        .forward("tcp", "0.0.0.0:8081", "10.251.1.100:80")
        .text();
    let _lab = RunningLab::start_in(Some(&net.host.name), &name, &[c.clone(), d.clone()], &text);
    let (w1, w2) = (WebRoot::new("one"), WebRoot::new("two"));
    let _s1 = http_server(&c, "10.251.1.2", 80, &w1.dir, &w1.log);
    let _s2 = http_server(&d, "10.251.1.3", 80, &w2.dir, &w2.log);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..16 {
        let body = curl(&net.outside.name, &format!("http://{HOST_IP}:8081/"))
            .expect("curl to the VIP's forward");
        assert!(body == "one" || body == "two", "{body:?}");
        seen.insert(body);
    }
    assert_eq!(seen.len(), 2, "16 connections all went to one backend");
    for client in w1.clients().iter().chain(&w2.clients()) {
        assert_eq!(client, OUTSIDE_IP);
    }
}

#[test]
fn iperf3_through_a_forward_and_through_masquerade() {
    let net = HostAndOutside::new();
    let (name, c, d) = (unique("l"), unique("n"), unique("n"));
    let text = lab_text(&name, &c, &d)
        .nat()
        .with("masquerade", true)
        .forward("tcp", "0.0.0.0:5201", "10.251.1.2:5201")
        .text();
    let _lab = RunningLab::start_in(Some(&net.host.name), &name, &[c.clone(), d.clone()], &text);
    let _in = Background::spawn(&c, &["iperf3", "-s", "-B", "10.251.1.2"]);
    let _out = Background::spawn(
        &net.outside.name,
        &["iperf3", "-s", "-B", OUTSIDE_IP, "-p", "5202"],
    );
    let fwd = iperf3(&net.outside.name, HOST_IP, 5201).expect("iperf3 through the forward");
    assert!(fwd > 1_000_000, "{fwd} bytes");
    let masq = iperf3(&d, OUTSIDE_IP, 5202).expect("iperf3 through masquerade");
    assert!(masq > 1_000_000, "{masq} bytes");
}

#[test]
fn a_forward_port_taken_on_the_host_refuses_the_lab() {
    let net = HostAndOutside::new();
    let _squatter = Background::spawn(
        &net.host.name,
        &["python3", "-c", "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 8080)); s.listen(); time.sleep(60)"],
    );
    // Wait until the squatter really holds the port.
    let t = std::time::Instant::now();
    while !String::from_utf8_lossy(
        &ns_run(&net.host.name, &["ss", "-Htln", "sport = :8080"], 5).stdout,
    )
    .contains("8080")
    {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "the squatter never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (name, c, d) = (unique("l"), unique("n"), unique("n"));
    let text = lab_text(&name, &c, &d)
        .forward("tcp", "0.0.0.0:8080", "10.251.1.2:80")
        .text();
    let file = LabFile::new(&text);
    let path = file.path.to_str().unwrap();
    let host = format!("--net=/run/netns/{}", net.host.name);
    let out = run(&["nsenter", &host, TAPNET, "up", path], 20);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("forward listen 0.0.0.0:8080: cannot bind"),
        "{err}"
    );
    assert!(err.starts_with(path), "{err}");
    assert!(
        !netns_exists(&c) && !netns_exists(&d),
        "something was built"
    );
}

#[test]
fn masquerade_looks_like_a_network_path_to_traceroute_and_udp() {
    let net = HostAndOutside::new();
    let (name, c, d) = (unique("l"), unique("n"), unique("n"));
    let text = lab_text(&name, &c, &d)
        .nat()
        .with("masquerade", true)
        .text();
    let lab = RunningLab::start_in(Some(&net.host.name), &name, &[c.clone(), d.clone()], &text);
    // Every hop shows: the gateway, the router beyond the host, the destination. UDP
    // probes (their port unreachable from the destination), ICMP echo, and TCP SYNs.
    let path = vec![
        "10.251.1.1".to_string(),
        OUTSIDE_IP.to_string(),
        FAR_IP.to_string(),
    ];
    assert_eq!(traceroute(&c, FAR_IP, &[]), path, "traceroute (UDP)");
    assert_eq!(traceroute(&c, FAR_IP, &["-I"]), path, "traceroute -I");
    assert_eq!(
        traceroute(&c, FAR_IP, &["-T", "-p", "80"]),
        path,
        "traceroute -T"
    );
    // A connected UDP socket learns that nobody listens, as on any network.
    const REFUSED: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((sys.argv[1], 9))
s.send(b"anyone?")
try:
    s.recv(100)
    print("answered")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
"#;
    let out = ns_run(&c, &["python3", "-c", REFUSED, FAR_IP], 10);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "refused");
    assert!(lab.show("nat")["host"]["icmp_errors"].as_u64().unwrap() >= 4);
    // Replies cross the hops as on a real path: far's 64, less the outside router and
    // the gateway.
    let out = ns_run(&c, &["ping", "-c", "1", "-W", "2", FAR_IP], 5);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ttl=62"), "{text}");
    // Path MTU discovery for a DF datagram: the outside router's link to far is
    // narrower (1200); its fragmentation-needed reaches the container, whose kernel
    // then knows the path's MTU.
    steps(&[&[
        "ip",
        "-n",
        &net.far.name,
        "link",
        "set",
        "veth0",
        "mtu",
        "1200",
    ]]);
    steps(&[&[
        "ip",
        "-n",
        &net.outside.name,
        "link",
        "set",
        "veth1",
        "mtu",
        "1200",
    ]]);
    const PMTU: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO
s.connect((sys.argv[1], 7000))
for _ in range(20):
    try:
        s.send(b"x" * 1400)
    except OSError:
        break
    time.sleep(0.1)
print(s.getsockopt(socket.IPPROTO_IP, 14))  # IP_MTU
"#;
    let out = ns_run(&c, &["python3", "-c", PMTU, FAR_IP], 10);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1200");
    // UDP datagrams larger than the MTU (DNS with EDNS, syslog): fragmented by the
    // container, reassembled for the host's socket; the big answer cut into fragments
    // for the container.
    let _echo = udp_echo(&net.far.name, FAR_IP, 7000);
    for size in [1472, 1473, 4000, 30000] {
        assert_eq!(
            udp_ask_big(&c, FAR_IP, 7000, size),
            Some(size),
            "{size} bytes"
        );
    }
}

#[test]
fn ping_uses_icmp_sockets_where_the_host_allows_them() {
    // The README tells users who run tapnet without root to widen this range; here
    // the host namespace does so, and tapnet takes ICMP sockets instead of its raw one.
    let net = HostAndOutside::new();
    steps(&[&[
        "ip",
        "netns",
        "exec",
        &net.host.name,
        "sysctl",
        "-qw",
        "net.ipv4.ping_group_range=0 2147483647",
    ]]);
    let (name, c, d) = (unique("l"), unique("n"), unique("n"));
    let text = lab_text(&name, &c, &d)
        .nat()
        .with("masquerade", true)
        .text();
    let lab = RunningLab::start_in(Some(&net.host.name), &name, &[c.clone(), d.clone()], &text);
    assert!(ping(&c, FAR_IP, 3), "ping through masquerade");
    assert_eq!(lab.show("nat")["host"]["ping_mode"], "socket");
    let path = vec![
        "10.251.1.1".to_string(),
        OUTSIDE_IP.to_string(),
        FAR_IP.to_string(),
    ];
    assert_eq!(traceroute(&c, FAR_IP, &["-I"]), path, "traceroute -I");
}

#[test]
fn forwards_reset_refused_clients_and_reuse_ports_without_delay() {
    let net = HostAndOutside::new();
    let (name, c, d) = (unique("l"), unique("n"), unique("n"));
    let text = lab_text(&name, &c, &d)
        .forward("tcp", "0.0.0.0:8080", "10.251.1.2:80")
        .forward("tcp", "0.0.0.0:8081", "10.251.1.2:81")
        .forward("udp", "0.0.0.0:5353", "10.251.1.3:5353")
        .text();
    let lab = RunningLab::start_in(Some(&net.host.name), &name, &[c.clone(), d.clone()], &text);
    let www = WebRoot::new("inside page");
    let _web = http_server(&c, "10.251.1.2", 80, &www.dir, &www.log);
    assert!(curl(&net.outside.name, &format!("http://{HOST_IP}:8080/")).is_some());

    // Nothing listens on the container's port 81: the client is reset at once, never
    // handed a clean, empty connection (curl's 52, "Empty reply from server").
    let t = std::time::Instant::now();
    let out = ns_run(
        &net.outside.name,
        &["curl", "-s", "-m", "5", &format!("http://{HOST_IP}:8081/")],
        10,
    );
    assert!(
        matches!(out.status.code(), Some(7) | Some(56)),
        "curl exit {:?}",
        out.status.code()
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(3));
    assert_eq!(lab.show("forwards")["forwards"][1]["refused"], 1);

    // The same client port again and again: the container's TIME_WAIT of the last
    // connection takes the next SYN (TCP timestamps) instead of costing a second. The
    // client reads each answer to its end before closing, so it is never the one in
    // TIME_WAIT itself. Ten reconnects come at once, while tapnet may still hold the
    // last connection (it resets that one first); ten come 50 ms later, when only
    // the container's TIME_WAIT is left and nothing but a newer timestamp gets the
    // SYN in. On a busy machine the container's kernel may drop a SYN that comes
    // while the web server is still inside close() (it lands in the old socket's
    // backlog and dies with it), as it would from any client through kernel DNAT;
    // so one slow reconnect in ten is let pass. (A connect that finds the client's
    // own last socket still waiting for the ACK of its FIN is tried again: that is
    // the client's kernel, before anything is sent.)
    const SAME_PORT: &str = r#"
import errno, socket, sys, time
for pause in (0, 0.05):
    took = []
    for i in range(10):
        time.sleep(pause)
        t = time.time()
        while True:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", 40123))
            s.settimeout(5)
            try:
                s.connect((sys.argv[1], 8080))
                break
            except OSError as e:
                # The client's own last socket on this four-tuple waits for the
                # ACK of its FIN (LAST_ACK) when the machine is busy.
                s.close()
                if e.errno != errno.EADDRNOTAVAIL or time.time() - t > 5:
                    raise
                time.sleep(0.005)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        body = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            body += d
        s.close()
        assert b"inside page" in body, body
        took.append(time.time() - t)
    print(" ".join("%.3f" % x for x in sorted(took)))
"#;
    let out = ns_run(
        &net.outside.name,
        &["python3", "-c", SAME_PORT, HOST_IP],
        80,
    );
    let runs: Vec<Vec<f64>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(runs.len(), 2, "{}", String::from_utf8_lossy(&out.stderr));
    for took in &runs {
        assert!(
            took.iter().filter(|&&t| t > 0.5).count() <= 1,
            "requests from a reused port took {runs:?} s (at once, then after 50 ms)"
        );
    }

    // A UDP forward carries datagrams larger than the container's MTU both ways.
    let _echo = udp_echo(&d, "10.251.1.3", 5353);
    for size in [1472, 1473, 8000] {
        assert_eq!(
            udp_ask_big(&net.outside.name, HOST_IP, 5353, size),
            Some(size),
            "{size} bytes"
        );
    }
}

#[test]
fn idle_masqueraded_tcp_lives_until_its_timeout_then_both_ends_are_reset() {
    let net = HostAndOutside::new();
    let (name, c, d) = (unique("l"), unique("n"), unique("n"));
    // Short timers for the test; the defaults (5 days for established TCP, as
    // conntrack's) are in docs/lab-file.md and checked against the code's in daemon.
    let text = lab_text(&name, &c, &d)
        .nat()
        .with("masquerade", true)
        .with("tcp_timeout_s", 3)
        .text();
    let lab = RunningLab::start_in(Some(&net.host.name), &name, &[c.clone(), d.clone()], &text);
    let log = std::env::temp_dir().join(format!("{}.log", unique("ends")));
    let _server = tcp_echo_logging(&net.far.name, FAR_IP, 7001, &log);
    // Idle for less than the timeout: the connection is there.
    assert_eq!(tcp_idle_then_talk(&c, FAR_IP, 7001, 1), "answered");
    // Idle past it: tapnet lets the flow go and tells both ends.
    assert_eq!(tcp_idle_then_talk(&c, FAR_IP, 7001, 6), "reset");
    let t = std::time::Instant::now();
    while std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == "reset")
        .count()
        < 1
    {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "the far end was never reset"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(&log);
    assert!(lab.show("nat")["host"]["flows_expired"].as_u64().unwrap() >= 1);
}

#[test]
fn an_idle_forwarded_connection_past_its_timeout_resets_the_container_too() {
    let net = HostAndOutside::new();
    let (name, c, d) = (unique("l"), unique("n"), unique("n"));
    let text = lab_text(&name, &c, &d)
        .nat()
        .with("tcp_timeout_s", 3)
        .forward("", "7002", "10.251.1.2:7002")
        .text();
    let _lab = RunningLab::start_in(Some(&net.host.name), &name, &[c.clone(), d.clone()], &text);
    let log = std::env::temp_dir().join(format!("{}.log", unique("ends")));
    let _server = tcp_echo_logging(&c, "10.251.1.2", 7002, &log);
    // The server first: a client that finds nobody listening is reset, and gives up.
    wait_listening(&c, 7002);
    // The client outside talks once, then says nothing: past the timeout the
    // container's server learns by itself that the connection is gone (a reset), with
    // no packet from the client to find it out.
    // The client idles 12 s: the container must hear of it well before (the 3 s
    // timeout and the 1 s tick after the connection opened), however slowly a busy
    // machine starts the client.
    let client = std::thread::spawn({
        let o = net.outside.name.clone();
        move || tcp_idle_then_talk(&o, HOST_IP, 7002, 12)
    });
    let logged = |what: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|l| l == what)
    };
    while !logged("open") {
        assert!(!client.is_finished(), "the client never connected");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let t = std::time::Instant::now();
    while !logged("reset") {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(9),
            "the container was never told"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(client.join().unwrap(), "reset", "nor the client");
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_container_that_never_finishes_its_handshakes_holds_64_then_lets_go() {
    let net = HostAndOutside::new();
    let (name, c, d) = (unique("l"), unique("n"), unique("n"));
    let text = lab_text(&name, &c, &d)
        .nat()
        .with("masquerade", true)
        .text();
    let lab = RunningLab::start_in(Some(&net.host.name), &name, &[c.clone(), d.clone()], &text);
    // A far server that accepts and holds every connection.
    let _server = Background::spawn(
        &net.far.name,
        &[
            "python3",
            "-c",
            "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('10.249.0.2', 7100))\ns.listen(1024)\nheld = []\nwhile True:\n    held.append(s.accept()[0])",
        ],
    );
    // It listens before the SYNs come: the host's connects must find it.
    wait_listening_on(&net.far.name, "10.249.0.2:7100");
    // web sends 200 SYNs from raw sockets and never answers a SYN-ACK: its kernel's
    // resets go nowhere (a blackhole route), as a container that drops them would.
    assert!(ping(&c, "10.251.1.1", 1));
    steps(&[&[
        "ip",
        "netns",
        "exec",
        &c,
        "ip",
        "route",
        "add",
        "blackhole",
        FAR_IP,
    ]]);
    let gw = lab.port("router:br0")["mac"].as_str().unwrap().to_string();
    let flood = r#"
import socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
mac = bytes(int(x, 16) for x in open("/sys/class/net/eth0/address").read().strip().split(":"))
gw = bytes(int(x, 16) for x in sys.argv[1].split(":"))
src, dst = socket.inet_aton("10.251.1.2"), socket.inet_aton("10.249.0.2")
def csum(b):
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
for k in range(200):
    tcp = struct.pack("!HHIIBBHHH", 20000 + k, 7100, k, 0, 5 << 4, 2, 64240, 0, 0)
    tcp = tcp[:16] + struct.pack("!H", csum(src + dst + struct.pack("!HH", 6, 20) + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, k, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    s.send(gw + mac + b"\x08\x00" + ip + tcp)
"#;
    let out = ns_run(&c, &["python3", "-c", flood, &gw], 30);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let web_flows = |nat: &serde_json::Value| {
        nat["host_flows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["container"].as_str().unwrap().starts_with("10.251.1.2:"))
            .count()
    };
    // Every SYN taken (a busy machine may take a while to read them all).
    let nat = lab.show_until("nat", Duration::from_secs(10), |n| {
        web_flows(n) >= 64 && n["host"]["syn_limited"].as_u64() >= Some(136)
    });
    let host = &nat["host"];
    assert_eq!(web_flows(&nat), 64, "{nat}");
    assert!(host["syn_limited"].as_u64().unwrap() >= 136, "{host}");
    // The other container still connects out meanwhile.
    let ok = ns_run(
        &d,
        &[
            "python3",
            "-c",
            "import socket\nsocket.create_connection(('10.249.0.2', 7100), 5)",
        ],
        10,
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // Within the 30 s half-open limit they are all let go, both ends reset.
    let t = std::time::Instant::now();
    loop {
        let nat = lab.show("nat");
        if web_flows(&nat) == 0 {
            assert!(nat["host"]["handshake_timeouts"].as_u64().unwrap() >= 64);
            break;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(40),
            "half-open flows stayed: {nat}"
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

#[test]
fn one_container_holds_its_share_of_the_host_flows_and_no_more() {
    let net = HostAndOutside::new();
    let (name, c, d) = (unique("l"), unique("n"), unique("n"));
    // A table of 16 host flows: one container may hold 12 of them.
    let text = lab_text(&name, &c, &d)
        .nat()
        .with("masquerade", true)
        .with("max_flows", 16)
        .text();
    let lab = RunningLab::start_in(Some(&net.host.name), &name, &[c.clone(), d.clone()], &text);
    let send = |ns: &str, n: usize| {
        let code = format!(
            "import socket\nfor k in range({n}):\n    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    s.sendto(b'x', ('10.249.0.2', 9))"
        );
        assert!(ns_run(ns, &["python3", "-c", &code], 10).status.success());
    };
    send(&c, 14);
    let host = lab.show_until("nat", Duration::from_secs(5), |n| {
        n["host"]["container_limited"].as_u64() >= Some(2)
    })["host"]
        .clone();
    assert_eq!(host["max_per_container"], 12, "{host}");
    assert_eq!(host["container_limited"], 2, "{host}");
    assert_eq!(host["flows_evicted"], 0, "{host}");
    // The other container gets its flows, without taking the first one's.
    send(&d, 4);
    let nat = lab.show_until("nat", Duration::from_secs(5), |n| {
        n["host_flows"].as_array().map(Vec::len) >= Some(16)
    });
    assert_eq!(nat["host_flows"].as_array().unwrap().len(), 16, "{nat}");
    assert_eq!(nat["host"]["container_limited"], 2, "{nat}");
    assert_eq!(nat["host"]["flows_evicted"], 0, "{nat}");
}
