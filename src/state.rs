//! Per-sandbox state on the host: the runtime directory that holds the new
//! root's mount point and the ephemeral upper layer, and its removal.

use crate::error::{Error, IoContext, Result};
use crate::rootfs::plan::StatePaths;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The user's private base directory for running sandboxes, the first of:
/// `$XDG_RUNTIME_DIR/sbox` (when that is a private directory of the user's);
/// `/tmp/sbox-UID`; `DATA/runtime` (sbox's own data directory). The last is
/// used when `/tmp/sbox-UID` is not a private directory of the user's —
/// another user made it first, or made it a link — and for as long as a
/// sandbox started there runs, so that `ps`, `exec` and `stop` find it.
pub fn runtime_base(uid: u32) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        if dir.is_absolute() {
            if let Ok(md) = std::fs::metadata(&dir) {
                if md.is_dir() && md.uid() == uid && md.mode() & 0o022 == 0 {
                    let base = dir.join("sbox");
                    if let Err(why) = private_dir(&base, uid) {
                        return Err(Error::path(
                            &base,
                            format!("{why} (remove it, or unset XDG_RUNTIME_DIR)"),
                        ));
                    }
                    return Ok(base);
                }
            }
        }
    }
    let tmp = PathBuf::from(format!("/tmp/sbox-{uid}"));
    let squatted = match sticky_parent(&tmp) {
        Ok(()) => private_dir(&tmp, uid).err(),
        Err(why) => Some(why),
    };
    let data = crate::locations::default_data_dir()
        .ok_or_else(|| Error::Host("cannot tell the home directory (set HOME)".into()))?;
    let fallback = data.join("runtime");
    let in_use = fallback_in_use(&fallback);
    if squatted.is_none() && !in_use {
        return Ok(tmp);
    }
    create_data_dirs(&data, Path::new("runtime"))?;
    if let Some(why) = squatted {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            eprintln!(
                "sbox: note: {} {why}; keeping running sandboxes in {} instead",
                tmp.display(),
                fallback.display()
            )
        });
    }
    Ok(fallback)
}

/// Does the fallback runtime directory hold a sandbox that still runs?
/// Stale state is cleaned first; an empty fallback is removed, so that sbox
/// returns to `/tmp/sbox-UID` once nothing runs there any more.
fn fallback_in_use(dir: &Path) -> bool {
    match std::fs::symlink_metadata(dir) {
        Ok(md) if md.is_dir() => {}
        _ => return false,
    }
    clean_stale(dir);
    crate::names::clean_stale_runtime(dir);
    drop_caches(dir);
    let names = dir.join("names");
    let _ = std::fs::remove_dir(&names);
    let _ = std::fs::remove_dir(dir);
    std::fs::symlink_metadata(dir).is_ok()
}

/// Remove a kept whiteout layer unless a sandbox holds it: renamed away
/// under an exclusive lock first, so no later user finds it half removed.
fn remove_unused_layer(keep: &Path) {
    use nix::fcntl::{Flock, FlockArg};
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(dir) = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(keep)
    else {
        return;
    };
    let Ok(_lock) = Flock::lock(dir, FlockArg::LockExclusiveNonblock) else {
        return;
    };
    let Some(name) = keep.file_name() else {
        return;
    };
    let mut gone = keep.to_path_buf();
    gone.set_file_name(format!(".old-{}", name.to_string_lossy()));
    if std::fs::rename(keep, &gone).is_ok() {
        let _ = remove_tree(&gone);
    }
}

