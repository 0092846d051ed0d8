//! Integration tests: a passthrough mount of a host directory, as binds
//! that hold hidden paths are served, mounted and served in-process (needs
//! root).

mod overlayfix;

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use overlayfix::{errno, get_xattr, list_xattr, renameat2, set_xattr};
use sbox::rootfs::overlay::{
    mount_options, serve_passthrough, IdMap, OverlayServer, PassthroughConfig,
};

static N: AtomicU64 = AtomicU64::new(0);

/// A host directory `dir` served on `mnt`.
struct Pt {
    base: PathBuf,
    dir: PathBuf,
    mnt: PathBuf,
    server: Option<OverlayServer>,
}

impl Pt {
    fn new(name: &str, hidden: &[&str], readonly: bool, build: impl FnOnce(&Path)) -> Pt {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let base = std::env::temp_dir().join(format!("sbox-pt-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let (dir, mnt) = (base.join("dir"), base.join("mnt"));
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all(&mnt).unwrap();
        build(&dir);
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .expect("open /dev/fuse");
        let opts = mount_options(dev.as_raw_fd());
        nix::mount::mount(
            Some("sbox-test"),
            &mnt,
            Some("fuse.sbox"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .expect("mount fuse");
        let cfg = PassthroughConfig {
            dir: dir.clone(),
            readonly,
            hidden: hidden.iter().map(PathBuf::from).collect(),
            empty: vec![PathBuf::from("/state")],
            caller_uid: 0,
            caller_gid: 0,
            caller_inside: (0, 0),
            ids: IdMap {
                // A subordinate range the tests can chown to as root and,
                // as an ordinary user, in their own user namespace (which
                // maps ids below 65536 only).
                uid: vec![(0, 0, 1), (1, 10_000, 20_000)],
                gid: vec![(0, 0, 1), (1, 10_000, 20_000)],
            },
            threads: 2,
            timeout: Duration::ZERO,
        };
        let server = serve_passthrough(OwnedFd::from(dev), cfg).expect("serve");
        Pt {
            base,
            dir,
            mnt,
            server: Some(server),
        }
    }

    fn m(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
    fn d(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn finish(mut self) {
        nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH).expect("umount");
        if let Some(s) = self.server.take() {
            s.wait().expect("server ends cleanly");
        }
    }
}

impl Drop for Pt {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
            let _ = s.wait();
        }
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn names(dir: &Path) -> HashSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Every entry below `dir` on the host (relative paths).
fn host_tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                todo.push(p);
            }
        }
    }
    out
}

#[test]
fn hidden_names_are_refused_whether_or_not_they_exist() {
    let pt = Pt::new("hidden", &["/.ssh", "/.netrc", "/.config/gh"], false, |d| {
        fs::create_dir_all(d.join(".ssh")).unwrap();
        fs::write(d.join(".ssh/id_ed25519"), b"SECRET").unwrap();
        fs::create_dir_all(d.join(".config")).unwrap();
        fs::write(d.join(".config/other"), b"other").unwrap();
    });
    // What exists at the start.
    assert_eq!(errno(fs::metadata(pt.m(".ssh"))), libc::ENOENT);
    assert_eq!(errno(fs::read(pt.m(".ssh/id_ed25519"))), libc::ENOENT);
    assert_eq!(names(&pt.mnt), [".config"].map(String::from).into());
    // What the host makes later, while the mount is in use.
    fs::write(pt.d(".netrc"), b"machine x password SECRET").unwrap();
    fs::create_dir_all(pt.d(".config/gh")).unwrap();
    fs::write(pt.d(".config/gh/hosts.yml"), b"oauth_token: SECRET").unwrap();
    fs::write(pt.d("later"), b"visible").unwrap();
    assert_eq!(errno(fs::read(pt.m(".netrc"))), libc::ENOENT);
    assert_eq!(errno(fs::read(pt.m(".config/gh/hosts.yml"))), libc::ENOENT);
    assert_eq!(errno(fs::metadata(pt.m(".config/gh"))), libc::ENOENT);
    assert_eq!(fs::read(pt.m("later")).unwrap(), b"visible");
    assert_eq!(
        names(&pt.mnt),
        [".config", "later"].map(String::from).into()
    );
    assert_eq!(names(&pt.m(".config")), ["other"].map(String::from).into());
    // Nor can they be made, or reached by moving what holds them.
    let netrc = pt.m(".netrc");
    assert_eq!(errno(fs::write(&netrc, b"x")), libc::EACCES);
    assert_eq!(errno(fs::create_dir(pt.m(".ssh"))), libc::EACCES);
    assert_eq!(
        errno(std::os::unix::fs::symlink("/etc", &netrc)),
        libc::EACCES
    );
    assert_eq!(errno(fs::hard_link(pt.m("later"), &netrc)), libc::EACCES);
    assert_eq!(errno(fs::rename(pt.m("later"), &netrc)), libc::EACCES);
    assert_eq!(
        errno(fs::rename(pt.m(".config"), pt.m("moved"))),
        libc::EXDEV
    );
    fs::remove_file(pt.m(".config/other")).unwrap();
    assert_eq!(errno(fs::remove_dir(pt.m(".config"))), libc::EBUSY);
    // Nor put in place by moving a directory the sandbox made: its own
    // `gh` would become the host's ~/.config/gh, where the host would then
    // put its credentials.
    fs::create_dir_all(pt.m("a/gh")).unwrap();
    assert_eq!(errno(fs::rename(pt.m("a"), pt.m(".config"))), libc::EXDEV);
    fs::remove_dir_all(pt.d(".config")).unwrap();
    assert_eq!(errno(fs::rename(pt.m("a"), pt.m(".config"))), libc::EXDEV);
    // (Whatever it holds: `mv` copies; making the directory is fine.)
    fs::rename(pt.m("a/gh"), pt.m("a/not-gh")).unwrap();
    assert_eq!(errno(fs::rename(pt.m("a"), pt.m(".config"))), libc::EXDEV);
    // Nor can a symlink there send them elsewhere.
    assert_eq!(
        errno(std::os::unix::fs::symlink("a", pt.m(".config"))),
        libc::EACCES
    );
    std::os::unix::fs::symlink("a", pt.m("link")).unwrap();
    assert_eq!(
        errno(fs::rename(pt.m("link"), pt.m(".config"))),
        libc::EXDEV
    );
    fs::create_dir(pt.m(".config")).unwrap();
    fs::rename(pt.m("a/not-gh"), pt.m(".config/not-gh")).unwrap();
    assert!(pt.d(".config/not-gh").is_dir());
    // sbox's own state shows empty.
    fs::create_dir_all(pt.d("state/sandboxes")).unwrap();
    assert!(names(&pt.m("state")).is_empty());
    // The host copies are untouched.
    assert_eq!(fs::read(pt.d(".ssh/id_ed25519")).unwrap(), b"SECRET");
    assert_eq!(
        fs::read(pt.d(".netrc")).unwrap(),
        b"machine x password SECRET"
    );
    pt.finish();
}

#[test]
fn changes_land_in_the_host_directory_in_place() {
    let pt = Pt::new("changes", &["/.netrc"], false, |d| {
        fs::write(d.join("f"), b"host").unwrap();
        fs::create_dir(d.join("sub")).unwrap();
        // A 0/0 character device is not a whiteout here.
        nix::sys::stat::mknod(
            &d.join("chr"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
    });
    assert!(fs::symlink_metadata(pt.m("chr"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(names(&pt.mnt).contains("chr"));

    // New entries get the mode asked for, whatever the server's umask.
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(pt.m("new"))
        .unwrap();
    f.write_all(b"from inside").unwrap();
    drop(f);
    assert_eq!(fs::read(pt.d("new")).unwrap(), b"from inside");
    assert_eq!(fs::metadata(pt.d("new")).unwrap().mode() & 0o7777, 0o640);
    fs::DirBuilder::new()
        .mode(0o750)
        .create(pt.m("newdir"))
        .unwrap();
    assert_eq!(fs::metadata(pt.d("newdir")).unwrap().mode() & 0o7777, 0o750);
    std::os::unix::fs::symlink("f", pt.m("link")).unwrap();
    assert_eq!(fs::read_link(pt.d("link")).unwrap(), Path::new("f"));
    fs::hard_link(pt.m("f"), pt.m("sub/hard")).unwrap();
    assert_eq!(fs::metadata(pt.d("f")).unwrap().nlink(), 2);

    // Writes, truncation, renames, removal: on the host at once.
    fs::write(pt.m("f"), b"changed").unwrap();
    assert_eq!(fs::read(pt.d("sub/hard")).unwrap(), b"changed");
    fs::rename(pt.m("new"), pt.m("sub/renamed")).unwrap();
    assert!(pt.d("sub/renamed").exists() && !pt.d("new").exists());
    renameat2(&pt.m("f"), &pt.m("newdir"), libc::RENAME_EXCHANGE).unwrap();
    assert!(pt.d("f").is_dir() && pt.d("newdir").is_file());
    assert_eq!(
        errno(renameat2(
            &pt.m("link"),
            &pt.m("newdir"),
            libc::RENAME_NOREPLACE
        )),
        libc::EEXIST
    );
    fs::remove_file(pt.m("sub/hard")).unwrap();
    fs::remove_dir(pt.m("f")).unwrap();
    assert!(!pt.d("f").exists() && !pt.d("sub/hard").exists());

    // User xattrs are the host file's; sbox's own are off limits.
    set_xattr(&pt.m("newdir"), "user.test", b"v");
    assert_eq!(get_xattr(&pt.d("newdir"), "user.test").unwrap(), b"v");
    let r = xattr::set(
        &pt.m("newdir"),
        "user.containers.override_stat",
        b"0:0:0777",
    );
    assert_eq!(r, libc::EPERM);

    // The host's changes show at once (no cache on a bind).
    fs::write(pt.d("sub/renamed"), b"host again, longer").unwrap();
    assert_eq!(
        fs::read(pt.m("sub/renamed")).unwrap(),
        b"host again, longer"
    );

    // Nothing of the overlay's machinery was left in the directory.
    let tree = host_tree(&pt.dir);
    assert!(tree.iter().all(|p| !p.contains("#sbox")), "{tree:?}");
    for p in ["sub", "newdir", "sub/renamed", "link"] {
        let l = list_xattr(&pt.d(p));
        assert!(
            !l.iter().any(|x| x.starts_with("user.overlay.")),
            "{p}: {l:?}"
        );
    }
    pt.finish();
}

mod xattr {
    /// setxattr(2) on a path: 0 or the errno.
    pub fn set(p: &std::path::Path, name: &str, value: &[u8]) -> i32 {
        let c = super::overlayfix::cpath(p);
        let n = std::ffi::CString::new(name).unwrap();
        // SAFETY: valid strings and buffer.
        let r = unsafe {
            libc::setxattr(
                c.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if r == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        }
    }
}

#[test]
fn chmod_is_real_and_chown_is_kept_in_an_xattr() {
    let pt = Pt::new("owner", &[], false, |d| {
        fs::write(d.join("mine"), b"x").unwrap();
        fs::set_permissions(d.join("mine"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(d.join("sub"), b"x").unwrap();
        std::os::unix::fs::chown(d.join("sub"), Some(10_999), Some(10_999)).unwrap();
        fs::write(d.join("stranger"), b"x").unwrap();
        std::os::unix::fs::chown(d.join("stranger"), Some(5000), Some(5000)).unwrap();
    });
    // Host owners through the id maps, as a bind mount shows them.
    let ids = |p: &str| {
        let m = fs::metadata(pt.m(p)).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(ids("mine"), (0, 0));
    assert_eq!(ids("sub"), (1000, 1000));
    assert_eq!(ids("stranger"), (65534, 65534));

    fs::set_permissions(pt.m("mine"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(fs::metadata(pt.d("mine")).unwrap().mode() & 0o7777, 0o600);
    assert!(get_xattr(&pt.d("mine"), "user.containers.override_stat").is_none());

    std::os::unix::fs::chown(pt.m("mine"), Some(1234), Some(55)).unwrap();
    assert_eq!(ids("mine"), (1234, 55));
    let host = fs::metadata(pt.d("mine")).unwrap();
    assert_eq!((host.uid(), host.gid()), (0, 0), "the host owner stays");
    assert_eq!(
        get_xattr(&pt.d("mine"), "user.containers.override_stat").unwrap(),
        b"1234:55:0600"
    );
    // The mode stays the host's own.
    fs::set_permissions(pt.m("mine"), fs::Permissions::from_mode(0o640)).unwrap();
    let m = fs::metadata(pt.m("mine")).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (1234, 0o640));
    assert_eq!(fs::metadata(pt.d("mine")).unwrap().mode() & 0o7777, 0o640);
    // Back to the owner the host file has: nothing kept.
    std::os::unix::fs::chown(pt.m("mine"), Some(0), Some(0)).unwrap();
    assert_eq!(ids("mine"), (0, 0));
    assert!(get_xattr(&pt.d("mine"), "user.containers.override_stat").is_none());
    pt.finish();
}

#[test]
fn a_read_only_mount_refuses_every_change() {
    // Mounted read-write: the server itself refuses.
    let pt = Pt::new("ro", &["/.netrc"], true, |d| {
        fs::write(d.join("f"), b"host").unwrap();
        fs::create_dir(d.join("sub")).unwrap();
    });
    assert_eq!(fs::read(pt.m("f")).unwrap(), b"host");
    assert_eq!(errno(fs::write(pt.m("f"), b"x")), libc::EROFS);
    assert_eq!(errno(fs::write(pt.m("g"), b"x")), libc::EROFS);
    assert_eq!(errno(fs::create_dir(pt.m("d"))), libc::EROFS);
    assert_eq!(errno(fs::remove_file(pt.m("f"))), libc::EROFS);
    assert_eq!(errno(fs::remove_dir(pt.m("sub"))), libc::EROFS);
    assert_eq!(errno(fs::rename(pt.m("f"), pt.m("h"))), libc::EROFS);
    assert_eq!(
        errno(fs::set_permissions(
            pt.m("f"),
            fs::Permissions::from_mode(0o600)
        )),
        libc::EROFS
    );
    assert_eq!(xattr::set(&pt.m("f"), "user.x", b"y"), libc::EROFS);
    assert_eq!(fs::read(pt.d("f")).unwrap(), b"host");
    assert_eq!(fs::metadata(pt.d("f")).unwrap().mode() & 0o7777, 0o644);
    pt.finish();
}

#[test]
fn a_running_program_can_be_read() {
    let pt = Pt::new("txt", &[], false, |d| {
        fs::copy("/bin/sleep", d.join("sleep")).unwrap();
    });
    let mut child = std::process::Command::new(pt.d("sleep"))
        .arg("30")
        .spawn()
        .expect("run the copy");
    // Reading it (as a compiler or `cp` would) works while it runs: the
    // server opens host files for writing only to write (ETXTBSY).
    let r = fs::read(pt.m("sleep"));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(r.unwrap(), fs::read("/bin/sleep").unwrap());
    pt.finish();
}
