//! The lower and upper layers: root fds, name resolution across them and the
//! merged directory listing.

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::dir::{Dir, Type};

use super::inode::NodeState;
use super::sys;
use crate::rootfs::upper::{self, Override};

/// One of the two layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layer {
    Lower,
    Upper,
}

/// Root fds of the layers and of the staging directory, opened before any
/// serving thread starts and kept for the life of the server.
#[derive(Debug)]
pub(crate) struct Layers {
    pub lower: OwnedFd,
    pub upper: OwnedFd,
    pub work: OwnedFd,
    /// Whiteouts are empty files with `user.overlay.whiteout` (the server may
    /// not create 0/0 character devices).
    pub xattr_whiteouts: bool,
    /// A passthrough mount: the "upper" is a host directory seen as it is
    /// (no whiteouts, no origins; a 0/0 character device is just that).
    pub passthrough: bool,
    /// The lower layer is an image's tree (see `crate::image::tree`): its
    /// entries present the owner and mode the image gives them.
    pub image_lower: bool,
    tmp_counter: AtomicU64,
}

/// What a name resolved to.
#[derive(Clone, Copy)]
pub(crate) struct Resolved {
    pub st: libc::stat64,
    pub layer: Layer,
    pub lower_dir: bool,
    pub ovr: Option<Override>,
    pub origin: Option<u64>,
}

/// One entry of a merged directory listing.
#[derive(Clone, Debug)]
pub(crate) struct MergedEnt {
    pub name: Vec<u8>,
    pub dtype: u32,
    pub dev: u64,
    pub ino: u64,
    pub layer: Layer,
}

/// `parent/name` of relative paths ("" is the root).
/// A merged directory shows the later of its layers' mtimes, so that a
/// host change to its lower part also changes what the kernel sees (the
/// kernel drops its cached listing of a directory whose mtime changed).
pub(crate) fn take_newer_mtime(st: &mut libc::stat64, lower: &libc::stat64) {
    if (lower.st_mtime, lower.st_mtime_nsec) > (st.st_mtime, st.st_mtime_nsec) {
        st.st_mtime = lower.st_mtime;
        st.st_mtime_nsec = lower.st_mtime_nsec;
    }
}

pub(crate) fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
        p.extend_from_slice(parent);
        p.push(b'/');
        p.extend_from_slice(name);
        p
    }
}

/// Splits a relative path into (parent, last component).
pub(crate) fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&c| c == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
    )
}

/// A lower path below a host directory the caller may not search or read
/// (`_apt`'s 0700 `partial/`): the server cannot see what it holds, so such
/// a directory shows as empty and is written to as a new one.
fn is_hidden_lower(l: Layer, e: &io::Error) -> bool {
    l == Layer::Lower && e.raw_os_error() == Some(libc::EACCES)
}

fn dtype_of(t: Option<Type>) -> u32 {
    (match t {
        Some(Type::Fifo) => libc::DT_FIFO,
        Some(Type::CharacterDevice) => libc::DT_CHR,
        Some(Type::Directory) => libc::DT_DIR,
        Some(Type::BlockDevice) => libc::DT_BLK,
        Some(Type::File) => libc::DT_REG,
        Some(Type::Symlink) => libc::DT_LNK,
        Some(Type::Socket) => libc::DT_SOCK,
        None => libc::DT_UNKNOWN,
    }) as u32
}

impl Layers {
    pub(crate) fn new(
        lower: OwnedFd,
        upper: OwnedFd,
        work: OwnedFd,
        xattr_whiteouts: bool,
    ) -> Self {
        Layers {
            lower,
            upper,
            work,
            xattr_whiteouts,
            passthrough: false,
            image_lower: false,
            tmp_counter: AtomicU64::new(0),
        }
    }

