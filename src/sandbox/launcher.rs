//! launcher: the process the user started. Creates the sandbox, writes the
//! id maps, relays the terminal and signals, returns the exit status.

use super::channel::{Channel, Message};
use super::child::ChildGuard;
use super::init::{self, InitArgs};
use super::messages::{FromInit, ToInit};
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
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

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
        super::say("launcher", &msg());
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

/// What a named or detached sandbox adds to a plain run.
#[derive(Debug, Default)]
pub struct Extras {
    /// The name's lock and paths: persistent upper, control socket, info.
    pub named: Option<crate::names::Running>,
    /// `run -d`: written "ok" once the command has started.
    pub ready: Option<OwnedFd>,
    /// `run -d`: the read end of our own stdout/stderr, copied to this log.
    pub log: Option<(OwnedFd, std::path::PathBuf)>,
}

/// Largest log of a detached sandbox before it is rotated to `log.1`.
pub const LOG_CAP: u64 = 10 << 20;

/// Run a sandbox; returns the exit status for sbox.
pub fn run(policy: &Policy, extras: Extras) -> Result<u8> {
    let ids = IdPlan::for_caller(
        policy.caller.uid,
        policy.caller.gid,
        &policy.caller.name,
        policy.map_user,
    );
    log(policy, || ids.describe());
    for note in &policy.notes {
        eprintln!("sbox: note: {note}");
    }
    if let Some(out) = &policy.output {
        // Created beneath the project without following any link in it.
        crate::hostpath::mkdir_beneath(&policy.project, out, 0o755)
            .map_err(|e| Error::Usage(format!("creating the output directory: {e}")))?;
    }
    let base = state::runtime_base(policy.caller.uid)?;
    state::clean_stale(&base);
    let host = probe_host(policy);
    let mut state_dir = StateDir::create(&base)?;
    log(policy, || format!("state in {}", state_dir.dir.display()));
    let mut control = None;
    if let Some(named) = &extras.named {
        let p = &named.paths;
        for d in [p.upper(), p.work()] {
            crate::rootfs::apply::mkdir_p(&d, 0o700)?;
        }
        state_dir.paths.upper = p.upper();
        state_dir.paths.work = p.work();
        control = Some(Channel::listen(&p.control())?);
        log(policy, || {
            format!("persistent upper in {}", p.upper().display())
        });
    }
    let cgroup = match (&policy.cgroup_parent, policy.limit_plan.cgroup.is_empty()) {
        (Some(parent), false) => Some(crate::limits::Cgroup::create(
            parent,
            &crate::limits::controllers_for(&policy.limits),
            &policy.limit_plan.cgroup,
        )?),
        _ => None,
    };
    let tty_gid = (ids.helpers
        && ids
            .gid
            .iter()
            .any(|e| e.inside <= 5 && 5 < e.inside + e.count))
    .then_some(5);
    let mut steps = build_plan(policy, &host, &state_dir.paths, tty_gid);
    // sbox's own data (other sandboxes' layers, trust records) is not the
    // sandbox's business; the FUSE root shows it empty, the others mask it.
    let data = crate::locations::data_dir(&policy.caller);
    if policy.backend != crate::policy::Backend::Fuse && data.exists() {
        steps.push(Step::Mask { dest: data });
    }
    let user_net = match policy.net {
        NetMode::User => Some(prepare_user_net(policy, &state_dir.dir, &mut steps)?),
        _ => None,
    };
    if let Some(e) = &policy.egress {
        prepare_egress(policy, e, &state_dir.dir, &mut steps)?;
    }
    describe_layers(policy, &ids);

    let (ours, theirs) = Channel::pair()?;
    let mut signals = SigSet::empty();
    for s in FORWARDED {
        signals.add(*s);
    }
    signals.add(Signal::SIGCHLD);
    // The launcher tells init of --timeout with it (for `sbox exec`).
    signals.add(Signal::SIGALRM);
    let old_mask = signals
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .ctx(|| "blocking signals".into())?;
    let restore = MaskGuard(old_mask);

    let flags = clone_flags(policy);
    // What this command read at its last launch, read ahead by init.
    let prefetch_list = steps.contains(&Step::FuseRoot).then(|| {
        let lower = policy
            .image
            .as_ref()
            .map_or_else(|| "/".into(), |i| i.rootfs.clone());
        let argv0 = policy.argv.first().map_or("", String::as_str);
        crate::rootfs::prefetch::list_path(&base, argv0, &lower)
    });
    let prefetch = prefetch_list
        .as_deref()
        .map(crate::rootfs::prefetch::load)
        .unwrap_or_default();
    // With the helpers, through the keeper's namespace when there is one:
    // the maps are then written before the fork returns.
    let keeper = match ids.helpers {
        true => match crate::keeper::obtain(&base, &ids) {
            Ok((ns, new)) => {
                log(policy, || {
                    format!(
                        "id maps from the keeper's user namespace{}",
                        if new { " (started now)" } else { "" }
                    )
                });
                Some(ns)
            }
            Err(e) => {
                log(policy, || {
                    format!("no keeper ({e}): mapping with the helpers")
                });
                None
            }
        },
        false => None,
    };
    let (forked, mapped) = match keeper
        .as_ref()
        .map(|ns| crate::keeper::clone_into(ns, flags, &ids))
    {
        Some(Ok(f)) => (Ok(f), true),
        Some(Err(e)) => {
            log(policy, || format!("keeper: {e}: mapping with the helpers"));
            (sys::clone_process(flags), false)
        }
        None => (sys::clone_process(flags), false),
    };
    let child = match forked {
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
                control,
                prefetch: &prefetch,
            });
            sys::exit_now(code)
        }
        // Killed and reaped on every error path from here.
        Ok(Forked::Parent(pid)) => ChildGuard::new(pid),
        Err(e) => return Err(clone_error(e)),
    };
    drop(theirs);
    drop(control);
    log(policy, || {
        format!("init is pid {} on the host", child.pid())
    });
    if let Some(cg) = &cgroup {
        cg.add(child.pid().as_raw())?;
    }
    if let Some(named) = &extras.named {
        let info = crate::names::Info {
            name: named.paths.name.clone(),
            pid: std::process::id() as i32,
            init_pid: child.pid().as_raw(),
            profile: policy.profile.clone(),
            project: policy.project.clone(),
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            command: policy.argv.clone(),
            detached: extras.ready.is_some(),
            cgroup: cgroup.as_ref().map(|c| c.dir.clone()),
        };
        named.write_info(&info)?;
    }

    if !mapped {
        ids.apply(child.pid())?;
    }
    drop(keeper);
    // The user-mode stack configures the namespace before init goes on.
    let _net_helper = match &user_net {
        Some(u) => Some(u.start(policy, child.pid())?),
        None => None,
    };
    ours.send(&ToInit::MapsWritten, None)?;
    log(policy, || "id maps written".into());

    let Extras {
        ready,
        log: log_pipe,
        named,
        ..
    } = extras;
    // The FUSE root, when init mounts one, is served from here: outside the
    // sandbox's pid namespace, with the host's view of the layers. Made
    // ready while init assembles its mounts: init's first look at the new
    // mount waits for the server's answer.
    let mut prepared = None;
    if steps.contains(&Step::FuseRoot) {
        let cfg = crate::rootfs::overlay::OverlayConfig {
            lower: policy
                .image
                .as_ref()
                .map_or_else(|| "/".into(), |i| i.rootfs.clone()),
            upper: state_dir.paths.upper.clone(),
            work: state_dir.paths.work.clone(),
            hidden: policy.hidden.clone(),
            canonical: policy.hidden_canonical.clone(),
            empty: crate::rootfs::plan::fuse_empty_dirs(
                &base,
                &crate::locations::data_dir(&policy.caller),
            ),
            caller_uid: policy.caller.uid,
            caller_gid: policy.caller.gid,
            caller_inside: policy.caller_inside(),
            id_maps: Some(crate::rootfs::upper::IdMap::from_plan(&ids)),
            threads: fuse_threads(),
            attr_timeout: policy.host_cache,
            entry_timeout: policy.host_cache,
            // The host's root has the binds' paths; an image's often not.
            mount_points: match &policy.image {
                Some(_) => policy
                    .binds
                    .iter()
                    .filter(|b| b.src.is_dir())
                    .map(|b| b.dest.clone())
                    .collect(),
                None => Vec::new(),
            },
        };
        prepared = Some(
            crate::rootfs::overlay::prepare(cfg)
                .map_err(|e| Error::Host(format!("FUSE server: {e}")))?,
        );
    }
    let mut fuse_server = None;
    let mut msg = ours.recv()?;
    // First the sockets of --allow-net, served from the host's namespace.
    let mut sockets = crate::egress::Sockets::default();
    while let Some((FromInit::EgressSocket { dns, watch }, Some(fd))) = msg {
        match (dns, watch) {
            (true, _) => sockets.dns = Some(fd),
            (_, true) => sockets.watch = Some(fd),
            _ => sockets.listeners.push(fd),
        }
        msg = ours.recv()?;
    }
    let egress = match &policy.egress {
        Some(e) => Some(crate::egress::serve(e, sockets, policy.verbose)?),
        None => None,
    };
    if let Some((FromInit::FuseFd, Some(fd))) = msg {
        let Some(prepared) = prepared.take() else {
            return Err(Error::Host(
                "init sent a FUSE root the plan does not have".into(),
            ));
        };
        let server = prepared
            .start(fd)
            .map_err(|e| Error::Host(format!("FUSE server: {e}")))?;
        fuse_server = Some(server);
        log(policy, || "serving the FUSE root".into());
        msg = ours.recv()?;
    }
    // Then the binds that hold hidden paths, in the order init mounts them.
    let mut bind_servers = Vec::new();
    while let Some((FromInit::FuseBindFd { step }, Some(fd))) = msg {
        bind_servers.push(serve_bind(policy, &steps, step, fd, &ids, &base)?);
        msg = ours.recv()?;
    }
    let init_pid = child.pid();
    let ending = match msg {
        Some((FromInit::Ready { .. }, master)) => {
            // Right after Ready, when the plan says so (see
            // `plan::hands_over_procfs`).
            if crate::rootfs::plan::hands_over_procfs(&steps) {
                if let Ok(Some((FromInit::ProcFs, Some(fd)))) = ours.recv() {
                    let servers = fuse_server
                        .iter()
                        .chain(bind_servers.iter().map(|(_, s)| s));
                    give_procfs(fd, servers);
                }
            }
            if let Some(r) = ready {
                let _ = pty::write_all(&r, b"ok\n");
            }
            supervise(policy, child.release(), &signals, master, log_pipe, &ours)?
        }
        // init failed before starting the command (it said why), and
        // reported what it saw refused meanwhile.
        None | Some((FromInit::Refused { .. }, _)) => {
            let status = waitpid(child.release(), None).ctx(|| "waitpid".into())?;
            if let Some((r, path)) = &log_pipe {
                drain_log(r, path);
            }
            Ending {
                status,
                timed_out: false,
                refused: None,
                told: false,
            }
        }
        Some((m, _)) => {
            let expected =
                "EgressSocket, FuseFd or FuseBindFd with a descriptor attached, or Ready";
            return Err(m.unexpected(expected).into());
        }
    };
    let Ending {
        status,
        timed_out,
        refused: told_refused,
        told,
    } = ending;
    log(policy, || format!("sandbox ended: {status:?}"));
    if told && cgroup.is_some() {
        // The cgroup can be removed only once init has left it.
        let _ = waitpid(init_pid, None);
    }
    drop(cgroup);
    let stats = fuse_server.as_ref().map(|s| s.stats());
    if let (Some(list), Some(st)) = (&prefetch_list, &stats) {
        crate::rootfs::prefetch::store(list, &st.first_reads);
    }
    let mut refused: Vec<(std::path::PathBuf, u32)> =
        stats.map(|s| s.hidden_refusals).unwrap_or_default();
    for (dest, s) in &bind_servers {
        for (rel, n) in s.stats().hidden_refusals {
            refused.push((dest.join(rel.strip_prefix("/").unwrap_or(&rel)), n));
        }
    }
    let (mut total, mut lines) = told_refused.unwrap_or_else(|| init_refusals(&ours));
    if let Some(e) = egress {
        let (n, l) = e.stop();
        total += n;
        lines.extend(l);
    }
    report_refusals(policy, &refused, (total, lines));
    let servers = bind_servers.into_iter().map(|(_, s)| s);
    for s in fuse_server.into_iter().chain(servers) {
        if told {
            // Nothing is left in the sandbox to ask the servers anything;
            // init, ending, takes the mounts down, and their threads end
            // with this process (bubblewrap, too, returns the command's
            // status without waiting for its pid 1 to go).
            continue;
        }
        // The mount went away with the sandbox: the server ends.
        if let Err(e) = s.wait() {
            log(policy, || format!("FUSE server: {e}"));
        }
    }
    drop(named);
    drop(restore);
    log(policy, || match told {
        true => "FUSE server left to end with init's mounts".into(),
        false => "FUSE server done".into(),
    });
    state_dir.finish(ids.helpers.then_some(&ids));
    log(policy, || "state removed".into());
    if let Some(t) = timed_out.then_some(policy.limits.timeout).flatten() {
        eprintln!(
            "sbox: error: the sandbox ran out of time ({}s, --timeout) and was stopped",
            t.as_secs_f64()
        );
        return Ok(crate::error::EXIT_TIMEOUT);
    }
    Ok(status_code(status))
}

