//! Building a lab in the datapath: its bridges, a TAP per port (made on the host by
//! the `host` crate) with its static MAC, guard, impairment and mirror, the router
//! with its services and the host proxy on every bridge with a subnet, and the VXLAN
//! endpoint on every bridge with a VNI.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use encap::Vtep;
use lab::{Lab, PortCfg, Proto, DEFAULT_NAT_MAX_FLOWS};
use signal_hook_mio::v1_0::Signals;
use vrouter::proxy::HostProxy;
use vrouter::{Iface, Router, RouterConfig, RouterHandler, Service};
use vswitch::{BridgeConfig, BridgeId, Datapath, HandlerRef, Mac, PortId, PortInfo};

use crate::namespaces::Namespaces;
use crate::teardown::Built;

/// Frame buffers in the pool: one batch in flight per wakeup needs [`vswitch::datapath::BATCH`];
/// the rest is room for later stages that hold frames (delays, reassembly).
const POOL_BUFFERS: usize = 256;

/// Builds the lab's datapath: namespaces this creates are added to `built` as they
/// are made. None if a signal came while building (what was built is torn down, and
/// the lab never says it is ready).
pub(crate) fn datapath(
    lab: &Lab,
    tuning: crate::Tuning,
    proxy: Option<HostProxy>,
    vtep: Option<Vtep>,
    built: &mut Built,
    namespaces: &mut Namespaces,
    signals: &mut Signals,
) -> Result<Option<(Datapath, Handles)>> {
    let mut dp = Datapath::new(POOL_BUFFERS)?;
    dp.set_busy_poll(tuning.busy_poll);
    dp.set_write_batching(!tuning.no_io_uring);
    dp.set_threads(tuning.threads.unwrap_or_else(crate::default_threads))?;
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
        add_port(lab, port, i, &mut dp, namespaces, built)?;
        if signals.pending().next().is_some() {
            // Stopped while building: tear down without ever saying ready.
            return Ok(None);
        }
    }
    namespaces.built();
    let router = add_router(lab, &mut dp, &bridge_ids, proxy)?;
    let vtep = match vtep {
        Some(vtep) => Some(add_vtep(lab, &mut dp, &bridge_ids, vtep)?),
        None => None,
    };
    Ok(Some((dp, Handles { router, vtep })))
}

/// Builds one port of `lab` (at build, or attached at run time): its TAP in its
/// namespace (or a VM's socket), in the datapath with what the lab says of it.
/// `index` is unique among the ports this run builds (it names a TAP while it is
/// made). Namespaces this creates are added to `built`.
pub(crate) fn add_port(
    lab: &Lab,
    port: &PortCfg,
    index: usize,
    dp: &mut Datapath,
    namespaces: &mut Namespaces,
    built: &mut Built,
) -> Result<PortId> {
    let (bridge, b) = dp
        .bridges()
        .find(|(_, b)| b.name() == port.bridge)
        .expect("validated: the port's bridge exists");
    let mtu = b.mtu();
    let info = PortInfo {
        name: port.name.clone(),
        bridge,
        netns: port.netns.clone(),
        ifname: port.ifname.clone(),
        mac: Mac(port.mac),
        ip: port.ip.map(|(a, p)| format!("{a}/{p}")),
        ip6: port.ip6.map(|(a, _)| a),
    };
    if let Some(socket) = &port.qemu {
        let vm = encap::qemu::QemuPort::listen(std::path::Path::new(socket))
            .with_context(|| format!("building port `{}`: cannot listen on {socket}", port.name))?;
        namespaces.vm(&port.name);
        let info = PortInfo {
            ifname: format!("qemu {socket}"),
            ..info
        };
        let id = dp.add_port(info, Box::new(vm))?;
        finish_port(lab, port, dp, id)?;
        return Ok(id);
    }
    let place = match &port.netns {
        Some(ns) => Some(
            namespaces
                .place_for(&port.name, ns)
                .with_context(|| format!("building port `{}`", port.name))?,
        ),
        None => {
            namespaces.own(&port.name);
            None
        }
    };
    let plan = host::tap::PortTap {
        port: &port.name,
        netns: place,
        ifname: &port.ifname,
        mac: port.mac,
        mtu,
        ip: port.ip,
        gateway: gateway_of(lab, port),
        ip6: port.ip6,
        gateway6: gateway6_of(lab, port),
        index,
        queues: dp.threads(),
    };
    let mut queues = host::tap::port_tap(&plan, &mut |ns| built.add(ns))
        .with_context(|| format!("building port `{}`", port.name))?
        .into_iter();
    let first = queues.next().expect("a TAP has a queue");
    let id = dp.add_port(info, Box::new(first))?;
    dp.add_port_queues(
        id,
        queues
            .map(|q| Box::new(q) as Box<dyn vswitch::Port>)
            .collect(),
    );
    finish_port(lab, port, dp, id)?;
    Ok(id)
}

