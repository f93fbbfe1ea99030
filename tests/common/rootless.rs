//! Rootless labs in the tests: an ordinary test user, a copy of tapnet it may run, a
//! runtime directory of its own, and tapnet run as that user with `setpriv`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use super::{run, unique, LabFile, RunningLab, TAPNET};

/// The ordinary user the rootless tests run tapnet as.
pub const TEST_USER: &str = "tapnet-test";

/// The test user's (uid, gid), the user created first if missing (`useradd
/// --system`). /dev/net/tun is made open to every user (mode 0666), as udev makes it
/// on Debian, Ubuntu and Fedora and as the README tells users to where no udev runs
/// (this CI machine's container): rootless tapnet, like pasta, cannot work otherwise.
pub fn test_user() -> (u32, u32) {
    static USER: OnceLock<(u32, u32)> = OnceLock::new();
    *USER.get_or_init(|| {
        let out = run(
            &[
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                TEST_USER,
            ],
            30,
        );
        // 9: the user exists already (made by scripts/test.sh, or a parallel test).
        assert!(
            out.status.success() || out.status.code() == Some(9),
            "useradd {TEST_USER}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = |flag: &str| -> u32 {
            let out = run(&["id", flag, TEST_USER], 10);
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("id prints a number")
        };
        let tun = std::fs::metadata("/dev/net/tun").expect("/dev/net/tun exists");
        if tun.permissions().mode() & 0o666 != 0o666 {
            std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(0o666))
                .expect("chmod 0666 /dev/net/tun");
        }
        (id("-u"), id("-g"))
    })
}

/// A place for one rootless lab: a directory (removed on drop) holding a copy of
/// tapnet the test user may run and the user's runtime directory
/// (`XDG_RUNTIME_DIR`, mode 0700, theirs).
pub struct UserHome {
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub run: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

impl UserHome {
    pub fn new() -> UserHome {
        let (uid, gid) = test_user();
        let dir = std::env::temp_dir().join(unique("rl"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join("tapnet");
        std::fs::copy(TAPNET, &bin).expect("copy tapnet");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let run_dir = dir.join("run");
        std::fs::create_dir(&run_dir).unwrap();
        std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&run_dir, Some(uid), Some(gid)).unwrap();
        UserHome {
            dir,
            bin,
            run: run_dir,
            uid,
            gid,
        }
    }

    /// The command line prefix that runs a program as the test user, with this
    /// runtime directory.
    pub fn as_user(&self) -> Vec<String> {
        vec![
            "setpriv".into(),
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            "--clear-groups".into(),
            "env".into(),
            format!("XDG_RUNTIME_DIR={}", self.run.display()),
        ]
    }

    /// Whether lab `lab`'s control socket is in this runtime directory.
    pub fn has_socket(&self, lab: &str) -> bool {
        self.run.join("tapnet").join(format!("{lab}.sock")).exists()
    }

    /// `tapnet` as the test user.
    pub fn tapnet(&self) -> Vec<String> {
        let mut v = self.as_user();
        v.push(self.bin.display().to_string());
        v
    }

    /// `tapnet ARGS...` as the test user, bounded in time.
    pub fn run(&self, args: &[&str], timeout_s: u32) -> Output {
        let full = self.tapnet();
        let mut cmd: Vec<&str> = full.iter().map(String::as_str).collect();
        cmd.extend_from_slice(args);
        run(&cmd, timeout_s)
    }

    /// `tapnet exec --lab LAB PORT -- CMD...` as the test user, bounded in time.
    pub fn exec(&self, lab: &str, port: &str, cmd: &[&str], timeout_s: u32) -> Output {
        let mut args = vec!["exec", "--lab", lab, port, "--"];
        args.extend_from_slice(cmd);
        self.run(&args, timeout_s)
    }

    /// As [`UserHome::exec`], in the background: killed on drop.
    pub fn exec_background(&self, lab: &str, port: &str, cmd: &[String]) -> super::Reap {
        let child: Child = Command::new("setpriv")
            .args(&self.as_user()[1..])
            .arg(&self.bin)
            .args(["exec", "--lab", lab, port, "--"])
            .args(cmd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tapnet exec");
        super::Reap(child)
    }

    /// `tapnet up` on `text` as the test user, inside network namespace `host` if
    /// given (entered as root with nsenter, then setpriv drops to the user); waits
    /// for its ready line. `show` on the result runs as the user too.
    pub fn start(&self, host: Option<&str>, name: &str, text: &str) -> RunningLab {
        let file = LabFile::new(text);
        let mut cmd = match host {
            Some(host) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{host}")).arg("setpriv");
                c
            }
            None => Command::new("setpriv"),
        };
        cmd.args(&self.as_user()[1..])
            .arg(&self.bin)
            .arg("up")
            .arg(&file.path);
        // No namespace names: a rootless lab's are its own, with nothing to delete.
        RunningLab::launch(cmd, name, &[], Some(file), self.tapnet())
    }
}

impl Drop for UserHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The inode of the network namespace a process in port `port` of a rootless lab sees
/// (`net:[INODE]`), to check later that it is gone.
pub fn netns_inode(home: &UserHome, lab: &str, port: &str) -> String {
    let out = home.exec(lab, port, &["readlink", "/proc/self/ns/net"], 10);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether any process on the machine is in the network namespace `inode`
/// (`net:[N]`) or holds a descriptor of it: whether it still exists.
pub fn namespace_alive(inode: &str) -> bool {
    let is = |p: PathBuf| std::fs::read_link(p).is_ok_and(|l| l.to_string_lossy() == inode);
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .any(|e| {
            is(e.path().join("ns/net"))
                || std::fs::read_dir(e.path().join("fd"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|fd| is(fd.path()))
        })
}
