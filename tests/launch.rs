//! The rootless launch: namespaces, ids, the root view, secrets, exit
//! codes, signals and bad input, through the real binary as an
//! unprivileged user.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;

#[test]
fn caller_is_root_inside_with_the_subordinate_range() {
    use std::os::unix::fs::MetadataExt;
    let p = Project::new("ids");
    let out = ok(run_sh(
        &p.dir,
        &[],
        "id -u; id -g; touch mine sub; chown 1:1 sub; chown 65536:65536 mine; touch root",
    ));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("0"));
    assert_eq!(lines.next(), Some("0"));
    // Seen from the host: root inside is the caller, 1.. the subordinate
    // range, whatever namespaces sbox went through to get there.
    let u = user();
    let start = |file: &str| -> u32 {
        let text = std::fs::read_to_string(file).expect(file);
        let range = text
            .lines()
            .find(|l| {
                l.starts_with(&format!("{}:", u.name)) || l.starts_with(&format!("{}:", u.uid))
            })
            .expect("the test user has a subordinate range");
        range
            .split(':')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("start")
    };
    let md = |f: &str| std::fs::metadata(p.dir.join(f)).expect(f);
    assert_eq!(
        (md("root").uid(), md("root").gid()),
        (u.uid, u.gid),
        "{out}"
    );
    assert_eq!(
        (md("sub").uid(), md("sub").gid()),
        (start("/etc/subuid"), start("/etc/subgid")),
        "{out}"
    );
    assert_eq!(
        (md("mine").uid(), md("mine").gid()),
        (start("/etc/subuid") + 65535, start("/etc/subgid") + 65535),
        "{out}"
    );
}

#[test]
fn chown_to_a_subordinate_id_works() {
    let p = Project::new("chown");
    let out = ok(run_sh(
        &p.dir,
        &[],
        "touch /tmp/f && chown 1000:1000 /tmp/f && stat -c %u:%g /tmp/f",
    ));
    assert_eq!(out.trim(), "1000:1000");
}

#[test]
fn map_user_keeps_the_callers_ids() {
    let p = Project::new("mapuser");
    let out = ok(run_sh(&p.dir, &["--map-user"], "id -u; id -g"));
    let u = user();
    assert_eq!(out, format!("{}\n{}\n", u.uid, u.gid));
    // On the FUSE root the caller's own files are theirs, root's are root's.
    let out = ok(run_sh(
        &p.dir,
        &["--map-user"],
        "stat -c %u ~; echo x > ~/.sbox-map-user-probe && echo home-writable; touch /usr/bin/sbox-x 2>/dev/null || echo usr-refused",
    ));
    assert_eq!(out, format!("{}\nhome-writable\nusr-refused\n", u.uid));
}

#[test]
fn own_pid_namespace() {
    let p = Project::new("pid");
    let out = ok(run_sh(&p.dir, &[], "echo $$; ls /proc | grep -c '^[0-9]'"));
    let mut l = out.lines();
    let pid: u32 = l.next().and_then(|s| s.parse().ok()).expect("pid");
    assert!(pid <= 2, "pid {pid}");
    let count: u32 = l.next().and_then(|s| s.parse().ok()).expect("count");
    assert!(
        count <= 4,
        "{count} processes visible: host processes leak into /proc"
    );
}

#[test]
fn writes_outside_the_project_stay_in_the_sandbox() {
    let p = Project::new("cow");
    let home_probe = user().home.join("sbox-cow-probe");
    let _ = std::fs::remove_file(&home_probe);
    let script = format!(
        "echo inside > {0} && cat {0} && echo project > {1}/made-inside",
        home_probe.display(),
        p.dir.display()
    );
    assert_eq!(ok(run_sh(&p.dir, &[], &script)), "inside\n");
    assert!(
        !home_probe.exists(),
        "a write outside the project reached the host"
    );
    assert_eq!(
        std::fs::read_to_string(p.dir.join("made-inside")).expect("project file"),
        "project\n"
    );
    // The next sandbox starts from the host again.
    let again = run_sh(&p.dir, &[], &format!("test -e {}", home_probe.display()));
    assert_eq!(again.status.code(), Some(1));
}

