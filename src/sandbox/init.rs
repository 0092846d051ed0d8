//! init: PID 1 of the sandbox's pid namespace, root in its user namespace.
//! Assembles the root, starts the payload, forwards signals, reaps orphans
//! and exits with the payload's status.

use super::channel::{Channel, Msg};
use crate::confine::notify::{answer_one, Tally};
use crate::error::{status_code, Error, NixContext, Result, EXIT_SBOX_FAILED};
use crate::policy::{NetMode, Policy};
use crate::rootfs::plan::{StatePaths, Step};
use crate::sys::{self, Forked};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

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
    let wants_listener = policy
        .confinement
        .seccomp
        .as_ref()
        .is_some_and(|s| s.notify);
    let denials = if wants_listener {
        Some(Channel::pair()?)
    } else {
        None
    };
    let payload = match sys::clone_process(nix::sched::CloneFlags::empty()).ctx(|| "fork".into())? {
        Forked::Child => {
            let _ = args.payload_mask.thread_set_mask();
            let slave = pty.as_ref().map(|(_, path)| path.as_str());
            super::payload::exec(policy, slave, denials.as_ref().map(|(_, theirs)| theirs))
        }
        Forked::Parent(pid) => pid,
    };
    let listener = match denials {
        Some((ours, theirs)) => {
            drop(theirs);
            match ours.recv()? {
                Some((Msg::SeccompListener, fd)) => fd,
                _ => None,
            }
        }
        None => None,
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
    supervise(payload, &args.signals, listener)
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

/// Wait for the payload, forwarding signals, reaping orphans and answering
/// seccomp notifications; when it ends, kill whatever is left and return
/// its status.
fn supervise(payload: Pid, signals: &SigSet, listener: Option<OwnedFd>) -> Result<u8> {
    let sfd = SignalFd::with_flags(signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .ctx(|| "signalfd".into())?;
    let mut tally = Tally::default();
    let mut listener = listener;
    loop {
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(l) = &listener {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("poll", e)),
        }
        let listener_ready = fds.get(1).and_then(|f| f.revents());
        drop(fds);
        if let (Some(l), Some(r)) = (&listener, listener_ready) {
            if r.contains(PollFlags::POLLIN) {
                if let Ok(Some(d)) = answer_one(l, libc::EPERM) {
                    eprintln!("sbox: denied: {} by {} (pid {})", d.syscall, d.comm, d.pid);
                    tally.add(&d);
                }
            } else if !r.is_empty() {
                // Every process with the filter is gone.
                listener = None;
            }
        }
        while let Ok(Some(info)) = sfd.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            if sig != Signal::SIGCHLD {
                let _ = kill(payload, sig);
            }
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(st) if st.pid() == Some(payload) => {
                    let code = status_code(st);
                    // Everything else in the pid namespace goes with it.
                    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
                    while waitpid(None, None).is_ok() {}
                    if let Some(s) = tally.summary() {
                        eprintln!("sbox: {s}");
                    }
                    return Ok(code);
                }
                Ok(_) => {}
            }
        }
    }
}
