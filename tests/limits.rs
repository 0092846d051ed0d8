//! `--pids` limits the sandbox as a whole, whatever uids its processes use,
//! through the real binary as an unprivileged user. This host class has no
//! delegated cgroup v2, so these run the other mechanism: init's
//! RLIMIT_NPROC and a user namespace nested in the sandbox's for every
//! payload, where every task counts against init's limit (see
//! `sbox::limits::nested_pids_unavailable`). N counts every process and
//! thread of the sandbox, sbox's init (PID 1) included.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Output};
use std::time::Duration;

/// A unique, harmless argument for `sleep`, to find its processes on the
/// host: `prefix` followed by our pid, as seconds.
fn sleep_tag(prefix: u32) -> String {
    format!("{prefix}{}.5", std::process::id())
}

/// Host pids of the `sleep TAG` processes.
fn sleeps(tag: &str) -> Vec<i32> {
    pids_with_cmdline(&format!("sleep {tag}"))
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
        })
        .collect()
}

/// The real uid of a host process.
fn host_uid(pid: i32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The first line `child` prints on stdout, within `secs`.
fn first_line(child: &mut Child, secs: u64) -> String {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("no output within {secs}s"))
}

/// SIGTERM to `child` (a launcher, which forwards it); its output.
fn stop(mut child: Child) -> Output {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    child.stdout.take();
    child.wait_with_output().expect("wait")
}

/// Forks children that switch to uids 1..=60 and run `sleep TAG` (as root
/// inside can), counting the forks the kernel refuses; prints
/// `started S refused R` and waits.
const MANY_UIDS: &str = r#"
import os, sys, time
tag = sys.argv[1]
started = refused = 0
for u in range(1, 61):
    try:
        pid = os.fork()
    except BlockingIOError:
        refused += 1
        continue
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(u)
            os.setuid(u)
            os.execv("/bin/sleep", ["sleep", tag])
        finally:
            os._exit(1)
    started += 1
print(f"started {started} refused {refused}", flush=True)
time.sleep(600)
"#;

/// Forks children that sleep until a fork is refused; prints how many it
/// started and becomes `sleep TAG`.
const FILL: &str = r#"
import os, sys, time
n = 0
try:
    while n < 1000:
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
        n += 1
except BlockingIOError:
    pass
print(f"started {n}", flush=True)
os.execv("/bin/sleep", ["sleep", sys.argv[1]])
"#;

#[test]
fn pids_limits_the_whole_sandbox_whatever_the_uids_of_its_processes() {
    let p = Project::new("pids-uids");
    p.write("many.py", MANY_UIDS);
    let tag = sleep_tag(31);
    let mut child = spawn(sbox(
        &p.dir,
        &[
            "run",
            "--verbose",
            "--pids",
            "40",
            "--",
            "python3",
            "many.py",
            &tag,
        ],
    ));
    let line = first_line(&mut child, 30);
    // The children started; let them reach their execve.
    wait_for(10, || sleeps(&tag).len() >= 38);
    std::thread::sleep(Duration::from_millis(200));
    let alive = sleeps(&tag);
    let uids: std::collections::BTreeSet<u32> =
        alive.iter().filter_map(|pid| host_uid(*pid)).collect();
    let o = stop(child);
    let err = stderr(&o);
    // Before, each uid had 40 of its own: all 60 started.
    assert_eq!(
        line.trim(),
        "started 38 refused 22",
        "{line} (host sees {} sleeps) {err}",
        alive.len()
    );
    // 40 tasks at most: init, python and 38 sleeps, each under its own uid.
    assert_eq!(alive.len(), 38, "{alive:?}");
    assert_eq!(uids.len(), 38, "{uids:?}");
    assert!(
        err.contains("pids 40: RLIMIT_NPROC of a nested user namespace")
            && err.contains("whole sandbox"),
        "--verbose does not say what enforces --pids: {err}"
    );
    assert!(
        wait_for(10, || sleeps(&tag).is_empty()),
        "processes of the sandbox are left"
    );
}

