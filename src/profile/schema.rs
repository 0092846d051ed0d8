//! The TOML format of a profile file (`man 5 sbox-profile`).
//!
//! Every section and key is optional; unknown keys are errors. A file's
//! `include`s are applied first, in order, then the file itself: scalars
//! override, lists are extended, unless the file names a list in `replace`.
//!
//! # Adding a key
//!
//! One line in the table below (`profile_sections!`, see `keys.rs`):
//!
//! ```text
//! /// What it does (the field's doc).
//! name: Option<T> | Vec<T> | BTreeMap<String, T> => scalar | list | map, TRUST_RULE;
//! ```
//!
//! The struct field, its merging, its place in `replace` and its trust
//! comparison all come from that line; a line without a merge rule or a
//! trust rule, or with a rule that does not fit the type, does not compile.
//! A value that is one of a few words gets a `choice!` enum. Then use the
//! value where it takes effect (`policy.rs`, `confine/plan.rs`) and
//! document it in `man/sbox-profile.5`.

use super::keys::{choice, profile_sections, Key, MergeRule, Merger};
use crate::trust::{
    Added, AddedOutside, AllowList, Custom, Direction, Grants, Lowered, Neutral, Raised, Removed,
    Restricts,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use super::keys::Provenance;

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    /// Who the profile is for, in one line.
    pub description: Option<String>,
    /// Profiles to start from, in order; this file's keys come last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Lists this file replaces instead of extending, as "section.key".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replace: Vec<String>,
    #[serde(default)]
    pub filesystem: FilesystemSection,
    #[serde(default)]
    pub environment: EnvironmentSection,
    #[serde(default)]
    pub network: NetworkSection,
    #[serde(default)]
    pub landlock: LandlockSection,
    #[serde(default)]
    pub seccomp: SeccompSection,
    #[serde(default)]
    pub process: ProcessSection,
}

choice! {
    /// How the host's trees become the sandbox's root (`filesystem.overlay`).
    pub enum Backend for "filesystem.overlay" {
        /// sbox's own overlay served over FUSE: host files owned by root are
        /// root's inside, and root inside can change anything copy-on-write.
        Fuse = "fuse",
        /// Kernel overlayfs in the user namespace, one per top-level directory.
        Kernel = "kernel",
        /// The host's trees bound read-only.
        None = "none",
    }
}

choice! {
    /// How the project directory is bound (`filesystem.project`).
    pub enum ProjectMode for "filesystem.project" {
        Rw = "rw",
        Ro = "ro",
        /// Not bound: seen like the rest of the host.
        None = "none",
    }
}

choice! {
    /// What `sbox shell` keeps between shells (`filesystem.persist`).
    pub enum Persist for "filesystem.persist" {
        /// One sandbox per project, its changes kept.
        Project = "project",
        /// Nothing: every shell starts afresh.
        None = "none",
    }
}

choice! {
    /// When the project directory is the home directory, or contains it
    /// (`filesystem.home_project`).
    pub enum HomeProject for "filesystem.home_project" {
        /// sbox refuses to start.
        Refuse = "refuse",
        /// The project is not bound: seen copy-on-write like the host.
        Overlay = "overlay",
        /// Bound read-write like any project, start-up files included.
        Bind = "bind",
    }
}

choice! {
    /// Network posture (`network.mode`).
    pub enum NetMode for "network.mode" {
        /// Own network namespace with only `lo` up.
        None = "none",
        /// The host's network.
        Host = "host",
        /// Own network namespace with a user-mode stack (pasta): outbound
        /// yes, the host's loopback no (unless allowed), published ports.
        User = "user",
    }
}

choice! {
    /// io_uring inside the sandbox (`seccomp.io_uring`).
    pub enum IoUring for "seccomp.io_uring" {
        /// ENOSYS: callers fall back to ordinary system calls.
        Deny = "deny",
        Allow = "allow",
    }
}

