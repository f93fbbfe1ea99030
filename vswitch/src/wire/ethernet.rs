//! Ethernet II headers (IEEE 802.3): a view and an emitter.

use crate::fdb::Mac;

pub const HEADER_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q and 802.1ad tag protocol identifiers.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
/// Bytes of one VLAN tag.
pub const VLAN_TAG_LEN: usize = 4;

/// A view over an Ethernet frame, at least its 14-byte header.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    pub fn new_checked(buf: T) -> Option<EthernetFrame<T>> {
        (buf.as_ref().len() >= HEADER_LEN).then_some(EthernetFrame { buf })
    }

    pub fn dst(&self) -> Mac {
        Mac(self.buf.as_ref()[0..6].try_into().expect("checked length"))
    }

    pub fn src(&self) -> Mac {
        Mac(self.buf.as_ref()[6..12].try_into().expect("checked length"))
    }

    pub fn ethertype(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[12], b[13]])
    }

    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }

    /// Whether the frame carries an 802.1Q or 802.1ad tag.
    pub fn is_tagged(&self) -> bool {
        matches!(self.ethertype(), ETHERTYPE_VLAN | ETHERTYPE_QINQ)
    }

    /// The ethertype and payload past one 802.1Q tag, if there is one (else the
    /// frame's own); `None` for a tag cut short.
    pub fn inner(&self) -> Option<(u16, &[u8])> {
        if self.ethertype() != ETHERTYPE_VLAN {
            return Some((self.ethertype(), self.payload()));
        }
        let tag = self.payload().get(..VLAN_TAG_LEN)?;
        Some((
            u16::from_be_bytes([tag[2], tag[3]]),
            &self.payload()[VLAN_TAG_LEN..],
        ))
    }

    /// The ethertype and payload past every 802.1Q and 802.1ad tag (stacked ones, and
    /// the priority tags of VLAN 0 that Linux strips and reads through); `None` for a
    /// tag cut short.
    pub fn innermost(&self) -> Option<(u16, &[u8])> {
        let (mut ethertype, mut payload) = (self.ethertype(), self.payload());
        while matches!(ethertype, ETHERTYPE_VLAN | ETHERTYPE_QINQ) {
            let tag = payload.get(..VLAN_TAG_LEN)?;
            ethertype = u16::from_be_bytes([tag[2], tag[3]]);
            payload = &payload[VLAN_TAG_LEN..];
        }
        Some((ethertype, payload))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst(&mut self, mac: Mac) {
        self.buf.as_mut()[0..6].copy_from_slice(&mac.0);
    }

    pub fn set_src(&mut self, mac: Mac) {
        self.buf.as_mut()[6..12].copy_from_slice(&mac.0);
    }

    pub fn set_ethertype(&mut self, ethertype: u16) {
        self.buf.as_mut()[12..14].copy_from_slice(&ethertype.to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut()[HEADER_LEN..]
    }
}

/// An Ethernet header to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    pub dst: Mac,
    pub src: Mac,
    pub ethertype: u16,
}

impl EthernetRepr {
    /// Writes the header into the first 14 bytes of `buf`.
    ///
    /// # Panics
    /// If `buf` is shorter than 14 bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        let mut f = EthernetFrame {
            buf: &mut buf[..HEADER_LEN],
        };
        f.set_dst(self.dst);
        f.set_src(self.src);
        f.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_then_view() {
        let mut b = [0u8; 20];
        EthernetRepr {
            dst: Mac::BROADCAST,
            src: Mac([2, 0, 0, 0, 0, 1]),
            ethertype: ETHERTYPE_ARP,
        }
        .emit(&mut b);
        let f = EthernetFrame::new_checked(&b[..]).unwrap();
        assert_eq!(f.dst(), Mac::BROADCAST);
        assert_eq!(f.src(), Mac([2, 0, 0, 0, 0, 1]));
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
        assert_eq!(f.payload().len(), 6);
        assert!(EthernetFrame::new_checked(&b[..13]).is_none());
        assert_eq!(f.inner(), Some((ETHERTYPE_ARP, &b[14..])));
        let mut tagged = b.to_vec();
        tagged[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        tagged[16..18].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let t = EthernetFrame::new_checked(&tagged[..]).unwrap();
        assert!(t.is_tagged());
        assert_eq!(t.inner().unwrap().0, ETHERTYPE_IPV4);
        assert!(EthernetFrame::new_checked(&tagged[..16])
            .unwrap()
            .inner()
            .is_none());
    }
}
