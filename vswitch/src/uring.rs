//! A datapath thread's TAP writes, gathered into one `io_uring_enter(2)` per batch.
//!
//! Each `write(2)` to a container's TAP runs the container's receive path inside the
//! call and wakes the process waiting on that socket. On a kernel built without forced
//! preemption (`PREEMPT_NONE`, Debian's and most distributions' default, or
//! `preempt=none`), the woken process takes the CPU when the call returns to user
//! space, so with one write per frame a receiver sharing tapnet's CPU preempts it on
//! every frame (35% of tapnet's samples in `perf record` on a 64-byte UDP flood,
//! README "Performance"). Here each datapath thread copies every small frame it
//! forwards into a slot and submits the slots as one batch of `IORING_OP_WRITE`s: the
//! kernel runs them one after the other inside one system call, and the receiver
//! wakes once per batch to find all of it queued.
//!
//! Every write completes inside [`WriteBatch::flush`], which waits for each completion
//! before it returns, so no buffer is lent to the kernel past it (unless the ring
//! itself fails midway: then the slots are never freed). A write to a TAP finds no
//! queue to wait on: it runs the container's receive path, and what the receiver does
//! not take is dropped at its socket (tapnet leaves the TAP's send buffer at its
//! default, which has no limit). Should a write find no room all the same (a send
//! buffer lowered with `TUNSETSNDBUF`, or a socket in the tests), io_uring parks it
//! even on an `O_NONBLOCK` descriptor, because the file supports non-blocking IO (a
//! TAP's does, measured on Linux 6.18); the flush cancels it at once and reports
//! EAGAIN, as `write(2)` would.
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
