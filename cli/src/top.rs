//! `tapnet top`: a live view of each port's rates, refreshed in the terminal, from
//! the same counters `show ports` reads.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;

use daemon::control::client;

/// Rates from two readings of `show ports` taken `secs` apart, as table rows.
pub fn rates(before: &serde_json::Value, after: &serde_json::Value, secs: f64) -> Vec<Vec<String>> {
    let read = |v: &serde_json::Value| -> HashMap<String, [u64; 5]> {
        v["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let n = |k: &str| p[k].as_u64().unwrap_or(0);
                let name = p["name"].as_str().unwrap_or("?").to_string();
                (
                    name,
                    [
                        n("rx_packets"),
                        n("rx_bytes"),
                        n("tx_packets"),
                        n("tx_bytes"),
                        n("drops"),
                    ],
                )
            })
            .collect()
    };
    let (old, new) = (read(before), read(after));
    let mut rows = vec![[
        "PORT",
        "STATE",
        "RX_PPS",
        "RX_MBIT/S",
        "TX_PPS",
        "TX_MBIT/S",
        "DROPS/S",
    ]
    .map(String::from)
    .to_vec()];
    for p in after["ports"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("?").to_string();
        let (Some(a), Some(b)) = (old.get(&name), new.get(&name)) else {
            continue;
        };
        let d = |i: usize| b[i].saturating_sub(a[i]) as f64 / secs.max(1e-3);
        let state = if p["up"].as_bool() == Some(true) {
            "up"
        } else {
            "down"
        };
        rows.push(vec![
            name,
            state.into(),
            format!("{:.0}", d(0)),
            format!("{:.2}", d(1) * 8.0 / 1e6),
            format!("{:.0}", d(2)),
            format!("{:.2}", d(3) * 8.0 / 1e6),
            format!("{:.0}", d(4)),
        ]);
    }
    rows
}

/// Refreshes every `interval` until interrupted, or `count` times.
pub fn run(lab: &str, interval: Duration, count: Option<u64>) -> Result<()> {
    let mut before = client::show(lab, "ports")?;
    let mut t0 = Instant::now();
    let mut shown = 0;
    let mut out = std::io::stdout();
    loop {
        std::thread::sleep(interval);
        let after = client::show(lab, "ports")?;
        let secs = t0.elapsed().as_secs_f64();
        t0 = Instant::now();
        let rows = rates(&before, &after, secs);
        // Home and clear, then the table: a terminal shows it in place.
        write!(
            out,
            "\x1b[H\x1b[2Jtapnet top: lab {lab}, every {:.1} s (Ctrl-C quits)\n\n",
            interval.as_secs_f64()
        )?;
        write!(out, "{}", crate::render::table(&rows))?;
        out.flush()?;
        before = after;
        shown += 1;
        if count.is_some_and(|c| shown >= c) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rates_are_deltas_over_time() {
        let a = json!({"ports": [{"name": "web", "up": true, "rx_packets": 10, "rx_bytes": 1000, "tx_packets": 0, "tx_bytes": 0, "drops": 0}]});
        let b = json!({"ports": [{"name": "web", "up": true, "rx_packets": 110, "rx_bytes": 126000, "tx_packets": 50, "tx_bytes": 0, "drops": 2}]});
        let rows = rates(&a, &b, 2.0);
        assert_eq!(rows[1], vec!["web", "up", "50", "0.50", "25", "0.00", "1"]);
    }
}
