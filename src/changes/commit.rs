//! `sbox commit`: chosen changes of an upper layer checked against the
//! host (nothing written yet), then copied onto it.
//!
//! Only the directories leading to a path the user names are resolved the
//! host's way, once; below, both sides are walked from directory fds
//! without following a symlink. A file is read through an fd first checked
//! to be a regular file (a fifo, socket or device is never opened) and
//! written to an unnamed `O_TMPFILE` (or a random name made `O_EXCL`) that
//! is renamed into place in the same directory fd.

use super::{errno, escape, file_type, list, mode_string, names, show, Change, Kind};
use crate::error::{Error, Result};
use crate::rootfs::overlay::sys;
use crate::rootfs::upper::{self, Ids};
use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// What `sbox commit` does with one change, decided before anything is
/// written.
#[derive(Debug)]
pub struct Step {
    pub change: Change,
    /// The type and mode the host will have (for `D`, what it has now).
    pub mode: Option<u32>,
    /// The target of a symlink.
    pub link: Option<Vec<u8>>,
    /// Not copied: a fifo, socket or device node.
    pub skipped: Option<&'static str>,
    /// The sandbox's mode had setuid/setgid bits, which are not copied.
    pub dropped: bool,
    /// Permission bits to give a directory once everything below is done.
    chmod: Option<u32>,
    target: usize,
}

impl Step {
    /// The line `sbox commit` prints for it (names escaped).
    pub fn line(&self) -> String {
        let letter = match self.change.kind {
            Kind::A => 'A',
            Kind::C => 'C',
            Kind::D => 'D',
        };
        let mode = self
            .mode
            .map(mode_string)
            .unwrap_or_else(|| "??????????".into());
        let mut s = format!("{letter} {mode} {}", show(&self.change.path));
        if let Some(l) = &self.link {
            s.push_str(" -> ");
            s.push_str(&escape(l));
        }
        if let Some(what) = self.skipped {
            s.push_str(&format!("  (skipped: a {what} is not copied)"));
        }
        if self.dropped {
            s.push_str("  (setuid/setgid bits dropped)");
        }
        s
    }
}

/// A path named on the command line: its existing directories resolved
/// once, the host's way (symlinks followed).
struct Target {
    named: PathBuf,
    /// The deepest existing directory leading to `named`.
    anchor: OwnedFd,
    /// Its real path.
    real: PathBuf,
    /// How many components of `named` (the root included) it stands for.
    depth: usize,
}

impl Target {
    fn resolve(named: &Path) -> Result<Target> {
        let comps: Vec<Component<'_>> = named.components().collect();
        // PATH itself is never followed: start from its parent.
        let mut depth = comps.len().saturating_sub(1).max(1);
        loop {
            let head: PathBuf = comps[..depth].iter().collect();
            match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                .open(&head)
            {
                Ok(f) => {
                    let anchor = OwnedFd::from(f);
                    let real = std::fs::read_link(format!("/proc/self/fd/{}", anchor.as_raw_fd()))
                        .map_err(|e| host_err(&head, "resolving", &e))?;
                    return Ok(Target {
                        named: named.to_path_buf(),
                        anchor,
                        real,
                        depth,
                    });
                }
                Err(e) if depth > 1 && matches!(errno(&e), libc::ENOENT | libc::ENOTDIR) => {
                    depth -= 1
                }
                Err(e) => return Err(host_err(&head, "resolving", &e)),
            }
        }
    }

    /// Where `path` (below `named`) is on the host, by the real path.
    fn real_of(&self, path: &Path) -> PathBuf {
        let mut p = self.real.clone();
        p.extend(path.components().skip(self.depth));
        p
    }
}

fn host_err(p: &Path, what: &str, e: &io::Error) -> Error {
    Error::Host(format!(
        "{}: {what}: {}",
        show(p),
        crate::error::io_reason(e)
    ))
}

fn cstr(s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| Error::Usage(format!("{s:?}: a NUL in a name")))
}

/// A chosen set of changes, checked against the host, ready to be applied.
pub struct Commit {
    upper: OwnedFd,
    targets: Vec<Target>,
    hidden: Vec<PathBuf>,
    /// (device, inode) of the hidden paths that exist.
    hidden_ids: HashSet<(u64, u64)>,
    pub steps: Vec<Step>,
    /// The PATHs whose directories the host resolves elsewhere (symlinks),
    /// with where they go: worth showing with the steps.
    pub redirected: Vec<(PathBuf, PathBuf)>,
}

