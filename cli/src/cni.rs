//! `tapnet-cni`: a CNI plugin (containernetworking/cni SPEC.md, 1.1.0; configs of 0.4.0,
//! 1.0.0 and 1.1.0 accepted) that attaches a container runtime's network namespace to
//! a running tapnet lab, over the lab's control socket.
//!
//! The network configuration names the lab and the bridge:
//! `{"cniVersion":"1.1.0","name":"tn","type":"tapnet-cni","lab":"lab","bridge":"br0"}`,
//! with `"ip": "auto"` (the default) or `"A.B.C.D/LEN"`, and `portMappings` in
//! `runtimeConfig` (the capability) becoming forwards. ADD attaches `CNI_NETNS` as
//! `CNI_IFNAME` and prints the result; DEL detaches and is idempotent; CHECK verifies
//! the attachment; STATUS says whether the lab runs (error 50 if not); GC detaches what
//! `cni.dev/valid-attachments` does not list; VERSION answers. Each attachment is kept
//! in a file in the lab's run directory (`LAB.cni/`), so a DEL after the lab restarted
//! still cleans up what it can. Errors are the spec's error JSON on stdout, exit 1.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use daemon::control::{client, protocol};
use serde_json::{json, Value};

/// The spec version this plugin speaks, and those whose configs it takes.
const VERSION: &str = "1.1.0";
const SUPPORTED: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// A CNI error: the spec's well-known codes (SPEC.md, "Error").
struct CniError {
    code: u32,
    msg: String,
    details: String,
}

fn err(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError {
        code,
        msg: msg.into(),
        details: details.into(),
    }
}

/// Incompatible CNI version.
const E_VERSION: u32 = 1;
/// Invalid necessary environment variables.
const E_ENV: u32 = 4;
/// I/O failure.
const E_IO: u32 = 5;
/// Failed to decode content.
const E_DECODE: u32 = 6;
/// Invalid network config.
const E_CONFIG: u32 = 7;
/// The plugin is not available (STATUS: the lab does not run).
const E_UNAVAILABLE: u32 = 50;

fn main() -> ExitCode {
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    // The runtime always gives the configuration on stdin (VERSION too).
    let mut input = String::new();
    let _ = std::io::stdin().read_to_string(&mut input);
    let config: Value = serde_json::from_str(&input).unwrap_or(Value::Null);
    let version = config["cniVersion"].as_str().unwrap_or(VERSION).to_string();
    match run(&command, &config) {
        Ok(Some(out)) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            println!(
                "{}",
                json!({"cniVersion": version, "code": e.code, "msg": e.msg, "details": e.details})
            );
            ExitCode::FAILURE
        }
    }
}

fn env(name: &str) -> Result<String, CniError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| err(E_ENV, format!("{name} is not set"), ""))
}

/// The network configuration's tapnet keys, checked.
struct Net {
    version: String,
    lab: String,
    bridge: String,
    ip: String,
}

fn net(config: &Value) -> Result<Net, CniError> {
    if config.is_null() {
        return Err(err(
            E_DECODE,
            "the network configuration on stdin is not JSON",
            "",
        ));
    }
    let version = config["cniVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !SUPPORTED.contains(&version.as_str()) {
        return Err(err(
            E_VERSION,
            format!("CNI version {version:?} is not supported"),
            format!("supported: {}", SUPPORTED.join(", ")),
        ));
    }
    let key = |k: &str| {
        config[k].as_str().map(String::from).ok_or_else(|| {
            err(
                E_CONFIG,
                format!("the network configuration has no `{k}`"),
                "",
            )
        })
    };
    Ok(Net {
        version,
        lab: key("lab")?,
        bridge: key("bridge")?,
        ip: config["ip"].as_str().unwrap_or("auto").to_string(),
    })
}

/// The lab port standing for container `id`'s interface `ifname`: a name of at most 15
/// characters, the same on every call.
fn port_name(id: &str, ifname: &str) -> String {
    // FNV-1a over both: stable across runs and versions.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("cni{:012x}", h & 0xffff_ffff_ffff)
}

