//! Image names (`registry/repository:tag@digest`) and how short names are
//! resolved (like podman: the configured search registries, docker.io's
//! `library/` for one-word names).

use super::error::ImageError;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// The registry of docker's short names.
pub const DOCKER_IO: &str = "docker.io";
/// The registry of images that only exist locally (imported, committed).
pub const LOCALHOST: &str = "localhost";

/// A fully qualified image name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

fn invalid(input: &str, reason: impl Into<String>) -> ImageError {
    ImageError::InvalidReference {
        input: input.to_string(),
        reason: reason.into(),
    }
}

/// Whether the first component of a name is a registry host.
fn is_domain(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == LOCALHOST
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

/// Whether `d` is `sha256:` and 64 lowercase hex digits.
pub fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The parts of a name before the registry is decided.
struct Parts {
    domain: Option<String>,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

fn split(s: &str) -> Result<Parts, ImageError> {
    if s.is_empty() {
        return Err(invalid(s, "empty"));
    }
    if s.len() > 255 + 128 + 72 {
        return Err(invalid(s, "too long"));
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => {
            if !valid_digest(d) {
                return Err(invalid(
                    s,
                    "a digest is sha256: and 64 lowercase hex digits",
                ));
            }
            (r, Some(d.to_string()))
        }
        None => (s, None),
    };
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let t = &rest[last_slash + i + 1..];
            if !valid_tag(t) {
                return Err(invalid(s, format!("bad tag {t:?}")));
            }
            (&rest[..last_slash + i], Some(t.to_string()))
        }
        None => (rest, None),
    };
    let (domain, path) = match name.split_once('/') {
        Some((first, path)) if is_domain(first) => {
            if !valid_domain(first) {
                return Err(invalid(s, format!("bad registry {first:?}")));
            }
            (Some(first.to_string()), path)
        }
        _ => (None, name),
    };
    if path.is_empty() {
        return Err(invalid(s, "no repository"));
    }
    for c in path.split('/') {
        if !valid_component(c) {
            return Err(invalid(
                s,
                format!(
                    "bad path component {c:?} (lowercase letters, digits and . _ - between them)"
                ),
            ));
        }
    }
    Ok(Parts {
        domain,
        path: path.to_string(),
        tag,
        digest,
    })
}

impl Reference {
    fn from_parts(registry: &str, p: Parts) -> Reference {
        let repository = if registry == DOCKER_IO && !p.path.contains('/') {
            format!("library/{}", p.path)
        } else {
            p.path
        };
        let tag = match (&p.tag, &p.digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.clone(),
        };
        Reference {
            registry: registry.to_string(),
            repository,
            tag,
            digest: p.digest,
        }
    }

    /// A fully qualified name (`registry/repository[:tag][@digest]`); the
    /// tag defaults to `latest` when neither tag nor digest is given.
    pub fn parse(s: &str) -> Result<Reference, ImageError> {
        let p = split(s)?;
        let Some(domain) = p.domain.clone() else {
            return Err(invalid(s, "not fully qualified (no registry)"));
        };
        Ok(Self::from_parts(&domain, p))
    }

    /// Whether `s` names its registry.
    pub fn is_qualified(s: &str) -> bool {
        split(s).is_ok_and(|p| p.domain.is_some())
    }

    /// The full names a (possibly short) name may stand for, in the order
    /// of the search registries; one for a fully qualified name.
    pub fn candidates(s: &str, regs: &Registries) -> Result<Vec<Reference>, ImageError> {
        let p = split(s)?;
        if let Some(d) = p.domain.clone() {
            return Ok(vec![Self::from_parts(&d, p)]);
        }
        let mut v = Vec::new();
        for r in &regs.search {
            let q = Parts {
                domain: None,
                path: p.path.clone(),
                tag: p.tag.clone(),
                digest: p.digest.clone(),
            };
            v.push(Self::from_parts(r, q));
        }
        if v.is_empty() {
            return Err(invalid(
                s,
                "not fully qualified and no unqualified-search-registries are configured",
            ));
        }
        Ok(v)
    }

    /// A name as the user wrote it, resolved like podman: fully qualified
    /// names as they are; short names on the one search registry
    /// (`debian:12` → `docker.io/library/debian:12`); an error listing the
    /// choices when several search registries are configured (the store
    /// first looks for a short name among its own images, see
    /// `Store::resolve`).
    pub fn resolve(s: &str, regs: &Registries) -> Result<Reference, ImageError> {
        let mut c = Self::candidates(s, regs)?;
        if c.len() == 1 {
            return Ok(c.remove(0));
        }
        Err(ImageError::Ambiguous {
            name: s.to_string(),
            choices: c.iter().map(|r| r.to_string()).collect(),
        })
    }

