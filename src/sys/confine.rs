//! seccomp(2), its user-notification ioctls and the Landlock ABI probe: the
//! raw calls of the confinement layer.

use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `sock_fprog` for `prog`; EINVAL when it is empty, E2BIG when it has
/// more instructions than the kernel's `u16` length can name.
fn fprog(prog: &[seccompiler::sock_filter]) -> nix::Result<libc::sock_fprog> {
    if prog.is_empty() {
        return Err(Errno::EINVAL);
    }
    let len = u16::try_from(prog.len()).map_err(|_| Errno::E2BIG)?;
    Ok(libc::sock_fprog {
        len,
        // seccompiler::sock_filter is #[repr(C)] with the same layout as the
        // kernel's; the kernel only reads through this pointer.
        filter: prog.as_ptr() as *mut libc::sock_filter,
    })
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, prog)`; the return value of the
/// call (a new descriptor with `SECCOMP_FILTER_FLAG_NEW_LISTENER`, else 0).
fn set_mode_filter(prog: &[seccompiler::sock_filter], flags: libc::c_ulong) -> nix::Result<i64> {
    let fprog = fprog(prog)?;
    // SAFETY: `fprog` points to `len` valid instructions borrowed from
    // `prog`, which outlives the call; the kernel copies the program and does
    // not write through the pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    Errno::result(rc)
}

/// Install `prog` as a seccomp filter on the calling thread with `flags`
/// (`SECCOMP_FILTER_FLAG_*`). PR_SET_NO_NEW_PRIVS must be set.
pub fn install_filter(prog: &[seccompiler::sock_filter], flags: libc::c_ulong) -> nix::Result<()> {
    set_mode_filter(prog, flags).map(drop)
}

/// Install `prog` with `SECCOMP_FILTER_FLAG_NEW_LISTENER` and return the
/// listener for its notifications. PR_SET_NO_NEW_PRIVS must be set.
pub fn install_filter_with_listener(prog: &[seccompiler::sock_filter]) -> nix::Result<OwnedFd> {
    let fd = set_mode_filter(prog, libc::SECCOMP_FILTER_FLAG_NEW_LISTENER)?;
    // SAFETY: with NEW_LISTENER the kernel returned a new descriptor that
    // nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `seccomp(SECCOMP_GET_ACTION_AVAIL)`: whether the kernel knows `action`
/// (Ok), or why not.
pub fn action_available(action: u32) -> nix::Result<()> {
    const SECCOMP_GET_ACTION_AVAIL: libc::c_uint = 2;
    // SAFETY: the kernel reads one u32 from `action`, which lives on our
    // stack for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32,
        )
    };
    Errno::result(rc).map(drop)
}

/// `SECCOMP_IOCTL_NOTIF_RECV`: the next notification on `listener`.
pub fn notif_recv(listener: BorrowedFd<'_>) -> nix::Result<libc::seccomp_notif> {
    // SAFETY: seccomp_notif is plain old data; all-zero is the value the
    // kernel requires before NOTIF_RECV.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: NOTIF_RECV writes one seccomp_notif into `req`, which we own.
    let r = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut req as *mut libc::seccomp_notif,
        )
    };
    Errno::result(r).map(|_| req)
}

/// `SECCOMP_IOCTL_NOTIF_SEND`: answer a notification with `resp`.
pub fn notif_send(listener: BorrowedFd<'_>, resp: &libc::seccomp_notif_resp) -> nix::Result<()> {
    // SAFETY: NOTIF_SEND reads one seccomp_notif_resp that lives for the call.
    let r = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            resp as *const libc::seccomp_notif_resp,
        )
    };
    Errno::result(r).map(drop)
}

/// `SECCOMP_IOCTL_NOTIF_ID_VALID`: whether notification `id` is still
/// pending (its caller alive and waiting).
pub fn notif_id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    // SAFETY: NOTIF_ID_VALID reads one u64 that lives for the call.
    let r = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &id as *const u64,
        )
    };
    r == 0
}

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`: the
/// Landlock ABI version of the running kernel, or the error.
pub fn landlock_abi_version() -> nix::Result<i64> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a NULL attribute pointer, size 0 and the VERSION flag the
    // kernel reads and writes no memory; it only returns the ABI version or -1.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    Errno::result(version)
}
