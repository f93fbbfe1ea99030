//! Walking the TOML document: byte offsets turned into `LINE:COL`, the tables of the
//! file ([`Sec`]), values read with where they start ([`F`]), and the checks every
//! section shares (unknown keys, missing keys, types, ranges, addresses), each problem
//! collected in [`Cx`] rather than returned. It knows nothing of bridges or ports:
//! the section validators in `validate` do.

use std::net::SocketAddr;

use toml_edit::{Item, TableLike, Value};

use crate::model::Proto;

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

/// Reads `text` as TOML and hands its top level to `validate`; every problem the
/// validation reported (or the syntax error, alone) comes back sorted by position,
/// each as `FILE:LINE:COL: message`.
pub(crate) fn read<T>(
    file: &str,
    text: &str,
    validate: impl FnOnce(&mut Cx<'_>, &Sec<'_>) -> T,
) -> Result<T, Vec<LabError>> {
    let lines = LineIndex::new(text);
    let mut cx = Cx {
        lines: &lines,
        errs: Vec::new(),
    };
    let value = match toml_edit::Document::parse(text) {
        Ok(doc) => {
            let root = Sec {
                what: "the top level",
                t: doc.as_table(),
                at: 0,
            };
            Some(validate(&mut cx, &root))
        }
        Err(e) => {
            let at = e.span().map_or(text.len(), |s| s.start);
            let mut message = one_line(e.message());
            // toml_edit says only "duplicate key"; its span is the key (or the
            // table's name, for a second `[nat]`): name it.
            let key = e
                .span()
                .and_then(|s| text.get(s))
                .and_then(|k| k.lines().next())
                .map(str::trim)
                .filter(|k| !k.is_empty());
            if let (true, Some(key)) = (message == "duplicate key", key) {
                message = format!("duplicate key `{key}`");
            }
            cx.err(at, format!("syntax error: {message}"));
            None
        }
    };
    match value {
        Some(value) if cx.errs.is_empty() => Ok(value),
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

/// Byte offsets of line starts, to turn a byte offset into a 1-based line and column
/// (the column counted in characters).
pub(crate) struct LineIndex<'a> {
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
pub(crate) struct F<T> {
    pub(crate) v: T,
    pub(crate) at: usize,
}

/// One table of the file: the top level, one `[[port]]`, `[nat]`, ...
pub(crate) struct Sec<'a> {
    /// How messages name it: "[[port]]", "the top level".
    what: &'static str,
    t: &'a dyn TableLike,
    /// Where its header starts (where missing keys are reported).
    pub(crate) at: usize,
}

impl<'a> Sec<'a> {
    pub(crate) fn key_at(&self, key: &str) -> usize {
        self.t
            .get_key_value(key)
            .and_then(|(k, _)| k.span())
            .map_or(self.at, |s| s.start)
    }

    /// The item under `key` (if any) and where its value starts.
    pub(crate) fn item(&self, key: &str) -> Option<(&'a Item, usize)> {
        let item = self.t.get(key)?;
        if item.is_none() {
            return None;
        }
        let at = item.span().map_or_else(|| self.key_at(key), |s| s.start);
        Some((item, at))
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.item(key).is_some()
    }

    /// "in [[port]]" / "at the top level"
    pub(crate) fn where_(&self) -> String {
        if self.what.starts_with('[') {
            format!("in {}", self.what)
        } else {
            format!("at {}", self.what)
        }
    }
}

/// The validation under way: where the lines start, and every problem found so far,
/// each at its byte offset.
pub(crate) struct Cx<'l> {
    lines: &'l LineIndex<'l>,
    errs: Vec<(usize, String)>,
}

