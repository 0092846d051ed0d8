//! Seccomp: a deny-list BPF filter modelled on the docker/podman default profile.
//!
//! Everything not listed is allowed. Listed calls fail with `EPERM` (or `ENOSYS`
//! where callers are expected to fall back, e.g. `clone3` → `clone`, io_uring →
//! epoll). Calls that do not exist on an architecture are skipped for that
//! architecture.
//!
//! The program starts with two guards so that the filter cannot be bypassed
//! through another syscall ABI:
//! * the architecture check (emitted by seccompiler): a call made through a
//!   foreign ABI (i386 `int 0x80` on x86_64, arm32 on aarch64) kills the process;
//! * on x86_64, the x32 check: x32 calls carry `AUDIT_ARCH_X86_64` like native
//!   ones but have bit 30 (`__X32_SYSCALL_BIT`) set in the number, so they
//!   would not match any native number below. They kill the process as well.
//!
//! seccompiler compiles one filter per action (all its rules share one
//! on-match action); [`build_filter`] stitches those programs into one, turning
//! every "no match, allow" return of a group except the last into a jump to the
//! next group.

use std::collections::{BTreeMap, BTreeSet};

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

use super::syscall_table;
use super::ConfineError;

pub mod json;

/// What happens when a denied call is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The call fails with this errno.
    Errno(i32),
    /// The whole process is killed with `SIGSYS`.
    Kill,
    /// The call is allowed but logged to the audit log.
    Log,
}

/// The seccomp part of a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeccompSpec {
    /// Allow `ptrace`, `process_vm_readv`/`writev` and `pidfd_getfd`.
    pub allow_ptrace: bool,
    /// Allow creating user namespaces (`unshare`/`clone` with `CLONE_NEWUSER`, `clone3`).
    pub allow_userns: bool,
    /// Allow io_uring; when false the io_uring calls return `ENOSYS`.
    pub allow_io_uring: bool,
    /// Further calls to deny, with their action.
    pub extra_deny: Vec<(String, Action)>,
    /// Calls to remove from the default deny set.
    pub extra_allow: Vec<String>,
    /// errno returned by the default deny rules (`EPERM`).
    pub default_errno: i32,
    /// Log denials to the audit log (see [`install_filter_with_log`]).
    pub log_denials: bool,
    /// Calls to pass to the notification listener to be observed (they
    /// return [`WATCH_ERRNO`] before [`super::notify::build_notifying`]
    /// turns them into notifications): --log-denials, to see what Landlock
    /// and the network refuse.
    pub watch: Watch,
}

/// Which calls --log-denials observes (allowed calls the kernel may refuse
/// for reasons the sandbox set: Landlock, the network).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watch {
    /// Calls that write, create, remove or rename by path (open/openat only
    /// with a flag that writes, creates or truncates).
    pub paths: bool,
    /// connect(2) and bind(2).
    pub connect: bool,
}

/// The errno marking a watched call in a built program (never a real answer:
/// [`super::notify::build_notifying`] turns it into a notification).
pub const WATCH_ERRNO: i32 = 4095;

/// Path calls that need Landlock's write rights (watched with `Watch::paths`).
pub const WATCHED_PATH_CALLS: &[&str] = &[
    "creat",
    "openat2",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "unlink",
    "unlinkat",
    "rmdir",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "truncate",
];

/// open(2)/openat(2) flags that need write rights: O_WRONLY, O_RDWR,
/// O_CREAT, O_TRUNC.
const WRITE_OPEN_FLAGS: &[u64] = &[
    libc::O_WRONLY as u64,
    libc::O_RDWR as u64,
    libc::O_CREAT as u64,
    libc::O_TRUNC as u64,
];

impl Default for SeccompSpec {
    fn default() -> Self {
        SeccompSpec {
            allow_ptrace: false,
            allow_userns: false,
            allow_io_uring: false,
            extra_deny: Vec::new(),
            extra_allow: Vec::new(),
            default_errno: libc::EPERM,
            log_denials: false,
            watch: Watch::default(),
        }
    }
}

