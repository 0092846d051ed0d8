//! init: PID 1 of the sandbox's pid namespace, root in its user namespace.
//! Assembles the root, starts the payload, forwards signals, reaps orphans
//! and exits with the payload's status.

use super::channel::{Channel, RecvError};
use super::child::ChildGuard;
use super::messages::{
    ExecAnswer, ExecControl, ExecEvent, ExecRequest, FromInit, FromPayload, ToInit,
};
use crate::confine::notify::{self, Refusal, Tally};
use crate::confine::observe::Observer;
use crate::error::{status_code, Error, NixContext, Result, EXIT_SBOX_FAILED};
use crate::policy::{NetMode, Policy};
use crate::rootfs::plan::{StatePaths, Step};
use crate::sys::{self, Forked};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long a hung-up shell session has to end before it is killed.
pub const HANGUP_GRACE: Duration = Duration::from_secs(2);
/// How long a sandbox that lives while its sessions do waits for its first.
const FIRST_SESSION_WAIT: Duration = Duration::from_secs(30);

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
    /// The listening control socket of a named sandbox (`sbox exec`).
    pub control: Option<OwnedFd>,
    /// Files to read ahead once the FUSE root is mounted.
    pub prefetch: &'a [std::path::PathBuf],
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
        super::say("init", &msg());
    }
}

fn run(args: &InitArgs) -> Result<u8> {
    let policy = args.policy;
    sys::set_parent_death_signal(libc::SIGKILL).ctx(|| "prctl(PDEATHSIG)".into())?;
    match args.channel.recv()? {
        Some((ToInit::MapsWritten, _)) => {}
        // The launcher gave up (it printed why).
        None => return Ok(EXIT_SBOX_FAILED),
    }
    if args.can_setgroups {
        nix::unistd::setgroups(&[]).ctx(|| "setgroups".into())?;
    }
    nix::unistd::sethostname(&policy.hostname).ctx(|| "sethostname".into())?;
    if policy.net == NetMode::None {
        sys::loopback_up().ctx(|| "bringing up lo".into())?;
        log(policy, || "network: own namespace, lo up".into());
    }
    if let Some(e) = &policy.egress {
        // Opened here, served by the launcher from the host's namespace.
        let socks = crate::egress::open_sockets(e)?;
        for (dns, watch, fd) in socks
            .dns
            .iter()
            .map(|f| (true, false, f))
            .chain(socks.listeners.iter().map(|f| (false, false, f)))
            .chain(socks.watch.iter().map(|f| (false, true, f)))
        {
            let m = FromInit::EgressSocket { dns, watch };
            args.channel.send(&m, Some(fd.as_raw_fd()))?;
        }
        let watched = if socks.watch.is_some() {
            ""
        } else {
            " (no watch on connection requests)"
        };
        log(policy, || {
            format!("network: sbox's DNS and forwarder sockets handed over{watched}")
        });
    }
    crate::rootfs::apply::make_private()?;
    let channel = &args.channel;
    let project = policy
        .binds
        .iter()
        .find(|b| b.dest == policy.project)
        .map(|b| b.dest.as_path());
    crate::rootfs::apply::apply(
        args.steps,
        args.state,
        project,
        policy.verbose,
        args.prefetch,
        &mut |step, fd| {
            let msg = match step {
                None => FromInit::FuseFd,
                Some(step) => FromInit::FuseBindFd { step },
            };
            channel.send(&msg, Some(std::os::fd::AsRawFd::as_raw_fd(&fd)))
        },
    )?;
    crate::rootfs::apply::pivot(&args.state.root)?;
    log(policy, || "root assembled; pivoted".into());
    // Opened before the command runs; handed over once it runs (off the
    // start's critical path).
    let procfs = open_procfs(args.steps)?;

    let pty = if policy.tty { Some(open_pty()?) } else { None };
    let slave = pty.as_ref().map(|(_, path)| path.clone());
    // Without a terminal, tell the launcher only once the command really
    // runs, so `run -d` reports a command that cannot start.
    let wait_exec = pty.is_none();
    let nest = match policy.limit_plan.nested_pids {
        Some(n) => {
            prepare_nested_pids(policy, n)?;
            Nest::Create
        }
        None => Nest::Sandbox,
    };
    let started = spawn_payload(
        policy,
        args.payload_mask,
        slave.as_deref(),
        None,
        wait_exec,
        nest,
    )?;
    if started.exec_failed {
        let mut sup = Supervisor::new(policy, args, started)?;
        return sup.run();
    }
    let master = pty.as_ref().map(|(m, _)| m.as_raw_fd());
    args.channel.send(
        &FromInit::Ready {
            pty: master.is_some(),
        },
        master,
    )?;
    drop(pty);
    if let Some(fd) = procfs {
        args.channel.send(
            &FromInit::ProcFs,
            Some(std::os::fd::AsRawFd::as_raw_fd(&fd)),
        )?;
    }
    log(policy, || format!("command started as pid {}", started.pid));
    let mut sup = Supervisor::new(policy, args, started)?;
    sup.run()
}

