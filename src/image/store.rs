//! The local image store, under DATA `images/`:
//!
//! - `blobs/sha256/<hex>`: content-addressed blobs (compressed layers,
//!   configs, manifests) as they came, verified by digest, shared between
//!   images;
//! - `trees/<chain-hex>/`: the flattened read-only root of the layer chain
//!   with that chain id (OCI: `chain(L1..Ln) = sha256(chain(L1..Ln-1) + " "
//!   \+ diff_id(Ln))`), see `tree`; a chain's tree shares its unchanged
//!   files with its parent's by hard links;
//! - `images/<config-hex>.json`: one record per image (`ImageRecord`);
//! - `names.json`: `registry/repository:tag` → image id;
//! - `staging/<pid>.<n>/`: private work directories on the same filesystem,
//!   removed when dropped (and those of dead processes at the next open);
//! - `lock`: taken (flock) while the store changes.
//!
//! An import builds everything in a staging directory and moves it in at
//! the end: an error leaves nothing behind.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::error::{ImageError, IoCtx};
use super::reference::{valid_digest, Reference, Registries};
use super::tree;
use crate::locations::Locations;
use crate::rootfs::overlay::sys;

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest, index or config read into memory.
const MAX_JSON: u64 = 8 << 20;

/// An image's id: the digest of its config (`sha256:<hex>`), as docker and
/// podman name images.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ImageId(pub String);

impl ImageId {
    /// The hex part.
    pub fn hex(&self) -> &str {
        self.0.strip_prefix("sha256:").unwrap_or(&self.0)
    }
    /// The 12 hex digits `ls` shows.
    pub fn short(&self) -> &str {
        let h = self.hex();
        &h[..h.len().min(12)]
    }
}

impl std::fmt::Display for ImageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An OCI content descriptor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// `index.json` of a layout (or a manifest list).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// An image manifest (OCI, or docker v2 schema 2: the same fields).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// The parts of an image config sbox reads (the whole file is kept as a
/// blob and shown by `inspect`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
}

/// How the image says its command runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunConfig {
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// One layer of a stored image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRecord {
    pub digest: String,
    pub diff_id: String,
    /// Bytes of the blob.
    pub size: u64,
    /// Bytes uncompressed.
    pub unpacked: u64,
    pub media_type: String,
}

/// What the store keeps about one image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: ImageId,
    pub manifest: String,
    pub layers: Vec<LayerRecord>,
    /// Chain ids (hex) of the layers, the last one names the image's tree.
    pub chain: Vec<String>,
    pub created: Option<String>,
    /// Seconds since the epoch when it entered the store.
    pub stored: u64,
    pub architecture: String,
    pub os: String,
}

impl ImageRecord {
    /// Uncompressed size of its layers.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.unpacked).sum()
    }
}

/// When an image's tree is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unpack {
    /// Before the image is stored: a layer that cannot be applied refuses
    /// the image (`image import`, `commit`).
    Now,
    /// At the first use of the image (`image pull`: a pull costs what the
    /// download costs).
    OnFirstUse,
}

/// The name of the tree of an image without layers.
const EMPTY_TREE: &str = "empty";

/// The local image store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A private work directory inside the store, removed on drop.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
}

impl Staging {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        remove_all(&self.path);
    }
}

/// Removes a file or a whole tree (trees have u+rwx directories).
fn remove_all(p: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
        return;
    };
    let Ok(pfd) = sys::open_dir_path(parent) else {
        return;
    };
    if let Ok(c) = sys::cstr(name.as_bytes()) {
        if let Err(e) = tree::remove_at(pfd.as_fd(), &c) {
            log::warn!("cannot remove {}: {e}", p.display());
        }
    }
}

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn hex_of(digest: &str) -> Result<&str, ImageError> {
    if !valid_digest(digest) {
        return Err(ImageError::Other(format!(
            "unsupported or malformed digest {digest:?} (sha256 only)"
        )));
    }
    Ok(&digest[7..])
}

fn sha256_hex(bytes: &[u8]) -> String {
    crate::digest::digest(bytes)
}

/// `sha256:<hex>` of a file's content.
pub fn file_digest(path: &Path) -> Result<(String, u64), ImageError> {
    let f = File::open(path).ctx(|| format!("reading {}", path.display()))?;
    let mut h = tree::HashingReader::new(io::BufReader::with_capacity(1 << 16, f));
    io::copy(&mut h, &mut io::sink()).ctx(|| format!("reading {}", path.display()))?;
    Ok(h.finish())
}

/// The chain id of `parent` (hex; None for the first layer) and a diff_id.
fn chain_id(parent: Option<&str>, diff_id: &str) -> String {
    match parent {
        None => diff_id
            .strip_prefix("sha256:")
            .unwrap_or(diff_id)
            .to_string(),
        Some(p) => sha256_hex(format!("sha256:{p} {diff_id}").as_bytes()),
    }
}

/// Writes `bytes` to `path` through a temporary name and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .ctx(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .ctx(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("writing {}", path.display()))
}

/// The platform names of this host, as images spell them.
pub fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "arm" => "arm",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    ("linux", arch)
}

