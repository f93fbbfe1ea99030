//! A worker's TAP writes, gathered into one `io_uring_enter(2)` per batch.
//!
//! Each `write(2)` to a container's TAP runs the container's receive path inside the
//! call and wakes the process waiting on that socket. On a kernel built without forced
//! preemption (`PREEMPT_NONE`, Debian's and most distributions' default, or
//! `preempt=none`), the woken process takes the CPU when the call returns to user
//! space, so with one write per frame a receiver sharing tapnet's CPU preempts it on
//! every frame (35% of a worker's samples in `perf record` on a 64-byte UDP flood,
//! README "Performance"). Here a worker copies each small frame it forwards into a
//! slot and submits the slots as one batch of `IORING_OP_WRITE`s: the kernel runs
//! them one after the other inside one system call, and the receiver wakes once per
//! batch to find all of it queued.
//!
//! A TAP descriptor is `O_NONBLOCK`, so every write completes inside the submitting
//! call (a full queue is `-EAGAIN`, as for `write(2)`); no buffer is lent to the kernel
//! past [`WriteBatch::flush`], which waits for every completion before it returns.
//! Frames larger than a slot (TSO super-frames) are written directly, after the batch
//! is flushed, so each port's frames leave in the order they were forwarded.
//!
//! Where io_uring is not available (Linux before 5.6, `kernel.io_uring_disabled`, a
//! seccomp profile that refuses `io_uring_setup`, as Docker's default does),
//! [`WriteBatch::new`] fails and the worker writes each frame itself, as before.

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};

use crate::port::PortId;

/// Frames one batch holds: one submission queue entry each.
pub const SLOTS: usize = 64;
/// Bytes a slot holds: a virtio-net header and a frame of up to 1,500 bytes of payload
/// with a VLAN-tagged Ethernet header fit; larger frames are written directly.
pub const SLOT_SIZE: usize = 2048;

/// One frame waiting in a batch: where it goes and how long it is.
#[derive(Debug, Clone, Copy)]
struct Pending {
    fd: RawFd,
    egress: PortId,
    len: usize,
}

/// What became of one frame of a flushed batch: the bytes written, or the `errno`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub egress: PortId,
    /// The frame's length, virtio-net header included.
    pub len: usize,
    /// `Ok(())`, or the error `write(2)` would have returned.
    pub result: Result<(), i32>,
}

/// [`SLOTS`] frame slots and a ring to write them through.
pub struct WriteBatch {
    ring: IoUring,
    slots: Box<[u8]>,
    pending: Vec<Pending>,
    /// A flush failed with writes possibly still in the kernel: the slots are never
    /// freed (see `Drop`).
    poisoned: bool,
}

impl Drop for WriteBatch {
    fn drop(&mut self) {
        if self.poisoned {
            // The ring's teardown in the kernel is asynchronous: a write still in
            // flight could read the slots after they were freed. 128 KiB, once.
            std::mem::forget(std::mem::take(&mut self.slots));
        }
    }
}

impl WriteBatch {
    /// A ring of [`SLOTS`] entries for the calling thread alone (it must be the one
    /// that submits), and the slots (128 KiB).
    ///
    /// # Errors
    /// Whatever `io_uring_setup(2)` returns: ENOSYS before Linux 5.6, EPERM where
    /// `kernel.io_uring_disabled` or seccomp forbids it, ENOMEM.
    pub fn new() -> io::Result<WriteBatch> {
        // SINGLE_ISSUER and COOP_TASKRUN (Linux 6.0) spare the kernel the locking and
        // the interrupts meant for rings shared between threads; older kernels refuse
        // them with EINVAL, and get a plain ring.
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_submit_all()
            .build(SLOTS as u32)
            .or_else(|_| IoUring::new(SLOTS as u32))?;
        Ok(WriteBatch {
            ring,
            slots: vec![0u8; SLOTS * SLOT_SIZE].into_boxed_slice(),
            pending: Vec::with_capacity(SLOTS),
            poisoned: false,
        })
    }

    /// Whether `frame` fits a slot (else it must be written directly).
    pub fn fits(frame: &[u8]) -> bool {
        frame.len() <= SLOT_SIZE
    }

    /// Whether every slot is taken: [`WriteBatch::flush`] before the next push.
    pub fn is_full(&self) -> bool {
        self.pending.len() == SLOTS
    }

