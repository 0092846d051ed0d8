//! Profiles, Landlock and seccomp through the real binary as an
//! unprivileged user: what an untrusted build may not do, that ordinary
//! builds still work, and that bad profiles are refused.

mod common;
use common::*;
use std::io::Write;
use std::net::TcpListener;

/// A python3 script that tries the calls a sandbox must refuse and prints
/// `name=ERRNO` for each (`name=ok` when the call succeeded).
const PROBE: &str = r#"
import ctypes, errno, os, platform, sys
libc = ctypes.CDLL(None, use_errno=True)
x86 = platform.machine() == "x86_64"
NR = {
    "keyctl": 250 if x86 else 219,
    "add_key": 248 if x86 else 217,
    "bpf": 321 if x86 else 280,
    "perf_event_open": 298 if x86 else 241,
    "userfaultfd": 323 if x86 else 282,
    "open_by_handle_at": 304 if x86 else 265,
    "ptrace": 101 if x86 else 117,
    "kexec_load": 246 if x86 else 104,
    "init_module": 175 if x86 else 105,
}
args = {
    "keyctl": (0, 0, 0, 0, 0),
    "add_key": (0, 0, 0, 0, 0),
    "bpf": (0, 0, 0),
    "perf_event_open": (0, 0, -1, -1, 0),
    "userfaultfd": (0,),
    "open_by_handle_at": (0, 0, 0),
    "ptrace": (16, 1, 0, 0),
    "kexec_load": (0, 0, 0, 0),
    "init_module": (0, 0, 0),
}
for name in sys.argv[1:]:
    r = libc.syscall(NR[name], *args[name])
    e = ctypes.get_errno()
    print(f"{name}={'ok' if r >= 0 else errno.errorcode.get(e, e)}")
"#;

fn probe_calls(p: &Project, profile: &str, calls: &[&str]) -> String {
    let script = p.write("probe.py", PROBE);
    let mut args = vec!["run", "--profile", profile, "--", "python3"];
    let s = script.to_string_lossy().into_owned();
    args.push(&s);
    args.extend_from_slice(calls);
    ok(output(sbox(&p.dir, &args)))
}

#[test]
fn build_profile_denies_kernel_attack_surface_with_eperm() {
    let p = Project::new("seccomp");
    let calls = [
        "keyctl",
        "add_key",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "open_by_handle_at",
        "ptrace",
        "kexec_load",
        "init_module",
    ];
    let out = probe_calls(&p, "build", &calls);
    for c in calls {
        assert!(
            out.contains(&format!("{c}=EPERM")),
            "{c} not denied with EPERM: {out}"
        );
    }
}

#[test]
fn seccomp_is_what_denies_them() {
    // Control: with the filter off keyctl reaches the
    // kernel (which answers on its own terms, not EPERM from the filter).
    let p = Project::new("seccomp-off");
    let prof = p.write(
        "nofilter.toml",
        "include = [\"dev\"]\n[seccomp]\nenabled = false\n",
    );
    let script = p.write("probe.py", PROBE);
    let out = ok(output(sbox(
        &p.dir,
        &[
            "run",
            "--profile",
            &prof.to_string_lossy(),
            "--",
            "python3",
            &script.to_string_lossy(),
            "keyctl",
        ],
    )));
    assert!(
        out.starts_with("keyctl=") && !out.contains("keyctl=EPERM"),
        "{out}"
    );
}

#[test]
fn build_profile_cannot_write_home_or_mount() {
    let p = Project::new("landlock");
    let bashrc = user().home.join(".bashrc");
    let before = std::fs::read(&bashrc).ok();
    let o = run_sh(
        &p.dir,
        &["--profile", "build"],
        "echo evil >> ~/.bashrc; echo rc=$?; mount -t tmpfs none /mnt 2>/dev/null; echo mount=$?; echo ok > built.txt; cat built.txt",
    );
    let out = stdout(&o);
    assert!(out.contains("rc=1") || out.contains("rc=2"), "{out}");
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
    assert!(out.contains("mount=32") || out.contains("mount=1"), "{out}");
    assert!(out.ends_with("ok\n"), "{out}");
    assert_eq!(
        std::fs::read(&bashrc).ok(),
        before,
        "~/.bashrc changed on the host"
    );
    assert_eq!(
        std::fs::read_to_string(p.dir.join("built.txt")).expect("built"),
        "ok\n"
    );
}

#[test]
fn build_profile_reaches_no_host_service() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let p = Project::new("nohost");
    let o = output(sbox(
        &p.dir,
        &[
            "run",
            "--profile",
            "build",
            "--",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected"),
        ],
    ));
    assert!(!stdout(&o).contains("connected"));
}

