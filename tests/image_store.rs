//! Images in the local store: import (OCI layout and archive, docker save,
//! rootfs tarball), ls, inspect, rm, and sandboxes on an image's root
//! (`run --image`, named sandboxes, diff, `commit --image`), as the
//! unprivileged test user. Each test has a data directory of its own, so
//! each has a store of its own.

mod common;
#[path = "common/image.rs"]
mod image;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `sbox ARGS` in `dir` with the data directory of test `tag`.
fn sb(tag: &str, dir: &Path, args: &[&str]) -> Command {
    let data = data_dir(tag);
    let mut c = sbox(dir, args);
    c.env("XDG_DATA_HOME", data);
    c
}

fn data_dir(tag: &str) -> PathBuf {
    let d = user().home.join(format!("data-{tag}"));
    if !d.exists() {
        std::fs::create_dir_all(&d).expect("mkdir");
        chown(&d);
    }
    d
}

fn store_dir(tag: &str) -> PathBuf {
    data_dir(tag).join("sbox/images")
}

/// Files given to the test user.
fn give(p: &Path) {
    let _ = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", user().uid, user().gid))
        .arg(p)
        .status();
}

/// The two-layer test image as an OCI layout in the project.
fn layout(p: &Project) -> (PathBuf, String) {
    let dir = p.dir.join("layout");
    let id = image::write_oci_layout(&dir, &[image::base_layer(), image::top_layer()]);
    give(&dir);
    (dir, id)
}

#[track_caller]
fn fails_125(o: &Output, what: &str) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(125), "{what}: {o:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line: {err}");
    assert!(err.starts_with("sbox: error: "), "{what}: {err}");
    err
}

/// Nothing half-made: no staging directories, no images, no blobs, no trees.
#[track_caller]
fn store_is_empty(tag: &str, what: &str) {
    let s = store_dir(tag);
    for d in ["staging", "images", "blobs/sha256", "trees"] {
        let left: Vec<_> = std::fs::read_dir(s.join(d))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{what}: {d} holds {left:?}");
    }
}

