//! The id-map keeper: a user namespace whose maps newuidmap and newgidmap
//! wrote once, kept by a small idle process, in which each sandbox then
//! gets a namespace of its own with maps sbox writes itself.
//!
//! Running the two setuid helpers costs several milliseconds per sandbox,
//! as much as the rest of the launch together. The first launch of a user
//! (for one id plan) starts the keeper: a process in a new user namespace,
//! mapped by the helpers like a sandbox's, that does nothing but wait. Later
//! launches enter its namespace from a short-lived child, create the
//! sandbox's namespaces there, and give the sandbox's user namespace the
//! identity map of the keeper's ids: seen from the host the sandbox's ids
//! are the same as with the helpers. Each sandbox still has a user
//! namespace of its own, so root in one sandbox holds no capability over
//! another (or over the keeper's namespace, which is its parent).
//!
//! The keeper is found through a record in sbox's private runtime
//! directory (`keeper-HASH`: pid and start time), and trusted only when the
//! process still has that start time and name, lives in our pid namespace,
//! its user namespace is a child of ours, and its maps are exactly the
//! plan's. It exits when its record is gone or names another process, or
//! after `IDLE` without a launch; sandboxes already running are not
//! affected (their namespaces keep the keeper's alive).

use crate::idmap::{Extent, IdPlan};
use crate::sys::{self, Forked};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the keeper waits for a launch before it exits.
pub const IDLE: Duration = Duration::from_secs(15 * 60);
/// How often the keeper looks at its record.
const CHECK: Duration = Duration::from_secs(2);
/// The keeper's name in `ps`.
const NAME: &str = "sbox-keeper";
/// The name sbox is executed under to be the keeper (`main` looks at it).
pub const ARGV0: &str = "sbox-keeper";

/// Why the keeper could not be used (the launcher then maps the sandbox
/// with the helpers itself).
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error("{0}: {1}")]
    Sys(&'static str, nix::errno::Errno),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}")]
    Maps(String),
}

type Result<T> = std::result::Result<T, KeeperError>;

/// The record of the keeper of `ids` in the runtime directory `base`.
pub fn record_path(base: &Path, ids: &IdPlan) -> PathBuf {
    // One keeper per id plan (--map-user has its own).
    let key = crate::digest::digest(format!("{:?}{:?}", ids.uid, ids.gid).as_bytes());
    base.join(format!("keeper-{}", &key[..16]))
}

/// The keeper's user namespace for `ids`: the running keeper's, or a new
/// keeper's. Must be called while the process has one thread.
pub fn obtain(base: &Path, ids: &IdPlan) -> Result<(OwnedFd, bool)> {
    let rec = record_path(base, ids);
    if let Some(ns) = join(&rec, ids) {
        // Keep it alive: the keeper measures idleness by this time.
        let _ = std::fs::File::options()
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&rec)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        return Ok((ns, false));
    }
    create(&rec, ids).map(|ns| (ns, true))
}

/// The start time of `pid` (clock ticks after boot), field 22 of its stat.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn read_map(pid: i32, kind: &str) -> Option<Vec<Extent>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{kind}")).ok()?;
    text.lines()
        .map(|l| {
            let mut f = l.split_whitespace().map(str::parse::<u32>);
            Some(Extent {
                inside: f.next()?.ok()?,
                outside: f.next()?.ok()?,
                count: f.next()?.ok()?,
            })
        })
        .collect()
}

