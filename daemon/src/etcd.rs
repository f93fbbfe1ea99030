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

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use encap::store::{self, Registration, RemotePort, StoreStatus, StoreUpdate, StoreView};
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
    pub vtep: SocketAddrV4,
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

/// The running client: dropping it revokes the lease (the host's keys go at once)
/// and stops its threads.
pub(crate) struct StoreClient {
    updates: Option<Sender<Registration>>,
    stop: Arc<AtomicBool>,
    lease: Option<JoinHandle<()>>,
}

impl StoreClient {
    /// Starts registering `first` and watching; changes go to `requests`, then
    /// `wake` is called.
    pub fn start(
        config: StoreConfig,
        first: Registration,
        requests: Sender<Request>,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<StoreClient> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                view: StoreView::new(&config.prefix, &config.lab, config.vtep),
                status: StoreStatus {
                    endpoints: config.endpoints.clone(),
                    ..StoreStatus::default()
                },
            }),
            requests,
            wake,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = crossbeam_channel::bounded(16);
        let lease = {
            let (shared, stop, config) = (shared.clone(), stop.clone(), config.clone());
            std::thread::Builder::new()
                .name("etcd-lease".into())
                .spawn(move || keep_registered(&config, first, &rx, &shared, &stop))?
        };
        {
            let (shared, stop) = (shared.clone(), stop.clone());
            // Not joined: it may sit in a read; it ends when it sees `stop`, or with
            // the process.
            std::thread::Builder::new()
                .name("etcd-watch".into())
                .spawn(move || keep_watching(&config, &shared, &stop))?;
        }
        Ok(StoreClient {
            updates: Some(tx),
            stop,
            lease: Some(lease),
        })
    }

    /// Registers `r` instead (a port was attached or detached).
    pub fn register(&self, r: Registration) {
        if let Some(tx) = &self.updates {
            let _ = tx.try_send(r);
        }
    }
}

impl Drop for StoreClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the lease thread: it revokes the lease and ends.
        self.updates = None;
        if let Some(t) = self.lease.take() {
            let _ = t.join();
        }
    }
}

struct State {
    view: StoreView,
    status: StoreStatus,
}

/// What both threads share: the view and status, and the way to the datapath.
struct Shared {
    state: Mutex<State>,
    requests: Sender<Request>,
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the state with `f` (true if the hosts changed), then tells the
    /// datapath.
    fn change(&self, f: impl FnOnce(&mut State) -> bool) {
        let update = {
            let mut s = self.state();
            let hosts_changed = f(&mut s);
            s.status.view = s.view.stats;
            StoreUpdate {
                hosts: hosts_changed.then(|| s.view.hosts()),
                status: s.status.clone(),
            }
        };
        // Never stuck on a datapath that stopped reading (the lab is ending).
        if self
            .requests
            .send_timeout(Request::Store(update), Duration::from_secs(1))
            .is_ok()
        {
            (self.wake)();
        }
    }

    fn reachable(&self) {
        if self.state().status.unreachable_since.is_some() {
            self.change(|s| {
                s.status.unreachable_since = None;
                false
            });
        }
    }

    fn unreachable(&self, why: &str) {
        self.change(|s| {
            s.status
                .unreachable_since
                .get_or_insert_with(SystemTime::now);
            s.status.last_error = Some(why.to_string());
            false
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
        let v: Value =
            serde_json::from_reader(std::io::Read::take(answer.into_reader(), MAX_ANSWER))
                .map_err(|e| {
                    self.failed();
                    format!("{url}: not etcd's JSON gateway: {e}")
                })?;
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
    first: Registration,
    updates: &Receiver<Registration>,
    shared: &Shared,
    stop: &AtomicBool,
) {
    let mut gw = Gateway::new(&config.endpoints, None);
    let key = store::host_key(&config.prefix, &config.lab, config.vtep);
    let mut value = first.to_value(&config.lab);
    let mut lease: Option<i64> = None;
    let mut put_needed = true;
    let mut next_keepalive = Instant::now();
    let mut backoff = BACKOFF_MIN;
    let every = config.ttl / 3;
    let mut wait = Duration::ZERO;
    loop {
        match updates.recv_timeout(wait) {
            Ok(r) => {
                // The latest of what came meanwhile.
                let mut r = r;
                while let Ok(newer) = updates.try_recv() {
                    r = newer;
                }
                value = r.to_value(&config.lab);
                put_needed = true;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
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
                    false
                });
            }
            let id = lease.expect("granted");
            if put_needed {
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
                    false
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
                        false
                    });
                    return Err("this host's lease expired: registering again".into());
                }
                next_keepalive = Instant::now() + every;
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
                wait = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// The watch thread: a full read of the lab's prefix, then its changes from the
/// revision after; again from a full read after a failure or a compaction.
fn keep_watching(config: &StoreConfig, shared: &Shared, stop: &AtomicBool) {
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
            let kvs: Vec<(String, Vec<u8>)> = v
                .get("kvs")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(decode_kv).collect())
                .unwrap_or_default();
            Ok((revision, kvs))
        });
        let mut revision = match read {
            Ok((revision, kvs)) => {
                shared.change(|s| {
                    s.status.revision = revision;
                    s.view
                        .reset(kvs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
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
            match watch(&mut watch_gw, &prefix, &mut revision, shared, stop) {
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
            let mut changed = false;
            for ev in &events {
                let Some((key, value)) = ev.get("kv").and_then(decode_kv) else {
                    continue;
                };
                changed |= if ev.get("type").and_then(Value::as_str) == Some("DELETE") {
                    s.view.delete(&key)
                } else {
                    s.view.put(&key, &value)
                };
            }
            if let Some(at) = at {
                s.status.revision = at;
            }
            changed
        });
        if let Some(at) = at {
            *revision = at;
        }
    }
    gw.failed();
    Ended::Failed(format!("{url}: the watch ended"))
}

/// A key-value pair of the gateway's answer: (key, value), base64 decoded.
fn decode_kv(kv: &Value) -> Option<(String, Vec<u8>)> {
    let key = B64.decode(kv.get("key")?.as_str()?).ok()?;
    let value = match kv.get("value").and_then(Value::as_str) {
        Some(v) => B64.decode(v).ok()?,
        None => Vec::new(),
    };
    Some((String::from_utf8(key).ok()?, value))
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
        assert_eq!(decode_kv(&kv), Some(("/k".into(), b"v".to_vec())));
        assert_eq!(decode_kv(&json!({"key": "!!"})), None);
        assert_eq!(int(&json!("42")), Some(42));
        assert_eq!(int(&json!(42)), Some(42));
    }
}
