//! Where sbox keeps things: its data and runtime directories, the
//! directories of one named sandbox, what a sandbox may be named, and the
//! name of a project's sandbox. Commands and the launcher ask here; nothing
//! else spells these paths.
//!
//! - DATA (`$XDG_DATA_HOME/sbox`, private to the user): `sandboxes/NAME/`
//!   with `upper/`, `work/`, `config.json` (see `names::StoredConfig`) and
//!   `log`; `trust/` (see `trust::record_path`); `runtime/` when it is the
//!   runtime directory.
//! - RUNTIME (see `state::runtime_base`, which makes it and checks that it
//!   is private): `names/NAME/` with `lock`, `info.json` and
//!   `control.sock` of a running named sandbox, and one state directory per
//!   running sandbox (`state::StateDir`).

use crate::error::{Error, Result};
use crate::policy::Caller;
use std::path::{Path, PathBuf};

/// sbox's persistent data directory (`$XDG_DATA_HOME/sbox`), when a home
/// directory can be told.
pub fn default_data_dir() -> Option<PathBuf> {
    directories::BaseDirs::new().map(|b| b.data_dir().join("sbox"))
}

/// The directory for persistent sbox data ($XDG_DATA_HOME/sbox), private
/// to the user (one that earlier versions left readable is made private).
pub fn data_dir(caller: &Caller) -> PathBuf {
    let dir = default_data_dir().unwrap_or_else(|| caller.home.join(".local/share/sbox"));
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| crate::state::make_data_private(&dir));
    dir
}

/// The user's private base directory for running sandboxes (made when
/// missing; see `state::runtime_base` for which one it is).
pub fn runtime_dir(uid: u32) -> Result<PathBuf> {
    crate::state::runtime_base(uid)
}

/// The caller's data and runtime directories, and the named sandboxes in
/// them.
#[derive(Debug, Clone)]
pub struct Locations {
    pub runtime: PathBuf,
    pub data: PathBuf,
}

impl Locations {
    /// The caller's (the runtime directory is made when missing).
    pub fn of(caller: &Caller) -> Result<Self> {
        Ok(Locations {
            runtime: runtime_dir(caller.uid)?,
            data: data_dir(caller),
        })
    }

    /// The calling user's.
    pub fn from_host() -> Result<Self> {
        Self::of(&Caller::from_host()?)
    }

    /// The directories of the sandbox `name`, once the name is valid.
    pub fn sandbox(&self, name: &str) -> Result<Paths> {
        validate_name(name)?;
        Ok(Paths::new(&self.runtime, &self.data, name))
    }

    /// The directories of the sandbox of `sbox shell` in `project`.
    pub fn project_sandbox(&self, project: &Path) -> Paths {
        Paths::new(&self.runtime, &self.data, &project_sandbox_name(project))
    }

    /// Names with runtime or persistent state, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for d in [self.runtime.join("names"), self.data.join("sandboxes")] {
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

/// The name of the per-project sandbox of `project` (`sbox shell` with a
/// profile that persists per project): `proj-BASENAME-HASH`.
pub fn project_sandbox_name(project: &Path) -> String {
    let base: String = project
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    let hash = crate::digest::digest(project.as_os_str().as_encoded_bytes());
    format!(
        "proj-{}-{}",
        if base.is_empty() { "root" } else { &base },
        &hash[..8]
    )
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
    fn project_names_are_valid_and_distinct() {
        let a = project_sandbox_name(Path::new("/home/u/src/my project!"));
        let b = project_sandbox_name(Path::new("/home/v/src/my project!"));
        assert!(validate_name(&a).is_ok(), "{a}");
        assert!(a.starts_with("proj-my_project_-"), "{a}");
        assert_ne!(a, b);
        assert!(validate_name(&project_sandbox_name(Path::new("/"))).is_ok());
    }

    #[test]
    fn one_layout_for_the_sandbox_directories() {
        let l = Locations {
            runtime: "/run/user/1/sbox".into(),
            data: "/home/u/.local/share/sbox".into(),
        };
        let p = l.sandbox("box").expect("valid");
        assert_eq!(p.lock(), Path::new("/run/user/1/sbox/names/box/lock"));
        assert_eq!(
            p.config(),
            Path::new("/home/u/.local/share/sbox/sandboxes/box/config.json")
        );
        assert!(l.sandbox("../x").is_err());
        let q = l.project_sandbox(Path::new("/home/u/src/p"));
        assert_eq!(q.name, project_sandbox_name(Path::new("/home/u/src/p")));
    }
}
