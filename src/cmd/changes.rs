//! `sbox diff`, `sbox reset` and `sbox commit`: the changes a named (or
//! per-project) sandbox keeps in its upper layer.

use crate::changes::{self, Change, Kind};
use crate::error::{Error, Result};
use crate::names::{self, Paths};
use std::path::{Path, PathBuf};

/// The name of the per-project sandbox of `project` (`sbox shell` with a
/// profile that persists per project): `proj-BASENAME-HASH`.
pub fn project_sandbox_name(project: &Path) -> String {
    let base: String = project
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    let hash = crate::trust::digest(project.as_os_str().as_encoded_bytes());
    format!(
        "proj-{}-{}",
        if base.is_empty() { "root" } else { &base },
        &hash[..8]
    )
}

fn resolve(name: Option<String>) -> Result<Paths> {
    let caller = crate::policy::Caller::from_host()?;
    let name = match name {
        Some(n) => n,
        None => {
            let cwd = std::env::current_dir()
                .map_err(|e| Error::Host(format!("cannot tell the current directory: {e}")))?;
            project_sandbox_name(&cwd)
        }
    };
    names::validate_name(&name)?;
    let paths = Paths::new(
        &crate::state::runtime_base(caller.uid)?,
        &crate::cmd::run::data_dir(&caller),
        &name,
    );
    if !paths.data.exists() {
        return Err(Error::Usage(format!(
            "no stored sandbox named {name:?} (see `sbox ps -a`)"
        )));
    }
    Ok(paths)
}

fn letter(k: Kind) -> &'static str {
    match k {
        Kind::A => "A",
        Kind::C => "C",
        Kind::D => "D",
    }
}

/// `sbox diff [NAME] [--json]`
pub fn diff(name: Option<String>, json: bool) -> Result<u8> {
    let paths = resolve(name)?;
    let list = changes::list(&paths.upper(), Path::new("/"));
    if json {
        let text = serde_json::to_string_pretty(&list).map_err(|e| Error::Host(e.to_string()))?;
        println!("{text}");
    } else {
        for c in list {
            println!("{} {}", letter(c.kind), c.path.display());
        }
    }
    Ok(0)
}

/// `sbox reset NAME`: throw the stored changes away.
pub fn reset(name: Option<String>) -> Result<u8> {
    let paths = resolve(name)?;
    if names::running(&paths).is_some() {
        return Err(Error::Usage(format!(
            "sandbox {:?} is running: stop it first",
            paths.name
        )));
    }
    let caller = crate::policy::Caller::from_host()?;
    let ids = crate::idmap::IdPlan::for_caller(caller.uid, caller.gid, &caller.name, false);
    for d in [paths.upper(), paths.work()] {
        crate::state::remove_tree_mapped(&d, &ids)?;
    }
    println!("{}", paths.name);
    Ok(0)
}

/// The hidden paths of the stored sandbox's policy.
fn hidden_of(paths: &Paths) -> Result<Vec<PathBuf>> {
    let cfg: names::Config = names::read_json(&paths.config()).ok_or_else(|| {
        Error::Usage(format!(
            "sandbox {:?} has no stored configuration",
            paths.name
        ))
    })?;
    let here = std::env::current_dir().ok();
    std::env::set_current_dir(&cfg.project)
        .map_err(|e| Error::path(&cfg.project, crate::policy::io_reason(&e)))?;
    let command = if cfg.command.is_empty() {
        vec!["true".to_string()]
    } else {
        cfg.command
    };
    let policy = crate::cmd::run::make_policy(&cfg.opts, command, false);
    if let Some(h) = here {
        let _ = std::env::set_current_dir(h);
    }
    Ok(policy?.hidden)
}

