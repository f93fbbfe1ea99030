//! QEMU VMs on a lab: a `[[port]] qemu = PATH` socket that QEMU's `-netdev stream`
//! connects to. The "VM" is QEMU itself with no guest, relaying frames between that
//! socket and a TAP in a test namespace (a hub joining a stream netdev and a tap
//! netdev), so the namespace behind the TAP stands for the guest.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// QEMU joining the lab's socket `socket` to TAP `qtap0` in namespace `ns`, which it
/// then configures with `ip`. Killed on drop.
fn start_vm(ns: &str, socket: &std::path::Path, ip: &str) -> Reap {
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "qemu-system-x86_64"])
        .args(["-machine", "none", "-nodefaults", "-display", "none"])
        .args([
            "-netdev",
            &format!(
                "stream,id=s0,server=off,addr.type=unix,addr.path={}",
                socket.display()
            ),
        ])
        .args([
            "-netdev",
            "tap,id=t0,ifname=qtap0,script=no,downscript=no",
            "-netdev",
            "hubport,id=h0,hubid=0,netdev=s0",
            "-netdev",
            "hubport,id=h1,hubid=0,netdev=t0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64");
    let vm = Reap(child);
    // QEMU has made its TAP once the link exists.
    for _ in 0..200 {
        if run(&["ip", "-n", ns, "link", "show", "qtap0"], 5)
            .status
            .success()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    // A restarted QEMU makes a new TAP: the old address went with the old one.
    let _ = run(&["ip", "-n", ns, "addr", "add", ip, "dev", "qtap0"], 5);
    steps(&[
        &["ip", "-n", ns, "link", "set", "qtap0", "up"],
        &["ip", "-n", ns, "link", "set", "lo", "up"],
    ]);
    vm
}

#[test]
fn a_qemu_vm_joins_the_bridge_and_its_port_follows_the_vm() {
    let guest = TestNetns::new("g");
    let (name, c) = (unique("l"), unique("n"));
    let socket = std::env::temp_dir().join(format!("{}.sock", unique("vm")));
    let text = LabText::new(&name)
        .bridge("br0", "10.91.0.0/24")
        .port("c", "br0", &c, "10.91.0.3/24")
        .port("vm", "br0", "", "")
        .with("qemu", socket.to_str().unwrap())
        .text();
    let lab = RunningLab::start(&name, std::slice::from_ref(&c), &text);
    // No VM yet: the port is there, with nobody at the other end.
    let vm_port = lab.port("vm");
    assert_eq!(vm_port["link_down"], true, "{vm_port}");
    assert_eq!(vm_port["kind"], "qemu", "{vm_port}");

    let vm = start_vm(&guest.name, &socket, "10.91.0.9/24");
    // QEMU connects its stream on its own time (its TAP may be there first): frames
    // go once the port is up.
    lab.show_until("ports", Duration::from_secs(10), |v| {
        v["ports"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["name"] == "vm" && p["link_down"] == false)
        })
    });
    assert!(ping(&guest.name, "10.91.0.3", 3), "guest -> container");
    assert!(ping(&c, "10.91.0.9", 3), "container -> guest");
    assert!(ping(&guest.name, "10.91.0.1", 2), "guest -> gateway");
    assert_eq!(lab.port("vm")["link_down"], false);
    // TCP from the container: its TSO super-frames are cut for the VM's stream.
    let _server = Background::spawn(&guest.name, &["iperf3", "-s", "-p", "5401"]);
    let got = iperf3(&c, "10.91.0.9", 5401);
    assert!(
        got.is_some_and(|b| b > 1_000_000),
        "iperf3 container -> VM: {got:?}"
    );

    // The VM goes: its port is down, frames for it are dropped, the rest runs on.
    drop(vm);
    let mut down = false;
    for _ in 0..100 {
        let _ = ns_run(&c, &["ping", "-c", "1", "-W", "0.1", "10.91.0.9"], 3);
        if lab.port("vm")["link_down"] == true {
            down = true;
            break;
        }
    }
    assert!(down, "{}", lab.port("vm"));
    assert!(ping(&c, "10.91.0.1", 2), "the container keeps its gateway");

    // And comes back: up as soon as it connects, before anything is sent to it.
    let _vm = start_vm(&guest.name, &socket, "10.91.0.9/24");
    let mut up = false;
    for _ in 0..50 {
        if lab.port("vm")["link_down"] == false {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(up, "{}", lab.port("vm"));
    assert_eq!(lab.port("vm")["io"]["vm_connects"], 2, "{}", lab.port("vm"));
    assert!(
        ping(&guest.name, "10.91.0.3", 3),
        "guest -> container, again"
    );
    assert_eq!(lab.port("vm")["link_down"], false);

    // exec has no namespace to enter there.
    let out = run(&[TAPNET, "exec", "--lab", &name, "vm", "--", "true"], 10);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is a VM's socket"),
        "{out:?}"
    );
    drop(lab);
    assert!(!socket.exists(), "the socket goes with the lab");
}
