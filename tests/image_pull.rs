//! `sbox image pull` and pulling on first use, against a real registry
//! (Debian's `docker-registry serve` on 127.0.0.1, with a temporary
//! storage directory, torn down at the end) and a small fake registry in
//! this process for what a real one will not do (a Bearer token flow with
//! a token server, a blob that does not match its digest, a registry that
//! is not on localhost). The images are made here: a busybox-static root,
//! tarred, compressed with gzip or zstd, and uploaded through the
//! registry API.

mod common;
#[path = "common/image.rs"]
mod image;

use common::*;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

fn sha(b: &[u8]) -> String {
    format!(
        "sha256:{}",
        Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    )
}

/// Some bytes and their digest.
#[derive(Clone)]
struct Blob {
    bytes: Vec<u8>,
    digest: String,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Blob {
        let digest = sha(&bytes);
        Blob { bytes, digest }
    }

    fn hex(&self) -> &str {
        &self.digest[7..]
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Compression {
    Gzip,
    Zstd,
}

/// A layer: the compressed blob, its media type and the digest of the
/// uncompressed tar (for the config's diff_ids).
#[derive(Clone)]
struct Layer {
    blob: Blob,
    media_type: &'static str,
    diff_id: String,
}

fn scratch_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "sbox-pull-{}-{tag}-{}",
        std::process::id(),
        unique()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// A layer holding `files` (path → text), and busybox with `sh` and `cat`
/// when `busybox`.
fn layer(files: &[(&str, &str)], busybox: bool, c: Compression) -> Layer {
    let root = scratch_dir("layer");
    if busybox {
        let bb = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox (Debian busybox-static) is installed");
        std::fs::create_dir_all(root.join("bin")).expect("mkdir");
        std::fs::copy(bb, root.join("bin/busybox")).expect("copy busybox");
        for l in ["sh", "cat", "ls", "true"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(l)).expect("symlink");
        }
    }
    for (p, text) in files {
        let f = root.join(p);
        std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
        std::fs::write(&f, text).expect("write layer file");
    }
    let tar = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "--sort=name"])
        .args(["--mtime=@0", "-C"])
        .arg(&root)
        .args(["-cf", "-", "."])
        .output()
        .expect("tar");
    assert!(tar.status.success(), "tar failed");
    let _ = std::fs::remove_dir_all(&root);
    let (prog, args, media_type): (&str, &[&str], _) = match c {
        Compression::Gzip => (
            "gzip",
            &["-n", "-c"],
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ),
        Compression::Zstd => (
            "zstd",
            &["-q", "-c"],
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    };
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let data = tar.stdout.clone();
    let w = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("compress");
    w.join().expect("writer").expect("write to compressor");
    assert!(out.status.success());
    Layer {
        blob: Blob::new(out.stdout),
        media_type,
        diff_id: sha(&tar.stdout),
    }
}

/// An image: its manifest (OCI unless `docker`), config and layers.
#[derive(Clone)]
struct Image {
    manifest: Blob,
    media_type: &'static str,
    config: Blob,
    layers: Vec<Layer>,
}

fn image(layers: Vec<Layer>, arch: &str, docker: bool) -> Image {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let config = Blob::new(
        serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        })
        .to_string()
        .into_bytes(),
    );
    let (mt, config_type) = if docker {
        (
            DOCKER_MANIFEST,
            "application/vnd.docker.container.image.v1+json",
        )
    } else {
        (OCI_MANIFEST, "application/vnd.oci.image.config.v1+json")
    };
    let layer_type = |l: &Layer| {
        if docker {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        } else {
            l.media_type
        }
    };
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": {"mediaType": config_type, "digest": config.digest, "size": config.bytes.len()},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": layer_type(l), "digest": l.blob.digest, "size": l.blob.bytes.len()
        })).collect::<Vec<_>>(),
    });
    Image {
        manifest: Blob::new(manifest.to_string().into_bytes()),
        media_type: mt,
        config,
        layers,
    }
}

/// A small runnable image whose /etc/os-release says `name`.
fn busybox_image(name: &str, c: Compression) -> Image {
    let text = format!("NAME=\"{name}\"\nID={name}\n");
    image(
        vec![layer(&[("etc/os-release", &text)], true, c)],
        host_arch(),
        false,
    )
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn other_arch() -> &'static str {
    if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    }
}

/// A manifest list of `(image, arch)`.
fn index(entries: &[(&Image, &str)]) -> Blob {
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": entries.iter().map(|(i, arch)| serde_json::json!({
            "mediaType": i.media_type, "digest": i.manifest.digest, "size": i.manifest.bytes.len(),
            "platform": {"architecture": arch, "os": "linux"},
        })).collect::<Vec<_>>(),
    });
    Blob::new(m.to_string().into_bytes())
}

/// A port nobody listens on (at the moment).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

