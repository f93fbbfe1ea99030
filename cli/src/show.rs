//! `tapnet show`: the datapath thread turns live state into JSON; the client prints that
//! JSON as it is (`--json`) or as a table.

use std::time::Instant;

use encap::vtep::VtepDrop;
use encap::Vtep;
use serde_json::{json, Value};
use vrouter::{RouterDrop, RouterHandler};
use vswitch::{Datapath, DropReason};

/// The VXLAN endpoint, if the lab has one.
fn vtep(dp: &Datapath) -> Option<&Vtep> {
    dp.ports()
        .filter_map(|p| p.internal)
        .filter_map(|h| dp.handler(h))
        .find_map(|h| h.as_any().downcast_ref::<Vtep>())
}

/// The router, if the lab has one (a bridge with a subnet).
fn router(dp: &Datapath) -> Option<&RouterHandler> {
    dp.ports()
        .find_map(|p| p.internal)
        .and_then(|h| dp.handler(h))
        .and_then(|h| h.as_any().downcast_ref::<RouterHandler>())
}

/// What `show` can name. The ones later issues fill in answer with a clear error.
pub const WHATS: [&str; 9] = [
    "ports", "fdb", "drops", "routes", "arp", "nat", "forwards", "services", "vxlan",
];

/// Answers one control request line, e.g. `show fdb`, on the datapath thread.
pub fn answer(dp: &Datapath, lab: &str, line: &str, now: Instant) -> Value {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("show"), Some(what), None) => match what {
            "ports" => ports(dp, lab),
            "fdb" => fdb(dp, lab, now),
            "drops" => drops(dp, lab),
            "routes" => routes(dp, lab),
            "services" => services(dp, lab),
            "nat" => nat(dp, lab, now),
            "forwards" => forwards(dp, lab),
            "vxlan" => vxlan(dp, lab, now),
            "arp" => arp(dp, lab, now),
            w if WHATS.contains(&w) => {
                json!({"error": format!("show {w}: not supported by this tapnet")})
            }
            w => json!({"error": format!("show {w}: unknown; one of {}", WHATS.join(", "))}),
        },
        _ => json!({"error": format!("unknown request {line:?}")}),
    }
}

fn ports(dp: &Datapath, lab: &str) -> Value {
    let bridges: Vec<_> = dp.bridges().map(|(_, b)| b.name().to_string()).collect();
    let ports: Vec<Value> = dp
        .ports()
        .map(|p| {
            json!({
                "name": p.info.name,
                "kind": match (p.internal, p.info.name.split(':').next()) {
                    (None, _) => "tap",
                    (Some(_), Some("vxlan")) => "vxlan",
                    (Some(_), _) => "router",
                },
                "bridge": bridges[p.info.bridge.0],
                "netns": p.info.netns,
                "ifname": p.info.ifname,
                "mac": p.info.mac.to_string(),
                "ip": p.info.ip,
                "up": p.up,
                "down_reason": p.down_reason,
                "rx_packets": p.counters.rx_packets,
                "rx_bytes": p.counters.rx_bytes,
                "tx_packets": p.counters.tx_packets,
                "tx_bytes": p.counters.tx_bytes,
                "drops": p.counters.total_drops(),
                "capture_dropped": p.counters.capture_dropped,
                "impair": dp.impairment(p.id).map(|i| i.to_string()),
            })
        })
        .collect();
    json!({"lab": lab, "ports": ports})
}

fn fdb(dp: &Datapath, lab: &str, now: Instant) -> Value {
    let names: Vec<_> = dp.ports().map(|p| p.info.name.clone()).collect();
    let mut entries = Vec::new();
    for (_, bridge) in dp.bridges() {
        let mut rows: Vec<_> = bridge.fdb().entries(now).collect();
        rows.sort_by_key(|(mac, _)| *mac);
        for (mac, e) in rows {
            entries.push(json!({
                "bridge": bridge.name(),
                "mac": mac.to_string(),
                "port": names[e.port.0],
                "static": e.fixed,
                "age_s": if e.fixed { json!(null) } else { json!(now.saturating_duration_since(e.last_seen).as_secs()) },
            }));
        }
    }
    json!({"lab": lab, "fdb": entries})
}

