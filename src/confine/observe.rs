//! --log-denials for what Landlock and the network refuse. Neither tells an
//! unprivileged user (Landlock writes only to the audit log; a connect
//! without a route fails with ENETUNREACH in the caller alone), so the
//! seccomp filter passes the calls that may be refused for a reason the
//! sandbox set (writes by path, `connect`) to init, which looks at their
//! arguments, works out in user space what the kernel will decide, and lets
//! them through unchanged (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`): observing
//! only, never deciding.
//!
//! What is counted, and its limits:
//! * a write, creation, removal or rename whose directory (or, for a write
//!   to an existing file, the file) is outside every `landlock.write` rule,
//!   where the path exists as the call needs it (an ENOENT or EEXIST comes
//!   before Landlock). Paths are resolved by init in the same root, after
//!   the call was made and before it is carried out: a path the command
//!   changes in between, or a read-only mount that refuses first (EROFS), can
//!   make a count wrong. `openat2` is read for its flags like `openat`.
//!   Paths under /proc, /dev/fd and /dev/std* are not judged (init would
//!   resolve its own /proc/self), nor symlinks elsewhere that lead there;
//!   nor hidden paths (the FUSE server counts them), as named (a `..` or a
//!   symlink that leads into one is looked up, and counted, twice). A
//!   command that changed its root has its paths taken below that root, but
//!   its absolute symlinks are followed from the sandbox's.
//! * with no network (`--net none`), a `connect` to an address that is not
//!   the loopback's; name lookups that fail without a connect (no resolver
//!   reachable) are not seen.
//!   (With `--allow-net`, sbox's forwarder counts what it refuses, in
//!   every run: see `egress`.)
//! * a TCP `connect` to a port outside `network.allowed_connect_ports`, a
//!   TCP `bind` to one outside `network.allowed_bind_ports`.

use super::notify::{Refusal, Request};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// What init knows of the rules, to tell what they refuse.
#[derive(Debug, Clone, Default)]
pub struct Observer {
    /// The `landlock.write` paths, resolved (None: writes are not watched).
    pub write_roots: Option<Vec<PathBuf>>,
    /// The sandbox has no network (only its own loopback).
    pub no_network: bool,
    /// TCP connect is limited to these ports (Landlock).
    pub connect_ports: Option<Vec<u16>>,
    /// TCP bind is limited to these ports (Landlock).
    pub bind_ports: Option<Vec<u16>>,
    /// The hidden paths: a call on one is the overlay's refusal, counted by
    /// the FUSE server (init must not even look it up: that counts too).
    pub hidden: Vec<PathBuf>,
}

/// What a call does to a path, as far as Landlock's write rights go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Makes the last component (needs the right on its directory; EEXIST
    /// comes first when it exists).
    Make,
    /// Removes the last component (needs the right on its directory; ENOENT
    /// comes first when it does not exist).
    Remove,
    /// Puts something at the last component, whether or not it exists
    /// (a rename's target: the right on its directory).
    Replace,
    /// Writes to an existing file (needs the right on the file).
    Write,
    /// open/openat/openat2/creat with these flags.
    Open(u64),
}

/// A path argument: the directory fd it is relative to (None: the working
/// directory) and its address in the caller.
type Arg = (Option<i32>, u64);

impl Observer {
    /// Landlock roots resolved in the sandbox's own root.
    pub fn resolve_roots(paths: &[PathBuf]) -> Vec<PathBuf> {
        paths
            .iter()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
            .collect()
    }

