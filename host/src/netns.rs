//! Named network namespaces, made and removed the way iproute2's `ip netns add/del` does,
//! so that `ip netns` and tapnet see the same namespaces.
//!
//! A named namespace is a bind mount at /run/netns/NAME, and a mount lives in a mount
//! namespace. Started as `ip netns exec HOSTNS tapnet up`, tapnet runs in a private mount
//! namespace (iproute2 unshares it and makes `/` a slave), where a mount made by tapnet
//! would be seen by nobody else. So when tapnet's mount namespace is not the one it
//! was started from, every mount, unmount and look-up under /run/netns is done from a
//! short-lived thread that has entered that other mount namespace (see [`MountHome`]).

use std::cell::Cell;
use std::ffi::CString;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::sync::{Once, OnceLock};

use crate::rtnl::Rtnl;

const NETNS_RUN_DIR: &str = "/run/netns";

/// ioctl(NS_GET_NSTYPE) = _IO(0xb7, 0x3): tells which kind of namespace an nsfs fd is.
const NS_GET_NSTYPE: libc::Ioctl = 0xb703;

/// An open named network namespace (/run/netns/NAME). The open fd keeps the
/// namespace alive; hand the duty of removing it to a [`NetnsRecord`] (which
/// holds no fd) if it must be able to vanish while we run.
pub struct Netns {
    fd: OwnedFd,
    name: String,
    id: NsId,
    created: bool,
    /// This value removes the namespace on remove() or drop.
    owns: Cell<bool>,
}

/// A namespace's name and identity, without an open fd: holding it does not
/// keep the namespace alive, so a namespace deleted under us really goes away.
/// It removes the namespace (on remove() or drop) if it was handed that duty.
pub struct NetnsRecord {
    name: String,
    id: NsId,
    owns: Cell<bool>,
}

/// (st_dev, st_ino) of a namespace: never remove a same-named namespace that
/// someone else made after ours was deleted.
type NsId = (u64, u64);

impl Netns {
    /// Opens /run/netns/NAME if it exists, else creates it like `ip netns add`
    /// and brings `lo` up inside.
    pub fn open_or_create(name: &str) -> io::Result<Netns> {
        if let Some(ns) = Netns::open(name)? {
            return Ok(ns);
        }
        match create(name) {
            // Someone made it between our open and create.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Netns::open(name)?
                .ok_or_else(|| io::Error::other(format!("netns {name} vanished while opening"))),
            other => other,
        }
    }

