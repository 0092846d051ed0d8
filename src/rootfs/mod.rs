//! The sandbox's root filesystem: a pure plan and the code that applies it.

pub mod apply;
pub mod overlay;
pub mod plan;
pub mod prefetch;
pub mod upper;

/// The canonical form of what exists of `p`, the rest appended (see
/// `crate::hostpath::CanonCache`).
pub fn canonical_prefix(p: &std::path::Path) -> Option<std::path::PathBuf> {
    crate::hostpath::canonical_prefix(p)
}

#[cfg(test)]
mod tests {
    #[test]
    fn canonical_prefix_resolves_what_exists() {
        let base = std::env::temp_dir().join(format!("sbox-canon-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("real")).unwrap();
        std::os::unix::fs::symlink("real", base.join("link")).unwrap();
        let base_c = std::fs::canonicalize(&base).unwrap();
        assert_eq!(
            super::canonical_prefix(&base.join("link/a/b")),
            Some(base_c.join("real/a/b"))
        );
        assert_eq!(
            super::canonical_prefix(&base.join("link")),
            Some(base_c.join("real"))
        );
        assert_eq!(super::canonical_prefix(std::path::Path::new("rel")), None);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
