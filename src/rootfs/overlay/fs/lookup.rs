//! Names: the masks (hidden and empty paths), LOOKUP and FORGET.

use std::collections::HashSet;
use std::ffi::CStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fuse_backend_rs::api::filesystem::Entry;

use super::OverlayFs;
use crate::rootfs::overlay::inode::{NodeState, Special};
use crate::rootfs::overlay::layer::{join, Layer};
use crate::rootfs::overlay::sys::err;
use crate::rootfs::overlay::OverlayError;

/// Paths (relative to the view root) that are masked.
#[derive(Debug, Default)]
pub(crate) struct Masks {
    pub(super) hidden: HashSet<Vec<u8>>,
    pub(super) empty: HashSet<Vec<u8>>,
    /// How often each hidden path was asked for (reported by --log-denials).
    refusals: std::sync::Mutex<std::collections::BTreeMap<Vec<u8>, u32>>,
}

impl Masks {
    /// A hidden path or a path below one (a node can only get such a path
    /// if a directory was moved to where a hidden path's parent belongs).
    pub(crate) fn hidden(&self, rel: &[u8]) -> bool {
        self.hidden.contains(rel)
            || rel
                .iter()
                .enumerate()
                .any(|(i, &c)| c == b'/' && self.hidden.contains(&rel[..i]))
    }
    /// Like `hidden`, for a lookup: counts the refusal (creation, removal
    /// and rename come after a lookup of the name, counted there).
    pub(crate) fn refuses(&self, rel: &[u8]) -> bool {
        if !self.hidden(rel) {
            return false;
        }
        if let Ok(mut m) = self.refusals.lock() {
            *m.entry(rel.to_vec()).or_default() += 1;
        }
        true
    }
    /// The hidden paths that were asked for, with how often.
    pub(crate) fn refusals(&self) -> Vec<(Vec<u8>, u32)> {
        self.refusals
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }
    pub(crate) fn empty(&self, rel: &[u8]) -> bool {
        self.empty.contains(rel)
    }
    /// Whether a masked path lies strictly below `rel`.
    pub(crate) fn masks_below(&self, rel: &[u8]) -> bool {
        self.hidden.iter().chain(self.empty.iter()).any(|m| {
            if rel.is_empty() {
                return true;
            }
            m.len() > rel.len() && m.starts_with(rel) && m[rel.len()] == b'/'
        })
    }
}

/// Relative form of an absolute path inside the view.
pub(super) fn view_rel(p: &Path) -> Result<Vec<u8>, OverlayError> {
    if !p.is_absolute() {
        return Err(OverlayError::InvalidPath(p.to_path_buf()));
    }
    let mut out: Vec<u8> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(s) => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(s.as_bytes());
            }
            std::path::Component::RootDir | std::path::Component::CurDir => {}
            _ => return Err(OverlayError::InvalidPath(p.to_path_buf())),
        }
    }
    Ok(out)
}

/// The view-relative path of a host path when it lies below `lower`
/// (symlinks followed as far as the path exists).
pub(super) fn host_to_view(
    canon: &mut crate::hostpath::CanonCache,
    lower_canon: &Path,
    host: &Path,
) -> Option<Vec<u8>> {
    let c = canon.prefix(host)?;
    let rel = c.strip_prefix(lower_canon).ok()?;
    view_rel(&Path::new("/").join(rel)).ok()
}

/// The masks of a view of `lower`: the paths as given and, when
/// `resolve`, their canonical host form (a host path reached through a
/// symlink of the host; an image's tree holds no host files, so its own
/// symlinks are not followed for them).
pub(super) fn build_masks(
    lower: &Path,
    hidden: &[PathBuf],
    empty: &[PathBuf],
    known: &std::collections::HashMap<PathBuf, PathBuf>,
    resolve: bool,
) -> Result<Masks, OverlayError> {
    let mut masks = Masks::default();
    let lower_canon = std::fs::canonicalize(lower).unwrap_or_else(|_| lower.to_path_buf());
    let mut canon = crate::hostpath::CanonCache::default();
    for (set, list) in [(&mut masks.hidden, hidden), (&mut masks.empty, empty)] {
        for p in list {
            let rel = view_rel(p)?;
            if rel.is_empty() {
                return Err(OverlayError::InvalidPath(p.clone()));
            }
            let host = lower.join(std::ffi::OsStr::from_bytes(&rel));
            let resolved = match known.get(p) {
                Some(c) if lower == Path::new("/") => c
                    .strip_prefix(&lower_canon)
                    .ok()
                    .and_then(|r| view_rel(&Path::new("/").join(r)).ok()),
                _ if resolve => host_to_view(&mut canon, &lower_canon, &host),
                _ => None,
            };
            if let Some(c) = resolved {
                if !c.is_empty() {
                    set.insert(c);
                }
            }
            set.insert(rel);
        }
    }
    Ok(masks)
}

