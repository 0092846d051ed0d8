//! The DNS and the forwarder, served from threads of the launcher on the
//! sockets init opened in the sandbox's namespace; what they refused, for
//! the report at exit.

use super::dns::{answer, format_error, parse_query};
use super::relay::relay;
use super::workers::Workers;
use super::{is_internal, is_name_address, Egress, DNS_ADDR, DYNAMIC_BASE, DYNAMIC_MAX};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most connections forwarded at once.
const MAX_CONNECTIONS: usize = 256;
/// How long a connection to the real host may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What was refused, for the report at exit.
#[derive(Debug, Default)]
struct Denials {
    /// What → (how many times, the fix).
    seen: BTreeMap<String, (u32, String)>,
    /// Refusals beyond the `DENIALS_NAMED` first kinds, counted only.
    more: u32,
}

/// Kinds of refusal named in the report (a hostile command could make up
/// names without end).
const DENIALS_NAMED: usize = 1000;

impl Denials {
    fn add(&mut self, what: String, fix: String) {
        if self.seen.len() >= DENIALS_NAMED && !self.seen.contains_key(&what) {
            self.more = self.more.saturating_add(1);
            return;
        }
        let e = self.seen.entry(what).or_insert((0, fix));
        e.0 = e.0.saturating_add(1);
    }
}

/// The names behind the addresses handed out in this run.
#[derive(Debug, Default)]
struct Names {
    by_addr: HashMap<Ipv4Addr, String>,
    by_name: HashMap<String, Ipv4Addr>,
    next: u32,
}

struct Shared {
    egress: Egress,
    names: Mutex<Names>,
    denials: Mutex<Denials>,
    active: AtomicUsize,
    workers: Workers,
    verbose: bool,
}

impl Shared {
    fn deny(&self, what: String, fix: String) {
        if let Ok(mut d) = self.denials.lock() {
            d.add(what, fix);
        }
    }

    /// The address inside for a listed name (allocated on first use).
    fn address(&self, name: &str) -> Option<Ipv4Addr> {
        let mut n = self.names.lock().ok()?;
        if let Some(a) = n.by_name.get(name) {
            return Some(*a);
        }
        if n.next >= DYNAMIC_MAX {
            return None;
        }
        let a = Ipv4Addr::from(DYNAMIC_BASE + n.next);
        n.next += 1;
        n.by_addr.insert(a, name.to_string());
        n.by_name.insert(name.to_string(), a);
        Some(a)
    }

    fn name_of(&self, a: Ipv4Addr) -> Option<String> {
        self.names.lock().ok()?.by_addr.get(&a).cloned()
    }

    fn dns(&self, p: &[u8]) -> Option<Vec<u8>> {
        let Some(q) = parse_query(p) else {
            return format_error(p);
        };
        if !self.egress.listed(&q.name) {
            // Reverse lookups (of 127.77.x.y and others) are not refusals.
            if !q.name.is_empty() && !q.name.ends_with(".arpa") {
                self.deny(
                    format!("name {} (not listed: it does not resolve)", q.name),
                    format!(
                        "add \"--allow-net {}\" (network.allow in a profile)",
                        q.name
                    ),
                );
            }
            return Some(answer(&q, false, None));
        }
        let addr = match q.qtype {
            1 => Some(self.address(&q.name)?),
            _ => None,
        };
        Some(answer(&q, true, addr))
    }
}

impl Shared {
    /// A connection request seen inside, to `to`: counted unless a listener
    /// of the forwarder takes it (and counts it if it refuses it) or it
    /// stays on the sandbox's own loopback.
    fn request(&self, to: SocketAddr, listened: &[u16]) {
        let port = to.port();
        let v4 = match to.ip() {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(a) => a.to_ipv4_mapped(),
        };
        if let Some(a) = v4 {
            if listened.contains(&port) {
                return;
            }
            if is_name_address(a) {
                if let Some(name) = self.name_of(a) {
                    return self.deny(
                        format!("connection to {name}:{port} (port not listed)"),
                        format!("add \"--allow-net {name}:{port}\" (network.allow in a profile)"),
                    );
                }
            } else if a.is_loopback() {
                return;
            }
        } else if to.ip().is_loopback() {
            return;
        }
        self.deny(
            format!("connection to {to}, an address no listed name resolved to"),
            "connect by a name listed with --allow-net (network.allow)".into(),
        );
    }
}

