//! The `FileSystem` implementation: the merged view served to the kernel.
//!
//! By concern: `lookup` (masks, names), `attrs`, `create` (and removal),
//! `rename`, `listing`, `fileio`; `dispatch` is the `FileSystem` impl that
//! hands each request to them.

mod attrs;
mod create;
mod dispatch;
mod fileio;
mod listing;
mod lookup;
mod rename;

pub(crate) use attrs::{kills_setid, setid_after, Actor};

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use super::inode::{NodeInfo, NodeState, Special, Table};
use super::iofd::IoFds;
use super::layer::{Layer, Layers};
use super::sys::{self, err};
use super::PassthroughConfig;
use super::{OverlayConfig, OverlayError};
use crate::rootfs::upper::{self, Ids};

use listing::SnapEnt;
pub(crate) use lookup::Masks;
use lookup::{build_masks, host_to_view};

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
    /// The sandbox's /proc (set once the command runs): the supplementary
    /// groups of a process that changes a set-id file.
    pub(crate) procfs: std::sync::OnceLock<OwnedFd>,
    /// The first files read (view paths, in order), for the next launch of
    /// the same command to read ahead (`crate::rootfs::prefetch`).
    first_reads: Mutex<Vec<Vec<u8>>>,
    /// `first_reads` is full: reads are no longer looked at.
    first_reads_full: std::sync::atomic::AtomicBool,
}

/// The pid, in requests, of the sandbox's init: the kernel gives request
/// pids in the pid namespace of the process that mounted (init, its 1).
const INIT_PID: u32 = 1;

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
        let mut layers = Layers::new(lower, upper, work, xattr_whiteouts);
        layers.image_lower = crate::image::tree::is_image_tree(layers.lower.as_fd());

        let ids = Ids::overlay(
            (cfg.caller_uid, cfg.caller_gid),
            cfg.caller_inside,
            cfg.id_maps.clone(),
        );

        // Masks: the paths as given, their canonical host form, and the
        // upper/work directories themselves when they lie below the lower.
        // A lower other than the host's root is an image's tree.
        let host = cfg.lower == std::path::Path::new("/");
        let mut masks = build_masks(&cfg.lower, &cfg.hidden, &cfg.empty, &cfg.canonical, host)?;
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
                let lower_ovr = layers.lower_override(b"", &lst).ok().flatten();
                let o = upper::presented_override(&lst, lower_ovr.as_ref(), &ids);
                if upper::needs_override(libc::S_IFDIR, &o, &ids) {
                    let _ = upper::write_override(layers.upper.as_fd(), libc::S_IFDIR, &o, &ids);
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
            procfs: std::sync::OnceLock::new(),
            first_reads: Mutex::new(Vec::new()),
            first_reads_full: std::sync::atomic::AtomicBool::new(false),
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
        let masks = build_masks(&cfg.dir, &cfg.hidden, &cfg.empty, &Default::default(), true)?;
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
}

impl OverlayFs {
    /// Note that `inode` was read by `pid`, while fewer than `FIRST_READS`
    /// are noted (init's read-ahead is not).
    pub(super) fn note_read(&self, inode: u64, pid: u32) {
        use std::sync::atomic::Ordering;
        if pid == INIT_PID || self.first_reads_full.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut v) = self.first_reads.lock() else {
            return;
        };
        if let Some(info) = self.table().info(inode) {
            if info.state.kind == libc::S_IFREG && !v.contains(&info.path) {
                v.push(info.path);
            }
        }
        if v.len() >= crate::rootfs::prefetch::FIRST_READS {
            self.first_reads_full.store(true, Ordering::Relaxed);
        }
    }

    /// The first files read, as absolute paths inside.
    pub(crate) fn first_reads(&self) -> Vec<std::path::PathBuf> {
        use std::os::unix::ffi::OsStrExt;
        self.first_reads
            .lock()
            .map(|v| {
                v.iter()
                    .map(|p| std::path::Path::new("/").join(std::ffi::OsStr::from_bytes(p)))
                    .collect()
            })
            .unwrap_or_default()
    }
}
