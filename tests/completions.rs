//! Shell completions: `sbox completions bash|zsh|fish` prints a script that
//! loads in the real shell and completes subcommands, options, profile
//! names and sandbox names. The names come from the sbox being completed
//! (`sbox profile list --names`, `sbox ps [-a] --names`), run as the test
//! user with one running and one stopped sandbox and a profile of its own.
//!
//! bash: the script is sourced in `bash --norc` and its completion function
//! driven with COMP_LINE/COMP_POINT/COMP_WORDS/COMP_CWORD. zsh: a real
//! interactive zsh on a pseudo-terminal (zpty) loads it through fpath and
//! compinit, gets TAB, and a wrapper around compadd reports the matches.
//! fish: `complete -C`.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs the registered completion function of `sbox` for the line $2 (the
/// cursor at its end) after sourcing $1; prints COMPREPLY, one a line.
const BASH_DRIVER: &str = r#"
source "$1" || exit 3
spec=$(complete -p sbox) || exit 4
fn=${spec#*-F }
fn=${fn%% *}
COMP_LINE=$2
COMP_POINT=${#COMP_LINE}
read -ra COMP_WORDS <<<"$COMP_LINE"
[[ $COMP_LINE == *' ' ]] && COMP_WORDS+=('')
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
COMP_TYPE=9
COMP_KEY=9
COMPREPLY=()
"$fn" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
printf '%s\n' "${COMPREPLY[@]}"
"#;

/// Starts `zsh -f -i` on a pseudo-terminal with $1 in fpath and compinit,
/// types the line $2 and TAB, and prints what reached compadd, one a line.
const ZSH_DRIVER: &str = r#"
zmodload zsh/zpty || exit 3
zpty z zsh -f -i || exit 3
zpty -w z "PS1='' RPS1=''; fpath=(${(q)1} \$fpath); autoload -U compinit; compinit -u -D"
zpty -w z 'compadd() {
  if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return; fi
  local -a __hits; builtin compadd -O __hits "$@"
  (( $#__hits )) && print -rl -- ${__hits/#/@CAND@}
  builtin compadd "$@"
}'
zpty -w z '_zdriver_done() { print -r -- @DONE@; }; comppostfuncs=(_zdriver_done)'
zpty -w z 'bindkey "^I" complete-word; print -r -- @READY@'
integer ready=0 done=0
local chunk rest=
SECONDS=0
while (( !done && SECONDS < 60 )); do
  if ! zpty -r -t z chunk; then
    sleep 0.02
    continue
  fi
  rest+=${chunk//$'\r'/}
  while [[ $rest == *$'\n'* ]]; do
    local line=${rest%%$'\n'*}
    rest=${rest#*$'\n'}
    if (( !ready )); then
      if [[ $line == @READY@ ]]; then
        ready=1
        zpty -w -n z "$2"$'\t'
      fi
    elif [[ $line == *@DONE@* ]]; then
      done=1
      break
    elif [[ $line == *@CAND@* ]]; then
      print -r -- ${line##*@CAND@}
    fi
  done
done
zpty -d z
(( done )) || { print -u2 "zsh did not complete (ready=$ready)"; exit 5 }
"#;

/// A sandbox removed (`sbox rm -f`) when dropped.
struct Named(String);

impl Drop for Named {
    fn drop(&mut self) {
        let _ = output(sbox(Path::new("/tmp"), &["rm", "-f", &self.0]));
    }
}

/// What the shells complete against.
struct Fixture {
    /// The throwaway XDG_CONFIG_HOME (with our profile) and the scripts.
    xdg: Project,
    project: Project,
    profile: String,
    running: Named,
    stopped: Named,
}

impl Fixture {
    fn new(tag: &str) -> Self {
        let pid = std::process::id();
        let xdg = Project::new("compl-xdg");
        let project = Project::new("compl");
        let profile = format!("cmpl-prof-{tag}-{pid}");
        xdg.write(
            &format!("config/sbox/profiles/{profile}.toml"),
            "description = \"completion test\"\ninclude = [\"dev\"]\n",
        );
        // The shells may write their own state there.
        chown(&xdg.dir.join("config"));
        chown(&xdg.dir.join("config/sbox"));
        let running = Named(format!("cmpl-run-{tag}-{pid}"));
        let stopped = Named(format!("cmpl-stopped-{tag}-{pid}"));
        let o = output(sbox(
            &project.dir,
            &["run", "-d", "--name", &running.0, "--", "sleep", "300"],
        ));
        assert_eq!(ok(o), format!("{}\n", running.0));
        ok(output(sbox(
            &project.dir,
            &["run", "--name", &stopped.0, "--", "true"],
        )));
        let f = Fixture {
            xdg,
            project,
            profile,
            running,
            stopped,
        };
        for shell in ["bash", "zsh", "fish"] {
            let script = ok(output(f.cmd(sbox_bin(), &["completions", shell])));
            let name = if shell == "zsh" { "zsh/_sbox" } else { shell };
            f.xdg.write(name, &script);
        }
        f.xdg.write("bash-driver", BASH_DRIVER);
        f.xdg.write("zsh-driver", ZSH_DRIVER);
        f
    }

    /// `program args…` as the test user, with our XDG_CONFIG_HOME and the
    /// directory of the sbox binary first on PATH.
    fn cmd(&self, program: &Path, args: &[&str]) -> Command {
        let mut c = as_user(program, args);
        let bin_dir = sbox_bin().parent().expect("bin dir");
        c.env("XDG_CONFIG_HOME", self.xdg.dir.join("config"))
            .env("PATH", format!("{}:{SYSTEM_PATH}", bin_dir.display()))
            .current_dir(&self.project.dir);
        c
    }

    /// Complete `line` in `shell`; with `on_path` false, no sbox is on PATH.
    fn complete(&self, shell: &str, line: &str, on_path: bool) -> Vec<String> {
        let mut c = match shell {
            "bash" => self.cmd(
                Path::new("/bin/bash"),
                &[
                    "--norc",
                    "--noprofile",
                    &self.script("bash-driver"),
                    &self.script("bash"),
                    line,
                ],
            ),
            "zsh" => self.cmd(
                Path::new("/usr/bin/zsh"),
                &["-f", &self.script("zsh-driver"), &self.script("zsh"), line],
            ),
            _ => {
                let script = self.script("fish");
                let cmd = format!("source {script}; complete -C {}", fish_quote(line));
                self.cmd(Path::new("/usr/bin/fish"), &["-c", &cmd])
            }
        };
        if !on_path {
            c.env("PATH", SYSTEM_PATH);
        }
        candidates(c, line)
            .into_iter()
            // fish: "candidate<TAB>description"
            .map(|c| c.split('\t').next().unwrap_or("").to_string())
            .collect()
    }

    fn script(&self, name: &str) -> String {
        self.xdg.dir.join(name).to_string_lossy().into_owned()
    }
}

fn fish_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[track_caller]
fn candidates(c: Command, line: &str) -> Vec<String> {
    let o = output(c);
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "completing {line:?} failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

#[track_caller]
fn has(got: &[String], want: &str, what: &str) {
    assert!(
        got.iter().any(|g| g == want),
        "{what}: {want:?} is not offered: {got:?}"
    );
}

#[track_caller]
fn lacks(got: &[String], unwanted: &str, what: &str) {
    assert!(
        !got.iter().any(|g| g == unwanted),
        "{what}: {unwanted:?} is offered: {got:?}"
    );
}

/// The checks every shell passes.
fn check_shell(f: &Fixture, shell: &str) {
    let complete = |line: &str| f.complete(shell, line, true);
    let (prof, run, stop) = (&f.profile, &f.running.0, &f.stopped.0);

    let what = format!("{shell}: sbox run --profile ");
    let got = complete("sbox run --profile ");
    has(&got, prof, &what);
    has(&got, "dev", &what);
    lacks(&got, run, &what);

    let what = format!("{shell}: sbox shell --net none --profile cmpl-p");
    let got = complete("sbox shell --net none --profile cmpl-p");
    assert_eq!(got, vec![prof.clone()], "{what}");

    let what = format!("{shell}: sbox profile show ");
    has(&complete("sbox profile show "), prof, &what);

    // exec and stop: the running ones; rm, logs, diff…: stopped ones too.
    for line in ["sbox exec ", "sbox exec -i -w /tmp ", "sbox stop -t 3 "] {
        let what = format!("{shell}: {line}");
        let got = complete(line);
        has(&got, run, &what);
        lacks(&got, stop, &what);
        lacks(&got, prof, &what);
    }
    for line in [
        "sbox rm ",
        "sbox rm -f cmpl-",
        "sbox start ",
        "sbox logs ",
        "sbox diff --json ",
        "sbox reset ",
        "sbox commit --dry-run ",
    ] {
        let what = format!("{shell}: {line}");
        let got = complete(line);
        has(&got, run, &what);
        has(&got, stop, &what);
    }
    // Only the first operand is a name.
    let line = format!("sbox commit {stop} ");
    lacks(&complete(&line), run, &format!("{shell}: {line}"));

    // The names come from the sbox on the command line, found on PATH or
    // given as a path (here none is on PATH).
    let line = format!("{} rm ", sbox_bin().display());
    has(
        &f.complete(shell, &line, false),
        stop,
        &format!("{shell}: {line}"),
    );
    assert!(
        !SYSTEM_PATH
            .split(':')
            .any(|d| Path::new(d).join("sbox").exists()),
        "an sbox on the system PATH hides what this checks"
    );

    // Subcommands and options, from the clap definitions.
    has(&complete("sbox ex"), "exec", &format!("{shell}: sbox ex"));
    has(
        &complete("sbox comp"),
        "completions",
        &format!("{shell}: sbox comp"),
    );
    has(
        &complete("sbox exec --wo"),
        "--workdir",
        &format!("{shell}: sbox exec --wo"),
    );
    has(
        &complete("sbox ps --na"),
        "--names",
        &format!("{shell}: sbox ps --na"),
    );
}

#[test]
fn bash_zsh_and_fish_complete_profile_and_sandbox_names() {
    let f = Fixture::new("sh");
    for shell in ["bash", "zsh", "fish"] {
        check_shell(&f, shell);
    }
    // bash's own word splitting (at '=' too) is left to the script.
    let got = f.complete("bash", "sbox run --profile=cmpl-p", true);
    assert_eq!(got, vec![f.profile.clone()], "bash: --profile=");
    let got = f.complete("fish", "sbox run --profile=cmpl-p", true);
    assert_eq!(
        got,
        vec![format!("--profile={}", f.profile)],
        "fish: --profile="
    );

    // A profile given as a path is completed as a file.
    f.xdg.write("sub/mine.toml", "");
    let line = format!("sbox run --profile {}/s", f.xdg.dir.display());
    let want = format!("{}/sub", f.xdg.dir.display());
    let got = f.complete("fish", &line, true);
    assert!(
        got.iter().any(|g| g.trim_end_matches('/') == want),
        "fish: {line}: {got:?}"
    );
    let got = f.complete("zsh", &line, true);
    assert!(
        got.iter().any(|g| g.ends_with("sub")),
        "zsh: {line}: {got:?}"
    );
}

#[test]
fn names_listings_are_one_name_a_line() {
    let f = Fixture::new("ls");
    let names = |args: &[&str]| -> Vec<String> {
        ok(output(f.cmd(sbox_bin(), args)))
            .lines()
            .map(String::from)
            .collect()
    };
    let running = names(&["ps", "--names"]);
    has(&running, &f.running.0, "ps --names");
    lacks(&running, &f.stopped.0, "ps --names");
    let all = names(&["ps", "-a", "--names"]);
    has(&all, &f.running.0, "ps -a --names");
    has(&all, &f.stopped.0, "ps -a --names");
    assert!(all.iter().all(|n| !n.contains(' ')), "{all:?}");
    let profiles = names(&["profile", "list", "--names"]);
    has(&profiles, &f.profile, "profile list --names");
    has(&profiles, "dev", "profile list --names");
    assert!(profiles.iter().all(|n| !n.contains(' ')), "{profiles:?}");

    let o = output(f.cmd(sbox_bin(), &["ps", "--names", "--json"]));
    assert_eq!(o.status.code(), Some(2), "--names with --json: {o:?}");
}

#[test]
fn completions_prints_a_script_per_shell_and_refuses_others() {
    for (shell, head) in [
        ("bash", "_sbox()"),
        ("zsh", "#compdef sbox"),
        ("fish", "function __fish_sbox"),
    ] {
        let o = output(sbox(Path::new("/tmp"), &["completions", shell]));
        let text = ok(o);
        assert!(text.contains(head), "{shell}: no {head:?}");
        assert!(text.contains("--names"), "{shell}: names are not asked for");
    }
    // The bash and zsh scripts parse.
    let dir = Project::new("compl-parse");
    let bash = dir.write(
        "sbox.bash",
        &ok(output(sbox(&dir.dir, &["completions", "bash"]))),
    );
    let zsh = dir.write(
        "_sbox",
        &ok(output(sbox(&dir.dir, &["completions", "zsh"]))),
    );
    for (sh, file) in [("/bin/bash", &bash), ("/usr/bin/zsh", &zsh)] {
        let o = output(as_user(Path::new(sh), &["-n", &file.to_string_lossy()]));
        assert!(o.status.success(), "{sh} -n: {}", stderr(&o));
    }
    let fish = dir.write(
        "sbox.fish",
        &ok(output(sbox(&dir.dir, &["completions", "fish"]))),
    );
    let o = output(as_user(
        Path::new("/usr/bin/fish"),
        &["--no-execute", &fish.to_string_lossy()],
    ));
    assert!(o.status.success(), "fish --no-execute: {}", stderr(&o));

    let o = output(sbox(Path::new("/tmp"), &["completions", "tcsh"]));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = stderr(&o);
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
    assert!(o.stdout.is_empty());
    let o = output(sbox(Path::new("/tmp"), &["completions"]));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}
