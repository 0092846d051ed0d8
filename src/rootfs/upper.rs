//! The upper layer's format, read and written in one place: by the FUSE
//! overlay that writes it, and by `sbox diff` and `sbox commit` that read
//! it afterwards.
//!
//! It is the kernel overlayfs `userxattr` layout plus the owner and mode
//! set inside:
//! - whiteout (a name deleted inside): a 0/0 character device, or, when
//!   the server may not create device nodes, an empty regular file with
//!   `user.overlay.whiteout` (the kernel's "xattr whiteout"; its directory
//!   is then marked with `user.overlay.opaque="x"` and
//!   `user.overlay.whiteouts`). Both are read.
//! - opaque directory (nothing of the lower one shows through):
//!   `user.overlay.opaque="y"`.
//! - owner and mode presented inside: the server cannot chown on the host,
//!   so owner and mode set inside are kept in the upper file's
//!   `user.containers.override_stat` xattr ("uid:gid:0mode", the
//!   fuse-overlayfs format); symlinks, fifos and sockets carry no user
//!   xattrs, so their owner is kept on their directory
//!   (`user.sbox.owner.NAME`). A copied-up file keeps its presented inode
//!   number in `user.sbox.origin`.
//! - id mapping: without an override, host ids are mapped: the caller
//!   shows as 0 (as itself with --map-user), any other host id that is
//!   also an id inside the sandbox (host root, `_apt`, `man`...) as that
//!   same number, every other id as 65534 (nobody). A reader of the upper
//!   layer compares what it stores with the host through the same mapping
//!   ([`Ids::overlay`]).
//!
//! FUSE reads the ids the server returns in the user namespace of the
//! mount (the sandbox's), so the number returned is the id seen inside:
//! 42 is the sandbox's uid 42 (the host's caller subuid + 41), which the
//! kernel's permission checks then treat exactly like on the host.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use crate::rootfs::overlay::sys;

/// The xattr that holds the presented owner and mode.
pub(crate) const OVERRIDE_XATTR: &CStr = c"user.containers.override_stat";
/// The xattr that keeps the presented inode number of a copied-up file.
pub(crate) const ORIGIN_XATTR: &CStr = c"user.sbox.origin";
/// Marks a whiteout file (an empty regular file).
pub(crate) const WHITEOUT_XATTR: &CStr = c"user.overlay.whiteout";
/// Marks a directory that may hold whiteout files.
pub(crate) const WHITEOUTS_XATTR: &CStr = c"user.overlay.whiteouts";
/// "y": an opaque directory; "x": one that may hold whiteout files.
pub(crate) const OPAQUE_XATTR: &CStr = c"user.overlay.opaque";

/// The id shown for host ids that have no meaning inside.
pub(crate) const NOBODY: u32 = 65534;

/// Owner and permission bits presented inside (mode holds 07777 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Override {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl Override {
    /// Parses "uid:gid:mode" (mode octal, an optional 4th field is ignored).
    pub(crate) fn parse(v: &[u8]) -> Option<Override> {
        let s = std::str::from_utf8(v).ok()?;
        let s = s.trim_end_matches('\0').trim();
        let mut it = s.split(':');
        let uid = it.next()?.parse().ok()?;
        let gid = it.next()?.parse().ok()?;
        let mode = u32::from_str_radix(it.next()?, 8).ok()?;
        Some(Override {
            uid,
            gid,
            mode: mode & 0o7777,
        })
    }

    pub(crate) fn format(&self) -> Vec<u8> {
        format!("{}:{}:0{:o}", self.uid, self.gid, self.mode & 0o7777).into_bytes()
    }
}

/// Host ids of the caller (the user running the server) and how other
/// host ids are presented inside.
#[derive(Clone, Debug)]
pub struct Ids {
    pub caller_uid: u32,
    pub caller_gid: u32,
    /// What the caller is inside (0 unless --map-user).
    pub inside_uid: u32,
    pub inside_gid: u32,
    /// A passthrough mount presents host ids as a bind mount would: through
    /// the sandbox's own id maps (ids outside them are nobody).
    pub map: Option<IdMap>,
    /// The overlay: the sandbox's id maps; a host id that is an id inside
    /// them shows as that same number (None: only host root does).
    pub shown: Option<IdMap>,
}

/// The sandbox's uid and gid maps: (inside, host, count) extents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdMap {
    pub uid: Vec<(u32, u32, u32)>,
    pub gid: Vec<(u32, u32, u32)>,
}

