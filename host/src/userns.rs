//! Rootless mode: a lab run by an ordinary user lives in a user namespace of its own,
//! as `unshare -r` makes one (see user_namespaces(7)).
//!
//! The user maps to uid 0 inside, with `setgroups` denied, so no setuid helper
//! (newuidmap) is needed. Inside, tapnet holds every capability over the namespaces it
//! creates there: the containers' network namespaces and their TAPs. Its own network
//! namespace stays the one it was started in, which the user namespace does not own:
//! host sockets (forwards, masquerade, VXLAN) are the user's own sockets, with the
//! user's limits (ports below `net.ipv4.ip_unprivileged_port_start`, no raw sockets).
//!
//! A lab whose ports name existing namespaces by path (`/proc/PID/ns/net`, a rootless
//! podman container's) joins the user namespace that owns the first of them instead,
//! so it may enter them and create its own beside them.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;

/// ioctl(NS_GET_USERNS) = _IO(0xb7, 0x1): the user namespace that owns a namespace.
const NS_GET_USERNS: libc::Ioctl = 0xb701;
/// ioctl(NS_GET_NSTYPE) = _IO(0xb7, 0x3): which kind of namespace an nsfs fd is.
const NS_GET_NSTYPE: libc::Ioctl = 0xb703;

/// Who tapnet was started as, read once (before it makes any user namespace): the
/// effective uid as the parent user namespace sees it, and whether that was the
/// initial user namespace (where uid 0 is really root).
static STARTED: OnceLock<(u32, bool)> = OnceLock::new();

fn started() -> (u32, bool) {
    *STARTED.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
        outer_uid(&map, euid)
    })
}

/// (uid outside, initial namespace) for `euid` by a uid_map's text ("INSIDE OUTSIDE
/// COUNT" lines): the initial user namespace maps all of 0..2^32-1 onto itself.
fn outer_uid(map: &str, euid: u32) -> (u32, bool) {
    let lines: Vec<Vec<u64>> = map
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .filter(|f: &Vec<u64>| f.len() == 3)
        .collect();
    if lines.is_empty() || lines == [vec![0, 0, 4_294_967_295]] {
        return (euid, true);
    }
    let e = u64::from(euid);
    let outside = lines
        .iter()
        .find(|f| f[0] <= e && e < f[0] + f[2])
        .map_or(65_534, |f| (f[1] + e - f[0]) as u32);
    (outside, false)
}

/// The uid tapnet was started as, seen from outside its user namespace: 0 only for
/// root. Names the run directory (`/tmp/tapnet-UID`).
pub fn started_as() -> u32 {
    let (uid, initial) = started();
    if initial {
        uid
    } else {
        // Inside a user namespace (`tapnet exec`, `unshare -r`, `podman unshare`):
        // never root, even as uid 0 there.
        uid.max(1)
    }
}

/// Whether tapnet runs without root: started by an ordinary user, or inside a user
/// namespace (uid 0 there is not root).
pub fn rootless() -> bool {
    let (uid, initial) = started();
    uid != 0 || !initial
}

/// Why the lab's user namespace could not be made or joined: one line naming the
/// setting and what to do.
#[derive(Debug)]
pub struct UsernsRefused(pub String);

impl std::fmt::Display for UsernsRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsernsRefused {}

/// Puts the whole process in the lab's user namespace: the one owning `join` (an
/// existing network namespace's path) if given, else a new one mapping the user to
/// uid 0. The process must still be single-threaded (the kernel refuses both to a
/// process with threads), so this is the first thing `up` does.
///
/// Errors: [`UsernsRefused`] when the host forbids it (user namespaces disabled or
/// exhausted, an AppArmor restriction, a namespace the user may not enter).
pub fn enter_lab_userns(join: Option<&Path>) -> Result<(), UsernsRefused> {
    // Read who we were before the namespace changes it; the maps use the uids of the
    // namespace we are in now.
    let _ = started();
    // SAFETY: geteuid and getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    match join {
        Some(path) => join_owner_of(path)?,
        None => {
            // SAFETY: unshare on a single-threaded process only changes its own credentials.
            if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
                return Err(refused_why(io::Error::last_os_error()));
            }
            let map = |file: &str, text: String| {
                std::fs::write(file, text).map_err(|e| {
                    UsernsRefused(format!(
                        "cannot write {file} in the new user namespace ({e}): {}",
                        apparmor_hint()
                            .unwrap_or("is a security module restricting user namespaces?")
                    ))
                })
            };
            // setgroups must be denied before an unprivileged process may map its gid.
            map("/proc/self/setgroups", "deny".into())?;
            map("/proc/self/uid_map", format!("0 {uid} 1"))?;
            map("/proc/self/gid_map", format!("0 {gid} 1"))?;
        }
    }
    // Some restrictions (AppArmor's) let the namespace be made but give it no powers:
    // find out now, with a network namespace that is thrown away at once.
    probe_netns().map_err(|e| {
        UsernsRefused(match apparmor_hint() {
            Some(hint) => format!("the lab's user namespace may not create network namespaces ({e}): {hint}"),
            None => format!(
                "the lab's user namespace may not create network namespaces ({e}): is a security module (AppArmor, SELinux, seccomp) restricting user namespaces? Run tapnet as root otherwise"
            ),
        })
    })
}