pub(super) fn valid_name(name: &[u8]) -> io::Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(err(libc::EINVAL));
    }
    Ok(())
}

impl OverlayFs {
    /// `name` in `parent` is a hidden path (a refused lookup).
    pub(super) fn hidden_name(&self, parent: u64, name: &CStr) -> bool {
        self.info(parent)
            .is_ok_and(|p| self.masks.hidden(&join(&p.path, name.to_bytes())))
    }

    /// Hidden paths (absolute, as inside) that were asked for, with how often.
    pub(crate) fn hidden_refusals(&self) -> Vec<(std::path::PathBuf, u32)> {
        use std::os::unix::ffi::OsStrExt;
        self.masks
            .refusals()
            .into_iter()
            .map(|(rel, n)| {
                (
                    std::path::Path::new("/").join(std::ffi::OsStr::from_bytes(&rel)),
                    n,
                )
            })
            .collect()
    }

    pub(super) fn entry(&self, ino: u64, attr: libc::stat64) -> Entry {
        Entry {
            inode: ino,
            generation: 0,
            attr,
            attr_flags: 0,
            attr_timeout: self.attr_timeout,
            entry_timeout: self.entry_timeout,
        }
    }

    /// Looks `name` up in `parent`, taking one kernel reference on success.
    pub(crate) fn do_lookup(&self, parent: u64, name: &[u8]) -> io::Result<Entry> {
        valid_name(name).map_err(|_| err(libc::ENOENT))?;
        let pinfo = self.info(parent)?;
        if pinfo.state.special == Special::Empty {
            return Err(err(libc::ENOENT));
        }
        if pinfo.state.kind != libc::S_IFDIR {
            return Err(err(libc::ENOTDIR));
        }
        let rel = join(&pinfo.path, name);
        if self.masks.refuses(&rel) {
            return Err(err(libc::ENOENT));
        }
        if self.masks.empty(&rel) {
            let state = NodeState {
                kind: libc::S_IFDIR,
                upper: false,
                lower_dir: false,
                special: Special::Empty,
                ovr: None,
            };
            let ino = {
                let mut t = self.table();
                let number = match t.child_number(parent, name) {
                    Some(n) if t.state(n).map(|s| s.special) == Some(Special::Empty) => n,
                    _ => t.fresh_number(),
                };
                t.lookup_ref(parent, name, number, state.clone())
            };
            let st = self.present(ino, &state, self.empty_stat);
            return Ok(self.entry(ino, st));
        }
        let r = self
            .layers
            .resolve_child(&pinfo.state, &rel)?
            .ok_or_else(|| err(libc::ENOENT))?;
        let state = NodeState {
            kind: r.st.st_mode & libc::S_IFMT,
            upper: r.layer == Layer::Upper,
            lower_dir: r.lower_dir,
            special: Special::Normal,
            ovr: r.ovr,
        };
        let ino = {
            let mut t = self.table();
            let number = match r.origin {
                Some(o) => o,
                None => t.number_for(r.st.st_dev, r.st.st_ino),
            };
            t.lookup_ref(parent, name, number, state.clone())
        };
        let st = self.present(ino, &state, r.st);
        Ok(self.entry(ino, st))
    }

    pub(super) fn forget_one(&self, ino: u64, n: u64) {
        if self.table().forget(ino, n) {
            self.io.remove(ino);
        }
    }

    pub(super) fn op_lookup(&self, parent: u64, name: &CStr) -> io::Result<Entry> {
        match self.do_lookup(parent, name.to_bytes()) {
            // A negative entry the kernel may cache for the entry timeout:
            // compilers and loaders probe many paths that do not exist.
            // Creating the name through the mount replaces it at once. Not
            // for a hidden path: each attempt must reach us to be counted.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && !self.hidden_name(parent, name) => {
                Ok(Entry {
                    inode: 0,
                    generation: 0,
                    attr: crate::rootfs::overlay::sys::zeroed_stat(),
                    attr_flags: 0,
                    attr_timeout: Duration::ZERO,
                    entry_timeout: self.entry_timeout,
                })
            }
            r => r,
        }
    }

    pub(super) fn op_batch_forget(&self, requests: Vec<(u64, u64)>) {
        let gone: Vec<u64> = {
            let mut t = self.table();
            requests
                .into_iter()
                .filter(|&(ino, n)| t.forget(ino, n))
                .map(|(ino, _)| ino)
                .collect()
        };
        for ino in gone {
            self.io.remove(ino);
        }
    }
}
