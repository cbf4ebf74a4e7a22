//! One forward step over a batch of sequences that share a paged KV cache:
//! the serving engine's continuous batching. Rows of all sequences go
//! through the matrix products together; only RoPE (each row at its own
//! position), the cache write and attention look at which sequence a row
//! belongs to.

use super::{Activations, Llama, PagedKvCache};
use crate::backend::{Backend, PagedSeq};
use anyhow::{Result, bail};

/// What a sequence wants back from a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqOutput {
    /// Nothing (a prompt chunk that is not the last one).
    None,
    /// The logits of its last row (it samples a token next).
    LastLogits,
    /// The sum of its rows' final-normed hidden states (embeddings).
    HiddenSum,
}

/// One sequence's part of a step.
#[derive(Clone, Copy, Debug)]
pub struct BatchSeq<'a> {
    /// New tokens, at positions `pos0..pos0 + tokens.len()`.
    pub tokens: &'a [u32],
    pub pos0: usize,
    /// Pool blocks covering positions `0..pos0 + tokens.len()`.
    pub blocks: &'a [u32],
    pub output: SeqOutput,
    /// The MoE-LoRA adapter this sequence is served with, if any.
    pub adapter: Option<&'a crate::adapter::MoeLoraAdapter>,
}

/// Results of a step, in the order of the sequences that asked for them.
#[derive(Default)]
pub struct BatchOutput {
    /// `[k, vocab]`: one row per [`SeqOutput::LastLogits`] sequence.
    pub logits: Vec<f32>,
    /// `[k, hidden]`: one row per [`SeqOutput::HiddenSum`] sequence.
    pub hidden_sums: Vec<f32>,
}

/// Scratch for batched steps of up to `max_tokens` rows and `max_seqs`
/// sequences.
pub struct BatchActivations<B: Backend> {
    act: Activations<B>,
    max_seqs: usize,
    rows: B::Buffer,
    rows_normed: B::Buffer,
    logits: B::Buffer,
    host_rows: Vec<f32>,
}

impl<B: Backend> BatchActivations<B> {
    pub fn max_tokens(&self) -> usize {
        self.act.max_tokens
    }

    pub fn max_seqs(&self) -> usize {
        self.max_seqs
    }
}

impl<B: Backend> Llama<B> {
    /// A paged KV cache of `num_blocks` blocks of `block_size` positions.
    pub fn new_paged_cache(&self, block_size: usize, num_blocks: usize) -> Result<PagedKvCache<B>> {
        PagedKvCache::new(&self.backend, &self.config, block_size, num_blocks)
    }

    pub fn new_batch_activations(
        &self,
        max_tokens: usize,
        max_seqs: usize,
    ) -> Result<BatchActivations<B>> {
        let c = &self.config;
        let s = max_seqs.max(1);
        let b = &self.backend;
        Ok(BatchActivations {
            act: self.new_activations(max_tokens, false)?,
            max_seqs: s,
            rows: b.alloc(s * c.hidden_size)?,
            rows_normed: b.alloc(s * c.hidden_size)?,
            logits: b.alloc(s * c.vocab_size)?,
            host_rows: Vec::new(),
        })
    }

    /// Runs one step: every sequence's new tokens through the model, their
    /// keys and values into `cache` at the slots their block tables name.
    pub fn forward_batch(
        &self,
        ba: &mut BatchActivations<B>,
        cache: &mut PagedKvCache<B>,
        seqs: &[BatchSeq],
        out: &mut BatchOutput,
    ) -> Result<()> {
        let cfg = &self.config;
        let vocab = cfg.vocab_size;
        let bs = cache.block_size();
        let n: usize = seqs.iter().map(|s| s.tokens.len()).sum();
        if n == 0 {
            bail!("a batch step over no tokens");
        }
        if n > ba.act.max_tokens {
            bail!(
                "a batch step of {n} tokens exceeds the activations' {}",
                ba.act.max_tokens
            );
        }
        let want_logits = seqs
            .iter()
            .filter(|s| s.output == SeqOutput::LastLogits)
            .count();
        if want_logits > ba.max_seqs {
            bail!(
                "{want_logits} sequences want logits; the activations hold {}",
                ba.max_seqs
            );
        }
        // Flatten tokens, positions and cache slots; check everything the
        // ops would otherwise assert on.
        let mut tokens = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        let mut slots = Vec::with_capacity(n);
        let mut paged = Vec::with_capacity(seqs.len());
        for s in seqs {
            let end = s.pos0 + s.tokens.len();
            if s.tokens.is_empty() {
                bail!("a sequence in the batch has no new tokens");
            }
            if end > self.max_seq {
                bail!(
                    "position {end} exceeds the model's context of {}",
                    self.max_seq
                );
            }
            if s.blocks.len() * bs < end {
                bail!(
                    "block table covers {} positions, {end} needed",
                    s.blocks.len() * bs
                );
            }
            if let Some(&b) = s.blocks.iter().find(|&&b| b as usize >= cache.num_blocks()) {
                bail!(
                    "block {b} is outside the cache of {} blocks",
                    cache.num_blocks()
                );
            }
            if let Some(&bad) = s.tokens.iter().find(|&&t| t as usize >= vocab) {
                bail!("token id {bad} is out of range for a vocabulary of {vocab}");
            }
            if let Some(a) = s.adapter
                && a.layers.len() != cfg.num_layers
            {
                bail!(
                    "the adapter has {} layers; the model has {}",
                    a.layers.len(),
                    cfg.num_layers
                );
            }
            paged.push(PagedSeq {
                row0: tokens.len(),
                n: s.tokens.len(),
                pos0: s.pos0,
                blocks: s.blocks,
            });
            for (i, &t) in s.tokens.iter().enumerate() {
                let p = s.pos0 + i;
                tokens.push(t);
                positions.push(p as u32);
                slots.push(s.blocks[p / bs] * bs as u32 + (p % bs) as u32);
            }
        }
        self.backend
            .enter(|| self.batch_step(ba, cache, &tokens, &positions, &slots, &paged, seqs, out))
    }

