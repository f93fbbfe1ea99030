//! The smoltcp device behind the host proxy: IP packets in from the router and out to
//! it, in buffers that are reused so the proxy path does not allocate one per packet.

use std::collections::VecDeque;

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use vswitch::gro::{cut_super_frame, TcpRun};

/// Spare buffers kept at most, each way.
const SPARES: usize = 256;

/// Packets between smoltcp (and the proxy's own builders) and the router.
#[derive(Default)]
pub(super) struct Queues {
    pub rx: VecDeque<Vec<u8>>,
    pub tx: VecDeque<Vec<u8>>,
    /// Buffers that carried packets before: rx ones come back from smoltcp, tx ones
    /// from `drain`.
    spare_rx: Vec<Vec<u8>>,
    spare_tx: Vec<Vec<u8>>,
    /// A packet (merged already, with its segment size) the router had no room for:
    /// it goes first next time.
    waiting: Option<(Vec<u8>, Option<u16>)>,
}

impl Queues {
    /// Queues a packet for smoltcp, in a reused buffer when there is one.
    pub fn push_rx(&mut self, packet: &[u8]) {
        let mut buf = self.spare_rx.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(packet);
        self.rx.push_back(buf);
    }

    /// The packet queued for smoltcp last, to change before smoltcp reads it.
    pub fn last_rx(&mut self) -> Option<&mut [u8]> {
        self.rx.back_mut().map(Vec::as_mut_slice)
    }

    /// Queues a packet for the containers, built by `emit` into a reused buffer of
    /// `room` bytes; `emit` returns the packet's length, or `None` to queue nothing.
    pub fn emit(&mut self, room: usize, emit: impl FnOnce(&mut [u8]) -> Option<usize>) {
        let mut buf = self.spare_tx.pop().unwrap_or_default();
        buf.clear();
        buf.resize(room, 0);
        match emit(&mut buf) {
            Some(n) => {
                buf.truncate(n);
                self.tx.push_back(buf);
            }
            None => self.recycle_tx(buf),
        }
    }

    /// Gives a buffer that went out back for reuse.
    fn recycle_tx(&mut self, buf: Vec<u8>) {
        if self.spare_tx.len() < SPARES {
            self.spare_tx.push(buf);
        }
    }

    /// Whether packets wait for the containers.
    pub fn has_output(&self) -> bool {
        self.waiting.is_some() || !self.tx.is_empty()
    }

    /// Hands packets for the containers to `f`, until it returns false (no room: that
    /// packet waits, first, for the next call). Runs of TCP segments of one
    /// connection are merged into super-frames first (with `Some(segment size)`), to
    /// be handed to the container's TAP as one GSO frame instead of one write per
    /// 1448 bytes; everything else comes with `None`. A segment longer than its
    /// connection's `segment(packet)` (data bytes a segment) goes as a super-frame
    /// cut at that size ([`cut_super_frame`]).
    pub fn drain(
        &mut self,
        segment: impl Fn(&[u8]) -> Option<usize>,
        mut f: impl FnMut(&[u8], Option<u16>) -> bool,
    ) {
        if let Some((packet, mss)) = self.waiting.take() {
            if !f(&packet, mss) {
                self.waiting = Some((packet, mss));
                return;
            }
            self.recycle_tx(packet);
        }
        while let Some(mut first) = self.tx.pop_front() {
            if let Some(mss) = segment(&first).and_then(|s| cut_super_frame(&mut first, s)) {
                if !f(&first, Some(mss)) {
                    self.waiting = Some((first, Some(mss)));
                    return;
                }
                self.recycle_tx(first);
                continue;
            }
            let Some(mut run) = TcpRun::start(&first) else {
                if !f(&first, None) {
                    self.waiting = Some((first, None));
                    return;
                }
                self.recycle_tx(first);
                continue;
            };
            while let Some(next) = self.tx.front() {
                if !run.accepts(&first, next) {
                    break;
                }
                first.extend_from_slice(&next[run.headers()..]);
                run.appended(&mut first, next);
                if let Some(next) = self.tx.pop_front() {
                    self.recycle_tx(next);
                }
            }
            let mss = run.finish(&mut first);
            if !f(&first, mss) {
                self.waiting = Some((first, mss));
                return;
            }
            self.recycle_tx(first);
        }
    }
}

pub(super) struct Rx<'a>(Vec<u8>, &'a mut Vec<Vec<u8>>);
pub(super) struct Tx<'a>(&'a mut VecDeque<Vec<u8>>, &'a mut Vec<Vec<u8>>);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.0);
        if self.1.len() < SPARES {
            self.1.push(self.0);
        }
        r
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self.1.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len, 0);
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl phy::Device for Queues {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((
            Rx(packet, &mut self.spare_rx),
            Tx(&mut self.tx, &mut self.spare_tx),
        ))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx, &mut self.spare_tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        // Containers hand over 64 KiB TCP super-frames: take them whole.
        caps.max_transmission_unit = 65535;
        let mut sums = ChecksumCapabilities::default();
        // Their TCP checksums are often left to offload (partial): do not check them.
        sums.tcp = Checksum::Tx;
        caps.checksum = sums;
        caps
    }
}