#[test]
fn an_oci_layout_runs_with_its_files_owners_whiteouts_and_config() {
    let tag = "oci";
    let p = Project::new("img-oci");
    let (dir, id) = layout(&p);
    let out = ok(output(sb(
        tag,
        &p.dir,
        &["image", "import", dir.to_str().unwrap(), "testimg"],
    )));
    assert_eq!(out.trim(), id.trim_start_matches("sha256:"));

    // ls: aligned columns, the name and the short id.
    let ls = ok(output(sb(tag, &p.dir, &["image", "ls"])));
    let mut lines = ls.lines();
    let head = lines.next().unwrap_or_default();
    assert!(head.starts_with("NAME"), "{ls}");
    let row = lines.next().unwrap_or_default();
    assert!(row.starts_with("localhost/testimg:latest"), "{ls}");
    let short = &id[7..19];
    assert_eq!(head.find("ID"), row.find(short), "{ls}");
    assert!(head.contains("CREATED") && head.contains("SIZE"), "{ls}");

    // inspect: the essentials.
    let js: serde_json::Value = serde_json::from_str(&ok(output(sb(
        tag,
        &p.dir,
        &["image", "inspect", "testimg"],
    ))))
    .unwrap();
    let i = &js[0];
    assert_eq!(i["Id"], id.trim_start_matches("sha256:"));
    assert_eq!(i["RepoTags"][0], "localhost/testimg:latest");
    assert_eq!(i["Config"]["WorkingDir"], "/work");
    assert_eq!(i["Config"]["Env"][1], "IMGVAR=from-the-image");
    assert_eq!(i["Layers"].as_array().map(Vec::len), Some(2));
    assert_eq!(i["Os"], "linux");

    // The image's root: its files, whiteouts applied, its owners, its
    // environment and working directory; nothing of the host's.
    let home = user().home.to_string_lossy().into_owned();
    let script = format!(
        "cat /etc/os-release; \
         test -e /etc/gone && echo GONE-VISIBLE; \
         test -e /opq/old && echo OPAQUE-LEAKS; \
         cat /opq/new /etc/top; \
         stat -c 'owned %u:%g %a' /home/app/owned; \
         stat -c 'passwd %u:%g' /etc/passwd; \
         stat -c 'appdir %u:%g %a' /home/app; \
         echo \"pwd $(pwd) var $IMGVAR path $PATH\"; \
         test -e /etc/debian_version && echo HOST-ETC; \
         test -e {home} && echo HOST-HOME; \
         echo ROOT; ls -1 /; echo END; \
         echo changed > /etc/os-release; cat /etc/os-release; id -u"
    );
    let o = output(sb(
        tag,
        &p.dir,
        &["run", "--image", "testimg", "--", "sh", "-c", &script],
    ));
    let out = ok(o);
    assert!(out.starts_with(image::OS_RELEASE), "{out}");
    for bad in ["GONE-VISIBLE", "OPAQUE-LEAKS", "HOST-ETC", "HOST-HOME"] {
        assert!(!out.contains(bad), "{bad}: {out}");
    }
    assert!(out.contains("new\nfrom the top layer\n"), "{out}");
    assert!(out.contains("owned 100:100 640"), "{out}");
    assert!(out.contains("passwd 0:0"), "{out}");
    assert!(out.contains("appdir 100:100 750"), "{out}");
    assert!(
        out.contains("pwd /work var from-the-image path /bin"),
        "{out}"
    );
    assert!(out.contains("changed\n0\n"), "{out}");
    // The root lists the directories sbox mounts on, though the image has
    // none of them.
    let listed: Vec<&str> = out
        .split("ROOT\n")
        .nth(1)
        .and_then(|r| r.split("END\n").next())
        .unwrap_or_default()
        .lines()
        .collect();
    for d in ["proc", "sys", "dev", "tmp", "run"] {
        assert!(listed.contains(&d), "/{d} not listed: {listed:?}");
    }

    // The write went to that sandbox's upper layer: the image is unchanged.
    let again = ok(output(sb(
        tag,
        &p.dir,
        &["run", "--image", "testimg", "--", "cat", "/etc/os-release"],
    )));
    assert_eq!(again, image::OS_RELEASE);

    // The command line wins over the image's config.
    let o = ok(output(sb(
        tag,
        &p.dir,
        &[
            "run",
            "--image",
            "testimg",
            "--env",
            "IMGVAR=cli",
            "--chdir",
            "/etc",
            "--",
            "sh",
            "-c",
            "echo $IMGVAR $(pwd)",
        ],
    )));
    assert_eq!(o.trim(), "cli /etc");

    // The project is there, read-write, at its path.
    p.write("in-project", "mine\n");
    let o = ok(output(sb(
        tag,
        &p.dir,
        &[
            "run",
            "--image",
            "testimg",
            "--chdir",
            p.dir.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "cat in-project; echo out > made",
        ],
    )));
    assert_eq!(o, "mine\n");
    assert_eq!(
        std::fs::read_to_string(p.dir.join("made")).unwrap(),
        "out\n"
    );
}

#[test]
fn docker_save_oci_archive_and_rootfs_tarball_import() {
    let tag = "formats";
    let p = Project::new("img-formats");
    let layers = [image::base_layer(), image::top_layer()];

    let save = p.dir.join("saved.tar");
    let id = image::write_docker_save(&save, &layers, "busybox-test:1");
    give(&save);
    let out = ok(output(sb(
        tag,
        &p.dir,
        &["image", "import", save.to_str().unwrap()],
    )));
    assert_eq!(out.trim(), id.trim_start_matches("sha256:"));
    let o = ok(output(sb(
        tag,
        &p.dir,
        &["run", "--image", "busybox-test:1", "--", "cat", "/etc/top"],
    )));
    assert_eq!(o, "from the top layer\n");
    let ls = ok(output(sb(tag, &p.dir, &["image", "ls"])));
    assert!(ls.contains("docker.io/library/busybox-test:1"), "{ls}");

    // An OCI archive: a tar of a layout.
    let dir = p.dir.join("layout");
    image::write_oci_layout(&dir, &layers);
    let archive = p.dir.join("oci.tar");
    image::tar_dir(&dir, &archive);
    give(&p.dir);
    ok(output(sb(
        tag,
        &p.dir,
        &["image", "import", archive.to_str().unwrap(), "ociarchive:2"],
    )));
    let o = ok(output(sb(
        tag,
        &p.dir,
        &[
            "run",
            "--image",
            "localhost/ociarchive:2",
            "--",
            "cat",
            "/opq/new",
        ],
    )));
    assert_eq!(o, "new\n");

    // A plain rootfs tarball, gzip-compressed.
    let rootfs = p.dir.join("rootfs.tar.gz");
    image::write_rootfs_tarball(&rootfs);
    give(&rootfs);
    ok(output(sb(
        tag,
        &p.dir,
        &["image", "import", rootfs.to_str().unwrap(), "plain"],
    )));
    let o = ok(output(sb(
        tag,
        &p.dir,
        &[
            "run",
            "--image",
            "plain",
            "--",
            "sh",
            "-c",
            "cat /etc/os-release; test -e /etc/top || echo no-top",
        ],
    )));
    assert_eq!(o, format!("{}no-top\n", image::OS_RELEASE));

    // By id too; then rm by name removes it and what only it used.
    let short = &id["sha256:".len()..][..12];
    ok(output(sb(
        tag,
        &p.dir,
        &["run", "--image", short, "--", "true"],
    )));
    for name in ["busybox-test:1", "ociarchive:2", "plain"] {
        ok(output(sb(tag, &p.dir, &["image", "rm", name])));
    }
    assert_eq!(ok(output(sb(tag, &p.dir, &["image", "ls", "-q"]))), "");
    store_is_empty(tag, "after rm");
}

