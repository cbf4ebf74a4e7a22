//! `gpu-host bench train`: MoE-LoRA training steps on random token
//! sequences, timed on either engine, reported as tokens/s and model FLOPs
//! utilisation.
//!
//! FLOPs are counted for the work a frozen-base adapter step must do, not
//! the 6·N of full training: per token, the frozen linear layers forward
//! (2·N) and their input gradients (2·N, no weight gradients); causal
//! attention forward (4·ctx·q_dim per layer, ctx the mean number of keys a
//! query sees) and backward (twice that); and every active LoRA (the
//! attention targets, the top-k experts' gate/up/down) and the router
//! forward and backward (6 per weight). MFU is that over the device's
//! dense bf16 peak.

use crate::rng::Rng;
use crate::train::engine::StepEngine;
use crate::train::model::{Batch, MoeConfig, TrainModel};
use crate::train::optim::{AdamW, AdamWConfig};
use anyhow::{Result, ensure};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

pub struct TrainBenchParams {
    pub model: PathBuf,
    pub device: String,
    pub dtype: String,
    pub seq_len: usize,
    pub micro_batch: usize,
    pub steps: usize,
    pub checkpointing: bool,
    /// Also time each phase of the step (on the GPU, synchronising after
    /// each), in extra steps after the timed ones.
    pub profile: bool,
    pub moe: MoeConfig,
}

#[derive(Debug, Serialize)]
pub struct TrainBenchReport {
    pub device: String,
    pub seq_len: usize,
    pub tokens_per_step: usize,
    pub step_ms: f64,
    pub tokens_per_s: f64,
    pub flops_per_token: f64,
    pub achieved_tflops: f64,
    /// The device's dense bf16 peak, when known.
    pub peak_tflops: Option<f64>,
    pub mfu: Option<f64>,
    pub base_parameters: usize,
    pub trainable_parameters: usize,
    /// With `profile`: milliseconds per step in each phase.
    pub phases_ms: Vec<(String, f64)>,
}

/// Dense bf16 tensor-core peak by device name (SXM parts), TFLOP/s.
pub fn bf16_peak_tflops(device: &str) -> Option<f64> {
    [
        ("H200", 989.4),
        ("H100", 989.4),
        ("A100", 312.0),
        ("L40S", 362.0),
    ]
    .iter()
    .find(|(name, _)| device.contains(name))
    .map(|&(_, t)| t)
}

/// Model FLOPs per trained token (see the module documentation).
pub fn flops_per_token(model: &TrainModel<f32>, seq_len: usize) -> f64 {
    let cfg = &model.config;
    let moe = &model.moe;
    let (c, q, kv, f, v) = (
        cfg.hidden_size,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.intermediate_size,
        cfg.vocab_size,
    );
    let per_layer = c * q + 2 * c * kv + q * c + 3 * c * f;
    let linear = (cfg.num_layers * per_layer + v * c) as f64;
    let ctx = (seq_len as f64 + 1.0) / 2.0;
    let attention = (cfg.num_layers * q) as f64 * 4.0 * ctx;
    let r = moe.rank;
    let mut lora = 0usize;
    for t in &moe.attn_targets {
        lora += match t.as_str() {
            "q_proj" => r * (c + q),
            "k_proj" | "v_proj" => r * (c + kv),
            _ => r * (q + c),
        };
    }
    lora += moe.top_k * (2 * r * (c + f) + r * (f + c)) + moe.num_experts * c;
    let adapter = (cfg.num_layers * lora) as f64;
    4.0 * linear + 3.0 * attention + 6.0 * adapter
}

/// Random documents of `seq_len` tokens, `micro_batch` per batch, with the
/// loss on every token.
fn random_batch(rng: &mut Rng, vocab: usize, seq_len: usize, micro_batch: usize) -> Batch {
    let docs: Vec<(Vec<u32>, Vec<bool>)> = (0..micro_batch)
        .map(|_| {
            let tokens = (0..seq_len)
                .map(|_| rng.below(vocab as u64) as u32)
                .collect();
            (tokens, vec![true; seq_len])
        })
        .collect();
    let refs: Vec<(&[u32], &[bool], u8)> =
        docs.iter().map(|(t, l)| (&t[..], &l[..], 255u8)).collect();
    Batch::from_documents(&refs)
}

