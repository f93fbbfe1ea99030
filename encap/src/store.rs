//! The hosts of a lab as a key-value store (etcd) knows them, with no IO: the key
//! layout, one host's registration as a value, and the view a tunnel endpoint keeps
//! from the store's events. The client that talks to etcd (`daemon::etcd`) feeds
//! events in; [`crate::Endpoint::set_store_hosts`] takes the hosts out.
//!
//! # Key layout, version 1
//! One key per host, under the lab's prefix, held by the host's lease:
//!
//! ```text
//! {etcd_prefix}v1/{lab}/hosts/{ip}:{port}     (etcd_prefix defaults to "/tapnet/")
//! ```
//!
//! Its value is JSON:
//!
//! ```json
//! {"version": 1, "lab": "shop", "vtep": "10.0.0.1:4789", "vnis": [42],
//!  "ports": [{"vni": 42, "mac": "02:00:ac:10:02:0a", "ip": "172.16.2.10"}]}
//! ```
//!
//! `vtep` is the host's VXLAN endpoint (its `[vxlan] listen`), `vnis` the VNIs it
//! serves, `ports` its containers' MAC (and IPv4 address, when it has one) per VNI.
//! A reader ignores keys it does not know and fields it does not know; a value that
//! does not read as above, or whose key is not its `vtep`, is counted and ignored.

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use serde_json::{json, Value};
use vswitch::Mac;

/// The layout's version: the first path element after the prefix.
pub const LAYOUT_VERSION: u64 = 1;
/// Hosts a view holds at most: past it, new hosts are counted (`hosts_over_limit`)
/// and ignored until others leave.
pub const MAX_HOSTS: usize = 4096;
/// Ports one registration may list: a value with more is malformed.
pub const MAX_PORTS_PER_HOST: usize = 4096;
/// The largest value read, in bytes (etcd's own request limit is 1.5 MiB).
pub const MAX_VALUE: usize = 1 << 20;

/// The prefix every host of lab `lab` registers under (ends with `/`).
pub fn lab_prefix(prefix: &str, lab: &str) -> String {
    format!("{prefix}v{LAYOUT_VERSION}/{lab}/hosts/")
}

/// The key of the host whose VXLAN endpoint is `vtep`.
pub fn host_key(prefix: &str, lab: &str, vtep: SocketAddrV4) -> String {
    format!("{}{vtep}", lab_prefix(prefix, lab))
}

/// One container port a host registers: on VNI `vni`, MAC `mac`, and its IPv4
/// address if it has one (for ARP suppression).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemotePort {
    pub vni: u32,
    pub mac: Mac,
    pub ip: Option<Ipv4Addr>,
}

/// What one host says of itself in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub vtep: SocketAddrV4,
    pub vnis: Vec<u32>,
    pub ports: Vec<RemotePort>,
}

/// Why a value was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Not JSON, not the layout above, too large, or a key that is not its `vtep`'s.
    Malformed,
    /// Another lab's registration (its `lab` is not ours).
    OtherLab,
    /// A layout version this tapnet does not read.
    OtherVersion,
}

