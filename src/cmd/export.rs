//! `sbox export`: a profile's policy in the formats other tools read — the
//! seccomp filter as a JSON seccomp profile (docker, podman, Kubernetes),
//! or an OCI runtime bundle (runc, crun) whose config.json says as much of
//! the policy as OCI can.

use crate::cli::{ExportArgs, SandboxOpts};
use crate::confine::seccomp::json as seccomp_json;
use crate::error::{Error, IoContext, Result};
use crate::policy::Policy;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `sbox export`
pub fn run(a: ExportArgs) -> Result<u8> {
    if let Some(file) = &a.seccomp {
        let policy = policy_of(&a.profile, vec!["true".into()], None)?;
        let (profile, notes) = seccomp_profile(&policy)?;
        let mut text = serde_json::to_string_pretty(&profile)
            .map_err(|e| Error::Host(format!("cannot print the seccomp profile: {e}")))?;
        text.push('\n');
        write_output(file, text.as_bytes())?;
        print_notes(&notes);
        return Ok(0);
    }
    if let Some(dir) = &a.oci {
        let policy = policy_of(&a.profile, a.command.clone(), a.image.clone())?;
        let (seccomp, mut notes) = seccomp_profile(&policy)?;
        let ids = crate::idmap::IdPlan::for_caller(
            policy.caller.uid,
            policy.caller.gid,
            &policy.caller.name,
            policy.map_user,
        );
        let image = policy.image.as_ref().map(|i| i.rootfs.as_path());
        // An image's root is copied whole; the host's is bound read-only.
        let top = match image {
            Some(_) => Vec::new(),
            None => host_top_level(Path::new("/"))?,
        };
        let (config, oci_notes) = oci_config(&policy, &ids, &top, seccomp);
        notes.extend(oci_notes);
        write_bundle(dir, &config, &top, image)?;
        print_notes(&notes);
        return Ok(0);
    }
    Err(Error::Usage(
        "say what to export: --seccomp FILE or --oci DIR".into(),
    ))
}

/// What the export says differently from sbox, once it is written.
fn print_notes(notes: &[String]) {
    for n in notes {
        eprintln!("sbox: note: {n}");
    }
}

/// An entry of the host's `/` as the bundle's root shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Top {
    /// A directory, bound read-only from the host.
    Dir(String),
    /// A symbolic link (`bin -> usr/bin`), recreated in rootfs/.
    Link(String, PathBuf),
}

/// Directories of `/` the runtime makes itself, or that get a tmpfs.
const OWN_TOP: &[&str] = &["proc", "sys", "dev", "tmp", "run", "lost+found"];

/// The host's top-level directories and links (sorted).
fn host_top_level(root: &Path) -> Result<Vec<Top>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(root).ctx(|| format!("cannot list {}", root.display()))?;
    for e in entries {
        let e = e.ctx(|| format!("cannot list {}", root.display()))?;
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if OWN_TOP.contains(&name.as_str()) {
            continue;
        }
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_symlink() {
            if let Ok(target) = std::fs::read_link(e.path()) {
                out.push(Top::Link(name, target));
            }
        } else if ft.is_dir() {
            out.push(Top::Dir(name));
        }
    }
    out.sort_by(|a, b| top_name(a).cmp(top_name(b)));
    Ok(out)
}

fn top_name(t: &Top) -> &str {
    match t {
        Top::Dir(n) | Top::Link(n, _) => n,
    }
}

/// Capability names by number (linux/capability.h).
const CAP_NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
];

fn rlimit_name(r: crate::confine::plan::Rlimit) -> &'static str {
    use crate::confine::plan::Rlimit as R;
    match r {
        R::Nofile => "RLIMIT_NOFILE",
        R::Nproc => "RLIMIT_NPROC",
        R::As => "RLIMIT_AS",
        R::Data => "RLIMIT_DATA",
        R::Fsize => "RLIMIT_FSIZE",
        R::Cpu => "RLIMIT_CPU",
        R::Core => "RLIMIT_CORE",
        R::Stack => "RLIMIT_STACK",
        R::Memlock => "RLIMIT_MEMLOCK",
    }
}

fn bind_mount(src: &Path, dest: &Path, readonly: bool) -> Value {
    let mut options = vec!["rbind", "nosuid", "nodev"];
    if readonly {
        options.push("ro");
    }
    json!({ "destination": dest, "type": "bind", "source": src, "options": options })
}

fn tmpfs_mount(dest: &str, extra: &[&str]) -> Value {
    let mut options = vec!["nosuid", "nodev"];
    options.extend_from_slice(extra);
    json!({ "destination": dest, "type": "tmpfs", "source": "tmpfs", "options": options })
}

