//! The etcd client of a lab with `[vxlan] etcd`: it registers this host's tunnel
//! endpoint under a lease it keeps alive, and watches the lab's prefix for the other
//! hosts ([`encap::store`] holds the key layout and the view). It speaks etcd's v3
//! JSON gateway (`/v3/lease/grant`, `/v3/kv/put`, `/v3/kv/range`, `/v3/watch`, ...,
//! served by etcd 3.4 and later) with `ureq`, a small blocking HTTP client, on two
//! threads of its own: no async runtime, and the datapath thread never waits on the
//! store. Each change reaches the datapath as a [`Request::Store`] over the control
//! channel, with a wake-up of its poll loop.
//!
//! Losing the store: the last known view stays, requests are retried with backoff
//! (0.25 s doubling to 4 s, the next endpoint each time), `show vxlan` says since
//! when the store is unreachable, and all recovers by itself. A lease that expired
//! meanwhile is found at the next keep-alive and the host registers again.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use encap::store::{
    self, Registration, RemotePort, StoreChange, StoreStatus, StoreUpdate, StoreView,
};
use lab::Lab;
use serde_json::{json, Value};
use vswitch::Mac;

use crate::control::server::Request;

/// Waits between failed requests: from the first, doubling up to the last.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(4);
/// A request (other than the watch) that takes longer failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// A watch quiet this long is opened again from where it was (not a failure): a
/// connection that died without a word is noticed within it.
const WATCH_QUIET: Duration = Duration::from_secs(20);
/// The largest answer read from the store (a range of every host of a lab).
const MAX_ANSWER: u64 = 256 << 20;

/// What the client needs to know of the lab.
#[derive(Debug, Clone)]
pub(crate) struct StoreConfig {
    pub lab: String,
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub ttl: Duration,
    pub vtep: SocketAddr,
}

impl StoreConfig {
    pub fn of(lab: &Lab) -> Option<StoreConfig> {
        let vx = lab.vxlan.as_ref().filter(|v| !v.etcd.is_empty())?;
        Some(StoreConfig {
            lab: lab.name.clone(),
            endpoints: vx.etcd.clone(),
            prefix: vx.etcd_prefix.clone(),
            ttl: Duration::from_secs(vx.etcd_ttl_s),
            vtep: vx.listen,
        })
    }
}

/// What this host registers: its endpoint, the VNIs of its bridges, and its ports on
/// them (MAC, and IPv4 address when the port has one). None without `[vxlan]`.
pub(crate) fn registration(lab: &Lab) -> Option<Registration> {
    let vx = lab.vxlan.as_ref()?;
    let vni_of = |bridge: &str| {
        lab.bridges
            .iter()
            .find(|b| b.name == bridge)
            .and_then(|b| b.vni.map(|(v, _)| v))
    };
    Some(Registration {
        vtep: vx.listen,
        vnis: lab
            .bridges
            .iter()
            .filter_map(|b| b.vni.map(|(v, _)| v))
            .collect(),
        ports: lab
            .ports
            .iter()
            .filter_map(|p| {
                Some(RemotePort {
                    vni: vni_of(&p.bridge)?,
                    mac: Mac(p.mac),
                    ip: p.ip.map(|(a, _)| a),
                })
            })
            .collect(),
    })
}

/// What this host has, as the store client keeps it: its registration, and the
/// other addresses it answers for on its VNI bridges (gateways, service VIPs), which
/// no other host may register.
#[derive(Debug, Clone)]
pub(crate) struct Own {
    pub registration: Registration,
    pub also: Vec<std::net::Ipv4Addr>,
}

impl Own {
    /// None without `[vxlan]`.
    pub fn of(lab: &Lab) -> Option<Own> {
        let registration = registration(lab)?;
        let vni_bridges: Vec<&lab::BridgeCfg> =
            lab.bridges.iter().filter(|b| b.vni.is_some()).collect();
        let also = vni_bridges
            .iter()
            .filter_map(|b| b.gateway)
            .chain(
                lab.services
                    .iter()
                    .filter_map(|s| match s.vip.ip() {
                        std::net::IpAddr::V4(a) => Some(a),
                        std::net::IpAddr::V6(_) => None,
                    })
                    .filter(|vip| {
                        vni_bridges
                            .iter()
                            .filter_map(|b| b.subnet.as_ref())
                            .any(|n| n.contains(*vip))
                    }),
            )
            .collect();
        Some(Own { registration, also })
    }
}

