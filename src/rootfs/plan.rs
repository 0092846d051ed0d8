//! The mount plan of a sandbox's root: a pure function from the policy and
//! a description of the host to an ordered list of steps. `apply` executes
//! the steps inside the sandbox's mount namespace.

use crate::policy::{Backend, NetMode, Policy};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Top-level host directories that the sandbox gets fresh instances of.
pub const SPECIAL_TOP: &[&str] = &["proc", "sys", "dev", "tmp", "run"];

/// Device nodes bound from the host into the sandbox's /dev.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What the host looks like, as far as the plan needs to know.
#[derive(Debug, Clone, Default)]
pub struct HostView {
    /// Entries of the host `/`: (name, kind).
    pub top: Vec<(String, EntryKind)>,
    /// Targets of the symbolic links among them.
    pub links: Vec<(String, PathBuf)>,
    /// Paths (absolute) that exist on the host, as the plan asks about them.
    pub existing: HashMap<PathBuf, EntryKind>,
    /// The real file /etc/resolv.conf points to, when it lives under /run.
    pub resolv_target: Option<PathBuf>,
    /// Hidden paths and bind sources as the host resolves them (symlinks
    /// followed as far as the path exists), where that differs.
    pub canonical: HashMap<PathBuf, PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    Other,
}

impl HostView {
    fn kind_of(&self, p: &Path) -> Option<EntryKind> {
        self.existing.get(p).copied()
    }

    /// `p` and, when it differs, its canonical form.
    fn forms(&self, p: &Path) -> Vec<PathBuf> {
        let mut v = vec![p.to_path_buf()];
        if let Some(c) = self.canonical.get(p) {
            if c != p {
                v.push(c.clone());
            }
        }
        v
    }
}

/// Directories of the sandbox's private state on the host.
#[derive(Debug, Clone)]
pub struct StatePaths {
    pub root: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// An empty file, mode 0, used to mask files.
    pub empty_file: PathBuf,
    /// Where the whiteout layers of hiding overlays are made.
    pub hide: PathBuf,
}

/// One step of assembling the root. Destinations are absolute paths
/// inside the sandbox (joined to the new root when applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The new root itself: a tmpfs on `StatePaths::root`.
    RootTmpfs,
    /// The new root itself: sbox's FUSE overlay of the host `/` on
    /// `StatePaths::root`, served by the launcher.
    FuseRoot,
    Mkdir {
        dest: PathBuf,
        mode: u32,
    },
    Symlink {
        target: PathBuf,
        dest: PathBuf,
    },
    /// Kernel overlayfs; on failure fall back to a read-only bind.
    Overlay {
        lower: PathBuf,
        upper: PathBuf,
        work: PathBuf,
        dest: PathBuf,
    },
    /// Bind a host path; the mount point is created (dir or file) if missing.
    Bind {
        src: PathBuf,
        dest: PathBuf,
        readonly: bool,
        /// Missing mount points may be created (false: skip when missing).
        create: bool,
    },
    Tmpfs {
        dest: PathBuf,
        mode: u32,
        readonly: bool,
    },
    Proc {
        dest: PathBuf,
    },
    /// A fresh, read-only sysfs (for a sandbox with its own network).
    Sysfs {
        dest: PathBuf,
    },
    Devpts {
        dest: PathBuf,
        tty_gid: Option<u32>,
    },
    /// Hide a path: an empty read-only tmpfs over a directory, an empty
    /// read-only file over anything else; symlinks are resolved inside the
    /// new root.
    Mask {
        dest: PathBuf,
    },
    /// Create a directory or empty file in the overlay's upper layer
    /// before the overlay is mounted (a mount point the lower lacks).
    PrepareUpper {
        path: PathBuf,
        dir: bool,
    },
    /// A bind of a host directory that holds hidden paths: served over
    /// FUSE by the launcher as a passthrough mount (changes go to the host
    /// directory), which refuses the hidden names whether or not they exist
    /// yet. `hidden`: absolute paths inside the mount ("/" is `src`).
    /// Without FUSE: a plain bind with masks on what exists.
    FuseBind {
        src: PathBuf,
        dest: PathBuf,
        readonly: bool,
        hidden: Vec<PathBuf>,
    },
    /// Kernel overlayfs of `lower` under a layer of whiteouts (made in
    /// `layer` first: `dirs`, then `whiteouts`, relative), so that hidden
    /// paths below `lower` stay absent even when the host creates them
    /// later. `upper`: (upper, work), copy-on-write; `None`: read-only. If
    /// it cannot be mounted: a plain overlay (or a read-only bind), where
    /// the masks cover what exists.
    HidingOverlay {
        lower: PathBuf,
        upper: Option<(PathBuf, PathBuf)>,
        dest: PathBuf,
        layer: PathBuf,
        dirs: Vec<PathBuf>,
        whiteouts: Vec<PathBuf>,
    },
}

