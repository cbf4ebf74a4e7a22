//! `gpu-host adapter`: operations on MoE-LoRA adapters.

use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum AdapterCommand {
    /// Write one expert (with the attention LoRA) as a plain PEFT LoRA adapter.
    ExportExpert(ExportArgs),
}

#[derive(Args)]
pub struct ExportArgs {
    /// MoE-LoRA adapter directory.
    #[arg(long)]
    adapter: PathBuf,
    /// Expert name (e.g. psychology) or index.
    #[arg(long)]
    expert: String,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(cmd: AdapterCommand) -> Result<()> {
    match cmd {
        AdapterCommand::ExportExpert(a) => {
            gpu_host::adapter::export_expert(&a.adapter, &a.expert, &a.out)?;
            println!("{}", a.out.display());
        }
    }
    Ok(())
}
