//! sbox's FUSE root (`--overlay fuse`, the default) through the real
//! binary, as the unprivileged test user: root administers its own copy of
//! the host, POSIX semantics hold on lower-layer directories, real programs
//! (git, dpkg, tar, find) work, host changes show after the cache window,
//! killing the server (the launcher) takes everything down cleanly, and
//! secrets stay out of reach.

mod common;
use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const FUSE: &[&str] = &["--overlay", "fuse"];

/// A directory on the host under /var/tmp (so it is in the sandbox's lower
/// layer, not under the private /tmp), owned by root when the tests run as
/// root; removed when dropped.
struct HostDir(PathBuf);

impl HostDir {
    fn new(tag: &str) -> HostDir {
        let p = PathBuf::from(format!("/var/tmp/sbox-it-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("host dir");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        HostDir(p)
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The filesystem type of the sandbox's `/` as the sandbox reports it.
const ROOT_FSTYPE: &str = r#"awk '$5 == "/" { for (i = 7; i <= NF; i++) if ($i == "-") print "root-fs " $(i + 1) }' /proc/self/mountinfo"#;

/// Lines of `out`, each of `want` must be among them (in order).
#[track_caller]
fn assert_lines(out: &str, want: &[&str]) {
    let lines: Vec<&str> = out.lines().collect();
    let mut at = 0;
    for w in want {
        match lines[at..].iter().position(|l| l == w) {
            Some(i) => at += i + 1,
            None => panic!("missing line {w:?} (in order) in output:\n{out}"),
        }
    }
}

fn read(p: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(p.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
}

/// FUSE mounts of sbox in a mountinfo text.
fn sbox_fuse_mounts(mountinfo: &str) -> Vec<&str> {
    mountinfo
        .lines()
        // sbox's own mounts (source "sbox"); the in-process overlay tests'
        // mounts ("sbox-test") are theirs to clean up.
        .filter(|l| l.contains(" - fuse.sbox sbox "))
        .collect()
}

#[test]
fn root_administers_its_copy_of_the_host() {
    let p = Project::new("fuse-admin");
    let probe = format!("/usr/bin/sbox-probe-{}", std::process::id());
    let hosts = read("/etc/hosts");
    let hostname = read("/etc/hostname");
    let script = format!(
        "{ROOT_FSTYPE}
        echo x > {probe} && cat {probe} && stat -c 'new %U:%G %a' {probe}
        echo '1.2.3.4 x' >> /etc/hosts && tail -n 1 /etc/hosts
        stat -c 'env %U:%G' /usr/bin/env
        stat -c 'hosts %U' /etc/hosts
        if setpriv --reuid 1000 --regid 1000 --clear-groups sh -c 'echo > /etc/hostname' 2>/dev/null
        then echo user-wrote-hostname; else echo user-denied-hostname; fi
        if setpriv --reuid 1000 --regid 1000 --clear-groups sh -c 'echo > /usr/bin/sbox-by-user' 2>/dev/null
        then echo user-created; else echo user-denied-create; fi
        if setpriv --reuid 1000 --regid 1000 --clear-groups sh -c 'rm -f /usr/bin/env' 2>/dev/null
        then echo user-removed; else echo user-denied-rm; fi
        rm {probe} && test ! -e {probe} && echo removed"
    );
    let out = ok(run_sh(&p.dir, FUSE, &script));
    assert_lines(
        &out,
        &[
            "root-fs fuse.sbox",
            "x",
            "new root:root 644",
            "1.2.3.4 x",
            "env root:root",
            "hosts root",
            "user-denied-hostname",
            "user-denied-create",
            "user-denied-rm",
            "removed",
        ],
    );
    assert!(!Path::new(&probe).exists(), "{probe} reached the host");
    assert!(!Path::new("/usr/bin/sbox-by-user").exists());
    assert_eq!(read("/etc/hosts"), hosts, "the host's /etc/hosts changed");
    assert_eq!(read("/etc/hostname"), hostname);
    // The next sandbox starts from the host again.
    let again = ok(run_sh(
        &p.dir,
        FUSE,
        &format!("test -e {probe} && echo stale; grep -c '^1.2.3.4 x$' /etc/hosts || true"),
    ));
    assert_eq!(again, "0\n");
}

/// Checks the POSIX suite reports, in this order.
const POSIX_CHECKS: &[&str] = &[
    "rename_file",
    "rename_dir",
    "rename_lower_dir",
    "rename_lower_file",
    "renameat2_exchange",
    "renameat2_noreplace",
    "hard_links",
    "whiteouts",
    "copy_up_keeps_metadata",
    "chown_chmod_kept",
    "permissions_for_a_non_root_user",
    "flock_locks",
    "fcntl_locks",
    "mmap_shared_write",
    "sparse_5g",
    "readdir_while_changing",
    "fsync_and_statfs",
    "symlinks_fifos_and_times",
];

#[test]
fn posix_semantics_on_lower_layer_directories() {
    let p = Project::new("fuse-posix");
    p.write("posix.py", POSIX_SUITE);
    // A lower file with known metadata: root's, 0754, an old mtime, an xattr.
    let host = HostDir::new("posix");
    let lower = host.path("file");
    std::fs::write(&lower, "lower-content\n").expect("lower file");
    std::fs::set_permissions(&lower, std::fs::Permissions::from_mode(0o754)).expect("chmod");
    let c = std::ffi::CString::new(lower.to_str().expect("utf8")).expect("path");
    let times = [
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 0,
        },
    ];
    assert_eq!(
        // SAFETY: valid path and two timespecs.
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) },
        0
    );
    // SAFETY: valid strings and value.
    let r = unsafe {
        libc::setxattr(
            c.as_ptr(),
            c"user.it.test".as_ptr(),
            b"lower-xattr".as_ptr().cast(),
            11,
            0,
        )
    };
    assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
    let hostname = read("/etc/hostname");
    let work = format!("/opt/sbox-posix-{}", std::process::id());
    let o = output(sbox(
        &p.dir,
        &[
            "run",
            "--overlay",
            "fuse",
            "--",
            "python3",
            "posix.py",
            &work,
            lower.to_str().expect("utf8"),
        ],
    ));
    let out = stdout(&o);
    let report = format!("stdout:\n{out}\nstderr:\n{}", stderr(&o));
    let failed: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}\n{report}");
    for name in POSIX_CHECKS {
        assert!(
            out.lines().any(|l| l == format!("ok {name}")),
            "check {name} did not report ok\n{report}"
        );
    }
    assert!(out.lines().any(|l| l == "DONE"), "{report}");
    assert!(o.status.success(), "{report}");
    // Nothing reached the host.
    assert!(!Path::new(&work).exists(), "{work} reached the host");
    for l in out.lines() {
        if let Some(d) = l.strip_prefix("LOWERDIR ") {
            assert!(Path::new(d).is_dir(), "host lost {d}");
            assert!(!Path::new(&format!("{d}-renamed-by-sbox")).exists());
        }
        if let Some(f) = l.strip_prefix("WHITEOUT ") {
            assert!(Path::new(f).exists(), "host lost {f}");
        }
    }
    assert_eq!(read(&lower), b"lower-content\n");
    let m = std::fs::metadata(&lower).expect("lower");
    assert_eq!(m.mode() & 0o7777, 0o754);
    assert_eq!(m.mtime(), 1_000_000_000);
    // SAFETY: size query with a null buffer.
    let added = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"user.it.added".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    assert!(added < 0, "an xattr set inside reached the host");
    assert_eq!(read("/etc/hostname"), hostname);
}

#[test]
fn git_commits_in_a_lower_layer_directory() {
    let p = Project::new("fuse-git");
    let repo = format!("/opt/sbox-repo-{}", std::process::id());
    let script = format!(
        "set -e
        command -v git >/dev/null || {{ echo 'git is not installed (apt-get install git)'; exit 1; }}
        g() {{ git -c user.name=sbox -c user.email=sbox@example.invalid \"$@\"; }}
        mkdir {repo} && cd {repo}
        git init -q .
        echo hello > a.txt && mkdir sub && echo b > sub/b.txt
        g add -A && g commit -q -m first
        echo more >> a.txt && g mv sub/b.txt sub/c.txt && g commit -q -am second
        g log --oneline | wc -l
        g status --porcelain | wc -l
        g gc -q
        g fsck --strict && echo fsck-ok
        g log --format=%s | tr '\\n' ' '; echo
        cat sub/c.txt"
    );
    let o = run_sh(&p.dir, FUSE, &script);
    assert_eq!(
        stdout(&o),
        "2\n0\nfsck-ok\nsecond first \nb\n",
        "stderr: {}",
        stderr(&o)
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!Path::new(&repo).exists(), "{repo} reached the host");
}

/// Builds a .deb in `dir`: a file under /usr/share/sbox-test/, a postinst
/// that adds a system user, a postrm that removes it.
fn build_deb(dir: &Path) -> PathBuf {
    let root = dir.join("pkgroot");
    let debian = root.join("DEBIAN");
    std::fs::create_dir_all(&debian).expect("DEBIAN");
    std::fs::create_dir_all(root.join("usr/share/sbox-test")).expect("share");
    std::fs::write(
        root.join("usr/share/sbox-test/hello.txt"),
        "hello from a package\n",
    )
    .expect("file");
    std::fs::write(
        debian.join("control"),
        "Package: sbox-test-pkg\nVersion: 1.0\nArchitecture: all\n\
         Maintainer: sbox tests <sbox@example.invalid>\n\
         Description: package the sbox tests install in a sandbox\n \
         It adds a file and a system user.\n",
    )
    .expect("control");
    for (name, text) in [
        (
            "postinst",
            "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then useradd --system sboxtestsvc; fi\n",
        ),
        (
            "postrm",
            "#!/bin/sh\nset -e\nif [ \"$1\" = remove ] || [ \"$1\" = purge ]; then userdel sboxtestsvc; fi\n",
        ),
    ] {
        let f = debian.join(name);
        std::fs::write(&f, text).expect("script");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    for d in [&root, &debian] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let deb = dir.join("sbox-test.deb");
    let o = std::process::Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(&deb)
        .output()
        .expect("dpkg-deb (package dpkg)");
    assert!(
        o.status.success(),
        "dpkg-deb: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    chown(&deb);
    deb
}

/// What shows that a host file did not change, also to a runner that may
/// not read it (/etc/shadow): its inode, size, mode, owner and change time
/// (any write or rename sets them anew), and its content when readable.
#[derive(Debug, PartialEq)]
struct HostFile {
    ino: u64,
    size: u64,
    mode: u32,
    uid: u32,
    mtime: (i64, i64),
    ctime: (i64, i64),
    content: Option<Vec<u8>>,
}

impl HostFile {
    fn of(p: impl AsRef<Path>) -> HostFile {
        let p = p.as_ref();
        let md = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        HostFile {
            ino: md.ino(),
            size: md.size(),
            mode: md.mode(),
            uid: md.uid(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            content: std::fs::read(p).ok(),
        }
    }
}

#[test]
fn dpkg_installs_and_removes_a_package_inside_only() {
    let p = Project::new("fuse-dpkg");
    build_deb(&p.dir);
    let watched = [
        "/var/lib/dpkg/status",
        "/etc/passwd",
        "/etc/group",
        "/etc/shadow",
        "/etc/gshadow",
    ];
    let before: Vec<HostFile> = watched.iter().map(HostFile::of).collect();
    let script = "set -e
        dpkg -i sbox-test.deb >/dev/null
        cat /usr/share/sbox-test/hello.txt
        getent passwd sboxtestsvc | cut -d: -f1
        id -u sboxtestsvc >/dev/null && echo has-uid
        dpkg-query -W -f='${Status}\\n' sbox-test-pkg
        dpkg -r sbox-test-pkg >/dev/null
        getent passwd sboxtestsvc || echo user-gone
        test -e /usr/share/sbox-test/hello.txt || echo files-gone
        dpkg-query -W -f='${Status}\\n' sbox-test-pkg 2>/dev/null | grep -q '^install ok' || echo not-installed";
    let o = run_sh(&p.dir, FUSE, script);
    let out = ok(o);
    assert_eq!(
        out,
        "hello from a package\nsboxtestsvc\nhas-uid\ninstall ok installed\nuser-gone\nfiles-gone\nnot-installed\n"
    );
    for (f, b) in watched.iter().zip(&before) {
        assert!(HostFile::of(f) == *b, "{f} changed on the host");
    }
    assert!(!Path::new("/usr/share/sbox-test").exists());
    assert!(!String::from_utf8_lossy(&read("/etc/passwd")).contains("sboxtestsvc"));
}

#[test]
fn big_trees_untar_chown_rm_and_find_the_whole_root() {
    let p = Project::new("fuse-tree");
    // 10,000 small files in 100 directories, as a tarball in the project.
    let src = p.dir.join("src");
    for d in 0..100 {
        let dir = src.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..100 {
            std::fs::write(dir.join(format!("f{}", d * 100 + f)), format!("{d}/{f}\n"))
                .expect("write");
        }
    }
    let o = std::process::Command::new("tar")
        .arg("-C")
        .arg(&src)
        .args(["-cf"])
        .arg(p.dir.join("t.tar"))
        .arg(".")
        .output()
        .expect("tar");
    assert!(
        o.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::remove_dir_all(&src).expect("rm src");
    chown(&p.dir.join("t.tar"));
    let script = "set -e
        mkdir /opt/untar && tar -C /opt/untar -xf t.tar
        find /opt/untar -type f | wc -l
        cat /opt/untar/d42/f4242
        chown -R 1234:1234 /opt/untar
        find /opt/untar \\( ! -uid 1234 -o ! -gid 1234 \\) | wc -l
        rm -rf /opt/untar && test ! -e /opt/untar && echo removed
        ls /opt | grep -c untar || true
        chown -R 1234:1234 /usr/share/doc/dpkg
        find /usr/share/doc/dpkg ! -uid 1234 | wc -l
        stat -c %u:%g /usr/share/doc/dpkg/copyright
        find / -xdev 2>/dev/null | wc -l";
    let start = Instant::now();
    let out = ok(run_sh(&p.dir, FUSE, script));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..7],
        &["10000", "42/42", "0", "removed", "0", "0", "1234:1234"],
        "{out}"
    );
    let n: u64 = lines[7].trim().parse().expect("count");
    assert!(n > 20_000, "find / -xdev saw only {n} entries");
    assert!(!Path::new("/opt/untar").exists());
    let doc = std::fs::metadata("/usr/share/doc/dpkg/copyright").expect("host doc");
    assert_eq!(doc.uid(), 0, "chown reached the host");
    eprintln!("big trees: {:?}, find saw {n} entries", start.elapsed());
}

#[test]
fn host_changes_show_inside_after_the_cache_window() {
    let p = Project::new("fuse-hostchg");
    let host = HostDir::new("hostchg");
    std::fs::write(host.path("same-size"), "one\n").expect("write");
    std::fs::write(host.path("grows"), "short\n").expect("write");
    std::fs::write(host.path("replaced"), "old inode\n").expect("write");
    std::fs::write(host.path("gone"), "g\n").expect("write");
    let d = host.0.display();
    let wait_secs = sbox_cache_secs() as f64 + 1.0;
    let script = format!(
        "cd {d}
        cat same-size grows replaced; ls
        exec 3< same-size
        touch \"$OLDPWD/ready\"
        i=0; while [ ! -e \"$OLDPWD/go\" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
        sleep {wait_secs}
        echo after; cat same-size grows replaced new; ls"
    );
    let child = spawn(sbox(
        &p.dir,
        &["run", "--overlay", "fuse", "--", "sh", "-c", &script],
    ));
    assert!(
        wait_for(30, || p.dir.join("ready").exists()),
        "the sandbox did not start"
    );
    // Change the host under the running sandbox, in place and by rename.
    std::fs::write(host.path("same-size"), "two\n").expect("write");
    std::fs::write(host.path("grows"), "a longer line now\n").expect("write");
    std::fs::write(host.path("replaced.tmp"), "new inode\n").expect("write");
    std::fs::rename(host.path("replaced.tmp"), host.path("replaced")).expect("rename");
    std::fs::write(host.path("new"), "new file\n").expect("write");
    std::fs::remove_file(host.path("gone")).expect("rm");
    std::fs::write(p.dir.join("go"), "").expect("go");
    let o = child.wait_with_output().expect("wait");
    let out = ok(o);
    assert_eq!(
        out,
        "one\nshort\nold inode\ngone\ngrows\nreplaced\nsame-size\n\
         after\ntwo\na longer line now\nnew inode\nnew file\ngrows\nnew\nreplaced\nsame-size\n"
    );
}

#[test]
fn host_cache_zero_shows_host_changes_at_once() {
    let p = Project::new("fuse-nocache");
    let host = HostDir::new("nocache");
    std::fs::write(host.path("same-size"), "one\n").expect("write");
    let profile = p.dir.join("no-cache.toml");
    std::fs::write(
        &profile,
        "include = [\"base\"]\n[filesystem]\nhost_cache = \"0\"\n",
    )
    .expect("profile");
    let d = host.0.display();
    // No sleep after the change: with the default window (10 s) the old
    // content and listing would still show.
    let script = format!(
        "cd {d}
        cat same-size; ls
        touch \"$OLDPWD/ready\"
        i=0; while [ ! -e \"$OLDPWD/go\" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
        echo after; cat same-size; ls"
    );
    let child = spawn(sbox(
        &p.dir,
        &[
            "run",
            "--profile",
            &profile.display().to_string(),
            "--",
            "sh",
            "-c",
            &script,
        ],
    ));
    assert!(
        wait_for(30, || p.dir.join("ready").exists()),
        "the sandbox did not start"
    );
    std::fs::write(host.path("same-size"), "two\n").expect("write");
    std::fs::write(host.path("new"), "n\n").expect("write");
    std::fs::write(p.dir.join("go"), "").expect("go");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(ok(o), "one\nsame-size\nafter\ntwo\nnew\nsame-size\n");
}

/// The launcher's cache window for the FUSE root.
fn sbox_cache_secs() -> u64 {
    sbox::policy::DEFAULT_HOST_CACHE_SECS
}

#[test]
fn killing_the_fuse_server_mid_io_ends_the_sandbox_cleanly() {
    let p = Project::new("fuse-kill");
    let tag = format!("sbox-fuse-kill-{}", std::process::id());
    // File I/O through the FUSE root in a loop: copies up, reads, lists.
    let script = format!(
        "i=0; while :; do
            i=$((i+1)); cat /usr/bin/env > /opt/io-$i; rm -f /opt/io-$((i-1))
            ls -R /usr/share/doc >/dev/null; touch \"$PWD/running\"
        done # {tag}"
    );
    let mut child = spawn(sbox(
        &p.dir,
        &["run", "--overlay", "fuse", "--", "sh", "-c", &script],
    ));
    let launcher = child.id() as i32;
    assert!(
        wait_for(30, || p.dir.join("running").exists()),
        "the I/O loop did not start"
    );
    std::thread::sleep(Duration::from_millis(300));
    let before = pids_with_cmdline(&tag);
    assert!(
        before.len() >= 3,
        "launcher, init and the command: {before:?}"
    );
    let state: Vec<_> = state_entries()
        .into_iter()
        .filter(|n| n.to_string_lossy().starts_with(&format!("run-{launcher}-")))
        .collect();
    assert_eq!(state.len(), 1, "state dir of the launcher: {state:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(launcher),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let _ = child.wait();
    let t = Instant::now();
    assert!(
        wait_for(10, || pids_with_cmdline(&tag).is_empty()),
        "sandbox processes outlived the FUSE server: {:?}",
        pids_with_cmdline(&tag)
            .iter()
            .map(|p| (
                p,
                std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default()
            ))
            .collect::<Vec<_>>()
    );
    eprintln!("sandbox gone {:?} after the kill", t.elapsed());
    for f in ["/proc/self/mountinfo", "/proc/1/mountinfo"] {
        let mi = std::fs::read_to_string(f).expect("mountinfo");
        assert!(
            sbox_fuse_mounts(&mi).is_empty(),
            "{f}: {:?}",
            sbox_fuse_mounts(&mi)
        );
    }
    // Gone, or a zombie waiting for the host's pid 1 to reap it (the
    // sandbox's init lingers a moment without a command line while the
    // kernel tears its pid namespace down).
    let running = || -> Vec<(i32, String)> {
        before
            .iter()
            .filter_map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let state = stat.rsplit(')').next()?.split_whitespace().next()?;
                (!matches!(state, "Z" | "X")).then_some((*pid, stat))
            })
            .collect()
    };
    assert!(
        wait_for(10, || running().is_empty()),
        "sandbox processes still running: {:?}",
        running()
    );
    eprintln!(
        "every sandbox process gone {:?} after the kill",
        t.elapsed()
    );
    assert!(
        state_base().join(&state[0]).exists(),
        "state of a killed launcher cannot have been cleaned yet"
    );
    // The next run works and removes the stale state.
    let out = ok(run_sh(
        &p.dir,
        FUSE,
        "cat /usr/bin/env > /opt/again && echo works",
    ));
    assert_eq!(out, "works\n");
    assert!(
        !state_base().join(&state[0]).exists(),
        "stale state {:?} was not cleaned",
        state[0]
    );
}

#[test]
fn secrets_are_out_of_reach_on_the_fuse_root() {
    let secret = canary_secret();
    let p = Project::new("fuse-secret");
    let home = user().home.display().to_string();
    // The directory that holds the home (other users' keys are elsewhere),
    // and what only this canary says.
    let homes = user().home.parent().expect("parent").display().to_string();
    let token = canary_text();
    let token = token.trim();
    let script = format!(
        "try() {{ if out=$(sh -c \"$2\" 2>/dev/null) && [ -n \"$out$3\" ]; then echo \"REACHED $1: $out\"; else echo \"denied $1\"; fi; }}
        try exists 'test -e {home}/.ssh && echo yes'
        try stat 'stat {home}/.ssh/id_ed25519'
        try listed 'ls -A {home} | grep -x .ssh'
        try mkdir 'mkdir {home}/.ssh && echo made' x
        try create 'echo x > {home}/.ssh && echo made' x
        try dotdot 'cat {home}/.ssh/../.ssh/id_ed25519'
        try dotdot2 'mkdir -p {home}/x && cat {home}/x/../.ssh/id_ed25519'
        try symlink 'ln -s {home}/.ssh/id_ed25519 /opt/l && cat /opt/l'
        try dirlink 'ln -s {home}/.ssh /opt/d && ls -A /opt/d/ && cat /opt/d/id_ed25519'
        try projlink 'ln -s {home}/.ssh/id_ed25519 ./key && cat ./key'
        try hardlink 'ln {home}/.ssh/id_ed25519 /opt/h && cat /opt/h'
        try hardlink-project 'ln {home}/.ssh/id_ed25519 ./h && cat ./h'
        try rename-home 'mv {home} /opt/moved-home 2>/dev/null; cat /opt/moved-home/.ssh/id_ed25519'
        try copy-home 'cp -a {home} /opt/home-copy 2>/dev/null; cat /opt/home-copy/.ssh/id_ed25519'
        try find 'find / -xdev -name id_ed25519 2>/dev/null | grep -F {homes}/'
        try grep 'grep -r {token} {homes} 2>/dev/null'
        try python 'python3 -c \"import os; print(open(os.path.join(\\\"{home}\\\", \\\".ssh\\\", \\\"id_ed25519\\\")).read())\"'
        echo end"
    );
    let o = run_sh(&p.dir, FUSE, &script);
    let out = stdout(&o);
    assert!(!out.contains("CANARY"), "{out}");
    assert!(!out.contains("REACHED"), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("denied ")).count(),
        17,
        "{out}"
    );
    assert!(out.ends_with("end\n"), "{out}\n{}", stderr(&o));
    // The host copy is untouched and nothing was made next to it.
    assert_eq!(read(&secret), canary_text().as_bytes());
    let names: Vec<_> = std::fs::read_dir(secret.parent().expect("dir"))
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("id_ed25519")]);
    // No hard link to it landed in the (host) project either.
    assert!(std::fs::symlink_metadata(p.dir.join("h")).is_err());
}

/// The POSIX suite, run inside the sandbox by python3.
const POSIX_SUITE: &str = r##"#!/usr/bin/python3
# POSIX semantics on sbox's FUSE root, run INSIDE the sandbox as root.
#   posix.py WORKDIR LOWERFILE
# WORKDIR: a new directory under a lower-layer directory (e.g. /opt/x);
# LOWERFILE: a host file, content "lower-content...", mode 0754, owner
# root, mtime 1000000000, xattr user.it.test = "lower-xattr".
# Prints "ok NAME" or "FAIL NAME: why" per check, then "DONE".
import ctypes
import errno
import fcntl
import hashlib
import mmap
import os
import stat
import sys
import time
import traceback

WORK = sys.argv[1]
LOWERFILE = sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def renameat2(a, b, flags):
    r = libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), flags)
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), a)