/// What every port gets once its IO is in the datapath: its static MAC, port security,
/// impairment and mirror, as the lab says.
fn finish_port(lab: &Lab, port: &PortCfg, dp: &mut Datapath, id: PortId) -> Result<()> {
    // The container's MAC is its port's (a static FDB entry): no other port and no
    // VXLAN peer can take it over. A VM picks its own, unless port security says.
    if port.qemu.is_none() || port.spoof_check {
        dp.add_static_mac(id, Mac(port.mac));
    }
    if port.spoof_check {
        dp.set_guard(
            id,
            vswitch::guard::PortGuard {
                mac: Mac(port.mac),
                ipv4: port.ip.map(|(a, _)| a),
                // A multi-homed container answers from any of its addresses.
                also: lab
                    .ports
                    .iter()
                    .filter(|o| o.name != port.name && o.netns.is_some() && o.netns == port.netns)
                    .filter_map(|o| o.ip.map(|(a, _)| a))
                    .collect(),
                ipv6: ipv6_guard(lab, port),
            },
        );
    }
    if let Some(spec) = port.impair {
        dp.set_impairment(id, spec);
    }
    if let Some(name) = &port.mirror {
        let mirror = host::tap::mirror_tap(name)
            .with_context(|| format!("mirror of port `{}`", port.name))?;
        dp.set_mirror(id, Box::new(mirror));
    }
    Ok(())
}

/// What IPv6 a guarded port may send from, on a bridge with a subnet6: that prefix
/// but the gateway's address and other containers' `ip6` (see
/// [`vswitch::guard::Ipv6Guard`]).
fn ipv6_guard(lab: &Lab, port: &PortCfg) -> Option<vswitch::guard::Ipv6Guard> {
    let b = lab.bridges.iter().find(|b| b.name == port.bridge)?;
    let subnet = b.subnet6?;
    let others = lab
        .ports
        .iter()
        .filter(|o| o.name != port.name && (o.netns.is_none() || o.netns != port.netns));
    let taken = b
        .gateway6
        .into_iter()
        // The router's link-local address: its advertisements' source, the SLAAC
        // containers' default router.
        .chain([vswitch::wire::icmpv6::link_local(router_mac(
            &lab.name, &b.name,
        ))])
        .chain(others.clone().filter_map(|o| o.ip6.map(|(a, _)| a)))
        // The other ports' own link-local addresses (their kernels derive them from
        // their MACs, EUI-64): no one may answer for them.
        .chain(others.map(|o| vswitch::wire::icmpv6::link_local(Mac(o.mac))))
        // A service's IPv6 VIP is the router's to answer for, as gateway6 is.
        .chain(lab.services.iter().filter_map(|s| match s.vip.ip() {
            std::net::IpAddr::V6(a) => Some(a),
            std::net::IpAddr::V4(_) => None,
        }))
        .collect();
    Some(vswitch::guard::Ipv6Guard { subnet, taken })
}

/// The lab's router and VXLAN endpoint in the datapath, kept from the build so that
/// `show` reaches them directly (not by port name).
#[derive(Debug, Clone, Copy, Default)]
pub struct Handles {
    pub router: Option<HandlerRef<RouterHandler>>,
    pub vtep: Option<HandlerRef<Vtep>>,
}

/// The flows' idle timeouts, from `[nat]` (its defaults without one).
pub(crate) fn nat_timeouts(lab: &Lab) -> vrouter::nat::Timeouts {
    let nat = lab.nat_or_default();
    vrouter::nat::Timeouts {
        tcp: Duration::from_secs(nat.tcp_timeout_s),
        tcp_closing: Duration::from_secs(nat.tcp_closing_timeout_s),
        udp: Duration::from_secs(nat.udp_timeout_s),
        icmp: Duration::from_secs(nat.icmp_timeout_s),
    }
}

/// The default route a port's container gets: its bridge's gateway, for the first
/// port (in file order) of its namespace whose bridge has one. A container with
/// ports on several routed bridges is multi-homed, as with several Docker networks:
/// the others give it only their addresses and subnets.
fn gateway_of(lab: &Lab, port: &PortCfg) -> Option<Ipv4Addr> {
    first_route_of(lab, port, |p, b| p.ip.and(b.gateway))
}

