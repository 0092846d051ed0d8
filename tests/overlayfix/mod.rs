//! Test fixture: a real FUSE mount of the overlay in a temp dir, made
//! directly with mount(2). As root on the host that is all; as an ordinary
//! user the test binary first becomes root of its own user namespace (your
//! subordinate range as ids 1…N, like a sandbox) and mount namespace.
#![allow(dead_code)]

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sbox::rootfs::overlay::{mount_options, serve, OverlayConfig, OverlayServer};

static COUNTER: AtomicU64 = AtomicU64::new(0);

// Runs before main, while the process has a single thread, as
// unshare(CLONE_NEWUSER) requires.
#[used]
#[link_section = ".init_array"]
static ENTER_OWN_NAMESPACES: extern "C" fn() = enter_own_namespaces;

/// Whether this process is in the host's (initial) user namespace.
pub fn in_initial_userns() -> bool {
    fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
}

/// As an ordinary user on the host: become root of a new user namespace
/// that maps you to 0 and your /etc/subuid and /etc/subgid ranges to 1…N
/// (newuidmap/newgidmap, run by a child left outside), then enter a new
/// mount namespace. Nothing to do as root, nor in a process the test
/// binary started (the server child of the unprivileged test).
extern "C" fn enter_own_namespaces() {
    const DONE: &str = "SBOX_TEST_NAMESPACES_DECIDED";
    if std::env::var_os(DONE).is_some() {
        return;
    }
    // Single-threaded still: nothing reads the environment concurrently.
    std::env::set_var(DONE, "1");
    if nix::unistd::getuid().is_root() || !in_initial_userns() {
        return;
    }
    if let Err(e) = try_enter_own_namespaces() {
        eprintln!("tests: cannot become root of a user namespace of our own: {e}");
    }
}

fn try_enter_own_namespaces() -> Result<(), String> {
    use nix::sched::{unshare, CloneFlags};
    use nix::unistd::{fork, getgid, getpid, getuid, ForkResult, User};
    let (uid, gid) = (getuid(), getgid());
    let name = User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .ok_or("you are not in /etc/passwd")?;
    let plan = sbox::idmap::IdPlan::for_caller(uid.as_raw(), gid.as_raw(), &name, false);
    if !plan.helpers {
        return Err(format!(
            "{name} needs ranges in /etc/subuid and /etc/subgid and newuidmap/newgidmap (package uidmap)"
        ));
    }
    let me = getpid();
    let (r, w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: single-threaded (before main); the child only waits, runs
    // the setuid helpers and exits.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(w);
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(r.as_raw_fd(), &mut b);
            let ok = plan.apply(me).is_ok();
            // SAFETY: ends the child without running the parent's exit
            // handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        ForkResult::Parent { child } => {
            drop(r);
            let made = unshare(CloneFlags::CLONE_NEWUSER);
            drop(w);
            let st = nix::sys::wait::waitpid(child, None).map_err(|e| format!("waitpid: {e}"))?;
            made.map_err(|e| format!("unshare(CLONE_NEWUSER): {e}"))?;
            if st != nix::sys::wait::WaitStatus::Exited(child, 0) {
                return Err("newuidmap/newgidmap failed".into());
            }
        }
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))
}

pub struct Fx {
    pub base: PathBuf,
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub mnt: PathBuf,
    pub server: Option<OverlayServer>,
}

pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