/// Joins the user namespace that owns the network namespace at `path`.
fn join_owner_of(path: &Path) -> Result<(), UsernsRefused> {
    let shown = path.display();
    // O_NONBLOCK: a FIFO must not hold `up` waiting for a writer.
    let ns = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
    }
    .map_err(|e| {
        UsernsRefused(format!(
            "cannot open network namespace {shown}: {e} (it must exist and be the user's own)"
        ))
    })?;
    // SAFETY: ioctl with no argument on a descriptor we own.
    if unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_NSTYPE) } != libc::CLONE_NEWNET {
        return Err(UsernsRefused(format!(
            "{shown} is not a network namespace (a port's `netns` path must be one, like /proc/PID/ns/net)"
        )));
    }
    // SAFETY: ioctl with no argument on a descriptor we own; it returns a new fd or -1.
    let raw = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_USERNS) };
    if raw < 0 {
        return Err(UsernsRefused(format!(
            "cannot find the user namespace owning {shown}: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: the ioctl returned a new descriptor that we now own.
    let owner = unsafe { OwnedFd::from_raw_fd(raw) };
    let ours = std::fs::metadata("/proc/self/ns/user").map_err(|e| UsernsRefused(e.to_string()))?;
    let theirs = File::from(
        owner
            .try_clone()
            .map_err(|e| UsernsRefused(e.to_string()))?,
    )
    .metadata()
    .map_err(|e| UsernsRefused(e.to_string()))?;
    if (ours.dev(), ours.ino()) == (theirs.dev(), theirs.ino()) {
        return Err(UsernsRefused(format!(
            "network namespace {shown} belongs to the host's user namespace, which only root may act in: without root tapnet can use the namespaces of the user's own user namespaces (rootless podman, `unshare -rn`)"
        )));
    }
    // SAFETY: setns on a single-threaded process, with a user-namespace descriptor.
    if unsafe { libc::setns(owner.as_raw_fd(), libc::CLONE_NEWUSER) } != 0 {
        let e = io::Error::last_os_error();
        return Err(UsernsRefused(format!(
            "cannot join the user namespace owning {shown} ({e}): it must be one this user created (rootless podman, `unshare -rn`), not another user's"
        )));
    }
    // A namespace made with `unshare -U` and no map: we would be nobody there, and so
    // would every command `exec` runs.
    // SAFETY: geteuid has no preconditions.
    let overflow = std::fs::read_to_string("/proc/sys/kernel/overflowuid")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(65_534);
    if unsafe { libc::geteuid() } == overflow {
        return Err(UsernsRefused(format!(
            "the user namespace owning {shown} maps no uid for this user (made with `unshare -U` and no map?): make it with `unshare -r`, or as podman does"
        )));
    }
    Ok(())
}

/// Makes and drops a network namespace on a throwaway thread.
fn probe_netns() -> io::Result<()> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare only changes this thread's network namespace; it ends here.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The one-line reason a new user namespace was refused, naming the setting.
fn refused_why(e: io::Error) -> UsernsRefused {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let clone = read("/proc/sys/kernel/unprivileged_userns_clone");
    let max = read("/proc/sys/user/max_user_namespaces");
    let text = match e.raw_os_error() {
        Some(libc::ENOSPC) => format!(
            "cannot create the lab's user namespace ({e}): user.max_user_namespaces is {} here, or this user has reached it: raise it (`sysctl -w user.max_user_namespaces=15000`, as root) or run tapnet as root",
            max.as_deref().unwrap_or("unknown")
        ),
        Some(libc::EPERM) if clone.as_deref() == Some("0") => format!(
            "cannot create the lab's user namespace ({e}): kernel.unprivileged_userns_clone is 0: enable it (`sysctl -w kernel.unprivileged_userns_clone=1`, as root) or run tapnet as root"
        ),
        Some(libc::EPERM) => match apparmor_hint() {
            Some(hint) => format!("cannot create the lab's user namespace ({e}): {hint}"),
            None => format!(
                "cannot create the lab's user namespace ({e}): the host forbids them to this user (a container's seccomp policy?): run tapnet as root"
            ),
        },
        Some(libc::EINVAL) => format!(
            "cannot create the lab's user namespace ({e}): tapnet is already running threads or in a chroot: run it directly"
        ),
        _ => format!("cannot create the lab's user namespace: {e}"),
    };
    UsernsRefused(text)
}

/// What to do when Ubuntu's AppArmor restriction on unprivileged user namespaces is on.
fn apparmor_hint() -> Option<&'static str> {
    let on = std::fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
        .is_ok_and(|s| s.trim() == "1");
    on.then_some(
        "kernel.apparmor_restrict_unprivileged_userns is 1 (Ubuntu 23.10 and later): give tapnet an AppArmor profile with `userns,` or set the sysctl to 0 (as root), or run tapnet as root",
    )
}

/// The device and inode of a namespace file: two equal ones are the same namespace.
pub fn identity(path: &Path) -> io::Result<(u64, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// `net.ipv4.ip_unprivileged_port_start` of tapnet's network namespace: the lowest port
/// an ordinary user's socket may bind (1024, the kernel's default, if unreadable).
pub fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

/// ioctl(NS_GET_OWNER_UID) = _IO(0xb7, 0x4): the uid that created a user namespace.
const NS_GET_OWNER_UID: libc::Ioctl = 0xb704;

/// Makes this (root, single-threaded) process the user who owns the user namespace
/// `userns`, with that user's primary group and no others: what root does before
/// entering an ordinary user's lab, so that commands run there as that user would.
pub fn become_owner_of(userns: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    let mut uid: libc::uid_t = 0;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t through the pointer.
    if unsafe { libc::ioctl(userns.as_raw_fd(), NS_GET_OWNER_UID, &mut uid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getpwuid on a single-threaded process; the entry is read at once.
    let gid = unsafe {
        let pw = libc::getpwuid(uid);
        if pw.is_null() {
            uid
        } else {
            (*pw).pw_gid
        }
    };
    // SAFETY: dropping privileges on this process: groups, then gid, then uid.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setresgid(gid, gid, gid) != 0
            || libc::setresuid(uid, uid, uid) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_names_its_setting() {
        let no_room = refused_why(io::Error::from_raw_os_error(libc::ENOSPC)).0;
        assert!(no_room.contains("user.max_user_namespaces is"), "{no_room}");
        assert!(
            no_room.contains("sysctl -w user.max_user_namespaces="),
            "{no_room}"
        );
        let denied = refused_why(io::Error::from_raw_os_error(libc::EPERM)).0;
        assert!(
            denied.starts_with("cannot create the lab's user namespace"),
            "{denied}"
        );
        assert!(denied.contains("run tapnet as root"), "{denied}");
        for text in [no_room, denied] {
            assert!(!text.contains('\n'), "one line: {text}");
        }
    }

    #[test]
    fn uid_maps_say_who_we_are() {
        assert_eq!(
            outer_uid("         0          0 4294967295\n", 0),
            (0, true)
        );
        assert_eq!(
            outer_uid("         0          0 4294967295\n", 1000),
            (1000, true)
        );
        // `unshare -r` by uid 1000: uid 0 inside is 1000 outside.
        assert_eq!(
            outer_uid("         0       1000          1\n", 0),
            (1000, false)
        );
        // Root's nested namespace mapping root and a user.
        assert_eq!(outer_uid("0 0 1\n995 995 1\n", 995), (995, false));
        assert_eq!(outer_uid("0 0 1\n995 995 1\n", 0), (0, false));
        // Unmapped: the overflow uid.
        assert_eq!(outer_uid("0 1000 1\n", 5), (65_534, false));
    }

    #[test]
    fn the_unprivileged_port_start_is_read() {
        let start = unprivileged_port_start();
        let raw = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .map(|s| s.trim().parse::<u16>().unwrap())
            .unwrap_or(1024);
        assert_eq!(start, raw);
    }
}
