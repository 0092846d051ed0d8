//! Networking of a sandbox: publishing ports (`-p`) and the user-mode
//! network stack (`pasta`, from the passt package) for `--net user`.

use crate::error::{Error, Result};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The name the host's loopback has inside with --allow-host-loopback.
pub const HOST_ALIAS: &str = "host.sbox.internal";
/// The address inside that pasta forwards DNS queries from, when the
/// host's resolver is on its loopback (systemd-resolved's 127.0.0.53…).
pub const DNS_FORWARD: &str = "169.254.1.1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// `-p [IP:]HOSTPORT:SANDBOXPORT[/tcp|udp]`
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Publish {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub sandbox_port: u16,
    pub proto: Proto,
}

fn port(s: &str, spec: &str) -> Result<u16> {
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(Error::Usage(format!(
            "--publish {spec}: {s:?} is not a port (1-65535)"
        ))),
    }
}

/// Parse a `--publish` value. The host address defaults to 127.0.0.1: a
/// port opened for a dev server should not be reachable from the network
/// unless asked for.
pub fn parse_publish(spec: &str) -> Result<Publish> {
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, "tcp")) => (b, Proto::Tcp),
        Some((b, "udp")) => (b, Proto::Udp),
        Some((_, other)) => {
            return Err(Error::Usage(format!(
                "--publish {spec}: unknown protocol {other:?} (tcp or udp)"
            )))
        }
        None => (spec, Proto::Tcp),
    };
    let (addr, ports) = if let Some(rest) = body.strip_prefix('[') {
        let (ip, after) = rest
            .split_once("]:")
            .ok_or_else(|| Error::Usage(format!("--publish {spec}: bad [IPv6]:PORT form")))?;
        (Some(ip), after)
    } else {
        match body.matches(':').count() {
            1 => (None, body),
            2 => {
                let (ip, rest) = body.split_once(':').unwrap_or(("", body));
                (Some(ip), rest)
            }
            _ => {
                return Err(Error::Usage(format!(
                    "--publish {spec}: expected [IP:]HOSTPORT:SANDBOXPORT[/tcp|udp]"
                )))
            }
        }
    };
    let (h, s) = ports.split_once(':').ok_or_else(|| {
        Error::Usage(format!(
            "--publish {spec}: expected [IP:]HOSTPORT:SANDBOXPORT[/tcp|udp]"
        ))
    })?;
    let host_ip = match addr {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(a) => a
            .parse()
            .map_err(|_| Error::Usage(format!("--publish {spec}: {a:?} is not an IP address")))?,
    };
    Ok(Publish {
        host_ip,
        host_port: port(h, spec)?,
        sandbox_port: port(s, spec)?,
        proto,
    })
}

/// Refuse early when a published host port is taken.
pub fn check_free(p: &Publish) -> Result<()> {
    let addr = std::net::SocketAddr::new(p.host_ip, p.host_port);
    let r = match p.proto {
        Proto::Tcp => std::net::TcpListener::bind(addr).map(drop),
        Proto::Udp => std::net::UdpSocket::bind(addr).map(drop),
    };
    r.map_err(|e| {
        Error::Usage(format!(
            "--publish: cannot use {addr}/{} on the host: {}",
            p.proto,
            crate::error::io_reason(&e)
        ))
    })
}

/// Where a helper program is, searching the usual directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/bin", "/usr/sbin", "/bin", "/usr/local/bin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

/// The host's nameservers from /etc/resolv.conf.
pub fn host_nameservers() -> Vec<IpAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse().ok())
        .collect()
}

/// The host's IPv4 default gateway, from /proc/net/route.
pub fn default_gateway() -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() > 2 && f[1] == "00000000" {
            let g = u32::from_str_radix(f[2], 16).ok()?;
            Some(Ipv4Addr::from(g.to_be()))
        } else {
            None
        }
    })
}

/// What the sandbox's /etc/resolv.conf and /etc/hosts say with --net user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNetFiles {
    /// None: keep the host's resolv.conf (its servers are reachable).
    pub resolv_conf: Option<String>,
    pub hosts: String,
    /// pasta must forward DNS from `DNS_FORWARD`.
    pub dns_forward: bool,
}

