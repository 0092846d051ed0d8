//! The id-map keeper: later launches map the sandbox through the keeper's
//! user namespace instead of running newuidmap/newgidmap again; the keeper
//! is trusted only when it is what its record says, and it goes away with
//! its record.

mod common;
use common::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn records() -> Vec<PathBuf> {
    let dir = user().runtime.join("sbox");
    std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("keeper-") && !n.ends_with(".tmp"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn keeper_pid() -> Option<i32> {
    let rec = records().into_iter().next()?;
    std::fs::read_to_string(rec)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sbox-keeper")
}

fn verbose_true(p: &Project) -> String {
    let o = output(sbox(&p.dir, &["run", "--verbose", "--", "true"]));
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    e
}

/// One test, in order: the record and the keeper are per runtime
/// directory, which is per test process.
#[test]
fn the_keeper_is_reused_checked_and_goes_away_with_its_record() {
    let p = Project::new("keeper");
    // First launch: started now; second: reused, no helper run.
    let e = verbose_true(&p);
    assert!(
        e.contains("id maps from the keeper's user namespace (started now)"),
        "{e}"
    );
    let pid = keeper_pid().expect("a keeper record");
    assert!(alive(pid), "keeper {pid} is not running");
    let e = verbose_true(&p);
    assert!(
        e.contains("id maps from the keeper's user namespace\n"),
        "{e}"
    );
    assert_eq!(keeper_pid(), Some(pid));

    // Each sandbox still has a user namespace of its own.
    let name = format!("keeper-{}", std::process::id());
    let tag = format!("41{}.5", std::process::id());
    ok(output(sbox(
        &p.dir,
        &["run", "-d", "--name", &name, "--", "sleep", &tag],
    )));
    let ns = |args: &[&str]| ok(output(sbox(&p.dir, args)));
    let a = ns(&["exec", &name, "--", "readlink", "/proc/self/ns/user"]);
    let b = ns(&["run", "--", "readlink", "/proc/self/ns/user"]);
    let _ = output(sbox(&p.dir, &["rm", "-f", &name]));
    assert!(a.starts_with("user:["), "{a}");
    assert_ne!(a, b, "two sandboxes share a user namespace");

    // A record naming another process of ours is not trusted: a new keeper
    // is started and the sandbox still gets its ids.
    let rec = records().pop().expect("record");
    let mut other = as_user(std::path::Path::new("/bin/sleep"), &["30"])
        .spawn()
        .expect("sleep");
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", other.id())).expect("stat");
    let start = stat[stat.rfind(')').expect(")") + 1..]
        .split_whitespace()
        .nth(19)
        .expect("start time")
        .to_string();
    std::fs::write(&rec, format!("{} {start}\n", other.id())).expect("forge the record");
    let e = verbose_true(&p);
    let _ = other.kill();
    let _ = other.wait();
    assert!(e.contains("(started now)"), "a forged keeper was used: {e}");
    let new = keeper_pid().expect("new record");
    assert_ne!(new, other.id() as i32);
    assert!(alive(new));

    // The old keeper saw its record name another process, and left.
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!alive(pid), "the replaced keeper {pid} is still running");

    // Removing the record ends the keeper.
    for r in records() {
        std::fs::remove_file(r).expect("remove the record");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(new) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!alive(new), "the keeper {new} outlived its record");
}
