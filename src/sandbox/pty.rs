//! The caller's side of a sandbox terminal: raw mode and the byte relay
//! between the caller's terminal and the pty master of the sandbox.

use nix::sys::termios::{self, SetArg, Termios};
use std::os::fd::{AsFd, BorrowedFd, RawFd};

/// Puts the caller's terminal in raw mode; restores it when dropped.
pub struct RawMode {
    fd: RawFd,
    saved: Termios,
}

impl RawMode {
    /// Raw mode on `fd` if it is a terminal; `None` otherwise, or when a
    /// signal that ends the sandbox came while sbox waited in the
    /// background of its terminal.
    pub fn enter(fd: BorrowedFd<'_>) -> Option<Self> {
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        // In the background of its terminal (`sbox shell &`, `timeout sbox
        // shell`), stop until continued, as job control expects; then give
        // up on the terminal if SIGTERM, SIGHUP or SIGINT came meanwhile:
        // sbox blocks them (its loop reads them), so stopping again in
        // tcsetattr would leave it stopped with them pending for good.
        let background = nix::unistd::tcgetpgrp(fd).is_ok_and(|p| p != nix::unistd::getpgrp());
        if background && !ending_signal_pending() {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGTTOU);
        }
        if ending_signal_pending() {
            return None;
        }
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode {
            fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
            saved,
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // The descriptor is the caller's stdin, open for the life of the
        // process.
        let fd = crate::sys::inherited_fd(self.fd);
        let _ = without_sigttou(|| termios::tcsetattr(fd, SetArg::TCSADRAIN, &self.saved));
    }
}

/// SIGTERM, SIGHUP or SIGINT is pending (blocked, for the relay loop).
fn ending_signal_pending() -> bool {
    crate::sys::any_signal_pending(&[libc::SIGTERM, libc::SIGHUP, libc::SIGINT])
}

/// Run `f` with SIGTTOU blocked: restoring the terminal at the end never
/// stops sbox for good, even from a background process group.
fn without_sigttou<T>(f: impl FnOnce() -> T) -> T {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTTOU);
    let old = set.thread_swap_mask(SigmaskHow::SIG_BLOCK).ok();
    let r = f();
    if let Some(old) = old {
        let _ = old.thread_set_mask();
    }
    r
}

/// Copy the window size of `from` (the caller's terminal) to `to`.
pub fn copy_winsize(from: RawFd, to: RawFd) {
    if let Some(ws) = crate::sys::get_winsize(from) {
        let _ = crate::sys::set_winsize(to, &ws);
    }
}

/// Write all of `buf` to `fd`, retrying on EINTR/EAGAIN.
pub fn write_all(fd: impl AsFd, mut buf: &[u8]) -> nix::Result<()> {
    while !buf.is_empty() {
        match nix::unistd::write(fd.as_fd(), buf) {
            Ok(0) => return Err(nix::errno::Errno::EIO),
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {
                let mut p = [nix::poll::PollFd::new(
                    fd.as_fd(),
                    nix::poll::PollFlags::POLLOUT,
                )];
                let _ = nix::poll::poll(&mut p, nix::poll::PollTimeout::from(100u16));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Copy what the pty master has to `out`; false once the terminal is gone.
pub fn pump_master(master: &impl AsFd, out: BorrowedFd<'_>, buf: &mut [u8]) -> bool {
    use std::os::fd::AsRawFd;
    match nix::unistd::read(master.as_fd().as_raw_fd(), buf) {
        Ok(0) | Err(nix::errno::Errno::EIO) => false,
        Ok(n) => write_all(out, &buf[..n]).is_ok(),
        Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => true,
        Err(_) => false,
    }
}

/// Copy what the caller typed (fd 0) to the pty master; false at the end
/// of input, after passing it on as ^D.
pub fn pump_stdin(master: &impl AsFd, buf: &mut [u8]) -> bool {
    match nix::unistd::read(0, buf) {
        Ok(0) => {
            let _ = write_all(master, b"\x04");
            false
        }
        Ok(n) => {
            let _ = write_all(master, &buf[..n]);
            true
        }
        Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => true,
        Err(_) => false,
    }
}

/// Copy what is left in the pty master to `out`.
pub fn drain(master: &impl AsFd, out: BorrowedFd<'_>, buf: &mut [u8]) {
    use std::os::fd::AsRawFd;
    let fd = master.as_fd().as_raw_fd();
    let _ = nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    while let Ok(n) = nix::unistd::read(fd, buf) {
        if n == 0 || write_all(out, &buf[..n]).is_err() {
            break;
        }
    }
}
