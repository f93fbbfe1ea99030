//! Internet checksums (RFC 1071) and their incremental update (RFC 1624), so that a
//! rewritten field costs a few additions instead of a pass over the packet.

/// The one's-complement sum of `data` folded to 16 bits (not inverted).
pub fn sum(data: &[u8]) -> u16 {
    sum_with(data, 0)
}

/// [`sum`], starting from `init` (another part's sum, a pseudo-header's say).
pub fn sum_with(data: &[u8], init: u16) -> u16 {
    let mut acc: u32 = init as u32;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [last] = chunks.remainder() {
        acc += (*last as u32) << 8;
    }
    fold(acc)
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum field value for `data` (with its checksum field zeroed).
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit word of the covered data changed
/// from `old` to `new`: HC' = ~(~HC + ~m + m').
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    !fold(!check as u32 + !old as u32 + new as u32)
}

/// [`update16`] for a 32-bit field (an IPv4 address), one half at a time.
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    let c = update16(check, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xorshift(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    /// 0x0000 and 0xffff are the same number in one's complement.
    fn same(a: u16, b: u16) -> bool {
        a == b || (a | b == 0xffff && (a == 0 || b == 0))
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2.
        assert_eq!(
            sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn incremental_update_agrees_with_recomputation() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let len = 20 + (xorshift(&mut seed) % 40) as usize * 2;
            let mut data: Vec<u8> = (0..len).map(|_| xorshift(&mut seed) as u8).collect();
            data[10] = 0;
            data[11] = 0;
            let check = checksum(&data);
            // Change a 16-bit word and a 32-bit field somewhere past the checksum.
            let w = 12 + 2 * (xorshift(&mut seed) as usize % ((len - 16) / 2));
            let old16 = u16::from_be_bytes([data[w], data[w + 1]]);
            let new16 = xorshift(&mut seed) as u16;
            data[w..w + 2].copy_from_slice(&new16.to_be_bytes());
            let c1 = update16(check, old16, new16);
            assert!(same(c1, checksum(&data)), "16-bit change at {w}");
            let a = 12 + 2 * (xorshift(&mut seed) as usize % ((len - 16) / 2));
            let old32 = u32::from_be_bytes(data[a..a + 4].try_into().unwrap());
            let new32 = xorshift(&mut seed) as u32;
            data[a..a + 4].copy_from_slice(&new32.to_be_bytes());
            let c2 = update32(c1, old32, new32);
            assert!(same(c2, checksum(&data)), "32-bit change at {a}");
        }
    }
}