    /// Whether no frame waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Copies `frame` (at most [`SLOT_SIZE`] bytes) into the next slot, to be written to
    /// descriptor `fd` of port `egress` at the next flush. False, and nothing queued,
    /// when the batch is full or the frame too long.
    pub fn push(&mut self, fd: RawFd, egress: PortId, frame: &[u8]) -> bool {
        if self.is_full() || !WriteBatch::fits(frame) {
            return false;
        }
        let i = self.pending.len();
        let slot = &mut self.slots[i * SLOT_SIZE..i * SLOT_SIZE + frame.len()];
        slot.copy_from_slice(frame);
        let entry = opcode::Write::new(types::Fd(fd), slot.as_ptr(), frame.len() as u32)
            .offset(u64::MAX) // the file's position: a TAP has none
            .build()
            .user_data(i as u64);
        // SAFETY: the kernel only reads the slot, and it stays untouched until flush()
        // has seen this entry complete (push never reuses a slot of a batch that is
        // not flushed); `fd` is a queue the caller holds open until then.
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            return false;
        }
        self.pending.push(Pending {
            fd,
            egress,
            len: frame.len(),
        });
        true
    }

    /// Writes every waiting frame in one system call and tells `done` what became of
    /// each, with its bytes, in order of their slots. A write that would block (its
    /// descriptor's queue full, where the descriptor can wait for room, as a socket
    /// can) is cancelled at once and reported as EAGAIN, as `write(2)` on the
    /// non-blocking descriptor would say: a flush never waits for a slow reader.
    /// Returns Err only when the ring itself failed, and the caller should stop using
    /// it. Where it refused the batch outright (nothing was submitted: a seccomp
    /// profile that allows `io_uring_setup` but not `io_uring_enter`), each frame is
    /// written with `write(2)` instead; frames of a batch that failed midway are
    /// reported as ECANCELED.
    pub fn flush(&mut self, mut done: impl FnMut(Written, &[u8])) -> io::Result<()> {
        let n = self.pending.len();
        if n == 0 {
            return Ok(());
        }
        let mut results = [None::<i32>; SLOTS];
        let mut failed = self.enter(0).err();
        let refused = failed.is_some();
        // Failing later, some writes may still be in the kernel.
        let mut poisoned = false;
        let mut seen = self.reap(&mut results);
        if seen < n && failed.is_none() {
            // Parked waiting for room: take them back.
            for (i, r) in results.iter().enumerate().take(n) {
                if r.is_none() {
                    let cancel = opcode::AsyncCancel::new(i as u64)
                        .build()
                        .user_data(CANCEL | i as u64);
                    // SAFETY: a cancel refers to no memory of ours.
                    let _ = unsafe { self.ring.submission().push(&cancel) };
                }
            }
            while seen < n {
                if let Err(e) = self.enter(n - seen) {
                    failed = Some(e);
                    poisoned = true;
                    break;
                }
                seen += self.reap(&mut results);
            }
        }
        for (i, p) in self.pending.drain(..).enumerate() {
            let result = match results[i] {
                Some(r) if r >= 0 => Ok(()),
                Some(r) if -r == libc::ECANCELED => Err(libc::EAGAIN),
                Some(r) => Err(-r),
                None => Err(libc::ECANCELED),
            };
            let frame = &self.slots[i * SLOT_SIZE..i * SLOT_SIZE + p.len];
            let result = if refused && results[i].is_none() {
                // io_uring_enter failed before it took any entry: the kernel has no
                // pointer to this slot, so writing it here cannot duplicate it.
                // SAFETY: writes frame.len() bytes from frame.
                let n = unsafe { libc::write(p.fd, frame.as_ptr().cast(), frame.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::EIO))
                } else {
                    Ok(())
                }
            } else {
                result
            };
            done(
                Written {
                    egress: p.egress,
                    len: p.len,
                    result,
                },
                frame,
            );
        }
        self.poisoned |= poisoned;
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Submits what is queued and waits for `want` completions, again after a signal
    /// or a transient shortage (EINTR, EAGAIN, EBUSY).
    fn enter(&mut self, want: usize) -> io::Result<()> {
        for _ in 0..100 {
            match self.ring.submit_and_wait(want) {
                Ok(_) => return Ok(()),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::from_raw_os_error(libc::EBUSY))
    }

    /// Takes the completions there are: each write's result into `results`, by slot.
    /// Returns how many writes completed (cancels' own completions are not counted).
    fn reap(&mut self, results: &mut [Option<i32>; SLOTS]) -> usize {
        let mut writes = 0;
        for cqe in self.ring.completion() {
            if cqe.user_data() & CANCEL != 0 {
                continue;
            }
            if let Some(r) = results.get_mut(cqe.user_data() as usize) {
                if r.is_none() {
                    writes += 1;
                }
                *r = Some(cqe.result());
            }
        }
        writes
    }
}

