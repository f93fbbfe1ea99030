//! uring-trial: a wire between two TAP devices, for bench/uring-trial.sh. Every frame
//! read from one TAP is written to the other with its 10-byte virtio-net header as it
//! came (TSO super-frames of ~64 KB pass whole), by one of three loops:
//!
//! * `rw`: tapnet's loop. Non-blocking descriptors under edge-triggered epoll; per
//!   readable TAP a batch of up to 64 `read()`s (until EAGAIN), then one `write()` each.
//! * `uring`: io_uring with N reads outstanding on each TAP, each into its own
//!   registered buffer (`READ_FIXED` on registered files). A completed read becomes a
//!   `WRITE_FIXED` of the same buffer to the other TAP, and a completed write re-arms the
//!   read. One `io_uring_enter` a turn submits the batch's writes (and re-armed reads)
//!   and waits for them and the next frame. Every read armed on a TAP waits on the
//!   TAP's one wait queue, so each frame wakes all of them; see bench/README.md for
//!   what that costs.
//! * `uring-ms`: io_uring with one multishot read per TAP (`READ_MULTISHOT`, Linux 6.7)
//!   taking buffers from a provided-buffer ring of N per TAP; writes as in `uring`, and
//!   a written buffer goes back to its ring.
//!
//! `--no-fixed` makes both io_uring modes use plain descriptors and buffer addresses
//! (READ/WRITE) instead of registered files and buffers.
//!
//! Usage: uring-trial --mode rw|uring|uring-ms --tap-a NAME --tap-b NAME [--depth N]
//!        [--no-fixed]
//!
//! It creates both TAPs in its own network namespace, prints `ready ...` and forwards
//! until SIGTERM or SIGINT. SIGUSR1 prints its counters (frames, bytes and its own
//! system calls) as a JSON line on stdout; they are printed once more at the end.

mod tap;

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use tap::VNET_HDR_LEN;

/// One buffer: the virtio-net header and a frame of up to 64 KiB plus its Ethernet
/// header, rounded up to whole pages.
const BUF_SIZE: usize = 68 * 1024;
/// The read/write loop's batch, as tapnet's (vswitch/src/datapath.rs BATCH).
const BATCH: usize = 64;

static STOP: AtomicBool = AtomicBool::new(false);
static DUMP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGUSR1 {
        DUMP.store(true, Ordering::Relaxed);
    } else {
        STOP.store(true, Ordering::Relaxed);
    }
}

/// SIGTERM and SIGINT stop the loop, SIGUSR1 prints the counters. Without SA_RESTART,
/// so that a signal ends a waiting `epoll_wait` or `io_uring_enter` with EINTR.
fn install_signals() -> io::Result<()> {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1] {
        // SAFETY: a zeroed sigaction is valid; the handler only stores to atomics.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Rw,
    Uring,
    UringMultishot,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Rw => "rw",
            Mode::Uring => "uring",
            Mode::UringMultishot => "uring-ms",
        }
    }
}

struct Args {
    mode: Mode,
    taps: [String; 2],
    /// Reads outstanding (`uring`) or buffers in the ring (`uring-ms`) per TAP.
    depth: usize,
    /// Registered files and buffers for the io_uring modes (`--no-fixed`: plain
    /// descriptors and addresses).
    fixed: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut mode = None;
    let mut taps = [None, None];
    let mut depth = 64;
    let mut fixed = true;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--mode" => {
                mode = Some(match value()?.as_str() {
                    "rw" => Mode::Rw,
                    "uring" => Mode::Uring,
                    "uring-ms" => Mode::UringMultishot,
                    m => return Err(format!("unknown mode {m:?} (rw, uring, uring-ms)")),
                })
            }
            "--tap-a" => taps[0] = Some(value()?),
            "--tap-b" => taps[1] = Some(value()?),
            "--depth" => {
                depth = value()?
                    .parse()
                    .ok()
                    .filter(|d: &usize| (1..=4096).contains(d) && d.is_power_of_two())
                    .ok_or("--depth must be a power of two from 1 to 4096")?
            }
            "--no-fixed" => fixed = false,
            "-h" | "--help" => {
                return Err("usage: uring-trial --mode rw|uring|uring-ms --tap-a NAME \
                            --tap-b NAME [--depth N] [--no-fixed]"
                    .into())
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    let [Some(a), Some(b)] = taps else {
        return Err("--tap-a and --tap-b are required".into());
    };
    Ok(Args {
        mode: mode.ok_or("--mode is required")?,
        taps: [a, b],
        depth,
        fixed,
    })
}

