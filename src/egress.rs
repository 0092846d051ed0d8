//! Network egress by name (`--allow-net`, `network.allow`).
//!
//! The sandbox has a network namespace of its own with only `lo` up. Before
//! the root is assembled, init opens in it a TCP listener on 0.0.0.0 for
//! each allowed port and a UDP socket at `DNS_ADDR:53`, and hands them to
//! the launcher, which stays in the host's network namespace and serves
//! them (a socket keeps the namespace it was made in):
//! * the DNS answers an A query for a listed name with an address of
//!   127.77.0.0/15 that stands for that name for the whole run; an unlisted
//!   name gets NXDOMAIN, AAAA and the other types an empty answer;
//! * the forwarder accepts a connection, takes the name from the address it
//!   was made to (getsockname), checks the port against the entries for
//!   that name, resolves the name on the host as it connects, refuses
//!   loopback, link-local and private destinations unless the entry says
//!   `private` (or the address was given with `--add-host`), and copies
//!   both ways;
//! * a packet socket sees the connection requests made inside (every
//!   address is the loopback's there): those that no listener takes are
//!   counted as refused, whether or not `--log-denials` is given.
//!
//! Nothing leaves the namespace otherwise: a connection to an address no
//! listed name resolved to is refused, UDP other than to the DNS goes
//! nowhere.

mod relay;

use crate::error::{Error, Result};
use relay::{relay, Job};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The name of the host's loopback inside.
pub const HOST_ALIAS: &str = crate::net::HOST_ALIAS;
/// Where the sandbox's resolver is.
pub const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(127, 77, 0, 1);
/// First address of the names listed exactly (127.77.0.2 on).
const FIXED_BASE: u32 = 0x7f4d_0002;
/// First address of names matched by a wildcard (127.78.0.1 on).
const DYNAMIC_BASE: u32 = 0x7f4e_0001;
/// Most names a wildcard can stand for in one run.
const DYNAMIC_MAX: u32 = 65_000;
/// Ports an entry without any gets.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];
/// Most connections forwarded at once.
const MAX_CONNECTIONS: usize = 256;
/// How long a connection to the real host may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The names an entry covers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Pattern {
    /// This name only.
    Exact(String),
    /// `*.SUFFIX`: every name below SUFFIX (not SUFFIX itself).
    Below(String),
}

impl Pattern {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(n) => n == name,
            Pattern::Below(s) => name
                .strip_suffix(s.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Exact(n) => f.write_str(n),
            Pattern::Below(s) => write!(f, "*.{s}"),
        }
    }
}

/// One allow entry: names, ports, and whether private destinations are
/// allowed for them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Allow {
    pub pattern: Pattern,
    pub ports: Vec<u16>,
    pub private: bool,
}

fn usage(what: &str, spec: &str, why: &str) -> Error {
    Error::Usage(format!("{what} {spec}: {why}"))
}

/// A host name as sbox compares them: lower case, no trailing dot.
fn normal_name(s: &str) -> Option<String> {
    let s = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then_some(s)
}

/// Parse one `--allow-net` value: `HOST[:PORTS]` entries separated by
/// commas, where PORTS is a comma list of ports and the word `private`
/// (`github.com:22,443,gitlab.com`, `*.example.org`, `db.lan:5432,private`).
pub fn parse_allow(spec: &str, what: &str) -> Result<Vec<Allow>> {
    let mut out: Vec<Allow> = Vec::new();
    let mut explicit_ports = false;
    let finish = |out: &mut Vec<Allow>, explicit: bool| {
        if let Some(last) = out.last_mut() {
            if !explicit {
                last.ports = DEFAULT_PORTS.to_vec();
            }
            last.ports.sort_unstable();
            last.ports.dedup();
        }
    };
    for tok in spec.split(',').map(str::trim) {
        if tok.is_empty() {
            return Err(usage(what, spec, "empty entry"));
        }
        let is_port = tok.bytes().all(|b| b.is_ascii_digit());
        if (is_port || tok == "private") && !out.is_empty() {
            let last = out.last_mut().ok_or_else(|| usage(what, spec, "no host"))?;
            if tok == "private" {
                last.private = true;
            } else {
                last.ports.push(port(tok, spec, what)?);
                explicit_ports = true;
            }
            continue;
        }
        finish(&mut out, explicit_ports);
        explicit_ports = false;
        let (host, first) = match tok.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (tok, None),
        };
        let pattern = match host.strip_prefix("*.") {
            Some(s) => Pattern::Below(normal_name(s).ok_or_else(|| {
                usage(
                    what,
                    spec,
                    &format!("{host:?} is not a host name or *.DOMAIN"),
                )
            })?),
            None => Pattern::Exact(normal_name(host).ok_or_else(|| {
                usage(
                    what,
                    spec,
                    &format!("{host:?} is not a host name or *.DOMAIN"),
                )
            })?),
        };
        let mut a = Allow {
            pattern,
            ports: Vec::new(),
            private: false,
        };
        match first {
            Some("private") => a.private = true,
            Some(p) => {
                a.ports.push(port(p, spec, what)?);
                explicit_ports = true;
            }
            None => {}
        }
        out.push(a);
    }
    finish(&mut out, explicit_ports);
    if out.is_empty() {
        return Err(usage(what, spec, "no host"));
    }
    Ok(out)
}