#[test]
fn a_named_image_sandbox_diffs_commits_and_runs_the_committed_image() {
    let tag = "named";
    let p = Project::new("img-named");
    let (dir, _) = layout(&p);
    ok(output(sb(
        tag,
        &p.dir,
        &["image", "import", dir.to_str().unwrap(), "base"],
    )));
    let name = format!("imgbox-{}", std::process::id());
    ok(output(sb(
        tag,
        &p.dir,
        &["run", "--image", "base", "--name", &name, "--", "sh", "-c", "echo added > /etc/added; rm /etc/top; mkdir /srv; echo x > /srv/x; chown 100:100 /srv/x"],
    )));
    let diff = ok(output(sb(tag, &p.dir, &["diff", "--no-pager", &name])));
    for want in ["A /etc/added", "D /etc/top", "A /srv/x"] {
        assert!(diff.lines().any(|l| l == want), "{want}: {diff}");
    }
    assert!(!diff.contains("/etc/os-release"), "{diff}");
    // The mount points sbox made for the host's name files are not changes.
    assert!(
        !diff.contains("/etc/hosts") && !diff.contains("/etc/resolv.conf"),
        "{diff}"
    );
    // The sandbox remembers its image.
    let o = ok(output(sb(
        tag,
        &p.dir,
        &[
            "run",
            "--name",
            &name,
            "--",
            "sh",
            "-c",
            "cat /etc/added /etc/os-release",
        ],
    )));
    assert_eq!(o, format!("added\n{}", image::OS_RELEASE));
    // Copying onto the host makes no sense for it.
    fails_125(
        &output(sb(tag, &p.dir, &["commit", &name, "/etc"])),
        "host commit",
    );

    ok(output(sb(
        tag,
        &p.dir,
        &["commit", "--image", "derived:1", &name],
    )));
    let o = ok(output(sb(
        tag,
        &p.dir,
        &["run", "--image", "derived:1", "--", "sh", "-c", "cat /etc/added; test -e /etc/top && echo TOP; stat -c '%u:%g' /srv/x; cat /opq/new; echo $IMGVAR"],
    )));
    assert_eq!(o, "added\n100:100\nnew\nfrom-the-image\n");
    let js: serde_json::Value = serde_json::from_str(&ok(output(sb(
        tag,
        &p.dir,
        &["image", "inspect", "derived:1"],
    ))))
    .unwrap();
    assert_eq!(js[0]["Layers"].as_array().map(Vec::len), Some(3));

    // The base is in use by the sandbox: refused without -f.
    let err = fails_125(
        &output(sb(tag, &p.dir, &["image", "rm", "base"])),
        "rm in use",
    );
    assert!(err.contains(&name), "{err}");
    ok(output(sb(tag, &p.dir, &["rm", &name])));
    ok(output(sb(tag, &p.dir, &["image", "rm", "base"])));
    // The derived image still runs: its layers are its own too.
    ok(output(sb(
        tag,
        &p.dir,
        &["run", "--image", "derived:1", "--", "cat", "/etc/added"],
    )));
    ok(output(sb(tag, &p.dir, &["image", "rm", "derived:1"])));
    store_is_empty(tag, "after rm of both");

    // A host-root sandbox cannot become an image.
    let host = format!("hostbox-{}", std::process::id());
    ok(output(sb(
        tag,
        &p.dir,
        &["run", "--name", &host, "--", "true"],
    )));
    let err = fails_125(
        &output(sb(tag, &p.dir, &["commit", "--image", "x", &host])),
        "host root",
    );
    assert!(err.contains("--image"), "{err}");
    ok(output(sb(tag, &p.dir, &["rm", &host])));
}

