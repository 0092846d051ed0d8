//! Content hashes (SHA-256, hex) of project files and paths.

use sha2::{Digest, Sha256};

/// Hex SHA-256 of some bytes.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