/// A payload process init started, with its seccomp listener if any.
struct Started {
    pid: Pid,
    listener: Option<OwnedFd>,
    /// execve failed (only known when asked to wait for it).
    exec_failed: bool,
    /// The nested user namespace created for it (`Nest::Create`).
    userns: Option<OwnedFd>,
}

/// The user namespace a payload runs in.
#[derive(Clone, Copy)]
enum Nest<'a> {
    /// The sandbox's own, init's.
    Sandbox,
    /// A new one nested in the sandbox's, for --pids without a cgroup: the
    /// main command's. Its RLIMIT_NPROC limit is init's (see
    /// `crate::limits::nested_pids_unavailable`).
    Create,
    /// The nested one of the main command (`sbox exec`).
    Join(BorrowedFd<'a>),
}

/// --pids without a cgroup: lower init's own RLIMIT_NPROC to `n` (soft and
/// hard, so no process of the sandbox can raise it again), which the nested
/// user namespace takes as its limit when init creates it, and which bounds
/// init's own forks for `sbox exec`. In a network namespace of its own, let
/// every uid bind ports below 1024 and send pings, as docker does: the
/// payloads' capabilities are those of the nested namespace, which does not
/// own the network namespace.
fn prepare_nested_pids(policy: &Policy, n: u64) -> Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NPROC).ctx(|| "getrlimit".into())?;
    let v = n.min(hard);
    setrlimit(Resource::RLIMIT_NPROC, v, v).ctx(|| "setrlimit RLIMIT_NPROC".into())?;
    log(policy, || {
        format!("RLIMIT_NPROC {v}; the command runs in a nested user namespace")
    });
    if policy.net == NetMode::Host {
        return Ok(());
    }
    let gids = std::fs::read_to_string("/proc/self/gid_map").unwrap_or_default();
    let top = crate::idmap::highest_mapped(&gids).unwrap_or(0);
    for (key, value) in [
        ("ip_unprivileged_port_start", "0".to_string()),
        ("ping_group_range", format!("0 {top}")),
    ] {
        let path = format!("/proc/sys/net/ipv4/{key}");
        if let Err(e) = std::fs::write(&path, &value) {
            log(policy, || format!("{path}: {e}"));
        }
    }
    Ok(())
}

/// Give the nested user namespace of the payload `pid` (still waiting) the
/// identity map of the ids of the sandbox's own, so ids mean the same in
/// both; a handle on it for `sbox exec`. init owns the new namespace and
/// has CAP_SETUID, CAP_SETGID and CAP_SETFCAP in its parent.
fn map_nested(pid: Pid) -> Result<OwnedFd> {
    for kind in ["uid_map", "gid_map"] {
        let own = std::fs::read_to_string(format!("/proc/self/{kind}"))
            .map_err(|e| Error::io(format!("reading /proc/self/{kind}"), e))?;
        let path = format!("/proc/{pid}/{kind}");
        std::fs::write(&path, crate::idmap::identity_of(&own))
            .map_err(|e| Error::io(format!("writing {path}"), e))?;
    }
    let path = format!("/proc/{pid}/ns/user");
    std::fs::File::open(&path)
        .map(OwnedFd::from)
        .map_err(|e| Error::io(format!("opening {path}"), e))
}

/// The error of a failed fork: say so when it is the --pids limit.
fn fork_error(policy: &Policy, nest: Nest, e: nix::errno::Errno) -> Error {
    match (e, policy.limits.pids, nest) {
        (nix::errno::Errno::EAGAIN, Some(n), _) => Error::Host(format!(
            "cannot start a process: the sandbox has reached its limit of {n} processes (--pids)"
        )),
        (_, _, Nest::Create) => Error::sys(
            "creating the nested user namespace that enforces --pids (a delegated cgroup v2 avoids it)",
            e,
        ),
        _ => Error::sys("fork", e),
    }
}