// ---------------------------------------------------------------------------
// The real registry

/// `docker-registry serve` on 127.0.0.1 with its own storage, killed and
/// removed when dropped.
struct Registry {
    child: Child,
    dir: PathBuf,
    addr: String,
    basic: Option<(String, String)>,
}

impl Registry {
    /// A registry; with `basic`, one that wants that user and password
    /// (htpasswd).
    fn start(basic: Option<(&str, &str)>) -> Registry {
        let dir = scratch_dir("registry");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut auth = String::new();
        if let Some((u, p)) = basic {
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .expect("htpasswd (apache2-utils) is installed");
            assert!(out.status.success());
            std::fs::write(dir.join("htpasswd"), &out.stdout).expect("write htpasswd");
            auth = format!(
                "auth:\n  htpasswd:\n    realm: sbox-test\n    path: {}\n",
                dir.join("htpasswd").display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
            dir.join("storage").display()
        );
        Self::serve(dir, addr, config, basic)
    }

    /// A second registry serving the same storage over https with a
    /// self-signed certificate, on 127.0.0.2 (not a localhost name).
    fn tls_mirror(&self) -> Registry {
        let dir = scratch_dir("registry-tls");
        let addr = format!("127.0.0.2:{}", free_port());
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.2",
                "-addext",
                "subjectAltName=IP:127.0.0.2",
            ])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n  tls:\n    certificate: {}\n    key: {}\n",
            self.dir.join("storage").display(),
            dir.join("cert.pem").display(),
            dir.join("key.pem").display(),
        );
        Self::serve(dir, addr, config, None)
    }

    fn serve(dir: PathBuf, addr: String, config: String, basic: Option<(&str, &str)>) -> Registry {
        std::fs::write(dir.join("config.yml"), config).expect("write config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).expect("log"))
            .spawn()
            .expect("docker-registry (Debian docker-registry) is installed");
        let r = Registry {
            child,
            dir,
            addr,
            basic: basic.map(|(u, p)| (u.to_string(), p.to_string())),
        };
        let up = wait_for(20, || TcpStream::connect(&r.addr).is_ok());
        assert!(
            up,
            "docker-registry did not start: {}",
            std::fs::read_to_string(r.dir.join("log")).unwrap_or_default()
        );
        r
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn req(&self, method: &str, url: &str) -> ureq::Request {
        let r = ureq::request(method, url);
        match &self.basic {
            Some((u, p)) => {
                use base64::Engine as _;
                let v = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                r.set("Authorization", &format!("Basic {v}"))
            }
            None => r,
        }
    }

    fn put_blob(&self, repo: &str, b: &Blob) {
        let r = self
            .req("POST", &self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .call()
            .expect("start upload");
        let loc = r.header("location").expect("upload location").to_string();
        let loc = if loc.starts_with('/') {
            self.url(&loc)
        } else {
            loc
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        self.req("PUT", &format!("{loc}{sep}digest={}", b.digest))
            .set("Content-Type", "application/octet-stream")
            .send_bytes(&b.bytes)
            .expect("upload blob");
    }

    fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, b: &Blob) {
        self.req(
            "PUT",
            &self.url(&format!("/v2/{repo}/manifests/{reference}")),
        )
        .set("Content-Type", media_type)
        .send_bytes(&b.bytes)
        .expect("put manifest");
    }

    /// Upload the image's blobs and its manifest (by digest, and as `tag`
    /// when given).
    fn push(&self, repo: &str, tag: Option<&str>, i: &Image) {
        self.put_blob(repo, &i.config);
        for l in &i.layers {
            self.put_blob(repo, &l.blob);
        }
        self.put_manifest(repo, &i.manifest.digest, i.media_type, &i.manifest);
        if let Some(t) = tag {
            self.put_manifest(repo, t, i.media_type, &i.manifest);
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// A fake registry in this process

#[derive(Default)]
struct FakeState {
    /// path → (content type, body)
    objects: HashMap<String, (String, Vec<u8>)>,
    /// Wants a Bearer token; the token server wants these credentials
    /// (None: anonymous tokens).
    bearer: Option<Option<(String, String)>>,
    /// Every request line seen, with its Authorization header (if any).
    log: Vec<(String, Option<String>)>,
    /// path → where it is redirected to (as registries send blob
    /// downloads to their storage).
    redirects: HashMap<String, String>,
    /// Paths whose next answer breaks off halfway (the connection drops).
    drop_once: Vec<String>,
    /// path → the Docker-Content-Digest header to send (default: the
    /// body's digest).
    digests: HashMap<String, String>,
}

struct Fake {
    addr: String,
    state: Arc<Mutex<FakeState>>,
}

const TOKEN: &str = "t0ken-for-sbox-tests";

impl Fake {
    fn start(host: &str) -> Fake {
        let l = TcpListener::bind(format!("{host}:0")).expect("bind fake registry");
        let addr = l.local_addr().expect("addr").to_string();
        let state = Arc::new(Mutex::new(FakeState::default()));
        let st = state.clone();
        let a = addr.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let st = st.clone();
                let a = a.clone();
                std::thread::spawn(move || {
                    let _ = serve(c, &st, &a);
                });
            }
        });
        Fake { addr, state }
    }

    fn put(&self, path: String, ctype: &str, body: Vec<u8>) {
        self.state
            .lock()
            .expect("lock")
            .objects
            .insert(path, (ctype.to_string(), body));
    }

    fn push(&self, repo: &str, tag: &str, i: &Image) {
        self.put(
            format!("/v2/{repo}/blobs/{}", i.config.digest),
            "application/octet-stream",
            i.config.bytes.clone(),
        );
        for l in &i.layers {
            self.put(
                format!("/v2/{repo}/blobs/{}", l.blob.digest),
                "application/octet-stream",
                l.blob.bytes.clone(),
            );
        }
        for r in [tag, &i.manifest.digest] {
            self.put(
                format!("/v2/{repo}/manifests/{r}"),
                i.media_type,
                i.manifest.bytes.clone(),
            );
        }
    }

    fn log(&self) -> Vec<(String, Option<String>)> {
        self.state.lock().expect("lock").log.clone()
    }
}

fn respond(c: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut h = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    let _ = c.write_all(h.as_bytes());
    let _ = c.write_all(body);
}

fn serve(mut c: TcpStream, st: &Mutex<FakeState>, addr: &str) -> std::io::Result<()> {
    let mut r = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut auth = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            }
        }
    }
    let path = line.split(' ').nth(1).unwrap_or("").to_string();
    let mut s = st.lock().expect("lock");
    s.log.push((line.trim().to_string(), auth.clone()));
    if path.starts_with("/token") {
        let want = s.bearer.clone().flatten();
        let ok = match want {
            None => true,
            Some((u, p)) => {
                use base64::Engine as _;
                let v = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                auth.as_deref() == Some(&format!("Basic {v}"))
            }
        };
        drop(s);
        if ok {
            let body = format!("{{\"token\":\"{TOKEN}\"}}");
            respond(&mut c, "200 OK", &[], body.as_bytes());
        } else {
            respond(&mut c, "401 Unauthorized", &[], b"{}");
        }
        return Ok(());
    }
    if s.bearer.is_some() && auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        drop(s);
        let ch = format!("Bearer realm=\"http://{addr}/token\",service=\"fake-registry\"");
        let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
        respond(
            &mut c,
            "401 Unauthorized",
            &[("WWW-Authenticate", ch)],
            body,
        );
        return Ok(());
    }
    if let Some(to) = s.redirects.get(&path).cloned() {
        drop(s);
        respond(&mut c, "307 Temporary Redirect", &[("Location", to)], b"");
        return Ok(());
    }
    if path == "/v2/" {
        drop(s);
        respond(&mut c, "200 OK", &[], b"{}");
        return Ok(());
    }
    if let Some(i) = s.drop_once.iter().position(|p| *p == path) {
        s.drop_once.remove(i);
        let body = s
            .objects
            .get(&path)
            .map(|o| o.1.clone())
            .unwrap_or_default();
        drop(s);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = c.write_all(head.as_bytes());
        let _ = c.write_all(&body[..body.len() / 2]);
        return Ok(());
    }
    match s.objects.get(&path).cloned() {
        Some((ctype, body)) => {
            let digest = s.digests.get(&path).cloned().unwrap_or_else(|| sha(&body));
            drop(s);
            respond(
                &mut c,
                "200 OK",
                &[("Content-Type", ctype), ("Docker-Content-Digest", digest)],
                &body,
            );
        }
        None => {
            drop(s);
            let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
            respond(
                &mut c,
                "404 Not Found",
                &[("Content-Type", "application/json".into())],
                body,
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Checks

fn data_dir() -> PathBuf {
    user().home.join(".local/share/sbox")
}

/// The blobs directory of the store in `data`.
fn blobs_in(data: &Path) -> PathBuf {
    data.join("images/blobs/sha256")
}

fn has_blob(data: &Path, hex: &str) -> bool {
    blobs_in(data).join(hex).is_file()
}

/// `sbox image pull ARGS` as the test user, in a throwaway project.
fn pull(args: &[&str]) -> Output {
    let p = Project::new("pull");
    let mut a = vec!["image", "pull"];
    a.extend_from_slice(args);
    output(sbox(&p.dir, &a))
}

/// What a failed pull could leave in the store: staging directories of
/// processes that are gone (`staging/PID.N…`; other tests pull at the same
/// time) and partial downloads.
fn leftovers(data: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let images = data.join("images");
    if let Ok(rd) = std::fs::read_dir(images.join("staging")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('.').next().unwrap_or("");
            if pid.is_empty() || !Path::new("/proc").join(pid).exists() {
                out.push(e.path().display().to_string());
            }
        }
    }
    let mut stack = vec![images];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().ends_with(".partial")
                && !p.starts_with(data.join("images/staging"))
            {
                out.push(p.display().to_string());
            }
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out
}

/// A failed pull: exit 125, one line naming `image` and `problem`, nothing
/// half-written in the store.
#[track_caller]
fn refused(o: &Output, image: &str, problem: &str) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(125),
        "want exit 125: stdout {} stderr {err}",
        stdout(o)
    );
    assert_eq!(err.trim().lines().count(), 1, "want one line: {err}");
    assert!(err.contains(image), "names the image {image}: {err}");
    assert!(
        err.to_lowercase().contains(problem),
        "names the problem ({problem}): {err}"
    );
    let left = leftovers(&data_dir());
    assert!(left.is_empty(), "left in the store: {left:?}");
}