/// The default IPv6 route a port's container gets, by the rule of [`gateway_of`]:
/// the first port of its namespace with an `ip6` on a bridge with a `gateway6`.
fn gateway6_of(lab: &Lab, port: &PortCfg) -> Option<std::net::Ipv6Addr> {
    first_route_of(lab, port, |p, b| p.ip6.and(b.gateway6))
}

/// `gateway(p, p's bridge)` for `port` if it is the first port of its namespace (in
/// file order) to have one; none for the others.
fn first_route_of<A: Copy>(
    lab: &Lab,
    port: &PortCfg,
    gateway: impl Fn(&PortCfg, &lab::BridgeCfg) -> Option<A>,
) -> Option<A> {
    let of = |p: &PortCfg| {
        lab.bridges
            .iter()
            .find(|b| b.name == p.bridge)
            .and_then(|b| gateway(p, b))
    };
    let first = lab
        .ports
        .iter()
        .find(|p| p.netns.is_some() && p.netns == port.netns && of(p).is_some());
    match first {
        Some(f) if f.name != port.name => None,
        _ => of(port),
    }
}

/// The router: one leg, an internal port, on every bridge with a subnet.
fn add_router(
    lab: &Lab,
    dp: &mut Datapath,
    bridges: &[(String, BridgeId, u32)],
    proxy: Option<HostProxy>,
) -> std::io::Result<Option<HandlerRef<RouterHandler>>> {
    let mut ifaces = Vec::new();
    let mut legs = Vec::new();
    let mut dns6: Vec<Vec<std::net::Ipv6Addr>> = Vec::new();
    for b in &lab.bridges {
        // A leg wherever a bridge is routed: IPv4, IPv6 or both.
        let v4 = b.subnet.as_ref().zip(b.gateway);
        let ip6 = b.gateway6.zip(b.subnet6.map(|(_, p)| p));
        if v4.is_none() && ip6.is_none() {
            continue;
        }
        let bridge = bridges
            .iter()
            .find(|(n, _, _)| *n == b.name)
            .expect("added")
            .1;
        ifaces.push(Iface {
            name: b.name.clone(),
            mac: router_mac(&lab.name, &b.name),
            ip: v4.map(|(_, gw)| gw),
            prefix: v4.map_or(32, |(subnet, _)| subnet.prefix),
            ip6,
        });
        dns6.push(b.dns6.clone());
        legs.push(bridge);
    }
    if ifaces.is_empty() {
        return Ok(None);
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
            ip: iface.ip.map(|ip| format!("{ip}/{}", iface.prefix)),
            ip6: iface.ip6.map(|(a, _)| a),
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
    for (leg, servers) in dns6.iter().enumerate() {
        router.set_dns6(leg, servers);
    }
    // Guarded ports can send from no other address and MAC than their own: the
    // router knows them without asking, and no ARP can change that.
    for port in lab.ports.iter().filter(|p| p.spoof_check) {
        if let Some((ip, _)) = port.ip {
            router.add_static_neighbor(ip, Mac(port.mac), Instant::now());
        }
    }
    // A port's ip6 is tapnet's to set, on the port's MAC: no solicitation needed.
    for port in &lab.ports {
        if let Some((ip6, _)) = port.ip6 {
            router.add_static_neighbor6(ip6, Mac(port.mac), Instant::now());
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
    let handler = dp.add_handler_of(handler);
    for (info, want) in infos.into_iter().zip(ports) {
        let mac = info.mac;
        let got = dp.add_internal_port(info, handler.id)?;
        assert_eq!(got, want, "router ports are numbered in order");
        // The router's own MAC is no one else's to claim.
        dp.add_static_mac(got, mac);
    }
    Ok(Some(handler))
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

/// The VXLAN endpoint: one internal port on every bridge with a VNI.
fn add_vtep(
    lab: &Lab,
    dp: &mut Datapath,
    bridges: &[(String, BridgeId, u32)],
    mut vtep: Vtep,
) -> std::io::Result<HandlerRef<Vtep>> {
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
            ip6: None,
        });
    }
    let handler = dp.add_handler_of(vtep);
    for (i, info) in infos.into_iter().enumerate() {
        let got = dp.add_internal_port(info, handler.id)?;
        assert_eq!(got, PortId(first + i), "VXLAN ports are numbered in order");
    }
    Ok(handler)
}

/// The router's MAC on a bridge ([`lab::router_mac`]: the lab's validation knows it
/// too, so no port may take it).
pub fn router_mac(lab: &str, bridge: &str) -> Mac {
    Mac(lab::router_mac(lab, bridge))
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