// The key table. Each line: field, type, merge rule, trust rule (see
// `keys.rs` for the syntax and `trust.rs` for the rules). The order of the
// lines is the order `sbox profile show` prints and `sbox trust` lists.
profile_sections! {
    /// `[filesystem]`: what the sandbox sees of the host's files.
    [filesystem] FilesystemSection {
        /// Root backend: "fuse" (default), "kernel" or "none".
        overlay: Option<Backend> => scalar, Neutral;
        /// How the project (current directory) is bound: "rw", "ro" or "none".
        project: Option<ProjectMode> => scalar, Raised;
        /// Extra read-write binds, "SRC[:DEST]".
        bind: Vec<String> => list, AddedOutside("binds {} read-write");
        /// Extra read-only binds, "SRC[:DEST]".
        ro_bind: Vec<String> => list, Custom(Direction::Widening, crate::trust::ro_binds);
        /// Fresh tmpfs mounts.
        tmpfs: Vec<String> => list, Removed("shows the host's {} (a tmpfs in the default profile)");
        /// Paths that do not exist (or are empty) inside: secrets.
        hidden: Vec<String> => list, Removed("un-hides {}");
        /// "project": `sbox shell` keeps the sandbox's changes outside the
        /// project between shells (one sandbox per project); "none" (default).
        persist: Option<Persist> => scalar, Neutral;
        /// When the project directory is the home directory, or contains it
        /// (`/`, `/home`): "refuse" (default), "overlay" (the project is not
        /// bound; it is seen copy-on-write like the rest of the host) or "bind"
        /// (bound read-write like any project, start-up files included).
        home_project: Option<HomeProject> => scalar, Raised;
        /// A directory under the project bound read-write even when the
        /// project is read-only; created on the host if missing.
        output: Option<String> => scalar, AddedOutside("binds {} read-write (output)");
        /// How long the FUSE root's kernel cache may show a host file or
        /// directory as it was ("10s" by default; "0" asks the host every time).
        host_cache: Option<String> => scalar, Neutral;
        /// An image whose root the sandbox runs on instead of the host's
        /// ("debian:12"; see `sbox image`). Not host access, but the code
        /// the project's commands run with: `sbox trust` lists it.
        image: Option<String> => scalar, Custom(Direction::Widening, crate::trust::project_image);
    }

    /// `[environment]`: the variables the command starts with.
    [environment] EnvironmentSection {
        /// Variables passed from the caller's environment, besides the defaults.
        pass: Vec<String> => list, Added("passes ${} from your environment");
        /// Variables set inside.
        set: BTreeMap<String, String> => map, Neutral;
        /// Variables removed (also from the defaults).
        unset: Vec<String> => list, Removed("keeps ${} (unset by the default profile)");
    }

    /// `[network]`: what the sandbox reaches and offers.
    [network] NetworkSection {
        /// "none", "host" or "user".
        mode: Option<NetMode> => scalar, Raised;
        /// When set, TCP connections only to these ports (Landlock, ABI 4).
        allowed_connect_ports: Option<Vec<u16>> => scalar, AllowList {
            lifted: "lifts the TCP connect port restriction",
            added: "allows TCP connect to port {}",
        };
        /// When set, TCP binds only to these ports (Landlock, ABI 4).
        allowed_bind_ports: Option<Vec<u16>> => scalar, AllowList {
            lifted: "lifts the TCP bind port restriction",
            added: "allows TCP bind to port {}",
        };
        /// Ports published on the host with mode "user": "[IP:]HOSTPORT:PORT[/tcp|udp]".
        publish: Vec<String> => list, Added("publishes port {} on the host");
        /// With mode "user": the host's loopback is reachable as host.sbox.internal.
        allow_host_loopback: Option<bool> => scalar, Grants("reaches the host's loopback services");
        /// Egress by name: "HOST[:PORTS]" entries; any makes the sandbox's
        /// network these names only (see `crate::egress`).
        allow: Vec<String> => list, Custom(Direction::Widening, crate::trust::allowed_names);
        /// Names with a given address ("NAME:IP"), as `--add-host`.
        add_host: Vec<String> => list, Added("reaches the address given for {} (network.add_host)");
    }

    /// `[landlock]`: file-system and network rules the kernel enforces.
    [landlock] LandlockSection {
        /// Apply Landlock at all (default true).
        enabled: Option<bool> => scalar, Restricts(true, "turns Landlock off");
        /// Go on when the kernel lacks what the rules need (default false).
        best_effort: Option<bool> => scalar, Grants("makes Landlock best-effort");
        /// Refuse to start below this Landlock ABI version.
        min_abi: Option<u8> => scalar, Lowered("lowers the Landlock ABI it needs to {}");
        /// Readable (files and directories), as paths inside the sandbox.
        read: Vec<String> => list, Custom(Direction::Widening, crate::trust::landlock_readable);
        /// Readable and executable.
        execute: Vec<String> => list, Custom(Direction::Widening, crate::trust::landlock_readable);
        /// Full access beneath (create, write, remove).
        write: Vec<String> => list, AddedOutside("Landlock write access to {}");
        /// No signals to processes outside the sandbox (ABI 6).
        scope_signals: Option<bool> => scalar, Restricts(true, "lifts Landlock signal scoping");
        /// No connections to abstract unix sockets outside (ABI 6).
        scope_abstract_unix: Option<bool> => scalar,
            Restricts(true, "lifts Landlock abstract-socket scoping");
        /// Deny ioctls on device files opened inside (ABI 5); terminals
        /// inherited at start keep working.
        restrict_device_ioctl: Option<bool> => scalar,
            Restricts(false, "lifts the Landlock device ioctl restriction");
    }

    /// `[seccomp]`: the system call filter.
    [seccomp] SeccompSection {
        /// Apply the filter at all (default true).
        enabled: Option<bool> => scalar, Restricts(true, "turns the seccomp filter off");
        /// More calls to deny with EPERM.
        deny: Vec<String> => list, Removed("no longer denies the system call {}");
        /// More calls that kill the process (SIGSYS).
        kill: Vec<String> => list, Removed("no longer kills on the system call {}");
        /// Calls removed from the default deny list.
        allow: Vec<String> => list, Added("allows the system call {}");
        /// Allow ptrace and process_vm_* (debuggers).
        allow_ptrace: Option<bool> => scalar, Grants("allows ptrace");
        /// Allow new user namespaces (nested sandboxes, rootless containers).
        allow_userns: Option<bool> => scalar, Grants("allows new user namespaces");
        /// io_uring: "deny" (ENOSYS, callers fall back) or "allow".
        io_uring: Option<IoUring> => scalar, Raised;
    }

    /// `[process]`: the command's process and its limits. Limits are
    /// resources, not access: `sbox trust` does not compare them.
    [process] ProcessSection {
        /// Host name inside the sandbox.
        hostname: Option<String> => scalar, Neutral;
        /// Shell for `sbox shell`.
        shell: Option<String> => scalar, Neutral;
        /// Start the command in a new session (default true): it then has no
        /// controlling terminal it could push keystrokes into (TIOCSTI). false
        /// keeps the caller's session for `run` without a terminal of its own.
        new_session: Option<bool> => scalar,
            Restricts(true, "keeps your terminal session (no new session)");
        /// Resource limits (setrlimit), by name: nofile, nproc, as, data,
        /// fsize, cpu, core, stack, memlock.
        rlimits: BTreeMap<String, u64> => map, Neutral;
        /// Memory of the sandbox ("512M", "2G").
        memory: Option<String> => scalar, Neutral;
        /// Most processes at once.
        pids: Option<u64> => scalar, Neutral;
        /// CPUs ("1.5").
        cpus: Option<f64> => scalar, Neutral;
        /// Stop the sandbox after this long ("30s", "10m").
        timeout: Option<String> => scalar, Neutral;
    }
}

