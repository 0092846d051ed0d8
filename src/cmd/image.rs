//! `sbox image import|ls|rm|inspect`: the local image store.

use clap::Subcommand;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::image::{Reference, Registries, Store};
use crate::locations::Locations;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import an image: a `docker save` archive, an OCI archive or layout, or a rootfs tarball
    #[command(
        after_help = "NAME defaults to the names the archive carries (a rootfs tarball has none).\n\nExamples:\n  docker save debian:12 > debian.tar && sbox image import debian.tar\n  sbox image import rootfs.tar.gz mybox:1"
    )]
    Import {
        /// The archive (a tar, possibly compressed) or directory
        source: PathBuf,
        /// The name to give it (a short name goes under localhost/)
        #[arg(value_name = "NAME")]
        tag: Option<String>,
    },
    /// List the images in the store
    #[command(alias = "list")]
    Ls {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
        /// Print only the ids
        #[arg(long, short = 'q', conflicts_with = "json")]
        quiet: bool,
    },
    /// Remove images (a name removes that name; the image goes with its last name)
    #[command(alias = "rmi")]
    Rm {
        /// Remove even when named sandboxes were made from it, and all its names when given by id
        #[arg(long, short = 'f')]
        force: bool,
        /// Names or ids
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Fetch an image from its registry into the store (prints its id)
    #[command(
        after_help = "Examples:\n  sbox image pull debian:12\n  sbox image pull --creds me:token registry.example.com/team/tool:1\n  sbox image pull --tls-verify=false 10.0.0.5:5000/build/base"
    )]
    Pull(crate::cmd::image_pull::PullArgs),
    /// Print what the store knows of images, as JSON
    Inspect {
        /// Names or ids
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
}

/// Dispatch of `sbox image`.
pub fn run(c: ImageCommand) -> Result<u8> {
    let loc = Locations::from_host()?;
    let store = Store::open(&loc)?;
    match c {
        ImageCommand::Import { source, tag } => import(&store, &source, tag.as_deref()),
        ImageCommand::Ls { json, quiet } => ls(&store, json, quiet),
        ImageCommand::Rm { force, images } => rm(&loc, &store, &images, force),
        ImageCommand::Inspect { images } => inspect(&store, &images),
        ImageCommand::Pull(a) => crate::cmd::image_pull::run(a, &store),
    }
}

fn import(store: &Store, source: &std::path::Path, name: Option<&str>) -> Result<u8> {
    let (id, names) = crate::image::import::import(store, source, name)?;
    for n in &names {
        eprintln!("sbox: imported {n}");
    }
    println!("{}", id.hex());
    Ok(0)
}

/// The image a user's word names, or an error naming it.
fn find(store: &Store, want: &str) -> Result<crate::image::ImageId> {
    match store.find(want, &Registries::load()?)? {
        Ok(id) => Ok(id),
        Err(r) => Err(crate::image::ImageError::NotFound(r.to_string()).into()),
    }
}

fn ago(t: u64) -> String {
    let s = crate::image::now().saturating_sub(t);
    match s {
        0..=59 => "Less than a minute ago".into(),
        60..=3599 => format!("{} minutes ago", s / 60),
        3600..=86399 => format!("{} hours ago", s / 3600),
        86400..=1209599 => format!("{} days ago", s / 86400),
        1209600..=5183999 => format!("{} weeks ago", s / 604800),
        5184000..=63071999 => format!("{} months ago", s / 2592000),
        _ => format!("{} years ago", s / 31536000),
    }
}

fn ls(store: &Store, json: bool, quiet: bool) -> Result<u8> {
    let names = store.names()?;
    let mut rows: Vec<(String, String, u64, u64, String)> = Vec::new();
    let mut recs = store.list()?;
    recs.sort_by_key(|r| std::cmp::Reverse(r.stored));
    for rec in &recs {
        let created = rec
            .created
            .as_deref()
            .and_then(crate::image::parse_rfc3339)
            .unwrap_or(rec.stored);
        let mine: Vec<&String> = names
            .iter()
            .filter(|(_, v)| *v == &rec.id)
            .map(|(k, _)| k)
            .collect();
        if mine.is_empty() {
            rows.push((
                "<none>".into(),
                rec.id.0.clone(),
                created,
                rec.size(),
                String::new(),
            ));
        }
        for n in mine {
            rows.push((
                n.clone(),
                rec.id.0.clone(),
                created,
                rec.size(),
                String::new(),
            ));
        }
    }
    if quiet {
        let mut seen = std::collections::BTreeSet::new();
        for r in &rows {
            let id = crate::image::ImageId(r.1.clone()).short().to_string();
            if seen.insert(id.clone()) {
                println!("{id}");
            }
        }
        return Ok(0);
    }
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(n, id, c, s, _)| {
                serde_json::json!({
                    "Name": n, "Id": id, "Created": crate::image::rfc3339(*c), "Size": s,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| Error::Host(e.to_string()))?
        );
        return Ok(0);
    }
    let table: Vec<[String; 4]> = rows
        .iter()
        .map(|(n, id, c, s, _)| {
            [
                n.clone(),
                crate::image::ImageId(id.clone()).short().to_string(),
                ago(*c),
                crate::cmd::lifecycle::human(*s),
            ]
        })
        .collect();
    let header = ["NAME", "ID", "CREATED", "SIZE"];
    let mut w = [0usize; 4];
    for row in table
        .iter()
        .map(|r| r.each_ref().map(|s| s.as_str()))
        .chain([header])
    {
        for (i, c) in row.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |r: [&str; 4]| {
        format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2]
        )
    };
    println!("{}", line(header));
    for r in &table {
        println!("{}", line(r.each_ref().map(|s| s.as_str())));
    }
    Ok(0)
}

