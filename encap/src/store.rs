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
//! {etcd_prefix}v1/{lab}/hosts/[{ipv6}]:{port} (an IPv6 underlay)
//! ```
//!
//! Its value is JSON:
//!
//! ```json
//! {"version": 1, "lab": "shop", "vtep": "10.0.0.1:4789", "vnis": [42],
//!  "ports": [{"vni": 42, "mac": "02:00:ac:10:02:0a", "ip": "172.16.2.10"}]}
//! ```
//!
//! `vtep` is the host's VXLAN endpoint (its `[vxlan] listen`, `"[2001:db8::1]:4789"`
//! for an IPv6 underlay: a view takes only hosts of its own family), `vnis` the VNIs it
//! serves, `ports` its containers' MAC (and IPv4 address, when it has one) per VNI.
//! A reader ignores keys it does not know and fields it does not know; a value that
//! does not read as above, or whose key is not its `vtep`, is counted and ignored.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

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
pub fn host_key(prefix: &str, lab: &str, vtep: SocketAddr) -> String {
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
    pub vtep: SocketAddr,
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
        let vtep: SocketAddr = v
            .get("vtep")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .ok_or(Ignored::Malformed)?;
        let unicast = |ip: Ipv4Addr| {
            !(ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback())
        };
        let unicast_vtep = match vtep.ip() {
            IpAddr::V4(ip) => unicast(ip),
            IpAddr::V6(ip) => {
                !(ip.is_unspecified() || ip.is_multicast() || ip.is_loopback())
                    && ip.to_ipv4_mapped().is_none()
            }
        };
        // The key names the endpoint: one host cannot speak for another's.
        if key.strip_prefix(lab_prefix) != Some(vtep.to_string().as_str())
            || !unicast_vtep
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
    /// Registered ports left out because they claim an address or MAC of this
    /// host's own containers (a stale or forged registration must not answer ARP
    /// for them).
    pub conflicts: u64,
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

/// A change in the other hosts, as the endpoint takes it
/// ([`crate::Endpoint::apply_store`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChange {
    /// A host registered, or changed what it has.
    Put(Registration),
    /// The host at this endpoint left.
    Gone(SocketAddr),
    /// All the hosts there are (after a full read of the store).
    Reset(Vec<Registration>),
}

/// What the store client tells the datapath: what changed in the hosts, and the
/// status.
#[derive(Debug, Clone)]
pub struct StoreUpdate {
    pub changes: Vec<StoreChange>,
    pub status: StoreStatus,
}

/// The other hosts of this lab, as the store says now.
#[derive(Debug, Clone)]
pub struct StoreView {
    lab: String,
    prefix: String,
    own: String,
    /// This host's own ports: no other host's registration may claim their MAC or
    /// address.
    own_macs: HashSet<Mac>,
    own_ips: HashSet<Ipv4Addr>,
    /// Addresses no other host's endpoint may be: this host's own and its links'
    /// broadcasts, the store's (a forged key must not turn floods on them).
    not_vteps: HashSet<IpAddr>,
    /// This host's underlay family: a host of the other one cannot be reached from
    /// its sockets, and is ignored as a bad value.
    own_v6: bool,
    /// By key: the creation revision and the registration.
    hosts: BTreeMap<String, (i64, Registration)>,
    pub stats: ViewStats,
}

