//! Shared parts of the integration tests: a running lab as a guard that tears down on
//! drop (even when a test fails), unique names, and helpers that run real clients in
//! the lab's namespaces. Every address used lives inside namespaces the test created.

#![allow(dead_code)]

pub mod rootless;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const TAPNET: &str = env!("CARGO_BIN_EXE_tapnet");

/// A short name unique to this test process and call: "t" + pid + counter.
pub fn unique(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("t{}{tag}{n}", std::process::id() % 100_000)
}

pub fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

/// True if something is mounted at /run/netns/NAME in the test's mount namespace.
pub fn netns_mounted(name: &str) -> bool {
    let target = format!("/run/netns/{name}");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(target.as_str()))
}

/// Runs a command, bounded in time, and returns its output.
pub fn run(cmd: &[&str], timeout_s: u32) -> Output {
    let mut args = vec!["-k", "2", Box::leak(timeout_s.to_string().into_boxed_str())];
    args.extend_from_slice(cmd);
    Command::new("timeout")
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command inside a namespace.
pub fn ns_run(ns: &str, cmd: &[&str], timeout_s: u32) -> Output {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(cmd);
    run(&full, timeout_s)
}

/// True if `count` pings from `ns` to `ip` all get answers.
pub fn ping(ns: &str, ip: &str, count: u32) -> bool {
    let c = count.to_string();
    ns_run(
        ns,
        &["ping", "-c", &c, "-i", "0.05", "-W", "1", "-q", ip],
        10,
    )
    .status
    .success()
}

/// A lab file written to a temporary path, removed on drop.
pub struct LabFile {
    pub path: PathBuf,
}

impl LabFile {
    pub fn new(text: &str) -> LabFile {
        let path = std::env::temp_dir().join(format!("{}.toml", unique("lab")));
        std::fs::write(&path, text).unwrap();
        LabFile { path }
    }
}

impl Drop for LabFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A lab file written in code, one table after another, each key on its own line and
/// no blank lines (so line numbers are easy to count):
/// `LabText::new(name).bridge("br0", "10.0.0.0/24").port("a", "br0", &ns, "10.0.0.2/24").text()`.
/// Keys a table method does not take are added with [`LabText::with`], to the table
/// last added.
#[derive(Clone, Debug)]
pub struct LabText {
    text: String,
}

/// A value in a lab file: a string is quoted, a number or a boolean is written as is.
pub trait TomlValue {
    fn toml(&self) -> String;
}

impl TomlValue for &str {
    fn toml(&self) -> String {
        format!("\"{self}\"")
    }
}

impl TomlValue for &String {
    fn toml(&self) -> String {
        self.as_str().toml()
    }
}

impl TomlValue for i64 {
    fn toml(&self) -> String {
        self.to_string()
    }
}

impl TomlValue for i32 {
    fn toml(&self) -> String {
        self.to_string()
    }
}

impl TomlValue for bool {
    fn toml(&self) -> String {
        self.to_string()
    }
}

/// `["a", "b"]`.
fn toml_list(items: &[&str]) -> String {
    let items: Vec<String> = items.iter().map(|i| i.toml()).collect();
    format!("[{}]", items.join(", "))
}

impl LabText {
    /// `name = "NAME"`.
    pub fn new(name: &str) -> LabText {
        LabText {
            text: format!("name = \"{name}\"\n"),
        }
    }

    /// A `[[bridge]]`, with its `subnet` unless that is empty.
    pub fn bridge(self, name: &str, subnet: &str) -> LabText {
        self.raw("[[bridge]]")
            .with("name", name)
            .with_unless_empty("subnet", subnet)
    }

    /// A `[[port]]` on `bridge`, with its `netns` and `ip` unless they are empty.
    pub fn port(self, name: &str, bridge: &str, netns: &str, ip: &str) -> LabText {
        self.raw("[[port]]")
            .with("name", name)
            .with("bridge", bridge)
            .with_unless_empty("netns", netns)
            .with_unless_empty("ip", ip)
    }

    /// A `[[forward]]` from `listen` to `to`, with its `proto` unless that is empty.
    pub fn forward(self, proto: &str, listen: &str, to: &str) -> LabText {
        self.raw("[[forward]]")
            .with_unless_empty("proto", proto)
            .with("listen", listen)
            .with("to", to)
    }

    /// A `[[service]]`.
    pub fn service(self, name: &str, vip: &str, proto: &str, backends: &[&str]) -> LabText {
        self.raw("[[service]]")
            .with("name", name)
            .with("vip", vip)
            .with("proto", proto)
            .raw(&format!("backends = {}", toml_list(backends)))
    }

    /// A `[nat]` table, empty so far (which masquerades).
    pub fn nat(self) -> LabText {
        self.raw("[nat]")
    }

    /// A `[vxlan]` table.
    pub fn vxlan(self, listen: &str, peers: &[&str]) -> LabText {
        self.raw("[vxlan]")
            .with("listen", listen)
            .raw(&format!("peers = {}", toml_list(peers)))
    }

    /// `KEY = VALUE` in the table last added.
    pub fn with(self, key: &str, value: impl TomlValue) -> LabText {
        self.raw(&format!("{key} = {}", value.toml()))
    }

    fn with_unless_empty(self, key: &str, value: &str) -> LabText {
        if value.is_empty() {
            self
        } else {
            self.with(key, value)
        }
    }

    /// Lines of TOML as they are (none if empty).
    pub fn raw(mut self, lines: &str) -> LabText {
        if !lines.is_empty() {
            self.text.push_str(lines);
            if !lines.ends_with('\n') {
                self.text.push('\n');
            }
        }
        self
    }

    pub fn text(&self) -> String {
        self.text.clone()
    }
}

/// A running `tapnet up`. Dropping it stops tapnet (SIGTERM, then SIGKILL) and removes
/// whatever namespaces it named, should tapnet itself have failed to.
pub struct RunningLab {
    pub name: String,
    pub namespaces: Vec<String>,
    pub ready_line: String,
    /// tapnet's process id: its temporary TAP names start with `tn<pid>p`.
    pub pid: u32,
    /// How `show` runs the tapnet client: `[TAPNET]`, or as the user of a rootless lab.
    pub client: Vec<String>,
    child: Option<Child>,
    _file: Option<LabFile>,
}

impl RunningLab {
    /// Starts `tapnet up` on `text` and waits for its ready line.
    pub fn start(name: &str, namespaces: &[String], text: &str) -> RunningLab {
        RunningLab::start_in(None, name, namespaces, text)
    }

    /// Starts `tapnet up` with tapnet itself inside network namespace `host` (entered
    /// with nsenter, which leaves the mount namespace alone, so the namespaces tapnet
    /// creates are visible to everyone).
    pub fn start_in(
        host: Option<&str>,
        name: &str,
        namespaces: &[String],
        text: &str,
    ) -> RunningLab {
        let file = LabFile::new(text);
        let mut cmd = match host {
            Some(host) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{host}")).arg(TAPNET);
                c
            }
            None => Command::new(TAPNET),
        };
        cmd.arg("up").arg(&file.path);
        RunningLab::launch(cmd, name, namespaces, Some(file), vec![TAPNET.into()])
    }

    /// Starts `tapnet up` with no file: the embedded default lab.
    pub fn start_default(namespaces: &[&str]) -> RunningLab {
        let mut cmd = Command::new(TAPNET);
        cmd.arg("up");
        let namespaces: Vec<String> = namespaces.iter().map(|s| s.to_string()).collect();
        RunningLab::launch(cmd, "lab", &namespaces, None, vec![TAPNET.into()])
    }

    /// Starts `PREFIX... tapnet up [FILE]` and waits for its ready line: the lab in
    /// `text`, or the embedded default lab when `text` is None. PREFIX runs tapnet
    /// elsewhere, e.g. `["nsenter", "--net=/run/netns/HOST"]` or
    /// `["ip", "netns", "exec", HOST]` (which also gives tapnet a private mount
    /// namespace); it must exec tapnet, so that signals sent to the child reach it.
    pub fn start_via(
        prefix: &[&str],
        name: &str,
        namespaces: &[String],
        text: Option<&str>,
    ) -> RunningLab {
        let file = text.map(LabFile::new);
        let (program, args) = match prefix.split_first() {
            Some((program, args)) => (*program, args),
            None => (TAPNET, &[][..]),
        };
        let mut cmd = Command::new(program);
        cmd.args(args);
        if !prefix.is_empty() {
            cmd.arg(TAPNET);
        }
        cmd.arg("up");
        if let Some(file) = &file {
            cmd.arg(&file.path);
        }
        RunningLab::launch(cmd, name, namespaces, file, vec![TAPNET.into()])
    }

    /// Starts `command` (a `tapnet up` however it is run; its stdout and stderr are
    /// taken here) and waits for its ready line; `client` is how `show` runs tapnet.
    pub fn launch(
        mut command: Command,
        name: &str,
        namespaces: &[String],
        file: Option<LabFile>,
        client: Vec<String>,
    ) -> RunningLab {
        let mut lab = RunningLab {
            name: name.to_string(),
            namespaces: namespaces.to_vec(),
            ready_line: String::new(),
            pid: 0,
            client,
            child: None,
            _file: file,
        };
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tapnet");
        lab.wait_ready(child);
        lab
    }

    fn wait_ready(&mut self, mut child: Child) {
        self.pid = child.id();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        self.child = Some(child);
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => self.ready_line = line,
            Err(_) => {
                let out = self.stop();
                panic!(
                    "tapnet did not get ready; status {:?}, stderr:\n{}",
                    out.0, out.1
                );
            }
        }
    }

    /// `tapnet show WHAT --json` for this lab.
    pub fn show(&self, what: &str) -> serde_json::Value {
        let mut cmd: Vec<&str> = self.client.iter().map(String::as_str).collect();
        cmd.extend(["show", what, "--lab", &self.name, "--json"]);
        let out = run(&cmd, 10);
        assert!(
            out.status.success(),
            "show {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("show --json gives JSON")
    }

    /// `show WHAT`, asked again every 100 ms until `done` holds of the answer or
    /// `within` has passed: the last answer either way, for the caller to assert on
    /// (a busy machine may take a while to forward what a test just sent).
    pub fn show_until(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let v = self.show(what);
            if done(&v) || start.elapsed() > within {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The `show ports` entry of a port.
    pub fn port(&self, name: &str) -> serde_json::Value {
        let v = self.show("ports");
        v["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no port {name} in {v}"))
    }

    /// Sends a signal and waits for tapnet to exit; returns (exit code, stderr).
    pub fn stop_with(&mut self, signal: i32) -> (Option<i32>, String) {
        let Some(mut child) = self.child.take() else {
            return (None, String::new());
        };
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
        }
        (status.and_then(|s| s.code()), err)
    }

    pub fn stop(&mut self) -> (Option<i32>, String) {
        self.stop_with(libc::SIGTERM)
    }
}

