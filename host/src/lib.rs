//! Host plumbing for a lab: named network namespaces made and removed as iproute2
//! does ([`netns`]), a small synchronous rtnetlink client ([`rtnl`]), the TAP devices
//! of ports and mirrors created, moved into their namespaces and configured
//! ([`tap`]), the process's descriptor limit ([`limits`]) and, without root, the
//! lab's user namespace ([`userns`]). What it changes on
//! the host is said by the caller; there is no datapath logic here.

pub mod limits;
pub mod netns;
pub mod rtnl;
pub mod tap;
pub mod userns;