    #[allow(clippy::too_many_arguments)]
    fn batch_step(
        &self,
        ba: &mut BatchActivations<B>,
        cache: &mut PagedKvCache<B>,
        tokens: &[u32],
        positions: &[u32],
        slots: &[u32],
        paged: &[PagedSeq],
        seqs: &[BatchSeq],
        out: &mut BatchOutput,
    ) -> Result<()> {
        let b = &self.backend;
        let cfg = &self.config;
        let (n, c, vocab, hd) = (tokens.len(), cfg.hidden_size, cfg.vocab_size, cfg.head_dim);
        let eps = cfg.rms_norm_eps;
        let shape = cache.shape();
        let (cos, sin) = self.rope_tables();
        let spans: Vec<super::adapter::AdapterSpan> = seqs
            .iter()
            .zip(paged)
            .filter_map(|(s, p)| {
                s.adapter.map(|adapter| super::adapter::AdapterSpan {
                    row0: p.row0,
                    n: p.n,
                    adapter,
                })
            })
            .collect();
        self.decoder_layers(&mut ba.act, tokens, &spans, |l, a| {
            b.rope_forward_positions(&mut a.q, cos, sin, positions, cfg.num_heads, hd)?;
            b.rope_forward_positions(&mut a.k, cos, sin, positions, cfg.num_kv_heads, hd)?;
            b.paged_kv_write(&mut cache.k[l], &mut cache.v[l], &a.k, &a.v, slots, shape)?;
            b.paged_attention_forward(&mut a.attn, &a.q, &cache.k[l], &cache.v[l], paged, shape)
        })?;

        let w = self.weights();
        out.logits.clear();
        out.hidden_sums.clear();
        // Last rows of the sequences that sample next → logits.
        let mut k = 0;
        for (s, p) in seqs.iter().zip(paged) {
            if s.output == SeqOutput::LastLogits {
                b.copy(
                    &mut ba.rows,
                    k * c,
                    &ba.act.residual,
                    (p.row0 + p.n - 1) * c,
                    c,
                )?;
                k += 1;
            }
        }
        if k > 0 {
            let lm_head = w.lm_head.as_ref().unwrap_or(&w.embed_tokens);
            b.rmsnorm_forward(&mut ba.rows_normed, &ba.rows, &w.norm, k, c, eps)?;
            b.matmul_forward(&mut ba.logits, &ba.rows_normed, lm_head, None, k, c, vocab)?;
            out.logits.resize(k * vocab, 0.0);
            b.download(&ba.logits, 0, &mut out.logits)?;
        }
        // Embeddings: final-normed hidden states summed per sequence.
        if seqs.iter().any(|s| s.output == SeqOutput::HiddenSum) {
            b.rmsnorm_forward(&mut ba.act.normed, &ba.act.residual, &w.norm, n, c, eps)?;
            for (s, p) in seqs.iter().zip(paged) {
                if s.output != SeqOutput::HiddenSum {
                    continue;
                }
                ba.host_rows.resize(p.n * c, 0.0);
                b.download(&ba.act.normed, p.row0 * c, &mut ba.host_rows)?;
                let mut sum = vec![0f32; c];
                for row in ba.host_rows.chunks_exact(c) {
                    sum.iter_mut().zip(row).for_each(|(s, x)| *s += x);
                }
                out.hidden_sums.extend(sum);
            }
        }
        Ok(())
    }
}
