//! What the unit tests of every module share: the SPEC example, a lab header, and
//! helpers that parse a text and return the lab or its errors as `LINE:COL: message`.

pub(crate) use crate::{parse, Lab, Pos};
pub(crate) use std::net::Ipv4Addr;

/// The example from SPEC.md, verbatim.
pub(crate) const SPEC_EXAMPLE: &str = r#"name = "lab"                      # names the lab and its control socket

[[bridge]]
name = "br0"
subnet = "172.16.1.0/24"          # optional; with it the router serves this bridge
gateway = "172.16.1.1"            # optional; default: first host address of subnet
mtu = 1500                        # optional
vni = 42                          # optional; stretches the bridge over VXLAN
fdb_max = 8192                    # optional; learned MACs at most
fdb_aging_s = 300                 # optional

[[port]]
name = "web"
bridge = "br0"
netns = "web"                     # created if missing, removed on exit only if tapnet created it;
                              # without netns the TAP stays in tapnet's own namespace
ifname = "eth0"                   # optional; the TAP's name inside the namespace
mac = "02:00:ac:10:01:03"         # optional
ip = "172.16.1.3/24"              # optional; set inside the namespace, default route via the gateway

[[forward]]                       # publish a container port on the host (like docker -p)
proto = "tcp"                     # tcp | udp
listen = "0.0.0.0:8080"
to = "172.16.1.3:80"              # a container address or a service VIP

[[service]]                       # a load-balanced virtual IP inside the virtual network
name = "api"
vip = "172.16.1.100:80"
proto = "tcp"
backends = ["172.16.1.3:80", "172.16.1.4:80"]

[nat]
masquerade = true                 # containers reach addresses outside the lab through the host

[vxlan]
listen = "192.0.2.1:4789"         # underlay address and UDP port of this host's tunnel endpoint
peers = ["192.0.2.2:4789"]        # remote tunnel endpoints
"#;

/// The SPEC example with an MTU that leaves room for VXLAN.
pub(crate) fn spec_example() -> String {
    SPEC_EXAMPLE.replace("mtu = 1500 ", "mtu = 1450 ")
}

pub(crate) fn lab(text: &str) -> Lab {
    match parse("t.toml", text) {
        Ok(lab) => lab,
        Err(errs) => panic!("unexpected errors: {errs:#?}"),
    }
}

/// Every error as "LINE:COL: message".
pub(crate) fn errs(text: &str) -> Vec<String> {
    match parse("t.toml", text) {
        Ok(_) => Vec::new(),
        Err(errs) => errs
            .iter()
            .map(|e| {
                assert_eq!(e.file, "t.toml");
                assert!(!e.message.contains('\n'), "multi-line message: {e}");
                format!("{}:{}: {}", e.pos.line, e.pos.col, e.message)
            })
            .collect(),
    }
}

/// Asserts exactly one error, at LINE:COL, whose message contains `needle`.
#[track_caller]
pub(crate) fn err1(text: &str, line: usize, col: usize, needle: &str) {
    let e = errs(text);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}\nin:\n{text}");
    let prefix = format!("{line}:{col}: ");
    assert!(
        e[0].starts_with(&prefix) && e[0].contains(needle),
        "expected `{prefix}...{needle}...`, got `{}`",
        e[0]
    );
}

/// A lab header: lines 1-4, bridge br0 on 10.0.0.0/24.
pub(crate) const HEAD: &str =
    "name = \"t\"\n[[bridge]]\nname = \"br0\"\nsubnet = \"10.0.0.0/24\"\n";

pub(crate) fn with_head(rest: &str) -> String {
    format!("{HEAD}{rest}")
}

pub(crate) const PORT_WEB: &str =
    "[[port]]\nname = \"web\"\nbridge = \"br0\"\nnetns = \"web\"\nip = \"10.0.0.3/24\"\n";

pub(crate) fn fwd(proto: &str, listen: &str, to: &str) -> String {
    format!("[[forward]]\nproto = \"{proto}\"\nlisten = \"{listen}\"\nto = \"{to}\"\n")
}

pub(crate) fn svc(name: &str, vip: &str, proto: &str, backends: &str) -> String {
    format!("[[service]]\nname = \"{name}\"\nvip = \"{vip}\"\nproto = \"{proto}\"\nbackends = {backends}\n")
}
