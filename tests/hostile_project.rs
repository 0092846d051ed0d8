//! A hostile project: symlinks and `.sbox.toml` entries that try to send
//! sbox's own mounts, creations and trust decisions out of the project,
//! a project that is the home directory, and secrets sbox must hide. Each
//! test runs the real binary as the unprivileged test user with canaries in
//! its home and checks the host afterwards.

mod common;
use common::*;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// Canary files in the test user's home, with their contents.
struct Canaries(Vec<(PathBuf, Vec<u8>)>);

impl Canaries {
    fn plant() -> Self {
        let home = &user().home;
        let mut v = vec![(canary_secret(), Vec::new())];
        for (rel, text) in [
            (".bashrc", "# SBOX-CANARY bashrc\n"),
            (".profile", "# SBOX-CANARY profile\n"),
            (".config/sbox-canary/settings", "SBOX-CANARY settings\n"),
        ] {
            let p = home.join(rel);
            let parent = p.parent().expect("parent");
            std::fs::create_dir_all(parent).expect("mkdir");
            chown(parent);
            // Tests of this process share the home and run in parallel:
            // replace a canary atomically, and only when it differs, so
            // another test checking it never sees it half-written.
            if std::fs::read(&p).ok().as_deref() != Some(text.as_bytes()) {
                let tmp = parent.join(format!(".canary-{}-{}", std::process::id(), unique()));
                std::fs::write(&tmp, text).expect("write");
                chown(&tmp);
                std::fs::rename(&tmp, &p).expect("rename");
            }
            v.push((p, Vec::new()));
        }
        for (p, bytes) in &mut v {
            *bytes = std::fs::read(&*p).expect("read canary");
        }
        Canaries(v)
    }

    #[track_caller]
    fn check(&self) {
        for (p, bytes) in &self.0 {
            let now = std::fs::read(p).unwrap_or_default();
            assert_eq!(&now, bytes, "{} changed on the host", p.display());
        }
    }
}

#[track_caller]
fn refused(o: &std::process::Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(125),
        "stdout: {}\nstderr: {err}",
        stdout(o)
    );
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(!stdout(o).contains("CANARY"), "{}", stdout(o));
}

const ATTACK: &str = "cat ~/.ssh/id_ed25519; echo pwned >> ~/.bashrc; touch started";

#[test]
fn an_output_directory_that_is_a_symlink_out_of_the_project_is_refused() {
    let c = Canaries::plant();
    let home = user().home.clone();
    for target in [
        PathBuf::from(".."),
        PathBuf::from("../../.."),
        home.clone(),
        PathBuf::from("/"),
    ] {
        let p = Project::new("outlink");
        symlink(&target, p.dir.join("out")).expect("ln");
        let o = output(sbox(
            &p.dir,
            &["run", "--profile", "strict", "--", "sh", "-c", ATTACK],
        ));
        refused(&o, "leads out of");
        assert!(stderr(&o).contains("/out"), "{}", stderr(&o));
        assert!(!p.dir.join("started").exists());
        c.check();
    }
    // A link that stays inside the project is followed.
    let p = Project::new("outlink-inside");
    std::fs::create_dir_all(p.dir.join("build/out")).expect("mkdir");
    chown(&p.dir.join("build"));
    chown(&p.dir.join("build/out"));
    symlink("build/out", p.dir.join("out")).expect("ln");
    ok(run_sh(&p.dir, &["--profile", "strict"], "echo hi > out/f"));
    assert_eq!(
        std::fs::read_to_string(p.dir.join("build/out/f")).expect("written"),
        "hi\n"
    );
    // A missing output directory is created inside the project.
    let p = Project::new("outnew");
    ok(run_sh(&p.dir, &["--profile", "strict"], "echo hi > out/f"));
    assert!(p.dir.join("out/f").is_file());
    c.check();
}

