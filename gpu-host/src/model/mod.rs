//! The Llama-family decoder (llama, mistral, qwen2), written once against
//! the [`Backend`] trait. Reading [`Llama::forward_chunk`] tells the whole
//! architecture: embed → N × (RMSNorm → GQA attention with RoPE → residual
//! → RMSNorm → SwiGLU MLP → residual) → RMSNorm → lm_head.

pub mod adapter;
pub mod batch;
pub mod kv_cache;
pub mod paged_cache;
pub mod rope;
pub mod weights;

pub use batch::{BatchActivations, BatchOutput, BatchSeq, SeqOutput};
pub use kv_cache::KvCache;
pub use paged_cache::PagedKvCache;
pub use weights::{LayerWeights, ModelWeights};

use crate::backend::{AttentionShape, Backend, WeightDtype};
use crate::checkpoint::{Checkpoint, ModelConfig};
use anyhow::{Result, bail};
use std::path::Path;

/// How a model is loaded.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Matrix weight precision; `None` keeps the checkpoint's (bf16 stays
    /// bf16, f16/f32 become f32).
    pub dtype: Option<WeightDtype>,
    /// Longest sequence (prompt + generated) a cache can hold; `None`: the
    /// model's `max_position_embeddings`, at most 4096.
    pub max_seq: Option<usize>,
}

/// Which rows of logits a forward pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (scoring, tests).
    All,
}

pub struct Llama<B: Backend> {
    backend: B,
    config: ModelConfig,
    weights: ModelWeights<B::Weight>,
    weight_dtype: WeightDtype,
    rope_cos: B::Buffer,
    rope_sin: B::Buffer,
    max_seq: usize,
}

/// Scratch buffers for forward passes of up to `max_tokens` tokens at a
/// time. One per concurrent caller; reused across calls so that decoding
/// allocates nothing.
pub struct Activations<B: Backend> {
    max_tokens: usize,
    all_logits: bool,
    residual: B::Buffer,
    normed: B::Buffer,
    q: B::Buffer,
    k: B::Buffer,
    v: B::Buffer,
    attn: B::Buffer,
    proj: B::Buffer,
    gate: B::Buffer,
    up: B::Buffer,
    hidden: B::Buffer,
    last: B::Buffer,
    last_normed: B::Buffer,
    logits: B::Buffer,
}

impl<B: Backend> Llama<B> {
    /// Opens the checkpoint in `dir` and loads it onto `backend`.
    pub fn load(dir: &Path, backend: B, options: &LoadOptions) -> Result<Self> {
        let ckpt = Checkpoint::open(dir)?;
        Self::from_checkpoint(&ckpt, backend, options)
    }

