//! Command-line interface: argument types (clap) and dispatch.

use crate::error::{Error, EXIT_SBOX_FAILED};
use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "sbox",
    version,
    about = "A rootless sandbox for developers",
    long_about = "sbox runs commands in a sandbox that looks like your own machine: you are root \
inside, the project directory is read-write, the rest of the host is seen copy-on-write, and \
your secrets (~/.ssh, ~/.aws, tokens…) are hidden. No root, no daemon.",
    after_help = "Exit status: the command's own; 128+N when it was killed by signal N; 125 when \
sbox itself failed (also for invalid option values); 126 when the command could not be executed; \
127 when it was not found; 124 when --timeout stopped it; 2 for a command line that does not parse."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a new sandbox and exit with its status
    #[command(
        after_help = "Examples:\n  sbox run -- npm install\n  sbox run --net none -- make test\n  sbox run --ro-bind ~/data:/data -- python3 train.py"
    )]
    Run(RunArgs),
    /// A login shell in the project's sandbox: one sandbox per project, kept between shells; joins it when it runs; `-- CMD` runs one command there
    #[command(
        after_help = "Without a terminal on stdin the shell reads its commands from stdin and ends at their end.\n\nExamples:\n  sbox shell\n  sbox shell -- go build ./...\n  sbox shell -c 'make && make test'"
    )]
    Shell(ShellArgs),
    /// Check what this host offers and how to fix what it lacks
    Doctor(DoctorArgs),
    /// List, show and check profiles
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Trust the project's .sbox.toml (pinned by its content hash)
    Trust(TrustArgs),
    /// List running sandboxes (with -a, stopped named ones too)
    Ps(PsArgs),
    /// Run a command inside a running named sandbox
    Exec(ExecArgs),
    /// Stop a running named sandbox (SIGTERM, then SIGKILL after the grace period)
    Stop(StopArgs),
    /// Start a stopped named sandbox again, in the background, with its stored upper layer
    Start(NameArg),
    /// Delete a stopped named sandbox and its stored changes
    Rm(RmArgs),
    /// Print the output of a detached sandbox
    Logs(NameArg),
    /// What a stored sandbox changed outside its bound directories (A added, C changed, D deleted)
    Diff(DiffArgs),
    /// Throw away what a stored sandbox changed
    Reset(ResetArgs),
    /// Copy selected changes of a stopped sandbox onto the host, after printing them
    Commit(CommitArgs),
    /// Print the completion script for a shell (bash, zsh or fish)
    #[command(
        after_help = "Installed by install.sh. By hand, e.g.:\n  sbox completions bash > ~/.local/share/bash-completion/completions/sbox"
    )]
    Completions(CompletionsArgs),
    /// Manage the images sandboxes can run on (`sbox run --image`)
    #[command(subcommand)]
    Image(crate::cmd::image::ImageCommand),
    /// Write a profile's policy for other tools: the seccomp filter as JSON (docker, podman, Kubernetes), or an OCI bundle (runc, crun)
    #[command(
        after_help = "Examples:\n  sbox export --seccomp sbox-seccomp.json\n  sbox export --oci bundle --profile dev -- make test"
    )]
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write the seccomp filter as a JSON seccomp profile to FILE (`-`: stdout)
    #[arg(long, value_name = "FILE", required_unless_present = "oci", conflicts_with_all = ["oci", "command"])]
    pub seccomp: Option<String>,
    /// Write an OCI runtime bundle (config.json, rootfs/) into DIR, which must be new or empty
    #[arg(long, value_name = "DIR", requires = "command")]
    pub oci: Option<std::path::PathBuf>,
    /// Profile to use: a name or a path to a .toml file (default: as for `sbox run`)
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// With --oci: the bundle's rootfs is a copy of this image's root (see `sbox image`)
    #[arg(long, value_name = "IMAGE", requires = "oci")]
    pub image: Option<String>,
    /// The command of the bundle (with --oci)
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: crate::cmd::completions::Shell,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
    /// Changes and bytes per directory, largest first, with a total
    #[arg(long)]
    pub stat: bool,
    /// Print straight to the terminal (without it, a terminal gets $PAGER, default `less -FRX`)
    #[arg(long)]
    pub no_pager: bool,
    /// The sandbox (default: the current project's); a NAME has no slash
    pub name: Option<String>,
    /// Only changes at or below these paths (absolute, as inside the sandbox)
    #[arg(value_name = "PATH")]
    pub paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// Do not ask, however much the sandbox holds (it asks above 100 MB)
    #[arg(long, short = 'f')]
    pub force: bool,
    /// The sandbox (default: the current project's)
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Only print what would be copied
    #[arg(long)]
    pub dry_run: bool,
    /// Make the sandbox's changes a new image NAME on top of its image instead (sandboxes made with --image)
    #[arg(long, value_name = "NAME", conflicts_with_all = ["dry_run", "paths"])]
    pub image: Option<String>,
    /// The sandbox
    pub name: String,
    /// Paths (as inside the sandbox) whose changes to copy
    #[arg(required_unless_present = "image", value_name = "PATH")]
    pub paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Also list stopped named sandboxes, with their size on disk
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
    /// Print only the names, one per line
    #[arg(long, conflicts_with = "json")]
    pub names: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep standard input attached
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Give the command a terminal
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Set an environment variable for the command
    #[arg(long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside (default: the sandbox's)
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workdir: Option<String>,
    /// The sandbox
    pub name: String,
    /// The command and its arguments
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL
    #[arg(long, short = 't', default_value_t = 10, value_name = "SECONDS")]
    pub time: u64,
    pub name: String,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Stop it first if it is running
    #[arg(long, short = 'f')]
    pub force: bool,
    pub name: String,
}

