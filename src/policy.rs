//! The validated, immutable plan of one sandbox. Built from the command line
//! and a resolved profile by pure code; the launcher only sees a `Policy`.

use crate::error::io_reason;
use crate::error::{Error, Result};
use crate::profile::ProfileFile;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

// The backend and the network mode are the profile's words
// (`filesystem.overlay`, `network.mode`), typed once in the key table.
pub use crate::profile::schema::{Backend, NetMode};

/// A bind mount of a host path into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Bind {
    pub src: PathBuf,
    pub dest: PathBuf,
    pub readonly: bool,
}

/// The user who started sbox.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub home: PathBuf,
    pub shell: Option<String>,
}

impl Caller {
    /// The real user of this process, from the kernel and /etc/passwd.
    pub fn from_host() -> Result<Self> {
        let uid = nix::unistd::getuid();
        let gid = nix::unistd::getgid();
        let pw = nix::unistd::User::from_uid(uid).ok().flatten();
        let name = std::env::var("USER")
            .ok()
            .filter(|_| pw.is_none())
            .or_else(|| pw.as_ref().map(|p| p.name.clone()))
            .unwrap_or_else(|| uid.to_string());
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|h| h.is_absolute())
            .or_else(|| pw.as_ref().map(|p| p.dir.clone()))
            .ok_or_else(|| Error::Host("cannot tell the home directory (set HOME)".into()))?;
        let shell = pw.map(|p| p.shell.to_string_lossy().into_owned());
        Ok(Caller {
            uid: uid.as_raw(),
            gid: gid.as_raw(),
            name,
            home,
            shell,
        })
    }
}

impl Policy {
    /// The caller's ids inside the sandbox: root, or its own with
    /// --map-user.
    pub fn caller_inside(&self) -> (u32, u32) {
        if self.map_user {
            (self.caller.uid, self.caller.gid)
        } else {
            (0, 0)
        }
    }
}

/// What the command line adds to or overrides in the profile.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub bind: Vec<String>,
    pub ro_bind: Vec<String>,
    pub tmpfs: Vec<String>,
    pub chdir: Option<String>,
    pub env: Vec<String>,
    pub keep_env: Vec<String>,
    pub hostname: Option<String>,
    pub net: Option<String>,
    pub overlay: Option<String>,
    pub map_user: bool,
    pub verbose: bool,
    pub log_denials: bool,
    pub publish: Vec<String>,
    pub allow_host_loopback: bool,
    pub allow_net: Vec<String>,
    pub add_host: Vec<String>,
    pub memory: Option<String>,
    pub pids: Option<u64>,
    pub cpus: Option<f64>,
    pub nofile: Option<u64>,
    pub timeout: Option<String>,
}