/// A held store lock.
pub struct Lock(#[allow(dead_code)] nix::fcntl::Flock<File>);

/// A running sandbox's hold on its image's tree (see `Store::hold_tree`).
#[derive(Debug)]
pub struct TreeHold(#[allow(dead_code)] nix::fcntl::Flock<File>);

impl Store {
    /// The store of `loc` (made when missing, private to the user).
    pub fn open(loc: &Locations) -> Result<Store, ImageError> {
        Self::open_at(&loc.data.join("images"))
    }

    /// The store at `root`.
    pub fn open_at(root: &Path) -> Result<Store, ImageError> {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true).mode(0o700);
        for d in ["blobs/sha256", "trees", "images", "staging"] {
            let p = root.join(d);
            b.create(&p).ctx(|| format!("making {}", p.display()))?;
        }
        let s = Store {
            root: root.to_path_buf(),
        };
        s.clean_stale_staging();
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Staging directories of processes that are gone.
    fn clean_stale_staging(&self) {
        let Ok(rd) = std::fs::read_dir(self.root.join("staging")) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.split('.').next())
                .and_then(|p| p.parse::<i32>().ok());
            let alive = pid.is_some_and(|p| {
                p > 0
                    && !matches!(
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None),
                        Err(nix::errno::Errno::ESRCH)
                    )
            });
            if !alive {
                remove_all(&e.path());
            }
        }
    }

    /// Takes the store's lock (held until the returned value is dropped).
    pub fn lock(&self) -> Result<Lock, ImageError> {
        let p = self.root.join("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p)
            .ctx(|| format!("opening {}", p.display()))?;
        let l = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| ImageError::io(format!("locking {}", p.display()), e.into()))?;
        Ok(Lock(l))
    }

    /// A private directory inside the store, removed on drop.
    pub fn staging(&self) -> Result<Staging, ImageError> {
        let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = self.root.join("staging").join(format!(
            "{}.{}.{}",
            std::process::id(),
            n,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .ctx(|| format!("making {}", path.display()))?;
        Ok(Staging { path })
    }

    /// Whether the blob `digest` is in the store.
    pub fn has_blob(&self, digest: &str) -> bool {
        valid_digest(digest) && self.blob_path(digest).is_file()
    }

    /// Where the blob `digest` is (or would be) kept.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.root.join("blobs/sha256").join(hex)
    }

    fn record_path(&self, id: &ImageId) -> PathBuf {
        self.root.join("images").join(format!("{}.json", id.hex()))
    }

    /// The tree (root directory) of the image chain `chain` (hex).
    pub fn tree_path(&self, chain: Option<&str>) -> PathBuf {
        self.root.join("trees").join(chain.unwrap_or(EMPTY_TREE))
    }

    /// The name index.
    pub fn names(&self) -> Result<BTreeMap<String, ImageId>, ImageError> {
        let p = self.root.join("names.json");
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| ImageError::layout(&p, format!("unreadable: {e}"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(ImageError::io(format!("reading {}", p.display()), e)),
        }
    }

    fn write_names(&self, names: &BTreeMap<String, ImageId>) -> Result<(), ImageError> {
        let b = serde_json::to_vec_pretty(names).map_err(|e| ImageError::Other(e.to_string()))?;
        write_atomic(&self.root.join("names.json"), &b)
    }

    /// The image named `r` in the store, if any.
    pub fn lookup(&self, r: &Reference) -> Result<Option<ImageId>, ImageError> {
        if let Some(d) = &r.digest {
            // By manifest digest (or config digest).
            for rec in self.list()? {
                if &rec.manifest == d || &rec.id.0 == d {
                    return Ok(Some(rec.id));
                }
            }
            return Ok(None);
        }
        Ok(self.names()?.get(&r.to_string()).cloned())
    }

    /// The image a user's word names: a name (short names resolved like
    /// podman, the store's own images first), or an id or its prefix
    /// (at least 3 hex digits). `Ok(Err(reference))` when it is a valid
    /// name that is not here.
    pub fn find(
        &self,
        s: &str,
        regs: &Registries,
    ) -> Result<Result<ImageId, Reference>, ImageError> {
        let idish = s.strip_prefix("sha256:").unwrap_or(s);
        if idish.len() >= 3 && idish.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: Vec<ImageId> = self
                .ids()?
                .into_iter()
                .filter(|id| id.hex().starts_with(idish))
                .collect();
            match hits.len() {
                1 => return Ok(Ok(hits[0].clone())),
                0 => {}
                _ => {
                    return Err(ImageError::Other(format!(
                        "image id {s} is ambiguous: it begins {} ids",
                        hits.len()
                    )))
                }
            }
        }
        if s.starts_with("sha256:") {
            return Err(ImageError::Other(format!(
                "no image with id {s} in the local store"
            )));
        }
        if !Reference::is_qualified(s) {
            // A short name: this store's own images first (imported or
            // committed ones under localhost/, then the search registries).
            let mut cands = vec![Reference::local(s)?];
            cands.extend(Reference::candidates(s, regs)?);
            for c in &cands {
                if let Some(id) = self.lookup(c)? {
                    return Ok(Ok(id));
                }
            }
        }
        let r = Reference::resolve(s, regs)?;
        Ok(match self.lookup(&r)? {
            Some(id) => Ok(id),
            None => Err(r),
        })
    }

    /// The ids of all stored images.
    pub fn ids(&self) -> Result<Vec<ImageId>, ImageError> {
        let dir = self.root.join("images");
        let mut v = Vec::new();
        for e in std::fs::read_dir(&dir)
            .ctx(|| format!("reading {}", dir.display()))?
            .flatten()
        {
            let n = e.file_name();
            let Some(hex) = n.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                v.push(ImageId(format!("sha256:{hex}")));
            }
        }
        v.sort();
        Ok(v)
    }

    /// The record of image `id`.
    pub fn record(&self, id: &ImageId) -> Result<ImageRecord, ImageError> {
        let p = self.record_path(id);
        let b = std::fs::read(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::NotFound(id.to_string()),
            _ => ImageError::io(format!("reading {}", p.display()), e),
        })?;
        serde_json::from_slice(&b).map_err(|e| ImageError::layout(&p, format!("unreadable: {e}")))
    }

    /// All image records.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        self.ids()?.iter().map(|id| self.record(id)).collect()
    }

    /// The names that point at `id`, sorted.
    pub fn names_of(&self, id: &ImageId) -> Result<Vec<String>, ImageError> {
        Ok(self
            .names()?
            .into_iter()
            .filter(|(_, v)| v == id)
            .map(|(k, _)| k)
            .collect())
    }

    /// The raw config JSON of image `id`.
    pub fn config_json(&self, id: &ImageId) -> Result<serde_json::Value, ImageError> {
        let p = self.blob_path(&id.0);
        let b = std::fs::read(&p).ctx(|| format!("reading {}", p.display()))?;
        serde_json::from_slice(&b).map_err(|e| ImageError::layout(&p, format!("bad config: {e}")))
    }

    /// The config of image `id`.
    pub fn config(&self, id: &ImageId) -> Result<ImageConfig, ImageError> {
        serde_json::from_value(self.config_json(id)?)
            .map_err(|e| ImageError::Config(format!("image {id}: bad config: {e}")))
    }

    /// The root directory of image `id`'s tree, built from its layers
    /// when this is its first use (a pulled image).
    pub fn rootfs(&self, id: &ImageId) -> Result<PathBuf, ImageError> {
        let rec = self.record(id)?;
        let top = rec.chain.last().map(String::as_str);
        let p = self.tree_path(top);
        if p.is_dir() {
            return Ok(p);
        }
        let _lock = self.lock()?;
        // Another sbox may have built it while this one waited.
        if p.is_dir() {
            return Ok(p);
        }
        let mut rec = self.record(id)?;
        let files: Vec<PathBuf> = rec
            .layers
            .iter()
            .map(|l| self.blob_path(&l.digest))
            .collect();
        if let Some(l) = rec.layers.iter().find(|l| !self.has_blob(&l.digest)) {
            return Err(ImageError::Other(format!(
                "image {}: layer {} is missing from the store; pull or import it again",
                id.short(),
                l.digest
            )));
        }
        if std::io::stderr().is_terminal() {
            eprintln!(
                "sbox: unpacking image {} ({} layer{})",
                id.short(),
                rec.layers.len(),
                if rec.layers.len() == 1 { "" } else { "s" }
            );
        }
        let staging = self.staging()?;
        let dir = staging.path().join("tree");
        let chain = rec.chain.clone();
        let notes = self
            .build_chain(&dir, &files, &mut rec.layers, &chain)
            .map_err(|e| {
                ImageError::Other(format!(
                    "image {} cannot be unpacked: {e}; remove it with `sbox image rm {}`",
                    id.short(),
                    id.short()
                ))
            })?;
        for n in notes {
            eprintln!("sbox: note: {n}");
        }
        std::fs::rename(&dir, &p).ctx(|| format!("storing {}", p.display()))?;
        // The sizes are known now.
        let b = serde_json::to_vec_pretty(&rec).map_err(|e| ImageError::Other(e.to_string()))?;
        write_atomic(&self.record_path(id), &b)?;
        Ok(p)
    }

    /// Marks the tree `root` (an image's, from [`Self::rootfs`]) as in use
    /// by a sandbox for as long as the returned hold lives (a shared flock
    /// on the directory, which `image rm` asks about).
    pub fn hold_tree(&self, root: &Path) -> Result<TreeHold, ImageError> {
        let f = File::open(root).ctx(|| format!("opening {}", root.display()))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockShared)
            .map(TreeHold)
            .map_err(|(_, e)| ImageError::io(format!("locking {}", root.display()), e.into()))
    }

    /// Whether a running sandbox holds the tree of image `id`
    /// ([`Self::hold_tree`]).
    pub fn tree_in_use(&self, id: &ImageId) -> bool {
        let Ok(rec) = self.record(id) else {
            return false;
        };
        let Ok(f) = File::open(self.tree_path(rec.chain.last().map(String::as_str))) else {
            return false;
        };
        matches!(
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock),
            Err((_, nix::errno::Errno::EWOULDBLOCK))
        )
    }

    /// Builds in `dir` the tree of the whole layer `chain`: on a copy of
    /// the tree of its longest prefix the store has (hard links), the
    /// remaining layers (blobs `files`) applied in order, each checked
    /// against its diff_id; their uncompressed sizes go to `layers`.
    /// Returns what the user should know (device nodes left out).
    fn build_chain(
        &self,
        dir: &Path,
        files: &[PathBuf],
        layers: &mut [LayerRecord],
        chain: &[String],
    ) -> Result<Vec<String>, ImageError> {
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(dir)
            .ctx(|| format!("making {}", dir.display()))?;
        let what = || format!("opening {}", dir.display());
        let dfd = sys::open_dir_path(dir).ctx(what)?;
        let dfd =
            sys::open_beneath(dfd.as_fd(), b"", libc::O_RDONLY | libc::O_DIRECTORY, 0).ctx(what)?;
        let from = (1..chain.len())
            .rev()
            .find(|&k| self.tree_path(Some(&chain[k - 1])).is_dir())
            .unwrap_or(0);
        if from > 0 {
            let p = self.tree_path(Some(&chain[from - 1]));
            let what = || format!("opening {}", p.display());
            let pfd = sys::open_dir_path(&p).ctx(what)?;
            let pfd = sys::open_beneath(pfd.as_fd(), b"", libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .ctx(what)?;
            tree::clone_tree(pfd.as_fd(), dfd.as_fd())
                .ctx(|| format!("copying the tree {}", p.display()))?;
        }
        let mut notes = Vec::new();
        for (l, blob) in layers.iter_mut().zip(files).skip(from) {
            let f = File::open(blob).ctx(|| format!("reading {}", blob.display()))?;
            let r = tree::decompressed(f)
                .map_err(|e| ImageError::layer(&l.digest, format!("cannot decompress: {e}")))?;
            let applied = tree::apply_layer(dfd.as_fd(), r)
                .map_err(|e| ImageError::layer(&l.digest, e.to_string()))?;
            if applied.diff_id != l.diff_id {
                return Err(ImageError::layer(
                    &l.digest,
                    format!(
                        "uncompressed content has digest {}, the config says {} (corrupt or tampered)",
                        applied.diff_id, l.diff_id
                    ),
                ));
            }
            l.unpacked = applied.size;
            if applied.skipped_devices > 0 {
                notes.push(format!(
                    "layer {}: {} device node(s) left out (an unprivileged user cannot make them)",
                    &l.digest[..19.min(l.digest.len())],
                    applied.skipped_devices
                ));
            }
        }
        tree::add_mount_points(dfd.as_fd()).ctx(|| format!("completing {}", dir.display()))?;
        tree::mark_image_tree(dfd.as_fd()).ctx(|| format!("marking {}", dir.display()))?;
        Ok(notes)
    }

    /// Stores the OCI image layout a pull downloaded to `layout` and names
    /// it `name`. Its tree is built at first use ([`Self::rootfs`]).
    pub fn add_pulled(&self, layout: &Path, name: &Reference) -> Result<ImageId, ImageError> {
        self.ingest(layout, std::slice::from_ref(name), Unpack::OnFirstUse)
            .map(|(id, _)| id)
    }

    /// Ingests the OCI image layout at `layout` and gives it `names`
    /// (none: kept unnamed, like podman's `<none>`). Every blob is verified
    /// by digest, every layer by its diff_id while its tree is built; all
    /// is made in a staging directory and moved in at the end.
    pub fn import_layout(&self, layout: &Path, names: &[Reference]) -> Result<ImageId, ImageError> {
        self.import_layout_noting(layout, names).map(|(id, _)| id)
    }

    /// [`Self::import_layout`], with what the user should know about how
    /// the image was unpacked (device nodes left out).
    pub fn import_layout_noting(
        &self,
        layout: &Path,
        names: &[Reference],
    ) -> Result<(ImageId, Vec<String>), ImageError> {
        self.ingest(layout, names, Unpack::Now)
    }

    fn ingest(
        &self,
        layout: &Path,
        names: &[Reference],
        unpack: Unpack,
    ) -> Result<(ImageId, Vec<String>), ImageError> {
        let mut notes = Vec::new();
        let _lock = self.lock()?;
        let staging = self.staging()?;
        let marker = layout.join("oci-layout");
        let m: serde_json::Value = serde_json::from_slice(&read_small(&marker).map_err(|_| {
            ImageError::layout(layout, "not an OCI image layout (no oci-layout file)")
        })?)
        .map_err(|e| ImageError::layout(&marker, format!("bad JSON: {e}")))?;
        if m.get("imageLayoutVersion")
            .and_then(|v| v.as_str())
            .is_none()
        {
            return Err(ImageError::layout(&marker, "no imageLayoutVersion"));
        }
        let index: Index = parse_json(&layout.join("index.json"))?;
        let desc = choose_manifest(layout, &index)?;
        let manifest_bytes = read_blob_verified(layout, &desc)?;
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes).map_err(|e| {
            ImageError::layout(layout, format!("bad manifest {}: {e}", desc.digest))
        })?;
        let config_bytes = read_blob_verified(layout, &manifest.config)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
            ImageError::layout(
                layout,
                format!("bad image config {}: {e}", manifest.config.digest),
            )
        })?;
        if manifest.layers.len() != config.rootfs.diff_ids.len() {
            return Err(ImageError::layout(
                layout,
                format!(
                    "the manifest has {} layers, the config {} diff_ids",
                    manifest.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            ));
        }
        let id = ImageId(manifest.config.digest.clone());
        hex_of(&id.0)?;

        // Blobs: into staging (verified), moved into blobs/ at the end.
        let sblobs = staging.path().join("blobs");
        std::fs::create_dir(&sblobs).ctx(|| format!("making {}", sblobs.display()))?;
        let mut staged: Vec<(String, PathBuf)> = Vec::new();
        let mut write_small = |digest: &str, bytes: &[u8]| -> Result<(), ImageError> {
            if !self.has_blob(digest) {
                let p = sblobs.join(hex_of(digest)?);
                std::fs::write(&p, bytes).ctx(|| format!("writing {}", p.display()))?;
                staged.push((digest.to_string(), p));
            }
            Ok(())
        };
        write_small(&desc.digest, &manifest_bytes)?;
        write_small(&manifest.config.digest, &config_bytes)?;
        let mut layer_files: Vec<PathBuf> = Vec::new();
        for l in &manifest.layers {
            if l.media_type.contains("nondistributable") && !blob_file(layout, &l.digest)?.exists()
            {
                return Err(ImageError::layer(
                    &l.digest,
                    "foreign layer not in the layout",
                ));
            }
            if self.has_blob(&l.digest) {
                layer_files.push(self.blob_path(&l.digest));
                continue;
            }
            if let Some((_, p)) = staged.iter().find(|(d, _)| d == &l.digest) {
                layer_files.push(p.clone());
                continue;
            }
            let dst = sblobs.join(hex_of(&l.digest)?);
            ingest_blob(layout, l, &dst)?;
            staged.push((l.digest.clone(), dst.clone()));
            layer_files.push(dst);
        }

        // Layers and chain ids; the tree of the whole chain is built now
        // (an import: everything is checked before anything is stored) or
        // at first use (a pull: the blobs are verified, each layer's start
        // is checked, its diff_id when the tree is built).
        let mut chain: Vec<String> = Vec::new();
        let mut layers = Vec::new();
        for (i, l) in manifest.layers.iter().enumerate() {
            let diff_id = &config.rootfs.diff_ids[i];
            hex_of(diff_id)?;
            let c = chain_id(chain.last().map(String::as_str), diff_id);
            let unpacked = self
                .unpacked_size(&l.digest)
                .unwrap_or_else(|| tree::uncompressed_size_hint(&layer_files[i]));
            layers.push(LayerRecord {
                digest: l.digest.clone(),
                diff_id: diff_id.clone(),
                size: l.size,
                unpacked,
                media_type: l.media_type.clone(),
            });
            chain.push(c);
        }
        let mut built: Vec<(String, PathBuf)> = Vec::new();
        let top = chain
            .last()
            .cloned()
            .unwrap_or_else(|| EMPTY_TREE.to_string());
        if !self.tree_path(Some(&top)).is_dir() {
            match unpack {
                Unpack::Now => {
                    let dir = staging.path().join("tree");
                    let made = self.build_chain(&dir, &layer_files, &mut layers, &chain)?;
                    notes.extend(made);
                    built.push((top, dir));
                }
                Unpack::OnFirstUse => {
                    for (f, l) in layer_files.iter().zip(&layers) {
                        tree::check_layer_start(f)
                            .map_err(|e| ImageError::layer(&l.digest, e.to_string()))?;
                    }
                }
            }
        }

        // Everything is verified: move it in.
        for (digest, p) in &staged {
            let dst = self.blob_path(digest);
            if !dst.exists() {
                std::fs::rename(p, &dst).ctx(|| format!("storing {}", dst.display()))?;
            }
        }
        for (c, p) in &built {
            let dst = self.root.join("trees").join(c);
            if !dst.exists() {
                std::fs::rename(p, &dst).ctx(|| format!("storing {}", dst.display()))?;
            }
        }
        let rec = ImageRecord {
            id: id.clone(),
            manifest: desc.digest.clone(),
            layers,
            chain,
            created: config.created.clone(),
            stored: now(),
            architecture: config.architecture.clone(),
            os: config.os.clone(),
        };
        let rp = self.record_path(&id);
        if !rp.exists() {
            let b =
                serde_json::to_vec_pretty(&rec).map_err(|e| ImageError::Other(e.to_string()))?;
            write_atomic(&rp, &b)?;
        }
        if !names.is_empty() {
            let mut all = self.names()?;
            for n in names {
                all.insert(n.to_string(), id.clone());
            }
            self.write_names(&all)?;
        }
        Ok((id, notes))
    }

    /// The uncompressed size recorded for layer `digest` by any image.
    fn unpacked_size(&self, digest: &str) -> Option<u64> {
        self.list()
            .ok()?
            .into_iter()
            .flat_map(|r| r.layers)
            .find(|l| l.digest == digest)
            .map(|l| l.unpacked)
    }

    /// Gives image `id` the name `name` (taken from another image if need be).
    pub fn tag(&self, id: &ImageId, name: &Reference) -> Result<(), ImageError> {
        let _lock = self.lock()?;
        let mut all = self.names()?;
        all.insert(name.to_string(), id.clone());
        self.write_names(&all)
    }

    /// Removes a name; the image goes when no name is left (or at once,
    /// all its names with it, when `by_id`). Returns the removed image, if
    /// it was removed.
    pub fn remove(
        &self,
        id: &ImageId,
        name: Option<&Reference>,
    ) -> Result<Option<ImageId>, ImageError> {
        let _lock = self.lock()?;
        let mut all = self.names()?;
        match name {
            Some(n) => {
                all.remove(&n.to_string());
            }
            None => all.retain(|_, v| v != id),
        }
        let gone = !all.values().any(|v| v == id);
        self.write_names(&all)?;
        if gone {
            let p = self.record_path(id);
            std::fs::remove_file(&p).ctx(|| format!("removing {}", p.display()))?;
            self.gc()?;
            return Ok(Some(id.clone()));
        }
        Ok(None)
    }

    /// Removes blobs and trees no stored image uses (the lock is held).
    fn gc(&self) -> Result<(), ImageError> {
        let mut blobs: BTreeSet<String> = BTreeSet::new();
        let mut trees: BTreeSet<String> = BTreeSet::new();
        for rec in self.list()? {
            blobs.insert(rec.id.hex().to_string());
            blobs.insert(rec.manifest.trim_start_matches("sha256:").to_string());
            for l in &rec.layers {
                blobs.insert(l.digest.trim_start_matches("sha256:").to_string());
            }
            trees.extend(rec.chain.iter().cloned());
            if rec.chain.is_empty() {
                trees.insert(EMPTY_TREE.to_string());
            }
        }
        for (dir, keep) in [("blobs/sha256", &blobs), ("trees", &trees)] {
            let d = self.root.join(dir);
            for e in std::fs::read_dir(&d)
                .ctx(|| format!("reading {}", d.display()))?
                .flatten()
            {
                let n = e.file_name();
                if !n.to_str().is_some_and(|n| keep.contains(n)) {
                    remove_all(&e.path());
                }
            }
        }
        Ok(())
    }
}