impl ProfileFile {
    /// Every key of a profile, in the order of the table: name, merge rule
    /// and trust direction. (`include` and `replace` are not keys: they
    /// say how files combine.)
    pub fn keys() -> Vec<Key> {
        let mut keys = vec![Key {
            name: "description",
            merge: MergeRule::Scalar,
            trust: Direction::Neutral,
        }];
        keys.extend(FilesystemSection::keys());
        keys.extend(EnvironmentSection::keys());
        keys.extend(NetworkSection::keys());
        keys.extend(LandlockSection::keys());
        keys.extend(SeccompSection::keys());
        keys.extend(ProcessSection::keys());
        keys
    }

    /// Lay `later` (read from `origin`) over `self`.
    pub fn merge(&mut self, later: ProfileFile, origin: &str, prov: &mut Provenance) {
        // Every field, by name: a new section that is not merged here does
        // not compile.
        let ProfileFile {
            description,
            include: _,
            replace,
            filesystem,
            environment,
            network,
            landlock,
            seccomp,
            process,
        } = later;
        let mut m = Merger {
            origin,
            replace: &replace,
            prov,
        };
        m.scalar("description", &mut self.description, description);
        self.filesystem.merge_from(filesystem, &mut m);
        self.environment.merge_from(environment, &mut m);
        self.network.merge_from(network, &mut m);
        self.landlock.merge_from(landlock, &mut m);
        self.seccomp.merge_from(seccomp, &mut m);
        self.process.merge_from(process, &mut m);
    }

