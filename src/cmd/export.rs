//! `sbox export`: a profile's policy in the formats other tools read — the
//! seccomp filter as a JSON seccomp profile (docker, podman, Kubernetes).

use crate::cli::{ExportArgs, SandboxOpts};
use crate::confine::seccomp::json as seccomp_json;
use crate::error::{Error, IoContext, Result};
use crate::policy::Policy;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `sbox export`
pub fn run(a: ExportArgs) -> Result<u8> {
    if let Some(file) = &a.seccomp {
        let policy = policy_of(&a.profile, vec!["true".into()])?;
        let (profile, notes) = seccomp_profile(&policy)?;
        for n in notes {
            eprintln!("sbox: note: {n}");
        }
        let mut text = serde_json::to_string_pretty(&profile)
            .map_err(|e| Error::Host(format!("cannot print the seccomp profile: {e}")))?;
        text.push('\n');
        write_output(file, text.as_bytes())?;
        return Ok(0);
    }
    Err(Error::Usage(
        "say what to export: --seccomp FILE or --oci DIR".into(),
    ))
}

/// The policy `sbox run --profile P` would apply in the current directory.
fn policy_of(profile: &Option<String>, argv: Vec<String>) -> Result<Policy> {
    let opts = SandboxOpts {
        profile: profile.clone(),
        ..Default::default()
    };
    let cwd = crate::cmd::run::current_dir()?;
    crate::cmd::run::make_policy(&opts, argv, false, &cwd)
}

/// The JSON seccomp profile of the policy and the notes on what it says
/// more strictly than sbox.
fn seccomp_profile(policy: &Policy) -> Result<(serde_json::Value, Vec<String>)> {
    match &policy.confinement.seccomp {
        Some(rules) => {
            let e = seccomp_json::export(&rules.spec).map_err(|e| Error::Confine(e.to_string()))?;
            Ok((e.profile, e.notes))
        }
        None => Ok((
            seccomp_json::allow_all(),
            vec![format!(
                "profile {} turns seccomp off: the exported profile allows every call",
                policy.profile
            )],
        )),
    }
}

/// Writes `data` to `file` (`-`: stdout) whole or not at all: a temporary
/// file next to it, renamed over it once complete.
fn write_output(file: &str, data: &[u8]) -> Result<()> {
    if file == "-" {
        let mut out = std::io::stdout().lock();
        return out
            .write_all(data)
            .and_then(|()| out.flush())
            .ctx(|| "cannot write to stdout".into());
    }
    let path = PathBuf::from(file);
    write_atomically(&path, data)
}

/// A temporary name next to `path` (same directory, so rename is atomic).
fn temp_name(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::path(path, "not a file name"))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".sbox-{}.tmp", std::process::id()));
    Ok(path.with_file_name(tmp))
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    if path.is_dir() {
        return Err(Error::path(path, "is a directory"));
    }
    let tmp = temp_name(path)?;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::path(path, format!("cannot write: {e}")));
    }
    Ok(())
}