/// Denied outright with `default_errno`.
const ALWAYS_DENIED: &[&str] = &[
    // kernel modules and kexec
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    // machine-wide state
    "reboot",
    "swapon",
    "swapoff",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "stime",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    // kernel attack surface
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "kcmp",
    "lookup_dcookie",
    "nfsservctl",
    "uselib",
    // file handles bypass path-based confinement
    "open_by_handle_at",
    "name_to_handle_at",
    // legacy x86 and port I/O
    "vm86",
    "vm86old",
    "iopl",
    "ioperm",
    // per-process LDT: old kernel attack surface (docker refuses it too)
    "modify_ldt",
    // obsolete interfaces docker's default profile refuses
    "create_module",
    "get_kernel_syms",
    "query_module",
    "_sysctl",
    "sysfs",
    "ustat",
    // mounts and namespaces: the assembled root must stay as it is
    "mount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "open_tree_attr",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "setns",
];

/// Denied with `default_errno` unless `allow_ptrace`.
const PTRACE_CALLS: &[&str] = &[
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
];

/// Return `ENOSYS` unless `allow_io_uring`.
const IO_URING_CALLS: &[&str] = &["io_uring_setup", "io_uring_enter", "io_uring_register"];

/// Names that exist only on architectures without a table here (i386).
const FOREIGN_ONLY_NAMES: &[&str] = &["stime", "vm86", "vm86old"];

/// `personality(2)` values that do not weaken the process (docker's list):
/// PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and the query value.
const SAFE_PERSONALITIES: &[u64] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Terminal ioctls that inject input or talk to the console: TIOCSTI, TIOCLINUX.
const DENIED_TTY_IOCTLS: &[u64] = &[0x5412, 0x541c];

const CLONE_NEWUSER: u64 = libc::CLONE_NEWUSER as u64;

/// Syscall numbers with this bit set are x32 calls on x86_64.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The kernel's limit on a filter's length (BPF_MAXINSNS).
const BPF_MAX_LEN: usize = 4096;

/// Length of seccompiler's architecture check at the start of every program.
const ARCH_CHECK_LEN: usize = 3;

// Classic BPF opcodes (linux/bpf_common.h).
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JMP_JA: u16 = 0x05;
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_DATA_NR_OFFSET: u32 = 0;
const SECCOMP_DATA_ARCH_OFFSET: u32 = 4;

/// When a deny rule applies.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Condition {
    /// On every call.
    Always,
    /// When `(arg & flag) == flag` (64-bit compare).
    FlagSet { arg: u8, flag: u64 },
    /// When the low 32 bits of `arg` equal one of `values`.
    LowWordIn { arg: u8, values: &'static [u64] },
    /// When the low 32 bits of `arg` equal none of `values`.
    LowWordNotIn { arg: u8, values: &'static [u64] },
    /// When the low 32 bits of `arg` have any of the bits `flags` set.
    AnyFlag { arg: u8, flags: &'static [u64] },
}

/// The outcome of a denied call, before it is turned into a seccomp action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    DefaultErrno,
    Enosys,
    Profile(Action),
    Watch,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct DenyRule {
    condition: Condition,
    outcome: Outcome,
}

/// Names of every call the default profile restricts (some only for certain
/// arguments: `clone`, `unshare`, `personality`, `ioctl`), for every setting
/// of the `allow_*` switches.
pub fn default_deny_list() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = ALWAYS_DENIED.to_vec();
    names.extend_from_slice(PTRACE_CALLS);
    names.extend_from_slice(IO_URING_CALLS);
    names.extend_from_slice(&["unshare", "clone", "clone3", "personality", "ioctl"]);
    names
}

/// Builds the BPF program for `spec` on `arch`. Pure: nothing is installed.
pub fn build_filter(spec: &SeccompSpec, arch: TargetArch) -> Result<BpfProgram, ConfineError> {
    let table = table_for(arch)?;
    let rules = build_rule_set(spec)?;
    let groups = group_by_action(&rules, spec.default_errno, table)?;
    let programs = groups
        .into_iter()
        .map(|(action, by_nr)| compile_group(by_nr, action, arch))
        .collect::<Result<Vec<_>, _>>()?;
    let program = stitch_programs(programs, arch)?;
    if program.len() > BPF_MAX_LEN {
        return Err(ConfineError::FilterTooLong(program.len()));
    }
    Ok(program)
}

/// Number of BPF instructions of a program.
pub fn filter_len(prog: &BpfProgram) -> usize {
    prog.len()
}

/// The target architecture of the running binary.
pub fn native_arch() -> Option<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH).ok()
}

