//! A tiny synchronous rtnetlink client: one request at a time, each acked.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::Parseable;
use netlink_packet_core::{
    ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_DONE,
    NLMSG_ERROR, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_MATCH, NLM_F_REQUEST, NLM_F_ROOT,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkHeader, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::netns::{run_in_fd, Netns};

/// Netlink types below this are control messages (NOOP, ERROR, DONE, OVERRUN).
const NLMSG_MIN_TYPE: u16 = 0x10;

/// An rtnetlink socket, bound to the network namespace it was created in.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// A reply message other than the final ack: its netlink type and payload.
struct Reply {
    message_type: u16,
    payload: Vec<u8>,
}

impl Rtnl {
    /// Opens a socket in the calling thread's network namespace.
    pub fn new() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        // Connected to the kernel: nothing else can reach us.
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl {
            socket,
            seq: 0,
            buf: Vec::new(),
        })
    }

    /// Opens a socket inside `ns`; it works there whatever thread uses it, and
    /// keeps the namespace alive until dropped.
    pub fn in_netns(ns: &Netns) -> io::Result<Rtnl> {
        ns.run_in(Rtnl::new)?
    }

    /// A socket in the network namespace `ns` (an nsfs descriptor).
    pub fn in_netns_fd(ns: std::os::fd::BorrowedFd<'_>) -> io::Result<Rtnl> {
        crate::netns::run_in_fd(ns, Rtnl::new)?
    }

    /// The index of the link called `name`, or None if there is none.
    pub fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        Ok(self.get_link(name)?.map(|h| h.index))
    }

    /// Sets whichever of MAC address, MTU and transmit queue length are given.
    pub fn set_link(
        &mut self,
        index: u32,
        mac: Option<[u8; 6]>,
        mtu: Option<u32>,
        txqueuelen: Option<u32>,
    ) -> io::Result<()> {
        let mut msg = link_message(index);
        if let Some(mac) = mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(qlen) = txqueuelen {
            msg.attributes.push(LinkAttribute::TxQueueLen(qlen));
        }
        if msg.attributes.is_empty() {
            return Ok(());
        }
        self.ack(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Brings the link administratively up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut msg = link_message(index);
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.ack(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Moves the link into the namespace `ns`, named `new_name` there, in one
    /// request. Fails with EEXIST, leaving the link where it was, if the name is
    /// taken in `ns`.
    pub fn move_to_netns(
        &mut self,
        index: u32,
        ns: BorrowedFd<'_>,
        new_name: &str,
    ) -> io::Result<()> {
        // The kernel only renames during the move if the link's current name is
        // taken in `ns`; otherwise it moves, then renames, and a rename failing
        // with EEXIST leaves the link moved under its old name. So look first.
        let taken = run_in_fd(ns, || Rtnl::new().and_then(|mut r| r.link_index(new_name)))??;
        if taken.is_some() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        let mut msg = link_message(index);
        msg.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        msg.attributes
            .push(LinkAttribute::IfName(new_name.to_string()));
        self.ack(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Adds ADDR/PREFIX to the link, with the broadcast address `ip addr add ... brd +` gives.
    pub fn add_ipv4_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        if prefix > 32 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("prefix length {prefix} is longer than 32"),
            ));
        }
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.scope = AddressScope::Universe;
        msg.header.index = index;
        msg.attributes
            .push(AddressAttribute::Local(IpAddr::V4(addr)));
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(addr)));
        // Like iproute2: /31 and /32 have no broadcast address.
        if prefix <= 30 {
            let host_bits = u32::MAX >> prefix;
            let brd = Ipv4Addr::from(u32::from(addr) | host_bits);
            msg.attributes.push(AddressAttribute::Broadcast(brd));
        }
        self.ack(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Adds ADDR/PREFIX (IPv6) to the link, usable at once: no duplicate address
    /// detection (IFA_F_NODAD, as `ip addr add ... nodad`), since tapnet hands each
    /// address to one port only.
    pub fn add_ipv6_address(&mut self, index: u32, addr: Ipv6Addr, prefix: u8) -> io::Result<()> {
        if prefix > 128 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("prefix length {prefix} is longer than 128"),
            ));
        }
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet6;
        msg.header.prefix_len = prefix;
        msg.header.scope = AddressScope::Universe;
        msg.header.index = index;
        msg.header.flags = AddressHeaderFlags::Nodad;
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V6(addr)));
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        self.ack(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Adds `default via GATEWAY dev OIF` to the main IPv6 table.
    pub fn add_default_route_v6(&mut self, gateway: Ipv6Addr, oif: u32) -> io::Result<()> {
        self.add_default_route(AddressFamily::Inet6, RouteAddress::Inet6(gateway), oif)
    }

    /// Adds `default via GATEWAY dev OIF` to the main table.
    pub fn add_default_route_v4(&mut self, gateway: Ipv4Addr, oif: u32) -> io::Result<()> {
        self.add_default_route(AddressFamily::Inet, RouteAddress::Inet(gateway), oif)
    }

    /// `default via GATEWAY dev OIF` in the main table of `family`.
    fn add_default_route(
        &mut self,
        family: AddressFamily,
        gateway: RouteAddress,
        oif: u32,
    ) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family;
        msg.header.destination_prefix_length = 0;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes.push(RouteAttribute::Gateway(gateway));
        msg.attributes.push(RouteAttribute::Oif(oif));
        self.ack(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// The MAC this namespace's neighbour table has for `ip` (RTM_GETNEIGH, a dump of
    /// the IPv4 table), if it has a usable one: REACHABLE, STALE, DELAY, PROBE,
    /// PERMANENT or NOARP, not INCOMPLETE or FAILED.
    pub fn neighbour_v4(&mut self, ip: Ipv4Addr) -> io::Result<Option<[u8; 6]>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        let replies = self.request(
            RouteNetlinkMessage::GetNeighbour(msg),
            NLM_F_ROOT | NLM_F_MATCH,
        )?;
        for reply in replies
            .iter()
            .filter(|r| r.message_type == libc::RTM_NEWNEIGH)
        {
            let Ok(n) = NeighbourMessage::parse(&reply.payload[..]) else {
                continue;
            };
            if matches!(
                n.header.state,
                NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
            ) {
                continue;
            }
            let mut dst = None;
            let mut mac = None;
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => dst = Some(*d),
                    NeighbourAttribute::LinkLayerAddress(l) => {
                        mac = <[u8; 6]>::try_from(l.as_slice()).ok()
                    }
                    _ => {}
                }
            }
            if dst == Some(ip) {
                return Ok(mac);
            }
        }
        Ok(None)
    }

    /// Deletes the link.
    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        self.ack(RouteNetlinkMessage::DelLink(link_message(index)), 0)
    }

    /// RTM_GETLINK by name: the reply's header (index, flags), None on ENODEV.
    pub(crate) fn get_link(&mut self, name: &str) -> io::Result<Option<LinkHeader>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        let replies = match self.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => replies,
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Only the fixed header is parsed: attributes the crate does not know
        // (newer kernels) must not make a lookup fail.
        for reply in &replies {
            if reply.message_type == libc::RTM_NEWLINK {
                return LinkHeader::parse(&reply.payload)
                    .map(Some)
                    .map_err(|e| invalid_data(format!("bad RTM_NEWLINK reply: {e}")));
            }
        }
        Err(invalid_data(format!(
            "no link in reply to RTM_GETLINK {name}"
        )))
    }

    /// Sends a request that expects no data back, and waits for its ack.
    fn ack(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.request(msg, flags).map(drop)
    }

    /// Sends one request with NLM_F_REQUEST|NLM_F_ACK|`flags` and collects the
    /// replies up to its ack; a netlink error becomes an io::Error with its errno.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<Reply>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        let sent = retry_eintr(|| self.socket.send(&out, 0))?;
        if sent != out.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write on netlink socket",
            ));
        }

        let mut replies = Vec::new();
        loop {
            self.recv_datagram()?;
            // A datagram may hold several messages; stale ones (other sequence
            // numbers, e.g. from an earlier request that failed mid-read) are skipped.
            let mut data = &self.buf[..];
            while !data.is_empty() {
                let nl = NetlinkBuffer::new_checked(data)
                    .map_err(|e| invalid_data(format!("bad netlink message: {e}")))?;
                let len = nl.length() as usize;
                if nl.sequence_number() == seq {
                    match nl.message_type() {
                        NLMSG_ERROR => {
                            let err = ErrorBuffer::new_checked(nl.payload())
                                .map_err(|e| invalid_data(format!("bad netlink error: {e}")))?;
                            return match err.code() {
                                None => Ok(replies),
                                Some(code) => {
                                    Err(io::Error::from_raw_os_error(code.get().saturating_neg()))
                                }
                            };
                        }
                        NLMSG_DONE => return Ok(replies),
                        message_type if message_type >= NLMSG_MIN_TYPE => replies.push(Reply {
                            message_type,
                            payload: nl.payload().to_vec(),
                        }),
                        _ => {} // NOOP, OVERRUN
                    }
                }
                // Messages are 4-byte aligned; the last one may lack its padding.
                data = data.get(align4(len)..).unwrap_or(&[]);
            }
        }
    }

    /// Reads one whole datagram into self.buf, however large it is.
    fn recv_datagram(&mut self) -> io::Result<()> {
        self.buf.clear();
        let size = retry_eintr(|| {
            self.socket
                .recv(&mut self.buf, libc::MSG_PEEK | libc::MSG_TRUNC)
        })?;
        self.buf.clear();
        self.buf.reserve(size);
        let got = retry_eintr(|| self.socket.recv(&mut self.buf, 0))?;
        if got != self.buf.len() {
            return Err(invalid_data("truncated netlink datagram"));
        }
        Ok(())
    }
}

