//! `tapnet`: builds a container network in userspace from a lab file. This file is
//! the command line (clap); `commands` runs each command.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use commands::EXIT_BAD_INPUT;

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
        /// Datapath threads, each with its own queue of every TAP (default: the cores
        /// this process may run on, at most 16; 1: one thread, single-queue TAPs).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=16))]
        threads: Option<u16>,
        /// Bind datapath thread k to the k-th CPU this process may run on (wrapping
        /// around), so a flow's thread stays on one core; `show threads` lists each
        /// thread's CPUs.
        #[arg(long)]
        pin_threads: bool,
        /// Write every frame to its TAP with its own write(2), instead of small
        /// frames in batches through io_uring (used where the kernel allows it).
        #[arg(long)]
        no_io_uring: bool,
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
        /// `tcp SRC:PORT -> DST:PORT`, `udp ...`, or `icmp SRC -> DST`; over IPv6,
        /// `tcp [SRC]:PORT -> [DST]:PORT` or `icmp6 SRC -> DST`. `size BYTES` after it.
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
    /// Run a command inside a port's container, in its network namespace (and, for a
    /// lab run without root, the lab's user namespace, as uid 0 there):
    /// `tapnet exec web -- python3 -m http.server 80`. The exit status is the
    /// command's. It works as root and as the user who runs the lab, in place of
    /// `ip netns exec`.
    Exec {
        port: String,
        /// The command and its arguments, after `--`.
        #[arg(required = true, num_args = 1.., last = true, value_name = "CMD")]
        command: Vec<std::ffi::OsString>,
        #[arg(long)]
        lab: Option<String>,
    },
    /// Attach a port to a running lab's bridge: a container's namespace (a TAP made in
    /// it, as for a lab file's `[[port]]`) or a QEMU VM's socket. Checked as `check`
    /// checks a lab file; nothing changes if it is refused.
    Attach {
        /// The bridge to attach to.
        bridge: String,
        /// The port's name (unique in the lab).
        #[arg(long)]
        name: String,
        /// The namespace: a name (as root, /run/netns/NAME, made if missing) or a path
        /// such as /proc/PID/ns/net.
        #[arg(long, conflicts_with = "qemu")]
        netns: Option<String>,
        /// A QEMU VM's socket (`-netdev stream`) instead of a namespace.
        #[arg(long)]
        qemu: Option<String>,
        /// The device's name in the namespace (default eth0).
        #[arg(long, conflicts_with = "qemu")]
        ifname: Option<String>,
        /// `auto` (the lowest free address of the bridge's subnet) or `a.b.c.d/len`.
        #[arg(long)]
        ip: Option<String>,
        /// The port's IPv6 address, `a:b::c/len`, on a bridge with a `subnet6`
        /// (without it, the container autoconfigures from the router's advertisements).
        #[arg(long)]
        ip6: Option<String>,
        /// The port's MAC (default: derived from its address, as in a lab file).
        #[arg(long)]
        mac: Option<String>,
        #[arg(long)]
        lab: Option<String>,
    },
    /// Detach a port from a running lab: its TAP goes, and with it its learned
    /// addresses, its neighbour entry, its service flows and its host connections.
    Detach {
        port: String,
        #[arg(long)]
        lab: Option<String>,
    },
    /// Publish a container's port on the host at run time, or take it back:
    /// `tapnet forward add tcp 0.0.0.0:8081 172.16.1.7:80`,
    /// `tapnet forward rm tcp 0.0.0.0:8081`. Checked as a lab file's `[[forward]]`.
    Forward {
        #[command(subcommand)]
        change: ForwardChange,
    },
    /// Add a service VIP at run time, or remove one:
    /// `tapnet service add api 172.16.1.100:80 tcp 172.16.1.7:80 172.16.1.8:80`,
    /// `tapnet service rm api`. Checked as a lab file's `[[service]]`.
    Service {
        #[command(subcommand)]
        change: ServiceChange,
    },
    /// Read live state from a running lab.
    Show {
        /// ports, fdb, drops, routes, arp, nat, forwards, services, vxlan, lab (the
        /// running lab as a lab file, with what was attached and detached), or threads
        /// (the datapath threads: frames each forwarded, CPU time, CPUs)
        what: String,
        /// The lab to ask; may be left out when exactly one runs.
        #[arg(long)]
        lab: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ServiceChange {
    /// Add a service: NAME, VIP (ip:port), PROTO (tcp or udp), BACKEND (ip:port)...
    Add {
        name: String,
        vip: String,
        proto: String,
        #[arg(required = true, num_args = 1..)]
        backends: Vec<String>,
        #[arg(long)]
        lab: Option<String>,
    },
    /// Remove service NAME: its VIP stops answering, its connections are reset.
    Rm {
        name: String,
        #[arg(long)]
        lab: Option<String>,
    },
}

#[derive(Subcommand)]
enum ForwardChange {
    /// Add a forward: PROTO (tcp or udp), LISTEN (a port or ip:port), TO (ip:port).
    Add {
        proto: String,
        listen: String,
        to: String,
        #[arg(long)]
        lab: Option<String>,
    },
    /// Remove the forward of PROTO on LISTEN: its connections close.
    Rm {
        proto: String,
        listen: String,
        #[arg(long)]
        lab: Option<String>,
    },
}

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
    if !matches!(cli.command, Command::Up { .. } | Command::Capture { .. }) {
        // A command printing to a pipe its reader closed (`tapnet show nat | head`)
        // ends quietly, as Unix tools do, instead of panicking on EPIPE. Not `up`,
        // whose sockets must not kill it, nor `capture`, which handles EPIPE itself.
        // SAFETY: restoring a signal's default disposition, before any other thread.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cli.command {
        Command::Example => commands::example(),
        Command::Check { lab } => commands::check(&lab),
        Command::Up {
            lab,
            busy_poll_us,
            threads,
            pin_threads,
            no_io_uring,
        } => commands::up(
            lab.as_deref(),
            daemon::Tuning {
                busy_poll: Duration::from_micros(busy_poll_us),
                threads: threads.map(usize::from),
                pin_threads,
                no_io_uring,
            },
        ),
        Command::Capture { port, lab, write } => commands::capture(&port, lab.as_deref(), write),
        Command::Trace {
            port,
            packet,
            lab,
            json,
        } => commands::trace(&port, &packet, lab.as_deref(), json),
        Command::Top {
            lab,
            interval_ms,
            count,
        } => commands::top(lab.as_deref(), Duration::from_millis(interval_ms), count),
        Command::Impair { port, spec, lab } => commands::impair(&port, &spec, lab.as_deref()),
        Command::Show { what, lab, json } => commands::show(&what, lab.as_deref(), json),
        Command::Exec { port, command, lab } => commands::exec(&port, &command, lab.as_deref()),
        Command::Attach {
            bridge,
            name,
            netns,
            qemu,
            ifname,
            ip,
            ip6,
            mac,
            lab,
        } => commands::attach(
            daemon::runtime::AttachSpec {
                bridge,
                name,
                netns,
                qemu,
                ifname,
                ip,
                ip6,
                mac,
            },
            lab.as_deref(),
        ),
        Command::Detach { port, lab } => commands::detach(&port, lab.as_deref()),
        Command::Service { change } => match change {
            ServiceChange::Add {
                name,
                vip,
                proto,
                backends,
                lab,
            } => commands::change(lab.as_deref(), |l| {
                daemon::control::client::service_add(l, &name, &vip, &proto, &backends)
            }),
            ServiceChange::Rm { name, lab } => commands::change(lab.as_deref(), |l| {
                daemon::control::client::service_rm(l, &name)
            }),
        },
        Command::Forward { change } => match change {
            ForwardChange::Add {
                proto,
                listen,
                to,
                lab,
            } => commands::change(lab.as_deref(), |l| {
                daemon::control::client::forward_add(l, &proto, &listen, &to)
            }),
            ForwardChange::Rm { proto, listen, lab } => commands::change(lab.as_deref(), |l| {
                daemon::control::client::forward_rm(l, &proto, &listen)
            }),
        },
    }
}
