//! A datapath thread's TAP reads and writes, gathered into one `io_uring_enter(2)`.
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
//! Reads go the same way: when a TAP is readable, the thread queues up to [`READS`]
//! `IORING_OP_READ`s on it, each into a buffer of its own, and submits them with the
//! writes that wait: one system call brings in a burst of frames, where `read(2)` costs
//! one per frame. Each read carries `RWF_NOWAIT`, so a read of an empty queue ends at
//! once with EAGAIN (the TAP is drained) instead of waiting for a frame. Without it,
//! io_uring would park the read on the queue's wait list even on an `O_NONBLOCK`
//! descriptor whose file supports non-blocking IO, as a TAP's has since Linux 6.x;
//! where a kernel refuses the flag (EOPNOTSUPP: its TAP never waits), the batch stops
//! asking for it and `O_NONBLOCK` does the same job.
//!
//! Every read and write completes inside [`IoBatch::flush`], which waits for each
//! completion before it returns (one that would wait all the same is cancelled at
//! once): no buffer is lent to the kernel past the call. Frames larger than a slot
//! (TSO super-frames) are written directly, after the batch is flushed, so each port's
//! frames leave in the order they were forwarded.
//!
//! Where io_uring is not available (Linux before 5.6, `kernel.io_uring_disabled`, a
//! seccomp profile that refuses `io_uring_setup`, as Docker's default does),
//! [`IoBatch::new`] fails and the thread reads and writes each frame itself, as before.

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};

use crate::port::PortId;

/// Frames one batch holds: one submission queue entry each.
pub const SLOTS: usize = 64;
/// Reads one flush carries (the most a thread asks of one TAP at a time).
pub const READS: usize = 32;
/// Submission queue entries: every slot and every read fit at once.
const ENTRIES: u32 = (SLOTS + READS).next_power_of_two() as u32;
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

/// One read waiting in a batch: the buffer's address, kept as a number so that the
/// batch stays `Send` (it moves to its thread before the first flush).
#[derive(Debug, Clone, Copy)]
struct PendingRead {
    fd: RawFd,
    addr: usize,
    len: usize,
}

/// [`SLOTS`] frame slots, room for [`READS`] reads, and a ring to submit them through.
pub struct IoBatch {
    ring: IoUring,
    slots: Box<[u8]>,
    pending: Vec<Pending>,
    reads: Vec<PendingRead>,
    /// `RWF_NOWAIT` for reads, until the kernel refuses it.
    read_flags: i32,
    /// A flush failed with writes possibly still in the kernel: the slots are never
    /// freed (see `Drop`).
    poisoned: bool,
}

impl Drop for IoBatch {
    fn drop(&mut self) {
        if self.poisoned {
            // The ring's teardown in the kernel is asynchronous: a write still in
            // flight could read the slots after they were freed. 128 KiB, once.
            std::mem::forget(std::mem::take(&mut self.slots));
        }
    }
}

impl IoBatch {
    /// A ring of [`SLOTS`] + [`READS`] entries for the calling thread alone (it must be
    /// the one that submits), and the slots (128 KiB).
    ///
    /// # Errors
    /// Whatever `io_uring_setup(2)` returns: ENOSYS before Linux 5.6, EPERM where
    /// `kernel.io_uring_disabled` or seccomp forbids it, ENOMEM.
    pub fn new() -> io::Result<IoBatch> {
        // SINGLE_ISSUER and COOP_TASKRUN (Linux 6.0) spare the kernel the locking and
        // the interrupts meant for rings shared between threads; older kernels refuse
        // them with EINVAL, and get a plain ring.
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_submit_all()
            .build(ENTRIES)
            .or_else(|_| IoUring::new(ENTRIES))?;
        Ok(IoBatch {
            ring,
            slots: vec![0u8; SLOTS * SLOT_SIZE].into_boxed_slice(),
            pending: Vec::with_capacity(SLOTS),
            reads: Vec::with_capacity(READS),
            read_flags: libc::RWF_NOWAIT,
            poisoned: false,
        })
    }

    /// Whether `frame` fits a slot (else it must be written directly).
    pub fn fits(frame: &[u8]) -> bool {
        frame.len() <= SLOT_SIZE
    }

    /// Whether every slot is taken: [`IoBatch::flush`] before the next push.
    pub fn is_full(&self) -> bool {
        self.pending.len() == SLOTS
    }

