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
use crate::profile::schema::{
    EnvironmentSection, FilesystemSection, HomeProject, IoUring, LandlockSection, NetMode,
    NetworkSection, ProcessSection, ProfileFile, ProjectMode, SeccompSection,
};

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

pub use crate::digest::digest;

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

/// What a key's values do to the sandbox's access. Each key of the table
/// in `profile::schema` has a trust rule, and the rule its direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Setting it grants access: what the project file adds beyond the
    /// default profile is a widening.
    Widening,
    /// Setting it takes access away: what the project file removes or
    /// turns off of the default profile's is a widening.
    Narrowing,
    /// Not access (names, caches, limits, variables set inside): never a
    /// widening.
    Neutral,
}

/// What a trust rule compares: the default profile, the project's
/// effective profile, and the project directory (paths inside it are the
/// user's own and do not count).
pub struct Cx<'a> {
    pub reference: &'a ProfileFile,
    pub effective: &'a ProfileFile,
    pub project: &'a Path,
}

impl Cx<'_> {
    /// Is the source of this bind or path spec inside the project?
    pub fn in_project(&self, spec: &str) -> bool {
        let project = self.project;
        let spec = spec.strip_prefix('?').unwrap_or(spec);
        let src = spec.split(':').next().unwrap_or(spec);
        let src = src.replace("$PWD", &project.to_string_lossy());
        // Lexically clean, so "$PWD/../.." is not inside the project; then
        // resolved on the host, so a symlink in the project that leads out
        // of it makes the path a widening (and sbox refuses it at run time).
        crate::policy::clean_absolute(&src, "trust")
            .is_ok_and(|p| p.starts_with(project) && crate::hostpath::stays_beneath(project, &p))
    }
}

