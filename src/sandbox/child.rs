//! A child process that must not outlive an error of its parent.

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

/// A child that is killed (SIGKILL) and reaped when the guard is dropped:
/// on every return and error path of its parent, until it is handed over
/// with [`ChildGuard::release`] to what reaps it from then on.
#[derive(Debug)]
#[must_use = "dropping the guard kills the child"]
pub struct ChildGuard {
    pid: Pid,
    armed: bool,
}

impl ChildGuard {
    /// Guard `pid`, a child of this process.
    pub fn new(pid: Pid) -> Self {
        ChildGuard { pid, armed: true }
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Hand the child over: the caller reaps it now.
    pub fn release(mut self) -> Pid {
        self.armed = false;
        self.pid
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{WaitPidFlag, WaitStatus};

    // The guard under test reaps it, not std.
    #[allow(clippy::zombie_processes)]
    fn sleeper() -> Pid {
        let child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("spawn sleep");
        // Dropping a std Child neither kills nor reaps it.
        Pid::from_raw(child.id() as i32)
    }

    #[test]
    fn dropping_the_guard_kills_and_reaps_the_child() {
        let pid = sleeper();
        drop(ChildGuard::new(pid));
        // Reaped: no longer a child of ours (a zombie would still be one).
        assert_eq!(
            waitpid(pid, Some(WaitPidFlag::WNOHANG)),
            Err(nix::errno::Errno::ECHILD)
        );
    }

    #[test]
    fn a_released_child_is_left_alone() {
        let pid = sleeper();
        let guard = ChildGuard::new(pid);
        assert_eq!(guard.pid(), pid);
        assert_eq!(guard.release(), pid);
        assert_eq!(
            waitpid(pid, Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        );
        kill(pid, Signal::SIGKILL).expect("kill");
        assert!(matches!(
            waitpid(pid, None),
            Ok(WaitStatus::Signaled(_, Signal::SIGKILL, _))
        ));
    }
}
