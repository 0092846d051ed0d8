//! What a sandbox changed outside its bound directories, read from its
//! upper layer (the kernel overlayfs `userxattr` layout: 0/0 character
//! devices or `user.overlay.whiteout` files for deletions,
//! `user.overlay.opaque` for replaced directories), like `podman diff`.

use serde::Serialize;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
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
    /// The path inside the sandbox (= on the host).
    pub path: PathBuf,
}

fn is_whiteout(p: &Path, md: &std::fs::Metadata) -> bool {
    (md.file_type().is_char_device() && md.rdev() == 0)
        || (md.is_file()
            && md.len() == 0
            && crate::sys::lgetxattr(p, "user.overlay.whiteout").is_some())
}

/// Every change recorded in `upper`, sorted by path; `host_root` is where
/// the lower layer is (normally "/").
pub fn list(upper: &Path, host_root: &Path) -> Vec<Change> {
    let mut out = Vec::new();
    walk(upper, upper, host_root, false, &mut out);
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn walk(upper: &Path, dir: &Path, host_root: &Path, added: bool, out: &mut Vec<Change>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let Ok(rel) = p.strip_prefix(upper) else {
            continue;
        };
        let inside = Path::new("/").join(rel);
        let host = host_root.join(rel);
        if is_whiteout(&p, &md) {
            if !added {
                out.push(Change {
                    kind: Kind::D,
                    path: inside,
                });
            }
            continue;
        }
        let on_host = !added && std::fs::symlink_metadata(&host).is_ok();
        if md.is_dir() {
            let opaque = crate::sys::lgetxattr(&p, "user.overlay.opaque")
                .is_some_and(|v| v.first() == Some(&b'y'));
            if !on_host {
                out.push(Change {
                    kind: Kind::A,
                    path: inside,
                });
                walk(upper, &p, host_root, true, out);
            } else {
                if opaque || dir_meta_changed(&p, &host) {
                    out.push(Change {
                        kind: Kind::C,
                        path: inside.clone(),
                    });
                }
                if opaque {
                    // Everything the host had below is gone inside.
                    if let Ok(hrd) = std::fs::read_dir(&host) {
                        for h in hrd.flatten() {
                            if std::fs::symlink_metadata(p.join(h.file_name())).is_err() {
                                out.push(Change {
                                    kind: Kind::D,
                                    path: inside.join(h.file_name()),
                                });
                            }
                        }
                    }
                }
                walk(upper, &p, host_root, false, out);
            }
        } else {
            out.push(Change {
                kind: if on_host { Kind::C } else { Kind::A },
                path: inside,
            });
        }
    }
}

/// A directory copied up only to hold changed children is not a change of
/// its own; one whose mode or owner changed inside is.
fn dir_meta_changed(upper: &Path, host: &Path) -> bool {
    let Some(v) = crate::sys::lgetxattr(upper, "user.containers.override_stat") else {
        return false;
    };
    let Ok(h) = std::fs::symlink_metadata(host) else {
        return true;
    };
    let text = String::from_utf8_lossy(&v);
    let mut f = text.split(':');
    let (Some(uid), Some(gid), Some(mode)) = (f.next(), f.next(), f.next()) else {
        return false;
    };
    let map = |id: u32| {
        if id == 0 || id == nix::unistd::getuid().as_raw() {
            0
        } else {
            id
        }
    };
    uid.parse::<u32>().ok() != Some(map(h.uid()))
        || gid.parse::<u32>().ok()
            != Some(
                if h.gid() == 0 || h.gid() == nix::unistd::getgid().as_raw() {
                    0
                } else {
                    h.gid()
                },
            )
        || u32::from_str_radix(mode.trim_start_matches("0o"), 8).ok() != Some(h.mode() & 0o7777)
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
        let c =
            std::ffi::CString::new(upper.join("etc/gone").to_string_lossy().as_bytes()).expect("c");
        // SAFETY (test): setting a user xattr on a file we created.
        let r = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                c"user.overlay.whiteout".as_ptr(),
                std::ptr::null(),
                0,
                0,
            )
        };
        let changes = list(&upper, &host);
        let want_gone = if r == 0 {
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
