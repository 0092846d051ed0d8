//! Resource limits of a sandbox: cgroup v2 when the user has a delegated
//! subtree, else rlimits (and CPU affinity for --cpus), and for --pids a
//! nested user namespace whose RLIMIT_NPROC counts the whole sandbox.
//! Parsing and the choice of mechanism are pure; `Cgroup` acts on the host.

use crate::confine::plan::Rlimit;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Limits asked for on the command line or in the profile.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Limits {
    /// Bytes.
    pub memory: Option<u64>,
    pub pids: Option<u64>,
    pub cpus: Option<f64>,
    pub nofile: Option<u64>,
    #[serde(skip)]
    pub timeout: Option<Duration>,
}

/// What `parse_size` accepts, for its errors.
const SIZE_FORMS: &str = "not a size: a number of bytes, or one with a unit \
k, M, G or T (binary multiples; also KiB, MiB…, kB, MB…, any case), e.g. 512M, 1.5G";

/// `64M`, `1.5G`, `512k`, `1048576` (bytes; binary multiples).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_lowercase();
            let m: u64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                "t" => 1 << 40,
                _ => {
                    return Err(Error::Usage(format!(
                        "--memory/process.memory {s:?}: {SIZE_FORMS}"
                    )))
                }
            };
            (&t[..i], m)
        }
        None => (t, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| Error::Usage(format!("--memory/process.memory {s:?}: {SIZE_FORMS}")))?;
    let bytes = n * mult as f64;
    if bytes.is_nan() || bytes < 4096.0 {
        return Err(Error::Usage(format!(
            "--memory/process.memory {s:?}: must be at least 4k"
        )));
    }
    if bytes >= (1u64 << 60) as f64 {
        return Err(Error::Usage(format!(
            "--memory/process.memory {s:?}: too large"
        )));
    }
    Ok(bytes as u64)
}

/// Longest `--timeout` accepted (a deadline must fit in an `Instant`).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 86400);

/// `90`, `90s`, `500ms`, `5m`, `2h`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let bad = || {
        Error::Usage(format!(
            "--timeout/process.timeout {s:?}: not a duration (e.g. 30s, 5m, 1h30m)"
        ))
    };
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..end].parse().map_err(|_| bad())?;
        rest = &rest[end..];
        let uend = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let secs = match &rest[..uend] {
            "" | "s" => n,
            "ms" => n / 1000.0,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86400.0,
            _ => return Err(bad()),
        };
        rest = &rest[uend..];
        total = Duration::try_from_secs_f64(secs)
            .ok()
            .and_then(|d| total.checked_add(d))
            .filter(|t| *t <= MAX_TIMEOUT)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "--timeout/process.timeout {s:?}: too long (at most {} days)",
                    MAX_TIMEOUT.as_secs() / 86400
                ))
            })?;
    }
    if total.is_zero() {
        return Err(bad());
    }
    Ok(total)
}

/// How each limit is enforced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitPlan {
    pub rlimits: Vec<(Rlimit, u64)>,
    /// CPUs the payload may run on (rlimit fallback for --cpus).
    pub affinity: Option<usize>,
    /// cgroup v2 files to write: (file, value).
    pub cgroup: Vec<(&'static str, String)>,
    /// --pids without a cgroup: init's RLIMIT_NPROC, and the payloads run
    /// in a user namespace nested in the sandbox's, created by init (see
    /// `nested_pids_unavailable`), so this counts every task of the sandbox.
    pub nested_pids: Option<u64>,
    /// One line per limit: what enforces it.
    pub notes: Vec<String>,
}

/// The oldest kernel whose RLIMIT_NPROC is counted per user namespace with
/// the limits of the namespaces above (ucounts, 5.14; fixed up to 5.17).
pub const NESTED_PIDS_MIN_KERNEL: (u32, u32) = (5, 17);

/// What `--pids` needs without a delegated cgroup v2.
pub const PIDS_CGROUP_HINT: &str =
    "run sbox in a delegated cgroup: systemd-run --user --scope -p Delegate=yes sbox ...";

/// Why `--pids` cannot be enforced without a cgroup here, or `None` when it
/// can. How: init sets its RLIMIT_NPROC to N and creates a user namespace
/// for the payloads. Since Linux 5.14 every task is counted, at fork, under
/// (its user namespace, its uid) and under (each parent namespace, the
/// owner of the namespace below), each level against the RLIMIT_NPROC its
/// creator had; every payload, whatever its uid, so counts against
/// (sandbox namespace, root), where init counts too, with the limit N. Pure.
pub fn nested_pids_unavailable(kernel: (u32, u32), caller_uid: u32) -> Option<String> {
    if kernel < NESTED_PIDS_MIN_KERNEL {
        let (a, b) = NESTED_PIDS_MIN_KERNEL;
        return Some(format!(
            "Linux {}.{} counts RLIMIT_NPROC per uid, not per sandbox (needs {a}.{b})",
            kernel.0, kernel.1
        ));
    }
    if caller_uid == 0 {
        return Some("RLIMIT_NPROC does not apply to the real root user".into());
    }
    None
}

