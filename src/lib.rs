//! sbox: a rootless sandbox for developers on Linux.
//!
//! Roles: the **launcher** (the process the user started) creates the
//! sandbox and relays; **init** (PID 1 inside) assembles the root and
//! supervises; the **payload** is the user's command.

// Raw system calls only in `sys` and `rootfs::overlay::sys`, each behind a
// safe signature (see `#[allow(unsafe_code)]` there).
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod changes;
pub mod cli;
pub mod cmd;
pub mod confine;
pub mod digest;
pub mod doctor;
pub mod egress;
pub mod error;
pub mod hostpath;
pub mod idmap;
pub mod image;
pub mod keeper;
pub mod limits;
pub mod locations;
pub mod names;
pub mod net;
pub mod policy;
pub mod profile;
pub mod rootfs;
pub mod sandbox;
pub mod state;
#[allow(unsafe_code)] // the one place for raw system calls
pub mod sys;
pub mod trust;
pub mod verbose;
