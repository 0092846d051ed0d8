//! Carry out a mount plan inside the sandbox's mount namespace, then make
//! the assembled tree the root.

use super::plan::{EntryKind, HostView, StatePaths, Step};
use crate::error::{Error, IoContext, NixContext, Result};
use crate::hostpath::{self, Found};
use crate::policy::Policy;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Look at the host for what the plan needs (run by the launcher or init
/// before any mount changes).
pub fn probe_host(policy: &Policy) -> HostView {
    let mut view = HostView::default();
    if let Ok(rd) = std::fs::read_dir("/") {
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let kind = e.file_type().map(kind_of).unwrap_or(EntryKind::Other);
            if kind == EntryKind::Symlink {
                if let Ok(t) = std::fs::read_link(e.path()) {
                    view.links.push((name.clone(), t));
                }
            }
            view.top.push((name, kind));
        }
    }
    let mut probe = super::plan::paths_to_probe(policy);
    let sources = policy.binds.iter().map(|b| &b.src);
    let mut canon = crate::hostpath::CanonCache::default();
    for p in policy.hidden.iter().chain(sources) {
        let known = policy.hidden_canonical.get(p).cloned();
        if let Some(c) = known.or_else(|| canon.prefix(p)) {
            if &c != p && !view.canonical.contains_key(p) {
                // Where the resolved form and its parents are, too.
                probe.extend(
                    c.ancestors()
                        .filter(|a| a.parent().is_some())
                        .map(Path::to_path_buf),
                );
                view.canonical.insert(p.clone(), c);
            }
        }
    }
    // Parents first: below a missing directory nothing is looked up.
    probe.sort_by_key(|p| p.components().count());
    let mut missing = std::collections::HashSet::new();
    for p in probe {
        if view.existing.contains_key(&p) || missing.contains(&p) {
            continue;
        }
        if p.parent().is_some_and(|d| missing.contains(d)) {
            missing.insert(p);
            continue;
        }
        // Seen when the policy resolved the hidden paths.
        match policy.host_found.get(&p) {
            Some(Found::Missing) => {
                missing.insert(p);
                continue;
            }
            Some(f) => {
                view.existing.insert(p, entry_kind(*f));
                continue;
            }
            None => {}
        }
        match std::fs::symlink_metadata(&p) {
            Ok(md) => {
                view.existing.insert(p, kind_of(md.file_type()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing.insert(p);
            }
            Err(_) => {}
        }
    }
    if let Ok(t) = std::fs::canonicalize("/etc/resolv.conf") {
        if t.starts_with("/run") {
            view.resolv_target = Some(t);
        }
    }
    view
}

fn kind_of(ft: std::fs::FileType) -> EntryKind {
    entry_kind(Found::of(ft))
}

/// The plan's kind of what is there (`Missing` is not asked for).
fn entry_kind(f: Found) -> EntryKind {
    match f {
        Found::Dir => EntryKind::Dir,
        Found::File => EntryKind::File,
        Found::Symlink => EntryKind::Symlink,
        Found::Missing | Found::Other => EntryKind::Other,
    }
}

/// Where a sandbox path lives while the root is assembled.
fn under(root: &Path, dest: &Path) -> PathBuf {
    root.join(dest.strip_prefix("/").unwrap_or(dest))
}

/// Stop mount events from propagating to the host.
pub fn make_private() -> Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .ctx(|| "making / private".into())
}

/// Execute every step, logging to stderr when `verbose`; the descriptors
/// of FUSE mounts go to `serve_fuse` (the launcher serves them) with the
/// index of their step, `None` for the root.
///
/// `project` is the sandbox path of the bound project: mount points
/// declared beneath it must stay beneath it (a symlink in the project may
/// not send a mount elsewhere).
pub fn apply(
    steps: &[Step],
    state: &StatePaths,
    project: Option<&Path>,
    verbose: bool,
    prefetch: &[PathBuf],
    serve_fuse: &mut dyn FnMut(Option<usize>, std::os::fd::OwnedFd) -> Result<()>,
) -> Result<()> {
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::FuseRoot => {
                let fd = apply_fuse_root(&state.root)?;
                serve_fuse(None, fd)?;
                // While the other mounts are made, the files the command
                // read last time are read ahead through the new root.
                if !prefetch.is_empty() {
                    let n = super::prefetch::read_ahead(&state.root, prefetch);
                    log(verbose, || {
                        format!("reading ahead {n} file(s) the command read last time")
                    });
                }
                log(verbose, || "root: FUSE overlay of /".into());
            }
            Step::FuseBind {
                src,
                dest,
                readonly,
                hidden,
            } => {
                let at = mount_point_fd(&state.root, dest, project, hostpath::Kind::Dir)?;
                let at_path = PathBuf::from(format!("/proc/self/fd/{}", at.as_raw_fd()));
                match mount_fuse_bind(src, &at_path, *readonly) {
                    Ok(fd) => {
                        serve_fuse(Some(i), fd)?;
                        log(verbose, || {
                            format!(
                                "bind {} -> {} ({}, over FUSE: {} hidden path(s) below it)",
                                src.display(),
                                dest.display(),
                                if *readonly { "ro" } else { "rw" },
                                hidden.len()
                            )
                        });
                    }
                    Err(e) => {
                        eprintln!(
                            "sbox: warning: {}: {e}; bound directly, so of the hidden paths below it only those that exist now are hidden",
                            dest.display()
                        );
                        apply_step(
                            &Step::Bind {
                                src: src.clone(),
                                dest: dest.clone(),
                                readonly: *readonly,
                                create: true,
                            },
                            state,
                            project,
                            verbose,
                        )?;
                        for h in hidden {
                            let p = dest.join(h.strip_prefix("/").unwrap_or(h));
                            mask(&state.root, &p, &state.empty_file, verbose)?;
                        }
                    }
                }
            }
            _ => apply_step(step, state, project, verbose)?,
        }
    }
    Ok(())
}

