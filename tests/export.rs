//! `sbox export`: the seccomp filter as a JSON seccomp profile, and an OCI
//! runtime bundle, written by the real binary as the unprivileged user.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).expect("read exported file");
    serde_json::from_str(&text).expect("exported file is JSON")
}

/// The shape docker, podman, runc and Kubernetes read: known keys only,
/// the types they expect.
fn check_seccomp_shape(p: &Value) {
    let obj = p.as_object().expect("an object");
    for k in obj.keys() {
        assert!(
            [
                "defaultAction",
                "defaultErrnoRet",
                "architectures",
                "syscalls"
            ]
            .contains(&k.as_str()),
            "unknown key {k}"
        );
    }
    let action_ok = |a: &Value| {
        [
            "SCMP_ACT_ALLOW",
            "SCMP_ACT_ERRNO",
            "SCMP_ACT_KILL_PROCESS",
            "SCMP_ACT_LOG",
        ]
        .contains(&a.as_str().expect("action is a string"))
    };
    assert!(action_ok(&p["defaultAction"]));
    for a in p["architectures"].as_array().expect("architectures") {
        assert!(a.as_str().expect("arch string").starts_with("SCMP_ARCH_"));
    }
    for e in p["syscalls"].as_array().expect("syscalls") {
        let e = e.as_object().expect("syscall entry");
        for k in e.keys() {
            assert!(
                ["names", "action", "errnoRet", "args"].contains(&k.as_str()),
                "unknown key {k}"
            );
        }
        let names = e["names"].as_array().expect("names");
        assert!(!names.is_empty());
        for n in names {
            let n = n.as_str().expect("name string");
            assert!(
                !n.is_empty()
                    && n.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            );
        }
        assert!(action_ok(&e["action"]));
        if e["action"] == "SCMP_ACT_ERRNO" {
            let errno = e["errnoRet"]
                .as_u64()
                .expect("errnoRet with SCMP_ACT_ERRNO");
            assert!((1..4096).contains(&errno));
        }
        if let Some(args) = e.get("args") {
            for a in args.as_array().expect("args") {
                assert!(a["index"].as_u64().expect("index") < 6);
                a["value"].as_u64().expect("value");
                a["valueTwo"].as_u64().expect("valueTwo");
                assert!(a["op"].as_str().expect("op").starts_with("SCMP_CMP_"));
            }
        }
    }
}

/// The errno the profile gives `name` called with zero arguments (None:
/// allowed), from the entries without argument checks.
fn errno_of(p: &Value, name: &str) -> Option<u64> {
    p["syscalls"]
        .as_array()
        .expect("syscalls")
        .iter()
        .filter(|e| e.get("args").is_none())
        .find(|e| {
            e["names"]
                .as_array()
                .expect("names")
                .iter()
                .any(|n| n == name)
        })
        .map(|e| e["errnoRet"].as_u64().unwrap_or(0))
}

#[test]
fn seccomp_profile_lists_what_sbox_refuses() {
    let p = Project::new("export-seccomp");
    let out = output(sbox(&p.dir, &["export", "--seccomp", "seccomp.json"]));
    ok(out.clone());
    let prof = read_json(&p.dir.join("seccomp.json"));
    check_seccomp_shape(&prof);
    assert_eq!(prof["defaultAction"], "SCMP_ACT_ALLOW");
    for name in [
        "keyctl",
        "add_key",
        "bpf",
        "ptrace",
        "mount",
        "setns",
        "perf_event_open",
    ] {
        assert_eq!(errno_of(&prof, name), Some(libc::EPERM as u64), "{name}");
    }
    assert_eq!(errno_of(&prof, "clone3"), Some(libc::ENOSYS as u64));
    assert_eq!(errno_of(&prof, "getpid"), None);
    // The one rule exported more strictly is said on stderr.
    assert!(stderr(&out).contains("personality"), "{}", stderr(&out));
    // Nothing else left in the directory (no temporary file).
    let names: Vec<_> = std::fs::read_dir(&p.dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("seccomp.json")]);

    // `-` is stdout, the same profile.
    let text = ok(output(sbox(&p.dir, &["export", "--seccomp", "-"])));
    assert_eq!(serde_json::from_str::<Value>(&text).expect("JSON"), prof);
}

#[test]
fn seccomp_profile_follows_the_profile() {
    let p = Project::new("export-seccomp-prof");
    p.write(
        "p.toml",
        "include = [\"dev\"]\n[seccomp]\nallow_ptrace = true\ndeny = [\"uname\"]\nkill = [\"acct\"]\nallow = [\"keyctl\"]\n",
    );
    let text = ok(output(sbox(
        &p.dir,
        &["export", "--seccomp", "-", "--profile", "./p.toml"],
    )));
    let prof: Value = serde_json::from_str(&text).expect("JSON");
    check_seccomp_shape(&prof);
    assert_eq!(errno_of(&prof, "ptrace"), None);
    assert_eq!(errno_of(&prof, "keyctl"), None);
    assert_eq!(errno_of(&prof, "bpf"), Some(libc::EPERM as u64));
    assert_eq!(errno_of(&prof, "uname"), Some(libc::EPERM as u64));
    let kills: Vec<&Value> = prof["syscalls"]
        .as_array()
        .expect("syscalls")
        .iter()
        .filter(|e| e["action"] == "SCMP_ACT_KILL_PROCESS")
        .collect();
    assert_eq!(kills.len(), 1);
    assert_eq!(kills[0]["names"], serde_json::json!(["acct"]));
}

#[test]
fn export_refuses_bad_input_with_one_line_and_leaves_nothing() {
    let p = Project::new("export-bad");
    let one_line_125 = |o: &std::process::Output, what: &str| {
        assert_eq!(o.status.code(), Some(125), "{what}: {}", stderr(o));
        let err = stderr(o);
        assert_eq!(
            err.lines()
                .filter(|l| l.starts_with("sbox: error:"))
                .count(),
            1,
            "{what}: {err}"
        );
    };
    let o = output(sbox(
        &p.dir,
        &[
            "export",
            "--seccomp",
            "x.json",
            "--profile",
            "no-such-profile",
        ],
    ));
    one_line_125(&o, "unknown profile");
    let o = output(sbox(&p.dir, &["export", "--seccomp", "missing/x.json"]));
    one_line_125(&o, "missing directory");
    std::fs::create_dir(p.dir.join("ro")).expect("mkdir");
    chown(&p.dir.join("ro"));
    std::fs::set_permissions(
        p.dir.join("ro"),
        std::os::unix::fs::PermissionsExt::from_mode(0o555),
    )
    .expect("chmod");
    let o = output(sbox(&p.dir, &["export", "--seccomp", "ro/x.json"]));
    one_line_125(&o, "read-only directory");
    let o = output(sbox(&p.dir, &["export", "--seccomp", "ro"]));
    one_line_125(&o, "a directory");
    assert!(!p.dir.join("x.json").exists());
    assert_eq!(
        std::fs::read_dir(p.dir.join("ro")).expect("list").count(),
        0
    );
    std::fs::set_permissions(
        p.dir.join("ro"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
}
