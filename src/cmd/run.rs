//! `sbox run` and `sbox shell`.

use crate::cli::SandboxOpts;
use crate::error::{Error, Result};
use crate::locations::Locations;
use crate::policy::{self, Caller, Context, Overrides, Policy};
use crate::profile::{self, SearchPath};
use std::path::{Path, PathBuf};

fn overrides(o: &SandboxOpts) -> Overrides {
    Overrides {
        bind: o.bind.clone(),
        ro_bind: o.ro_bind.clone(),
        tmpfs: o.tmpfs.clone(),
        chdir: o.chdir.clone(),
        env: o.env.clone(),
        keep_env: o.keep_env.clone(),
        hostname: o.hostname.clone(),
        net: o.net.clone(),
        overlay: o.overlay.clone(),
        map_user: o.map_user,
        verbose: o.verbose,
        log_denials: o.log_denials,
        publish: o.publish.clone(),
        allow_host_loopback: o.allow_host_loopback,
        allow_net: o.allow_net.clone(),
        add_host: o.add_host.clone(),
        memory: o.memory.clone(),
        pids: o.pids,
        cpus: o.cpus,
        nofile: o.nofile,
        timeout: o.timeout.clone(),
    }
}

/// The current directory: where a sandbox started from the command line
/// runs, and its project.
pub fn current_dir() -> Result<PathBuf> {
    std::env::current_dir()
        .map_err(|e| Error::Host(format!("cannot tell the current directory: {e}")))
}

/// Can the user enter `dir` (a directory they may search)? What `cd` there
/// would tell.
pub fn check_enterable(dir: &Path) -> std::io::Result<()> {
    if !std::fs::metadata(dir)?.is_dir() {
        return Err(std::io::Error::from_raw_os_error(libc::ENOTDIR));
    }
    nix::unistd::access(dir, nix::unistd::AccessFlags::X_OK)
        .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
}

/// Build the policy for a sandbox from the options and the profile, for a
/// sandbox started in `cwd`: its project and working directory. (A profile
/// named by a relative path is read from the current directory: `sbox
/// start` passes it joined to the project, see `StoredConfig::sandbox_opts`.)
pub fn make_policy(opts: &SandboxOpts, argv: Vec<String>, tty: bool, cwd: &Path) -> Result<Policy> {
    let caller = Caller::from_host()?;
    let cwd = cwd.to_path_buf();
    let host_env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let data = crate::locations::data_dir(&caller);
    let search = SearchPath::from_host();
    let loaded = match &opts.profile {
        Some(name) => profile::load(name, &search)?,
        None => match crate::cmd::trust::project_profile(&cwd, &data, &search)? {
            Some(l) => l,
            None => profile::load(crate::trust::REFERENCE_PROFILE, &search)?,
        },
    };
    let ctx = Context {
        data_dir: data,
        caller,
        cwd,
        host_env: &host_env,
        landlock_abi: crate::confine::landlock::probe_abi(),
        cgroup_probe: crate::limits::delegated_cgroup,
        host_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel: crate::limits::kernel_version(),
    };
    let image = opts
        .image
        .clone()
        .or_else(|| loaded.profile.filesystem.image.clone());
    let argv = match (argv.is_empty(), &image) {
        // The host's login shell need not exist in an image.
        (true, Some(_)) => vec!["/bin/sh".to_string()],
        (true, None) => vec![login_shell(&loaded.profile, &ctx)],
        (false, _) => argv,
    };
    let mut policy = policy::build(
        &loaded.name,
        &loaded.profile,
        &overrides(opts),
        argv,
        tty,
        &ctx,
    )?;
    if image.is_none() {
        for (given, flag) in [
            (opts.user.is_some(), "--user"),
            (opts.entrypoint.is_some(), "--entrypoint"),
        ] {
            if given {
                return Err(Error::Usage(format!(
                    "{flag} is for an image's root (--image, or filesystem.image in the profile)"
                )));
            }
        }
    }
    if let Some(want) = image {
        let env = &loaded.profile.environment;
        let explicit = crate::image::run::Explicit {
            env: opts
                .env
                .iter()
                .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_string()))
                .chain(opts.keep_env.iter().cloned())
                .chain(env.set.keys().cloned())
                .chain(env.pass.iter().cloned())
                .collect(),
            chdir: opts.chdir.is_some(),
            user: opts.user.clone(),
        };
        crate::image::run::apply(&mut policy, &want, &explicit)?;
    }
    Ok(policy)
}

