//! From a profile's [landlock], [seccomp], [network] port lists and
//! [process] rlimits to what the payload installs. Building is pure and
//! happens in the launcher, so a profile the host cannot honour fails
//! before anything is created.

use super::landlock::{build_landlock_plan, LandlockPlan, LandlockSpec};
use super::seccomp::{build_filter, native_arch, Action, SeccompSpec};
use crate::error::{Error, Result};
use crate::profile::ProfileFile;
use std::path::PathBuf;

/// Everything the payload applies right before execve.
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    pub landlock: Option<LandlockRules>,
    pub seccomp: Option<SeccompRules>,
    pub rlimits: Vec<(Rlimit, u64)>,
}

#[derive(Debug, Clone)]
pub struct LandlockRules {
    pub spec: LandlockSpec,
    pub plan: LandlockPlan,
}

#[derive(Debug, Clone)]
pub struct SeccompRules {
    pub spec: SeccompSpec,
    pub program: seccompiler::BpfProgram,
    /// EPERM denials (and, with --log-denials, watched calls) go to a
    /// user-notification listener that init answers.
    pub notify: bool,
}

/// The resource limits a profile may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rlimit {
    Nofile,
    Nproc,
    As,
    Data,
    Fsize,
    Cpu,
    Core,
    Stack,
    Memlock,
}

impl Rlimit {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "nofile" => Rlimit::Nofile,
            "nproc" => Rlimit::Nproc,
            "as" => Rlimit::As,
            "data" => Rlimit::Data,
            "fsize" => Rlimit::Fsize,
            "cpu" => Rlimit::Cpu,
            "core" => Rlimit::Core,
            "stack" => Rlimit::Stack,
            "memlock" => Rlimit::Memlock,
            _ => return None,
        })
    }

    pub fn resource(self) -> nix::sys::resource::Resource {
        use nix::sys::resource::Resource as R;
        match self {
            Rlimit::Nofile => R::RLIMIT_NOFILE,
            Rlimit::Nproc => R::RLIMIT_NPROC,
            Rlimit::As => R::RLIMIT_AS,
            Rlimit::Data => R::RLIMIT_DATA,
            Rlimit::Fsize => R::RLIMIT_FSIZE,
            Rlimit::Cpu => R::RLIMIT_CPU,
            Rlimit::Core => R::RLIMIT_CORE,
            Rlimit::Stack => R::RLIMIT_STACK,
            Rlimit::Memlock => R::RLIMIT_MEMLOCK,
        }
    }
}

fn err(e: super::ConfineError) -> Error {
    Error::Confine(e.to_string())
}

/// Build the Landlock spec from the profile; `expand` turns profile paths
/// (with ~, $PWD…) into absolute paths inside the sandbox.
pub fn build_landlock_spec(
    p: &ProfileFile,
    expand: &dyn Fn(&str) -> Result<PathBuf>,
) -> Result<Option<LandlockSpec>> {
    let l = &p.landlock;
    if l.enabled == Some(false) {
        return Ok(None);
    }
    let paths = |v: &[String]| -> Result<Vec<PathBuf>> { v.iter().map(|s| expand(s)).collect() };
    let (mut read_exec, read, mut write) = (paths(&l.execute)?, paths(&l.read)?, paths(&l.write)?);
    if read_exec.is_empty() && read.is_empty() && write.is_empty() {
        // No file-system rules given: do not restrict the file system.
        read_exec.push("/".into());
        write.push("/".into());
    }
    Ok(Some(LandlockSpec {
        read_exec,
        read,
        write,
        devices_ioctl: l.restrict_device_ioctl != Some(true),
        connect_tcp: p.network.allowed_connect_ports.clone(),
        bind_tcp: p.network.allowed_bind_ports.clone(),
        scope_abstract_unix: l.scope_abstract_unix.unwrap_or(true),
        scope_signals: l.scope_signals.unwrap_or(true),
        min_abi: l.min_abi.unwrap_or(1),
        best_effort: l.best_effort.unwrap_or(false),
    }))
}

