//! Container images: names (`reference`), the local content-addressed
//! store (`store`), and what turns an image into the root of a sandbox.
//!
//! Store layout under DATA `images/` (see `store`): `blobs/sha256/<hex>`
//! (compressed layers, configs, manifests; shared between images),
//! `layers/<chain-hex>/` (the flattened read-only tree of an image's layer
//! chain, files shared between chains by hard links, owners and modes in
//! the override xattr), `images/<config-hex>.json` (one record per image),
//! `names.json` (name → image) and `staging/` (private, same filesystem).

pub mod error;
pub mod reference;
pub mod registry;

pub use error::ImageError;
pub use reference::{Reference, Registries};
