//! The server as it runs for real: an unprivileged host user serving a
//! /dev/fuse fd that someone else mounted. The test binary re-executes
//! itself as uid 4242 to be that server (see `server_child`).

mod overlayfix;

use std::fs::{self, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use overlayfix::*;
use sbox::rootfs::overlay::{mount_options, serve, OverlayConfig};

const UID: u32 = 4242;

/// Runs only when re-executed by `unprivileged_server_end_to_end`.
#[test]
fn server_child() {
    let Ok(fd) = std::env::var("SBOX_TEST_FUSE_FD") else {
        return;
    };
    let base = PathBuf::from(std::env::var("SBOX_TEST_BASE").unwrap());
    let fd: i32 = fd.parse().unwrap();
    // SAFETY: the parent passed this fd to us and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let cfg = OverlayConfig {
        canonical: Default::default(),
        lower: base.join("lower"),
        upper: base.join("upper"),
        work: base.join("work"),
        hidden: vec!["/home/u/.ssh".into()],
        empty: vec!["/proc".into()],
        caller_uid: UID,
        caller_gid: UID,
        caller_inside: (0, 0),
        id_maps: None,
        threads: 2,
        attr_timeout: Duration::from_secs(1),
        entry_timeout: Duration::from_secs(1),
        mount_points: Vec::new(),
    };
    let s = serve(fd, cfg).expect("serve as unprivileged user");
    s.wait().expect("clean end");
}

#[test]
fn unprivileged_server_end_to_end() {
    let base = std::env::temp_dir().join(format!("sbox-ovl-unpriv-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let (lower, upper, work, mnt) = (
        base.join("lower"),
        base.join("upper"),
        base.join("work"),
        base.join("mnt"),
    );
    for d in [&lower, &upper, &work, &mnt] {
        fs::create_dir_all(d).unwrap();
    }
    standard_lower(&lower, &upper);
    fs::write(lower.join("mine"), b"caller's file").unwrap();
    std::os::unix::fs::chown(lower.join("mine"), Some(UID), Some(UID)).unwrap();
    for d in [&upper, &work] {
        std::os::unix::fs::chown(d, Some(UID), Some(UID)).unwrap();
    }
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .unwrap();
    nix::mount::mount(
        Some("sbox-test"),
        &mnt,
        Some("fuse.sbox"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(mount_options(dev.as_raw_fd()).as_str()),
    )
    .unwrap();
    let raw = dev.as_raw_fd();
    let mut guard = Guard {
        child: Some(unsafe_child(raw, &base)),
        mnt: mnt.clone(),
        base: base.clone(),
    };
    drop(dev);

    let m = |p: &str| mnt.join(p);
    let u = |p: &str| upper.join(p);
    // Ownership as presented: caller and root → 0, others → nobody.
    assert_eq!(fs::metadata(m("mine")).unwrap().uid(), 0);
    assert_eq!(fs::metadata(m("hello")).unwrap().uid(), 0);
    assert_eq!(fs::metadata(m("other")).unwrap().uid(), 65534);
    assert_eq!(errno(fs::metadata(m("home/u/.ssh"))), libc::ENOENT);
    // Unlink: a whiteout (unprivileged users may mknod 0/0 since Linux 5.8;
    // otherwise an xattr whiteout is written).
    fs::remove_file(m("hello")).unwrap();
    assert_eq!(errno(fs::metadata(m("hello"))), libc::ENOENT);
    let w = fs::symlink_metadata(u("hello")).unwrap();
    assert!(
        (w.file_type().is_char_device() && w.rdev() == 0)
            || get_xattr(&u("hello"), "user.overlay.whiteout").is_some()
    );
    // Copy-up and chown inside: stored as an override, host owner is the caller.
    std::os::unix::fs::chown(m("dir/a"), Some(1234), Some(1234)).unwrap();
    let a = fs::metadata(m("dir/a")).unwrap();
    assert_eq!((a.uid(), a.gid()), (1234, 1234));
    assert_eq!(fs::metadata(u("dir/a")).unwrap().uid(), UID);
    fs::write(m("newfile"), b"n").unwrap();
    assert_eq!(fs::metadata(m("newfile")).unwrap().uid(), 0);
    assert_eq!(fs::metadata(u("newfile")).unwrap().uid(), UID);
    // A file the caller cannot read on the host stays unreadable.
    fs::set_permissions(
        lower.join("other"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    assert_eq!(errno(fs::read(m("other"))), libc::EACCES);
    // rename of a lower dir as the unprivileged server.
    fs::rename(m("ldir"), m("ldir3")).unwrap();
    assert_eq!(fs::read(m("ldir3/inner/b")).unwrap(), b"B");

    nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH).unwrap();
    let st = guard.child.take().unwrap().wait().unwrap();
    assert!(st.success(), "server child ended cleanly");
}

/// Unmounts and kills the server child if the test fails half-way.
struct Guard {
    child: Option<std::process::Child>,
    mnt: PathBuf,
    base: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn unsafe_child(fd: i32, base: &std::path::Path) -> std::process::Child {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "server_child", "--nocapture", "--test-threads=1"])
        .env("SBOX_TEST_FUSE_FD", fd.to_string())
        .env("SBOX_TEST_BASE", base)
        .stdout(std::process::Stdio::null())
        .uid(UID)
        .gid(UID);
    // SAFETY: the closure only calls fcntl (async-signal-safe) before exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}