/// What the lease thread is told.
enum LeaseMsg {
    /// This host has changed (a port attached or detached, a service added).
    Register(Own),
    /// Its key was deleted or overwritten by someone else: put it again.
    Repost,
    /// The lab is ending: revoke the lease (the key goes with it) and end.
    Stop,
}

/// The running client: dropping it revokes the lease (the host's keys go at once)
/// and stops its threads.
pub(crate) struct StoreClient {
    lease_tx: Sender<LeaseMsg>,
    stop: Arc<AtomicBool>,
    lease: Option<JoinHandle<()>>,
}

impl StoreClient {
    /// Starts registering `first` and watching; changes go to `requests`, then
    /// `wake` is called.
    pub fn start(
        config: StoreConfig,
        first: Own,
        requests: Sender<Request>,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<StoreClient> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                view: {
                    let mut v = StoreView::new(&config.prefix, &config.lab, config.vtep);
                    v.set_own(&first.registration, &first.also);
                    v.set_not_vteps(not_vteps(&config));
                    v
                },
                status: StoreStatus {
                    endpoints: config.endpoints.clone(),
                    ..StoreStatus::default()
                },
                lost: false,
                own_value: String::new(),
                own_lease: 0,
            }),
            requests,
            wake,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = crossbeam_channel::bounded(16);
        let first_value = first.registration.to_value(&config.lab);
        let lease = {
            let (shared, stop, config) = (shared.clone(), stop.clone(), config.clone());
            std::thread::Builder::new()
                .name("etcd-lease".into())
                .spawn(move || keep_registered(&config, first, &rx, &shared, &stop))?
        };
        {
            let (shared, stop, nudge) = (shared.clone(), stop.clone(), tx.clone());
            // Not joined: it may sit in a read; it ends when it sees `stop`, or with
            // the process.
            std::thread::Builder::new()
                .name("etcd-watch".into())
                .spawn(move || keep_watching(&config, first_value, &shared, &stop, &nudge))?;
        }
        Ok(StoreClient {
            lease_tx: tx,
            stop,
            lease: Some(lease),
        })
    }

    /// Registers `own` instead (a port was attached or detached).
    pub fn register(&self, own: Own) {
        let _ = self.lease_tx.try_send(LeaseMsg::Register(own));
    }
}

impl Drop for StoreClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The lease thread revokes the lease and ends.
        let _ = self
            .lease_tx
            .send_timeout(LeaseMsg::Stop, Duration::from_secs(1));
        if let Some(t) = self.lease.take() {
            let _ = t.join();
        }
    }
}

/// Addresses no other host's endpoint may be: this host's own and its links'
/// broadcasts (from getifaddrs, in tapnet's network namespace; IPv6 addresses too,
/// for an IPv6 underlay), and the store's endpoints given as addresses.
fn not_vteps(config: &StoreConfig) -> Vec<IpAddr> {
    let mut out = vec![config.vtep.ip()];
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            if let Some(v6) = a.address.as_ref().and_then(|x| x.as_sockaddr_in6()) {
                out.push(v6.ip().into());
                continue;
            }
            let ip = a
                .address
                .as_ref()
                .and_then(|x| x.as_sockaddr_in())
                .map(|x| x.ip());
            let mask = a
                .netmask
                .as_ref()
                .and_then(|x| x.as_sockaddr_in())
                .map(|x| x.ip());
            if let Some(ip) = ip {
                out.push(ip.into());
                // The link's broadcast from its mask: `ip addr add A/24` sets no `brd`
                // field, yet the kernel routes .255 as broadcast.
                if let Some(m) = mask.filter(|m| u32::from(*m) < u32::MAX - 1) {
                    out.push(std::net::Ipv4Addr::from(u32::from(ip) | !u32::from(m)).into());
                }
            }
            if let Some(b) = a.broadcast.as_ref().and_then(|x| x.as_sockaddr_in()) {
                out.push(b.ip().into());
            }
        }
    }
    out.push(std::net::Ipv4Addr::BROADCAST.into());
    for e in &config.endpoints {
        let host = e
            .trim_start_matches("http://")
            .rsplit_once(':')
            .map_or(e.as_str(), |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse() {
            out.push(ip);
        }
    }
    out
}