/// The complete, validated plan of one sandbox.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Policy {
    pub profile: String,
    pub argv: Vec<String>,
    /// Allocate a pseudo-terminal and relay it (`sbox shell`, `run -t`).
    pub tty: bool,
    pub caller: Caller,
    /// The project directory (the caller's current directory).
    pub project: PathBuf,
    pub binds: Vec<Bind>,
    /// The profile's output directory (created on the host if missing).
    pub output: Option<PathBuf>,
    pub tmpfs: Vec<PathBuf>,
    /// Paths that must not exist or must be empty inside.
    pub hidden: Vec<PathBuf>,
    /// Each hidden path as the host resolves it (symlinks followed as far
    /// as it exists; itself when nothing is followed), found once here for
    /// the plan and the FUSE server.
    pub hidden_canonical: std::collections::HashMap<PathBuf, PathBuf>,
    /// What resolving the hidden paths found at them and their parents
    /// (`lstat`), so that the launcher does not look at them again.
    #[serde(skip)]
    pub host_found: std::collections::HashMap<PathBuf, crate::hostpath::Found>,
    pub backend: Backend,
    pub net: NetMode,
    /// Ports published on the host (--net user).
    pub publish: Vec<crate::net::Publish>,
    /// The host's loopback is reachable as host.sbox.internal (--net user).
    pub allow_host_loopback: bool,
    /// Egress by name (--allow-net, network.allow): with it, `net` is
    /// `NetMode::None` and sbox's DNS and forwarder reach the listed names.
    pub egress: Option<crate::egress::Egress>,
    pub hostname: String,
    pub chdir: PathBuf,
    pub env: BTreeMap<String, String>,
    pub map_user: bool,
    pub verbose: bool,
    /// Report what the layers refused (--log-denials).
    pub log_denials: bool,
    /// The command gets a session of its own (always with a terminal).
    pub new_session: bool,
    /// Lines the launcher prints on stderr before starting (what the user
    /// should know about how the policy was applied).
    pub notes: Vec<String>,
    /// `sbox shell` keeps one sandbox per project (filesystem.persist).
    pub persist_project: bool,
    /// The command is a shell session (`sbox shell`): SIGTERM, SIGHUP and
    /// SIGINT hang it up, as a closing terminal would, which a shell obeys.
    pub hangup: bool,
    /// The sandbox runs no command of its own and lives while `sbox exec`
    /// sessions are in it (`sbox shell -- CMD` starts the project's so).
    pub sessions: bool,
    /// How long the FUSE root's names and attributes are cached by the
    /// kernel (filesystem.host_cache): how stale a host change may look.
    pub host_cache: std::time::Duration,
    /// Landlock, seccomp and rlimits, checked against this kernel.
    #[serde(skip)]
    pub confinement: crate::confine::plan::Confinement,
    pub limits: crate::limits::Limits,
    /// How each limit is enforced.
    #[serde(skip)]
    pub limit_plan: crate::limits::LimitPlan,
    /// The delegated cgroup v2 the sandbox's cgroup goes under.
    pub cgroup_parent: Option<PathBuf>,
    /// The image the root comes from (`--image`, filesystem.image); None:
    /// the host's `/` (see `crate::image::run`).
    pub image: Option<crate::image::run::ImageRoot>,
}

/// Variables always passed from the caller's environment.
pub const DEFAULT_ENV: &[&str] = &[
    "TERM",
    "LANG",
    "LANGUAGE",
    "TZ",
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "COLORTERM",
];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Inputs of `build` that come from the host.
pub struct Context<'a> {
    pub caller: Caller,
    pub cwd: PathBuf,
    pub host_env: &'a [(String, String)],
    pub data_dir: PathBuf,
    /// The kernel's Landlock ABI (None: unavailable).
    pub landlock_abi: Option<u8>,
    /// Finds a delegated cgroup v2 with these controllers.
    pub cgroup_probe: fn(&[&str]) -> Option<PathBuf>,
    pub host_cpus: usize,
    /// The running kernel's (major, minor).
    pub kernel: (u32, u32),
}

