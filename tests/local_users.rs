//! Other local users, through the real binary as an unprivileged user:
//! sbox's data and runtime state is private (directories 0700, files 0600),
//! state that earlier versions left readable is made private, and another
//! user who takes `/tmp/sbox-UID` first (a directory of theirs, one anybody
//! may write, a symlink) neither stops sbox nor gets its state.
//!
//! Each test has its own HOME (and so its own data directory). The tests
//! that take `/tmp/sbox-UID` run one at a time, put the test user's own
//! directory aside meanwhile and put it back after.

mod common;
use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// A throwaway HOME for the test user (and XDG_RUNTIME_DIR when given).
struct Env {
    home: PathBuf,
    runtime: Option<PathBuf>,
    _dir: Project,
}

impl Env {
    fn new(tag: &str) -> Self {
        let dir = Project::new(tag);
        Env {
            home: dir.dir.clone(),
            runtime: None,
            _dir: dir,
        }
    }

    /// A HOME long enough that a control socket under it is longer than a
    /// unix socket address holds (108 bytes).
    fn long(tag: &str) -> Self {
        let mut env = Env::new(tag);
        env.home = env.home.join("h".repeat(90));
        std::fs::create_dir(&env.home).expect("mkdir");
        chown(&env.home);
        env
    }

    fn data(&self) -> PathBuf {
        self.home.join(".local/share/sbox")
    }

    fn cmd(&self, dir: &Path, args: &[&str]) -> Command {
        let mut c = sbox(dir, args);
        // This HOME's own data directory, and no runtime directory unless
        // the test gives one: the harness's per-process ones are not used.
        use_home(&mut c, &self.home);
        c.env_remove("XDG_RUNTIME_DIR");
        if let Some(r) = &self.runtime {
            c.env("XDG_RUNTIME_DIR", r);
        }
        c
    }

    fn sb(&self, dir: &Path, args: &[&str]) -> Output {
        output(self.cmd(dir, args))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Named sandboxes of this HOME: stopped and removed.
        if let Ok(rd) = std::fs::read_dir(self.data().join("sandboxes")) {
            for e in rd.flatten() {
                if let Some(n) = e.file_name().to_str() {
                    let _ = self.sb(Path::new("/"), &["rm", "-f", n]);
                }
            }
        }
    }
}

/// The runtime directory sbox uses without `XDG_RUNTIME_DIR`.
fn tmp_base() -> PathBuf {
    PathBuf::from(format!("/tmp/sbox-{}", user().uid))
}

/// Every entry under `root` (not following symlinks) whose mode lets the
/// group or others in, or that is not the test user's.
fn loose_entries(root: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).expect("lstat");
        let mode = md.mode() & 0o7777;
        if md.file_type().is_symlink() {
            bad.push(format!("{} is a symlink", p.display()));
            continue;
        }
        if mode & 0o077 != 0 {
            bad.push(format!("{} {mode:04o}", p.display()));
        }
        if md.uid() != user().uid {
            bad.push(format!("{} owned by {}", p.display(), md.uid()));
        }
        if md.is_dir() {
            for e in std::fs::read_dir(&p).expect("readdir").flatten() {
                stack.push(e.path());
            }
        }
    }
    bad
}

#[track_caller]
fn assert_private(root: &Path) {
    let md = std::fs::symlink_metadata(root).expect("lstat");
    assert!(md.is_dir(), "{}", root.display());
    assert_eq!(md.mode() & 0o7777, 0o700, "{}", root.display());
    let bad = loose_entries(root);
    assert!(bad.is_empty(), "not private: {bad:#?}");
}

#[track_caller]
fn assert_mode(p: &Path, mode: u32) {
    let md = std::fs::symlink_metadata(p).expect("lstat");
    assert_eq!(md.mode() & 0o7777, mode, "{}", p.display());
}

/// Wait until `sbox logs NAME` shows `needle`.
fn wait_log(env: &Env, name: &str, needle: &str) {
    assert!(
        wait_for(20, || stdout(&env.sb(Path::new("/"), &["logs", name]))
            .contains(needle)),
        "{needle:?} never in the log of {name}"
    );
}

