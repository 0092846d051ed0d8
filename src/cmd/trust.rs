//! `sbox trust`: pin a project's .sbox.toml, and the check `run`/`shell`
//! make before using one.

use crate::cli::TrustArgs;
use crate::error::{Error, Result};
use crate::profile::load::{Pin, ProjectDir};
use crate::profile::{self, Loaded, SearchPath};
use crate::trust::{self, Record, PROJECT_FILE, REFERENCE_PROFILE};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// The project's `.sbox.toml` as read now, once: `Ok(None)` when there is
/// none.
fn read_project_file(project: &Path) -> Result<Option<(ProjectDir, Vec<u8>)>> {
    let dir = ProjectDir::open(project)?;
    let bytes = dir
        .read(Path::new(PROJECT_FILE))
        .map_err(|msg| Error::path(project.join(PROJECT_FILE), msg))?;
    Ok(bytes.map(|b| (dir, b)))
}

/// The project file with its includes applied, parsed from `bytes` (what
/// was read of it) and the files it includes, each read once; a file
/// without includes starts from the default profile. The pins are those of
/// exactly the bytes parsed.
fn load_project_file(
    dir: &ProjectDir,
    bytes: &[u8],
    search: &SearchPath,
) -> Result<(Loaded, Vec<Pin>)> {
    let (mut loaded, pins) =
        profile::load::load_project(dir, Path::new(PROJECT_FILE), bytes, search)?;
    if loaded.sources.len() == 1 {
        let origin = dir.path.join(PROJECT_FILE).to_string_lossy().into_owned();
        let mut base = profile::load(REFERENCE_PROFILE, search)?;
        let mut prov = base.provenance.clone();
        base.profile.merge(loaded.profile, &origin, &mut prov);
        base.sources.extend(loaded.sources);
        loaded = Loaded {
            name: origin,
            profile: base.profile,
            sources: base.sources,
            provenance: prov,
        };
    }
    Ok((loaded, pins))
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
/// .sbox.toml, an error when it is not trusted (or it, or a file it
/// includes, changed since), or when it asks for access the user did not
/// confirm. The profile returned is parsed from the very bytes checked.
pub fn project_profile(project: &Path, data: &Path, search: &SearchPath) -> Result<Option<Loaded>> {
    let file = project.join(PROJECT_FILE);
    let Some((dir, bytes)) = read_project_file(project)? else {
        return Ok(None);
    };
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
    let (loaded, pins) = load_project_file(&dir, &bytes, search)?;
    if !rec.pins(&pins) {
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
        std::fs::canonicalize(&dir).map_err(|e| Error::path(&dir, crate::error::io_reason(&e)))?;
    let file = dir.join(PROJECT_FILE);
    let caller = crate::policy::Caller::from_host()?;
    let data = crate::locations::data_dir(&caller);
    if a.revoke {
        if trust::remove_record(&data, &file) {
            println!("{}: no longer trusted", file.display());
        } else {
            println!("{}: was not trusted", file.display());
        }
        return Ok(0);
    }
    let search = SearchPath::from_host();
    let Some((project, bytes)) = read_project_file(&dir)? else {
        return Err(Error::path(&file, "no such file"));
    };
    let (loaded, pins) = load_project_file(&project, &bytes, &search)?;
    let widenings = widenings_of(&loaded, &dir, &search)?;
    if a.show {
        show(&file, &pins, &loaded, &widenings, &data)?;
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
            eprintln!("  - {}", printable(w));
        }
        if !a.yes && !confirm()? {
            return Err(Error::Usage(
                "not trusted: the extra access was not confirmed (answer y, or pass --yes)".into(),
            ));
        }
        widenings
    };
    let rec = Record::new(file.clone(), pins, confirmed);
    trust::write_record(&data, &rec)?;
    println!("{}: trusted (sha256 {})", file.display(), &rec.sha256[..16]);
    for p in rec.files.iter().skip(1) {
        println!("  with {} (sha256 {})", printable(&p.path), &p.sha256[..16]);
    }
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

fn show(
    file: &Path,
    pins: &[Pin],
    loaded: &Loaded,
    widenings: &[String],
    data: &Path,
) -> Result<()> {
    let state = match trust::read_record(data, file) {
        Some(r) if r.pins(pins) => "trusted",
        Some(_) => "changed since it was trusted",
        None => "not trusted",
    };
    let sha = trust::closure_digest(pins);
    println!("# {} ({state}, sha256 {})", file.display(), &sha[..16]);
    for p in pins.iter().skip(1) {
        println!(
            "# includes {} (sha256 {})",
            printable(&p.path),
            &p.sha256[..16]
        );
    }
    if widenings.is_empty() {
        println!("# grants nothing beyond the default profile ({REFERENCE_PROFILE})");
    } else {
        println!("# asks for more than the default profile ({REFERENCE_PROFILE}):");
        for w in widenings {
            println!("#   - {}", printable(w));
        }
    }
    let text = toml::to_string_pretty(&loaded.profile)
        .map_err(|e| Error::Host(format!("cannot print the profile: {e}")))?;
    print!("{text}");
    Ok(())
}

/// Text from a project file, with control characters escaped for a
/// terminal.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}