impl Registration {
    /// The value stored under [`host_key`], for lab `lab`.
    pub fn to_value(&self, lab: &str) -> String {
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|p| json!({"vni": p.vni, "mac": p.mac.to_string(), "ip": p.ip.map(|a| a.to_string())}))
            .collect();
        json!({
            "version": LAYOUT_VERSION,
            "lab": lab,
            "vtep": self.vtep.to_string(),
            "vnis": self.vnis,
            "ports": ports,
        })
        .to_string()
    }

    /// Reads the value under `key` for lab `lab` (whose hosts are under `lab_prefix`).
    pub fn from_value(
        lab_prefix: &str,
        lab: &str,
        key: &str,
        value: &[u8],
    ) -> Result<Registration, Ignored> {
        if value.len() > MAX_VALUE {
            return Err(Ignored::Malformed);
        }
        let v: Value = serde_json::from_slice(value).map_err(|_| Ignored::Malformed)?;
        match v.get("version").and_then(Value::as_u64) {
            Some(LAYOUT_VERSION) => {}
            Some(_) => return Err(Ignored::OtherVersion),
            None => return Err(Ignored::Malformed),
        }
        match v.get("lab").and_then(Value::as_str) {
            Some(l) if l == lab => {}
            Some(_) => return Err(Ignored::OtherLab),
            None => return Err(Ignored::Malformed),
        }
        let vtep: SocketAddrV4 = v
            .get("vtep")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .ok_or(Ignored::Malformed)?;
        let unicast = |ip: Ipv4Addr| {
            !(ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback())
        };
        // The key names the endpoint: one host cannot speak for another's.
        if key.strip_prefix(lab_prefix) != Some(vtep.to_string().as_str())
            || !unicast(*vtep.ip())
            || vtep.port() == 0
        {
            return Err(Ignored::Malformed);
        }
        let vni = |n: &Value| {
            n.as_u64()
                .filter(|n| (1..=0xff_ffff).contains(n))
                .map(|n| n as u32)
        };
        let vnis: Vec<u32> = v
            .get("vnis")
            .and_then(Value::as_array)
            .ok_or(Ignored::Malformed)?
            .iter()
            .map(vni)
            .collect::<Option<_>>()
            .ok_or(Ignored::Malformed)?;
        let list = v
            .get("ports")
            .and_then(Value::as_array)
            .ok_or(Ignored::Malformed)?;
        if list.len() > MAX_PORTS_PER_HOST || vnis.len() > MAX_PORTS_PER_HOST {
            return Err(Ignored::Malformed);
        }
        let mut ports = Vec::with_capacity(list.len());
        for p in list {
            let vni = p.get("vni").and_then(vni).ok_or(Ignored::Malformed)?;
            let mac: Mac = p
                .get("mac")
                .and_then(Value::as_str)
                .and_then(|m| m.parse().ok())
                .filter(|m: &Mac| !m.is_multicast() && !m.is_zero())
                .ok_or(Ignored::Malformed)?;
            let ip = match p.get("ip") {
                None | Some(Value::Null) => None,
                Some(ip) => Some(
                    ip.as_str()
                        .and_then(|s| s.parse::<Ipv4Addr>().ok())
                        .filter(|a| unicast(*a))
                        .ok_or(Ignored::Malformed)?,
                ),
            };
            if !vnis.contains(&vni) {
                return Err(Ignored::Malformed);
            }
            ports.push(RemotePort { vni, mac, ip });
        }
        Ok(Registration { vtep, vnis, ports })
    }
}

/// What the view took and ignored, for `show vxlan`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewStats {
    /// Registrations taken (puts of a host's key, snapshots included).
    pub puts: u64,
    /// Hosts that left (their key deleted or their lease expired).
    pub deletes: u64,
    /// Values ignored as [`Ignored::Malformed`] (or of another layout version).
    pub bad_values: u64,
    /// Values ignored as another lab's.
    pub other_labs: u64,
    /// New hosts ignored past [`MAX_HOSTS`].
    pub hosts_over_limit: u64,
}

/// How the store looks from this host, for `show vxlan`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStatus {
    /// The endpoints tried, in turn.
    pub endpoints: Vec<String>,
    /// When the store stopped answering (None: it answers). The last known view is
    /// kept meanwhile.
    pub unreachable_since: Option<std::time::SystemTime>,
    /// Why, the last time a request failed.
    pub last_error: Option<String>,
    /// This host's key is in the store under a live lease.
    pub registered: bool,
    /// Times this host registered (a new lease each: after a start, or after its
    /// lease expired while the store was out of reach).
    pub registrations: u64,
    /// The store revision the view is at.
    pub revision: i64,
    pub view: ViewStats,
}

