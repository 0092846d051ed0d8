//! Making and removing entries: staged in the work directory, moved into
//! the upper layer; removal leaves a whiteout where the lower layer has the
//! name.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

use fuse_backend_rs::abi::fuse_abi::CreateIn;
use fuse_backend_rs::api::filesystem::{Context, Entry, OpenOptions};

use super::fileio::open_flags;
use super::lookup::valid_name;
use super::OverlayFs;
use crate::rootfs::overlay::inode::{NodeInfo, NodeState, Special};
use crate::rootfs::overlay::iofd::Need;
use crate::rootfs::overlay::layer::{join, Layer};
use crate::rootfs::overlay::passthrough::New;
use crate::rootfs::overlay::sys::{self, err};
use crate::rootfs::overlay::whiteout;
use crate::rootfs::upper::{self, Override};

/// Whether a (presented or host) stat is of a symlink, fifo or socket,
/// whose owner is kept on its directory.
pub(super) fn is_special(st: &libc::stat64) -> bool {
    !upper::can_have_xattrs(st.st_mode & libc::S_IFMT)
}

impl OverlayFs {
    /// Before `name` in `parent` goes away: if it is the last name of a
    /// regular file the kernel still holds, keep the file open for the
    /// processes that may have it open (unlinked files stay readable).
    pub(super) fn pin_before_removal(&self, parent: u64, name: &[u8]) {
        let (ino, upper, path) = {
            let t = self.table();
            let Some(ino) = t.child_number(parent, name) else {
                return;
            };
            match (t.refs(ino), t.state(ino)) {
                (Some((lookups, 1)), Some(s)) if lookups > 0 && s.kind == libc::S_IFREG => {}
                _ => return,
            }
            let upper = t.state(ino).map(|s| s.upper).unwrap_or(false);
            let Some(path) = t.path(ino) else {
                return;
            };
            (ino, upper, path)
        };
        match self.open_io(upper, &path, Need::Read) {
            Ok((fd, how)) => {
                self.io.put(ino, File::from(fd), how, true);
            }
            Err(e) => log::debug!(
                "overlay: cannot keep {} open before its removal: {e}",
                String::from_utf8_lossy(&path)
            ),
        }
    }

    /// Checks and prepares the creation of `name` in `parent`: returns the
    /// (copied-up) parent and the new path.
    pub(crate) fn prepare_new(&self, parent: u64, name: &[u8]) -> io::Result<(NodeInfo, Vec<u8>)> {
        valid_name(name)?;
        self.check_writable()?;
        let pinfo = self.info(parent)?;
        if pinfo.state.special == Special::Empty {
            return Err(err(libc::EPERM));
        }
        let rel = join(&pinfo.path, name);
        // Looked up (and counted) just before: not counted again.
        if self.masks.hidden(&rel) || self.masks.empty(&rel) {
            return Err(err(libc::EACCES));
        }
        self.copy_up(parent, true)?;
        Ok((self.info(parent)?, rel))
    }

    /// Owner for a new entry made by `ctx` in `parent` (set-gid dirs pass
    /// their group on), and whether the set-gid bit is inherited.
    pub(crate) fn new_owner(&self, ctx: &Context, pinfo: &NodeInfo) -> (u32, u32, bool) {
        match self.stat_of(pinfo) {
            Ok(pst) if pst.st_mode & libc::S_ISGID != 0 => (ctx.uid, pst.st_gid, true),
            _ => (ctx.uid, ctx.gid, false),
        }
    }

