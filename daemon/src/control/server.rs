//! The control socket's server: a thread accepts connections and hands each request
//! to the datapath thread over a channel, waking its poll loop, so lab state is only
//! ever touched by the datapath thread. A capture is streamed from the client's own
//! thread, so a slow reader never holds the datapath up.

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use crossbeam_channel::{bounded, Sender};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use vswitch::datapath::CaptureStream;

use super::protocol::{capture_port, exec_port, run_dir, socket_path, CLIENT_TIMEOUT, MAX_LINE};
use crate::namespaces::Namespaces;

/// Control clients served at once, at most (each has a thread; a capture holds its
/// own for as long as it is read).
pub const MAX_CLIENTS: usize = 64;

/// A request for the datapath thread, with where to send its JSON answer.
pub enum Request {
    /// `show ...`: answered with JSON.
    Show {
        line: String,
        reply: Sender<serde_json::Value>,
        /// The client's deadline ([`super::protocol::monotonic_ns`]): a change the
        /// datapath reaches later is not made.
        deadline_ns: u64,
    },
    /// `capture PORT`: answered with the frames' channel, or why not.
    Capture {
        port: String,
        reply: Sender<Result<CaptureStream, String>>,
    },
    /// From the etcd client: the other hosts changed, or the store's status did.
    Store(encap::store::StoreUpdate),
}

/// A listening control socket; removes its file when dropped.
pub struct Server {
    path: PathBuf,
}

impl Server {
    /// Binds the socket (failing if a live lab already holds the name) and starts the
    /// accept thread. Each request is sent on `requests`, then `wake` is called; `exec`
    /// is answered here from `namespaces`, once the build has set it.
    pub fn start(
        lab: &str,
        requests: Sender<Request>,
        wake: Arc<dyn Fn() + Send + Sync>,
        namespaces: Arc<OnceLock<Mutex<Namespaces>>>,
    ) -> Result<Server> {
        make_run_dir()?;
        let path = socket_path(lab);
        if path.exists() {
            if let Ok(live) = UnixStream::connect(&path) {
                let pid = peer_pid(&live).map_or(String::new(), |p| format!(" (pid {p})"));
                bail!(
                    "lab `{lab}` is already running{pid}, control socket {}: stop it first, or give this lab another name",
                    path.display()
                );
            }
            // Left behind by a lab that died: nobody answers on it.
            let _ = std::fs::remove_file(&path);
        }
        // SAFETY: umask only changes this process's file-creation mask.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(&path);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        let listener = bound.with_context(|| format!("cannot bind {}", path.display()))?;
        // From here on the guard removes the file, whatever fails next.
        let server = Server { path };
        std::fs::set_permissions(&server.path, std::fs::Permissions::from_mode(0o600))?;
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                let clients = Arc::new(());
                for stream in listener.incoming().flatten() {
                    // One thread per client: a capture streams for as long as it is
                    // read. Past MAX_CLIENTS at once, newcomers are turned away.
                    if Arc::strong_count(&clients) > MAX_CLIENTS {
                        turn_away(&stream);
                        continue;
                    }
                    let (requests, wake) = (requests.clone(), wake.clone());
                    let (namespaces, held) = (namespaces.clone(), clients.clone());
                    let _ = std::thread::Builder::new()
                        .name("control-client".into())
                        .spawn(move || {
                            let _held = held;
                            serve(stream, &requests, &*wake, &namespaces)
                        });
                }
            })?;
        Ok(server)
    }
}

