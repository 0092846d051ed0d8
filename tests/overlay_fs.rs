//! Integration tests: a real FUSE mount served by the overlay (as root, or
//! as an ordinary user with a subordinate id range: see overlayfix).

mod overlayfix;

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use overlayfix::*;

fn names(dir: &Path) -> HashSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn is_whiteout_on_disk(p: &Path) -> bool {
    match fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_char_device() => m.rdev() == 0,
        Ok(m) if m.is_file() && m.len() == 0 => get_xattr(p, "user.overlay.whiteout").is_some(),
        _ => false,
    }
}

#[test]
fn lookup_readdir_merge_and_masks() {
    let fx = Fx::new("merge", Opts::default(), |l, u| {
        standard_lower(l, u);
        fs::write(u.join("upfile"), b"from upper").unwrap();
        fs::create_dir(u.join("dir")).unwrap();
        fs::write(u.join("dir/upper_only"), b"u").unwrap();
    });
    let root = names(&fx.mnt);
    for n in [
        "hello", "other", "dir", "home", "proc", "ldir", "sym", "upfile",
    ] {
        assert!(root.contains(n), "{n} missing from {root:?}");
    }
    assert_eq!(fs::read(fx.m("hello")).unwrap(), b"hello world\n");
    assert_eq!(fs::read(fx.m("upfile")).unwrap(), b"from upper");
    assert_eq!(
        names(&fx.m("dir")),
        ["a", "sub", "upper_only"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(fs::read(fx.m("dir/sub/file")).unwrap(), b"deep");

    // Ownership mapping: root stays root, other ids become nobody.
    assert_eq!(fs::metadata(fx.m("hello")).unwrap().uid(), 0);
    let o = fs::metadata(fx.m("other")).unwrap();
    assert_eq!((o.uid(), o.gid()), (65534, 65534));

    // Hidden: absent from lookup and readdir, not reachable through "..".
    assert_eq!(errno(fs::metadata(fx.m("home/u/.ssh"))), libc::ENOENT);
    assert_eq!(errno(fs::read(fx.m("home/u/.ssh/id_rsa"))), libc::ENOENT);
    assert_eq!(
        names(&fx.m("home/u")),
        ["notes".to_string()].into_iter().collect()
    );
    assert_eq!(
        errno(fs::metadata(fx.m("home/u/notes/../.ssh"))),
        libc::ENOTDIR
    );
    assert_eq!(
        errno(fs::metadata(fx.m("dir/../home/u/.ssh/id_rsa"))),
        libc::ENOENT
    );

    // Empty: an empty read-only dir owned by root, host content not served.
    let p = fs::metadata(fx.m("proc")).unwrap();
    assert!(p.is_dir());
    assert_eq!(p.mode() & 0o7777, 0o755);
    assert_eq!((p.uid(), p.gid()), (0, 0));
    assert!(names(&fx.m("proc")).is_empty());
    assert_eq!(errno(fs::metadata(fx.m("proc/cpuinfo"))), libc::ENOENT);
    assert_ne!(errno(fs::write(fx.m("proc/new"), b"x")), 0);

    // Symlink from the lower.
    assert_eq!(fs::read_link(fx.m("sym")).unwrap(), Path::new("hello"));
    assert_eq!(fs::read(fx.m("sym")).unwrap(), b"hello world\n");

    // Inode numbers are stable across lookups and distinct.
    let a = fs::metadata(fx.m("hello")).unwrap().ino();
    let b = fs::metadata(fx.m("other")).unwrap().ino();
    assert_ne!(a, b);
    assert_eq!(a, fs::metadata(fx.m("hello")).unwrap().ino());
    fx.finish();
}

#[test]
fn whiteout_after_unlink_and_recreate() {
    let fx = Fx::new("whiteout", Opts::default(), standard_lower);
    fs::remove_file(fx.m("hello")).unwrap();
    assert_eq!(errno(fs::metadata(fx.m("hello"))), libc::ENOENT);
    assert!(!names(&fx.mnt).contains("hello"));
    assert!(is_whiteout_on_disk(&fx.u("hello")), "upper has a whiteout");
    assert!(fx.l("hello").exists(), "lower untouched");
    // Recreate over the whiteout.
    fs::write(fx.m("hello"), b"new").unwrap();
    assert_eq!(fs::read(fx.m("hello")).unwrap(), b"new");
    // Upper-only file: removed for real.
    fs::write(fx.m("tmpfile"), b"x").unwrap();
    fs::remove_file(fx.m("tmpfile")).unwrap();
    assert!(fs::symlink_metadata(fx.u("tmpfile")).is_err());
    // Unlink a copied-up file that exists in lower: whiteout replaces it.
    fs::write(fx.m("dir/a"), b"changed").unwrap();
    fs::remove_file(fx.m("dir/a")).unwrap();
    assert!(is_whiteout_on_disk(&fx.u("dir/a")));
    assert_eq!(errno(fs::metadata(fx.m("dir/a"))), libc::ENOENT);
    fx.finish();
}

#[test]
fn xattr_whiteouts_in_upper_are_read() {
    let fx = Fx::new("xwh", Opts::default(), |l, u| {
        standard_lower(l, u);
        fs::create_dir(u.join("dir")).unwrap();
        File::create(u.join("dir/a")).unwrap();
        set_xattr(&u.join("dir/a"), "user.overlay.whiteout", b"y");
        set_xattr(&u.join("dir"), "user.overlay.whiteouts", b"y");
        File::create(u.join("ro")).unwrap();
        set_xattr(&u.join("ro"), "user.overlay.whiteout", b"y");
    });
    assert_eq!(errno(fs::metadata(fx.m("dir/a"))), libc::ENOENT);
    assert_eq!(errno(fs::metadata(fx.m("ro"))), libc::ENOENT);
    assert_eq!(
        names(&fx.m("dir")),
        ["sub".to_string()].into_iter().collect()
    );
    fx.finish();
}

#[test]
fn opaque_after_rmdir_and_mkdir() {
    let fx = Fx::new("opaque", Opts::default(), standard_lower);
    assert_eq!(errno(fs::remove_dir(fx.m("dir"))), libc::ENOTEMPTY);
    fs::remove_dir_all(fx.m("dir")).unwrap();
    assert_eq!(errno(fs::metadata(fx.m("dir"))), libc::ENOENT);
    assert!(is_whiteout_on_disk(&fx.u("dir")));
    fs::create_dir(fx.m("dir")).unwrap();
    assert!(
        names(&fx.m("dir")).is_empty(),
        "new dir hides the lower one"
    );
    assert_eq!(
        get_xattr(&fx.u("dir"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    // The internal xattrs are invisible inside.
    assert!(get_xattr(&fx.m("dir"), "user.overlay.opaque").is_none());
    assert!(!list_xattr(&fx.m("dir"))
        .iter()
        .any(|n| n.starts_with("user.overlay")));
    fs::write(fx.m("dir/x"), b"x").unwrap();
    assert_eq!(names(&fx.m("dir")), ["x".to_string()].into_iter().collect());
    fx.finish();
}

#[test]
fn copy_up_keeps_content_mode_times_xattrs() {
    let fx = Fx::new("copyup", Opts::default(), standard_lower);
    // A metadata change copies up without touching content or mtime.
    fs::set_permissions(fx.m("hello"), fs::Permissions::from_mode(0o640)).unwrap();
    let up = fs::metadata(fx.u("hello")).unwrap();
    assert_eq!(up.mtime(), 1_000_000_000);
    assert_eq!(fs::read(fx.u("hello")).unwrap(), b"hello world\n");
    assert_eq!(
        get_xattr(&fx.u("hello"), "user.test").as_deref(),
        Some(&b"val"[..])
    );
    let m = fs::metadata(fx.m("hello")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert_eq!(m.mtime(), 1_000_000_000);
    assert_eq!(
        get_xattr(&fx.m("hello"), "user.test").as_deref(),
        Some(&b"val"[..])
    );
    assert!(list_xattr(&fx.m("hello")).contains(&"user.test".to_string()));
    // Inode number kept across copy-up.
    let ino_before = fs::metadata(fx.m("dir/sub/file")).unwrap().ino();
    let mut f = OpenOptions::new()
        .append(true)
        .open(fx.m("dir/sub/file"))
        .unwrap();
    f.write_all(b" and more").unwrap();
    drop(f);
    assert_eq!(fs::read(fx.m("dir/sub/file")).unwrap(), b"deep and more");
    assert_eq!(fs::read(fx.l("dir/sub/file")).unwrap(), b"deep");
    assert_eq!(
        fs::metadata(fx.m("dir/sub/file")).unwrap().ino(),
        ino_before
    );
    // Parents were copied up with their metadata.
    assert!(fx.u("dir/sub").is_dir());
    // A 0444 file keeps presenting 0444 while the real upper file stays usable.
    fs::write(fx.m("ro"), b"rewritten").unwrap(); // root bypasses permissions
    assert_eq!(fs::metadata(fx.m("ro")).unwrap().mode() & 0o777, 0o444);
    assert_eq!(fs::metadata(fx.u("ro")).unwrap().mode() & 0o600, 0o600);
    // setxattr / removexattr inside; internal names refused.
    set_xattr(&fx.m("dir/a"), "user.mine", b"1");
    assert_eq!(
        get_xattr(&fx.u("dir/a"), "user.mine").as_deref(),
        Some(&b"1"[..])
    );
    let c = cpath(&fx.m("dir/a"));
    let n = std::ffi::CString::new("user.overlay.opaque").unwrap();
    // SAFETY: valid strings.
    let r = unsafe { libc::setxattr(c.as_ptr(), n.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    assert_eq!(r, -1);
    fx.finish();
}

#[test]
fn rename_files_and_lower_dirs() {
    let fx = Fx::new("rename", Opts::default(), standard_lower);
    let ino = fs::metadata(fx.m("hello")).unwrap().ino();
    fs::rename(fx.m("hello"), fx.m("dir/hello2")).unwrap();
    assert_eq!(errno(fs::metadata(fx.m("hello"))), libc::ENOENT);
    assert_eq!(fs::read(fx.m("dir/hello2")).unwrap(), b"hello world\n");
    assert_eq!(fs::metadata(fx.m("dir/hello2")).unwrap().ino(), ino);
    assert!(is_whiteout_on_disk(&fx.u("hello")));

    // A directory that exists only in the lower layer.
    fs::rename(fx.m("ldir"), fx.m("ldir2")).unwrap();
    assert_eq!(errno(fs::metadata(fx.m("ldir"))), libc::ENOENT);
    assert_eq!(fs::read(fx.m("ldir2/a")).unwrap(), b"A");
    assert_eq!(fs::read(fx.m("ldir2/inner/b")).unwrap(), b"B");
    assert_eq!(
        names(&fx.m("ldir2")),
        ["a", "inner"].iter().map(|s| s.to_string()).collect()
    );
    assert_eq!(fs::metadata(fx.m("ldir2")).unwrap().mtime(), 1_100_000_000);
    // Recreating the old name gives an empty directory.
    fs::create_dir(fx.m("ldir")).unwrap();
    assert!(names(&fx.m("ldir")).is_empty());

    // Rename over an existing lower file.
    fs::rename(fx.m("dir/a"), fx.m("other")).unwrap();
    assert_eq!(fs::read(fx.m("other")).unwrap(), b"a");
    assert_eq!(errno(fs::metadata(fx.m("dir/a"))), libc::ENOENT);

    // Moving a dir that holds a masked path is refused with EXDEV.
    assert_eq!(
        errno(fs::rename(fx.m("home/u"), fx.m("home/v"))),
        libc::EXDEV
    );
    fx.finish();
}

#[test]
fn rename_exchange_and_noreplace() {
    let fx = Fx::new("rename2", Opts::default(), standard_lower);
    fs::write(fx.m("newfile"), b"N").unwrap();
    assert_eq!(
        errno(renameat2(
            &fx.m("newfile"),
            &fx.m("hello"),
            libc::RENAME_NOREPLACE
        )),
        libc::EEXIST
    );
    renameat2(&fx.m("newfile"), &fx.m("fresh"), libc::RENAME_NOREPLACE).unwrap();
    assert_eq!(fs::read(fx.m("fresh")).unwrap(), b"N");
    renameat2(&fx.m("fresh"), &fx.m("hello"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(fx.m("fresh")).unwrap(), b"hello world\n");
    assert_eq!(fs::read(fx.m("hello")).unwrap(), b"N");
    // Exchange a file and a lower-only directory.
    renameat2(&fx.m("hello"), &fx.m("ldir"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(fx.m("ldir")).unwrap(), b"N");
    assert_eq!(fs::read(fx.m("hello/inner/b")).unwrap(), b"B");
    assert_eq!(
        errno(renameat2(
            &fx.m("nope"),
            &fx.m("hello"),
            libc::RENAME_EXCHANGE
        )),
        libc::ENOENT
    );
    fx.finish();
}

#[test]
fn hard_links_symlinks_fifos() {
    let fx = Fx::new("links", Opts::default(), standard_lower);
    fs::write(fx.m("f"), b"data").unwrap();
    fs::hard_link(fx.m("f"), fx.m("dir/f2")).unwrap();
    let a = fs::metadata(fx.m("f")).unwrap();
    let b = fs::metadata(fx.m("dir/f2")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(b.nlink(), 2);
    // Link to a lower file (copied up first).
    let ino = fs::metadata(fx.m("hello")).unwrap().ino();
    fs::hard_link(fx.m("hello"), fx.m("hello_link")).unwrap();
    let h = fs::metadata(fx.m("hello_link")).unwrap();
    assert_eq!(h.ino(), ino);
    assert_eq!(h.nlink(), 2);
    assert_eq!(fs::metadata(fx.m("hello")).unwrap().nlink(), 2);
    // Unlink one name: the other keeps the content.
    fs::remove_file(fx.m("hello")).unwrap();
    assert_eq!(fs::read(fx.m("hello_link")).unwrap(), b"hello world\n");
    assert_eq!(fs::metadata(fx.m("hello_link")).unwrap().nlink(), 1);

    std::os::unix::fs::symlink("dir/f2", fx.m("ln")).unwrap();
    assert_eq!(fs::read_link(fx.m("ln")).unwrap(), Path::new("dir/f2"));
    assert_eq!(fs::read(fx.m("ln")).unwrap(), b"data");

    let c = cpath(&fx.m("fifo"));
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    assert!(fs::metadata(fx.m("fifo")).unwrap().file_type().is_fifo());
    let c = cpath(&fx.m("chr"));
    // SAFETY: valid path.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
    assert_eq!(r, -1, "device nodes are refused");
    fx.finish();
}

#[test]
fn truncate_sparse_big_file_and_lseek() {
    let fx = Fx::new("sparse", Opts::default(), standard_lower);
    fs::write(fx.m("t"), b"0123456789").unwrap();
    let f = OpenOptions::new().write(true).open(fx.m("t")).unwrap();
    f.set_len(4).unwrap();
    drop(f);
    assert_eq!(fs::read(fx.m("t")).unwrap(), b"0123");
    // truncate(2) by path on a lower file.
    let c = cpath(&fx.m("dir/sub/file"));
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), 2) }, 0);
    assert_eq!(fs::read(fx.m("dir/sub/file")).unwrap(), b"de");

    let big: u64 = 5 << 30;
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(fx.m("big"))
        .unwrap();
    f.seek(SeekFrom::Start(big)).unwrap();
    f.write_all(b"x").unwrap();
    f.sync_all().unwrap();
    assert_eq!(fs::metadata(fx.m("big")).unwrap().len(), big + 1);
    assert!(
        fs::metadata(fx.u("big")).unwrap().blocks() < 1024,
        "still sparse"
    );
    // SAFETY: valid fd.
    let data = unsafe { libc::lseek64(f.as_raw_fd(), 0, libc::SEEK_DATA) };
    assert!(data >= (4 << 30), "SEEK_DATA skips the hole: {data}");
    // SAFETY: valid fd.
    let hole = unsafe { libc::lseek64(f.as_raw_fd(), 0, libc::SEEK_HOLE) };
    assert_eq!(hole, 0);
    let mut buf = [0u8; 1];
    f.seek(SeekFrom::Start(big)).unwrap();
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"x");
    // fallocate through the mount.
    // SAFETY: valid fd.
    assert_eq!(unsafe { libc::fallocate64(f.as_raw_fd(), 0, 0, 8192) }, 0);
    drop(f);
    fx.finish();
}

#[test]
fn mmap_shared_write() {
    let fx = Fx::new("mmap", Opts::default(), standard_lower);
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(fx.m("mm"))
        .unwrap();
    f.set_len(8192).unwrap();
    // SAFETY: mapping 8192 bytes of a file of that size, shared.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: p maps 8192 writable bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(b"mapped!".as_ptr(), p.cast::<u8>().add(4096), 7);
        assert_eq!(libc::msync(p, 8192, libc::MS_SYNC), 0);
        libc::munmap(p, 8192);
    }
    drop(f);
    let on_disk = fs::read(fx.u("mm")).unwrap();
    assert_eq!(&on_disk[4096..4103], b"mapped!");
    let through = fs::read(fx.m("mm")).unwrap();
    assert_eq!(&through[4096..4103], b"mapped!");
    fx.finish();
}

#[test]
fn chown_chmod_overrides() {
    let fx = Fx::new("chown", Opts::default(), standard_lower);
    std::os::unix::fs::chown(fx.m("hello"), Some(1234), Some(1234)).unwrap();
    let m = fs::metadata(fx.m("hello")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 1234));
    let x = get_xattr(&fx.u("hello"), "user.containers.override_stat").unwrap();
    assert_eq!(String::from_utf8(x).unwrap(), "1234:1234:0644");
    fs::set_permissions(fx.m("hello"), fs::Permissions::from_mode(0o000)).unwrap();
    assert_eq!(fs::metadata(fx.m("hello")).unwrap().mode() & 0o7777, 0);
    // Root inside still reads it; the server still can.
    assert_eq!(fs::read(fx.m("hello")).unwrap(), b"hello world\n");
    assert_eq!(fs::metadata(fx.u("hello")).unwrap().mode() & 0o600, 0o600);
    // Directories too, and new files made by root show owner 0.
    fs::create_dir(fx.m("d")).unwrap();
    std::os::unix::fs::chown(fx.m("d"), Some(7), Some(8)).unwrap();
    fs::set_permissions(fx.m("d"), fs::Permissions::from_mode(0o2770)).unwrap();
    let d = fs::metadata(fx.m("d")).unwrap();
    assert_eq!((d.uid(), d.gid(), d.mode() & 0o7777), (7, 8, 0o2770));
    fs::write(fx.m("d/inner"), b"x").unwrap();
    let i = fs::metadata(fx.m("d/inner")).unwrap();
    assert_eq!(
        (i.uid(), i.gid()),
        (0, 8),
        "set-gid dir passes its group on"
    );
    // The root directory presents the lower root's mode.
    let r = fs::metadata(&fx.mnt).unwrap();
    assert_eq!(
        r.mode() & 0o777,
        fs::metadata(&fx.lower).unwrap().mode() & 0o777
    );
    fx.finish();
}

fn sh_as(uid: u32, script: &str) -> bool {
    use std::os::unix::process::CommandExt;
    Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .uid(uid)
        .gid(uid)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn default_permissions_for_unprivileged_uid() {
    let fx = Fx::new("perm", Opts::default(), standard_lower);
    fs::write(fx.m("secret"), b"s").unwrap();
    fs::set_permissions(fx.m("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir(fx.m("pub")).unwrap();
    fs::set_permissions(fx.m("pub"), fs::Permissions::from_mode(0o777)).unwrap();
    let m = fx.mnt.display().to_string();
    let nobody = 65534;
    assert!(
        sh_as(nobody, &format!("cat {m}/hello >/dev/null")),
        "world-readable file"
    );
    assert!(
        !sh_as(nobody, &format!("cat {m}/secret >/dev/null 2>&1")),
        "0600 root file"
    );
    assert!(
        !sh_as(nobody, &format!("echo x >> {m}/hello 2>/dev/null")),
        "0644 root file not writable"
    );
    assert!(
        !sh_as(nobody, &format!("touch {m}/newfile 2>/dev/null")),
        "root dir not writable"
    );
    assert!(
        sh_as(nobody, &format!("echo hi > {m}/pub/mine")),
        "0777 dir writable"
    );
    // The new file is owned by the creating uid inside.
    let o = fs::metadata(fx.m("pub/mine")).unwrap();
    assert_eq!((o.uid(), o.gid()), (nobody, nobody));
    assert!(sh_as(
        nobody,
        &format!("chmod 600 {m}/pub/mine && cat {m}/pub/mine >/dev/null")
    ));
    assert!(
        !sh_as(1000, &format!("cat {m}/pub/mine >/dev/null 2>&1")),
        "other uid blocked"
    );
    // "other" is presented as owned by nobody: nobody may chmod it.
    assert!(sh_as(nobody, &format!("chmod 600 {m}/other")));
    fx.finish();
}

#[test]
fn hidden_paths_cannot_be_created() {
    let fx = Fx::new("hidden", Opts::default(), standard_lower);
    let ssh = fx.m("home/u/.ssh");
    assert_eq!(errno(fs::create_dir(&ssh)), libc::EACCES);
    assert_eq!(errno(fs::write(&ssh, b"x")), libc::EACCES);
    assert_eq!(
        errno(std::os::unix::fs::symlink("/etc", &ssh)),
        libc::EACCES
    );
    assert_eq!(errno(fs::hard_link(fx.m("hello"), &ssh)), libc::EACCES);
    assert_eq!(errno(fs::rename(fx.m("home/u/notes"), &ssh)), libc::EACCES);
    assert_eq!(errno(fs::create_dir(fx.m("proc/x"))), libc::EPERM);
    assert_eq!(errno(fs::remove_dir(fx.m("proc"))), libc::EBUSY);
    assert!(fs::symlink_metadata(fx.u("home/u/.ssh")).is_err());
    fx.finish();
}

#[test]
fn readdir_snapshot_is_stable() {
    let fx = Fx::new("readdir", Opts::default(), |l, _u| {
        fs::create_dir(l.join("big")).unwrap();
        for i in 0..3000 {
            fs::write(l.join(format!("big/entry-with-a-longish-name-{i:05}")), b"").unwrap();
        }
    });
    let dir = fx.m("big");
    let mut seen = Vec::new();
    let mut it = fs::read_dir(&dir).unwrap();
    for _ in 0..100 {
        seen.push(it.next().unwrap().unwrap().file_name());
    }
    // Mutate while the listing is open.
    for i in 2000..2500 {
        fs::remove_file(dir.join(format!("entry-with-a-longish-name-{i:05}"))).unwrap();
    }
    for i in 0..300 {
        fs::write(dir.join(format!("added-{i}")), b"").unwrap();
    }
    for e in it {
        seen.push(e.unwrap().file_name());
    }
    let set: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(set.len(), seen.len(), "no duplicates");
    for i in 0..3000 {
        let n = format!("entry-with-a-longish-name-{i:05}");
        assert!(set.contains(std::ffi::OsStr::new(&n)), "{n} seen");
    }
    // A fresh listing shows the new state.
    let now = names(&dir);
    assert_eq!(now.len(), 3000 - 500 + 300);
    fx.finish();
}

#[test]
fn reading_and_writing_many_files_keeps_fds_bounded() {
    // Files are opened without the server (OPEN answers ENOSYS): the fds it
    // opens for I/O are a bounded cache, whatever the number of files.
    let fx = Fx::new("iofds", Opts::default(), |l, _u| {
        for i in 0..2000 {
            fs::write(l.join(format!("f{i}")), format!("lower {i}\n")).unwrap();
        }
    });
    let before = fd_count();
    let mut max_fds = 0;
    for i in 0..2000 {
        let p = fx.m(&format!("f{i}"));
        assert_eq!(fs::read_to_string(&p).unwrap(), format!("lower {i}\n"));
        if i % 2 == 0 {
            // A write copies up: the reader's fd is replaced.
            fs::write(&p, format!("upper {i}\n")).unwrap();
            assert_eq!(fs::read_to_string(&p).unwrap(), format!("upper {i}\n"));
        }
        if i % 100 == 0 {
            max_fds = max_fds.max(fd_count());
        }
    }
    assert!(
        max_fds < before + 256 + 50,
        "the I/O fd cache grew past its bound: {before} -> {max_fds}"
    );
    fx.finish();
}

#[test]
fn bounded_fds_on_a_big_tree() {
    assert!(
        in_initial_userns() && nix::unistd::getuid().is_root(),
        "this test makes the kernel forget inodes through /proc/sys/vm/drop_caches and needs root on the host (CI runs as root)"
    );
    let fx = Fx::new("fds", Opts::default(), |l, _u| {
        for d in 0..20 {
            let dir = l.join(format!("d{d}"));
            fs::create_dir(&dir).unwrap();
            for i in 0..1000 {
                File::create(dir.join(format!("f{i}"))).unwrap();
            }
        }
    });
    let before = fd_count();
    let mut files = 0;
    let mut max_fds = 0;
    for d in fs::read_dir(&fx.mnt).unwrap() {
        let d = d.unwrap();
        for f in fs::read_dir(d.path()).unwrap() {
            let f = f.unwrap();
            let m = fs::symlink_metadata(f.path()).unwrap();
            assert!(m.is_file());
            files += 1;
            if files % 1000 == 0 {
                max_fds = max_fds.max(fd_count());
            }
        }
    }
    assert_eq!(files, 20_000);
    assert!(
        max_fds < before + 100,
        "fds stayed bounded: {before} -> {max_fds}"
    );
    let s = fx.server.as_ref().unwrap().stats();
    assert!(s.inodes > 1000, "kernel holds inodes: {s:?}");
    // Let the kernel forget them: the table shrinks.
    fs::write("/proc/sys/vm/drop_caches", b"2").expect("drop_caches");
    let after = fx.server.as_ref().unwrap().stats();
    assert!(
        after.inodes < s.inodes / 2,
        "forget shrinks the table: {s:?} -> {after:?}"
    );
    fx.finish();
}

#[test]
fn create_excl_and_open_flags() {
    let fx = Fx::new("excl", Opts::default(), standard_lower);
    let r = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(fx.m("hello"));
    assert_eq!(errno(r), libc::EEXIST);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(fx.m("brand"))
        .unwrap();
    f.write_all(b"b").unwrap();
    drop(f);
    assert_eq!(fs::metadata(fx.m("brand")).unwrap().mode() & 0o777, 0o600);
    // O_TRUNC on a lower file copies up an empty file.
    let f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(fx.m("dir/a"))
        .unwrap();
    drop(f);
    assert_eq!(fs::read(fx.m("dir/a")).unwrap(), b"");
    assert_eq!(fs::read(fx.l("dir/a")).unwrap(), b"a");
    // statfs answers with the upper filesystem.
    let c = cpath(&fx.mnt);
    // SAFETY: valid path and out-pointer.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    assert!(st.f_blocks > 0);
    // Times can be set.
    set_mtime(&fx.m("brand"), 1_200_000_000);
    assert_eq!(fs::metadata(fx.m("brand")).unwrap().mtime(), 1_200_000_000);
    fx.finish();
}

/// Mount points the view lacks are made by the server before it serves, as
/// init's mkdir would make them (root's, 0755, in the upper layer); not
/// through a masked path or a file.
#[test]
fn mount_points_are_made_before_the_mount_is_served() {
    let fx = Fx::new(
        "mountpoints",
        Opts {
            mount_points: [
                "/new/a/b",
                "/dir/sub/made",
                "/hello/x",
                "/home/u/.ssh/k",
                "/proc/p",
            ]
            .iter()
            .map(Into::into)
            .collect(),
            ..Opts::default()
        },
        standard_lower,
    );
    for (p, upper) in [("new/a/b", "new/a/b"), ("dir/sub/made", "dir/sub/made")] {
        let m = fs::metadata(fx.m(p)).expect(p);
        assert!(m.is_dir(), "{p}");
        assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o755), "{p}");
        assert!(fx.u(upper).is_dir(), "{upper} in the upper layer");
    }
    // The lower's directories on the way keep what they show.
    assert_eq!(fs::metadata(fx.m("dir/sub/file")).expect("file").len(), 4);
    assert!(!fx.m("hello/x").exists());
    assert!(fs::metadata(fx.m("hello")).expect("hello").is_file());
    assert!(!fx.u("home/u/.ssh").exists());
    assert!(!fx.u("proc/p").exists());
    fx.finish();
}

#[test]
fn unmount_ends_the_server() {
    let fx = Fx::new(
        "umount",
        Opts {
            threads: 4,
            ..Opts::default()
        },
        standard_lower,
    );
    assert!(fx.m("hello").exists());
    fx.finish();
}

#[test]
fn walk_the_host_root() {
    let opts = Opts {
        hidden: vec![],
        empty: ["/proc", "/sys", "/dev", "/run", "/tmp"]
            .iter()
            .map(Into::into)
            .collect(),
        threads: 2,
        mount_points: Vec::new(),
    };
    let fx = Fx::new_with_lower("hostroot", opts, Path::new("/"));
    let before = fd_count();
    let out = Command::new("find")
        .arg(&fx.mnt)
        .arg("-xdev")
        .arg("-printf")
        .arg("x")
        .output()
        .unwrap();
    let n = out.stdout.len();
    let errs = String::from_utf8_lossy(&out.stderr);
    assert!(n > 1000, "walked {n} entries; stderr: {errs}");
    assert!(!errs.contains("Too many open files"), "{errs}");
    assert!(fd_count() < before + 50);
    eprintln!("walked {n} entries, {} bytes of stderr", errs.len());
    fx.finish();
}
