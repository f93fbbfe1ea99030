//! Bad input: lab files with problems, unsupported sections, no root, a device name
//! that is taken. Each gets a clear message and the right exit status, and nothing is
//! left on the host.

mod common;

use common::*;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn check_reports_every_problem_with_file_line_and_column() {
    let ns = unique("n");
    let text = format!(
        r#"name = "bad"

[[bridge]]
name = "br0"
subnet = "10.203.0.0/24"
mtu = "big"

[[port]]
name = "a"
bridge = "br9"
netns = "{ns}"

[[port]]
name = "b"
bridge = "br0"
ip = "10.9.9.9/24"
colour = "red"
"#
    );
    let file = LabFile::new(&text);
    let path = file.path.to_str().unwrap();
    let out = run(&[TAPNET, "check", path], 10);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.len() >= 4, "{err}");
    for line in &lines {
        assert!(line.starts_with(&format!("{path}:")), "{line}");
    }
    assert!(err.contains(&format!("{path}:6:7:")), "mtu at 6:7: {err}");
    assert!(
        err.contains(&format!("{path}:10:10:")),
        "bridge at 10:10: {err}"
    );
    assert!(err.contains(&format!("{path}:16:6:")), "ip at 16:6: {err}");
    assert!(
        err.contains(&format!("{path}:17:1:")),
        "colour at 17:1: {err}"
    );

    // `up` refuses the same file the same way and creates nothing.
    let out = run(&[TAPNET, "up", path], 10);
    assert_eq!(out.status.code(), Some(1));
    assert!(!netns_exists(&ns));
}

/// Labs that are wrong whatever the host: `check` refuses each, and `up` refuses it
/// the same way before touching the host (the same FILE:LINE:COL message, exit status
/// 1, nothing built), where it used to get as far as building (a mirror whose name a
/// port's TAP takes, either way round, failed while building with status 2) or binding
/// (a UDP forward on the VXLAN endpoint's port was "cannot bind it on this host").
#[test]
fn check_and_up_refuse_the_same_labs_with_the_same_message() {
    let ns = unique("n");
    let dev = unique("m");
    let bridge = |name: &str| LabText::new(name).bridge("br0", "");
    // Each lab, given its name, and the one problem in it.
    type Lab<'a> = Box<dyn Fn(&str) -> LabText + 'a>;
    let cases: Vec<(Lab, String)> = vec![
        // A mirror named as an earlier port's TAP in tapnet's own namespace...
        (
            Box::new(|name| {
                bridge(name)
                    .port("a", "br0", "", "")
                    .with("ifname", &dev)
                    .port("b", "br0", &ns, "")
                    .with("mirror", &dev)
            }),
            format!("12:10: mirror `{dev}` is already the interface of port `a` in tapnet's own namespace"),
        ),
        // ... or a port's TAP named as an earlier mirror.
        (
            Box::new(|name| {
                bridge(name)
                    .port("a", "br0", &ns, "")
                    .with("mirror", &dev)
                    .port("b", "br0", "", "")
                    .with("ifname", &dev)
            }),
            format!("12:10: interface `{dev}` in tapnet's own namespace is already the mirror of port `a`"),
        ),
        // A UDP forward on the VXLAN endpoint's port and address.
        (
            Box::new(|name| {
                LabText::new(name)
                    .bridge("br0", "10.208.0.0/24")
                    .with("vni", 42)
                    .port("a", "br0", &ns, "10.208.0.2/24")
                    .forward("udp", "127.0.0.1:4789", "10.208.0.2:53")
                    .vxlan("127.0.0.1:4789", &["127.0.0.2:4789"])
            }),
            "16:10: `listen` 127.0.0.1:4789: udp port 4789 is already forwarded by the [[forward]] on line 11".to_string(),
        ),
        // Masquerade with no routed bridge, a forward to an address on no routed bridge,
        // a bridge MTU no TAP takes, an interface name the kernel would rewrite.
        (
            Box::new(|name| bridge(name).port("a", "br0", &ns, "").nat()),
            "8:1: masquerade needs a bridge with a `subnet` or `subnet6`: its gateway is the containers' way out"
                .to_string(),
        ),
        (
            Box::new(|name| {
                bridge(name)
                    .port("a", "br0", &ns, "10.208.1.2/24")
                    .forward("", "8080", "10.208.1.2:80")
            }),
            "11:6: forward to 10.208.1.2:80: that address is on no bridge with a `subnet` (or \
             `subnet6`), so its replies could not come back (give its bridge one)"
                .to_string(),
        ),
        (
            Box::new(|name| bridge(name).with("mtu", 65535).port("a", "br0", &ns, "")),
            "4:7: `mtu` must be between 68 and 65521, not 65535".to_string(),
        ),
        (
            Box::new(|name| bridge(name).port("a", "br0", &ns, "").with("ifname", "eth%d")),
            "8:10: ifname `eth%d` is not a valid interface name (1 to 15 bytes, no `/`, `:` \
             or whitespace, not `.` or `..`)"
                .to_string(),
        ),
    ];
    for (lab, expected) in &cases {
        let name = unique("l");
        let file = LabFile::new(&lab(&name).text());
        let path = file.path.to_str().unwrap();
        let want = format!("{path}:{expected}\n");
        for command in ["check", "up"] {
            let out = run(&[TAPNET, command, path], 20);
            assert_eq!(out.status.code(), Some(1), "{command}: {}", stderr(&out));
            assert_eq!(stderr(&out), want, "{command}");
            assert!(out.stdout.is_empty(), "{command}: {want}");
        }
        assert!(!netns_exists(&ns), "up made namespace {ns}: {want}");
        assert!(root_taps(&dev).is_empty(), "up left a TAP {dev}: {want}");
        let socket = format!("/run/tapnet/{name}.sock");
        assert!(!std::path::Path::new(&socket).exists(), "up left {socket}");
    }
}

