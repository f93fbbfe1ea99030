//! The control socket's client: finds the lab to talk to, sends one request and reads
//! its JSON answer, or starts a capture and hands back its pcap stream. The `tapnet`
//! commands use it, as would any other program (a CNI plugin) asking a running lab.

use std::io::{self, BufReader, Write};
use std::os::unix::net::UnixStream;

use anyhow::{anyhow, bail, Context, Result};

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::protocol::{self, run_dir, socket_path, CLIENT_TIMEOUT, MAX_LINE};

/// The lab did not take a request: it is not running, had too many clients at once,
/// or gave no answer in time. Unlike a refusal, this says nothing about the request
/// itself: the commands exit 2 for it, 1 for a refusal.
#[derive(Debug)]
pub struct NotServed(pub String);

impl std::fmt::Display for NotServed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotServed {}

/// Run directories of ordinary users' (rootless) labs that root may reach:
/// `$XDG_RUNTIME_DIR/tapnet` if set, `/run/user/UID/tapnet` (as systemd sets
/// XDG_RUNTIME_DIR) and `/tmp/tapnet-UID`.
/// Empty for anyone but root.
fn users_run_dirs() -> Vec<std::path::PathBuf> {
    if host::userns::rootless() {
        return Vec::new();
    }
    let mut dirs = Vec::new();
    // As `sudo -E` keeps it, or set by hand to reach one lab.
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        dirs.push(std::path::PathBuf::from(xdg).join("tapnet"));
    }
    if let Ok(users) = std::fs::read_dir("/run/user") {
        dirs.extend(users.flatten().map(|u| u.path().join("tapnet")));
    }
    if let Ok(tmp) = std::fs::read_dir("/tmp") {
        dirs.extend(
            tmp.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("tapnet-"))
                .map(|e| e.path()),
        );
    }
    dirs.retain(|d| d.is_dir());
    dirs
}

/// Where lab `lab`'s control socket is: in this user's run directory, or (for root)
/// an ordinary user's where only that has it.
fn locate(lab: &str) -> std::path::PathBuf {
    let path = socket_path(lab);
    if path.exists() {
        return path;
    }
    users_run_dirs()
        .into_iter()
        .map(|d| d.join(format!("{lab}.sock")))
        .find(|p| p.exists())
        .unwrap_or(path)
}

/// Connects to lab `lab`'s control socket, saying clearly why not.
fn connect(lab: &str) -> Result<UnixStream> {
    let run = run_dir();
    if run.exists() {
        protocol::check_run_dir(&run).map_err(anyhow::Error::msg)?;
    }
    let path = locate(lab);
    UnixStream::connect(&path).map_err(|e| match e.kind() {
        // An ordinary user asking for one of root's labs.
        io::ErrorKind::NotFound
            if host::userns::rootless()
                && std::path::Path::new(protocol::ROOT_RUN_DIR)
                    .join(format!("{lab}.sock"))
                    .exists() =>
        {
            anyhow!(
                "lab `{lab}` belongs to another user (root: its control socket is in {}): run tapnet with sudo",
                protocol::ROOT_RUN_DIR
            )
        }
        io::ErrorKind::PermissionDenied => anyhow!(
            "lab `{lab}` belongs to another user (its control socket {} is theirs alone): run tapnet as that user, or with sudo",
            path.display()
        ),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => anyhow!(
            "lab `{lab}` is not running (no live control socket {}): `tapnet up` starts it",
            path.display()
        ),
        _ => anyhow!("cannot reach lab `{lab}` at {}: {e}", path.display()),
    })
}

/// Starts a capture of `port` on a running lab: the pcap stream to read.
pub fn capture(lab: &str, port: &str) -> Result<UnixStream> {
    check_line(&protocol::capture(port))?;
    let stream = connect(lab)?;
    let mut w = &stream;
    w.write_all(format!("{}\n", protocol::capture(port)).as_bytes())?;
    // The status line, read a byte at a time so no pcap byte is consumed with it.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match io::Read::read(&mut &stream, &mut byte)? {
            0 => bail!("lab `{lab}` closed the capture"),
            _ if byte[0] == b'\n' => break,
            _ => line.push(byte[0]),
        }
        if line.len() > MAX_LINE as usize {
            bail!("bad answer from lab `{lab}`");
        }
    }
    let status: serde_json::Value =
        serde_json::from_slice(&line).with_context(|| format!("bad answer from lab `{lab}`"))?;
    if let Some(err) = status.get("error").and_then(|e| e.as_str()) {
        bail!("{err}");
    }
    Ok(stream)
}

