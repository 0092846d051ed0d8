//! launcher: the process the user started. Creates the sandbox, writes the
//! id maps, relays the terminal and signals, returns the exit status.

use super::channel::{Channel, Msg};
use super::init::{self, InitArgs};
use super::pty;
use crate::error::{status_code, Error, NixContext, Result};
use crate::idmap::IdPlan;
use crate::net::NetHelper;
use crate::policy::{NetMode, Policy};
use crate::rootfs::{
    apply::probe_host,
    plan::{build_plan, Step},
};
use crate::state::{self, StateDir};
use crate::sys::{self, Forked};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// Signals the launcher forwards to the sandbox.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

fn log(policy: &Policy, msg: impl FnOnce() -> String) {
    if policy.verbose {
        eprintln!("sbox: [launcher] {}", msg());
    }
}

/// Namespaces of a sandbox with this policy.
pub fn clone_flags(policy: &Policy) -> CloneFlags {
    let mut f = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWCGROUP;
    if policy.net != NetMode::Host {
        f |= CloneFlags::CLONE_NEWNET;
    }
    f
}

/// Run a sandbox; returns the exit status for sbox.
pub fn run(policy: &Policy) -> Result<u8> {
    let ids = IdPlan::for_caller(
        policy.caller.uid,
        policy.caller.gid,
        &policy.caller.name,
        policy.map_user,
    );
    log(policy, || ids.describe());
    if let Some(out) = &policy.output {
        std::fs::create_dir_all(out).map_err(|e| {
            Error::io(
                format!("creating the output directory {}", out.display()),
                e,
            )
        })?;
    }
    let base = state::runtime_base(policy.caller.uid)?;
    state::clean_stale(&base);
    let host = probe_host(policy);
    let mut state_dir = StateDir::create(&base)?;
    log(policy, || format!("state in {}", state_dir.dir.display()));
    let tty_gid = (ids.helpers
        && ids
            .gid
            .iter()
            .any(|e| e.inside <= 5 && 5 < e.inside + e.count))
    .then_some(5);
    let mut steps = build_plan(policy, &host, &state_dir.paths, tty_gid);
    let user_net = match policy.net {
        NetMode::User => Some(prepare_user_net(policy, &state_dir.dir, &mut steps)?),
        _ => None,
    };
    describe_layers(policy, &ids);

    let (ours, theirs) = Channel::pair()?;
    let mut signals = SigSet::empty();
    for s in FORWARDED {
        signals.add(*s);
    }
    signals.add(Signal::SIGCHLD);
    let old_mask = signals
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .ctx(|| "blocking signals".into())?;
    let restore = MaskGuard(old_mask);

    let flags = clone_flags(policy);
    let child = match sys::clone_process(flags) {
        Ok(Forked::Child) => {
            drop(ours);
            // init owns nothing of the launcher's state.
            state_dir.forget();
            let code = init::main(InitArgs {
                policy,
                steps: &steps,
                state: &state_dir.paths,
                channel: theirs,
                signals,
                payload_mask: old_mask,
                can_setgroups: ids.helpers,
            });
            sys::exit_now(code)
        }
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => return Err(clone_error(e)),
    };
    drop(theirs);
    log(policy, || format!("init is pid {child} on the host"));

    if let Err(e) = ids.apply(child) {
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        return Err(e);
    }
    // The user-mode stack configures the namespace before init goes on.
    let _net_helper = match &user_net {
        Some(u) => match NetHelper::start(&u.program, &u.args_for(policy, child), &u.pid_file) {
            Ok(h) => Some(h),
            Err(e) => {
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Err(e);
            }
        },
        None => None,
    };
    ours.send(&Msg::MapsWritten, None)?;

    let status = match ours.recv()? {
        Some((Msg::Ready { .. }, master)) => supervise(policy, child, &signals, master)?,
        // init failed before starting the command; it said why.
        _ => waitpid(child, None).ctx(|| "waitpid".into())?,
    };
    drop(restore);
    if ids.helpers {
        let _ = state::remove_tree_mapped(&state_dir.dir, &ids);
    }
    drop(state_dir);
    Ok(status_code(status))
}

