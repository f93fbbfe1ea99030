//! The control protocol, what the server and its clients share: where a lab's socket
//! is, the request lines, and how long either side waits.
//!
//! One request line per connection: `show WHAT`, `trace PORT PACKET`,
//! `impair PORT SPEC`, `attach JSON`, `detach PORT`, `capture PORT` or `exec PORT`. The answer is one line of JSON
//! (`{"error": "..."}` when refused); a capture's (`{"ok":true}`) is followed by a pcap
//! stream of the port's frames until the client goes away; an exec's
//! (`{"ok":true,"userns":BOOL}`) carries, as SCM_RIGHTS, the port's network namespace
//! and, when `userns`, the lab's user namespace (see unix(7)).

use std::path::PathBuf;
use std::time::Duration;

/// Where root's running labs keep their control sockets and state files.
pub const ROOT_RUN_DIR: &str = "/run/tapnet";
/// The environment variable that puts the run directory elsewhere: several tapnets
/// running a lab of the same name on one machine (simulated hosts, each in its own
/// network namespace) each need their own. Clients must be given the same.
pub const RUN_DIR_ENV: &str = "TAPNET_RUN_DIR";

/// Where this user's running labs keep their control sockets and state files: root's
/// in [`ROOT_RUN_DIR`]; an ordinary user's (rootless labs) in `$XDG_RUNTIME_DIR/tapnet`,
/// or `/tmp/tapnet-UID` where that is not set. Decided by the user tapnet was
/// started as, so a rootless lab inside its user namespace finds the same place.
/// [`RUN_DIR_ENV`], when set to an absolute path, overrides both.
pub fn run_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(RUN_DIR_ENV) {
        if PathBuf::from(&dir).is_absolute() {
            return PathBuf::from(dir);
        }
    }
    let uid = host::userns::started_as();
    if uid == 0 {
        return PathBuf::from(ROOT_RUN_DIR);
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() && PathBuf::from(&dir).is_absolute() => {
            PathBuf::from(dir).join("tapnet")
        }
        _ => PathBuf::from(format!("/tmp/tapnet-{uid}")),
    }
}
/// A change (attach, detach, forwards, services, impair) that waited this long for
/// the datapath is not made: its client is about to give up on it
/// ([`CLIENT_TIMEOUT`]), and a change no one hears of must not happen.
pub const CHANGE_DEADLINE: Duration = Duration::from_secs(4);
/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the host, so a
/// client's deadline means the same to the lab.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A request line with the client's deadline for changes in front (`by NS LINE`,
/// NS in [`monotonic_ns`]'s clock).
pub fn with_deadline(line: &str) -> String {
    let by = monotonic_ns() + CHANGE_DEADLINE.as_nanos() as u64;
    format!("by {by} {line}")
}

/// The deadline and the request of a line [`with_deadline`] made; a line without
/// one (another client) gets [`CHANGE_DEADLINE`] from now.
pub fn split_deadline(line: &str) -> (u64, &str) {
    let given = line
        .strip_prefix("by ")
        .and_then(|rest| rest.split_once(' '))
        .and_then(|(ns, rest)| Some((ns.parse::<u64>().ok()?, rest)));
    given.unwrap_or((monotonic_ns() + CHANGE_DEADLINE.as_nanos() as u64, line))
}

/// How long a client waits for its answer, and the server for the datapath's.
pub(crate) const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request (or status) line either side reads.
pub(crate) const MAX_LINE: u64 = 4096;

/// Whether `dir` (an existing run directory) may be trusted by this user: root's, or
/// a directory of this user's alone (theirs, no one else may write in it). In /tmp
/// another user could have made it first, and put a socket there that answers
/// anything. Err says why not, in a line.
pub fn check_run_dir(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if !host::userns::rootless() {
        return Ok(());
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // SAFETY: geteuid has no preconditions (inside a user namespace, our own files
    // are owned by the uid we are there).
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is not a directory of this user's alone (another user's, a link, or writable by others): remove it, or set XDG_RUNTIME_DIR to one",
            dir.display()
        ));
    }
    Ok(())
}

/// Lab `lab`'s control socket.
pub fn socket_path(lab: &str) -> PathBuf {
    run_dir().join(format!("{lab}.sock"))
}

/// The request line of `show WHAT`.
pub fn show(what: &str) -> String {
    format!("show {what}")
}

/// The request line of `trace PORT PACKET`.
pub fn trace(port: &str, packet: &str) -> String {
    format!("trace {port} {packet}")
}

/// The request line of `impair PORT SPEC`.
pub fn impair(port: &str, spec: &str) -> String {
    format!("impair {port} {spec}")
}

/// The request line of `capture PORT`.
pub fn capture(port: &str) -> String {
    format!("capture {port}")
}

/// The request line of `attach`: the port as JSON ([`crate::runtime::AttachSpec`]).
pub fn attach(spec: &crate::runtime::AttachSpec) -> String {
    format!("attach {}", spec.to_json())
}

