//! Trust of a project's `.sbox.toml` through the real binary as an
//! unprivileged user: the files it includes are pinned with it, an include
//! is read relative to the file that names it and never from outside the
//! project, and a trust record of the older format (which pinned the file
//! alone) is not honoured. Each test uses its own HOME, so its trust
//! records are its own.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Output};

/// `sbox ARGS` in `dir` with `home` as HOME.
fn sb(home: &Project, dir: &Path, args: &[&str]) -> Output {
    let mut c: Command = sbox(dir, args);
    use_home(&mut c, &home.dir);
    output(c)
}

#[track_caller]
fn refused(o: &Output, needle: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(125), "{e}");
    assert!(e.contains(needle), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn a_changed_include_must_be_trusted_again() {
    let home = Project::new("trusthome");
    let p = Project::new("trustinc");
    p.write(
        ".sbox.toml",
        "include = [\"dev\", \"extra.toml\"]\n[network]\nmode = \"none\"\n",
    );
    p.write(
        "extra.toml",
        "include = [\"more.toml\"]\n[process]\nhostname = \"pinned\"\n",
    );
    p.write("more.toml", "[environment]\nset = { FROM = \"more\" }\n");
    let show = ok(sb(&home, &p.dir, &["trust", "--show"]));
    assert!(show.contains("not trusted"), "{show}");
    ok(sb(&home, &p.dir, &["trust"]));
    let run = |script: &str| {
        sb(
            &home,
            &p.dir,
            &["run", "--", "sh", "-c", &format!("touch ran; {script}")],
        )
    };
    assert_eq!(ok(run("hostname; echo $FROM")), "pinned\nmore\n");

    // The include two levels down changes: refused, and --show says so.
    p.write("more.toml", "[environment]\nset = { FROM = \"evil\" }\n");
    std::fs::remove_file(p.dir.join("ran")).expect("rm");
    refused(&run("echo $FROM"), "changed since it was trusted");
    assert!(!p.dir.join("ran").exists(), "the command ran");
    let show = ok(sb(&home, &p.dir, &["trust", "--show"]));
    assert!(show.contains("changed since it was trusted"), "{show}");
    assert!(show.contains("FROM = \"evil\""), "{show}");
    // Trusted again, the new content is what runs.
    ok(sb(&home, &p.dir, &["trust"]));
    assert_eq!(ok(run("echo $FROM")), "evil\n");

    // An include that widens after trusting is refused the same way.
    p.write(
        "extra.toml",
        "[network]\nmode = \"host\"\n[process]\nhostname = \"pinned\"\n",
    );
    refused(&run("true"), "changed since it was trusted");
    // Going back to the trusted content is trusted again.
    p.write(
        "extra.toml",
        "include = [\"more.toml\"]\n[process]\nhostname = \"pinned\"\n",
    );
    assert_eq!(ok(run("hostname")), "pinned\n");
}

#[test]
fn includes_are_read_relative_to_the_file_that_names_them() {
    let home = Project::new("trusthome");
    let p = Project::new("trustrel");
    p.write(".sbox.toml", "include = [\"dev\", \"conf/extra.toml\"]\n");
    p.write(
        "conf/extra.toml",
        "include = [\"more.toml\"]\n[process]\nhostname = \"project\"\n",
    );
    p.write(
        "conf/more.toml",
        "[environment]\nset = { FROM = \"conf\" }\n",
    );
    // Decoys where the working directory would find them.
    p.write(
        "more.toml",
        "[environment]\nset = { FROM = \"project top\" }\n",
    );
    let elsewhere = Project::new("trustcwd");
    elsewhere.write("conf/extra.toml", "[process]\nhostname = \"decoy\"\n");
    elsewhere.write("more.toml", "[environment]\nset = { FROM = \"cwd\" }\n");

    let dir = p.dir.to_string_lossy().into_owned();
    let show = ok(sb(&home, &elsewhere.dir, &["trust", "--show", &dir]));
    assert!(show.contains("# includes conf/extra.toml"), "{show}");
    assert!(show.contains("# includes conf/more.toml"), "{show}");
    assert!(show.contains("FROM = \"conf\""), "{show}");
    assert!(show.contains("hostname = \"project\""), "{show}");
    ok(sb(&home, &elsewhere.dir, &["trust", &dir]));
    let out = ok(sb(
        &home,
        &p.dir,
        &["run", "--", "sh", "-c", "hostname; echo $FROM"],
    ));
    assert_eq!(out, "project\nconf\n");
}

#[test]
fn includes_cannot_leave_the_project() {
    let home = Project::new("trusthome");
    let outside = Project::new("trustout");
    let x = outside.write("x.toml", "[network]\nmode = \"host\"\n");
    let name = outside
        .dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let p = Project::new("trustesc");
    std::os::unix::fs::symlink(&x, p.dir.join("abs-link.toml")).expect("symlink");
    std::os::unix::fs::symlink(format!("../{name}/x.toml"), p.dir.join("rel-link.toml"))
        .expect("symlink");
    let cases = [
        format!("../{name}/x.toml"),
        format!("sub/../../{name}/x.toml"),
        x.to_string_lossy().into_owned(),
        "abs-link.toml".into(),
        "rel-link.toml".into(),
    ];
    for inc in &cases {
        p.write(".sbox.toml", &format!("include = [{inc:?}]\n"));
        for args in [&["trust"][..], &["trust", "--show"]] {
            let o = sb(&home, &p.dir, args);
            refused(&o, "leads outside the project");
            assert!(stderr(&o).contains(&format!("include {inc:?}")), "{inc}");
        }
        refused(
            &sb(&home, &p.dir, &["run", "--", "touch", "ran"]),
            "not trusted",
        );
        assert!(!p.dir.join("ran").exists(), "{inc}: the command ran");
    }
    // The project file itself may not be a link out of the project.
    std::fs::remove_file(p.dir.join(".sbox.toml")).expect("rm");
    std::os::unix::fs::symlink(&x, p.dir.join(".sbox.toml")).expect("symlink");
    let o = sb(&home, &p.dir, &["trust"]);
    refused(&o, "leads outside the project");
    assert!(stderr(&o).contains(".sbox.toml"), "{}", stderr(&o));
    refused(
        &sb(&home, &p.dir, &["run", "--", "touch", "ran"]),
        "leads outside the project",
    );
    assert!(!p.dir.join("ran").exists(), "the command ran");
    // A named include is a profile lookup, not a file of the project.
    std::fs::remove_file(p.dir.join(".sbox.toml")).expect("rm");
    p.write("dev", "not a profile");
    p.write(
        ".sbox.toml",
        "include = [\"dev\"]\n[process]\nhostname = \"named\"\n",
    );
    ok(sb(&home, &p.dir, &["trust"]));
    assert_eq!(ok(sb(&home, &p.dir, &["run", "--", "hostname"])), "named\n");
}

#[test]
fn a_trust_record_of_the_older_format_is_not_honoured() {
    let home = Project::new("trusthome");
    let p = Project::new("trustold");
    let text = "include = [\"dev\", \"extra.toml\"]\n";
    p.write(".sbox.toml", text);
    p.write("extra.toml", "[process]\nhostname = \"old\"\n");
    // What earlier versions wrote: the project file's hash alone.
    let data = home.dir.join(".local/share/sbox");
    let file = p.dir.join(".sbox.toml");
    let rec = sbox::trust::record_path(&data, &file);
    std::fs::create_dir_all(rec.parent().expect("parent")).expect("mkdir");
    std::fs::write(
        &rec,
        serde_json::json!({
            "path": file,
            "sha256": sbox::trust::digest(text.as_bytes()),
            "confirmed": [],
        })
        .to_string(),
    )
    .expect("write record");
    for d in [
        home.dir.join(".local"),
        home.dir.join(".local/share"),
        data.clone(),
    ] {
        chown(&d);
    }
    chown(rec.parent().expect("parent"));
    chown(&rec);
    let o = sb(&home, &p.dir, &["run", "--", "touch", "ran"]);
    refused(&o, "changed since it was trusted");
    assert!(stderr(&o).contains("sbox trust"), "{}", stderr(&o));
    assert!(!p.dir.join("ran").exists(), "the command ran");
    let show = ok(sb(&home, &p.dir, &["trust", "--show"]));
    assert!(show.contains("changed since it was trusted"), "{show}");
    ok(sb(&home, &p.dir, &["trust"]));
    assert_eq!(ok(sb(&home, &p.dir, &["run", "--", "hostname"])), "old\n");
}

#[test]
fn taking_away_a_restriction_of_the_default_profile_is_a_widening() {
    // The user's own default profile denies chmod; a project file that
    // replaces the deny list away must be confirmed like any widening
    // (sbox trust used to compare only what a file adds).
    let home = Project::new("trusthome");
    home.write(
        ".config/sbox/profiles/dev.toml",
        "include = [\"base\"]\n[seccomp]\ndeny = [\"chmod\"]\n",
    );
    let p = Project::new("trustdeny");
    p.write(
        ".sbox.toml",
        "include = [\"dev\"]\nreplace = [\"seccomp.deny\"]\n",
    );
    let show = ok(sb(&home, &p.dir, &["trust", "--show"]));
    assert!(
        show.contains("no longer denies the system call chmod"),
        "{show}"
    );
    let o = sb(&home, &p.dir, &["trust"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(125), "{e}");
    assert!(
        e.contains("  - no longer denies the system call chmod"),
        "{e}"
    );
    assert!(e.contains("confirmation needed"), "{e}");
    refused(
        &sb(&home, &p.dir, &["run", "--", "touch", "ran"]),
        "not trusted",
    );
    assert!(!p.dir.join("ran").exists(), "the command ran");
    // Confirmed, it runs.
    ok(sb(&home, &p.dir, &["trust", "--yes"]));
    ok(sb(&home, &p.dir, &["run", "--", "touch", "ran"]));
    assert!(p.dir.join("ran").exists(), "the command did not run");
}
