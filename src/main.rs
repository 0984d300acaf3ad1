//! The `cec` binary: parse the command line and dispatch; nothing else lives here.

fn main() -> std::process::ExitCode {
    cec::cli::main()
}