/// The image is listed by `sbox image ls`.
fn listed(name: &str) -> bool {
    let p = Project::new("ls");
    ok(output(sbox(&p.dir, &["image", "ls"]))).contains(name)
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn pulls_a_plain_image_and_runs_it() {
    let reg = Registry::start(None);
    let img = busybox_image("pulled-plain", Compression::Gzip);
    reg.push("pulltest/plain", Some("1.0"), &img);
    let name = format!("{}/pulltest/plain:1.0", reg.addr);
    let o = pull(&[&name]);
    assert_eq!(
        ok(o.clone()).trim(),
        img.config.hex(),
        "prints the image id"
    );
    assert!(
        stderr(&o).is_empty(),
        "no progress when stderr is not a terminal: {}",
        stderr(&o)
    );
    let data = data_dir();
    assert!(has_blob(&data, img.layers[0].blob.hex()), "layer stored");
    assert!(has_blob(&data, img.config.hex()), "config stored");
    assert!(listed(&format!("{}/pulltest/plain", reg.addr)));
    // Pulled again: nothing fetched, still fine.
    ok(pull(&[&name]));
    // By digest.
    let by_digest = format!("{}/pulltest/plain@{}", reg.addr, img.manifest.digest);
    assert_eq!(ok(pull(&[&by_digest])).trim(), img.config.hex());

    // On a terminal: a progress line per blob, on stderr.
    let img2 = busybox_image("pulled-on-a-tty", Compression::Gzip);
    reg.push("pulltest/plain", Some("tty"), &img2);
    let name2 = format!("{}/pulltest/plain:tty", reg.addr);
    let p = Project::new("tty");
    let mut c = as_user(
        Path::new("/usr/bin/script"),
        &[
            "-qec",
            &format!("{} image pull {name2} >/dev/null", sbox_bin().display()),
            "/dev/null",
        ],
    );
    c.current_dir(&p.dir);
    let tty = ok(output(c));
    assert!(
        tty.contains(&format!(
            "Copying blob {}",
            &img2.layers[0].blob.hex()[..12]
        )),
        "progress on a terminal: {tty:?}"
    );
    let p = Project::new("run");
    let out = ok(output(sbox(
        &p.dir,
        &["run", "--image", &name, "--", "cat", "/etc/os-release"],
    )));
    assert!(out.contains("pulled-plain"), "{out}");
}

#[test]
fn run_image_pulls_on_first_use() {
    let reg = Registry::start(None);
    let img = busybox_image("first-use", Compression::Gzip);
    reg.push("pulltest/firstuse", Some("v1"), &img);
    let name = format!("{}/pulltest/firstuse:v1", reg.addr);
    let p = Project::new("firstuse");
    // The pull is sbox's, on the host's network: the sandbox has none.
    let out = ok(output(sbox(
        &p.dir,
        &[
            "run",
            "--net",
            "none",
            "--image",
            &name,
            "--",
            "cat",
            "/etc/os-release",
        ],
    )));
    assert!(out.contains("first-use"), "{out}");
    assert!(has_blob(&data_dir(), img.layers[0].blob.hex()));

    // An image the registry does not have: one line saying what was tried.
    let missing = format!("{}/pulltest/firstuse:v2", reg.addr);
    let o = output(sbox(&p.dir, &["run", "--image", &missing, "--", "true"]));
    refused(&o, "pulltest/firstuse:v2", "not found in registry");
    assert!(
        stderr(&o).contains("not in the local store"),
        "{}",
        stderr(&o)
    );
}

/// Where the store keeps the tree of a one-layer image.
fn tree_of(l: &Layer) -> PathBuf {
    data_dir().join("images/trees").join(&l.diff_id[7..])
}

#[test]
fn a_pulled_image_is_unpacked_at_its_first_use_and_checked_then() {
    let reg = Registry::start(None);
    let img = busybox_image("unpacked-later", Compression::Gzip);
    reg.push("pulltest/later", Some("1"), &img);
    let name = format!("{}/pulltest/later:1", reg.addr);
    // The pull stores the verified blobs, as `skopeo copy` does; the tree
    // is made by the first run, which then works as usual.
    ok(pull(&[&name]));
    assert!(has_blob(&data_dir(), img.layers[0].blob.hex()));
    assert!(!tree_of(&img.layers[0]).exists(), "unpacked by the pull");
    let p = Project::new("later");
    let out = ok(output(sbox(
        &p.dir,
        &["run", "--image", &name, "--", "cat", "/etc/os-release"],
    )));
    assert!(out.contains("unpacked-later"), "{out}");
    assert!(tree_of(&img.layers[0]).is_dir(), "unpacked at first use");

    // A layer whose blob matches its digest but whose content is not what
    // the config's diff_id says: the pull (which checks blobs) takes it,
    // the first run refuses it with one line, leaves no tree, and says
    // how to get rid of it.
    let good = busybox_image("tampered", Compression::Gzip);
    let mut bad = good.layers[0].clone();
    bad.diff_id = sha(b"other content");
    let tampered = image(vec![bad.clone()], host_arch(), false);
    reg.push("pulltest/tampered", Some("1"), &tampered);
    let tname = format!("{}/pulltest/tampered:1", reg.addr);
    ok(pull(&[&tname]));
    for _ in 0..2 {
        let o = output(sbox(&p.dir, &["run", "--image", &tname, "--", "true"]));
        refused(&o, &tampered.config.hex()[..12], "cannot be unpacked");
        assert!(stderr(&o).contains("sbox image rm"), "{}", stderr(&o));
        assert!(stderr(&o).contains("corrupt or tampered"), "{}", stderr(&o));
        assert!(!tree_of(&bad).exists());
    }
    ok(output(sbox(&p.dir, &["image", "rm", &tname])));
    assert!(!listed("pulltest/tampered"));
    assert!(!has_blob(&data_dir(), bad.blob.hex()));
}

#[test]
fn manifest_list_gives_the_hosts_platform() {
    let reg = Registry::start(None);
    let mine = image(
        vec![layer(&[("etc/arch", host_arch())], true, Compression::Gzip)],
        host_arch(),
        false,
    );
    let other = image(
        vec![layer(
            &[("etc/arch", other_arch())],
            true,
            Compression::Gzip,
        )],
        other_arch(),
        true,
    );
    reg.push("pulltest/multi", None, &mine);
    reg.push("pulltest/multi", None, &other);
    let list = index(&[(&other, other_arch()), (&mine, host_arch())]);
    reg.put_manifest("pulltest/multi", "latest", OCI_INDEX, &list);
    let name = format!("{}/pulltest/multi", reg.addr);
    ok(pull(&[&name]));
    let data = data_dir();
    assert!(has_blob(&data, mine.layers[0].blob.hex()));
    assert!(has_blob(&data, mine.config.hex()));
    assert!(!has_blob(&data, other.layers[0].blob.hex()));
    assert!(!has_blob(&data, other.config.hex()));
    let p = Project::new("multi");
    let out = ok(output(sbox(
        &p.dir,
        &["run", "--image", &name, "--", "cat", "/etc/arch"],
    )));
    assert_eq!(out.trim(), host_arch());

    // --platform picks the other one (a Docker schema 2 manifest).
    let other_name = format!("{}/pulltest/multi:latest", reg.addr);
    let o = pull(&[
        "--platform",
        &format!("linux/{}", other_arch()),
        &other_name,
    ]);
    ok(o);
    assert!(has_blob(&data, other.layers[0].blob.hex()));
    // A platform the list does not have.
    let o = pull(&["--platform", "linux/s390x", &other_name]);
    refused(&o, "pulltest/multi", "linux/s390x");
}

#[test]
fn zstd_layer() {
    let reg = Registry::start(None);
    let img = busybox_image("zstd-image", Compression::Zstd);
    assert_eq!(&img.layers[0].blob.bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    reg.push("pulltest/zstd", Some("1"), &img);
    let name = format!("{}/pulltest/zstd:1", reg.addr);
    ok(pull(&[&name]));
    assert!(has_blob(&data_dir(), img.layers[0].blob.hex()));
    let p = Project::new("zstd");
    let out = ok(output(sbox(
        &p.dir,
        &["run", "--image", &name, "--", "cat", "/etc/os-release"],
    )));
    assert!(out.contains("zstd-image"), "{out}");
}

#[test]
fn shared_layers_are_fetched_and_stored_once() {
    let fake = Fake::start("127.0.0.1");
    let base = layer(&[("etc/base", "shared\n")], true, Compression::Gzip);
    let a = image(
        vec![
            base.clone(),
            layer(&[("etc/a", "a\n")], false, Compression::Gzip),
        ],
        host_arch(),
        false,
    );
    let b = image(
        vec![
            base.clone(),
            layer(&[("etc/b", "b\n")], false, Compression::Gzip),
        ],
        host_arch(),
        false,
    );
    let u = unique();
    let (ra, rb) = (format!("shared{u}/a"), format!("shared{u}/b"));
    fake.push(&ra, "1", &a);
    fake.push(&rb, "1", &b);
    ok(pull(&[&format!("{}/{ra}:1", fake.addr)]));
    ok(pull(&[&format!("{}/{rb}:1", fake.addr)]));
    let fetched: Vec<String> = fake
        .log()
        .into_iter()
        .map(|(l, _)| l)
        .filter(|l| l.contains(&base.blob.digest))
        .collect();
    assert_eq!(
        fetched.len(),
        1,
        "the shared layer fetched once: {fetched:?}"
    );
    let blobs = blobs_in(&data_dir());
    let copies = std::fs::read_dir(&blobs)
        .expect("blobs")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(base.blob.hex()))
        .count();
    assert_eq!(copies, 1);
}

#[test]
fn basic_auth_with_auth_json_and_creds() {
    let reg = Registry::start(Some(("alice", "wonder-pw")));
    let img = busybox_image("basic-auth", Compression::Gzip);
    reg.push("pulltest/private", Some("1"), &img);
    let name = format!("{}/pulltest/private:1", reg.addr);

    // Without credentials: refused.
    let o = pull(&[&name]);
    refused(&o, "pulltest/private", "refused access");
    // Wrong ones: refused, and the password is not shown.
    let o = pull(&["--creds", "alice:not-the-pw", &name]);
    refused(&o, "pulltest/private", "refused access");
    assert!(!stderr(&o).contains("not-the-pw"));
    // --creds.
    ok(pull(&["--creds", "alice:wonder-pw", &name]));

    // auth.json in a home of its own (so the other tests' pulls do not
    // see it), as podman writes it.
    let home = own_home();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:wonder-pw");
    let f = home.join(".config/containers/auth.json");
    std::fs::write(
        &f,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr),
    )
    .expect("write auth.json");
    chown(&f);
    let p = Project::new("authjson");
    let mut c = sbox(&p.dir, &["image", "pull", &name]);
    use_home(&mut c, &home);
    let o = output(c);
    assert!(!stdout(&o).contains("wonder-pw") && !stderr(&o).contains("wonder-pw"));
    ok(o);
    assert!(has_blob(
        &home.join(".local/share/sbox"),
        img.layers[0].blob.hex()
    ));
    // The sandbox does not see the credentials.
    let mut c = sbox(
        &p.dir,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "cat ~/.config/containers/auth.json; env; echo done",
        ],
    );
    use_home(&mut c, &home);
    let out = ok(output(c));
    assert!(out.contains("done") && !out.contains(&auth), "{out}");
}

