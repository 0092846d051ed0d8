//! `sbox ps`, `stop`, `start`, `rm` and `logs`: named sandboxes.

use crate::error::{Error, Result};
use crate::locations::{self, Locations, Paths};
use crate::names::{self, Info};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

fn paths_for(name: &str) -> Result<Paths> {
    locations::validate_name(name)?;
    Locations::from_host()?.sandbox(name)
}

#[derive(serde::Serialize)]
struct Row {
    name: String,
    status: &'static str,
    pid: Option<i32>,
    profile: Option<String>,
    project: Option<String>,
    started: Option<u64>,
    command: Vec<String>,
    size: Option<u64>,
    memory: Option<u64>,
    cpu_seconds: Option<f64>,
}

fn ago(started: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let s = now.saturating_sub(started);
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

pub(crate) fn human(bytes: u64) -> String {
    let units = ["B", "K", "M", "G", "T"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", units[i])
    }
}

/// `text`, cut to `max` characters with an ellipsis (`--json` has it whole).
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// `sbox ps [-a] [--json]`
pub fn ps(all: bool, json: bool) -> Result<u8> {
    let places = Locations::from_host()?;
    let mut rows = Vec::new();
    for name in places.names() {
        let paths = places.sandbox(&name)?;
        let row = match names::running(&paths) {
            Some(Info {
                pid,
                profile,
                project,
                started,
                command,
                cgroup,
                ..
            }) => {
                let usage = cgroup.as_deref().and_then(crate::limits::Cgroup::usage);
                Row {
                    name,
                    status: "running",
                    pid: Some(pid),
                    profile: Some(profile),
                    project: Some(project.display().to_string()),
                    started: Some(started),
                    command,
                    size: all.then(|| names::disk_usage(&paths.data)),
                    memory: usage.map(|u| u.0),
                    cpu_seconds: usage.map(|u| u.1),
                }
            }
            None if all && paths.data.exists() => {
                // Unreadable settings show as none here; `start` says why.
                let cfg = names::read_config(&paths).ok().flatten();
                Row {
                    name,
                    status: "stopped",
                    pid: None,
                    profile: cfg
                        .as_ref()
                        .and_then(|c| c.profile.clone().or_else(|| c.opts.profile.clone())),
                    project: cfg.as_ref().map(|c| c.project.display().to_string()),
                    started: None,
                    command: cfg.map(|c| c.command).unwrap_or_default(),
                    size: Some(names::disk_usage(&paths.data)),
                    memory: None,
                    cpu_seconds: None,
                }
            }
            None => continue,
        };
        rows.push(row);
    }
    if json {
        let text = serde_json::to_string_pretty(&rows).map_err(|e| Error::Host(e.to_string()))?;
        println!("{text}");
        return Ok(0);
    }
    let show_usage = rows.iter().any(|r| r.memory.is_some());
    // Columns as wide as their widest cell.
    let mut table: Vec<Vec<String>> = Vec::new();
    let mut head = vec![
        "NAME", "STATUS", "PID", "PROFILE", "STARTED", "PROJECT", "COMMAND",
    ];
    if all {
        head.push("SIZE");
    }
    if show_usage {
        head.extend(["MEM", "CPU"]);
    }
    table.push(head.iter().map(|h| h.to_string()).collect());
    let dash = || "-".to_string();
    for r in rows {
        let mut cells = vec![
            r.name,
            r.status.to_string(),
            r.pid.map(|p| p.to_string()).unwrap_or_else(dash),
            r.profile.unwrap_or_else(dash),
            r.started.map(ago).unwrap_or_else(dash),
            r.project.unwrap_or_else(dash),
            shorten(&r.command.join(" "), 40),
        ];
        if all {
            cells.push(r.size.map(human).unwrap_or_else(dash));
        }
        if show_usage {
            // Blank (the line ends before them) where there is no usage.
            cells.push(r.memory.map(human).unwrap_or_default());
            cells.push(
                r.cpu_seconds
                    .map(|c| format!("{c:.1}s"))
                    .unwrap_or_default(),
            );
        }
        table.push(cells);
    }
    let columns = head.len();
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            table
                .iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    // Numbers to the right.
    let right = |i: usize| matches!(head[i], "PID" | "SIZE" | "MEM" | "CPU");
    for row in &table {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if right(i) {
                line.push_str(&format!("{cell:>w$}  ", w = widths[i]));
            } else if i + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", line.trim_end());
    }
    Ok(0)
}

/// `sbox ps [-a] --names`: the names alone, one per line (what the shell
/// completions ask for: no sizes, no cgroup reads).
pub fn ps_names(all: bool) -> Result<u8> {
    let places = Locations::from_host()?;
    for name in places.names() {
        let paths = places.sandbox(&name)?;
        if names::running(&paths).is_some() || (all && paths.data.exists()) {
            println!("{name}");
        }
    }
    Ok(0)
}

/// Wait until the sandbox's lock is free.
fn wait_stopped(paths: &Paths, within: Duration) -> bool {
    let end = Instant::now() + within;
    loop {
        if names::running(paths).is_none() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process's start time (field 22 of /proc/PID/stat) and whether it is
/// still running (not a zombie); None once it is gone.
fn proc_state(pid: i32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let alive = !matches!(fields.first(), Some(&"Z") | Some(&"X"));
    Some((fields.get(19)?.parse().ok()?, alive))
}

/// Wait until the process that had `start` as its start time has exited:
/// the lock is released a moment before the launcher is done removing its
/// state, and `stop` promises that nothing of the sandbox is left.
fn wait_exited(pid: i32, start: Option<u64>, within: Duration) {
    let Some(start) = start else { return };
    let end = Instant::now() + within;
    while Instant::now() < end {
        match proc_state(pid) {
            Some((s, true)) if s == start => std::thread::sleep(Duration::from_millis(10)),
            _ => return,
        }
    }
}

/// Stop a running sandbox: SIGTERM through its launcher, SIGKILL to its
/// init (the whole pid namespace) after `grace`; return once the launcher
/// has exited.
fn stop_running(paths: &Paths, info: &Info, grace: Duration) -> Result<()> {
    let launcher = proc_state(info.pid).map(|(s, _)| s);
    let _ = kill(Pid::from_raw(info.pid), Signal::SIGTERM);
    if wait_stopped(paths, grace) {
        wait_exited(info.pid, launcher, Duration::from_secs(5));
        return Ok(());
    }
    let _ = kill(Pid::from_raw(info.init_pid), Signal::SIGKILL);
    if wait_stopped(paths, Duration::from_secs(5)) {
        wait_exited(info.pid, launcher, Duration::from_secs(5));
        return Ok(());
    }
    let _ = kill(Pid::from_raw(info.pid), Signal::SIGKILL);
    if wait_stopped(paths, Duration::from_secs(5)) {
        wait_exited(info.pid, launcher, Duration::from_secs(5));
        return Ok(());
    }
    Err(Error::Host(format!(
        "sandbox {:?} did not stop (launcher pid {})",
        paths.name, info.pid
    )))
}

/// `sbox stop NAME [-t SECONDS]`
pub fn stop(name: &str, grace: u64) -> Result<u8> {
    let paths = paths_for(name)?;
    let Some(info) = names::running(&paths) else {
        return Err(names::not_running(&paths));
    };
    stop_running(&paths, &info, Duration::from_secs(grace))?;
    println!("{name}");
    Ok(0)
}

/// `sbox start NAME`
pub fn start(name: &str) -> Result<u8> {
    let paths = paths_for(name)?;
    if names::running(&paths).is_some() {
        return Err(Error::Usage(format!("sandbox {name:?} is already running")));
    }
    let cfg = names::read_config(&paths)?
        .ok_or_else(|| Error::Usage(format!("no sandbox named {name:?} (see `sbox ps -a`)")))?;
    if cfg.shell {
        return Err(Error::Usage(format!(
            "{name:?} is the shell sandbox of {}: run `sbox shell` there",
            cfg.project.display()
        )));
    }
    crate::cmd::run::check_enterable(&cfg.project).map_err(|e| {
        Error::path(
            &cfg.project,
            format!("the sandbox's project: {}", crate::error::io_reason(&e)),
        )
    })?;
    let opts = super::stored::sandbox_opts(&cfg);
    crate::cmd::run::run_in(
        &cfg.project,
        opts,
        cfg.command,
        false,
        Some(name.to_string()),
        true,
    )
}

/// `sbox rm NAME [-f]`
pub fn rm(name: &str, force: bool) -> Result<u8> {
    let paths = paths_for(name)?;
    if let Some(info) = names::running(&paths) {
        if !force {
            return Err(Error::Usage(format!(
                "sandbox {name:?} is running: stop it first, or use rm -f"
            )));
        }
        stop_running(&paths, &info, Duration::ZERO)?;
    }
    if !paths.data.exists() && !paths.runtime.exists() {
        return Err(Error::Usage(format!("no sandbox named {name:?}")));
    }
    let caller = crate::policy::Caller::from_host()?;
    let ids = crate::idmap::IdPlan::for_caller(caller.uid, caller.gid, &caller.name, false);
    crate::state::remove_tree_mapped(&paths.data, &ids)?;
    let _ = std::fs::remove_dir_all(&paths.runtime);
    // A launcher that was killed left its state directory behind.
    if let Ok(base) = locations::runtime_dir(caller.uid) {
        crate::state::clean_stale(&base);
    }
    println!("{name}");
    Ok(0)
}

/// `sbox logs NAME`
pub fn logs(name: &str) -> Result<u8> {
    use std::io::Write;
    let paths = paths_for(name)?;
    if !paths.data.exists() {
        return Err(Error::Usage(format!("no sandbox named {name:?}")));
    }
    let mut out = std::io::stdout().lock();
    for p in [paths.log().with_extension("1"), paths.log()] {
        if let Ok(bytes) = std::fs::read(&p) {
            if out.write_all(&bytes).is_err() {
                break;
            }
        }
    }
    Ok(0)
}
