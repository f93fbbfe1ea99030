//! `tapnet show` for a person: the JSON a running lab answers (the daemon's `query`),
//! as aligned tables. `top` uses the same tables.

use serde_json::Value;

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
                let state = match (p["up"].as_bool(), p["link_down"].as_bool()) {
                    (Some(true), Some(true)) => "link-down",
                    (Some(true), _) => "up",
                    _ => "down",
                };
                // A VM's socket port says what its peer did: connects, refused.
                let mut ifname = s(&p["ifname"]);
                if let Some(io) = p["io"].as_object().filter(|o| !o.is_empty()) {
                    let said: Vec<String> = io
                        .iter()
                        .map(|(k, n)| format!("{n} {}", k.trim_start_matches("vm_")))
                        .collect();
                    ifname = format!("{ifname} ({})", said.join(", "));
                }
                rows.push(vec![
                    s(&p["name"]),
                    s(&p["bridge"]),
                    s(&p["netns"]),
                    ifname,
                    s(&p["mac"]),
                    match p["ip6"].as_str() {
                        Some(ip6) => format!("{} {ip6}", s(&p["ip"])),
                        None => s(&p["ip"]),
                    },
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
                    "SOURCE",
                    "TX_PKTS",
                    "TX_BYTES",
                    "TX_GSO",
                    "RX_PKTS",
                    "RX_BYTES",
                    "TX_ERRORS",
                    "RX_PARTIAL_CSUM",
                    "RX_BAD_CSUM",
                    "RX_GSO",
                    "RX_GRO_MERGED",
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
                    s(&p["source"]),
                    s(&p["tx_packets"]),
                    s(&p["tx_bytes"]),
                    s(&p["tx_gso_sends"]),
                    s(&p["rx_packets"]),
                    s(&p["rx_bytes"]),
                    s(&p["tx_errors"]),
                    s(&p["rx_partial_checksum"]),
                    s(&p["rx_bad_checksum"]),
                    s(&p["rx_gso_frames"]),
                    s(&p["rx_gro_merged"]),
                    // A host may have thousands: the first few, and how many.
                    match p["remote_mac_count"].as_u64().unwrap_or(macs.len() as u64) {
                        0 => "-".into(),
                        1..=4 => macs.join(", "),
                        n => format!("{}, ... ({n} in all)", macs[..3].join(", ")),
                    },
                ]);
            }
            // The store, under the peers: whether it answers, and what it holds.
            if let Some(st) = v.get("store").filter(|st| st.is_object()) {
                let state = match st["unreachable_since"].as_u64() {
                    Some(t) => format!(
                        "unreachable since {} ({} s ago): {}",
                        utc(t),
                        s(&st["unreachable_for_s"]),
                        s(&st["last_error"])
                    ),
                    None => "reachable".to_string(),
                };
                let list: Vec<String> = st["endpoints"]
                    .as_array()
                    .map(|a| a.iter().map(s).collect())
                    .unwrap_or_default();
                return format!(
                    "{}\nstore: {state}\n  endpoints {}; registered {} ({} registrations); revision {}; {} hosts; arp_suppressed {}\n  puts {}, deletes {}, bad_values {}, other_labs {}, hosts_over_limit {}, conflicts {}, registered_conflicts {}, registered_over_limit {}\n",
                    table(&rows).trim_end(),
                    list.join(", "),
                    s(&st["registered"]),
                    s(&st["registrations"]),
                    s(&st["revision"]),
                    s(&st["hosts"]),
                    s(&v["arp_suppressed"]),
                    s(&st["puts"]),
                    s(&st["deletes"]),
                    s(&st["bad_values"]),
                    s(&st["other_labs"]),
                    s(&st["hosts_over_limit"]),
                    s(&st["conflicts"]),
                    s(&st["registered_conflicts"]),
                    s(&st["registered_over_limit"]),
                );
            }
        }
        "threads" => {
            rows.push(
                [
                    "THREAD",
                    "TID",
                    "FRAMES",
                    "HANDED_OFF",
                    "CPU_MS",
                    "CPUS",
                    "WRITES",
                ]
                .map(String::from)
                .to_vec(),
            );
            for t in list("threads") {
                rows.push(vec![
                    s(&t["thread"]),
                    s(&t["tid"]),
                    s(&t["frames"]),
                    s(&t["handed_off"]),
                    s(&t["cpu_ms"]),
                    s(&t["cpus"]),
                    s(&t["writes"]),
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
            rows.push(
                ["BRIDGE", "IP", "MAC", "STATE", "AGE_S"]
                    .map(String::from)
                    .to_vec(),
            );
            for e in list("arp") {
                rows.push(vec![
                    s(&e["bridge"]),
                    s(&e["ip"]),
                    s(&e["mac"]),
                    s(&e["state"]),
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
            if let Some(reasons) = v["host_proxy"].as_object() {
                for (reason, count) in reasons {
                    if count.as_u64().unwrap_or(0) > 0 {
                        rows.push(vec!["host proxy".into(), reason.clone(), s(count)]);
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
                    "ipv6",
                    &[
                        "ra_rate_limited",
                        "neighbors6_full",
                        "neighbors6_moved_refused",
                    ][..],
                ),
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

/// `secs` since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC` (the civil-from-days
/// algorithm of Howard Hinnant's date library).
fn utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Cells wider than this are cut (with `...`): a table stays a table.
const MAX_CELL: usize = 400;

/// Rows as a table: each column as wide as its widest cell, two spaces apart.
pub fn table(rows: &[Vec<String>]) -> String {
    let cut: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| match c.char_indices().nth(MAX_CELL) {
                    Some((at, _)) => format!("{}...", &c[..at]),
                    None => c.clone(),
                })
                .collect()
        })
        .collect();
    let rows = &cut[..];
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
    use serde_json::json;

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
    fn times_read_as_utc_and_long_cells_are_cut() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_103_540), "2026-12-01 05:39:00 UTC");
        let long = "x".repeat(100_000);
        let out = table(&[vec!["a".into(), long]]);
        assert!(out.len() < 500, "{}", out.len());
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
