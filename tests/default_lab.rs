//! The README's first command: `tapnet up` with no file runs the embedded default lab,
//! containers `db` and `web` on br0, and they reach each other.

mod common;

use common::*;

#[test]
fn default_lab_runs_and_web_pings_db() {
    // The default lab's namespaces have fixed names; this is the only test using them.
    for ns in ["db", "web"] {
        assert!(
            !netns_exists(ns),
            "namespace {ns} already exists on this machine; this test needs it free"
        );
    }
    let mut lab = RunningLab::start_default(&["db", "web"]);
    assert_eq!(lab.ready_line, "ready: lab lab, 2 ports");
    assert!(ping("web", "172.16.1.2", 3));
    assert!(ping("db", "172.16.1.3", 3));
    let (code, stderr) = lab.stop_with(libc::SIGINT);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!netns_exists("db") && !netns_exists("web"));
}