/// While checking (nothing written yet) or while applying.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Check,
    Apply,
}

impl Phase {
    fn refuse(self, p: &Path, why: &str) -> Error {
        Error::Usage(format!(
            "{}: {why}; {}",
            show(p),
            match self {
                Phase::Check => "nothing was committed",
                Phase::Apply => "stopped there, the changes listed before it are committed",
            }
        ))
    }
}

const LINK: &str = "a symlink on the host; sbox follows none at or below a PATH you name";

impl Commit {
    /// The changes of `upper` under `targets` (clean absolute paths), with
    /// every refusal found before anything is written: a host path the
    /// profile hides (`hidden`, compared as given and as the host resolves
    /// them, so that a host symlink into a hidden directory does not let a
    /// change in), a symlink or a non-directory on the host where a
    /// directory is needed. `ids`: how the sandbox showed host ids.
    pub fn plan(
        upper: &Path,
        targets: &[PathBuf],
        hidden: &[PathBuf],
        ids: &Ids,
    ) -> Result<Commit> {
        let upper_fd = sys::open_dir_path(upper).map_err(|e| host_err(upper, "opening", &e))?;
        let hidden: Vec<PathBuf> = hidden
            .iter()
            .flat_map(|h| [h.clone(), resolve_existing(h)])
            .collect();
        let mut c = Commit {
            upper: upper_fd,
            targets: Vec::new(),
            hidden: hidden.clone(),
            hidden_ids: hidden
                .iter()
                .filter_map(|h| std::fs::metadata(h).ok())
                .map(|m| {
                    use std::os::unix::fs::MetadataExt;
                    (m.dev(), m.ino())
                })
                .collect(),
            steps: Vec::new(),
            redirected: Vec::new(),
        };
        for t in targets {
            let target = Target::resolve(t)?;
            for p in [t.clone(), target.real_of(t)] {
                if let Some(h) = c
                    .hidden
                    .iter()
                    .find(|h| p.starts_with(h) || h.starts_with(&p))
                {
                    return Err(Error::Usage(format!(
                        "{}: the profile hides {}; sbox will not write there",
                        show(t),
                        show(h)
                    )));
                }
            }
            let named_dir: PathBuf = t.components().take(target.depth).collect();
            if named_dir != target.real {
                c.redirected.push((t.clone(), target.real_of(t)));
            }
            c.targets.push(target);
        }
        for change in list(upper, Path::new("/"), ids) {
            // The most precise PATH that holds it.
            let Some((ti, _)) = c
                .targets
                .iter()
                .enumerate()
                .filter(|(_, t)| change.path.starts_with(&t.named))
                .max_by_key(|(_, t)| t.named.components().count())
            else {
                continue;
            };
            let step = c.check(change, ti)?;
            c.steps.push(step);
        }
        if c.steps.is_empty() {
            return Err(Error::Usage("no changes under the given paths".into()));
        }
        Ok(c)
    }

