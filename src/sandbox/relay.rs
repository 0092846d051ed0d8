//! `sbox exec` without a terminal: the command's standard streams are pipes
//! owned by sbox, relayed to and from sbox's own, like `docker exec -i`. The
//! caller's descriptors (a terminal above all) never enter the sandbox, so
//! nothing the command leaves behind can read what the user types later at
//! the host shell or print on the host terminal once sbox has returned.

use crate::error::{Error, NixContext, Result};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::PollFlags;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// The most read from one output after the command ended: its data is all
/// in the pipe by then (at most the pipe's size); what a process it left
/// behind goes on writing is not waited for.
const DRAIN_CAP: usize = 4 << 20;

/// The command's ends of the pipes, to hand to init.
pub struct Theirs(pub [OwnedFd; 3]);

impl Theirs {
    pub fn raw(&self) -> [std::os::fd::RawFd; 3] {
        [
            self.0[0].as_raw_fd(),
            self.0[1].as_raw_fd(),
            self.0[2].as_raw_fd(),
        ]
    }
}

/// Which of the relay's descriptors is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// sbox's own stdin has input.
    Input,
    /// The command's stdin pipe can take more, or its reader is gone.
    ToCommand,
    /// The command wrote on its stdout (0) or stderr (1).
    Output(usize),
}

/// sbox's ends of the pipes and what is in flight.
pub struct Relay {
    /// The write end of the command's stdin (with -i, until its end).
    to_command: Option<OwnedFd>,
    /// Read from sbox's stdin, not yet taken by the command.
    pending: Vec<u8>,
    /// sbox's stdin is still read.
    reading: bool,
    /// The read ends of the command's stdout and stderr.
    outputs: [Option<OwnedFd>; 2],
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).ctx(|| "pipe".into())
}

fn nonblocking(fd: &OwnedFd) -> Result<()> {
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).ctx(|| "fcntl".into())?;
    Ok(())
}

impl Relay {
    /// New pipes for a command; its stdin is a pipe from sbox's stdin with
    /// `interactive`, else /dev/null.
    pub fn new(interactive: bool) -> Result<(Relay, Theirs)> {
        let (stdin, to_command) = if interactive {
            let (r, w) = pipe()?;
            nonblocking(&w)?;
            (r, Some(w))
        } else {
            let null = std::fs::File::open("/dev/null").map_err(|e| Error::io("/dev/null", e))?;
            (OwnedFd::from(null), None)
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        nonblocking(&out_r)?;
        nonblocking(&err_r)?;
        Ok((
            Relay {
                reading: to_command.is_some(),
                to_command,
                pending: Vec::new(),
                outputs: [Some(out_r), Some(err_r)],
            },
            Theirs([stdin, out_w, err_w]),
        ))
    }

    /// The descriptors to poll, with the events wanted and their slots.
    /// The command's stdin pipe is always watched (for its reader going
    /// away: then sbox stops reading the user's input), for room only while
    /// input is waiting.
    pub fn interests<'a>(
        &'a self,
        stdin: BorrowedFd<'a>,
    ) -> Vec<(BorrowedFd<'a>, PollFlags, Slot)> {
        let mut v = Vec::new();
        if let Some(w) = &self.to_command {
            if self.pending.is_empty() {
                if self.reading {
                    v.push((stdin, PollFlags::POLLIN, Slot::Input));
                }
                v.push((w.as_fd(), PollFlags::empty(), Slot::ToCommand));
            } else {
                v.push((w.as_fd(), PollFlags::POLLOUT, Slot::ToCommand));
            }
        }
        for (i, o) in self.outputs.iter().enumerate() {
            if let Some(o) = o {
                v.push((o.as_fd(), PollFlags::POLLIN, Slot::Output(i)));
            }
        }
        v
    }

    /// Move what `slot` has to move.
    pub fn on_ready(&mut self, slot: Slot, buf: &mut [u8]) {
        match slot {
            Slot::Input => self.read_input(buf),
            Slot::ToCommand => self.flush(),
            Slot::Output(i) => self.pump_output(i, buf, false),
        }
    }

