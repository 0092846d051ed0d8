//! `sbox completions SHELL`: the completion script for bash, zsh or fish.
//!
//! clap_complete writes the static part (subcommands, options, fixed
//! values) from the clap definitions. The names only the host knows —
//! profiles and sandboxes — come from a small layer per shell
//! (`completions/layer.*`) that asks the sbox being completed while
//! completing: `sbox profile list --names`, `sbox ps [-a] --names`. The
//! tables that layer needs (which options take a value, where names go)
//! are derived from the same clap definitions here.

use crate::cli::Cli;
use crate::error::{Error, Result};
use clap::CommandFactory;
use std::io::Write;

/// The shells sbox writes a completion script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// What kind of name a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Names {
    /// `sbox profile list --names`
    Profiles,
    /// `sbox ps --names`
    Running,
    /// `sbox ps -a --names`: running and stopped
    Stored,
}

impl Names {
    fn word(self) -> &'static str {
        match self {
            Names::Profiles => "profiles",
            Names::Running => "running",
            Names::Stored => "stored",
        }
    }
}

/// Where the completions offer names: the subcommand path, the id of the
/// argument (an option or the first operand) and what it names.
const DYNAMIC: &[(&str, &str, Names)] = &[
    ("run", "profile", Names::Profiles),
    ("shell", "profile", Names::Profiles),
    ("export", "profile", Names::Profiles),
    ("profile show", "name", Names::Profiles),
    ("exec", "name", Names::Running),
    ("stop", "name", Names::Running),
    ("start", "name", Names::Stored),
    ("rm", "name", Names::Stored),
    ("logs", "name", Names::Stored),
    ("diff", "name", Names::Stored),
    ("reset", "name", Names::Stored),
    ("commit", "name", Names::Stored),
];

const BIN: &str = "sbox";
const LAYER_BASH: &str = include_str!("completions/layer.bash");
const LAYER_ZSH: &str = include_str!("completions/layer.zsh");
const LAYER_FISH: &str = include_str!("completions/layer.fish");
/// The line of clap_complete's zsh script that starts the completion; the
/// layer goes before it.
const ZSH_TAIL: &str = "if [ \"$funcstack[1]\" = \"_sbox\" ]; then";

/// `sbox completions SHELL`
pub fn run(shell: Shell) -> Result<u8> {
    let text = script(shell)?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::Host(format!("cannot write the completion script: {e}")))?;
    Ok(0)
}

/// The whole completion script for `shell`.
fn script(shell: Shell) -> Result<String> {
    match shell {
        Shell::Bash => {
            let mut text = generate(clap_complete::Shell::Bash, Cli::command());
            text.push('\n');
            text.push_str(&LAYER_BASH.replace("@TABLES@\n", &bash_tables()));
            Ok(text)
        }
        Shell::Zsh => {
            // The dynamic arguments get a marker as their only possible
            // value; the marker's action is then swapped for the layer's
            // function.
            let mut cmd = Cli::command();
            for (path, id, kind) in DYNAMIC {
                cmd = mark(cmd, &path.split(' ').collect::<Vec<_>>(), id, *kind);
            }
            let mut text = generate(clap_complete::Shell::Zsh, cmd);
            for kind in [Names::Profiles, Names::Running, Names::Stored] {
                let action = match kind {
                    Names::Profiles => "_sbox_profiles".to_string(),
                    _ => format!("_sbox_names {}", kind.word()),
                };
                text = text.replace(&format!("({})", marker(kind)), &action);
            }
            if text.contains("__sbox_names_") {
                return Err(Error::Host(
                    "the zsh completion script kept a marker: clap_complete changed".into(),
                ));
            }
            let at = text.find(ZSH_TAIL).ok_or_else(|| {
                Error::Host(
                    "the zsh completion script has no final call: clap_complete changed".into(),
                )
            })?;
            text.insert_str(at, LAYER_ZSH);
            // _sbox keeps the command word (`words` changes below it).
            let head = "_sbox() {\n";
            let at = text.find(head).ok_or_else(|| {
                Error::Host("the zsh completion script has no _sbox: clap_complete changed".into())
            })?;
            text.insert_str(at + head.len(), "    local _sbox_cmd=${words[1]}\n");
            Ok(text)
        }
        Shell::Fish => {
            let mut text = generate(clap_complete::Shell::Fish, Cli::command());
            text.push('\n');
            text.push_str(&LAYER_FISH.replace("@TABLES@\n", &fish_tables()));
            Ok(text)
        }
    }
}

