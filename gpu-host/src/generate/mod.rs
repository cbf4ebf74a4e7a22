//! Generation: batched prefill of the prompt, then one token at a time
//! (incremental decode over the KV cache), sampling each next token and
//! streaming text until EOS, a stop string or the token limit.

pub mod sampling;
pub mod text_stream;

pub use sampling::{Sampler, SamplingParams};
pub use text_stream::{StreamStep, TextStream};

use crate::backend::Backend;
use crate::checkpoint::GenerationDefaults;
use crate::model::{Activations, KvCache, Llama, Logits};
use crate::tokenizer::TextTokenizer;
use anyhow::{Result, bail};
use std::time::{Duration, Instant};

/// Tokens per prefill chunk (bounds the activation memory).
pub const PREFILL_CHUNK: usize = 256;

#[derive(Clone, Debug, PartialEq)]
pub struct GenerateParams {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation stops when the text contains any of these (they are not
    /// part of the output).
    pub stop_strings: Vec<String>,
    /// Generation stops at any of these tokens (not part of the output).
    pub eos_token_ids: Vec<u32>,
}

impl GenerateParams {
    /// Parameters from the checkpoint's defaults: `generation_config.json`,
    /// then `config.json`'s and the tokenizer's EOS.
    pub fn from_defaults(
        defaults: &GenerationDefaults,
        config_eos: &[u32],
        tokenizer: &TextTokenizer,
    ) -> Self {
        let do_sample = defaults.do_sample.unwrap_or(false);
        let mut eos: Vec<u32> = defaults.eos_token_ids.clone();
        eos.extend_from_slice(config_eos);
        if let Some(id) = tokenizer.eos_token().and_then(|t| tokenizer.token_id(t)) {
            eos.push(id);
        }
        eos.sort_unstable();
        eos.dedup();
        Self {
            max_new_tokens: defaults.max_new_tokens.unwrap_or(256),
            sampling: SamplingParams {
                temperature: if do_sample {
                    defaults.temperature.unwrap_or(1.0)
                } else {
                    0.0
                },
                top_k: if do_sample {
                    defaults.top_k.unwrap_or(50)
                } else {
                    0
                },
                top_p: if do_sample {
                    defaults.top_p.unwrap_or(1.0)
                } else {
                    1.0
                },
                repetition_penalty: defaults.repetition_penalty.unwrap_or(1.0),
                seed: 0,
            },
            stop_strings: Vec::new(),
            eos_token_ids: eos,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Eos,
    StopString,
    MaxTokens,
    /// The KV cache (context) is full.
    ContextFull,
}

#[derive(Clone, Debug)]
pub struct GenerateOutput {
    /// Generated tokens (without the EOS that ended them).
    pub tokens: Vec<u32>,
    /// Their text, cut before a stop string.
    pub text: String,
    pub stop_reason: StopReason,
    pub prompt_tokens: usize,
    pub prefill_time: Duration,
    pub decode_time: Duration,
}

/// Holds the per-sequence state (cache, activations) so that repeated
/// generations reuse memory.
pub struct Generator<'m, B: Backend> {
    model: &'m Llama<B>,
    tokenizer: &'m TextTokenizer,
    cache: KvCache<B>,
    act: Activations<B>,
    logits: Vec<f32>,
}

impl<'m, B: Backend> Generator<'m, B> {
    pub fn new(model: &'m Llama<B>, tokenizer: &'m TextTokenizer) -> Result<Self> {
        Ok(Self {
            model,
            tokenizer,
            cache: model.new_cache()?,
            act: model.new_activations(PREFILL_CHUNK, false)?,
            logits: Vec::new(),
        })
    }

    /// Generates a continuation of `prompt` (token ids), calling `on_text`
    /// with each piece of final text as it becomes known.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        mut on_text: impl FnMut(&str) -> Result<()>,
    ) -> Result<GenerateOutput> {
        params.sampling.validate()?;
        if prompt.is_empty() {
            bail!("the prompt has no tokens");
        }
        let mut sampler = Sampler::new(params.sampling.clone());
        let mut stream = TextStream::new(params.stop_strings.clone());
        let mut context: Vec<u32> = prompt.to_vec();
        let mut generated: Vec<u32> = Vec::new();

        self.cache.clear();
        let t0 = Instant::now();
        self.model.forward(
            &mut self.act,
            &mut self.cache,
            prompt,
            Logits::Last,
            &mut self.logits,
        )?;
        let prefill_time = t0.elapsed();
        let t1 = Instant::now();

        let stop_reason = loop {
            if generated.len() >= params.max_new_tokens {
                break StopReason::MaxTokens;
            }
            let next = sampler.sample(&mut self.logits, &context);
            if params.eos_token_ids.contains(&next) {
                break StopReason::Eos;
            }
            generated.push(next);
            context.push(next);
            match stream.update(self.tokenizer.decode(&generated, true)?) {
                StreamStep::Text(t) => {
                    if !t.is_empty() {
                        on_text(t)?;
                    }
                }
                StreamStep::Stopped(t) => {
                    if !t.is_empty() {
                        on_text(t)?;
                    }
                    break StopReason::StopString;
                }
            }
            if generated.len() >= params.max_new_tokens {
                break StopReason::MaxTokens;
            }
            if self.cache.len() >= self.cache.capacity() {
                break StopReason::ContextFull;
            }
            self.model.forward(
                &mut self.act,
                &mut self.cache,
                &[next],
                Logits::Last,
                &mut self.logits,
            )?;
        };
        if stop_reason != StopReason::StopString {
            let rest = stream.finish();
            if !rest.is_empty() {
                on_text(rest)?;
            }
        }
        Ok(GenerateOutput {
            tokens: generated,
            text: stream.text().to_string(),
            stop_reason,
            prompt_tokens: prompt.len(),
            prefill_time,
            decode_time: t1.elapsed(),
        })
    }
}