    /// Opens the existing namespace NAME; None if /run/netns/NAME does not exist.
    pub fn open(name: &str) -> io::Result<Option<Netns>> {
        check_name(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let path = path_of(name);
        let file = match at_home(|| File::open(&path)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(annotate(e, &format!("open {path}"))),
        };
        // A plain file here is a leftover of an interrupted `ip netns add`.
        // SAFETY: ioctl with no argument on an fd we own.
        let nstype = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
        if nstype != libc::CLONE_NEWNET {
            return Err(io::Error::other(format!(
                "{path} is not a network namespace (stale? `ip netns del {name}` removes it)"
            )));
        }
        Netns::from_file(name, file, false).map(Some)
    }

    fn from_file(name: &str, file: File, created: bool) -> io::Result<Netns> {
        let meta = file.metadata()?;
        Ok(Netns {
            fd: file.into(),
            name: name.to_string(),
            id: (meta.dev(), meta.ino()),
            created,
            owns: Cell::new(created),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// True if this value made the namespace (rather than finding it).
    pub fn created(&self) -> bool {
        self.created
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Runs `f` on a new thread that has entered this namespace, so the
    /// caller's thread never changes namespace. A panic in `f` is passed on.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        run_in_fd(self.fd(), f)
    }

    /// A record of this namespace without the fd. The duty of removing the
    /// namespace, if this value had it, passes to the record: from now on
    /// dropping or removing this value leaves the namespace alone.
    pub fn record(&self) -> NetnsRecord {
        NetnsRecord {
            name: self.name.clone(),
            id: self.id,
            owns: Cell::new(self.owns.replace(false)),
        }
    }

    /// Removes the namespace (like `ip netns del`) if this value created it;
    /// a no-op otherwise.
    pub fn remove(self) -> io::Result<()> {
        if self.owns.replace(false) {
            remove_ns(&self.name, self.id)
        } else {
            Ok(())
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Best effort: nothing half-built is left behind, even on a panic.
        if self.owns.replace(false) {
            let _ = remove_ns(&self.name, self.id);
        }
    }
}

impl NetnsRecord {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's device and inode numbers: with the name, enough to find it
    /// again after a crash (see [`NetnsRecord::adopt`]).
    pub fn identity(&self) -> (u64, u64) {
        self.id
    }

    /// A record with the duty to remove namespace `name`, if it is still the one
    /// with this identity: for reaping what a crashed run left behind.
    pub fn adopt(name: &str, identity: (u64, u64)) -> NetnsRecord {
        NetnsRecord {
            name: name.to_string(),
            id: identity,
            owns: Cell::new(true),
        }
    }

    /// Whether /run/netns/NAME is still this namespace.
    pub fn still_there(&self) -> bool {
        let path = path_of(&self.name);
        at_home(|| std::fs::metadata(&path)).is_ok_and(|m| (m.dev(), m.ino()) == self.id)
    }

    /// Removes the namespace (like `ip netns del`) if this record has that
    /// duty and the namespace is still ours; a no-op otherwise, or if repeated.
    pub fn remove(&self) -> io::Result<()> {
        if self.owns.replace(false) {
            remove_ns(&self.name, self.id)
        } else {
            Ok(())
        }
    }
}

impl Drop for NetnsRecord {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

/// `ip netns del NAME`, but only if /run/netns/NAME is still the namespace `id`; done
/// in the mount namespace that holds the mount ([`MountHome`]).
fn remove_ns(name: &str, id: NsId) -> io::Result<()> {
    at_home(|| remove_ns_here(name, id))
}

fn remove_ns_here(name: &str, id: NsId) -> io::Result<()> {
    let path = path_of(name);
    match std::fs::metadata(&path) {
        Ok(meta) if (meta.dev(), meta.ino()) == id => {}
        // Already deleted (and perhaps recreated by someone else): not ours.
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(annotate(e, &format!("stat {path}"))),
    }
    let cpath = c_path(&path)?;
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::umount2(cpath.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(annotate(
            io::Error::last_os_error(),
            &format!("umount {path}"),
        ));
    }
    std::fs::remove_file(&path).map_err(|e| annotate(e, &format!("unlink {path}")))
}

/// [`Netns::run_in`] for any network namespace fd.
pub fn run_in_fd<T: Send>(ns: BorrowedFd<'_>, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("netns".to_string())
            .spawn_scoped(scope, move || {
                // SAFETY: setns on a valid fd only affects this thread.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })?;
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A network namespace of the lab's own, held only by the returned fd: no name under
/// /run/netns (which only root may write), gone when the last fd or TAP in it closes.
/// Rootless labs make their containers' namespaces so. `lo` is up inside.
pub fn create_unnamed() -> io::Result<OwnedFd> {
    let fd = on_new_thread(|| {
        // SAFETY: unshare only changes this throwaway thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(annotate(
                io::Error::last_os_error(),
                "unshare(CLONE_NEWNET)",
            ));
        }
        Ok(OwnedFd::from(File::open("/proc/thread-self/ns/net")?))
    })?;
    lo_up(fd.as_fd()).map_err(|e| annotate(e, "bring lo up in a new namespace"))?;
    Ok(fd)
}

/// Opens an existing network namespace by path (`/proc/PID/ns/net`, or a bind mount
/// such as /run/netns/NAME or podman's /run/user/UID/netns/NAME). Errors name the path:
/// missing, not a network namespace, or not ours to open.
pub fn open_path(path: &str) -> io::Result<OwnedFd> {
    // O_NONBLOCK: a FIFO given as the path must not hold the caller (the datapath
    // thread, for `attach`) waiting for a writer.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| annotate(e, &format!("open {path}")))?;
    // SAFETY: ioctl with no argument on an fd we own.
    let nstype = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if nstype != libc::CLONE_NEWNET {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{path} is not a network namespace"),
        ));
    }
    Ok(file.into())
}

/// What `ip netns exec` does besides entering the network namespace, for a process
/// about to run a command there (`tapnet exec`): a mount namespace of its own (mounts
/// no longer propagating back), `/sys` mounted afresh so that it shows this network
/// namespace's devices, and each file of /etc/netns/NAME bind-mounted over its
/// namesake in /etc (resolv.conf, hosts). Call it after entering the network
/// namespace (and, without root, the lab's user namespace, which owns it), on a
/// single-threaded process.
///
/// Errors: the step that failed (unshare, a mount), for a warning: the command can
/// still run in the network namespace.
pub fn private_mounts_for(name: Option<&str>) -> io::Result<()> {
    // SAFETY: unshare on this single-threaded process, about to exec.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(annotate(io::Error::last_os_error(), "unshare(CLONE_NEWNS)"));
    }
    // Changes only our new mount namespace from here on.
    mount(
        None,
        c"/",
        None,
        libc::MS_SLAVE | libc::MS_REC,
        "mount --make-rslave /",
    )?;
    // Root may take the old /sys away first; without root it is locked in place, and
    // the new one goes on top of it.
    // SAFETY: a valid NUL-terminated path; only our mount namespace changes.
    unsafe { libc::umount2(c"/sys".as_ptr(), libc::MNT_DETACH) };
    mount(
        Some(c"sysfs"),
        c"/sys",
        Some(c"sysfs"),
        0,
        "mount sysfs on /sys",
    )?;
    let Some(name) = name.filter(|n| check_name(n).is_ok()) else {
        return Ok(());
    };
    let Ok(dir) = std::fs::read_dir(format!("/etc/netns/{name}")) else {
        return Ok(());
    };
    for entry in dir.flatten() {
        let target = std::path::Path::new("/etc").join(entry.file_name());
        if !target.exists() {
            continue;
        }
        let (src, dst) = (
            c_path(&entry.path().to_string_lossy())?,
            c_path(&target.to_string_lossy())?,
        );
        let what = format!("bind {} on {}", entry.path().display(), target.display());
        mount(Some(&src), &dst, Some(c"none"), libc::MS_BIND, &what)?;
    }
    Ok(())
}

/// Brings `lo` up in the network namespace `ns` (a new namespace has it down).
fn lo_up(ns: BorrowedFd<'_>) -> io::Result<()> {
    run_in_fd(ns, || -> io::Result<()> {
        let mut rtnl = Rtnl::new()?;
        let lo = rtnl
            .link_index("lo")?
            .ok_or_else(|| io::Error::other("no lo in new namespace"))?;
        rtnl.set_up(lo)
    })?
}

/// True if /run/netns/NAME exists.
pub fn exists(name: &str) -> bool {
    check_name(name).is_ok() && at_home(|| std::fs::symlink_metadata(path_of(name))).is_ok()
}

/// Checks that NAME can name a file in /run/netns.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("namespace name is empty".to_string())
    } else if name.len() > 255 {
        Err(format!("namespace name is longer than 255 bytes: {name:?}"))
    } else if name == "." || name == ".." {
        Err(format!("namespace name cannot be {name:?}"))
    } else if name.contains(['/', '\0']) {
        Err(format!("namespace name contains '/' or NUL: {name:?}"))
    } else {
        Ok(())
    }
}

/// `ip netns add NAME`, plus `lo` up. Fails with AlreadyExists if the file exists.
fn create(name: &str) -> io::Result<Netns> {
    check_name(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if let MountHome::Stuck { whose, why } = mount_home() {
        static WARNED: Once = Once::new();
        WARNED.call_once(|| eprintln!("{}", stuck_warning(whose, why)));
    }
    let path = path_of(name);
    // On a throwaway thread in the mount namespace the mount belongs in: it also
    // unshares its network namespace to make the new one.
    let fd = on_home_thread(|| {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(NETNS_RUN_DIR)
            .map_err(|e| annotate(e, &format!("mkdir {NETNS_RUN_DIR}")))?;
        make_run_dir_shared()?;
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => e,
                _ => annotate(e, &format!("create {path}")),
            })?;
        let target = c_path(&path)?;
        bind_new_netns(&target).map_err(|e| {
            let _ = std::fs::remove_file(&path);
            annotate(e, &format!("create netns {name}"))
        })
    })?;

