//! A sandbox whose root is an image (`--image`, `filesystem.image`): the
//! image's tree is the FUSE overlay's lower layer instead of the host's
//! `/`; the project, binds, masks and everything else as usual. The
//! image's `Env`, `WorkingDir` and `User` apply unless the command line or
//! the profile says otherwise.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::reference::Registries;
use super::store::{ImageId, Store};
use crate::error::{Error, Result};
use crate::locations::Locations;
use crate::policy::{Backend, Policy};

/// The image a sandbox's root comes from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageRoot {
    /// The image id (`sha256:` digest of its config).
    pub id: String,
    /// The name it was asked for by.
    pub name: String,
    /// Its tree on the host (the overlay's lower layer).
    pub rootfs: PathBuf,
    /// The ids the command runs as (the image's `User`); None: root (or
    /// the caller with --map-user).
    pub user: Option<(u32, u32)>,
    /// The image's `Entrypoint` and `Cmd`.
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// Held while the sandbox runs: `sbox image rm` refuses to remove the
    /// tree meanwhile.
    #[serde(skip)]
    pub hold: Option<std::sync::Arc<super::store::TreeHold>>,
}

impl ImageRoot {
    /// What `sbox run --image` runs, as `docker run` does: the image's
    /// `Entrypoint` followed by the command given, or by the image's `Cmd`
    /// when none is.
    pub fn command_line(&self, given: &[String]) -> Result<Vec<String>> {
        let rest = if given.is_empty() { &self.cmd } else { given };
        let argv: Vec<String> = self.entrypoint.iter().chain(rest).cloned().collect();
        if argv.is_empty() {
            return Err(Error::Usage(format!(
                "image {} has no Entrypoint or Cmd: give the command to run (sbox run --image {} -- CMD)",
                self.name, self.name
            )));
        }
        Ok(argv)
    }
}

/// What the command line and profile set themselves (they win over the
/// image's config).
#[derive(Debug, Default)]
pub struct Explicit {
    /// Variables set by `--env`, `--keep-env`, `environment.set` and
    /// `environment.pass`.
    pub env: BTreeSet<String>,
    /// `--chdir` was given.
    pub chdir: bool,
    /// `--user`: the user to run as instead of the image's `User`.
    pub user: Option<String>,
}

/// The store and image `want` names (a name or an id), fetched when it is
/// missing (see `crate::image::ensure`).
pub fn find(loc: &Locations, want: &str) -> Result<(Store, ImageId)> {
    let store = Store::open(loc)?;
    let regs = Registries::load()?;
    let id = match store.find(want, &regs)? {
        Ok(id) => id,
        Err(r) => super::ensure(&r, &store)?,
    };
    Ok((store, id))
}

/// The lower layer of the stored sandbox at `paths`: its image's tree, or
/// the host's `/`.
pub fn lower_of(paths: &crate::locations::Paths) -> Result<PathBuf> {
    let image = crate::names::read_config(paths)?.and_then(|c| c.image);
    match image {
        None => Ok(PathBuf::from("/")),
        Some(id) => {
            let store = Store::open(&Locations::from_host()?)?;
            Ok(store.rootfs(&ImageId(id))?)
        }
    }
}

/// Files sbox binds over an image's root: the empty mount points made for
/// them are not the sandbox's changes.
pub const SBOX_FILES: &[&str] = &["/etc/resolv.conf", "/etc/hosts"];

/// Whether `change` is the empty mount point sbox made for one of
/// `SBOX_FILES` in the upper layer `upper`.
pub fn is_mount_stub(upper: &Path, change: &crate::changes::Change) -> bool {
    change.kind == crate::changes::Kind::A
        && SBOX_FILES.iter().any(|f| change.path == Path::new(f))
        && std::fs::symlink_metadata(
            upper.join(change.path.strip_prefix("/").unwrap_or(&change.path)),
        )
        .is_ok_and(|m| m.is_file() && m.len() == 0)
}

