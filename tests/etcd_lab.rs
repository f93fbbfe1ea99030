//! Many hosts through etcd: tapnets with no static peers find each other through
//! Debian's etcd, run by the test inside the underlay's "switch" namespace. Each
//! tapnet runs the same lab (same name, same file but its `listen`) in a test "host"
//! namespace of its own, with a run directory of its own (`TAPNET_RUN_DIR`), as on
//! separate machines. All addresses are inside these namespaces.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const ETCD_IP: &str = "10.63.0.100";
const TTL_S: u64 = 3;

/// An underlay: a kernel bridge in a "switch" namespace (which also holds etcd's
/// address), hosts joined to it by veths as they are added: 10.63.0.1, .2, ...
struct Underlay {
    sw: TestNetns,
    hosts: Vec<TestNetns>,
}

impl Underlay {
    fn new() -> Underlay {
        let sw = TestNetns::new("s");
        steps(&[
            &["ip", "-n", &sw.name, "link", "set", "lo", "up"],
            &["ip", "-n", &sw.name, "link", "add", "sw", "type", "bridge"],
            &[
                "ip",
                "-n",
                &sw.name,
                "addr",
                "add",
                &format!("{ETCD_IP}/24"),
                "dev",
                "sw",
            ],
            &["ip", "-n", &sw.name, "link", "set", "sw", "up"],
        ]);
        Underlay {
            sw,
            hosts: Vec::new(),
        }
    }

    /// A new host namespace on the underlay; its address.
    fn add_host(&mut self) -> String {
        let h = TestNetns::new("h");
        let i = self.hosts.len();
        let (port, addr) = (format!("p{i}"), format!("10.63.0.{}", i + 1));
        steps(&[
            &[
                "ip",
                "-n",
                &self.sw.name,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "u0",
                "netns",
                &h.name,
            ],
            &[
                "ip",
                "-n",
                &self.sw.name,
                "link",
                "set",
                &port,
                "master",
                "sw",
            ],
            &["ip", "-n", &self.sw.name, "link", "set", &port, "up"],
            &[
                "ip",
                "-n",
                &h.name,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "u0",
            ],
            &["ip", "-n", &h.name, "link", "set", "u0", "up"],
            &["ip", "-n", &h.name, "link", "set", "lo", "up"],
        ]);
        self.hosts.push(h);
        addr
    }
}