/// Whether `id` is an id inside the sandbox (in the inside part of an extent).
fn covers(extents: &[(u32, u32, u32)], id: u32) -> bool {
    extents
        .iter()
        .any(|&(inside, _, n)| id >= inside && id - inside < n)
}

fn map_id(extents: &[(u32, u32, u32)], host: u32) -> u32 {
    extents
        .iter()
        .find(|&&(_, out, n)| host >= out && host - out < n)
        .map_or(NOBODY, |&(inside, out, _)| inside + (host - out))
}

impl IdMap {
    /// The maps the sandbox's user namespace is given.
    pub fn from_plan(plan: &crate::idmap::IdPlan) -> IdMap {
        let extents = |v: &[crate::idmap::Extent]| -> Vec<(u32, u32, u32)> {
            v.iter().map(|e| (e.inside, e.outside, e.count)).collect()
        };
        IdMap {
            uid: extents(&plan.uid),
            gid: extents(&plan.gid),
        }
    }
}

impl Ids {
    /// The mapping of the root overlay: `caller` (host uid, gid) shows as
    /// `inside`, other host ids that are ids inside `shown` as themselves
    /// (None: only host root does), the rest as nobody.
    pub fn overlay(caller: (u32, u32), inside: (u32, u32), shown: Option<IdMap>) -> Ids {
        Ids {
            caller_uid: caller.0,
            caller_gid: caller.1,
            inside_uid: inside.0,
            inside_gid: inside.1,
            map: None,
            shown,
        }
    }

    /// The mapping of a passthrough mount: host ids through the sandbox's
    /// own maps (`caller` and `inside` are kept for what it creates).
    pub fn passthrough(caller: (u32, u32), inside: (u32, u32), map: IdMap) -> Ids {
        Ids {
            caller_uid: caller.0,
            caller_gid: caller.1,
            inside_uid: inside.0,
            inside_gid: inside.1,
            map: Some(map),
            shown: None,
        }
    }

    /// The mapping the root overlay of a sandbox of the caller used, as
    /// the launcher sets it up: the caller's id maps (subordinate ranges),
    /// the caller shown as root or, with --map-user, as itself.
    pub fn of_sandbox(uid: u32, gid: u32, name: &str, map_user: bool) -> Ids {
        let plan = crate::idmap::IdPlan::for_caller(uid, gid, name, map_user);
        let inside = if map_user { (uid, gid) } else { (0, 0) };
        Ids::overlay((uid, gid), inside, Some(IdMap::from_plan(&plan)))
    }

    pub(crate) fn uid(&self, host: u32) -> u32 {
        if let Some(m) = &self.map {
            return map_id(&m.uid, host);
        }
        if host == self.caller_uid {
            self.inside_uid
        } else if host == 0 || self.shown.as_ref().is_some_and(|m| covers(&m.uid, host)) {
            host
        } else {
            NOBODY
        }
    }
    /// The gid inside of a sandbox process whose gid on the host is
    /// `host` (through the sandbox's maps; None without them).
    pub(crate) fn process_gid(&self, host: u32) -> Option<u32> {
        let m = self.map.as_ref().or(self.shown.as_ref())?;
        Some(map_id(&m.gid, host))
    }

    pub(crate) fn gid(&self, host: u32) -> u32 {
        if let Some(m) = &self.map {
            return map_id(&m.gid, host);
        }
        if host == self.caller_gid {
            self.inside_gid
        } else if host == 0 || self.shown.as_ref().is_some_and(|m| covers(&m.gid, host)) {
            host
        } else {
            NOBODY
        }
    }
}

/// The mode bits a file of `kind` really gets in the upper layer: the
/// permission bits asked for plus u+rw (u+rwx for dirs) so the server keeps
/// access whatever is chmodded inside; set-id bits are never set on the host.
pub(crate) fn real_perm(kind: u32, perm: u32) -> u32 {
    let p = perm & 0o777;
    match kind {
        libc::S_IFDIR => p | 0o700,
        libc::S_IFREG => p | 0o600,
        _ => p,
    }
}

/// Whether an override must be stored for the presented (uid, gid, perm) of
/// an upper file of `kind`: without one it shows as its host file does,
/// the caller's (0, or the caller itself with --map-user), with its real
/// permission bits.
pub(crate) fn needs_override(kind: u32, ovr: &Override, ids: &Ids) -> bool {
    (ovr.uid, ovr.gid) != (ids.inside_uid, ids.inside_gid)
        || real_perm(kind, ovr.mode) != (ovr.mode & 0o7777)
}

