//! `sbox image import`: OCI layouts (a directory, or a tar of one),
//! `docker save` archives (a tar, or its unpacked directory) and plain
//! rootfs tarballs (any compression), each turned into an OCI layout in a
//! staging directory when it is not one, then ingested by the store.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::error::{ImageError, IoCtx};
use super::reference::{Reference, Registries};
use super::store::{
    file_digest, host_platform, ImageId, Store, MEDIA_OCI_CONFIG, MEDIA_OCI_LAYER,
    MEDIA_OCI_MANIFEST,
};
use super::tree::{self, Compression};

/// What a source turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OciLayout,
    DockerSave,
    Rootfs,
}

/// Imports `src` into `store`, named `name` (a short name goes under
/// `localhost/`) or else by the names the archive carries.
pub fn import(
    store: &Store,
    src: &Path,
    name: Option<&str>,
) -> Result<(ImageId, Vec<Reference>), ImageError> {
    let given = name.map(Reference::local).transpose()?;
    let meta = std::fs::metadata(src).ctx(|| format!("reading {}", src.display()))?;
    let staging = store.staging()?;
    let (layout, kind) = if meta.is_dir() {
        if src.join("oci-layout").is_file() {
            (src.to_path_buf(), Kind::OciLayout)
        } else if src.join("manifest.json").is_file() {
            (src.to_path_buf(), Kind::DockerSave)
        } else {
            return Err(ImageError::layout(
                src,
                "not an image: neither an OCI layout (oci-layout) nor a docker save archive (manifest.json)",
            ));
        }
    } else {
        match sniff_archive(src)? {
            Kind::Rootfs => {
                let l = staging.path().join("layout");
                rootfs_layout(src, &l)?;
                (l, Kind::Rootfs)
            }
            k => {
                let x = staging.path().join("x");
                unpack_archive(src, &x)?;
                (x, k)
            }
        }
    };
    let (layout, mut names) = match kind {
        Kind::DockerSave => {
            let l = staging.path().join("layout");
            let tags = docker_layout(&layout, &l)?;
            (l, tags)
        }
        Kind::OciLayout => {
            let n = oci_names(&layout);
            (layout, n)
        }
        Kind::Rootfs => (layout, Vec::new()),
    };
    if let Some(g) = given {
        names = vec![g];
    }
    let id = store.import_layout(&layout, &names)?;
    Ok((id, names))
}

/// Top-level names of a tar (after any compression) tell its kind.
fn sniff_archive(src: &Path) -> Result<Kind, ImageError> {
    let f = File::open(src).ctx(|| format!("reading {}", src.display()))?;
    let r = tree::decompressed(f).ctx(|| format!("reading {}", src.display()))?;
    let mut ar = tar::Archive::new(r);
    let bad = |_: io::Error| {
        ImageError::layout(
            src,
            "not an image: neither a tar archive (docker save, OCI archive, rootfs) nor a directory of one",
        )
    };
    let mut any = false;
    let (mut layout, mut docker) = (false, false);
    for e in ar.entries().map_err(bad)? {
        let e = e.map_err(bad)?;
        any = true;
        let p = e.path_bytes();
        let p = p.strip_prefix(b"./").unwrap_or(&p);
        match p {
            b"oci-layout" => layout = true,
            b"manifest.json" => docker = true,
            _ => {}
        }
    }
    if !any {
        return Err(ImageError::layout(src, "an empty archive"));
    }
    // docker save of docker 25 and later holds both: its manifest.json
    // carries the names.
    Ok(if docker {
        Kind::DockerSave
    } else if layout {
        Kind::OciLayout
    } else {
        Kind::Rootfs
    })
}

