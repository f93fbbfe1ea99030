//! The datapath on several threads (`tapnet up --threads N`): multi-queue TAPs, flows
//! spread over the threads by the kernel's flow hash, counters summed over the
//! threads, and queues closed with their port (a namespace deleted, a detach) and
//! opened with it (an attach).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// `tapnet up --threads N FILE`, waited for until ready.
fn start(name: &str, namespaces: &[String], text: &str, threads: u32) -> RunningLab {
    start_with(name, namespaces, text, threads, &[], &[])
}

/// `[WRAP...] tapnet up --threads N [EXTRA...] FILE` (WRAP: `taskset -c 1`, say),
/// waited for until ready.
fn start_with(
    name: &str,
    namespaces: &[String],
    text: &str,
    threads: u32,
    wrap: &[&str],
    extra: &[&str],
) -> RunningLab {
    let file = LabFile::new(text);
    let mut cmd = match wrap.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(TAPNET);
            c
        }
        None => Command::new(TAPNET),
    };
    cmd.args(["up", "--threads", &threads.to_string()])
        .args(extra)
        .arg(&file.path);
    RunningLab::launch(cmd, name, namespaces, Some(file), vec![TAPNET.into()])
}

/// Descriptors of /dev/net/tun the process holds: one per queue of every TAP.
fn tun_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy() == "/dev/net/tun")
        .count()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn two_ports(threads: u32) -> (RunningLab, Vec<String>) {
    two_ports_with(threads, &[], &[])
}

/// Ports a (10.94.0.2) and b (.3) on one bridge, started by [`start_with`].
fn two_ports_with(threads: u32, wrap: &[&str], extra: &[&str]) -> (RunningLab, Vec<String>) {
    let name = unique("mq");
    let ns: Vec<String> = (0..3).map(|_| unique("mq")).collect();
    let text = LabText::new(&name)
        .bridge("br0", "10.94.0.0/24")
        .port("a", "br0", &ns[0], "10.94.0.2/24")
        .port("b", "br0", &ns[1], "10.94.0.3/24")
        .text();
    (start_with(&name, &ns, &text, threads, wrap, extra), ns)
}

