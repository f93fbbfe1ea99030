//! vrouter: layer 3 for tapnet. A gateway per bridge subnet that answers ARP and ping,
//! routing between subnets (longest-prefix match, TTL, ICMP errors, incremental
//! checksums), plugged into each routed bridge as an internal port.

pub use vswitch::checksum;
pub mod handler;
pub mod nat;
pub mod neighbor;
pub mod proxy;
pub mod reasm;
pub mod route;
pub mod router;

pub use handler::RouterHandler;
pub use router::{Action, Iface, Router, RouterConfig, RouterDrop, RouterStats, Service};