#[test]
fn secrets_are_hidden_also_through_a_symlink_in_the_project() {
    let secret = canary_secret();
    let p = Project::new("secret");
    std::os::unix::fs::symlink(&secret, p.dir.join("key-link")).expect("symlink");
    let direct = run_sh(&p.dir, &[], &format!("cat {}", secret.display()));
    assert!(!direct.status.success());
    assert!(!stdout(&direct).contains("CANARY"));
    let via = run_sh(&p.dir, &[], "cat key-link");
    assert!(!via.status.success());
    assert!(!stdout(&via).contains("CANARY"));
    let listing = ok(run_sh(
        &p.dir,
        &[],
        &format!(
            "ls -A {}; echo end",
            secret.parent().expect("dir").display()
        ),
    ));
    assert_eq!(listing, "end\n", "~/.ssh is not empty inside");
    // A bind of the home directory elsewhere does not bring it back.
    let home = user().home.display().to_string();
    let alias = run_sh(
        &p.dir,
        &["--ro-bind", &format!("{home}:/mnt/home")],
        "cat /mnt/home/.ssh/id_ed25519",
    );
    assert!(!stdout(&alias).contains("CANARY"), "{}", stdout(&alias));
    // The host copy is untouched.
    assert!(std::fs::read_to_string(&secret)
        .expect("canary")
        .contains("CANARY"));
}

fn connect_script(port: u16) -> String {
    format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected")
}

#[test]
fn net_none_cannot_reach_host_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let p = Project::new("netnone");
    let none = output(sbox(
        &p.dir,
        &[
            "run",
            "--net",
            "none",
            "--",
            "bash",
            "-c",
            &connect_script(port),
        ],
    ));
    assert!(!none.status.success(), "connected from --net none");
    let links = ok(run_sh(&p.dir, &["--net", "none"], "ls /sys/class/net"));
    assert_eq!(links.trim(), "lo");
    let lo = ok(run_sh(
        &p.dir,
        &["--net", "none"],
        "cat /sys/class/net/lo/operstate /sys/class/net/lo/flags",
    ));
    assert!(
        lo.contains("0x9") || lo.contains("unknown"),
        "lo is not up: {lo}"
    );
    // Control: with the host network the same connection works.
    let host = output(sbox(
        &p.dir,
        &[
            "run",
            "--net",
            "host",
            "--",
            "bash",
            "-c",
            &connect_script(port),
        ],
    ));
    assert_eq!(stdout(&host), "connected\n", "{}", stderr(&host));
}

#[test]
fn exit_status_follows_docker() {
    let p = Project::new("exit");
    assert_eq!(run_sh(&p.dir, &[], "exit 7").status.code(), Some(7));
    assert_eq!(
        run_sh(&p.dir, &[], "kill -KILL $$").status.code(),
        Some(137)
    );
    assert_eq!(
        run_sh(&p.dir, &[], "kill -TERM $$").status.code(),
        Some(143)
    );
    let nf = output(sbox(&p.dir, &["run", "--", "no-such-command-xyz"]));
    assert_eq!(nf.status.code(), Some(127));
    assert!(stderr(&nf).contains("sbox: error: no-such-command-xyz: command not found"));
    let ne = output(sbox(&p.dir, &["run", "--", "/etc/hostname"]));
    assert_eq!(ne.status.code(), Some(126));
}

#[test]
fn pipes_pass_through() {
    let p = Project::new("pipe");
    let o = output_with_input(sbox(&p.dir, &["run", "--", "cat"]), b"hello through\n");
    assert_eq!(ok(o), "hello through\n");
}

