//! Writing a complete Hugging Face checkpoint with deterministic random
//! weights: `config.json`, `generation_config.json`, `model.safetensors`,
//! `tokenizer.json` (trained here) and `tokenizer_config.json` (with a chat
//! template). The same spec writes the same bytes, so tests and the Python
//! reference script can each regenerate a checkpoint from its spec alone.

pub mod tokenizer_train;

use crate::backend::WeightDtype;
use crate::checkpoint::Architecture;
use crate::rng::Rng;
use anyhow::{Context, Result, bail};
use half::bf16;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// ≈ 1.8 M parameters: for tests.
    Tiny,
    /// ≈ 25 M parameters: for benchmarks.
    Small,
    /// The small shape pretrained on the synthetic corpus, with a MoE-LoRA
    /// adapter (see `train::demo`): the default served model.
    Demo,
    /// ≈ 1.1 B parameters in TinyLlama-1.1B's shape (22 layers, hidden
    /// 2048, 32 query and 4 kv heads): the training benchmark's 1B class.
    #[value(name = "1b")]
    #[serde(rename = "1b")]
    B1,
}

/// Everything that determines a generated checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InitSpec {
    pub preset: Preset,
    /// `llama` or `qwen2`.
    pub arch: String,
    pub seed: u64,
    /// Share the embedding matrix with the lm_head (default: qwen2 yes,
    /// llama no).
    pub tie_embeddings: Option<bool>,
    /// Llama 3 `rope_scaling` (llama only).
    pub llama3_rope_scaling: bool,
    /// `f32` or `bf16`.
    pub dtype: String,
}

impl InitSpec {
    pub fn new(preset: Preset, arch: Architecture) -> Self {
        Self {
            preset,
            arch: arch.model_type().to_string(),
            seed: 0,
            tie_embeddings: None,
            llama3_rope_scaling: false,
            dtype: "f32".into(),
        }
    }

    fn architecture(&self) -> Result<Architecture> {
        match self.arch.as_str() {
            "llama" => Ok(Architecture::Llama),
            "qwen2" => Ok(Architecture::Qwen2),
            other => bail!("init-model supports --arch llama or qwen2, not `{other}`"),
        }
    }

    fn weight_dtype(&self) -> Result<WeightDtype> {
        match self.dtype.as_str() {
            "f32" => Ok(WeightDtype::F32),
            "bf16" => Ok(WeightDtype::Bf16),
            other => bail!("init-model writes f32 or bf16 weights, not `{other}`"),
        }
    }
}

struct Dims {
    vocab_target: usize,
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    max_pos: usize,
}

fn dims(preset: Preset) -> Dims {
    match preset {
        Preset::Tiny => Dims {
            vocab_target: 512,
            hidden: 192,
            intermediate: 512,
            layers: 4,
            heads: 6,
            kv_heads: 2,
            max_pos: 512,
        },
        Preset::B1 => Dims {
            vocab_target: 32000,
            hidden: 2048,
            intermediate: 5632,
            layers: 22,
            heads: 32,
            kv_heads: 4,
            max_pos: 4096,
        },
        Preset::Small | Preset::Demo => Dims {
            vocab_target: 4096,
            hidden: 512,
            intermediate: 1408,
            layers: 8,
            heads: 8,
            kv_heads: 4,
            max_pos: 2048,
        },
    }
}

/// Writes the checkpoint for `spec` into `out` (created if needed).
pub fn write_checkpoint(spec: &InitSpec, out: &Path) -> Result<()> {
    if spec.preset == Preset::Demo {
        let opts = crate::train::demo::DemoOptions {
            seed: spec.seed,
            ..Default::default()
        };
        return crate::train::demo::write_demo(out, &opts);
    }
    let arch = spec.architecture()?;
    let dtype = spec.weight_dtype()?;
    if spec.llama3_rope_scaling && arch != Architecture::Llama {
        bail!("llama3 rope scaling applies to --arch llama only");
    }
    let d = dims(spec.preset);
    let tie = spec.tie_embeddings.unwrap_or(arch == Architecture::Qwen2);
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;

    let tokenizer = tokenizer_train::train_tokenizer(d.vocab_target)?;
    // Round the embedding up to a multiple of 64, as real models do.
    let vocab = tokenizer.get_vocab_size(true).div_ceil(64) * 64;
    let special_id = |t: &str| tokenizer.token_to_id(t).expect("special token trained");
    let (bos, eos, im_end) = (
        special_id(tokenizer_train::BOS),
        special_id(tokenizer_train::EOS),
        special_id(tokenizer_train::IM_END),
    );

    let head_dim = d.hidden / d.heads;
    let mut config = json!({
        "architectures": [if arch == Architecture::Qwen2 { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
        "model_type": arch.model_type(),
        "vocab_size": vocab,
        "hidden_size": d.hidden,
        "intermediate_size": d.intermediate,
        "num_hidden_layers": d.layers,
        "num_attention_heads": d.heads,
        "num_key_value_heads": d.kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": d.max_pos,
        "rms_norm_eps": 1e-5,
        "rope_theta": if spec.llama3_rope_scaling { 500_000.0 } else { 10_000.0 },
        "rope_scaling": Value::Null,
        "tie_word_embeddings": tie,
        "initializer_range": 0.02,
        "bos_token_id": bos,
        "eos_token_id": im_end,
        "torch_dtype": if dtype == WeightDtype::Bf16 { "bfloat16" } else { "float32" },
        "use_cache": true,
    });
    match arch {
        Architecture::Llama => {
            config["attention_bias"] = json!(false);
            config["mlp_bias"] = json!(false);
            if spec.llama3_rope_scaling {
                // Small original context so that, at this head size, some
                // frequencies are kept, some scaled and some blended.
                config["rope_scaling"] = json!({
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 64,
                });
            }
        }
        Architecture::Qwen2 => {
            config["use_sliding_window"] = json!(false);
            config["sliding_window"] = Value::Null;
            config["max_window_layers"] = json!(d.layers);
            config["attention_dropout"] = json!(0.0);
        }
        Architecture::Mistral => unreachable!("rejected above"),
    }
    write_json(&out.join("config.json"), &config)?;
    write_json(
        &out.join("generation_config.json"),
        &json!({ "bos_token_id": bos, "eos_token_id": [im_end, eos], "do_sample": false, "max_new_tokens": 128 }),
    )?;
    write_json(
        &out.join("tokenizer_config.json"),
        &json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": tokenizer_train::BOS,
            "eos_token": tokenizer_train::IM_END,
            "pad_token": tokenizer_train::EOS,
            "model_max_length": d.max_pos,
            "clean_up_tokenization_spaces": false,
            "chat_template": tokenizer_train::CHAT_TEMPLATE,
        }),
    )?;
    let tokenizer_json = tokenizer
        .to_string(true)
        .map_err(|e| anyhow::anyhow!("cannot serialise the tokenizer: {e}"))?;
    write_file(&out.join("tokenizer.json"), tokenizer_json.as_bytes())?;

    let tensors = random_tensors(spec, arch, &d, vocab, tie);
    write_safetensors(&out.join("model.safetensors"), &tensors, dtype)?;
    Ok(())
}

