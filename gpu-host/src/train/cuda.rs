//! MoE-LoRA training on the CUDA backend. [`CudaTrainer`] runs exactly the
//! steps of [`TrainModel`]'s forward and backward (read
//! `train::model` first: the order, names and shapes here follow it line
//! for line), with the parameters, activations, gradients and AdamW
//! moments in device memory:
//!
//! - GEMMs through cuBLASLt ([`Gemm::general`]): frozen projections in
//!   bf16 on tensor cores (or f32 with `--dtype f32`), the adapter's LoRA
//!   shrink/expand and the router in f32;
//! - every other op a kernel from `gpu-host/kernels/` (training flash
//!   attention, RMSNorm, RoPE, SwiGLU and their backwards, the router, the
//!   expert gather/scatter, fused cross-entropy, AdamW with clipping).
//!
//! The host sees only what it must: each layer's routing (`[n, E]`
//! probabilities and logits, `[n, k]` choices, a few KB) for the step
//! statistics, the auxiliary losses' gradients and the grouping of tokens
//! by expert; the per-row losses; the gradient norm. Checkpoints download
//! the trainable tensors and moments ([`CudaTrainer::download`]).

use crate::backend::WeightDtype;
use crate::backend::cuda::Gpu;
use crate::backend::cuda::ops::adamw::{AdamWStep, adamw_step, grad_sumsq};
use crate::backend::cuda::ops::attention_train::{
    DocRows, attention_train_backward, attention_train_forward,
};
use crate::backend::cuda::ops::cross_entropy::cross_entropy_fused;
use crate::backend::cuda::ops::matmul::{Operand, plain, transposed};
use crate::backend::cuda::ops::moe::{
    gather_rows, row_dot, scale_rows, scatter_add_rows, scatter_slots,
};
use crate::backend::cuda::ops::paged::{rope_backward_positions, rope_forward_positions};
use crate::backend::cuda::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward_rstd};
use crate::backend::cuda::ops::router::{router_backward, router_forward};
use crate::backend::cuda::ops::swiglu::swiglu_backward;
use crate::backend::cuda::ops::{
    Gemm, cast_f32_to_bf16, embedding_forward, residual_forward, swiglu_forward,
};
use crate::checkpoint::ModelConfig;
use crate::train::model::{
    Batch, LoraIdx, ModelIdx, MoeConfig, Params, StepStats, TrainModel, check_batch, routing_stats,
};
use crate::train::ops::attention::AttnShape;
use crate::train::ops::losses::{
    domain_routing_loss_backward, domain_routing_loss_forward, load_balance_backward,
    load_balance_forward, router_z_loss_backward,
};
use crate::train::optim::{AdamW, AdamWConfig};
use anyhow::{Context, Result, bail, ensure};
use cudarc::driver::CudaSlice;
use half::bf16;

type Buf = CudaSlice<f32>;

/// A parameter on the device: trainable ones and vectors always f32,
/// frozen matrices in the weight dtype.
enum Dense {
    F32(Buf),
    Bf16(CudaSlice<bf16>),
}

/// One layer's saved activations (the device twin of `LayerCache`).
struct Layer {
    x_in: Buf,
    rstd1: Buf,
    xn1: Buf,
    q: Buf,
    k: Buf,
    v: Buf,
    attn_xa: [Option<Buf>; 4],
    att: Buf,
    lse: Buf,
    x_mid: Buf,
    rstd2: Buf,
    xn2: Buf,
    probs: Buf,
    topk_idx: CudaSlice<u32>,
    topk_w: Buf,
    /// The routing on the host: probabilities, logits, choices.
    probs_host: Vec<f32>,
    logits_host: Vec<f32>,
    idx_host: Vec<u32>,
    experts: Vec<Option<Expert>>,
}

/// One expert's rows of a layer (the device twin of `ExpertCache`).
///
/// Its dense blocks have `mp` rows, `m` rounded up to [`EXPERT_ROWS`]: the
/// rows past `m` are zero (and their gate weight is zero), so they add
/// nothing, and the GEMM shapes repeat from layer to layer and step to
/// step, letting cuBLASLt's plans be reused instead of re-planned for every
/// routing outcome.
struct Expert {
    m: usize,
    mp: usize,
    rows: CudaSlice<u32>,
    slots: CudaSlice<u32>,
    w: Buf,
    x: Buf,
    gate_xa: Buf,
    up_xa: Buf,
    g: Buf,
    u: Buf,
    h: Buf,
    down_xa: Buf,
}

/// Expert blocks are padded to a multiple of this many rows.
const EXPERT_ROWS: usize = 64;

enum Saved {
    Full(Box<Layer>),
    /// Activation checkpointing: the input only; the rest is recomputed.
    Input(Buf),
}

/// Per-phase wall time for `bench train --profile`: each lap waits for
/// the GPU, so the phases add up to the step (and the step is slower).
#[derive(Default)]
struct Phases {
    on: bool,
    last: Option<std::time::Instant>,
    totals: std::collections::BTreeMap<&'static str, f64>,
}

