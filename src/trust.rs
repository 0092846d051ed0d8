//! Trusting a project's own `.sbox.toml`.
//!
//! A repository may ship a profile, but an untrusted repository must not
//! be able to widen its own access. sbox uses the file only after
//! `sbox trust`, which pins the content of the file and of every project
//! file it includes (a changed file must be trusted again). Even then the
//! file may only narrow what the default profile allows, unless the user
//! confirmed each widening when trusting it.
//!
//! The record pins each project file of the include closure by its path in
//! the project and the SHA-256 of the bytes that were parsed (each file is
//! read once; see `profile::load::load_project`). Named includes (`dev`,
//! `base`, a profile of the user's) are the user's own and are read as
//! usual; what they grant is checked against the default profile at every
//! use, like the rest.

use crate::error::{Error, Result};
use crate::profile::load::Pin;
use crate::profile::ProfileFile;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The name of a project's own profile file.
pub const PROJECT_FILE: &str = ".sbox.toml";

/// The profile a project file is compared with.
pub const REFERENCE_PROFILE: &str = "dev";

/// The format of the records written now. Older records pinned the
/// project file alone: they match nothing, so the file must be trusted
/// again.
pub const RECORD_FORMAT: u32 = 2;

/// What the trust store remembers of one project file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    #[serde(default)]
    pub format: u32,
    pub path: PathBuf,
    /// SHA-256 over `files` (what `sbox trust` prints).
    pub sha256: String,
    /// The project file, then every project file it includes, in the order
    /// they are read.
    #[serde(default)]
    pub files: Vec<Pin>,
    /// The widenings the user confirmed (empty: the file may only narrow).
    pub confirmed: Vec<String>,
}

impl Record {
    pub fn new(path: PathBuf, files: Vec<Pin>, confirmed: Vec<String>) -> Self {
        Record {
            format: RECORD_FORMAT,
            path,
            sha256: closure_digest(&files),
            files,
            confirmed,
        }
    }

    /// Were exactly these files, with this content, trusted? Never for a
    /// record of an older format.
    pub fn pins(&self, files: &[Pin]) -> bool {
        self.format == RECORD_FORMAT
            && !files.is_empty()
            && self.files == files
            && self.sha256 == closure_digest(files)
    }
}

/// Hex SHA-256 of some bytes.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One SHA-256 for a project file and the files it includes: over each
/// file's path and hash, in order.
pub fn closure_digest(files: &[Pin]) -> String {
    let mut text = String::from("sbox trust 2\n");
    for f in files {
        text.push_str(&format!("{:?} {}\n", f.path, f.sha256));
    }
    digest(text.as_bytes())
}

/// Where the record of `file` is kept: one JSON file per project file path.
pub fn record_path(data_dir: &Path, file: &Path) -> PathBuf {
    let key = digest(file.as_os_str().as_encoded_bytes());
    data_dir.join("trust").join(format!("{}.json", &key[..32]))
}

