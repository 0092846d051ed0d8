//! What a new user meets in the first hour, through the real binary as the
//! unprivileged test user: `sbox diff` path filters, `--stat` and the
//! pager; the messages of exec, stop, diff and --memory; `reset` asking
//! before it throws away a lot; `ps -a` columns; optional binds; the
//! subordinate range `sbox doctor` reports.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A sandbox name unique to this test run.
fn uniq(tag: &str) -> String {
    format!("dm-{tag}-{}", std::process::id())
}

/// Removes a named sandbox when dropped, also when the test failed.
struct Named {
    name: String,
}

impl Named {
    fn new(tag: &str) -> Self {
        Named { name: uniq(tag) }
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = output(sbox(Path::new("/tmp"), &["rm", "-f", &self.name]));
    }
}

fn sb(dir: &Path, args: &[&str]) -> Output {
    output(sbox(dir, args))
}

/// Assert exit status 125 with a one-line error; return it.
#[track_caller]
fn fails(o: Output) -> String {
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(125),
        "stdout: {}\nstderr: {err}",
        stdout(&o)
    );
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    err
}

/// A stored sandbox whose changes are known: /opt/TAG/a/big (3000 bytes),
/// /opt/TAG/b/small (3), /usr/local/TAG (2), /etc/debian_version deleted.
fn known_changes(p: &Project, n: &Named) -> String {
    let tag = format!("dm{}", std::process::id());
    ok(sb(
        &p.dir,
        &[
            "run",
            "--name",
            &n.name,
            "--",
            "sh",
            "-c",
            &format!(
                "mkdir -p /opt/{tag}/a /opt/{tag}/b && head -c 3000 /dev/zero > /opt/{tag}/a/big \
                 && echo hi > /opt/{tag}/b/small && echo x > /usr/local/{tag} && rm /etc/debian_version"
            ),
        ],
    ));
    tag
}

#[test]
fn diff_filters_by_path_and_stat_sums_per_directory() {
    let p = Project::new("dmdiff");
    let n = Named::new("diff");
    let tag = known_changes(&p, &n);
    let all = ok(sb(&p.dir, &["diff", &n.name]));
    assert!(all.contains("D /etc/debian_version"), "{all}");
    assert!(all.contains(&format!("A /usr/local/{tag}")), "{all}");

    // PATH filters: at or below them, nothing else.
    let a = ok(sb(&p.dir, &["diff", &n.name, &format!("/opt/{tag}/a")]));
    assert_eq!(a, format!("A /opt/{tag}/a\nA /opt/{tag}/a/big\n"));
    let two = ok(sb(
        &p.dir,
        &["diff", &n.name, &format!("/opt/{tag}/b/small"), "/etc"],
    ));
    assert_eq!(
        two,
        format!("D /etc/debian_version\nA /opt/{tag}/b/small\n")
    );
    // A prefix of a name is not a parent.
    let none = ok(sb(&p.dir, &["diff", &n.name, &format!("/opt/{tag}/a/bi")]));
    assert_eq!(none, "");
    // JSON is filtered too.
    let json: serde_json::Value =
        serde_json::from_str(&ok(sb(&p.dir, &["diff", "--json", &n.name, "/usr/local"])))
            .expect("json");
    assert_eq!(
        json,
        serde_json::json!([{"kind": "A", "path": format!("/usr/local/{tag}")}])
    );

    // --stat: changes and bytes per top-level directory, largest first,
    // then a total.
    let stat = ok(sb(&p.dir, &["diff", "--stat", &n.name]));
    let rows: Vec<Vec<&str>> = stat
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["CHANGES", "SIZE", "PATH"], "{stat}");
    let opt = rows.iter().position(|r| r[2] == "/opt").expect("/opt row");
    let usr = rows.iter().position(|r| r[2] == "/usr").expect("/usr row");
    let etc = rows.iter().position(|r| r[2] == "/etc").expect("/etc row");
    assert_eq!(opt, 1, "the largest is not first: {stat}");
    assert!(opt < usr && usr < etc, "not largest first: {stat}");
    assert_eq!(rows[opt][..2], ["5", "2.9K"], "{stat}");
    assert_eq!(rows[usr][..2], ["1", "2B"], "{stat}");
    assert_eq!(rows[etc][..2], ["1", "0B"], "{stat}");
    let total = rows.last().expect("total");
    assert_eq!(total[2], "total", "{stat}");
    let count: u64 = rows[1..rows.len() - 1]
        .iter()
        .map(|r| r[0].parse::<u64>().expect("count"))
        .sum();
    assert_eq!(total[0], count.to_string(), "{stat}");
    // The numbers line up on the right.
    let ends: Vec<usize> = stat
        .lines()
        .map(|l| l.find(" total").or_else(|| l.find(" /")).unwrap_or(0))
        .filter(|&e| e > 0)
        .collect();
    assert!(ends.windows(2).all(|w| w[0] == w[1]), "not aligned: {stat}");

    // --stat below a PATH: one level below it, in exact bytes in JSON.
    let stat = ok(sb(
        &p.dir,
        &["diff", "--stat", &n.name, &format!("/opt/{tag}")],
    ));
    let rows: Vec<Vec<&str>> = stat
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[1], ["2", "2.9K", &format!("/opt/{tag}/a")], "{stat}");
    assert_eq!(rows[2], ["2", "3B", &format!("/opt/{tag}/b")], "{stat}");
    assert_eq!(rows.last().expect("total")[..], ["5", "2.9K", "total"]);
    let json: serde_json::Value = serde_json::from_str(&ok(sb(
        &p.dir,
        &[
            "diff",
            "--stat",
            "--json",
            &n.name,
            &format!("/opt/{tag}/a"),
        ],
    )))
    .expect("json");
    assert_eq!(
        json,
        serde_json::json!([
            {"path": format!("/opt/{tag}/a/big"), "changes": 1, "bytes": 3000},
            {"path": format!("/opt/{tag}/a"), "changes": 1, "bytes": 0}
        ])
    );

    // A PATH is absolute; a NAME has no slash.
    let err = fails(sb(&p.dir, &["diff", &n.name, "opt/x"]));
    assert!(err.contains("absolute"), "{err}");
    // A first operand with a slash is a PATH of the current project's
    // sandbox (there is none here).
    let err = fails(sb(&p.dir, &["diff", "/opt"]));
    assert!(err.contains("no project sandbox"), "{err}");
}

