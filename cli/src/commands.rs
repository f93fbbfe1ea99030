//! The commands, thin: each calls the lab crate (`example`, `check`) or the daemon
//! crate (`up`, and the control client for the rest), prints what comes back, and
//! says how it went in its exit status.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use daemon::control::client;
use tapnet::{render, top};

/// Exit status 1: bad usage or a bad lab file, nothing changed on the host.
pub const EXIT_BAD_INPUT: u8 = 1;
/// Exit status 2: a failure while running.
pub const EXIT_FAILURE: u8 = 2;

pub fn example() -> ExitCode {
    print!("{}", lab::DEFAULT_LAB);
    ExitCode::SUCCESS
}

/// `tapnet check`: a valid file prints nothing, even with sections `up` cannot run
/// yet: they are valid by the contract, and `up` names them. Run by an ordinary user,
/// it also names what that user's (rootless) `up` would refuse.
pub fn check(path: &Path) -> ExitCode {
    match lab::load(path) {
        Ok(lab) => match daemon::refused_here(&lab) {
            refused if refused.is_empty() => ExitCode::SUCCESS,
            refused => report(&refused),
        },
        Err(errors) => report(&errors),
    }
}

pub fn up(path: Option<&Path>, tuning: daemon::Tuning) -> ExitCode {
    let loaded = match path {
        Some(path) => lab::load(path),
        None => lab::parse("<default lab>", lab::DEFAULT_LAB),
    };
    let lab = match loaded {
        Ok(lab) => lab,
        Err(errors) => return report(&errors),
    };
    match daemon::run(lab, tuning) {
        Ok(()) => ExitCode::SUCCESS,
        Err(daemon::HostError(e)) if e.is::<daemon::LabRefused>() => {
            eprintln!("{e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
        Err(daemon::HostError(e)) => {
            eprintln!("tapnet: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

pub fn capture(port: &str, lab: Option<&str>, write: Option<PathBuf>) -> ExitCode {
    if port.trim().is_empty() {
        eprintln!("tapnet: capture: the port's name is empty");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let stream = match client::resolve_lab(lab).and_then(|lab| client::capture(&lab, port)) {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!("tapnet: {e:#}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let out = match write {
        Some(path) => std::fs::File::create(&path),
        // Straight to fd 1, not through Stdout's line buffer: each record leaves whole
        // as soon as it is written.
        None => {
            use std::os::fd::FromRawFd;
            // SAFETY: dup returns a new descriptor of our own, or -1 (checked).
            let fd = unsafe { libc::dup(1) };
            if fd < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                // SAFETY: `fd` is ours alone.
                Ok(unsafe { std::fs::File::from_raw_fd(fd) })
            }
        }
    };
    match out.and_then(|out| copy_records(stream, out)) {
        Ok(Ended::Stopped) => ExitCode::SUCCESS,
        Ok(Ended::ByLab) => {
            eprintln!(
                "tapnet: capture: the lab ended the capture (the port went down or was \
                 detached, or the lab stopped)"
            );
            ExitCode::SUCCESS
        }
        // The reader went away (`| head`): that ends a capture.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tapnet: capture: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Why a capture's copy ended without an error.
enum Ended {
    /// SIGINT or SIGTERM.
    Stopped,
    /// The lab closed the stream.
    ByLab,
}

/// Set by SIGINT and SIGTERM while a capture runs.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Reads from the stream until [`STOP`] is set: a signal interrupts a waiting read
/// (the handler is installed without SA_RESTART), and the read then fails as
/// `Interrupted`, which nothing retries.
struct Stoppable<R>(R);

impl<R: std::io::Read> std::io::Read for Stoppable<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if STOP.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(std::io::Error::other("stopped by a signal"));
            }
            match self.0.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

/// Copies the lab's pcap stream to `out` a whole record at a time (the `pcap-file`
/// crate reads and writes them), so that a capture stopped with Ctrl-C or SIGTERM
/// leaves a file every pcap reader takes whole: what was in flight is left out.
fn copy_records(
    stream: std::os::unix::net::UnixStream,
    out: std::fs::File,
) -> std::io::Result<Ended> {
    use pcap_file::pcap::{PcapReader, PcapWriter};
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a handler that only stores to an atomic; sa_flags 0 (no SA_RESTART),
        // so a blocked read returns EINTR.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
    // Whatever error a read gave once a signal came, the signal is why it ended.
    let stopped = |_: &pcap_file::PcapError| STOP.load(std::sync::atomic::Ordering::Relaxed);
    let mut reader = match PcapReader::new(Stoppable(stream)) {
        Ok(r) => r,
        // Stopped before the header came: nothing to write.
        Err(e) if stopped(&e) => return Ok(Ended::Stopped),
        Err(pcap_file::PcapError::IncompleteBuffer) => return Ok(Ended::ByLab),
        Err(e) => return Err(std::io::Error::other(e)),
    };
    let mut writer =
        PcapWriter::with_header(out, reader.header()).map_err(std::io::Error::other)?;
    loop {
        match reader.next_packet() {
            None => return Ok(Ended::ByLab),
            Some(Ok(packet)) => {
                if let Err(e) = writer.write_packet(&packet) {
                    return Err(match e {
                        pcap_file::PcapError::IoError(e) => e,
                        e => std::io::Error::other(e),
                    });
                }
            }
            Some(Err(e)) if stopped(&e) => return Ok(Ended::Stopped),
            // The stream ended inside a record: the lab went away mid-copy.
            Some(Err(pcap_file::PcapError::IncompleteBuffer)) => return Ok(Ended::ByLab),
            Some(Err(e)) => return Err(std::io::Error::other(e)),
        }
    }
}

pub fn trace(port: &str, packet: &str, lab: Option<&str>, json: bool) -> ExitCode {
    if let Err(e) = daemon::trace::check(packet) {
        eprintln!("tapnet: {e}");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let result = client::resolve_lab(lab).and_then(|lab| client::trace(&lab, port, packet));
    match result {
        Ok(v) if json => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(v) => {
            for step in v["steps"].as_array().into_iter().flatten() {
                println!("{}", step.as_str().unwrap_or_default());
            }
            match v["egress"].as_str() {
                Some(egress) => println!("egress: {egress}"),
                None => println!("egress: none (it stops inside the lab)"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}

pub fn top(lab: Option<&str>, interval: Duration, count: Option<u64>) -> ExitCode {
    let result = client::resolve_lab(lab).and_then(|lab| top::run(&lab, interval, count));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tapnet: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

pub fn impair(port: &str, spec: &[String], lab: Option<&str>) -> ExitCode {
    let spec = spec.join(" ");
    if let Err(e) = vswitch::impair::Impairment::parse(&spec) {
        eprintln!("tapnet: {e}");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let result = client::resolve_lab(lab).and_then(|lab| client::impair(&lab, port, &spec));
    match result {
        Ok(v) => {
            println!("{}: {}", port, v["impair"].as_str().unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}

pub fn show(what: &str, lab: Option<&str>, json: bool) -> ExitCode {
    let whats = daemon::query::WHATS;
    if !whats.contains(&what) {
        eprintln!("tapnet: show {what}: unknown; one of {}", whats.join(", "));
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let result = client::resolve_lab(lab).and_then(|lab| client::show(&lab, what));
    match result {
        Ok(v) if json => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        // The lab file as it is now: TOML, to save and `check` or `up` again.
        Ok(v) if what == "lab" => {
            print!("{}", v["lab"].as_str().unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(v) => {
            print!("{}", render::render(what, &v));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tapnet: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `tapnet exec PORT -- CMD...`: runs CMD in the port's network namespace (and, for a
/// rootless lab, in the lab's user namespace, as uid 0 there), replacing this process,
/// so the exit status is CMD's. Exit 1 if the lab or port is unknown, 2 if the
/// namespaces cannot be entered, 126 if CMD cannot be run and 127 if it is not found,
/// as shells say.
pub fn exec(port: &str, command: &[std::ffi::OsString], lab: Option<&str>) -> ExitCode {
    use std::os::fd::{AsFd, AsRawFd};
    use std::os::unix::process::CommandExt;
    let namespaces = match client::resolve_lab(lab).and_then(|lab| client::exec(&lab, port)) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("tapnet: {e:#}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    // Root entering an ordinary user's (rootless) lab does so as that user: as root,
    // unmapped there, the command would lose every capability when it starts.
    if let (Some(user), false) = (&namespaces.userns, host::userns::rootless()) {
        if let Err(e) = host::userns::become_owner_of(user.as_fd()) {
            eprintln!("tapnet: cannot become the lab's user: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    // The user namespace first: it is what gives the right to enter the network
    // namespace it owns. Not when we are in it already (setns refuses that).
    if let Some(user) = &namespaces.userns {
        let same = std::fs::metadata("/proc/self/ns/user")
            .and_then(|own| Ok((own, std::fs::File::from(user.try_clone()?).metadata()?)))
            .is_ok_and(|(a, b)| {
                use std::os::unix::fs::MetadataExt;
                (a.dev(), a.ino()) == (b.dev(), b.ino())
            });
        // SAFETY: setns on this single-threaded process, with a received namespace fd.
        if !same && unsafe { libc::setns(user.as_raw_fd(), libc::CLONE_NEWUSER) } != 0 {
            eprintln!(
                "tapnet: cannot enter the lab's user namespace: {}",
                std::io::Error::last_os_error()
            );
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    // SAFETY: as above, with the port's network namespace.
    if unsafe { libc::setns(namespaces.netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        eprintln!(
            "tapnet: cannot enter port `{port}`'s network namespace: {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::from(EXIT_FAILURE);
    }
    // As `ip netns exec` does: /sys showing this namespace, /etc/netns/NAME over /etc.
    if let Err(e) = host::netns::private_mounts_for(namespaces.name.as_deref()) {
        eprintln!("tapnet: exec: {e}: /sys and /etc are the host's in `{port}`");
    }
    drop(namespaces);
    let Some((program, args)) = command.split_first() else {
        eprintln!("tapnet: exec: no command after `--`");
        return ExitCode::from(EXIT_BAD_INPUT);
    };
    let err = std::process::Command::new(program).args(args).exec();
    eprintln!("tapnet: cannot run `{}`: {err}", program.to_string_lossy());
    ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

/// `tapnet attach`: prints the port's name, address and MAC; a refusal is one line,
/// exit 1, nothing changed.
pub fn attach(spec: daemon::runtime::AttachSpec, lab: Option<&str>) -> ExitCode {
    match client::resolve_lab(lab).and_then(|lab| client::attach(&lab, &spec)) {
        Ok(v) => {
            println!(
                "{}: bridge {}, ip {}, mac {}",
                v["attached"].as_str().unwrap_or_default(),
                v["bridge"].as_str().unwrap_or_default(),
                v["ip"].as_str().unwrap_or("-"),
                v["mac"].as_str().unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}

/// `tapnet forward add|rm` and `tapnet service add|rm`: silent on success; a refusal
/// is one line, exit 1.
pub fn change(
    lab: Option<&str>,
    change: impl FnOnce(&str) -> anyhow::Result<serde_json::Value>,
) -> ExitCode {
    match client::resolve_lab(lab).and_then(|lab| change(&lab)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => failed(&e),
    }
}

/// `tapnet detach PORT`.
pub fn detach(port: &str, lab: Option<&str>) -> ExitCode {
    if port.trim().is_empty() {
        eprintln!("tapnet: detach needs a port's name (`tapnet show ports` lists them)");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    match client::resolve_lab(lab).and_then(|lab| client::detach(&lab, port)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => failed(&e),
    }
}

/// Says why a request to a running lab failed: exit 1 for a refusal, 2 when the lab
/// did not take it at all (not running, too busy; see [`client::NotServed`]).
fn failed(e: &anyhow::Error) -> ExitCode {
    eprintln!("tapnet: {e:#}");
    if e.downcast_ref::<client::NotServed>().is_some() {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::from(EXIT_BAD_INPUT)
    }
}

fn report(errors: &[lab::LabError]) -> ExitCode {
    for e in errors {
        eprintln!("{e}");
    }
    ExitCode::from(EXIT_BAD_INPUT)
}
