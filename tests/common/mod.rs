//! Harness for the sandbox tests: runs the real `sbox` binary as an
//! unprivileged user. As root (CI), the user is `$SBOX_TEST_USER` (default
//! `sboxtest`), created by .ci/run with a subordinate id range; the test
//! fails if it does not exist. As an ordinary user, the binary runs as you.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

/// The unprivileged account the tests run sbox as.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    /// We are root and switch to the user for each command.
    pub switch: bool,
}

pub fn user() -> &'static TestUser {
    static U: OnceLock<TestUser> = OnceLock::new();
    U.get_or_init(|| {
        let me = nix::unistd::getuid();
        if !me.is_root() {
            let pw = nix::unistd::User::from_uid(me)
                .ok()
                .flatten()
                .expect("current user in /etc/passwd");
            return TestUser {
                name: pw.name,
                uid: me.as_raw(),
                gid: pw.gid.as_raw(),
                home: pw.dir,
                switch: false,
            };
        }
        let name = std::env::var("SBOX_TEST_USER").unwrap_or_else(|_| "sboxtest".into());
        let pw = nix::unistd::User::from_name(&name)
            .ok()
            .flatten()
            .unwrap_or_else(|| {
                panic!("test user {name} does not exist: run .ci/run or create it with a /etc/subuid range")
            });
        assert_ne!(pw.uid.as_raw(), 0, "the test user must not be root");
        TestUser {
            name,
            uid: pw.uid.as_raw(),
            gid: pw.gid.as_raw(),
            home: pw.dir,
            switch: true,
        }
    })
}

/// The sbox binary, copied where the test user can execute it.
pub fn sbox_bin() -> &'static Path {
    static B: OnceLock<PathBuf> = OnceLock::new();
    B.get_or_init(|| {
        let src = PathBuf::from(env!("CARGO_BIN_EXE_sbox"));
        // Copies left by earlier test processes that are gone.
        if let Ok(rd) = std::fs::read_dir("/tmp") {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("sbox-it-bin-") {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let dir = PathBuf::from(format!("/tmp/sbox-it-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("bin dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let dst = dir.join("sbox");
        std::fs::copy(&src, &dst).expect("copy sbox");
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

/// Put a canary secret at `~/.ssh/id_ed25519` of the test user.
pub fn canary_secret() -> PathBuf {
    let u = user();
    let dir = u.home.join(".ssh");
    std::fs::create_dir_all(&dir).expect("mkdir .ssh");
    chown(&dir);
    let f = dir.join("id_ed25519");
    std::fs::write(&f, "SBOX-CANARY-PRIVATE-KEY\n").expect("write canary");
    chown(&f);
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
        .env("HOME", &u.home)
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
    PathBuf::from(format!("/tmp/sbox-{}", user().uid))
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
