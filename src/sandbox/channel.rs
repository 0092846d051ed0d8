//! Typed messages between the launcher and init over a SOCK_SEQPACKET
//! socket pair, with an optional file descriptor attached.

use crate::error::{NixContext, Result};
use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use serde::{Deserialize, Serialize};
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

/// The address of the unix socket at `path`. A path longer than an address
/// holds (108 bytes) is reached through its directory, opened here and kept
/// open by the caller while it binds or connects: `/proc/self/fd/N/NAME`.
fn socket_addr(path: &std::path::Path) -> Result<(nix::sys::socket::UnixAddr, Option<OwnedFd>)> {
    use nix::sys::socket::UnixAddr;
    match UnixAddr::new(path) {
        Err(nix::errno::Errno::ENAMETOOLONG) => {}
        r => return Ok((r.ctx(|| format!("address {}", path.display()))?, None)),
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(crate::error::Error::path(path, "not a socket path"));
    };
    let dir: OwnedFd = std::os::unix::fs::OpenOptionsExt::custom_flags(
        std::fs::OpenOptions::new().read(true),
        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
    )
    .open(dir)
    .map_err(|e| crate::error::Error::io(format!("opening {}", dir.display()), e))?
    .into();
    let short = std::path::Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    let addr = UnixAddr::new(&short).ctx(|| format!("address {}", path.display()))?;
    Ok((addr, Some(dir)))
}

/// What the launcher and init tell each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// launcher → init: the id maps are written; go on.
    MapsWritten,
    /// init → launcher: the root is assembled and the command started; a
    /// pty master is attached when the sandbox has a terminal.
    Ready { pty: bool },
    /// init → launcher: the /dev/fuse descriptor of the mounted root is
    /// attached; serve it.
    FuseFd,
    /// init → launcher: the /dev/fuse descriptor of the passthrough mount
    /// of plan step `step` (a `Step::FuseBind`) is attached; serve it.
    FuseBindFd { step: usize },
    /// payload → init: the seccomp notification listener is attached.
    SeccompListener,
    /// init → launcher, as the sandbox ends: how many operations init saw
    /// refused (seccomp; with --log-denials also Landlock and the network),
    /// and the report lines (each saying what would allow it).
    Refused { total: u32, report: Vec<String> },
    /// `sbox exec` → init: run a command in the sandbox. Without `tty`,
    /// its stdin, stdout and stderr are attached: pipes (and /dev/null)
    /// that `sbox exec` relays, never the caller's own descriptors.
    Exec {
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cwd: Option<std::path::PathBuf>,
        tty: bool,
    },
    /// init → `sbox exec`: started (the pty master attached with `tty`).
    ExecStarted { pid: i32 },
    /// init → `sbox exec`: could not start it.
    ExecFailed { error: String },
    /// init → `sbox exec`: the command ended with this status.
    ExecExited { code: u8 },
    /// init → `sbox exec`: the sandbox ran out of time (--timeout) and
    /// is being stopped.
    TimedOut { millis: u64 },
    /// init → `sbox exec`: the command was the last session of a sandbox
    /// that lives while its sessions do; the sandbox ends now.
    Ending,
    /// `sbox exec` → init: deliver this signal to the command.
    Signal { signo: i32 },
    /// `sbox shell` joining → init: hang up the command's session (SIGHUP
    /// to it and its process group, SIGKILL after the grace period).
    Hangup,
    /// `sbox exec` → init: the caller's terminal changed size.
    Resize { rows: u16, cols: u16 },
}

/// One end of the channel.
#[derive(Debug)]
pub struct Channel(OwnedFd);

impl std::os::fd::AsFd for Channel {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Channel {
    /// A connected pair, close-on-exec.
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .ctx(|| "creating the launcher/init channel".into())?;
        Ok((Channel(a), Channel(b)))
    }

    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Wrap a connected SOCK_SEQPACKET socket.
    pub fn from_fd(fd: OwnedFd) -> Self {
        Channel(fd)
    }

    /// Connect to a listening channel socket at `path`.
    pub fn connect(path: &std::path::Path) -> Result<Channel> {
        use nix::sys::socket::{connect, socket};
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .ctx(|| "socket".into())?;
        let (addr, _dir) = socket_addr(path)?;
        connect(fd.as_raw_fd(), &addr).ctx(|| format!("connecting to {}", path.display()))?;
        Ok(Channel(fd))
    }