/// What the launcher prepared for a --net user sandbox.
struct UserNet {
    stack: crate::net::Stack,
    dir: std::path::PathBuf,
    dns_forward: bool,
}

impl UserNet {
    /// Start the stack for the sandbox whose init is `pid`.
    fn start(&self, policy: &Policy, pid: Pid) -> Result<NetHelper> {
        match &self.stack {
            crate::net::Stack::Pasta(program) => {
                let pid_file = self.dir.join("pasta.pid");
                let args = crate::net::build_pasta_args(
                    pid.as_raw(),
                    &policy.publish,
                    policy.allow_host_loopback,
                    self.dns_forward,
                    &pid_file,
                );
                NetHelper::start(program, &args, &pid_file)
            }
            crate::net::Stack::Slirp4netns(program) => NetHelper::start_slirp(
                program,
                pid.as_raw(),
                policy.allow_host_loopback,
                &policy.publish,
                &self.dir.join("slirp.sock"),
            ),
        }
    }
}

/// Pick the stack, check the published ports, write the sandbox's
/// resolv.conf and hosts, and add their binds to the plan.
fn prepare_user_net(
    policy: &Policy,
    dir: &std::path::Path,
    steps: &mut Vec<Step>,
) -> Result<UserNet> {
    let stack = crate::net::choose_stack()?;
    for p in &policy.publish {
        crate::net::check_free(p)?;
    }
    let files = crate::net::build_user_net_files(
        &std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        &crate::net::host_nameservers(),
        crate::net::default_gateway(),
        &policy.hostname,
        policy.allow_host_loopback,
        matches!(stack, crate::net::Stack::Slirp4netns(_)),
    );
    let write = |name: &str, text: &str| -> Result<std::path::PathBuf> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
        std::fs::canonicalize(&p).map_err(|e| Error::io(format!("writing {}", p.display()), e))
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
        stack,
        dir: dir.to_path_buf(),
        dns_forward: files.dns_forward,
    })
}

