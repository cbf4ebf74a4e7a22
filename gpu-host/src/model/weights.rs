//! The parameters of a Llama-family model, read from a checkpoint by their
//! Hugging Face names, shape-checked against the config, and handed to the
//! backend.

use crate::backend::{Backend, HostData, WeightDtype};
use crate::checkpoint::{Checkpoint, ModelConfig, TensorDtype};
use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

pub struct LayerWeights<W> {
    pub input_layernorm: W,
    pub q_proj: W,
    pub k_proj: W,
    pub v_proj: W,
    pub o_proj: W,
    pub q_bias: Option<W>,
    pub k_bias: Option<W>,
    pub v_bias: Option<W>,
    pub o_bias: Option<W>,
    pub post_attention_layernorm: W,
    pub gate_proj: W,
    pub up_proj: W,
    pub down_proj: W,
    pub gate_bias: Option<W>,
    pub up_bias: Option<W>,
    pub down_bias: Option<W>,
}

pub struct ModelWeights<W> {
    pub embed_tokens: W,
    pub layers: Vec<LayerWeights<W>>,
    pub norm: W,
    /// `None` when tied to `embed_tokens`.
    pub lm_head: Option<W>,
}

/// Reads tensors by name, checking shapes, and uploads them.
struct Loader<'a, B: Backend> {
    ckpt: &'a Checkpoint,
    backend: &'a B,
    dtype: WeightDtype,
    progress: ProgressBar,
}

impl<B: Backend> Loader<'_, B> {
    fn load(&self, name: &str, shape: &[usize]) -> Result<B::Weight> {
        let t = self.ckpt.tensors.get(name)?;
        t.expect_shape(shape)?;
        let keep_bf16 = shape.len() == 2 && self.dtype == WeightDtype::Bf16;
        let data = if keep_bf16 {
            HostData::Bf16(t.to_bf16())
        } else {
            HostData::F32(t.to_f32())
        };
        self.progress.inc(1);
        self.backend.load_weight(data, shape.len() == 2, self.dtype)
    }

    fn load_opt(&self, present: bool, name: &str, shape: &[usize]) -> Result<Option<B::Weight>> {
        if present {
            self.load(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Resolves `auto` to the checkpoint's own precision (bf16 stays bf16,
/// f16 and f32 become f32).
pub fn resolve_dtype(ckpt: &Checkpoint, requested: Option<WeightDtype>) -> WeightDtype {
    requested.unwrap_or(match ckpt.tensors.dominant_dtype() {
        Some(TensorDtype::Bf16) => WeightDtype::Bf16,
        _ => WeightDtype::F32,
    })
}

pub fn load_weights<B: Backend>(
    ckpt: &Checkpoint,
    backend: &B,
    dtype: WeightDtype,
) -> Result<ModelWeights<B::Weight>> {
    let cfg: &ModelConfig = &ckpt.config;
    let (c, q, kv, f, v) = (
        cfg.hidden_size,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.intermediate_size,
        cfg.vocab_size,
    );
    let per_layer =
        9 + 3 * usize::from(cfg.qkv_bias) + usize::from(cfg.o_bias) + 3 * usize::from(cfg.mlp_bias);
    let total = 2 + cfg.num_layers * per_layer + usize::from(!cfg.tie_word_embeddings);
    let progress = ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template("loading weights {bar:30} {pos}/{len} tensors")
            .expect("valid template"),
    );
    let l = Loader {
        ckpt,
        backend,
        dtype,
        progress,
    };

    let embed_tokens = l.load("model.embed_tokens.weight", &[v, c])?;
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = format!("model.layers.{i}");
        layers.push(LayerWeights {
            input_layernorm: l.load(&format!("{p}.input_layernorm.weight"), &[c])?,
            q_proj: l.load(&format!("{p}.self_attn.q_proj.weight"), &[q, c])?,
            k_proj: l.load(&format!("{p}.self_attn.k_proj.weight"), &[kv, c])?,
            v_proj: l.load(&format!("{p}.self_attn.v_proj.weight"), &[kv, c])?,
            o_proj: l.load(&format!("{p}.self_attn.o_proj.weight"), &[c, q])?,
            q_bias: l.load_opt(cfg.qkv_bias, &format!("{p}.self_attn.q_proj.bias"), &[q])?,
            k_bias: l.load_opt(cfg.qkv_bias, &format!("{p}.self_attn.k_proj.bias"), &[kv])?,
            v_bias: l.load_opt(cfg.qkv_bias, &format!("{p}.self_attn.v_proj.bias"), &[kv])?,
            o_bias: l.load_opt(cfg.o_bias, &format!("{p}.self_attn.o_proj.bias"), &[c])?,
            post_attention_layernorm: l
                .load(&format!("{p}.post_attention_layernorm.weight"), &[c])?,
            gate_proj: l.load(&format!("{p}.mlp.gate_proj.weight"), &[f, c])?,
            up_proj: l.load(&format!("{p}.mlp.up_proj.weight"), &[f, c])?,
            down_proj: l.load(&format!("{p}.mlp.down_proj.weight"), &[c, f])?,
            gate_bias: l.load_opt(cfg.mlp_bias, &format!("{p}.mlp.gate_proj.bias"), &[f])?,
            up_bias: l.load_opt(cfg.mlp_bias, &format!("{p}.mlp.up_proj.bias"), &[f])?,
            down_bias: l.load_opt(cfg.mlp_bias, &format!("{p}.mlp.down_proj.bias"), &[c])?,
        });
    }
    let norm = l.load("model.norm.weight", &[c])?;
    let lm_head = if cfg.tie_word_embeddings {
        None
    } else if ckpt.tensors.contains("lm_head.weight") {
        Some(l.load("lm_head.weight", &[v, c])?)
    } else {
        bail!(
            "tensor `lm_head.weight` is missing from the checkpoint in {} and `tie_word_embeddings` is false",
            ckpt.dir.display()
        );
    };
    l.progress.finish_and_clear();
    Ok(ModelWeights {
        embed_tokens,
        layers,
        norm,
        lm_head,
    })
}
