//! The VXLAN overlay between test "host" namespaces joined by an underlay of their own
//! (veths, or a kernel bridge in a "switch" namespace for three hosts): tapnet to
//! tapnet, tapnet to the kernel's own vxlan device, head-end replication, per-peer
//! learning and a MAC moving between hosts. All addresses are inside these namespaces.

mod common;

use common::*;

/// A host's lab: one bridge with VNI 42 and one container, `c` (its table last, for a
/// test to add to).
fn host_lab(name: &str, me: &str, peers: &[&str], container: &str, ip: &str) -> LabText {
    let peers: Vec<String> = peers.iter().map(|p| format!("{p}:4789")).collect();
    let peers: Vec<&str> = peers.iter().map(String::as_str).collect();
    LabText::new(name)
        .bridge("ov", "10.62.0.0/24")
        .with("vni", 42)
        .vxlan(&format!("{me}:4789"), &peers)
        .port("c", "ov", container, &format!("{ip}/24"))
}

/// Two hosts joined by one veth: 10.60.0.1 and 10.60.0.2.
fn two_hosts() -> (TestNetns, TestNetns) {
    hosts_linked("10.60.0.1/24", "10.60.0.2/24")
}

fn peer_stats(lab: &RunningLab, peer: &str) -> serde_json::Value {
    let v = lab.show("vxlan");
    v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer"] == format!("{peer}:4789"))
        .cloned()
        .unwrap_or_else(|| panic!("no peer {peer} in {v}"))
}

/// Two tapnets, one in each of [`two_hosts`], sharing VNI 42: container `ca`
/// (10.62.0.2) behind lab `la` (`a`) and `cb` (10.62.0.3) behind `b`.
struct TwoTapnets {
    // Fields drop in this order: the labs before the hosts they run in.
    a: RunningLab,
    b: RunningLab,
    ca: String,
    cb: String,
    la: String,
    ha_name: String,
    hb: TestNetns,
    _ha: TestNetns,
}

fn two_tapnets() -> TwoTapnets {
    let (ha, hb) = two_hosts();
    let (ca, cb) = (unique("n"), unique("n"));
    let (la, lb) = (unique("l"), unique("l"));
    let a = RunningLab::start_in(
        Some(&ha.name),
        &la,
        std::slice::from_ref(&ca),
        &host_lab(&la, "10.60.0.1", &["10.60.0.2"], &ca, "10.62.0.2").text(),
    );
    let b = RunningLab::start_in(
        Some(&hb.name),
        &lb,
        std::slice::from_ref(&cb),
        &host_lab(&lb, "10.60.0.2", &["10.60.0.1"], &cb, "10.62.0.3").text(),
    );
    TwoTapnets {
        a,
        b,
        ca,
        cb,
        la,
        ha_name: ha.name.clone(),
        hb,
        _ha: ha,
    }
}

#[test]
fn two_tapnets_share_a_subnet_over_vxlan() {
    let t = two_tapnets();
    let (a, b, ca, cb, la, hb) = (&t.a, &t.b, &t.ca, &t.cb, &t.la, &t.hb);

    // A capture on the underlay (tcpdump, stopping after 8 datagrams) while the
    // containers talk.
    let capture = Watcher::start(
        &hb.name,
        &[
            "tcpdump", "-c", "8", "-nvv", "-i", "u0", "udp", "port", "4789",
        ],
        15,
        "listening on",
    );
    assert!(ping(ca, "10.62.0.3", 3), "a to b over the overlay");
    assert!(ping(cb, "10.62.0.2", 3), "b to a over the overlay");
    let text = capture.finish();
    let from_a: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("> 10.60.0.2.4789"))
        .collect();
    assert!(!from_a.is_empty(), "{text}");
    for line in &from_a {
        assert!(line.contains("flags [I] (0x08), vni 42"), "{line}");
        // A checksum (left to the veth's offload, so tcpdump on the underlay sees
        // it unfinished): UDP GSO needs one.
        assert!(!line.contains("[no cksum]"), "{line}");
        let port: u16 = line
            .split_whitespace()
            .find(|w| w.starts_with("10.60.0.1."))
            .and_then(|w| w.rsplit('.').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        assert!(
            (49152..=65535).contains(&port),
            "source port {port}: {line}"
        );
    }

    // The underlay side, outer headers and all, through `tapnet capture underlay`.
    let file = std::env::temp_dir().join(format!("{}.pcap", unique("ul")));
    let capture = capture_to_file(a, "underlay", &file);
    assert!(ping(ca, "10.62.0.3", 2));
    // Until the capture wrote both ways' datagrams.
    let dump = run_until(
        &["tcpdump", "-nr", file.to_str().unwrap()],
        std::time::Duration::from_secs(10),
        |d| d.contains("> 10.60.0.2.4789: VXLAN") && d.contains("> 10.60.0.1.4789: VXLAN"),
    );
    drop(capture);
    let _ = std::fs::remove_file(&file);
    assert!(
        dump.lines().any(|l| l.contains("10.60.0.1.")
            && l.contains("> 10.60.0.2.4789: VXLAN")
            && l.contains("vni 42")),
        "{dump}"
    );
    assert!(
        dump.lines()
            .any(|l| l.contains("10.60.0.2.") && l.contains("> 10.60.0.1.4789: VXLAN")),
        "{dump}"
    );

    // A trace of a packet for the far container names the tunnel and the peer.
    let out = run(
        &[
            TAPNET,
            "trace",
            "c",
            "icmp 10.62.0.2 -> 10.62.0.3",
            "--lab",
            la,
        ],
        10,
    );
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        t.contains("vxlan: encapsulated with VNI 42") && t.contains("10.60.0.2:4789"),
        "{t}"
    );

    let _server = Background::spawn(cb, &["iperf3", "-s", "-B", "10.62.0.3"]);
    let got = iperf3(ca, "10.62.0.3", 5201).expect("iperf3 over the overlay");
    assert!(got > 1_000_000);

    let pa = peer_stats(a, "10.60.0.2");
    // The container's TSO frames were cut and sent as UDP GSO batches.
    assert!(pa["tx_gso_sends"].as_u64().unwrap() > 100, "{pa}");
    assert!(
        pa["remote_macs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m.as_str().unwrap().starts_with("02:00:0a:3e:00:03")),
        "{pa}"
    );
    let drops = b.show("drops");
    let vx = &drops["vxlan"];
    for reason in ["not_peer", "bad_flags", "unknown_vni", "no_buffer"] {
        assert_eq!(vx[reason], 0, "{drops}");
    }
}

