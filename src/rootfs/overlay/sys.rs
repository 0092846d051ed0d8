//! Thin wrappers around the raw syscalls the overlay needs.
//!
//! Every path given to these helpers is relative to a layer directory fd and is
//! resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` so that a
//! symlink planted in a layer can never redirect the server outside it.

use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// `Result` of a raw call that returns -1 on error.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// An `io::Error` from an errno value.
pub(crate) fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// A C string from bytes (EINVAL when they contain a NUL).
pub(crate) fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| err(libc::EINVAL))
}

static HAVE_OPENAT2: AtomicBool = AtomicBool::new(true);

/// Longest relative path handed to the kernel in one piece: a deeper one
/// (the kernel refuses paths of PATH_MAX bytes or more, and a tree made
/// inside may be deeper than that below a layer root) is walked in pieces.
const CHUNK: usize = 2048;

/// Opens `rel` (relative, "" = the directory itself) beneath `dir` without
/// following any symlink. `O_NOFOLLOW | O_CLOEXEC` are always added.
pub(crate) fn open_beneath(
    dir: BorrowedFd<'_>,
    rel: &[u8],
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    if rel.len() <= CHUNK {
        return open_beneath_piece(dir, rel, flags, mode);
    }
    // Each piece ends at a '/' and is opened beneath the directory the
    // previous one reached, with the same rules, so the walk stays beneath
    // `dir` as a single lookup would.
    let mut at: Option<OwnedFd> = None;
    let mut rest = rel;
    while rest.len() > CHUNK {
        let cut = rest[..=CHUNK]
            .iter()
            .rposition(|&b| b == b'/')
            .filter(|&i| i > 0)
            .ok_or_else(|| err(libc::ENAMETOOLONG))?;
        let base = at.as_ref().map_or(dir, |f| f.as_fd());
        let next = open_beneath_piece(base, &rest[..cut], libc::O_PATH | libc::O_DIRECTORY, 0)?;
        at = Some(next);
        rest = &rest[cut + 1..];
    }
    let base = at.as_ref().map_or(dir, |f| f.as_fd());
    open_beneath_piece(base, rest, flags, mode)
}

