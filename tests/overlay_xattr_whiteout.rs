//! The whiteout format used when the server may not create 0/0 character
//! devices (an unprivileged server): empty files with `user.overlay.whiteout`.
//! Forced here with SBOX_OVERLAY_XATTR_WHITEOUT (own test binary: the
//! variable is process-wide).

mod overlayfix;

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;

use overlayfix::*;

fn force_xattr_whiteouts() {
    std::env::set_var("SBOX_OVERLAY_XATTR_WHITEOUT", "1");
}

fn names(dir: &std::path::Path) -> HashSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn xattr_whiteouts_are_created_and_honoured() {
    force_xattr_whiteouts();
    let fx = Fx::new("xwhc", Opts::default(), standard_lower);
    fs::remove_file(fx.m("hello")).unwrap();
    let w = fs::symlink_metadata(fx.u("hello")).unwrap();
    assert!(w.is_file() && w.len() == 0);
    assert!(get_xattr(&fx.u("hello"), "user.overlay.whiteout").is_some());
    assert!(get_xattr(&fx.upper, "user.overlay.whiteouts").is_some());
    assert_eq!(
        get_xattr(&fx.upper, "user.overlay.opaque").as_deref(),
        Some(&b"x"[..])
    );
    assert_eq!(errno(fs::metadata(fx.m("hello"))), libc::ENOENT);
    assert!(!names(&fx.mnt).contains("hello"));
    // The root is not opaque: lower entries still show.
    assert!(names(&fx.mnt).contains("other"));

    // rmdir of a lower dir, then mkdir: opaque.
    fs::remove_dir_all(fx.m("dir")).unwrap();
    assert!(!names(&fx.mnt).contains("dir"));
    fs::create_dir(fx.m("dir")).unwrap();
    assert!(names(&fx.m("dir")).is_empty());
    assert_eq!(
        get_xattr(&fx.u("dir"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );

    // rename of a lower file leaves a whiteout behind.
    let ino = fs::metadata(fx.m("other")).unwrap().ino();
    fs::rename(fx.m("other"), fx.m("moved")).unwrap();
    assert_eq!(errno(fs::metadata(fx.m("other"))), libc::ENOENT);
    assert_eq!(fs::metadata(fx.m("moved")).unwrap().ino(), ino);
    assert!(get_xattr(&fx.u("other"), "user.overlay.whiteout").is_some());

    // Recreate over an xattr whiteout.
    fs::write(fx.m("hello"), b"again").unwrap();
    assert_eq!(fs::read(fx.m("hello")).unwrap(), b"again");
    fx.finish();
}