    /// A listening channel socket at `path`, mode 0600.
    pub fn listen(path: &std::path::Path) -> Result<OwnedFd> {
        use nix::sys::socket::{bind, listen, socket, Backlog};
        use std::os::unix::fs::PermissionsExt;
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .ctx(|| "socket".into())?;
        let (addr, _dir) = socket_addr(path)?;
        bind(fd.as_raw_fd(), &addr).ctx(|| format!("binding {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| crate::error::Error::io(format!("chmod {}", path.display()), e))?;
        listen(&fd, Backlog::new(16).unwrap_or(Backlog::MAXCONN))
            .ctx(|| format!("listening on {}", path.display()))?;
        Ok(fd)
    }

    /// Accept one connection on a listening socket.
    pub fn accept(listener: &OwnedFd) -> Result<Channel> {
        let fd = crate::sys::accept(listener.as_fd()).ctx(|| "accept".into())?;
        Ok(Channel(fd))
    }

    /// Send with up to three descriptors attached.
    pub fn send_fds(&self, msg: &Msg, fds: &[RawFd]) -> Result<()> {
        let bytes =
            serde_json::to_vec(msg).map_err(|e| crate::error::Error::Host(e.to_string()))?;
        let iov = [IoSlice::new(&bytes)];
        let cmsgs = if fds.is_empty() {
            vec![]
        } else {
            vec![ControlMessage::ScmRights(fds)]
        };
        sendmsg::<()>(
            self.0.as_raw_fd(),
            &iov,
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .ctx(|| "sending on a control channel".into())
        .map(drop)
    }

    /// Send one message, with `fd` attached when given.
    pub fn send(&self, msg: &Msg, fd: Option<RawFd>) -> Result<()> {
        let bytes =
            serde_json::to_vec(msg).map_err(|e| crate::error::Error::Host(e.to_string()))?;
        let iov = [IoSlice::new(&bytes)];
        let fds = fd.map(|f| [f]);
        let cmsgs: Vec<ControlMessage> = fds
            .as_ref()
            .map(|f| vec![ControlMessage::ScmRights(f)])
            .unwrap_or_default();
        sendmsg::<()>(
            self.0.as_raw_fd(),
            &iov,
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .ctx(|| "sending on the launcher/init channel".into())
        .map(drop)
    }

    /// Receive one message; `None` when the other end has closed.
    pub fn recv(&self) -> Result<Option<(Msg, Option<OwnedFd>)>> {
        let (msg, mut fds) = match self.recv_fds()? {
            Some(x) => x,
            None => return Ok(None),
        };
        let first = if fds.is_empty() {
            None
        } else {
            Some(fds.remove(0))
        };
        Ok(Some((msg, first)))
    }

    /// Receive one message with every descriptor attached to it.
    pub fn recv_fds(&self) -> Result<Option<(Msg, Vec<OwnedFd>)>> {
        let mut buf = vec![0u8; 256 * 1024];
        let (n, fd) = loop {
            match crate::sys::recv_with_fds(self.0.as_fd(), &mut buf) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => break r,
            }
        }
        .ctx(|| "receiving on the launcher/init channel".into())?;
        if n == 0 {
            return Ok(None);
        }
        let msg = serde_json::from_slice(&buf[..n])
            .map_err(|e| crate::error::Error::Host(format!("bad message on the channel: {e}")))?;
        Ok(Some((msg, fd)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_fds_cross() {
        let (a, b) = Channel::pair().expect("pair");
        let f = std::fs::File::open("/dev/null").expect("null");
        a.send(&Msg::Ready { pty: true }, Some(f.as_raw_fd()))
            .expect("send");
        let (m, fd) = b.recv().expect("recv").expect("msg");
        assert_eq!(m, Msg::Ready { pty: true });
        assert!(fd.is_some());
        a.send(&Msg::MapsWritten, None).expect("send");
        assert_eq!(b.recv().expect("recv").map(|x| x.0), Some(Msg::MapsWritten));
        drop(a);
        assert!(b.recv().expect("eof").is_none());
    }
}
