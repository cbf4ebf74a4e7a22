//! The trainable Llama with a mixture of LoRA experts, forward and backward
//! by hand. Reading [`TrainModel::layer_forward`] tells the architecture:
//!
//! ```text
//! x ─ RMSNorm ─ q,k,v (frozen + LoRA) ─ RoPE ─ causal attention per document ─ o (frozen + LoRA) ─ + x
//!   ─ RMSNorm ─ router Linear(c → E) ─ softmax ─ top-k, renormalised weights w
//!             ─ frozen gate/up computed once for all tokens; each routed expert e adds its LoRA
//!               to gate and up, applies SwiGLU: h_e; the frozen down runs once on Σ_e w_e·h_e
//!               and each expert adds w_e · LoRA_down_e(h_e) ─ + x
//! ```
//!
//! (`Σ_e w_e · down(h_e) = down(Σ_e w_e · h_e)`: the MixLoRA layer, with the
//! frozen projections shared by the experts.) [`TrainModel::layer_backward`]
//! walks the same steps in reverse. All parameters, frozen or not, live in
//! one [`Params`] list so that the optimiser, checkpoints and gradient
//! checks treat them uniformly.

use crate::checkpoint::{Architecture, Checkpoint, ModelConfig};
use crate::rng::Rng;
use crate::train::float::Float;
use crate::train::ops::attention::{AttnShape, attention_backward, attention_forward, probs_len};
use crate::train::ops::embedding::{embedding_backward, embedding_forward};
use crate::train::ops::lora::{lora_backward, lora_forward};
use crate::train::ops::losses::{
    IGNORE, cross_entropy_backward, cross_entropy_forward, domain_routing_loss_backward,
    domain_routing_loss_forward, load_balance_backward, load_balance_forward,
    router_z_loss_backward, router_z_loss_forward,
};
use crate::train::ops::matmul::{matmul_backward, matmul_forward};
use crate::train::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use crate::train::ops::rope::{rope_backward, rope_forward};
use crate::train::ops::router::{router_backward, router_forward};
use crate::train::ops::swiglu::{swiglu_backward, swiglu_forward};
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The four domains, in expert order (expert i ↔ domain i).
pub const DOMAINS: [&str; 4] = [
    "psychology",
    "mental_health",
    "bias_detection",
    "general_therapeutic",
];

/// The attention projections plain LoRA may target.
pub const ATTN_TARGETS: [&str; 4] = ["q_proj", "k_proj", "v_proj", "o_proj"];
/// The MLP projections each expert adapts.
pub const EXPERT_TARGETS: [&str; 3] = ["gate_proj", "up_proj", "down_proj"];

/// The adapter's shape and the router's losses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MoeConfig {
    pub rank: usize,
    pub alpha: f64,
    pub num_experts: usize,
    pub top_k: usize,
    pub expert_names: Vec<String>,
    /// Which of q_proj, k_proj, v_proj, o_proj get plain LoRA.
    pub attn_targets: Vec<String>,
    /// Load-balance coefficient (E · Σ f_e · P_e, mean over layers).
    pub aux_coef: f64,
    /// Router z-loss coefficient (0: off).
    pub z_coef: f64,
    /// Domain-supervised routing coefficient (0: off).
    pub domain_coef: f64,
}

impl Default for MoeConfig {
    fn default() -> Self {
        Self {
            rank: 16,
            alpha: 32.0,
            num_experts: 4,
            top_k: 2,
            expert_names: DOMAINS.iter().map(|s| s.to_string()).collect(),
            attn_targets: ATTN_TARGETS.iter().map(|s| s.to_string()).collect(),
            aux_coef: 0.01,
            z_coef: 0.0,
            domain_coef: 0.0,
        }
    }
}

impl MoeConfig {
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            bail!("LoRA rank must be positive");
        }
        if self.num_experts == 0 || self.num_experts > 64 {
            bail!(
                "the number of experts must be between 1 and 64, not {}",
                self.num_experts
            );
        }
        if self.top_k == 0 || self.top_k > self.num_experts {
            bail!(
                "top_k ({}) must be between 1 and the number of experts ({})",
                self.top_k,
                self.num_experts
            );
        }
        if self.expert_names.len() != self.num_experts {
            bail!(
                "{} expert names for {} experts",
                self.expert_names.len(),
                self.num_experts
            );
        }
        for t in &self.attn_targets {
            if !ATTN_TARGETS.contains(&t.as_str()) {
                bail!(
                    "unknown attention LoRA target `{t}` (choose from q_proj, k_proj, v_proj, o_proj)"
                );
            }
        }
        Ok(())
    }
}

/// Every parameter by name, in a fixed order.
#[derive(Clone, Debug)]
pub struct Params<T> {
    pub names: Vec<String>,
    pub shapes: Vec<Vec<usize>>,
    pub data: Vec<Vec<T>>,
    /// Part of the frozen base model (trained only in `--full` mode).
    pub base: Vec<bool>,
}

impl<T: Float> Params<T> {
    fn new() -> Self {
        Self {
            names: Vec::new(),
            shapes: Vec::new(),
            data: Vec::new(),
            base: Vec::new(),
        }
    }

    fn push(&mut self, name: String, shape: Vec<usize>, data: Vec<T>, base: bool) -> usize {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        self.names.push(name);
        self.shapes.push(shape);
        self.data.push(data);
        self.base.push(base);
        self.data.len() - 1
    }

    /// Zeros of the same shapes (a gradient buffer).
    pub fn zeros_like(&self) -> Self {
        Self {
            names: self.names.clone(),
            shapes: self.shapes.clone(),
            data: self.data.iter().map(|d| vec![T::ZERO; d.len()]).collect(),
            base: self.base.clone(),
        }
    }