/// Pure: the files for a --net user sandbox. With slirp4netns the
/// resolver and the host are at its fixed addresses.
pub fn build_user_net_files(
    host_hosts: &str,
    nameservers: &[IpAddr],
    gateway: Option<Ipv4Addr>,
    hostname: &str,
    allow_host_loopback: bool,
    slirp: bool,
) -> UserNetFiles {
    let loopback_dns = nameservers.is_empty() || nameservers.iter().any(|a| a.is_loopback());
    let resolv_conf = if slirp {
        Some(format!("nameserver {SLIRP_DNS}\n"))
    } else {
        loopback_dns.then(|| format!("nameserver {DNS_FORWARD}\n"))
    };
    let gateway = if slirp { Some(SLIRP_GATEWAY) } else { gateway };
    let mut hosts = String::new();
    for l in host_hosts.lines() {
        if !l.contains(HOST_ALIAS) {
            hosts.push_str(l);
            hosts.push('\n');
        }
    }
    hosts.push_str(&format!("127.0.1.1\t{hostname}\n"));
    if allow_host_loopback {
        if let Some(gw) = gateway {
            hosts.push_str(&format!("{gw}\t{HOST_ALIAS}\n"));
        }
    }
    UserNetFiles {
        resolv_conf,
        hosts,
        dns_forward: loopback_dns,
    }
}

/// pasta's command line for the sandbox whose init is `pid`.
pub fn build_pasta_args(
    pid: i32,
    publish: &[Publish],
    allow_host_loopback: bool,
    dns_forward: bool,
    pid_file: &Path,
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--config-net".into(),
        "--quiet".into(),
        "--foreground".into(),
        "--pid".into(),
        pid_file.to_string_lossy().into_owned(),
        // Nothing of the host's loopback is forwarded into the sandbox…
        "--tcp-ns".into(),
        "none".into(),
        "--udp-ns".into(),
        "none".into(),
    ];
    // …and the gateway address does not lead to it unless asked for.
    if !allow_host_loopback {
        a.push("--no-map-gw".into());
    }
    if dns_forward {
        a.push("--dns-forward".into());
        a.push(DNS_FORWARD.into());
    }
    let spec = |p: &Publish| match p.host_ip {
        IpAddr::V4(ip) => format!("{ip}/{}:{}", p.host_port, p.sandbox_port),
        IpAddr::V6(ip) => format!("{ip}/{}:{}", p.host_port, p.sandbox_port),
    };
    let tcp: Vec<String> = publish
        .iter()
        .filter(|p| p.proto == Proto::Tcp)
        .map(spec)
        .collect();
    let udp: Vec<String> = publish
        .iter()
        .filter(|p| p.proto == Proto::Udp)
        .map(spec)
        .collect();
    // One option per port: an address in a spec binds all of its ports,
    // so specs of different addresses cannot share a comma list.
    for (flag, list) in [("--tcp-ports", tcp), ("--udp-ports", udp)] {
        if list.is_empty() {
            a.push(flag.into());
            a.push("none".into());
        }
        for spec in list {
            a.push(flag.into());
            a.push(spec);
        }
    }
    a.push(pid.to_string());
    a
}

/// The user-mode network stacks sbox can drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stack {
    Pasta(PathBuf),
    Slirp4netns(PathBuf),
}

/// Environment variable that picks the stack ("pasta" or "slirp4netns");
/// meant for tests of the fallback.
pub const STACK_ENV: &str = "SBOX_NET_STACK";

/// pasta when installed, else slirp4netns.
pub fn choose_stack() -> Result<Stack> {
    let want = std::env::var(STACK_ENV).ok();
    let pasta = || find_program("pasta").map(Stack::Pasta);
    let slirp = || find_program("slirp4netns").map(Stack::Slirp4netns);
    let found = match want.as_deref() {
        Some("pasta") => pasta(),
        Some("slirp4netns") => slirp(),
        _ => pasta().or_else(slirp),
    };
    found.ok_or_else(|| {
        Error::Host(
            "--net user needs pasta (package passt) or slirp4netns: apt install passt".into(),
        )
    })
}

