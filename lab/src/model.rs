//! The validated lab: what `check` accepted and `up` builds, with every default
//! filled in. Plain data, so the daemon and the tests read it without the file.

use std::net::{Ipv4Addr, SocketAddr};

use crate::reader::Pos;

/// A validated lab.
#[derive(Debug, Clone)]
pub struct Lab {
    /// The file it came from, as given (`<default lab>` for the embedded one).
    pub file: String,
    pub name: String,
    pub bridges: Vec<BridgeCfg>,
    pub ports: Vec<PortCfg>,
    pub forwards: Vec<ForwardCfg>,
    pub services: Vec<ServiceCfg>,
    pub nat: Option<NatCfg>,
    pub vxlan: Option<VxlanCfg>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// Whether `ip` is inside it.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }
}

#[derive(Debug, Clone)]
pub struct BridgeCfg {
    pub pos: Pos,
    pub name: String,
    pub subnet: Option<Subnet>,
    /// Defaults to the first host address of `subnet` when there is one.
    pub gateway: Option<Ipv4Addr>,
    /// The bridge's IPv6 network (an extension ahead of the contract): with it, the
    /// router answers for `gateway6` and advertises the prefix (RFC 4861).
    pub subnet6: Option<(std::net::Ipv6Addr, u8)>,
    /// Defaults to `::1` of `subnet6` when there is one.
    pub gateway6: Option<std::net::Ipv6Addr>,
    /// Recursive DNS servers the router's advertisements name on this bridge (an
    /// RDNSS option, RFC 8106): at most three unicast addresses, only with `subnet6`.
    pub dns6: Vec<std::net::Ipv6Addr>,
    /// Defaults to 1500 (1450 for a bridge with a `vni`).
    pub mtu: u32,
    pub vni: Option<(u32, Pos)>,
    /// Defaults to 8192.
    pub fdb_max: usize,
    /// Defaults to 300.
    pub fdb_aging_s: u64,
}

#[derive(Debug, Clone)]
pub struct PortCfg {
    pub pos: Pos,
    pub name: String,
    pub bridge: String,
    pub netns: Option<String>,
    /// A QEMU VM's port instead of a TAP (an extension): the unix socket its
    /// `-netdev stream` connects to, which tapnet listens on. No netns or ifname then.
    pub qemu: Option<String>,
    /// Defaults to "eth0" with a netns, to the port's name without one; empty for a
    /// QEMU port.
    pub ifname: String,
    /// Defaults to 02:00 followed by the four bytes of `ip` when it has one, else a
    /// locally administered address hashed from the lab and port names.
    pub mac: [u8; 6],
    pub ip: Option<(Ipv4Addr, u8)>,
    /// The port's IPv6 address on its bridge's `subnet6`; without it, a port on such
    /// a bridge autoconfigures (SLAAC) from the router's advertisements.
    pub ip6: Option<(std::net::Ipv6Addr, u8)>,
    /// Impairment of the frames tapnet sends to the port (an extension of the
    /// contract): `impair = "loss=1% delay=20ms"`, as `tapnet impair` takes.
    pub impair: Option<vswitch::impair::Impairment>,
    /// A TAP of this name in tapnet's own namespace that gets a copy of every frame
    /// the port receives or sends, for tcpdump or Wireshark (an extension).
    pub mirror: Option<String>,
    /// Port security: the port may send only from its own MAC and (with `ip`) its own
    /// IPv4 address. Defaults to on for a port with an `ip`, off without one.
    pub spoof_check: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

#[derive(Debug, Clone)]
pub struct ForwardCfg {
    pub pos: Pos,
    pub proto: Proto,
    /// IPv4 or IPv6 (an IPv6 one takes IPv6 clients only).
    pub listen: std::net::SocketAddr,
    /// IPv4 or IPv6, of either family whatever `listen`'s.
    pub to: std::net::SocketAddr,
}

#[derive(Debug, Clone)]
pub struct ServiceCfg {
    pub pos: Pos,
    pub name: String,
    /// An IPv4 or IPv6 address and port; the backends are of the same family.
    pub vip: std::net::SocketAddr,
    pub proto: Proto,
    pub backends: Vec<std::net::SocketAddr>,
}

/// The `[nat]` table. A lab without one gets [`NatCfg::default()`] (see
/// [`Lab::nat_or_default`]): no masquerade, and the default limits and timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatCfg {
    /// Where the table starts (line 0, column 0 for a lab without one).
    pub pos: Pos,
    /// Containers reach addresses outside every subnet through the host's own
    /// sockets. True in a `[nat]` table that does not say otherwise.
    pub masquerade: bool,
    /// Translated flows at most, in each of the router's table (services) and the
    /// host proxy's (masquerade, forwards); the least recently used goes past that.
    /// An extension of the contract's `[nat]`; defaults to [`DEFAULT_NAT_MAX_FLOWS`].
    pub max_flows: usize,
    /// Seconds an established TCP flow may stay idle before it is forgotten
    /// (`tcp_timeout_s`, 1..=2592000; default [`DEFAULT_NAT_TCP_TIMEOUT_S`]).
    pub tcp_timeout_s: u64,
    /// Seconds a TCP flow is kept after a FIN or RST (`tcp_closing_timeout_s`,
    /// 1..=3600; default [`DEFAULT_NAT_TCP_CLOSING_TIMEOUT_S`]).
    pub tcp_closing_timeout_s: u64,
    /// Seconds a UDP flow may stay idle (`udp_timeout_s`, 1..=86400; default
    /// [`DEFAULT_NAT_UDP_TIMEOUT_S`]).
    pub udp_timeout_s: u64,
    /// Seconds an ICMP echo flow may stay idle (`icmp_timeout_s`, 1..=86400; default
    /// [`DEFAULT_NAT_ICMP_TIMEOUT_S`]).
    pub icmp_timeout_s: u64,
}

