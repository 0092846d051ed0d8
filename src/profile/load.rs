//! Finding profiles by name and following their `include` lists.

use super::schema::{ProfileFile, Provenance};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The profiles compiled into the binary, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    ("base", include_str!("../../profiles/base.toml")),
    ("dev", include_str!("../../profiles/dev.toml")),
    ("build", include_str!("../../profiles/build.toml")),
    ("strict", include_str!("../../profiles/strict.toml")),
    ("net", include_str!("../../profiles/net.toml")),
    (
        "registries-npm",
        include_str!("../../profiles/registries-npm.toml"),
    ),
    (
        "registries-pypi",
        include_str!("../../profiles/registries-pypi.toml"),
    ),
    (
        "registries-crates",
        include_str!("../../profiles/registries-crates.toml"),
    ),
    (
        "registries-go",
        include_str!("../../profiles/registries-go.toml"),
    ),
    (
        "registries-maven",
        include_str!("../../profiles/registries-maven.toml"),
    ),
    (
        "registries-rubygems",
        include_str!("../../profiles/registries-rubygems.toml"),
    ),
    (
        "registries-debian",
        include_str!("../../profiles/registries-debian.toml"),
    ),
    (
        "registries-github",
        include_str!("../../profiles/registries-github.toml"),
    ),
];

/// Where a profile's text came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Builtin(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Builtin(n) => write!(f, "built-in:{n}"),
        }
    }
}

/// Directories searched for `NAME.toml`, most specific first.
#[derive(Debug, Clone, Default)]
pub struct SearchPath {
    pub dirs: Vec<PathBuf>,
}

impl SearchPath {
    /// `$XDG_CONFIG_HOME/sbox/profiles`, then the installed `profiles/`
    /// (`PREFIX/share/sbox/profiles` next to `PREFIX/bin/sbox`).
    pub fn from_host() -> Self {
        let mut dirs = Vec::new();
        if let Some(base) = directories::BaseDirs::new() {
            dirs.push(base.config_dir().join("sbox").join("profiles"));
        }
        if let Ok(exe) = std::env::current_exe() {
            if let Some(prefix) = exe.parent().and_then(Path::parent) {
                dirs.push(prefix.join("share").join("sbox").join("profiles"));
            }
        }
        SearchPath { dirs }
    }
}

/// A name is a path when it contains a slash or ends in `.toml`.
pub(crate) fn is_path(name: &str) -> bool {
    name.contains('/') || name.ends_with(".toml")
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

/// Find the text of profile `name`.
pub fn find(name: &str, search: &SearchPath) -> Result<(String, Origin)> {
    if is_path(name) {
        let path = PathBuf::from(name);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Profile {
            name: name.to_string(),
            msg: format!("cannot read {}: {e}", path.display()),
        })?;
        let abs = std::fs::canonicalize(&path).unwrap_or(path);
        return Ok((text, Origin::File(abs)));
    }
    if !valid_name(name) {
        return Err(Error::Profile {
            name: name.to_string(),
            msg: "invalid profile name (letters, digits, '-', '_', '.'; or a path to a .toml file)"
                .into(),
        });
    }
    for dir in &search.dirs {
        let path = dir.join(format!("{name}.toml"));
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok((text, Origin::File(path))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::Profile {
                    name: name.to_string(),
                    msg: format!("cannot read {}: {e}", path.display()),
                })
            }
        }
    }
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, text)| (text.to_string(), Origin::Builtin(n.to_string())))
        .ok_or_else(|| Error::Profile {
            name: name.to_string(),
            msg: format!("not found (try `sbox profile list`; searched {})", {
                let mut v: Vec<String> = search
                    .dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect();
                v.push("the built-in profiles".into());
                v.join(", ")
            }),
        })
}