/// What the loop did, for the driving script: frames and bytes each way (0: read from
/// TAP a and written to b, 1: the other way), and the system calls it made itself.
#[derive(Default)]
struct Counters {
    frames: [u64; 2],
    bytes: [u64; 2],
    /// Frames read whose write failed (EIO while the other side's link is down).
    dropped: u64,
    /// System calls: `read()`, `write()`, `epoll_wait()` (rw) and `io_uring_enter()`.
    read: u64,
    /// Reads that found nothing (EAGAIN): the end of an rw batch.
    eagain: u64,
    write: u64,
    epoll_wait: u64,
    io_uring_enter: u64,
    /// io_uring reads and writes completed (not system calls), and all completions.
    read_ops: u64,
    write_ops: u64,
    cqes: u64,
}

impl Counters {
    fn print(&self, mode: Mode) {
        let syscalls = self.read + self.write + self.epoll_wait + self.io_uring_enter;
        let line = format!(
            "{{\"mode\": \"{}\", \"frames\": {}, \"frames_ab\": {}, \"frames_ba\": {}, \
             \"bytes\": {}, \"dropped\": {}, \"syscalls\": {}, \"read\": {}, \"eagain\": {}, \
             \"write\": {}, \"epoll_wait\": {}, \"io_uring_enter\": {}, \"read_ops\": {}, \
             \"write_ops\": {}, \"cqes\": {}}}",
            mode.name(),
            self.frames[0] + self.frames[1],
            self.frames[0],
            self.frames[1],
            self.bytes[0] + self.bytes[1],
            self.dropped,
            syscalls,
            self.read,
            self.eagain,
            self.write,
            self.epoll_wait,
            self.io_uring_enter,
            self.read_ops,
            self.write_ops,
            self.cqes,
        );
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    fn forwarded(&mut self, from: usize, len: usize) {
        self.frames[from] += 1;
        self.bytes[from] += len.saturating_sub(VNET_HDR_LEN) as u64;
    }
}

/// Whether the loop should stop; prints the counters first if SIGUSR1 asked for them.
fn signalled(c: &Counters, mode: Mode) -> bool {
    if DUMP.swap(false, Ordering::Relaxed) {
        c.print(mode);
    }
    STOP.load(Ordering::Relaxed)
}

/// Page-aligned memory, unmapped on drop.
struct Mapping {
    base: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh private anonymous mapping; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            base: base.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what new() mapped.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// `count` frame buffers of BUF_SIZE bytes.
struct Buffers {
    map: Mapping,
    count: usize,
}

impl Buffers {
    fn new(count: usize) -> io::Result<Buffers> {
        Ok(Buffers {
            map: Mapping::new(count * BUF_SIZE)?,
            count,
        })
    }

    fn ptr(&self, i: usize) -> *mut u8 {
        assert!(i < self.count);
        // SAFETY: in bounds of the mapping.
        unsafe { self.map.base.add(i * BUF_SIZE) }
    }