/// Sends SIGCONT to a process stopped with SIGSTOP when dropped (a failing test
/// must not leave tapnet stopped: it would not take the SIGTERM that ends it).
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        // SAFETY: signalling a tapnet this test started.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

/// The sizes the batching test sends, in turn: runs of one size (which go as one
/// UDP GSO batch), a shorter one (which ends a batch: GSO cuts at the first size),
/// and longer ones (which start a new batch).
const BATCH_SIZES: [usize; 9] = [64, 64, 64, 20, 64, 300, 300, 1000, 64];

#[test]
fn small_frames_leave_in_gso_batches_and_arrive_whole_and_in_order() {
    let t = two_tapnets();
    let (a, b, ca, cb) = (&t.a, &t.b, &t.ca, &t.cb);
    assert!(ping(ca, "10.62.0.3", 2), "a to b over the overlay");
    const COUNT: usize = 270;
    let sizes = BATCH_SIZES.map(|n| n.to_string()).join(",");
    // The receiver checks every datagram: its number, its size from the pattern,
    // and its bytes.
    const RECEIVE: &str = r#"
import socket, sys
n, sizes = int(sys.argv[1]), [int(x) for x in sys.argv[2].split(",")]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind(("10.62.0.3", 9000))
s.settimeout(10)
got = 0
try:
    while got < n:
        d = s.recv(65535)
        want = bytes([got % 251]) * sizes[got % len(sizes)]
        if d != want:
            print("datagram %d: %d bytes, first %r, wanted %d bytes of %r" % (got, len(d), d[:1], len(want), want[:1]))
            break
        got += 1
except socket.timeout:
    pass
print("received %d" % got)
"#;
    let cb2 = cb.clone();
    let (count, sizes2) = (COUNT.to_string(), sizes.clone());
    let receiver = std::thread::spawn(move || {
        let out = ns_run(&cb2, &["python3", "-c", RECEIVE, &count, &sizes2], 30);
        String::from_utf8_lossy(&out.stdout).to_string()
    });
    // The receiver's socket is bound before anything is sent to it.
    wait_udp_bound(cb, "10.62.0.3:9000");
    let gso0 = peer_stats(a, "10.60.0.2")["tx_gso_sends"].as_u64().unwrap();
    const SEND: &str = r#"
import socket, sys
n, sizes = int(sys.argv[1]), [int(x) for x in sys.argv[2].split(",")]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(n):
    s.sendto(bytes([i % 251]) * sizes[i % len(sizes)], ("10.62.0.3", 9000))
"#;
    {
        // With tapnet a stopped, the frames wait in the container's TAP queue (500
        // frames), and tapnet reads them in batches when it goes on: frames of one
        // size that leave in the same turn must go as one UDP GSO send.
        let _stopped = Stopped::new(a.pid);
        let out = ns_run(ca, &["python3", "-c", SEND, &COUNT.to_string(), &sizes], 10);
        assert!(out.status.success(), "{out:?}");
    }
    let text = receiver.join().unwrap();
    assert!(
        text.contains(&format!("received {COUNT}")),
        "every datagram, whole and in order: {text}"
    );
    let pa = peer_stats(a, "10.60.0.2");
    assert!(pa["tx_gso_sends"].as_u64().unwrap() > gso0, "{pa}");
    let drops = b.show("drops");
    assert_eq!(drops["vxlan"]["no_buffer"], 0, "{drops}");
}

/// The TCP and UDP `InCsumErrors` counters of namespace `ns` (/proc/net/snmp as a
/// process inside it reads it).
fn csum_errors(ns: &str) -> (u64, u64) {
    let out = ns_run(ns, &["cat", "/proc/net/snmp"], 10);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |proto: &str| -> u64 {
        let mut rows = text
            .lines()
            .filter(|l| l.starts_with(&format!("{proto}: ")));
        let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
            panic!("no {proto} in /proc/net/snmp: {text}");
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "InCsumErrors")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no {proto} InCsumErrors: {text}"))
    };
    (field("Tcp"), field("Udp"))
}