impl Drop for RunningLab {
    fn drop(&mut self) {
        self.stop();
        for ns in &self.namespaces {
            if netns_exists(ns) {
                let _ = run(&["ip", "netns", "del", ns], 10);
            }
        }
    }
}

/// A namespace made by the test itself (not by tapnet), deleted on drop.
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn new(tag: &str) -> TestNetns {
        let name = unique(tag);
        let out = run(&["ip", "netns", "add", &name], 10);
        assert!(out.status.success(), "ip netns add {name}");
        TestNetns { name }
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.name], 10);
    }
}

/// Every TAP device in the root namespace whose name starts with `prefix`.
pub fn root_taps(prefix: &str) -> Vec<String> {
    let out = run(&["ip", "-o", "link", "show", "type", "tun"], 10);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// A child process killed (and waited for) on drop.
pub struct Reap(pub Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server running in a namespace, killed on drop. `ip netns exec` execs the command,
/// so the child is the server itself and the kill reaches it.
pub struct Background(Child);

impl Background {
    pub fn spawn(ns: &str, cmd: &[&str]) -> Background {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Background(child)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tapnet capture PORT -w FILE` on `lab` in the background (killed on drop), returned
/// once the capture is on: the lab writes the pcap header only once its datapath took
/// the capture, so every frame from then on is in the file.
pub fn capture_to_file(lab: &RunningLab, port: &str, file: &std::path::Path) -> Reap {
    let (program, args) = lab.client.split_first().expect("a client command");
    let child = Command::new(program)
        .args(args)
        .args(["capture", port, "--lab", &lab.name, "-w"])
        .arg(file)
        .spawn()
        .expect("tapnet capture");
    let capture = Reap(child);
    wait_pcap_header(file);
    capture
}

/// Waits (up to 10 s) until `file` holds a pcap header (24 bytes): a `tapnet capture`
/// writing there has begun.
pub fn wait_pcap_header(file: &std::path::Path) {
    for _ in 0..200 {
        if std::fs::metadata(file).is_ok_and(|m| m.len() >= 24) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `cmd` again every 100 ms until its stdout satisfies `done` or `within` has
/// passed; the last stdout either way, for the caller to assert on (a capture file
/// being written, read until it holds what was sent).
pub fn run_until(cmd: &[&str], within: Duration, done: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let text = String::from_utf8_lossy(&run(cmd, 20).stdout).to_string();
        if done(&text) || start.elapsed() > within {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A program (tcpdump) run in `ns` in the background, bounded by `timeout`, its stdout
/// kept for [`Watcher::finish`]; killed on drop.
pub struct Watcher {
    child: Option<Child>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Watcher {
    /// Starts `cmd` in `ns` and returns once a line of its stderr contains `ready`
    /// (tcpdump's "listening on": it sees what is sent from now on), or it ended, or
    /// `timeout_s` passed.
    pub fn start(ns: &str, cmd: &[&str], timeout_s: u32, ready: &str) -> Watcher {
        let t = timeout_s.to_string();
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "timeout", "-k", "2", &t])
            .args(cmd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let ready = ready.to_string();
        // Reads stderr to its end (a closed pipe would kill the program with SIGPIPE
        // when it writes its summary), saying when the ready line came.
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(&ready) {
                    let _ = tx.send(());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let _ = rx.recv_timeout(Duration::from_secs(u64::from(timeout_s)));
        Watcher {
            child: Some(child),
            stderr: Some(reader),
        }
    }

    /// Waits for the program to end; its stdout.
    pub fn finish(mut self) -> String {
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        if let Some(reader) = self.stderr.take() {
            let _ = reader.join();
        }
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM, which `timeout` (the child, through exec) passes on to the
            // program; SIGKILL would leave the program running.
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

/// A test "host" namespace whose only link is a veth to a test "outside" namespace:
/// tapnet runs in the host, so masquerade and forwards reach nothing but the outside.
/// Host is 10.250.0.1/24, outside 10.250.0.2/24. The outside is also a router (the
/// host's default gateway) to a "far" namespace, 10.249.0.2/24, so that a path from
/// the host has a hop on it, as on a real network (traceroute). The host namespace
/// keeps every default a fresh namespace has (no sysctl is changed there); the
/// outside forwards, being a router.
pub struct HostAndOutside {
    pub host: TestNetns,
    pub outside: TestNetns,
    pub far: TestNetns,
}

pub const HOST_IP: &str = "10.250.0.1";
pub const OUTSIDE_IP: &str = "10.250.0.2";
pub const FAR_IP: &str = "10.249.0.2";
pub const HOST_IP6: &str = "fd00:250::1";
pub const FAR_IP6: &str = "fd00:249::2";
pub const OUTSIDE_IP6: &str = "fd00:250::2";

/// Runs each step (a command line), asserting it succeeds.
pub fn steps(steps: &[&[&str]]) {
    for step in steps {
        let out = run(step, 10);
        assert!(
            out.status.success(),
            "{step:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl HostAndOutside {
    pub fn new() -> HostAndOutside {
        let host = TestNetns::new("h");
        let outside = TestNetns::new("o");
        let far = TestNetns::new("f");
        let (h, o, f) = (host.name.as_str(), outside.name.as_str(), far.name.as_str());
        steps(&[
            &[
                "ip", "link", "add", "veth0", "netns", h, "type", "veth", "peer", "name", "veth0",
                "netns", o,
            ],
            &[
                "ip", "link", "add", "veth1", "netns", o, "type", "veth", "peer", "name", "veth0",
                "netns", f,
            ],
            &[
                "ip",
                "-n",
                h,
                "addr",
                "add",
                "10.250.0.1/24",
                "dev",
                "veth0",
            ],
            &[
                "ip",
                "-n",
                o,
                "addr",
                "add",
                "10.250.0.2/24",
                "dev",
                "veth0",
            ],
            &[
                "ip",
                "-n",
                o,
                "addr",
                "add",
                "10.249.0.1/24",
                "dev",
                "veth1",
            ],
            &[
                "ip",
                "-n",
                f,
                "addr",
                "add",
                "10.249.0.2/24",
                "dev",
                "veth0",
            ],
            &["ip", "-n", h, "link", "set", "veth0", "up"],
            &["ip", "-n", o, "link", "set", "veth0", "up"],
            &["ip", "-n", o, "link", "set", "veth1", "up"],
            &["ip", "-n", f, "link", "set", "veth0", "up"],
            &["ip", "-n", h, "link", "set", "lo", "up"],
            &["ip", "-n", o, "link", "set", "lo", "up"],
            &["ip", "-n", f, "link", "set", "lo", "up"],
            &[
                "ip",
                "-n",
                h,
                "route",
                "add",
                "default",
                "via",
                "10.250.0.2",
            ],
            &[
                "ip",
                "-n",
                f,
                "route",
                "add",
                "default",
                "via",
                "10.249.0.1",
            ],
            &[
                "ip",
                "netns",
                "exec",
                o,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        ]);
        HostAndOutside { host, outside, far }
    }

    /// [`HostAndOutside::new`] with IPv6 on both links too: host [`HOST_IP6`],
    /// outside [`OUTSIDE_IP6`] and fd00:249::1, far [`FAR_IP6`] (no duplicate address
    /// detection wait); the host's default IPv6 route via the outside, which routes
    /// IPv6 too (a test namespace's own setting, as its IPv4 forwarding).
    pub fn dual_stack() -> HostAndOutside {
        let net = HostAndOutside::new();
        let (h, o, f) = (
            net.host.name.as_str(),
            net.outside.name.as_str(),
            net.far.name.as_str(),
        );
        let addr = |ns: &str, a: &str, dev: &str| -> Vec<String> {
            ["ip", "-n", ns, "addr", "add", a, "dev", dev, "nodad"]
                .map(String::from)
                .to_vec()
        };
        let cmds = [
            addr(h, "fd00:250::1/64", "veth0"),
            addr(o, "fd00:250::2/64", "veth0"),
            addr(o, "fd00:249::1/64", "veth1"),
            addr(f, "fd00:249::2/64", "veth0"),
        ];
        let cmds: Vec<Vec<&str>> = cmds
            .iter()
            .map(|c| c.iter().map(String::as_str).collect())
            .collect();
        let cmds: Vec<&[&str]> = cmds.iter().map(Vec::as_slice).collect();
        steps(&cmds);
        steps(&[
            &[
                "ip",
                "-n",
                h,
                "-6",
                "route",
                "add",
                "default",
                "via",
                "fd00:250::2",
            ],
            &[
                "ip",
                "-n",
                f,
                "-6",
                "route",
                "add",
                "default",
                "via",
                "fd00:249::1",
            ],
            &[
                "ip",
                "netns",
                "exec",
                o,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.forwarding=1",
            ],
        ]);
        net
    }
}

/// Python's http.server serving `dir`, writing each client's address to `log`;
/// reverse DNS (getfqdn) is switched off so it starts at once anywhere. Returns once
/// it listens: Python may take a second to start on a busy machine, and a client
/// before that is refused.
pub fn http_server(
    ns: &str,
    ip: &str,
    port: u16,
    dir: &std::path::Path,
    log: &std::path::Path,
) -> Background {
    let argv = http_server_argv(ip, port, dir, log);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let server = Background::spawn(ns, &argv);
    wait_listening_on(ns, &socket_address(ip, port));
    server
}

/// The command line of [`http_server`], to run it elsewhere (`tapnet exec`).
pub fn http_server_argv(
    ip: &str,
    port: u16,
    dir: &std::path::Path,
    log: &std::path::Path,
) -> Vec<String> {
    const CODE: &str = r#"
import http.server as h, socket, sys, os
socket.getfqdn = lambda *a: "x"
ip, port, d, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.chdir(d)
class Handler(h.SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args):
        with open(log, "a") as f:
            f.write(self.client_address[0] + "\n")
class Server(h.ThreadingHTTPServer):
    address_family = socket.AF_INET6 if ":" in ip else socket.AF_INET
Server((ip, port), Handler).serve_forever()
"#;
    [
        "python3",
        "-c",
        CODE,
        ip,
        &port.to_string(),
        dir.to_str().unwrap(),
        log.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

/// A UDP echo server on ip:port, returned once its socket is bound: a datagram sent
/// before that is lost (Python may take a second to start on a busy machine).
pub fn udp_echo(ns: &str, ip: &str, port: u16) -> Background {
    const CODE: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    d, a = s.recvfrom(65535)
    s.sendto(d, a)
"#;
    let server = Background::spawn(ns, &["python3", "-c", CODE, ip, &port.to_string()]);
    wait_udp_bound(ns, &socket_address(ip, port));
    server
}

/// `ip:port` as `ss` writes a local address: `10.0.0.2:80`, `[fd00::2]:80`.
pub fn socket_address(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// Sends `msg` to ip:port over UDP from `ns` and returns the answer, if one came
/// within a second (tries a few times, for a server still starting).
pub fn udp_ask(ns: &str, ip: &str, port: u16, msg: &str) -> Option<String> {
    let argv = udp_ask_argv(ip, port, msg);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = ns_run(ns, &argv, 10);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    (!text.is_empty()).then_some(text)
}

/// The command line of [`udp_ask`], to run it elsewhere (`tapnet exec`); it prints the
/// answer.
pub fn udp_ask_argv(ip: &str, port: u16, msg: &str) -> Vec<String> {
    const CODE: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
for _ in range(5):
    s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
    try:
        print(s.recvfrom(65535)[0].decode(), end="")
        break
    except socket.timeout:
        pass
"#;
    ["python3", "-c", CODE, ip, &port.to_string(), msg]
        .map(String::from)
        .to_vec()
}

/// A directory of files for a web server, removed on drop.
pub struct WebRoot {
    pub dir: std::path::PathBuf,
    pub log: std::path::PathBuf,
}

impl WebRoot {
    pub fn new(page: &str) -> WebRoot {
        let dir = std::env::temp_dir().join(unique("www"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("index.html"), page).unwrap();
        let log = std::env::temp_dir().join(format!("{}.log", unique("clients")));
        WebRoot { dir, log }
    }

    /// The client addresses the server logged.
    pub fn clients(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}

impl Drop for WebRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// curl from `ns`, retried while the server starts; the body on success.
pub fn curl(ns: &str, url: &str) -> Option<String> {
    for _ in 0..50 {
        let out = ns_run(ns, &["curl", "-s", "-m", "3", url], 6);
        if out.status.success() {
            return Some(String::from_utf8_lossy(&out.stdout).to_string());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// An iperf3 TCP test from `ns` to ip:port, retried while the server starts; bytes
/// received.
pub fn iperf3(ns: &str, ip: &str, port: u16) -> Option<u64> {
    let p = port.to_string();
    for _ in 0..30 {
        let o = ns_run(ns, &["iperf3", "-c", ip, "-p", &p, "-t", "2", "-J"], 15);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if o.status.success() {
            if let Some(b) = v["end"]["sum_received"]["bytes"].as_u64() {
                eprintln!(
                    "iperf3 {ip}:{port}: {:.2} Gbit/s",
                    v["end"]["sum_received"]["bits_per_second"]
                        .as_f64()
                        .unwrap_or(0.0)
                        / 1e9
                );
                return Some(b);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// Sends one datagram of `size` bytes (a pattern) to ip:port over UDP from `ns` and
/// returns the answer's length if it came whole and unchanged within a second (tries a
/// few times, for a server still starting). The sender lets the kernel fragment.
pub fn udp_ask_big(ns: &str, ip: &str, port: u16, size: usize) -> Option<usize> {
    const CODE: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT: fragments
s.settimeout(1)
msg = bytes(i % 251 for i in range(int(sys.argv[3])))
for _ in range(5):
    s.sendto(msg, (sys.argv[1], int(sys.argv[2])))
    try:
        d = s.recvfrom(65535)[0]
        print(len(d) if d == msg else -1, end="")
        break
    except socket.timeout:
        pass
"#;
    let out = ns_run(
        ns,
        &[
            "python3",
            "-c",
            CODE,
            ip,
            &port.to_string(),
            &size.to_string(),
        ],
        10,
    );
    String::from_utf8_lossy(&out.stdout)
        .parse::<i64>()
        .ok()
        .and_then(|n| usize::try_from(n).ok())
}

/// `traceroute -n` from `ns` to `dst` with `extra` options (`-I`, `-T`), one probe a
/// hop; the hops' addresses in order (`*` for a hop that did not answer).
pub fn traceroute(ns: &str, dst: &str, extra: &[&str]) -> Vec<String> {
    let mut cmd = vec!["traceroute", "-n", "-q", "1", "-w", "2", "-m", "6"];
    cmd.extend_from_slice(extra);
    cmd.push(dst);
    let out = ns_run(ns, &cmd, 40);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
        .collect()
}

/// A TCP echo server on `ip`:`port` in `ns` that writes a line to `log` for each
/// connection: `open` when it is accepted, then `eof` (a clean close) or `reset`
/// (ECONNRESET) as it ends. Returns once it listens.
pub fn tcp_echo_logging(ns: &str, ip: &str, port: u16, log: &std::path::Path) -> Background {
    const CODE: &str = r#"
import socket, sys, threading
ip, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((ip, port))
srv.listen(64)
def serve(c):
    with open(log, "a") as f:
        f.write("open\n")
    how = "eof"
    try:
        while True:
            d = c.recv(4096)
            if not d:
                break
            c.sendall(d)
    except (ConnectionResetError, BrokenPipeError):
        how = "reset"
    with open(log, "a") as f:
        f.write(how + "\n")
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;
    let server = Background::spawn(
        ns,
        &[
            "python3",
            "-c",
            CODE,
            ip,
            &port.to_string(),
            log.to_str().unwrap(),
        ],
    );
    wait_listening_on(ns, &socket_address(ip, port));
    server
}

/// Waits (up to 10 s) until something in `ns` listens on TCP `port`: a server started
/// in the background is ready for clients.
pub fn wait_listening(ns: &str, port: u16) {
    wait_listening_until(ns, |w| w.ends_with(&format!(":{port}")));
}

/// Waits (up to 10 s) until a TCP socket in `ns` listens on `local`, as `ss` writes
/// it: `10.0.0.2:80`, `0.0.0.0:80`, `[::1]:8000`.
pub fn wait_listening_on(ns: &str, local: &str) {
    wait_listening_until(ns, |w| w == local);
}

/// Waits (up to 10 s) until a UDP socket in `ns` is bound to `local`, as `ss` writes
/// it (see [`wait_listening_on`]): a server started in the background gets the
/// datagrams sent from now on.
pub fn wait_udp_bound(ns: &str, local: &str) {
    wait_socket_until(ns, "-Hlun", |w| w == local);
}

fn wait_listening_until(ns: &str, local: impl Fn(&str) -> bool) {
    wait_socket_until(ns, "-Hltn", local);
}

fn wait_socket_until(ns: &str, ss_flags: &str, local: impl Fn(&str) -> bool) {
    for _ in 0..200 {
        let out = ns_run(ns, &["ss", ss_flags], 5);
        if String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .any(&local)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// From `ns`, connects to ip:port, exchanges one line, stays idle `idle_s` seconds,
/// then tries again; prints and returns how that went: `answered`, `reset` or
/// `timeout` (retries the first connect while the server starts).
pub fn tcp_idle_then_talk(ns: &str, ip: &str, port: u16, idle_s: u32) -> String {
    const CODE: &str = r#"
import socket, sys, time
ip, port, idle = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
for _ in range(50):
    try:
        s = socket.create_connection((ip, port), timeout=2)
        break
    except OSError:
        time.sleep(0.1)
s.settimeout(3)
s.sendall(b"hello\n")
assert s.recv(100) == b"hello\n"
time.sleep(idle)
try:
    s.sendall(b"again\n")
    print("answered" if s.recv(100) == b"again\n" else "reset", end="")
except (ConnectionResetError, BrokenPipeError):
    print("reset", end="")
except socket.timeout:
    print("timeout", end="")
"#;
    let out = ns_run(
        ns,
        &[
            "python3",
            "-c",
            CODE,
            ip,
            &port.to_string(),
            &idle_s.to_string(),
        ],
        idle_s + 20,
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A container forging neighbour discovery (python3; argv[1]: the address it claims):
/// three neighbour advertisements claiming the address at its MAC, and three router
/// advertisements of its own, from fe80::bad to all nodes.
pub const FORGE_ND: &str = r#"
import socket, struct, sys
mac = open("/sys/class/net/eth0/address").read().strip()
me = bytes(int(x, 16) for x in mac.split(":"))
def frame(dst_mac, src_ip, dst_ip, msg):
    ip = struct.pack("!IHBB", 0x60000000, len(msg), 58, 255) + socket.inet_pton(socket.AF_INET6, src_ip) + socket.inet_pton(socket.AF_INET6, dst_ip)
    return dst_mac + me + b"\x86\xdd" + ip + msg
gw = socket.inet_pton(socket.AF_INET6, sys.argv[1])
na = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + gw + bytes([2, 1]) + me
ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
allnodes = b"\x33\x33\x00\x00\x00\x01"
for _ in range(3):
    s.send(frame(allnodes, "fe80::bad", "ff02::1", na))
    s.send(frame(allnodes, "fe80::bad", "ff02::1", ra))
"#;

/// Two hosts joined by one veth `u0`, with `a_addr` and `b_addr` on its ends (IPv6
/// ones without duplicate address detection).
pub fn hosts_linked(a_addr: &str, b_addr: &str) -> (TestNetns, TestNetns) {
    let (a, b) = (TestNetns::new("h"), TestNetns::new("h"));
    steps(&[&[
        "ip", "link", "add", "u0", "netns", &a.name, "type", "veth", "peer", "name", "u0", "netns",
        &b.name,
    ]]);
    for (ns, addr) in [(&a.name, a_addr), (&b.name, b_addr)] {
        let mut add = vec!["ip", "-n", ns, "addr", "add", addr, "dev", "u0"];
        if addr.contains(':') {
            add.push("nodad");
        }
        steps(&[&add, &["ip", "-n", ns, "link", "set", "u0", "up"]]);
    }
    (a, b)
}
