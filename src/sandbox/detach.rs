//! `run -d`: the sandbox in the background. sbox forks; the child starts a
//! new session and runs the launcher with its output going to the
//! sandbox's log, and tells the parent on a pipe once the command runs
//! ("ok") or why it could not start; the parent reports it and returns.

use crate::error::{Error, Result};
use crate::policy::Policy;

/// Start the sandbox in the background: print its name (with `announce`)
/// once the command runs, or the reason it could not start.
pub fn run(
    policy: &Policy,
    running: crate::names::Running,
    name: &str,
    announce: bool,
) -> Result<u8> {
    use crate::sys::{clone_process, exit_now, Forked};
    use std::io::Read;
    let (ready_r, ready_w) = nix::unistd::pipe().map_err(|e| Error::sys("pipe", e))?;
    let log_path = running.paths.log();
    match clone_process(nix::sched::CloneFlags::empty()).map_err(|e| Error::sys("fork", e))? {
        Forked::Child => {
            drop(ready_r);
            let _ = nix::unistd::setsid();
            let code = match detached_child(policy, running, ready_w, log_path) {
                Ok(c) => c as i32,
                Err((e, w)) => {
                    let msg = format!("{}\n", e.to_string().replace('\n', " "));
                    let _ = crate::sandbox::pty::write_all(&w, msg.as_bytes());
                    125
                }
            };
            exit_now(code)
        }
        Forked::Parent(child) => {
            drop(ready_w);
            // The child holds the lock now; ours must not remove its files.
            std::mem::forget(running);
            // One line: "ok", or why it failed. The sandbox keeps the
            // pipe open, so read up to the newline, not to the end.
            let mut answer = Vec::new();
            let mut f = std::fs::File::from(ready_r);
            let mut byte = [0u8; 1];
            while let Ok(1) = f.read(&mut byte) {
                if byte[0] == b'\n' {
                    break;
                }
                answer.push(byte[0]);
            }
            let answer = String::from_utf8_lossy(&answer).into_owned();
            if answer.starts_with("ok") {
                if announce {
                    println!("{name}");
                }
                Ok(0)
            } else if answer.is_empty() {
                // The command could not start: its status and message.
                let status = nix::sys::wait::waitpid(child, None)
                    .map(crate::error::status_code)
                    .unwrap_or(crate::error::EXIT_SBOX_FAILED);
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if let Some(last) = log.lines().rev().find(|l| l.starts_with("sbox: error:")) {
                    eprintln!("{last}");
                } else {
                    eprintln!(
                        "sbox: error: sandbox {name:?} did not start; see `sbox logs {name}`"
                    );
                }
                Ok(status)
            } else {
                Err(Error::Host(answer.trim().to_string()))
            }
        }
    }
}

/// The background side of `run -d`: stdin from /dev/null, stdout and
/// stderr into the log (through the launcher, which caps it).
fn detached_child(
    policy: &Policy,
    running: crate::names::Running,
    ready: std::os::fd::OwnedFd,
    log_path: std::path::PathBuf,
) -> std::result::Result<u8, (Error, std::os::fd::OwnedFd)> {
    use std::os::fd::AsRawFd;
    let setup = || -> Result<std::os::fd::OwnedFd> {
        let null = std::fs::File::open("/dev/null").map_err(|e| Error::io("/dev/null", e))?;
        nix::unistd::dup2(null.as_raw_fd(), 0).map_err(|e| Error::sys("dup2", e))?;
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
        nix::unistd::dup2(w.as_raw_fd(), 1).map_err(|e| Error::sys("dup2", e))?;
        nix::unistd::dup2(w.as_raw_fd(), 2).map_err(|e| Error::sys("dup2", e))?;
        Ok(r)
    };
    let log_r = match setup() {
        Ok(r) => r,
        Err(e) => return Err((e, ready)),
    };
    let ready_copy = match ready.try_clone() {
        Ok(c) => c,
        Err(e) => return Err((Error::io("dup", e), ready)),
    };
    crate::sandbox::launcher::run(
        policy,
        crate::sandbox::launcher::Extras {
            named: Some(running),
            ready: Some(ready_copy),
            log: Some((log_r, log_path)),
        },
    )
    .map_err(|e| (e, ready))
}