/// (name, shape, values) for every parameter, in a fixed order.
fn random_tensors(
    spec: &InitSpec,
    arch: Architecture,
    d: &Dims,
    vocab: usize,
    tie: bool,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let (c, f) = (d.hidden, d.intermediate);
    let hd = c / d.heads;
    let (q, kv) = (d.heads * hd, d.kv_heads * hd);
    let mut out = Vec::new();
    // Scales keep activations O(1) so that attention is far from uniform
    // and the logits spread: a wrong op shows up clearly in comparisons.
    let mut normal = |name: String, shape: Vec<usize>, std: f64, mean: f64| {
        let mut rng = Rng::for_stream(spec.seed, &name);
        let n: usize = shape.iter().product();
        let values = (0..n)
            .map(|_| (mean + std * rng.next_normal()) as f32)
            .collect();
        out.push((name, shape, values));
    };
    let inv_sqrt = |fan_in: usize| 1.0 / (fan_in as f64).sqrt();
    normal(
        "model.embed_tokens.weight".into(),
        vec![vocab, c],
        inv_sqrt(c),
        0.0,
    );
    for i in 0..d.layers {
        let p = format!("model.layers.{i}");
        normal(format!("{p}.input_layernorm.weight"), vec![c], 0.1, 1.0);
        normal(
            format!("{p}.self_attn.q_proj.weight"),
            vec![q, c],
            inv_sqrt(c),
            0.0,
        );
        normal(
            format!("{p}.self_attn.k_proj.weight"),
            vec![kv, c],
            inv_sqrt(c),
            0.0,
        );
        normal(
            format!("{p}.self_attn.v_proj.weight"),
            vec![kv, c],
            inv_sqrt(c),
            0.0,
        );
        if arch == Architecture::Qwen2 {
            normal(format!("{p}.self_attn.q_proj.bias"), vec![q], 0.1, 0.0);
            normal(format!("{p}.self_attn.k_proj.bias"), vec![kv], 0.1, 0.0);
            normal(format!("{p}.self_attn.v_proj.bias"), vec![kv], 0.1, 0.0);
        }
        normal(
            format!("{p}.self_attn.o_proj.weight"),
            vec![c, q],
            inv_sqrt(q),
            0.0,
        );
        normal(
            format!("{p}.post_attention_layernorm.weight"),
            vec![c],
            0.1,
            1.0,
        );
        normal(
            format!("{p}.mlp.gate_proj.weight"),
            vec![f, c],
            inv_sqrt(c),
            0.0,
        );
        normal(
            format!("{p}.mlp.up_proj.weight"),
            vec![f, c],
            inv_sqrt(c),
            0.0,
        );
        normal(
            format!("{p}.mlp.down_proj.weight"),
            vec![c, f],
            inv_sqrt(f),
            0.0,
        );
    }
    normal("model.norm.weight".into(), vec![c], 0.1, 1.0);
    if !tie {
        normal("lm_head.weight".into(), vec![vocab, c], inv_sqrt(c), 0.0);
    }
    out
}

fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    dtype: WeightDtype,
) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, values)| {
            let data = match dtype {
                WeightDtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                WeightDtype::Bf16 => values
                    .iter()
                    .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                    .collect(),
            };
            (name.clone(), shape.clone(), data)
        })
        .collect();
    let st_dtype = match dtype {
        WeightDtype::F32 => safetensors::Dtype::F32,
        WeightDtype::Bf16 => safetensors::Dtype::BF16,
    };
    let views = bytes
        .iter()
        .map(|(name, shape, data)| {
            let view = safetensors::tensor::TensorView::new(st_dtype, shape.clone(), data)
                .with_context(|| format!("tensor {name}"))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata: Option<std::collections::HashMap<String, String>> =
        Some([("format".to_string(), "pt".to_string())].into());
    let serialized =
        safetensors::tensor::serialize(views, metadata).context("cannot serialise safetensors")?;
    write_file(path, &serialized)
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).expect("json values serialise");
    text.push('\n');
    write_file(path, text.as_bytes())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
