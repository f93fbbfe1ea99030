//! encap: a VXLAN tunnel endpoint over plain UDP sockets (RFC 7348), plugged into each
//! bridge with a VNI as an internal port, interoperable with the Linux kernel's own.

pub mod offload;
pub mod vtep;
pub mod vxlan;

pub use vtep::{Vtep, VtepConfig};
