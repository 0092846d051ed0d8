//! The lines of `--verbose`, timed from sbox's start.

static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Note when sbox started, for the timestamps of --verbose.
pub fn mark_start() {
    START.get_or_init(std::time::Instant::now);
}

/// One --verbose line: `sbox: [ROLE +MS] message`.
pub fn say(role: &str, msg: &str) {
    let ms = START
        .get()
        .map_or(0.0, |s| s.elapsed().as_secs_f64() * 1000.0);
    eprintln!("sbox: [{role} +{ms:.1}ms] {msg}");
}