#[test]
fn check_accepts_a_good_file_silently() {
    let out = run(&[TAPNET, "example"], 10);
    let file = LabFile::new(&String::from_utf8_lossy(&out.stdout));
    let out = run(&[TAPNET, "check", file.path.to_str().unwrap()], 10);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = run(&[TAPNET, "check", "/nonexistent/lab.toml"], 10);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("/nonexistent/lab.toml:1:1: cannot read"));
}

#[test]
fn an_unbindable_vxlan_listen_refuses_the_lab_before_anything_is_built() {
    // 10.204.9.1 is on no interface here: the bind fails, nothing is sent anywhere.
    let ns = unique("n");
    let text = LabText::new(&unique("l"))
        .bridge("br0", "10.204.0.0/24")
        .with("vni", 42)
        .port("web", "br0", &ns, "10.204.0.3/24")
        .vxlan("10.204.9.1:4789", &["10.204.9.2:4789"])
        .text();
    let file = LabFile::new(&text);
    let path = file.path.to_str().unwrap();
    let out = run(&[TAPNET, "up", path], 10);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "{path}:11:1: vxlan listen 10.204.9.1:4789: cannot bind"
        )),
        "{err}"
    );
    assert!(!netns_exists(&ns));
}

#[test]
fn without_root_a_namespace_of_roots_is_refused_in_one_line() {
    // An ordinary user's lab naming root's namespace by path: it belongs to the host's
    // user namespace, which only root may act in. One line, exit 2, nothing made.
    let held = TestNetns::new("n");
    let home = common::rootless::UserHome::new();
    let name = unique("l");
    let text = LabText::new(&name)
        .bridge("br0", "")
        .port("a", "br0", &format!("/run/netns/{}", held.name), "")
        .text();
    let file = LabFile::new(&text);
    let out = home.run(&["up", file.path.to_str().unwrap()], 10);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("belongs to the host's user namespace, which only root may act in"),
        "{err}"
    );
    assert!(!home.has_socket(&name));
}

