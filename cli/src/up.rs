//! `tapnet up`: builds the lab on the host (namespaces, TAPs, addresses, routes), runs
//! the datapath until SIGINT/SIGTERM, then removes everything it created.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use encap::{Vtep, VtepConfig};
use host::netns::{Netns, NetnsRecord};
use host::rtnl::Rtnl;
use lab::{Lab, PortCfg, Proto, DEFAULT_NAT_MAX_FLOWS};
use mio::{Interest, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use vrouter::proxy::{ForwardRule, HostProxy};
use vrouter::{Iface, Router, RouterConfig, RouterHandler, Service};
use vswitch::datapath::FIRST_FOREIGN_TOKEN;
use vswitch::{BridgeConfig, BridgeId, Datapath, Mac, PortId, PortInfo};

use crate::control;
use crate::show;

/// Frame buffers in the pool: one batch in flight per wakeup needs [`vswitch::datapath::BATCH`];
/// the rest is room for later stages that hold frames (delays, reassembly).
const POOL_BUFFERS: usize = 256;
/// Each TAP's queue towards tapnet, in frames: deep enough to ride out a busy loop turn.
pub const TXQUEUELEN: u32 = 1000;

const SIGNAL_TOKEN: Token = Token(FIRST_FOREIGN_TOKEN);
/// How often freed heap memory is handed back to the system.
const TRIM_EVERY: Duration = Duration::from_secs(10);
const CONTROL_TOKEN: Token = Token(FIRST_FOREIGN_TOKEN + 1);

/// A failure that is the host's fault, not the lab file's: exit status 2 (but for a
/// [`LabRefused`] inside: 1).
#[derive(Debug)]
pub struct HostError(pub anyhow::Error);

/// A lab that cannot run on this host as written, found before anything was built
/// (a forward's port taken on the host, say): exit status 1, like a bad lab file.
#[derive(Debug)]
pub struct LabRefused(pub Vec<String>);

impl std::fmt::Display for LabRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.join("\n"))
    }
}

impl std::error::Error for LabRefused {}

