//! Named sandboxes: their runtime state (a lock held by the running
//! launcher, what `ps` shows, the control socket) and their persistent
//! state (the upper layer and how to start them again).
//!
//! Runtime: `RUNTIME/names/NAME/` with `lock` (flock, held exclusively by
//! the launcher for the sandbox's whole life), `info.json`, `control.sock`.
//! Persistent: `DATA/sandboxes/NAME/` with `upper/`, `work/`, `config.json`
//! (a `StoredConfig`) and `log`. A runtime directory whose lock nobody holds
//! is stale. Where these are, and what a name may be: `crate::locations`.

use crate::error::{Error, IoContext, Result};
use crate::locations::{validate_name, Paths};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What `ps` shows of a running sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Info {
    pub name: String,
    /// The launcher's pid on the host.
    pub pid: i32,
    /// init's pid on the host.
    pub init_pid: i32,
    pub profile: String,
    pub project: PathBuf,
    /// Seconds since the epoch.
    pub started: u64,
    pub command: Vec<String>,
    pub detached: bool,
    /// The sandbox's cgroup v2, when its limits use one.
    pub cgroup: Option<PathBuf>,
}

/// The version of the `config.json` record this sbox writes. A record
/// without one (version 0) is what sbox wrote before records had versions:
/// the same fields. Fields are only ever added, each with a default, and
/// unknown fields are ignored, so that records of older and newer versions
/// load; the version goes up only when the meaning of a field changes, and a
/// record of a higher version than this one is refused.
pub const CONFIG_VERSION: u32 = 1;

/// How to start a stopped sandbox again (`sbox start`): `config.json` in
/// its data directory. Not the command line's `SandboxOpts`: a field
/// missing from a record (one written before the field existed) takes its
/// default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoredConfig {
    pub version: u32,
    pub name: String,
    pub opts: StoredOpts,
    pub command: Vec<String>,
    /// The project directory: the working directory it was started in.
    pub project: PathBuf,
    /// The per-project sandbox of `sbox shell` (started by `sbox shell`,
    /// not `sbox start`).
    pub shell: bool,
    /// The profile it last ran with (what `ps -a` shows once it stopped).
    pub profile: Option<String>,
    /// The id of the image its root comes from (None: the host's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Where directories are bound, as inside (the project's place is
    /// `project`): on an image's root their mount points are made in the
    /// upper layer, and are not the sandbox's changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_points: Vec<PathBuf>,
}

/// The options of `run` and `shell` a sandbox was started with, as stored
/// (see `SandboxOpts` for their meaning).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoredOpts {
    pub profile: Option<String>,
    pub bind: Vec<String>,
    pub ro_bind: Vec<String>,
    pub tmpfs: Vec<String>,
    pub chdir: Option<String>,
    pub env: Vec<String>,
    pub keep_env: Vec<String>,
    pub hostname: Option<String>,
    pub net: Option<String>,
    pub publish: Vec<String>,
    pub allow_host_loopback: bool,
    pub allow_net: Vec<String>,
    pub add_host: Vec<String>,
    pub memory: Option<String>,
    pub pids: Option<u64>,
    pub cpus: Option<f64>,
    pub nofile: Option<u64>,
    pub timeout: Option<String>,
    pub overlay: Option<String>,
    pub map_user: bool,
    pub verbose: bool,
    pub log_denials: bool,
    pub image: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Option<String>,
}

// Both conversions name every field (no `..`): a new option of `run` does
// not compile until it is stored, or left out on purpose.
impl StoredConfig {
    /// The record of a sandbox started now (the current version).
    pub fn new(
        name: &str,
        opts: StoredOpts,
        command: Vec<String>,
        project: &Path,
        shell: bool,
        profile: Option<String>,
    ) -> Self {
        StoredConfig {
            version: CONFIG_VERSION,
            name: name.to_string(),
            opts,
            command,
            project: project.to_path_buf(),
            shell,
            profile,
            image: None,
            mount_points: Vec::new(),
        }
    }

    /// Parse a record read from `file` (named in the errors).
    pub fn parse(file: &Path, text: &str) -> Result<Self> {
        let bad = |why: String| Error::path(file, format!("unreadable sandbox settings: {why}"));
        let cfg: StoredConfig = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if cfg.version > CONFIG_VERSION {
            return Err(bad(format!(
                "written by a newer sbox (record version {}; this one reads up to {CONFIG_VERSION})",
                cfg.version
            )));
        }
        if !cfg.project.is_absolute() {
            return Err(bad("no project directory".into()));
        }
        Ok(cfg)
    }
}