fn port(s: &str, spec: &str, what: &str) -> Result<u16> {
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(usage(what, spec, &format!("{s:?} is not a port (1-65535)"))),
    }
}

/// Parse `--add-host NAME:IP`.
pub fn parse_add_host(spec: &str) -> Result<(String, IpAddr)> {
    let (n, ip) = spec
        .split_once(':')
        .ok_or_else(|| usage("--add-host", spec, "expected NAME:IP"))?;
    let name = normal_name(n)
        .ok_or_else(|| usage("--add-host", spec, &format!("{n:?} is not a host name")))?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| usage("--add-host", spec, &format!("{ip:?} is not an IP address")))?;
    Ok((name, ip))
}

/// The egress plan of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Egress {
    pub allow: Vec<Allow>,
    /// `--add-host`: names whose address is given (used on the host side).
    pub hosts: Vec<(String, IpAddr)>,
}

impl Egress {
    /// Every port some entry allows (a listener each).
    pub fn ports(&self) -> Vec<u16> {
        let mut p: Vec<u16> = self.allow.iter().flat_map(|a| a.ports.clone()).collect();
        p.sort_unstable();
        p.dedup();
        p
    }

    /// Whether some entry lists `name`.
    pub fn listed(&self, name: &str) -> bool {
        self.allow.iter().any(|a| a.pattern.matches(name))
    }

    /// Whether `name:port` is allowed, and whether private addresses are.
    pub fn allows(&self, name: &str, port: u16) -> Option<bool> {
        let mut hit = None;
        for a in &self.allow {
            if a.pattern.matches(name) && a.ports.contains(&port) {
                hit = Some(hit.unwrap_or(false) || a.private);
            }
        }
        hit
    }

    /// The names listed exactly, each with its address inside.
    pub fn fixed(&self) -> Vec<(String, Ipv4Addr)> {
        let mut names: Vec<&str> = Vec::new();
        for a in &self.allow {
            if let Pattern::Exact(n) = &a.pattern {
                if !names.contains(&n.as_str()) {
                    names.push(n);
                }
            }
        }
        names
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), Ipv4Addr::from(FIXED_BASE + i as u32)))
            .collect()
    }

    /// The address given for `name` (`--add-host`, host.sbox.internal).
    fn given(&self, name: &str) -> Option<IpAddr> {
        self.hosts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, ip)| *ip)
            .or_else(|| (name == HOST_ALIAS).then_some(IpAddr::V4(Ipv4Addr::LOCALHOST)))
    }

    /// One line for --verbose and `sbox doctor`.
    pub fn describe(&self) -> String {
        let list: Vec<String> = self
            .allow
            .iter()
            .map(|a| {
                let ports: Vec<String> = a.ports.iter().map(u16::to_string).collect();
                format!(
                    "{}:{}{}",
                    a.pattern,
                    ports.join(","),
                    if a.private { ",private" } else { "" }
                )
            })
            .collect();
        format!(
            "own namespace, only these names reachable (TCP, through sbox's forwarder; DNS at {DNS_ADDR}): {}",
            list.join(" ")
        )
    }

    /// The sandbox's /etc/resolv.conf.
    pub fn resolv_conf(&self) -> String {
        format!("# sbox: only the names of --allow-net / network.allow resolve\nnameserver {DNS_ADDR}\noptions edns0\n")
    }

    /// The sandbox's /etc/hosts: the exact names first (the first match
    /// wins), then the host's lines that name none of them.
    pub fn hosts_file(&self, host_hosts: &str, hostname: &str) -> String {
        let fixed = self.fixed();
        let mut s = String::new();
        for (n, a) in &fixed {
            s.push_str(&format!("{a}\t{n}\n"));
        }
        // The host's lines without the listed names (with `multi on` a
        // second address for a name would be returned too).
        for l in host_hosts.lines() {
            let body = l.split('#').next().unwrap_or("");
            let mut f = body.split_whitespace();
            let Some(addr) = f.next() else {
                s.push_str(l);
                s.push('\n');
                continue;
            };
            let names: Vec<&str> = f
                .filter(|n| {
                    let n = n.to_ascii_lowercase();
                    !self.listed(&n) && n != HOST_ALIAS
                })
                .collect();
            if !names.is_empty() {
                s.push_str(&format!("{addr}\t{}\n", names.join(" ")));
            }
        }
        s.push_str(&format!("127.0.1.1\t{hostname}\n"));
        s
    }
}

