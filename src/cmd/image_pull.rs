//! `sbox image pull REF`: fetch an image from its registry into the store.

use crate::error::{Error, Result};
use crate::image::registry::{self, Credentials, Platform};
use crate::image::{Reference, Registries, Store};
use clap::Args;

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image to pull: REGISTRY/REPOSITORY[:TAG][@DIGEST], or a short name (`debian:12`) resolved through registries.conf
    #[arg(value_name = "REF")]
    pub reference: String,
    /// false: allow plain http (and fall back to it) for a registry that is not on localhost
    #[arg(long = "tls-verify", value_name = "BOOL", default_value_t = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub tls_verify: bool,
    /// USER:PASS for the registry (otherwise auth.json is asked; never shown)
    #[arg(long, value_name = "USER:PASS", hide_env_values = true)]
    pub creds: Option<String>,
    /// OS/ARCH[/VARIANT] to take from a manifest list (default: the host's)
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
    /// No progress display
    #[arg(long, short)]
    pub quiet: bool,
}

/// Pulls and prints the image id.
pub fn run(a: PullArgs, store: &Store) -> Result<u8> {
    let creds = a
        .creds
        .as_deref()
        .map(Credentials::parse)
        .transpose()
        .map_err(Error::Usage)?;
    let platform = a
        .platform
        .as_deref()
        .map(Platform::parse)
        .transpose()
        .map_err(Error::Usage)?;
    let regs = Registries::load()?;
    let reference = Reference::resolve(&a.reference, &regs)?;
    let mut opts = registry::options_for(&reference, &regs);
    opts.tls_verify = a.tls_verify;
    opts.creds = creds;
    opts.platform = platform;
    if a.quiet {
        opts.progress = Some(false);
    }
    let id = registry::pull(&reference, &opts, store)?;
    println!("{}", id.hex());
    Ok(0)
}
