//! POSIX semantics of the FUSE root against a tmpfs in the same sandbox.
//!
//! One C program (tests/posix_matrix/matrix.c, compiled here with gcc) runs
//! as root inside ONE sandbox, twice: in a directory of the FUSE root
//! (copy-on-write) and on a `--tmpfs`, in the same user namespace with the
//! same id map. It switches to uids/gids 1000, 1500, 2000, 3000 (subordinate
//! ids of the test user) and prints one line per case: rename and unlink in
//! sticky directories, open() permission checks, chown/chmod by owners and
//! others (set-id bits, ctime), owners of symlinks, fifos and sockets, link
//! counts and ctime after link, unlink and rename, the errno of each
//! operation on each kind of target, and a tree deeper than PATH_MAX
//! (NAME_MAX components) worked on with *at calls. The two outputs must be identical, but for the
//! differences README's "Known limits" lists (`KNOWN` below: none today).

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;

/// Lines that may differ, with why (README, Known limits): a line of the
/// FUSE run that holds every string of an entry may differ from the tmpfs
/// line.
const KNOWN: &[(&[&str], &str)] = &[];

fn known(line: &str) -> bool {
    KNOWN
        .iter()
        .any(|(parts, _)| parts.iter().all(|p| line.contains(p)))
}

/// Compile the matrix into the project (owned by the test user).
fn compile(p: &Project) -> String {
    let src = repo_dir().join("tests/posix_matrix/matrix.c");
    let bin = p.dir.join("matrix");
    let o = std::process::Command::new("gcc")
        .args(["-O1", "-Wall", "-Werror", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run gcc");
    assert!(
        o.status.success(),
        "gcc failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    chown(&bin);
    bin.to_string_lossy().into_owned()
}

#[test]
fn fuse_root_matches_tmpfs() {
    let p = Project::new("posix-matrix");
    let bin = compile(&p);
    let script = format!(
        "set -e; mkdir -p /opt/m; chmod 755 /opt/m; mkdir /mnt/t/m; chmod 755 /mnt/t/m
         {bin} /opt/m socwlep > /tmp/fuse.out
         {bin} /mnt/t/m socwlep > /tmp/tmpfs.out
         cat /tmp/fuse.out; echo =====; cat /tmp/tmpfs.out"
    );
    let out = ok(run_sh(
        &p.dir,
        &["--overlay", "fuse", "--tmpfs", "/mnt/t"],
        &script,
    ));
    let (fuse, tmpfs) = out.split_once("=====\n").expect("both runs");
    let fuse: Vec<&str> = fuse.lines().collect();
    let tmpfs: Vec<&str> = tmpfs.lines().collect();

    // The reference run shows the rules were exercised (ids switched, the
    // deep tree built), so that identical output means something.
    for want in [
        "sticky remove reg dir=1000 entry=2000 by=3000: EPERM",
        "sticky remove reg dir=1000 entry=2000 by=2000: ok",
        "sticky remove reg dir=1000 entry=2000 by=1000: ok",
        "sticky rename-from dir dir=2000 entry=1000 by=3000: EPERM",
        "sticky remove symlink dir=1000 entry=2000 by=2000: ok",
        "sticky remove fifo dir=1000 entry=2000 by=3000: EPERM",
        "open rdonly mode=0400 by=other: EACCES",
        "open wronly mode=0020 by=supplementary: ok",
        "owner chown uid to other reg: EPERM mode=6755 owner=1000:1000 ctime same",
        "owner chown gid to own group reg: ok mode=0755 owner=1000:1500 ctime changed",
        "link fifo by=1000: ok nlink=2,2 ctime changed dir-mtime changed same-ino 1",
        "owner after rename over fifo: ok owner=2000:2000",
        "owner of other name symlink: owner=1000:1500 nlink=1",
        "other removes sock in sticky dir: EPERM",
        "errno rename-dir-over on fulldir: ENOTEMPTY dir-mtime same dir-nlink 4 t=40755/2/0:0/0/0 d-nlink 2",
        "errno unlink on dir: EISDIR dir-mtime same dir-nlink 4 t=40755/2/0:0/0/0 d-nlink 2",
        "new symlink by root in setgid dir: owner=0:1500",
        "deep build: ok levels=33",
        "deep attrs: mode=0600 owner=1000:1000",
        "deep teardown: 33 of 33",
    ] {
        assert!(
            tmpfs.contains(&want),
            "tmpfs run lacks {want:?}:\n{}",
            tmpfs.join("\n")
        );
    }
    assert!(
        tmpfs.last().is_some_and(|l| l.starts_with("done ")),
        "tmpfs run did not finish:\n{}",
        tmpfs.join("\n")
    );
    assert_eq!(
        fuse.len(),
        tmpfs.len(),
        "the runs printed different numbers of lines:\nFUSE:\n{}\ntmpfs:\n{}",
        fuse.join("\n"),
        tmpfs.join("\n")
    );
    let mut diffs = Vec::new();
    let mut allowed = 0;
    for (f, t) in fuse.iter().zip(&tmpfs) {
        if f != t {
            if known(f) {
                allowed += 1;
            } else {
                diffs.push(format!("FUSE:  {f}\ntmpfs: {t}"));
            }
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {} cases differ between the FUSE root and tmpfs ({allowed} known):\n{}",
        diffs.len(),
        tmpfs.len(),
        diffs.join("\n")
    );
}

/// A host tree deeper than PATH_MAX (in the lower layer): read, written
/// (copy-up of the whole chain of directories), added to and removed from
/// inside, working down it a directory at a time; the host copy stays as
/// it was.
#[test]
fn host_tree_deeper_than_path_max() {
    let p = Project::new("posix-deep");
    let top = std::path::PathBuf::from(format!(
        "/var/tmp/sbox-it-{}-posix-deep",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&top);
    std::fs::create_dir(&top).expect("mkdir");
    std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // 20 components of 256 bytes: more than PATH_MAX below `top`, walked
    // down a directory at a time.
    let walk = "import os, stat\n\
        fd = os.open(TOP, os.O_RDONLY | os.O_DIRECTORY)\n\
        for i in range(20):\n\
        \x20   MAKE\n\
        \x20   fd = os.open('x' * 255, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)\n\
        os.fchdir(fd)\n";
    let top_q = format!("'{}'", top.display());
    let host = format!(
        "{}open('f', 'w').write('host\\n')\nos.chmod('f', 0o644)\n",
        walk.replace("TOP", &top_q)
            .replace("MAKE", "os.mkdir('x' * 255, 0o755, dir_fd=fd)")
    );
    let made = std::process::Command::new("python3")
        .arg("-c")
        .arg(&host)
        .status()
        .expect("python3");
    assert!(made.success(), "building the host tree failed");
    let inside = format!(
        "{}\
print(open('f').read(), end='')
open('f', 'a').write('inside\\n')
print(open('f').read(), end='')
st = os.lstat('f')
print('size', st.st_size, 'links', st.st_nlink)
os.mkdir('g')
os.mkfifo('p')
os.symlink('f', 's')
os.link('f', 'h')
for n in ['g', 'p', 's', 'h', 'f']:
    m = os.lstat(n)
    print(n, stat.filemode(m.st_mode), m.st_nlink)
os.chmod('h', 0o600)
os.chown('h', 1000, 1000)
m = os.lstat('f')
print('f', stat.filemode(m.st_mode), m.st_uid, m.st_gid)
for n in ['h', 'p', 's']:
    os.unlink(n)
os.rmdir('g')
print(sorted(os.listdir('.')))
os.unlink('f')
print(sorted(os.listdir('.')))
",
        walk.replace("TOP", &top_q).replace("MAKE", "pass")
    );
    let script = "python3 -c \"$1\"";
    let out = output(sbox(
        &p.dir,
        &[
            "run",
            "--overlay",
            "fuse",
            "--",
            "sh",
            "-c",
            script,
            "sh",
            &inside,
        ],
    ));
    let host_after = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "{}print(open('f').read(), end='')\nprint(sorted(os.listdir('.')))\n",
            walk.replace("TOP", &top_q).replace("MAKE", "pass")
        ))
        .output()
        .expect("python3");
    let _ = std::fs::remove_dir_all(&top);
    let text = ok(out);
    assert_eq!(
        text,
        "host\nhost\ninside\nsize 12 links 1\ng drwxr-xr-x 2\np prw-r--r-- 1\n\
         s lrwxrwxrwx 1\nh -rw-r--r-- 2\nf -rw-r--r-- 2\nf -rw------- 1000 1000\n['f']\n[]\n",
        "inside the deep host tree"
    );
    assert_eq!(
        String::from_utf8_lossy(&host_after.stdout),
        "host\n['f']\n",
        "the host tree changed"
    );
}

/// The owner of a symlink, fifo or socket made inside by a user other than
/// root is kept with the sandbox: a later run of a named sandbox shows it.
#[test]
fn special_file_owners_outlive_the_run() {
    let p = Project::new("posix-owners");
    let name = format!("posix-owners-{}", std::process::id());
    let run = |script: &str| {
        output(sbox(
            &p.dir,
            &["run", "--name", &name, "--", "sh", "-c", script],
        ))
    };
    let first = run("set -e; mkdir -m 1777 /opt/po
        setpriv --reuid=1000 --regid=1000 --clear-groups sh -c 'mkfifo /opt/po/p && ln -s p /opt/po/s && python3 -c \"import socket; socket.socket(socket.AF_UNIX).bind(\\\"/opt/po/u\\\")\"'
        chown -h 2000:2500 /opt/po/s
        stat -c '%n %u:%g' /opt/po/p /opt/po/s /opt/po/u");
    let second = run("stat -c '%n %u:%g' /opt/po/p /opt/po/s /opt/po/u
        setpriv --reuid=3000 --regid=3000 --clear-groups rm /opt/po/p || echo refused
        setpriv --reuid=1000 --regid=1000 --clear-groups rm /opt/po/p && echo removed");
    let _ = output(sbox(&p.dir, &["rm", "-f", &name]));
    let first = ok(first);
    assert_eq!(
        first, "/opt/po/p 1000:1000\n/opt/po/s 2000:2500\n/opt/po/u 1000:1000\n",
        "owners in the run that made them"
    );
    let second = ok(second);
    assert_eq!(
        second, "/opt/po/p 1000:1000\n/opt/po/s 2000:2500\n/opt/po/u 1000:1000\nrefused\nremoved\n",
        "owners in a later run"
    );
}
