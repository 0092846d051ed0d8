//! The FUSE session: threads reading requests from an already mounted
//! `/dev/fuse` fd and answering them through `fuse_backend_rs::Server`.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::thread::JoinHandle;

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::{FuseBuf, FuseDevWriter, Reader};

use super::fs::OverlayFs;
use super::PassthroughConfig;
use super::{OverlayConfig, OverlayError};

/// Size of one request buffer: 1 MiB of data (max_write with MAX_PAGES)
/// plus one page for the headers.
const BUF_SIZE: usize = (1 << 20) + 4096;

/// The data string for mount(2) of type "fuse" made by init:
/// - `fd=N`: the /dev/fuse fd init opened;
/// - `rootmode=40000`: the root is a directory;
/// - `user_id=0,group_id=0`: the mount belongs to root of the sandbox's user
///   namespace (the caller);
/// - `allow_other`: every uid inside may use it, not only the mounter;
/// - `default_permissions`: the kernel checks permissions against the
///   presented owner and mode, the server does not.
pub fn mount_options(fd: RawFd) -> String {
    format!("fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions")
}

/// Counters of a running server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OverlayStats {
    /// Inodes the kernel holds references on (plus pinned parents).
    pub inodes: usize,
    /// Open file and directory handles.
    pub handles: usize,
    /// Hidden paths the sandbox asked for, with how often.
    pub hidden_refusals: Vec<(std::path::PathBuf, u32)>,
    /// The first regular files read, in order (absolute paths inside).
    pub first_reads: Vec<std::path::PathBuf>,
}

/// A running overlay server.
pub struct OverlayServer {
    threads: Vec<JoinHandle<Result<(), OverlayError>>>,
    /// The threads the first one started once the sandbox got busy.
    later: Handles,
    fs: Arc<OverlayFs>,
}

type Handles = Arc<std::sync::Mutex<Vec<JoinHandle<Result<(), OverlayError>>>>>;

/// Requests the first thread answers alone before it starts the others: a
/// short command is served by one thread (starting four costs more than it
/// gains on the few requests of `true`), real work by all.
const ALONE: u64 = 256;

impl std::fmt::Debug for OverlayServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverlayServer")
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl OverlayServer {
    /// Waits until every serving thread ended. The mount going away
    /// (ENODEV/EBADF on the channel) is a normal end.
    pub fn wait(self) -> Result<(), OverlayError> {
        let join = |t: JoinHandle<Result<(), OverlayError>>| match t.join() {
            Ok(r) => r,
            Err(_) => Err(OverlayError::Panicked),
        };
        let mut result = Ok(());
        // The first thread starts the others: once it has ended, no more
        // are added.
        for t in self.threads {
            let r = join(t);
            if result.is_ok() {
                result = r;
            }
        }
        let later = self
            .later
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        for t in later {
            let r = join(t);
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    /// Current counters (for diagnostics and tests).
    /// Gives the server the sandbox's /proc (an `O_PATH` directory fd
    /// opened once the command runs): see `OverlayFs::in_group`.
    pub fn set_procfs(&self, proc: OwnedFd) {
        let _ = self.fs.procfs.set(proc);
    }

    pub fn stats(&self) -> OverlayStats {
        OverlayStats {
            inodes: self.fs.inode_count(),
            handles: self.fs.handle_count(),
            hidden_refusals: self.fs.hidden_refusals(),
            first_reads: self.fs.first_reads(),
        }
    }
}

/// A new /dev/fuse fd attached to the same connection (its own request
/// queue reader), or a dup of the fd when cloning is not possible.
fn clone_channel(fd: &OwnedFd) -> io::Result<OwnedFd> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")
    {
        Ok(f) => match super::sys::fuse_clone_fd(f.as_fd(), fd.as_fd()) {
            Ok(_) => return Ok(OwnedFd::from(f)),
            Err(e) => log::debug!("overlay: FUSE_DEV_IOC_CLONE failed ({e}), sharing the fd"),
        },
        Err(e) => log::debug!("overlay: cannot open /dev/fuse ({e}), sharing the fd"),
    }
    fd.try_clone()
}

fn set_blocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_retain(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    if flags.contains(OFlag::O_NONBLOCK) {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    }
    Ok(())
}

fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// Starts serving `fuse_fd` (already mounted by init). Opens the layer fds
/// first, then spawns `cfg.threads` threads, each on its own cloned channel,
/// and returns at once. Makes the process non-dumpable and raises its soft
/// RLIMIT_NOFILE to the hard limit (open files inside hold one fd each here).
pub fn serve(fuse_fd: OwnedFd, cfg: OverlayConfig) -> Result<OverlayServer, OverlayError> {
    prepare(cfg)?.start(fuse_fd)
}

/// An overlay server made ready (layers opened, masks built, its first
/// thread started) before the mount exists, so that the kernel's first
/// request is answered as soon as the fd arrives: the mount's first users
/// wait for that answer.
pub struct Prepared {
    fs: Arc<OverlayFs>,
    first: JoinHandle<Result<(), OverlayError>>,
    fd_tx: std::sync::mpsc::SyncSender<OwnedFd>,
    later: Handles,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").finish_non_exhaustive()
    }
}

/// Starts serving `fuse_fd` as a passthrough mount of one host directory
/// (see `passthrough`), like [`serve`].
pub fn serve_passthrough(
    fuse_fd: OwnedFd,
    cfg: PassthroughConfig,
) -> Result<OverlayServer, OverlayError> {
    crate::sys::set_not_dumpable().map_err(|e| OverlayError::Dumpable(e.into()))?;
    raise_nofile();
    let fs = Arc::new(OverlayFs::new_passthrough(&cfg)?);
    start(fuse_fd, fs, cfg.threads)
}