#[test]
fn flows_spread_over_both_threads_and_every_byte_is_counted() {
    let (lab, ns) = two_ports(2);
    assert!(
        lab.ready_line.ends_with("2 ports, 2 datapath threads"),
        "{}",
        lab.ready_line
    );
    let link = ns_run(&ns[0], &["ip", "-d", "link", "show", "eth0"], 5);
    let link = String::from_utf8_lossy(&link.stdout).to_string();
    assert!(
        link.contains("multi_queue numqueues 2"),
        "a TAP queue per thread: {link}"
    );
    assert_eq!(tun_fds(lab.pid), 4, "two queues of each of the two TAPs");
    assert!(ping(&ns[0], "10.94.0.3", 3));

    // Sixteen flows: all on one queue by chance once in 2^15 runs.
    let _server = Background::spawn(&ns[1], &["iperf3", "-s", "-p", "5201"]);
    wait_listening(&ns[1], 5201);
    let out = ns_run(
        &ns[0],
        &["iperf3", "-c", "10.94.0.3", "-P", "16", "-t", "2", "-J"],
        30,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
    let received = v["end"]["sum_received"]["bytes"].as_u64().expect("bytes");
    assert!(received > 10_000_000, "{received}");

    let threads = lab.show("threads");
    let threads = threads["threads"].as_array().unwrap();
    assert_eq!(threads.len(), 2, "{threads:?}");
    for t in threads {
        assert!(t["tid"].as_u64().unwrap() > 0, "{t}");
        assert!(t["cpu_ms"].as_u64().is_some(), "{t}");
    }
    // The worker forwarded frames of its flows itself, not through thread 0.
    assert!(
        threads[1]["frames"].as_u64().unwrap() > 1000,
        "thread 1 forwarded: {threads:?}"
    );
    assert!(threads[0]["frames"].as_u64().unwrap() > 1000, "{threads:?}");
    // Both threads' counts are in `show ports`: b was sent every byte iperf3 got
    // (and the headers around them).
    wait_for("b's counters to include what b received", || {
        lab.port("b")["tx_bytes"].as_u64().unwrap() >= received
    });
    assert_eq!(lab.port("a")["drops"], 0, "{}", lab.port("a"));
}

#[test]
fn queues_close_with_their_port_and_open_with_an_attached_one() {
    let (mut lab, ns) = two_ports(2);
    let tapnet = |args: &[&str]| {
        let mut cmd = vec![TAPNET];
        cmd.extend_from_slice(args);
        run(&cmd, 20)
    };
    let out = tapnet(&[
        "attach",
        "br0",
        "--name",
        "c",
        "--netns",
        &ns[2],
        "--ip",
        "10.94.0.4/24",
        "--lab",
        &lab.name,
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        tun_fds(lab.pid),
        6,
        "the attached port has a queue per thread"
    );
    let link = ns_run(&ns[2], &["ip", "-d", "link", "show", "eth0"], 5);
    assert!(String::from_utf8_lossy(&link.stdout).contains("numqueues 2"));
    // Enough pings that both threads' queues carry some (each ping run is a flow).
    for _ in 0..4 {
        assert!(ping(&ns[2], "10.94.0.2", 2));
        assert!(ping(&ns[0], "10.94.0.4", 2));
    }

    let out = tapnet(&["detach", "c", "--lab", &lab.name]);
    assert!(out.status.success(), "{out:?}");
    wait_for("the workers to close c's queues", || tun_fds(lab.pid) == 4);

    // A namespace deleted: its port goes down, and every thread lets go of it.
    let out = run(&["ip", "netns", "del", &ns[1]], 10);
    assert!(out.status.success());
    wait_for("port b to go down", || lab.port("b")["up"] == false);
    wait_for("every queue of b to close", || tun_fds(lab.pid) == 2);
    let (code, stderr) = lab.stop();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn one_thread_keeps_single_queue_taps() {
    let (lab, ns) = two_ports(1);
    assert!(
        lab.ready_line.ends_with("2 ports, 1 datapath thread"),
        "{}",
        lab.ready_line
    );
    let link = ns_run(&ns[0], &["ip", "-d", "link", "show", "eth0"], 5);
    assert!(!String::from_utf8_lossy(&link.stdout).contains("multi_queue"));
    assert_eq!(tun_fds(lab.pid), 2);
    assert!(ping(&ns[0], "10.94.0.3", 2));
    let threads = lab.show("threads");
    let threads = threads["threads"].as_array().unwrap();
    assert_eq!(threads.len(), 1);
    // Thread 0 has its tid and CPU time with one thread too (bench/threads.sh reads them).
    assert!(threads[0]["tid"].as_u64().unwrap() > 0, "{threads:?}");
    assert!(threads[0]["cpu_ms"].as_u64().is_some(), "{threads:?}");
}

/// A container flooding broadcasts (each its own flow, so on every thread, and every
/// one a hand-over to thread 0): the other containers' exchanges, half of them the
/// worker's flows, are all answered in time, and no frame is lost between the
/// threads. (What it does not show: the starvation a review found before the workers
/// took their ports in turn, with a share of hand-over buffers each, which delayed a
/// later port's pings by seconds, needed a busier machine than this test makes; on
/// quiet runs this test passed without that fix too; the fix was checked against the
/// review's own reproduction instead.)
#[test]
fn under_a_broadcast_flood_other_flows_are_answered_and_nothing_is_lost_between_threads() {
    let name = unique("mq");
    let ns: Vec<String> = (0..3).map(|_| unique("mq")).collect();
    let text = LabText::new(&name)
        .bridge("br0", "10.95.0.0/24")
        .port("a", "br0", &ns[0], "10.95.0.2/24")
        .port("c", "br0", &ns[1], "10.95.0.4/24")
        .port("d", "br0", &ns[2], "10.95.0.5/24")
        .text();
    let lab = start(&name, &ns, &text, 2);
    assert!(ping(&ns[2], "10.95.0.2", 2));
    let flood = r#"
import socket, struct, random, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
own = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
src, dst = socket.inet_aton("10.95.0.4"), socket.inet_aton("10.95.0.255")
end = time.time() + 8
while time.time() < end:
    for _ in range(200):
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 46, 0, 0, 64, 17, 0, src, dst)
        c = sum(struct.unpack("!10H", ip))
        c = (c & 0xffff) + (c >> 16)
        ip = ip[:10] + struct.pack("!H", ~c & 0xffff) + ip[12:]
        udp = struct.pack("!HHHH", random.randrange(1024, 65535), 9, 26, 0) + b"x" * 18
        try:
            s.send(b"\xff" * 6 + own + b"\x08\x00" + ip + udp)
        except OSError:
            pass
"#;
    let _echo = udp_echo(&ns[0], "10.95.0.2", 7000);
    assert_eq!(
        udp_ask(&ns[2], "10.95.0.2", 7000, "up?").as_deref(),
        Some("up?")
    );
    let _flood = Background::spawn(&ns[1], &["python3", "-c", flood]);
    std::thread::sleep(Duration::from_millis(1500));
    // 40 exchanges, each from a port of its own: about half of them the worker's
    // flows. Each waits 0.25 s for its answer.
    let ask = r#"
import socket
ok = 0
for i in range(40):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.25)
    s.sendto(b"ping", ("10.95.0.2", 7000))
    try:
        ok += s.recv(16) == b"ping"
    except socket.timeout:
        pass
    s.close()
print(ok)
"#;
    let out = ns_run(&ns[2], &["python3", "-c", ask], 30);
    let answered: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        answered >= 36,
        "d to a under c's broadcast flood: {answered} of 40"
    );
    let drops = lab.show("drops");
    for p in drops["ports"].as_array().unwrap() {
        assert_eq!(p["drops"]["handoff_full"], 0, "lost between threads: {p}");
    }
}