    pub fn fill_zero(&mut self) {
        for d in &mut self.data {
            d.fill(T::ZERO);
        }
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Number of scalars in the tensors `pick` selects.
    pub fn count(&self, pick: impl Fn(usize) -> bool) -> usize {
        (0..self.len())
            .filter(|&i| pick(i))
            .map(|i| self.data[i].len())
            .sum()
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct LoraIdx {
    pub(crate) a: usize,
    pub(crate) b: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct ExpertIdx {
    pub(crate) gate: LoraIdx,
    pub(crate) up: LoraIdx,
    pub(crate) down: LoraIdx,
}

#[derive(Clone, Debug)]
pub(crate) struct LayerIdx {
    pub(crate) attn_norm: usize,
    pub(crate) wq: usize,
    pub(crate) wk: usize,
    pub(crate) wv: usize,
    pub(crate) wo: usize,
    pub(crate) mlp_norm: usize,
    pub(crate) wg: usize,
    pub(crate) wu: usize,
    pub(crate) wd: usize,
    pub(crate) router: usize,
    pub(crate) experts: Vec<ExpertIdx>,
    /// q, k, v, o.
    pub(crate) attn_lora: [Option<LoraIdx>; 4],
}

#[derive(Clone, Debug)]
pub(crate) struct ModelIdx {
    pub(crate) embed: usize,
    pub(crate) layers: Vec<LayerIdx>,
    pub(crate) norm: usize,
    pub(crate) lm_head: Option<usize>,
}

/// One micro-batch: documents packed back to back into `n` rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub tokens: Vec<u32>,
    /// The token each row predicts, or [`IGNORE`].
    pub targets: Vec<u32>,
    /// Position of each row inside its document (RoPE restarts at 0).
    pub positions: Vec<u32>,
    /// `(start, len)` per document.
    pub docs: Vec<(usize, usize)>,
    /// Domain index per row (255: none).
    pub domains: Vec<u8>,
}

impl Batch {
    /// One document per entry `(tokens, loss on predicting token t+1, domain)`:
    /// row t's target is token t+1 of the same document where that token
    /// has loss, else [`IGNORE`].
    pub fn from_documents(docs: &[(&[u32], &[bool], u8)]) -> Self {
        let mut b = Batch::default();
        for (tokens, loss_on, domain) in docs {
            let start = b.tokens.len();
            for (t, &tok) in tokens.iter().enumerate() {
                b.tokens.push(tok);
                b.positions.push(t as u32);
                b.domains.push(*domain);
                let target = if t + 1 < tokens.len() && loss_on[t + 1] {
                    tokens[t + 1]
                } else {
                    IGNORE
                };
                b.targets.push(target);
            }
            if !tokens.is_empty() {
                b.docs.push((start, tokens.len()));
            }
        }
        b
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn num_targets(&self) -> usize {
        self.targets.iter().filter(|&&t| t != IGNORE).count()
    }
}

/// What one forward (and backward) pass measured.
#[derive(Clone, Debug, Default)]
pub struct StepStats {
    /// Mean masked cross-entropy.
    pub ce: f64,
    /// Load balance, z-loss and domain loss, each a mean over layers.
    pub aux: f64,
    pub z: f64,
    pub domain: f64,
    /// The objective: ce + coefficients · (aux, z, domain).
    pub total: f64,
    pub n_tokens: usize,
    pub n_targets: usize,
    /// Per layer, per expert: routed slots (top-k).
    pub expert_slots: Vec<Vec<usize>>,
    /// Mean routing entropy (nats) over layers and tokens.
    pub routing_entropy: f64,
    /// Mean routing entropy (nats) per layer.
    pub layer_entropy: Vec<f64>,
    /// Per domain: (tokens × layers whose top-1 expert is the domain's, tokens × layers).
    pub domain_top1: Vec<(usize, usize)>,
}

/// Saved activations of one layer.
#[derive(Default)]
struct LayerCache<T> {
    x_in: Vec<T>,
    rstd1: Vec<T>,
    xn1: Vec<T>,
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    /// `inp · Aᵀ` of the attention LoRAs (q, k, v, o).
    attn_xa: [Vec<T>; 4],
    probs: Vec<T>,
    att: Vec<T>,
    x_mid: Vec<T>,
    rstd2: Vec<T>,
    xn2: Vec<T>,
    mlp: MoeMlpCache<T>,
}

/// One expert's share of a layer: the rows routed to it.
#[derive(Default)]
struct ExpertCache<T> {
    rows: Vec<u32>,
    /// The top-k slot each row chose this expert in.
    slots: Vec<u8>,
    w: Vec<T>,
    x: Vec<T>,
    gate_xa: Vec<T>,
    up_xa: Vec<T>,
    g: Vec<T>,
    u: Vec<T>,
    h: Vec<T>,
    down_xa: Vec<T>,
}

/// One layer's MoE-LoRA MLP as slices: the frozen projections (`nn.Linear`
/// layout) and the adapter's router and experts, each expert `(A, B)` for
/// gate, up and down. The inference engine's twin is tested against
/// [`moe_mlp_forward`].
pub struct MoeMlp<'a, T> {
    /// `[f, c]`
    pub gate_proj: &'a [T],
    /// `[f, c]`
    pub up_proj: &'a [T],
    /// `[c, f]`
    pub down_proj: &'a [T],
    /// `[E, c]`
    pub router: &'a [T],
    /// Per expert, `(lora_A, lora_B)` of gate, up, down.
    pub experts: Vec<[(&'a [T], &'a [T]); 3]>,
    pub hidden: usize,
    pub intermediate: usize,
    pub rank: usize,
    pub top_k: usize,
    /// `lora_alpha / r`.
    pub scale: T,
}

/// What [`moe_mlp_forward`] saves for the backward.
#[derive(Default)]
pub struct MoeMlpCache<T> {
    router_logits: Vec<T>,
    router_probs: Vec<T>,
    topk_idx: Vec<u32>,
    topk_w: Vec<T>,
    g0: Vec<T>,
    u0: Vec<T>,
    experts: Vec<ExpertCache<T>>,
    hbar: Vec<T>,
}

impl<T> MoeMlpCache<T> {
    /// `[n, k]`: each row's chosen experts, best first.
    pub fn topk_idx(&self) -> &[u32] {
        &self.topk_idx
    }
}

/// The MoE-LoRA MLP of the normed hidden states `x [n, c]` (no residual):
/// route (softmax, top-k, renormalised), run the frozen gate/up once for
/// all rows, add each routed expert's LoRA to gate and up, SwiGLU, then the
/// frozen down once on `Σ_e w_e·h_e` plus each expert's `w_e·LoRA_down(h_e)`.
pub fn moe_mlp_forward<T: Float>(mlp: &MoeMlp<T>, x: &[T], n: usize) -> (MoeMlpCache<T>, Vec<T>) {
    let (c, f, r, k, s) = (mlp.hidden, mlp.intermediate, mlp.rank, mlp.top_k, mlp.scale);
    let e = mlp.experts.len();
    let mut cc = MoeMlpCache::<T> {
        router_logits: vec![T::ZERO; n * e],
        router_probs: vec![T::ZERO; n * e],
        topk_idx: vec![0; n * k],
        topk_w: vec![T::ZERO; n * k],
        g0: vec![T::ZERO; n * f],
        u0: vec![T::ZERO; n * f],
        experts: Vec::with_capacity(e),
        hbar: vec![T::ZERO; n * f],
    };
    matmul_forward(&mut cc.router_logits, x, mlp.router, n, c, e);
    router_forward(
        &mut cc.router_probs,
        &mut cc.topk_idx,
        &mut cc.topk_w,
        &cc.router_logits,
        n,
        e,
        k,
    );
    matmul_forward(&mut cc.g0, x, mlp.gate_proj, n, c, f);
    matmul_forward(&mut cc.u0, x, mlp.up_proj, n, c, f);
    // The experts' LoRA_down outputs are accumulated straight into `out`.
    let mut out = vec![T::ZERO; n * c];
    for (ei, [(ga, gb), (ua, ub), (da, db)]) in mlp.experts.iter().enumerate() {
        let mut ec = ExpertCache::<T>::default();
        for t in 0..n {
            for slot in 0..k {
                if cc.topk_idx[t * k + slot] as usize == ei {
                    ec.rows.push(t as u32);
                    ec.slots.push(slot as u8);
                    ec.w.push(cc.topk_w[t * k + slot]);
                }
            }
        }
        let m = ec.rows.len();
        if m == 0 {
            cc.experts.push(ec);
            continue;
        }
        ec.x = gather(x, &ec.rows, c);
        ec.g = gather(&cc.g0, &ec.rows, f);
        ec.u = gather(&cc.u0, &ec.rows, f);
        ec.gate_xa = vec![T::ZERO; m * r];
        ec.up_xa = vec![T::ZERO; m * r];
        lora_forward(
            &mut ec.g,
            &mut ec.gate_xa,
            &ec.x,
            ga,
            gb,
            None,
            s,
            m,
            c,
            r,
            f,
        );
        lora_forward(&mut ec.u, &mut ec.up_xa, &ec.x, ua, ub, None, s, m, c, r, f);
        ec.h = vec![T::ZERO; m * f];
        swiglu_forward(&mut ec.h, &ec.g, &ec.u);
        for (i, &t) in ec.rows.iter().enumerate() {
            let t = t as usize;
            for (hb, h) in cc.hbar[t * f..(t + 1) * f]
                .iter_mut()
                .zip(&ec.h[i * f..(i + 1) * f])
            {
                *hb += ec.w[i] * *h;
            }
        }
        let mut down = vec![T::ZERO; m * c];
        ec.down_xa = vec![T::ZERO; m * r];
        lora_forward(
            &mut down,
            &mut ec.down_xa,
            &ec.h,
            da,
            db,
            Some(&ec.w),
            s,
            m,
            f,
            r,
            c,
        );
        scatter_add(&mut out, &down, &ec.rows, c);
        cc.experts.push(ec);
    }
    let mut base_down = vec![T::ZERO; n * c];
    matmul_forward(&mut base_down, &cc.hbar, mlp.down_proj, n, f, c);
    for (o, d) in out.iter_mut().zip(&base_down) {
        *o += *d;
    }
    (cc, out)
}

/// (frozen base parameters, trainable adapter parameters) of a MoE-LoRA
/// adapter on a model of this config: the arithmetic behind the
/// "trainable fraction" printed at the start of training.
pub fn parameter_counts(cfg: &ModelConfig, moe: &MoeConfig) -> (usize, usize) {
    let (c, q, kv, f) = (
        cfg.hidden_size,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.intermediate_size,
    );
    let r = moe.rank;
    let lora = |inp: usize, out: usize| r * (inp + out);
    let mut layer = 0;
    for t in &moe.attn_targets {
        layer += match t.as_str() {
            "q_proj" => lora(c, q),
            "k_proj" | "v_proj" => lora(c, kv),
            _ => lora(q, c),
        };
    }
    layer += moe.num_experts * c; // router
    layer += moe.num_experts * (2 * lora(c, f) + lora(f, c));
    (cfg.num_parameters(), cfg.num_layers * layer)
}

/// Mutable access to gradients of trainable parameters only.
struct Grads<'a, T> {
    data: &'a mut [Vec<T>],
    trainable: &'a [bool],
}

impl<T> Grads<'_, T> {
    fn one(&mut self, i: usize) -> Option<&mut [T]> {
        if self.trainable[i] {
            Some(&mut self.data[i])
        } else {
            None
        }
    }

    fn two(&mut self, i: usize, j: usize) -> (Option<&mut [T]>, Option<&mut [T]>) {
        assert_ne!(i, j);
        let (ti, tj) = (self.trainable[i], self.trainable[j]);
        let (lo, hi) = (i.min(j), i.max(j));
        let (a, b) = self.data.split_at_mut(hi);
        let (x, y) = (&mut a[lo][..], &mut b[0][..]);
        let (gi, gj) = if i < j { (x, y) } else { (y, x) };
        (ti.then_some(gi), tj.then_some(gj))
    }
}

pub struct TrainModel<T: Float> {
    pub config: ModelConfig,
    pub moe: MoeConfig,
    pub params: Params<T>,
    pub(crate) idx: ModelIdx,
    pub(crate) rope_cos: Vec<T>,
    pub(crate) rope_sin: Vec<T>,
    /// `--full`: the base weights train too.
    pub train_base: bool,
    /// Keep only each layer's input and recompute the rest in the backward.
    pub checkpointing: bool,
    /// The checkpoint the base was loaded from.
    pub base_dir: Option<std::path::PathBuf>,
}

impl<T: Float> TrainModel<T> {
    /// Loads the frozen base from a checkpoint directory and initialises a
    /// fresh adapter from `seed` (LoRA B zero, as PEFT does: the adapted
    /// model starts equal to the base).
    pub fn from_checkpoint(dir: &Path, moe: MoeConfig, seed: u64) -> Result<Self> {
        let ckpt = Checkpoint::open(dir)?;
        let mut model = Self::from_opened(&ckpt, moe, seed)?;
        model.base_dir = Some(dir.to_path_buf());
        Ok(model)
    }

