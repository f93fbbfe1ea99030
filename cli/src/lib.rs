//! The parts of the `tapnet` binary: the lab file, host set-up (namespaces over
//! rtnetlink), the control socket, `show`, and `up`, which ties them to the datapath.

pub mod control;
pub mod lab;
pub mod netns;
pub mod rtnl;
pub mod show;
pub mod top;
pub mod trace;
pub mod up;
