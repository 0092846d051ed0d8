//! The command line's sandbox options and the stored record of a named
//! sandbox (`names::StoredConfig`), converted here at the edge: the record
//! does not depend on the command line's types.

use crate::cli::SandboxOpts;
use crate::names::{StoredConfig, StoredOpts};
use std::path::Path;

/// Both conversions from the one list of options a record keeps: each
/// destructures every field of its source, so an option added to
/// `SandboxOpts` or `StoredOpts` does not compile until it is listed here.
macro_rules! stored_options {
    ($($field:ident),* $(,)?) => {
        impl From<&SandboxOpts> for StoredOpts {
            fn from(o: &SandboxOpts) -> Self {
                let SandboxOpts { $($field),* } = o.clone();
                StoredOpts { $($field),* }
            }
        }

        impl From<StoredOpts> for SandboxOpts {
            fn from(o: StoredOpts) -> Self {
                let StoredOpts { $($field),* } = o;
                SandboxOpts { $($field),* }
            }
        }
    };
}

stored_options!(
    profile,
    bind,
    ro_bind,
    tmpfs,
    chdir,
    env,
    keep_env,
    hostname,
    net,
    publish,
    allow_host_loopback,
    allow_net,
    add_host,
    memory,
    pids,
    cpus,
    nofile,
    timeout,
    overlay,
    map_user,
    verbose,
    log_denials,
    image,
    user,
    entrypoint,
);

/// The options to start a stored sandbox again with. A profile given as a
/// relative path was relative to the project, where it was started.
pub fn sandbox_opts(cfg: &StoredConfig) -> SandboxOpts {
    let mut opts = SandboxOpts::from(cfg.opts.clone());
    // The image it was made from, by id: its name may have moved since.
    if let Some(id) = &cfg.image {
        opts.image = Some(id.clone());
    }
    if let Some(p) = &opts.profile {
        if crate::profile::load::is_path(p) && Path::new(p).is_relative() {
            opts.profile = Some(cfg.project.join(p).to_string_lossy().into_owned());
        }
    }
    opts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_with_the_current_version() {
        let opts = SandboxOpts {
            profile: Some("strict".into()),
            publish: vec!["8080:80".into()],
            allow_host_loopback: true,
            cpus: Some(1.5),
            timeout: Some("10m".into()),
            overlay: Some("kernel".into()),
            map_user: true,
            log_denials: true,
            ..Default::default()
        };
        let c = StoredConfig::new(
            "n",
            (&opts).into(),
            vec!["true".into()],
            Path::new("/p"),
            true,
            None,
        );
        let text = serde_json::to_string(&c).expect("json");
        let back = StoredConfig::parse(Path::new("/d/config.json"), &text).expect("loads");
        assert_eq!(back.version, crate::names::CONFIG_VERSION);
        assert_eq!(back, c);
        assert_eq!(
            format!("{:?}", sandbox_opts(&back)),
            format!("{opts:?}"),
            "options changed on the way through the record"
        );
    }

    #[test]
    fn a_relative_profile_path_is_the_projects() {
        let mut c = StoredConfig::new(
            "n",
            (&SandboxOpts::default()).into(),
            vec![],
            Path::new("/home/u/p"),
            false,
            None,
        );
        for (given, used) in [
            ("./my.toml", "/home/u/p/./my.toml"),
            ("sub/my.toml", "/home/u/p/sub/my.toml"),
            ("/etc/x.toml", "/etc/x.toml"),
            ("dev", "dev"),
        ] {
            c.opts.profile = Some(given.into());
            assert_eq!(sandbox_opts(&c).profile.as_deref(), Some(used));
        }
    }
}
