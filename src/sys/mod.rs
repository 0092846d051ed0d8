//! The thin unsafe layer: raw system calls that nix does not wrap, each in
//! one function with a SAFETY note. Everything else in sbox is safe code
//! (the FUSE overlay keeps its own file-system calls in
//! `rootfs::overlay::sys`).

pub mod confine;
mod fd;
pub mod netwatch;

use fd::owned;
pub use fd::{accept, inherited_fd, open, pidfd_getfd, pidfd_open, recv_with_fds, socket_protocol};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::Pid;
use std::os::fd::RawFd;

/// What `clone_process` returns in each process.
pub enum Forked {
    Parent(Pid),
    Child,
}

/// `clone(2)` with fork semantics (no new stack, SIGCHLD on exit) and the
/// given namespace flags. Must be called while the process has one thread.
pub fn clone_process(flags: CloneFlags) -> nix::Result<Forked> {
    let raw = flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: with a null stack pointer clone(2) behaves like fork(2): the
    // child gets a copy-on-write copy of the address space and continues
    // from this point. The caller guarantees the process is single-threaded,
    // so no lock can be held by a thread that does not exist in the child.
    // The argument order (flags, stack, ptid, ctid/tls, tls/ctid) differs
    // between architectures but all pointers are null here.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            raw,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
            0 as libc::c_ulong,
        )
    };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(Pid::from_raw(pid as libc::pid_t))),
    }
}

/// Ask the kernel to send `sig` to this process when its parent dies.
pub fn set_parent_death_signal(sig: libc::c_int) -> nix::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number by value; no memory is
    // passed to the kernel.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) };
    Errno::result(r).map(drop)
}

/// Mark the process not dumpable: no core dumps, no ptrace by same-uid
/// processes, /proc/PID entries owned by root.
pub fn set_not_dumpable() -> nix::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes an integer by value.
    let r = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0) };
    Errno::result(r).map(drop)
}

/// Set `PR_SET_NO_NEW_PRIVS`: execve can no longer grant privileges.
pub fn set_no_new_privs() -> nix::Result<()> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integers by value.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) };
    Errno::result(r).map(drop)
}

/// Close every file descriptor from `first` upwards.
pub fn close_fds_from(first: RawFd) -> nix::Result<()> {
    // SAFETY: close_range(2) only closes descriptors; the caller no longer
    // uses any descriptor at or above `first`.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, u32::MAX, 0) };
    Errno::result(r).map(drop)
}

/// Mark every file descriptor from `first` upwards close-on-exec.
pub fn cloexec_fds_from(first: RawFd) -> nix::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            u32::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    Errno::result(r).map(drop)
}

/// Drop a capability from the bounding set.
pub fn drop_bounding_cap(cap: u32) -> nix::Result<()> {
    // SAFETY: PR_CAPBSET_DROP takes the capability number by value.
    let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    match Errno::result(r) {
        Ok(_) | Err(Errno::EINVAL) => Ok(()), // EINVAL: the kernel does not know it
        Err(e) => Err(e),
    }
}

/// Set the effective, permitted and inheritable capability sets to `keep`
/// (a bit mask over capability numbers 0..64) and clear the ambient set.
pub fn set_capabilities(keep: u64) -> nix::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let lo = keep as u32;
    let hi = (keep >> 32) as u32;
    let data = [
        Data {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        Data {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: clearing the ambient set takes integers by value.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    Errno::result(r)?;
    // SAFETY: capset(2) reads one header and two data structs (version 3
    // layout); both live on this stack frame for the duration of the call.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    Errno::result(r).map(drop)
}

/// The highest capability number the running kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Bring the loopback interface of the current network namespace up.
pub fn loopback_up() -> nix::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsRawFd;
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills ifr_ifru.ifru_flags of the ifreq we own.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    Errno::result(r)?;
    // SAFETY: reading the union member the previous ioctl filled in.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    Errno::result(r).map(drop)
}

/// Make `fd` the controlling terminal of this (session leader) process.
pub fn set_controlling_tty(fd: RawFd) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal).
    let r = unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
    Errno::result(r).map(drop)
}

/// Read the window size of the terminal on `fd`.
pub fn get_winsize(fd: RawFd) -> Option<libc::winsize> {
    // SAFETY: winsize is plain old data; all-zero is valid.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we own.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (r == 0).then_some(ws)
}

