//! `sbox profile list|show|check`.

use crate::cli::ProfileCommand;
use crate::error::{Error, Result};
use crate::profile::{self, Origin, SearchPath};

pub fn run(cmd: ProfileCommand) -> Result<u8> {
    let search = SearchPath::from_host();
    match cmd {
        ProfileCommand::List { names: true } => {
            for (name, _) in profile::list(&search) {
                println!("{name}");
            }
            Ok(0)
        }
        ProfileCommand::List { names: false } => {
            let all = profile::list(&search);
            let width = all.iter().map(|(n, _)| n.len()).max().unwrap_or(0).max(12);
            for (name, origin) in all {
                let desc = profile::load(&name, &search)
                    .ok()
                    .and_then(|l| l.profile.description)
                    .unwrap_or_default();
                println!("{name:<width$} {desc}  ({origin})");
            }
            Ok(0)
        }
        ProfileCommand::Show { name } => {
            let loaded = profile::load(&name, &search)?;
            let sources: Vec<String> = loaded.sources.iter().map(Origin::to_string).collect();
            println!("# profile {name}, built from: {}", sources.join(", "));
            let text = toml::to_string_pretty(&loaded.profile)
                .map_err(|e| Error::Host(format!("cannot print the profile: {e}")))?;
            print!("{text}");
            println!("\n# where each value comes from:");
            for (key, origin) in &loaded.provenance {
                println!("#   {key}: {origin}");
            }
            Ok(0)
        }
        ProfileCommand::Check { file } => {
            let path = if file.contains('/') || file.ends_with(".toml") {
                file.clone()
            } else {
                format!("./{file}")
            };
            profile::load(&path, &search)?;
            // The values too: build the policy a run in this directory
            // would get (backends, modes, syscall and limit names…).
            let opts = crate::cli::SandboxOpts {
                profile: Some(path),
                ..Default::default()
            };
            let cwd = crate::cmd::run::current_dir()?;
            crate::cmd::run::make_policy(&opts, vec!["true".into()], false, &cwd)?;
            println!("{file}: ok");
            Ok(0)
        }
    }
}
