//! The one rule for host paths that sbox derives from a project, a profile
//! or the command line before it binds, mounts, creates, hashes, reads or
//! writes them (DESIGN.md §6b):
//!
//! - a path declared inside a *place* (the project: `$PWD/out`, a bind
//!   source written under the project) is resolved beneath that place with
//!   `openat2(RESOLVE_BENEATH)`: a symlink may move it around inside, never
//!   out; one that leads out is refused with an error naming the link;
//! - any other path is the user's own (`~/datasets`, `/opt/sdk`): it is
//!   resolved once, following the user's symlinks, and from then on known
//!   by its canonical form, which is what hidden paths and trust compare;
//! - what sbox then acts on is a descriptor opened from the canonical form
//!   with `RESOLVE_NO_SYMLINKS` ([`open_checked`]): if a component became a
//!   symlink since the check, the open fails instead of following it.
//!
//! Inside the new root (init, before the pivot) mount points are found or
//! created with [`mount_point`]: symlinks are resolved as if the new root
//! were `/`, and beneath the project for destinations declared in it.

use crate::sys;
use nix::errno::Errno;
use nix::sys::stat::Mode;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// Why a path was refused.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("{path}: the symbolic link {link} leads out of {place}")]
    Escapes {
        path: PathBuf,
        link: PathBuf,
        place: PathBuf,
    },
    #[error("{path}: {}", .errno.desc())]
    Sys { path: PathBuf, errno: Errno },
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: &'static str },
}

impl PathError {
    fn sys(path: &Path, errno: Errno) -> Self {
        PathError::Sys {
            path: path.to_path_buf(),
            errno,
        }
    }

    /// The errno behind a failed system call, if that was the cause.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            PathError::Sys { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// A path resolved beneath its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Canonical: every existing component real, no symlink, no `..`.
    pub path: PathBuf,
    /// Whether the whole path exists (else its missing tail is appended
    /// lexically to the canonical form of the part that exists).
    pub exists: bool,
}

const NO_LINKS: u64 = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
const BENEATH: u64 = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
const IN_ROOT: u64 = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;

/// `p` relative to `base` when it lies lexically beneath it (or is it).
fn rel_under<'a>(p: &'a Path, base: &Path) -> Option<&'a Path> {
    p.strip_prefix(base).ok()
}

/// Whether an absolute path is already clean: no `.`, `..` or empty parts.
pub fn is_clean_absolute(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !p.as_os_str().as_encoded_bytes().ends_with(b"/.")
}

/// The path the kernel gives for an open descriptor.
pub fn fd_path(fd: BorrowedFd<'_>) -> Result<PathBuf, Errno> {
    nix::fcntl::readlink(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str()).map(PathBuf::from)
}

/// Open a canonical absolute path without following any symlink (O_PATH):
/// the object opened is the one that was checked, or the open fails.
pub fn open_checked(canonical: &Path) -> Result<OwnedFd, PathError> {
    if !is_clean_absolute(canonical) {
        return Err(PathError::Invalid {
            path: canonical.to_path_buf(),
            msg: "not an absolute, normalised path",
        });
    }
    sys::openat2(sys::cwd(), canonical, libc::O_PATH, NO_LINKS).map_err(|e| match e {
        Errno::ELOOP => PathError::Invalid {
            path: canonical.to_path_buf(),
            msg: "a component became a symbolic link while sbox started",
        },
        e => PathError::sys(canonical, e),
    })
}

fn open_place(place: &Path) -> Result<OwnedFd, PathError> {
    let fd = open_checked(place)?;
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| PathError::sys(place, e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(PathError::sys(place, Errno::ENOTDIR));
    }
    Ok(fd)
}

