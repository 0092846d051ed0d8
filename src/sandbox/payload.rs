//! The payload: the user's command. Forked by init after the root is in
//! place; sets up its session and terminal, drops privileges, then execs.

use super::channel::Channel;
use super::messages::FromPayload;
use crate::error::{EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_SBOX_FAILED};
use crate::policy::Policy;
use nix::errno::Errno;
use std::ffi::CString;
use std::os::fd::AsRawFd;

/// Capabilities root keeps inside the sandbox (docker's default set):
/// enough for package managers (chown, setuid, mknod…), nothing that can
/// change the mounts (no CAP_SYS_ADMIN) or reach the kernel.
pub const KEPT_CAPS: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    18, // CAP_SYS_CHROOT
    27, // CAP_MKNOD
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

fn fail(msg: &str) -> ! {
    eprintln!("sbox: error: {msg}");
    crate::sys::exit_now(EXIT_SBOX_FAILED as i32)
}

/// Become the user's command. Never returns.
pub fn exec(
    policy: &Policy,
    pty_slave: Option<&str>,
    denials: Option<&Channel>,
    stdio: Option<&[std::os::fd::OwnedFd]>,
    exec_status: Option<std::os::fd::RawFd>,
) -> ! {
    if let Some(fds) = stdio {
        for (target, fd) in fds.iter().enumerate() {
            if nix::unistd::dup2(fd.as_raw_fd(), target as i32).is_err() {
                fail("attaching the standard streams");
            }
        }
    }
    if policy.new_session || pty_slave.is_some() {
        if let Err(e) = nix::unistd::setsid() {
            fail(&format!("setsid: {}", e.desc()));
        }
    }
    if let Some(path) = pty_slave {
        attach_terminal(path);
    }
    if let Err(e) = nix::unistd::chdir(&policy.chdir) {
        fail(&format!(
            "cannot enter {} inside the sandbox: {}",
            policy.chdir.display(),
            e.desc()
        ));
    }
    if let Err(e) = drop_privileges(policy) {
        fail(&e);
    }
    if let Err(e) = confine(policy, denials) {
        fail(&e);
    }
    let env: Vec<CString> = policy
        .env
        .iter()
        .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok())
        .collect();
    let argv: Vec<CString> = match policy
        .argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect()
    {
        Ok(v) => v,
        Err(_) => fail("the command contains a NUL byte"),
    };
    // Keep the exec-status pipe as fd 3, closed by a successful execve.
    let mut first_closed = 3;
    if let Some(fd) = exec_status {
        if nix::unistd::dup3(fd, 3, nix::fcntl::OFlag::O_CLOEXEC).is_ok() {
            first_closed = 4;
        }
    }
    if let Err(e) = crate::sys::close_fds_from(first_closed) {
        fail(&format!("closing file descriptors: {}", e.desc()));
    }
    let path = policy.env.get("PATH").map(String::as_str).unwrap_or("");
    // sbox ignores SIGPIPE and execve keeps an ignored signal ignored: give
    // the command the default, so that it ends quietly when its reader goes
    // away, as it would outside.
    crate::sys::default_sigpipe();
    let err = exec_search(&policy.argv[0], path, &argv, &env);
    // Reporting the failure must not die of a closed stderr.
    crate::sys::ignore_sigpipe();
    let (code, what) = match err {
        Errno::ENOENT | Errno::ENOTDIR => (EXIT_NOT_FOUND, "command not found"),
        Errno::EACCES | Errno::EPERM => (EXIT_NOT_EXECUTABLE, "permission denied"),
        Errno::ENOEXEC => (EXIT_NOT_EXECUTABLE, "exec format error"),
        Errno::EISDIR => (EXIT_NOT_EXECUTABLE, "is a directory"),
        _ => (EXIT_NOT_EXECUTABLE, err.desc()),
    };
    eprintln!("sbox: error: {}: {what}", policy.argv[0]);
    if first_closed == 4 {
        let _ = nix::unistd::write(
            // fd 3 is the exec-status pipe installed above.
            crate::sys::inherited_fd(3),
            &[code],
        );
    }
    crate::sys::exit_now(code as i32)
}

fn attach_terminal(path: &str) {
    let fd = match nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => fail(&format!("opening {path}: {}", e.desc())),
    };
    if let Err(e) = crate::sys::set_controlling_tty(fd) {
        fail(&format!(
            "making {path} the controlling terminal: {}",
            e.desc()
        ));
    }
    for target in 0..3 {
        if let Err(e) = nix::unistd::dup2(fd, target) {
            fail(&format!("dup2: {}", e.desc()));
        }
    }
    if fd > 2 {
        let _ = nix::unistd::close(fd);
    }
}