#[derive(Debug, Args)]
pub struct NameArg {
    pub name: String,
}

#[derive(Debug, Args)]
pub struct TrustArgs {
    /// Print what the file grants and how it differs from the default profile; change nothing
    #[arg(long)]
    pub show: bool,
    /// Confirm the extra access the file asks for without a prompt
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Forget the trust given to the file
    #[arg(long, conflicts_with_all = ["show", "yes"])]
    pub revoke: bool,
    /// The project directory (default: the current directory)
    #[arg(value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

/// Options shared by `run` and `shell`.
#[derive(Debug, Args, Clone, Default)]
pub struct SandboxOpts {
    /// Profile to use: a name (see `sbox profile list`) or a path to a .toml file
    /// (default: the project's trusted .sbox.toml, else "dev")
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Bind a host path read-write (DEST defaults to SRC)
    #[arg(long = "bind", value_name = "SRC[:DEST]")]
    pub bind: Vec<String>,
    /// Bind a host path read-only (DEST defaults to SRC)
    #[arg(long = "ro-bind", value_name = "SRC[:DEST]")]
    pub ro_bind: Vec<String>,
    /// Mount a fresh tmpfs at DEST
    #[arg(long, value_name = "DEST")]
    pub tmpfs: Vec<String>,
    /// Working directory inside (default: the current directory)
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<String>,
    /// Set an environment variable inside
    #[arg(long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Pass an environment variable of the caller through
    #[arg(long = "keep-env", value_name = "KEY")]
    pub keep_env: Vec<String>,
    /// Host name inside (default: from the profile, else "sbox")
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Network: "none" (own namespace, loopback only), "host", or "user" (own namespace with a user-mode stack: outbound yes, host loopback no)
    #[arg(long, value_name = "MODE", value_parser = ["none", "host", "user"])]
    pub net: Option<String>,
    /// Publish a sandbox port on the host (--net user), like docker run -p; IP defaults to 127.0.0.1
    #[arg(
        short = 'p',
        long = "publish",
        value_name = "[IP:]HOSTPORT:PORT[/tcp|udp]"
    )]
    pub publish: Vec<String>,
    /// With --net user: reach the host's loopback services as host.sbox.internal
    #[arg(long = "allow-host-loopback")]
    pub allow_host_loopback: bool,
    /// Own network with only these names reachable (TCP, any client, no proxy): HOST[:PORTS], *.DOMAIN, ports 80,443 by default, `private` to allow a private address; host.sbox.internal:PORT is the host's loopback
    #[arg(long = "allow-net", value_name = "HOST[:PORTS]")]
    pub allow_net: Vec<String>,
    /// With --allow-net: NAME is at IP (on the host side; NAME still needs --allow-net)
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_host: Vec<String>,
    /// Memory limit (e.g. 512M, 2G): cgroup v2 memory.max, else RLIMIT_AS per process
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Most processes and threads in the sandbox, init included: cgroup v2
    /// pids.max, else RLIMIT_NPROC of a nested user namespace
    #[arg(long, value_name = "N", alias = "pids-limit")]
    pub pids: Option<u64>,
    /// CPUs (e.g. 1.5): cgroup v2 cpu.max, else CPU affinity
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Most open files per process (RLIMIT_NOFILE)
    #[arg(long, value_name = "N")]
    pub nofile: Option<u64>,
    /// Stop the sandbox after this long (e.g. 30s, 10m); exit status 124
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Root filesystem backend: "fuse" (sbox's overlay, root can change anything copy-on-write), "kernel" (overlayfs; root-owned host files stay read-only) or "none" (host read-only)
    #[arg(long, value_name = "BACKEND", value_parser = ["fuse", "kernel", "none"])]
    pub overlay: Option<String>,
    /// Keep your own uid/gid inside instead of root
    #[arg(long = "map-user")]
    pub map_user: bool,
    /// Print each step and which layers are in force
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Run on an image's root instead of the host's (a name or id; see `sbox image`)
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// On an image's root: run as this user of the image instead of its User (NAME or UID, with :GROUP or :GID)
    #[arg(
        long,
        short = 'u',
        value_name = "USER[:GROUP]",
        conflicts_with = "map_user"
    )]
    pub user: Option<String>,
    /// `sbox run` on an image's root: run this program instead of the image's Entrypoint, without its Cmd ("" for none), as `docker run --entrypoint`
    #[arg(long, value_name = "PROGRAM")]
    pub entrypoint: Option<String>,
    /// Report what the confinement layers denied (on stderr, and a summary at exit)
    #[arg(long = "log-denials")]
    pub log_denials: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub opts: SandboxOpts,
    /// Give the command a terminal (a new pseudo-terminal relayed to yours)
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Name the sandbox: its changes outside the project are kept and reused by the next run of that name
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Run in the background and print the sandbox's name (output goes to `sbox logs NAME`)
    #[arg(long, short = 'd', conflicts_with = "tty")]
    pub detach: bool,
    /// The command and its arguments (with --image: after the image's Entrypoint; none: the image's Cmd)
    #[arg(
        required_unless_present = "image",
        trailing_var_arg = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    #[command(flatten)]
    pub opts: SandboxOpts,
    /// Run this command line with the login shell (SHELL -l -c STRING) and exit with its status
    #[arg(short = 'c', value_name = "STRING", conflicts_with = "command")]
    pub string: Option<String>,
    /// Run this command in the project's sandbox and exit with its status
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// List the profiles that can be used and where each comes from
    List {
        /// Print only the names, one per line
        #[arg(long)]
        names: bool,
    },
    /// Print a profile with its includes applied
    Show {
        /// Profile name or path to a .toml file
        name: String,
    },
    /// Check a profile file for errors
    Check {
        /// Path to the .toml file
        file: String,
    },
}