pub struct CudaTrainer {
    gpu: Gpu,
    phases: std::sync::Mutex<Phases>,
    gemm: Gemm,
    pub config: ModelConfig,
    pub moe: MoeConfig,
    idx: ModelIdx,
    shapes: Vec<Vec<usize>>,
    trainable: Vec<bool>,
    params: Vec<Dense>,
    grads: Vec<Option<Buf>>,
    adam_m: Vec<Option<Buf>>,
    adam_v: Vec<Option<Buf>>,
    /// AdamW updates applied so far.
    pub t: u64,
    rope_cos: Buf,
    rope_sin: Buf,
    pub checkpointing: bool,
}

/// The batch on the device.
struct DeviceBatch {
    tokens: CudaSlice<u32>,
    targets: CudaSlice<u32>,
    docs: DocRows,
}

impl CudaTrainer {
    /// Copies `model` (its frozen base in `dtype`, its adapter in f32) to
    /// CUDA device `ordinal`, with zero gradients and AdamW moments.
    pub fn new(model: &TrainModel<f32>, ordinal: usize, dtype: WeightDtype) -> Result<Self> {
        if model.train_base {
            bail!(
                "full fine-tuning (--full) runs on the CPU backend only; train the adapter on CUDA, or pass --device cpu"
            );
        }
        let gpu = Gpu::new(ordinal)?;
        let gemm = Gemm::new(&gpu)?;
        let trainable = model.trainable_mask();
        let s = &gpu.stream;
        let mut params = Vec::with_capacity(model.params.len());
        let (mut grads, mut adam_m, mut adam_v) = (Vec::new(), Vec::new(), Vec::new());
        for (i, data) in model.params.data.iter().enumerate() {
            let matrix = model.params.shapes[i].len() >= 2;
            let name = &model.params.names[i];
            let p = if !trainable[i] && matrix && dtype == WeightDtype::Bf16 {
                let b: Vec<bf16> = data.iter().map(|x| bf16::from_f32(*x)).collect();
                Dense::Bf16(
                    s.clone_htod(&b)
                        .with_context(|| format!("uploading {name}"))?,
                )
            } else {
                Dense::F32(
                    s.clone_htod(data)
                        .with_context(|| format!("uploading {name}"))?,
                )
            };
            params.push(p);
            let zeros = || -> Result<Option<Buf>> {
                Ok(if trainable[i] {
                    Some(s.alloc_zeros(data.len())?)
                } else {
                    None
                })
            };
            grads.push(zeros()?);
            adam_m.push(zeros()?);
            adam_v.push(zeros()?);
        }
        let rope_cos = s.clone_htod(&model.rope_cos)?;
        let rope_sin = s.clone_htod(&model.rope_sin)?;
        Ok(Self {
            gemm,
            config: model.config.clone(),
            moe: model.moe.clone(),
            idx: model.idx.clone(),
            shapes: model.params.shapes.clone(),
            trainable,
            params,
            grads,
            adam_m,
            adam_v,
            t: 0,
            rope_cos,
            rope_sin,
            checkpointing: model.checkpointing,
            phases: Default::default(),
            gpu,
        })
    }