/// Build the ordered steps that assemble the sandbox root.
pub fn build_plan(
    policy: &Policy,
    host: &HostView,
    state: &StatePaths,
    tty_gid: Option<u32>,
) -> Vec<Step> {
    let fuse = policy.backend == Backend::Fuse;
    let mut steps = vec![if fuse {
        Step::FuseRoot
    } else {
        Step::RootTmpfs
    }];
    let mut overlaid: Vec<String> = Vec::new();
    let mut mounts = Vec::new();
    let top: &[(String, EntryKind)] = if fuse { &[] } else { &host.top };
    let hiding = if fuse {
        Vec::new()
    } else {
        hide_layers(policy, host)
    };
    let hide_in = |name: &str| hiding.iter().find(|(t, _, _)| t == name);
    for (name, kind) in top {
        if SPECIAL_TOP.contains(&name.as_str()) || name == "lost+found" {
            continue;
        }
        if name.contains([',', ':', '\\']) {
            continue; // cannot be named in overlay options
        }
        let dest = Path::new("/").join(name);
        match kind {
            EntryKind::Symlink => {
                if let Some((_, target)) = host.links.iter().find(|(n, _)| n == name) {
                    steps.push(Step::Symlink {
                        target: target.clone(),
                        dest,
                    });
                }
            }
            EntryKind::Dir => {
                steps.push(Step::Mkdir {
                    dest: dest.clone(),
                    mode: 0o755,
                });
                match policy.backend {
                    Backend::Kernel | Backend::Fuse if hide_in(name).is_some() => {
                        overlaid.push(name.clone());
                        mounts.push(hiding_overlay(
                            &dest,
                            Some((state.upper.join(name), state.work.join(name))),
                            state,
                            hide_in(name),
                        ));
                    }
                    Backend::None if hide_in(name).is_some() => {
                        mounts.push(hiding_overlay(&dest, None, state, hide_in(name)));
                    }
                    Backend::Kernel | Backend::Fuse => {
                        overlaid.push(name.clone());
                        mounts.push(Step::Overlay {
                            lower: dest.clone(),
                            upper: state.upper.join(name),
                            work: state.work.join(name),
                            dest,
                        });
                    }
                    Backend::None => mounts.push(Step::Bind {
                        src: dest.clone(),
                        dest,
                        readonly: true,
                        create: false,
                    }),
                }
            }
            EntryKind::File | EntryKind::Other => {}
        }
    }
    // Mount points that the host lacks, under overlaid directories, are made
    // in the upper layer before the overlays are mounted.
    let mut targets: Vec<(PathBuf, bool)> = policy
        .binds
        .iter()
        .map(|b| (b.dest.clone(), host_is_dir(host, &b.src)))
        .collect();
    targets.extend(policy.tmpfs.iter().map(|t| (t.clone(), true)));
    for (dest, dir) in targets {
        let mut comps = dest.components().skip(1);
        let Some(top) = comps.next().and_then(|c| c.as_os_str().to_str()) else {
            continue;
        };
        if !overlaid.iter().any(|o| o == top) || host.kind_of(&dest).is_some() {
            continue;
        }
        let rel: PathBuf = comps.collect();
        steps.push(Step::PrepareUpper {
            path: state.upper.join(top).join(rel),
            dir,
        });
    }
    steps.extend(mounts);
    for name in SPECIAL_TOP {
        steps.push(Step::Mkdir {
            dest: Path::new("/").join(name),
            mode: 0o755,
        });
    }
    steps.push(Step::Proc {
        dest: "/proc".into(),
    });
    steps.push(match policy.net {
        // sysfs shows the network devices of the namespace that mounts it.
        NetMode::None | NetMode::User => Step::Sysfs {
            dest: "/sys".into(),
        },
        NetMode::Host => Step::Bind {
            src: "/sys".into(),
            dest: "/sys".into(),
            readonly: true,
            create: false,
        },
    });
    steps.extend(dev_steps(tty_gid));
    steps.push(Step::Tmpfs {
        dest: "/tmp".into(),
        mode: 0o1777,
        readonly: false,
    });
    steps.push(Step::Tmpfs {
        dest: "/run".into(),
        mode: 0o755,
        readonly: false,
    });
    if let Some(t) = &host.resolv_target {
        steps.push(Step::Bind {
            src: t.clone(),
            dest: t.clone(),
            readonly: true,
            create: true,
        });
    }
    if policy.image.is_some() {
        // An image's root gets the host's name service files, as docker
        // gives them (a network of its own binds its own over them).
        // (Resolved here: the bind opens its source without links.)
        for dest in ["/etc/resolv.conf", "/etc/hosts"] {
            if let Ok(src) = std::fs::canonicalize(dest) {
                steps.push(Step::Bind {
                    src,
                    dest: dest.into(),
                    readonly: true,
                    create: true,
                });
            }
        }
    }
    for b in &policy.binds {
        let hidden = bind_hidden(policy, host, b);
        if !hidden.is_empty() {
            steps.push(Step::FuseBind {
                src: b.src.clone(),
                dest: b.dest.clone(),
                readonly: b.readonly,
                hidden,
            });
            continue;
        }
        steps.push(Step::Bind {
            src: b.src.clone(),
            dest: b.dest.clone(),
            readonly: b.readonly,
            create: true,
        });
    }
    for t in &policy.tmpfs {
        steps.push(Step::Tmpfs {
            dest: t.clone(),
            mode: 0o755,
            readonly: false,
        });
    }
    steps.extend(mask_steps(policy, host));
    steps
}

