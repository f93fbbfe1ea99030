//! A lab as a lab file: `tapnet show lab` prints the running lab's current state
//! (its file's, plus what was attached or detached since) with every default written
//! out, as text that `check` accepts and `up` would build the same.

use std::fmt::Write;

use crate::{Lab, Proto};

/// A TOML string, quoted and escaped.
fn q(s: &str) -> String {
    let mut v = toml_edit::Value::from(s);
    v.decor_mut().clear();
    v.to_string()
}

fn mac(m: &[u8; 6]) -> String {
    q(&m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

fn proto(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "\"tcp\"",
        Proto::Udp => "\"udp\"",
    }
}

/// The lab as a lab file, every table and key written out.
pub fn to_toml(lab: &Lab) -> String {
    let mut t = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(t, "name = {}", q(&lab.name));
    for b in &lab.bridges {
        let _ = writeln!(t, "\n[[bridge]]\nname = {}", q(&b.name));
        if let Some(s) = &b.subnet {
            let _ = writeln!(t, "subnet = \"{}/{}\"", s.addr, s.prefix);
        }
        if let Some(g) = b.gateway {
            let _ = writeln!(t, "gateway = \"{g}\"");
        }
        if let Some((n, p)) = b.subnet6 {
            let _ = writeln!(t, "subnet6 = \"{n}/{p}\"");
        }
        if let Some(g) = b.gateway6 {
            let _ = writeln!(t, "gateway6 = \"{g}\"");
        }
        if !b.dns6.is_empty() {
            let d: Vec<String> = b.dns6.iter().map(|a| format!("\"{a}\"")).collect();
            let _ = writeln!(t, "dns6 = [{}]", d.join(", "));
        }
        let _ = writeln!(t, "mtu = {}", b.mtu);
        if let Some((vni, _)) = b.vni {
            let _ = writeln!(t, "vni = {vni}");
        }
        let _ = writeln!(
            t,
            "fdb_max = {}\nfdb_aging_s = {}",
            b.fdb_max, b.fdb_aging_s
        );
    }
    for p in &lab.ports {
        let _ = writeln!(
            t,
            "\n[[port]]\nname = {}\nbridge = {}",
            q(&p.name),
            q(&p.bridge)
        );
        if let Some(ns) = &p.netns {
            let _ = writeln!(t, "netns = {}", q(ns));
        }
        match &p.qemu {
            Some(sock) => {
                let _ = writeln!(t, "qemu = {}", q(sock));
            }
            None => {
                let _ = writeln!(t, "ifname = {}", q(&p.ifname));
            }
        }
        let _ = writeln!(t, "mac = {}", mac(&p.mac));
        if let Some((ip, prefix)) = p.ip {
            let _ = writeln!(t, "ip = \"{ip}/{prefix}\"");
        }
        if let Some((ip, prefix)) = p.ip6 {
            let _ = writeln!(t, "ip6 = \"{ip}/{prefix}\"");
        }
        if let Some(i) = &p.impair {
            let _ = writeln!(t, "impair = {}", q(&i.to_string()));
        }
        if let Some(m) = &p.mirror {
            let _ = writeln!(t, "mirror = {}", q(m));
        }
        let _ = writeln!(t, "spoof_check = {}", p.spoof_check);
    }
    for f in &lab.forwards {
        let _ = writeln!(
            t,
            "\n[[forward]]\nproto = {}\nlisten = \"{}\"\nto = \"{}\"",
            proto(f.proto),
            f.listen,
            f.to
        );
    }
    for s in &lab.services {
        let backends: Vec<String> = s.backends.iter().map(|b| format!("\"{b}\"")).collect();
        let _ = writeln!(
            t,
            "\n[[service]]\nname = {}\nvip = \"{}\"\nproto = {}\nbackends = [{}]",
            q(&s.name),
            s.vip,
            proto(s.proto),
            backends.join(", ")
        );
    }
    if let Some(n) = &lab.nat {
        let _ = writeln!(
            t,
            "\n[nat]\nmasquerade = {}\nmax_flows = {}\ntcp_timeout_s = {}\ntcp_closing_timeout_s = {}\nudp_timeout_s = {}\nicmp_timeout_s = {}",
            n.masquerade,
            n.max_flows,
            n.tcp_timeout_s,
            n.tcp_closing_timeout_s,
            n.udp_timeout_s,
            n.icmp_timeout_s
        );
    }
    if let Some(v) = &lab.vxlan {
        let peers: Vec<String> = v.peers.iter().map(|p| format!("\"{p}\"")).collect();
        let _ = writeln!(
            t,
            "\n[vxlan]\nlisten = \"{}\"\npeers = [{}]",
            v.listen,
            peers.join(", ")
        );
        if !v.etcd.is_empty() {
            let urls: Vec<String> = v.etcd.iter().map(|u| q(u)).collect();
            let _ = writeln!(
                t,
                "etcd = [{}]\netcd_prefix = {}\netcd_ttl_s = {}",
                urls.join(", "),
                q(&v.etcd_prefix),
                v.etcd_ttl_s
            );
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    /// Written out and read back, a lab is the same lab, and writes the same text.
    #[test]
    fn labs_round_trip() {
        let complete =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/lab-file.md"))
                .unwrap();
        let example = complete
            .rsplit("```toml\n")
            .next()
            .and_then(|s| s.split("```").next())
            .unwrap()
            .to_string();
        for text in [crate::DEFAULT_LAB.to_string(), spec_example(), example] {
            let first = lab(&text);
            let written = to_toml(&first);
            let again = crate::parse("written.toml", &written)
                .unwrap_or_else(|e| panic!("{e:#?}\nin:\n{written}"));
            assert_eq!(to_toml(&again), written);
            assert_eq!(again.ports.len(), first.ports.len());
            for (a, b) in first.ports.iter().zip(&again.ports) {
                assert_eq!(
                    (
                        &a.name,
                        &a.netns,
                        &a.ifname,
                        a.mac,
                        a.ip,
                        a.spoof_check,
                        &a.qemu
                    ),
                    (
                        &b.name,
                        &b.netns,
                        &b.ifname,
                        b.mac,
                        b.ip,
                        b.spoof_check,
                        &b.qemu
                    )
                );
            }
        }
    }
}