/// A pager that marks every line it is given.
fn marking_pager(p: &Project) -> PathBuf {
    let f = p.write("pager.sh", "#!/bin/sh\nexec sed 's/^/PAGED:/'\n");
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    f
}

/// `sbox ARGS` under `script`: on a terminal of its own.
fn on_terminal(p: &Project, pager: &Path, args: &str) -> String {
    let line = format!("{} {args}", sbox_bin().display());
    let mut c = as_user(Path::new("script"), &["-qec", &line, "/dev/null"]);
    c.current_dir(&p.dir).env("PAGER", pager);
    let o = output(c);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    stdout(&o).replace('\r', "")
}

#[test]
fn diff_pages_on_a_terminal_only() {
    let p = Project::new("dmpager");
    let n = Named::new("pager");
    let tag = known_changes(&p, &n);
    let pager = marking_pager(&p);
    let want = format!("A /usr/local/{tag}\n");
    // On a terminal: through $PAGER.
    let out = on_terminal(&p, &pager, &format!("diff {} /usr/local", n.name));
    assert_eq!(out, format!("PAGED:{want}"));
    let out = on_terminal(&p, &pager, &format!("diff --stat {}", n.name));
    assert!(
        out.lines().all(|l| l.starts_with("PAGED:")),
        "not all paged: {out}"
    );
    // --no-pager: straight.
    let out = on_terminal(
        &p,
        &pager,
        &format!("diff --no-pager {} /usr/local", n.name),
    );
    assert_eq!(out, want);
    // Piped: straight.
    let mut c = sbox(&p.dir, &["diff", &n.name, "/usr/local"]);
    c.env("PAGER", &pager);
    assert_eq!(ok(output(c)), want);
}