    fn check(&self, change: Change, ti: usize) -> Result<Step> {
        let t = &self.targets[ti];
        let real = t.real_of(&change.path);
        if let Some(h) = self
            .hidden
            .iter()
            .find(|h| real.starts_with(h) || h.starts_with(&real))
        {
            return Err(Error::Usage(format!(
                "{}: the host resolves it into {}, which the profile hides; sbox will not write there",
                show(&change.path),
                show(h)
            )));
        }
        let place = self.locate(t, &change.path, Phase::Check, false)?;
        let host = match &place {
            Some((dir, name)) => match sys::fstatat(dir.as_fd(), name) {
                Ok(st) => Some(st),
                Err(e) if errno(&e) == libc::ENOENT => None,
                Err(e) => return Err(host_err(&change.path, "looking it up", &e)),
            },
            None => None,
        };
        let mut step = Step {
            mode: None,
            link: None,
            skipped: None,
            dropped: false,
            chmod: None,
            target: ti,
            change,
        };
        let path = step.change.path.clone();
        if step.change.kind == Kind::D {
            step.mode = host.map(|st| st.st_mode);
            return Ok(step);
        }
        let ufd = self.upper_entry(&path)?;
        let st = sys::fstat(ufd.as_fd()).map_err(|e| host_err(&path, "reading the change", &e))?;
        let host_type = host.as_ref().map(file_type);
        let presented = upper::read_override(ufd.as_fd()).map(|o| o.mode);
        let perm = presented.unwrap_or(st.st_mode & 0o7777);
        match file_type(&st) {
            libc::S_IFDIR => {
                match host_type {
                    None | Some(libc::S_IFDIR) => {}
                    Some(libc::S_IFLNK) => return Err(Phase::Check.refuse(&path, LINK)),
                    Some(_) => {
                        return Err(Phase::Check.refuse(
                            &path,
                            "a file on the host where the sandbox has a directory; sbox does not replace it",
                        ))
                    }
                }
                step.dropped = perm & 0o6000 != 0;
                // Without an override the upper directory's own mode is
                // the one shown inside: the host's unless chmodded there.
                step.chmod = match (host.as_ref(), presented) {
                    (None, _) => Some(perm & 0o1777),
                    (Some(_), Some(p)) => Some(p & 0o1777),
                    (Some(h), None) if perm != h.st_mode & 0o7777 => Some(perm & 0o1777),
                    (Some(_), None) => None,
                };
                step.mode = Some(
                    libc::S_IFDIR | step.chmod.or(host.map(|h| h.st_mode & 0o7777)).unwrap_or(0),
                );
            }
            kind @ (libc::S_IFREG | libc::S_IFLNK) => {
                if host_type == Some(libc::S_IFDIR) {
                    return Err(Phase::Check.refuse(
                        &path,
                        "a directory on the host where the sandbox has a file; sbox does not replace it",
                    ));
                }
                if kind == libc::S_IFREG {
                    // Readable now, so that applying does not stop on it.
                    reopen(ufd.as_fd()).map_err(|e| host_err(&path, "reading the change", &e))?;
                    step.dropped = perm & 0o6000 != 0;
                    step.mode = Some(libc::S_IFREG | (perm & 0o777));
                } else {
                    step.mode = Some(st.st_mode);
                    step.link = Some(
                        sys::readlinkat(ufd.as_fd(), c"")
                            .map_err(|e| host_err(&path, "reading the link", &e))?,
                    );
                }
            }
            kind => {
                step.mode = Some(kind | perm);
                step.skipped = Some(match kind {
                    libc::S_IFIFO => "fifo",
                    libc::S_IFSOCK => "socket",
                    _ => "device node",
                });
            }
        }
        Ok(step)
    }

    /// The change at `path` in the upper layer, as an `O_PATH` fd; no
    /// symlink followed.
    fn upper_entry(&self, path: &Path) -> Result<OwnedFd> {
        let rel = path.strip_prefix("/").unwrap_or(path);
        sys::open_beneath(
            self.upper.as_fd(),
            rel.as_os_str().as_bytes(),
            libc::O_PATH,
            0,
        )
        .map_err(|e| host_err(path, "reading the change", &e))
    }

    /// The host directory holding `path` (an fd walked to without following
    /// any symlink from the target's anchor) and the last name. With
    /// `create`, missing directories on the way are made; without, `None`
    /// when one is missing.
    fn locate(
        &self,
        t: &Target,
        path: &Path,
        phase: Phase,
        create: bool,
    ) -> Result<Option<(OwnedFd, CString)>> {
        let comps: Vec<&OsStr> = path
            .components()
            .skip(t.depth)
            .map(|c| c.as_os_str())
            .collect();
        let Some((last, dirs)) = comps.split_last() else {
            return Err(Error::Host(format!(
                "{}: not below {}",
                show(path),
                show(&t.named)
            )));
        };
        let mut shown: PathBuf = path.components().take(t.depth).collect();
        let mut cur = t
            .anchor
            .try_clone()
            .map_err(|e| host_err(&shown, "opening", &e))?;
        self.not_hidden(cur.as_fd(), &shown, phase)?;
        for d in dirs {
            shown.push(d);
            let name = cstr(d)?;
            match sys::fstatat(cur.as_fd(), &name) {
                Ok(st) if file_type(&st) == libc::S_IFLNK => return Err(phase.refuse(&shown, LINK)),
                Ok(st) if file_type(&st) != libc::S_IFDIR => {
                    return Err(phase.refuse(&shown, "not a directory on the host"))
                }
                Ok(_) => {}
                Err(e) if errno(&e) == libc::ENOENT && !create => return Ok(None),
                Err(e) if errno(&e) == libc::ENOENT => {
                    match sys::mkdirat(cur.as_fd(), &name, 0o777) {
                        Err(e) if errno(&e) != libc::EEXIST => {
                            return Err(host_err(&shown, "creating", &e))
                        }
                        _ => {}
                    }
                }
                Err(e) => return Err(host_err(&shown, "looking it up", &e)),
            }
            let next = sys::open_beneath(
                cur.as_fd(),
                name.to_bytes(),
                libc::O_PATH | libc::O_DIRECTORY,
                0,
            )
            .map_err(|e| match errno(&e) {
                libc::ELOOP | libc::ENOTDIR => phase.refuse(&shown, LINK),
                _ => host_err(&shown, "opening", &e),
            })?;
            self.not_hidden(next.as_fd(), &shown, phase)?;
            cur = next;
        }
        Ok(Some((cur, cstr(last)?)))
    }

