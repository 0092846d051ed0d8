//! Installs the real seccomp filter in forked children.

mod forkchild;

use forkchild::{errno_if_failed, run_in_child};
use nix::sys::signal::Signal;
use sbox::confine::seccomp::{
    build_filter, filter_len, install_filter, install_filter_with_log, native_arch, Action,
    SeccompSpec,
};

const EPERM: i64 = libc::EPERM as i64;
const ENOSYS: i64 = libc::ENOSYS as i64;

fn default_filter() -> seccompiler::BpfProgram {
    build_filter(
        &SeccompSpec::default(),
        native_arch().expect("supported arch"),
    )
    .expect("build")
}

/// Raw syscall, returning 0 on success or the errno.
fn sys(nr: libc::c_long, a: [u64; 6]) -> i64 {
    // SAFETY: the calls below are made with arguments that are either invalid
    // (and rejected) or denied by the filter before the kernel acts on them.
    let ret = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    errno_if_failed(ret)
}

/// A pty pair opened before the filter is installed.
fn open_pty() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    (pty.master, pty.slave)
}

#[test]
fn default_filter_denies_the_dangerous_calls() {
    let prog = default_filter();
    let (_master, slave) = open_pty();
    use std::os::fd::AsRawFd;
    let tty = slave.as_raw_fd() as u64;
    let byte = b"x";
    let out = run_in_child(|r| {
        install_filter(&prog).expect("install");
        r.send(sys(libc::SYS_keyctl, [0; 6])); // KEYCTL_GET_KEYRING_ID
        r.send(sys(libc::SYS_bpf, [0; 6]));
        r.send(sys(libc::SYS_perf_event_open, [0; 6]));
        r.send(sys(libc::SYS_userfaultfd, [0; 6]));
        r.send(sys(libc::SYS_personality, [0x0040000, 0, 0, 0, 0, 0])); // ADDR_NO_RANDOMIZE
        r.send(sys(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0])); // query: allowed
        let sti = [tty, libc::TIOCSTI, byte.as_ptr() as u64, 0, 0, 0];
        r.send(sys(libc::SYS_ioctl, sti));
        let sti_high = [
            tty,
            (1 << 32) | libc::TIOCSTI,
            byte.as_ptr() as u64,
            0,
            0,
            0,
        ];
        r.send(sys(libc::SYS_ioctl, sti_high));
        r.send(sys(libc::SYS_clone3, [0; 6]));
        r.send(sys(
            libc::SYS_unshare,
            [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
        ));
        let clone_user = [(libc::CLONE_NEWUSER | libc::SIGCHLD) as u64, 0, 0, 0, 0, 0];
        // SAFETY: if the filter failed to deny it, the new child exits at once.
        let ret = unsafe { libc::syscall(libc::SYS_clone, clone_user[0], 0, 0, 0, 0) };
        if ret == 0 {
            // SAFETY: we are the unexpected child; leave immediately.
            unsafe { libc::_exit(0) };
        }
        r.send(errno_if_failed(ret));
        r.send(sys(libc::SYS_mount, [0; 6]));
        r.send(sys(libc::SYS_io_uring_setup, [0; 6]));
        // SAFETY: getpid has no preconditions.
        r.send(i64::from(unsafe { libc::getpid() } > 0));
    });
    assert!(out.exited_ok(), "{out:?}");
    let names = [
        "keyctl",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "personality(ADDR_NO_RANDOMIZE)",
        "personality(query)",
        "ioctl(TIOCSTI)",
        "ioctl(TIOCSTI | 1<<32)",
        "clone3",
        "unshare(CLONE_NEWUSER)",
        "clone(CLONE_NEWUSER)",
        "mount",
        "io_uring_setup",
        "getpid works",
    ];
    let expected = [
        EPERM, EPERM, EPERM, EPERM, EPERM, 0, EPERM, EPERM, ENOSYS, EPERM, EPERM, EPERM, ENOSYS, 1,
    ];
    assert_eq!(out.values.len(), expected.len(), "{out:?}");
    for ((name, got), want) in names.iter().zip(&out.values).zip(expected) {
        assert_eq!(*got, want, "{name}");
    }
}

#[test]
fn kill_action_kills_with_sigsys() {
    let spec = SeccompSpec {
        extra_deny: vec![("getppid".into(), Action::Kill)],
        ..SeccompSpec::default()
    };
    let prog = build_filter(&spec, native_arch().unwrap()).unwrap();
    let out = run_in_child(|r| {
        install_filter(&prog).expect("install");
        r.send(1);
        // SAFETY: getppid has no preconditions; the filter kills us here.
        unsafe { libc::getppid() };
        r.send(2);
    });
    assert!(out.killed_by(Signal::SIGSYS), "{out:?}");
    assert_eq!(out.values, vec![1]);
}

#[test]
fn errno_action_and_log_flag() {
    let spec = SeccompSpec {
        extra_deny: vec![("uname".into(), Action::Errno(libc::EACCES))],
        log_denials: true,
        ..SeccompSpec::default()
    };
    let prog = build_filter(&spec, native_arch().unwrap()).unwrap();
    let out = run_in_child(|r| {
        install_filter_with_log(&prog, spec.log_denials).expect("install");
        r.send(sys(libc::SYS_uname, [0; 6]));
        r.send(sys(libc::SYS_keyctl, [0; 6]));
    });
    assert!(out.exited_ok(), "{out:?}");
    assert_eq!(out.values, vec![i64::from(libc::EACCES), EPERM]);
}

#[test]
fn no_new_privs_is_set_by_install() {
    let prog = default_filter();
    let out = run_in_child(|r| {
        install_filter(&prog).expect("install");
        // SAFETY: PR_GET_NO_NEW_PRIVS reads a flag.
        r.send(i64::from(unsafe {
            libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
        }));
    });
    assert!(out.exited_ok(), "{out:?}");
    assert_eq!(out.values, vec![1]);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn x32_syscall_numbers_are_killed() {
    let prog = default_filter();
    let out = run_in_child(|r| {
        install_filter(&prog).expect("install");
        r.send(1);
        // x32 getpid (__X32_SYSCALL_BIT | 39).
        sys(0x4000_0000 | libc::SYS_getpid, [0; 6]);
        r.send(2);
    });
    assert!(out.killed_by(Signal::SIGSYS), "{out:?}");
    assert_eq!(out.values, vec![1]);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn i386_abi_is_killed() {
    let prog = default_filter();
    let out = run_in_child(|r| {
        install_filter(&prog).expect("install");
        r.send(1);
        // SAFETY: int 0x80 with eax=20 is the i386 getpid; the filter's arch
        // check kills the process before the kernel runs it.
        unsafe {
            std::arch::asm!("int 0x80", inout("eax") 20u32 => _, options(nostack));
        }
        r.send(2);
    });
    eprintln!("i386 call ended with {:?}", out.status);
    // SIGSEGV when the kernel has no IA32 emulation at all.
    assert!(
        out.killed_by(Signal::SIGSYS) || out.killed_by(Signal::SIGSEGV),
        "{out:?}"
    );
    assert_eq!(out.values, vec![1]);
}

#[test]
fn filter_is_small() {
    let n = filter_len(&default_filter());
    assert!(n < 512, "{n} instructions");
}

#[test]
fn print_filter_sizes() {
    for arch in [
        seccompiler::TargetArch::x86_64,
        seccompiler::TargetArch::aarch64,
    ] {
        let n = filter_len(&build_filter(&SeccompSpec::default(), arch).unwrap());
        eprintln!("{arch:?}: {n} instructions");
    }
}