#[test]
fn exec_and_stop_tell_a_missing_sandbox_from_a_stopped_one() {
    let p = Project::new("dmmsg");
    let missing = uniq("never-made");
    for args in [
        vec!["exec", &*missing, "--", "true"],
        vec!["stop", &*missing],
    ] {
        let err = fails(sb(&p.dir, &args));
        assert!(
            err.contains(&format!("no sandbox named \"{missing}\"")),
            "{args:?}: {err}"
        );
    }
    let n = Named::new("stopped");
    ok(sb(&p.dir, &["run", "--name", &n.name, "--", "true"]));
    for args in [vec!["exec", &*n.name, "--", "true"], vec!["stop", &*n.name]] {
        let err = fails(sb(&p.dir, &args));
        assert!(
            err.contains(&format!("sandbox \"{}\" is not running", n.name)),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn memory_lists_the_units_it_accepts() {
    let p = Project::new("dmmem");
    for bad in ["lots", "12parsecs"] {
        let err = fails(run_sh(&p.dir, &["--memory", bad], "true"));
        for unit in ["k", "M", "G", "T", "512M"] {
            assert!(err.contains(unit), "{bad}: no {unit} in {err}");
        }
    }
    ok(run_sh(&p.dir, &["--memory", "512MiB"], "true"));
}

#[test]
fn diff_without_a_project_sandbox_says_how_to_name_one() {
    let home = user().home.clone();
    for (dir, what) in [
        (PathBuf::from("/"), "/ is the root directory"),
        (home.clone(), "is your home directory"),
    ] {
        let err = fails(sb(&dir, &["diff"]));
        assert!(err.contains(what), "{}: {err}", dir.display());
        assert!(err.contains("no project sandbox"), "{err}");
        assert!(err.contains("sbox diff NAME"), "{err}");
        assert!(err.contains("sbox ps -a"), "{err}");
        let err = fails(sb(&dir, &["reset"]));
        assert!(err.contains("sbox reset NAME"), "{err}");
    }
    let p = Project::new("dmnoproj");
    let err = fails(sb(&p.dir, &["diff"]));
    assert!(
        err.contains(&format!("no project sandbox for {}", p.dir.display())),
        "{err}"
    );
}

#[test]
fn help_says_shell_keeps_one_sandbox_per_project() {
    let help = ok(sb(Path::new("/tmp"), &["--help"]));
    let line = help
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("shell "))
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(line.contains("one sandbox per project"), "{help}");
    assert!(line.contains("joins"), "{help}");
}

#[test]
fn reset_asks_before_throwing_away_more_than_100_mb() {
    let p = Project::new("dmreset");
    let n = Named::new("reset");
    ok(sb(&p.dir, &["run", "--name", &n.name, "--", "true"]));
    // 150 MB (sparse) in the stored upper layer.
    let upper = user()
        .home
        .join(".local/share/sbox/sandboxes")
        .join(&n.name)
        .join("upper");
    let big = upper.join(format!("big-{}", std::process::id()));
    let f = std::fs::File::create(&big).expect("create");
    f.set_len(150 << 20).expect("set_len");
    drop(f);
    chown(&big);
    let err = fails(sb(&p.dir, &["reset", &n.name]));
    assert!(err.contains("150.0M"), "{err}");
    assert!(err.contains("-f"), "{err}");
    assert!(big.exists(), "reset without a confirmation threw it away");
    // On a terminal, "n" keeps it.
    let line = format!("{} reset {}", sbox_bin().display(), n.name);
    let mut c = as_user(Path::new("script"), &["-qec", &line, "/dev/null"]);
    c.current_dir(&p.dir);
    let o = output_with_input(c, b"n\n");
    let out = stdout(&o);
    assert!(out.contains("throw them away? [y/N]"), "{out}");
    assert!(big.exists(), "reset threw it away after n");
    // -f: no question.
    assert_eq!(
        ok(sb(&p.dir, &["reset", "-f", &n.name])),
        format!("{}\n", n.name)
    );
    assert!(!big.exists(), "reset -f kept it");
    // Small: no question either.
    ok(sb(
        &p.dir,
        &[
            "run",
            "--name",
            &n.name,
            "--",
            "sh",
            "-c",
            "echo x > /opt/small",
        ],
    ));
    assert_eq!(ok(sb(&p.dir, &["reset", &n.name])), format!("{}\n", n.name));
}

#[test]
fn ps_all_aligns_its_columns_and_shows_the_profile_of_stopped_ones() {
    let p = Project::new("dmps");
    let short = Named::new("s");
    let long = Named {
        name: format!("{}-with-a-name-longer-than-the-old-column", uniq("l")),
    };
    ok(sb(&p.dir, &["run", "--name", &short.name, "--", "true"]));
    ok(sb(
        &p.dir,
        &[
            "run",
            "--profile",
            "build",
            "--name",
            &long.name,
            "--",
            "true",
        ],
    ));
    let text = ok(sb(&p.dir, &["ps", "-a"]));
    let lines: Vec<&str> = text.lines().collect();
    let header = lines[0];
    let col = |name: &str| {
        header
            .find(name)
            .unwrap_or_else(|| panic!("{name}: {text}"))
    };
    for name in [&short.name, &long.name] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not listed: {text}"));
        // STATUS and PROFILE start where their headers do.
        assert_eq!(&line[col("STATUS")..col("STATUS") + 7], "stopped", "{text}");
        let profile = line[col("PROFILE")..].split_whitespace().next();
        let want = if name == &short.name { "dev" } else { "build" };
        assert_eq!(profile, Some(want), "{text}");
    }
}

#[test]
fn an_optional_bind_that_does_not_exist_is_skipped() {
    let p = Project::new("dmopt");
    let missing = format!("~/.cache/sbox-none-{}", std::process::id());
    // On the command line.
    let o = run_sh(
        &p.dir,
        &["--ro-bind", &format!("?{missing}")],
        "echo started",
    );
    assert_eq!(ok(o), "started\n");
    let o = run_sh(&p.dir, &["-v", "--ro-bind", &format!("?{missing}")], "true");
    assert!(
        stderr(&o).contains("does not exist, not bound"),
        "{}",
        stderr(&o)
    );
    // Without "?" it is still an error.
    fails(run_sh(&p.dir, &["--ro-bind", &missing], "true"));
    // One that exists is bound (read-only).
    let cache = user()
        .home
        .join(format!(".cache/sbox-some-{}", std::process::id()));
    std::fs::create_dir_all(&cache).expect("mkdir");
    chown(&cache);
    std::fs::write(cache.join("f"), "cached\n").expect("write");
    chown(&cache.join("f"));
    let spec = format!("?{}", cache.display());
    let o = run_sh(
        &p.dir,
        &["--ro-bind", &spec],
        &format!(
            "cat {0}/f; touch {0}/g 2>/dev/null || echo ro",
            cache.display()
        ),
    );
    assert_eq!(ok(o), "cached\nro\n");
    // The README's example, with a cache the user does not have: trusted
    // like any bind, then it starts.
    p.write(
        ".sbox.toml",
        &format!("[filesystem]\nro_bind = [\"?{missing}\"]\n\n[network]\nmode = \"none\"\n"),
    );
    let show = ok(sb(&p.dir, &["trust", "--show"]));
    assert!(show.contains(&format!("?{missing}")), "{show}");
    let o = run_sh(&p.dir, &[], "true");
    assert_eq!(o.status.code(), Some(125), "ran untrusted: {}", stderr(&o));
    ok(sb(&p.dir, &["trust", "--yes"]));
    assert_eq!(ok(run_sh(&p.dir, &[], "echo started")), "started\n");
    std::fs::remove_dir_all(&cache).ok();
}

/// `sbox doctor`'s line for `check`, with `env` set.
fn doctor_line(env: &[(&str, &Path)], check: &str) -> String {
    let mut c = sbox(Path::new("/tmp"), &["doctor"]);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = stdout(&output(c));
    out.lines()
        .find(|l| l.contains(check))
        .unwrap_or_else(|| panic!("no {check} line: {out}"))
        .to_string()
}

#[test]
fn doctor_reports_the_first_subordinate_range_and_warns_about_several() {
    let u = user();
    let p = Project::new("dmsubid");
    // Two ranges, the smaller first: newuidmap uses the first.
    let two = p.write(
        "subuid",
        &format!(
            "other:100000:65536\n{}:500000:1000\n{}:600000:65536\n",
            u.name, u.uid
        ),
    );
    let line = doctor_line(&[("SBOX_SUBUID_FILE", &two)], "subuid range");
    assert!(line.starts_with("WARN"), "{line}");
    assert!(line.contains("1000 ids from 500000"), "{line}");
    assert!(line.contains("2 ranges"), "{line}");
    assert!(line.contains("65536 from 600000"), "{line}");
    // One range: what newuidmap uses.
    let one = p.write("subuid1", &format!("{}:700000:65536\n", u.name));
    let line = doctor_line(&[("SBOX_SUBUID_FILE", &one)], "subuid range");
    assert!(line.starts_with("OK"), "{line}");
    assert!(
        line.contains("65536 ids from 700000") && line.contains("newuidmap uses"),
        "{line}"
    );
    let line = doctor_line(&[("SBOX_SUBGID_FILE", &two)], "subgid range");
    assert!(line.contains("1000 ids from 500000"), "{line}");
    // The real file: its first line for the user.
    let real = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    if let Some(first) = real.lines().find(|l| {
        let who = l.split(':').next().unwrap_or("");
        who == u.name || who == u.uid.to_string()
    }) {
        let f: Vec<&str> = first.split(':').collect();
        let line = doctor_line(&[], "subuid range");
        assert!(
            line.contains(&format!("{} ids from {} in /etc/subuid", f[2], f[1])),
            "{line} (first line: {first})"
        );
    }
}
