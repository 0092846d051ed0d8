//! Times 1,000,000 getppid() calls in a child, before and after installing the
//! default seccomp filter, and prints both and the ratio. For reference it also
//! times an allow-everything filter (only the arch and x32 checks), which shows
//! the fixed cost of having any filter at all.
//!
//! Run with: cargo run --release --example getppid_bench

use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use sbox::confine::seccomp::{
    build_filter, default_deny_list, filter_len, install_filter, native_arch, SeccompSpec,
};
use seccompiler::BpfProgram;

const CALLS: u32 = 1_000_000;

fn time_getppid() -> Duration {
    let start = Instant::now();
    for _ in 0..CALLS {
        // SAFETY: getppid has no preconditions; the raw syscall avoids any libc caching.
        let ppid = unsafe { libc::syscall(libc::SYS_getppid) };
        std::hint::black_box(ppid);
    }
    start.elapsed()
}

fn ns_per_call(d: Duration) -> f64 {
    d.as_nanos() as f64 / f64::from(CALLS)
}

/// In a child: time without a filter, install `prog`, time again; print.
fn measure(label: &str, prog: &BpfProgram) -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: this program is single-threaded; the child only computes and prints.
    match unsafe { fork() }? {
        ForkResult::Child => {
            time_getppid(); // warm up
            let without = time_getppid();
            let code = match install_filter(prog) {
                Ok(()) => {
                    let with = time_getppid();
                    println!(
                        "{label:>15} ({:>3} insns): {CALLS} getppid() without filter {:7.1} ms ({:5.1} ns/call), with {:7.1} ms ({:5.1} ns/call), ratio {:.2}",
                        filter_len(prog),
                        without.as_secs_f64() * 1e3,
                        ns_per_call(without),
                        with.as_secs_f64() * 1e3,
                        ns_per_call(with),
                        with.as_secs_f64() / without.as_secs_f64()
                    );
                    0
                }
                Err(e) => {
                    eprintln!("install failed: {e}");
                    1
                }
            };
            std::process::exit(code);
        }
        ForkResult::Parent { child } => match waitpid(child, None)? {
            WaitStatus::Exited(_, 0) => Ok(()),
            other => Err(format!("benchmark child ended with {other:?}").into()),
        },
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arch = native_arch().ok_or("unsupported architecture")?;
    let default = build_filter(&SeccompSpec::default(), arch)?;
    let allow_all = SeccompSpec {
        extra_allow: default_deny_list().iter().map(|s| s.to_string()).collect(),
        ..SeccompSpec::default()
    };
    measure("default filter", &default)?;
    measure("allow-all", &build_filter(&allow_all, arch)?)?;
    Ok(())
}
