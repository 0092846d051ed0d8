//! The sandbox's root filesystem: a pure plan and the code that applies it.

pub mod apply;
pub mod overlay;
pub mod plan;

/// `p` with the symlinks in its longest existing prefix resolved and the
/// missing rest appended: where the host would put it if it were created
/// now (`None` when not even `/` resolves, or `p` is relative).
pub fn canonical_prefix(p: &std::path::Path) -> Option<std::path::PathBuf> {
    if let Ok(c) = std::fs::canonicalize(p) {
        return Some(c);
    }
    let mut rest = Vec::new();
    let mut cur = p;
    loop {
        let name = cur.file_name()?;
        rest.push(name.to_os_string());
        cur = cur.parent()?;
        if let Ok(mut c) = std::fs::canonicalize(cur) {
            for n in rest.iter().rev() {
                c.push(n);
            }
            return Some(c);
        }
    }
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
