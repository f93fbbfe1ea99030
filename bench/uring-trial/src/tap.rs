//! A TAP device opened as tapnet opens its ports: by tapnet's own `vswitch::tap::Tap`
//! (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, a 10-byte virtio-net header, TUNSETOFFLOAD
//! CSUM|TSO4|TSO6, so the namespace's stack hands over 64 KiB TCP super-frames).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

pub use vswitch::frame::VNET_HDR_LEN;

/// Creates TAP `name` in the calling thread's namespace. `nonblocking` keeps the
/// O_NONBLOCK tapnet opens it with, which the read/write loop needs and io_uring must
/// not have: on an O_NONBLOCK file io_uring hands EAGAIN back instead of waiting for
/// the device to be readable. Closing the descriptor removes the device.
pub fn open(name: &str, nonblocking: bool) -> io::Result<OwnedFd> {
    let fd = vswitch::tap::Tap::create(name)?.into_fd();
    if !nonblocking {
        // SAFETY: F_GETFL/F_SETFL on a descriptor we own; results are checked.
        unsafe {
            let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            if flags < 0
                || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(fd)
}
