//! The VXLAN header (RFC 7348 section 5) as a zero-copy view with a validating
//! constructor:
//!
//! ```text
//!  0                   1                   2                   3
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```

/// Bytes of the header.
pub const HEADER_LEN: usize = 8;
/// The I flag: the VNI is valid. The only flag; RFC 7348 says send exactly this.
pub const FLAG_VNI: u8 = 0x08;
/// IANA's port for VXLAN (the Linux kernel's own default is 8472).
pub const PORT: u16 = 4789;
/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14): what a frame grows by
/// on the wire, and so what the inner MTU must leave room for.
pub const OVERHEAD: usize = 50;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// Why a datagram is not a VXLAN frame we take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than the header plus an inner Ethernet header.
    Truncated,
    /// Flags other than exactly the I flag.
    BadFlags,
}

/// A view over a datagram that starts with a VXLAN header.
#[derive(Debug, Clone, Copy)]
pub struct Vxlan<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Vxlan<T> {
    /// Checks length (room for an inner Ethernet header) and flags.
    pub fn new_checked(buf: T) -> Result<Vxlan<T>, HeaderError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN + super::ethernet::HEADER_LEN {
            return Err(HeaderError::Truncated);
        }
        if b[0] != FLAG_VNI {
            return Err(HeaderError::BadFlags);
        }
        Ok(Vxlan { buf })
    }

    pub fn vni(&self) -> u32 {
        let b = self.buf.as_ref();
        u32::from_be_bytes([0, b[4], b[5], b[6]])
    }

    /// The inner Ethernet frame.
    pub fn inner(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
}

/// Writes a VXLAN header for `vni` into the first 8 bytes of `buf`.
pub fn emit(buf: &mut [u8], vni: u32) {
    buf[..HEADER_LEN].copy_from_slice(&[0; HEADER_LEN]);
    buf[0] = FLAG_VNI;
    buf[4..7].copy_from_slice(&vni.to_be_bytes()[1..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_then_parse() {
        let mut d = vec![0xaa; HEADER_LEN + 60];
        emit(&mut d, 42);
        assert_eq!(&d[..8], &[0x08, 0, 0, 0, 0, 0, 42, 0]);
        let v = Vxlan::new_checked(&d[..]).unwrap();
        assert_eq!(v.vni(), 42);
        assert_eq!(v.inner().len(), 60);
        emit(&mut d, MAX_VNI);
        assert_eq!(Vxlan::new_checked(&d[..]).unwrap().vni(), MAX_VNI);
    }

    #[test]
    fn bad_flags_and_runts_are_refused() {
        let mut d = vec![0u8; HEADER_LEN + 14];
        emit(&mut d, 7);
        d[0] = 0x0c;
        assert_eq!(
            Vxlan::new_checked(&d[..]).unwrap_err(),
            HeaderError::BadFlags
        );
        d[0] = 0;
        assert_eq!(
            Vxlan::new_checked(&d[..]).unwrap_err(),
            HeaderError::BadFlags
        );
        assert_eq!(
            Vxlan::new_checked(&d[..21]).unwrap_err(),
            HeaderError::Truncated
        );
        for n in 0..HEADER_LEN + 14 {
            assert!(Vxlan::new_checked(&d[..n]).is_err());
        }
    }
}