/// Write the resolv.conf and hosts of an --allow-net sandbox and add their
/// binds to the plan.
fn prepare_egress(
    policy: &Policy,
    e: &crate::egress::Egress,
    dir: &std::path::Path,
    steps: &mut Vec<Step>,
) -> Result<()> {
    let hosts = e.hosts_file(
        &std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        &policy.hostname,
    );
    for (name, text) in [("hosts", hosts), ("resolv.conf", e.resolv_conf())] {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let p = dir.join(name);
        // New, never through a link; readable by every user inside.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&p)
            .and_then(|mut f| {
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
                f.write_all(text.as_bytes())
            })
            .map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
        let src = std::fs::canonicalize(&p)
            .map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
        steps.push(Step::Bind {
            src,
            dest: std::path::Path::new("/etc").join(name),
            readonly: true,
            create: true,
        });
    }
    Ok(())
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
        crate::policy::Backend::Fuse => {
            "sbox FUSE overlay of / (copy-on-write, root-owned files are root's)"
        }
        crate::policy::Backend::Kernel => "kernel overlayfs (copy-on-write, ephemeral)",
        crate::policy::Backend::None => "host trees read-only",
    };
    let net =
        match (policy.net, policy.allow_host_loopback) {
            (NetMode::None, _) if policy.egress.is_some() => policy
                .egress
                .as_ref()
                .map(|e| e.describe())
                .unwrap_or_default(),
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
    for note in &policy.limit_plan.notes {
        eprintln!("sbox:   limit: {note}");
    }
}

