//! Directory listings: merged, masked, with offsets that stay valid.

use std::io;
use std::sync::Arc;

use fuse_backend_rs::api::filesystem::{DirEntry, Entry};

use super::OverlayFs;
use crate::rootfs::overlay::inode::{NodeInfo, Special, ROOT};
use crate::rootfs::overlay::layer::join;
use crate::rootfs::overlay::sys::err;

/// An entry of a directory listing: `cookie` is its stable offset.
#[derive(Debug)]
pub(super) struct SnapEnt {
    name: Vec<u8>,
    ino: u64,
    dtype: u32,
    cookie: u64,
}

/// How many directory listings are kept for readers part-way through.
pub(super) const LISTINGS: usize = 64;

/// The offset cookie of a directory entry: a hash of its name, so that it
/// stays valid whatever else is added or removed ("." is 1, ".." is 2).
/// Offsets are signed 64-bit in the kernel: cookies stay below 2^63.
pub(super) fn cookie(name: &[u8]) -> u64 {
    match name {
        b"." => 1,
        b".." => 2,
        _ => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            name.hash(&mut h);
            (h.finish() >> 2).max(3)
        }
    }
}

impl OverlayFs {
    /// The listing of directory `inode` sorted by cookie: read afresh when
    /// a reader starts (offset 0), else the one that reader started with
    /// (when still kept; cookies are names' hashes, so a fresh listing
    /// continues correctly too).
    pub(super) fn dir_listing(&self, inode: u64, offset: u64) -> io::Result<Arc<Vec<SnapEnt>>> {
        if offset != 0 {
            let kept = self
                .listings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&inode)
                .cloned();
            if let Some(l) = kept {
                return Ok(l);
            }
        }
        let info = self.info(inode)?;
        if info.state.kind != libc::S_IFDIR {
            return Err(err(libc::ENOTDIR));
        }
        let list = self.listing(&info)?;
        let mut entries = Vec::with_capacity(list.len() + 2);
        {
            let mut t = self.table();
            let parent = if inode == ROOT {
                ROOT
            } else {
                t.parent_of(inode).unwrap_or(ROOT)
            };
            for (name, ino) in [(&b"."[..], inode), (&b".."[..], parent)] {
                entries.push(SnapEnt {
                    name: name.to_vec(),
                    ino,
                    dtype: libc::DT_DIR as u32,
                    cookie: cookie(name),
                });
            }
            for e in list {
                let ino = match t.child_number(inode, &e.name) {
                    Some(n) => n,
                    None => t.number_for(e.dev, e.ino),
                };
                entries.push(SnapEnt {
                    cookie: cookie(&e.name),
                    name: e.name,
                    ino,
                    dtype: e.dtype,
                });
            }
        }
        entries.sort_unstable_by(|a, b| a.cookie.cmp(&b.cookie).then_with(|| a.name.cmp(&b.name)));
        // Two names with one hash (about 1 in 2^63 per pair): the later
        // one gets the next free number, so no entry is skipped.
        for i in 1..entries.len() {
            if entries[i].cookie <= entries[i - 1].cookie {
                entries[i].cookie = entries[i - 1].cookie + 1;
            }
        }
        let entries = Arc::new(entries);
        let mut kept = self.listings.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= LISTINGS && !kept.contains_key(&inode) {
            kept.clear();
        }
        kept.insert(inode, entries.clone());
        Ok(entries)
    }

    /// The merged, masked listing of a directory node (no "." / "..").
    pub(super) fn listing(
        &self,
        info: &NodeInfo,
    ) -> io::Result<Vec<crate::rootfs::overlay::layer::MergedEnt>> {
        if info.state.special == Special::Empty {
            return Ok(Vec::new());
        }
        let mut v = self.layers.list_merged(&info.path, &info.state)?;
        v.retain(|e| !self.masks.hidden(&join(&info.path, &e.name)));
        Ok(v)
    }

    pub(super) fn op_readdir(
        &self,
        inode: u64,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        let entries = self.dir_listing(inode, offset)?;
        let from = entries.partition_point(|e| e.cookie <= offset);
        for e in &entries[from..] {
            let n = add_entry(DirEntry {
                ino: e.ino,
                offset: e.cookie,
                type_: e.dtype,
                name: &e.name,
            })?;
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    pub(super) fn op_readdirplus(
        &self,
        inode: u64,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        let entries = self.dir_listing(inode, offset)?;
        let from = entries.partition_point(|e| e.cookie <= offset);
        for e in &entries[from..] {
            let dot = e.name == b"." || e.name == b"..";
            let entry = if dot {
                None
            } else {
                self.do_lookup(inode, &e.name).ok()
            };
            let d = DirEntry {
                ino: entry.as_ref().map(|x| x.inode).unwrap_or(e.ino),
                offset: e.cookie,
                type_: e.dtype,
                name: &e.name,
            };
            let n = match add_entry(d, entry.unwrap_or_default()) {
                Ok(n) => n,
                Err(x) => {
                    if let Some(en) = entry {
                        self.forget_one(en.inode, 1);
                    }
                    return Err(x);
                }
            };
            if n == 0 {
                if let Some(en) = entry {
                    self.forget_one(en.inode, 1);
                }
                break;
            }
        }
        Ok(())
    }
}