#[test]
fn bad_images_are_refused_with_one_line_and_leave_nothing() {
    let tag = "bad";
    let p = Project::new("img-bad");
    let err = fails_125(
        &output(sb(
            tag,
            &p.dir,
            &["run", "--image", "localhost/nothere:1", "--", "true"],
        )),
        "unknown image",
    );
    assert!(
        err.contains("not in the local store") && err.contains("sbox image pull"),
        "{err}"
    );
    fails_125(
        &output(sb(tag, &p.dir, &["image", "inspect", "nothere"])),
        "inspect unknown",
    );
    fails_125(
        &output(sb(tag, &p.dir, &["image", "rm", "nothere"])),
        "rm unknown",
    );

    // A layer whose bytes do not match its digest.
    let (dir, _) = layout(&p);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let man: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let layer = blob(man["layers"][1]["digest"].as_str().unwrap());
    let good = std::fs::read(&layer).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n / 2] ^= 0x55;
    std::fs::write(&layer, &bad).unwrap();
    let err = fails_125(
        &output(sb(
            tag,
            &p.dir,
            &["image", "import", dir.to_str().unwrap(), "x"],
        )),
        "digest",
    );
    assert!(err.contains("digest"), "{err}");
    store_is_empty(tag, "digest mismatch");
    std::fs::write(&layer, &good).unwrap();

    // Corrupt layers whose digests match what they are: a broken gzip
    // stream, a layer whose content is not what the config's diff_id says.
    type Spoil = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Vec<Vec<u8>>, Spoil)> = vec![
        (
            "escape",
            vec![image::tar_of(&[(
                "../../escaped-by-sbox-test",
                b'0',
                b"x",
                0,
                0o644,
            )])],
            Box::new(|_| {}),
        ),
        (
            "through-symlink",
            vec![image::tar_of(&[
                ("etc", b'2', b"/tmp", 0, 0o777),
                ("etc/escaped-by-sbox-test", b'0', b"x", 0, 0o644),
            ])],
            Box::new(|_| {}),
        ),
        (
            "hardlink-out",
            vec![image::tar_of(&[(
                "h",
                b'1',
                b"../../../etc/passwd",
                0,
                0o644,
            )])],
            Box::new(|_| {}),
        ),
        (
            "diff-id",
            vec![image::base_layer()],
            Box::new(|d: &Path| rewrite_diff_id(d)),
        ),
        (
            "truncated",
            vec![image::base_layer()],
            Box::new(|d: &Path| truncate_layer(d)),
        ),
    ];
    for (what, layers, spoil) in cases {
        let d = p.dir.join(what);
        image::write_oci_layout(&d, &layers);
        spoil(&d);
        give(&d);
        let err = fails_125(
            &output(sb(
                tag,
                &p.dir,
                &["image", "import", d.to_str().unwrap(), "x"],
            )),
            what,
        );
        assert!(
            err.contains("layer") || err.contains("digest"),
            "{what}: {err}"
        );
        store_is_empty(tag, what);
    }
    assert!(!Path::new("/tmp/escaped-by-sbox-test").exists());
    assert!(!p
        .dir
        .parent()
        .unwrap()
        .join("escaped-by-sbox-test")
        .exists());
    assert!(!store_dir(tag).join("escaped-by-sbox-test").exists());

    // Not an image at all.
    p.write("junk", "not an image\n");
    fails_125(
        &output(sb(
            tag,
            &p.dir,
            &["image", "import", p.dir.join("junk").to_str().unwrap()],
        )),
        "junk",
    );
    store_is_empty(tag, "junk");
}

/// Replace the config's diff_ids with another's (the layer stays valid).
fn rewrite_diff_id(layout: &Path) {
    let other = image::config(&[image::top_layer()]);
    respin(layout, |_, cfg| {
        *cfg = serde_json::from_slice(&other).unwrap();
    });
}