    /// What the kernel will refuse of this call (named `name`), if anything.
    pub fn observe(&self, req: &Request, name: &str) -> Option<Refusal> {
        let a = &req.args;
        if name == "connect" {
            return self.connect(req);
        }
        if name == "bind" {
            return self.bind(req);
        }
        self.write_roots.as_ref()?;
        let at = |dirfd: u64, path: u64| -> Arg { (Some(dirfd as i32), path) };
        let cwd = |path: u64| -> Arg { (None, path) };
        let targets: Vec<(Arg, Op)> = match name {
            "open" => vec![(cwd(a[0]), Op::Open(a[1]))],
            "openat" => vec![(at(a[0], a[1]), Op::Open(a[2]))],
            "openat2" => {
                let flags = read_mem(req.pid, a[2], 8)?;
                let flags = u64::from_ne_bytes(flags.try_into().ok()?);
                vec![(at(a[0], a[1]), Op::Open(flags))]
            }
            "creat" => vec![(
                cwd(a[0]),
                Op::Open((libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64),
            )],
            "mkdir" | "mknod" => vec![(cwd(a[0]), Op::Make)],
            "mkdirat" | "mknodat" => vec![(at(a[0], a[1]), Op::Make)],
            "unlink" | "rmdir" => vec![(cwd(a[0]), Op::Remove)],
            "unlinkat" => vec![(at(a[0], a[1]), Op::Remove)],
            "truncate" => vec![(cwd(a[0]), Op::Write)],
            "link" | "symlink" => vec![(cwd(a[1]), Op::Make)],
            "linkat" => vec![(at(a[2], a[3]), Op::Make)],
            "symlinkat" => vec![(at(a[1], a[2]), Op::Make)],
            "rename" => vec![(cwd(a[0]), Op::Remove), (cwd(a[1]), Op::Replace)],
            "renameat" | "renameat2" => {
                vec![(at(a[0], a[1]), Op::Remove), (at(a[2], a[3]), Op::Replace)]
            }
            _ => return None,
        };
        let mut resolved = Vec::new();
        for ((dirfd, ptr), op) in targets {
            let path = absolute(req.pid, dirfd, &read_path(req.pid, ptr)?)?;
            // /proc/self and /dev/std* would be init's own, not the caller's.
            let own = [
                "/proc",
                "/dev/fd",
                "/dev/stdin",
                "/dev/stdout",
                "/dev/stderr",
            ];
            if own.iter().any(|o| path.starts_with(o))
                || self.hidden.iter().any(|h| path.starts_with(h))
            {
                return None;
            }
            resolved.push((path, op));
        }
        // A rename refused for its source is not refused again for its target.
        resolved
            .into_iter()
            .find_map(|(path, op)| self.refused_path(&path, op))
            .map(|p| Refusal::LandlockWrite(p.display().to_string()))
    }

    /// The path Landlock refuses `op` on `path` for (as reported), if it does.
    fn refused_path(&self, path: &Path, op: Op) -> Option<PathBuf> {
        let roots = self.write_roots.as_ref()?;
        let covered = |p: &Path| roots.iter().any(|r| p.starts_with(r));
        let exists = std::fs::symlink_metadata(path).is_ok();
        // The directory the entry is made in or removed from, resolved.
        let in_dir = || -> Option<PathBuf> {
            let dir = std::fs::canonicalize(path.parent()?).ok()?;
            Some(dir.join(path.file_name()?))
        };
        let on_entry = |p: PathBuf| -> Option<PathBuf> {
            (!covered(p.parent().unwrap_or(Path::new("/")))).then_some(p)
        };
        match op {
            Op::Make if exists => None,
            Op::Make | Op::Replace => on_entry(in_dir()?),
            Op::Remove if !exists => None,
            Op::Remove => on_entry(in_dir()?),
            Op::Write => {
                let p = std::fs::canonicalize(path).ok()?;
                (!covered(&p)).then_some(p)
            }
            Op::Open(flags) => {
                let writes = flags & libc::O_ACCMODE as u64 != libc::O_RDONLY as u64
                    || flags & libc::O_TRUNC as u64 != 0;
                match std::fs::canonicalize(path) {
                    // An existing file (symlinks followed, as open does).
                    Ok(p) if writes => (!covered(&p)).then_some(p),
                    Ok(_) => None,
                    // A new file: made in its directory.
                    Err(_) if flags & libc::O_CREAT as u64 != 0 && !exists => on_entry(in_dir()?),
                    Err(_) => None,
                }
            }
        }
    }

    fn connect(&self, req: &Request) -> Option<Refusal> {
        let len = usize::try_from(req.args[2]).ok()?.min(128);
        let raw = read_mem(req.pid, req.args[1], len)?;
        let addr = sockaddr(&raw)?;
        let local = match addr.ip() {
            IpAddr::V4(ip) => ip.is_loopback() || ip.is_unspecified(),
            IpAddr::V6(ip) => {
                ip.is_loopback()
                    || ip.is_unspecified()
                    || ip
                        .to_ipv4_mapped()
                        .is_some_and(|v| v.is_loopback() || v.is_unspecified())
            }
        };
        if self.no_network && !local {
            return Some(Refusal::NoNetwork(addr.to_string()));
        }
        let ports = self.connect_ports.as_ref()?;
        if ports.contains(&addr.port()) || !is_tcp(req.pid, req.args[0] as i32) {
            return None;
        }
        Some(Refusal::Port(addr.to_string()))
    }
}

impl Observer {
    fn bind(&self, req: &Request) -> Option<Refusal> {
        let ports = self.bind_ports.as_ref()?;
        let len = usize::try_from(req.args[2]).ok()?.min(128);
        let addr = sockaddr(&read_mem(req.pid, req.args[1], len)?)?;
        if ports.contains(&addr.port()) || !is_tcp(req.pid, req.args[0] as i32) {
            return None;
        }
        Some(Refusal::BindPort(addr.to_string()))
    }
}

/// An AF_INET or AF_INET6 address.
fn sockaddr(raw: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(raw.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(raw.get(2..4)?.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET => {
            let b: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(b)), port))
        }
        libc::AF_INET6 => {
            let b: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(b)), port))
        }
        _ => None,
    }
}

