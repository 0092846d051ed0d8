//! Network postures through the real binary as an unprivileged user:
//! none, host, and user (pasta) with published ports. Traffic stays on
//! this machine: host loopback, or a peer network namespace the test makes.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// A tiny HTTP GET; the body on success.
fn http_get(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A host loopback listener that answers one fixed line per connection.
fn serve_host_loopback() -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = l.local_addr().expect("addr").port();
    l.set_nonblocking(true).expect("nonblocking");
    let h = std::thread::spawn(move || {
        let end = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < end {
            match l.accept() {
                Ok((mut c, _)) => {
                    let _ = c.write_all(b"host-service\n");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (port, h)
}

fn py_connect(target: &str, port: u16) -> String {
    format!(
        "import socket\ns=socket.socket()\ns.settimeout(3)\ntry:\n    s.connect(('{target}', {port}))\n    print('connected', s.recv(64).decode().strip())\nexcept OSError as e:\n    print('failed', e)\n"
    )
}

#[test]
fn user_mode_keeps_host_loopback_out_unless_allowed() {
    let (port, _h) = serve_host_loopback();
    let p = Project::new("netuser");
    let o = ok(output(sbox(
        &p.dir,
        &[
            "run",
            "--net",
            "user",
            "--",
            "python3",
            "-c",
            &py_connect("127.0.0.1", port),
        ],
    )));
    assert!(
        o.starts_with("failed"),
        "host loopback reachable by default: {o}"
    );
    let gw = ok(run_sh(
        &p.dir,
        &["--net", "user"],
        "ip route 2>/dev/null | awk '/default/{print $3}' || true",
    ));
    let gw = gw.trim();
    if !gw.is_empty() {
        let o = ok(output(sbox(
            &p.dir,
            &[
                "run",
                "--net",
                "user",
                "--",
                "python3",
                "-c",
                &py_connect(gw, port),
            ],
        )));
        assert!(
            o.starts_with("failed"),
            "host loopback reachable through the gateway: {o}"
        );
    }
    let o = ok(output(sbox(
        &p.dir,
        &[
            "run",
            "--net",
            "user",
            "--allow-host-loopback",
            "--",
            "python3",
            "-c",
            &py_connect("host.sbox.internal", port),
        ],
    )));
    assert_eq!(o.trim(), "connected host-service", "{o}");
    let links = ok(run_sh(
        &p.dir,
        &["--net", "user"],
        "ls /sys/class/net | tr '\\n' ' '",
    ));
    assert!(
        links.contains("lo") && links.split_whitespace().count() == 2,
        "{links}"
    );
}

/// A peer "host" in a network namespace of the test's own, reached over a
/// veth pair; removed when dropped.
struct Peer {
    ns: String,
    server: std::process::Child,
    addr: String,
}

impl Peer {
    fn new() -> Self {
        assert!(
            nix::unistd::getuid().is_root(),
            "this test makes a peer network namespace and needs root (CI runs as root)"
        );
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = (std::process::id() * 7 + n) % 200 + 20;
        let ns = format!("sbox-peer-{}-{n}", std::process::id());
        let (host_if, peer_if) = (format!("vsb{id}"), format!("vsbp{id}"));
        let (host_ip, peer_ip) = (format!("198.18.{id}.1/30"), format!("198.18.{id}.2"));
        let ip = |args: &[&str]| {
            let st = std::process::Command::new("ip")
                .args(args)
                .status()
                .expect("ip");
            assert!(st.success(), "ip {args:?}");
        };
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &ns])
            .status();
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
        ]);
        ip(&["link", "set", &peer_if, "netns", &ns]);
        ip(&["addr", "add", &host_ip, "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{peer_ip}/30"),
            "dev",
            &peer_if,
        ]);
        ip(&["-n", &ns, "link", "set", &peer_if, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let server = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "python3",
                "-m",
                "http.server",
                "18181",
                "--bind",
                &peer_ip,
            ])
            .current_dir("/tmp")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("peer server");
        let addr = format!("{peer_ip}:18181");
        assert!(
            wait_for(15, || http_get(&addr).is_some()),
            "peer server did not start"
        );
        Peer { ns, server, addr }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .status();
    }
}