pub fn bench_train(p: &TrainBenchParams) -> Result<TrainBenchReport> {
    crate::train::engine::TrainDevice::parse(&p.device)?;
    crate::train::engine::parse_dtype(&p.dtype)?;
    ensure!(p.seq_len >= 2, "--seq-len must be at least 2");
    ensure!(
        p.micro_batch >= 1 && p.steps >= 1,
        "--micro-batch and --steps must be positive"
    );
    let mut model = TrainModel::<f32>::from_checkpoint(&p.model, p.moe.clone(), 0)?;
    model.checkpointing = p.checkpointing;
    ensure!(
        p.seq_len <= model.config.max_position_embeddings,
        "--seq-len {} exceeds the model's context of {}",
        p.seq_len,
        model.config.max_position_embeddings
    );
    let trainable = model.trainable_mask();
    let mut opt = AdamW::new(AdamWConfig::default(), &model.params, &trainable);
    let mut engine = StepEngine::open(&p.device, &p.dtype, &model)?;
    let device = engine.describe();
    let mut rng = Rng::new(1);
    let vocab = model.config.vocab_size;
    let mut step =
        |engine: &mut StepEngine, model: &mut TrainModel<f32>, opt: &mut AdamW| -> Result<usize> {
            let batch = random_batch(&mut rng, vocab, p.seq_len, p.micro_batch);
            engine.zero_grads()?;
            let stats = engine.forward_backward(model, &batch, 1.0)?;
            engine.step(model, opt, 1.0, 1e-4)?;
            Ok(stats.n_tokens)
        };
    // One warm-up step: kernel loading, cuBLASLt plans, allocator pools.
    step(&mut engine, &mut model, &mut opt)?;
    let started = Instant::now();
    let mut tokens = 0;
    for _ in 0..p.steps {
        tokens += step(&mut engine, &mut model, &mut opt)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut phases_ms = Vec::new();
    if p.profile {
        engine.set_profiling(true);
        for _ in 0..p.steps {
            step(&mut engine, &mut model, &mut opt)?;
        }
        phases_ms = engine
            .phase_times()
            .into_iter()
            .map(|(name, s)| (name.to_string(), 1e3 * s / p.steps as f64))
            .collect();
        engine.set_profiling(false);
    }
    let tokens_per_s = tokens as f64 / secs;
    let fpt = flops_per_token(&model, p.seq_len);
    let achieved = fpt * tokens_per_s / 1e12;
    let peak = if device.starts_with("cuda") {
        bf16_peak_tflops(&device)
    } else {
        None
    };
    Ok(TrainBenchReport {
        tokens_per_step: tokens / p.steps,
        step_ms: 1e3 * secs / p.steps as f64,
        seq_len: p.seq_len,
        tokens_per_s,
        flops_per_token: fpt,
        achieved_tflops: achieved,
        peak_tflops: peak,
        mfu: peak.map(|pk| achieved / pk),
        base_parameters: model.params.count(|i| !trainable[i]),
        trainable_parameters: model.params.count(|i| trainable[i]),
        phases_ms,
        device,
    })
}

impl TrainBenchReport {
    /// The summary row, then (with `profile`) the phases, slowest first.
    pub fn table(&self) -> String {
        let mut out = self.summary_row();
        if !self.phases_ms.is_empty() {
            out.push_str("\n\n| phase (per step, synchronised) | ms |\n| --- | --- |");
            let mut phases = self.phases_ms.clone();
            phases.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (name, ms) in phases {
                out.push_str(&format!("\n| {name} | {ms:.2} |"));
            }
        }
        out
    }

    fn summary_row(&self) -> String {
        let mfu = self
            .mfu
            .map_or("-".to_string(), |m| format!("{:.1}%", 100.0 * m));
        let peak = self
            .peak_tflops
            .map_or("-".to_string(), |p| format!("{p:.0}"));
        format!(
            "| device | base params | trainable | seq | tokens/step | step (ms) | tokens/s | TFLOP/s | peak | MFU |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n\
             | {} | {:.1} M | {:.1} M | {} | {} | {:.1} | {:.0} | {:.2} | {} | {} |",
            self.device,
            self.base_parameters as f64 / 1e6,
            self.trainable_parameters as f64 / 1e6,
            self.seq_len,
            self.tokens_per_step,
            self.step_ms,
            self.tokens_per_s,
            self.achieved_tflops,
            peak,
            mfu
        )
    }
}
