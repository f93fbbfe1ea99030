//! `IoBatch` over real descriptors: SOCK_SEQPACKET socket pairs, where one write is
//! one message as one write to a TAP is one frame, and one read one message as one
//! read of a TAP is one frame.

// Shared with the datapath's tests; these use only part of it.
#[allow(dead_code)]
mod seqpacket_port;

use seqpacket_port::{pair, Peer, SeqpacketPort};
use vswitch::uring::{IoBatch, READS, SLOTS, SLOT_SIZE};
use vswitch::{Port, PortId};

/// What the far end received, message by message.
fn read_all(peer: &Peer) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(n) = peer.recv(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

/// A ring, or None where this kernel or sandbox refuses io_uring (said on stderr).
fn batch() -> Option<IoBatch> {
    match IoBatch::new() {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("io_uring refused here ({e}): the batch is not tested");
            None
        }
    }
}

fn fd(port: &SeqpacketPort) -> i32 {
    port.write_fd()
        .expect("a seqpacket port is written with write(2)")
}

#[test]
fn a_batch_is_written_in_order_to_each_descriptor_and_reported_per_frame() {
    let Some(mut b) = batch() else { return };
    let (x, x_peer) = pair(true);
    let (y, y_peer) = pair(true);
    let frames: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 20 + i as usize]).collect();
    for (i, f) in frames.iter().enumerate() {
        let (fd, port) = if i % 3 == 0 { (fd(&x), 1) } else { (fd(&y), 2) };
        assert!(b.push(fd, PortId(port), f));
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
    let (x, x_peer) = pair(true);
    assert!(!b.push(fd(&x), PortId(0), &[0u8; SLOT_SIZE + 1]));
    assert!(b.is_empty());
    for i in 0..SLOTS {
        assert!(b.push(fd(&x), PortId(0), &[i as u8; 60]));
    }
    assert!(b.is_full());
    assert!(!b.push(fd(&x), PortId(0), &[0u8; 60]));
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
    let (mut x, _x_peer) = pair(true);
    // Fill the socket as a container that stopped reading fills its TAP.
    while x.send(&[0u8; 1024]).is_ok() {}
    for _ in 0..3 {
        assert!(b.push(fd(&x), PortId(7), &[1u8; 100]));
    }
    let mut results = Vec::new();
    b.flush(|w, _| results.push(w.result)).unwrap();
    assert_eq!(results, vec![Err(libc::EAGAIN); 3]);
}

#[test]
fn a_closed_far_end_fails_its_frame_only() {
    let Some(mut b) = batch() else { return };
    let (x, x_peer) = pair(true);
    let (gone, gone_peer) = pair(true);
    drop(gone_peer);
    assert!(b.push(fd(&x), PortId(0), b"first"));
    assert!(b.push(fd(&gone), PortId(1), b"lost"));
    assert!(b.push(fd(&x), PortId(0), b"second"));
    let mut results = Vec::new();
    b.flush(|w, _| results.push((w.egress, w.result))).unwrap();
    assert_eq!(results[0], (PortId(0), Ok(())));
    assert_eq!(results[1], (PortId(1), Err(libc::EPIPE)));
    assert_eq!(results[2], (PortId(0), Ok(())));
    assert_eq!(
        read_all(&x_peer),
        vec![b"first".to_vec(), b"second".to_vec()]
    );
}

/// Queues `n` reads of `fd` into `bufs` and flushes; each read's result, in order.
fn read_burst(
    b: &mut IoBatch,
    fd: i32,
    bufs: &mut [[u8; 256]],
    n: usize,
) -> Vec<Result<usize, i32>> {
    for buf in bufs.iter_mut().take(n) {
        // SAFETY: each buffer lives past the flush below, and nothing else uses it.
        assert!(unsafe { b.push_read(fd, buf.as_mut_ptr(), buf.len()) });
    }
    let mut results = vec![None; n];
    b.flush_with_reads(|_, _| panic!("no write waits"), |i, r| results[i] = Some(r))
        .unwrap();
    results
        .into_iter()
        .map(|r| r.expect("every read is reported"))
        .collect()
}

#[test]
fn a_burst_of_reads_brings_what_waits_in_order_then_eagain() {
    let Some(mut b) = batch() else { return };
    let (x, x_peer) = pair(true);
    let sent: Vec<Vec<u8>> = (0..3u8)
        .map(|i| vec![i + 1; 10 * (i as usize + 1)])
        .collect();
    for m in &sent {
        x_peer.send(m);
    }
    let mut bufs = [[0u8; 256]; 6];
    let started = std::time::Instant::now();
    let results = read_burst(&mut b, x.read_fd().unwrap(), &mut bufs, 6);
    // An empty queue ends a read at once (RWF_NOWAIT, or a cancel), never a wait for
    // the next message.
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(
        results,
        vec![
            Ok(10),
            Ok(20),
            Ok(30),
            Err(libc::EAGAIN),
            Err(libc::EAGAIN),
            Err(libc::EAGAIN)
        ]
    );
    for (i, m) in sent.iter().enumerate() {
        assert_eq!(&bufs[i][..m.len()], &m[..]);
    }
    // Nothing was left behind, nothing read twice.
    let results = read_burst(&mut b, x.read_fd().unwrap(), &mut bufs, 2);
    assert_eq!(results, vec![Err(libc::EAGAIN); 2]);
}

#[test]
fn reads_and_writes_go_in_one_flush_and_a_closed_peer_reads_as_eof() {
    let Some(mut b) = batch() else { return };
    let (x, x_peer) = pair(true);
    let (y, y_peer) = pair(true);
    x_peer.send(b"in");
    assert!(b.push(fd(&y), PortId(1), b"out"));
    let mut buf = [0u8; 64];
    // SAFETY: `buf` outlives the flush and nothing else touches it until then.
    assert!(unsafe { b.push_read(x.read_fd().unwrap(), buf.as_mut_ptr(), buf.len()) });
    let (mut wrote, mut read) = (Vec::new(), Vec::new());
    b.flush_with_reads(|w, _| wrote.push(w.result), |i, r| read.push((i, r)))
        .unwrap();
    assert_eq!(wrote, vec![Ok(())]);
    assert_eq!(read, vec![(0, Ok(2))]);
    assert_eq!(&buf[..2], b"in");
    assert_eq!(read_all(&y_peer), vec![b"out".to_vec()]);
    // The far end gone: a read of 0 bytes (the datapath takes the port down).
    drop(x_peer);
    let mut bufs = [[0u8; 256]; 1];
    assert_eq!(
        read_burst(&mut b, x.read_fd().unwrap(), &mut bufs, 1),
        vec![Ok(0)]
    );
}

#[test]
fn no_more_than_reads_reads_wait_at_once() {
    let Some(mut b) = batch() else { return };
    let (x, _x_peer) = pair(true);
    let mut bufs = vec![[0u8; 16]; READS + 1];
    for (i, buf) in bufs.iter_mut().enumerate() {
        // SAFETY: `bufs` outlives the flush below, and nothing else touches it.
        let queued = unsafe { b.push_read(x.read_fd().unwrap(), buf.as_mut_ptr(), buf.len()) };
        assert_eq!(queued, i < READS, "read {i}");
    }
    let mut n = 0;
    b.flush_with_reads(
        |_, _| panic!("no write waits"),
        |_, r| {
            assert_eq!(r, Err(libc::EAGAIN));
            n += 1;
        },
    )
    .unwrap();
    assert_eq!(n, READS);
}