#[test]
fn binds_declared_in_the_project_cannot_lead_out_of_it() {
    let c = Canaries::plant();
    let home = user().home.clone();
    let p = Project::new("bindlink");
    symlink(home.join(".config"), p.dir.join("cache")).expect("ln");
    symlink("..", p.dir.join("up")).expect("ln");
    for spec in ["$PWD/cache", "$PWD/up", "$PWD/cache/sbox-canary:/mnt/c"] {
        let o = output(sbox(
            &p.dir,
            &[
                "run",
                "--bind",
                spec,
                "--",
                "sh",
                "-c",
                "echo pwned > /mnt/c/settings; touch started",
            ],
        ));
        refused(&o, "leads out of");
        assert!(!p.dir.join("started").exists());
    }
    // The same through a project file: trust --show lists it as a widening,
    // and even once trusted it is refused at run time.
    p.write(".sbox.toml", "[filesystem]\nbind = [\"$PWD/cache\"]\n");
    let show = ok(output(sbox(&p.dir, &["trust", "--show"])));
    assert!(show.contains("binds $PWD/cache read-write"), "{show}");
    ok(output(sbox(&p.dir, &["trust", "--yes"])));
    let o = output(sbox(
        &p.dir,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "echo pwned >> cache/sbox-canary/settings",
        ],
    ));
    refused(&o, "leads out of");
    c.check();
    // A bind inside the project through a link that stays inside works.
    let p = Project::new("bindin");
    p.write("data/x", "inside\n");
    symlink("data", p.dir.join("d")).expect("ln");
    assert_eq!(
        ok(run_sh(
            &p.dir,
            &["--ro-bind", "$PWD/d:/mnt/d"],
            "cat /mnt/d/x"
        )),
        "inside\n"
    );
}

#[test]
fn tmpfs_and_mount_points_are_never_created_through_a_link() {
    let c = Canaries::plant();
    let home = user().home.clone();
    let autostart = home.join(".config/autostart");
    let _ = std::fs::remove_dir_all(&autostart);
    let p = Project::new("tmpfslink");
    symlink(&home, p.dir.join("t")).expect("ln");
    let o = output(sbox(
        &p.dir,
        &[
            "run",
            "--tmpfs",
            "$PWD/t/.config/autostart/x",
            "--",
            "touch",
            "started",
        ],
    ));
    refused(&o, "leads out of");
    assert!(!autostart.exists(), "created on the host");
    // A bind destination through the same link.
    let o = output(sbox(
        &p.dir,
        &[
            "run",
            "--ro-bind",
            "/etc/hostname:$PWD/t/.config/autostart/y",
            "--",
            "true",
        ],
    ));
    refused(&o, "leads out of");
    assert!(!autostart.exists(), "created on the host");
    assert!(!p.dir.join("started").exists());
    c.check();
}

#[test]
fn destinations_with_dotdot_or_given_twice_are_refused() {
    let p = Project::new("dests");
    for args in [
        vec!["--bind", "/tmp:/tmp/../etc/x"],
        vec!["--tmpfs", "/var/../etc"],
        vec!["--bind", "/tmp:/mnt/a", "--ro-bind", "/etc:/mnt/a"],
        vec!["--tmpfs", "/mnt/a", "--tmpfs", "/mnt/a"],
    ] {
        let mut all = vec!["run"];
        all.extend(args.iter().copied());
        all.extend(["--", "touch", "started"]);
        let o = output(sbox(&p.dir, &all));
        assert_eq!(o.status.code(), Some(125), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).trim_end().lines().count(), 1, "{}", stderr(&o));
        assert!(!p.dir.join("started").exists());
    }
}

#[test]
fn a_bind_of_a_hidden_path_is_refused() {
    let secret = canary_secret();
    let p = Project::new("bindhidden");
    let spec = format!("{}:/tmp/k", secret.display());
    let o = output(sbox(
        &p.dir,
        &["run", "--ro-bind", &spec, "--", "cat", "/tmp/k"],
    ));
    refused(&o, "hidden path");
    // Through a symlink of the user's own making, too.
    let link = user().home.join("sbox-it-keylink");
    let _ = std::fs::remove_file(&link);
    symlink(secret.parent().expect("dir"), &link).expect("ln");
    let spec = format!("{}:/tmp/k", link.display());
    let o = output(sbox(
        &p.dir,
        &["run", "--ro-bind", &spec, "--", "ls", "/tmp/k"],
    ));
    let _ = std::fs::remove_file(&link);
    refused(&o, "hidden path");
}

fn in_home(args: &[&str]) -> std::process::Output {
    output(sbox(&user().home, args))
}

