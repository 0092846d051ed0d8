//! Runs a closure in a forked child and brings its results back over a pipe.
//! Each test that installs restrictions does so in its own child only.

#![allow(dead_code)]

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe, ForkResult};

/// How the child ended and the values it reported.
#[derive(Debug)]
pub struct ChildOutcome {
    pub status: WaitStatus,
    pub values: Vec<i64>,
}

impl ChildOutcome {
    pub fn exited_ok(&self) -> bool {
        matches!(self.status, WaitStatus::Exited(_, 0))
    }
    pub fn killed_by(&self, sig: nix::sys::signal::Signal) -> bool {
        matches!(self.status, WaitStatus::Signaled(_, s, _) if s == sig)
    }
}

/// Forks; the child runs `f` with a reporter, then `_exit(0)`.
/// The values reported before a crash are still returned.
pub fn run_in_child<F: FnOnce(&mut Reporter)>(f: F) -> ChildOutcome {
    let (read_end, write_end) = pipe().expect("pipe");
    // SAFETY: the child only runs the test closure and exits with _exit; glibc
    // makes malloc usable after fork, and tests never hold other locks across it.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(read_end);
            let mut reporter = Reporter { fd: write_end };
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut reporter)));
            let code = if result.is_ok() { 0 } else { 101 };
            // SAFETY: _exit is async-signal-safe and skips the parent's atexit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let mut bytes = Vec::new();
            std::fs::File::from(read_end)
                .read_to_end(&mut bytes)
                .expect("read pipe");
            let status = waitpid(child, None).expect("waitpid");
            let values = bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            ChildOutcome { status, values }
        }
    }
}

pub struct Reporter {
    fd: OwnedFd,
}

impl Reporter {
    /// Sends one value to the parent (a raw write: safe after seccomp/landlock).
    pub fn send(&mut self, v: i64) {
        let bytes = v.to_le_bytes();
        // SAFETY: writes 8 bytes from a live stack buffer to an fd we own.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        assert_eq!(n, 8);
    }
}

/// errno of the last failed call, or 0 when `ret` is not -1.
pub fn errno_if_failed(ret: i64) -> i64 {
    if ret == -1 {
        i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1))
    } else {
        0
    }
}

/// A fresh, empty directory under the system temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("sbox-test-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("mkdir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
