//! Errors of the filesystem under the upper layer keep their meaning
//! through the FUSE root: a write past the largest file the host's
//! filesystem holds fails with EFBIG, a link past its link limit with
//! EMLINK — the same error the same call gets on the host, in the same
//! filesystem, never EIO.

mod common;
use common::*;
use std::path::Path;

/// Prints `RESULT COUNT`: the errno name (or "ok") of the first failing
/// call and how many calls succeeded before it.
const PROBES: &str = r#"
import errno, os, sys
what, d = sys.argv[1], sys.argv[2]
def name(e):
    return errno.errorcode.get(e.errno, str(e.errno))
if what == "efbig":
    fd = os.open(os.path.join(d, "efbig"), os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        # 16 TiB: past ext4's largest file (4 KiB blocks); a filesystem
        # that holds it (tmpfs, xfs) succeeds, on the host and inside.
        os.pwrite(fd, b"x", 1 << 44)
        print("ok 1")
    except OSError as e:
        print(name(e), 0)
    os.close(fd)
    os.unlink(os.path.join(d, "efbig"))
"#;

fn probe_host(what: &str) -> String {
    let dir = user().runtime.join(format!("errno-{what}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("probe dir");
    chown(&dir);
    let o = output(as_user(
        Path::new("/usr/bin/python3"),
        &["-c", PROBES, what, &dir.to_string_lossy()],
    ));
    let _ = std::fs::remove_dir_all(&dir);
    ok(o)
}

fn probe_inside(p: &Project, what: &str) -> String {
    ok(output(sbox(
        &p.dir,
        &["run", "--", "python3", "-c", PROBES, what, "/root"],
    )))
}

#[test]
fn a_write_past_the_largest_file_gives_the_hosts_error() {
    let p = Project::new("efbig");
    let host = probe_host("efbig");
    let inside = probe_inside(&p, "efbig");
    assert_eq!(inside, host, "inside vs host (same filesystem)");
    assert!(!inside.starts_with("EIO"), "{inside}");
}

/// The link limit, reached on the host in the sandbox's own upper layer
/// (a named sandbox's, in its data directory) and then by the sandbox
/// through the FUSE root: the last links fail inside as they would on the
/// host.
#[test]
fn a_link_past_the_link_limit_gives_the_hosts_error() {
    let p = Project::new("emlink");
    let name = format!("emlink-{}", std::process::id());
    ok(output(sbox(
        &p.dir,
        &[
            "run",
            "--name",
            &name,
            "--",
            "sh",
            "-c",
            "mkdir -p /root/em && echo x > /root/em/f",
        ],
    )));
    let dir = user()
        .home
        .join(".local/share/sbox/sandboxes")
        .join(&name)
        .join("upper/root/em");
    assert!(dir.join("f").is_file(), "{}", dir.display());
    // On the host: link until the filesystem refuses (or 70,000 links).
    let mut n: u32 = 0;
    let host_err = loop {
        if n == 70_000 {
            break None;
        }
        match std::fs::hard_link(dir.join("f"), dir.join(format!("l{n}"))) {
            Ok(()) => n += 1,
            Err(e) => break Some(e.raw_os_error().unwrap_or(0)),
        }
    };
    // Leave room for five more.
    for i in n.saturating_sub(5)..n {
        std::fs::remove_file(dir.join(format!("l{i}"))).expect("unlink");
    }
    let inside = ok(output(sbox(
        &p.dir,
        &[
            "run", "--name", &name, "--", "python3", "-c",
            "import errno, os\nn = 0\nres = 'ok'\nwhile n < 100:\n    try:\n        os.link('/root/em/f', '/root/em/m%d' % n)\n    except OSError as e:\n        res = errno.errorcode.get(e.errno, str(e.errno))\n        break\n    n += 1\nprint(res, n)",
        ],
    )));
    let _ = output(sbox(&p.dir, &["rm", "-f", &name]));
    let want = match host_err {
        Some(e) => format!(
            "{} 5",
            nix::errno::Errno::from_raw(e)
                .to_string()
                .split(':')
                .next()
                .unwrap_or_default()
        ),
        None => "ok 100".into(),
    };
    assert_eq!(inside.trim(), want, "host stopped after {n} links");
}
