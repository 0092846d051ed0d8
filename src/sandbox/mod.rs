//! The three roles of a running sandbox: launcher, init and payload.

pub mod channel;
pub mod init;
pub mod launcher;
pub mod payload;
pub mod pty;
