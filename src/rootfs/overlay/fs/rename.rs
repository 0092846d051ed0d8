//! RENAME: across layers, with whiteouts, exchange, and the owners kept
//! for symlinks, fifos and sockets.

use std::io;
use std::os::fd::AsFd;

use fuse_backend_rs::api::filesystem::Entry;

use super::create::is_special;
use super::lookup::valid_name;
use super::OverlayFs;
use crate::rootfs::overlay::inode::Special;
use crate::rootfs::overlay::layer::{join, Layer};
use crate::rootfs::overlay::sys::{self, err};
use crate::rootfs::overlay::whiteout;
use crate::rootfs::upper::{self};

impl OverlayFs {
    pub(super) fn do_rename(
        &self,
        op: u64,
        oname: &[u8],
        np: u64,
        nname: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0
            || (flags & libc::RENAME_NOREPLACE != 0 && flags & libc::RENAME_EXCHANGE != 0)
        {
            return Err(err(libc::EINVAL));
        }
        valid_name(oname)?;
        valid_name(nname)?;
        self.check_writable()?;
        let opi = self.info(op)?;
        let npi = self.info(np)?;
        if opi.state.special == Special::Empty || npi.state.special == Special::Empty {
            return Err(err(libc::EPERM));
        }
        let orel = join(&opi.path, oname);
        let nrel = join(&npi.path, nname);
        if self.masks.hidden(&orel) {
            return Err(err(libc::ENOENT));
        }
        if self.masks.empty(&orel) {
            return Err(err(libc::EBUSY));
        }
        if self.masks.hidden(&nrel) || self.masks.empty(&nrel) {
            return Err(err(libc::EACCES));
        }
        if self.masks.masks_below(&orel)
            || (flags & libc::RENAME_EXCHANGE != 0 && self.masks.masks_below(&nrel))
        {
            // Moving a directory that holds masked paths would move them
            // along; `mv` falls back to copying through the view.
            return Err(err(libc::EXDEV));
        }

        // Nodes for both names (kernel-style references, dropped at the end).
        let src = self.do_lookup(op, oname)?;
        let dst = match self.do_lookup(np, nname) {
            Ok(e) => Some(e),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
            Err(e) => {
                self.forget_one(src.inode, 1);
                return Err(e);
            }
        };
        if flags & libc::RENAME_EXCHANGE == 0 && dst.is_some() {
            self.pin_before_removal(np, nname);
        }
        let res = self.rename_nodes(
            op,
            oname,
            &orel,
            np,
            nname,
            &nrel,
            &src,
            dst.as_ref(),
            flags,
        );
        self.forget_one(src.inode, 1);
        if let Some(d) = dst {
            self.forget_one(d.inode, 1);
        }
        res
    }