impl StoreView {
    /// A view of lab `lab` under store prefix `prefix` (the lab file's
    /// `etcd_prefix`), for the host whose own key is `own` (left out of the view).
    pub fn new(prefix: &str, lab: &str, own: SocketAddr) -> StoreView {
        StoreView {
            lab: lab.to_string(),
            prefix: lab_prefix(prefix, lab),
            own: host_key(prefix, lab, own),
            own_macs: HashSet::new(),
            own_ips: HashSet::new(),
            not_vteps: HashSet::new(),
            own_v6: own.is_ipv6(),
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

    /// This host's own registration (at the start, and after each attach or
    /// detach), and the other addresses it answers for on its VNI bridges (gateways,
    /// service VIPs): no other host's registration may claim them. Every host is
    /// read again against them.
    pub fn set_own(&mut self, own: &Registration, also: &[Ipv4Addr]) -> StoreChange {
        self.own_macs = own.ports.iter().map(|p| p.mac).collect();
        self.own_ips = own.ports.iter().filter_map(|p| p.ip).collect();
        self.own_ips.extend(also.iter().copied());
        StoreChange::Reset(self.hosts())
    }

    /// Addresses that no other host's endpoint may be (this host's own, its links'
    /// broadcast addresses, the store's): a registration naming one is ignored and
    /// counted as a bad value.
    pub fn set_not_vteps(&mut self, ips: impl IntoIterator<Item = IpAddr>) {
        self.not_vteps = ips.into_iter().collect();
    }

    /// Replaces the view with a full read of the prefix (after a (re)connect, or a
    /// watch that fell behind a compaction): keys, values and their creation
    /// revisions.
    pub fn reset<'k>(
        &mut self,
        kvs: impl IntoIterator<Item = (&'k str, &'k [u8], i64)>,
    ) -> StoreChange {
        self.hosts.clear();
        for (k, v, created) in kvs {
            self.put(k, v, created);
        }
        StoreChange::Reset(self.hosts())
    }

    /// A key put under the prefix, created at store revision `created` (the earlier
    /// registration of a MAC or address keeps it, on every host alike): what
    /// changed, if anything.
    pub fn put(&mut self, key: &str, value: &[u8], created: i64) -> Option<StoreChange> {
        if key == self.own || !key.starts_with(&self.prefix) {
            return None;
        }
        let read = Registration::from_value(&self.prefix, &self.lab, key, value).and_then(|r| {
            if self.not_vteps.contains(&r.vtep.ip()) || r.vtep.is_ipv6() != self.own_v6 {
                Err(Ignored::Malformed)
            } else {
                Ok(r)
            }
        });
        match read {
            Ok(r) => {
                if !self.hosts.contains_key(key) && self.hosts.len() >= MAX_HOSTS {
                    self.stats.hosts_over_limit += 1;
                    return None;
                }
                self.stats.puts += 1;
                let old = self.hosts.insert(key.to_string(), (created, r.clone()));
                if old.is_some_and(|(_, o)| o == r) {
                    return None;
                }
                let kept = self.without_own(r);
                self.stats.conflicts += (self.hosts[key].1.ports.len() - kept.ports.len()) as u64;
                Some(StoreChange::Put(kept))
            }
            Err(why) => {
                match why {
                    Ignored::OtherLab => self.stats.other_labs += 1,
                    Ignored::Malformed | Ignored::OtherVersion => self.stats.bad_values += 1,
                }
                // What the key said before no longer holds.
                self.hosts
                    .remove(key)
                    .map(|(_, old)| StoreChange::Gone(old.vtep))
            }
        }
    }

    /// A key deleted (or its lease expired): what changed, if anything.
    pub fn delete(&mut self, key: &str) -> Option<StoreChange> {
        let (_, old) = self.hosts.remove(key)?;
        self.stats.deletes += 1;
        Some(StoreChange::Gone(old.vtep))
    }

    /// The other hosts, the earliest registered first (so that everyone gives a
    /// contested MAC or address to the same host), less what claims this host's own.
    pub fn hosts(&self) -> Vec<Registration> {
        let mut all: Vec<&(i64, Registration)> = self.hosts.values().collect();
        all.sort_by_key(|(created, _)| *created);
        all.into_iter()
            .map(|(_, r)| self.without_own(r.clone()))
            .collect()
    }

    /// `r` without the ports that claim a MAC or address of this host's own.
    fn without_own(&self, mut r: Registration) -> Registration {
        r.ports.retain(|p| {
            !self.own_macs.contains(&p.mac) && !p.ip.is_some_and(|ip| self.own_ips.contains(&ip))
        });
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> SocketAddr {
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
    fn an_ipv6_underlay_keys_hosts_by_bracketed_address_and_takes_only_ipv6_hosts() {
        let me6: SocketAddr = "[2001:db8::1]:4789".parse().unwrap();
        let mut v = StoreView::new("/tapnet/", "shop", me6);
        assert_eq!(v.own_key(), "/tapnet/v1/shop/hosts/[2001:db8::1]:4789");
        let other = reg("[2001:db8::2]:4789", 7);
        let key = host_key("/tapnet/", "shop", other.vtep);
        assert_eq!(key, "/tapnet/v1/shop/hosts/[2001:db8::2]:4789");
        assert_eq!(
            v.put(&key, other.to_value("shop").as_bytes(), 1),
            Some(StoreChange::Put(other.clone()))
        );
        // An IPv4 host cannot be reached from IPv6 sockets: a bad value here.
        let v4 = reg("10.0.0.2:4789", 8);
        let k4 = host_key("/tapnet/", "shop", v4.vtep);
        assert_eq!(v.put(&k4, v4.to_value("shop").as_bytes(), 2), None);
        assert_eq!(v.stats.bad_values, 1);
        // Nor a multicast, a mapped IPv4 or an own address.
        v.set_not_vteps(["2001:db8::9".parse::<IpAddr>().unwrap()]);
        for bad in [
            "[ff02::1]:4789",
            "[::ffff:10.0.0.3]:4789",
            "[2001:db8::9]:4789",
        ] {
            let r = reg(bad, 9);
            let k = host_key("/tapnet/", "shop", r.vtep);
            assert_eq!(v.put(&k, r.to_value("shop").as_bytes(), 3), None, "{bad}");
        }
        assert_eq!(v.stats.bad_values, 4);
        assert_eq!(v.hosts(), vec![other]);
    }

    #[test]
    fn a_registration_reads_back_and_the_own_key_is_left_out() {
        let mut v = StoreView::new("/tapnet/", "shop", me());
        assert_eq!(v.watch_prefix(), "/tapnet/v1/shop/hosts/");
        let other = reg("10.0.0.2:4789", 7);
        let key = host_key("/tapnet/", "shop", other.vtep);
        assert_eq!(key, "/tapnet/v1/shop/hosts/10.0.0.2:4789");
        assert_eq!(
            v.put(&key, other.to_value("shop").as_bytes(), 1),
            Some(StoreChange::Put(other.clone()))
        );
        assert_eq!(
            v.put(&key, other.to_value("shop").as_bytes(), 2),
            None,
            "no change"
        );
        let mine = reg("10.0.0.1:4789", 1);
        let own = v.own_key().to_string();
        assert_eq!(v.put(&own, mine.to_value("shop").as_bytes(), 3), None);
        assert_eq!(v.hosts(), vec![other.clone()]);
        assert_eq!(v.delete(&key), Some(StoreChange::Gone(other.vtep)));
        assert_eq!(v.delete(&key), None);
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
            (format!("{p}10.0.0.2:4789"), "{\"version\":1}".into()),
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
            (
                format!("{p}127.0.0.1:4789"),
                good.replace("10.0.0.2:4789", "127.0.0.1:4789"),
            ),
            (format!("{p}10.0.0.2:4789"), "[1,2,3]".into()),
            (
                format!("{p}10.0.0.2:4789"),
                good.replace("\"version\":1", "\"version\":2"),
            ),
        ];
        for (k, val) in &cases {
            assert_eq!(v.put(k, val.as_bytes(), 4), None, "{val}");
        }
        assert_eq!(v.stats.bad_values, cases.len() as u64);
        let other_lab = reg("10.0.0.2:4789", 7).to_value("other");
        assert_eq!(
            v.put(&format!("{p}10.0.0.2:4789"), other_lab.as_bytes(), 5),
            None
        );
        assert_eq!(v.stats.other_labs, 1);
        // Outside the prefix: not ours to read at all.
        assert_eq!(
            v.put("/tapnet/v1/other/hosts/10.0.0.2:4789", good.as_bytes(), 6),
            None
        );
        assert!(v.hosts().is_empty());
        // A good value, then a bad one under the same key: the host is gone.
        assert!(v
            .put(&format!("{p}10.0.0.2:4789"), good.as_bytes(), 99)
            .is_some());
        assert_eq!(
            v.put(&format!("{p}10.0.0.2:4789"), b"garbage", 7),
            Some(StoreChange::Gone("10.0.0.2:4789".parse().unwrap()))
        );
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
        v.put(&ka, a.to_value("shop").as_bytes(), 8);
        let vb = b.to_value("shop");
        assert_eq!(
            v.reset([(kb.as_str(), vb.as_bytes(), 9)]),
            StoreChange::Reset(vec![b.clone()])
        );
        assert_eq!(v.hosts(), vec![b]);
    }

    #[test]
    fn no_host_may_claim_this_hosts_own_containers() {
        let mut v = StoreView::new("/tapnet/", "shop", me());
        let mine = reg("10.0.0.1:4789", 5);
        v.set_own(&mine, &[Ipv4Addr::new(172, 16, 2, 1)]);
        // Another host claims our container's address (a forgery, or a stale key).
        let mut other = reg("10.0.0.2:4789", 6);
        other.ports.push(mine.ports[0]);
        let key = host_key("/tapnet/", "shop", other.vtep);
        let Some(StoreChange::Put(taken)) = v.put(&key, other.to_value("shop").as_bytes(), 9)
        else {
            panic!("a put")
        };
        assert_eq!(taken.ports, reg("10.0.0.2:4789", 6).ports);
        assert_eq!(v.stats.conflicts, 1);
        // Nor the gateway's address.
        let gw = reg("10.0.0.3:4789", 1);
        let Some(StoreChange::Put(taken)) = v.put(
            &host_key("/tapnet/", "shop", gw.vtep),
            gw.to_value("shop").as_bytes(),
            10,
        ) else {
            panic!("a put")
        };
        assert!(taken.ports.is_empty());
        // Nor may an endpoint be one of this host's addresses, or a broadcast.
        v.set_not_vteps([
            Ipv4Addr::new(10, 0, 0, 9).into(),
            Ipv4Addr::new(10, 0, 0, 255).into(),
        ]);
        for bad in ["10.0.0.9:4790", "10.0.0.255:4789"] {
            let r = reg(bad, 8);
            let key = host_key("/tapnet/", "shop", r.vtep);
            assert_eq!(
                v.put(&key, r.to_value("shop").as_bytes(), 11),
                None,
                "{bad}"
            );
        }
        assert_eq!(v.stats.bad_values, 2);
    }

    #[test]
    fn the_earliest_registration_comes_first_whatever_its_key() {
        let mut v = StoreView::new("/tapnet/", "shop", me());
        let (late, early) = (reg("10.0.0.10:4789", 7), reg("10.0.0.2:4789", 7));
        let (vl, ve) = (late.to_value("shop"), early.to_value("shop"));
        let (kl, ke) = (
            host_key("/tapnet/", "shop", late.vtep),
            host_key("/tapnet/", "shop", early.vtep),
        );
        // "10.0.0.10" sorts before "10.0.0.2" as text; the store says which came first.
        let StoreChange::Reset(hosts) = v.reset([
            (kl.as_str(), vl.as_bytes(), 20),
            (ke.as_str(), ve.as_bytes(), 10),
        ]) else {
            panic!("a reset")
        };
        assert_eq!(hosts, vec![early, late]);
    }

    #[test]
    fn the_view_holds_at_most_max_hosts() {
        let mut v = StoreView::new("/tapnet/", "shop", me());
        for i in 0..MAX_HOSTS + 3 {
            let r = Registration {
                vtep: SocketAddr::new(Ipv4Addr::from(0x0a01_0000 + i as u32).into(), 4789),
                vnis: vec![],
                ports: vec![],
            };
            v.put(
                &host_key("/tapnet/", "shop", r.vtep),
                r.to_value("shop").as_bytes(),
                12,
            );
        }
        assert_eq!(v.hosts().len(), MAX_HOSTS);
        assert_eq!(v.stats.hosts_over_limit, 3);
    }
}
