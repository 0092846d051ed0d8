//! Attributes: stat as presented inside, SETATTR (owner, mode, size,
//! times), xattrs and ACCESS.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use fuse_backend_rs::api::filesystem::{Context, GetxattrReply, ListxattrReply, SetattrValid};

use super::OverlayFs;
use crate::rootfs::overlay::inode::{NodeInfo, NodeState, Special};
use crate::rootfs::overlay::iofd::Need;
use crate::rootfs::overlay::layer::Layer;
use crate::rootfs::overlay::sys::{self, err};
use crate::rootfs::upper::{self, Override};

/// A process changing a file, as a FUSE request names it: fs ids inside
/// the sandbox, and its pid in the sandbox's pid namespace.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Actor {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl Actor {
    pub(crate) fn of(ctx: &Context) -> Actor {
        Actor {
            uid: ctx.uid,
            gid: ctx.gid,
            pid: ctx.pid as u32,
        }
    }

    /// sbox's own changes (root inside).
    pub(crate) const SERVER: Actor = Actor {
        uid: 0,
        gid: 0,
        pid: 0,
    };
}

/// The mode bits a file keeps when a process changes its data or its
/// owner, as the VFS rules for a local filesystem mounted in a user
/// namespace say: setuid always goes (the exemption for CAP_FSETID counts
/// only in the host's namespace); setgid goes when the file is group
/// executable, or the process is neither root inside (`root`) nor in the
/// file's group (`in_group`, asked only then). The kernel leaves this to
/// the server (HANDLE_KILLPRIV_V2) because its own FUSE fallback follows
/// the older rule (setgid only with group execute).
pub(crate) fn setid_after(mode: u32, root: bool, in_group: impl FnOnce() -> bool) -> u32 {
    let mut m = mode & !libc::S_ISUID;
    if m & libc::S_ISGID != 0 && (m & libc::S_IXGRP != 0 || !(root || in_group())) {
        m &= !libc::S_ISGID;
    }
    m
}