/// What init counted as refused (its last message, sent as the sandbox
/// ended; it is gone, so this does not wait).
fn init_refusals(ours: &Channel) -> (u32, Vec<String>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let fd = ours.as_fd();
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    if !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
        return (0, Vec::new());
    }
    match ours.recv() {
        Ok(Some((FromInit::Refused { total, report }, _))) => (total, report),
        _ => (0, Vec::new()),
    }
}

/// At exit: with --log-denials, each refusal with what would allow it; in
/// any case one line with how many there were.
fn report_refusals(
    policy: &Policy,
    hidden: &[(std::path::PathBuf, u32)],
    init: (u32, Vec<String>),
) {
    let (counted, lines) = init;
    let total = counted + hidden.iter().map(|(_, n)| n).sum::<u32>();
    if total == 0 {
        return;
    }
    let ops = if total == 1 {
        "1 operation was refused".to_string()
    } else {
        format!("{total} operations were refused")
    };
    if !policy.log_denials {
        eprintln!("sbox: {ops}; run with --log-denials to see them");
        return;
    }
    for (path, n) in hidden {
        eprintln!(
            "sbox: denied: hidden path {} ({n} time{}); to allow: leave it out of filesystem.hidden (replace = [\"filesystem.hidden\"] in a profile of yours)",
            path.display(),
            if *n == 1 { "" } else { "s" }
        );
    }
    for l in lines {
        eprintln!("sbox: {l}");
    }
    eprintln!("sbox: {ops} in all");
}