/// tapnet and a kernel VXLAN host, the kernel side with its default offloads: its
/// container's veth leaves TCP and UDP checksums partial (CHECKSUM_PARTIAL), and its
/// VXLAN device carries them, and whole TSO super-frames, over the veth underlay
/// unfinished and uncut. tapnet must hand both to its container as the kernel would
/// (NEEDS_CSUM, GSO) for ping, UDP and TCP to work both ways, and keep them right
/// through its router to a container on another bridge (lan, 10.63.0.0/24).
/// The kernel's side of a VXLAN test on host namespace `host`: a `vxlan` device
/// (VNI 42, port 4789, `remote`/`local` of either family, every other setting the
/// kernel's default) in a Linux bridge with a veth to container namespace `ctr`,
/// whose eth0 gets `mtu` and 10.62.0.3/24 and comes up.
fn kernel_vtep(host: &str, ctr: &str, remote: &str, local: &str, mtu: u32) {
    let mtu = mtu.to_string();
    steps(&[
        &[
            "ip", "-n", host, "link", "add", "vx42", "type", "vxlan", "id", "42", "dstport",
            "4789", "remote", remote, "local", local,
        ],
        &["ip", "-n", host, "link", "add", "br42", "type", "bridge"],
        &["ip", "-n", host, "link", "set", "vx42", "master", "br42"],
        &[
            "ip", "-n", host, "link", "add", "cv", "type", "veth", "peer", "name", "eth0", "netns",
            ctr,
        ],
        &["ip", "-n", host, "link", "set", "cv", "master", "br42"],
        &["ip", "-n", host, "link", "set", "vx42", "up"],
        &["ip", "-n", host, "link", "set", "br42", "up"],
        &["ip", "-n", host, "link", "set", "cv", "up"],
        &["ip", "-n", ctr, "link", "set", "eth0", "mtu", &mtu],
        &[
            "ip",
            "-n",
            ctr,
            "addr",
            "add",
            "10.62.0.3/24",
            "dev",
            "eth0",
        ],
        &["ip", "-n", ctr, "link", "set", "eth0", "up"],
    ]);
}

#[test]
fn tapnet_and_the_kernels_vxlan_interoperate() {
    let (ha, hb) = two_hosts();
    let (ca, cd) = (unique("n"), unique("n"));
    let la = unique("l");
    let lab = host_lab(&la, "10.60.0.1", &["10.60.0.2"], &ca, "10.62.0.2")
        .bridge("lan", "10.63.0.0/24")
        .port("d", "lan", &cd, "10.63.0.2/24")
        .text();
    let a = RunningLab::start_in(Some(&ha.name), &la, &[ca.clone(), cd.clone()], &lab);
    // Host b: the kernel's vxlan device on port 4789, a Linux bridge, a veth to a
    // container.
    let cb = TestNetns::new("k");
    kernel_vtep(&hb.name, &cb.name, "10.60.0.1", "10.60.0.2", 1450);
    steps(&[&[
        "ip",
        "-n",
        &cb.name,
        "route",
        "add",
        "10.63.0.0/24",
        "via",
        "10.62.0.1",
    ]]);
    // Nothing changed on the kernel side: its container's veth keeps the kernel's
    // default offloads (checked, not set).
    let k = ns_run(&cb.name, &["ethtool", "-k", "eth0"], 10);
    let k = String::from_utf8_lossy(&k.stdout);
    assert!(
        k.lines().any(|l| l.starts_with("tx-checksumming: on")),
        "the kernel's veth defaults to tx checksum offload: {k}"
    );
    assert!(ping(&ca, "10.62.0.3", 3), "tapnet side to kernel side");
    assert!(ping(&cb.name, "10.62.0.2", 3), "kernel side to tapnet side");
    let _echo = udp_echo(&ca, "10.62.0.2", 7007);
    assert_eq!(
        udp_ask(&cb.name, "10.62.0.2", 7007, "partial?").as_deref(),
        Some("partial?"),
        "UDP kernel side -> tapnet side and back"
    );
    let _s1 = Background::spawn(&cb.name, &["iperf3", "-s", "-B", "10.62.0.3"]);
    assert!(iperf3(&ca, "10.62.0.3", 5201).expect("iperf3 tapnet -> kernel") > 1_000_000);
    let _s2 = Background::spawn(&ca, &["iperf3", "-s", "-B", "10.62.0.2", "-p", "5202"]);
    assert!(iperf3(&cb.name, "10.62.0.2", 5202).expect("iperf3 kernel -> tapnet") > 1_000_000);
    // The kernel took tapnet's UDP GSO batches, checksums and all, at its defaults.
    let to_kernel = a.show("vxlan")["peers"][0].clone();
    assert!(
        to_kernel["tx_gso_sends"].as_u64().unwrap() > 100,
        "{to_kernel}"
    );
    // Through tapnet's router: NEEDS_CSUM and GSO frames from the tunnel to a TAP on
    // another bridge, and the container's back into the tunnel.
    assert!(
        ping(&cb.name, "10.63.0.2", 3),
        "kernel side to a routed container"
    );
    let _s3 = Background::spawn(&cd, &["iperf3", "-s", "-B", "10.63.0.2", "-p", "5203"]);
    assert!(iperf3(&cb.name, "10.63.0.2", 5203).expect("iperf3 kernel -> routed") > 1_000_000);
    let _s4 = Background::spawn(&cb.name, &["iperf3", "-s", "-B", "10.62.0.3", "-p", "5204"]);
    assert!(iperf3(&cd, "10.62.0.3", 5204).expect("iperf3 routed -> kernel") > 1_000_000);

    // tapnet recognised the partial checksums (and took no wrong one for one), and
    // the container behind it counted no checksum error.
    let p = peer_stats(&a, "10.60.0.2");
    eprintln!(
        "from the kernel peer: {} packets, {} with partial checksums, {} TSO super-frames",
        p["rx_packets"], p["rx_partial_checksum"], p["rx_gso_frames"]
    );
    assert!(p["rx_partial_checksum"].as_u64().unwrap() > 1000, "{p}");
    assert_eq!(p["rx_bad_checksum"], 0, "{p}");
    assert_eq!(csum_errors(&ca), (0, 0), "TCP and UDP InCsumErrors in {ca}");
    assert_eq!(csum_errors(&cd), (0, 0), "TCP and UDP InCsumErrors in {cd}");
    assert_eq!(csum_errors(&cb.name), (0, 0), "on the kernel side");
    let drops = a.show("drops");
    assert_eq!(drops["vxlan"]["oversize"], 0, "{drops}");
}

