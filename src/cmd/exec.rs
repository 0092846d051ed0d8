//! `sbox exec NAME -- CMD`: a command in a running named sandbox.
//!
//! The sandbox's init starts the command as one more payload — the same
//! root view, Landlock rules, seccomp filter, capabilities, environment
//! policy and pid namespace as the sandbox's own command — so an exec'd
//! process is exactly as confined and dies with the sandbox. This side
//! relays the terminal (a pty of the sandbox, with -t) or the standard
//! streams (pipes of its own, without) and the signals; the caller's own
//! descriptors never enter the sandbox.

use crate::cli::ExecArgs;
use crate::error::{Error, NixContext, Result};
use crate::sandbox::channel::Channel;
use crate::sandbox::messages::{ExecAnswer, ExecControl, ExecEvent, ExecRequest};
use crate::sandbox::relay::Relay;
use crate::sandbox::relay_loop;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

const RELAYED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

pub fn run(a: ExecArgs) -> Result<u8> {
    Ok(join(a, false, false)?.unwrap_or(crate::error::EXIT_SBOX_FAILED))
}

/// Run a command in a running named sandbox; with `hangup` (a shell of
/// `sbox shell`), SIGTERM, SIGHUP and SIGINT hang up its session. With
/// `gone_ok`, a sandbox that is not running, or ends before the command
/// starts, is `None` rather than an error.
pub fn join(a: ExecArgs, hangup: bool, gone_ok: bool) -> Result<Option<u8>> {
    crate::locations::validate_name(&a.name)?;
    let paths = crate::locations::Locations::from_host()?.sandbox(&a.name)?;
    if crate::names::running(&paths).is_none() {
        if gone_ok {
            return Ok(None);
        }
        return Err(crate::names::not_running(&paths));
    }
    let mut env = Vec::new();
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| Error::Usage(format!("--env {kv:?}: expected KEY=VALUE")))?;
        env.push((k.to_string(), v.to_string()));
    }
    let cwd = match &a.workdir {
        Some(w) => Some(crate::policy::clean_absolute(w, "--workdir")?),
        None => None,
    };
    let conn = match Channel::connect(&paths.control()) {
        Ok(c) => c,
        Err(_) if gone_ok => return Ok(None),
        Err(e) => return Err(e),
    };
    let request = ExecRequest::Exec {
        argv: a.command.clone(),
        env,
        cwd,
        tty: a.tty,
    };
    let mut signals = SigSet::empty();
    for s in RELAYED {
        signals.add(*s);
    }
    let old_mask = signals
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .ctx(|| "blocking signals".into())?;
    // Without a terminal, the command gets pipes of ours, never our own
    // descriptors: what it leaves behind cannot hold the caller's terminal.
    let (pipes, sent) = if a.tty {
        (None, conn.send(&request, None))
    } else {
        let (pipes, theirs) = Relay::new(a.interactive)?;
        (Some(pipes), conn.send_fds(&request, &theirs.raw()))
    };
    let answer = sent.and_then(|()| Ok(conn.recv()?));
    let master = match answer {
        Ok(Some((ExecAnswer::ExecStarted { .. }, master))) => master,
        Ok(Some((ExecAnswer::ExecFailed { error }, _))) => return Err(Error::Host(error)),
        _ if gone_ok => {
            let _ = old_mask.thread_set_mask();
            return Ok(None);
        }
        Err(e) => return Err(e),
        Ok(None) => {
            return Err(Error::Host(format!(
                "sandbox {:?} stopped before the command started",
                a.name
            )))
        }
    };
    let (code, ending) = relay(&conn, &signals, master, a.tty, pipes, hangup)?;
    if ending {
        // The sandbox ends with this command: return once it has (its
        // changes stored, its name free for the next start).
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while crate::names::running(&paths).is_some() && std::time::Instant::now() < end {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    Ok(Some(code))
}

/// Relay until init says the command has ended; its status, and whether
/// the sandbox ends with it.
fn relay(
    conn: &Channel,
    signals: &SigSet,
    master: Option<OwnedFd>,
    tty: bool,
    pipes: Option<Relay>,
    hangup: bool,
) -> Result<(u8, bool)> {
    let mut peer = Client {
        conn,
        tty,
        hangup,
        ending: false,
        timed_out: None,
    };
    let code = relay_loop::run(signals, master, tty, pipes, &mut peer)?;
    if let Some(millis) = peer.timed_out {
        let secs = millis as f64 / 1000.0;
        eprintln!("sbox: error: the sandbox ran out of time ({secs}s, --timeout) and was stopped");
        return Ok((crate::error::EXIT_TIMEOUT, peer.ending));
    }
    Ok((code, peer.ending))
}

/// `sbox exec`'s side of the relay loop: init is at the other end of the
/// connection.
struct Client<'a> {
    conn: &'a Channel,
    tty: bool,
    /// SIGTERM, SIGHUP and SIGINT hang up the command's session.
    hangup: bool,
    /// The sandbox ends with the command.
    ending: bool,
    /// The sandbox ran out of time after this long.
    timed_out: Option<u64>,
}

impl relay_loop::Peer for Client<'_> {
    type Output = u8;

    fn watched(&self) -> Vec<BorrowedFd<'_>> {
        vec![self.conn.as_fd()]
    }

    fn on_signal(&mut self, sig: Signal, _: Option<&OwnedFd>) {
        let conn = self.conn;
        if sig == Signal::SIGWINCH {
            if let (Some(ws), true) = (crate::sys::get_winsize(0), self.tty) {
                let _ = conn.send(
                    &ExecControl::Resize {
                        rows: ws.ws_row,
                        cols: ws.ws_col,
                    },
                    None,
                );
            }
        } else if self.hangup && matches!(sig, Signal::SIGTERM | Signal::SIGHUP | Signal::SIGINT) {
            let _ = conn.send(&ExecControl::Hangup, None);
        } else {
            let _ = conn.send(&ExecControl::Signal { signo: sig as i32 }, None);
        }
    }

    fn on_ready(&mut self, _: usize, _: &mut [u8]) -> Result<Option<u8>> {
        match self.conn.recv()? {
            Some((ExecEvent::ExecExited { code }, _)) => Ok(Some(code)),
            Some((ExecEvent::Ending, _)) => {
                self.ending = true;
                Ok(None)
            }
            Some((ExecEvent::TimedOut { millis }, _)) => {
                self.timed_out = Some(millis);
                Ok(None)
            }
            None => Err(Error::Host(
                "the sandbox went away while the command ran".into(),
            )),
        }
    }
}