    fn iovecs(&self) -> Vec<libc::iovec> {
        (0..self.count)
            .map(|i| libc::iovec {
                iov_base: self.ptr(i).cast(),
                iov_len: BUF_SIZE,
            })
            .collect()
    }
}

fn errno(res: i32) -> io::Error {
    io::Error::from_raw_os_error(-res)
}

fn context(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

// ---------------------------------------------------------------- rw: tapnet's loop

fn run_rw(taps: [RawFd; 2], ready: Ready, c: &mut Counters) -> io::Result<()> {
    // SAFETY: plain syscall; the result is checked.
    let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just created and own.
    let ep = unsafe { OwnedFd::from_raw_fd(raw) };
    for (i, fd) in taps.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: i as u64,
        };
        // SAFETY: registers an open descriptor with a valid event.
        if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, *fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let bufs = Buffers::new(BATCH)?;
    ready("epoll, edge-triggered")?;
    let mut lens = [0usize; BATCH];
    // Edge-triggered readiness not yet drained to EAGAIN, as tapnet's `readable`.
    let mut readable = [false; 2];
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
    while !signalled(c, Mode::Rw) {
        let timeout = if readable.iter().any(|r| *r) { 0 } else { -1 };
        // SAFETY: `events` has room for the 8 events asked for.
        let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), 8, timeout) };
        c.epoll_wait += 1;
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(context("epoll_wait", e));
        }
        for ev in &events[..n as usize] {
            readable[ev.u64 as usize] = true;
        }
        for from in 0..2 {
            if !readable[from] {
                continue;
            }
            let mut got = 0;
            while got < BATCH {
                // SAFETY: reads at most BUF_SIZE bytes into buffer `got`.
                let r = unsafe { libc::read(taps[from], bufs.ptr(got).cast(), BUF_SIZE) };
                c.read += 1;
                if r < 0 {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::WouldBlock => {
                            c.eagain += 1;
                            readable[from] = false;
                            break;
                        }
                        io::ErrorKind::Interrupted => continue,
                        _ => return Err(context("read", e)),
                    }
                }
                lens[got] = r as usize;
                got += 1;
            }
            for (i, &len) in lens[..got].iter().enumerate() {
                // SAFETY: writes the `len` bytes read into buffer `i`.
                let w = unsafe { libc::write(taps[1 - from], bufs.ptr(i).cast(), len) };
                c.write += 1;
                if w < 0 {
                    c.dropped += 1;
                } else {
                    c.forwarded(from, len);
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- io_uring

/// user_data of a write; the low 32 bits are the buffer (or for a multishot read, the
/// TAP).
const WRITE: u64 = 1 << 32;

/// A ring with room for `entries` submissions and twice that many completions.
/// SINGLE_ISSUER | DEFER_TASKRUN (Linux 6.1) when the kernel has them: completions are
/// then only run inside our own io_uring_enter, never by interrupting the thread.
/// A ring for `n` buffers (`bufs`), each with at most one operation queued (twice that
/// leaves room for what an interrupted io_uring_enter may have left unsubmitted); with
/// `fixed`, the TAPs and the buffers registered with it.
///
/// # Safety
/// `bufs` must outlive the ring: the kernel keeps the registered buffers' addresses.
unsafe fn ring_over(
    bufs: &Buffers,
    n: usize,
    taps: &[RawFd; 2],
    fixed: bool,
) -> io::Result<(IoUring, &'static str)> {
    let (ring, setup) = new_ring((2 * n).next_power_of_two() as u32)?;
    if fixed {
        ring.submitter()
            .register_files(taps)
            .map_err(|e| context("register files", e))?;
        // SAFETY: the caller keeps the buffers alive as long as the ring.
        unsafe { ring.submitter().register_buffers(&bufs.iovecs()) }
            .map_err(|e| context("register buffers", e))?;
    }
    Ok((ring, setup))
}

fn new_ring(entries: u32) -> io::Result<(IoUring, &'static str)> {
    let tuned = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(entries * 2)
        .build(entries);
    match tuned {
        Ok(ring) => Ok((ring, "single_issuer+defer_taskrun")),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok((
            IoUring::builder()
                .setup_cqsize(entries * 2)
                .build(entries)?,
            "default",
        )),
        Err(e) => Err(context("io_uring_setup", e)),
    }
}

/// Submits what is queued and waits for `want` completions: the one system call of a
/// turn. The caller asks for the writes it submits (a TAP write completes inline, in
/// this very call) plus one more when a read is armed on every TAP, so that the call
/// returns with the next frame rather than at once with the writes' completions alone.
/// (When a TAP has no read armed, because all its buffers are being written, the call
/// must return with the writes, so that their buffers can be read into again.) A signal (EINTR)
/// or a full completion queue (EBUSY) is not an error: the caller looks at its flags
/// and drains the queue.
fn enter(ring: &IoUring, want: usize, c: &mut Counters) -> io::Result<()> {
    c.io_uring_enter += 1;
    match ring.submit_and_wait(want) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => Ok(()),
        Err(e) => Err(context("io_uring_enter", e)),
    }
}

/// Queues `entries`; the ring is sized so that every buffer's one operation fits.
fn push_all(ring: &mut IoUring, entries: &mut Vec<squeue::Entry>) {
    let mut sq = ring.submission();
    for e in entries.drain(..) {
        // SAFETY: every buffer the entry names stays mapped (and registered) for the
        // ring's life, and has no other operation in flight.
        unsafe { sq.push(&e) }.expect("the submission queue has room for every buffer");
    }
}

/// A read's error that only means "read again".
/// The write of buffer `i` (`len` bytes) to the other TAP than the one it was read
/// from (buffers `0..depth` are TAP 0's, the rest TAP 1's), by registered buffer and
/// file when `fixed`; both io_uring loops send this way.
fn write_entry(
    bufs: &Buffers,
    taps: [RawFd; 2],
    depth: usize,
    fixed: bool,
    i: usize,
    len: u32,
) -> squeue::Entry {
    let to = 1 - i / depth;
    if fixed {
        opcode::WriteFixed::new(types::Fixed(to as u32), bufs.ptr(i), len, i as u16).build()
    } else {
        opcode::Write::new(types::Fd(taps[to]), bufs.ptr(i), len).build()
    }
    .user_data(WRITE | i as u64)
}

fn retry(res: i32) -> bool {
    matches!(-res, libc::EAGAIN | libc::EINTR | libc::ECANCELED)
}

fn run_uring(
    taps: [RawFd; 2],
    depth: usize,
    fixed: bool,
    ready: Ready,
    c: &mut Counters,
) -> io::Result<()> {
    // Buffers 0..depth read from TAP a and are written to b; depth..2*depth the other way.
    let n = 2 * depth;
    let bufs = Buffers::new(n)?;
    // SAFETY: the buffers outlive the ring (declared before it, dropped after).
    let (mut ring, setup) = unsafe { ring_over(&bufs, n, &taps, fixed)? };
    let read = |i: usize| {
        let from = i / depth;
        if fixed {
            opcode::ReadFixed::new(
                types::Fixed(from as u32),
                bufs.ptr(i),
                BUF_SIZE as u32,
                i as u16,
            )
            .build()
        } else {
            opcode::Read::new(types::Fd(taps[from]), bufs.ptr(i), BUF_SIZE as u32).build()
        }
        .user_data(i as u64)
    };
    let write = |i: usize, len: u32| write_entry(&bufs, taps, depth, fixed, i, len);
    ready(setup)?;
    let mut lens = vec![0usize; n];
    let mut queued: Vec<squeue::Entry> = (0..n).map(read).collect();
    // Each TAP's buffers with a read queued or in flight, and the writes queued.
    let mut reading = [depth; 2];
    let mut writes = 0;
    while !signalled(c, Mode::Uring) {
        push_all(&mut ring, &mut queued);
        enter(
            &ring,
            writes + usize::from(reading.iter().all(|r| *r > 0)),
            c,
        )?;
        writes = 0;
        for cqe in ring.completion() {
            c.cqes += 1;
            let ud = cqe.user_data();
            let i = (ud & 0xffff_ffff) as usize;
            let res = cqe.result();
            if ud & WRITE != 0 {
                c.write_ops += 1;
                if res < 0 {
                    c.dropped += 1;
                } else {
                    c.forwarded(i / depth, lens[i]);
                }
                queued.push(read(i));
                reading[i / depth] += 1;
            } else if res > 0 {
                c.read_ops += 1;
                lens[i] = res as usize;
                queued.push(write(i, res as u32));
                reading[i / depth] -= 1;
                writes += 1;
            } else if res == 0 || retry(res) {
                queued.push(read(i));
            } else {
                return Err(context("read", errno(res)));
            }
        }
    }
    Ok(())
}

/// A provided-buffer ring (IORING_REGISTER_PBUF_RING) of one TAP's buffers.
struct BufRing {
    map: Mapping,
    mask: u16,
    /// Our tail: entries added, published with [`BufRing::publish`].
    tail: u16,
    /// Buffers in the ring (not being read into or written out).
    free: usize,
}

impl BufRing {
    fn new(entries: usize) -> io::Result<BufRing> {
        let bytes = (entries * std::mem::size_of::<types::BufRingEntry>()).max(4096);
        Ok(BufRing {
            map: Mapping::new(bytes)?,
            mask: (entries - 1) as u16,
            tail: 0,
            free: 0,
        })
    }

    fn base(&self) -> *mut types::BufRingEntry {
        self.map.base.cast()
    }

    fn add(&mut self, addr: *mut u8, bid: u16) {
        // SAFETY: the slot is inside the mapping (masked); the kernel reads only the
        // slots before the published tail, so this one is ours.
        let e = unsafe { &mut *self.base().add((self.tail & self.mask) as usize) };
        e.set_addr(addr as u64);
        e.set_len(BUF_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.free += 1;
    }

    fn publish(&self) {
        // SAFETY: the tail field of the ring's first entry, aligned, which the kernel
        // reads (with acquire) to learn what was added.
        let tail =
            unsafe { AtomicU16::from_ptr(types::BufRingEntry::tail(self.base()).cast_mut()) };
        tail.store(self.tail, Ordering::Release);
    }
}

fn run_uring_multishot(
    taps: [RawFd; 2],
    depth: usize,
    fixed: bool,
    ready: Ready,
    c: &mut Counters,
) -> io::Result<()> {
    let n = 2 * depth;
    let bufs = Buffers::new(n)?;
    let mut rings = [BufRing::new(depth)?, BufRing::new(depth)?];
    // SAFETY: the buffers and the buffer rings outlive the ring (declared before it).
    let (mut ring, setup) = unsafe { ring_over(&bufs, n, &taps, fixed)? };
    for (g, br) in rings.iter_mut().enumerate() {
        // SAFETY: as above.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                br.base() as u64,
                depth as u16,
                g as u16,
                0,
            )
        }
        .map_err(|e| context("register buffer ring", e))?;
        for b in 0..depth {
            br.add(bufs.ptr(g * depth + b), b as u16);
        }
        br.publish();
    }
    let read = |from: usize| {
        if fixed {
            opcode::ReadMulti::new(types::Fixed(from as u32), 0, from as u16).build()
        } else {
            opcode::ReadMulti::new(types::Fd(taps[from]), 0, from as u16).build()
        }
        .user_data(from as u64)
    };
    let write = |i: usize, len: u32| write_entry(&bufs, taps, depth, fixed, i, len);
    ready(setup)?;
    let mut armed = [false; 2];
    let mut writes = 0;
    let mut lens = vec![0usize; n];
    let mut queued: Vec<squeue::Entry> = Vec::with_capacity(n + 2);
    while !signalled(c, Mode::UringMultishot) {
        for from in 0..2 {
            // With no buffer in its ring a read would end at once (ENOBUFS): it is
            // re-armed when a write gives one back.
            if !armed[from] && rings[from].free > 0 {
                queued.push(read(from));
                armed[from] = true;
            }
        }
        push_all(&mut ring, &mut queued);
        enter(&ring, writes + usize::from(armed.iter().all(|a| *a)), c)?;
        writes = 0;
        let mut returned = [false; 2];
        for cqe in ring.completion() {
            c.cqes += 1;
            let ud = cqe.user_data();
            let res = cqe.result();
            if ud & WRITE != 0 {
                let i = (ud & 0xffff_ffff) as usize;
                let from = i / depth;
                c.write_ops += 1;
                if res < 0 {
                    c.dropped += 1;
                } else {
                    c.forwarded(from, lens[i]);
                }
                rings[from].add(bufs.ptr(i), (i % depth) as u16);
                returned[from] = true;
                continue;
            }
            let from = ud as usize;
            if !cqueue::more(cqe.flags()) {
                armed[from] = false;
            }
            if res > 0 {
                let bid = cqueue::buffer_select(cqe.flags()).expect("a read names its buffer");
                let i = from * depth + bid as usize;
                c.read_ops += 1;
                rings[from].free -= 1;
                lens[i] = res as usize;
                queued.push(write(i, res as u32));
                writes += 1;
            } else {
                // Nothing read; a buffer it took (none should be) goes back.
                if let Some(bid) = cqueue::buffer_select(cqe.flags()) {
                    rings[from].free -= 1;
                    rings[from].add(bufs.ptr(from * depth + bid as usize), bid);
                    returned[from] = true;
                }
                if res < 0 && -res != libc::ENOBUFS && !retry(res) {
                    return Err(context("multishot read", errno(res)));
                }
            }
        }
        for (br, r) in rings.iter().zip(returned) {
            if r {
                br.publish();
            }
        }
    }
    Ok(())
}

