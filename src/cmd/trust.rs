//! `sbox trust`: pin a project's .sbox.toml, and the check `run`/`shell`
//! make before using one.

use crate::cli::TrustArgs;
use crate::error::{Error, Result};
use crate::profile::{self, Loaded, SearchPath};
use crate::trust::{self, Record, PROJECT_FILE, REFERENCE_PROFILE};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// The project file with its includes applied; a file without includes
/// starts from the default profile.
fn load_project_file(file: &Path, search: &SearchPath) -> Result<(Loaded, Vec<u8>)> {
    let bytes = std::fs::read(file).map_err(|e| {
        Error::path(
            file,
            format!("cannot read: {}", crate::policy::io_reason(&e)),
        )
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let origin = profile::Origin::File(file.to_path_buf());
    let parsed = profile::load::parse(&text, &origin)?;
    let mut loaded = profile::load(&file.to_string_lossy(), search)?;
    if parsed.include.is_empty() {
        let mut base = profile::load(REFERENCE_PROFILE, search)?;
        let mut prov = base.provenance.clone();
        base.profile
            .merge(loaded.profile, &origin.to_string(), &mut prov);
        base.sources.extend(loaded.sources);
        loaded = Loaded {
            name: file.to_string_lossy().into_owned(),
            profile: base.profile,
            sources: base.sources,
            provenance: prov,
        };
    }
    Ok((loaded, bytes))
}

fn widenings_of(loaded: &Loaded, project: &Path, search: &SearchPath) -> Result<Vec<String>> {
    let reference = profile::load(REFERENCE_PROFILE, search)?;
    Ok(trust::widenings(
        &reference.profile,
        &loaded.profile,
        project,
    ))
}

/// The project's own profile when it has one: `Ok(None)` when there is no
/// .sbox.toml, an error when it is not trusted (or changed since), or when
/// it asks for access the user did not confirm.
pub fn project_profile(project: &Path, data: &Path, search: &SearchPath) -> Result<Option<Loaded>> {
    let file = project.join(PROJECT_FILE);
    if !file.exists() {
        return Ok(None);
    }
    let untrusted = |why: &str| {
        Error::path(
            &file,
            format!(
                "{why}: review it with `sbox trust --show`, trust it with `sbox trust`, or choose a profile with --profile"
            ),
        )
    };
    let Some(rec) = trust::read_record(data, &file) else {
        return Err(untrusted("not trusted"));
    };
    let (loaded, bytes) = load_project_file(&file, search)?;
    if rec.sha256 != trust::digest(&bytes) {
        return Err(untrusted("changed since it was trusted"));
    }
    let unconfirmed: Vec<String> = widenings_of(&loaded, project, search)?
        .into_iter()
        .filter(|w| !rec.confirmed.contains(w))
        .collect();
    if !unconfirmed.is_empty() {
        return Err(Error::path(
            &file,
            format!(
                "asks for more than the default profile allows ({}); confirm with `sbox trust`",
                unconfirmed.join("; ")
            ),
        ));
    }
    Ok(Some(loaded))
}

/// `sbox trust [--show] [--yes] [--revoke] [DIR]`
pub fn run(a: TrustArgs) -> Result<u8> {
    let dir: PathBuf = match a.dir {
        Some(d) => d,
        None => std::env::current_dir()
            .map_err(|e| Error::Host(format!("cannot tell the current directory: {e}")))?,
    };
    let dir =
        std::fs::canonicalize(&dir).map_err(|e| Error::path(&dir, crate::policy::io_reason(&e)))?;
    let file = dir.join(PROJECT_FILE);
    let caller = crate::policy::Caller::from_host()?;
    let data = crate::cmd::run::data_dir(&caller);
    if a.revoke {
        if trust::remove_record(&data, &file) {
            println!("{}: no longer trusted", file.display());
        } else {
            println!("{}: was not trusted", file.display());
        }
        return Ok(0);
    }
    let search = SearchPath::from_host();
    let (loaded, bytes) = load_project_file(&file, &search)?;
    let widenings = widenings_of(&loaded, &dir, &search)?;
    let sha = trust::digest(&bytes);
    if a.show {
        show(&file, &sha, &loaded, &widenings, &data)?;
        return Ok(0);
    }
    let confirmed = if widenings.is_empty() {
        Vec::new()
    } else {
        eprintln!(
            "{} asks for more than the default profile ({REFERENCE_PROFILE}) allows:",
            file.display()
        );
        for w in &widenings {
            eprintln!("  - {w}");
        }
        if !a.yes && !confirm()? {
            return Err(Error::Usage(
                "not trusted: the extra access was not confirmed (answer y, or pass --yes)".into(),
            ));
        }
        widenings
    };
    trust::write_record(
        &data,
        &Record {
            path: file.clone(),
            sha256: sha.clone(),
            confirmed,
        },
    )?;
    println!("{}: trusted (sha256 {})", file.display(), &sha[..16]);
    Ok(0)
}

fn confirm() -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(
            "confirmation needed and standard input is not a terminal: pass --yes to confirm"
                .into(),
        ));
    }
    eprint!("Allow this? [y/N] ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Error::io("reading the answer", e))?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

fn show(file: &Path, sha: &str, loaded: &Loaded, widenings: &[String], data: &Path) -> Result<()> {
    let state = match trust::read_record(data, file) {
        Some(r) if r.sha256 == sha => "trusted",
        Some(_) => "changed since it was trusted",
        None => "not trusted",
    };
    println!("# {} ({state}, sha256 {})", file.display(), &sha[..16]);
    if widenings.is_empty() {
        println!("# grants nothing beyond the default profile ({REFERENCE_PROFILE})");
    } else {
        println!("# asks for more than the default profile ({REFERENCE_PROFILE}):");
        for w in widenings {
            println!("#   - {w}");
        }
    }
    let text = toml::to_string_pretty(&loaded.profile)
        .map_err(|e| Error::Host(format!("cannot print the profile: {e}")))?;
    print!("{text}");
    Ok(())
}