/// The part of [`serve`] that needs no fd.
pub fn prepare(cfg: OverlayConfig) -> Result<Prepared, OverlayError> {
    crate::sys::set_not_dumpable().map_err(|e| OverlayError::Dumpable(e.into()))?;
    raise_nofile();
    prepared(
        Arc::new(OverlayFs::new(&cfg)?),
        cfg.threads,
        cfg.mount_points,
    )
}

impl Prepared {
    /// Starts serving the mounted `fuse_fd`.
    pub fn start(self, fuse_fd: OwnedFd) -> Result<OverlayServer, OverlayError> {
        if self.fd_tx.send(fuse_fd).is_err() {
            // The thread ended without its fd: its error says why.
            return Err(match self.first.join() {
                Ok(Err(e)) => e,
                _ => OverlayError::Panicked,
            });
        }
        Ok(OverlayServer {
            threads: vec![self.first],
            later: self.later,
            fs: self.fs,
        })
    }
}

fn start(
    fuse_fd: OwnedFd,
    fs: Arc<OverlayFs>,
    threads: usize,
) -> Result<OverlayServer, OverlayError> {
    prepared(fs, threads, Vec::new())?.start(fuse_fd)
}

/// Starts the first serving thread, waiting for its fd.
/// The server of `fs`, its first thread started and waiting for the fd;
/// meanwhile that thread makes the `mount_points` (before it serves: init
/// looks for them only after the mount).
fn prepared(
    fs: Arc<OverlayFs>,
    threads: usize,
    mount_points: Vec<std::path::PathBuf>,
) -> Result<Prepared, OverlayError> {
    let server = Arc::new(Server::new(fs.clone()));
    let scaffold = fs.clone();
    let later: Handles = Arc::default();
    let handles = later.clone();
    let (fd_tx, fd_rx) = std::sync::mpsc::sync_channel::<OwnedFd>(1);
    let first = std::thread::Builder::new()
        .name("sbox-fuse-0".into())
        .spawn(move || {
            for p in &mount_points {
                scaffold.make_mount_point(p);
            }
            drop(scaffold);
            // Dropped unstarted: nothing to serve.
            let Ok(fuse_fd) = fd_rx.recv() else {
                return Ok(());
            };
            set_blocking(&fuse_fd).map_err(OverlayError::Channel)?;
            let more = match threads.max(1) - 1 {
                0 => None,
                n => Some(More {
                    n,
                    fd: fuse_fd.try_clone().map_err(OverlayError::Channel)?,
                    handles,
                }),
            };
            serve_channel(&server, fuse_fd, more)
        })
        .map_err(OverlayError::Spawn)?;
    Ok(Prepared {
        fs,
        first,
        fd_tx,
        later,
    })
}

/// The serving threads still to start, and where their handles go.
struct More {
    n: usize,
    fd: OwnedFd,
    handles: Handles,
}

impl More {
    /// Start the other threads, each on a channel of its own. A failure
    /// leaves the sandbox served by fewer threads.
    fn start(self, server: &Arc<Server<Arc<OverlayFs>>>) {
        for i in 1..=self.n {
            let Ok(fd) = clone_channel(&self.fd) else {
                log::warn!("overlay: cannot clone the FUSE channel for another thread");
                return;
            };
            let server = server.clone();
            let t = std::thread::Builder::new()
                .name(format!("sbox-fuse-{i}"))
                .spawn(move || serve_channel(&server, fd, None));
            match (t, self.handles.lock()) {
                (Ok(t), Ok(mut v)) => v.push(t),
                _ => return,
            }
        }
    }
}

/// One serving thread: read a request, answer it, until the mount goes away
/// (the first one starts the others after `ALONE` requests).
fn serve_channel(
    server: &Arc<Server<Arc<OverlayFs>>>,
    fd: OwnedFd,
    mut more: Option<More>,
) -> Result<(), OverlayError> {
    let mut rbuf = vec![0u8; BUF_SIZE];
    let mut wbuf = vec![0u8; BUF_SIZE];
    let raw = fd.as_raw_fd();
    let mut served: u64 = 0;
    loop {
        served += 1;
        if served == ALONE {
            if let Some(m) = more.take() {
                m.start(server);
            }
        }
        let n = match super::sys::read(fd.as_fd(), &mut rbuf) {
            Ok(n) => n,
            Err(e) => match e.raw_os_error() {
                // Interrupted request, signal, or spurious wake-up.
                Some(libc::ENOENT) | Some(libc::EINTR) | Some(libc::EAGAIN) => continue,
                // The mount went away.
                Some(libc::ENODEV) | Some(libc::EBADF) => return Ok(()),
                _ => return Err(OverlayError::Read(e)),
            },
        };
        if n == 0 {
            return Ok(());
        }
        let reader = match Reader::<()>::from_fuse_buffer(FuseBuf::new(&mut rbuf[..n])) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("overlay: bad FUSE request buffer: {e}");
                continue;
            }
        };
        let writer = match FuseDevWriter::<()>::new(raw, &mut wbuf) {
            Ok(w) => w,
            Err(e) => {
                log::warn!("overlay: cannot build FUSE reply writer: {e}");
                continue;
            }
        };
        if let Err(e) = server.handle_message(reader, writer.into(), None, None) {
            // A reply to an interrupted request fails with ENOENT: harmless.
            log::debug!("overlay: FUSE request failed: {e}");
        }
    }
}