/// The project, when `dest` lies strictly beneath it.
fn place_of<'a>(project: Option<&'a Path>, dest: &Path) -> Option<&'a Path> {
    project.filter(|p| dest != *p && dest.starts_with(p))
}

/// Find or create the mount point `dest` inside the new root.
fn mount_point_fd(
    root: &Path,
    dest: &Path,
    project: Option<&Path>,
    kind: hostpath::Kind,
) -> Result<std::os::fd::OwnedFd> {
    hostpath::mount_point(root, dest, place_of(project, dest), kind)
        .map_err(|e| Error::Usage(format!("mount point: {e}")))
}

/// Mount a FUSE passthrough of `src` on `at`; returns the /dev/fuse
/// descriptor for the launcher to serve.
fn mount_fuse_bind(src: &Path, at: &Path, readonly: bool) -> Result<std::os::fd::OwnedFd> {
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    if statvfs(src).is_ok_and(|s| s.flags().contains(FsFlags::ST_NOEXEC)) {
        flags |= MsFlags::MS_NOEXEC;
    }
    mount_fuse(at, flags)
        .map_err(|e| Error::Host(format!("cannot mount it over FUSE: {}", e.desc())))
}

/// Open /dev/fuse and mount it on `at` (with the options of every FUSE
/// mount sbox makes; `sbox doctor` probes with this too).
pub(crate) fn mount_fuse(at: &Path, flags: MsFlags) -> nix::Result<std::os::fd::OwnedFd> {
    let fd = crate::sys::open(
        "/dev/fuse",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let opts = super::overlay::mount_options(fd.as_raw_fd());
    mount(
        Some("sbox"),
        at,
        Some("fuse.sbox"),
        flags,
        Some(opts.as_str()),
    )?;
    Ok(fd)
}

fn log(verbose: bool, msg: impl FnOnce() -> String) {
    if verbose {
        crate::verbose::say("init", &msg());
    }
}

fn apply_step(
    step: &Step,
    state: &StatePaths,
    project: Option<&Path>,
    verbose: bool,
) -> Result<()> {
    let root = &state.root;
    match step {
        Step::RootTmpfs => mount(
            Some("sbox"),
            root,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        )
        .ctx(|| format!("mounting the root tmpfs on {}", root.display())),
        Step::Mkdir { dest, mode } => mount_point(&under(root, dest), *mode),
        Step::Symlink { target, dest } => {
            let at = under(root, dest);
            match std::os::unix::fs::symlink(target, &at) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                r => r.ctx(|| format!("creating symlink {}", dest.display())),
            }
        }
        Step::PrepareUpper { path, dir } => prepare_upper(&state.upper, path, *dir),
        Step::Overlay {
            lower,
            upper,
            work,
            dest,
        } => {
            let at = under(root, dest);
            // A persistent upper layer was written by the sandbox: its
            // per-directory layers are made or opened without following a
            // link it could have planted there (the kernel would follow it).
            let upper = layer_dir(&state.upper, upper, 0o755)?;
            let work = layer_dir(&state.work, work, 0o700)?;
            let (upper, work) = (&upper, &work);
            let opts = format!(
                "lowerdir={},upperdir={},workdir={},userxattr",
                lower.display(),
                upper.display(),
                work.display()
            );
            match mount(
                Some("sbox"),
                &at,
                Some("overlay"),
                MsFlags::empty(),
                Some(opts.as_str()),
            ) {
                Ok(()) => {
                    log(verbose, || {
                        format!("overlay {} (copy-on-write)", dest.display())
                    });
                    Ok(())
                }
                Err(e) => {
                    log(verbose, || {
                        format!(
                            "overlay {} failed ({e}); binding it read-only",
                            dest.display()
                        )
                    });
                    match bind(lower, &at, true) {
                        Ok(()) => Ok(()),
                        Err(e2) => {
                            log(verbose, || format!("{} left empty: {e2}", dest.display()));
                            Ok(())
                        }
                    }
                }
            }
        }
        Step::Bind {
            src,
            dest,
            readonly,
            create,
        } => {
            // The source was resolved when the policy was built; open that
            // canonical path without following links and bind the object
            // opened, never the path again.
            let src_fd = match hostpath::open_checked(src) {
                Ok(fd) => fd,
                Err(e) if !create && e.errno() == Some(nix::errno::Errno::ENOENT) => {
                    log(verbose, || format!("skipping {}: {e}", src.display()));
                    return Ok(());
                }
                Err(e) => return Err(Error::Usage(format!("bind source {e}"))),
            };
            let is_dir = nix::sys::stat::fstat(src_fd.as_raw_fd())
                .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                .ctx(|| format!("bind source {}", src.display()))?;
            if !create && std::fs::symlink_metadata(under(root, dest)).is_err() {
                return Ok(());
            }
            let kind = if is_dir {
                hostpath::Kind::Dir
            } else {
                hostpath::Kind::File
            };
            let at = mount_point_fd(root, dest, project, kind)?;
            hostpath::bind_fds(src_fd.as_fd(), at.as_fd(), *readonly)
                .map_err(|e| Error::path(dest, format!("bind mount: {}", e.desc())))?;
            log(verbose, || {
                format!(
                    "bind {} -> {} ({})",
                    src.display(),
                    dest.display(),
                    if *readonly { "ro" } else { "rw" }
                )
            });
            Ok(())
        }
        Step::Tmpfs {
            dest,
            mode,
            readonly,
        } => {
            let at = mount_point_fd(root, dest, project, hostpath::Kind::Dir)?;
            let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            if *readonly {
                flags |= MsFlags::MS_RDONLY;
            }
            let data = format!("mode={mode:o}");
            let target = format!("/proc/self/fd/{}", at.as_raw_fd());
            mount(
                Some("tmpfs"),
                target.as_str(),
                Some("tmpfs"),
                flags,
                Some(data.as_str()),
            )
            .ctx(|| format!("mounting tmpfs on {}", dest.display()))
        }
        Step::Proc { dest } => mount(
            Some("proc"),
            &under(root, dest),
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .ctx(|| "mounting a new /proc".into()),
        Step::Sysfs { dest } => {
            let at = under(root, dest);
            let flags =
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            match mount(Some("sysfs"), &at, Some("sysfs"), flags, None::<&str>) {
                Ok(()) => Ok(()),
                Err(e) => {
                    log(verbose, || {
                        format!("new sysfs failed ({e}); /sys left empty")
                    });
                    Ok(())
                }
            }
        }
        Step::Devpts { dest, tty_gid } => {
            let data = match tty_gid {
                Some(g) => format!("newinstance,ptmxmode=0666,mode=0620,gid={g}"),
                None => "newinstance,ptmxmode=0666,mode=0620".to_string(),
            };
            mount(
                Some("devpts"),
                &under(root, dest),
                Some("devpts"),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some(data.as_str()),
            )
            .ctx(|| "mounting /dev/pts".into())
        }
        Step::Mask { dest } => mask(root, dest, &state.empty_file, verbose),
        Step::HidingOverlay {
            lower,
            upper,
            dest,
            layer,
            dirs,
            whiteouts,
        } => {
            let fallback = || match upper {
                Some((upper, work)) => Step::Overlay {
                    lower: lower.clone(),
                    upper: upper.clone(),
                    work: work.clone(),
                    dest: dest.clone(),
                },
                None => Step::Bind {
                    src: lower.clone(),
                    dest: dest.clone(),
                    readonly: true,
                    create: false,
                },
            };
            let layer = match hide_layer(layer, lower, dirs, whiteouts) {
                Ok(l) => l,
                Err(e) => {
                    log(verbose, || {
                        format!("{}: no whiteout layer ({e})", dest.display())
                    });
                    return apply_step(&fallback(), state, project, verbose);
                }
            };
            let mut opts = format!("lowerdir={}:{}", layer.display(), lower.display());
            let mut flags = MsFlags::empty();
            match upper {
                Some((upper, work)) => {
                    mkdir_p(upper, 0o755)?;
                    mkdir_p(work, 0o700)?;
                    opts.push_str(&format!(
                        ",upperdir={},workdir={}",
                        upper.display(),
                        work.display()
                    ));
                }
                None => flags |= MsFlags::MS_RDONLY,
            }
            opts.push_str(",userxattr");
            let at = under(root, dest);
            match mount(
                Some("sbox"),
                &at,
                Some("overlay"),
                flags,
                Some(opts.as_str()),
            ) {
                Ok(()) => {
                    log(verbose, || {
                        format!(
                            "overlay {} ({}, {} whiteout(s) for hidden paths)",
                            dest.display(),
                            if upper.is_some() {
                                "copy-on-write"
                            } else {
                                "read-only"
                            },
                            whiteouts.len()
                        )
                    });
                    Ok(())
                }
                Err(e) => {
                    log(verbose, || {
                        format!("hiding overlay {} failed ({e})", dest.display())
                    });
                    apply_step(&fallback(), state, project, verbose)
                }
            }
        }
        Step::FuseRoot | Step::FuseBind { .. } => {
            Err(Error::Host("FUSE mounts are made by apply()".into()))
        }
    }
}

/// Hide `dest` (resolved inside `root`, so a symlink cannot send the mask
/// elsewhere): an empty read-only tmpfs over a directory, the empty file
/// over anything else. A path that does not exist inside is left alone.
fn mask(root: &Path, dest: &Path, empty_file: &Path, verbose: bool) -> Result<()> {
    let fd = match crate::sys::open_in_root(root, dest) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(Error::path(dest, format!("hiding: {}", e.desc()))),
    };
    let st = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd))
        .ctx(|| format!("hiding {}", dest.display()))?;
    let target = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        mount(
            Some("sbox-hidden"),
            target.as_str(),
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=0000,size=4k"),
        )
        .ctx(|| format!("hiding {}", dest.display()))?;
    } else {
        bind(empty_file, Path::new(&target), false).map_err(|e| with_dest(e, dest, "hiding"))?;
        // `target` still names the file under the new mount: a remount
        // must name the mount itself (else EINVAL), so look the path up
        // again and check that it is the empty file.
        let top = crate::sys::open_in_root(root, dest)
            .map_err(|e| Error::path(dest, format!("hiding: {}", e.desc())))?;
        let (a, b) = (
            nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&top))
                .ctx(|| format!("hiding {}", dest.display()))?,
            nix::sys::stat::stat(empty_file).ctx(|| format!("hiding {}", dest.display()))?,
        );
        if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino) {
            return Err(Error::path(dest, "hiding: the mask did not land on it"));
        }
        let top_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&top));
        remount_readonly_tree(Path::new(&top_path)).map_err(|e| with_dest(e, dest, "hiding"))?;
    }
    log(verbose, || format!("hidden {}", dest.display()));
    Ok(())
}