#[test]
fn user_mode_reaches_other_hosts_and_none_does_not() {
    let peer = Peer::new();
    let p = Project::new("outbound");
    let fetch = format!(
        "import urllib.request\ntry:\n    r = urllib.request.urlopen('http://{}/', timeout=5)\n    print('status', r.status)\nexcept Exception as e:\n    print('failed', e)\n",
        peer.addr
    );
    let o = ok(output(sbox(
        &p.dir,
        &["run", "--net", "user", "--", "python3", "-c", &fetch],
    )));
    assert_eq!(o.trim(), "status 200", "{o}");
    let o = ok(output(sbox(
        &p.dir,
        &["run", "--net", "none", "--", "python3", "-c", &fetch],
    )));
    assert!(o.starts_with("failed"), "{o}");
}

#[test]
fn published_ports_reach_servers_inside_and_are_freed_after() {
    // Two ports, each published on its own (pasta takes one spec each).
    let free: Vec<TcpListener> = (0..2)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("port"))
        .collect();
    let host_ports: Vec<u16> = free
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect();
    drop(free);
    let p = Project::new("publish");
    p.write("index.html", "hello from the sandbox\n");
    let (spec1, spec2) = (
        format!("{}:8080", host_ports[0]),
        format!("127.0.0.1:{}:8081", host_ports[1]),
    );
    let mut child = spawn(sbox(
        &p.dir,
        &[
            "run",
            "--net",
            "user",
            "-p",
            &spec1,
            "-p",
            &spec2,
            "--",
            "sh",
            "-c",
            "python3 -m http.server 8081 --bind 127.0.0.1 & exec python3 -m http.server 8080 --bind 127.0.0.1",
        ],
    ));
    let addrs: Vec<String> = host_ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let got = wait_for(20, || {
        addrs
            .iter()
            .all(|a| http_get(a).is_some_and(|r| r.contains("hello from the sandbox")))
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let st = child.wait().expect("wait");
    assert!(got, "a published port did not answer");
    assert_eq!(st.code(), Some(143));
    // The ports are free again once sbox has exited.
    for a in &addrs {
        TcpListener::bind(a).expect("a published port is still bound");
    }
    assert!(stale_state().is_empty());
}

#[test]
fn bad_network_input_is_refused() {
    let busy = TcpListener::bind("127.0.0.1:0").expect("busy");
    let busy_port = busy.local_addr().expect("addr").port();
    let p = Project::new("netbad");
    let in_use = format!("{busy_port}:80");
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["--net", "user", "-p", "8080"],
            125,
            "expected [IP:]HOSTPORT:SANDBOXPORT",
        ),
        (vec!["--net", "user", "-p", "0:80"], 125, "not a port"),
        (vec!["--net", "user", "-p", "70000:80"], 125, "not a port"),
        (
            vec!["--net", "user", "-p", "80:80/sctp"],
            125,
            "unknown protocol",
        ),
        (
            vec!["--net", "user", "-p", &in_use],
            125,
            "Address already in use",
        ),
        (
            vec!["--net", "none", "-p", "18080:80"],
            125,
            "needs --net user",
        ),
        (vec!["--net", "bogus"], 2, "bogus"),
    ];
    for (opts, code, needle) in cases {
        let mut args = vec!["run"];
        args.extend_from_slice(&opts);
        args.extend_from_slice(&["--", "touch", "started"]);
        let o = output(sbox(&p.dir, &args));
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{opts:?}: {e}");
        assert!(e.contains(needle), "{opts:?}: {e}");
        assert!(!p.dir.join("started").exists(), "{opts:?}: the command ran");
    }
    assert!(stale_state().is_empty());
    drop(busy);
}

