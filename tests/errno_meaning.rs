//! Errors of the filesystem under the upper layer keep their meaning
//! through the FUSE root: a write past the largest file the host's
//! filesystem holds fails with EFBIG, a link past its link limit with
//! EMLINK — the same error the same call gets on the host, in the same
//! filesystem (the sandbox's upper layer lives in the runtime directory),
//! never EIO.

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
elif what == "emlink":
    base = os.path.join(d, "emlink")
    os.makedirs(base, exist_ok=True)
    f = os.path.join(base, "f")
    open(f, "w").close()
    n = 0
    res = "ok"
    while n < 70000:
        try:
            os.link(f, os.path.join(base, "l%d" % n))
        except OSError as e:
            res = name(e)
            break
        n += 1
    print(res, n)
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

#[test]
fn a_link_past_the_link_limit_gives_the_hosts_error() {
    let p = Project::new("emlink");
    let host = probe_host("emlink");
    let inside = probe_inside(&p, "emlink");
    let parse = |s: &str| -> (String, i64) {
        let mut w = s.split_whitespace();
        (
            w.next().unwrap_or_default().to_string(),
            w.next().and_then(|n| n.parse().ok()).unwrap_or(-1),
        )
    };
    let (h, hn) = parse(&host);
    let (i, n) = parse(&inside);
    assert_eq!(i, h, "inside {inside:?}, host {host:?}");
    assert!(!i.starts_with("EIO"), "{inside}");
    // The same limit (the upper layer's file is the one linked).
    assert!((n - hn).abs() <= 1, "inside {inside:?}, host {host:?}");
}