struct State {
    view: StoreView,
    status: StoreStatus,
    /// This host's value as the lease thread put it last, and under which lease.
    own_value: String,
    own_lease: i64,
    /// An update did not reach the datapath: the next one says everything.
    lost: bool,
}

/// What both threads share: the view and status, and the way to the datapath.
struct Shared {
    state: Mutex<State>,
    requests: Sender<Request>,
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl State {
    /// Whether `kv` is this host's key as it put it: its value, under its lease (a
    /// copy put without the lease would outlive the host).
    fn is_own(&self, kv: &Kv) -> bool {
        kv.value == self.own_value.as_bytes() && kv.lease == self.own_lease
    }
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the state with `f` (what changed in the hosts), then tells the
    /// datapath. Holding the state's lock while sending keeps the two threads'
    /// changes in order.
    fn change(&self, f: impl FnOnce(&mut State) -> Vec<StoreChange>) {
        let mut s = self.state();
        let mut changes = f(&mut s);
        if s.lost {
            // An update went missing: everything, once more.
            changes = vec![StoreChange::Reset(s.view.hosts())];
        }
        s.status.view = s.view.stats;
        let update = StoreUpdate {
            changes,
            status: s.status.clone(),
        };
        // Never stuck on a datapath that stopped reading (the lab is ending).
        match self
            .requests
            .send_timeout(Request::Store(update), Duration::from_secs(1))
        {
            Ok(()) => {
                s.lost = false;
                (self.wake)();
            }
            Err(_) => s.lost = true,
        }
    }

    fn reachable(&self) {
        if self.state().status.unreachable_since.is_some() {
            self.change(|s| {
                s.status.unreachable_since = None;
                Vec::new()
            });
        }
    }

    fn unreachable(&self, why: &str) {
        self.change(|s| {
            s.status
                .unreachable_since
                .get_or_insert_with(SystemTime::now);
            s.status.last_error = Some(why.to_string());
            Vec::new()
        });
    }
}

/// The JSON gateway of a list of etcd endpoints: a failed call moves to the next.
struct Gateway {
    agent: ureq::Agent,
    endpoints: Vec<String>,
    at: usize,
}

impl Gateway {
    fn new(endpoints: &[String], read_timeout: Option<Duration>) -> Gateway {
        let mut b = ureq::AgentBuilder::new().timeout_connect(REQUEST_TIMEOUT);
        b = match read_timeout {
            Some(t) => b.timeout_read(t).timeout_write(REQUEST_TIMEOUT),
            None => b.timeout(REQUEST_TIMEOUT),
        };
        Gateway {
            agent: b.build(),
            endpoints: endpoints.to_vec(),
            at: 0,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoints[self.at % self.endpoints.len()])
    }

    fn failed(&mut self) {
        self.at = (self.at + 1) % self.endpoints.len();
    }

    /// POSTs `body` to `path`: the answer's JSON, or why not (etcd's own error
    /// message when it answered with one).
    fn call(&mut self, path: &str, body: &Value) -> Result<Value, String> {
        let url = self.url(path);
        let answer = match self.agent.post(&url).send_string(&body.to_string()) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => {
                // ureq's message names the URL.
                self.failed();
                return Err(e.to_string());
            }
        };
        // The first JSON value of the body. An error answer ends with HTTP trailers
        // (`Grpc-Trailer-Content-Type`) that ureq's chunked reader refuses: what came
        // before them is the answer.
        let mut body = Vec::new();
        let read = std::io::Read::read_to_end(
            &mut std::io::Read::take(answer.into_reader(), MAX_ANSWER),
            &mut body,
        );
        let first = serde_json::Deserializer::from_slice(&body)
            .into_iter::<Value>()
            .next();
        let v = match (first, read) {
            (Some(Ok(v)), _) => v,
            (_, Err(e)) => {
                self.failed();
                return Err(format!("{url}: {e}"));
            }
            (_, Ok(_)) => {
                self.failed();
                return Err(format!("{url}: not etcd's JSON gateway"));
            }
        };
        match v.get("error").or_else(|| v.get("message")) {
            Some(e) if v.get("code").is_some() => {
                Err(format!("{url}: {}", e.as_str().unwrap_or("error")))
            }
            _ => Ok(v),
        }
    }
}