/// Expand `~`, `$HOME`, `$PWD`, `$USER`, `$XDG_*` and `$SBOX_DATA` at the
/// start of or anywhere in a path-like string.
pub fn expand(s: &str, ctx: &Context) -> Result<String> {
    let home = ctx.caller.home.to_string_lossy().into_owned();
    let mut out = if s == "~" {
        home.clone()
    } else if let Some(rest) = s.strip_prefix("~/") {
        format!("{home}/{rest}")
    } else {
        s.to_string()
    };
    let mut result = String::new();
    let mut rest = out.as_str();
    while let Some(i) = rest.find('$') {
        result.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, tail) = if let Some(b) = after.strip_prefix('{') {
            let end = b
                .find('}')
                .ok_or_else(|| Error::Usage(format!("unterminated ${{ in {s:?}")))?;
            (&b[..end], &b[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        let value = match name {
            "HOME" => home.clone(),
            "PWD" => ctx.cwd.to_string_lossy().into_owned(),
            "USER" => ctx.caller.name.clone(),
            "SBOX_DATA" => ctx.data_dir.to_string_lossy().into_owned(),
            n if n.starts_with("XDG_") => host_var(ctx, n)
                .or_else(|| xdg_default(n, &home))
                .ok_or_else(|| Error::Usage(format!("{n} is not set (in {s:?})")))?,
            n => {
                return Err(Error::Usage(format!(
                "unknown variable ${n} in {s:?} (known: ~, $HOME, $PWD, $USER, $XDG_*, $SBOX_DATA)"
            )))
            }
        };
        result.push_str(&value);
        rest = tail;
    }
    result.push_str(rest);
    out = result;
    Ok(out)
}

fn host_var(ctx: &Context, name: &str) -> Option<String> {
    ctx.host_env
        .iter()
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.clone())
}

fn xdg_default(name: &str, home: &str) -> Option<String> {
    Some(match name {
        "XDG_CONFIG_HOME" => format!("{home}/.config"),
        "XDG_DATA_HOME" => format!("{home}/.local/share"),
        "XDG_CACHE_HOME" => format!("{home}/.cache"),
        "XDG_STATE_HOME" => format!("{home}/.local/state"),
        _ => return None,
    })
}

/// Make an absolute path lexically clean (no `.`, `..` or double slashes).
pub fn clean_absolute(p: &str, what: &str) -> Result<PathBuf> {
    if p.is_empty() {
        return Err(Error::Usage(format!("{what}: empty path")));
    }
    let path = Path::new(p);
    if !path.is_absolute() {
        return Err(Error::Usage(format!(
            "{what}: {p:?} is not an absolute path"
        )));
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// A destination inside the sandbox: absolute, and without `..` (a `..`
/// there would be resolved against whatever the new root holds).
pub fn clean_destination(p: &str, what: &str) -> Result<PathBuf> {
    if Path::new(p)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(Error::Usage(format!(
            "{what} {p:?}: \"..\" is not allowed in a destination"
        )));
    }
    clean_absolute(p, what)
}

/// Resolve a host path by the rule of `crate::hostpath`: beneath the
/// project when it is written inside it (a symlink there may not lead out),
/// else following the user's own symlinks once. The result is canonical.
pub fn resolve_host_path(path: &Path, project: &Path, what: &str) -> Result<PathBuf> {
    if path.starts_with(project) {
        let r = crate::hostpath::resolve_beneath(project, path)
            .map_err(|e| Error::Usage(format!("{what}: {e}")))?;
        if !r.exists {
            return Err(Error::path(
                path,
                format!("{what}: No such file or directory"),
            ));
        }
        return Ok(r.path);
    }
    std::fs::canonicalize(path).map_err(|e| Error::path(path, format!("{what}: {}", io_reason(&e))))
}

/// Parse `SRC[:DEST]`: SRC must exist on the host; DEST defaults to SRC.
pub fn parse_bind(spec: &str, readonly: bool, what: &str, ctx: &Context) -> Result<Bind> {
    let expanded = expand(spec, ctx)?;
    let (src, dest) = match expanded.split_once(':') {
        Some((s, d)) => (s.to_string(), Some(d.to_string())),
        None => (expanded.clone(), None),
    };
    let src_clean = clean_absolute(&src, what)?;
    let src_real = resolve_host_path(&src_clean, &ctx.cwd, what)?;
    let dest = match dest {
        Some(d) => clean_destination(&d, what)?,
        None => {
            if Path::new(&src)
                .components()
                .any(|c| matches!(c, Component::ParentDir))
            {
                return Err(Error::Usage(format!(
                    "{what} {spec}: \"..\" is not allowed in a destination (give SRC:DEST)"
                )));
            }
            src_clean
        }
    };
    if dest == Path::new("/") {
        return Err(Error::Usage(format!(
            "{what} {spec}: cannot bind over / (the root is the overlay)"
        )));
    }
    Ok(Bind {
        src: src_real,
        dest,
        readonly,
    })
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !h.starts_with('-')
}

fn valid_env_key(k: &str) -> bool {
    !k.is_empty() && !k.contains('=') && !k.contains('\0')
}

/// Build the environment the command starts with.
fn build_env(
    profile: &ProfileFile,
    ov: &Overrides,
    ctx: &Context,
) -> Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    let pass = |env: &mut BTreeMap<String, String>, key: &str| {
        if let Some((k, v)) = ctx.host_env.iter().find(|(k, _)| k == key) {
            env.insert(k.clone(), v.clone());
        }
    };
    for k in DEFAULT_ENV {
        pass(&mut env, k);
    }
    for (k, v) in ctx.host_env {
        if k.starts_with("LC_") {
            env.insert(k.clone(), v.clone());
        }
    }
    for k in &profile.environment.pass {
        if !valid_env_key(k) {
            return Err(Error::Usage(format!(
                "environment.pass: invalid name {k:?}"
            )));
        }
        pass(&mut env, k);
    }
    for k in &ov.keep_env {
        if !valid_env_key(k) {
            return Err(Error::Usage(format!("--keep-env: invalid name {k:?}")));
        }
        pass(&mut env, k);
    }
    for k in &profile.environment.unset {
        env.remove(k);
    }
    for (k, v) in &profile.environment.set {
        if !valid_env_key(k) {
            return Err(Error::Usage(format!("environment.set: invalid name {k:?}")));
        }
        env.insert(k.clone(), expand(v, ctx)?);
    }
    for kv in &ov.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Error::Usage(format!("--env {kv:?}: expected KEY=VALUE")))?;
        if !valid_env_key(k) {
            return Err(Error::Usage(format!("--env {kv:?}: invalid name")));
        }
        env.insert(k.to_string(), v.to_string());
    }
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.to_string());
    env.entry("HOME".into())
        .or_insert_with(|| ctx.caller.home.to_string_lossy().into_owned());
    Ok(env)
}

