//! Network egress by name (`--allow-net`, `network.allow`).
//!
//! The sandbox has a network namespace of its own with only `lo` up. Before
//! the root is assembled, init opens in it a TCP listener on 0.0.0.0 for
//! each allowed port and a UDP socket at `DNS_ADDR:53`, and hands them to
//! the launcher, which stays in the host's network namespace and serves
//! them (a socket keeps the namespace it was made in):
//! * the DNS answers an A query for a listed name with an address of
//!   127.77.0.0/15 that stands for that name for the whole run; an unlisted
//!   name gets NXDOMAIN, AAAA and the other types an empty answer;
//! * the forwarder accepts a connection, takes the name from the address it
//!   was made to (getsockname), checks the port against the entries for
//!   that name, resolves the name on the host as it connects, refuses
//!   loopback, link-local and private destinations unless the entry says
//!   `private` (or the address was given with `--add-host`), and copies
//!   both ways;
//! * a packet socket sees the connection requests made inside (every
//!   address is the loopback's there): those that no listener takes are
//!   counted as refused, whether or not `--log-denials` is given.
//!
//! Nothing leaves the namespace otherwise: a connection to an address no
//! listed name resolved to is refused, UDP other than to the DNS goes
//! nowhere.

mod allow;
mod dns;
mod relay;
mod server;
mod workers;

pub use allow::{
    is_internal, is_name_address, parse_add_host, parse_allow, Allow, Egress, Pattern,
};
pub use server::{open_sockets, serve, Server, Sockets};

use std::net::Ipv4Addr;

/// The name of the host's loopback inside.
pub const HOST_ALIAS: &str = crate::net::HOST_ALIAS;
/// Where the sandbox's resolver is.
pub const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(127, 77, 0, 1);
/// First address of the names listed exactly (127.77.0.2 on).
pub(super) const FIXED_BASE: u32 = 0x7f4d_0002;
/// First address of names matched by a wildcard (127.78.0.1 on).
pub(super) const DYNAMIC_BASE: u32 = 0x7f4e_0001;
/// Most names a wildcard can stand for in one run.
pub(super) const DYNAMIC_MAX: u32 = 65_000;
/// Ports an entry without any gets.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];
