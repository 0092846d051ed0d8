//! The TOML format of a profile file (`man 5 sbox-profile`).
//!
//! Every section and key is optional; unknown keys are errors. Lists from
//! included profiles are extended by the including file; scalars override.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    /// Who the profile is for, in one line.
    pub description: Option<String>,
    /// Profiles to start from, in order; this file's keys come last.
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub filesystem: FilesystemSection,
    #[serde(default)]
    pub environment: EnvironmentSection,
    #[serde(default)]
    pub network: NetworkSection,
    #[serde(default)]
    pub process: ProcessSection,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemSection {
    /// Root backend: "fuse", "kernel" or "none".
    pub overlay: Option<String>,
    /// How the project (current directory) is bound: "rw", "ro" or "none".
    pub project: Option<String>,
    /// Extra read-write binds, "SRC[:DEST]".
    #[serde(default)]
    pub bind: Vec<String>,
    /// Extra read-only binds, "SRC[:DEST]".
    #[serde(default)]
    pub ro_bind: Vec<String>,
    /// Fresh tmpfs mounts.
    #[serde(default)]
    pub tmpfs: Vec<String>,
    /// Paths that do not exist (or are empty) inside: secrets.
    #[serde(default)]
    pub hidden: Vec<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSection {
    /// Variables passed from the caller's environment, besides the defaults.
    #[serde(default)]
    pub pass: Vec<String>,
    /// Variables set inside.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Variables removed (also from the defaults).
    #[serde(default)]
    pub unset: Vec<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// "none" or "host".
    pub mode: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSection {
    /// Host name inside the sandbox.
    pub hostname: Option<String>,
    /// Shell for `sbox shell`.
    pub shell: Option<String>,
}

impl ProfileFile {
    /// Lay `later` over `self`: scalars from `later` win, lists are extended.
    pub fn merge(&mut self, later: ProfileFile) {
        fn scalar(dst: &mut Option<String>, src: Option<String>) {
            if src.is_some() {
                *dst = src;
            }
        }
        fn list(dst: &mut Vec<String>, src: Vec<String>) {
            for s in src {
                if !dst.contains(&s) {
                    dst.push(s);
                }
            }
        }
        scalar(&mut self.description, later.description);
        let (f, l) = (&mut self.filesystem, later.filesystem);
        scalar(&mut f.overlay, l.overlay);
        scalar(&mut f.project, l.project);
        list(&mut f.bind, l.bind);
        list(&mut f.ro_bind, l.ro_bind);
        list(&mut f.tmpfs, l.tmpfs);
        list(&mut f.hidden, l.hidden);
        let (e, l) = (&mut self.environment, later.environment);
        list(&mut e.pass, l.pass);
        e.set.extend(l.set);
        list(&mut e.unset, l.unset);
        scalar(&mut self.network.mode, later.network.mode);
        scalar(&mut self.process.hostname, later.process.hostname);
        scalar(&mut self.process.shell, later.process.shell);
    }
}
