//! The FUSE root keeps host ownership: a host file owned by an id that also
//! exists inside the sandbox (`_apt`, `man`, root) shows with that id, so
//! root inside administers its copy of the host like the host's root does:
//! `apt-get update/install/remove` from a local repository and `mandb` work,
//! and the host's apt lists, dpkg database and man cache are untouched.

mod common;
use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A listing of `dirs` on the host: every entry with its type, size, owner,
/// mode and mtime, and the checksum of every file this process can read.
fn host_state(dirs: &[&str]) -> String {
    let mut out = String::new();
    for d in dirs {
        let list = Command::new("find")
            .args([d, "-xdev", "-printf", "%p %y %s %u %g %m %T@\n"])
            .output()
            .expect("find");
        let mut lines: Vec<String> = String::from_utf8_lossy(&list.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        out.push_str(&lines.join("\n"));
        let sums = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "find {d} -xdev -type f -readable -exec sha256sum {{}} + 2>/dev/null | sort"
                ),
            ])
            .output()
            .expect("sha256sum");
        out.push_str(&String::from_utf8_lossy(&sums.stdout));
    }
    out
}

/// The host is a Debian-like one with apt-get and the `_apt` directories
/// (CI is); anywhere else these tests fail and say why.
fn apt_host() {
    assert!(
        Path::new("/usr/bin/apt-get").exists(),
        "these tests need a Debian-like host (apt-get); CI is one"
    );
    assert!(
        apt_partial_dirs(),
        "/var/lib/apt/lists/partial is missing: run apt-get update on the host once"
    );
}

/// The `_apt` directories apt-get update makes (present on any host that
/// ran it; made here the way apt makes them when we are root).
fn apt_partial_dirs() -> bool {
    let dirs = [
        "/var/lib/apt/lists/partial",
        "/var/cache/apt/archives/partial",
    ];
    for d in dirs {
        if !Path::new(d).exists() && user().switch {
            let st = Command::new("install")
                .args(["-d", "-o", "_apt", "-g", "root", "-m", "0700", d])
                .status()
                .expect("install -d");
            assert!(st.success(), "cannot make {d}");
        }
    }
    dirs.iter().all(|d| Path::new(d).exists())
}

const APT_SCRIPT: &str = r#"set -e
stat -c 'partial %U %a' /var/lib/apt/lists/partial /var/cache/apt/archives/partial
mkdir -p /srv/repo /srv/build/hello-sbox/DEBIAN /srv/build/hello-sbox/usr/share/hello-sbox
echo hello-from-the-package > /srv/build/hello-sbox/usr/share/hello-sbox/greeting
cat > /srv/build/hello-sbox/DEBIAN/control <<C
Package: hello-sbox
Version: 1.0
Architecture: all
Maintainer: nobody <nobody@example.invalid>
Description: tiny test package
C
dpkg-deb --root-owner-group --build /srv/build/hello-sbox /srv/repo/hello-sbox_1.0_all.deb >/dev/null
cd /srv/repo
{ dpkg-deb -f hello-sbox_1.0_all.deb
  echo "Filename: ./hello-sbox_1.0_all.deb"
  echo "Size: $(stat -c %s hello-sbox_1.0_all.deb)"
  echo "SHA256: $(sha256sum hello-sbox_1.0_all.deb | cut -d' ' -f1)"
  echo; } > Packages
echo "deb [trusted=yes] file:/srv/repo ./" > /srv/local.list
A="-o Dir::Etc::SourceList=/srv/local.list -o Dir::Etc::SourceParts=/nonexistent"
apt-get $A update 2>&1
apt-get $A install -y hello-sbox 2>&1
cat /usr/share/hello-sbox/greeting
apt-get $A remove -y hello-sbox 2>&1
test ! -e /usr/share/hello-sbox/greeting
echo package-removed
if command -v mandb >/dev/null; then mandb 2>&1; echo "mandb-exit $?"; fi
echo script-done
"#;