/// When no sandbox runs from `base`: remove what it keeps for later launches
/// (spare state directories, whiteout layers, read-ahead lists, the
/// keeper's record, which ends the keeper).
fn drop_caches(base: &Path) {
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    let entries: Vec<_> = rd.flatten().collect();
    let named =
        |e: &std::fs::DirEntry, p: &str| e.file_name().to_str().is_some_and(|n| n.starts_with(p));
    if entries.iter().any(|e| named(e, "run-")) {
        return;
    }
    for e in entries {
        if named(&e, SPARE) {
            let _ = remove_tree(&e.path());
        } else if named(&e, HIDE) {
            remove_unused_layer(&e.path());
        } else if named(&e, "keeper-") || named(&e, crate::rootfs::prefetch::PREFIX) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// `/tmp` (the parent of `p`) must keep others from renaming what we own in
/// it: sticky, or writable by nobody else.
fn sticky_parent(p: &Path) -> std::result::Result<(), String> {
    let parent = p.parent().unwrap_or(Path::new("/"));
    match std::fs::metadata(parent) {
        Ok(md) if md.mode() & 0o002 == 0 || md.mode() & 0o1000 != 0 => Ok(()),
        Ok(_) => Err(format!(
            "is in {}, which others may write and is not sticky",
            parent.display()
        )),
        Err(e) => Err(format!("cannot be checked ({e})")),
    }
}

/// Create `p` with mode 0700 if missing and check that it is a real
/// directory owned by `uid` that nobody else can write; one that others can
/// only read is made private. `Err` says what is wrong with it.
fn private_dir(p: &Path, uid: u32) -> std::result::Result<(), String> {
    match std::fs::DirBuilder::new().mode(0o700).create(p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot be created ({e})")),
    }
    let md = std::fs::symlink_metadata(p).map_err(|e| format!("cannot be checked ({e})"))?;
    if md.file_type().is_symlink() {
        return Err("is a symbolic link, not a private directory of yours".into());
    }
    if !md.is_dir() {
        return Err("is not a directory".into());
    }
    if md.uid() != uid {
        return Err(format!(
            "belongs to uid {}, not to you (uid {uid})",
            md.uid()
        ));
    }
    if md.mode() & 0o022 != 0 {
        return Err(format!(
            "is writable by others (mode {:04o})",
            md.mode() & 0o7777
        ));
    }
    if md.mode() & 0o077 != 0 {
        tighten(p, true).map_err(|e| format!("cannot be made private ({e})"))?;
    }
    Ok(())
}

/// Open `p` without following a final symlink and make it 0700 (a
/// directory) or 0600 (a regular file) when it is ours; anything else is
/// left alone.
fn tighten(p: &Path, dir: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    if dir {
        flags |= libc::O_DIRECTORY;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(p)?;
    let md = f.metadata()?;
    let mode = if md.is_dir() { 0o700 } else { 0o600 };
    if md.uid() != nix::unistd::geteuid().as_raw()
        || !(md.is_dir() || md.is_file())
        || md.mode() & 0o077 == 0
    {
        return Ok(());
    }
    f.set_permissions(std::fs::Permissions::from_mode((md.mode() & 0o7000) | mode))
}

/// Create sbox's data directory `base` (0700; its parents as usual) and
/// `rel` beneath it, every directory 0700. An existing `base` of ours that
/// others could read — as sbox made it before it made it private — is made
/// private, with the files sbox keeps in it.
pub fn create_data_dirs(base: &Path, rel: &Path) -> Result<()> {
    if let Some(parent) = base.parent() {
        std::fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
    }
    let mut p = base.to_path_buf();
    let mut first = true;
    for c in std::iter::once(None).chain(rel.components().map(Some)) {
        if let Some(c) = c {
            p.push(c);
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if first {
                    make_data_private(&p);
                }
            }
            Err(e) => return Err(Error::io(format!("creating {}", p.display()), e)),
        }
        first = false;
    }
    Ok(())
}

/// Earlier versions of sbox made the data directory, the directories of
/// named sandboxes, their config and log and the trust records readable by
/// everyone: make an existing data directory and those files private (once:
/// nothing is done when the directory is private already).
pub fn make_data_private(data: &Path) {
    let Ok(md) = std::fs::metadata(data) else {
        return;
    };
    if !md.is_dir() || md.mode() & 0o077 == 0 {
        return;
    }
    let _ = tighten(data, true);
    for sub in ["sandboxes", "trust", "runtime"] {
        let d = data.join(sub);
        let _ = tighten(&d, true);
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() && sub == "sandboxes" => {
                    let _ = tighten(&p, true);
                    for f in ["config.json", "log", "log.1"] {
                        let _ = tighten(&p.join(f), false);
                    }
                }
                Ok(t) if t.is_file() => {
                    let _ = tighten(&p, false);
                }
                _ => {}
            }
        }
    }
}

