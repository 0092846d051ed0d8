//! Pulling images from registries: a small blocking client of the OCI
//! distribution API (registry v2).
//!
//! What a pull does: `GET /v2/REPO/manifests/REF` with the Accept headers of
//! the OCI and Docker manifest and index types; from an index (manifest
//! list) the entry of the wanted platform (the host's unless `--platform`
//! says otherwise) is fetched by digest; then the config and layer blobs
//! are streamed to disk, each verified against its digest and size while it
//! arrives (a mismatch deletes the partial file). Blobs the store already
//! has are not downloaded again. The result is an OCI image layout with one
//! image manifest (a Docker v2 schema 2 manifest is rewritten with the OCI
//! media types; layer digests stay the same), which the store imports.
//!
//! Authentication: anonymous, Basic, and the `WWW-Authenticate: Bearer`
//! token flow, with credentials from `--creds` or the usual auth.json
//! files. Credentials are never printed and never reach a sandbox.
//!
//! Transport: always https, except for a registry on localhost, 127.0.0.1
//! or [::1], with `--tls-verify=false`, or one marked `insecure = true` in
//! registries.conf: those are tried over https first and then over plain
//! http.
//!
//! Everything a registry sends is untrusted: digests are checked for their
//! form before they name a file, manifests are read up to a size limit,
//! blobs no further than the size their descriptor gives, and text from the
//! registry is made printable and short before it reaches a message.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The largest manifest or index accepted.
const MANIFEST_LIMIT: u64 = 4 << 20;
/// The largest token answer accepted.
const TOKEN_LIMIT: u64 = 1 << 20;
/// The most layers an image may have.
const MAX_LAYERS: usize = 500;
/// Blobs downloaded at the same time.
const PARALLEL: usize = 3;
/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 5;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1";

/// Layer media types sbox can unpack.
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// A user name and password for a registry. Never printed: `Debug` shows
/// the user only.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pass: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <hidden>)", self.user)
    }
}

impl Credentials {
    /// `USER:PASS`, as `--creds` takes them.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok(Credentials {
                user: u.to_string(),
                pass: p.to_string(),
            }),
            _ => Err("--creds wants USER:PASS".to_string()),
        }
    }

    fn basic(&self) -> String {
        use base64::Engine as _;
        let raw = format!("{}:{}", self.user, self.pass);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// An OS, architecture and variant, as in an index's `platform`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    /// linux and the architecture sbox was built for, in OCI's spelling.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            arch: arch.into(),
            variant: variant.map(str::to_string),
        }
    }

    /// `OS/ARCH[/VARIANT]` (podman's `--platform`).
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric());
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(format!(
                "--platform {}: wants OS/ARCH or OS/ARCH/VARIANT, such as linux/arm64",
                printable(s)
            )),
        }
    }

    fn matches(&self, p: &IndexPlatform) -> bool {
        p.os == self.os
            && p.architecture == self.arch
            && match (&self.variant, p.variant.as_deref()) {
                (Some(want), Some(have)) => want == have,
                // arm64 images are v8 whether or not they say so.
                _ => true,
            }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// false: podman's `--tls-verify=false`, plain http allowed.
    pub tls_verify: bool,
    /// The registry is marked `insecure = true` in registries.conf.
    pub insecure: bool,
    /// `--creds USER:PASS`; otherwise the auth.json files are asked.
    pub creds: Option<Credentials>,
    /// `--platform`; the host's otherwise.
    pub platform: Option<Platform>,
    /// Show progress on stderr: `None` when stderr is a terminal.
    pub progress: Option<bool>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            tls_verify: true,
            insecure: false,
            creds: None,
            platform: None,
            progress: None,
        }
    }
}

/// What went wrong while pulling `image`.
#[derive(Debug, thiserror::Error)]
#[error("pulling {image}: {problem}")]
pub struct RegistryError {
    pub image: String,
    pub problem: Problem,
}

/// The problems a pull reports.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("{0}")]
    Usage(String),
    #[error("not found in registry {registry} (no such image, tag or digest)")]
    NotFound { registry: String },
    #[error("registry {registry} refused access ({detail}); give credentials with --creds USER:PASS or in auth.json")]
    Unauthorized { registry: String, detail: String },
    #[error("cannot reach registry {registry}: {detail}")]
    Unreachable { registry: String, detail: String },
    #[error("registry {registry} does not answer over https ({detail}); plain http is used only for localhost registries, with --tls-verify=false or with `insecure = true` in registries.conf")]
    NoTls { registry: String, detail: String },
    #[error("the https certificate of registry {registry} is not trusted ({detail}); --tls-verify=false skips the check")]
    BadCert { registry: String, detail: String },
    #[error("blob {digest} does not match its digest (got {got}); nothing was stored")]
    DigestMismatch { digest: String, got: String },
    #[error("no image for {platform} in its manifest list (it has {available})")]
    NoPlatform { platform: String, available: String },
    #[error("registry {registry}: {msg}")]
    Protocol { registry: String, msg: String },
    /// Another download of the same pull failed first.
    #[error("cancelled")]
    Cancelled,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// The registry, repository and tag or digest to pull (the parts of an
/// image reference that the client needs).
#[derive(Debug, Clone)]
pub struct Target {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Target {
    fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    fn name(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("{}/{}@{d}", self.registry, self.repository),
            (None, Some(t)) => format!("{}/{}:{t}", self.registry, self.repository),
            (None, None) => format!("{}/{}:latest", self.registry, self.repository),
        }
    }
}

impl From<&super::Reference> for Target {
    fn from(r: &super::Reference) -> Self {
        Target {
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            tag: r.tag.clone(),
            digest: r.digest.clone(),
        }
    }
}

impl From<RegistryError> for super::ImageError {
    fn from(e: RegistryError) -> Self {
        super::ImageError::Other(e.to_string())
    }
}

