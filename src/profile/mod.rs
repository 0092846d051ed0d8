//! Profiles: TOML files that say what a sandbox sees and may do.
//! Loading and merging are pure; `crate::policy` turns the result into a
//! validated `Policy`.

pub mod keys;
pub mod load;
pub mod schema;

pub use load::{find, list, load, Loaded, Origin, SearchPath};
pub use schema::ProfileFile;