/// Fork a payload for `policy` (the sandbox's command, or an exec'd one).
/// The sandbox's new /proc, for the launcher when it serves FUSE mounts
/// (see `FromInit::ProcFs`; sent right after `Ready`).
fn open_procfs(steps: &[Step]) -> Result<Option<std::os::fd::OwnedFd>> {
    if !crate::rootfs::plan::hands_over_procfs(steps) {
        return Ok(None);
    }
    crate::sys::open(
        "/proc",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| "opening the new /proc".into())
    .map(Some)
}

fn spawn_payload(
    policy: &Policy,
    mask: SigSet,
    pty_slave: Option<&str>,
    stdio: Option<Vec<OwnedFd>>,
    wait_exec: bool,
    nest: Nest,
) -> Result<Started> {
    let status = if wait_exec {
        Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(|| "pipe".into())?)
    } else {
        None
    };
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
    // Create: the child waits until its maps are written (EOF: init failed).
    let mut go = match nest {
        Nest::Create => {
            Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(|| "pipe".into())?)
        }
        _ => None,
    };
    let flags = match nest {
        Nest::Create => nix::sched::CloneFlags::CLONE_NEWUSER,
        _ => nix::sched::CloneFlags::empty(),
    };
    let child = match sys::clone_process(flags).map_err(|e| fork_error(policy, nest, e))? {
        Forked::Child => {
            let _ = mask.thread_set_mask();
            if let Some((r, w)) = go.take() {
                drop(w);
                let mut b = [0u8; 1];
                if !matches!(nix::unistd::read(r.as_raw_fd(), &mut b), Ok(1)) {
                    sys::exit_now(EXIT_SBOX_FAILED as i32);
                }
            }
            if let Nest::Join(ns) = nest {
                if let Err(e) = nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWUSER) {
                    eprintln!(
                        "sbox: error: joining the command's user namespace: {}",
                        e.desc()
                    );
                    sys::exit_now(EXIT_SBOX_FAILED as i32);
                }
            }
            if policy.sessions {
                idle()
            }
            super::payload::exec(
                policy,
                pty_slave,
                denials.as_ref().map(|(_, theirs)| theirs),
                stdio.as_deref(),
                status.as_ref().map(|(_, w)| w.as_raw_fd()),
            )
        }
        Forked::Parent(pid) => ChildGuard::new(pid),
    };
    let pid = child.pid();
    drop(stdio);
    let userns = match go {
        Some((r, w)) => {
            drop(r);
            let ns = map_nested(pid)?;
            super::pty::write_all(&w, b"1").ctx(|| "starting the command".into())?;
            Some(ns)
        }
        None => None,
    };
    let listener = match denials {
        Some((ours, theirs)) => {
            drop(theirs);
            match ours.recv()? {
                Some((FromPayload::SeccompListener, fd)) => fd,
                None => None,
            }
        }
        None => None,
    };
    let exec_failed = match status {
        Some((r, w)) => {
            drop(w);
            let mut b = [0u8; 1];
            // EOF: the pipe closed on a successful execve.
            matches!(nix::unistd::read(r.as_raw_fd(), &mut b), Ok(1))
        }
        None => false,
    };
    Ok(Started {
        // Reaped by the supervisor from now on.
        pid: child.release(),
        listener,
        exec_failed,
        userns,
    })
}

/// The command of a sandbox that lives while its sessions do: it holds the
/// sandbox (and the nested user namespace of --pids) and does nothing. It
/// runs no code of the sandbox and cannot be traced by the sessions, which
/// have fewer capabilities; killing it ends the sandbox.
fn idle() -> ! {
    let _ = sys::set_not_dumpable();
    let _ = sys::close_fds_from(0);
    let _ = SigSet::all().thread_block();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A command started by `sbox exec`.
struct ExecClient {
    conn: Channel,
    pid: Option<Pid>,
    master: Option<OwnedFd>,
    /// The client closed its end.
    gone: bool,
    /// Hung up: killed at this time if still running.
    kill_at: Option<Instant>,
}

/// init's event loop: signals, reaping, seccomp notifications and exec
/// requests.
struct Supervisor<'a> {
    policy: &'a Policy,
    mask: SigSet,
    main: Pid,
    sfd: SignalFd,
    listeners: Vec<OwnedFd>,
    tally: Tally,
    control: Option<OwnedFd>,
    clients: Vec<ExecClient>,
    /// The main command's nested user namespace, which `sbox exec` joins.
    userns: Option<OwnedFd>,
    /// The sandbox was hung up: everything is killed at this time.
    kill_at: Option<Instant>,
    /// `policy.sessions`: ended when no session is left, or none came by
    /// this time.
    first_session_by: Option<Instant>,
    /// Calls the listener gets to observe (--log-denials), and how.
    watched: std::collections::BTreeSet<String>,
    observer: Observer,
    /// To the launcher, which reports the refusals at exit.
    channel: &'a Channel,
}

