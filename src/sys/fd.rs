//! Descriptors: owning the ones a call creates, receiving them, borrowing
//! the inherited ones, and looking at another process's.

use nix::errno::Errno;
use std::os::fd::RawFd;

/// Take ownership of a descriptor the kernel has just returned (from a call
/// that creates one, e.g. `open`, `accept4`, SCM_RIGHTS).
///
/// The caller passes a number that nothing else owns or will close: the
/// result closes it on drop. Kept to `sys`: public wrappers return
/// `OwnedFd` straight from the call that made the descriptor.
pub(super) fn owned(fd: RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: per this function's contract, `fd` is a fresh descriptor that
    // nothing else owns.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// `open(2)` returning an owned descriptor.
pub fn open<P: ?Sized + nix::NixPath>(
    path: &P,
    flags: nix::fcntl::OFlag,
    mode: nix::sys::stat::Mode,
) -> nix::Result<std::os::fd::OwnedFd> {
    nix::fcntl::open(path, flags, mode).map(owned)
}

/// `accept4(2)` with SOCK_CLOEXEC on a listening socket.
pub fn accept(listener: std::os::fd::BorrowedFd<'_>) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    nix::sys::socket::accept4(
        listener.as_raw_fd(),
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map(owned)
}

/// `recvmsg(2)` with MSG_CMSG_CLOEXEC of one message into `buf`, with the
/// descriptors (up to four) it carried, owned. EINTR is the caller's to
/// retry.
pub fn recv_with_fds(
    sock: std::os::fd::BorrowedFd<'_>,
    buf: &mut [u8],
) -> nix::Result<(usize, Vec<std::os::fd::OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let r = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    if let Ok(cmsgs) = r.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(received) = c {
                // SCM_RIGHTS installed these in this process for this
                // message only: nothing else owns them.
                fds.extend(received.into_iter().map(owned));
            }
        }
    }
    Ok((r.bytes, fds))
}

/// A descriptor this process holds for its whole life: a standard stream
/// (0, 1, 2) or one set up before exec (the exec-status pipe at 3).
///
/// sbox never closes these; when the process started with one closed,
/// calls on it fail with EBADF.
pub fn inherited_fd(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: see above: the number names a descriptor that stays open (or
    // is never opened) for the life of the process.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

/// `pidfd_open(2)`: a descriptor for process `pid`.
pub fn pidfd_open(pid: u32) -> nix::Result<std::os::fd::OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new
    // descriptor or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    Errno::result(r).map(|fd| owned(fd as RawFd))
}

/// `pidfd_getfd(2)`: a copy of descriptor `fd` of the process `pidfd`
/// refers to.
pub fn pidfd_getfd(
    pidfd: std::os::fd::BorrowedFd<'_>,
    fd: RawFd,
) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_getfd takes a pidfd, an fd number and flags by value and
    // returns a new descriptor or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    Errno::result(r).map(|fd| owned(fd as RawFd))
}

/// `getsockopt(SO_PROTOCOL)`: the protocol of socket `fd`.
pub fn socket_protocol(fd: std::os::fd::BorrowedFd<'_>) -> nix::Result<libc::c_int> {
    use std::os::fd::AsRawFd;
    let mut proto: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `proto`, which we
    // own, and updates `len`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PROTOCOL,
            &mut proto as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    Errno::result(r).map(|_| proto)
}