#[test]
fn landlock_ports_apply_with_user_networking() {
    let (pa, _h) = serve_host_loopback();
    let (pd, _h2) = serve_host_loopback();
    let p = Project::new("netports");
    let prof = p.write(
        "ports.toml",
        &format!("include = [\"dev\"]\n[network]\nmode = \"user\"\nallow_host_loopback = true\nallowed_connect_ports = [{pa}]\n"),
    );
    let script = format!(
        "{}\n{}",
        py_connect("host.sbox.internal", pa),
        py_connect("host.sbox.internal", pd)
    );
    let o = ok(output(sbox(
        &p.dir,
        &[
            "run",
            "--profile",
            &prof.to_string_lossy(),
            "--",
            "python3",
            "-c",
            &script,
        ],
    )));
    let mut l = o.lines();
    assert_eq!(l.next(), Some("connected host-service"), "{o}");
    assert!(
        l.next().is_some_and(|x| x.contains("Permission denied")),
        "{o}"
    );
}

#[test]
fn slirp4netns_is_the_fallback_stack() {
    let peer = Peer::new();
    let (port, _h) = serve_host_loopback();
    let p = Project::new("slirp");
    let with_slirp = |args: &[&str]| {
        let mut c = sbox(&p.dir, args);
        c.env("SBOX_NET_STACK", "slirp4netns");
        output(c)
    };
    let fetch = format!(
        "import urllib.request\ntry:\n    r = urllib.request.urlopen('http://{}/', timeout=5)\n    print('status', r.status)\nexcept Exception as e:\n    print('failed', e)\n",
        peer.addr
    );
    let o = ok(with_slirp(&[
        "run", "--net", "user", "--", "python3", "-c", &fetch,
    ]));
    assert_eq!(o.trim(), "status 200", "{o}");
    let links = ok(with_slirp(&[
        "run",
        "--net",
        "user",
        "--",
        "ls",
        "/sys/class/net",
    ]));
    assert!(links.contains("tap0"), "not slirp4netns: {links}");
    let o = ok(with_slirp(&[
        "run",
        "--net",
        "user",
        "--",
        "python3",
        "-c",
        &py_connect("10.0.2.2", port),
    ]));
    assert!(
        o.starts_with("failed"),
        "host loopback reachable by default: {o}"
    );
    let o = ok(with_slirp(&[
        "run",
        "--net",
        "user",
        "--allow-host-loopback",
        "--",
        "python3",
        "-c",
        &py_connect("host.sbox.internal", port),
    ]));
    assert_eq!(o.trim(), "connected host-service", "{o}");
    // A published port.
    let free = TcpListener::bind("127.0.0.1:0").expect("port");
    let host_port = free.local_addr().expect("addr").port();
    drop(free);
    p.write("index.html", "hello over slirp\n");
    let spec = format!("{host_port}:8080");
    let mut c = sbox(
        &p.dir,
        &[
            "run",
            "--net",
            "user",
            "-p",
            &spec,
            "--",
            "python3",
            "-m",
            "http.server",
            "8080",
        ],
    );
    c.env("SBOX_NET_STACK", "slirp4netns");
    let mut child = spawn(c);
    let addr = format!("127.0.0.1:{host_port}");
    let got = wait_for(20, || {
        http_get(&addr).is_some_and(|r| r.contains("hello over slirp"))
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let _ = child.wait();
    assert!(got, "the published port did not answer");
    TcpListener::bind(&addr).expect("the published port is still bound");
}

/// A host loopback HTTP server answering every request with `body`.
fn serve_http(body: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(
                format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    port
}

/// Python that resolves NAME and prints "resolved" or "unresolved".
fn py_resolve(name: &str) -> String {
    format!(
        "import socket\ntry:\n    socket.getaddrinfo('{name}', 80, socket.AF_INET)\n    print('resolved')\nexcept OSError:\n    print('unresolved')\n"
    )
}

#[test]
fn allow_net_reaches_the_listed_names_and_ports_only() {
    let (pa, _h) = serve_host_loopback();
    let (pb, _h2) = serve_host_loopback();
    let ph = serve_http("hello-egress\n");
    let p = Project::new("egress");
    let script = [
        // A raw, non-HTTP protocol to a listed port of the host's loopback.
        py_connect("host.sbox.internal", pa),
        // Another port of it, listening on the host but not listed.
        py_connect("host.sbox.internal", pb),
        // A name given with --add-host and allowed.
        py_connect("db.test", pa),
        // A wildcard entry.
        py_connect("api.wild.test", pa),
        // Unlisted names do not resolve.
        py_resolve("evil.test"),
        py_resolve("wild.test"),
        // The forwarder's address without a name behind it.
        py_connect("127.0.0.1", pa),
        // Addresses outside lead nowhere, over TCP or UDP.
        py_connect("198.18.0.1", pa),
        "import socket\nu=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nu.settimeout(3)\ntry:\n    u.connect(('198.18.0.1', 9999))\n    u.send(b'x')\n    u.recv(1)\n    print('udp answered')\nexcept OSError as e:\n    print('udp failed', e)\n".to_string(),
    ]
    .join("");
    let allow_a = format!("host.sbox.internal:{pa},{ph}");
    let allow_db = format!("db.test:{pa},*.wild.test:{pa}");
    let url = format!("http://host.sbox.internal:{ph}/");
    let o = output(sbox(
        &p.dir,
        &[
            "run",
            "--allow-net",
            &allow_a,
            "--allow-net",
            &allow_db,
            "--add-host",
            "db.test:127.0.0.1",
            "--add-host",
            "api.wild.test:127.0.0.1",
            "--log-denials",
            "--",
            "sh",
            "-c",
            &format!(
                "env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY curl -sS --max-time 10 {url}; python3 -c \"$0\"",
            ),
            &script,
        ],
    ));
    let out = ok(o.clone());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "hello-egress", "{out}");
    assert_eq!(lines[1], "connected host-service", "{out}");
    assert!(
        lines[2].starts_with("failed"),
        "unlisted port reached: {out}"
    );
    assert_eq!(lines[3], "connected host-service", "{out}");
    assert_eq!(lines[4], "connected host-service", "{out}");
    assert_eq!(lines[5], "unresolved", "{out}");
    assert_eq!(lines[6], "unresolved", "{out}");
    assert!(lines[7].starts_with("failed"), "{out}");
    assert!(lines[8].starts_with("failed"), "{out}");
    assert!(lines[9].starts_with("udp failed"), "{out}");
    let err = stderr(&o);
    assert!(
        err.contains("name evil.test") && err.contains("add \"--allow-net evil.test\""),
        "{err}"
    );
    assert!(
        err.contains("an address no listed name resolved to"),
        "{err}"
    );
    assert!(err.contains("operations were refused in all"), "{err}");
    assert!(stale_state().is_empty());
}

#[test]
fn allow_net_refuses_private_addresses_unless_the_entry_allows_them() {
    let (pa, _h) = serve_host_loopback();
    let p = Project::new("egress-private");
    // `localhost` resolves to the host's loopback, on the host.
    let refused = output(sbox(
        &p.dir,
        &[
            "run",
            "--allow-net",
            &format!("localhost:{pa}"),
            "--",
            "python3",
            "-c",
            &py_connect("localhost", pa),
        ],
    ));
    let out = ok(refused.clone());
    assert!(out.starts_with("failed"), "{out}");
    let err = stderr(&refused);
    assert!(
        err.contains("1 operation was refused; run with --log-denials"),
        "{err}"
    );
    let o = output(sbox(
        &p.dir,
        &[
            "run",
            "--log-denials",
            "--allow-net",
            &format!("localhost:{pa}"),
            "--",
            "python3",
            "-c",
            &py_connect("localhost", pa),
        ],
    ));
    let err = stderr(&o);
    assert!(
        err.contains("resolves to 127.0.0.1")
            && err.contains(&format!("--allow-net localhost:{pa},private")),
        "{err}"
    );
    let o = ok(output(sbox(
        &p.dir,
        &[
            "run",
            "--allow-net",
            &format!("localhost:{pa},private"),
            "--",
            "python3",
            "-c",
            &py_connect("localhost", pa),
        ],
    )));
    assert_eq!(o.trim(), "connected host-service", "{o}");
}

#[test]
fn bad_allow_net_input_is_refused() {
    let p = Project::new("egress-bad");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--allow-net", "x.test:0"], "not a port"),
        (vec!["--allow-net", "a b"], "not a host name"),
        (
            vec!["--allow-net", "x.test", "--net", "host"],
            "do not go together",
        ),
        (vec!["--add-host", "x.test:127.0.0.1"], "needs --allow-net"),
        (
            vec!["--allow-net", "x.test", "--add-host", "x.test"],
            "expected NAME:IP",
        ),
    ];
    for (opts, needle) in cases {
        let mut args = vec!["run"];
        args.extend_from_slice(&opts);
        args.extend_from_slice(&["--", "touch", "started"]);
        let o = output(sbox(&p.dir, &args));
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(125), "{opts:?}: {e}");
        assert!(e.contains(needle), "{opts:?}: {e}");
        assert!(!p.dir.join("started").exists(), "{opts:?}: the command ran");
    }
}

