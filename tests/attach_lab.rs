//! Changing a running lab: `tapnet attach` and `tapnet detach` of container
//! namespaces (by name and by path) and of a VM's socket, `--ip auto`, `show lab`
//! read back by `check`, and bad requests refused in one line with nothing changed.

mod common;

use std::collections::HashSet;

use common::*;

fn tapnet(args: &[&str]) -> std::process::Output {
    let mut cmd = vec![TAPNET];
    cmd.extend_from_slice(args);
    run(&cmd, 20)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// `tapnet attach BRIDGE --name NAME ARGS... --lab LAB`: the address it got.
fn attach(lab: &str, name: &str, args: &[&str]) -> Result<String, String> {
    let mut cmd = vec!["attach", "br0", "--name", name, "--lab", lab];
    cmd.extend_from_slice(args);
    let out = tapnet(&cmd);
    if !out.status.success() {
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert_eq!(stderr(&out).lines().count(), 1, "{out:?}");
        return Err(stderr(&out));
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    Ok(text
        .split("ip ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_default()
        .to_string())
}

fn port_names(lab: &RunningLab) -> Vec<String> {
    let v = lab.show("ports");
    v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn attach_and_detach_under_traffic_leave_the_others_alone() {
    let name = unique("l");
    let (a, b, x) = (unique("n"), unique("n"), unique("n"));
    let text = LabText::new(&name)
        .bridge("br0", "10.93.0.0/24")
        .port("a", "br0", &a, "10.93.0.2/24")
        .port("b", "br0", &b, "10.93.0.3/24")
        .service("web", "10.93.0.50:80", "tcp", &["10.93.0.2:80"])
        .text();
    let lab = RunningLab::start(&name, &[a.clone(), b.clone(), x.clone()], &text);
    // 400 pings between a and b, 10 ms apart, while ports come and go.
    let flood = std::thread::spawn({
        let a = a.clone();
        move || {
            let out = ns_run(
                &a,
                &[
                    "ping",
                    "-c",
                    "400",
                    "-i",
                    "0.01",
                    "-W",
                    "1",
                    // Every answer is waited for (until then), not only 2 RTTs after
                    // the last request: a busy machine may answer that one late.
                    "-w",
                    "25",
                    "-q",
                    "10.93.0.3",
                ],
                30,
            );
            String::from_utf8_lossy(&out.stdout).to_string()
        }
    });
    for round in 0..3 {
        let ip = attach(&name, "x", &["--netns", &x, "--ip", "auto"]).unwrap();
        // The lowest free address: not the gateway (.1), a or b, nor the VIP.
        assert_eq!(ip, "10.93.0.4/24", "round {round}");
        assert!(ping(&x, "10.93.0.2", 2), "x -> a, round {round}");
        assert!(ping(&x, "10.93.0.1", 1), "x -> gateway, round {round}");
        assert!(port_names(&lab).contains(&"x".to_string()));
        let out = tapnet(&["detach", "x", "--lab", &name]);
        assert!(out.status.success(), "{out:?}");
        assert!(!port_names(&lab).contains(&"x".to_string()));
        // The namespace tapnet made for it went with it, and its learned MAC too.
        assert!(!netns_exists(&x), "round {round}");
        let fdb = lab.show("fdb").to_string();
        assert!(!fdb.contains("02:00:0a:5d:00:04"), "{fdb}");
    }
    let summary = flood.join().unwrap();
    assert!(summary.contains(" 0% packet loss"), "{summary}");
}

#[test]
fn a_burst_of_changes_leaves_frames_their_turn_and_extra_clients_are_told() {
    let name = unique("l");
    let (a, b) = (unique("n"), unique("n"));
    let text = LabText::new(&name)
        .bridge("br0", "10.97.0.0/24")
        .port("a", "br0", &a, "10.97.0.2/24")
        .port("b", "br0", &b, "10.97.0.3/24")
        .text();
    let spares: Vec<String> = (0..3).map(|_| unique("n")).collect();
    let mut all = vec![a.clone(), b.clone()];
    all.extend(spares.iter().cloned());
    let lab = RunningLab::start(&name, &all, &text);
    let flood = std::thread::spawn({
        let a = a.clone();
        move || {
            let out = ns_run(
                &a,
                &[
                    "ping",
                    "-c",
                    "300",
                    "-i",
                    "0.01",
                    "-W",
                    "1",
                    // As above: every answer waited for.
                    "-w",
                    "25",
                    "-q",
                    "10.97.0.3",
                ],
                30,
            );
            String::from_utf8_lossy(&out.stdout).to_string()
        }
    });
    // Three clients attaching and detaching as fast as they are answered.
    let churn: Vec<_> = spares
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let (name, ns) = (name.clone(), ns.clone());
            std::thread::spawn(move || {
                let port = format!("c{i}");
                for _ in 0..8 {
                    attach(&name, &port, &["--netns", &ns, "--ip", "auto"]).unwrap();
                    let out = tapnet(&["detach", &port, "--lab", &name]);
                    assert!(out.status.success(), "{out:?}");
                }
            })
        })
        .collect();
    for c in churn {
        c.join().unwrap();
    }
    let summary = flood.join().unwrap();
    assert!(summary.contains(" 0% packet loss"), "{summary}");

    // Clients past the limit are told so, in words, and the lab serves again after.
    let path = format!("/run/tapnet/{name}.sock");
    let held: Vec<_> = (0..64)
        .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = tapnet(&["show", "ports", "--lab", &name]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("too many clients"), "{out:?}");
    drop(held);
    // Each held client's thread sees its end and lets go in its own time (a busy
    // machine may take a while to run 64 threads): until then the lab still says
    // "too many clients"; then it serves.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = tapnet(&["show", "ports", "--lab", &name]);
        if out.status.success() || std::time::Instant::now() > deadline {
            assert!(out.status.success(), "{out:?}");
            break;
        }
        assert!(stderr(&out).contains("too many clients"), "{out:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(port_names(&lab).len(), 3, "a, b and the router");
}

#[test]
fn a_change_its_client_gave_up_on_is_not_made() {
    let name = unique("l");
    let (a, x) = (unique("n"), unique("n"));
    let text = LabText::new(&name)
        .bridge("br0", "10.98.0.0/24")
        .port("a", "br0", &a, "10.98.0.2/24")
        .text();
    let lab = RunningLab::start(&name, &[a.clone(), x.clone()], &text);
    // The datapath stops (a stand-in for a lab too busy to answer) while an attach
    // waits: the client gives up after 5 s, exit 2, and the attach never happens.
    let pid = lab.pid.to_string();
    assert!(run(&["kill", "-STOP", &pid], 5).status.success());
    let waiting = std::thread::spawn({
        let (name, x) = (name.clone(), x.clone());
        move || {
            tapnet(&[
                "attach", "br0", "--name", "x", "--netns", &x, "--lab", &name,
            ])
        }
    });
    // The client gives up by itself (tapnet, stopped, cannot answer); only then does
    // tapnet go on (a fixed wait could end before a slowly started client gave up).
    let out = waiting.join().unwrap();
    assert!(run(&["kill", "-CONT", &pid], 5).status.success());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out).contains("gave no answer within 5 s"),
        "{out:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        port_names(&lab).len(),
        2,
        "a and the router: x was not attached"
    );
    assert!(!netns_exists(&x));
    // And a detach of an internal port says what it is.
    let out = tapnet(&["detach", "router:br0", "--lab", &name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is internal"), "{out:?}");
}

#[test]
fn auto_addresses_are_never_given_twice_and_show_lab_reads_back() {
    let name = unique("l");
    let a = unique("n");
    let text = LabText::new(&name)
        .bridge("br0", "10.94.0.0/24")
        .port("a", "br0", &a, "10.94.0.2/24")
        .text();
    let mut namespaces = vec![a.clone()];
    let lab = RunningLab::start(&name, &namespaces, &text);
    // 50 attaches, every third one detached again at once: no address is ever held
    // by two ports, and freed ones are given again.
    let mut live: Vec<(String, String)> = Vec::new();
    for i in 0..50 {
        let (port, ns) = (format!("p{i}"), unique("n"));
        namespaces.push(ns.clone());
        let ip = attach(&name, &port, &["--netns", &ns, "--ip", "auto"]).unwrap();
        assert!(
            live.iter().all(|(_, other)| *other != ip),
            "{ip} given twice: {live:?}"
        );
        live.push((port.clone(), ip));
        if i % 3 == 0 {
            let (gone, _) = live.remove(0);
            assert!(tapnet(&["detach", &gone, "--lab", &name]).status.success());
        }
    }
    let ips: HashSet<&String> = live.iter().map(|(_, ip)| ip).collect();
    assert_eq!(ips.len(), live.len());
    assert_eq!(
        port_names(&lab).len(),
        1 + 1 + live.len(),
        "a, the router, the rest"
    );

    // An impairment changed at run time is part of the lab as it is now.
    let out = tapnet(&["impair", "a", "delay=5ms", "--lab", &name]);
    assert!(out.status.success(), "{out:?}");

    // The lab as it is now, as a lab file: `check` takes it, with every port.
    let out = tapnet(&["show", "lab", "--lab", &name]);
    assert!(out.status.success(), "{out:?}");
    let now = LabFile::new(&String::from_utf8_lossy(&out.stdout));
    let checked = tapnet(&["check", now.path.to_str().unwrap()]);
    assert!(checked.status.success(), "{checked:?}");
    let text = std::fs::read_to_string(&now.path).unwrap();
    assert!(text.contains("impair = \"delay=5000us\""), "{text}");
    for (port, ip) in &live {
        assert!(text.contains(&format!("name = \"{port}\"")), "{text}");
        assert!(text.contains(&format!("ip = \"{ip}\"")), "{text}");
    }
    drop(lab);
    for ns in &namespaces {
        assert!(!netns_exists(ns), "{ns} left behind");
    }
}

#[test]
fn bad_attaches_are_refused_in_one_line_and_change_nothing() {
    let name = unique("l");
    let (a, x) = (unique("n"), unique("n"));
    let text = LabText::new(&name)
        .bridge("br0", "10.95.0.0/24")
        .port("a", "br0", &a, "10.95.0.2/24")
        .with("mac", "02:00:00:00:95:02")
        .text();
    let lab = RunningLab::start(&name, &[a.clone(), x.clone()], &text);
    let before = port_names(&lab);
    let cases: [(&[&str], &str); 5] = [
        (&["--ip", "auto"], "say where it goes: --netns"),
        (
            &["--netns", &x, "--ip", "10.95.0.2/24"],
            "ip 10.95.0.2 is already used by port `a`",
        ),
        (
            &["--netns", &x, "--mac", "02:00:00:00:95:02"],
            "mac 02:00:00:00:95:02 of port `x` is already used by port `a`",
        ),
        (
            &["--netns", "/proc/999999999/ns/net"],
            "/proc/999999999/ns/net",
        ),
        (&["--netns", &x, "--ip", "10.96.0.9/24"], "10.96.0.9"),
    ];
    for (args, needle) in cases {
        let err = attach(&name, "x", args).unwrap_err();
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(port_names(&lab), before, "{args:?} changed the lab");
        assert!(!netns_exists(&x), "{args:?} left a namespace");
    }
    // A FIFO for a namespace is refused at once: the datapath never waits on it.
    let fifo = std::env::temp_dir().join(unique("fifo"));
    assert!(run(&["mkfifo", fifo.to_str().unwrap()], 5).status.success());
    let err = attach(&name, "x", &["--netns", fifo.to_str().unwrap()]).unwrap_err();
    let _ = std::fs::remove_file(&fifo);
    assert!(err.contains("not a network namespace"), "{err}");
    assert!(ping(&a, "10.95.0.1", 1), "the datapath still forwards");
    let out = tapnet(&[
        "attach", "nosuch", "--name", "x", "--netns", &x, "--lab", &name,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("names bridge `nosuch`"), "{out:?}");
    // A name taken: said against the running lab, not a line of a file.
    let err = attach(&name, "a", &["--netns", &x]).unwrap_err();
    assert_eq!(
        err,
        "tapnet: duplicate port name `a` (already in the running lab)"
    );
    let out = tapnet(&["detach", "", "--lab", &name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("detach needs a port's name"),
        "{out:?}"
    );
    let out = tapnet(&["detach", "nosuch", "--lab", &name]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!("tapnet: no port `nosuch` in lab `{name}`")
    );
    // A VM's socket attached at run time is a port like the others.
    let socket = std::env::temp_dir().join(format!("{}.sock", unique("vm")));
    attach(&name, "vm", &["--qemu", socket.to_str().unwrap()]).unwrap();
    assert_eq!(lab.port("vm")["kind"], "qemu");
    assert!(socket.exists());
    assert!(tapnet(&["detach", "vm", "--lab", &name]).status.success());
    assert!(!socket.exists(), "the socket goes with the port");
}

#[test]
fn detaching_a_container_closes_its_host_connections() {
    // tapnet in a test host namespace; an attached container holds a masqueraded
    // connection to a server in the outside namespace, and is detached: the server
    // sees the connection end at once (tapnet closed its host socket), not at a
    // timeout. A port that a forward targets is not detached.
    let net = HostAndOutside::new();
    let name = unique("l");
    let (x, web) = (unique("n"), unique("n"));
    let text = LabText::new(&name)
        .bridge("br0", "10.97.0.0/24")
        .port("web", "br0", &web, "10.97.0.2/24")
        .forward("tcp", "0.0.0.0:8090", "10.97.0.2:80")
        .nat()
        .text();
    let lab = RunningLab::start_in(
        Some(&net.host.name),
        &name,
        &[x.clone(), web.clone()],
        &text,
    );
    attach(&name, "x", &["--netns", &x, "--ip", "auto"]).unwrap();
    let log = std::env::temp_dir().join(format!("{}.log", unique("echo")));
    let _echo = tcp_echo_logging(&net.outside.name, "0.0.0.0", 7000, &log);
    const CLIENT: &str = r#"
import socket, sys, time
for _ in range(50):
    try:
        s = socket.create_connection((sys.argv[1], 7000), timeout=2)
        s.sendall(b"hello")
        if s.recv(16) == b"hello":
            break
    except OSError:
        time.sleep(0.1)
time.sleep(60)
"#;
    let _client = Background::spawn(&x, &["python3", "-c", CLIENT, OUTSIDE_IP]);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    for _ in 0..100 {
        if logged().contains("open") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(logged(), "open\n");
    let detached = std::time::Instant::now();
    assert!(tapnet(&["detach", "x", "--lab", &name]).status.success());
    assert_eq!(lab.show("nat")["host_flows"], serde_json::json!([]));
    while logged().lines().count() < 2 && detached.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(detached.elapsed().as_secs() < 5, "{}", logged());
    assert_eq!(logged().lines().count(), 2, "{}", logged());
    let _ = std::fs::remove_file(&log);

    let out = tapnet(&["detach", "web", "--lab", &name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("forward tcp 0.0.0.0:8090"), "{out:?}");
    let rm = tapnet(&["forward", "rm", "tcp", "0.0.0.0:8090", "--lab", &name]);
    assert!(rm.status.success(), "{rm:?}");
    assert!(tapnet(&["detach", "web", "--lab", &name]).status.success());
}

#[test]
fn forwards_are_added_and_removed_at_run_time() {
    let net = HostAndOutside::new();
    let name = unique("l");
    let (web, x) = (unique("n"), unique("n"));
    let text = LabText::new(&name)
        .bridge("br0", "10.98.0.0/24")
        .port("web", "br0", &web, "10.98.0.2/24")
        .nat()
        .text();
    let lab = RunningLab::start_in(
        Some(&net.host.name),
        &name,
        &[web.clone(), x.clone()],
        &text,
    );
    let www = WebRoot::new("added at run time\n");
    let _server = http_server(&web, "0.0.0.0", 80, &www.dir, &www.log);
    let url = format!("http://{HOST_IP}:8081/");
    let add = [
        "forward",
        "add",
        "tcp",
        "0.0.0.0:8081",
        "10.98.0.2:80",
        "--lab",
        &name,
    ];
    assert!(tapnet(&add).status.success());
    assert_eq!(
        curl(&net.outside.name, &url).as_deref(),
        Some("added at run time\n")
    );
    assert_eq!(
        www.clients(),
        vec![OUTSIDE_IP.to_string()],
        "the client's own address"
    );
    let forwards = lab.show("forwards").to_string();
    assert!(forwards.contains("0.0.0.0:8081"), "{forwards}");
    // show lab has it, and check takes it.
    let out = tapnet(&["show", "lab", "--lab", &name]);
    let now = LabFile::new(&String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("listen = \"0.0.0.0:8081\""));
    assert!(tapnet(&["check", now.path.to_str().unwrap()])
        .status
        .success());

    // The same port again, a port to no one, a bad protocol: one line each, exit 1.
    for (args, needle) in [
        (&add[..], "8081"),
        (
            &[
                "forward",
                "add",
                "tcp",
                "8082",
                "10.98.0.77:80",
                "--lab",
                &name,
            ][..],
            "no port or service holds that address",
        ),
        (
            &[
                "forward",
                "add",
                "sctp",
                "8083",
                "10.98.0.2:80",
                "--lab",
                &name,
            ][..],
            "sctp",
        ),
    ] {
        let out = tapnet(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert_eq!(stderr(&out).lines().count(), 1, "{out:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {out:?}");
    }

    // Removed: the host port is closed (refused at once), and free to add again.
    let rm = ["forward", "rm", "tcp", "0.0.0.0:8081", "--lab", &name];
    assert!(tapnet(&rm).status.success());
    let refused = ns_run(&net.outside.name, &["curl", "-s", "-m", "3", &url], 6);
    assert_eq!(
        refused.status.code(),
        Some(7),
        "connection refused: {refused:?}"
    );
    assert!(!lab.show("forwards").to_string().contains("8081"));
    assert_eq!(tapnet(&rm).status.code(), Some(1), "once");
    assert!(tapnet(&add).status.success(), "added again");
    assert!(curl(&net.outside.name, &url).is_some());
    // An attached container can be published too.
    attach(&name, "x", &["--netns", &x, "--ip", "10.98.0.9/24"]).unwrap();
    let add_x = [
        "forward",
        "add",
        "udp",
        "5353",
        "10.98.0.9:5353",
        "--lab",
        &name,
    ];
    assert!(tapnet(&add_x).status.success());
    let _echo = udp_echo(&x, "0.0.0.0", 5353);
    assert_eq!(
        udp_ask(&net.outside.name, HOST_IP, 5353, "hello").as_deref(),
        Some("hello")
    );
}

#[test]
fn services_are_added_and_removed_at_run_time() {
    let name = unique("l");
    let (c, w1, w2) = (unique("n"), unique("n"), unique("n"));
    let text = LabText::new(&name)
        .bridge("br0", "10.99.0.0/24")
        .port("c", "br0", &c, "10.99.0.5/24")
        .port("w1", "br0", &w1, "10.99.0.2/24")
        .port("w2", "br0", &w2, "10.99.0.3/24")
        .text();
    let lab = RunningLab::start(&name, &[c.clone(), w1.clone(), w2.clone()], &text);
    let (r1, r2) = (WebRoot::new("one\n"), WebRoot::new("two\n"));
    let _s1 = http_server(&w1, "0.0.0.0", 80, &r1.dir, &r1.log);
    let _s2 = http_server(&w2, "0.0.0.0", 80, &r2.dir, &r2.log);
    let add = [
        "service",
        "add",
        "web",
        "10.99.0.100:80",
        "tcp",
        "10.99.0.2:80",
        "10.99.0.3:80",
        "--lab",
        &name,
    ];
    let out = tapnet(&add);
    assert!(out.status.success(), "{out:?}");
    // Connections from many source ports reach both backends.
    let mut seen = HashSet::new();
    for i in 0..20 {
        let port = (40000 + i).to_string();
        let out = ns_run(
            &c,
            &[
                "curl",
                "-s",
                "-m",
                "3",
                "--local-port",
                &port,
                "http://10.99.0.100/",
            ],
            6,
        );
        seen.insert(String::from_utf8_lossy(&out.stdout).to_string());
    }
    assert!(seen.contains("one\n") && seen.contains("two\n"), "{seen:?}");
    assert!(lab.show("services").to_string().contains("10.99.0.100:80"));
    let out = tapnet(&["show", "lab", "--lab", &name]);
    let now = LabFile::new(&String::from_utf8_lossy(&out.stdout));
    assert!(tapnet(&["check", now.path.to_str().unwrap()])
        .status
        .success());

    // A VIP a port holds, a duplicate name, a bad protocol: one line each, exit 1.
    for (args, needle) in [
        (
            &[
                "service",
                "add",
                "x",
                "10.99.0.5:80",
                "tcp",
                "10.99.0.2:80",
                "--lab",
                &name,
            ][..],
            "10.99.0.5",
        ),
        (&add[..], "web"),
        (
            &[
                "service",
                "add",
                "y",
                "10.99.0.101:80",
                "icmp",
                "10.99.0.2:80",
                "--lab",
                &name,
            ][..],
            "icmp",
        ),
    ] {
        let out = tapnet(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert_eq!(stderr(&out).lines().count(), 1, "{out:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {out:?}");
    }

    // Removed: the VIP no longer answers, and the name is free.
    assert!(tapnet(&["service", "rm", "web", "--lab", &name])
        .status
        .success());
    let gone = ns_run(&c, &["curl", "-s", "-m", "2", "http://10.99.0.100/"], 6);
    assert!(!gone.status.success(), "{gone:?}");
    assert!(!lab.show("services").to_string().contains("10.99.0.100"));
    assert_eq!(
        tapnet(&["service", "rm", "web", "--lab", &name])
            .status
            .code(),
        Some(1)
    );
    assert!(tapnet(&add).status.success(), "added again");
}