    pub fn from_opened(ckpt: &Checkpoint, moe: MoeConfig, seed: u64) -> Result<Self> {
        moe.validate()?;
        let cfg = ckpt.config.clone();
        if cfg.architecture == Architecture::Qwen2 || cfg.qkv_bias || cfg.o_bias || cfg.mlp_bias {
            bail!(
                "training supports llama/mistral checkpoints without biases (this one has `model_type: {}`)",
                cfg.architecture.model_type()
            );
        }
        if cfg.sliding_window.is_some() {
            bail!("training does not support sliding-window attention");
        }
        let (c, q, kv, f, v) = (
            cfg.hidden_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.intermediate_size,
            cfg.vocab_size,
        );
        let mut p = Params::new();
        let base = |p: &mut Params<T>, name: String, shape: Vec<usize>| -> Result<usize> {
            let t = ckpt.tensors.get(&name)?;
            t.expect_shape(&shape)?;
            let data = t.to_f32().into_iter().map(T::from_f32).collect();
            Ok(p.push(name, shape, data, true))
        };
        let embed = base(&mut p, "model.embed_tokens.weight".into(), vec![v, c])?;
        let mut layers = Vec::new();
        for i in 0..cfg.num_layers {
            let pre = format!("model.layers.{i}");
            layers.push(LayerIdx {
                attn_norm: base(&mut p, format!("{pre}.input_layernorm.weight"), vec![c])?,
                wq: base(&mut p, format!("{pre}.self_attn.q_proj.weight"), vec![q, c])?,
                wk: base(
                    &mut p,
                    format!("{pre}.self_attn.k_proj.weight"),
                    vec![kv, c],
                )?,
                wv: base(
                    &mut p,
                    format!("{pre}.self_attn.v_proj.weight"),
                    vec![kv, c],
                )?,
                wo: base(&mut p, format!("{pre}.self_attn.o_proj.weight"), vec![c, q])?,
                mlp_norm: base(
                    &mut p,
                    format!("{pre}.post_attention_layernorm.weight"),
                    vec![c],
                )?,
                wg: base(&mut p, format!("{pre}.mlp.gate_proj.weight"), vec![f, c])?,
                wu: base(&mut p, format!("{pre}.mlp.up_proj.weight"), vec![f, c])?,
                wd: base(&mut p, format!("{pre}.mlp.down_proj.weight"), vec![c, f])?,
                router: 0,
                experts: Vec::new(),
                attn_lora: [None; 4],
            });
        }
        let norm = base(&mut p, "model.norm.weight".into(), vec![c])?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(base(&mut p, "lm_head.weight".into(), vec![v, c])?)
        };

