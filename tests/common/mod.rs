//! Harness for the sandbox tests: runs the real `sbox` binary as an
//! unprivileged user. As root (CI), the user is `$SBOX_TEST_USER` (default
//! `sboxtest`), created by .ci/run with a subordinate id range; the test
//! fails if it does not exist. As an ordinary user, the binary runs as you.
//!
//! Either way sbox runs with a throwaway HOME (and XDG_* directories) made
//! for each test process and removed when it exits: the tests never read or
//! write the real home of anybody. `SBOX_TEST_BIN` names the sbox binary to
//! test (default: the one cargo built), `SBOX_TEST_REPO` the source tree
//! (default: the one cargo built from), `SBOX_TEST_TMPDIR` where the
//! throwaway homes go (default: cargo's scratch directory for tests, or
//! /var/lib as root).
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

/// The unprivileged account the tests run sbox as.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The throwaway home of this test process (owned by the user, 0700,
    /// removed at exit), never the account's real one. `as_user` passes it
    /// as HOME, with XDG_CONFIG_HOME, XDG_DATA_HOME, XDG_CACHE_HOME and
    /// XDG_STATE_HOME at their usual places below it.
    pub home: PathBuf,
    /// XDG_RUNTIME_DIR of this test process (owned by the user, 0700).
    pub runtime: PathBuf,
    /// We are root and switch to the user for each command.
    pub switch: bool,
}

impl TestUser {
    /// HOME and the XDG base directories, as `as_user` sets them.
    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("HOME", self.home.clone()),
            ("XDG_CONFIG_HOME", self.home.join(".config")),
            ("XDG_DATA_HOME", self.home.join(".local/share")),
            ("XDG_CACHE_HOME", self.home.join(".cache")),
            ("XDG_STATE_HOME", self.home.join(".local/state")),
            ("XDG_RUNTIME_DIR", self.runtime.clone()),
        ]
    }
}

pub fn user() -> &'static TestUser {
    static U: OnceLock<TestUser> = OnceLock::new();
    U.get_or_init(|| {
        let me = nix::unistd::getuid();
        let (name, uid, gid, switch) = if !me.is_root() {
            let pw = nix::unistd::User::from_uid(me)
                .ok()
                .flatten()
                .expect("current user in /etc/passwd");
            (pw.name, me.as_raw(), pw.gid.as_raw(), false)
        } else {
            let name = std::env::var("SBOX_TEST_USER").unwrap_or_else(|_| "sboxtest".into());
            let pw = nix::unistd::User::from_name(&name)
                .ok()
                .flatten()
                .unwrap_or_else(|| {
                    panic!("test user {name} does not exist: run .ci/run or create it with a /etc/subuid range")
                });
            assert_ne!(pw.uid.as_raw(), 0, "the test user must not be root");
            (name, pw.uid.as_raw(), pw.gid.as_raw(), true)
        };
        let s = scratch(uid, gid, switch);
        TestUser {
            name,
            uid,
            gid,
            home: s.homes.join("home"),
            runtime: s.tmp.join("run"),
            switch,
        }
    })
}

/// The throwaway directories of this test process.
struct Scratch {
    /// `/tmp/sbox-it-PID`: `run/` (XDG_RUNTIME_DIR; under /tmp to keep
    /// socket paths short) and `bin/` (the copy of sbox).
    tmp: PathBuf,
    /// `PARENT/sbox-it-PID`: `home/`. Not under /tmp, which the sandbox
    /// replaces with its own, nor /var/tmp, which the build profile lets
    /// the sandbox write: sbox must see it as it sees a real home.
    homes: PathBuf,
}

static SCRATCH: OnceLock<Scratch> = OnceLock::new();

/// Where the throwaway homes go.
fn homes_parent(switch: bool) -> PathBuf {
    let p = match std::env::var_os("SBOX_TEST_TMPDIR") {
        Some(d) => PathBuf::from(d),
        None if switch => PathBuf::from("/var/lib"),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
    };
    let _ = std::fs::create_dir_all(&p);
    let real = std::fs::canonicalize(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (set SBOX_TEST_TMPDIR to a directory for the tests' throwaway homes)",
            p.display()
        )
    });
    for bad in ["/tmp", "/var/tmp", "/run", "/dev", "/proc", "/sys"] {
        assert!(
            !real.starts_with(bad),
            "{} is under {bad}, which the sandbox does not show as a home: set SBOX_TEST_TMPDIR to a directory elsewhere",
            real.display()
        );
    }
    real
}

