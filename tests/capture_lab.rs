//! `tapnet capture`: every frame of a port, both ways, as pcap to a file or a pipe,
//! read back by tcpdump; a slow or vanished reader never stalls the lab.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn lab() -> (RunningLab, Vec<String>) {
    let name = unique("l");
    let ns: Vec<String> = (0..2).map(|_| unique("n")).collect();
    let text = LabText::new(&name)
        .bridge("br0", "10.223.0.0/24")
        .port("a", "br0", &ns[0], "10.223.0.2/24")
        .port("b", "br0", &ns[1], "10.223.0.3/24")
        .text();
    (RunningLab::start(&name, &ns, &text), ns)
}

#[test]
fn a_capture_file_holds_the_pings_both_ways() {
    let (lab, ns) = lab();
    let file = std::env::temp_dir().join(format!("{}.pcap", unique("cap")));
    let capture = capture_to_file(&lab, "a", &file);
    assert!(ping(&ns[0], "10.223.0.3", 3));
    // Until the capture wrote them (more would still be counted below).
    run_until(
        &["tcpdump", "-nr", file.to_str().unwrap()],
        Duration::from_secs(10),
        |t| {
            t.matches("ICMP echo request").count() >= 3 && t.matches("ICMP echo reply").count() >= 3
        },
    );
    drop(capture);
    // tshark reads the file as Wireshark would.
    let shark = run(
        &["tshark", "-n", "-r", file.to_str().unwrap(), "-Y", "icmp"],
        30,
    );
    let shark = String::from_utf8_lossy(&shark.stdout).to_string();
    let asks = shark
        .lines()
        .filter(|l| l.contains("10.223.0.2 → 10.223.0.3") && l.contains("Echo (ping) request"))
        .count();
    let answers = shark
        .lines()
        .filter(|l| l.contains("10.223.0.3 → 10.223.0.2") && l.contains("Echo (ping) reply"))
        .count();
    assert_eq!((asks, answers), (3, 3), "{shark}");
    let out = run(&["tcpdump", "-nr", file.to_str().unwrap()], 10);
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&out.stdout);
    let requests = text
        .lines()
        .filter(|l| l.contains("10.223.0.2 > 10.223.0.3: ICMP echo request"))
        .count();
    let replies = text
        .lines()
        .filter(|l| l.contains("10.223.0.3 > 10.223.0.2: ICMP echo reply"))
        .count();
    assert_eq!((requests, replies), (3, 3), "{text}");
}

#[test]
fn a_capture_streams_live_to_tcpdump_and_unknown_ports_are_refused() {
    let (lab, ns) = lab();
    let pipeline = format!(
        "{TAPNET} capture b --lab {} | tcpdump -l -nr - -c 4 icmp",
        lab.name
    );
    let mut live = Command::new("timeout")
        .args(["10", "sh", "-c", &pipeline])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // tcpdump says "reading from file -" once the pcap header came through the pipe:
    // the capture is on. stderr is read to its end (a closed pipe would kill tcpdump).
    let stderr = live.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let drain = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("reading from file") {
                let _ = tx.send(());
            }
        }
    });
    let _ = rx.recv_timeout(Duration::from_secs(10));
    assert!(ping(&ns[0], "10.223.0.3", 4));
    let out = live.wait_with_output().unwrap();
    let _ = drain.join();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ICMP echo"), "{text}");

    let out = run(&[TAPNET, "capture", "nosuch", "--lab", &lab.name], 10);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no port `nosuch`"));
    let out = run(&[TAPNET, "capture", "a", "--lab", &unique("none")], 10);
    assert_eq!(out.status.code(), Some(1));
    let out = run(&[TAPNET, "capture", "", "--lab", &lab.name], 10);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the port's name is empty"));
}

#[test]
fn a_reader_that_never_reads_costs_copies_not_the_datapath() {
    let (lab, ns) = lab();
    // Asks for a capture, reads the lab's answer (a byte at a time: not one byte of
    // the pcap stream after it), says so, then never reads again.
    const STUCK: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"capture a\n")
line = b""
while not line.endswith(b"\n"):
    c = s.recv(1)
    if not c:
        break
    line += c
print(line.decode().strip(), flush=True)
time.sleep(30)
"#;
    let socket = format!("/run/tapnet/{}.sock", lab.name);
    let mut reader = Reap(
        Command::new("python3")
            .args(["-c", STUCK, &socket])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The capture is on once the lab answered.
    let mut on = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(reader.0.stdout.take().unwrap()),
        &mut on,
    )
    .unwrap();
    assert_eq!(on.trim(), r#"{"ok":true}"#);
    // A flood of pings still gets through, at full speed.
    let out = ns_run(
        &ns[0],
        // -w: every answer waited for, the last one too (a busy machine may be late).
        &["ping", "-f", "-c", "20000", "-w", "50", "-q", "10.223.0.3"],
        60,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("20000 received"), "{text}");
    let a = lab.port("a");
    assert!(a["capture_dropped"].as_u64().unwrap() > 0, "{a}");
    // While it holds the capture, a second one of the port is refused.
    let second = |secs: &str| {
        run(
            &[
                "timeout",
                secs,
                TAPNET,
                "capture",
                "a",
                "--lab",
                &lab.name,
                "-w",
                "/dev/null",
            ],
            10,
        )
    };
    let out = second("1");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already being captured"));
    // The reader goes away: the capture stops (a new one is taken), the lab runs on.
    drop(reader);
    let t = std::time::Instant::now();
    loop {
        let out = second("1");
        if !String::from_utf8_lossy(&out.stderr).contains("already being captured") {
            assert_eq!(
                out.status.code(),
                Some(124),
                "the new capture ran until stopped"
            );
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the vanished reader's capture never stopped"
        );
    }
    assert!(ping(&ns[0], "10.223.0.3", 2));
    assert_eq!(lab.port("a")["up"], true);
}