/// A host process listening on an abstract unix socket.
fn abstract_listener(name: &str) -> std::os::unix::net::UnixListener {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
    std::os::unix::net::UnixListener::bind_addr(&addr).expect("bind abstract")
}

#[test]
fn abstract_unix_sockets_of_the_host_are_out_of_reach() {
    let name = format!("sbox-test-{}", std::process::id());
    let _l = abstract_listener(&name);
    let p = Project::new("abstract");
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_UNIX)\ntry:\n    s.connect('\\0{name}')\n    print('connected')\nexcept OSError as e:\n    print('refused', e.errno)\n"
    );
    // Host network (same abstract namespace): Landlock scoping refuses.
    let o = ok(output(sbox(
        &p.dir,
        &[
            "run",
            "--profile",
            "build",
            "--net",
            "host",
            "--",
            "python3",
            "-c",
            &script,
        ],
    )));
    assert_eq!(o.trim(), "refused 1", "{o}");
    // Control: without scoping the same connection works, so the check can fail.
    let prof = p.write(
        "noscope.toml",
        "include = [\"build\"]\n[landlock]\nscope_abstract_unix = false\n",
    );
    let o = ok(output(sbox(
        &p.dir,
        &[
            "run",
            "--profile",
            &prof.to_string_lossy(),
            "--net",
            "host",
            "--",
            "python3",
            "-c",
            &script,
        ],
    )));
    assert_eq!(o.trim(), "connected", "{o}");
}

#[test]
fn host_processes_cannot_be_signalled() {
    let mut victim = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("sleep");
    let p = Project::new("signal");
    let o = run_sh(
        &p.dir,
        &["--profile", "build"],
        &format!("kill -TERM {} 2>/dev/null; echo rc=$?", victim.id()),
    );
    assert!(stdout(&o).contains("rc=1"), "{}", stdout(&o));
    assert!(
        victim.try_wait().expect("wait").is_none(),
        "the host process was killed"
    );
    let _ = victim.kill();
    let _ = victim.wait();
}

#[test]
fn tiocsti_cannot_inject_into_the_terminal() {
    let p = Project::new("tiocsti");
    let pty = nix::pty::openpty(None, None).expect("pty");
    let script = "import fcntl, termios, sys\ntry:\n    fcntl.ioctl(0, termios.TIOCSTI, b'x')\n    print('injected')\nexcept OSError as e:\n    print('refused', e.errno)\n";
    for extra in [&[][..], &["-t"][..]] {
        let mut args = vec!["run", "--profile", "build"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "python3", "-c", script]);
        let mut c = sbox(&p.dir, &args);
        let slave = pty.slave.try_clone().expect("dup");
        c.stdin(slave)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let o = c.output().expect("run");
        let out = stdout(&o);
        assert!(out.contains("refused 1"), "{extra:?}: {out} {}", stderr(&o));
    }
}

#[test]
fn ordinary_builds_work_under_every_profile() {
    for profile in ["dev", "build", "strict", "net"] {
        let p = Project::new(&format!("cc-{profile}"));
        p.write(
            "hello.c",
            "#include <stdio.h>\nint main(void){puts(\"hello from c\");return 0;}\n",
        );
        let outdir = if profile == "strict" { "out" } else { "." };
        let script = format!(
            "set -e; cc -o {outdir}/hello hello.c && {outdir}/hello; python3 -c 'print(6*7)'; \
             if [ {profile} != strict ]; then git init -q . && git add hello.c && \
             git -c user.email=t@e -c user.name=t commit -qm init && git log --oneline | wc -l; else echo 1; fi"
        );
        let out = ok(run_sh(&p.dir, &["--profile", profile], &script));
        assert_eq!(out, "hello from c\n42\n1\n", "{profile}");
    }
}

#[test]
fn strict_profile_keeps_the_project_read_only() {
    let p = Project::new("strict");
    p.write("src.txt", "original\n");
    let out = ok(run_sh(
        &p.dir,
        &["--profile", "strict"],
        "echo x > src.txt 2>/dev/null; echo rc=$?; echo report > out/report.txt && cat out/report.txt",
    ));
    assert!(out.contains("rc=2") || out.contains("rc=1"), "{out}");
    assert_eq!(
        std::fs::read_to_string(p.dir.join("src.txt")).expect("src"),
        "original\n"
    );
    assert_eq!(
        std::fs::read_to_string(p.dir.join("out/report.txt")).expect("report"),
        "report\n"
    );
}