/// The gids on a `Groups:` line of /proc/PID/status.
fn status_groups(status: &[u8]) -> Vec<u32> {
    String::from_utf8_lossy(status)
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a SETATTR drops set-id bits (by [`setid_after`]): one that
/// truncates (the kernel's flag), or changes the owner of anything but a
/// directory, or a bare ctime update (`chown(f, -1, -1)`), unless it sets
/// the mode itself.
pub(crate) fn kills_setid(kind: u32, valid: SetattrValid) -> bool {
    if valid.contains(SetattrValid::MODE) || kind == libc::S_IFDIR {
        return false;
    }
    let chown = valid.intersects(SetattrValid::UID | SetattrValid::GID)
        || (valid - SetattrValid::CTIME).is_empty();
    chown || (kind == libc::S_IFREG && valid.contains(SetattrValid::KILL_SUIDGID))
}

pub(super) fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// The (atime, mtime) a SETATTR asks for, as utimensat(2) takes them;
/// None when it sets neither.
pub(super) fn set_times(attr: &libc::stat64, valid: SetattrValid) -> Option<[libc::timespec; 2]> {
    if !valid.intersects(SetattrValid::ATIME | SetattrValid::MTIME) {
        return None;
    }
    let pick = |now: SetattrValid, set: SetattrValid, sec, nsec| {
        if valid.contains(now) {
            ts(0, libc::UTIME_NOW)
        } else if valid.contains(set) {
            ts(sec, nsec)
        } else {
            ts(0, libc::UTIME_OMIT)
        }
    };
    Some([
        pick(
            SetattrValid::ATIME_NOW,
            SetattrValid::ATIME,
            attr.st_atime,
            attr.st_atime_nsec,
        ),
        pick(
            SetattrValid::MTIME_NOW,
            SetattrValid::MTIME,
            attr.st_mtime,
            attr.st_mtime_nsec,
        ),
    ])
}

impl OverlayFs {
    /// Host stat of a node's current file.
    pub(super) fn real_stat(&self, info: &NodeInfo) -> io::Result<libc::stat64> {
        if info.state.special == Special::Empty {
            return Ok(self.empty_stat);
        }
        let fd = self
            .layers
            .open(Self::layer_of(info), &info.path, libc::O_PATH)?;
        let mut st = sys::fstat(fd.as_fd())?;
        if info.state.upper && info.state.lower_dir {
            if let Ok(Some((_, l))) = self.layers.probe(Layer::Lower, &info.path) {
                crate::rootfs::overlay::layer::take_newer_mtime(&mut st, &l);
            }
        }
        Ok(st)
    }

    pub(super) fn present(
        &self,
        ino: u64,
        state: &NodeState,
        mut st: libc::stat64,
    ) -> libc::stat64 {
        if state.special == Special::Empty {
            st.st_ino = ino;
            return st;
        }
        let ovr = if state.upper || self.layers.image_lower {
            state.ovr.as_ref()
        } else {
            None
        };
        if self.passthrough {
            upper::present_passthrough(&mut st, ino, ovr, &self.ids);
            return st;
        }
        upper::present(&mut st, ino, ovr, &self.ids);
        st
    }

    pub(super) fn stat_of(&self, info: &NodeInfo) -> io::Result<libc::stat64> {
        let st = self.real_stat(info)?;
        Ok(self.present(info.ino, &info.state, st))
    }

    /// The upper file (copied up) whose xattr `name` is to be changed;
    /// sbox's own xattrs and masked directories are off limits.
    pub(super) fn xattr_target(&self, inode: u64, name: &CStr) -> io::Result<OwnedFd> {
        if upper::is_internal_xattr(name.to_bytes()) {
            return Err(err(libc::EPERM));
        }
        self.check_writable()?;
        let info = self.info(inode)?;
        if info.state.special == Special::Empty {
            return Err(err(libc::EPERM));
        }
        self.copy_up(inode, true)?;
        let info = self.info(inode)?;
        self.layers.open(Layer::Upper, &info.path, libc::O_PATH)
    }

    /// Attributes of a file that lost its last name, from its pinned fd.
    pub(super) fn unlinked_stat(&self, ino: u64) -> Option<io::Result<(libc::stat64, Duration)>> {
        let state = self.table().state(ino).cloned()?;
        let f = self.io.get(ino, Need::Read, state.upper)?;
        Some(sys::fstat(f.as_fd()).map(|st| (self.present(ino, &state, st), self.attr_timeout)))
    }

    /// `ftruncate`/`futimens` on a file that lost its last name (through
    /// its pinned fd); its owner and mode are no longer kept anywhere.
    pub(super) fn unlinked_setattr(
        &self,
        ino: u64,
        attr: &libc::stat64,
        valid: SetattrValid,
    ) -> Option<io::Result<(libc::stat64, Duration)>> {
        let upper = self.table().state(ino)?.upper;
        let f = self.io.get(ino, Need::Write, upper)?;
        let r = (|| {
            if valid.contains(SetattrValid::SIZE) {
                let size = u64::try_from(attr.st_size).map_err(|_| err(libc::EINVAL))?;
                sys::ftruncate(f.as_fd(), size)?;
            }
            if let Some(times) = set_times(attr, valid) {
                sys::futimens(f.as_fd(), &times)?;
            }
            Ok(())
        })();
        Some(r.and_then(|()| match self.unlinked_stat(ino) {
            Some(r) => r,
            None => Err(err(libc::ENOENT)),
        }))
    }

    pub(super) fn op_getattr(
        &self,
        inode: u64,
        handle: Option<u64>,
    ) -> io::Result<(libc::stat64, Duration)> {
        if let Some(h) = handle {
            if let Ok(f) = self.handle(h) {
                let st = sys::fstat(f.as_fd())?;
                let state = self
                    .table()
                    .state(inode)
                    .cloned()
                    .ok_or_else(|| err(libc::ENOENT))?;
                return Ok((self.present(inode, &state, st), self.attr_timeout));
            }
        }
        let info = match self.info(inode) {
            Ok(i) => i,
            Err(e) => return self.unlinked_stat(inode).unwrap_or(Err(e)),
        };
        let st = self.real_stat(&info)?;
        if info.state.kind == libc::S_IFREG {
            // The host may have replaced the file: stop reading the old one.
            self.io.check(inode, (st.st_dev, st.st_ino));
        }
        Ok((self.present(inode, &info.state, st), self.attr_timeout))
    }

    /// Drops the set-id bits that a change of a regular file's data by
    /// `who` drops on a local filesystem ([`setid_after`]); nothing to do
    /// for root inside, or for a file already gone from its directory.
    pub(super) fn data_changed_by(&self, who: Actor, inode: u64, handle: u64) -> io::Result<()> {
        let setid = libc::S_ISUID | libc::S_ISGID;
        let (kind, ovr) = match self.table().state(inode) {
            Some(s) => (s.kind, s.ovr),
            None => return Ok(()),
        };
        if kind != libc::S_IFREG {
            return Ok(());
        }
        // Every write asks (the kernel sets the flag for any writer in a
        // user namespace): answer from the cache when it can.
        match ovr {
            Some(o) if o.mode & setid == 0 => return Ok(()),
            Some(_) => {}
            None => {
                // The file the write goes to: its handle when it has one
                // (no second open per write).
                let f = match self.handle(handle) {
                    Ok(h) if handle != 0 => h,
                    _ => self.io_file(inode, Need::Write)?,
                };
                if sys::fstat(f.as_fd())?.st_mode & setid == 0 {
                    return Ok(());
                }
            }
        }
        let Ok(info) = self.info(inode) else {
            return Ok(());
        };
        let st = self.stat_of(&info)?;
        let mode = st.st_mode & 0o7777;
        let new = setid_after(mode, who.uid == 0, || self.in_group(who, st.st_gid));
        if new == mode {
            return Ok(());
        }
        let mut attr = sys::zeroed_stat();
        attr.st_mode = libc::S_IFREG | new;
        self.op_setattr(Actor::SERVER, inode, attr, None, SetattrValid::MODE)
            .map(|_| ())
    }

    /// Whether `who` is in the group `gid` (inside ids): its own gid, or
    /// one of its supplementary groups as the sandbox's /proc lists them
    /// (read through the maps; not known before the command runs).
    pub(crate) fn in_group(&self, who: Actor, gid: u32) -> bool {
        if who.gid == gid {
            return true;
        }
        let Some(proc) = self.procfs.get() else {
            return false;
        };
        let path = format!("{}/status", who.pid);
        let Ok(fd) = sys::open_beneath(proc.as_fd(), path.as_bytes(), libc::O_RDONLY, 0) else {
            return false;
        };
        let mut buf = vec![0u8; 8192];
        let Ok(n) = sys::pread(fd.as_fd(), &mut buf, 0) else {
            return false;
        };
        status_groups(&buf[..n])
            .into_iter()
            .any(|host| self.ids.process_gid(host) == Some(gid))
    }

    pub(super) fn op_setattr(
        &self,
        who: Actor,
        inode: u64,
        attr: libc::stat64,
        handle: Option<u64>,
        valid: SetattrValid,
    ) -> io::Result<(libc::stat64, Duration)> {
        let info = match self.info(inode) {
            Ok(i) => i,
            Err(e) => return self.unlinked_setattr(inode, &attr, valid).unwrap_or(Err(e)),
        };
        if info.state.special == Special::Empty {
            return Err(err(libc::EPERM));
        }
        self.check_writable()?;
        let truncating = valid.contains(SetattrValid::SIZE) && attr.st_size == 0;
        self.copy_up(inode, !truncating)?;
        let info = self.info(inode)?;
        let kind = info.state.kind;
        let file = handle.and_then(|h| self.handle(h).ok());
        let (pfd, n) = self.layers.parent_of(Layer::Upper, &info.path)?;

        if valid.contains(SetattrValid::SIZE) {
            if kind == libc::S_IFDIR {
                return Err(err(libc::EISDIR));
            }
            let size = u64::try_from(attr.st_size).map_err(|_| err(libc::EINVAL))?;
            match file.as_deref() {
                Some(f) if sys::ftruncate(f.as_fd(), size).is_ok() => {}
                _ => {
                    let fd = self.layers.open(Layer::Upper, &info.path, libc::O_WRONLY)?;
                    sys::ftruncate(fd.as_fd(), size)?;
                }
            }
        }

        let owner_bits = SetattrValid::MODE | SetattrValid::UID | SetattrValid::GID;
        if self.passthrough && (valid.intersects(owner_bits) || kills_setid(kind, valid)) {
            self.pt_set_owner_mode(who, inode, &info.path, &attr, valid)?;
        } else if valid.intersects(owner_bits) || kills_setid(kind, valid) {
            let cur_st = self.real_stat(&info)?;
            let mut new = upper::presented_override(&cur_st, info.state.ovr.as_ref(), &self.ids);
            let file_gid = new.gid;
            if valid.contains(SetattrValid::UID) {
                new.uid = attr.st_uid;
            }
            if valid.contains(SetattrValid::GID) {
                new.gid = attr.st_gid;
            }
            if valid.contains(SetattrValid::MODE) {
                new.mode = attr.st_mode & 0o7777;
            } else if kills_setid(kind, valid) {
                new.mode = setid_after(new.mode, who.uid == 0, || self.in_group(who, file_gid));
            }
            if upper::can_have_xattrs(kind) {
                let fd = self.layers.open(Layer::Upper, &info.path, libc::O_PATH)?;
                upper::write_override(fd.as_fd(), kind, &new, &self.ids)?;
                sys::fchmodat(pfd.as_fd(), &n, upper::real_perm(kind, new.mode))?;
                let mut t = self.table();
                if let Some(s) = t.state_mut(inode) {
                    s.ovr = if upper::needs_override(kind, &new, &self.ids) {
                        Some(new)
                    } else {
                        None
                    };
                }
            } else {
                // Symlinks, fifos and sockets carry no xattrs: the mode is
                // real, the owner is kept on the directory.
                if kind != libc::S_IFLNK && valid.contains(SetattrValid::MODE) {
                    sys::fchmodat(pfd.as_fd(), &n, new.mode & 0o777)?;
                }
                let owner = self.kept_owner(new.uid, new.gid);
                if valid.intersects(SetattrValid::UID | SetattrValid::GID) {
                    upper::write_entry_owner(pfd.as_fd(), n.to_bytes(), owner)?;
                    sys::touch_ctime(pfd.as_fd(), &n)?;
                }
                let real = self.real_stat(&info)?.st_mode & 0o7777;
                let mut t = self.table();
                if let Some(s) = t.state_mut(inode) {
                    s.ovr = owner.map(|(uid, gid)| Override {
                        uid,
                        gid,
                        mode: real,
                    });
                }
            }
        }

        if let Some(times) = set_times(&attr, valid) {
            sys::utimensat(pfd.as_fd(), &n, &times)?;
        }
        if (valid - SetattrValid::CTIME).is_empty() {
            // chown(-1, -1) and the like: nothing changes but the ctime.
            sys::touch_ctime(pfd.as_fd(), &n)?;
        }
        let info = self.info(inode)?;
        Ok((self.stat_of(&info)?, self.attr_timeout))
    }

    pub(super) fn op_readlink(&self, inode: u64) -> io::Result<Vec<u8>> {
        let info = self.info(inode)?;
        if info.state.kind != libc::S_IFLNK {
            return Err(err(libc::EINVAL));
        }
        let (pfd, n) = self.layers.parent_of(Self::layer_of(&info), &info.path)?;
        sys::readlinkat(pfd.as_fd(), &n)
    }

    pub(super) fn op_setxattr(
        &self,
        inode: u64,
        name: &CStr,
        value: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        let fd = self.xattr_target(inode, name)?;
        sys::setxattr(fd.as_fd(), name, value, flags as i32)
    }

    pub(super) fn op_getxattr(
        &self,
        inode: u64,
        name: &CStr,
        size: u32,
    ) -> io::Result<GetxattrReply> {
        if upper::is_internal_xattr(name.to_bytes()) {
            return Err(err(libc::ENODATA));
        }
        let info = self.info(inode)?;
        if info.state.special == Special::Empty {
            return Err(err(libc::ENODATA));
        }
        let fd = self
            .layers
            .open(Self::layer_of(&info), &info.path, libc::O_PATH)?;
        let v = sys::getxattr(fd.as_fd(), name)?.ok_or_else(|| err(libc::ENODATA))?;
        if size == 0 {
            Ok(GetxattrReply::Count(v.len() as u32))
        } else if v.len() > size as usize {
            Err(err(libc::ERANGE))
        } else {
            Ok(GetxattrReply::Value(v))
        }
    }

    pub(super) fn op_listxattr(&self, inode: u64, size: u32) -> io::Result<ListxattrReply> {
        let info = self.info(inode)?;
        let raw = if info.state.special == Special::Empty {
            Vec::new()
        } else {
            let fd = self
                .layers
                .open(Self::layer_of(&info), &info.path, libc::O_PATH)?;
            sys::listxattr(fd.as_fd())?
        };
        let mut out = Vec::with_capacity(raw.len());
        for n in raw.split(|&c| c == 0).filter(|n| !n.is_empty()) {
            if !upper::is_internal_xattr(n) {
                out.extend_from_slice(n);
                out.push(0);
            }
        }
        if size == 0 {
            Ok(ListxattrReply::Count(out.len() as u32))
        } else if out.len() > size as usize {
            Err(err(libc::ERANGE))
        } else {
            Ok(ListxattrReply::Names(out))
        }
    }

    pub(super) fn op_removexattr(&self, inode: u64, name: &CStr) -> io::Result<()> {
        let fd = self.xattr_target(inode, name)?;
        sys::removexattr(fd.as_fd(), name)
    }

    pub(super) fn op_access(&self, ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
        let info = self.info(inode)?;
        let st = self.stat_of(&info)?;
        let mask = mask as i32;
        if mask == libc::F_OK {
            return Ok(());
        }
        let mode = st.st_mode;
        if ctx.uid == 0 {
            if mask & libc::X_OK != 0
                && st.st_mode & libc::S_IFMT != libc::S_IFDIR
                && mode & 0o111 == 0
            {
                return Err(err(libc::EACCES));
            }
            return Ok(());
        }
        let bits = if st.st_uid == ctx.uid {
            (mode >> 6) & 7
        } else if st.st_gid == ctx.gid {
            (mode >> 3) & 7
        } else {
            mode & 7
        } as i32;
        if (mask & libc::R_OK != 0 && bits & 4 == 0)
            || (mask & libc::W_OK != 0 && bits & 2 == 0)
            || (mask & libc::X_OK != 0 && bits & 1 == 0)
        {
            return Err(err(libc::EACCES));
        }
        Ok(())
    }
}

#[cfg(test)]
mod setid_tests {
    use super::*;

    #[test]
    fn setid_rules_of_a_local_filesystem_in_a_user_namespace() {
        // Root inside loses setuid too (CAP_FSETID counts only on the host).
        assert_eq!(setid_after(0o6777, true, || true), 0o0777);
        // Setgid without group execute stays for root and group members...
        assert_eq!(setid_after(0o2767, true, || false), 0o2767);
        assert_eq!(setid_after(0o2767, false, || true), 0o2767);
        // ...and goes for anyone else.
        assert_eq!(setid_after(0o2767, false, || false), 0o0767);
        assert_eq!(setid_after(0o6757, false, || true), 0o0757);
    }

    #[test]
    fn groups_of_a_status_file() {
        let status = b"Name:\tsh\nGid:\t5\t5\t5\t5\nGroups:\t1000 100999 \nNSpid:\t7\n";
        assert_eq!(status_groups(status), vec![1000, 100999]);
        assert!(status_groups(b"Name:\tsh\nGroups:\t\n").is_empty());
    }

    #[test]
    fn which_setattrs_drop_setid_bits() {
        let reg = libc::S_IFREG;
        assert!(kills_setid(
            reg,
            SetattrValid::SIZE | SetattrValid::KILL_SUIDGID
        ));
        assert!(!kills_setid(reg, SetattrValid::SIZE));
        assert!(kills_setid(reg, SetattrValid::UID));
        assert!(kills_setid(libc::S_IFIFO, SetattrValid::GID));
        assert!(!kills_setid(libc::S_IFDIR, SetattrValid::UID));
        assert!(kills_setid(reg, SetattrValid::empty()));
        assert!(!kills_setid(reg, SetattrValid::MODE | SetattrValid::UID));
        assert!(!kills_setid(reg, SetattrValid::ATIME | SetattrValid::MTIME));
    }
}