/// A link message addressing the link `index`, changing nothing yet.
fn link_message(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

fn invalid_data(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn retry_eintr<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::tests::{unique, unique_ns_name};
    use std::fs::File;
    use std::process::Command;

    /// A non-persistent TAP in the calling thread's namespace; closing the fd deletes it.
    struct Tap {
        _file: File,
        name: String,
    }

    fn tap() -> Tap {
        #[repr(C)]
        struct IfReq {
            name: [u8; libc::IFNAMSIZ],
            flags: libc::c_short,
            _pad: [u8; 22],
        }
        let name = format!("tnt{}t{}", std::process::id(), unique());
        let file = File::options()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .expect("open /dev/net/tun");
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a struct ifreq, which IfReq lays out.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        assert_eq!(r, 0, "TUNSETIFF: {}", io::Error::last_os_error());
        Tap { _file: file, name }
    }

    fn ip_json(ns: &str, args: &[&str]) -> serde_json::Value {
        let out = Command::new("ip")
            .args(["-n", ns, "-j"])
            .args(args)
            .output()
            .expect("run ip");
        assert!(out.status.success(), "ip {args:?}: {out:?}");
        serde_json::from_slice(&out.stdout).expect("ip -j output")
    }

    #[test]
    fn tap_moved_renamed_and_configured() {
        let n = unique();
        let ns = Netns::open_or_create(&unique_ns_name()).expect("netns");
        let mut root = Rtnl::new().expect("rtnl");
        let tap1 = tap();
        let index = root.link_index(&tap1.name).expect("lookup").expect("tap1");
        let mac = [0x02, 0, 0, 0x99, n as u8, 2];
        root.set_link(index, Some(mac), Some(1400), Some(321))
            .expect("set_link");
        root.move_to_netns(index, ns.fd(), "eth0").expect("move");
        assert_eq!(root.link_index(&tap1.name).expect("lookup"), None);

        let mut inside = Rtnl::in_netns(&ns).expect("rtnl in netns");
        let eth0 = inside.link_index("eth0").expect("lookup").expect("eth0");
        inside.set_up(eth0).expect("up");
        let addr = Ipv4Addr::new(10, 99, n as u8, 2);
        let gw = Ipv4Addr::new(10, 99, n as u8, 1);
        inside.add_ipv4_address(eth0, addr, 24).expect("addr");
        let err = inside.add_ipv4_address(eth0, addr, 24).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");
        inside.add_default_route_v4(gw, eth0).expect("route");

        let links = ip_json(ns.name(), &["addr", "show", "dev", "eth0"]);
        let link = &links[0];
        let mac_text = mac.map(|b| format!("{b:02x}")).join(":");
        assert_eq!(link["address"], mac_text.as_str(), "{link}");
        assert_eq!(link["mtu"], 1400, "{link}");
        assert_eq!(link["txqlen"], 321, "{link}");
        assert!(link["flags"]
            .as_array()
            .expect("flags")
            .contains(&"UP".into()));
        let inet = link["addr_info"]
            .as_array()
            .expect("addr_info")
            .iter()
            .find(|a| a["family"] == "inet")
            .expect("an inet address");
        assert_eq!(inet["local"], addr.to_string(), "{inet}");
        assert_eq!(inet["prefixlen"], 24, "{inet}");
        assert_eq!(inet["broadcast"], format!("10.99.{n}.255"), "{inet}");

        let routes = ip_json(ns.name(), &["route", "show", "default"]);
        assert_eq!(routes.as_array().map(Vec::len), Some(1), "{routes}");
        assert_eq!(routes[0]["gateway"], gw.to_string(), "{routes}");
        assert_eq!(routes[0]["dev"], "eth0", "{routes}");

        // The name is taken in the namespace: EEXIST, and the TAP stays home.
        let tap2 = tap();
        let index2 = root.link_index(&tap2.name).expect("lookup").expect("tap2");
        let err = root.move_to_netns(index2, ns.fd(), "eth0").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");
        assert_eq!(root.link_index(&tap2.name).expect("lookup"), Some(index2));
    }

    #[test]
    fn missing_links_and_delete() {
        let mut rtnl = Rtnl::new().expect("rtnl");
        assert_eq!(rtnl.link_index("tnt-no-such").expect("lookup"), None);
        let err = rtnl.set_up(0x7fff_fff0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV), "{err}");
        let tap = tap();
        let index = rtnl.link_index(&tap.name).expect("lookup").expect("tap");
        rtnl.delete_link(index).expect("delete");
        assert_eq!(rtnl.link_index(&tap.name).expect("lookup"), None);
        // The socket is still in step after errors.
        assert!(rtnl.link_index("lo").expect("lookup").is_some());
    }

    #[test]
    fn removing_the_namespace_takes_the_tap_down() {
        let ns = Netns::open_or_create(&unique_ns_name()).expect("netns");
        let tap = tap();
        let mut root = Rtnl::new().expect("rtnl");
        let index = root.link_index(&tap.name).expect("lookup").expect("tap");
        root.move_to_netns(index, ns.fd(), "eth0").expect("move");
        let inside = Rtnl::in_netns(&ns).expect("rtnl in netns");
        // Neither a record nor the TAP fd keeps the namespace alive...
        let record = ns.record();
        drop(ns);
        record.remove().expect("remove");
        let mut pfd = libc::pollfd {
            fd: tap._file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // ...but an open rtnetlink socket in it does.
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 300) }, 0);
        drop(inside);
        // The kernel tears namespaces down asynchronously. The wake-up comes
        // as "readable": a poll for POLLERR alone would sleep through it.
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, 10_000) };
        assert_eq!(r, 1, "TAP fd not signalled after netns removal");
        assert_ne!(pfd.revents & libc::POLLERR, 0, "revents {:#x}", pfd.revents);
    }
}