/// Same namespace: same device and inode of the nsfs files.
fn same_ns(a: &std::fs::File, b: &Path) -> bool {
    match (a.metadata(), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// The running keeper named by `rec`, checked.
fn join(rec: &Path, ids: &IdPlan) -> Option<OwnedFd> {
    let mut text = String::new();
    std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(rec)
        .ok()?
        .take(64)
        .read_to_string(&mut text)
        .ok()?;
    let mut f = text.split_whitespace().map(str::parse::<u64>);
    let pid = i32::try_from(f.next()?.ok()?).ok()?;
    let start = f.next()?.ok()?;
    if pid <= 1 || start_time(pid)? != start {
        return None;
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    if comm.trim_end() != NAME {
        return None;
    }
    let pidns = std::fs::File::open(format!("/proc/{pid}/ns/pid")).ok()?;
    if !same_ns(&pidns, Path::new("/proc/self/ns/pid")) {
        return None;
    }
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/user")).ok()?;
    // The pid was not reused between the checks and the open.
    if start_time(pid)? != start {
        return None;
    }
    // The namespace we hold is a child of ours...
    let parent = std::fs::File::from(sys::ns_parent(ns.as_fd()).ok()?);
    if !same_ns(&parent, Path::new("/proc/self/ns/user")) {
        return None;
    }
    // ...mapped exactly as the plan says.
    if read_map(pid, "uid_map")? != ids.uid || read_map(pid, "gid_map")? != ids.gid {
        return None;
    }
    Some(OwnedFd::from(ns))
}

/// Start a keeper, map it with the helpers, and record it.
fn create(rec: &Path, ids: &IdPlan) -> Result<OwnedFd> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| KeeperError::Sys("pipe", e))?;
    // Through a child that exits at once, so the keeper is nobody's child
    // here and outlives us.
    let mid =
        match sys::clone_process(CloneFlags::empty()).map_err(|e| KeeperError::Sys("fork", e))? {
            Forked::Child => {
                drop(r);
                let _ = nix::unistd::setsid();
                match sys::clone_process(CloneFlags::CLONE_NEWUSER) {
                    Ok(Forked::Child) => {
                        drop(w);
                        become_keeper(rec)
                    }
                    Ok(Forked::Parent(pid)) => {
                        let _ = nix::unistd::write(&w, &pid.as_raw().to_ne_bytes());
                        sys::exit_now(0)
                    }
                    Err(_) => sys::exit_now(1),
                }
            }
            Forked::Parent(mid) => mid,
        };
    drop(w);
    let mut buf = [0u8; 4];
    let got = std::fs::File::from(r).read_exact(&mut buf);
    let _ = waitpid(mid, None);
    got.map_err(|e| KeeperError::Io("starting the keeper".into(), e))?;
    let pid = Pid::from_raw(i32::from_ne_bytes(buf));
    let fail = |e: KeeperError| {
        let _ = kill(pid, Signal::SIGKILL);
        e
    };
    ids.apply(pid)
        .map_err(|e| fail(KeeperError::Maps(e.to_string())))?;
    // Recorded once it carries its name (after it executed itself again),
    // which the next launches check.
    let named =
        || std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == NAME);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !named() {
        if std::time::Instant::now() > deadline {
            return Err(fail(KeeperError::Maps("the keeper did not start".into())));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))
        .map_err(|e| fail(KeeperError::Io("opening the keeper's namespace".into(), e)))?;
    let start = start_time(pid.as_raw())
        .ok_or_else(|| fail(KeeperError::Maps("the keeper is gone".into())))?;
    // Written aside and renamed over the record: a reader sees all or none.
    let tmp = rec.with_extension(format!("{pid}.tmp"));
    let written = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| f.write_all(format!("{pid} {start}\n").as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, rec));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(KeeperError::Io(
            format!("writing {}", rec.display()),
            e,
        )));
    }
    Ok(OwnedFd::from(ns))
}

/// In the keeper's new process: run sbox again as the keeper, with nothing
/// of the launcher (its memory, command line, descriptors) kept.
fn become_keeper(rec: &Path) -> ! {
    use std::os::unix::ffi::OsStrExt;
    let _ = sys::close_fds_from(0);
    let _ = nix::unistd::chdir("/");
    // The launcher blocks the signals it forwards: the keeper takes them.
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
    let exe = c"/proc/self/exe";
    if let (Ok(argv0), Ok(path)) = (
        std::ffi::CString::new(ARGV0),
        std::ffi::CString::new(rec.as_os_str().as_bytes()),
    ) {
        let env: [&std::ffi::CStr; 0] = [];
        let _ = nix::unistd::execve(exe, &[argv0.as_c_str(), path.as_c_str()], &env);
    }
    // Not executable again (the binary was replaced?): keep it from here.
    keep(rec)
}

/// The keeper itself: hold the namespace until the record is gone, names
/// another process, or nobody used it for `IDLE`.
pub fn keep(rec: &Path) -> ! {
    if let Ok(name) = std::ffi::CString::new(NAME) {
        let _ = sys::set_process_name(&name);
    }
    let me = std::process::id().to_string();
    loop {
        std::thread::sleep(CHECK);
        let Ok(md) = std::fs::symlink_metadata(rec) else {
            sys::exit_now(0)
        };
        let ours = std::fs::read_to_string(rec)
            .is_ok_and(|t| t.split_whitespace().next() == Some(me.as_str()));
        if !ours {
            sys::exit_now(0)
        }
        let idle = md
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|d| d > IDLE);
        if idle {
            let _ = std::fs::remove_file(rec);
            sys::exit_now(0)
        }
    }
}

