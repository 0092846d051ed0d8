//! Container images: names (`reference`), the local content-addressed
//! store (`store`), and what turns an image into the root of a sandbox.
//!
//! Store layout under DATA `images/` (see `store`): `blobs/sha256/<hex>`
//! (compressed layers, configs, manifests; shared between images),
//! `layers/<chain-hex>/` (the flattened read-only tree of an image's layer
//! chain, files shared between chains by hard links, owners and modes in
//! the override xattr), `images/<config-hex>.json` (one record per image),
//! `names.json` (name → image) and `staging/` (private, same filesystem).

pub mod commit;
pub mod error;
pub mod import;
pub mod reference;
pub mod registry;
pub mod run;
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
            registry::pull_missing(reference, &opts, store)
        }
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// `secs` as an RFC 3339 UTC time (`2026-12-01T06:30:00Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Seconds since the epoch of an RFC 3339 time (fractions and zone
/// offsets allowed), None when it is not one.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let off = match rest {
        "Z" | "z" => 0,
        r if r.len() == 6 && (r.starts_with('+') || r.starts_with('-')) => {
            let v = r[1..3].parse::<i64>().ok()? * 3600 + r[4..6].parse::<i64>().ok()? * 60;
            if r.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - off;
    u64::try_from(t).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_roundtrip() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_764_570_600), "2025-12-01T06:30:00Z");
        assert_eq!(
            super::parse_rfc3339("2025-12-01T06:30:00Z"),
            Some(1_764_570_600)
        );
        assert_eq!(
            super::parse_rfc3339("2025-12-01T07:30:00.123456789+01:00"),
            Some(1_764_570_600)
        );
        assert_eq!(super::parse_rfc3339("yesterday"), None);
    }
}