/// Cut the gzip stream of the layer short (its descriptor updated).
fn truncate_layer(layout: &Path) {
    respin(layout, |blobs, _| {
        let (path, bytes) = blobs;
        let n = bytes.len();
        bytes.truncate(n * 2 / 3);
        let _ = path;
    });
}

/// Rewrite a one-layer layout with `f` applied to (layer blob, config),
/// every digest made to match again.
fn respin(layout: &Path, f: impl Fn((&Path, &mut Vec<u8>), &mut serde_json::Value)) {
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut man: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let lpath = blob(man["layers"][0]["digest"].as_str().unwrap());
    let mut layer = std::fs::read(&lpath).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blob(man["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    f((&lpath, &mut layer), &mut cfg);
    let put = |b: &[u8]| {
        let h = image::sha256(b);
        std::fs::write(layout.join("blobs/sha256").join(&h), b).unwrap();
        format!("sha256:{h}")
    };
    man["layers"][0]["digest"] = put(&layer).into();
    man["layers"][0]["size"] = layer.len().into();
    let cb = serde_json::to_vec(&cfg).unwrap();
    man["config"]["digest"] = put(&cb).into();
    man["config"]["size"] = cb.len().into();
    let mb = serde_json::to_vec(&man).unwrap();
    let md = put(&mb);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mb.len()}]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

#[test]
fn a_project_file_chooses_an_image_and_trust_lists_it() {
    let tag = "profile";
    let p = Project::new("img-profile");
    let (dir, _) = layout(&p);
    ok(output(sb(
        tag,
        &p.dir,
        &["image", "import", dir.to_str().unwrap(), "projimg"],
    )));
    p.write(".sbox.toml", "[filesystem]\nimage = \"projimg\"\n");
    let show = ok(output(sb(tag, &p.dir, &["trust", "--show"])));
    assert!(show.contains("runs on the image projimg"), "{show}");
    ok(output(sb(tag, &p.dir, &["trust", "-y"])));
    let o = ok(output(sb(
        tag,
        &p.dir,
        &["run", "--", "cat", "/etc/os-release"],
    )));
    assert_eq!(o, image::OS_RELEASE);
    // The shell of an image is its /bin/sh, in the image's working directory.
    let o = ok(output(sb(
        tag,
        &p.dir,
        &["shell", "-c", "pwd; cat /etc/top"],
    )));
    assert_eq!(o, "/work\nfrom the top layer\n");
    // The project's sandbox keeps its image when the file no longer says it.
    std::fs::remove_file(p.dir.join(".sbox.toml")).unwrap();
    let o = ok(output(sb(tag, &p.dir, &["shell", "-c", "cat /etc/top"])));
    assert_eq!(o, "from the top layer\n");
    // --image on the command line wins over the profile's.
    let rootfs = p.dir.join("rootfs.tar.gz");
    image::write_rootfs_tarball(&rootfs);
    give(&rootfs);
    ok(output(sb(
        tag,
        &p.dir,
        &["image", "import", rootfs.to_str().unwrap(), "other"],
    )));
    let o = ok(output(sb(
        tag,
        &p.dir,
        &[
            "run",
            "--image",
            "other",
            "--",
            "sh",
            "-c",
            "test -e /etc/top || echo other",
        ],
    )));
    assert_eq!(o, "other\n");
}

#[test]
fn an_oci_bundle_of_an_image_runs_under_runc() {
    let tag = "export";
    let p = Project::new("img-export");
    let (dir, _) = layout(&p);
    ok(output(sb(
        tag,
        &p.dir,
        &["image", "import", dir.to_str().unwrap(), "expimg"],
    )));
    let bundle = p.dir.join("bundle");
    let o = output(sb(
        tag,
        &p.dir,
        &[
            "export",
            "--oci",
            bundle.to_str().unwrap(),
            "--image",
            "expimg",
            "--",
            "sh",
            "-c",
            "cat /etc/os-release /opq/new; test -e /etc/gone || echo no-gone; echo $IMGVAR; pwd",
        ],
    ));
    ok(o);
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/etc/os-release")).unwrap(),
        image::OS_RELEASE
    );
    // The copy is the bundle's own: not a link into the store.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(bundle.join("rootfs/etc/os-release"))
            .unwrap()
            .nlink(),
        1
    );
    let id = format!("sbox-img-export-{}-{}", std::process::id(), unique());
    let state = user().runtime.join("runc");
    let run = output(as_user(
        Path::new("timeout"),
        &[
            "120",
            "runc",
            "--root",
            state.to_str().unwrap(),
            "run",
            "-b",
            bundle.to_str().unwrap(),
            &id,
        ],
    ));
    assert!(run.status.success(), "runc: {run:?}");
    assert_eq!(
        stdout(&run),
        format!("{}new\nno-gone\nfrom-the-image\n/work\n", image::OS_RELEASE)
    );
}