fn drops(dp: &Datapath, lab: &str) -> Value {
    let ports: Vec<Value> = dp
        .ports()
        .map(|p| {
            let reasons: serde_json::Map<String, Value> = DropReason::ALL
                .iter()
                .map(|r| (r.name().to_string(), json!(p.counters.dropped(*r))))
                .collect();
            json!({"port": p.info.name, "drops": reasons})
        })
        .collect();
    let bridges: Vec<Value> = dp
        .bridges()
        .map(|(_, b)| {
            let s = b.fdb_stats();
            json!({
                "bridge": b.name(),
                "fdb_entries": b.fdb().len(),
                "fdb_max": b.fdb().max(),
                "fdb_not_learned_full": s.not_learned_full,
                "fdb_learned": s.learned,
                "fdb_moved": s.moved,
                "fdb_aged_out": s.aged_out,
                "unicast": b.stats().unicast,
                "flooded": b.stats().flooded,
            })
        })
        .collect();
    let router = router(dp).map(|r| {
        let stats = r.router().stats();
        let ra = r.reassembler().stats();
        let n = r.router().neighbors().stats();
        let neighbors = json!({
            "entries": r.router().neighbors().len(),
            "learned": n.learned,
            "evicted": n.evicted,
            "not_learned_full": n.not_learned_full,
            "failed": n.failed,
            "busy": n.busy,
            "aged_out": n.aged_out,
        });
        let reasm = json!({
            "fragments": ra.fragments,
            "reassembled": ra.reassembled,
            "timed_out": ra.timed_out,
            "overlapping": ra.overlapping,
            "malformed": ra.malformed,
            "too_many_fragments": ra.too_many_fragments,
            "evicted": ra.evicted,
        });
        let reasons: serde_json::Map<String, Value> = RouterDrop::ALL
            .iter()
            .map(|d| (d.name().to_string(), json!(stats.dropped(*d))))
            .collect();
        json!({
            "drops": reasons,
            "routed": stats.routed,
            "arp_requests": stats.arp_requests,
            "arp_rate_limited": stats.arp_rate_limited,
            "neighbors": neighbors,
            "fragmented": stats.fragmented,
            "flow_resets": stats.flow_resets,
            "reassembly": reasm,
            "icmp_errors": stats.icmp_errors,
            "icmp_rate_limited": stats.icmp_rate_limited,
            "held_for_arp": r.held(),
        })
    });
    let vxlan = vtep(dp).map(|v| {
        VtepDrop::ALL
            .iter()
            .map(|d| (d.name().to_string(), json!(v.dropped(*d))))
            .collect::<serde_json::Map<String, Value>>()
    });
    json!({"lab": lab, "ports": ports, "bridges": bridges, "router": router, "vxlan": vxlan})
}