/// Prints the `ready:` line the driving script waits for, with how the loop was set up.
type Ready<'a> = &'a dyn Fn(&str) -> io::Result<()>;

fn run(args: &Args) -> io::Result<()> {
    let nonblocking = args.mode == Mode::Rw;
    let a = tap::open(&args.taps[0], nonblocking).map_err(|e| context(&args.taps[0], e))?;
    let b = tap::open(&args.taps[1], nonblocking).map_err(|e| context(&args.taps[1], e))?;
    install_signals()?;
    let fds = [a.as_raw_fd(), b.as_raw_fd()];
    let ready = |setup: &str| {
        let (what, n) = match args.mode {
            Mode::Rw => ("batch", BATCH),
            Mode::Uring => ("reads per TAP", args.depth),
            Mode::UringMultishot => ("buffers per TAP", args.depth),
        };
        let fixed = if args.mode != Mode::Rw && !args.fixed {
            ", no registered files or buffers"
        } else {
            ""
        };
        let mut out = io::stdout().lock();
        writeln!(
            out,
            "ready: mode {} taps {} {}, {what} {n}, {setup}{fixed}",
            args.mode.name(),
            args.taps[0],
            args.taps[1],
        )?;
        out.flush()
    };
    let mut c = Counters::default();
    let done = match args.mode {
        Mode::Rw => run_rw(fds, &ready, &mut c),
        Mode::Uring => run_uring(fds, args.depth, args.fixed, &ready, &mut c),
        Mode::UringMultishot => run_uring_multishot(fds, args.depth, args.fixed, &ready, &mut c),
    };
    c.print(args.mode);
    done
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("uring-trial: {e}");
            return ExitCode::from(1);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("uring-trial: {e}");
            ExitCode::from(1)
        }
    }
}