/// Build the seccomp spec from the profile.
pub fn build_seccomp_spec(p: &ProfileFile, log_denials: bool) -> Result<Option<SeccompSpec>> {
    let s = &p.seccomp;
    if s.enabled == Some(false) {
        return Ok(None);
    }
    let allow_io_uring = s.io_uring == Some(crate::profile::schema::IoUring::Allow);
    let mut extra_deny: Vec<(String, Action)> = s
        .deny
        .iter()
        .map(|n| (n.clone(), Action::Errno(libc::EPERM)))
        .collect();
    extra_deny.extend(s.kill.iter().map(|n| (n.clone(), Action::Kill)));
    Ok(Some(SeccompSpec {
        allow_ptrace: s.allow_ptrace.unwrap_or(false),
        allow_userns: s.allow_userns.unwrap_or(false),
        allow_io_uring,
        extra_deny,
        extra_allow: s.allow.clone(),
        log_denials,
        ..SeccompSpec::default()
    }))
}

/// Build everything and check it against this kernel.
pub fn build(
    p: &ProfileFile,
    expand: &dyn Fn(&str) -> Result<PathBuf>,
    log_denials: bool,
    landlock_abi: Option<u8>,
) -> Result<Confinement> {
    let landlock = match build_landlock_spec(p, expand)? {
        Some(spec) => {
            let plan = build_landlock_plan(&spec, landlock_abi.unwrap_or(0)).map_err(err)?;
            Some(LandlockRules { spec, plan })
        }
        None => {
            if p.network.allowed_connect_ports.is_some() || p.network.allowed_bind_ports.is_some() {
                return Err(Error::Usage(
                    "network.allowed_*_ports need Landlock, which the profile turns off".into(),
                ));
            }
            None
        }
    };
    let seccomp = match build_seccomp_spec(p, log_denials)? {
        Some(mut spec) => {
            // --log-denials observes what Landlock and the network refuse.
            spec.watch = super::seccomp::Watch {
                paths: log_denials
                    && landlock.as_ref().is_some_and(|l| {
                        l.plan.enforce && !l.spec.write.iter().any(|w| w.as_os_str() == "/")
                    }),
                connect: log_denials,
            };
            let arch = native_arch().ok_or_else(|| {
                Error::Confine(
                    "seccomp: sbox has no system call table for this architecture".into(),
                )
            })?;
            // Refused calls always go to init, which counts them.
            let program = super::notify::build_notifying(
                &build_filter(&spec, arch).map_err(err)?,
                spec.default_errno,
            );
            Some(SeccompRules {
                spec,
                program,
                notify: true,
            })
        }
        None => None,
    };
    let mut rlimits = Vec::new();
    for (name, value) in &p.process.rlimits {
        let r = Rlimit::parse(name).ok_or_else(|| {
            Error::Usage(format!(
                "process.rlimits: unknown limit {name:?} (nofile, nproc, as, data, fsize, cpu, core, stack, memlock)"
            ))
        })?;
        rlimits.push((r, *value));
    }
    Ok(Confinement {
        landlock,
        seccomp,
        rlimits,
    })
}

impl Confinement {
    /// Lines for --verbose.
    pub fn describe(&self) -> Vec<String> {
        let mut v = Vec::new();
        match &self.landlock {
            Some(l) if l.plan.enforce => {
                let mut s = format!(
                    "landlock: ABI {}, {} path rules",
                    l.plan.kernel_abi,
                    l.plan.path_rules.len()
                );
                if let Some(p) = &l.plan.connect_tcp {
                    s.push_str(&format!(", tcp connect {p:?}"));
                }
                if let Some(p) = &l.plan.bind_tcp {
                    s.push_str(&format!(", tcp bind {p:?}"));
                }
                if !l.plan.scopes.is_empty() {
                    s.push_str(", scoped (signals/abstract sockets)");
                }
                if l.spec.best_effort {
                    s.push_str(" (best effort)");
                }
                v.push(s);
                for m in &l.plan.missing {
                    v.push(format!("landlock: not available: {m}"));
                }
            }
            Some(l) => v.push(format!(
                "landlock: NOT enforced (kernel ABI {}; best effort)",
                l.plan.kernel_abi
            )),
            None => v.push("landlock: off (profile)".into()),
        }
        match &self.seccomp {
            Some(s) => v.push(format!(
                "seccomp: deny-list filter, {} instructions{}{}",
                s.program.len(),
                if s.spec.allow_ptrace {
                    ", ptrace allowed"
                } else {
                    ""
                },
                if s.spec.allow_userns {
                    ", nested user namespaces allowed"
                } else {
                    ""
                }
            )),
            None => v.push("seccomp: off (profile)".into()),
        }
        if !self.rlimits.is_empty() {
            v.push(format!("rlimits: {:?}", self.rlimits));
        }
        v
    }
}
