//! User and group id maps: /etc/subuid, /etc/subgid, newuidmap/newgidmap.

use crate::error::{Error, Result};
use nix::unistd::Pid;
use std::path::Path;
use std::process::{Command, Stdio};

/// One line of a uid_map/gid_map: `inside outside count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Extent {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// A subordinate id range from /etc/subuid or /etc/subgid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubRange {
    pub start: u32,
    pub count: u32,
}

/// Find the caller's first range in the text of /etc/subuid or /etc/subgid.
pub fn parse_subid(text: &str, name: &str, id: u32) -> Option<SubRange> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split(':');
            let who = f.next()?;
            let start = f.next()?.trim().parse().ok()?;
            let count = f.next()?.trim().parse().ok()?;
            Some((who, SubRange { start, count }))
        })
        .find(|(who, r)| (*who == name || *who == id.to_string()) && r.count > 0)
        .map(|(_, r)| r)
}

/// Read the caller's range from `path`, if any.
pub fn read_subid(path: &Path, name: &str, id: u32) -> Option<SubRange> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| parse_subid(&t, name, id))
}

/// The maps of one kind (uid or gid) for a sandbox.
///
/// Without `keep_id`: the caller is 0 inside, the subordinate range is
/// 1..=count. With `keep_id`: the caller keeps its own id inside, the
/// range fills 0..id and id+1.. around it (like podman's keep-id).
pub fn build_extents(caller: u32, sub: Option<SubRange>, keep_id: bool) -> Vec<Extent> {
    let own = Extent {
        inside: if keep_id { caller } else { 0 },
        outside: caller,
        count: 1,
    };
    let Some(sub) = sub else {
        return vec![own];
    };
    if !keep_id {
        return vec![
            own,
            Extent {
                inside: 1,
                outside: sub.start,
                count: sub.count,
            },
        ];
    }
    let mut v = vec![own];
    let below = sub.count.min(caller);
    if below > 0 {
        v.push(Extent {
            inside: 0,
            outside: sub.start,
            count: below,
        });
    }
    if sub.count > below {
        v.push(Extent {
            inside: caller + 1,
            outside: sub.start + below,
            count: sub.count - below,
        });
    }
    v
}

/// The map of a user namespace nested in one whose map (as read from its
/// `/proc/PID/uid_map` or `gid_map`) is `parent`: every id mapped there is
/// mapped to itself, so ids mean the same in both. Lines that do not parse
/// are left out.
pub fn identity_of(parent: &str) -> String {
    parent
        .lines()
        .filter_map(|l| {
            let f: Vec<u32> = l
                .split_whitespace()
                .map(str::parse)
                .collect::<std::result::Result<_, _>>()
                .ok()?;
            match f[..] {
                [inside, _, count] if count > 0 => Some(format!("{inside} {inside} {count}\n")),
                _ => None,
            }
        })
        .collect()
}

/// The highest id an `identity_of` map maps.
pub fn highest_mapped(parent: &str) -> Option<u32> {
    parent
        .lines()
        .filter_map(|l| {
            let f: Vec<u32> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            match f[..] {
                [inside, _, count] if count > 0 => inside.checked_add(count - 1),
                _ => None,
            }
        })
        .max()
}

/// How the maps of a sandbox are written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IdPlan {
    pub uid: Vec<Extent>,
    pub gid: Vec<Extent>,
    /// true: newuidmap/newgidmap; false: a single-id map written directly
    /// with setgroups denied.
    pub helpers: bool,
}

impl IdPlan {
    /// Decide from the host: use the helpers when both exist and the caller
    /// has both ranges.
    pub fn for_caller(uid: u32, gid: u32, name: &str, keep_id: bool) -> Self {
        let subuid = read_subid(Path::new("/etc/subuid"), name, uid);
        let subgid = read_subid(Path::new("/etc/subgid"), name, uid)
            .or_else(|| read_subid(Path::new("/etc/subgid"), "", gid));
        let helpers = find_helper("newuidmap").is_some() && find_helper("newgidmap").is_some();
        match (subuid, subgid, helpers) {
            (Some(su), Some(sg), true) => IdPlan {
                uid: build_extents(uid, Some(su), keep_id),
                gid: build_extents(gid, Some(sg), keep_id),
                helpers: true,
            },
            _ => IdPlan {
                uid: build_extents(uid, None, keep_id),
                gid: build_extents(gid, None, keep_id),
                helpers: false,
            },
        }
    }

    /// A one-line summary for --verbose.
    pub fn describe(&self) -> String {
        let fmt = |v: &[Extent]| {
            v.iter()
                .map(|e| format!("{}->{}+{}", e.inside, e.outside, e.count))
                .collect::<Vec<_>>()
                .join(",")
        };
        if self.helpers {
            format!(
                "uid map {} gid map {} (newuidmap/newgidmap)",
                fmt(&self.uid),
                fmt(&self.gid)
            )
        } else {
            format!(
                "single-id map: uid {} gid {} (no subordinate range or no newuidmap; setgroups denied)",
                fmt(&self.uid),
                fmt(&self.gid)
            )
        }
    }

