//! Command-line interface: one module per subcommand. Logs go to stderr
//! (`RUST_LOG` filters them); stdout carries only results (generated text,
//! benchmark figures).

mod adapter;
mod bench;
mod bench_kernels;
mod data;
mod device;
mod generate;
mod init_model;
mod serve;
mod train;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gpu-host",
    version,
    about = "Llama-family inference, MoE-LoRA training and serving, on CUDA or the CPU reference",
    long_about = "Llama-family inference, mixture-of-LoRA-experts training and serving (llama, mistral, \
                  qwen2 checkpoints in Hugging Face layout), on a CUDA GPU or the CPU reference \
                  backend (--device auto|cpu|cuda[:N]).\n\nLogs go to stderr; set RUST_LOG=debug for more."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Command {
    /// Generate text from a prompt or a chat, streaming it to stdout.
    Generate(generate::GenerateArgs),
    /// Write a Hugging Face checkpoint with deterministic random weights
    /// and a tokenizer trained on the bundled corpus.
    InitModel(init_model::InitModelArgs),
    /// Serve the model over HTTP (OpenAI chat completions, Spin's
    /// remote_http /infer and /embed) with continuous batching.
    Serve(serve::ServeArgs),
    /// Measure throughput.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Training data: prepare conversation files, write the synthetic corpus.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Train a mixture-of-LoRA-experts adapter (or, with --full, the base).
    Train(train::TrainCommand),
    /// MoE-LoRA adapter tools.
    #[command(subcommand)]
    Adapter(adapter::AdapterCommand),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,gpu_host=info".into()),
        )
        .init();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::InitModel(args) => init_model::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Data(cmd) => data::run(cmd),
        Command::Train(cmd) => train::run(cmd),
        Command::Adapter(cmd) => adapter::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
