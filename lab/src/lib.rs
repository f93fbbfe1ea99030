//! The lab file: its model ([`Lab`] and the configuration of each section) and its
//! validation, with no host IO but reading the file. Every problem is reported as
//! `FILE:LINE:COL: message`, all of them at once, before anything on the host is
//! touched; `tapnet check` is this crate, and `tapnet up` runs only what it accepts.
//!
//! `reader` walks the TOML document and holds the checks every section shares; one
//! module of `validate` per section checks what is particular to it.

mod model;
mod reader;
mod rootless;
#[cfg(test)]
mod testutil;
mod validate;
mod write;

use std::path::Path;

pub use model::*;
pub use reader::{LabError, Pos};
pub use rootless::refused_without_root;
pub use validate::values::{netns_is_path, router_mac};
pub use write::to_toml;

/// The lab the binary runs when `up` is given no file (`tapnet example` prints it).
pub const DEFAULT_LAB: &str = include_str!("default_lab.toml");

/// Lab files larger than this are refused unread (a lab of a thousand ports is under
/// 200 KiB).
pub const MAX_LAB_FILE: u64 = 4 << 20;

/// Parses and validates lab text; `file` names it in every error.
///
/// Every problem is reported, not just the first, sorted by position; a TOML syntax
/// error stops the parse and is reported alone.
pub fn parse(file: &str, text: &str) -> Result<Lab, Vec<LabError>> {
    reader::read(file, text, |cx, root| validate::document(cx, file, root))
}