/// Set the window size of the terminal on `fd`.
pub fn set_winsize(fd: RawFd, ws: &libc::winsize) -> nix::Result<()> {
    // SAFETY: TIOCSWINSZ reads one winsize from the struct we pass.
    let r = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, ws as *const libc::winsize) };
    Errno::result(r).map(drop)
}

/// Unlock the pty slave of a master (`unlockpt`) and return its number.
pub fn pty_unlock_and_number(master: RawFd) -> nix::Result<u32> {
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int we own.
    let r = unsafe { libc::ioctl(master, libc::TIOCSPTLCK, &mut unlock) };
    Errno::result(r)?;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes an unsigned int we own.
    let r = unsafe { libc::ioctl(master, libc::TIOCGPTN, &mut n) };
    Errno::result(r)?;
    Ok(n)
}

/// `_exit(2)`: leave at once, without running destructors or atexit
/// handlers (for forked children that must not flush the parent's buffers).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no memory of ours.
    unsafe { libc::_exit(code) }
}

/// `openat2(2)`: open `path` relative to `dir` with `flags` (O_CLOEXEC is
/// always added) and the `resolve` restrictions (RESOLVE_* bits).
pub fn openat2(
    dir: std::os::fd::BorrowedFd<'_>,
    path: &std::path::Path,
    flags: libc::c_int,
    resolve: u64,
) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let path = if path.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        path
    };
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let mut tries = 0;
    loop {
        match openat2_once(dir, &c, flags | libc::O_CLOEXEC, 0, resolve) {
            // A rename elsewhere raced a RESOLVE_BENEATH/IN_ROOT lookup.
            Err(Errno::EAGAIN | Errno::EINTR) if tries < 16 => tries += 1,
            r => return r,
        }
    }
}

/// One `openat2(2)` call: open `path` relative to `dir` with exactly `flags`
/// (nothing added), `mode` (for O_CREAT/O_TMPFILE) and the `resolve`
/// restrictions. EAGAIN/EINTR are the caller's to retry.
pub fn openat2_once(
    dir: std::os::fd::BorrowedFd<'_>,
    path: &std::ffi::CStr,
    flags: libc::c_int,
    mode: u64,
    resolve: u64,
) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    // SAFETY: open_how is plain old data; all-zero is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.mode = mode;
    how.resolve = resolve;
    // SAFETY: openat2 reads the path string and the open_how struct (size
    // passed), both alive for the call; it returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    Errno::result(fd).map(|fd| owned(fd as RawFd))
}

