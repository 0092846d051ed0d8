//! The flattened read-only tree of an image's layer chain, built once at
//! import: a copy of the parent chain's tree (directories and symlinks
//! made anew, regular files shared by hard links) with one layer applied.
//!
//! The tree is written by the unprivileged caller, so files cannot get the
//! image's owners: what the image says (owner, mode, set-id bits) is kept
//! in the override xattr of `rootfs::upper` where it differs from what the
//! host file shows (root-owned, its own permission bits); the FUSE overlay
//! presents an image tree's files through it. Host modes keep u+rw (u+rwx
//! for directories) so the caller can always read and remove the tree.
//!
//! Hostile archives (DESIGN §6b): names are taken apart here (no `..`, no
//! absolute paths), every parent is opened beneath the tree root with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (an entry below a symlink of the
//! archive is refused, never followed), the final name is never followed
//! (an existing entry is unlinked and made anew, so a file shared with
//! another chain is never written), hard links must name an entry already
//! in the tree. Device nodes are skipped (an unprivileged user cannot make
//! them); file capabilities and other xattrs of the archive are dropped.

use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::dir::Dir;
use sha2::{Digest, Sha256};

use crate::rootfs::overlay::sys;
use crate::rootfs::upper::{self, Override};

/// Why an archive could not be applied.
#[derive(Debug)]
pub enum TreeError {
    /// The archive is malformed or hostile (message for the user).
    Bad(String),
    Io(String, io::Error),
}

impl std::fmt::Display for TreeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TreeError::Bad(m) => f.write_str(m),
            TreeError::Io(w, e) => write!(f, "{w}: {}", crate::error::io_reason(e)),
        }
    }
}

fn bad(m: impl Into<String>) -> TreeError {
    TreeError::Bad(m.into())
}

fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).escape_debug().to_string()
}

/// A reader that hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    /// `sha256:<hex>` of everything read, and its length.
    pub fn finish(self) -> (String, u64) {
        let hex: String = self
            .hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        (format!("sha256:{hex}"), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// The compression of a layer, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// A reader of the uncompressed content of `file` (gzip, zstd or plain).
pub fn decompressed(mut file: std::fs::File) -> io::Result<Box<dyn Read>> {
    use std::io::{Seek, SeekFrom};
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        let r = file.read(&mut head[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    file.seek(SeekFrom::Start(0))?;
    let buf = io::BufReader::with_capacity(1 << 16, file);
    Ok(match Compression::sniff(&head[..n]) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buf)),
        Compression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?,
        ),
        Compression::None => Box::new(buf),
    })
}