        // The adapter, after the base, in a fixed order.
        let r = moe.rank;
        let rng_for = |name: &str| Rng::for_stream(seed, name);
        let lora = |p: &mut Params<T>, prefix: String, inp: usize, out: usize| -> LoraIdx {
            let bound = 1.0 / (inp as f64).sqrt();
            let name_a = format!("{prefix}.lora_A.weight");
            let mut rng = rng_for(&name_a);
            let a_data = (0..r * inp)
                .map(|_| T::from_f64(bound * (2.0 * rng.next_f64() - 1.0)))
                .collect();
            let a = p.push(name_a, vec![r, inp], a_data, false);
            let b = p.push(
                format!("{prefix}.lora_B.weight"),
                vec![out, r],
                vec![T::ZERO; out * r],
                false,
            );
            LoraIdx { a, b }
        };
        for (i, layer) in layers.iter_mut().enumerate() {
            let pre = format!("model.layers.{i}");
            for (j, target) in ATTN_TARGETS.iter().enumerate() {
                if moe.attn_targets.iter().any(|t| t == target) {
                    let (inp, out) = match j {
                        0 => (c, q),
                        1 | 2 => (c, kv),
                        _ => (q, c),
                    };
                    layer.attn_lora[j] =
                        Some(lora(&mut p, format!("{pre}.self_attn.{target}"), inp, out));
                }
            }
            let router_name = format!("{pre}.mlp.router.weight");
            let mut rng = Rng::for_stream(seed, &router_name);
            let router_data = (0..moe.num_experts * c)
                .map(|_| T::from_f64(0.02 * rng.next_normal()))
                .collect();
            layer.router = p.push(router_name, vec![moe.num_experts, c], router_data, false);
            for e in 0..moe.num_experts {
                let ep = format!("{pre}.mlp.experts.{e}");
                layer.experts.push(ExpertIdx {
                    gate: lora(&mut p, format!("{ep}.gate_proj"), c, f),
                    up: lora(&mut p, format!("{ep}.up_proj"), c, f),
                    down: lora(&mut p, format!("{ep}.down_proj"), f, c),
                });
            }
        }
        let (cos, sin) = crate::model::rope::rope_tables(&cfg, cfg.max_position_embeddings);
        Ok(Self {
            config: cfg,
            moe,
            params: p,
            idx: ModelIdx {
                embed,
                layers,
                norm,
                lm_head,
            },
            rope_cos: cos.into_iter().map(T::from_f32).collect(),
            rope_sin: sin.into_iter().map(T::from_f32).collect(),
            train_base: false,
            checkpointing: false,
            base_dir: None,
        })
    }

    /// Whether parameter `i` receives gradients and updates.
    pub fn is_trainable(&self, i: usize) -> bool {
        self.train_base || !self.params.base[i]
    }

    pub fn trainable_mask(&self) -> Vec<bool> {
        (0..self.params.len())
            .map(|i| self.is_trainable(i))
            .collect()
    }

    /// Same model in another precision (e.g. f64 for gradient checks).
    pub fn convert<U: Float>(&self) -> TrainModel<U> {
        let conv = |v: &Vec<T>| {
            v.iter()
                .map(|x| U::from_f64(x.to_f64()))
                .collect::<Vec<U>>()
        };
        TrainModel {
            config: self.config.clone(),
            moe: self.moe.clone(),
            params: Params {
                names: self.params.names.clone(),
                shapes: self.params.shapes.clone(),
                data: self.params.data.iter().map(conv).collect(),
                base: self.params.base.clone(),
            },
            idx: self.idx.clone(),
            rope_cos: conv(&self.rope_cos),
            rope_sin: conv(&self.rope_sin),
            train_base: self.train_base,
            checkpointing: self.checkpointing,
            base_dir: self.base_dir.clone(),
        }
    }

    fn check_batch(&self, batch: &Batch) -> Result<()> {
        check_batch(&self.config, batch)
    }

    /// Logits `[n, V]` of every row (tests, adapter export checks).
    pub fn logits(&self, batch: &Batch) -> Result<Vec<T>> {
        self.check_batch(batch)?;
        let cfg = &self.config;
        let (n, c, v) = (batch.len(), cfg.hidden_size, cfg.vocab_size);
        let pd = &self.params.data;
        let mut x = vec![T::ZERO; n * c];
        embedding_forward(&mut x, &batch.tokens, &pd[self.idx.embed], c);
        for l in 0..cfg.num_layers {
            x = self.layer_forward(l, &x, batch).1;
        }
        let (mut xnf, mut rstdf) = (vec![T::ZERO; n * c], vec![T::ZERO; n]);
        rmsnorm_forward(
            &mut xnf,
            &mut rstdf,
            &x,
            &pd[self.idx.norm],
            n,
            c,
            cfg.rms_norm_eps,
        );
        let mut logits = vec![T::ZERO; n * v];
        matmul_forward(
            &mut logits,
            &xnf,
            &pd[self.idx.lm_head.unwrap_or(self.idx.embed)],
            n,
            c,
            v,
        );
        Ok(logits)
    }