/// Open `path` (absolute, inside the tree at `root`) as O_PATH with every
/// symlink resolved as if `root` were `/`: nothing can lead out of it.
pub fn open_in_root(
    root: &std::path::Path,
    path: &std::path::Path,
) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsFd;
    let root_fd = openat2(cwd(), root, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    let rel = path.strip_prefix("/").unwrap_or(path);
    openat2(
        root_fd.as_fd(),
        rel,
        libc::O_PATH,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// The current directory as a descriptor, for `*at` calls on absolute or
/// cwd-relative paths.
pub fn cwd() -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: AT_FDCWD is a constant the kernel interprets as "the current
    // directory"; it is never closed.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(libc::AT_FDCWD) }
}

/// `openat2(dir, rel, flags)` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`:
/// neither `..`, an absolute path nor a symlink may lead out of `dir`
/// (EXDEV when one would). `O_CLOEXEC` is always added.
pub fn open_beneath(
    dir: std::os::fd::BorrowedFd<'_>,
    rel: &std::path::Path,
    flags: libc::c_int,
) -> nix::Result<std::os::fd::OwnedFd> {
    openat2(
        dir,
        rel,
        flags,
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// The value of extended attribute `name` of `path` (not following a final
/// symlink); `None` when it is not set.
pub fn lgetxattr(path: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: lgetxattr writes at most buf.len() bytes into buf, which we
    // own; both strings are NUL-terminated and alive for the call.
    let r = unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
        )
    };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

/// Restore the default action of SIGPIPE (Rust ignores it), so a printing
/// command ends quietly when its output pipe closes.
pub fn default_sigpipe() {
    // SAFETY: SIG_DFL is a valid disposition; no handler code is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Ignore SIGPIPE, so a write to a pager that was quit early fails with
/// EPIPE (and is dropped) instead of killing sbox.
pub fn ignore_sigpipe() {
    // SAFETY: SIG_IGN is a valid disposition; no handler code is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// `open_tree(2)` with OPEN_TREE_CLONE: a detached copy of the mount tree
/// at the object `fd` refers to (recursively when `recursive`).
pub fn open_tree_clone(
    fd: std::os::fd::BorrowedFd<'_>,
    recursive: bool,
) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let mut flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: open_tree reads the empty NUL-terminated path and returns a new
    // descriptor or -1; `fd` is a valid descriptor for the call.
    let r = unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// `mount_setattr(2)`: make the detached or attached mount tree at `fd`
/// read-only, every mount below it included.
pub fn mount_tree_readonly(fd: std::os::fd::BorrowedFd<'_>) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint;
    // SAFETY: mount_setattr reads the empty path and `attr` (size passed),
    // both alive for the call; `fd` is a valid descriptor.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(r).map(drop)
}

/// `move_mount(2)`: attach the detached tree `from` on the object `to`
/// refers to (both descriptors, no path lookup).
pub fn move_mount_fd(
    from: std::os::fd::BorrowedFd<'_>,
    to: std::os::fd::BorrowedFd<'_>,
) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    // SAFETY: move_mount reads two empty NUL-terminated paths; both
    // descriptors are valid for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            c"".as_ptr(),
            to.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    Errno::result(r).map(drop)
}

/// `ioctl(NS_GET_PARENT)`: the parent of the user namespace `ns`.
pub fn ns_parent(ns: std::os::fd::BorrowedFd<'_>) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // _IO(0xb7, 0x2)
    const NS_GET_PARENT: libc::c_ulong = 0xb702;
    // SAFETY: NS_GET_PARENT takes no argument and returns a new descriptor
    // (O_CLOEXEC) that nothing else owns.
    let r = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_PARENT as _) };
    Errno::result(r)?;
    // SAFETY: `r` is a fresh descriptor returned by the kernel to us.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(r) })
}

/// `prctl(PR_SET_NAME)`: the name `ps` shows for this thread (up to 15
/// bytes).
pub fn set_process_name(name: &std::ffi::CStr) -> nix::Result<()> {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16
    // bytes from the pointer, which lives for the call.
    let r = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) };
    Errno::result(r).map(drop)
}

/// Whether the file at `path` (not followed if a symlink) has any extended
/// attribute (or they cannot be listed).
pub fn has_xattrs(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return true;
    };
    // SAFETY: a null buffer of size 0 asks only for the size of the list;
    // `c` is a NUL-terminated string that lives for the call.
    let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    n != 0
}

/// `PR_GET_NO_NEW_PRIVS`: whether the flag is set on the calling thread.
pub fn no_new_privs() -> nix::Result<bool> {
    // SAFETY: PR_GET_NO_NEW_PRIVS takes no pointer arguments and only reads
    // a flag.
    let r = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    Errno::result(r).map(|v| v == 1)
}

/// Whether any of `signals` is pending for this thread or process (blocked
/// signals wait there until read).
pub fn any_signal_pending(signals: &[libc::c_int]) -> bool {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending fills the set it is given, which lives on our
    // stack for the call.
    if unsafe { libc::sigpending(set.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: sigpending succeeded, so the set is initialised.
    let set = unsafe { set.assume_init() };
    signals
        .iter()
        // SAFETY: sigismember only reads the initialised set.
        .any(|&s| unsafe { libc::sigismember(&set, s) } == 1)
}

/// The size of extended attribute `name` of `path` (following symlinks);
/// `None` when it is not set, empty, or cannot be read.
pub fn getxattr_len(path: &std::path::Path, name: &std::ffi::CStr) -> Option<usize> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: a null buffer of size 0 asks only for the value's length;
    // both strings are NUL-terminated and live for the call.
    let n = unsafe { libc::getxattr(p.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    usize::try_from(n).ok().filter(|n| *n > 0)
}

/// `lsetxattr(2)`: set extended attribute `name` of `path` (not following
/// a final symlink) to `value`.
pub fn lsetxattr(path: &std::path::Path, name: &std::ffi::CStr, value: &[u8]) -> nix::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: lsetxattr reads `value.len()` bytes from `value` and the two
    // NUL-terminated strings, all alive for the call.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            name.as_ptr(),
            value.as_ptr() as *const libc::c_void,
            value.len(),
            0,
        )
    };
    Errno::result(r).map(drop)
}
