//! `[nat]`: masquerade (which needs a routed bridge: the gateway is the containers'
//! way out), the flow limit and the idle timeouts, each with its default.

use super::bridge::BInfo;
use crate::model::{
    NatCfg, DEFAULT_NAT_ICMP_TIMEOUT_S, DEFAULT_NAT_MAX_FLOWS, DEFAULT_NAT_TCP_CLOSING_TIMEOUT_S,
    DEFAULT_NAT_TCP_TIMEOUT_S, DEFAULT_NAT_UDP_TIMEOUT_S,
};
use crate::reader::{Cx, Sec};

pub(crate) const NAT_KEYS: &[&str] = &[
    "masquerade",
    "max_flows",
    "tcp_timeout_s",
    "tcp_closing_timeout_s",
    "udp_timeout_s",
    "icmp_timeout_s",
];

/// The `[nat]` table, if the lab has one.
pub(super) fn nat(cx: &mut Cx<'_>, root: &Sec<'_>, binfo: &[BInfo<'_>]) -> Option<NatCfg> {
    cx.table(root, "nat", "[nat]").map(|s| {
        cx.check_keys(&s, NAT_KEYS);
        let mut secs = |key: &str, hi: i64, default: u64| {
            cx.int(&s, key, 1, hi).map_or(default, |t| t.v as u64)
        };
        let tcp_timeout_s = secs("tcp_timeout_s", 2_592_000, DEFAULT_NAT_TCP_TIMEOUT_S);
        let tcp_closing_timeout_s = secs(
            "tcp_closing_timeout_s",
            3600,
            DEFAULT_NAT_TCP_CLOSING_TIMEOUT_S,
        );
        let udp_timeout_s = secs("udp_timeout_s", 86_400, DEFAULT_NAT_UDP_TIMEOUT_S);
        let icmp_timeout_s = secs("icmp_timeout_s", 86_400, DEFAULT_NAT_ICMP_TIMEOUT_S);
        let read = cx.bool_(&s, "masquerade");
        let masquerade = read.is_none_or(|m| m.v);
        let readable = read.is_some() || !s.has("masquerade");
        if masquerade && readable && !binfo.iter().any(|b| b.has_subnet || b.net6.is_some()) {
            cx.err(
                s.at,
                "masquerade needs a bridge with a `subnet` or `subnet6`: its gateway is the containers' way out",
            );
        }
        NatCfg {
            pos: cx.pos(s.at),
            masquerade,
            max_flows: cx
                .int(&s, "max_flows", 16, 4_000_000)
                .map_or(DEFAULT_NAT_MAX_FLOWS, |m| m.v as usize),
            tcp_timeout_s,
            tcp_closing_timeout_s,
            udp_timeout_s,
            icmp_timeout_s,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn nat_max_flows_is_an_integer_in_range() {
        let l = lab("name = \"x\"\n[nat]\nmax_flows = 1000\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n");
        assert_eq!(l.nat.unwrap().max_flows, 1000);
        let l = lab("name = \"x\"\n[nat]\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n");
        assert_eq!(l.nat.unwrap().max_flows, DEFAULT_NAT_MAX_FLOWS);
        let errs = parse("t.toml", "name = \"x\"\n[nat]\nmax_flows = 3\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n").unwrap_err();
        assert_eq!((errs[0].pos.line, errs[0].pos.col), (3, 13));
    }

    #[test]
    fn nat_timeouts_default_and_explicit() {
        // No [nat]: the defaults, no masquerade.
        let l = lab("name = \"x\"\n");
        assert!(l.nat.is_none());
        let n = l.nat_or_default();
        assert_eq!(n, NatCfg::default());
        assert!(!n.masquerade);
        assert_eq!(n.max_flows, DEFAULT_NAT_MAX_FLOWS);
        assert_eq!(n.tcp_timeout_s, 432_000);
        assert_eq!(n.tcp_closing_timeout_s, 120);
        assert_eq!(n.udp_timeout_s, 120);
        assert_eq!(n.icmp_timeout_s, 30);
        assert_eq!(
            (
                DEFAULT_NAT_TCP_TIMEOUT_S,
                DEFAULT_NAT_TCP_CLOSING_TIMEOUT_S,
                DEFAULT_NAT_UDP_TIMEOUT_S,
                DEFAULT_NAT_ICMP_TIMEOUT_S
            ),
            (432_000, 120, 120, 30)
        );
        // An empty [nat]: the same timeouts, and masquerade.
        let n = lab("name = \"x\"\n[nat]\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n")
            .nat_or_default();
        assert!(n.masquerade);
        assert_eq!(
            (
                n.tcp_timeout_s,
                n.tcp_closing_timeout_s,
                n.udp_timeout_s,
                n.icmp_timeout_s
            ),
            (432_000, 120, 120, 30)
        );
        assert_eq!(n.pos, Pos { line: 2, col: 1 });
        // Every one given, at the ends of its range.
        let n = lab("name = \"x\"\n[nat]\nmasquerade = false\ntcp_timeout_s = 2592000\ntcp_closing_timeout_s = 1\nudp_timeout_s = 86400\nicmp_timeout_s = 1\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n")
            .nat
            .unwrap();
        assert!(!n.masquerade);
        assert_eq!(
            (
                n.tcp_timeout_s,
                n.tcp_closing_timeout_s,
                n.udp_timeout_s,
                n.icmp_timeout_s
            ),
            (2_592_000, 1, 86_400, 1)
        );
        let n = lab("name = \"x\"\nnat = { tcp_timeout_s = 1, tcp_closing_timeout_s = 3600, udp_timeout_s = 1, icmp_timeout_s = 86400 }\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n")
            .nat
            .unwrap();
        assert_eq!(
            (
                n.tcp_timeout_s,
                n.tcp_closing_timeout_s,
                n.udp_timeout_s,
                n.icmp_timeout_s
            ),
            (1, 3600, 1, 86_400)
        );
    }

    #[test]
    fn nat_timeouts_out_of_range_or_mistyped_are_refused_at_their_value() {
        for (key, bad, hi) in [
            ("tcp_timeout_s", "2592001", 2_592_000),
            ("tcp_timeout_s", "0", 2_592_000),
            ("tcp_closing_timeout_s", "3601", 3600),
            ("tcp_closing_timeout_s", "-5", 3600),
            ("udp_timeout_s", "86401", 86_400),
            ("udp_timeout_s", "0", 86_400),
            ("icmp_timeout_s", "86401", 86_400),
            ("icmp_timeout_s", "0", 86_400),
        ] {
            let text = format!("name = \"x\"\n[nat]\n{key} = {bad}\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n");
            err1(
                &text,
                3,
                key.len() + 4,
                &format!("`{key}` must be between 1 and {hi}, not {bad}"),
            );
        }
        err1(
            "name = \"x\"\n[nat]\nudp_timeout_s = \"2m\"\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n",
            3,
            17,
            "`udp_timeout_s` must be an integer, not a string",
        );
        err1(
            "name = \"x\"\n[nat]\nicmp_timeout_s = 1.5\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n",
            3,
            18,
            "`icmp_timeout_s` must be an integer, not a float",
        );
        err1(
            "name = \"x\"\n[nat]\ntcp_timeout = 10\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n",
            3,
            1,
            "unknown key `tcp_timeout` in [nat]; did you mean `tcp_timeout_s`?",
        );
        // Several problems: each at its own place, in order.
        assert_eq!(
            errs("name = \"x\"\n[nat]\ntcp_timeout_s = 0\nudp_timeout_s = 0\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n"),
            vec![
                "3:17: `tcp_timeout_s` must be between 1 and 2592000, not 0",
                "4:17: `udp_timeout_s` must be between 1 and 86400, not 0",
            ]
        );
    }
}