/// Reads and validates a lab file: a regular file of at most [`MAX_LAB_FILE`] bytes
/// (a device such as /dev/urandom, a pipe or a directory is refused unread).
pub fn load(path: &Path) -> Result<Lab, Vec<LabError>> {
    let file = path.display().to_string();
    let refuse = |message: String| {
        Err(vec![LabError {
            file: file.clone(),
            pos: Pos { line: 1, col: 1 },
            message,
        }])
    };
    match std::fs::metadata(path) {
        Err(e) => return refuse(format!("cannot read the lab file: {e}")),
        Ok(m) if !m.is_file() => {
            return refuse("not a regular file: a lab file is a TOML text file".to_string())
        }
        Ok(m) if m.len() > MAX_LAB_FILE => {
            return refuse(format!(
                "{} bytes: larger than a lab file may be ({} MiB)",
                m.len(),
                MAX_LAB_FILE >> 20
            ))
        }
        Ok(_) => {}
    }
    use std::io::Read;
    let mut text = String::new();
    // Bounded even if the file grows between the check and the read.
    let read =
        std::fs::File::open(path).and_then(|f| f.take(MAX_LAB_FILE + 1).read_to_string(&mut text));
    match read {
        Ok(n) if n as u64 > MAX_LAB_FILE => refuse("larger than a lab file may be".into()),
        Ok(_) => parse(&file, &text),
        Err(e) => refuse(format!("cannot read the lab file: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn default_lab_parses() {
        let l = lab(DEFAULT_LAB);
        assert_eq!(l.name, "lab");
        assert_eq!(l.file, "t.toml");
        assert_eq!(l.bridges.len(), 1);
        let b = &l.bridges[0];
        assert_eq!(b.name, "br0");
        assert_eq!(
            b.subnet,
            Some(Subnet {
                addr: Ipv4Addr::new(172, 16, 1, 0),
                prefix: 24
            })
        );
        assert_eq!(b.gateway, Some(Ipv4Addr::new(172, 16, 1, 1)));
        assert_eq!(b.mtu, 1500);
        assert_eq!(b.vni, None);
        assert_eq!(b.fdb_max, 8192);
        assert_eq!(b.fdb_aging_s, 300);
        assert_eq!(l.ports.len(), 2);
        let (db, web) = (&l.ports[0], &l.ports[1]);
        assert_eq!(db.name, "db");
        assert_eq!(db.bridge, "br0");
        assert_eq!(db.netns.as_deref(), Some("db"));
        assert_eq!(db.ifname, "eth0");
        assert_eq!(db.mac, [0x02, 0x00, 0xac, 0x10, 0x01, 0x02]);
        assert_eq!(db.ip, Some((Ipv4Addr::new(172, 16, 1, 2), 24)));
        assert_eq!(web.name, "web");
        assert_eq!(web.mac, [0x02, 0x00, 0xac, 0x10, 0x01, 0x03]);
        assert_eq!(web.ip, Some((Ipv4Addr::new(172, 16, 1, 3), 24)));
        // web's port 80 on the host's loopback, port 8080.
        assert_eq!(l.forwards.len(), 1);
        let f = &l.forwards[0];
        assert_eq!(f.proto, Proto::Tcp);
        assert_eq!(f.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(f.to, "172.16.1.3:80".parse().unwrap());
        // Masquerade, with the default limits and timeouts.
        let nat = l.nat.as_ref().expect("[nat]");
        assert!(nat.masquerade);
        assert_eq!(
            *nat,
            NatCfg {
                pos: nat.pos,
                masquerade: true,
                ..NatCfg::default()
            }
        );
        assert!(l.services.is_empty() && l.vxlan.is_none());
    }

    #[test]
    fn spec_example_parses() {
        let l = lab(&spec_example());
        assert_eq!(l.name, "lab");
        let b = &l.bridges[0];
        assert_eq!(b.mtu, 1450);
        assert_eq!(b.vni, Some((42, Pos { line: 8, col: 7 })));
        assert_eq!(b.pos, Pos { line: 3, col: 1 });
        let p = &l.ports[0];
        assert_eq!(p.pos, Pos { line: 12, col: 1 });
        assert_eq!(p.mac, [0x02, 0x00, 0xac, 0x10, 0x01, 0x03]);
        assert_eq!(p.ifname, "eth0");
        let f = &l.forwards[0];
        assert_eq!(f.proto, Proto::Tcp);
        assert_eq!(f.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(f.to, "172.16.1.3:80".parse().unwrap());
        let s = &l.services[0];
        assert_eq!(s.name, "api");
        assert_eq!(s.vip, "172.16.1.100:80".parse().unwrap());
        assert_eq!(s.backends.len(), 2);
        assert!(l.nat.as_ref().unwrap().masquerade);
        let v = l.vxlan.as_ref().unwrap();
        assert_eq!(v.listen, "192.0.2.1:4789".parse().unwrap());
        assert_eq!(v.peers, vec!["192.0.2.2:4789".parse().unwrap()]);
    }

    #[test]
    fn spec_example_verbatim_is_valid() {
        let l = lab(SPEC_EXAMPLE);
        assert_eq!(l.bridges[0].mtu, 1500);
    }

    #[test]
    fn minimal_labs() {
        let l = lab("name = \"x\"\n");
        assert!(l.bridges.is_empty() && l.ports.is_empty());
        // A bridge with no subnet, a port on it with an address, no netns.
        let l = lab("name = \"a.b-c_9\"\n[[bridge]]\nname = \"sw\"\n[[port]]\nname = \"tap1\"\nbridge = \"sw\"\nip = \"192.168.9.9/16\"\n");
        assert_eq!(l.bridges[0].subnet, None);
        assert_eq!(l.bridges[0].gateway, None);
        assert_eq!(l.ports[0].ifname, "tap1");
        assert_eq!(l.ports[0].netns, None);
        assert_eq!(l.ports[0].mac, [2, 0, 192, 168, 9, 9]);
    }

    #[test]
    fn what_up_would_refuse_check_refuses_first() {
        // Masquerade with no routed bridge: the gateway is the containers' way out.
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\n[nat]\n",
            4,
            1,
            "masquerade needs a bridge with a `subnet`",
        );
        // A forward to a port on a bridge without a subnet: no way back for replies.
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\n[[port]]\nname = \"p\"\nbridge = \"b\"\nip = \"10.5.5.5/24\"\n[[forward]]\nlisten = \"8080\"\nto = \"10.5.5.5:80\"\n",
            10,
            6,
            "that address is on no bridge with a `subnet`",
        );
    }

    #[test]
    fn three_problems_three_errors() {
        let e = errs("name = \"x\"\nfoo = 1\n[[bridge]]\nname = \"br0\"\nmtu = 10\n[[port]]\nname = \"p\"\nbridge = \"nope\"\n");
        assert_eq!(
            e,
            vec![
                "2:1: unknown key `foo` at the top level (expected one of `name`, `bridge`, `port`, `forward`, `service`, `nat`, `vxlan`)",
                "5:7: `mtu` must be between 68 and 65521, not 10",
                "8:10: port `p` names bridge `nope`, which no [[bridge]] defines",
            ]
        );
    }

    #[test]
    fn all_problems_are_reported_and_sorted() {
        let text = "name = \"bad name\"\n[[bridge]]\nname = \"br0\"\nsubnet = \"10.0.0.1/24\"\nmtu = 1\n[[port]]\nname = \"p\"\nbridge = \"br1\"\nmac = \"ff:ff:ff:ff:ff:ff\"\nbogus = 1\n";
        let e = errs(text);
        let pos: Vec<&str> = e.iter().map(|s| s.split(": ").next().unwrap()).collect();
        assert_eq!(
            pos,
            vec!["1:8", "4:10", "5:7", "8:10", "9:7", "10:1"],
            "{e:#?}"
        );
    }

    /// Mutations of the SPEC example at every offset never panic, and every error has a
    /// position inside the text.
    #[test]
    fn garbage_never_panics() {
        let base = spec_example();
        let bytes = base.as_bytes();
        let nlines = base.lines().count() + 1;
        let check = |text: &str| {
            if let Err(errs) = parse("g.toml", text) {
                assert!(!errs.is_empty());
                for e in &errs {
                    assert!(e.pos.line >= 1 && e.pos.line <= nlines + 1, "{e}");
                    assert!(e.pos.col >= 1, "{e}");
                    assert!(!e.message.contains('\n'), "{e}");
                }
            }
        };
        for i in 0..=bytes.len() {
            check(&base[..i]);
        }
        let subst = [b'"', b'[', b']', b'=', b'\n', b'0', b'.', b':', b'x', b'{'];
        for i in 0..bytes.len() {
            let mut v = bytes.to_vec();
            v.remove(i);
            check(std::str::from_utf8(&v).unwrap());
            for &c in &subst {
                let mut v = bytes.to_vec();
                v[i] = c;
                check(std::str::from_utf8(&v).unwrap());
            }
        }
        // Numbers at the edges of every range.
        for n in [
            "-1",
            "0",
            "9223372036854775807",
            "-9223372036854775808",
            "4294967296",
            "1e3",
            "nan",
        ] {
            for key in ["mtu", "vni", "fdb_max", "fdb_aging_s"] {
                check(&base.replacen(&format!("{key} = "), &format!("{key} = {n} #"), 1));
            }
        }
        // Non-UTF-8-looking but valid text, BOM, CRLF.
        check(&format!("\u{feff}{base}"));
        check(&base.replace('\n', "\r\n"));
        check("\u{0}\u{7f}é😀");
    }

    #[test]
    fn devices_and_huge_files_are_refused_unread() {
        let e = load(Path::new("/dev/urandom")).unwrap_err();
        assert!(e[0].message.contains("not a regular file"), "{e:?}");
        let e = load(Path::new("/")).unwrap_err();
        assert!(e[0].message.contains("not a regular file"), "{e:?}");
        let big = std::env::temp_dir().join(format!("tapnet-big-{}.toml", std::process::id()));
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_LAB_FILE + 1).unwrap();
        let e = load(&big).unwrap_err();
        let _ = std::fs::remove_file(&big);
        assert!(
            e[0].message.contains("larger than a lab file may be"),
            "{e:?}"
        );
    }

    #[test]
    fn load_reports_unreadable_files() {
        let e = load(Path::new("/nonexistent/lab.toml")).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].pos, Pos { line: 1, col: 1 });
        assert!(e[0].message.starts_with("cannot read the lab file"));
    }
}