#[test]
fn landlock_tcp_ports_are_enforced() {
    let allowed = TcpListener::bind("127.0.0.1:0").expect("listen");
    let denied = TcpListener::bind("127.0.0.1:0").expect("listen");
    let (pa, pd) = (
        allowed.local_addr().expect("a").port(),
        denied.local_addr().expect("d").port(),
    );
    let p = Project::new("ports");
    let prof = p.write(
        "ports.toml",
        &format!(
            "include = [\"dev\"]\n[network]\nmode = \"host\"\nallowed_connect_ports = [{pa}]\n"
        ),
    );
    let script = format!(
        "import socket\nfor port in ({pa}, {pd}):\n    s = socket.socket()\n    try:\n        s.connect(('127.0.0.1', port)); print(port, 'ok')\n    except OSError as e:\n        print(port, 'errno', e.errno)\n"
    );
    let out = ok(output(sbox(
        &p.dir,
        &[
            "run",
            "--profile",
            &prof.to_string_lossy(),
            "--",
            "python3",
            "-c",
            &script,
        ],
    )));
    assert!(out.contains(&format!("{pa} ok")), "{out}");
    assert!(out.contains(&format!("{pd} errno 13")), "{out}");
}

#[test]
fn a_kernel_without_the_required_landlock_feature_is_refused() {
    let p = Project::new("oldkernel");
    let mut c = sbox(&p.dir, &["run", "--profile", "build", "--", "true"]);
    c.env("SBOX_TEST_LANDLOCK_MAX_ABI", "3");
    let o = output(c);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("needs ABI 6") && e.contains("ABI 3"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    // dev is best effort: it starts, and --verbose says what is missing.
    let mut c = sbox(&p.dir, &["run", "--verbose", "--", "true"]);
    c.env("SBOX_TEST_LANDLOCK_MAX_ABI", "3");
    let o = output(c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("not available"), "{}", stderr(&o));
}

#[test]
fn bad_profiles_are_refused_with_clear_errors() {
    let p = Project::new("badprof");
    p.write("a.toml", "include = [\"./b.toml\"]\n");
    p.write("b.toml", "include = [\"./a.toml\"]\n");
    p.write("unknown.toml", "[filesystem]\nbogus = 1\n");
    p.write("type.toml", "[process]\nhostname = 5\n");
    p.write("missing.toml", "include = [\"no-such-base\"]\n");
    p.write(
        "chain1.toml",
        "include = [\"./chain2.toml\"]\n[process]\nhostname = \"chained\"\n",
    );
    p.write("chain2.toml", "include = [\"build\"]\n");
    let cases = [
        ("./a.toml", "include cycle"),
        ("./unknown.toml", "bogus"),
        ("./type.toml", "line 2"),
        ("./missing.toml", "no-such-base"),
    ];
    for (prof, needle) in cases {
        let o = output(sbox(
            &p.dir,
            &["run", "--profile", prof, "--", "touch", "started"],
        ));
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(125), "{prof}: {e}");
        assert!(e.contains(needle), "{prof}: {e}");
        assert_eq!(e.lines().count(), 1, "{prof}: {e}");
        assert!(!p.dir.join("started").exists(), "{prof}: the command ran");
    }
    let out = ok(run_sh(&p.dir, &["--profile", "./chain1.toml"], "hostname"));
    assert_eq!(out, "chained\n");
    let check = output(sbox(&p.dir, &["profile", "check", "./unknown.toml"]));
    assert_eq!(check.status.code(), Some(125));
    let show = ok(output(sbox(&p.dir, &["profile", "show", "./chain1.toml"])));
    assert!(show.contains("hostname = \"chained\""), "{show}");
    assert!(
        show.contains("process.hostname:") && show.contains("chain1.toml"),
        "{show}"
    );
}