#[test]
fn the_home_directory_is_not_a_project_for_untrusted_builds() {
    let c = Canaries::plant();
    let _ = std::fs::remove_file(user().home.join("started"));
    for profile in ["build", "net", "strict"] {
        let o = in_home(&["run", "--profile", profile, "--", "sh", "-c", ATTACK]);
        refused(&o, "your home directory");
        assert!(!user().home.join("started").exists());
        // The root and an ancestor of the home too.
        for dir in [Path::new("/"), user().home.parent().expect("parent")] {
            let o = output(sbox(dir, &["run", "--profile", profile, "--", "true"]));
            refused(&o, "contains your home directory");
        }
    }
    c.check();
    // dev keeps working there, says so, and leaves start-up files alone.
    let o = in_home(&[
        "run",
        "--",
        "sh",
        "-c",
        "echo pwned >> ~/.bashrc && mkdir -p ~/.config/autostart && echo x > ~/.config/autostart/evil.desktop && tail -1 ~/.bashrc",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "pwned\n");
    assert!(
        stderr(&o).contains("not bound read-write"),
        "{}",
        stderr(&o)
    );
    assert!(!user().home.join(".config/autostart/evil.desktop").exists());
    c.check();
    // The hidden paths stay hidden there.
    let o = in_home(&["run", "--", "cat", ".ssh/id_ed25519"]);
    assert!(!o.status.success());
    assert!(!stdout(&o).contains("CANARY"));
}

#[test]
fn common_credentials_and_histories_are_hidden() {
    let home = user().home.clone();
    let files = [
        ".bash_history",
        ".zsh_history",
        ".pgpass",
        ".my.cnf",
        ".config/containers/auth.json",
        ".m2/settings.xml",
        ".gradle/gradle.properties",
        ".docker/config.json",
        ".git-credentials",
        ".config/gh/hosts.yml",
        ".kube/config",
        ".aws/credentials",
        ".netrc",
        ".python_history",
        ".local/share/fish/fish_history",
    ];
    let mut made = Vec::new();
    for rel in files {
        let p = home.join(rel);
        let existed = p.exists();
        if !existed {
            let parent = p.parent().expect("parent");
            std::fs::create_dir_all(parent).expect("mkdir");
            chown(parent);
            std::fs::write(&p, "SBOX-CANARY credential\n").expect("write");
            chown(&p);
            made.push(p.clone());
        }
    }
    let p = Project::new("hiddenlist");
    let script: String = files
        .iter()
        .map(|f| format!("cat ~/{f} 2>/dev/null && echo LEAK {f};"))
        .collect();
    let o = run_sh(&p.dir, &[], &format!("{script} echo done"));
    for f in made {
        let _ = std::fs::remove_file(f);
    }
    let out = stdout(&o);
    assert!(out.ends_with("done\n"), "{out}\n{}", stderr(&o));
    assert!(!out.contains("LEAK"), "{out}");
    assert!(!out.contains("CANARY"), "{out}");
}

#[test]
fn modify_ldt_is_refused() {
    let p = Project::new("ldt");
    let script = "import ctypes, os\n\
        libc = ctypes.CDLL(None, use_errno=True)\n\
        buf = ctypes.create_string_buffer(16)\n\
        r = libc.syscall(154, 0, buf, 16)\n\
        print(r, os.strerror(ctypes.get_errno()) if r < 0 else 'allowed')\n";
    let out = ok(output(sbox(
        &p.dir,
        &["run", "--", "python3", "-c", script],
    )));
    assert_eq!(out.trim(), "-1 Operation not permitted", "{out}");
}

#[test]
fn a_persistent_layer_cannot_redirect_the_kernel_overlay() {
    let c = Canaries::plant();
    let home = user().home.display().to_string();
    let p = Project::new("layerlink");
    let name = format!("hp-layer-{}", std::process::id());
    let _ = output(sbox(&p.dir, &["rm", "-f", &name]));
    // Inside, /opt becomes a symlink to the host's canary directory: in the
    // stored upper layer it is a symlink named opt.
    ok(output(sbox(
        &p.dir,
        &[
            "run",
            "--name",
            &name,
            "--",
            "sh",
            "-c",
            &format!("rm -rf /opt && ln -s {home}/.config/sbox-canary /opt"),
        ],
    )));
    // A later run of the same sandbox with the kernel backend must not use
    // that link as the layer of /opt (the kernel would follow it).
    let o = output(sbox(
        &p.dir,
        &[
            "run",
            "--name",
            &name,
            "--overlay",
            "kernel",
            "--",
            "sh",
            "-c",
            "echo pwned > /opt/settings",
        ],
    ));
    let _ = output(sbox(&p.dir, &["rm", "-f", &name]));
    refused(&o, "leads out of");
    c.check();
}
