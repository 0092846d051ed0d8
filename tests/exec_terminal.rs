//! The caller's terminal and standard streams never enter the sandbox
//! through `sbox exec` without `-t` (sbox relays them through pipes of its
//! own), and nothing a command leaves behind in `sbox exec` or `sbox run`
//! holds the caller's terminal after sbox returns: it can neither read what
//! the user types next at the host shell nor print fake prompts there.
//! Also: the relay's streams, end of input and exit statuses.

mod common;
use common::*;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Removes a named sandbox (`sbox rm -f`) when dropped.
struct Named(String);

impl Named {
    fn start(p: &Project, tag: &str) -> Self {
        let name = format!("et-{tag}-{}", std::process::id());
        let g = Named(name.clone());
        let o = output(sbox(
            &p.dir,
            &["run", "-d", "--name", &name, "--", "sleep", "1000"],
        ));
        assert_eq!(ok(o), format!("{name}\n"));
        g
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = output(sbox(Path::new("/tmp"), &["rm", "-f", &self.0]));
    }
}

/// A pseudo-terminal of the test, both ends close-on-exec so that no other
/// test's child inherits them: the stand-in for the user's terminal.
struct Pty {
    master: File,
    slave: OwnedFd,
}

impl Pty {
    fn open() -> Self {
        use nix::fcntl::OFlag;
        let m = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .expect("posix_openpt");
        nix::pty::grantpt(&m).expect("grantpt");
        nix::pty::unlockpt(&m).expect("unlockpt");
        let name = nix::pty::ptsname_r(&m).expect("ptsname");
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&name)
            .expect("open the pty slave");
        use std::os::fd::{FromRawFd, IntoRawFd};
        // SAFETY: into_raw_fd hands over the descriptor nothing else owns.
        let master = unsafe { File::from_raw_fd(m.into_raw_fd()) };
        Pty {
            master,
            slave: slave.into(),
        }
    }

    /// Bytes typed into the terminal that nobody has read yet.
    fn unread(&self) -> i32 {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer, which is
        // valid for the call.
        let r = unsafe { libc::ioctl(self.slave.as_raw_fd(), libc::FIONREAD, &mut n) };
        assert_eq!(r, 0, "FIONREAD");
        n
    }

    /// Everything the terminal shows within `wait`.
    fn read_for(&mut self, wait: Duration) -> String {
        let end = Instant::now() + wait;
        let mut acc = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let ms = left.as_millis().min(200) as u16;
            let mut fds = [nix::poll::PollFd::new(
                self.master.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)).unwrap_or(0) > 0 {
                match self.master.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => acc.extend_from_slice(&buf[..n]),
                }
            }
            if left.is_zero() {
                break;
            }
        }
        String::from_utf8_lossy(&acc).into_owned()
    }

    /// Host processes (other than this test) holding the terminal.
    fn holders(&self) -> Vec<String> {
        let rdev = std::fs::metadata(format!("/proc/self/fd/{}", self.slave.as_raw_fd()))
            .expect("stat the slave")
            .rdev();
        let me = std::process::id().to_string();
        // A child this test process forked for another test holds every
        // descriptor until its exec closes them: not a holder.
        let my_exe = std::fs::read_link("/proc/self/exe").ok();
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc").expect("proc").flatten() {
            let pid = e.file_name().to_string_lossy().into_owned();
            if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if my_exe.is_some() && std::fs::read_link(e.path().join("exe")).ok() == my_exe {
                continue;
            }
            let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                if std::fs::metadata(fd.path())
                    .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == rdev)
                {
                    let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                    found.push(format!("{pid} ({})", comm.trim()));
                    break;
                }
            }
        }
        found
    }
}

use std::os::unix::fs::OpenOptionsExt;

/// Run `c` with the terminal as its stdin, stdout and stderr; what the
/// terminal showed and the status. Fails if it takes longer than `secs`.
fn run_on(pty: &mut Pty, mut c: Command, secs: u64) -> (String, ExitStatus) {
    let s = &pty.slave;
    c.stdin(s.try_clone().expect("dup"))
        .stdout(s.try_clone().expect("dup"))
        .stderr(s.try_clone().expect("dup"));
    let mut child = c.spawn().expect("spawn sbox");
    let end = Instant::now() + Duration::from_secs(secs);
    let mut shown = String::new();
    loop {
        shown.push_str(&pty.read_for(Duration::from_millis(100)));
        if let Some(st) = child.try_wait().expect("wait") {
            shown.push_str(&pty.read_for(Duration::from_millis(100)));
            return (shown, st);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sbox did not return within {secs}s; it showed {shown:?}");
        }
    }
}