/// What the store client tells the datapath: the hosts, if they changed, and the
/// status.
#[derive(Debug, Clone)]
pub struct StoreUpdate {
    pub hosts: Option<Vec<Registration>>,
    pub status: StoreStatus,
}

/// The other hosts of this lab, as the store says now.
#[derive(Debug, Clone)]
pub struct StoreView {
    lab: String,
    prefix: String,
    own: String,
    hosts: BTreeMap<String, Registration>,
    pub stats: ViewStats,
}

impl StoreView {
    /// A view of lab `lab` under store prefix `prefix` (the lab file's
    /// `etcd_prefix`), for the host whose own key is `own` (left out of the view).
    pub fn new(prefix: &str, lab: &str, own: SocketAddrV4) -> StoreView {
        StoreView {
            lab: lab.to_string(),
            prefix: lab_prefix(prefix, lab),
            own: host_key(prefix, lab, own),
            hosts: BTreeMap::new(),
            stats: ViewStats::default(),
        }
    }

    /// The prefix to read and watch: this lab's hosts.
    pub fn watch_prefix(&self) -> &str {
        &self.prefix
    }

    /// This host's own key.
    pub fn own_key(&self) -> &str {
        &self.own
    }

    /// Replaces the view with a full read of the prefix (after a (re)connect, or a
    /// watch that fell behind a compaction). True if the hosts changed.
    pub fn reset<'k>(&mut self, kvs: impl IntoIterator<Item = (&'k str, &'k [u8])>) -> bool {
        let before = std::mem::take(&mut self.hosts);
        for (k, v) in kvs {
            self.put(k, v);
        }
        before != self.hosts
    }

    /// A key put under the prefix. True if the hosts changed.
    pub fn put(&mut self, key: &str, value: &[u8]) -> bool {
        if key == self.own || !key.starts_with(&self.prefix) {
            return false;
        }
        match Registration::from_value(&self.prefix, &self.lab, key, value) {
            Ok(r) => {
                if !self.hosts.contains_key(key) && self.hosts.len() >= MAX_HOSTS {
                    self.stats.hosts_over_limit += 1;
                    return false;
                }
                self.stats.puts += 1;
                self.hosts.insert(key.to_string(), r.clone()) != Some(r)
            }
            Err(why) => {
                match why {
                    Ignored::OtherLab => self.stats.other_labs += 1,
                    Ignored::Malformed | Ignored::OtherVersion => self.stats.bad_values += 1,
                }
                // What the key said before no longer holds.
                self.hosts.remove(key).is_some()
            }
        }
    }

    /// A key deleted (or its lease expired). True if the hosts changed.
    pub fn delete(&mut self, key: &str) -> bool {
        let gone = self.hosts.remove(key).is_some();
        if gone {
            self.stats.deletes += 1;
        }
        gone
    }

    /// The other hosts, in key order, with no two of the same endpoint.
    pub fn hosts(&self) -> Vec<Registration> {
        let mut seen = HashSet::new();
        self.hosts
            .values()
            .filter(|r| seen.insert(r.vtep))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> SocketAddrV4 {
        "10.0.0.1:4789".parse().unwrap()
    }

    fn reg(vtep: &str, mac: u8) -> Registration {
        Registration {
            vtep: vtep.parse().unwrap(),
            vnis: vec![42],
            ports: vec![RemotePort {
                vni: 42,
                mac: Mac([2, 0, 0, 0, 0, mac]),
                ip: Some(Ipv4Addr::new(172, 16, 2, mac)),
            }],
        }
    }

    #[test]
    fn a_registration_reads_back_and_the_own_key_is_left_out() {
        let mut v = StoreView::new("/tapnet/", "shop", me());
        assert_eq!(v.watch_prefix(), "/tapnet/v1/shop/hosts/");
        let other = reg("10.0.0.2:4789", 7);
        let key = host_key("/tapnet/", "shop", other.vtep);
        assert_eq!(key, "/tapnet/v1/shop/hosts/10.0.0.2:4789");
        assert!(v.put(&key, other.to_value("shop").as_bytes()));
        assert!(!v.put(&key, other.to_value("shop").as_bytes()), "no change");
        let mine = reg("10.0.0.1:4789", 1);
        assert!(!v.put(
            v.own_key().to_string().as_str(),
            mine.to_value("shop").as_bytes()
        ));
        assert_eq!(v.hosts(), vec![other]);
        assert!(v.delete(&key));
        assert!(v.hosts().is_empty());
        assert_eq!(v.stats.deletes, 1);
    }

    #[test]
    fn bad_values_and_other_labs_are_counted_and_ignored() {
        let mut v = StoreView::new("/tapnet/", "shop", me());
        let p = "/tapnet/v1/shop/hosts/";
        let good = reg("10.0.0.2:4789", 7).to_value("shop");
        let cases: Vec<(String, String)> = vec![
            (format!("{p}10.0.0.2:4789"), "not json".into()),
            (format!("{p}10.0.0.2:4789"), "{}".into()),
            // The key of another endpoint than the value says.
            (format!("{p}10.0.0.3:4789"), good.clone()),
            (
                format!("{p}10.0.0.2:4789"),
                good.replace("02:00:00:00:00:07", "ff:ff:ff:ff:ff:ff"),
            ),
            (
                format!("{p}10.0.0.2:4789"),
                good.replace("\"vni\":42", "\"vni\":0"),
            ),
            (
                format!("{p}10.0.0.2:4789"),
                good.replace("172.16.2.7", "300.1.1.1"),
            ),
            (format!("{p}10.0.0.2:4789"), "[1,2,3]".into()),
            (
                format!("{p}10.0.0.2:4789"),
                good.replace("\"version\":1", "\"version\":2"),
            ),
        ];
        for (k, val) in &cases {
            assert!(!v.put(k, val.as_bytes()), "{val}");
        }
        assert_eq!(v.stats.bad_values, cases.len() as u64);
        assert!(!v.put(
            &format!("{p}10.0.0.2:4789"),
            reg("10.0.0.2:4789", 7).to_value("other").as_bytes()
        ));
        assert_eq!(v.stats.other_labs, 1);
        // Outside the prefix: not ours to read at all.
        assert!(!v.put("/tapnet/v1/other/hosts/10.0.0.2:4789", good.as_bytes()));
        assert!(v.hosts().is_empty());
        // A good value, then a bad one under the same key: the host is gone.
        assert!(v.put(&format!("{p}10.0.0.2:4789"), good.as_bytes()));
        assert!(v.put(&format!("{p}10.0.0.2:4789"), b"garbage"));
        assert!(v.hosts().is_empty());
    }

    #[test]
    fn a_reset_replaces_the_view() {
        let mut v = StoreView::new("/tapnet/", "shop", me());
        let (a, b) = (reg("10.0.0.2:4789", 2), reg("10.0.0.3:4789", 3));
        let (ka, kb) = (
            host_key("/tapnet/", "shop", a.vtep),
            host_key("/tapnet/", "shop", b.vtep),
        );
        v.put(&ka, a.to_value("shop").as_bytes());
        let vb = b.to_value("shop");
        assert!(v.reset([(kb.as_str(), vb.as_bytes())]));
        assert_eq!(v.hosts(), vec![b]);
    }

    #[test]
    fn the_view_holds_at_most_max_hosts() {
        let mut v = StoreView::new("/tapnet/", "shop", me());
        for i in 0..MAX_HOSTS + 3 {
            let r = Registration {
                vtep: SocketAddrV4::new(Ipv4Addr::from(0x0a01_0000 + i as u32), 4789),
                vnis: vec![],
                ports: vec![],
            };
            v.put(
                &host_key("/tapnet/", "shop", r.vtep),
                r.to_value("shop").as_bytes(),
            );
        }
        assert_eq!(v.hosts().len(), MAX_HOSTS);
        assert_eq!(v.stats.hosts_over_limit, 3);
    }
}
