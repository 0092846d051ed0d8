//! Passthrough mounts: a host directory served as it is, read-write on the
//! host, with the profile's hidden paths filtered out.
//!
//! A bind whose source holds hidden paths cannot be a kernel bind mount: a
//! mask covers only what exists when the sandbox starts, and a credential
//! file the host creates later under the bind would be readable inside.
//! Such a bind is served by the overlay code with the bound directory as
//! its only ("upper") layer: the hidden names are refused at lookup,
//! creation and rename whenever they are asked for, whether or not they
//! exist on the host.
//!
//! Differences from the copy-on-write overlay:
//! - every change goes to the host directory in place; new entries are made
//!   directly under their name (there is no work directory), owned by the
//!   caller on the host, with the mode asked for;
//! - host ids are presented as a bind mount presents them: through the
//!   sandbox's id maps (the caller is root inside, ids outside the maps are
//!   `nobody`), modes as they are on the host;
//! - chmod is applied to the host file; a chown to an owner other than the
//!   one the host file presents cannot be made on the host (the server is
//!   the unprivileged caller) and is kept in the file's
//!   `user.containers.override_stat` xattr, as the overlay keeps it in its
//!   upper layer (a chown back to the presented owner removes it);
//! - 0/0 character devices and `user.overlay.*` xattrs mean nothing.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use fuse_backend_rs::api::filesystem::{Context, Entry, SetattrValid};

use super::fs::OverlayFs;
use super::layer::Layer;
use super::sys::{self, err};
use crate::rootfs::upper::{self, Override};

/// A new entry of a passthrough mount.
pub(crate) enum New<'a> {
    /// A regular file: permission bits, open flags (it is returned open).
    File(u32, i32),
    /// A directory, fifo, socket or empty regular file: kind, permissions.
    Node(u32, u32),
    Symlink(&'a CStr),
}

/// chmod through an O_PATH fd: never follows a symlink that replaced the
/// name in between.
fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    let p = sys::cstr(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?;
    sys::fchmodat(fd, &p, mode)
}

impl OverlayFs {
    /// Makes `name` in `parent` on the host, with the mode asked for (the
    /// server's umask undone; a set-gid parent's group and bit kept) and the
    /// owner `ctx` presents, kept in the override when it is not the one
    /// the host file presents. A regular file comes back open.
    pub(crate) fn pt_make(
        &self,
        ctx: &Context,
        parent: u64,
        name: &[u8],
        new: New<'_>,
    ) -> io::Result<(Entry, Option<OwnedFd>)> {
        let (pinfo, rel) = self.prepare_new(parent, name)?;
        if matches!(new, New::Symlink(_)) && self.masks.masks_below(&rel) {
            // A symlink where a hidden path's parent belongs would send
            // the host's credentials somewhere visible.
            return Err(err(libc::EACCES));
        }
        let (uid, gid, _) = self.new_owner(ctx, &pinfo);
        let (pfd, n) = self.layers.parent_of(Layer::Upper, &rel)?;
        let is_dir = matches!(new, New::Node(libc::S_IFDIR, _));
        let (opened, mode) = match new {
            New::File(mode, flags) => {
                let fd = sys::open_beneath(
                    pfd.as_fd(),
                    n.to_bytes(),
                    flags | libc::O_CREAT | libc::O_EXCL,
                    mode & 0o777,
                )?;
                (Some(fd), Some(mode))
            }
            New::Node(libc::S_IFDIR, mode) => {
                sys::mkdirat(pfd.as_fd(), &n, mode & 0o777)?;
                (None, Some(mode))
            }
            New::Node(kind, mode) => {
                sys::mknodat(pfd.as_fd(), &n, kind | (mode & 0o777), 0)?;
                (None, Some(mode))
            }
            New::Symlink(target) => {
                sys::symlinkat(target, pfd.as_fd(), &n)?;
                (None, None)
            }
        };
        if let Some(mode) = mode {
            let set = (|| {
                let fd = sys::open_beneath(pfd.as_fd(), n.to_bytes(), libc::O_PATH, 0)?;
                let st = sys::fstat(fd.as_fd())?;
                let kind = st.st_mode & libc::S_IFMT;
                if kind == libc::S_IFLNK {
                    // Replaced in the meantime: not ours to change.
                    return Ok(());
                }
                let mut want = mode & 0o7777;
                if kind == libc::S_IFDIR {
                    want |= st.st_mode & libc::S_ISGID;
                }
                if st.st_mode & 0o7777 != want {
                    chmod_fd(fd.as_fd(), want)?;
                }
                let natural = (self.ids.uid(st.st_uid), self.ids.gid(st.st_gid));
                if upper::can_have_xattrs(kind) && (uid, gid) != natural {
                    let ovr = Override {
                        uid,
                        gid,
                        mode: want,
                    };
                    match sys::setxattr(fd.as_fd(), upper::OVERRIDE_XATTR, &ovr.format(), 0) {
                        // Without user xattrs the owner is just not kept.
                        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                        r => r?,
                    }
                }
                Ok(())
            })();
            if let Err(e) = set {
                let flag = if is_dir { libc::AT_REMOVEDIR } else { 0 };
                let _ = sys::unlinkat(pfd.as_fd(), &n, flag);
                return Err(e);
            }
        }
        let entry = self.do_lookup(parent, name)?;
        Ok((entry, opened))
    }