/// Mount sbox's FUSE overlay as the new root; returns the /dev/fuse
/// descriptor for the launcher to serve.
pub fn apply_fuse_root(root: &Path) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    let fd = crate::sys::open(
        "/dev/fuse",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| {
        Error::Host(format!(
            "cannot open /dev/fuse: {} — the FUSE root needs it readable and writable (chmod 0666 /dev/fuse), or use --overlay kernel",
            e.desc()
        ))
    })?;
    let opts = super::overlay::mount_options(fd.as_raw_fd());
    mount(
        Some("sbox"),
        root,
        Some("fuse.sbox"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .ctx(|| "mounting the FUSE root".into())?;
    Ok(fd)
}

fn with_dest(e: Error, dest: &Path, what: &str) -> Error {
    match e {
        Error::Sys { source, .. } => Error::path(dest, format!("{what}: {}", source.desc())),
        Error::Io { source, .. } => Error::path(
            dest,
            format!("{what}: {}", crate::error::io_reason(&source)),
        ),
        other => other,
    }
}

/// A directory to mount on: one that exists is left as it is (a mount
/// hides its mode, and on the FUSE root each chmod is a round trip to the
/// server), one that does not is made as by [`mkdir_p`].
fn mount_point(p: &Path, mode: u32) -> Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => Ok(()),
        _ => mkdir_p(p, mode),
    }
}