/// Turn a profile and the command line into a validated policy.
pub fn build(
    profile_name: &str,
    profile: &ProfileFile,
    ov: &Overrides,
    argv: Vec<String>,
    tty: bool,
    ctx: &Context,
) -> Result<Policy> {
    use crate::profile::schema::{HomeProject, Persist, ProjectMode};
    let fs = &profile.filesystem;
    let backend = match ov.overlay.as_deref() {
        Some(s) => Backend::parse_for("--overlay", s).map_err(Error::Usage)?,
        None => fs.overlay.unwrap_or(Backend::Fuse),
    };
    let egress = build_egress(profile, ov)?;
    let net = match (ov.net.as_deref(), &egress) {
        (Some(s), _) => NetMode::parse_for("--net", s).map_err(Error::Usage)?,
        (None, Some(_)) => NetMode::None,
        (None, None) => profile.network.mode.unwrap_or(NetMode::None),
    };
    let mut publish = Vec::new();
    for p in profile.network.publish.iter().chain(&ov.publish) {
        publish.push(crate::net::parse_publish(p)?);
    }
    let allow_host_loopback =
        ov.allow_host_loopback || profile.network.allow_host_loopback.unwrap_or(false);
    if net != NetMode::User && !publish.is_empty() {
        return Err(Error::Usage(
            "--publish needs --net user (with --net host the ports are the host's already)".into(),
        ));
    }
    if net != NetMode::User && allow_host_loopback {
        return Err(Error::Usage(
            "--allow-host-loopback needs --net user".into(),
        ));
    }
    let project = ctx.cwd.clone();
    // Hidden paths first: binds are checked against them.
    let mut hidden = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for h in &fs.hidden {
        let p = clean_absolute(&expand(h, ctx)?, "filesystem.hidden")?;
        if seen.insert(p.clone()) {
            hidden.push(p);
        }
    }
    let mut canon = crate::hostpath::CanonCache::default();
    let hidden_real: Vec<(PathBuf, PathBuf)> = hidden
        .iter()
        .map(|h| (h.clone(), canon.prefix(h).unwrap_or_else(|| h.clone())))
        .collect();
    let hidden_holding = |p: &Path| {
        hidden_real
            .iter()
            .find(|(h, c)| p.starts_with(h) || p.starts_with(c))
            .map(|(h, _)| h.clone())
    };
    let project_mode = fs.project.unwrap_or(ProjectMode::Rw);
    if project_mode != ProjectMode::None {
        if let Some(h) = hidden_holding(&project) {
            return Err(Error::Usage(format!(
                "the project directory {} is inside the hidden path {}: sbox will not expose it",
                project.display(),
                h.display()
            )));
        }
    }
    let mut notes = Vec::new();
    let home = std::fs::canonicalize(&ctx.caller.home).unwrap_or_else(|_| ctx.caller.home.clone());
    let home_like = project_mode != ProjectMode::None && home.starts_with(&project);
    let bind_project = if home_like {
        match fs.home_project.unwrap_or(HomeProject::Refuse) {
            HomeProject::Refuse => {
                return Err(Error::Usage(format!(
                    "{} {} your home directory: the {profile_name} profile runs in a project directory — cd into one (or use --profile dev)",
                    project.display(),
                    if project == home { "is" } else { "contains" }
                )))
            }
            HomeProject::Bind => {
                notes.push(format!(
                    "{} {} your home directory and is bound read-write (filesystem.home_project = \"bind\"): your shell start-up files are writable from the sandbox",
                    project.display(),
                    if project == home { "is" } else { "contains" }
                ));
                true
            }
            HomeProject::Overlay => {
                notes.push(format!(
                    "{} {} your home directory, so it is not bound read-write: changes there stay in the sandbox (see `sbox diff`)",
                    project.display(),
                    if project == home { "is" } else { "contains" }
                ));
                false
            }
        }
    } else {
        true
    };
    let mut binds = Vec::new();
    match project_mode {
        ProjectMode::Rw | ProjectMode::Ro if !bind_project => {}
        ProjectMode::Rw | ProjectMode::Ro => binds.push(Bind {
            src: project.clone(),
            dest: project.clone(),
            readonly: project_mode == ProjectMode::Ro,
        }),
        ProjectMode::None => {}
    }
    let mut extra = Vec::new();
    for (list, readonly, what) in [
        (&fs.bind, false, "filesystem.bind"),
        (&fs.ro_bind, true, "filesystem.ro_bind"),
        (&ov.bind, false, "--bind"),
        (&ov.ro_bind, true, "--ro-bind"),
    ] {
        for b in list {
            // `?SRC[:DEST]`: optional, skipped when SRC does not exist.
            if let Some(spec) = b.strip_prefix('?') {
                let src = expand(spec, ctx)?;
                let src = src.split_once(':').map_or(&*src, |(s, _)| s);
                let missing = std::fs::metadata(clean_absolute(src, what)?).is_err_and(|e| {
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                    )
                });
                if missing {
                    if ov.verbose {
                        notes.push(format!("{what} {b}: {src} does not exist, not bound"));
                    }
                    continue;
                }
                extra.push((parse_bind(spec, readonly, what, ctx)?, b));
            } else {
                extra.push((parse_bind(b, readonly, what, ctx)?, b));
            }
        }
    }
    for (b, spec) in extra {
        if let Some(h) = hidden_holding(&b.src) {
            return Err(Error::Usage(format!(
                "bind {spec}: {} is inside the hidden path {} (a profile that does not hide it can bind it)",
                b.src.display(),
                h.display()
            )));
        }
        binds.push(b);
    }
    let output = match &fs.output {
        Some(o) => {
            let out = clean_absolute(&expand(o, ctx)?, "filesystem.output")?;
            if !out.starts_with(&project) || out == project {
                return Err(Error::Usage(format!(
                    "filesystem.output {}: must be a directory inside the project",
                    out.display()
                )));
            }
            let r = crate::hostpath::resolve_beneath(&project, &out)
                .map_err(|e| Error::Usage(format!("filesystem.output: {e}")))?;
            if r.path == project {
                return Err(Error::Usage(format!(
                    "filesystem.output {}: resolves to the project itself",
                    out.display()
                )));
            }
            binds.push(Bind {
                src: r.path.clone(),
                dest: r.path.clone(),
                readonly: false,
            });
            Some(r.path)
        }
        None => None,
    };
    let mut tmpfs = Vec::new();
    for t in fs.tmpfs.iter().chain(&ov.tmpfs) {
        let p = clean_destination(&expand(t, ctx)?, "--tmpfs")?;
        if p == Path::new("/") {
            return Err(Error::Usage("--tmpfs /: cannot replace the root".into()));
        }
        tmpfs.push(p);
    }
    let mut dests: Vec<&Path> = Vec::new();
    for d in binds
        .iter()
        .map(|b| b.dest.as_path())
        .chain(tmpfs.iter().map(PathBuf::as_path))
    {
        if dests.contains(&d) {
            return Err(Error::Usage(format!(
                "{} is given twice as a mount destination (bind, output or tmpfs)",
                d.display()
            )));
        }
        dests.push(d);
    }
    let hostname = ov
        .hostname
        .clone()
        .or_else(|| profile.process.hostname.clone())
        .unwrap_or_else(|| "sbox".into());
    if !valid_hostname(&hostname) {
        return Err(Error::Usage(format!(
            "invalid hostname {hostname:?} (letters, digits, '-', '.'; at most 64)"
        )));
    }
    let chdir = match &ov.chdir {
        Some(d) => clean_absolute(&expand(d, ctx)?, "--chdir")?,
        None => project.clone(),
    };
    let env = build_env(profile, ov, ctx)?;
    if argv.is_empty() || argv[0].is_empty() {
        return Err(Error::Usage("no command given".into()));
    }
    let expand_path = |s: &str| clean_absolute(&expand(s, ctx)?, "landlock");
    let mut confinement =
        crate::confine::plan::build(profile, &expand_path, ov.log_denials, ctx.landlock_abi)?;
    let limits = build_limits(profile, ov)?;
    let need = crate::limits::controllers_for(&limits);
    let cgroup_parent = if need.is_empty() {
        None
    } else {
        (ctx.cgroup_probe)(&need)
    };
    let nested = crate::limits::nested_pids_unavailable(ctx.kernel, ctx.caller.uid);
    let limit_plan = crate::limits::build_limit_plan(
        &limits,
        cgroup_parent.is_some(),
        ctx.host_cpus,
        nested.as_deref(),
    )?;
    for (r, v) in &limit_plan.rlimits {
        confinement.rlimits.retain(|(x, _)| x != r);
        confinement.rlimits.push((*r, *v));
    }
    Ok(Policy {
        profile: profile_name.to_string(),
        argv,
        tty,
        caller: ctx.caller.clone(),
        project,
        binds,
        output,
        tmpfs,
        hidden_canonical: hidden_real.iter().cloned().collect(),
        host_found: canon.into_found(),
        hidden,
        backend,
        net,
        publish,
        allow_host_loopback,
        egress,
        hostname,
        chdir,
        env,
        map_user: ov.map_user,
        verbose: ov.verbose,
        log_denials: ov.log_denials,
        new_session: tty || profile.process.new_session.unwrap_or(true),
        notes,
        persist_project: fs.persist == Some(Persist::Project),
        hangup: false,
        sessions: false,
        host_cache: host_cache(fs.host_cache.as_deref())?,
        confinement,
        limits,
        limit_plan,
        cgroup_parent,
        image: None,
    })
}

