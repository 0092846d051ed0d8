//! The caller's side of a running command, one loop for the launcher and
//! `sbox exec`: the terminal (a pty master of the sandbox, the caller's
//! terminal in raw mode) or the standard streams (the pipes of
//! [`Relay`]), and the signals sbox receives, until the other side — the
//! [`Peer`] — says the command has ended.

use super::pty;
use super::relay::{Relay, Slot};
use crate::error::{Error, NixContext, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Instant;

/// What the loop relays with: the launcher (init is its child) or
/// `sbox exec` (init is at the other end of a connection).
pub trait Peer {
    /// What the loop returns once the command has ended.
    type Output;
    /// Descriptors of the peer's own to watch for input.
    fn watched(&self) -> Vec<BorrowedFd<'_>>;
    /// When [`Peer::on_wake`] must run at the latest.
    fn deadline(&self) -> Option<Instant> {
        None
    }
    /// Called first on every wake-up of the loop.
    fn on_wake(&mut self) {}
    /// sbox received `sig` (one of the signals the loop was given).
    fn on_signal(&mut self, sig: Signal, master: Option<&OwnedFd>);
    /// `watched()[i]` is ready; the output once the command has ended.
    fn on_ready(&mut self, i: usize, buf: &mut [u8]) -> Result<Option<Self::Output>>;
    /// The signals that came are handled; the output once the command has
    /// ended.
    fn after_signals(&mut self) -> Result<Option<Self::Output>> {
        Ok(None)
    }
    /// The command ended and the terminal and pipes are drained: copy
    /// what is left of the peer's own.
    fn drain(&mut self, _buf: &mut [u8]) {}
}

/// Relay until `peer` says the command has ended. `signals` are blocked
/// by the caller; with `tty` and a `master`, the caller's terminal is in
/// raw mode meanwhile.
pub fn run<P: Peer>(
    signals: &SigSet,
    master: Option<OwnedFd>,
    tty: bool,
    mut pipes: Option<Relay>,
    peer: &mut P,
) -> Result<P::Output> {
    let sfd = SignalFd::with_flags(signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .ctx(|| "signalfd".into())?;
    let (stdin_handle, stdout_handle) = (std::io::stdin(), std::io::stdout());
    let (stdin, stdout) = (stdin_handle.as_fd(), stdout_handle.as_fd());
    let _raw = match (&master, tty) {
        (Some(m), true) => {
            pty::copy_winsize(0, m.as_raw_fd());
            pty::RawMode::enter(stdin)
        }
        _ => None,
    };
    let mut stdin_open = master.is_some();
    let mut master_open = master.is_some();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let (mut im, mut is) = (None, None);
        if let (Some(m), true) = (&master, master_open) {
            im = Some(fds.len());
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
        }
        if stdin_open {
            is = Some(fds.len());
            fds.push(PollFd::new(stdin, PollFlags::POLLIN));
        }
        let first_pipe = fds.len();
        let slots: Vec<Slot> = match &pipes {
            Some(p) => p
                .interests(stdin)
                .into_iter()
                .map(|(fd, events, slot)| {
                    fds.push(PollFd::new(fd, events));
                    slot
                })
                .collect(),
            None => Vec::new(),
        };
        let first_peer = fds.len();
        let watched = peer.watched();
        let n_peer = watched.len();
        for fd in watched {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        let timeout = match peer.deadline() {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left.as_millis().min(60_000) as i32 + 1)
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("poll", e)),
        }
        let ready = |i: Option<usize>| {
            i.and_then(|i| fds[i].revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (s_ready, m_ready, i_ready) = (ready(Some(0)), ready(im), ready(is));
        let pipes_ready: Vec<Slot> = slots
            .iter()
            .enumerate()
            .filter(|(i, _)| ready(Some(first_pipe + i)))
            .map(|(_, s)| *s)
            .collect();
        let peer_ready: Vec<usize> = (0..n_peer)
            .filter(|i| ready(Some(first_peer + i)))
            .collect();
        drop(fds);
        peer.on_wake();
        if let Some(p) = &mut pipes {
            for slot in pipes_ready {
                p.on_ready(slot, &mut buf);
            }
        }
        if let (true, Some(m)) = (m_ready, &master) {
            master_open = pty::pump_master(m, stdout, &mut buf);
        }
        if let (true, Some(m)) = (i_ready, &master) {
            stdin_open = pty::pump_stdin(m, &mut buf);
        }
        if s_ready {
            while let Ok(Some(info)) = sfd.read_signal() {
                if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                    peer.on_signal(sig, master.as_ref());
                }
            }
        }
        let mut ended = None;
        for i in peer_ready {
            ended = peer.on_ready(i, &mut buf)?;
            if ended.is_some() {
                break;
            }
        }
        if ended.is_none() && s_ready {
            ended = peer.after_signals()?;
        }
        if let Some(out) = ended {
            if let Some(m) = &master {
                pty::drain(m, stdout, &mut buf);
            }
            if let Some(p) = &mut pipes {
                p.drain(&mut buf);
            }
            peer.drain(&mut buf);
            return Ok(out);
        }
    }
}