    /// Moves a staged entry from the work dir to `rel` in the upper layer,
    /// replacing a whiteout there (a new directory then becomes opaque).
    pub(super) fn install(&self, rel: &[u8], tmp: &CStr, is_dir: bool) -> io::Result<()> {
        let (pfd, n) = self.layers.parent_of(Layer::Upper, rel)?;
        let work = self.layers.work();
        let res = match sys::fstatat(pfd.as_fd(), &n) {
            Ok(st) if upper::is_whiteout_at(pfd.as_fd(), &n, &st) => {
                if is_dir {
                    let dfd = sys::open_beneath(work, tmp.to_bytes(), libc::O_PATH, 0)?;
                    upper::set_opaque(dfd.as_fd())?;
                    sys::renameat2(work, tmp, pfd.as_fd(), &n, libc::RENAME_EXCHANGE)
                        .and_then(|_| sys::unlinkat(work, tmp, 0))
                } else {
                    sys::renameat2(work, tmp, pfd.as_fd(), &n, 0)
                }
            }
            Ok(_) => Err(err(libc::EEXIST)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                sys::renameat2(work, tmp, pfd.as_fd(), &n, libc::RENAME_NOREPLACE)
            }
            Err(e) => Err(e),
        };
        if res.is_err() {
            let flag = if is_dir { libc::AT_REMOVEDIR } else { 0 };
            let _ = sys::unlinkat(work, tmp, flag);
        }
        res
    }

    /// [`install`](Self::install) of a staged symlink, fifo or socket whose
    /// owner is kept (or not) on its new directory.
    pub(super) fn install_special(
        &self,
        rel: &[u8],
        tmp: &CStr,
        owner: Option<(u32, u32)>,
    ) -> io::Result<()> {
        self.install(rel, tmp, false)?;
        // The kernel holds the directory locked while it makes an entry: no
        // lookup sees it before its owner is kept. When the directory has
        // no room for that (ENOSPC, E2BIG), the entry shows as the caller's.
        if let Some(o) = owner {
            if let Err(e) = self.set_entry_owner_at(rel, Some(o)) {
                log::debug!(
                    "overlay: the owner of {} is not kept: {e}",
                    String::from_utf8_lossy(rel)
                );
            }
        }
        Ok(())
    }