/// slirp4netns's fixed addresses (its default 10.0.2.0/24 network).
pub const SLIRP_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
pub const SLIRP_DNS: &str = "10.0.2.3";

/// slirp4netns's command line for the sandbox whose init is `pid`.
pub fn build_slirp_args(
    pid: i32,
    allow_host_loopback: bool,
    ready_fd: i32,
    api: &Path,
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--configure".into(),
        "--mtu=65520".into(),
        format!("--ready-fd={ready_fd}"),
        format!("--api-socket={}", api.display()),
        "--enable-sandbox".into(),
        "--enable-seccomp".into(),
    ];
    if !allow_host_loopback {
        a.push("--disable-host-loopback".into());
    }
    a.push(pid.to_string());
    a.push("tap0".into());
    a
}

/// The API request that publishes one port through slirp4netns.
pub fn slirp_hostfwd_request(p: &Publish) -> String {
    serde_json::json!({
        "execute": "add_hostfwd",
        "arguments": {
            "proto": p.proto.to_string(),
            "host_addr": p.host_ip.to_string(),
            "host_port": p.host_port,
            "guest_port": p.sandbox_port,
        }
    })
    .to_string()
}

/// The running user-mode network stack; stopped when dropped.
#[derive(Debug)]
pub struct NetHelper {
    child: Child,
}