/// Paths the FUSE overlay shows as empty directories: the places sbox
/// mounts its own /proc, /sys, /dev, /tmp and /run over, and sbox's own
/// state (other sandboxes' layers, trust records).
pub fn fuse_empty_dirs(runtime_base: &Path, data_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = SPECIAL_TOP.iter().map(|n| Path::new("/").join(n)).collect();
    for p in [runtime_base, data_dir] {
        if !v.iter().any(|e| p.starts_with(e)) {
            v.push(p.to_path_buf());
        }
    }
    v
}

fn host_is_dir(host: &HostView, p: &Path) -> bool {
    !matches!(host.kind_of(p), Some(EntryKind::File | EntryKind::Other))
}

fn dev_steps(tty_gid: Option<u32>) -> Vec<Step> {
    let mut v = vec![Step::Tmpfs {
        dest: "/dev".into(),
        mode: 0o755,
        readonly: false,
    }];
    for d in DEVICES {
        v.push(Step::Bind {
            src: Path::new("/dev").join(d),
            dest: Path::new("/dev").join(d),
            readonly: false,
            create: true,
        });
    }
    v.push(Step::Mkdir {
        dest: "/dev/pts".into(),
        mode: 0o755,
    });
    v.push(Step::Devpts {
        dest: "/dev/pts".into(),
        tty_gid,
    });
    v.push(Step::Mkdir {
        dest: "/dev/shm".into(),
        mode: 0o1777,
    });
    v.push(Step::Tmpfs {
        dest: "/dev/shm".into(),
        mode: 0o1777,
        readonly: false,
    });
    for (target, link) in [
        ("pts/ptmx", "ptmx"),
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ] {
        v.push(Step::Symlink {
            target: target.into(),
            dest: Path::new("/dev").join(link),
        });
    }
    v
}