    /// Sets owner/mode of a freshly staged regular file or directory.
    pub(super) fn init_meta(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
        kind: u32,
        ovr: &Override,
    ) -> io::Result<()> {
        upper::write_override(fd, kind, ovr, &self.ids)?;
        let real = upper::real_perm(kind, ovr.mode);
        match sys::fchmod(fd, real) {
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => {
                // O_PATH fd: go through /proc.
                let p = sys::cstr(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?;
                sys::fchmodat(self.layers.work(), &p, real)
            }
            r => r,
        }
    }

    /// The owner to keep for a symlink, fifo or socket presented as
    /// (uid, gid): None when it is the caller's (what its host file shows).
    pub(crate) fn kept_owner(&self, uid: u32, gid: u32) -> Option<(u32, u32)> {
        ((uid, gid) != (self.ids.inside_uid, self.ids.inside_gid)).then_some((uid, gid))
    }

    /// Keeps (or drops) the owner of the upper symlink, fifo or socket at
    /// `rel`.
    pub(crate) fn set_entry_owner_at(
        &self,
        rel: &[u8],
        owner: Option<(u32, u32)>,
    ) -> io::Result<()> {
        let (pfd, n) = self.layers.parent_of(Layer::Upper, rel)?;
        upper::write_entry_owner(pfd.as_fd(), n.to_bytes(), owner)
    }

    pub(super) fn remove_tmp(&self, tmp: &CStr, is_dir: bool) {
        let flag = if is_dir { libc::AT_REMOVEDIR } else { 0 };
        let _ = sys::unlinkat(self.layers.work(), tmp, flag);
    }

    /// The parent and relative path of a name to unlink or rmdir; names
    /// inside an empty directory or hidden do not exist.
    pub(super) fn removal_target(
        &self,
        parent: u64,
        name: &[u8],
    ) -> io::Result<(NodeInfo, Vec<u8>)> {
        valid_name(name)?;
        self.check_writable()?;
        let pinfo = self.info(parent)?;
        if pinfo.state.special == Special::Empty {
            return Err(err(libc::ENOENT));
        }
        let rel = join(&pinfo.path, name);
        if self.masks.hidden(&rel) {
            return Err(err(libc::ENOENT));
        }
        Ok((pinfo, rel))
    }

    pub(super) fn op_symlink(
        &self,
        ctx: &Context,
        linkname: &CStr,
        parent: u64,
        name: &CStr,
    ) -> io::Result<Entry> {
        if self.passthrough {
            return Ok(self
                .pt_make(ctx, parent, name.to_bytes(), New::Symlink(linkname))?
                .0);
        }
        let (pinfo, rel) = self.prepare_new(parent, name.to_bytes())?;
        // The caller's symlink in a directory that is not set-gid (its
        // override says so, and set-gid directories always have one) has
        // no owner to keep: no stat of the directory for it.
        let setgid_dir = pinfo.state.ovr.is_some_and(|o| o.mode & libc::S_ISGID != 0);
        let owner = if !setgid_dir && self.kept_owner(ctx.uid, ctx.gid).is_none() {
            None
        } else {
            let (uid, gid, _) = self.new_owner(ctx, &pinfo);
            self.kept_owner(uid, gid)
        };
        let tmp = self.layers.tmp_name();
        sys::symlinkat(linkname, self.layers.work(), &tmp)?;
        self.install_special(&rel, &tmp, owner)?;
        self.do_lookup(parent, name.to_bytes())
    }

    pub(super) fn op_mknod(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
    ) -> io::Result<Entry> {
        let kind = match mode & libc::S_IFMT {
            0 => libc::S_IFREG,
            k @ (libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK) => k,
            _ => return Err(err(libc::EPERM)),
        };
        if self.passthrough {
            let new = New::Node(kind, mode & 0o7777);
            return Ok(self.pt_make(ctx, parent, name.to_bytes(), new)?.0);
        }
        let (pinfo, rel) = self.prepare_new(parent, name.to_bytes())?;
        let (uid, gid, _) = self.new_owner(ctx, &pinfo);
        let tmp = self.layers.tmp_name();
        let work = self.layers.work();
        sys::mknodat(work, &tmp, kind | 0o600, 0)?;
        let res = (|| {
            if kind == libc::S_IFREG {
                let fd = sys::open_beneath(work, tmp.to_bytes(), libc::O_PATH, 0)?;
                let ovr = Override {
                    uid,
                    gid,
                    mode: mode & 0o7777,
                };
                self.init_meta(fd.as_fd(), kind, &ovr)
            } else {
                sys::fchmodat(work, &tmp, mode & 0o777)
            }
        })();
        if let Err(e) = res {
            self.remove_tmp(&tmp, false);
            return Err(e);
        }
        if kind == libc::S_IFREG {
            self.install(&rel, &tmp, false)?;
        } else {
            self.install_special(&rel, &tmp, self.kept_owner(uid, gid))?;
        }
        self.do_lookup(parent, name.to_bytes())
    }

    pub(super) fn op_mkdir(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
    ) -> io::Result<Entry> {
        if self.passthrough {
            let new = New::Node(libc::S_IFDIR, mode & 0o7777);
            return Ok(self.pt_make(ctx, parent, name.to_bytes(), new)?.0);
        }
        let (pinfo, rel) = self.prepare_new(parent, name.to_bytes())?;
        let (uid, gid, sgid) = self.new_owner(ctx, &pinfo);
        let tmp = self.layers.tmp_name();
        let work = self.layers.work();
        sys::mkdirat(work, &tmp, 0o700)?;
        let res = (|| {
            let fd =
                sys::open_beneath(work, tmp.to_bytes(), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            let mut m = mode & 0o7777;
            if sgid {
                m |= libc::S_ISGID;
            }
            let ovr = Override { uid, gid, mode: m };
            self.init_meta(fd.as_fd(), libc::S_IFDIR, &ovr)
        })();
        if let Err(e) = res {
            self.remove_tmp(&tmp, true);
            return Err(e);
        }
        self.install(&rel, &tmp, true)?;
        self.do_lookup(parent, name.to_bytes())
    }

    /// Makes the directory `path` (absolute, in the view) and those missing
    /// on the way to it, as init's mkdir would (root inside, 0755), before
    /// the mount: one call here instead of a lookup and a MKDIR request per
    /// directory on init's way (an image root lacks the project's path).
    /// Stops quietly at a masked path, a non-directory or an error: init
    /// meets the same there and says what is wrong. The nodes it looks up
    /// stay known to the server, as if the kernel held them.
    pub(crate) fn make_mount_point(&self, path: &std::path::Path) {
        let Ok(rel) = super::lookup::view_rel(path) else {
            return;
        };
        if rel.is_empty() {
            return;
        }
        let root = Context {
            uid: 0,
            gid: 0,
            pid: 0,
        };
        let mut parent = crate::rootfs::overlay::inode::ROOT;
        let mut end = 0;
        for comp in rel.split(|&b| b == b'/') {
            end += comp.len();
            let so_far = &rel[..end];
            end += 1;
            if self.masks.hidden(so_far) || self.masks.empty(so_far) {
                return;
            }
            let entry = match self.do_lookup(parent, comp) {
                Ok(e) => e,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let Ok(name) = std::ffi::CString::new(comp) else {
                        return;
                    };
                    match self.op_mkdir(&root, parent, &name, 0o755) {
                        Ok(e) => e,
                        Err(_) => return,
                    }
                }
                Err(_) => return,
            };
            if entry.attr.st_mode & libc::S_IFMT != libc::S_IFDIR {
                return;
            }
            parent = entry.inode;
        }
    }

    pub(super) fn op_unlink(&self, parent: u64, name: &CStr) -> io::Result<()> {
        let name = name.to_bytes();
        let (pinfo, rel) = self.removal_target(parent, name)?;
        if self.masks.empty(&rel) {
            return Err(err(libc::EBUSY));
        }
        let r = self
            .layers
            .resolve_child(&pinfo.state, &rel)?
            .ok_or_else(|| err(libc::ENOENT))?;
        if r.st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            return Err(err(libc::EISDIR));
        }
        self.pin_before_removal(parent, name);
        if self.layers.lower_has(&pinfo.state, &rel)? {
            self.copy_up(parent, true)?;
            let (pfd, n) = self.layers.parent_of(Layer::Upper, &rel)?;
            whiteout::whiteout_over(&self.layers, pfd.as_fd(), &n, false)?;
        } else {
            let (pfd, n) = self.layers.parent_of(Layer::Upper, &rel)?;
            sys::unlinkat(pfd.as_fd(), &n, 0)?;
        }
        if r.layer == Layer::Upper && !self.passthrough && r.ovr.is_some() && is_special(&r.st) {
            // The owner kept for it goes with it.
            let _ = self.set_entry_owner_at(&rel, None);
        }
        self.table().unlink(parent, name);
        Ok(())
    }

