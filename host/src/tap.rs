//! The TAP devices of a lab: a port's, created, moved into its container's namespace
//! and configured there (link, address, default route), and a mirror's, a bare TAP in
//! tapnet's own namespace.

use std::net::Ipv4Addr;

use anyhow::{anyhow, bail, Context, Result};
use vswitch::tap::Tap;

use crate::netns::{Netns, NetnsRecord};
use crate::rtnl::Rtnl;

/// Each TAP's queue towards tapnet, in frames: deep enough to ride out a busy loop turn.
pub const TXQUEUELEN: u32 = 1000;

/// What a port's TAP is to be.
#[derive(Debug, Clone, Copy)]
pub struct PortTap<'a> {
    /// The port's name in the lab (messages name it).
    pub port: &'a str,
    /// The container's namespace (created if missing); none: tapnet's own.
    pub netns: Option<&'a str>,
    /// The device's name in that namespace.
    pub ifname: &'a str,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// The address set on the device, with its prefix.
    pub ip: Option<(Ipv4Addr, u8)>,
    /// With `ip` and `netns`: the container's default route goes via this address.
    pub gateway: Option<Ipv4Addr>,
    /// Unique among the lab's ports: names the TAP while it is still in tapnet's
    /// namespace (`tn<pid>p<index>`).
    pub index: usize,
}

/// Creates one port's TAP and puts it in place, configured. The TAP is created in our
/// own namespace under a temporary name and then moved (and renamed) into the
/// container's, so that deleting the container's namespace deletes the device and the
/// datapath sees it (EBADFD) instead of holding the namespace alive. A namespace this
/// creates is handed to `created` at once, so that a failure after it still has it
/// removed.
pub fn port_tap(
    port: &PortTap<'_>,
    created: &mut dyn FnMut(NetnsRecord) -> Result<()>,
) -> Result<Tap> {
    let mut root = Rtnl::new()?;
    let Some(ns_name) = port.netns else {
        let tap = Tap::create(port.ifname)
            .with_context(|| format!("cannot create TAP `{}`", port.ifname))?;
        let idx = root
            .link_index(port.ifname)?
            .ok_or_else(|| anyhow!("TAP `{}` vanished after creation", port.ifname))?;
        root.set_link(idx, Some(port.mac), Some(port.mtu), Some(TXQUEUELEN))?;
        if let Some((ip, prefix)) = port.ip {
            root.add_ipv4_address(idx, ip, prefix)?;
        }
        root.set_up(idx)?;
        return Ok(tap);
    };
    let temp = format!("tn{}p{}", std::process::id(), port.index);
    let tap = Tap::create(&temp).with_context(|| format!("cannot create TAP `{temp}`"))?;
    let idx = root
        .link_index(&temp)?
        .ok_or_else(|| anyhow!("TAP `{temp}` vanished after creation"))?;
    root.set_link(idx, Some(port.mac), Some(port.mtu), Some(TXQUEUELEN))?;
    let ns = Netns::open_or_create(ns_name)
        .with_context(|| format!("cannot create namespace `{ns_name}`"))?;
    if ns.created() {
        // Recorded at once, so a failure below still removes it.
        created(ns.record())?;
    }
    root.move_to_netns(idx, ns.fd(), port.ifname).map_err(|e| {
        if e.raw_os_error() == Some(libc::EEXIST) {
            anyhow!("port `{}`: a device named `{}` already exists in namespace `{ns_name}`: remove it or set another `ifname`", port.port, port.ifname)
        } else {
            anyhow!("cannot move TAP into namespace `{ns_name}`: {e}")
        }
    })?;
    let mut inner = Rtnl::in_netns(&ns)?;
    let idx = inner.link_index(port.ifname)?.ok_or_else(|| {
        anyhow!(
            "`{}` not found in namespace `{ns_name}` after the move",
            port.ifname
        )
    })?;
    inner.set_up(idx)?;
    if let Some((ip, prefix)) = port.ip {
        inner.add_ipv4_address(idx, ip, prefix)?;
        if let Some(gw) = port.gateway {
            inner.add_default_route_v4(gw, idx).map_err(|e| {
                if e.raw_os_error() == Some(libc::EEXIST) {
                    anyhow!(
                        "namespace `{ns_name}` already has a default route, and tapnet gives each container one via its gateway {gw}: \
                         remove it (`ip -n {ns_name} route del default`) or give the port a namespace of its own"
                    )
                } else {
                    anyhow!("cannot add the default route via {gw} in namespace `{ns_name}`: {e}")
                }
            })?;
        }
    }
    Ok(tap)
}

/// A mirror: a TAP in tapnet's own namespace, up, with no address, that tcpdump or
/// Wireshark can open; it goes with the lab.
pub fn mirror_tap(name: &str) -> Result<Tap> {
    let mut rtnl = Rtnl::new()?;
    if rtnl.link_index(name)?.is_some() {
        bail!("a device named `{name}` already exists here: choose another `mirror`");
    }
    let tap = Tap::create(name).with_context(|| format!("cannot create TAP `{name}`"))?;
    let idx = rtnl
        .link_index(name)?
        .ok_or_else(|| anyhow!("TAP `{name}` vanished after creation"))?;
    rtnl.set_up(idx)?;
    Ok(tap)
}
