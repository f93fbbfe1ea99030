//! Taking a lab down: the namespaces a run created, removed when it ends, and kept
//! on disk meanwhile so that a run killed before its teardown is cleaned up by the
//! next `up` of the lab. (The TAPs need no list: closing their descriptors, when the
//! datapath is dropped, deletes them.)

use std::path::PathBuf;

use anyhow::{Context, Result};
use host::netns::NetnsRecord;

use crate::control::protocol::run_dir;

/// What `up` built on the host and must take down again.
pub(crate) struct Built {
    /// Namespaces this run created (removed at the end), without holding them open:
    /// an open descriptor would keep a namespace alive after `ip netns del`.
    namespaces: Vec<NetnsRecord>,
    /// `RUN_DIR/NAME.state`: the same list on disk, so that a run killed before
    /// its teardown (SIGKILL, a crash) is cleaned up by the next `up` of the lab.
    state: PathBuf,
}

impl Built {
    pub(crate) fn new(lab: &str) -> Built {
        Built {
            namespaces: Vec::new(),
            state: run_dir().join(format!("{lab}.state")),
        }
    }

    pub(crate) fn add(&mut self, ns: NetnsRecord) -> Result<()> {
        self.namespaces.push(ns);
        self.save()
    }

    /// Removes the namespace `name` now, if this run created it (its last port was
    /// detached).
    pub(crate) fn remove_netns(&mut self, name: &str) {
        if let Some(i) = self.namespaces.iter().position(|ns| ns.name() == name) {
            let ns = self.namespaces.remove(i);
            if let Err(e) = ns.remove() {
                eprintln!("tapnet: could not remove namespace {name}: {e}");
            }
            let _ = self.save();
        }
    }

    /// Writes the list to the state file.
    fn save(&self) -> Result<()> {
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
    pub(crate) fn reap_earlier_run(&self) {
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
