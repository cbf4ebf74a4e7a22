//! Project tasks, run as `cargo xtask <task>`.
//!
//! `up` brings the whole stack up on embedded defaults; `test` runs every
//! test. Both install what they need (the wasm32-wasip2 target, Python
//! wheels for the kernel checks) so that a fresh machine needs nothing else.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

mod bench;
mod components;
mod toolchain;
mod truncate_bench;
mod up;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test the therapeutic-AI stack")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build everything needed and bring the stack up on 127.0.0.1 with
    /// embedded defaults (local libsql file under the data dir).
    Up(up::UpArgs),
    /// Run all tests: builds the wasm components from source, then runs the
    /// workspace's test suites (unit, integration and end-to-end).
    Test {
        /// Extra arguments passed to `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cargo_args: Vec<String>,
    },
    /// Build the wasm components (wasm32-wasip2, release) and print their paths.
    BuildComponents,
    /// Load benchmarks on loopback (`cargo xtask bench edge`).
    #[command(subcommand)]
    Bench(bench::BenchTarget),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match cli.task {
        Task::Up(args) => up::run(&root, args),
        Task::Test { cargo_args } => test(&root, &cargo_args),
        Task::Bench(target) => bench::run(&root, target),
        Task::BuildComponents => {
            toolchain::ensure_wasm_target()?;
            for wasm in components::build_all(&root)? {
                println!("{}", wasm.display());
            }
            Ok(())
        }
    }
}

fn test(root: &Path, cargo_args: &[String]) -> Result<()> {
    toolchain::ensure_wasm_target()?;
    toolchain::ensure_test_tools(root)?;
    components::build_all(root)?;
    let mut cmd = cargo();
    cmd.arg("test").args(cargo_args);
    run(&mut cmd)
}

/// The workspace root: xtask lives one level below it.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Runs a command to completion, failing with its command line if it fails.
fn run(cmd: &mut Command) -> Result<()> {
    let status: ExitStatus = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
