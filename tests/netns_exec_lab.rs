//! tapnet started as `ip netns exec HOSTNS tapnet up LAB`. iproute2 gives it a private
//! mount namespace (and makes `/` a slave), so a namespace tapnet bind-mounted at
//! /run/netns/NAME there would be seen by nobody else. These tests check that the
//! lab's namespaces can be entered from outside while it runs, and that nothing (no
//! /run/netns entry, no mount) is left once it is gone.

mod common;

use common::*;

/// A lab with two containers on one bridge: `a` made by tapnet, `b` made beforehand by
/// the test; web traffic to b's port 80 is published on the host's loopback, port 8080.
fn lab_text(name: &str, a: &str, b: &str) -> String {
    LabText::new(name)
        .bridge("br0", "10.91.0.0/24")
        .port("a", "br0", a, "10.91.0.2/24")
        .port("b", "br0", b, "10.91.0.3/24")
        .forward("", "127.0.0.1:8080", "10.91.0.3:80")
        .text()
}

#[test]
fn namespaces_made_under_ip_netns_exec_are_entered_from_outside() {
    let host = TestNetns::new("h");
    let _ = run(&["ip", "-n", &host.name, "link", "set", "lo", "up"], 10);
    let existing = TestNetns::new("b");
    let (name, a) = (unique("lab"), unique("a"));
    let text = lab_text(&name, &a, &existing.name);
    let mut lab = RunningLab::start_via(
        &["ip", "netns", "exec", &host.name],
        &name,
        std::slice::from_ref(&a),
        Some(&text),
    );
    let ready = format!("ready: lab {name}, 2 ports, ");
    assert!(lab.ready_line.starts_with(&ready), "{}", lab.ready_line);

    // The namespace tapnet made is mounted where the test (outside) sees it.
    assert!(
        netns_exists(&a) && netns_mounted(&a),
        "{a} not mounted here"
    );
    // Entered from outside: each container pings the other.
    assert!(ping(&a, "10.91.0.3", 3), "a -> b");
    assert!(ping(&existing.name, "10.91.0.2", 3), "b -> a");
    // The control socket answers from outside too.
    assert_eq!(lab.port("a")["netns"], a.as_str());
    // tapnet runs in the host namespace: its forward is on that namespace's loopback.
    let root = WebRoot::new("through the host namespace\n");
    let _server = http_server(&existing.name, "10.91.0.3", 80, &root.dir, &root.log);
    assert_eq!(
        curl(&host.name, "http://127.0.0.1:8080/").as_deref(),
        Some("through the host namespace\n")
    );

    let (code, stderr) = lab.stop_with(libc::SIGINT);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        !stderr.contains("warning") && !stderr.contains("could not"),
        "tapnet said: {stderr}"
    );
    // Nothing left of the namespace tapnet made; the one it found is kept.
    assert!(!netns_exists(&a), "/run/netns/{a} left behind");
    assert!(!netns_mounted(&a), "a mount at /run/netns/{a} left behind");
    assert!(netns_exists(&existing.name) && netns_mounted(&existing.name));
    assert!(netns_exists(&host.name));
}

#[test]
fn a_killed_run_under_ip_netns_exec_is_cleaned_up_by_the_next() {
    let host = TestNetns::new("h");
    let (name, a, b) = (unique("lab"), unique("a"), unique("b"));
    let text = LabText::new(&name)
        .bridge("br0", "")
        .port("a", "br0", &a, "10.92.0.2/24")
        .port("b", "br0", &b, "10.92.0.3/24")
        .text();
    let namespaces = [a.clone(), b.clone()];
    let via = ["ip", "netns", "exec", host.name.as_str()];
    let mut first = RunningLab::start_via(&via, &name, &namespaces, Some(&text));
    assert!(ping(&a, "10.92.0.3", 2));
    // Killed: no teardown, so its namespaces stay (mounted where everyone sees them).
    first.stop_with(libc::SIGKILL);
    assert!(netns_mounted(&a) && netns_mounted(&b));

    // The next run, from another private mount namespace, removes and remakes them.
    let mut second = RunningLab::start_via(&via, &name, &namespaces, Some(&text));
    assert!(ping(&b, "10.92.0.2", 2));
    let (code, stderr) = second.stop_with(libc::SIGTERM);
    assert_eq!(code, Some(0), "{stderr}");
    for ns in [&a, &b] {
        assert!(
            !netns_exists(ns) && !netns_mounted(ns),
            "{ns} left behind; stderr: {stderr}"
        );
    }
}
