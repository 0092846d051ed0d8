//! The allow-list: `--allow-net` and `network.allow` entries, `--add-host`,
//! and the names, addresses and files a sandbox gets from them.

use super::{DEFAULT_PORTS, DNS_ADDR, FIXED_BASE, HOST_ALIAS};
use crate::error::{Error, Result};
use std::net::{IpAddr, Ipv4Addr};

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
    pub(super) fn given(&self, name: &str) -> Option<IpAddr> {
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
}