/// Create a directory and its parents with `mode` (umask does not apply).
pub fn mkdir_p(p: &Path, mode: u32) -> Result<()> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(p)
    {
        Ok(()) => {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
            Ok(())
        }
        Err(e) => Err(Error::io(format!("creating {}", p.display()), e)),
    }
}

/// Create or open `dir` beneath the layer directory `base` (sbox's own
/// path) without following links; returns its canonical path.
fn layer_dir(base: &Path, dir: &Path, mode: u32) -> Result<PathBuf> {
    mkdir_p(base, 0o700)?;
    let base_real = std::fs::canonicalize(base).ctx(|| format!("opening {}", base.display()))?;
    let rel = dir
        .strip_prefix(base)
        .map_err(|_| Error::path(dir, "not inside its layer directory"))?;
    let target = base_real.join(rel);
    hostpath::mkdir_beneath(&base_real, &target, mode)
        .map_err(|e| Error::Usage(format!("sandbox layer: {e}")))?;
    Ok(target)
}

/// The whiteout layer of a hiding overlay, made once and kept next to the
/// state directories (`BASE/hide-KEY/layer`, `layer` being
/// `BASE/run-…/hide/NAME`) for later sandboxes: KEY covers the layer's
/// contents and the modes and times of the host directories it copies, so
/// a change on the host makes a new one. Falls back to `layer` itself.
fn hide_layer(
    layer: &Path,
    lower: &Path,
    dirs: &[PathBuf],
    whiteouts: &[PathBuf],
) -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let base = layer.parent().and_then(Path::parent).and_then(Path::parent);
    let Some(base) = base else {
        make_hide_layer(layer, lower, dirs, whiteouts)?;
        return Ok(layer.to_path_buf());
    };
    // What the layer is made of, each part closed by a 0xff (not in paths).
    let mut made_of = Vec::new();
    let mut eat = |b: &[u8]| {
        made_of.extend_from_slice(b);
        made_of.push(0xff);
    };
    use std::os::unix::ffi::OsStrExt;
    eat(lower.as_os_str().as_bytes());
    for rel in std::iter::once(Path::new("")).chain(dirs.iter().map(PathBuf::as_path)) {
        eat(rel.as_os_str().as_bytes());
        if let Ok(md) = std::fs::symlink_metadata(lower.join(rel)) {
            eat(&md.mode().to_le_bytes());
            eat(&md.mtime().to_le_bytes());
            eat(&md.mtime_nsec().to_le_bytes());
            eat(&md.atime().to_le_bytes());
        }
    }
    eat(b"whiteouts");
    for rel in whiteouts {
        eat(rel.as_os_str().as_bytes());
    }
    let key = crate::digest::digest(&made_of);
    let keep = base.join(format!("hide-{}", &key[..16]));
    if let Some(cached) = lock_kept_layer(&keep) {
        return Ok(cached);
    }
    make_hide_layer(layer, lower, dirs, whiteouts)?;
    // Moved into place whole (when another sandbox was faster, its layer
    // is the same); then used like any kept one.
    let staged = layer.with_extension("keep");
    if std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staged)
        .is_ok()
        && std::fs::rename(layer, staged.join("layer")).is_ok()
        && std::fs::rename(&staged, &keep).is_err()
    {
        let _ = std::fs::remove_dir_all(&staged);
    }
    lock_kept_layer(&keep).ok_or_else(|| Error::path(&keep, "kept whiteout layer went away"))
}