#[test]
fn no_launcher_descriptor_leaks_into_the_command() {
    let p = Project::new("fds");
    // `ls` opens one descriptor of its own (3) to read the directory; a
    // shell pipeline would show its own pipes while it sets them up.
    let out = ok(output(sbox(
        &p.dir,
        &["run", "--", "ls", "-1", "/proc/self/fd"],
    )));
    assert_eq!(out, "0\n1\n2\n3\n");
}

#[test]
fn environment_is_an_allow_list() {
    let p = Project::new("env");
    let mut c = sbox(
        &p.dir,
        &["run", "--env", "A=1", "--keep-env", "KEEPME", "--", "env"],
    );
    c.env("SSH_AUTH_SOCK", "/tmp/agent.sock")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("KEEPME", "kept")
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/x");
    let out = ok(output(c));
    assert!(out.contains("A=1\n"), "{out}");
    assert!(out.contains("KEEPME=kept\n"), "{out}");
    assert!(!out.contains("SSH_AUTH_SOCK"), "{out}");
    assert!(!out.contains("AWS_SECRET"), "{out}");
    assert!(!out.contains("DBUS_SESSION"), "{out}");
    assert!(out.contains("PATH="), "{out}");
}

#[test]
fn read_only_binds_stay_read_only_after_a_remount_attempt() {
    let p = Project::new("robind");
    let data = Project::new("robind-data");
    data.write("f", "data\n");
    let spec = format!("{}:/data", data.dir.display());
    let out = run_sh(
        &p.dir,
        &["--ro-bind", &spec],
        "cat /data/f; mount -o remount,rw /data 2>/dev/null; mount -o remount,bind,rw /data 2>/dev/null; umount /data 2>/dev/null; echo x > /data/f && echo WROTE",
    );
    assert_eq!(stdout(&out), "data\n", "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(data.dir.join("f")).expect("f"),
        "data\n"
    );
    // A nested user namespace does not unlock it either.
    let nested = run_sh(
        &p.dir,
        &["--ro-bind", &spec],
        "unshare -Urm sh -c 'mount -o remount,bind,rw /data; umount /data; echo y > /data/f' 2>/dev/null; cat /data/f",
    );
    assert_eq!(stdout(&nested), "data\n");
    assert_eq!(
        std::fs::read_to_string(data.dir.join("f")).expect("f"),
        "data\n"
    );
    // A read-write bind is writable and reaches the host.
    let rw = Project::new("rwbind");
    let spec = format!("{}:/rw", rw.dir.display());
    ok(run_sh(&p.dir, &["--bind", &spec], "echo w > /rw/new"));
    assert_eq!(
        std::fs::read_to_string(rw.dir.join("new")).expect("new"),
        "w\n"
    );
}

#[test]
fn hostname_tmpfs_chdir_and_dev() {
    let p = Project::new("misc");
    let out = ok(run_sh(
        &p.dir,
        &[
            "--hostname",
            "box1",
            "--tmpfs",
            "/scratch",
            "--chdir",
            "/scratch",
        ],
        "hostname; pwd; touch x && ls; ls /dev | tr '\\n' ' '",
    ));
    let mut l = out.lines();
    assert_eq!(l.next(), Some("box1"));
    assert_eq!(l.next(), Some("/scratch"));
    assert_eq!(l.next(), Some("x"));
    let dev: Vec<&str> = l.next().unwrap_or("").split_whitespace().collect();
    for d in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm",
    ] {
        assert!(dev.contains(&d), "/dev lacks {d}: {dev:?}");
    }
    assert!(
        !dev.contains(&"sda") && !dev.contains(&"vda") && !dev.contains(&"kmsg"),
        "{dev:?}"
    );
}

