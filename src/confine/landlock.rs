//! Landlock: file-system, TCP-port and scope restrictions for the payload.
//!
//! Fail closed: a feature the spec requires (TCP rules need ABI 4, scoping
//! ABI 6, anything below `min_abi`, or Landlock itself) that the kernel lacks
//! is an error unless `best_effort`. File-system rights newer than `min_abi`
//! (refer: ABI 2, truncate: ABI 3, device ioctl: ABI 5) are restrictions the
//! kernel simply cannot add; they are listed in [`LandlockReport::missing`].
//!
//! Only access rights of ABI ≤ 6 are used (the newest this module knows and
//! was tested against); a newer kernel is fine.
//!
//! Device ioctls (`LANDLOCK_ACCESS_FS_IOCTL_DEV`, ABI 5): Landlock records a
//! file's rights when it is opened. A file opened before the ruleset was
//! enforced (the inherited terminal on fds 0-2) keeps every right, so the
//! terminal keeps working either way. Only device files opened afterwards
//! (`/dev/tty`, a new pty) need the right for driver ioctls such as `TCGETS`,
//! `TCSETS` or `TIOCGWINSZ`; `FIOCLEX`, `FIONCLEX`, `FIONBIO`, `FIOASYNC` and a
//! few file-system ioctls are always allowed, and regular files, pipes and
//! sockets are not affected. `devices_ioctl` grants the right beneath `/dev`.
//!
//! Test hook: when the environment variable `SBOX_TEST_LANDLOCK_MAX_ABI=N` is
//! set, the kernel's ABI is taken as `min(real ABI, N)` (`0` = Landlock
//! unavailable). Integration tests use it to simulate an old kernel.

use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use super::ConfineError;

/// Environment variable capping the ABI seen by sbox (tests only).
pub const TEST_MAX_ABI_ENV: &str = "SBOX_TEST_LANDLOCK_MAX_ABI";

/// The newest ABI whose access rights this module uses.
pub const NEWEST_KNOWN_ABI: u8 = 6;

/// ABI that introduced each optional feature.
const ABI_REFER: u8 = 2;
const ABI_TRUNCATE: u8 = 3;
const ABI_NET_TCP: u8 = 4;
const ABI_IOCTL_DEV: u8 = 5;
const ABI_SCOPE: u8 = 6;

/// The Landlock part of a policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LandlockSpec {
    /// Read files, execute, read directories beneath these paths.
    pub read_exec: Vec<PathBuf>,
    /// Read files and directories beneath these paths.
    pub read: Vec<PathBuf>,
    /// Full access (read, write, create, remove, make_*, truncate, refer) beneath these paths.
    pub write: Vec<PathBuf>,
    /// Allow ioctls on devices beneath `/dev` (ABI 5).
    pub devices_ioctl: bool,
    /// `Some(ports)`: TCP connect only to these ports (ABI 4); `None`: not restricted.
    pub connect_tcp: Option<Vec<u16>>,
    /// `Some(ports)`: TCP bind only to these ports (ABI 4); `None`: not restricted.
    pub bind_tcp: Option<Vec<u16>>,
    /// Deny connecting to abstract unix sockets created outside the sandbox (ABI 6).
    pub scope_abstract_unix: bool,
    /// Deny signalling processes outside the sandbox (ABI 6).
    pub scope_signals: bool,
    /// Refuse to run when the kernel's ABI is lower (unless `best_effort`).
    pub min_abi: u8,
    /// Enforce what the kernel supports instead of failing.
    pub best_effort: bool,
}

/// What [`install_landlock`] enforced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LandlockReport {
    /// The kernel's ABI (after the test cap), 0 when unavailable.
    pub abi: u8,
    /// Human-readable lines: "fs: 12 rules", "tcp connect: 443,80", "scope: signals, abstract-unix".
    pub enforced: Vec<String>,
    /// Restrictions the kernel could not give (only non-empty with best effort or for
    /// file-system rights newer than `min_abi`).
    pub missing: Vec<String>,
    /// Spec paths that could not be opened (absent or inaccessible) and got no rule.
    pub skipped_paths: Vec<PathBuf>,
}

