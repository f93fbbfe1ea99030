//! Everything attached to a bridge is a port: a container's TAP today; the router's
//! leg on a subnet, the VXLAN endpoint or a capture later. All share this small trait.

use std::io;
use std::os::fd::RawFd;

/// A port's index in the datapath.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub usize);

/// The IO half of a port. Frames crossing this trait are a 10-byte virtio-net header
/// followed by an Ethernet frame, whatever the port speaks natively.
pub trait Port: Send {
    /// Reads one frame into `buf` without blocking: `WouldBlock` when none is waiting.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame without blocking: `WouldBlock` when the port's queue is full.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
    /// The descriptor the poll loop waits on for readability.
    fn fd(&self) -> RawFd;
    /// Whether `send` takes GSO super-frames as they are.
    fn accepts_gso(&self) -> bool;
    /// The descriptor on which one `write(2)` of a frame does exactly what `send`
    /// does, for a caller that gathers writes into one system call
    /// ([`crate::uring::WriteBatch`]); None where `send` does more (a VM's socket
    /// frames each one).
    fn write_fd(&self) -> Option<RawFd> {
        None
    }
    /// Whether anyone is at the other end: false for a VM's socket port with no VM
    /// connected, which `show ports` then says is link-down. A TAP always has one.
    fn carrier(&self) -> bool {
        true
    }
    /// What kind of port this is, for `show ports`: "tap", or "qemu" for a VM's socket.
    fn kind(&self) -> &'static str {
        "tap"
    }
    /// Frames the port's own IO dropped before the datapath saw them (a VM's stream
    /// that broke its framing), by reason: `show drops` lists them beside the
    /// datapath's own reasons. A TAP has none.
    fn io_drops(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// What the IO knows of its peer beyond the traffic counters (a VM's connects,
    /// second VMs refused), by name, for `show ports`.
    fn io_stats(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// Errors after which a port cannot work again: its device is gone (its namespace was
/// deleted, say) or its descriptor is dead. Not EIO: a TAP answers writes with EIO
/// while its link is merely down, and the container may bring it up again.
pub fn is_fatal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADFD | libc::EBADF | libc::ENODEV | libc::ENXIO | libc::EPIPE)
    )
}