/// `sbox commit NAME PATH... [--dry-run]`: copy selected changes onto the
/// host, after printing them.
pub fn commit(name: String, targets: Vec<String>, dry_run: bool) -> Result<u8> {
    let paths = resolve(Some(name))?;
    if names::running(&paths).is_some() {
        return Err(Error::Usage(format!(
            "sandbox {:?} is running: stop it first, so its changes are settled",
            paths.name
        )));
    }
    let hidden = hidden_of(&paths)?;
    // Compare as the host resolves paths, so a host symlink into a hidden
    // directory does not let a change in.
    let hidden: Vec<PathBuf> = hidden
        .iter()
        .flat_map(|h| [h.clone(), resolve_existing(h)])
        .collect();
    let mut wanted = Vec::new();
    for t in &targets {
        let t = crate::policy::clean_absolute(t, "commit")?;
        let real = resolve_existing(&t);
        if let Some(h) = hidden.iter().find(|h| {
            t.starts_with(h) || h.starts_with(&t) || real.starts_with(h) || h.starts_with(&real)
        }) {
            return Err(Error::Usage(format!(
                "{}: the profile hides {}; sbox will not write there",
                t.display(),
                h.display()
            )));
        }
        wanted.push(t);
    }
    let selected: Vec<Change> = changes::list(&paths.upper(), Path::new("/"))
        .into_iter()
        .filter(|c| wanted.iter().any(|w| c.path.starts_with(w)))
        .collect();
    if selected.is_empty() {
        return Err(Error::Usage("no changes under the given paths".into()));
    }
    if let Some(c) = selected.iter().find(|c| {
        let real = resolve_existing(&c.path);
        hidden.iter().any(|h| real.starts_with(h))
    }) {
        return Err(Error::Usage(format!(
            "{}: the host resolves it into a path the profile hides; sbox will not write there",
            c.path.display()
        )));
    }
    for c in &selected {
        println!("{} {}", letter(c.kind), c.path.display());
    }
    if dry_run {
        return Ok(0);
    }
    for c in &selected {
        apply(&paths.upper(), c)?;
    }
    Ok(0)
}

/// `p` with its longest existing prefix resolved by the host (symlinks
/// followed) and the rest appended.
fn resolve_existing(p: &Path) -> PathBuf {
    let mut head = p.to_path_buf();
    let mut tail = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&head) {
            let mut out = real;
            for part in tail.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (head.file_name().map(|n| n.to_os_string()), head.parent()) {
            (Some(name), Some(parent)) => {
                tail.push(name);
                head = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

fn apply(upper: &Path, c: &Change) -> Result<()> {
    let rel = c.path.strip_prefix("/").unwrap_or(&c.path);
    let src = upper.join(rel);
    let dst = &c.path;
    let fail = |what: &str, e: std::io::Error| {
        Error::path(dst, format!("{what}: {}", crate::policy::io_reason(&e)))
    };
    match c.kind {
        Kind::D => match std::fs::symlink_metadata(dst) {
            Ok(md) if md.is_dir() => std::fs::remove_dir_all(dst).map_err(|e| fail("removing", e)),
            Ok(_) => std::fs::remove_file(dst).map_err(|e| fail("removing", e)),
            Err(_) => Ok(()),
        },
        Kind::A | Kind::C => {
            let md = std::fs::symlink_metadata(&src).map_err(|e| fail("reading the change", e))?;
            if md.is_dir() {
                return std::fs::create_dir_all(dst).map_err(|e| fail("creating", e));
            }
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent).map_err(|e| fail("creating the parent", e))?;
            }
            if md.file_type().is_symlink() {
                let target = std::fs::read_link(&src).map_err(|e| fail("reading the link", e))?;
                let _ = std::fs::remove_file(dst);
                return std::os::unix::fs::symlink(target, dst).map_err(|e| fail("linking", e));
            }
            let tmp = dst.with_file_name(format!(
                ".{}.sbox-commit",
                dst.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            ));
            std::fs::copy(&src, &tmp).map_err(|e| fail("copying", e))?;
            if let Some(mode) = crate::sys::lgetxattr(&src, "user.containers.override_stat")
                .and_then(|v| {
                    String::from_utf8_lossy(&v)
                        .rsplit(':')
                        .next()
                        .and_then(|m| u32::from_str_radix(m, 8).ok())
                })
            {
                use std::os::unix::fs::PermissionsExt;
                let _ =
                    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode & 0o7777));
            }
            std::fs::rename(&tmp, dst).map_err(|e| fail("replacing", e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_are_valid_and_distinct() {
        let a = project_sandbox_name(Path::new("/home/u/src/my project!"));
        let b = project_sandbox_name(Path::new("/home/v/src/my project!"));
        assert!(names::validate_name(&a).is_ok(), "{a}");
        assert!(a.starts_with("proj-my_project_-"), "{a}");
        assert_ne!(a, b);
        assert!(names::validate_name(&project_sandbox_name(Path::new("/"))).is_ok());
    }
}
