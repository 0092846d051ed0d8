//! Named and detached sandboxes through the real binary as an unprivileged
//! user: `run -d`/`--name`, `ps`, `exec`, `stop`, `start`, `rm`, `logs`;
//! the confinement of exec'd processes; races and crashes; resource limits
//! (the rlimit path: this host has no delegated cgroup v2); bad input.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A sandbox name unique to this test run.
fn uniq(tag: &str) -> String {
    format!("lc-{tag}-{}", std::process::id())
}

/// A unique, harmless argument for `sleep` so its processes can be found
/// on the host: `prefix` followed by our pid, as seconds.
fn sleep_tag(prefix: u32) -> String {
    format!("{prefix}{}.5", std::process::id())
}

/// Removes a named sandbox (`sbox rm -f`) when dropped, also when the test
/// failed half-way.
struct Named {
    name: String,
}

impl Named {
    fn new(tag: &str) -> Self {
        Named { name: uniq(tag) }
    }
    fn adopt(name: &str) -> Self {
        Named {
            name: name.to_string(),
        }
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = output(sbox(Path::new("/tmp"), &["rm", "-f", &self.name]));
    }
}

/// `sbox ARGS` in `dir`, stdin closed.
fn sb(dir: &Path, args: &[&str]) -> Output {
    output(sbox(dir, args))
}

/// `sbox run -d --name NAME OPTS -- CMD...`; asserts it printed the name.
fn start_detached(p: &Project, name: &str, opts: &[&str], cmd: &[&str]) {
    start_detached_with(sbox(&p.dir, &[]), name, opts, cmd);
}

fn start_detached_with(mut c: Command, name: &str, opts: &[&str], cmd: &[&str]) {
    c.args(["run", "-d", "--name", name]);
    c.args(opts);
    c.arg("--");
    c.args(cmd);
    let o = output(c);
    assert_eq!(ok(o), format!("{name}\n"));
}

/// The rows of `sbox ps --json` (with -a: stopped ones too).
fn ps_json(all: bool) -> Vec<serde_json::Value> {
    let mut args = vec!["ps", "--json"];
    if all {
        args.push("-a");
    }
    let text = ok(sb(Path::new("/tmp"), &args));
    serde_json::from_str::<Vec<serde_json::Value>>(&text)
        .unwrap_or_else(|e| panic!("ps --json is not a JSON array ({e}): {text}"))
}

fn ps_row(name: &str, all: bool) -> Option<serde_json::Value> {
    ps_json(all).into_iter().find(|r| r["name"] == name)
}

/// The line of `sbox ps [-a]` for `name`, split in columns.
fn ps_line(name: &str, all: bool) -> Option<Vec<String>> {
    let args: &[&str] = if all { &["ps", "-a"] } else { &["ps"] };
    let text = ok(sb(Path::new("/tmp"), args));
    assert!(text.starts_with("NAME"), "no header: {text}");
    text.lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .find(|cols| cols.first().map(String::as_str) == Some(name))
}

/// The launcher's host pid of a running sandbox, from `ps --json`.
fn launcher_pid(name: &str) -> i32 {
    let row = ps_row(name, false).unwrap_or_else(|| panic!("{name} is not in ps"));
    assert_eq!(row["status"], "running", "{row}");
    row["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no pid: {row}")) as i32
}

/// Host pids of the processes of this sandbox's launcher (and init, which
/// shares its command line).
fn launcher_pids(name: &str) -> Vec<i32> {
    pids_with_cmdline(&format!("--name {name} "))
}

/// Host pids of a `sleep TAG` (not of sbox processes that carry the tag in
/// their own command line).
fn sleeps(tag: &str) -> Vec<i32> {
    pids_with_cmdline(&format!("sleep {tag}"))
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
        })
        .collect()
}

fn data_dir_of(name: &str) -> PathBuf {
    user().home.join(".local/share/sbox/sandboxes").join(name)
}

fn runtime_dir_of(name: &str) -> PathBuf {
    state_base().join("names").join(name)
}

/// Run with piped output; fail if it takes longer than `secs`.
fn output_within(mut c: Command, secs: u64) -> (Output, Duration) {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let child = c.spawn().expect("spawn");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(o) => (o.expect("wait"), start.elapsed()),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("did not finish within {secs}s");
        }
    }
}

/// Assert a failure of sbox itself: status `code`, one line
/// `sbox: error: ...` on stderr that contains `needle`.
#[track_caller]
fn assert_sbox_error(o: &Output, code: i32, needle: &str, what: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{what}: {e}");
    assert!(!e.contains("panicked"), "{what}: {e}");
    assert!(e.contains(needle), "{what}: lacks {needle:?}: {e}");
    if code == 125 {
        assert_eq!(e.lines().count(), 1, "{what}: not one line: {e}");
        assert!(e.starts_with("sbox: error: "), "{what}: {e}");
    }
}

