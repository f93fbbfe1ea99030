//! A fixed pool of frame buffers, allocated once at start-up.
//!
//! Each buffer holds headroom (so VXLAN can later prepend its 50 bytes in place), the
//! 10-byte virtio-net header, and the largest GSO super-frame a TAP hands over. Frames
//! move between stages as a [`BufId`]; nothing is allocated per packet.

use crate::frame::VNET_HDR_LEN;

/// Room in front of every frame for encapsulation headers (VXLAN needs 50).
pub const HEADROOM: usize = 64;
/// The largest Ethernet frame a TAP with TSO can hand over: a 64 KiB IP packet plus an
/// Ethernet header with a VLAN tag.
pub const MAX_FRAME: usize = 65535 + 14 + 4;
/// Where received data (virtio-net header, then the Ethernet frame) starts in a buffer.
pub const DATA_OFFSET: usize = HEADROOM;
/// Bytes per buffer, rounded up to a multiple of 64 so buffers stay cache-line aligned
/// relative to each other.
pub const BUF_SIZE: usize = (HEADROOM + VNET_HDR_LEN + MAX_FRAME).div_ceil(64) * 64;

// Checked when compiling: a GSO frame fits, and so do VXLAN's 50 bytes in front.
const _: () = assert!(BUF_SIZE >= HEADROOM + VNET_HDR_LEN + MAX_FRAME);
const _: () = assert!(HEADROOM >= 50);

/// A handle to one buffer of a [`Pool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufId(u32);

/// The buffers, as one slab, and a free list of handles.
pub struct Pool {
    slab: Box<[u8]>,
    free: Vec<u32>,
    /// Which buffers are lent out: a double release would hand one buffer to two
    /// frames, so it is checked in every build, not only debug ones.
    lent: Vec<bool>,
    count: usize,
}

impl Pool {
    /// Allocates `count` buffers of [`BUF_SIZE`] bytes.
    pub fn new(count: usize) -> Pool {
        assert!(count > 0 && count <= u32::MAX as usize, "pool size {count}");
        Pool {
            slab: vec![0u8; count * BUF_SIZE].into_boxed_slice(),
            free: (0..count as u32).rev().collect(),
            lent: vec![false; count],
            count,
        }
    }

    /// Takes a free buffer, or `None` when every buffer is in use.
    pub fn alloc(&mut self) -> Option<BufId> {
        let id = self.free.pop()?;
        self.lent[id as usize] = true;
        Some(BufId(id))
    }

    /// Returns a buffer to the pool.
    pub fn release(&mut self, id: BufId) {
        let lent = &mut self.lent[id.0 as usize];
        assert!(*lent, "{id:?} released twice");
        *lent = false;
        // Never grows: there are at most `count` handles, and capacity is `count`.
        self.free.push(id.0);
    }

    pub fn buf(&self, id: BufId) -> &[u8] {
        let start = id.0 as usize * BUF_SIZE;
        &self.slab[start..start + BUF_SIZE]
    }

    pub fn buf_mut(&mut self, id: BufId) -> &mut [u8] {
        let start = id.0 as usize * BUF_SIZE;
        &mut self.slab[start..start + BUF_SIZE]
    }

    /// Two different buffers at once, the first to read and the second to write.
    pub fn two_bufs(&mut self, a: BufId, b: BufId) -> (&[u8], &mut [u8]) {
        assert_ne!(a, b, "two_bufs needs two buffers");
        let (ia, ib) = (a.0 as usize * BUF_SIZE, b.0 as usize * BUF_SIZE);
        if ia < ib {
            let (lo, hi) = self.slab.split_at_mut(ib);
            (&lo[ia..ia + BUF_SIZE], &mut hi[..BUF_SIZE])
        } else {
            let (lo, hi) = self.slab.split_at_mut(ia);
            (&hi[..BUF_SIZE], &mut lo[ib..ib + BUF_SIZE])
        }
    }

    pub fn available(&self) -> usize {
        self.free.len()
    }

    pub fn capacity(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_until_empty_then_release() {
        let mut pool = Pool::new(3);
        let a = pool.alloc().unwrap();
        let b = pool.alloc().unwrap();
        let c = pool.alloc().unwrap();
        assert_ne!(a, b);
        assert_ne!(b, c);
        assert!(pool.alloc().is_none());
        assert_eq!(pool.available(), 0);
        pool.release(b);
        assert_eq!(pool.alloc(), Some(b));
        pool.release(a);
        pool.release(b);
        pool.release(c);
        assert_eq!(pool.available(), pool.capacity());
    }

    #[test]
    #[should_panic(expected = "released twice")]
    fn double_release_is_caught() {
        let mut pool = Pool::new(2);
        let a = pool.alloc().unwrap();
        pool.release(a);
        pool.release(a);
    }

    #[test]
    fn buffers_do_not_overlap() {
        let mut pool = Pool::new(2);
        let a = pool.alloc().unwrap();
        let b = pool.alloc().unwrap();
        pool.buf_mut(a).fill(0xaa);
        pool.buf_mut(b).fill(0xbb);
        assert!(pool.buf(a).iter().all(|&x| x == 0xaa));
        assert!(pool.buf(b).iter().all(|&x| x == 0xbb));
        assert_eq!(pool.buf(a).len(), BUF_SIZE);
    }
}
