//! Serving a built lab: the poll loop until SIGINT, SIGTERM or SIGHUP, with the
//! control requests the control thread hands over (`show`, `trace`, `impair`,
//! `capture`) answered between batches of frames, on the datapath thread that owns
//! all lab state.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;
use mio::{Interest, Token};
use signal_hook_mio::v1_0::Signals;
use vswitch::datapath::FIRST_FOREIGN_TOKEN;
use vswitch::Datapath;

use crate::control::protocol::{monotonic_ns, RequestLine};
use crate::control::server::Request;
use crate::query;
use crate::runtime::{AttachSpec, Live};

/// SIGINT, SIGTERM or SIGHUP, in the poll loop.
const SIGNAL_TOKEN: Token = Token(FIRST_FOREIGN_TOKEN);
/// How often freed heap memory is handed back to the system.
const TRIM_EVERY: Duration = Duration::from_secs(10);
/// The control thread's wake-up (a mio `Waker`): requests are waiting.
pub(crate) const CONTROL_TOKEN: Token = Token(FIRST_FOREIGN_TOKEN + 1);
/// Queries answered per poll turn before frames get theirs; a change to the lab
/// (attach, detach, forwards, services, impair) ends the turn by itself.
const QUERIES_PER_TURN: usize = 16;

/// Says the lab is ready, then runs the poll loop until a signal, answering control
/// requests as they come and saying when a port goes down.
pub(crate) fn serve(
    mut live: Live<'_>,
    dp: &mut Datapath,
    mut signals: Signals,
    req_rx: &crossbeam_channel::Receiver<Request>,
) -> Result<()> {
    dp.registry()
        .register(&mut signals, SIGNAL_TOKEN, Interest::READABLE)?;

    // A closed stdout (the reader went away) must not stop the lab.
    let mut stdout = std::io::stdout();
    let n = dp.up_ports();
    let t = dp.threads();
    let _ = writeln!(
        stdout,
        "ready: lab {}, {n} port{}, {t} datapath thread{}",
        live.lab.name,
        if n == 1 { "" } else { "s" },
        if t == 1 { "" } else { "s" },
    );
    let _ = stdout.flush();

    let mut next_trim = Instant::now() + TRIM_EVERY;
    // Requests left for the next turn: the next poll does not wait, and they are
    // taken as if the control thread had woken it.
    let mut waiting = false;
    loop {
        let fired = dp.poll_once(waiting.then_some(Duration::ZERO))?;
        if Instant::now() >= next_trim {
            // What a flood of connections allocated and freed goes back to the
            // system, not only to the allocator's free lists.
            // SAFETY: malloc_trim only returns free heap memory to the system.
            unsafe { libc::malloc_trim(0) };
            next_trim = Instant::now() + TRIM_EVERY;
        }
        let (signalled, control) = fired.iter().fold((false, false), |(s, c), t| {
            (s || *t == SIGNAL_TOKEN, c || *t == CONTROL_TOKEN)
        });
        if control || waiting {
            let now = Instant::now();
            // Frames get a turn between changes (an attach builds a TAP, tens of
            // milliseconds) and between bursts of queries, however fast they come.
            let mut queries = 0;
            while queries < QUERIES_PER_TURN {
                let Ok(req) = req_rx.try_recv() else { break };
                queries += 1;
                match req {
                    Request::Show {
                        line,
                        reply,
                        deadline_ns,
                    } => {
                        let request = RequestLine::parse(&line);
                        if request.changes_lab() {
                            if monotonic_ns() > deadline_ns {
                                let _ = reply.send(serde_json::json!({
                                    "error": "not made: the lab was busy for too long (its client has given up); try again",
                                    "busy": true,
                                }));
                                continue;
                            }
                            queries = QUERIES_PER_TURN;
                        }
                        let answer = match request {
                            RequestLine::Impair { port, spec } => impair(dp, &mut live, port, spec),
                            RequestLine::Trace { port, packet } => {
                                let nss = live.namespaces.lock().unwrap_or_else(|p| p.into_inner());
                                crate::trace::trace(dp, &nss, port, packet, now)
                            }
                            RequestLine::Attach(spec) => match serde_json::from_str(spec)
                                .ok()
                                .as_ref()
                                .and_then(AttachSpec::from_json)
                            {
                                Some(spec) => live.attach(dp, &spec),
                                None => serde_json::json!({"error": "bad attach request"}),
                            },
                            RequestLine::Detach(port) => live.detach(dp, port),
                            RequestLine::ForwardAdd { proto, listen, to } => {
                                live.add_forward(dp, proto, listen, to)
                            }
                            RequestLine::ForwardRemove { proto, listen } => {
                                live.remove_forward(dp, proto, listen)
                            }
                            RequestLine::ServiceAdd(words) => live.add_service(dp, &words),
                            RequestLine::ServiceRemove(name) => live.remove_service(dp, name),
                            RequestLine::Show("show lab") => {
                                serde_json::json!({"lab": lab::to_toml(&live.lab)})
                            }
                            RequestLine::Show(line) => {
                                query::answer(dp, live.handles, &live.lab.name, line, now)
                            }
                        };
                        let _ = reply.send(answer);
                    }
                    Request::Capture { port, reply } => {
                        let frames = if port == "underlay" {
                            dp.capture_outside()
                                .map(vswitch::datapath::CaptureStream::outside)
                                .ok_or_else(|| {
                                    format!(
                                        "lab `{}` has no VXLAN underlay to capture",
                                        live.lab.name
                                    )
                                })
                        } else {
                            match dp.port_by_name(&port) {
                                Some(id) => {
                                    dp.capture(id).map_err(|e| format!("port `{port}` {e}"))
                                }
                                None => Err(format!("no port `{port}` in lab `{}`", live.lab.name)),
                            }
                        };
                        let _ = reply.send(frames);
                    }
                    Request::Store(update) => {
                        // Counted as a query: a store in churn cannot hold frames up.
                        if let Some(vtep) = live.handles.vtep {
                            dp.handler_of_mut(vtep).apply_store(update, now);
                        }
                    }
                }
            }
            waiting = !req_rx.is_empty();
        }
        for (port, reason) in dp.take_went_down() {
            let name = dp
                .port(port)
                .map(|p| p.info.name.clone())
                .unwrap_or_default();
            eprintln!("tapnet: port `{name}` is down ({reason}); the other ports keep forwarding");
        }
        if signalled && signals.pending().next().is_some() {
            return Ok(());
        }
    }
}

/// `impair PORT SPEC`, at run time.
/// `show lab` says the impairment from then on.
fn impair(dp: &mut Datapath, live: &mut Live<'_>, port: &str, spec: &str) -> serde_json::Value {
    let spec = match vswitch::impair::Impairment::parse(spec) {
        Ok(s) => s,
        Err(e) => return serde_json::json!({"error": e}),
    };
    match dp.port_by_name(port) {
        Some(id) if dp.set_impairment(id, spec) => {
            if let Some(cfg) = live.lab.ports.iter_mut().find(|p| p.name == port) {
                cfg.impair = (!spec.is_none()).then_some(spec);
            }
            serde_json::json!({"port": port, "impair": spec.to_string()})
        }
        Some(_) => {
            serde_json::json!({"error": format!("port `{port}` cannot be impaired (it is down, or internal)")})
        }
        None => serde_json::json!({"error": format!("no port `{port}` in this lab")}),
    }
}
