//! `sbox doctor`: what this host offers, and how to fix what it lacks.
//!
//! Every check looks at the real host. The namespace checks fork a child that
//! tries the real thing: the child runs only raw syscalls on buffers prepared
//! before the fork (no allocation, no locks) and leaves with `_exit`; the
//! parent waits with a timeout and removes its temporary directories.

use std::ffi::CString;
use std::fs;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::confine::landlock::probe_abi;

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Missing,
    Warn,
}

/// One line of `sbox doctor`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

/// The user sbox runs for (the caller).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
}

impl UserInfo {
    /// The real user and group of this process; the name from the password
    /// database, or the uid as a string when it has no entry.
    pub fn current() -> UserInfo {
        let uid = nix::unistd::getuid();
        let name = match nix::unistd::User::from_uid(uid) {
            Ok(Some(user)) => user.name,
            _ => uid.as_raw().to_string(),
        };
        UserInfo {
            uid: uid.as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            name,
        }
    }
}

/// Name of the check without which sbox cannot run at all.
pub const CHECK_USER_NAMESPACES: &str = "user namespaces";

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs every check, in a fixed order.
pub fn run_checks(user: &UserInfo) -> Vec<Check> {
    vec![
        check_user_namespaces(),
        check_id_mapper("newuidmap"),
        check_id_mapper("newgidmap"),
        check_keeper(user),
        check_subids(
            "subuid range",
            &subid_file("SBOX_SUBUID_FILE", "/etc/subuid"),
            user,
            false,
        ),
        check_subids(
            "subgid range",
            &subid_file("SBOX_SUBGID_FILE", "/etc/subgid"),
            user,
            true,
        ),
        check_dev_fuse(),
        check_fuse_in_userns(),
        check_overlay_in_userns(),
        check_landlock(),
        check_seccomp(),
        check_cgroup_v2(user.uid),
        check_network_helper("pasta", "passt"),
        check_dev_tun(),
        check_network_helper("slirp4netns", "slirp4netns"),
        check_profile_networks(),
        check_container(),
    ]
}

/// False when sbox cannot run at all (no user namespaces).
pub fn can_run(checks: &[Check]) -> bool {
    checks
        .iter()
        .filter(|c| c.name == CHECK_USER_NAMESPACES)
        .all(|c| c.status != Status::Missing)
}

/// One line per check: `OK       name  detail`, with ` — fix: …` when there is one.
pub fn render_text(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        let label = match c.status {
            Status::Ok => "OK",
            Status::Missing => "MISSING",
            Status::Warn => "WARN",
        };
        out.push_str(&format!("{label:<8} {:<width$}  {}", c.name, c.detail));
        if let Some(fix) = &c.fix {
            out.push_str(&format!(" — fix: {fix}"));
        }
        out.push('\n');
    }
    out
}

/// A JSON array of `{name, status, detail, fix}` objects (status: ok/missing/warn).
pub fn render_json(checks: &[Check]) -> String {
    serde_json::to_string_pretty(checks).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

fn check(name: &'static str, status: Status, detail: String, fix: Option<String>) -> Check {
    Check {
        name,
        status,
        detail,
        fix,
    }
}

// ---------------------------------------------------------------------------
// Forked probes

/// One step of a probe, prepared in the parent so the child does not allocate.
enum Step {
    Unshare(libc::c_int),
    /// Write `data` to `path`; with `optional`, a missing file is not an error.
    WriteFile {
        path: CString,
        data: Vec<u8>,
        optional: bool,
    },
    /// `mount --make-rprivate /`.
    MakeRootPrivate,
    Mount {
        source: CString,
        target: CString,
        fstype: CString,
        flags: libc::c_ulong,
        data: CString,
    },
    /// Open /dev/fuse and mount a FUSE file system on `target` with that fd,
    /// as init mounts the FUSE root (same options, same code).
    MountFuse {
        target: PathBuf,
    },
}

impl Step {
    fn describe(&self) -> String {
        match self {
            Step::Unshare(flags) => format!("unshare({})", unshare_flag_names(*flags)),
            Step::WriteFile { path, .. } => format!("write {}", path.to_string_lossy()),
            Step::MakeRootPrivate => "make / private".into(),
            Step::Mount { fstype, .. } => format!("mount {}", fstype.to_string_lossy()),
            Step::MountFuse { .. } => "open /dev/fuse and mount fuse".into(),
        }
    }
}

fn unshare_flag_names(flags: libc::c_int) -> &'static str {
    if flags & libc::CLONE_NEWNS != 0 {
        "CLONE_NEWUSER|CLONE_NEWNS"
    } else {
        "CLONE_NEWUSER"
    }
}