/// A named sandbox keeps the image it was made from: a run without
/// `--image` takes it, a run on another root is refused (its changes
/// belong to that root).
fn adopt_stored_image(opts: &mut SandboxOpts, paths: &crate::locations::Paths) -> Result<()> {
    let Some(cfg) = crate::names::read_config(paths)? else {
        return Ok(());
    };
    match (&cfg.image, &opts.image) {
        (Some(id), None) => opts.image = Some(id.clone()),
        (None, Some(want)) if paths.upper().exists() => {
            return Err(Error::Usage(format!(
                "sandbox {} runs on the host's root; its changes cannot move onto image {want} (use another name, or `sbox rm {}` first)",
                paths.name, paths.name
            )))
        }
        _ => {}
    }
    Ok(())
}

/// The image of a stored sandbox must be the one a new run asks for.
fn check_stored_image(policy: &Policy, paths: &crate::locations::Paths) -> Result<()> {
    let Some(cfg) = crate::names::read_config(paths)? else {
        return Ok(());
    };
    let now = policy.image.as_ref().map(|i| i.id.as_str());
    match (cfg.image.as_deref(), now) {
        (Some(was), Some(now)) if was != now => Err(Error::Usage(format!(
            "sandbox {} was made from image {}, not {}: its changes belong to that image (use another name, or `sbox rm {}` first)",
            paths.name,
            was.trim_start_matches("sha256:").get(..12).unwrap_or(was),
            policy.image.as_ref().map_or("", |i| i.name.as_str()),
            paths.name
        ))),
        (Some(_), None) => Err(Error::Usage(format!(
            "sandbox {} was made from an image; it cannot run on the host's root",
            paths.name
        ))),
        _ => Ok(()),
    }
}

fn login_shell(p: &crate::profile::ProfileFile, ctx: &Context) -> String {
    p.process
        .shell
        .clone()
        .or_else(|| {
            ctx.host_env
                .iter()
                .find(|(k, v)| k == "SHELL" && !v.is_empty())
                .map(|(_, v)| v.clone())
        })
        .or_else(|| ctx.caller.shell.clone().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "/bin/sh".into())
}

/// `sbox run [OPTIONS] CMD [ARGS...]`
pub fn run(
    opts: SandboxOpts,
    argv: Vec<String>,
    tty: bool,
    name: Option<String>,
    detach: bool,
) -> Result<u8> {
    run_in(&current_dir()?, opts, argv, tty, name, detach)
}

/// `sbox run` in the directory `cwd` (`sbox start`: the sandbox's project).
pub fn run_in(
    cwd: &Path,
    opts: SandboxOpts,
    argv: Vec<String>,
    tty: bool,
    name: Option<String>,
    detach: bool,
) -> Result<u8> {
    let mut opts = opts;
    if let Some(n) = &name {
        let paths = Locations::from_host()?.sandbox(n)?;
        adopt_stored_image(&mut opts, &paths)?;
    }
    let mut policy = make_policy(&opts, argv.clone(), tty, cwd)?;
    match &policy.image {
        Some(image) => {
            let mut image = image.clone();
            // As docker run: the program replaces the Entrypoint and the
            // image's Cmd goes with it.
            if let Some(e) = &opts.entrypoint {
                image.entrypoint = if e.is_empty() { vec![] } else { vec![e.clone()] };
                image.cmd.clear();
            }
            policy.argv = image.command_line(&argv)?
        }
        None if argv.is_empty() => {
            return Err(Error::Usage(
                "no command given: sbox run [OPTIONS] -- CMD [ARGS...] (only an image's Cmd can stand in for it, with --image)".into(),
            ))
        }
        None => {}
    }
    let name = match (name, detach) {
        (Some(n), _) => Some(n),
        (None, true) => Some(crate::locations::generate_name()),
        (None, false) => None,
    };
    let Some(name) = name else {
        return crate::sandbox::launcher::run(&policy, Default::default());
    };
    crate::locations::validate_name(&name)?;
    let paths = Locations::of(&policy.caller)?.sandbox(&name)?;
    check_stored_image(&policy, &paths)?;
    let running = crate::names::Running::acquire(paths)?;
    run_named(&policy, opts, argv, running, detach, false)
}

