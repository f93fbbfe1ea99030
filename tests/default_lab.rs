//! The README's first command: `tapnet up` with no file runs the embedded default lab:
//! containers `db` and `web` on br0, web's port 80 published on the host's loopback
//! as 127.0.0.1:8080, and masquerade.
//!
//! Because the default lab masquerades, tapnet runs here inside a test "host"
//! namespace whose only link is a veth to a test "outside" namespace (entered with
//! nsenter, which keeps the mount namespace), so nothing can leave the machine; the
//! host's loopback is that namespace's.

mod common;

use common::*;

#[test]
fn default_lab_pings_and_serves_web_on_the_hosts_loopback() {
    // The default lab's namespaces have fixed names; this is the only test using them.
    for ns in ["db", "web"] {
        assert!(
            !netns_exists(ns),
            "namespace {ns} already exists on this machine; this test needs it free"
        );
    }
    let net = HostAndOutside::new();
    let enter = format!("--net=/run/netns/{}", net.host.name);
    let mut lab = RunningLab::start_via(
        &["nsenter", &enter],
        "lab",
        &["db".to_string(), "web".to_string()],
        None,
    );
    assert!(
        lab.ready_line.starts_with("ready: lab lab, 2 ports, "),
        "{}",
        lab.ready_line
    );

    // The containers reach each other.
    assert!(ping("web", "172.16.1.2", 3), "web -> db");
    assert!(ping("db", "172.16.1.3", 3), "db -> web");

    // A web server in web, reached from the host at 127.0.0.1:8080.
    let root = WebRoot::new("hello from web\n");
    let _server = http_server("web", "172.16.1.3", 80, &root.dir, &root.log);
    let body = curl(&net.host.name, "http://127.0.0.1:8080/");
    assert_eq!(body.as_deref(), Some("hello from web\n"));
    // A client on the host's loopback cannot be answered directly from inside the
    // lab: web sees it come from the gateway.
    assert_eq!(root.clients(), vec!["172.16.1.1".to_string()]);
    let fwd = lab.show("forwards");
    assert_eq!(fwd["forwards"][0]["listen"], "127.0.0.1:8080", "{fwd}");

    let (code, stderr) = lab.stop_with(libc::SIGINT);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!netns_exists("db") && !netns_exists("web"));
}