/// Where the lab's attachments are recorded.
fn state_dir(lab: &str) -> PathBuf {
    protocol::run_dir().join(format!("{lab}.cni"))
}

fn state_file(lab: &str, id: &str, ifname: &str) -> PathBuf {
    state_dir(lab).join(format!("{}.json", port_name(id, ifname)))
}

fn io_err(e: impl std::fmt::Display) -> CniError {
    err(E_IO, e.to_string(), "")
}

fn run(command: &str, config: &Value) -> Result<Option<Value>, CniError> {
    match command {
        "VERSION" => Ok(Some(
            json!({"cniVersion": VERSION, "supportedVersions": SUPPORTED}),
        )),
        "ADD" => add(config).map(Some),
        "DEL" => del(config).map(|()| None),
        "CHECK" => check(config).map(|()| None),
        "STATUS" => {
            let n = net(config)?;
            client::show(&n.lab, "ports").map(|_| None).map_err(|e| {
                err(
                    E_UNAVAILABLE,
                    format!("lab `{}` is not running", n.lab),
                    format!("{e:#}"),
                )
            })
        }
        "GC" => gc(config).map(|()| None),
        "" => Err(err(E_ENV, "CNI_COMMAND is not set", "")),
        other => Err(err(E_ENV, format!("unknown CNI_COMMAND {other:?}"), "")),
    }
}

fn add(config: &Value) -> Result<Value, CniError> {
    let n = net(config)?;
    let (id, netns, ifname) = (
        env("CNI_CONTAINERID")?,
        env("CNI_NETNS")?,
        env("CNI_IFNAME")?,
    );
    let name = port_name(&id, &ifname);
    let spec = daemon::runtime::AttachSpec {
        bridge: n.bridge.clone(),
        name: name.clone(),
        netns: Some(netns.clone()),
        qemu: None,
        ifname: Some(ifname.clone()),
        ip: Some(n.ip.clone()),
        ip6: None,
        mac: None,
    };
    let attached = client::attach(&n.lab, &spec).map_err(|e| {
        err(
            E_IO,
            format!("cannot attach to lab `{}`", n.lab),
            format!("{e:#}"),
        )
    })?;
    let address = attached["ip"].as_str().unwrap_or_default().to_string();
    let gateway = attached["gateway"].as_str().map(String::from);
    // portMappings (the capability): forwards to the container, removed on DEL.
    let mut forwards: Vec<(String, String)> = Vec::new();
    let ip_only = address.split('/').next().unwrap_or_default().to_string();
    for m in config["runtimeConfig"]["portMappings"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let (Some(host), Some(cont)) = (m["hostPort"].as_u64(), m["containerPort"].as_u64()) else {
            continue;
        };
        let proto = m["protocol"].as_str().unwrap_or("tcp").to_lowercase();
        let host_ip = m["hostIP"]
            .as_str()
            .filter(|h| !h.is_empty())
            .unwrap_or("0.0.0.0");
        let listen = format!("{host_ip}:{host}");
        if let Err(e) = client::forward_add(&n.lab, &proto, &listen, &format!("{ip_only}:{cont}")) {
            // Whole or not at all: undo what was done.
            for (p, l) in &forwards {
                let _ = client::forward_rm(&n.lab, p, l);
            }
            let _ = client::detach(&n.lab, &name);
            return Err(err(
                E_IO,
                format!("cannot publish {proto} {listen}"),
                format!("{e:#}"),
            ));
        }
        forwards.push((proto, listen));
    }
    let record = json!({"containerID": id, "ifname": ifname, "netns": netns, "port": name,
                        "forwards": forwards.iter().map(|(p, l)| json!({"proto": p, "listen": l})).collect::<Vec<_>>()});
    std::fs::create_dir_all(state_dir(&n.lab)).map_err(io_err)?;
    std::fs::write(state_file(&n.lab, &id, &ifname), record.to_string()).map_err(io_err)?;
    let mut ip = json!({"address": address, "interface": 0});
    if let Some(g) = &gateway {
        ip["gateway"] = json!(g);
    }
    if n.version == "0.4.0" {
        ip["version"] = json!("4");
    }
    let mut result = json!({
        "cniVersion": n.version,
        "interfaces": [{"name": ifname, "mac": attached["mac"], "sandbox": netns}],
        "ips": [ip],
        "dns": {},
    });
    if let Some(g) = gateway {
        result["routes"] = json!([{"dst": "0.0.0.0/0", "gw": g}]);
    }
    Ok(result)
}

