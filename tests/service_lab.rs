//! Service VIPs with real servers (python3 -m http.server) and a real client (curl):
//! connections spread over the backends, each one stays with its backend, and a
//! client on the backends' own bridge (hairpin) is served too.

mod common;

use std::collections::HashMap;

use common::*;

struct ServiceLab {
    lab: RunningLab,
    client: String,
    backends: Vec<String>,
    _dirs: Vec<TempDir>,
    _servers: Vec<Background>,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn service_lab() -> ServiceLab {
    let name = unique("l");
    let client = unique("n");
    let backends: Vec<String> = (0..2).map(|_| unique("n")).collect();
    let text = LabText::new(&name)
        .bridge("front", "10.230.1.0/24")
        .bridge("back", "10.230.2.0/24")
        .port("client", "front", &client, "10.230.1.2/24")
        .port("b1", "back", &backends[0], "10.230.2.2/24")
        .port("b2", "back", &backends[1], "10.230.2.3/24")
        .service(
            "api",
            "10.230.2.100:80",
            "tcp",
            &["10.230.2.2:8080", "10.230.2.3:8080"],
        )
        .service(
            "echo",
            "10.230.2.101:7",
            "udp",
            &["10.230.2.2:7000", "10.230.2.3:7000"],
        )
        .service("tcpecho", "10.230.2.102:7", "tcp", &["10.230.2.2:7001"])
        .nat()
        .with("masquerade", false)
        .with("tcp_timeout_s", 3)
        .text();
    let mut all = vec![client.clone()];
    all.extend(backends.iter().cloned());
    let lab = RunningLab::start(&name, &all, &text);
    let mut dirs = Vec::new();
    let mut servers = Vec::new();
    for (i, ns) in backends.iter().enumerate() {
        let dir = std::env::temp_dir().join(unique("www"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("who"), format!("b{}", i + 1)).unwrap();
        let ip = format!("10.230.2.{}", i + 2);
        servers.push(Background::spawn(
            ns,
            &[
                "python3",
                "-m",
                "http.server",
                "8080",
                "--bind",
                &ip,
                "--directory",
                dir.to_str().unwrap(),
            ],
        ));
        dirs.push(TempDir(dir));
    }
    // Wait until both servers answer directly.
    for i in 0..2 {
        let url = format!("http://10.230.2.{}:8080/who", i + 2);
        let ok = (0..100).any(|_| {
            let out = ns_run(&client, &["curl", "-s", "-m", "2", &url], 5);
            out.status.success() || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                false
            }
        });
        assert!(ok, "backend {i} never answered");
    }
    ServiceLab {
        lab,
        client,
        backends,
        _dirs: dirs,
        _servers: servers,
    }
}

#[test]
fn twenty_connections_to_the_vip_spread_over_both_backends() {
    let t = service_lab();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..20 {
        let out = ns_run(
            &t.client,
            &["curl", "-s", "-m", "5", "http://10.230.2.100/who"],
            10,
        );
        assert!(out.status.success(), "curl to the VIP failed");
        let body = String::from_utf8_lossy(&out.stdout).to_string();
        // A whole reply from exactly one backend: request and reply stayed together.
        assert!(body == "b1" || body == "b2", "reply {body:?}");
        *seen.entry(body).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "all 20 went to one backend: {seen:?}");

    let services = t.lab.show("services");
    let svc = &services["services"][0];
    assert_eq!(svc["name"], "api");
    assert_eq!(svc["vip"], "10.230.2.100:80");
    let counted: u64 = svc["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["connections"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 20, "{services}");
    for (b, who) in [("10.230.2.2:8080", "b1"), ("10.230.2.3:8080", "b2")] {
        let n = svc["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["backend"] == b)
            .unwrap()["connections"]
            .as_u64()
            .unwrap();
        assert_eq!(n as usize, seen[who], "{services}");
    }
    let nat = t.lab.show("nat");
    assert_eq!(nat["table"]["flows"], 20, "{nat}");
    // The backends saw the real client address.
    assert!(nat["nat"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["seen_by_backend_as"]
            .as_str()
            .unwrap()
            .starts_with("10.230.1.2:")));
}

#[test]
fn a_client_on_the_backends_bridge_reaches_the_vip_too() {
    let t = service_lab();
    for _ in 0..6 {
        let out = ns_run(
            &t.backends[0],
            &["curl", "-s", "-m", "5", "http://10.230.2.100/who"],
            10,
        );
        assert!(out.status.success(), "hairpin curl failed");
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(body == "b1" || body == "b2", "reply {body:?}");
    }
}

#[test]
fn udp_datagrams_larger_than_the_mtu_reach_a_udp_vip_and_come_back() {
    let s = service_lab();
    let _echo: Vec<Background> = (0..2)
        .map(|i| udp_echo(&s.backends[i], &format!("10.230.2.{}", i + 2), 7000))
        .collect();
    // Fragments carry no ports past the first: the router puts them together before it
    // chooses a backend, and cuts the translated datagram again on the way out.
    for size in [100, 1473, 4000, 20000] {
        assert_eq!(
            udp_ask_big(&s.client, "10.230.2.101", 7, size),
            Some(size),
            "{size} bytes through the VIP"
        );
    }
}

#[test]
fn an_idle_service_connection_past_its_timeout_is_reset_at_both_ends() {
    let s = service_lab();
    let log = std::env::temp_dir().join(format!("{}.log", unique("ends")));
    let _server = tcp_echo_logging(&s.backends[0], "10.230.2.2", 7001, &log);
    assert_eq!(
        tcp_idle_then_talk(&s.client, "10.230.2.102", 7, 1),
        "answered"
    );
    // Past the (short, for the test) timeout the flow is gone, and both the client and
    // the backend were told so: neither waits on a connection that goes nowhere.
    assert_eq!(tcp_idle_then_talk(&s.client, "10.230.2.102", 7, 6), "reset");
    let t = std::time::Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("reset")
    {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "the backend was never reset"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(&log);
    assert!(
        s.lab.show("drops")["router"]["flow_resets"]
            .as_u64()
            .unwrap()
            >= 2
    );
}
