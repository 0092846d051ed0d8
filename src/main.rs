fn main() -> std::process::ExitCode {
    sbox::cli::run()
}
