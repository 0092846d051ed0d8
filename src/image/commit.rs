//! `sbox commit --image NAME SANDBOX`: a stopped named sandbox's upper
//! layer becomes a new layer (tar, gzip; deletions as OCI whiteouts,
//! owners and modes as presented inside) on top of the image it was made
//! from, stored under NAME.

use std::collections::HashMap;
use std::ffi::{CStr, OsStr};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::run::SBOX_FILES;

use sha2::{Digest, Sha256};

use super::error::{ImageError, IoCtx};
use super::reference::Reference;
use super::store::{ImageId, Store};
use crate::rootfs::overlay::sys;
use crate::rootfs::upper::{self, Ids, Override};

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Writer<'a, W: Write> {
    tar: tar::Builder<W>,
    ids: &'a Ids,
    /// (dev, ino) of files already written → their name in the archive.
    links: HashMap<(u64, u64), PathBuf>,
    /// Directories (relative) that are only a bind's mount point.
    scaffold: Vec<PathBuf>,
}

fn header(kind: tar::EntryType, o: &Override, st: &libc::stat64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_uid(o.uid.into());
    h.set_gid(o.gid.into());
    h.set_mode(o.mode & 0o7777);
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    h
}

impl<W: Write> Writer<'_, W> {
    fn add(&mut self, h: &mut tar::Header, path: &Path, data: impl io::Read) -> io::Result<()> {
        self.tar.append_data(h, path, data)
    }

    fn walk(&mut self, dir: BorrowedFd<'_>, rel: &Path) -> io::Result<()> {
        let opaque = upper::is_opaque(dir);
        if opaque && !rel.as_os_str().is_empty() {
            let mut h = header(
                tar::EntryType::Regular,
                &Override {
                    uid: 0,
                    gid: 0,
                    mode: 0o644,
                },
                &sys::fstat(dir)?,
            );
            self.add(&mut h, &rel.join(".wh..wh..opq"), io::empty())?;
        }
        let mut names = crate::changes::names(dir)?;
        names.sort();
        for name in names {
            self.entry(dir, rel, &name)?;
        }
        Ok(())
    }

    fn entry(&mut self, dir: BorrowedFd<'_>, rel: &Path, name: &CStr) -> io::Result<()> {
        let st = sys::fstatat(dir, name)?;
        let path = rel.join(OsStr::from_bytes(name.to_bytes()));
        if upper::is_whiteout_at(dir, name, &st) {
            let mut wh = b".wh.".to_vec();
            wh.extend_from_slice(name.to_bytes());
            let o = Override {
                uid: 0,
                gid: 0,
                mode: 0o644,
            };
            let mut h = header(tar::EntryType::Regular, &o, &st);
            return self.add(&mut h, &rel.join(OsStr::from_bytes(&wh)), io::empty());
        }
        let kind = st.st_mode & libc::S_IFMT;
        let ovr = if upper::can_have_xattrs(kind) {
            let fd = sys::open_beneath(dir, name.to_bytes(), libc::O_PATH, 0)?;
            upper::read_override(fd.as_fd())
        } else {
            upper::read_entry_owner(dir, name.to_bytes()).map(|(uid, gid)| Override {
                uid,
                gid,
                mode: st.st_mode & 0o7777,
            })
        };
        let o = upper::presented_override(&st, ovr.as_ref(), self.ids);
        match kind {
            libc::S_IFDIR => {
                if !self.scaffold.contains(&path) {
                    let mut h = header(tar::EntryType::Directory, &o, &st);
                    self.add(&mut h, &path, io::empty())?;
                }
                let fd =
                    sys::open_beneath(dir, name.to_bytes(), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                self.walk(fd.as_fd(), &path)?;
            }
            libc::S_IFREG => {
                if st.st_size == 0
                    && SBOX_FILES
                        .iter()
                        .any(|f| Path::new("/").join(&path) == Path::new(f))
                {
                    return Ok(());
                }
                if st.st_nlink > 1 {
                    if let Some(first) = self.links.get(&(st.st_dev, st.st_ino)).cloned() {
                        let mut h = header(tar::EntryType::Link, &o, &st);
                        return self.tar.append_link(&mut h, &path, &first);
                    }
                    self.links.insert((st.st_dev, st.st_ino), path.clone());
                }
                let fd = sys::open_beneath(dir, name.to_bytes(), libc::O_RDONLY, 0)?;
                let f = std::fs::File::from(fd);
                // The size of what is read now, not of a stat before.
                let now = sys::fstat(f.as_fd())?;
                if now.st_mode & libc::S_IFMT != libc::S_IFREG {
                    return Err(io::Error::from_raw_os_error(libc::EINVAL));
                }
                let mut h = header(tar::EntryType::Regular, &o, &now);
                h.set_size(now.st_size as u64);
                use std::io::Read;
                self.add(&mut h, &path, f.take(now.st_size as u64))?;
            }
            libc::S_IFLNK => {
                let target = sys::readlinkat(dir, name)?;
                let mut h = header(tar::EntryType::Symlink, &o, &st);
                self.tar
                    .append_link(&mut h, &path, OsStr::from_bytes(&target))?;
            }
            libc::S_IFIFO => {
                let mut h = header(tar::EntryType::Fifo, &o, &st);
                self.add(&mut h, &path, io::empty())?;
            }
            _ => log::info!(
                "commit --image: {} skipped (a socket or device)",
                path.display()
            ),
        }
        Ok(())
    }
}