#[test]
fn detached_lifecycle_keeps_the_root_across_stop_and_start() {
    let p = Project::new("life");
    let g = Named::new("life");
    let name = g.name.as_str();
    let tag = sleep_tag(1000);
    start_detached(&p, name, &[], &["sleep", &tag]);

    // ps: running, in text and JSON.
    let line = ps_line(name, false).expect("ps lists it");
    assert_eq!(line[1], "running", "{line:?}");
    let row = ps_row(name, false).expect("ps --json lists it");
    assert_eq!(row["status"], "running", "{row}");
    assert_eq!(row["command"][1], tag.as_str(), "{row}");
    assert_eq!(row["project"], p.dir.to_string_lossy().as_ref(), "{row}");
    let pid = launcher_pid(name);
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "launcher {pid} not there"
    );

    // exec: PID 1 is the sandbox's init, the sbox binary.
    let cmdline = ok(sb(&p.dir, &["exec", name, "--", "cat", "/proc/1/cmdline"]));
    let argv: Vec<&str> = cmdline.split('\0').collect();
    assert_eq!(argv[0], sbox_bin().to_string_lossy(), "{argv:?}");
    assert!(argv.contains(&name), "{argv:?}");

    // A file written through exec is seen by the sandbox's other processes.
    let content = format!("written by exec in {name}");
    ok(sb(
        &p.dir,
        &[
            "exec",
            name,
            "--",
            "sh",
            "-c",
            &format!("echo '{content}' > /opt/from-exec"),
        ],
    ));
    let read = ok(sb(&p.dir, &["exec", name, "--", "cat", "/opt/from-exec"]));
    assert_eq!(read, format!("{content}\n"));
    assert!(
        !Path::new("/opt/from-exec").exists(),
        "the write reached the host's /opt"
    );
    assert!(!p.dir.join("from-exec").exists());
    assert!(
        data_dir_of(name).join("upper/opt/from-exec").exists(),
        "not in the persistent upper layer"
    );

    // start of a running one is refused.
    assert_sbox_error(
        &sb(&p.dir, &["start", name]),
        125,
        "already running",
        "start running",
    );

    // stop: nothing of it is left on the host.
    assert!(
        wait_for(10, || !sleeps(&tag).is_empty()),
        "the command is not running"
    );
    assert!(!launcher_pids(name).is_empty(), "no launcher found");
    assert_eq!(
        ok(sb(&p.dir, &["stop", "-t", "5", name])),
        format!("{name}\n")
    );
    assert!(sleeps(&tag).is_empty(), "the command survived stop");
    assert!(
        launcher_pids(name).is_empty(),
        "sbox processes survived stop: {:?}",
        launcher_pids(name)
    );
    assert!(ps_line(name, false).is_none(), "ps still lists it");
    let line = ps_line(name, true).expect("ps -a lists it");
    assert_eq!(line[1], "stopped", "{line:?}");
    let size = line.last().expect("size");
    assert!(
        size.ends_with(['B', 'K', 'M', 'G'])
            && size[..size.len() - 1].parse::<f64>().is_ok_and(|s| s > 0.0),
        "no size: {line:?}"
    );
    let row = ps_row(name, true).expect("ps -a --json lists it");
    assert_eq!(row["status"], "stopped", "{row}");
    assert!(row["size"].as_u64().is_some_and(|s| s > 0), "{row}");

    // start: back, with the file written before.
    assert_eq!(ok(sb(&p.dir, &["start", name])), format!("{name}\n"));
    assert_eq!(ps_line(name, false).expect("running again")[1], "running");
    assert!(
        wait_for(10, || !sleeps(&tag).is_empty()),
        "the command did not start again"
    );
    let read = ok(sb(&p.dir, &["exec", name, "--", "cat", "/opt/from-exec"]));
    assert_eq!(read, format!("{content}\n"));
    ok(sb(&p.dir, &["stop", "-t", "5", name]));
    assert!(sleeps(&tag).is_empty());

    // run --name of the stopped one uses the same root.
    let read = ok(sb(
        &p.dir,
        &["run", "--name", name, "--", "cat", "/opt/from-exec"],
    ));
    assert_eq!(read, format!("{content}\n"));

    // rm: its state is gone.
    assert!(data_dir_of(name).exists(), "no data dir to remove");
    assert_eq!(ok(sb(&p.dir, &["rm", name])), format!("{name}\n"));
    assert!(!data_dir_of(name).exists(), "data dir left behind");
    assert!(!runtime_dir_of(name).exists(), "runtime dir left behind");
    assert!(ps_line(name, true).is_none(), "ps -a still lists it");
    // A new run of the name starts from the host again.
    let o = sb(
        &p.dir,
        &["run", "--name", name, "--", "test", "-e", "/opt/from-exec"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[test]
fn detached_without_a_name_gets_one_and_keeps_its_output() {
    let p = Project::new("logs");
    let tag = format!("{}", std::process::id());
    let o = ok(sb(
        &p.dir,
        &[
            "run",
            "-d",
            "--",
            "sh",
            "-c",
            &format!("echo out-{tag}; echo err-{tag} >&2; exec sleep 1000"),
        ],
    ));
    let name = o.trim_end_matches('\n');
    let _g = Named::adopt(name);
    assert_eq!(o.lines().count(), 1, "{o:?}");
    assert!(
        !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)),
        "not a valid name: {name:?}"
    );
    assert_eq!(ps_line(name, false).expect("ps lists it")[1], "running");
    let mut logs = String::new();
    let seen = wait_for(10, || {
        logs = ok(sb(&p.dir, &["logs", name]));
        logs.contains(&format!("out-{tag}\n")) && logs.contains(&format!("err-{tag}\n"))
    });
    assert!(seen, "logs lack the output: {logs:?}");
    // The log stays readable once it is stopped.
    ok(sb(&p.dir, &["stop", "-t", "5", name]));
    let logs = ok(sb(&p.dir, &["logs", name]));
    assert!(logs.contains(&format!("out-{tag}\n")), "{logs:?}");
}

