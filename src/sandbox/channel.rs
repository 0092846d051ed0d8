//! Typed messages between the launcher and init over a SOCK_SEQPACKET
//! socket pair, with an optional file descriptor attached.

use crate::error::{NixContext, Result};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// What the launcher and init tell each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// launcher → init: the id maps are written; go on.
    MapsWritten,
    /// init → launcher: the root is assembled and the command started; a
    /// pty master is attached when the sandbox has a terminal.
    Ready { pty: bool },
    /// payload → init: the seccomp notification listener is attached
    /// (--log-denials).
    SeccompListener,
}

/// One end of the channel.
#[derive(Debug)]
pub struct Channel(OwnedFd);

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
        let mut buf = [0u8; 1024];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let (n, fd) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let r = loop {
                match recvmsg::<()>(
                    self.0.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                ) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    r => break r,
                }
            }
            .ctx(|| "receiving on the launcher/init channel".into())?;
            let mut fd = None;
            if let Ok(cmsgs) = r.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        for f in fds {
                            // SAFETY: SCM_RIGHTS gave us a new descriptor
                            // that nothing else owns.
                            let owned = unsafe { OwnedFd::from_raw_fd(f) };
                            if fd.is_none() {
                                fd = Some(owned);
                            }
                        }
                    }
                }
            }
            (r.bytes, fd)
        };
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
