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
        // One line: the error alone, no notes about an export not made.
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(err.starts_with("sbox: error:"), "{what}: {err}");
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

/// A script for the bundle: who it runs as, what keyctl(2) and ptrace(2)
/// answer, and whether a hidden secret can be read.
fn probe_script(secret: &Path) -> String {
    format!(
        "id -u; python3 -c 'import ctypes, os\n\
         l = ctypes.CDLL(None, use_errno=True)\n\
         for name, nr, args in ((\"keyctl\", {keyctl}, (0, -3, 0)), (\"ptrace\", {ptrace}, (0, 0, 0, 0))):\n    \
         r = l.syscall(nr, *args)\n    \
         print(name, \"ok\" if r >= 0 else os.strerror(ctypes.get_errno()))\n'; \
         cat {secret} 2>/dev/null || echo secret-unreadable; \
         echo written > exported-bundle-wrote",
        keyctl = libc::SYS_keyctl,
        ptrace = libc::SYS_ptrace,
        secret = secret.display()
    )
}

#[test]
fn oci_bundle_carries_the_policy_and_runs_under_runc() {
    let u = user();
    let p = Project::new("export-oci");
    // A secret in a hidden directory of the (throwaway) home.
    let ssh = u.home.join(".ssh");
    std::fs::create_dir_all(&ssh).expect("mkdir .ssh");
    chown(&ssh);
    let secret = ssh.join("id_export_test");
    std::fs::write(&secret, "SECRET-KEY\n").expect("write secret");
    chown(&secret);
    let script = probe_script(&secret);
    let out = output(sbox(
        &p.dir,
        &["export", "--oci", "bundle", "--", "sh", "-c", &script],
    ));
    ok(out.clone());
    assert!(stderr(&out).contains("Landlock"), "{}", stderr(&out));
    let bundle = p.dir.join("bundle");
    assert!(bundle.join("rootfs").is_dir());
    let c = read_json(&bundle.join("config.json"));

    // The required fields and the process.
    assert!(c["ociVersion"]
        .as_str()
        .expect("ociVersion")
        .starts_with("1."));
    assert_eq!(c["root"]["path"], "rootfs");
    assert_eq!(
        c["process"]["args"],
        serde_json::json!(["sh", "-c", script])
    );
    assert_eq!(c["process"]["cwd"], p.dir.to_str().expect("utf-8"));
    assert_eq!(c["process"]["user"]["uid"], 0);
    assert_eq!(c["process"]["noNewPrivileges"], true);
    let env: Vec<&str> = c["process"]["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|v| v.as_str().expect("env string"))
        .collect();
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
    let caps = &c["process"]["capabilities"]["bounding"];
    assert!(caps
        .as_array()
        .expect("caps")
        .iter()
        .any(|c| c == "CAP_CHOWN"));
    assert!(!caps
        .as_array()
        .expect("caps")
        .iter()
        .any(|c| c == "CAP_SYS_ADMIN"));

    // Namespaces and the id maps sbox uses: the caller is root, the
    // subordinate range (when there is one) is 1..N.
    let ns: Vec<&str> = c["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .map(|n| n["type"].as_str().expect("type"))
        .collect();
    for want in ["user", "pid", "ipc", "uts", "mount", "cgroup"] {
        assert!(ns.contains(&want), "{want} missing from {ns:?}");
    }
    let uidmap = c["linux"]["uidMappings"].as_array().expect("uidMappings");
    assert_eq!(
        uidmap[0],
        serde_json::json!({"containerID": 0, "hostID": u.uid, "size": 1})
    );
    if let Some(sub) = uidmap.get(1) {
        assert_eq!(sub["containerID"], 1);
    }
    assert_eq!(c["linux"]["gidMappings"][0]["hostID"], u.gid);

    // Hidden paths that exist are masked; the project is bound read-write.
    let masked = c["linux"]["maskedPaths"].as_array().expect("maskedPaths");
    assert!(
        masked.iter().any(|m| m == ssh.to_str().expect("utf-8")),
        "{ssh:?} not in {masked:?}"
    );
    let project_mount = c["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["destination"] == p.dir.to_str().expect("utf-8"))
        .expect("the project is mounted");
    assert_eq!(project_mount["type"], "bind");
    assert!(!project_mount["options"]
        .as_array()
        .expect("options")
        .iter()
        .any(|o| o == "ro"));
    check_seccomp_shape(&c["linux"]["seccomp"]);
    assert_eq!(
        errno_of(&c["linux"]["seccomp"], "keyctl"),
        Some(libc::EPERM as u64)
    );

    // runc runs it rootless as the test user.
    let id = format!("sbox-export-{}-{}", std::process::id(), unique());
    let state = u.runtime.join("runc");
    let bundle_s = bundle.to_str().expect("utf-8");
    let run = output(as_user(
        Path::new("timeout"),
        &[
            "120",
            "runc",
            "--root",
            state.to_str().expect("utf-8"),
            "run",
            "-b",
            bundle_s,
            &id,
        ],
    ));
    let got = stdout(&run);
    assert!(
        run.status.success(),
        "runc run failed ({:?}; is runc installed?)\nstdout: {got}\nstderr: {}",
        run.status,
        stderr(&run)
    );
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(
        lines,
        [
            "0",
            "keyctl Operation not permitted",
            "ptrace Operation not permitted",
            "secret-unreadable"
        ],
        "stderr: {}",
        stderr(&run)
    );
    // The project is the host's, read-write.
    assert_eq!(
        std::fs::read_to_string(p.dir.join("exported-bundle-wrote"))
            .expect("written by the bundle"),
        "written\n"
    );
}

#[test]
fn oci_export_refuses_a_directory_that_is_not_empty() {
    let p = Project::new("export-oci-bad");
    p.write("bundle/keep", "mine\n");
    let o = output(sbox(&p.dir, &["export", "--oci", "bundle", "--", "true"]));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    let names: Vec<_> = std::fs::read_dir(p.dir.join("bundle"))
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("keep")]);
    let top: Vec<_> = std::fs::read_dir(&p.dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(top, vec![std::ffi::OsString::from("bundle")]);
    let o = output(sbox(
        &p.dir,
        &["export", "--oci", "bundle/keep", "--", "true"],
    ));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    // An empty directory is fine: the bundle replaces it.
    std::fs::create_dir(p.dir.join("empty")).expect("mkdir");
    chown(&p.dir.join("empty"));
    ok(output(sbox(
        &p.dir,
        &["export", "--oci", "empty/", "--", "true"],
    )));
    assert!(p.dir.join("empty/config.json").is_file());
    // --oci needs a command.
    let o = output(sbox(&p.dir, &["export", "--oci", "other"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!p.dir.join("other").exists());
}

#[test]
fn oci_bundle_has_its_own_network_when_the_profile_has() {
    let p = Project::new("export-oci-net");
    let ns_of = |profile: &str, dir: &str| -> Vec<String> {
        ok(output(sbox(
            &p.dir,
            &["export", "--oci", dir, "--profile", profile, "--", "true"],
        )));
        read_json(&p.dir.join(dir).join("config.json"))["linux"]["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .map(|n| n["type"].as_str().expect("type").to_string())
            .collect()
    };
    assert!(ns_of("build", "b1").contains(&"network".to_string()));
    assert!(!ns_of("dev", "b2").contains(&"network".to_string()));
}

/// A static program for a rootfs of its own: what keyctl(2), bpf(2) and
/// getpid(2) answer.
const SYSCALL_PROBE: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
static void try(const char *name, long r) { printf("%s %s\n", name, r >= 0 ? "ok" : strerror(errno)); }
int main(void) {
    try("keyctl", syscall(SYS_keyctl, 0, -3, 0, 0, 0));
    try("bpf", syscall(SYS_bpf, 0, 0, 0));
    try("getpid", syscall(SYS_getpid));
    return 0;
}
"#;

/// `podman run --rootfs ROOTFS /probe` as the test user, rootless, with
/// `--security-opt seccomp=SECCOMP`.
fn podman_run(rootfs: &Path, seccomp: &str) -> std::process::Output {
    let u = user();
    let graph = u.home.join("podman-storage");
    let run_root = u.runtime.join("podman");
    let opt = format!("seccomp={seccomp}");
    output(as_user(
        Path::new("timeout"),
        &[
            "120",
            "podman",
            "--root",
            graph.to_str().expect("utf-8"),
            "--runroot",
            run_root.to_str().expect("utf-8"),
            "--storage-driver",
            "vfs",
            // crun 1.8 refuses this host class's hybrid cgroups.
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
            "run",
            "--rm",
            "--network",
            "none",
            "--security-opt",
            &opt,
            "--rootfs",
            rootfs.to_str().expect("utf-8"),
            "/probe",
        ],
    ))
}

/// Rootless podman leaves a "pause" process holding its namespaces: ended
/// with the test.
struct PodmanPause;

impl Drop for PodmanPause {
    fn drop(&mut self) {
        let file = user().runtime.join("libpod/tmp/pause.pid");
        if let Some(pid) = std::fs::read_to_string(file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn exported_seccomp_profile_loads_in_podman() {
    let _pause = PodmanPause;
    let p = Project::new("export-podman");
    // A rootfs holding one static program (podman --rootfs needs no image).
    let rootfs = p.dir.join("rootfs");
    std::fs::create_dir(&rootfs).expect("mkdir rootfs");
    let src = p.dir.join("probe.c");
    std::fs::write(&src, SYSCALL_PROBE).expect("write probe.c");
    let bin = rootfs.join("probe");
    let cc = std::process::Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run gcc (CI installs gcc and libc6-dev)");
    assert!(
        cc.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    for path in [&rootfs, &bin] {
        chown(path);
    }
    ok(output(sbox(
        &p.dir,
        &["export", "--seccomp", "seccomp.json"],
    )));

    let podman = |seccomp: &Path| {
        let o = podman_run(&rootfs, seccomp.to_str().expect("utf-8"));
        assert!(
            o.status.success(),
            "podman run with seccomp={seccomp:?} failed ({:?}; is podman installed?)\nstdout: {}\nstderr: {}",
            o.status,
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    };
    let confined = podman(&p.dir.join("seccomp.json"));
    assert_eq!(
        confined.lines().collect::<Vec<_>>(),
        [
            "keyctl Operation not permitted",
            "bpf Operation not permitted",
            "getpid ok"
        ],
        "under sbox's exported profile"
    );
    // Without it keyctl works: the profile is what refused it.
    let open = podman(Path::new("unconfined"));
    assert!(open.lines().any(|l| l == "keyctl ok"), "unconfined: {open}");

    // A profile the runtime cannot read is refused, so the check above is
    // real.
    let bad = p.dir.join("bad.json");
    std::fs::write(&bad, "{\"defaultAction\": \"SCMP_ACT_NOPE\"}").expect("write bad.json");
    chown(&bad);
    let o = podman_run(&rootfs, bad.to_str().expect("utf-8"));
    assert!(
        !o.status.success(),
        "podman ran with a bad profile: {}",
        stdout(&o)
    );
}
