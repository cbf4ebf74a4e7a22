//! `gpu-host adapter`: operations on MoE-LoRA adapters.

use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum AdapterCommand {
    /// Write one expert (with the attention LoRA) as a plain PEFT LoRA adapter.
    ExportExpert(ExportArgs),
    /// Print the logits of a base model with an adapter (MoE-LoRA or plain
    /// PEFT LoRA) as JSON, for comparisons with PEFT.
    Logits(LogitsArgs),
}

#[derive(Args)]
pub struct LogitsArgs {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    adapter: PathBuf,
    /// Comma-separated token ids.
    #[arg(long, value_delimiter = ',', required = true)]
    tokens: Vec<u32>,
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
        AdapterCommand::Logits(a) => {
            let logits = gpu_host::adapter::adapter_logits(&a.model, &a.adapter, &a.tokens)?;
            println!(
                "{}",
                serde_json::json!({ "tokens": a.tokens, "logits": logits })
            );
        }
    }
    Ok(())
}