enum Source {
    Signals,
    Listener(usize),
    Control,
    Client(usize),
}

impl<'a> Supervisor<'a> {
    fn new(policy: &'a Policy, args: &'a InitArgs, started: Started) -> Result<Self> {
        let sfd = SignalFd::with_flags(
            &args.signals,
            SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
        )
        .ctx(|| "signalfd".into())?;
        Ok(Supervisor {
            policy,
            mask: args.payload_mask,
            main: started.pid,
            sfd,
            listeners: started.listener.into_iter().collect(),
            tally: Tally::default(),
            control: args.control.as_ref().and_then(|c| c.try_clone().ok()),
            clients: Vec::new(),
            userns: started.userns,
            kill_at: None,
            first_session_by: policy.sessions.then(|| Instant::now() + FIRST_SESSION_WAIT),
            watched: policy
                .confinement
                .seccomp
                .as_ref()
                .and_then(|s| crate::confine::seccomp::watched_calls(&s.spec).ok())
                .unwrap_or_default(),
            observer: observer(policy),
            channel: &args.channel,
        })
    }

    fn run(&mut self) -> Result<u8> {
        loop {
            let ready = self.wait()?;
            self.expire();
            for src in ready {
                match src {
                    Source::Signals => self.on_signals(),
                    Source::Listener(i) => self.on_listener(i),
                    Source::Control => self.on_control(),
                    Source::Client(i) => self.on_client(i),
                }
            }
            self.clients.retain(|c| c.pid.is_some());
            if let Some(code) = self.reap() {
                return Ok(code);
            }
        }
    }

