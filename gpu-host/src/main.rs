//! The `gpu-host` command line; see `gpu-host --help`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
