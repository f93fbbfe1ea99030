//! A port for a QEMU VM: a unix stream socket that QEMU's `-netdev stream` connects to,
//! in its framing (QEMU's net/stream.c: each Ethernet frame preceded by its length, 4
//! bytes big-endian, with no virtio-net header). One VM at a time: the port is up
//! while one is connected, down (link-down, frames for it dropped) while none is, and
//! up again when the VM reconnects or a new one connects.
//!
//! QEMU's stream netdev has no offloads, so what leaves here is plain frames: TSO
//! super-frames are cut in software and partial checksums finished ([`crate::offload`]).
//! Frames from the VM are taken with an all-zero virtio-net header.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use vswitch::frame::{VnetHdr, ETH_HDR_LEN, VNET_HDR_LEN};
use vswitch::port::Port;

use crate::offload;

/// The length prefix of each frame on the stream, bytes.
const PREFIX: usize = 4;
/// The longest frame taken from a VM, bytes: QEMU's own buffer is 68 KiB.
pub const MAX_FRAME: usize = 65_535 + ETH_HDR_LEN;
/// Bytes of frames waiting for the socket, at most: past it, frames are refused
/// (WouldBlock: the datapath counts them as egress drops).
const MAX_PENDING: usize = 512 * 1024;

/// What happened on a QEMU port, for `show`.
#[derive(Debug, Default, Clone, Copy)]
pub struct QemuStats {
    /// VMs that connected.
    pub connects: u64,
    /// Connections refused because a VM was already connected.
    pub refused: u64,
    /// Connections dropped for a length prefix under an Ethernet header or over
    /// [`MAX_FRAME`] (the stream cannot be read past it).
    pub bad_length: u64,
    /// Frames from the datapath that could not be cut or finished.
    pub bad_offload: u64,
    /// Frames the VM had sent in part when its connection ended.
    pub truncated: u64,
}

/// A listening QEMU stream port; removes its socket file when dropped.
pub struct QemuPort {
    path: PathBuf,
    listener: UnixListener,
    conn: Option<UnixStream>,
    /// One descriptor for the poll loop: readable when the listener or the connection is.
    epoll: OwnedFd,
    /// The length prefix being read, and how much of it is in.
    head: [u8; PREFIX],
    head_len: usize,
    /// The frame being read (after its prefix), and how much of it is in.
    body: Vec<u8>,
    body_len: usize,
    want: usize,
    /// Frames written in part: the rest goes before anything else.
    pending: Vec<u8>,
    pending_off: usize,
    /// Where frames are built, prefix first: room for one segment or frame.
    scratch: Vec<u8>,
    stats: QemuStats,
}

