//! What a sandbox changed outside its bound directories, read from its
//! upper layer (the kernel overlayfs `userxattr` layout: 0/0 character
//! devices or `user.overlay.whiteout` files for deletions,
//! `user.overlay.opaque` for replaced directories), like `podman diff`;
//! and copying chosen changes onto the host (`sbox commit`).
//!
//! The upper layer is written by the sandbox, and so may be any host
//! directory it could reach (its project, another sandbox's project): both
//! sides are walked one component at a time from directory fds, never
//! following a symlink (`openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`, `*at` calls with `AT_SYMLINK_NOFOLLOW`). Only the
//! directories leading to a path the user names are resolved the host's
//! way, once. A file is read through an fd first checked to be a regular
//! file (a fifo, socket or device is never opened) and written to an
//! unnamed `O_TMPFILE` (or a random name made `O_EXCL`) that is renamed
//! into place in the same directory fd.

use crate::error::{Error, Result};
use crate::rootfs::overlay::sys;
use serde::Serialize;
use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    /// Added: not on the host.
    A,
    /// Changed: on the host, different inside.
    C,
    /// Deleted inside.
    D,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub kind: Kind,
    /// The path inside the sandbox (= on the host). In JSON: a string when
    /// it is valid UTF-8, else the array of its bytes.
    #[serde(serialize_with = "path_json")]
    pub path: PathBuf,
}

/// A path as JSON, losslessly: the string when it is UTF-8 (JSON escapes
/// control characters itself), else its bytes.
pub(crate) fn path_json<S: serde::Serializer>(
    p: &Path,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match p.to_str() {
        Some(t) => s.serialize_str(t),
        None => s.collect_seq(p.as_os_str().as_bytes()),
    }
}

/// `bytes` fit for a terminal, like `ls -b`: backslash doubled, `\a \b \t
/// \n \v \f \r` as such, other control characters, invisible formatting
/// characters (bidi overrides, zero-width ones) and bytes that are not
/// UTF-8 as `\ooo` (octal, one per byte); printable text as it is.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let octal = |out: &mut String, b: u8| out.push_str(&format!("\\{b:03o}"));
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\x0b' => out.push_str("\\v"),
                '\x0c' => out.push_str("\\f"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() || invisible(c) => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        octal(&mut out, b);
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            octal(&mut out, *b);
        }
    }
    out
}

/// Format characters that change how the text around them shows.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}' | '\u{feff}'
        | '\u{fff9}'..='\u{fffb}')
}

/// A path fit for a terminal (see [`escape`]).
pub fn show(p: &Path) -> String {
    escape(p.as_os_str().as_bytes())
}

