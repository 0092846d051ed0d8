//! Confinement of the payload: Landlock (what it may touch) and seccomp (which
//! kernel calls it may make).
//!
//! `build_*` functions are pure and unit-tested; `install_*` functions act on
//! the calling process and are meant to run in the payload, right before
//! `execve`: Landlock first, then `PR_SET_NO_NEW_PRIVS`, then seccomp last.

pub mod landlock;
pub mod notify;
pub mod observe;
pub mod plan;
pub mod seccomp;
mod syscall_table;

use std::io;

/// Everything that can go wrong while building or installing a confinement layer.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("Landlock is unavailable on this kernel ({reason}); enable it with CONFIG_SECURITY_LANDLOCK=y and `lsm=landlock,...` on the kernel command line, or mark Landlock best-effort in the profile")]
    LandlockUnavailable { reason: String },

    #[error("Landlock {feature} needs ABI {needed}, but this kernel offers ABI {kernel}; upgrade the kernel or mark Landlock best-effort in the profile")]
    LandlockFeatureMissing {
        feature: String,
        needed: u8,
        kernel: u8,
    },

    #[error("invalid Landlock spec: {0}")]
    InvalidLandlockSpec(String),

    #[error("cannot build the Landlock ruleset")]
    LandlockRuleset(#[source] ::landlock::RulesetError),

    #[error("the kernel did not enforce the Landlock ruleset")]
    LandlockNotEnforced,

    #[error("unknown syscall name `{0}` in the seccomp profile")]
    UnknownSyscall(String),

    #[error(
        "syscall `{0}` appears twice in the seccomp profile (in deny and allow, or twice in deny)"
    )]
    ConflictingSyscall(String),

    #[error("invalid errno {0} for a seccomp rule (must be between 1 and 4095)")]
    InvalidErrno(i32),

    #[error("cannot compile the seccomp filter")]
    SeccompCompile(#[source] seccompiler::BackendError),

    #[error("sbox has no syscall table for {0}")]
    UnsupportedArch(&'static str),

    #[error("seccompiler produced a program of an unexpected shape ({0})")]
    UnexpectedFilterShape(&'static str),

    #[error("the seccomp filter has {0} instructions; the kernel accepts at most 4096")]
    FilterTooLong(usize),

    #[error("refusing to install an empty seccomp filter")]
    EmptyFilter,

    #[error("prctl(PR_SET_NO_NEW_PRIVS) failed")]
    NoNewPrivs(#[source] io::Error),

    #[error("seccomp(SECCOMP_SET_MODE_FILTER) failed")]
    SeccompInstall(#[source] io::Error),
}
