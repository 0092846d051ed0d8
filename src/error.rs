//! Error types of the library and the exit codes sbox returns.
//!
//! Exit codes follow docker/podman: the command's own status, 128+N when
//! the command was killed by signal N, 125 when sbox itself failed, 126 when
//! the command could not be executed and 127 when it was not found.

use std::path::PathBuf;

/// sbox itself failed (bad input, host not able to run a sandbox, …).
pub const EXIT_SBOX_FAILED: u8 = 125;
/// The command exists but could not be executed.
pub const EXIT_NOT_EXECUTABLE: u8 = 126;
/// The command was not found.
pub const EXIT_NOT_FOUND: u8 = 127;
/// The sandbox was stopped by --timeout (as timeout(1) reports it).
pub const EXIT_TIMEOUT: u8 = 124;
/// clap's exit status for usage errors.
pub const EXIT_USAGE: u8 = 2;

/// Everything that can go wrong before or while a sandbox starts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("profile {name}: {msg}")]
    Profile { name: String, msg: String },
    #[error("{path}: {msg}")]
    Path { path: PathBuf, msg: String },
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Host(String),
    #[error("{0}")]
    Confine(String),
}

impl Error {
    /// A system call failed while doing `what`.
    pub fn sys(what: impl Into<String>, source: nix::Error) -> Self {
        Error::Sys {
            what: what.into(),
            source,
        }
    }

    /// An I/O operation failed while doing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// A problem with a path given by the user or a profile.
    pub fn path(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Path {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// The exit status sbox returns for this error.
    pub fn exit_code(&self) -> u8 {
        EXIT_SBOX_FAILED
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to nix results.
pub trait NixContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> NixContext<T> for nix::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::sys(what(), e))
    }
}

/// Adds context to std::io results.
pub trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}

/// Maps a wait status to the exit code a shell would report.
pub fn status_code(status: nix::sys::wait::WaitStatus) -> u8 {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => (code & 0xff) as u8,
        WaitStatus::Signaled(_, sig, _) => 128u8.wrapping_add(sig as i32 as u8),
        _ => EXIT_SBOX_FAILED,
    }
}

/// The reason of an I/O error without the "(os error N)" tail.
pub fn io_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}
