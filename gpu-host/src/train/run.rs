//! The training loop: data order, micro-batches with gradient
//! accumulation, clipping, AdamW on the warmup-cosine schedule, evaluation,
//! metrics JSONL, atomic checkpoints, `--resume`, and the deadline monitor.
//!
//! A run is deterministic: the data order depends only on the seed and the
//! epoch, the ops split work by shape (never by thread timing), and a
//! checkpoint holds everything that changes (weights, AdamW moments and
//! step, data position), so a resumed run's loss curve is bit-identical to
//! an uninterrupted one on the same machine and thread count.

use crate::data::shards::{Dataset, Document};
use crate::rng::Rng;
use crate::train::checkpoint::{
    DataPosition, TrainerState, latest_checkpoint, load_checkpoint, save_checkpoint,
};
use crate::train::config::{TrainConfig, parse_duration};
use crate::train::engine::StepEngine;
use crate::train::model::{Batch, StepStats, TrainModel, parameter_counts};
use crate::train::optim::{AdamW, AdamWConfig, lr_at};
use crate::train::planner::DeadlineMonitor;
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a run did.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub steps: usize,
    pub planned_steps: usize,
    pub losses: Vec<f64>,
    pub val_loss: Option<f64>,
    /// Per domain, the fraction of validation tokens (× layers) whose top-1
    /// expert is the domain's.
    pub val_domain_top1: Vec<f64>,
    pub tokens_per_s: f64,
    pub final_checkpoint: Option<PathBuf>,
    /// When the final checkpoint was complete.
    pub finished_at: Instant,
    pub adjustments: Vec<String>,
    pub trainable_params: usize,
    pub total_params: usize,
}

/// Packed sequences (document indices) and their shuffled order per epoch.
pub struct Loader {
    seqs: Vec<Vec<usize>>,
    micro_batch: usize,
    seed: u64,
    max_doc: usize,
    order: (u64, Vec<usize>),
}

impl Loader {
    pub fn new(
        docs: &[Document],
        seq_len: usize,
        micro_batch: usize,
        seed: u64,
        max_doc: usize,
    ) -> Self {
        let mut seqs = Vec::new();
        let mut cur = Vec::new();
        let mut len = 0;
        for (i, d) in docs.iter().enumerate() {
            let l = d.tokens.len().min(max_doc);
            if len + l > seq_len && !cur.is_empty() {
                seqs.push(std::mem::take(&mut cur));
                len = 0;
            }
            len += l;
            cur.push(i);
        }
        if !cur.is_empty() {
            seqs.push(cur);
        }
        Self {
            seqs,
            micro_batch,
            seed,
            max_doc,
            order: (u64::MAX, Vec::new()),
        }
    }

    pub fn num_sequences(&self) -> usize {
        self.seqs.len()
    }

    fn order(&mut self, epoch: u64) -> &[usize] {
        if self.order.0 != epoch {
            let mut o: Vec<usize> = (0..self.seqs.len()).collect();
            let mut rng = Rng::for_stream(self.seed, &format!("data-epoch-{epoch}"));
            for i in (1..o.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                o.swap(i, j);
            }
            self.order = (epoch, o);
        }
        &self.order.1
    }

    /// The next micro-batch in the shuffled order, advancing `pos`.
    pub fn next(&mut self, pos: &mut DataPosition, docs: &[Document]) -> Batch {
        let mut picked = Vec::new();
        for _ in 0..self.micro_batch {
            if pos.cursor >= self.seqs.len() {
                pos.epoch += 1;
                pos.cursor = 0;
            }
            let s = self.order(pos.epoch)[pos.cursor];
            pos.cursor += 1;
            picked.extend(self.seqs[s].iter().copied());
        }
        self.batch(&picked, docs)
    }

    /// Micro-batch `i` in file order (evaluation).
    pub fn fixed(&self, i: usize, docs: &[Document]) -> Batch {
        let picked: Vec<usize> = (i * self.micro_batch
            ..((i + 1) * self.micro_batch).min(self.seqs.len()))
            .flat_map(|s| self.seqs[s].iter().copied())
            .collect();
        self.batch(&picked, docs)
    }

    pub fn num_fixed(&self) -> usize {
        self.seqs.len().div_ceil(self.micro_batch)
    }

    fn batch(&self, picked: &[usize], docs: &[Document]) -> Batch {
        let parts: Vec<(&[u32], &[bool], u8)> = picked
            .iter()
            .map(|&i| {
                let d = &docs[i];
                let l = d.tokens.len().min(self.max_doc);
                (&d.tokens[..l], &d.loss[..l], d.domain)
            })
            .collect();
        Batch::from_documents(&parts)
    }
}