/// How the sandbox ended, as the launcher learnt it.
struct Ending {
    /// The command's status (init's own when init did not tell).
    status: WaitStatus,
    timed_out: bool,
    /// What init counted refused, when it said so before ending.
    refused: Option<(u32, Vec<String>)>,
    /// init told the command's status (`FromInit::Exited`) and may still be
    /// ending: the sandbox's processes are gone, its mounts about to be.
    told: bool,
}

/// Relay signals, the terminal (when there is one) and a detached
/// sandbox's output until init tells the command's status or exits; stop
/// the sandbox at its timeout.
fn supervise(
    policy: &Policy,
    child: Pid,
    signals: &SigSet,
    master: Option<OwnedFd>,
    log_pipe: Option<(OwnedFd, std::path::PathBuf)>,
    channel: &Channel,
) -> Result<Ending> {
    let mut peer = Supervised {
        policy,
        child,
        deadline: policy.limits.timeout.map(|t| std::time::Instant::now() + t),
        timed_out: false,
        log_pipe,
        channel: Some(channel),
        refused: None,
    };
    super::relay_loop::run(signals, master, policy.tty, None, &mut peer)
}

/// The launcher's side of the relay loop: init is its child.
struct Supervised<'a> {
    policy: &'a Policy,
    child: Pid,
    /// The timeout, then the end of its grace period.
    deadline: Option<std::time::Instant>,
    timed_out: bool,
    /// A detached sandbox's output, copied to its log.
    log_pipe: Option<(OwnedFd, std::path::PathBuf)>,
    /// init's channel, until it closes: the end of the command comes on it
    /// before init itself ends.
    channel: Option<&'a Channel>,
    refused: Option<(u32, Vec<String>)>,
}

