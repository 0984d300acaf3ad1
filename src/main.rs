//! The `cec` binary: parse the command line and dispatch; nothing else lives here.

fn main() -> std::process::ExitCode {
    if let Some(code) = cec::cli::mount_helper::main_if_mount_helper() {
        return code;
    }
    cec::cli::main()
}
