//! Image fixtures: a busybox-static root in layers, written as an OCI
//! layout, a `docker save` archive or a plain rootfs tarball. Built here
//! with the tar/gzip/sha2 crates so the tests need no image tools.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One archive member: (name, type, data or link target, uid, mode).
pub type Entry<'a> = (&'a str, u8, &'a [u8], u32, u32);

pub fn sha256(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The busybox-static binary of the host (Debian's busybox-static).
pub fn busybox() -> Vec<u8> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if let Ok(b) = std::fs::read(p) {
            // A dynamic busybox (an ELF program header PT_INTERP) cannot
            // run in an image without a C library.
            let dynamic = interp(&b);
            assert!(
                !dynamic,
                "{p} is not busybox-static (apt-get install busybox-static)"
            );
            return b;
        }
    }
    panic!("busybox is missing: apt-get install busybox-static");
}

/// Whether a 64-bit ELF file asks for a program interpreter.
fn interp(b: &[u8]) -> bool {
    let u = |o: usize, n: usize| -> usize {
        b.get(o..o + n)
            .map(|s| s.iter().rev().fold(0usize, |a, &x| (a << 8) | x as usize))
            .unwrap_or(0)
    };
    let (off, size, num) = (u(0x20, 8), u(0x36, 2), u(0x38, 2));
    (0..num).any(|i| u(off + i * size, 4) == 3)
}

/// A tar of `entries` (names as given, `..` included: the builder would
/// refuse them, bad archives are what some tests need).
pub fn tar_of(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, uid, mode) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::new(*kind));
        h.set_uid(*uid as u64);
        h.set_gid(*uid as u64);
        h.set_mode(*mode);
        h.set_mtime(1_700_000_000);
        let raw = h.as_old_mut();
        raw.name = [0; 100];
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        if matches!(*kind, b'1' | b'2') {
            raw.linkname = [0; 100];
            raw.linkname[..data.len()].copy_from_slice(data);
            h.set_size(0);
            h.set_cksum();
            b.append(&h, &[][..]).expect("tar");
        } else {
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, *data).expect("tar");
        }
    }
    b.into_inner().expect("tar")
}

pub const OS_RELEASE: &str = "ID=sboxtestimg\nNAME=\"sbox test image\"\n";

/// Applets linked to busybox in the test image.
pub const APPLETS: &[&str] = &[
    "sh", "cat", "ls", "id", "env", "pwd", "echo", "touch", "rm", "mkdir", "stat", "test", "chown",
    "wc", "readlink", "true",
];

/// The base layer: busybox, /etc of its own, a file owned by uid 100,
/// things the top layer deletes.
pub fn base_layer() -> Vec<u8> {
    let bb = busybox();
    let mut e: Vec<Entry<'_>> = vec![
        ("bin/", b'5', b"", 0, 0o755),
        ("bin/busybox", b'0', &bb, 0, 0o755),
        ("etc/", b'5', b"", 0, 0o755),
        ("etc/os-release", b'0', OS_RELEASE.as_bytes(), 0, 0o644),
        (
            "etc/passwd",
            b'0',
            b"root:x:0:0:root:/root:/bin/sh\napp:x:100:100:app:/home/app:/bin/sh\n",
            0,
            0o644,
        ),
        ("etc/group", b'0', b"root:x:0:\napp:x:100:\n", 0, 0o644),
        ("etc/gone", b'0', b"deleted by the top layer\n", 0, 0o644),
        ("opq/", b'5', b"", 0, 0o755),
        ("opq/old", b'0', b"old\n", 0, 0o644),
        ("home/", b'5', b"", 0, 0o755),
        ("home/app/", b'5', b"", 100, 0o750),
        ("home/app/owned", b'0', b"app's\n", 100, 0o640),
        ("root/", b'5', b"", 0, 0o700),
        ("work/", b'5', b"", 0, 0o755),
    ];
    let links: Vec<String> = APPLETS.iter().map(|a| format!("bin/{a}")).collect();
    for l in &links {
        e.push((l, b'2', b"busybox", 0, 0o777));
    }
    tar_of(&e)
}

