//! Stored sandboxes: the per-project sandbox of `sbox shell`, and `sbox
//! diff`, `reset` and `commit`, through the real binary as the
//! unprivileged user.

mod common;
use common::*;
use std::io::{Read, Write};

/// Removes a named sandbox when dropped.
struct Named<'a> {
    dir: &'a std::path::Path,
    name: String,
}

impl Drop for Named<'_> {
    fn drop(&mut self) {
        let _ = output(sbox(self.dir, &["rm", "-f", &self.name]));
    }
}

/// `sbox shell` on a pty; the commands, then `exit`.
fn shell(dir: &std::path::Path, script: &str) -> String {
    let pty = nix::pty::openpty(None, None).expect("pty");
    let mut master = std::fs::File::from(pty.master);
    let mut cmd = sbox(dir, &["shell"]);
    let s0 = pty.slave.try_clone().expect("dup");
    let s1 = pty.slave.try_clone().expect("dup");
    cmd.stdin(s0).stdout(s1).stderr(pty.slave);
    // SAFETY: (test) setsid in the child before exec, nothing else.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn shell");
    master
        .write_all(format!("{script}\nexit\n").as_bytes())
        .expect("write");
    let st = child.wait().expect("wait");
    assert!(st.success(), "shell failed: {st:?}");
    let mut out = String::new();
    // SAFETY: (test) the master stays open until it is dropped below.
    let fd =
        unsafe { std::os::fd::BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&master)) };
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .expect("nonblock");
    let mut buf = [0u8; 65536];
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    out
}

#[test]
fn shell_keeps_one_sandbox_per_project() {
    let p = Project::new("perproject");
    let marker = format!("/opt/sbox-tool-{}", std::process::id());
    let name = ok(output(sbox(&p.dir, &["ps", "-a", "--json"])));
    assert!(!name.contains(&marker));
    let _ = shell(&p.dir, &format!("echo installed > {marker}"));
    assert!(!std::path::Path::new(&marker).exists(), "reached the host");
    let out = shell(&p.dir, &format!("cat {marker}"));
    assert!(out.contains("installed"), "not kept between shells: {out}");
    let diff = ok(output(sbox(&p.dir, &["diff"])));
    assert!(diff.contains(&format!("A {marker}")), "{diff}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(output(sbox(&p.dir, &["diff", "--json"])))).expect("json");
    assert!(json.as_array().is_some_and(|a| !a.is_empty()));
    ok(output(sbox(&p.dir, &["reset"])));
    let out = shell(&p.dir, &format!("cat {marker} || echo gone-after-reset"));
    assert!(out.contains("gone-after-reset"), "{out}");
    // `run` stays ephemeral.
    let o = run_sh(&p.dir, &[], &format!("echo x > {marker}"));
    assert!(o.status.success());
    let out = shell(&p.dir, &format!("cat {marker} || echo absent"));
    assert!(out.contains("absent"), "{out}");
    // Clean the project's stored sandbox.
    let ps = ok(output(sbox(&p.dir, &["ps", "-a", "--json"])));
    let v: serde_json::Value = serde_json::from_str(&ps).expect("json");
    for row in v.as_array().into_iter().flatten() {
        if row["project"].as_str() == Some(&p.dir.to_string_lossy()) {
            let n = row["name"].as_str().unwrap_or_default().to_string();
            let _ = output(sbox(&p.dir, &["rm", "-f", &n]));
        }
    }
}

#[test]
fn diff_and_commit_of_a_named_sandbox() {
    let p = Project::new("commit");
    let n = Named {
        dir: &p.dir,
        name: format!("commit-{}", std::process::id()),
    };
    let home = user().home.clone();
    let newfile = home.join(format!("sbox-commit-{}", std::process::id()));
    let _ = std::fs::remove_file(&newfile);
    ok(output(sbox(
        &p.dir,
        &[
            "run",
            "--name",
            &n.name,
            "--",
            "sh",
            "-c",
            &format!(
                "echo kept > {} && echo x > /opt/inside-only && rm /etc/debian_version",
                newfile.display()
            ),
        ],
    )));
    let diff = ok(output(sbox(&p.dir, &["diff", &n.name])));
    assert!(diff.contains(&format!("A {}", newfile.display())), "{diff}");
    assert!(diff.contains("A /opt/inside-only"), "{diff}");
    assert!(diff.contains("D /etc/debian_version"), "{diff}");
    assert!(std::path::Path::new("/etc/debian_version").exists());
    // Dry run: printed, nothing written.
    let dry = ok(output(sbox(
        &p.dir,
        &["commit", "--dry-run", &n.name, &newfile.to_string_lossy()],
    )));
    assert_eq!(dry.trim(), format!("A -rw-r--r-- {}", newfile.display()));
    assert!(!newfile.exists());
    ok(output(sbox(
        &p.dir,
        &["commit", &n.name, &newfile.to_string_lossy()],
    )));
    assert_eq!(
        std::fs::read_to_string(&newfile).expect("committed"),
        "kept\n"
    );
    let _ = std::fs::remove_file(&newfile);
    // A path the profile hides is refused.
    let o = output(sbox(
        &p.dir,
        &["commit", &n.name, &home.join(".ssh").to_string_lossy()],
    ));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("hides"), "{}", stderr(&o));
    // Unknown sandbox.
    let o = output(sbox(&p.dir, &["diff", "no-such-sandbox-x"]));
    assert_eq!(o.status.code(), Some(125));
}