/// The uncompressed size of the layer blob at `path` as its format states
/// it without decompressing (gzip's trailer, modulo 4 GiB; the first zstd
/// frame's content size when the header has it, else the blob's size; a
/// plain tar's own size). Shown until the layer is unpacked and measured.
pub fn uncompressed_size_hint(path: &Path) -> u64 {
    use std::io::{Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return 0;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut head = [0u8; 18];
    let n = f.read(&mut head).unwrap_or(0);
    match Compression::sniff(&head[..n]) {
        Compression::None => len,
        Compression::Gzip => {
            let mut t = [0u8; 4];
            match f.seek(SeekFrom::End(-4)).and_then(|_| f.read_exact(&mut t)) {
                Ok(()) if len >= 18 => u64::from(u32::from_le_bytes(t)),
                _ => 0,
            }
        }
        Compression::Zstd => zstd_content_size(&head[4..n]).unwrap_or(len),
    }
}

/// The Frame_Content_Size of a zstd frame header (`h` starts after the
/// magic number), when it is there.
fn zstd_content_size(h: &[u8]) -> Option<u64> {
    let fhd = *h.first()?;
    let single = fhd & 0x20 != 0;
    let fcs_len = match fhd >> 6 {
        0 if single => 1,
        0 => return None,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let did_len = [0, 1, 2, 4][usize::from(fhd & 3)];
    let at = 1 + usize::from(!single) + did_len;
    let b = h.get(at..at + fcs_len)?;
    let mut v = [0u8; 8];
    v[..fcs_len].copy_from_slice(b);
    let v = u64::from_le_bytes(v);
    Some(if fcs_len == 2 { v + 256 } else { v })
}

/// Checks, cheaply, that the layer blob at `path` starts as a layer does:
/// a stream it can decompress that begins with a valid tar header (or is
/// an empty archive). The whole layer is checked when it is unpacked.
pub fn check_layer_start(path: &Path) -> Result<(), TreeError> {
    let f = std::fs::File::open(path)
        .map_err(|e| TreeError::Io(format!("reading {}", path.display()), e))?;
    let r = decompressed(f).map_err(|e| bad(format!("cannot decompress: {e}")))?;
    let mut ar = tar::Archive::new(r);
    let mut entries = ar
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    match entries.next() {
        Some(Err(e)) => Err(bad(format!("not a tar archive: {e}"))),
        _ => Ok(()),
    }
}

/// The components of an archive member's name: leading `/` and `./`
/// dropped, `.` and empty components skipped, `..` refused. Empty: the root.
pub fn components(name: &[u8]) -> Result<Vec<&[u8]>, TreeError> {
    let mut v = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(bad(format!("entry {:?} leads out of the tree", show(name)))),
            c => v.push(c),
        }
    }
    Ok(v)
}

const DIR_FLAGS: i32 = libc::O_RDONLY | libc::O_DIRECTORY;

/// The directory at `comps` beneath `root`, never through a symlink.
fn open_dir(root: BorrowedFd<'_>, comps: &[&[u8]]) -> io::Result<OwnedFd> {
    sys::open_beneath(root, &comps.join(&b'/'), DIR_FLAGS, 0)
}

fn lstat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<libc::stat64>> {
    match sys::fstatat(dir, name) {
        Ok(st) => Ok(Some(st)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes `name` in `dir`, a whole directory tree included.
pub fn remove_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return sys::unlinkat(dir, name, 0);
    }
    let fd = sys::open_beneath(dir, name.to_bytes(), DIR_FLAGS, 0)?;
    // The caller may have made it 0500 on the host; we own it.
    let _ = sys::fchmod(fd.as_fd(), (st.st_mode & 0o7777) | 0o700);
    empty_dir(fd.as_fd(), &|_| true)?;
    sys::unlinkat(dir, name, libc::AT_REMOVEDIR)
}

/// Removes the entries of directory `fd` for which `keep_out(name)` is true.
fn empty_dir(fd: BorrowedFd<'_>, remove: &dyn Fn(&[u8]) -> bool) -> io::Result<()> {
    let names = list(fd)?;
    for n in names {
        if remove(&n) {
            remove_at(fd, &sys::cstr(&n)?)?;
        }
    }
    Ok(())
}

/// The names in directory `fd` (without `.` and `..`).
fn list(fd: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let d = dup(fd)?;
    let mut dir = Dir::from(d).map_err(io::Error::from)?;
    let mut v = Vec::new();
    for e in dir.iter() {
        let e = e.map_err(io::Error::from)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            v.push(n.to_vec());
        }
    }
    Ok(v)
}

/// A fresh fd on the directory `fd` refers to, reading from its start.
fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    sys::open_beneath(fd, b"", DIR_FLAGS, 0)
}

/// Copies the `user.` xattrs (the override, symlink owners) of one
/// directory to another.
fn copy_user_xattrs(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> io::Result<()> {
    let names = sys::listxattr(from)?;
    for n in names.split(|&b| b == 0).filter(|n| n.starts_with(b"user.")) {
        let c = sys::cstr(n)?;
        if let Some(v) = sys::getxattr(from, &c)? {
            sys::setxattr(to, &c, &v, 0)?;
        }
    }
    Ok(())
}

fn times_of(st: &libc::stat64) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec,
        },
        libc::timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec,
        },
    ]
}