/// Resolve `path` (absolute, clean, lexically beneath `place`) beneath
/// `place` (canonical). Symlinks inside the place are followed as long as
/// they stay in it; one that leads out is an [`PathError::Escapes`] naming
/// it. A missing tail is allowed (see [`Resolved::exists`]).
pub fn resolve_beneath(place: &Path, path: &Path) -> Result<Resolved, PathError> {
    let Some(rel) = rel_under(path, place) else {
        return Err(PathError::Invalid {
            path: path.to_path_buf(),
            msg: "not inside the place it is declared in",
        });
    };
    let base = open_place(place)?;
    // The longest prefix of `rel` that exists, resolved beneath the place.
    let comps: Vec<&std::ffi::OsStr> = rel.iter().collect();
    for n in (0..=comps.len()).rev() {
        let prefix: PathBuf = comps[..n].iter().collect();
        match sys::openat2(base.as_fd(), &prefix, libc::O_PATH, BENEATH) {
            Ok(fd) => {
                let real = fd_path(fd.as_fd()).map_err(|e| PathError::sys(path, e))?;
                if !real.starts_with(place) {
                    // Only possible through a mount the walk crossed.
                    return Err(escape(place, path));
                }
                let mut out = real;
                for c in &comps[n..] {
                    out.push(c);
                }
                return Ok(Resolved {
                    path: out,
                    exists: n == comps.len(),
                });
            }
            Err(Errno::EXDEV) | Err(Errno::ELOOP) => return Err(escape(place, path)),
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(PathError::sys(path, e)),
        }
    }
    Err(PathError::sys(place, Errno::ENOENT))
}

/// Whether `path` (absolute, lexically inside `place`) stays inside it once
/// the host's symlinks are followed.
pub fn stays_beneath(place: &Path, path: &Path) -> bool {
    resolve_beneath(place, path).is_ok()
}

/// The error for a path that leaves `place`, naming the first symlink on
/// the way that leads out (or the path itself when none can be named).
fn escape(place: &Path, path: &Path) -> PathError {
    let mut cur = place.to_path_buf();
    let mut link = path.to_path_buf();
    if let Some(rel) = rel_under(path, place) {
        for c in rel.iter() {
            cur.push(c);
            let Ok(md) = std::fs::symlink_metadata(&cur) else {
                break;
            };
            if md.file_type().is_symlink() {
                let inside = std::fs::canonicalize(&cur).is_ok_and(|t| t.starts_with(place));
                if !inside {
                    link = cur.clone();
                    break;
                }
            }
        }
    }
    PathError::Escapes {
        path: path.to_path_buf(),
        link,
        place: place.to_path_buf(),
    }
}

/// Create the directory `target` (canonical, beneath `place`) and its
/// missing parents, walking from `place` with descriptors and never
/// following a symlink. Returns the directory's descriptor.
pub fn mkdir_beneath(place: &Path, target: &Path, mode: u32) -> Result<OwnedFd, PathError> {
    let Some(rel) = rel_under(target, place) else {
        return Err(PathError::Invalid {
            path: target.to_path_buf(),
            msg: "not inside the place it is declared in",
        });
    };
    let mut cur = open_place(place)?;
    for c in rel.iter() {
        cur =
            step_dir(cur.as_fd(), Path::new(c), NO_LINKS | BENEATH, mode).map_err(|e| match e {
                Errno::ELOOP | Errno::EXDEV => escape(place, target),
                e => PathError::sys(target, e),
            })?;
    }
    Ok(cur)
}

/// Open directory `name` in `dir`, creating it with `mode` when missing.
fn step_dir(dir: BorrowedFd<'_>, name: &Path, resolve: u64, mode: u32) -> Result<OwnedFd, Errno> {
    let flags = libc::O_PATH | libc::O_DIRECTORY;
    match sys::openat2(dir, name, flags, resolve) {
        Err(Errno::ENOENT) => {
            match nix::sys::stat::mkdirat(
                Some(dir.as_raw_fd()),
                name,
                Mode::from_bits_truncate(mode),
            ) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            sys::openat2(dir, name, flags, resolve | NO_LINKS)
        }
        r => r,
    }
}

/// Canonical forms of host paths as far as they exist (the missing tail
/// appended lexically), remembering the directories it resolved: the
/// profiles' hidden paths share a few parents (`~`, `~/.config`), and
/// resolving each from scratch cost a `readlink` per component per path.
#[derive(Debug, Default)]
pub struct CanonCache {
    dirs: std::collections::HashMap<PathBuf, Option<PathBuf>>,
    /// Paths found missing: nothing below them is looked up.
    missing: std::collections::HashSet<PathBuf>,
    /// What `lstat` found at each path it looked at (or, below a missing
    /// directory, did not need to).
    found: std::collections::HashMap<PathBuf, Found>,
}