    /// The objective and statistics, without gradients (evaluation).
    pub fn forward(&self, batch: &Batch) -> Result<StepStats> {
        self.run(batch, None, T::ONE)
    }

    /// Forward and backward; gradients of trainable parameters are added
    /// into `grads` (scaled by `grad_scale`, e.g. 1/accumulation steps).
    pub fn forward_backward(
        &self,
        batch: &Batch,
        grads: &mut Params<T>,
        grad_scale: f64,
    ) -> Result<StepStats> {
        self.run(batch, Some(grads), T::from_f64(grad_scale))
    }

    fn run(
        &self,
        batch: &Batch,
        grads: Option<&mut Params<T>>,
        grad_scale: T,
    ) -> Result<StepStats> {
        self.check_batch(batch)?;
        let cfg = &self.config;
        let (n, c, v) = (batch.len(), cfg.hidden_size, cfg.vocab_size);
        let nl = cfg.num_layers;
        let e = self.moe.num_experts;
        let pd = &self.params.data;

        let mut x = vec![T::ZERO; n * c];
        embedding_forward(&mut x, &batch.tokens, &pd[self.idx.embed], c);
        let mut caches: Vec<LayerCache<T>> = Vec::with_capacity(nl);
        let mut stats = StepStats {
            n_tokens: n,
            domain_top1: vec![(0, 0); e],
            ..Default::default()
        };
        for l in 0..nl {
            let (cache, out) = self.layer_forward(l, &x, batch);
            x = out;
            self.layer_stats(&cache, batch, &mut stats);
            caches.push(if self.checkpointing {
                LayerCache {
                    x_in: cache.x_in,
                    ..Default::default()
                }
            } else {
                cache
            });
        }
        let (mut xnf, mut rstdf) = (vec![T::ZERO; n * c], vec![T::ZERO; n]);
        rmsnorm_forward(
            &mut xnf,
            &mut rstdf,
            &x,
            &pd[self.idx.norm],
            n,
            c,
            cfg.rms_norm_eps,
        );
        let head = self.idx.lm_head.unwrap_or(self.idx.embed);
        let mut logits = vec![T::ZERO; n * v];
        matmul_forward(&mut logits, &xnf, &pd[head], n, c, v);
        let mut losses = vec![T::ZERO; n];
        cross_entropy_forward(&mut losses, &logits, &batch.targets, v);
        let n_targets = batch.num_targets();
        stats.n_targets = n_targets;
        stats.ce = losses.iter().map(|l| l.to_f64()).sum::<f64>() / n_targets.max(1) as f64;
        stats.aux /= nl as f64;
        stats.z /= nl as f64;
        stats.domain /= nl as f64;
        stats.routing_entropy /= (nl * n) as f64;
        stats.total = stats.ce
            + self.moe.aux_coef * stats.aux
            + self.moe.z_coef * stats.z
            + self.moe.domain_coef * stats.domain;

        let Some(grads) = grads else { return Ok(stats) };
        let trainable = self.trainable_mask();
        let mut g = Grads {
            data: &mut grads.data,
            trainable: &trainable,
        };
        // Loss head.
        let mut dlogits = vec![T::ZERO; n * v];
        cross_entropy_backward(
            &mut dlogits,
            &logits,
            &batch.targets,
            grad_scale / T::from_f64(n_targets.max(1) as f64),
            v,
        );
        drop(logits);
        let mut dxnf = vec![T::ZERO; n * c];
        matmul_backward(
            Some(&mut dxnf),
            g.one(head),
            &dlogits,
            &xnf,
            &pd[head],
            n,
            c,
            v,
        );
        drop(dlogits);
        let mut dx = vec![T::ZERO; n * c];
        rmsnorm_backward(
            &mut dx,
            g.one(self.idx.norm),
            &dxnf,
            &x,
            &pd[self.idx.norm],
            &rstdf,
            n,
            c,
        );
        for l in (0..nl).rev() {
            let cache = std::mem::take(&mut caches[l]);
            let cache = if self.checkpointing {
                self.layer_forward(l, &cache.x_in, batch).0
            } else {
                cache
            };
            dx = self.layer_backward(l, &cache, &dx, batch, &mut g, grad_scale);
        }
        if let Some(dwte) = g.one(self.idx.embed) {
            embedding_backward(dwte, &dx, &batch.tokens, c);
        }
        Ok(stats)
    }

    fn layer_stats(&self, cache: &LayerCache<T>, batch: &Batch, stats: &mut StepStats) {
        let mlp = &cache.mlp;
        routing_stats(
            &self.moe,
            &mlp.router_probs,
            &mlp.router_logits,
            &mlp.topk_idx,
            batch,
            stats,
        );
    }

    fn lora_scale(&self) -> T {
        T::from_f64(self.moe.scale())
    }

