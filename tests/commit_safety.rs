//! `sbox commit` and `sbox diff` against a hostile sandbox: the upper layer
//! and every host directory a sandbox can reach are written by untrusted
//! code. Through the real binary as the unprivileged test user; the canary
//! files in the test user's home must come out byte-identical.

mod common;
use common::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// Removes a named sandbox when dropped.
struct Named<'a> {
    dir: &'a Path,
    name: String,
}

impl<'a> Named<'a> {
    fn new(p: &'a Project, tag: &str) -> Self {
        Named {
            dir: &p.dir,
            name: format!("cs-{tag}-{}", std::process::id()),
        }
    }

    /// `sbox run --name NAME -- sh -c SCRIPT`, which must succeed.
    fn run(&self, script: &str) {
        ok(output(sbox(
            self.dir,
            &["run", "--name", &self.name, "--", "sh", "-c", script],
        )));
    }

    fn sbox(&self, args: &[&str]) -> Output {
        output(sbox(self.dir, args))
    }
}

impl Drop for Named<'_> {
    fn drop(&mut self) {
        let _ = output(sbox(self.dir, &["rm", "-f", &self.name]));
    }
}

/// A directory in the test user's home (outside the project, so what the
/// sandbox writes there lands in its upper layer), removed when dropped.
struct HomeDir {
    path: PathBuf,
}

