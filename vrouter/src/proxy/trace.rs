//! What the host proxy would do with a container's packet, decided without doing it:
//! the same lookups and limits as [`HostProxy::from_container`], for `tapnet trace`.

use std::net::SocketAddr;

use vswitch::wire::icmpv4::{self, IcmpPacket};
use vswitch::wire::icmpv6;
use vswitch::wire::ip::IpHead;
use vswitch::wire::tcp::{TcpPacket, ACK, RST, SYN};
use vswitch::wire::udp::UdpPacket;
use vswitch::wire::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};

use super::icmp::PingMode;
use super::tcp::{PENDING_PER_CONTAINER, PENDING_TOTAL};
use super::{Entry, HostProxy, PROTO_ICMPV6};

/// The proxy's decision over one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyTrace {
    /// Out through a host socket; what happens, said for a person.
    Out(String),
    /// Answered to the container (a reset, an ICMP error), nothing leaves.
    Answered(String),
    /// Dropped, counted under `reason` (as `show nat` names the proxy's counters).
    Dropped { reason: &'static str, why: String },
}

impl HostProxy {
    /// What [`HostProxy::from_container`] would do with `packet` (an IPv4 or IPv6
    /// packet from a container), without doing it.
    /// `sender`: the MAC it came from (whose share it would count against).
    pub fn trace(&self, packet: &[u8], sender: vswitch::Mac) -> ProxyTrace {
        let malformed = || ProxyTrace::Dropped {
            reason: "malformed",
            why: "too short or malformed to carry ports".into(),
        };
        let Some(ip) = IpHead::parse(packet) else {
            return malformed();
        };
        if ip.fragment {
            return malformed();
        }
        let (src, dst) = (ip.src, ip.dst);
        let gateway = self.is_gateway(dst);
        match ip.proto {
            PROTO_TCP => {
                let Some(t) = TcpPacket::new_checked(ip.payload) else {
                    return malformed();
                };
                let key = (
                    PROTO_TCP,
                    SocketAddr::new(src, t.src_port()),
                    SocketAddr::new(dst, t.dst_port()),
                );
                if let Some(&n) = self.flows.get(&key) {
                    let how = match &self.entries[n] {
                        Some(Entry::Tcp(c)) if c.rule.is_some() => "a forwarded connection's",
                        _ => "a masqueraded connection's",
                    };
                    return ProxyTrace::Out(format!(
                        "{how} segment: spliced onto its host socket to {}",
                        key.2
                    ));
                }
                let syn_only = t.flags() & (SYN | ACK | RST) == SYN;
                if !syn_only || gateway {
                    return ProxyTrace::Answered(
                        "no connection for it (nothing listens there): answered with a reset"
                            .into(),
                    );
                }
                if !self.masquerade {
                    return self.no_flow();
                }
                let mine = self.pending.get(&sender).copied().unwrap_or(0);
                if mine >= PENDING_PER_CONTAINER || self.pending_total >= PENDING_TOTAL {
                    return ProxyTrace::Dropped {
                        reason: "syn_limited",
                        why: format!(
                            "too many half-open connections ({PENDING_PER_CONTAINER} per container, {PENDING_TOTAL} in all)"
                        ),
                    };
                }
                if let Some(limited) = self.over_share(sender) {
                    return limited;
                }
                ProxyTrace::Out(format!(
                    "masquerade: a new host connection to {}, the SYN held until it connects",
                    key.2
                ))
            }
            PROTO_UDP => {
                let Some(u) = UdpPacket::new_checked(ip.payload) else {
                    return malformed();
                };
                let key = (
                    PROTO_UDP,
                    SocketAddr::new(src, u.src_port()),
                    SocketAddr::new(dst, u.dst_port()),
                );
                if self.flows.contains_key(&key) {
                    return ProxyTrace::Out(format!("sent on its flow's host socket to {}", key.2));
                }
                if gateway {
                    return ProxyTrace::Answered(format!(
                        "nothing listens on {}: port unreachable from the gateway",
                        key.2
                    ));
                }
                if !self.masquerade {
                    return self.no_flow();
                }
                if let Some(limited) = self.over_share(sender) {
                    return limited;
                }
                ProxyTrace::Out(format!("masquerade: a new host socket to {}", key.2))
            }
            PROTO_ICMP | PROTO_ICMPV6 if (ip.proto == PROTO_ICMP) == src.is_ipv4() => {
                let echo = if src.is_ipv4() {
                    IcmpPacket::new_checked(ip.payload)
                        .is_some_and(|i| i.kind() == icmpv4::ECHO_REQUEST)
                } else {
                    icmpv6::Icmpv6Packet::new_checked(ip.payload)
                        .is_some_and(|i| i.msg_type() == icmpv6::ECHO_REQUEST)
                };
                if !self.masquerade || !echo {
                    return self.no_flow();
                }
                if self.ping == PingMode::None {
                    return ProxyTrace::Dropped {
                        reason: "ping_refused",
                        why: "no ICMP socket may carry it (net.ipv4.ping_group_range): administratively prohibited goes back".into(),
                    };
                }
                // The identifier sits where ICMP and ICMPv6 both keep it.
                let ident = IcmpPacket::new_checked(ip.payload).map_or(0, |i| i.ident());
                let key = (
                    ip.proto,
                    SocketAddr::new(src, ident),
                    SocketAddr::new(dst, 0),
                );
                if !self.flows.contains_key(&key) {
                    if let Some(limited) = self.over_share(sender) {
                        return limited;
                    }
                }
                ProxyTrace::Out(format!(
                    "masquerade: an echo request to {dst} from the host"
                ))
            }
            _ => ProxyTrace::Dropped {
                reason: "not_carried",
                why: "no host socket carries it as sent (an IPv6 extension header, or \
                      another protocol than TCP, UDP and ICMP)"
                    .into(),
            },
        }
    }

    fn no_flow(&self) -> ProxyTrace {
        ProxyTrace::Dropped {
            reason: "no_flow",
            why: "masquerade is off and no forward owns it".into(),
        }
    }

    /// The refusal a new flow from `container` would get past its share.
    fn over_share(&self, container: vswitch::Mac) -> Option<ProxyTrace> {
        let held = self.owned.get(&container).copied().unwrap_or(0);
        (held >= self.max_per_container).then(|| ProxyTrace::Dropped {
            reason: "container_limited",
            why: format!(
                "the container already holds its share of the host flows ({})",
                self.max_per_container
            ),
        })
    }
}
