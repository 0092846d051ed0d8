//! Files held open for I/O on nodes, without open handles.
//!
//! The server answers FUSE OPEN with ENOSYS, which makes the kernel stop
//! sending OPEN, FLUSH and RELEASE for files (`no_open`): an `open(2)` of a
//! file the kernel already knows costs no round trip, and its cached pages
//! are kept across opens. Reads and writes then arrive with no handle, and
//! the server finds a file for the node here: a small cache of fds keyed by
//! node id, reopened by path when missing, replaced when the node moves to
//! the upper layer (copy-up) or when the host replaced the lower file.
//!
//! The cache is bounded ([`CAPACITY`] fds, least recently used evicted),
//! except for *pinned* fds: a file that loses its last name while the
//! kernel still knows it (unlinked or replaced by a rename while a process
//! may have it open) can no longer be reopened by path, so the server opens
//! it before the name goes and keeps that fd until the kernel forgets the
//! node.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard};

/// How many unpinned fds the cache keeps.
pub(crate) const CAPACITY: usize = 256;

/// Host identity of an open file: (st_dev, st_ino).
pub(crate) type HostId = (u64, u64);

/// One cached file.
#[derive(Debug)]
struct Slot {
    file: Arc<File>,
    /// Opened for writing (O_RDWR or O_WRONLY).
    writable: bool,
    /// Opened for reading (O_RDONLY or O_RDWR).
    readable: bool,
    /// The file is in the upper layer.
    upper: bool,
    id: HostId,
    pinned: bool,
    used: u64,
}

#[derive(Debug, Default)]
struct Inner {
    slots: HashMap<u64, Slot>,
    tick: u64,
    unpinned: usize,
}

/// What an I/O request needs from a cached fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    Read,
    Write,
}

/// How a cached fd was opened.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Opened {
    pub readable: bool,
    pub writable: bool,
    pub upper: bool,
    pub id: HostId,
}

/// The fd cache (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct IoFds {
    inner: Mutex<Inner>,
}

impl IoFds {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A cached fd of `ino` usable for `need` on the given layer; a pinned
    /// fd is returned whatever the layer (its node has no path any more).
    pub(crate) fn get(&self, ino: u64, need: Need, upper: bool) -> Option<Arc<File>> {
        let mut g = self.lock();
        g.tick += 1;
        let tick = g.tick;
        let s = g.slots.get_mut(&ino)?;
        let fits = match need {
            Need::Read => s.readable,
            Need::Write => s.writable,
        };
        if fits && (s.pinned || s.upper == upper) {
            s.used = tick;
            return Some(s.file.clone());
        }
        None
    }

    /// Whether `ino` has a pinned fd.
    pub(crate) fn pinned(&self, ino: u64) -> bool {
        self.lock()
            .slots
            .get(&ino)
            .map(|s| s.pinned)
            .unwrap_or(false)
    }

    /// Caches `file` for `ino` (replacing what was there) and returns it.
    pub(crate) fn put(&self, ino: u64, file: File, how: Opened, pinned: bool) -> Arc<File> {
        let file = Arc::new(file);
        let mut g = self.lock();
        g.tick += 1;
        let slot = Slot {
            file: file.clone(),
            writable: how.writable,
            readable: how.readable,
            upper: how.upper,
            id: how.id,
            pinned,
            used: g.tick,
        };
        if let Some(old) = g.slots.insert(ino, slot) {
            if !old.pinned {
                g.unpinned -= 1;
            }
        }
        if !pinned {
            g.unpinned += 1;
        }
        while g.unpinned > CAPACITY {
            let victim = g
                .slots
                .iter()
                .filter(|(k, s)| !s.pinned && **k != ino)
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| *k);
            match victim {
                Some(k) => {
                    g.slots.remove(&k);
                    g.unpinned -= 1;
                }
                None => break,
            }
        }
        file
    }

    /// Forgets the fd of `ino`.
    pub(crate) fn remove(&self, ino: u64) {
        let mut g = self.lock();
        if let Some(old) = g.slots.remove(&ino) {
            if !old.pinned {
                g.unpinned -= 1;
            }
        }
    }

    /// Drops the unpinned fd of `ino` when it is not the host file `id`
    /// (the host replaced the file under the same path).
    pub(crate) fn check(&self, ino: u64, id: HostId) {
        let mut g = self.lock();
        let stale = matches!(g.slots.get(&ino), Some(s) if !s.pinned && s.id != id);
        if stale {
            g.slots.remove(&ino);
            g.unpinned -= 1;
        }
    }

    /// Number of fds held (for statistics and tests).
    pub(crate) fn len(&self) -> usize {
        self.lock().slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> File {
        File::open("/dev/null").expect("/dev/null")
    }

    fn how(upper: bool, writable: bool) -> Opened {
        Opened {
            readable: true,
            writable,
            upper,
            id: (1, 2),
        }
    }

    #[test]
    fn matches_layer_and_access() {
        let c = IoFds::default();
        c.put(7, file(), how(false, false), false);
        assert!(c.get(7, Need::Read, false).is_some());
        assert!(c.get(7, Need::Write, false).is_none());
        // Copied up since: the lower fd does not serve the node any more.
        assert!(c.get(7, Need::Read, true).is_none());
        c.put(7, file(), how(true, true), false);
        assert!(c.get(7, Need::Write, true).is_some());
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn bounded_lru_keeps_pinned() {
        let c = IoFds::default();
        c.put(1, file(), how(true, true), true);
        for ino in 10..(10 + CAPACITY as u64 + 50) {
            c.put(ino, file(), how(false, false), false);
            // Keep 10 hot.
            assert!(c.get(10, Need::Read, false).is_some());
        }
        assert_eq!(c.len(), CAPACITY + 1);
        assert!(c.pinned(1));
        assert!(
            c.get(1, Need::Write, false).is_some(),
            "pinned ignores layer"
        );
        assert!(c.get(10, Need::Read, false).is_some(), "recently used kept");
        assert!(c.get(11, Need::Read, false).is_none(), "oldest evicted");
        c.remove(1);
        assert!(!c.pinned(1));
    }

    #[test]
    fn replaced_host_file_is_dropped() {
        let c = IoFds::default();
        c.put(3, file(), how(false, false), false);
        c.check(3, (1, 2));
        assert_eq!(c.len(), 1);
        c.check(3, (1, 99));
        assert_eq!(c.len(), 0);
    }
}