/// Debian's etcd in the switch namespace, on its own data directory; killed and
/// removed when dropped.
struct Etcd {
    ns: String,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl Etcd {
    fn start(ns: &str) -> Etcd {
        let dir = std::env::temp_dir().join(unique("etcd"));
        let mut e = Etcd {
            ns: ns.to_string(),
            dir,
            child: None,
        };
        e.run();
        e
    }

    fn url() -> String {
        format!("http://{ETCD_IP}:2379")
    }

    fn run(&mut self) {
        let url = Etcd::url();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "etcd", "--data-dir"])
            .arg(&self.dir)
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-cluster",
                "default=http://127.0.0.1:2380",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (Debian's etcd-server) runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.ctl(&["endpoint", "health"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("etcd did not come up");
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `etcdctl ARGS...` (v3 API) against it, from the switch namespace.
    fn ctl(&self, args: &[&str]) -> std::process::Output {
        let url = Etcd::url();
        let mut cmd = vec![
            "ip",
            "netns",
            "exec",
            &self.ns,
            "env",
            "ETCDCTL_API=3",
            "etcdctl",
            "--endpoints",
            &url,
            "--dial-timeout",
            "1s",
        ];
        cmd.extend_from_slice(args);
        run(&cmd, 10)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A run directory of one simulated host's own, removed when dropped.
struct RunDir(std::path::PathBuf);

impl RunDir {
    fn new() -> RunDir {
        let d = std::env::temp_dir().join(unique("run"));
        std::fs::create_dir_all(&d).unwrap();
        RunDir(d)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One host's tapnet: lab `lab` with a VNI bridge and container `c` at `ip`,
/// registered in etcd, in host namespace `host`.
struct Host {
    lab: RunningLab,
    container: String,
    ip: String,
    _run: RunDir,
}

fn start_host(host: &str, me: &str, lab: &str, ip: &str, extra: &str) -> Host {
    let container = unique("n");
    let text = LabText::new(lab)
        .bridge("ov", "10.64.0.0/24")
        .with("vni", 42)
        .port("c", "ov", &container, &format!("{ip}/24"))
        .raw("[vxlan]")
        .with("listen", format!("{me}:4789").as_str())
        .raw(&format!("etcd = [\"{}\"]", Etcd::url()))
        .with("etcd_ttl_s", TTL_S as i64)
        .raw(extra)
        .text();
    let run_dir = RunDir::new();
    let env = format!("TAPNET_RUN_DIR={}", run_dir.0.display());
    let file = LabFile::new(&text);
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{host}"))
        .arg(TAPNET)
        .arg("up")
        .arg(&file.path)
        .env("TAPNET_RUN_DIR", &run_dir.0);
    let lab = RunningLab::launch(
        cmd,
        lab,
        std::slice::from_ref(&container),
        Some(file),
        vec!["env".into(), env, TAPNET.into()],
    );
    Host {
        lab,
        container,
        ip: ip.to_string(),
        _run: run_dir,
    }
}

/// The peers `show vxlan` lists, by address.
fn peers(h: &Host) -> Vec<String> {
    let v = h.lab.show("vxlan");
    let mut p: Vec<String> = v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer"].as_str().unwrap().to_string())
        .collect();
    p.sort();
    p
}

/// Waits up to `within` for `f` to hold; how long it took.
fn wait_for(within: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < within {
        if f() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn store(h: &Host) -> serde_json::Value {
    h.lab.show("vxlan")["store"].clone()
}

#[test]
fn hosts_find_each_other_leave_within_the_ttl_and_join_at_once() {
    let mut net = Underlay::new();
    let etcd = Etcd::start(&net.sw.name);
    let lab = unique("l");
    let addrs: Vec<String> = (0..3).map(|_| net.add_host()).collect();
    let mut hosts: Vec<Host> = (0..3)
        .map(|i| {
            start_host(
                &net.hosts[i].name,
                &addrs[i],
                &lab,
                &format!("10.64.0.{}", i + 10),
                "",
            )
        })
        .collect();
    // Every host sees the two others, from the store alone.
    for (i, h) in hosts.iter().enumerate() {
        let want: Vec<String> = addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| format!("{a}:4789"))
            .collect();
        assert!(
            wait_for(Duration::from_secs(10), || peers(h) == want).is_some(),
            "host {i}: {:?}, want {want:?}",
            peers(h)
        );
        // Its own registration is another thread's, and may come a moment later.
        wait_for(Duration::from_secs(10), || store(h)["registered"] == true);
        let st = store(h);
        assert_eq!(st["reachable"], true, "{st}");
        assert_eq!(st["registered"], true, "{st}");
        assert_eq!(h.lab.show("vxlan")["peers"][0]["source"], "etcd");
    }
    // The keys are where the README says.
    let out = etcd.ctl(&[
        "get",
        "--prefix",
        "--keys-only",
        &format!("/tapnet/v1/{lab}/hosts/"),
    ]);
    let keys = String::from_utf8_lossy(&out.stdout);
    for a in &addrs {
        assert!(
            keys.contains(&format!("/tapnet/v1/{lab}/hosts/{a}:4789")),
            "{keys}"
        );
    }
    // Every pair of containers pings.
    for a in &hosts {
        for b in &hosts {
            if a.ip != b.ip {
                assert!(ping(&a.container, &b.ip, 2), "{} -> {}", a.ip, b.ip);
            }
        }
    }

    // An address another host's container has is not attached here too.
    let spare = unique("n");
    let mut cmd: Vec<&str> = hosts[0].lab.client.iter().map(String::as_str).collect();
    let taken = format!("{}/24", hosts[1].ip);
    cmd.extend([
        "attach", "ov", "--name", "x", "--netns", &spare, "--ip", &taken, "--lab", &lab,
    ]);
    let out = run(&cmd, 10);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is registered in etcd by host"),
        "{out:?}"
    );
    let _ = run(&["ip", "netns", "del", &spare], 5);

    // ARP for a container another host registered is answered by the local endpoint:
    // no request crosses the underlay. tcpdump in host 1's container sees none from
    // host 0's container, which resolves it afresh.
    let before = hosts[0].lab.show("vxlan")["arp_suppressed"]
        .as_u64()
        .unwrap();
    let dump = std::env::temp_dir().join(format!("{}.pcap", unique("arp")));
    // (Once tcpdump listens: else it could miss a request that did cross.)
    let sniff = Watcher::start(
        &hosts[1].container,
        &[
            "tcpdump",
            "-i",
            "eth0",
            "-n",
            "-U",
            "-w",
            dump.to_str().unwrap(),
            "arp",
        ],
        60,
        "listening on",
    );
    let flushed = ns_run(&hosts[0].container, &["ip", "neigh", "flush", "all"], 5);
    assert!(flushed.status.success());
    // trace says who answers.
    let packet = format!("icmp {} -> {}", hosts[0].ip, hosts[1].ip);
    let mut cmd: Vec<&str> = hosts[0].lab.client.iter().map(String::as_str).collect();
    cmd.extend(["trace", "c", &packet, "--lab", &lab]);
    let traced = String::from_utf8_lossy(&run(&cmd, 10).stdout).to_string();
    assert!(
        traced.contains(&format!("host {}:4789 registered it in etcd", addrs[1])),
        "{traced}"
    );
    assert!(ping(&hosts[0].container, &hosts[1].ip, 2), "after a flush");
    std::thread::sleep(Duration::from_millis(500));
    drop(sniff);
    let read = run(&["tcpdump", "-n", "-r", dump.to_str().unwrap()], 10);
    let _ = std::fs::remove_file(&dump);
    let seen = String::from_utf8_lossy(&read.stdout).to_string();
    assert!(
        !seen.contains(&format!("tell {}", hosts[0].ip)),
        "a request crossed: {seen}"
    );
    let after = hosts[0].lab.show("vxlan")["arp_suppressed"]
        .as_u64()
        .unwrap();
    assert!(after > before, "{before} -> {after}");

    // A host killed outright leaves the others' peers within the TTL (and 2 s).
    let gone = format!("{}:4789", addrs[2]);
    let mut dead = hosts.pop().unwrap();
    dead.lab.stop_with(libc::SIGKILL);
    for h in &hosts {
        let took = wait_for(Duration::from_secs(TTL_S + 2), || !peers(h).contains(&gone));
        assert!(took.is_some(), "{:?} still lists {gone}", peers(h));
    }
    drop(dead);

    // A fourth host, started now, is reachable at once, with no restart elsewhere.
    let a4 = net.add_host();
    let fourth = start_host(&net.hosts[3].name, &a4, &lab, "10.64.0.13", "");
    assert!(
        wait_for(Duration::from_secs(5), || peers(&hosts[0])
            .contains(&format!("{a4}:4789")))
        .is_some(),
        "{:?}",
        peers(&hosts[0])
    );
    assert!(
        ping(&hosts[0].container, &fourth.ip, 3),
        "to the fourth host"
    );
    assert!(
        ping(&fourth.container, &hosts[1].ip, 3),
        "from the fourth host"
    );

    // A clean stop takes the host's key at once (its lease revoked).
    drop(fourth);
    let key = format!("/tapnet/v1/{lab}/hosts/{a4}:4789");
    let out = etcd.ctl(&["get", "--keys-only", &key]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&key));
}

#[test]
fn losing_the_store_keeps_traffic_flowing_and_recovers_by_itself() {
    let mut net = Underlay::new();
    let lab = unique("l");
    let addrs: Vec<String> = (0..3).map(|_| net.add_host()).collect();
    // etcd is not there yet: the lab starts anyway and keeps trying.
    let h0 = start_host(&net.hosts[0].name, &addrs[0], &lab, "10.64.0.10", "");
    // The store's first try is on a thread of its own, after the lab is ready.
    wait_for(Duration::from_secs(10), || {
        store(&h0)["last_error"].as_str().is_some()
    });
    let st = store(&h0);
    assert_eq!(st["reachable"], false, "{st}");
    assert!(st["last_error"].as_str().is_some(), "{st}");
    let text = run(
        &[
            "env",
            &format!("TAPNET_RUN_DIR={}", h0._run.0.display()),
            TAPNET,
            "show",
            "vxlan",
            "--lab",
            &lab,
        ],
        10,
    );
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("store: unreachable since"),
        "{text:?}"
    );
    let mut etcd = Etcd::start(&net.sw.name);
    let h1 = start_host(&net.hosts[1].name, &addrs[1], &lab, "10.64.0.11", "");
    for (h, other) in [(&h0, &addrs[1]), (&h1, &addrs[0])] {
        assert!(
            wait_for(Duration::from_secs(10), || peers(h)
                == vec![format!("{other}:4789")])
            .is_some(),
            "{:?}",
            peers(h)
        );
    }
    assert!(ping(&h0.container, &h1.ip, 2));

    // Bad input under the prefix: ignored and counted, never a panic.
    let prefix = format!("/tapnet/v1/{lab}/hosts/");
    for (key, value) in [
        (format!("{prefix}10.63.0.77:4789"), "not json".to_string()),
        (format!("{prefix}10.63.0.78:4789"), "{\"version\":1}".to_string()),
        (
            format!("{prefix}10.63.0.79:4789"),
            "{\"version\":1,\"lab\":\"another\",\"vtep\":\"10.63.0.79:4789\",\"vnis\":[42],\"ports\":[]}".to_string(),
        ),
        // Another lab's key altogether: not even read.
        (
            "/tapnet/v1/another/hosts/10.63.0.80:4789".to_string(),
            "{\"version\":1,\"lab\":\"another\",\"vtep\":\"10.63.0.80:4789\",\"vnis\":[42],\"ports\":[]}".to_string(),
        ),
    ] {
        assert!(etcd.ctl(&["put", &key, &value]).status.success());
    }
    let counted = wait_for(Duration::from_secs(5), || {
        let st = store(&h0);
        st["bad_values"] == 2 && st["other_labs"] == 1
    });
    assert!(counted.is_some(), "{}", store(&h0));
    assert_eq!(peers(&h0), vec![format!("{}:4789", addrs[1])]);

    // A forged host claims h1's container's address: h1 does not take it (its own),
    // h0 keeps the first claim (h1's), and the two containers still reach each other.
    let forged = format!(
        "{{\"version\":1,\"lab\":\"{lab}\",\"vtep\":\"10.63.0.50:4789\",\"vnis\":[42],\"ports\":[{{\"vni\":42,\"mac\":\"02:66:66:66:66:66\",\"ip\":\"{}\"}}]}}",
        h1.ip
    );
    assert!(etcd
        .ctl(&["put", &format!("{prefix}10.63.0.50:4789"), &forged])
        .status
        .success());
    assert!(
        wait_for(Duration::from_secs(5), || store(&h1)["conflicts"] == 1
            && store(&h0)["hosts"] == 2)
        .is_some(),
        "{} {}",
        store(&h1),
        store(&h0)
    );
    assert!(ns_run(&h0.container, &["ip", "neigh", "flush", "all"], 5)
        .status
        .success());
    assert!(
        ping(&h0.container, &h1.ip, 2),
        "the forged claim took h1's address"
    );
    assert_eq!(h0.lab.show("vxlan")["store"]["registered_over_limit"], 0);
    assert!(etcd
        .ctl(&["del", &format!("{prefix}10.63.0.50:4789")])
        .status
        .success());

    // Someone deletes h1's own key: h1 puts it back, and h0 has it again.
    let h1_key = format!("{prefix}{}:4789", addrs[1]);
    assert!(etcd.ctl(&["del", &h1_key]).status.success());
    let put_back = || {
        let out = etcd.ctl(&["get", "--keys-only", &h1_key]);
        String::from_utf8_lossy(&out.stdout).contains(&h1_key)
    };
    wait_for(Duration::from_secs(5), put_back);
    let out = etcd.ctl(&["get", "--keys-only", &h1_key]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&h1_key),
        "not put back: {out:?}"
    );
    assert!(wait_for(Duration::from_secs(5), || peers(&h0)
        == vec![format!("{}:4789", addrs[1])])
    .is_some());

    // etcd goes away: the known hosts keep talking, and `show vxlan` says so.
    etcd.stop();
    assert!(
        wait_for(Duration::from_secs(10), || store(&h0)["reachable"] == false).is_some(),
        "{}",
        store(&h0)
    );
    assert_eq!(
        peers(&h0),
        vec![format!("{}:4789", addrs[1])],
        "the last view stays"
    );
    assert!(
        ping(&h0.container, &h1.ip, 3),
        "traffic between known hosts flows"
    );
    // Out for longer than the TTL: both leases expire in the store's eyes.
    std::thread::sleep(Duration::from_secs(TTL_S + 1));

    // It comes back: everyone registers again, and a new host is picked up.
    etcd.run();
    let h2 = start_host(&net.hosts[2].name, &addrs[2], &lab, "10.64.0.12", "");
    for h in [&h0, &h1] {
        assert!(
            wait_for(Duration::from_secs(15), || peers(h)
                .contains(&format!("{}:4789", addrs[2])))
            .is_some(),
            "{:?} {}",
            peers(h),
            store(h)
        );
        let st = store(h);
        assert_eq!(st["reachable"], true, "{st}");
    }
    assert!(
        wait_for(Duration::from_secs(15), || peers(&h2).len() == 2).is_some(),
        "{:?}",
        peers(&h2)
    );
    assert!(ping(&h2.container, &h0.ip, 3));
    assert!(ping(&h1.container, &h2.ip, 3));

    // One host cut off from the underlay for longer than its TTL: its lease expires,
    // the others drop it; back on the underlay, it finds its lease gone and
    // registers again, and the others take it back.
    let h1_key = format!("{}:4789", addrs[1]);
    let _ = &h1_key;
    let registrations = store(&h1)["registrations"].as_u64().unwrap();
    let link = |state: &str| {
        let out = run(
            &["ip", "-n", &net.hosts[1].name, "link", "set", "u0", state],
            5,
        );
        assert!(out.status.success());
    };
    link("down");
    assert!(
        wait_for(Duration::from_secs(TTL_S + 3), || !peers(&h0)
            .contains(&h1_key))
        .is_some(),
        "{:?}",
        peers(&h0)
    );
    link("up");
    assert!(
        wait_for(Duration::from_secs(15), || peers(&h0).contains(&h1_key)).is_some(),
        "{:?} {}",
        peers(&h0),
        store(&h1)
    );
    let st = store(&h1);
    assert!(
        st["registrations"].as_u64().unwrap() > registrations,
        "{st}"
    );
    assert_eq!(st["reachable"], true, "{st}");
    assert!(ping(&h0.container, &h1.ip, 3), "the host that came back");
}