/// Parse one profile's text, naming the file, line and key on error.
pub fn parse(text: &str, origin: &Origin) -> Result<ProfileFile> {
    toml::from_str(text).map_err(|e| {
        let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
        let msg = e.message().replace('\n', " ");
        Error::Profile {
            name: origin.to_string(),
            msg: if line > 0 {
                format!("line {line}, column {col}: {msg}")
            } else {
                msg
            },
        }
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

/// A profile with its includes applied, and the files it was built from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub name: String,
    pub profile: ProfileFile,
    pub sources: Vec<Origin>,
    /// Where each value came from.
    pub provenance: Provenance,
}

/// Load `name` and everything it includes (depth first, cycles are errors).
/// A path is taken relative to the working directory; a path in an
/// `include` list relative to the directory of the file that names it.
pub fn load(name: &str, search: &SearchPath) -> Result<Loaded> {
    let mut walk = Walk::new(search, None);
    let profile = walk.include(name, &Base::Cwd)?;
    Ok(walk.finish(name, profile))
}

/// A project directory, opened once: the project's own files are read
/// beneath it, so that neither `..` nor a symlink leads out of it.
#[derive(Debug)]
pub struct ProjectDir {
    pub path: PathBuf,
    fd: std::os::fd::OwnedFd,
}

/// Largest profile file read from a project.
const MAX_PROJECT_FILE: u64 = 1 << 20;

impl ProjectDir {
    pub fn open(path: &Path) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let fd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| Error::path(path, crate::error::io_reason(&e)))?;
        Ok(ProjectDir {
            path: path.to_path_buf(),
            fd: fd.into(),
        })
    }

    /// The bytes of the regular file `rel` (relative to the project), read
    /// once; `Ok(None)` when there is none. `Err` says why it cannot be read.
    pub fn read(&self, rel: &Path) -> std::result::Result<Option<Vec<u8>>, String> {
        use nix::errno::Errno;
        use std::io::Read;
        use std::os::fd::AsFd;
        let fd =
            match crate::sys::open_beneath(
                self.fd.as_fd(),
                rel,
                libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK,
            ) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::EXDEV) => return Err(
                    "leads outside the project (through `..`, an absolute path or a symbolic link)"
                        .into(),
                ),
                Err(Errno::ENOSYS) => {
                    return Err("reading it safely needs openat2 (Linux 5.6 or later)".into())
                }
                Err(e) => return Err(e.desc().to_lowercase()),
            };
        let f = std::fs::File::from(fd);
        let md = f.metadata().map_err(|e| crate::error::io_reason(&e))?;
        if !md.is_file() {
            return Err("not a regular file".into());
        }
        if md.len() > MAX_PROJECT_FILE {
            return Err(format!("larger than {MAX_PROJECT_FILE} bytes"));
        }
        let mut bytes = Vec::new();
        f.take(MAX_PROJECT_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| crate::error::io_reason(&e))?;
        if bytes.len() as u64 > MAX_PROJECT_FILE {
            return Err(format!("larger than {MAX_PROJECT_FILE} bytes"));
        }
        Ok(Some(bytes))
    }
}

/// One project file as it was read: its path in the project and the
/// SHA-256 of exactly the bytes that were parsed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pin {
    pub path: String,
    pub sha256: String,
}

/// Parse a project file from the bytes that were read, and pin those same
/// bytes: the profile and the hash come from one buffer, never from two
/// reads of a file that may change in between.
pub fn parse_pinned(rel: &Path, bytes: &[u8], origin: &Origin) -> Result<(ProfileFile, Pin)> {
    let pin = Pin {
        path: rel.to_string_lossy().into_owned(),
        sha256: crate::digest::digest(bytes),
    };
    let text = std::str::from_utf8(bytes).map_err(|e| Error::Profile {
        name: origin.to_string(),
        msg: format!("not UTF-8 (at byte {})", e.valid_up_to()),
    })?;
    Ok((parse(text, origin)?, pin))
}