/// How a forked probe ended.
#[derive(Debug, PartialEq, Eq)]
enum ProbeOutcome {
    Passed,
    Failed {
        step: String,
        errno: i32,
    },
    /// fork/pipe failed, the child crashed or timed out.
    Broken(String),
}

impl ProbeOutcome {
    fn summary(&self) -> String {
        match self {
            ProbeOutcome::Passed => "works".into(),
            ProbeOutcome::Failed { step, errno } => {
                format!(
                    "{step} failed: {}",
                    nix::errno::Errno::from_raw(*errno).desc()
                )
            }
            ProbeOutcome::Broken(why) => format!("probe failed: {why}"),
        }
    }

    fn errno(&self) -> Option<i32> {
        match self {
            ProbeOutcome::Failed { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// Steps that enter a new user namespace (with a mount namespace when
/// `with_mount_ns`) and map the caller to root with a single-id map.
fn enter_userns_steps(with_mount_ns: bool) -> Vec<Step> {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let mut flags = libc::CLONE_NEWUSER;
    if with_mount_ns {
        flags |= libc::CLONE_NEWNS;
    }
    let write = |path: &str, data: String, optional: bool| Step::WriteFile {
        path: cstring(path),
        data: data.into_bytes(),
        optional,
    };
    let mut steps = vec![
        Step::Unshare(flags),
        write("/proc/self/setgroups", "deny".into(), true),
        write("/proc/self/uid_map", format!("0 {uid} 1"), false),
        write("/proc/self/gid_map", format!("0 {gid} 1"), false),
    ];
    if with_mount_ns {
        steps.push(Step::MakeRootPrivate);
    }
    steps
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

fn path_cstring(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes().to_vec()).unwrap_or_default()
}

/// Forks, runs `steps` in the child, and reports the first failing step.
fn probe(steps: &[Step]) -> ProbeOutcome {
    let (read_end, write_end) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => return ProbeOutcome::Broken(format!("pipe: {e}")),
    };
    // The doctor runs on one thread: forking as the launcher does is fine.
    match crate::sys::clone_process(nix::sched::CloneFlags::empty()) {
        Err(e) => ProbeOutcome::Broken(format!("fork: {e}")),
        Ok(crate::sys::Forked::Child) => {
            drop(read_end);
            child_main(steps, write_end)
        }
        Ok(crate::sys::Forked::Parent(child)) => {
            drop(write_end);
            let reported = read_probe_report(read_end, child);
            let status = nix::sys::wait::waitpid(child, None);
            probe_outcome(steps, reported, status)
        }
    }
}

/// Combines what the child wrote with how it ended.
fn probe_outcome(
    steps: &[Step],
    reported: Result<Option<(usize, i32)>, String>,
    status: nix::Result<nix::sys::wait::WaitStatus>,
) -> ProbeOutcome {
    use nix::sys::wait::WaitStatus;
    match (reported, status) {
        (Err(why), _) => ProbeOutcome::Broken(why),
        (Ok(Some((index, errno))), _) => ProbeOutcome::Failed {
            step: steps
                .get(index)
                .map(Step::describe)
                .unwrap_or_else(|| format!("step {index}")),
            errno,
        },
        (Ok(None), Ok(WaitStatus::Exited(_, 0))) => ProbeOutcome::Passed,
        (Ok(None), other) => ProbeOutcome::Broken(format!("child ended with {other:?}")),
    }
}

/// The child: runs the steps; on failure writes (step index, errno) to `fd`.
fn child_main(steps: &[Step], fd: OwnedFd) -> ! {
    let failed = steps
        .iter()
        .enumerate()
        .find_map(|(index, s)| run_step(s).err().map(|e| (index, e)));
    let code = match failed {
        None => 0,
        Some((index, errno)) => {
            let mut msg = [0u8; 8];
            msg[..4].copy_from_slice(&(index as i32).to_ne_bytes());
            msg[4..].copy_from_slice(&(errno as i32).to_ne_bytes());
            let _ = nix::unistd::write(&fd, &msg);
            1
        }
    };
    crate::sys::exit_now(code)
}

/// Runs one step.
fn run_step(step: &Step) -> nix::Result<()> {
    use nix::mount::{mount, MsFlags};
    match step {
        Step::Unshare(flags) => {
            nix::sched::unshare(nix::sched::CloneFlags::from_bits_retain(*flags))
        }
        Step::WriteFile {
            path,
            data,
            optional,
        } => match write_file(path, data) {
            Err(nix::errno::Errno::ENOENT) if *optional => Ok(()),
            r => r,
        },
        Step::MakeRootPrivate => mount(
            None::<&std::ffi::CStr>,
            c"/",
            None::<&std::ffi::CStr>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&std::ffi::CStr>,
        ),
        Step::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => mount(
            Some(source.as_c_str()),
            target.as_c_str(),
            Some(fstype.as_c_str()),
            MsFlags::from_bits_retain(*flags),
            Some(data.as_c_str()),
        ),
        Step::MountFuse { target } => {
            crate::rootfs::apply::mount_fuse(target, MsFlags::MS_NOSUID | MsFlags::MS_NODEV)
                .map(drop)
        }
    }
}

/// Writes `data` to the existing file `path` in one write.
fn write_file(path: &CString, data: &[u8]) -> nix::Result<()> {
    let fd = crate::sys::open(
        path.as_c_str(),
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let n = nix::unistd::write(&fd, data)?;
    if n == data.len() {
        Ok(())
    } else {
        Err(nix::errno::Errno::EIO)
    }
}

/// Reads the child's report: `None` when it wrote nothing (success or crash).
fn read_probe_report(
    read_end: OwnedFd,
    child: nix::unistd::Pid,
) -> Result<Option<(usize, i32)>, String> {
    let timeout =
        nix::poll::PollTimeout::try_from(PROBE_TIMEOUT).unwrap_or(nix::poll::PollTimeout::MAX);
    let mut fds = [nix::poll::PollFd::new(
        read_end.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    match nix::poll::poll(&mut fds, timeout) {
        Ok(0) => {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            return Err("timed out".into());
        }
        Err(e) => return Err(format!("poll: {e}")),
        Ok(_) => {}
    }
    let mut bytes = Vec::new();
    fs::File::from(read_end)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("read: {e}"))?;
    if bytes.len() < 8 {
        return Ok(None);
    }
    let word = |i: usize| i32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    Ok(Some((
        usize::try_from(word(0)).unwrap_or(usize::MAX),
        word(4),
    )))
}

/// A temporary directory tree, removed (even with mode-000 subdirectories) on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(tag: &str, subdirs: &[&str]) -> std::io::Result<ScratchDir> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        use std::os::unix::fs::DirBuilderExt;
        // A name another user cannot guess and take first; private.
        let mut tries = 0;
        let base = loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let base = std::env::temp_dir().join(format!(
                "sbox-doctor-{tag}-{}-{n}-{nanos:08x}",
                std::process::id()
            ));
            match fs::DirBuilder::new().mode(0o700).create(&base) {
                Ok(()) => break base,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 16 => tries += 1,
                Err(e) => return Err(e),
            }
        };
        let dir = ScratchDir(base);
        for sub in subdirs {
            fs::create_dir(dir.0.join(sub))?;
        }
        Ok(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if fs::remove_dir_all(&self.0).is_err() {
            make_tree_writable(&self.0);
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// overlayfs leaves `work/work` with mode 000; give our dirs back their modes.
fn make_tree_writable(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                make_tree_writable(&entry.path());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Checks

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn check_user_namespaces() -> Check {
    let outcome = probe(&[Step::Unshare(libc::CLONE_NEWUSER)]);
    let clone_sysctl = read_trimmed("/proc/sys/kernel/unprivileged_userns_clone");
    let max = read_trimmed("/proc/sys/user/max_user_namespaces");
    let apparmor = read_trimmed("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
    let first = match &outcome {
        ProbeOutcome::Passed => "unshare(CLONE_NEWUSER) works".to_string(),
        other => other.summary(),
    };
    let mut facts = vec![first];
    for (name, value) in [
        ("kernel.unprivileged_userns_clone", &clone_sysctl),
        ("user.max_user_namespaces", &max),
        ("kernel.apparmor_restrict_unprivileged_userns", &apparmor),
    ] {
        if let Some(v) = value {
            facts.push(format!("{name}={v}"));
        }
    }
    let detail = facts.join("; ");
    let fix = userns_fix(&clone_sysctl, &max, &apparmor);
    match outcome {
        ProbeOutcome::Passed if apparmor.as_deref() == Some("1") => check(
            CHECK_USER_NAMESPACES,
            Status::Warn,
            format!("{detail} (AppArmor strips capabilities in new user namespaces)"),
            fix,
        ),
        ProbeOutcome::Passed => check(CHECK_USER_NAMESPACES, Status::Ok, detail, None),
        _ => check(
            CHECK_USER_NAMESPACES,
            Status::Missing,
            detail,
            fix.or_else(container_userns_fix).or_else(|| {
                Some("allow unprivileged user namespaces: check the sysctls above and any seccomp or LSM policy sbox inherits".into())
            }),
        ),
    }
}

fn userns_fix(
    clone: &Option<String>,
    max: &Option<String>,
    apparmor: &Option<String>,
) -> Option<String> {
    if clone.as_deref() == Some("0") {
        return Some(
            "sysctl -w kernel.unprivileged_userns_clone=1 (persist in /etc/sysctl.d/)".into(),
        );
    }
    if max.as_deref() == Some("0") {
        return Some("sysctl -w user.max_user_namespaces=28633 (persist in /etc/sysctl.d/)".into());
    }
    if apparmor.as_deref() == Some("1") {
        return Some("install an AppArmor profile for sbox allowing `userns,` or sysctl -w kernel.apparmor_restrict_unprivileged_userns=0".into());
    }
    None
}

fn container_userns_fix() -> Option<String> {
    container_markers().first().map(|_| {
        "inside a container: run it with a seccomp profile that allows unshare/clone (e.g. docker --security-opt seccomp=unconfined) or use a rootless podman container".to_string()
    })
}

/// Directories searched for helper programs: $PATH, then the usual system dirs.
fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        let d = PathBuf::from(d);
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    dirs
}

fn find_program(name: &str) -> Option<PathBuf> {
    search_dirs().into_iter().map(|d| d.join(name)).find(|p| {
        p.metadata()
            .map(|m| m.is_file() && m.mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// Size of the `security.capability` xattr, if the file has one.
fn file_capabilities_len(path: &Path) -> Option<usize> {
    crate::sys::getxattr_len(path, c"security.capability")
}

/// The id-map keeper of the caller's runtime directory (read, not created).
fn check_keeper(user: &UserInfo) -> Check {
    let ids = crate::idmap::IdPlan::for_caller(user.uid, user.gid, &user.name, false);
    if !ids.helpers {
        return check(
            "id-map keeper",
            Status::Ok,
            "not used: a single-id map is written directly".into(),
            None,
        );
    }
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .filter(|d| d.is_absolute())
        .map(|d| d.join("sbox"))
        .filter(|d| d.is_dir())
        .unwrap_or_else(|| std::path::PathBuf::from(format!("/tmp/sbox-{}", user.uid)));
    let detail = match crate::keeper::running(&base, &ids) {
        Some(pid) => format!(
            "running as pid {pid}: sandboxes are mapped without running newuidmap/newgidmap"
        ),
        None => {
            "not running: the next sandbox starts one (it exits 15 minutes after the last launch)"
                .into()
        }
    };
    check("id-map keeper", Status::Ok, detail, None)
}

fn check_id_mapper(name: &'static str) -> Check {
    let Some(path) = find_program(name) else {
        return check(
            name,
            Status::Missing,
            "not installed; only a single-id map (your uid as root) is possible".into(),
            Some("apt install uidmap (Debian/Ubuntu) or dnf install shadow-utils".into()),
        );
    };
    let meta = match path.metadata() {
        Ok(m) => m,
        Err(e) => return check(name, Status::Warn, format!("{}: {e}", path.display()), None),
    };
    let setuid_root = meta.mode() & 0o4000 != 0 && meta.uid() == 0;
    if setuid_root {
        return check(
            name,
            Status::Ok,
            format!("{} is setuid root", path.display()),
            None,
        );
    }
    if file_capabilities_len(&path).is_some() {
        let detail = format!("{} has file capabilities", path.display());
        return check(name, Status::Ok, detail, None);
    }
    check(
        name,
        Status::Warn,
        format!(
            "{} is neither setuid root nor has file capabilities",
            path.display()
        ),
        Some(format!(
            "chmod u+s {0} (or setcap cap_setuid,cap_setgid+ep {0})",
            path.display()
        )),
    )
}

/// The (start, count) ranges of `content` (/etc/subuid format) that belong
/// to the user, matched by name or by numeric uid.
pub fn parse_subid_ranges(content: &str, user: &UserInfo) -> Vec<(u64, u64)> {
    let uid = user.uid.to_string();
    content
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.split(':');
            let (owner, start, count) = (fields.next()?, fields.next()?, fields.next()?);
            if owner != user.name && owner != uid {
                return None;
            }
            Some((start.trim().parse().ok()?, count.trim().parse().ok()?))
        })
        .collect()
}

/// Size needed to map the ids of common distribution packages.
const FULL_SUBID_RANGE: u64 = 65536;

/// The first range of 65536 ids above 100000 that no line of the
/// subordinate id files hands out yet.
pub fn free_subid_start(contents: &[&str]) -> u64 {
    let mut taken: Vec<(u64, u64)> = contents
        .iter()
        .flat_map(|c| c.lines())
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let _who = f.next()?;
            let start = f.next()?.trim().parse::<u64>().ok()?;
            let count = f.next()?.trim().parse::<u64>().ok()?;
            Some((start, start + count))
        })
        .collect();
    taken.sort_unstable();
    let mut start = 100_000u64;
    for (s, e) in taken {
        if s < start + FULL_SUBID_RANGE && e > start {
            start = e;
        }
    }
    start
}

/// The subordinate id file the doctor reads: `var` names another (for
/// tests; the doctor only reports, sbox itself always reads /etc).
fn subid_file(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.into())
}

/// The range newuidmap/newgidmap will use — the first line for the user,
/// by name or by uid (for gids, else by gid), as sbox reads it (see
/// `--verbose`) — and a warning when the user has several.
fn check_subids(name: &'static str, file: &str, user: &UserInfo, gids: bool) -> Check {
    let content = match fs::read_to_string(file) {
        Ok(c) => c,
        Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
        Err(e) => return check(name, Status::Warn, format!("cannot read {file}: {e}"), None),
    };
    let uids = fs::read_to_string("/etc/subuid").unwrap_or_default();
    let gids_text = fs::read_to_string("/etc/subgid").unwrap_or_default();
    let start = free_subid_start(&[&uids, &gids_text]);
    let fix = Some(format!(
        "sudo usermod --add-subuids {start}-{end} --add-subgids {start}-{end} {}",
        user.name,
        end = start + FULL_SUBID_RANGE - 1
    ));
    let used = crate::idmap::parse_subid(&content, &user.name, user.uid).or_else(|| {
        gids.then(|| crate::idmap::parse_subid(&content, "", user.gid))
            .flatten()
    });
    let Some(used) = used else {
        return check(
            name,
            Status::Missing,
            format!(
                "no entry for {} in {file}; falling back to a single-id map",
                user.name
            ),
            fix,
        );
    };
    let (start, count) = (u64::from(used.start), u64::from(used.count));
    let mut ranges = parse_subid_ranges(&content, user);
    if gids && user.gid != user.uid {
        let by_gid = UserInfo {
            uid: user.gid,
            gid: user.gid,
            name: user.gid.to_string(),
        };
        ranges.extend(parse_subid_ranges(&content, &by_gid));
    }
    ranges.retain(|r| r.1 > 0);
    let tool = if gids { "newgidmap" } else { "newuidmap" };
    let detail = format!(
        "{} has {count} ids from {start} in {file} (what {tool} uses)",
        user.name
    );
    if ranges.len() > 1 {
        let mut rest = ranges.clone();
        if let Some(i) = rest.iter().position(|r| *r == (start, count)) {
            rest.remove(i);
        }
        let others: Vec<String> = rest.iter().map(|(s, c)| format!("{c} from {s}")).collect();
        return check(
            name,
            Status::Warn,
            format!(
                "{detail}; {} lists {} ranges for {}: sbox maps only the first, not {}",
                file,
                ranges.len(),
                user.name,
                others.join(", ")
            ),
            Some(format!(
                "put the range you want first in {file}, or merge them into one line"
            )),
        );
    }
    if count >= FULL_SUBID_RANGE {
        check(name, Status::Ok, detail, None)
    } else {
        check(
            name,
            Status::Warn,
            format!("{detail}; fewer than {FULL_SUBID_RANGE}, some packages will fail to unpack"),
            fix,
        )
    }
}

/// A device the caller must open read-write; `absent` and `denied` say
/// what is lost without it, `kernel` the name for a udev rule.
fn check_device(
    path: &'static str,
    status: Status,
    absent: (&str, &str),
    denied: &str,
    kernel: &str,
) -> Check {
    match fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(_) => check(path, Status::Ok, "openable read-write".into(), None),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            check(path, status, absent.0.into(), Some(absent.1.into()))
        }
        Err(e) => {
            let mode = fs::metadata(path)
                .map(|m| format!(" (mode {:o})", m.mode() & 0o7777))
                .unwrap_or_default();
            check(
                path,
                status,
                format!("cannot open read-write: {e}{mode}; {denied}"),
                Some(format!(
                    "chmod 0666 {path} (distributions ship it so; persist with a udev rule: KERNEL==\"{kernel}\", MODE=\"0666\")"
                )),
            )
        }
    }
}

fn check_dev_fuse() -> Check {
    check_device(
        "/dev/fuse",
        Status::Missing,
        (
            "no /dev/fuse: the FUSE root (the default) is unavailable",
            "modprobe fuse (and add fuse to /etc/modules)",
        ),
        "the FUSE root (the default) is unavailable; --overlay kernel still works",
        "fuse",
    )
}

/// pasta and slirp4netns create their interface through /dev/net/tun.
fn check_dev_tun() -> Check {
    check_device(
        "/dev/net/tun",
        Status::Warn,
        ("no /dev/net/tun: --net user unavailable", "modprobe tun"),
        "--net user unavailable",
        "tun",
    )
}

fn check_fuse_in_userns() -> Check {
    const NAME: &str = "fuse in user namespace";
    let dir = match ScratchDir::new("fuse", &[]) {
        Ok(d) => d,
        Err(e) => {
            return check(
                NAME,
                Status::Warn,
                format!("cannot create a temp dir: {e}"),
                None,
            )
        }
    };
    let mut steps = enter_userns_steps(true);
    steps.push(Step::MountFuse {
        target: dir.0.clone(),
    });
    let outcome = probe(&steps);
    let status = if outcome == ProbeOutcome::Passed {
        Status::Ok
    } else {
        Status::Missing
    };
    let fix = match (&outcome, outcome.errno()) {
        (ProbeOutcome::Passed, _) => None,
        (ProbeOutcome::Failed { step, .. }, _) if is_userns_step(step) => Some(USERNS_FIRST.into()),
        (_, Some(libc::EACCES | libc::ENOENT | libc::EPERM)) => {
            Some("make /dev/fuse usable first (see /dev/fuse)".into())
        }
        _ => Some("a kernel ≥ 4.18 with FUSE in user namespaces is needed".into()),
    };
    let detail = match &outcome {
        ProbeOutcome::Passed => "mounting a FUSE fd in a user namespace works".to_string(),
        other => other.summary(),
    };
    check(NAME, status, detail, fix)
}

const USERNS_FIRST: &str = "enable user namespaces first (see user namespaces)";

/// Whether a failed probe step is part of entering the user namespace.
fn is_userns_step(step: &str) -> bool {
    step.starts_with("unshare") || step.starts_with("write /proc/self/")
}

fn check_overlay_in_userns() -> Check {
    const NAME: &str = "overlayfs in user namespace";
    let dir = match ScratchDir::new("ovl", &["lower", "upper", "work", "merged"]) {
        Ok(d) => d,
        Err(e) => {
            return check(
                NAME,
                Status::Warn,
                format!("cannot create a temp dir: {e}"),
                None,
            )
        }
    };
    let _ = fs::write(dir.0.join("lower/file"), b"x");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        dir.0.join("lower").display(),
        dir.0.join("upper").display(),
        dir.0.join("work").display()
    );
    let mut steps = enter_userns_steps(true);
    steps.push(Step::Mount {
        source: cstring("overlay"),
        target: path_cstring(&dir.0.join("merged")),
        fstype: cstring("overlay"),
        flags: 0,
        data: cstring(&opts),
    });
    let outcome = probe(&steps);
    let where_ = std::env::temp_dir().display().to_string();
    match outcome {
        ProbeOutcome::Passed => check(
            NAME,
            Status::Ok,
            format!("mount -t overlay -o userxattr works (upper on {where_})"),
            None,
        ),
        other => {
            let fix = match &other {
                ProbeOutcome::Failed { step, .. } if is_userns_step(step) => USERNS_FIRST,
                _ => "kernel ≥ 5.11 for overlayfs in user namespaces (a tmpfs upper needs ≥ 6.6 for user xattrs)",
            };
            check(
                NAME,
                Status::Warn,
                format!(
                    "{} (upper on {where_}); sbox uses its FUSE overlay instead",
                    other.summary()
                ),
                Some(fix.into()),
            )
        }
    }
}

/// Features each Landlock ABI adds, for the warning on old kernels.
const LANDLOCK_FEATURES: &[(u8, &str)] = &[
    (2, "refer (cross-directory rename/link)"),
    (3, "truncate"),
    (4, "TCP port rules"),
    (5, "device ioctl rules"),
    (6, "abstract-unix and signal scoping"),
];

fn check_landlock() -> Check {
    const NAME: &str = "landlock";
    let Some(abi) = probe_abi() else {
        return check(
            NAME,
            Status::Missing,
            "not available (not built in or not enabled at boot)".into(),
            Some("boot with lsm=landlock,<current list from /sys/kernel/security/lsm> (kernel ≥ 5.13, CONFIG_SECURITY_LANDLOCK=y)".into()),
        );
    };
    let missing: Vec<&str> = LANDLOCK_FEATURES
        .iter()
        .filter(|(needed, _)| abi < *needed)
        .map(|(_, what)| *what)
        .collect();
    if missing.is_empty() {
        check(NAME, Status::Ok, format!("ABI {abi}"), None)
    } else {
        let refused = if abi < 6 {
            "; the profiles build, strict and net (scoping, ABI 6) refuse to start, dev runs best-effort"
        } else {
            ""
        };
        check(
            NAME,
            Status::Warn,
            format!("ABI {abi}; missing: {}{refused}", missing.join(", ")),
            Some("a kernel ≥ 6.12 gives ABI 6".into()),
        )
    }
}

fn proc_status_field(field: &str) -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(field)?
            .strip_prefix(':')
            .map(|v| v.trim().to_string())
    })
}

