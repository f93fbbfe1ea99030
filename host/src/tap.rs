//! The TAP devices of a lab: a port's, created, moved into its container's namespace
//! and configured there (link, address, default route), and a mirror's, a bare TAP in
//! tapnet's own namespace.

use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;

use anyhow::{anyhow, bail, Context, Result};
use vswitch::tap::Tap;

use crate::netns::{run_in_fd, Netns, NetnsRecord};
use crate::rtnl::Rtnl;

/// Each TAP's queue towards tapnet, in frames: deep enough to ride out a busy loop turn.
pub const TXQUEUELEN: u32 = 1000;

/// Where a port's TAP goes.
#[derive(Debug, Clone, Copy)]
pub enum NsPlace<'a> {
    /// The named namespace /run/netns/NAME, created if missing (as root).
    Named(&'a str),
    /// A namespace already open: one the lab made for itself (rootless), or an
    /// existing one given by path. `label` names it in messages. Without root, a
    /// `staging` namespace of the lab's is where the TAP is made before it moves in
    /// (for a path: so that its descriptor does not hold the container's namespace
    /// alive after the container ends).
    Open {
        fd: BorrowedFd<'a>,
        label: &'a str,
        staging: Option<BorrowedFd<'a>>,
    },
}

impl NsPlace<'_> {
    fn label(&self) -> &str {
        match self {
            NsPlace::Named(name) => name,
            NsPlace::Open { label, .. } => label,
        }
    }
}

/// What a port's TAP is to be.
#[derive(Debug, Clone, Copy)]
pub struct PortTap<'a> {
    /// The port's name in the lab (messages name it).
    pub port: &'a str,
    /// The container's namespace; none: tapnet's own.
    pub netns: Option<NsPlace<'a>>,
    /// The device's name in that namespace.
    pub ifname: &'a str,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// The address set on the device, with its prefix.
    pub ip: Option<(Ipv4Addr, u8)>,
    /// With `ip` and `netns`: the container's default route goes via this address.
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 address set on the device, with its prefix (no DAD wait).
    pub ip6: Option<(std::net::Ipv6Addr, u8)>,
    /// With `ip6` and `netns`: the container's default IPv6 route goes via this.
    pub gateway6: Option<std::net::Ipv6Addr>,
    /// Unique among the lab's ports: names the TAP while it is still in tapnet's
    /// namespace (`tn<pid>p<index>`).
    pub index: usize,
    /// Queues to open (one per datapath thread; see [`Tap::create_queues`]).
    pub queues: usize,
}

