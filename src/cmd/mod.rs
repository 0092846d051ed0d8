//! One module per subcommand.

pub mod doctor;
pub mod profile;
pub mod run;
pub mod trust;
