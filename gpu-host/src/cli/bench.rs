//! `gpu-host bench ...`: throughput measurements. `forward` now; serving,
//! training and kernel benchmarks come with their issues.

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use gpu_host::backend::WeightDtype;
use gpu_host::backend::cpu::CpuBackend;
use gpu_host::bench::{ForwardBenchParams, bench_forward};
use gpu_host::model::{Llama, LoadOptions};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, ValueEnum)]
pub enum DtypeChoice {
    /// The checkpoint's own (bf16 stays bf16; f16 and f32 become f32).
    Auto,
    F32,
    Bf16,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Prefill and decode tokens/s of one sequence on the CPU backend.
    Forward(ForwardArgs),
    /// Per-kernel time and fraction of the device's ceiling (CUDA).
    Kernels(super::bench_kernels::KernelsArgs),
}

#[derive(Args)]
pub struct ForwardArgs {
    /// Checkpoint directory.
    #[arg(long)]
    model: PathBuf,
    /// CPU threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens decoded one at a time after the prompt.
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Timed repetitions after one warm-up (the best is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Weight precision in memory.
    #[arg(long, value_enum, default_value = "auto")]
    dtype: DtypeChoice,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Forward(args) => forward(args),
        BenchCommand::Kernels(args) => super::bench_kernels::run(args),
    }
}

fn forward(args: ForwardArgs) -> Result<()> {
    let model = load_model(&args.model, args.threads, args.dtype, None)?;
    let params = ForwardBenchParams { prompt_tokens: args.prompt_tokens, decode_tokens: args.decode_tokens, repeats: args.repeats };
    let bar = indicatif::ProgressBar::new(args.repeats as u64 + 1)
        .with_style(indicatif::ProgressStyle::with_template("benchmarking {bar:30} {pos}/{len} rounds").expect("valid template"));
    let r = bench_forward(&model, &params, || bar.inc(1))?;
    bar.finish_and_clear();
    println!(
        "backend: {}\nweights: {:?}, {} parameters\nprefill: {:.1} tokens/s ({} tokens)\ndecode:  {:.1} tokens/s ({} tokens)",
        gpu_host::backend::Backend::describe(model.backend()),
        model.weight_dtype(),
        model.config().num_parameters(),
        r.prefill_tokens_per_s,
        args.prompt_tokens,
        r.decode_tokens_per_s,
        args.decode_tokens
    );
    Ok(())
}

pub fn load_model(dir: &Path, threads: usize, dtype: DtypeChoice, max_seq: Option<usize>) -> Result<Llama<CpuBackend>> {
    let backend = CpuBackend::new(threads)?;
    let options = LoadOptions {
        dtype: match dtype {
            DtypeChoice::Auto => None,
            DtypeChoice::F32 => Some(WeightDtype::F32),
            DtypeChoice::Bf16 => Some(WeightDtype::Bf16),
        },
        max_seq,
    };
    Llama::load(dir, backend, &options)
}
