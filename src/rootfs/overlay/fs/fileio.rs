//! I/O: files opened for requests without a handle (the bounded cache in
//! `iofd`), CREATE's handles, read, write, sync, seek.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fuse_backend_rs::api::filesystem::{ZeroCopyReader, ZeroCopyWriter};

use super::OverlayFs;
use crate::rootfs::overlay::inode::{Special, ROOT};
use crate::rootfs::overlay::iofd::{Need, Opened};
use crate::rootfs::overlay::layer::Layer;
use crate::rootfs::overlay::sys::{self, err};

/// The flags of a FUSE open that mean something to the server's own open:
/// the kernel passes its internal bits too (__FMODE_EXEC for execve), which
/// openat2 refuses with EINVAL. O_DIRECT is the kernel's business (the
/// request buffers are not aligned for it); O_NOATIME would fail on files
/// the server does not own.
pub(super) fn open_flags(flags: i32) -> i32 {
    flags
        & (libc::O_ACCMODE
            | libc::O_APPEND
            | libc::O_TRUNC
            | libc::O_NONBLOCK
            | libc::O_DSYNC
            | libc::O_SYNC
            | libc::O_LARGEFILE)
}

impl OverlayFs {
    /// Opens `rel` for I/O: upper files read-write when the host allows
    /// (else as `need` requires), lower files read-only.
    pub(super) fn open_io(
        &self,
        upper: bool,
        rel: &[u8],
        need: Need,
    ) -> io::Result<(OwnedFd, Opened)> {
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
    pub(super) fn io_file(&self, ino: u64, need: Need) -> io::Result<Arc<File>> {
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

    pub(crate) fn new_handle(&self, h: File) -> u64 {
        let id = self.next_handle.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.handles.write() {
            m.insert(id, Arc::new(h));
        }
        id
    }

    pub(super) fn handle(&self, id: u64) -> io::Result<Arc<File>> {
        self.handles
            .read()
            .ok()
            .and_then(|m| m.get(&id).cloned())
            .ok_or_else(|| err(libc::EBADF))
    }

    pub(super) fn drop_handle(&self, id: u64) {
        if let Ok(mut m) = self.handles.write() {
            m.remove(&id);
        }
    }

    pub(super) fn op_read(
        &self,
        inode: u64,
        handle: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        flags: u32,
    ) -> io::Result<usize> {
        if handle == 0 {
            // A file opened for writing is copied up at its first read too,
            // as it was at open: so a host file the caller cannot read
            // (/etc/gshadow for useradd) reads as the empty copy.
            let writer = flags as i32 & libc::O_ACCMODE != libc::O_RDONLY;
            let need = if writer { Need::Write } else { Need::Read };
            let f = self.io_file(inode, need)?;
            return sys::with_file_mut(&f, |f| w.write_from(f, size as usize, offset));
        }
        let h = self.handle(handle)?;
        sys::with_file_mut(&h, |f| w.write_from(f, size as usize, offset))
    }

    pub(super) fn op_write(
        &self,
        inode: u64,
        handle: u64,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
    ) -> io::Result<usize> {
        if handle == 0 {
            let f = self.io_file(inode, Need::Write)?;
            return sys::with_file_mut(&f, |f| r.read_to(f, size as usize, offset));
        }
        let h = self.handle(handle)?;
        sys::with_file_mut(&h, |f| r.read_to(f, size as usize, offset))
    }

    pub(super) fn op_fsync(&self, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
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

    pub(super) fn op_fallocate(
        &self,
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

    pub(super) fn op_lseek(
        &self,
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