/// Whether an address is one that sbox's DNS hands out for a name.
pub fn is_name_address(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 127 && (o[1] == 77 || o[1] == 78) && ip != DNS_ADDR
}

/// Whether an address is one the forwarder refuses unless allowed
/// explicitly: loopback, link-local, private, unspecified.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            v.is_loopback()
                || v.is_link_local()
                || v.is_private()
                || v.is_unspecified()
                || v.is_broadcast()
                || v.octets()[0] == 100 && (v.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            v.is_loopback()
                || v.is_unspecified()
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xfe00) == 0xfc00
                || v.to_ipv4_mapped()
                    .is_some_and(|m| is_internal(IpAddr::V4(m)))
        }
    }
}

// ---------------------------------------------------------------- DNS

/// A DNS query's question, with where the answer's parts begin.
struct Question {
    id: [u8; 2],
    rd: bool,
    name: String,
    qtype: u16,
    /// The question section as received (echoed in the answer).
    raw: Vec<u8>,
}

fn parse_query(p: &[u8]) -> Option<Question> {
    if p.len() < 12 || p[2] & 0x80 != 0 || (p[2] >> 3) & 0x0f != 0 {
        return None;
    }
    if u16::from_be_bytes([p[4], p[5]]) != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = *p.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        let l = p.get(i..i + len)?;
        // Only what a host name holds (the name may end up in the report
        // printed on the user's terminal).
        if !l
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return None;
        }
        labels.push(String::from_utf8_lossy(l).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]);
    let _class = p.get(i + 2..i + 4)?;
    Some(Question {
        id: [p[0], p[1]],
        rd: p[2] & 1 != 0,
        name: labels.join("."),
        qtype,
        raw: p[12..i + 4].to_vec(),
    })
}

/// Build an answer: `addr` for an A query, else no records; NXDOMAIN when
/// `known` is false.
fn answer(q: &Question, known: bool, addr: Option<Ipv4Addr>) -> Vec<u8> {
    let mut r = Vec::with_capacity(q.raw.len() + 32);
    r.extend_from_slice(&q.id);
    r.push(0x84 | u8::from(q.rd)); // QR, AA, RD as asked
    r.push(0x80 | if known { 0 } else { 3 }); // RA, NOERROR / NXDOMAIN
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&u16::from(addr.is_some()).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&q.raw);
    if let Some(a) = addr {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        r.extend_from_slice(&60u32.to_be_bytes());
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&a.octets());
    }
    r
}

fn format_error(p: &[u8]) -> Option<Vec<u8>> {
    let h = p.get(0..12)?;
    Some(vec![h[0], h[1], 0x80, 0x81, 0, 0, 0, 0, 0, 0, 0, 0])
}

// ---------------------------------------------------------------- state

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

// ---------------------------------------------------------------- server

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

/// Threads that forward connections, kept a while once done so that a
/// new connection does not pay for a new thread.
struct Workers {
    tx: Mutex<std::sync::mpsc::Sender<Job>>,
    rx: Arc<Mutex<std::sync::mpsc::Receiver<Job>>>,
    /// Workers waiting for a job and not yet promised one.
    idle: Arc<AtomicUsize>,
}

/// How long a worker waits for another connection before it ends.
const WORKER_IDLE: Duration = Duration::from_secs(30);

