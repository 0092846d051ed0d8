//! Copying a forwarded connection both ways, between the sandbox's end
//! (`c`) and the host's (`out`).
//!
//! A connection starts small: one thread moves both directions, waiting in
//! poll(2) and copying through a buffer with non-blocking calls. Most
//! connections end so (a request and a short answer, a probe, a refusal
//! passed on), without a second thread. Once either direction has moved
//! `SMALL` bytes, each direction gets a thread of its own that blocks in
//! splice(2) through a pipe: two system calls and one wake-up for each
//! chunk the sender wrote, and the bytes never pass through user space.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};

/// A job for another thread (the direction from the sandbox, once large).
pub type Job = Box<dyn FnOnce() + Send>;

/// Bytes one direction moves through the small phase before the
/// connection counts as a transfer.
const SMALL: usize = 64 * 1024;
/// The pipe of one spliced direction (asked for; the kernel may give less).
const PIPE_SIZE: i32 = 1024 * 1024;
/// The copy buffer of a direction without a pipe.
const BUF_SIZE: usize = 256 * 1024;

/// A relayed connection: the sandbox's end, the host's, and what is given
/// back when both are closed (`keep`, the connection's slot).
struct Pair<K> {
    c: TcpStream,
    out: TcpStream,
    _keep: K,
}