impl QemuPort {
    /// Listens on `path` (mode 0600). A socket file nobody listens on (left by a
    /// killed run) is replaced; a live one, or any other file, is refused.
    pub fn listen(path: &Path) -> io::Result<QemuPort> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                if listened_on(path) {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("{} is a socket someone listens on", path.display()),
                    ));
                }
                std::fs::remove_file(path)?;
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // SAFETY: epoll_create1 returns a new descriptor or -1 (checked).
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor we just made and own.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        let listener = UnixListener::bind(path)?;
        // From here on the port removes the file, whatever fails next.
        let port = QemuPort {
            path: path.to_path_buf(),
            listener,
            conn: None,
            epoll,
            head: [0; PREFIX],
            head_len: 0,
            body: vec![0; MAX_FRAME],
            body_len: 0,
            want: 0,
            pending: Vec::new(),
            pending_off: 0,
            scratch: vec![0; PREFIX + 65_536 + ETH_HDR_LEN],
            stats: QemuStats::default(),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        port.listener.set_nonblocking(true)?;
        port.watch(port.listener.as_raw_fd(), true)?;
        Ok(port)
    }

    /// Whether a VM is connected.
    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    pub fn stats(&self) -> QemuStats {
        self.stats
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds (or removes) `fd` to the port's epoll set, for readability.
    fn watch(&self, fd: RawFd, add: bool) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: fd as u64,
        };
        let op = if add {
            libc::EPOLL_CTL_ADD
        } else {
            libc::EPOLL_CTL_DEL
        };
        // SAFETY: a valid epoll descriptor, a valid fd and event.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Takes waiting connections: the first while none is connected, the others
    /// refused (closed at once: QEMU sees its connection end).
    fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            // A VM that restarts at once connects before its old connection's end
            // is read: that one is over, and the new one takes the port.
            if self.conn.as_ref().is_some_and(hung_up) {
                self.disconnect();
            }
            if self.conn.is_some() || stream.set_nonblocking(true).is_err() {
                self.stats.refused += 1;
                continue;
            }
            if self.watch(stream.as_raw_fd(), true).is_ok() {
                self.stats.connects += 1;
                self.conn = Some(stream);
            }
        }
    }

    /// The VM went away (or broke the framing): forget its connection and anything
    /// half read or half written.
    fn disconnect(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = self.watch(conn.as_raw_fd(), false);
        }
        if self.head_len > 0 {
            self.stats.truncated += 1;
        }
        self.head_len = 0;
        self.body_len = 0;
        self.want = 0;
        self.pending.clear();
        self.pending_off = 0;
    }

    /// Writes what is pending; Ok(true) when nothing is left.
    fn flush(&mut self) -> io::Result<bool> {
        while self.pending_off < self.pending.len() {
            let Some(conn) = self.conn.as_ref() else {
                return Err(link_down());
            };
            match send_some(conn, &self.pending[self.pending_off..]) {
                Ok(n) => self.pending_off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(_) => {
                    self.disconnect();
                    return Err(link_down());
                }
            }
        }
        self.pending.clear();
        self.pending_off = 0;
        Ok(true)
    }

    /// Writes one prefixed frame (`frame`, starting with its 4-byte prefix), keeping
    /// what the socket does not take yet for later; refused past [`MAX_PENDING`].
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        if self.pending.is_empty() {
            let Some(conn) = self.conn.as_ref() else {
                return Err(link_down());
            };
            match send_some(conn, frame) {
                Ok(n) if n == frame.len() => return Ok(()),
                Ok(n) => self.pending.extend_from_slice(&frame[n..]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.pending.extend_from_slice(frame)
                }
                Err(_) => {
                    self.disconnect();
                    return Err(link_down());
                }
            }
            return Ok(());
        }
        if self.pending.len() - self.pending_off + frame.len() > MAX_PENDING {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.pending.extend_from_slice(frame);
        Ok(())
    }
}

