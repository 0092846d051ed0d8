//! The TOML format of a profile file (`man 5 sbox-profile`).
//!
//! Every section and key is optional; unknown keys are errors. A file's
//! `include`s are applied first, in order, then the file itself: scalars
//! override, lists are extended, unless the file names a list in `replace`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    /// Who the profile is for, in one line.
    pub description: Option<String>,
    /// Profiles to start from, in order; this file's keys come last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Lists this file replaces instead of extending, as "section.key".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replace: Vec<String>,
    #[serde(default)]
    pub filesystem: FilesystemSection,
    #[serde(default)]
    pub environment: EnvironmentSection,
    #[serde(default)]
    pub network: NetworkSection,
    #[serde(default)]
    pub landlock: LandlockSection,
    #[serde(default)]
    pub seccomp: SeccompSection,
    #[serde(default)]
    pub process: ProcessSection,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemSection {
    /// Root backend: "fuse" (default), "kernel" or "none".
    pub overlay: Option<String>,
    /// How the project (current directory) is bound: "rw", "ro" or "none".
    pub project: Option<String>,
    /// Extra read-write binds, "SRC[:DEST]".
    #[serde(default)]
    pub bind: Vec<String>,
    /// Extra read-only binds, "SRC[:DEST]".
    #[serde(default)]
    pub ro_bind: Vec<String>,
    /// Fresh tmpfs mounts.
    #[serde(default)]
    pub tmpfs: Vec<String>,
    /// Paths that do not exist (or are empty) inside: secrets.
    #[serde(default)]
    pub hidden: Vec<String>,
    /// "project": `sbox shell` keeps the sandbox's changes outside the
    /// project between shells (one sandbox per project); "none" (default).
    pub persist: Option<String>,
    /// When the project directory is the home directory, or contains it
    /// (`/`, `/home`): "refuse" (default), "overlay" (the project is not
    /// bound; it is seen copy-on-write like the rest of the host) or "bind"
    /// (bound read-write like any project, start-up files included).
    pub home_project: Option<String>,
    /// A directory under the project bound read-write even when the
    /// project is read-only; created on the host if missing.
    pub output: Option<String>,
    /// How long the FUSE root's kernel cache may show a host file or
    /// directory as it was ("10s" by default; "0" asks the host every time).
    pub host_cache: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSection {
    /// Variables passed from the caller's environment, besides the defaults.
    #[serde(default)]
    pub pass: Vec<String>,
    /// Variables set inside.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Variables removed (also from the defaults).
    #[serde(default)]
    pub unset: Vec<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// "none", "host" or "user".
    pub mode: Option<String>,
    /// When set, TCP connections only to these ports (Landlock, ABI 4).
    pub allowed_connect_ports: Option<Vec<u16>>,
    /// When set, TCP binds only to these ports (Landlock, ABI 4).
    pub allowed_bind_ports: Option<Vec<u16>>,
    /// Ports published on the host with mode "user": "[IP:]HOSTPORT:PORT[/tcp|udp]".
    #[serde(default)]
    pub publish: Vec<String>,
    /// With mode "user": the host's loopback is reachable as host.sbox.internal.
    pub allow_host_loopback: Option<bool>,
    /// Egress by name: "HOST[:PORTS]" entries; any makes the sandbox's
    /// network these names only (see `crate::egress`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Names with a given address ("NAME:IP"), as `--add-host`.
    #[serde(default)]
    pub add_host: Vec<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LandlockSection {
    /// Apply Landlock at all (default true).
    pub enabled: Option<bool>,
    /// Go on when the kernel lacks what the rules need (default false).
    pub best_effort: Option<bool>,
    /// Refuse to start below this Landlock ABI version.
    pub min_abi: Option<u8>,
    /// Readable (files and directories), as paths inside the sandbox.
    #[serde(default)]
    pub read: Vec<String>,
    /// Readable and executable.
    #[serde(default)]
    pub execute: Vec<String>,
    /// Full access beneath (create, write, remove).
    #[serde(default)]
    pub write: Vec<String>,
    /// No signals to processes outside the sandbox (ABI 6).
    pub scope_signals: Option<bool>,
    /// No connections to abstract unix sockets outside (ABI 6).
    pub scope_abstract_unix: Option<bool>,
    /// Deny ioctls on device files opened inside (ABI 5); terminals
    /// inherited at start keep working.
    pub restrict_device_ioctl: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeccompSection {
    /// Apply the filter at all (default true).
    pub enabled: Option<bool>,
    /// More calls to deny with EPERM.
    #[serde(default)]
    pub deny: Vec<String>,
    /// More calls that kill the process (SIGSYS).
    #[serde(default)]
    pub kill: Vec<String>,
    /// Calls removed from the default deny list.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Allow ptrace and process_vm_* (debuggers).
    pub allow_ptrace: Option<bool>,
    /// Allow new user namespaces (nested sandboxes, rootless containers).
    pub allow_userns: Option<bool>,
    /// io_uring: "deny" (ENOSYS, callers fall back) or "allow".
    pub io_uring: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSection {
    /// Host name inside the sandbox.
    pub hostname: Option<String>,
    /// Shell for `sbox shell`.
    pub shell: Option<String>,
    /// Start the command in a new session (default true): it then has no
    /// controlling terminal it could push keystrokes into (TIOCSTI). false
    /// keeps the caller's session for `run` without a terminal of its own.
    pub new_session: Option<bool>,
    /// Resource limits (setrlimit), by name: nofile, nproc, as, data,
    /// fsize, cpu, core, stack, memlock.
    #[serde(default)]
    pub rlimits: BTreeMap<String, u64>,
    /// Memory of the sandbox ("512M", "2G").
    pub memory: Option<String>,
    /// Most processes at once.
    pub pids: Option<u64>,
    /// CPUs ("1.5").
    pub cpus: Option<f64>,
    /// Stop the sandbox after this long ("30s", "10m").
    pub timeout: Option<String>,
}

/// Where each value of a merged profile came from: "section.key" for
/// scalars, "section.key[item]" for list items.
pub type Provenance = BTreeMap<String, String>;

struct Merger<'a> {
    origin: &'a str,
    replace: &'a [String],
    prov: &'a mut Provenance,
}

impl Merger<'_> {
    fn scalar<T>(&mut self, key: &str, dst: &mut Option<T>, src: Option<T>) {
        if src.is_some() {
            *dst = src;
            self.prov.insert(key.to_string(), self.origin.to_string());
        }
    }

    fn list<T: PartialEq + std::fmt::Display>(&mut self, key: &str, dst: &mut Vec<T>, src: Vec<T>) {
        if self.replace.iter().any(|r| r == key) {
            dst.clear();
            self.prov.retain(|k, _| !k.starts_with(&format!("{key}[")));
            self.prov
                .insert(key.to_string(), format!("{} (replaced)", self.origin));
        }
        for s in src {
            if !dst.contains(&s) {
                self.prov
                    .insert(format!("{key}[{s}]"), self.origin.to_string());
                dst.push(s);
            }
        }
    }

    fn map<V>(&mut self, key: &str, dst: &mut BTreeMap<String, V>, src: BTreeMap<String, V>) {
        if self.replace.iter().any(|r| r == key) {
            dst.clear();
        }
        for (k, v) in src {
            self.prov
                .insert(format!("{key}.{k}"), self.origin.to_string());
            dst.insert(k, v);
        }
    }
}

/// Lists that `replace` may name.
pub const LISTS: &[&str] = &[
    "filesystem.bind",
    "filesystem.ro_bind",
    "filesystem.tmpfs",
    "filesystem.hidden",
    "environment.pass",
    "network.publish",
    "network.allow",
    "network.add_host",
    "environment.set",
    "environment.unset",
    "landlock.read",
    "landlock.execute",
    "landlock.write",
    "seccomp.deny",
    "seccomp.kill",
    "seccomp.allow",
    "process.rlimits",
];

impl ProfileFile {
    /// Lay `later` (read from `origin`) over `self`.
    pub fn merge(&mut self, later: ProfileFile, origin: &str, prov: &mut Provenance) {
        let replace = later.replace.clone();
        let mut m = Merger {
            origin,
            replace: &replace,
            prov,
        };
        m.scalar("description", &mut self.description, later.description);
        let (f, l) = (&mut self.filesystem, later.filesystem);
        m.scalar("filesystem.overlay", &mut f.overlay, l.overlay);
        m.scalar("filesystem.project", &mut f.project, l.project);
        m.scalar("filesystem.output", &mut f.output, l.output);
        m.scalar(
            "filesystem.home_project",
            &mut f.home_project,
            l.home_project,
        );
        m.scalar("filesystem.persist", &mut f.persist, l.persist);
        m.scalar("filesystem.host_cache", &mut f.host_cache, l.host_cache);
        m.list("filesystem.bind", &mut f.bind, l.bind);
        m.list("filesystem.ro_bind", &mut f.ro_bind, l.ro_bind);
        m.list("filesystem.tmpfs", &mut f.tmpfs, l.tmpfs);
        m.list("filesystem.hidden", &mut f.hidden, l.hidden);
        let (e, l) = (&mut self.environment, later.environment);
        m.list("environment.pass", &mut e.pass, l.pass);
        m.map("environment.set", &mut e.set, l.set);
        m.list("environment.unset", &mut e.unset, l.unset);
        let (n, l) = (&mut self.network, later.network);
        m.scalar("network.mode", &mut n.mode, l.mode);
        m.list("network.publish", &mut n.publish, l.publish);
        m.list("network.allow", &mut n.allow, l.allow);
        m.list("network.add_host", &mut n.add_host, l.add_host);
        m.scalar(
            "network.allow_host_loopback",
            &mut n.allow_host_loopback,
            l.allow_host_loopback,
        );
        m.scalar(
            "network.allowed_connect_ports",
            &mut n.allowed_connect_ports,
            l.allowed_connect_ports,
        );
        m.scalar(
            "network.allowed_bind_ports",
            &mut n.allowed_bind_ports,
            l.allowed_bind_ports,
        );
        let (a, l) = (&mut self.landlock, later.landlock);
        m.scalar("landlock.enabled", &mut a.enabled, l.enabled);
        m.scalar("landlock.best_effort", &mut a.best_effort, l.best_effort);
        m.scalar("landlock.min_abi", &mut a.min_abi, l.min_abi);
        m.list("landlock.read", &mut a.read, l.read);
        m.list("landlock.execute", &mut a.execute, l.execute);
        m.list("landlock.write", &mut a.write, l.write);
        m.scalar(
            "landlock.scope_signals",
            &mut a.scope_signals,
            l.scope_signals,
        );
        m.scalar(
            "landlock.scope_abstract_unix",
            &mut a.scope_abstract_unix,
            l.scope_abstract_unix,
        );
        m.scalar(
            "landlock.restrict_device_ioctl",
            &mut a.restrict_device_ioctl,
            l.restrict_device_ioctl,
        );
        let (s, l) = (&mut self.seccomp, later.seccomp);
        m.scalar("seccomp.enabled", &mut s.enabled, l.enabled);
        m.list("seccomp.deny", &mut s.deny, l.deny);
        m.list("seccomp.kill", &mut s.kill, l.kill);
        m.list("seccomp.allow", &mut s.allow, l.allow);
        m.scalar("seccomp.allow_ptrace", &mut s.allow_ptrace, l.allow_ptrace);
        m.scalar("seccomp.allow_userns", &mut s.allow_userns, l.allow_userns);
        m.scalar("seccomp.io_uring", &mut s.io_uring, l.io_uring);
        let (p, l) = (&mut self.process, later.process);
        m.scalar("process.hostname", &mut p.hostname, l.hostname);
        m.scalar("process.shell", &mut p.shell, l.shell);
        m.scalar("process.new_session", &mut p.new_session, l.new_session);
        m.map("process.rlimits", &mut p.rlimits, l.rlimits);
        m.scalar("process.memory", &mut p.memory, l.memory);
        m.scalar("process.pids", &mut p.pids, l.pids);
        m.scalar("process.cpus", &mut p.cpus, l.cpus);
        m.scalar("process.timeout", &mut p.timeout, l.timeout);
    }

    /// Names in `replace` that are not lists.
    pub fn bad_replace(&self) -> Option<&str> {
        self.replace
            .iter()
            .find(|r| !LISTS.contains(&r.as_str()))
            .map(String::as_str)
    }
}