/// A python3 script that tries the calls a sandbox must refuse and prints
/// `name=ERRNO` for each (`name=ok` when the call succeeded).
const PROBE: &str = r#"
import ctypes, errno, platform, sys
libc = ctypes.CDLL(None, use_errno=True)
x86 = platform.machine() == "x86_64"
NR = {"keyctl": 250 if x86 else 219, "bpf": 321 if x86 else 280}
args = {"keyctl": (0, 0, 0, 0, 0), "bpf": (0, 0, 0)}
for name in sys.argv[1:]:
    r = libc.syscall(NR[name], *args[name])
    e = ctypes.get_errno()
    print(f"{name}={'ok' if r >= 0 else errno.errorcode.get(e, e)}")
"#;

fn connect_script(port: u16) -> String {
    format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected")
}

#[test]
fn exec_is_confined_like_the_sandbox() {
    let secret = canary_secret();
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let p = Project::new("execconf");
    let probe = p.write("probe.py", PROBE);
    let probe = probe.to_string_lossy().into_owned();
    let bashrc = user().home.join(".bashrc");
    let before = std::fs::read(&bashrc).ok();

    let g = Named::new("conf");
    let name = g.name.as_str();
    start_detached(
        &p,
        name,
        &["--profile", "build", "--net", "none"],
        &["sleep", "1000"],
    );
    // Secrets stay hidden.
    let o = sb(
        &p.dir,
        &["exec", name, "--", "cat", &secret.to_string_lossy()],
    );
    assert!(!o.status.success(), "read the canary");
    assert!(!stdout(&o).contains("CANARY"));
    // The host's loopback is out of reach.
    let o = sb(
        &p.dir,
        &["exec", name, "--", "bash", "-c", &connect_script(port)],
    );
    assert!(!o.status.success(), "connected from --net none");
    assert!(!stdout(&o).contains("connected"));
    // Seccomp: EPERM.
    let out = ok(sb(
        &p.dir,
        &["exec", name, "--", "python3", &probe, "keyctl", "bpf"],
    ));
    assert_eq!(out, "keyctl=EPERM\nbpf=EPERM\n");
    // Landlock: ~/.bashrc is not writable, the project is.
    let o = sb(
        &p.dir,
        &[
            "exec",
            name,
            "--",
            "sh",
            "-c",
            "echo evil >> ~/.bashrc; echo rc=$?; echo ok > from-exec.txt && cat from-exec.txt",
        ],
    );
    let out = stdout(&o);
    assert!(
        out.starts_with("rc=1\n") || out.starts_with("rc=2\n"),
        "{out}"
    );
    assert!(out.ends_with("ok\n"), "{out} {}", stderr(&o));
    assert_eq!(std::fs::read(&bashrc).ok(), before, "~/.bashrc changed");
    assert_eq!(
        std::fs::read_to_string(p.dir.join("from-exec.txt")).expect("project file"),
        "ok\n"
    );

    // Control, with the dev profile and the host network: the same
    // connection works and ~/.bashrc is writable (in the sandbox's upper
    // layer), so the refusals above come from the build sandbox's policy.
    let c = Named::new("conf-ctl");
    start_detached(&p, &c.name, &["--net", "host"], &["sleep", "1000"]);
    let o = sb(
        &p.dir,
        &["exec", &c.name, "--", "bash", "-c", &connect_script(port)],
    );
    assert_eq!(stdout(&o), "connected\n", "{}", stderr(&o));
    let o = sb(
        &p.dir,
        &[
            "exec",
            &c.name,
            "--",
            "sh",
            "-c",
            "echo evil >> ~/.bashrc && echo rc=$?",
        ],
    );
    assert_eq!(stdout(&o), "rc=0\n", "{}", stderr(&o));
    assert_eq!(std::fs::read(&bashrc).ok(), before, "~/.bashrc changed");
    assert!(std::fs::read_to_string(&secret)
        .expect("canary")
        .contains("CANARY"));
}