/// The caller's `fd` is a TCP socket (looked at through a copy of it).
fn is_tcp(pid: u32, fd: i32) -> bool {
    let Ok(pidfd) = crate::sys::pidfd_open(pid) else {
        return false;
    };
    let Ok(copy) = crate::sys::pidfd_getfd(std::os::fd::AsFd::as_fd(&pidfd), fd) else {
        return false;
    };
    crate::sys::socket_protocol(std::os::fd::AsFd::as_fd(&copy))
        .is_ok_and(|p| p == libc::IPPROTO_TCP)
}

/// `len` bytes at `addr` in process `pid`.
fn read_mem(pid: u32, addr: u64, len: usize) -> Option<Vec<u8>> {
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, addr).ok()?;
    Some(buf)
}

/// The NUL-terminated path at `addr` in process `pid` (read a page at a
/// time: the string may end just before an unmapped page).
fn read_path(pid: u32, addr: u64) -> Option<PathBuf> {
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < libc::PATH_MAX as usize {
        let chunk = (4096 - (at % 4096)) as usize;
        let mut buf = vec![0u8; chunk];
        let n = f.read_at(&mut buf, at).ok()?;
        if n == 0 {
            return None;
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..end]);
            return (!out.is_empty()).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(&out)));
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    None
}

/// `path` made absolute: relative to `dirfd` of `pid` (None: its working
/// directory).
fn absolute(pid: u32, dirfd: Option<i32>, path: &Path) -> Option<PathBuf> {
    if let Ok(rel) = path.strip_prefix("/") {
        // Below its root, as init sees it (a command may have chrooted).
        let root = std::fs::read_link(format!("/proc/{pid}/root")).ok()?;
        return Some(root.join(rel));
    }
    let base = match dirfd {
        None => format!("/proc/{pid}/cwd"),
        Some(libc::AT_FDCWD) => format!("/proc/{pid}/cwd"),
        Some(fd) => format!("/proc/{pid}/fd/{fd}"),
    };
    Some(std::fs::read_link(base).ok()?.join(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let mut v4 = vec![0u8; 16];
        v4[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&80u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[192, 0, 2, 1]);
        assert_eq!(sockaddr(&v4), Some("192.0.2.1:80".parse().unwrap()));
        let mut unix = vec![0u8; 16];
        unix[0..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(sockaddr(&unix), None);
    }

    #[test]
    fn writes_outside_the_write_rules_are_refused() {
        let tmp = std::env::temp_dir().canonicalize().unwrap();
        let dir = tmp.join(format!("sbox-observe-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("ok")).unwrap();
        std::fs::write(dir.join("f"), "x").unwrap();
        let o = Observer {
            write_roots: Some(vec![dir.join("ok")]),
            ..Observer::default()
        };
        let w = libc::O_WRONLY as u64;
        let c = (libc::O_WRONLY | libc::O_CREAT) as u64;
        assert_eq!(o.refused_path(&dir.join("ok/new"), Op::Open(c)), None);
        assert_eq!(
            o.refused_path(&dir.join("new"), Op::Open(c)),
            Some(dir.join("new"))
        );
        assert_eq!(
            o.refused_path(&dir.join("f"), Op::Open(w)),
            Some(dir.join("f"))
        );
        // Read-only with O_CREAT on an existing file: no write.
        assert_eq!(
            o.refused_path(&dir.join("f"), Op::Open(libc::O_CREAT as u64)),
            None
        );
        // ENOENT and EEXIST come first.
        assert_eq!(o.refused_path(&dir.join("nope/x"), Op::Open(c)), None);
        assert_eq!(o.refused_path(&dir.join("gone"), Op::Remove), None);
        assert_eq!(o.refused_path(&dir.join("f"), Op::Make), None);
        assert_eq!(
            o.refused_path(&dir.join("f"), Op::Remove),
            Some(dir.join("f"))
        );
        // Removing the rule's own root needs the right on its parent.
        assert_eq!(
            o.refused_path(&dir.join("ok"), Op::Remove),
            Some(dir.join("ok"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
