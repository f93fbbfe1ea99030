//! The control socket, `/run/tapnet/NAME.sock` (mode 0600).
//!
//! One request line per connection (`show ports`), one JSON reply, then close. A thread
//! accepts connections and hands each request to the datapath thread over a channel,
//! waking its poll loop, so lab state is only ever touched by the datapath thread.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use crossbeam_channel::{bounded, Receiver, Sender};

pub const RUN_DIR: &str = "/run/tapnet";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

pub fn socket_path(lab: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{lab}.sock"))
}

/// A request for the datapath thread, with where to send its JSON answer.
pub struct Request {
    pub line: String,
    pub reply: Sender<serde_json::Value>,
}

/// A listening control socket; removes its file when dropped.
pub struct Server {
    path: PathBuf,
}

impl Server {
    /// Binds the socket (failing if a live lab already holds the name) and starts the
    /// accept thread. Each request is sent on `requests`, then `wake` is called.
    pub fn start(
        lab: &str,
        requests: Sender<Request>,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Server> {
        std::fs::create_dir_all(RUN_DIR).with_context(|| format!("cannot create {RUN_DIR}"))?;
        let path = socket_path(lab);
        if path.exists() {
            if UnixStream::connect(&path).is_ok() {
                bail!(
                    "lab `{lab}` is already running (control socket {}): stop it first or rename this lab",
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
                for stream in listener.incoming().flatten() {
                    let _ = serve(stream, &requests, &*wake);
                }
            })?;
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(stream: UnixStream, requests: &Sender<Request>, wake: &dyn Fn()) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = String::new();
    // A request is one short line; never read more than 4 KiB of one.
    BufReader::new(io::Read::take(&stream, 4096)).read_line(&mut line)?;
    let (reply_tx, reply_rx) = bounded(1);
    let answer = if requests
        .send(Request {
            line: line.trim().to_string(),
            reply: reply_tx,
        })
        .is_ok()
    {
        wake();
        reply_rx
            .recv_timeout(CLIENT_TIMEOUT)
            .unwrap_or_else(|_| serde_json::json!({"error": "the datapath did not answer"}))
    } else {
        serde_json::json!({"error": "the lab is stopping"})
    };
    let mut out = &stream;
    serde_json::to_writer(&mut out, &answer)?;
    out.write_all(b"\n")
}

/// The datapath side: answers every waiting request with `answer`.
pub fn drain(requests: &Receiver<Request>, mut answer: impl FnMut(&str) -> serde_json::Value) {
    while let Ok(req) = requests.try_recv() {
        let _ = req.reply.send(answer(&req.line));
    }
}

/// Finds the lab to talk to: `--lab NAME`, or the only one running.
pub fn resolve_lab(lab: Option<&str>) -> Result<String> {
    if let Some(lab) = lab {
        return Ok(lab.to_string());
    }
    let mut live = Vec::new();
    if let Ok(dir) = std::fs::read_dir(RUN_DIR) {
        for entry in dir.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "sock") && UnixStream::connect(&path).is_ok() {
                if let Some(stem) = path.file_stem() {
                    live.push(stem.to_string_lossy().into_owned());
                }
            }
        }
    }
    live.sort();
    match live.len() {
        0 => bail!(
            "no lab is running (no live control socket in {RUN_DIR}); start one with `tapnet up`"
        ),
        1 => Ok(live.remove(0)),
        _ => bail!(
            "several labs are running ({}): choose one with --lab NAME",
            live.join(", ")
        ),
    }
}

/// Sends one request line to a running lab and returns its JSON answer.
pub fn request(lab: &str, line: &str) -> Result<serde_json::Value> {
    let path = socket_path(lab);
    let stream = UnixStream::connect(&path).map_err(|e| {
        anyhow!(
            "cannot reach lab `{lab}` at {}: {e} (is it running? `tapnet up` starts it)",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let mut w = &stream;
    w.write_all(line.as_bytes())?;
    w.write_all(b"\n")?;
    let value: serde_json::Value = serde_json::from_reader(BufReader::new(&stream))
        .with_context(|| format!("bad answer from lab `{lab}`"))?;
    if let Some(err) = value.get("error").and_then(|e| e.as_str()) {
        bail!("{err}");
    }
    Ok(value)
}