/// The pure outcome of matching a spec against a kernel ABI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LandlockPlan {
    /// Kernel ABI (after the test cap).
    pub kernel_abi: u8,
    /// False when nothing is to be enforced (Landlock unavailable, best effort).
    pub enforce: bool,
    /// File-system rights handled (denied unless a rule allows them).
    pub handled_fs: BitFlags<AccessFs>,
    /// (path, rights) rules, before skipping paths that cannot be opened.
    pub path_rules: Vec<(PathBuf, BitFlags<AccessFs>)>,
    /// Ports TCP connect is restricted to, when handled.
    pub connect_tcp: Option<Vec<u16>>,
    /// Ports TCP bind is restricted to, when handled.
    pub bind_tcp: Option<Vec<u16>>,
    /// Scopes enforced.
    pub scopes: BitFlags<Scope>,
    /// Restrictions the kernel cannot give.
    pub missing: Vec<String>,
}

/// The Landlock ABI of the running kernel (capped by `SBOX_TEST_LANDLOCK_MAX_ABI`),
/// or `None` when Landlock is not built in or disabled at boot.
pub fn probe_abi() -> Option<u8> {
    let real = probe_kernel_abi()?;
    let abi = match test_abi_cap() {
        Some(cap) => real.min(cap),
        None => real,
    };
    (abi > 0).then_some(abi)
}

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`.
fn probe_kernel_abi() -> Option<u8> {
    let version = crate::sys::confine::landlock_abi_version().ok()?;
    if version <= 0 {
        return None;
    }
    Some(u8::try_from(version).unwrap_or(u8::MAX))
}

fn test_abi_cap() -> Option<u8> {
    std::env::var(TEST_MAX_ABI_ENV).ok()?.trim().parse().ok()
}

/// Checks the spec on its own (independent of the kernel).
pub fn validate_spec(spec: &LandlockSpec) -> Result<(), ConfineError> {
    let all_paths = spec.read_exec.iter().chain(&spec.read).chain(&spec.write);
    if let Some(p) = all_paths.into_iter().find(|p| !p.is_absolute()) {
        return Err(ConfineError::InvalidLandlockSpec(format!(
            "path {} is not absolute",
            p.display()
        )));
    }
    if spec
        .connect_tcp
        .as_ref()
        .is_some_and(|ports| ports.contains(&0))
    {
        return Err(ConfineError::InvalidLandlockSpec(
            "TCP connect port 0 is meaningless".into(),
        ));
    }
    Ok(())
}

/// Matches `spec` against a kernel ABI (0 = unavailable). Pure.
pub fn build_landlock_plan(
    spec: &LandlockSpec,
    kernel_abi: u8,
) -> Result<LandlockPlan, ConfineError> {
    validate_spec(spec)?;
    let mut missing = check_requirements(spec, kernel_abi)?;
    if kernel_abi == 0 {
        return Ok(unenforced_plan(missing));
    }
    let abi = kernel_abi.min(NEWEST_KNOWN_ABI);
    missing.extend(missing_fs_rights(kernel_abi));
    let handled_fs = AccessFs::from_all(to_abi(abi));
    Ok(LandlockPlan {
        kernel_abi,
        enforce: true,
        handled_fs,
        path_rules: path_rules(spec, handled_fs),
        connect_tcp: spec.connect_tcp.clone().filter(|_| abi >= ABI_NET_TCP),
        bind_tcp: spec.bind_tcp.clone().filter(|_| abi >= ABI_NET_TCP),
        scopes: scopes(spec, abi),
        missing,
    })
}

/// Enforces `spec` on the calling thread (and its future children).
///
/// Meant for the single-threaded payload right before `execve`: it starts no
/// thread. Sets `PR_SET_NO_NEW_PRIVS` (required by Landlock for unprivileged callers).
pub fn install_landlock(spec: &LandlockSpec) -> Result<LandlockReport, ConfineError> {
    let plan = build_landlock_plan(spec, probe_abi().unwrap_or(0))?;
    apply_landlock_plan(&plan, spec.best_effort)
}

/// Creates and enforces the ruleset described by `plan`.
pub fn apply_landlock_plan(
    plan: &LandlockPlan,
    best_effort: bool,
) -> Result<LandlockReport, ConfineError> {
    let mut report = LandlockReport {
        abi: plan.kernel_abi,
        missing: plan.missing.clone(),
        ..LandlockReport::default()
    };
    if !plan.enforce {
        return Ok(report);
    }
    let (created, rule_count) = create_ruleset(plan, &mut report.skipped_paths)?;
    let status = created
        .restrict_self()
        .map_err(ConfineError::LandlockRuleset)?;
    if status.ruleset == RulesetStatus::NotEnforced {
        if best_effort {
            report.missing.push("landlock: ruleset not enforced".into());
            return Ok(report);
        }
        return Err(ConfineError::LandlockNotEnforced);
    }
    report.enforced = enforced_lines(plan, rule_count);
    Ok(report)
}

fn create_ruleset(
    plan: &LandlockPlan,
    skipped: &mut Vec<PathBuf>,
) -> Result<(landlock::RulesetCreated, usize), ConfineError> {
    let err = ConfineError::LandlockRuleset;
    // Every right requested below is within the kernel's ABI (checked by the
    // plan), so a compatibility error here means the kernel misbehaves.
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(plan.handled_fs)
        .map_err(err)?;
    if plan.connect_tcp.is_some() {
        ruleset = ruleset.handle_access(AccessNet::ConnectTcp).map_err(err)?;
    }
    if plan.bind_tcp.is_some() {
        ruleset = ruleset.handle_access(AccessNet::BindTcp).map_err(err)?;
    }
    if !plan.scopes.is_empty() {
        ruleset = ruleset.scope(plan.scopes).map_err(err)?;
    }
    let mut created = ruleset.create().map_err(err)?;
    let mut count = 0;
    for (path, access) in &plan.path_rules {
        let Some(rule) = open_path_rule(path, *access) else {
            skipped.push(path.clone());
            continue;
        };
        created = created.add_rule(rule).map_err(err)?;
        count += 1;
    }
    let ports = [
        (&plan.connect_tcp, AccessNet::ConnectTcp),
        (&plan.bind_tcp, AccessNet::BindTcp),
    ];
    for (list, access) in ports {
        for port in list.iter().flatten() {
            created = created.add_rule(NetPort::new(*port, access)).map_err(err)?;
        }
    }
    Ok((created, count))
}

/// Opens `path` (O_PATH) and narrows `access` to what applies to a non-directory.
/// `None` when the path cannot be opened.
fn open_path_rule(path: &Path, access: BitFlags<AccessFs>) -> Option<PathBeneath<PathFd>> {
    let fd = PathFd::new(path).ok()?;
    let is_dir = nix::sys::stat::fstat(fd.as_fd().as_raw_fd())
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        .unwrap_or(true);
    let access = if is_dir {
        access
    } else {
        access & file_rights()
    };
    Some(PathBeneath::new(fd, access))
}

/// Rights that make sense on a non-directory.
fn file_rights() -> BitFlags<AccessFs> {
    AccessFs::Execute
        | AccessFs::ReadFile
        | AccessFs::WriteFile
        | AccessFs::Truncate
        | AccessFs::IoctlDev
}

/// Fails closed on a required feature the kernel lacks; with best effort,
/// returns the list of what is missing instead.
fn check_requirements(spec: &LandlockSpec, kernel_abi: u8) -> Result<Vec<String>, ConfineError> {
    let mut missing = Vec::new();
    for (feature, needed) in required_features(spec) {
        if kernel_abi >= needed {
            continue;
        }
        if !spec.best_effort {
            if kernel_abi == 0 {
                return Err(ConfineError::LandlockUnavailable {
                    reason: "landlock_create_ruleset failed: not built in or disabled at boot"
                        .into(),
                });
            }
            return Err(ConfineError::LandlockFeatureMissing {
                feature,
                needed,
                kernel: kernel_abi,
            });
        }
        missing.push(format!(
            "{feature} (needs ABI {needed}, kernel has {kernel_abi})"
        ));
    }
    Ok(missing)
}

/// (feature, ABI needed) for everything the spec asks for.
fn required_features(spec: &LandlockSpec) -> Vec<(String, u8)> {
    let mut req = vec![("file-system rules".to_string(), 1)];
    if spec.min_abi > 1 {
        req.push((
            format!("minimum ABI {} (from the profile)", spec.min_abi),
            spec.min_abi,
        ));
    }
    if spec.connect_tcp.is_some() {
        req.push(("TCP connect rules".into(), ABI_NET_TCP));
    }
    if spec.bind_tcp.is_some() {
        req.push(("TCP bind rules".into(), ABI_NET_TCP));
    }
    if spec.scope_abstract_unix {
        req.push(("abstract unix socket scoping".into(), ABI_SCOPE));
    }
    if spec.scope_signals {
        req.push(("signal scoping".into(), ABI_SCOPE));
    }
    req
}

/// File-system restrictions newer than the kernel.
fn missing_fs_rights(kernel_abi: u8) -> Vec<String> {
    [
        ("fs: refer (cross-directory rename/link)", ABI_REFER),
        ("fs: truncate", ABI_TRUNCATE),
        ("fs: device ioctl", ABI_IOCTL_DEV),
    ]
    .into_iter()
    .filter(|(_, needed)| kernel_abi < *needed)
    .map(|(what, needed)| format!("{what} (needs ABI {needed}, kernel has {kernel_abi})"))
    .collect()
}

fn unenforced_plan(mut missing: Vec<String>) -> LandlockPlan {
    if missing.is_empty() {
        missing.push("landlock: unavailable on this kernel".into());
    }
    LandlockPlan {
        kernel_abi: 0,
        enforce: false,
        handled_fs: BitFlags::EMPTY,
        path_rules: Vec::new(),
        connect_tcp: None,
        bind_tcp: None,
        scopes: BitFlags::EMPTY,
        missing,
    }
}

fn to_abi(abi: u8) -> ABI {
    match abi {
        0 => ABI::Unsupported,
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        _ => ABI::V6,
    }
}

fn path_rules(
    spec: &LandlockSpec,
    handled: BitFlags<AccessFs>,
) -> Vec<(PathBuf, BitFlags<AccessFs>)> {
    let read = (AccessFs::ReadFile | AccessFs::ReadDir) & handled;
    let read_exec = read | (handled & AccessFs::Execute);
    // Device ioctls are governed by `devices_ioctl` only, not by write access.
    let write = handled & !AccessFs::IoctlDev;
    let mut rules = Vec::new();
    rules.extend(spec.read_exec.iter().map(|p| (p.clone(), read_exec)));
    rules.extend(spec.read.iter().map(|p| (p.clone(), read)));
    rules.extend(spec.write.iter().map(|p| (p.clone(), write)));
    if spec.devices_ioctl && handled.contains(AccessFs::IoctlDev) {
        rules.push((PathBuf::from("/dev"), AccessFs::IoctlDev.into()));
    }
    rules
}

fn scopes(spec: &LandlockSpec, abi: u8) -> BitFlags<Scope> {
    let mut scopes = BitFlags::EMPTY;
    if abi < ABI_SCOPE {
        return scopes;
    }
    if spec.scope_abstract_unix {
        scopes |= Scope::AbstractUnixSocket;
    }
    if spec.scope_signals {
        scopes |= Scope::Signal;
    }
    scopes
}

fn port_list(ports: &[u16]) -> String {
    if ports.is_empty() {
        return "none".into();
    }
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn enforced_lines(plan: &LandlockPlan, rule_count: usize) -> Vec<String> {
    let mut lines = vec![format!("fs: {rule_count} rules")];
    if plan.handled_fs.contains(AccessFs::IoctlDev) {
        let devices = if plan
            .path_rules
            .iter()
            .any(|(_, a)| *a == AccessFs::IoctlDev)
        {
            "allowed beneath /dev"
        } else {
            "denied"
        };
        lines.push(format!("fs: device ioctls {devices}"));
    }
    if let Some(ports) = &plan.connect_tcp {
        lines.push(format!("tcp connect: {}", port_list(ports)));
    }
    if let Some(ports) = &plan.bind_tcp {
        lines.push(format!("tcp bind: {}", port_list(ports)));
    }
    if !plan.scopes.is_empty() {
        let mut names = Vec::new();
        if plan.scopes.contains(Scope::Signal) {
            names.push("signals");
        }
        if plan.scopes.contains(Scope::AbstractUnixSocket) {
            names.push("abstract-unix");
        }
        lines.push(format!("scope: {}", names.join(", ")));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_spec() -> LandlockSpec {
        LandlockSpec {
            read_exec: vec!["/usr".into()],
            read: vec!["/etc".into()],
            write: vec!["/tmp".into()],
            devices_ioctl: true,
            connect_tcp: Some(vec![443, 80]),
            bind_tcp: None,
            scope_abstract_unix: true,
            scope_signals: true,
            min_abi: 1,
            best_effort: false,
        }
    }

    #[test]
    fn full_spec_on_abi_6_enforces_everything() {
        let plan = build_landlock_plan(&full_spec(), 6).unwrap();
        assert!(plan.enforce);
        assert!(plan.missing.is_empty());
        assert_eq!(plan.connect_tcp, Some(vec![443, 80]));
        assert_eq!(plan.scopes, Scope::Signal | Scope::AbstractUnixSocket);
        assert!(plan.handled_fs.contains(AccessFs::IoctlDev));
        let lines = enforced_lines(&plan, 4);
        assert!(lines.contains(&"tcp connect: 443,80".to_string()));
        assert!(lines.contains(&"scope: signals, abstract-unix".to_string()));
    }

    #[test]
    fn newer_kernel_uses_known_rights_only() {
        let plan = build_landlock_plan(&full_spec(), 9).unwrap();
        assert_eq!(plan.handled_fs, AccessFs::from_all(ABI::V6));
        assert_eq!(plan.kernel_abi, 9);
    }

    #[test]
    fn tcp_rules_on_abi_3_fail_closed() {
        let spec = LandlockSpec {
            scope_abstract_unix: false,
            scope_signals: false,
            ..full_spec()
        };
        let err = build_landlock_plan(&spec, 3).unwrap_err();
        match &err {
            ConfineError::LandlockFeatureMissing {
                feature,
                needed,
                kernel,
            } => {
                assert!(feature.contains("TCP connect"));
                assert_eq!((*needed, *kernel), (4, 3));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("ABI 3"));
    }

    #[test]
    fn scoping_on_abi_5_fails_closed() {
        let err = build_landlock_plan(&full_spec(), 5).unwrap_err();
        assert!(matches!(
            err,
            ConfineError::LandlockFeatureMissing {
                needed: 6,
                kernel: 5,
                ..
            }
        ));
    }

    #[test]
    fn min_abi_and_unavailable_fail_closed() {
        let spec = LandlockSpec {
            min_abi: 5,
            ..LandlockSpec::default()
        };
        assert!(matches!(
            build_landlock_plan(&spec, 4),
            Err(ConfineError::LandlockFeatureMissing {
                needed: 5,
                kernel: 4,
                ..
            })
        ));
        assert!(matches!(
            build_landlock_plan(&LandlockSpec::default(), 0),
            Err(ConfineError::LandlockUnavailable { .. })
        ));
    }

    #[test]
    fn best_effort_lists_missing_features() {
        let spec = LandlockSpec {
            best_effort: true,
            ..full_spec()
        };
        let plan = build_landlock_plan(&spec, 3).unwrap();
        assert!(plan.enforce);
        assert_eq!(plan.connect_tcp, None);
        assert!(plan.scopes.is_empty());
        assert!(plan.missing.iter().any(|m| m.contains("TCP connect")));
        assert!(plan.missing.iter().any(|m| m.contains("signal scoping")));
        assert!(plan.missing.iter().any(|m| m.contains("device ioctl")));
        // No IoctlDev rule on a kernel that cannot handle it.
        assert!(plan.path_rules.iter().all(|(p, _)| p != Path::new("/dev")));

        let none = build_landlock_plan(&spec, 0).unwrap();
        assert!(!none.enforce);
        assert!(!none.missing.is_empty());
    }

    #[test]
    fn old_fs_rights_are_reported_not_fatal() {
        let spec = LandlockSpec {
            write: vec!["/tmp".into()],
            ..LandlockSpec::default()
        };
        let plan = build_landlock_plan(&spec, 1).unwrap();
        assert_eq!(plan.handled_fs, AccessFs::from_all(ABI::V1));
        assert_eq!(plan.missing.len(), 3);
    }

    #[test]
    fn path_rights_by_class() {
        let plan = build_landlock_plan(&full_spec(), 6).unwrap();
        let rights = |p: &str| {
            plan.path_rules
                .iter()
                .find(|(q, _)| q == Path::new(p))
                .map(|(_, a)| *a)
                .unwrap()
        };
        assert_eq!(rights("/usr"), AccessFs::from_read(ABI::V6));
        assert_eq!(rights("/etc"), AccessFs::ReadFile | AccessFs::ReadDir);
        assert!(rights("/tmp").contains(AccessFs::Refer | AccessFs::Truncate | AccessFs::MakeReg));
        assert!(!rights("/tmp").contains(AccessFs::IoctlDev));
        assert_eq!(rights("/dev"), AccessFs::IoctlDev);
    }

    #[test]
    fn spec_validation() {
        let relative = LandlockSpec {
            read: vec!["etc".into()],
            ..LandlockSpec::default()
        };
        assert!(matches!(
            build_landlock_plan(&relative, 6),
            Err(ConfineError::InvalidLandlockSpec(_))
        ));
        let port0 = LandlockSpec {
            connect_tcp: Some(vec![0]),
            ..LandlockSpec::default()
        };
        assert!(validate_spec(&port0).is_err());
    }
}
