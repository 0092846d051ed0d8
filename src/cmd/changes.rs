//! `sbox diff`, `sbox reset` and `sbox commit`: the changes a named (or
//! per-project) sandbox keeps in its upper layer.

use crate::changes::{self, Kind};
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
        println!("{}", changes::json_for_terminal(&text));
    } else {
        for c in list {
            println!("{} {}", letter(c.kind), changes::show(&c.path));
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
/// host, after printing them. Nothing below a PATH is reached through a
/// symlink, on either side (see `changes::Commit`); a host symlink in the
/// way fails the commit before anything is written.
pub fn commit(name: String, targets: Vec<String>, dry_run: bool) -> Result<u8> {
    let paths = resolve(Some(name))?;
    if names::running(&paths).is_some() {
        return Err(Error::Usage(format!(
            "sandbox {:?} is running: stop it first, so its changes are settled",
            paths.name
        )));
    }
    let hidden = hidden_of(&paths)?;
    // Compare as the host resolves paths too, so a host symlink into a
    // hidden directory does not let a change in.
    let hidden: Vec<PathBuf> = hidden
        .iter()
        .flat_map(|h| [h.clone(), resolve_existing(h)])
        .collect();
    let wanted = targets
        .iter()
        .map(|t| crate::policy::clean_absolute(t, "commit"))
        .collect::<Result<Vec<PathBuf>>>()?;
    let plan = changes::Commit::plan(&paths.upper(), &wanted, &hidden)?;
    for (named, real) in &plan.redirected {
        eprintln!(
            "sbox: {} is {} on the host",
            changes::show(named),
            changes::show(real)
        );
    }
    for s in &plan.steps {
        println!("{}", s.line());
    }
    if dry_run {
        return Ok(0);
    }
    plan.apply()?;
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