/// Masks for every hidden path that exists, at its own place and wherever
/// a bind makes it visible again under another name. The FUSE overlay
/// hides the paths itself, so with it only places under binds (which bypass
/// it) get masks; a passthrough bind hides them too, so places it shows
/// get none (but a hidden bind source itself is masked whole).
fn mask_steps(policy: &Policy, host: &HostView) -> Vec<Step> {
    let mut v = Vec::new();
    let fuse = policy.backend == Backend::Fuse;
    let passthrough: Vec<bool> = policy
        .binds
        .iter()
        .map(|b| !bind_hidden(policy, host, b).is_empty())
        .collect();
    // The bind that shows `p` is the last one mounted on it or above it.
    let shown_by_passthrough = |p: &Path| {
        policy
            .binds
            .iter()
            .rposition(|b| p.starts_with(&b.dest))
            .is_some_and(|i| passthrough[i] && p != policy.binds[i].dest)
    };
    for h in &policy.hidden {
        if host.kind_of(h).is_none() {
            continue;
        }
        let canonical = host.canonical.get(h).cloned();
        let mut places = if fuse { vec![] } else { vec![h.clone()] };
        for b in &policy.binds {
            let rel = canonical
                .as_deref()
                .and_then(|c| c.strip_prefix(&b.src).ok())
                .or_else(|| h.strip_prefix(&b.src).ok());
            if let Some(rel) = rel {
                let alias = b.dest.join(rel);
                if !places.contains(&alias) {
                    places.push(alias);
                }
            }
            if fuse && h.starts_with(&b.dest) && !places.contains(h) {
                places.push(h.clone());
            }
        }
        for dest in places {
            if !shown_by_passthrough(&dest) {
                v.push(Step::Mask { dest });
            }
        }
    }
    v
}

