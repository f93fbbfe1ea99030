//! The parts of the `tapnet` binary: the control socket, `show`, and `up`, which ties
//! the lab (the `lab` crate) and the host's plumbing (the `host` crate) to the
//! datapath.

pub mod control;
pub mod show;
pub mod top;
pub mod trace;
pub mod up;
