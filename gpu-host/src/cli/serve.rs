//! `gpu-host serve`: the inference server. See `gpu-host serve --help`.

use super::device::{DeviceArgs, load_model, with_model};
use anyhow::{Context, Result};
use clap::Args;
use gpu_host::serve::{Loaded, ServeOptions};
use gpu_host::tokenizer::TextTokenizer;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Args)]
#[command(after_help = "Endpoints:\n  \
    POST /v1/chat/completions   OpenAI chat completions (stream: true for server-sent events)\n  \
    GET  /v1/models             the served model\n  \
    POST /infer, POST /embed    Spin's remote_http LLM protocol (embeddings: mean-pooled final hidden states, L2-normalised)\n  \
    GET/POST /v1/adapters, DELETE /v1/adapters/NAME   MoE-LoRA adapters by name (`model` selects one)\n  \
    GET  /health                liveness (no auth)\n  \
    GET  /metrics               Prometheus text")]
pub struct ServeArgs {
    /// Checkpoint directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// A name clients may pass as `model` (repeatable: aliases, e.g. the
    /// model names Spin apps are granted; default: the directory's name).
    #[arg(long = "served-model-name", value_name = "NAME")]
    served_model_names: Vec<String>,
    /// A MoE-LoRA adapter to serve as model NAME (repeatable; more can be
    /// loaded at run time with POST /v1/adapters).
    #[arg(long = "adapter", value_name = "NAME=DIR", value_parser = parse_adapter)]
    adapters: Vec<(String, PathBuf)>,
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// A file holding the bearer token every request but /health must carry.
    #[arg(long, value_name = "FILE")]
    auth_token_file: Option<PathBuf>,
    /// Memory for the paged KV cache, in MiB (it bounds how many tokens all
    /// running requests hold together).
    #[arg(long, default_value_t = 512)]
    kv_cache_mb: usize,
    /// Requests waiting to start beyond this are refused with 429.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Most sequences in the running batch.
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// Most tokens per forward step (prompt chunks share it with decodes).
    #[arg(long, default_value_t = 512)]
    max_batch_tokens: usize,
    /// Positions per KV cache block.
    #[arg(long, default_value_t = 16)]
    block_size: usize,
    /// Longest prompt + reply in tokens (at most the model's own).
    #[arg(long, default_value_t = 8192)]
    context: usize,
    /// Largest request body accepted (bytes).
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    max_body_bytes: usize,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let auth_token = match &args.auth_token_file {
        Some(path) => {
            let t = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --auth-token-file {}", path.display()))?;
            let t = t.trim().to_string();
            anyhow::ensure!(
                !t.is_empty(),
                "--auth-token-file {} is empty",
                path.display()
            );
            Some(t)
        }
        None => None,
    };
    let opts = ServeOptions {
        model_dir: args.model.clone(),
        model_ids: args.served_model_names,
        listen: args.listen,
        auth_token,
        kv_cache_mb: args.kv_cache_mb,
        max_queue: args.max_queue,
        max_batch_seqs: args.max_batch,
        max_batch_tokens: args.max_batch_tokens,
        block_size: args.block_size,
        context_len: args.context,
        max_body_bytes: args.max_body_bytes,
        adapters: args.adapters,
    };
    let tokenizer = TextTokenizer::from_dir(&args.model)?;
    let model = load_model(&args.model, args.device, Some(args.context))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = with_model!(model, |model| gpu_host::serve::start(
            &opts,
            Loaded { model, tokenizer }
        )
        .await?);
        // The line tests and scripts wait for (stdout carries only this).
        println!("gpu-host listening on http://{}", server.addr);
        tokio::signal::ctrl_c().await.ok();
        tracing::info!("shutting down");
        Ok(())
    })
}

fn parse_adapter(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, dir)) if !name.is_empty() && !dir.is_empty() => {
            Ok((name.to_string(), PathBuf::from(dir)))
        }
        _ => Err(format!("`{s}` is not NAME=DIR")),
    }
}