#[test]
fn top_shows_each_ports_rates() {
    let (lab, ns) = lab();
    // Floods of pings from a, one after another, from before top's first reading to
    // after its last: every refresh has some (one flood of a fixed size could be
    // over before a slowly started top took its first reading).
    struct StopOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let stop = StopOnDrop(std::sync::Arc::default());
    let flooding = std::thread::spawn({
        let (a, stop) = (ns[0].clone(), stop.0.clone());
        move || {
            let mut floods = 0;
            while floods == 0 || !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let flood = ns_run(&a, &["ping", "-f", "-c", "3000", "-q", "10.223.0.3"], 30);
                assert!(flood.status.success());
                floods += 1;
            }
        }
    });
    // The first flood is under way.
    lab.show_until("ports", Duration::from_secs(10), |v| {
        v["ports"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["name"] == "a" && p["rx_packets"].as_u64() >= Some(100))
        })
    });
    let top = std::process::Command::new(TAPNET)
        .args([
            "top",
            "--lab",
            &lab.name,
            "--interval-ms",
            "500",
            "--count",
            "3",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = top.wait_with_output().unwrap();
    drop(stop);
    flooding.join().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("RX_PPS") && text.contains("TX_MBIT/S"),
        "{text}"
    );
    // Some refresh saw port a receiving pings at a rate above zero.
    let busy = text.lines().any(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.first() == Some(&"a")
            && w.get(2)
                .and_then(|r| r.parse::<f64>().ok())
                .is_some_and(|r| r > 0.0)
    });
    assert!(busy, "{text}");
}

#[test]
fn a_mirror_tap_shows_a_ports_frames_to_tcpdump_in_the_host() {
    // tapnet runs in a test host namespace, where its mirror TAP appears.
    let host = TestNetns::new("h");
    let name = unique("l");
    let ns: Vec<String> = (0..2).map(|_| unique("n")).collect();
    let text = LabText::new(&name)
        .bridge("br0", "10.226.0.0/24")
        .port("a", "br0", &ns[0], "10.226.0.2/24")
        .with("mirror", "mon0")
        .port("b", "br0", &ns[1], "10.226.0.3/24")
        .text();
    let mut lab = RunningLab::start_in(Some(&host.name), &name, &ns, &text);
    let watch = Watcher::start(
        &host.name,
        &["tcpdump", "-l", "-n", "-i", "mon0", "-c", "4", "icmp"],
        15,
        "listening on",
    );
    assert!(ping(&ns[0], "10.226.0.3", 3));
    let text = watch.finish();
    assert!(
        text.contains("10.226.0.2 > 10.226.0.3: ICMP echo request"),
        "{text}"
    );
    assert!(
        text.contains("10.226.0.3 > 10.226.0.2: ICMP echo reply"),
        "{text}"
    );
    let (code, _) = lab.stop();
    assert_eq!(code, Some(0));
    let out = ns_run(&host.name, &["ip", "link", "show", "mon0"], 5);
    assert!(!out.status.success(), "the mirror outlived the lab");
}

#[test]
fn a_capture_stopped_by_a_signal_leaves_whole_records_and_a_port_going_down_ends_it() {
    let (lab, ns) = lab();
    let server = Background::spawn(&ns[1], &["iperf3", "-s", "-B", "10.223.0.3"]);
    // A TCP stream: ~60 KB super-frames, so a signal lands inside a record more often
    // than not.
    let stream = std::thread::spawn({
        let a = ns[0].clone();
        move || iperf3(&a, "10.223.0.3", 5201)
    });
    for signal in ["INT", "TERM"] {
        let file = std::env::temp_dir().join(format!("{}.pcap", unique("cap")));
        let capture = capture_to_file(&lab, "b", &file);
        std::thread::sleep(Duration::from_millis(700));
        let pid = capture.0.id().to_string();
        assert!(run(&["kill", &format!("-{signal}"), &pid], 5)
            .status
            .success());
        let mut capture = capture;
        let status = capture.0.wait().unwrap();
        assert!(status.success(), "SIG{signal}: capture exited {status}");
        // Every record whole: tcpdump reads to the end without a complaint.
        let out = run(&["tcpdump", "-nr", file.to_str().unwrap()], 30);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let _ = std::fs::remove_file(&file);
        assert!(
            out.status.success() && !err.contains("truncated"),
            "SIG{signal}: {err}"
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).lines().count() > 0,
            "SIG{signal}: the capture caught nothing of the stream"
        );
    }
    assert!(stream.join().unwrap().is_some(), "iperf3 through the lab");
    // A port that goes down (its namespace deleted) ends its capture: the client
    // says so and exits, rather than waiting on a port that will send nothing more.
    let file = std::env::temp_dir().join(format!("{}.pcap", unique("cap")));
    let mut capture = capture_to_file(&lab, "b", &file);
    // (A process inside would keep the namespace, and the TAP, alive.)
    drop(server);
    assert!(run(&["ip", "netns", "del", &ns[1]], 10).status.success());
    let mut ended = None;
    for _ in 0..100 {
        if let Some(status) = capture.0.try_wait().unwrap() {
            ended = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(&file);
    let status = ended.expect("the capture of a port that went down still runs after 10 s");
    assert!(status.success(), "{status}");
}