/// A command that leaves processes behind which hold on to its standard
/// streams: one in its process group, one in a session of its own. A second
/// later each tries to read what is typed next (into `stolen-*`) and to
/// print a fake prompt.
const LEAVE_BEHIND: &str = r#"for i in 0 1 2; do echo "fd$i=$(readlink /proc/$$/fd/$i)"; done
exec 3<&0 4>&1 5>&2
(sleep 1; echo FAKE-PROMPT-1 >&4; cat <&3 > stolen-1) >/dev/null 2>&1 &
setsid sh -c 'sleep 1; echo FAKE-PROMPT-2 >&2; cat > stolen-2' <&3 >/dev/null 2>&5 &
echo started"#;

/// After sbox returned: nothing may still hold the terminal, read what is
/// typed there, or print on it.
#[track_caller]
fn assert_terminal_released(pty: &mut Pty, p: &Project, what: &str) {
    let holders = pty.holders();
    assert!(
        holders.is_empty(),
        "{what}: processes still hold the caller's terminal after sbox returned: {holders:?}"
    );
    // Give what was left behind the time to try.
    let shown = pty.read_for(Duration::from_millis(1800));
    pty.master
        .write_all(b"typed-secret\n")
        .expect("type on the terminal");
    let shown = shown + &pty.read_for(Duration::from_millis(1200));
    assert!(
        !shown.contains("FAKE-PROMPT"),
        "{what}: a process left behind printed on the terminal: {shown:?}"
    );
    assert_eq!(
        pty.unread(),
        "typed-secret\n".len() as i32,
        "{what}: what the user typed was read by someone else"
    );
    for f in ["stolen-1", "stolen-2"] {
        let text = std::fs::read_to_string(p.dir.join(f)).unwrap_or_default();
        assert!(!text.contains("typed-secret"), "{what}: {f}: {text:?}");
    }
    let holders = pty.holders();
    assert!(holders.is_empty(), "{what}: later: {holders:?}");
}

#[test]
fn exec_without_t_keeps_the_callers_terminal_out() {
    let p = Project::new("exectermi");
    let g = Named::start(&p, "termi");
    for flag in ["-i", ""] {
        let what = format!("exec {flag}");
        let _ = std::fs::remove_file(p.dir.join("stolen-1"));
        let _ = std::fs::remove_file(p.dir.join("stolen-2"));
        let mut pty = Pty::open();
        let mut args = vec!["exec"];
        if !flag.is_empty() {
            args.push(flag);
        }
        args.extend_from_slice(&[&g.0, "--", "sh", "-c", LEAVE_BEHIND]);
        let (shown, st) = run_on(&mut pty, sbox(&p.dir, &args), 60);
        assert!(st.success(), "{what}: {st:?}: {shown}");
        assert!(shown.contains("started"), "{what}: {shown:?}");
        // The command's streams are sbox's pipes (stdin /dev/null without
        // -i), not the caller's terminal.
        let fd = |i: usize| {
            shown
                .lines()
                .find_map(|l| l.trim().strip_prefix(&format!("fd{i}=")))
                .unwrap_or_else(|| panic!("{what}: no fd{i} in {shown:?}"))
                .to_string()
        };
        let stdin = if flag == "-i" { "pipe:[" } else { "/dev/null" };
        assert!(fd(0).starts_with(stdin), "{what}: stdin is {}", fd(0));
        for i in [1, 2] {
            assert!(fd(i).starts_with("pipe:["), "{what}: fd {i} is {}", fd(i));
        }
        assert_terminal_released(&mut pty, &p, &what);
    }
}

#[test]
fn run_releases_the_callers_terminal_when_it_returns() {
    let p = Project::new("runtermi");
    let mut pty = Pty::open();
    let (shown, st) = run_on(
        &mut pty,
        sbox(&p.dir, &["run", "--", "sh", "-c", LEAVE_BEHIND]),
        60,
    );
    assert!(st.success(), "{st:?}: {shown}");
    assert!(shown.contains("started"), "{shown:?}");
    assert_terminal_released(&mut pty, &p, "run");
}

/// Run with `input` written on stdin from a thread (its errors ignored:
/// the command may not read it all); fail after `secs`.
fn output_fed(mut c: Command, input: Vec<u8>, secs: u64) -> Output {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(o) => o.expect("wait"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("sbox did not return within {secs}s");
        }
    }
}