    // From here on dropping `ns` removes the namespace if anything fails.
    let ns = Netns::from_file(name, File::from(fd), true)?;
    lo_up(ns.fd()).map_err(|e| annotate(e, &format!("bring lo up in netns {name}")))?;
    Ok(ns)
}

/// Runs on a throwaway thread: gives it a new network namespace, pins that
/// namespace by bind-mounting it on `target` and returns an fd of it.
fn bind_new_netns(target: &CString) -> io::Result<OwnedFd> {
    // SAFETY: unshare only changes this thread's network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(annotate(
            io::Error::last_os_error(),
            "unshare(CLONE_NEWNET)",
        ));
    }
    let source = c"/proc/thread-self/ns/net";
    // Opened before mounting, so nothing can fail once the mount exists.
    let fd = File::open("/proc/thread-self/ns/net")?;
    mount(
        Some(source),
        target,
        Some(c"none"),
        libc::MS_BIND,
        "bind mount",
    )?;
    // The mount must be the namespace just made (it is, unless this mount
    // namespace's /proc belongs to some other process tree).
    let (want, got) = (fd.metadata()?, std::fs::metadata(to_path(target))?);
    if (want.dev(), want.ino()) != (got.dev(), got.ino()) {
        // SAFETY: valid NUL-terminated path.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        return Err(io::Error::other(
            "the bind mount is not the new namespace (/proc of another process tree?)",
        ));
    }
    Ok(fd.into())
}

