//! The stored settings of named sandboxes (`DATA/sandboxes/NAME/config.json`)
//! through the real binary: a record as earlier versions wrote it starts
//! with its settings, one with fields missing or unknown still starts, an
//! unreadable one is reported with its file and what is wrong, and `start`
//! builds the sandbox in its project whichever directory it is run from.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The record an earlier sbox wrote (see the fixture's test in src/names.rs).
const UNVERSIONED: &str = include_str!("fixtures/config-unversioned.json");

/// Removes the named sandbox when dropped, also when the test failed.
struct Named(String);

impl Drop for Named {
    fn drop(&mut self) {
        let _ = output(sbox(Path::new("/tmp"), &["rm", "-f", &self.0]));
    }
}

fn config_file(name: &str) -> PathBuf {
    user()
        .home
        .join(".local/share/sbox/sandboxes")
        .join(name)
        .join("config.json")
}

fn name_of(tag: &str) -> String {
    format!("sc-{tag}-{}", std::process::id())
}

/// A stopped named sandbox of `p` (made by the binary under test), whose
/// record is then replaced by `record`.
fn stored(p: &Project, tag: &str, record: &str) -> Named {
    let named = Named(name_of(tag));
    ok(sbox(&p.dir, &["run", "--name", &named.0, "--", "true"])
        .output()
        .expect("run"));
    let f = config_file(&named.0);
    assert!(f.exists(), "no record at {}", f.display());
    std::fs::write(&f, record).expect("write record");
    chown(&f);
    named
}

/// The fixture as the sandbox `name`'s, with the project replaced by `p`,
/// changed by `edit`.
fn fixture(name: &str, p: &Project, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(UNVERSIONED).expect("fixture");
    v["name"] = name.into();
    v["project"] = p.dir.to_string_lossy().into_owned().into();
    edit(&mut v);
    v.to_string()
}

/// The log of the sandbox once it holds `want`.
#[track_caller]
fn wait_for_log(name: &str, want: &str) -> String {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let log = stdout(&output(sbox(Path::new("/tmp"), &["logs", name])));
        if log.contains(want) {
            return log;
        }
        assert!(Instant::now() < end, "{want:?} not in the log: {log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `sbox start NAME` from a directory that is not the project.
fn start(name: &str) -> std::process::Output {
    output(sbox(Path::new("/tmp"), &["start", name]))
}

#[test]
fn a_record_of_the_unversioned_format_starts_with_its_settings() {
    let p = Project::new("sc-old");
    let named = stored(&p, "old", &fixture(&name_of("old"), &p, |_| {}));
    assert_eq!(ok(start(&named.0)), format!("{}\n", named.0));
    // Its --env and --hostname are in force.
    wait_for_log(&named.0, "A=b host=boxy");
}

#[test]
fn a_record_with_fields_missing_or_unknown_still_starts() {
    let p = Project::new("sc-drift");
    let record = fixture(&name_of("drift"), &p, |v| {
        let opts = v["opts"].as_object_mut().expect("opts");
        // As a record written before these options existed…
        for k in ["publish", "allow_host_loopback", "log_denials", "nofile"] {
            opts.remove(k);
        }
        // …and one written by a later sbox with options this one lacks.
        opts.insert("a_later_flag".into(), serde_json::json!(true));
        let top = v.as_object_mut().expect("record");
        top.remove("shell");
        top.insert("version".into(), serde_json::json!(1));
        top.insert("a_later_field".into(), serde_json::json!({"k": [1]}));
    });
    let named = stored(&p, "drift", &record);
    assert_eq!(ok(start(&named.0)), format!("{}\n", named.0));
    wait_for_log(&named.0, "A=b host=boxy");
    // And `ps -a` shows what it is.
    let ps = ok(output(sbox(Path::new("/tmp"), &["ps", "-a", "--json"])));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&ps).expect("ps --json");
    let row = rows
        .iter()
        .find(|r| r["name"] == named.0.as_str())
        .unwrap_or_else(|| panic!("{} not in ps -a: {ps}", named.0));
    assert_eq!(row["profile"], "dev", "{row}");
    assert_eq!(row["project"], p.dir.to_string_lossy().as_ref(), "{row}");
}

#[test]
fn an_unreadable_record_is_reported_with_its_file_and_why() {
    let p = Project::new("sc-bad");
    let named = stored(&p, "bad", "{\"name\": ");
    let file = config_file(&named.0);
    for (record, why) in [
        ("{\"name\": ".to_string(), "EOF while parsing".to_string()),
        (
            fixture(&named.0, &p, |v| v["opts"]["bind"] = "/tmp".into()),
            "invalid type".into(),
        ),
        (
            fixture(&named.0, &p, |v| v["version"] = 1000.into()),
            "written by a newer sbox".into(),
        ),
    ] {
        std::fs::write(&file, &record).expect("write record");
        let o = start(&named.0);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(125), "{record}: {err}");
        assert!(
            err.starts_with(&format!("sbox: error: {}: ", file.display())),
            "{record}: {err}"
        );
        assert!(err.contains(&why), "{record}: {err}");
        assert!(!err.contains("no sandbox named"), "{record}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // `ps -a` still lists it, without what it cannot read.
    let ps = ok(output(sbox(Path::new("/tmp"), &["ps", "-a", "--names"])));
    assert!(ps.lines().any(|l| l == named.0), "{ps}");
}

#[test]
fn start_builds_the_sandbox_in_its_project_from_anywhere() {
    // A profile named by a path relative to the project, and the working
    // directory inside: both are the project's on `start`, run from
    // elsewhere.
    let p = Project::new("sc-cwd");
    p.write(
        "prof.toml",
        "include = [\"dev\"]\n[process]\nhostname = \"relprof\"\n",
    );
    p.write("data/x", "in the project\n");
    let named = Named(name_of("cwd"));
    let script = "echo \"host=$(hostname) pwd=$(pwd) x=$(cat data/x)\"";
    let first = ok(sbox(
        &p.dir,
        &[
            "run",
            "--name",
            &named.0,
            "--profile",
            "./prof.toml",
            "--",
            "sh",
            "-c",
            script,
        ],
    )
    .output()
    .expect("run"));
    let want = format!("host=relprof pwd={} x=in the project", p.dir.display());
    assert_eq!(first, format!("{want}\n"));
    assert_eq!(ok(start(&named.0)), format!("{}\n", named.0));
    wait_for_log(&named.0, &want);
}
