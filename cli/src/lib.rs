//! The parts of the `tapnet` binary: host set-up (namespaces over rtnetlink), the
//! control socket, `show`, and `up`, which ties the lab (the `lab` crate) to the
//! datapath.

pub mod control;
pub mod netns;
pub mod rtnl;
pub mod show;
pub mod top;
pub mod trace;
pub mod up;