/// The CPUs in a kernel CPU list (`0-2,5`).
fn cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

/// What `taskset -p -c TID` says thread TID may run on; None if it has exited.
fn taskset_cpus(tid: u64) -> Option<Vec<usize>> {
    let out = run(&["taskset", "-p", "-c", &tid.to_string()], 5);
    if !out.status.success() {
        assert!(
            !std::path::Path::new(&format!("/proc/{tid}")).exists(),
            "taskset -p -c {tid}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    Some(cpu_list(text.rsplit(':').next().unwrap()))
}

/// `--pin-threads`: datapath thread k on the k-th CPU the process may use, wrapping
/// around (three threads on this 2-CPU machine: 0, 1, 0), as `taskset` sees it, with
/// `show threads` saying the same; the process's other threads keep every CPU; and
/// under `taskset -c CPU` every datapath thread goes to that one CPU.
#[test]
fn pinned_threads_each_run_on_their_own_cpu_and_nothing_else_is_pinned() {
    let allowed = taskset_cpus(u64::from(std::process::id())).unwrap();
    let last = *allowed.last().unwrap();
    for (under, threads) in [(None, 3usize), (Some(last), 2)] {
        let cpu = under.map(|c: usize| c.to_string());
        let wrap: Vec<&str> = cpu.as_deref().map_or(vec![], |c| vec!["taskset", "-c", c]);
        let (lab, ns) = two_ports_with(threads as u32, &wrap, &["--pin-threads"]);
        let usable = under.map_or(allowed.clone(), |cpu| vec![cpu]);
        let shown = lab.show("threads");
        let shown = shown["threads"].as_array().unwrap().clone();
        assert_eq!(shown.len(), threads, "{shown:?}");
        let mut datapath = Vec::new();
        for (k, t) in shown.iter().enumerate() {
            let tid = t["tid"].as_u64().unwrap();
            let want = usable[k % usable.len()];
            assert_eq!(
                taskset_cpus(tid),
                Some(vec![want]),
                "thread {k} under {under:?}"
            );
            assert_eq!(t["cpus"], want.to_string(), "{t}");
            datapath.push(tid);
        }
        let others: Vec<u64> = std::fs::read_dir(format!("/proc/{}/task", lab.pid))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|tid| !datapath.contains(tid))
            .collect();
        assert!(!others.is_empty(), "the control thread at least");
        // (A control thread that served the last `show` may have ended meanwhile.)
        for tid in others {
            if let Some(cpus) = taskset_cpus(tid) {
                assert_eq!(cpus, usable, "thread {tid} is not the datapath's");
            }
        }
        assert!(ping(&ns[0], "10.94.0.3", 3), "pinned, it still forwards");
    }
}

/// Numbered datagrams on 16 flows a -> b (`FLOWS` x `PER_FLOW`, 64 bytes, paced so
/// that no queue on the way overflows), and what b received of each flow, in the
/// order it came: `{source port: [numbers]}` as JSON.
const FLOWS: usize = 16;
const PER_FLOW: usize = 300;

fn numbered_flows(sender: &str, receiver: &str, to: &str) -> serde_json::Value {
    let receive = format!(
        r#"
import json, socket, struct, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: room for every datagram
s.bind(("{to}", 9999))
s.settimeout(3)
got, n = {{}}, 0
print("bound", flush=True)
while n < {total}:
    try:
        data, (_, port) = s.recvfrom(2048)
    except socket.timeout:
        break
    got.setdefault(port, []).append(struct.unpack("!I", data[:4])[0])
    n += 1
print(json.dumps(got))
"#,
        total = FLOWS * PER_FLOW
    );
    let mut rx = Command::new("ip")
        .args(["netns", "exec", receiver, "python3", "-c", &receive])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("receiver");
    let mut out = std::io::BufReader::new(rx.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "bound");
    let send = format!(
        r#"
import socket, struct, time
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range({FLOWS})]
for seq in range({PER_FLOW}):
    for s in socks:
        s.sendto(struct.pack("!I", seq) + b"x" * 60, ("{to}", 9999))
    if seq % 4 == 3:
        time.sleep(0.003)
"#
    );
    let sent = ns_run(sender, &["python3", "-c", &send], 60);
    assert!(sent.status.success(), "{sent:?}");
    let mut json = String::new();
    std::io::Read::read_to_string(&mut out, &mut json).unwrap();
    let _ = rx.wait();
    serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {json:?}"))
}