    /// Copies up a node for a rename; a directory with lower content is
    /// copied as a whole tree. Renamed directories are made opaque.
    pub(super) fn prepare_move(&self, ino: u64) -> io::Result<()> {
        self.copy_up(ino, true)?;
        let info = self.info(ino)?;
        if info.state.kind == libc::S_IFDIR {
            if info.state.lower_dir {
                let _g = self.copyup_lock.lock().unwrap_or_else(|e| e.into_inner());
                self.copy_up_tree(&info.path, &info.state)?;
            }
            let fd = self.layers.open(Layer::Upper, &info.path, libc::O_PATH)?;
            upper::set_opaque(fd.as_fd())?;
            let mut t = self.table();
            if let Some(s) = t.state_mut(ino) {
                s.lower_dir = false;
            }
            t.mark_subtree_upper(ino);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn rename_nodes(
        &self,
        op: u64,
        oname: &[u8],
        orel: &[u8],
        np: u64,
        nname: &[u8],
        nrel: &[u8],
        src: &Entry,
        dst: Option<&Entry>,
        flags: u32,
    ) -> io::Result<()> {
        let src_dir = src.attr.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if flags & libc::RENAME_NOREPLACE != 0 && dst.is_some() {
            return Err(err(libc::EEXIST));
        }
        if flags & libc::RENAME_EXCHANGE != 0 && dst.is_none() {
            return Err(err(libc::ENOENT));
        }
        if let Some(d) = dst {
            if d.inode == src.inode && !src_dir {
                return Ok(());
            }
        }
        if src_dir {
            let t = self.table();
            if t.is_ancestor(src.inode, np) {
                return Err(err(libc::EINVAL));
            }
        }
        if self.passthrough {
            // A directory moved where a hidden path's parent belongs could
            // bring along (and keep open) a directory or file at the hidden
            // path, which the host would then fill; a symlink there would
            // send the host's credentials elsewhere: `mv` copies instead.
            let src_file = src.attr.st_mode & libc::S_IFMT == libc::S_IFREG;
            if !src_file && self.masks.masks_below(nrel) {
                return Err(err(libc::EXDEV));
            }
            return self.pt_rename(op, oname, orel, np, nname, nrel, flags);
        }
        self.copy_up(op, true)?;
        self.copy_up(np, true)?;
        let opi = self.info(op)?;

        if flags & libc::RENAME_EXCHANGE != 0 {
            let d = dst.ok_or_else(|| err(libc::ENOENT))?;
            if d.attr.st_mode & libc::S_IFMT == libc::S_IFDIR {
                let t = self.table();
                if t.is_ancestor(d.inode, op) {
                    return Err(err(libc::EINVAL));
                }
            }
            self.prepare_move(src.inode)?;
            self.prepare_move(d.inode)?;
            let (ofd, on) = self.layers.parent_of(Layer::Upper, orel)?;
            let (nfd, nn) = self.layers.parent_of(Layer::Upper, nrel)?;
            let owners = (is_special(&src.attr) || is_special(&d.attr)).then(|| {
                (
                    upper::read_entry_owner(ofd.as_fd(), on.to_bytes()),
                    upper::read_entry_owner(nfd.as_fd(), nn.to_bytes()),
                )
            });
            sys::renameat2(ofd.as_fd(), &on, nfd.as_fd(), &nn, libc::RENAME_EXCHANGE)?;
            if let Some((o, n)) = owners {
                let _ = upper::write_entry_owner(ofd.as_fd(), on.to_bytes(), n);
                let _ = upper::write_entry_owner(nfd.as_fd(), nn.to_bytes(), o);
            }
            self.table().exchange(op, oname, np, nname);
            return Ok(());
        }

        if let Some(d) = dst {
            let dst_dir = d.attr.st_mode & libc::S_IFMT == libc::S_IFDIR;
            if dst_dir && !src_dir {
                return Err(err(libc::EISDIR));
            }
            if !dst_dir && src_dir {
                return Err(err(libc::ENOTDIR));
            }
            if dst_dir {
                let di = self.info(d.inode)?;
                if !self.listing(&di)?.is_empty() {
                    return Err(err(libc::ENOTEMPTY));
                }
                if di.state.upper {
                    whiteout::clear_whiteouts(&self.layers, nrel)?;
                }
            }
        }
        self.prepare_move(src.inode)?;
        let old_has_lower = self.layers.lower_has(&opi.state, orel)?;
        let (ofd, on) = self.layers.parent_of(Layer::Upper, orel)?;
        let (nfd, nn) = self.layers.parent_of(Layer::Upper, nrel)?;
        let src_special = is_special(&src.attr);
        let owner = if src_special {
            upper::read_entry_owner(ofd.as_fd(), on.to_bytes())
        } else {
            None
        };
        let mut need_whiteout = old_has_lower;
        let onto_whiteout = dst.is_none()
            && src_dir
            && matches!(sys::fstatat(nfd.as_fd(), &nn),
                Ok(st) if upper::is_whiteout_at(nfd.as_fd(), &nn, &st));
        if onto_whiteout {
            // A directory cannot replace the whiteout (a device or file):
            // swap them, then the whiteout marks or leaves the old name.
            sys::renameat2(ofd.as_fd(), &on, nfd.as_fd(), &nn, libc::RENAME_EXCHANGE)?;
            if old_has_lower {
                if self.layers.xattr_whiteouts {
                    upper::mark_xwhiteouts(ofd.as_fd())?;
                }
            } else {
                sys::unlinkat(ofd.as_fd(), &on, 0)?;
            }
        } else if old_has_lower && !self.layers.xattr_whiteouts {
            match sys::renameat2(ofd.as_fd(), &on, nfd.as_fd(), &nn, libc::RENAME_WHITEOUT) {
                Ok(()) => need_whiteout = false,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EPERM)) => {
                    sys::renameat2(ofd.as_fd(), &on, nfd.as_fd(), &nn, 0)?
                }
                Err(e) => return Err(e),
            }
        } else {
            sys::renameat2(ofd.as_fd(), &on, nfd.as_fd(), &nn, 0)?;
        }
        if need_whiteout && !onto_whiteout {
            // Not atomic with the rename: the lower entry may show for an
            // instant under the old name.
            whiteout::whiteout_over(&self.layers, ofd.as_fd(), &on, false)?;
        }
        if src_special || dst.is_some_and(|d| is_special(&d.attr)) {
            // The kept owner moves with the entry (and the replaced
            // entry's goes).
            let _ = upper::write_entry_owner(nfd.as_fd(), nn.to_bytes(), owner);
            if owner.is_some() {
                let _ = upper::write_entry_owner(ofd.as_fd(), on.to_bytes(), None);
            }
        }
        self.table().rename(op, oname, np, nname);
        Ok(())
    }
}