/// Runs (or, with `resume`, continues) the training described by `cfg`.
pub fn train(cfg: &TrainConfig, resume: bool) -> Result<RunSummary> {
    cfg.validate()?;
    keep_freed_memory();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads)
        .thread_name(|i| format!("gpu-host-train-{i}"))
        .build()
        .context("cannot start the training thread pool")?;
    pool.install(|| train_in_pool(cfg, resume))
}

/// Evaluation: token-weighted validation loss and per-domain top-1 routing.
pub fn evaluate(
    model: &TrainModel<f32>,
    loader: &Loader,
    docs: &[Document],
    batches: usize,
) -> Result<(f64, Vec<f64>)> {
    evaluate_with(model.moe.num_experts, loader, docs, batches, |b| {
        model.forward(b)
    })
}

/// [`evaluate`] with the forward pass of any engine.
pub fn evaluate_with(
    num_experts: usize,
    loader: &Loader,
    docs: &[Document],
    batches: usize,
    mut forward: impl FnMut(&Batch) -> Result<StepStats>,
) -> Result<(f64, Vec<f64>)> {
    let n = if batches == 0 {
        loader.num_fixed()
    } else {
        batches.min(loader.num_fixed())
    };
    let (mut sum, mut count) = (0.0, 0usize);
    let mut top1 = vec![(0usize, 0usize); num_experts];
    for i in 0..n {
        let b = loader.fixed(i, docs);
        if b.is_empty() {
            continue;
        }
        let s = forward(&b)?;
        sum += s.ce * s.n_targets as f64;
        count += s.n_targets;
        for (t, s) in top1.iter_mut().zip(&s.domain_top1) {
            t.0 += s.0;
            t.1 += s.1;
        }
    }
    let frac = top1
        .iter()
        .map(|&(a, b)| if b > 0 { a as f64 / b as f64 } else { f64::NAN })
        .collect();
    Ok((sum / count.max(1) as f64, frac))
}

/// The validation loss and routing of the run's engine.
fn validate(
    engine: &mut StepEngine,
    model: &TrainModel<f32>,
    loader: &Loader,
    docs: &[Document],
    cfg: &TrainConfig,
) -> Result<(f64, Vec<f64>)> {
    evaluate_with(model.moe.num_experts, loader, docs, cfg.eval_batches, |b| {
        engine.forward(model, b)
    })
}