/// Unpacks an image archive (regular files and directories; a symlink
/// between its own files, as old `docker save` writes, becomes a copy)
/// into the new directory `dst`.
fn unpack_archive(src: &Path, dst: &Path) -> Result<(), ImageError> {
    let f = File::open(src).ctx(|| format!("reading {}", src.display()))?;
    let r = tree::decompressed(f).ctx(|| format!("reading {}", src.display()))?;
    let mut ar = tar::Archive::new(r);
    let bad = |m: String| ImageError::layout(src, m);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dst)
        .ctx(|| format!("making {}", dst.display()))?;
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    for e in ar
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?
    {
        let mut e = e.map_err(|e| bad(format!("corrupt archive: {e}")))?;
        let name = e.path_bytes().into_owned();
        let comps = tree::components(&name).map_err(|e| bad(e.to_string()))?;
        if comps.is_empty() {
            continue;
        }
        let rel: PathBuf = comps
            .iter()
            .map(|c| os(c))
            .collect::<Option<PathBuf>>()
            .ok_or_else(|| bad("bad name in archive".into()))?;
        let path = dst.join(&rel);
        let t = e.header().entry_type();
        if t.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&path)
                .ctx(|| format!("making {}", path.display()))?;
            continue;
        }
        if let Some(p) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(p)
                .ctx(|| format!("making {}", p.display()))?;
        }
        match t {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| {
                        bad(format!(
                            "{}: {}",
                            rel.display(),
                            crate::error::io_reason(&e)
                        ))
                    })?;
                io::copy(&mut e, &mut out).map_err(|e| bad(format!("corrupt archive: {e}")))?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = e
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .ok_or_else(|| bad(format!("{}: link without a target", rel.display())))?;
                // Relative to the link's directory (symlink) or the archive (hard link).
                let base = if t == tar::EntryType::Symlink {
                    comps[..comps.len() - 1].join(&b'/')
                } else {
                    Vec::new()
                };
                let mut full = base;
                if !full.is_empty() {
                    full.push(b'/');
                }
                full.extend_from_slice(&target);
                let resolved = normalise(&full).ok_or_else(|| {
                    bad(format!("{}: link leads out of the archive", rel.display()))
                })?;
                links.push((path, dst.join(resolved)));
            }
            _ => {}
        }
    }
    for (link, target) in links {
        let m = std::fs::symlink_metadata(&target);
        if !m.is_ok_and(|m| m.is_file()) {
            return Err(bad(format!(
                "{}: link to a missing file",
                link.strip_prefix(dst).unwrap_or(&link).display()
            )));
        }
        std::fs::hard_link(&target, &link).ctx(|| format!("linking {}", link.display()))?;
    }
    Ok(())
}

/// A path with `.` and `..` resolved lexically; None when it leaves the top.
fn normalise(p: &[u8]) -> Option<PathBuf> {
    let mut v: Vec<&[u8]> = Vec::new();
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                v.pop()?;
            }
            c => v.push(c),
        }
    }
    v.iter().map(|c| os(c)).collect()
}

fn os(b: &[u8]) -> Option<&std::ffi::OsStr> {
    use std::os::unix::ffi::OsStrExt;
    Some(std::ffi::OsStr::from_bytes(b))
}

/// The names an OCI layout gives its image (`io.containerd.image.name`, or
/// a full name in `org.opencontainers.image.ref.name`).
fn oci_names(layout: &Path) -> Vec<Reference> {
    let Ok(b) = std::fs::read(layout.join("index.json")) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for m in v["manifests"].as_array().into_iter().flatten() {
        for key in [
            "io.containerd.image.name",
            "org.opencontainers.image.ref.name",
        ] {
            if let Some(n) = m["annotations"][key].as_str() {
                if let Ok(r) = Reference::resolve(n, &Registries::default()) {
                    let full = n.contains('/') || n.contains(':') || key.starts_with("io.");
                    if full && !out.contains(&r) {
                        out.push(r);
                    }
                }
            }
        }
    }
    out
}

fn put_blob(layout: &Path, src: &Path) -> Result<(String, u64), ImageError> {
    let (digest, size) = file_digest(src)?;
    let dst = layout.join("blobs/sha256").join(&digest[7..]);
    if !dst.exists() && std::fs::hard_link(src, &dst).is_err() {
        std::fs::copy(src, &dst).ctx(|| format!("copying {}", src.display()))?;
    }
    Ok((digest, size))
}

fn put_bytes(layout: &Path, bytes: &[u8]) -> Result<String, ImageError> {
    let digest = format!("sha256:{}", crate::digest::digest(bytes));
    let dst = layout.join("blobs/sha256").join(&digest[7..]);
    std::fs::write(&dst, bytes).ctx(|| format!("writing {}", dst.display()))?;
    Ok(digest)
}

fn new_layout(l: &Path) -> Result<(), ImageError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(l.join("blobs/sha256"))
        .ctx(|| format!("making {}", l.display()))?;
    std::fs::write(l.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .ctx(|| format!("writing {}", l.display()))
}

fn layer_media(p: &Path) -> Result<String, ImageError> {
    let mut head = [0u8; 4];
    let mut f = File::open(p).ctx(|| format!("reading {}", p.display()))?;
    let n = f
        .read(&mut head)
        .ctx(|| format!("reading {}", p.display()))?;
    Ok(match Compression::sniff(&head[..n]) {
        Compression::None => MEDIA_OCI_LAYER.to_string(),
        Compression::Gzip => format!("{MEDIA_OCI_LAYER}+gzip"),
        Compression::Zstd => format!("{MEDIA_OCI_LAYER}+zstd"),
    })
}