/// The top layer: a whiteout, an opaque directory, a file of its own.
pub fn top_layer() -> Vec<u8> {
    tar_of(&[
        ("etc/.wh.gone", b'0', b"", 0, 0o644),
        ("opq/.wh..wh..opq", b'0', b"", 0, 0o644),
        ("opq/new", b'0', b"new\n", 0, 0o644),
        ("etc/top", b'0', b"from the top layer\n", 0, 0o644),
    ])
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).expect("gzip");
    e.finish().expect("gzip")
}

/// The run settings of the test image.
pub fn run_config() -> serde_json::Value {
    serde_json::json!({
        "Env": ["PATH=/bin", "IMGVAR=from-the-image"],
        "Cmd": ["/bin/sh"],
        "WorkingDir": "/work",
    })
}

/// The config of the test image for `layers` (uncompressed).
pub fn config(layers: &[Vec<u8>]) -> Vec<u8> {
    config_with(layers, run_config())
}

/// The config of an image of `layers` with the run settings `run`.
pub fn config_with(layers: &[Vec<u8>], run: serde_json::Value) -> Vec<u8> {
    let diffs: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha256(l)))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-11-30T12:00:00Z",
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": diffs},
    }))
    .expect("json")
}

fn put(dir: &Path, bytes: &[u8]) -> String {
    let hex = sha256(bytes);
    std::fs::write(dir.join("blobs/sha256").join(&hex), bytes).expect("blob");
    format!("sha256:{hex}")
}

/// Writes an OCI image layout of `layers` (stored gzip-compressed) to
/// `dir`; returns the image id (the config digest).
pub fn write_oci_layout(dir: &Path, layers: &[Vec<u8>]) -> String {
    write_oci_layout_with(dir, layers, run_config())
}

/// [`write_oci_layout`] with the run settings `run` in its config.
pub fn write_oci_layout_with(dir: &Path, layers: &[Vec<u8>], run: serde_json::Value) -> String {
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("w");
    let mut descs = vec![];
    for l in layers {
        let z = gzip(l);
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": put(dir, &z), "size": z.len()}));
    }
    let cfg = config_with(layers, run);
    let cd = put(dir, &cfg);
    let man = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len()},
        "layers": descs,
    }))
    .expect("json");
    let md = put(dir, &man);
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": man.len()}]}))
        .expect("json"),
    )
    .expect("w");
    cd
}

/// A tar of the directory `dir` (regular files and directories).
pub fn tar_dir(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(out).expect("create"));
    b.append_dir_all(".", dir).expect("tar");
    b.finish().expect("tar");
}

/// Writes a `docker save` archive of `layers` (uncompressed layer.tar
/// files) tagged `tag`; returns the image id.
pub fn write_docker_save(out: &Path, layers: &[Vec<u8>], tag: &str) -> String {
    let cfg = config(layers);
    let id = sha256(&cfg);
    let mut b = tar::Builder::new(std::fs::File::create(out).expect("create"));
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).expect("tar");
    };
    add(&format!("{id}.json"), &cfg);
    let mut names = vec![];
    for l in layers {
        let d = sha256(l);
        add(&format!("{d}/layer.tar"), l);
        names.push(format!("{d}/layer.tar"));
    }
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": format!("{id}.json"), "RepoTags": [tag], "Layers": names}
    ]))
    .expect("json");
    add("manifest.json", &manifest);
    b.finish().expect("tar");
    format!("sha256:{id}")
}

/// The test image's files flattened into one tarball, gzip-compressed.
pub fn write_rootfs_tarball(out: &Path) {
    // The base layer without what the top one removes, plus the top's.
    let bb = busybox();
    let mut e: Vec<Entry<'_>> = vec![
        ("./", b'5', b"", 0, 0o755),
        ("./bin/", b'5', b"", 0, 0o755),
        ("./bin/busybox", b'0', &bb, 0, 0o755),
        ("./etc/", b'5', b"", 0, 0o755),
        ("./etc/os-release", b'0', OS_RELEASE.as_bytes(), 0, 0o644),
    ];
    let links: Vec<String> = APPLETS.iter().map(|a| format!("./bin/{a}")).collect();
    for l in &links {
        e.push((l, b'2', b"busybox", 0, 0o777));
    }
    std::fs::write(out, gzip(&tar_of(&e))).expect("write");
}

/// Every path below `dir` (to compare a store before and after).
pub fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut v = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            v.push(p);
        }
    }
    v.sort();
    v
}