fn routes(dp: &Datapath, lab: &str) -> Value {
    let routes: Vec<Value> = router(dp)
        .map(|r| {
            let ifaces = r.router().ifaces();
            r.router()
                .routes()
                .routes()
                .iter()
                .map(|route| {
                    let iface = &ifaces[route.iface];
                    json!({
                        "destination": format!("{}/{}", route.network, route.prefix),
                        "bridge": iface.name,
                        "gateway": iface.ip.to_string(),
                        "via": route.gateway.map_or("connected".to_string(), |g| g.to_string()),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({"lab": lab, "routes": routes})
}

fn services(dp: &Datapath, lab: &str) -> Value {
    let mut out = Vec::new();
    if let Some(r) = router(dp) {
        let router = r.router();
        for (i, svc) in router.services().iter().enumerate() {
            let backends: Vec<Value> = svc
                .backends
                .iter()
                .map(|b| {
                    let live = router
                        .flows()
                        .flows()
                        .filter(|f| f.owner == i && f.reply.src == std::net::SocketAddr::V4(*b))
                        .count();
                    json!({"backend": b.to_string(), "connections": live})
                })
                .collect();
            out.push(json!({
                "name": svc.name,
                "vip": svc.vip.to_string(),
                "proto": if svc.proto == vrouter::nat::PROTO_TCP { "tcp" } else { "udp" },
                "backends": backends,
            }));
        }
    }
    json!({"lab": lab, "services": out})
}

fn vxlan(dp: &Datapath, lab: &str, now: Instant) -> Value {
    let Some(v) = vtep(dp) else {
        return json!({"lab": lab, "listen": null, "peers": [], "vnis": [], "drops": {}});
    };
    let peers: Vec<Value> = v
        .peers()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut macs: Vec<String> = v
                .segments()
                .iter()
                .flat_map(|seg| {
                    seg.remote
                        .entries(now)
                        .filter(move |(_, e)| e.port == i)
                        .map(move |(mac, _)| format!("{} (vni {})", mac, seg.vni))
                })
                .collect();
            macs.sort();
            json!({
                "peer": p.addr.to_string(),
                "tx_packets": p.stats.tx_packets,
                "tx_bytes": p.stats.tx_bytes,
                "rx_packets": p.stats.rx_packets,
                "rx_bytes": p.stats.rx_bytes,
                "tx_errors": p.stats.tx_errors,
                "rx_partial_checksum": p.stats.rx_partial_checksum,
                "rx_bad_checksum": p.stats.rx_bad_checksum,
                "rx_gso_frames": p.stats.rx_gso_frames,
                "remote_macs": macs,
            })
        })
        .collect();
    let vnis: Vec<Value> = v
        .segments()
        .iter()
        .map(|seg| json!({"vni": seg.vni, "mtu": seg.mtu, "remote_macs": seg.remote.len()}))
        .collect();
    let drops: serde_json::Map<String, Value> = VtepDrop::ALL
        .iter()
        .map(|d| (d.name().to_string(), json!(v.dropped(*d))))
        .collect();
    json!({
        "lab": lab,
        "listen": v.listen().to_string(),
        "source_ports": v.source_ports(),
        "underlay_capture_dropped": v.underlay_capture_dropped(),
        "peers": peers,
        "vnis": vnis,
        "drops": drops,
    })
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        _ => "?",
    }
}

fn forwards(dp: &Datapath, lab: &str) -> Value {
    let mut out = Vec::new();
    if let Some(proxy) = router(dp).and_then(|r| r.proxy()) {
        for (rule, st) in proxy.rules().iter().zip(proxy.forward_stats()) {
            out.push(json!({
                "proto": proto_name(rule.proto),
                "listen": rule.listen.to_string(),
                "to": rule.to.to_string(),
                "connections": st.connections,
                "active": st.active,
                "bytes_in": st.bytes_in,
                "bytes_out": st.bytes_out,
                "refused": st.refused,
            }));
        }
    }
    json!({"lab": lab, "forwards": out})
}

fn nat(dp: &Datapath, lab: &str, now: Instant) -> Value {
    let mut flows = Vec::new();
    let mut summary = json!(null);
    let mut host = Vec::new();
    let mut host_stats = json!(null);
    if let Some(proxy) = router(dp).and_then(|r| r.proxy()) {
        let mut rows: Vec<_> = proxy.flows(now).collect();
        rows.sort_by_key(|f| (f.proto, f.container, f.remote));
        for f in rows {
            host.push(json!({
                "proto": proto_name(f.proto),
                "container": f.container.to_string(),
                "remote": f.remote.to_string(),
                "kind": if f.forward { "forward" } else { "masquerade" },
                "idle_s": f.idle.as_secs(),
            }));
        }
        let st = proxy.stats();
        host_stats = json!({
            "masquerade": proxy.masquerade(),
            "tcp_opened": st.tcp_opened,
            "tcp_refused": st.tcp_refused,
            "tcp_unreachable": st.tcp_unreachable,
            "udp_flows": st.udp_flows,
            "flows_evicted": st.flows_evicted,
            "no_flow": st.no_flow,
            "ping_refused": st.ping_refused,
            "ping_mode": format!("{:?}", proxy.ping_mode()).to_lowercase(),
            "malformed": st.malformed,
            "flows_expired": st.flows_expired,
            "tcp_reset": st.tcp_reset,
            "syn_limited": st.syn_limited,
            "icmp_errors": st.icmp_errors,
            "accept_errors": st.accept_errors,
        });
    }
    if let Some(r) = router(dp) {
        let table = r.router().flows();
        for f in table.flows() {
            flows.push(json!({
                "proto": if f.original.proto == vrouter::nat::PROTO_TCP { "tcp" } else { "udp" },
                "client": f.original.src.to_string(),
                "to": f.original.dst.to_string(),
                "backend": f.reply.src.to_string(),
                "seen_by_backend_as": f.reply.dst.to_string(),
                "idle_s": now.saturating_duration_since(f.last_seen).as_secs(),
                "closing": f.closing,
            }));
        }
        let st = table.stats();
        summary = json!({
            "flows": table.len(),
            "max": table.capacity(),
            "created": st.created,
            "expired": st.expired,
            "evicted": st.evicted,
        });
    }
    json!({"lab": lab, "nat": flows, "table": summary, "host_flows": host, "host": host_stats})
}

fn arp(dp: &Datapath, lab: &str, now: Instant) -> Value {
    let mut entries: Vec<Value> = Vec::new();
    if let Some(r) = router(dp) {
        let ifaces = r.router().ifaces();
        let mut rows: Vec<_> = r.router().neighbors().entries().collect();
        rows.sort_by_key(|(i, ip, _)| (*i, *ip));
        for (i, ip, n) in rows {
            entries.push(json!({
                "bridge": ifaces[i].name,
                "ip": ip.to_string(),
                "mac": n.mac.to_string(),
                "age_s": now.saturating_duration_since(n.updated).as_secs(),
            }));
        }
    }
    json!({"lab": lab, "arp": entries})
}

/// Prints an answer for a person.
pub fn render(what: &str, v: &Value) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let s = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let list = |key: &str| {
        v.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    match what {
        "ports" => {
            rows.push(
                [
                    "PORT", "BRIDGE", "NETNS", "IFNAME", "MAC", "IP", "STATE", "RX_PKTS",
                    "RX_BYTES", "TX_PKTS", "TX_BYTES", "DROPS",
                ]
                .map(String::from)
                .to_vec(),
            );
            for p in list("ports") {
                let state = if p["up"].as_bool() == Some(true) {
                    "up"
                } else {
                    "down"
                };
                rows.push(vec![
                    s(&p["name"]),
                    s(&p["bridge"]),
                    s(&p["netns"]),
                    s(&p["ifname"]),
                    s(&p["mac"]),
                    s(&p["ip"]),
                    state.to_string(),
                    s(&p["rx_packets"]),
                    s(&p["rx_bytes"]),
                    s(&p["tx_packets"]),
                    s(&p["tx_bytes"]),
                    s(&p["drops"]),
                ]);
            }
        }
        "fdb" => {
            rows.push(
                ["BRIDGE", "MAC", "PORT", "AGE_S"]
                    .map(String::from)
                    .to_vec(),
            );
            for e in list("fdb") {
                let age = if e["static"] == true {
                    "static".to_string()
                } else {
                    s(&e["age_s"])
                };
                rows.push(vec![s(&e["bridge"]), s(&e["mac"]), s(&e["port"]), age]);
            }
        }
        "routes" => {
            rows.push(
                ["DESTINATION", "BRIDGE", "GATEWAY", "VIA"]
                    .map(String::from)
                    .to_vec(),
            );
            for r in list("routes") {
                rows.push(vec![
                    s(&r["destination"]),
                    s(&r["bridge"]),
                    s(&r["gateway"]),
                    s(&r["via"]),
                ]);
            }
        }
        "vxlan" => {
            rows.push(
                [
                    "PEER",
                    "TX_PKTS",
                    "TX_BYTES",
                    "RX_PKTS",
                    "RX_BYTES",
                    "TX_ERRORS",
                    "RX_PARTIAL_CSUM",
                    "RX_BAD_CSUM",
                    "RX_GSO",
                    "REMOTE_MACS",
                ]
                .map(String::from)
                .to_vec(),
            );
            for p in list("peers") {
                let macs: Vec<String> = p["remote_macs"]
                    .as_array()
                    .map(|a| a.iter().map(s).collect())
                    .unwrap_or_default();
                rows.push(vec![
                    s(&p["peer"]),
                    s(&p["tx_packets"]),
                    s(&p["tx_bytes"]),
                    s(&p["rx_packets"]),
                    s(&p["rx_bytes"]),
                    s(&p["tx_errors"]),
                    s(&p["rx_partial_checksum"]),
                    s(&p["rx_bad_checksum"]),
                    s(&p["rx_gso_frames"]),
                    if macs.is_empty() {
                        "-".into()
                    } else {
                        macs.join(", ")
                    },
                ]);
            }
        }
        "forwards" => {
            rows.push(
                [
                    "PROTO",
                    "LISTEN",
                    "TO",
                    "CONNECTIONS",
                    "ACTIVE",
                    "REFUSED",
                    "BYTES_IN",
                    "BYTES_OUT",
                ]
                .map(String::from)
                .to_vec(),
            );
            for f in list("forwards") {
                rows.push(vec![
                    s(&f["proto"]),
                    s(&f["listen"]),
                    s(&f["to"]),
                    s(&f["connections"]),
                    s(&f["active"]),
                    s(&f["refused"]),
                    s(&f["bytes_in"]),
                    s(&f["bytes_out"]),
                ]);
            }
        }
        "services" => {
            rows.push(
                ["SERVICE", "PROTO", "VIP", "BACKEND", "CONNECTIONS"]
                    .map(String::from)
                    .to_vec(),
            );
            for svc in list("services") {
                for b in svc["backends"].as_array().cloned().unwrap_or_default() {
                    rows.push(vec![
                        s(&svc["name"]),
                        s(&svc["proto"]),
                        s(&svc["vip"]),
                        s(&b["backend"]),
                        s(&b["connections"]),
                    ]);
                }
            }
        }
        "nat" => {
            // Three parts: the services' translated flows, the host proxy's flows
            // (masquerade and forwards), and the proxy's counters.
            let mut out = String::new();
            rows.push(
                [
                    "SERVICE_FLOW",
                    "CLIENT",
                    "TO",
                    "BACKEND",
                    "BACKEND_SEES",
                    "IDLE_S",
                    "CLOSING",
                ]
                .map(String::from)
                .to_vec(),
            );
            for f in list("nat") {
                rows.push(vec![
                    s(&f["proto"]),
                    s(&f["client"]),
                    s(&f["to"]),
                    s(&f["backend"]),
                    s(&f["seen_by_backend_as"]),
                    s(&f["idle_s"]),
                    s(&f["closing"]),
                ]);
            }
            out.push_str(&table(&rows));
            let mut host = vec![["HOST_FLOW", "KIND", "CONTAINER", "REMOTE", "IDLE_S"]
                .map(String::from)
                .to_vec()];
            for f in list("host_flows") {
                host.push(vec![
                    s(&f["proto"]),
                    s(&f["kind"]),
                    s(&f["container"]),
                    s(&f["remote"]),
                    s(&f["idle_s"]),
                ]);
            }
            out.push('\n');
            out.push_str(&table(&host));
            if let Some(counters) = v["host"].as_object() {
                let line: Vec<String> = counters
                    .iter()
                    .map(|(k, v)| format!("{k}={}", s(v)))
                    .collect();
                out.push_str(&format!("\nhost proxy: {}\n", line.join(" ")));
            }
            return out;
        }
        "arp" => {
            rows.push(["BRIDGE", "IP", "MAC", "AGE_S"].map(String::from).to_vec());
            for e in list("arp") {
                rows.push(vec![
                    s(&e["bridge"]),
                    s(&e["ip"]),
                    s(&e["mac"]),
                    s(&e["age_s"]),
                ]);
            }
        }
        "drops" => {
            rows.push(["PORT", "REASON", "COUNT"].map(String::from).to_vec());
            for p in list("ports") {
                if let Some(reasons) = p["drops"].as_object() {
                    for (reason, count) in reasons {
                        if count.as_u64().unwrap_or(0) > 0 {
                            rows.push(vec![s(&p["port"]), reason.clone(), s(count)]);
                        }
                    }
                }
            }
            if let Some(reasons) = v["vxlan"].as_object() {
                for (reason, count) in reasons {
                    if count.as_u64().unwrap_or(0) > 0 {
                        rows.push(vec!["vxlan".into(), reason.clone(), s(count)]);
                    }
                }
            }
            if let Some(reasons) = v["router"]["drops"].as_object() {
                for (reason, count) in reasons {
                    if count.as_u64().unwrap_or(0) > 0 {
                        rows.push(vec!["router".into(), reason.clone(), s(count)]);
                    }
                }
            }
            // What the router did besides dropping, where it is worth a look: packets it
            // cut into fragments, reassembly's outcomes, the neighbour table's.
            for (group, keys) in [
                ("", &["fragmented", "flow_resets", "arp_rate_limited"][..]),
                (
                    "reassembly",
                    &[
                        "reassembled",
                        "timed_out",
                        "overlapping",
                        "malformed",
                        "too_many_fragments",
                        "evicted",
                    ],
                ),
                (
                    "neighbors",
                    &["evicted", "not_learned_full", "failed", "busy"],
                ),
            ] {
                let values = if group.is_empty() {
                    &v["router"]
                } else {
                    &v["router"][group]
                };
                for key in keys {
                    let n = values[*key].as_u64().unwrap_or(0);
                    if n > 0 {
                        let name = if group.is_empty() {
                            key.to_string()
                        } else {
                            format!("{group}.{key}")
                        };
                        rows.push(vec!["router".into(), name, n.to_string()]);
                    }
                }
            }
            for b in list("bridges") {
                let full = b["fdb_not_learned_full"].as_u64().unwrap_or(0);
                if full > 0 {
                    rows.push(vec![
                        format!("bridge {}", s(&b["bridge"])),
                        "fdb_full_not_learned (flooded instead)".into(),
                        full.to_string(),
                    ]);
                }
            }
        }
        _ => return serde_json::to_string_pretty(v).unwrap_or_default(),
    }
    table(&rows)
}

pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|x| x.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<w$}", w = widths[c]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_aligned_tables() {
        let v = json!({"fdb": [
            {"bridge": "br0", "mac": "02:00:ac:10:01:02", "port": "db", "age_s": 3},
            {"bridge": "br0", "mac": "02:00:ac:10:01:03", "port": "web", "age_s": 12},
        ]});
        let out = render("fdb", &v);
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("BRIDGE  MAC"));
        assert!(lines[2].contains("02:00:ac:10:01:03  web"));
    }

    #[test]
    fn drops_text_shows_reassembly_and_fragmenting() {
        let v = json!({"ports": [], "bridges": [], "router": {
            "drops": {"too_big": 1}, "fragmented": 4,
            "reassembly": {"overlapping": 2, "timed_out": 0},
            "neighbors": {"evicted": 7},
        }});
        let out = render("drops", &v);
        assert!(out.contains("router  fragmented"), "{out}");
        assert!(out.contains("router  reassembly.overlapping  2"), "{out}");
        assert!(out.contains("router  neighbors.evicted"), "{out}");
        assert!(!out.contains("timed_out"), "{out}");
    }

    #[test]
    fn nat_text_shows_host_flows_and_counters() {
        let v = json!({
            "nat": [],
            "host_flows": [{"proto": "udp", "kind": "masquerade", "container": "10.0.0.2:5000",
                            "remote": "10.250.0.2:53", "idle_s": 4}],
            "host": {"ping_mode": "raw", "ping_refused": 3},
        });
        let out = render("nat", &v);
        assert!(
            out.contains("udp        masquerade  10.0.0.2:5000  10.250.0.2:53  4"),
            "{out}"
        );
        assert!(
            out.contains("ping_mode=raw") && out.contains("ping_refused=3"),
            "{out}"
        );
    }

    #[test]
    fn drops_table_lists_only_nonzero_reasons() {
        let v =
            json!({"ports": [{"port": "web", "drops": {"runt": 2, "oversize": 0}}], "bridges": []});
        let out = render("drops", &v);
        assert!(out.contains("web   runt"));
        assert!(!out.contains("oversize"));
    }
}
