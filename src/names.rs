//! Named sandboxes: their runtime state (a lock held by the running
//! launcher, what `ps` shows, the control socket) and their persistent
//! state (the upper layer and how to start them again).
//!
//! Runtime: `RUNTIME/names/NAME/` with `lock` (flock, held exclusively by
//! the launcher for the sandbox's whole life), `info.json`, `control.sock`.
//! Persistent: `DATA/sandboxes/NAME/` with `upper/`, `work/`, `config.json`
//! and `log`. A runtime directory whose lock nobody holds is stale.

use crate::error::{Error, IoContext, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Longest name accepted.
pub const MAX_NAME: usize = 64;

/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most `MAX_NAME` characters.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "invalid sandbox name {name:?}: use letters, digits, '_', '.', '-', starting with a letter or digit, at most {MAX_NAME} characters"
        )))
    }
}

/// A generated name for `run -d` without `--name`.
pub fn generate_name() -> String {
    const ADJ: &[&str] = &[
        "amber", "brisk", "calm", "deft", "eager", "fond", "glad", "hale", "keen", "lucid",
        "merry", "nimble", "proud", "quiet", "rapid", "sunny", "tidy", "vivid", "witty", "zesty",
    ];
    const NOUN: &[&str] = &[
        "otter", "heron", "lynx", "finch", "badger", "marten", "plover", "stoat", "wren", "yak",
        "ibis", "koala", "newt", "orca", "puffin", "quail", "raven", "tapir", "vole", "zebu",
    ];
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as usize)
        .unwrap_or(0)
        ^ (std::process::id() as usize).wrapping_mul(2654435761);
    format!(
        "{}-{}-{:04x}",
        ADJ[n % ADJ.len()],
        NOUN[(n / ADJ.len()) % NOUN.len()],
        (n >> 16) & 0xffff
    )
}

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

/// How to start a stopped sandbox again (`sbox start`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub name: String,
    pub opts: crate::cli::SandboxOpts,
    pub command: Vec<String>,
    pub project: PathBuf,
    /// The per-project sandbox of `sbox shell` (started by `sbox shell`,
    /// not `sbox start`).
    #[serde(default)]
    pub shell: bool,
    /// The profile it last ran with (what `ps -a` shows once it stopped).
    #[serde(default)]
    pub profile: Option<String>,
}

/// Directories of one named sandbox.
#[derive(Debug, Clone)]
pub struct Paths {
    pub name: String,
    pub runtime: PathBuf,
    pub data: PathBuf,
}

impl Paths {
    pub fn new(runtime_base: &Path, data_dir: &Path, name: &str) -> Self {
        Paths {
            name: name.to_string(),
            runtime: runtime_base.join("names").join(name),
            data: data_dir.join("sandboxes").join(name),
        }
    }
    pub fn lock(&self) -> PathBuf {
        self.runtime.join("lock")
    }
    pub fn info(&self) -> PathBuf {
        self.runtime.join("info.json")
    }
    pub fn control(&self) -> PathBuf {
        self.runtime.join("control.sock")
    }
    pub fn upper(&self) -> PathBuf {
        self.data.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.data.join("work")
    }
    pub fn config(&self) -> PathBuf {
        self.data.join("config.json")
    }
    pub fn log(&self) -> PathBuf {
        self.data.join("log")
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

/// Names with runtime or persistent state.
pub fn all_names(runtime_base: &Path, data_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for d in [runtime_base.join("names"), data_dir.join("sandboxes")] {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                if let Some(n) = e.file_name().to_str() {
                    if validate_name(n).is_ok() && !v.iter().any(|x| x == n) {
                        v.push(n.to_string());
                    }
                }
            }
        }
    }
    v.sort();
    v
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

    #[test]
    fn names() {
        for ok in ["a", "t1", "my-box_2.x", &"a".repeat(64)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a/b", "a b", "ä", &"a".repeat(65), ".."] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        for _ in 0..20 {
            assert!(validate_name(&generate_name()).is_ok());
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