/// Installs `prog` on the calling thread (set `PR_SET_NO_NEW_PRIVS` first if
/// it is not set yet). Denials are not logged; see [`install_filter_with_log`].
pub fn install_filter(prog: &BpfProgram) -> Result<(), ConfineError> {
    install_filter_with_log(prog, false)
}

/// Like [`install_filter`]; with `log_denials`, the filter is installed with
/// `SECCOMP_FILTER_FLAG_LOG` so that every action but "allow" (errno denials
/// included) is written to the audit log (subject to
/// `/proc/sys/kernel/seccomp/actions_logged`).
pub fn install_filter_with_log(prog: &BpfProgram, log_denials: bool) -> Result<(), ConfineError> {
    if prog.is_empty() {
        return Err(ConfineError::EmptyFilter);
    }
    u16::try_from(prog.len()).map_err(|_| ConfineError::FilterTooLong(prog.len()))?;
    ensure_no_new_privs()?;
    let flags = if log_denials {
        libc::SECCOMP_FILTER_FLAG_LOG
    } else {
        0
    };
    seccomp_set_mode_filter(prog, flags)
}

fn ensure_no_new_privs() -> Result<(), ConfineError> {
    if crate::sys::no_new_privs().is_ok_and(|set| set) {
        return Ok(());
    }
    crate::sys::set_no_new_privs().map_err(|e| ConfineError::NoNewPrivs(e.into()))
}

fn seccomp_set_mode_filter(prog: &BpfProgram, flags: libc::c_ulong) -> Result<(), ConfineError> {
    crate::sys::confine::install_filter(prog, flags)
        .map_err(|e| ConfineError::SeccompInstall(e.into()))
}

fn table_for(arch: TargetArch) -> Result<&'static [(&'static str, u32)], ConfineError> {
    match arch {
        TargetArch::x86_64 => Ok(syscall_table::X86_64),
        TargetArch::aarch64 => Ok(syscall_table::AARCH64),
        TargetArch::riscv64 => Err(ConfineError::UnsupportedArch("riscv64")),
    }
}

/// The name of system call `nr` on `arch`.
pub fn syscall_name_of(arch: TargetArch, nr: u32) -> Option<&'static str> {
    table_for(arch)
        .ok()?
        .iter()
        .find(|(_, n)| *n == nr)
        .map(|(name, _)| *name)
}

fn lookup(table: &[(&str, u32)], name: &str) -> Option<u32> {
    table.iter().find(|(n, _)| *n == name).map(|(_, nr)| *nr)
}

/// Whether `name` is a syscall on any architecture sbox knows.
fn is_known_syscall(name: &str) -> bool {
    FOREIGN_ONLY_NAMES.contains(&name)
        || lookup(syscall_table::X86_64, name).is_some()
        || lookup(syscall_table::AARCH64, name).is_some()
}