#[test]
fn the_debian_registry_profile_reaches_the_mirror_by_name_and_nothing_else() {
    // A real client against the distribution's mirror (CI reaches it),
    // through the built-in registries-debian profile, no proxy settings.
    let p = Project::new("egress-debian");
    let o = output(sbox(
        &p.dir,
        &[
            "run",
            "--profile",
            "registries-debian",
            "--log-denials",
            "--",
            "sh",
            "-c",
            "unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy; \
             for u in http://deb.debian.org/debian/dists/stable/Release https://deb.debian.org/debian/dists/stable/Release https://pypi.org/simple/; do \
             curl -sS -o /dev/null --max-time 20 -w '%{http_code}\\n' $u 2>/dev/null; done; true",
        ],
    ));
    let out = ok(o.clone());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"200"), "{out}");
    assert_eq!(lines.get(1), Some(&"200"), "{out}");
    assert!(
        lines.get(2) == Some(&"000"),
        "an unlisted registry was reached: {out}"
    );
    let err = stderr(&o);
    assert!(err.contains("add \"--allow-net pypi.org\""), "{err}");
}

#[test]
fn a_project_file_adds_names_to_net_and_trust_shows_them() {
    let home = Project::new("egress-home");
    let p = Project::new("egress-trust");
    p.write(
        ".sbox.toml",
        "include = [\"net\"]\n[network]\nallow = [\"evil.example:22\"]\n",
    );
    let sb = |args: &[&str]| {
        let mut c = sbox(&p.dir, args);
        use_home(&mut c, &home.dir);
        output(c)
    };
    let show = ok(sb(&["trust", "--show"]));
    assert!(
        show.contains("reaches evil.example:22 over the network"),
        "{show}"
    );
    assert!(!show.contains("reaches pypi.org"), "{show}");
    ok(sb(&["trust", "--yes"]));
    let script = [
        py_resolve("evil.example"),
        py_resolve("pypi.org"),
        py_resolve("example.org"),
    ]
    .join("");
    let o = ok(sb(&["run", "--", "python3", "-c", &script]));
    assert_eq!(o, "resolved\nresolved\nunresolved\n", "{o}");
}

