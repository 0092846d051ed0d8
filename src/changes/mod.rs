//! What a sandbox changed outside its bound directories, read from its
//! upper layer (its format: `crate::rootfs::upper`), like `podman diff`;
//! and copying chosen changes onto the host (`sbox commit`, in `commit`).
//! How names and modes are shown: `show`.
//!
//! The upper layer is written by the sandbox, and so may be any host
//! directory it could reach (its project, another sandbox's project): both
//! sides are walked one component at a time from directory fds, never
//! following a symlink (`openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`, `*at` calls with `AT_SYMLINK_NOFOLLOW`). Only the
//! directories leading to a path the user names are resolved the host's
//! way, once. A file is read through an fd first checked to be a regular
//! file (a fifo, socket or device is never opened) and written to an
//! unnamed `O_TMPFILE` (or a random name made `O_EXCL`) that is renamed
//! into place in the same directory fd.

mod commit;
mod show;

pub use commit::{Commit, Step};
pub(crate) use show::path_json;
pub use show::{escape, json_for_terminal, mode_string, show};

use crate::rootfs::overlay::sys;
use crate::rootfs::upper::{self, Ids};
use serde::Serialize;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    /// Added: not on the host.
    A,
    /// Changed: on the host, different inside.
    C,
    /// Deleted inside.
    D,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub kind: Kind,
    /// The path inside the sandbox (= on the host). In JSON: a string when
    /// it is valid UTF-8, else the array of its bytes.
    #[serde(serialize_with = "path_json")]
    pub path: PathBuf,
}

pub(crate) fn file_type(st: &libc::stat64) -> u32 {
    st.st_mode & libc::S_IFMT
}

