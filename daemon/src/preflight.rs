//! What `up` asks of the host before it builds anything, so that a lab the host
//! cannot run is refused with nothing to undo: /dev/net/tun, device names
//! free, and the sockets that must be bound (each forward's port, the VXLAN
//! endpoint) bound now. What does not depend on the host is the lab crate's to
//! refuse, in `check` as in `up`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use encap::{Vtep, VtepConfig};
use host::limits::raise_descriptor_limit;
use host::netns::Netns;
use host::rtnl::Rtnl;
use lab::{Lab, Pos, Proto, DEFAULT_NAT_MAX_FLOWS};
use vrouter::proxy::{ForwardRule, HostProxy};

use crate::build::nat_timeouts;
use crate::LabRefused;

/// What `up` needs of the host before anything else: a /dev/net/tun this user may
/// open (an ordinary user too: udev makes it mode 0666 on most distributions).
pub(crate) fn tun() -> Result<()> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "cannot open /dev/net/tun ({e}): without root it must be open to every user, mode 0666 as udev makes it on most distributions: `chmod 0666 /dev/net/tun` (as root), or run tapnet as root"
        ),
        Err(e) => bail!(
            "cannot open /dev/net/tun ({e}): load the tun module (`modprobe tun`) or create the device node (`mknod /dev/net/tun c 10 200`, as root)"
        ),
    }
}

/// Everything else `up` refuses before touching the host: device names taken (in
/// named namespaces as root; a path's, or a rootless lab's, are checked as each TAP
/// is made).
pub(crate) fn devices(lab: &Lab) -> Result<()> {
    if host::userns::rootless() {
        return Ok(());
    }
    let mut root = Rtnl::new().context("cannot open a netlink socket")?;
    for port in lab.ports.iter() {
        let taken = match &port.netns {
            _ if port.qemu.is_some() => false,
            Some(ns) if lab::netns_is_path(ns) => false,
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

/// The host proxy, for masquerade and port forwards. Each forward's port is bound
/// here, before anything else is built, so a taken port refuses the lab cleanly.
pub(crate) fn host_proxy(lab: &Lab) -> Result<Option<HostProxy>> {
    let masquerade = lab.nat.as_ref().is_some_and(|n| n.masquerade);
    if !masquerade && lab.forwards.is_empty() {
        return Ok(None);
    }
    let at = |pos: Pos| format!("{}:{}:{}", lab.file, pos.line, pos.col);
    let mut problems = Vec::new();
    let mut rules = Vec::new();
    for f in &lab.forwards {
        let rule = ForwardRule {
            proto: match f.proto {
                Proto::Tcp => vrouter::nat::PROTO_TCP,
                Proto::Udp => vrouter::nat::PROTO_UDP,
            },
            listen: f.listen,
            to: f.to,
        };
        if let Err(e) = vrouter::proxy::can_listen(&rule) {
            problems.push(format!(
                "{}: forward listen {}: cannot bind it on this host: {e}",
                at(f.pos),
                f.listen
            ));
        }
        rules.push(rule);
    }
    if !problems.is_empty() {
        return Err(LabRefused(problems).into());
    }
    // Every proxied flow holds a host socket: as many descriptors as the host allows,
    // and no more flows than they can hold.
    let descriptors = raise_descriptor_limit();
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

/// Descriptors kept for everything but proxied flows (TAPs, listeners, control).
const RESERVED_DESCRIPTORS: u64 = 512;

/// The VXLAN endpoint, its sockets bound now so that an unbindable `listen` refuses
/// the lab before anything else is built.
pub(crate) fn vtep(lab: &Lab) -> Result<Option<Vtep>> {
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