/// The walk both copies below share: the tree of directory `from` into the
/// empty directory `to`, directories made anew and walked, symlinks made
/// anew with their times; every other entry is `other`'s (from, to, name,
/// its stat), and each directory, once filled, `finish`'s (from, to, its
/// stat).
type Other<'f> = &'f dyn Fn(BorrowedFd<'_>, BorrowedFd<'_>, &[u8], &libc::stat64) -> io::Result<()>;
type Finish<'f> = &'f dyn Fn(BorrowedFd<'_>, BorrowedFd<'_>, &libc::stat64) -> io::Result<()>;

fn copy_walk(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    other: Other<'_>,
    finish: Finish<'_>,
) -> io::Result<()> {
    let fst = sys::fstat(from)?;
    for n in list(from)? {
        let c = sys::cstr(&n)?;
        let st = sys::fstatat(from, &c)?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                sys::mkdirat(to, &c, 0o700)?;
                let sf = sys::open_beneath(from, &n, DIR_FLAGS, 0)?;
                let df = sys::open_beneath(to, &n, DIR_FLAGS, 0)?;
                copy_walk(sf.as_fd(), df.as_fd(), other, finish)?;
            }
            libc::S_IFLNK => {
                let t = sys::readlinkat(from, &c)?;
                sys::symlinkat(&sys::cstr(&t)?, to, &c)?;
                sys::utimensat(to, &c, &times_of(&st))?;
            }
            _ => other(from, to, &n, &st)?,
        }
    }
    finish(from, to, &fst)
}