/// Where a connection request goes, from its IP header on (as the watch
/// socket passes them: TCP, SYN without ACK).
fn syn_destination(p: &[u8]) -> Option<SocketAddr> {
    match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let ip: [u8; 4] = p.get(16..20)?.try_into().ok()?;
            let port = p.get(ihl + 2..ihl + 4)?;
            Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(ip)),
                u16::from_be_bytes([port[0], port[1]]),
            ))
        }
        6 => {
            let ip: [u8; 16] = p.get(24..40)?.try_into().ok()?;
            let port = p.get(42..44)?;
            Some(SocketAddr::new(
                IpAddr::V6(std::net::Ipv6Addr::from(ip)),
                u16::from_be_bytes([port[0], port[1]]),
            ))
        }
        _ => None,
    }
}

/// The sockets init opened in the sandbox's namespace.
#[derive(Debug, Default)]
pub struct Sockets {
    pub dns: Option<OwnedFd>,
    pub listeners: Vec<OwnedFd>,
    /// Sees the connection requests made inside (see `sys::netwatch`).
    pub watch: Option<OwnedFd>,
}

/// Open the sockets in the current (the sandbox's) network namespace: a
/// TCP listener on 0.0.0.0 for each port, the DNS's UDP socket, and the
/// watch on connection requests (with every address made local, so that a
/// connection to one no listed name leads to is refused by the kernel and
/// seen, not unroutable and unseen). Without the watch (no packet sockets
/// in this kernel) only the refusals of the DNS and the forwarder count.
pub fn open_sockets(egress: &Egress) -> Result<Sockets> {
    let watch = crate::sys::netwatch::route_everything_local()
        .and_then(|_| crate::sys::netwatch::syn_watch_socket())
        .ok();
    // A listening socket keeps its address from any other bind, with or
    // without SO_REUSEADDR (std sets it; both are close-on-exec).
    let udp = UdpSocket::bind((DNS_ADDR, 53))
        .map_err(|e| Error::io("binding the sandbox's DNS socket", e))?;
    let mut listeners = Vec::new();
    for p in egress.ports() {
        let l = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, p))
            .map_err(|e| Error::io(format!("binding port {p} in the sandbox"), e))?;
        listeners.push(OwnedFd::from(l));
    }
    Ok(Sockets {
        dns: Some(OwnedFd::from(udp)),
        listeners,
        watch,
    })
}

/// The running DNS and forwarder; stopped by `stop`.
pub struct Server {
    shared: Arc<Shared>,
    stop: Option<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Serve the sockets from a thread of the launcher.
pub fn serve(egress: &Egress, sockets: Sockets, verbose: bool) -> Result<Server> {
    let mut names = Names::default();
    for (n, a) in egress.fixed() {
        names.by_addr.insert(a, n.clone());
        names.by_name.insert(n, a);
    }
    let shared = Arc::new(Shared {
        egress: egress.clone(),
        names: Mutex::new(names),
        denials: Mutex::new(Denials::default()),
        active: AtomicUsize::new(0),
        workers: Workers::new(),
        verbose,
    });
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
    let dns = sockets
        .dns
        .ok_or_else(|| Error::Host("no DNS socket from the sandbox".into()))?;
    let dns = UdpSocket::from(dns);
    dns.set_nonblocking(true)
        .map_err(|e| Error::io("the DNS socket", e))?;
    let listeners: Vec<std::net::TcpListener> = sockets
        .listeners
        .into_iter()
        .map(std::net::TcpListener::from)
        .collect();
    for l in &listeners {
        l.set_nonblocking(true)
            .map_err(|e| Error::io("a forwarder socket", e))?;
    }
    let s = shared.clone();
    let thread = std::thread::Builder::new()
        .name("sbox-egress".into())
        .spawn(move || event_loop(&s, r, dns, listeners, sockets.watch))
        .map_err(|e| Error::io("starting the forwarder", e))?;
    Ok(Server {
        shared,
        stop: Some(w),
        thread: Some(thread),
    })
}

impl Server {
    /// Stop serving (the sockets close, and the namespace can go) and
    /// return what was refused: how many, and a line each with its fix.
    pub fn stop(mut self) -> (u32, Vec<String>) {
        self.halt();
        let Ok(d) = self.shared.denials.lock() else {
            return (0, Vec::new());
        };
        let mut total = d.more;
        let mut lines = Vec::new();
        for (what, (n, fix)) in &d.seen {
            total = total.saturating_add(*n);
            lines.push(format!(
                "denied: network: {what} ({n} time{}); to allow: {fix}",
                if *n == 1 { "" } else { "s" }
            ));
        }
        if d.more > 0 {
            lines.push(format!(
                "denied: network: {} more (names or connections not named)",
                d.more
            ));
        }
        (total, lines)
    }