/// Creates one port's TAP and puts it in place, configured.
///
/// As root, the TAP is created in our own namespace under a temporary name and then
/// moved (and renamed) into the container's, so that deleting the container's
/// namespace deletes the device and the datapath sees it (EBADFD) instead of holding
/// the namespace alive. A namespace this creates is handed to `created` at once, so
/// that a failure after it still has it removed.
///
/// Without root ([`crate::userns::rootless`]) tapnet may not create devices in its own
/// namespace (the host's), so the TAP is opened inside the container's namespace from
/// a thread that entered it, as pasta and slirp4netns do; its descriptor then holds
/// that namespace alive for as long as the lab runs.
///
/// Returns the TAP's queues, [`PortTap::queues`] of them: all are opened where the
/// device is created, before it moves, so none holds the container's namespace.
pub fn port_tap(
    port: &PortTap<'_>,
    created: &mut dyn FnMut(NetnsRecord) -> Result<()>,
) -> Result<Vec<Tap>> {
    let Some(place) = port.netns else {
        let mut root = Rtnl::new()?;
        let tap = Tap::create_queues(port.ifname, port.queues)
            .with_context(|| format!("cannot create TAP `{}`", port.ifname))?;
        let idx = root
            .link_index(port.ifname)?
            .ok_or_else(|| anyhow!("TAP `{}` vanished after creation", port.ifname))?;
        root.set_link(idx, Some(port.mac), Some(port.mtu), Some(TXQUEUELEN))?;
        if let Some((ip, prefix)) = port.ip {
            root.add_ipv4_address(idx, ip, prefix)?;
        }
        if let Some((ip, prefix)) = port.ip6 {
            root.add_ipv6_address(idx, ip, prefix)?;
        }
        root.set_up(idx)?;
        return Ok(tap);
    };
    let label = place.label();
    let taken = || {
        anyhow!(
            "port `{}`: a device named `{}` already exists in namespace `{label}`: remove it or set another `ifname`",
            port.port,
            port.ifname
        )
    };
    let named;
    let mut staging = None;
    let fd = match place {
        NsPlace::Named(name) => {
            named = Netns::open_or_create(name)
                .with_context(|| format!("cannot create namespace `{name}`"))?;
            if named.created() {
                // Recorded at once, so a failure below still removes it.
                created(named.record())?;
            }
            named.fd()
        }
        NsPlace::Open {
            fd, staging: st, ..
        } => {
            staging = st;
            fd
        }
    };
    let tap = if let Some(st) = staging {
        let mut outer = Rtnl::in_netns_fd(st)?;
        let temp = format!("tn{}p{}", std::process::id(), port.index);
        let tap = run_in_fd(st, || Tap::create_queues(&temp, port.queues))?
            .with_context(|| format!("cannot create TAP `{temp}`"))?;
        let idx = outer
            .link_index(&temp)?
            .ok_or_else(|| anyhow!("TAP `{temp}` vanished after creation"))?;
        outer.set_link(idx, Some(port.mac), Some(port.mtu), Some(TXQUEUELEN))?;
        outer.move_to_netns(idx, fd, port.ifname).map_err(|e| match e.raw_os_error() {
            Some(libc::EEXIST) => taken(),
            Some(libc::EPERM) => anyhow!(
                "cannot move TAP into namespace `{label}` (EPERM): it belongs to another user namespace than the lab's; a lab without root can use namespaces of one user namespace only"
            ),
            _ => anyhow!("cannot move TAP into namespace `{label}`: {e}"),
        })?;
        tap
    } else if crate::userns::rootless() {
        let mut inner = Rtnl::in_netns_fd(fd)?;
        if inner.link_index(port.ifname)?.is_some() {
            return Err(taken());
        }
        let tap =
            run_in_fd(fd, || Tap::create_queues(port.ifname, port.queues))?.with_context(|| {
                format!("cannot create TAP `{}` in namespace `{label}`", port.ifname)
            })?;
        let idx = inner
            .link_index(port.ifname)?
            .ok_or_else(|| anyhow!("TAP `{}` vanished after creation", port.ifname))?;
        inner.set_link(idx, Some(port.mac), Some(port.mtu), Some(TXQUEUELEN))?;
        tap
    } else {
        let mut root = Rtnl::new()?;
        let temp = format!("tn{}p{}", std::process::id(), port.index);
        let tap = Tap::create_queues(&temp, port.queues)
            .with_context(|| format!("cannot create TAP `{temp}`"))?;
        let idx = root
            .link_index(&temp)?
            .ok_or_else(|| anyhow!("TAP `{temp}` vanished after creation"))?;
        root.set_link(idx, Some(port.mac), Some(port.mtu), Some(TXQUEUELEN))?;
        root.move_to_netns(idx, fd, port.ifname).map_err(|e| {
            if e.raw_os_error() == Some(libc::EEXIST) {
                taken()
            } else {
                anyhow!("cannot move TAP into namespace `{label}`: {e}")
            }
        })?;
        tap
    };
    configure_inside(port, fd, label)?;
    Ok(tap)
}

/// Brings a port's device up inside its container's namespace, with its address and
/// the container's default route.
fn configure_inside(port: &PortTap<'_>, fd: BorrowedFd<'_>, label: &str) -> Result<()> {
    let mut inner = Rtnl::in_netns_fd(fd)?;
    let idx = inner.link_index(port.ifname)?.ok_or_else(|| {
        anyhow!(
            "`{}` not found in namespace `{label}` after the move",
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
                        "namespace `{label}` already has a default route, and tapnet gives each container one via its gateway {gw}: \
                         remove it (`ip route del default` in that namespace) or give the port a namespace of its own"
                    )
                } else {
                    anyhow!("cannot add the default route via {gw} in namespace `{label}`: {e}")
                }
            })?;
        }
    }
    if let Some((ip, prefix)) = port.ip6 {
        inner
            .add_ipv6_address(idx, ip, prefix)
            .with_context(|| format!("cannot add {ip}/{prefix} in namespace `{label}`"))?;
        if let Some(gw) = port.gateway6 {
            inner.add_default_route_v6(gw, idx).map_err(|e| {
                if e.raw_os_error() == Some(libc::EEXIST) {
                    anyhow!(
                        "namespace `{label}` already has a default IPv6 route, and tapnet gives each container one via its gateway6 {gw}: \
                         remove it (`ip -6 route del default` in that namespace) or give the port a namespace of its own"
                    )
                } else {
                    anyhow!("cannot add the default IPv6 route via {gw} in namespace `{label}`: {e}")
                }
            })?;
        }
    }
    Ok(())
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
