//! Labs run by an ordinary user (rootless): the test user runs `tapnet up` with
//! `setpriv`, and reaches its containers with `tapnet exec` as that user. Masquerade
//! and forwards run with tapnet in a test host namespace whose only link leads to a
//! test outside namespace; every address is inside namespaces the tests made.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::rootless::{namespace_alive, netns_inode, UserHome};
use common::*;

fn ok(out: &std::process::Output) -> bool {
    out.status.success()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// `ping` from a port of a rootless lab: all `count` answered.
fn ping_from(home: &UserHome, lab: &str, port: &str, ip: &str) -> bool {
    ok(&home.exec(
        lab,
        port,
        &["ping", "-c", "3", "-i", "0.1", "-W", "1", "-q", ip],
        10,
    ))
}

/// Waits (up to 10 s: a busy machine may be slow to start it) until process `pid` is
/// in a namespace of `kind` ("net", "user") other than this test's: it has unshared.
fn wait_unshared(pid: u32, kind: &str) {
    let ours = std::fs::read_link(format!("/proc/self/ns/{kind}")).unwrap();
    for _ in 0..500 {
        if std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).is_ok_and(|l| l != ours) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rootless_lab_mesh_routing_show_capture_exec_and_teardown() {
    let home = UserHome::new();
    let name = unique("rl");
    let text = LabText::new(&name)
        .bridge("br0", "10.81.0.0/24")
        .port("a", "br0", "a", "10.81.0.2/24")
        .port("b", "br0", "b", "10.81.0.3/24")
        .port("c", "br0", "c", "10.81.0.4/24")
        .bridge("br1", "10.82.0.0/24")
        .port("d", "br1", "d", "10.82.0.2/24")
        .text();
    let mut lab = home.start(None, &name, &text);
    assert!(lab.ready_line.contains("4 ports"), "{}", lab.ready_line);

    // The L2 mesh, the gateway and a routed hop, from inside each container.
    let ips = [("a", "10.81.0.2"), ("b", "10.81.0.3"), ("c", "10.81.0.4")];
    for (from, _) in ips {
        for (to, ip) in ips {
            if from != to {
                assert!(ping_from(&home, &name, from, ip), "{from} -> {to}");
            }
        }
    }
    assert!(ping_from(&home, &name, "a", "10.81.0.1"), "a -> gateway");
    assert!(ping_from(&home, &name, "a", "10.82.0.2"), "a -> d, routed");

    // exec: uid 0 in the lab's user namespace, the command's exit status, the TAP
    // with its address inside.
    let id = home.exec(&name, "a", &["id", "-u"], 10);
    assert_eq!(String::from_utf8_lossy(&id.stdout).trim(), "0", "{id:?}");
    let status = home.exec(&name, "b", &["sh", "-c", "exit 7"], 10);
    assert_eq!(status.status.code(), Some(7), "{status:?}");
    let addr = home.exec(&name, "d", &["ip", "-o", "-4", "addr", "show", "eth0"], 10);
    assert!(
        String::from_utf8_lossy(&addr.stdout).contains("10.82.0.2/24"),
        "{addr:?}"
    );
    // As `ip netns exec`: /sys shows the container's devices.
    let sys = home.exec(&name, "a", &["cat", "/sys/class/net/eth0/address"], 10);
    assert_eq!(
        String::from_utf8_lossy(&sys.stdout).trim(),
        "02:00:0a:51:00:02",
        "{sys:?}"
    );
    // tapnet run inside a container (uid 0 of the lab's user namespace) is still
    // the user, and finds the lab.
    let bin = home.bin.display().to_string();
    let inner = home.exec(&name, "a", &[&bin, "show", "ports", "--lab", &name], 10);
    assert!(ok(&inner), "{inner:?}");
    // Root reaches the user's lab too (here by its XDG_RUNTIME_DIR; /run/user/UID
    // and /tmp/tapnet-UID are searched), and runs commands there as the user.
    let xdg = format!("XDG_RUNTIME_DIR={}", home.run.display());
    let as_root = run(
        &[
            "env", &xdg, TAPNET, "exec", "--lab", &name, "a", "--", "id", "-u",
        ],
        10,
    );
    assert_eq!(
        String::from_utf8_lossy(&as_root.stdout).trim(),
        "0",
        "{as_root:?}"
    );
    let unknown = home.exec(&name, "zz", &["true"], 10);
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
    assert_eq!(stderr(&unknown), "tapnet: no port `zz` in this lab");

    // show and trace, as the user (trace asks the container's own neighbour table,
    // in the lab's namespace).
    let a = lab.port("a");
    assert!(a["rx_packets"].as_u64().unwrap() > 0, "{a}");
    let trace = home.run(
        &["trace", "--lab", &name, "a", "icmp 10.81.0.2 -> 10.82.0.2"],
        10,
    );
    assert!(ok(&trace), "{trace:?}");
    assert!(
        String::from_utf8_lossy(&trace.stdout).contains("egress: d"),
        "{trace:?}"
    );

    // capture, as the user, read by tcpdump.
    let pcap = std::env::temp_dir().join(format!("{}.pcap", unique("cap")));
    let mut capture = Command::new("setpriv")
        .args(&home.as_user()[1..])
        .arg(&home.bin)
        .args(["capture", "--lab", &name, "a"])
        .stdout(std::fs::File::create(&pcap).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("capture");
    // On once the pcap header is there; then until the capture wrote the pings.
    wait_pcap_header(&pcap);
    assert!(ping_from(&home, &name, "a", "10.81.0.3"));
    let requests = |t: &str| {
        t.lines()
            .filter(|l| l.contains("10.81.0.2 > 10.81.0.3: ICMP echo request"))
            .count()
    };
    let text = run_until(
        &["tcpdump", "-nr", pcap.to_str().unwrap()],
        Duration::from_secs(10),
        |t| requests(t) >= 3,
    );
    let _ = capture.kill();
    let _ = capture.wait();
    let _ = std::fs::remove_file(&pcap);
    assert!(
        text.lines()
            .filter(|l| l.contains("10.81.0.2 > 10.81.0.3: ICMP echo request"))
            .count()
            >= 3,
        "{text}"
    );

    // Another user is refused, and told why.
    for args in [
        &["show", "ports"][..],
        &["show", "ports", "--lab", &name],
        &["exec", "--lab", &name, "a", "--", "true"],
    ] {
        let mut cmd = vec![
            "setpriv".to_string(),
            "--reuid=nobody".into(),
            "--regid=nogroup".into(),
            "--clear-groups".into(),
            "env".into(),
            format!("XDG_RUNTIME_DIR={}", home.run.display()),
            home.bin.display().to_string(),
        ];
        cmd.extend(args.iter().map(|s| s.to_string()));
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let out = run(&cmd, 10);
        assert!(!ok(&out), "{args:?}: {out:?}");
        assert!(stderr(&out).contains("another user"), "{args:?}: {out:?}");
    }

    // Teardown: tapnet exits 0, and no namespace, socket or process is left.
    let inodes: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|p| netns_inode(&home, &name, p))
        .collect();
    assert!(inodes.iter().all(|i| namespace_alive(i)));
    let pid = lab.pid;
    let (code, err) = lab.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(!home.has_socket(&name));
    for inode in &inodes {
        assert!(!namespace_alive(inode), "{inode} outlived the lab");
    }
}

#[test]
fn rootless_forward_keeps_the_client_address_and_masquerade_reaches_the_outside() {
    let net = HostAndOutside::new();
    let home = UserHome::new();
    let name = unique("rl");
    let text = LabText::new(&name)
        .bridge("br0", "10.83.0.0/24")
        .port("web", "br0", "web", "10.83.0.3/24")
        .forward("tcp", "0.0.0.0:8080", "10.83.0.3:80")
        .nat()
        .text();
    let mut lab = home.start(Some(&net.host.name), &name, &text);

    // A forward from the outside: the server in the container sees the client's own
    // address. (Port 80 inside is the lab's to give: its user namespace owns it.)
    let www = WebRoot::new("rootless forward\n");
    let _server = home.exec_background(
        &name,
        "web",
        &http_server_argv("0.0.0.0", 80, &www.dir, &www.log),
    );
    let url = format!("http://{HOST_IP}:8080/");
    assert_eq!(
        curl(&net.outside.name, &url).as_deref(),
        Some("rootless forward\n")
    );
    assert_eq!(www.clients(), vec![OUTSIDE_IP.to_string()]);

    // Masquerade, TCP: from the container to a server outside, which sees the host.
    let outside_www = WebRoot::new("outside\n");
    let _outside_server = http_server(
        &net.outside.name,
        "0.0.0.0",
        8081,
        &outside_www.dir,
        &outside_www.log,
    );
    let page = (0..50).find_map(|_| {
        let out = home.exec(
            &name,
            "web",
            &[
                "curl",
                "-s",
                "-m",
                "3",
                &format!("http://{OUTSIDE_IP}:8081/"),
            ],
            6,
        );
        if ok(&out) {
            return Some(String::from_utf8_lossy(&out.stdout).to_string());
        }
        std::thread::sleep(Duration::from_millis(100));
        None
    });
    assert_eq!(page.as_deref(), Some("outside\n"));
    assert!(outside_www.clients().iter().all(|c| c == HOST_IP));

    // Masquerade, UDP.
    let _echo = udp_echo(&net.outside.name, "0.0.0.0", 5353);
    let argv = udp_ask_argv(OUTSIDE_IP, 5353, "rootless udp");
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let answer = home.exec(&name, "web", &argv, 10);
    assert_eq!(String::from_utf8_lossy(&answer.stdout), "rootless udp");

    // Ping outside: the host namespace keeps `ping_group_range` at the kernel's
    // default, so no ICMP socket for the user: refused (administratively prohibited),
    // counted, and `up` said so once.
    let ping = home.exec(
        &name,
        "web",
        &["ping", "-c", "1", "-W", "2", OUTSIDE_IP],
        10,
    );
    assert!(!ok(&ping));
    let nat = lab.show("nat");
    assert!(
        nat["host"]["ping_refused"].as_u64().unwrap_or(0) >= 1,
        "{nat}"
    );
    let (code, err) = lab.stop();
    assert_eq!(code, Some(0), "{err}");
    let warnings = err.lines().filter(|l| l.contains("ping_group_range"));
    assert_eq!(warnings.count(), 1, "{err}");
}

#[test]
fn rootless_labs_refuse_what_only_root_may_do() {
    let home = UserHome::new();
    // A forward below net.ipv4.ip_unprivileged_port_start (1024 by default), a mirror
    // in the host and a port in the host namespace: `check` and `up` by the user name
    // each, with its line.
    let text = LabText::new(&unique("rl"))
        .bridge("br0", "10.86.0.0/24")
        .port("a", "br0", "a", "10.86.0.2/24")
        .with("mirror", "m0")
        .port("b", "br0", "", "10.86.0.3/24")
        .forward("tcp", "0.0.0.0:80", "10.86.0.2:80")
        .text();
    let file = LabFile::new(&text);
    let path = file.path.display().to_string();
    for cmd in ["check", "up"] {
        let out = home.run(&[cmd, &path], 20);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {out:?}");
        let err = stderr(&out);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 3, "{cmd}: {err}");
        assert!(lines[0].starts_with(&format!("{path}:")), "{err}");
        assert!(lines[0].contains("`mirror = \"m0\"`"), "{err}");
        assert!(lines[1].contains("port `b` has no `netns`"), "{err}");
        assert!(
            lines[2].contains("port 80 is below net.ipv4.ip_unprivileged_port_start (1024)"),
            "{err}"
        );
    }
    // Root may: the same file is valid to root's `check`.
    assert!(ok(&run(&[TAPNET, "check", &path], 10)));

    // exec with no lab running: one line, exit 1.
    let out = home.run(&["exec", "--lab", &unique("none"), "a", "--", "true"], 10);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("is not running"), "{out:?}");
    assert_eq!(stderr(&out).lines().count(), 1);
}

