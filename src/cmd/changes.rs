//! `sbox diff`, `sbox reset` and `sbox commit`: the changes a named (or
//! per-project) sandbox keeps in its upper layer.

use crate::changes::{self, Kind};
use crate::error::{Error, Result};
use crate::locations::{self, Locations, Paths};
use crate::names;
use std::path::{Path, PathBuf};

/// The stored sandbox `name`, else the current project's; `cmd` is the
/// command, for the message that says how to name one.
fn resolve(name: Option<String>, cmd: &str) -> Result<Paths> {
    let caller = crate::policy::Caller::from_host()?;
    let (name, cwd) = match name {
        Some(n) => (n, None),
        None => {
            let cwd = crate::cmd::run::current_dir()?;
            (locations::project_sandbox_name(&cwd), Some(cwd))
        }
    };
    locations::validate_name(&name)?;
    let paths = Locations::of(&caller)?.sandbox(&name)?;
    if !paths.data.exists() {
        let Some(cwd) = cwd else {
            return Err(Error::Usage(format!(
                "no stored sandbox named {name:?} (see `sbox ps -a`)"
            )));
        };
        let home = std::fs::canonicalize(&caller.home).unwrap_or_else(|_| caller.home.clone());
        let what = if cwd == Path::new("/") || cwd == home {
            format!(
                "{} is {}, not a project you ran `sbox shell` in: there is no project sandbox for it",
                cwd.display(),
                if cwd == home {
                    "your home directory"
                } else {
                    "the root directory"
                }
            )
        } else {
            format!(
                "there is no project sandbox for {} (`sbox shell` there keeps one)",
                cwd.display()
            )
        };
        return Err(Error::Usage(format!(
            "{what}; name one: `sbox {cmd} NAME` (`sbox ps -a` lists them)"
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

/// `sbox diff [NAME] [PATH...] [--stat] [--json] [--no-pager]`: the
/// changes (at or below the PATHs, when given), or with `--stat` their
/// count and bytes per directory. A NAME has no slash, a PATH is absolute:
/// `sbox diff /usr` is the current project's sandbox, below /usr.
pub fn diff(a: crate::cli::DiffArgs) -> Result<u8> {
    let mut name = a.name;
    let mut targets = a.paths;
    if name.as_deref().is_some_and(|n| n.contains('/')) {
        targets.insert(0, name.take().unwrap_or_default());
    }
    let wanted = targets
        .iter()
        .map(|t| {
            if !t.starts_with('/') {
                return Err(Error::Usage(format!(
                    "diff: {t:?}: a PATH is absolute, as inside the sandbox (a NAME, first, has no slash)"
                )));
            }
            crate::policy::clean_absolute(t, "diff")
        })
        .collect::<Result<Vec<PathBuf>>>()?;
    let paths = resolve(name, "diff")?;
    let lower = crate::image::run::lower_of(&paths)?;
    let mut list = changes::list(&paths.upper(), &lower, &shown_ids(&paths)?);
    if lower != Path::new("/") {
        let places = names::read_config(&paths)?
            .map(|c| crate::image::run::places_of(&c))
            .unwrap_or_default();
        let scaffold = crate::image::run::scaffold_of(&paths.upper(), &lower, &places);
        list.retain(|c| {
            !crate::image::run::is_mount_stub(&paths.upper(), c) && !scaffold.contains(&c.path)
        });
    }
    if !wanted.is_empty() {
        list.retain(|c| wanted.iter().any(|w| c.path.starts_with(w)));
    }
    let text = if a.stat {
        let sizes = changes::sizes(&paths.upper(), &list);
        let rows = stat_rows(&list, &sizes, &wanted);
        if a.json {
            let v: Vec<StatRow> = rows
                .iter()
                .map(|(path, changes, bytes)| StatRow {
                    path,
                    changes: *changes,
                    bytes: *bytes,
                })
                .collect();
            let t = serde_json::to_string_pretty(&v).map_err(|e| Error::Host(e.to_string()))?;
            format!("{}\n", changes::json_for_terminal(&t))
        } else {
            stat_text(&rows)
        }
    } else if a.json {
        let t = serde_json::to_string_pretty(&list).map_err(|e| Error::Host(e.to_string()))?;
        format!("{}\n", changes::json_for_terminal(&t))
    } else {
        let mut t = String::new();
        for c in list {
            t.push_str(letter(c.kind));
            t.push(' ');
            t.push_str(&changes::show(&c.path));
            t.push('\n');
        }
        t
    };
    page(&text, a.no_pager);
    Ok(0)
}

/// A line of `--stat --json`; the path as in `diff --json`.
#[derive(serde::Serialize)]
struct StatRow<'a> {
    #[serde(serialize_with = "changes::path_json")]
    path: &'a Path,
    changes: u64,
    bytes: u64,
}

/// Changes and bytes per directory, largest first: the directories one
/// level below the most precise PATH that holds each change (below / when
/// no PATH is given).
fn stat_rows(
    list: &[changes::Change],
    sizes: &[u64],
    wanted: &[PathBuf],
) -> Vec<(PathBuf, u64, u64)> {
    let mut groups: std::collections::BTreeMap<PathBuf, (u64, u64)> = Default::default();
    for (c, size) in list.iter().zip(sizes) {
        let depth = wanted
            .iter()
            .filter(|w| c.path.starts_with(w))
            .map(|w| w.components().count())
            .max()
            .unwrap_or(1);
        let key: PathBuf = c.path.components().take(depth + 1).collect();
        let e = groups.entry(key).or_default();
        e.0 += 1;
        e.1 += size;
    }
    let mut rows: Vec<(PathBuf, u64, u64)> =
        groups.into_iter().map(|(p, (n, b))| (p, n, b)).collect();
    rows.sort_by(|a, b| b.2.cmp(&a.2).then(b.1.cmp(&a.1)).then(a.0.cmp(&b.0)));
    rows
}

/// `--stat` as a table with a total line.
fn stat_text(rows: &[(PathBuf, u64, u64)]) -> String {
    let total = (
        rows.iter().map(|r| r.1).sum::<u64>(),
        rows.iter().map(|r| r.2).sum::<u64>(),
    );
    let mut cells: Vec<(String, String, String)> =
        vec![("CHANGES".into(), "SIZE".into(), "PATH".into())];
    for (p, n, b) in rows {
        cells.push((
            n.to_string(),
            crate::cmd::lifecycle::human(*b),
            changes::show(p),
        ));
    }
    cells.push((
        total.0.to_string(),
        crate::cmd::lifecycle::human(total.1),
        "total".into(),
    ));
    let w0 = cells.iter().map(|c| c.0.len()).max().unwrap_or(0);
    let w1 = cells.iter().map(|c| c.1.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (n, b, p) in cells {
        out.push_str(&format!("{n:>w0$}  {b:>w1$}  {p}\n"));
    }
    out
}

/// Print `text`, through `$PAGER` (default `less -FRX`) when standard
/// output is a terminal, like `git diff`; straight when it is not, with
/// `--no-pager`, or when PAGER is empty or `cat`.
fn page(text: &str, no_pager: bool) {
    use std::io::{IsTerminal, Write};
    let pager = std::env::var("PAGER").unwrap_or_else(|_| "less -FRX".into());
    let pager = pager.trim();
    if no_pager || !std::io::stdout().is_terminal() || pager.is_empty() || pager == "cat" {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        return;
    }
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c").arg(pager).stdin(std::process::Stdio::piped());
    if std::env::var_os("LESS").is_none() {
        cmd.env("LESS", "FRX");
    }
    match cmd.spawn() {
        Ok(mut child) => {
            // A pager quit early closes its input: not an error.
            crate::sys::ignore_sigpipe();
            if let Some(mut input) = child.stdin.take() {
                let _ = input.write_all(text.as_bytes());
            }
            let _ = child.wait();
        }
        Err(e) => {
            eprintln!("sbox: cannot start the pager {pager:?}: {e}");
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        }
    }
}

/// Above this many bytes of changes, `reset` asks first.
const RESET_ASK_BYTES: u64 = 100 << 20;

/// `sbox reset [NAME] [-f]`: throw the stored changes away; more than
/// 100 MB of them only when confirmed on a terminal, or with -f.
pub fn reset(name: Option<String>, force: bool) -> Result<u8> {
    use std::io::IsTerminal;
    let paths = resolve(name, "reset")?;
    if names::running(&paths).is_some() {
        return Err(Error::Usage(format!(
            "sandbox {:?} is running: stop it first",
            paths.name
        )));
    }
    let bytes = if force {
        0
    } else {
        changes::upper_bytes(&paths.upper())
    };
    if bytes > RESET_ASK_BYTES {
        let size = crate::cmd::lifecycle::human(bytes);
        if !std::io::stdin().is_terminal() {
            return Err(Error::Usage(format!(
                "sandbox {:?} holds {size} of changes and standard input is not a terminal to confirm: pass -f to throw them away",
                paths.name
            )));
        }
        eprint!(
            "sandbox {:?} holds {size} of changes: throw them away? [y/N] ",
            paths.name
        );
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| Error::io("reading the answer", e))?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            return Err(Error::Usage("not reset: not confirmed".into()));
        }
    }
    let caller = crate::policy::Caller::from_host()?;
    let ids = crate::idmap::IdPlan::for_caller(caller.uid, caller.gid, &caller.name, false);
    for d in [paths.upper(), paths.work()] {
        crate::state::remove_tree_mapped(&d, &ids)?;
    }
    println!("{}", paths.name);
    Ok(0)
}

/// How the stored sandbox's overlay showed host ids (with --map-user, the
/// caller as itself).
fn shown_ids(paths: &Paths) -> Result<crate::rootfs::upper::Ids> {
    let caller = crate::policy::Caller::from_host()?;
    let map_user = names::read_config(paths)?.is_some_and(|c| c.opts.map_user);
    Ok(crate::rootfs::upper::Ids::of_sandbox(
        caller.uid,
        caller.gid,
        &caller.name,
        map_user,
    ))
}

/// The hidden paths of the stored sandbox's policy.
fn hidden_of(paths: &Paths) -> Result<Vec<PathBuf>> {
    let cfg = names::read_config(paths)?.ok_or_else(|| {
        Error::Usage(format!(
            "sandbox {:?} has no stored configuration",
            paths.name
        ))
    })?;
    crate::cmd::run::check_enterable(&cfg.project)
        .map_err(|e| Error::path(&cfg.project, crate::error::io_reason(&e)))?;
    let opts = super::stored::sandbox_opts(&cfg);
    let command = if cfg.command.is_empty() {
        vec!["true".to_string()]
    } else {
        cfg.command
    };
    let policy = crate::cmd::run::make_policy(&opts, command, false, &cfg.project)?;
    Ok(policy.hidden)
}

/// `sbox commit NAME PATH... [--dry-run]`: copy selected changes onto the
/// host, after printing them. Nothing below a PATH is reached through a
/// symlink, on either side (see `changes::Commit`); a host symlink in the
/// way fails the commit before anything is written.
pub fn commit(name: String, targets: Vec<String>, dry_run: bool) -> Result<u8> {
    let paths = resolve(Some(name), "commit")?;
    if names::running(&paths).is_some() {
        return Err(Error::Usage(format!(
            "sandbox {:?} is running: stop it first, so its changes are settled",
            paths.name
        )));
    }
    if crate::image::run::lower_of(&paths)? != Path::new("/") {
        return Err(Error::Usage(format!(
            "sandbox {} runs on an image, not on your system: `sbox commit --image NAME {}` makes its changes an image",
            paths.name, paths.name
        )));
    }
    let hidden = hidden_of(&paths)?;
    let wanted = targets
        .iter()
        .map(|t| crate::policy::clean_absolute(t, "commit"))
        .collect::<Result<Vec<PathBuf>>>()?;
    let plan = changes::Commit::plan(&paths.upper(), &wanted, &hidden, &shown_ids(&paths)?)?;
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