impl NetHelper {
    /// Start pasta for the sandbox whose init is `pid` and wait until it
    /// has configured the namespace.
    pub fn start(program: &Path, args: &[String], pid_file: &Path) -> Result<Self> {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", program.display()), e))?;
        let mut helper = NetHelper { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if pid_file.exists() {
                return Ok(helper);
            }
            if let Ok(Some(status)) = helper.child.try_wait() {
                let mut err = String::new();
                if let Some(mut s) = helper.child.stderr.take() {
                    use std::io::Read;
                    let _ = s.read_to_string(&mut err);
                }
                let err = err.trim().replace('\n', "; ");
                return Err(Error::Host(format!(
                    "pasta failed ({status}){}{err} — see `sbox doctor` (is /dev/net/tun usable?)",
                    if err.is_empty() { "" } else { ": " }
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::Host("pasta did not come up within 10 s".into()));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl NetHelper {
    /// Start slirp4netns, wait for it to configure the namespace, then
    /// publish the ports through its API socket.
    pub fn start_slirp(
        program: &Path,
        pid: i32,
        allow_host_loopback: bool,
        publish: &[Publish],
        api: &Path,
    ) -> Result<Self> {
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        // The write end is inherited by slirp4netns (not close-on-exec).
        let (r, w) = nix::unistd::pipe().map_err(|e| Error::sys("pipe", e))?;
        let _ = nix::fcntl::fcntl(
            r.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        let args = build_slirp_args(pid, allow_host_loopback, w.as_raw_fd(), api);
        let child = Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", program.display()), e))?;
        drop(w);
        let mut helper = NetHelper { child };
        let mut ready = [0u8; 1];
        let mut rf = std::fs::File::from(r);
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&rf),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10_000u16));
        if !matches!(rf.read(&mut ready), Ok(1)) {
            let mut err = String::new();
            let _ = helper.child.kill();
            if let Some(mut s) = helper.child.stderr.take() {
                let _ = s.read_to_string(&mut err);
            }
            return Err(Error::Host(format!(
                "slirp4netns did not come up: {}",
                err.trim().replace('\n', "; ")
            )));
        }
        for p in publish {
            let mut s = std::os::unix::net::UnixStream::connect(api)
                .map_err(|e| Error::io("connecting to the slirp4netns API", e))?;
            s.write_all(slirp_hostfwd_request(p).as_bytes())
                .map_err(|e| Error::io("publishing a port", e))?;
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            if answer.contains("\"error\"") || answer.is_empty() {
                return Err(Error::Host(format!(
                    "--publish {}:{}: slirp4netns refused: {}",
                    p.host_port,
                    p.sandbox_port,
                    answer.trim()
                )));
            }
        }
        Ok(helper)
    }
}

impl Drop for NetHelper {
    /// The stack keeps no state worth a graceful end (its namespace is
    /// gone with the sandbox), and pasta takes its time over SIGTERM: kill.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_forms() {
        let p = parse_publish("18080:8080").expect("p");
        assert_eq!(p.host_ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(
            (p.host_port, p.sandbox_port, p.proto),
            (18080, 8080, Proto::Tcp)
        );
        let p = parse_publish("0.0.0.0:53:5353/udp").expect("p");
        assert_eq!(p.host_ip.to_string(), "0.0.0.0");
        assert_eq!(p.proto, Proto::Udp);
        let p = parse_publish("[::1]:8443:443").expect("p");
        assert_eq!(p.host_ip.to_string(), "::1");
        for bad in [
            "8080",
            "0:80",
            "80:0",
            "70000:80",
            "a:b",
            "1:2:3:4",
            "80:80/sctp",
            "x.y:1:2",
            "",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pasta_keeps_the_host_loopback_out_unless_asked() {
        let pf = Path::new("/s/pasta.pid");
        let a = build_pasta_args(42, &[], false, false, pf);
        let joined = a.join(" ");
        assert!(joined.contains("--tcp-ns none --udp-ns none"));
        assert!(joined.contains("--no-map-gw"));
        assert!(joined.contains("--tcp-ports none --udp-ports none"));
        assert!(joined.ends_with(" 42"));
        let p = [parse_publish("18080:8080").expect("p")];
        let a = build_pasta_args(42, &p, true, true, pf).join(" ");
        assert!(!a.contains("--no-map-gw"));
        assert!(a.contains("--tcp-ports 127.0.0.1/18080:8080"));
        assert!(a.contains("--dns-forward 169.254.1.1"));
        let several = [
            parse_publish("18080:8080").expect("p"),
            parse_publish("0.0.0.0:18081:8081").expect("p"),
            parse_publish("5353:53/udp").expect("p"),
        ];
        let b = build_pasta_args(42, &several, false, false, pf).join(" ");
        assert!(b.contains(
            "--tcp-ports 127.0.0.1/18080:8080 --tcp-ports 0.0.0.0/18081:8081 --udp-ports 127.0.0.1/5353:53"
        ));
    }

    #[test]
    fn resolv_and_hosts() {
        let f = build_user_net_files(
            "127.0.0.1 localhost\n",
            &["127.0.0.53".parse().expect("ip")],
            Some(Ipv4Addr::new(192, 0, 2, 1)),
            "sbox",
            true,
            false,
        );
        assert_eq!(f.resolv_conf.as_deref(), Some("nameserver 169.254.1.1\n"));
        assert!(f.dns_forward);
        assert!(f.hosts.contains("192.0.2.1\thost.sbox.internal"));
        let f = build_user_net_files(
            "127.0.0.1 localhost\n",
            &["10.0.0.53".parse().expect("ip")],
            Some(Ipv4Addr::new(192, 0, 2, 1)),
            "sbox",
            false,
            false,
        );
        let s = build_user_net_files("", &[], None, "sbox", true, true);
        assert_eq!(s.resolv_conf.as_deref(), Some("nameserver 10.0.2.3\n"));
        assert!(s.hosts.contains("10.0.2.2\thost.sbox.internal"));
        let a = build_slirp_args(7, false, 5, Path::new("/s/api")).join(" ");
        assert!(
            a.contains("--disable-host-loopback") && a.ends_with("7 tap0"),
            "{a}"
        );
        let r = slirp_hostfwd_request(&parse_publish("18080:8080").expect("p"));
        assert!(
            r.contains("\"host_port\":18080") && r.contains("\"guest_port\":8080"),
            "{r}"
        );
        assert_eq!(f.resolv_conf, None);
        assert!(!f.hosts.contains(HOST_ALIAS));
    }
}