#[test]
fn bearer_token_flow() {
    let fake = Fake::start("127.0.0.1");
    fake.state.lock().expect("lock").bearer = Some(Some(("bob".into(), "token-pw".into())));
    let img = busybox_image("bearer", Compression::Gzip);
    let repo = format!("tok{}/img", unique());
    fake.push(&repo, "2", &img);
    let name = format!("{}/{repo}:2", fake.addr);

    let o = pull(&[&name]);
    refused(&o, &repo, "refused access");
    ok(pull(&["--creds", "bob:token-pw", &name]));
    let log = fake.log();
    let token_req = log
        .iter()
        .find(|(l, a)| l.starts_with("GET /token") && a.is_some())
        .expect("asked the token server with credentials");
    assert!(
        token_req.0.contains("service=fake-registry")
            && token_req.0.contains(&format!(
                "scope=repository%3A{}%3Apull",
                repo.replace('/', "%2F")
            )),
        "{}",
        token_req.0
    );
    // The registry got the token, never the password.
    assert!(log
        .iter()
        .any(|(l, a)| l.contains(&img.layers[0].blob.digest)
            && a.as_deref() == Some(&format!("Bearer {TOKEN}"))));
    assert!(has_blob(&data_dir(), img.layers[0].blob.hex()));

    // A layer the registry redirects to other storage: fetched from there,
    // without the registry's token.
    let storage = Fake::start("127.0.0.1");
    let img2 = busybox_image("redirected", Compression::Gzip);
    let repo2 = format!("tok{}/redirected", unique());
    fake.push(&repo2, "1", &img2);
    let layer_path = format!("/v2/{repo2}/blobs/{}", img2.layers[0].blob.digest);
    let stored_at = format!("/storage/{}", img2.layers[0].blob.hex());
    storage.put(
        stored_at.clone(),
        "application/octet-stream",
        img2.layers[0].blob.bytes.clone(),
    );
    fake.state
        .lock()
        .expect("lock")
        .redirects
        .insert(layer_path, format!("http://{}{stored_at}", storage.addr));
    ok(pull(&[
        "--creds",
        "bob:token-pw",
        &format!("{}/{repo2}:1", fake.addr),
    ]));
    let slog = storage.log();
    assert_eq!(slog.len(), 1, "{slog:?}");
    assert_eq!(slog[0].1, None, "no Authorization to the storage: {slog:?}");
    assert!(has_blob(&data_dir(), img2.layers[0].blob.hex()));

    // Anonymous tokens.
    let anon = Fake::start("127.0.0.1");
    anon.state.lock().expect("lock").bearer = Some(None);
    let repo2 = format!("anon{}/img", unique());
    anon.push(&repo2, "1", &img);
    ok(pull(&[&format!("{}/{repo2}:1", anon.addr)]));
}