fn check_seccomp() -> Check {
    const NAME: &str = "seccomp";
    let avail = crate::sys::confine::action_available(libc::SECCOMP_RET_ERRNO);
    let mode = proc_status_field("Seccomp").unwrap_or_else(|| "?".into());
    let filters = proc_status_field("Seccomp_filters").unwrap_or_else(|| "?".into());
    let this = format!("this process: mode {mode}, {filters} filter(s)");
    if let Err(e) = avail {
        let e = std::io::Error::from(e);
        return check(
            NAME,
            Status::Missing,
            format!("filter mode unavailable: {e}; {this}"),
            Some("a kernel with CONFIG_SECCOMP_FILTER=y".into()),
        );
    }
    let nested = if mode == "2" {
        " (already filtered by a parent: sbox's filter stacks on top)"
    } else {
        ""
    };
    check(
        NAME,
        Status::Ok,
        format!("filter mode available; {this}{nested}"),
        None,
    )
}

fn is_cgroup2(path: &str) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// The unified-hierarchy path of this process ("0::/path" in /proc/self/cgroup).
fn own_cgroup_path() -> Option<String> {
    let content = fs::read_to_string("/proc/self/cgroup").ok()?;
    content
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
}

/// What the limits fall back to without a delegated cgroup v2.
fn limits_fallback(uid: u32) -> String {
    let pids = match crate::limits::nested_pids_unavailable(crate::limits::kernel_version(), uid) {
        None => "--pids to RLIMIT_NPROC of a nested user namespace (the whole sandbox)".to_string(),
        Some(why) => format!("--pids is refused ({why})"),
    };
    format!("limits fall back: {pids}, --memory to RLIMIT_AS per process, --cpus to CPU affinity")
}