    /// One decoder layer's forward from its input `x_in [n, c]`: the saved
    /// activations the backward needs, and the output.
    fn layer_forward(&self, l: usize, x_in: &[T], batch: &Batch) -> (LayerCache<T>, Vec<T>) {
        let cfg = &self.config;
        let li = &self.idx.layers[l];
        let pd = &self.params.data;
        let n = batch.len();
        let (c, qd, kvd, f) = (
            cfg.hidden_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.intermediate_size,
        );
        let (k, r) = (self.moe.top_k, self.moe.rank);
        let s = self.lora_scale();
        let eps = cfg.rms_norm_eps;
        let mut cc = LayerCache::<T> {
            x_in: x_in.to_vec(),
            ..Default::default()
        };

        // Attention block.
        cc.xn1 = vec![T::ZERO; n * c];
        cc.rstd1 = vec![T::ZERO; n];
        rmsnorm_forward(
            &mut cc.xn1,
            &mut cc.rstd1,
            x_in,
            &pd[li.attn_norm],
            n,
            c,
            eps,
        );
        let proj_dims = [(c, qd), (c, kvd), (c, kvd)];
        let weights = [li.wq, li.wk, li.wv];
        let mut qkv: [Vec<T>; 3] = Default::default();
        for j in 0..3 {
            let (inp_d, out_d) = proj_dims[j];
            qkv[j] = vec![T::ZERO; n * out_d];
            matmul_forward(&mut qkv[j], &cc.xn1, &pd[weights[j]], n, inp_d, out_d);
            if let Some(lo) = li.attn_lora[j] {
                cc.attn_xa[j] = vec![T::ZERO; n * r];
                lora_forward(
                    &mut qkv[j],
                    &mut cc.attn_xa[j],
                    &cc.xn1,
                    &pd[lo.a],
                    &pd[lo.b],
                    None,
                    s,
                    n,
                    inp_d,
                    r,
                    out_d,
                );
            }
        }
        let [mut q, mut kk, vv] = qkv;
        rope_forward(
            &mut q,
            &self.rope_cos,
            &self.rope_sin,
            &batch.positions,
            cfg.num_heads,
            cfg.head_dim,
        );
        rope_forward(
            &mut kk,
            &self.rope_cos,
            &self.rope_sin,
            &batch.positions,
            cfg.num_kv_heads,
            cfg.head_dim,
        );
        let shape = AttnShape {
            n_heads: cfg.num_heads,
            n_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
        };
        cc.att = vec![T::ZERO; n * qd];
        cc.probs = vec![T::ZERO; probs_len(&batch.docs, cfg.num_heads)];
        attention_forward(&mut cc.att, &mut cc.probs, &q, &kk, &vv, &batch.docs, shape);
        (cc.q, cc.k, cc.v) = (q, kk, vv);
        let mut o = vec![T::ZERO; n * c];
        matmul_forward(&mut o, &cc.att, &pd[li.wo], n, qd, c);
        if let Some(lo) = li.attn_lora[3] {
            cc.attn_xa[3] = vec![T::ZERO; n * r];
            lora_forward(
                &mut o,
                &mut cc.attn_xa[3],
                &cc.att,
                &pd[lo.a],
                &pd[lo.b],
                None,
                s,
                n,
                qd,
                r,
                c,
            );
        }
        cc.x_mid = x_in.iter().zip(&o).map(|(a, b)| *a + *b).collect();

        // MLP block: router, shared frozen gate/up, routed experts.
        cc.xn2 = vec![T::ZERO; n * c];
        cc.rstd2 = vec![T::ZERO; n];
        rmsnorm_forward(
            &mut cc.xn2,
            &mut cc.rstd2,
            &cc.x_mid,
            &pd[li.mlp_norm],
            n,
            c,
            eps,
        );
        let experts = li
            .experts
            .iter()
            .map(|ex| [ex.gate, ex.up, ex.down].map(|lo| (&pd[lo.a][..], &pd[lo.b][..])))
            .collect();
        let mlp = MoeMlp {
            gate_proj: &pd[li.wg],
            up_proj: &pd[li.wu],
            down_proj: &pd[li.wd],
            router: &pd[li.router],
            experts,
            hidden: c,
            intermediate: f,
            rank: r,
            top_k: k,
            scale: s,
        };
        let (mlp_cache, mut out) = moe_mlp_forward(&mlp, &cc.xn2, n);
        cc.mlp = mlp_cache;
        for (o, x) in out.iter_mut().zip(&cc.x_mid) {
            *o += *x;
        }
        (cc, out)
    }

