//! The lab file: parsing and validation.
//!
//! Every problem is reported as `FILE:LINE:COL: message`, all of them at once, before
//! anything on the host is touched.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use toml_edit::{Item, TableLike, Value};

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
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.pos.line, self.pos.col, self.message
        )
    }
}

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
    pub listen: SocketAddrV4,
    pub peers: Vec<SocketAddrV4>,
}

/// Parses and validates lab text; `file` names it in every error.
///
/// Every problem is reported, not just the first, sorted by position; a TOML syntax
/// error stops the parse and is reported alone.
pub fn parse(file: &str, text: &str) -> Result<Lab, Vec<LabError>> {
    let lines = LineIndex::new(text);
    let mut cx = Cx {
        lines: &lines,
        errs: Vec::new(),
    };
    let lab = match toml_edit::Document::parse(text) {
        Ok(doc) => Some(build(&mut cx, file, doc.as_table())),
        Err(e) => {
            let at = e.span().map_or(text.len(), |s| s.start);
            cx.err(at, format!("syntax error: {}", one_line(e.message())));
            None
        }
    };
    match lab {
        Some(lab) if cx.errs.is_empty() => Ok(lab),
        _ => {
            let mut errs = cx.errs;
            errs.sort_by_key(|(at, _)| *at);
            errs.dedup();
            Err(errs
                .into_iter()
                .map(|(at, message)| LabError {
                    file: file.to_string(),
                    pos: lines.pos(at),
                    message,
                })
                .collect())
        }
    }
}

const TOP_KEYS: &[&str] = &[
    "name", "bridge", "port", "forward", "service", "nat", "vxlan",
];
const BRIDGE_KEYS: &[&str] = &[
    "name",
    "subnet",
    "gateway",
    "mtu",
    "vni",
    "fdb_max",
    "fdb_aging_s",
];
const PORT_KEYS: &[&str] = &[
    "name",
    "bridge",
    "netns",
    "ifname",
    "mac",
    "ip",
    "impair",
    "mirror",
    "spoof_check",
];
const FORWARD_KEYS: &[&str] = &["proto", "listen", "to"];
const SERVICE_KEYS: &[&str] = &["name", "vip", "proto", "backends"];
const NAT_KEYS: &[&str] = &[
    "masquerade",
    "max_flows",
    "tcp_timeout_s",
    "tcp_closing_timeout_s",
    "udp_timeout_s",
    "icmp_timeout_s",
];
const VXLAN_KEYS: &[&str] = &["listen", "peers"];

/// Largest inner MTU that still fits a VXLAN frame into a 1500-byte underlay.
/// The default inner MTU of a bridge with a vni: a 1500-byte underlay less VXLAN's 50.
const VXLAN_MTU: i64 = 1450;
/// The largest inner MTU any IPv4 underlay could carry.
const VXLAN_MAX_INNER_MTU: i64 = 65535 - 20 - 8 - 8 - 14;

/// Byte offsets of line starts, to turn a byte offset into a 1-based line and column
/// (the column counted in characters).
struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    fn pos(&self, at: usize) -> Pos {
        let mut at = at.min(self.text.len());
        while !self.text.is_char_boundary(at) {
            at -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= at);
        let start = self.starts[line - 1];
        Pos {
            line,
            col: self.text[start..at].chars().count() + 1,
        }
    }
}

/// A value read from the file, with the byte offset it starts at.
#[derive(Debug, Clone, Copy)]
struct F<T> {
    v: T,
    at: usize,
}

/// One table of the file: the top level, one `[[port]]`, `[nat]`, ...
struct Sec<'a> {
    /// How messages name it: "[[port]]", "the top level".
    what: &'static str,
    t: &'a dyn TableLike,
    /// Where its header starts (where missing keys are reported).
    at: usize,
}

impl<'a> Sec<'a> {
    fn key_at(&self, key: &str) -> usize {
        self.t
            .get_key_value(key)
            .and_then(|(k, _)| k.span())
            .map_or(self.at, |s| s.start)
    }

    /// The item under `key` (if any) and where its value starts.
    fn item(&self, key: &str) -> Option<(&'a Item, usize)> {
        let item = self.t.get(key)?;
        if item.is_none() {
            return None;
        }
        let at = item.span().map_or_else(|| self.key_at(key), |s| s.start);
        Some((item, at))
    }

    fn has(&self, key: &str) -> bool {
        self.item(key).is_some()
    }

    /// "in [[port]]" / "at the top level"
    fn where_(&self) -> String {
        if self.what.starts_with('[') {
            format!("in {}", self.what)
        } else {
            format!("at {}", self.what)
        }
    }
}

struct Cx<'l> {
    lines: &'l LineIndex<'l>,
    errs: Vec<(usize, String)>,
}

impl Cx<'_> {
    fn err(&mut self, at: usize, msg: impl Into<String>) {
        self.errs.push((at, msg.into()));
    }

    fn pos(&self, at: usize) -> Pos {
        self.lines.pos(at)
    }

    fn line(&self, at: usize) -> usize {
        self.lines.pos(at).line
    }

    fn check_keys(&mut self, s: &Sec<'_>, allowed: &[&str]) {
        for (key, _) in s.t.iter() {
            if allowed.contains(&key) {
                continue;
            }
            let mut msg = format!("unknown key {} {}", q(key), s.where_());
            if let Some(close) = suggest(key, allowed) {
                msg.push_str(&format!("; did you mean `{close}`?"));
            } else {
                let list: Vec<String> = allowed.iter().map(|k| format!("`{k}`")).collect();
                msg.push_str(&format!(" (expected one of {})", list.join(", ")));
            }
            self.err(s.key_at(key), msg);
        }
    }

    fn require(&mut self, s: &Sec<'_>, keys: &[&str]) {
        for key in keys {
            if !s.has(key) {
                self.err(s.at, format!("missing required key `{key}` {}", s.where_()));
            }
        }
    }

    fn type_err(&mut self, at: usize, key: &str, expected: &str, item: &Item) {
        self.err(
            at,
            format!("`{key}` must be {expected}, not {}", a_type(item)),
        );
    }

    fn str_<'a>(&mut self, s: &Sec<'a>, key: &str) -> Option<F<&'a str>> {
        let (item, at) = s.item(key)?;
        match item.as_str() {
            Some(v) => Some(F { v, at }),
            None => {
                self.type_err(at, key, "a string", item);
                None
            }
        }
    }

    fn bool_(&mut self, s: &Sec<'_>, key: &str) -> Option<F<bool>> {
        let (item, at) = s.item(key)?;
        match item.as_bool() {
            Some(v) => Some(F { v, at }),
            None => {
                self.type_err(at, key, "true or false", item);
                None
            }
        }
    }

    /// An integer in `lo..=hi`.
    fn int(&mut self, s: &Sec<'_>, key: &str, lo: i64, hi: i64) -> Option<F<i64>> {
        let (item, at) = s.item(key)?;
        match item.as_integer() {
            Some(v) if (lo..=hi).contains(&v) => Some(F { v, at }),
            Some(v) => {
                self.err(
                    at,
                    format!("`{key}` must be between {lo} and {hi}, not {v}"),
                );
                None
            }
            None => {
                self.type_err(at, key, "an integer", item);
                None
            }
        }
    }

    /// An array of strings (elements of other types are reported and skipped).
    fn str_list<'a>(&mut self, s: &Sec<'a>, key: &str) -> Option<F<Vec<F<&'a str>>>> {
        let (item, at) = s.item(key)?;
        let Some(arr) = item.as_array() else {
            self.type_err(at, key, "an array of strings", item);
            return None;
        };
        let mut out = Vec::new();
        for v in arr.iter() {
            let vat = v.span().map_or(at, |s| s.start);
            match v.as_str() {
                Some(x) => out.push(F { v: x, at: vat }),
                None => self.err(
                    vat,
                    format!(
                        "each element of `{key}` must be a string, not {}",
                        a_value_type(v)
                    ),
                ),
            }
        }
        Some(F { v: out, at })
    }

    fn proto(&mut self, s: &Sec<'_>) -> Option<Proto> {
        let p = self.str_(s, "proto")?;
        match p.v {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            other => {
                self.err(
                    p.at,
                    format!("`proto` must be \"tcp\" or \"udp\", not {}", q(other)),
                );
                None
            }
        }
    }

    /// Parses one "ip:port" string; `what` names it in messages.
    fn sockaddr(&mut self, f: F<&str>, what: &str, example: &str) -> Option<SocketAddrV4> {
        match f.v.parse::<SocketAddrV4>() {
            Ok(a) if a.port() == 0 => {
                self.err(
                    f.at,
                    format!("{what} {a}: the port must be between 1 and 65535"),
                );
                None
            }
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    f.at,
                    format!(
                        "{what} must be an IPv4 address and port like \"{example}\", not {}",
                        q(f.v)
                    ),
                );
                None
            }
        }
    }

    /// A forward's `listen`: "ip:port", or a bare port ("8080") meaning every address
    /// of the host (0.0.0.0), as `docker -p 8080:80` does.
    fn listen_addr(&mut self, f: F<&str>) -> Option<SocketAddrV4> {
        if f.v.is_empty() || !f.v.bytes().all(|b| b.is_ascii_digit()) {
            if f.v.parse::<SocketAddrV4>().is_err() {
                self.err(
                    f.at,
                    format!(
                        "`listen` must be a port like \"8080\" or an IPv4 address and port \
                         like \"127.0.0.1:8080\", not {}",
                        q(f.v)
                    ),
                );
                return None;
            }
            return self.sockaddr(f, "`listen`", "127.0.0.1:8080");
        }
        match f.v.parse::<u16>() {
            Ok(port) if port > 0 => Some(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)),
            _ => {
                self.err(
                    f.at,
                    format!(
                        "`listen` port {}: the port must be between 1 and 65535",
                        q(f.v)
                    ),
                );
                None
            }
        }
    }

    /// The tables of an array of tables (`[[port]]`, or `port = [{...}, ...]`).
    fn array<'a>(&mut self, root: &Sec<'a>, key: &'static str, what: &'static str) -> Vec<Sec<'a>> {
        let Some((item, at)) = root.item(key) else {
            return Vec::new();
        };
        match item {
            Item::ArrayOfTables(aot) => aot
                .iter()
                .map(|t| Sec {
                    what,
                    t,
                    at: t.span().map_or(at, |s| s.start),
                })
                .collect(),
            Item::Value(Value::Array(arr)) => {
                let mut out = Vec::new();
                for v in arr.iter() {
                    let vat = v.span().map_or(at, |s| s.start);
                    match v.as_inline_table() {
                        Some(t) => out.push(Sec { what, t, at: vat }),
                        None => self.err(
                            vat,
                            format!(
                                "each element of `{key}` must be a table ({what}), not {}",
                                a_value_type(v)
                            ),
                        ),
                    }
                }
                out
            }
            _ => {
                self.type_err(at, key, &format!("an array of tables ({what})"), item);
                Vec::new()
            }
        }
    }

    /// A single table (`[nat]` or `nat = {...}`).
    fn table<'a>(
        &mut self,
        root: &Sec<'a>,
        key: &'static str,
        what: &'static str,
    ) -> Option<Sec<'a>> {
        let (item, at) = root.item(key)?;
        match item.as_table_like() {
            Some(t) => Some(Sec { what, t, at }),
            None => {
                self.type_err(at, key, &format!("a table ({what})"), item);
                None
            }
        }
    }
}

/// What the bridge checks leave for the port, service and forward checks.
struct BInfo<'a> {
    name: Option<&'a str>,
    /// Network address and prefix of a valid `subnet`.
    net: Option<(u32, u8)>,
    /// `subnet` is present (valid or not).
    has_subnet: bool,
    gateway: Option<u32>,
}

struct PInfo<'a> {
    name: Option<&'a str>,
    ip: Option<Ipv4Addr>,
    mac: Option<[u8; 6]>,
    /// (netns, ifname) when both are valid.
    iface: Option<(Option<&'a str>, String)>,
}

impl PInfo<'_> {
    fn label(&self) -> String {
        port_label(self.name)
    }
}

struct SInfo<'a> {
    name: Option<&'a str>,
    proto: Option<Proto>,
    vip: Option<SocketAddrV4>,
    backends: Vec<F<SocketAddrV4>>,
}

