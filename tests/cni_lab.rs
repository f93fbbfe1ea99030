//! The CNI plugin, `tapnet-cni`, called as a container runtime calls it (CNI SPEC.md:
//! the command and container in environment variables, the network configuration on
//! stdin, the result or an error as JSON on stdout), against a running lab with tapnet
//! in a test host namespace.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

const CNI: &str = env!("CARGO_BIN_EXE_tapnet-cni");

/// Runs the plugin: (exit code, stdout as JSON or Null).
fn cni(command: &str, config: &Value, container: &str, netns: &str, ifname: &str) -> (i32, Value) {
    let mut child = Command::new(CNI)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("tapnet-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(config.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), v)
}

fn config(version: &str, lab: &str) -> Value {
    json!({"cniVersion": version, "name": "tn", "type": "tapnet-cni", "lab": lab, "bridge": "br0"})
}

#[test]
fn the_plugin_speaks_cni_to_a_running_lab() {
    let net = HostAndOutside::new();
    let name = unique("l");
    let text = LabText::new(&name)
        .bridge("br0", "10.100.0.0/24")
        .nat()
        .text();
    let mut lab = RunningLab::start_in(Some(&net.host.name), &name, &[], &text);
    let (a, b, c) = (
        TestNetns::new("ca"),
        TestNetns::new("cb"),
        TestNetns::new("cc"),
    );
    let path = |ns: &TestNetns| format!("/run/netns/{}", ns.name);

    // VERSION.
    let (code, v) = cni("VERSION", &config("1.1.0", &name), "", "", "");
    assert_eq!(code, 0);
    assert_eq!(v["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));

    // ADD, 1.1.0: the result names the interface in its sandbox, the address with
    // its gateway, and the default route; the container reaches its gateway.
    let (code, r) = cni("ADD", &config("1.1.0", &name), "ctr-a", &path(&a), "eth0");
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["interfaces"][0]["name"], "eth0");
    assert_eq!(r["interfaces"][0]["sandbox"], path(&a));
    assert_eq!(r["ips"][0]["address"], "10.100.0.2/24");
    assert_eq!(r["ips"][0]["gateway"], "10.100.0.1");
    assert_eq!(r["ips"][0]["interface"], 0);
    assert_eq!(
        r["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": "10.100.0.1"})
    );
    assert!(ping(&a.name, "10.100.0.1", 2));
    let (code, _) = cni("CHECK", &config("1.1.0", &name), "ctr-a", &path(&a), "eth0");
    assert_eq!(code, 0);

    // 0.4.0 and 1.0.0 configs; 0.4.0's ips say their version.
    let (code, r) = cni("ADD", &config("0.4.0", &name), "ctr-b", &path(&b), "net1");
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["ips"][0]["version"], "4");
    assert_eq!(r["interfaces"][0]["name"], "net1");
    assert!(ping(&b.name, "10.100.0.2", 2), "b -> a");

    // portMappings become forwards, reached from the outside namespace.
    let mut with_ports = config("1.0.0", &name);
    with_ports["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 8085, "containerPort": 80, "protocol": "tcp"}]});
    let (code, r) = cni("ADD", &with_ports, "ctr-c", &path(&c), "eth0");
    assert_eq!(code, 0, "{r}");
    let www = WebRoot::new("via cni\n");
    let _server = http_server(&c.name, "0.0.0.0", 80, &www.dir, &www.log);
    let url = format!("http://{HOST_IP}:8085/");
    assert_eq!(curl(&net.outside.name, &url).as_deref(), Some("via cni\n"));

    // DEL is idempotent, and takes the forward with it.
    for _ in 0..2 {
        let (code, v) = cni("DEL", &with_ports, "ctr-c", &path(&c), "eth0");
        assert_eq!(code, 0, "{v}");
    }
    assert!(!lab.show("forwards").to_string().contains("8085"));
    let (code, e) = cni("CHECK", &with_ports, "ctr-c", &path(&c), "eth0");
    assert_eq!(code, 1);
    assert!(e["code"].as_u64().is_some() && e["msg"].is_string(), "{e}");

    // GC: only a's attachment is valid; b's goes.
    let mut gc = config("1.1.0", &name);
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ctr-a", "ifname": "eth0"}]);
    let (code, _) = cni("GC", &gc, "", "", "");
    assert_eq!(code, 0);
    let (code, _) = cni("CHECK", &config("1.1.0", &name), "ctr-b", &path(&b), "net1");
    assert_eq!(code, 1, "b was collected");
    let (code, _) = cni("CHECK", &config("1.1.0", &name), "ctr-a", &path(&a), "eth0");
    assert_eq!(code, 0, "a stays");

    // STATUS while the lab runs, and bad configurations: the spec's error JSON.
    assert_eq!(cni("STATUS", &config("1.1.0", &name), "", "", "").0, 0);
    let cases = [
        (config("1.1.0", "nosuchlab"), "STATUS", 50),
        (config("0.3.1", &name), "ADD", 1),
        (json!({"cniVersion": "1.1.0", "lab": name}), "ADD", 7),
        (Value::Null, "ADD", 6),
    ];
    for (cfg, command, want) in cases {
        let (code, e) = cni(command, &cfg, "ctr-x", &path(&a), "eth1");
        assert_eq!(code, 1, "{cfg}: {e}");
        assert_eq!(e["code"], want, "{cfg}: {e}");
        assert!(e["msg"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    }
    let mut other_bridge = config("1.1.0", &name);
    other_bridge["bridge"] = json!("nosuch");
    let (code, e) = cni("ADD", &other_bridge, "ctr-x", &path(&a), "eth1");
    assert_eq!(code, 1);
    assert!(
        e["details"].as_str().unwrap_or_default().contains("nosuch"),
        "{e}"
    );

    // A DEL after the lab restarted still succeeds (there is nothing left to undo).
    lab.stop();
    let (code, _) = cni("DEL", &config("1.1.0", &name), "ctr-a", &path(&a), "eth0");
    assert_eq!(code, 0);
    // With its last attachment gone, the lab's record goes too.
    assert!(!std::path::Path::new(&format!("/run/tapnet/{name}.cni")).exists());
}