/// Create this process's throwaway directories (and remove those of test
/// processes that are gone); they are removed when this process exits.
fn scratch(uid: u32, gid: u32, switch: bool) -> &'static Scratch {
    SCRATCH.get_or_init(|| {
        let parent = homes_parent(switch);
        for d in [Path::new("/tmp"), Path::new("/var/tmp"), &parent] {
            remove_stale(d);
        }
        let pid = std::process::id();
        let s = Scratch {
            tmp: PathBuf::from(format!("/tmp/sbox-it-{pid}")),
            homes: parent.join(format!("sbox-it-{pid}")),
        };
        // Left by an earlier process with our pid, which is gone.
        remove_tree(&s.tmp);
        remove_tree(&s.homes);
        // SAFETY: registers a plain function with no arguments; the test
        // harness ends through exit(3), which runs it.
        unsafe { libc::atexit(remove_scratch) };
        let mine = |p: &Path, mode: u32| {
            std::fs::DirBuilder::new()
                .mode(mode)
                .create(p)
                .unwrap_or_else(|e| panic!("creating {}: {e}", p.display()));
            // The umask may have narrowed it.
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        let theirs = |p: &Path| {
            mine(p, 0o700);
            if switch {
                nix::unistd::chown(
                    p,
                    Some(nix::unistd::Uid::from_raw(uid)),
                    Some(nix::unistd::Gid::from_raw(gid)),
                )
                .expect("chown");
            }
        };
        mine(&s.tmp, 0o755);
        theirs(&s.tmp.join("run"));
        if let Err(e) = std::fs::create_dir(&s.homes) {
            panic!(
                "creating {}: {e} (set SBOX_TEST_TMPDIR to a directory of yours for the tests' throwaway homes)",
                s.homes.display()
            );
        }
        std::fs::set_permissions(&s.homes, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let home = s.homes.join("home");
        theirs(&home);
        for d in [
            ".config",
            ".cache",
            ".local",
            ".local/share",
            ".local/state",
        ] {
            theirs(&home.join(d));
        }
        let rc = home.join(".bashrc");
        std::fs::write(&rc, "# the tests' throwaway home\n").expect("write .bashrc");
        if switch {
            nix::unistd::chown(
                &rc,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .expect("chown");
        }
        s
    })
}

extern "C" fn remove_scratch() {
    if let Some(s) = SCRATCH.get() {
        // Only the process that made them (not a forked child exiting).
        if s.tmp.ends_with(format!("sbox-it-{}", std::process::id())) {
            remove_tree(&s.tmp);
            remove_tree(&s.homes);
        }
    }
}

/// Remove `dir/sbox-it-PID…` (and the older `sbox-it-bin-PID`) of test
/// processes that are gone.
fn remove_stale(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("sbox-it-") else {
            continue;
        };
        let rest = rest.strip_prefix("bin-").unwrap_or(rest);
        let digits = rest.split('-').next().unwrap_or("");
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if !Path::new(&format!("/proc/{digits}")).exists() {
            remove_tree(&e.path());
        }
    }
}

/// Remove a tree, making its directories writable where needed (an
/// overlay's work directory is mode 0); whatever cannot go stays.
fn remove_tree(p: &Path) {
    fn writable(p: &Path) {
        let Ok(md) = std::fs::symlink_metadata(p) else {
            return;
        };
        if md.is_dir() {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                writable(&e.path());
            }
        }
    }
    if std::fs::remove_dir_all(p).is_err() && p.exists() {
        writable(p);
        let _ = std::fs::remove_dir_all(p);
    }
}

/// The sbox binary to test: `$SBOX_TEST_BIN`, else the one cargo built.
pub fn built_sbox() -> PathBuf {
    std::env::var_os("SBOX_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sbox")))
}

/// The source tree (install.sh, man/, profiles/): `$SBOX_TEST_REPO`, else
/// the one cargo built from.
pub fn repo_dir() -> PathBuf {
    std::env::var_os("SBOX_TEST_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The sbox binary the tests run; as root, a copy the test user can
/// execute (the build tree may be out of its reach), removed at exit.
pub fn sbox_bin() -> &'static Path {
    static B: OnceLock<PathBuf> = OnceLock::new();
    B.get_or_init(|| {
        let src = built_sbox();
        if !user().switch {
            return src;
        }
        let dir = SCRATCH.get().expect("scratch").tmp.join("bin");
        std::fs::create_dir_all(&dir).expect("bin dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let dst = dir.join("sbox");
        std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        dst
    })
}

/// A project directory owned by the test user, removed when dropped.
pub struct Project {
    pub dir: PathBuf,
}

impl Project {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/sbox-it-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("project dir");
        chown(&dir);
        Project { dir }
    }

    /// Write a file in the project, owned by the test user.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
            chown(parent);
        }
        std::fs::write(&p, text).expect("write");
        chown(&p);
        p
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        remove_project_sandboxes(&self.dir);
    }
}

