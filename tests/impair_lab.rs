//! Impairments on a port, in the lab file and at run time: loss, delay and a rate
//! limit, measured with ping and iperf3 (wide bands: the machine is shared).

mod common;

use common::*;

fn lab(impair_b: &str) -> (RunningLab, Vec<String>) {
    let name = unique("l");
    let ns: Vec<String> = (0..2).map(|_| unique("n")).collect();
    let text = LabText::new(&name)
        .bridge("br0", "10.225.0.0/24")
        .port("a", "br0", &ns[0], "10.225.0.2/24")
        .port("b", "br0", &ns[1], "10.225.0.3/24")
        .raw(impair_b)
        .text();
    (RunningLab::start(&name, &ns, &text), ns)
}

fn impair(lab: &RunningLab, port: &str, spec: &[&str]) -> std::process::Output {
    let mut cmd = vec![TAPNET, "impair", port];
    cmd.extend_from_slice(spec);
    cmd.extend_from_slice(&["--lab", &lab.name]);
    run(&cmd, 10)
}

/// Average ping round trip in milliseconds.
fn rtt_ms(ns: &str, ip: &str) -> f64 {
    let out = ns_run(ns, &["ping", "-c", "5", "-i", "0.2", "-q", ip], 20);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .unwrap_or_else(|| panic!("{text}"));
    line.split('=')
        .nth(1)
        .unwrap()
        .trim()
        .split('/')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn loss_delay_and_clear_at_run_time() {
    let (lab, ns) = lab("");
    assert!(ping(&ns[0], "10.225.0.3", 2));
    let base = rtt_ms(&ns[0], "10.225.0.3");

    assert!(impair(&lab, "b", &["loss=100%"]).status.success());
    assert!(
        !ping(&ns[0], "10.225.0.3", 2),
        "loss=100% let pings through"
    );
    assert!(
        lab.show("drops")["ports"][1]["drops"]["impaired"]
            .as_u64()
            .unwrap()
            >= 2
    );

    assert!(impair(&lab, "b", &["delay=50ms"]).status.success());
    let delayed = rtt_ms(&ns[0], "10.225.0.3");
    assert!(
        delayed - base > 40.0 && delayed < base + 150.0,
        "rtt {base} -> {delayed} ms"
    );
    assert_eq!(lab.port("b")["impair"], "delay=50000us");

    assert!(impair(&lab, "b", &["clear"]).status.success());
    assert!(rtt_ms(&ns[0], "10.225.0.3") < base + 40.0);
    assert_eq!(lab.port("b")["impair"], serde_json::Value::Null);

    for bad in [
        &["loss=150%"][..],
        &["delay=5parsecs"],
        &["jitter=10ms"],
        &["colour=red"],
    ] {
        let out = impair(&lab, "b", bad);
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    }
    assert_eq!(impair(&lab, "nosuch", &["loss=1%"]).status.code(), Some(1));
}

#[test]
fn a_rate_limit_from_the_lab_file_caps_iperf3() {
    let (lab, ns) = lab("impair = \"rate=10mbit\"");
    assert_eq!(lab.port("b")["impair"], "rate=10000000bit");
    let _server = Background::spawn(&ns[1], &["iperf3", "-s", "-B", "10.225.0.3"]);
    let mut got = None;
    for _ in 0..30 {
        let o = ns_run(&ns[0], &["iperf3", "-c", "10.225.0.3", "-t", "3", "-J"], 20);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            got = Some(bps);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let bps = got.expect("iperf3 never completed");
    assert!((5e6..15e6).contains(&bps), "{:.1} Mbit/s", bps / 1e6);
}