#[test]
fn exec_cannot_inject_into_a_terminal() {
    let p = Project::new("exectiocsti");
    // Take the terminal as the controlling one first, so that only the
    // filter stands between the process and TIOCSTI.
    let script = "import fcntl, termios\ntry:\n    fcntl.ioctl(0, termios.TIOCSCTTY, 0)\nexcept OSError:\n    pass\ntry:\n    fcntl.ioctl(0, termios.TIOCSTI, b'x')\n    print('injected')\nexcept OSError as e:\n    print('refused', e.errno)\n";
    let probe = p.write("tiocsti.py", script);
    let probe = probe.to_string_lossy().into_owned();
    let prof = p.write(
        "nofilter.toml",
        "include = [\"build\"]\n[seccomp]\nenabled = false\n",
    );
    let g = Named::new("tiocsti");
    start_detached(&p, &g.name, &["--profile", "build"], &["sleep", "1000"]);
    let c = Named::new("tiocsti-ctl");
    start_detached(
        &p,
        &c.name,
        &["--profile", &prof.to_string_lossy()],
        &["sleep", "1000"],
    );
    let attempt = |name: &str, flag: &str| {
        let pty = nix::pty::openpty(None, None).expect("pty");
        let mut cmd = sbox(&p.dir, &["exec", flag, name, "--", "python3", &probe]);
        cmd.stdin(pty.slave)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let o = cmd.output().expect("exec");
        (stdout(&o), stderr(&o))
    };
    // -t: the sandbox's own pty, where only the filter refuses TIOCSTI.
    let (out, err) = attempt(&g.name, "-t");
    assert!(out.contains("refused 1"), "-t: {out:?} {err}");
    // Control: without the filter the same attempt succeeds.
    let (out, err) = attempt(&c.name, "-t");
    assert!(out.contains("injected"), "-t control: {out:?} {err}");
    // -i: the caller's terminal never enters the sandbox (stdin is a pipe
    // of sbox's relay): the filter refuses, and without it there is no
    // terminal to inject into (ENOTTY).
    let (out, err) = attempt(&g.name, "-i");
    assert!(out.contains("refused 1"), "-i: {out:?} {err}");
    let (out, err) = attempt(&c.name, "-i");
    assert!(out.contains("refused 25"), "-i control: {out:?} {err}");
}

#[test]
fn exec_runs_in_the_sandboxs_pid_namespace_and_dies_with_it() {
    let p = Project::new("execpid");
    let g = Named::new("pidns");
    let name = g.name.as_str();
    let main_tag = sleep_tag(3000);
    let exec_tag = sleep_tag(4000);
    start_detached(&p, name, &[], &["sleep", &main_tag]);
    let out = ok(sb(
        &p.dir,
        &[
            "exec",
            name,
            "--",
            "sh",
            "-c",
            "echo $$; tr '\\0' ' ' < /proc/1/cmdline",
        ],
    ));
    let mut l = out.lines();
    let pid: u32 = l.next().and_then(|s| s.parse().ok()).expect("pid");
    assert!(pid < 50, "$$ = {pid}: not in the sandbox's pid namespace");
    let init = l.next().expect("cmdline");
    assert!(
        init.starts_with(&format!("{} run", sbox_bin().display())),
        "PID 1 is {init:?}"
    );

    let mut client = spawn(sbox(&p.dir, &["exec", name, "--", "sleep", &exec_tag]));
    assert!(
        wait_for(20, || !sleeps(&exec_tag).is_empty()),
        "the exec'd command did not start"
    );
    let exec_pid = sleeps(&exec_tag)[0];
    assert!(wait_for(10, || !sleeps(&main_tag).is_empty()));
    let main_pid = sleeps(&main_tag)[0];
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).expect("ns");
    assert_eq!(
        ns(exec_pid),
        ns(main_pid),
        "not the sandbox's pid namespace"
    );
    assert_ne!(ns(exec_pid), ns(std::process::id() as i32));
    let status = std::fs::read_to_string(format!("/proc/{exec_pid}/status")).expect("status");
    let nspid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .expect("NSpid");
    assert_eq!(nspid.split_whitespace().count(), 2, "NSpid: {nspid}");

    ok(sb(&p.dir, &["stop", "-t", "5", name]));
    assert!(sleeps(&exec_tag).is_empty(), "the exec'd command survived");
    assert!(sleeps(&main_tag).is_empty());
    // The exec client ends too, with the status of a killed command.
    assert!(
        wait_for(10, || client.try_wait().expect("wait").is_some()),
        "sbox exec hangs after the sandbox stopped"
    );
    let st = client.wait().expect("wait");
    assert_eq!(st.code(), Some(137));
}