/// What the launcher prepared for a --net user sandbox.
struct UserNet {
    program: std::path::PathBuf,
    pid_file: std::path::PathBuf,
    dns_forward: bool,
}

impl UserNet {
    fn args_for(&self, policy: &Policy, pid: Pid) -> Vec<String> {
        crate::net::build_pasta_args(
            pid.as_raw(),
            &policy.publish,
            policy.allow_host_loopback,
            self.dns_forward,
            &self.pid_file,
        )
    }
}

/// Find pasta, check the published ports, write the sandbox's resolv.conf
/// and hosts, and add their binds to the plan.
fn prepare_user_net(
    policy: &Policy,
    dir: &std::path::Path,
    steps: &mut Vec<Step>,
) -> Result<UserNet> {
    let program = crate::net::find_program("pasta").ok_or_else(|| {
        Error::Host(
            "--net user needs pasta: install the package passt (Debian/Ubuntu: apt install passt)"
                .into(),
        )
    })?;
    for p in &policy.publish {
        crate::net::check_free(p)?;
    }
    let files = crate::net::build_user_net_files(
        &std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        &crate::net::host_nameservers(),
        crate::net::default_gateway(),
        &policy.hostname,
        policy.allow_host_loopback,
    );
    let write = |name: &str, text: &str| -> Result<std::path::PathBuf> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
        Ok(p)
    };
    let hosts = write("hosts", &files.hosts)?;
    steps.push(Step::Bind {
        src: hosts,
        dest: "/etc/hosts".into(),
        readonly: true,
        create: true,
    });
    if let Some(text) = &files.resolv_conf {
        let resolv = write("resolv.conf", text)?;
        steps.push(Step::Bind {
            src: resolv,
            dest: "/etc/resolv.conf".into(),
            readonly: true,
            create: true,
        });
    }
    Ok(UserNet {
        program,
        pid_file: dir.join("pasta.pid"),
        dns_forward: files.dns_forward,
    })
}

/// Restores the signal mask when dropped.
struct MaskGuard(SigSet);

impl Drop for MaskGuard {
    fn drop(&mut self) {
        let _ = self.0.thread_set_mask();
    }
}

fn clone_error(e: nix::errno::Errno) -> Error {
    let hint = match e {
        nix::errno::Errno::EPERM | nix::errno::Errno::EACCES => {
            " — unprivileged user namespaces are disabled or restricted on this host (see `sbox doctor`)"
        }
        nix::errno::Errno::ENOSPC => {
            " — the user namespace limit is reached (sysctl user.max_user_namespaces)"
        }
        nix::errno::Errno::EINVAL => " — the kernel lacks a namespace type sbox needs",
        _ => "",
    };
    Error::Host(format!(
        "cannot create the sandbox's namespaces: {}{hint}",
        e.desc()
    ))
}

fn describe_layers(policy: &Policy, ids: &IdPlan) {
    if !policy.verbose {
        return;
    }
    let backend = match policy.backend {
        crate::policy::Backend::Kernel => "kernel overlayfs (copy-on-write, ephemeral)",
        crate::policy::Backend::None => "host trees read-only",
    };
    let net =
        match (policy.net, policy.allow_host_loopback) {
            (NetMode::None, _) => "own namespace, loopback only".to_string(),
            (NetMode::Host, _) => "host network".to_string(),
            (NetMode::User, loopback) => {
                format!(
            "own namespace, user-mode stack (pasta); host loopback {}; {} published port(s)",
            if loopback { "reachable as host.sbox.internal" } else { "unreachable" },
            policy.publish.len()
        )
            }
        };
    eprintln!("sbox: layers in force:");
    eprintln!(
        "sbox:   identity: user namespace, {}",
        if ids.helpers {
            "subordinate ids mapped"
        } else {
            "single-id map"
        }
    );
    eprintln!(
        "sbox:   view: mount namespace, root = {backend}, {} hidden paths",
        policy.hidden.len()
    );
    eprintln!("sbox:   processes: pid, ipc, uts, cgroup namespaces; new session");
    eprintln!("sbox:   network: {net}");
    eprintln!("sbox:   capabilities: docker's default set (no CAP_SYS_ADMIN: mounts are fixed)");
    for line in policy.confinement.describe() {
        eprintln!("sbox:   {line}");
    }
}

