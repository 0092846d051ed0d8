//! Hidden paths under binds (the project, --bind, --ro-bind) and under the
//! kernel backend's overlays: they stay hidden when the host creates them
//! while the sandbox runs, with every backend, and a hidden file that
//! exists at the start never stops the sandbox from starting.
//!
//! Most tests use a home-like tree of their own (HOME points to it), so they
//! can create credentials in it freely; the test of the kernel overlays
//! uses the test user's home with hidden names of its own.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

const BACKENDS: [&str; 3] = ["fuse", "kernel", "none"];

/// A profile like `dev` that binds the project even when it is the home
/// directory (`dev` itself would show such a project copy-on-write): these
/// tests are about what a bind of a tree holding hidden paths shows.
fn home_bind_profile() -> &'static Path {
    static P: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let p = user().home.join("hb-home-bind.toml");
        std::fs::write(
            &p,
            "include = [\"dev\"]\n[filesystem]\nhome_project = \"bind\"\n",
        )
        .expect("write profile");
        chown(&p);
        p
    })
}

/// `sbox ARGS` in `dir` with HOME set to `home` (and, for `run` without a
/// profile, the profile that binds a project that is the home).
fn sbox_home(home: &Path, dir: &Path, args: &[&str]) -> Command {
    let prof = home_bind_profile().display().to_string();
    let mut all: Vec<&str> = args.to_vec();
    if all.first() == Some(&"run") && !all.contains(&"--profile") {
        all.splice(1..1, ["--profile", prof.as_str()]);
    }
    let mut c = sbox(dir, &all);
    use_home(&mut c, home);
    c
}

/// A file on the host owned by the test user.
fn host_write(p: &Path, text: &str) {
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
        for a in parent.ancestors() {
            if a.starts_with("/tmp/") && a != Path::new("/tmp") {
                chown(a);
            }
        }
    }
    std::fs::write(p, text).expect("write");
    chown(p);
}

/// The script prefix: say we run, then wait for the host's go.
fn wait_for_go(started: &Path, go: &Path) -> String {
    format!(
        "touch {s}; i=0; while [ ! -e {g} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; \
         chk() {{ if out=$(cat \"$1\" 2>&1); then echo \"READ $1: $out\"; else echo \"gone $1: $out\"; fi; }}; ",
        s = started.display(),
        g = go.display()
    )
}

/// Start `cmd` in the background, wait until the command inside made
/// `started`, run `host` (the host's changes), then let it go on.
fn with_running(cmd: Command, started: &Path, go: &Path, host: impl FnOnce()) -> String {
    let child: Child = spawn(cmd);
    let up = wait_for(30, || started.exists());
    if up {
        host();
    }
    host_write(go, "go\n");
    let o = child.wait_with_output().expect("wait");
    assert!(up, "the sandbox did not start: {}", stderr(&o));
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    stdout(&o)
}

#[track_caller]
fn assert_gone(out: &str, path: &Path) {
    let line = format!("gone {}: ", path.display());
    let found = out.lines().find(|l| l.starts_with(&line));
    assert!(
        found.is_some_and(|l| l.contains("No such file or directory")),
        "{} should be absent inside:\n{out}",
        path.display()
    );
}

#[test]
fn credentials_made_later_in_a_project_that_is_the_home_stay_hidden() {
    for backend in BACKENDS {
        let home = Project::new(&format!("hb-home-{backend}"));
        let h = &home.dir;
        home.write(".config/app/settings", "settings\n");
        let (started, go) = (h.join("started"), h.join("go"));
        let script = wait_for_go(&started, &go)
            + "chk ~/.netrc; chk ~/.config/gh/hosts.yml; chk ~/.ssh/id_ed25519; \
               chk ~/visible; echo \"home: $(ls -A ~ | tr '\\n' ' ')\"; \
               echo \"config: $(ls -A ~/.config | tr '\\n' ' ')\"; \
               echo inside > ~/written; echo more > ~/.config/app/written";
        let cmd = sbox_home(
            h,
            h,
            &["run", "--overlay", backend, "--", "sh", "-c", &script],
        );
        let out = with_running(cmd, &started, &go, || {
            host_write(&h.join(".netrc"), "machine x password SECRET-NETRC\n");
            host_write(&h.join(".config/gh/hosts.yml"), "oauth_token: SECRET-GH\n");
            host_write(&h.join(".ssh/id_ed25519"), "SECRET-KEY\n");
            host_write(&h.join("visible"), "a new file\n");
        });
        assert!(!out.contains("SECRET"), "{backend}: {out}");
        for p in [".netrc", ".config/gh/hosts.yml", ".ssh/id_ed25519"] {
            assert_gone(&out, &h.join(p));
        }
        assert!(
            out.contains(&format!("READ {}/visible: a new file", h.display())),
            "{backend}: {out}"
        );
        let listed = |prefix: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let in_home = listed("home: ");
        assert!(in_home.contains(&"visible".to_string()), "{backend}: {out}");
        for n in [".netrc", ".ssh"] {
            assert!(!in_home.contains(&n.to_string()), "{backend}: {out}");
        }
        assert_eq!(listed("config: "), vec!["app"], "{backend}: {out}");
        // Writes through the bind reach the host, as the caller's files.
        use std::os::unix::fs::MetadataExt;
        for (p, text) in [("written", "inside\n"), (".config/app/written", "more\n")] {
            let f = h.join(p);
            assert_eq!(std::fs::read_to_string(&f).ok().as_deref(), Some(text));
            assert_eq!(std::fs::metadata(&f).expect("stat").uid(), user().uid);
        }
    }
}

