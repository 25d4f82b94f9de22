fn main() -> std::process::ExitCode {
    probehost::cli::main()
}