/// Marks a cancel's own completion (a write's `user_data` is its slot).
const CANCEL: u64 = 1 << 32;

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use super::*;

    /// Both ends of a non-blocking SOCK_SEQPACKET pair: one write is one message there,
    /// as one write to a TAP is one frame.
    fn seqpacket() -> (OwnedFd, OwnedFd) {
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
        // SAFETY: both were just created and are owned here.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn read_all(fd: &OwnedFd) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reads at most buf.len() bytes into buf.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                return out;
            }
            out.push(buf[..n as usize].to_vec());
        }
    }

    /// A ring, or None where this kernel or sandbox refuses io_uring (said on stderr).
    fn batch() -> Option<WriteBatch> {
        match WriteBatch::new() {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("io_uring refused here ({e}): the batch is not tested");
                None
            }
        }
    }

    #[test]
    fn a_batch_is_written_in_order_to_each_descriptor_and_reported_per_frame() {
        let Some(mut b) = batch() else { return };
        let (x, x_peer) = seqpacket();
        let (y, y_peer) = seqpacket();
        let frames: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 20 + i as usize]).collect();
        for (i, f) in frames.iter().enumerate() {
            let (fd, port) = if i % 3 == 0 { (&x, 1) } else { (&y, 2) };
            assert!(b.push(fd.as_raw_fd(), PortId(port), f));
        }
        assert!(
            read_all(&x_peer).is_empty(),
            "nothing leaves before the flush"
        );
        let mut seen = Vec::new();
        b.flush(|w, frame| seen.push((w, frame.to_vec()))).unwrap();
        assert!(b.is_empty());
        assert_eq!(seen.len(), 10);
        for (i, (w, frame)) in seen.iter().enumerate() {
            assert_eq!(w.result, Ok(()));
            assert_eq!(w.len, frames[i].len());
            assert_eq!(frame, &frames[i]);
            assert_eq!(w.egress, PortId(if i % 3 == 0 { 1 } else { 2 }));
        }
        let to_x: Vec<Vec<u8>> = frames.iter().step_by(3).cloned().collect();
        let to_y: Vec<Vec<u8>> = (0..10)
            .filter(|i| i % 3 != 0)
            .map(|i| frames[i].clone())
            .collect();
        assert_eq!(read_all(&x_peer), to_x);
        assert_eq!(read_all(&y_peer), to_y);
        // An empty flush is no system call and reports nothing.
        b.flush(|_, _| panic!("nothing waits")).unwrap();
    }

    #[test]
    fn a_full_batch_and_a_frame_longer_than_a_slot_are_refused() {
        let Some(mut b) = batch() else { return };
        let (x, x_peer) = seqpacket();
        assert!(!b.push(x.as_raw_fd(), PortId(0), &[0u8; SLOT_SIZE + 1]));
        assert!(b.is_empty());
        for i in 0..SLOTS {
            assert!(b.push(x.as_raw_fd(), PortId(0), &[i as u8; 60]));
        }
        assert!(b.is_full());
        assert!(!b.push(x.as_raw_fd(), PortId(0), &[0u8; 60]));
        let mut n = 0;
        b.flush(|w, _| {
            assert_eq!(w.result, Ok(()));
            n += 1;
        })
        .unwrap();
        assert_eq!(n, SLOTS);
        assert_eq!(read_all(&x_peer).len(), SLOTS);
    }

    #[test]
    fn a_full_queue_is_eagain_per_frame_as_for_write() {
        let Some(mut b) = batch() else { return };
        let (x, _x_peer) = seqpacket();
        // Fill the socket as a container that stopped reading fills its TAP.
        let filler = [0u8; 1024];
        // SAFETY: writes filler.len() bytes from filler.
        while unsafe { libc::send(x.as_raw_fd(), filler.as_ptr().cast(), filler.len(), 0) } > 0 {}
        for _ in 0..3 {
            assert!(b.push(x.as_raw_fd(), PortId(7), &[1u8; 100]));
        }
        let mut results = Vec::new();
        b.flush(|w, _| results.push(w.result)).unwrap();
        assert_eq!(results, vec![Err(libc::EAGAIN); 3]);
    }

    #[test]
    fn a_closed_descriptor_fails_its_frame_only() {
        let Some(mut b) = batch() else { return };
        let (x, x_peer) = seqpacket();
        let (gone, gone_peer) = seqpacket();
        let gone_fd = gone.as_raw_fd();
        drop(gone_peer);
        assert!(b.push(x.as_raw_fd(), PortId(0), b"first"));
        assert!(b.push(gone_fd, PortId(1), b"lost"));
        assert!(b.push(x.as_raw_fd(), PortId(0), b"second"));
        let mut results = Vec::new();
        b.flush(|w, _| results.push((w.egress, w.result))).unwrap();
        assert_eq!(results[0], (PortId(0), Ok(())));
        assert_eq!(results[1], (PortId(1), Err(libc::EPIPE)));
        assert_eq!(results[2], (PortId(0), Ok(())));
        assert_eq!(
            read_all(&x_peer),
            vec![b"first".to_vec(), b"second".to_vec()]
        );
        drop(gone);
    }
}