/// Whether a file type can carry `user.*` xattrs (and so an override).
pub(crate) fn can_have_xattrs(kind: u32) -> bool {
    kind == libc::S_IFREG || kind == libc::S_IFDIR
}

/// Reads the override xattr of an fd.
pub(crate) fn read_override(fd: BorrowedFd<'_>) -> Option<Override> {
    match sys::getxattr(fd, OVERRIDE_XATTR) {
        Ok(Some(v)) => Override::parse(&v),
        _ => None,
    }
}

/// Stores (or removes, when not needed) the override of an upper file.
pub(crate) fn write_override(
    fd: BorrowedFd<'_>,
    kind: u32,
    ovr: &Override,
    ids: &Ids,
) -> std::io::Result<()> {
    if !can_have_xattrs(kind) {
        return Ok(());
    }
    if needs_override(kind, ovr, ids) {
        sys::setxattr(fd, OVERRIDE_XATTR, &ovr.format(), 0)
    } else {
        match sys::removexattr(fd, OVERRIDE_XATTR) {
            Err(e) if e.raw_os_error() != Some(libc::ENODATA) => Err(e),
            _ => Ok(()),
        }
    }
}

/// Prefix of the xattrs that keep, on an upper directory, the owner of its
/// symlinks, fifos and sockets: those carry no user xattrs themselves.
const ENTRY_OWNER_PREFIX: &[u8] = b"user.sbox.owner.";

/// The xattr that keeps the owner of entry `name` on its directory; a name
/// too long for an xattr name goes by a hash of it (the value names it).
fn entry_owner_key(name: &[u8]) -> std::io::Result<std::ffi::CString> {
    let mut k = ENTRY_OWNER_PREFIX.to_vec();
    if k.len() + name.len() <= 255 {
        k.extend_from_slice(name);
    } else {
        // FNV-1a, 64 bits.
        let h = name.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        k.extend_from_slice(format!("#{h:016x}").as_bytes());
    }
    sys::cstr(&k)
}

/// The owner kept on directory `dir` for its symlink, fifo or socket
/// `name` ("uid:gid:name"), if any.
pub(crate) fn read_entry_owner(dir: BorrowedFd<'_>, name: &[u8]) -> Option<(u32, u32)> {
    let v = sys::getxattr(dir, &entry_owner_key(name).ok()?).ok()??;
    let mut it = v.splitn(3, |&b| b == b':');
    let uid = std::str::from_utf8(it.next()?).ok()?.parse().ok()?;
    let gid = std::str::from_utf8(it.next()?).ok()?.parse().ok()?;
    (it.next()? == name).then_some((uid, gid))
}

/// Keeps (Some) or drops (None) the owner of entry `name` on `dir`.
pub(crate) fn write_entry_owner(
    dir: BorrowedFd<'_>,
    name: &[u8],
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    let key = entry_owner_key(name)?;
    match owner {
        Some((uid, gid)) => {
            let mut v = format!("{uid}:{gid}:").into_bytes();
            v.extend_from_slice(name);
            sys::setxattr(dir, &key, &v, 0)
        }
        None => match sys::removexattr(dir, &key) {
            Err(e) if e.raw_os_error() != Some(libc::ENODATA) => Err(e),
            _ => Ok(()),
        },
    }
}