fn b64(s: &str) -> String {
    B64.encode(s.as_bytes())
}

/// The key just past every key starting with `prefix` (etcd's `range_end`).
fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return B64.encode(&end);
        }
    }
    // Every key: "\0".
    B64.encode([0u8])
}

/// An int64 as etcd's gateway writes it (a string) or as a number.
fn int(v: &Value) -> Option<i64> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_i64())
}

/// The lease thread: grant, put, keep alive; again after an expiry; revoke at the
/// end.
fn keep_registered(
    config: &StoreConfig,
    first: Own,
    messages: &Receiver<LeaseMsg>,
    shared: &Shared,
    stop: &AtomicBool,
) {
    let mut gw = Gateway::new(&config.endpoints, None);
    let key = store::host_key(&config.prefix, &config.lab, config.vtep);
    let mut value = first.registration.to_value(&config.lab);
    let mut lease: Option<i64> = None;
    let mut put_needed = true;
    let mut next_keepalive = Instant::now();
    let mut last_kept = Instant::now();
    let mut backoff = BACKOFF_MIN;
    let every = config.ttl / 3;
    let mut wait = Duration::ZERO;
    loop {
        let mut got = messages.recv_timeout(wait);
        // The latest of what came meanwhile.
        while let Ok(m) = &got {
            let next = match m {
                LeaseMsg::Stop => break,
                _ => messages.try_recv(),
            };
            match (m, next) {
                (_, Ok(newer)) => got = Ok(newer),
                (_, Err(_)) => break,
            }
        }
        match got {
            Ok(LeaseMsg::Register(own)) => {
                value = own.registration.to_value(&config.lab);
                put_needed = true;
                shared.change(|s| vec![s.view.set_own(&own.registration, &own.also)]);
            }
            Ok(LeaseMsg::Repost) => put_needed = true,
            Err(RecvTimeoutError::Timeout) => {}
            Ok(LeaseMsg::Stop) | Err(RecvTimeoutError::Disconnected) => {
                if let Some(id) = lease {
                    // The keys go with the lease, at once.
                    let _ = gw.call("/v3/lease/revoke", &json!({"ID": id.to_string()}));
                }
                return;
            }
        }
        if stop.load(Ordering::Relaxed) {
            continue;
        }
        let step = (|| -> Result<(), String> {
            if lease.is_none() {
                let v = gw.call(
                    "/v3/lease/grant",
                    &json!({"TTL": config.ttl.as_secs().to_string()}),
                )?;
                let id = v
                    .get("ID")
                    .and_then(int)
                    .ok_or("no lease ID in the answer")?;
                lease = Some(id);
                put_needed = true;
                next_keepalive = Instant::now() + every;
                shared.change(|s| {
                    s.status.registrations += 1;
                    Vec::new()
                });
            }
            let id = lease.expect("granted");
            if put_needed {
                // What the watch will see of this put, known before it can see it.
                {
                    let mut st = shared.state();
                    st.own_value.clone_from(&value);
                    st.own_lease = id;
                }
                let put = gw.call(
                    "/v3/kv/put",
                    &json!({"key": b64(&key), "value": b64(&value), "lease": id.to_string()}),
                );
                if let Err(e) = &put {
                    if e.contains("lease not found") {
                        lease = None;
                    }
                }
                put?;
                put_needed = false;
                shared.change(|s| {
                    s.status.registered = true;
                    Vec::new()
                });
            }
            if Instant::now() >= next_keepalive {
                let v = gw.call("/v3/lease/keepalive", &json!({"ID": id.to_string()}))?;
                let ttl = v
                    .get("result")
                    .and_then(|r| r.get("TTL"))
                    .and_then(int)
                    .unwrap_or(0);
                if ttl <= 0 {
                    // Expired while the store was out of reach: the key went with it.
                    lease = None;
                    shared.change(|s| {
                        s.status.registered = false;
                        Vec::new()
                    });
                    return Err("this host's lease expired: registering again".into());
                }
                next_keepalive = Instant::now() + every;
                last_kept = Instant::now();
            }
            Ok(())
        })();
        match step {
            Ok(()) => {
                shared.reachable();
                backoff = BACKOFF_MIN;
                wait = next_keepalive.saturating_duration_since(Instant::now());
            }
            Err(e) if lease.is_none() && e.contains("registering again") => {
                shared.unreachable(&e);
                wait = Duration::ZERO;
            }
            Err(e) => {
                shared.unreachable(&e);
                if last_kept.elapsed() > config.ttl {
                    // Unrenewed for a TTL: the store has surely let the key go.
                    shared.change(|s| {
                        s.status.registered = false;
                        Vec::new()
                    });
                }
                wait = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// The watch thread: a full read of the lab's prefix, then its changes from the
/// revision after; again from a full read after a failure or a compaction.
fn keep_watching(
    config: &StoreConfig,
    own_value: String,
    shared: &Shared,
    stop: &AtomicBool,
    lease: &Sender<LeaseMsg>,
) {
    // This host's key: anything but what it put there last (deleted, overwritten)
    // is put right by the lease thread.
    shared.state().own_value = own_value;
    let own = OwnKey {
        key: store::host_key(&config.prefix, &config.lab, config.vtep),
        lease,
    };
    let mut gw = Gateway::new(&config.endpoints, None);
    let mut watch_gw = Gateway::new(&config.endpoints, Some(WATCH_QUIET));
    let prefix = shared.state().view.watch_prefix().to_string();
    let range = json!({"key": b64(&prefix), "range_end": prefix_end(&prefix)});
    let mut backoff = BACKOFF_MIN;
    while !stop.load(Ordering::Relaxed) {
        let read = gw.call("/v3/kv/range", &range).and_then(|v| {
            let revision = v
                .get("header")
                .and_then(|h| h.get("revision"))
                .and_then(int)
                .ok_or("no revision in the answer")?;
            let listed = v.get("kvs").and_then(Value::as_array);
            let kvs: Vec<Kv> = listed
                .map(|a| a.iter().filter_map(decode_kv).collect())
                .unwrap_or_default();
            let unreadable = listed.map_or(0, |a| a.len() - kvs.len());
            Ok((revision, kvs, unreadable))
        });
        let mut revision = match read {
            Ok((revision, kvs, unreadable)) => {
                shared.change(|s| {
                    s.status.revision = revision;
                    s.view.stats.bad_values += unreadable as u64;
                    let mine = kvs.iter().find(|kv| kv.key == own.key);
                    if mine.is_none_or(|kv| !s.is_own(kv)) {
                        own.repost();
                    }
                    vec![s.view.reset(
                        kvs.iter()
                            .map(|kv| (kv.key.as_str(), kv.value.as_slice(), kv.created)),
                    )]
                });
                shared.reachable();
                backoff = BACKOFF_MIN;
                revision
            }
            Err(e) => {
                shared.unreachable(&e);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        // Watches from the revision after, opened again when quiet, until one fails.
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match watch(&mut watch_gw, &prefix, &mut revision, shared, stop, &own) {
                Ended::Quiet => continue,
                Ended::Compacted => break,
                Ended::Failed(e) => {
                    shared.unreachable(&e);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    break;
                }
            }
        }
    }
}

/// This host's key, and the way to have it put again.
struct OwnKey<'a> {
    key: String,
    lease: &'a Sender<LeaseMsg>,
}

impl OwnKey<'_> {
    fn repost(&self) {
        let _ = self.lease.try_send(LeaseMsg::Repost);
    }
}

enum Ended {
    /// Nothing came for [`WATCH_QUIET`]: open it again from `revision`.
    Quiet,
    /// The store forgot the revisions the watch needs: read everything again.
    Compacted,
    Failed(String),
}

/// One watch of `prefix` from `revision + 1`, its events applied as they come.
fn watch(
    gw: &mut Gateway,
    prefix: &str,
    revision: &mut i64,
    shared: &Shared,
    stop: &AtomicBool,
    own: &OwnKey<'_>,
) -> Ended {
    let url = gw.url("/v3/watch");
    let body = json!({"create_request": {
        "key": b64(prefix),
        "range_end": prefix_end(prefix),
        "start_revision": (*revision + 1).to_string(),
    }});
    let answer = match gw.agent.post(&url).send_string(&body.to_string()) {
        Ok(r) => r,
        Err(e) => {
            gw.failed();
            return Ended::Failed(e.to_string());
        }
    };
    let stream = serde_json::Deserializer::from_reader(answer.into_reader()).into_iter::<Value>();
    for message in stream {
        if stop.load(Ordering::Relaxed) {
            return Ended::Quiet;
        }
        let message = match message {
            Ok(m) => m,
            Err(e)
                if e.io_error_kind() == Some(std::io::ErrorKind::TimedOut)
                    || e.io_error_kind() == Some(std::io::ErrorKind::WouldBlock) =>
            {
                return Ended::Quiet
            }
            Err(e) => {
                gw.failed();
                return Ended::Failed(format!("{url}: the watch broke: {e}"));
            }
        };
        let Some(result) = message.get("result") else {
            gw.failed();
            return Ended::Failed(format!("{url}: {message}"));
        };
        if result.get("canceled").and_then(Value::as_bool) == Some(true) {
            return Ended::Compacted;
        }
        let events = result
            .get("events")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let at = result
            .get("header")
            .and_then(|h| h.get("revision"))
            .and_then(int);
        if events.is_empty() {
            // The watch's creation (or a progress notice): the store answers.
            shared.reachable();
            continue;
        }
        shared.change(|s| {
            let mut changes = Vec::new();
            for ev in &events {
                let Some(kv) = ev.get("kv").and_then(decode_kv) else {
                    s.view.stats.bad_values += 1;
                    continue;
                };
                let deleted = ev.get("type").and_then(Value::as_str) == Some("DELETE");
                if kv.key == own.key && (deleted || !s.is_own(&kv)) {
                    own.repost();
                }
                let change = if deleted {
                    s.view.delete(&kv.key)
                } else {
                    s.view.put(&kv.key, &kv.value, kv.created)
                };
                changes.extend(change);
            }
            if let Some(at) = at {
                s.status.revision = at;
            }
            changes
        });
        if let Some(at) = at {
            *revision = at;
        }
    }
    gw.failed();
    Ended::Failed(format!("{url}: the watch ended"))
}

/// A key-value pair of the gateway's answer, base64 decoded, with its creation
/// revision and lease (0: none).
#[derive(Debug, PartialEq, Eq)]
struct Kv {
    key: String,
    value: Vec<u8>,
    created: i64,
    lease: i64,
}

fn decode_kv(kv: &Value) -> Option<Kv> {
    let key = B64.decode(kv.get("key")?.as_str()?).ok()?;
    let value = match kv.get("value").and_then(Value::as_str) {
        Some(v) => B64.decode(v).ok()?,
        None => Vec::new(),
    };
    Some(Kv {
        key: String::from_utf8(key).ok()?,
        value,
        created: kv.get("create_revision").and_then(int).unwrap_or(0),
        lease: kv.get("lease").and_then(int).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_where_etcd_wants() {
        assert_eq!(B64.decode(prefix_end("/tapnet/")).unwrap(), b"/tapnet0");
        assert_eq!(B64.decode(prefix_end("a\u{7f}")).unwrap(), b"a\x80");
    }

    #[test]
    fn gateway_kvs_decode() {
        let kv = json!({"key": b64("/k"), "value": b64("v")});
        assert_eq!(
            decode_kv(&kv),
            Some(Kv {
                key: "/k".into(),
                value: b"v".to_vec(),
                created: 0,
                lease: 0
            })
        );
        assert_eq!(decode_kv(&json!({"key": "!!"})), None);
        assert_eq!(int(&json!("42")), Some(42));
        assert_eq!(int(&json!(42)), Some(42));
    }
}