impl Supervised<'_> {
    /// A message of init's; the ending once it told the command's status.
    fn on_message(&mut self) -> Option<Ending> {
        let channel = self.channel?;
        match channel.recv() {
            Ok(Some((FromInit::Refused { total, report }, _))) => {
                self.refused = Some((total, report));
                None
            }
            Ok(Some((FromInit::Exited { code }, _))) => Some(Ending {
                status: WaitStatus::Exited(self.child, i32::from(code)),
                timed_out: self.timed_out,
                refused: Some(self.refused.take().unwrap_or_default()),
                told: true,
            }),
            // Anything else is not for this stage; a closed or broken
            // channel leaves it to init's exit status.
            Ok(Some(_)) => None,
            Ok(None) | Err(_) => {
                self.channel = None;
                None
            }
        }
    }
}

impl super::relay_loop::Peer for Supervised<'_> {
    type Output = Ending;

    fn watched(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        self.log_pipe
            .iter()
            .map(|(r, _)| r.as_fd())
            .chain(self.channel.map(AsFd::as_fd))
            .collect()
    }

    fn deadline(&self) -> Option<std::time::Instant> {
        self.deadline
    }

    fn on_wake(&mut self) {
        let Some(d) = self.deadline else { return };
        if std::time::Instant::now() < d {
            return;
        }
        if self.timed_out {
            // The grace period is over.
            let _ = kill(self.child, Signal::SIGKILL);
            self.deadline = None;
        } else {
            log(self.policy, || "timeout: stopping the sandbox".into());
            self.timed_out = true;
            let _ = kill(self.child, Signal::SIGALRM);
            let _ = kill(self.child, Signal::SIGTERM);
            self.deadline = Some(std::time::Instant::now() + std::time::Duration::from_secs(2));
        }
    }

    fn on_signal(&mut self, sig: Signal, master: Option<&OwnedFd>) {
        match (sig, master) {
            (Signal::SIGCHLD, _) | (Signal::SIGALRM, _) => {}
            (Signal::SIGWINCH, Some(m)) => pty::copy_winsize(0, m.as_raw_fd()),
            (s, _) => {
                log(self.policy, || format!("forwarding {s}"));
                let _ = kill(self.child, s);
            }
        }
    }

    fn on_ready(&mut self, i: usize, buf: &mut [u8]) -> Result<Option<Self::Output>> {
        // watched(): the log pipe (when there is one), then the channel.
        match (&self.log_pipe, i) {
            (Some((r, path)), 0) => {
                match nix::unistd::read(r.as_raw_fd(), buf) {
                    Ok(0) => self.log_pipe = None,
                    Ok(n) => append_log(path, &buf[..n]),
                    Err(_) => {}
                }
                Ok(None)
            }
            _ => Ok(self.on_message()),
        }
    }

    fn after_signals(&mut self) -> Result<Option<Self::Output>> {
        match waitpid(self.child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => Ok(None),
            Ok(status) => Ok(Some(Ending {
                status,
                timed_out: self.timed_out,
                refused: self.refused.take(),
                told: false,
            })),
            Err(e) => Err(Error::sys("waitpid", e)),
        }
    }

    fn drain(&mut self, _: &mut [u8]) {
        if let Some((r, path)) = &self.log_pipe {
            drain_log(r, path);
        }
    }
}