/// Relay signals (and the terminal, when there is one) until init exits.
fn supervise(
    policy: &Policy,
    child: Pid,
    signals: &SigSet,
    master: Option<OwnedFd>,
) -> Result<WaitStatus> {
    let sfd = SignalFd::with_flags(signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .ctx(|| "signalfd".into())?;
    // SAFETY: fd 0 and 1 stay open for the life of the process.
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    let stdout = unsafe { BorrowedFd::borrow_raw(1) };
    let _raw = match (&master, policy.tty) {
        (Some(m), true) => {
            pty::copy_winsize(0, m.as_raw_fd());
            pty::RawMode::enter(stdin)
        }
        _ => None,
    };
    let mut stdin_open = master.is_some();
    let mut master_open = master.is_some();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let mut idx_master = None;
        let mut idx_stdin = None;
        if let (Some(m), true) = (&master, master_open) {
            idx_master = Some(fds.len());
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
        }
        if stdin_open {
            idx_stdin = Some(fds.len());
            fds.push(PollFd::new(stdin, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("poll", e)),
        }
        let ready = |i: Option<usize>| {
            i.and_then(|i| fds[i].revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (m_ready, i_ready, s_ready) = (ready(idx_master), ready(idx_stdin), ready(Some(0)));
        drop(fds);
        if m_ready {
            if let Some(m) = &master {
                match nix::unistd::read(m.as_raw_fd(), &mut buf) {
                    Ok(0) | Err(nix::errno::Errno::EIO) => master_open = false,
                    Ok(n) => {
                        if pty::write_all(stdout, &buf[..n]).is_err() {
                            master_open = false;
                        }
                    }
                    Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => master_open = false,
                }
            }
        }
        if i_ready {
            if let Some(m) = &master {
                match nix::unistd::read(0, &mut buf) {
                    Ok(0) => {
                        // End of input: tell the terminal (^D), stop reading.
                        let _ = pty::write_all(m, b"\x04");
                        stdin_open = false;
                    }
                    Ok(n) => {
                        let _ = pty::write_all(m, &buf[..n]);
                    }
                    Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => stdin_open = false,
                }
            }
        }
        if s_ready {
            while let Ok(Some(info)) = sfd.read_signal() {
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                match (sig, &master) {
                    (Signal::SIGCHLD, _) => {}
                    (Signal::SIGWINCH, Some(m)) => pty::copy_winsize(0, m.as_raw_fd()),
                    (s, _) => {
                        log(policy, || format!("forwarding {s}"));
                        let _ = kill(child, s);
                    }
                }
            }
            match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(st) => {
                    if let Some(m) = &master {
                        drain(m, stdout, &mut buf);
                    }
                    return Ok(st);
                }
                Err(e) => return Err(Error::sys("waitpid", e)),
            }
        }
    }
}

/// Copy what is left in the pty master to stdout.
fn drain(master: &OwnedFd, out: BorrowedFd<'_>, buf: &mut [u8]) {
    let _ = nix::fcntl::fcntl(
        master.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    while let Ok(n) = nix::unistd::read(master.as_raw_fd(), buf) {
        if n == 0 || pty::write_all(out, &buf[..n]).is_err() {
            break;
        }
    }
}