/// Every flow whole and in order: 0, 1, 2, ... `PER_FLOW - 1`.
fn assert_whole_and_in_order(flows: &serde_json::Map<String, serde_json::Value>, what: &str) {
    assert_eq!(flows.len(), FLOWS, "{what}: flows {:?}", flows.keys());
    for (port, seqs) in flows {
        let seqs: Vec<u64> = seqs
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let want: Vec<u64> = (0..PER_FLOW as u64).collect();
        assert!(seqs == want, "{what}: flow from port {port}: {seqs:?}");
    }
}

/// The datagrams to b:9999 in a pcap file, by source port, in file order.
fn captured_flows(file: &std::path::Path) -> serde_json::Map<String, serde_json::Value> {
    let parse = r#"
import json, struct, sys
data = open(sys.argv[1], "rb").read()
# The magic number says the byte order of the headers (pcap-file writes big-endian).
order = ">" if data[:4] in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d") else "<"
i, got = 24, {}
while i + 16 <= len(data):
    incl = struct.unpack(order + "I", data[i + 8:i + 12])[0]
    f = data[i + 16:i + 16 + incl]
    i += 16 + incl
    if len(f) >= 46 and f[12:14] == b"\x08\x00" and f[23] == 17 and f[36:38] == b"\x27\x0f":
        sport = struct.unpack("!H", f[34:36])[0]
        got.setdefault(str(sport), []).append(struct.unpack("!I", f[42:46])[0])
print(json.dumps(got))
"#;
    let out = run(&["python3", "-c", parse, file.to_str().unwrap()], 30);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pcap JSON");
    v.as_object().unwrap().clone()
}

/// Small frames go out in io_uring batches, one system call per batch, on every
/// thread (`show threads`: writes `io_uring`), and a receiver sees nothing of it: 16
/// flows (over both threads) each arrive whole and in order, and a capture of the
/// receiving port holds each datagram once, in order. With `--no-io-uring` every
/// thread writes frame by frame (`write`), and the same holds.
#[test]
fn batched_writes_deliver_every_flow_whole_in_order_and_captured_once() {
    for (extra, writes) in [(&[][..], "io_uring"), (&["--no-io-uring"][..], "write")] {
        let (lab, ns) = two_ports_with(2, &[], extra);
        let threads = lab.show("threads");
        let threads = threads["threads"].as_array().unwrap().clone();
        assert_eq!(threads.len(), 2);
        for t in &threads {
            assert_eq!(t["writes"], writes, "{extra:?}: {threads:?}");
        }
        assert!(ping(&ns[0], "10.94.0.3", 2));

        let flows = numbered_flows(&ns[0], &ns[1], "10.94.0.3");
        assert_whole_and_in_order(flows.as_object().unwrap(), &format!("{writes}, received"));
        let threads = lab.show("threads");
        let carried: Vec<u64> = threads["threads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["frames"].as_u64().unwrap())
            .collect();
        assert!(
            carried.iter().all(|&f| f > 0),
            "{writes}: both threads carried flows: {carried:?}"
        );

        // Captured, b's frames all go through thread 0 (and its batch).
        let file = std::env::temp_dir().join(format!("{}.pcap", unique("mqcap")));
        let capture = capture_to_file(&lab, "b", &file);
        let flows = numbered_flows(&ns[0], &ns[1], "10.94.0.3");
        assert_whole_and_in_order(
            flows.as_object().unwrap(),
            &format!("{writes}, captured port"),
        );
        let path = file.to_str().unwrap().to_string();
        run_until(
            &["tcpdump", "-nr", &path, "udp port 9999"],
            Duration::from_secs(10),
            |t| t.lines().count() >= FLOWS * PER_FLOW,
        );
        drop(capture);
        let captured = captured_flows(&file);
        let _ = std::fs::remove_file(&file);
        assert_whole_and_in_order(&captured, &format!("{writes}, in the capture"));
    }
}