/// Load a project's own profile file, `file` (relative to the project),
/// from `bytes` — what was read of it — with its includes: a path in a
/// project file's `include` list is read beneath the project, relative to
/// that file's directory; a name is a profile of the user's, looked up as
/// usual. Returns the pins of every project file read, in the order read.
pub fn load_project(
    project: &ProjectDir,
    file: &Path,
    bytes: &[u8],
    search: &SearchPath,
) -> Result<(Loaded, Vec<Pin>)> {
    let mut walk = Walk::new(search, Some(project));
    let origin = Origin::File(project.path.join(file));
    let (parsed, pin) = parse_pinned(file, bytes, &origin)?;
    walk.pins.push(pin);
    let key = origin.to_string();
    let base = Base::Project(file.parent().map(Path::to_path_buf).unwrap_or_default());
    let profile = walk.enter(key, parsed, origin.clone(), base)?;
    let loaded = walk.finish(&origin.to_string(), profile);
    Ok((loaded, walk.pins))
}

/// Where a path in an `include` list is looked up.
#[derive(Debug, Clone)]
enum Base {
    /// The working directory (a path given on the command line).
    Cwd,
    /// The directory of the user's own profile file that names it.
    Dir(PathBuf),
    /// A project file's directory, relative to the project: read beneath it.
    Project(PathBuf),
}

/// `name` (a path in a project file's include list) joined to `dir`, both
/// relative to the project; refused when it is absolute or its `..` climb
/// out of the project (a symlink out is refused when it is opened).
fn project_rel(dir: &Path, name: &str) -> std::result::Result<PathBuf, String> {
    use std::path::Component;
    let out = || {
        "leads outside the project (through `..`, an absolute path or a symbolic link)".to_string()
    };
    let mut rel = PathBuf::new();
    let mut depth = 0usize;
    for c in dir.join(name).components() {
        match c {
            Component::Normal(n) => {
                depth += 1;
                rel.push(n);
            }
            Component::ParentDir => {
                depth = depth.checked_sub(1).ok_or_else(out)?;
                rel.push("..");
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(out()),
        }
    }
    Ok(rel)
}

/// One walk through a profile and its includes.
struct Walk<'a> {
    search: &'a SearchPath,
    project: Option<&'a ProjectDir>,
    stack: Vec<String>,
    /// Files already applied: one included twice (two includes that share
    /// `build`) is applied once, where it first comes.
    done: Vec<String>,
    sources: Vec<Origin>,
    prov: Provenance,
    pins: Vec<Pin>,
}

impl<'a> Walk<'a> {
    fn new(search: &'a SearchPath, project: Option<&'a ProjectDir>) -> Self {
        Walk {
            search,
            project,
            stack: Vec::new(),
            done: Vec::new(),
            sources: Vec::new(),
            prov: Provenance::new(),
            pins: Vec::new(),
        }
    }

    fn finish(&mut self, name: &str, profile: ProfileFile) -> Loaded {
        Loaded {
            name: name.to_string(),
            profile,
            sources: std::mem::take(&mut self.sources),
            provenance: std::mem::take(&mut self.prov),
        }
    }

    /// An include error names the file that has the include.
    fn in_parent(&self, e: Error) -> Error {
        match (e, self.stack.last()) {
            (Error::Profile { name, msg }, Some(parent)) => Error::Profile {
                name: parent.clone(),
                msg: format!("include {name:?}: {msg}"),
            },
            (e, _) => e,
        }
    }