#[test]
fn datagrams_the_kernel_drops_at_a_full_underlay_socket_are_counted() {
    let t = two_tapnets();
    let (a, b, ca) = (&t.a, &t.b, &t.ca);
    assert!(ping(ca, "10.62.0.3", 1), "a to b over the overlay");
    const FLOOD: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.60.0.1", 0))
for i in range(50000):
    s.sendto(b"\x08" + bytes(99), ("10.60.0.2", 4789))
"#;
    {
        // With tapnet b stopped, its socket's receive buffer fills and the kernel
        // drops the rest.
        let _stopped = Stopped::new(b.pid);
        let out = ns_run(&t.ha_name, &["python3", "-c", FLOOD], 20);
        assert!(out.status.success(), "{out:?}");
    }
    assert!(ping(ca, "10.62.0.3", 2), "the overlay works again");
    // The kernel's count is read once a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let drops = loop {
        let drops = b.show("drops");
        if drops["vxlan"]["socket_overflow"].as_u64().unwrap() > 0
            || std::time::Instant::now() > deadline
        {
            break drops;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let overflow = drops["vxlan"]["socket_overflow"].as_u64().unwrap();
    assert!((10_000..=50_000).contains(&overflow), "{drops}");
    // Nothing else counted it: a's side saw none.
    assert_eq!(a.show("drops")["vxlan"]["socket_overflow"], 0);

    // The sockets tapnet sends from are never read: datagrams sent to them hold at
    // most the kernel's smallest receive buffer (a few KiB), not megabytes.
    let port = b.show("vxlan")["source_ports"][0].as_u64().unwrap();
    const TO_SENDER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(2000):
    s.sendto(bytes(1400), ("10.60.0.2", int(sys.argv[1])))
"#;
    let out = ns_run(
        &t.ha_name,
        &["python3", "-c", TO_SENDER, &port.to_string()],
        20,
    );
    assert!(out.status.success(), "{out:?}");
    let ss = ns_run(
        &t.hb.name,
        &["ss", "-uanm", "sport", "=", &format!(":{port}")],
        10,
    );
    let ss = String::from_utf8_lossy(&ss.stdout).to_string();
    // skmem:(r<queued>,rb<buffer>,...)
    let field = |key: &str| -> u64 {
        ss.split(['(', ',', ')'])
            .find_map(|f| f.strip_prefix(key)?.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {ss}"))
    };
    assert!(field("rb") <= 16384, "{ss}");
    assert!(field("r") <= 16384, "{ss}");
}

/// Received in a container behind tapnet from one behind the kernel's vxlan: 50
/// datagrams of 1000 bytes on port 9000 (numbered, each with a digest of itself), and
/// 3 of 1000 bytes on port 9001 (the escape attempt, taken as plain data).
const KERNEL_GSO_RECEIVE: &str = r#"
import hashlib, select, socket, struct, time
socks = {}
for port in (9000, 9001):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("10.62.0.2", port))
    socks[s] = port
numbered, plain, bad, end = [], [], [], time.time() + 15
while (len(numbered) < 50 or len(plain) < 3) and time.time() < end:
    for s in select.select(list(socks), [], [], 1)[0]:
        d = s.recv(65535)
        if socks[s] == 9001:
            plain.append(len(d))
            continue
        seq, size = struct.unpack("!Ii", d[4:12])
        if size != len(d) or hashlib.md5(d[:12] + d[28:]).digest() != d[12:28]:
            bad.append(seq)
        numbered.append(seq)
print("numbered", numbered == list(range(50)), len(numbered), "bad", bad, "plain", plain)
"#;

/// Sent from the kernel side with UDP_SEGMENT (the container's kernel hands its vxlan
/// one UDP GSO packet, which crosses the veth underlay whole): 5 sends of 10 numbered
/// datagrams of 1000 bytes to port 9000, then one of 3 x 1000 bytes to port 9001 whose
/// payload holds, where a cut at the wrong place would start a datagram, a VXLAN
/// header for VNI 43 and a frame for the container there.
const KERNEL_GSO_SEND: &str = r#"
import hashlib, socket, struct
S, UDP_SEGMENT = 1000, 103
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
seq = 0
for _ in range(5):
    buf = b""
    for _ in range(10):
        body = bytes([(seq + i) & 0xff for i in range(S - 28)])
        head = struct.pack("!IIi", 0, seq, S)
        buf += head + hashlib.md5(head + body).digest() + body
        seq += 1
    s.sendmsg([buf], [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("H", S))], 0, ("10.62.0.2", 9000))
def csum(b):
    b += b"\0" * (len(b) % 2)
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t & 0xffff) + (t >> 16)
    return ~((t & 0xffff) + (t >> 16)) & 0xffff
