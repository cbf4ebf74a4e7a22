//! `config.json` of a Hugging Face Llama-family checkpoint (`llama`,
//! `mistral`, `qwen2`), parsed into the one validated [`ModelConfig`] that
//! the model code reads. Everything architecture-specific is settled here.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// The architectures this engine runs. All are pre-norm decoder-only
/// transformers with RMSNorm, RoPE, grouped-query attention and SwiGLU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
}

impl Architecture {
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Mistral => "mistral",
            Architecture::Qwen2 => "qwen2",
        }
    }
}

/// How rotary frequencies are rescaled for long contexts.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        factor: f64,
    },
    /// Llama 3.x: low frequencies divided by `factor`, high ones kept,
    /// a smooth blend between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on the q, k and v projections (always for qwen2; llama's
    /// `attention_bias` also puts one on o).
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Mistral's sliding window (keys further back than this are masked).
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

/// The raw fields, as Hugging Face writes them.
#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    /// transformers 5 folds `rope_theta` and `rope_scaling` into this.
    rope_parameters: Option<Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    hidden_act: Option<String>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    sliding_window: Option<Value>,
    use_sliding_window: Option<bool>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
    pretraining_tp: Option<usize>,
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("invalid model config {}", path.display()))
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let raw: RawConfig =
            serde_json::from_str(text).context("config.json is not a valid model config")?;
        let model_type = match (&raw.model_type, &raw.architectures) {
            (Some(t), _) => t.clone(),
            (None, Some(archs)) if !archs.is_empty() => archs[0].clone(),
            _ => bail!("config.json has neither `model_type` nor `architectures`"),
        };
        let architecture = match model_type.as_str() {
            "llama" | "LlamaForCausalLM" => Architecture::Llama,
            "mistral" | "MistralForCausalLM" => Architecture::Mistral,
            "qwen2" | "Qwen2ForCausalLM" => Architecture::Qwen2,
            other => bail!(
                "unsupported architecture `model_type: {other}` (supported: llama, mistral, qwen2)"
            ),
        };
        if let Some(act) = &raw.hidden_act
            && act != "silu"
        {
            bail!("unsupported `hidden_act: {act}` (only silu / SwiGLU is implemented)");
        }
        if raw.pretraining_tp.is_some_and(|tp| tp > 1) {
            bail!("`pretraining_tp > 1` is not supported");
        }
        let num_heads = raw.num_attention_heads;
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(num_heads);
        if num_heads == 0 || num_kv_heads == 0 || !num_heads.is_multiple_of(num_kv_heads) {
            bail!(
                "`num_attention_heads` ({num_heads}) must be a positive multiple of `num_key_value_heads` ({num_kv_heads})"
            );
        }
        let head_dim = match raw.head_dim {
            Some(d) => d,
            None => {
                if !raw.hidden_size.is_multiple_of(num_heads) {
                    bail!(
                        "`hidden_size` ({}) is not divisible by `num_attention_heads` ({num_heads})",
                        raw.hidden_size
                    );
                }
                raw.hidden_size / num_heads
            }
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            bail!("head dimension {head_dim} must be even and positive for rotary embeddings");
        }
        for (name, v) in [
            ("vocab_size", raw.vocab_size),
            ("hidden_size", raw.hidden_size),
            ("intermediate_size", raw.intermediate_size),
            ("num_hidden_layers", raw.num_hidden_layers),
        ] {
            if v == 0 {
                bail!("`{name}` must be positive");
            }
        }

        // Rope: transformers 5 writes `rope_parameters`; older files write
        // `rope_theta` + `rope_scaling`.
        let mut rope_theta = raw.rope_theta;
        let mut scaling_value = raw.rope_scaling.clone().filter(|v| !v.is_null());
        if let Some(params) = raw.rope_parameters.as_ref().filter(|v| !v.is_null()) {
            if rope_theta.is_none() {
                rope_theta = params.get("rope_theta").and_then(Value::as_f64);
            }
            if scaling_value.is_none() {
                scaling_value = Some(params.clone());
            }
        }
        let max_position_embeddings = raw.max_position_embeddings.unwrap_or(4096);
        let rope_scaling = parse_rope_scaling(scaling_value.as_ref())?;

        let (qkv_bias, o_bias) = match architecture {
            Architecture::Qwen2 => (true, false),
            Architecture::Llama => {
                let b = raw.attention_bias.unwrap_or(false);
                (b, b)
            }
            Architecture::Mistral => (false, false),
        };
        let mlp_bias = architecture == Architecture::Llama && raw.mlp_bias.unwrap_or(false);
        let sliding_window = match architecture {
            Architecture::Mistral => raw
                .sliding_window
                .as_ref()
                .and_then(Value::as_u64)
                .map(|w| w as usize),
            Architecture::Qwen2 if raw.use_sliding_window.unwrap_or(false) => {
                bail!("qwen2 with `use_sliding_window: true` is not supported")
            }
            _ => None,
        };
        let tie_default = false;
        Ok(ModelConfig {
            architecture,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6) as f32,
            rope_theta: rope_theta.unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(tie_default),
            qkv_bias,
            o_bias,
            mlp_bias,
            sliding_window,
            bos_token_id: token_ids(raw.bos_token_id.as_ref()).first().copied(),
            eos_token_ids: token_ids(raw.eos_token_id.as_ref()),
        })
    }

    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Number of parameters, counting a tied lm_head once.
    pub fn num_parameters(&self) -> usize {
        let (c, q, kv, f) = (
            self.hidden_size,
            self.q_dim(),
            self.kv_dim(),
            self.intermediate_size,
        );
        let mut attn = c * q + 2 * c * kv + q * c;
        if self.qkv_bias {
            attn += q + 2 * kv;
        }
        if self.o_bias {
            attn += c;
        }
        let mut mlp = 3 * c * f;
        if self.mlp_bias {
            mlp += 2 * f + c;
        }
        let layer = attn + mlp + 2 * c;
        let embed = self.vocab_size * c;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + self.num_layers * layer + c + head
    }
}

fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

fn parse_rope_scaling(v: Option<&Value>) -> Result<RopeScaling> {
    let Some(v) = v else {
        return Ok(RopeScaling::None);
    };
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |key: &str| -> Result<f64> {
        v.get(key)
            .and_then(Value::as_f64)
            .with_context(|| format!("rope scaling `{kind}` needs a numeric `{key}`"))
    };
    Ok(match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: num("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
        },
        other => {
            bail!("unsupported rope scaling type `{other}` (supported: default, linear, llama3)")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA: &str = r#"{"model_type":"llama","vocab_size":100,"hidden_size":64,"intermediate_size":128,
        "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"rms_norm_eps":1e-5,
        "rope_theta":500000.0,"rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,
        "high_freq_factor":4.0,"original_max_position_embeddings":64},"tie_word_embeddings":true,
        "bos_token_id":1,"eos_token_id":[2,3]}"#;

    #[test]
    fn parses_llama3_config() {
        let c = ModelConfig::from_json(LLAMA).unwrap();
        assert_eq!(c.architecture, Architecture::Llama);
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.kv_dim(), 32);
        assert!(c.tie_word_embeddings);
        assert_eq!(c.eos_token_ids, vec![2, 3]);
        assert!(matches!(
            c.rope_scaling,
            RopeScaling::Llama3 {
                original_max_position_embeddings: 64,
                ..
            }
        ));
        assert!(!c.qkv_bias);
    }

    #[test]
    fn rejects_unsupported_architecture_by_name() {
        let text = LLAMA.replace("\"llama\"", "\"gpt2\"");
        let err = format!("{:#}", ModelConfig::from_json(&text).unwrap_err());
        assert!(
            err.contains("unsupported architecture") && err.contains("gpt2"),
            "{err}"
        );
    }

    #[test]
    fn rejects_bad_head_counts_and_rope_types() {
        let text = LLAMA.replace("\"num_key_value_heads\":2", "\"num_key_value_heads\":3");
        assert!(
            format!("{:#}", ModelConfig::from_json(&text).unwrap_err())
                .contains("num_key_value_heads")
        );
        let text = LLAMA.replace("\"llama3\"", "\"yarn\"");
        assert!(format!("{:#}", ModelConfig::from_json(&text).unwrap_err()).contains("yarn"));
    }

    #[test]
    fn qwen2_has_qkv_bias_and_reads_rope_parameters() {
        let text = r#"{"model_type":"qwen2","vocab_size":100,"hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
            "rope_parameters":{"rope_type":"default","rope_theta":1000000.0}}"#;
        let c = ModelConfig::from_json(text).unwrap();
        assert!(c.qkv_bias && !c.o_bias);
        assert_eq!(c.rope_theta, 1_000_000.0);
        assert_eq!(c.rope_scaling, RopeScaling::None);
    }

    #[test]
    fn mistral_keeps_its_sliding_window_and_counts_parameters() {
        let text = r#"{"model_type":"mistral","vocab_size":100,"hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":1,"sliding_window":16}"#;
        let c = ModelConfig::from_json(text).unwrap();
        assert_eq!(c.architecture, Architecture::Mistral);
        assert_eq!(c.sliding_window, Some(16));
        assert!(!c.tie_word_embeddings);
        // embed + lm_head + 2 × (q, k, v, o, 3 × mlp, 2 norms) + final norm
        let layer = 64 * 64 + 2 * 64 * 16 + 64 * 64 + 3 * 64 * 128 + 2 * 64;
        assert_eq!(c.num_parameters(), 2 * 100 * 64 + 2 * layer + 64);
    }
}