pub fn read_record(data_dir: &Path, file: &Path) -> Option<Record> {
    let text = std::fs::read_to_string(record_path(data_dir, file)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Write the record, readable by the user only.
pub fn write_record(data_dir: &Path, rec: &Record) -> Result<()> {
    crate::state::create_data_dirs(data_dir, Path::new("trust"))?;
    let text = serde_json::to_string_pretty(rec).map_err(|e| Error::Host(e.to_string()))?;
    crate::state::write_private(&record_path(data_dir, &rec.path), text.as_bytes())
}

pub fn remove_record(data_dir: &Path, file: &Path) -> bool {
    std::fs::remove_file(record_path(data_dir, file)).is_ok()
}

fn net_rank(mode: Option<&str>) -> u8 {
    match mode {
        Some("none") => 0,
        Some("user") => 1,
        _ => 2,
    }
}

/// Everything `effective` grants that `reference` does not, in words.
/// Paths inside the project do not count: the project is the user's own.
pub fn widenings(reference: &ProfileFile, effective: &ProfileFile, project: &Path) -> Vec<String> {
    let mut w = Vec::new();
    let in_project = |spec: &str| {
        let spec = spec.strip_prefix('?').unwrap_or(spec);
        let src = spec.split(':').next().unwrap_or(spec);
        let src = src.replace("$PWD", &project.to_string_lossy());
        // Lexically clean, so "$PWD/../.." is not inside the project; then
        // resolved on the host, so a symlink in the project that leads out
        // of it makes the path a widening (and sbox refuses it at run time).
        crate::policy::clean_absolute(&src, "trust")
            .is_ok_and(|p| p.starts_with(project) && crate::hostpath::stays_beneath(project, &p))
    };
    let (rf, ef) = (&reference.filesystem, &effective.filesystem);
    for b in &ef.bind {
        if !rf.bind.contains(b) && !in_project(b) {
            w.push(format!("binds {b} read-write"));
        }
    }
    for b in &ef.ro_bind {
        if !rf.ro_bind.contains(b) && !rf.bind.contains(b) && !in_project(b) {
            w.push(format!("binds {b} read-only"));
        }
    }
    if let Some(o) = &ef.output {
        if rf.output.as_ref() != Some(o) && !in_project(o) {
            w.push(format!("binds {o} read-write (output)"));
        }
    }
    for h in &rf.hidden {
        if !ef.hidden.contains(h) {
            w.push(format!("un-hides {h}"));
        }
    }
    let rank = |p: Option<&str>| match p {
        Some("none") => 0,
        Some("ro") => 1,
        _ => 2,
    };
    if rank(ef.project.as_deref()) > rank(rf.project.as_deref()) {
        w.push("makes the project writable".into());
    }
    let home_rank = |p: Option<&str>| match p {
        None | Some("refuse") => 0,
        Some("overlay") => 1,
        _ => 2,
    };
    if home_rank(ef.home_project.as_deref()) > home_rank(rf.home_project.as_deref()) {
        w.push(match ef.home_project.as_deref() {
            Some("bind") => "binds your home directory read-write when it is the project".into(),
            _ => "runs with your home directory as the project".to_string(),
        });
    }
    if net_rank(effective.network.mode.as_deref()) > net_rank(reference.network.mode.as_deref()) {
        w.push(format!(
            "network {:?} (default profile: {:?})",
            effective.network.mode.as_deref().unwrap_or("host"),
            reference.network.mode.as_deref().unwrap_or("host")
        ));
    }
    for (what, r, e) in [
        (
            "connect",
            &reference.network.allowed_connect_ports,
            &effective.network.allowed_connect_ports,
        ),
        (
            "bind",
            &reference.network.allowed_bind_ports,
            &effective.network.allowed_bind_ports,
        ),
    ] {
        match (r, e) {
            (Some(_), None) => w.push(format!("lifts the TCP {what} port restriction")),
            (Some(r), Some(e)) => {
                for p in e.iter().filter(|p| !r.contains(p)) {
                    w.push(format!("allows TCP {what} to port {p}"));
                }
            }
            _ => {}
        }
    }
    // Names the network reaches (network.allow), each named but those of
    // the built-in registries: narrower than a host network, but what the
    // file adds to the profile it builds on is for the user to see.
    let (rn, en) = (&reference.network, &effective.network);
    let registries = crate::profile::load("net", &crate::profile::SearchPath::default())
        .map(|l| l.profile.network.allow)
        .unwrap_or_default();
    for a in en.allow.iter().filter(|a| !rn.allow.contains(a)) {
        if !registries.contains(a) {
            w.push(format!("reaches {a} over the network (network.allow)"));
        }
    }
    for h in en.add_host.iter().filter(|h| !rn.add_host.contains(h)) {
        w.push(format!(
            "reaches the address given for {h} (network.add_host)"
        ));
    }
    let re = &reference.environment;
    for p in &effective.network.publish {
        if !reference.network.publish.contains(p) {
            w.push(format!("publishes port {p} on the host"));
        }
    }
    if effective.network.allow_host_loopback == Some(true)
        && reference.network.allow_host_loopback != Some(true)
    {
        w.push("reaches the host's loopback services".into());
    }
    for v in &effective.environment.pass {
        if !re.pass.contains(v) {
            w.push(format!("passes ${v} from your environment"));
        }
    }
    let (rl, el) = (&reference.landlock, &effective.landlock);
    if rl.enabled != Some(false) && el.enabled == Some(false) {
        w.push("turns Landlock off".into());
    }
    if rl.best_effort != Some(true) && el.best_effort == Some(true) {
        w.push("makes Landlock best-effort".into());
    }
    for p in &el.write {
        if !rl.write.contains(p) && !in_project(p) {
            w.push(format!("Landlock write access to {p}"));
        }
    }
    for p in el.read.iter().chain(&el.execute) {
        if !rl.read.contains(p) && !rl.execute.contains(p) && !in_project(p) {
            w.push(format!("Landlock read access to {p}"));
        }
    }
    for (what, r, e) in [
        ("signal", rl.scope_signals, el.scope_signals),
        (
            "abstract-socket",
            rl.scope_abstract_unix,
            el.scope_abstract_unix,
        ),
    ] {
        if r != Some(false) && e == Some(false) {
            w.push(format!("lifts Landlock {what} scoping"));
        }
    }
    let (rs, es) = (&reference.seccomp, &effective.seccomp);
    if rs.enabled != Some(false) && es.enabled == Some(false) {
        w.push("turns the seccomp filter off".into());
    }
    for s in &es.allow {
        if !rs.allow.contains(s) {
            w.push(format!("allows the system call {s}"));
        }
    }
    for (what, r, e) in [
        ("ptrace", rs.allow_ptrace, es.allow_ptrace),
        ("new user namespaces", rs.allow_userns, es.allow_userns),
    ] {
        if r != Some(true) && e == Some(true) {
            w.push(format!("allows {what}"));
        }
    }
    if reference.process.new_session != Some(false) && effective.process.new_session == Some(false)
    {
        w.push("keeps your terminal session (no new session)".into());
    }
    if rs.io_uring.as_deref() != Some("allow") && es.io_uring.as_deref() == Some("allow") {
        w.push("allows io_uring".into());
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> ProfileFile {
        toml::from_str(t).expect("toml")
    }

    #[test]
    fn narrowing_is_not_widening() {
        let r = parse("[filesystem]\nhidden=[\"~/.ssh\"]\n[network]\nmode=\"host\"");
        let e = parse(
            "[filesystem]\nhidden=[\"~/.ssh\",\"~/.x\"]\nproject=\"ro\"\n[network]\nmode=\"none\"\n[seccomp]\ndeny=[\"chmod\"]",
        );
        assert!(widenings(&r, &e, Path::new("/p")).is_empty());
    }

    #[test]
    fn widenings_are_named() {
        let d = std::env::temp_dir().join(format!("sbox-trust-unit-{}", std::process::id()));
        let p = d.join("p");
        std::fs::create_dir_all(p.join("out")).expect("mkdir");
        std::os::unix::fs::symlink("../..", p.join("up")).expect("ln");
        let p = std::fs::canonicalize(&p).expect("canon");
        let r = parse("[filesystem]\nhidden=[\"~/.ssh\"]\n[network]\nmode=\"none\"");
        let e = parse(
            "[filesystem]\nro_bind=[\"~/.ssh\"]\nbind=[\"$PWD/out\"]\n[network]\nmode=\"host\"\n[seccomp]\nallow=[\"ptrace\"]\n[environment]\npass=[\"SSH_AUTH_SOCK\"]",
        );
        let w = widenings(&r, &e, &p);
        assert!(
            w.iter().any(|x| x.contains("binds ~/.ssh read-only")),
            "{w:?}"
        );
        assert!(w.iter().any(|x| x.contains("un-hides ~/.ssh")), "{w:?}");
        assert!(w.iter().any(|x| x.contains("network")), "{w:?}");
        let r2 = parse("[network]\nmode=\"none\"\nallow=[\"pypi.org\"]");
        let e2 = parse("[network]\nmode=\"none\"\nallow=[\"pypi.org\", \"evil.example:22\"]");
        let w2 = widenings(&r2, &e2, Path::new("/p"));
        assert_eq!(
            w2,
            vec!["reaches evil.example:22 over the network (network.allow)"]
        );
        assert!(w.iter().any(|x| x.contains("ptrace")), "{w:?}");
        assert!(w.iter().any(|x| x.contains("SSH_AUTH_SOCK")), "{w:?}");
        assert!(!w.iter().any(|x| x.contains("$PWD/out")), "{w:?}");
        let sneaky = parse("[filesystem]\nbind=[\"$PWD/../../home/u\"]");
        let w = widenings(&r, &sneaky, &p);
        assert!(w.iter().any(|x| x.contains("../../home/u")), "{w:?}");
        // A symlink in the project that leads out of it is a widening.
        let linked = parse("[filesystem]\nbind=[\"$PWD/up/x\"]\noutput=\"$PWD/up\"");
        let w = widenings(&r, &linked, &p);
        assert!(w.iter().any(|x| x.contains("binds $PWD/up/x")), "{w:?}");
        assert!(
            w.iter().any(|x| x.contains("$PWD/up read-write (output)")),
            "{w:?}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn record_paths_differ_per_file() {
        let d = Path::new("/d");
        assert_ne!(
            record_path(d, Path::new("/a/.sbox.toml")),
            record_path(d, Path::new("/b/.sbox.toml"))
        );
    }

    #[test]
    fn a_record_pins_every_file_and_old_records_pin_nothing() {
        let pins = vec![
            Pin {
                path: ".sbox.toml".into(),
                sha256: digest(b"include = [\"x.toml\"]"),
            },
            Pin {
                path: "x.toml".into(),
                sha256: digest(b""),
            },
        ];
        let rec = Record::new("/p/.sbox.toml".into(), pins.clone(), Vec::new());
        assert!(rec.pins(&pins));
        let mut changed = pins.clone();
        changed[1].sha256 = digest(b"[network]\nmode = \"host\"");
        assert!(!rec.pins(&changed), "a changed include");
        assert!(!rec.pins(&pins[..1]), "an include dropped");
        // A record of the format that pinned .sbox.toml alone, for the
        // same top file: it does not vouch for what the file includes.
        let old = format!(
            "{{\"path\":\"/p/.sbox.toml\",\"sha256\":\"{}\",\"confirmed\":[]}}",
            pins[0].sha256
        );
        let old: Record = serde_json::from_str(&old).expect("old record");
        assert!(!old.pins(&pins));
        assert!(!old.pins(&pins[..1]));
    }
}
