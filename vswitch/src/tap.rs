//! TAP devices opened with a few ioctls: `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, and
//! TUNSETOFFLOAD so the container's stack hands over checksum-partial 64 KiB TCP
//! super-frames that tapnet passes on unsegmented.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::port::Port;

const TUN_PATH: &CStr = c"/dev/net/tun";
// From <linux/if_tun.h>.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open TAP device. Closing it removes the device (it is not persistent).
pub struct Tap {
    fd: OwnedFd,
    name: String,
}

impl Tap {
    /// Creates TAP `name` in the calling thread's network namespace, non-blocking, with
    /// a 10-byte virtio-net header on every frame and TCP/checksum offloads on.
    pub fn create(name: &str) -> io::Result<Tap> {
        Tap::open(name, 0)
    }

    /// Creates TAP `name` with `queues` queues (`IFF_MULTI_QUEUE` when more than one),
    /// each its own descriptor, configured as [`Tap::create`] does. The kernel's flow
    /// hash picks the queue of each frame the container sends (`tun_automq_select_queue`),
    /// and a flow whose frames tapnet writes on a queue answers on that queue
    /// (`tun_flow_update`), so one flow stays on one queue. Open them all before the
    /// device moves to another namespace: afterwards the name would create a new
    /// device here. The device goes when every queue is closed.
    pub fn create_queues(name: &str, queues: usize) -> io::Result<Vec<Tap>> {
        if queues <= 1 {
            return Ok(vec![Tap::create(name)?]);
        }
        (0..queues)
            .map(|_| Tap::open(name, IFF_MULTI_QUEUE))
            .collect()
    }

    fn open(name: &str, extra_flags: libc::c_short) -> io::Result<Tap> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name {name:?} must be 1 to 15 bytes"),
            ));
        }
        // SAFETY: a constant NUL-terminated path; the result is checked.
        let raw = unsafe {
            libc::open(
                TUN_PATH.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor we just opened and own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | extra_flags,
            _pad: [0; 22],
        };
        for (dst, src) in req.name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which IfReq lays out.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let hdr_len: libc::c_int = crate::frame::VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads an int through the pointer.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ, &hdr_len) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // TSO4/TSO6 are ignored unless CSUM is set too.
        let offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
        // SAFETY: TUNSETOFFLOAD takes the flags as the argument value.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, offloads as libc::c_ulong) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Tap {
            fd,
            name: name.to_string(),
        })
    }

    /// The name it was created with (it may since have been renamed by a move).
    pub fn created_name(&self) -> &str {
        &self.name
    }

    /// The descriptor, for a caller that drives the device itself (the io_uring
    /// trial in bench/uring-trial). Closing it removes the device.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl Port for Tap {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reads at most buf.len() bytes into buf.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: writes frame.len() bytes from frame.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn accepts_gso(&self) -> bool {
        true
    }

    fn write_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
}