/// The host proxy, for masquerade and port forwards. Each forward's port is bound
/// here, before anything else is built, so a taken port refuses the lab cleanly.
fn host_proxy(lab: &Lab) -> Result<Option<HostProxy>> {
    let masquerade = lab.nat.as_ref().is_some_and(|n| n.masquerade);
    if !masquerade && lab.forwards.is_empty() {
        return Ok(None);
    }
    let at = |pos: lab::Pos| format!("{}:{}:{}", lab.file, pos.line, pos.col);
    let mut problems = Vec::new();
    let mut rules = Vec::new();
    for f in &lab.forwards {
        let bound = match f.proto {
            Proto::Tcp => std::net::TcpListener::bind(f.listen).map(drop),
            Proto::Udp => std::net::UdpSocket::bind(f.listen).map(drop),
        };
        if let Err(e) = bound {
            problems.push(format!(
                "{}: forward listen {}: cannot bind it on this host: {e}",
                at(f.pos),
                f.listen
            ));
        }
        rules.push(ForwardRule {
            proto: match f.proto {
                Proto::Tcp => vrouter::nat::PROTO_TCP,
                Proto::Udp => vrouter::nat::PROTO_UDP,
            },
            listen: f.listen,
            to: f.to,
        });
    }
    if !problems.is_empty() {
        return Err(LabRefused(problems).into());
    }
    // Every proxied flow holds a host socket: as many descriptors as the host allows,
    // and no more flows than they can hold.
    let descriptors = host::limits::raise_descriptor_limit();
    let wanted = lab
        .nat
        .as_ref()
        .map_or(DEFAULT_NAT_MAX_FLOWS, |n| n.max_flows);
    let room = (descriptors.saturating_sub(RESERVED_DESCRIPTORS) as usize)
        .clamp(16, vswitch::HANDLER_TOKENS - 1024);
    let max_flows = wanted.min(room);
    if max_flows < wanted {
        eprintln!(
            "tapnet: at most {max_flows} host flows (not {wanted}): the descriptor limit is {descriptors}"
        );
    }
    let proxy = HostProxy::new(
        masquerade,
        rules,
        max_flows,
        nat_timeouts(lab),
        Instant::now(),
    )
    .context("cannot bind the forwards' ports")?;
    if masquerade && proxy.ping_mode() == vrouter::proxy::PingMode::None {
        eprintln!(
            "tapnet: containers' pings to the outside will be refused (administratively prohibited): \
             this host allows no ICMP socket to tapnet's group; widen net.ipv4.ping_group_range \
             (e.g. `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"`) or run tapnet as root"
        );
    }
    Ok(Some(proxy))
}

/// The flows' idle timeouts, from `[nat]` (its defaults without one).
fn nat_timeouts(lab: &Lab) -> vrouter::nat::Timeouts {
    let nat = lab.nat_or_default();
    vrouter::nat::Timeouts {
        tcp: Duration::from_secs(nat.tcp_timeout_s),
        tcp_closing: Duration::from_secs(nat.tcp_closing_timeout_s),
        udp: Duration::from_secs(nat.udp_timeout_s),
        icmp: Duration::from_secs(nat.icmp_timeout_s),
    }
}

/// What `up` built on the host and must take down again.
struct Built {
    /// Namespaces this run created (removed at the end), without holding them open:
    /// an open descriptor would keep a namespace alive after `ip netns del`.
    namespaces: Vec<NetnsRecord>,
    /// `/run/tapnet/NAME.state`: the same list on disk, so that a run killed before
    /// its teardown (SIGKILL, a crash) is cleaned up by the next `up` of the lab.
    state: PathBuf,
}

impl Built {
    fn new(lab: &str) -> Built {
        Built {
            namespaces: Vec::new(),
            state: Path::new(control::RUN_DIR).join(format!("{lab}.state")),
        }
    }

    fn add(&mut self, ns: NetnsRecord) -> Result<()> {
        self.namespaces.push(ns);
        let list: Vec<_> = self
            .namespaces
            .iter()
            .map(|ns| {
                let (dev, ino) = ns.identity();
                serde_json::json!({"netns": ns.name(), "dev": dev, "ino": ino})
            })
            .collect();
        std::fs::write(&self.state, serde_json::to_vec(&list)?)
            .with_context(|| format!("cannot write {}", self.state.display()))
    }

    /// Removes the namespaces an earlier run of this lab created and, killed, never
    /// removed; namespaces recreated since by someone else are left alone.
    fn reap_earlier_run(&self) {
        let Ok(text) = std::fs::read(&self.state) else {
            return;
        };
        let list: Vec<serde_json::Value> = serde_json::from_slice(&text).unwrap_or_default();
        for entry in list {
            let (Some(name), Some(dev), Some(ino)) = (
                entry["netns"].as_str(),
                entry["dev"].as_u64(),
                entry["ino"].as_u64(),
            ) else {
                continue;
            };
            let ns = NetnsRecord::adopt(name, (dev, ino));
            if ns.still_there() {
                match ns.remove() {
                    Ok(()) => eprintln!(
                        "tapnet: removed namespace `{name}`, left behind by an earlier run that did not exit cleanly"
                    ),
                    Err(e) => eprintln!("tapnet: could not remove stale namespace `{name}`: {e}"),
                }
            }
        }
        let _ = std::fs::remove_file(&self.state);
    }
}

impl Drop for Built {
    fn drop(&mut self) {
        let mut all_gone = true;
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = ns.remove() {
                all_gone = false;
                eprintln!("tapnet: could not remove namespace {}: {e}", ns.name());
            }
        }
        if all_gone {
            let _ = std::fs::remove_file(&self.state);
        }
    }
}

/// What `up` needs of the host before anything else: root and /dev/net/tun.
fn preflight_host() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("tapnet up needs root (CAP_NET_ADMIN) to create namespaces and TAP devices: run it with sudo");
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        bail!("cannot open /dev/net/tun ({e}): load the tun module (`modprobe tun`) or create the device node");
    }
    Ok(())
}

/// Everything else `up` refuses before touching the host: device names taken.
fn preflight(lab: &Lab) -> Result<()> {
    let mut root = Rtnl::new().context("cannot open a netlink socket")?;
    for port in &lab.ports {
        let taken = match &port.netns {
            Some(ns) => match Netns::open(ns)? {
                Some(ns) => Rtnl::in_netns(&ns)?.link_index(&port.ifname)?.is_some(),
                None => false,
            },
            None => root.link_index(&port.ifname)?.is_some(),
        };
        if let Some(m) = &port.mirror {
            if root.link_index(m)?.is_some() {
                bail!(
                    "port `{}`: a device named `{m}` already exists here: choose another `mirror`",
                    port.name
                );
            }
        }
        if taken {
            let place = port
                .netns
                .as_ref()
                .map_or("tapnet's own namespace".to_string(), |n| {
                    format!("namespace `{n}`")
                });
            bail!(
                "port `{}`: a device named `{}` already exists in {place}: remove it or set another `ifname`",
                port.name,
                port.ifname
            );
        }
    }
    Ok(())
}

fn gateway_of(lab: &Lab, port: &PortCfg) -> Option<Ipv4Addr> {
    lab.bridges
        .iter()
        .find(|b| b.name == port.bridge)
        .and_then(|b| b.gateway)
}

/// The router: one leg, an internal port, on every bridge with a subnet.
fn add_router(
    lab: &Lab,
    dp: &mut Datapath,
    bridges: &[(String, BridgeId, u32)],
    proxy: Option<HostProxy>,
) -> std::io::Result<()> {
    let mut ifaces = Vec::new();
    let mut legs = Vec::new();
    for b in &lab.bridges {
        let (Some(subnet), Some(gateway)) = (&b.subnet, b.gateway) else {
            continue;
        };
        let bridge = bridges
            .iter()
            .find(|(n, _, _)| *n == b.name)
            .expect("added")
            .1;
        ifaces.push(Iface {
            name: b.name.clone(),
            mac: router_mac(&lab.name, &b.name),
            ip: gateway,
            prefix: subnet.prefix,
        });
        legs.push(bridge);
    }
    if ifaces.is_empty() {
        return Ok(());
    }
    let first = dp.next_port_id().0;
    let ports: Vec<PortId> = (0..legs.len()).map(|i| PortId(first + i)).collect();
    let infos: Vec<PortInfo> = ifaces
        .iter()
        .zip(&legs)
        .map(|(iface, &bridge)| PortInfo {
            name: format!("router:{}", iface.name),
            bridge,
            netns: None,
            ifname: "-".into(),
            mac: iface.mac,
            ip: Some(format!("{}/{}", iface.ip, iface.prefix)),
        })
        .collect();
    let config = RouterConfig {
        nat_timeouts: nat_timeouts(lab),
        nat_max_flows: lab
            .nat
            .as_ref()
            .map_or(DEFAULT_NAT_MAX_FLOWS, |n| n.max_flows),
        ..RouterConfig::default()
    };
    let mut router = Router::new(ifaces, lab_services(lab), config);
    // Guarded ports can send from no other address and MAC than their own: the
    // router knows them without asking, and no ARP can change that.
    for port in lab.ports.iter().filter(|p| p.spoof_check) {
        if let Some((ip, _)) = port.ip {
            router.add_static_neighbor(ip, Mac(port.mac), Instant::now());
        }
    }
    for (i, &bridge) in legs.iter().enumerate() {
        if let Some((_, _, mtu)) = bridges.iter().find(|(_, id, _)| *id == bridge) {
            router.set_mtu(i, *mtu);
        }
    }
    let mut handler = RouterHandler::new(router, ports.clone());
    if let Some(proxy) = proxy {
        handler = handler.with_proxy(proxy);
    }
    let handler = dp.add_handler(Box::new(handler));
    for (info, want) in infos.into_iter().zip(ports) {
        let mac = info.mac;
        let got = dp.add_internal_port(info, handler)?;
        assert_eq!(got, want, "router ports are numbered in order");
        // The router's own MAC is no one else's to claim.
        dp.add_static_mac(got, mac);
    }
    Ok(())
}

fn lab_services(lab: &Lab) -> Vec<Service> {
    lab.services
        .iter()
        .map(|s| Service {
            name: s.name.clone(),
            proto: match s.proto {
                Proto::Tcp => vrouter::nat::PROTO_TCP,
                Proto::Udp => vrouter::nat::PROTO_UDP,
            },
            vip: s.vip,
            backends: s.backends.clone(),
        })
        .collect()
}

/// `impair PORT SPEC`, at run time.
fn impair(dp: &mut Datapath, rest: &str) -> serde_json::Value {
    let (port, spec) = rest.split_once(' ').unwrap_or((rest, ""));
    let spec = match vswitch::impair::Impairment::parse(spec) {
        Ok(s) => s,
        Err(e) => return serde_json::json!({"error": e}),
    };
    match dp.port_by_name(port) {
        Some(id) if dp.set_impairment(id, spec) => {
            serde_json::json!({"port": port, "impair": spec.to_string()})
        }
        Some(_) => {
            serde_json::json!({"error": format!("port `{port}` cannot be impaired (it is down, or internal)")})
        }
        None => serde_json::json!({"error": format!("no port `{port}` in this lab")}),
    }
}

/// Descriptors kept for everything but proxied flows (TAPs, listeners, control).
const RESERVED_DESCRIPTORS: u64 = 512;

/// The VXLAN endpoint, its sockets bound now so that an unbindable `listen` refuses
/// the lab before anything else is built.
fn vtep(lab: &Lab) -> Result<Option<Vtep>> {
    let Some(vx) = &lab.vxlan else {
        return Ok(None);
    };
    let config = VtepConfig {
        listen: vx.listen,
        peers: vx.peers.clone(),
        remote_max: lab.bridges.iter().map(|b| b.fdb_max).max().unwrap_or(8192),
        remote_aging: Duration::from_secs(
            lab.bridges
                .iter()
                .map(|b| b.fdb_aging_s)
                .max()
                .unwrap_or(300),
        ),
    };
    Vtep::bind(&config).map(Some).map_err(|e| {
        LabRefused(vec![format!(
            "{}:{}:{}: vxlan listen {}: cannot bind it on this host: {e}",
            lab.file, vx.pos.line, vx.pos.col, vx.listen
        )])
        .into()
    })
}

/// The VXLAN endpoint: one internal port on every bridge with a VNI.
fn add_vtep(
    lab: &Lab,
    dp: &mut Datapath,
    bridges: &[(String, BridgeId, u32)],
    mut vtep: Vtep,
) -> std::io::Result<()> {
    let mut infos = Vec::new();
    let first = dp.next_port_id().0;
    for b in &lab.bridges {
        let Some((vni, _)) = b.vni else { continue };
        let (_, bridge, mtu) = bridges
            .iter()
            .find(|(n, _, _)| *n == b.name)
            .cloned()
            .expect("added");
        let port = PortId(first + infos.len());
        vtep.add_vni(vni, port, mtu);
        infos.push(PortInfo {
            name: format!("vxlan:{}", b.name),
            bridge,
            netns: None,
            ifname: format!("vni {vni}"),
            mac: Mac::default(),
            ip: Some(vtep.listen().to_string()),
        });
    }
    let handler = dp.add_handler(Box::new(vtep));
    for (i, info) in infos.into_iter().enumerate() {
        let got = dp.add_internal_port(info, handler)?;
        assert_eq!(got, PortId(first + i), "VXLAN ports are numbered in order");
    }
    Ok(())
}

/// The router's MAC on a bridge: locally administered, "tn" in the second and third
/// bytes, then three bytes hashed from the lab and bridge names (stable across runs).
pub fn router_mac(lab: &str, bridge: &str) -> Mac {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in lab.bytes().chain([b'/']).chain(bridge.bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    Mac([0x02, 0x74, 0x6e, b[5], b[6], b[7]])
}

/// Builds the lab, runs it until SIGINT, SIGTERM or SIGHUP, tears it down.
pub fn run(lab: Lab, busy_poll: Duration) -> Result<(), HostError> {
    preflight_host().map_err(HostError)?;
    // Caught from before the first namespace exists, so a signal during the build
    // still ends in a full teardown rather than a half-built host.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|e| HostError(e.into()))?;
    // Bound before anything is built: it is what claims the lab's name.
    let (req_tx, req_rx) = crossbeam_channel::bounded::<control::Request>(64);
    let wake_slot: Arc<std::sync::OnceLock<Waker>> = Arc::new(std::sync::OnceLock::new());
    let wake = {
        let slot = wake_slot.clone();
        Arc::new(move || {
            if let Some(waker) = slot.get() {
                let _ = waker.wake();
            }
        })
    };
    // The name first: a second copy of a running lab is told so, not that its devices
    // are taken.
    let server = control::Server::start(&lab.name, req_tx, wake).map_err(HostError)?;
    preflight(&lab).map_err(HostError)?;
    let proxy = host_proxy(&lab).map_err(HostError)?;
    let vtep = vtep(&lab).map_err(HostError)?;
    let mut built = Built::new(&lab.name);
    built.reap_earlier_run();
    let mut dp = Datapath::new(POOL_BUFFERS).map_err(|e| HostError(e.into()))?;
    dp.set_busy_poll(busy_poll);
    let mut bridge_ids: Vec<(String, BridgeId, u32)> = Vec::new();
    for b in &lab.bridges {
        let id = dp.add_bridge(BridgeConfig {
            name: b.name.clone(),
            mtu: b.mtu,
            fdb_max: b.fdb_max,
            fdb_aging: Duration::from_secs(b.fdb_aging_s),
        });
        bridge_ids.push((b.name.clone(), id, b.mtu));
    }
    for (i, port) in lab.ports.iter().enumerate() {
        let (_, bridge, mtu) = bridge_ids
            .iter()
            .find(|(n, _, _)| *n == port.bridge)
            .cloned()
            .expect("validated: the port's bridge exists");
        let plan = host::tap::PortTap {
            port: &port.name,
            netns: port.netns.as_deref(),
            ifname: &port.ifname,
            mac: port.mac,
            mtu,
            ip: port.ip,
            gateway: gateway_of(&lab, port),
            index: i,
        };
        let tap = host::tap::port_tap(&plan, &mut |ns| built.add(ns))
            .map_err(|e| HostError(e.context(format!("building port `{}`", port.name))))?;
        let info = PortInfo {
            name: port.name.clone(),
            bridge,
            netns: port.netns.clone(),
            ifname: port.ifname.clone(),
            mac: Mac(port.mac),
            ip: port.ip.map(|(a, p)| format!("{a}/{p}")),
        };
        let id = dp
            .add_port(info, Box::new(tap))
            .map_err(|e| HostError(e.into()))?;
        // The container's MAC is its port's (a static FDB entry): no other port and no
        // VXLAN peer can take it over.
        dp.add_static_mac(id, Mac(port.mac));
        if port.spoof_check {
            dp.set_guard(
                id,
                vswitch::guard::PortGuard {
                    mac: Mac(port.mac),
                    ipv4: port.ip.map(|(a, _)| a),
                },
            );
        }
        if let Some(spec) = port.impair {
            dp.set_impairment(id, spec);
        }
        if let Some(name) = &port.mirror {
            let mirror = host::tap::mirror_tap(name)
                .map_err(|e| HostError(e.context(format!("mirror of port `{}`", port.name))))?;
            dp.set_mirror(id, Box::new(mirror));
        }
        if signals.pending().next().is_some() {
            // Stopped while building: tear down without ever saying ready.
            return Ok(());
        }
    }
    add_router(&lab, &mut dp, &bridge_ids, proxy).map_err(|e| HostError(e.into()))?;
    if let Some(vtep) = vtep {
        add_vtep(&lab, &mut dp, &bridge_ids, vtep).map_err(|e| HostError(e.into()))?;
    }
    let waker = Waker::new(dp.registry(), CONTROL_TOKEN).map_err(|e| HostError(e.into()))?;
    let _ = wake_slot.set(waker);
    // Requests that came in during the build are waiting: look at them at once.
    if let Some(waker) = wake_slot.get() {
        let _ = waker.wake();
    }

    let result = serve(&lab, &mut dp, signals, &req_rx).map_err(HostError);
    // TAPs go first (closing their descriptors deletes the devices), then namespaces,
    // then the control socket.
    drop(dp);
    drop(built);
    drop(server);
    result
}

fn serve(
    lab: &Lab,
    dp: &mut Datapath,
    mut signals: Signals,
    req_rx: &crossbeam_channel::Receiver<control::Request>,
) -> Result<()> {
    dp.registry()
        .register(&mut signals, SIGNAL_TOKEN, Interest::READABLE)?;

    // A closed stdout (the reader went away) must not stop the lab.
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "ready: lab {}, {} ports", lab.name, dp.up_ports());
    let _ = stdout.flush();

    let mut next_trim = Instant::now() + TRIM_EVERY;
    loop {
        let fired = dp.poll_once(None)?;
        if Instant::now() >= next_trim {
            // What a flood of connections allocated and freed goes back to the
            // system, not only to the allocator's free lists.
            // SAFETY: malloc_trim only returns free heap memory to the system.
            unsafe { libc::malloc_trim(0) };
            next_trim = Instant::now() + TRIM_EVERY;
        }
        let (signalled, control) = fired.iter().fold((false, false), |(s, c), t| {
            (s || *t == SIGNAL_TOKEN, c || *t == CONTROL_TOKEN)
        });
        if control {
            let now = Instant::now();
            while let Ok(req) = req_rx.try_recv() {
                match req {
                    control::Request::Show { line, reply } => {
                        let answer = if let Some(rest) = line.strip_prefix("impair ") {
                            impair(dp, rest)
                        } else {
                            match line.strip_prefix("trace ").and_then(|r| r.split_once(' ')) {
                                Some((port, packet)) => crate::trace::trace(dp, port, packet, now),
                                None => show::answer(dp, &lab.name, &line, now),
                            }
                        };
                        let _ = reply.send(answer);
                    }
                    control::Request::Capture { port, reply } => {
                        let frames = if port == "underlay" {
                            dp.capture_outside()
                                .map(vswitch::datapath::CaptureStream::outside)
                                .ok_or_else(|| {
                                    format!("lab `{}` has no VXLAN underlay to capture", lab.name)
                                })
                        } else {
                            match dp.port_by_name(&port) {
                                Some(id) => {
                                    dp.capture(id).map_err(|e| format!("port `{port}` {e}"))
                                }
                                None => Err(format!("no port `{port}` in lab `{}`", lab.name)),
                            }
                        };
                        let _ = reply.send(frames);
                    }
                }
            }
        }
        for (port, reason) in dp.take_went_down() {
            let name = dp
                .port(port)
                .map(|p| p.info.name.clone())
                .unwrap_or_default();
            eprintln!("tapnet: port `{name}` is down ({reason}); the other ports keep forwarding");
        }
        if signalled && signals.pending().next().is_some() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use lab::{
        DEFAULT_NAT_ICMP_TIMEOUT_S, DEFAULT_NAT_TCP_CLOSING_TIMEOUT_S, DEFAULT_NAT_TCP_TIMEOUT_S,
        DEFAULT_NAT_UDP_TIMEOUT_S,
    };

    #[test]
    fn nat_timeout_defaults_are_the_datapaths() {
        let t = vrouter::nat::Timeouts::default();
        assert_eq!(DEFAULT_NAT_TCP_TIMEOUT_S, t.tcp.as_secs());
        assert_eq!(DEFAULT_NAT_TCP_CLOSING_TIMEOUT_S, t.tcp_closing.as_secs());
        assert_eq!(DEFAULT_NAT_UDP_TIMEOUT_S, t.udp.as_secs());
        assert_eq!(DEFAULT_NAT_ICMP_TIMEOUT_S, t.icmp.as_secs());
    }
}