/// [`open_beneath`] of a path the kernel takes in one piece.
fn open_beneath_piece(
    dir: BorrowedFd<'_>,
    rel: &[u8],
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    let path = if rel.is_empty() {
        CString::from(c".")
    } else {
        cstr(rel)?
    };
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    if HAVE_OPENAT2.load(Ordering::Relaxed) {
        let how_mode = if flags & libc::O_CREAT != 0 {
            mode as u64
        } else {
            0
        };
        let resolve =
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
        for _ in 0..16 {
            match crate::sys::openat2_once(dir, &path, flags, how_mode, resolve) {
                Ok(fd) => return Ok(fd),
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::ENOSYS) => {
                    HAVE_OPENAT2.store(false, Ordering::Relaxed);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if HAVE_OPENAT2.load(Ordering::Relaxed) {
            return Err(err(libc::EAGAIN));
        }
    }
    // SAFETY: valid NUL-terminated path; returns a new fd or -1.
    let ret = unsafe { libc::openat(dir.as_raw_fd(), path.as_ptr(), flags, mode) };
    let fd = check(ret)?;
    // SAFETY: fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens an absolute host path as an `O_PATH | O_DIRECTORY` fd.
pub(crate) fn open_dir_path(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: valid NUL-terminated path; returns a new fd or -1.
    let ret = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    let fd = check(ret)?;
    // SAFETY: fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fstat` (works on O_PATH fds).
pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat64> {
    let mut st = MaybeUninit::<libc::stat64>::zeroed();
    // SAFETY: `st` points to writable memory of the right size.
    check(unsafe { libc::fstat64(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat64 succeeded and filled the struct.
    Ok(unsafe { st.assume_init() })
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; `name` must be a single component.
pub(crate) fn fstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat64> {
    let mut st = MaybeUninit::<libc::stat64>::zeroed();
    // SAFETY: valid name and writable out-pointer of the right size.
    check(unsafe {
        libc::fstatat64(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: the call succeeded and filled the struct.
    Ok(unsafe { st.assume_init() })
}

pub(crate) fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid NUL-terminated name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

pub(crate) fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    // SAFETY: valid NUL-terminated name.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

pub(crate) fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid NUL-terminated strings.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

pub(crate) fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> io::Result<()> {
    // SAFETY: valid NUL-terminated name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

pub(crate) fn linkat(
    odir: BorrowedFd<'_>,
    oname: &CStr,
    ndir: BorrowedFd<'_>,
    nname: &CStr,
) -> io::Result<()> {
    // SAFETY: valid NUL-terminated names; flags 0 never follows symlinks.
    check(unsafe {
        libc::linkat(
            odir.as_raw_fd(),
            oname.as_ptr(),
            ndir.as_raw_fd(),
            nname.as_ptr(),
            0,
        )
    })
    .map(drop)
}

pub(crate) fn renameat2(
    odir: BorrowedFd<'_>,
    oname: &CStr,
    ndir: BorrowedFd<'_>,
    nname: &CStr,
    flags: u32,
) -> io::Result<()> {
    // SAFETY: valid NUL-terminated names; renameat2 only reads them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            odir.as_raw_fd(),
            oname.as_ptr(),
            ndir.as_raw_fd(),
            nname.as_ptr(),
            flags,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub(crate) fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: buf is writable for buf.len() bytes.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// `fchmodat(dir, name, mode, 0)`; never call it on a symlink.
pub(crate) fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid NUL-terminated name.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) }).map(drop)
}

/// `fchownat(dir, name, -1, -1, AT_SYMLINK_NOFOLLOW)`: changes nothing but
/// the ctime.
pub(crate) fn touch_ctime(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid NUL-terminated name; -1 ids change nothing.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            u32::MAX,
            u32::MAX,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub(crate) fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

/// `utimensat(dir, name, times, AT_SYMLINK_NOFOLLOW)`.
pub(crate) fn utimensat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    times: &[libc::timespec; 2],
) -> io::Result<()> {
    // SAFETY: valid name and a pointer to two timespecs.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub(crate) fn futimens(fd: BorrowedFd<'_>, times: &[libc::timespec; 2]) -> io::Result<()> {
    // SAFETY: valid fd and a pointer to two timespecs.
    check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) }).map(drop)
}

pub(crate) fn ftruncate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    let len = i64::try_from(len).map_err(|_| err(libc::EFBIG))?;
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::ftruncate64(fd.as_raw_fd(), len) }).map(drop)
}

pub(crate) fn lseek(fd: BorrowedFd<'_>, off: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: plain syscall on a valid fd.
    let r = unsafe { libc::lseek64(fd.as_raw_fd(), off, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub(crate) fn fallocate(fd: BorrowedFd<'_>, mode: i32, off: u64, len: u64) -> io::Result<()> {
    let off = i64::try_from(off).map_err(|_| err(libc::EFBIG))?;
    let len = i64::try_from(len).map_err(|_| err(libc::EFBIG))?;
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::fallocate64(fd.as_raw_fd(), mode, off, len) }).map(drop)
}

pub(crate) fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> io::Result<()> {
    // SAFETY: plain syscalls on a valid fd.
    check(unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })
    .map(drop)
}

pub(crate) fn fstatvfs(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs64> {
    let mut st = MaybeUninit::<libc::statvfs64>::zeroed();
    // SAFETY: writable out-pointer of the right size.
    check(unsafe { libc::fstatvfs64(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: the call succeeded and filled the struct.
    Ok(unsafe { st.assume_init() })
}

/// `copy_file_range` between explicit offsets; returns bytes copied.
pub(crate) fn copy_file_range(
    src: BorrowedFd<'_>,
    src_off: &mut i64,
    dst: BorrowedFd<'_>,
    dst_off: &mut i64,
    len: usize,
) -> io::Result<usize> {
    // SAFETY: both offsets point to valid i64s that the kernel updates.
    let r = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            src_off as *mut i64,
            dst.as_raw_fd(),
            dst_off as *mut i64,
            len,
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

pub(crate) fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], off: i64) -> io::Result<usize> {
    // SAFETY: buf is writable for its length.
    let r = unsafe { libc::pread64(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), off) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

pub(crate) fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], off: i64) -> io::Result<usize> {
    // SAFETY: buf is readable for its length.
    let r = unsafe { libc::pwrite64(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), off) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// The `/proc/self/fd/N` path of an fd: xattr calls on it reach the file the
/// fd refers to (also for O_PATH fds, symlinks included).
fn proc_path(fd: BorrowedFd<'_>) -> io::Result<CString> {
    cstr(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())
}

/// Reads an xattr; `Ok(None)` when it is absent (or unsupported).
pub(crate) fn getxattr(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let p = proc_path(fd)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: valid strings; buf writable for buf.len() bytes.
        let n = unsafe {
            libc::getxattr(
                p.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 65536 * 2 => {
                // SAFETY: size query with a NULL buffer.
                let need =
                    unsafe { libc::getxattr(p.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
                if need < 0 {
                    return Err(io::Error::last_os_error());
                }
                buf.resize(need as usize + 1, 0);
            }
            _ => return Err(e),
        }
    }
}

/// Lists xattr names (NUL separated).
pub(crate) fn listxattr(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let p = proc_path(fd)?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: valid path; buf writable for its length.
        let n = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => {
                // SAFETY: size query with a NULL buffer.
                let need = unsafe { libc::listxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
                if need < 0 {
                    return Err(io::Error::last_os_error());
                }
                buf.resize(need as usize + 1, 0);
            }
            _ => return Err(e),
        }
    }
}

pub(crate) fn setxattr(
    fd: BorrowedFd<'_>,
    name: &CStr,
    value: &[u8],
    flags: i32,
) -> io::Result<()> {
    let p = proc_path(fd)?;
    // SAFETY: valid strings; value readable for its length.
    check(unsafe {
        libc::setxattr(
            p.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

pub(crate) fn removexattr(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let p = proc_path(fd)?;
    // SAFETY: valid NUL-terminated strings.
    check(unsafe { libc::removexattr(p.as_ptr(), name.as_ptr()) }).map(drop)
}

/// `read(2)` into `buf`.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is writable for its whole length.
    let r = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Run `op` on the file of `f` as a `&mut File` (what the FUSE copy
/// helpers take), without taking or closing its descriptor.
pub(crate) fn with_file_mut<R>(f: &std::fs::File, op: impl FnOnce(&mut std::fs::File) -> R) -> R {
    // SAFETY: the descriptor stays open while `f` is borrowed, which outlasts
    // this call; ManuallyDrop guarantees the temporary never closes it and
    // it does not escape `op`.
    let mut file =
        std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(f.as_raw_fd()) });
    op(&mut file)
}

/// An all-zero `stat64` (the attributes of a negative lookup entry).
pub(crate) fn zeroed_stat() -> libc::stat64 {
    // SAFETY: stat64 is plain old data; all-zero is valid.
    unsafe { std::mem::zeroed() }
}

nix::ioctl_read!(fuse_dev_ioc_clone, 229, 0, u32);

/// `FUSE_DEV_IOC_CLONE`: attach the fresh /dev/fuse descriptor `new` to the
/// connection of `old`.
pub(crate) fn fuse_clone_fd(new: BorrowedFd<'_>, old: BorrowedFd<'_>) -> nix::Result<()> {
    let mut old = old.as_raw_fd() as u32;
    // SAFETY: FUSE_DEV_IOC_CLONE reads one u32 (the source fd) from a valid
    // pointer to our stack; `new` is an open /dev/fuse descriptor.
    unsafe { fuse_dev_ioc_clone(new.as_raw_fd(), &mut old) }.map(drop)
}