/// What a host path was when it was looked at (`lstat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Missing,
    Dir,
    File,
    Symlink,
    Other,
}

impl Found {
    /// What a file type (from `lstat` or a directory entry) is.
    pub fn of(ft: std::fs::FileType) -> Found {
        if ft.is_symlink() {
            Found::Symlink
        } else if ft.is_dir() {
            Found::Dir
        } else if ft.is_file() {
            Found::File
        } else {
            Found::Other
        }
    }
}

impl CanonCache {
    /// Like `realpath` for what exists of `p`, the rest appended.
    pub fn prefix(&mut self, p: &Path) -> Option<PathBuf> {
        if !is_clean_absolute(p) {
            return canonical_prefix_slow(p);
        }
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            return Some(PathBuf::from("/"));
        };
        let under = self.dir(parent);
        if self.missing.contains(parent) {
            self.missing.insert(p.to_path_buf());
            self.found.insert(p.to_path_buf(), Found::Missing);
            return under.map(|c| c.join(name));
        }
        match std::fs::symlink_metadata(p) {
            Ok(md) => {
                let found = Found::of(md.file_type());
                self.found.insert(p.to_path_buf(), found);
                match found {
                    Found::Symlink => std::fs::canonicalize(p)
                        .ok()
                        .or_else(|| under.map(|c| c.join(name))),
                    _ => under.map(|c| c.join(name)),
                }
            }
            Err(e) => {
                if e.kind() == std::io::ErrorKind::NotFound {
                    self.missing.insert(p.to_path_buf());
                    self.found.insert(p.to_path_buf(), Found::Missing);
                }
                under.map(|c| c.join(name))
            }
        }
    }

    /// What was found at the paths looked at so far.
    pub fn into_found(self) -> std::collections::HashMap<PathBuf, Found> {
        self.found
    }

    fn dir(&mut self, d: &Path) -> Option<PathBuf> {
        if let Some(v) = self.dirs.get(d) {
            return v.clone();
        }
        let v = self.prefix(d);
        self.dirs.insert(d.to_path_buf(), v.clone());
        v
    }
}

/// The canonical form of what exists of `p`, the rest appended.
pub fn canonical_prefix(p: &Path) -> Option<PathBuf> {
    CanonCache::default().prefix(p)
}

fn canonical_prefix_slow(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = std::fs::canonicalize(p) {
        return Some(c);
    }
    let mut rest = Vec::new();
    let mut cur = p;
    loop {
        let name = cur.file_name()?;
        rest.push(name.to_os_string());
        cur = cur.parent()?;
        if let Ok(mut c) = std::fs::canonicalize(cur) {
            for n in rest.iter().rev() {
                c.push(n);
            }
            return Some(c);
        }
    }
}