/// The default rules selected by the `allow_*` switches, keyed by name.
fn default_rules(spec: &SeccompSpec) -> BTreeMap<String, DenyRule> {
    let mut rules = BTreeMap::new();
    let mut deny = |name: &str, condition: Condition, outcome: Outcome| {
        rules.insert(name.to_string(), DenyRule { condition, outcome });
    };
    for name in ALWAYS_DENIED {
        deny(name, Condition::Always, Outcome::DefaultErrno);
    }
    if !spec.allow_ptrace {
        for name in PTRACE_CALLS {
            deny(name, Condition::Always, Outcome::DefaultErrno);
        }
    }
    if !spec.allow_io_uring {
        for name in IO_URING_CALLS {
            deny(name, Condition::Always, Outcome::Enosys);
        }
    }
    if !spec.allow_userns {
        let new_user = Condition::FlagSet {
            arg: 0,
            flag: CLONE_NEWUSER,
        };
        deny("unshare", new_user.clone(), Outcome::DefaultErrno);
        // clone(flags, ...): flags is the first argument on x86_64 and aarch64.
        deny("clone", new_user, Outcome::DefaultErrno);
        // clone3 passes its flags in memory, which BPF cannot read: ENOSYS makes
        // libc fall back to clone, whose flags are checked above.
        deny("clone3", Condition::Always, Outcome::Enosys);
    }
    deny(
        "personality",
        Condition::LowWordNotIn {
            arg: 0,
            values: SAFE_PERSONALITIES,
        },
        Outcome::DefaultErrno,
    );
    // The kernel truncates the ioctl request to 32 bits, so compare only those.
    deny(
        "ioctl",
        Condition::LowWordIn {
            arg: 1,
            values: DENIED_TTY_IOCTLS,
        },
        Outcome::DefaultErrno,
    );
    rules
}

/// Default rules, minus `extra_allow`, plus `extra_deny` (which replaces a
/// default rule of the same name). Validates names and errnos.
fn build_rule_set(spec: &SeccompSpec) -> Result<BTreeMap<String, DenyRule>, ConfineError> {
    validate_errno(spec.default_errno)?;
    let mut rules = default_rules(spec);
    let mut seen_deny = BTreeSet::new();
    for (name, action) in &spec.extra_deny {
        check_name(name)?;
        if let Action::Errno(errno) = action {
            validate_errno(*errno)?;
        }
        if !seen_deny.insert(name.as_str()) || spec.extra_allow.contains(name) {
            return Err(ConfineError::ConflictingSyscall(name.clone()));
        }
        rules.insert(
            name.clone(),
            DenyRule {
                condition: Condition::Always,
                outcome: Outcome::Profile(*action),
            },
        );
    }
    for name in &spec.extra_allow {
        check_name(name)?;
        rules.remove(name);
    }
    // Observed calls that nothing denies.
    let mut watch = |name: &str, condition: Condition| {
        rules.entry(name.to_string()).or_insert(DenyRule {
            condition,
            outcome: Outcome::Watch,
        });
    };
    if spec.watch.paths {
        for name in WATCHED_PATH_CALLS {
            watch(name, Condition::Always);
        }
        watch(
            "open",
            Condition::AnyFlag {
                arg: 1,
                flags: WRITE_OPEN_FLAGS,
            },
        );
        watch(
            "openat",
            Condition::AnyFlag {
                arg: 2,
                flags: WRITE_OPEN_FLAGS,
            },
        );
    }
    if spec.watch.connect {
        watch("connect", Condition::Always);
        watch("bind", Condition::Always);
    }
    Ok(rules)
}

/// The calls of `spec` that go to the listener to be observed (watched and
/// not denied by the profile), by name.
pub fn watched_calls(spec: &SeccompSpec) -> Result<BTreeSet<String>, ConfineError> {
    Ok(build_rule_set(spec)?
        .into_iter()
        .filter(|(_, r)| r.outcome == Outcome::Watch)
        .map(|(name, _)| name)
        .collect())
}

fn check_name(name: &str) -> Result<(), ConfineError> {
    if is_known_syscall(name) {
        Ok(())
    } else {
        Err(ConfineError::UnknownSyscall(name.to_string()))
    }
}

fn validate_errno(errno: i32) -> Result<(), ConfineError> {
    if (1..=4095).contains(&errno) {
        Ok(())
    } else {
        Err(ConfineError::InvalidErrno(errno))
    }
}

fn seccomp_action(outcome: Outcome, default_errno: i32) -> SeccompAction {
    let errno = |e: i32| SeccompAction::Errno(e.unsigned_abs());
    match outcome {
        Outcome::DefaultErrno => errno(default_errno),
        Outcome::Enosys => errno(libc::ENOSYS),
        Outcome::Profile(Action::Errno(e)) => errno(e),
        Outcome::Profile(Action::Kill) => SeccompAction::KillProcess,
        Outcome::Profile(Action::Log) => SeccompAction::Log,
        Outcome::Watch => errno(WATCH_ERRNO),
    }
}