impl HomeDir {
    fn new(tag: &str) -> Self {
        let path = user()
            .home
            .join(format!("sbox-cs-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).expect("mkdir");
        chown(&path);
        HomeDir { path }
    }

    fn s(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    /// The names in it, sorted.
    fn names(&self) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = std::fs::read_dir(&self.path)
            .expect("read_dir")
            .flatten()
            .map(|e| e.file_name().as_bytes().to_vec())
            .collect();
        v.sort();
        v
    }
}

impl Drop for HomeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A symlink made on the host, owned by the test user (as the sandbox
/// would plant it through a project bind).
fn plant_symlink(target: &Path, at: &Path) {
    std::os::unix::fs::symlink(target, at).expect("symlink");
    let u = user();
    if u.switch {
        std::os::unix::fs::lchown(at, Some(u.uid), Some(u.gid)).expect("lchown");
    }
}

/// Files of the test user that no commit may touch: content, inode and mode.
struct Canaries(Vec<(PathBuf, Vec<u8>, u64, u32)>);

impl Canaries {
    fn take() -> Self {
        let home = user().home.clone();
        let ssh = home.join(".ssh");
        let keys = ssh.join("authorized_keys");
        static INIT: std::sync::Once = std::sync::Once::new();
        INIT.call_once(|| {
            // (Re)written once per test process, before any test reads it.
            // Private, as ssh wants them (and out of other users' reach).
            std::fs::create_dir_all(&ssh).expect("mkdir .ssh");
            chown(&ssh);
            std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700)).expect("chmod");
            let tmp = ssh.join(format!(".authorized_keys.{}", std::process::id()));
            std::fs::write(&tmp, "ssh-ed25519 AAAAC3commit-safety owner@host\n").expect("write");
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            chown(&tmp);
            std::fs::rename(&tmp, &keys).expect("rename");
            for f in [".bashrc", ".profile"] {
                let p = home.join(f);
                if !p.exists() {
                    std::fs::write(&p, format!("# {f} of the test user\n")).expect("write");
                    chown(&p);
                }
            }
        });
        let mut v = Vec::new();
        for p in [keys, home.join(".bashrc"), home.join(".profile")] {
            let md = std::fs::symlink_metadata(&p).expect("canary");
            v.push((
                p.clone(),
                std::fs::read(&p).expect("read"),
                md.ino(),
                md.mode(),
            ));
        }
        Canaries(v)
    }

    #[track_caller]
    fn check(&self) {
        for (p, data, ino, mode) in &self.0 {
            let md = std::fs::symlink_metadata(p).expect("canary still there");
            assert!(md.is_file(), "{} is no longer a file", p.display());
            assert_eq!(
                &std::fs::read(p).expect("read"),
                data,
                "{} was written",
                p.display()
            );
            assert_eq!(
                (md.ino(), md.mode()),
                (*ino, *mode),
                "{} replaced",
                p.display()
            );
        }
    }
}

#[track_caller]
fn failed(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(125),
        "expected sbox to refuse\nstdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    stderr(o)
}

#[test]
fn a_planted_temporary_name_is_not_followed() {
    let canaries = Canaries::take();
    let p = Project::new("tmpname");
    let n = Named::new(&p, "tmpname");
    let dest = HomeDir::new("tmpname");
    let keys = user().home.join(".ssh/authorized_keys");
    // The sandbox plants, in its own upper layer, a link named like the
    // temporary file of the next file, pointing at the victim.
    n.run(&format!(
        "cd {d} && echo committed > file && echo upper > upper \
         && ln -s {k} .upper.sbox-commit",
        d = dest.s(),
        k = keys.display()
    ));
    // ... and one on the host side, next to the destination (as through
    // the project bind of another sandbox).
    plant_symlink(&keys, &dest.path.join(".file.sbox-commit"));
    let out = ok(n.sbox(&["commit", &n.name, &dest.s()]));
    canaries.check();
    for (name, text) in [("file", "committed\n"), ("upper", "upper\n")] {
        let f = dest.path.join(name);
        let md = std::fs::symlink_metadata(&f).expect("committed");
        assert!(md.is_file(), "{name} is not a plain file: {out}");
        assert_eq!(std::fs::read_to_string(&f).expect("read"), text);
    }
    // The host's link is left alone, the sandbox's is committed as a link
    // (not written through), and no temporary is left.
    for l in [".file.sbox-commit", ".upper.sbox-commit"] {
        let md = std::fs::symlink_metadata(dest.path.join(l)).expect("link");
        assert!(md.file_type().is_symlink(), "{l}");
    }
    assert_eq!(
        dest.names(),
        [
            &b".file.sbox-commit"[..],
            b".upper.sbox-commit",
            b"file",
            b"upper"
        ]
    );
}

#[test]
fn a_host_symlink_in_the_destination_is_not_followed() {
    let canaries = Canaries::take();
    let p = Project::new("hostlink");
    let n = Named::new(&p, "hostlink");
    let dest = HomeDir::new("hostlink");
    let keys = HomeDir::new("keys");
    let victim = HomeDir::new("victim");
    std::fs::write(victim.path.join("f"), "victim\n").expect("write");
    chown(&victim.path.join("f"));
    // `gone` is a real directory on the host while the sandbox runs.
    std::fs::create_dir(dest.path.join("gone")).expect("mkdir");
    chown(&dest.path.join("gone"));
    std::fs::write(dest.path.join("gone/f"), "host\n").expect("write");
    chown(&dest.path.join("gone/f"));
    n.run(&format!(
        "cd {d} && echo first > a-first && mkdir sub && echo evil > sub/f && rm gone/f \
         && mkdir {k}/ssh && echo evil-key > {k}/ssh/authorized_keys",
        d = dest.s(),
        k = keys.s(),
    ));
    let diff = ok(n.sbox(&["diff", &n.name]));
    assert!(diff.contains(&format!("D {}/gone/f", dest.s())), "{diff}");
    // Afterwards the sandbox (through a project bind) turns the
    // directories into links to places it wants written or emptied.
    plant_symlink(&victim.path, &dest.path.join("sub"));
    std::fs::remove_file(dest.path.join("gone/f")).expect("rm");
    std::fs::remove_dir(dest.path.join("gone")).expect("rmdir");
    plant_symlink(&victim.path, &dest.path.join("gone"));
    plant_symlink(&user().home.join(".ssh"), &keys.path.join("ssh"));

    let sub = format!("{}/sub", dest.s());
    let gone = format!("{}/gone", dest.s());
    for args in [
        vec!["commit", &n.name, &dest.s()],
        vec!["commit", "--dry-run", &n.name, &dest.s()],
        vec!["commit", &n.name, &sub],
        vec!["commit", &n.name, &gone],
    ] {
        let o = n.sbox(&args);
        let err = failed(&o);
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains("symlink"), "{err}");
        assert!(
            err.contains(&sub) || err.contains(&gone),
            "the error names the link: {err}"
        );
    }
    // Into a hidden directory: refused, as before.
    let err = failed(&n.sbox(&["commit", &n.name, &keys.s()]));
    assert!(err.contains(&format!("{}/ssh", keys.s())), "{err}");
    // The directories leading to a PATH the user names are resolved the
    // host's way, once, and the listing says where they lead.
    let o = n.sbox(&["commit", "--dry-run", &n.name, &format!("{sub}/f")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("{sub}/f is {}/f on the host", victim.s())),
        "{}",
        stderr(&o)
    );
    canaries.check();
    assert_eq!(
        std::fs::read_to_string(victim.path.join("f")).expect("victim"),
        "victim\n"
    );
    assert_eq!(victim.names(), [b"f"]);
    // Refused cleanly: nothing else of the commit was written.
    assert!(!dest.path.join("a-first").exists());
    for l in [
        dest.path.join("sub"),
        dest.path.join("gone"),
        keys.path.join("ssh"),
    ] {
        let md = std::fs::symlink_metadata(&l).expect("link");
        assert!(md.file_type().is_symlink(), "{}", l.display());
    }
    assert_eq!(dest.names(), [&b"gone"[..], b"sub"]);
}