def W(p, data, mode="w"):
    with open(p, mode) as f:
        f.write(data)


def R(p):
    with open(p) as f:
        return f.read()


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def expect_errno(codes, fn, *a):
    try:
        fn(*a)
    except OSError as e:
        check(e.errno in codes, f"{fn.__name__}{a}: errno {e.errno} not in {codes}")
        return
    raise Fail(f"{fn.__name__}{a} succeeded")


def as_user(uid, gid, fn):
    """Run fn in a child with uid/gid; returns its exit code (0 = fn True)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            code = 0 if fn() else 1
        except Exception:
            traceback.print_exc()
            code = 2
        os._exit(code)
    _, st = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(st)


def tree(root):
    """{relative path: (kind, size, sha256 or link target)} of a tree."""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", 0, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", 0, "")
            else:
                with open(p, "rb") as f:
                    out[rel] = ("f", st.st_size, hashlib.sha256(f.read()).hexdigest())
    return out


CHECKS = []


def case(fn):
    CHECKS.append(fn)
    return fn


# ------------------------------------------------------------- renames
@case
def rename_file():
    a, b = f"{WORK}/ren-a", f"{WORK}/ren-b"
    W(a, "A")
    os.rename(a, b)
    check(not os.path.exists(a), "old name still there")
    check(R(b) == "A", "content lost")
    # Over an existing file: replaced, atomically.
    W(a, "A2")
    os.rename(a, b)
    check(R(b) == "A2" and not os.path.exists(a), "replace failed")
    check(sorted(n for n in os.listdir(WORK) if n.startswith("ren-")) == ["ren-b"],
          f"listing {os.listdir(WORK)}")


@case
def rename_dir():
    d = f"{WORK}/rdir"
    os.makedirs(f"{d}/x/y")
    W(f"{d}/x/y/f", "deep")
    os.rename(d, f"{WORK}/rdir2")
    check(R(f"{WORK}/rdir2/x/y/f") == "deep", "content lost")
    check(not os.path.exists(d), "old dir still there")
    # Onto an existing empty directory.
    os.mkdir(f"{WORK}/empty")
    os.rename(f"{WORK}/rdir2", f"{WORK}/empty")
    check(R(f"{WORK}/empty/x/y/f") == "deep", "replace empty dir failed")
    os.mkdir(f"{WORK}/full")
    W(f"{WORK}/full/f", "")
    expect_errno((errno.ENOTEMPTY, errno.EEXIST), os.rename, f"{WORK}/empty", f"{WORK}/full")
    expect_errno((errno.EINVAL,), os.rename, f"{WORK}/empty", f"{WORK}/empty/x/sub")


def pick_lower_dir():
    """A directory under /usr/share (lower layer only) with subdirectories
    and a few dozen files."""
    for top in sorted(os.listdir("/usr/share")):
        p = f"/usr/share/{top}"
        if os.path.islink(p) or not os.path.isdir(p):
            continue
        n, has_sub, ok = 0, False, True
        for d, dirs, files in os.walk(p):
            n += len(dirs) + len(files)
            has_sub = has_sub or bool(dirs)
            if n > 300:
                ok = False
                break
        if ok and has_sub and n >= 5:
            try:
                tree(p)
            except OSError:
                continue
            return p
    raise Fail("no suitable directory under /usr/share")


@case
def rename_lower_dir():
    src = pick_lower_dir()
    print(f"LOWERDIR {src}")
    before = tree(src)
    dst = src + "-renamed-by-sbox"
    os.rename(src, dst)
    check(not os.path.exists(src), "old name still there")
    check(os.path.basename(dst) in os.listdir("/usr/share"), "new name not listed")
    check(os.path.basename(src) not in os.listdir("/usr/share"), "old name listed")
    after = tree(dst)
    check(before == after, f"tree differs: {set(before) ^ set(after)}")
    # The old name can be used again, and starts empty.
    os.mkdir(src)
    check(os.listdir(src) == [], f"recreated dir shows {os.listdir(src)}")
    os.rmdir(src)
    os.rename(dst, src)
    check(tree(src) == before, "tree differs after renaming back")


@case
def rename_lower_file():
    d = pick_lower_dir()
    f = sorted(p for p, v in tree(d).items() if v[0] == "f")[0]
    src = f"{d}/{f}"
    data = open(src, "rb").read()
    os.rename(src, f"{WORK}/moved-lower")
    check(open(f"{WORK}/moved-lower", "rb").read() == data, "content differs")
    check(not os.path.exists(src), "old name still there")
    os.rename(f"{WORK}/moved-lower", src)
    check(open(src, "rb").read() == data, "content differs after moving back")


@case
def renameat2_exchange():
    a, b = f"{WORK}/xa", f"{WORK}/xb"
    W(a, "A")
    os.mkdir(b)
    W(f"{b}/inner", "I")
    renameat2(a, b, RENAME_EXCHANGE)
    check(os.path.isdir(a) and R(f"{a}/inner") == "I", "dir not at a")
    check(os.path.isfile(b) and R(b) == "A", "file not at b")
    # With a lower file (copied up on the way).
    renameat2(LOWERFILE, b, RENAME_EXCHANGE)
    check(R(LOWERFILE) == "A", "lower name does not show the upper file")
    check(R(b).startswith("lower-content"), "upper name does not show the lower file")
    renameat2(LOWERFILE, b, RENAME_EXCHANGE)
    check(R(LOWERFILE).startswith("lower-content"), "not swapped back")
    expect_errno((errno.ENOENT,), renameat2, a, f"{WORK}/nothing", RENAME_EXCHANGE)


@case
def renameat2_noreplace():
    a, b = f"{WORK}/na", f"{WORK}/nb"
    W(a, "A")
    W(b, "B")
    expect_errno((errno.EEXIST,), renameat2, a, b, RENAME_NOREPLACE)
    check(R(a) == "A" and R(b) == "B", "files changed")
    # Onto a lower file: EEXIST too.
    expect_errno((errno.EEXIST,), renameat2, a, LOWERFILE, RENAME_NOREPLACE)
    renameat2(a, f"{WORK}/nc", RENAME_NOREPLACE)
    check(R(f"{WORK}/nc") == "A" and not os.path.exists(a), "noreplace to a free name")


# ---------------------------------------------------------- hard links
@case
def hard_links():
    a, b = f"{WORK}/ha", f"{WORK}/hb"
    W(a, "one")
    os.link(a, b)
    sa, sb = os.stat(a), os.stat(b)
    check(sa.st_ino == sb.st_ino, f"inodes {sa.st_ino} {sb.st_ino}")
    check(sa.st_nlink == 2 and sb.st_nlink == 2, f"nlink {sa.st_nlink} {sb.st_nlink}")
    W(b, "two")
    check(R(a) == "two", "write through one name not seen through the other")
    os.unlink(a)
    check(os.stat(b).st_nlink == 1, f"nlink after unlink {os.stat(b).st_nlink}")
    # A link to a lower file.
    c = f"{WORK}/hc"
    os.link("/etc/hostname", c)
    check(os.stat(c).st_ino == os.stat("/etc/hostname").st_ino, "lower link: inodes differ")
    check(os.stat(c).st_nlink == 2, f"lower link: nlink {os.stat(c).st_nlink}")
    check(R(c) == R("/etc/hostname"), "lower link: content differs")


# ------------------------------------------------------------ whiteouts
@case
def whiteouts():
    d = pick_lower_dir()
    t = tree(d)
    f = sorted(p for p, v in t.items() if v[0] == "f")[-1]
    p = f"{d}/{f}"
    print(f"WHITEOUT {p}")
    os.unlink(p)
    check(not os.path.exists(p), "removed lower file still exists")
    check(os.path.basename(p) not in os.listdir(os.path.dirname(p)), "still listed")
    expect_errno((errno.ENOENT,), os.stat, p)
    W(p, "recreated")
    check(R(p) == "recreated", "recreate over whiteout")
    os.unlink(p)
    check(not os.path.exists(p), "gone again")
    # A whole lower tree.
    sub = sorted(q for q, v in t.items() if v[0] == "d")[0]
    sp = f"{d}/{sub}"
    for root, dirs, files in os.walk(sp, topdown=False):
        for n in files:
            os.unlink(os.path.join(root, n))
        for n in dirs:
            p2 = os.path.join(root, n)
            os.unlink(p2) if os.path.islink(p2) else os.rmdir(p2)
    os.rmdir(sp)
    check(not os.path.exists(sp), "removed lower dir still exists")
    os.mkdir(sp)
    check(os.listdir(sp) == [], f"recreated lower dir is not empty: {os.listdir(sp)}")


# -------------------------------------------------------------- copy-up
@case
def copy_up_keeps_metadata():
    st = os.stat(LOWERFILE)
    check(stat.S_IMODE(st.st_mode) == 0o754, f"lower mode {oct(st.st_mode)}")
    check(int(st.st_mtime) == 1000000000, f"lower mtime {st.st_mtime}")
    check((st.st_uid, st.st_gid) == (0, 0), f"lower owner {st.st_uid}:{st.st_gid}")
    check(os.getxattr(LOWERFILE, "user.it.test") == b"lower-xattr", "lower xattr")
    # setxattr copies up; nothing else changes.
    os.setxattr(LOWERFILE, "user.it.added", b"new")
    st2 = os.stat(LOWERFILE)
    check(stat.S_IMODE(st2.st_mode) == 0o754, f"mode after copy-up {oct(st2.st_mode)}")
    check(st2.st_mtime == st.st_mtime, f"mtime after copy-up {st2.st_mtime}")
    check((st2.st_uid, st2.st_gid) == (0, 0), "owner after copy-up")
    check(os.getxattr(LOWERFILE, "user.it.test") == b"lower-xattr", "xattr lost")
    check(sorted(x for x in os.listxattr(LOWERFILE) if x.startswith("user.it.")) ==
          ["user.it.added", "user.it.test"], f"xattrs {os.listxattr(LOWERFILE)}")
    check(not any(x.startswith(("user.overlay.", "user.containers.", "user.sbox."))
                  for x in os.listxattr(LOWERFILE)), f"internal xattrs shown {os.listxattr(LOWERFILE)}")
    check(R(LOWERFILE).startswith("lower-content"), "content after copy-up")
    W(LOWERFILE, "+appended\n", "a")
    check(R(LOWERFILE).endswith("+appended\n"), "append")
    check(os.getxattr(LOWERFILE, "user.it.test") == b"lower-xattr", "xattr lost after write")
    os.removexattr(LOWERFILE, "user.it.added")
    expect_errno((errno.ENODATA,), os.getxattr, LOWERFILE, "user.it.added")
    expect_errno((errno.EPERM, errno.EACCES, errno.ENOTSUP), os.setxattr, LOWERFILE,
                 "user.containers.override_stat", b"0:0:07777")


@case
def chown_chmod_kept():
    f = f"{WORK}/owned"
    W(f, "x")
    os.chown(f, 1000, 1000)
    os.chmod(f, 0o640)
    st = os.stat(f)
    check((st.st_uid, st.st_gid) == (1000, 1000), f"owner {st.st_uid}:{st.st_gid}")
    check(stat.S_IMODE(st.st_mode) == 0o640, f"mode {oct(st.st_mode)}")
    d = f"{WORK}/owned-dir"
    os.mkdir(d)
    os.chown(d, 33, 33)
    os.chmod(d, 0o2750)
    st = os.stat(d)
    check((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (33, 33, 0o2750),
          f"dir {st.st_uid}:{st.st_gid} {oct(st.st_mode)}")
    # set-gid dir: new entries get its group.
    W(f"{d}/new", "")
    check(os.stat(f"{d}/new").st_gid == 33, f"setgid inheritance {os.stat(d + '/new').st_gid}")
    # A lower file (copied up).
    os.chown("/etc/hostname", 33, 33)
    os.chmod("/etc/hostname", 0o600)
    st = os.stat("/etc/hostname")
    check((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (33, 33, 0o600),
          f"lower {st.st_uid}:{st.st_gid} {oct(st.st_mode)}")
    # Kept through a rename and a new lookup.
    os.rename(f, f + "2")
    st = os.stat(f + "2")
    check((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o640), "after rename")
    os.chmod("/etc/hostname", 0o644)
    os.chown("/etc/hostname", 0, 0)
    # setuid bit survives chmod; a write by another user clears it.
    os.chmod(f + "2", 0o4755)
    check(stat.S_IMODE(os.stat(f + "2").st_mode) == 0o4755, "setuid kept")


@case
def permissions_for_a_non_root_user():
    f = f"{WORK}/rootfile"
    W(f, "root's")
    os.chmod(f, 0o644)
    secret = f"{WORK}/rootsecret"
    W(secret, "s")
    os.chmod(secret, 0o600)
    mine = f"{WORK}/userfile"
    W(mine, "u")
    os.chown(mine, 1000, 1000)
    os.chmod(WORK, 0o755)

    def writes_root_file():
        try:
            W(f, "hacked")
            return True
        except PermissionError:
            return False

    def reads_secret():
        try:
            R(secret)
            return True
        except PermissionError:
            return False

    def creates_in_root_dir():
        try:
            W(f"{WORK}/byuser", "")
            return True
        except PermissionError:
            return False

    def writes_own_file():
        W(mine, "mine")
        return R(mine) == "mine"

    def writes_lower_root_file():
        try:
            W("/etc/hostname", "hacked", "a")
            return True
        except PermissionError:
            return False

    def chowns_root_file():
        try:
            os.chown(f, 1000, 1000)
            return True
        except PermissionError:
            return False

    check(as_user(1000, 1000, writes_root_file) == 1, "user 1000 wrote root's 0644 file")
    check(as_user(1000, 1000, reads_secret) == 1, "user 1000 read root's 0600 file")
    check(as_user(1000, 1000, creates_in_root_dir) == 1, "user 1000 created in root's 0755 dir")
    check(as_user(1000, 1000, writes_lower_root_file) == 1, "user 1000 wrote /etc/hostname")
    check(as_user(1000, 1000, chowns_root_file) == 1, "user 1000 chowned root's file")
    check(as_user(1000, 1000, writes_own_file) == 0, "user 1000 cannot write its own file")
    check(R(f) == "root's", "root's file changed")
    check(os.access(f, os.W_OK), "root: access(W_OK) denied")


# ---------------------------------------------------------------- locks
@case
def flock_locks():
    p = f"{WORK}/flock"
    W(p, "")
    fd = os.open(p, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)

    def try_lock():
        g = os.open(p, os.O_RDWR)
        try:
            fcntl.flock(g, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    check(as_user(0, 0, try_lock) == 1, "second flock LOCK_EX succeeded while held")
    fcntl.flock(fd, fcntl.LOCK_UN)
    check(as_user(0, 0, try_lock) == 0, "flock not granted after unlock")
    os.close(fd)


@case
def fcntl_locks():
    p = f"{WORK}/lockf"
    W(p, "0123456789")
    fd = os.open(p, os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX, 4, 2)  # bytes 2..5

    def overlapping():
        g = os.open(p, os.O_RDWR)
        try:
            fcntl.lockf(g, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 3)
            return True
        except OSError as e:
            return not (e.errno in (errno.EAGAIN, errno.EACCES))

    def disjoint():
        g = os.open(p, os.O_RDWR)
        fcntl.lockf(g, fcntl.LOCK_EX | fcntl.LOCK_NB, 2, 7)
        return True

    check(as_user(0, 0, overlapping) == 1, "overlapping fcntl lock granted")
    check(as_user(0, 0, disjoint) == 0, "disjoint fcntl lock refused")
    fcntl.lockf(fd, fcntl.LOCK_UN, 4, 2)
    check(as_user(0, 0, overlapping) == 0, "fcntl lock not granted after unlock")
    os.close(fd)


# ----------------------------------------------------------------- mmap
@case
def mmap_shared_write():
    p = f"{WORK}/mm"
    with open(p, "wb") as f:
        f.write(b"\0" * 16384)
    fd = os.open(p, os.O_RDWR)
    m = mmap.mmap(fd, 16384, mmap.MAP_SHARED)
    m[0:5] = b"hello"
    m[12288:12293] = b"world"
    m.flush()
    # Another process reads through read(2).
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        with open(p, "rb") as f:
            d = f.read()
        os.write(w, d[0:5] + d[12288:12293])
        os._exit(0)
    os.waitpid(pid, 0)
    got = os.read(r, 10)
    check(got == b"helloworld", f"read after mmap write: {got!r}")
    m.close()
    os.close(fd)
    with open(p, "rb") as f:
        d = f.read()
    check(d[0:5] == b"hello" and len(d) == 16384, "after close")
    # mmap of a lower file, written: copy-up first.
    q = "/etc/hostname"
    size = os.stat(q).st_size
    fd = os.open(q, os.O_RDWR)
    m = mmap.mmap(fd, size, mmap.MAP_SHARED)
    old = bytes(m[:])
    m[0:1] = b"Z"
    m.flush()
    m.close()
    os.close(fd)
    check(R(q)[0] == "Z", "mmap write to a lower file lost")
    W(q, old.decode())


# --------------------------------------------------------------- sparse
@case
def sparse_5g():
    p = f"{WORK}/sparse"
    with open(p, "wb") as f:
        f.truncate(5 << 30)
        f.seek(4 << 30)
        f.write(b"x" * 4096)
    st = os.stat(p)
    check(st.st_size == 5 << 30, f"size {st.st_size}")
    check(st.st_blocks * 512 < 16 << 20, f"{st.st_blocks * 512} bytes allocated")
    with open(p, "rb") as f:
        f.seek(4 << 30)
        check(f.read(4) == b"xxxx", "data at 4 GiB")
        f.seek(1 << 30)
        check(f.read(4) == b"\0\0\0\0", "hole reads zero")
        fd = f.fileno()
        try:
            d = os.lseek(fd, 0, os.SEEK_DATA)
            check(d >= (4 << 30) - 4096 and d <= 4 << 30, f"SEEK_DATA {d}")
        except OSError as e:
            check(e.errno == errno.ENXIO, f"SEEK_DATA errno {e.errno}")
    os.unlink(p)


# -------------------------------------------------------------- readdir
@case
def readdir_while_changing():
    d = f"{WORK}/rd"
    os.mkdir(d)
    keep = {f"keep{i:04}" for i in range(300)}
    gone = {f"gone{i:04}" for i in range(300)}
    for n in keep | gone:
        W(f"{d}/{n}", "")
    seen = []
    with os.scandir(d) as it:
        for i, e in enumerate(it):
            seen.append(e.name)
            if i == 10:
                for n in gone:
                    os.unlink(f"{d}/{n}")
                for j in range(300):
                    W(f"{d}/new{j:04}", "")
    dup = {n for n in seen if seen.count(n) > 1}
    check(not dup, f"duplicates {sorted(dup)[:5]}")
    missing = keep - set(seen)
    check(not missing, f"untouched entries missing: {sorted(missing)[:5]}")
    now = set(os.listdir(d))
    check(now == keep | {f"new{j:04}" for j in range(300)}, "final listing")
    # A lower directory's listing matches the host view (readdir + stat).
    for e in os.scandir("/usr/bin"):
        e.stat(follow_symlinks=False)


# ---------------------------------------------------------- fsync/statfs
@case
def fsync_and_statfs():
    p = f"{WORK}/sync"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"data")
    os.fsync(fd)
    os.fdatasync(fd)
    os.close(fd)
    dfd = os.open(WORK, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)
    os.close(dfd)
    s = os.statvfs(WORK)
    check(s.f_bsize > 0 and s.f_blocks > 0, f"statvfs {s}")
    check(0 < s.f_bavail <= s.f_blocks, f"statvfs avail {s}")
    check(s.f_namemax >= 255, f"namemax {s.f_namemax}")
    s2 = os.statvfs("/")
    check(s2.f_blocks > 0, "statvfs /")


# -------------------------------------------------------- misc semantics
@case
def symlinks_fifos_and_times():
    os.symlink("target-x", f"{WORK}/sl")
    check(os.readlink(f"{WORK}/sl") == "target-x", "readlink")
    os.mkfifo(f"{WORK}/fifo")
    check(stat.S_ISFIFO(os.stat(f"{WORK}/fifo").st_mode), "fifo")
    p = f"{WORK}/times"
    W(p, "")
    os.utime(p, (1234567, 7654321))
    st = os.stat(p)
    check(int(st.st_atime) == 1234567 and int(st.st_mtime) == 7654321, "utime")
    # O_EXCL, O_TRUNC, O_APPEND.
    expect_errno((errno.EEXIST,), os.open, p, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    W(p, "abc")
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"def")
    os.close(fd)
    check(R(p) == "abcdef", "append")
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    check(R(p) == "", "trunc")
    # unlink of an open file: still readable through the fd.
    W(p, "still")
    fd = os.open(p, os.O_RDONLY)
    os.unlink(p)
    check(os.read(fd, 10) == b"still", "read after unlink")
    os.close(fd)
    # Executing a file created inside.
    W(f"{WORK}/script.sh", "#!/bin/sh\necho ran\n")
    os.chmod(f"{WORK}/script.sh", 0o755)
    check(os.popen(f"{WORK}/script.sh").read() == "ran\n", "exec")


@case
def io_through_fds_across_copy_up_and_unlink():
    # Files are opened without the server: a reader of a host file sees
    # what another fd writes (the copy-up), not the host's copy.
    p = "/usr/share/dpkg/cputable"
    with open(p, "rb") as f:
        host = f.read()
    r = os.open(p, os.O_RDONLY)
    check(os.pread(r, 16, 0) == host[:16], "read of the host file")
    w = os.open(p, os.O_WRONLY)
    os.pwrite(w, b"XXXX", 0)
    os.close(w)
    check(os.pread(r, 8, 0) == b"XXXX" + host[4:8], "reader does not see the copy-up")
    os.close(r)
    with open(p, "rb") as f:
        check(f.read() == b"XXXX" + host[4:], "copy-up content")
    # Unlinked while open: write, read, truncate and stat through the fd.
    u = f"{WORK}/unlinked"
    W(u, "0123456789")
    fd = os.open(u, os.O_RDWR)
    os.unlink(u)
    os.pwrite(fd, b"ab", 0)
    check(os.pread(fd, 10, 0) == b"ab23456789", "write after unlink")
    os.ftruncate(fd, 4)
    st = os.fstat(fd)
    check(st.st_size == 4 and st.st_nlink == 0, f"fstat after unlink {st}")
    os.close(fd)
    check(not os.path.exists(u), "unlinked name is back")
    # Replaced by a rename while open: the old file stays readable.
    a, b = f"{WORK}/old", f"{WORK}/new"
    W(a, "old content")
    W(b, "new content")
    fd = os.open(a, os.O_RDONLY)
    os.rename(b, a)
    check(os.pread(fd, 20, 0) == b"old content", "replaced file through its fd")
    check(R(a) == "new content", "new file under the name")
    os.close(fd)
    # Opened for writing and only read: reads as the copy (as for a host
    # file the caller could not read, which starts empty).
    fd = os.open(f"{WORK}/new-rw", os.O_RDWR | os.O_CREAT, 0o644)
    check(os.read(fd, 4) == b"", "empty new file")
    os.close(fd)


def main():
    os.makedirs(WORK, exist_ok=False)
    failed = 0
    for fn in CHECKS:
        try:
            fn()
            print(f"ok {fn.__name__}", flush=True)
        except Fail as e:
            failed += 1
            print(f"FAIL {fn.__name__}: {e}", flush=True)
        except Exception as e:
            failed += 1
            print(f"FAIL {fn.__name__}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc()
    print("DONE", flush=True)
    sys.exit(1 if failed else 0)


main()
"##;

/// With --map-user the caller is itself inside, not root: a host directory
/// of another owner (root, when the tests run as root) that the caller may
/// write keeps showing that owner once a write copies it up, although its
/// upper copy belongs to the caller.
#[test]
fn map_user_copy_up_keeps_the_owner() {
    let p = Project::new("mapowner");
    let h = HostDir::new("mapowner");
    let dir = h.path("open");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let d = dir.display();
    let mut opts = FUSE.to_vec();
    opts.push("--map-user");
    let out = ok(run_sh(
        &p.dir,
        &opts,
        &format!("stat -c %u:%g {d}; touch {d}/new; stat -c %u:%g {d}"),
    ));
    let lines: Vec<&str> = out.lines().collect();
    let want = if user().switch {
        "0:0".to_string()
    } else {
        format!("{}:{}", user().uid, user().gid)
    };
    assert_eq!(lines, [want.as_str(), want.as_str()], "{out}");
    assert!(!dir.join("new").exists(), "reached the host");
}