    fn not_hidden(&self, dir: BorrowedFd<'_>, shown: &Path, phase: Phase) -> Result<()> {
        let st = sys::fstat(dir).map_err(|e| host_err(shown, "looking it up", &e))?;
        if self.hidden_ids.contains(&(st.st_dev, st.st_ino)) {
            return Err(phase.refuse(shown, "a path the profile hides"));
        }
        Ok(())
    }

    /// Copy the changes onto the host, in order (a directory before what is
    /// in it); each file replaced whole, by a rename. Stops at the first
    /// failure, leaving no temporary behind.
    pub fn apply(&self) -> Result<()> {
        for s in &self.steps {
            if s.skipped.is_some() {
                continue;
            }
            let t = &self.targets[s.target];
            let path = &s.change.path;
            let create = s.change.kind != Kind::D;
            let Some((dir, name)) = self.locate(t, path, Phase::Apply, create)? else {
                continue;
            };
            let dir = dir.as_fd();
            let host = match sys::fstatat(dir, &name) {
                Ok(st) => Some(file_type(&st)),
                Err(e) if errno(&e) == libc::ENOENT => None,
                Err(e) => return Err(host_err(path, "looking it up", &e)),
            };
            if s.change.kind == Kind::D {
                match host {
                    None => {}
                    Some(libc::S_IFDIR) => self.remove_tree(dir, &name, path)?,
                    Some(_) => {
                        sys::unlinkat(dir, &name, 0).map_err(|e| host_err(path, "removing", &e))?
                    }
                }
                continue;
            }
            match s.mode.map(|m| m & libc::S_IFMT) {
                Some(libc::S_IFDIR) => match host {
                    None => match sys::mkdirat(dir, &name, 0o700) {
                        Err(e) if errno(&e) != libc::EEXIST => {
                            return Err(host_err(path, "creating", &e))
                        }
                        _ => self.check_dir(dir, &name, path)?,
                    },
                    Some(libc::S_IFDIR) => self.check_dir(dir, &name, path)?,
                    Some(libc::S_IFLNK) => return Err(Phase::Apply.refuse(path, LINK)),
                    Some(_) => return Err(Phase::Apply.refuse(path, "not a directory on the host")),
                },
                Some(libc::S_IFREG) => {
                    let src = self.upper_entry(path)?;
                    let mode = s.mode.unwrap_or(0) & 0o777;
                    copy_file(src.as_fd(), dir, &name, mode)
                        .map_err(|e| host_err(path, "copying", &e))?
                }
                Some(libc::S_IFLNK) => {
                    let target = s.link.as_deref().unwrap_or_default();
                    make_link(target, dir, &name).map_err(|e| host_err(path, "linking", &e))?
                }
                _ => {}
            }
        }
        // Modes of directories last, deepest first (one without write
        // permission is still filled).
        for s in self.steps.iter().rev() {
            let Some(mode) = s.chmod else {
                continue;
            };
            let path = &s.change.path;
            let t = &self.targets[s.target];
            if let Some((dir, name)) = self.locate(t, path, Phase::Apply, false)? {
                let fd = sys::open_beneath(
                    dir.as_fd(),
                    name.to_bytes(),
                    libc::O_PATH | libc::O_DIRECTORY,
                    0,
                )
                .map_err(|e| host_err(path, "opening", &e))?;
                std::fs::set_permissions(
                    format!("/proc/self/fd/{}", fd.as_raw_fd()),
                    std::fs::Permissions::from_mode(mode),
                )
                .map_err(|e| host_err(path, "changing the mode", &e))?;
            }
        }
        Ok(())
    }