    /// Poll every source; the ones with something to say.
    fn wait(&mut self) -> Result<Vec<Source>> {
        let mut fds = vec![PollFd::new(self.sfd.as_fd(), PollFlags::POLLIN)];
        let mut kinds = vec![Source::Signals];
        for (i, l) in self.listeners.iter().enumerate() {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            kinds.push(Source::Listener(i));
        }
        if let Some(c) = &self.control {
            fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
            kinds.push(Source::Control);
        }
        let client_fds: Vec<_> = self
            .clients
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.gone)
            .map(|(i, c)| (i, c.conn.as_fd()))
            .collect();
        for (i, fd) in client_fds.iter() {
            fds.push(PollFd::new(*fd, PollFlags::POLLIN));
            kinds.push(Source::Client(*i));
        }
        let next = self
            .clients
            .iter()
            .filter_map(|c| c.kill_at)
            .chain(self.kill_at)
            .chain(self.first_session_by)
            .min();
        let timeout = match next {
            Some(t) => {
                let left = t.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left.as_millis().min(60_000) as i32 + 1)
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("poll", e)),
        }
        let mut out = Vec::new();
        let mut dead_listeners = Vec::new();
        for (f, k) in fds.iter().zip(kinds) {
            let r = f.revents().unwrap_or(PollFlags::empty());
            if r.is_empty() {
                continue;
            }
            match k {
                Source::Listener(i) if !r.contains(PollFlags::POLLIN) => dead_listeners.push(i),
                k => out.push(k),
            }
        }
        drop(fds);
        // Every process of that filter is gone.
        for i in dead_listeners.into_iter().rev() {
            self.listeners.remove(i);
            out.retain(|s| !matches!(s, Source::Listener(_)));
        }
        Ok(out)
    }

    fn on_signals(&mut self) {
        while let Ok(Some(info)) = self.sfd.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            if sig == Signal::SIGCHLD {
                continue;
            }
            if sig == Signal::SIGALRM {
                // From the launcher: --timeout ran out (SIGTERM follows).
                let millis = self
                    .policy
                    .limits
                    .timeout
                    .map_or(0, |t| t.as_millis() as u64);
                for c in &self.clients {
                    let _ = c.conn.send(&ExecEvent::TimedOut { millis }, None);
                }
                continue;
            }
            let hangs_up = matches!(sig, Signal::SIGTERM | Signal::SIGHUP | Signal::SIGINT);
            if self.policy.hangup && hangs_up {
                // A shell ignores SIGTERM (and SIGINT): hang up the whole
                // sandbox, as a closing terminal would.
                log(self.policy, || format!("{sig}: hanging up"));
                let _ = kill(Pid::from_raw(-1), Signal::SIGHUP);
                let _ = kill(Pid::from_raw(-1), Signal::SIGCONT);
                self.kill_at.get_or_insert(Instant::now() + HANGUP_GRACE);
            } else {
                let _ = kill(self.main, sig);
            }
        }
    }

    /// Kill what was hung up and is still there after the grace period.
    fn expire(&mut self) {
        let now = Instant::now();
        if self.first_session_by.is_some_and(|t| t <= now) && self.clients.is_empty() {
            log(self.policy, || "no session came: ending".into());
            let _ = kill(self.main, Signal::SIGKILL);
            self.control = None;
        }
        if self.kill_at.is_some_and(|t| t <= now) {
            self.kill_at = None;
            let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        }
        for c in &mut self.clients {
            if let (Some(t), Some(pid)) = (c.kill_at, c.pid) {
                if t <= now {
                    c.kill_at = None;
                    let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
                    let _ = kill(pid, Signal::SIGKILL);
                }
            }
        }
    }

    fn on_listener(&mut self, i: usize) {
        let Some(l) = self.listeners.get(i) else {
            return;
        };
        let Ok(Some(req)) = notify::receive(l) else {
            return;
        };
        let name = notify::syscall_name(req.nr);
        if self.watched.contains(&name) {
            // Observed only: the call goes on unchanged whatever we find.
            let seen = self.observer.observe(&req, &name);
            if notify::still_valid(l, req.id) {
                if let Some(r) = seen {
                    self.tally.add(r);
                }
            }
            let _ = notify::reply(l, req.id, None);
            return;
        }
        if self.policy.log_denials {
            eprintln!(
                "sbox: denied: {name} by {} (pid {})",
                notify::comm(req.pid),
                req.pid
            );
        }
        let _ = notify::reply(l, req.id, Some(libc::EPERM));
        self.tally.add(Refusal::Seccomp(name));
    }

    fn on_control(&mut self) {
        let Some(c) = &self.control else { return };
        let Ok(conn) = Channel::accept(c) else { return };
        let request = match conn.recv_fds() {
            Ok(Some(r)) => r,
            Err(RecvError::Unexpected(u)) => {
                let error = u.to_string();
                let _ = conn.send(&ExecAnswer::ExecFailed { error }, None);
                return;
            }
            _ => return,
        };
        let (
            ExecRequest::Exec {
                argv,
                env,
                cwd,
                tty,
            },
            fds,
        ) = request;
        let mut client = ExecClient {
            conn,
            pid: None,
            master: None,
            gone: false,
            kill_at: None,
        };
        match self.start_exec(argv, env, cwd, tty, fds) {
            Ok((started, master)) => {
                let _ = client.conn.send(
                    &ExecAnswer::ExecStarted {
                        pid: started.pid.as_raw(),
                    },
                    master.as_ref().map(|m| m.as_raw_fd()),
                );
                client.pid = Some(started.pid);
                client.master = master;
                self.listeners.extend(started.listener);
                self.first_session_by = None;
                log(self.policy, || {
                    format!("exec started as pid {}", started.pid)
                });
                self.clients.push(client);
            }
            Err(e) => {
                let _ = client.conn.send(
                    &ExecAnswer::ExecFailed {
                        error: e.to_string(),
                    },
                    None,
                );
            }
        }
    }

    /// Start a command for `sbox exec` under the sandbox's own policy: the
    /// same root, confinement and environment policy (plus --env).
    fn start_exec(
        &mut self,
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cwd: Option<std::path::PathBuf>,
        tty: bool,
        fds: Vec<OwnedFd>,
    ) -> Result<(Started, Option<OwnedFd>)> {
        if argv.is_empty() {
            return Err(Error::Usage("no command given".into()));
        }
        let mut p = self.policy.clone();
        p.sessions = false;
        p.argv = argv;
        p.tty = tty;
        for (k, v) in env {
            p.env.insert(k, v);
        }
        if let Some(c) = cwd {
            p.chdir = c;
        }
        let nest = match &self.userns {
            Some(ns) => Nest::Join(ns.as_fd()),
            None => Nest::Sandbox,
        };
        if tty {
            let (master, slave) = open_pty()?;
            let started = spawn_payload(&p, self.mask, Some(&slave), None, false, nest)?;
            Ok((started, Some(master)))
        } else {
            if fds.len() != 3 {
                return Err(Error::Usage(
                    "exec without a terminal needs stdin, stdout and stderr".into(),
                ));
            }
            Ok((
                spawn_payload(&p, self.mask, None, Some(fds), false, nest)?,
                None,
            ))
        }
    }

    fn on_client(&mut self, i: usize) {
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        match c.conn.recv() {
            Ok(Some((ExecControl::Signal { signo }, _))) => {
                if let (Some(pid), Ok(sig)) = (c.pid, Signal::try_from(signo)) {
                    let _ = kill(pid, sig);
                }
            }
            Ok(Some((ExecControl::Hangup, _))) => {
                // The session leader's process group, then the leader
                // itself (a shell resends SIGHUP to its jobs).
                if let Some(pid) = c.pid {
                    let group = Pid::from_raw(-pid.as_raw());
                    let _ = kill(group, Signal::SIGHUP);
                    let _ = kill(pid, Signal::SIGHUP);
                    let _ = kill(group, Signal::SIGCONT);
                    c.kill_at.get_or_insert(Instant::now() + HANGUP_GRACE);
                }
            }
            Ok(Some((ExecControl::Resize { rows, cols }, _))) => {
                if let Some(m) = &c.master {
                    let ws = libc::winsize {
                        ws_row: rows,
                        ws_col: cols,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    let _ = sys::set_winsize(m.as_raw_fd(), &ws);
                }
            }
            // Not for this conversation: ignored.
            Err(RecvError::Unexpected(_)) => {}
            // The client went away: the command goes on, like docker exec;
            // stop polling its connection (it stays readable at EOF).
            _ => c.gone = true,
        }
    }

    /// Reap children; the main command's status when it has ended.
    fn reap(&mut self) -> Option<u8> {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return None,
                Ok(st) if st.pid() == Some(self.main) => {
                    let code = status_code(st);
                    // Everything else in the pid namespace goes with it.
                    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
                    while waitpid(None, None).is_ok() {}
                    for c in &self.clients {
                        let _ = c.conn.send(&ExecEvent::ExecExited { code: 137 }, None);
                    }
                    // The launcher reports them with what it counted.
                    let _ = self.channel.send(
                        &FromInit::Refused {
                            total: self.tally.total(),
                            report: self.tally.report(),
                        },
                        None,
                    );
                    let _ = self.channel.send(&FromInit::Exited { code }, None);
                    return Some(code);
                }
                Ok(st) => {
                    let last = self.policy.sessions
                        && self.first_session_by.is_none()
                        && self
                            .clients
                            .iter()
                            .all(|c| c.pid.is_none() || c.pid == st.pid());
                    if let Some(c) = self.clients.iter_mut().find(|c| c.pid == st.pid()) {
                        if last {
                            // The sandbox goes with its last session; a
                            // new one is refused (its client tries again)
                            // rather than started and killed with it.
                            let _ = c.conn.send(&ExecEvent::Ending, None);
                            let _ = kill(self.main, Signal::SIGKILL);
                            self.control = None;
                        }
                        let _ = c.conn.send(
                            &ExecEvent::ExecExited {
                                code: status_code(st),
                            },
                            None,
                        );
                        c.pid = None;
                    }
                }
            }
        }
    }
}

/// What init needs to tell what Landlock and the network refuse.
fn observer(policy: &Policy) -> Observer {
    let landlock = policy.confinement.landlock.as_ref();
    let watch = policy.confinement.seccomp.as_ref().map(|s| s.spec.watch);
    Observer {
        write_roots: landlock
            .filter(|_| watch.is_some_and(|w| w.paths))
            .map(|l| Observer::resolve_roots(&l.spec.write)),
        no_network: policy.net == NetMode::None && policy.egress.is_none(),
        connect_ports: landlock.and_then(|l| l.plan.connect_tcp.clone()),
        bind_ports: landlock.and_then(|l| l.plan.bind_tcp.clone()),
        hidden: policy.hidden.clone(),
    }
}

/// Open a pty pair in the sandbox's own devpts; returns the master and the
/// slave's path.
fn open_pty() -> Result<(std::os::fd::OwnedFd, String)> {
    let master = sys::open(
        "/dev/pts/ptmx",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| "opening /dev/pts/ptmx".into())?;
    let n = sys::pty_unlock_and_number(master.as_raw_fd()).ctx(|| "unlocking the pty".into())?;
    Ok((master, format!("/dev/pts/{n}")))
}