    pub(crate) fn root(&self, l: Layer) -> BorrowedFd<'_> {
        match l {
            Layer::Lower => self.lower.as_fd(),
            Layer::Upper => self.upper.as_fd(),
        }
    }

    /// Opens `rel` beneath a layer root (never following symlinks).
    pub(crate) fn open(&self, l: Layer, rel: &[u8], flags: i32) -> io::Result<OwnedFd> {
        sys::open_beneath(self.root(l), rel, flags, 0)
    }

    /// `O_PATH` fd and stat of `rel`, `None` when it does not exist.
    pub(crate) fn probe(
        &self,
        l: Layer,
        rel: &[u8],
    ) -> io::Result<Option<(OwnedFd, libc::stat64)>> {
        match self.open(l, rel, libc::O_PATH) {
            Ok(fd) => {
                let st = sys::fstat(fd.as_fd())?;
                Ok(Some((fd, st)))
            }
            Err(e) if is_absent(&e) || is_hidden_lower(l, &e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The parent directory (O_PATH) of `rel` and its last component; for
    /// the root, the root itself and ".".
    pub(crate) fn parent_of(&self, l: Layer, rel: &[u8]) -> io::Result<(OwnedFd, CString)> {
        if rel.is_empty() {
            return Ok((
                self.open(l, b"", libc::O_PATH | libc::O_DIRECTORY)?,
                CString::from(c"."),
            ));
        }
        let (p, n) = split(rel);
        let dir = self.open(l, p, libc::O_PATH | libc::O_DIRECTORY)?;
        Ok((dir, sys::cstr(n)?))
    }

    /// A fresh staging name in the work directory.
    pub(crate) fn tmp_name(&self) -> CString {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let s = format!("#sbox-{}-{}", std::process::id(), n);
        CString::new(s).unwrap_or_else(|_| CString::from(c"#sbox-tmp"))
    }

    pub(crate) fn work(&self) -> BorrowedFd<'_> {
        self.work.as_fd()
    }

    /// Resolves `rel` whose parent directory has `parent` state.
    pub(crate) fn resolve_child(
        &self,
        parent: &NodeState,
        rel: &[u8],
    ) -> io::Result<Option<Resolved>> {
        if parent.upper {
            if let Some((fd, mut st)) = self.probe(Layer::Upper, rel)? {
                if !self.passthrough && upper::is_whiteout(fd.as_fd(), &st) {
                    return Ok(None);
                }
                let kind = st.st_mode & libc::S_IFMT;
                let (ovr, origin) = if self.passthrough {
                    let ovr = upper::can_have_xattrs(kind)
                        .then(|| upper::read_override(fd.as_fd()))
                        .flatten();
                    (ovr, None)
                } else if upper::can_have_xattrs(kind) {
                    (
                        upper::read_override(fd.as_fd()),
                        upper::read_origin(fd.as_fd()),
                    )
                } else {
                    // A symlink, fifo or socket: its owner, when it is not
                    // the caller, is kept on its directory.
                    let (pfd, n) = self.parent_of(Layer::Upper, rel)?;
                    let ovr =
                        upper::read_entry_owner(pfd.as_fd(), n.to_bytes()).map(|(uid, gid)| {
                            Override {
                                uid,
                                gid,
                                mode: st.st_mode & 0o7777,
                            }
                        });
                    (ovr, None)
                };
                let mut lower_dir = false;
                if kind == libc::S_IFDIR && parent.lower_dir && !upper::is_opaque(fd.as_fd()) {
                    if let Some((_, l)) = self.probe(Layer::Lower, rel)? {
                        if l.st_mode & libc::S_IFMT == libc::S_IFDIR {
                            lower_dir = true;
                            take_newer_mtime(&mut st, &l);
                        }
                    }
                }
                return Ok(Some(Resolved {
                    st,
                    layer: Layer::Upper,
                    lower_dir,
                    ovr,
                    origin,
                }));
            }
        }
        if parent.lower_dir {
            if let Some((_, st)) = self.probe(Layer::Lower, rel)? {
                return Ok(Some(Resolved {
                    st,
                    layer: Layer::Lower,
                    lower_dir: st.st_mode & libc::S_IFMT == libc::S_IFDIR,
                    ovr: self.lower_override(rel, &st)?,
                    origin: None,
                }));
            }
        }
        Ok(None)
    }

    /// The owner and mode a lower entry presents when the lower layer is an
    /// image's tree (None: the host's, mapped by `Ids`).
    pub(crate) fn lower_override(
        &self,
        rel: &[u8],
        st: &libc::stat64,
    ) -> io::Result<Option<Override>> {
        if !self.image_lower {
            return Ok(None);
        }
        if rel.is_empty() {
            let fd = self.open(Layer::Lower, b"", libc::O_PATH)?;
            return Ok(Some(upper::read_override(fd.as_fd()).unwrap_or(Override {
                uid: 0,
                gid: 0,
                mode: st.st_mode & 0o7777,
            })));
        }
        let (pfd, n) = self.parent_of(Layer::Lower, rel)?;
        crate::image::tree::lower_override(pfd.as_fd(), &n, st).map(Some)
    }

    /// Whether the lower layer has a (visible) entry at `rel`, given the
    /// state of the parent directory.
    pub(crate) fn lower_has(&self, parent: &NodeState, rel: &[u8]) -> io::Result<bool> {
        if !parent.lower_dir {
            return Ok(false);
        }
        Ok(self.probe(Layer::Lower, rel)?.is_some())
    }

    /// The merged listing of the directory at `rel` (without "." and "..").
    pub(crate) fn list_merged(&self, rel: &[u8], state: &NodeState) -> io::Result<Vec<MergedEnt>> {
        let mut out = Vec::new();
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        if state.upper {
            let fd = self.open(Layer::Upper, rel, libc::O_RDONLY | libc::O_DIRECTORY)?;
            let dirfd = fd.try_clone()?;
            let dst = sys::fstat(dirfd.as_fd())?;
            let marked = !self.passthrough && upper::has_xwhiteouts(dirfd.as_fd());
            let mut dir = Dir::from(fd).map_err(io::Error::from)?;
            for e in dir.iter() {
                let e = e.map_err(io::Error::from)?;
                let name = e.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                let t = e.file_type();
                let check = match t {
                    _ if self.passthrough => false,
                    None | Some(Type::CharacterDevice) => true,
                    Some(Type::File) => marked,
                    _ => false,
                };
                let mut dtype = dtype_of(t);
                if check {
                    let cname = sys::cstr(name)?;
                    if let Ok(st) = sys::fstatat(dirfd.as_fd(), &cname) {
                        dtype = (st.st_mode & libc::S_IFMT) >> 12;
                        if upper::is_whiteout_at(dirfd.as_fd(), &cname, &st) {
                            seen.insert(name.to_vec());
                            continue;
                        }
                    }
                }
                seen.insert(name.to_vec());
                out.push(MergedEnt {
                    name: name.to_vec(),
                    dtype,
                    dev: dst.st_dev,
                    ino: e.ino(),
                    layer: Layer::Upper,
                });
            }
        }
        if state.lower_dir {
            let fd = match self.open(Layer::Lower, rel, libc::O_RDONLY | libc::O_DIRECTORY) {
                Ok(fd) => fd,
                Err(e) if is_absent(&e) || is_hidden_lower(Layer::Lower, &e) => return Ok(out),
                Err(e) => return Err(e),
            };
            let dst = sys::fstat(fd.as_fd())?;
            let mut dir = Dir::from(fd).map_err(io::Error::from)?;
            for e in dir.iter() {
                let e = e.map_err(io::Error::from)?;
                let name = e.file_name().to_bytes();
                if name == b"." || name == b".." || seen.contains(name) {
                    continue;
                }
                out.push(MergedEnt {
                    name: name.to_vec(),
                    dtype: dtype_of(e.file_type()),
                    dev: dst.st_dev,
                    ino: e.ino(),
                    layer: Layer::Lower,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_split() {
        assert_eq!(join(b"", b"a"), b"a".to_vec());
        assert_eq!(join(b"a/b", b"c"), b"a/b/c".to_vec());
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
    }
}
