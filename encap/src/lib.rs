//! encap: a VXLAN tunnel endpoint over plain UDP sockets (RFC 7348), plugged into each
//! bridge with a VNI as an internal port, interoperable with the Linux kernel's own.
//! [`endpoint`] holds the state and the decisions, with no IO; [`vtep`] is the shell
//! of sockets around it; [`offload`] does in software what a TAP's offloads left.
//! [`qemu`] is a port for a QEMU VM over a unix stream socket, another framing of
//! Ethernet frames.

pub mod endpoint;
pub mod offload;
pub mod qemu;
pub mod store;
pub mod vtep;

/// The VXLAN header lives with the other packet formats, in the wire layer.
pub use vswitch::wire::vxlan;
pub use vtep::{Vtep, VtepConfig};
