//! The lab file: parsing and validation.
//!
//! Every problem is reported as `FILE:LINE:COL: message`, all of them at once, before
//! anything on the host is touched.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

/// The lab the binary runs when `up` is given no file (`tapnet example` prints it).
pub const DEFAULT_LAB: &str = include_str!("default_lab.toml");

/// A position in the lab file (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// One problem found in a lab file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabError {
    pub file: String,
    pub pos: Pos,
    pub message: String,
}

impl std::fmt::Display for LabError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.pos.line, self.pos.col, self.message)
    }
}

/// A validated lab.
#[derive(Debug, Clone)]
pub struct Lab {
    /// The file it came from, as given (`<default>` for the embedded lab).
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

#[derive(Debug, Clone)]
pub struct BridgeCfg {
    pub pos: Pos,
    pub name: String,
    pub subnet: Option<Subnet>,
    /// Defaults to the first host address of `subnet` when there is one.
    pub gateway: Option<Ipv4Addr>,
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
    /// Defaults to "eth0" with a netns, to the port's name without one.
    pub ifname: String,
    /// Defaults to 02:00 followed by the four bytes of `ip` when it has one, else a
    /// locally administered address hashed from the lab and port names.
    pub mac: [u8; 6],
    pub ip: Option<(Ipv4Addr, u8)>,
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
    pub listen: SocketAddrV4,
    pub to: SocketAddrV4,
}

#[derive(Debug, Clone)]
pub struct ServiceCfg {
    pub pos: Pos,
    pub name: String,
    pub vip: SocketAddrV4,
    pub proto: Proto,
    pub backends: Vec<SocketAddrV4>,
}

#[derive(Debug, Clone)]
pub struct NatCfg {
    pub pos: Pos,
    pub masquerade: bool,
}

#[derive(Debug, Clone)]
pub struct VxlanCfg {
    pub pos: Pos,
    pub listen: SocketAddrV4,
    pub peers: Vec<SocketAddrV4>,
}

/// Parses and validates lab text; `file` names it in every error.
pub fn parse(file: &str, text: &str) -> Result<Lab, Vec<LabError>> {
    todo!("{file} {text}")
}

/// Reads and validates a lab file.
pub fn load(path: &Path) -> Result<Lab, Vec<LabError>> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&file, &text),
        Err(e) => Err(vec![LabError {
            file,
            pos: Pos { line: 1, col: 1 },
            message: format!("cannot read the lab file: {e}"),
        }]),
    }
}