#[test]
fn unknown_tag_and_registry_down() {
    let reg = Registry::start(None);
    let img = busybox_image("tags", Compression::Gzip);
    reg.push("pulltest/tags", Some("exists"), &img);
    let o = pull(&[&format!("{}/pulltest/tags:missing", reg.addr)]);
    refused(&o, "pulltest/tags:missing", "not found");
    let o = pull(&[&format!("{}/pulltest/nosuchrepo:1", reg.addr)]);
    refused(&o, "pulltest/nosuchrepo", "not found");

    let port = free_port();
    let o = pull(&[&format!("127.0.0.1:{port}/pulltest/down:1")]);
    refused(&o, "pulltest/down", "cannot reach");
    assert!(!listed("pulltest/down"));
}

#[test]
fn blob_with_a_wrong_digest_is_refused() {
    let fake = Fake::start("127.0.0.1");
    let img = busybox_image("corrupt", Compression::Gzip);
    let repo = format!("bad{}/img", unique());
    fake.push(&repo, "1", &img);
    // The registry serves other bytes (same size) for the layer.
    let mut bytes = img.layers[0].blob.bytes.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fake.put(
        format!("/v2/{repo}/blobs/{}", img.layers[0].blob.digest),
        "application/octet-stream",
        bytes,
    );
    let o = pull(&[&format!("{}/{repo}:1", fake.addr)]);
    refused(&o, &repo, "does not match its digest");
    assert!(!has_blob(&data_dir(), img.layers[0].blob.hex()));
    assert!(!listed(&repo));

    // A manifest asked for by digest that comes back with other content.
    let wanted = format!("sha256:{}", "ab".repeat(32));
    fake.put(
        format!("/v2/{repo}/manifests/{wanted}"),
        OCI_MANIFEST,
        img.manifest.bytes.clone(),
    );
    let o = pull(&[&format!("{}/{repo}@{wanted}", fake.addr)]);
    refused(&o, &repo, "does not match its digest");
    // A manifest by tag whose Docker-Content-Digest says otherwise.
    fake.state
        .lock()
        .expect("lock")
        .digests
        .insert(format!("/v2/{repo}/manifests/1"), wanted.clone());
    let o = pull(&[&format!("{}/{repo}:1", fake.addr)]);
    refused(&o, &repo, "does not match its digest");

    // A layer that is not a compressed tar, with the right digest.
    let junk = image(
        vec![Layer {
            blob: Blob::new(b"this is not a gzip stream at all".to_vec()),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
            diff_id: sha(b"x"),
        }],
        host_arch(),
        false,
    );
    let repo2 = format!("junk{}/img", unique());
    fake.push(&repo2, "1", &junk);
    let o = pull(&[&format!("{}/{repo2}:1", fake.addr)]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains(&repo2), "{}", stderr(&o));
    assert!(leftovers(&data_dir()).is_empty());
    assert!(!listed(&repo2));
}