/// A kept whiteout layer (`KEEP/layer`), locked (shared, on `KEEP`) for as
/// long as this process lives, so that state::clean_stale does not remove
/// it from under the sandbox; None when it is missing or being removed.
fn lock_kept_layer(keep: &Path) -> Option<PathBuf> {
    use nix::fcntl::{Flock, FlockArg};
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    let dir = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(keep)
        .ok()?;
    let lock = Flock::lock(dir, FlockArg::LockShared).ok()?;
    // Still the one at that name (a remover renames it away first), ours,
    // and whole.
    let held = lock.metadata().ok()?;
    let named = std::fs::symlink_metadata(keep).ok()?;
    let cached = keep.join("layer");
    let whole = std::fs::symlink_metadata(&cached).is_ok_and(|m| m.is_dir() && m.uid() == me);
    if (held.dev(), held.ino()) != (named.dev(), named.ino()) || held.uid() != me || !whole {
        return None;
    }
    let _ = nix::sys::stat::futimens(
        lock.as_raw_fd(),
        &nix::sys::time::TimeSpec::UTIME_NOW,
        &nix::sys::time::TimeSpec::UTIME_NOW,
    );
    // Held until the process (init, which mounts it) exits.
    std::mem::forget(lock);
    Some(cached)
}

/// Make the whiteout layer of a hiding overlay: its root and `dirs` with
/// the mode and times of their host counterparts below `lower`, then a
/// whiteout (a 0/0 character device) at each of `whiteouts`.
fn make_hide_layer(
    layer: &Path,
    lower: &Path,
    dirs: &[PathBuf],
    whiteouts: &[PathBuf],
) -> Result<()> {
    use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
    mkdir_p(layer, 0o755)?;
    let like_host = |rel: &Path| -> Result<()> {
        let at = layer.join(rel);
        if !rel.as_os_str().is_empty() {
            match std::fs::DirBuilder::new().mode(0o755).create(&at) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::io(format!("creating {}", at.display()), e))
                }
                _ => {}
            }
        }
        let Ok(md) = std::fs::symlink_metadata(lower.join(rel)) else {
            return Ok(());
        };
        use std::os::unix::fs::MetadataExt;
        let _ = std::fs::set_permissions(&at, std::fs::Permissions::from_mode(md.mode() & 0o7777));
        let ts = |s: i64, ns: i64| nix::sys::time::TimeSpec::new(s, ns);
        let _ = utimensat(
            None,
            &at,
            &ts(md.atime(), md.atime_nsec()),
            &ts(md.mtime(), md.mtime_nsec()),
            UtimensatFlags::NoFollowSymlink,
        );
        Ok(())
    };
    for rel in dirs {
        like_host(rel)?;
    }
    for rel in whiteouts {
        let at = layer.join(rel);
        match mknod(&at, SFlag::S_IFCHR, Mode::empty(), 0) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => {
                return Err(Error::sys(
                    format!("making a whiteout at {}", at.display()),
                    e,
                ))
            }
        }
    }
    // Last: the times of the layer's root (making entries changed them).
    like_host(Path::new(""))
}

