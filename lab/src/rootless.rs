//! What a lab asks that an ordinary user's `up` cannot give (rootless mode, see the
//! `host` crate's `userns`): devices in tapnet's own namespace, which is the host's,
//! and ports below `net.ipv4.ip_unprivileged_port_start`. `check` and `up` run as the
//! same user say the same.

use crate::{Lab, LabError, Pos};

/// The problems of `lab` for a user without root, where the host lets unprivileged
/// sockets bind ports from `unprivileged_port_start` (the sysctl) up. Each names the
/// file, the line and the key; empty when the lab can run rootless.
pub fn refused_without_root(lab: &Lab, unprivileged_port_start: u16) -> Vec<LabError> {
    let mut problems = Vec::new();
    let mut err = |pos: Pos, message: String| {
        problems.push(LabError {
            file: lab.file.clone(),
            pos,
            message,
        })
    };
    for p in &lab.ports {
        if p.netns.is_none() && p.qemu.is_none() {
            err(
                p.pos,
                format!(
                    "port `{}` has no `netns`: its TAP would be in tapnet's own namespace, the host's, where only root may create devices; give it a `netns` (run a command there with `tapnet exec {}`)",
                    p.name, p.name
                ),
            );
        }
        if let Some(m) = &p.mirror {
            err(
                p.pos,
                format!(
                    "port `{}`: `mirror = \"{m}\"` is a TAP in the host's namespace, which only root may create: remove it and use `tapnet capture {}`, or run tapnet as root",
                    p.name, p.name
                ),
            );
        }
    }
    let low = |what: &str, port: u16| {
        format!(
            "{what}: port {port} is below net.ipv4.ip_unprivileged_port_start ({unprivileged_port_start}), which only root may bind: use a port of {unprivileged_port_start} or above, or lower the sysctl (as root)"
        )
    };
    for f in &lab.forwards {
        if f.listen.port() < unprivileged_port_start {
            err(
                f.pos,
                low(&format!("forward listen {}", f.listen), f.listen.port()),
            );
        }
    }
    if let Some(vx) = &lab.vxlan {
        if vx.listen.port() < unprivileged_port_start {
            err(
                vx.pos,
                low(&format!("vxlan listen {}", vx.listen), vx.listen.port()),
            );
        }
    }
    problems.sort_by_key(|e| (e.pos.line, e.pos.col));
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn what_needs_root_is_named_with_its_line() {
        let l = lab(&with_head(
            "[[port]]\nname = \"a\"\nbridge = \"br0\"\nmirror = \"m0\"\n\
             [[port]]\nname = \"b\"\nbridge = \"br0\"\nnetns = \"b\"\nip = \"10.0.0.3/24\"\n\
             [[forward]]\nproto = \"tcp\"\nlisten = \"0.0.0.0:80\"\nto = \"10.0.0.3:80\"\n\
             [[forward]]\nproto = \"tcp\"\nlisten = \"0.0.0.0:8080\"\nto = \"10.0.0.3:80\"\n",
        ));
        let got: Vec<String> = refused_without_root(&l, 1024)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(got[0].contains("port `a` has no `netns`"), "{got:#?}");
        assert!(got[1].contains("`mirror = \"m0\"`"), "{got:#?}");
        assert!(
            got[2].contains("forward listen 0.0.0.0:80: port 80 is below net.ipv4.ip_unprivileged_port_start (1024)"),
            "{got:#?}"
        );
        // A host that lets anyone bind port 80 takes the forward.
        assert_eq!(refused_without_root(&l, 0).len(), 2);
    }

    #[test]
    fn the_default_lab_runs_rootless() {
        let l = lab(crate::DEFAULT_LAB);
        assert!(refused_without_root(&l, 1024).is_empty());
    }
}