/// Reads the origin (presented inode number) of a copied-up file.
pub(crate) fn read_origin(fd: BorrowedFd<'_>) -> Option<u64> {
    match sys::getxattr(fd, ORIGIN_XATTR) {
        Ok(Some(v)) => std::str::from_utf8(&v).ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// Turns a host stat into the one presented inside.
pub(crate) fn present(st: &mut libc::stat64, ino: u64, ovr: Option<&Override>, ids: &Ids) {
    st.st_ino = ino;
    match ovr {
        Some(o) => {
            st.st_uid = o.uid;
            st.st_gid = o.gid;
            st.st_mode = (st.st_mode & libc::S_IFMT) | (o.mode & 0o7777);
        }
        None => {
            st.st_uid = ids.uid(st.st_uid);
            st.st_gid = ids.gid(st.st_gid);
        }
    }
}

/// Turns a host stat of a passthrough mount into the one presented inside:
/// the host's own mode, and the owner set inside (kept in the override)
/// or else the host owner through the sandbox's id maps.
pub(crate) fn present_passthrough(
    st: &mut libc::stat64,
    ino: u64,
    ovr: Option<&Override>,
    ids: &Ids,
) {
    st.st_ino = ino;
    match ovr {
        Some(o) => {
            st.st_uid = o.uid;
            st.st_gid = o.gid;
        }
        None => {
            st.st_uid = ids.uid(st.st_uid);
            st.st_gid = ids.gid(st.st_gid);
        }
    }
}

/// The owner/mode an upper copy must present to look like `st` presented.
pub(crate) fn presented_override(st: &libc::stat64, ovr: Option<&Override>, ids: &Ids) -> Override {
    match ovr {
        Some(o) => *o,
        None => Override {
            uid: ids.uid(st.st_uid),
            gid: ids.gid(st.st_gid),
            mode: st.st_mode & 0o7777,
        },
    }
}

/// Whether an entry (its O_PATH fd and stat) is a whiteout.
pub(crate) fn is_whiteout(fd: BorrowedFd<'_>, st: &libc::stat64) -> bool {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFCHR => st.st_rdev == 0,
        libc::S_IFREG if st.st_size == 0 => {
            matches!(sys::getxattr(fd, WHITEOUT_XATTR), Ok(Some(_)))
        }
        _ => false,
    }
}

/// Same as [`is_whiteout`] for `name` inside directory `dir` (not
/// following a symlink).
pub(crate) fn is_whiteout_at(dir: BorrowedFd<'_>, name: &CStr, st: &libc::stat64) -> bool {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFCHR => st.st_rdev == 0,
        libc::S_IFREG if st.st_size == 0 => {
            match sys::open_beneath(dir, name.to_bytes(), libc::O_PATH, 0) {
                Ok(fd) => is_whiteout(fd.as_fd(), st),
                Err(_) => false,
            }
        }
        _ => false,
    }
}

/// Whether a directory is opaque.
pub(crate) fn is_opaque(fd: BorrowedFd<'_>) -> bool {
    matches!(sys::getxattr(fd, OPAQUE_XATTR), Ok(Some(v)) if v.first() == Some(&b'y'))
}

/// Whether a directory may hold xattr whiteouts.
pub(crate) fn has_xwhiteouts(fd: BorrowedFd<'_>) -> bool {
    if matches!(sys::getxattr(fd, WHITEOUTS_XATTR), Ok(Some(_))) {
        return true;
    }
    matches!(sys::getxattr(fd, OPAQUE_XATTR), Ok(Some(v)) if v.first() == Some(&b'x'))
}

/// Makes a directory opaque.
pub(crate) fn set_opaque(fd: BorrowedFd<'_>) -> io::Result<()> {
    sys::setxattr(fd, OPAQUE_XATTR, b"y", 0)
}

/// Marks a directory as holding xattr whiteouts.
pub(crate) fn mark_xwhiteouts(dir: BorrowedFd<'_>) -> io::Result<()> {
    sys::setxattr(dir, WHITEOUTS_XATTR, b"y", 0)?;
    if !is_opaque(dir) {
        sys::setxattr(dir, OPAQUE_XATTR, b"x", 0)?;
    }
    Ok(())
}

/// Whether the owner or mode an upper directory presents (`upper`: its
/// fd, `upper_st`: its stat) differs from what the host directory
/// `host_st` presented before it was copied up: a directory copied up
/// only to hold changed children, or with only its times set, has not.
pub(crate) fn dir_meta_changed(
    upper: BorrowedFd<'_>,
    upper_st: &libc::stat64,
    host_st: &libc::stat64,
    ids: &Ids,
) -> bool {
    let now = presented_override(upper_st, read_override(upper).as_ref(), ids);
    now != presented_override(host_st, None, ids)
}