    /// The name of an image that exists only here (`localhost/NAME:TAG`),
    /// for `image import` and `commit --image` given a short name.
    pub fn local(s: &str) -> Result<Reference, ImageError> {
        let p = split(s)?;
        let d = p.domain.clone().unwrap_or_else(|| LOCALHOST.to_string());
        Ok(Self::from_parts(&d, p))
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form users write: docker.io's `library/` and the
    /// registries `docker.io` and `localhost` left out.
    pub fn short(&self) -> String {
        let full = self.to_string();
        for pre in ["docker.io/library/", "docker.io/", "localhost/"] {
            if let Some(r) = full.strip_prefix(pre) {
                return r.to_string();
            }
        }
        full
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// One `[[registry]]` entry of registries.conf.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConf {
    pub location: String,
    #[serde(default)]
    pub insecure: bool,
}

/// `$XDG_CONFIG_HOME/sbox/registries.conf`: where short names are looked
/// up and which registries may be reached without TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registries {
    /// `unqualified-search-registries`, in order (default: docker.io).
    pub search: Vec<String>,
    pub registries: Vec<RegistryConf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RegistriesFile {
    unqualified_search_registries: Option<Vec<String>>,
    #[serde(default)]
    registry: Vec<RegistryConf>,
}

impl Default for Registries {
    fn default() -> Self {
        Registries {
            search: vec![DOCKER_IO.to_string()],
            registries: Vec::new(),
        }
    }
}

impl Registries {
    /// The configuration file's path.
    pub fn path() -> Option<PathBuf> {
        directories::BaseDirs::new().map(|b| b.config_dir().join("sbox/registries.conf"))
    }

    /// The user's configuration; the default when there is no file.
    pub fn load() -> Result<Registries, ImageError> {
        match Self::path() {
            Some(p) => Self::load_from(&p),
            None => Ok(Registries::default()),
        }
    }

    /// The configuration in `path`; the default when it does not exist.
    pub fn load_from(path: &Path) -> Result<Registries, ImageError> {
        match std::fs::read_to_string(path) {
            Ok(s) => Self::from_toml(&s).map_err(|m| ImageError::layout(path, m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registries::default()),
            Err(e) => Err(ImageError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Parse the TOML text of a registries.conf.
    pub fn from_toml(s: &str) -> Result<Registries, String> {
        let f: RegistriesFile = toml::from_str(s).map_err(|e| e.message().to_string())?;
        let search = f
            .unqualified_search_registries
            .unwrap_or_else(|| vec![DOCKER_IO.to_string()]);
        for r in search.iter().chain(f.registry.iter().map(|r| &r.location)) {
            let host = r.split('/').next().unwrap_or("");
            if !valid_domain(host) {
                return Err(format!("bad registry {r:?}"));
            }
        }
        Ok(Registries {
            search,
            registries: f.registry,
        })
    }

    /// Whether `registry` (host[:port]) is configured `insecure = true`.
    pub fn is_insecure(&self, registry: &str) -> bool {
        self.registries
            .iter()
            .any(|r| r.insecure && r.location == registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(search: &[&str]) -> Registries {
        Registries {
            search: search.iter().map(|s| s.to_string()).collect(),
            registries: vec![],
        }
    }

    #[test]
    fn parses_fully_qualified_names() {
        let r = Reference::parse("quay.io/org/app:1.2").unwrap();
        assert_eq!(r.registry, "quay.io");
        assert_eq!(r.repository, "org/app");
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        assert_eq!(r.to_string(), "quay.io/org/app:1.2");
        let r = Reference::parse("localhost:5000/x").unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.to_string(), "localhost:5000/x:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("docker.io/debian@{d}")).unwrap();
        assert_eq!(r.repository, "library/debian");
        assert_eq!(r.tag, None);
        assert_eq!(r.to_string(), format!("docker.io/library/debian@{d}"));
        let r = Reference::parse(&format!("localhost/a:t@{d}")).unwrap();
        assert_eq!(r.to_string(), format!("localhost/a:t@{d}"));
        assert!(Reference::parse("debian:12").is_err());
    }

    #[test]
    fn refuses_bad_names() {
        for bad in [
            "",
            "docker.io/",
            "docker.io/Debian",
            "docker.io/a//b",
            "docker.io/a:",
            "docker.io/a:-x",
            "docker.io/a@sha256:abc",
            "docker.io/a/../b",
            "docker.io/a b",
            "bad_host.io/a",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolves_short_names_like_podman() {
        let r = Reference::resolve("debian:12", &Registries::default()).unwrap();
        assert_eq!(r.to_string(), "docker.io/library/debian:12");
        let r = Reference::resolve("org/app", &Registries::default()).unwrap();
        assert_eq!(r.to_string(), "docker.io/org/app:latest");
        let r = Reference::resolve("alpine", &regs(&["quay.io"])).unwrap();
        assert_eq!(r.to_string(), "quay.io/alpine:latest");
        let e = Reference::resolve("alpine", &regs(&["quay.io", "docker.io"])).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("ambiguous") && m.contains("quay.io/alpine:latest"),
            "{m}"
        );
        assert!(m.contains("docker.io/library/alpine:latest"), "{m}");
        let r = Reference::resolve("ghcr.io/x/y:z", &regs(&["a.io", "b.io"])).unwrap();
        assert_eq!(r.to_string(), "ghcr.io/x/y:z");
        assert_eq!(
            Reference::local("mine").unwrap().to_string(),
            "localhost/mine:latest"
        );
        assert_eq!(Reference::local("mine").unwrap().short(), "mine:latest");
        assert_eq!(
            Reference::resolve("debian", &Registries::default())
                .unwrap()
                .short(),
            "debian:latest"
        );
    }

    #[test]
    fn reads_registries_conf() {
        let r = Registries::from_toml(
            "unqualified-search-registries = [\"quay.io\", \"docker.io\"]\n\
             [[registry]]\nlocation = \"localhost:5000\"\ninsecure = true\n",
        )
        .unwrap();
        assert_eq!(r.search, vec!["quay.io", "docker.io"]);
        assert!(r.is_insecure("localhost:5000"));
        assert!(!r.is_insecure("quay.io"));
        assert_eq!(Registries::from_toml("").unwrap(), Registries::default());
        assert!(Registries::from_toml("bogus = 1").is_err());
        assert!(Registries::from_toml("unqualified-search-registries = [\"a b\"]").is_err());
        let dir = std::env::temp_dir().join(format!("sbox-reg-{}", std::process::id()));
        assert_eq!(
            Registries::load_from(&dir.join("none")).unwrap(),
            Registries::default()
        );
    }
}