/// The egress plan: the profile's `network.allow` and `--allow-net`. An
/// explicit `--net` on the command line sets the network instead of the
/// profile's list (given together with `--allow-net`, it is an error).
fn build_egress(profile: &ProfileFile, ov: &Overrides) -> Result<Option<crate::egress::Egress>> {
    if let Some(n) = ov.net.as_deref() {
        if !ov.allow_net.is_empty() {
            return Err(Error::Usage(format!(
                "--allow-net and --net {n} do not go together (--allow-net gives the sandbox its own network with only the names listed)"
            )));
        }
        if !ov.add_host.is_empty() {
            return Err(Error::Usage(
                "--add-host goes with --allow-net, not --net".into(),
            ));
        }
        return Ok(None);
    }
    let mut allow = Vec::new();
    for a in &profile.network.allow {
        allow.extend(crate::egress::parse_allow(a, "network.allow")?);
    }
    for a in &ov.allow_net {
        allow.extend(crate::egress::parse_allow(a, "--allow-net")?);
    }
    let mut hosts = Vec::new();
    for h in profile.network.add_host.iter().chain(&ov.add_host) {
        hosts.push(crate::egress::parse_add_host(h)?);
    }
    if allow.is_empty() {
        if !hosts.is_empty() {
            return Err(Error::Usage(
                "--add-host needs --allow-net (the name must be allowed to be reached)".into(),
            ));
        }
        return Ok(None);
    }
    Ok(Some(crate::egress::Egress { allow, hosts }))
}