pub(crate) fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// The names in the directory `dir` (an fd of any kind), without `.`
/// and `..`.
pub(crate) fn names(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let fd = sys::open_beneath(dir, b"", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut d = nix::dir::Dir::from(fd).map_err(io::Error::from)?;
    let mut v = Vec::new();
    for e in d.iter() {
        let e = e.map_err(io::Error::from)?;
        let n = e.file_name();
        if n != c"." && n != c".." {
            v.push(n.to_owned());
        }
    }
    Ok(v)
}

/// Every change recorded in `upper`, sorted by path; `host_root` is where
/// the lower layer is (normally "/"), `ids` how the sandbox's overlay
/// showed host ids ([`Ids::of_sandbox`]). Neither side's symlinks are
/// followed: a host path is compared as the sandbox's overlay saw it.
pub fn list(upper: &Path, host_root: &Path, ids: &Ids) -> Vec<Change> {
    let mut out = Vec::new();
    if let (Ok(up), Ok(host)) = (sys::open_dir_path(upper), sys::open_dir_path(host_root)) {
        walk(
            up.as_fd(),
            Some(host.as_fd()),
            Path::new("/"),
            ids,
            &mut out,
        );
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The size in bytes of what each change holds in `upper` (its length,
/// for a file or symlink added or changed; 0 for a directory or a
/// deletion), reached without following a symlink.
pub fn sizes(upper: &Path, changes: &[Change]) -> Vec<u64> {
    let up = sys::open_dir_path(upper).ok();
    changes
        .iter()
        .map(|c| {
            let Some(up) = &up else { return 0 };
            if c.kind == Kind::D {
                return 0;
            }
            let rel = c.path.strip_prefix("/").unwrap_or(&c.path);
            sys::open_beneath(up.as_fd(), rel.as_os_str().as_bytes(), libc::O_PATH, 0)
                .and_then(|fd| sys::fstat(fd.as_fd()))
                .map_or(0, |st| match file_type(&st) {
                    libc::S_IFREG | libc::S_IFLNK => st.st_size as u64,
                    _ => 0,
                })
        })
        .collect()
}

/// The bytes the files of an upper layer hold (their lengths), walked
/// from directory fds without following a symlink.
pub fn upper_bytes(upper: &Path) -> u64 {
    fn walk(dir: BorrowedFd<'_>) -> u64 {
        let mut total = 0;
        for name in names(dir).unwrap_or_default() {
            let Ok(st) = sys::fstatat(dir, &name) else {
                continue;
            };
            match file_type(&st) {
                libc::S_IFDIR => {
                    if let Ok(fd) =
                        sys::open_beneath(dir, name.to_bytes(), libc::O_PATH | libc::O_DIRECTORY, 0)
                    {
                        total += walk(fd.as_fd());
                    }
                }
                libc::S_IFREG | libc::S_IFLNK => total += st.st_size as u64,
                _ => {}
            }
        }
        total
    }
    sys::open_dir_path(upper).map_or(0, |fd| walk(fd.as_fd()))
}

/// `up`: a directory of the upper layer; `host`: the same directory on the
/// host, `None` when there is none (everything below is added).
fn walk(
    up: BorrowedFd<'_>,
    host: Option<BorrowedFd<'_>>,
    inside: &Path,
    ids: &Ids,
    out: &mut Vec<Change>,
) {
    let Ok(entries) = names(up) else {
        return;
    };
    for name in entries {
        let Ok(st) = sys::fstatat(up, &name) else {
            continue;
        };
        let path = inside.join(OsStr::from_bytes(name.to_bytes()));
        if upper::is_whiteout_at(up, &name, &st) {
            if host.is_some() {
                out.push(Change {
                    kind: Kind::D,
                    path,
                });
            }
            continue;
        }
        let on_host = host.and_then(|h| sys::fstatat(h, &name).ok().map(|st| (h, st)));
        if file_type(&st) != libc::S_IFDIR {
            out.push(Change {
                kind: if on_host.is_some() { Kind::C } else { Kind::A },
                path,
            });
            continue;
        }
        let Ok(ufd) = sys::open_beneath(up, name.to_bytes(), libc::O_PATH | libc::O_DIRECTORY, 0)
        else {
            continue;
        };
        let opaque = upper::is_opaque(ufd.as_fd());
        match on_host {
            None => {
                out.push(Change {
                    kind: Kind::A,
                    path: path.clone(),
                });
                walk(ufd.as_fd(), None, &path, ids, out);
            }
            Some((h, hst)) if file_type(&hst) == libc::S_IFDIR => {
                let hfd =
                    sys::open_beneath(h, name.to_bytes(), libc::O_PATH | libc::O_DIRECTORY, 0).ok();
                if opaque || upper::dir_meta_changed(ufd.as_fd(), &st, &hst, ids) {
                    out.push(Change {
                        kind: Kind::C,
                        path: path.clone(),
                    });
                }
                if let (true, Some(hfd)) = (opaque, &hfd) {
                    // Everything the host had below is gone inside.
                    for n in names(hfd.as_fd()).unwrap_or_default() {
                        if sys::fstatat(ufd.as_fd(), &n).is_err() {
                            out.push(Change {
                                kind: Kind::D,
                                path: path.join(OsStr::from_bytes(n.to_bytes())),
                            });
                        }
                    }
                }
                walk(
                    ufd.as_fd(),
                    hfd.as_ref().map(|f| f.as_fd()),
                    &path,
                    ids,
                    out,
                );
            }
            Some(_) => {
                // A directory inside where the host has something else.
                out.push(Change {
                    kind: Kind::C,
                    path: path.clone(),
                });
                walk(ufd.as_fd(), None, &path, ids, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_changed_and_deleted() {
        let base = std::env::temp_dir().join(format!("sbox-changes-{}", std::process::id()));
        let host = base.join("host");
        let upper = base.join("upper");
        for d in [
            host.join("etc"),
            host.join("usr/share/doc"),
            upper.join("etc"),
            upper.join("opt/new"),
        ] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(host.join("etc/hosts"), "a").expect("w");
        std::fs::write(host.join("etc/gone"), "a").expect("w");
        std::fs::write(upper.join("etc/hosts"), "b").expect("w");
        std::fs::write(upper.join("opt/new/f"), "n").expect("w");
        // An xattr whiteout (the format an unprivileged writer can make).
        std::fs::write(upper.join("etc/gone"), "").expect("w");
        let set = crate::sys::lsetxattr(&upper.join("etc/gone"), c"user.overlay.whiteout", b"");
        let me = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let ids = Ids::overlay(me, (0, 0), None);
        let changes = list(&upper, &host, &ids);
        let want_gone = if set.is_ok() {
            vec![Change {
                kind: Kind::D,
                path: "/etc/gone".into(),
            }]
        } else {
            vec![Change {
                kind: Kind::C,
                path: "/etc/gone".into(),
            }]
        };
        let mut expected = want_gone;
        expected.push(Change {
            kind: Kind::C,
            path: "/etc/hosts".into(),
        });
        expected.push(Change {
            kind: Kind::A,
            path: "/opt".into(),
        });
        expected.push(Change {
            kind: Kind::A,
            path: "/opt/new".into(),
        });
        expected.push(Change {
            kind: Kind::A,
            path: "/opt/new/f".into(),
        });
        assert_eq!(changes, expected);
        std::fs::remove_dir_all(&base).ok();
    }
}