type RulesByNr = BTreeMap<i64, Vec<SeccompRule>>;

/// Resolves names to numbers for one architecture and groups the rules by
/// action (ordered by the action's return value, for a deterministic program).
fn group_by_action(
    rules: &BTreeMap<String, DenyRule>,
    default_errno: i32,
    table: &[(&str, u32)],
) -> Result<Vec<(SeccompAction, RulesByNr)>, ConfineError> {
    let mut groups: BTreeMap<u32, (SeccompAction, RulesByNr)> = BTreeMap::new();
    for (name, rule) in rules {
        let Some(nr) = lookup(table, name) else {
            continue; // not a syscall on this architecture
        };
        let action = seccomp_action(rule.outcome, default_errno);
        let chain = seccomp_chain(&rule.condition)?;
        groups
            .entry(u32::from(action.clone()))
            .or_insert_with(|| (action, BTreeMap::new()))
            .1
            .insert(i64::from(nr), chain);
    }
    Ok(groups.into_values().collect())
}

/// The seccompiler rule chain (an OR of ANDs) for a condition; empty = always.
fn seccomp_chain(condition: &Condition) -> Result<Vec<SeccompRule>, ConfineError> {
    let cond = |arg: u8, len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64| {
        SeccompCondition::new(arg, len, op, value).map_err(ConfineError::SeccompCompile)
    };
    let rule = |conds: Vec<SeccompCondition>| {
        SeccompRule::new(conds).map_err(ConfineError::SeccompCompile)
    };
    match condition {
        Condition::Always => Ok(Vec::new()),
        Condition::FlagSet { arg, flag } => Ok(vec![rule(vec![cond(
            *arg,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(*flag),
            *flag,
        )?])?]),
        Condition::LowWordIn { arg, values } => values
            .iter()
            .map(|v| {
                rule(vec![cond(
                    *arg,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    *v,
                )?])
            })
            .collect(),
        Condition::AnyFlag { arg, flags } => flags
            .iter()
            .map(|f| {
                rule(vec![cond(
                    *arg,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::MaskedEq(*f),
                    *f,
                )?])
            })
            .collect(),
        Condition::LowWordNotIn { arg, values } => {
            let conds = values
                .iter()
                .map(|v| cond(*arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, *v))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(vec![rule(conds)?])
        }
    }
}

fn compile_group(
    rules: RulesByNr,
    action: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram, ConfineError> {
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, action, arch)
        .map_err(ConfineError::SeccompCompile)?;
    BpfProgram::try_from(filter).map_err(ConfineError::SeccompCompile)
}

fn bpf_stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn bpf_jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn ret(action: SeccompAction) -> sock_filter {
    bpf_stmt(BPF_RET_K, u32::from(action))
}

/// Kills x32 calls (x86_64 only): they share the native audit arch.
fn x32_guard() -> Vec<sock_filter> {
    vec![
        bpf_stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR_OFFSET),
        bpf_jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1),
        ret(SeccompAction::KillProcess),
    ]
}

/// Checks that `prog` starts with seccompiler's architecture check and returns it.
fn split_arch_check(prog: &BpfProgram) -> Result<(&[sock_filter], &[sock_filter]), ConfineError> {
    if prog.len() <= ARCH_CHECK_LEN {
        return Err(ConfineError::UnexpectedFilterShape("program too short"));
    }
    let (check, body) = prog.split_at(ARCH_CHECK_LEN);
    let loads_arch = check[0] == bpf_stmt(BPF_LD_W_ABS, SECCOMP_DATA_ARCH_OFFSET);
    let kills = check[2] == ret(SeccompAction::KillProcess);
    if loads_arch && kills {
        Ok((check, body))
    } else {
        Err(ConfineError::UnexpectedFilterShape("no architecture check"))
    }
}

