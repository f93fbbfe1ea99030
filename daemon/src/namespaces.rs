//! The containers' network namespaces of a running lab, by the `netns` its ports give:
//! what `up` builds the TAPs in, and what `tapnet exec` and `trace` enter later.
//!
//! - As root, a name is /run/netns/NAME (made like `ip netns add` when missing), and
//!   tapnet holds no descriptor of it: `ip netns del` takes the port down.
//! - Without root, a name is a namespace the lab makes for itself in its user
//!   namespace and holds by descriptor (no /run/netns entry): it lives as long as the
//!   lab.
//! - A path (`/proc/PID/ns/net`) is an existing namespace, entered and never removed.
//!   It is held only while building (the container's end is the container's to
//!   decide: its TAP is made elsewhere and moved in, so that not even the TAP's
//!   descriptor holds it); `exec` opens it again and checks it is still the same one.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use anyhow::{Context, Result};
use host::netns::Netns;
use host::tap::NsPlace;

/// One namespace of the lab.
struct Entry {
    /// Held by the lab (rootless, or a path while building).
    fd: Option<OwnedFd>,
    /// (st_dev, st_ino) of a path's namespace, to recognise it when opened again.
    id: Option<(u64, u64)>,
}

/// The lab's namespaces and which port is in which.
#[derive(Default)]
pub struct Namespaces {
    by_netns: HashMap<String, Entry>,
    /// Port name -> its `netns` (None: tapnet's own namespace).
    ports: HashMap<String, Option<String>>,
    /// Ports that are VMs' sockets: no namespace to enter.
    vms: std::collections::HashSet<String>,
    /// Without root: where the TAPs of ports in namespaces given by path are made
    /// before they move in (made on first use).
    staging: Option<OwnedFd>,
}

impl Namespaces {
    /// Where port `port` with `netns` gets its TAP: made or opened on first use.
    pub(crate) fn place_for<'a>(&'a mut self, port: &str, netns: &'a str) -> Result<NsPlace<'a>> {
        self.ports.insert(port.to_string(), Some(netns.to_string()));
        let path = lab::netns_is_path(netns);
        if !path && !host::userns::rootless() {
            self.by_netns
                .entry(netns.to_string())
                .or_insert(Entry { fd: None, id: None });
            return Ok(NsPlace::Named(netns));
        }
        if !self.by_netns.contains_key(netns) {
            let entry = if path {
                let fd = host::netns::open_path(netns)
                    .with_context(|| format!("port `{port}`: cannot use namespace {netns}"))?;
                let m = File::from(fd.try_clone()?).metadata()?;
                Entry {
                    fd: Some(fd),
                    id: Some((m.dev(), m.ino())),
                }
            } else {
                let fd = host::netns::create_unnamed()
                    .with_context(|| format!("cannot create namespace `{netns}`"))?;
                Entry {
                    fd: Some(fd),
                    id: None,
                }
            };
            self.by_netns.insert(netns.to_string(), entry);
        }
        if path && host::userns::rootless() && self.staging.is_none() {
            self.staging = Some(
                host::netns::create_unnamed()
                    .context("cannot create the lab's staging namespace")?,
            );
        }
        let entry = &self.by_netns[netns];
        let fd = entry.fd.as_ref().expect("held while building").as_fd();
        let staging = if path {
            self.staging.as_ref().map(|s| s.as_fd())
        } else {
            None
        };
        Ok(NsPlace::Open {
            fd,
            label: netns,
            staging,
        })
    }

    /// Forgets a detached port.
    pub(crate) fn forget_port(&mut self, port: &str) {
        self.ports.remove(port);
        self.vms.remove(port);
    }

    /// Forgets a namespace no port uses any more: one the lab held (rootless) ends.
    pub(crate) fn forget_netns(&mut self, netns: &str) {
        self.by_netns.remove(netns);
    }

    /// Records a port that is a VM's socket (QEMU).
    pub(crate) fn vm(&mut self, port: &str) {
        self.vms.insert(port.to_string());
    }

    /// Records a port that stays in tapnet's own namespace.
    pub(crate) fn own(&mut self, port: &str) {
        self.ports.insert(port.to_string(), None);
    }

    /// After the build: a path's namespace is not held (its owner decides when it
    /// ends, and the port goes down with it); nor, as root, a named one.
    pub(crate) fn built(&mut self) {
        let rootless = host::userns::rootless();
        for (netns, entry) in self.by_netns.iter_mut() {
            if !rootless || lab::netns_is_path(netns) {
                entry.fd = None;
            }
        }
        self.staging = None;
    }

    /// A descriptor of the network namespace of port `port`, to enter it. Errors: no
    /// such port, or its namespace is gone (deleted, its process exited).
    pub fn open_port(&self, port: &str) -> Result<OwnedFd, String> {
        if self.vms.contains(port) {
            return Err(format!(
                "port `{port}` is a VM's socket: there is no namespace to run a command in"
            ));
        }
        let netns = self
            .ports
            .get(port)
            .ok_or_else(|| format!("no port `{port}` in this lab"))?;
        self.open(netns.as_deref())
            .map_err(|e| format!("port `{port}`: {e}"))
    }

    /// The name of port `port`'s namespace, if it has one (not a path): what
    /// /etc/netns/NAME is for.
    pub fn name_of(&self, port: &str) -> Option<&str> {
        let netns = self.ports.get(port)?.as_deref()?;
        (!lab::netns_is_path(netns)).then_some(netns)
    }

    /// A descriptor of namespace `netns` as the lab's ports name it (None: tapnet's
    /// own).
    pub fn open(&self, netns: Option<&str>) -> io::Result<OwnedFd> {
        let Some(netns) = netns else {
            return Ok(File::open("/proc/self/ns/net")?.into());
        };
        let entry = self.by_netns.get(netns).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no namespace `{netns}`"))
        })?;
        if let Some(fd) = &entry.fd {
            return fd.try_clone();
        }
        let gone = || {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("its namespace `{netns}` no longer exists"),
            )
        };
        if lab::netns_is_path(netns) {
            let fd = host::netns::open_path(netns).map_err(|_| gone())?;
            let m = File::from(fd.try_clone()?).metadata()?;
            if Some((m.dev(), m.ino())) != entry.id {
                return Err(gone());
            }
            return Ok(fd);
        }
        let ns = Netns::open(netns)?.ok_or_else(gone)?;
        ns.fd().try_clone_to_owned()
    }
}