#[test]
fn private_tmp() {
    let marker = format!("/tmp/sbox-host-marker-{}", std::process::id());
    let inside = format!("/tmp/sbox-inside-only-{}", std::process::id());
    std::fs::write(&marker, "host").expect("marker");
    let p = Project::new("tmp");
    let out = run_sh(
        &p.dir,
        &[],
        &format!("test -e {marker} && echo visible; echo in > {inside} && cat {inside}"),
    );
    assert_eq!(stdout(&out), "in\n", "{}", stderr(&out));
    assert!(!std::path::Path::new(&inside).exists());
    let _ = std::fs::remove_file(marker);
}

#[test]
fn term_to_the_launcher_ends_the_sandbox() {
    let p = Project::new("term");
    let tag = format!("1000{}.5", std::process::id());
    let mut child = spawn(sbox(&p.dir, &["run", "--", "sleep", &tag]));
    assert!(
        wait_for(20, || pids_with_cmdline(&format!("sleep {tag}"))
            .iter()
            .any(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            })),
        "the command did not start"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let st = child.wait().expect("wait");
    assert_eq!(st.code(), Some(143));
    assert!(
        pids_with_cmdline(&format!("sleep {tag}")).is_empty(),
        "processes left behind"
    );
}

#[test]
fn kill_of_the_launcher_takes_the_sandbox_down() {
    let p = Project::new("kill");
    let tag = format!("2000{}.5", std::process::id());
    let mut child = spawn(sbox(&p.dir, &["run", "--", "sleep", &tag]));
    assert!(wait_for(20, || pids_with_cmdline(&format!("sleep {tag}"))
        .len()
        >= 2));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let _ = child.wait();
    assert!(
        wait_for(10, || pids_with_cmdline(&format!("sleep {tag}")).is_empty()),
        "sandbox outlived its launcher"
    );
}

