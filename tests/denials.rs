//! What the sandbox refused: counted per attempt, summed up in one line at
//! exit, and named with what would allow it under --log-denials.

mod common;
use common::*;

/// Writes outside the project 3 times (Landlock), reads a hidden path twice
/// and makes another once (the FUSE root: a creation is one refusal, not
/// its lookup and its mkdir), connects out once without a network, calls
/// keyctl once (seccomp).
const BUILD: &str = r#"
for i in 1 2 3; do (echo x > "$HOME/out") 2>/dev/null; done
cat "$SECRET" 2>/dev/null; cat "$SECRET" 2>/dev/null
mkdir "$HOME/.aws" 2>/dev/null
PYTHONDONTWRITEBYTECODE=1 python3 probe.py
true
"#;

const PROBE: &str = r#"
import ctypes, errno, platform, socket
libc = ctypes.CDLL(None, use_errno=True)
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    s.connect(("192.0.2.1", 80))
    print("connect=ok")
except OSError as e:
    print("connect=" + errno.errorcode.get(e.errno, str(e.errno)))
r = libc.syscall(250 if platform.machine() == "x86_64" else 219, 0, 0, 0, 0, 0)
print("keyctl=" + ("ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")))
"#;

fn build_run(p: &Project, extra: &[&str]) -> std::process::Output {
    let secret = canary_secret();
    p.write("probe.py", PROBE);
    let mut args = vec!["run", "--profile", "build"];
    args.extend_from_slice(extra);
    let script = format!("SECRET={}; {BUILD}", secret.display());
    args.extend_from_slice(&["--", "sh", "-c", &script]);
    output(sbox(&p.dir, &args))
}

fn summary_lines(err: &str) -> Vec<&str> {
    err.lines()
        .filter(|l| l.contains("operation") && l.contains("refused"))
        .collect()
}

#[test]
fn without_the_flag_one_line_counts_hidden_paths_and_seccomp_refusals() {
    let p = Project::new("denials-quiet");
    let o = build_run(&p, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "connect=ENETUNREACH\nkeyctl=EPERM\n");
    let err = stderr(&o);
    // Hidden paths ×3 (each attempt, not once) + keyctl ×1; Landlock and
    // the network are observed only with --log-denials.
    assert_eq!(
        summary_lines(&err),
        ["sbox: 4 operations were refused; run with --log-denials to see them"],
        "{err}"
    );
    assert!(!err.contains("denied"), "{err}");
    // Nothing refused, nothing said (writes where the rules allow them are
    // observed under --log-denials and not counted).
    for extra in [&[][..], &["--log-denials"][..]] {
        let mut args = vec!["run", "--profile", "build"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            "--",
            "sh",
            "-c",
            "echo x > out; mkdir -p d/e; mv out d/; rm -r d; echo y > /tmp/t; true",
        ]);
        let o = output(sbox(&p.dir, &args));
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stderr(&o), "", "{extra:?}");
    }
}

#[test]
fn log_denials_names_each_refusal_with_what_would_allow_it() {
    let p = Project::new("denials-log");
    let o = build_run(&p, &["--log-denials"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "connect=ENETUNREACH\nkeyctl=EPERM\n");
    let err = stderr(&o);
    let home = user().home.display().to_string();
    for want in [
        format!("sbox: denied: write to {home}/out (3 times) by Landlock; to allow: add it or a directory above it to landlock.write"),
        format!("sbox: denied: hidden path {home}/.ssh (2 times); to allow: leave it out of filesystem.hidden"),
        format!("sbox: denied: hidden path {home}/.aws (1 time); to allow: leave it out of filesystem.hidden"),
        "sbox: denied: connect to 192.0.2.1:80 (1 time): the sandbox has no network; to allow: --net user or --net host (network.mode)".to_string(),
        "sbox: 1 call denied by seccomp: keyctl ×1; to allow: seccomp.allow = [\"keyctl\"]".to_string(),
        "sbox: 8 operations were refused in all".to_string(),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
    assert_eq!(summary_lines(&err).len(), 1, "{err}");
    // Nothing else was reported: no write the rules allow, no other path.
    let denied: Vec<&str> = err.lines().filter(|l| l.contains("denied: ")).collect();
    assert_eq!(denied.len(), 5, "{err}");
}

#[test]
fn log_denials_names_ports_outside_allowed_connect_and_bind_ports() {
    let p = Project::new("denials-port");
    let prof = p.write(
        "ports.toml",
        "include = [\"build\"]\n[network]\nallowed_connect_ports = [443]\nallowed_bind_ports = [8443]\n",
    );
    p.write(
        "c.py",
        "import socket\nfor port in (80, 80, 443):\n    s = socket.socket()\n    try:\n        s.connect(('127.0.0.1', port))\n    except OSError as e:\n        print(port, e.errno)\ns = socket.socket()\ntry:\n    s.bind(('127.0.0.1', 8080))\nexcept OSError as e:\n    print('bind', e.errno)\n",
    );
    let o = output(sbox(
        &p.dir,
        &[
            "run",
            "--profile",
            &prof.to_string_lossy(),
            "--log-denials",
            "--",
            "python3",
            "c.py",
        ],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    // Landlock refuses 80 (EACCES); 443 is allowed, nobody listens.
    assert_eq!(
        stdout(&o),
        format!(
            "80 {}\n80 {}\n443 {}\nbind {}\n",
            libc::EACCES,
            libc::EACCES,
            libc::ECONNREFUSED,
            libc::EACCES
        )
    );
    let err = stderr(&o);
    assert!(
        err.contains("sbox: denied: connect to 127.0.0.1:80 (2 times) by Landlock; to allow: add its port to network.allowed_connect_ports"),
        "{err}"
    );
    assert!(
        err.contains("sbox: denied: bind to 127.0.0.1:8080 (1 time) by Landlock; to allow: add its port to network.allowed_bind_ports"),
        "{err}"
    );
    assert!(
        err.contains("sbox: 3 operations were refused in all"),
        "{err}"
    );
    assert!(!err.contains("443"), "{err}");
}
