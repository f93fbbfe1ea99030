//! The lab's validation, one module per section of the file; this one is the top
//! level: its keys, the lab's name, and the order the sections are checked in (each
//! later one gets what the earlier ones learned: bridges' subnets for ports, ports'
//! addresses for services, both for forwards).

mod bridge;
mod forward;
mod ipv6;
mod nat;
mod port;
mod service;
pub(crate) mod values;
mod vxlan;

use crate::model::Lab;
use crate::reader::{q, Cx, Sec};
use values::valid_name;

const TOP_KEYS: &[&str] = &[
    "name", "bridge", "port", "forward", "service", "nat", "vxlan",
];

/// Validates the top level `root` of file `file` and every section under it.
pub(crate) fn document(cx: &mut Cx<'_>, file: &str, root: &Sec<'_>) -> Lab {
    cx.check_keys(root, TOP_KEYS);
    cx.require(root, &["name"]);
    let mut lab_name = "";
    if let Some(n) = cx.str_(root, "name") {
        if valid_name(n.v, 32) {
            lab_name = n.v;
        } else {
            cx.err(
                n.at,
                format!(
                    "lab name {} must be 1 to 32 characters of A-Z a-z 0-9 _ . -",
                    q(n.v)
                ),
            );
        }
    }
    let has_vxlan = root.has("vxlan");

    let (bridges, binfo) = bridge::bridges(cx, root, has_vxlan, vxlan::underlay_v6(root));
    let (ports, pinfo, ports_incomplete) = port::ports(cx, root, lab_name, &binfo);
    let subnets_incomplete = binfo.iter().any(|b| b.has_subnet && b.net.is_none());
    let (services, sinfo, services_incomplete) =
        service::services(cx, root, &binfo, &pinfo, subnets_incomplete);
    let forwards = forward::forwards(
        cx,
        root,
        &binfo,
        &pinfo,
        &sinfo,
        ports_incomplete || services_incomplete,
    );
    let nat = nat::nat(cx, root, &binfo);
    let vxlan = vxlan::vxlan(cx, root, &forwards);

    Lab {
        file: file.to_string(),
        name: lab_name.to_string(),
        bridges,
        ports,
        forwards,
        services,
        nat,
        vxlan,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use bridge::BRIDGE_KEYS;
    use forward::FORWARD_KEYS;
    use nat::NAT_KEYS;
    use port::PORT_KEYS;
    use service::SERVICE_KEYS;
    use vxlan::VXLAN_KEYS;

    #[test]
    fn lab_name() {
        err1(
            "name = \"a b\"\n",
            1,
            8,
            "lab name `a b` must be 1 to 32 characters",
        );
        err1("name = \"\"\n", 1, 8, "lab name `` must be");
        err1(
            &format!("name = \"{}\"\n", "x".repeat(33)),
            1,
            8,
            "must be 1 to 32",
        );
        err1("name = \"../etc\"\n", 1, 8, "lab name `../etc`");
        err1("name = \"a\\nb\"\n", 1, 8, "lab name `a\\nb`");
    }

    /// The lab-file reference in the repository.
    const LAB_FILE_DOC: &str = include_str!("../../../docs/lab-file.md");

    /// Every table `check` knows, with the heading of its section in docs/lab-file.md.
    const SECTIONS: &[(&str, &[&str])] = &[
        ("Top level", TOP_KEYS),
        ("[[bridge]]", BRIDGE_KEYS),
        ("[[port]]", PORT_KEYS),
        ("[[forward]]", FORWARD_KEYS),
        ("[[service]]", SERVICE_KEYS),
        ("[nat]", NAT_KEYS),
        ("[vxlan]", VXLAN_KEYS),
    ];

    /// The text of the `## HEADING` section of the reference, up to the next one.
    fn doc_section(heading: &str) -> &'static str {
        let start = LAB_FILE_DOC
            .find(&format!("\n## {heading}\n"))
            .unwrap_or_else(|| panic!("docs/lab-file.md has no `## {heading}` section"));
        let body = &LAB_FILE_DOC[start + heading.len() + 5..];
        &body[..body.find("\n## ").unwrap_or(body.len())]
    }

    #[test]
    fn every_key_is_documented_in_its_section_of_the_reference() {
        for (heading, keys) in SECTIONS {
            let section = doc_section(heading);
            // A row of the section's table per key: | `key` | type | default | ...
            let rows: Vec<&str> = section
                .lines()
                .filter_map(|l| l.strip_prefix("| `"))
                .filter_map(|l| l.split_once("` |").map(|(k, _)| k))
                .collect();
            for key in *keys {
                let row = section
                    .lines()
                    .find(|l| l.starts_with(&format!("| `{key}` |")))
                    .unwrap_or_else(|| {
                        panic!("docs/lab-file.md, section {heading}: no row for `{key}`")
                    });
                // key, type, default, what it does, example: five cells, none empty.
                let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
                assert_eq!(cells.len(), 5, "{heading} `{key}`: {row}");
                assert!(
                    cells.iter().all(|c| !c.trim().is_empty()),
                    "{heading} `{key}`: {row}"
                );
            }
            // And nothing documented that `check` would refuse.
            for row in rows {
                assert!(
                    keys.contains(&row),
                    "docs/lab-file.md, section {heading}: `{row}` is not a key `check` accepts"
                );
            }
        }
    }

    #[test]
    fn the_references_examples_are_valid_and_the_complete_one_uses_every_key() {
        let blocks: Vec<&str> = LAB_FILE_DOC
            .split("```toml\n")
            .skip(1)
            .map(|b| &b[..b.find("```").expect("closed block")])
            .collect();
        assert!(blocks.len() >= 8, "{} toml blocks", blocks.len());
        let complete = doc_section("A complete example");
        let complete = complete
            .split("```toml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("a toml block in `## A complete example`");
        let l = lab(complete);
        assert!(!l.bridges.is_empty() && !l.ports.is_empty());
        assert!(!l.forwards.is_empty() && !l.services.is_empty());
        assert!(l.nat.is_some() && l.vxlan.is_some());
        for (heading, keys) in SECTIONS {
            for key in *keys {
                let used = complete.lines().any(|line| {
                    let line = line.trim_start();
                    line.starts_with(&format!("{key} ="))
                        || line.starts_with(&format!("[{key}]"))
                        || line.starts_with(&format!("[[{key}]]"))
                });
                assert!(used, "the complete example does not use {heading} `{key}`");
            }
        }
        // Each section's snippet parses as a lab once it has what it refers to.
        let head = "name = \"x\"\n";
        let br = "[[bridge]]\nname = \"br0\"\nsubnet = \"172.16.1.0/24\"\n";
        let ports = "[[port]]\nname = \"web\"\nbridge = \"br0\"\nip = \"172.16.1.3/24\"\n\
                     [[port]]\nname = \"web2\"\nbridge = \"br0\"\nip = \"172.16.1.4/24\"\n";
        for block in &blocks {
            let text = if block.starts_with("name =") {
                block.to_string()
            } else if block.starts_with("[[bridge]]") {
                format!("{head}{block}")
            } else if block.starts_with("[[port]]") {
                format!("{head}{br}{block}")
            } else if block.starts_with("[vxlan]") {
                format!("{head}{block}")
            } else {
                format!("{head}{br}{ports}{block}")
            };
            lab(&text);
        }
    }
}