/// `nat_max_flows` when `[nat] max_flows` is not given.
pub const DEFAULT_NAT_MAX_FLOWS: usize = 65536;
/// `[nat] tcp_timeout_s` when not given: 5 days, as Linux conntrack's
/// `nf_conntrack_tcp_timeout_established`.
pub const DEFAULT_NAT_TCP_TIMEOUT_S: u64 = 432_000;
/// `[nat] tcp_closing_timeout_s` when not given: two minutes after a FIN or RST.
pub const DEFAULT_NAT_TCP_CLOSING_TIMEOUT_S: u64 = 120;
/// `[nat] udp_timeout_s` when not given: the two minutes of RFC 4787, REQ-5.
pub const DEFAULT_NAT_UDP_TIMEOUT_S: u64 = 120;
/// `[nat] icmp_timeout_s` when not given.
pub const DEFAULT_NAT_ICMP_TIMEOUT_S: u64 = 30;

impl Default for NatCfg {
    /// What a lab without a `[nat]` table gets: no masquerade, default limits and
    /// timeouts. (An empty `[nat]` table differs in one thing: it masquerades.)
    fn default() -> Self {
        NatCfg {
            pos: Pos::default(),
            masquerade: false,
            max_flows: DEFAULT_NAT_MAX_FLOWS,
            tcp_timeout_s: DEFAULT_NAT_TCP_TIMEOUT_S,
            tcp_closing_timeout_s: DEFAULT_NAT_TCP_CLOSING_TIMEOUT_S,
            udp_timeout_s: DEFAULT_NAT_UDP_TIMEOUT_S,
            icmp_timeout_s: DEFAULT_NAT_ICMP_TIMEOUT_S,
        }
    }
}

impl Lab {
    /// The `[nat]` table, or [`NatCfg::default()`] when the lab has none: the flow
    /// limit and timeouts to use either way.
    pub fn nat_or_default(&self) -> NatCfg {
        self.nat.clone().unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct VxlanCfg {
    pub pos: Pos,
    /// The underlay address: IPv4 or IPv6 (one family for `listen` and `peers`).
    pub listen: SocketAddr,
    /// Static peers, of `listen`'s family; may be empty when `etcd` is given.
    pub peers: Vec<SocketAddr>,
    /// etcd endpoints, as `http://HOST:PORT` (port 2379 written out when the file
    /// left it off); empty: no store, static peers only.
    pub etcd: Vec<String>,
    /// Where this lab's keys live in the store ([`DEFAULT_ETCD_PREFIX`]).
    pub etcd_prefix: String,
    /// The registration's lease, seconds ([`DEFAULT_ETCD_TTL_S`]): a host that dies
    /// leaves the others' peers within it.
    pub etcd_ttl_s: u64,
}

impl VxlanCfg {
    /// Bytes VXLAN adds around an inner frame (outer IP, UDP and VXLAN headers, and
    /// the inner Ethernet header the inner MTU leaves out): 50 over IPv4, 70 over
    /// IPv6 (RFC 7348 section 4.3; the kernel's VXLAN_HEADROOM and
    /// VXLAN6_HEADROOM, drivers/net/vxlan).
    pub fn overhead(&self) -> u32 {
        overhead(self.listen.is_ipv6())
    }
}

/// VXLAN's overhead in bytes for an IPv6 (70) or IPv4 (50) underlay; see
/// [`VxlanCfg::overhead`].
pub fn overhead(ipv6: bool) -> u32 {
    if ipv6 {
        70
    } else {
        50
    }
}

/// The key prefix under which tapnet registers in etcd, without `etcd_prefix`.
pub const DEFAULT_ETCD_PREFIX: &str = "/tapnet/";
/// The registration lease's TTL without `etcd_ttl_s`, seconds.
pub const DEFAULT_ETCD_TTL_S: u64 = 10;
/// etcd's client port, when an endpoint gives none.
pub const DEFAULT_ETCD_PORT: u16 = 2379;