src, dst = socket.inet_aton("10.64.0.99"), socket.inet_aton("10.64.0.2")
data = b"frame from VNI 42 in VNI 43"
udp = struct.pack("!HHHH", 5555, 7777, 8 + len(data), 0) + data
udp = udp[:6] + struct.pack("!H", csum(src + dst + struct.pack("!BBH", 0, 17, len(udp)) + udp)) + udp[8:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, src, dst)
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
frame = bytes.fromhex("02000a400002" "026666666666" "0800") + ip + udp
forged = struct.pack("!B3xI", 0x08, 43 << 8) + frame
payload = bytearray(b"A" * (3 * S))
# The inner headers (Ethernet, IPv4, UDP: 42 bytes) and the VXLAN header (8) come
# before the payload in the one datagram the kernel's vxlan sends.
payload[S - 50:S - 50 + len(forged)] = forged
s.sendmsg([bytes(payload)], [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("H", S))], 0, ("10.62.0.2", 9001))
"#;

#[test]
fn a_kernel_peers_udp_gso_arrives_whole_and_its_payload_stays_in_its_vni() {
    let (ha, hb) = two_hosts();
    let (ca, cf) = (unique("n"), unique("n"));
    let la = unique("l");
    let lab = host_lab(&la, "10.60.0.1", &["10.60.0.2"], &ca, "10.62.0.2")
        .bridge("sec", "10.64.0.0/24")
        .with("vni", 43)
        .port("f", "sec", &cf, "10.64.0.2/24")
        .text();
    let a = RunningLab::start_in(Some(&ha.name), &la, &[ca.clone(), cf.clone()], &lab);
    let cb = TestNetns::new("k");
    kernel_vtep(&hb.name, &cb.name, "10.60.0.1", "10.60.0.2", 1450);
    assert!(ping(&cb.name, "10.62.0.2", 2), "kernel side to tapnet side");
    let (ca2, cf2) = (ca.clone(), cf.clone());
    let receiver = std::thread::spawn(move || {
        let out = ns_run(&ca2, &["python3", "-c", KERNEL_GSO_RECEIVE], 30);
        String::from_utf8_lossy(&out.stdout).to_string()
    });
    // The container on VNI 43, listening where the forged frame is addressed.
    let victim = std::thread::spawn(move || {
        const LISTEN: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.64.0.2", 7777))
s.settimeout(8)
try:
    print("got", s.recvfrom(65535))
except socket.timeout:
    print("nothing")
"#;
        let out = ns_run(&cf2, &["python3", "-c", LISTEN], 20);
        String::from_utf8_lossy(&out.stdout).to_string()
    });
    // Both bound before anything is sent (the receiver binds 9001 second).
    wait_udp_bound(&ca, "10.62.0.2:9001");
    wait_udp_bound(&cf, "10.64.0.2:7777");
    let out = ns_run(&cb.name, &["python3", "-c", KERNEL_GSO_SEND], 10);
    assert!(out.status.success(), "{out:?}");
    let got = receiver.join().unwrap();
    assert!(
        got.contains("numbered True 50 bad [] plain [1000, 1000, 1000]"),
        "every datagram whole and in order, the forged one as plain data: {got}"
    );
    let victim = victim.join().unwrap();
    assert!(
        victim.contains("nothing"),
        "VNI 43 reached from VNI 42: {victim}"
    );
    let vx = a.show("vxlan");
    assert!(!vx.to_string().contains("02:66:66:66:66:66"), "{vx}");
    let drops = a.show("drops");
    assert_eq!(drops["vxlan"]["bad_flags"], 0, "{drops}");
}

/// Three hosts on a kernel bridge in a "switch" namespace: 10.60.0.1, .2, .3.
fn three_hosts() -> (TestNetns, Vec<TestNetns>) {
    let sw = TestNetns::new("s");
    let hosts: Vec<TestNetns> = (0..3).map(|_| TestNetns::new("h")).collect();
    assert!(run(
        &["ip", "-n", &sw.name, "link", "add", "sw", "type", "bridge"],
        10
    )
    .status
    .success());
    assert!(run(&["ip", "-n", &sw.name, "link", "set", "sw", "up"], 10)
        .status
        .success());
    for (i, h) in hosts.iter().enumerate() {
        let port = format!("p{i}");
        let addr = format!("10.60.0.{}/24", i + 1);
        for step in [
            vec![
                "ip", "-n", &sw.name, "link", "add", &port, "type", "veth", "peer", "name", "u0",
                "netns", &h.name,
            ],
            vec!["ip", "-n", &sw.name, "link", "set", &port, "master", "sw"],
            vec!["ip", "-n", &sw.name, "link", "set", &port, "up"],
            vec!["ip", "-n", &h.name, "addr", "add", &addr, "dev", "u0"],
            vec!["ip", "-n", &h.name, "link", "set", "u0", "up"],
        ] {
            assert!(run(&step, 10).status.success(), "{step:?}");
        }
    }
    (sw, hosts)
}