    /// Gradient w.r.t. the layer's input, given the gradient w.r.t. its
    /// output; parameter gradients are added into `g`.
    fn layer_backward(
        &self,
        l: usize,
        cc: &LayerCache<T>,
        dx_out: &[T],
        batch: &Batch,
        g: &mut Grads<T>,
        grad_scale: T,
    ) -> Vec<T> {
        let cfg = &self.config;
        let li = &self.idx.layers[l];
        let pd = &self.params.data;
        let n = batch.len();
        let (c, qd, kvd, f) = (
            cfg.hidden_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.intermediate_size,
        );
        let (e, k, r) = (self.moe.num_experts, self.moe.top_k, self.moe.rank);
        let s = self.lora_scale();
        let nl = cfg.num_layers as f64;
        let gs = grad_scale.to_f64();

        // MLP block. dmlp = dx_out; the residual passes dx_out to x_mid.
        let dmlp = dx_out;
        let mut dx_mid = dx_out.to_vec();
        let mut dhbar = vec![T::ZERO; n * f];
        matmul_backward(
            Some(&mut dhbar),
            g.one(li.wd),
            dmlp,
            &cc.mlp.hbar,
            &pd[li.wd],
            n,
            f,
            c,
        );
        let mut dxn2 = vec![T::ZERO; n * c];
        let mut dg0 = vec![T::ZERO; n * f];
        let mut du0 = vec![T::ZERO; n * f];
        let mut dtopk_w = vec![T::ZERO; n * k];
        for (ex, ec) in li.experts.iter().zip(&cc.mlp.experts) {
            let m = ec.rows.len();
            if m == 0 {
                continue;
            }
            let dout_e = gather(dmlp, &ec.rows, c);
            let dhbar_e = gather(&dhbar, &ec.rows, f);
            // h_e enters through w·h_e (into the frozen down) and LoRA_down.
            let mut dh = vec![T::ZERO; m * f];
            let mut dw = vec![T::ZERO; m];
            for i in 0..m {
                let (dhb, h) = (&dhbar_e[i * f..(i + 1) * f], &ec.h[i * f..(i + 1) * f]);
                dw[i] = dhb.iter().zip(h).map(|(a, b)| *a * *b).sum();
                for (d, x) in dh[i * f..(i + 1) * f].iter_mut().zip(dhb) {
                    *d = ec.w[i] * *x;
                }
            }
            let (da, db) = g.two(ex.down.a, ex.down.b);
            lora_backward(
                &mut dh,
                da,
                db,
                Some(&mut dw),
                &dout_e,
                &ec.h,
                &ec.down_xa,
                &pd[ex.down.a],
                &pd[ex.down.b],
                Some(&ec.w),
                s,
                m,
                f,
                r,
                c,
            );
            for (i, &t) in ec.rows.iter().enumerate() {
                dtopk_w[t as usize * k + ec.slots[i] as usize] += dw[i];
            }
            let (mut dg, mut du) = (vec![T::ZERO; m * f], vec![T::ZERO; m * f]);
            swiglu_backward(&mut dg, &mut du, &dh, &ec.g, &ec.u);
            scatter_add(&mut dg0, &dg, &ec.rows, f);
            scatter_add(&mut du0, &du, &ec.rows, f);
            let mut dx_e = vec![T::ZERO; m * c];
            let (da, db) = g.two(ex.gate.a, ex.gate.b);
            lora_backward(
                &mut dx_e,
                da,
                db,
                None,
                &dg,
                &ec.x,
                &ec.gate_xa,
                &pd[ex.gate.a],
                &pd[ex.gate.b],
                None,
                s,
                m,
                c,
                r,
                f,
            );
            let (da, db) = g.two(ex.up.a, ex.up.b);
            lora_backward(
                &mut dx_e,
                da,
                db,
                None,
                &du,
                &ec.x,
                &ec.up_xa,
                &pd[ex.up.a],
                &pd[ex.up.b],
                None,
                s,
                m,
                c,
                r,
                f,
            );
            scatter_add(&mut dxn2, &dx_e, &ec.rows, c);
        }
        matmul_backward(
            Some(&mut dxn2),
            g.one(li.wg),
            &dg0,
            &cc.xn2,
            &pd[li.wg],
            n,
            c,
            f,
        );
        matmul_backward(
            Some(&mut dxn2),
            g.one(li.wu),
            &du0,
            &cc.xn2,
            &pd[li.wu],
            n,
            c,
            f,
        );
        drop((dg0, du0, dhbar));
        // Router: through the top-k weights and the auxiliary losses.
        let mut dprobs = vec![T::ZERO; n * e];
        let (_, lb_f) = load_balance_forward(&cc.mlp.router_probs, &cc.mlp.topk_idx, n, e);
        load_balance_backward(&mut dprobs, &lb_f, gs * self.moe.aux_coef / nl, n, e);
        let mut dlogits = vec![T::ZERO; n * e];
        router_backward(
            &mut dlogits,
            &dtopk_w,
            Some(&dprobs),
            &cc.mlp.router_probs,
            &cc.mlp.topk_idx,
            &cc.mlp.topk_w,
            n,
            e,
            k,
        );
        if self.moe.z_coef != 0.0 {
            router_z_loss_backward(
                &mut dlogits,
                &cc.mlp.router_logits,
                gs * self.moe.z_coef / nl,
                n,
                e,
            );
        }
        if self.moe.domain_coef != 0.0 {
            let (_, count) = domain_routing_loss_forward(&cc.mlp.router_probs, &batch.domains, e);
            domain_routing_loss_backward(
                &mut dlogits,
                &cc.mlp.router_probs,
                &batch.domains,
                gs * self.moe.domain_coef / nl,
                count,
                e,
            );
        }
        matmul_backward(
            Some(&mut dxn2),
            g.one(li.router),
            &dlogits,
            &cc.xn2,
            &pd[li.router],
            n,
            c,
            e,
        );
        rmsnorm_backward(
            &mut dx_mid,
            g.one(li.mlp_norm),
            &dxn2,
            &cc.x_mid,
            &pd[li.mlp_norm],
            &cc.rstd2,
            n,
            c,
        );
        drop(dxn2);

        // Attention block.
        let do_ = &dx_mid;
        let mut dx_in = dx_mid.clone();
        let mut datt = vec![T::ZERO; n * qd];
        matmul_backward(
            Some(&mut datt),
            g.one(li.wo),
            do_,
            &cc.att,
            &pd[li.wo],
            n,
            qd,
            c,
        );
        if let Some(lo) = li.attn_lora[3] {
            let (da, db) = g.two(lo.a, lo.b);
            lora_backward(
                &mut datt,
                da,
                db,
                None,
                do_,
                &cc.att,
                &cc.attn_xa[3],
                &pd[lo.a],
                &pd[lo.b],
                None,
                s,
                n,
                qd,
                r,
                c,
            );
        }
        let (mut dq, mut dk, mut dv) = (
            vec![T::ZERO; n * qd],
            vec![T::ZERO; n * kvd],
            vec![T::ZERO; n * kvd],
        );
        let shape = AttnShape {
            n_heads: cfg.num_heads,
            n_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
        };
        attention_backward(
            &mut dq,
            &mut dk,
            &mut dv,
            &datt,
            &cc.q,
            &cc.k,
            &cc.v,
            &cc.probs,
            &batch.docs,
            shape,
        );
        rope_backward(
            &mut dq,
            &self.rope_cos,
            &self.rope_sin,
            &batch.positions,
            cfg.num_heads,
            cfg.head_dim,
        );
        rope_backward(
            &mut dk,
            &self.rope_cos,
            &self.rope_sin,
            &batch.positions,
            cfg.num_kv_heads,
            cfg.head_dim,
        );
        let mut dxn1 = vec![T::ZERO; n * c];
        let weights = [li.wq, li.wk, li.wv];
        let douts = [&dq, &dk, &dv];
        let outs = [qd, kvd, kvd];
        for j in 0..3 {
            matmul_backward(
                Some(&mut dxn1),
                g.one(weights[j]),
                douts[j],
                &cc.xn1,
                &pd[weights[j]],
                n,
                c,
                outs[j],
            );
            if let Some(lo) = li.attn_lora[j] {
                let (da, db) = g.two(lo.a, lo.b);
                lora_backward(
                    &mut dxn1,
                    da,
                    db,
                    None,
                    douts[j],
                    &cc.xn1,
                    &cc.attn_xa[j],
                    &pd[lo.a],
                    &pd[lo.b],
                    None,
                    s,
                    n,
                    c,
                    r,
                    outs[j],
                );
            }
        }
        rmsnorm_backward(
            &mut dx_in,
            g.one(li.attn_norm),
            &dxn1,
            &cc.x_in,
            &pd[li.attn_norm],
            &cc.rstd1,
            n,
            c,
        );
        dx_in
    }
}

/// Rejects a batch the model cannot run (empty, inconsistent, token ids or
/// positions out of range).
pub(crate) fn check_batch(config: &ModelConfig, batch: &Batch) -> Result<()> {
    let n = batch.tokens.len();
    if n == 0 {
        bail!("empty batch");
    }
    if batch.targets.len() != n || batch.positions.len() != n || batch.domains.len() != n {
        bail!("internal: batch arrays of different lengths");
    }
    if batch.docs.iter().map(|d| d.1).sum::<usize>() != n {
        bail!("internal: batch documents do not cover the batch");
    }
    let v = config.vocab_size as u32;
    if let Some(t) = batch
        .tokens
        .iter()
        .chain(batch.targets.iter().filter(|&&t| t != IGNORE))
        .find(|&&t| t >= v)
    {
        bail!("token id {t} is out of range for a vocabulary of {v}");
    }
    let max_pos = config.max_position_embeddings;
    if let Some(&p) = batch.positions.iter().find(|&&p| p as usize >= max_pos) {
        bail!("a document reaches position {p}, past the model's context of {max_pos}");
    }
    Ok(())
}

