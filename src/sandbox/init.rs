//! init: PID 1 of the sandbox's pid namespace, root in its user namespace.
//! Assembles the root, starts the payload, forwards signals, reaps orphans
//! and exits with the payload's status.

use super::channel::{Channel, Msg};
use crate::error::{status_code, Error, NixContext, Result, EXIT_SBOX_FAILED};
use crate::policy::{NetMode, Policy};
use crate::rootfs::plan::{StatePaths, Step};
use crate::sys::{self, Forked};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::AsRawFd;

/// What init needs, prepared by the launcher before the clone.
pub struct InitArgs<'a> {
    pub policy: &'a Policy,
    pub steps: &'a [Step],
    pub state: &'a StatePaths,
    pub channel: Channel,
    /// Signals blocked by the launcher (init waits for them).
    pub signals: SigSet,
    /// The signal mask to restore in the payload.
    pub payload_mask: SigSet,
    /// setgroups(2) is allowed (the gid map came from newgidmap).
    pub can_setgroups: bool,
}

/// Run init; returns the exit code for the process.
pub fn main(args: InitArgs) -> i32 {
    match run(&args) {
        Ok(code) => code as i32,
        Err(e) => {
            eprintln!("sbox: error: {e}");
            EXIT_SBOX_FAILED as i32
        }
    }
}

fn log(policy: &Policy, msg: impl FnOnce() -> String) {
    if policy.verbose {
        eprintln!("sbox: [init] {}", msg());
    }
}

fn run(args: &InitArgs) -> Result<u8> {
    let policy = args.policy;
    sys::set_parent_death_signal(libc::SIGKILL).ctx(|| "prctl(PDEATHSIG)".into())?;
    match args.channel.recv()? {
        Some((Msg::MapsWritten, _)) => {}
        // The launcher gave up (it printed why).
        _ => return Ok(EXIT_SBOX_FAILED),
    }
    if args.can_setgroups {
        nix::unistd::setgroups(&[]).ctx(|| "setgroups".into())?;
    }
    nix::unistd::sethostname(&policy.hostname).ctx(|| "sethostname".into())?;
    if policy.net == NetMode::None {
        sys::loopback_up().ctx(|| "bringing up lo".into())?;
        log(policy, || "network: own namespace, lo up".into());
    }
    crate::rootfs::apply::make_private()?;
    crate::rootfs::apply::apply(args.steps, args.state, policy.verbose)?;
    crate::rootfs::apply::pivot(&args.state.root)?;
    log(policy, || "root assembled; pivoted".into());

    let pty = if policy.tty { Some(open_pty()?) } else { None };
    let payload = match sys::clone_process(nix::sched::CloneFlags::empty()).ctx(|| "fork".into())? {
        Forked::Child => {
            let _ = args.payload_mask.thread_set_mask();
            let slave = pty.as_ref().map(|(_, path)| path.as_str());
            super::payload::exec(policy, slave)
        }
        Forked::Parent(pid) => pid,
    };
    let master = pty.as_ref().map(|(m, _)| m.as_raw_fd());
    args.channel.send(
        &Msg::Ready {
            pty: master.is_some(),
        },
        master,
    )?;
    drop(pty);
    log(policy, || format!("command started as pid {payload}"));
    supervise(payload, &args.signals)
}

/// Open a pty pair in the sandbox's own devpts; returns the master and the
/// slave's path.
fn open_pty() -> Result<(std::os::fd::OwnedFd, String)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let fd = nix::fcntl::open(
        "/dev/pts/ptmx",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| "opening /dev/pts/ptmx".into())?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    let n = sys::pty_unlock_and_number(master.as_raw_fd()).ctx(|| "unlocking the pty".into())?;
    Ok((master, format!("/dev/pts/{n}")))
}

/// Wait for the payload, forwarding signals and reaping orphans; when it
/// ends, kill whatever is left and return its status.
fn supervise(payload: Pid, signals: &SigSet) -> Result<u8> {
    loop {
        let sig = signals.wait().map_err(|e| Error::sys("sigwait", e))?;
        if sig != Signal::SIGCHLD {
            let _ = kill(payload, sig);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(st) if st.pid() == Some(payload) => {
                    let code = status_code(st);
                    // Everything else in the pid namespace goes with it.
                    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
                    while waitpid(None, None).is_ok() {}
                    return Ok(code);
                }
                Ok(_) => {}
            }
        }
    }
}