/// The directories of the upper layer `upper` that are only the mount
/// point of the project (`project`, as inside) and the way to it: missing
/// from the image's tree `lower`, holding nothing but the next directory
/// on the way (the project itself: nothing). Made for the bind, they are
/// not the sandbox's changes.
pub fn project_scaffold(upper: &Path, lower: &Path, project: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let comps: Vec<_> = project.components().skip(1).collect();
    for i in 1..=comps.len() {
        let rel: PathBuf = comps[..i].iter().collect();
        let up = upper.join(&rel);
        if std::fs::symlink_metadata(lower.join(&rel)).is_ok() {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&up) else {
            break;
        };
        if !meta.is_dir() {
            break;
        }
        let names: Vec<_> = match std::fs::read_dir(&up) {
            Ok(rd) => rd.flatten().map(|e| e.file_name()).collect(),
            Err(_) => break,
        };
        let only_next = match comps.get(i) {
            Some(next) => names.iter().all(|n| n == next.as_os_str()),
            None => names.is_empty(),
        };
        if !only_next {
            break;
        }
        out.push(Path::new("/").join(rel));
    }
    out
}

/// [`project_scaffold`] of each of `places` (the project and the other
/// directories bound), together.
pub fn scaffold_of(upper: &Path, lower: &Path, places: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in places {
        for d in project_scaffold(upper, lower, p) {
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out
}

/// The places of a stored sandbox's binds, its project first.
pub fn places_of(cfg: &crate::names::StoredConfig) -> Vec<PathBuf> {
    std::iter::once(cfg.project.clone())
        .chain(cfg.mount_points.iter().cloned())
        .collect()
}

/// Reads a file of the image's tree, symlinks resolved inside the tree.
fn read_in_tree(root: &Path, path: &str) -> Option<String> {
    let fd = crate::sys::open_in_root(root, Path::new(path)).ok()?;
    // Reopen the O_PATH fd for reading through /proc (no path walk).
    let f = std::fs::File::open(format!("/proc/self/fd/{}", {
        use std::os::fd::AsRawFd;
        fd.as_raw_fd()
    }))
    .ok()?;
    let mut s = String::new();
    f.take(4 << 20).read_to_string(&mut s).ok()?;
    Some(s)
}

/// (name, uid, gid, home, shell) of the passwd entry matching `user`.
fn passwd_entry(text: &str, user: &str) -> Option<(String, u32, u32, String, String)> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || (f[0] != user && f[2] != user) {
            return None;
        }
        Some((
            f[0].to_string(),
            f[2].parse().ok()?,
            f[3].parse().ok()?,
            f[5].to_string(),
            f[6].to_string(),
        ))
    })
}

fn group_id(text: &str, group: &str) -> Option<u32> {
    if let Ok(n) = group.parse() {
        return Some(n);
    }
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == group)
            .then(|| f[2].parse().ok())
            .flatten()
    })
}