/// Copies the tree of directory `from` into the empty directory `to`:
/// directories and symlinks made anew, everything else hard-linked.
pub fn clone_tree(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> io::Result<()> {
    copy_walk(
        from,
        to,
        &|from, to, n, _| {
            let c = sys::cstr(n)?;
            sys::linkat(from, &c, to, &c)
        },
        &|from, to, fst| {
            copy_user_xattrs(from, to)?;
            sys::fchmod(to, fst.st_mode & 0o7777)?;
            sys::futimens(to, &times_of(fst))
        },
    )
}

/// What applying one layer did.
#[derive(Debug, Default)]
pub struct Applied {
    /// `sha256:` digest of the uncompressed archive (the layer's diff_id).
    pub diff_id: String,
    /// Bytes of the uncompressed archive.
    pub size: u64,
    /// Device nodes left out.
    pub skipped_devices: u64,
}

/// The presented owner and mode the image gives an entry, as an override
/// when the host file would not show it by itself (root-owned, its own
/// permission bits).
fn image_override(kind: u32, uid: u32, gid: u32, mode: u32) -> Option<Override> {
    let o = Override {
        uid,
        gid,
        mode: mode & 0o7777,
    };
    (uid != 0 || gid != 0 || upper::real_perm(kind, o.mode) != o.mode).then_some(o)
}

/// Sets the mode and owner the image gives the entry at `fd` (`fresh`: just
/// made, so it has no override to remove).
fn set_meta(
    fd: BorrowedFd<'_>,
    fresh: bool,
    kind: u32,
    uid: u32,
    gid: u32,
    mode: u32,
) -> io::Result<()> {
    sys::fchmod(fd, upper::real_perm(kind, mode))?;
    match image_override(kind, uid, gid, mode) {
        Some(o) => sys::setxattr(fd, upper::OVERRIDE_XATTR, &o.format(), 0),
        None if fresh => Ok(()),
        None => match sys::removexattr(fd, upper::OVERRIDE_XATTR) {
            Err(e) if e.raw_os_error() != Some(libc::ENODATA) => Err(e),
            _ => Ok(()),
        },
    }
}

fn mtime(secs: u64) -> [libc::timespec; 2] {
    let t = libc::timespec {
        tv_sec: secs.min(i64::MAX as u64) as i64,
        tv_nsec: 0,
    };
    [t, t]
}

/// Marks the root of an image's tree (the overlay presents its files
/// through their overrides).
pub(crate) const IMAGE_TREE_XATTR: &CStr = c"user.sbox.image";

/// Marks `root` as the root of an image's tree.
pub fn mark_image_tree(root: BorrowedFd<'_>) -> io::Result<()> {
    sys::setxattr(root, IMAGE_TREE_XATTR, b"1", 0)
}

/// Whether `root` is the root of an image's tree.
pub(crate) fn is_image_tree(root: BorrowedFd<'_>) -> bool {
    matches!(sys::getxattr(root, IMAGE_TREE_XATTR), Ok(Some(_)))
}

/// The owner and mode an entry of an image tree presents: its override
/// (for symlinks, fifos and sockets, the owner kept on its directory), else
/// root's with its own permission bits.
pub(crate) fn lower_override(
    dir: BorrowedFd<'_>,
    name: &CStr,
    st: &libc::stat64,
) -> io::Result<Override> {
    let kind = st.st_mode & libc::S_IFMT;
    let dflt = Override {
        uid: 0,
        gid: 0,
        mode: st.st_mode & 0o7777,
    };
    if upper::can_have_xattrs(kind) {
        let fd = sys::open_beneath(dir, name.to_bytes(), libc::O_PATH, 0)?;
        Ok(upper::read_override(fd.as_fd()).unwrap_or(dflt))
    } else {
        Ok(upper::read_entry_owner(dir, name.to_bytes())
            .map(|(uid, gid)| Override {
                uid,
                gid,
                mode: dflt.mode,
            })
            .unwrap_or(dflt))
    }
}

/// Applies the uncompressed layer archive read from `input` to the tree at
/// `root` (a copy of the parent chain's tree), OCI whiteouts included.
pub fn apply_layer(root: BorrowedFd<'_>, input: impl Read) -> Result<Applied, TreeError> {
    let mut hashing = HashingReader::new(input);
    let mut applied = Applied::default();
    {
        let mut ar = tar::Archive::new(&mut hashing);
        let mut created: HashSet<Vec<u8>> = HashSet::new();
        let mut dir_times: HashMap<Vec<u8>, u64> = HashMap::new();
        // The directory of the last entry, kept for the next entry in the
        // same directory (archives group entries by directory). It cannot
        // go stale: only an entry in another directory (its parent or
        // above) can remove or replace it, and such an entry drops it.
        let mut parent: Option<(Vec<u8>, OwnedFd)> = None;
        let entries = ar
            .entries()
            .map_err(|e| bad(format!("not a tar archive: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(format!("corrupt archive: {e}")))?;
            let name = entry.path_bytes().into_owned();
            let comps = components(&name)?;
            let h = entry.header();
            let kind = h.entry_type();
            let mode = h.mode().map_err(|e| bad(format!("{}: {e}", show(&name))))?;
            let mut uid = h.uid().unwrap_or(0).min(u32::MAX as u64) as u32;
            let mut gid = h.gid().unwrap_or(0).min(u32::MAX as u64) as u32;
            let mt = h.mtime().unwrap_or(0);
            let link = entry.link_name_bytes().map(|l| l.into_owned());
            // Ids too large for the header are in a PAX extension.
            if let Ok(Some(pax)) = entry.pax_extensions() {
                for ext in pax.flatten() {
                    let v = ext.value().ok().and_then(|v| v.parse::<u32>().ok());
                    match (ext.key_bytes(), v) {
                        (b"uid", Some(v)) => uid = v,
                        (b"gid", Some(v)) => gid = v,
                        _ => {}
                    }
                }
            }
            let io = |what: &str, e: io::Error| TreeError::Io(format!("{what} {}", show(&name)), e);

            let Some((last, parents)) = comps.split_last() else {
                // The root itself.
                if kind.is_dir() {
                    set_meta(root, false, libc::S_IFDIR, uid, gid, mode)
                        .map_err(|e| io("setting", e))?;
                    dir_times.insert(Vec::new(), mt);
                }
                continue;
            };
            let parent_rel = parents.join(&b'/');
            if parent.as_ref().is_none_or(|(rel, _)| *rel != parent_rel) {
                parent = None;
            }
            let pfd = match parent.take() {
                Some((_, fd)) => Ok(fd),
                None => ensure_dirs(root, parents),
            };
            let pfd = pfd.map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) | Some(libc::EXDEV) | Some(libc::ENOTDIR) => bad(format!(
                    "entry {:?} lies below a symlink or a file of the archive",
                    show(&name)
                )),
                _ => io("opening the directory of", e),
            })?;
            let pfd = &parent.insert((parent_rel.clone(), pfd)).1;
            let pfd = pfd.as_fd();

            // OCI whiteouts: they hide what lower layers have.
            if let Some(target) = last.strip_prefix(b".wh.") {
                if target == b".wh..opq" {
                    let keep_prefix = parent_rel.clone();
                    empty_dir(pfd, &|n: &[u8]| !created.contains(&join(&keep_prefix, n)))
                        .map_err(|e| io("emptying the opaque directory", e))?;
                } else if matches!(target, b"" | b"." | b"..") {
                    return Err(bad(format!("whiteout {:?} names no entry", show(&name))));
                } else if !target.starts_with(b".wh.") {
                    let full = join(&parent_rel, target);
                    if !created.contains(&full) {
                        let c = sys::cstr(target).map_err(|e| io("whiteout", e))?;
                        remove_at(pfd, &c).map_err(|e| io("removing", e))?;
                        forget_owner(pfd, target);
                    }
                }
                continue;
            }

            let full = join(&parent_rel, last);
            let cname = sys::cstr(last).map_err(|e| io("name", e))?;
            let existing = lstat_at(pfd, &cname).map_err(|e| io("looking at", e))?;
            let existing_dir =
                existing.is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
            use tar::EntryType as T;
            if kind.is_dir() {
                if existing.is_some() && !existing_dir {
                    sys::unlinkat(pfd, &cname, 0).map_err(|e| io("replacing", e))?;
                }
                if !existing_dir {
                    sys::mkdirat(pfd, &cname, 0o700).map_err(|e| io("making", e))?;
                }
                let d = sys::open_beneath(pfd, last, DIR_FLAGS, 0).map_err(|e| io("opening", e))?;
                set_meta(d.as_fd(), !existing_dir, libc::S_IFDIR, uid, gid, mode)
                    .map_err(|e| io("setting", e))?;
                dir_times.insert(full.clone(), mt);
                created.insert(full);
                continue;
            }
            if existing.is_some() {
                remove_at(pfd, &cname).map_err(|e| io("replacing", e))?;
                forget_owner(pfd, last);
            }
            match kind {
                T::Regular | T::Continuous | T::GNUSparse => {
                    if kind == T::GNUSparse {
                        return Err(bad(format!(
                            "{}: sparse entries are not supported",
                            show(&name)
                        )));
                    }
                    let fd = sys::open_beneath(
                        pfd,
                        last,
                        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                        0o600,
                    )
                    .map_err(|e| io("creating", e))?;
                    let mut f = std::fs::File::from(fd);
                    io::copy(&mut entry, &mut f).map_err(|e| match e.kind() {
                        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
                            bad(format!("corrupt archive at {}: {e}", show(&name)))
                        }
                        _ => io("writing", e),
                    })?;
                    set_meta(f.as_fd(), true, libc::S_IFREG, uid, gid, mode)
                        .map_err(|e| io("setting", e))?;
                    sys::futimens(f.as_fd(), &mtime(mt)).map_err(|e| io("setting", e))?;
                }
                T::Symlink => {
                    let Some(target) = link else {
                        return Err(bad(format!("symlink {} without a target", show(&name))));
                    };
                    let t = sys::cstr(&target).map_err(|e| io("symlink", e))?;
                    sys::symlinkat(&t, pfd, &cname).map_err(|e| io("making", e))?;
                    if uid != 0 || gid != 0 {
                        upper::write_entry_owner(pfd, last, Some((uid, gid)))
                            .map_err(|e| io("setting the owner of", e))?;
                    }
                    let _ = sys::utimensat(pfd, &cname, &mtime(mt));
                }
                T::Link => {
                    let Some(target) = link else {
                        return Err(bad(format!("hard link {} without a target", show(&name))));
                    };
                    let tc = components(&target)?;
                    let Some((tlast, tparents)) = tc.split_last() else {
                        return Err(bad(format!("hard link {} to the root", show(&name))));
                    };
                    let outside = || {
                        bad(format!(
                            "hard link {} points outside the tree or to nothing ({:?})",
                            show(&name),
                            show(&target)
                        ))
                    };
                    let tdir = open_dir(root, tparents).map_err(|_| outside())?;
                    let tn = sys::cstr(tlast).map_err(|_| outside())?;
                    match lstat_at(tdir.as_fd(), &tn) {
                        Ok(Some(st)) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => {}
                        _ => return Err(outside()),
                    }
                    sys::linkat(tdir.as_fd(), &tn, pfd, &cname).map_err(|e| io("linking", e))?;
                }
                T::Fifo => {
                    sys::mknodat(pfd, &cname, libc::S_IFIFO | 0o600, 0)
                        .map_err(|e| io("making", e))?;
                    sys::fchmodat(pfd, &cname, mode & 0o777).map_err(|e| io("setting", e))?;
                    if uid != 0 || gid != 0 {
                        upper::write_entry_owner(pfd, last, Some((uid, gid)))
                            .map_err(|e| io("setting the owner of", e))?;
                    }
                }
                T::Char | T::Block => {
                    applied.skipped_devices += 1;
                    log::info!("image layer: device node {} skipped", show(&name));
                    continue;
                }
                T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => continue,
                other => {
                    return Err(bad(format!(
                        "{}: unsupported entry type {:?}",
                        show(&name),
                        other.as_byte() as char
                    )));
                }
            }
            created.insert(full);
        }
        // Directory times last: making their entries changed them.
        let mut dirs: Vec<_> = dir_times.into_iter().collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0.len()));
        for (rel, mt) in dirs {
            if let Ok(d) = sys::open_beneath(root, &rel, DIR_FLAGS, 0) {
                let _ = sys::futimens(d.as_fd(), &mtime(mt));
            }
        }
        // The rest of the stream (end blocks, padding) counts for the digest.
        let inner = ar.into_inner();
        io::copy(inner, &mut io::sink()).map_err(|e| bad(format!("corrupt archive: {e}")))?;
    }
    let (diff_id, size) = hashing.finish();
    applied.diff_id = diff_id;
    applied.size = size;
    Ok(applied)
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        return name.to_vec();
    }
    let mut p = parent.to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// Drops the owner kept on directory `dir` for its former symlink or fifo