/// Undoes attachment `record` (as ADD wrote it) on lab `lab`, as far as the lab still
/// has it: a lab that is gone or restarted has nothing left to remove.
fn undo(lab: &str, record: &Value) {
    for f in record["forwards"].as_array().into_iter().flatten() {
        let (Some(p), Some(l)) = (f["proto"].as_str(), f["listen"].as_str()) else {
            continue;
        };
        let _ = client::forward_rm(lab, p, l);
    }
    if let Some(port) = record["port"].as_str() {
        let _ = client::detach(lab, port);
    }
}

fn del(config: &Value) -> Result<(), CniError> {
    let n = net(config)?;
    let (id, ifname) = (env("CNI_CONTAINERID")?, env("CNI_IFNAME")?);
    let file = state_file(&n.lab, &id, &ifname);
    let record = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| json!({"port": port_name(&id, &ifname)}));
    undo(&n.lab, &record);
    let _ = std::fs::remove_file(&file);
    // The lab's record goes with its last attachment (remove_dir leaves a full one).
    let _ = std::fs::remove_dir(state_dir(&n.lab));
    Ok(())
}

fn check(config: &Value) -> Result<(), CniError> {
    let n = net(config)?;
    let (id, ifname) = (env("CNI_CONTAINERID")?, env("CNI_IFNAME")?);
    let name = port_name(&id, &ifname);
    let ports = client::show(&n.lab, "ports").map_err(|e| {
        err(
            E_IO,
            format!("lab `{}` is not running", n.lab),
            format!("{e:#}"),
        )
    })?;
    let port = ports["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .ok_or_else(|| {
            err(
                E_IO,
                format!("no attachment of {id} {ifname} in lab `{}`", n.lab),
                "",
            )
        })?;
    if port["up"] != true || port["ifname"] != ifname.as_str() {
        return Err(err(
            E_IO,
            format!("the attachment of {id} {ifname} is down"),
            port.to_string(),
        ));
    }
    Ok(())
}

fn gc(config: &Value) -> Result<(), CniError> {
    let n = net(config)?;
    let valid: Vec<String> = config["cni.dev/valid-attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some(port_name(a["containerID"].as_str()?, a["ifname"].as_str()?)))
        .collect();
    let Ok(dir) = std::fs::read_dir(state_dir(&n.lab)) else {
        return Ok(());
    };
    for entry in dir.flatten() {
        let stem = entry
            .path()
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
        if stem.as_ref().is_some_and(|s| valid.contains(s)) {
            continue;
        }
        if let Some(record) = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        {
            undo(&n.lab, &record);
        }
        let _ = std::fs::remove_file(entry.path());
    }
    let _ = std::fs::remove_dir(state_dir(&n.lab));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_are_short_stable_and_distinct() {
        let a = port_name("0123456789abcdef", "eth0");
        assert_eq!(a, port_name("0123456789abcdef", "eth0"));
        assert_ne!(a, port_name("0123456789abcdef", "eth1"));
        assert_eq!(a.len(), 15);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn configs_are_checked() {
        assert_eq!(net(&Value::Null).err().map(|e| e.code), Some(E_DECODE));
        let old = json!({"cniVersion": "0.3.1", "lab": "l", "bridge": "b"});
        assert_eq!(net(&old).err().map(|e| e.code), Some(E_VERSION));
        let no_bridge = json!({"cniVersion": "1.0.0", "lab": "l"});
        assert_eq!(net(&no_bridge).err().map(|e| e.code), Some(E_CONFIG));
        let ok = net(&json!({"cniVersion": "0.4.0", "lab": "l", "bridge": "b"}))
            .ok()
            .unwrap();
        assert_eq!((ok.ip.as_str(), ok.version.as_str()), ("auto", "0.4.0"));
    }
}
