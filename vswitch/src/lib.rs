//! vswitch: tapnet's datapath core.
//!
//! A sans-IO core (the [`bridge`] and its [`fdb`] decide over frames, tables and `now`)
//! inside a thin IO shell ([`datapath`]: one mio loop over [`port::Port`]s, such as
//! [`tap::Tap`]). Frames live in a [`pool`] allocated at start-up and move by handle.

pub mod bridge;
pub mod counters;
pub mod datapath;
pub mod fdb;
pub mod frame;
pub mod gro;
pub mod guard;
pub mod impair;
pub mod internal;
pub mod pool;
pub mod port;
pub mod shard;
pub mod tap;
pub mod uring;
pub mod wire;

/// The internet checksum (RFC 1071, RFC 1624): `wire::checksum`, kept at this path.
pub use wire::checksum;

pub use bridge::{Bridge, BridgeConfig, BridgeId, Decision};
pub use counters::{DropReason, PortCounters};
pub use datapath::{Datapath, PortInfo, ThreadStats};
pub use fdb::{Fdb, Mac};
pub use internal::{Emitter, Handler, HandlerId, HandlerRef, Traced, Verdict, HANDLER_TOKENS};
pub use port::{Port, PortId};