impl Workers {
    fn new() -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        Workers {
            tx: Mutex::new(tx),
            rx: Arc::new(Mutex::new(rx)),
            idle: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Run `job` on a waiting worker, or on a new one; false when neither
    /// can be had.
    fn run(&self, job: Job) -> bool {
        let take = |n: usize| n.checked_sub(1);
        if self
            .idle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, take)
            .is_ok()
        {
            // A worker is promised: it takes the job from the channel.
            if let Ok(tx) = self.tx.lock() {
                if tx.send(job).is_ok() {
                    return true;
                }
            }
            return false;
        }
        let (rx, idle) = (self.rx.clone(), self.idle.clone());
        std::thread::Builder::new()
            .name("sbox-forward".into())
            .spawn(move || worker(job, &rx, &idle))
            .is_ok()
    }
}

fn worker(first: Job, rx: &Mutex<std::sync::mpsc::Receiver<Job>>, idle: &AtomicUsize) {
    use std::sync::mpsc::RecvTimeoutError;
    first();
    loop {
        idle.fetch_add(1, Ordering::SeqCst);
        loop {
            let got = match rx.lock() {
                Ok(r) => r.recv_timeout(WORKER_IDLE),
                Err(_) => return,
            };
            match got {
                Ok(job) => {
                    job();
                    break;
                }
                // Leave unless a job was promised to a waiting worker
                // meanwhile (then it is on its way: wait for it).
                Err(RecvTimeoutError::Timeout) => {
                    let take = |n: usize| n.checked_sub(1);
                    if idle
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, take)
                        .is_ok()
                    {
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
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

    #[test]
    fn allow_forms() {
        let a = parse_allow("github.com:22,443,gitlab.com", "--allow-net").expect("a");
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].pattern, Pattern::Exact("github.com".into()));
        assert_eq!(a[0].ports, vec![22, 443]);
        assert_eq!(a[1].ports, vec![80, 443]);
        let a = parse_allow("*.Example.ORG.", "x").expect("a");
        assert_eq!(a[0].pattern, Pattern::Below("example.org".into()));
        assert!(a[0].pattern.matches("a.example.org"));
        assert!(a[0].pattern.matches("b.a.example.org"));
        assert!(!a[0].pattern.matches("example.org"));
        assert!(!a[0].pattern.matches("badexample.org"));
        let a = parse_allow("db.lan:5432,private", "x").expect("a");
        assert!(a[0].private && a[0].ports == vec![5432]);
        let a = parse_allow("db.lan:private", "x").expect("a");
        assert!(a[0].private && a[0].ports == vec![80, 443]);
        for bad in [
            "", ",", "a..b", "x:0", "x:70000", "*.", "a b", "x:1,,2", "-a.b",
        ] {
            assert!(parse_allow(bad, "x").is_err(), "{bad}");
        }
        assert_eq!(
            parse_add_host("db.test:127.0.0.1").expect("h"),
            ("db.test".into(), IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        assert!(parse_add_host("x:[::1]").is_ok());
        assert!(parse_add_host("x").is_err() && parse_add_host("x:y").is_err());
    }

    #[test]
    fn plan_ports_names_and_files() {
        let mut allow = parse_allow("a.test,b.test:22", "x").expect("a");
        allow.extend(parse_allow("*.c.test:8080", "x").expect("a"));
        let e = Egress {
            allow,
            hosts: vec![],
        };
        assert_eq!(e.ports(), vec![22, 80, 443, 8080]);
        assert_eq!(e.allows("a.test", 443), Some(false));
        assert_eq!(e.allows("a.test", 22), None);
        assert_eq!(e.allows("x.c.test", 8080), Some(false));
        assert_eq!(e.allows("evil.test", 443), None);
        let f = e.fixed();
        assert_eq!(f[0], ("a.test".into(), Ipv4Addr::new(127, 77, 0, 2)));
        assert_eq!(f[1].1, Ipv4Addr::new(127, 77, 0, 3));
        let h = e.hosts_file("10.0.0.1 a.test\n127.0.0.1 localhost b.test # x\n", "sb");
        assert!(h.starts_with("127.77.0.2\ta.test\n"), "{h}");
        assert!(!h.contains("10.0.0.1"), "{h}");
        assert!(h.contains("127.0.0.1\tlocalhost\n"), "{h}");
        assert!(e.resolv_conf().contains("nameserver 127.77.0.1"));
        for ip in [
            "127.0.0.1",
            "10.1.1.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "0.0.0.0",
        ] {
            assert!(is_internal(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["8.8.8.8", "172.32.0.1", "2001:db8::1", "151.101.0.223"] {
            assert!(!is_internal(ip.parse().expect("ip")), "{ip}");
        }
    }

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