/// Parse the command line, run, and turn errors into a one-line message
/// and an exit status.
pub fn run() -> ExitCode {
    crate::sandbox::mark_start();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = e.exit_code();
            let _ = e.print();
            return ExitCode::from(code.clamp(0, 255) as u8);
        }
    };
    // Commands that only print end quietly when their reader goes away
    // (`sbox ps | head`), like other Unix tools. The sandbox commands keep
    // SIGPIPE ignored: the launcher must survive a closed pipe.
    if !matches!(
        cli.command,
        Command::Run(_) | Command::Shell(_) | Command::Exec(_)
    ) {
        crate::sys::default_sigpipe();
    }
    let result = match cli.command {
        Command::Run(a) => crate::cmd::run::run(a.opts, a.command, a.tty, a.name, a.detach),
        Command::Shell(a) => crate::cmd::run::shell(a.opts, a.command, a.string),
        Command::Doctor(a) => crate::cmd::doctor::run(a.json),
        Command::Profile(p) => crate::cmd::profile::run(p),
        Command::Trust(a) => crate::cmd::trust::run(a),
        Command::Ps(a) if a.names => crate::cmd::lifecycle::ps_names(a.all),
        Command::Ps(a) => crate::cmd::lifecycle::ps(a.all, a.json),
        Command::Exec(a) => crate::cmd::exec::run(a),
        Command::Stop(a) => crate::cmd::lifecycle::stop(&a.name, a.time),
        Command::Start(a) => crate::cmd::lifecycle::start(&a.name),
        Command::Rm(a) => crate::cmd::lifecycle::rm(&a.name, a.force),
        Command::Logs(a) => crate::cmd::lifecycle::logs(&a.name),
        Command::Diff(a) => crate::cmd::changes::diff(a),
        Command::Reset(a) => crate::cmd::changes::reset(a.name, a.force),
        Command::Commit(a) => match a.image {
            Some(image) => crate::cmd::image::commit(&a.name, &image),
            None => crate::cmd::changes::commit(a.name, a.paths, a.dry_run),
        },
        Command::Completions(a) => crate::cmd::completions::run(a.shell),
        Command::Export(a) => crate::cmd::export::run(a),
        Command::Image(c) => crate::cmd::image::run(c),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            report(&e);
            ExitCode::from(e.exit_code())
        }
    }
}

/// Print an error as one line on stderr.
pub fn report(e: &Error) {
    let msg = e.to_string().replace('\n', " ");
    eprintln!("sbox: error: {msg}");
    let _ = EXIT_SBOX_FAILED;
}