fn mappings(extents: &[crate::idmap::Extent]) -> Value {
    Value::Array(
        extents
            .iter()
            .map(|e| json!({ "containerID": e.inside, "hostID": e.outside, "size": e.count }))
            .collect(),
    )
}

/// config.json for `policy`, and notes on what it does not carry.
fn oci_config(
    policy: &Policy,
    ids: &crate::idmap::IdPlan,
    top: &[Top],
    seccomp: Value,
) -> (Value, Vec<String>) {
    use crate::policy::NetMode;
    let mut notes = Vec::new();
    let (uid, gid) = policy
        .image
        .as_ref()
        .and_then(|i| i.user)
        .unwrap_or_else(|| policy.caller_inside());
    let caps: Vec<&str> = crate::sandbox::payload::KEPT_CAPS
        .iter()
        .filter_map(|c| CAP_NAMES.get(*c as usize).copied())
        .collect();
    let rlimits: Vec<Value> = policy
        .confinement
        .rlimits
        .iter()
        .map(|(r, v)| json!({ "type": rlimit_name(*r), "hard": v, "soft": v }))
        .collect();
    let env: Vec<String> = policy.env.iter().map(|(k, v)| format!("{k}={v}")).collect();

    // What the runtime makes, then the host read-only, then the policy's own.
    let mut mounts = vec![
        json!({ "destination": "/proc", "type": "proc", "source": "proc" }),
        tmpfs_mount("/dev", &["strictatime", "mode=755", "size=65536k"]),
        json!({ "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] }),
        tmpfs_mount("/dev/shm", &["noexec", "mode=1777", "size=65536k"]),
        json!({ "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"] }),
        json!({ "destination": "/sys", "type": "bind", "source": "/sys",
                "options": ["rbind", "nosuid", "noexec", "nodev", "ro"] }),
    ];
    for t in top {
        if let Top::Dir(name) = t {
            let p = Path::new("/").join(name);
            mounts.push(bind_mount(&p, &p, true));
        }
    }
    mounts.push(tmpfs_mount("/tmp", &["mode=1777"]));
    mounts.push(tmpfs_mount("/run", &["mode=755"]));
    for t in &policy.tmpfs {
        mounts.push(tmpfs_mount(&t.to_string_lossy(), &["mode=755"]));
    }
    for b in &policy.binds {
        mounts.push(bind_mount(&b.src, &b.dest, b.readonly));
    }
    if let Some(out) = &policy.output {
        mounts.push(bind_mount(out, out, false));
    }

    let mut masked = Vec::new();
    for h in &policy.hidden {
        if std::fs::symlink_metadata(h).is_ok() {
            masked.push(h.clone());
        }
    }
    let missing = policy.hidden.len() - masked.len();
    if missing > 0 {
        notes.push(format!(
            "{missing} hidden path(s) do not exist now and are not masked: OCI masks only what exists when the container starts"
        ));
    }

    let mut namespaces = vec![
        json!({ "type": "pid" }),
        json!({ "type": "ipc" }),
        json!({ "type": "uts" }),
        json!({ "type": "mount" }),
        json!({ "type": "user" }),
        json!({ "type": "cgroup" }),
    ];
    match policy.net {
        NetMode::Host if policy.egress.is_none() => {}
        NetMode::User => {
            namespaces.push(json!({ "type": "network" }));
            notes.push(
                "network mode user: the bundle has its own network namespace with loopback only; connecting it is the runtime's job".into(),
            );
        }
        _ => namespaces.push(json!({ "type": "network" })),
    }
    if policy.egress.is_some() {
        notes.push(
            "network.allow (egress by name) is not carried: the bundle has loopback only".into(),
        );
    }
    if policy.confinement.landlock.is_some() {
        notes.push("Landlock rules are not carried (OCI has no Landlock section)".into());
    }
    if let Some(i) = &policy.image {
        for f in ["/etc/resolv.conf", "/etc/hosts"] {
            if let Ok(src) = std::fs::canonicalize(f) {
                mounts.push(bind_mount(&src, Path::new(f), true));
            }
        }
        notes.push(format!(
            "rootfs/ is a copy of image {}: its files are yours (root inside); the image's other owners are not carried",
            i.name
        ));
    } else {
        notes.push(
            "the host is bound read-only: sbox's copy-on-write root has no OCI equivalent".into(),
        );
    }

    let config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": uid, "gid": gid },
            "args": policy.argv,
            "env": env,
            "cwd": policy.chdir,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
                "inheritable": [],
                "ambient": [],
            },
            "rlimits": rlimits,
            "noNewPrivileges": true,
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": policy.hostname,
        "mounts": mounts,
        "linux": {
            "uidMappings": mappings(&ids.uid),
            "gidMappings": mappings(&ids.gid),
            "namespaces": namespaces,
            "maskedPaths": masked,
            "seccomp": seccomp,
        },
    });
    (config, notes)
}