#[test]
fn exec_d_commands_join_the_nested_namespace_and_count_against_pids() {
    let p = Project::new("pids-exec");
    p.write("fill.py", FILL);
    let name = format!("lim-exec-{}", std::process::id());
    let tag = sleep_tag(32);
    let filled = sleep_tag(33);
    let o = output(sbox(
        &p.dir,
        &[
            "run", "-d", "--name", &name, "--pids", "8", "--", "sleep", &tag,
        ],
    ));
    assert_eq!(ok(o), format!("{name}\n"));
    let rm = || output(sbox(Path::new("/tmp"), &["rm", "-f", &name]));
    // The main command and an exec'd one share the nested namespace, which
    // maps every id of the sandbox to itself.
    let ns = |cmd: &str| {
        let o = output(sbox(
            &p.dir,
            &[
                "exec",
                &name,
                "--",
                "sh",
                "-c",
                &format!("{cmd}; readlink /proc/self/ns/user"),
            ],
        ));
        ok(o)
    };
    let first = ns("head -n1 /proc/self/uid_map");
    let again = ns("true");
    let map: Vec<&str> = first
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(map, ["0", "0", "1"], "not the nested identity map: {first}");
    assert_eq!(
        first.lines().nth(1),
        again.lines().next(),
        "{first} {again}"
    );
    // Fill the sandbox from an exec'd command: init, the main sleep, the
    // python and 5 children make 8.
    let mut filler = spawn(sbox(
        &p.dir,
        &["exec", &name, "--", "python3", "fill.py", &filled],
    ));
    let line = first_line(&mut filler, 30);
    assert_eq!(line.trim(), "started 5", "{line}");
    // Full: init may not fork another exec'd command either.
    let o = output(sbox(&p.dir, &["exec", &name, "--", "touch", "ran"]));
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(125), "{e}");
    assert!(e.contains("--pids") && e.contains("limit of 8"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(!p.dir.join("ran").exists(), "the command ran");
    assert!(ok(rm()).contains(&name));
    let _ = filler.kill();
    let _ = filler.wait();
    assert!(wait_for(10, || sleeps(&tag).is_empty() && sleeps(&filled).is_empty()));
}

/// The payloads' ids, files, ports and seccomp in the nested namespace.
#[test]
fn nested_namespace_keeps_ids_ports_and_the_seccomp_filter() {
    let p = Project::new("pids-ids");
    let script = "id -u; head -n1 /proc/self/uid_map; touch f; chown 1000:1000 f; \
        python3 -c 'import socket; socket.socket().bind((\"127.0.0.1\", 80)); print(\"root binds 80\")'; \
        setpriv --reuid=1000 --regid=1000 --clear-groups python3 -c 'import socket; socket.socket().bind((\"127.0.0.1\", 81)); print(\"1000 binds 81\")'; \
        unshare -U true 2>/dev/null || echo 'no user namespace'";
    let o = run_sh(&p.dir, &["--net", "none", "--pids", "50"], script);
    let out = ok(o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "{out}");
    let map: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(map, ["0", "0", "1"], "{out}");
    assert_eq!(
        &lines[2..],
        ["root binds 80", "1000 binds 81", "no user namespace"],
        "{out}"
    );
    // uid 1000 inside is the same host id as without the nested namespace.
    let u = user();
    let subuid = std::fs::read_to_string("/etc/subuid").expect("subuid");
    let start: u32 = subuid
        .lines()
        .find(|l| l.starts_with(&format!("{}:", u.name)) || l.starts_with(&format!("{}:", u.uid)))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("the test user has a subordinate range");
    let meta = std::fs::metadata(p.dir.join("f")).expect("f");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        start + 999,
        "chown 1000 inside"
    );
}

#[test]
fn limits_say_what_enforces_them_and_pids_needs_room_for_init() {
    let p = Project::new("pids-say");
    let o = output(sbox(
        &p.dir,
        &["run", "--verbose", "--memory", "64M", "--", "true"],
    ));
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(
        e.contains("RLIMIT_AS, the address space of each process, not the sandbox's total"),
        "{e}"
    );
    let o = output(sbox(&p.dir, &["run", "--pids", "1", "--", "touch", "ran"]));
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(125), "{e}");
    assert!(e.contains("--pids must be at least 2"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(!p.dir.join("ran").exists());
    // Without --pids, the command runs in the sandbox's own namespace.
    let o = output(sbox(&p.dir, &["run", "--verbose", "--", "true"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("nested user namespace"),
        "{}",
        stderr(&o)
    );
    let o = output(sbox(
        &p.dir,
        &["run", "--verbose", "--pids", "9", "--", "true"],
    ));
    assert!(
        stderr(&o).contains("the command runs in a nested user namespace"),
        "{}",
        stderr(&o)
    );
}
