//! The `ship` binary: everything lives in [`ship::cli`]; this only hands over the exit code.

fn main() -> std::process::ExitCode {
    ship::cli::main()
}