    fn read_input(&mut self, buf: &mut [u8]) {
        match nix::unistd::read(0, buf) {
            Ok(0) => self.reading = false,
            Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => self.reading = false,
        }
        self.flush();
    }

    /// Give the command what it can take of the pending input; close its
    /// stdin after sbox's ended, or stop when the command closed its own.
    fn flush(&mut self) {
        let Some(w) = &self.to_command else { return };
        while !self.pending.is_empty() {
            match nix::unistd::write(w, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(_) => {
                    self.stop_input();
                    return;
                }
            }
        }
        if !self.reading {
            self.to_command = None;
            return;
        }
        // Nothing pending: is anybody still reading the pipe?
        let mut p = [nix::poll::PollFd::new(w.as_fd(), PollFlags::empty())];
        let gone = nix::poll::poll(&mut p, nix::poll::PollTimeout::ZERO).is_ok_and(|n| n > 0)
            && p[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP));
        if gone {
            self.stop_input();
        }
    }

    fn stop_input(&mut self) {
        self.to_command = None;
        self.pending.clear();
        self.reading = false;
    }

    /// Copy the command's output `i` to sbox's own (fd 1 or 2): one read,
    /// or with `drain` all there is (up to DRAIN_CAP). At its end, or when
    /// sbox's own output is closed (the command then gets SIGPIPE, as it
    /// would outside), the pipe is closed.
    fn pump_output(&mut self, i: usize, buf: &mut [u8], drain: bool) {
        let Some(r) = &self.outputs[i] else { return };
        let mut moved = 0;
        while moved < DRAIN_CAP {
            match nix::unistd::read(r.as_raw_fd(), buf) {
                Ok(0) => {
                    self.outputs[i] = None;
                    break;
                }
                Ok(n) => {
                    moved += n;
                    // fds 1 and 2 are this process's standard output and
                    // error, open for its whole life.
                    let out = crate::sys::inherited_fd(i as i32 + 1);
                    if super::pty::write_all(out, &buf[..n]).is_err() {
                        self.outputs[i] = None;
                        break;
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(_) => {
                    self.outputs[i] = None;
                    break;
                }
            }
            if !drain {
                // One read per wake-up of the loop: the other streams get
                // their turn.
                break;
            }
        }
    }

    /// The command ended: copy what it wrote that is still in the pipes.
    pub fn drain(&mut self, buf: &mut [u8]) {
        for i in 0..2 {
            self.pump_output(i, buf, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_interactive_stdin_is_dev_null_and_never_read() {
        let (relay, theirs) = Relay::new(false).expect("relay");
        let target = std::fs::read_link(format!("/proc/self/fd/{}", theirs.0[0].as_raw_fd()))
            .expect("readlink");
        assert_eq!(target, std::path::Path::new("/dev/null"));
        let stdin = std::io::stdin();
        let slots: Vec<Slot> = relay
            .interests(stdin.as_fd())
            .into_iter()
            .map(|(_, _, s)| s)
            .collect();
        assert_eq!(slots, vec![Slot::Output(0), Slot::Output(1)]);
    }

    #[test]
    fn input_waits_while_the_pipe_is_full_and_stops_when_its_reader_goes() {
        let (mut relay, theirs) = Relay::new(true).expect("relay");
        relay.pending = vec![7u8; 1 << 20];
        relay.flush();
        // A pipe holds 64 KiB by default: the rest waits, and sbox's stdin
        // is not read meanwhile.
        assert!(!relay.pending.is_empty());
        let stdin = std::io::stdin();
        let wanted: Vec<(PollFlags, Slot)> = relay
            .interests(stdin.as_fd())
            .into_iter()
            .map(|(_, f, s)| (f, s))
            .collect();
        assert_eq!(wanted[0], (PollFlags::POLLOUT, Slot::ToCommand));
        assert!(!wanted.iter().any(|(_, s)| *s == Slot::Input));
        let Theirs([r, ..]) = theirs;
        drop(r);
        relay.on_ready(Slot::ToCommand, &mut []);
        assert!(relay.to_command.is_none() && relay.pending.is_empty() && !relay.reading);
    }
}