/// The stored settings of the sandbox: `None` when it has none; an error
/// that names the file when they cannot be read.
pub fn read_config(paths: &Paths) -> Result<Option<StoredConfig>> {
    let file = paths.config();
    match std::fs::read_to_string(&file) {
        Ok(text) => StoredConfig::parse(&file, &text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::path(
            &file,
            format!(
                "unreadable sandbox settings: {}",
                crate::error::io_reason(&e)
            ),
        )),
    }
}

/// The exclusive lock of a running sandbox; released when dropped.
#[derive(Debug)]
pub struct Running {
    _lock: Flock<std::fs::File>,
    pub paths: Paths,
}

impl Running {
    /// Take the name: fails when a sandbox of that name is running.
    ///
    /// `running()` in another sbox process (ps, exec, …) briefly holds a
    /// shared lock on a stale lock file and then removes the runtime
    /// directory: neither that probe nor a lock file removed under us means
    /// the name is taken, so both are retried.
    pub fn acquire(paths: Paths) -> Result<Self> {
        let taken = || Error::Usage(format!("sandbox {:?} is already running", paths.name));
        for _ in 0..200 {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&paths.runtime)
                .ctx(|| format!("creating {}", paths.runtime.display()))?;
            let f = match std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(paths.lock())
            {
                Ok(f) => f,
                // The directory went away (a stale-state cleanup): again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("opening {}", paths.lock().display()), e)),
            };
            match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                Ok(lock) if still_linked(&lock, &paths.lock()) => {
                    // Whatever a crashed predecessor left is ours to replace.
                    let _ = std::fs::remove_file(paths.info());
                    let _ = std::fs::remove_file(paths.control());
                    return Ok(Running { _lock: lock, paths });
                }
                // Removed between our open and our lock: again.
                Ok(_unlinked) => {}
                Err((f, _)) => match Flock::lock(f, FlockArg::LockSharedNonblock) {
                    // An exclusive holder: a running sandbox.
                    Err(_) => return Err(taken()),
                    // Only a probe of `running()`: let it finish.
                    Ok(_probe) => {}
                },
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Err(taken())
    }

    pub fn write_info(&self, info: &Info) -> Result<()> {
        write_json(&self.paths.info(), info)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.paths.info());
        let _ = std::fs::remove_file(self.paths.control());
    }
}

/// Is the locked file still the one at `path` (not removed meanwhile)?
fn still_linked(f: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Write JSON atomically, readable by the user only.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Host(e.to_string()))?;
    crate::state::write_private(path, text.as_bytes())
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Is a sandbox of this name running? Its info when it is. A runtime
/// directory nobody holds the lock of is stale and is removed.
pub fn running(paths: &Paths) -> Option<Info> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(paths.lock())
        .ok()?;
    match Flock::lock(f, FlockArg::LockSharedNonblock) {
        Ok(_free) => {
            // Nobody holds it: stale.
            let _ = std::fs::remove_dir_all(&paths.runtime);
            None
        }
        Err(_) => read_json(&paths.info()),
    }
}

/// The error for a sandbox that is not running: one that is stored but
/// stopped says so, a name nothing is stored under says there is none.
pub fn not_running(paths: &Paths) -> Error {
    if paths.data.exists() {
        Error::Usage(format!("sandbox {:?} is not running", paths.name))
    } else {
        Error::Usage(format!(
            "no sandbox named {:?} (see `sbox ps -a`)",
            paths.name
        ))
    }
}

/// Remove the runtime directories under `RUNTIME/names` whose lock nobody
/// holds (their sandbox is gone).
pub fn clean_stale_runtime(runtime_base: &Path) {
    let Ok(rd) = std::fs::read_dir(runtime_base.join("names")) else {
        return;
    };
    for e in rd.flatten() {
        if let Some(n) = e.file_name().to_str() {
            if validate_name(n).is_ok() {
                let paths = Paths {
                    name: n.to_string(),
                    runtime: e.path(),
                    data: PathBuf::new(),
                };
                if std::fs::symlink_metadata(paths.lock()).is_err() {
                    // Made and left before its lock file (`acquire` retries
                    // when its directory goes away under it).
                    let _ = std::fs::remove_dir_all(&paths.runtime);
                } else {
                    let _ = running(&paths);
                }
            }
        }
    }
}

