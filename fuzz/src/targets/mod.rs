//! The targets, and what they share: the VXLAN endpoint's receive-side coalescing
//! (GRO) run over a sequence of frames, with the invariant that what it makes is a
//! frame the datapath takes.

mod gro;
mod ingress;
mod lab;
mod router;
mod vxlan;

use std::time::Duration;

use crate::input::Record;
use crate::Target;

pub fn all() -> Vec<Target> {
    vec![ingress::TARGET, router::TARGET, vxlan::TARGET, lab::TARGET]
}

/// The time a record lets pass: its `dt` in milliseconds, or in seconds when the
/// op's top bit is set (to cross aging times and timeouts of minutes and hours).
pub fn step(r: &Record<'_>) -> Duration {
    if r.op & 0x80 != 0 {
        Duration::from_secs(r.dt as u64)
    } else {
        Duration::from_millis(r.dt as u64)
    }
}

/// Asserts an invariant; a failure is a crash like any panic.
#[macro_export]
macro_rules! invariant {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            panic!("invariant: {}", format!($($fmt)+));
        }
    };
}
