//! seccomp user notifications, answered by init. The filter's EPERM answers
//! become notifications (always: counting them costs nothing until a call is
//! refused): init names the call and the process on stderr with
//! --log-denials, answers EPERM itself, and counts it. With --log-denials the
//! calls in [`super::seccomp::Watch`] are passed on too, observed (see
//! [`super::observe`]) and let through unchanged (`CONTINUE`).

use super::seccomp::{native_arch, WATCH_ERRNO};
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// Turn every `return ERRNO(errno)` and `return ERRNO(WATCH_ERRNO)` of
/// `prog` into `return USER_NOTIF`. Pure: the program's shape and every other
/// action stay as they are.
pub fn build_notifying(prog: &seccompiler::BpfProgram, errno: i32) -> seccompiler::BpfProgram {
    let ret = |e: i32| libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA);
    let (deny, watch) = (ret(errno), ret(WATCH_ERRNO));
    prog.iter()
        .map(|ins| {
            let mut i = ins.clone();
            if i.code == BPF_RET_K && (i.k == deny || i.k == watch) {
                i.k = libc::SECCOMP_RET_USER_NOTIF;
            }
            i
        })
        .collect()
}

/// Install `prog` and return the listener for its notifications.
/// PR_SET_NO_NEW_PRIVS must be set.
pub fn install_with_listener(prog: &seccompiler::BpfProgram) -> io::Result<OwnedFd> {
    Ok(crate::sys::confine::install_filter_with_listener(prog)?)
}

/// One notification: a call the filter passed to the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    pub pid: u32,
    pub nr: i32,
    pub args: [u64; 6],
}

/// Receive one notification; `None` when it vanished (the caller died).
pub fn receive(listener: &OwnedFd) -> io::Result<Option<Request>> {
    let req = match crate::sys::confine::notif_recv(listener.as_fd()) {
        Ok(req) => req,
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::EINTR) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(Some(Request {
        id: req.id,
        pid: req.pid,
        nr: req.data.nr,
        args: req.data.args,
    }))
}

/// Answer a notification: fail the call with `errno`, or (`None`) let the
/// kernel carry it out as if nothing had been asked.
pub fn reply(listener: &OwnedFd, id: u64, errno: Option<i32>) -> io::Result<()> {
    let resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: errno.map_or(0, |e| -e),
        flags: if errno.is_none() {
            libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32
        } else {
            0
        },
    };
    match crate::sys::confine::notif_send(listener.as_fd(), &resp) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// The notification `id` is still pending: what was read of its process
/// since it was received belongs to the process that made the call.
pub fn still_valid(listener: &OwnedFd, id: u64) -> bool {
    crate::sys::confine::notif_id_valid(listener.as_fd(), id)
}

/// The command name of process `pid`, or "?".
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The name of a system call number of the running architecture.
pub fn syscall_name(nr: i32) -> String {
    native_arch()
        .and_then(|a| super::seccomp::syscall_name_of(a, nr as u32))
        .map(str::to_string)
        .unwrap_or_else(|| format!("syscall {nr}"))
}

/// What was refused, for the report at exit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// A system call seccomp refused (its name).
    Seccomp(String),
    /// A write, creation, removal or rename by path outside every
    /// `landlock.write` rule.
    LandlockWrite(String),
    /// A connect to a non-local address without a network (the address).
    NoNetwork(String),
    /// A TCP connect to a port outside `network.allowed_connect_ports`.
    Port(String),
    /// A TCP bind to a port outside `network.allowed_bind_ports`.
    BindPort(String),
}

/// Counts refusals for the report at exit.
#[derive(Debug, Default)]
pub struct Tally(BTreeMap<Refusal, u32>, u32);

/// Distinct refusals kept (more are counted, not named).
const KEPT: usize = 10_000;
/// Paths and addresses named in the report (the rest are summed up).
const NAMED: usize = 100;

fn times(n: u32) -> String {
    format!("{n} time{}", if n == 1 { "" } else { "s" })
}

impl Tally {
    pub fn add(&mut self, r: Refusal) {
        let named = !matches!(r, Refusal::Seccomp(_));
        if named && self.0.len() >= KEPT && !self.0.contains_key(&r) {
            self.1 = self.1.saturating_add(1);
            return;
        }
        let n = self.0.entry(r).or_default();
        *n = n.saturating_add(1);
    }

    pub fn total(&self) -> u32 {
        self.0.values().fold(self.1, |a, n| a.saturating_add(*n))
    }

