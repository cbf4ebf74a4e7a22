//! `gpu-host data`: `synth` writes the synthetic corpus, `prepare` turns
//! conversation JSONL into training shards.

use anyhow::Result;
use clap::{Args, Subcommand};
use gpu_host::data::prepare::{PrepareOptions, prepare};
use gpu_host::data::synth::write_synthetic;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum DataCommand {
    /// Validate, de-duplicate, split, template, mask and pack conversations.
    Prepare(PrepareArgs),
    /// Write a synthetic multi-domain therapy-dialogue corpus (marked synthetic).
    Synth(SynthArgs),
}

#[derive(Args)]
pub struct PrepareArgs {
    /// Conversation files (OpenAI chat or ShareGPT JSONL).
    #[arg(long, num_args = 1.., required = true)]
    input: Vec<PathBuf>,
    /// Output directory (shards and manifest.json).
    #[arg(long)]
    out: PathBuf,
    /// Checkpoint whose tokenizer and chat template to use.
    #[arg(long)]
    model: PathBuf,
    /// Longest packed sequence, in tokens.
    #[arg(long, default_value_t = 8192)]
    seq_len: usize,
    /// Fraction of conversations held out for validation.
    #[arg(long, default_value_t = 0.05)]
    val_fraction: f64,
    /// Sequences per shard file.
    #[arg(long, default_value_t = 1024)]
    shard_sequences: usize,
}

#[derive(Args)]
pub struct SynthArgs {
    /// JSONL file to write.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    conversations: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Synth(a) => {
            write_synthetic(&a.out, a.conversations, a.seed)?;
            println!("{}", a.out.display());
        }
        DataCommand::Prepare(a) => {
            let r = prepare(&PrepareOptions {
                inputs: a.input,
                out: a.out.clone(),
                model: a.model,
                seq_len: a.seq_len,
                val_fraction: a.val_fraction,
                shard_sequences: a.shard_sequences,
            })?;
            let m = &r.manifest;
            eprintln!(
                "{} records, {} duplicates removed, {} truncated to {} tokens; train {} documents in {} sequences ({} tokens, {} with loss); validation {} documents",
                r.records,
                r.duplicates,
                r.truncated,
                m.seq_len,
                m.train.documents,
                m.train.sequences,
                m.train.tokens,
                m.train.loss_tokens,
                m.validation.documents
            );
            println!("{}", a.out.display());
        }
    }
    Ok(())
}