    pub(super) fn op_rmdir(&self, parent: u64, name: &CStr) -> io::Result<()> {
        let name = name.to_bytes();
        let (pinfo, rel) = self.removal_target(parent, name)?;
        if self.masks.empty(&rel) || self.masks.masks_below(&rel) {
            return Err(err(libc::EBUSY));
        }
        let r = self
            .layers
            .resolve_child(&pinfo.state, &rel)?
            .ok_or_else(|| err(libc::ENOENT))?;
        if r.st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(err(libc::ENOTDIR));
        }
        let cinfo = NodeInfo {
            ino: 0,
            path: rel.clone(),
            state: NodeState {
                kind: libc::S_IFDIR,
                upper: r.layer == Layer::Upper,
                lower_dir: r.lower_dir,
                special: Special::Normal,
                ovr: None,
            },
        };
        if !self.listing(&cinfo)?.is_empty() {
            return Err(err(libc::ENOTEMPTY));
        }
        let has_lower = self.layers.lower_has(&pinfo.state, &rel)?;
        if r.layer == Layer::Upper {
            if !self.passthrough {
                whiteout::clear_whiteouts(&self.layers, &rel)?;
            }
            let (pfd, n) = self.layers.parent_of(Layer::Upper, &rel)?;
            if has_lower {
                whiteout::whiteout_over(&self.layers, pfd.as_fd(), &n, true)?;
            } else {
                sys::unlinkat(pfd.as_fd(), &n, libc::AT_REMOVEDIR)?;
            }
        } else {
            self.copy_up(parent, true)?;
            let (pfd, n) = self.layers.parent_of(Layer::Upper, &rel)?;
            whiteout::whiteout_over(&self.layers, pfd.as_fd(), &n, false)?;
        }
        self.table().unlink(parent, name);
        Ok(())
    }

    pub(super) fn op_link(&self, inode: u64, newparent: u64, newname: &CStr) -> io::Result<Entry> {
        let name = newname.to_bytes();
        let src = self.info(inode)?;
        if src.state.kind == libc::S_IFDIR || src.state.special == Special::Empty {
            return Err(err(libc::EPERM));
        }
        let (_pinfo, rel) = self.prepare_new(newparent, name)?;
        if self.passthrough {
            return self.pt_link(inode, newparent, name, &rel);
        }
        self.copy_up(inode, true)?;
        let src = self.info(inode)?;
        let (sfd, sn) = self.layers.parent_of(Layer::Upper, &src.path)?;
        let (pfd, n) = self.layers.parent_of(Layer::Upper, &rel)?;
        match sys::fstatat(pfd.as_fd(), &n) {
            Ok(st) if upper::is_whiteout_at(pfd.as_fd(), &n, &st) => {
                let tmp = self.layers.tmp_name();
                sys::linkat(sfd.as_fd(), &sn, self.layers.work(), &tmp)?;
                if let Err(e) = sys::renameat2(self.layers.work(), &tmp, pfd.as_fd(), &n, 0) {
                    self.remove_tmp(&tmp, false);
                    return Err(e);
                }
            }
            Ok(_) => return Err(err(libc::EEXIST)),
            Err(_) => sys::linkat(sfd.as_fd(), &sn, pfd.as_fd(), &n)?,
        }
        if !upper::can_have_xattrs(src.state.kind) {
            if let Some(o) = src.state.ovr {
                // The new name's directory keeps the owner too.
                let _ = upper::write_entry_owner(pfd.as_fd(), n.to_bytes(), Some((o.uid, o.gid)));
            }
        }
        let fd = self.layers.open(Layer::Upper, &rel, libc::O_PATH)?;
        let st = sys::fstat(fd.as_fd())?;
        let state = {
            let mut t = self.table();
            let state = t.state(inode).cloned().ok_or_else(|| err(libc::ENOENT))?;
            t.lookup_ref(newparent, name, inode, state.clone());
            state
        };
        Ok(self.entry(inode, self.present(inode, &state, st)))
    }

    pub(super) fn op_create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        args: CreateIn,
    ) -> io::Result<(Entry, Option<u64>, OpenOptions, Option<u32>)> {
        if self.passthrough {
            let flags = open_flags(args.flags as i32) & !libc::O_TRUNC;
            let new = New::File(args.mode & 0o7777, flags);
            let (entry, fd) = self.pt_make(ctx, parent, name.to_bytes(), new)?;
            let h = fd.map(|fd| self.new_handle(File::from(fd)));
            return Ok((entry, h, OpenOptions::empty(), None));
        }
        let (pinfo, rel) = self.prepare_new(parent, name.to_bytes())?;
        let (uid, gid, _) = self.new_owner(ctx, &pinfo);
        let tmp = self.layers.tmp_name();
        let flags = open_flags(args.flags as i32) & !libc::O_TRUNC;
        let fd = sys::open_beneath(
            self.layers.work(),
            tmp.to_bytes(),
            flags | libc::O_CREAT | libc::O_EXCL,
            0o600,
        )?;
        let ovr = Override {
            uid,
            gid,
            mode: args.mode & 0o7777,
        };
        if let Err(e) = self.init_meta(fd.as_fd(), libc::S_IFREG, &ovr) {
            self.remove_tmp(&tmp, false);
            return Err(e);
        }
        self.install(&rel, &tmp, false)?;
        let entry = self.do_lookup(parent, name.to_bytes())?;
        let h = self.new_handle(File::from(fd));
        Ok((entry, Some(h), OpenOptions::empty(), None))
    }
}