fn generate(shell: clap_complete::Shell, mut cmd: clap::Command) -> String {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, BIN, &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

fn marker(kind: Names) -> &'static str {
    match kind {
        Names::Profiles => "__sbox_names_profiles__",
        Names::Running => "__sbox_names_running__",
        Names::Stored => "__sbox_names_stored__",
    }
}

/// Give the argument `id` of the subcommand at `path` the marker of `kind`
/// as its only possible value (in place: the order of operands matters).
fn mark(cmd: clap::Command, path: &[&str], id: &str, kind: Names) -> clap::Command {
    match path.split_first() {
        Some((first, rest)) => cmd.mut_subcommands(|sub| {
            if sub.get_name() == *first {
                mark(sub, rest, id, kind)
            } else {
                sub
            }
        }),
        None => cmd.mut_args(|a| {
            if a.get_id() == id {
                a.value_parser(clap::builder::PossibleValuesParser::new([marker(kind)]))
            } else {
                a
            }
        }),
    }
}

/// What the bash and fish layers need to know, from the clap definitions.
struct Tables {
    /// "PATH OPTION" for every option that takes a separate value.
    value_opts: Vec<String>,
    /// Subcommand paths that have subcommands of their own.
    parents: Vec<String>,
    /// (PATH, kind) where the first operand is a name.
    operands: Vec<(String, Names)>,
    /// (PATH, long option, kind) for options whose value is a name.
    options: Vec<(String, String, Names)>,
}

fn tables() -> Tables {
    let mut cmd = Cli::command();
    cmd.build();
    let mut t = Tables {
        value_opts: Vec::new(),
        parents: Vec::new(),
        operands: Vec::new(),
        options: Vec::new(),
    };
    fn walk(cmd: &clap::Command, path: &str, t: &mut Tables) {
        for a in cmd.get_opts() {
            for l in a.get_long_and_visible_aliases().unwrap_or_default() {
                t.value_opts.push(format!("{path} --{l}"));
            }
            for s in a.get_short_and_visible_aliases().unwrap_or_default() {
                t.value_opts.push(format!("{path} -{s}"));
            }
        }
        for sub in cmd.get_subcommands() {
            let p = if path.is_empty() {
                sub.get_name().to_string()
            } else {
                format!("{path} {}", sub.get_name())
            };
            if sub.has_subcommands() {
                t.parents.push(p.clone());
            }
            walk(sub, &p, t);
        }
    }
    walk(&cmd, "", &mut t);
    for (path, id, kind) in DYNAMIC {
        let Some(arg) = find_arg(&cmd, path, id) else {
            continue;
        };
        if arg.is_positional() {
            t.operands.push((path.to_string(), *kind));
        } else if let Some(l) = arg.get_long() {
            t.options.push((path.to_string(), format!("--{l}"), *kind));
        }
    }
    t
}

fn find_arg<'a>(cmd: &'a clap::Command, path: &str, id: &str) -> Option<&'a clap::Arg> {
    let mut c = cmd;
    for p in path.split(' ') {
        c = c.find_subcommand(p)?;
    }
    c.get_arguments().find(|a| a.get_id() == id)
}

fn bash_tables() -> String {
    let t = tables();
    let mut s = String::from("_sbox_value_opt() { # PATH OPTION: does OPTION take the next word?\n    case \"$1 $2\" in\n");
    for o in &t.value_opts {
        s.push_str(&format!("        '{o}') return 0 ;;\n"));
    }
    s.push_str("    esac\n    return 1\n}\n\n");
    s.push_str("_sbox_parent() { # PATH: does PATH have subcommands?\n    case \"$1\" in\n");
    s.push_str("        '') return 0 ;;\n");
    for p in &t.parents {
        s.push_str(&format!("        '{p}') return 0 ;;\n"));
    }
    s.push_str("    esac\n    return 1\n}\n\n");
    s.push_str("_sbox_operand_kind() { # PATH: what the first operand names\n    case \"$1\" in\n");
    for (p, k) in &t.operands {
        s.push_str(&format!("        '{p}') printf %s {} ;;\n", k.word()));
    }
    s.push_str("    esac\n}\n\n");
    s.push_str("_sbox_option_kind() { # PATH OPTION: what the value of OPTION names\n    case \"$1 $2\" in\n");
    for (p, o, k) in &t.options {
        s.push_str(&format!("        '{p} {o}') printf %s {} ;;\n", k.word()));
    }
    s.push_str("    esac\n}\n");
    s
}