#[test]
fn allow_net_reaches_a_peer_by_name_and_not_by_address() {
    let peer = Peer::new();
    let (ip, port) = peer.addr.split_once(':').expect("addr");
    let p = Project::new("egress-peer");
    let fetch = |url: &str| {
        format!(
            "import urllib.request\ntry:\n    r = urllib.request.urlopen('{url}', timeout=5)\n    print('status', r.status)\nexcept Exception as e:\n    print('failed', e)\n"
        )
    };
    let script = [
        fetch(&format!("http://peer.test:{port}/")),
        fetch(&format!("http://{}/", peer.addr)),
    ]
    .join("");
    let out = output(sbox(
        &p.dir,
        &[
            "run",
            "-v",
            "--allow-net",
            &format!("peer.test:{port}"),
            "--add-host",
            &format!("peer.test:{ip}"),
            "--",
            "python3",
            "-c",
            &script,
        ],
    ));
    let err = stderr(&out);
    assert!(
        err.contains("network: own namespace, only these names reachable")
            && err.contains(&format!("peer.test:{port}")),
        "{err}"
    );
    let o = ok(out);
    let mut l = o.lines();
    assert_eq!(l.next(), Some("status 200"), "{o}");
    assert!(l.next().is_some_and(|x| x.starts_with("failed")), "{o}");
}