#[test]
fn a_detached_sandbox_keeps_its_output_and_environment_private() {
    let mut env = Env::new("lu-home");
    let rt = Project::new("lu-xdg");
    std::fs::set_permissions(&rt.dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    env.runtime = Some(rt.dir.clone());
    let p = Project::new("lu-proj");
    let name = format!("lu-x-{}", std::process::id());
    let o = env.sb(
        &p.dir,
        &[
            "run",
            "--name",
            &name,
            "-d",
            "--env",
            "SECRET=sbox-private-value",
            "--",
            "sh",
            "-c",
            "echo out:$SECRET; sleep 60",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    wait_log(&env, &name, "out:sbox-private-value");
    let sandbox = env.data().join("sandboxes").join(&name);
    assert_mode(&env.data(), 0o700);
    assert_mode(&sandbox, 0o700);
    assert_mode(&sandbox.join("config.json"), 0o600);
    assert_mode(&sandbox.join("log"), 0o600);
    assert_private(&env.data());
    assert_private(&rt.dir.join("sbox"));
    assert_mode(&rt.dir.join("sbox/names").join(&name).join("lock"), 0o600);
    assert_mode(
        &rt.dir.join("sbox/names").join(&name).join("control.sock"),
        0o600,
    );
    ok(env.sb(Path::new("/"), &["stop", &name]));
    assert_private(&env.data());
    // A trust record too.
    p.write(".sbox.toml", "[process]\nhostname = \"x\"\n");
    ok(env.sb(&p.dir, &["trust"]));
    assert_private(&env.data());
}

#[test]
fn state_left_readable_by_earlier_versions_is_made_private() {
    let env = Env::new("lu-old");
    let data = env.data();
    let sandbox = data.join("sandboxes/old");
    for d in [
        env.home.join(".local"),
        env.home.join(".local/share"),
        data.clone(),
        data.join("sandboxes"),
        sandbox.clone(),
        data.join("trust"),
    ] {
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        chown(&d);
    }
    let files = [
        sandbox.join("config.json"),
        sandbox.join("log"),
        sandbox.join("log.1"),
        data.join("trust/0123.json"),
    ];
    for f in &files {
        std::fs::write(f, "{}").expect("write");
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        chown(f);
    }
    // Any command that looks at the data directory.
    let _ = env.sb(Path::new("/"), &["ps", "-a"]);
    assert_private(&data);
    assert_mode(&env.home.join(".local/share"), 0o755);
}

/// Serialises the tests that take the test user's `/tmp/sbox-UID`.
static TMP_DIR: Mutex<()> = Mutex::new(());

/// Another user's `/tmp/sbox-UID` for the duration of a test; the test
/// user's own directory, if any, is put aside and back.
struct Squat {
    path: PathBuf,
    saved: PathBuf,
    target: Option<PathBuf>,
    _lock: std::sync::MutexGuard<'static, ()>,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A directory of another user's.
    OthersDir,
    /// A directory anybody may write.
    OpenDir,
    /// A symlink to a directory of the squatter's.
    Link,
}

impl Squat {
    fn new(kind: Kind) -> Self {
        let lock = TMP_DIR.lock().unwrap_or_else(|e| e.into_inner());
        let path = tmp_base();
        let saved = PathBuf::from(format!("{}.saved-{}", path.display(), std::process::id()));
        if std::fs::symlink_metadata(&path).is_ok() {
            std::fs::rename(&path, &saved).expect("put the user's runtime dir aside");
        }
        let mut squat = Squat {
            path: path.clone(),
            saved,
            target: None,
            _lock: lock,
        };
        // As root the squatter is `nobody`; as an ordinary user, it can only
        // be a directory or link of our own that is not private.
        let squatter = if user().switch { 65534 } else { user().uid };
        let lchown = |p: &Path| {
            if user().switch {
                std::os::unix::fs::lchown(p, Some(squatter), Some(65534)).expect("lchown");
            }
        };
        match kind {
            Kind::OthersDir => {
                std::fs::create_dir(&path).expect("mkdir");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod");
                lchown(&path);
            }
            Kind::OpenDir => {
                std::fs::create_dir(&path).expect("mkdir");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
                    .expect("chmod");
                lchown(&path);
            }
            Kind::Link => {
                let t = PathBuf::from(format!("{}.squat-{}", path.display(), std::process::id()));
                std::fs::create_dir(&t).expect("mkdir");
                std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o777))
                    .expect("chmod");
                lchown(&t);
                std::os::unix::fs::symlink(&t, &path).expect("symlink");
                lchown(&path);
                squat.target = Some(t);
            }
        }
        squat
    }

    /// What sbox put into the squatter's directory.
    fn planted(&self) -> Vec<PathBuf> {
        let dir = self.target.as_deref().unwrap_or(&self.path);
        std::fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

impl Drop for Squat {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(md) if md.is_dir() => {
                let _ = std::fs::remove_dir_all(&self.path);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&self.path);
            }
            Err(_) => {}
        }
        if let Some(t) = &self.target {
            let _ = std::fs::remove_dir_all(t);
        }
        if std::fs::symlink_metadata(&self.saved).is_ok() {
            let _ = std::fs::rename(&self.saved, &self.path);
        }
    }
}

