//! `tapnet`: builds a container network in userspace from a lab file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tapnet::{control, show, up};

#[derive(Parser)]
#[command(
    name = "tapnet",
    version,
    about = "A userspace virtual network for containers, VMs and labs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the lab and run its datapath until SIGINT/SIGTERM, then remove what it created.
    Up {
        /// The lab file; without it, the embedded default lab (`tapnet example`).
        lab: Option<PathBuf>,
        /// Keep polling this many microseconds after each frame instead of sleeping:
        /// lower round-trip latency for a core's worth of CPU while traffic flows.
        #[arg(long, value_name = "US", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
        busy_poll_us: u64,
    },
    /// Print the embedded default lab file.
    Example,
    /// Validate a lab file without touching the host.
    Check { lab: PathBuf },
    /// Stream every frame a port receives or sends, as pcap, to FILE or stdout
    /// (`tapnet capture web | tcpdump -nr -`), until interrupted.
    Capture {
        /// The port, by its name in the lab file (router and VXLAN ports too:
        /// `router:BRIDGE`, `vxlan:BRIDGE`).
        port: String,
        #[arg(long)]
        lab: Option<String>,
        /// Write to this file instead of stdout.
        #[arg(short = 'w', value_name = "FILE")]
        write: Option<PathBuf>,
    },
    /// Follow a synthetic packet entering at PORT through the lab's decisions (bridge,
    /// router, services and NAT, VXLAN) and print each step. Nothing is sent.
    Trace {
        port: String,
        /// `tcp SRC:PORT -> DST:PORT`, `udp ...`, or `icmp SRC -> DST`.
        packet: String,
        #[arg(long)]
        lab: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A live view of every port's packet and bit rates, refreshed in place.
    Top {
        #[arg(long)]
        lab: Option<String>,
        /// Milliseconds between refreshes.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
        interval_ms: u64,
        /// Stop after this many refreshes (default: until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Impair a port's outgoing frames at run time, like `tc netem`:
    /// `tapnet impair web loss=1% delay=20ms jitter=5ms rate=10mbit duplicate=1%`;
    /// `tapnet impair web clear` removes it.
    Impair {
        port: String,
        #[arg(required = true, num_args = 1..)]
        spec: Vec<String>,
        #[arg(long)]
        lab: Option<String>,
    },
    /// Read live state from a running lab.
    Show {
        /// ports, fdb, drops, routes, arp, nat, forwards, services or vxlan
        what: String,
        /// The lab to ask; may be left out when exactly one runs.
        #[arg(long)]
        lab: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Exit status 1: bad usage or a bad lab file, nothing changed on the host.
const EXIT_BAD_INPUT: u8 = 1;
/// Exit status 2: a failure while running.
const EXIT_FAILURE: u8 = 2;

fn main() -> ExitCode {
    // Buffers of 128 KiB and more (each spliced TCP connection's) come straight from
    // mmap and go straight back to the system when freed. Without this, glibc raises
    // the threshold after the first such free, and later buffers come from the heap:
    // zeroed by hand (every page resident, even for a connection that moved 6 bytes)
    // and never returned after a flood of connections ends.
    // SAFETY: mallopt only tunes glibc's allocator, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_BAD_INPUT } else { 0 });
        }
    };
    match cli.command {
        Command::Example => {
            print!("{}", lab::DEFAULT_LAB);
            ExitCode::SUCCESS
        }
        // A valid file prints nothing, even with sections `up` cannot run yet: they
        // are valid by the contract, and `up` names them.
        Command::Check { lab } => match lab::load(&lab) {
            Ok(_) => ExitCode::SUCCESS,
            Err(errors) => report(&errors),
        },
        Command::Up { lab, busy_poll_us } => {
            let loaded = match &lab {
                Some(path) => lab::load(path),
                None => lab::parse("<default lab>", lab::DEFAULT_LAB),
            };
            let lab = match loaded {
                Ok(lab) => lab,
                Err(errors) => return report(&errors),
            };
            match up::run(lab, std::time::Duration::from_micros(busy_poll_us)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(up::HostError(e)) if e.is::<up::LabRefused>() => {
                    eprintln!("{e}");
                    ExitCode::from(EXIT_BAD_INPUT)
                }
                Err(up::HostError(e)) => {
                    eprintln!("tapnet: {e:#}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Command::Capture { port, lab, write } => {
            let stream = match control::resolve_lab(lab.as_deref())
                .and_then(|lab| control::capture(&lab, &port))
            {
                Ok(stream) => stream,
                Err(e) => {
                    eprintln!("tapnet: {e:#}");
                    return ExitCode::from(EXIT_BAD_INPUT);
                }
            };
            let copied = match write {
                Some(path) => std::fs::File::create(&path)
                    .and_then(|mut f| std::io::copy(&mut &stream, &mut f)),
                // Straight to fd 1, not through Stdout's line buffer: Ctrl-C must not
                // leave the last pcap record behind in it.
                None => {
                    use std::os::fd::FromRawFd;
                    // SAFETY: dup returns a new descriptor of our own, or -1 (checked).
                    let fd = unsafe { libc::dup(1) };
                    if fd < 0 {
                        Err(std::io::Error::last_os_error())
                    } else {
                        // SAFETY: `fd` is ours alone.
                        let mut out = unsafe { std::fs::File::from_raw_fd(fd) };
                        std::io::copy(&mut &stream, &mut out)
                    }
                }
            };
            match copied {
                Ok(_) => ExitCode::SUCCESS,
                // The reader went away (`| head`): that ends a capture.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tapnet: capture: {e}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Command::Trace {
            port,
            packet,
            lab,
            json,
        } => {
            if let Err(e) = tapnet::trace::parse(&packet) {
                eprintln!("tapnet: {e}");
                return ExitCode::from(EXIT_BAD_INPUT);
            }
            let result = control::resolve_lab(lab.as_deref())
                .and_then(|lab| control::request(&lab, &format!("trace {port} {packet}")));
            match result {
                Ok(v) if json => {
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(v) => {
                    for step in v["steps"].as_array().into_iter().flatten() {
                        println!("{}", step.as_str().unwrap_or_default());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tapnet: {e:#}");
                    ExitCode::from(EXIT_BAD_INPUT)
                }
            }
        }
        Command::Top {
            lab,
            interval_ms,
            count,
        } => {
            let result = control::resolve_lab(lab.as_deref()).and_then(|lab| {
                tapnet::top::run(&lab, std::time::Duration::from_millis(interval_ms), count)
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tapnet: {e:#}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Command::Impair { port, spec, lab } => {
            let spec = spec.join(" ");
            if let Err(e) = vswitch::impair::Impairment::parse(&spec) {
                eprintln!("tapnet: {e}");
                return ExitCode::from(EXIT_BAD_INPUT);
            }
            let result = control::resolve_lab(lab.as_deref())
                .and_then(|lab| control::request(&lab, &format!("impair {port} {spec}")));
            match result {
                Ok(v) => {
                    println!("{}: {}", port, v["impair"].as_str().unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tapnet: {e:#}");
                    ExitCode::from(EXIT_BAD_INPUT)
                }
            }
        }
        Command::Show { what, lab, json } => {
            if !show::WHATS.contains(&what.as_str()) {
                eprintln!(
                    "tapnet: show {what}: unknown; one of {}",
                    show::WHATS.join(", ")
                );
                return ExitCode::from(EXIT_BAD_INPUT);
            }
            let result = control::resolve_lab(lab.as_deref())
                .and_then(|lab| control::request(&lab, &format!("show {what}")));
            match result {
                Ok(v) if json => {
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(v) => {
                    print!("{}", show::render(&what, &v));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tapnet: {e:#}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
    }
}

fn report(errors: &[lab::LabError]) -> ExitCode {
    for e in errors {
        eprintln!("{e}");
    }
    ExitCode::from(EXIT_BAD_INPUT)
}