#[test]
fn the_project_mount_point_is_not_a_change_of_an_image_sandbox() {
    let tag = "scaffold";
    let p = Project::new("img-scaffold");
    let (dir, _) = layout(&p);
    ok(output(sb(
        tag,
        &p.dir,
        &["image", "import", dir.to_str().unwrap(), "base"],
    )));
    // A project outside /tmp: its mount point is made in the upper layer.
    let proj = user().home.join(format!("proj-{tag}"));
    std::fs::create_dir_all(&proj).unwrap();
    give(&proj);
    assert!(!proj.starts_with("/tmp"), "{}", proj.display());
    let top = proj
        .components()
        .nth(1)
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    let name = format!("scaffold-{}", std::process::id());
    ok(output(sb(
        tag,
        &proj,
        &[
            "run",
            "--image",
            "base",
            "--name",
            &name,
            "--chdir",
            proj.to_str().unwrap(),
            // Another directory bound where the image has nothing.
            "--ro-bind",
            &format!("{}:/data/in", p.dir.display()),
            "--",
            "sh",
            "-c",
            "echo x > /etc/x2; test -d /data/in",
        ],
    )));
    let diff = ok(output(sb(tag, &proj, &["diff", "--no-pager", &name])));
    assert_eq!(diff, "A /etc/x2\n");
    ok(output(sb(
        tag,
        &proj,
        &["commit", "--image", "derived2", &name],
    )));
    let o = ok(output(sb(
        tag,
        &p.dir,
        &[
            "run",
            "--image",
            "derived2",
            "--",
            "sh",
            "-c",
            &format!("cat /etc/x2; test -e /{top} || echo no-{top}; test -e /data || echo no-data"),
        ],
    )));
    assert_eq!(o, format!("x\nno-{top}\nno-data\n"));
    ok(output(sb(tag, &p.dir, &["rm", &name])));
}

/// `sbox run --image` runs what `docker run` would: the image's Entrypoint
/// before the command given, or before the image's Cmd when none is.
#[test]
fn run_without_a_command_runs_the_images_entrypoint_and_cmd() {
    let tag = "entrypoint";
    let p = Project::new("img-entrypoint");
    let layers = [image::base_layer()];
    let plain = p.dir.join("plain");
    image::write_oci_layout_with(
        &plain,
        &layers,
        serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["/bin/sh", "-c", "echo from-cmd"]}),
    );
    give(&plain);
    let entry = p.dir.join("entry");
    image::write_oci_layout_with(
        &entry,
        &layers,
        serde_json::json!({"Env": ["PATH=/bin"], "Entrypoint": ["/bin/echo", "entry"], "Cmd": ["default-arg"]}),
    );
    give(&entry);
    let bare = p.dir.join("bare");
    image::write_oci_layout_with(&bare, &layers, serde_json::json!({"Env": ["PATH=/bin"]}));
    give(&bare);
    for (dir, name) in [(&plain, "plain:1"), (&entry, "entry:1"), (&bare, "bare:1")] {
        ok(output(sb(
            tag,
            &p.dir,
            &["image", "import", dir.to_str().expect("utf-8"), name],
        )));
    }
    let run = |args: &[&str]| ok(output(sb(tag, &p.dir, args)));
    assert_eq!(run(&["run", "--image", "plain:1"]), "from-cmd\n");
    assert_eq!(
        run(&["run", "--image", "plain:1", "--", "echo", "given"]),
        "given\n"
    );
    assert_eq!(run(&["run", "--image", "entry:1"]), "entry default-arg\n");
    assert_eq!(
        run(&["run", "--image", "entry:1", "--", "given"]),
        "entry given\n"
    );
    // Nothing to run: one line, exit 125.
    let err = fails_125(
        &output(sb(tag, &p.dir, &["run", "--image", "bare:1"])),
        "no Cmd",
    );
    assert!(err.contains("no Entrypoint or Cmd"), "{err}");
}

