//! The seccomp filter as a JSON seccomp profile: the format docker and
//! podman read (`--security-opt seccomp=FILE`), Kubernetes loads for
//! `seccompProfile: Localhost`, and the OCI runtime spec carries as
//! `linux.seccomp` in config.json.
//!
//! The profile says what [`super::build_filter`] does: everything is allowed
//! but the listed calls, each with the filter's action and errno. Argument
//! checks become `args` (`SCMP_CMP_MASKED_EQ`, which also compares only the
//! low 32 bits where sbox does). A check the format cannot carry as runtimes
//! read it (several comparisons on one argument: runc turns them into
//! alternatives) is exported as a refusal on every argument, with a note.
//! Foreign ABIs (i386, x32, arm32) are not listed under `architectures`, so
//! the runtime's action for an unlisted architecture (kill) applies to them,
//! as sbox kills them.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{build_rule_set, Action, Condition, Outcome, SeccompSpec};
use crate::confine::ConfineError;

/// The architectures sbox has tables for, as libseccomp names them.
pub const ARCHITECTURES: &[&str] = &["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"];

/// A JSON seccomp profile and what it could not say exactly.
#[derive(Debug, Clone)]
pub struct Exported {
    /// `{"defaultAction", "architectures", "syscalls"}`.
    pub profile: Value,
    /// One line per rule exported more strictly than sbox applies it.
    pub notes: Vec<String>,
}

/// The profile with no filter at all (the profile turns seccomp off).
pub fn allow_all() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ARCHITECTURES,
        "syscalls": [],
    })
}

/// The action and errno of a denied call, as the JSON format names them.
fn action_of(outcome: Outcome, default_errno: i32) -> (&'static str, Option<i32>) {
    match outcome {
        Outcome::DefaultErrno => ("SCMP_ACT_ERRNO", Some(default_errno)),
        Outcome::Enosys => ("SCMP_ACT_ERRNO", Some(libc::ENOSYS)),
        Outcome::Profile(Action::Errno(e)) => ("SCMP_ACT_ERRNO", Some(e)),
        Outcome::Profile(Action::Kill) => ("SCMP_ACT_KILL_PROCESS", None),
        Outcome::Profile(Action::Log) => ("SCMP_ACT_LOG", None),
        // Only --log-denials watches calls; an export never carries them.
        Outcome::Watch => ("SCMP_ACT_ALLOW", None),
    }
}