/// The running kernel's version (major, minor); (0, 0) if unknown.
pub fn kernel_version() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or((0, 0), |r| parse_kernel_version(r.trim()))
}

/// `6.18.44-fc` → (6, 18).
pub fn parse_kernel_version(release: &str) -> (u32, u32) {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Decide the mechanism of every limit. `nested_pids` is why --pids cannot
/// be enforced without a cgroup (`nested_pids_unavailable`), if it cannot.
/// Pure.
pub fn build_limit_plan(
    l: &Limits,
    cgroup_available: bool,
    host_cpus: usize,
    nested_pids: Option<&str>,
) -> Result<LimitPlan> {
    let mut p = LimitPlan::default();
    if let Some(m) = l.memory {
        if cgroup_available {
            p.cgroup.push(("memory.max", m.to_string()));
            p.cgroup.push(("memory.swap.max", "0".into()));
            p.notes.push(format!(
                "memory {m} bytes: cgroup v2 memory.max, the whole sandbox, no swap"
            ));
        } else {
            p.rlimits.push((Rlimit::As, m));
            p.notes.push(format!(
                "memory {m} bytes: RLIMIT_AS, the address space of each process, not the sandbox's total (no delegated cgroup v2)"
            ));
        }
    }
    if let Some(n) = l.pids {
        if cgroup_available {
            p.cgroup.push(("pids.max", n.to_string()));
            p.notes.push(format!(
                "pids {n}: cgroup v2 pids.max, processes and threads of the whole sandbox, init included"
            ));
        } else if let Some(why) = nested_pids {
            return Err(Error::Host(format!(
                "--pids/process.pids needs a delegated cgroup v2 here: {why}; {PIDS_CGROUP_HINT}"
            )));
        } else {
            p.nested_pids = Some(n);
            // The payload's own limit, per uid, is N too: init's, which it
            // inherits and could not raise. It replaces a profile's nproc.
            p.rlimits.push((Rlimit::Nproc, n));
            p.notes.push(format!(
                "pids {n}: RLIMIT_NPROC of a nested user namespace, processes and threads of the whole sandbox whatever their uid, init included (no delegated cgroup v2)"
            ));
        }
    }
    if let Some(c) = l.cpus {
        if cgroup_available {
            let period = 100_000u64;
            p.cgroup.push((
                "cpu.max",
                format!("{} {period}", (c * period as f64) as u64),
            ));
            p.notes.push(format!("cpus {c}: cgroup v2 cpu.max"));
        } else {
            let n = (c.ceil() as usize).clamp(1, host_cpus.max(1));
            p.affinity = Some(n);
            p.notes.push(format!(
                "cpus {c}: CPU affinity to {n} CPU(s) (no delegated cgroup v2)"
            ));
        }
    }
    if let Some(n) = l.nofile {
        p.rlimits.push((Rlimit::Nofile, n));
        p.notes.push(format!("nofile {n}: RLIMIT_NOFILE"));
    }
    if let Some(t) = l.timeout {
        p.notes.push(format!(
            "timeout {}s: the launcher stops the sandbox",
            t.as_secs_f64()
        ));
    }
    Ok(p)
}

/// The caller's own cgroup v2 directory, when it is delegated to them with
/// the controllers the limits need.
pub fn delegated_cgroup(need: &[&str]) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let root = Path::new("/sys/fs/cgroup");
    let st = nix::sys::statfs::statfs(root).ok()?;
    if st.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC {
        return None;
    }
    let dir = root.join(rel.trim_start_matches('/'));
    let controllers = std::fs::read_to_string(dir.join("cgroup.controllers")).ok()?;
    let writable = |p: &Path| nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok();
    let ok = need
        .iter()
        .all(|c| controllers.split_whitespace().any(|x| x == *c))
        && writable(&dir)
        && writable(&dir.join("cgroup.subtree_control"));
    ok.then_some(dir)
}

/// The controllers a limit plan needs.
pub fn controllers_for(l: &Limits) -> Vec<&'static str> {
    let mut v = Vec::new();
    if l.memory.is_some() {
        v.push("memory");
    }
    if l.pids.is_some() {
        v.push("pids");
    }
    if l.cpus.is_some() {
        v.push("cpu");
    }
    v
}

/// A cgroup created for one sandbox; removed when dropped.
#[derive(Debug)]
pub struct Cgroup {
    pub dir: PathBuf,
}

