//! The answers to `show` requests: the datapath thread turns live state (ports, FDB,
//! drops, the router's tables, services, NAT, forwards, VXLAN) into JSON, which the
//! client prints as it is (`--json`) or as a table (the cli's `render`).

use std::time::Instant;

use encap::vtep::VtepDrop;
use encap::Vtep;
use serde_json::{json, Value};
use vrouter::{RouterDrop, RouterHandler};
use vswitch::{Datapath, DropReason};

use crate::Handles;

/// The lab's datapath, with its router and VXLAN endpoint (if it has them).
#[derive(Clone, Copy)]
struct Live<'a> {
    dp: &'a Datapath,
    handles: Handles,
}

impl<'a> Live<'a> {
    fn vtep(&self) -> Option<&'a Vtep> {
        Some(self.dp.handler_of(self.handles.vtep?))
    }

    fn router(&self) -> Option<&'a RouterHandler> {
        Some(self.dp.handler_of(self.handles.router?))
    }
}

/// What `show` can name. The ones later issues fill in answer with a clear error.
pub const WHATS: [&str; 11] = [
    "ports", "fdb", "drops", "routes", "arp", "nat", "forwards", "services", "vxlan", "lab",
    "threads",
];

/// Answers one control request line, e.g. `show fdb`, on the datapath thread.
pub fn answer(dp: &Datapath, handles: Handles, lab: &str, line: &str, now: Instant) -> Value {
    let l = Live { dp, handles };
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("show"), Some(what), None) => match what {
            "ports" => ports(dp, lab),
            "fdb" => fdb(dp, lab, now),
            "drops" => drops(l, lab),
            "routes" => routes(l, lab),
            "services" => services(l, lab),
            "nat" => nat(l, lab, now),
            "forwards" => forwards(l, lab),
            "vxlan" => vxlan(l, lab, now),
            "arp" => arp(l, lab, now),
            "threads" => threads(dp, lab),
            w if WHATS.contains(&w) => {
                json!({"error": format!("show {w}: not supported by this tapnet")})
            }
            w => json!({"error": format!("show {w}: unknown; one of {}", WHATS.join(", "))}),
        },
        _ => json!({"error": format!("unknown request {line:?}")}),
    }
}

/// The datapath threads: what each forwarded, what the workers handed to thread 0,
/// each one's CPU time so far (user and system, ms, from
/// `/proc/self/task/TID/stat`: what `top -H` shows), the CPUs it may run on, and how
/// it writes frames to TAPs (`io_uring` in batches, or one `write` each).
fn threads(dp: &Datapath, lab: &str) -> Value {
    let threads: Vec<Value> = dp
        .thread_stats()
        .iter()
        .map(|t| {
            json!({
                "thread": t.index,
                "tid": t.tid,
                "frames": t.frames,
                "handed_off": t.handed_off,
                "writes": if t.batched_writes { "io_uring" } else { "write" },
                "cpu_ms": cpu_ms(t.tid),
                "cpus": cpus_allowed(t.tid),
            })
        })
        .collect();
    json!({"lab": lab, "threads": threads})
}

/// The CPUs a thread may run on, as the kernel lists them (`0-1`, `3`: the
/// `Cpus_allowed_list` of `/proc/self/task/TID/status`); None if unknown.
fn cpus_allowed(tid: u64) -> Option<String> {
    if tid == 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_string())
}

/// A thread's CPU time (utime + stime), in milliseconds; None if unknown.
fn cpu_ms(tid: u64) -> Option<u64> {
    if tid == 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after `)`.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1000 / hz)
}