/// xattr names the sandbox must neither see nor change.
pub(crate) fn is_internal_xattr(name: &[u8]) -> bool {
    name.starts_with(b"user.overlay.")
        || name.starts_with(b"user.containers.")
        || name.starts_with(b"user.sbox.")
        || name.starts_with(b"trusted.overlay.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_roundtrip() {
        let o = Override {
            uid: 1234,
            gid: 55,
            mode: 0o4755,
        };
        assert_eq!(o.format(), b"1234:55:04755".to_vec());
        assert_eq!(Override::parse(&o.format()), Some(o));
        assert_eq!(
            Override::parse(b"0:0:755:dir"),
            Some(Override {
                uid: 0,
                gid: 0,
                mode: 0o755
            })
        );
        assert_eq!(Override::parse(b"garbage"), None);
    }

    #[test]
    fn id_mapping() {
        let ids = Ids {
            caller_uid: 1001,
            caller_gid: 1002,
            inside_uid: 0,
            inside_gid: 0,
            map: None,
            shown: None,
        };
        assert_eq!(ids.uid(1001), 0);
        assert_eq!(ids.uid(0), 0);
        assert_eq!(ids.uid(5), NOBODY);
        assert_eq!(ids.gid(1002), 0);
        assert_eq!(ids.gid(1001), NOBODY);
        // A passthrough mount maps like the sandbox's user namespace.
        let bind = Ids {
            map: Some(IdMap {
                uid: vec![(0, 1001, 1), (1, 100000, 65536)],
                gid: vec![(0, 1002, 1)],
            }),
            ..ids.clone()
        };
        assert_eq!(bind.uid(1001), 0);
        assert_eq!(bind.uid(100999), 1000);
        assert_eq!(bind.uid(0), NOBODY);
        assert_eq!(bind.uid(165536), NOBODY);
        assert_eq!(bind.gid(1002), 0);
        assert_eq!(bind.gid(100000), NOBODY);
        // The overlay shows host ids that are ids inside as themselves.
        let shown = Ids {
            map: None,
            shown: Some(IdMap {
                uid: vec![(0, 1001, 1), (1, 100000, 65536)],
                gid: vec![(0, 1002, 1), (1, 100000, 65536)],
            }),
            ..ids
        };
        assert_eq!(shown.uid(1001), 0);
        assert_eq!(shown.uid(0), 0);
        assert_eq!(shown.uid(42), 42);
        assert_eq!(shown.uid(65536), 65536);
        assert_eq!(shown.uid(65537), NOBODY);
        assert_eq!(shown.gid(1002), 0);
        assert_eq!(shown.gid(12), 12);
        assert_eq!(shown.gid(100000), NOBODY);
        // With --map-user the caller keeps its id, the others still show.
        let keep = Ids {
            inside_uid: 1001,
            inside_gid: 1002,
            shown: Some(IdMap {
                uid: vec![(1001, 1001, 1), (0, 100000, 1001), (1002, 101001, 64535)],
                gid: vec![(1002, 1002, 1), (0, 100000, 1002), (1003, 101002, 64534)],
            }),
            ..shown
        };
        assert_eq!(keep.uid(1001), 1001);
        assert_eq!(keep.uid(42), 42);
        assert_eq!(keep.uid(0), 0);
        assert_eq!(keep.gid(1002), 1002);
    }

    #[test]
    fn entry_owner_keys_fit_xattr_names() {
        let short = entry_owner_key(b"fifo").unwrap();
        assert_eq!(short.to_bytes(), b"user.sbox.owner.fifo");
        let a = entry_owner_key(&[b'a'; 255]).unwrap();
        let b = entry_owner_key(&[b'b'; 255]).unwrap();
        assert!(a.to_bytes().len() <= 255 && a != b);
        assert_eq!(entry_owner_key(&[b'c'; 239]).unwrap().to_bytes().len(), 255);
    }

    #[test]
    fn real_perm_keeps_server_access() {
        let ids = Ids::overlay((1001, 1002), (0, 0), None);
        let ovr = |uid, gid, mode| Override { uid, gid, mode };
        assert_eq!(real_perm(libc::S_IFREG, 0), 0o600);
        assert_eq!(real_perm(libc::S_IFDIR, 0o4000), 0o700);
        assert!(needs_override(libc::S_IFREG, &ovr(0, 0, 0o444), &ids));
        assert!(!needs_override(libc::S_IFREG, &ovr(0, 0, 0o644), &ids));
        assert!(needs_override(libc::S_IFDIR, &ovr(1001, 1002, 0o755), &ids));
        // With --map-user an upper file shows as the caller itself: root's
        // owner must be stored, the caller's need not.
        let keep = Ids::overlay((1001, 1002), (1001, 1002), None);
        assert!(needs_override(libc::S_IFDIR, &ovr(0, 0, 0o777), &keep));
        assert!(!needs_override(
            libc::S_IFDIR,
            &ovr(1001, 1002, 0o755),
            &keep
        ));
    }
}
