//! `sbox shell` without a terminal (its commands come from stdin, and it
//! ends at their end), its hang-up by SIGTERM and `sbox stop`, and
//! `sbox shell -- CMD` / `-c STRING`: one command in the project's own
//! sandbox, started or joined. Every wait is bounded: a hang fails the test.

mod common;
use common::*;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Wait up to `secs` for `child`; on time out kill it and fail.
#[track_caller]
fn wait_bounded(child: &mut Child, secs: u64, what: &str) -> ExitStatus {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {secs}s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run `c` with `input` on stdin (then closed), its output captured, for
/// at most `secs`.
#[track_caller]
fn run_bounded(mut c: Command, input: &[u8], secs: u64, what: &str) -> Output {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = wait_bounded(&mut child, secs, what);
    let _ = feeder.join();
    Output {
        status,
        stdout: o.join().unwrap_or_default(),
        stderr: e.join().unwrap_or_default(),
    }
}

/// A pseudo-terminal of the test (close-on-exec, so no other test's child
/// holds it), with what its master reads collected in the background.
struct Pty {
    master: File,
    slave: OwnedFd,
    seen: Arc<Mutex<String>>,
}

impl Pty {
    fn open() -> Self {
        use nix::fcntl::OFlag;
        let m = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .expect("posix_openpt");
        nix::pty::grantpt(&m).expect("grantpt");
        nix::pty::unlockpt(&m).expect("unlockpt");
        let name = nix::pty::ptsname_r(&m).expect("ptsname");
        let slave: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&name)
            .expect("open slave")
            .into();
        use std::os::fd::{FromRawFd, IntoRawFd};
        // SAFETY: (test) into_raw_fd hands over the descriptor nothing else
        // owns.
        let master = unsafe { File::from_raw_fd(m.into_raw_fd()) };
        let mut reader = master.try_clone().expect("dup master");
        let seen = Arc::new(Mutex::new(String::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut g) = s.lock() {
                    g.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Pty {
            master,
            slave,
            seen,
        }
    }

    /// Start `c` with the pty as its stdin, stdout and stderr, in a session
    /// of its own.
    fn spawn(&self, mut c: Command) -> Child {
        c.stdin(self.slave.try_clone().expect("dup"))
            .stdout(self.slave.try_clone().expect("dup"))
            .stderr(self.slave.try_clone().expect("dup"));
        // SAFETY: (test) only setsid between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            c.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        c.spawn().expect("spawn on the pty")
    }

    fn type_in(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).expect("write pty");
    }

    fn seen(&self) -> String {
        self.seen.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

/// The running sandbox of project `p` (name, launcher pid), if any.
fn running_sandbox(p: &Project) -> Option<(String, i64)> {
    let ps = ok(output(sbox(&p.dir, &["ps", "--json"])));
    let v: serde_json::Value = serde_json::from_str(&ps).expect("ps --json");
    v.as_array()?
        .iter()
        .find(|r| r["project"].as_str() == Some(&*p.dir.to_string_lossy()))
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["pid"].as_i64().unwrap_or(0),
            )
        })
}

#[test]
fn without_a_terminal_the_shell_runs_stdin_and_ends_with_it() {
    let p = Project::new("notty");
    let o = run_bounded(
        sbox(&p.dir, &["shell"]),
        b"echo hi\nexit 3\n",
        30,
        "printf ... | sbox shell",
    );
    assert_eq!(o.status.code(), Some(3), "stderr: {}", stderr(&o));
    // The commands' output only: no prompt, no echo of the input.
    assert_eq!(stdout(&o), "hi\n", "stderr: {}", stderr(&o));

    let t = Instant::now();
    let mut c = sbox(&p.dir, &["shell"]);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    let st = wait_bounded(&mut child, 30, "sbox shell </dev/null");
    assert_eq!(st.code(), Some(0));
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert!(
        running_sandbox(&p).is_none(),
        "the sandbox is still running"
    );
}

