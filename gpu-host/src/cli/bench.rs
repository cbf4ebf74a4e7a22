//! `gpu-host bench ...`: throughput measurements: the forward pass,
//! kernels, a running server, and MoE-LoRA training steps.

use super::device::{DeviceArgs, load_model, with_model};
use anyhow::Result;
use clap::{Args, Subcommand};
use gpu_host::bench::{ForwardBenchParams, bench_forward};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Prefill and decode tokens/s of one sequence on the CPU backend.
    Forward(ForwardArgs),
    /// Per-kernel time and fraction of the device's ceiling (CUDA).
    Kernels(super::bench_kernels::KernelsArgs),
    /// Load-test a running chat server (ours or any OpenAI-compatible one):
    /// latency percentiles, time to first token, throughput, errors and the
    /// P95 < 2 s SLA.
    Serve(ServeBenchArgs),
    /// MoE-LoRA training steps on random sequences: tokens/s and model
    /// FLOPs utilisation (on CUDA, of the device's dense bf16 peak).
    Train(TrainBenchArgs),
}

#[derive(Args)]
pub struct TrainBenchArgs {
    /// Checkpoint directory (e.g. `gpu-host init-model --preset 1b`).
    #[arg(long)]
    model: PathBuf,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Precision of the frozen base on the GPU: bf16 or f32.
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 2048)]
    seq_len: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 1)]
    micro_batch: usize,
    /// Timed steps after one warm-up.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Recompute activations in the backward pass.
    #[arg(long)]
    checkpointing: bool,
    /// Also print where a step's time goes, phase by phase (GPU:
    /// synchronising after each phase, in extra steps).
    #[arg(long)]
    profile: bool,
    /// CPU threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Also write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct ServeBenchArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8090")]
    url: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Requests in total.
    #[arg(long, default_value_t = 64)]
    requests: usize,
    /// Conversations to send: JSONL of `{"messages": [...]}` (or plain
    /// lines, one user turn each). Default: built-in therapy-style turns.
    #[arg(long, value_name = "FILE")]
    prompts: Option<PathBuf>,
    /// Tokens to generate per request.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Generate exactly --max-tokens (sends `ignore_eos`; our server only).
    #[arg(long)]
    fixed_length: bool,
    /// The `model` to ask for (default: the first of /v1/models).
    #[arg(long)]
    model: Option<String>,
    /// A file holding the server's bearer token.
    #[arg(long, value_name = "FILE")]
    auth_token_file: Option<PathBuf>,
    /// Also write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct ForwardArgs {
    /// Checkpoint directory.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens decoded one at a time after the prompt.
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Timed repetitions after one warm-up (the best is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Forward(args) => forward(args),
        BenchCommand::Kernels(args) => super::bench_kernels::run(args),
        BenchCommand::Serve(args) => serve(args),
        BenchCommand::Train(args) => train(args),
    }
}

fn train(args: TrainBenchArgs) -> Result<()> {
    use gpu_host::train::bench::{TrainBenchParams, bench_train};
    let params = TrainBenchParams {
        model: args.model,
        device: args.device,
        dtype: args.dtype,
        seq_len: args.seq_len,
        micro_batch: args.micro_batch,
        steps: args.steps,
        checkpointing: args.checkpointing,
        profile: args.profile,
        moe: Default::default(),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()?;
    let report = pool.install(|| bench_train(&params))?;
    println!("{}", report.table());
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

fn serve(args: ServeBenchArgs) -> Result<()> {
    use gpu_host::serve::bench::{BenchServeParams, default_prompts, read_prompts, run};
    let token = match &args.auth_token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("cannot read --auth-token-file {}: {e}", f.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let prompts = match &args.prompts {
        Some(p) => read_prompts(p)?,
        None => default_prompts(),
    };
    let params = BenchServeParams {
        url: args.url.trim_end_matches('/').to_string(),
        model: args.model,
        token,
        concurrency: args.concurrency,
        requests: args.requests,
        max_tokens: args.max_tokens,
        prompts,
        fixed_length: args.fixed_length,
    };
    let bar = indicatif::ProgressBar::new(args.requests as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} requests {elapsed}")
            .expect("valid template"),
    );
    let b = bar.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(params, move || b.inc(1)))?;
    bar.finish_and_clear();
    println!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

fn forward(args: ForwardArgs) -> Result<()> {
    let model = load_model(&args.model, args.device, None)?;
    let params = ForwardBenchParams {
        prompt_tokens: args.prompt_tokens,
        decode_tokens: args.decode_tokens,
        repeats: args.repeats,
    };
    let bar = indicatif::ProgressBar::new(args.repeats as u64 + 1).with_style(
        indicatif::ProgressStyle::with_template("benchmarking {bar:30} {pos}/{len} rounds")
            .expect("valid template"),
    );
    with_model!(model, |model| {
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
    });
    Ok(())
}