#[test]
fn another_users_tmp_sbox_dir_is_not_used_and_does_not_stop_sbox() {
    // Only root can make a directory that belongs to somebody else; as an
    // ordinary user a 0755 directory of our own is simply made private
    // (a_runtime_dir_of_ours_that_others_can_read_is_made_private).
    let kinds: &[Kind] = if user().switch {
        &[Kind::OthersDir, Kind::OpenDir, Kind::Link]
    } else {
        &[Kind::OpenDir, Kind::Link]
    };
    for &kind in kinds {
        let squat = Squat::new(kind);
        let env = Env::long("lu-sq");
        let p = Project::new("lu-sq-proj");
        let tmp = tmp_base().display().to_string();

        let o = env.sb(&p.dir, &["run", "--", "sh", "-c", "echo ran"]);
        assert!(o.status.success(), "{kind:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), "ran\n");
        let e = stderr(&o);
        assert_eq!(e.lines().count(), 1, "{kind:?}: {e}");
        assert!(
            e.starts_with("sbox: note: ") && e.contains(&tmp),
            "{kind:?}: {e}"
        );
        let fallback = env.data().join("runtime");
        assert!(e.contains(&fallback.display().to_string()), "{kind:?}: {e}");

        // A detached sandbox is found by the next commands, whose control
        // socket path is longer than 108 bytes.
        let name = format!("lu-sq-{}", std::process::id());
        let sock = fallback.join("names").join(&name).join("control.sock");
        assert!(sock.as_os_str().len() > 108, "{}", sock.display());
        let o = env.sb(&p.dir, &["run", "-d", "--name", &name, "--", "sleep", "60"]);
        assert!(o.status.success(), "{kind:?}: {}", stderr(&o));
        let ps = ok(env.sb(&p.dir, &["ps"]));
        assert!(ps.contains(&name), "{kind:?}: {ps}");
        assert_eq!(
            ok(env.sb(&p.dir, &["exec", &name, "--", "echo", "in"])),
            "in\n"
        );
        assert_private(&fallback);
        assert_mode(&sock, 0o600);
        assert!(
            squat.planted().is_empty(),
            "{kind:?}: {:?}",
            squat.planted()
        );
        // The squatter leaves: the running sandbox is still found.
        drop(squat);
        let ps = ok(env.sb(&p.dir, &["ps"]));
        assert!(ps.contains(&name), "{kind:?}: {ps}");
        ok(env.sb(&p.dir, &["stop", &name]));
        // Once nothing runs there, sbox is back in /tmp/sbox-UID, quietly.
        let o = env.sb(&p.dir, &["run", "--", "true"]);
        assert!(o.status.success(), "{kind:?}: {}", stderr(&o));
        assert_eq!(stderr(&o), "", "{kind:?}");
        assert!(!fallback.exists(), "{kind:?}: {}", fallback.display());
        ok(env.sb(&p.dir, &["rm", &name]));
    }
}

#[test]
fn a_runtime_dir_of_ours_that_others_can_read_is_made_private() {
    let _lock = TMP_DIR.lock().unwrap_or_else(|e| e.into_inner());
    let path = tmp_base();
    let env = Env::new("lu-rt");
    let p = Project::new("lu-rt-proj");
    let _ = std::fs::create_dir(&path);
    chown(&path);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let o = env.sb(&p.dir, &["run", "--", "true"]);
    let mode = std::fs::metadata(&path).expect("stat").mode() & 0o7777;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
    assert_eq!(mode, 0o700);
}