/// Finds the lab to talk to: `--lab NAME`, or the only one running.
pub fn resolve_lab(lab: Option<&str>) -> Result<String> {
    if let Some(lab) = lab {
        return Ok(lab.to_string());
    }
    let mut live = Vec::new();
    let mut theirs = Vec::new();
    let run = run_dir();
    if run.exists() {
        protocol::check_run_dir(&run).map_err(anyhow::Error::msg)?;
    }
    let listed = std::fs::read_dir(&run);
    if let Err(e) = &listed {
        if e.kind() == io::ErrorKind::PermissionDenied {
            bail!(
                "{} belongs to another user, and so do the labs in it: run tapnet as that user, or set XDG_RUNTIME_DIR to your own",
                run.display()
            );
        }
    }
    if let Ok(dir) = listed {
        for entry in dir.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "sock") {
                continue;
            }
            let Some(stem) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                continue;
            };
            match UnixStream::connect(&path) {
                Ok(_) => live.push(stem),
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => theirs.push(stem),
                Err(_) => {}
            }
        }
    }
    // Root also sees ordinary users' labs.
    for dir in users_run_dirs() {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "sock") && UnixStream::connect(&path).is_ok() {
                if let Some(stem) = path.file_stem() {
                    live.push(stem.to_string_lossy().into_owned());
                }
            }
        }
    }
    // An ordinary user with no lab of their own may be after one of root's.
    if live.is_empty() && host::userns::rootless() {
        if let Ok(dir) = std::fs::read_dir(protocol::ROOT_RUN_DIR) {
            for entry in dir.flatten() {
                let path = entry.path();
                if path.extension().is_none_or(|x| x != "sock") {
                    continue;
                }
                let refused = UnixStream::connect(&path)
                    .is_err_and(|e| e.kind() == io::ErrorKind::PermissionDenied);
                if let (true, Some(stem)) = (refused, path.file_stem()) {
                    theirs.push(stem.to_string_lossy().into_owned());
                }
            }
        }
    }
    live.sort();
    theirs.sort();
    match live.len() {
        0 if !theirs.is_empty() => bail!(
            "no lab of yours is running; {} {} run by another user (control sockets are theirs alone, mode 0600): run tapnet as that user, or with sudo",
            if theirs.len() == 1 { "lab" } else { "labs" },
            theirs.join(", ")
        ),
        0 => bail!(
            "no lab is running (no live control socket in {}); start one with `tapnet up`",
            run.display()
        ),
        1 => Ok(live.remove(0)),
        _ => bail!(
            "several labs are running ({}): choose one with --lab NAME",
            live.join(", ")
        ),
    }
}

/// A request line the server can read as one: no line breaks, shorter than
/// [`MAX_LINE`].
fn check_line(line: &str) -> Result<()> {
    if line.contains(['\n', '\r']) {
        bail!("a request may not hold a line break (port names are letters, digits, `_`, `.` and `-`)");
    }
    if line.len() as u64 >= MAX_LINE {
        bail!("request longer than {MAX_LINE} bytes");
    }
    Ok(())
}