    /// The report: one line per refused path or address, one for seccomp
    /// ("3 calls denied by seccomp: bpf ×1, keyctl ×2"), each saying what
    /// would allow it.
    pub fn report(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut calls = Vec::new();
        for (r, &n) in &self.0 {
            match r {
                Refusal::Seccomp(name) => calls.push((name.as_str(), n)),
                Refusal::LandlockWrite(path) => lines.push((format!(
                    "denied: write to {path} ({}) by Landlock; to allow: add it or a directory above it to landlock.write",
                    times(n)
                ), n)),
                Refusal::NoNetwork(addr) => lines.push((format!(
                    "denied: connect to {addr} ({}): the sandbox has no network; to allow: --net user or --net host (network.mode)",
                    times(n)
                ), n)),
                Refusal::BindPort(addr) => lines.push((format!(
                    "denied: bind to {addr} ({}) by Landlock; to allow: add its port to network.allowed_bind_ports",
                    times(n)
                ), n)),
                Refusal::Port(addr) => lines.push((format!(
                    "denied: connect to {addr} ({}) by Landlock; to allow: add its port to network.allowed_connect_ports",
                    times(n)
                ), n)),
            }
        }
        // The rest summed up (the report goes to the launcher in one message).
        let more = lines
            .iter()
            .skip(NAMED)
            .fold(self.1, |a, (_, n)| a.saturating_add(*n));
        let mut lines: Vec<String> = lines.into_iter().take(NAMED).map(|(l, _)| l).collect();
        if more > 0 {
            lines.push(format!(
                "denied: {more} more (writes, connects or binds not named)"
            ));
        }
        if !calls.is_empty() {
            let total: u32 = calls.iter().map(|(_, n)| n).sum();
            let parts: Vec<String> = calls.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
            let names: Vec<String> = calls.iter().map(|(k, _)| format!("{k:?}")).collect();
            lines.push(format!(
                "{total} call{} denied by seccomp: {}; to allow: seccomp.allow = [{}]",
                if total == 1 { "" } else { "s" },
                parts.join(", "),
                names.join(", ")
            ));
        }
        lines
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
    fn names_and_report() {
        assert_eq!(syscall_name(libc::SYS_getpid as i32), "getpid");
        let mut t = Tally::default();
        assert!(t.report().is_empty());
        for s in ["keyctl", "bpf", "keyctl"] {
            t.add(Refusal::Seccomp(s.into()));
        }
        t.add(Refusal::LandlockWrite("/etc/x".into()));
        t.add(Refusal::NoNetwork("192.0.2.1:80".into()));
        assert_eq!(t.total(), 5);
        assert_eq!(
            t.report(),
            [
                "denied: write to /etc/x (1 time) by Landlock; to allow: add it or a directory above it to landlock.write",
                "denied: connect to 192.0.2.1:80 (1 time): the sandbox has no network; to allow: --net user or --net host (network.mode)",
                "3 calls denied by seccomp: bpf ×1, keyctl ×2; to allow: seccomp.allow = [\"bpf\", \"keyctl\"]",
            ]
        );
    }

    #[test]
    fn the_report_names_a_bounded_number_and_counts_the_rest() {
        let mut t = Tally::default();
        for i in 0..KEPT + 5 {
            t.add(Refusal::LandlockWrite(format!("/x/{i:05}")));
        }
        t.add(Refusal::LandlockWrite("/x/00000".into()));
        t.add(Refusal::Seccomp("bpf".into()));
        assert_eq!(t.total() as usize, KEPT + 7);
        let r = t.report();
        assert_eq!(r.len(), NAMED + 2);
        assert!(
            r[0].starts_with("denied: write to /x/00000 (2 times)"),
            "{}",
            r[0]
        );
        assert_eq!(
            r[NAMED],
            format!(
                "denied: {} more (writes, connects or binds not named)",
                KEPT + 5 - NAMED
            )
        );
        assert!(r[NAMED + 1].starts_with("1 call denied by seccomp: bpf ×1"));
    }

    #[test]
    fn watched_calls_become_notifications() {
        let arch = native_arch().expect("arch");
        let spec = SeccompSpec {
            watch: crate::confine::seccomp::Watch {
                paths: true,
                connect: true,
            },
            ..SeccompSpec::default()
        };
        let prog = build_filter(&spec, arch).expect("filter");
        let watch = libc::SECCOMP_RET_ERRNO | WATCH_ERRNO as u32;
        assert!(prog.iter().any(|i| i.code == BPF_RET_K && i.k == watch));
        let notif = build_notifying(&prog, libc::EPERM);
        assert!(!notif.iter().any(|i| i.code == BPF_RET_K && i.k == watch));
    }
}
