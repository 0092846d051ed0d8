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
fn is_path(name: &str) -> bool {
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
pub fn load(name: &str, search: &SearchPath) -> Result<Loaded> {
    let mut stack = Vec::new();
    let mut sources = Vec::new();
    let mut provenance = Provenance::new();
    let profile = load_rec(name, search, &mut stack, &mut sources, &mut provenance)?;
    Ok(Loaded {
        name: name.to_string(),
        profile,
        sources,
        provenance,
    })
}

fn load_rec(
    name: &str,
    search: &SearchPath,
    stack: &mut Vec<String>,
    sources: &mut Vec<Origin>,
    prov: &mut Provenance,
) -> Result<ProfileFile> {
    // A file named two ways ("a.toml", "./a.toml") is one profile.
    let canonical;
    let name = if is_path(name) {
        canonical = std::fs::canonicalize(name)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| name.to_string());
        canonical.as_str()
    } else {
        name
    };
    if stack.iter().any(|n| n == name) {
        stack.push(name.to_string());
        return Err(Error::Profile {
            name: stack[0].clone(),
            msg: format!("include cycle: {}", stack.join(" -> ")),
        });
    }
    if stack.len() > 16 {
        return Err(Error::Profile {
            name: stack[0].clone(),
            msg: "includes nested deeper than 16".into(),
        });
    }
    let (text, origin) = find(name, search).map_err(|e| match (e, stack.last()) {
        (Error::Profile { name, msg }, Some(parent)) => Error::Profile {
            name: parent.clone(),
            msg: format!("include {name:?}: {msg}"),
        },
        (e, _) => e,
    })?;
    let mut file = parse(&text, &origin)?;
    if let Some(bad) = file.bad_replace() {
        return Err(Error::Profile {
            name: origin.to_string(),
            msg: format!("replace: {bad:?} is not a list of a profile"),
        });
    }
    stack.push(name.to_string());
    let mut merged = ProfileFile::default();
    for inc in std::mem::take(&mut file.include) {
        let sub = load_rec(&inc, search, stack, sources, prov)?;
        // The included profile's values keep the origins recorded below.
        let mut scratch = Provenance::new();
        merged.merge(sub, "", &mut scratch);
    }
    stack.pop();
    merged.merge(file, &origin.to_string(), prov);
    sources.push(origin);
    Ok(merged)
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
        assert_eq!(l.profile.filesystem.overlay.as_deref(), Some("kernel"));
        assert_eq!(l.sources.len(), 2);
        std::fs::remove_dir_all(d).ok();
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
}