/// Writes the bundle into `dir` (new, or an empty directory) whole or not
/// at all: built under a temporary name next to it, then renamed.
fn write_bundle(dir: &Path, config: &Value, top: &[Top], image: Option<&Path>) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::path(
                    dir,
                    "not empty: the bundle goes into a new or empty directory",
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::path(
                dir,
                format!("cannot use as the bundle directory: {e}"),
            ))
        }
    }
    let tmp = temp_name(dir)?;
    let built = build_bundle(&tmp, config, top, image);
    let done = built.and_then(|()| {
        std::fs::rename(&tmp, dir).map_err(|e| Error::path(dir, format!("cannot write: {e}")))
    });
    if done.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    done
}

fn build_bundle(tmp: &Path, config: &Value, top: &[Top], image: Option<&Path>) -> Result<()> {
    let fail = |e: std::io::Error| Error::path(tmp, format!("cannot write the bundle: {e}"));
    std::fs::create_dir(tmp).map_err(fail)?;
    let rootfs = tmp.join("rootfs");
    std::fs::create_dir(&rootfs).map_err(fail)?;
    if let Some(tree) = image {
        let open = |p: &Path| -> std::io::Result<std::os::fd::OwnedFd> {
            use std::os::fd::AsFd;
            let fd = crate::rootfs::overlay::sys::open_dir_path(p)?;
            crate::rootfs::overlay::sys::open_beneath(
                fd.as_fd(),
                b"",
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            )
        };
        use std::os::fd::AsFd;
        let (from, to) = (open(tree).map_err(fail)?, open(&rootfs).map_err(fail)?);
        crate::image::tree::copy_tree(from.as_fd(), to.as_fd()).map_err(fail)?;
    }
    for t in top {
        match t {
            Top::Dir(name) => std::fs::create_dir(rootfs.join(name)).map_err(fail)?,
            Top::Link(name, target) => {
                std::os::unix::fs::symlink(target, rootfs.join(name)).map_err(fail)?
            }
        }
    }
    let mut text = serde_json::to_string_pretty(config)
        .map_err(|e| Error::Host(format!("cannot print config.json: {e}")))?;
    text.push('\n');
    let path = tmp.join("config.json");
    std::fs::write(&path, text).map_err(fail)?;
    Ok(())
}

/// The policy `sbox run --profile P` would apply in the current directory.
fn policy_of(profile: &Option<String>, argv: Vec<String>, image: Option<String>) -> Result<Policy> {
    let opts = SandboxOpts {
        profile: profile.clone(),
        image,
        ..Default::default()
    };
    let cwd = crate::cmd::run::current_dir()?;
    crate::cmd::run::make_policy(&opts, argv, false, &cwd)
}

/// The JSON seccomp profile of the policy and the notes on what it says
/// more strictly than sbox.
fn seccomp_profile(policy: &Policy) -> Result<(serde_json::Value, Vec<String>)> {
    match &policy.confinement.seccomp {
        Some(rules) => {
            let e = seccomp_json::export(&rules.spec).map_err(|e| Error::Confine(e.to_string()))?;
            Ok((e.profile, e.notes))
        }
        None => Ok((
            seccomp_json::allow_all(),
            vec![format!(
                "profile {} turns seccomp off: the exported profile allows every call",
                policy.profile
            )],
        )),
    }
}

/// Writes `data` to `file` (`-`: stdout) whole or not at all: a temporary
/// file next to it, renamed over it once complete.
fn write_output(file: &str, data: &[u8]) -> Result<()> {
    if file == "-" {
        let mut out = std::io::stdout().lock();
        return out
            .write_all(data)
            .and_then(|()| out.flush())
            .ctx(|| "cannot write to stdout".into());
    }
    let path = PathBuf::from(file);
    write_atomically(&path, data)
}

/// A temporary name next to `path` (same directory, so rename is atomic).
fn temp_name(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::path(path, "not a file name"))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".sbox-{}.tmp", std::process::id()));
    Ok(path.with_file_name(tmp))
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    if path.is_dir() {
        return Err(Error::path(path, "is a directory"));
    }
    let tmp = temp_name(path)?;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::path(path, format!("cannot write: {e}")));
    }
    Ok(())
}