#[test]
fn a_second_shell_joins_the_running_one() {
    let p = Project::new("join");
    let dir = p.dir.clone();
    let first = std::thread::spawn(move || shell(&dir, "echo joined > /tmp/join-marker; sleep 4"));
    let running = wait_for(20, || {
        ok(output(sbox(&p.dir, &["ps", "--json"]))).contains(&*p.dir.to_string_lossy())
    });
    assert!(running, "the first shell's sandbox did not show in ps");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = shell(
        &p.dir,
        "cat /tmp/join-marker; echo pid1=$(cat /proc/1/comm)",
    );
    assert!(
        out.contains("joined"),
        "the second shell did not join: {out}"
    );
    let _ = first.join();
    let ps = ok(output(sbox(&p.dir, &["ps", "-a", "--json"])));
    let v: serde_json::Value = serde_json::from_str(&ps).expect("json");
    for row in v.as_array().into_iter().flatten() {
        if row["project"].as_str() == Some(&p.dir.to_string_lossy()) {
            let n = row["name"].as_str().unwrap_or_default().to_string();
            let _ = output(sbox(&p.dir, &["rm", "-f", &n]));
        }
    }
}

/// `diff` lists a directory as changed when its owner or mode changed
/// inside, not when it was only copied up (its times set, a file made in
/// it): the owner stored in the upper layer is compared with the host's
/// as the sandbox's overlay showed it, --map-user and ids it does not map
/// included.
#[test]
fn diff_lists_directories_whose_owner_or_mode_changed() {
    let p = Project::new("dirmeta");
    let base = user()
        .home
        .join(format!("sbox-dirmeta-{}-{}", std::process::id(), unique()));
    let _ = std::fs::remove_dir_all(&base);
    let mkdir = |name: &str| {
        let d = base.join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        chown(&base);
        chown(&d);
        d.display().to_string()
    };
    let (touched, filled, chowned, chmodded) = (
        mkdir("touched"),
        mkdir("filled"),
        mkdir("chowned"),
        mkdir("chmodded"),
    );
    // A host owner the sandbox maps to nobody (only root can make one).
    let foreign = user().switch.then(|| {
        let d = base.join("foreign");
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("chmod");
        nix::unistd::chown(
            &d,
            Some(nix::unistd::Uid::from_raw(400_000)),
            Some(nix::unistd::Gid::from_raw(400_000)),
        )
        .expect("chown");
        d.display().to_string()
    });
    let listed = |name: &str| {
        let diff = ok(output(sbox(&p.dir, &["diff", "--no-pager", name])));
        diff.lines()
            .filter(|l| l.contains(&*base.to_string_lossy()))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };

    // As the caller's own id (--map-user): the caller's directory, copied
    // up with only its times or its content changed, is no change of its own.
    let mapped = Named {
        dir: &p.dir,
        name: format!("dirmeta-m-{}", std::process::id()),
    };
    ok(output(sbox(
        &p.dir,
        &[
            "run",
            "--name",
            &mapped.name,
            "--map-user",
            "--",
            "sh",
            "-c",
            &format!("touch -d @1000000000 {touched} && echo x > {filled}/new"),
        ],
    )));
    assert_eq!(
        listed(&mapped.name),
        [format!("A {filled}/new")],
        "--map-user"
    );

    // As root inside: a chown and a chmod are changes, times are not.
    let root = Named {
        dir: &p.dir,
        name: format!("dirmeta-r-{}", std::process::id()),
    };
    let mut script = format!(
        "touch -d @1000000000 {touched} && echo x > {filled}/new && chown 5:5 {chowned} && chmod 700 {chmodded}"
    );
    if let Some(f) = &foreign {
        script.push_str(&format!(" && touch -d @1000000000 {f} && stat -c %u {f}"));
    }
    let out = ok(output(sbox(
        &p.dir,
        &["run", "--name", &root.name, "--", "sh", "-c", &script],
    )));
    if foreign.is_some() {
        assert_eq!(out.trim(), "65534", "the foreign owner shows as nobody");
    }
    assert_eq!(
        listed(&root.name),
        [
            format!("C {chmodded}"),
            format!("C {chowned}"),
            format!("A {filled}/new"),
        ],
        "as root"
    );
    // Committed, a chmod inside is a chmod on the host.
    let o = ok(output(sbox(&p.dir, &["commit", &root.name, &chmodded])));
    assert_eq!(o.trim(), format!("C drwx------ {chmodded}"));
    let mode = std::fs::metadata(&chmodded).expect("stat").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o7777,
        0o700
    );
    let _ = std::fs::remove_dir_all(&base);
}
