//! Runs the doctor's checks on this host.

mod forkchild;

use forkchild::run_in_child;
use sbox::confine::seccomp::{build_filter, install_filter, native_arch, SeccompSpec};
use sbox::doctor::{
    can_run, render_json, render_text, run_checks, Status, UserInfo, CHECK_USER_NAMESPACES,
};

fn status_of(checks: &[sbox::doctor::Check], name: &str) -> Status {
    checks
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.status)
        .expect(name)
}

#[test]
fn checks_on_this_host() {
    let checks = run_checks(&UserInfo::current());
    let text = render_text(&checks);
    eprintln!("{text}");
    assert_eq!(text.lines().count(), checks.len());
    assert_eq!(status_of(&checks, CHECK_USER_NAMESPACES), Status::Ok);
    assert_eq!(status_of(&checks, "landlock"), Status::Ok);
    assert_eq!(status_of(&checks, "seccomp"), Status::Ok);
    assert!(can_run(&checks));
    let json: serde_json::Value = serde_json::from_str(&render_json(&checks)).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(checks.len()));
    // The probes remove their temp dirs (only this test runs probes in this
    // process outside a child, so the count is not racy).
    assert_eq!(leftovers(), 0, "temp dirs left behind");
}

fn leftovers() -> usize {
    std::fs::read_dir(std::env::temp_dir())
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with(&format!("sbox-doctor-ovl-{}-", std::process::id()))
                        || n.starts_with(&format!("sbox-doctor-fuse-{}-", std::process::id()))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Under sbox's own seccomp filter user namespaces are denied: the doctor
/// must notice and say that sbox cannot run.
#[test]
fn detects_blocked_user_namespaces() {
    let prog = build_filter(&SeccompSpec::default(), native_arch().unwrap()).unwrap();
    let out = run_in_child(|r| {
        install_filter(&prog).expect("install");
        let checks = run_checks(&UserInfo::current());
        let userns = checks
            .iter()
            .find(|c| c.name == CHECK_USER_NAMESPACES)
            .unwrap();
        eprintln!("{}", render_text(&checks));
        r.send(i64::from(userns.status == Status::Missing));
        r.send(i64::from(
            userns.detail.contains("unshare(CLONE_NEWUSER) failed"),
        ));
        r.send(i64::from(can_run(&checks)));
        let overlay = checks
            .iter()
            .find(|c| c.name == "overlayfs in user namespace")
            .unwrap();
        r.send(i64::from(overlay.status == Status::Warn));
    });
    assert!(out.exited_ok(), "{out:?}");
    assert_eq!(out.values, vec![1, 1, 0, 1]);
}