fn train_in_pool(cfg: &TrainConfig, resume: bool) -> Result<RunSummary> {
    let started = Instant::now();
    let ds = Dataset::open(&cfg.data)?;
    let mut model = TrainModel::<f32>::from_checkpoint(&cfg.model, cfg.moe(), cfg.seed)?;
    model.train_base = cfg.full;
    model.checkpointing = cfg.checkpointing;
    let max_doc = cfg.seq_len.min(model.config.max_position_embeddings);
    let mut loader = Loader::new(&ds.train, cfg.seq_len, cfg.micro_batch, cfg.seed, max_doc);
    let val_loader = Loader::new(
        &ds.validation,
        cfg.seq_len,
        cfg.micro_batch,
        cfg.seed,
        max_doc,
    );
    if loader.num_sequences() == 0 {
        bail!("{} has no training sequences", cfg.data.display());
    }
    let planned = if cfg.steps > 0 {
        cfg.steps
    } else {
        ((cfg.epochs * loader.num_sequences() as f64) / (cfg.micro_batch * cfg.accum) as f64)
            .ceil()
            .max(1.0) as usize
    };
    let trainable = model.trainable_mask();
    let adam_cfg = AdamWConfig {
        beta1: cfg.adam_beta1,
        beta2: cfg.adam_beta2,
        eps: cfg.adam_eps,
        weight_decay: cfg.weight_decay,
    };
    let mut opt = AdamW::new(adam_cfg, &model.params, &trainable);
    let config_json = serde_json::to_value(cfg)?;
    let mut state = TrainerState {
        step: 0,
        total_steps: planned,
        eval_every: cfg.eval_every,
        data: DataPosition::default(),
        tokens_seen: 0,
        adam_t: 0,
        seed: cfg.seed,
        config: config_json.clone(),
        window_end_unix_s: None,
    };
    std::fs::create_dir_all(&cfg.out)
        .with_context(|| format!("cannot create {}", cfg.out.display()))?;
    let metrics_path = cfg.out.join("metrics.jsonl");
    match (resume, latest_checkpoint(&cfg.out)?) {
        (true, Some(dir)) => {
            state = load_checkpoint(&dir, &mut model, &mut opt)?;
            truncate_metrics(&metrics_path, state.step)?;
            tracing::info!(checkpoint = %dir.display(), step = state.step, "resuming");
        }
        (true, None) => bail!("--resume: no checkpoint in {}", cfg.out.display()),
        (false, Some(dir)) => bail!(
            "{} already holds a run (checkpoint {}); pass --resume to continue it or choose another --out",
            cfg.out.display(),
            dir.display()
        ),
        (false, None) => {
            std::fs::write(&metrics_path, b"")
                .with_context(|| format!("cannot write {}", metrics_path.display()))?;
        }
    }
    let mut metrics = std::fs::OpenOptions::new()
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("cannot open {}", metrics_path.display()))?;

    let mut engine = StepEngine::open(&cfg.device, &cfg.dtype, &model)?;
    engine.load_optimizer(&model, &opt)?;
    tracing::info!(device = %engine.describe(), "training steps run on");

    let total_params = model.params.count(|_| true);
    let trainable_params = model.params.count(|i| trainable[i]);
    let (_, adapter_params) = parameter_counts(&model.config, &model.moe);
    tracing::info!(
        "trainable parameters: {trainable_params} of {total_params} ({:.2}%); adapter {adapter_params}",
        100.0 * trainable_params as f64 / total_params as f64
    );

    // The window is wall-clock time from the run's first start: a resumed
    // run keeps the deadline it was given.
    let mut monitor = if cfg.window.is_empty() {
        None
    } else {
        let window = parse_duration(&cfg.window)?;
        let margin = parse_duration(&cfg.margin)?;
        let now_unix = unix_now();
        let end_unix = *state
            .window_end_unix_s
            .get_or_insert(now_unix + window.as_secs_f64());
        let left = Duration::from_secs_f64((end_unix - now_unix).max(0.0));
        Some(DeadlineMonitor::new(started, left, margin))
    };

    let progress = if cfg.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(state.total_steps as u64)
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} ETA {eta}")
            .expect("valid template"),
    );
    progress.set_position(state.step as u64);

    let mut losses = Vec::new();
    let mut last_tok_s = 0.0;
    let mut eval_every = state.eval_every;
    let mut summary_val = (None, Vec::new());
    while state.step < state.total_steps {
        if let Some(m) = monitor.as_mut() {
            let before = state.total_steps;
            if !m.plan(
                state.step,
                &mut state.total_steps,
                &mut eval_every,
                cfg.ckpt_every,
            ) {
                state.total_steps = state.step;
            }
            if state.total_steps != before {
                progress.set_length(state.total_steps as u64);
                let line = json!({"step": state.step, "event": "replan", "total_steps": state.total_steps, "eval_every": eval_every, "reason": m.adjustments.last()});
                writeln!(metrics, "{line}")?;
            }
            if state.step >= state.total_steps {
                break;
            }
        }
        let t0 = Instant::now();
        engine.zero_grads()?;
        let mut acc = StepStats::default();
        let mut tokens = 0usize;
        for _ in 0..cfg.accum {
            let batch = loader.next(&mut state.data, &ds.train);
            let s = engine.forward_backward(&model, &batch, 1.0 / cfg.accum as f64)?;
            tokens += s.n_tokens;
            accumulate(&mut acc, &s, cfg.accum);
        }
        let lr = lr_at(
            state.step,
            state.total_steps,
            cfg.warmup_steps,
            cfg.lr,
            cfg.min_lr_ratio,
        );
        let grad_norm = engine.step(&mut model, &mut opt, cfg.clip, lr)?;
        state.step += 1;
        state.adam_t = opt.t;
        state.tokens_seen += tokens as u64;
        if cfg.slowdown_ms > 0 && state.step > cfg.slowdown_after_step {
            std::thread::sleep(Duration::from_millis(cfg.slowdown_ms));
        }
        let dt = t0.elapsed().as_secs_f64();
        last_tok_s = tokens as f64 / dt.max(1e-9);
        if let Some(m) = monitor.as_mut() {
            m.observe_step(dt);
        }
        losses.push(acc.total);
        let usage: Vec<Vec<f64>> = acc
            .expert_slots
            .iter()
            .map(|l| {
                let s: usize = l.iter().sum();
                l.iter().map(|&x| x as f64 / s.max(1) as f64).collect()
            })
            .collect();
        let line = json!({
            "step": state.step, "loss": acc.total, "ce": acc.ce, "aux_loss": acc.aux, "z_loss": acc.z,
            "domain_loss": acc.domain, "lr": lr, "grad_norm": grad_norm, "tok_s": last_tok_s,
            "tokens": state.tokens_seen, "expert_usage": usage, "routing_entropy": acc.routing_entropy, "layer_routing_entropy": acc.layer_entropy,
        });
        writeln!(metrics, "{line}")?;
        progress.set_message(format!("loss {:.4} {:.0} tok/s", acc.total, last_tok_s));
        progress.set_position(state.step as u64);

        if cfg.kill_after_step > 0 && state.step == cfg.kill_after_step {
            // As if killed: no final checkpoint.
            progress.abandon();
            return Ok(summary(
                &state,
                planned,
                losses,
                summary_val,
                last_tok_s,
                None,
                monitor,
                trainable_params,
                total_params,
            ));
        }
        let last = state.step >= state.total_steps;
        if !last && eval_every > 0 && state.step.is_multiple_of(eval_every) {
            let t = Instant::now();
            let (vl, top1) = validate(&mut engine, &model, &val_loader, &ds.validation, cfg)?;
            if let Some(m) = monitor.as_mut() {
                m.observe_eval(t.elapsed().as_secs_f64());
            }
            writeln!(
                metrics,
                "{}",
                json!({"step": state.step, "val_loss": vl, "val_ppl": vl.exp(), "val_domain_top1": top1})
            )?;
        }
        if !last && cfg.ckpt_every > 0 && state.step.is_multiple_of(cfg.ckpt_every) {
            let t = Instant::now();
            state.eval_every = eval_every;
            engine.sync_to_host(&mut model, &mut opt)?;
            save_checkpoint(&cfg.out, &model, &opt, &state, cfg.keep_checkpoints)?;
            if let Some(m) = monitor.as_mut() {
                m.observe_checkpoint(t.elapsed().as_secs_f64());
            }
        }
    }
    progress.finish_and_clear();
    if !ds.validation.is_empty() {
        let (vl, top1) = validate(&mut engine, &model, &val_loader, &ds.validation, cfg)?;
        writeln!(
            metrics,
            "{}",
            json!({"step": state.step, "val_loss": vl, "val_ppl": vl.exp(), "val_domain_top1": top1})
        )?;
        summary_val = (Some(vl), top1);
    }
    state.eval_every = eval_every;
    engine.sync_to_host(&mut model, &mut opt)?;
    let dir = save_checkpoint(&cfg.out, &model, &opt, &state, cfg.keep_checkpoints)?;
    crate::adapter::write_adapter(&cfg.out.join("adapter"), &model)?;
    if cfg.full {
        crate::adapter::write_base_checkpoint(&cfg.out.join("base"), &model)?;
    }
    metrics.flush()?;
    Ok(summary(
        &state,
        planned,
        losses,
        summary_val,
        last_tok_s,
        Some(dir),
        monitor,
        trainable_params,
        total_params,
    ))
}