    /// Write the maps of process `pid` (which is in the new user namespace).
    pub fn apply(&self, pid: Pid) -> Result<()> {
        if self.helpers {
            let mut u = spawn_helper("newuidmap", pid, &self.uid)?;
            let mut g = spawn_helper("newgidmap", pid, &self.gid)?;
            let ru = finish_helper("newuidmap", &mut u);
            let rg = finish_helper("newgidmap", &mut g);
            ru.and(rg)
        } else {
            write_single(pid, &self.uid, &self.gid)
        }
    }
}

/// The path of a setuid helper, looked up in the usual places.
pub fn find_helper(name: &str) -> Option<std::path::PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

fn spawn_helper(name: &str, pid: Pid, extents: &[Extent]) -> Result<std::process::Child> {
    let path = find_helper(name).ok_or_else(|| Error::Host(format!("{name} not found")))?;
    let mut cmd = Command::new(&path);
    cmd.arg(pid.as_raw().to_string());
    for e in extents {
        cmd.arg(e.inside.to_string())
            .arg(e.outside.to_string())
            .arg(e.count.to_string());
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_clear()
        .spawn()
        .map_err(|e| Error::io(format!("running {}", path.display()), e))
}

fn finish_helper(name: &str, child: &mut std::process::Child) -> Result<()> {
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        use std::io::Read;
        let _ = s.read_to_string(&mut err);
    }
    let status = child
        .wait()
        .map_err(|e| Error::io(format!("waiting for {name}"), e))?;
    if status.success() {
        return Ok(());
    }
    let err = err.trim().replace('\n', "; ");
    Err(Error::Host(format!(
        "{name} failed ({status}){}{} — check /etc/subuid and /etc/subgid, and that {name} is setuid root (see `sbox doctor`)",
        if err.is_empty() { "" } else { ": " },
        err
    )))
}

fn write_single(pid: Pid, uid: &[Extent], gid: &[Extent]) -> Result<()> {
    let line = |e: &[Extent]| {
        e.iter()
            .map(|x| format!("{} {} {}\n", x.inside, x.outside, x.count))
            .collect::<String>()
    };
    let base = format!("/proc/{}", pid.as_raw());
    let write = |file: &str, text: &str| {
        std::fs::write(format!("{base}/{file}"), text)
            .map_err(|e| Error::io(format!("writing {base}/{file}"), e))
    };
    write("setgroups", "deny")?;
    write("uid_map", &line(uid))?;
    write("gid_map", &line(gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_identity_maps() {
        let parent = "         0       1000          1\n         1     100000      65536\n";
        assert_eq!(identity_of(parent), "0 0 1\n1 1 65536\n");
        assert_eq!(highest_mapped(parent), Some(65536));
        assert_eq!(identity_of("0 1000 1\n"), "0 0 1\n");
        assert_eq!(identity_of("x y z\n0 5\n"), "");
        assert_eq!(highest_mapped(""), None);
    }

    const SUBUID: &str = "# comment\nalice:100000:65536\nbob:165536:65536\n1002:231072:1000\n";

    #[test]
    fn finds_ranges_by_name_or_uid() {
        assert_eq!(
            parse_subid(SUBUID, "bob", 1001),
            Some(SubRange {
                start: 165536,
                count: 65536
            })
        );
        assert_eq!(
            parse_subid(SUBUID, "carol", 1002),
            Some(SubRange {
                start: 231072,
                count: 1000
            })
        );
        assert_eq!(parse_subid(SUBUID, "dave", 1003), None);
    }

    #[test]
    fn root_mapping() {
        let v = build_extents(
            1000,
            Some(SubRange {
                start: 100000,
                count: 65536,
            }),
            false,
        );
        assert_eq!(
            v,
            vec![
                Extent {
                    inside: 0,
                    outside: 1000,
                    count: 1
                },
                Extent {
                    inside: 1,
                    outside: 100000,
                    count: 65536
                }
            ]
        );
        assert_eq!(build_extents(1000, None, false).len(), 1);
    }

    #[test]
    fn keep_id_mapping_surrounds_the_caller() {
        let v = build_extents(
            1000,
            Some(SubRange {
                start: 100000,
                count: 65536,
            }),
            true,
        );
        assert_eq!(v[0].inside, 1000);
        assert_eq!(v[0].outside, 1000);
        assert_eq!(
            v[1],
            Extent {
                inside: 0,
                outside: 100000,
                count: 1000
            }
        );
        assert_eq!(
            v[2],
            Extent {
                inside: 1001,
                outside: 101000,
                count: 64536
            }
        );
    }
}
