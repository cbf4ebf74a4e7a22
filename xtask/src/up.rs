//! `cargo xtask up`: the whole stack on one machine with embedded defaults.

use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct UpArgs {
    /// Address the edge listens on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
    /// Where the stack keeps its data (libsql file, models).
    #[arg(long, default_value = ".data")]
    data_dir: PathBuf,
}

pub fn run(root: &Path, args: UpArgs) -> Result<()> {
    crate::toolchain::ensure_wasm_target()?;
    crate::components::build_all(root)?;
    crate::run(crate::cargo().args(["build", "--release", "-p", "edge-host"]))?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let edge = root.join("target/release/edge-host");
    let mut cmd = std::process::Command::new(edge);
    cmd.args(["up", "--manifest", "spin.toml", "--listen", &args.listen, "--data-dir"])
        .arg(&args.data_dir);
    crate::run(&mut cmd)
}