/// What `download` wrote into the layout.
#[derive(Debug, Clone)]
pub struct Downloaded {
    /// Digest of the image manifest in the layout.
    pub manifest: String,
    pub config: String,
    pub layers: Vec<String>,
    /// Bytes fetched from the registry (blobs the store had are not).
    pub fetched: u64,
}

// ---------------------------------------------------------------------------
// Manifests

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<IndexPlatform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexPlatform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
}

/// `sha256:` and 64 lower-case hex digits: the only digests accepted (they
/// name files).
pub fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Untrusted text for a message: one line, printable, at most 200
/// characters.
fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// The entry of `want` in an index; the error lists what it has.
fn choose_platform(entries: &[Descriptor], want: &Platform) -> Result<Descriptor, Problem> {
    let manifests: Vec<&Descriptor> = entries
        .iter()
        .filter(|d| d.media_type == OCI_MANIFEST || d.media_type == DOCKER_MANIFEST)
        .collect();
    // An exact variant match first, then one that does not say.
    let exact = manifests.iter().find(|d| {
        d.platform.as_ref().is_some_and(|p| {
            want.matches(p) && (want.variant.is_none() || p.variant == want.variant)
        })
    });
    if let Some(d) = exact.or_else(|| {
        manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
    }) {
        return Ok((*d).clone());
    }
    let mut available: Vec<String> = manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(|p| {
            let mut s = format!("{}/{}", p.os, p.architecture);
            if let Some(v) = &p.variant {
                s.push('/');
                s.push_str(v);
            }
            printable(&s)
        })
        .collect();
    available.dedup();
    Err(Problem::NoPlatform {
        platform: want.to_string(),
        available: if available.is_empty() {
            "none".into()
        } else {
            available.join(", ")
        },
    })
}

/// A Docker v2 schema 2 manifest in OCI's media types (digests and sizes
/// unchanged).
fn to_oci(mut m: Manifest) -> Manifest {
    m.media_type = Some(OCI_MANIFEST.into());
    if m.config.media_type == DOCKER_CONFIG {
        m.config.media_type = OCI_CONFIG.into();
    }
    for l in &mut m.layers {
        l.media_type = match l.media_type.as_str() {
            "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
                "application/vnd.oci.image.layer.v1.tar+gzip".into()
            }
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip".into()
            }
            other => other.into(),
        };
    }
    m
}

// ---------------------------------------------------------------------------
// Credentials from auth.json

/// The auth.json files asked, most specific first: `$REGISTRY_AUTH_FILE`,
/// `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `~/.config/containers/auth.json`, `~/.docker/config.json`.
fn auth_files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|f| !f.is_empty()) {
        v.push(PathBuf::from(f));
    }
    if let Some(r) = std::env::var_os("XDG_RUNTIME_DIR").filter(|f| !f.is_empty()) {
        v.push(PathBuf::from(r).join("containers/auth.json"));
    }
    if let Some(h) = std::env::var_os("HOME").filter(|f| !f.is_empty()) {
        let h = PathBuf::from(h);
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|f| !f.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| h.join(".config"));
        v.push(config.join("containers/auth.json"));
        v.push(h.join(".docker/config.json"));
    }
    v
}

/// A key of `auths` as a registry name: without scheme and docker's
/// `/v1/` tail.
fn auth_key(k: &str) -> String {
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let k = k.trim_end_matches('/');
    let k = k.strip_suffix("/v1").unwrap_or(k);
    let k = k.strip_suffix("/v2").unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        _ => k.to_string(),
    }
}

/// The credentials for `registry/repository` in one auth.json text: the
/// entry of the longest `registry[/namespace…]` that covers it.
fn creds_in(text: &str, registry: &str, repository: &str) -> Option<Credentials> {
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        auths: BTreeMap<String, Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        #[serde(default)]
        auth: Option<String>,
    }
    let f: File = serde_json::from_str(text).ok()?;
    let full = format!("{registry}/{repository}");
    let mut best: Option<(usize, Credentials)> = None;
    for (k, e) in &f.auths {
        let key = auth_key(k);
        let covers = key == registry
            || (full.starts_with(&key) && full.as_bytes().get(key.len()) == Some(&b'/'));
        if !covers || best.as_ref().is_some_and(|(l, _)| *l >= key.len()) {
            continue;
        }
        let Some(auth) = e.auth.as_deref() else {
            continue;
        };
        use base64::Engine as _;
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(auth.trim()) else {
            continue;
        };
        let Ok(raw) = String::from_utf8(raw) else {
            continue;
        };
        if let Ok(c) = Credentials::parse(&raw) {
            best = Some((key.len(), c));
        }
    }
    best.map(|(_, c)| c)
}

/// The credentials the auth.json files hold for the repository, if any.
pub fn stored_credentials(registry: &str, repository: &str) -> Option<Credentials> {
    auth_files().iter().find_map(|f| {
        let text = std::fs::read_to_string(f).ok()?;
        creds_in(&text, registry, repository)
    })
}

