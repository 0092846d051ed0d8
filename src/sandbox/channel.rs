//! Typed messages between the launcher and init over a SOCK_SEQPACKET
//! socket pair, with an optional file descriptor attached.

use crate::error::{NixContext, Result};
use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use serde::Serialize;
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

/// The messages of one conversation over a channel: a serde enum whose
/// variant names are the wire tags. Declared with `conversation!`, which
/// lists the kinds for the error of an unexpected message.
pub trait Message: Serialize + serde::de::DeserializeOwned {
    /// The conversation, for errors: "init's messages to the launcher".
    const WHAT: &'static str;
    /// Every kind of message of the conversation.
    const KINDS: &'static [&'static str];
    /// This message's kind.
    fn kind(&self) -> &'static str;

    /// The error for this message where the receiver expected `expected`.
    fn unexpected(&self, expected: &str) -> Unexpected {
        Unexpected {
            what: Self::WHAT,
            expected: expected.to_string(),
            got: self.kind().to_string(),
        }
    }
}

/// Declare the message type of a conversation (see [`Message`]).
macro_rules! conversation {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $(
                $(#[$vmeta:meta])*
                $variant:ident $({ $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? })?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $(
                $(#[$vmeta])*
                $variant $({ $($(#[$fmeta])* $field: $ty),* })?
            ),*
        }

        impl $crate::sandbox::channel::Message for $name {
            const WHAT: &'static str = $what;
            const KINDS: &'static [&'static str] = &[$(stringify!($variant)),*];
            fn kind(&self) -> &'static str {
                match self {
                    $(Self::$variant { .. } => stringify!($variant)),*
                }
            }
        }
    };
}
pub(crate) use conversation;

/// A message the receiver did not expect: its conversation, what was
/// expected and what came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: expected {expected}, got {got}")]
pub struct Unexpected {
    pub what: &'static str,
    pub expected: String,
    pub got: String,
}

/// "A", "A or B", "A, B or C".
fn one_of(kinds: &[&str]) -> String {
    match kinds {
        [] => "nothing".into(),
        [one] => (*one).into(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

impl Unexpected {
    /// `bytes` came where a message of `M` was expected (any of its kinds).
    fn of<M: Message>(bytes: &[u8]) -> Self {
        let got = match serde_json::from_slice::<serde_json::Value>(bytes) {
            // A unit variant is its name; any other, an object keyed by it.
            Ok(serde_json::Value::String(s)) => s,
            Ok(serde_json::Value::Object(o)) if o.len() == 1 => {
                o.keys().next().cloned().unwrap_or_default()
            }
            _ => "an unreadable message".into(),
        };
        let got = if M::KINDS.contains(&got.as_str()) {
            // A known kind with fields that do not fit.
            format!("a malformed {got}")
        } else {
            got
        };
        Unexpected {
            what: M::WHAT,
            expected: one_of(M::KINDS),
            got,
        }
    }
}

/// Why a receive failed: the channel itself, or a message that is not
/// what was expected.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    #[error(transparent)]
    Channel(#[from] crate::error::Error),
    #[error(transparent)]
    Unexpected(#[from] Unexpected),
}

impl From<RecvError> for crate::error::Error {
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Channel(e) => e,
            RecvError::Unexpected(u) => crate::error::Error::Host(u.to_string()),
        }
    }
}

impl From<Unexpected> for crate::error::Error {
    fn from(u: Unexpected) -> Self {
        crate::error::Error::Host(u.to_string())
    }
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
    pub fn send_fds<M: Message>(&self, msg: &M, fds: &[RawFd]) -> Result<()> {
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
    pub fn send<M: Message>(&self, msg: &M, fd: Option<RawFd>) -> Result<()> {
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

    /// Receive one message of `M`; `None` when the other end has closed.
    pub fn recv<M: Message>(&self) -> Result<Option<(M, Option<OwnedFd>)>, RecvError> {
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
    pub fn recv_fds<M: Message>(&self) -> Result<Option<(M, Vec<OwnedFd>)>, RecvError> {
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
        let msg = serde_json::from_slice(&buf[..n]).map_err(|_| Unexpected::of::<M>(&buf[..n]))?;
        Ok(Some((msg, fd)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::messages::{FromInit, ToInit};

    #[test]
    fn messages_and_fds_cross() {
        let (a, b) = Channel::pair().expect("pair");
        let f = std::fs::File::open("/dev/null").expect("null");
        a.send(&FromInit::Ready { pty: true }, Some(f.as_raw_fd()))
            .expect("send");
        let (m, fd) = b.recv::<FromInit>().expect("recv").expect("msg");
        assert_eq!(m, FromInit::Ready { pty: true });
        assert!(fd.is_some());
        a.send(&ToInit::MapsWritten, None).expect("send");
        assert_eq!(
            b.recv().expect("recv").map(|x| x.0),
            Some(ToInit::MapsWritten)
        );
        drop(a);
        assert!(b.recv::<ToInit>().expect("eof").is_none());
    }
}
