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
use std::sync::atomic::{AtomicU32, Ordering};

/// ioctl(NS_GET_USERNS) = _IO(0xb7, 0x1): the user namespace that owns a namespace.
const NS_GET_USERNS: libc::Ioctl = 0xb701;

/// The effective uid tapnet was started with ([`u32::MAX`]: not read yet).
static STARTED_AS: AtomicU32 = AtomicU32::new(u32::MAX);

/// The effective uid tapnet was started with, before any user namespace: 0 for root.
/// (Inside the lab's user namespace, `geteuid` says 0 whoever started it.)
pub fn started_as() -> u32 {
    let uid = STARTED_AS.load(Ordering::Relaxed);
    if uid != u32::MAX {
        return uid;
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    STARTED_AS.store(uid, Ordering::Relaxed);
    uid
}

/// Whether tapnet runs without root: started by an ordinary user.
pub fn rootless() -> bool {
    started_as() != 0
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
    let (uid, gid) = (started_as(), {
        // SAFETY: getegid has no preconditions.
        unsafe { libc::getegid() }
    });
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
    let ns = File::open(path).map_err(|e| {
        UsernsRefused(format!(
            "cannot open network namespace {shown}: {e} (it must exist and be the user's own)"
        ))
    })?;
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
    fn the_unprivileged_port_start_is_read() {
        let start = unprivileged_port_start();
        let raw = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .map(|s| s.trim().parse::<u16>().unwrap())
            .unwrap_or(1024);
        assert_eq!(start, raw);
    }
}