    /// Whether no frame waits to be written.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Queues a read of one frame from descriptor `fd` into `buf` (at most `len`
    /// bytes), done at the next flush. False, and nothing queued, when [`READS`] reads
    /// wait already.
    ///
    /// # Safety
    /// `buf` must be valid for writes of `len` bytes, and nothing may read or write it
    /// until the next [`IoBatch::flush_with_reads`] has returned; if that flush reports
    /// the read as lost (ECANCELED), never again. `fd` must stay open until then.
    pub unsafe fn push_read(&mut self, fd: RawFd, buf: *mut u8, len: usize) -> bool {
        if self.reads.len() == READS {
            return false;
        }
        let i = self.reads.len();
        let entry = opcode::Read::new(types::Fd(fd), buf, len.min(u32::MAX as usize) as u32)
            .offset(u64::MAX)
            .rw_flags(self.read_flags)
            .build()
            .user_data(READ | i as u64);
        // SAFETY: the caller lends `buf` until the flush, as this function requires.
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            return false;
        }
        self.reads.push(PendingRead {
            fd,
            addr: buf as usize,
            len,
        });
        true
    }

    /// Copies `frame` (at most [`SLOT_SIZE`] bytes) into the next slot, to be written to
    /// descriptor `fd` of port `egress` at the next flush. False, and nothing queued,
    /// when the batch is full or the frame too long.
    pub fn push(&mut self, fd: RawFd, egress: PortId, frame: &[u8]) -> bool {
        if self.is_full() || !IoBatch::fits(frame) {
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
    pub fn flush(&mut self, done: impl FnMut(Written, &[u8])) -> io::Result<()> {
        self.flush_with_reads(done, |_, _| {})
    }

    /// [`IoBatch::flush`], with the reads queued by [`IoBatch::push_read`] submitted
    /// after the writes in the same call. `read` hears of each read, in the order they
    /// were queued: `Ok(bytes)`, or `Err(errno)` as `read(2)` on the non-blocking
    /// descriptor would say it (EAGAIN: nothing waited). Two errors are the batch's
    /// own: EINTR, read again (the kernel refused `RWF_NOWAIT`; later reads go
    /// without it), and ECANCELED, the ring failed with this read possibly still in
    /// the kernel: its buffer must never be used again.
    pub fn flush_with_reads(
        &mut self,
        mut done: impl FnMut(Written, &[u8]),
        mut read: impl FnMut(usize, Result<usize, i32>),
    ) -> io::Result<()> {
        let n = self.pending.len();
        let r = self.reads.len();
        if n + r == 0 {
            return Ok(());
        }
        let mut results = [None::<i32>; SLOTS];
        let mut read_results = [None::<i32>; READS];
        let mut failed = self.enter(0).err();
        let refused = failed.is_some();
        // Failing later, some writes or reads may still be in the kernel.
        let mut poisoned = false;
        let mut seen = self.reap(&mut results, &mut read_results);
        if seen < n + r && failed.is_none() {
            // Parked, waiting for room or for a frame: take them back.
            let writes = results.iter().take(n).map(|r| r.is_none());
            let reads = read_results.iter().take(r).map(|r| r.is_none());
            let parked = writes
                .enumerate()
                .map(|(i, p)| (i as u64, p))
                .chain(reads.enumerate().map(|(i, p)| (READ | i as u64, p)));
            for (data, _) in parked.filter(|(_, p)| *p) {
                let cancel = opcode::AsyncCancel::new(data)
                    .build()
                    .user_data(CANCEL | data);
                // SAFETY: a cancel refers to no memory of ours.
                let _ = unsafe { self.ring.submission().push(&cancel) };
            }
            while seen < n + r {
                if let Err(e) = self.enter(n + r - seen) {
                    failed = Some(e);
                    poisoned = true;
                    break;
                }
                seen += self.reap(&mut results, &mut read_results);
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
        // This kernel's TAP refuses RWF_NOWAIT, and then never waits: O_NONBLOCK
        // alone is enough.
        let nowait_refused =
            self.read_flags != 0 && read_results[..r].contains(&Some(-libc::EOPNOTSUPP));
        if nowait_refused {
            self.read_flags = 0;
        }
        for (i, p) in self.reads.drain(..).enumerate() {
            let result = match read_results[i] {
                Some(n) if n >= 0 => Ok(n as usize),
                Some(e) if -e == libc::ECANCELED => Err(libc::EAGAIN),
                Some(e) if -e == libc::EOPNOTSUPP && nowait_refused => Err(libc::EINTR),
                Some(e) => Err(-e),
                None if refused => {
                    // As for a write above: the kernel never saw this read.
                    // SAFETY: push_read's caller lent p.len bytes at p.addr until now.
                    let n = unsafe { libc::read(p.fd, p.addr as *mut libc::c_void, p.len) };
                    if n < 0 {
                        Err(io::Error::last_os_error()
                            .raw_os_error()
                            .unwrap_or(libc::EIO))
                    } else {
                        Ok(n as usize)
                    }
                }
                None => Err(libc::ECANCELED),
            };
            read(i, result);
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

    /// Takes the completions there are: each write's result into `results`, by slot,
    /// and each read's into `reads`, in queued order. Returns how many writes and
    /// reads completed (cancels' own completions are not counted).
    fn reap(
        &mut self,
        results: &mut [Option<i32>; SLOTS],
        reads: &mut [Option<i32>; READS],
    ) -> usize {
        let mut seen = 0;
        for cqe in self.ring.completion() {
            let data = cqe.user_data();
            if data & CANCEL != 0 {
                continue;
            }
            let r = if data & READ != 0 {
                reads.get_mut((data & !READ) as usize)
            } else {
                results.get_mut(data as usize)
            };
            if let Some(r) = r {
                if r.is_none() {
                    seen += 1;
                }
                *r = Some(cqe.result());
            }
        }
        seen
    }
}

/// Marks a cancel's own completion (a write's `user_data` is its slot).
const CANCEL: u64 = 1 << 32;
/// Marks a read (its `user_data` is this and its place in the queue).
const READ: u64 = 1 << 33;
