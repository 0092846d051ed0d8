//! Errors of the image store and image names.

use std::path::PathBuf;

/// Everything that can go wrong with images. Each is reported as one line
/// and sbox exits 125.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image name {input:?}: {reason}")]
    InvalidReference { input: String, reason: String },
    #[error("image name {name:?} is ambiguous: it could be {}; use a full name", choices.join(", "))]
    Ambiguous { name: String, choices: Vec<String> },
    #[error("image {0} is not in the local store; pull it with `sbox image pull {0}`")]
    NotFound(String),
    #[error("{what}: {}", crate::error::io_reason(source))]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("blob {expected}: content has digest {actual} (corrupt or tampered)")]
    DigestMismatch { expected: String, actual: String },
    #[error("{path}: {msg}")]
    Layout { path: PathBuf, msg: String },
    #[error("layer {layer}: {msg}")]
    Layer { layer: String, msg: String },
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    InUse(String),
    #[error("{0}")]
    Other(String),
}

impl ImageError {
    /// An I/O operation failed while doing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        ImageError::Io {
            what: what.into(),
            source,
        }
    }

    /// Something is wrong with the image at `path`.
    pub fn layout(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        ImageError::Layout {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// Something is wrong with the layer `layer` (a digest).
    pub fn layer(layer: impl Into<String>, msg: impl Into<String>) -> Self {
        ImageError::Layer {
            layer: layer.into(),
            msg: msg.into(),
        }
    }
}

impl From<ImageError> for crate::error::Error {
    fn from(e: ImageError) -> Self {
        crate::error::Error::Host(e.to_string())
    }
}

/// Adds context to std::io results.
pub trait IoCtx<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, ImageError>;
}

impl<T> IoCtx<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, ImageError> {
        self.map_err(|e| ImageError::io(what(), e))
    }
}