// ---------------------------------------------------------------------------
// The HTTP side

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Challenge {
    scheme: String,
    params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="…",service="…",scope="…"` (quoted values may
/// hold commas).
fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n)
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), val.trim().to_string());
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

/// `localhost`, `127.0.0.1` or `[::1]`, with or without a port.
fn is_localhost(registry: &str) -> bool {
    let host = if let Some(r) = registry.strip_prefix('[') {
        r.split(']').next().unwrap_or("")
    } else {
        registry.split(':').next().unwrap_or("")
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

/// The host that serves a registry's API.
fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        r => r,
    }
}

/// The host[:port] of a URL.
fn url_host(u: &url::Url) -> String {
    let h = u.host_str().unwrap_or("");
    match u.port() {
        Some(p) => format!("{h}:{p}"),
        None => h.to_string(),
    }
}

/// A TLS configuration that accepts any certificate (`--tls-verify=false`,
/// `insecure = true`), as podman does; the handshake's signatures are
/// still checked.
fn unverified_tls() -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use std::sync::Arc;

    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
                .with_no_client_auth()
        });
    match config {
        Ok(c) => Arc::new(c),
        // Not reached: ring's provider supports the default versions. A
        // config with no roots then refuses every certificate.
        Err(_) => Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        ),
    }
}

/// The proxy for `host` from `HTTPS_PROXY`, `ALL_PROXY` or `HTTP_PROXY`
/// (or their lower-case forms), unless `NO_PROXY` names it or it is on
/// localhost. `env` reads a variable.
fn proxy_for(host: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<(ureq::Proxy, String)> {
    let var = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| env(n).filter(|v| !v.trim().is_empty()))
    };
    let proxy = var(&[
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ])?;
    if is_localhost(host) {
        return None;
    }
    let name = if let Some(r) = host.strip_prefix('[') {
        r.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    let name = name.to_ascii_lowercase();
    if let Some(no) = var(&["NO_PROXY", "no_proxy"]) {
        for e in no.split(',').map(|e| e.trim().to_ascii_lowercase()) {
            let e = e.trim_start_matches("*.").trim_start_matches('.');
            let e = e.split(':').next().unwrap_or("");
            if e == "*" || (!e.is_empty() && (name == e || name.ends_with(&format!(".{e}")))) {
                return None;
            }
        }
    }
    let p = ureq::Proxy::new(proxy.trim()).ok()?;
    // host:port only: a proxy URL may hold a password.
    let label = url::Url::parse(proxy.trim())
        .ok()
        .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
        .unwrap_or_else(|| "from the environment".into());
    Some((p, printable(&label)))
}

/// One transfer failure, classified.
enum Failure {
    /// An HTTP status with the response.
    Status(u16, Box<ureq::Response>),
    /// No connection (refused, no route, DNS).
    Down(String),
    /// Connected but the TLS handshake failed.
    Tls(String),
    /// Anything else on the wire.
    Other(String),
}

fn classify(e: ureq::Error) -> Failure {
    match e {
        ureq::Error::Status(c, r) => Failure::Status(c, Box::new(r)),
        ureq::Error::Transport(t) => {
            let whole = t.to_string();
            // The innermost cause ("Connection refused (os error 111)")
            // says it best.
            let mut cause: &dyn std::error::Error = &t;
            while let Some(s) = cause.source() {
                cause = s;
            }
            let text = printable(&cause.to_string());
            match t.kind() {
                ureq::ErrorKind::Dns => Failure::Down(text),
                ureq::ErrorKind::ConnectionFailed if whole.contains("tls") => Failure::Tls(text),
                ureq::ErrorKind::ConnectionFailed => Failure::Down(text),
                _ => Failure::Other(printable(&whole)),
            }
        }
    }
}

/// The first error of a registry's JSON error body, as one line.
fn error_body(r: ureq::Response) -> String {
    #[derive(Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<E>,
    }
    #[derive(Deserialize)]
    struct E {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let mut buf = Vec::new();
    let _ = r.into_reader().take(64 << 10).read_to_end(&mut buf);
    match serde_json::from_slice::<Errors>(&buf) {
        Ok(e) if !e.errors.is_empty() => {
            let e = &e.errors[0];
            printable(&format!("{} {}", e.code, e.message).replace('\n', " "))
        }
        _ => String::new(),
    }
}

/// A connection to one repository of one registry.
struct Session {
    agent: ureq::Agent,
    /// The registry's name as the user wrote it (for messages and
    /// credentials).
    registry: String,
    /// `https://host[:port]` or `http://…`.
    base: String,
    repository: String,
    creds: Option<Credentials>,
    /// The Authorization header for the registry host (shared by the
    /// threads that download blobs).
    auth: std::sync::Mutex<Option<String>>,
    /// Plain http is allowed for this registry.
    plain_ok: bool,
    /// `host:port` of the proxy the requests go through.
    via: Option<String>,
}

impl Session {
    /// Finds how to talk to the registry: https, or plain http where that
    /// is allowed and https does not answer.
    fn open(target: &Target, opts: &PullOptions) -> Result<Session, Problem> {
        let skip_verify = !opts.tls_verify || opts.insecure;
        let mut builder = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout_connect(Duration::from_secs(20))
            .timeout_read(Duration::from_secs(120))
            .user_agent(concat!("sbox/", env!("CARGO_PKG_VERSION")));
        if skip_verify {
            builder = builder.tls_config(unverified_tls());
        }
        let mut via = None;
        if let Some((p, label)) = proxy_for(api_host(&target.registry), &|v| std::env::var(v).ok())
        {
            builder = builder.proxy(p);
            via = Some(label);
        }
        let agent = builder.build();
        let registry = target.registry.clone();
        let plain_ok = is_localhost(&registry) || skip_verify;
        let creds = opts
            .creds
            .clone()
            .or_else(|| stored_credentials(&registry, &target.repository));
        let host = api_host(&registry);
        let mut s = Session {
            agent,
            registry: registry.clone(),
            base: String::new(),
            repository: target.repository.clone(),
            creds,
            auth: std::sync::Mutex::new(None),
            plain_ok,
            via,
        };
        let schemes: &[&str] = if plain_ok {
            &["https", "http"]
        } else {
            &["https"]
        };
        // The https attempt's TLS failure, when there was one.
        let mut tls_failure: Option<String> = None;
        let mut last = None;
        for scheme in schemes {
            let base = format!("{scheme}://{host}");
            match s.agent.get(&format!("{base}/v2/")).call() {
                Ok(_) => {
                    s.base = base;
                    return Ok(s);
                }
                Err(e) => match classify(e) {
                    Failure::Status(401, r) => {
                        s.base = base;
                        s.authenticate(&r)?;
                        return Ok(s);
                    }
                    // Plain http to a server that speaks only https (Go's
                    // servers answer 400).
                    Failure::Status(400, _) if tls_failure.is_some() => {
                        last = None;
                        break;
                    }
                    // Some registries answer /v2/ with 404 or 403 but
                    // serve repositories.
                    Failure::Status(..) => {
                        s.base = base;
                        return Ok(s);
                    }
                    f @ Failure::Down(_) => {
                        // A refused connection is refused on both schemes.
                        last = Some(f);
                        break;
                    }
                    Failure::Tls(d) => tls_failure = Some(d),
                    f => last = Some(f),
                },
            }
        }
        Err(s.note_proxy(match (tls_failure, last) {
            (_, Some(Failure::Down(d))) => Problem::Unreachable {
                registry,
                detail: d,
            },
            (Some(d), _) if d.contains("certificate") => Problem::BadCert {
                registry,
                detail: d,
            },
            (Some(d), _) if !plain_ok => Problem::NoTls {
                registry,
                detail: d,
            },
            (Some(d), _) | (None, Some(Failure::Tls(d) | Failure::Other(d))) => {
                Problem::Unreachable {
                    registry,
                    detail: d,
                }
            }
            (None, Some(Failure::Status(c, _))) => Problem::Protocol {
                registry,
                msg: format!("HTTP {c}"),
            },
            (None, None) => Problem::Unreachable {
                registry,
                detail: "no answer".into(),
            },
        }))
    }