fn check_cgroup_v2(uid: u32) -> Check {
    const NAME: &str = "cgroup v2 delegation";
    let fallback = limits_fallback(uid);
    if !is_cgroup2("/sys/fs/cgroup") {
        let kind = if is_cgroup2("/sys/fs/cgroup/unified") {
            "hybrid (v1 controllers, v2 only for tracking)"
        } else {
            "v1"
        };
        return check(
            NAME,
            Status::Warn,
            format!("/sys/fs/cgroup is cgroup {kind}; {fallback}"),
            Some("boot with systemd.unified_cgroup_hierarchy=1".into()),
        );
    }
    let Some(rel) = own_cgroup_path() else {
        return check(
            NAME,
            Status::Warn,
            format!("no cgroup v2 entry in /proc/self/cgroup; {fallback}"),
            None,
        );
    };
    let dir = Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'));
    let controllers = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    let writable = |p: &Path| nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok();
    let delegated = writable(&dir)
        && writable(&dir.join("cgroup.subtree_control"))
        && writable(&dir.join("cgroup.procs"));
    let detail = format!("{} (controllers: {})", dir.display(), controllers.trim());
    if delegated && has("memory") && has("pids") {
        check(
            NAME,
            Status::Ok,
            format!("{detail} is delegated: --memory, --pids and --cpus use it"),
            None,
        )
    } else {
        check(
            NAME,
            Status::Warn,
            format!("{detail} is not delegated with memory and pids; {fallback}"),
            Some(
                "run sbox in a delegated scope: systemd-run --user --scope -p Delegate=yes sbox …"
                    .into(),
            ),
        )
    }
}

