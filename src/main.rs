#![deny(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

fn main() -> std::process::ExitCode {
    // The id-map keeper re-executes sbox under this name (see keeper.rs).
    let mut args = std::env::args_os();
    if args.next().is_some_and(|a| a == sbox::keeper::ARGV0) {
        if let Some(rec) = args.next() {
            sbox::keeper::keep(std::path::Path::new(&rec))
        }
    }
    sbox::cli::run()
}