#[test]
fn set_id_bits_are_not_committed() {
    let canaries = Canaries::take();
    let p = Project::new("setid");
    let n = Named::new(&p, "setid");
    let dest = HomeDir::new("setid");
    n.run(&format!(
        "cd {d} && printf '#!/bin/sh\\nid\\n' > tool && chmod 6755 tool \
         && printf x > plain && chmod 2640 plain && mkdir dir && chmod 3775 dir",
        d = dest.s()
    ));
    let dry = ok(n.sbox(&["commit", "--dry-run", &n.name, &dest.s()]));
    assert!(!dest.path.join("tool").exists());
    ok(n.sbox(&["commit", &n.name, &dest.s()]));
    canaries.check();
    let mode = |f: &str| {
        std::fs::symlink_metadata(dest.path.join(f))
            .expect("committed")
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("tool"), 0o755);
    assert_eq!(mode("plain"), 0o640);
    assert_eq!(mode("dir") & 0o6000, 0, "{:o}", mode("dir"));
    assert_eq!(mode("dir") & 0o777, 0o775);
    // The listing shows the modes that are written.
    assert!(
        dry.lines()
            .any(|l| l.starts_with("A -rwxr-xr-x ") && l.contains("/tool  (setuid/setgid")),
        "{dry}"
    );
    assert!(
        dry.lines()
            .any(|l| l.starts_with("A -rw-r----- ") && l.contains("/plain")),
        "{dry}"
    );
    assert!(!dry.contains("rws") && !dry.contains("r-s"), "{dry}");
}

#[test]
fn special_files_are_skipped_and_nothing_blocks() {
    let canaries = Canaries::take();
    let p = Project::new("special");
    let n = Named::new(&p, "special");
    let dest = HomeDir::new("special");
    n.run(&format!(
        "cd {d} && mkfifo fifo && python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind(\"sock\")' \
         && echo after > zz-after",
        d = dest.s()
    ));
    let mut child = spawn(sbox(&p.dir, &["commit", &n.name, &dest.s()]));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sbox commit blocked on a special file");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let o = child.wait_with_output().expect("output");
    assert!(status.success(), "{status:?}: {}", stderr(&o));
    let out = stdout(&o);
    for (name, kind) in [("fifo", "fifo"), ("sock", "socket")] {
        assert!(
            out.lines()
                .any(|l| l.contains(&format!("{}/{name}", dest.s()))
                    && l.contains("skipped")
                    && l.contains(kind)),
            "{name} listed as skipped: {out}"
        );
        assert!(
            std::fs::symlink_metadata(dest.path.join(name)).is_err(),
            "{name} reached the host"
        );
    }
    assert_eq!(
        std::fs::read_to_string(dest.path.join("zz-after")).expect("committed"),
        "after\n"
    );
    canaries.check();
}

