//! The VXLAN endpoint's receive-side coalescing as `encap::vtep` runs it (its `Open`
//! run, which needs pool buffers and so cannot be called here), over frames the
//! target hands in: consecutive TCP segments of a flow merged into the first one's
//! buffer with `vswitch::gro::TcpRun`, and the result sent into a bridge. What comes
//! out must be a frame that bridge takes: the datapath checks every injected frame
//! with `check_ingress`, so a merged frame it refuses (`bad_gso`, `oversize`,
//! `bad_vnet_header`) is data lost.

use vswitch::counters::DropReason;
use vswitch::frame::{
    check_ingress, VnetHdr, ETH_HDR_LEN, GSO_TCPV4, VNET_F_NEEDS_CSUM, VNET_HDR_LEN,
};
use vswitch::gro::{self, Checksums, TcpRun};
use vswitch::wire::checksum::classify;
use vswitch::wire::ethernet::{EthernetFrame, ETHERTYPE_IPV4};
use vswitch::wire::ipv4::Ipv4Packet;

use crate::{invariant, Cov};

const IP_AT: usize = VNET_HDR_LEN + ETH_HDR_LEN;
/// A pool buffer's room for a frame (vswitch's pool: 64 KiB and a little slack).
const ROOM: usize = VNET_HDR_LEN + 65535 + 64;

#[derive(Default)]
pub struct Gro {
    open: Option<(Vec<u8>, TcpRun)>,
}

impl Gro {
    /// A frame (a virtio-net header, then an untagged Ethernet frame) with checksums
    /// `sums`, on its way into a bridge of `mtu`, each one no longer than the bridge
    /// takes: merged into the open run, or the run sent and a new one started, or
    /// sent alone.
    pub fn push(&mut self, frame: &[u8], sums: Checksums, mtu: u32, cov: &mut Cov) {
        if let Some((buf, run)) = self.open.as_mut() {
            if merge(buf, run, frame, sums) {
                cov.hit(40, run.len() as u64 >> 10);
                return;
            }
        }
        self.flush(mtu, cov);
        let ipv4 = frame
            .get(VNET_HDR_LEN..)
            .and_then(EthernetFrame::new_checked)
            .is_some_and(|e| e.ethertype() == ETHERTYPE_IPV4);
        if gro::mergeable(sums) && ipv4 {
            if let Some(run) = TcpRun::start(&frame[IP_AT..]) {
                cov.hit(41, run.headers() as u64);
                self.open = Some((frame.to_vec(), run));
                return;
            }
        }
        sent(frame, mtu, "a frame passed on alone", cov);
    }

    /// Sends the open run into the bridge: a GSO super-frame if segments were merged.
    pub fn flush(&mut self, mtu: u32, cov: &mut Cov) {
        let Some((mut buf, run)) = self.open.take() else {
            return;
        };
        let len = IP_AT + run.len();
        let frame = &mut buf[..len];
        if let Some(mss) = run.finish(&mut frame[IP_AT..]) {
            VnetHdr {
                flags: VNET_F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: (ETH_HDR_LEN + run.headers()) as u16,
                gso_size: mss,
                csum_start: (ETH_HDR_LEN + run.l4()) as u16,
                csum_offset: 16,
            }
            .emit(frame);
            let ip = Ipv4Packet::new_checked(&frame[IP_AT..]);
            invariant!(
                ip.is_ok_and(|ip| ip.verify_checksum() && ip.total_len() == len - IP_AT),
                "a merged packet has a valid IPv4 header and its own length"
            );
            let sums = classify(&frame[IP_AT..]);
            invariant!(
                matches!(sums, Checksums::Partial { .. } | Checksums::Valid),
                "a merged packet's TCP checksum is left partial over its whole length: {sums:?}"
            );
            cov.hit(42, mss as u64);
            sent(frame, mtu, "a merged GSO frame", cov);
        } else {
            sent(frame, mtu, "a run of one segment", cov);
        }
    }
}

/// Appends `new` to the run in `open` if it continues it (vtep's `Open::merge`).
fn merge(open: &mut Vec<u8>, run: &mut TcpRun, new: &[u8], sums: Checksums) -> bool {
    if !gro::mergeable(sums) {
        return false;
    }
    let have = IP_AT + run.len();
    if new.len() < IP_AT || new[VNET_HDR_LEN..IP_AT] != open[VNET_HDR_LEN..IP_AT] {
        return false;
    }
    let ip = &new[IP_AT..];
    if !run.accepts(&open[IP_AT..have], ip) {
        return false;
    }
    let payload = &ip[run.headers()..];
    if have + payload.len() > ROOM {
        return false;
    }
    open.truncate(have);
    open.extend_from_slice(payload);
    run.appended(&mut open[IP_AT..], ip);
    true
}

/// What the bridge's ingress check says of a frame the endpoint made: never a refusal
/// of the offload metadata or the size the endpoint itself wrote (every frame that
/// went in was within the bridge's MTU).
pub fn sent(frame: &[u8], mtu: u32, what: &str, cov: &mut Cov) {
    let checked = check_ingress(frame, mtu);
    cov.hit(43, checked.map_or_else(|r| 1 + r as u64, |_| 0));
    invariant!(
        !matches!(
            checked,
            Err(DropReason::BadGso | DropReason::BadVnetHeader | DropReason::Oversize)
        ),
        "{what} is refused by the bridge it goes into (MTU {mtu}): {checked:?}, vnet {:?}",
        VnetHdr::parse(frame)
    );
}