    pub fn describe(&self) -> String {
        let i = &self.gpu.info;
        format!("cuda:{} ({}, {})", i.ordinal, i.name, i.arch())
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Turns per-phase timing on (it synchronises after every phase).
    pub fn set_profiling(&mut self, on: bool) {
        let mut p = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        *p = Phases {
            on,
            ..Default::default()
        };
    }

    /// Seconds spent per phase since profiling was turned on.
    pub fn phase_times(&self) -> Vec<(&'static str, f64)> {
        let p = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        p.totals.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Ends phase `name` (when profiling): waits for the GPU and adds the
    /// time since the previous lap.
    fn lap(&self, name: &'static str) -> Result<()> {
        let mut p = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        if !p.on {
            return Ok(());
        }
        self.gpu.synchronize()?;
        let now = std::time::Instant::now();
        if let Some(last) = p.last {
            *p.totals.entry(name).or_default() += (now - last).as_secs_f64();
        }
        p.last = Some(now);
        Ok(())
    }

    /// The objective and statistics without gradients (evaluation).
    pub fn forward(&mut self, batch: &Batch) -> Result<StepStats> {
        self.run(batch, None)
    }

    /// Forward and backward; gradients are added into the device gradient
    /// buffers (scaled by `grad_scale`, e.g. 1/accumulation steps).
    pub fn forward_backward(&mut self, batch: &Batch, grad_scale: f64) -> Result<StepStats> {
        self.run(batch, Some(grad_scale))
    }

    pub fn zero_grads(&mut self) -> Result<()> {
        self.lap("(host)")?;
        for g in self.grads.iter_mut().flatten() {
            self.gpu.stream.memset_zeros(g)?;
        }
        self.lap("zero grads")
    }

    /// Global-norm clipping (`max_norm ≤ 0`: none) and one AdamW update at
    /// `lr`, as `clip_grad_norm` then `AdamW::step`. Returns the norm
    /// before clipping.
    pub fn clip_and_step(&mut self, max_norm: f64, lr: f64, cfg: &AdamWConfig) -> Result<f64> {
        self.lap("(host)")?;
        let gpu = &self.gpu;
        let mut sum = gpu.stream.alloc_zeros::<f64>(1)?;
        for g in self.grads.iter().flatten() {
            grad_sumsq(gpu, &mut sum, g)?;
        }
        let norm = self.fetch(&sum)?[0].sqrt();
        ensure!(
            norm.is_finite(),
            "the gradient norm is {norm}: training diverged"
        );
        let clip_scale = if max_norm > 0.0 && norm > max_norm {
            (max_norm / norm) as f32
        } else {
            1.0
        };
        self.t += 1;
        let bc1 = 1.0 - cfg.beta1.powi(self.t as i32);
        let bc2 = 1.0 - cfg.beta2.powi(self.t as i32);
        for i in 0..self.params.len() {
            let (Some(g), Some(m), Some(v)) =
                (&self.grads[i], &mut self.adam_m[i], &mut self.adam_v[i])
            else {
                continue;
            };
            let Dense::F32(p) = &mut self.params[i] else {
                bail!("internal: a trainable parameter is not f32");
            };
            let decay = if self.shapes[i].len() >= 2 {
                (lr * cfg.weight_decay) as f32
            } else {
                0.0
            };
            let step = AdamWStep {
                clip_scale,
                beta1: cfg.beta1 as f32,
                beta2: cfg.beta2 as f32,
                eps: cfg.eps as f32,
                step: (lr / bc1) as f32,
                inv_bc2: (1.0 / bc2) as f32,
                decay,
            };
            adamw_step(gpu, p, g, m, v, step)?;
        }
        self.lap("optimizer")?;
        Ok(norm)
    }

    /// Copies the trainable tensors into `params` and the moments into
    /// `opt` (for checkpoints and adapter export).
    pub fn download(&self, params: &mut Params<f32>, opt: Option<&mut AdamW>) -> Result<()> {
        let s = &self.gpu.stream;
        for i in 0..self.params.len() {
            if !self.trainable[i] {
                continue;
            }
            if let Dense::F32(p) = &self.params[i] {
                params.data[i] = s.clone_dtoh(p)?;
            }
        }
        if let Some(opt) = opt {
            for i in 0..self.params.len() {
                if let (Some(m), Some(v)) = (&self.adam_m[i], &self.adam_v[i]) {
                    opt.m[i] = s.clone_dtoh(m)?;
                    opt.v[i] = s.clone_dtoh(v)?;
                }
            }
            opt.t = self.t;
        }
        self.gpu.synchronize()
    }

    /// The accumulated gradients of the trainable tensors into `grads`
    /// (tests compare them with the CPU's).
    pub fn download_grads(&self, grads: &mut Params<f32>) -> Result<()> {
        for (i, g) in self.grads.iter().enumerate() {
            if let Some(g) = g {
                grads.data[i] = self.fetch(g)?;
            }
        }
        Ok(())
    }

    /// The reverse of [`download`](Self::download) (resuming a run).
    pub fn upload(&mut self, params: &Params<f32>, opt: &AdamW) -> Result<()> {
        let s = self.gpu.stream.clone();
        for i in 0..self.params.len() {
            if !self.trainable[i] {
                continue;
            }
            if let Dense::F32(p) = &mut self.params[i] {
                s.memcpy_htod(&params.data[i], p)?;
            }
            if let (Some(m), Some(v)) = (&mut self.adam_m[i], &mut self.adam_v[i])
                && opt.m[i].len() == m.len()
            {
                s.memcpy_htod(&opt.m[i], m)?;
                s.memcpy_htod(&opt.v[i], v)?;
            }
        }
        self.t = opt.t;
        Ok(())
    }

    // ---- the step ----------------------------------------------------------

    fn run(&mut self, batch: &Batch, grad_scale: Option<f64>) -> Result<StepStats> {
        check_batch(&self.config, batch)?;
        let cfg = self.config.clone();
        let (n, c, v) = (batch.len(), cfg.hidden_size, cfg.vocab_size);
        let nl = cfg.num_layers;
        let e = self.moe.num_experts;
        let s = self.gpu.stream.clone();
        let dev = DeviceBatch {
            tokens: s.clone_htod(&batch.tokens)?,
            targets: s.clone_htod(&batch.targets)?,
            docs: DocRows::new(&self.gpu, &batch.docs)?,
        };

        self.lap("(host)")?;
        let mut x = self.zeros(n * c)?;
        match &self.params[self.idx.embed] {
            Dense::F32(w) => embedding_forward(&self.gpu, &mut x, &dev.tokens, n, w, c)?,
            Dense::Bf16(w) => embedding_forward(&self.gpu, &mut x, &dev.tokens, n, w, c)?,
        }
        self.lap("embedding")?;
        let mut saved = Vec::with_capacity(nl);
        let mut stats = StepStats {
            n_tokens: n,
            domain_top1: vec![(0, 0); e],
            ..Default::default()
        };
        for l in 0..nl {
            let (layer, out) = self.layer_forward(l, x, batch, &dev)?;
            routing_stats(
                &self.moe,
                &layer.probs_host,
                &layer.logits_host,
                &layer.idx_host,
                batch,
                &mut stats,
            );
            x = out;
            if grad_scale.is_some() {
                saved.push(if self.checkpointing {
                    Saved::Input(layer.x_in)
                } else {
                    Saved::Full(Box::new(layer))
                });
            }
        }
        let (mut xnf, mut rstdf) = (self.zeros(n * c)?, self.zeros(n)?);
        rmsnorm_forward_rstd(
            &self.gpu,
            &mut xnf,
            &mut rstdf,
            &x,
            self.f32_param(self.idx.norm)?,
            n,
            c,
            cfg.rms_norm_eps,
        )?;
        let head = self.idx.lm_head.unwrap_or(self.idx.embed);
        let mut logits = self.zeros(n * v)?;
        self.linear(&mut logits, &xnf, head, n, c, v)?;
        self.lap("fwd final norm, lm head")?;
        let n_targets = batch.num_targets();
        let mut losses = self.zeros(n)?;
        let dloss = grad_scale.unwrap_or(1.0) as f32 / n_targets.max(1) as f32;
        cross_entropy_fused(
            &self.gpu,
            &mut losses,
            &mut logits,
            &dev.targets,
            dloss,
            n,
            v,
            grad_scale.is_some(),
        )?;
        let losses = self.fetch(&losses)?;
        self.lap("cross-entropy")?;
        stats.n_targets = n_targets;
        stats.ce = losses.iter().map(|l| f64::from(*l)).sum::<f64>() / n_targets.max(1) as f64;
        stats.aux /= nl as f64;
        stats.z /= nl as f64;
        stats.domain /= nl as f64;
        stats.routing_entropy /= (nl * n) as f64;
        stats.total = stats.ce
            + self.moe.aux_coef * stats.aux
            + self.moe.z_coef * stats.z
            + self.moe.domain_coef * stats.domain;
        let Some(gs) = grad_scale else {
            return Ok(stats);
        };

        let mut grads = std::mem::take(&mut self.grads);
        let result = (|| -> Result<()> {
            // `logits` now holds the gradient of the loss w.r.t. the logits.
            let mut dxnf = self.zeros(n * c)?;
            self.linear_backward_input(&mut dxnf, &logits, head, n, c, v)?;
            drop(logits);
            let mut dx = self.zeros(n * c)?;
            rmsnorm_backward(
                &self.gpu,
                &mut dx,
                None,
                &dxnf,
                &x,
                self.f32_param(self.idx.norm)?,
                &rstdf,
                n,
                c,
            )?;
            self.lap("bwd lm head, final norm")?;
            for l in (0..nl).rev() {
                let layer = match saved.pop().expect("one saved entry per layer") {
                    Saved::Full(layer) => *layer,
                    Saved::Input(x_in) => self.layer_forward(l, x_in, batch, &dev)?.0,
                };
                dx = self.layer_backward(l, &layer, &dx, batch, &dev, &mut grads, gs)?;
            }
            Ok(())
        })();
        self.grads = grads;
        result?;
        Ok(stats)
    }

    fn layer_forward(
        &self,
        l: usize,
        x_in: Buf,
        batch: &Batch,
        dev: &DeviceBatch,
    ) -> Result<(Layer, Buf)> {
        let cfg = &self.config;
        let li = &self.idx.layers[l];
        let gpu = &self.gpu;
        let n = batch.len();
        let (c, qd, kvd, f) = (
            cfg.hidden_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.intermediate_size,
        );
        let (e, k, r) = (self.moe.num_experts, self.moe.top_k, self.moe.rank);
        let eps = cfg.rms_norm_eps;

        // Attention block.
        let (mut xn1, mut rstd1) = (self.zeros(n * c)?, self.zeros(n)?);
        rmsnorm_forward_rstd(
            gpu,
            &mut xn1,
            &mut rstd1,
            &x_in,
            self.f32_param(li.attn_norm)?,
            n,
            c,
            eps,
        )?;
        let dims = [(c, qd), (c, kvd), (c, kvd)];
        let weights = [li.wq, li.wk, li.wv];
        let mut attn_xa: [Option<Buf>; 4] = Default::default();
        let mut qkv = Vec::with_capacity(3);
        for j in 0..3 {
            let (inp_d, out_d) = dims[j];
            let mut y = self.zeros(n * out_d)?;
            self.linear(&mut y, &xn1, weights[j], n, inp_d, out_d)?;
            if let Some(lo) = li.attn_lora[j] {
                let mut xa = self.zeros(n * r)?;
                self.lora_forward(&mut y, &mut xa, &xn1, lo, None, n, inp_d, out_d)?;
                attn_xa[j] = Some(xa);
            }
            qkv.push(y);
        }
        let vv = qkv.pop().expect("three projections");
        let mut kk = qkv.pop().expect("three projections");
        let mut q = qkv.pop().expect("three projections");
        rope_forward_positions(
            gpu,
            &mut q,
            &self.rope_cos,
            &self.rope_sin,
            &batch.positions,
            cfg.num_heads,
            cfg.head_dim,
        )?;
        rope_forward_positions(
            gpu,
            &mut kk,
            &self.rope_cos,
            &self.rope_sin,
            &batch.positions,
            cfg.num_kv_heads,
            cfg.head_dim,
        )?;
        self.lap("fwd norm, q/k/v + LoRA, rope")?;
        let (mut att, mut lse) = (self.zeros(n * qd)?, self.zeros(n * cfg.num_heads)?);
        attention_train_forward(
            gpu,
            &mut att,
            &mut lse,
            &q,
            &kk,
            &vv,
            &dev.docs,
            self.attn_shape(),
        )?;
        self.lap("fwd attention")?;
        let mut o = self.zeros(n * c)?;
        self.linear(&mut o, &att, li.wo, n, qd, c)?;
        if let Some(lo) = li.attn_lora[3] {
            let mut xa = self.zeros(n * r)?;
            self.lora_forward(&mut o, &mut xa, &att, lo, None, n, qd, c)?;
            attn_xa[3] = Some(xa);
        }
        let mut x_mid = gpu.stream.clone_dtod(&x_in)?;
        residual_forward(gpu, &mut x_mid, &o, n * c)?;
        drop(o);

        self.lap("fwd o + LoRA, residual")?;
        // MLP block: router, shared frozen gate/up, routed experts.
        let (mut xn2, mut rstd2) = (self.zeros(n * c)?, self.zeros(n)?);
        rmsnorm_forward_rstd(
            gpu,
            &mut xn2,
            &mut rstd2,
            &x_mid,
            self.f32_param(li.mlp_norm)?,
            n,
            c,
            eps,
        )?;
        let mut logits = self.zeros(n * e)?;
        self.gemm.general(
            gpu,
            plain(&xn2),
            transposed(self.f32_param(li.router)?),
            &mut logits,
            n,
            e,
            c,
            1.0,
            0.0,
        )?;
        let mut probs = self.zeros(n * e)?;
        let mut topk_idx = gpu.stream.alloc_zeros::<u32>(n * k)?;
        let mut topk_w = self.zeros(n * k)?;
        router_forward(
            gpu,
            &mut probs,
            &mut topk_idx,
            &mut topk_w,
            &logits,
            n,
            e,
            k,
        )?;
        let probs_host = self.fetch(&probs)?;
        let logits_host = self.fetch(&logits)?;
        let idx_host = self.fetch(&topk_idx)?;
        let w_host = self.fetch(&topk_w)?;
        self.lap("fwd norm, router, routing to host")?;
        let (mut g0, mut u0) = (self.zeros(n * f)?, self.zeros(n * f)?);
        self.linear(&mut g0, &xn2, li.wg, n, c, f)?;
        self.linear(&mut u0, &xn2, li.wu, n, c, f)?;
        self.lap("fwd gate/up (frozen)")?;
        let mut out = self.zeros(n * c)?;
        let mut hbar = self.zeros(n * f)?;
        let mut experts = Vec::with_capacity(e);
        for (ei, ex) in li.experts.iter().enumerate() {
            let (mut rows, mut slots, mut w) = (Vec::new(), Vec::new(), Vec::new());
            for t in 0..n {
                for slot in 0..k {
                    if idx_host[t * k + slot] as usize == ei {
                        rows.push(t as u32);
                        slots.push(slot as u32);
                        w.push(w_host[t * k + slot]);
                    }
                }
            }
            let m = rows.len();
            if m == 0 {
                experts.push(None);
                continue;
            }
            let mp = m.div_ceil(EXPERT_ROWS) * EXPERT_ROWS;
            w.resize(mp, 0.0);
            let rows = gpu.stream.clone_htod(&rows)?;
            let slots = gpu.stream.clone_htod(&slots)?;
            let w = gpu.stream.clone_htod(&w)?;
            let mut x = self.zeros(mp * c)?;
            gather_rows(gpu, &mut x, &xn2, &rows, m, c)?;
            let (mut g, mut u) = (self.zeros(mp * f)?, self.zeros(mp * f)?);
            gather_rows(gpu, &mut g, &g0, &rows, m, f)?;
            gather_rows(gpu, &mut u, &u0, &rows, m, f)?;
            let (mut gate_xa, mut up_xa) = (self.zeros(mp * r)?, self.zeros(mp * r)?);
            self.lora_forward(&mut g, &mut gate_xa, &x, ex.gate, None, mp, c, f)?;
            self.lora_forward(&mut u, &mut up_xa, &x, ex.up, None, mp, c, f)?;
            let mut h = self.zeros(mp * f)?;
            swiglu_forward(gpu, &mut h, &g, &u, mp * f)?;
            scatter_add_rows(gpu, &mut hbar, &h, &rows, Some(&w), 1.0, m, f)?;
            let mut down = self.zeros(mp * c)?;
            let mut down_xa = self.zeros(mp * r)?;
            self.lora_forward(&mut down, &mut down_xa, &h, ex.down, Some(&w), mp, f, c)?;
            scatter_add_rows(gpu, &mut out, &down, &rows, None, 1.0, m, c)?;
            experts.push(Some(Expert {
                m,
                mp,
                rows,
                slots,
                w,
                x,
                gate_xa,
                up_xa,
                g,
                u,
                h,
                down_xa,
            }));
        }
        self.lap("fwd experts")?;
        let mut base_down = self.zeros(n * c)?;
        self.linear(&mut base_down, &hbar, li.wd, n, f, c)?;
        residual_forward(gpu, &mut out, &base_down, n * c)?;
        residual_forward(gpu, &mut out, &x_mid, n * c)?;
        self.lap("fwd down (frozen), residual")?;
        let layer = Layer {
            x_in,
            rstd1,
            xn1,
            q,
            k: kk,
            v: vv,
            attn_xa,
            att,
            lse,
            x_mid,
            rstd2,
            xn2,
            probs,
            topk_idx,
            topk_w,
            probs_host,
            logits_host,
            idx_host,
            experts,
        };
        Ok((layer, out))
    }

    #[allow(clippy::too_many_arguments)]
    fn layer_backward(
        &self,
        l: usize,
        cc: &Layer,
        dx_out: &Buf,
        batch: &Batch,
        dev: &DeviceBatch,
        grads: &mut [Option<Buf>],
        grad_scale: f64,
    ) -> Result<Buf> {
        let cfg = &self.config;
        let li = &self.idx.layers[l];
        let gpu = &self.gpu;
        let n = batch.len();
        let (c, qd, kvd, f) = (
            cfg.hidden_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.intermediate_size,
        );
        let (e, k) = (self.moe.num_experts, self.moe.top_k);
        let nl = cfg.num_layers as f64;

        // MLP block. dmlp = dx_out; the residual passes dx_out to x_mid.
        let dmlp = dx_out;
        let mut dx_mid = gpu.stream.clone_dtod(dx_out)?;
        let mut dhbar = self.zeros(n * f)?;
        self.linear_backward_input(&mut dhbar, dmlp, li.wd, n, f, c)?;
        self.lap("bwd down (frozen)")?;
        let mut dxn2 = self.zeros(n * c)?;
        let (mut dg0, mut du0) = (self.zeros(n * f)?, self.zeros(n * f)?);
        let mut dtopk_w = self.zeros(n * k)?;
        for (ex, ec) in li.experts.iter().zip(&cc.experts) {
            let Some(ec) = ec else { continue };
            let (m, mp) = (ec.m, ec.mp);
            let mut dout_e = self.zeros(mp * c)?;
            gather_rows(gpu, &mut dout_e, dmlp, &ec.rows, m, c)?;
            let mut dhbar_e = self.zeros(mp * f)?;
            gather_rows(gpu, &mut dhbar_e, &dhbar, &ec.rows, m, f)?;
            // h_e enters through w·h_e (into the frozen down) and LoRA_down.
            let mut dw = self.zeros(mp)?;
            row_dot(gpu, &mut dw, &dhbar_e, &ec.h, 1.0, false, mp, f)?;
            let mut dh = self.zeros(mp * f)?;
            scale_rows(gpu, &mut dh, &dhbar_e, Some(&ec.w), 1.0, mp, f)?;
            drop(dhbar_e);
            self.lora_backward(
                &mut dh,
                grads,
                ex.down,
                Some(&mut dw),
                &dout_e,
                &ec.h,
                &ec.down_xa,
                Some(&ec.w),
                mp,
                f,
                c,
            )?;
            scatter_slots(gpu, &mut dtopk_w, &dw, &ec.rows, &ec.slots, k, m)?;
            let (mut dg, mut du) = (self.zeros(mp * f)?, self.zeros(mp * f)?);
            swiglu_backward(gpu, &mut dg, &mut du, &dh, &ec.g, &ec.u, mp * f)?;
            scatter_add_rows(gpu, &mut dg0, &dg, &ec.rows, None, 1.0, m, f)?;
            scatter_add_rows(gpu, &mut du0, &du, &ec.rows, None, 1.0, m, f)?;
            let mut dx_e = self.zeros(mp * c)?;
            self.lora_backward(
                &mut dx_e,
                grads,
                ex.gate,
                None,
                &dg,
                &ec.x,
                &ec.gate_xa,
                None,
                mp,
                c,
                f,
            )?;
            self.lora_backward(
                &mut dx_e, grads, ex.up, None, &du, &ec.x, &ec.up_xa, None, mp, c, f,
            )?;
            scatter_add_rows(gpu, &mut dxn2, &dx_e, &ec.rows, None, 1.0, m, c)?;
        }
        self.lap("bwd experts")?;
        self.linear_backward_input(&mut dxn2, &dg0, li.wg, n, c, f)?;
        self.linear_backward_input(&mut dxn2, &du0, li.wu, n, c, f)?;
        drop((dg0, du0, dhbar));
        self.lap("bwd gate/up (frozen)")?;
        // Router: through the top-k weights and the auxiliary losses, whose
        // gradients the host computes from the (small) routing arrays.
        let mut dprobs = vec![0f32; n * e];
        let (_, lb_f) = load_balance_forward(&cc.probs_host, &cc.idx_host, n, e);
        load_balance_backward(
            &mut dprobs,
            &lb_f,
            grad_scale * self.moe.aux_coef / nl,
            n,
            e,
        );
        let dprobs = gpu.stream.clone_htod(&dprobs)?;
        let mut dlogits = self.zeros(n * e)?;
        router_backward(
            gpu,
            &mut dlogits,
            &dtopk_w,
            Some(&dprobs),
            &cc.probs,
            &cc.topk_idx,
            &cc.topk_w,
            n,
            e,
            k,
        )?;
        if self.moe.z_coef != 0.0 || self.moe.domain_coef != 0.0 {
            let mut extra = vec![0f32; n * e];
            if self.moe.z_coef != 0.0 {
                router_z_loss_backward(
                    &mut extra,
                    &cc.logits_host,
                    grad_scale * self.moe.z_coef / nl,
                    n,
                    e,
                );
            }
            if self.moe.domain_coef != 0.0 {
                let (_, count) = domain_routing_loss_forward(&cc.probs_host, &batch.domains, e);
                domain_routing_loss_backward(
                    &mut extra,
                    &cc.probs_host,
                    &batch.domains,
                    grad_scale * self.moe.domain_coef / nl,
                    count,
                    e,
                );
            }
            let extra = gpu.stream.clone_htod(&extra)?;
            residual_forward(gpu, &mut dlogits, &extra, n * e)?;
        }
        // The router is trainable and f32: dxn2 += dlogits · R, dR += dlogitsᵀ · xn2.
        let router = self.f32_param(li.router)?;
        self.gemm.general(
            gpu,
            plain(&dlogits),
            plain(router),
            &mut dxn2,
            n,
            c,
            e,
            1.0,
            1.0,
        )?;
        if let Some(dr) = grads[li.router].as_mut() {
            self.gemm.general(
                gpu,
                transposed(&dlogits),
                plain(&cc.xn2),
                dr,
                e,
                c,
                n,
                1.0,
                1.0,
            )?;
        }
        rmsnorm_backward(
            gpu,
            &mut dx_mid,
            None,
            &dxn2,
            &cc.x_mid,
            self.f32_param(li.mlp_norm)?,
            &cc.rstd2,
            n,
            c,
        )?;
        drop(dxn2);

        self.lap("bwd router, norm")?;
        // Attention block.
        let mut dx_in = gpu.stream.clone_dtod(&dx_mid)?;
        let mut datt = self.zeros(n * qd)?;
        self.linear_backward_input(&mut datt, &dx_mid, li.wo, n, qd, c)?;
        if let (Some(lo), Some(xa)) = (li.attn_lora[3], &cc.attn_xa[3]) {
            self.lora_backward(
                &mut datt, grads, lo, None, &dx_mid, &cc.att, xa, None, n, qd, c,
            )?;
        }
        self.lap("bwd o + LoRA")?;
        let (mut dq, mut dk, mut dv) = (
            self.zeros(n * qd)?,
            self.zeros(n * kvd)?,
            self.zeros(n * kvd)?,
        );
        let mut dsum = self.zeros(n * cfg.num_heads)?;
        attention_train_backward(
            gpu,
            &mut dq,
            &mut dk,
            &mut dv,
            &mut dsum,
            &datt,
            &cc.att,
            &cc.q,
            &cc.k,
            &cc.v,
            &cc.lse,
            &dev.docs,
            self.attn_shape(),
        )?;
        rope_backward_positions(
            gpu,
            &mut dq,
            &self.rope_cos,
            &self.rope_sin,
            &batch.positions,
            cfg.num_heads,
            cfg.head_dim,
        )?;
        rope_backward_positions(
            gpu,
            &mut dk,
            &self.rope_cos,
            &self.rope_sin,
            &batch.positions,
            cfg.num_kv_heads,
            cfg.head_dim,
        )?;
        self.lap("bwd attention, rope")?;
        let mut dxn1 = self.zeros(n * c)?;
        let weights = [li.wq, li.wk, li.wv];
        let douts = [&dq, &dk, &dv];
        let outs = [qd, kvd, kvd];
        for j in 0..3 {
            self.linear_backward_input(&mut dxn1, douts[j], weights[j], n, c, outs[j])?;
            if let (Some(lo), Some(xa)) = (li.attn_lora[j], &cc.attn_xa[j]) {
                self.lora_backward(
                    &mut dxn1, grads, lo, None, douts[j], &cc.xn1, xa, None, n, c, outs[j],
                )?;
            }
        }
        rmsnorm_backward(
            gpu,
            &mut dx_in,
            None,
            &dxn1,
            &cc.x_in,
            self.f32_param(li.attn_norm)?,
            &cc.rstd1,
            n,
            c,
        )?;
        self.lap("bwd q/k/v + LoRA, norm")?;
        Ok(dx_in)
    }

    // ---- building blocks ---------------------------------------------------

    /// A device buffer's contents, after everything queued before it ran.
    fn fetch<T: cudarc::driver::DeviceRepr + Default + Clone>(
        &self,
        buf: &CudaSlice<T>,
    ) -> Result<Vec<T>> {
        let v = self
            .gpu
            .stream
            .clone_dtoh(buf)
            .context("device-to-host copy failed")?;
        self.gpu.synchronize()?;
        Ok(v)
    }

    fn zeros(&self, len: usize) -> Result<Buf> {
        self.gpu
            .stream
            .alloc_zeros(len)
            .with_context(|| format!("cannot allocate {len} floats on the GPU"))
    }

    fn attn_shape(&self) -> AttnShape {
        AttnShape {
            n_heads: self.config.num_heads,
            n_kv_heads: self.config.num_kv_heads,
            head_dim: self.config.head_dim,
        }
    }

    fn f32_param(&self, i: usize) -> Result<&Buf> {
        match &self.params[i] {
            Dense::F32(p) => Ok(p),
            Dense::Bf16(_) => bail!("internal: parameter {i} is bf16 where f32 is needed"),
        }
    }

    fn to_bf16(&self, x: &Buf, len: usize) -> Result<CudaSlice<bf16>> {
        let mut out = self.gpu.stream.alloc_zeros::<bf16>(len)?;
        cast_f32_to_bf16(&self.gpu, &mut out, x, len)?;
        Ok(out)
    }

    /// `y[n, out] = x[n, inp] · Wᵀ` for a frozen projection `W [out, inp]`.
    fn linear(
        &self,
        y: &mut Buf,
        x: &Buf,
        w: usize,
        n: usize,
        inp: usize,
        out: usize,
    ) -> Result<()> {
        match &self.params[w] {
            Dense::F32(wt) => self.gemm.general(
                &self.gpu,
                plain(x),
                transposed(wt),
                y,
                n,
                out,
                inp,
                1.0,
                0.0,
            ),
            Dense::Bf16(wt) => {
                let xb = self.to_bf16(x, n * inp)?;
                self.gemm.general(
                    &self.gpu,
                    plain(&xb),
                    transposed(wt),
                    y,
                    n,
                    out,
                    inp,
                    1.0,
                    0.0,
                )
            }
        }
    }

    /// `dx[n, inp] += dy[n, out] · W` for a frozen projection (no weight gradient).
    fn linear_backward_input(
        &self,
        dx: &mut Buf,
        dy: &Buf,
        w: usize,
        n: usize,
        inp: usize,
        out: usize,
    ) -> Result<()> {
        match &self.params[w] {
            Dense::F32(wt) => {
                self.gemm
                    .general(&self.gpu, plain(dy), plain(wt), dx, n, inp, out, 1.0, 1.0)
            }
            Dense::Bf16(wt) => {
                let db = self.to_bf16(dy, n * out)?;
                self.gemm
                    .general(&self.gpu, plain(&db), plain(wt), dx, n, inp, out, 1.0, 1.0)
            }
        }
    }

    /// `out[m, oc] += scale · ((gate ⊙ (x · Aᵀ)) · Bᵀ)`, saving `xa = x · Aᵀ`
    /// (twin of `lora_forward`; `gate` scales rows).
    #[allow(clippy::too_many_arguments)]
    fn lora_forward(
        &self,
        out: &mut Buf,
        xa: &mut Buf,
        x: &Buf,
        lo: LoraIdx,
        gate: Option<&Buf>,
        m: usize,
        inp: usize,
        oc: usize,
    ) -> Result<()> {
        let (gpu, r, s) = (&self.gpu, self.moe.rank, self.moe.scale() as f32);
        let (a, b) = (self.f32_param(lo.a)?, self.f32_param(lo.b)?);
        self.gemm
            .general(gpu, plain(x), transposed(a), xa, m, r, inp, 1.0, 0.0)?;
        let scaled;
        let (lhs, alpha): (Operand<'_, f32>, f32) = match gate {
            None => (plain(xa), s),
            Some(g) => {
                let mut t = self.zeros(m * r)?;
                scale_rows(gpu, &mut t, xa, Some(g), s, m, r)?;
                scaled = t;
                (plain(&scaled), 1.0)
            }
        };
        self.gemm
            .general(gpu, lhs, transposed(b), out, m, oc, r, alpha, 1.0)
    }

    /// Twin of `lora_backward`: `dinp +=`, `dA +=`, `dB +=` and, with a
    /// gate, `dgate +=`.
    #[allow(clippy::too_many_arguments)]
    fn lora_backward(
        &self,
        dinp: &mut Buf,
        grads: &mut [Option<Buf>],
        lo: LoraIdx,
        dgate: Option<&mut Buf>,
        dout: &Buf,
        inp: &Buf,
        xa: &Buf,
        gate: Option<&Buf>,
        m: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        let (gpu, r, s) = (&self.gpu, self.moe.rank, self.moe.scale() as f32);
        let (a, b) = (self.f32_param(lo.a)?, self.f32_param(lo.b)?);
        let mut u = self.zeros(m * r)?;
        self.gemm
            .general(gpu, plain(dout), plain(b), &mut u, m, r, oc, 1.0, 0.0)?;
        if let Some(dg) = dgate {
            row_dot(gpu, dg, &u, xa, s, true, m, r)?;
        }
        if let Some(db) = grads[lo.b].as_mut() {
            let mut scaled = self.zeros(m * r)?;
            scale_rows(gpu, &mut scaled, xa, gate, s, m, r)?;
            self.gemm.general(
                gpu,
                transposed(dout),
                plain(&scaled),
                db,
                oc,
                r,
                m,
                1.0,
                1.0,
            )?;
        }
        let mut dxa = self.zeros(m * r)?;
        scale_rows(gpu, &mut dxa, &u, gate, s, m, r)?;
        if let Some(da) = grads[lo.a].as_mut() {
            self.gemm
                .general(gpu, transposed(&dxa), plain(inp), da, r, c, m, 1.0, 1.0)?;
        }
        self.gemm
            .general(gpu, plain(&dxa), plain(a), dinp, m, c, r, 1.0, 1.0)
    }
}
