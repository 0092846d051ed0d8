//! install.sh: installs a prebuilt binary, the man pages and the profiles
//! under a prefix as an unprivileged user, the installed binary finds the
//! installed profiles, the man pages render cleanly, `--uninstall` removes
//! it all, and a bad option is one line and a non-zero exit.
//!
//! As root (CI) everything runs as `$SBOX_TEST_USER` (default `sboxtest`)
//! through setpriv; the test fails if that user does not exist. As an
//! ordinary user it runs as you.

mod common;
use common::{built_sbox, repo_dir, user, TestUser};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const MAN1: &[&str] = &[
    "sbox.1",
    "sbox-run.1",
    "sbox-shell.1",
    "sbox-doctor.1",
    "sbox-ps.1",
    "sbox-exec.1",
    "sbox-stop.1",
    "sbox-start.1",
    "sbox-rm.1",
    "sbox-logs.1",
    "sbox-diff.1",
    "sbox-reset.1",
    "sbox-commit.1",
    "sbox-trust.1",
    "sbox-completions.1",
    "sbox-profile.1",
    "sbox-image.1",
];
const MAN5: &[&str] = &["sbox-profile.5"];

/// A scratch tree under /tmp that the test user can read: `src/` holds
/// install.sh, man/, profiles/ and the binary; `prefix/` belongs to the
/// user. Removed when dropped.
struct Stage {
    root: PathBuf,
    src: PathBuf,
    prefix: PathBuf,
}

