//! Writing whiteouts into the upper layer, through the layers' staging
//! directory (the format itself, and reading it: `crate::rootfs::upper`).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::dir::Dir;

use super::layer::Layers;
use super::sys;
use crate::rootfs::upper::{is_whiteout_at, mark_xwhiteouts, WHITEOUT_XATTR};

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