/// Reads a small file (a JSON document) whole, refusing a large one.
pub fn read_limited(p: &Path) -> Result<Vec<u8>, ImageError> {
    read_small(p).map_err(|e| ImageError::layout(p, crate::error::io_reason(&e)))
}

/// Reads a small file (a JSON document) whole.
fn read_small(p: &Path) -> io::Result<Vec<u8>> {
    let f = File::open(p)?;
    let mut v = Vec::new();
    f.take(MAX_JSON + 1).read_to_end(&mut v)?;
    if v.len() as u64 > MAX_JSON {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "too large"));
    }
    Ok(v)
}

fn parse_json<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T, ImageError> {
    let b = read_small(p).map_err(|e| ImageError::layout(p, crate::error::io_reason(&e)))?;
    serde_json::from_slice(&b).map_err(|e| ImageError::layout(p, format!("bad JSON: {e}")))
}

/// The path of blob `digest` in a layout (no symlink out of the layout is
/// taken: the file is opened later with O_NOFOLLOW).
fn blob_file(layout: &Path, digest: &str) -> Result<PathBuf, ImageError> {
    Ok(layout.join("blobs/sha256").join(hex_of(digest)?))
}

fn open_nofollow(p: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)
}

/// Reads a small blob of a layout and checks its digest and size.
fn read_blob_verified(layout: &Path, d: &Descriptor) -> Result<Vec<u8>, ImageError> {
    let p = blob_file(layout, &d.digest)?;
    if d.size > MAX_JSON {
        return Err(ImageError::layout(&p, "too large for a manifest or config"));
    }
    let mut v = Vec::new();
    open_nofollow(&p)
        .and_then(|f| f.take(MAX_JSON + 1).read_to_end(&mut v))
        .map_err(|e| {
            ImageError::layout(
                &p,
                format!("blob {}: {}", d.digest, crate::error::io_reason(&e)),
            )
        })?;
    let actual = format!("sha256:{}", sha256_hex(&v));
    if actual != d.digest {
        return Err(ImageError::DigestMismatch {
            expected: d.digest.clone(),
            actual,
        });
    }
    if v.len() as u64 != d.size {
        return Err(ImageError::layout(
            &p,
            format!(
                "blob {} has {} bytes, its descriptor says {}",
                d.digest,
                v.len(),
                d.size
            ),
        ));
    }
    Ok(v)
}