#[test]
fn plain_http_only_for_localhost_or_when_asked() {
    // 127.0.0.2 is on the loopback device but is not one of the names
    // that may go without TLS.
    let fake = Fake::start("127.0.0.2");
    let img = busybox_image("notls", Compression::Gzip);
    let repo = format!("notls{}/img", unique());
    fake.push(&repo, "1", &img);
    let name = format!("{}/{repo}:1", fake.addr);
    let o = pull(&[&name]);
    refused(&o, &repo, "https");
    assert!(
        fake.log().iter().all(|(l, _)| !l.starts_with("GET ")),
        "no plain HTTP request was made: {:?}",
        fake.log()
    );
    ok(pull(&["--tls-verify=false", &name]));
    assert!(has_blob(&data_dir(), img.layers[0].blob.hex()));

    // Through the proxy of the environment, unless NO_PROXY names the
    // registry (the proxy here is a port nobody listens on).
    let p = Project::new("proxy");
    let proxy = format!("http://127.0.0.1:{}", free_port());
    let mut c = sbox(&p.dir, &["image", "pull", "--tls-verify=false", &name]);
    c.env("HTTPS_PROXY", &proxy);
    let o = output(c);
    refused(&o, &repo, "cannot reach");
    assert!(stderr(&o).contains("proxy"), "{}", stderr(&o));
    let mut c = sbox(&p.dir, &["image", "pull", "--tls-verify=false", &name]);
    c.env("https_proxy", &proxy)
        .env("NO_PROXY", "example.org,127.0.0.2");
    ok(output(c));

    // https with a certificate nobody signed: refused, unless
    // --tls-verify=false (which then does not fall back to plain http).
    let reg = Registry::start(None);
    let img2 = busybox_image("self-signed", Compression::Gzip);
    reg.push("pulltest/selfsigned", Some("1"), &img2);
    let tls = reg.tls_mirror();
    let name2 = format!("{}/pulltest/selfsigned:1", tls.addr);
    let o = pull(&[&name2]);
    refused(&o, "pulltest/selfsigned", "certificate");
    ok(pull(&["--tls-verify=false", &name2]));
    assert!(has_blob(&data_dir(), img2.layers[0].blob.hex()));

    // Or marked insecure in registries.conf (in a home of its own).
    let home = own_home();
    let conf = home.join(".config/sbox/registries.conf");
    std::fs::create_dir_all(conf.parent().expect("parent")).expect("mkdir");
    chown(&home.join(".config/sbox"));
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
            fake.addr
        ),
    )
    .expect("write registries.conf");
    chown(&conf);
    let p = Project::new("insecure");
    let mut c = sbox(&p.dir, &["image", "pull", &name]);
    use_home(&mut c, &home);
    ok(output(c));
    assert!(has_blob(
        &home.join(".local/share/sbox"),
        img.layers[0].blob.hex()
    ));
}

