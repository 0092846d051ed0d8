//! `--log-denials` for seccomp: the filter's EPERM answers become user
//! notifications; init receives them, names the call and the process on
//! stderr, answers EPERM itself, and prints a summary at exit.

use super::seccomp::native_arch;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// Turn every `return ERRNO(errno)` of `prog` into `return USER_NOTIF`.
/// Pure: the program's shape and every other action stay as they are.
pub fn build_notifying(prog: &seccompiler::BpfProgram, errno: i32) -> seccompiler::BpfProgram {
    let deny = libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA);
    prog.iter()
        .map(|ins| {
            let mut i = ins.clone();
            if i.code == BPF_RET_K && i.k == deny {
                i.k = libc::SECCOMP_RET_USER_NOTIF;
            }
            i
        })
        .collect()
}

/// Install `prog` and return the listener for its notifications.
/// PR_SET_NO_NEW_PRIVS must be set.
pub fn install_with_listener(prog: &seccompiler::BpfProgram) -> io::Result<OwnedFd> {
    let len = u16::try_from(prog.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    let fprog = libc::sock_fprog {
        len,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points to `len` instructions borrowed from `prog` for
    // the duration of the call; the kernel copies them. With
    // SECCOMP_FILTER_FLAG_NEW_LISTENER the return value is a new fd.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &fprog as *const libc::sock_fprog,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// One denied call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub pid: u32,
    pub syscall: String,
    pub comm: String,
}

/// Receive one notification, answer it with `errno`, and describe it.
/// `None` when the notification vanished (the caller died meanwhile).
pub fn answer_one(listener: &OwnedFd, errno: i32) -> io::Result<Option<Denial>> {
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
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::EINTR) => Ok(None),
            _ => Err(e),
        };
    }
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", req.pid))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let resp = libc::seccomp_notif_resp {
        id: req.id,
        val: 0,
        error: -errno,
        flags: 0,
    };
    // SAFETY: NOTIF_SEND reads one seccomp_notif_resp that we own.
    let r = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &resp as *const libc::seccomp_notif_resp,
        )
    };
    if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT) {
        return Err(io::Error::last_os_error());
    }
    Ok(Some(Denial {
        pid: req.pid,
        syscall: syscall_name(req.data.nr),
        comm,
    }))
}

/// The name of a system call number of the running architecture.
pub fn syscall_name(nr: i32) -> String {
    native_arch()
        .and_then(|a| super::seccomp::syscall_name_of(a, nr as u32))
        .map(str::to_string)
        .unwrap_or_else(|| format!("syscall {nr}"))
}

/// Counts denials for the summary at exit.
#[derive(Debug, Default)]
pub struct Tally(BTreeMap<String, u32>);

impl Tally {
    pub fn add(&mut self, d: &Denial) {
        *self.0.entry(d.syscall.clone()).or_default() += 1;
    }

    /// "3 calls denied by seccomp: bpf ×1, keyctl ×2", or None.
    pub fn summary(&self) -> Option<String> {
        let total: u32 = self.0.values().sum();
        if total == 0 {
            return None;
        }
        let parts: Vec<String> = self.0.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        Some(format!(
            "{total} call{} denied by seccomp: {}",
            if total == 1 { "" } else { "s" },
            parts.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confine::seccomp::{build_filter, SeccompSpec};

    #[test]
    fn only_eperm_returns_become_notifications() {
        let arch = native_arch().expect("arch");
        let prog = build_filter(&SeccompSpec::default(), arch).expect("filter");
        let notif = build_notifying(&prog, libc::EPERM);
        assert_eq!(prog.len(), notif.len());
        let count = |p: &seccompiler::BpfProgram, k: u32| {
            p.iter().filter(|i| i.code == BPF_RET_K && i.k == k).count()
        };
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        assert!(count(&prog, eperm) > 0);
        assert_eq!(count(&notif, eperm), 0);
        assert_eq!(
            count(&notif, libc::SECCOMP_RET_USER_NOTIF),
            count(&prog, eperm)
        );
        assert_eq!(count(&notif, enosys), count(&prog, enosys));
    }

    #[test]
    fn names_and_summary() {
        assert_eq!(syscall_name(libc::SYS_getpid as i32), "getpid");
        let mut t = Tally::default();
        assert_eq!(t.summary(), None);
        for s in ["keyctl", "bpf", "keyctl"] {
            t.add(&Denial {
                pid: 2,
                syscall: s.into(),
                comm: "x".into(),
            });
        }
        assert_eq!(
            t.summary().as_deref(),
            Some("3 calls denied by seccomp: bpf ×1, keyctl ×2")
        );
    }
}