/// Fork a sandbox's first process into a new user namespace (with the other
/// `flags`) created inside the keeper's `ns`, and give it the identity map
/// of the keeper's ids. Returns like `clone_process`: `Child` in the new
/// process (its maps written), `Parent(pid)` here, where it is our child.
/// Must be called while the process has one thread.
pub fn clone_into(ns: &OwnedFd, flags: CloneFlags, ids: &IdPlan) -> Result<Forked> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| KeeperError::Sys("pipe", e))?;
    let hop =
        match sys::clone_process(CloneFlags::empty()).map_err(|e| KeeperError::Sys("fork", e))? {
            Forked::Child => {
                drop(r);
                // Tell the launcher: [pid or -errno][0 or errno of the maps].
                let say = |v: i32| {
                    let _ = nix::unistd::write(&w, &v.to_ne_bytes());
                };
                if let Err(e) = nix::sched::setns(ns, CloneFlags::CLONE_NEWUSER) {
                    say(-(e as i32));
                    sys::exit_now(1)
                }
                match sys::clone_process(flags | CloneFlags::CLONE_PARENT) {
                    Ok(Forked::Child) => {
                        drop(w);
                        return Ok(Forked::Child);
                    }
                    Ok(Forked::Parent(pid)) => {
                        say(pid.as_raw());
                        match write_identity(pid, ids) {
                            Ok(()) => {
                                say(0);
                                sys::exit_now(0)
                            }
                            Err(e) => {
                                let _ = kill(pid, Signal::SIGKILL);
                                say(e.raw_os_error().unwrap_or(libc::EIO));
                                sys::exit_now(1)
                            }
                        }
                    }
                    Err(e) => {
                        say(-(e as i32));
                        sys::exit_now(1)
                    }
                }
            }
            Forked::Parent(hop) => hop,
        };
    drop(w);
    let mut r = std::fs::File::from(r);
    let mut word = || {
        let mut b = [0u8; 4];
        r.read_exact(&mut b).ok().map(|()| i32::from_ne_bytes(b))
    };
    let first = word();
    let second = word();
    let hop_ok = matches!(waitpid(hop, None), Ok(WaitStatus::Exited(_, 0)));
    match (first, second) {
        (Some(pid), Some(0)) if pid > 0 && hop_ok => Ok(Forked::Parent(Pid::from_raw(pid))),
        (Some(pid), second) if pid > 0 => {
            // Killed by the hop; it is our child to reap.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
            let e = std::io::Error::from_raw_os_error(second.unwrap_or(libc::EIO));
            Err(KeeperError::Io("writing the sandbox's id maps".into(), e))
        }
        (Some(e), _) => Err(KeeperError::Sys(
            "entering the keeper's namespace",
            nix::errno::Errno::from_raw(-e),
        )),
        (None, _) => Err(KeeperError::Maps("the keeper's helper said nothing".into())),
    }
}

/// The sandbox's maps as seen from the keeper's namespace: every id the
/// keeper has, as itself.
fn write_identity(pid: Pid, ids: &IdPlan) -> std::io::Result<()> {
    for (kind, extents) in [("uid_map", &ids.uid), ("gid_map", &ids.gid)] {
        let text: String = extents
            .iter()
            .map(|e| format!("{} {} {}\n", e.inside, e.inside, e.count))
            .collect();
        std::fs::write(format!("/proc/{}/{kind}", pid.as_raw()), text)?;
    }
    Ok(())
}

/// The pid of the live, checked keeper for `ids` in the runtime directory
/// `base`, if any (for `sbox doctor`).
pub fn running(base: &Path, ids: &IdPlan) -> Option<i32> {
    let rec = record_path(base, ids);
    join(&rec, ids)?;
    std::fs::read_to_string(&rec)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_record_per_plan() {
        let a = IdPlan {
            uid: vec![Extent {
                inside: 0,
                outside: 1000,
                count: 1,
            }],
            gid: vec![Extent {
                inside: 0,
                outside: 1000,
                count: 1,
            }],
            helpers: true,
        };
        let mut b = a.clone();
        b.uid[0].inside = 1000;
        let base = Path::new("/run/user/1000/sbox");
        assert_eq!(record_path(base, &a), record_path(base, &a.clone()));
        assert_ne!(record_path(base, &a), record_path(base, &b));
        assert!(record_path(base, &a).starts_with(base));
    }

    #[test]
    fn start_time_of_ourselves() {
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some());
        assert_eq!(start_time(me), start_time(me));
    }
}
