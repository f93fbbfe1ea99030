//! podman (Debian's 4.3, CNI backend) running containers on a tapnet lab through
//! `tapnet-cni`, chained with the reference `tuning` plugin: no image registry is
//! reached (a busybox-static root filesystem, `--rootfs`), tapnet runs in a test host
//! namespace, and `-p` publishes a container's port there.

mod common;

use std::os::unix::fs::symlink;
use std::path::PathBuf;

use common::*;

const CNI: &str = env!("CARGO_BIN_EXE_tapnet-cni");

/// podman's configuration, storage and a busybox root filesystem in a directory of
/// their own; every container it made is removed on drop, then the directory.
struct Podman {
    dir: PathBuf,
}

impl Podman {
    fn new(lab: &str) -> Podman {
        let dir = std::env::temp_dir().join(unique("pm"));
        let rootfs = dir.join("rootfs");
        for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "www"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/usr/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        let applets = run(&["/usr/bin/busybox", "--list"], 10);
        for applet in String::from_utf8_lossy(&applets.stdout).lines() {
            if applet != "busybox" {
                let _ = symlink("busybox", rootfs.join("bin").join(applet));
            }
        }
        std::fs::write(rootfs.join("www/index.html"), "served by podman\n").unwrap();
        let cni = dir.join("cni");
        std::fs::create_dir(&cni).unwrap();
        std::fs::copy(CNI, cni.join("tapnet-cni")).unwrap();
        for plugin in ["tuning", "loopback"] {
            symlink(format!("/usr/lib/cni/{plugin}"), cni.join(plugin)).unwrap();
        }
        let netd = dir.join("net.d");
        std::fs::create_dir(&netd).unwrap();
        std::fs::write(
            netd.join("tapnet.conflist"),
            format!(
                r#"{{"cniVersion":"1.0.0","name":"tapnet","plugins":[
 {{"type":"tapnet-cni","lab":"{lab}","bridge":"br0","capabilities":{{"portMappings":true}}}},
 {{"type":"tuning","sysctl":{{"net.ipv4.conf.all.log_martians":"1"}}}}]}}"#
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[network]\nnetwork_backend = \"cni\"\nnetwork_config_dir = \"{}\"\ncni_plugin_dirs = [\"{}\"]\n",
                netd.display(),
                cni.display()
            ),
        )
        .unwrap();
        Podman { dir }
    }

    /// `podman ARGS...` with this directory's configuration and storage.
    fn podman(&self, args: &[&str]) -> std::process::Output {
        let (root, runroot) = (self.dir.join("storage"), self.dir.join("runroot"));
        let conf = format!(
            "CONTAINERS_CONF={}",
            self.dir.join("containers.conf").display()
        );
        let mut cmd = vec![
            "env",
            &conf,
            "podman",
            "--root",
            root.to_str().unwrap(),
            "--runroot",
            runroot.to_str().unwrap(),
            "--storage-driver",
            "vfs",
            "--runtime",
            "runc",
        ];
        cmd.extend_from_slice(args);
        run(&cmd, 60)
    }

    /// `podman run -d` of `cmd` on the tapnet network (flags before `--rootfs`).
    fn start(&self, name: &str, flags: &[&str], cmd: &[&str]) {
        let rootfs = self.dir.join("rootfs");
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--network",
            "tapnet",
        ];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--rootfs", rootfs.to_str().unwrap()]);
        args.extend_from_slice(cmd);
        let out = self.podman(&args);
        assert!(out.status.success(), "podman run {name}: {out:?}");
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-af", "-t", "0"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn podman_containers_join_a_lab_through_the_cni_plugin() {
    let net = HostAndOutside::new();
    let name = unique("l");
    let text = LabText::new(&name)
        .bridge("br0", "10.102.0.0/24")
        .nat()
        .text();
    let lab = RunningLab::start_in(Some(&net.host.name), &name, &[], &text);
    let pm = Podman::new(&name);
    let (c1, web) = (unique("c"), unique("w"));
    pm.start(&c1, &[], &["sleep", "120"]);
    pm.start(
        &web,
        &["-p", "8082:80"],
        &["httpd", "-f", "-p", "80", "-h", "/www"],
    );

    // Both are ports of the lab, with addresses from the bridge's subnet.
    let ports = lab.show("ports");
    let ips: Vec<String> = ports["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"].as_str().unwrap().starts_with("cni"))
        .filter_map(|p| {
            p["ip"]
                .as_str()
                .map(|ip| ip.split('/').next().unwrap().to_string())
        })
        .collect();
    assert_eq!(ips.len(), 2, "{ports}");
    // They ping each other and the gateway.
    for ip in ips.iter().map(String::as_str).chain(["10.102.0.1"]) {
        let out = pm.podman(&["exec", &c1, "ping", "-c", "2", "-W", "1", ip]);
        assert!(out.status.success(), "{c1} -> {ip}: {out:?}");
    }
    // -p 8082:80 is a forward on tapnet's host: curl from the outside reaches httpd.
    let url = format!("http://{HOST_IP}:8082/");
    assert_eq!(
        curl(&net.outside.name, &url).as_deref(),
        Some("served by podman\n")
    );
    // podman rm detaches, and takes the forward.
    let out = pm.podman(&["rm", "-f", "-t", "0", &web, &c1]);
    assert!(out.status.success(), "{out:?}");
    let left = lab.show("ports").to_string();
    assert!(!left.contains("\"cni"), "{left}");
    assert!(!lab.show("forwards").to_string().contains("8082"));
}
