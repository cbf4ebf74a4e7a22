//! `gpu-host serve`: an HTTP inference server speaking OpenAI's chat API and
//! Spin's `remote_http` LLM protocol, over an engine that batches requests
//! continuously on a paged KV cache.
//!
//! - [`api`]: request parsing and validation, OpenAI error shapes
//! - [`http`]: routing, auth, streaming
//! - [`engine`]: the scheduler thread (continuous batching, preemption,
//!   cancellation)
//! - [`blocks`]: KV block allocation and prefix reuse
//! - [`metrics`]: Prometheus text
//! - [`bench`]: the load generator behind `gpu-host bench serve`

pub mod api;
pub mod bench;
pub mod blocks;
pub mod engine;
pub mod http;
pub mod metrics;

use crate::backend::Backend;
use crate::checkpoint::GenerationDefaults;
use crate::generate::GenerateParams;
use crate::model::{Llama, PagedKvCache};
use crate::tokenizer::TextTokenizer;
use anyhow::{Context, Result, bail};
use engine::EngineConfig;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// How a server runs (the CLI's flags).
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub model_dir: PathBuf,
    /// The names clients may use in `model` (aliases of one model, e.g. the
    /// names Spin apps grant); default: the directory's name.
    pub model_ids: Vec<String>,
    pub listen: SocketAddr,
    pub auth_token: Option<String>,
    pub kv_cache_mb: usize,
    pub max_queue: usize,
    pub max_batch_seqs: usize,
    pub max_batch_tokens: usize,
    pub block_size: usize,
    pub context_len: usize,
    pub max_body_bytes: usize,
    /// Adapters loaded at start: (name, directory).
    pub adapters: Vec<(String, PathBuf)>,
}

/// A model loaded for serving: what [`start`] needs besides the options.
pub struct Loaded<B: Backend> {
    pub model: Llama<B>,
    pub tokenizer: TextTokenizer,
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<http::AppState>,
}

/// Sizes the engine from the options and the model.
pub fn engine_config(
    opts: &ServeOptions,
    config: &crate::checkpoint::ModelConfig,
    model_id: &str,
) -> Result<EngineConfig> {
    if opts.block_size == 0 || opts.max_batch_seqs == 0 || opts.max_batch_tokens == 0 {
        bail!("--block-size, --max-batch and --max-batch-tokens must be positive");
    }
    let per_block =
        PagedKvCache::<crate::backend::cpu::CpuBackend>::bytes_per_block(config, opts.block_size);
    let num_blocks = opts.kv_cache_mb * 1024 * 1024 / per_block;
    if num_blocks == 0 {
        bail!(
            "--kv-cache-mb {} holds no block of {} positions ({} bytes each)",
            opts.kv_cache_mb,
            opts.block_size,
            per_block
        );
    }
    let mut salt = std::collections::hash_map::DefaultHasher::new();
    model_id.hash(&mut salt);
    Ok(EngineConfig {
        max_batch_seqs: opts.max_batch_seqs,
        max_batch_tokens: opts.max_batch_tokens.max(opts.max_batch_seqs),
        block_size: opts.block_size,
        num_blocks,
        context_len: opts.context_len.min(config.max_position_embeddings),
        max_queue: opts.max_queue,
        cache_salt: salt.finish(),
    })
}

/// Starts the engine thread and the HTTP listener; returns once listening.
pub async fn start<B: Backend>(opts: &ServeOptions, loaded: Loaded<B>) -> Result<Server> {
    let model_ids = if opts.model_ids.is_empty() {
        vec![
            opts.model_dir
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "model".into()),
        ]
    } else {
        opts.model_ids.clone()
    };
    let model_id = model_ids[0].clone();
    let config = engine_config(opts, loaded.model.config(), &model_id)?;
    let defaults =
        GenerationDefaults::from_file_if_present(&opts.model_dir.join("generation_config.json"))?;
    let tokenizer = Arc::new(loaded.tokenizer);
    let params =
        GenerateParams::from_defaults(&defaults, &loaded.model.config().eos_token_ids, &tokenizer);
    let metrics = Arc::new(metrics::Metrics::default());
    tracing::info!(
        model = %model_id,
        kv_blocks = config.num_blocks,
        block_size = config.block_size,
        context = config.context_len,
        max_batch = config.max_batch_seqs,
        "starting the engine"
    );
    let model_config = loaded.model.config().clone();
    let engine = engine::start(loaded.model, tokenizer.clone(), config, metrics.clone())?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(http::AppState {
        engine,
        tokenizer,
        model_ids,
        defaults: params,
        auth_token: opts.auth_token.clone(),
        metrics,
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        max_body_bytes: opts.max_body_bytes,
        adapters: Default::default(),
        model_config,
    });
    for (name, dir) in &opts.adapters {
        state
            .load_adapter(name, dir)
            .map_err(|e| anyhow::anyhow!("--adapter {name}={}: {}", dir.display(), e.message))?;
    }
    let accept_state = state.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let state = accept_state.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req| http::handle(state.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(Server { addr, state })
}