/// `(arg & mask) == value`, a 64-bit comparison.
fn masked_eq(index: u8, mask: u64, value: u64) -> Value {
    json!({ "index": index, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ" })
}

const LOW_WORD: u64 = 0xffff_ffff;

/// The condition as alternatives (each a list of comparisons that must all
/// hold); `None` when the rule applies on every call.
fn alternatives(condition: &Condition) -> Option<Vec<Vec<Value>>> {
    match condition {
        Condition::Always | Condition::LowWordNotIn { .. } => None,
        Condition::FlagSet { arg, flag } => Some(vec![vec![masked_eq(*arg, *flag, *flag)]]),
        Condition::LowWordIn { arg, values } => Some(
            values
                .iter()
                .map(|v| vec![masked_eq(*arg, LOW_WORD, *v & LOW_WORD)])
                .collect(),
        ),
        Condition::AnyFlag { arg, flags } => Some(
            flags
                .iter()
                .map(|f| vec![masked_eq(*arg, *f, *f)])
                .collect(),
        ),
    }
}

/// Exports `spec` (validated like [`super::build_filter`] validates it).
pub fn export(spec: &SeccompSpec) -> Result<Exported, ConfineError> {
    let rules = build_rule_set(spec)?;
    let mut notes = Vec::new();
    // Unconditional rules grouped by action; conditional ones one entry per
    // alternative.
    let mut plain: BTreeMap<(&'static str, Option<i32>), Vec<String>> = BTreeMap::new();
    let mut with_args = Vec::new();
    for (name, rule) in &rules {
        if rule.outcome == Outcome::Watch {
            continue;
        }
        let (action, errno) = action_of(rule.outcome, spec.default_errno);
        if let Condition::LowWordNotIn { arg, values } = &rule.condition {
            let list: Vec<String> = values.iter().map(|v| format!("{v:#x}")).collect();
            notes.push(format!(
                "{name} is refused whatever its arguments: sbox allows it when argument {arg} is one of {} \
                 (\"none of these values\" cannot be said so that runtimes read it alike)",
                list.join(", ")
            ));
        }
        match alternatives(&rule.condition) {
            None => plain.entry((action, errno)).or_default().push(name.clone()),
            Some(alts) => {
                for args in alts {
                    with_args.push(entry(std::slice::from_ref(name), action, errno, Some(args)));
                }
            }
        }
    }
    let mut syscalls: Vec<Value> = plain
        .into_iter()
        .map(|((action, errno), names)| entry(&names, action, errno, None))
        .collect();
    syscalls.extend(with_args);
    Ok(Exported {
        profile: json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ARCHITECTURES,
            "syscalls": syscalls,
        }),
        notes,
    })
}

fn entry(names: &[String], action: &str, errno: Option<i32>, args: Option<Vec<Value>>) -> Value {
    let mut e = json!({ "names": names, "action": action });
    if let Some(errno) = errno {
        e["errnoRet"] = json!(errno);
    }
    if let Some(args) = args {
        e["args"] = Value::Array(args);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::super::tests::run;
    use super::super::{build_filter, lookup, syscall_table, SAFE_PERSONALITIES};
    use super::*;
    use seccompiler::TargetArch;

    const ALLOW: u32 = 0x7fff_0000;
    const KILL_PROCESS: u32 = 0x8000_0000;
    const LOG: u32 = 0x7ffc_0000;

    /// What the JSON profile decides for a call, as a seccomp return value,
    /// read the way libseccomp-based runtimes read it: entries whose name
    /// and comparisons all match; the default action otherwise.
    fn decide(profile: &Value, name: &str, args: [u64; 6]) -> u32 {
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ALLOW");
        let mut found: Option<u32> = None;
        for e in profile["syscalls"].as_array().unwrap() {
            let names = e["names"].as_array().unwrap();
            if !names.iter().any(|n| n == name) {
                continue;
            }
            let matches = e["args"].as_array().is_none_or(|cmps| {
                cmps.iter().all(|c| {
                    assert_eq!(c["op"], "SCMP_CMP_MASKED_EQ");
                    let a = args[c["index"].as_u64().unwrap() as usize];
                    a & c["value"].as_u64().unwrap() == c["valueTwo"].as_u64().unwrap()
                })
            });
            if !matches {
                continue;
            }
            let ret = match e["action"].as_str().unwrap() {
                "SCMP_ACT_ERRNO" => 0x0005_0000 | e["errnoRet"].as_u64().unwrap() as u32,
                "SCMP_ACT_KILL_PROCESS" => KILL_PROCESS,
                "SCMP_ACT_LOG" => LOG,
                other => panic!("unexpected action {other}"),
            };
            // Two matching entries must agree (libseccomp has one action
            // per call and arguments).
            assert!(
                found.is_none_or(|f| f == ret),
                "{name}: conflicting entries"
            );
            found = Some(ret);
        }
        found.unwrap_or(ALLOW)
    }

    /// Argument vectors that reach every comparison sbox makes: each
    /// interesting value in each of the first three arguments.
    fn probes() -> Vec<[u64; 6]> {
        let newuser = libc::CLONE_NEWUSER as u64;
        let mut values = vec![
            0,
            1,
            17,
            newuser,
            newuser | 17,
            newuser | (1 << 32),
            0x3d0f00,
            0x5412,
            (1 << 32) | 0x5412,
            0x541c,
            0x5401,
            0x0040000,
            1 << 32,
            libc::O_WRONLY as u64,
            libc::O_RDWR as u64,
            libc::O_CREAT as u64,
            u64::MAX,
        ];
        values.extend_from_slice(SAFE_PERSONALITIES);
        let mut out = vec![[0; 6]];
        for i in 0..3 {
            for v in &values {
                let mut a = [0; 6];
                a[i] = *v;
                out.push(a);
            }
        }
        out
    }

    const AUDIT: &[(TargetArch, u32)] = &[
        (TargetArch::x86_64, 0xc000_003e),
        (TargetArch::aarch64, 0xc000_00b7),
    ];

    /// For every call of both tables and every probe, the exported profile
    /// decides what the BPF filter decides; the only difference allowed is
    /// a refusal where sbox allows, for a rule the export notes.
    fn check_same_policy(spec: &SeccompSpec) {
        let exported = export(spec).unwrap();
        let probes = probes();
        for (arch, audit) in AUDIT {
            let table = match arch {
                TargetArch::x86_64 => syscall_table::X86_64,
                _ => syscall_table::AARCH64,
            };
            let prog = build_filter(spec, *arch).unwrap();
            for (name, nr) in table {
                for args in &probes {
                    let bpf = run(&prog, *audit, *nr, *args);
                    let json = decide(&exported.profile, name, *args);
                    if bpf == json {
                        continue;
                    }
                    let noted = exported.notes.iter().any(|n| n.starts_with(name));
                    assert!(
                        bpf == ALLOW && json == 0x0005_0000 | spec.default_errno as u32 && noted,
                        "{arch:?} {name} {args:x?}: filter {bpf:#x}, export {json:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn default_profile_decides_like_the_filter() {
        check_same_policy(&SeccompSpec::default());
    }

    #[test]
    fn profile_switches_and_lists_decide_like_the_filter() {
        check_same_policy(&SeccompSpec {
            allow_ptrace: true,
            allow_userns: true,
            allow_io_uring: true,
            extra_allow: vec!["keyctl".into()],
            extra_deny: vec![
                ("bpf".into(), Action::Kill),
                ("getppid".into(), Action::Errno(libc::EACCES)),
                ("uname".into(), Action::Log),
                ("personality".into(), Action::Errno(libc::EPERM)),
            ],
            default_errno: libc::EACCES,
            ..SeccompSpec::default()
        });
    }

    #[test]
    fn lists_the_refused_calls_with_their_errno() {
        let e = export(&SeccompSpec::default()).unwrap();
        let p = &e.profile;
        assert_eq!(decide(p, "keyctl", [0; 6]), 0x0005_0001);
        assert_eq!(decide(p, "bpf", [0; 6]), 0x0005_0001);
        assert_eq!(decide(p, "ptrace", [0; 6]), 0x0005_0001);
        assert_eq!(decide(p, "clone3", [0; 6]), 0x0005_0000 | 38);
        assert_eq!(decide(p, "getpid", [0; 6]), ALLOW);
        assert_eq!(p["architectures"], json!(ARCHITECTURES));
        // Every name is a known call; every errno entry has errnoRet.
        for e in p["syscalls"].as_array().unwrap() {
            for n in e["names"].as_array().unwrap() {
                let n = n.as_str().unwrap();
                assert!(
                    lookup(syscall_table::X86_64, n).is_some()
                        || lookup(syscall_table::AARCH64, n).is_some()
                        || super::super::FOREIGN_ONLY_NAMES.contains(&n),
                    "{n}"
                );
            }
            if e["action"] == "SCMP_ACT_ERRNO" {
                assert!(e["errnoRet"].as_u64().is_some());
            }
        }
        assert_eq!(e.notes.len(), 1, "{:?}", e.notes);
        assert!(e.notes[0].starts_with("personality "));
    }

    #[test]
    fn ptrace_follows_the_profile() {
        let open = SeccompSpec {
            allow_ptrace: true,
            ..SeccompSpec::default()
        };
        let p = export(&open).unwrap().profile;
        assert_eq!(decide(&p, "ptrace", [0; 6]), ALLOW);
        assert_eq!(decide(&p, "keyctl", [0; 6]), 0x0005_0001);
    }

    #[test]
    fn bad_names_are_errors_like_in_the_filter() {
        let bad = SeccompSpec {
            extra_deny: vec![("not_a_syscall".into(), Action::Kill)],
            ..SeccompSpec::default()
        };
        assert!(matches!(
            export(&bad),
            Err(ConfineError::UnknownSyscall(n)) if n == "not_a_syscall"
        ));
    }
}