/// Drop every capability but `KEPT_CAPS` from the bounding set and the
/// process, then switch to the caller's ids with --map-user.
fn drop_privileges(policy: &Policy) -> Result<(), String> {
    let keep: u64 = KEPT_CAPS.iter().fold(0, |m, c| m | (1u64 << c));
    for cap in 0..=crate::sys::last_cap() {
        if keep & (1u64 << cap) == 0 {
            crate::sys::drop_bounding_cap(cap)
                .map_err(|e| format!("dropping capability {cap}: {}", e.desc()))?;
        }
    }
    crate::sys::set_capabilities(keep).map_err(|e| format!("capset: {}", e.desc()))?;
    let image_user = policy.image.as_ref().and_then(|i| i.user);
    if policy.map_user || image_user.is_some() {
        let (uid, gid) = image_user.unwrap_or((policy.caller.uid, policy.caller.gid));
        let gid = nix::unistd::Gid::from_raw(gid);
        let uid = nix::unistd::Uid::from_raw(uid);
        let _ = nix::unistd::setgroups(&[]);
        nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid: {}", e.desc()))?;
        nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid: {}", e.desc()))?;
    }
    Ok(())
}

/// rlimits, then Landlock, then no_new_privs, then seccomp — last, so
/// nothing sbox itself needs is filtered.
fn confine(policy: &Policy, denials: Option<&Channel>) -> Result<(), String> {
    let c = &policy.confinement;
    if let Some(n) = policy.limit_plan.affinity {
        set_affinity(n).map_err(|e| format!("CPU affinity: {}", e.desc()))?;
    }
    for (r, v) in &c.rlimits {
        nix::sys::resource::setrlimit(r.resource(), *v, *v)
            .map_err(|e| format!("setrlimit {r:?}: {}", e.desc()))?;
    }
    if let Some(l) = &c.landlock {
        let report = crate::confine::landlock::apply_landlock_plan(&l.plan, l.spec.best_effort)
            .map_err(|e| format!("Landlock: {e}"))?;
        if policy.verbose {
            eprintln!(
                "sbox: [payload] landlock ABI {}: {}",
                report.abi,
                if report.enforced.is_empty() {
                    "nothing enforced".to_string()
                } else {
                    report.enforced.join("; ")
                }
            );
        }
    }
    crate::sys::set_no_new_privs().map_err(|e| format!("no_new_privs: {}", e.desc()))?;
    match (&c.seccomp, denials) {
        (Some(s), Some(chan)) if s.notify => {
            let listener = crate::confine::notify::install_with_listener(&s.program)
                .map_err(|e| format!("seccomp: {e}"))?;
            chan.send(&FromPayload::SeccompListener, Some(listener.as_raw_fd()))
                .map_err(|e| format!("seccomp: {e}"))?;
        }
        (Some(s), _) => {
            crate::confine::seccomp::install_filter_with_log(&s.program, s.spec.log_denials)
                .map_err(|e| format!("seccomp: {e}"))?;
        }
        (None, _) => {}
    }
    Ok(())
}

/// Run on the first `n` of the CPUs this process may use.
fn set_affinity(n: usize) -> nix::Result<()> {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    let me = nix::unistd::Pid::from_raw(0);
    let current = sched_getaffinity(me)?;
    let mut set = CpuSet::new();
    let mut taken = 0;
    for cpu in 0..CpuSet::count() {
        if taken == n {
            break;
        }
        if current.is_set(cpu).unwrap_or(false) {
            set.set(cpu)?;
            taken += 1;
        }
    }
    sched_setaffinity(me, &set)
}

/// execve `cmd`, searching `path` when it has no slash, like execvp.
/// Returns the most telling error when nothing could be executed.
fn exec_search(cmd: &str, path: &str, argv: &[CString], env: &[CString]) -> Errno {
    let try_exec = |p: &str| -> Errno {
        match CString::new(p) {
            Ok(c) => match nix::unistd::execve(&c, argv, env) {
                Err(e) => e,
                Ok(never) => match never {},
            },
            Err(_) => Errno::ENOENT,
        }
    };
    if cmd.contains('/') {
        return dir_aware(cmd, try_exec(cmd));
    }
    let mut seen = Errno::ENOENT;
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let full = format!("{dir}/{cmd}");
        match try_exec(&full) {
            Errno::ENOENT | Errno::ENOTDIR => {}
            // A file that exists but cannot be executed; a directory of
            // PATH we cannot search does not count (like a shell).
            Errno::EACCES if std::fs::metadata(&full).is_ok() => seen = Errno::EACCES,
            Errno::EACCES => {}
            e => return dir_aware(&full, e),
        }
    }
    seen
}

fn dir_aware(p: &str, e: Errno) -> Errno {
    if e == Errno::EACCES && std::path::Path::new(p).is_dir() {
        Errno::EISDIR
    } else {
        e
    }
}