#[test]
fn a_refused_user_namespace_is_one_line_and_leaves_nothing() {
    // An honest refusal: a user namespace (made by root, mapping root and the test
    // user) whose `user.max_user_namespaces` is 0, so tapnet, run there as the test
    // user, may not make one. The outer shell re-execs once the maps are written, so
    // it holds its capabilities there to set the limit and drop to the user.
    let home = UserHome::new();
    let name = unique("rl");
    let file = LabFile::new(
        &LabText::new(&name)
            .bridge("br0", "10.87.0.0/24")
            .port("a", "br0", "a", "10.87.0.2/24")
            .text(),
    );
    let script = format!(
        "read go; exec sh -c 'echo 0 > /proc/sys/user/max_user_namespaces && exec setpriv --reuid={} --regid={} --clear-groups env XDG_RUNTIME_DIR={} {} up {}'",
        home.uid,
        home.gid,
        home.run.display(),
        home.bin.display(),
        file.path.display()
    );
    let mut child = Command::new("unshare")
        .args(["--user", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare --user");
    let pid = child.id();
    wait_unshared(pid, "user");
    let (u, g) = (home.uid, home.gid);
    std::fs::write(
        format!("/proc/{pid}/uid_map"),
        format!("0 0 1\n{u} {u} 1\n"),
    )
    .unwrap();
    std::fs::write(
        format!("/proc/{pid}/gid_map"),
        format!("0 0 1\n{g} {g} 1\n"),
    )
    .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status, Some(2), "{err}");
    let err = err.trim();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot create the lab's user namespace")
            && err.contains("user.max_user_namespaces is 0"),
        "{err}"
    );
    assert!(!home.has_socket(&name));
}