    fn halt(&mut self) {
        if let Some(w) = self.stop.take() {
            let _ = nix::unistd::write(&w, b"x");
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.halt();
    }
}

fn event_loop(
    shared: &Arc<Shared>,
    stop: OwnedFd,
    dns: UdpSocket,
    listeners: Vec<std::net::TcpListener>,
    watch: Option<OwnedFd>,
) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut buf = [0u8; 1500];
    let listened = shared.egress.ports();
    loop {
        let mut fds = vec![
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            PollFd::new(dns.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(w) = &watch {
            fds.push(PollFd::new(w.as_fd(), PollFlags::POLLIN));
        }
        for l in &listeners {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        // The requests the command made before it ended are all queued
        // (the packet socket gets them as they are sent): count them all.
        let drain = |w: &OwnedFd, buf: &mut [u8]| {
            while let Ok(n) =
                nix::sys::socket::recv(w.as_raw_fd(), buf, nix::sys::socket::MsgFlags::MSG_DONTWAIT)
            {
                if let Some(to) = syn_destination(&buf[..n.min(buf.len())]) {
                    shared.request(to, &listened);
                }
            }
        };
        if ready[0] {
            if let Some(w) = &watch {
                drain(w, &mut buf);
            }
            return;
        }
        if ready[1] {
            while let Ok((n, from)) = dns.recv_from(&mut buf) {
                if let Some(r) = shared.dns(&buf[..n]) {
                    let _ = dns.send_to(&r, from);
                }
            }
        }
        let mut first = 2;
        if let Some(w) = &watch {
            if ready[2] {
                drain(w, &mut buf);
            }
            first = 3;
        }
        for (i, l) in listeners.iter().enumerate() {
            if !ready[i + first] {
                continue;
            }
            while let Ok((c, _)) = l.accept() {
                accept(shared, c);
            }
        }
    }
}

/// Close a refused connection with a reset, so the client fails at once.
fn refuse(c: TcpStream) {
    let _ = nix::sys::socket::setsockopt(
        &c,
        nix::sys::socket::sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    );
    drop(c);
}

fn accept(shared: &Arc<Shared>, c: TcpStream) {
    let local = match c.local_addr() {
        Ok(SocketAddr::V4(a)) => a,
        _ => return refuse(c),
    };
    let Some(name) = shared.name_of(*local.ip()) else {
        shared.deny(
            format!("connection to {local}, an address no listed name resolved to"),
            "connect by a name listed with --allow-net (network.allow)".into(),
        );
        return refuse(c);
    };
    let port = local.port();
    let Some(private) = shared.egress.allows(&name, port) else {
        shared.deny(
            format!("connection to {name}:{port} (port not listed)"),
            format!("add \"--allow-net {name}:{port}\" (network.allow in a profile)"),
        );
        return refuse(c);
    };
    if shared.active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
        drop(Slot(shared.clone()));
        shared.deny(
            format!("connection to {name}:{port} (more than {MAX_CONNECTIONS} at once)"),
            "fewer connections at once".into(),
        );
        return refuse(c);
    }
    let slot = Slot(shared.clone());
    // Dropped unrun (and the slot with it) when no worker can be had.
    shared
        .workers
        .run(Box::new(move || forward(c, &name, port, private, slot)));
}

/// One of the `MAX_CONNECTIONS`, given back when dropped: when the
/// connection it was taken for has ended, or could not be made.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Resolve `name` on the host, connect, and copy both ways.
fn forward(c: TcpStream, name: &str, port: u16, private: bool, slot: Slot) {
    let shared = &*slot.0;
    let (addrs, given) = match shared.egress.given(name) {
        Some(ip) => (vec![SocketAddr::new(ip, port)], true),
        None => match std::net::ToSocketAddrs::to_socket_addrs(&(name, port)) {
            Ok(a) => (a.collect::<Vec<_>>(), false),
            Err(e) => {
                if shared.verbose {
                    crate::verbose::say("egress", &format!("{name}: {e}"));
                }
                return refuse(c);
            }
        },
    };
    let (ok, internal): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs
        .into_iter()
        .partition(|a| given || private || !is_internal(a.ip()));
    if ok.is_empty() {
        if let Some(a) = internal.first() {
            shared.deny(
                format!(
                    "connection to {name}:{port}: it resolves to {}, a loopback, link-local or private address",
                    a.ip()
                ),
                format!("add \"--allow-net {name}:{port},private\" if that address is meant"),
            );
        }
        return refuse(c);
    }
    let mut out = None;
    for a in &ok {
        if let Ok(s) = TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
            out = Some(s);
            break;
        }
    }
    let Some(out) = out else {
        if shared.verbose {
            crate::verbose::say("egress", &format!("{name}:{port}: cannot connect"));
        }
        return refuse(c);
    };
    if shared.verbose {
        crate::verbose::say("egress", &format!("{name}:{port} → {:?}", out.peer_addr()));
    }
    let _ = c.set_nodelay(true);
    let _ = out.set_nodelay(true);
    let workers = slot.0.clone();
    relay(c, out, slot, |job| workers.workers.run(job));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::parse_allow;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    #[test]
    fn dns_answers_listed_names_only() {
        let e = Egress {
            allow: parse_allow("a.test,*.w.test", "x").expect("a"),
            hosts: vec![],
        };
        let mut names = Names::default();
        for (n, a) in e.fixed() {
            names.by_addr.insert(a, n.clone());
            names.by_name.insert(n, a);
        }
        let s = Shared {
            egress: e,
            names: Mutex::new(names),
            denials: Mutex::new(Denials::default()),
            active: AtomicUsize::new(0),
            workers: Workers::new(),
            verbose: false,
        };
        let r = s.dns(&query("A.test", 1)).expect("r");
        assert_eq!(&r[0..2], &[0x12, 0x34]);
        assert_eq!(r[3] & 0x0f, 0);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1);
        assert_eq!(&r[r.len() - 4..], &[127, 77, 0, 2]);
        let r = s.dns(&query("a.test", 28)).expect("r");
        assert_eq!((r[3] & 0x0f, r[7]), (0, 0));
        let r = s.dns(&query("x.w.test", 1)).expect("r");
        assert_eq!(&r[r.len() - 4..], &[127, 78, 0, 1]);
        assert_eq!(
            s.name_of(Ipv4Addr::new(127, 78, 0, 1)).as_deref(),
            Some("x.w.test")
        );
        let r2 = s.dns(&query("x.w.test", 1)).expect("r");
        assert_eq!(r, r2);
        let r = s.dns(&query("evil.test", 1)).expect("r");
        assert_eq!((r[3] & 0x0f, r[7]), (3, 0));
        let d = s.denials.lock().expect("d");
        assert!(d.seen.keys().any(|k| k.contains("evil.test")));
        drop(d);
        assert!(s.dns(&[1, 2, 3]).is_none());
        // A name with bytes no host name has: a format error, not counted.
        let mut bad = query("x.test", 1);
        bad[13] = 0x1b;
        let r = s.dns(&bad).expect("r");
        assert_eq!(r[3] & 0x0f, 1);
        assert_eq!(s.denials.lock().expect("d").seen.len(), 1);
    }
}
