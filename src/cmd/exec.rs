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
use crate::sandbox::pty;
use crate::sandbox::relay::{Relay, Slot};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

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
    mut pipes: Option<Relay>,
    hangup: bool,
) -> Result<(u8, bool)> {
    let sfd = SignalFd::with_flags(signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .ctx(|| "signalfd".into())?;
    let (stdin_handle, stdout_handle) = (std::io::stdin(), std::io::stdout());
    let (stdin, stdout) = (stdin_handle.as_fd(), stdout_handle.as_fd());
    let resize = |m: &OwnedFd| {
        if let Some(ws) = crate::sys::get_winsize(0) {
            let _ = crate::sys::set_winsize(m.as_raw_fd(), &ws);
        }
    };
    let _raw = match (&master, tty) {
        (Some(m), true) => {
            resize(m);
            pty::RawMode::enter(stdin)
        }
        _ => None,
    };
    let conn_fd = conn.as_fd();
    let mut stdin_open = master.is_some();
    let mut master_open = master.is_some();
    let mut buf = vec![0u8; 64 * 1024];
    let mut ending = false;
    let mut timed_out = None;
    loop {
        let mut fds = vec![
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(conn_fd, PollFlags::POLLIN),
        ];
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
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("poll", e)),
        }
        let ready = |i: Option<usize>| {
            i.and_then(|i| fds[i].revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (s_ready, c_ready, m_ready, i_ready) =
            (ready(Some(0)), ready(Some(1)), ready(im), ready(is));
        let pipes_ready: Vec<Slot> = slots
            .iter()
            .enumerate()
            .filter(|(i, _)| ready(Some(first_pipe + i)))
            .map(|(_, s)| *s)
            .collect();
        drop(fds);
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
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                if sig == Signal::SIGWINCH {
                    if let (Some(ws), true) = (crate::sys::get_winsize(0), tty) {
                        let _ = conn.send(
                            &ExecControl::Resize {
                                rows: ws.ws_row,
                                cols: ws.ws_col,
                            },
                            None,
                        );
                    }
                } else if hangup && matches!(sig, Signal::SIGTERM | Signal::SIGHUP | Signal::SIGINT)
                {
                    let _ = conn.send(&ExecControl::Hangup, None);
                } else {
                    let _ = conn.send(&ExecControl::Signal { signo: sig as i32 }, None);
                }
            }
        }
        if c_ready {
            match conn.recv()? {
                Some((ExecEvent::ExecExited { code }, _)) => {
                    if let Some(m) = &master {
                        pty::drain(m, stdout, &mut buf);
                    }
                    if let Some(p) = &mut pipes {
                        p.drain(&mut buf);
                    }
                    if let Some(millis) = timed_out {
                        let secs = millis as f64 / 1000.0;
                        eprintln!(
                            "sbox: error: the sandbox ran out of time ({secs}s, --timeout) and was stopped"
                        );
                        return Ok((crate::error::EXIT_TIMEOUT, ending));
                    }
                    return Ok((code, ending));
                }
                Some((ExecEvent::Ending, _)) => ending = true,
                Some((ExecEvent::TimedOut { millis }, _)) => timed_out = Some(millis),
                None => {
                    return Err(Error::Host(
                        "the sandbox went away while the command ran".into(),
                    ))
                }
            }
        }
    }
}