/// In a group's body, "allow" means "no rule of this group matched": jump to
/// the instruction after the body (the next group) instead.
fn chain_to_next(body: &[sock_filter]) -> Result<Vec<sock_filter>, ConfineError> {
    let allow = ret(SeccompAction::Allow);
    let len = body.len();
    body.iter()
        .enumerate()
        .map(|(i, insn)| {
            if *insn == allow {
                let skip = u32::try_from(len - i - 1)
                    .map_err(|_| ConfineError::UnexpectedFilterShape("jump too long"))?;
                Ok(bpf_stmt(BPF_JMP_JA, skip))
            } else {
                Ok(insn.clone())
            }
        })
        .collect()
}

/// Arch check, x32 guard, then every group; allow when nothing matched.
fn stitch_programs(
    programs: Vec<BpfProgram>,
    arch: TargetArch,
) -> Result<BpfProgram, ConfineError> {
    let mut out = Vec::new();
    let arch_check = match programs.first() {
        Some(first) => split_arch_check(first)?.0.to_vec(),
        None => {
            let empty = SeccompFilter::new(
                BTreeMap::new(),
                SeccompAction::Allow,
                SeccompAction::KillProcess,
                arch,
            )
            .map_err(ConfineError::SeccompCompile)?;
            let prog = BpfProgram::try_from(empty).map_err(ConfineError::SeccompCompile)?;
            split_arch_check(&prog)?.0.to_vec()
        }
    };
    out.extend(arch_check);
    if arch == TargetArch::x86_64 {
        out.extend(x32_guard());
    }
    let last = programs.len().saturating_sub(1);
    for (i, prog) in programs.iter().enumerate() {
        let (_, body) = split_arch_check(prog)?;
        if i == last {
            out.extend_from_slice(body);
        } else {
            out.extend(chain_to_next(body)?);
        }
    }
    if programs.is_empty() {
        out.push(ret(SeccompAction::Allow));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny classic-BPF interpreter, enough to run our programs on a
    /// `seccomp_data` in unit tests.
    pub(super) fn run(prog: &BpfProgram, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let word = |off: u32| -> u32 {
            match off {
                0 => nr,
                4 => arch,
                16..=63 => {
                    let arg = args[((off - 16) / 8) as usize];
                    if (off - 16) % 8 == 0 {
                        arg as u32
                    } else {
                        (arg >> 32) as u32
                    }
                }
                _ => panic!("load from offset {off}"),
            }
        };
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let insn = &prog[pc];
            pc += 1;
            match insn.code {
                0x20 => acc = word(insn.k),
                0x54 => acc &= insn.k, // ALU AND K
                0x05 => pc += insn.k as usize,
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let taken = match insn.code {
                        0x15 => acc == insn.k,
                        0x25 => acc > insn.k,
                        0x35 => acc >= insn.k,
                        _ => acc & insn.k != 0,
                    };
                    pc += if taken { insn.jt } else { insn.jf } as usize;
                }
                0x06 => return insn.k,
                code => panic!("unexpected opcode {code:#x}"),
            }
        }
    }

    const AUDIT_X86_64: u32 = 0xc000_003e;
    const AUDIT_I386: u32 = 0x4000_0003;
    const AUDIT_AARCH64: u32 = 0xc000_00b7;
    const ALLOW: u32 = 0x7fff_0000;
    const KILL: u32 = 0x8000_0000;
    const EPERM: u32 = 0x0005_0000 | 1;
    const ENOSYS: u32 = 0x0005_0000 | 38;

    fn nr(arch: TargetArch, name: &str) -> u32 {
        lookup(table_for(arch).unwrap(), name).unwrap()
    }

    fn x86(prog: &BpfProgram, name: &str, args: [u64; 6]) -> u32 {
        run(prog, AUDIT_X86_64, nr(TargetArch::x86_64, name), args)
    }

    fn default_prog(arch: TargetArch) -> BpfProgram {
        build_filter(&SeccompSpec::default(), arch).unwrap()
    }

    #[test]
    fn builds_for_x86_64_and_aarch64() {
        for arch in [TargetArch::x86_64, TargetArch::aarch64] {
            let prog = default_prog(arch);
            assert!(filter_len(&prog) > 50 && filter_len(&prog) < 4096);
        }
    }

    #[test]
    fn default_list_contains_key_calls() {
        let list = default_deny_list();
        for name in [
            "keyctl",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "ptrace",
            "mount",
            "setns",
            "kexec_load",
            "open_by_handle_at",
            "clone3",
            "io_uring_setup",
            "modify_ldt",
        ] {
            assert!(list.contains(&name), "{name} missing");
        }
        for name in list {
            assert!(is_known_syscall(name), "{name} unknown");
        }
    }

    #[test]
    fn denies_and_allows_on_x86_64() {
        let prog = default_prog(TargetArch::x86_64);
        for name in [
            "keyctl",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "mount",
            "ptrace",
        ] {
            assert_eq!(x86(&prog, name, [0; 6]), EPERM, "{name}");
        }
        for name in ["getpid", "read", "openat", "clone"] {
            assert_eq!(x86(&prog, name, [0; 6]), ALLOW, "{name}");
        }
        assert_eq!(x86(&prog, "clone3", [0; 6]), ENOSYS);
        assert_eq!(x86(&prog, "io_uring_setup", [0; 6]), ENOSYS);
    }

    #[test]
    fn denies_on_aarch64_with_its_numbers() {
        let prog = default_prog(TargetArch::aarch64);
        let run_a = |name: &str| run(&prog, AUDIT_AARCH64, nr(TargetArch::aarch64, name), [0; 6]);
        assert_eq!(run_a("keyctl"), EPERM);
        assert_eq!(run_a("bpf"), EPERM);
        assert_eq!(run_a("getpid"), ALLOW);
        assert_eq!(run_a("clone3"), ENOSYS);
        // iopl, uselib and vm86 do not exist on aarch64: skipped, not an error.
        assert!(lookup(syscall_table::AARCH64, "iopl").is_none());
    }

    #[test]
    fn foreign_arch_and_x32_are_killed() {
        let prog = default_prog(TargetArch::x86_64);
        assert_eq!(run(&prog, AUDIT_I386, 20, [0; 6]), KILL);
        let keyctl = nr(TargetArch::x86_64, "keyctl");
        assert_eq!(
            run(&prog, AUDIT_X86_64, X32_SYSCALL_BIT | keyctl, [0; 6]),
            KILL
        );
        let aarch = default_prog(TargetArch::aarch64);
        assert_eq!(run(&aarch, AUDIT_X86_64, 39, [0; 6]), KILL);
    }

    #[test]
    fn clone_and_unshare_checked_for_newuser() {
        let prog = default_prog(TargetArch::x86_64);
        let newuser = CLONE_NEWUSER;
        let newns = libc::CLONE_NEWNS as u64;
        assert_eq!(
            x86(&prog, "unshare", [newuser | newns, 0, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(x86(&prog, "unshare", [newns, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(x86(&prog, "clone", [newuser | 17, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(x86(&prog, "clone", [0x3d0f00, 0, 0, 0, 0, 0]), ALLOW);
        let open = SeccompSpec {
            allow_userns: true,
            ..SeccompSpec::default()
        };
        let prog = build_filter(&open, TargetArch::x86_64).unwrap();
        assert_eq!(x86(&prog, "unshare", [newuser, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(x86(&prog, "clone3", [0; 6]), ALLOW);
    }

    #[test]
    fn personality_allows_only_safe_values() {
        let prog = default_prog(TargetArch::x86_64);
        for safe in SAFE_PERSONALITIES {
            assert_eq!(x86(&prog, "personality", [*safe, 0, 0, 0, 0, 0]), ALLOW);
        }
        // ADDR_NO_RANDOMIZE weakens ASLR.
        assert_eq!(x86(&prog, "personality", [0x0040000, 0, 0, 0, 0, 0]), EPERM);
    }

    #[test]
    fn tiocsti_masked_to_32_bits() {
        let prog = default_prog(TargetArch::x86_64);
        assert_eq!(x86(&prog, "ioctl", [0, 0x5412, 0, 0, 0, 0]), EPERM);
        assert_eq!(
            x86(&prog, "ioctl", [0, (1 << 32) | 0x5412, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(x86(&prog, "ioctl", [0, 0x541c, 0, 0, 0, 0]), EPERM);
        assert_eq!(x86(&prog, "ioctl", [0, 0x5401, 0, 0, 0, 0]), ALLOW); // TCGETS
    }

    #[test]
    fn extra_allow_removes_and_extra_deny_overrides() {
        let spec = SeccompSpec {
            extra_allow: vec!["keyctl".into()],
            extra_deny: vec![
                ("bpf".into(), Action::Kill),
                ("getppid".into(), Action::Errno(libc::EACCES)),
                ("uname".into(), Action::Log),
            ],
            ..SeccompSpec::default()
        };
        let prog = build_filter(&spec, TargetArch::x86_64).unwrap();
        assert_eq!(x86(&prog, "keyctl", [0; 6]), ALLOW);
        assert_eq!(x86(&prog, "bpf", [0; 6]), KILL);
        assert_eq!(x86(&prog, "getppid", [0; 6]), 0x0005_0000 | 13);
        assert_eq!(x86(&prog, "uname", [0; 6]), 0x7ffc_0000);
        assert_eq!(x86(&prog, "add_key", [0; 6]), EPERM);
    }

    #[test]
    fn allow_switches_lift_groups() {
        let spec = SeccompSpec {
            allow_ptrace: true,
            allow_io_uring: true,
            default_errno: libc::EACCES,
            ..SeccompSpec::default()
        };
        let prog = build_filter(&spec, TargetArch::x86_64).unwrap();
        assert_eq!(x86(&prog, "ptrace", [0; 6]), ALLOW);
        assert_eq!(x86(&prog, "io_uring_enter", [0; 6]), ALLOW);
        assert_eq!(x86(&prog, "keyctl", [0; 6]), 0x0005_0000 | 13);
    }

    #[test]
    fn unknown_names_and_bad_errnos_are_errors() {
        let bad = SeccompSpec {
            extra_deny: vec![("not_a_syscall".into(), Action::Kill)],
            ..SeccompSpec::default()
        };
        let err = build_filter(&bad, TargetArch::x86_64).unwrap_err();
        assert!(matches!(&err, ConfineError::UnknownSyscall(n) if n == "not_a_syscall"));
        assert!(err.to_string().contains("not_a_syscall"));

        let bad = SeccompSpec {
            extra_allow: vec!["kyectl".into()],
            ..SeccompSpec::default()
        };
        assert!(matches!(
            build_filter(&bad, TargetArch::aarch64),
            Err(ConfineError::UnknownSyscall(_))
        ));

        let bad = SeccompSpec {
            extra_deny: vec![("uname".into(), Action::Errno(0))],
            ..SeccompSpec::default()
        };
        assert!(matches!(
            build_filter(&bad, TargetArch::x86_64),
            Err(ConfineError::InvalidErrno(0))
        ));

        let bad = SeccompSpec {
            extra_deny: vec![("uname".into(), Action::Kill)],
            extra_allow: vec!["uname".into()],
            ..SeccompSpec::default()
        };
        assert!(matches!(
            build_filter(&bad, TargetArch::x86_64),
            Err(ConfineError::ConflictingSyscall(_))
        ));
    }

    #[test]
    fn arch_only_names_are_skipped_silently() {
        let spec = SeccompSpec {
            extra_deny: vec![("iopl".into(), Action::Kill), ("vm86".into(), Action::Kill)],
            ..SeccompSpec::default()
        };
        assert!(build_filter(&spec, TargetArch::aarch64).is_ok());
        assert!(build_filter(&spec, TargetArch::x86_64).is_ok());
    }

    #[test]
    fn empty_rule_set_is_arch_check_then_allow() {
        let spec = SeccompSpec {
            extra_allow: default_deny_list().iter().map(|s| s.to_string()).collect(),
            ..SeccompSpec::default()
        };
        let prog = build_filter(&spec, TargetArch::x86_64).unwrap();
        assert_eq!(filter_len(&prog), ARCH_CHECK_LEN + 3 + 1);
        assert_eq!(x86(&prog, "keyctl", [0; 6]), ALLOW);
        assert_eq!(run(&prog, AUDIT_I386, 1, [0; 6]), KILL);
    }
}