#[test]
fn credentials_made_later_under_a_bind_stay_hidden() {
    for backend in BACKENDS {
        let home = Project::new(&format!("hb-bind-{backend}"));
        let h = &home.dir;
        home.write(".config/app/settings", "settings\n");
        let p = Project::new(&format!("hb-proj-{backend}"));
        let (started, go) = (p.dir.join("started"), p.dir.join("go"));
        let script = wait_for_go(&started, &go)
            + "chk ~/.config/gh/hosts.yml; chk ~/.config/git/credentials; chk ~/.config/other; \
               echo \"config: $(ls -A ~/.config | tr '\\n' ' ')\"; \
               echo inside > ~/.config/app/from-inside";
        let cmd = sbox_home(
            h,
            &p.dir,
            &[
                "run",
                "--overlay",
                backend,
                "--bind",
                "~/.config",
                "--",
                "sh",
                "-c",
                &script,
            ],
        );
        let out = with_running(cmd, &started, &go, || {
            host_write(&h.join(".config/gh/hosts.yml"), "oauth_token: SECRET-GH\n");
            host_write(&h.join(".config/git/credentials"), "https://SECRET@x\n");
            host_write(&h.join(".config/other"), "not a secret\n");
        });
        assert!(!out.contains("SECRET"), "{backend}: {out}");
        assert_gone(&out, &h.join(".config/gh/hosts.yml"));
        assert_gone(&out, &h.join(".config/git/credentials"));
        assert!(
            out.contains(&format!("READ {}/.config/other: not a secret", h.display())),
            "{backend}: {out}"
        );
        // ~/.config/git itself is not hidden (only its credentials).
        assert!(out.contains("config: app git other \n"), "{backend}: {out}");
        assert_eq!(
            std::fs::read_to_string(h.join(".config/app/from-inside")).ok(),
            Some("inside\n".into()),
            "{backend}"
        );
    }
}

#[test]
fn an_existing_hidden_file_under_the_project_does_not_stop_any_backend() {
    let home = Project::new("hb-netrc");
    let h = &home.dir;
    home.write(".netrc", "machine x password SECRET-NETRC\n");
    home.write("notes", "notes\n");
    for backend in BACKENDS {
        let o = output(sbox_home(
            h,
            h,
            &[
                "run",
                "--overlay",
                backend,
                "--",
                "sh",
                "-c",
                "cat ~/.netrc; ls -A ~; cat ~/notes",
            ],
        ));
        assert_eq!(o.status.code(), Some(0), "{backend}: {}", stderr(&o));
        let (out, err) = (stdout(&o), stderr(&o));
        assert!(!out.contains("SECRET"), "{backend}: {out}");
        assert!(
            err.contains(".netrc: No such file or directory"),
            "{backend}: {err}"
        );
        assert!(
            !out.contains(".netrc") && out.contains("notes\n"),
            "{backend}: {out}"
        );
    }
}