/// The hidden paths a bind shows (absolute inside the mount, "/" being its
/// source): below its source (as given or resolved) or below its
/// destination. Empty for a source that is not a directory.
pub fn bind_hidden(policy: &Policy, host: &HostView, b: &crate::policy::Bind) -> Vec<PathBuf> {
    let sources = host.forms(&b.src);
    let is_dir = sources
        .iter()
        .rev()
        .find_map(|s| host.kind_of(s))
        .is_some_and(|k| k == EntryKind::Dir);
    if !is_dir {
        return Vec::new();
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for h in &policy.hidden {
        let mut rels: Vec<&Path> = Vec::new();
        let forms = host.forms(h);
        for f in &forms {
            for s in &sources {
                if let Ok(r) = f.strip_prefix(s) {
                    rels.push(r);
                }
            }
        }
        if let Ok(r) = h.strip_prefix(&b.dest) {
            rels.push(r);
        }
        for r in rels {
            let p = Path::new("/").join(r);
            if r.as_os_str().is_empty() || out.contains(&p) {
                continue;
            }
            out.push(p);
        }
    }
    out
}

/// Top-level host directory → (directories, whiteouts) of the layer that
/// hides the hidden paths below it from a kernel overlay of it: the path's
/// existing parent directories, then a whiteout on the path itself, or on
/// its first missing parent (a directory made there later stays hidden:
/// the whiteout cannot sit lower). A parent that is a symlink or a file
/// stops the walk (the resolved form of the path is walked too).
fn hide_layers(policy: &Policy, host: &HostView) -> Vec<(String, Vec<PathBuf>, Vec<PathBuf>)> {
    use std::collections::BTreeMap;
    use std::path::Component;
    let mut layers: BTreeMap<String, (Vec<PathBuf>, Vec<PathBuf>)> = BTreeMap::new();
    for h in &policy.hidden {
        for form in host.forms(h) {
            let mut comps = form.components().filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            });
            let Some(top) = comps.next().and_then(|t| t.to_str()) else {
                continue;
            };
            let is_top_dir = host
                .top
                .iter()
                .any(|(n, k)| n == top && *k == EntryKind::Dir);
            if !is_top_dir
                || SPECIAL_TOP.contains(&top)
                || top == "lost+found"
                || top.contains([',', ':', '\\'])
            {
                continue;
            }
            let rest: Vec<_> = comps.collect();
            let (dirs, whiteouts) = layers.entry(top.to_string()).or_default();
            let mut host_path = Path::new("/").join(top);
            let mut rel = PathBuf::new();
            for (i, c) in rest.iter().enumerate() {
                host_path.push(c);
                rel.push(c);
                if i + 1 == rest.len() {
                    whiteouts.push(rel.clone());
                    break;
                }
                match host.kind_of(&host_path) {
                    Some(EntryKind::Dir) => dirs.push(rel.clone()),
                    None => {
                        whiteouts.push(rel.clone());
                        break;
                    }
                    Some(_) => break,
                }
            }
        }
    }
    layers
        .into_iter()
        .filter_map(|(top, (mut dirs, mut whiteouts))| {
            // Sorted by components, a path's descendants follow it: keep
            // the whiteouts no kept one covers.
            whiteouts.sort();
            whiteouts.dedup();
            let mut kept: Vec<PathBuf> = Vec::with_capacity(whiteouts.len());
            for w in whiteouts {
                if !kept.last().is_some_and(|k| w.starts_with(k)) {
                    kept.push(w);
                }
            }
            let whiteouts = kept;
            let covered: HashSet<&Path> = whiteouts.iter().map(PathBuf::as_path).collect();
            dirs.sort();
            dirs.dedup();
            dirs.retain(|d| !d.ancestors().any(|a| covered.contains(a)));
            (!whiteouts.is_empty()).then_some((top, dirs, whiteouts))
        })
        .collect()
}

fn hiding_overlay(
    dest: &Path,
    upper: Option<(PathBuf, PathBuf)>,
    state: &StatePaths,
    layer: Option<&(String, Vec<PathBuf>, Vec<PathBuf>)>,
) -> Step {
    let (name, dirs, whiteouts) = layer.cloned().unwrap_or_default();
    Step::HidingOverlay {
        lower: dest.to_path_buf(),
        upper,
        dest: dest.to_path_buf(),
        layer: state.hide.join(name),
        dirs,
        whiteouts,
    }
}

/// The host paths `build_plan` wants to know about.
/// Whether init hands the sandbox's /proc to the launcher (after `Ready`):
/// when the launcher serves FUSE mounts and the plan mounts a new /proc.
pub fn hands_over_procfs(steps: &[Step]) -> bool {
    let fuse = steps
        .iter()
        .any(|s| matches!(s, Step::FuseRoot | Step::FuseBind { .. }));
    let proc_mounted = steps
        .iter()
        .any(|s| matches!(s, Step::Proc { dest } if dest == Path::new("/proc")));
    fuse && proc_mounted
}