/// Bytes used by a directory tree (what `ps -a` shows).
pub fn disk_usage(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    let mut total = md.blocks() * 512;
    if md.is_dir() {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                total += disk_usage(&e.path());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the sbox before versioned records wrote it (captured
    /// from that binary: `sbox run --name fixture --profile dev --bind /tmp
    /// --env A=b --memory 512M --pids 100 --hostname boxy -- sh -c ...`).
    const UNVERSIONED: &str = include_str!("../tests/fixtures/config-unversioned.json");

    fn parse(v: &serde_json::Value) -> Result<StoredConfig> {
        StoredConfig::parse(Path::new("/d/config.json"), &v.to_string())
    }

    #[test]
    fn a_record_of_the_unversioned_format_loads() {
        let c = StoredConfig::parse(Path::new("/d/config.json"), UNVERSIONED).expect("loads");
        assert_eq!(c.version, 0);
        assert_eq!(c.name, "fixture");
        assert_eq!(c.opts.profile.as_deref(), Some("dev"));
        assert_eq!(c.opts.bind, ["/tmp"]);
        assert_eq!(c.opts.env, ["A=b"]);
        assert_eq!(c.opts.hostname.as_deref(), Some("boxy"));
        assert_eq!(c.opts.memory.as_deref(), Some("512M"));
        assert_eq!(c.opts.pids, Some(100));
        assert_eq!(c.command[..2], ["sh", "-c"]);
        assert!(c.project.is_absolute());
        assert!(!c.shell);
        assert_eq!(c.profile.as_deref(), Some("dev"));
    }

    #[test]
    fn missing_fields_take_their_defaults_and_unknown_ones_are_ignored() {
        let full: serde_json::Value = serde_json::from_str(UNVERSIONED).expect("json");
        let want = parse(&full).expect("loads");
        let mut v = full.clone();
        let opts = v["opts"].as_object_mut().expect("opts");
        for k in [
            "publish",
            "allow_host_loopback",
            "log_denials",
            "ro_bind",
            "cpus",
        ] {
            opts.remove(k);
        }
        opts.insert("a_later_flag".into(), serde_json::json!(["x"]));
        let top = v.as_object_mut().expect("record");
        top.remove("shell");
        top.insert("a_later_field".into(), serde_json::json!({"k": 1}));
        assert_eq!(parse(&v).expect("loads"), want);
        // Only the project is needed.
        let bare = serde_json::json!({"project": "/p"});
        let c = parse(&bare).expect("loads");
        assert_eq!(
            (c.opts, c.command, c.shell),
            (StoredOpts::default(), vec![], false)
        );
    }

    #[test]
    fn an_unreadable_record_says_which_file_and_why() {
        let f = Path::new("/d/sandboxes/x/config.json");
        for (text, why) in [
            ("{bad", "key must be a string"),
            (
                r#"{"version": 99, "project": "/p"}"#,
                "written by a newer sbox",
            ),
            (r#"{"name": "x"}"#, "no project directory"),
            (
                r#"{"project": "/p", "opts": {"bind": "/tmp"}}"#,
                "invalid type",
            ),
        ] {
            let e = StoredConfig::parse(f, text).expect_err(text).to_string();
            assert!(e.starts_with("/d/sandboxes/x/config.json: "), "{e}");
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn a_probe_of_stale_state_does_not_make_the_name_look_taken() {
        let base = std::env::temp_dir().join(format!("sbox-names-probe-{}", std::process::id()));
        let paths = Paths::new(&base, &base.join("data"), "t2");
        // A crashed predecessor left its lock file; another sbox's
        // `running()` is probing it right now and is about to remove it.
        drop(Running::acquire(paths.clone()).expect("first"));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(paths.lock())
            .expect("open");
        let probe = Flock::lock(f, FlockArg::LockSharedNonblock).expect("probe");
        let runtime = paths.runtime.clone();
        let cleaner = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let _ = std::fs::remove_dir_all(&runtime);
            drop(probe);
        });
        let r = Running::acquire(paths.clone()).expect("taken although only probed");
        cleaner.join().expect("join");
        assert!(paths.lock().exists(), "holding a removed lock file");
        assert!(Running::acquire(paths.clone()).is_err(), "two holders");
        drop(r);
        std::fs::remove_dir_all(&base).ok();
    }

    #[test]
    fn lock_excludes_a_second_runner_and_stale_state_is_cleaned() {
        let base = std::env::temp_dir().join(format!("sbox-names-{}", std::process::id()));
        let paths = Paths::new(&base, &base.join("data"), "t1");
        let r = Running::acquire(paths.clone()).expect("first");
        let info = Info {
            name: "t1".into(),
            pid: 1,
            init_pid: 2,
            profile: "dev".into(),
            project: "/p".into(),
            started: 0,
            command: vec!["sleep".into()],
            detached: true,
            cgroup: None,
        };
        r.write_info(&info).expect("info");
        assert!(Running::acquire(paths.clone()).is_err());
        assert_eq!(running(&paths), Some(info));
        drop(r);
        assert_eq!(running(&paths), None);
        assert!(!paths.runtime.exists(), "stale state not removed");
        std::fs::remove_dir_all(&base).ok();
    }
}