fn fish_tables() -> String {
    let t = tables();
    let mut s = String::from(
        "function __sbox_value_opt --description 'PATH OPTION: does OPTION take the next word?'\n    switch \"$argv[1] $argv[2]\"\n        case",
    );
    for o in &t.value_opts {
        s.push_str(&format!(" '{o}'"));
    }
    s.push_str("\n            return 0\n    end\n    return 1\nend\n\n");
    s.push_str("function __sbox_parent --description 'PATH: does PATH have subcommands?'\n    switch \"$argv[1]\"\n        case ''");
    for p in &t.parents {
        s.push_str(&format!(" '{p}'"));
    }
    s.push_str("\n            return 0\n    end\n    return 1\nend\n\n");
    s.push_str("function __sbox_operand_kind --description 'PATH: what the first operand names'\n    switch \"$argv[1]\"\n");
    for k in [Names::Profiles, Names::Running, Names::Stored] {
        let paths: Vec<String> = t
            .operands
            .iter()
            .filter(|(_, kk)| *kk == k)
            .map(|(p, _)| format!(" '{p}'"))
            .collect();
        if !paths.is_empty() {
            s.push_str(&format!(
                "        case{}\n            echo {}\n",
                paths.concat(),
                k.word()
            ));
        }
    }
    s.push_str("    end\nend\n\n");
    for (p, o, k) in &t.options {
        let long = o.trim_start_matches("--");
        let cond = match p.split_once(' ') {
            None => format!("__fish_sbox_using_subcommand {p}"),
            Some((a, b)) => {
                format!("__fish_sbox_using_subcommand {a}; and __fish_seen_subcommand_from {b}")
            }
        };
        s.push_str(&format!(
            "complete -c sbox -n \"{cond}; and __sbox_not_path\" -l {long} -r -f -a \"(__sbox_names {})\" -d profile\n",
            k.word()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dynamic_argument_exists() {
        let mut cmd = Cli::command();
        cmd.build();
        for (path, id, _) in DYNAMIC {
            let arg = find_arg(&cmd, path, id)
                .unwrap_or_else(|| panic!("no argument {id} in sbox {path}"));
            if arg.is_positional() {
                assert_eq!(
                    arg.get_index(),
                    Some(1),
                    "{path} {id} is not the first operand"
                );
            }
        }
    }

    /// A new subcommand that takes a sandbox or profile name gets completed
    /// too: every operand called `name` is in the table.
    #[test]
    fn every_name_operand_is_completed() {
        let mut cmd = Cli::command();
        cmd.build();
        fn walk(cmd: &clap::Command, path: &str) {
            for sub in cmd.get_subcommands() {
                let p = if path.is_empty() {
                    sub.get_name().to_string()
                } else {
                    format!("{path} {}", sub.get_name())
                };
                if sub.get_positionals().any(|a| a.get_id() == "name") {
                    assert!(
                        DYNAMIC.iter().any(|(dp, id, _)| *dp == p && *id == "name"),
                        "sbox {p} NAME is not completed"
                    );
                }
                walk(sub, &p);
            }
        }
        walk(&cmd, "");
    }

    #[test]
    fn scripts_are_whole() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let s = script(shell).expect("script");
            assert!(!s.contains("@TABLES@"), "{shell:?}: the tables are missing");
            assert!(!s.contains("__sbox_names_"), "{shell:?}: a marker is left");
        }
        let zsh = script(Shell::Zsh).expect("zsh");
        assert!(zsh.starts_with("#compdef sbox"), "{}", &zsh[..40]);
        for action in [
            "_sbox_profiles",
            "_sbox_names running",
            "_sbox_names stored",
        ] {
            assert!(zsh.contains(action), "zsh: no {action}");
        }
        assert!(zsh.find("_sbox_names() {") < zsh.find(ZSH_TAIL));
        let bash = script(Shell::Bash).expect("bash");
        assert!(bash.contains("'exec --workdir') return 0 ;;"), "{bash}");
        assert!(bash.contains("'run --profile') printf %s profiles ;;"));
        assert!(bash.contains("'profile show') printf %s profiles ;;"));
        let fish = script(Shell::Fish).expect("fish");
        assert!(
            fish.contains("-l profile -r -f -a \"(__sbox_names profiles)\""),
            "{fish}"
        );
    }
}