/// `--user` and `--entrypoint` override the image's User and Entrypoint,
/// as `docker run -u` and `docker run --entrypoint` do; both need an image.
/// An image a running sandbox uses cannot be removed.
#[test]
fn user_and_entrypoint_flags_override_the_image() {
    let tag = "user-flag";
    let p = Project::new("img-user-flag");
    let layers = [image::base_layer()];
    let dir = p.dir.join("app");
    image::write_oci_layout_with(
        &dir,
        &layers,
        serde_json::json!({"Env": ["PATH=/bin"], "User": "app",
            "Entrypoint": ["/bin/echo", "entry"], "Cmd": ["default-arg"]}),
    );
    give(&dir);
    ok(output(sb(
        tag,
        &p.dir,
        &["image", "import", dir.to_str().expect("utf-8"), "app:1"],
    )));
    let run = |args: &[&str]| ok(output(sb(tag, &p.dir, args)));
    let ids = [
        "--entrypoint",
        "/bin/sh",
        "--",
        "-c",
        "echo $(id -u):$(id -g) $HOME",
    ];
    let with = |pre: &[&str]| {
        let mut a = vec!["run", "--image", "app:1"];
        a.extend_from_slice(pre);
        a.extend_from_slice(&ids);
        run(&a)
    };
    // The image's User, then another one by name, by number, with a group.
    assert_eq!(with(&[]), "100:100 /home/app\n");
    assert_eq!(with(&["--user", "root"]), "0:0 /root\n");
    assert_eq!(with(&["-u", "0"]), "0:0 /root\n");
    assert_eq!(with(&["--user", "app:root"]), "100:0 /home/app\n");
    // --entrypoint replaces the Entrypoint and drops the Cmd; "" clears it.
    assert_eq!(
        run(&[
            "run",
            "--image",
            "app:1",
            "--entrypoint",
            "/bin/echo",
            "--",
            "x"
        ]),
        "x\n"
    );
    assert_eq!(
        run(&[
            "run",
            "--image",
            "app:1",
            "--entrypoint",
            "",
            "--",
            "/bin/echo",
            "y"
        ]),
        "y\n"
    );
    assert_eq!(run(&["run", "--image", "app:1"]), "entry default-arg\n");
    // Bad input: one line, exit 125.
    let err = fails_125(
        &output(sb(
            tag,
            &p.dir,
            &["run", "--image", "app:1", "--user", "nobody", "--", "true"],
        )),
        "unknown user",
    );
    assert!(err.contains("nobody") && err.contains("--user"), "{err}");
    for flag in ["--user", "--entrypoint"] {
        let err = fails_125(
            &output(sb(tag, &p.dir, &["run", flag, "0", "--", "true"])),
            flag,
        );
        assert!(err.contains("image"), "{err}");
    }
    let err = fails_125(
        &output(sb(
            tag,
            &p.dir,
            &["shell", "--image", "app:1", "--entrypoint", "/bin/sh"],
        )),
        "shell --entrypoint",
    );
    assert!(err.contains("sbox run"), "{err}");

    // An image a running sandbox uses cannot be removed, not even with -f
    // (as docker); once the sandbox ended it can.
    let mut c = sb(
        tag,
        &p.dir,
        &[
            "run",
            "--image",
            "app:1",
            "-u",
            "0",
            "--entrypoint",
            "/bin/sh",
            "--",
            "-c",
            "touch \"$0\"/up; read x; exit 0",
            p.dir.to_str().expect("utf-8"),
        ],
    );
    c.stdin(std::process::Stdio::piped());
    let mut child = c.spawn().expect("spawn sbox run");
    let up = p.dir.join("up");
    let t0 = std::time::Instant::now();
    while !up.exists() && t0.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(up.exists(), "the sandbox did not start");
    for args in [
        &["image", "rm", "app:1"][..],
        &["image", "rm", "-f", "app:1"],
    ] {
        let err = fails_125(&output(sb(tag, &p.dir, args)), "rm of an image in use");
        assert!(err.contains("running sandbox"), "{err}");
    }
    drop(child.stdin.take());
    assert!(child.wait().expect("wait").success());
    ok(output(sb(tag, &p.dir, &["image", "rm", "app:1"])));
}