fn check_network_helper(name: &'static str, package: &str) -> Check {
    match find_program(name) {
        Some(p) => check(name, Status::Ok, format!("found at {}", p.display()), None),
        None => check(
            name,
            Status::Warn,
            if name == "pasta" {
                "not installed; --net user falls back to slirp4netns".into()
            } else {
                "not installed; --net user needs pasta then".into()
            },
            Some(format!("apt install {package}")),
        ),
    }
}

/// What the network is in a run of each profile (sbox run --profile NAME).
fn check_profile_networks() -> Check {
    let search = crate::profile::SearchPath::from_host();
    let mut parts = Vec::new();
    for (name, _) in crate::profile::list(&search) {
        let Ok(l) = crate::profile::load(&name, &search) else {
            continue;
        };
        let n = &l.profile.network;
        parts.push(if n.allow.is_empty() {
            format!(
                "{name}: {}",
                n.mode.map_or_else(|| "none".to_string(), |m| m.to_string())
            )
        } else {
            format!("{name}: {} names", n.allow.len())
        });
    }
    check(
        "network per profile",
        Status::Ok,
        format!(
            "{} (names: own namespace where only the listed names are reached, by sbox's DNS and TCP forwarder)",
            parts.join("; ")
        ),
        None,
    )
}

/// Signs that this process runs inside a container.
fn container_markers() -> Vec<String> {
    let mut found = Vec::new();
    for (path, what) in [("/.dockerenv", "docker"), ("/run/.containerenv", "podman")] {
        if Path::new(path).exists() {
            found.push(format!("{what} ({path})"));
        }
    }
    if let Ok(cg) = fs::read_to_string("/proc/1/cgroup") {
        for hint in ["docker", "kubepods", "libpod", "lxc", "containerd"] {
            if cg.contains(hint) {
                found.push(format!("{hint} in /proc/1/cgroup"));
            }
        }
    }
    if let Some(v) = read_trimmed("/run/systemd/container") {
        found.push(format!("systemd says {v}"));
    }
    found
}