/// Copies (or hard-links) layer blob `d` of a layout to `dst`, verifying it.
fn ingest_blob(layout: &Path, d: &Descriptor, dst: &Path) -> Result<(), ImageError> {
    let src = blob_file(layout, &d.digest)?;
    let linked = std::fs::symlink_metadata(&src).is_ok_and(|m| m.file_type().is_file())
        && std::fs::hard_link(&src, dst).is_ok();
    if !linked {
        let mut f = open_nofollow(&src).map_err(|e| {
            ImageError::layer(
                &d.digest,
                format!("{}: {}", src.display(), crate::error::io_reason(&e)),
            )
        })?;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst)
            .ctx(|| format!("writing {}", dst.display()))?;
        io::copy(&mut f, &mut out).ctx(|| format!("copying {}", src.display()))?;
    }
    let (actual, size) = file_digest(dst)?;
    if actual != d.digest {
        return Err(ImageError::DigestMismatch {
            expected: d.digest.clone(),
            actual,
        });
    }
    if size != d.size {
        return Err(ImageError::layer(
            &d.digest,
            format!("blob has {size} bytes, its descriptor says {}", d.size),
        ));
    }
    Ok(())
}

/// The one image manifest of a layout's index (of a manifest list in it:
/// the host's platform).
fn choose_manifest(layout: &Path, index: &Index) -> Result<Descriptor, ImageError> {
    let (os, arch) = host_platform();
    let is_list = |m: &str| m == MEDIA_OCI_INDEX || m == MEDIA_DOCKER_LIST;
    let mut cands: Vec<&Descriptor> = index.manifests.iter().collect();
    if cands.len() > 1 {
        cands.retain(|d| {
            d.platform
                .as_ref()
                .is_none_or(|p| p.os == os && p.architecture == arch)
        });
    }
    match cands.as_slice() {
        [] => Err(ImageError::layout(
            layout,
            format!("no image for {os}/{arch} in index.json"),
        )),
        [d] if is_list(&d.media_type) => {
            let b = read_blob_verified(layout, d)?;
            let inner: Index = serde_json::from_slice(&b)
                .map_err(|e| ImageError::layout(layout, format!("bad index {}: {e}", d.digest)))?;
            if inner.manifests.iter().any(|m| is_list(&m.media_type)) {
                return Err(ImageError::layout(
                    layout,
                    "nested image indexes are not supported",
                ));
            }
            choose_manifest(layout, &inner)
        }
        [d] => Ok((*d).clone()),
        _ => Err(ImageError::layout(
            layout,
            format!(
                "index.json holds {} images; sbox imports one at a time",
                cands.len()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let c1 = chain_id(None, &a);
        assert_eq!(c1, "a".repeat(64));
        let c2 = chain_id(Some(&c1), &b);
        assert_eq!(c2, sha256_hex(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn ids_print_short() {
        let id = ImageId(format!("sha256:{}", "0123456789abcdef".repeat(4)));
        assert_eq!(id.short(), "0123456789ab");
    }

    fn tar_of(entries: &[(&str, u8, &[u8], u32, u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, uid, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::new(*kind));
            h.set_uid(*uid as u64);
            h.set_gid(*uid as u64);
            h.set_mode(*mode);
            h.set_mtime(1_700_000_000);
            // Names as they are (the builder refuses `..`).
            let raw = h.as_old_mut();
            raw.name = [0; 100];
            raw.name[..name.len()].copy_from_slice(name.as_bytes());
            if matches!(*kind, b'1' | b'2') {
                raw.linkname = [0; 100];
                raw.linkname[..data.len()].copy_from_slice(data);
                h.set_size(0);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            } else {
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn put(dir: &Path, bytes: &[u8]) -> String {
        let hex = sha256_hex(bytes);
        std::fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        format!("sha256:{hex}")
    }

    /// A layout of `layers` (uncompressed tars, stored gzipped).
    fn layout_in(base: &Path, name: &str, layers: &[Vec<u8>]) -> PathBuf {
        let p = base.join(name);
        layout(&p, layers);
        p
    }

    fn layout(dir: &Path, layers: &[Vec<u8>]) -> String {
        layout_with(dir, layers, gzip)
    }

    fn layout_with(dir: &Path, layers: &[Vec<u8>], compress: fn(&[u8]) -> Vec<u8>) -> String {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let mut descs = vec![];
        let mut diffs = vec![];
        for l in layers {
            diffs.push(format!("sha256:{}", sha256_hex(l)));
            let z = compress(l);
            descs.push(serde_json::json!({"mediaType": MEDIA_OCI_LAYER_GZIP, "digest": put(dir, &z), "size": z.len()}));
        }
        let cfg = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["A=1"], "WorkingDir": "/w"},
            "rootfs": {"type": "layers", "diff_ids": diffs}}))
        .unwrap();
        let cd = put(dir, &cfg);
        let man = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST,
            "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": cd, "size": cfg.len()},
            "layers": descs}))
        .unwrap();
        let md = put(dir, &man);
        std::fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [
                {"mediaType": MEDIA_OCI_MANIFEST, "digest": md, "size": man.len()}]}))
            .unwrap(),
        )
        .unwrap();
        cd
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sbox-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn staging_empty(store: &Store) -> bool {
        std::fs::read_dir(store.root().join("staging"))
            .unwrap()
            .next()
            .is_none()
    }

    #[test]
    fn imports_a_layout_with_whiteouts_and_owners() {
        let base = tmp("ok");
        let l1 = tar_of(&[
            ("etc/", b'5', b"", 0, 0o755),
            ("etc/os-release", b'0', b"ID=test\n", 0, 0o644),
            ("etc/gone", b'0', b"x", 0, 0o644),
            ("opq/", b'5', b"", 0, 0o755),
            ("opq/old", b'0', b"old", 0, 0o644),
            ("bin/", b'5', b"", 0, 0o755),
            ("bin/su", b'0', b"su", 0, 0o4755),
        ]);
        let l2 = tar_of(&[
            ("etc/.wh.gone", b'0', b"", 0, 0o644),
            ("opq/.wh..wh..opq", b'0', b"", 0, 0o644),
            ("opq/new", b'0', b"new", 0, 0o644),
            ("home/u/f", b'0', b"mine", 100, 0o600),
            ("home/u/hl", b'1', b"home/u/f", 100, 0o600),
            ("link", b'2', b"etc/os-release", 0, 0o777),
        ]);
        let lay = base.join("layout");
        let cd = layout(&lay, &[l1.clone(), l2]);
        let store = Store::open_at(&base.join("store")).unwrap();
        let name = Reference::parse("localhost/t:1").unwrap();
        // As a pull stores it: the tree is made at first use.
        let id = store.add_pulled(&lay, &name).unwrap();
        let rec = store.record(&id).unwrap();
        assert!(!store
            .tree_path(rec.chain.last().map(String::as_str))
            .exists());
        assert_eq!(id.0, cd);
        assert_eq!(store.lookup(&name).unwrap(), Some(id.clone()));
        assert!(staging_empty(&store));
        let root = store.rootfs(&id).unwrap();
        assert_eq!(
            std::fs::read(root.join("etc/os-release")).unwrap(),
            b"ID=test\n"
        );
        assert!(!root.join("etc/gone").exists());
        assert!(!root.join("opq/old").exists());
        assert!(root.join("opq/new").exists());
        let rd = |p: &str| {
            let fd = sys::open_dir_path(root.join(p).parent().unwrap()).unwrap();
            let name = sys::cstr(Path::new(p).file_name().unwrap().as_encoded_bytes()).unwrap();
            let st = sys::fstatat(fd.as_fd(), &name).unwrap();
            tree::lower_override(fd.as_fd(), &name, &st).unwrap()
        };
        let o = rd("home/u/f");
        assert_eq!((o.uid, o.gid, o.mode), (100, 100, 0o600));
        assert_eq!(rd("bin/su").mode, 0o4755);
        assert_eq!(rd("etc/os-release").uid, 0);
        // Only the image's own chain has a tree. An image of the first
        // layer alone gets its own; an image on top of it shares its files.
        let rec = store.record(&id).unwrap();
        assert_eq!(rec.chain.len(), 2);
        assert!(!store.tree_path(Some(&rec.chain[0])).exists());
        assert!(rec.layers.iter().all(|l| l.unpacked > 0));
        let one = store
            .import_layout(&layout_in(&base, "one", std::slice::from_ref(&l1)), &[])
            .unwrap();
        let l3 = tar_of(&[("extra", b'0', b"3", 0, 0o644)]);
        let three = store
            .import_layout(&layout_in(&base, "three", &[l1, l3]), &[])
            .unwrap();
        use std::os::unix::fs::MetadataExt;
        let ino = |id: &ImageId| {
            std::fs::metadata(store.rootfs(id).unwrap().join("etc/os-release"))
                .unwrap()
                .ino()
        };
        assert_eq!(ino(&one), ino(&three));
        assert_ne!(ino(&one), ino(&id));
        store.remove(&one, None).unwrap();
        store.remove(&three, None).unwrap();
        // Idempotent.
        assert_eq!(
            store
                .import_layout(&lay, std::slice::from_ref(&name))
                .unwrap(),
            id
        );
        // Removal takes its blobs and trees.
        store.remove(&id, Some(&name)).unwrap();
        assert!(store.ids().unwrap().is_empty());
        assert!(std::fs::read_dir(store.root().join("trees"))
            .unwrap()
            .next()
            .is_none());
        assert!(std::fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .next()
            .is_none());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn refuses_bad_layers_and_leaves_nothing() {
        let base = tmp("bad");
        let store = Store::open_at(&base.join("store")).unwrap();
        let name = Reference::parse("localhost/t:1").unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("dotdot", tar_of(&[("../x", b'0', b"x", 0, 0o644)])),
            (
                "through-symlink",
                tar_of(&[
                    ("l", b'2', b"/tmp", 0, 0o777),
                    ("l/x", b'0', b"x", 0, 0o644),
                ]),
            ),
            (
                "hardlink-out",
                tar_of(&[("h", b'1', b"../../etc/passwd", 0, 0o644)]),
            ),
            (
                "hardlink-none",
                tar_of(&[("h", b'1', b"nothere", 0, 0o644)]),
            ),
            (
                "whiteout-dot",
                tar_of(&[
                    ("d/", b'5', b"", 0, 0o755),
                    ("d/.wh..", b'0', b"", 0, 0o644),
                ]),
            ),
        ];
        for (what, l) in cases {
            let lay = base.join(what);
            layout(&lay, &[l]);
            let e = store.import_layout(&lay, std::slice::from_ref(&name));
            assert!(e.is_err(), "{what}");
            assert!(staging_empty(&store), "{what}");
            assert!(store.ids().unwrap().is_empty(), "{what}");
            assert!(std::fs::read_dir(store.root().join("blobs/sha256"))
                .unwrap()
                .next()
                .is_none());
        }
        assert!(!Path::new("/tmp/x").exists() || std::fs::read("/tmp/x").unwrap() != b"x");
        // A blob that does not match its digest.
        let lay = base.join("tamper");
        layout(&lay, &[tar_of(&[("a", b'0', b"a", 0, 0o644)])]);
        let man: Index = parse_json(&lay.join("index.json")).unwrap();
        let m: Manifest = serde_json::from_slice(
            &std::fs::read(blob_file(&lay, &man.manifests[0].digest).unwrap()).unwrap(),
        )
        .unwrap();
        let lp = blob_file(&lay, &m.layers[0].digest).unwrap();
        let mut b = std::fs::read(&lp).unwrap();
        let n = b.len();
        b[n / 2] ^= 0xff;
        std::fs::write(&lp, b).unwrap();
        let e = store
            .import_layout(&lay, std::slice::from_ref(&name))
            .unwrap_err()
            .to_string();
        assert!(e.contains("digest"), "{e}");
        assert!(staging_empty(&store));
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn zstd_and_uncompressed_layers() {
        let base = tmp("zstd");
        let store = Store::open_at(&base.join("store")).unwrap();
        let l1 = tar_of(&[("a", b'0', b"zstd layer\n", 0, 0o644)]);
        let l2 = tar_of(&[("b", b'0', b"plain layer\n", 0, 0o644)]);
        let zst = |b: &[u8]| {
            ruzstd::encoding::compress_to_vec(b, ruzstd::encoding::CompressionLevel::Fastest)
        };
        let lay = base.join("z");
        layout_with(&lay, &[l1], zst);
        let id = store
            .import_layout(&lay, &[Reference::parse("localhost/z:1").unwrap()])
            .unwrap();
        let root = store.rootfs(&id).unwrap();
        assert_eq!(std::fs::read(root.join("a")).unwrap(), b"zstd layer\n");
        let lay = base.join("p");
        layout_with(&lay, &[l2], |b| b.to_vec());
        let id = store
            .import_layout(&lay, &[Reference::parse("localhost/p:1").unwrap()])
            .unwrap();
        let root = store.rootfs(&id).unwrap();
        assert_eq!(std::fs::read(root.join("b")).unwrap(), b"plain layer\n");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_pulled_image_is_checked_at_once_and_unpacked_at_first_use() {
        let base = tmp("lazy");
        let store = Store::open_at(&base.join("store")).unwrap();
        let body = vec![b'x'; 5000];
        let l1 = tar_of(&[("big", b'0', &body, 0, 0o644)]);
        let zst = |b: &[u8]| {
            ruzstd::encoding::compress_to_vec(b, ruzstd::encoding::CompressionLevel::Fastest)
        };
        // Sizes before unpacking come from the formats' headers.
        for (tag, compress) in [
            ("gz", gzip as fn(&[u8]) -> Vec<u8>),
            ("zst", zst),
            ("plain", |b: &[u8]| b.to_vec()),
        ] {
            let lay = base.join(tag);
            layout_with(&lay, std::slice::from_ref(&l1), compress);
            let name = Reference::parse(&format!("localhost/{tag}:1")).unwrap();
            let id = store.add_pulled(&lay, &name).unwrap();
            let rec = store.record(&id).unwrap();
            assert!(!store
                .tree_path(rec.chain.last().map(String::as_str))
                .exists());
            if tag == "zst" {
                // Streamed zstd frames do not say their size: the blob's.
                assert!(rec.size() > 0);
            } else {
                assert_eq!(rec.size(), l1.len() as u64, "{tag}");
            }
            let root = store.rootfs(&id).unwrap();
            assert_eq!(std::fs::read(root.join("big")).unwrap(), body);
            store.remove(&id, None).unwrap();
        }
        // Not a layer at all: refused by the pull itself.
        let lay = base.join("junk");
        layout_with(&lay, &[b"no tar here".to_vec()], |b| b.to_vec());
        let name = Reference::parse("localhost/junk:1").unwrap();
        assert!(store.add_pulled(&lay, &name).is_err());
        assert!(store.ids().unwrap().is_empty());
        assert!(staging_empty(&store));
        // A layer whose end is broken: refused when it is unpacked, with
        // nothing left of the tree, and again at the next try.
        fn cut_gzip(b: &[u8]) -> Vec<u8> {
            let mut g = gzip(b);
            g.truncate(g.len() - 40);
            g
        }
        let lay = base.join("broken");
        layout_with(&lay, std::slice::from_ref(&l1), cut_gzip);
        let name = Reference::parse("localhost/broken:1").unwrap();
        let id = store.add_pulled(&lay, &name).unwrap();
        for _ in 0..2 {
            let e = store.rootfs(&id).unwrap_err().to_string();
            assert!(
                e.contains("cannot be unpacked") && e.contains("sbox image rm"),
                "{e}"
            );
            assert_eq!(e.lines().count(), 1, "{e}");
            assert!(staging_empty(&store));
            assert!(std::fs::read_dir(store.root().join("trees"))
                .unwrap()
                .next()
                .is_none());
        }
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn short_names_find_stored_images_first() {
        let base = tmp("find");
        let store = Store::open_at(&base.join("store")).unwrap();
        let lay = base.join("l");
        layout(&lay, &[tar_of(&[("a", b'0', b"a", 0, 0o644)])]);
        let two =
            Registries::from_toml("unqualified-search-registries = [\"quay.io\", \"docker.io\"]")
                .unwrap();
        let full = Reference::parse("docker.io/library/x:1").unwrap();
        let id = store
            .import_layout(&lay, std::slice::from_ref(&full))
            .unwrap();
        // Stored: found although two registries could serve it.
        assert_eq!(store.find("x:1", &two).unwrap().unwrap(), id);
        assert_eq!(store.find(&id.hex()[..5], &two).unwrap().unwrap(), id);
        // Not stored: ambiguous, with the choices.
        let e = store.find("y", &two).unwrap_err().to_string();
        assert!(
            e.contains("quay.io/y:latest") && e.contains("docker.io/library/y:latest"),
            "{e}"
        );
        // One registry: the name to pull.
        let r = store
            .find("y", &Registries::default())
            .unwrap()
            .unwrap_err();
        assert_eq!(r.to_string(), "docker.io/library/y:latest");
        // A local name.
        store.tag(&id, &Reference::local("mine").unwrap()).unwrap();
        assert_eq!(store.find("mine", &two).unwrap().unwrap(), id);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_replaced_symlink_does_not_keep_its_old_owner() {
        let base = tmp("owner");
        let store = Store::open_at(&base.join("store")).unwrap();
        let lay = base.join("l");
        layout(
            &lay,
            &[
                tar_of(&[("l", b'2', b"a", 100, 0o777), ("m", b'2', b"a", 100, 0o777)]),
                tar_of(&[("l", b'2', b"b", 0, 0o777), (".wh.m", b'0', b"", 0, 0o644)]),
                tar_of(&[("m", b'2', b"c", 0, 0o777)]),
            ],
        );
        let id = store
            .import_layout(&lay, &[Reference::parse("localhost/o:1").unwrap()])
            .unwrap();
        let root = store.rootfs(&id).unwrap();
        let fd = sys::open_dir_path(&root).unwrap();
        for n in [c"l", c"m"] {
            let st = sys::fstatat(fd.as_fd(), n).unwrap();
            assert_eq!(
                tree::lower_override(fd.as_fd(), n, &st).unwrap().uid,
                0,
                "{n:?}"
            );
        }
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn ids_from_pax_extensions() {
        let base = tmp("pax");
        let store = Store::open_at(&base.join("store")).unwrap();
        let lay = base.join("l");
        let pax = b"15 uid=3000000\n15 gid=3000001\n";
        layout(
            &lay,
            &[tar_of(&[
                ("PaxHeaders/big", b'x', pax, 0, 0o644),
                ("big", b'0', b"x", 0, 0o644),
            ])],
        );
        let id = store
            .import_layout(&lay, &[Reference::parse("localhost/pax:1").unwrap()])
            .unwrap();
        let root = store.rootfs(&id).unwrap();
        let fd = sys::open_dir_path(&root).unwrap();
        let st = sys::fstatat(fd.as_fd(), c"big").unwrap();
        let o = tree::lower_override(fd.as_fd(), c"big", &st).unwrap();
        assert_eq!((o.uid, o.gid), (3_000_000, 3_000_001));
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn device_nodes_are_left_out_with_a_note() {
        let base = tmp("dev");
        let store = Store::open_at(&base.join("store")).unwrap();
        let lay = base.join("l");
        layout(
            &lay,
            &[tar_of(&[
                ("dev/", b'5', b"", 0, 0o755),
                ("dev/null", b'3', b"", 0, 0o666),
                ("f", b'0', b"f", 0, 0o644),
            ])],
        );
        let (id, notes) = store
            .import_layout_noting(&lay, &[Reference::parse("localhost/dev:1").unwrap()])
            .unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("1 device node(s) left out"), "{notes:?}");
        let root = store.rootfs(&id).unwrap();
        assert!(root.join("f").exists() && !root.join("dev/null").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
