//! Whiteouts and opaque directories in the kernel overlayfs `userxattr`
//! layout, so an upper directory can be inspected (or even mounted) with the
//! usual tools.
//!
//! - whiteout: a 0/0 character device, or, when the server may not create
//!   device nodes, an empty regular file with `user.overlay.whiteout` (the
//!   kernel's "xattr whiteout"; its directory is then marked with
//!   `user.overlay.opaque="x"` and `user.overlay.whiteouts`). Both are read.
//! - opaque directory: `user.overlay.opaque="y"`.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::dir::Dir;

use super::layer::Layers;
use super::sys;

pub(crate) const WHITEOUT_XATTR: &CStr = c"user.overlay.whiteout";
pub(crate) const WHITEOUTS_XATTR: &CStr = c"user.overlay.whiteouts";
pub(crate) const OPAQUE_XATTR: &CStr = c"user.overlay.opaque";

/// Whether an entry (its O_PATH fd and stat) is a whiteout.
pub(crate) fn is_whiteout(fd: BorrowedFd<'_>, st: &libc::stat64) -> bool {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFCHR => st.st_rdev == 0,
        libc::S_IFREG if st.st_size == 0 => {
            matches!(sys::getxattr(fd, WHITEOUT_XATTR), Ok(Some(_)))
        }
        _ => false,
    }
}

/// Same as [`is_whiteout`] for `name` inside directory `dir`.
pub(crate) fn is_whiteout_at(dir: BorrowedFd<'_>, name: &CStr, st: &libc::stat64) -> bool {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFCHR => st.st_rdev == 0,
        libc::S_IFREG if st.st_size == 0 => {
            match sys::open_beneath(dir, name.to_bytes(), libc::O_PATH, 0) {
                Ok(fd) => is_whiteout(fd.as_fd(), st),
                Err(_) => false,
            }
        }
        _ => false,
    }
}

/// Whether a directory is opaque.
pub(crate) fn is_opaque(fd: BorrowedFd<'_>) -> bool {
    matches!(sys::getxattr(fd, OPAQUE_XATTR), Ok(Some(v)) if v.first() == Some(&b'y'))
}

/// Whether a directory may hold xattr whiteouts.
pub(crate) fn has_xwhiteouts(fd: BorrowedFd<'_>) -> bool {
    if matches!(sys::getxattr(fd, WHITEOUTS_XATTR), Ok(Some(_))) {
        return true;
    }
    matches!(sys::getxattr(fd, OPAQUE_XATTR), Ok(Some(v)) if v.first() == Some(&b'x'))
}

/// Makes a directory opaque.
pub(crate) fn set_opaque(fd: BorrowedFd<'_>) -> io::Result<()> {
    sys::setxattr(fd, OPAQUE_XATTR, b"y", 0)
}

/// Marks a directory as holding xattr whiteouts.
pub(crate) fn mark_xwhiteouts(dir: BorrowedFd<'_>) -> io::Result<()> {
    sys::setxattr(dir, WHITEOUTS_XATTR, b"y", 0)?;
    if !is_opaque(dir) {
        sys::setxattr(dir, OPAQUE_XATTR, b"x", 0)?;
    }
    Ok(())
}

/// Creates a whiteout under a staging name in the work dir; returns the name.
pub(crate) fn stage_whiteout(layers: &Layers) -> io::Result<std::ffi::CString> {
    let tmp = layers.tmp_name();
    if !layers.xattr_whiteouts {
        sys::mknodat(layers.work(), &tmp, libc::S_IFCHR, 0)?;
        return Ok(tmp);
    }
    let fd = sys::open_beneath(
        layers.work(),
        tmp.to_bytes(),
        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
        0o600,
    )?;
    if let Err(e) = sys::setxattr(fd.as_fd(), WHITEOUT_XATTR, b"y", 0) {
        let _ = sys::unlinkat(layers.work(), &tmp, 0);
        return Err(e);
    }
    Ok(tmp)
}

/// Puts a whiteout at `name` in the upper directory `dir`, atomically
/// replacing what is there. `replace_dir`: the current upper entry is an
/// (empty) directory.
pub(crate) fn whiteout_over(
    layers: &Layers,
    dir: BorrowedFd<'_>,
    name: &CStr,
    replace_dir: bool,
) -> io::Result<()> {
    if layers.xattr_whiteouts {
        mark_xwhiteouts(dir)?;
    }
    let tmp = stage_whiteout(layers)?;
    let res = if replace_dir {
        sys::renameat2(layers.work(), &tmp, dir, name, libc::RENAME_EXCHANGE)
            .and_then(|_| sys::unlinkat(layers.work(), &tmp, libc::AT_REMOVEDIR))
    } else {
        sys::renameat2(layers.work(), &tmp, dir, name, 0)
    };
    if res.is_err() {
        let _ = sys::unlinkat(layers.work(), &tmp, 0);
    }
    res
}

/// Removes every whiteout from an upper directory (before it is removed or
/// replaced); fails with ENOTEMPTY if anything else is in it.
pub(crate) fn clear_whiteouts(layers: &Layers, rel: &[u8]) -> io::Result<()> {
    let fd = layers.open(
        super::layer::Layer::Upper,
        rel,
        libc::O_RDONLY | libc::O_DIRECTORY,
    )?;
    let dirfd = fd.try_clone()?;
    let mut dir = Dir::from(fd).map_err(io::Error::from)?;
    let mut names = Vec::new();
    for e in dir.iter() {
        let e = e.map_err(io::Error::from)?;
        let name = e.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let st = sys::fstatat(dirfd.as_fd(), name)?;
        if !is_whiteout_at(dirfd.as_fd(), name, &st) {
            return Err(sys::err(libc::ENOTEMPTY));
        }
        names.push(name.to_owned());
    }
    for n in names {
        sys::unlinkat(dirfd.as_fd(), &n, 0)?;
    }
    Ok(())
}