    pub fn from_checkpoint(ckpt: &Checkpoint, backend: B, options: &LoadOptions) -> Result<Self> {
        let config = ckpt.config.clone();
        let weight_dtype = weights::resolve_dtype(ckpt, options.dtype);
        let weights = weights::load_weights(ckpt, &backend, weight_dtype)?;
        let max_seq = options
            .max_seq
            .unwrap_or(config.max_position_embeddings.min(4096));
        if max_seq == 0 {
            bail!("the maximum sequence length must be positive");
        }
        let (cos, sin) = rope::rope_tables(&config, max_seq);
        let rope_cos = backend.upload(&cos)?;
        let rope_sin = backend.upload(&sin)?;
        tracing::info!(
            model = %ckpt.dir.display(),
            arch = config.architecture.model_type(),
            params = config.num_parameters(),
            dtype = ?weight_dtype,
            backend = %backend.describe(),
            "model loaded"
        );
        Ok(Self {
            backend,
            config,
            weights,
            weight_dtype,
            rope_cos,
            rope_sin,
            max_seq,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn weight_dtype(&self) -> WeightDtype {
        self.weight_dtype
    }

    /// The longest sequence a cache of this model can hold.
    pub fn max_seq(&self) -> usize {
        self.max_seq
    }

    /// An empty KV cache holding up to [`Self::max_seq`] positions.
    pub fn new_cache(&self) -> Result<KvCache<B>> {
        let c = &self.config;
        KvCache::new(
            &self.backend,
            c.num_layers,
            c.num_kv_heads,
            c.head_dim,
            self.max_seq,
        )
    }

    /// Scratch for forward passes of up to `max_tokens` tokens per chunk.
    /// With `all_logits`, room for every row's logits (`max_tokens · vocab`).
    pub fn new_activations(&self, max_tokens: usize, all_logits: bool) -> Result<Activations<B>> {
        let c = &self.config;
        let t = max_tokens.max(1);
        let b = &self.backend;
        Ok(Activations {
            max_tokens: t,
            all_logits,
            residual: b.alloc(t * c.hidden_size)?,
            normed: b.alloc(t * c.hidden_size)?,
            q: b.alloc(t * c.q_dim())?,
            k: b.alloc(t * c.kv_dim())?,
            v: b.alloc(t * c.kv_dim())?,
            attn: b.alloc(t * c.q_dim())?,
            proj: b.alloc(t * c.hidden_size)?,
            gate: b.alloc(t * c.intermediate_size)?,
            up: b.alloc(t * c.intermediate_size)?,
            hidden: b.alloc(t * c.intermediate_size)?,
            last: b.alloc(c.hidden_size)?,
            last_normed: b.alloc(c.hidden_size)?,
            logits: b.alloc(if all_logits { t } else { 1 } * c.vocab_size)?,
        })
    }

    /// Runs `tokens` through the model at positions `cache.len()..`,
    /// appending their keys and values to `cache`, and writes logits to
    /// `logits` (`[1, vocab]` for [`Logits::Last`], `[tokens.len(), vocab]`
    /// for [`Logits::All`]). Prompts longer than the activations' chunk are
    /// processed chunk by chunk.
    pub fn forward(
        &self,
        act: &mut Activations<B>,
        cache: &mut KvCache<B>,
        tokens: &[u32],
        mode: Logits,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let vocab = self.config.vocab_size;
        if tokens.is_empty() {
            bail!("forward pass over no tokens");
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            bail!("token id {bad} is out of range for a vocabulary of {vocab}");
        }
        if cache.len() + tokens.len() > cache.capacity() {
            bail!(
                "sequence too long: {} cached + {} new tokens exceed the context of {}",
                cache.len(),
                tokens.len(),
                cache.capacity()
            );
        }
        if mode == Logits::All && !act.all_logits {
            bail!("these activations were created without room for all logits");
        }
        logits.clear();
        let rows_out = if mode == Logits::All { tokens.len() } else { 1 };
        logits.resize(rows_out * vocab, 0.0);
        let n_chunks = tokens.len().div_ceil(act.max_tokens);
        let mut row = 0;
        for (ci, chunk) in tokens.chunks(act.max_tokens).enumerate() {
            let n = chunk.len();
            let out = match mode {
                Logits::All => Some((Logits::All, &mut logits[row * vocab..(row + n) * vocab])),
                Logits::Last if ci + 1 == n_chunks => Some((Logits::Last, &mut logits[..vocab])),
                // Earlier chunks of a prompt only fill the cache.
                Logits::Last => None,
            };
            self.backend
                .enter(|| self.forward_chunk(act, cache, chunk, out))?;
            row += n;
        }
        Ok(())
    }

    /// One chunk of at most `act.max_tokens` tokens: the architecture.
    fn forward_chunk(
        &self,
        act: &mut Activations<B>,
        cache: &mut KvCache<B>,
        tokens: &[u32],
        logits: Option<(Logits, &mut [f32])>,
    ) -> Result<()> {
        let b = &self.backend;
        let cfg = &self.config;
        let (n, c) = (tokens.len(), cfg.hidden_size);
        let hd = cfg.head_dim;
        let pos0 = cache.len();
        let eps = cfg.rms_norm_eps;
        let shape = AttentionShape {
            n,
            pos0,
            n_heads: cfg.num_heads,
            n_kv_heads: cfg.num_kv_heads,
            head_dim: hd,
            max_seq: cache.capacity(),
            window: cfg.sliding_window,
        };
        let w = &self.weights;
        let a = act;

        let (rope_cos, rope_sin) = (&self.rope_cos, &self.rope_sin);
        self.decoder_layers(a, tokens, &[], |l, a| {
            b.rope_forward(&mut a.q, rope_cos, rope_sin, n, cfg.num_heads, hd, pos0)?;
            b.rope_forward(&mut a.k, rope_cos, rope_sin, n, cfg.num_kv_heads, hd, pos0)?;
            b.kv_cache_write(
                &mut cache.k[l],
                &mut cache.v[l],
                &a.k,
                &a.v,
                n,
                pos0,
                cfg.num_kv_heads,
                hd,
                shape.max_seq,
            )?;
            b.attention_forward(&mut a.attn, &a.q, &cache.k[l], &cache.v[l], shape)
        })?;
        cache.advance(n);

        let Some((mode, out)) = logits else {
            return Ok(());
        };
        let lm_head = w.lm_head.as_ref().unwrap_or(&w.embed_tokens);
        let vocab = cfg.vocab_size;
        match mode {
            Logits::All => {
                b.rmsnorm_forward(&mut a.normed, &a.residual, &w.norm, n, c, eps)?;
                b.matmul_forward(&mut a.logits, &a.normed, lm_head, None, n, c, vocab)?;
                b.download(&a.logits, 0, out)?;
            }
            Logits::Last => {
                b.copy(&mut a.last, 0, &a.residual, (n - 1) * c, c)?;
                b.rmsnorm_forward(&mut a.last_normed, &a.last, &w.norm, 1, c, eps)?;
                b.matmul_forward(&mut a.logits, &a.last_normed, lm_head, None, 1, c, vocab)?;
                b.download(&a.logits, 0, out)?;
            }
        }
        Ok(())
    }
}

impl<B: Backend> Llama<B> {
    /// Embeds `tokens` into `a.residual` and runs every decoder layer over
    /// them. `attend(layer, a)` is the only part that depends on how keys
    /// and values are cached: it rotates `a.q`/`a.k`, stores `a.k`/`a.v` and
    /// writes the attention output to `a.attn`.
    ///
    /// Rows in `spans` are served with a MoE-LoRA adapter ([`adapter`]).
    pub(crate) fn decoder_layers(
        &self,
        a: &mut Activations<B>,
        tokens: &[u32],
        spans: &[adapter::AdapterSpan],
        mut attend: impl FnMut(usize, &mut Activations<B>) -> Result<()>,
    ) -> Result<()> {
        let b = &self.backend;
        let cfg = &self.config;
        let (n, c, f) = (tokens.len(), cfg.hidden_size, cfg.intermediate_size);
        let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
        let eps = cfg.rms_norm_eps;
        let w = &self.weights;
        b.embedding_forward(&mut a.residual, tokens, &w.embed_tokens, c)?;
        for (l, lw) in w.layers.iter().enumerate() {
            // Attention block.
            b.rmsnorm_forward(&mut a.normed, &a.residual, &lw.input_layernorm, n, c, eps)?;
            b.matmul_forward(
                &mut a.q,
                &a.normed,
                &lw.q_proj,
                lw.q_bias.as_ref(),
                n,
                c,
                qd,
            )?;
            b.matmul_forward(
                &mut a.k,
                &a.normed,
                &lw.k_proj,
                lw.k_bias.as_ref(),
                n,
                c,
                kvd,
            )?;
            b.matmul_forward(
                &mut a.v,
                &a.normed,
                &lw.v_proj,
                lw.v_bias.as_ref(),
                n,
                c,
                kvd,
            )?;
            for s in spans {
                adapter::attention_lora(b, s, l, 0, &a.normed, c, &mut a.q, qd)?;
                adapter::attention_lora(b, s, l, 1, &a.normed, c, &mut a.k, kvd)?;
                adapter::attention_lora(b, s, l, 2, &a.normed, c, &mut a.v, kvd)?;
            }
            attend(l, a)?;
            b.matmul_forward(
                &mut a.proj,
                &a.attn,
                &lw.o_proj,
                lw.o_bias.as_ref(),
                n,
                qd,
                c,
            )?;
            for s in spans {
                adapter::attention_lora(b, s, l, 3, &a.attn, qd, &mut a.proj, c)?;
            }
            b.residual_forward(&mut a.residual, &a.proj, n * c)?;
            // MLP block.
            b.rmsnorm_forward(
                &mut a.normed,
                &a.residual,
                &lw.post_attention_layernorm,
                n,
                c,
                eps,
            )?;
            b.matmul_forward(
                &mut a.gate,
                &a.normed,
                &lw.gate_proj,
                lw.gate_bias.as_ref(),
                n,
                c,
                f,
            )?;
            b.matmul_forward(
                &mut a.up,
                &a.normed,
                &lw.up_proj,
                lw.up_bias.as_ref(),
                n,
                c,
                f,
            )?;
            b.swiglu_forward(&mut a.hidden, &a.gate, &a.up, n * f)?;
            let mut expert_down = Vec::with_capacity(spans.len());
            for s in spans {
                expert_down.push(adapter::moe_mlp(
                    b,
                    s,
                    l,
                    &a.normed,
                    &a.gate,
                    &a.up,
                    &mut a.hidden,
                    c,
                    f,
                )?);
            }
            b.matmul_forward(
                &mut a.proj,
                &a.hidden,
                &lw.down_proj,
                lw.down_bias.as_ref(),
                n,
                f,
                c,
            )?;
            for (s, d) in spans.iter().zip(&expert_down) {
                adapter::add_rows(b, &mut a.proj, s, c, d)?;
            }
            b.residual_forward(&mut a.residual, &a.proj, n * c)?;
        }
        Ok(())
    }

    pub(crate) fn rope_tables(&self) -> (&B::Buffer, &B::Buffer) {
        (&self.rope_cos, &self.rope_sin)
    }

    pub(crate) fn weights(&self) -> &ModelWeights<B::Weight> {
        &self.weights
    }
}

impl<B: Backend> Activations<B> {
    /// The most tokens one forward chunk takes.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }
}