fn check_container() -> Check {
    const NAME: &str = "container";
    let markers = container_markers();
    if markers.is_empty() {
        check(NAME, Status::Ok, "not nested in a container".into(), None)
    } else {
        check(
            NAME,
            Status::Ok,
            format!("nested in a container: {}", markers.join(", ")),
            None,
        )
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn free_subid_range_skips_taken_ones() {
        assert_eq!(super::free_subid_start(&[""]), 100_000);
        assert_eq!(super::free_subid_start(&["a:100000:65536\n"]), 165_536);
        assert_eq!(
            super::free_subid_start(&["a:100000:65536\nb:165536:65536\n", "c:300000:10\n"]),
            231_072
        );
        assert_eq!(super::free_subid_start(&["a:200000:65536\n"]), 100_000);
    }

    use super::*;

    fn alice() -> UserInfo {
        UserInfo {
            uid: 1000,
            gid: 1000,
            name: "alice".into(),
        }
    }

    #[test]
    fn the_range_reported_is_the_first_newuidmap_uses() {
        let f = std::env::temp_dir().join(format!("sbox-subid-{}", std::process::id()));
        let user = UserInfo {
            uid: 1000,
            gid: 2000,
            name: "alice".into(),
        };
        let file = f.to_string_lossy().into_owned();
        std::fs::write(&f, "bob:1:65536\n1000:500000:0\nalice:700000:65536\n").expect("w");
        let c = check_subids("subuid range", &file, &user, false);
        assert_eq!(c.status, Status::Ok, "{}", c.detail);
        assert!(c.detail.contains("65536 ids from 700000"), "{}", c.detail);
        std::fs::write(&f, "2000:100:70000\nalice:700000:1000\n1000:800000:65536\n").expect("w");
        let c = check_subids("subuid range", &file, &user, false);
        assert_eq!(c.status, Status::Warn, "{}", c.detail);
        assert!(c.detail.contains("1000 ids from 700000"), "{}", c.detail);
        assert!(c.detail.contains("2 ranges"), "{}", c.detail);
        // gids: by name or uid first, by gid after.
        let c = check_subids("subgid range", &file, &user, true);
        assert!(c.detail.contains("1000 ids from 700000"), "{}", c.detail);
        assert!(c.detail.contains("3 ranges"), "{}", c.detail);
        std::fs::write(&f, "2000:100:70000\n").expect("w");
        let c = check_subids("subgid range", &file, &user, true);
        assert_eq!(c.status, Status::Ok, "{}", c.detail);
        assert!(c.detail.contains("70000 ids from 100"), "{}", c.detail);
        std::fs::remove_file(&f).ok();
    }

    #[test]
    fn subid_ranges_by_name_or_uid() {
        let content =
            "# comment\nbob:100000:65536\nalice:165536:65536\n1000:300000:1000\nbad line\n";
        assert_eq!(
            parse_subid_ranges(content, &alice()),
            vec![(165536, 65536), (300000, 1000)]
        );
        assert!(parse_subid_ranges("bob:1:2\n", &alice()).is_empty());
    }

    fn sample() -> Vec<Check> {
        vec![
            check(CHECK_USER_NAMESPACES, Status::Ok, "works".into(), None),
            check(
                "/dev/fuse",
                Status::Missing,
                "denied".into(),
                Some("chmod 0666 /dev/fuse".into()),
            ),
        ]
    }

    #[test]
    fn text_has_one_line_per_check() {
        let text = render_text(&sample());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("OK       user namespaces  works"));
        assert!(lines[1].starts_with("MISSING  /dev/fuse"));
        assert!(lines[1].ends_with("denied — fix: chmod 0666 /dev/fuse"));
    }

    #[test]
    fn json_has_stable_keys() {
        let v: serde_json::Value = serde_json::from_str(&render_json(&sample())).unwrap();
        assert_eq!(v[0]["name"], "user namespaces");
        assert_eq!(v[0]["status"], "ok");
        assert!(v[0]["fix"].is_null());
        assert_eq!(v[1]["status"], "missing");
        assert_eq!(v[1]["fix"], "chmod 0666 /dev/fuse");
    }

    #[test]
    fn can_run_needs_user_namespaces() {
        let mut checks = sample();
        assert!(can_run(&checks));
        checks[0].status = Status::Missing;
        assert!(!can_run(&checks));
        checks[0].status = Status::Warn;
        assert!(can_run(&checks));
    }
}