fn build(cx: &mut Cx<'_>, file: &str, root_t: &toml_edit::Table) -> Lab {
    let root = Sec {
        what: "the top level",
        t: root_t,
        at: 0,
    };
    cx.check_keys(&root, TOP_KEYS);
    cx.require(&root, &["name"]);
    let mut lab_name = "";
    if let Some(n) = cx.str_(&root, "name") {
        if valid_name(n.v, 32) {
            lab_name = n.v;
        } else {
            cx.err(
                n.at,
                format!(
                    "lab name {} must be 1 to 32 characters of A-Z a-z 0-9 _ . -",
                    q(n.v)
                ),
            );
        }
    }
    let has_vxlan = root.has("vxlan");

    let (bridges, binfo) = bridges(cx, &root, has_vxlan);
    let (ports, pinfo, ports_incomplete) = ports(cx, &root, lab_name, &binfo);
    let subnets_incomplete = binfo.iter().any(|b| b.has_subnet && b.net.is_none());
    let (services, sinfo, services_incomplete) =
        services(cx, &root, &binfo, &pinfo, subnets_incomplete);
    let forwards = forwards(
        cx,
        &root,
        &binfo,
        &pinfo,
        &sinfo,
        ports_incomplete || services_incomplete,
    );

    let nat = cx.table(&root, "nat", "[nat]").map(|s| {
        cx.check_keys(&s, NAT_KEYS);
        let mut secs = |key: &str, hi: i64, default: u64| {
            cx.int(&s, key, 1, hi).map_or(default, |t| t.v as u64)
        };
        let tcp_timeout_s = secs("tcp_timeout_s", 2_592_000, DEFAULT_NAT_TCP_TIMEOUT_S);
        let tcp_closing_timeout_s = secs(
            "tcp_closing_timeout_s",
            3600,
            DEFAULT_NAT_TCP_CLOSING_TIMEOUT_S,
        );
        let udp_timeout_s = secs("udp_timeout_s", 86_400, DEFAULT_NAT_UDP_TIMEOUT_S);
        let icmp_timeout_s = secs("icmp_timeout_s", 86_400, DEFAULT_NAT_ICMP_TIMEOUT_S);
        let read = cx.bool_(&s, "masquerade");
        let masquerade = read.is_none_or(|m| m.v);
        let readable = read.is_some() || !s.has("masquerade");
        if masquerade && readable && !binfo.iter().any(|b| b.has_subnet) {
            cx.err(
                s.at,
                "masquerade needs a bridge with a `subnet`: its gateway is the containers' way out",
            );
        }
        NatCfg {
            pos: cx.pos(s.at),
            masquerade,
            max_flows: cx
                .int(&s, "max_flows", 16, 4_000_000)
                .map_or(DEFAULT_NAT_MAX_FLOWS, |m| m.v as usize),
            tcp_timeout_s,
            tcp_closing_timeout_s,
            udp_timeout_s,
            icmp_timeout_s,
        }
    });
    let vxlan = cx
        .table(&root, "vxlan", "[vxlan]")
        .and_then(|s| vxlan(cx, &s));

    Lab {
        file: file.to_string(),
        name: lab_name.to_string(),
        bridges,
        ports,
        forwards,
        services,
        nat,
        vxlan,
    }
}

fn bridges<'a>(
    cx: &mut Cx<'_>,
    root: &Sec<'a>,
    has_vxlan: bool,
) -> (Vec<BridgeCfg>, Vec<BInfo<'a>>) {
    let mut cfgs = Vec::new();
    let mut infos: Vec<BInfo<'a>> = Vec::new();
    let mut name_lines: Vec<usize> = Vec::new();
    let mut vnis: Vec<(u32, Option<&str>)> = Vec::new();
    for s in cx.array(root, "bridge", "[[bridge]]") {
        cx.check_keys(&s, BRIDGE_KEYS);
        cx.require(&s, &["name"]);
        let name = cx.str_(&s, "name");
        if let Some(n) = name {
            if !valid_name(n.v, 15) {
                cx.err(
                    n.at,
                    format!(
                        "bridge name {} must be 1 to 15 characters of A-Z a-z 0-9 _ . -",
                        q(n.v)
                    ),
                );
            } else if let Some(i) = infos.iter().position(|b| b.name == Some(n.v)) {
                cx.err(
                    n.at,
                    format!(
                        "duplicate bridge name {} (first defined on line {})",
                        q(n.v),
                        name_lines[i]
                    ),
                );
            }
        }
        let label = name.map_or_else(
            || "this bridge".to_string(),
            |n| format!("bridge {}", q(n.v)),
        );

        // subnet
        let mut net = None;
        if let Some(sn) = cx.str_(&s, "subnet") {
            match parse_cidr(sn.v) {
                None => cx.err(
                    sn.at,
                    format!(
                        "`subnet` must be an IPv4 network like \"172.16.1.0/24\", not {}",
                        q(sn.v)
                    ),
                ),
                Some((ip, p)) => {
                    let a = u32::from(ip);
                    let n = a & mask(p);
                    if n != a {
                        cx.err(
                            sn.at,
                            format!(
                                "subnet {ip}/{p} has host bits set; did you mean {}/{p}?",
                                Ipv4Addr::from(n)
                            ),
                        );
                    } else if p > 30 {
                        cx.err(
                            sn.at,
                            format!(
                                "subnet {ip}/{p} has no room for a gateway and hosts; \
                                 use a prefix of at most 30"
                            ),
                        );
                    } else if let Some(r) = reserved_overlap(n, p) {
                        cx.err(
                            sn.at,
                            format!("subnet {ip}/{p} overlaps {r}, which a bridge cannot use"),
                        );
                    } else {
                        for other in &infos {
                            if let Some((on, op)) = other.net {
                                let m = mask(p.min(op));
                                if n & m == on & m {
                                    cx.err(
                                        sn.at,
                                        format!(
                                            "subnet {ip}/{p} overlaps subnet {}/{op} of {}",
                                            Ipv4Addr::from(on),
                                            bridge_label(other.name)
                                        ),
                                    );
                                }
                            }
                        }
                        net = Some((n, p));
                    }
                }
            }
        }
        let has_subnet = s.has("subnet");

        // gateway
        let mut gateway = net.map(|(n, _)| n + 1);
        if let Some(g) = cx.str_(&s, "gateway") {
            gateway = None;
            match g.v.parse::<Ipv4Addr>() {
                Err(_) => cx.err(
                    g.at,
                    format!(
                        "`gateway` must be an IPv4 address like \"172.16.1.1\", not {}",
                        q(g.v)
                    ),
                ),
                Ok(a) => {
                    let a32 = u32::from(a);
                    if !has_subnet {
                        cx.err(
                            g.at,
                            format!("`gateway` needs a `subnet` on {label} to live in"),
                        );
                    } else if let Some((n, p)) = net {
                        let sn = cidr(n, p);
                        if a32 & mask(p) != n {
                            cx.err(g.at, format!("gateway {a} is outside subnet {sn}"));
                        } else if a32 == n {
                            cx.err(
                                g.at,
                                format!("gateway {a} is the network address of subnet {sn}"),
                            );
                        } else if a32 == broadcast(n, p) {
                            cx.err(
                                g.at,
                                format!("gateway {a} is the broadcast address of subnet {sn}"),
                            );
                        } else {
                            gateway = Some(a32);
                        }
                    }
                }
            }
        } else if s.has("gateway") {
            gateway = None;
        }

        // vni, mtu, fdb
        let has_vni = s.has("vni");
        let vni = cx.int(&s, "vni", 1, 16_777_215);
        if let Some(v) = vni {
            let v32 = v.v as u32;
            if let Some((_, other)) = vnis.iter().find(|(x, _)| *x == v32) {
                cx.err(
                    v.at,
                    format!("vni {v32} is already used by {}", bridge_label(*other)),
                );
            }
            vnis.push((v32, name.map(|n| n.v)));
            if !has_vxlan {
                cx.err(
                    v.at,
                    format!(
                        "{label} has vni {v32}, but there is no [vxlan] table \
                         (`listen` and `peers`) to carry it"
                    ),
                );
            }
        }
        // A TAP takes at most 65535 less its Ethernet header (tun's MAX_MTU).
        let mtu = cx.int(&s, "mtu", 68, MAX_TAP_MTU);
        if let Some(m) = mtu {
            // Whether the underlay carries it is known only at `up`, from its MTU;
            // here only what no IPv4 underlay could carry is refused.
            if has_vni && m.v > VXLAN_MAX_INNER_MTU {
                cx.err(
                    m.at,
                    format!(
                        "mtu {} leaves no room for the 50 bytes of VXLAN encapsulation \
                         in a 64 KiB datagram; use at most {VXLAN_MAX_INNER_MTU}",
                        m.v
                    ),
                );
            }
        }
        let fdb_max = cx.int(&s, "fdb_max", 1, 1_000_000);
        let fdb_aging_s = cx.int(&s, "fdb_aging_s", 1, 86_400);

        cfgs.push(BridgeCfg {
            pos: cx.pos(s.at),
            name: name.map_or_else(String::new, |n| n.v.to_string()),
            subnet: net.map(|(n, p)| Subnet {
                addr: Ipv4Addr::from(n),
                prefix: p,
            }),
            gateway: gateway.map(Ipv4Addr::from),
            mtu: mtu.map_or(if has_vni { VXLAN_MTU as u32 } else { 1500 }, |m| {
                m.v as u32
            }),
            vni: vni.map(|v| (v.v as u32, cx.pos(v.at))),
            fdb_max: fdb_max.map_or(8192, |f| f.v as usize),
            fdb_aging_s: fdb_aging_s.map_or(300, |f| f.v as u64),
        });
        name_lines.push(cx.line(name.map_or(s.at, |n| n.at)));
        infos.push(BInfo {
            name: name.map(|n| n.v),
            net,
            has_subnet,
            gateway,
        });
    }
    (cfgs, infos)
}

/// Returns the ports, what later checks need of them, and whether some port's `ip`
/// could not be read (so "no port holds that address" cannot be trusted).
fn ports<'a>(
    cx: &mut Cx<'_>,
    root: &Sec<'a>,
    lab_name: &str,
    binfo: &[BInfo<'_>],
) -> (Vec<PortCfg>, Vec<PInfo<'a>>, bool) {
    let mut cfgs = Vec::new();
    let mut infos: Vec<PInfo<'a>> = Vec::new();
    let mut name_lines: Vec<usize> = Vec::new();
    let mut incomplete = false;
    let mut mirrors: Vec<&str> = Vec::new();
    for s in cx.array(root, "port", "[[port]]") {
        cx.check_keys(&s, PORT_KEYS);
        cx.require(&s, &["name", "bridge"]);
        let name = cx.str_(&s, "name");
        let mut name_ok = false;
        if let Some(n) = name {
            if !valid_name(n.v, 15) {
                cx.err(
                    n.at,
                    format!(
                        "port name {} must be 1 to 15 characters of A-Z a-z 0-9 _ . -",
                        q(n.v)
                    ),
                );
            } else if n.v == "underlay" {
                cx.err(
                    n.at,
                    "port name `underlay` is taken: `tapnet capture underlay` means VXLAN's underlay"
                        .to_string(),
                );
            } else if let Some(i) = infos.iter().position(|p| p.name == Some(n.v)) {
                cx.err(
                    n.at,
                    format!(
                        "duplicate port name {} (first defined on line {})",
                        q(n.v),
                        name_lines[i]
                    ),
                );
            } else {
                name_ok = true;
            }
        }
        let label = name.map_or_else(|| "this port".to_string(), |n| format!("port {}", q(n.v)));

        let bridge = cx.str_(&s, "bridge");
        let mut br = None;
        if let Some(b) = bridge {
            br = binfo.iter().find(|x| x.name == Some(b.v));
            // A bridge whose name could not be read may be the one meant.
            if br.is_none() && binfo.iter().all(|x| x.name.is_some()) {
                cx.err(
                    b.at,
                    format!(
                        "{label} names bridge {}, which no [[bridge]] defines",
                        q(b.v)
                    ),
                );
            }
        }

        // netns and ifname
        let netns = cx.str_(&s, "netns");
        let mut netns_ok = !s.has("netns") || netns.is_some();
        if let Some(ns) = netns {
            if !valid_netns(ns.v) {
                netns_ok = false;
                cx.err(
                    ns.at,
                    format!(
                        "netns name {} must be 1 to 255 bytes, without `/`, and not `.` or `..`",
                        q(ns.v)
                    ),
                );
            }
        }
        let ifname = cx.str_(&s, "ifname");
        let mut ifname_ok = if s.has("ifname") {
            ifname.is_some()
        } else {
            netns.is_some() || name_ok
        };
        if let Some(i) = ifname {
            if !valid_ifname(i.v) {
                ifname_ok = false;
                cx.err(
                    i.at,
                    format!(
                        "ifname {} is not a valid interface name (1 to 15 bytes, \
                         no `/`, `:` or whitespace, not `.` or `..`)",
                        q(i.v)
                    ),
                );
            }
        }
        let ifname_v = match (ifname, netns) {
            (Some(i), _) => i.v.to_string(),
            (None, Some(_)) => "eth0".to_string(),
            (None, None) => name.map_or_else(String::new, |n| n.v.to_string()),
        };
        let mut iface = None;
        if netns_ok && ifname_ok {
            let key = (netns.map(|n| n.v), ifname_v.clone());
            if let Some(other) = infos.iter().find(|p| p.iface.as_ref() == Some(&key)) {
                let at = ifname
                    .map(|i| i.at)
                    .or(netns.map(|n| n.at))
                    .or(name.map(|n| n.at))
                    .unwrap_or(s.at);
                let place = match key.0 {
                    Some(ns) => format!("netns {}", q(ns)),
                    None => "tapnet's own namespace".to_string(),
                };
                let hint = if ifname.is_none() {
                    "; give one of them an `ifname`"
                } else {
                    ""
                };
                cx.err(
                    at,
                    format!(
                        "interface {} in {place} is already used by {}{hint}",
                        q(&key.1),
                        other.label()
                    ),
                );
            } else {
                iface = Some(key);
            }
        }

        // ip
        let ipf = cx.str_(&s, "ip");
        if s.has("ip") && ipf.is_none() {
            incomplete = true;
        }
        let mut ip = None;
        let mut ip_dup = false;
        if let Some(f) = ipf {
            match parse_cidr(f.v) {
                None => {
                    incomplete = true;
                    cx.err(
                        f.at,
                        format!(
                            "`ip` must be an IPv4 address with prefix like \"172.16.1.3/24\", \
                             not {}",
                            q(f.v)
                        ),
                    );
                }
                Some((a, p)) => {
                    if let Some(msg) = check_port_ip(a, p, br) {
                        cx.err(f.at, msg);
                    }
                    if let Some(other) = infos.iter().find(|o| o.ip == Some(a)) {
                        ip_dup = true;
                        cx.err(f.at, format!("ip {a} is already used by {}", other.label()));
                    }
                    ip = Some((a, p));
                }
            }
        }

        // mac
        let macf = cx.str_(&s, "mac");
        let mut mac = None;
        let mut mac_at = s.at;
        let mut mac_what = "mac";
        if let Some(m) = macf {
            mac_at = m.at;
            match parse_mac(m.v) {
                None => cx.err(
                    m.at,
                    format!(
                        "`mac` must be six hex bytes like \"02:00:ac:10:01:03\", not {}",
                        q(m.v)
                    ),
                ),
                Some(x) if x == [0; 6] => {
                    cx.err(m.at, "mac 00:00:00:00:00:00 is not a usable address")
                }
                Some(x) if x[0] & 1 == 1 => cx.err(
                    m.at,
                    format!(
                        "mac {} is a multicast address; a port needs a unicast mac \
                         (first byte even)",
                        fmt_mac(&x)
                    ),
                ),
                Some(x) => mac = Some(x),
            }
        } else if !s.has("mac") {
            mac_what = "default mac";
            // A default derived from a duplicate (or unreadable) `ip` or `name` would
            // only repeat the error already reported for those.
            if let Some((a, _)) = ip {
                if !ip_dup {
                    let o = a.octets();
                    mac = Some([0x02, 0x00, o[0], o[1], o[2], o[3]]);
                    mac_at = ipf.map_or(s.at, |f| f.at);
                }
            } else if !s.has("ip") && name_ok {
                mac = Some(hashed_mac(lab_name, name.map_or("", |n| n.v)));
            }
        }
        if let Some(m) = mac {
            if let Some(other) = infos.iter().find(|o| o.mac == Some(m)) {
                let hint = if mac_what == "mac" {
                    ""
                } else {
                    "; set `mac` to another address"
                };
                cx.err(
                    mac_at,
                    format!(
                        "{mac_what} {} of {label} is already used by {}{hint}",
                        fmt_mac(&m),
                        other.label()
                    ),
                );
                mac = None;
            }
        }

        let mirror = cx.str_(&s, "mirror").and_then(|m| {
            if mirrors.contains(&m.v) {
                cx.err(m.at, format!("mirror {} is already another port's mirror", q(m.v)));
                None
            } else if valid_ifname(m.v) {
                mirrors.push(m.v);
                Some(m.v.to_string())
            } else {
                cx.err(
                    m.at,
                    format!(
                        "mirror {} is not a valid interface name (1 to 15 bytes, no `/`, `:` or whitespace)",
                        q(m.v)
                    ),
                );
                None
            }
        });
        let impair = cx.str_(&s, "impair").and_then(|f| {
            vswitch::impair::Impairment::parse(f.v)
                .map_err(|e| cx.err(f.at, format!("`impair`: {e}")))
                .ok()
        });
        let spoof_check = cx.bool_(&s, "spoof_check").map_or(ip.is_some(), |f| f.v);
        cfgs.push(PortCfg {
            impair,
            mirror,
            spoof_check,
            pos: cx.pos(s.at),
            name: name.map_or_else(String::new, |n| n.v.to_string()),
            bridge: bridge.map_or_else(String::new, |b| b.v.to_string()),
            netns: netns.map(|n| n.v.to_string()),
            ifname: ifname_v,
            mac: mac.unwrap_or_default(),
            ip,
        });
        name_lines.push(cx.line(name.map_or(s.at, |n| n.at)));
        infos.push(PInfo {
            name: if name_ok { name.map(|n| n.v) } else { None },
            ip: ip.map(|(a, _)| a),
            mac,
            iface,
        });
    }
    (cfgs, infos, incomplete)
}