#[test]
fn project_profiles_need_trust_and_cannot_widen_silently() {
    let secret = canary_secret();
    let p = Project::new("trust");
    let home = user().home.display().to_string();
    p.write(
        ".sbox.toml",
        &format!("[filesystem]\nro_bind = [\"{home}/.ssh:/keys\"]\n"),
    );
    let o = output(sbox(
        &p.dir,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "cat /keys/id_ed25519; touch started",
        ],
    ));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("not trusted"), "{}", stderr(&o));
    assert!(!p.dir.join("started").exists());
    // --show says what it asks for, without trusting it.
    let show = ok(output(sbox(&p.dir, &["trust", "--show"])));
    assert!(
        show.contains("not trusted") && show.contains(".ssh"),
        "{show}"
    );
    // Trusting without confirming the widening fails (no terminal here).
    let t = output(sbox(&p.dir, &["trust"]));
    assert_eq!(t.status.code(), Some(125), "{}", stderr(&t));
    let o = output(sbox(&p.dir, &["run", "--", "true"]));
    assert_eq!(o.status.code(), Some(125));
    // A narrowing file is trusted without questions and used.
    p.write(
        ".sbox.toml",
        "[network]\nmode = \"none\"\n[process]\nhostname = \"projbox\"\n",
    );
    ok(output(sbox(&p.dir, &["trust"])));
    assert_eq!(ok(run_sh(&p.dir, &[], "hostname")), "projbox\n");
    // Changing the file revokes the trust.
    p.write(".sbox.toml", "[process]\nhostname = \"changed\"\n");
    let o = output(sbox(&p.dir, &["run", "--", "hostname"]));
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("changed since it was trusted"),
        "{}",
        stderr(&o)
    );
    // --profile bypasses the project file.
    assert_eq!(
        ok(run_sh(&p.dir, &["--profile", "dev"], "hostname")),
        "sbox\n"
    );
    ok(output(sbox(&p.dir, &["trust", "--revoke"])));
    assert!(std::fs::read_to_string(&secret)
        .expect("canary")
        .contains("CANARY"));
    let _ = std::io::stdout().flush();
}

#[test]
fn log_denials_names_each_denied_call_and_sums_up() {
    let p = Project::new("logdenials");
    let script = p.write("probe.py", PROBE);
    let s = script.to_string_lossy().into_owned();
    let o = output(sbox(
        &p.dir,
        &[
            "run",
            "--profile",
            "build",
            "--log-denials",
            "--",
            "python3",
            &s,
            "keyctl",
            "bpf",
            "keyctl",
        ],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "keyctl=EPERM\nbpf=EPERM\nkeyctl=EPERM\n");
    let e = stderr(&o);
    assert!(e.contains("sbox: denied: keyctl by python3"), "{e}");
    assert!(e.contains("sbox: denied: bpf by python3"), "{e}");
    assert!(
        e.contains("sbox: 3 calls denied by seccomp: bpf ×1, keyctl ×2"),
        "{e}"
    );
    // Without the flag: the same EPERM, nothing said.
    let quiet = output(sbox(
        &p.dir,
        &["run", "--profile", "build", "--", "python3", &s, "keyctl"],
    ));
    assert_eq!(stdout(&quiet), "keyctl=EPERM\n");
    assert!(!stderr(&quiet).contains("denied"), "{}", stderr(&quiet));
}

#[test]
fn log_denials_names_hidden_paths_the_command_asked_for() {
    let secret = canary_secret();
    let p = Project::new("loghidden");
    let o = run_sh(
        &p.dir,
        &["--log-denials"],
        &format!(
            "cat {} 2>/dev/null; ls ~ >/dev/null; true",
            secret.display()
        ),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = secret.parent().expect("dir").display().to_string();
    assert!(
        stderr(&o).contains(&format!("sbox: denied: hidden path {dir} (1 time)")),
        "{}",
        stderr(&o)
    );
    // Listing the home directory is no denial; nothing is said without the flag.
    let quiet = run_sh(
        &p.dir,
        &[],
        &format!("cat {} 2>/dev/null; true", secret.display()),
    );
    assert!(
        !stderr(&quiet).contains("hidden path"),
        "{}",
        stderr(&quiet)
    );
}

#[test]
fn the_command_gets_its_own_session_unless_the_profile_says_otherwise() {
    let p = Project::new("session");
    // Field 6 of /proc/self/stat is the session id (0: a session outside
    // the sandbox's pid namespace, i.e. the caller's).
    let script = "set -- $(cat /proc/$$/stat); echo $6";
    let own = ok(run_sh(&p.dir, &[], script));
    assert_ne!(own.trim(), "0", "no session of its own: {own}");
    let prof = p.write(
        "keep.toml",
        "include = [\"dev\"]\n[process]\nnew_session = false\n",
    );
    let kept = ok(run_sh(
        &p.dir,
        &["--profile", &prof.to_string_lossy()],
        script,
    ));
    assert_eq!(kept.trim(), "0", "{kept}");
    // A terminal always comes with a new session.
    let t = ok(run_sh(
        &p.dir,
        &["--profile", &prof.to_string_lossy(), "-t"],
        script,
    ));
    assert_ne!(t.trim(), "0", "{t}");
}
