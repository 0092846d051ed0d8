//! Installs real Landlock rulesets in forked children.

mod forkchild;

use std::ffi::CString;
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use forkchild::{errno_if_failed, run_in_child, TempDir};
use sbox::confine::landlock::{install_landlock, probe_abi, LandlockSpec, TEST_MAX_ABI_ENV};
use sbox::confine::ConfineError;

fn system_spec(writable: &Path) -> LandlockSpec {
    LandlockSpec {
        read_exec: vec!["/usr".into(), "/lib".into(), "/bin".into()],
        read: vec!["/etc".into(), "/nonexistent-sbox-path".into()],
        write: vec![writable.to_path_buf()],
        min_abi: 1,
        ..LandlockSpec::default()
    }
}

fn open_errno(path: &Path, flags: i32) -> i64 {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: c is a valid NUL-terminated path; mode is used only with O_CREAT.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    let e = errno_if_failed(i64::from(fd));
    if fd >= 0 {
        // SAFETY: fd was just opened by us.
        unsafe { libc::close(fd) };
    }
    e
}

#[test]
fn landlock_abi_is_available_here() {
    assert!(
        probe_abi().unwrap_or(0) >= 1,
        "this host should offer Landlock"
    );
}

#[test]
fn fs_rules_deny_outside_and_allow_temp() {
    let inside = TempDir::new("ll-in");
    let outside = TempDir::new("ll-out");
    let secret = outside.0.join("secret");
    std::fs::write(&secret, "s").unwrap();
    let single_file = outside.0.join("allowed");
    std::fs::write(&single_file, "a").unwrap();
    let mut spec = system_spec(&inside.0);
    spec.read.push(single_file.clone()); // a file rule gets file rights only
    let new_file: PathBuf = inside.0.join("new");
    let out = run_in_child(|r| {
        let report = install_landlock(&spec).expect("install");
        r.send(i64::from(report.abi));
        r.send(report.skipped_paths.len() as i64);
        r.send(open_errno(&secret, libc::O_RDONLY));
        r.send(open_errno(
            &outside.0.join("created"),
            libc::O_WRONLY | libc::O_CREAT,
        ));
        r.send(open_errno(Path::new("/etc/passwd"), libc::O_RDONLY));
        r.send(open_errno(Path::new("/etc/passwd"), libc::O_WRONLY));
        r.send(open_errno(&new_file, libc::O_WRONLY | libc::O_CREAT));
        r.send(open_errno(&single_file, libc::O_RDONLY));
        r.send(open_errno(&single_file, libc::O_WRONLY));
        std::mem::forget(outside);
    });
    assert!(out.exited_ok(), "{out:?}");
    let v = &out.values;
    assert!(v[0] >= 1);
    assert_eq!(v[1], 1, "the missing path is skipped, not an error");
    assert_eq!(v[2], i64::from(libc::EACCES), "read outside");
    assert_eq!(v[3], i64::from(libc::EACCES), "create outside");
    assert_eq!(v[4], 0, "read /etc");
    assert_eq!(v[5], i64::from(libc::EACCES), "write /etc");
    assert_eq!(v[6], 0, "create inside the writable dir");
    assert_eq!(v[7], 0, "read a single allowed file");
    assert_eq!(v[8], i64::from(libc::EACCES), "write a read-only file rule");
    assert!(new_file.exists());
}

fn connect_errno(port: u16) -> i64 {
    match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Ok(_) => 0,
        Err(e) => i64::from(e.raw_os_error().unwrap_or(-1)),
    }
}

#[test]
fn tcp_connect_only_to_listed_ports() {
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let (pa, po) = (
        allowed.local_addr().unwrap().port(),
        other.local_addr().unwrap().port(),
    );
    let spec = LandlockSpec {
        connect_tcp: Some(vec![pa]),
        bind_tcp: Some(vec![]),
        ..LandlockSpec::default()
    };
    let out = run_in_child(|r| {
        let report = install_landlock(&spec).expect("install");
        r.send(i64::from(
            report
                .enforced
                .iter()
                .any(|l| l == &format!("tcp connect: {pa}")),
        ));
        r.send(connect_errno(pa));
        r.send(connect_errno(po));
        r.send(match TcpListener::bind("127.0.0.1:0") {
            Ok(_) => 0,
            Err(e) => i64::from(e.raw_os_error().unwrap_or(-1)),
        });
    });
    assert!(out.exited_ok(), "{out:?}");
    assert_eq!(
        out.values,
        vec![1, 0, i64::from(libc::EACCES), i64::from(libc::EACCES)]
    );
}