    /// Find, read and parse `name`, then load what it includes.
    fn include(&mut self, name: &str, base: &Base) -> Result<ProfileFile> {
        if let (Base::Project(dir), true) = (base, is_path(name)) {
            let project = self
                .project
                .ok_or_else(|| Error::Host("no project".into()))?;
            let parent = self.stack.last().cloned().unwrap_or_default();
            let fail = |msg: String| Error::Profile {
                name: parent.clone(),
                msg: format!("include {name:?}: {msg}"),
            };
            let rel = project_rel(dir, name).map_err(fail)?;
            let key = project.path.join(&rel).to_string_lossy().into_owned();
            self.check_depth(&key)?;
            if self.done.contains(&key) {
                return Ok(ProfileFile::default());
            }
            let bytes = project
                .read(&rel)
                .map_err(fail)?
                .ok_or_else(|| fail("not found".into()))?;
            let origin = Origin::File(project.path.join(&rel));
            let (parsed, pin) = parse_pinned(&rel, &bytes, &origin)?;
            self.pins.push(pin);
            let base = Base::Project(rel.parent().map(Path::to_path_buf).unwrap_or_default());
            return self.enter(key, parsed, origin, base);
        }
        // A file named two ways ("a.toml", "./a.toml") is one profile.
        let (key, lookup) = if is_path(name) {
            let path = match base {
                Base::Dir(d) => d.join(name),
                _ => PathBuf::from(name),
            };
            let key = std::fs::canonicalize(&path)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| path.to_string_lossy().into_owned());
            (key.clone(), key)
        } else {
            (name.to_string(), name.to_string())
        };
        self.check_depth(&key)?;
        if self.done.contains(&key) {
            return Ok(ProfileFile::default());
        }
        let (text, origin) = find(&lookup, self.search).map_err(|e| self.in_parent(e))?;
        let parsed = parse(&text, &origin)?;
        let base = match &origin {
            Origin::File(p) => Base::Dir(p.parent().map(Path::to_path_buf).unwrap_or_default()),
            Origin::Builtin(_) => Base::Cwd,
        };
        self.enter(key, parsed, origin, base)
    }

    /// Refuse a cycle through `key`, or nesting too deep.
    fn check_depth(&mut self, key: &str) -> Result<()> {
        if self.stack.iter().any(|n| n == key) {
            self.stack.push(key.to_string());
            return Err(Error::Profile {
                name: self.stack[0].clone(),
                msg: format!("include cycle: {}", self.stack.join(" -> ")),
            });
        }
        if self.stack.len() > 16 {
            return Err(Error::Profile {
                name: self.stack[0].clone(),
                msg: "includes nested deeper than 16".into(),
            });
        }
        Ok(())
    }

    /// Load what `file` includes (their paths relative to `base`), then
    /// merge `file` over them.
    fn enter(
        &mut self,
        key: String,
        mut file: ProfileFile,
        origin: Origin,
        base: Base,
    ) -> Result<ProfileFile> {
        if let Some(bad) = file.bad_replace() {
            return Err(Error::Profile {
                name: origin.to_string(),
                msg: format!("replace: {bad:?} is not a list of a profile"),
            });
        }
        self.stack.push(key.clone());
        let mut merged = ProfileFile::default();
        for inc in std::mem::take(&mut file.include) {
            let sub = self.include(&inc, &base)?;
            // The included profile's values keep the origins recorded below.
            let mut scratch = Provenance::new();
            merged.merge(sub, "", &mut scratch);
        }
        self.stack.pop();
        merged.merge(file, &origin.to_string(), &mut self.prov);
        self.sources.push(origin);
        self.done.push(key);
        Ok(merged)
    }
}