/// What kind of mount point [`mount_point`] makes when one is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// Find or create the mount point `dest` (absolute, clean, a path inside
/// the sandbox) in the tree at `root`. Symlinks are resolved as if `root`
/// were `/`; when `place` is given (the project, for destinations declared
/// in it) they must also stay beneath `place`. Missing components are
/// created (directories 0755, a final file 0644 when `kind` is File)
/// without following links. Returns an O_PATH descriptor of it.
pub fn mount_point(
    root: &Path,
    dest: &Path,
    place: Option<&Path>,
    kind: Kind,
) -> Result<OwnedFd, PathError> {
    if !is_clean_absolute(dest) {
        return Err(PathError::Invalid {
            path: dest.to_path_buf(),
            msg: "not an absolute, normalised path",
        });
    }
    let root_fd = sys::openat2(sys::cwd(), root, libc::O_PATH | libc::O_DIRECTORY, 0)
        .map_err(|e| PathError::sys(root, e))?;
    let (base, rel, resolve) = match place.and_then(|p| rel_under(dest, p).map(|r| (p, r))) {
        Some((p, r)) => {
            let p_rel = p.strip_prefix("/").unwrap_or(p);
            let fd = sys::openat2(
                root_fd.as_fd(),
                p_rel,
                libc::O_PATH | libc::O_DIRECTORY,
                IN_ROOT,
            )
            .map_err(|e| PathError::sys(p, e))?;
            (fd, r.to_path_buf(), BENEATH)
        }
        None => (
            root_fd,
            dest.strip_prefix("/").unwrap_or(dest).to_path_buf(),
            IN_ROOT,
        ),
    };
    let fail = |e: Errno| match e {
        Errno::EXDEV | Errno::ELOOP => PathError::Escapes {
            path: dest.to_path_buf(),
            link: dest.to_path_buf(),
            place: place.unwrap_or(Path::new("/")).to_path_buf(),
        },
        e => PathError::sys(dest, e),
    };
    match sys::openat2(base.as_fd(), &rel, libc::O_PATH, resolve) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(fail(e)),
    }
    // Longest existing prefix, then create the rest without following links.
    let comps: Vec<&std::ffi::OsStr> = rel.iter().collect();
    let mut n = comps.len();
    let mut cur = loop {
        if n == 0 {
            break base;
        }
        n -= 1;
        let prefix: PathBuf = comps[..n].iter().collect();
        match sys::openat2(
            base.as_fd(),
            &prefix,
            libc::O_PATH | libc::O_DIRECTORY,
            resolve,
        ) {
            Ok(fd) => break fd,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(fail(e)),
        }
    };
    let last = comps.len().saturating_sub(1);
    for (i, c) in comps.iter().enumerate().skip(n) {
        let name = Path::new(c);
        if i == last && kind == Kind::File {
            match nix::fcntl::openat(
                Some(cur.as_raw_fd()),
                name,
                nix::fcntl::OFlag::O_CREAT
                    | nix::fcntl::OFlag::O_EXCL
                    | nix::fcntl::OFlag::O_WRONLY
                    | nix::fcntl::OFlag::O_NOFOLLOW
                    | nix::fcntl::OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            ) {
                Ok(fd) => drop(nix::unistd::close(fd)),
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(fail(e)),
            }
            return sys::openat2(cur.as_fd(), name, libc::O_PATH, NO_LINKS | BENEATH).map_err(fail);
        }
        cur = step_dir(cur.as_fd(), name, NO_LINKS | BENEATH, 0o755).map_err(fail)?;
    }
    Ok(cur)
}

