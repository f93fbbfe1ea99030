//! ARP for IPv4 over Ethernet (RFC 826): a view.

use std::net::Ipv4Addr;

use crate::fdb::Mac;

/// Bytes of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

/// A view over an ARP packet for IPv4 over Ethernet (hardware type 1, protocol
/// 0x0800, lengths 6 and 4: [`ArpPacket::new_checked`] refuses any other).
#[derive(Debug, Clone, Copy)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    pub fn new_checked(buf: T) -> Option<ArpPacket<T>> {
        let b = buf.as_ref();
        let ok = b.len() >= PACKET_LEN && b[0..6] == [0, 1, 0x08, 0x00, 6, 4];
        ok.then_some(ArpPacket { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    pub fn operation(&self) -> u16 {
        u16::from_be_bytes([self.b()[6], self.b()[7]])
    }

    pub fn sender_mac(&self) -> Mac {
        Mac(self.b()[8..14].try_into().expect("checked length"))
    }

    pub fn sender_ip(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[14], b[15], b[16], b[17])
    }

    pub fn target_mac(&self) -> Mac {
        Mac(self.b()[18..24].try_into().expect("checked length"))
    }

    pub fn target_ip(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[24], b[25], b[26], b[27])
    }
}

/// An ARP packet for IPv4 over Ethernet to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    pub operation: u16,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Writes the 28-byte packet into the start of `buf`.
    ///
    /// # Panics
    /// If `buf` is shorter than 28 bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..PACKET_LEN];
        b[0..6].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
        b[6..8].copy_from_slice(&self.operation.to_be_bytes());
        b[8..14].copy_from_slice(&self.sender_mac.0);
        b[14..18].copy_from_slice(&self.sender_ip.octets());
        b[18..24].copy_from_slice(&self.target_mac.0);
        b[24..28].copy_from_slice(&self.target_ip.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_reads_a_request_and_refuses_others() {
        let mut p = [0u8; 28];
        p[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        p[8..14].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        p[14..18].copy_from_slice(&[10, 0, 0, 2]);
        p[24..28].copy_from_slice(&[10, 0, 0, 1]);
        let a = ArpPacket::new_checked(&p[..]).unwrap();
        assert_eq!(a.operation(), OP_REQUEST);
        assert_eq!(a.sender_mac(), Mac([2, 0, 0, 0, 0, 1]));
        assert_eq!(a.sender_ip(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(a.target_ip(), Ipv4Addr::new(10, 0, 0, 1));
        assert!(ArpPacket::new_checked(&p[..27]).is_none());
        let mut q = [0u8; 28];
        ArpRepr {
            operation: OP_REQUEST,
            sender_mac: a.sender_mac(),
            sender_ip: a.sender_ip(),
            target_mac: a.target_mac(),
            target_ip: a.target_ip(),
        }
        .emit(&mut q);
        assert_eq!(q, p);
        p[5] = 16;
        assert!(ArpPacket::new_checked(&p[..]).is_none());
    }
}