/// Stored sandboxes that belong to `project` (`sbox shell` keeps one per
/// project in the dev profile): removed with the project.
pub fn remove_project_sandboxes(project: &Path) {
    let dir = user().home.join(".local/share/sbox/sandboxes");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path().join("config.json")) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if v["project"].as_str() == Some(&*project.to_string_lossy()) {
            if let Some(name) = e.file_name().to_str() {
                let _ = output(as_user(sbox_bin(), &["rm", "-f", name]));
            }
        }
    }
}

/// Give a path to the test user (when we are root).
pub fn chown(p: &Path) {
    let u = user();
    if u.switch {
        nix::unistd::chown(
            p,
            Some(nix::unistd::Uid::from_raw(u.uid)),
            Some(nix::unistd::Gid::from_raw(u.gid)),
        )
        .expect("chown");
    }
}

/// The text of the canary secret; it names this test process, so a copy
/// left by another run is not taken for it.
pub fn canary_text() -> String {
    format!("SBOX-CANARY-PRIVATE-KEY-{}\n", std::process::id())
}

/// A number no other call in this process gets (for temporary names).
pub fn unique() -> usize {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

/// Put a canary secret at `~/.ssh/id_ed25519` of the (throwaway) home.
pub fn canary_secret() -> PathBuf {
    let u = user();
    let dir = u.home.join(".ssh");
    std::fs::create_dir_all(&dir).expect("mkdir .ssh");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    chown(&dir);
    let f = dir.join("id_ed25519");
    // Tests of one process share it and run in parallel: replaced
    // atomically, and only when it differs, so a test reading it never
    // sees it half-written.
    let text = canary_text();
    if std::fs::read(&f).ok().as_deref() != Some(text.as_bytes()) {
        let tmp = dir.join(format!(".id_ed25519-{}-{}", std::process::id(), unique()));
        std::fs::write(&tmp, &text).expect("write canary");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        chown(&tmp);
        std::fs::rename(&tmp, &f).expect("rename canary");
    }
    f
}

/// A command line that runs as the test user.
pub fn as_user(program: &Path, args: &[&str]) -> Command {
    let u = user();
    let mut cmd = if u.switch {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", u.uid))
            .arg(format!("--regid={}", u.gid))
            .arg("--init-groups")
            .arg("--")
            .arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args);
    cmd.env_clear()
        .envs(u.env())
        .env("USER", &u.name)
        .env("LOGNAME", &u.name)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LANG", "C.UTF-8")
        .env("TERM", "xterm")
        .env("SHELL", "/bin/sh");
    cmd
}

/// Make `c` run with `home` as its HOME and that home's own XDG config,
/// data, cache and state directories (the harness's per-process ones are
/// dropped), for tests about what sbox keeps in a home of their making.
pub fn use_home(c: &mut Command, home: &Path) {
    for v in [
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "XDG_CACHE_HOME",
        "XDG_STATE_HOME",
    ] {
        c.env_remove(v);
    }
    c.env("HOME", home);
}

/// `sbox ARGS` as the test user in `dir`.
pub fn sbox(dir: &Path, args: &[&str]) -> Command {
    let mut c = as_user(sbox_bin(), args);
    c.current_dir(dir);
    c
}

/// Run and capture, with stdin closed.
pub fn output(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().expect("run sbox")
}

/// Run with `input` on stdin.
pub fn output_with_input(mut c: Command, input: &[u8]) -> Output {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert success and return stdout.
#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "sbox failed: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// `sbox run -- sh -c SCRIPT` in `dir`, with extra sbox options first.
pub fn run_sh(dir: &Path, opts: &[&str], script: &str) -> Output {
    let mut args = vec!["run"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    output(sbox(dir, &args))
}

/// The test user's runtime state directory for sbox.
pub fn state_base() -> PathBuf {
    user().runtime.join("sbox")
}

/// Names of running sandboxes' state directories.
pub fn state_entries() -> Vec<OsString> {
    std::fs::read_dir(state_base())
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

/// Host pids whose command line contains `needle`.
pub fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(needle) && pid != std::process::id() as i32 {
                v.push(pid);
            }
        }
    }
    v
}

/// Wait up to `secs` for `f` to be true.
pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    f()
}

/// Spawn sbox in the background.
pub fn spawn(mut c: Command) -> Child {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sbox")
}

/// State directories whose launcher is gone (left behind).
pub fn stale_state() -> Vec<OsString> {
    state_entries()
        .into_iter()
        .filter(|n| n.to_string_lossy().starts_with("run-"))
        .filter(|n| {
            let pid: i32 = n
                .to_string_lossy()
                .trim_start_matches("run-")
                .split('-')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().next())
                    .is_some_and(|st| st != "Z" && st != "X")
            })
        })
        .collect()
}