    /// `name` in `dir` is a directory reached without a symlink, and not a
    /// hidden one.
    fn check_dir(&self, dir: BorrowedFd<'_>, name: &CStr, path: &Path) -> Result<()> {
        let fd = sys::open_beneath(dir, name.to_bytes(), libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(|e| match errno(&e) {
                libc::ELOOP | libc::ENOTDIR => Phase::Apply.refuse(path, LINK),
                _ => host_err(path, "opening", &e),
            })?;
        self.not_hidden(fd.as_fd(), path, Phase::Apply)
    }

    /// Removes the directory `name` of `dir` and everything in it, without
    /// following symlinks.
    fn remove_tree(&self, dir: BorrowedFd<'_>, name: &CStr, path: &Path) -> Result<()> {
        let fd = sys::open_beneath(dir, name.to_bytes(), libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(|e| host_err(path, "opening", &e))?;
        self.not_hidden(fd.as_fd(), path, Phase::Apply)?;
        for n in names(fd.as_fd()).map_err(|e| host_err(path, "reading", &e))? {
            let p = path.join(OsStr::from_bytes(n.to_bytes()));
            let st = sys::fstatat(fd.as_fd(), &n).map_err(|e| host_err(&p, "looking it up", &e))?;
            if file_type(&st) == libc::S_IFDIR {
                self.remove_tree(fd.as_fd(), &n, &p)?;
            } else {
                sys::unlinkat(fd.as_fd(), &n, 0).map_err(|e| host_err(&p, "removing", &e))?;
            }
        }
        sys::unlinkat(dir, name, libc::AT_REMOVEDIR).map_err(|e| host_err(path, "removing", &e))
    }
}

/// `p` with its longest existing prefix resolved by the host (symlinks
/// followed) and the rest appended.
fn resolve_existing(p: &Path) -> PathBuf {
    let mut head = p.to_path_buf();
    let mut tail = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&head) {
            let mut out = real;
            for part in tail.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (head.file_name().map(|n| n.to_os_string()), head.parent()) {
            (Some(name), Some(parent)) => {
                tail.push(name);
                head = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// A fresh name for a temporary in a directory the sandbox may write:
/// made with `O_EXCL` (or `linkat`/`symlinkat`, which never replace), so
/// guessing it gains nothing.
fn temp_name() -> CString {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    // Hex digits only: no NUL.
    CString::new(format!(".sbox-commit-{:016x}", h.finish())).unwrap_or_default()
}

/// A temporary that is removed unless kept.
struct Temp<'a> {
    dir: BorrowedFd<'a>,
    name: Option<CString>,
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        if let Some(n) = &self.name {
            let _ = sys::unlinkat(self.dir, n, 0);
        }
    }
}

/// Tries `make` with fresh temporary names until one is free.
fn with_temp_name(mut make: impl FnMut(&CStr) -> io::Result<()>) -> io::Result<CString> {
    for _ in 0..32 {
        let n = temp_name();
        match make(&n) {
            Ok(()) => return Ok(n),
            Err(e) if errno(&e) == libc::EEXIST => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::from_raw_os_error(libc::EEXIST))
}

/// The file of the `O_PATH` fd `fd`, opened for reading: the same inode
/// (so, once checked to be a regular file, never a fifo or a device).
fn reopen(fd: BorrowedFd<'_>) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// A new empty file with a fresh name in `dir` (where there is no
/// `O_TMPFILE`), made `O_EXCL | O_NOFOLLOW`, mode 0600.
fn named_temp(dir: BorrowedFd<'_>) -> io::Result<(std::fs::File, CString)> {
    let mut file = None;
    let n = with_temp_name(|n| {
        let fd = sys::open_beneath(
            dir,
            n.to_bytes(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            0o600,
        )?;
        file = Some(std::fs::File::from(fd));
        Ok(())
    })?;
    let file = file.ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))?;
    Ok((file, n))
}

/// Copies the regular file `src` (an `O_PATH` fd) to `name` in `dir`
/// with permission bits `mode` (& 0777): into an unnamed temporary, linked under a
/// fresh name, renamed over `name`.
fn copy_file(src: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    let st = sys::fstat(src)?;
    if file_type(&st) != libc::S_IFREG {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut from = reopen(src)?;
    let mut temp = Temp { dir, name: None };
    let mut to = match sys::open_beneath(dir, b"", libc::O_TMPFILE | libc::O_WRONLY, 0) {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) if matches!(errno(&e), libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL) => {
            let (file, n) = named_temp(dir)?;
            temp.name = Some(n);
            file
        }
        Err(e) => return Err(e),
    };
    io::copy(&mut from, &mut to)?;
    // Never a setuid, setgid or sticky bit on a file.
    to.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))?;
    to.sync_all()?;
    if temp.name.is_none() {
        let proc = CString::new(format!("/proc/self/fd/{}", to.as_raw_fd()))?;
        temp.name = Some(with_temp_name(|n| {
            nix::unistd::linkat(
                None,
                proc.as_c_str(),
                Some(dir.as_raw_fd()),
                n,
                nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
            )
            .map_err(io::Error::from)
        })?);
    }
    let tmp = temp.name.clone().unwrap_or_default();
    sys::renameat2(dir, &tmp, dir, name, 0)?;
    temp.name = None;
    // What is now at `name` must be what was written.
    let ours = sys::fstat(to.as_fd())?;
    let there = sys::fstatat(dir, name)?;
    if (ours.st_dev, ours.st_ino) != (there.st_dev, there.st_ino) {
        return Err(io::Error::other("replaced on the host during the commit"));
    }
    Ok(())
}

/// Makes `name` in `dir` a symlink to `target`, replacing what is there.
fn make_link(target: &[u8], dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let target = sys::cstr(target)?;
    let mut temp = Temp { dir, name: None };
    temp.name = Some(with_temp_name(|n| sys::symlinkat(&target, dir, n))?);
    let tmp = temp.name.clone().unwrap_or_default();
    sys::renameat2(dir, &tmp, dir, name, 0)?;
    temp.name = None;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name` in `dir` as an `O_PATH` fd, not following a symlink.
    fn open_entry(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
        sys::open_beneath(dir, name.to_bytes(), libc::O_PATH, 0)
    }

    #[test]
    fn files_are_replaced_whole_without_following_links() {
        let base = std::env::temp_dir().join(format!("sbox-copy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("dst")).expect("mkdir");
        std::fs::write(base.join("src"), "new").expect("w");
        std::fs::write(base.join("victim"), "victim").expect("w");
        std::os::unix::fs::symlink(base.join("victim"), base.join("dst/f")).expect("ln");
        let dst = sys::open_dir_path(&base.join("dst")).expect("open");
        let top = sys::open_dir_path(&base).expect("open");
        let src = open_entry(top.as_fd(), c"src").expect("open");
        copy_file(src.as_fd(), dst.as_fd(), c"f", 0o4755).expect("copy");
        let md = std::fs::symlink_metadata(base.join("dst/f")).expect("stat");
        assert!(md.is_file());
        assert_eq!(md.permissions().mode() & 0o7777, 0o755);
        assert_eq!(
            std::fs::read_to_string(base.join("dst/f")).expect("r"),
            "new"
        );
        assert_eq!(
            std::fs::read_to_string(base.join("victim")).expect("r"),
            "victim"
        );
        // The way without O_TMPFILE: a fresh name each time, never a link.
        let (_, a) = named_temp(dst.as_fd()).expect("temp");
        let (_, b) = named_temp(dst.as_fd()).expect("temp");
        assert_ne!(a, b);
        for n in [&a, &b] {
            let p = base.join("dst").join(OsStr::from_bytes(n.to_bytes()));
            assert!(std::fs::symlink_metadata(&p).expect("made").is_file());
            drop(Temp {
                dir: dst.as_fd(),
                name: Some(n.clone()),
            });
            assert!(std::fs::symlink_metadata(&p).is_err(), "removed");
        }
        // Not a regular file: refused, nothing made.
        let fifo = base.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let f = open_entry(top.as_fd(), c"fifo").expect("open");
        assert!(copy_file(f.as_fd(), dst.as_fd(), c"g", 0o644).is_err());
        assert_eq!(std::fs::read_dir(base.join("dst")).expect("ls").count(), 1);
        std::fs::remove_dir_all(&base).ok();
    }
}