/// Bind the object `src` refers to (with every mount below it) onto the
/// object `dest` refers to, read-only (recursively) when asked. Both are
/// descriptors: nothing is looked up by path again.
pub fn bind_fds(src: BorrowedFd<'_>, dest: BorrowedFd<'_>, readonly: bool) -> Result<(), Errno> {
    let tree = sys::open_tree_clone(src, true)?;
    if readonly {
        sys::mount_tree_readonly(tree.as_fd())?;
    }
    sys::move_mount_fd(tree.as_fd(), dest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sbox-hostpath-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::canonicalize(&d).expect("canon")
    }

    #[test]
    fn the_cache_remembers_what_it_found() {
        let d = tmp("found");
        std::fs::create_dir(d.join("dir")).expect("mkdir");
        std::fs::write(d.join("dir/file"), b"x").expect("write");
        symlink(d.join("dir"), d.join("link")).expect("symlink");
        let mut c = CanonCache::default();
        for p in ["dir/file", "link", "gone/below", "dir/none"] {
            c.prefix(&d.join(p));
        }
        let found = c.into_found();
        assert_eq!(found.get(&d.join("dir")), Some(&Found::Dir));
        assert_eq!(found.get(&d.join("dir/file")), Some(&Found::File));
        assert_eq!(found.get(&d.join("link")), Some(&Found::Symlink));
        assert_eq!(found.get(&d.join("gone")), Some(&Found::Missing));
        // Below a missing directory: known missing without a look.
        assert_eq!(found.get(&d.join("gone/below")), Some(&Found::Missing));
        assert_eq!(found.get(&d.join("dir/none")), Some(&Found::Missing));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn links_inside_are_followed_links_out_are_named() {
        let d = tmp("basic");
        let p = d.join("proj");
        std::fs::create_dir_all(p.join("a/b")).expect("mkdir");
        symlink("a/b", p.join("in")).expect("ln");
        symlink("..", p.join("up")).expect("ln");
        symlink("/etc", p.join("abs")).expect("ln");
        let r = resolve_beneath(&p, &p.join("in")).expect("inside");
        assert_eq!(r.path, p.join("a/b"));
        assert!(r.exists);
        let r = resolve_beneath(&p, &p.join("in/new/x")).expect("missing tail");
        assert_eq!(r.path, p.join("a/b/new/x"));
        assert!(!r.exists);
        for bad in ["up", "abs", "up/proj/a", "abs/passwd"] {
            match resolve_beneath(&p, &p.join(bad)) {
                Err(PathError::Escapes { link, .. }) => {
                    assert_eq!(link, p.join(bad.split('/').next().unwrap_or(bad)), "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn mkdir_beneath_never_follows_links() {
        let d = tmp("mkdir");
        let p = d.join("proj");
        std::fs::create_dir_all(&p).expect("mkdir");
        std::fs::create_dir_all(d.join("outside")).expect("mkdir");
        symlink("../outside", p.join("out")).expect("ln");
        assert!(mkdir_beneath(&p, &p.join("out/x"), 0o755).is_err());
        assert!(!d.join("outside/x").exists());
        mkdir_beneath(&p, &p.join("real/deep"), 0o755).expect("create");
        assert!(p.join("real/deep").is_dir());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn mount_points_stay_in_the_root_and_the_place() {
        let d = tmp("mp");
        let root = d.join("root");
        let proj = root.join("p");
        std::fs::create_dir_all(&proj).expect("mkdir");
        symlink("/", proj.join("toroot")).expect("ln");
        symlink("..", proj.join("up")).expect("ln");
        // Beneath the project: a link out is refused, nothing is created.
        assert!(mount_point(
            &root,
            Path::new("/p/up/x"),
            Some(Path::new("/p")),
            Kind::Dir
        )
        .is_err());
        assert!(!root.join("x").exists());
        // Without a place, links resolve inside the root, never on the host.
        let fd =
            mount_point(&root, Path::new("/p/toroot/made/here"), None, Kind::Dir).expect("in root");
        assert_eq!(fd_path(fd.as_fd()).expect("path"), root.join("made/here"));
        let fd =
            mount_point(&root, Path::new("/p/f"), Some(Path::new("/p")), Kind::File).expect("file");
        assert_eq!(fd_path(fd.as_fd()).expect("path"), proj.join("f"));
        assert!(proj.join("f").is_file());
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Random trees of relative and absolute symlinks, `..` and missing
    /// components: whatever resolve_beneath accepts lies inside the place.
    #[test]
    fn property_resolution_never_leaves_the_place() {
        let d = tmp("prop");
        let place = d.join("place");
        let mut seed: u64 = 0x5eed_1234_abcd_0001;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let names = ["a", "b", "c", "..", ".", "zz"];
        for round in 0..60 {
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(place.join("a/b")).expect("mkdir");
            std::fs::create_dir_all(d.join("outside/a")).expect("mkdir");
            for i in 0..8 {
                let mut target = String::new();
                if rnd(3) == 0 {
                    target.push_str(["/", "/etc/", &format!("{}/", d.display())][rnd(3) as usize]);
                }
                for _ in 0..=rnd(4) {
                    target.push_str(names[rnd(names.len() as u64) as usize]);
                    target.push('/');
                }
                let dir = ["", "a", "a/b"][rnd(3) as usize];
                let _ = symlink(&target, place.join(dir).join(format!("l{i}")));
            }
            for _ in 0..40 {
                let mut rel = PathBuf::new();
                for _ in 0..=rnd(4) {
                    let pick = rnd(10);
                    if pick < 4 {
                        rel.push(format!("l{}", rnd(8)));
                    } else {
                        rel.push(["a", "b", "zz", "missing"][rnd(4) as usize]);
                    }
                }
                let path = place.join(&rel);
                if let Ok(r) = resolve_beneath(&place, &path) {
                    assert!(
                        r.path.starts_with(&place),
                        "round {round}: {} resolved to {}",
                        path.display(),
                        r.path.display()
                    );
                    if r.exists {
                        let real = std::fs::canonicalize(&path).expect("exists");
                        assert_eq!(real, r.path, "round {round}: {}", path.display());
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