/// Create a mount point in an upper layer (which a persistent sandbox
/// wrote: no link in it is followed).
fn prepare_upper(upper: &Path, path: &Path, dir: bool) -> Result<()> {
    let Ok(rel) = path.strip_prefix(upper) else {
        return Err(Error::path(path, "not inside the upper layer"));
    };
    let kind = if dir {
        hostpath::Kind::Dir
    } else {
        hostpath::Kind::File
    };
    hostpath::mount_point(upper, &Path::new("/").join(rel), Some(Path::new("/")), kind)
        .map(drop)
        .map_err(|e| Error::Usage(format!("preparing a mount point: {e}")))
}

/// Bind `src` on `at` recursively, read-only (every mount in the subtree)
/// when asked.
pub fn bind(src: &Path, at: &Path, readonly: bool) -> Result<()> {
    mount(
        Some(src),
        at,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("binding {}", src.display()))?;
    if readonly {
        remount_readonly_tree(at)?;
    }
    Ok(())
}

/// Remount `at` and every mount below it read-only, keeping the flags the
/// kernel locks (nosuid, nodev, noexec, atime).
pub fn remount_readonly_tree(at: &Path) -> Result<()> {
    let mut points = vec![at.to_path_buf()];
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in info.lines() {
            if let Some(mp) = line.split(' ').nth(4) {
                let mp = PathBuf::from(unescape_mountinfo(mp));
                if mp != at && mp.starts_with(at) && !points.contains(&mp) {
                    points.push(mp);
                }
            }
        }
    }
    for p in points {
        let Ok(st) = statvfs(&p) else { continue };
        let f = st.flags();
        let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
        for (ff, mf) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(ff) {
                flags |= mf;
            }
        }
        if !f.intersects(FsFlags::ST_NOATIME | FsFlags::ST_RELATIME) {
            flags |= MsFlags::MS_STRICTATIME;
        }
        match mount(None::<&str>, &p, None::<&str>, flags, None::<&str>) {
            Ok(()) => {}
            // A mount we cannot see into (EACCES) stays as the host has it.
            Err(nix::errno::Errno::EACCES) if p != at => {}
            Err(e) => return Err(Error::sys(format!("making {} read-only", p.display()), e)),
        }
    }
    Ok(())
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &s[i + 1..i + 4];
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Make `new_root` the root of this mount namespace and drop the old one.
pub fn pivot(new_root: &Path) -> Result<()> {
    nix::unistd::chdir(new_root).ctx(|| format!("entering {}", new_root.display()))?;
    nix::unistd::pivot_root(".", ".").ctx(|| "pivot_root".into())?;
    umount2(".", MntFlags::MNT_DETACH).ctx(|| "detaching the old root".into())?;
    nix::unistd::chdir("/").ctx(|| "entering /".into())
}

/// Create the empty, mode-0 file used to hide files.
pub fn make_empty_file(p: &Path) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o000)
        .open(p)
        .map(drop)
        .ctx(|| format!("creating {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/tab\\011x\\134"), "/tab\tx\\");
    }
}