/// Checks a port's address against its bridge (when that bridge exists).
fn check_port_ip(a: Ipv4Addr, p: u8, br: Option<&BInfo<'_>>) -> Option<String> {
    let br = br?;
    let a32 = u32::from(a);
    match br.net {
        Some((n, np)) => {
            let sn = cidr(n, np);
            let of = bridge_label(br.name);
            if a32 & mask(np) != n {
                Some(format!("ip {a}/{p} is outside subnet {sn} of {of}"))
            } else if p != np {
                Some(format!(
                    "ip {a}/{p} must have the prefix of subnet {sn} of {of}: use {a}/{np}"
                ))
            } else if a32 == n {
                Some(format!("ip {a}/{p} is the network address of subnet {sn}"))
            } else if a32 == broadcast(n, np) {
                Some(format!(
                    "ip {a}/{p} is the broadcast address of subnet {sn}"
                ))
            } else if Some(a32) == br.gateway {
                Some(format!("ip {a}/{p} is the gateway of {of}"))
            } else {
                None
            }
        }
        None if br.has_subnet => None,
        None => {
            let n = a32 & mask(p);
            if reserved_overlap(a32, 32).is_some() {
                Some(format!("ip {a}/{p} is not a usable unicast address"))
            } else if p <= 30 && a32 == n {
                Some(format!(
                    "ip {a}/{p} is the network address of {}/{p}",
                    Ipv4Addr::from(n)
                ))
            } else if p <= 30 && a32 == broadcast(n, p) {
                Some(format!(
                    "ip {a}/{p} is the broadcast address of {}/{p}",
                    Ipv4Addr::from(n)
                ))
            } else {
                None
            }
        }
    }
}