#[test]
fn exec_environment_and_exit_status() {
    let p = Project::new("execenv");
    let g = Named::new("env");
    let name = g.name.as_str();
    let mut c = sbox(&p.dir, &[]);
    c.env("SSH_AUTH_SOCK", "/tmp/agent.sock");
    start_detached_with(c, name, &[], &["sleep", "1000"]);
    let mut c = sbox(&p.dir, &["exec", "--env", "A=1", name, "--", "env"]);
    c.env("SSH_AUTH_SOCK", "/tmp/agent.sock")
        .env("AWS_SECRET_ACCESS_KEY", "secret");
    let out = ok(output(c));
    assert!(out.contains("A=1\n"), "{out}");
    assert!(out.contains("PATH="), "{out}");
    assert!(!out.contains("SSH_AUTH_SOCK"), "{out}");
    assert!(!out.contains("AWS_SECRET"), "{out}");
    // Without --env, A is not there.
    let out = ok(sb(&p.dir, &["exec", name, "--", "env"]));
    assert!(!out.contains("A=1\n"), "{out}");
    // The working directory is the sandbox's.
    let out = ok(sb(&p.dir, &["exec", name, "--", "pwd"]));
    assert_eq!(out.trim(), p.dir.to_string_lossy());

    let o = sb(&p.dir, &["exec", name, "--", "sh", "-c", "exit 9"]);
    assert_eq!(o.status.code(), Some(9), "{}", stderr(&o));
    let o = sb(&p.dir, &["exec", name, "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
    let o = sb(&p.dir, &["exec", name, "--", "no-such-command-xyz"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(stderr(&o).contains("no-such-command-xyz"), "{}", stderr(&o));
    // Standard input only with -i.
    let o = output_with_input(sbox(&p.dir, &["exec", "-i", name, "--", "cat"]), b"fed\n");
    assert_eq!(ok(o), "fed\n");
    let o = output_with_input(sbox(&p.dir, &["exec", name, "--", "cat"]), b"fed\n");
    assert_eq!(ok(o), "");
}

fn read_until(master: &mut std::fs::File, needle: &str, secs: u64) -> String {
    use std::os::fd::AsRawFd;
    let mut acc = String::new();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 4096];
    while Instant::now() < end && !acc.contains(needle) {
        // SAFETY: the master outlives this borrow.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(master.as_raw_fd()) };
        let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
        if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(200u16)).unwrap_or(0) == 0 {
            continue;
        }
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => acc.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    acc
}

#[test]
fn exec_t_gives_a_terminal() {
    let p = Project::new("exectty");
    let g = Named::new("tty");
    start_detached(&p, &g.name, &[], &["sleep", "1000"]);
    let ws = nix::pty::Winsize {
        ws_row: 27,
        ws_col: 91,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).expect("openpty");
    let mut master = std::fs::File::from(pty.master);
    let slave = pty.slave;
    let mut cmd = sbox(&p.dir, &["exec", "-t", &g.name, "--", "sh"]);
    cmd.stdin(slave.try_clone().expect("dup"))
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn exec -t");
    master
        .write_all(b"tty; stty size; test -t 0 && echo $((6*7))-ok\n")
        .expect("write");
    let out = read_until(&mut master, "42-ok\r\n", 20);
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("27 91"), "{out:?}");
    assert!(out.contains("42-ok\r\n"), "{out:?}");
    master.write_all(b"exit 3\n").expect("exit");
    assert!(
        wait_for(20, || child.try_wait().expect("wait").is_some()),
        "exec -t did not end"
    );
    assert_eq!(child.wait().expect("wait").code(), Some(3));
}

#[test]
fn exec_client_going_away_leaves_init_idle() {
    let p = Project::new("execgone");
    let g = Named::new("gone");
    let name = g.name.as_str();
    let tag = sleep_tag(5000);
    start_detached(&p, name, &[], &["sleep", "1000"]);
    let mut client = spawn(sbox(&p.dir, &["exec", name, "--", "sleep", &tag]));
    assert!(wait_for(20, || !sleeps(&tag).is_empty()));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(client.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let _ = client.wait();
    // Like docker exec, the command goes on without its client…
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !sleeps(&tag).is_empty(),
        "the command ended with its client"
    );
    // …and init does not spin on the closed connection.
    let cpu = |pid: i32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
    };
    let procs = launcher_pids(name);
    let before: Vec<u64> = procs.iter().map(|p| cpu(*p)).collect();
    std::thread::sleep(Duration::from_secs(2));
    let after: Vec<u64> = procs.iter().map(|p| cpu(*p)).collect();
    let ticks: u64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
    assert!(
        ticks < 50,
        "sbox processes used {ticks} clock ticks in 2s while idle"
    );
    // Another exec still works, and the sandbox still stops cleanly.
    assert_eq!(ok(sb(&p.dir, &["exec", name, "--", "echo", "hi"])), "hi\n");
    ok(sb(&p.dir, &["stop", "-t", "5", name]));
    assert!(sleeps(&tag).is_empty());
}

#[test]
fn a_control_request_other_than_exec_is_answered_with_what_was_expected() {
    use nix::sys::socket::{connect, recv, send, socket, AddressFamily, MsgFlags};
    use nix::sys::socket::{SockFlag, SockType, UnixAddr};
    use std::os::fd::{AsFd, AsRawFd};
    let p = Project::new("badreq");
    let g = Named::new("badreq");
    let name = g.name.as_str();
    start_detached(&p, name, &[], &["sleep", "1000"]);
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    let addr = UnixAddr::new(&runtime_dir_of(name).join("control.sock")).expect("address");
    connect(fd.as_raw_fd(), &addr).expect("connect");
    // What `sbox exec` sends once its command runs, not a request.
    send(fd.as_raw_fd(), br#""Hangup""#, MsgFlags::empty()).expect("send");
    let mut pfd = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let n = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(10_000u16)).expect("poll");
    assert_eq!(n, 1, "no answer within 10s");
    let mut buf = [0u8; 4096];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).expect("recv");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let answer: serde_json::Value = serde_json::from_slice(&buf[..n])
        .unwrap_or_else(|e| panic!("not an answer ({e}): {text:?}"));
    assert_eq!(
        answer["ExecFailed"]["error"], "the request of `sbox exec`: expected Exec, got Hangup",
        "{text}"
    );
    // The sandbox goes on serving requests.
    assert_eq!(ok(sb(&p.dir, &["exec", name, "--", "echo", "hi"])), "hi\n");
}

