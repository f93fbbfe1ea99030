//! The running lab: built from a validated [`lab::Lab`] ([`run`]: the host's checks,
//! the datapath with its bridges, ports, router, host proxy and VXLAN endpoint),
//! served (the poll loop and the control requests) and torn down, including what an
//! earlier run left behind. Its control socket ([`control`]: server, protocol and the
//! client the `tapnet` commands use), the answers to `show` ([`query`]) and `trace`
//! ([`trace`]) live here too, next to the state they read.
//!
//! `run` is `tapnet up`: the steps are in `preflight` (what the host must allow),
//! `build`, `serve` and `teardown`.

mod build;
pub mod control;
mod etcd;
mod namespaces;
mod preflight;
pub mod query;
pub mod runtime;
mod serve;
mod teardown;
pub mod trace;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use lab::{Lab, LabError};
use mio::Waker;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use control::server::{Request, Server};
use teardown::Built;

pub use build::{router_mac, Handles};

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

/// What this host refuses of `lab` for the user running tapnet, with where in the file:
/// nothing for root; without root, what only root may do (see
/// [`lab::refused_without_root`]). `check` and `up` both ask.
pub fn refused_here(lab: &Lab) -> Vec<LabError> {
    if host::userns::rootless() {
        lab::refused_without_root(lab, host::userns::unprivileged_port_start())
    } else {
        Vec::new()
    }
}

/// How the datapath runs (`tapnet up`'s options).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tuning {
    /// See [`vswitch::Datapath::set_busy_poll`]; zero: never spin.
    pub busy_poll: Duration,
    /// Datapath threads (see [`vswitch::shard`]); None: the cores this process may run
    /// on ([`std::thread::available_parallelism`]), at most [`MAX_THREADS`].
    pub threads: Option<usize>,
    /// Bind datapath thread k to the k-th CPU the process may use
    /// ([`vswitch::Datapath::pin_threads`]).
    pub pin_threads: bool,
    /// Write each frame to its TAP by itself, not in io_uring batches
    /// ([`vswitch::Datapath::set_write_batching`]).
    pub no_io_uring: bool,
}

/// The most datapath threads `tapnet up` starts.
pub const MAX_THREADS: usize = 16;

/// One datapath thread per core this process may use, up to [`MAX_THREADS`].
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_THREADS)
}

/// Builds the lab, runs it until SIGINT, SIGTERM or SIGHUP, tears it down.
///
/// Without root, the process first enters the lab's user namespace
/// ([`host::userns::enter_lab_userns`]); it must then still be single-threaded, so
/// this is called before anything starts a thread.
///
pub fn run(lab: Lab, tuning: Tuning) -> Result<(), HostError> {
    let refused = refused_here(&lab);
    if !refused.is_empty() {
        let lines = refused.iter().map(|e| e.to_string()).collect();
        return Err(HostError(LabRefused(lines).into()));
    }
    preflight::tun().map_err(HostError)?;
    if host::userns::rootless() {
        let join = lab
            .ports
            .iter()
            .filter_map(|p| p.netns.as_deref())
            .find(|ns| lab::netns_is_path(ns));
        host::userns::enter_lab_userns(join.map(Path::new)).map_err(|e| HostError(e.into()))?;
    }
    // Caught from before the first namespace exists, so a signal during the build
    // still ends in a full teardown rather than a half-built host.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|e| HostError(e.into()))?;
    // Bound before anything is built: it is what claims the lab's name.
    let (req_tx, req_rx) = crossbeam_channel::bounded::<Request>(64);
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
    let namespaces: Arc<OnceLock<Mutex<namespaces::Namespaces>>> = Arc::new(OnceLock::new());
    let (store_tx, store_wake) = (req_tx.clone(), wake.clone());
    let server = Server::start(&lab.name, req_tx, wake, namespaces.clone()).map_err(HostError)?;
    preflight::devices(&lab).map_err(HostError)?;
    let proxy = preflight::host_proxy(&lab).map_err(HostError)?;
    let vtep = preflight::vtep(&lab).map_err(HostError)?;
    let mut built = Built::new(&lab.name);
    built.reap_earlier_run();
    let mut building = namespaces::Namespaces::default();
    let Some((mut dp, handles)) = build::datapath(
        &lab,
        tuning,
        proxy,
        vtep,
        &mut built,
        &mut building,
        &mut signals,
    )
    .map_err(HostError)?
    else {
        // Stopped while building: torn down without ever saying ready.
        return Ok(());
    };
    let waker = Waker::new(dp.registry(), serve::CONTROL_TOKEN).map_err(|e| HostError(e.into()))?;
    let _ = wake_slot.set(waker);
    // Requests that came in during the build are waiting: look at them at once.
    if let Some(waker) = wake_slot.get() {
        let _ = waker.wake();
    }

    let _ = namespaces.set(Mutex::new(building));
    let made = lab.ports.len();
    // Registers this host in etcd and watches for the others, on threads of its own.
    let store = match (etcd::StoreConfig::of(&lab), etcd::Own::of(&lab)) {
        (Some(config), Some(first)) => Some(
            etcd::StoreClient::start(config, first, store_tx, store_wake)
                .map_err(|e| HostError(e.into()))?,
        ),
        _ => None,
    };
    let live = runtime::Live {
        lab,
        built: &mut built,
        namespaces: namespaces.get().expect("just set"),
        handles,
        made,
        store: store.as_ref(),
    };
    // Pinned last, once every other thread of the process is started: those keep
    // the CPUs tapnet started with, as only threads started later inherit thread 0's.
    let pinned = if tuning.pin_threads {
        dp.pin_threads()
            .map(|_| ())
            .map_err(|e| HostError(anyhow::anyhow!("--pin-threads: {e}")))
    } else {
        Ok(())
    };
    let result =
        pinned.and_then(|()| serve::serve(live, &mut dp, signals, &req_rx).map_err(HostError));
    // The host leaves the store first (its lease revoked: the others stop sending to
    // it at once), then TAPs go (closing their descriptors deletes the devices), then
    // namespaces, then the control socket.
    drop(store);
    drop(dp);
    drop(built);
    drop(server);
    result
}
