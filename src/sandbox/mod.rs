//! The three roles of a running sandbox: launcher, init and payload.

pub mod channel;
pub mod child;
pub mod detach;
pub mod init;
pub mod launcher;
pub mod messages;
pub mod payload;
pub mod pty;
pub mod relay;
pub mod relay_loop;

pub use crate::verbose::{mark_start, say};