/// Sends one request line to a running lab and returns its JSON answer.
pub fn request(lab: &str, line: &str) -> Result<serde_json::Value> {
    check_line(line)?;
    let stream = connect(lab).map_err(|e| NotServed(format!("{e:#}")))?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let mut w = &stream;
    // A lab turning a client away (too many at once) answers and closes before
    // reading: its answer is still there to read after a broken pipe.
    let sent = w
        .write_all(protocol::with_deadline(line).as_bytes())
        .and_then(|()| w.write_all(b"\n"));
    let value: serde_json::Value = match serde_json::from_reader(BufReader::new(&stream)) {
        Ok(v) => v,
        Err(e) if e.io_error_kind().is_some_and(|k| {
            matches!(k, io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
        }) =>
        {
            return Err(NotServed(format!(
                "lab `{lab}` gave no answer within {} s (it is busy): a change it had not begun within {} s is not made; `tapnet show lab` says what it has",
                CLIENT_TIMEOUT.as_secs(),
                protocol::CHANGE_DEADLINE.as_secs()
            ))
            .into())
        }
        Err(e) => {
            sent.map_err(|s| NotServed(format!("cannot send to lab `{lab}`: {s}")))?;
            return Err(e).with_context(|| format!("bad answer from lab `{lab}`"));
        }
    };
    if let Some(err) = value.get("error").and_then(|e| e.as_str()) {
        if value.get("busy").and_then(serde_json::Value::as_bool) == Some(true) {
            return Err(NotServed(err.to_string()).into());
        }
        bail!("{err}");
    }
    Ok(value)
}

/// `show WHAT` on a running lab: its JSON answer.
pub fn show(lab: &str, what: &str) -> Result<serde_json::Value> {
    request(lab, &protocol::show(what))
}

/// `trace PORT PACKET` on a running lab: its JSON answer (the steps).
pub fn trace(lab: &str, port: &str, packet: &str) -> Result<serde_json::Value> {
    request(lab, &protocol::trace(port, packet))
}

/// `attach` on a running lab: its JSON answer (the port's name, address and MAC).
pub fn attach(lab: &str, spec: &crate::runtime::AttachSpec) -> Result<serde_json::Value> {
    request(lab, &protocol::attach(spec))
}

/// `forward add` on a running lab: its JSON answer.
pub fn forward_add(lab: &str, proto: &str, listen: &str, to: &str) -> Result<serde_json::Value> {
    request(lab, &protocol::forward_add(proto, listen, to))
}

/// `forward rm` on a running lab: its JSON answer.
pub fn forward_rm(lab: &str, proto: &str, listen: &str) -> Result<serde_json::Value> {
    request(lab, &protocol::forward_rm(proto, listen))
}

/// `service add` on a running lab: its JSON answer.
pub fn service_add(
    lab: &str,
    name: &str,
    vip: &str,
    proto: &str,
    backends: &[String],
) -> Result<serde_json::Value> {
    request(lab, &protocol::service_add(name, vip, proto, backends))
}

/// `service rm` on a running lab: its JSON answer.
pub fn service_rm(lab: &str, name: &str) -> Result<serde_json::Value> {
    request(lab, &protocol::service_rm(name))
}

/// `detach PORT` on a running lab: its JSON answer.
pub fn detach(lab: &str, port: &str) -> Result<serde_json::Value> {
    request(lab, &protocol::detach(port))
}

/// `impair PORT SPEC` on a running lab: its JSON answer (the impairment now set).
pub fn impair(lab: &str, port: &str, spec: &str) -> Result<serde_json::Value> {
    request(lab, &protocol::impair(port, spec))
}

/// The namespaces to run a command in port `port` of a running lab (`exec PORT`): the
/// port's network namespace and, for a rootless lab, the lab's user namespace.
pub struct PortNamespaces {
    pub netns: OwnedFd,
    pub userns: Option<OwnedFd>,
    /// The namespace's name in the lab, when it has one (not a path).
    pub name: Option<String>,
}

/// `exec PORT` on a running lab: its namespaces, received as SCM_RIGHTS.
pub fn exec(lab: &str, port: &str) -> Result<PortNamespaces> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    check_line(&protocol::exec(port))?;
    let stream = connect(lab)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let mut w = &stream;
    w.write_all(format!("{}\n", protocol::exec(port)).as_bytes())?;
    let mut buf = vec![0u8; MAX_LINE as usize];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 2]);
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .with_context(|| format!("no answer from lab `{lab}`"))?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for c in msg
        .cmsgs()
        .map_err(|e| anyhow!("bad answer from lab `{lab}`: {e}"))?
    {
        if let ControlMessageOwned::ScmRights(received) = c {
            // SAFETY: each descriptor was just received, and is ours alone.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let mut n = msg.bytes;
    // The descriptors come with the first bytes; the rest of the line may follow.
    while n > 0 && n < buf.len() && buf[n - 1] != b'\n' {
        match io::Read::read(&mut &stream, &mut buf[n..])? {
            0 => break,
            more => n += more,
        }
    }
    let line = &buf[..n];
    let status: serde_json::Value = serde_json::from_slice(line.trim_ascii_end())
        .with_context(|| format!("bad answer from lab `{lab}`"))?;
    if let Some(err) = status.get("error").and_then(|e| e.as_str()) {
        bail!("{err}");
    }
    let wants_userns = status.get("userns").and_then(|u| u.as_bool()) == Some(true);
    let mut fds = fds.into_iter();
    let netns = fds
        .next()
        .ok_or_else(|| anyhow!("lab `{lab}` sent no namespace"))?;
    let userns = if wants_userns {
        Some(
            fds.next()
                .ok_or_else(|| anyhow!("lab `{lab}` sent no user namespace"))?,
        )
    } else {
        None
    };
    let name = status
        .get("netns")
        .and_then(|n| n.as_str())
        .map(String::from);
    Ok(PortNamespaces {
        netns,
        userns,
        name,
    })
}