#[test]
fn bad_input_is_one_clear_line_and_leaves_nothing() {
    let p = Project::new("bad");
    let cases: &[(&[&str], i32, &str)] = &[
        (&["run", "--bogus-flag", "--", "true"], 2, "--bogus-flag"),
        (&["run"], 2, "required"),
        (
            &["run", "--bind", "/does/not/exist", "--", "true"],
            125,
            "/does/not/exist",
        ),
        (
            &["run", "--bind", "relative/path", "--", "true"],
            125,
            "not an absolute path",
        ),
        (&["run", "--bind", "", "--", "true"], 125, "empty path"),
        (
            &["run", "--tmpfs", "rel", "--", "true"],
            125,
            "not an absolute path",
        ),
        (
            &["run", "--profile", "no-such-profile", "--", "true"],
            125,
            "no-such-profile",
        ),
        (&["run", "--env", "NOVALUE", "--", "true"], 125, "KEY=VALUE"),
        (
            &["run", "--hostname", "bad host", "--", "true"],
            125,
            "invalid hostname",
        ),
        (&["run", "--net", "bogus", "--", "true"], 2, "bogus"),
    ];
    for (args, code, needle) in cases {
        let o = output(sbox(&p.dir, args));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(*code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        if *code == 125 {
            assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
            assert!(err.starts_with("sbox: error: "), "{err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(
        stale_state().is_empty(),
        "state left behind: {:?}",
        stale_state()
    );
}

#[test]
fn state_is_removed_after_a_run() {
    let p = Project::new("state");
    ok(run_sh(
        &p.dir,
        &[],
        "echo x > /tmp/y; touch ~/z; chown 1234 ~/z",
    ));
    assert!(
        stale_state().is_empty(),
        "state left behind: {:?}",
        stale_state()
    );
}

#[test]
fn help_is_complete() {
    let p = Project::new("help");
    let h = ok(output(sbox(&p.dir, &["--help"])));
    for s in ["run", "shell", "doctor", "profile"] {
        assert!(h.contains(s), "{h}");
    }
    let r = ok(output(sbox(&p.dir, &["run", "--help"])));
    for s in [
        "--profile",
        "--bind",
        "--ro-bind",
        "--tmpfs",
        "--chdir",
        "--env",
        "--keep-env",
        "--hostname",
        "--net",
        "--map-user",
        "--verbose",
    ] {
        assert!(r.contains(s), "run --help lacks {s}");
    }
}

#[test]
fn verbose_names_the_layers() {
    let p = Project::new("verbose");
    let o = run_sh(&p.dir, &["--verbose"], "true");
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    for s in ["layers in force", "user namespace", "newuidmap", "pivot"] {
        assert!(e.contains(s), "--verbose lacks {s}: {e}");
    }
}

/// A pty for `sbox shell`: (master, slave) with a window size set.
fn open_terminal(rows: u16, cols: u16) -> (std::fs::File, std::os::fd::OwnedFd) {
    let ws = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).expect("openpty");
    (std::fs::File::from(pty.master), pty.slave)
}

fn read_until(master: &mut std::fs::File, needle: &str, secs: u64) -> String {
    use std::os::fd::AsRawFd;
    let mut acc = String::new();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < end && !acc.contains(needle) {
        // SAFETY: (test) `master` stays open for this iteration.
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
fn shell_gets_a_terminal_with_size_job_control_and_ctrl_c() {
    let p = Project::new("shell");
    let (mut master, slave) = open_terminal(33, 101);
    let mut cmd = sbox(&p.dir, &["shell"]);
    cmd.env("SHELL", "/bin/bash");
    let s0 = slave.try_clone().expect("dup");
    let s1 = slave.try_clone().expect("dup");
    cmd.stdin(s0).stdout(s1).stderr(slave);
    // A new session so the pty is the launcher's controlling terminal.
    // SAFETY: (test) only setsid between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn shell");
    master
        .write_all(b"tty; stty size; echo $((6*7))-ok\n")
        .expect("write");
    let out = read_until(&mut master, "42-ok\r\n", 20);
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(out.contains("33 101"), "{out}");
    // Ctrl-C interrupts the foreground job, not the shell.
    master.write_all(b"sleep 30\n").expect("write");
    std::thread::sleep(std::time::Duration::from_millis(500));
    master.write_all(b"\x03").expect("ctrl-c");
    master.write_all(b"echo after-$((1+1))\n").expect("write");
    let out = read_until(&mut master, "after-2", 20);
    assert!(out.contains("after-2"), "{out}");
    master.write_all(b"exit 3\n").expect("exit");
    let st = child.wait().expect("wait");
    assert_eq!(st.code(), Some(3));
    let _ = Command::new("true").status();
}

/// A run leaves its state directory for the next launch (fewer directories
/// made and removed per run): as it was when it wrote nothing, emptied when
/// it wrote files (an image root's mount points, say); one that changed the
/// root directory's own attributes does not pass it on.
#[test]
fn spare_state_directories_carry_nothing_between_runs() {
    let p = Project::new("spares");
    let spares = || {
        state_entries()
            .into_iter()
            .filter(|n| n.to_string_lossy().starts_with("spare-"))
            .count()
    };
    ok(output(sbox(&p.dir, &["run", "--", "true"])));
    assert!(spares() >= 1, "{:?}", state_entries());
    let n = spares();
    ok(run_sh(
        &p.dir,
        &[],
        "mkdir -p /etc/sbox-spare/d; echo y > /etc/sbox-spare/d/f",
    ));
    assert_eq!(spares(), n, "{:?}", state_entries());
    let o = output(sbox(&p.dir, &["run", "--", "ls", "/etc/sbox-spare"]));
    assert_ne!(
        o.status.code(),
        Some(0),
        "a directory made by an earlier run is visible"
    );
    let before = stat_root(&p);
    ok(run_sh(
        &p.dir,
        &[],
        "chmod 0700 /; echo x > /etc/sbox-spare-test; setfattr -n user.t -v 1 / 2>/dev/null; true",
    ));
    for _ in 0..6 {
        ok(output(sbox(&p.dir, &["run", "--", "true"])));
    }
    assert!(spares() <= 5, "{:?}", state_entries());
    assert_eq!(stat_root(&p), before);
    let o = output(sbox(&p.dir, &["run", "--", "cat", "/etc/sbox-spare-test"]));
    assert_ne!(
        o.status.code(),
        Some(0),
        "a file written by an earlier run is visible"
    );
    assert!(stale_state().is_empty(), "{:?}", stale_state());
}

fn stat_root(p: &Project) -> String {
    ok(output(sbox(
        &p.dir,
        &["run", "--", "stat", "-c", "%a %u", "/"],
    )))
}

/// The read-ahead lists in the runtime directory that name `needle`.
fn read_ahead_lists(needle: &str) -> Vec<std::path::PathBuf> {
    state_entries()
        .into_iter()
        .filter(|n| n.to_string_lossy().starts_with("prefetch-"))
        .map(|n| state_base().join(n))
        .filter(|p| {
            std::fs::read_to_string(p).is_ok_and(|t| t.lines().any(|l| l.ends_with(needle)))
        })
        .collect()
}

/// What a command read through the FUSE root is read ahead at its next
/// launch: the server notes the files, the launcher keeps the list in its
/// private runtime directory, init reads them ahead once the root is
/// mounted. A list naming a FIFO, a missing file or a path that leads out
/// through a symlink costs nothing and blocks nothing.
#[test]
fn files_a_command_read_are_read_ahead_at_its_next_launch() {
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new("readahead");
    // A command no other test runs, so that its list is this test's.
    let o = output(sbox(&p.dir, &["run", "--", "cksum", "/etc/hostname"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let lists = read_ahead_lists("/cksum");
    assert_eq!(lists.len(), 1, "{:?}", state_entries());
    let list = &lists[0];
    let text = std::fs::read_to_string(list).expect("read list");
    assert!(text.lines().any(|l| l.contains("libc.so")), "{text}");
    assert!(text.lines().any(|l| l == "/etc/hostname"), "{text}");
    let md = std::fs::symlink_metadata(list).expect("stat list");
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    let o = output(sbox(&p.dir, &["run", "-v", "--", "cksum", "/etc/hostname"]));
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(
        e.lines()
            .any(|l| l.contains("reading ahead") && !l.contains("reading ahead 0 ")),
        "{e}"
    );

    // A hostile list: a FIFO in the project, a link out of the root, a
    // missing file; the command's own files still come last.
    let fifo = p.dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
    chown(&fifo);
    std::os::unix::fs::symlink("/../../etc/passwd", p.dir.join("out")).expect("symlink");
    let hostile = format!(
        "{}\n{}\n/nonexistent/x\n{text}",
        fifo.display(),
        p.dir.join("out").display()
    );
    std::fs::write(list, hostile).expect("write list");
    chown(list);
    let mut child = spawn(sbox(&p.dir, &["run", "-v", "--", "cksum", "/etc/hostname"]));
    let ended = wait_for(30, || child.try_wait().ok().flatten().is_some());
    if !ended {
        let _ = child.kill();
    }
    let o = child.wait_with_output().expect("wait");
    assert!(ended, "a FIFO in the list blocked the launch");
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    // The FIFO and the missing file are skipped; the link resolves inside
    // the new root (its /etc/passwd, a regular file).
    let asked: usize = e
        .lines()
        .find_map(|l| {
            l.split("reading ahead ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
        })
        .expect("a read-ahead line");
    let own = text.lines().count();
    assert!(asked == own || asked == own + 1, "{asked} of {own}+3: {e}");
    // The run wrote the list again: what the command read, not what init
    // read ahead for it.
    let again = std::fs::read_to_string(list).expect("read list");
    assert!(!again.contains("passwd"), "{again}");
    assert!(again.lines().any(|l| l.ends_with("/cksum")), "{again}");
}