/// Adds one layer's routing to `stats`: the load-balance, z and domain
/// losses, slots per expert, routing entropy and top-1 domain agreement,
/// from the router's probabilities and logits `[n, E]` and top-k `[n, k]`.
pub(crate) fn routing_stats<T: Float>(
    moe: &MoeConfig,
    router_probs: &[T],
    router_logits: &[T],
    topk_idx: &[u32],
    batch: &Batch,
    stats: &mut StepStats,
) {
    let (n, e, k) = (batch.len(), moe.num_experts, moe.top_k);
    let (lb, _) = load_balance_forward(router_probs, topk_idx, n, e);
    stats.aux += lb;
    if moe.z_coef != 0.0 {
        stats.z += router_z_loss_forward(router_logits, n, e);
    }
    if moe.domain_coef != 0.0 {
        stats.domain += domain_routing_loss_forward(router_probs, &batch.domains, e).0;
    }
    let mut slots = vec![0usize; e];
    for &j in topk_idx {
        slots[j as usize] += 1;
    }
    stats.expert_slots.push(slots);
    let mut entropy = 0.0;
    for (t, p) in router_probs.chunks_exact(e).enumerate() {
        entropy -= p
            .iter()
            .map(|p| p.to_f64())
            .filter(|&p| p > 0.0)
            .map(|p| p * p.ln())
            .sum::<f64>();
        let d = batch.domains[t] as usize;
        if d < e {
            stats.domain_top1[d].1 += 1;
            if topk_idx[t * k] as usize == d {
                stats.domain_top1[d].0 += 1;
            }
        }
    }
    stats.routing_entropy += entropy;
    stats.layer_entropy.push(entropy / n.max(1) as f64);
}

fn gather<T: Float>(x: &[T], rows: &[u32], width: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(rows.len() * width);
    for &t in rows {
        let t = t as usize;
        out.extend_from_slice(&x[t * width..(t + 1) * width]);
    }
    out
}

fn scatter_add<T: Float>(x: &mut [T], src: &[T], rows: &[u32], width: usize) {
    for (i, &t) in rows.iter().enumerate() {
        let t = t as usize;
        for (a, b) in x[t * width..(t + 1) * width]
            .iter_mut()
            .zip(&src[i * width..(i + 1) * width])
        {
            *a += *b;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::init_model::{InitSpec, Preset, write_checkpoint};
    use crate::model::{Llama, LoadOptions, Logits};

    pub(crate) fn tiny_checkpoint() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write_checkpoint(
            &InitSpec::new(Preset::Tiny, Architecture::Llama),
            dir.path(),
        )
        .unwrap();
        dir
    }

    fn test_batch(vocab: usize) -> Batch {
        let mut rng = Rng::new(5);
        let mut tok = |n: usize| {
            (0..n)
                .map(|_| rng.below(vocab as u64) as u32)
                .collect::<Vec<_>>()
        };
        let (a, b) = (tok(7), tok(6));
        let la = [false, false, true, true, false, true, true];
        let lb = [true; 6];
        Batch::from_documents(&[(&a, &la, 1), (&b, &lb, 255)])
    }

    #[test]
    fn base_forward_matches_the_inference_engine_when_adapters_are_zero() {
        let dir = tiny_checkpoint();
        let model =
            TrainModel::<f32>::from_checkpoint(dir.path(), MoeConfig::default(), 1).unwrap();
        let engine = Llama::load(
            dir.path(),
            CpuBackend::new(2).unwrap(),
            &LoadOptions {
                dtype: None,
                max_seq: Some(64),
            },
        )
        .unwrap();
        let tokens: Vec<u32> = (0..20).map(|i| (i * 37 % 500) as u32).collect();
        let batch = Batch::from_documents(&[(&tokens, &[true; 20], 255)]);
        let ours = model.logits(&batch).unwrap();
        let mut act = engine.new_activations(32, true).unwrap();
        let mut cache = engine.new_cache().unwrap();
        let mut theirs = Vec::new();
        engine
            .forward(&mut act, &mut cache, &tokens, Logits::All, &mut theirs)
            .unwrap();
        let max_diff = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let max_abs = theirs.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(
            max_diff < 1e-4 * max_abs.max(1.0),
            "max |diff| {max_diff} (logits up to {max_abs})"
        );
    }

    #[test]
    fn whole_tiny_model_gradient_matches_finite_differences() {
        let dir = tiny_checkpoint();
        let moe = MoeConfig {
            z_coef: 0.1,
            domain_coef: 0.3,
            aux_coef: 0.5,
            ..MoeConfig::default()
        };
        let m32 = TrainModel::<f32>::from_checkpoint(dir.path(), moe, 1).unwrap();
        let mut model = m32.convert::<f64>();
        model.train_base = true;
        // Non-zero LoRA B and a livelier router, so that every path carries gradient.
        let mut rng = Rng::new(17);
        for i in 0..model.params.len() {
            let name = &model.params.names[i];
            if name.ends_with("lora_B.weight") || name.ends_with("router.weight") {
                for x in &mut model.params.data[i] {
                    *x = 0.05 * rng.next_normal();
                }
            }
        }
        let batch = test_batch(model.config.vocab_size);
        for checkpointing in [false, true] {
            model.checkpointing = checkpointing;
            let mut grads = model.params.zeros_like();
            model.forward_backward(&batch, &mut grads, 1.0).unwrap();
            let eps = 1e-5;
            let mut worst = (0.0f64, String::new());
            for i in 0..model.params.len() {
                let g = &grads.data[i];
                // The two largest gradients and one random entry.
                let mut order: Vec<usize> = (0..g.len()).collect();
                order.sort_by(|&a, &b| g[b].abs().partial_cmp(&g[a].abs()).unwrap());
                let mut picks = vec![
                    order[0],
                    order[1.min(g.len() - 1)],
                    rng.below(g.len() as u64) as usize,
                ];
                if checkpointing {
                    picks.truncate(1);
                }
                for j in picks {
                    let orig = model.params.data[i][j];
                    model.params.data[i][j] = orig + eps;
                    let lp = model.forward(&batch).unwrap().total;
                    model.params.data[i][j] = orig - eps;
                    let lm = model.forward(&batch).unwrap().total;
                    model.params.data[i][j] = orig;
                    let numeric = (lp - lm) / (2.0 * eps);
                    let err = (numeric - g[j]).abs() / numeric.abs().max(1e-2);
                    if err > worst.0 {
                        worst = (
                            err,
                            format!(
                                "{}[{j}]: analytic {:e}, numeric {numeric:e}",
                                model.params.names[i], g[j]
                            ),
                        );
                    }
                }
            }
            eprintln!(
                "checkpointing={checkpointing}: worst relative error {:e} at {}",
                worst.0, worst.1
            );
            assert!(
                worst.0 < 1e-5,
                "checkpointing={checkpointing}: worst {}: {}",
                worst.0,
                worst.1
            );
        }
    }

    #[test]
    fn trainable_fraction_of_a_7b_llama_is_between_1_and_2_percent() {
        let cfg = ModelConfig::from_json(r#"{"model_type":"llama","vocab_size":32000,"hidden_size":4096,
            "intermediate_size":11008,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":32}"#).unwrap();
        let (total, trainable) = parameter_counts(&cfg, &MoeConfig::default());
        let frac = trainable as f64 / total as f64;
        assert!(
            (0.01..=0.02).contains(&frac),
            "{trainable} / {total} = {frac}"
        );
    }
}
