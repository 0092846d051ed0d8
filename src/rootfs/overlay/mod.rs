//! FUSE overlay filesystem: the sandbox's root filesystem.
//!
//! The **launcher** (host namespaces, unprivileged) serves a `/dev/fuse` fd
//! that **init** opened and mounted with [`mount_options`] inside the
//! sandbox's user and mount namespaces. The server sees the host view: the
//! lower layer (normally `/`, read-only) and the upper/work directories.
//! It never touches its own mount.
//!
//! Layout of the upper directory: kernel overlayfs `userxattr` style
//! (whiteouts are 0/0 character devices or `user.overlay.whiteout` files,
//! opaque directories carry `user.overlay.opaque="y"`), owner and mode set
//! inside live in `user.containers.override_stat`; read and written through
//! `crate::rootfs::upper`, which `sbox diff` and `sbox commit` read too.
//!
//! Design choices and limits:
//! - no fd is kept per inode: nodes keep (parent, name) links and paths are
//!   reopened beneath the layer root fds with `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS)`; the table follows FORGET, so fds stay bounded
//!   (layer roots, a bounded cache of files for I/O, files that lost their
//!   last name while the kernel holds them) and memory follows the
//!   kernel's dentry cache;
//! - files are not opened through the server: OPEN gets ENOSYS, so the
//!   kernel opens files without a round trip and keeps their pages, and
//!   I/O arrives without a handle (see `iofd`); a file is copied up at its
//!   first write, not when it is opened for writing;
//! - renaming a directory that has lower content copies its whole tree up
//!   and makes it opaque (no redirects); a directory holding masked paths
//!   cannot be renamed (EXDEV, so `mv` copies through the view);
//! - copy-up breaks hard links that exist in the lower layer (like
//!   overlayfs without `index`); links made inside are real upper links;
//! - symlinks, fifos and sockets carry no user xattrs: their owner, when it
//!   is not the caller, is kept on their upper directory
//!   (`user.sbox.owner.NAME`), and moves with the name;
//! - paths deeper than the kernel takes in one lookup are opened in pieces
//!   (see `sys::open_beneath`);
//! - a file that was never written inside and is written after its last
//!   name went away (open, unlink, then write) gets EBADF;
//! - the server reads the host as the caller: a host file the caller cannot
//!   read (`/etc/shadow`) cannot be read inside either, and when it is
//!   written inside its copy starts empty (so `useradd` works); a lower
//!   directory the caller cannot read or search (`_apt`'s 0700
//!   `partial/`) lists as empty and its copy-up is a new, empty directory
//!   (so apt, running as `_apt` inside, can fill it);
//! - POSIX/flock locks are left to the kernel (local to the mount);
//! - O_TMPFILE is not supported (EOPNOTSUPP from the kernel).
//!
//! The same code serves binds that hold hidden paths as *passthrough*
//! mounts of the host directory (see `passthrough`).

mod copyup;
mod fs;
mod inode;
mod iofd;
mod layer;
mod passthrough;
mod server;
#[allow(unsafe_code)] // the overlay's own raw file-system calls
pub(crate) mod sys;
mod whiteout;

use std::path::PathBuf;
use std::time::Duration;

pub use crate::rootfs::upper::IdMap;
pub use server::{
    mount_options, prepare, serve, serve_passthrough, OverlayServer, OverlayStats, Prepared,
};

/// What the overlay serves.
#[derive(Clone, Debug)]
pub struct OverlayConfig {
    /// Host directory seen read-only, normally "/".
    pub lower: PathBuf,
    /// Writable upper directory on the host (exists, owned by the caller).
    pub upper: PathBuf,
    /// Staging directory on the same filesystem as `upper`.
    pub work: PathBuf,
    /// Absolute paths (inside the view) that do not exist and cannot be created.
    pub hidden: Vec<PathBuf>,
    /// Absolute paths (inside the view) shown as empty read-only directories.
    pub empty: Vec<PathBuf>,
    /// Hidden paths already resolved by the host (path → canonical form;
    /// `Policy::hidden_canonical`), when `lower` is "/"; the others are
    /// resolved here.
    pub canonical: std::collections::HashMap<PathBuf, PathBuf>,
    /// Host uid of the caller (shown as 0 inside).
    pub caller_uid: u32,
    /// Host gid of the caller (shown as 0 inside).
    pub caller_gid: u32,
    /// The caller's ids inside the sandbox: (0, 0) normally, the caller's
    /// own with --map-user. The caller's host files are shown as theirs.
    pub caller_inside: (u32, u32),
    /// The sandbox's uid/gid maps: a host id that is also an id inside
    /// (`_apt`, `man`...) shows as that number; None: only host root does.
    pub id_maps: Option<IdMap>,
    /// Serving threads (at least 1).
    pub threads: usize,
    /// How long the kernel may cache attributes.
    pub attr_timeout: Duration,
    /// How long the kernel may cache name lookups.
    pub entry_timeout: Duration,
    /// Directories init will mount on that the view may lack (the project
    /// and the binds of an image root): made before the mount.
    pub mount_points: Vec<PathBuf>,
}

/// What a passthrough mount serves.
#[derive(Clone, Debug)]
pub struct PassthroughConfig {
    /// The host directory (changed in place).
    pub dir: PathBuf,
    /// Refuse every change (the mount is read-only too).
    pub readonly: bool,
    /// Absolute paths inside the mount ("/" is `dir`) that do not exist
    /// and cannot be created.
    pub hidden: Vec<PathBuf>,
    /// Absolute paths inside the mount shown as empty read-only directories.
    pub empty: Vec<PathBuf>,
    /// Host uid and gid of the caller.
    pub caller_uid: u32,
    pub caller_gid: u32,
    /// The caller's ids inside the sandbox.
    pub caller_inside: (u32, u32),
    /// The sandbox's id maps, to present host owners.
    pub ids: IdMap,
    /// Serving threads (at least 1).
    pub threads: usize,
    /// How long the kernel may cache names and attributes (zero: a bind
    /// shows host changes at once).
    pub timeout: Duration,
}

/// Errors of the overlay server.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("cannot open the overlay {what} directory {path}: {source}")]
    OpenLayer {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the overlay upper dir {upper} and work dir {work} must be on the same filesystem")]
    CrossDevice { upper: PathBuf, work: PathBuf },
    #[error("invalid overlay path {0}: must be absolute and normalised")]
    InvalidPath(PathBuf),
    #[error("cannot make the overlay server non-dumpable: {0}")]
    Dumpable(#[source] std::io::Error),
    #[error("cannot set up a FUSE channel: {0}")]
    Channel(#[source] std::io::Error),
    #[error("cannot start a FUSE serving thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("reading the FUSE device failed: {0}")]
    Read(#[source] std::io::Error),
    #[error("a FUSE serving thread panicked")]
    Panicked,
}
