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
pub mod store;
pub mod tree;

pub use error::ImageError;
pub use reference::{Reference, Registries};
pub use store::{ImageId, Store};

/// The image `reference` from the store, pulled from its registry when it
/// is not there (like `docker run`).
pub fn ensure(reference: &Reference, store: &Store) -> Result<ImageId, ImageError> {
    match store.lookup(reference)? {
        Some(id) => Ok(id),
        // Imported and committed images exist only here.
        None if reference.registry == reference::LOCALHOST => {
            Err(ImageError::NotFound(reference.to_string()))
        }
        None => {
            let opts = registry::options_for(reference, &Registries::load()?);
            registry::pull(reference, &opts, store)
        }
    }
}