#[test]
fn sigterm_hangs_up_an_idle_shell_on_a_terminal() {
    let p = Project::new("hup");
    let tag = format!("SBOX_HUP_TAG={}-{}", std::process::id(), p.dir.display());
    // `timeout` puts sbox in a background process group of the terminal
    // that `script` gives it; the shell on the sandbox's pty is idle.
    let line = format!(
        "timeout -s TERM 3 {} shell --env {tag}; echo inner=$?",
        sbox_bin().display()
    );
    let mut c = as_user(std::path::Path::new("script"), &["-qc", &line, "/dev/null"]);
    c.current_dir(&p.dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = c.spawn().expect("spawn script");
    // stdin stays open (no end of input) until script ends.
    let _stdin = child.stdin.take();
    let mut out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    });
    let st = wait_bounded(&mut child, 30, "timeout -s TERM 3 sbox shell");
    let elapsed = t.elapsed();
    drop(_stdin);
    let text = reader.join().unwrap_or_default();
    assert!(st.success(), "script: {st:?}: {text}");
    assert!(text.contains("inner=124"), "not ended by timeout: {text}");
    assert!(
        elapsed < Duration::from_secs(10),
        "took {elapsed:?}: {text}"
    );
    let gone = wait_for(5, || pids_with_cmdline(&tag).is_empty());
    assert!(
        gone,
        "sandbox processes left: {:?}",
        pids_with_cmdline(&tag)
    );
    assert!(
        running_sandbox(&p).is_none(),
        "the sandbox is still running"
    );
}

#[test]
fn stop_hangs_up_a_shell_at_once() {
    let p = Project::new("stop");
    let pty = Pty::open();
    let mut child = pty.spawn(sbox(&p.dir, &["shell"]));
    let found = wait_for(20, || running_sandbox(&p).is_some());
    assert!(found, "the shell's sandbox did not start: {}", pty.seen());
    let (name, _) = running_sandbox(&p).expect("running");
    // The shell is up and idle at its prompt.
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let mut stop = sbox(&p.dir, &["stop", &name]);
    stop.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut s = stop.spawn().expect("spawn stop");
    let st = wait_bounded(&mut s, 30, "sbox stop");
    let elapsed = t.elapsed();
    assert!(st.success(), "sbox stop: {st:?}");
    assert!(
        elapsed < Duration::from_secs(5),
        "sbox stop of a shell took {elapsed:?}"
    );
    wait_bounded(&mut child, 10, "the stopped shell's sbox");
}