/// Run a sandbox under the name `running` holds: its upper layer is kept
/// and reused. `shell`: the per-project sandbox of `sbox shell`.
fn run_named(
    policy: &Policy,
    opts: SandboxOpts,
    argv: Vec<String>,
    running: crate::names::Running,
    detach: bool,
    shell: bool,
) -> Result<u8> {
    let name = running.paths.name.clone();
    let paths = running.paths.clone();
    crate::state::create_data_dirs(
        &crate::locations::data_dir(&policy.caller),
        &Path::new("sandboxes").join(&name),
    )?;
    let mut record = crate::names::StoredConfig::new(
        &name,
        (&opts).into(),
        argv,
        &policy.project,
        shell,
        Some(policy.profile.clone()),
    );
    record.image = policy.image.as_ref().map(|i| i.id.clone());
    if policy.image.is_some() {
        record.mount_points = policy
            .binds
            .iter()
            .filter(|b| b.src.is_dir())
            .map(|b| b.dest.clone())
            .collect();
    }
    let saved = crate::names::write_json(&paths.config(), &record);
    match saved {
        // A full disk must not lock the user out of the sandbox whose
        // files fill it: start anyway (earlier settings, if any, stay).
        Err(Error::Io { source, .. })
            if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) =>
        {
            eprintln!("sbox: warning: cannot save the settings of sandbox {name:?}: {source}");
        }
        r => r?,
    }
    if detach {
        return crate::sandbox::detach::run(policy, running, &name, !shell);
    }
    crate::sandbox::launcher::run(
        policy,
        crate::sandbox::launcher::Extras {
            named: Some(running),
            ..Default::default()
        },
    )
}

/// `sbox shell [OPTIONS] [-c STRING | -- CMD...]`. With a profile that
/// persists per project, the project's sandbox keeps its changes between
/// shells, and a shell or command in the same project joins the running
/// one. Without a terminal on stdin, the shell reads its commands from
/// stdin; a command gets a terminal only when stdin and stdout are ones.
pub fn shell(opts: SandboxOpts, command: Vec<String>, string: Option<String>) -> Result<u8> {
    use std::io::IsTerminal;
    let session = command.is_empty() && string.is_none();
    let tty = std::io::stdin().is_terminal() && (session || std::io::stdout().is_terminal());
    if opts.entrypoint.is_some() {
        return Err(Error::Usage(
            "--entrypoint is for sbox run (sbox shell runs a shell, or the command after --)"
                .into(),
        ));
    }
    // The project's sandbox keeps the image it was made from.
    let mut opts = opts;
    if opts.image.is_none() {
        let paths = Locations::from_host()?.project_sandbox(&current_dir()?);
        // (Unreadable settings are for the start of the sandbox to report.)
        let _ = adopt_stored_image(&mut opts, &paths);
    }
    let mut policy = make_policy(&opts, command.clone(), tty, &current_dir()?)?;
    if command.is_empty() {
        policy.argv.push("-l".into());
        if let Some(s) = string {
            policy.argv.extend(["-c".into(), s]);
        }
    }
    policy.hangup = session;
    if !policy.persist_project {
        return crate::sandbox::launcher::run(&policy, Default::default());
    }
    let paths = Locations::of(&policy.caller)?.project_sandbox(&policy.project);
    check_stored_image(&policy, &paths)?;
    let name = paths.name.clone();
    // The sandbox may be starting or ending meanwhile: then again.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(code) = shell_in(&policy, &opts, &paths, tty, session)? {
            return Ok(code);
        }
        if std::time::Instant::now() > end {
            return Err(Error::Host(format!(
                "the project's sandbox {name} is busy starting or ending; try again"
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Start the project's sandbox or join it: the status, or `None` when the
/// sandbox ended before the command could start in it.
fn shell_in(
    policy: &Policy,
    opts: &SandboxOpts,
    paths: &crate::locations::Paths,
    tty: bool,
    session: bool,
) -> Result<Option<u8>> {
    let name = paths.name.clone();
    if crate::names::running(paths).is_none() {
        match crate::names::Running::acquire(paths.clone()) {
            Ok(running) if session => {
                let argv = policy.argv.clone();
                return run_named(policy, opts.clone(), argv, running, false, true).map(Some);
            }
            // A command: the sandbox starts in the background and lives
            // while sessions are in it, this command first; a shell that
            // joins meanwhile keeps it after the command ends.
            Ok(running) => {
                let mut holder = policy.clone();
                holder.tty = false;
                holder.sessions = true;
                holder.hangup = true;
                let argv = policy.argv.clone();
                let code = run_named(&holder, opts.clone(), argv, running, true, true)?;
                if code != 0 {
                    return Ok(Some(code));
                }
            }
            // Another shell of the project is starting or ending it:
            // join it once it runs, or start it once it has ended.
            Err(_) if crate::names::running(paths).is_none() => return Ok(None),
            Err(_) => {}
        }
    }
    if policy.verbose {
        crate::verbose::say("launcher", &format!("joining the running sandbox {name}"));
    }
    crate::cmd::exec::join(
        crate::cli::ExecArgs {
            interactive: true,
            tty,
            env: Vec::new(),
            workdir: Some(policy.chdir.to_string_lossy().into_owned()),
            name,
            command: policy.argv.clone(),
        },
        session,
        true,
    )
}