#[test]
fn apt_get_and_mandb_work_inside() {
    apt_host();
    let watched = [
        "/var/lib/apt/lists",
        "/var/cache/apt",
        "/var/lib/dpkg",
        "/var/cache/man",
    ];
    let before = host_state(&watched);
    let p = Project::new("apt");
    p.write("apt.sh", APT_SCRIPT);
    let script = p.dir.join("apt.sh");
    let o = output(sbox(
        &p.dir,
        &["run", "--", "sh", script.to_str().expect("utf-8 path")],
    ));
    let out = stdout(&o);
    let err = stderr(&o);
    assert!(
        o.status.success(),
        "apt inside failed: {:?}\nstdout: {out}\nstderr: {err}",
        o.status
    );
    assert!(out.contains("partial _apt 700"), "{out}");
    assert!(out.contains("hello-from-the-package"), "{out}");
    assert!(out.contains("package-removed"), "{out}");
    if Path::new("/usr/bin/mandb").exists() {
        assert!(out.contains("mandb-exit 0"), "{out}");
    }
    assert!(!out.contains("Permission denied"), "{out}");
    assert!(!out.contains("unsandboxed"), "{out}");
    assert!(out.contains("script-done"), "{out}");
    assert_eq!(
        before,
        host_state(&watched),
        "the host's apt, dpkg or man state changed"
    );
}

/// `stat -c '%n %u:%g'` of `paths` inside, with extra sbox options.
fn owners_inside(dir: &Path, opts: &[&str], paths: &[PathBuf]) -> String {
    let mut script = String::from("stat -c '%n %u:%g'");
    for p in paths {
        script.push(' ');
        script.push_str(p.to_str().expect("utf-8 path"));
    }
    ok(run_sh(dir, opts, &script))
}

#[test]
fn host_ids_keep_their_numbers_inside() {
    apt_host();
    let u = user();
    let p = Project::new("owners");
    let mine = p.write("mine", "x");
    let mut want: Vec<(PathBuf, String, String)> = vec![
        (mine.clone(), "0:0".into(), format!("{}:{}", u.uid, u.gid)),
        ("/etc/passwd".into(), "0:0".into(), "0:0".into()),
    ];
    // Directories apt and man-db make on Debian (owned by _apt and man).
    for d in ["/var/lib/apt/lists/partial", "/var/cache/man"] {
        if let Ok(m) = std::fs::metadata(d) {
            let ids = format!("{}:{}", m.uid(), m.gid());
            want.push((d.into(), ids.clone(), ids));
        }
    }
    // Made here when we are root: ids inside the map keep their number,
    // ids beyond it (the map covers 0..=65536) are nobody.
    let host = PathBuf::from(format!("/var/tmp/sbox-it-{}-owners", std::process::id()));
    if u.switch {
        let _ = std::fs::remove_dir_all(&host);
        std::fs::create_dir_all(&host).expect("host dir");
        for (name, uid, gid, shown) in [
            ("apt", 42, 65534, "42:65534"),
            ("man", 6, 12, "6:12"),
            ("daemon", 1, 1, "1:1"),
            ("top", 65536, 65536, "65536:65536"),
            ("far", 70000, 70001, "65534:65534"),
        ] {
            let f = host.join(name);
            std::fs::write(&f, "x").expect("write");
            std::os::unix::fs::chown(&f, Some(uid), Some(gid)).expect("chown");
            want.push((f, shown.into(), shown.into()));
        }
    }
    let paths: Vec<PathBuf> = want.iter().map(|w| w.0.clone()).collect();
    let plain = owners_inside(&p.dir, &[], &paths);
    let mapped = owners_inside(&p.dir, &["--map-user"], &paths);
    if u.switch {
        let _ = std::fs::remove_dir_all(&host);
    }
    for (path, shown, shown_mapped) in &want {
        let line = format!("{} {shown}", path.display());
        assert!(
            plain.lines().any(|l| l == line),
            "want {line:?} in:\n{plain}"
        );
        let line = format!("{} {shown_mapped}", path.display());
        assert!(
            mapped.lines().any(|l| l == line),
            "with --map-user want {line:?} in:\n{mapped}"
        );
    }
}