/// Names of every profile that can be found, with where each comes from.
pub fn list(search: &SearchPath) -> Vec<(String, Origin)> {
    let mut out: Vec<(String, Origin)> = Vec::new();
    for dir in &search.dirs {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut names: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        names.sort();
        for p in names {
            if p.extension().is_some_and(|e| e == "toml") {
                if let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
                    if !out.iter().any(|(n, _)| n == stem) {
                        out.push((stem.to_string(), Origin::File(p.clone())));
                    }
                }
            }
        }
    }
    for (n, _) in BUILTIN {
        if !out.iter().any(|(m, _)| m == n) {
            out.push((n.to_string(), Origin::Builtin(n.to_string())));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> (PathBuf, SearchPath) {
        let d = std::env::temp_dir().join(format!(
            "sbox-profile-test-{}-{}",
            std::process::id(),
            files.len() + files.first().map_or(0, |f| f.0.len() * 31 + f.1.len())
        ));
        std::fs::create_dir_all(&d).expect("temp dir");
        for (n, t) in files {
            std::fs::write(d.join(format!("{n}.toml")), t).expect("write");
        }
        let s = SearchPath {
            dirs: vec![d.clone()],
        };
        (d, s)
    }

    #[test]
    fn builtins_parse() {
        for (n, _) in BUILTIN {
            load(n, &SearchPath::default()).expect(n);
        }
    }

    #[test]
    fn include_extends_lists_and_overrides_scalars() {
        let (d, s) = dir_with(&[
            (
                "a",
                "[filesystem]\nhidden=[\"/x\"]\noverlay=\"kernel\"\n[process]\nhostname=\"a\"",
            ),
            (
                "b",
                "include=[\"a\"]\n[filesystem]\nhidden=[\"/y\"]\n[process]\nhostname=\"b\"",
            ),
        ]);
        let l = load("b", &s).expect("load");
        assert_eq!(l.profile.filesystem.hidden, vec!["/x", "/y"]);
        assert_eq!(l.profile.process.hostname.as_deref(), Some("b"));
        assert_eq!(
            l.profile.filesystem.overlay,
            Some(super::super::schema::Backend::Kernel)
        );
        assert_eq!(l.sources.len(), 2);
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn a_file_included_twice_is_applied_once() {
        let (d, s) = dir_with(&[
            ("a", "[filesystem]\nhidden=[\"/x\"]"),
            ("b", "include=[\"a\"]\n[network]\nallow=[\"b.test\"]"),
            ("c", "include=[\"a\"]\n[network]\nallow=[\"c.test\"]"),
            ("d", "include=[\"b\", \"c\"]"),
        ]);
        let l = load("d", &s).expect("load");
        assert_eq!(l.profile.filesystem.hidden, vec!["/x"]);
        assert_eq!(l.profile.network.allow, vec!["b.test", "c.test"]);
        std::fs::remove_dir_all(d).ok();
        let net = load("net", &SearchPath::default()).expect("net");
        let hidden = &net.profile.filesystem.hidden;
        let base = load("base", &SearchPath::default()).expect("base");
        assert_eq!(hidden.len(), base.profile.filesystem.hidden.len());
        assert!(net
            .profile
            .network
            .allow
            .iter()
            .any(|a| a.contains("pypi.org")));
    }

    #[test]
    fn include_cycle_is_an_error() {
        let (d, s) = dir_with(&[("c1", "include=[\"c2\"]"), ("c2", "include=[\"c1\"]")]);
        let e = load("c1", &s).expect_err("cycle").to_string();
        assert!(e.contains("include cycle: c1 -> c2 -> c1"), "{e}");
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = parse("[filesystem]\n\nbogus = 1\n", &Origin::Builtin("t".into()))
            .expect_err("unknown")
            .to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let e = parse("[process]\nhostname = 3\n", &Origin::Builtin("t".into()))
            .expect_err("type")
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn missing_profile_and_bad_names() {
        assert!(find("no-such-profile", &SearchPath::default()).is_err());
        assert!(find("../etc", &SearchPath::default()).is_err());
        let (d, s) = dir_with(&[("inc-missing", "include=[\"nope\"]")]);
        let e = load("inc-missing", &s).expect_err("missing").to_string();
        assert!(e.contains("include \"nope\""), "{e}");
        std::fs::remove_dir_all(d).ok();
    }

    /// A project directory with these files (relative paths), and symlinks.
    fn project_with(tag: &str, files: &[(&str, &str)]) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sbox-proj-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for (n, t) in files {
            let p = d.join(n);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, t).expect("write");
        }
        d
    }

    fn load_in(d: &Path) -> Result<(Loaded, Vec<Pin>)> {
        let dir = ProjectDir::open(d).expect("open");
        let bytes = dir
            .read(Path::new(".sbox.toml"))
            .expect("read")
            .expect("some");
        load_project(
            &dir,
            Path::new(".sbox.toml"),
            &bytes,
            &SearchPath::default(),
        )
    }

    #[test]
    fn the_profile_is_parsed_from_the_bytes_that_are_pinned() {
        let origin = Origin::Builtin("t".into());
        let bytes = b"[process]\nhostname = \"one\"\n";
        let (p, pin) = parse_pinned(Path::new(".sbox.toml"), bytes, &origin).expect("parse");
        assert_eq!(p.process.hostname.as_deref(), Some("one"));
        assert_eq!(pin.sha256, crate::digest::digest(bytes));
        assert_eq!(pin.path, ".sbox.toml");
        // The top file is not read again: what was handed in is what is
        // parsed and pinned, whatever the file holds now.
        let d = project_with(
            "bytes",
            &[(".sbox.toml", "[process]\nhostname = \"two\"\n")],
        );
        let dir = ProjectDir::open(&d).expect("open");
        let (l, pins) = load_project(&dir, Path::new(".sbox.toml"), bytes, &SearchPath::default())
            .expect("load");
        assert_eq!(l.profile.process.hostname.as_deref(), Some("one"));
        assert_eq!(pins, vec![pin]);
        assert!(parse_pinned(Path::new("x"), b"\xff = 1", &origin).is_err());
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn project_includes_are_relative_to_the_including_file_and_pinned() {
        let d = project_with(
            "rel",
            &[
                (".sbox.toml", "include = [\"dev\", \"conf/a.toml\"]\n"),
                (
                    "conf/a.toml",
                    "include = [\"b.toml\"]\n[process]\nhostname = \"a\"\n",
                ),
                ("conf/b.toml", "[environment]\nset = { B = \"1\" }\n"),
                // A decoy where the working directory would have found it.
                ("b.toml", "[environment]\nset = { B = \"decoy\" }\n"),
            ],
        );
        let (l, pins) = load_in(&d).expect("load");
        assert_eq!(l.profile.process.hostname.as_deref(), Some("a"));
        assert_eq!(
            l.profile.environment.set.get("B").map(String::as_str),
            Some("1")
        );
        let names: Vec<&str> = pins.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(names, [".sbox.toml", "conf/a.toml", "conf/b.toml"]);
        let b = std::fs::read(d.join("conf/b.toml")).expect("read");
        assert_eq!(pins[2].sha256, crate::digest::digest(&b));
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn project_includes_cannot_leave_the_project() {
        let outside = project_with("outside", &[("x.toml", "[process]\nhostname = \"out\"\n")]);
        let x = outside.join("x.toml").display().to_string();
        for (tag, inc) in [
            ("dotdot", "../x.toml".to_string()),
            ("deep", "conf/../../x.toml".to_string()),
            ("abs", x.clone()),
            ("link", "link.toml".to_string()),
            ("rellink", "rel.toml".to_string()),
        ] {
            let d = project_with(tag, &[(".sbox.toml", &format!("include = [{inc:?}]\n"))]);
            std::os::unix::fs::symlink(&x, d.join("link.toml")).expect("symlink");
            let up = format!("../sbox-proj-test-{}-outside/x.toml", std::process::id());
            std::os::unix::fs::symlink(up, d.join("rel.toml")).expect("symlink");
            let e = load_in(&d).expect_err(tag).to_string();
            assert!(e.contains("leads outside the project"), "{tag}: {e}");
            assert!(e.contains(&format!("include {inc:?}")), "{tag}: {e}");
            std::fs::remove_dir_all(d).ok();
        }
        // A symlink that stays inside is followed.
        let d = project_with(
            "inlink",
            &[
                (".sbox.toml", "include = [\"l.toml\"]\n"),
                ("real.toml", "[process]\nhostname = \"in\"\n"),
            ],
        );
        std::os::unix::fs::symlink("real.toml", d.join("l.toml")).expect("symlink");
        let (l, _) = load_in(&d).expect("inside link");
        assert_eq!(l.profile.process.hostname.as_deref(), Some("in"));
        std::fs::remove_dir_all(d).ok();
        std::fs::remove_dir_all(outside).ok();
    }

    #[test]
    fn a_user_profile_includes_paths_relative_to_itself() {
        let (d, s) = dir_with(&[("rel-top", "include = [\"sub/inc.toml\"]")]);
        std::fs::create_dir_all(d.join("sub")).expect("mkdir");
        std::fs::write(d.join("sub/inc.toml"), "[process]\nhostname = \"mine\"\n").expect("write");
        let l = load("rel-top", &s).expect("load");
        assert_eq!(l.profile.process.hostname.as_deref(), Some("mine"));
        std::fs::remove_dir_all(d).ok();
    }
}
