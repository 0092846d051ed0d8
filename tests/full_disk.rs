//! A named sandbox whose data directory (its upper layer) is full: writes
//! inside fail with ENOSPC (not EIO), the sandbox still starts so the user
//! can get in and delete, and `sbox diff` / `sbox rm` work.

mod common;
use common::*;
use std::path::{Path, PathBuf};

/// A small tmpfs the test user's XDG_DATA_HOME points at; unmounted and
/// removed when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    fn new(tag: &str, size: &str) -> SmallFs {
        let p = PathBuf::from(format!("/var/tmp/sbox-it-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("mount point");
        nix::mount::mount(
            Some("tmpfs"),
            &p,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(format!("size={size},mode=0700").as_str()),
        )
        .expect("mount tmpfs");
        chown(&p);
        SmallFs(p)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sbox_on(data: &Path, dir: &Path, args: &[&str]) -> std::process::Output {
    let mut c = sbox(dir, args);
    c.env("XDG_DATA_HOME", data);
    output(c)
}

/// Fills the disk from inside and prints how each kind of write failed.
const FILL: &str = r##"
echo kept-before > /root/keep
dd if=/dev/zero of=/root/big bs=64k count=1000 2>&1 | grep -o 'No space left on device' | head -1
python3 - <<'PY'
import errno, os
def t(name, f):
    try:
        f()
        print(name, "ok")
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, e.errno))
def fill():
    # Whatever room is left (pages, inodes) until the disk refuses.
    for i in range(100000):
        with open("/root/fill%d" % i, "wb") as f:
            f.write(b"x" * 4096)
def append():
    with open("/etc/services", "ab") as f:
        f.write(b"# more\n")
t("fill", fill)
t("write", lambda: os.write(os.open("/root/new", os.O_WRONLY | os.O_CREAT, 0o644), b"y" * 8192))
t("copy-up", append)
t("chmod-copy-up", lambda: os.chmod("/etc/protocols", 0o600))
t("name", lambda: open("/root/" + "n" * 300, "w"))
PY
"##;

#[test]
fn full_upper_layer_gives_enospc_and_the_sandbox_still_starts() {
    assert!(
        user().switch,
        "this test needs root on the host (it mounts a small tmpfs as the test user's data directory); .ci/run runs it in the root pass"
    );
    let fs = SmallFs::new("full", "3m");
    let data = fs.0.join("data");
    std::fs::create_dir(&data).expect("data dir");
    chown(&data);
    let p = Project::new("full");
    let name = format!("full-{}", std::process::id());
    let o = sbox_on(
        &data,
        &p.dir,
        &["run", "--name", &name, "--", "sh", "-c", FILL],
    );
    let out = stdout(&o);
    assert!(
        out.lines().any(|l| l == "No space left on device"),
        "dd: {out}\n{}",
        stderr(&o)
    );
    for want in [
        "fill ENOSPC",
        "write ENOSPC",
        "copy-up ENOSPC",
        "chmod-copy-up ENOSPC",
        "name ENAMETOOLONG",
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "want {want:?} in:\n{out}\n{}",
            stderr(&o)
        );
    }
    // Full: sbox diff still lists the changes.
    let diff = ok(sbox_on(&data, &p.dir, &["diff", &name]));
    for want in ["A /root/keep", "A /root/big"] {
        assert!(diff.lines().any(|l| l == want), "want {want:?} in:\n{diff}");
    }
    // Full: the sandbox starts anyway, what was written is intact, and
    // deleting frees the space.
    let o = sbox_on(
        &data,
        &p.dir,
        &[
            "run",
            "--name",
            &name,
            "--",
            "sh",
            "-c",
            // A removed file's blocks are freed when the kernel forgets its
            // inode, a moment after the unlink: try for up to 5 s.
            "cat /root/keep && rm -f /root/big /root/fill* && \
             for i in $(seq 50); do (echo after-free > /root/later) 2>/dev/null && break; sleep 0.1; done && \
             cat /root/later >/dev/null && echo freed",
        ],
    );
    let out = ok(o);
    assert!(out.contains("kept-before"), "{out}");
    assert!(out.contains("freed"), "{out}");
    let diff = ok(sbox_on(&data, &p.dir, &["diff", &name]));
    for want in ["A /root/keep", "A /root/later"] {
        assert!(diff.lines().any(|l| l == want), "want {want:?} in:\n{diff}");
    }
    assert!(!diff.contains("/root/big"), "{diff}");
    ok(sbox_on(&data, &p.dir, &["rm", &name]));
}