/// The request line of `detach PORT`.
pub fn detach(port: &str) -> String {
    format!("detach {port}")
}

/// The request line of `forward add PROTO LISTEN TO`.
pub fn forward_add(proto: &str, listen: &str, to: &str) -> String {
    format!("forward add {proto} {listen} {to}")
}

/// The request line of `forward rm PROTO LISTEN`.
pub fn forward_rm(proto: &str, listen: &str) -> String {
    format!("forward rm {proto} {listen}")
}

/// The request line of `service add NAME VIP PROTO BACKEND...`.
pub fn service_add(name: &str, vip: &str, proto: &str, backends: &[String]) -> String {
    format!("service add {name} {vip} {proto} {}", backends.join(" "))
}

/// The request line of `service rm NAME`.
pub fn service_rm(name: &str) -> String {
    format!("service rm {name}")
}

/// The request line of `exec PORT`.
pub fn exec(port: &str) -> String {
    format!("exec {port}")
}

/// The port of an `exec PORT` line (served by the server thread, which holds the
/// namespaces).
pub(crate) fn exec_port(line: &str) -> Option<&str> {
    line.strip_prefix("exec ").map(str::trim)
}

/// The port of a `capture PORT` line (served by the server thread, which streams).
pub(crate) fn capture_port(line: &str) -> Option<&str> {
    line.strip_prefix("capture ").map(str::trim)
}

/// Any other request line, as the datapath thread reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestLine<'a> {
    /// `impair PORT SPEC`.
    Impair { port: &'a str, spec: &'a str },
    /// `trace PORT PACKET`.
    Trace { port: &'a str, packet: &'a str },
    /// `attach JSON` ([`crate::runtime::AttachSpec`]).
    Attach(&'a str),
    /// `detach PORT`.
    Detach(&'a str),
    /// `forward add PROTO LISTEN TO`.
    ForwardAdd {
        proto: &'a str,
        listen: &'a str,
        to: &'a str,
    },
    /// `forward rm PROTO LISTEN`.
    ForwardRemove { proto: &'a str, listen: &'a str },
    /// `service add NAME VIP PROTO BACKEND...`: the words after `add`.
    ServiceAdd(Vec<&'a str>),
    /// `service rm NAME`.
    ServiceRemove(&'a str),
    /// The rest: `show WHAT`, or a line the `show` answer refuses.
    Show(&'a str),
}

impl<'a> RequestLine<'a> {
    /// Whether the request changes the running lab (and may build or tear down
    /// devices), rather than only reading it.
    pub fn changes_lab(&self) -> bool {
        !matches!(self, RequestLine::Trace { .. } | RequestLine::Show(_))
    }

    pub fn parse(line: &'a str) -> RequestLine<'a> {
        if let Some(spec) = line.strip_prefix("attach ") {
            return RequestLine::Attach(spec);
        }
        if let Some(port) = line.strip_prefix("detach ") {
            return RequestLine::Detach(port.trim());
        }
        if let Some(rest) = line.strip_prefix("service ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            match words[..] {
                ["add", ref spec @ ..] => return RequestLine::ServiceAdd(spec.to_vec()),
                ["rm", name] => return RequestLine::ServiceRemove(name),
                _ => {}
            }
        }
        if let Some(rest) = line.strip_prefix("forward ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            match words[..] {
                ["add", proto, listen, to] => return RequestLine::ForwardAdd { proto, listen, to },
                ["rm", proto, listen] => return RequestLine::ForwardRemove { proto, listen },
                _ => {}
            }
        }
        if let Some(rest) = line.strip_prefix("impair ") {
            let (port, spec) = rest.split_once(' ').unwrap_or((rest, ""));
            return RequestLine::Impair { port, spec };
        }
        match line.strip_prefix("trace ").and_then(|r| r.split_once(' ')) {
            Some((port, packet)) => RequestLine::Trace { port, packet },
            None => RequestLine::Show(line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_read_back_as_they_were_written() {
        assert_eq!(
            RequestLine::parse(&impair("web", "loss=1% delay=20ms")),
            RequestLine::Impair {
                port: "web",
                spec: "loss=1% delay=20ms"
            }
        );
        assert_eq!(
            RequestLine::parse(&trace("web", "tcp 10.0.0.2:1 -> 10.0.0.3:2")),
            RequestLine::Trace {
                port: "web",
                packet: "tcp 10.0.0.2:1 -> 10.0.0.3:2"
            }
        );
        assert_eq!(
            RequestLine::parse(&show("ports")),
            RequestLine::Show("show ports")
        );
        assert_eq!(capture_port(&capture("web")), Some("web"));
        assert_eq!(exec_port(&exec("web")), Some("web"));
        // A trace without a packet is no trace: the show answer refuses it.
        assert_eq!(
            RequestLine::parse("trace web"),
            RequestLine::Show("trace web")
        );
    }
}
