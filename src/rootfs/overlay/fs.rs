//! The `FileSystem` implementation: the merged view served to the kernel.

use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::CreateIn;
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileSystem, FsOptions, GetxattrReply, ListxattrReply, OpenOptions,
    SetattrValid, ZeroCopyReader, ZeroCopyWriter,
};

use super::inode::{NodeInfo, NodeState, Special, Table, ROOT};
use super::iofd::{IoFds, Need, Opened};
use super::layer::{join, Layer, Layers};
use super::passthrough::{New, PassthroughConfig};
use super::sys::{self, err};
use super::whiteout;
use super::{OverlayConfig, OverlayError};
use crate::rootfs::upper::{self, Ids, Override};

/// Paths (relative to the view root) that are masked.
#[derive(Debug, Default)]
pub(crate) struct Masks {
    hidden: HashSet<Vec<u8>>,
    empty: HashSet<Vec<u8>>,
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

/// An entry of a directory listing: `cookie` is its stable offset.
#[derive(Debug)]
struct SnapEnt {
    name: Vec<u8>,
    ino: u64,
    dtype: u32,
    cookie: u64,
}

/// How many directory listings are kept for readers part-way through.
const LISTINGS: usize = 64;

/// The offset cookie of a directory entry: a hash of its name, so that it
/// stays valid whatever else is added or removed ("." is 1, ".." is 2).
/// Offsets are signed 64-bit in the kernel: cookies stay below 2^63.
fn cookie(name: &[u8]) -> u64 {
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

/// The overlay filesystem.
pub(crate) struct OverlayFs {
    pub(crate) layers: Layers,
    table: Mutex<Table>,
    /// Files opened by CREATE (the only requests that make handles).
    handles: RwLock<HashMap<u64, Arc<File>>>,
    /// Directory listings by node, for readers part-way through (OPENDIR
    /// answers ENOSYS, so listings have no handle).
    listings: Mutex<HashMap<u64, Arc<Vec<SnapEnt>>>>,
    next_handle: AtomicU64,
    /// Files for I/O without handles (OPEN answers ENOSYS).
    io: IoFds,
    pub(crate) copyup_lock: Mutex<()>,
    pub(crate) masks: Masks,
    pub(crate) ids: Ids,
    attr_timeout: Duration,
    entry_timeout: Duration,
    empty_stat: libc::stat64,
    /// A passthrough mount (see `passthrough`): one host directory,
    /// changed in place, no lower layer, no whiteouts.
    pub(crate) passthrough: bool,
    /// Read-only passthrough: every change is refused (EROFS).
    pub(crate) readonly: bool,
}

/// Relative form of an absolute path inside the view.
fn view_rel(p: &Path) -> Result<Vec<u8>, OverlayError> {
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
fn host_to_view(
    canon: &mut crate::hostpath::CanonCache,
    lower_canon: &Path,
    host: &Path,
) -> Option<Vec<u8>> {
    let c = canon.prefix(host)?;
    let rel = c.strip_prefix(lower_canon).ok()?;
    view_rel(&Path::new("/").join(rel)).ok()
}

/// The masks of a view of `lower`: the paths as given and their canonical
/// host form.
fn build_masks(lower: &Path, hidden: &[PathBuf], empty: &[PathBuf]) -> Result<Masks, OverlayError> {
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
            if let Some(c) = host_to_view(&mut canon, &lower_canon, &host) {
                if !c.is_empty() {
                    set.insert(c);
                }
            }
            set.insert(rel);
        }
    }
    Ok(masks)
}

/// What an empty directory shown in place of sbox's state looks like:
/// `like`'s times and device, root's, mode 0755, nothing in it.
fn empty_dir_stat(mut like: libc::stat64) -> libc::stat64 {
    like.st_mode = libc::S_IFDIR | 0o755;
    like.st_nlink = 2;
    like.st_uid = 0;
    like.st_gid = 0;
    like.st_size = 0;
    like.st_blocks = 0;
    like
}

fn open_layer(what: &'static str, path: &Path) -> Result<OwnedFd, OverlayError> {
    sys::open_dir_path(path).map_err(|source| OverlayError::OpenLayer {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// The (atime, mtime) a SETATTR asks for, as utimensat(2) takes them;
/// None when it sets neither.
fn set_times(attr: &libc::stat64, valid: SetattrValid) -> Option<[libc::timespec; 2]> {
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

fn valid_name(name: &[u8]) -> io::Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(err(libc::EINVAL));
    }
    Ok(())
}

impl OverlayFs {
    pub(crate) fn new(cfg: &OverlayConfig) -> Result<OverlayFs, OverlayError> {
        let lower = open_layer("lower", &cfg.lower)?;
        let upper = open_layer("upper", &cfg.upper)?;
        let work = open_layer("work", &cfg.work)?;
        let ust = sys::fstat(upper.as_fd()).map_err(|source| OverlayError::OpenLayer {
            what: "upper",
            path: cfg.upper.clone(),
            source,
        })?;
        let wst = sys::fstat(work.as_fd()).map_err(|source| OverlayError::OpenLayer {
            what: "work",
            path: cfg.work.clone(),
            source,
        })?;
        if ust.st_dev != wst.st_dev {
            return Err(OverlayError::CrossDevice {
                upper: cfg.upper.clone(),
                work: cfg.work.clone(),
            });
        }
        let lst = sys::fstat(lower.as_fd()).map_err(|source| OverlayError::OpenLayer {
            what: "lower",
            path: cfg.lower.clone(),
            source,
        })?;

        clean_work(&work);
        let xattr_whiteouts = std::env::var_os("SBOX_OVERLAY_XATTR_WHITEOUT").is_some()
            || !probe_mknod_whiteout(&work);
        let layers = Layers::new(lower, upper, work, xattr_whiteouts);

        let ids = Ids::overlay(
            (cfg.caller_uid, cfg.caller_gid),
            cfg.caller_inside,
            cfg.id_maps.clone(),
        );

        // Masks: the paths as given, their canonical host form, and the
        // upper/work directories themselves when they lie below the lower.
        let mut masks = build_masks(&cfg.lower, &cfg.hidden, &cfg.empty)?;
        let lower_canon = std::fs::canonicalize(&cfg.lower).unwrap_or_else(|_| cfg.lower.clone());
        let mut canon = crate::hostpath::CanonCache::default();
        for p in [&cfg.upper, &cfg.work] {
            if let Some(rel) = host_to_view(&mut canon, &lower_canon, p) {
                if !rel.is_empty() && !masks.empty.contains(&rel) {
                    masks.hidden.insert(rel);
                }
            }
        }

        // The root presents the lower root's owner and mode unless set inside.
        let root_ovr = match upper::read_override(layers.upper.as_fd()) {
            Some(o) => o,
            None => {
                let o = upper::presented_override(&lst, None, &ids);
                if upper::needs_override(libc::S_IFDIR, &o) {
                    let _ = upper::write_override(layers.upper.as_fd(), libc::S_IFDIR, &o);
                }
                o
            }
        };
        let root_state = NodeState {
            kind: libc::S_IFDIR,
            upper: true,
            lower_dir: !upper::is_opaque(layers.upper.as_fd()),
            special: Special::Normal,
            ovr: Some(root_ovr),
        };

        Ok(OverlayFs::assemble(
            layers,
            root_state,
            masks,
            ids,
            (cfg.attr_timeout, cfg.entry_timeout),
            empty_dir_stat(lst),
            (false, false),
        ))
    }

    /// The server's state around its layers and root; `mode` is
    /// (passthrough, readonly).
    fn assemble(
        layers: Layers,
        root_state: NodeState,
        masks: Masks,
        ids: Ids,
        (attr_timeout, entry_timeout): (Duration, Duration),
        empty_stat: libc::stat64,
        (passthrough, readonly): (bool, bool),
    ) -> OverlayFs {
        OverlayFs {
            layers,
            table: Mutex::new(Table::new(root_state)),
            handles: RwLock::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            io: IoFds::default(),
            listings: Mutex::new(HashMap::new()),
            copyup_lock: Mutex::new(()),
            masks,
            ids,
            attr_timeout,
            entry_timeout,
            empty_stat,
            passthrough,
            readonly,
        }
    }

    /// A passthrough view of one host directory (see `passthrough`).
    pub(crate) fn new_passthrough(cfg: &PassthroughConfig) -> Result<OverlayFs, OverlayError> {
        // The bind's source was resolved when the policy was built: open
        // that canonical path without following a link that appeared since.
        let dir = crate::hostpath::open_checked(&cfg.dir)
            .and_then(|fd| {
                let st = sys::fstat(fd.as_fd()).map_err(|e| crate::hostpath::PathError::Sys {
                    path: cfg.dir.clone(),
                    errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                })?;
                if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    Ok(fd)
                } else {
                    Err(crate::hostpath::PathError::Sys {
                        path: cfg.dir.clone(),
                        errno: nix::errno::Errno::ENOTDIR,
                    })
                }
            })
            .map_err(|e| OverlayError::OpenLayer {
                what: "bind",
                path: cfg.dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let st = sys::fstat(dir.as_fd()).map_err(|source| OverlayError::OpenLayer {
            what: "bind",
            path: cfg.dir.clone(),
            source,
        })?;
        let dup = |fd: &OwnedFd| {
            fd.try_clone().map_err(|source| OverlayError::OpenLayer {
                what: "bind",
                path: cfg.dir.clone(),
                source,
            })
        };
        // There is no lower layer (no node is ever marked as having one)
        // and no work directory: entries are made in place, so both are
        // the directory itself, never used.
        let (lower, work) = (dup(&dir)?, dup(&dir)?);
        let mut layers = Layers::new(lower, dir, work, true);
        layers.passthrough = true;
        let ids = Ids::passthrough(
            (cfg.caller_uid, cfg.caller_gid),
            cfg.caller_inside,
            cfg.ids.clone(),
        );
        let masks = build_masks(&cfg.dir, &cfg.hidden, &cfg.empty)?;
        let root_state = NodeState {
            kind: libc::S_IFDIR,
            upper: true,
            lower_dir: false,
            special: Special::Normal,
            ovr: upper::read_override(layers.upper.as_fd()),
        };
        Ok(OverlayFs::assemble(
            layers,
            root_state,
            masks,
            ids,
            (cfg.timeout, cfg.timeout),
            empty_dir_stat(st),
            (true, cfg.readonly),
        ))
    }

    /// EROFS when nothing may change (a read-only passthrough mount; the
    /// kernel refuses first, as the mount is read-only too).
    pub(crate) fn check_writable(&self) -> io::Result<()> {
        if self.readonly {
            return Err(err(libc::EROFS));
        }
        Ok(())
    }

    pub(crate) fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `name` in `parent` is a hidden path (a refused lookup).
    fn hidden_name(&self, parent: u64, name: &CStr) -> bool {
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

    pub(crate) fn inode_count(&self) -> usize {
        self.table().len()
    }

    pub(crate) fn handle_count(&self) -> usize {
        self.handles.read().map(|h| h.len()).unwrap_or(0) + self.io.len()
    }

    pub(crate) fn info(&self, ino: u64) -> io::Result<NodeInfo> {
        self.table().info(ino).ok_or_else(|| err(libc::ENOENT))
    }

    fn layer_of(info: &NodeInfo) -> Layer {
        if info.state.upper {
            Layer::Upper
        } else {
            Layer::Lower
        }
    }

    /// Host stat of a node's current file.
    fn real_stat(&self, info: &NodeInfo) -> io::Result<libc::stat64> {
        if info.state.special == Special::Empty {
            return Ok(self.empty_stat);
        }
        let fd = self
            .layers
            .open(Self::layer_of(info), &info.path, libc::O_PATH)?;
        let mut st = sys::fstat(fd.as_fd())?;
        if info.state.upper && info.state.lower_dir {
            if let Ok(Some((_, l))) = self.layers.probe(Layer::Lower, &info.path) {
                super::layer::take_newer_mtime(&mut st, &l);
            }
        }
        Ok(st)
    }

    fn present(&self, ino: u64, state: &NodeState, mut st: libc::stat64) -> libc::stat64 {
        if state.special == Special::Empty {
            st.st_ino = ino;
            return st;
        }
        let ovr = if state.upper {
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

    fn stat_of(&self, info: &NodeInfo) -> io::Result<libc::stat64> {
        let st = self.real_stat(info)?;
        Ok(self.present(info.ino, &info.state, st))
    }

    fn entry(&self, ino: u64, attr: libc::stat64) -> Entry {
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

    fn forget_one(&self, ino: u64, n: u64) {
        if self.table().forget(ino, n) {
            self.io.remove(ino);
        }
    }

    /// Opens `rel` for I/O: upper files read-write when the host allows
    /// (else as `need` requires), lower files read-only.
    fn open_io(&self, upper: bool, rel: &[u8], need: Need) -> io::Result<(OwnedFd, Opened)> {
        let layer = if upper { Layer::Upper } else { Layer::Lower };
        let tries: &[(i32, bool, bool)] = match (upper, need) {
            // A host file is opened for writing only to write: a reader
            // must neither fail on a running program (ETXTBSY) nor make
            // the host's watchers see a close after writing.
            (true, Need::Read) if self.passthrough => &[(libc::O_RDONLY, true, false)],
            (false, _) => &[(libc::O_RDONLY, true, false)],
            (true, Need::Read) => &[(libc::O_RDWR, true, true), (libc::O_RDONLY, true, false)],
            (true, Need::Write) => &[(libc::O_RDWR, true, true), (libc::O_WRONLY, false, true)],
        };
        let mut last = err(libc::EACCES);
        for &(flags, readable, writable) in tries {
            match self.layers.open(layer, rel, flags) {
                Ok(fd) => {
                    let st = sys::fstat(fd.as_fd())?;
                    let how = Opened {
                        readable,
                        writable,
                        upper,
                        id: (st.st_dev, st.st_ino),
                    };
                    return Ok((fd, how));
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// The file for handle-less I/O on `ino`; copied up first for writing.
    fn io_file(&self, ino: u64, need: Need) -> io::Result<Arc<File>> {
        let (mut state, named) = {
            let t = self.table();
            let s = t.state(ino).cloned().ok_or_else(|| err(libc::ENOENT))?;
            let named = t.refs(ino).map(|(_, links)| links > 0).unwrap_or(false) || ino == ROOT;
            (s, named)
        };
        if state.kind == libc::S_IFDIR || state.special == Special::Empty {
            return Err(err(libc::EISDIR));
        }
        if need == Need::Write {
            self.check_writable()?;
        }
        if !named {
            // Unlinked while open: only the fd pinned at removal serves it.
            return self
                .io
                .get(ino, need, state.upper)
                .ok_or_else(|| err(libc::EBADF));
        }
        if self.io.pinned(ino) {
            // The number names another file now (the host reused the inode).
            self.io.remove(ino);
        }
        if need == Need::Write && !state.upper {
            self.copy_up(ino, true)?;
            state.upper = true;
        }
        if let Some(f) = self.io.get(ino, need, state.upper) {
            return Ok(f);
        }
        let info = self.info(ino)?;
        let (fd, how) = self.open_io(info.state.upper, &info.path, need)?;
        Ok(self.io.put(ino, File::from(fd), how, false))
    }

    /// The listing of directory `inode` sorted by cookie: read afresh when
    /// a reader starts (offset 0), else the one that reader started with
    /// (when still kept; cookies are names' hashes, so a fresh listing
    /// continues correctly too).
    fn dir_listing(&self, inode: u64, offset: u64) -> io::Result<Arc<Vec<SnapEnt>>> {
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

    /// The upper file (copied up) whose xattr `name` is to be changed;
    /// sbox's own xattrs and masked directories are off limits.
    fn xattr_target(&self, inode: u64, name: &CStr) -> io::Result<OwnedFd> {
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
    fn unlinked_stat(&self, ino: u64) -> Option<io::Result<(libc::stat64, Duration)>> {
        let state = self.table().state(ino).cloned()?;
        let f = self.io.get(ino, Need::Read, state.upper)?;
        Some(sys::fstat(f.as_fd()).map(|st| (self.present(ino, &state, st), self.attr_timeout)))
    }

    /// `ftruncate`/`futimens` on a file that lost its last name (through
    /// its pinned fd); its owner and mode are no longer kept anywhere.
    fn unlinked_setattr(
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

    /// Before `name` in `parent` goes away: if it is the last name of a
    /// regular file the kernel still holds, keep the file open for the
    /// processes that may have it open (unlinked files stay readable).
    fn pin_before_removal(&self, parent: u64, name: &[u8]) {
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

    pub(crate) fn new_handle(&self, h: File) -> u64 {
        let id = self.next_handle.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.handles.write() {
            m.insert(id, Arc::new(h));
        }
        id
    }

    fn handle(&self, id: u64) -> io::Result<Arc<File>> {
        self.handles
            .read()
            .ok()
            .and_then(|m| m.get(&id).cloned())
            .ok_or_else(|| err(libc::EBADF))
    }

    fn drop_handle(&self, id: u64) {
        if let Ok(mut m) = self.handles.write() {
            m.remove(&id);
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
    fn install(&self, rel: &[u8], tmp: &CStr, is_dir: bool) -> io::Result<()> {
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
    fn install_special(&self, rel: &[u8], tmp: &CStr, owner: Option<(u32, u32)>) -> io::Result<()> {
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
    fn init_meta(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
        kind: u32,
        ovr: &Override,
    ) -> io::Result<()> {
        upper::write_override(fd, kind, ovr)?;
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

    fn remove_tmp(&self, tmp: &CStr, is_dir: bool) {
        let flag = if is_dir { libc::AT_REMOVEDIR } else { 0 };
        let _ = sys::unlinkat(self.layers.work(), tmp, flag);
    }

    /// The parent and relative path of a name to unlink or rmdir; names
    /// inside an empty directory or hidden do not exist.
    fn removal_target(&self, parent: u64, name: &[u8]) -> io::Result<(NodeInfo, Vec<u8>)> {
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

    /// The merged, masked listing of a directory node (no "." / "..").
    fn listing(&self, info: &NodeInfo) -> io::Result<Vec<super::layer::MergedEnt>> {
        if info.state.special == Special::Empty {
            return Ok(Vec::new());
        }
        let mut v = self.layers.list_merged(&info.path, &info.state)?;
        v.retain(|e| !self.masks.hidden(&join(&info.path, &e.name)));
        Ok(v)
    }

    fn do_rename(
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
    fn prepare_move(&self, ino: u64) -> io::Result<()> {
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
    fn rename_nodes(
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

/// Whether a (presented or host) stat is of a symlink, fifo or socket,
/// whose owner is kept on its directory.
fn is_special(st: &libc::stat64) -> bool {
    !upper::can_have_xattrs(st.st_mode & libc::S_IFMT)
}

/// Removes staging leftovers (`#sbox-*`) of a server that died mid-copy.
fn clean_work(work: &OwnedFd) {
    let Ok(fd) = sys::open_beneath(work.as_fd(), b"", libc::O_RDONLY | libc::O_DIRECTORY, 0) else {
        return;
    };
    let Ok(mut dir) = nix::dir::Dir::from(fd) else {
        return;
    };
    let names: Vec<std::ffi::CString> = dir
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.to_bytes().starts_with(b"#sbox-"))
        .collect();
    for n in names {
        if sys::unlinkat(work.as_fd(), &n, 0).is_err() {
            let _ = sys::unlinkat(work.as_fd(), &n, libc::AT_REMOVEDIR);
        }
    }
}

/// Whether the server may create 0/0 character devices in the work dir.
fn probe_mknod_whiteout(work: &OwnedFd) -> bool {
    let name = format!("#sbox-probe-{}", std::process::id());
    let Ok(c) = sys::cstr(name.as_bytes()) else {
        return false;
    };
    let _ = sys::unlinkat(work.as_fd(), &c, 0);
    match sys::mknodat(work.as_fd(), &c, libc::S_IFCHR, 0) {
        Ok(()) => {
            let _ = sys::unlinkat(work.as_fd(), &c, 0);
            true
        }
        Err(_) => false,
    }
}

/// Borrows the file of a handle as a `File` without taking ownership.
fn borrow_file(f: &File) -> ManuallyDrop<File> {
    // SAFETY: the fd stays open while the caller holds the `Arc<Handle>` that
    // owns `f`; ManuallyDrop guarantees this temporary never closes it.
    ManuallyDrop::new(unsafe { File::from_raw_fd(f.as_raw_fd()) })
}

impl FileSystem for OverlayFs {
    type Inode = u64;
    type Handle = u64;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        let want = FsOptions::ASYNC_READ
            | FsOptions::PARALLEL_DIROPS
            | FsOptions::BIG_WRITES
            | FsOptions::MAX_PAGES
            | FsOptions::DO_READDIRPLUS
            | FsOptions::READDIRPLUS_AUTO
            // No ATOMIC_O_TRUNC: opens never reach the server (OPEN gets
            // ENOSYS), so O_TRUNC must come as a SETATTR.
            | FsOptions::CACHE_SYMLINKS
            // Lower files are opened with KEEP_CACHE: drop their cached
            // pages when the host changes them (mtime or size differ once
            // the attributes are fetched again).
            | FsOptions::AUTO_INVAL_DATA;
        Ok(capable & want)
    }

    fn lookup(&self, _ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        match self.do_lookup(parent, name.to_bytes()) {
            // A negative entry the kernel may cache for the entry timeout:
            // compilers and loaders probe many paths that do not exist.
            // Creating the name through the mount replaces it at once. Not
            // for a hidden path: each attempt must reach us to be counted.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && !self.hidden_name(parent, name) => {
                Ok(Entry {
                    inode: 0,
                    generation: 0,
                    // SAFETY: stat64 is plain old data; all-zero is valid.
                    attr: unsafe { std::mem::zeroed() },
                    attr_flags: 0,
                    attr_timeout: Duration::ZERO,
                    entry_timeout: self.entry_timeout,
                })
            }
            r => r,
        }
    }

    fn forget(&self, _ctx: &Context, inode: u64, count: u64) {
        self.forget_one(inode, count);
    }

    fn batch_forget(&self, _ctx: &Context, requests: Vec<(u64, u64)>) {
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

    fn getattr(
        &self,
        _ctx: &Context,
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

    fn setattr(
        &self,
        _ctx: &Context,
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
        if self.passthrough && valid.intersects(owner_bits | SetattrValid::KILL_SUIDGID) {
            self.pt_set_owner_mode(inode, &info.path, &attr, valid)?;
        } else if valid.intersects(owner_bits) || valid.contains(SetattrValid::KILL_SUIDGID) {
            let cur_st = self.real_stat(&info)?;
            let mut new = upper::presented_override(&cur_st, info.state.ovr.as_ref(), &self.ids);
            if valid.contains(SetattrValid::UID) {
                new.uid = attr.st_uid;
            }
            if valid.contains(SetattrValid::GID) {
                new.gid = attr.st_gid;
            }
            if valid.contains(SetattrValid::MODE) {
                new.mode = attr.st_mode & 0o7777;
            } else if valid.contains(SetattrValid::KILL_SUIDGID) {
                new.mode &= !libc::S_ISUID;
                if new.mode & libc::S_IXGRP != 0 {
                    new.mode &= !libc::S_ISGID;
                }
            }
            if upper::can_have_xattrs(kind) {
                let fd = self.layers.open(Layer::Upper, &info.path, libc::O_PATH)?;
                upper::write_override(fd.as_fd(), kind, &new)?;
                sys::fchmodat(pfd.as_fd(), &n, upper::real_perm(kind, new.mode))?;
                let mut t = self.table();
                if let Some(s) = t.state_mut(inode) {
                    s.ovr = if upper::needs_override(kind, &new) {
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

    fn readlink(&self, _ctx: &Context, inode: u64) -> io::Result<Vec<u8>> {
        let info = self.info(inode)?;
        if info.state.kind != libc::S_IFLNK {
            return Err(err(libc::EINVAL));
        }
        let (pfd, n) = self.layers.parent_of(Self::layer_of(&info), &info.path)?;
        sys::readlinkat(pfd.as_fd(), &n)
    }

    fn symlink(
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

    fn mknod(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        _rdev: u32,
        _umask: u32,
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

    fn mkdir(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        _umask: u32,
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

    fn unlink(&self, _ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
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

    fn rmdir(&self, _ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
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

    fn rename(
        &self,
        _ctx: &Context,
        olddir: u64,
        oldname: &CStr,
        newdir: u64,
        newname: &CStr,
        flags: u32,
    ) -> io::Result<()> {
        self.do_rename(
            olddir,
            oldname.to_bytes(),
            newdir,
            newname.to_bytes(),
            flags,
        )
    }

    fn link(
        &self,
        _ctx: &Context,
        inode: u64,
        newparent: u64,
        newname: &CStr,
    ) -> io::Result<Entry> {
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

    /// ENOSYS: the kernel then opens files without asking (`no_open`),
    /// keeps their cached pages, sends no FLUSH/RELEASE, and I/O comes
    /// without a handle (served by `io_file`).
    fn open(
        &self,
        _ctx: &Context,
        _inode: u64,
        _flags: u32,
        _fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        Err(err(libc::ENOSYS))
    }

    fn create(
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

    fn read(
        &self,
        _ctx: &Context,
        inode: u64,
        handle: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        _lock_owner: Option<u64>,
        flags: u32,
    ) -> io::Result<usize> {
        if handle == 0 {
            // A file opened for writing is copied up at its first read too,
            // as it was at open: so a host file the caller cannot read
            // (/etc/gshadow for useradd) reads as the empty copy.
            let writer = flags as i32 & libc::O_ACCMODE != libc::O_RDONLY;
            let need = if writer { Need::Write } else { Need::Read };
            let f = self.io_file(inode, need)?;
            return w.write_from(&mut *borrow_file(&f), size as usize, offset);
        }
        let h = self.handle(handle)?;
        let mut f = borrow_file(&h);
        w.write_from(&mut *f, size as usize, offset)
    }

    fn write(
        &self,
        _ctx: &Context,
        inode: u64,
        handle: u64,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
        _lock_owner: Option<u64>,
        _delayed_write: bool,
        _flags: u32,
        _fuse_flags: u32,
    ) -> io::Result<usize> {
        if handle == 0 {
            let f = self.io_file(inode, Need::Write)?;
            return r.read_to(&mut *borrow_file(&f), size as usize, offset);
        }
        let h = self.handle(handle)?;
        let mut f = borrow_file(&h);
        r.read_to(&mut *f, size as usize, offset)
    }

    /// ENOSYS: nothing to do at close (writes are not buffered here, POSIX
    /// locks are the kernel's), so the kernel stops sending FLUSH.
    fn flush(&self, _ctx: &Context, _inode: u64, _handle: u64, _lock_owner: u64) -> io::Result<()> {
        Err(err(libc::ENOSYS))
    }

    fn fsync(&self, _ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
        if handle == 0 {
            let upper = self.table().state(inode).map(|s| s.upper).unwrap_or(false);
            if !upper {
                // Nothing was written: the host copy is not ours to sync.
                return Ok(());
            }
            let f = self.io_file(inode, Need::Read)?;
            return sys::fsync(f.as_fd(), datasync);
        }
        sys::fsync(self.handle(handle)?.as_fd(), datasync)
    }

    fn fallocate(
        &self,
        _ctx: &Context,
        inode: u64,
        handle: u64,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> io::Result<()> {
        if handle == 0 {
            let f = self.io_file(inode, Need::Write)?;
            return sys::fallocate(f.as_fd(), mode as i32, offset, length);
        }
        sys::fallocate(self.handle(handle)?.as_fd(), mode as i32, offset, length)
    }

    fn release(
        &self,
        _ctx: &Context,
        _inode: u64,
        _flags: u32,
        handle: u64,
        _flush: bool,
        _flock_release: bool,
        _lock_owner: Option<u64>,
    ) -> io::Result<()> {
        self.drop_handle(handle);
        Ok(())
    }

    fn statfs(&self, _ctx: &Context, _inode: u64) -> io::Result<libc::statvfs64> {
        sys::fstatvfs(self.layers.upper.as_fd())
    }

    fn setxattr(
        &self,
        _ctx: &Context,
        inode: u64,
        name: &CStr,
        value: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        let fd = self.xattr_target(inode, name)?;
        sys::setxattr(fd.as_fd(), name, value, flags as i32)
    }

    fn getxattr(
        &self,
        _ctx: &Context,
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

    fn listxattr(&self, _ctx: &Context, inode: u64, size: u32) -> io::Result<ListxattrReply> {
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

    fn removexattr(&self, _ctx: &Context, inode: u64, name: &CStr) -> io::Result<()> {
        let fd = self.xattr_target(inode, name)?;
        sys::removexattr(fd.as_fd(), name)
    }

    /// ENOSYS: the kernel then opens directories without asking
    /// (`no_opendir`), sends no RELEASEDIR, and caches listings in its page
    /// cache (dropped when the directory changes through the mount, or when
    /// its mtime changed once attributes are fetched again).
    fn opendir(
        &self,
        _ctx: &Context,
        _inode: u64,
        _flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions)> {
        Err(err(libc::ENOSYS))
    }

    fn readdir(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        _size: u32,
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

    fn readdirplus(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        _size: u32,
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

    fn fsyncdir(
        &self,
        _ctx: &Context,
        _inode: u64,
        _datasync: bool,
        _handle: u64,
    ) -> io::Result<()> {
        Ok(())
    }

    fn releasedir(&self, _ctx: &Context, _inode: u64, _flags: u32, _handle: u64) -> io::Result<()> {
        Ok(())
    }

    fn access(&self, ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
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

    fn lseek(
        &self,
        _ctx: &Context,
        inode: u64,
        handle: u64,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        let off = i64::try_from(offset).map_err(|_| err(libc::EINVAL))?;
        if handle == 0 {
            let f = self.io_file(inode, Need::Read)?;
            return Ok(sys::lseek(f.as_fd(), off, whence as i32)? as u64);
        }
        let r = sys::lseek(self.handle(handle)?.as_fd(), off, whence as i32)?;
        Ok(r as u64)
    }
}

/// The flags of a FUSE open that mean something to the server's own open:
/// the kernel passes its internal bits too (__FMODE_EXEC for execve), which
/// openat2 refuses with EINVAL. O_DIRECT is the kernel's business (the
/// request buffers are not aligned for it); O_NOATIME would fail on files
/// the server does not own.
fn open_flags(flags: i32) -> i32 {
    flags
        & (libc::O_ACCMODE
            | libc::O_APPEND
            | libc::O_TRUNC
            | libc::O_NONBLOCK
            | libc::O_DSYNC
            | libc::O_SYNC
            | libc::O_LARGEFILE)
}