impl Cx<'_> {
    pub(crate) fn err(&mut self, at: usize, msg: impl Into<String>) {
        self.errs.push((at, msg.into()));
    }

    pub(crate) fn pos(&self, at: usize) -> Pos {
        self.lines.pos(at)
    }

    pub(crate) fn line(&self, at: usize) -> usize {
        self.lines.pos(at).line
    }

    pub(crate) fn check_keys(&mut self, s: &Sec<'_>, allowed: &[&str]) {
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

    pub(crate) fn require(&mut self, s: &Sec<'_>, keys: &[&str]) {
        for key in keys {
            if !s.has(key) {
                self.err(s.at, format!("missing required key `{key}` {}", s.where_()));
            }
        }
    }

    pub(crate) fn type_err(&mut self, at: usize, key: &str, expected: &str, item: &Item) {
        self.err(
            at,
            format!("`{key}` must be {expected}, not {}", a_type(item)),
        );
    }

    pub(crate) fn str_<'a>(&mut self, s: &Sec<'a>, key: &str) -> Option<F<&'a str>> {
        let (item, at) = s.item(key)?;
        match item.as_str() {
            Some(v) => Some(F { v, at }),
            None => {
                self.type_err(at, key, "a string", item);
                None
            }
        }
    }

    pub(crate) fn bool_(&mut self, s: &Sec<'_>, key: &str) -> Option<F<bool>> {
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
    pub(crate) fn int(&mut self, s: &Sec<'_>, key: &str, lo: i64, hi: i64) -> Option<F<i64>> {
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
    pub(crate) fn str_list<'a>(&mut self, s: &Sec<'a>, key: &str) -> Option<F<Vec<F<&'a str>>>> {
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

    pub(crate) fn proto(&mut self, s: &Sec<'_>) -> Option<Proto> {
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
    /// An IPv4 or IPv6 socket address (`192.0.2.1:4789`, `[2001:db8::1]:4789`) with
    /// a port other than 0, or an error at `f`. An IPv4-mapped IPv6 address is refused
    /// (write the IPv4 address: a socket would reach the host's IPv4 side with it).
    pub(crate) fn sockaddr_any(
        &mut self,
        f: F<&str>,
        what: &str,
        example: &str,
    ) -> Option<SocketAddr> {
        match f.v.parse::<SocketAddr>() {
            Ok(a) if a.port() == 0 => {
                self.err(
                    f.at,
                    format!("{what} {a}: the port must be between 1 and 65535"),
                );
                None
            }
            // A scope ("[fe80::1%eth0]:80") names an interface of the host, not the lab.
            Ok(SocketAddr::V6(a)) if a.scope_id() != 0 || a.flowinfo() != 0 => {
                self.err(f.at, format!("{what} {}: no scope here", q(f.v)));
                None
            }
            Ok(SocketAddr::V6(a)) if a.ip().to_ipv4_mapped().is_some() => {
                let v4 = a.ip().to_ipv4_mapped().expect("checked");
                self.err(
                    f.at,
                    format!(
                        "{what} {a}: an IPv4-mapped address; write the IPv4 address ({v4}:{})",
                        a.port()
                    ),
                );
                None
            }
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    f.at,
                    format!(
                        "{what} must be an IPv4 or IPv6 address and port like \"{example}\" or \"[2001:db8::1]:{}\", not {}",
                        example.rsplit(':').next().unwrap_or("80"),
                        q(f.v)
                    ),
                );
                None
            }
        }
    }

    /// The tables of an array of tables (`[[port]]`, or `port = [{...}, ...]`).
    pub(crate) fn array<'a>(
        &mut self,
        root: &Sec<'a>,
        key: &'static str,
        what: &'static str,
    ) -> Vec<Sec<'a>> {
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
    pub(crate) fn table<'a>(
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

/// `text` quoted for a one-line message: backticks, escapes, at most 40 characters.
pub(crate) fn q(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use crate::testutil::*;

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
        assert_eq!(
            e,
            vec!["2:1: syntax error: duplicate key `name`".to_string()]
        );
        // A second table of the same name, named.
        let e = errs("name = \"x\"\n[nat]\nmasquerade = true\n[nat]\n");
        assert_eq!(
            e,
            vec!["4:2: syntax error: duplicate key `nat`".to_string()]
        );
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
                "8:3: unknown key `colour` in [[port]] (expected one of `name`, `bridge`, `netns`, `ifname`, `mac`, `ip`, `ip6`, `impair`, `mirror`, `spoof_check`, `qemu`)",
                "10:1: unknown key `masq` in [nat] (expected one of `masquerade`, `max_flows`, `tcp_timeout_s`, `tcp_closing_timeout_s`, `udp_timeout_s`, `icmp_timeout_s`)",
                "14:6: forward to 10.0.0.9:1: no port or service holds that address",
                "15:1: unknown key `x` in [[forward]] (expected one of `proto`, `listen`, `to`)",
            ]
        );
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
                "7:1: [vxlan] needs `peers` (static tunnel endpoints), `etcd` (endpoints found through the store), or both",
                "8:1: masquerade needs a bridge with a `subnet` or `subnet6`: its gateway is the containers' way out",
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

    #[test]
    fn crlf_positions() {
        let text = "name = \"x\"\r\n[[bridge]]\r\nname = \"b\"\r\nmtu = 1\r\n";
        assert_eq!(
            errs(text),
            vec!["4:7: `mtu` must be between 68 and 65521, not 1"]
        );
    }

    #[test]
    fn display_format() {
        let e = parse("lab.toml", "name = 1\n").unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "lab.toml:1:8: `name` must be a string, not an integer"
        );
    }

    #[test]
    fn inline_tables_are_accepted() {
        let l = lab("name = \"x\"\nbridge = [{ name = \"br0\", subnet = \"10.1.0.0/16\" }]\nport = [{ name = \"p\", bridge = \"br0\", ip = \"10.1.2.3/16\" }]\nnat = { masquerade = false }\n");
        assert_eq!(l.ports[0].ip, Some((Ipv4Addr::new(10, 1, 2, 3), 16)));
        assert!(!l.nat.unwrap().masquerade);
    }
}