/// Sends one broadcast frame with source MAC `mac` from `ns`'s eth0.
fn send_from_mac(ns: &str, mac: &str) {
    let code = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
src = bytes(int(x, 16) for x in sys.argv[1].split(":"))
s.send(b"\xff" * 6 + src + b"\x88\xb5" + b"tapnet" * 8)
"#;
    let out = ns_run(ns, &["python3", "-c", code, mac], 10);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn three_hosts_flood_to_both_peers_learn_per_peer_and_follow_a_moved_mac() {
    let (_sw, hosts) = three_hosts();
    let ips = ["10.60.0.1", "10.60.0.2", "10.60.0.3"];
    let cs: Vec<String> = (0..3).map(|_| unique("n")).collect();
    let labs: Vec<RunningLab> = (0..3)
        .map(|i| {
            let name = unique("l");
            let peers: Vec<&str> = (0..3).filter(|&j| j != i).map(|j| ips[j]).collect();
            // The containers send from a MAC not their own (one that moves between
            // hosts, as a migrated VM's does): port security off for them.
            let text = host_lab(&name, ips[i], &peers, &cs[i], &format!("10.62.0.{}", i + 2))
                .with("spoof_check", false)
                .text();
            RunningLab::start_in(
                Some(&hosts[i].name),
                &name,
                std::slice::from_ref(&cs[i]),
                &text,
            )
        })
        .collect();
    // a's first ping floods its ARP request to both peers; after that, unicast goes to
    // b's host only.
    assert!(ping(&cs[0], "10.62.0.3", 2));
    let c_before = peer_stats(&labs[0], ips[2])["tx_packets"].as_u64().unwrap();
    assert!(c_before >= 1, "the flood reached host c");
    // Host c's tapnet, another process, may not have read it yet.
    let rx = |v: &serde_json::Value| {
        v["peers"].as_array().and_then(|ps| {
            ps.iter()
                .find(|p| p["peer"] == format!("{}:4789", ips[0]))
                .and_then(|p| p["rx_packets"].as_u64())
        })
    };
    let at_c = labs[2].show_until("vxlan", std::time::Duration::from_secs(5), |v| {
        rx(v) >= Some(1)
    });
    assert!(rx(&at_c) >= Some(1), "{at_c}");
    let b_before = peer_stats(&labs[0], ips[1])["tx_packets"].as_u64().unwrap();
    assert!(ping(&cs[0], "10.62.0.3", 10));
    let b_after = peer_stats(&labs[0], ips[1])["tx_packets"].as_u64().unwrap();
    let c_after = peer_stats(&labs[0], ips[2])["tx_packets"].as_u64().unwrap();
    assert!(
        b_after >= b_before + 10,
        "unicast went to b: {b_before} -> {b_after}"
    );
    assert!(
        c_after <= c_before + 2,
        "unicast leaked to c: {c_before} -> {c_after}"
    );

    // A MAC seen behind host b, then behind host c: a's endpoint follows it.
    let moving = "02:aa:bb:cc:dd:01";
    // Learned once a's tapnet took the frame (a busy machine may take a while).
    let learned_at = |peer: &str| {
        let key = format!("{peer}:4789");
        labs[0].show_until("vxlan", std::time::Duration::from_secs(5), |v| {
            v["peers"].as_array().is_some_and(|ps| {
                ps.iter().any(|p| {
                    p["peer"] == key.as_str() && p["remote_macs"].to_string().contains(moving)
                })
            })
        });
        peer_stats(&labs[0], peer)
    };
    send_from_mac(&cs[1], moving);
    let at_b = learned_at(ips[1]);
    assert!(at_b["remote_macs"].to_string().contains(moving), "{at_b}");
    send_from_mac(&cs[2], moving);
    let at_c = learned_at(ips[2]);
    assert!(at_c["remote_macs"].to_string().contains(moving), "{at_c}");
    assert!(!peer_stats(&labs[0], ips[1])["remote_macs"]
        .to_string()
        .contains(moving));
}

#[test]
fn a_forged_datagram_from_the_underlay_cannot_take_a_local_containers_mac() {
    let (ha, hb) = two_hosts();
    let (ca, cb) = (unique("n"), unique("n"));
    let (la, lb) = (unique("l"), unique("l"));
    let a = RunningLab::start_in(
        Some(&ha.name),
        &la,
        std::slice::from_ref(&ca),
        &host_lab(&la, "10.60.0.1", &["10.60.0.2"], &ca, "10.62.0.2").text(),
    );
    let _b = RunningLab::start_in(
        Some(&hb.name),
        &lb,
        std::slice::from_ref(&cb),
        &host_lab(&lb, "10.60.0.2", &["10.60.0.1"], &cb, "10.62.0.3").text(),
    );
    assert!(ping(&ca, "10.62.0.3", 2));
    // Something on the underlay (here host b's namespace itself, from the peer's
    // address) sends VXLAN frames whose inner source is a's own container's MAC.
    let victim = a.port("c")["mac"].as_str().unwrap().to_string();
    const FORGE: &str = r#"
import socket, sys
mac = bytes(int(x, 16) for x in sys.argv[1].split(":"))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.60.0.2", 0))
vxlan = bytes([0x08, 0, 0, 0, 0, 0, 42, 0])
for _ in range(50):
    s.sendto(vxlan + b"\xff" * 6 + mac + b"\x88\xb5" + b"forged" * 8, ("10.60.0.1", 4789))
"#;
    let out = ns_run(&hb.name, &["python3", "-c", FORGE, &victim], 10);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The container's MAC stays on its own port (a static entry): nothing of a's
    // traffic is redirected to the forger, and the conflict is counted.
    let fdb = a.show("fdb");
    let entry = fdb["fdb"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["mac"] == victim.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(entry["port"], "c", "{fdb}");
    let vx_drops = |d: &serde_json::Value| {
        d["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"] == "vxlan:ov")
            .unwrap()
            .clone()
    };
    // All 50 read (a busy machine may take a while).
    let drops = a.show_until("drops", std::time::Duration::from_secs(5), |d| {
        vx_drops(d)["drops"]["static_mac_conflict"].as_u64() >= Some(50)
    });
    let vx = vx_drops(&drops);
    assert!(
        vx["drops"]["static_mac_conflict"].as_u64().unwrap() >= 50,
        "{drops}"
    );
    assert!(ping(&cb, "10.62.0.2", 3), "b still reaches a's container");
}

#[test]
fn two_rootless_tapnets_share_a_subnet_over_vxlan() {
    // Each tapnet run by an ordinary user in its host namespace: the underlay is the
    // user's own UDP sockets, the containers the labs' own namespaces.
    let (ha, hb) = two_hosts();
    let home = rootless::UserHome::new();
    let (la, lb) = (unique("l"), unique("l"));
    let a = home.start(
        Some(&ha.name),
        &la,
        &host_lab(&la, "10.60.0.1", &["10.60.0.2"], "c", "10.62.0.2").text(),
    );
    let b = home.start(
        Some(&hb.name),
        &lb,
        &host_lab(&lb, "10.60.0.2", &["10.60.0.1"], "c", "10.62.0.3").text(),
    );
    let ping = home.exec(
        &la,
        "c",
        &["ping", "-c", "5", "-i", "0.1", "-W", "1", "-q", "10.62.0.3"],
        15,
    );
    assert!(ping.status.success(), "{ping:?}");
    // And TCP over it, the kernel's checksums left partial by default.
    let server = home.exec_background(
        &lb,
        "c",
        &["iperf3", "-s", "-1", "-p", "5201"].map(String::from),
    );
    let mut sent = None;
    for _ in 0..30 {
        let out = home.exec(
            &la,
            "c",
            &["iperf3", "-c", "10.62.0.3", "-p", "5201", "-t", "1", "-J"],
            15,
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        sent = v["end"]["sum_received"]["bytes"].as_u64();
        if sent.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(server);
    assert!(sent.is_some_and(|b| b > 1_000_000), "iperf3: {sent:?}");
    let peer = peer_stats(&a, "10.60.0.2");
    assert!(peer["tx_packets"].as_u64().unwrap_or(0) > 0, "{peer}");
    drop(b);
}

/// Two hosts joined by one veth with an IPv6 underlay only: fd00:60::1 and
/// fd00:60::2 (no duplicate address detection to wait for).
fn two_hosts6() -> (TestNetns, TestNetns) {
    hosts_linked("fd00:60::1/64", "fd00:60::2/64")
}

/// A host's lab over the IPv6 underlay: bridge `ov` (VNI 42, dual-stack) and
/// container `c` with `ip` and `ip6`.
fn host_lab6(name: &str, me: &str, peer: &str, container: &str, ip: &str, ip6: &str) -> LabText {
    LabText::new(name)
        .bridge("ov", "10.62.0.0/24")
        .with("subnet6", "fd00:62::/64")
        .with("vni", 42)
        .vxlan(&format!("[{me}]:4789"), &[&format!("[{peer}]:4789")])
        .port("c", "ov", container, &format!("{ip}/24"))
        .with("ip6", format!("{ip6}/64").as_str())
}

/// `ping -6` from `ns` to `ip`: true if any answer came.
fn ping6(ns: &str, ip: &str, count: u32) -> bool {
    let c = count.to_string();
    ns_run(
        ns,
        &["ping", "-6", "-c", &c, "-i", "0.1", "-W", "1", "-q", ip],
        10,
    )
    .status
    .success()
}

/// The MTU of `dev` in `ns`.
fn mtu_of(ns: &str, dev: &str) -> u32 {
    let out = ns_run(ns, &["cat", &format!("/sys/class/net/{dev}/mtu")], 5);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Host a's tapnet over the IPv6 underlay: `container` at 10.62.0.2 and fd00:62::2,
/// peer fd00:60::2.
fn start_host_a6(host: &TestNetns, lab: &str, container: &str) -> RunningLab {
    RunningLab::start_in(
        Some(&host.name),
        lab,
        &[container.to_string()],
        &host_lab6(
            lab,
            "fd00:60::1",
            "fd00:60::2",
            container,
            "10.62.0.2",
            "fd00:62::2",
        )
        .text(),
    )
}

#[test]
fn two_tapnets_over_an_ipv6_underlay() {
    let (ha, hb) = two_hosts6();
    let (ca, cb) = (unique("n"), unique("n"));
    let (la, lb) = (unique("l"), unique("l"));
    let a = start_host_a6(&ha, &la, &ca);
    let b = RunningLab::start_in(
        Some(&hb.name),
        &lb,
        std::slice::from_ref(&cb),
        &host_lab6(
            &lb,
            "fd00:60::2",
            "fd00:60::1",
            &cb,
            "10.62.0.3",
            "fd00:62::3",
        )
        .text(),
    );
    // 1500 less the 70 bytes of VXLAN over IPv6.
    assert_eq!(mtu_of(&ca, "eth0"), 1430);
    assert_eq!(a.show("vxlan")["listen"], "[fd00:60::1]:4789");

    // The underlay carries UDP over IPv6 with a checksum (never zero over IPv6; over
    // the veth it is left partial, so tcpdump cannot verify it, only see it there).
    let capture = Watcher::start(
        &hb.name,
        &[
            "tcpdump", "-c", "4", "-nvv", "-i", "u0", "ip6", "and", "udp", "port", "4789",
        ],
        15,
        "listening on",
    );
    assert!(ping(&ca, "10.62.0.3", 3), "a to b, IPv4 inside IPv6");
    assert!(ping6(&cb, "fd00:62::2", 3), "b to a, IPv6 inside IPv6");
    // Both hosts' routers answer for gateway6 on the stretched bridge: each
    // container keeps its own host's (the first answer; no override flag).
    for (ctr, lab) in [(&ca, &a), (&cb, &b)] {
        assert!(ping6(ctr, "fd00:62::1", 2), "gateway6");
        let own = lab.port("router:ov")["mac"].as_str().unwrap().to_string();
        let neigh = ns_run(ctr, &["ip", "-6", "neigh", "show", "fd00:62::1"], 5);
        let neigh = String::from_utf8_lossy(&neigh.stdout).to_string();
        assert!(neigh.contains(&own), "gateway6 at {own}: {neigh}");
    }
    let text = capture.finish();
    let from_a: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("fd00:60::1.") && l.contains("> fd00:60::2.4789"))
        .collect();
    assert!(!from_a.is_empty(), "{text}");
    for line in &from_a {
        assert!(line.contains("vni 42"), "{line}");
        assert!(!line.contains("[no cksum]"), "{line}");
    }

    // TCP both families inside; the receiving side merges the segments (GRO).
    let _s4 = Background::spawn(&cb, &["iperf3", "-s", "-p", "5301"]);
    let got = iperf3(&ca, "10.62.0.3", 5301);
    assert!(
        got.is_some_and(|b| b > 1_000_000),
        "iperf3 over IPv6: {got:?}"
    );
    let _s6 = Background::spawn(&ca, &["iperf3", "-s", "-p", "5302"]);
    let got = iperf3(&cb, "fd00:62::2", 5302);
    assert!(
        got.is_some_and(|b| b > 1_000_000),
        "iperf3 -6 over IPv6: {got:?}"
    );
    let p = peer_stats(&a, "[fd00:60::2]");
    assert!(p["rx_gro_merged_v6"].as_u64().unwrap() > 100, "{p}");
    let p = peer_stats(&b, "[fd00:60::1]");
    assert!(p["rx_gro_merged"].as_u64().unwrap() > 100, "{p}");
    for lab in [&a, &b] {
        let drops = lab.show("vxlan")["drops"].clone();
        for reason in ["not_peer", "oversize", "send_error", "unsupported_gso"] {
            assert_eq!(drops[reason], 0, "{reason}: {drops}");
        }
    }
    assert_eq!(csum_errors(&ca), (0, 0));
    assert_eq!(csum_errors(&cb), (0, 0));
}

/// tapnet and the kernel's vxlan device over an IPv6 underlay (`local` and `remote`
/// IPv6, every other setting the kernel's default: it sends UDP checksums over IPv6
/// and drops zero-checksum ones, `udp6zerocsumrx` off). Ping of both families and
/// TCP over IPv6 inside, both ways.
#[test]
fn tapnet_and_the_kernels_vxlan_interoperate_over_an_ipv6_underlay() {
    let (ha, hb) = two_hosts6();
    let ca = unique("n");
    let la = unique("l");
    let a = start_host_a6(&ha, &la, &ca);
    let cb = TestNetns::new("k");
    kernel_vtep(&hb.name, &cb.name, "fd00:60::1", "fd00:60::2", 1430);
    steps(&[&[
        "ip",
        "-n",
        &cb.name,
        "-6",
        "addr",
        "add",
        "fd00:62::3/64",
        "dev",
        "eth0",
        "nodad",
    ]]);
    // With no `dev`, the kernel's device keeps MTU 1500; its container is set to
    // 1430 (1500 less the 70 bytes over IPv6), as tapnet's containers are.
    assert!(
        ping(&ca, "10.62.0.3", 3),
        "tapnet side to kernel side, IPv4"
    );
    assert!(
        ping(&cb.name, "10.62.0.2", 3),
        "kernel side to tapnet side, IPv4"
    );
    assert!(
        ping6(&ca, "fd00:62::3", 3),
        "tapnet side to kernel side, IPv6"
    );
    assert!(
        ping6(&cb.name, "fd00:62::2", 3),
        "kernel side to tapnet side, IPv6"
    );
    let _s1 = Background::spawn(&cb.name, &["iperf3", "-s", "-p", "5311"]);
    let got = iperf3(&ca, "fd00:62::3", 5311);
    assert!(
        got.is_some_and(|b| b > 1_000_000),
        "iperf3 -6 tapnet -> kernel: {got:?}"
    );
    let _s2 = Background::spawn(&ca, &["iperf3", "-s", "-p", "5312"]);
    let got = iperf3(&cb.name, "fd00:62::2", 5312);
    assert!(
        got.is_some_and(|b| b > 1_000_000),
        "iperf3 -6 kernel -> tapnet: {got:?}"
    );
    let p = peer_stats(&a, "[fd00:60::2]");
    eprintln!(
        "from the kernel peer over IPv6: {} packets, {} partial checksums, {} TSO super-frames, {} segments merged ({} IPv6)",
        p["rx_packets"], p["rx_partial_checksum"], p["rx_gso_frames"], p["rx_gro_merged"], p["rx_gro_merged_v6"]
    );
    assert_eq!(p["rx_bad_checksum"], 0, "{p}");
    // The kernel left its IPv6 TCP checksums partial and sent TSO frames whole:
    // taken as NEEDS_CSUM and GSO_TCPV6.
    assert!(p["rx_partial_checksum"].as_u64().unwrap() > 1000, "{p}");
    assert!(p["rx_gso_frames"].as_u64().unwrap() > 0, "{p}");
    assert_eq!(csum_errors(&ca), (0, 0), "TCP and UDP InCsumErrors in {ca}");
    assert_eq!(csum_errors(&cb.name), (0, 0), "on the kernel side");
    let drops = a.show("vxlan")["drops"].clone();
    for reason in ["not_peer", "oversize", "send_error", "unsupported_gso"] {
        assert_eq!(drops[reason], 0, "{reason}: {drops}");
    }
}
