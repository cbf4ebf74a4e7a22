//! `gpu-host init-model`.

use anyhow::Result;
use clap::{Args, ValueEnum};
use gpu_host::init_model::{InitSpec, Preset, write_checkpoint};
use std::path::PathBuf;

#[derive(Clone, Copy, ValueEnum)]
pub enum ArchArg {
    Llama,
    Qwen2,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DtypeArg {
    F32,
    Bf16,
}

#[derive(Args)]
pub struct InitModelArgs {
    /// Size: tiny (≈1.8 M parameters, for tests), small (≈25 M, for benchmarks), or demo
    /// (small, pretrained on the synthetic corpus plus a MoE-LoRA adapter; minutes on 2 cores).
    #[arg(long, value_enum)]
    preset: Preset,
    /// Directory to write (created if missing; files in it are overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Architecture: llama, or qwen2 (q/k/v biases, tied embeddings by default).
    #[arg(long, value_enum, default_value = "llama")]
    arch: ArchArg,
    /// Seed of the random weights: the same seed writes the same bytes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Tie the lm_head to the embeddings (default: no for llama, yes for qwen2).
    #[arg(long)]
    tie_embeddings: Option<bool>,
    /// Add Llama 3 rope_scaling to the config (llama only).
    #[arg(long)]
    llama3_rope_scaling: bool,
    /// Precision of the stored weights.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DtypeArg,
}

pub fn run(args: InitModelArgs) -> Result<()> {
    let spec = InitSpec {
        preset: args.preset,
        arch: match args.arch {
            ArchArg::Llama => "llama",
            ArchArg::Qwen2 => "qwen2",
        }
        .into(),
        seed: args.seed,
        tie_embeddings: args.tie_embeddings,
        llama3_rope_scaling: args.llama3_rope_scaling,
        dtype: match args.dtype {
            DtypeArg::F32 => "f32",
            DtypeArg::Bf16 => "bf16",
        }
        .into(),
    };
    let spinner = indicatif::ProgressBar::new_spinner()
        .with_message("training the tokenizer and writing weights");
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    write_checkpoint(&spec, &args.out)?;
    spinner.finish_and_clear();
    tracing::info!(out = %args.out.display(), ?spec, "checkpoint written");
    println!("{}", args.out.display());
    Ok(())
}