/// Answers a client past [`MAX_CLIENTS`] with an error and closes. Its request line
/// is read first (for at most [`TURN_AWAY_WAIT`]): a unix socket closed with unread
/// data resets its peer, which would then never read the answer.
fn turn_away(stream: &UnixStream) {
    let mut out = stream;
    let _ = out.write_all(
        b"{\"error\":\"too many clients of this lab at once: try again\",\"busy\":true}\n",
    );
    // What it sent already is read, never waited for: a client that sends later finds
    // the socket closed, and reads the answer all the same.
    let _ = stream.set_nonblocking(true);
    let mut sink = [0u8; 4096];
    let mut left = MAX_LINE as usize;
    while left > 0 {
        match io::Read::read(&mut &*stream, &mut sink[..left.min(4096)]) {
            Ok(n) if n > 0 => left -= n,
            _ => break,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(
    stream: UnixStream,
    requests: &Sender<Request>,
    wake: &dyn Fn(),
    namespaces: &OnceLock<Mutex<Namespaces>>,
) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = String::new();
    // A request is one short line; never read more than 4 KiB of one.
    let read = BufReader::new(io::Read::take(&stream, MAX_LINE)).read_line(&mut line)?;
    if read == 0 {
        // Connected and gone without a word: a client looking for live labs.
        return Ok(());
    }
    let line = line.trim().to_string();
    if let Some(port) = capture_port(&line) {
        return stream_capture(&stream, port, requests, wake);
    }
    if let Some(port) = exec_port(&line) {
        return hand_namespaces(&stream, port, namespaces);
    }
    let (reply_tx, reply_rx) = bounded(1);
    let (deadline_ns, line) = super::protocol::split_deadline(&line);
    let answer = if requests
        .send(Request::Show {
            line: line.to_string(),
            reply: reply_tx,
            deadline_ns,
        })
        .is_ok()
    {
        wake();
        reply_rx.recv_timeout(CLIENT_TIMEOUT).unwrap_or_else(|_| {
            serde_json::json!({"error": "the datapath did not answer in time (it is busy)", "busy": true})
        })
    } else {
        serde_json::json!({"error": "the lab is stopping", "busy": true})
    };
    let mut out = &stream;
    serde_json::to_writer(&mut out, &answer)?;
    out.write_all(b"\n")
}

/// The run directory, made if missing: /run/tapnet for root; for a user, a directory
/// of theirs alone (0700), refused if someone else owns it or may write in it (in
/// /tmp, another user could have made it first).
fn make_run_dir() -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = run_dir();
    let rootless = host::userns::rootless();
    let mut builder = std::fs::DirBuilder::new();
    builder
        .recursive(true)
        .mode(if rootless { 0o700 } else { 0o755 });
    builder
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    super::protocol::check_run_dir(&dir).map_err(anyhow::Error::msg)?;
    Ok(())
}

/// `exec PORT`: one JSON line, `{"ok":true,"userns":BOOL,"netns":NAME}` with the port's network
/// namespace and (rootless) the lab's user namespace as SCM_RIGHTS, or an error.
fn hand_namespaces(
    stream: &UnixStream,
    port: &str,
    namespaces: &OnceLock<Mutex<Namespaces>>,
) -> io::Result<()> {
    let nss = namespaces
        .get()
        .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()));
    let name = nss
        .as_ref()
        .and_then(|nss| nss.name_of(port))
        .map(String::from);
    let opened = match &nss {
        None => Err("the lab is still being built: try again in a moment".to_string()),
        Some(nss) => nss.open_port(port).and_then(|net| {
            if !host::userns::rootless() {
                return Ok((net, None));
            }
            std::fs::File::open("/proc/self/ns/user")
                .map(|user| (net, Some(OwnedFd::from(user))))
                .map_err(|e| format!("cannot open the lab's user namespace: {e}"))
        }),
    };
    let mut out = stream;
    let (net, user) = match opened {
        Ok(fds) => fds,
        Err(e) => {
            let line = format!("{}\n", serde_json::json!({"error": e}));
            return out.write_all(line.as_bytes());
        }
    };
    let line = format!(
        "{}\n",
        serde_json::json!({"ok": true, "userns": user.is_some(), "netns": name})
    );
    let mut fds = vec![net.as_raw_fd()];
    fds.extend(user.as_ref().map(|u| u.as_raw_fd()));
    nix::sys::socket::sendmsg::<()>(
        stream.as_raw_fd(),
        &[io::IoSlice::new(line.as_bytes())],
        &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// `capture PORT`: one JSON line (`{"ok":true}` or an error), then a pcap stream of
/// the port's frames until the client goes away.
fn stream_capture(
    stream: &UnixStream,
    port: &str,
    requests: &Sender<Request>,
    wake: &dyn Fn(),
) -> io::Result<()> {
    let (reply_tx, reply_rx) = bounded(1);
    let sent = requests.send(Request::Capture {
        port: port.to_string(),
        reply: reply_tx,
    });
    let frames = match sent {
        Ok(()) => {
            wake();
            reply_rx
                .recv_timeout(CLIENT_TIMEOUT)
                .unwrap_or_else(|_| Err("the datapath did not answer".into()))
        }
        Err(_) => Err("the lab is stopping".into()),
    };
    let mut out = stream;
    let stream_handle = match frames {
        Ok(frames) => frames,
        Err(e) => {
            serde_json::to_writer(&mut out, &serde_json::json!({"error": e}))?;
            return out.write_all(b"\n");
        }
    };
    out.write_all(b"{\"ok\":true}\n")?;
    // A reader slower than the traffic loses copies (counted on the port), never
    // slows the datapath: the channel is bounded and the datapath never waits.
    stream.set_write_timeout(None)?;
    let header = PcapHeader {
        snaplen: SNAPLEN,
        ..PcapHeader::default()
    };
    let mut pcap = PcapWriter::with_header(out, header).map_err(io::Error::other)?;
    loop {
        let captured = match stream_handle.recv_timeout(Duration::from_secs(1)) {
            Ok(c) => c,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                // Nothing to write: see whether the reader is still there.
                if peer_gone(stream) {
                    return Ok(());
                }
                continue;
            }
            Err(_) => return Ok(()),
        };
        let ts = captured
            .at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let data = &captured.frame[..captured.frame.len().min(SNAPLEN as usize)];
        let packet = PcapPacket::new(ts, captured.frame.len() as u32, data);
        if pcap.write_packet(&packet).is_err() {
            return Ok(()); // the reader went away: the capture stops, the lab runs on
        }
    }
}

/// The largest frame a capture keeps whole (a TSO super-frame is 64 KiB and more).
const SNAPLEN: u32 = 262_144;

/// Whether the client closed its end (readable with nothing to read).
fn peer_gone(stream: &UnixStream) -> bool {
    let mut fds = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(stream),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    let ready = unsafe { libc::poll(&mut fds, 1, 0) };
    ready > 0 && fds.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLIN) != 0
}

/// The process at the other end of a unix socket (SO_PEERCRED).
fn peer_pid(stream: &UnixStream) -> Option<i32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED fills a ucred of the length given; the fd is the stream's.
    let r = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(stream),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0 && cred.pid > 0).then_some(cred.pid)
}