#[test]
fn a_command_runs_in_the_projects_sandbox_and_keeps_its_changes() {
    let p = Project::new("cmd");
    let o = run_bounded(
        sbox(&p.dir, &["shell", "--", "sh", "-c", "exit 7"]),
        b"",
        30,
        "sbox shell -- sh -c 'exit 7'",
    );
    assert_eq!(o.status.code(), Some(7), "stderr: {}", stderr(&o));

    // Installed outside the project: kept in the project's sandbox only.
    let tool = format!("/usr/local/bin/sbox-tool-{}", std::process::id());
    let o = run_bounded(
        sbox(
            &p.dir,
            &["shell", "--", "sh", "-c", &format!("echo x > {tool}")],
        ),
        b"",
        30,
        "installing",
    );
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert!(!std::path::Path::new(&tool).exists(), "{tool} on the host");
    let o = run_bounded(
        sbox(&p.dir, &["shell", "--", "cat", &tool]),
        b"",
        30,
        "cat tool",
    );
    assert_eq!(stdout(&o), "x\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
    let o = run_bounded(
        sbox(&p.dir, &["shell", "-c", &format!("cat {tool}; exit 6")]),
        b"",
        30,
        "sbox shell -c",
    );
    assert_eq!(stdout(&o), "x\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(6));
    // stdin reaches the command; nothing runs on once it ended.
    let o = run_bounded(
        sbox(&p.dir, &["shell", "--", "cat"]),
        b"through\n",
        30,
        "sbox shell -- cat",
    );
    assert_eq!(stdout(&o), "through\n", "stderr: {}", stderr(&o));
    assert!(
        running_sandbox(&p).is_none(),
        "the sandbox is still running"
    );
}

#[test]
fn a_command_joins_the_running_shell_of_the_project() {
    let p = Project::new("join");
    let mut pty = Pty::open();
    let mut first = pty.spawn(sbox(&p.dir, &["shell"]));
    let found = wait_for(20, || running_sandbox(&p).is_some());
    assert!(found, "the shell's sandbox did not start: {}", pty.seen());
    let (_, launcher) = running_sandbox(&p).expect("running");
    pty.type_in("echo first > /tmp/join-mark\n");
    let mut joined = String::new();
    let seen = wait_for(20, || {
        let o = run_bounded(
            sbox(&p.dir, &["shell", "--", "cat", "/tmp/join-mark"]),
            b"",
            30,
            "sbox shell -- cat (joining)",
        );
        joined = stdout(&o);
        joined == "first\n"
    });
    assert!(seen, "did not join the running shell: {joined:?}");
    // The status of the joined command, and a session without a terminal
    // that joins.
    let o = run_bounded(
        sbox(&p.dir, &["shell", "--", "sh", "-c", "exit 4"]),
        b"",
        30,
        "joined exit 4",
    );
    assert_eq!(o.status.code(), Some(4), "stderr: {}", stderr(&o));
    let o = run_bounded(
        sbox(&p.dir, &["shell"]),
        b"cat /tmp/join-mark\nexit 5\n",
        30,
        "joined shell without a terminal",
    );
    assert_eq!(stdout(&o), "first\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(
        running_sandbox(&p).map(|(_, pid)| pid),
        Some(launcher),
        "the first shell's sandbox is gone"
    );

    // A second shell on a terminal joins; SIGTERM to it hangs its session
    // up, and the first shell goes on.
    let pty2 = Pty::open();
    let mut second = pty2.spawn(sbox(&p.dir, &["shell"]));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        second.try_wait().expect("try_wait").is_none(),
        "{}",
        pty2.seen()
    );
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(second.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    wait_bounded(&mut second, 15, "the joined shell after SIGTERM");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(running_sandbox(&p).map(|(_, pid)| pid), Some(launcher));

    pty.type_in("exit\n");
    let st = wait_bounded(&mut first, 20, "the first shell");
    assert!(st.success(), "first shell: {st:?}: {}", pty.seen());
}

#[test]
fn a_shell_that_joined_keeps_the_sandbox_a_command_started() {
    let p = Project::new("keep");
    let mut c = sbox(
        &p.dir,
        &[
            "shell",
            "--",
            "sh",
            "-c",
            "echo one > /tmp/keep-mark; sleep 3; exit 2",
        ],
    );
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut command = c.spawn().expect("spawn");
    let found = wait_for(20, || running_sandbox(&p).is_some());
    assert!(found, "the command's sandbox did not start");
    let mut pty = Pty::open();
    let mut shell = pty.spawn(sbox(&p.dir, &["shell"]));
    pty.type_in("echo joined-$((1+1))\n");
    let joined = wait_for(20, || pty.seen().contains("joined-2"));
    assert!(joined, "the shell did not start: {}", pty.seen());
    // The command ends with its own status, without waiting for the shell.
    let st = wait_bounded(&mut command, 20, "the command that started the sandbox");
    assert_eq!(st.code(), Some(2));
    // The sandbox goes on with the shell in it.
    assert!(running_sandbox(&p).is_some(), "the sandbox ended");
    pty.type_in("cat /tmp/keep-mark; echo seen-$((2+3))\n");
    let seen = wait_for(20, || pty.seen().contains("seen-5"));
    assert!(seen && pty.seen().contains("one\r\n"), "{}", pty.seen());
    pty.type_in("exit\n");
    let st = wait_bounded(&mut shell, 20, "the joined shell");
    assert!(st.success(), "{st:?}: {}", pty.seen());
    let ended = wait_for(10, || running_sandbox(&p).is_none());
    assert!(ended, "the sandbox outlived its last session");
}

#[test]
fn commands_started_together_all_run_with_their_status() {
    let p = Project::new("many");
    let dir = p.dir.clone();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut codes = Vec::new();
                for i in 0..4 {
                    let script = format!("echo {w}-{i} >> /tmp/ran; exit 3");
                    let o = run_bounded(
                        sbox(&dir, &["shell", "--", "sh", "-c", &script]),
                        b"",
                        60,
                        "concurrent sbox shell --",
                    );
                    codes.push((o.status.code(), stderr(&o)));
                }
                codes
            })
        })
        .collect();
    for w in workers {
        for (code, err) in w.join().expect("worker") {
            assert_eq!(code, Some(3), "stderr: {err}");
        }
    }
    assert!(
        wait_for(10, || running_sandbox(&p).is_none()),
        "the sandbox outlived its sessions"
    );
}

#[test]
fn a_command_that_starts_the_sandbox_keeps_its_timeout_status() {
    let p = Project::new("tmo");
    let t = Instant::now();
    let o = run_bounded(
        sbox(&p.dir, &["shell", "--timeout", "2s", "--", "sleep", "30"]),
        b"",
        30,
        "sbox shell --timeout 2s -- sleep 30",
    );
    assert_eq!(o.status.code(), Some(124), "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("--timeout"), "{}", stderr(&o));
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
}