pub fn paths_to_probe(policy: &Policy) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = policy.hidden.clone();
    let mut seen: HashSet<&Path> = policy.hidden.iter().map(PathBuf::as_path).collect();
    // Their parents, for the whiteout layers of the kernel overlays.
    for h in &policy.hidden {
        for a in h.ancestors().skip(1) {
            if a.parent().is_some() && seen.insert(a) {
                v.push(a.to_path_buf());
            }
        }
    }
    for b in &policy.binds {
        v.push(b.src.clone());
        v.push(b.dest.clone());
    }
    v.extend(policy.tmpfs.iter().cloned());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Bind, Caller};

    fn policy() -> Policy {
        policy_with(Backend::Kernel)
    }

    fn policy_with(backend: Backend) -> Policy {
        Policy {
            profile: "t".into(),
            argv: vec!["true".into()],
            tty: false,
            caller: Caller {
                uid: 1000,
                gid: 1000,
                name: "u".into(),
                home: "/home/u".into(),
                shell: None,
            },
            project: "/home/u/p".into(),
            notes: vec![],
            binds: vec![
                Bind {
                    src: "/home/u/p".into(),
                    dest: "/home/u/p".into(),
                    readonly: false,
                },
                Bind {
                    src: "/home/u".into(),
                    dest: "/mnt/home".into(),
                    readonly: true,
                },
            ],
            output: None,
            tmpfs: vec!["/opt/scratch".into()],
            hidden_canonical: Default::default(),
            host_found: Default::default(),
            hidden: vec![
                "/home/u/.ssh".into(),
                "/home/u/.netrc".into(),
                "/home/u/.aws".into(),
            ],
            backend,
            net: NetMode::None,
            publish: vec![],
            allow_host_loopback: false,
            egress: None,
            hostname: "sbox".into(),
            chdir: "/home/u/p".into(),
            env: Default::default(),
            map_user: false,
            verbose: false,
            log_denials: false,
            new_session: true,
            persist_project: false,
            hangup: false,
            sessions: false,
            host_cache: std::time::Duration::from_secs(2),
            confinement: Default::default(),
            limits: Default::default(),
            limit_plan: Default::default(),
            cgroup_parent: None,
            image: None,
        }
    }

    fn host() -> HostView {
        HostView {
            top: vec![
                ("usr".into(), EntryKind::Dir),
                ("bin".into(), EntryKind::Symlink),
                ("home".into(), EntryKind::Dir),
                ("mnt".into(), EntryKind::Dir),
                ("opt".into(), EntryKind::Dir),
                ("proc".into(), EntryKind::Dir),
                ("lost+found".into(), EntryKind::Dir),
                ("swapfile".into(), EntryKind::File),
            ],
            links: vec![("bin".into(), "usr/bin".into())],
            existing: HashMap::from([
                ("/home/u/p".into(), EntryKind::Dir),
                ("/home/u".into(), EntryKind::Dir),
                ("/home/u/.ssh".into(), EntryKind::Dir),
                ("/home/u/.netrc".into(), EntryKind::File),
            ]),
            resolv_target: None,
            canonical: HashMap::new(),
        }
    }

    fn state() -> StatePaths {
        StatePaths {
            root: "/s/root".into(),
            upper: "/s/upper".into(),
            work: "/s/work".into(),
            empty_file: "/s/empty".into(),
            hide: "/s/hide".into(),
        }
    }

    #[test]
    fn overlays_every_top_level_dir_but_specials() {
        let steps = build_plan(&policy(), &host(), &state(), None);
        let overlays: Vec<_> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Overlay { dest, .. } | Step::HidingOverlay { dest, .. } => Some(dest.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            overlays,
            vec![
                PathBuf::from("/usr"),
                "/home".into(),
                "/mnt".into(),
                "/opt".into()
            ]
        );
        assert!(steps.contains(&Step::Proc {
            dest: "/proc".into()
        }));
        assert!(steps
            .iter()
            .any(|s| matches!(s, Step::Symlink { dest, .. } if dest == Path::new("/bin"))));
    }

    #[test]
    fn missing_mount_points_are_prepared_in_upper_before_overlays() {
        let steps = build_plan(&policy(), &host(), &state(), None);
        let prep = steps
            .iter()
            .position(|s| {
                *s == Step::PrepareUpper {
                    path: "/s/upper/opt/scratch".into(),
                    dir: true,
                }
            })
            .expect("prepare");
        let mnt = steps
            .iter()
            .position(|s| {
                *s == Step::PrepareUpper {
                    path: "/s/upper/mnt/home".into(),
                    dir: true,
                }
            })
            .expect("prepare mnt");
        let first_overlay = steps
            .iter()
            .position(|s| matches!(s, Step::Overlay { .. }))
            .expect("overlay");
        assert!(prep < first_overlay && mnt < first_overlay);
        // The project exists on the host: nothing to prepare.
        assert!(!steps
            .iter()
            .any(|s| matches!(s, Step::PrepareUpper { path, .. } if path.ends_with("p"))));
    }

    #[test]
    fn masks_come_last_and_binds_holding_hidden_paths_go_through_fuse() {
        let steps = build_plan(&policy(), &host(), &state(), None);
        let n = steps.len();
        // Masks only for what exists, at its own place: /mnt/home (the
        // home bound elsewhere) is a passthrough mount that hides them.
        assert_eq!(
            steps[n - 2..].to_vec(),
            vec![
                Step::Mask {
                    dest: "/home/u/.ssh".into()
                },
                Step::Mask {
                    dest: "/home/u/.netrc".into()
                },
            ]
        );
        assert!(!steps
            .iter()
            .any(|s| matches!(s, Step::Mask { dest } if dest.starts_with("/mnt"))));
        // ~/.aws does not exist on the host: no mask, but the passthrough
        // mount refuses it too, whether or not it exists later.
        assert!(steps.contains(&Step::FuseBind {
            src: "/home/u".into(),
            dest: "/mnt/home".into(),
            readonly: true,
            hidden: vec!["/.ssh".into(), "/.netrc".into(), "/.aws".into()],
        }));
        // The project holds no hidden path: a plain bind.
        assert!(steps.contains(&Step::Bind {
            src: "/home/u/p".into(),
            dest: "/home/u/p".into(),
            readonly: false,
            create: true,
        }));
    }

    #[test]
    fn fuse_root_masks_only_where_binds_bypass_it() {
        let mut p = policy_with(Backend::Fuse);
        // A plain bind over the place of a hidden path (its source is
        // another directory, which holds no hidden path).
        p.binds[1] = Bind {
            src: "/opt/fake".into(),
            dest: "/home/u/.ssh".into(),
            readonly: true,
        };
        let mut h = host();
        h.existing.insert("/opt/fake".into(), EntryKind::Dir);
        let steps = build_plan(&p, &h, &state(), None);
        assert_eq!(steps[0], Step::FuseRoot);
        assert!(!steps
            .iter()
            .any(|s| matches!(s, Step::Overlay { .. } | Step::RootTmpfs)));
        let masks: Vec<_> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Mask { dest } => Some(dest.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(masks, vec![PathBuf::from("/home/u/.ssh")]);
    }

    #[test]
    fn a_hidden_bind_source_is_masked_whole() {
        for backend in [Backend::Fuse, Backend::Kernel] {
            let mut p = policy_with(backend);
            p.binds.push(Bind {
                src: "/home/u/.ssh".into(),
                dest: "/keys".into(),
                readonly: true,
            });
            let steps = build_plan(&p, &host(), &state(), None);
            assert!(steps.contains(&Step::Mask {
                dest: "/keys".into()
            }));
            assert!(steps.contains(&Step::Bind {
                src: "/home/u/.ssh".into(),
                dest: "/keys".into(),
                readonly: true,
                create: true,
            }));
        }
    }

    #[test]
    fn a_bind_over_the_home_is_served_over_fuse_whatever_exists() {
        for backend in [Backend::Fuse, Backend::Kernel, Backend::None] {
            let mut p = policy_with(backend);
            p.binds = vec![Bind {
                src: "/home/u".into(),
                dest: "/home/u".into(),
                readonly: false,
            }];
            let mut h = host();
            // No hidden path exists yet.
            h.existing
                .retain(|p, _| !p.to_string_lossy().starts_with("/home/u/."));
            let steps = build_plan(&p, &h, &state(), None);
            assert!(
                steps.contains(&Step::FuseBind {
                    src: "/home/u".into(),
                    dest: "/home/u".into(),
                    readonly: false,
                    hidden: vec!["/.ssh".into(), "/.netrc".into(), "/.aws".into()],
                }),
                "{backend:?}: {steps:?}"
            );
            assert!(!steps.iter().any(|s| matches!(s, Step::Mask { .. })));
        }
    }

    #[test]
    fn kernel_overlays_hide_hidden_paths_under_a_whiteout_layer() {
        let mut h = host();
        h.existing.insert("/home/u/.config".into(), EntryKind::Dir);
        h.existing.insert("/home/u/dots".into(), EntryKind::Dir);
        h.existing.insert("/home/u/.gem".into(), EntryKind::Symlink);
        h.canonical = HashMap::from([(
            "/home/u/.gem/credentials".into(),
            "/home/u/dots/gem/credentials".into(),
        )]);
        let mut p = policy();
        p.hidden = vec![
            "/home/u/.ssh".into(),
            "/home/u/.config/gh".into(),
            "/home/u/.docker/config.json".into(),
            "/home/u/.cargo/credentials".into(),
            "/home/u/.cargo/credentials.toml".into(),
            "/home/u/.gem/credentials".into(),
            "/opt".into(),
        ];
        let steps = build_plan(&p, &h, &state(), None);
        let hiding: Vec<_> = steps
            .iter()
            .filter(|s| matches!(s, Step::HidingOverlay { .. }))
            .collect();
        assert_eq!(
            hiding,
            vec![&Step::HidingOverlay {
                lower: "/home".into(),
                upper: Some(("/s/upper/home".into(), "/s/work/home".into())),
                dest: "/home".into(),
                layer: "/s/hide/home".into(),
                // Existing parents are directories of the layer; a missing
                // one gets the whiteout; a symlink stops the walk of the
                // literal path, its resolved form is walked instead.
                dirs: vec!["u".into(), "u/.config".into(), "u/dots".into()],
                whiteouts: vec![
                    "u/.cargo".into(),
                    "u/.config/gh".into(),
                    "u/.docker".into(),
                    "u/.ssh".into(),
                    "u/dots/gem".into(),
                ],
            }]
        );
        // With the host read-only (--overlay none): a read-only overlay.
        p.backend = Backend::None;
        let steps = build_plan(&p, &h, &state(), None);
        assert!(steps.iter().any(|s| matches!(s,
            Step::HidingOverlay { dest, upper: None, .. } if dest == Path::new("/home"))));
        assert!(steps.contains(&Step::Bind {
            src: "/usr".into(),
            dest: "/usr".into(),
            readonly: true,
            create: false
        }));
        // The FUSE root hides them itself.
        p.backend = Backend::Fuse;
        let steps = build_plan(&p, &h, &state(), None);
        assert!(!steps
            .iter()
            .any(|s| matches!(s, Step::HidingOverlay { .. })));
    }

    #[test]
    fn masks_follow_the_canonical_home() {
        let mut h = host();
        h.canonical = HashMap::from([("/home/u/.ssh".into(), "/var/home/u/.ssh".into())]);
        let mut p = policy();
        p.binds[1].src = "/var/home/u".into();
        let steps = build_plan(&p, &h, &state(), None);
        assert!(steps.contains(&Step::Mask {
            dest: "/mnt/home/.ssh".into()
        }));
    }

    #[test]
    fn backend_none_binds_read_only() {
        let mut p = policy();
        p.backend = Backend::None;
        let steps = build_plan(&p, &host(), &state(), None);
        assert!(!steps.iter().any(|s| matches!(s, Step::Overlay { .. })));
        assert!(steps.contains(&Step::Bind {
            src: "/usr".into(),
            dest: "/usr".into(),
            readonly: true,
            create: false
        }));
    }
}