/// Inside, each user gets the host's permission checks on host-owned
/// directories: `_apt` writes its 0700 `partial/`, `man` its cache, others
/// are refused; root chowns, chmods, moves and removes them copy-on-write.
/// A host directory the server cannot read (0700, not the caller's) lists
/// as empty inside and takes new files.
#[test]
fn host_owned_dirs_follow_host_permissions_inside() {
    apt_host();
    let mut script = String::from(
        r#"P=/var/lib/apt/lists/partial
as() { u=$1; g=$2; shift 2; setpriv --reuid=$u --regid=$g --clear-groups "$@"; }
as 42 65534 touch $P/by-apt && echo apt-writes
as 6 12 touch $P/by-man 2>/dev/null || echo man-refused
as 1 1 chown 1 $P/by-apt 2>/dev/null || echo daemon-refused
test -z "$(ls -A $P | grep -v '^by-apt$')" && echo partial-empty
stat -c 'made %U %G' $P/by-apt
chown 6:12 $P && stat -c 'chowned %U:%G %a' $P
chmod 0755 /var/cache/apt/archives/partial && stat -c 'chmodded %U %a' /var/cache/apt/archives/partial
mv /var/cache/apt/archives/partial /var/cache/apt/archives/p2 && rmdir /var/cache/apt/archives/p2 && echo moved-removed
"#,
    );
    if Path::new("/var/cache/man").is_dir() {
        script.push_str(
            "as 6 12 touch /var/cache/man/by-man && echo man-writes\n\
             as 65534 65534 touch /var/cache/man/x 2>/dev/null || echo nobody-refused\n",
        );
    }
    // Made here when we are root: a 0700 directory of another id, with
    // content the caller cannot see.
    let host = PathBuf::from(format!("/var/tmp/sbox-it-{}-closed", std::process::id()));
    if user().switch {
        let _ = std::fs::remove_dir_all(&host);
        std::fs::create_dir_all(host.join("closed")).expect("host dir");
        std::fs::write(host.join("closed/secret"), "s").expect("write");
        std::os::unix::fs::chown(host.join("closed"), Some(42), Some(65534)).expect("chown");
        std::fs::set_permissions(
            host.join("closed"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("chmod");
        let c = host.join("closed");
        let c = c.display();
        script.push_str(&format!(
            "stat -c 'closed %u:%g %a' {c}\n\
             test -z \"$(ls -A {c})\" && echo closed-empty\n\
             cat {c}/secret 2>&1 | grep -q 'No such file' && echo secret-absent\n\
             as 42 65534 sh -c 'echo mine > {c}/new' && cat {c}/new\n"
        ));
    }
    let p = Project::new("perms");
    let o = run_sh(&p.dir, &[], &script);
    if user().switch {
        let _ = std::fs::remove_dir_all(&host);
    }
    let out = stdout(&o);
    let mut want = vec![
        "apt-writes",
        "man-refused",
        "daemon-refused",
        "partial-empty",
        "made _apt nogroup",
        "chowned man:man 700",
        "chmodded _apt 755",
        "moved-removed",
    ];
    if Path::new("/var/cache/man").is_dir() {
        want.extend(["man-writes", "nobody-refused"]);
    }
    if user().switch {
        want.extend([
            "closed 42:65534 700",
            "closed-empty",
            "secret-absent",
            "mine",
        ]);
    }
    for w in want {
        assert!(
            out.lines().any(|l| l == w),
            "want {w:?} in:\n{out}\nstderr: {}",
            stderr(&o)
        );
    }
}

#[test]
fn apt_get_installs_from_the_debian_mirror_inside() {
    // The same against the distribution's own mirror (the sources the host
    // has): lists fetched, a package downloaded and installed, all inside.
    apt_host();
    let watched = ["/var/lib/apt/lists", "/var/cache/apt", "/var/lib/dpkg"];
    let before = host_state(&watched);
    let p = Project::new("apt-mirror");
    let o = run_sh(
        &p.dir,
        &["--net", "host"],
        "set -e; apt-get update -qq 2>&1; \
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --reinstall --no-install-recommends hello 2>&1; \
         hello; dpkg -s hello | grep -x 'Status: install ok installed'",
    );
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "apt inside failed: {:?}\nstdout: {out}\nstderr: {}",
        o.status,
        stderr(&o)
    );
    assert!(out.contains("Hello, world!"), "{out}");
    assert!(!out.contains("Permission denied"), "{out}");
    assert_eq!(
        before,
        host_state(&watched),
        "the host's apt or dpkg state changed"
    );
}