/// Named sandboxes made from image `id`.
fn users_of(loc: &Locations, id: &crate::image::ImageId) -> Vec<String> {
    loc.names()
        .into_iter()
        .filter(|n| {
            loc.sandbox(n)
                .ok()
                .and_then(|p| crate::names::read_config(&p).ok().flatten())
                .is_some_and(|c| c.image.as_deref() == Some(id.0.as_str()))
        })
        .collect()
}

fn rm(loc: &Locations, store: &Store, images: &[String], force: bool) -> Result<u8> {
    let regs = Registries::load()?;
    for want in images {
        let id = find(store, want)?;
        let by_name = match store.find(want, &regs)? {
            Ok(_) if !store.names_of(&id)?.is_empty() => {
                // Which name was meant: the first candidate that is stored.
                let mut cands = vec![Reference::local(want).ok()];
                cands.extend(
                    Reference::candidates(want, &regs)
                        .unwrap_or_default()
                        .into_iter()
                        .map(Some),
                );
                cands
                    .into_iter()
                    .flatten()
                    .find(|r| store.lookup(r).ok().flatten().as_ref() == Some(&id))
            }
            _ => None,
        };
        let names = store.names_of(&id)?;
        let last = match &by_name {
            Some(_) => names.len() <= 1,
            None => true,
        };
        if by_name.is_none() && names.len() > 1 && !force {
            return Err(Error::Usage(format!(
                "image {} has several names ({}): remove them one by one, or use -f",
                id.short(),
                names.join(", ")
            )));
        }
        // As docker: an image a running container uses cannot be removed,
        // not even with -f.
        if last && store.tree_in_use(&id) {
            return Err(Error::Usage(format!(
                "image {want} is used by a running sandbox: stop it first (this cannot be forced)"
            )));
        }
        if last && !force {
            let users = users_of(loc, &id);
            if !users.is_empty() {
                return Err(Error::Usage(format!(
                    "image {want} is used by the sandbox{} {}: remove {} first (`sbox rm`), or use -f",
                    if users.len() > 1 { "es" } else { "" },
                    users.join(", "),
                    if users.len() > 1 { "them" } else { "it" }
                )));
            }
        }
        if let Some(r) = &by_name {
            println!("Untagged: {r}");
        } else {
            for n in &names {
                println!("Untagged: {n}");
            }
        }
        if let Some(gone) = store.remove(&id, by_name.as_ref())? {
            println!("Deleted: {}", gone.hex());
        }
    }
    Ok(0)
}

/// `sbox commit --image NAME SANDBOX`
pub fn commit(sandbox: &str, name: &str) -> Result<u8> {
    let loc = Locations::from_host()?;
    let paths = loc.sandbox(sandbox)?;
    let Some(cfg) = crate::names::read_config(&paths)? else {
        return Err(Error::Usage(format!("no stored sandbox named {sandbox:?}")));
    };
    let Some(base) = cfg.image.clone() else {
        return Err(Error::Usage(format!(
            "sandbox {sandbox} runs on the host's root: only a sandbox made with --image can become an image (`sbox commit {sandbox} PATH...` copies changes onto the host)"
        )));
    };
    if crate::names::running(&paths).is_some() {
        return Err(Error::Usage(format!(
            "sandbox {sandbox} is running: stop it first (`sbox stop {sandbox}`)"
        )));
    }
    let store = Store::open(&loc)?;
    let base = crate::image::ImageId(base);
    let reference = Reference::local(name)?;
    let caller = crate::policy::Caller::from_host()?;
    let ids = crate::rootfs::upper::Ids::of_sandbox(
        caller.uid,
        caller.gid,
        &caller.name,
        cfg.opts.map_user,
    );
    let id = crate::image::commit::commit(
        &store,
        &base,
        &paths.upper(),
        &ids,
        &crate::image::run::places_of(&cfg),
        &reference,
        &format!("sbox commit --image {name} {sandbox}"),
    )?;
    eprintln!("sbox: committed {reference}");
    println!("{}", id.hex());
    Ok(0)
}

fn inspect(store: &Store, images: &[String]) -> Result<u8> {
    let mut out = Vec::new();
    for want in images {
        let id = find(store, want)?;
        let rec = store.record(&id)?;
        let cfg = store.config_json(&id)?;
        let c = &cfg["config"];
        let pick = |k: &str| c.get(k).cloned().unwrap_or(serde_json::Value::Null);
        out.push(serde_json::json!({
            "Id": id.hex(),
            "Digest": rec.manifest,
            "RepoTags": store.names_of(&id)?,
            "Created": cfg.get("created").cloned().unwrap_or(serde_json::Value::Null),
            "Architecture": rec.architecture,
            "Os": rec.os,
            "Size": rec.size(),
            "Config": {
                "User": pick("User"),
                "Env": pick("Env"),
                "Entrypoint": pick("Entrypoint"),
                "Cmd": pick("Cmd"),
                "WorkingDir": pick("WorkingDir"),
                "Labels": pick("Labels"),
            },
            "RootFS": {
                "Type": "layers",
                "Layers": rec.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
            },
            "Layers": rec.layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>(),
        }));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&out).map_err(|e| Error::Host(e.to_string()))?
    );
    Ok(0)
}