impl Drop for QemuPort {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether someone listens on the unix socket at `path`, asked without waiting: a
/// listener whose backlog is full (EAGAIN) listens too; only ECONNREFUSED says the
/// file is a stale one.
fn listened_on(path: &Path) -> bool {
    let Ok(sock) = socket2::Socket::new(
        socket2::Domain::UNIX,
        socket2::Type::STREAM.nonblocking(),
        None,
    ) else {
        return true;
    };
    match socket2::SockAddr::unix(path).map(|a| sock.connect(&a)) {
        Ok(Ok(())) => true,
        Ok(Err(e)) => e.raw_os_error() != Some(libc::ECONNREFUSED),
        Err(_) => true,
    }
}

/// Whether the peer of `conn` closed it (or it broke), asked without waiting and
/// without reading what it sent before.
fn hung_up(conn: &UnixStream) -> bool {
    let mut fds = libc::pollfd {
        fd: conn.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut fds, 1, 0) };
    n > 0 && fds.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// EIO: the port's link is down (no VM), as a TAP says when its link is down.
fn link_down() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

/// One send(2) without SIGPIPE: how much the socket took.
fn send_some(conn: &UnixStream, data: &[u8]) -> io::Result<usize> {
    // SAFETY: sends at most data.len() bytes from data.
    let n = unsafe {
        libc::send(
            conn.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl Port for QemuPort {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.accept();
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Err(io::ErrorKind::WouldBlock.into());
            };
            // Exactly the prefix, then exactly the frame: what is not ours yet stays
            // in the socket, which keeps the poll loop's wake-ups honest.
            let target = if self.head_len < PREFIX {
                &mut self.head[self.head_len..]
            } else {
                &mut self.body[self.body_len..self.want]
            };
            match conn.read(target) {
                Ok(0) => {
                    self.disconnect();
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n) if self.head_len < PREFIX => {
                    self.head_len += n;
                    if self.head_len == PREFIX {
                        let len = u32::from_be_bytes(self.head) as usize;
                        if !(ETH_HDR_LEN..=MAX_FRAME).contains(&len)
                            || VNET_HDR_LEN + len > buf.len()
                        {
                            self.stats.bad_length += 1;
                            // Counted as a bad length, not also as cut short.
                            self.head_len = 0;
                            self.disconnect();
                            return Err(io::ErrorKind::WouldBlock.into());
                        }
                        self.want = len;
                    }
                }
                Ok(n) => {
                    self.body_len += n;
                    if self.body_len == self.want {
                        let len = self.want;
                        buf[..VNET_HDR_LEN].fill(0);
                        buf[VNET_HDR_LEN..VNET_HDR_LEN + len].copy_from_slice(&self.body[..len]);
                        self.head_len = 0;
                        self.body_len = 0;
                        self.want = 0;
                        return Ok(VNET_HDR_LEN + len);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                Err(_) => {
                    self.disconnect();
                    return Err(io::ErrorKind::WouldBlock.into());
                }
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        if self.conn.is_none() {
            return Err(link_down());
        }
        if !self.flush()? && self.pending.len() - self.pending_off > MAX_PENDING {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let (Some(vnet), Some(eth)) = (VnetHdr::parse(frame), frame.get(VNET_HDR_LEN..)) else {
            self.stats.bad_offload += 1;
            return Ok(());
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = if vnet.is_gso() {
            let mut wrote = Ok(());
            let cut = offload::segment(&vnet, eth, &mut scratch, PREFIX, |seg| {
                let len = (seg.len() - PREFIX) as u32;
                seg[..PREFIX].copy_from_slice(&len.to_be_bytes());
                if wrote.is_ok() {
                    wrote = self.write_frame(seg);
                }
            });
            match cut {
                Ok(_) => wrote,
                Err(_) => {
                    self.stats.bad_offload += 1;
                    Ok(())
                }
            }
        } else if PREFIX + eth.len() <= scratch.len() {
            let out = &mut scratch[..PREFIX + eth.len()];
            out[PREFIX..].copy_from_slice(eth);
            if offload::finish(&vnet, &mut out[PREFIX..]).is_err() {
                self.stats.bad_offload += 1;
                Ok(())
            } else {
                out[..PREFIX].copy_from_slice(&(eth.len() as u32).to_be_bytes());
                self.write_frame(out)
            }
        } else {
            self.stats.bad_offload += 1;
            Ok(())
        };
        self.scratch = scratch;
        result
    }

    fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    fn accepts_gso(&self) -> bool {
        // Cut here, in software: the stream carries plain frames only.
        true
    }

    fn carrier(&self) -> bool {
        self.conn.is_some()
    }

    fn kind(&self) -> &'static str {
        "qemu"
    }

    fn io_drops(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("bad_stream_length", self.stats.bad_length),
            ("truncated_stream", self.stats.truncated),
            ("bad_offload", self.stats.bad_offload),
        ]
    }

    fn io_stats(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("vm_connects", self.stats.connects),
            ("vm_refused", self.stats.refused),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn socket_path() -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::env::temp_dir().join(format!("tapnet-qemu-{}-{n}.sock", std::process::id()))
    }

    fn frame(len: usize, fill: u8) -> Vec<u8> {
        let mut f = vec![fill; len];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x88, 0xb5]);
        f
    }

    fn recv_one(port: &mut QemuPort) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 70_000];
        for _ in 0..100 {
            match port.recv(&mut buf) {
                Ok(n) => return Ok(buf[..n].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::ErrorKind::WouldBlock.into())
    }

    #[test]
    fn frames_cross_both_ways_in_qemus_framing() {
        let path = socket_path();
        let mut port = QemuPort::listen(&path).unwrap();
        assert!(!port.carrier());
        // No VM: a frame for it finds the link down.
        let f = frame(60, 7);
        let mut with_hdr = vec![0u8; VNET_HDR_LEN];
        with_hdr.extend_from_slice(&f);
        assert_eq!(
            port.send(&with_hdr).unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );

        let mut vm = UnixStream::connect(&path).unwrap();
        // The VM's frame arrives in pieces: the port waits for all of it.
        let mut wire = (f.len() as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(&f);
        vm.write_all(&wire[..3]).unwrap();
        assert!(recv_one(&mut port).is_err());
        assert!(port.carrier());
        vm.write_all(&wire[3..20]).unwrap();
        vm.write_all(&wire[20..]).unwrap();
        let got = recv_one(&mut port).unwrap();
        assert_eq!(&got[..VNET_HDR_LEN], &[0; VNET_HDR_LEN]);
        assert_eq!(&got[VNET_HDR_LEN..], &f[..]);

        // And to the VM: the prefix, then the frame.
        port.send(&with_hdr).unwrap();
        let mut back = vec![0u8; PREFIX + f.len()];
        vm.read_exact(&mut back).unwrap();
        assert_eq!(&back[..PREFIX], &(f.len() as u32).to_be_bytes());
        assert_eq!(&back[PREFIX..], &f[..]);

        // A second VM is refused while the first is there.
        let mut second = UnixStream::connect(&path).unwrap();
        assert!(recv_one(&mut port).is_err());
        let mut b = [0u8; 1];
        assert_eq!(second.read(&mut b).unwrap(), 0, "closed at once");
        assert_eq!(port.stats().refused, 1);

        // The first goes: link down; a new one comes: up again.
        drop(vm);
        assert!(recv_one(&mut port).is_err());
        assert!(!port.carrier());
        let _again = UnixStream::connect(&path).unwrap();
        let _ = recv_one(&mut port);
        assert!(port.carrier());
        assert_eq!(port.stats().connects, 2);
        drop(port);
        assert!(!path.exists(), "the socket file goes with the port");
    }

    #[test]
    fn a_vm_reconnecting_before_its_old_end_is_read_takes_the_port() {
        let path = socket_path();
        let mut port = QemuPort::listen(&path).unwrap();
        let mut old = UnixStream::connect(&path).unwrap();
        assert!(recv_one(&mut port).is_err());
        assert!(port.carrier());
        // The old VM sent a frame and went; the new one connects before the port
        // reads either.
        let f = frame(60, 9);
        let mut wire = (f.len() as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(&f);
        old.write_all(&wire).unwrap();
        drop(old);
        let mut new = UnixStream::connect(&path).unwrap();
        assert!(
            recv_one(&mut port).is_err(),
            "the dead VM's frame is not taken"
        );
        assert!(port.carrier());
        assert_eq!(port.stats().refused, 0);
        assert_eq!(port.stats().connects, 2);
        new.write_all(&wire).unwrap();
        assert_eq!(&recv_one(&mut port).unwrap()[VNET_HDR_LEN..], &f[..]);
    }

    #[test]
    fn a_frame_cut_short_by_the_vm_leaving_is_counted() {
        let path = socket_path();
        let mut port = QemuPort::listen(&path).unwrap();
        let mut vm = UnixStream::connect(&path).unwrap();
        vm.write_all(&100u32.to_be_bytes()).unwrap();
        vm.write_all(&[0u8; 40]).unwrap();
        assert!(recv_one(&mut port).is_err());
        drop(vm);
        assert!(recv_one(&mut port).is_err());
        assert!(!port.carrier());
        assert_eq!(port.stats().truncated, 1);
        assert_eq!(port.stats().bad_length, 0);
    }

    #[test]
    fn a_bad_length_ends_the_connection_not_the_port() {
        let path = socket_path();
        let mut port = QemuPort::listen(&path).unwrap();
        for bad in [0u32, 13, 1 << 20] {
            let mut vm = UnixStream::connect(&path).unwrap();
            vm.write_all(&bad.to_be_bytes()).unwrap();
            assert!(recv_one(&mut port).is_err());
            let mut b = [0u8; 1];
            assert_eq!(vm.read(&mut b).unwrap_or(0), 0);
            assert!(!port.carrier());
        }
        assert_eq!(port.stats().bad_length, 3);
    }

    #[test]
    fn a_live_socket_is_not_taken_over_and_a_stale_one_is() {
        let path = socket_path();
        let first = QemuPort::listen(&path).unwrap();
        let err = QemuPort::listen(&path).err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(first);
        // Left behind by a killed run: the file is there, nobody listens.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let again = QemuPort::listen(&path).expect("a stale socket is replaced");
        drop(again);
        // A listener that never accepts, its backlog full: live, and asked without
        // waiting.
        let busy = socket_path();
        let listener = UnixListener::bind(&busy).unwrap();
        let _held: Vec<_> = (0..8)
            .filter_map(|_| UnixStream::connect(&busy).ok())
            .collect();
        let err = QemuPort::listen(&busy).err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(listener);
        let _ = std::fs::remove_file(&busy);
        let file = socket_path();
        std::fs::write(&file, b"x").unwrap();
        let err = QemuPort::listen(&file).err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let _ = std::fs::remove_file(&file);
    }
}