/// A namespace the user made (`unshare -rn`, as rootless podman makes them) given to a
/// rootless lab by path, beside one of the lab's own; and, as root, a namespace by path
/// beside a named one, reached with `tapnet exec` as root.
#[test]
fn namespaces_given_by_path_join_the_lab() {
    let home = UserHome::new();
    let mut holder = home.as_user();
    holder.extend(["unshare", "-rn", "sleep", "60"].map(String::from));
    let holder = Reap(
        Command::new(&holder[0])
            .args(&holder[1..])
            .spawn()
            .expect("unshare -rn"),
    );
    let pid = holder.0.id();
    wait_unshared(pid, "net");
    let path = format!("/proc/{pid}/ns/net");
    let start = || {
        let name = unique("rl");
        let text = LabText::new(&name)
            .bridge("br0", "10.88.0.0/24")
            .port("p", "br0", &path, "10.88.0.2/24")
            .port("q", "br0", "q", "10.88.0.3/24")
            .text();
        (home.start(None, &name, &text), name)
    };
    let (lab, name) = start();
    assert!(ping_from(&home, &name, "p", "10.88.0.3"));
    // The port is in that very namespace: root sees it there.
    let inside = run(
        &["nsenter", "-t", &pid.to_string(), "-n", "ip", "-o", "addr"],
        10,
    );
    assert!(
        String::from_utf8_lossy(&inside.stdout).contains("10.88.0.2/24"),
        "{inside:?}"
    );
    drop(lab);
    // The namespace is the user's, and stays; tapnet's device in it goes.
    let after = run(
        &["nsenter", "-t", &pid.to_string(), "-n", "ip", "-o", "link"],
        10,
    );
    assert!(ok(&after));
    assert!(
        !String::from_utf8_lossy(&after.stdout).contains("eth0"),
        "{after:?}"
    );

    // The lab holds no part of that namespace: when its process ends, the namespace
    // goes, and the port goes down with it while the others run on.
    let (lab, name) = start();
    assert!(ping_from(&home, &name, "q", "10.88.0.2"));
    drop(holder);
    let mut down = false;
    for _ in 0..100 {
        if lab.port("p")["up"] == false {
            down = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(down, "{}", lab.port("p"));
    assert!(ping_from(&home, &name, "q", "10.88.0.1"));
    drop(lab);

    // As root: a namespace by path (held by a process of the test's), `tapnet exec`.
    let holder = Reap(
        Command::new("unshare")
            .args(["-n", "sleep", "60"])
            .spawn()
            .expect("unshare -n"),
    );
    let pid = holder.0.id();
    wait_unshared(pid, "net");
    let path = format!("/proc/{pid}/ns/net");
    let (name, q) = (unique("l"), unique("n"));
    let _lab = RunningLab::start(
        &name,
        std::slice::from_ref(&q),
        &LabText::new(&name)
            .bridge("br0", "10.89.0.0/24")
            .port("p", "br0", &path, "10.89.0.2/24")
            .port("q", "br0", &q, "10.89.0.3/24")
            .text(),
    );
    for (from, to) in [("p", "10.89.0.3"), ("q", "10.89.0.2")] {
        let out = run(
            &[
                TAPNET, "exec", "--lab", &name, from, "--", "ping", "-c", "2", "-i", "0.1", "-W",
                "1", "-q", to,
            ],
            10,
        );
        assert!(ok(&out), "{from} -> {to}: {out:?}");
    }
}

#[test]
fn a_killed_rootless_lab_leaves_nothing_behind() {
    // SIGKILL gives tapnet no chance to clean up: its namespaces go with it all the
    // same (nothing names them), and the next `up` of the lab starts cleanly.
    let home = UserHome::new();
    let name = unique("rl");
    let text = LabText::new(&name)
        .bridge("br0", "10.90.0.0/24")
        .port("a", "br0", "a", "10.90.0.2/24")
        .text();
    let mut lab = home.start(None, &name, &text);
    let inode = netns_inode(&home, &name, "a");
    lab.stop_with(libc::SIGKILL);
    assert!(!namespace_alive(&inode), "{inode} outlived a killed lab");
    let again = home.start(None, &name, &text);
    assert!(
        again.ready_line.contains(", 1 port"),
        "{}",
        again.ready_line
    );
}