#[test]
fn exec_relays_streams_end_of_input_and_status() {
    let p = Project::new("execstreams");
    let g = Named::start(&p, "streams");
    let n = g.0.as_str();
    // Separate stdout and stderr; the end of sbox's input ends the
    // command's; its status comes back.
    let o = output_fed(
        sbox(
            &p.dir,
            &[
                "exec",
                "-i",
                n,
                "--",
                "sh",
                "-c",
                "cat; echo after-eof; echo to-err >&2; exit 7",
            ],
        ),
        b"a\nb\n".to_vec(),
        30,
    );
    assert_eq!(stdout(&o), "a\nb\nafter-eof\n", "{}", stderr(&o));
    assert_eq!(stderr(&o), "to-err\n");
    assert_eq!(o.status.code(), Some(7));
    // Those streams are sbox's own pipes, not the ones the caller gave.
    let mut c = sbox(
        &p.dir,
        &[
            "exec",
            "-i",
            n,
            "--",
            "sh",
            "-c",
            "readlink /proc/$$/fd/0 /proc/$$/fd/1 /proc/$$/fd/2",
        ],
    );
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().expect("spawn");
    let ino = |fd: std::os::fd::BorrowedFd<'_>| {
        format!(
            "pipe:[{}]",
            std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .expect("stat")
                .ino()
        )
    };
    let given = [
        ino(child.stdin.as_ref().expect("stdin").as_fd()),
        ino(child.stdout.as_ref().expect("stdout").as_fd()),
        ino(child.stderr.as_ref().expect("stderr").as_fd()),
    ];
    let o = child.wait_with_output().expect("wait");
    let seen: Vec<&str> = std::str::from_utf8(&o.stdout)
        .expect("utf-8")
        .lines()
        .collect();
    assert_eq!(seen.len(), 3, "{seen:?} {}", stderr(&o));
    for (i, s) in seen.iter().enumerate() {
        assert!(s.starts_with("pipe:["), "fd {i}: {s}");
        assert!(
            !given.contains(&s.to_string()),
            "fd {i} is the caller's {s}"
        );
    }
    // Much more than a pipe holds, both ways at once.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let o = output_fed(
        sbox(&p.dir, &["exec", "-i", n, "--", "cat"]),
        big.clone(),
        60,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout.len(), big.len());
    assert!(o.stdout == big, "the data changed on the way");
    // A command that never reads its input still ends sbox exec.
    let o = output_fed(
        sbox(&p.dir, &["exec", "-i", n, "--", "sh", "-c", "echo done"]),
        big,
        30,
    );
    assert_eq!(stdout(&o), "done\n", "{}", stderr(&o));
    assert!(o.status.success());
    // Without -i the command's stdin is /dev/null, whatever sbox's is.
    let o = output_fed(
        sbox(&p.dir, &["exec", n, "--", "sh", "-c", "cat; echo end"]),
        b"not for you\n".to_vec(),
        30,
    );
    assert_eq!(stdout(&o), "end\n", "{}", stderr(&o));
    // Killed by a signal: 128+N.
    let o = output_fed(
        sbox(&p.dir, &["exec", n, "--", "sh", "-c", "kill -KILL $$"]),
        Vec::new(),
        30,
    );
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
}

/// `CMD` through sbox with its output read by a pipe that closes after the
/// first line: sbox's status and stderr.
fn reader_goes_away(mut c: Command) -> Output {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut first = [0u8; 2];
    out.read_exact(&mut first).expect("read");
    assert_eq!(&first, b"y\n");
    drop(out);
    assert!(
        wait_for(30, || child.try_wait().expect("wait").is_some()),
        "sbox did not end after its reader went away"
    );
    child.wait_with_output().expect("wait")
}

#[test]
fn a_closed_output_stops_the_command_with_sigpipe() {
    // As `yes | head -1` outside: yes dies of SIGPIPE, without a message.
    let p = Project::new("sigpipe");
    let o = reader_goes_away(sbox(&p.dir, &["run", "--", "yes"]));
    assert_eq!(o.status.code(), Some(141), "run: {}", stderr(&o));
    assert_eq!(stderr(&o), "", "run");
    let g = Named::start(&p, "sigpipe");
    let o = reader_goes_away(sbox(&p.dir, &["exec", &g.0, "--", "yes"]));
    assert_eq!(o.status.code(), Some(141), "exec: {}", stderr(&o));
    assert_eq!(stderr(&o), "", "exec");
}