#[test]
fn a_bound_hidden_file_is_refused_with_one_line() {
    // Binding a hidden file itself is refused before anything starts (it
    // used to show an empty mask, or fail with EINVAL).
    let home = Project::new("hb-filemask");
    let netrc = home.write(".netrc", "machine x password SECRET-NETRC\n");
    let p = Project::new("hb-filemask-p");
    for backend in BACKENDS {
        let bind = format!("{}:/tmp/netrc-copy", netrc.display());
        let o = output(sbox_home(
            &home.dir,
            &p.dir,
            &[
                "run",
                "--overlay",
                backend,
                "--ro-bind",
                &bind,
                "--",
                "sh",
                "-c",
                "cat /tmp/netrc-copy; touch started",
            ],
        ));
        assert_eq!(o.status.code(), Some(125), "{backend}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("hidden path"), "{backend}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{backend}: {err}");
        assert!(!stdout(&o).contains("SECRET"), "{backend}");
        assert!(!p.dir.join("started").exists());
    }
}

#[test]
fn kernel_overlays_keep_hidden_paths_made_later_out() {
    // The test user's home, under the kernel overlay of /home (with the
    // FUSE root: under the FUSE root itself), with hidden names of its own.
    let u = user();
    let tag = format!("sbox-hb-{}", std::process::id());
    let p = Project::new("hb-kernel");
    let prof = p.write(
        "hide.toml",
        &format!(
            "include = [\"dev\"]\n[filesystem]\nhidden = [\"~/.{tag}-secret\", \"~/.{tag}-dir/sub/key\"]\n"
        ),
    );
    let secret = u.home.join(format!(".{tag}-secret"));
    let dir = u.home.join(format!(".{tag}-dir"));
    let visible = u.home.join(format!(".{tag}-visible"));
    struct Cleanup(Vec<PathBuf>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = std::fs::remove_file(p);
                let _ = std::fs::remove_dir_all(p);
            }
        }
    }
    let _cleanup = Cleanup(vec![secret.clone(), dir.clone(), visible.clone()]);
    for backend in BACKENDS {
        for q in &_cleanup.0 {
            let _ = std::fs::remove_file(q);
            let _ = std::fs::remove_dir_all(q);
        }
        let (started, go) = (p.dir.join("started"), p.dir.join("go"));
        let _ = std::fs::remove_file(&started);
        let _ = std::fs::remove_file(&go);
        let script = wait_for_go(&started, &go)
            + &format!(
                "chk {}; chk {}/sub/key; chk {}",
                secret.display(),
                dir.display(),
                visible.display()
            );
        let cmd = sbox(
            &p.dir,
            &[
                "run",
                "--overlay",
                backend,
                "--profile",
                &prof.to_string_lossy(),
                "--",
                "sh",
                "-c",
                &script,
            ],
        );
        let out = with_running(cmd, &started, &go, || {
            std::fs::write(&secret, "SECRET-LATER\n").expect("write");
            chown(&secret);
            std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
            chown(&dir);
            chown(&dir.join("sub"));
            std::fs::write(dir.join("sub/key"), "SECRET-KEY\n").expect("write");
            chown(&dir.join("sub/key"));
            std::fs::write(&visible, "visible\n").expect("write");
            chown(&visible);
        });
        assert!(!out.contains("SECRET"), "{backend}: {out}");
        assert_gone(&out, &secret);
        assert_gone(&out, &dir.join("sub/key"));
        assert!(
            out.contains(&format!("READ {}: visible", visible.display())),
            "{backend}: {out}"
        );
    }
}

#[test]
fn fuse_binds_show_sbox_state_empty_log_denials_and_stay_read_only() {
    let home = Project::new("hb-misc");
    let h = &home.dir;
    home.write(".local/share/sbox/trust/record", "trusted\n");
    home.write(".netrc", "machine x password SECRET-NETRC\n");
    home.write("data", "data\n");
    let o = output(sbox_home(
        h,
        h,
        &[
            "run",
            "--log-denials",
            "--ro-bind",
            &format!("{}:/mnt/h", h.display()),
            "--",
            "sh",
            "-c",
            "ls -A ~/.local/share/sbox; echo \"[$(ls -A /mnt/h | tr '\\n' ' ')]\"; \
             cat ~/.netrc 2>/dev/null; echo x > /mnt/h/data 2>/dev/null || echo ro-refused; \
             echo y > ~/data; true",
        ],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(out.starts_with("[.local data ]\n"), "{out}");
    assert!(out.contains("ro-refused"), "{out}");
    assert_eq!(
        std::fs::read_to_string(h.join("data")).ok().as_deref(),
        Some("y\n")
    );
    assert!(
        err.contains(&format!(
            "sbox: denied: hidden path {}/.netrc (1 time)",
            h.display()
        )),
        "{err}"
    );
}