    /// Names in `replace` that are not lists.
    pub fn bad_replace(&self) -> Option<&str> {
        let keys = Self::keys();
        self.replace
            .iter()
            .find(|r| {
                !keys
                    .iter()
                    .any(|k| k.name == r.as_str() && k.merge.replaceable())
            })
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::Direction;

    /// The field names serde reads for `T` (a struct): what a profile may
    /// write, independently of the key table.
    fn serde_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
        use serde::de::{Error as _, Visitor};
        struct Capture<'a>(&'a mut &'static [&'static str]);
        impl<'de> serde::Deserializer<'de> for Capture<'_> {
            type Error = serde::de::value::Error;
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _name: &'static str,
                fields: &'static [&'static str],
                _visitor: V,
            ) -> Result<V::Value, Self::Error> {
                *self.0 = fields;
                Err(Self::Error::custom("captured"))
            }
            fn deserialize_any<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, Self::Error> {
                Err(Self::Error::custom("not a struct"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
                bytes byte_buf option unit unit_struct newtype_struct seq tuple
                tuple_struct map enum identifier ignored_any
            }
        }
        let mut fields: &'static [&'static str] = &[];
        let _ = T::deserialize(Capture(&mut fields));
        fields
    }

    #[test]
    fn every_key_a_profile_accepts_is_in_the_table_once() {
        let mut accepted = Vec::new();
        for top in serde_fields::<ProfileFile>() {
            let section = match *top {
                "include" | "replace" => continue,
                "filesystem" => serde_fields::<FilesystemSection>(),
                "environment" => serde_fields::<EnvironmentSection>(),
                "network" => serde_fields::<NetworkSection>(),
                "landlock" => serde_fields::<LandlockSection>(),
                "seccomp" => serde_fields::<SeccompSection>(),
                "process" => serde_fields::<ProcessSection>(),
                "description" => {
                    accepted.push(top.to_string());
                    continue;
                }
                other => panic!("section {other} is not handled here (nor, likely, in merge)"),
            };
            assert!(!section.is_empty(), "{top}");
            accepted.extend(section.iter().map(|k| format!("{top}.{k}")));
        }
        let table: Vec<String> = ProfileFile::keys()
            .iter()
            .map(|k| k.name.to_string())
            .collect();
        assert_eq!(accepted, table);
        // Spot checks that the rules declared are the rules reported.
        let key = |n: &str| {
            ProfileFile::keys()
                .into_iter()
                .find(|k| k.name == n)
                .expect(n)
        };
        assert_eq!(key("filesystem.bind").merge, MergeRule::List);
        assert_eq!(key("filesystem.bind").trust, Direction::Widening);
        assert_eq!(key("filesystem.hidden").trust, Direction::Narrowing);
        assert_eq!(key("process.rlimits").merge, MergeRule::Map);
        assert_eq!(key("network.mode").merge, MergeRule::Scalar);
        assert_eq!(key("process.hostname").trust, Direction::Neutral);
    }

    #[test]
    fn replace_names_exactly_the_lists_and_maps() {
        let lists: Vec<&str> = ProfileFile::keys()
            .iter()
            .filter(|k| k.merge.replaceable())
            .map(|k| k.name)
            .collect();
        // The lists `replace` took before the table, and no others.
        let mut before = vec![
            "filesystem.bind",
            "filesystem.ro_bind",
            "filesystem.tmpfs",
            "filesystem.hidden",
            "environment.pass",
            "network.publish",
            "network.allow",
            "network.add_host",
            "environment.set",
            "environment.unset",
            "landlock.read",
            "landlock.execute",
            "landlock.write",
            "seccomp.deny",
            "seccomp.kill",
            "seccomp.allow",
            "process.rlimits",
        ];
        let mut now = lists.clone();
        before.sort_unstable();
        now.sort_unstable();
        assert_eq!(now, before);
        for name in &lists {
            let p = ProfileFile {
                replace: vec![name.to_string()],
                ..ProfileFile::default()
            };
            assert_eq!(p.bad_replace(), None, "{name}");
        }
        for bad in ["filesystem.overlay", "network.allowed_connect_ports", "x"] {
            let p = ProfileFile {
                replace: vec![bad.to_string()],
                ..ProfileFile::default()
            };
            assert_eq!(p.bad_replace(), Some(bad));
        }
    }

    fn parse(t: &str) -> ProfileFile {
        toml::from_str(t).expect("toml")
    }

    #[test]
    fn merge_overrides_scalars_extends_lists_and_maps_and_replaces() {
        let mut p = parse(
            "[filesystem]\noverlay = \"kernel\"\nhidden = [\"/a\", \"/b\"]\nbind = [\"/x\"]\n\
             [environment]\nset = { A = \"1\", B = \"1\" }\n[process]\nrlimits = { nofile = 10 }\n",
        );
        let mut prov = Provenance::new();
        p.merge(parse(""), "empty", &mut prov);
        assert_eq!(p.filesystem.overlay, Some(Backend::Kernel), "unset keeps");
        assert!(prov.is_empty(), "{prov:?}");
        p.merge(
            parse(
                "replace = [\"filesystem.bind\", \"process.rlimits\"]\n\
                 [filesystem]\noverlay = \"none\"\nhidden = [\"/b\", \"/c\"]\nbind = [\"/y\"]\n\
                 [environment]\nset = { B = \"2\" }\n[process]\nrlimits = { nproc = 5 }\n",
            ),
            "later",
            &mut prov,
        );
        // Scalar: the later value.
        assert_eq!(p.filesystem.overlay, Some(Backend::None));
        assert_eq!(prov["filesystem.overlay"], "later");
        // List: extended, without duplicates.
        assert_eq!(p.filesystem.hidden, ["/a", "/b", "/c"]);
        assert_eq!(prov["filesystem.hidden[/c]"], "later");
        // Map: extended, later entries win.
        assert_eq!(p.environment.set["A"], "1");
        assert_eq!(p.environment.set["B"], "2");
        // `replace`: the list and the map start afresh.
        assert_eq!(p.filesystem.bind, ["/y"]);
        assert_eq!(prov["filesystem.bind"], "later (replaced)");
        assert_eq!(
            p.process.rlimits.keys().collect::<Vec<_>>(),
            [&"nproc".to_string()]
        );
        assert!(p.replace.is_empty(), "replace is not merged");
    }

    #[test]
    fn a_wrong_word_names_the_key_and_the_words() {
        for (text, want) in [
            (
                "[filesystem]\noverlay = \"fusee\"",
                "filesystem.overlay: \"fusee\" (expected \"fuse\", \"kernel\" or \"none\")",
            ),
            (
                "[filesystem]\nproject = \"rx\"",
                "filesystem.project: \"rx\" (expected \"rw\", \"ro\" or \"none\")",
            ),
            (
                "[filesystem]\npersist = \"yes\"",
                "filesystem.persist: \"yes\" (expected \"project\" or \"none\")",
            ),
            (
                "[filesystem]\nhome_project = \"x\"",
                "filesystem.home_project: \"x\" (expected \"refuse\", \"overlay\" or \"bind\")",
            ),
            (
                "[network]\nmode = \"all\"",
                "network.mode: \"all\" (expected \"none\", \"host\" or \"user\")",
            ),
            (
                "[seccomp]\nio_uring = \"yes\"",
                "seccomp.io_uring: \"yes\" (expected \"deny\" or \"allow\")",
            ),
            (
                "[filesystem]\nproject = 3",
                "expected a string for filesystem.project: \"rw\", \"ro\" or \"none\"",
            ),
        ] {
            let e = super::super::load::parse(text, &super::super::Origin::Builtin("t".into()))
                .expect_err(text)
                .to_string();
            assert!(e.contains(want), "{e}");
            assert!(e.contains("line 2"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn words_are_written_as_read() {
        let p = parse(
            "[filesystem]\noverlay = \"kernel\"\nproject = \"ro\"\npersist = \"project\"\n\
             home_project = \"bind\"\n[network]\nmode = \"user\"\n[seccomp]\nio_uring = \"allow\"\n",
        );
        let text = toml::to_string(&p).expect("toml");
        for line in [
            "overlay = \"kernel\"",
            "project = \"ro\"",
            "persist = \"project\"",
            "home_project = \"bind\"",
            "mode = \"user\"",
            "io_uring = \"allow\"",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        let again: ProfileFile = toml::from_str(&text).expect("again");
        assert_eq!(again.network.mode, Some(NetMode::User));
    }
}