/// How `sbox trust` compares one key of type `T`: the key's value in the
/// default profile (`reference`) with its value in the project's effective
/// profile. Every key of the table names one; a rule that does not fit the
/// key's type does not compile.
pub trait Rule<T> {
    fn direction(&self) -> Direction;
    /// Push a line for each thing `effective` grants that `reference` does
    /// not. The lines are what the user confirms, and what a trust record
    /// keeps: keep their wording stable.
    fn check(&self, reference: &T, effective: &T, cx: &Cx<'_>, out: &mut Vec<String>);
}

/// `msg` with `{}` replaced by `item`.
fn fill(msg: &str, item: impl std::fmt::Display) -> String {
    msg.replace("{}", &item.to_string())
}

/// Not access: never a widening.
pub struct Neutral;

impl<T> Rule<T> for Neutral {
    fn direction(&self) -> Direction {
        Direction::Neutral
    }
    fn check(&self, _: &T, _: &T, _: &Cx<'_>, _: &mut Vec<String>) {}
}

/// A list of grants: each item the default profile does not have is a
/// widening, reported as the message with `{}` replaced by the item.
pub struct Added(pub &'static str);

impl<T: PartialEq + std::fmt::Display> Rule<Vec<T>> for Added {
    fn direction(&self) -> Direction {
        Direction::Widening
    }
    fn check(&self, r: &Vec<T>, e: &Vec<T>, _: &Cx<'_>, out: &mut Vec<String>) {
        for item in e.iter().filter(|i| !r.contains(i)) {
            out.push(fill(self.0, item));
        }
    }
}

/// Host paths (or binds, "SRC[:DEST]") granted: like `Added`, except that
/// paths inside the project do not count. Also for a single path.
pub struct AddedOutside(pub &'static str);

impl Rule<Vec<String>> for AddedOutside {
    fn direction(&self) -> Direction {
        Direction::Widening
    }
    fn check(&self, r: &Vec<String>, e: &Vec<String>, cx: &Cx<'_>, out: &mut Vec<String>) {
        for item in e.iter().filter(|i| !r.contains(i) && !cx.in_project(i)) {
            out.push(fill(self.0, item));
        }
    }
}

impl Rule<Option<String>> for AddedOutside {
    fn direction(&self) -> Direction {
        Direction::Widening
    }
    fn check(&self, r: &Option<String>, e: &Option<String>, cx: &Cx<'_>, out: &mut Vec<String>) {
        if let Some(p) = e {
            if r.as_ref() != Some(p) && !cx.in_project(p) {
                out.push(fill(self.0, p));
            }
        }
    }
}

/// A list of restrictions: each item of the default profile's that the
/// project's profile lacks (through `replace`) is a widening.
pub struct Removed(pub &'static str);

impl<T: PartialEq + std::fmt::Display> Rule<Vec<T>> for Removed {
    fn direction(&self) -> Direction {
        Direction::Narrowing
    }
    fn check(&self, r: &Vec<T>, e: &Vec<T>, _: &Cx<'_>, out: &mut Vec<String>) {
        for item in r.iter().filter(|i| !e.contains(i)) {
            out.push(fill(self.0, item));
        }
    }
}

/// A switch that grants when true (default false).
pub struct Grants(pub &'static str);

impl Rule<Option<bool>> for Grants {
    fn direction(&self) -> Direction {
        Direction::Widening
    }
    fn check(&self, r: &Option<bool>, e: &Option<bool>, _: &Cx<'_>, out: &mut Vec<String>) {
        if *r != Some(true) && *e == Some(true) {
            out.push(self.0.to_string());
        }
    }
}

/// A switch that restricts when true; its default is the first field.
/// Turning off what the default profile has on is a widening.
pub struct Restricts(pub bool, pub &'static str);

impl Rule<Option<bool>> for Restricts {
    fn direction(&self) -> Direction {
        Direction::Narrowing
    }
    fn check(&self, r: &Option<bool>, e: &Option<bool>, _: &Cx<'_>, out: &mut Vec<String>) {
        let Restricts(default, msg) = *self;
        if r.unwrap_or(default) && !e.unwrap_or(default) {
            out.push(msg.to_string());
        }
    }
}

/// A floor (a minimum the sandbox refuses to start below): a lower one
/// than the default profile's, or none, is a widening.
pub struct Lowered(pub &'static str);

impl<T: PartialOrd + Copy + std::fmt::Display> Rule<Option<T>> for Lowered {
    fn direction(&self) -> Direction {
        Direction::Narrowing
    }
    fn check(&self, r: &Option<T>, e: &Option<T>, _: &Cx<'_>, out: &mut Vec<String>) {
        match (r, e) {
            (Some(r), Some(e)) if e < r => out.push(fill(self.0, e)),
            (Some(_), None) => out.push(fill(self.0, "none")),
            _ => {}
        }
    }
}

/// An allow-list where none means no restriction: lifting the default
/// profile's list, or adding to it, is a widening.
pub struct AllowList {
    pub lifted: &'static str,
    pub added: &'static str,
}

impl<T: PartialEq + std::fmt::Display> Rule<Option<Vec<T>>> for AllowList {
    fn direction(&self) -> Direction {
        Direction::Narrowing
    }
    fn check(&self, r: &Option<Vec<T>>, e: &Option<Vec<T>>, _: &Cx<'_>, out: &mut Vec<String>) {
        match (r, e) {
            (Some(_), None) => out.push(self.lifted.to_string()),
            (Some(r), Some(e)) => {
                for item in e.iter().filter(|i| !r.contains(i)) {
                    out.push(fill(self.added, item));
                }
            }
            _ => {}
        }
    }
}

/// Values ordered by how much they grant (see `Ranked`): a higher one
/// than the default profile's is a widening.
pub struct Raised;

/// A value that is one of a few words, ordered by how much it grants.
pub trait Ranked: Copy {
    /// How much `v` (unset: what the sandbox then gets) grants.
    fn rank(v: Option<Self>) -> u8;
    /// The widening, in words.
    fn widened(reference: Option<Self>, effective: Option<Self>) -> String;
}

impl<T: Ranked> Rule<Option<T>> for Raised {
    fn direction(&self) -> Direction {
        Direction::Widening
    }
    fn check(&self, r: &Option<T>, e: &Option<T>, _: &Cx<'_>, out: &mut Vec<String>) {
        if T::rank(*e) > T::rank(*r) {
            out.push(T::widened(*r, *e));
        }
    }
}

impl Ranked for ProjectMode {
    fn rank(v: Option<Self>) -> u8 {
        match v {
            Some(ProjectMode::None) => 0,
            Some(ProjectMode::Ro) => 1,
            Some(ProjectMode::Rw) | None => 2,
        }
    }
    fn widened(_: Option<Self>, _: Option<Self>) -> String {
        "makes the project writable".into()
    }
}

impl Ranked for HomeProject {
    fn rank(v: Option<Self>) -> u8 {
        match v {
            None | Some(HomeProject::Refuse) => 0,
            Some(HomeProject::Overlay) => 1,
            Some(HomeProject::Bind) => 2,
        }
    }
    fn widened(_: Option<Self>, e: Option<Self>) -> String {
        match e {
            Some(HomeProject::Bind) => {
                "binds your home directory read-write when it is the project".into()
            }
            _ => "runs with your home directory as the project".into(),
        }
    }
}

impl Ranked for NetMode {
    /// Unset counts as "host" on both sides: a profile that does not say
    /// is not taken to be the narrowest.
    fn rank(v: Option<Self>) -> u8 {
        match v {
            Some(NetMode::None) => 0,
            Some(NetMode::User) => 1,
            Some(NetMode::Host) | None => 2,
        }
    }
    fn widened(r: Option<Self>, e: Option<Self>) -> String {
        let word = |v: Option<Self>| v.map_or("host", NetMode::as_str);
        format!("network {:?} (default profile: {:?})", word(e), word(r))
    }
}

impl Ranked for IoUring {
    fn rank(v: Option<Self>) -> u8 {
        match v {
            None | Some(IoUring::Deny) => 0,
            Some(IoUring::Allow) => 1,
        }
    }
    fn widened(_: Option<Self>, _: Option<Self>) -> String {
        "allows io_uring".into()
    }
}

/// A comparison of its own, for a key no rule above fits; the direction
/// is declared with it.
pub struct Custom<T>(pub Direction, pub fn(&T, &T, &Cx<'_>, &mut Vec<String>));

impl<T> Rule<T> for Custom<T> {
    fn direction(&self) -> Direction {
        self.0
    }
    fn check(&self, r: &T, e: &T, cx: &Cx<'_>, out: &mut Vec<String>) {
        (self.1)(r, e, cx, out)
    }
}

/// `filesystem.ro_bind`: a read-only bind the default profile has neither
/// read-only nor read-write, of a path outside the project.
#[allow(clippy::ptr_arg)] // the signature `Custom<Vec<String>>` calls
pub fn ro_binds(r: &Vec<String>, e: &Vec<String>, cx: &Cx<'_>, out: &mut Vec<String>) {
    let rw = &cx.reference.filesystem.bind;
    for b in e {
        if !r.contains(b) && !rw.contains(b) && !cx.in_project(b) {
            out.push(format!("binds {b} read-only"));
        }
    }
}

/// `filesystem.image`: a root the project chooses. It narrows what the
/// sandbox sees of the host, but it is the code the project's commands run
/// with, pulled from a registry: the user sees it before trusting.
pub fn project_image(r: &Option<String>, e: &Option<String>, _: &Cx<'_>, out: &mut Vec<String>) {
    if let Some(i) = e.as_ref().filter(|i| Some(*i) != r.as_ref()) {
        out.push(format!(
            "runs on the image {i} instead of your system (filesystem.image; pulled from its registry when missing)"
        ));
    }
}

/// `network.allow`: each name the default profile does not reach, but those
/// of the built-in registries (`net`): narrower than a host network, but
/// what the file adds is for the user to see.
#[allow(clippy::ptr_arg)] // the signature `Custom<Vec<String>>` calls
pub fn allowed_names(r: &Vec<String>, e: &Vec<String>, _: &Cx<'_>, out: &mut Vec<String>) {
    let registries = crate::profile::load("net", &crate::profile::SearchPath::default())
        .map(|l| l.profile.network.allow)
        .unwrap_or_default();
    for a in e
        .iter()
        .filter(|a| !r.contains(a) && !registries.contains(a))
    {
        out.push(format!("reaches {a} over the network (network.allow)"));
    }
}

/// `landlock.read` and `landlock.execute`: a path outside the project the
/// default profile makes neither readable nor executable.
#[allow(clippy::ptr_arg)] // the signature `Custom<Vec<String>>` calls
pub fn landlock_readable(_: &Vec<String>, e: &Vec<String>, cx: &Cx<'_>, out: &mut Vec<String>) {
    let rl = &cx.reference.landlock;
    for p in e {
        if !rl.read.contains(p) && !rl.execute.contains(p) && !cx.in_project(p) {
            out.push(format!("Landlock read access to {p}"));
        }
    }
}

/// Everything `effective` grants that `reference` does not, in words, key
/// by key as the table in `profile::schema` declares.
/// Paths inside the project do not count: the project is the user's own.
pub fn widenings(reference: &ProfileFile, effective: &ProfileFile, project: &Path) -> Vec<String> {
    let cx = Cx {
        reference,
        effective,
        project,
    };
    let mut w = Vec::new();
    // Every section, by name: a new one left out here does not compile.
    let ProfileFile {
        description: _,
        include: _,
        replace: _,
        filesystem,
        environment,
        network,
        landlock,
        seccomp,
        process,
    } = effective;
    let r = reference;
    FilesystemSection::widenings(&r.filesystem, filesystem, &cx, &mut w);
    EnvironmentSection::widenings(&r.environment, environment, &cx, &mut w);
    NetworkSection::widenings(&r.network, network, &cx, &mut w);
    LandlockSection::widenings(&r.landlock, landlock, &cx, &mut w);
    SeccompSection::widenings(&r.seccomp, seccomp, &cx, &mut w);
    ProcessSection::widenings(&r.process, process, &cx, &mut w);
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

    /// For each key that is not neutral: a default profile, an effective
    /// profile, and the one widening `sbox trust` must report.
    const CASES: &[(&str, &str, &str, &str)] = &[
        (
            "filesystem.image",
            "",
            "[filesystem]\nimage = \"debian:12\"",
            "runs on the image debian:12 instead of your system (filesystem.image; pulled from its registry when missing)",
        ),
        (
            "network.allow",
            "[network]\nallow = [\"pypi.org\"]",
            "[network]\nallow = [\"pypi.org\", \"evil.example:22\", \"files.pythonhosted.org:443\"]",
            "reaches evil.example:22 over the network (network.allow)",
        ),
        (
            "network.add_host",
            "",
            "[network]\nadd_host = [\"db.lan:10.0.0.5\"]",
            "reaches the address given for db.lan:10.0.0.5 (network.add_host)",
        ),
        (
            "filesystem.project",
            "[filesystem]\nproject = \"ro\"",
            "[filesystem]\nproject = \"rw\"",
            "makes the project writable",
        ),
        (
            "filesystem.bind",
            "",
            "[filesystem]\nbind = [\"/srv\", \"$PWD/in\"]",
            "binds /srv read-write",
        ),
        (
            "filesystem.ro_bind",
            "[filesystem]\nbind = [\"/usr\"]",
            "[filesystem]\nro_bind = [\"/usr\", \"/srv\"]",
            "binds /srv read-only",
        ),
        (
            "filesystem.tmpfs",
            "[filesystem]\ntmpfs = [\"/srv\"]",
            "",
            "shows the host's /srv (a tmpfs in the default profile)",
        ),
        (
            "filesystem.hidden",
            "[filesystem]\nhidden = [\"~/.ssh\"]",
            "[filesystem]\nhidden = [\"~/.aws\"]",
            "un-hides ~/.ssh",
        ),
        (
            "filesystem.home_project",
            "[filesystem]\nhome_project = \"overlay\"",
            "[filesystem]\nhome_project = \"bind\"",
            "binds your home directory read-write when it is the project",
        ),
        (
            "filesystem.output",
            "",
            "[filesystem]\noutput = \"/srv\"",
            "binds /srv read-write (output)",
        ),
        (
            "environment.pass",
            "",
            "[environment]\npass = [\"TOKEN\"]",
            "passes $TOKEN from your environment",
        ),
        (
            "environment.unset",
            "[environment]\nunset = [\"TOKEN\"]",
            "",
            "keeps $TOKEN (unset by the default profile)",
        ),
        (
            "network.mode",
            "[network]\nmode = \"none\"",
            "[network]\nmode = \"user\"",
            "network \"user\" (default profile: \"none\")",
        ),
        (
            "network.allowed_connect_ports",
            "[network]\nallowed_connect_ports = [443]",
            "[network]\nallowed_connect_ports = [443, 22]",
            "allows TCP connect to port 22",
        ),
        (
            "network.allowed_bind_ports",
            "[network]\nallowed_bind_ports = [8080]",
            "",
            "lifts the TCP bind port restriction",
        ),
        (
            "network.publish",
            "",
            "[network]\npublish = [\"8080:80\"]",
            "publishes port 8080:80 on the host",
        ),
        (
            "network.allow_host_loopback",
            "",
            "[network]\nallow_host_loopback = true",
            "reaches the host's loopback services",
        ),
        (
            "landlock.enabled",
            "",
            "[landlock]\nenabled = false",
            "turns Landlock off",
        ),
        (
            "landlock.best_effort",
            "[landlock]\nbest_effort = false",
            "[landlock]\nbest_effort = true",
            "makes Landlock best-effort",
        ),
        (
            "landlock.min_abi",
            "[landlock]\nmin_abi = 4",
            "[landlock]\nmin_abi = 2",
            "lowers the Landlock ABI it needs to 2",
        ),
        (
            "landlock.read",
            "[landlock]\nexecute = [\"/usr\"]",
            "[landlock]\nread = [\"/usr\", \"/srv\"]",
            "Landlock read access to /srv",
        ),
        (
            "landlock.execute",
            "[landlock]\nread = [\"/usr\"]",
            "[landlock]\nexecute = [\"/usr\", \"/srv\"]",
            "Landlock read access to /srv",
        ),
        (
            "landlock.write",
            "",
            "[landlock]\nwrite = [\"/srv\", \"$PWD\"]",
            "Landlock write access to /srv",
        ),
        (
            "landlock.scope_signals",
            "",
            "[landlock]\nscope_signals = false",
            "lifts Landlock signal scoping",
        ),
        (
            "landlock.scope_abstract_unix",
            "[landlock]\nscope_abstract_unix = true",
            "[landlock]\nscope_abstract_unix = false",
            "lifts Landlock abstract-socket scoping",
        ),
        (
            "landlock.restrict_device_ioctl",
            "[landlock]\nrestrict_device_ioctl = true",
            "[landlock]\nrestrict_device_ioctl = false",
            "lifts the Landlock device ioctl restriction",
        ),
        (
            "seccomp.enabled",
            "",
            "[seccomp]\nenabled = false",
            "turns the seccomp filter off",
        ),
        (
            "seccomp.deny",
            "[seccomp]\ndeny = [\"chmod\"]",
            "",
            "no longer denies the system call chmod",
        ),
        (
            "seccomp.kill",
            "[seccomp]\nkill = [\"chmod\"]",
            "",
            "no longer kills on the system call chmod",
        ),
        (
            "seccomp.allow",
            "",
            "[seccomp]\nallow = [\"ptrace\"]",
            "allows the system call ptrace",
        ),
        (
            "seccomp.allow_ptrace",
            "",
            "[seccomp]\nallow_ptrace = true",
            "allows ptrace",
        ),
        (
            "seccomp.allow_userns",
            "",
            "[seccomp]\nallow_userns = true",
            "allows new user namespaces",
        ),
        (
            "seccomp.io_uring",
            "[seccomp]\nio_uring = \"deny\"",
            "[seccomp]\nio_uring = \"allow\"",
            "allows io_uring",
        ),
        (
            "process.new_session",
            "",
            "[process]\nnew_session = false",
            "keeps your terminal session (no new session)",
        ),
    ];

    #[test]
    fn every_key_that_touches_access_is_compared() {
        let keys = ProfileFile::keys();
        for k in &keys {
            let cases = CASES.iter().filter(|c| c.0 == k.name).count();
            match k.trust {
                Direction::Neutral => assert_eq!(cases, 0, "{} is neutral", k.name),
                _ => assert_eq!(cases, 1, "{}: add a case to CASES", k.name),
            }
        }
        // Paths in the project ($PWD) are not widenings.
        let d = std::env::temp_dir().join(format!("sbox-trust-cases-{}", std::process::id()));
        std::fs::create_dir_all(d.join("in")).expect("mkdir");
        let p = std::fs::canonicalize(&d).expect("canon");
        for (key, reference, effective, want) in CASES {
            assert!(keys.iter().any(|k| k.name == *key), "{key}: not a key");
            let (r, e) = (parse(reference), parse(effective));
            assert_eq!(widenings(&r, &e, &p), [*want], "{key}");
            assert!(widenings(&r, &r, &p).is_empty(), "{key}: against itself");
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_project_file_over_the_default_profile_is_checked_key_by_key() {
        // As `sbox trust` builds it: the project file laid over `dev`.
        let dev = crate::profile::load(REFERENCE_PROFILE, &Default::default())
            .expect("dev")
            .profile;
        let over_dev = |text: &str| {
            let mut p = dev.clone();
            let file = parse(text);
            assert_eq!(file.bad_replace(), None, "{text}");
            p.merge(file, "project", &mut Default::default());
            widenings(&dev, &p, Path::new("/p"))
        };
        assert!(over_dev("[network]\nmode = \"none\"\n[seccomp]\ndeny = [\"chmod\"]").is_empty());
        for (text, want) in [
            (
                "[filesystem]\nbind = [\"~/.ssh\"]",
                "binds ~/.ssh read-write",
            ),
            (
                "[seccomp]\nallow_userns = true",
                "allows new user namespaces",
            ),
            ("[seccomp]\nio_uring = \"allow\"", "allows io_uring"),
            (
                "[landlock]\nscope_signals = false",
                "lifts Landlock signal scoping",
            ),
            (
                "[filesystem]\nhome_project = \"bind\"",
                "binds your home directory",
            ),
            (
                "[environment]\npass = [\"AWS_SECRET\"]",
                "passes $AWS_SECRET",
            ),
        ] {
            let w = over_dev(text);
            assert!(w.iter().any(|x| x.contains(want)), "{text}: {w:?}");
        }
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
