//! A test port over one end of an AF_UNIX SOCK_SEQPACKET pair: real descriptors, real
//! readiness in the real poll loop, message boundaries like a TAP's. The test drives the
//! other end. For unit tests of the datapath only; integration tests use real TAPs.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use vswitch::Port;

pub struct SeqpacketPort {
    fd: OwnedFd,
    gso: bool,
}

/// The end a test holds: it writes frames in and reads frames out.
pub struct Peer {
    fd: OwnedFd,
}

pub fn pair(gso: bool) -> (SeqpacketPort, Peer) {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into `fds`.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "socketpair: {}", io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are owned here.
    unsafe {
        (
            SeqpacketPort {
                fd: OwnedFd::from_raw_fd(fds[0]),
                gso,
            },
            Peer {
                fd: OwnedFd::from_raw_fd(fds[1]),
            },
        )
    }
}

fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reads at most buf.len() bytes into buf.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn write(fd: RawFd, buf: &[u8]) -> io::Result<()> {
    // SAFETY: writes buf.len() bytes from buf.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Port for SeqpacketPort {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match read(self.fd.as_raw_fd(), buf)? {
            // The peer closed: as good as a TAP whose namespace was deleted.
            0 => Err(io::Error::from_raw_os_error(libc::EBADFD)),
            n => Ok(n),
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        write(self.fd.as_raw_fd(), frame)
    }

    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn accepts_gso(&self) -> bool {
        self.gso
    }

    /// One `write(2)` of a SOCK_SEQPACKET socket is one message, as one of a TAP is
    /// one frame: the datapath's io_uring batches write to these ports as to TAPs.
    fn write_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
}

impl Peer {
    /// Sends `frame` to the datapath. A full socket is waited on (up to 10 s): a
    /// worker thread drains its queues on its own schedule, later on a busy machine.
    pub fn send(&self, frame: &[u8]) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match write(self.fd.as_raw_fd(), frame) {
                Ok(()) => return,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("peer send: {e}"),
            }
        }
    }

    /// The next frame the datapath wrote to this port, if any.
    pub fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        match read(self.fd.as_raw_fd(), buf) {
            Ok(n) => Some(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => panic!("peer recv: {e}"),
        }
    }
}

/// A frame as ports carry it: a zero virtio-net header, then Ethernet.
pub fn frame(dst: [u8; 6], src: [u8; 6], payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; 10 + 14 + payload];
    f[10..16].copy_from_slice(&dst);
    f[16..22].copy_from_slice(&src);
    f[22..24].copy_from_slice(&0x0800u16.to_be_bytes());
    f
}

/// A TCP/IPv4 super-frame as a container with TSO hands it over: NEEDS_CSUM, GSO
/// TCPv4 with segments of `gso_size`, then Ethernet, IPv4 and TCP headers (54 bytes)
/// and `payload` bytes.
#[allow(dead_code)]
pub fn tso_frame(dst: [u8; 6], src: [u8; 6], payload: usize, gso_size: u16) -> Vec<u8> {
    let mut f = frame(dst, src, 40 + payload);
    vswitch::frame::VnetHdr {
        flags: vswitch::frame::VNET_F_NEEDS_CSUM,
        gso_type: vswitch::frame::GSO_TCPV4,
        hdr_len: 54,
        gso_size,
        csum_start: 34,
        csum_offset: 16,
    }
    .emit(&mut f);
    vswitch::wire::ipv4::Ipv4Repr {
        src: std::net::Ipv4Addr::new(10, 0, 0, 1),
        dst: std::net::Ipv4Addr::new(10, 0, 0, 2),
        protocol: 6,
        ttl: 64,
        ident: 0,
        dont_frag: true,
        payload_len: 20 + payload,
    }
    .emit(&mut f[24..]);
    f[24 + 20 + 12] = 5 << 4;
    f
}
