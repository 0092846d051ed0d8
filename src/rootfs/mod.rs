//! The sandbox's root filesystem: a pure plan and the code that applies it.

pub mod apply;
pub mod overlay;
pub mod plan;