impl Cgroup {
    /// Create `PARENT/sbox-PID`, enable the controllers, write the limits.
    /// When the parent holds processes (the launcher itself), the launcher
    /// first moves to a leaf of its own, as the "no internal processes"
    /// rule of cgroup v2 requires.
    pub fn create(parent: &Path, need: &[&str], files: &[(&'static str, String)]) -> Result<Self> {
        let io = |what: String| move |e: std::io::Error| Error::io(what, e);
        let enable: String = need.iter().map(|c| format!("+{c} ")).collect();
        let sub = parent.join("cgroup.subtree_control");
        if std::fs::write(&sub, enable.trim()).is_err() {
            let leaf = parent.join(format!("sbox-launcher-{}", std::process::id()));
            std::fs::create_dir_all(&leaf).map_err(io(format!("creating {}", leaf.display())))?;
            std::fs::write(leaf.join("cgroup.procs"), std::process::id().to_string())
                .map_err(io("moving the launcher to a leaf cgroup".into()))?;
            std::fs::write(&sub, enable.trim()).map_err(io(format!(
                "enabling {} in {}",
                enable.trim(),
                sub.display()
            )))?;
        }
        let dir = parent.join(format!("sbox-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let cg = Cgroup { dir };
        for (f, v) in files {
            let p = cg.dir.join(f);
            if let Err(e) = std::fs::write(&p, v) {
                // memory.swap.max is absent without swap accounting.
                if *f != "memory.swap.max" {
                    return Err(Error::io(format!("writing {}", p.display()), e));
                }
            }
        }
        Ok(cg)
    }

    /// Put a process (the sandbox's init) in the cgroup.
    pub fn add(&self, pid: i32) -> Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .map_err(|e| Error::io("moving the sandbox into its cgroup", e))
    }

    /// memory.current and the CPU seconds used, for `ps`.
    pub fn usage(dir: &Path) -> Option<(u64, f64)> {
        let mem = std::fs::read_to_string(dir.join("memory.current"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cpu = std::fs::read_to_string(dir.join("cpu.stat"))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0) as f64
            / 1e6;
        Some((mem, cpu))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M").expect("s"), 64 << 20);
        assert_eq!(parse_size("1.5g").expect("s"), 3 << 29);
        assert_eq!(parse_size("512KiB").expect("s"), 512 << 10);
        assert_eq!(parse_size("8192").expect("s"), 8192);
        for bad in ["", "x", "12Q", "-5M", "1", "NaN", "inf", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        let huge = parse_size("99999999999T").expect_err("huge").to_string();
        assert!(huge.contains("too large"), "{huge}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s").expect("d"), Duration::from_secs(2));
        assert_eq!(parse_duration("90").expect("d"), Duration::from_secs(90));
        assert_eq!(
            parse_duration("1h30m").expect("d"),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_duration("500ms").expect("d"),
            Duration::from_millis(500)
        );
        for bad in [
            "",
            "0",
            "s",
            "5x",
            "-1s",
            "99999999999999999999999d",
            &"9".repeat(400),
            "101y",
            "36600000d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_duration("36500d").expect("d"),
            Duration::from_secs(36500 * 86400)
        );
    }

    #[test]
    fn mechanisms() {
        let l = Limits {
            memory: Some(64 << 20),
            pids: Some(64),
            cpus: Some(1.5),
            nofile: Some(256),
            timeout: None,
        };
        let r = build_limit_plan(&l, false, 2, None).expect("plan");
        // --pids is the nested namespace's; the payload's own per-uid
        // RLIMIT_NPROC is the same N (never more than the whole).
        assert_eq!(
            r.rlimits,
            vec![
                (Rlimit::As, 64 << 20),
                (Rlimit::Nproc, 64),
                (Rlimit::Nofile, 256)
            ]
        );
        assert_eq!(r.nested_pids, Some(64));
        assert!(r.notes.iter().any(|n| n.contains("nested user namespace")));
        assert!(r.notes.iter().any(|n| n.contains("each process")));
        assert_eq!(r.affinity, Some(2));
        assert!(r.cgroup.is_empty());
        let c = build_limit_plan(&l, true, 2, Some("old kernel")).expect("plan");
        assert_eq!(c.rlimits, vec![(Rlimit::Nofile, 256)]);
        assert_eq!(c.nested_pids, None);
        assert!(c.cgroup.contains(&("pids.max", "64".to_string())));
        assert!(c.cgroup.contains(&("cpu.max", "150000 100000".to_string())));
        assert_eq!(c.affinity, None);
        // Without a cgroup and without the nested namespace: refused.
        let e = build_limit_plan(&l, false, 2, Some("old kernel"))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("--pids") && e.contains("old kernel"), "{e}");
        assert!(e.contains("Delegate=yes"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        // The other limits do not need it.
        let no_pids = Limits {
            pids: None,
            ..l.clone()
        };
        assert!(build_limit_plan(&no_pids, false, 2, Some("old kernel")).is_ok());
    }

    #[test]
    fn nested_pids_needs_a_recent_kernel_and_a_non_root_caller() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v669"), (6, 18));
        assert_eq!(parse_kernel_version("5.4.0"), (5, 4));
        assert_eq!(parse_kernel_version("junk"), (0, 0));
        assert_eq!(nested_pids_unavailable((6, 18), 1000), None);
        assert_eq!(nested_pids_unavailable((5, 17), 1000), None);
        let old = nested_pids_unavailable((5, 15), 1000).expect("old");
        assert!(old.contains("5.15") && old.contains("per uid"), "{old}");
        assert!(nested_pids_unavailable((6, 18), 0).is_some());
    }
}