#[test]
fn signal_scope_blocks_signalling_outside() {
    let spec = LandlockSpec {
        scope_signals: true,
        scope_abstract_unix: true,
        write: vec!["/".into()],
        ..LandlockSpec::default()
    };
    let out = run_in_child(|r| {
        let report = install_landlock(&spec).expect("install");
        r.send(i64::from(
            report
                .enforced
                .contains(&"scope: signals, abstract-unix".to_string()),
        ));
        // SAFETY: signal 0 only checks permission.
        r.send(errno_if_failed(i64::from(unsafe {
            libc::kill(libc::getppid(), 0)
        })));
        // SAFETY: signalling ourselves is always inside our own domain.
        r.send(errno_if_failed(i64::from(unsafe {
            libc::kill(libc::getpid(), 0)
        })));
    });
    assert!(out.exited_ok(), "{out:?}");
    assert_eq!(out.values, vec![1, i64::from(libc::EPERM), 0]);
}

#[test]
fn simulated_old_kernel_fails_closed_or_degrades() {
    let strict = LandlockSpec {
        connect_tcp: Some(vec![443]),
        ..LandlockSpec::default()
    };
    let out = run_in_child(|r| {
        std::env::set_var(TEST_MAX_ABI_ENV, "3");
        r.send(i64::from(probe_abi().unwrap_or(0)));
        match install_landlock(&strict) {
            Err(ConfineError::LandlockFeatureMissing {
                needed: 4,
                kernel: 3,
                ..
            }) => r.send(1),
            other => {
                eprintln!("unexpected: {other:?}");
                r.send(0)
            }
        }
        let lenient = LandlockSpec {
            best_effort: true,
            write: vec!["/".into()],
            ..strict.clone()
        };
        let report = install_landlock(&lenient).expect("best effort");
        r.send(i64::from(
            report.missing.iter().any(|m| m.contains("TCP connect")),
        ));
        r.send(connect_errno(1)); // not restricted: ECONNREFUSED, not EACCES
        std::env::set_var(TEST_MAX_ABI_ENV, "0");
        r.send(i64::from(matches!(
            install_landlock(&LandlockSpec::default()),
            Err(ConfineError::LandlockUnavailable { .. })
        )));
    });
    assert!(out.exited_ok(), "{out:?}");
    assert_eq!(out.values, vec![3, 1, 1, i64::from(libc::ECONNREFUSED), 1]);
}

/// TCGETS on a pty master: 0 or errno.
fn tcgets_errno(fd: i32) -> i64 {
    // SAFETY: termios is plain data; tcgetattr writes only into it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is an open pty fd and t is a valid termios.
    errno_if_failed(i64::from(unsafe { libc::tcgetattr(fd, &mut t) }))
}

fn open_ptmx() -> i32 {
    // SAFETY: the path is a static NUL-terminated string.
    unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    }
}

#[test]
fn device_ioctls_need_devices_ioctl_but_old_ttys_keep_working() {
    assert!(
        probe_abi().unwrap_or(0) >= 5,
        "this test needs Landlock ABI 5 (device ioctls); the CI kernel has ABI 7"
    );
    for allow in [false, true] {
        let spec = LandlockSpec {
            write: vec!["/dev".into()],
            devices_ioctl: allow,
            ..LandlockSpec::default()
        };
        let out = run_in_child(|r| {
            let before = open_ptmx();
            install_landlock(&spec).expect("install");
            r.send(tcgets_errno(before));
            let after = open_ptmx();
            r.send(i64::from(after >= 0));
            r.send(tcgets_errno(after));
        });
        assert!(out.exited_ok(), "{out:?}");
        let expected_new = if allow { 0 } else { i64::from(libc::EACCES) };
        assert_eq!(
            out.values,
            vec![0, 1, expected_new],
            "devices_ioctl={allow}"
        );
    }
}