/// Default of `filesystem.host_cache`, in seconds.
pub const DEFAULT_HOST_CACHE_SECS: u64 = 10;
/// Longest `filesystem.host_cache`.
pub const MAX_HOST_CACHE_SECS: u64 = 3600;

fn host_cache(v: Option<&str>) -> Result<std::time::Duration> {
    let Some(s) = v else {
        return Ok(std::time::Duration::from_secs(DEFAULT_HOST_CACHE_SECS));
    };
    let bad = || {
        Error::Usage(format!(
            "filesystem.host_cache: {s:?} (expected a duration from 0 to 1h, e.g. \"10s\")"
        ))
    };
    if matches!(s.trim(), "0" | "0s" | "0ms") {
        return Ok(std::time::Duration::ZERO);
    }
    let d = crate::limits::parse_duration(s).map_err(|_| bad())?;
    if d > std::time::Duration::from_secs(MAX_HOST_CACHE_SECS) {
        return Err(bad());
    }
    Ok(d)
}

fn build_limits(profile: &ProfileFile, ov: &Overrides) -> Result<crate::limits::Limits> {
    use crate::limits::{parse_duration, parse_size};
    let p = &profile.process;
    let memory = match ov.memory.as_ref().or(p.memory.as_ref()) {
        Some(s) => Some(parse_size(s)?),
        None => None,
    };
    let timeout = match ov.timeout.as_ref().or(p.timeout.as_ref()) {
        Some(s) => Some(parse_duration(s)?),
        None => None,
    };
    let pids = ov.pids.or(p.pids);
    if pids.is_some_and(|n| n < 2) {
        return Err(Error::Usage(
            "--pids must be at least 2 (the sandbox's init counts as one)".into(),
        ));
    }
    let cpus = ov.cpus.or(p.cpus);
    if cpus.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
        return Err(Error::Usage("--cpus must be a positive number".into()));
    }
    if ov.nofile == Some(0) {
        return Err(Error::Usage("--nofile must be at least 1".into()));
    }
    Ok(crate::limits::Limits {
        memory,
        pids,
        cpus,
        nofile: ov.nofile,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(env: &[(String, String)]) -> Context<'_> {
        Context {
            caller: Caller {
                uid: 1000,
                gid: 1000,
                name: "u".into(),
                home: "/home/u".into(),
                shell: None,
            },
            cwd: "/home/u/proj".into(),
            host_env: env,
            data_dir: "/home/u/.local/share/sbox".into(),
            landlock_abi: Some(6),
            cgroup_probe: |_| None,
            host_cpus: 2,
            kernel: (6, 18),
        }
    }

    #[test]
    fn expands_variables() {
        let c = ctx(&[]);
        assert_eq!(expand("~/.ssh", &c).expect("x"), "/home/u/.ssh");
        assert_eq!(expand("$PWD/out", &c).expect("x"), "/home/u/proj/out");
        assert_eq!(
            expand("${XDG_CONFIG_HOME}/gh", &c).expect("x"),
            "/home/u/.config/gh"
        );
        assert_eq!(
            expand("$SBOX_DATA/x", &c).expect("x"),
            "/home/u/.local/share/sbox/x"
        );
        assert!(expand("$NOPE/x", &c).is_err());
    }

    #[test]
    fn host_cache_window() {
        use std::time::Duration;
        assert_eq!(
            host_cache(None).expect("default"),
            Duration::from_secs(DEFAULT_HOST_CACHE_SECS)
        );
        assert_eq!(host_cache(Some("0")).expect("0"), Duration::ZERO);
        assert_eq!(
            host_cache(Some("500ms")).expect("ms"),
            Duration::from_millis(500)
        );
        assert_eq!(
            host_cache(Some("1h")).expect("1h"),
            Duration::from_secs(3600)
        );
        for bad in ["1h1s", "soon", "", "-1s"] {
            let e = host_cache(Some(bad)).expect_err(bad).to_string();
            assert!(e.contains("filesystem.host_cache"), "{e}");
        }
    }

    #[test]
    fn cleans_paths() {
        assert_eq!(
            clean_absolute("/a/./b/../c//d", "t").expect("x"),
            Path::new("/a/c/d")
        );
        assert!(clean_absolute("rel", "t").is_err());
        assert!(clean_absolute("", "t").is_err());
    }

    #[test]
    fn env_is_an_allow_list() {
        let host = vec![
            ("PATH".to_string(), "/bin".to_string()),
            ("SSH_AUTH_SOCK".to_string(), "/tmp/agent".to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), "x".to_string()),
            ("LC_ALL".to_string(), "C".to_string()),
            ("FOO".to_string(), "1".to_string()),
        ];
        let c = ctx(&host);
        let ov = Overrides {
            keep_env: vec!["FOO".into()],
            env: vec!["BAR=2".into()],
            ..Default::default()
        };
        let env = build_env(&ProfileFile::default(), &ov, &c).expect("env");
        assert_eq!(env.get("PATH").map(String::as_str), Some("/bin"));
        assert_eq!(env.get("LC_ALL").map(String::as_str), Some("C"));
        assert_eq!(env.get("FOO").map(String::as_str), Some("1"));
        assert_eq!(env.get("BAR").map(String::as_str), Some("2"));
        assert!(!env.contains_key("SSH_AUTH_SOCK"));
        assert!(!env.contains_key("AWS_SECRET_ACCESS_KEY"));
        let bad = Overrides {
            env: vec!["NOEQUALS".into()],
            ..Default::default()
        };
        assert!(build_env(&ProfileFile::default(), &bad, &c).is_err());
    }

    #[test]
    fn binds_are_validated() {
        let c = ctx(&[]);
        assert!(parse_bind("/does/not/exist", false, "--bind", &c).is_err());
        assert!(parse_bind("relative", false, "--bind", &c).is_err());
        assert!(parse_bind("", false, "--bind", &c).is_err());
        assert!(parse_bind("/tmp:/", false, "--bind", &c).is_err());
        assert!(parse_bind("/tmp:/tmp/../etc/x", false, "--bind", &c).is_err());
        assert!(parse_bind("/tmp/../tmp", false, "--bind", &c).is_err());
        let b = parse_bind("/tmp:/mnt/x/./y", true, "--bind", &c).expect("bind");
        assert_eq!(b.dest, Path::new("/mnt/x/y"));
        assert!(b.readonly);
    }

    #[test]
    fn project_inside_hidden_path_is_refused() {
        let mut c = ctx(&[]);
        c.cwd = "/home/u/.ssh/keys".into();
        let mut p = ProfileFile::default();
        p.filesystem.hidden.push("~/.ssh".into());
        let e = build(
            "t",
            &p,
            &Overrides::default(),
            vec!["true".into()],
            false,
            &c,
        )
        .expect_err("hidden");
        assert!(e.to_string().contains("hidden path"), "{e}");
    }

    #[test]
    fn profile_pids_limits_the_whole_sandbox_or_is_refused() {
        let mut p = ProfileFile::default();
        p.process.pids = Some(64);
        p.process.rlimits.insert("nproc".into(), 100_000);
        let run = |c: &Context| {
            build(
                "t",
                &p,
                &Overrides::default(),
                vec!["true".into()],
                false,
                c,
            )
        };
        let mut c = ctx(&[]);
        let pol = run(&c).expect("nested");
        assert_eq!(pol.limit_plan.nested_pids, Some(64));
        // The payload could not raise its RLIMIT_NPROC above init's.
        let nproc: Vec<_> = pol
            .confinement
            .rlimits
            .iter()
            .filter(|(r, _)| *r == crate::confine::plan::Rlimit::Nproc)
            .collect();
        assert_eq!(nproc, [&(crate::confine::plan::Rlimit::Nproc, 64)]);
        c.cgroup_probe = |_| Some("/sys/fs/cgroup/user".into());
        let pol = run(&c).expect("cgroup");
        assert_eq!(pol.limit_plan.nested_pids, None);
        assert!(pol.limit_plan.cgroup.contains(&("pids.max", "64".into())));
        c.cgroup_probe = |_| None;
        c.kernel = (5, 10);
        let e = run(&c).expect_err("refused").to_string();
        assert!(
            e.contains("process.pids") && e.contains("Delegate=yes"),
            "{e}"
        );
    }
}
