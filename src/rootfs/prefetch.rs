//! Read-ahead of the files a command read at its last launch.
//!
//! Each sandbox's FUSE root is a new mount, so its page cache starts cold:
//! the command's program, the dynamic loader and the libraries are read
//! through the FUSE server again, one round trip per 128 KiB, while the
//! command waits. The server notes the first regular files a sandbox reads
//! (`OverlayStats::first_reads`); the launcher keeps that list in its
//! private runtime directory, by command; at the next launch of the same
//! command init asks the kernel to read those files ahead as soon as the
//! root is mounted, while it still assembles the other mounts, so that the
//! command finds them in the page cache.
//!
//! The list is a hint: it names paths inside the sandbox's own view,
//! opened there with every symlink resolved inside the new root, and only
//! regular files are read ahead. A wrong or stale list costs some reads.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// The name of a list in the runtime directory starts so.
pub const PREFIX: &str = "prefetch-";
/// How many files the server notes, and a list may hold.
pub const FIRST_READS: usize = 32;
/// Read ahead of each file: at most this much from its start.
const PER_FILE: i64 = 8 << 20;
/// Read ahead in all.
const TOTAL: i64 = 32 << 20;
/// The kernel reads ahead this much per request on FUSE (its cap), so
/// the read-ahead is asked for in pieces of that size.
const CHUNK: i64 = 128 << 10;
/// Largest list file read.
const MAX_LIST: u64 = 64 << 10;

/// The list of `argv0` run on the root `lower` (the host's "/" or an
/// image's tree), in the runtime directory `base`.
pub fn list_path(base: &Path, argv0: &str, lower: &Path) -> PathBuf {
    let key = crate::digest::digest(format!("{argv0}\0{}", lower.display()).as_bytes());
    base.join(format!("{PREFIX}{}", &key[..16]))
}

/// The paths of the list at `path`: absolute, clean, at most
/// `FIRST_READS`. Empty when there is none or it cannot be read.
pub fn load(path: &Path) -> Vec<PathBuf> {
    let Ok(f) = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    else {
        return Vec::new();
    };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return Vec::new();
    }
    let mut text = String::new();
    if f.take(MAX_LIST).read_to_string(&mut text).is_err() {
        return Vec::new();
    }
    parse(&text)
}

fn parse(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(Path::new)
        .filter(|p| {
            p.is_absolute()
                && p.components()
                    .skip(1)
                    .all(|c| matches!(c, Component::Normal(_)))
                && p.components().count() > 1
        })
        .take(FIRST_READS)
        .map(Path::to_path_buf)
        .collect()
}

/// Keep `files` as the list at `path` (`state::write_private`), unless it
/// holds them already. Paths that do not fit on a line are left out.
pub fn store(path: &Path, files: &[PathBuf]) {
    let kept: Vec<&str> = files
        .iter()
        .filter_map(|p| p.to_str())
        .filter(|p| !p.contains('\n'))
        .take(FIRST_READS)
        .collect();
    if kept.is_empty()
        || load(path)
            .iter()
            .map(|p| p.to_str())
            .eq(kept.iter().map(|p| Some(*p)))
    {
        return;
    }
    let text: String = kept.iter().map(|p| format!("{p}\n")).collect();
    let _ = crate::state::write_private(path, text.as_bytes());
}

/// In init, once the FUSE root is mounted at `root`: ask the kernel to
/// read `files` ahead (FUSE reads them in the background, answered by the
/// server while init goes on); returns how many were asked for. Each open
/// costs the lookups the command would make anyway.
pub fn read_ahead(root: &Path, files: &[PathBuf]) -> usize {
    let Ok(dir) = crate::sys::openat2(crate::sys::cwd(), root, libc::O_PATH | libc::O_DIRECTORY, 0)
    else {
        return 0;
    };
    let mut left = TOTAL;
    let mut asked = 0;
    for p in files {
        let rel = p.strip_prefix("/").unwrap_or(p);
        // Inside the new root whatever the links say; a FIFO or device
        // must not block or be opened for real (NONBLOCK, regular only).
        let Ok(fd) = crate::sys::openat2(
            dir.as_fd(),
            rel,
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
            libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
        ) else {
            continue;
        };
        let Ok(st) = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd)) else {
            continue;
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            continue;
        }
        let size = st.st_size.min(PER_FILE).min(left);
        let mut off = 0;
        while off < size {
            let _ = nix::fcntl::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                off,
                CHUNK.min(size - off),
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
            );
            off += CHUNK;
        }
        asked += 1;
        left -= size;
        if left <= 0 {
            break;
        }
    }
    asked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_absolute_paths_are_listed() {
        let got =
            parse("/usr/bin/true\nrel/x\n/a/../etc/shadow\n/\n/lib/./x\n\n/usr/lib/libc.so.6\n");
        assert_eq!(
            got,
            vec![
                PathBuf::from("/usr/bin/true"),
                PathBuf::from("/lib/x"),
                PathBuf::from("/usr/lib/libc.so.6")
            ]
        );
        let many: String = (0..100).map(|i| format!("/f{i}\n")).collect();
        assert_eq!(parse(&many).len(), FIRST_READS);
    }

    #[test]
    fn a_list_is_stored_and_loaded_and_a_link_is_not_followed() {
        let d = std::env::temp_dir().join(format!("sbox-prefetch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        let path = list_path(&d, "true", Path::new("/"));
        assert_ne!(path, list_path(&d, "false", Path::new("/")));
        assert_ne!(path, list_path(&d, "true", Path::new("/img")));
        let files = vec![
            PathBuf::from("/usr/bin/true"),
            PathBuf::from("/etc/ld.so.cache"),
        ];
        store(&path, &files);
        assert_eq!(load(&path), files);
        std::fs::remove_file(&path).expect("rm");
        std::fs::write(d.join("elsewhere"), "/etc/passwd\n").expect("write");
        std::os::unix::fs::symlink(d.join("elsewhere"), &path).expect("symlink");
        assert!(load(&path).is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }
}