/// Makes `policy` run on image `want`.
pub fn apply(policy: &mut Policy, want: &str, explicit: &Explicit) -> Result<()> {
    if policy.backend != Backend::Fuse {
        return Err(Error::Usage(
            "--image needs the FUSE root (--overlay fuse, the default)".into(),
        ));
    }
    let loc = Locations::of(&policy.caller)?;
    let (store, id) = find(&loc, want)?;
    let config = store.config(&id)?;
    let rootfs = store.rootfs(&id)?;
    let hold = std::sync::Arc::new(store.hold_tree(&rootfs)?);
    let rc = config.config.unwrap_or_default();

    // The user: "", "name", "uid", "name:group", "uid:gid".
    let passwd = read_in_tree(&rootfs, "/etc/passwd").unwrap_or_default();
    let (user_spec, whose) = match &explicit.user {
        Some(u) => (u.clone(), "the user of --user"),
        None => (rc.user.clone().unwrap_or_default(), "its user"),
    };
    let (uname, gname) = match user_spec.split_once(':') {
        Some((u, g)) => (u.to_string(), Some(g.to_string())),
        None => (user_spec.clone(), None),
    };
    let uname = if uname.is_empty() {
        "0".to_string()
    } else {
        uname
    };
    let entry = passwd_entry(&passwd, &uname);
    let uid = match (&entry, uname.parse::<u32>()) {
        (Some(e), _) => e.1,
        (None, Ok(n)) => n,
        (None, Err(_)) => {
            return Err(Error::Host(format!(
                "image {want}: {whose} {uname:?} is not in its /etc/passwd"
            )))
        }
    };
    let gid = match &gname {
        Some(g) => group_id(&read_in_tree(&rootfs, "/etc/group").unwrap_or_default(), g)
            .ok_or_else(|| {
                Error::Host(format!(
                    "image {want}: the group {g:?} of {whose} is not in its /etc/group"
                ))
            })?,
        None => entry.as_ref().map_or(uid, |e| e.2),
    };
    let user = if policy.map_user || (uid == 0 && gid == 0) {
        None
    } else {
        Some((uid, gid))
    };

    // The environment: the image's, then what is set explicitly.
    let mut env = policy.env.clone();
    for kv in rc.env.iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            if !explicit.env.contains(k) {
                env.insert(k.to_string(), v.to_string());
            }
        }
    }
    let (name, home, shell) = match &entry {
        Some(e) => (e.0.clone(), e.3.clone(), e.4.clone()),
        None if uid == 0 => ("root".into(), "/root".into(), "/bin/sh".into()),
        None => (uid.to_string(), "/".into(), "/bin/sh".into()),
    };
    if !policy.map_user {
        for (k, v) in [
            ("HOME", home),
            ("USER", name.clone()),
            ("LOGNAME", name),
            ("SHELL", shell),
        ] {
            if !explicit.env.contains(k)
                && !rc
                    .env
                    .iter()
                    .flatten()
                    .any(|e| e.starts_with(&format!("{k}=")))
            {
                env.insert(k.to_string(), v);
            }
        }
    }
    if !explicit.env.contains("PATH") && !rc.env.iter().flatten().any(|e| e.starts_with("PATH=")) {
        env.insert(
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    policy.env = env;
    if !explicit.chdir {
        if let Some(w) = rc.working_dir.as_deref().filter(|w| !w.is_empty()) {
            let p = PathBuf::from(w);
            if !p.is_absolute() {
                return Err(Error::Host(format!(
                    "image {want}: its WorkingDir {w:?} is not absolute"
                )));
            }
            policy.chdir = p;
        }
    }
    if policy.verbose {
        policy
            .notes
            .push(format!("root: image {} ({})", want, id.short()));
    }
    policy.image = Some(ImageRoot {
        id: id.0.clone(),
        name: want.to_string(),
        rootfs,
        user,
        entrypoint: rc.entrypoint.clone().unwrap_or_default(),
        cmd: rc.cmd.clone().unwrap_or_default(),
        hold: Some(hold),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_as_docker_run() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let mut img = ImageRoot {
            id: "sha256:0".into(),
            name: "x:1".into(),
            rootfs: "/".into(),
            user: None,
            entrypoint: vec![],
            cmd: s(&["sh"]),
            hold: None,
        };
        assert_eq!(img.command_line(&[]).unwrap(), s(&["sh"]));
        assert_eq!(
            img.command_line(&s(&["ls", "-l"])).unwrap(),
            s(&["ls", "-l"])
        );
        img.entrypoint = s(&["/entry", "-x"]);
        assert_eq!(img.command_line(&[]).unwrap(), s(&["/entry", "-x", "sh"]));
        assert_eq!(
            img.command_line(&s(&["go"])).unwrap(),
            s(&["/entry", "-x", "go"])
        );
        img.entrypoint.clear();
        img.cmd.clear();
        assert!(img.command_line(&[]).is_err());
    }

    #[test]
    fn reads_passwd_and_group() {
        let pw = "root:x:0:0:root:/root:/bin/sh\napp:x:100:101:App:/home/app:/bin/ash\n";
        assert_eq!(
            passwd_entry(pw, "app"),
            Some((
                "app".into(),
                100,
                101,
                "/home/app".into(),
                "/bin/ash".into()
            ))
        );
        assert_eq!(passwd_entry(pw, "100").map(|e| e.0), Some("app".into()));
        assert_eq!(passwd_entry(pw, "nobody"), None);
        assert_eq!(group_id("wheel:x:10:\n", "wheel"), Some(10));
        assert_eq!(group_id("", "42"), Some(42));
        assert_eq!(group_id("", "staff"), None);
    }
}