/// Writes the upper layer at `upper` as a gzip-compressed layer to `out`:
/// returns (digest, size, diff_id).
pub fn layer_from_upper(
    upper: &Path,
    ids: &Ids,
    scaffold: &[PathBuf],
    out: &Path,
) -> Result<(String, u64, String), ImageError> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .ctx(|| format!("writing {}", out.display()))?;
    let gz = flate2::write::GzEncoder::new(io::BufWriter::new(f), flate2::Compression::default());
    let hw = HashingWriter {
        inner: gz,
        hasher: Sha256::new(),
    };
    let mut w = Writer {
        tar: tar::Builder::new(hw),
        ids,
        links: HashMap::new(),
        scaffold: scaffold
            .iter()
            .map(|p| p.strip_prefix("/").unwrap_or(p).to_path_buf())
            .collect(),
    };
    w.tar.mode(tar::HeaderMode::Complete);
    let what = || format!("reading the sandbox's changes in {}", upper.display());
    let up = sys::open_dir_path(upper).ctx(what)?;
    let up = sys::open_beneath(up.as_fd(), b"", libc::O_RDONLY | libc::O_DIRECTORY, 0).ctx(what)?;
    w.walk(up.as_fd(), Path::new("")).ctx(what)?;
    let hw = w
        .tar
        .into_inner()
        .ctx(|| format!("writing {}", out.display()))?;
    let diff_id = format!("sha256:{}", hex(&hw.hasher.finalize()));
    let mut bw = hw
        .inner
        .finish()
        .ctx(|| format!("writing {}", out.display()))?;
    bw.flush().ctx(|| format!("writing {}", out.display()))?;
    drop(bw);
    let (digest, size) = super::store::file_digest(out)?;
    Ok((digest, size, diff_id))
}

/// Makes image `name` of the upper layer `upper` on top of image `base`
/// (without the mount points of `places`, the directories bound there).
pub fn commit(
    store: &Store,
    base: &ImageId,
    upper: &Path,
    ids: &Ids,
    places: &[std::path::PathBuf],
    name: &Reference,
    comment: &str,
) -> Result<ImageId, ImageError> {
    let rec = store.record(base)?;
    let mut config = store.config_json(base)?;
    let staging = store.staging()?;
    let l = staging.path().join("layout");
    std::fs::create_dir_all(l.join("blobs/sha256")).ctx(|| format!("making {}", l.display()))?;
    std::fs::write(l.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .ctx(|| format!("writing {}", l.display()))?;
    let mut layers = Vec::new();
    for lr in &rec.layers {
        let src = store.blob_path(&lr.digest);
        let dst = l
            .join("blobs/sha256")
            .join(lr.digest.trim_start_matches("sha256:"));
        if !dst.exists() {
            std::fs::hard_link(&src, &dst)
                .or_else(|_| std::fs::copy(&src, &dst).map(drop))
                .ctx(|| format!("copying {}", src.display()))?;
        }
        layers.push((lr.digest.clone(), lr.size, lr.media_type.clone()));
    }
    let tmp = staging.path().join("layer.tar.gz");
    let scaffold = super::run::scaffold_of(upper, &store.rootfs(base)?, places);
    let (digest, size, diff_id) = layer_from_upper(upper, ids, &scaffold, &tmp)?;
    let dst = l
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    std::fs::rename(&tmp, &dst).ctx(|| format!("writing {}", dst.display()))?;
    layers.push((
        digest,
        size,
        format!("{}+gzip", super::store::MEDIA_OCI_LAYER),
    ));
    let now = super::rfc3339(super::now());
    let bad = |m: &str| ImageError::Config(format!("image {}: {m}", base.short()));
    let obj = config
        .as_object_mut()
        .ok_or_else(|| bad("its config is not an object"))?;
    obj.insert("created".into(), now.clone().into());
    let rootfs = obj
        .get_mut("rootfs")
        .and_then(|r| r.get_mut("diff_ids"))
        .and_then(|d| d.as_array_mut())
        .ok_or_else(|| bad("its config has no rootfs.diff_ids"))?;
    rootfs.push(diff_id.into());
    let hist = obj
        .entry("history")
        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
    if let Some(h) = hist.as_array_mut() {
        h.push(serde_json::json!({"created": now, "created_by": comment}));
    }
    let cb = serde_json::to_vec(&config).map_err(|e| ImageError::Other(e.to_string()))?;
    super::import::finish_layout(&l, &cb, &layers)?;
    store.import_layout(&l, std::slice::from_ref(name))
}
