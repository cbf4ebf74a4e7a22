//! Forward-pass throughput: prefill (one batched pass over a prompt) and
//! decode (one token at a time over the KV cache), in tokens per second.

use crate::backend::Backend;
use crate::model::{Llama, Logits};
use crate::rng::Rng;
use anyhow::{Result, bail};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct ForwardBenchParams {
    pub prompt_tokens: usize,
    pub decode_tokens: usize,
    /// Timed repetitions after one warm-up; the best is reported (0: time
    /// the warm-up round alone).
    pub repeats: usize,
}

#[derive(Clone, Debug)]
pub struct ForwardBenchResult {
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
}

/// Prefills `prompt_tokens` random tokens, then decodes `decode_tokens`
/// more one at a time (feeding back the argmax).
pub fn bench_forward<B: Backend>(
    model: &Llama<B>,
    p: &ForwardBenchParams,
    mut on_round: impl FnMut(),
) -> Result<ForwardBenchResult> {
    if p.prompt_tokens == 0 || p.decode_tokens == 0 {
        bail!("prompt and decode token counts must be positive");
    }
    if p.prompt_tokens + p.decode_tokens > model.max_seq() {
        bail!(
            "{} + {} tokens exceed the model's context of {}",
            p.prompt_tokens,
            p.decode_tokens,
            model.max_seq()
        );
    }
    let vocab = model.config().vocab_size as u64;
    let mut rng = Rng::new(1234);
    let prompt: Vec<u32> = (0..p.prompt_tokens)
        .map(|_| rng.below(vocab) as u32)
        .collect();
    let mut act = model.new_activations(p.prompt_tokens, false)?;
    let mut cache = model.new_cache()?;
    let mut logits = Vec::new();
    let (mut best_prefill, mut best_decode) = (f64::INFINITY, f64::INFINITY);
    for round in 0..=p.repeats {
        cache.clear();
        let t = Instant::now();
        model.forward(&mut act, &mut cache, &prompt, Logits::Last, &mut logits)?;
        let prefill = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..p.decode_tokens {
            let next = crate::generate::sampling::argmax(&logits);
            model.forward(&mut act, &mut cache, &[next], Logits::Last, &mut logits)?;
        }
        let decode = t.elapsed().as_secs_f64();
        if round > 0 || p.repeats == 0 {
            best_prefill = best_prefill.min(prefill);
            best_decode = best_decode.min(decode);
        }
        on_round();
    }
    Ok(ForwardBenchResult {
        prefill_tokens_per_s: p.prompt_tokens as f64 / best_prefill,
        decode_tokens_per_s: p.decode_tokens as f64 / best_decode,
    })
}
