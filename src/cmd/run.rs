//! `sbox run` and `sbox shell`.

use crate::cli::SandboxOpts;
use crate::error::{Error, Result};
use crate::policy::{self, Caller, Context, Overrides, Policy};
use crate::profile::{self, SearchPath};

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
    }
}

/// The directory for persistent sbox data ($XDG_DATA_HOME/sbox).
pub fn data_dir(caller: &Caller) -> std::path::PathBuf {
    directories::BaseDirs::new()
        .map(|b| b.data_dir().join("sbox"))
        .unwrap_or_else(|| caller.home.join(".local/share/sbox"))
}

/// Build the policy for a sandbox from the options and the profile.
pub fn make_policy(opts: &SandboxOpts, argv: Vec<String>, tty: bool) -> Result<Policy> {
    let caller = Caller::from_host()?;
    let cwd = std::env::current_dir()
        .map_err(|e| Error::Host(format!("cannot tell the current directory: {e}")))?;
    let host_env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let data = data_dir(&caller);
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
    };
    let argv = if argv.is_empty() {
        vec![login_shell(&loaded.profile, &ctx)]
    } else {
        argv
    };
    policy::build(
        &loaded.name,
        &loaded.profile,
        &overrides(opts),
        argv,
        tty,
        &ctx,
    )
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
pub fn run(opts: SandboxOpts, argv: Vec<String>, tty: bool) -> Result<u8> {
    let policy = make_policy(&opts, argv, tty)?;
    crate::sandbox::launcher::run(&policy)
}

/// `sbox shell [OPTIONS]`
pub fn shell(opts: SandboxOpts) -> Result<u8> {
    let mut policy = make_policy(&opts, Vec::new(), true)?;
    policy.argv.push("-l".into());
    crate::sandbox::launcher::run(&policy)
}
