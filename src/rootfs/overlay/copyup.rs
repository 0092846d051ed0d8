//! Copy-up: materialising a lower entry in the upper layer.
//!
//! The copy is staged under a temporary name in the work directory (same
//! filesystem as the upper), gets its content (copy_file_range, holes kept
//! with SEEK_DATA/SEEK_HOLE), xattrs, presented owner/mode (override xattr),
//! origin inode number and times, and is then renamed into place with
//! RENAME_NOREPLACE: other processes see either the lower file or the
//! complete copy. Missing parent directories are copied up first, keeping
//! their metadata.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use super::fs::OverlayFs;
use super::inode::{NodeState, Special, ROOT};
use super::layer::{join, Layer};
use super::sys::{self, err};
use crate::rootfs::upper::{self, Override};

fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

const CHUNK: usize = 1 << 30;

/// Copies `len` bytes at `off` with copy_file_range, falling back to
/// pread/pwrite when the kernel cannot do it between these files.
fn copy_range(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, off: i64, len: i64) -> io::Result<()> {
    let mut so = off;
    let mut d_o = off;
    let end = off + len;
    while so < end {
        let want = ((end - so) as u64).min(CHUNK as u64) as usize;
        match sys::copy_file_range(src, &mut so, dst, &mut d_o, want) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV)
                        | Some(libc::EINVAL)
                        | Some(libc::ENOSYS)
                        | Some(libc::EOPNOTSUPP)
                        | Some(libc::EBADF)
                ) =>
            {
                return copy_plain(src, dst, so, end - so);
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn copy_plain(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, off: i64, len: i64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = off;
    let end = off + len;
    while pos < end {
        let want = ((end - pos) as usize).min(buf.len());
        let n = sys::pread(src, &mut buf[..want], pos)?;
        if n == 0 {
            break;
        }
        let mut done = 0;
        while done < n {
            done += sys::pwrite(dst, &buf[done..n], pos + done as i64)?;
        }
        pos += n as i64;
    }
    Ok(())
}

/// Copies file content keeping holes.
fn copy_data(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, size: i64) -> io::Result<()> {
    let mut off = 0i64;
    while off < size {
        let data = match sys::lseek(src, off, libc::SEEK_DATA) {
            Ok(d) => d,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(_) => {
                copy_range(src, dst, off, size - off)?;
                break;
            }
        };
        if data >= size {
            break;
        }
        let hole = sys::lseek(src, data, libc::SEEK_HOLE)
            .unwrap_or(size)
            .min(size);
        copy_range(src, dst, data, hole - data)?;
        off = hole;
    }
    sys::ftruncate(dst, size as u64)
}

/// Copies xattrs; failures outside the `user.` namespace are ignored (the
/// server is unprivileged: security.capability, trusted.* are lost).
fn copy_xattrs(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<()> {
    let names = match sys::listxattr(src) {
        Ok(n) => n,
        Err(_) => return Ok(()),
    };
    for name in names.split(|&c| c == 0).filter(|n| !n.is_empty()) {
        if upper::is_internal_xattr(name) {
            continue;
        }
        let cname = sys::cstr(name)?;
        let value = match sys::getxattr(src, &cname) {
            Ok(Some(v)) => v,
            _ => continue,
        };
        if let Err(e) = sys::setxattr(dst, &cname, &value, 0) {
            if name.starts_with(b"user.") {
                return Err(e);
            }
            log::debug!(
                "overlay copy-up: dropping xattr {}: {e}",
                String::from_utf8_lossy(name)
            );
        }
    }
    Ok(())
}

impl OverlayFs {
    /// Ensures node `ino` (and its ancestors) exist in the upper layer.
    /// `with_data`: copy the content of a regular file (false when it is
    /// about to be truncated to zero).
    pub(crate) fn copy_up(&self, ino: u64, with_data: bool) -> io::Result<()> {
        match self.table().state(ino) {
            Some(s) if s.upper => return Ok(()),
            Some(_) => {}
            None => return Err(err(libc::ENOENT)),
        }
        let _g = self.copyup_lock.lock().unwrap_or_else(|e| e.into_inner());
        let chain = {
            let t = self.table();
            let mut v = Vec::new();
            let mut cur = ino;
            loop {
                let s = t.state(cur).ok_or_else(|| err(libc::ENOENT))?;
                if s.upper {
                    break;
                }
                v.push(cur);
                if cur == ROOT {
                    break;
                }
                cur = t.parent_of(cur).ok_or_else(|| err(libc::ENOENT))?;
            }
            v.reverse();
            v
        };
        for n in chain {
            let info = self.info(n)?;
            if info.state.upper {
                continue;
            }
            if info.state.special == Special::Empty {
                return Err(err(libc::EPERM));
            }
            let (_, ovr) = self.copy_up_path(&info.path, with_data || n != ino, Some(n))?;
            if let Some(s) = self.table().state_mut(n) {
                s.upper = true;
                s.ovr = ovr;
            }
        }
        Ok(())
    }

    fn finish_meta(
        &self,
        fd: BorrowedFd<'_>,
        kind: u32,
        ovr: &Override,
        origin: Option<u64>,
    ) -> io::Result<()> {
        upper::write_override(fd, kind, ovr, &self.ids)?;
        if let Some(o) = origin {
            sys::setxattr(fd, upper::ORIGIN_XATTR, o.to_string().as_bytes(), 0)?;
        }
        sys::fchmod(fd, upper::real_perm(kind, ovr.mode))
    }

    /// Copies the lower entry at `rel` into the upper layer (its parent must
    /// already be there). Returns its kind and the override it got.
    pub(crate) fn copy_up_path(
        &self,
        rel: &[u8],
        with_data: bool,
        origin: Option<u64>,
    ) -> io::Result<(u32, Option<Override>)> {
        let (lfd, lst) = self
            .layers
            .probe(Layer::Lower, rel)?
            .ok_or_else(|| err(libc::ENOENT))?;
        let kind = lst.st_mode & libc::S_IFMT;
        let lower_ovr = self.layers.lower_override(rel, &lst)?;
        let ovr = upper::presented_override(&lst, lower_ovr.as_ref(), &self.ids);
        // A lower file with several names gets a new number once copied:
        // its other names still show the lower file.
        let origin = origin.filter(|_| kind == libc::S_IFDIR || lst.st_nlink <= 1);
        let work = self.layers.work();
        let tmp = self.layers.tmp_name();
        let times = [
            ts(lst.st_atime, lst.st_atime_nsec),
            ts(lst.st_mtime, lst.st_mtime_nsec),
        ];
        let is_dir = kind == libc::S_IFDIR;
        let staged = (|| -> io::Result<()> {
            match kind {
                libc::S_IFREG => {
                    let dst = sys::open_beneath(
                        work,
                        tmp.to_bytes(),
                        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                        0o600,
                    )?;
                    if with_data && lst.st_size > 0 {
                        match self.layers.open(Layer::Lower, rel, libc::O_RDONLY) {
                            Ok(src) => copy_data(src.as_fd(), dst.as_fd(), lst.st_size)?,
                            // A host file the caller cannot read (/etc/shadow,
                            // root's 0600 lock files): its content was never
                            // visible inside, so the sandbox's copy starts
                            // empty instead of failing every write to it.
                            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                                log::debug!(
                                    "overlay copy-up: {} is unreadable, copied up empty",
                                    String::from_utf8_lossy(rel)
                                );
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    copy_xattrs(lfd.as_fd(), dst.as_fd())?;
                    self.finish_meta(dst.as_fd(), kind, &ovr, origin)?;
                    sys::futimens(dst.as_fd(), &times)
                }
                libc::S_IFDIR => {
                    sys::mkdirat(work, &tmp, 0o700)?;
                    let d = sys::open_beneath(
                        work,
                        tmp.to_bytes(),
                        libc::O_RDONLY | libc::O_DIRECTORY,
                        0,
                    )?;
                    copy_xattrs(lfd.as_fd(), d.as_fd())?;
                    self.finish_meta(d.as_fd(), kind, &ovr, origin)?;
                    sys::futimens(d.as_fd(), &times)
                }
                libc::S_IFLNK => {
                    let (lp, ln) = self.layers.parent_of(Layer::Lower, rel)?;
                    let target = sys::readlinkat(lp.as_fd(), &ln)?;
                    sys::symlinkat(&sys::cstr(&target)?, work, &tmp)?;
                    sys::utimensat(work, &tmp, &times)
                }
                libc::S_IFIFO | libc::S_IFSOCK => {
                    sys::mknodat(work, &tmp, kind | 0o600, 0)?;
                    sys::fchmodat(work, &tmp, lst.st_mode & 0o777)?;
                    sys::utimensat(work, &tmp, &times)
                }
                _ => Err(err(libc::EPERM)),
            }
        })();
        let placed = staged.and_then(|_| {
            let (pfd, n) = self.layers.parent_of(Layer::Upper, rel)?;
            // Copying a child up is not a change of the parent: keep its times.
            let pst = sys::fstat(pfd.as_fd())?;
            sys::renameat2(work, &tmp, pfd.as_fd(), &n, libc::RENAME_NOREPLACE)?;
            if is_dir {
                let _ = sys::utimensat(pfd.as_fd(), &n, &times);
            }
            let ptimes = [
                ts(pst.st_atime, pst.st_atime_nsec),
                ts(pst.st_mtime, pst.st_mtime_nsec),
            ];
            if !rel.contains(&b'/') {
                let _ = sys::utimensat(self.layers.root(Layer::Upper), c".", &ptimes);
            } else {
                let (pp, pn) = self
                    .layers
                    .parent_of(Layer::Upper, super::layer::split(rel).0)?;
                let _ = sys::utimensat(pp.as_fd(), &pn, &ptimes);
            }
            Ok(())
        });
        if let Err(e) = placed {
            let flag = if is_dir { libc::AT_REMOVEDIR } else { 0 };
            let _ = sys::unlinkat(work, &tmp, flag);
            return Err(e);
        }
        let kept = if upper::can_have_xattrs(kind) {
            upper::needs_override(kind, &ovr, &self.ids).then_some(ovr)
        } else {
            // A symlink, fifo or socket: its owner is kept on the directory.
            let owner = self.kept_owner(ovr.uid, ovr.gid);
            if owner.is_some() {
                self.set_entry_owner_at(rel, owner)?;
            }
            owner.map(|(uid, gid)| Override {
                uid,
                gid,
                mode: lst.st_mode & 0o7777,
            })
        };
        Ok((kind, kept))
    }

    /// Copies everything below the (already copied-up) directory `rel` that
    /// still comes from the lower layer, so the directory can be moved.
    /// Masked paths are not copied. Caller holds `copyup_lock`.
    pub(crate) fn copy_up_tree(&self, rel: &[u8], state: &NodeState) -> io::Result<()> {
        if !state.lower_dir {
            return Ok(());
        }
        let sub = NodeState {
            kind: libc::S_IFDIR,
            upper: true,
            lower_dir: true,
            special: Special::Normal,
            ovr: None,
        };
        for e in self.layers.list_merged(rel, state)? {
            let crel = join(rel, &e.name);
            if self.masks.hidden(&crel) || self.masks.empty(&crel) {
                continue;
            }
            match e.layer {
                Layer::Lower => {
                    let (kind, _) = self.copy_up_path(&crel, true, None)?;
                    if kind == libc::S_IFDIR {
                        self.copy_up_tree(&crel, &sub)?;
                    }
                }
                Layer::Upper => {
                    if let Some((fd, st)) = self.layers.probe(Layer::Upper, &crel)? {
                        if st.st_mode & libc::S_IFMT == libc::S_IFDIR
                            && !upper::is_opaque(fd.as_fd())
                            && matches!(
                                self.layers.probe(Layer::Lower, &crel)?,
                                Some((_, l)) if l.st_mode & libc::S_IFMT == libc::S_IFDIR
                            )
                        {
                            self.copy_up_tree(&crel, &sub)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