    /// A connection failure names the proxy it went through.
    fn note_proxy(&self, p: Problem) -> Problem {
        match (p, &self.via) {
            (Problem::Unreachable { registry, detail }, Some(via)) => Problem::Unreachable {
                registry,
                detail: format!("{detail} (through the proxy {via})"),
            },
            (p, _) => p,
        }
    }

    fn unauthorized(&self, detail: impl Into<String>) -> Problem {
        Problem::Unauthorized {
            registry: self.registry.clone(),
            detail: detail.into(),
        }
    }

    fn protocol(&self, msg: impl Into<String>) -> Problem {
        Problem::Protocol {
            registry: self.registry.clone(),
            msg: msg.into(),
        }
    }

    /// Answers a 401: Basic with the credentials, or a Bearer token from
    /// the realm (anonymous or with the credentials).
    fn authenticate(&self, r: &ureq::Response) -> Result<(), Problem> {
        let Some(ch) = r.header("www-authenticate").and_then(parse_challenge) else {
            return Err(self.unauthorized("no WWW-Authenticate challenge"));
        };
        match ch.scheme.as_str() {
            "basic" => match &self.creds {
                Some(c) => {
                    self.set_auth(c.basic());
                    Ok(())
                }
                None => Err(self.unauthorized("it wants a user name and password")),
            },
            "bearer" => {
                let realm = ch
                    .params
                    .get("realm")
                    .ok_or_else(|| self.unauthorized("Bearer challenge without a realm"))?;
                let mut u = url::Url::parse(realm)
                    .map_err(|_| self.protocol("the token realm is not a URL"))?;
                let realm_plain_ok = self.plain_ok
                    || u.host_str()
                        .is_some_and(|h| is_localhost(&format!("[{h}]")) || is_localhost(h));
                match u.scheme() {
                    "https" => {}
                    "http" if realm_plain_ok => {}
                    _ => return Err(self.protocol("the token realm is not https")),
                }
                {
                    let mut q = u.query_pairs_mut();
                    if let Some(s) = ch.params.get("service") {
                        q.append_pair("service", s);
                    }
                    let scope = ch
                        .params
                        .get("scope")
                        .cloned()
                        .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                    q.append_pair("scope", &scope);
                }
                let mut req = self.agent.get(u.as_str());
                if let Some(c) = &self.creds {
                    req = req.set("Authorization", &c.basic());
                }
                let resp = match req.call() {
                    Ok(r) => r,
                    Err(e) => {
                        return Err(match classify(e) {
                            Failure::Status(401 | 403, _) => {
                                self.unauthorized("the token server refused the credentials")
                            }
                            Failure::Status(c, _) => {
                                self.protocol(format!("the token server answered HTTP {c}"))
                            }
                            Failure::Down(d) | Failure::Tls(d) | Failure::Other(d) => {
                                self.protocol(format!("token server: {d}"))
                            }
                        })
                    }
                };
                #[derive(Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let mut buf = Vec::new();
                resp.into_reader()
                    .take(TOKEN_LIMIT)
                    .read_to_end(&mut buf)
                    .map_err(|e| self.protocol(format!("reading the token: {e}")))?;
                let t: Token = serde_json::from_slice(&buf)
                    .map_err(|_| self.protocol("the token server's answer is not JSON"))?;
                let token = t
                    .token
                    .or(t.access_token)
                    .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
                    .ok_or_else(|| self.protocol("the token server gave no token"))?;
                self.set_auth(format!("Bearer {token}"));
                Ok(())
            }
            _ => Err(self.unauthorized(format!(
                "unknown authentication scheme {}",
                printable(&ch.scheme)
            ))),
        }
    }

    /// GET `path` on the registry (following redirects; the registry's
    /// Authorization only to the registry's host), answering one 401.
    fn set_auth(&self, value: String) {
        if let Ok(mut a) = self.auth.lock() {
            *a = Some(value);
        }
    }

    fn auth_header(&self) -> Option<String> {
        self.auth.lock().ok().and_then(|a| a.clone())
    }