/// `name` (a new entry of that name must not inherit it).
fn forget_owner(dir: BorrowedFd<'_>, name: &[u8]) {
    let _ = upper::write_entry_owner(dir, name, None);
}

/// Opens (making missing ones, root-owned 0755) the directories `comps`
/// beneath `root`, never through a symlink.
fn ensure_dirs(root: BorrowedFd<'_>, comps: &[&[u8]]) -> io::Result<OwnedFd> {
    match open_dir(root, comps) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    let mut cur = dup(root)?;
    for c in comps {
        let cn = sys::cstr(c)?;
        match sys::open_beneath(cur.as_fd(), c, DIR_FLAGS, 0) {
            Ok(fd) => cur = fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                sys::mkdirat(cur.as_fd(), &cn, 0o755)?;
                cur = sys::open_beneath(cur.as_fd(), c, DIR_FLAGS, 0)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(cur)
}

/// Copies the tree of image tree directory `from` into the empty directory
/// `to`: files copied (never linked: the copy is the user's to change),
/// each with the mode the image gives it; owners are the caller's.
pub fn copy_tree(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> io::Result<()> {
    fn mode_of(st: &libc::stat64, fd: BorrowedFd<'_>) -> u32 {
        upper::read_override(fd).map_or(st.st_mode & 0o7777, |o| o.mode)
    }
    copy_walk(
        from,
        to,
        &|from, to, n, st| match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => {
                let sf = sys::open_beneath(from, n, libc::O_RDONLY, 0)?;
                let df =
                    sys::open_beneath(to, n, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o600)?;
                let mut r = std::fs::File::from(sf);
                let mut w = std::fs::File::from(df);
                io::copy(&mut r, &mut w)?;
                sys::fchmod(w.as_fd(), mode_of(st, r.as_fd()))?;
                sys::futimens(w.as_fd(), &times_of(st))
            }
            libc::S_IFIFO => {
                let c = sys::cstr(n)?;
                sys::mknodat(to, &c, libc::S_IFIFO | 0o600, 0)?;
                sys::fchmodat(to, &c, st.st_mode & 0o777)
            }
            _ => Ok(()),
        },
        &|from, to, fst| {
            sys::fchmod(to, mode_of(fst, from) | 0o700)?;
            sys::futimens(to, &times_of(fst))
        },
    )
}

/// Makes the mount points sbox needs in an image's root where the image has
/// none: the directories `/proc`, `/sys`, `/dev`, `/tmp` and `/run`, and
/// the empty files `/etc/hosts` and `/etc/resolv.conf` it binds over, so a
/// sandbox need not make them in its upper layer at every start (docker
/// makes them in a container's first layer).
pub fn add_mount_points(root: BorrowedFd<'_>) -> io::Result<()> {
    // The directories sbox mounts on, as a container runtime makes them
    // (so that `ls /` shows them, not only a lookup).
    for (name, mode) in [
        (c"proc", 0o555),
        (c"sys", 0o555),
        (c"dev", 0o755),
        (c"tmp", 0o1777),
        (c"run", 0o755),
    ] {
        if lstat_at(root, name)?.is_none() {
            sys::mkdirat(root, name, 0o700)?;
            let d = sys::open_beneath(root, name.to_bytes(), DIR_FLAGS, 0)?;
            set_meta(d.as_fd(), true, libc::S_IFDIR, 0, 0, mode)?;
        }
    }
    let etc = match sys::open_beneath(root, b"etc", DIR_FLAGS, 0) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            sys::mkdirat(root, c"etc", 0o755)?;
            sys::open_beneath(root, b"etc", DIR_FLAGS, 0)?
        }
        // A symlink or a file: the image's business.
        Err(_) => return Ok(()),
    };
    for name in [c"hosts", c"resolv.conf"] {
        if lstat_at(etc.as_fd(), name)?.is_none() {
            let fd = sys::open_beneath(
                etc.as_fd(),
                name.to_bytes(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                0o644,
            )?;
            sys::fchmod(fd.as_fd(), 0o644)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::zstd_content_size;

    #[test]
    fn zstd_frame_content_sizes() {
        // Single segment, 1-byte size.
        assert_eq!(zstd_content_size(&[0x20, 200]), Some(200));
        // Window descriptor, 2-byte size (+256).
        assert_eq!(
            zstd_content_size(&[0x40, 0x00, 0x10, 0x00]),
            Some(0x10 + 256)
        );
        // 4-byte size after a 1-byte dictionary id.
        assert_eq!(
            zstd_content_size(&[0x81, 0x00, 0x07, 0x78, 0x56, 0x34, 0x12]),
            Some(0x1234_5678)
        );
        // No size in the header, or a short header.
        assert_eq!(zstd_content_size(&[0x00, 0x00]), None);
        assert_eq!(zstd_content_size(&[0xc0, 0x00, 0x01]), None);
    }
}
