//! `WriteBatch` over real descriptors: SOCK_SEQPACKET socket pairs, where one write is
//! one message as one write to a TAP is one frame.

// Shared with the datapath's tests; these use only part of it.
#[allow(dead_code)]
mod seqpacket_port;

use seqpacket_port::{pair, Peer, SeqpacketPort};
use vswitch::uring::{WriteBatch, SLOTS, SLOT_SIZE};
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
fn batch() -> Option<WriteBatch> {
    match WriteBatch::new() {
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
