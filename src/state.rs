//! Per-sandbox state on the host: the runtime directory that holds the new
//! root's mount point and the ephemeral upper layer, and its removal.

use crate::error::{Error, IoContext, Result};
use crate::rootfs::plan::StatePaths;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The user's private base directory for running sandboxes:
/// `$XDG_RUNTIME_DIR/sbox` when usable, else `/tmp/sbox-UID` (0700).
pub fn runtime_base(uid: u32) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        if dir.is_absolute() {
            if let Ok(md) = std::fs::metadata(&dir) {
                if md.is_dir() && md.uid() == uid {
                    let base = dir.join("sbox");
                    ensure_private_dir(&base, uid)?;
                    return Ok(base);
                }
            }
        }
    }
    let base = PathBuf::from(format!("/tmp/sbox-{uid}"));
    ensure_private_dir(&base, uid)?;
    Ok(base)
}

/// Create `p` with mode 0700 if missing and check that it is a real
/// directory owned by `uid` that nobody else can write.
fn ensure_private_dir(p: &Path, uid: u32) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(format!("creating {}", p.display()), e)),
    }
    let md = std::fs::symlink_metadata(p).ctx(|| format!("checking {}", p.display()))?;
    if !md.is_dir() || md.uid() != uid || md.mode() & 0o022 != 0 {
        return Err(Error::path(
            p,
            "not a private directory owned by you (remove it or set XDG_RUNTIME_DIR)",
        ));
    }
    Ok(())
}

/// The state directory of one running sandbox; removed when dropped.
#[derive(Debug)]
pub struct StateDir {
    pub dir: PathBuf,
    pub paths: StatePaths,
    keep: bool,
}

impl StateDir {
    /// Create `BASE/run-PID-NANOS/{root,upper,work,empty}`.
    pub fn create(base: &Path) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!("run-{}-{nanos:x}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .ctx(|| format!("creating {}", dir.display()))?;
        let paths = StatePaths {
            root: dir.join("root"),
            upper: dir.join("upper"),
            work: dir.join("work"),
            empty_file: dir.join("empty"),
            hide: dir.join("hide"),
        };
        let state = StateDir {
            dir,
            paths,
            keep: false,
        };
        for d in [&state.paths.root, &state.paths.upper, &state.paths.work] {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(d)
                .ctx(|| format!("creating {}", d.display()))?;
        }
        std::fs::set_permissions(&state.paths.root, std::fs::Permissions::from_mode(0o755))
            .ctx(|| "setting the root's mode".into())?;
        crate::rootfs::apply::make_empty_file(&state.paths.empty_file)?;
        Ok(state)
    }

    /// Do not remove the directory when dropped (a child process owns it).
    pub fn forget(&mut self) {
        self.keep = true;
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = remove_tree(&self.dir);
        }
    }
}

/// Remove a tree we own, making directories writable where needed (the
/// overlay's work directory is created mode 0).
pub fn remove_tree(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            chmod_dirs_writable(p);
            std::fs::remove_dir_all(p)
        }
    }
}

fn chmod_dirs_writable(p: &Path) {
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return;
    };
    if !md.is_dir() {
        return;
    }
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            chmod_dirs_writable(&e.path());
        }
    }
}

/// Whether a process runs (a zombie waiting to be reaped does not).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Remove state directories of sandboxes whose launcher is gone.
pub fn clean_stale(base: &Path) {
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("run-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if !process_alive(pid) {
            let _ = remove_tree(&e.path());
        }
    }
}

/// Remove a tree that holds files owned by subordinate ids (chowned inside
/// the sandbox): delete it from a user namespace with the sandbox's maps,
/// where those ids are ours. Must be called while single-threaded.
pub fn remove_tree_mapped(p: &Path, ids: &crate::idmap::IdPlan) -> Result<()> {
    use crate::sys::{clone_process, exit_now, Forked};
    use nix::sched::CloneFlags;
    if remove_tree(p).is_ok() {
        return Ok(());
    }
    let (r, w) = nix::unistd::pipe().map_err(|e| Error::sys("pipe", e))?;
    match clone_process(CloneFlags::CLONE_NEWUSER).map_err(|e| Error::sys("clone", e))? {
        Forked::Child => {
            drop(w);
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&r), &mut b);
            exit_now(if remove_tree(p).is_ok() { 0 } else { 1 });
        }
        Forked::Parent(pid) => {
            drop(r);
            let mapped = ids.apply(pid);
            drop(w);
            let st = nix::sys::wait::waitpid(pid, None).map_err(|e| Error::sys("waitpid", e))?;
            mapped?;
            match st {
                nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
                _ => Err(Error::path(p, "could not remove the sandbox's state")),
            }
        }
    }
}