/// Copy both ways between `c` and `out` until both directions have ended
/// or the connection breaks; the sockets are closed, and `keep` dropped,
/// then. A connection that grows large moves the bytes from the host on
/// this thread and the sandbox's on the thread `spawn` runs its job on
/// (false: none could be had, and the connection is closed); neither
/// thread waits for the other.
pub fn relay<K: Send + Sync + 'static>(
    c: TcpStream,
    out: TcpStream,
    keep: K,
    spawn: impl FnOnce(Job) -> bool,
) {
    let (up, down) = match small(&c, &out) {
        Ok(Some(ways)) => ways,
        Ok(None) => return,
        Err(_) => {
            let _ = c.shutdown(Shutdown::Both);
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
    };
    let pair = Arc::new(Pair {
        c,
        out,
        _keep: keep,
    });
    if up.done {
        return carry_on(down, &pair.out, &pair.c);
    }
    if down.done {
        return carry_on(up, &pair.c, &pair.out);
    }
    let other = pair.clone();
    if !spawn(Box::new(move || carry_on(up, &other.c, &other.out))) {
        let _ = pair.c.shutdown(Shutdown::Both);
        let _ = pair.out.shutdown(Shutdown::Both);
        return;
    }
    carry_on(down, &pair.out, &pair.c);
}

/// One direction during the small phase.
#[derive(Debug, Default)]
struct Way {
    /// Received and not yet sent on: `buf[sent..]`.
    buf: Vec<u8>,
    sent: usize,
    /// The sender ended (passed on once `buf` is sent).
    eof: bool,
    /// Ended and passed on.
    done: bool,
    moved: usize,
}

impl Way {
    fn pending(&self) -> &[u8] {
        &self.buf[self.sent..]
    }

    /// What this direction waits for: its source readable when nothing is
    /// pending, its destination writable when something is.
    fn wants(&self) -> (PollFlags, PollFlags) {
        if self.done {
            (PollFlags::empty(), PollFlags::empty())
        } else if !self.pending().is_empty() {
            (PollFlags::empty(), PollFlags::POLLOUT)
        } else {
            (PollFlags::POLLIN, PollFlags::empty())
        }
    }

    /// Read what `from` has (when ready), send on what `to` takes now, and
    /// pass the end on once everything before it is sent.
    fn step(
        &mut self,
        from: &TcpStream,
        to: &TcpStream,
        readable: bool,
        scratch: &mut [u8],
    ) -> std::io::Result<()> {
        if self.done {
            return Ok(());
        }
        if readable && self.pending().is_empty() && !self.eof {
            match recv(from.as_raw_fd(), scratch, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.buf.clear();
                    self.buf.extend_from_slice(&scratch[..n]);
                    self.sent = 0;
                    self.moved += n;
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        while !self.pending().is_empty() {
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            match send(to.as_raw_fd(), self.pending(), flags) {
                Ok(n) => self.sent += n,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if self.eof && self.pending().is_empty() {
            to.shutdown(Shutdown::Write)?;
            self.done = true;
        }
        Ok(())
    }
}

/// The small phase: both directions on this thread until both have ended
/// (None) or one has moved `SMALL` bytes (the two directions, to go on
/// each on its own). Err: the connection is broken.
fn small(c: &TcpStream, out: &TcpStream) -> std::io::Result<Option<(Way, Way)>> {
    let (mut up, mut down) = (Way::default(), Way::default());
    let mut scratch = vec![0u8; SMALL];
    loop {
        if up.done && down.done {
            return Ok(None);
        }
        if up.moved >= SMALL || down.moved >= SMALL {
            return Ok(Some((up, down)));
        }
        let (up_from, up_to) = up.wants();
        let (down_from, down_to) = down.wants();
        // A socket is polled only for what a direction waits for on it: a
        // socket whose peer has hung up would otherwise wake the loop
        // again and again while the other direction waits to send.
        let mut fds = Vec::with_capacity(2);
        let mut at = [None, None];
        for (i, (s, ev)) in [(c, up_from | down_to), (out, down_from | up_to)]
            .into_iter()
            .enumerate()
        {
            if !ev.is_empty() {
                at[i] = Some(fds.len());
                fds.push(PollFd::new(s.as_fd(), ev));
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let got = |i: usize| {
            at[i]
                .and_then(|k| fds[k].revents())
                .unwrap_or(PollFlags::empty())
        };
        let (on_c, on_out) = (got(0), got(1));
        if (on_c | on_out).intersects(PollFlags::POLLERR | PollFlags::POLLNVAL) {
            return Err(std::io::ErrorKind::ConnectionReset.into());
        }
        let readable = |r: PollFlags| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP);
        up.step(c, out, readable(on_c), &mut scratch)?;
        down.step(out, c, readable(on_out), &mut scratch)?;
    }
}

/// One direction once the connection is large: what is pending first, then
/// everything else, until `from` ends (its end is passed on) or either
/// socket fails (both are shut down, which ends the other direction too).
fn carry_on(way: Way, from: &TcpStream, to: &TcpStream) {
    let mut w = to;
    if w.write_all(way.pending()).is_err() {
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
        return;
    }
    if way.eof {
        let _ = to.shutdown(Shutdown::Write);
        return;
    }
    pump(from, to);
}

/// One direction of a relayed connection, until `from` ends (its end is
/// passed on) or either socket fails (both are shut down, which ends the
/// other direction too).
fn pump(from: &TcpStream, to: &TcpStream) {
    let pipe = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok();
    let ended = match &pipe {
        Some((r, w)) => splice_loop(from, to, r.as_fd(), w.as_fd()),
        None => copy_loop(from, to),
    };
    match ended {
        Ok(()) => {
            let _ = to.shutdown(Shutdown::Write);
        }
        Err(_) => {
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        }
    }
}

/// Move everything `from` sends to `to` through the pipe `r`/`w` until
/// `from` ends. Err: the connection is broken.
fn splice_loop(
    from: &TcpStream,
    to: &TcpStream,
    r: BorrowedFd<'_>,
    w: BorrowedFd<'_>,
) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, splice, FcntlArg, SpliceFFlags};
    let flags = SpliceFFlags::SPLICE_F_MOVE;
    // A new pipe holds 64 KiB (less when the user's pipe budget is spent).
    let mut size = 64 * 1024;
    let mut grown = false;
    loop {
        // Whatever the socket holds, up to the pipe's size.
        let mut pending = match splice(from.as_fd(), None, w, None, size, flags) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        // A transfer that fills the pipe gets a larger one when the budget
        // allows (the kernel refuses otherwise; the first one works).
        if pending >= size && !grown {
            grown = true;
            if let Ok(n) = fcntl(w.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_SIZE)) {
                size = usize::try_from(n).unwrap_or(size).max(size);
            }
        }
        while pending > 0 {
            match splice(r, None, to.as_fd(), None, pending, flags) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => pending -= n,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// `splice_loop` through a buffer, when no pipe can be had.
fn copy_loop(mut from: &TcpStream, mut to: &TcpStream) -> std::io::Result<()> {
    use std::io::Read;
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::time::Duration;

    /// The relay, running on a thread of its own, and word of when it let
    /// go of the connection.
    struct Running {
        relay: std::thread::JoinHandle<()>,
        released: std::sync::mpsc::Receiver<()>,
        /// Threads the relay asked for (the second direction's).
        spawned: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Running {
        /// Threads the relay asked for.
        fn spawned(&self) -> usize {
            self.spawned.load(std::sync::atomic::Ordering::SeqCst)
        }

        fn finish(self) {
            self.relay.join().expect("relay");
            self.released
                .recv_timeout(Duration::from_secs(10))
                .expect("the connection's slot was not given back");
        }
    }

    /// What the connection keeps: says when it is dropped.
    struct Keep(std::sync::mpsc::Sender<()>);
    impl Drop for Keep {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }

    /// A client and a server with the relay between them.
    fn rig() -> (TcpStream, TcpStream, Running) {
        let l1 = TcpListener::bind("127.0.0.1:0").expect("l1");
        let l2 = TcpListener::bind("127.0.0.1:0").expect("l2");
        let client = TcpStream::connect(l1.local_addr().expect("a")).expect("c");
        let (c, _) = l1.accept().expect("accept");
        let out = TcpStream::connect(l2.local_addr().expect("a")).expect("o");
        let (server, _) = l2.accept().expect("accept");
        let (kept, released) = std::sync::mpsc::channel();
        let spawned = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = spawned.clone();
        let relay = std::thread::spawn(move || {
            relay(c, out, Keep(kept), |job| {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::spawn(job);
                true
            })
        });
        (
            client,
            server,
            Running {
                relay,
                released,
                spawned,
            },
        )
    }

    /// `len` bytes to an echo server that says "bye" after the client's
    /// end, and back.
    fn echo_through(len: usize) {
        let (mut client, mut server, running) = rig();
        let echo = std::thread::spawn(move || {
            let mut buf = vec![0u8; 100_000];
            loop {
                match server.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => server.write_all(&buf[..n]).expect("echo"),
                }
            }
            server.write_all(b"bye").expect("bye");
        });
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut w = client.try_clone().expect("clone");
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            w.write_all(&sent).expect("send");
            w.shutdown(Shutdown::Write).expect("shutdown");
        });
        let mut got = Vec::new();
        client.read_to_end(&mut got).expect("read");
        writer.join().expect("writer");
        echo.join().expect("echo");
        // A small connection is relayed on one thread; a larger one gets
        // a second thread for the other direction.
        assert_eq!(running.spawned(), usize::from(len >= SMALL), "{len} bytes");
        running.finish();
        assert_eq!(got.len(), data.len() + 3, "{len} bytes");
        assert!(got[..data.len()] == data[..] && got.ends_with(b"bye"));
    }

    #[test]
    fn relay_copies_both_ways_and_passes_half_closes_on() {
        // Small (one thread), at the threshold, and large (spliced).
        for len in [0, 5, SMALL - 1, SMALL, 3 * SMALL + 7, 8 << 20] {
            echo_through(len);
        }
    }

    #[test]
    fn the_server_may_speak_first_and_end_first() {
        let (mut client, mut server, running) = rig();
        server.write_all(b"220 hello\r\n").expect("greet");
        server.shutdown(Shutdown::Write).expect("end");
        let mut got = Vec::new();
        client.read_to_end(&mut got).expect("read");
        assert_eq!(got, b"220 hello\r\n");
        // The other direction still goes through after the first ended.
        client.write_all(b"QUIT\r\n").expect("quit");
        client.shutdown(Shutdown::Write).expect("end");
        let mut asked = Vec::new();
        server.read_to_end(&mut asked).expect("read");
        assert_eq!(asked, b"QUIT\r\n");
        running.finish();
    }

    #[test]
    fn a_reset_ends_the_relay() {
        for large in [false, true] {
            let (mut client, mut server, running) = rig();
            if large {
                // Past the small phase first.
                client.write_all(&vec![7u8; 2 * SMALL]).expect("send");
                let mut buf = vec![0u8; 2 * SMALL];
                server.read_exact(&mut buf).expect("read");
            }
            // The client goes away with a reset while the server is silent.
            nix::sys::socket::setsockopt(
                &client,
                nix::sys::socket::sockopt::Linger,
                &libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                },
            )
            .expect("linger");
            drop(client);
            // The server sees the connection end, and the relay lets go.
            server
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut rest = Vec::new();
            let r = server.read_to_end(&mut rest);
            assert!(
                !r.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
                "the server was left hanging ({large})"
            );
            running.finish();
        }
    }
}