pub fn errno<T>(r: io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

pub fn set_mtime(p: &Path, secs: i64) {
    let c = cpath(p);
    let t = [
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid path and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {p:?}");
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    // SAFETY: valid strings and buffer.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {p:?} {name}: {}",
        io::Error::last_os_error()
    );
}

pub fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid strings and writable buffer.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

pub fn list_xattr(p: &Path) -> Vec<String> {
    let c = cpath(p);
    let mut buf = vec![0u8; 8192];
    // SAFETY: valid string and writable buffer.
    let r = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(r >= 0, "listxattr {p:?}");
    buf.truncate(r as usize);
    buf.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

pub fn renameat2(a: &Path, b: &Path, flags: u32) -> io::Result<()> {
    let (ca, cb) = (cpath(a), cpath(b));
    // SAFETY: valid paths.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            flags,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn fd_count() -> usize {
    fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

pub struct Opts {
    pub hidden: Vec<PathBuf>,
    pub empty: Vec<PathBuf>,
    pub threads: usize,
    pub mount_points: Vec<PathBuf>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            hidden: vec![PathBuf::from("/home/u/.ssh")],
            empty: vec![PathBuf::from("/proc")],
            threads: 2,
            mount_points: Vec::new(),
        }
    }
}

impl Fx {
    /// Builds lower/upper/work/mnt, lets `build` fill lower (and upper),
    /// mounts and serves.
    pub fn new(name: &str, opts: Opts, build: impl FnOnce(&Path, &Path)) -> Fx {
        Self::make(name, opts, None, build)
    }

    /// Same with an existing host directory as the lower layer.
    pub fn new_with_lower(name: &str, opts: Opts, lower: &Path) -> Fx {
        Self::make(name, opts, Some(lower), |_, _| {})
    }

    fn make(
        name: &str,
        opts: Opts,
        lower_dir: Option<&Path>,
        build: impl FnOnce(&Path, &Path),
    ) -> Fx {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base =
            std::env::temp_dir().join(format!("sbox-ovl-{}-{}-{}", name, std::process::id(), n));
        let _ = fs::remove_dir_all(&base);
        let lower = base.join("lower");
        let upper = base.join("upper");
        let work = base.join("work");
        let mnt = base.join("mnt");
        for d in [&lower, &upper, &work, &mnt] {
            fs::create_dir_all(d).unwrap();
        }
        build(&lower, &upper);
        let served_lower = lower_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| lower.clone());
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .expect("open /dev/fuse");
        let opts_s = mount_options(dev.as_raw_fd());
        nix::mount::mount(
            Some("sbox-test"),
            &mnt,
            Some("fuse.sbox"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(opts_s.as_str()),
        )
        .expect("mount fuse");
        let cfg = OverlayConfig {
            canonical: Default::default(),
            lower: served_lower,
            upper: upper.clone(),
            work: work.clone(),
            hidden: opts.hidden,
            empty: opts.empty,
            caller_uid: 0,
            caller_gid: 0,
            caller_inside: (0, 0),
            id_maps: None,
            threads: opts.threads,
            attr_timeout: Duration::from_secs(1),
            entry_timeout: Duration::from_secs(1),
            mount_points: opts.mount_points,
        };
        let server = serve(OwnedFd::from(dev), cfg).expect("serve");
        Fx {
            base,
            lower,
            upper,
            work,
            mnt,
            server: Some(server),
        }
    }

    pub fn m(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
    pub fn u(&self, rel: &str) -> PathBuf {
        self.upper.join(rel)
    }
    pub fn l(&self, rel: &str) -> PathBuf {
        self.lower.join(rel)
    }

    /// Unmounts and checks the server ends cleanly.
    pub fn finish(mut self) {
        nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH).expect("umount");
        if let Some(s) = self.server.take() {
            s.wait().expect("server ends cleanly");
        }
    }
}

impl Drop for Fx {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
            let _ = s.wait();
        }
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// The standard lower tree.
pub fn standard_lower(l: &Path, _u: &Path) {
    use std::os::unix::fs::{symlink, PermissionsExt};
    fs::write(l.join("hello"), b"hello world\n").unwrap();
    fs::set_permissions(l.join("hello"), fs::Permissions::from_mode(0o644)).unwrap();
    set_xattr(&l.join("hello"), "user.test", b"val");
    set_mtime(&l.join("hello"), 1_000_000_000);
    fs::write(l.join("other"), b"owned by someone else").unwrap();
    std::os::unix::fs::chown(l.join("other"), Some(1234), Some(1234)).unwrap();
    fs::create_dir_all(l.join("dir/sub")).unwrap();
    fs::write(l.join("dir/sub/file"), b"deep").unwrap();
    fs::write(l.join("dir/a"), b"a").unwrap();
    fs::create_dir_all(l.join("home/u/.ssh")).unwrap();
    fs::write(l.join("home/u/.ssh/id_rsa"), b"SECRET").unwrap();
    fs::write(l.join("home/u/notes"), b"notes").unwrap();
    fs::create_dir_all(l.join("proc")).unwrap();
    fs::write(l.join("proc/cpuinfo"), b"host proc").unwrap();
    fs::create_dir_all(l.join("ldir/inner")).unwrap();
    fs::write(l.join("ldir/a"), b"A").unwrap();
    fs::write(l.join("ldir/inner/b"), b"B").unwrap();
    set_mtime(&l.join("ldir"), 1_100_000_000);
    symlink("hello", l.join("sym")).unwrap();
    fs::write(l.join("ro"), b"read only").unwrap();
    fs::set_permissions(l.join("ro"), fs::Permissions::from_mode(0o444)).unwrap();
    let _ = File::create(l.join("empty_file"));
}