/// Without --log-denials too: a connection to a port of a listed name that
/// no entry lists, to the peer's address at the listed port and at another
/// one are each counted, and the line at exit says how many.
#[test]
fn refused_connections_are_counted_without_log_denials() {
    let peer = Peer::new();
    let (ip, port) = peer.addr.split_once(':').expect("addr");
    let port: u16 = port.parse().expect("port");
    let other = if port == 9 { 10 } else { 9 };
    let p = Project::new("egress-count");
    let script = [
        py_connect("peer.test", other),
        py_connect(ip, port),
        py_connect(ip, other),
    ]
    .join("");
    let o = output(sbox(
        &p.dir,
        &[
            "run",
            "--allow-net",
            &format!("peer.test:{port}"),
            "--add-host",
            &format!("peer.test:{ip}"),
            "--",
            "python3",
            "-c",
            &script,
        ],
    ));
    let err = stderr(&o);
    let out = ok(o);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("failed")).count(),
        3,
        "{out}"
    );
    assert!(
        err.contains("sbox: 3 operations were refused; run with --log-denials to see them"),
        "{err}"
    );
}

#[test]
fn forwarded_connections_end_with_the_sandbox() {
    let l = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = l.local_addr().expect("addr").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut c, _)) = l.accept() {
            let _ = tx.send("accepted");
            let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
            let mut buf = [0u8; 16];
            let end = match c.read(&mut buf) {
                Ok(0) => "closed",
                _ => "still open",
            };
            let _ = tx.send(end);
        }
    });
    let p = Project::new("egress-end");
    let script = format!(
        "import socket, time\ns = socket.create_connection(('host.sbox.internal', {port}))\nprint('connected', flush=True)\ntime.sleep(60)\n"
    );
    let mut child = spawn(sbox(
        &p.dir,
        &[
            "run",
            "--allow-net",
            &format!("host.sbox.internal:{port}"),
            "--",
            "python3",
            "-c",
            &script,
        ],
    ));
    let accepted = rx.recv_timeout(Duration::from_secs(20));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let st = child.wait().expect("wait");
    assert_eq!(accepted, Ok("accepted"), "the connection did not arrive");
    assert_eq!(st.code(), Some(143));
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)),
        Ok("closed"),
        "the forwarded connection outlived the sandbox"
    );
    assert!(stale_state().is_empty());
}

/// A real client and a real registry that CI reaches (the Python package
/// index): `pip download` through `--allow-net` with no proxy settings;
/// with the index's host alone it fails on the file download, and the
/// report names the file host with the fix.
#[test]
fn pip_downloads_from_the_package_index_by_name() {
    let p = Project::new("egress-pip");
    let pip = |allow: &str| {
        output(sbox(
            &p.dir,
            &[
                "run",
                "--allow-net",
                allow,
                "--log-denials",
                "--",
                "sh",
                "-c",
                "unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy PIP_INDEX_URL; \
                 python3 -m pip download --no-deps --no-cache-dir --retries 0 --timeout 20 \
                 --disable-pip-version-check -q -d /tmp/dl six && ls /tmp/dl",
            ],
        ))
    };
    let o = pip("pypi.org,files.pythonhosted.org");
    let out = ok(o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("six-") && l.ends_with(".whl")),
        "{out}"
    );
    let o = pip("pypi.org");
    let err = stderr(&o);
    assert_ne!(
        o.status.code(),
        Some(0),
        "downloaded without the file host: {err}"
    );
    assert!(
        err.contains("add \"--allow-net files.pythonhosted.org\""),
        "{err}"
    );
}