/// Writes the manifest and index of a layout whose blobs are in place.
pub fn finish_layout(
    l: &Path,
    config: &[u8],
    layers: &[(String, u64, String)],
) -> Result<(), ImageError> {
    let cd = put_bytes(l, config)?;
    let man = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": cd, "size": config.len()},
        "layers": layers.iter().map(|(d, s, m)| serde_json::json!({
            "mediaType": m, "digest": d, "size": s})).collect::<Vec<_>>(),
    });
    let mb = serde_json::to_vec(&man).map_err(|e| ImageError::Other(e.to_string()))?;
    let md = put_bytes(l, &mb)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": MEDIA_OCI_MANIFEST, "digest": md, "size": mb.len()}],
    });
    let ib = serde_json::to_vec(&index).map_err(|e| ImageError::Other(e.to_string()))?;
    std::fs::write(l.join("index.json"), ib).ctx(|| format!("writing {}", l.display()))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Turns an unpacked `docker save` archive into an OCI layout; returns the
/// names it carries.
fn docker_layout(x: &Path, l: &Path) -> Result<Vec<Reference>, ImageError> {
    let mp = x.join("manifest.json");
    let b = std::fs::read(&mp).ctx(|| format!("reading {}", mp.display()))?;
    let mut ms: Vec<DockerManifest> = serde_json::from_slice(&b)
        .map_err(|e| ImageError::layout(&mp, format!("bad manifest.json: {e}")))?;
    if ms.len() != 1 {
        return Err(ImageError::layout(
            &mp,
            format!("holds {} images; sbox imports one at a time", ms.len()),
        ));
    }
    let m = ms.remove(0);
    let inside = |rel: &str| -> Result<PathBuf, ImageError> {
        normalise(rel.as_bytes())
            .map(|p| x.join(p))
            .ok_or_else(|| ImageError::layout(&mp, format!("{rel:?} leads out of the archive")))
    };
    new_layout(l)?;
    let cp = inside(&m.config)?;
    let config = super::store::read_limited(&cp)?;
    let mut layers = Vec::new();
    for rel in &m.layers {
        let p = inside(rel)?;
        if !p.is_file() {
            return Err(ImageError::layout(&mp, format!("layer {rel:?} is missing")));
        }
        let media = layer_media(&p)?;
        let (d, s) = put_blob(l, &p)?;
        layers.push((d, s, media));
    }
    finish_layout(l, &config, &layers)?;
    let regs = Registries::default();
    Ok(m.repo_tags
        .unwrap_or_default()
        .iter()
        .filter_map(|t| Reference::resolve(t, &regs).ok())
        .collect())
}

/// A layout of one layer: the rootfs tarball `src` as it is.
fn rootfs_layout(src: &Path, l: &Path) -> Result<(), ImageError> {
    new_layout(l)?;
    let f = File::open(src).ctx(|| format!("reading {}", src.display()))?;
    let r = tree::decompressed(f).ctx(|| format!("reading {}", src.display()))?;
    let mut h = tree::HashingReader::new(r);
    io::copy(&mut h, &mut io::sink())
        .map_err(|e| ImageError::layout(src, format!("cannot decompress: {e}")))?;
    let (diff_id, _) = h.finish();
    let media = layer_media(src)?;
    let (d, s) = put_blob(l, src)?;
    let (os, arch) = host_platform();
    let config = serde_json::json!({
        "architecture": arch,
        "os": os,
        "created": super::rfc3339(super::now()),
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": format!("sbox image import {}", src.display())}],
    });
    let cb = serde_json::to_vec(&config).map_err(|e| ImageError::Other(e.to_string()))?;
    finish_layout(l, &cb, &[(d, s, media)])
}

/// Writes a gzip-compressed copy of `input` to `out`, returning the
/// digests of the compressed and the uncompressed bytes and the size.
pub fn gzip_to(mut input: impl Read, out: &Path) -> Result<(String, u64, String), ImageError> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .ctx(|| format!("writing {}", out.display()))?;
    let mut enc =
        flate2::write::GzEncoder::new(io::BufWriter::new(f), flate2::Compression::default());
    let mut buf = vec![0u8; 1 << 16];
    let mut h = tree::HashingReader::new(&mut input);
    loop {
        let n = h.read(&mut buf).ctx(|| "reading the layer".into())?;
        if n == 0 {
            break;
        }
        enc.write_all(&buf[..n])
            .ctx(|| format!("writing {}", out.display()))?;
    }
    let (diff_id, _) = h.finish();
    let mut w = enc.finish().ctx(|| format!("writing {}", out.display()))?;
    w.flush().ctx(|| format!("writing {}", out.display()))?;
    drop(w);
    let (digest, size) = file_digest(out)?;
    Ok((digest, size, diff_id))
}