/// Copy what is left in a detached sandbox's output pipe to its log.
fn drain_log(r: &OwnedFd, path: &std::path::Path) {
    let _ = nix::fcntl::fcntl(
        r.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = nix::unistd::read(r.as_raw_fd(), &mut buf) {
        if n == 0 {
            break;
        }
        append_log(path, &buf[..n]);
    }
}

/// Append to a detached sandbox's log, rotating it to `log.1` at LOG_CAP.
fn append_log(path: &std::path::Path, data: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if std::fs::metadata(path).is_ok_and(|m| m.len() + data.len() as u64 > LOG_CAP) {
        let _ = std::fs::rename(path, path.with_extension("1"));
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        let _ = f.write_all(data);
    }
}

/// Gives the FUSE servers the sandbox's /proc (init's, opened once the
/// root is assembled), for the groups of the processes that change set-id
/// files. Without it the servers judge group membership by a process's own
/// gid.
fn give_procfs<'a>(
    fd: OwnedFd,
    servers: impl Iterator<Item = &'a crate::rootfs::overlay::OverlayServer>,
) {
    let is_proc = nix::sys::statfs::fstatfs(&fd)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC);
    if !is_proc {
        return;
    }
    for server in servers {
        if let Ok(dup) = fd.try_clone() {
            server.set_procfs(dup);
        }
    }
}

/// Serve the passthrough mount of plan step `step` (a bind that holds
/// hidden paths); returns its destination and server.
fn serve_bind(
    policy: &Policy,
    steps: &[Step],
    step: usize,
    fd: OwnedFd,
    ids: &IdPlan,
    runtime_base: &std::path::Path,
) -> Result<(std::path::PathBuf, crate::rootfs::overlay::OverlayServer)> {
    let Some(Step::FuseBind {
        src,
        dest,
        readonly,
        hidden,
    }) = steps.get(step)
    else {
        return Err(Error::Host(format!(
            "init asked to serve step {step}, which is no FUSE bind"
        )));
    };
    // sbox's own state shows empty, as in the FUSE root.
    let mut empty = Vec::new();
    let data = crate::locations::data_dir(&policy.caller);
    let sources = [Some(src.clone()), crate::rootfs::canonical_prefix(src)];
    for p in [runtime_base, data.as_path()] {
        let forms = [Some(p.to_path_buf()), crate::rootfs::canonical_prefix(p)];
        for s in sources.iter().flatten() {
            for f in forms.iter().flatten() {
                if let Ok(rel) = f.strip_prefix(s) {
                    let e = std::path::Path::new("/").join(rel);
                    if !rel.as_os_str().is_empty() && !empty.contains(&e) {
                        empty.push(e);
                    }
                }
            }
        }
    }
    let cfg = crate::rootfs::overlay::PassthroughConfig {
        dir: src.clone(),
        readonly: *readonly,
        hidden: hidden.clone(),
        empty,
        caller_uid: policy.caller.uid,
        caller_gid: policy.caller.gid,
        caller_inside: policy.caller_inside(),
        ids: crate::rootfs::upper::IdMap::from_plan(ids),
        threads: 2,
        // A bind is nearly live: host changes show after at most a second
        // (less when filesystem.host_cache says so). Not caching at all
        // costs ten times as much on metadata-heavy work.
        timeout: policy.host_cache.min(std::time::Duration::from_secs(1)),
    };
    let server = crate::rootfs::overlay::serve_passthrough(fd, cfg)
        .map_err(|e| Error::Host(format!("FUSE server for {}: {e}", dest.display())))?;
    log(policy, || format!("serving {} over FUSE", dest.display()));
    Ok((dest.clone(), server))
}

/// Threads serving the FUSE root: 4 (measured on 2 cores: a quarter faster
/// than 2 on metadata-heavy work, no cost at start); SBOX_FUSE_THREADS
/// overrides it, for benchmarks.
fn fuse_threads() -> usize {
    std::env::var("SBOX_FUSE_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or(4)
}