#[test]
fn a_taken_device_name_is_refused_and_nothing_is_left() {
    let existing = TestNetns::new("x");
    let out = run(
        &[
            "ip",
            "-n",
            &existing.name,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "peer0",
        ],
        10,
    );
    assert!(out.status.success());
    let fresh = unique("n");
    let text = LabText::new(&unique("l"))
        .bridge("br0", "")
        .port("a", "br0", &fresh, "")
        .port("b", "br0", &existing.name, "")
        .text();
    let file = LabFile::new(&text);
    let out = run(&[TAPNET, "up", file.path.to_str().unwrap()], 20);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("`eth0` already exists"), "{err}");
    assert!(!netns_exists(&fresh), "half-built namespace left behind");
    assert!(netns_exists(&existing.name));
}

#[test]
fn a_lab_name_that_is_already_running_is_refused() {
    let name = unique("l");
    let ns = unique("n");
    let text = LabText::new(&name)
        .bridge("br0", "")
        .port("a", "br0", &ns, "")
        .text();
    let lab = RunningLab::start(&name, std::slice::from_ref(&ns), &text);
    let other = unique("n");
    let file = LabFile::new(&text.replace(&ns, &other));
    let out = run(&[TAPNET, "up", file.path.to_str().unwrap()], 20);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already running"), "{}", stderr(&out));
    assert!(!netns_exists(&other));
    // The very same file: told the lab runs (and by which process), not that a
    // device is taken, whose removal would break the running lab.
    let same = LabFile::new(&text);
    let out = run(&[TAPNET, "up", same.path.to_str().unwrap()], 20);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "lab `{name}` is already running (pid {})",
            lab.pid
        )),
        "{err}"
    );
    assert!(!err.contains("already exists"), "{err}");
    assert_eq!(lab.port("a")["up"], true, "the running lab is untouched");
}

#[test]
fn show_for_a_lab_that_is_not_running_fails_clearly() {
    let out = run(&[TAPNET, "show", "ports", "--lab", &unique("none")], 10);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is not running"), "{}", stderr(&out));
    let out = run(&[TAPNET, "show", "colours"], 10);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn another_users_lab_is_said_to_be_theirs() {
    let name = unique("l");
    let ns = unique("n");
    let text = LabText::new(&name)
        .bridge("br0", "")
        .port("a", "br0", &ns, "")
        .text();
    let _lab = RunningLab::start(&name, std::slice::from_ref(&ns), &text);
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        TAPNET,
    ];
    let mut named = nobody.to_vec();
    named.extend_from_slice(&["show", "ports", "--lab", &name]);
    let out = run(&named, 10);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("lab `{name}` belongs to another user")),
        "{err}"
    );
    let mut any = nobody.to_vec();
    any.extend_from_slice(&["show", "ports"]);
    let err = stderr(&run(&any, 10));
    assert!(
        err.contains("run by another user") && err.contains(&name),
        "{err}"
    );
}

#[test]
fn a_namespace_with_a_default_route_of_its_own_is_refused_clearly() {
    let existing = TestNetns::new("x");
    steps(&[
        &[
            "ip",
            "-n",
            &existing.name,
            "link",
            "add",
            "d0",
            "type",
            "veth",
            "peer",
            "name",
            "d1",
        ],
        &[
            "ip",
            "-n",
            &existing.name,
            "addr",
            "add",
            "10.66.0.1/24",
            "dev",
            "d0",
        ],
        &["ip", "-n", &existing.name, "link", "set", "d0", "up"],
        &[
            "ip",
            "-n",
            &existing.name,
            "route",
            "add",
            "default",
            "via",
            "10.66.0.2",
        ],
    ]);
    let text = LabText::new(&unique("l"))
        .bridge("br0", "10.67.0.0/24")
        .port("a", "br0", &existing.name, "10.67.0.2/24")
        .text();
    let file = LabFile::new(&text);
    let out = run(&[TAPNET, "up", file.path.to_str().unwrap()], 20);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("already has a default route"), "{err}");
    assert!(err.contains("route del default"), "{err}");
    // Nothing of the lab is left in the namespace, which is kept.
    let links = ns_run(&existing.name, &["ip", "-o", "link"], 5);
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains("eth0"),
        "the TAP was left behind"
    );
}