fn to_path(c: &CString) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(c.as_bytes()))
}

/// Makes /run/netns a shared mount point, as iproute2 does, so namespaces
/// mounted there show up in mount namespaces cloned from ours.
fn make_run_dir_shared() -> io::Result<()> {
    let dir = c"/run/netns";
    let mut bound = false;
    loop {
        // SAFETY: valid NUL-terminated strings.
        let r = unsafe {
            libc::mount(
                c"".as_ptr(),
                dir.as_ptr(),
                c"none".as_ptr(),
                libc::MS_SHARED | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if r == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        // EINVAL: not a mount point yet; make it one by binding it on itself.
        if err.raw_os_error() != Some(libc::EINVAL) || bound {
            return Err(annotate(err, "mount --make-rshared /run/netns"));
        }
        // SAFETY: as above.
        let r = unsafe {
            libc::mount(
                dir.as_ptr(),
                dir.as_ptr(),
                c"none".as_ptr(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if r != 0 {
            return Err(annotate(
                io::Error::last_os_error(),
                "mount --rbind /run/netns /run/netns",
            ));
        }
        bound = true;
    }
}

/// The mount namespace in which /run/netns/NAME is mounted, unmounted and looked up.
pub enum MountHome {
    /// tapnet's own: it shares its mounts with the rest of the system.
    Own,
    /// Another one: tapnet runs in a private mount namespace (as under `ip netns
    /// exec`), and this is PID 1's or, when PID 1's cannot be opened, the one of the
    /// nearest ancestor process in a mount namespace other than tapnet's (the shell
    /// that ran `ip netns exec`). Named namespaces are mounted there, from a thread
    /// that has entered it, so everyone sees them.
    Other {
        /// An open `/proc/PID/ns/mnt`.
        fd: OwnedFd,
        /// "PID 1" or "process 1234 (bash)", for messages.
        whose: String,
    },
    /// tapnet runs in a private mount namespace but cannot enter the other one: its
    /// namespaces stay visible only inside its own mount namespace.
    Stuck {
        /// As in [`MountHome::Other`].
        whose: String,
        /// Why it could not enter it.
        why: String,
    },
}

/// Where this process makes its named namespaces, found once.
pub fn mount_home() -> &'static MountHome {
    static HOME: OnceLock<MountHome> = OnceLock::new();
    HOME.get_or_init(find_mount_home)
}

/// What `up` says when tapnet runs in a mount namespace of its own and cannot enter
/// the shared one.
pub fn stuck_warning(whose: &str, why: &str) -> String {
    format!(
        "tapnet: warning: tapnet runs in a mount namespace of its own (as `ip netns exec` \
         gives it) and cannot enter the mount namespace of {whose} ({why}), so the namespaces it creates are \
         mounted at /run/netns only inside its own mount namespace: from anywhere else \
         `ip netns exec NAME ...` fails with \"setting the network namespace ... failed\". \
         To run tapnet inside another network namespace, use \
         `nsenter --net=/run/netns/HOSTNS tapnet up ...` instead, which changes only \
         the network namespace."
    )
}

fn find_mount_home() -> MountHome {
    let Ok(own) = ns_identity_of("/proc/thread-self/ns/mnt") else {
        return MountHome::Own;
    };
    let other = |f: &File| f.metadata().is_ok_and(|m| (m.dev(), m.ino()) != own);
    let mut stuck = None;
    // PID 1's first. It may be out of reach (another user namespace, or a supervisor
    // that forbids it): then the process tree tapnet was started from decides.
    match File::open("/proc/1/ns/mnt") {
        Ok(f) if !other(&f) => return MountHome::Own,
        Ok(f) => match enter_test(f) {
            Ok(fd) => {
                return MountHome::Other {
                    fd,
                    whose: "PID 1".to_string(),
                }
            }
            Err(why) => stuck = Some(("PID 1".to_string(), why)),
        },
        Err(_) => {}
    }
    if let Some((f, whose)) = ancestor_mount_ns(own) {
        match enter_test(f) {
            Ok(fd) => return MountHome::Other { fd, whose },
            Err(why) => stuck = stuck.or(Some((whose, why))),
        }
    }
    match stuck {
        Some((whose, why)) => MountHome::Stuck { whose, why },
        // Nothing to enter; but if /run/netns here only receives mounts (a slave, as
        // `ip netns exec` leaves it) and shares none, what tapnet mounts stays private.
        None if run_netns_is_private(
            &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
        ) =>
        {
            MountHome::Stuck {
                whose: "the process that started it".to_string(),
                why: "tapnet runs in a private mount namespace (as `ip netns exec` makes) whose \
                      parent it cannot find or enter"
                    .to_string(),
            }
        }
        None => MountHome::Own,
    }
}

/// Whether, by `mountinfo` (/proc/self/mountinfo), the mount that holds /run/netns
/// receives mounts from another namespace (`master:N`) but shares none with it (no
/// `shared:N`): then a namespace mounted there is seen by nobody outside.
fn run_netns_is_private(mountinfo: &str) -> bool {
    let mut best: Option<(&str, bool)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(point) = fields.get(4) else { continue };
        let holds = "/run/netns" == *point
            || "/run/netns".starts_with(&format!("{}/", point.trim_end_matches('/')));
        if !holds || best.is_some_and(|(p, _)| p.len() > point.len()) {
            continue;
        }
        let optional: Vec<&str> = fields[6..]
            .iter()
            .take_while(|f| **f != "-")
            .copied()
            .collect();
        let slave = optional.iter().any(|f| f.starts_with("master:"));
        let shared = optional.iter().any(|f| f.starts_with("shared:"));
        best = Some((point, slave && !shared));
    }
    best.is_some_and(|(_, private)| private)
}

/// The mount namespace `f`, if a thread can enter it.
fn enter_test(f: File) -> Result<OwnedFd, String> {
    let fd = OwnedFd::from(f);
    in_mount_ns(fd.as_fd(), || Ok(()))
        .map(|()| fd)
        .map_err(|e| e.to_string())
}

/// The mount namespace of the nearest ancestor whose mount namespace is not `own`
/// (and can be opened), with a name for it.
fn ancestor_mount_ns(own: NsId) -> Option<(File, String)> {
    // SAFETY: getppid has no preconditions.
    let mut pid = unsafe { libc::getppid() };
    for _ in 0..64 {
        if pid <= 1 {
            return None;
        }
        let (comm, ppid, start) = proc_stat(pid)?;
        if let Ok(f) = File::open(format!("/proc/{pid}/ns/mnt")) {
            // The same process still (not a reused pid), in another mount namespace.
            let same_process = proc_stat(pid).is_some_and(|(_, _, s)| s == start);
            if same_process && f.metadata().is_ok_and(|m| (m.dev(), m.ino()) != own) {
                return Some((f, format!("process {pid} ({comm})")));
            }
        }
        pid = ppid;
    }
    None
}

/// (comm, parent pid, start time) of a process, from /proc/PID/stat.
fn proc_stat(pid: libc::pid_t) -> Option<(String, libc::pid_t, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses /proc/PID/stat: "PID (COMM) STATE PPID ... STARTTIME ...", where COMM
/// may hold spaces and parentheses.
fn parse_stat(text: &str) -> Option<(String, libc::pid_t, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // After COMM: state is field 3 of the whole line, ppid 4, starttime 22.
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((comm, ppid, start))
}

fn ns_identity_of(path: &str) -> io::Result<NsId> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// Runs `f` where named namespaces are mounted: on the calling thread when that is
/// tapnet's own mount namespace, else on a thread that has entered the other one.
fn at_home<T: Send>(f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    match mount_home() {
        MountHome::Other { fd, .. } => in_mount_ns(fd.as_fd(), f),
        MountHome::Own | MountHome::Stuck { .. } => f(),
    }
}

/// Runs `f` on a new thread that may change its own namespaces, in the mount
/// namespace where named namespaces are mounted.
fn on_home_thread<T: Send>(f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    match mount_home() {
        MountHome::Other { fd, .. } => in_mount_ns(fd.as_fd(), f),
        MountHome::Own | MountHome::Stuck { .. } => on_new_thread(f),
    }
}

fn on_new_thread<T: Send>(f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("netns-mnt".to_string())
            .spawn_scoped(scope, f)?
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs `f` on a new thread that has entered mount namespace `mnt`. The thread first
/// stops sharing its root and working directory with the process (`CLONE_FS`): the
/// kernel lets only such a thread of a multithreaded process change its mount
/// namespace, and only that thread moves.
fn in_mount_ns<T: Send>(
    mnt: BorrowedFd<'_>,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    on_new_thread(move || {
        // SAFETY: unshare(CLONE_FS) and setns affect only this thread, which ends
        // when `f` returns.
        if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
            return Err(annotate(io::Error::last_os_error(), "unshare(CLONE_FS)"));
        }
        // SAFETY: as above; `mnt` is a valid descriptor.
        if unsafe { libc::setns(mnt.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
            return Err(annotate(io::Error::last_os_error(), "setns(CLONE_NEWNS)"));
        }
        f()
    })
}

/// mount(2) with what was being done in its error: `source` and `fstype` may be
/// absent (a propagation change).
fn mount(
    source: Option<&std::ffi::CStr>,
    target: &std::ffi::CStr,
    fstype: Option<&std::ffi::CStr>,
    flags: libc::c_ulong,
    what: &str,
) -> io::Result<()> {
    let ptr = |c: Option<&std::ffi::CStr>| c.map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: valid NUL-terminated strings or null, as mount(2) takes them; no data.
    let r = unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(annotate(io::Error::last_os_error(), what));
    }
    Ok(())
}

fn path_of(name: &str) -> String {
    format!("{NETNS_RUN_DIR}/{name}")
}

fn c_path(path: &str) -> io::Result<CString> {
    CString::new(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Adds what was being done to an error, keeping its kind.
fn annotate(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A number unique within this test process (also used in test addresses).
    pub(crate) fn unique() -> u32 {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn unique_ns_name() -> String {
        format!("tnt-{}-{}", std::process::id(), unique())
    }

    fn lo_is_up(ns: &Netns) -> bool {
        let mut rtnl = Rtnl::in_netns(ns).expect("rtnl in netns");
        let lo = rtnl.get_link("lo").expect("get lo").expect("lo exists");
        lo.flags.contains(netlink_packet_route::link::LinkFlags::Up)
    }

    #[test]
    fn create_has_lo_up_and_remove_deletes() {
        let name = unique_ns_name();
        assert!(!exists(&name));
        let ns = Netns::open_or_create(&name).expect("create");
        assert!(ns.created());
        assert_eq!(ns.name(), name);
        assert!(exists(&name));
        assert!(lo_is_up(&ns));
        // iproute2 sees it too.
        let out = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list");
        assert!(String::from_utf8_lossy(&out.stdout).contains(&name));
        ns.remove().expect("remove");
        assert!(!exists(&name));
    }

    #[test]
    fn opening_an_existing_namespace_does_not_own_it() {
        let name = unique_ns_name();
        let owner = Netns::open_or_create(&name).expect("create");
        let other = Netns::open(&name).expect("open").expect("exists");
        assert!(!other.created());
        let again = Netns::open_or_create(&name).expect("open_or_create");
        assert!(!again.created());
        other.remove().expect("remove (no-op)");
        drop(again);
        assert!(exists(&name));
        owner.remove().expect("remove");
        assert!(!exists(&name));
    }

    #[test]
    fn drop_removes_what_it_created() {
        let name = unique_ns_name();
        {
            let ns = Netns::open_or_create(&name).expect("create");
            assert!(exists(&name));
            let record = ns.record();
            drop(ns);
            assert!(exists(&name), "the record has the duty now");
            assert_eq!(record.name(), name);
        }
        assert!(!exists(&name));
    }

    #[test]
    fn a_panic_does_not_leave_the_namespace_behind() {
        let name = unique_ns_name();
        let result = std::panic::catch_unwind(|| {
            let _ns = Netns::open_or_create(&name).expect("create");
            panic!("test failure while the namespace exists");
        });
        assert!(result.is_err());
        assert!(!exists(&name));
    }

    #[test]
    fn a_stale_file_is_not_a_namespace() {
        let name = unique_ns_name();
        let path = path_of(&name);
        std::fs::create_dir_all(NETNS_RUN_DIR).expect("mkdir");
        std::fs::write(&path, b"").expect("create stale file");
        let opened = Netns::open(&name).map(|ns| ns.is_some());
        let created = Netns::open_or_create(&name).map(|ns| ns.created());
        std::fs::remove_file(&path).expect("remove stale file");
        assert!(opened.is_err(), "{opened:?}");
        assert!(created.is_err(), "{created:?}");
    }

    #[test]
    fn open_missing_is_none() {
        assert!(Netns::open(&unique_ns_name()).expect("open").is_none());
        assert!(Netns::open("a/b").is_err());
    }

    #[test]
    fn run_in_enters_the_namespace_only_on_its_thread() {
        let ns = Netns::open_or_create(&unique_ns_name()).expect("create");
        let ns_ino = std::fs::metadata(format!("/proc/self/fd/{}", ns.fd().as_raw_fd()))
            .expect("stat ns fd")
            .ino();
        let netns_ino = || {
            std::fs::metadata("/proc/thread-self/ns/net")
                .expect("stat own netns")
                .ino()
        };
        let before = netns_ino();
        assert_eq!(ns.run_in(netns_ino).expect("run_in"), ns_ino);
        assert_ne!(before, ns_ino);
        assert_eq!(netns_ino(), before);
    }

    #[test]
    fn remove_spares_a_namespace_recreated_by_someone_else() {
        let name = unique_ns_name();
        let first = Netns::open_or_create(&name).expect("create").record();
        let status = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .status()
            .expect("ip netns del");
        assert!(status.success());
        let second = Netns::open_or_create(&name).expect("recreate");
        assert!(second.created());
        first.remove().expect("remove stale record");
        assert!(exists(&name), "the new namespace must survive");
        second.remove().expect("remove");
        assert!(!exists(&name));
    }

    #[test]
    fn proc_stat_is_parsed_past_odd_command_names() {
        let line = "4242 (a (b) c) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 18446744073709551615";
        assert_eq!(parse_stat(line), Some(("a (b) c".to_string(), 17, 987_654)));
        assert_eq!(parse_stat("4242 (x) S"), None);
        assert_eq!(parse_stat(""), None);
        // Our own entry: our parent, and a start time.
        let (_, ppid, _) = proc_stat(std::process::id() as libc::pid_t).expect("own stat");
        // SAFETY: getppid has no preconditions.
        assert_eq!(ppid, unsafe { libc::getppid() });
    }

    #[test]
    fn a_thread_enters_another_mount_namespace_and_only_it_moves() {
        let ino = || ns_identity_of("/proc/thread-self/ns/mnt").expect("own mount ns");
        let ours = ino();
        // A private mount namespace, held by an fd only (nothing is mounted in it).
        let other: OwnedFd = on_new_thread(|| {
            // SAFETY: only this throwaway thread changes namespace.
            if unsafe { libc::unshare(libc::CLONE_FS | libc::CLONE_NEWNS) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(File::open("/proc/thread-self/ns/mnt")?.into())
        })
        .expect("private mount namespace");
        let theirs = {
            let m = File::from(other.try_clone().unwrap()).metadata().unwrap();
            (m.dev(), m.ino())
        };
        assert_ne!(theirs, ours);
        assert_eq!(in_mount_ns(other.as_fd(), || Ok(ino())).unwrap(), theirs);
        assert_eq!(ino(), ours, "the calling thread stays where it was");
    }

    #[test]
    fn the_stuck_warning_says_what_happens_and_what_to_run() {
        let w = stuck_warning("PID 1", "Operation not permitted");
        assert!(
            w.contains("cannot enter the mount namespace of PID 1 (Operation not permitted)"),
            "{w}"
        );
        assert!(w.contains("setting the network namespace"), "{w}");
        assert!(
            w.contains("nsenter --net=/run/netns/HOSTNS tapnet up"),
            "{w}"
        );
        assert!(!w.contains('\n'));
    }

    #[test]
    fn a_slave_run_netns_is_private() {
        let mine = "25 1 0:23 / / rw,relatime master:1 - ext4 /dev/vda rw\n\
                    30 25 0:25 / /run rw master:5 - tmpfs tmpfs rw\n\
                    31 30 0:25 /netns /run/netns rw master:5 - tmpfs tmpfs rw\n";
        assert!(run_netns_is_private(mine));
        let shared = mine.replace("/run/netns rw master:5", "/run/netns rw shared:7 master:5");
        assert!(!run_netns_is_private(&shared));
        let host = "25 1 0:23 / / rw shared:1 - ext4 /dev/vda rw\n30 25 0:25 / /run rw shared:5 - tmpfs tmpfs rw\n";
        assert!(!run_netns_is_private(host));
        assert!(run_netns_is_private(
            "25 1 0:23 / / rw master:1 - ext4 /dev/vda rw\n"
        ));
        assert!(!run_netns_is_private(""));
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", ".", "..", "a/b", "a\0b", &"x".repeat(256)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["web", "a.b", "-x", &"x".repeat(255)] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }
}