#[allow(clippy::too_many_arguments)]
fn summary(
    state: &TrainerState,
    planned: usize,
    losses: Vec<f64>,
    val: (Option<f64>, Vec<f64>),
    tok_s: f64,
    dir: Option<PathBuf>,
    monitor: Option<DeadlineMonitor>,
    trainable_params: usize,
    total_params: usize,
) -> RunSummary {
    RunSummary {
        steps: state.step,
        planned_steps: planned,
        losses,
        val_loss: val.0,
        val_domain_top1: val.1,
        tokens_per_s: tok_s,
        final_checkpoint: dir,
        finished_at: Instant::now(),
        adjustments: monitor.map(|m| m.adjustments).unwrap_or_default(),
        trainable_params,
        total_params,
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Every step allocates and frees the same large activation buffers; by
/// default glibc returns them to the OS and the next step pays a page
/// fault per 4 KiB again (measured: ~15 % of a small-preset step). Keep
/// them in the heap instead.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: glibc's mallopt only changes allocator tuning; it is
        // safe to call at any time.
        unsafe {
            // 32 MiB: the largest threshold glibc accepts on 64-bit.
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}

fn accumulate(acc: &mut StepStats, s: &StepStats, accum: usize) {
    let w = 1.0 / accum as f64;
    acc.ce += w * s.ce;
    acc.aux += w * s.aux;
    acc.z += w * s.z;
    acc.domain += w * s.domain;
    acc.total += w * s.total;
    acc.routing_entropy += w * s.routing_entropy;
    if acc.layer_entropy.is_empty() {
        acc.layer_entropy = vec![0.0; s.layer_entropy.len()];
    }
    for (a, b) in acc.layer_entropy.iter_mut().zip(&s.layer_entropy) {
        *a += w * b;
    }
    acc.n_tokens += s.n_tokens;
    acc.n_targets += s.n_targets;
    if acc.expert_slots.is_empty() {
        acc.expert_slots = s.expert_slots.clone();
    } else {
        for (a, b) in acc.expert_slots.iter_mut().zip(&s.expert_slots) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
    }
}

/// Drops metrics lines past `step` (a resumed run rewrites them).
fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::train::checkpoint::write_atomic(path, kept.as_bytes())
}