/// Returns the services, what the forward checks need, and whether some VIP could not
/// be read.
fn services<'a>(
    cx: &mut Cx<'_>,
    root: &Sec<'a>,
    binfo: &[BInfo<'_>],
    pinfo: &[PInfo<'_>],
    subnets_incomplete: bool,
) -> (Vec<ServiceCfg>, Vec<SInfo<'a>>, bool) {
    let mut cfgs = Vec::new();
    let mut infos: Vec<SInfo<'a>> = Vec::new();
    let mut name_lines: Vec<usize> = Vec::new();
    let mut incomplete = false;
    for s in cx.array(root, "service", "[[service]]") {
        cx.check_keys(&s, SERVICE_KEYS);
        cx.require(&s, &["name", "vip", "proto", "backends"]);
        let name = cx.str_(&s, "name");
        let mut name_ok = false;
        if let Some(n) = name {
            if !valid_name(n.v, 32) {
                cx.err(
                    n.at,
                    format!(
                        "service name {} must be 1 to 32 characters of A-Z a-z 0-9 _ . -",
                        q(n.v)
                    ),
                );
            } else if let Some(i) = infos.iter().position(|x| x.name == Some(n.v)) {
                cx.err(
                    n.at,
                    format!(
                        "duplicate service name {} (first defined on line {})",
                        q(n.v),
                        name_lines[i]
                    ),
                );
            } else {
                name_ok = true;
            }
        }
        let proto = cx.proto(&s);

        let mut vip = None;
        let vipf = cx.str_(&s, "vip");
        if let Some(f) = vipf {
            vip = cx.sockaddr(f, "`vip`", "172.16.1.100:80");
            if let Some(v) = vip {
                let a = *v.ip();
                let a32 = u32::from(a);
                let msg = match binfo.iter().find(|b| in_net(a32, b.net)) {
                    None if subnets_incomplete => None,
                    None => Some(format!("vip {v} is not inside any bridge's subnet")),
                    Some(b) => {
                        let (n, p) = b.net.unwrap_or_default();
                        if a32 == n {
                            Some(format!(
                                "vip {v} is the network address of subnet {}",
                                cidr(n, p)
                            ))
                        } else if a32 == broadcast(n, p) {
                            Some(format!(
                                "vip {v} is the broadcast address of subnet {}",
                                cidr(n, p)
                            ))
                        } else if b.gateway == Some(a32) {
                            Some(format!(
                                "vip {v} is the gateway of {}",
                                bridge_label(b.name)
                            ))
                        } else {
                            pinfo
                                .iter()
                                .find(|p| p.ip == Some(a))
                                .map(|p| format!("vip {v} uses the address of {}", p.label()))
                        }
                    }
                };
                if let Some(msg) = msg {
                    cx.err(f.at, msg);
                }
                if let Some(other) = infos
                    .iter()
                    .find(|o| o.vip == Some(v) && proto.is_some() && o.proto == proto)
                {
                    cx.err(
                        f.at,
                        format!(
                            "{} vip {v} is already used by {}",
                            proto_name(proto),
                            service_label(other.name)
                        ),
                    );
                }
            }
        }
        if vip.is_none() && s.has("vip") {
            incomplete = true;
        }

        let mut backends = Vec::new();
        if let Some(list) = cx.str_list(&s, "backends") {
            if list.v.is_empty() {
                cx.err(
                    list.at,
                    "`backends` must list at least one \"ip:port\" address",
                );
            }
            for f in list.v {
                if let Some(b) = cx.sockaddr(f, "each backend", "172.16.1.3:80") {
                    if backends.iter().any(|x: &F<SocketAddrV4>| x.v == b) {
                        cx.err(f.at, format!("backend {b} is listed twice"));
                    } else {
                        backends.push(F { v: b, at: f.at });
                    }
                }
            }
        }

        cfgs.push(ServiceCfg {
            pos: cx.pos(s.at),
            name: name.map_or_else(String::new, |n| n.v.to_string()),
            vip: vip.unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            proto: proto.unwrap_or(Proto::Tcp),
            backends: backends.iter().map(|b| b.v).collect(),
        });
        name_lines.push(cx.line(name.map_or(s.at, |n| n.at)));
        infos.push(SInfo {
            name: if name_ok { name.map(|n| n.v) } else { None },
            proto,
            vip,
            backends,
        });
    }

    // Backends, now that every VIP is known.
    for svc in &infos {
        for b in &svc.backends {
            let a = *b.v.ip();
            let a32 = u32::from(a);
            if pinfo.iter().any(|p| p.ip == Some(a)) {
                continue;
            }
            let msg = if let Some(other) = infos.iter().find(|o| o.vip.map(|v| *v.ip()) == Some(a))
            {
                Some(format!(
                    "backend {} is the vip of {}, not a host",
                    b.v,
                    service_label(other.name)
                ))
            } else if let Some(br) = binfo.iter().find(|x| in_net(a32, x.net)) {
                let (n, p) = br.net.unwrap_or_default();
                if br.gateway == Some(a32) {
                    Some(format!(
                        "backend {} is the gateway of {}",
                        b.v,
                        bridge_label(br.name)
                    ))
                } else if a32 == n || a32 == broadcast(n, p) {
                    Some(format!(
                        "backend {} is not a host address of subnet {}",
                        b.v,
                        cidr(n, p)
                    ))
                } else {
                    None
                }
            } else if subnets_incomplete {
                None
            } else {
                Some(format!(
                    "backend {} is not inside any bridge's subnet and no port holds it",
                    b.v
                ))
            };
            if let Some(msg) = msg {
                cx.err(b.at, msg);
            }
        }
    }
    (cfgs, infos, incomplete)
}

fn forwards(
    cx: &mut Cx<'_>,
    root: &Sec<'_>,
    binfo: &[BInfo<'_>],
    pinfo: &[PInfo<'_>],
    sinfo: &[SInfo<'_>],
    targets_incomplete: bool,
) -> Vec<ForwardCfg> {
    let mut cfgs = Vec::new();
    // (proto, listen port, line of the first)
    let mut seen: Vec<(Proto, u16, usize)> = Vec::new();
    for s in cx.array(root, "forward", "[[forward]]") {
        cx.check_keys(&s, FORWARD_KEYS);
        cx.require(&s, &["listen", "to"]);
        // `proto` may be left out: tcp, as `docker -p` does.
        let proto = if s.has("proto") {
            cx.proto(&s)
        } else {
            Some(Proto::Tcp)
        };
        let listen = cx.str_(&s, "listen").and_then(|f| {
            Some(F {
                v: cx.listen_addr(f)?,
                at: f.at,
            })
        });
        let to = cx.str_(&s, "to").and_then(|f| {
            Some(F {
                v: cx.sockaddr(f, "`to`", "172.16.1.3:80")?,
                at: f.at,
            })
        });
        if let (Some(p), Some(l)) = (proto, listen) {
            if let Some((_, _, line)) = seen
                .iter()
                .find(|(sp, port, _)| *sp == p && *port == l.v.port())
            {
                cx.err(
                    l.at,
                    format!(
                        "{} port {} is already forwarded by the [[forward]] on line {line}",
                        proto_name(Some(p)),
                        l.v.port()
                    ),
                );
            } else {
                seen.push((p, l.v.port(), cx.line(s.at)));
            }
        }
        if let Some(t) = to {
            let held = pinfo.iter().any(|p| p.ip == Some(*t.v.ip()))
                || sinfo.iter().any(|x| {
                    x.vip == Some(t.v) && (proto.is_none() || x.proto.is_none() || x.proto == proto)
                });
            let routed = binfo.iter().any(|b| in_net(u32::from(*t.v.ip()), b.net));
            let subnets_incomplete = binfo.iter().any(|b| b.has_subnet && b.net.is_none());
            if !held && !targets_incomplete {
                cx.err(
                    t.at,
                    format!("forward to {}: no port or service holds that address", t.v),
                );
            } else if held && !routed && !subnets_incomplete {
                cx.err(
                    t.at,
                    format!(
                        "forward to {}: that address is on no bridge with a `subnet`, so its \
                         replies could not come back (give its bridge a `subnet`)",
                        t.v
                    ),
                );
            }
        }
        if let (Some(proto), Some(listen), Some(to)) = (proto, listen, to) {
            cfgs.push(ForwardCfg {
                pos: cx.pos(s.at),
                proto,
                listen: listen.v,
                to: to.v,
            });
        }
    }
    cfgs
}

fn vxlan(cx: &mut Cx<'_>, s: &Sec<'_>) -> Option<VxlanCfg> {
    cx.check_keys(s, VXLAN_KEYS);
    cx.require(s, &["listen", "peers"]);
    let listen = cx.str_(s, "listen").and_then(|f| {
        cx.sockaddr(f, "`listen`", "192.0.2.1:4789")
            .map(|v| F { v, at: f.at })
    });
    if let Some(l) = listen {
        let ip = *l.v.ip();
        if ip.is_multicast() || ip.is_broadcast() {
            cx.err(
                l.at,
                format!("`listen` {} must be a unicast address (or 0.0.0.0)", l.v),
            );
        }
    }
    let mut peers: Vec<SocketAddrV4> = Vec::new();
    if let Some(list) = cx.str_list(s, "peers") {
        if list.v.is_empty() {
            cx.err(
                list.at,
                "`peers` must list at least one \"ip:port\" tunnel endpoint",
            );
        }
        for f in list.v {
            let Some(p) = cx.sockaddr(f, "each peer", "192.0.2.2:4789") else {
                continue;
            };
            let ip = *p.ip();
            if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
                cx.err(f.at, format!("peer {p} must be a unicast address"));
            } else if peers.contains(&p) {
                cx.err(f.at, format!("peer {p} is listed twice"));
            } else if listen.is_some_and(|l| l.v == p) {
                cx.err(
                    f.at,
                    format!("peer {p} is this host's own `listen` address"),
                );
            } else {
                peers.push(p);
            }
        }
    }
    Some(VxlanCfg {
        pos: cx.pos(s.at),
        listen: listen?.v,
        peers,
    })
}

// ---- small helpers -------------------------------------------------------------------

/// `text` quoted for a one-line message: backticks, escapes, at most 40 characters.
fn q(text: &str) -> String {
    let esc: String = text.escape_debug().collect();
    if esc.chars().count() > 40 {
        let cut: String = esc.chars().take(37).collect();
        format!("`{cut}...`")
    } else {
        format!("`{esc}`")
    }
}

fn one_line(msg: &str) -> String {
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn port_label(name: Option<&str>) -> String {
    name.map_or_else(|| "another port".to_string(), |n| format!("port {}", q(n)))
}

fn bridge_label(name: Option<&str>) -> String {
    name.map_or_else(
        || "another bridge".to_string(),
        |n| format!("bridge {}", q(n)),
    )
}

fn service_label(name: Option<&str>) -> String {
    name.map_or_else(
        || "another service".to_string(),
        |n| format!("service {}", q(n)),
    )
}

fn proto_name(p: Option<Proto>) -> &'static str {
    match p {
        Some(Proto::Tcp) => "tcp",
        Some(Proto::Udp) => "udp",
        None => "",
    }
}

fn a_type(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(v) => a_value_type(v),
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
    }
}

fn a_value_type(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "a table",
    }
}

/// The allowed key closest to `key`, if it is a plausible typo of it.
fn suggest<'k>(key: &str, allowed: &[&'k str]) -> Option<&'k str> {
    let key = key.to_ascii_lowercase();
    allowed
        .iter()
        .map(|a| (edit_distance(&key, a), *a))
        .filter(|(d, a)| *d <= 2 && *d < a.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// 1..=max characters of [A-Za-z0-9_.-].
fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A Linux interface name: 1..=15 bytes, no '/', ':', '%' (the kernel reads "eth%d" as
/// a template and picks a name of its own) or whitespace, not "." or "..".
fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s
            .chars()
            .any(|c| c == '/' || c == ':' || c == '%' || c == '\0' || c.is_whitespace())
}

/// The largest MTU a TAP device takes: tun's MAX_MTU (65535) less the Ethernet
/// header.
const MAX_TAP_MTU: i64 = 65535 - 14;

/// Lab files larger than this are refused unread (a lab of a thousand ports is under
/// 200 KiB).
pub const MAX_LAB_FILE: u64 = 4 << 20;

/// A network namespace name (a file name under /run/netns).
fn valid_netns(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s != "." && s != ".." && !s.contains(['/', '\0'])
}

/// "a.b.c.d/len" with len 0..=32.
fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len: u8 = len.parse().ok()?;
    if len > 32 {
        return None;
    }
    Some((ip.parse().ok()?, len))
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut out {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// 02: followed by five bytes of the FNV-1a hash of "LAB/PORT": stable across runs.
fn hashed_mac(lab: &str, port: &str) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in lab.bytes().chain(std::iter::once(b'/')).chain(port.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [0x02, b[3], b[4], b[5], b[6], b[7]]
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

fn broadcast(net: u32, prefix: u8) -> u32 {
    net | !mask(prefix)
}

fn in_net(a: u32, net: Option<(u32, u8)>) -> bool {
    net.is_some_and(|(n, p)| a & mask(p) == n)
}

fn cidr(net: u32, prefix: u8) -> String {
    format!("{}/{prefix}", Ipv4Addr::from(net))
}

/// The special-purpose range (if any) that `net/prefix` overlaps.
fn reserved_overlap(net: u32, prefix: u8) -> Option<&'static str> {
    const RESERVED: &[(u32, u8, &str)] = &[
        (0x0000_0000, 8, "0.0.0.0/8 (\"this network\")"),
        (0x7f00_0000, 8, "127.0.0.0/8 (loopback)"),
        (0xe000_0000, 4, "224.0.0.0/4 (multicast)"),
        (0xf000_0000, 4, "240.0.0.0/4 (reserved and broadcast)"),
    ];
    RESERVED.iter().find_map(|&(rn, rp, what)| {
        let m = mask(prefix.min(rp));
        (net & m == rn & m).then_some(what)
    })
}

/// Reads and validates a lab file: a regular file of at most [`MAX_LAB_FILE`] bytes
/// (a device such as /dev/urandom, a pipe or a directory is refused unread).
pub fn load(path: &Path) -> Result<Lab, Vec<LabError>> {
    let file = path.display().to_string();
    let refuse = |message: String| {
        Err(vec![LabError {
            file: file.clone(),
            pos: Pos { line: 1, col: 1 },
            message,
        }])
    };
    match std::fs::metadata(path) {
        Err(e) => return refuse(format!("cannot read the lab file: {e}")),
        Ok(m) if !m.is_file() => {
            return refuse("not a regular file: a lab file is a TOML text file".to_string())
        }
        Ok(m) if m.len() > MAX_LAB_FILE => {
            return refuse(format!(
                "{} bytes: larger than a lab file may be ({} MiB)",
                m.len(),
                MAX_LAB_FILE >> 20
            ))
        }
        Ok(_) => {}
    }
    use std::io::Read;
    let mut text = String::new();
    // Bounded even if the file grows between the check and the read.
    let read =
        std::fs::File::open(path).and_then(|f| f.take(MAX_LAB_FILE + 1).read_to_string(&mut text));
    match read {
        Ok(n) if n as u64 > MAX_LAB_FILE => refuse("larger than a lab file may be".into()),
        Ok(_) => parse(&file, &text),
        Err(e) => refuse(format!("cannot read the lab file: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from SPEC.md, verbatim.
    const SPEC_EXAMPLE: &str = r#"name = "lab"                      # names the lab and its control socket

[[bridge]]
name = "br0"
subnet = "172.16.1.0/24"          # optional; with it the router serves this bridge
gateway = "172.16.1.1"            # optional; default: first host address of subnet
mtu = 1500                        # optional
vni = 42                          # optional; stretches the bridge over VXLAN
fdb_max = 8192                    # optional; learned MACs at most
fdb_aging_s = 300                 # optional

[[port]]
name = "web"
bridge = "br0"
netns = "web"                     # created if missing, removed on exit only if tapnet created it;
                                  # without netns the TAP stays in tapnet's own namespace
ifname = "eth0"                   # optional; the TAP's name inside the namespace
mac = "02:00:ac:10:01:03"         # optional
ip = "172.16.1.3/24"              # optional; set inside the namespace, default route via the gateway

[[forward]]                       # publish a container port on the host (like docker -p)
proto = "tcp"                     # tcp | udp
listen = "0.0.0.0:8080"
to = "172.16.1.3:80"              # a container address or a service VIP

[[service]]                       # a load-balanced virtual IP inside the virtual network
name = "api"
vip = "172.16.1.100:80"
proto = "tcp"
backends = ["172.16.1.3:80", "172.16.1.4:80"]

[nat]
masquerade = true                 # containers reach addresses outside the lab through the host

[vxlan]
listen = "192.0.2.1:4789"         # underlay address and UDP port of this host's tunnel endpoint
peers = ["192.0.2.2:4789"]        # remote tunnel endpoints
"#;

    /// The SPEC example with an MTU that leaves room for VXLAN.
    fn spec_example() -> String {
        SPEC_EXAMPLE.replace("mtu = 1500 ", "mtu = 1450 ")
    }

    fn lab(text: &str) -> Lab {
        match parse("t.toml", text) {
            Ok(lab) => lab,
            Err(errs) => panic!("unexpected errors: {errs:#?}"),
        }
    }

    /// Every error as "LINE:COL: message".
    fn errs(text: &str) -> Vec<String> {
        match parse("t.toml", text) {
            Ok(_) => Vec::new(),
            Err(errs) => errs
                .iter()
                .map(|e| {
                    assert_eq!(e.file, "t.toml");
                    assert!(!e.message.contains('\n'), "multi-line message: {e}");
                    format!("{}:{}: {}", e.pos.line, e.pos.col, e.message)
                })
                .collect(),
        }
    }

    /// Asserts exactly one error, at LINE:COL, whose message contains `needle`.
    #[track_caller]
    fn err1(text: &str, line: usize, col: usize, needle: &str) {
        let e = errs(text);
        assert_eq!(e.len(), 1, "expected one error, got {e:#?}\nin:\n{text}");
        let prefix = format!("{line}:{col}: ");
        assert!(
            e[0].starts_with(&prefix) && e[0].contains(needle),
            "expected `{prefix}...{needle}...`, got `{}`",
            e[0]
        );
    }

    /// A lab header: lines 1-4, bridge br0 on 10.0.0.0/24.
    const HEAD: &str = "name = \"t\"\n[[bridge]]\nname = \"br0\"\nsubnet = \"10.0.0.0/24\"\n";

    fn with_head(rest: &str) -> String {
        format!("{HEAD}{rest}")
    }

    // ---- valid labs ----------------------------------------------------------------

    #[test]
    fn default_lab_parses() {
        let l = lab(DEFAULT_LAB);
        assert_eq!(l.name, "lab");
        assert_eq!(l.file, "t.toml");
        assert_eq!(l.bridges.len(), 1);
        let b = &l.bridges[0];
        assert_eq!(b.name, "br0");
        assert_eq!(
            b.subnet,
            Some(Subnet {
                addr: Ipv4Addr::new(172, 16, 1, 0),
                prefix: 24
            })
        );
        assert_eq!(b.gateway, Some(Ipv4Addr::new(172, 16, 1, 1)));
        assert_eq!(b.mtu, 1500);
        assert_eq!(b.vni, None);
        assert_eq!(b.fdb_max, 8192);
        assert_eq!(b.fdb_aging_s, 300);
        assert_eq!(l.ports.len(), 2);
        let (db, web) = (&l.ports[0], &l.ports[1]);
        assert_eq!(db.name, "db");
        assert_eq!(db.bridge, "br0");
        assert_eq!(db.netns.as_deref(), Some("db"));
        assert_eq!(db.ifname, "eth0");
        assert_eq!(db.mac, [0x02, 0x00, 0xac, 0x10, 0x01, 0x02]);
        assert_eq!(db.ip, Some((Ipv4Addr::new(172, 16, 1, 2), 24)));
        assert_eq!(web.name, "web");
        assert_eq!(web.mac, [0x02, 0x00, 0xac, 0x10, 0x01, 0x03]);
        assert_eq!(web.ip, Some((Ipv4Addr::new(172, 16, 1, 3), 24)));
        // web's port 80 on the host's loopback, port 8080.
        assert_eq!(l.forwards.len(), 1);
        let f = &l.forwards[0];
        assert_eq!(f.proto, Proto::Tcp);
        assert_eq!(f.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(f.to, "172.16.1.3:80".parse().unwrap());
        // Masquerade, with the default limits and timeouts.
        let nat = l.nat.as_ref().expect("[nat]");
        assert!(nat.masquerade);
        assert_eq!(
            *nat,
            NatCfg {
                pos: nat.pos,
                masquerade: true,
                ..NatCfg::default()
            }
        );
        assert!(l.services.is_empty() && l.vxlan.is_none());
    }

    /// The lab-file reference in the repository.
    const LAB_FILE_DOC: &str = include_str!("../../docs/lab-file.md");

    /// Every table `check` knows, with the heading of its section in docs/lab-file.md.
    const SECTIONS: &[(&str, &[&str])] = &[
        ("Top level", TOP_KEYS),
        ("[[bridge]]", BRIDGE_KEYS),
        ("[[port]]", PORT_KEYS),
        ("[[forward]]", FORWARD_KEYS),
        ("[[service]]", SERVICE_KEYS),
        ("[nat]", NAT_KEYS),
        ("[vxlan]", VXLAN_KEYS),
    ];

    /// The text of the `## HEADING` section of the reference, up to the next one.
    fn doc_section(heading: &str) -> &'static str {
        let start = LAB_FILE_DOC
            .find(&format!("\n## {heading}\n"))
            .unwrap_or_else(|| panic!("docs/lab-file.md has no `## {heading}` section"));
        let body = &LAB_FILE_DOC[start + heading.len() + 5..];
        &body[..body.find("\n## ").unwrap_or(body.len())]
    }

    #[test]
    fn every_key_is_documented_in_its_section_of_the_reference() {
        for (heading, keys) in SECTIONS {
            let section = doc_section(heading);
            // A row of the section's table per key: | `key` | type | default | ...
            let rows: Vec<&str> = section
                .lines()
                .filter_map(|l| l.strip_prefix("| `"))
                .filter_map(|l| l.split_once("` |").map(|(k, _)| k))
                .collect();
            for key in *keys {
                let row = section
                    .lines()
                    .find(|l| l.starts_with(&format!("| `{key}` |")))
                    .unwrap_or_else(|| {
                        panic!("docs/lab-file.md, section {heading}: no row for `{key}`")
                    });
                // key, type, default, what it does, example: five cells, none empty.
                let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
                assert_eq!(cells.len(), 5, "{heading} `{key}`: {row}");
                assert!(
                    cells.iter().all(|c| !c.trim().is_empty()),
                    "{heading} `{key}`: {row}"
                );
            }
            // And nothing documented that `check` would refuse.
            for row in rows {
                assert!(
                    keys.contains(&row),
                    "docs/lab-file.md, section {heading}: `{row}` is not a key `check` accepts"
                );
            }
        }
    }

    #[test]
    fn the_references_examples_are_valid_and_the_complete_one_uses_every_key() {
        let blocks: Vec<&str> = LAB_FILE_DOC
            .split("```toml\n")
            .skip(1)
            .map(|b| &b[..b.find("```").expect("closed block")])
            .collect();
        assert!(blocks.len() >= 8, "{} toml blocks", blocks.len());
        let complete = doc_section("A complete example");
        let complete = complete
            .split("```toml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("a toml block in `## A complete example`");
        let l = lab(complete);
        assert!(!l.bridges.is_empty() && !l.ports.is_empty());
        assert!(!l.forwards.is_empty() && !l.services.is_empty());
        assert!(l.nat.is_some() && l.vxlan.is_some());
        for (heading, keys) in SECTIONS {
            for key in *keys {
                let used = complete.lines().any(|line| {
                    let line = line.trim_start();
                    line.starts_with(&format!("{key} ="))
                        || line.starts_with(&format!("[{key}]"))
                        || line.starts_with(&format!("[[{key}]]"))
                });
                assert!(used, "the complete example does not use {heading} `{key}`");
            }
        }
        // Each section's snippet parses as a lab once it has what it refers to.
        let head = "name = \"x\"\n";
        let br = "[[bridge]]\nname = \"br0\"\nsubnet = \"172.16.1.0/24\"\n";
        let ports = "[[port]]\nname = \"web\"\nbridge = \"br0\"\nip = \"172.16.1.3/24\"\n\
                     [[port]]\nname = \"web2\"\nbridge = \"br0\"\nip = \"172.16.1.4/24\"\n";
        for block in &blocks {
            let text = if block.starts_with("name =") {
                block.to_string()
            } else if block.starts_with("[[bridge]]") {
                format!("{head}{block}")
            } else if block.starts_with("[[port]]") {
                format!("{head}{br}{block}")
            } else if block.starts_with("[vxlan]") {
                format!("{head}{block}")
            } else {
                format!("{head}{br}{ports}{block}")
            };
            lab(&text);
        }
    }

    #[test]
    fn spec_example_parses() {
        let l = lab(&spec_example());
        assert_eq!(l.name, "lab");
        let b = &l.bridges[0];
        assert_eq!(b.mtu, 1450);
        assert_eq!(b.vni, Some((42, Pos { line: 8, col: 7 })));
        assert_eq!(b.pos, Pos { line: 3, col: 1 });
        let p = &l.ports[0];
        assert_eq!(p.pos, Pos { line: 12, col: 1 });
        assert_eq!(p.mac, [0x02, 0x00, 0xac, 0x10, 0x01, 0x03]);
        assert_eq!(p.ifname, "eth0");
        let f = &l.forwards[0];
        assert_eq!(f.proto, Proto::Tcp);
        assert_eq!(f.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(f.to, "172.16.1.3:80".parse().unwrap());
        let s = &l.services[0];
        assert_eq!(s.name, "api");
        assert_eq!(s.vip, "172.16.1.100:80".parse().unwrap());
        assert_eq!(s.backends.len(), 2);
        assert!(l.nat.as_ref().unwrap().masquerade);
        let v = l.vxlan.as_ref().unwrap();
        assert_eq!(v.listen, "192.0.2.1:4789".parse().unwrap());
        assert_eq!(v.peers, vec!["192.0.2.2:4789".parse().unwrap()]);
    }

    #[test]
    fn spec_example_verbatim_is_valid() {
        let l = lab(SPEC_EXAMPLE);
        assert_eq!(l.bridges[0].mtu, 1500);
    }

    #[test]
    fn nat_timeout_defaults_are_the_datapaths() {
        let t = vrouter::nat::Timeouts::default();
        assert_eq!(DEFAULT_NAT_TCP_TIMEOUT_S, t.tcp.as_secs());
        assert_eq!(DEFAULT_NAT_TCP_CLOSING_TIMEOUT_S, t.tcp_closing.as_secs());
        assert_eq!(DEFAULT_NAT_UDP_TIMEOUT_S, t.udp.as_secs());
        assert_eq!(DEFAULT_NAT_ICMP_TIMEOUT_S, t.icmp.as_secs());
    }

    #[test]
    fn nat_max_flows_is_an_integer_in_range() {
        let l = lab("name = \"x\"\n[nat]\nmax_flows = 1000\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n");
        assert_eq!(l.nat.unwrap().max_flows, 1000);
        let l = lab("name = \"x\"\n[nat]\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n");
        assert_eq!(l.nat.unwrap().max_flows, DEFAULT_NAT_MAX_FLOWS);
        let errs = parse("t.toml", "name = \"x\"\n[nat]\nmax_flows = 3\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n").unwrap_err();
        assert_eq!((errs[0].pos.line, errs[0].pos.col), (3, 13));
    }

    #[test]
    fn nat_timeouts_default_and_explicit() {
        // No [nat]: the defaults, no masquerade.
        let l = lab("name = \"x\"\n");
        assert!(l.nat.is_none());
        let n = l.nat_or_default();
        assert_eq!(n, NatCfg::default());
        assert!(!n.masquerade);
        assert_eq!(n.max_flows, DEFAULT_NAT_MAX_FLOWS);
        assert_eq!(n.tcp_timeout_s, 432_000);
        assert_eq!(n.tcp_closing_timeout_s, 120);
        assert_eq!(n.udp_timeout_s, 120);
        assert_eq!(n.icmp_timeout_s, 30);
        assert_eq!(
            (
                DEFAULT_NAT_TCP_TIMEOUT_S,
                DEFAULT_NAT_TCP_CLOSING_TIMEOUT_S,
                DEFAULT_NAT_UDP_TIMEOUT_S,
                DEFAULT_NAT_ICMP_TIMEOUT_S
            ),
            (432_000, 120, 120, 30)
        );
        // An empty [nat]: the same timeouts, and masquerade.
        let n = lab("name = \"x\"\n[nat]\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n")
            .nat_or_default();
        assert!(n.masquerade);
        assert_eq!(
            (
                n.tcp_timeout_s,
                n.tcp_closing_timeout_s,
                n.udp_timeout_s,
                n.icmp_timeout_s
            ),
            (432_000, 120, 120, 30)
        );
        assert_eq!(n.pos, Pos { line: 2, col: 1 });
        // Every one given, at the ends of its range.
        let n = lab("name = \"x\"\n[nat]\nmasquerade = false\ntcp_timeout_s = 2592000\ntcp_closing_timeout_s = 1\nudp_timeout_s = 86400\nicmp_timeout_s = 1\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n")
            .nat
            .unwrap();
        assert!(!n.masquerade);
        assert_eq!(
            (
                n.tcp_timeout_s,
                n.tcp_closing_timeout_s,
                n.udp_timeout_s,
                n.icmp_timeout_s
            ),
            (2_592_000, 1, 86_400, 1)
        );
        let n = lab("name = \"x\"\nnat = { tcp_timeout_s = 1, tcp_closing_timeout_s = 3600, udp_timeout_s = 1, icmp_timeout_s = 86400 }\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n")
            .nat
            .unwrap();
        assert_eq!(
            (
                n.tcp_timeout_s,
                n.tcp_closing_timeout_s,
                n.udp_timeout_s,
                n.icmp_timeout_s
            ),
            (1, 3600, 1, 86_400)
        );
    }

    #[test]
    fn nat_timeouts_out_of_range_or_mistyped_are_refused_at_their_value() {
        for (key, bad, hi) in [
            ("tcp_timeout_s", "2592001", 2_592_000),
            ("tcp_timeout_s", "0", 2_592_000),
            ("tcp_closing_timeout_s", "3601", 3600),
            ("tcp_closing_timeout_s", "-5", 3600),
            ("udp_timeout_s", "86401", 86_400),
            ("udp_timeout_s", "0", 86_400),
            ("icmp_timeout_s", "86401", 86_400),
            ("icmp_timeout_s", "0", 86_400),
        ] {
            let text = format!("name = \"x\"\n[nat]\n{key} = {bad}\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n");
            err1(
                &text,
                3,
                key.len() + 4,
                &format!("`{key}` must be between 1 and {hi}, not {bad}"),
            );
        }
        err1(
            "name = \"x\"\n[nat]\nudp_timeout_s = \"2m\"\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n",
            3,
            17,
            "`udp_timeout_s` must be an integer, not a string",
        );
        err1(
            "name = \"x\"\n[nat]\nicmp_timeout_s = 1.5\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n",
            3,
            18,
            "`icmp_timeout_s` must be an integer, not a float",
        );
        err1(
            "name = \"x\"\n[nat]\ntcp_timeout = 10\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n",
            3,
            1,
            "unknown key `tcp_timeout` in [nat]; did you mean `tcp_timeout_s`?",
        );
        // Several problems: each at its own place, in order.
        assert_eq!(
            errs("name = \"x\"\n[nat]\ntcp_timeout_s = 0\nudp_timeout_s = 0\n[[bridge]]\nname = \"b\"\nsubnet = \"10.9.0.0/24\"\n"),
            vec![
                "3:17: `tcp_timeout_s` must be between 1 and 2592000, not 0",
                "4:17: `udp_timeout_s` must be between 1 and 86400, not 0",
            ]
        );
    }

    #[test]
    fn a_port_impairment_is_parsed_or_refused_at_its_value() {
        let l = lab(&with_head(
            "[[port]]\nname = \"p\"\nbridge = \"br0\"\nimpair = \"delay=20ms loss=1%\"\n",
        ));
        let i = l.ports[0].impair.unwrap();
        assert_eq!(i.delay, std::time::Duration::from_millis(20));
        let e = errs(&with_head(
            "[[port]]\nname = \"p\"\nbridge = \"br0\"\nimpair = \"loss=200%\"\n",
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains(":10: `impair`: `loss=200%`"), "{e:?}");
    }

    #[test]
    fn mirrors_are_unique_and_underlay_is_reserved() {
        let e = errs(&with_head(
            "[[port]]\nname = \"p\"\nbridge = \"br0\"\nmirror = \"m0\"\n[[port]]\nname = \"q\"\nbridge = \"br0\"\nmirror = \"m0\"\n[[port]]\nname = \"underlay\"\nbridge = \"br0\"\n",
        ));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("already another port's mirror"), "{e:?}");
        assert!(e[1].contains("`underlay` is taken"), "{e:?}");
    }

    #[test]
    fn minimal_labs() {
        let l = lab("name = \"x\"\n");
        assert!(l.bridges.is_empty() && l.ports.is_empty());
        // A bridge with no subnet, a port on it with an address, no netns.
        let l = lab("name = \"a.b-c_9\"\n[[bridge]]\nname = \"sw\"\n[[port]]\nname = \"tap1\"\nbridge = \"sw\"\nip = \"192.168.9.9/16\"\n");
        assert_eq!(l.bridges[0].subnet, None);
        assert_eq!(l.bridges[0].gateway, None);
        assert_eq!(l.ports[0].ifname, "tap1");
        assert_eq!(l.ports[0].netns, None);
        assert_eq!(l.ports[0].mac, [2, 0, 192, 168, 9, 9]);
    }

    #[test]
    fn defaults_and_explicit_values() {
        let l = lab(&with_head(
            "gateway = \"10.0.0.254\"\nfdb_max = 10\nfdb_aging_s = 5\nmtu = 9000\n\
             [[port]]\nname = \"p\"\nbridge = \"br0\"\nnetns = \"ns\"\nifname = \"veth7\"\n\
             mac = \"0A:00:00:00:00:01\"\n[nat]\n",
        ));
        let b = &l.bridges[0];
        assert_eq!(b.gateway, Some(Ipv4Addr::new(10, 0, 0, 254)));
        assert_eq!((b.fdb_max, b.fdb_aging_s, b.mtu), (10, 5, 9000));
        assert_eq!(l.ports[0].ifname, "veth7");
        assert_eq!(l.ports[0].mac, [0x0a, 0, 0, 0, 0, 1]);
        assert_eq!(l.ports[0].ip, None);
        // An empty [nat] means masquerade.
        assert!(l.nat.unwrap().masquerade);
    }

    #[test]
    fn vni_bridge_defaults_to_1450() {
        let l = lab(&with_head(
            "vni = 7\n[vxlan]\nlisten = \"0.0.0.0:4789\"\npeers = [\"192.0.2.2:4789\", \"192.0.2.3:4789\"]\n",
        ));
        assert_eq!(l.bridges[0].mtu, 1450);
        assert_eq!(l.bridges[0].vni, Some((7, Pos { line: 5, col: 7 })));
        assert_eq!(l.vxlan.unwrap().peers.len(), 2);
    }

    #[test]
    fn hashed_macs_are_stable_unicast_and_local() {
        let text = with_head(
            "[[port]]\nname = \"a\"\nbridge = \"br0\"\n[[port]]\nname = \"b\"\nbridge = \"br0\"\n",
        );
        let l1 = lab(&text);
        let l2 = lab(&text);
        let (a, b) = (l1.ports[0].mac, l1.ports[1].mac);
        assert_eq!(a, l2.ports[0].mac);
        assert_ne!(a, b);
        assert_eq!(a[0], 0x02);
        assert_eq!(a, hashed_mac("t", "a"));
        // Another lab name gives other addresses.
        assert_ne!(hashed_mac("u", "a"), a);
    }

    #[test]
    fn inline_tables_are_accepted() {
        let l = lab("name = \"x\"\nbridge = [{ name = \"br0\", subnet = \"10.1.0.0/16\" }]\nport = [{ name = \"p\", bridge = \"br0\", ip = \"10.1.2.3/16\" }]\nnat = { masquerade = false }\n");
        assert_eq!(l.ports[0].ip, Some((Ipv4Addr::new(10, 1, 2, 3), 16)));
        assert!(!l.nat.unwrap().masquerade);
    }

    #[test]
    fn display_format() {
        let e = parse("lab.toml", "name = 1\n").unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "lab.toml:1:8: `name` must be a string, not an integer"
        );
    }

    // ---- syntax and structure ------------------------------------------------------

    #[test]
    fn syntax_error_position() {
        let e = errs("name = \"x\"\n[[bridge]]\nname = \"br0\nmtu = 1\n");
        assert_eq!(e.len(), 1, "{e:#?}");
        // Reported where the closing quote is missing, at the end of line 3.
        assert_eq!(
            e,
            vec!["3:12: syntax error: invalid basic string, expected `\"`"]
        );
        let e = errs("name = \"x\"\nmtu = = 3\n");
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].starts_with("2:7: syntax error"), "{e:?}");
        let e = errs("name = \"x\"\n[[port]\n");
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(
            e[0].starts_with("2:") && e[0].contains("syntax error"),
            "{e:?}"
        );
        // A duplicated key is a syntax error too, reported at the second one.
        let e = errs("name = \"x\"\nname = \"y\"\n");
        assert_eq!(e, vec!["2:1: syntax error: duplicate key".to_string()]);
    }

    #[test]
    fn unknown_top_level_key() {
        err1(
            "name = \"x\"\nbridges = 1\n",
            2,
            1,
            "unknown key `bridges` at the top level; did you mean `bridge`?",
        );
        err1(
            "name = \"x\"\n[zzz]\n",
            2,
            2,
            "unknown key `zzz` at the top level (expected one of `name`",
        );
    }

    #[test]
    fn unknown_keys_in_tables() {
        err1(
            &with_head("subnett = 1\n"),
            5,
            1,
            "unknown key `subnett` in [[bridge]]; did you mean `subnet`?",
        );
        let e = errs(&with_head(
            "[[port]]\nname = \"p\"\nbridge = \"br0\"\n  colour = \"red\"\n[nat]\nmasq = true\n[[forward]]\nproto = \"tcp\"\nlisten = \"0.0.0.0:1\"\nto = \"10.0.0.9:1\"\nx.y = 1\n",
        ));
        assert_eq!(
            e,
            vec![
                "8:3: unknown key `colour` in [[port]] (expected one of `name`, `bridge`, `netns`, `ifname`, `mac`, `ip`, `impair`, `mirror`, `spoof_check`)",
                "10:1: unknown key `masq` in [nat] (expected one of `masquerade`, `max_flows`, `tcp_timeout_s`, `tcp_closing_timeout_s`, `udp_timeout_s`, `icmp_timeout_s`)",
                "14:6: forward to 10.0.0.9:1: no port or service holds that address",
                "15:1: unknown key `x` in [[forward]] (expected one of `proto`, `listen`, `to`)",
            ]
        );
    }

    #[test]
    fn what_up_would_refuse_check_refuses_first() {
        // Masquerade with no routed bridge: the gateway is the containers' way out.
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\n[nat]\n",
            4,
            1,
            "masquerade needs a bridge with a `subnet`",
        );
        // A forward to a port on a bridge without a subnet: no way back for replies.
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\n[[port]]\nname = \"p\"\nbridge = \"b\"\nip = \"10.5.5.5/24\"\n[[forward]]\nlisten = \"8080\"\nto = \"10.5.5.5:80\"\n",
            10,
            6,
            "that address is on no bridge with a `subnet`",
        );
    }

    #[test]
    fn devices_and_huge_files_are_refused_unread() {
        let e = load(Path::new("/dev/urandom")).unwrap_err();
        assert!(e[0].message.contains("not a regular file"), "{e:?}");
        let e = load(Path::new("/")).unwrap_err();
        assert!(e[0].message.contains("not a regular file"), "{e:?}");
        let big = std::env::temp_dir().join(format!("tapnet-big-{}.toml", std::process::id()));
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_LAB_FILE + 1).unwrap();
        let e = load(&big).unwrap_err();
        let _ = std::fs::remove_file(&big);
        assert!(
            e[0].message.contains("larger than a lab file may be"),
            "{e:?}"
        );
    }

    #[test]
    fn names_the_kernel_would_rewrite_and_mtus_a_tap_refuses_are_errors() {
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\nifname = \"eth%d\"\n"),
            8,
            10,
            "not a valid interface name",
        );
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\nmirror = \"m%d\"\n"),
            8,
            10,
            "not a valid interface name",
        );
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\nmtu = 65535\n",
            4,
            7,
            "`mtu` must be between 68 and 65521",
        );
        assert!(parse("t", "name = \"x\"\n[[bridge]]\nname = \"b\"\nmtu = 65521\n").is_ok());
    }

    #[test]
    fn missing_keys_at_headers() {
        assert_eq!(
            errs(""),
            vec!["1:1: missing required key `name` at the top level"]
        );
        assert_eq!(
            errs("name = \"x\"\n[[bridge]]\n[[port]]\nname = \"p\"\n[[forward]]\n[[service]]\n[vxlan]\n[nat]\n"),
            vec![
                "2:1: missing required key `name` in [[bridge]]",
                "3:1: missing required key `bridge` in [[port]]",
                "5:1: missing required key `listen` in [[forward]]",
                "5:1: missing required key `to` in [[forward]]",
                "6:1: missing required key `name` in [[service]]",
                "6:1: missing required key `vip` in [[service]]",
                "6:1: missing required key `proto` in [[service]]",
                "6:1: missing required key `backends` in [[service]]",
                "7:1: missing required key `listen` in [vxlan]",
                "7:1: missing required key `peers` in [vxlan]",
                "8:1: masquerade needs a bridge with a `subnet`: its gateway is the containers' way out",
            ]
        );
    }

    #[test]
    fn wrong_types_at_values() {
        err1(
            &with_head("mtu = \"1500\"\n"),
            5,
            7,
            "`mtu` must be an integer, not a string",
        );
        err1(
            &with_head("mtu = 1500.0\n"),
            5,
            7,
            "`mtu` must be an integer, not a float",
        );
        err1(
            "name = [\"x\"]\n",
            1,
            8,
            "`name` must be a string, not an array",
        );
        err1(
            "name = \"x\"\n[bridge]\nname = \"b\"\n",
            2,
            1,
            "`bridge` must be an array of tables ([[bridge]]), not a table",
        );
        err1(
            "name = \"x\"\nport = 3\n",
            2,
            8,
            "`port` must be an array of tables ([[port]]), not an integer",
        );
        err1(
            "name = \"x\"\nport = [3]\n",
            2,
            9,
            "each element of `port` must be a table ([[port]]), not an integer",
        );
        err1(
            "name = \"x\"\n[[nat]]\n",
            2,
            1,
            "`nat` must be a table ([nat]), not an array of tables",
        );
        err1(
            "name = \"x\"\n[nat]\nmasquerade = \"yes\"\n",
            3,
            14,
            "`masquerade` must be true or false, not a string",
        );
        err1(
            &with_head("[vxlan]\nlisten = \"1.2.3.4:1\"\npeers = \"5.6.7.8:1\"\n"),
            7,
            9,
            "`peers` must be an array of strings, not a string",
        );
        err1(
            &with_head("[vxlan]\nlisten = \"1.2.3.4:1\"\npeers = [\"5.6.7.8:1\", 7]\n"),
            7,
            23,
            "each element of `peers` must be a string, not an integer",
        );
    }

    #[test]
    fn three_problems_three_errors() {
        let e = errs("name = \"x\"\nfoo = 1\n[[bridge]]\nname = \"br0\"\nmtu = 10\n[[port]]\nname = \"p\"\nbridge = \"nope\"\n");
        assert_eq!(
            e,
            vec![
                "2:1: unknown key `foo` at the top level (expected one of `name`, `bridge`, `port`, `forward`, `service`, `nat`, `vxlan`)",
                "5:7: `mtu` must be between 68 and 65521, not 10",
                "8:10: port `p` names bridge `nope`, which no [[bridge]] defines",
            ]
        );
    }

    #[test]
    fn columns_count_characters() {
        // "é" is two bytes but one column.
        let e = errs("name = \"x\"\nport = [{ name = \"é\", bridge = \"zz\" }]\n");
        assert_eq!(
            e,
            vec![
                "2:18: port name `é` must be 1 to 15 characters of A-Z a-z 0-9 _ . -",
                "2:32: port `é` names bridge `zz`, which no [[bridge]] defines",
            ]
        );
    }

    // ---- names ------------------------------------------------------------------------

    #[test]
    fn lab_name() {
        err1(
            "name = \"a b\"\n",
            1,
            8,
            "lab name `a b` must be 1 to 32 characters",
        );
        err1("name = \"\"\n", 1, 8, "lab name `` must be");
        err1(
            &format!("name = \"{}\"\n", "x".repeat(33)),
            1,
            8,
            "must be 1 to 32",
        );
        err1("name = \"../etc\"\n", 1, 8, "lab name `../etc`");
        err1("name = \"a\\nb\"\n", 1, 8, "lab name `a\\nb`");
    }

    #[test]
    fn bridge_and_port_names() {
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"averyveryverylong\"\n",
            3,
            8,
            "bridge name `averyveryverylong` must be 1 to 15 characters",
        );
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b0\"\n[[bridge]]\nname = \"b0\"\n",
            5,
            8,
            "duplicate bridge name `b0` (first defined on line 3)",
        );
        err1(
            &with_head("[[port]]\nname = \"a/b\"\nbridge = \"br0\"\n"),
            6,
            8,
            "port name `a/b` must be 1 to 15",
        );
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\n[[port]]\nname = \"p\"\nbridge = \"br0\"\nnetns = \"n\"\n"),
            9,
            8,
            "duplicate port name `p` (first defined on line 6)",
        );
    }

    #[test]
    fn netns_and_ifname() {
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\nnetns = \"a/b\"\n"),
            8,
            9,
            "netns name `a/b` must be",
        );
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\nnetns = \"..\"\n"),
            8,
            9,
            "netns name `..`",
        );
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\nnetns = \"\"\n"),
            8,
            9,
            "netns name ``",
        );
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\nifname = \"eth0:1\"\n"),
            8,
            10,
            "ifname `eth0:1` is not a valid interface name",
        );
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\nifname = \"a b\"\n"),
            8,
            10,
            "ifname `a b`",
        );
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\nifname = \"0123456789abcdef\"\n"),
            8,
            10,
            "ifname `0123456789abcdef`",
        );
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\nifname = \".\"\n"),
            8,
            10,
            "ifname `.`",
        );
        // Two ports in one namespace, both defaulting to eth0: reported at the second netns.
        err1(
            &with_head("[[port]]\nname = \"a\"\nbridge = \"br0\"\nnetns = \"n\"\n[[port]]\nname = \"b\"\nbridge = \"br0\"\nnetns = \"n\"\n"),
            12,
            9,
            "interface `eth0` in netns `n` is already used by port `a`; give one of them an `ifname`",
        );
        // In tapnet's own namespace, an explicit ifname clashing with a port's name.
        err1(
            &with_head("[[port]]\nname = \"a\"\nbridge = \"br0\"\n[[port]]\nname = \"b\"\nbridge = \"br0\"\nifname = \"a\"\n"),
            11,
            10,
            "interface `a` in tapnet's own namespace is already used by port `a`",
        );
        // Same ifname in different namespaces is fine.
        lab(&with_head("[[port]]\nname = \"a\"\nbridge = \"br0\"\nnetns = \"n1\"\n[[port]]\nname = \"b\"\nbridge = \"br0\"\nnetns = \"n2\"\n"));
    }

    // ---- bridges ----------------------------------------------------------------------

    #[test]
    fn subnets() {
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\nsubnet = \"10.0.0.1/24\"\n",
            4,
            10,
            "subnet 10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?",
        );
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\nsubnet = \"10.0.0.0\"\n",
            4,
            10,
            "`subnet` must be an IPv4 network like \"172.16.1.0/24\", not `10.0.0.0`",
        );
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\nsubnet = \"10.0.0.0/33\"\n",
            4,
            10,
            "`subnet` must be an IPv4 network",
        );
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\nsubnet = \"10.0.0.0/+8\"\n",
            4,
            10,
            "`subnet` must be an IPv4 network",
        );
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\nsubnet = \"10.0.0.0/31\"\n",
            4,
            10,
            "no room for a gateway and hosts",
        );
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\nsubnet = \"127.0.0.0/8\"\n",
            4,
            10,
            "overlaps 127.0.0.0/8 (loopback)",
        );
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\nsubnet = \"0.0.0.0/0\"\n",
            4,
            10,
            "overlaps 0.0.0.0/8",
        );
        err1(
            &with_head("[[bridge]]\nname = \"br1\"\nsubnet = \"10.0.0.128/25\"\n"),
            7,
            10,
            "subnet 10.0.0.128/25 overlaps subnet 10.0.0.0/24 of bridge `br0`",
        );
        err1(
            &with_head("[[bridge]]\nname = \"br1\"\nsubnet = \"10.0.0.0/8\"\n"),
            7,
            10,
            "overlaps subnet 10.0.0.0/24 of bridge `br0`",
        );
        lab(&with_head(
            "[[bridge]]\nname = \"br1\"\nsubnet = \"10.0.1.0/24\"\n",
        ));
    }

    #[test]
    fn gateways() {
        err1(
            &with_head("gateway = \"10.0.1.1\"\n"),
            5,
            11,
            "gateway 10.0.1.1 is outside subnet 10.0.0.0/24",
        );
        err1(
            &with_head("gateway = \"10.0.0.0\"\n"),
            5,
            11,
            "gateway 10.0.0.0 is the network address of subnet 10.0.0.0/24",
        );
        err1(
            &with_head("gateway = \"10.0.0.255\"\n"),
            5,
            11,
            "gateway 10.0.0.255 is the broadcast address",
        );
        err1(
            &with_head("gateway = \"10.0.0\"\n"),
            5,
            11,
            "`gateway` must be an IPv4 address",
        );
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\ngateway = \"10.0.0.1\"\n",
            4,
            11,
            "`gateway` needs a `subnet` on bridge `b`",
        );
    }

    #[test]
    fn bridge_numbers() {
        err1(
            &with_head("mtu = 67\n"),
            5,
            7,
            "`mtu` must be between 68 and 65521, not 67",
        );
        err1(
            &with_head("mtu = 65536\n"),
            5,
            7,
            "`mtu` must be between 68 and 65521, not 65536",
        );
        err1(
            &with_head("fdb_max = 0\n"),
            5,
            11,
            "`fdb_max` must be between 1 and 1000000, not 0",
        );
        err1(
            &with_head("fdb_aging_s = 86401\n"),
            5,
            15,
            "`fdb_aging_s` must be between 1 and 86400",
        );
        err1(
            &with_head(
                "vni = 16777216\n[vxlan]\nlisten = \"1.2.3.4:4789\"\npeers = [\"1.2.3.5:4789\"]\n",
            ),
            5,
            7,
            "`vni` must be between 1 and 16777215, not 16777216",
        );
        err1(
            &with_head("vni = 0\n[vxlan]\nlisten = \"1.2.3.4:4789\"\npeers = [\"1.2.3.5:4789\"]\n"),
            5,
            7,
            "`vni` must be between 1 and 16777215, not 0",
        );
    }

    #[test]
    fn vxlan_bridges() {
        const VX: &str = "[vxlan]\nlisten = \"1.2.3.4:4789\"\npeers = [\"1.2.3.5:4789\"]\n";
        err1(
            &with_head(&format!("vni = 5\nmtu = 65500\n{VX}")),
            6,
            7,
            "mtu 65500 leaves no room for the 50 bytes of VXLAN encapsulation in a 64 KiB datagram; use at most 65485",
        );
        lab(&with_head(&format!("vni = 5\nmtu = 1450\n{VX}")));
        err1(
            &with_head("vni = 5\n"),
            5,
            7,
            "bridge `br0` has vni 5, but there is no [vxlan] table",
        );
        err1(
            &with_head(&format!(
                "vni = 5\n[[bridge]]\nname = \"br1\"\nvni = 5\n{VX}"
            )),
            8,
            7,
            "vni 5 is already used by bridge `br0`",
        );
    }

    // ---- ports ------------------------------------------------------------------------

    #[test]
    fn port_bridge_must_exist() {
        err1(
            &with_head("[[port]]\nname = \"web\"\nbridge = \"br9\"\n"),
            7,
            10,
            "port `web` names bridge `br9`, which no [[bridge]] defines",
        );
    }

    #[test]
    fn no_cascades() {
        // A bridge whose name cannot be read: its ports are not "on a missing bridge".
        err1(
            "name = \"x\"\n[[bridge]]\nname = 5\n[[port]]\nname = \"p\"\nbridge = \"br0\"\n",
            3,
            8,
            "`name` must be a string, not an integer",
        );
        // A port whose address cannot be read: forwards to it are not "to nowhere".
        err1(
            &with_head("[[port]]\nname = \"p\"\nbridge = \"br0\"\nip = \"10.0.0.3\"\n[[forward]]\nproto = \"tcp\"\nlisten = \"0.0.0.0:80\"\nto = \"10.0.0.3:80\"\n"),
            8,
            6,
            "`ip` must be an IPv4 address",
        );
        // A bad subnet: addresses on that bridge are not checked against it.
        err1(
            "name = \"x\"\n[[bridge]]\nname = \"b\"\nsubnet = \"10.0.0.1/24\"\n[[port]]\nname = \"p\"\nbridge = \"b\"\nip = \"10.0.0.3/16\"\n",
            4,
            10,
            "host bits set",
        );
        // A port without a name is "this port".
        assert_eq!(
            errs(&with_head("[[port]]\nbridge = \"br9\"\n")),
            vec![
                "5:1: missing required key `name` in [[port]]",
                "6:10: this port names bridge `br9`, which no [[bridge]] defines",
            ]
        );
        // Dotted keys make tables without headers; still reported at the key.
        err1(
            "name = \"x\"\nbridge.name = \"b\"\n",
            2,
            1,
            "`bridge` must be an array of tables ([[bridge]]), not a table",
        );
    }

    #[test]
    fn port_macs() {
        let p = |mac: &str| {
            with_head(&format!(
                "[[port]]\nname = \"p\"\nbridge = \"br0\"\nmac = \"{mac}\"\n"
            ))
        };
        err1(
            &p("01:00:5e:00:00:01"),
            8,
            7,
            "mac 01:00:5e:00:00:01 is a multicast address",
        );
        err1(
            &p("00:00:00:00:00:00"),
            8,
            7,
            "mac 00:00:00:00:00:00 is not a usable address",
        );
        err1(
            &p("02:00:00:00:00"),
            8,
            7,
            "`mac` must be six hex bytes like \"02:00:ac:10:01:03\", not `02:00:00:00:00`",
        );
        err1(&p("02:00:00:00:00:0g"), 8, 7, "`mac` must be six hex bytes");
        err1(&p("02-00-00-00-00-01"), 8, 7, "`mac` must be six hex bytes");
        err1(
            &p("02:00:00:00:00:01:02"),
            8,
            7,
            "`mac` must be six hex bytes",
        );
        // Explicit duplicate.
        err1(
            &with_head("[[port]]\nname = \"a\"\nbridge = \"br0\"\nmac = \"02:00:00:00:00:01\"\n[[port]]\nname = \"b\"\nbridge = \"br0\"\nmac = \"02:00:00:00:00:01\"\n"),
            12,
            7,
            "mac 02:00:00:00:00:01 of port `b` is already used by port `a`",
        );
        // An explicit mac clashing with one generated from an address (reported at the later port's ip).
        err1(
            &with_head("[[port]]\nname = \"a\"\nbridge = \"br0\"\nmac = \"02:00:0a:00:00:05\"\n[[port]]\nname = \"b\"\nbridge = \"br0\"\nip = \"10.0.0.5/24\"\n"),
            12,
            6,
            "default mac 02:00:0a:00:00:05 of port `b` is already used by port `a`; set `mac`",
        );
    }

    #[test]
    fn port_ips() {
        let p = |ip: &str| {
            with_head(&format!(
                "[[port]]\nname = \"p\"\nbridge = \"br0\"\nip = \"{ip}\"\n"
            ))
        };
        err1(
            &p("10.0.1.5/24"),
            8,
            6,
            "ip 10.0.1.5/24 is outside subnet 10.0.0.0/24 of bridge `br0`",
        );
        err1(&p("10.0.0.5/16"), 8, 6, "ip 10.0.0.5/16 must have the prefix of subnet 10.0.0.0/24 of bridge `br0`: use 10.0.0.5/24");
        err1(
            &p("10.0.0.0/24"),
            8,
            6,
            "ip 10.0.0.0/24 is the network address of subnet 10.0.0.0/24",
        );
        err1(
            &p("10.0.0.255/24"),
            8,
            6,
            "ip 10.0.0.255/24 is the broadcast address",
        );
        err1(
            &p("10.0.0.1/24"),
            8,
            6,
            "ip 10.0.0.1/24 is the gateway of bridge `br0`",
        );
        err1(
            &p("10.0.0.5"),
            8,
            6,
            "`ip` must be an IPv4 address with prefix like \"172.16.1.3/24\", not `10.0.0.5`",
        );
        err1(&p("10.0.0.256/24"), 8, 6, "`ip` must be an IPv4 address");
        lab(&p("10.0.0.2/24"));
        // Explicit gateway moves the forbidden address.
        lab(&with_head("gateway = \"10.0.0.254\"\n[[port]]\nname = \"p\"\nbridge = \"br0\"\nip = \"10.0.0.1/24\"\n"));
        err1(
            &with_head("[[port]]\nname = \"a\"\nbridge = \"br0\"\nip = \"10.0.0.9/24\"\n[[port]]\nname = \"b\"\nbridge = \"br0\"\nip = \"10.0.0.9/24\"\n"),
            12,
            6,
            "ip 10.0.0.9 is already used by port `a`",
        );
        // No subnet on the bridge: any ordinary address.
        lab("name = \"x\"\n[[bridge]]\nname = \"b\"\n[[port]]\nname = \"p\"\nbridge = \"b\"\nip = \"203.0.113.7/32\"\n");
        err1("name = \"x\"\n[[bridge]]\nname = \"b\"\n[[port]]\nname = \"p\"\nbridge = \"b\"\nip = \"224.0.0.1/24\"\n", 7, 6, "not a usable unicast address");
    }

    // ---- forwards ---------------------------------------------------------------------

    const PORT_WEB: &str =
        "[[port]]\nname = \"web\"\nbridge = \"br0\"\nnetns = \"web\"\nip = \"10.0.0.3/24\"\n";

    fn fwd(proto: &str, listen: &str, to: &str) -> String {
        format!("[[forward]]\nproto = \"{proto}\"\nlisten = \"{listen}\"\nto = \"{to}\"\n")
    }

    #[test]
    fn forwards() {
        // Lines 5-9 hold the port, 10-13 the forward.
        let ok = lab(&with_head(&format!(
            "{PORT_WEB}{}",
            fwd("udp", "127.0.0.1:53", "10.0.0.3:53")
        )));
        assert_eq!(ok.forwards[0].proto, Proto::Udp);
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                fwd("icmp", "0.0.0.0:1", "10.0.0.3:1")
            )),
            11,
            9,
            "`proto` must be \"tcp\" or \"udp\", not `icmp`",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                fwd("tcp", "0.0.0.0:0", "10.0.0.3:1")
            )),
            12,
            10,
            "`listen` 0.0.0.0:0: the port must be between 1 and 65535",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                fwd("tcp", "0.0.0.0:65536", "10.0.0.3:1")
            )),
            12,
            10,
            "`listen` must be a port like \"8080\" or an IPv4 address and port like \"127.0.0.1:8080\", not `0.0.0.0:65536`",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                fwd("tcp", "0.0.0.0:1", "10.0.0.3")
            )),
            13,
            6,
            "`to` must be an IPv4 address and port",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                fwd("tcp", "0.0.0.0:8080", "172.16.9.9:80")
            )),
            13,
            6,
            "forward to 172.16.9.9:80: no port or service holds that address",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}{}",
                fwd("tcp", "0.0.0.0:8080", "10.0.0.3:80"),
                fwd("tcp", "127.0.0.1:8080", "10.0.0.3:81")
            )),
            16,
            10,
            "tcp port 8080 is already forwarded by the [[forward]] on line 10",
        );
        // The same port number over tcp and udp is fine.
        lab(&with_head(&format!(
            "{PORT_WEB}{}{}",
            fwd("tcp", "0.0.0.0:53", "10.0.0.3:53"),
            fwd("udp", "0.0.0.0:53", "10.0.0.3:53")
        )));
    }

    #[test]
    fn forward_listen_may_be_a_bare_port_and_proto_defaults_to_tcp() {
        // Lines 5-9 hold the port, 10-12 the forward.
        let l = lab(&with_head(&format!(
            "{PORT_WEB}[[forward]]\nlisten = \"8080\"\nto = \"10.0.0.3:80\"\n"
        )));
        let f = &l.forwards[0];
        assert_eq!(f.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(f.proto, Proto::Tcp);
        assert_eq!(f.pos, Pos { line: 10, col: 1 });
        // Inline, with proto given, and with leading zeros.
        let l = lab(&format!(
            "name = \"t\"\nforward = [{{ listen = \"53\", proto = \"udp\", to = \"10.0.0.3:53\" }}, {{ listen = \"0080\", to = \"10.0.0.3:80\" }}]\n[[bridge]]\nname = \"br0\"\nsubnet = \"10.0.0.0/24\"\n{PORT_WEB}"
        ));
        assert_eq!(l.forwards[0].listen, "0.0.0.0:53".parse().unwrap());
        assert_eq!(l.forwards[0].proto, Proto::Udp);
        assert_eq!(l.forwards[1].listen, "0.0.0.0:80".parse().unwrap());
        assert_eq!(l.forwards[1].proto, Proto::Tcp);
        // An address still works as before.
        let l = lab(&with_head(&format!(
            "{PORT_WEB}[[forward]]\nlisten = \"127.0.0.1:8080\"\nto = \"10.0.0.3:80\"\n"
        )));
        assert_eq!(l.forwards[0].listen, "127.0.0.1:8080".parse().unwrap());

        let bad = |listen: &str| {
            with_head(&format!(
                "{PORT_WEB}[[forward]]\nlisten = \"{listen}\"\nto = \"10.0.0.3:80\"\n"
            ))
        };
        for port in ["0", "65536", "99999999999999999999"] {
            err1(
                &bad(port),
                11,
                10,
                &format!("`listen` port `{port}`: the port must be between 1 and 65535"),
            );
        }
        for text in [
            "", "+8080", "-1", " 8080", "8080 ", "http", ":8080", "8080:80",
        ] {
            err1(
                &bad(text),
                11,
                10,
                &format!(
                    "`listen` must be a port like \"8080\" or an IPv4 address and port like \"127.0.0.1:8080\", not `{text}`"
                ),
            );
        }
        // Not a string at all.
        err1(
            &with_head(&format!(
                "{PORT_WEB}[[forward]]\nlisten = 8080\nto = \"10.0.0.3:80\"\n"
            )),
            11,
            10,
            "`listen` must be a string, not an integer",
        );
        // A bare port and an address with the same port are the same port.
        err1(
            &with_head(&format!(
                "{PORT_WEB}[[forward]]\nlisten = \"8080\"\nto = \"10.0.0.3:80\"\n[[forward]]\nproto = \"tcp\"\nlisten = \"127.0.0.1:8080\"\nto = \"10.0.0.3:81\"\n"
            )),
            15,
            10,
            "tcp port 8080 is already forwarded by the [[forward]] on line 10",
        );
        // A bad proto is still an error when given.
        err1(
            &with_head(&format!(
                "{PORT_WEB}[[forward]]\nproto = \"TCP\"\nlisten = \"8080\"\nto = \"10.0.0.3:80\"\n"
            )),
            11,
            9,
            "`proto` must be \"tcp\" or \"udp\", not `TCP`",
        );
        // Without proto the forward is tcp, so a udp service's VIP is not its target.
        let svc = "[[service]]\nname = \"dns\"\nvip = \"10.0.0.100:53\"\nproto = \"udp\"\nbackends = [\"10.0.0.3:53\"]\n";
        err1(
            &with_head(&format!(
                "{PORT_WEB}{svc}[[forward]]\nlisten = \"53\"\nto = \"10.0.0.100:53\"\n"
            )),
            17,
            6,
            "forward to 10.0.0.100:53: no port or service holds that address",
        );
    }

    #[test]
    fn forward_to_a_service_vip() {
        let svc = "[[service]]\nname = \"api\"\nvip = \"10.0.0.100:80\"\nproto = \"tcp\"\nbackends = [\"10.0.0.3:80\"]\n";
        lab(&with_head(&format!(
            "{PORT_WEB}{svc}{}",
            fwd("tcp", "0.0.0.0:8080", "10.0.0.100:80")
        )));
        // Wrong protocol or port: not the service.
        let e = errs(&with_head(&format!(
            "{PORT_WEB}{svc}{}",
            fwd("udp", "0.0.0.0:8080", "10.0.0.100:80")
        )));
        assert_eq!(
            e,
            vec!["18:6: forward to 10.0.0.100:80: no port or service holds that address"]
        );
        let e = errs(&with_head(&format!(
            "{PORT_WEB}{svc}{}",
            fwd("tcp", "0.0.0.0:8080", "10.0.0.100:81")
        )));
        assert_eq!(
            e,
            vec!["18:6: forward to 10.0.0.100:81: no port or service holds that address"]
        );
    }

    // ---- services ---------------------------------------------------------------------

    fn svc(name: &str, vip: &str, proto: &str, backends: &str) -> String {
        format!("[[service]]\nname = \"{name}\"\nvip = \"{vip}\"\nproto = \"{proto}\"\nbackends = {backends}\n")
    }

    #[test]
    fn services() {
        // Port on lines 5-9, the service's name on 11, vip 12, proto 13, backends 14.
        let good = svc(
            "api",
            "10.0.0.100:80",
            "tcp",
            "[\"10.0.0.3:80\", \"10.0.0.4:80\"]",
        );
        let l = lab(&with_head(&format!("{PORT_WEB}{good}")));
        assert_eq!(l.services[0].backends.len(), 2);
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                svc("api", "10.9.0.100:80", "tcp", "[\"10.0.0.3:80\"]")
            )),
            12,
            7,
            "vip 10.9.0.100:80 is not inside any bridge's subnet",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                svc("api", "10.0.0.3:80", "tcp", "[\"10.0.0.4:80\"]")
            )),
            12,
            7,
            "vip 10.0.0.3:80 uses the address of port `web`",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                svc("api", "10.0.0.1:80", "tcp", "[\"10.0.0.3:80\"]")
            )),
            12,
            7,
            "vip 10.0.0.1:80 is the gateway of bridge `br0`",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                svc("api", "10.0.0.100", "tcp", "[\"10.0.0.3:80\"]")
            )),
            12,
            7,
            "`vip` must be an IPv4 address and port like \"172.16.1.100:80\"",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                svc("api", "10.0.0.100:80", "sctp", "[\"10.0.0.3:80\"]")
            )),
            13,
            9,
            "`proto` must be \"tcp\" or \"udp\", not `sctp`",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                svc("api", "10.0.0.100:80", "tcp", "[]")
            )),
            14,
            12,
            "`backends` must list at least one",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                svc(
                    "api",
                    "10.0.0.100:80",
                    "tcp",
                    "[\"10.0.0.3:80\", \"10.5.0.3:80\"]"
                )
            )),
            14,
            28,
            "backend 10.5.0.3:80 is not inside any bridge's subnet and no port holds it",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                svc(
                    "api",
                    "10.0.0.100:80",
                    "tcp",
                    "[\"10.0.0.3:80\", \"10.0.0.3:80\"]"
                )
            )),
            14,
            28,
            "backend 10.0.0.3:80 is listed twice",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                svc("api", "10.0.0.100:80", "tcp", "[\"10.0.0.3:0\"]")
            )),
            14,
            13,
            "each backend 10.0.0.3:0: the port must be between 1 and 65535",
        );
        err1(
            &with_head(&format!(
                "{PORT_WEB}{}",
                svc("api", "10.0.0.100:80", "tcp", "[\"10.0.0.1:80\"]")
            )),
            14,
            13,
            "backend 10.0.0.1:80 is the gateway of bridge `br0`",
        );
        // Duplicate names and VIPs; the same VIP over udp is another service.
        let two = format!(
            "{PORT_WEB}{good}{}",
            svc("api", "10.0.0.100:80", "tcp", "[\"10.0.0.3:80\"]")
        );
        assert_eq!(
            errs(&with_head(&two)),
            vec![
                "16:8: duplicate service name `api` (first defined on line 11)",
                "17:7: tcp vip 10.0.0.100:80 is already used by service `api`",
            ]
        );
        lab(&with_head(&format!(
            "{PORT_WEB}{good}{}",
            svc("dns", "10.0.0.100:80", "udp", "[\"10.0.0.3:80\"]")
        )));
    }

    #[test]
    fn backend_on_a_bridge_without_subnet() {
        lab("name = \"x\"\n[[bridge]]\nname = \"b\"\nsubnet = \"10.0.0.0/24\"\n[[bridge]]\nname = \"flat\"\n[[port]]\nname = \"p\"\nbridge = \"flat\"\nip = \"192.168.5.5/24\"\n[[service]]\nname = \"s\"\nvip = \"10.0.0.50:1\"\nproto = \"udp\"\nbackends = [\"192.168.5.5:1\", \"10.0.0.77:1\"]\n");
    }

    // ---- nat and vxlan ----------------------------------------------------------------

    #[test]
    fn vxlan_table() {
        let vx = |listen: &str, peers: &str| {
            format!("name = \"x\"\n[vxlan]\nlisten = \"{listen}\"\npeers = {peers}\n")
        };
        lab(&vx("192.0.2.1:4789", "[\"192.0.2.2:4789\"]"));
        err1(
            &vx("192.0.2.1:4789", "[]"),
            4,
            9,
            "`peers` must list at least one",
        );
        err1(
            &vx("192.0.2.1:4789", "[\"192.0.2.2:4789\", \"192.0.2.2:4789\"]"),
            4,
            28,
            "peer 192.0.2.2:4789 is listed twice",
        );
        err1(
            &vx("192.0.2.1:4789", "[\"192.0.2.1:4789\"]"),
            4,
            10,
            "peer 192.0.2.1:4789 is this host's own `listen` address",
        );
        err1(
            &vx("192.0.2.1:4789", "[\"192.0.2.2\"]"),
            4,
            10,
            "each peer must be an IPv4 address and port like \"192.0.2.2:4789\"",
        );
        err1(
            &vx("192.0.2.1:4789", "[\"0.0.0.0:4789\"]"),
            4,
            10,
            "peer 0.0.0.0:4789 must be a unicast address",
        );
        err1(
            &vx("192.0.2.1", "[\"192.0.2.2:4789\"]"),
            3,
            10,
            "`listen` must be an IPv4 address and port like \"192.0.2.1:4789\"",
        );
        err1(
            &vx("192.0.2.1:0", "[\"192.0.2.2:4789\"]"),
            3,
            10,
            "`listen` 192.0.2.1:0: the port must be between 1 and 65535",
        );
    }

    // ---- robustness -------------------------------------------------------------------

    #[test]
    fn all_problems_are_reported_and_sorted() {
        let text = "name = \"bad name\"\n[[bridge]]\nname = \"br0\"\nsubnet = \"10.0.0.1/24\"\nmtu = 1\n[[port]]\nname = \"p\"\nbridge = \"br1\"\nmac = \"ff:ff:ff:ff:ff:ff\"\nbogus = 1\n";
        let e = errs(text);
        let pos: Vec<&str> = e.iter().map(|s| s.split(": ").next().unwrap()).collect();
        assert_eq!(
            pos,
            vec!["1:8", "4:10", "5:7", "8:10", "9:7", "10:1"],
            "{e:#?}"
        );
    }

    /// Mutations of the SPEC example at every offset never panic, and every error has a
    /// position inside the text.
    #[test]
    fn garbage_never_panics() {
        let base = spec_example();
        let bytes = base.as_bytes();
        let nlines = base.lines().count() + 1;
        let check = |text: &str| {
            if let Err(errs) = parse("g.toml", text) {
                assert!(!errs.is_empty());
                for e in &errs {
                    assert!(e.pos.line >= 1 && e.pos.line <= nlines + 1, "{e}");
                    assert!(e.pos.col >= 1, "{e}");
                    assert!(!e.message.contains('\n'), "{e}");
                }
            }
        };
        for i in 0..=bytes.len() {
            check(&base[..i]);
        }
        let subst = [b'"', b'[', b']', b'=', b'\n', b'0', b'.', b':', b'x', b'{'];
        for i in 0..bytes.len() {
            let mut v = bytes.to_vec();
            v.remove(i);
            check(std::str::from_utf8(&v).unwrap());
            for &c in &subst {
                let mut v = bytes.to_vec();
                v[i] = c;
                check(std::str::from_utf8(&v).unwrap());
            }
        }
        // Numbers at the edges of every range.
        for n in [
            "-1",
            "0",
            "9223372036854775807",
            "-9223372036854775808",
            "4294967296",
            "1e3",
            "nan",
        ] {
            for key in ["mtu", "vni", "fdb_max", "fdb_aging_s"] {
                check(&base.replacen(&format!("{key} = "), &format!("{key} = {n} #"), 1));
            }
        }
        // Non-UTF-8-looking but valid text, BOM, CRLF.
        check(&format!("\u{feff}{base}"));
        check(&base.replace('\n', "\r\n"));
        check("\u{0}\u{7f}é😀");
    }

    #[test]
    fn crlf_positions() {
        let text = "name = \"x\"\r\n[[bridge]]\r\nname = \"b\"\r\nmtu = 1\r\n";
        assert_eq!(
            errs(text),
            vec!["4:7: `mtu` must be between 68 and 65521, not 1"]
        );
    }

    #[test]
    fn load_reports_unreadable_files() {
        let e = load(Path::new("/nonexistent/lab.toml")).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].pos, Pos { line: 1, col: 1 });
        assert!(e[0].message.starts_with("cannot read the lab file"));
    }
}