#[test]
fn two_runs_of_one_name_at_once_start_exactly_one() {
    let p = Project::new("race");
    let g = Named::new("race");
    let name = g.name.as_str();
    for round in 0..2 {
        let marker = format!("started-{round}");
        let script = format!("echo $$ >> {marker}; sleep 2");
        let children: Vec<_> = (0..3)
            .map(|_| {
                spawn(sbox(
                    &p.dir,
                    &["run", "--name", name, "--", "sh", "-c", &script],
                ))
            })
            .collect();
        // Something looking at the names at the same time.
        let ps: Vec<_> = (0..3).map(|_| spawn(sbox(&p.dir, &["ps"]))).collect();
        let outs: Vec<Output> = children
            .into_iter()
            .chain(ps)
            .map(|c| c.wait_with_output().expect("wait"))
            .collect();
        let (runs, ps) = outs.split_at(3);
        for o in ps {
            assert!(o.status.success(), "ps: {}", stderr(o));
        }
        let winners = runs.iter().filter(|o| o.status.success()).count();
        assert_eq!(winners, 1, "round {round}: {winners} runs succeeded");
        for o in runs.iter().filter(|o| !o.status.success()) {
            assert_sbox_error(o, 125, "already running", "the losing run");
        }
        let started = std::fs::read_to_string(p.dir.join(&marker)).expect("marker");
        assert_eq!(started.lines().count(), 1, "round {round}: {started}");
    }
}