/// A home of its own for the test user (for files that other tests must
/// not see), with .config and .local/share.
fn own_home() -> PathBuf {
    let home = user().home.join(format!("ownhome-{}", unique()));
    for d in [
        "",
        ".config",
        ".config/containers",
        ".local",
        ".local/share",
    ] {
        std::fs::create_dir_all(home.join(d)).expect("mkdir");
        chown(&home.join(d));
    }
    home
}

#[test]
fn a_dropped_download_is_tried_again() {
    let fake = Fake::start("127.0.0.1");
    let img = busybox_image("dropped", Compression::Gzip);
    let repo = format!("drop{}/img", unique());
    fake.push(&repo, "1", &img);
    let layer = format!("/v2/{repo}/blobs/{}", img.layers[0].blob.digest);
    fake.state
        .lock()
        .expect("lock")
        .drop_once
        .push(layer.clone());
    ok(pull(&[&format!("{}/{repo}:1", fake.addr)]));
    let gets = fake
        .log()
        .into_iter()
        .filter(|(l, _)| l.contains(&layer))
        .count();
    assert_eq!(gets, 2, "fetched again after the connection dropped");
    assert!(has_blob(&data_dir(), img.layers[0].blob.hex()));
}

#[test]
fn an_image_skopeo_pushed_runs_with_its_whiteouts_and_owners() {
    // The store's test image (two layers: whiteouts, an opaque directory,
    // a file of uid 100), pushed by skopeo as Docker schema 2.
    let reg = Registry::start(None);
    let dir = scratch_dir("oci");
    image::write_oci_layout(&dir, &[image::base_layer(), image::top_layer()]);
    // skopeo keeps a cache under its HOME: a throwaway one, never the
    // real home of whoever runs the tests.
    let home = scratch_dir("skopeo-home");
    let out = Command::new("skopeo")
        .args(["copy", "-q", "--format", "v2s2", "--dest-tls-verify=false"])
        .arg(format!("oci:{}", dir.display()))
        .arg(format!("docker://{}/pulltest/skopeo:1", reg.addr))
        .env("HOME", &home)
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_CACHE_HOME")
        .output()
        .expect("skopeo (Debian skopeo) is installed");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&home);
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = format!("{}/pulltest/skopeo:1", reg.addr);
    ok(pull(&[&name]));
    let p = Project::new("skopeo");
    let out = ok(output(sbox(
        &p.dir,
        &[
            "run",
            "--image",
            &name,
            "--",
            "sh",
            "-c",
            "cat /etc/os-release /etc/top; ls /opq; test -e /etc/gone || echo gone-is-gone; stat -c %u /home/app/owned",
        ],
    )));
    assert!(out.contains("sbox test image"), "{out}");
    assert!(out.contains("from the top layer"), "{out}");
    assert!(out.contains("new") && !out.contains("old"), "{out}");
    assert!(out.contains("gone-is-gone"), "{out}");
    assert_eq!(out.trim().lines().last(), Some("100"), "{out}");
}
