//! Container images.

pub mod registry;