/// Write a file only its owner may read (0600): a new file is created next
/// to `path` (O_EXCL, O_NOFOLLOW), written, and renamed over `path`, so
/// neither a link planted at either name nor a reader sees anything else.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(format!("writing {}", path.display()), e));
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
        let paths = StatePaths {
            root: dir.join("root"),
            upper: dir.join("upper"),
            work: dir.join("work"),
            empty_file: dir.join("empty"),
            hide: dir.join("hide"),
        };
        if take_spare(base, &dir) {
            return Ok(StateDir {
                dir,
                paths,
                keep: false,
            });
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .ctx(|| format!("creating {}", dir.display()))?;
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
        crate::rootfs::apply::make_empty_file(&state.paths.empty_file)?;
        Ok(state)
    }

    /// Do not remove the directory when dropped (a child process owns it).
    pub fn forget(&mut self) {
        self.keep = true;
    }

    /// The run is over: keep the directory as a spare for a later launch
    /// when it is exactly as it was made (nothing written to the layers),
    /// remove it otherwise (through a user namespace with `ids` when files
    /// of subordinate ids may be in it). Must be called single-threaded.
    pub fn finish(mut self, ids: Option<&crate::idmap::IdPlan>) {
        if self.keep {
            return;
        }
        if let Some(base) = self.dir.parent() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let spare = base.join(format!("{SPARE}{}-{nanos:x}", std::process::id()));
            // What the sandbox left (an image root's mount points, files
            // it wrote) goes first, so that the directory can be kept.
            if !pristine(&self.dir) {
                empty_layers(&self.dir);
            }
            if pristine(&self.dir) && std::fs::rename(&self.dir, &spare).is_ok() {
                self.keep = true;
                return;
            }
        }
        if let Some(ids) = ids {
            let _ = remove_tree_mapped(&self.dir, ids);
        }
    }
}

/// Name prefix of a state directory kept for the next launch.
const SPARE: &str = "spare-";
/// How many spare state directories are kept.
const SPARES: usize = 4;
/// Name prefix of a kept whiteout layer (rootfs::apply::hide_layer).
const HIDE: &str = "hide-";
/// How many whiteout layers are kept.
const HIDE_LAYERS: usize = 8;

/// Take a spare state directory as `dest` (renamed, then checked).
fn take_spare(base: &Path, dest: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(base) else {
        return false;
    };
    for e in rd.flatten() {
        let spare = e.file_name().to_str().is_some_and(|n| n.starts_with(SPARE));
        if spare && std::fs::rename(e.path(), dest).is_ok() {
            if pristine(dest) {
                return true;
            }
            let _ = remove_tree(dest);
        }
    }
    false
}

/// Removes what is in the `upper` and `work` directories of the state
/// directory `dir`, as far as the user can (what only a mapped id can
/// remove stays: the directory is then not pristine and goes whole).
/// Symlinks are removed, never followed.
fn empty_layers(dir: &Path) {
    for d in ["upper", "work"] {
        let Ok(rd) = std::fs::read_dir(dir.join(d)) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let _ = match e.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
                _ => std::fs::remove_file(&p),
            };
        }
    }
}

/// A state directory as `StateDir::create` makes it: empty `root`, `upper`
/// and `work` directories (0700, no extended attributes) and the 0000
/// `empty` file, nothing else.
fn pristine(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut names: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
    names.sort();
    if names != ["empty", "root", "upper", "work"] {
        return false;
    }
    let dirs_ok = ["root", "upper", "work"].iter().all(|d| {
        let p = dir.join(d);
        std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir() && m.mode() & 0o7777 == 0o700)
            && std::fs::read_dir(&p).is_ok_and(|mut r| r.next().is_none())
            && !crate::sys::has_xattrs(&p)
    });
    let empty = dir.join("empty");
    dirs_ok
        && std::fs::symlink_metadata(&empty)
            .is_ok_and(|m| m.is_file() && m.len() == 0 && m.mode() & 0o7777 == 0)
        && !crate::sys::has_xattrs(&empty)
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
    let mut spares = 0;
    let mut layers = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name();
        if name.to_str().is_some_and(|n| n.starts_with(".old-")) {
            let _ = remove_tree(&e.path());
            continue;
        }
        if name.to_str().is_some_and(|n| n.starts_with(HIDE)) {
            let used = e.metadata().and_then(|m| m.modified()).ok();
            layers.push((used, e.path()));
            continue;
        }
        if name.to_str().is_some_and(|n| n.starts_with(SPARE)) {
            spares += 1;
            if spares > SPARES {
                let _ = remove_tree(&e.path());
            }
            continue;
        }
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
    // The whiteout layers of kernel overlays: the most recently used, and
    // every one a running sandbox has mounted (it holds a shared lock).
    layers.sort_by_key(|l| std::cmp::Reverse(l.0));
    for (_, p) in layers.into_iter().skip(HIDE_LAYERS) {
        remove_unused_layer(&p);
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