#[test]
fn kill_of_a_detached_launcher_takes_its_sandbox_down() {
    let p = Project::new("crash");
    let g = Named::new("crash");
    let name = g.name.as_str();
    let tag = sleep_tag(6000);
    start_detached(&p, name, &[], &["sleep", &tag]);
    let pid = launcher_pid(name);
    assert!(wait_for(10, || !sleeps(&tag).is_empty()));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("launcher cmdline");
    assert!(
        String::from_utf8_lossy(&cmdline).contains(name),
        "pid {pid} is not the launcher"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    assert!(
        wait_for(10, || sleeps(&tag).is_empty()),
        "the sandbox outlived its launcher"
    );
    assert!(
        wait_for(10, || launcher_pids(name).is_empty()),
        "sbox processes left: {:?}",
        launcher_pids(name)
    );
    assert!(
        wait_for(5, || ps_row(name, false).is_none()),
        "ps still lists it running"
    );
    let row = ps_row(name, true).expect("ps -a lists it");
    assert_eq!(row["status"], "stopped", "{row}");
    assert_eq!(ok(sb(&p.dir, &["rm", name])), format!("{name}\n"));
    assert!(!data_dir_of(name).exists(), "data dir left behind");
    assert!(!runtime_dir_of(name).exists(), "runtime dir left behind");
    let prefix = format!("run-{pid}-");
    let left: Vec<_> = state_entries()
        .into_iter()
        .filter(|e| e.to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "the launcher's state is left: {left:?}");
}

#[test]
fn fork_bomb_is_contained_by_pids() {
    let p = Project::new("pids");
    let tag = format!("30.{}", std::process::id());
    let script = format!(
        "i=0; while [ $i -lt 300 ]; do sleep {tag} & i=$((i+1)); done; echo spawned $i; wait"
    );
    let (o, took) = output_within(
        sbox(
            &p.dir,
            &[
                "run",
                "--verbose",
                "--pids",
                "64",
                "--",
                "sh",
                "-c",
                &script,
            ],
        ),
        25,
    );
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(err.contains("RLIMIT_NPROC"), "{err}");
    assert!(
        !o.status.success() || err.contains("fork") || err.contains("Resource temporarily"),
        "no fork failed: {:?} {out} {err}",
        o.status
    );
    assert!(!out.contains("spawned 300"), "{out}");
    assert!(took < Duration::from_secs(25));
    // The host (and the user) can still start processes.
    assert!(Command::new("true").status().expect("true").success());
    let o = output(as_user(Path::new("/bin/sh"), &["-c", "echo alive"]));
    assert_eq!(ok(o), "alive\n");
    assert!(sleeps(&tag).is_empty(), "processes of the bomb are left");
}

#[test]
fn memory_limit_fails_a_large_allocation_only() {
    let p = Project::new("mem");
    let o = sb(
        &p.dir,
        &[
            "run",
            "--verbose",
            "--memory",
            "64M",
            "--",
            "python3",
            "-c",
            "x = bytearray(256 << 20)",
        ],
    );
    let err = stderr(&o);
    assert!(!o.status.success(), "256M allocated under --memory 64M");
    assert!(err.contains("MemoryError"), "{err}");
    assert!(err.contains("RLIMIT_AS"), "{err}");
    let o = sb(
        &p.dir,
        &[
            "run",
            "--memory",
            "64M",
            "--",
            "python3",
            "-c",
            "x = bytearray(8 << 20); print(len(x))",
        ],
    );
    assert_eq!(ok(o), format!("{}\n", 8 << 20));
}

#[test]
fn nofile_limits_open_files() {
    let p = Project::new("nofile");
    let o = run_sh(&p.dir, &["--verbose", "--nofile", "64"], "ulimit -n");
    assert_eq!(stdout(&o), "64\n", "{}", stderr(&o));
    assert!(stderr(&o).contains("RLIMIT_NOFILE"), "{}", stderr(&o));
    // Control: not the default.
    let o = ok(run_sh(&p.dir, &[], "ulimit -n"));
    assert_ne!(o, "64\n");
}

#[test]
fn timeout_stops_the_sandbox_with_124() {
    let p = Project::new("timeout");
    let tag = format!("60.{}", std::process::id());
    let (o, took) = output_within(
        sbox(&p.dir, &["run", "--timeout", "2s", "--", "sleep", &tag]),
        20,
    );
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(8),
        "took {took:?}"
    );
    let e = stderr(&o);
    assert!(e.contains("--timeout"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(sleeps(&tag).is_empty(), "the command is still running");
    assert!(
        pids_with_cmdline(&format!("--timeout 2s -- sleep {tag}")).is_empty(),
        "sbox processes left"
    );
}

#[test]
fn cpus_restricts_the_cpus_seen() {
    let p = Project::new("cpus");
    let o = sb(&p.dir, &["run", "--verbose", "--cpus", "1", "--", "nproc"]);
    assert_eq!(stdout(&o), "1\n", "{}", stderr(&o));
    assert!(stderr(&o).contains("CPU affinity"), "{}", stderr(&o));
}

#[test]
fn bad_names_and_states_are_one_clear_line() {
    let p = Project::new("badlc");
    let long = "a".repeat(65);
    let missing = uniq("missing");
    // Names.
    for bad in ["a/b", long.as_str(), "", "..", "-x"] {
        let o = sb(&p.dir, &["run", &format!("--name={bad}"), "--", "true"]);
        assert_sbox_error(&o, 125, "invalid sandbox name", &format!("--name={bad:?}"));
        for cmd in [
            &["exec", bad, "--", "true"][..],
            &["stop", bad],
            &["rm", bad],
        ] {
            let o = sb(&p.dir, cmd);
            let code = o.status.code();
            if bad.starts_with('-') {
                assert!(code == Some(2) || code == Some(125), "{cmd:?}: {o:?}");
            } else {
                assert_sbox_error(&o, 125, "invalid sandbox name", &format!("{cmd:?}"));
            }
        }
    }
    let o = sb(&p.dir, &["run", "--name", "-x", "--", "true"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!data_dir_of("a").exists() && !data_dir_of(&long).exists());
    // Names that are not there.
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["exec", &missing, "--", "true"], "no sandbox named"),
        (vec!["stop", &missing], "no sandbox named"),
        (vec!["start", &missing], "no sandbox named"),
        (vec!["rm", &missing], "no sandbox named"),
        (vec!["logs", &missing], "no sandbox named"),
    ];
    for (args, needle) in &cases {
        assert_sbox_error(&sb(&p.dir, args), 125, needle, &format!("{args:?}"));
    }
    assert!(!data_dir_of(&missing).exists());
    // Bad limits.
    let limits: &[(&[&str], &str)] = &[
        (&["--memory", "12Q"], "--memory"),
        (&["--memory", "lots"], "--memory"),
        (&["--memory", "1"], "--memory"),
        (&["--memory", "99999999999T"], "--memory"),
        (&["--timeout", "5x"], "--timeout"),
        (&["--timeout", "0"], "--timeout"),
        (&["--timeout", ""], "--timeout"),
        (&["--timeout", "99999999999999999999999d"], "--timeout"),
        (&["--pids", "0"], "--pids"),
        (&["--nofile", "0"], "--nofile"),
        (&["--cpus", "0"], "--cpus"),
    ];
    for (opts, needle) in limits {
        let mut args = vec!["run"];
        args.extend_from_slice(opts);
        args.extend_from_slice(&["--", "touch", "started"]);
        assert_sbox_error(&sb(&p.dir, &args), 125, needle, &format!("{opts:?}"));
        assert!(!p.dir.join("started").exists(), "{opts:?}: the command ran");
    }
}

#[test]
fn rm_of_a_running_sandbox_needs_force() {
    let p = Project::new("rmrun");
    let g = Named::new("rmrun");
    let name = g.name.as_str();
    let tag = sleep_tag(7000);
    start_detached(&p, name, &[], &["sleep", &tag]);
    assert!(wait_for(10, || !sleeps(&tag).is_empty()));
    assert_sbox_error(&sb(&p.dir, &["rm", name]), 125, "running", "rm running");
    assert_eq!(ps_line(name, false).expect("still listed")[1], "running");
    assert!(!sleeps(&tag).is_empty(), "rm without -f stopped it");
    assert!(data_dir_of(name).exists());
    assert_eq!(ok(sb(&p.dir, &["exec", name, "--", "echo", "up"])), "up\n");
    // rm -f stops it and removes it.
    assert_eq!(ok(sb(&p.dir, &["rm", "-f", name])), format!("{name}\n"));
    assert!(sleeps(&tag).is_empty());
    assert!(!data_dir_of(name).exists());
    assert!(!runtime_dir_of(name).exists());
}

#[test]
fn detached_run_of_a_missing_command_fails_like_docker() {
    let p = Project::new("detach-missing");
    let n = Named::new("missing");
    let o = sb(
        &p.dir,
        &["run", "-d", "--name", &n.name, "--", "no-such-command-xyz"],
    );
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "printed a name: {}", stdout(&o));
    assert!(
        stderr(&o).contains("no-such-command-xyz: command not found"),
        "{}",
        stderr(&o)
    );
    assert!(ps_row(&n.name, false).is_none(), "shown as running");
    let o = sb(
        &p.dir,
        &["run", "-d", "--name", &n.name, "--", "/etc/hostname"],
    );
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
}
