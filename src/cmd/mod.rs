//! One module per subcommand.

pub mod changes;
pub mod completions;
pub mod doctor;
pub mod exec;
pub mod export;
pub mod image;
pub mod image_pull;
pub mod lifecycle;
pub mod profile;
pub mod run;
pub mod stored;
pub mod trust;