impl Stage {
    fn new(tag: &str, u: &TestUser) -> Self {
        let root = PathBuf::from(format!(
            "/tmp/sbox-install-test-{}-{tag}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&root);
        let repo = repo_dir();
        let src = root.join("src");
        for d in [&root, &src, &src.join("man"), &src.join("profiles")] {
            std::fs::create_dir_all(d).expect("mkdir");
            set_mode(d, 0o755);
        }
        copy(&repo.join("install.sh"), &src.join("install.sh"), 0o755);
        copy(&built_sbox(), &src.join("sbox"), 0o755);
        for sub in ["man", "profiles"] {
            for e in std::fs::read_dir(repo.join(sub))
                .expect("read dir")
                .flatten()
            {
                if e.file_type().expect("file type").is_file() {
                    copy(&e.path(), &src.join(sub).join(e.file_name()), 0o644);
                }
            }
        }
        let prefix = root.join("prefix");
        std::fs::create_dir(&prefix).expect("mkdir prefix");
        set_mode(&prefix, 0o755);
        if u.switch {
            nix::unistd::chown(
                &prefix,
                Some(nix::unistd::Uid::from_raw(u.uid)),
                Some(nix::unistd::Gid::from_raw(u.gid)),
            )
            .expect("chown prefix");
        }
        Stage { root, src, prefix }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn copy(from: &Path, to: &Path, mode: u32) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    set_mode(to, mode);
}

/// `program args…` as the test user, with a clean environment, in `dir`.
fn as_user(u: &TestUser, dir: &Path, path_var: &str, program: &Path, args: &[&str]) -> Command {
    let mut c = if u.switch {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", u.uid))
            .arg(format!("--regid={}", u.gid))
            .arg("--init-groups")
            .arg("--")
            .arg(program);
        c
    } else {
        Command::new(program)
    };
    c.args(args)
        .env_clear()
        .envs(u.env())
        .env("USER", &u.name)
        .env("PATH", path_var)
        .current_dir(dir)
        .stdin(Stdio::null());
    c
}

fn run(mut c: Command) -> Output {
    c.output().unwrap_or_else(|e| panic!("running {c:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn ok(o: Output, what: &str) -> String {
    ok_ref(&o, what)
}

#[track_caller]
fn ok_ref(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

fn have(tool: &str) -> bool {
    SYSTEM_PATH
        .split(':')
        .any(|d| Path::new(d).join(tool).is_file())
}

/// Every file (not directory) below `dir`.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(files_below(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[track_caller]
fn assert_installed(path: &Path, mode: u32, same_as: &Path, u: &TestUser) {
    let md = std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{} was not installed: {e}", path.display()));
    assert!(md.is_file(), "{} is not a regular file", path.display());
    assert_eq!(
        md.mode() & 0o7777,
        mode,
        "{} has mode {:o}, want {mode:o}",
        path.display(),
        md.mode() & 0o7777
    );
    assert_eq!(
        md.uid(),
        u.uid,
        "{} is not owned by {}",
        path.display(),
        u.name
    );
    assert_eq!(
        std::fs::read(path).expect("read installed"),
        std::fs::read(same_as).expect("read source"),
        "{} differs from {}",
        path.display(),
        same_as.display()
    );
}

/// Render a man page the way a user would and demand silence on stderr.
fn check_man_page(u: &TestUser, stage: &Stage, page: &Path) {
    let shown = page.display();
    if have("man") {
        let mut c = as_user(u, &stage.src, SYSTEM_PATH, Path::new("man"), &[]);
        c.arg("--warnings")
            .arg("-l")
            .arg(page)
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat");
        let o = run(c);
        let out = ok_ref(&o, &format!("man -l {shown}"));
        assert!(
            o.stderr.is_empty(),
            "man -l {shown} warned:\n{}",
            text(&o.stderr)
        );
        assert!(
            out.contains("NAME"),
            "man -l {shown} rendered nothing:\n{out}"
        );
    } else if have("groff") {
        let o = run(as_user(
            u,
            &stage.src,
            SYSTEM_PATH,
            Path::new("groff"),
            &["-man", "-Tutf8", "-ww", "-z", &page.to_string_lossy()],
        ));
        ok_ref(&o, &format!("groff {shown}"));
        assert!(
            o.stderr.is_empty(),
            "groff warned on {shown}:\n{}",
            text(&o.stderr)
        );
    } else {
        let t = std::fs::read_to_string(page).expect("read man page");
        let first = t
            .lines()
            .find(|l| !l.starts_with(".\\\"") && !l.trim().is_empty())
            .unwrap_or("");
        assert!(
            first.starts_with(".TH "),
            "{shown} does not start with .TH: {first:?}"
        );
    }
}

#[test]
fn installs_under_a_prefix_finds_its_profiles_and_uninstalls() {
    let u = user();
    let stage = Stage::new("prefix", u);
    let script = stage.src.join("install.sh");
    let binary = stage.src.join("sbox");
    let prefix = stage.prefix.to_string_lossy().into_owned();
    let install = |path_var: &str| {
        run(as_user(
            u,
            &stage.src,
            path_var,
            &script,
            &["--binary", &binary.to_string_lossy(), "--prefix", &prefix],
        ))
    };

    let out = ok(install(SYSTEM_PATH), "install.sh --binary --prefix");
    assert!(out.contains("Installed sbox"), "{out}");
    // The bin dir is not on PATH: the host check says so, with the fix.
    let bin_dir = stage.prefix.join("bin");
    assert!(
        out.contains(&format!("{} is not on PATH", bin_dir.display())),
        "no PATH warning:\n{out}"
    );

    let repo = repo_dir();
    let man = stage.prefix.join("share/man");
    let profiles = stage.prefix.join("share/sbox/profiles");
    assert_installed(&bin_dir.join("sbox"), 0o755, &binary, u);
    for p in MAN1 {
        assert_installed(
            &man.join("man1").join(p),
            0o644,
            &repo.join("man").join(p),
            u,
        );
    }
    for p in MAN5 {
        assert_installed(
            &man.join("man5").join(p),
            0o644,
            &repo.join("man").join(p),
            u,
        );
    }
    let mut names = Vec::new();
    for e in std::fs::read_dir(repo.join("profiles"))
        .expect("profiles")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".toml") {
            assert_installed(&profiles.join(&name), 0o644, &e.path(), u);
            names.push(stem.to_string());
        }
    }
    assert!(
        names.iter().any(|n| n == "dev"),
        "no dev profile in the repo"
    );

    // The installed binary lists the installed profiles, naming their origin.
    let mut list = as_user(
        u,
        &stage.src,
        SYSTEM_PATH,
        &bin_dir.join("sbox"),
        &["profile", "list"],
    );
    list.env("XDG_CONFIG_HOME", stage.root.join("no-config"));
    let listed = ok(run(list), "sbox profile list");
    for n in &names {
        let origin = format!("({})", profiles.join(format!("{n}.toml")).display());
        assert!(
            listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(n.as_str()) && l.ends_with(&origin)),
            "profile {n} is not listed from {origin}:\n{listed}"
        );
    }

    for p in MAN1 {
        check_man_page(u, &stage, &man.join("man1").join(p));
    }
    for p in MAN5 {
        check_man_page(u, &stage, &man.join("man5").join(p));
    }

    // Again, with the bin dir on PATH: idempotent, and no PATH warning.
    let with_bin = format!("{}:{SYSTEM_PATH}", bin_dir.display());
    let again = ok(install(&with_bin), "second install.sh");
    assert!(!again.contains("is not on PATH"), "{again}");
    assert_installed(&bin_dir.join("sbox"), 0o755, &binary, u);

    let out = ok(
        run(as_user(
            u,
            &stage.src,
            SYSTEM_PATH,
            &script,
            &["--uninstall", "--prefix", &prefix],
        )),
        "install.sh --uninstall",
    );
    assert!(out.contains("uninstalled"), "{out}");
    let left = files_below(&stage.prefix);
    assert!(left.is_empty(), "files left after --uninstall: {left:?}");
    assert!(!profiles.exists(), "{} is still there", profiles.display());

    // Uninstalling what is not there is not an error.
    ok(
        run(as_user(
            u,
            &stage.src,
            SYSTEM_PATH,
            &script,
            &["--uninstall", "--prefix", &prefix],
        )),
        "second install.sh --uninstall",
    );
}

#[track_caller]
fn assert_one_line_error(o: &Output, needle: &str) {
    let err = text(&o.stderr);
    assert!(
        !o.status.success(),
        "exit status {:?}; stderr:\n{err}",
        o.status
    );
    assert_eq!(
        err.lines().count(),
        1,
        "want one line on stderr, got:\n{err}"
    );
    assert!(err.starts_with("install.sh: error: "), "{err}");
    assert!(err.contains(needle), "{err}");
    assert!(o.stdout.is_empty(), "stdout: {}", text(&o.stdout));
}

#[test]
fn bad_option_and_missing_binary_are_one_line_errors() {
    let u = user();
    let stage = Stage::new("bad", u);
    let script = stage.src.join("install.sh");
    let prefix = stage.prefix.to_string_lossy().into_owned();

    let o = run(as_user(u, &stage.src, SYSTEM_PATH, &script, &["--bogus"]));
    assert_one_line_error(&o, "--bogus");
    assert_eq!(o.status.code(), Some(2), "usage errors exit 2");

    let o = run(as_user(
        u,
        &stage.src,
        SYSTEM_PATH,
        &script,
        &["--binary", "/nonexistent/sbox", "--prefix", &prefix],
    ));
    assert_one_line_error(&o, "/nonexistent/sbox");
    assert!(
        files_below(&stage.prefix).is_empty(),
        "a failed install left files"
    );

    let help = ok(
        run(as_user(u, &stage.src, SYSTEM_PATH, &script, &["--help"])),
        "install.sh --help",
    );
    for opt in ["--prefix", "--binary", "--system-deps", "--uninstall"] {
        assert!(help.contains(opt), "--help does not mention {opt}:\n{help}");
    }
}

/// A throwaway HOME for the test user under the stage, with `files`
/// (relative path, text) in it.
fn stage_home(stage: &Stage, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let home = stage.root.join(name);
    std::fs::create_dir(&home).expect("mkdir home");
    set_mode(&home, 0o755);
    common::chown(&home);
    for (rel, text) in files {
        let p = home.join(rel);
        std::fs::write(&p, text).expect("write home file");
        common::chown(&p);
    }
    home
}

/// `install.sh ARGS` as the test user with HOME set to `home`, no SHELL
/// (so /bin/sh is the login shell) and the system PATH.
fn install_in_home(
    stage: &Stage,
    home: &Path,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> String {
    let mut c = as_user(
        user(),
        &stage.src,
        SYSTEM_PATH,
        &stage.src.join("install.sh"),
        args,
    );
    // This HOME's own XDG directories unless the test names them.
    common::use_home(&mut c, home);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    ok(run(c), &format!("install.sh {args:?}"))
}

/// N of the closing "N host prerequisite(s) missing" line, 0 without one.
fn missing_count(out: &str) -> usize {
    out.lines()
        .find_map(|l| {
            l.strip_suffix(
                " host prerequisite(s) missing: see the fixes above (sbox doctor checks again).",
            )
        })
        .map(|n| {
            n.parse()
                .unwrap_or_else(|_| panic!("bad count line in:\n{out}"))
        })
        .unwrap_or(0)
}

/// Debian's default ~/.profile: ~/.local/bin on PATH once it exists.
const DEBIAN_PROFILE: &str = "# set PATH so it includes user's private bin if it exists
if [ -d \"$HOME/.local/bin\" ] ; then
    PATH=\"$HOME/.local/bin:$PATH\"
fi
";

#[test]
fn a_login_profile_that_adds_the_bin_dir_is_no_missing_prerequisite() {
    let u = user();
    let stage = Stage::new("loginpath", u);
    let binary = stage.src.join("sbox").to_string_lossy().into_owned();

    // The profile adds ~/.local/bin: a new login shell has it.
    let home = stage_home(&stage, "home-debian", &[(".profile", DEBIAN_PROFILE)]);
    let bin_dir = home.join(".local/bin");
    let with = install_in_home(&stage, &home, &["--binary", &binary], &[]);
    assert!(with.contains("Installed sbox"), "{with}");
    assert!(
        !with.contains("is not on PATH"),
        "warned although the profile adds it:\n{with}"
    );
    assert!(
        with.contains("open a new login shell"),
        "no word on a new login shell:\n{with}"
    );
    assert!(
        with.contains(&format!("export PATH=\"{}:$PATH\"", bin_dir.display())),
        "no export for the current shell:\n{with}"
    );

    // The same without such a profile: the warning and its fix, counted.
    let bare = stage_home(&stage, "home-bare", &[]);
    let without = install_in_home(&stage, &bare, &["--binary", &binary], &[]);
    let bare_bin = bare.join(".local/bin");
    assert!(
        without.contains(&format!("warning: {} is not on PATH", bare_bin.display())),
        "no PATH warning:\n{without}"
    );
    assert!(
        without.contains(&format!(
            "echo 'export PATH=\"{}:$PATH\"' >> ~/.profile",
            bare_bin.display()
        )),
        "no fix:\n{without}"
    );
    assert!(!without.contains("open a new login shell"), "{without}");
    assert_eq!(
        missing_count(&without),
        missing_count(&with) + 1,
        "the PATH is counted as missing only without the profile:\n{with}\n---\n{without}"
    );

    // When the login shell cannot tell (here it exits before printing its
    // PATH), the login files do: the bin dir however spelled, not in a
    // comment.
    for (i, (spelled, adds)) in [
        ("export PATH=~/.local/bin:$PATH", true),
        ("PATH=\"${HOME}/.local/bin:$PATH\"", true),
        (&*format!("PATH={}:$PATH", "$HOME/.local/bin"), true),
        ("# PATH=$HOME/.local/bin:$PATH", false),
        ("PATH=$HOME/bin:$PATH", false),
    ]
    .into_iter()
    .enumerate()
    {
        let h = stage_home(
            &stage,
            &format!("home-login-{i}"),
            &[(".profile", &format!("{spelled}\nexit 3\n"))],
        );
        let out = install_in_home(&stage, &h, &["--binary", &binary], &[]);
        assert_eq!(!out.contains("is not on PATH"), adds, "{spelled:?}:\n{out}");
        assert_eq!(
            out.contains("open a new login shell"),
            adds,
            "{spelled:?}:\n{out}"
        );
    }
}

/// What `sbox completions SHELL` prints.
fn completion_script(shell: &str) -> Vec<u8> {
    let o = Command::new(env!("CARGO_BIN_EXE_sbox"))
        .args(["completions", shell])
        .output()
        .expect("sbox completions");
    assert!(o.status.success(), "sbox completions {shell}: {o:?}");
    o.stdout
}

#[track_caller]
fn assert_completion(path: &Path, shell: &str) {
    let got = std::fs::read(path)
        .unwrap_or_else(|e| panic!("no {shell} completion at {}: {e}", path.display()));
    assert!(
        got == completion_script(shell),
        "{} is not the {shell} script",
        path.display()
    );
    let mode = std::fs::metadata(path).expect("stat").mode() & 0o777;
    assert_eq!(mode, 0o644, "{}", path.display());
}

#[test]
fn installs_and_uninstalls_shell_completions() {
    let u = user();
    assert!(
        have("fish") && have("zsh"),
        "zsh and fish are needed (.ci/run installs them)"
    );
    let stage = Stage::new("completions", u);
    let binary = stage.src.join("sbox").to_string_lossy().into_owned();

    // A user install: where bash-completion and fish look for a user's
    // own, zsh's under the prefix with a word on fpath.
    let home = stage_home(&stage, "home", &[(".profile", DEBIAN_PROFILE)]);
    let out = install_in_home(&stage, &home, &["--binary", &binary], &[]);
    let bash = home.join(".local/share/bash-completion/completions/sbox");
    let zsh = home.join(".local/share/zsh/site-functions/_sbox");
    let fish = home.join(".config/fish/completions/sbox.fish");
    assert_completion(&bash, "bash");
    assert_completion(&zsh, "zsh");
    assert_completion(&fish, "fish");
    for p in [&bash, &zsh, &fish] {
        assert!(
            out.contains(&p.display().to_string()),
            "{} not reported:\n{out}",
            p.display()
        );
    }
    let zsh_dir = zsh.parent().expect("dir").display().to_string();
    assert!(
        out.contains(&format!("fpath=({zsh_dir} $fpath)")),
        "no fpath advice:\n{out}"
    );
    // Not again once ~/.zshrc has it.
    let rc = home.join(".zshrc");
    std::fs::write(
        &rc,
        "fpath=(~/.local/share/zsh/site-functions $fpath)\nautoload -U compinit; compinit\n",
    )
    .expect("zshrc");
    common::chown(&rc);
    let again = install_in_home(&stage, &home, &["--binary", &binary], &[]);
    assert!(!again.contains("fpath=("), "{again}");

    let out = install_in_home(&stage, &home, &["--uninstall"], &[]);
    for p in [&bash, &zsh, &fish] {
        assert!(!p.exists(), "{} left after --uninstall", p.display());
        assert!(out.contains(&format!("removed {}", p.display())), "{out}");
    }
    let left: Vec<PathBuf> = files_below(&home)
        .into_iter()
        .filter(|p| p != &home.join(".profile") && p != &rc)
        .collect();
    assert!(left.is_empty(), "left after --uninstall: {left:?}");

    // XDG_DATA_HOME and XDG_CONFIG_HOME move the user's ones.
    let data = home.join("data");
    let config = home.join("cfg");
    let xdg = [
        ("XDG_DATA_HOME", &*data.to_string_lossy()),
        ("XDG_CONFIG_HOME", &*config.to_string_lossy()),
    ];
    install_in_home(&stage, &home, &["--binary", &binary], &xdg);
    assert_completion(&data.join("bash-completion/completions/sbox"), "bash");
    assert_completion(&config.join("fish/completions/sbox.fish"), "fish");
    // The manifest says where they went: uninstall finds them without XDG.
    install_in_home(&stage, &home, &["--uninstall"], &[]);
    assert!(files_below(&data).is_empty() && files_below(&config).is_empty());

    // Any other prefix keeps them all under it.
    let prefix = stage.prefix.to_string_lossy().into_owned();
    let out = install_in_home(
        &stage,
        &home,
        &["--binary", &binary, "--prefix", &prefix],
        &[],
    );
    let share = stage.prefix.join("share");
    assert_completion(&share.join("bash-completion/completions/sbox"), "bash");
    assert_completion(&share.join("zsh/site-functions/_sbox"), "zsh");
    assert_completion(&share.join("fish/vendor_completions.d/sbox.fish"), "fish");
    assert!(out.contains("fpath=("), "{out}");
    install_in_home(&stage, &home, &["--uninstall", "--prefix", &prefix], &[]);
    let left = files_below(&stage.prefix);
    assert!(left.is_empty(), "left after --uninstall: {left:?}");
    for d in ["bash-completion", "zsh", "fish"] {
        assert!(!share.join(d).exists(), "share/{d} left after --uninstall");
    }
}