    /// A hard link made in place.
    pub(crate) fn pt_link(
        &self,
        inode: u64,
        newparent: u64,
        name: &[u8],
        rel: &[u8],
    ) -> io::Result<Entry> {
        let src = self.info(inode)?;
        if src.state.kind == libc::S_IFLNK && self.masks.masks_below(rel) {
            return Err(err(libc::EACCES));
        }
        let (sfd, sn) = self.layers.parent_of(Layer::Upper, &src.path)?;
        let (pfd, n) = self.layers.parent_of(Layer::Upper, rel)?;
        sys::linkat(sfd.as_fd(), &sn, pfd.as_fd(), &n)?;
        self.do_lookup(newparent, name)
    }

    /// A rename made in place (the caller checked the masks and flags).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn pt_rename(
        &self,
        op: u64,
        oname: &[u8],
        orel: &[u8],
        np: u64,
        nname: &[u8],
        nrel: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        let (ofd, on) = self.layers.parent_of(Layer::Upper, orel)?;
        let (nfd, nn) = self.layers.parent_of(Layer::Upper, nrel)?;
        sys::renameat2(ofd.as_fd(), &on, nfd.as_fd(), &nn, flags)?;
        if flags & libc::RENAME_EXCHANGE != 0 {
            self.table().exchange(op, oname, np, nname);
        } else {
            self.table().rename(op, oname, np, nname);
        }
        Ok(())
    }

    /// chmod/chown (and the set-id bits a write drops) of a passthrough
    /// node: the mode on the host, the owner in the override when it is not
    /// the host file's own.
    pub(crate) fn pt_set_owner_mode(
        &self,
        who: super::fs::Actor,
        inode: u64,
        path: &[u8],
        attr: &libc::stat64,
        valid: SetattrValid,
    ) -> io::Result<()> {
        let fd = self.layers.open(Layer::Upper, path, libc::O_PATH)?;
        let st = sys::fstat(fd.as_fd())?;
        let kind = st.st_mode & libc::S_IFMT;
        let xattrs = upper::can_have_xattrs(kind);
        let natural = (self.ids.uid(st.st_uid), self.ids.gid(st.st_gid));
        let cur = if xattrs {
            upper::read_override(fd.as_fd())
        } else {
            None
        };
        let (mut uid, mut gid) = cur.map_or(natural, |o| (o.uid, o.gid));
        let mut mode = st.st_mode & 0o7777;
        let file_gid = gid;
        if valid.contains(SetattrValid::UID) {
            uid = attr.st_uid;
        }
        if valid.contains(SetattrValid::GID) {
            gid = attr.st_gid;
        }
        if valid.contains(SetattrValid::MODE) {
            mode = attr.st_mode & 0o7777;
        } else if super::fs::kills_setid(kind, valid) {
            mode = super::fs::setid_after(mode, who.uid == 0, || self.in_group(who, file_gid));
        }
        if kind != libc::S_IFLNK && mode != st.st_mode & 0o7777 {
            chmod_fd(fd.as_fd(), mode)?;
        }
        if !xattrs {
            // Symlinks, fifos and sockets carry no user xattrs: an owner
            // change is accepted and not kept.
            return Ok(());
        }
        let ovr = Override { uid, gid, mode };
        let kept = if (uid, gid) != natural {
            sys::setxattr(fd.as_fd(), upper::OVERRIDE_XATTR, &ovr.format(), 0).map_err(|e| {
                // A filesystem without user xattrs cannot keep the owner.
                if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                    err(libc::EPERM)
                } else {
                    e
                }
            })?;
            Some(ovr)
        } else {
            if cur.is_some() {
                match sys::removexattr(fd.as_fd(), upper::OVERRIDE_XATTR) {
                    Err(e) if e.raw_os_error() != Some(libc::ENODATA) => return Err(e),
                    _ => {}
                }
            }
            None
        };
        if let Some(s) = self.table().state_mut(inode) {
            s.ovr = kept;
        }
        Ok(())
    }
}