    fn get(&self, path: &str, accept: Option<&str>) -> Result<ureq::Response, Problem> {
        let mut retried = false;
        loop {
            match self.get_once(path, accept) {
                Err(Failure::Status(401, r)) if !retried => {
                    retried = true;
                    self.authenticate(&r)?;
                }
                Err(Failure::Status(401 | 403, r)) => {
                    let d = error_body(*r);
                    return Err(self.unauthorized(if d.is_empty() {
                        "HTTP 401".to_string()
                    } else {
                        d
                    }));
                }
                Err(Failure::Status(404, _)) => {
                    return Err(Problem::NotFound {
                        registry: self.registry.clone(),
                    })
                }
                Err(Failure::Status(c, r)) => {
                    let d = error_body(*r);
                    return Err(self.protocol(format!("HTTP {c} {d}").trim_end().to_string()));
                }
                Err(Failure::Down(d)) => {
                    return Err(self.note_proxy(Problem::Unreachable {
                        registry: self.registry.clone(),
                        detail: d,
                    }))
                }
                Err(Failure::Tls(d) | Failure::Other(d)) => return Err(self.protocol(d)),
                Ok(r) => return Ok(r),
            }
        }
    }

    fn get_once(&self, path: &str, accept: Option<&str>) -> Result<ureq::Response, Failure> {
        let mut url = url::Url::parse(&format!("{}{path}", self.base))
            .map_err(|_| Failure::Other("bad URL".into()))?;
        let home = url_host(&url);
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.agent.get(url.as_str());
            if let Some(a) = accept {
                req = req.set("Accept", a);
            }
            // Credentials only to the registry itself, never to the
            // storage it redirects to.
            if url_host(&url) == home && url.scheme() == self.base_scheme() {
                if let Some(a) = self.auth_header() {
                    req = req.set("Authorization", &a);
                }
            }
            let r = req.call().map_err(classify)?;
            if !(300..400).contains(&r.status()) {
                return Ok(r);
            }
            let loc = r
                .header("location")
                .ok_or_else(|| Failure::Other("redirect without a Location".into()))?;
            let next = url
                .join(loc)
                .map_err(|_| Failure::Other("redirect to a bad URL".into()))?;
            match next.scheme() {
                "https" => {}
                "http" if self.plain_ok => {}
                _ => return Err(Failure::Other("redirect to a non-https URL".into())),
            }
            url = next;
        }
        Err(Failure::Other("too many redirects".into()))
    }

    fn base_scheme(&self) -> &str {
        self.base.split(':').next().unwrap_or("https")
    }

    /// A manifest or index by tag or digest: (media type, bytes, digest).
    fn manifest(&self, reference: &str) -> Result<(String, Vec<u8>, String), Problem> {
        let accept = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ");
        let path = format!("/v2/{}/manifests/{}", self.repository, reference);
        let r = self.get(&path, Some(&accept))?;
        let header_type = r
            .header("content-type")
            .map(|t| t.split(';').next().unwrap_or("").trim().to_string());
        let header_digest = r
            .header("docker-content-digest")
            .map(str::trim)
            .filter(|d| valid_digest(d))
            .map(str::to_string);
        let mut body = Vec::new();
        r.into_reader()
            .take(MANIFEST_LIMIT + 1)
            .read_to_end(&mut body)
            .map_err(|e| self.protocol(format!("reading the manifest: {e}")))?;
        if body.len() as u64 > MANIFEST_LIMIT {
            return Err(self.protocol("the manifest is larger than 4 MiB"));
        }
        let digest = sha256_hex(&body);
        // By digest: the one asked for; by tag: the one the registry says,
        // when it says one.
        let expected = if reference.starts_with("sha256:") {
            Some(reference.to_string())
        } else {
            header_digest
        };
        if let Some(want) = expected.filter(|w| *w != digest) {
            return Err(Problem::DigestMismatch {
                digest: want,
                got: digest,
            });
        }
        #[derive(Deserialize)]
        struct Probe {
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
            #[serde(rename = "schemaVersion")]
            schema_version: Option<u32>,
            manifests: Option<serde::de::IgnoredAny>,
        }
        let probe: Probe =
            serde_json::from_slice(&body).map_err(|_| self.protocol("the manifest is not JSON"))?;
        let media_type = match (probe.media_type, header_type) {
            (Some(t), _) => t,
            (None, Some(t)) if t != "application/json" && !t.is_empty() => t,
            (None, _) if probe.manifests.is_some() => OCI_INDEX.into(),
            (None, _) if probe.schema_version == Some(1) => DOCKER_SCHEMA1.into(),
            (None, _) => OCI_MANIFEST.into(),
        };
        Ok((media_type, body, digest))
    }

    /// Streams one blob into `dir/HEX`, verifying size and digest (row
    /// `row` of the progress display; stops early when `cancel` is set).
    fn blob(
        &self,
        d: &Descriptor,
        dir: &Path,
        progress: &Progress,
        row: usize,
        cancel: &AtomicBool,
    ) -> Result<u64, Problem> {
        let hexd = &d.digest["sha256:".len()..];
        let fin = dir.join(hexd);
        let part = dir.join(format!("{hexd}.partial"));
        let r = self.get(&format!("/v2/{}/blobs/{}", self.repository, d.digest), None)?;
        let io = |what: &str, e| Problem::Io {
            what: format!("{what} {}", part.display()),
            source: e,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)
            .map_err(|e| io("creating", e))?;
        let res = (|| {
            let mut reader = r.into_reader().take(d.size + 1);
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 256 << 10];
            let mut n: u64 = 0;
            loop {
                if cancel.load(Ordering::Relaxed) {
                    return Err(Problem::Cancelled);
                }
                let k = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(self.protocol(format!("reading blob {}: {e}", d.digest))),
                };
                n += k as u64;
                if n > d.size {
                    return Err(Problem::DigestMismatch {
                        digest: d.digest.clone(),
                        got: format!("more than the {} bytes its manifest gives", d.size),
                    });
                }
                h.update(&buf[..k]);
                f.write_all(&buf[..k]).map_err(|e| io("writing", e))?;
                progress.set(row, Row::Copying(n));
            }
            let got = format!("sha256:{}", hex(&h.finalize()));
            if n != d.size {
                return Err(Problem::DigestMismatch {
                    digest: d.digest.clone(),
                    got: format!("{n} of {} bytes, {got}", d.size),
                });
            }
            if got != d.digest {
                return Err(Problem::DigestMismatch {
                    digest: d.digest.clone(),
                    got,
                });
            }
            Ok(n)
        })();
        drop(f);
        match res {
            Ok(n) => {
                std::fs::rename(&part, &fin).map_err(|e| io("renaming", e))?;
                progress.set(row, Row::Done);
                Ok(n)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                progress.set(row, Row::Failed);
                Err(e)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Progress

/// The state of one blob in the progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    Waiting,
    Copying(u64),
    Done,
    Present,
    Failed,
}

/// Per-blob progress on stderr, only when it is a terminal: one line per
/// blob, redrawn in place (at most ten times a second).
struct Progress {
    on: bool,
    state: std::sync::Mutex<Rows>,
}

struct Rows {
    rows: Vec<(String, u64, Row)>,
    drawn: usize,
    last: Option<Instant>,
}

fn human(n: u64) -> String {
    const U: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

impl Progress {
    fn new(on: bool) -> Self {
        Progress {
            on,
            state: std::sync::Mutex::new(Rows {
                rows: Vec::new(),
                drawn: 0,
                last: None,
            }),
        }
    }

    fn line(&self, text: &str) {
        if self.on {
            eprintln!("{text}");
        }
    }

    /// A row for the blob `digest` of `total` bytes; its index.
    fn add(&self, digest: &str, total: u64, row: Row) -> usize {
        let Ok(mut st) = self.state.lock() else {
            return 0;
        };
        st.rows
            .push((digest.chars().skip(7).take(12).collect(), total, row));
        st.rows.len() - 1
    }

    fn set(&self, i: usize, row: Row) {
        if !self.on {
            return;
        }
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let Some(r) = st.rows.get_mut(i) else {
            return;
        };
        let changed = !matches!((r.2, row), (Row::Copying(_), Row::Copying(_)));
        r.2 = row;
        let now = Instant::now();
        if changed
            || st
                .last
                .is_none_or(|t| now.duration_since(t) >= Duration::from_millis(100))
        {
            st.last = Some(now);
            Self::draw(&mut st);
        }
    }

    /// Draws every row, over the rows drawn before.
    fn draw(st: &mut Rows) {
        let mut out = String::new();
        if st.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", st.drawn));
        }
        for (short, total, row) in &st.rows {
            let what = match row {
                Row::Waiting => "waiting".to_string(),
                Row::Copying(n) => format!("{} / {}", human(*n), human(*total)),
                Row::Done => format!("done ({})", human(*total)),
                Row::Present => "already present".to_string(),
                Row::Failed => "failed".to_string(),
            };
            out.push_str(&format!("\r\x1b[2KCopying blob {short}  {what}\n"));
        }
        st.drawn = st.rows.len();
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(out.as_bytes());
        let _ = e.flush();
    }

    /// The final state of every row.
    fn finish(&self) {
        if !self.on {
            return;
        }
        if let Ok(mut st) = self.state.lock() {
            Self::draw(&mut st);
        }
    }
}

// ---------------------------------------------------------------------------
// The download

/// Writes the image `target` as an OCI image layout into `layout` (an
/// empty directory): `oci-layout`, `index.json` with its one manifest, and
/// `blobs/sha256/`. `have` tells where the store keeps a blob it already
/// has; such blobs are hard-linked (or copied) instead of fetched.
pub fn download(
    target: &Target,
    opts: &PullOptions,
    layout: &Path,
    have: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<Downloaded, RegistryError> {
    let image = printable(&target.name());
    download_inner(target, opts, layout, have).map_err(|problem| RegistryError { image, problem })
}

fn download_inner(
    target: &Target,
    opts: &PullOptions,
    layout: &Path,
    have: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<Downloaded, Problem> {
    if let Some(d) = &target.digest {
        if !valid_digest(d) {
            return Err(Problem::Usage(format!(
                "{} is not a sha256 digest",
                printable(d)
            )));
        }
    }
    let progress = Progress::new(
        opts.progress
            .unwrap_or_else(|| std::io::stderr().is_terminal()),
    );
    let platform = opts.platform.clone().unwrap_or_else(Platform::host);
    let s = Session::open(target, opts)?;
    let (mut media_type, mut body, mut digest) = s.manifest(target.reference())?;
    if media_type == OCI_INDEX || media_type == DOCKER_LIST {
        let index: Index = serde_json::from_slice(&body)
            .map_err(|e| s.protocol(format!("bad manifest list: {}", printable(&e.to_string()))))?;
        let entry = choose_platform(&index.manifests, &platform)?;
        if !valid_digest(&entry.digest) {
            return Err(s.protocol("a manifest list entry has a bad digest"));
        }
        (media_type, body, digest) = s.manifest(&entry.digest)?;
        if media_type == OCI_INDEX || media_type == DOCKER_LIST {
            return Err(s.protocol("a manifest list inside a manifest list"));
        }
    }
    if media_type.starts_with(DOCKER_SCHEMA1) {
        return Err(s.protocol("Docker schema 1 manifests are not supported"));
    }
    if media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST {
        return Err(s.protocol(format!(
            "unsupported manifest type {}",
            printable(&media_type)
        )));
    }
    let manifest: Manifest = serde_json::from_slice(&body)
        .map_err(|e| s.protocol(format!("bad manifest: {}", printable(&e.to_string()))))?;
    if manifest.layers.len() > MAX_LAYERS {
        return Err(s.protocol(format!("more than {MAX_LAYERS} layers")));
    }
    for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
        if !valid_digest(&d.digest) {
            return Err(s.protocol(format!("bad blob digest {}", printable(&d.digest))));
        }
    }
    if manifest.config.size > MANIFEST_LIMIT {
        return Err(s.protocol("the image config is larger than 4 MiB"));
    }
    for l in &manifest.layers {
        if !LAYER_TYPES.contains(&l.media_type.as_str()) {
            return Err(s.protocol(format!(
                "unsupported layer type {}",
                printable(&l.media_type)
            )));
        }
    }
    // The manifest as the layout holds it: OCI as it came, Docker's in OCI
    // media types.
    let (manifest, body, digest) = if media_type == DOCKER_MANIFEST {
        let m = to_oci(manifest);
        let b = serde_json::to_vec(&m)
            .map_err(|e| s.protocol(format!("rewriting the manifest: {e}")))?;
        let d = sha256_hex(&b);
        (m, b, d)
    } else {
        (manifest, body, digest)
    };

    let blobs = layout.join("blobs/sha256");
    let io = |what: &str, p: &Path, e| Problem::Io {
        what: format!("{what} {}", p.display()),
        source: e,
    };
    std::fs::create_dir_all(&blobs).map_err(|e| io("creating", &blobs, e))?;
    progress.line(&format!(
        "Pulling {} ({platform})",
        printable(&target.name())
    ));
    // Blobs the store has are linked; the others are fetched, a few at a
    // time.
    let mut todo: Vec<(&Descriptor, usize)> = Vec::new();
    for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
        let dest = blobs.join(&d.digest["sha256:".len()..]);
        if dest.exists() || todo.iter().any(|(t, _)| t.digest == d.digest) {
            continue; // the same layer twice in one image
        }
        if let Some(src) = have(&d.digest) {
            if std::fs::hard_link(&src, &dest).is_ok() || std::fs::copy(&src, &dest).is_ok() {
                progress.add(&d.digest, d.size, Row::Present);
                continue;
            }
            let _ = std::fs::remove_file(&dest);
        }
        todo.push((d, progress.add(&d.digest, d.size, Row::Waiting)));
    }
    progress.finish();
    let next = AtomicUsize::new(0);
    let cancel = AtomicBool::new(false);
    let results: Vec<Result<u64, (usize, Problem)>> = std::thread::scope(|sc| {
        let workers: Vec<_> = (0..PARALLEL.min(todo.len()))
            .map(|_| {
                sc.spawn(|| {
                    let mut got = 0;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((d, row)) = todo.get(i) else {
                            return Ok(got);
                        };
                        if cancel.load(Ordering::Relaxed) {
                            return Ok(got);
                        }
                        let mut r = s.blob(d, &blobs, &progress, *row, &cancel);
                        // A dropped connection is tried once more.
                        if matches!(
                            r,
                            Err(Problem::Protocol { .. } | Problem::Unreachable { .. })
                        ) {
                            r = s.blob(d, &blobs, &progress, *row, &cancel);
                        }
                        match r {
                            Ok(n) => got += n,
                            Err(Problem::Cancelled) => return Ok(got),
                            Err(e) => {
                                cancel.store(true, Ordering::Relaxed);
                                return Err((i, e));
                            }
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| {
                    Err((
                        usize::MAX,
                        Problem::Usage("a download thread failed".into()),
                    ))
                })
            })
            .collect()
    });
    progress.finish();
    // The first failure in manifest order (those cancelled after it say
    // less).
    let mut fetched = 0;
    let mut first: Option<(usize, Problem)> = None;
    for r in results {
        match r {
            Ok(n) => fetched += n,
            Err((i, e)) => {
                if first.as_ref().is_none_or(|(j, _)| i < *j) {
                    first = Some((i, e));
                }
            }
        }
    }
    if let Some((_, e)) = first {
        return Err(e);
    }
    let write = |name: &Path, bytes: &[u8]| -> Result<(), Problem> {
        std::fs::write(name, bytes).map_err(|e| io("writing", name, e))
    };
    write(&blobs.join(&digest["sha256:".len()..]), &body)?;
    write(
        &layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let mut annotations = BTreeMap::new();
    if let Some(t) = &target.tag {
        annotations.insert("org.opencontainers.image.ref.name".to_string(), t.clone());
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": body.len(),
            "annotations": annotations,
        }],
    });
    write(&layout.join("index.json"), index.to_string().as_bytes())?;
    Ok(Downloaded {
        manifest: digest,
        config: manifest.config.digest.clone(),
        layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
        fetched,
    })
}

/// Pulls `reference` into `store`: the image is downloaded as an OCI
/// layout into a staging directory of the store (blobs the store has are
/// linked, not fetched), then imported and named `reference`. Nothing is
/// left behind on error.
pub fn pull(
    reference: &super::Reference,
    opts: &PullOptions,
    store: &super::Store,
) -> Result<super::ImageId, super::ImageError> {
    let name = printable(&Target::from(reference).name());
    pull_as(reference, opts, store, &format!("pulling {name}"))
}

/// `pull` for `sbox run --image` and `sbox shell --image` when the image is
/// not in the store: the message of a failure says what was tried.
pub fn pull_missing(
    reference: &super::Reference,
    opts: &PullOptions,
    store: &super::Store,
) -> Result<super::ImageId, super::ImageError> {
    let name = printable(&Target::from(reference).name());
    pull_as(
        reference,
        opts,
        store,
        &format!("image {name} is not in the local store and `sbox image pull {name}` failed"),
    )
}

/// `pull`, its errors as one line starting with `context`.
fn pull_as(
    reference: &super::Reference,
    opts: &PullOptions,
    store: &super::Store,
    context: &str,
) -> Result<super::ImageId, super::ImageError> {
    let staging = store.staging()?;
    let layout = staging.path().join("layout");
    std::fs::create_dir(&layout)
        .map_err(|e| super::ImageError::io(format!("making {}", layout.display()), e))?;
    let target = Target::from(reference);
    download_inner(&target, opts, &layout, &|d| {
        store.has_blob(d).then(|| store.blob_path(d))
    })
    .map_err(|problem| super::ImageError::Other(format!("{context}: {problem}")))?;
    store
        .add_pulled(&layout, reference)
        .map_err(|e| super::ImageError::Other(format!("{context}: {e}")))
}

/// Options for `reference` from registries.conf (`insecure = true`).
pub fn options_for(reference: &super::Reference, regs: &super::Registries) -> PullOptions {
    PullOptions {
        insecure: regs.is_insecure(&reference.registry),
        ..PullOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["service"], "registry.example");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let b = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(b.scheme, "basic");
        assert_eq!(b.params["realm"], "Registry Realm");
    }

    #[test]
    fn proxies_from_the_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |n: &str| {
                vars.iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
            }
        };
        let with = env(&[
            ("HTTPS_PROXY", "http://proxy.lan:3128"),
            ("NO_PROXY", "internal.lan, .corp.example,10.1.2.3"),
        ]);
        assert!(proxy_for("registry-1.docker.io", &with).is_some());
        assert!(proxy_for("reg.internal.lan:5000", &with).is_none());
        assert!(proxy_for("internal.lan", &with).is_none());
        assert!(proxy_for("a.corp.example", &with).is_none());
        assert!(proxy_for("10.1.2.3:5000", &with).is_none());
        assert!(proxy_for("notinternal.lan", &with).is_some());
        assert!(proxy_for("localhost:5000", &with).is_none());
        assert!(proxy_for("127.0.0.1:5000", &with).is_none());
        let all = env(&[("https_proxy", "http://proxy.lan:3128"), ("no_proxy", "*")]);
        assert!(proxy_for("quay.io", &all).is_none());
        assert!(proxy_for("quay.io", &env(&[])).is_none());
    }

    #[test]
    fn localhost_names() {
        for r in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_localhost(r), "{r}");
        }
        for r in [
            "127.0.0.2:5000",
            "example.com",
            "localhost.example.com:5000",
            "10.0.0.1",
        ] {
            assert!(!is_localhost(r), "{r}");
        }
    }

    #[test]
    fn credentials_are_never_shown() {
        let c = Credentials::parse("alice:s3cret:with:colons").unwrap();
        assert_eq!(c.user, "alice");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(Credentials::parse("nocolon").is_err());
        assert!(Credentials::parse(":pw").is_err());
    }

    #[test]
    fn auth_json_lookup() {
        use base64::Engine as _;
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let text = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "reg.example:5000": {{"auth": "{}"}},
                "reg.example:5000/team": {{"auth": "{}"}},
                "broken.example": {{"auth": "!!!"}}
            }}}}"#,
            enc("hub:hubpw"),
            enc("any:anypw"),
            enc("team:teampw")
        );
        assert_eq!(
            creds_in(&text, "docker.io", "library/debian").unwrap().user,
            "hub"
        );
        assert_eq!(
            creds_in(&text, "reg.example:5000", "other/x").unwrap().user,
            "any"
        );
        assert_eq!(
            creds_in(&text, "reg.example:5000", "team/x").unwrap().user,
            "team"
        );
        assert_eq!(
            creds_in(&text, "reg.example:5000", "teamx/x").unwrap().user,
            "any"
        );
        assert!(creds_in(&text, "broken.example", "x").is_none());
        assert!(creds_in(&text, "reg.example", "x").is_none());
    }

    fn entry(arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: format!("sha256:{}", format!("{n:02x}").repeat(32)),
            size: 1,
            platform: Some(IndexPlatform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(str::to_string),
            }),
            annotations: None,
        }
    }

    #[test]
    fn platform_choice() {
        let list = vec![
            entry("arm", Some("v6"), 1),
            entry("arm", Some("v7"), 2),
            entry("amd64", None, 3),
            entry("arm64", Some("v8"), 4),
        ];
        let pick = |p: &str| choose_platform(&list, &Platform::parse(p).unwrap()).map(|d| d.digest);
        assert!(pick("linux/amd64").unwrap().contains("0303"));
        assert!(pick("linux/arm64").unwrap().contains("0404"));
        assert!(pick("linux/arm/v7").unwrap().contains("0202"));
        let err = pick("linux/s390x").unwrap_err().to_string();
        assert!(
            err.contains("linux/amd64") && err.contains("linux/arm/v7"),
            "{err}"
        );
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux/../x").is_err());
    }

    #[test]
    fn digests() {
        assert!(valid_digest(&format!("sha256:{}", "a".repeat(64))));
        assert!(!valid_digest(&format!("sha256:{}", "A".repeat(64))));
        assert!(!valid_digest(&format!("sha256:../{}", "a".repeat(61))));
        assert!(!valid_digest(&format!("sha512:{}", "a".repeat(64))));
    }

    #[test]
    fn docker_manifest_becomes_oci() {
        let d = format!("sha256:{}", "a".repeat(64));
        let m: Manifest = serde_json::from_str(&format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
               "config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{d}","size":3}},
               "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{d}","size":5}}]}}"#
        ))
        .unwrap();
        let o = to_oci(m);
        assert_eq!(o.media_type.as_deref(), Some(OCI_MANIFEST));
        assert_eq!(o.config.media_type, OCI_CONFIG);
        assert_eq!(
            o.layers[0].media_type,
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(o.layers[0].digest, d);
        assert_eq!(o.layers[0].size, 5);
    }
}