/// JSON text with the characters a terminal acts on that serde_json
/// leaves as they are (DEL, C1 controls, invisible formatting) written as
/// `\uXXXX`: they can only be inside strings, which decode the same.
pub fn json_for_terminal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        // Below U+0020 serde_json escapes what is in strings: the rest is
        // the layout's own whitespace.
        if (c.is_control() && c >= '\u{7f}') || invisible(c) {
            // All of them are in the basic plane: one escape each.
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

const WHITEOUT: &CStr = c"user.overlay.whiteout";
const OPAQUE: &CStr = c"user.overlay.opaque";
const OVERRIDE: &CStr = c"user.containers.override_stat";

fn file_type(st: &libc::stat64) -> u32 {
    st.st_mode & libc::S_IFMT
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// The names in the directory `dir` (an fd of any kind), without `.`
/// and `..`.
fn names(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let fd = sys::open_beneath(dir, b"", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut d = nix::dir::Dir::from(fd).map_err(io::Error::from)?;
    let mut v = Vec::new();
    for e in d.iter() {
        let e = e.map_err(io::Error::from)?;
        let n = e.file_name();
        if n != c"." && n != c".." {
            v.push(n.to_owned());
        }
    }
    Ok(v)
}

/// `name` in `dir` as an `O_PATH` fd, not following a symlink.
fn open_entry(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    sys::open_beneath(dir, name.to_bytes(), libc::O_PATH, 0)
}

fn is_whiteout(dir: BorrowedFd<'_>, name: &CStr, st: &libc::stat64) -> bool {
    (file_type(st) == libc::S_IFCHR && st.st_rdev == 0)
        || (file_type(st) == libc::S_IFREG
            && st.st_size == 0
            && open_entry(dir, name)
                .ok()
                .and_then(|fd| sys::getxattr(fd.as_fd(), WHITEOUT).ok().flatten())
                .is_some())
}

/// Every change recorded in `upper`, sorted by path; `host_root` is where
/// the lower layer is (normally "/"). Neither side's symlinks are followed:
/// a host path is compared as the sandbox's overlay saw it.
pub fn list(upper: &Path, host_root: &Path) -> Vec<Change> {
    let mut out = Vec::new();
    if let (Ok(up), Ok(host)) = (sys::open_dir_path(upper), sys::open_dir_path(host_root)) {
        walk(up.as_fd(), Some(host.as_fd()), Path::new("/"), &mut out);
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The size in bytes of what each change holds in `upper` (its length,
/// for a file or symlink added or changed; 0 for a directory or a
/// deletion), reached without following a symlink.
pub fn sizes(upper: &Path, changes: &[Change]) -> Vec<u64> {
    let up = sys::open_dir_path(upper).ok();
    changes
        .iter()
        .map(|c| {
            let Some(up) = &up else { return 0 };
            if c.kind == Kind::D {
                return 0;
            }
            let rel = c.path.strip_prefix("/").unwrap_or(&c.path);
            sys::open_beneath(up.as_fd(), rel.as_os_str().as_bytes(), libc::O_PATH, 0)
                .and_then(|fd| sys::fstat(fd.as_fd()))
                .map_or(0, |st| match file_type(&st) {
                    libc::S_IFREG | libc::S_IFLNK => st.st_size as u64,
                    _ => 0,
                })
        })
        .collect()
}

/// The bytes the files of an upper layer hold (their lengths), walked
/// from directory fds without following a symlink.
pub fn upper_bytes(upper: &Path) -> u64 {
    fn walk(dir: BorrowedFd<'_>) -> u64 {
        let mut total = 0;
        for name in names(dir).unwrap_or_default() {
            let Ok(st) = sys::fstatat(dir, &name) else {
                continue;
            };
            match file_type(&st) {
                libc::S_IFDIR => {
                    if let Ok(fd) =
                        sys::open_beneath(dir, name.to_bytes(), libc::O_PATH | libc::O_DIRECTORY, 0)
                    {
                        total += walk(fd.as_fd());
                    }
                }
                libc::S_IFREG | libc::S_IFLNK => total += st.st_size as u64,
                _ => {}
            }
        }
        total
    }
    sys::open_dir_path(upper).map_or(0, |fd| walk(fd.as_fd()))
}

/// `up`: a directory of the upper layer; `host`: the same directory on the
/// host, `None` when there is none (everything below is added).
fn walk(up: BorrowedFd<'_>, host: Option<BorrowedFd<'_>>, inside: &Path, out: &mut Vec<Change>) {
    let Ok(entries) = names(up) else {
        return;
    };
    for name in entries {
        let Ok(st) = sys::fstatat(up, &name) else {
            continue;
        };
        let path = inside.join(OsStr::from_bytes(name.to_bytes()));
        if is_whiteout(up, &name, &st) {
            if host.is_some() {
                out.push(Change {
                    kind: Kind::D,
                    path,
                });
            }
            continue;
        }
        let on_host = host.and_then(|h| sys::fstatat(h, &name).ok().map(|st| (h, st)));
        if file_type(&st) != libc::S_IFDIR {
            out.push(Change {
                kind: if on_host.is_some() { Kind::C } else { Kind::A },
                path,
            });
            continue;
        }
        let Ok(ufd) = sys::open_beneath(up, name.to_bytes(), libc::O_PATH | libc::O_DIRECTORY, 0)
        else {
            continue;
        };
        let opaque = sys::getxattr(ufd.as_fd(), OPAQUE)
            .ok()
            .flatten()
            .is_some_and(|v| v.first() == Some(&b'y'));
        match on_host {
            None => {
                out.push(Change {
                    kind: Kind::A,
                    path: path.clone(),
                });
                walk(ufd.as_fd(), None, &path, out);
            }
            Some((h, hst)) if file_type(&hst) == libc::S_IFDIR => {
                let hfd =
                    sys::open_beneath(h, name.to_bytes(), libc::O_PATH | libc::O_DIRECTORY, 0).ok();
                if opaque || dir_meta_changed(ufd.as_fd(), &hst) {
                    out.push(Change {
                        kind: Kind::C,
                        path: path.clone(),
                    });
                }
                if let (true, Some(hfd)) = (opaque, &hfd) {
                    // Everything the host had below is gone inside.
                    for n in names(hfd.as_fd()).unwrap_or_default() {
                        if sys::fstatat(ufd.as_fd(), &n).is_err() {
                            out.push(Change {
                                kind: Kind::D,
                                path: path.join(OsStr::from_bytes(n.to_bytes())),
                            });
                        }
                    }
                }
                walk(ufd.as_fd(), hfd.as_ref().map(|f| f.as_fd()), &path, out);
            }
            Some(_) => {
                // A directory inside where the host has something else.
                out.push(Change {
                    kind: Kind::C,
                    path: path.clone(),
                });
                walk(ufd.as_fd(), None, &path, out);
            }
        }
    }
}

/// The owner and mode set inside (`uid:gid:mode`, mode octal), if any.
fn override_of(fd: BorrowedFd<'_>) -> Option<(u32, u32, u32)> {
    let v = sys::getxattr(fd, OVERRIDE).ok().flatten()?;
    let text = String::from_utf8_lossy(&v);
    let mut f = text.trim_end_matches('\0').trim().split(':');
    let uid = f.next()?.parse().ok()?;
    let gid = f.next()?.parse().ok()?;
    let mode = u32::from_str_radix(f.next()?.trim_start_matches("0o"), 8).ok()?;
    Some((uid, gid, mode & 0o7777))
}

/// A directory copied up only to hold changed children is not a change of
/// its own; one whose mode or owner changed inside is.
fn dir_meta_changed(upper: BorrowedFd<'_>, host: &libc::stat64) -> bool {
    let Some((uid, gid, mode)) = override_of(upper) else {
        return false;
    };
    let map = |id: u32, mine: u32| if id == 0 || id == mine { 0 } else { id };
    uid != map(host.st_uid, nix::unistd::getuid().as_raw())
        || gid != map(host.st_gid, nix::unistd::getgid().as_raw())
        || mode != host.st_mode & 0o7777
}

/// `ls -l`'s mode column: the type and the permission bits.
pub fn mode_string(mode: u32) -> String {
    let t = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        _ => '-',
    };
    let mut s = String::from(t);
    for (i, (r, w, x, special, on, off)) in [
        ('r', 'w', 'x', libc::S_ISUID, 's', 'S'),
        ('r', 'w', 'x', libc::S_ISGID, 's', 'S'),
        ('r', 'w', 'x', libc::S_ISVTX, 't', 'T'),
    ]
    .into_iter()
    .enumerate()
    {
        let bits = (mode >> (6 - 3 * i)) & 7;
        s.push(if bits & 4 != 0 { r } else { '-' });
        s.push(if bits & 2 != 0 { w } else { '-' });
        s.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => on,
            (false, true) => off,
            (true, false) => x,
            (false, false) => '-',
        });
    }
    s
}

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
        crate::policy::io_reason(e)
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
    /// profile hides (`hidden`: as given and as the host resolves them), a
    /// symlink or a non-directory on the host where a directory is needed.
    pub fn plan(upper: &Path, targets: &[PathBuf], hidden: &[PathBuf]) -> Result<Commit> {
        let upper_fd = sys::open_dir_path(upper).map_err(|e| host_err(upper, "opening", &e))?;
        let mut c = Commit {
            upper: upper_fd,
            targets: Vec::new(),
            hidden: hidden.to_vec(),
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
        for change in list(upper, Path::new("/")) {
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
        let presented = override_of(ufd.as_fd()).map(|o| o.2);
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
                step.chmod = match (host.as_ref(), presented) {
                    (None, _) => Some(perm & 0o1777),
                    (Some(_), Some(p)) => Some(p & 0o1777),
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

    #[test]
    fn names_are_escaped_like_ls_b() {
        assert_eq!(escape(b"plain name-1.txt"), "plain name-1.txt");
        assert_eq!(escape(b"a\nb\tc\\d"), "a\\nb\\tc\\\\d");
        assert_eq!(escape(b"\x1b[31m\x7f\x00"), "\\033[31m\\177\\000");
        assert_eq!(escape(b"bad\xff\xc3"), "bad\\377\\303");
        assert_eq!(
            escape("caf\u{e9} \u{65e5}".as_bytes()),
            "caf\u{e9} \u{65e5}"
        );
        // C1 controls and bidi overrides, byte by byte.
        assert_eq!(
            escape("x\u{9b}y\u{202e}z".as_bytes()),
            "x\\302\\233y\\342\\200\\256z"
        );
    }

    #[test]
    fn json_stays_the_same_data_without_terminal_controls() {
        let name = "a\u{9b}b\u{202e}c\u{7f}\n\u{1b}";
        let text = serde_json::to_string_pretty(&vec![name]).expect("json");
        let safe = json_for_terminal(&text);
        assert!(
            safe.chars()
                .all(|c| (!c.is_control() || c == '\n') && !invisible(c)),
            "{safe}"
        );
        let back: Vec<String> = serde_json::from_str(&safe).expect("parse");
        assert_eq!(back, [name]);
        let bytes = Change {
            kind: Kind::A,
            path: PathBuf::from(OsStr::from_bytes(b"/x\xff")),
        };
        assert_eq!(
            serde_json::to_string(&bytes).expect("json"),
            r#"{"kind":"A","path":[47,120,255]}"#
        );
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

    #[test]
    fn modes_read_like_ls() {
        assert_eq!(mode_string(libc::S_IFREG | 0o644), "-rw-r--r--");
        assert_eq!(mode_string(libc::S_IFDIR | 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(libc::S_IFREG | 0o6754), "-rwsr-sr--");
        assert_eq!(mode_string(libc::S_IFIFO | 0o600), "prw-------");
        assert_eq!(mode_string(libc::S_IFLNK | 0o777), "lrwxrwxrwx");
    }

    #[test]
    fn added_changed_and_deleted() {
        let base = std::env::temp_dir().join(format!("sbox-changes-{}", std::process::id()));
        let host = base.join("host");
        let upper = base.join("upper");
        for d in [
            host.join("etc"),
            host.join("usr/share/doc"),
            upper.join("etc"),
            upper.join("opt/new"),
        ] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(host.join("etc/hosts"), "a").expect("w");
        std::fs::write(host.join("etc/gone"), "a").expect("w");
        std::fs::write(upper.join("etc/hosts"), "b").expect("w");
        std::fs::write(upper.join("opt/new/f"), "n").expect("w");
        // An xattr whiteout (the format an unprivileged writer can make).
        std::fs::write(upper.join("etc/gone"), "").expect("w");
        let c =
            std::ffi::CString::new(upper.join("etc/gone").to_string_lossy().as_bytes()).expect("c");
        // SAFETY (test): setting a user xattr on a file we created.
        let r = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                c"user.overlay.whiteout".as_ptr(),
                std::ptr::null(),
                0,
                0,
            )
        };
        let changes = list(&upper, &host);
        let want_gone = if r == 0 {
            vec![Change {
                kind: Kind::D,
                path: "/etc/gone".into(),
            }]
        } else {
            vec![Change {
                kind: Kind::C,
                path: "/etc/gone".into(),
            }]
        };
        let mut expected = want_gone;
        expected.push(Change {
            kind: Kind::C,
            path: "/etc/hosts".into(),
        });
        expected.push(Change {
            kind: Kind::A,
            path: "/opt".into(),
        });
        expected.push(Change {
            kind: Kind::A,
            path: "/opt/new".into(),
        });
        expected.push(Change {
            kind: Kind::A,
            path: "/opt/new/f".into(),
        });
        assert_eq!(changes, expected);
        std::fs::remove_dir_all(&base).ok();
    }
}