fn ports(dp: &Datapath, lab: &str) -> Value {
    let bridges: Vec<_> = dp.bridges().map(|(_, b)| b.name().to_string()).collect();
    let ports: Vec<Value> = dp
        .ports()
        .map(|p| {
            json!({
                "name": p.info.name,
                "kind": p
                    .internal
                    .and_then(|h| dp.handler(h))
                    .map_or(p.io_kind.unwrap_or("tap"), |h| h.kind()),
                "bridge": bridges[p.info.bridge.0],
                "netns": p.info.netns,
                "ifname": p.info.ifname,
                "mac": p.info.mac.to_string(),
                "ip": p.info.ip,
                "ip6": p.info.ip6.map(|a| a.to_string()),
                "up": p.up,
                "link_down": p.link_down,
                "down_reason": p.down_reason,
                "rx_packets": p.counters.rx_packets,
                "rx_bytes": p.counters.rx_bytes,
                "tx_packets": p.counters.tx_packets,
                "tx_bytes": p.counters.tx_bytes,
                "drops": p.counters.total_drops()
                    + p.io.map_or(0, |io| io.io_drops().iter().map(|(_, n)| n).sum()),
                "io": p.io.map(|io| io.io_stats().into_iter().map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>()),
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

fn drops(l: Live<'_>, lab: &str) -> Value {
    let dp = l.dp;
    let ports: Vec<Value> = dp
        .ports()
        .map(|p| {
            let reasons: serde_json::Map<String, Value> = DropReason::ALL
                .iter()
                .map(|r| (r.name().to_string(), json!(p.counters.dropped(*r))))
                .chain(
                    p.io.map(|io| io.io_drops())
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(r, n)| (r.to_string(), json!(n))),
                )
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
    let router = l.router().map(|r| {
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
            "ipv6": {
                "na_sent": stats.na_sent,
                "ra_sent": stats.ra_sent,
                "ns_sent": stats.ns_sent,
                "ra_rate_limited": stats.ra_rate_limited,
                "neighbors6_full": stats.neighbors6_full,
                "neighbors6_moved_refused": stats.neighbors6_moved_refused,
            },
        })
    });
    let vxlan = l.vtep().map(|v| {
        VtepDrop::ALL
            .iter()
            .map(|d| (d.name().to_string(), json!(v.dropped(*d))))
            .collect::<serde_json::Map<String, Value>>()
    });
    // What the host proxy dropped (the rest of its counters: `show nat`).
    let host_proxy = l.router().and_then(|r| r.proxy()).map(|p| {
        let st = p.stats();
        json!({
            "malformed": st.malformed,
            "not_carried": st.not_carried,
            "no_flow": st.no_flow,
            "container_limited": st.container_limited,
            "syn_limited": st.syn_limited,
            "ping_refused": st.ping_refused,
        })
    });
    json!({"lab": lab, "ports": ports, "bridges": bridges, "router": router, "vxlan": vxlan, "host_proxy": host_proxy})
}

fn routes(l: Live<'_>, lab: &str) -> Value {
    let routes: Vec<Value> = l
        .router()
        .map(|r| {
            let ifaces = r.router().ifaces();
            let v4 = r.router().routes().routes().iter().map(|route| {
                let iface = &ifaces[route.iface];
                json!({
                    "destination": format!("{}/{}", route.network, route.prefix),
                    "bridge": iface.name,
                    "gateway": iface.ip.map_or(String::new(), |ip| ip.to_string()),
                    "via": route.gateway.map_or("connected".to_string(), |g| g.to_string()),
                })
            });
            // Each dual-stack leg's subnet6, connected.
            let v6 = ifaces.iter().filter_map(|iface| {
                let (gw6, prefix) = iface.ip6?;
                let net = vswitch::wire::ipv6::network(gw6, prefix);
                Some(json!({
                    "destination": format!("{net}/{prefix}"),
                    "bridge": iface.name,
                    "gateway": gw6.to_string(),
                    "via": "connected",
                }))
            });
            v4.chain(v6).collect()
        })
        .unwrap_or_default();
    json!({"lab": lab, "routes": routes})
}

fn services(l: Live<'_>, lab: &str) -> Value {
    let mut out = Vec::new();
    if let Some(r) = l.router() {
        let router = r.router();
        for (i, svc) in router.services().iter().enumerate() {
            let backends: Vec<Value> = svc
                .backends
                .iter()
                .map(|b| {
                    let live = router
                        .flows()
                        .flows()
                        .filter(|f| f.owner == i && f.reply.src == *b)
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

/// Remote MACs listed per peer in `show vxlan` (all are counted): a host may have
/// thousands.
const MACS_LISTED: usize = 16;

fn vxlan(l: Live<'_>, lab: &str, now: Instant) -> Value {
    let Some(v) = l.vtep() else {
        return json!({"lab": lab, "listen": null, "peers": [], "vnis": [], "drops": {}});
    };
    // One pass over the remote tables, not one per peer.
    let mut counts = vec![0usize; v.peers().len()];
    let mut listed: Vec<Vec<String>> = vec![Vec::new(); v.peers().len()];
    for seg in v.segments() {
        for (mac, e) in seg.remote.entries(now) {
            let Some(n) = counts.get_mut(e.port) else {
                continue;
            };
            *n += 1;
            if listed[e.port].len() < MACS_LISTED {
                listed[e.port].push(format!("{} (vni {})", mac, seg.vni));
            }
        }
    }
    let peers: Vec<Value> = v
        .peers()
        .iter()
        .enumerate()
        .filter(|(_, p)| p.live)
        .map(|(i, p)| {
            let (count, mut macs) = (counts[i], std::mem::take(&mut listed[i]));
            macs.sort();
            json!({
                "peer": p.addr.to_string(),
                "source": if p.from_store { "etcd" } else { "static" },
                "tx_packets": p.stats.tx_packets,
                "tx_bytes": p.stats.tx_bytes,
                "tx_gso_sends": p.stats.tx_gso_sends,
                "rx_packets": p.stats.rx_packets,
                "rx_bytes": p.stats.rx_bytes,
                "tx_errors": p.stats.tx_errors,
                "rx_partial_checksum": p.stats.rx_partial_checksum,
                "rx_bad_checksum": p.stats.rx_bad_checksum,
                "rx_gso_frames": p.stats.rx_gso_frames,
                "rx_gro_merged": p.stats.rx_gro_merged,
                "rx_gro_merged_v6": p.stats.rx_gro_merged_v6,
                "remote_macs": macs,
                "remote_mac_count": count,
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
    let store = v.store().map(|st| {
        let secs = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        };
        json!({
            "endpoints": st.endpoints,
            "reachable": st.unreachable_since.is_none(),
            "unreachable_since": st.unreachable_since.map(secs),
            "unreachable_for_s": st.unreachable_since
                .and_then(|t| t.elapsed().ok())
                .map(|d| d.as_secs()),
            "last_error": st.last_error,
            "registered": st.registered,
            "registrations": st.registrations,
            "revision": st.revision,
            "hosts": v.endpoint().store_peers(),
            "puts": st.view.puts,
            "deletes": st.view.deletes,
            "bad_values": st.view.bad_values,
            "other_labs": st.view.other_labs,
            "hosts_over_limit": st.view.hosts_over_limit,
            "conflicts": st.view.conflicts,
            "registered_over_limit": v.endpoint().registered_over_limit,
            "registered_conflicts": v.endpoint().registered_conflicts,
        })
    });
    json!({
        "lab": lab,
        "listen": v.listen().to_string(),
        "source_ports": v.source_ports(),
        "underlay_capture_dropped": v.underlay_capture_dropped(),
        "peers": peers,
        "vnis": vnis,
        "drops": drops,
        "arp_suppressed": v.arp_suppressed(),
        "store": store,
    })
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        58 => "icmp6",
        _ => "?",
    }
}

fn forwards(l: Live<'_>, lab: &str) -> Value {
    let mut out = Vec::new();
    if let Some(proxy) = l.router().and_then(|r| r.proxy()) {
        for (rule, st) in proxy.forwards() {
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

fn nat(l: Live<'_>, lab: &str, now: Instant) -> Value {
    let mut flows = Vec::new();
    let mut summary = json!(null);
    let mut host = Vec::new();
    let mut host_stats = json!(null);
    if let Some(proxy) = l.router().and_then(|r| r.proxy()) {
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
            "not_carried": st.not_carried,
            "flows_expired": st.flows_expired,
            "tcp_reset": st.tcp_reset,
            "syn_limited": st.syn_limited,
            "handshake_timeouts": st.handshake_timeouts,
            "container_limited": st.container_limited,
            "max_per_container": proxy.max_per_container(),
            "icmp_errors": st.icmp_errors,
            "accept_errors": st.accept_errors,
        });
    }
    if let Some(r) = l.router() {
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

fn arp(l: Live<'_>, lab: &str, now: Instant) -> Value {
    let mut entries: Vec<Value> = Vec::new();
    if let Some(r) = l.router() {
        let ifaces = r.router().ifaces();
        let mut rows: Vec<_> = r.router().neighbors().entries().collect();
        rows.sort_by_key(|(i, ip, _)| (*i, *ip));
        for (i, ip, n) in rows {
            entries.push(json!({
                "bridge": ifaces[i].name,
                "ip": ip.to_string(),
                "mac": n.mac.to_string(),
                "state": n.state.name(),
                "age_s": if n.state == vrouter::neighbor::State::Permanent { json!(null) } else { json!(now.saturating_duration_since(n.updated).as_secs()) },
            }));
        }
        // The IPv6 neighbours in the same table: `show arp` is the neighbour table.
        for (i, ip, mac, age, permanent) in r.router().neighbors6(now) {
            entries.push(json!({
                "bridge": ifaces[i].name,
                "ip": ip.to_string(),
                "mac": mac.to_string(),
                "state": if permanent { "PERMANENT" } else { "REACHABLE" },
                "age_s": if permanent { json!(null) } else { json!(age) },
            }));
        }
    }
    json!({"lab": lab, "arp": entries})
}