#[test]
fn names_are_escaped_on_the_terminal_and_lossless_in_json() {
    let canaries = Canaries::take();
    let p = Project::new("names");
    let n = Named::new(&p, "names");
    let dest = HomeDir::new("names");
    n.run(&format!(
        "cd {d} && e=\"$(printf 'evil\\nD ')\" && mkdir -p \"$e/etc\" \
         && touch \"$e/etc/$(printf 'forged\\033[2J')\" \"$(printf 'bad\\377')\" \
         'back\\slash' 'caf\u{e9}' \"$(printf 'rtl\\342\\200\\256x')\"",
        d = dest.s()
    ));
    let evil = "evil\nD /etc/forged\x1b[2J";
    let shown = [
        r"evil\nD /etc/forged\033[2J",
        r"bad\377",
        r"back\\slash",
        "caf\u{e9}",
        r"rtl\342\200\256x",
    ];
    let check_text = |out: &[u8], what: &str| {
        assert!(
            !out.iter().any(|b| *b == 0x1b || *b == 0xff),
            "{what}: raw bytes reach the terminal"
        );
        assert!(
            !out.windows(3).any(|w| w == "\u{202e}".as_bytes()),
            "{what}: a bidi override reaches the terminal"
        );
        let text = String::from_utf8_lossy(out);
        assert!(
            !text.lines().any(|l| l.starts_with("D /etc/forged")),
            "{what}: a forged line: {text}"
        );
        for s in shown {
            assert!(
                text.lines()
                    .any(|l| l.ends_with(&format!("{}/{s}", dest.s()))),
                "{what}: {s} not shown escaped: {text}"
            );
        }
    };
    let o = n.sbox(&["diff", &n.name]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_text(&o.stdout, "diff");

    let o = n.sbox(&["diff", "--json", &n.name]);
    assert!(o.status.success(), "diff --json: {}", stderr(&o));
    assert!(
        !o.stdout
            .windows(3)
            .any(|w| w == "\u{202e}".as_bytes() || w[0] == 0x1b),
        "diff --json: raw controls reach the terminal"
    );
    let v: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).expect("json");
    let strings: Vec<&str> = v.iter().filter_map(|r| r["path"].as_str()).collect();
    for name in [evil, r"back\slash", "caf\u{e9}", "rtl\u{202e}x"] {
        let want = format!("{}/{name}", dest.s());
        assert!(strings.contains(&want.as_str()), "{want:?} in {strings:?}");
    }
    // Not UTF-8: the bytes, as an array of numbers.
    let mut bad = dest.s().into_bytes();
    bad.extend_from_slice(b"/bad\xff");
    let want: Vec<serde_json::Value> = bad.iter().map(|b| (*b).into()).collect();
    assert!(
        v.iter()
            .any(|r| r["path"].as_array() == Some(&want) && r["kind"] == "A"),
        "{v:?}"
    );

    let o = n.sbox(&["commit", &n.name, &dest.s()]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_text(&o.stdout, "commit");
    let mut want: Vec<Vec<u8>> = [&b"evil\nD "[..], b"bad\xff", br"back\slash"]
        .iter()
        .map(|b| b.to_vec())
        .collect();
    want.push("caf\u{e9}".as_bytes().to_vec());
    want.push("rtl\u{202e}x".as_bytes().to_vec());
    want.sort();
    assert_eq!(dest.names(), want);
    assert!(dest.path.join(OsStr::from_bytes(b"bad\xff")).is_file());
    canaries.check();
}

#[test]
fn a_refused_commit_leaves_nothing_half_made() {
    let canaries = Canaries::take();
    let p = Project::new("halfmade");
    let n = Named::new(&p, "halfmade");
    let dest = HomeDir::new("halfmade");
    n.run(&format!("cd {d} && echo a > a && echo x > x", d = dest.s()));
    // Meanwhile the host got a directory where the sandbox has a file.
    std::fs::create_dir(dest.path.join("x")).expect("mkdir");
    chown(&dest.path.join("x"));
    std::fs::write(dest.path.join("x/keep"), "keep\n").expect("write");
    chown(&dest.path.join("x/keep"));
    let err = failed(&n.sbox(&["commit", &n.name, &dest.s()]));
    assert!(err.contains(&format!("{}/x", dest.s())), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    // Neither the file before it nor a temporary.
    assert_eq!(dest.names(), [b"x"]);
    assert_eq!(
        std::fs::read_to_string(dest.path.join("x/keep")).expect("kept"),
        "keep\n"
    );
    canaries.check();
}
