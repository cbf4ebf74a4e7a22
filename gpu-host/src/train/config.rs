//! The training configuration: a TOML file (`gpu-host train --config
//! FILE.toml`) whose every field is also a command-line flag; flags win.
//! Field names are the same in both (`seq_len` ⇄ `--seq-len`).

use crate::train::model::{ATTN_TARGETS, MoeConfig};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

macro_rules! train_options {
    ($( $(#[$m:meta])* $name:ident : $ty:ty = $default:expr ),* $(,)?) => {
        /// Every option, unset ones `None`: parsed from flags or from TOML.
        #[derive(Clone, Debug, Default, clap::Args, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct TrainArgs {
            $( $(#[$m])* #[arg(long)] pub $name: Option<$ty>, )*
        }

        /// The resolved configuration.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub struct TrainConfig {
            $( pub $name: $ty, )*
        }

        impl TrainArgs {
            /// `self`'s values where set, else `base`'s.
            pub fn over(self, base: TrainArgs) -> TrainArgs {
                TrainArgs { $( $name: self.$name.or(base.$name), )* }
            }

            /// Fills unset options with their defaults.
            pub fn resolve(self) -> TrainConfig {
                TrainConfig { $( $name: self.$name.unwrap_or_else(|| $default), )* }
            }
        }
    };
}

train_options! {
    /// Base checkpoint directory (Hugging Face layout).
    model: PathBuf = PathBuf::new(),
    /// Prepared data directory (`gpu-host data prepare`).
    data: PathBuf = PathBuf::new(),
    /// Run directory: metrics.jsonl, checkpoints/, adapter/.
    out: PathBuf = PathBuf::new(),
    /// Optimiser steps (0: from --epochs).
    steps: usize = 0,
    /// Passes over the training data when --steps is 0.
    epochs: f64 = 1.0,
    /// Peak learning rate.
    lr: f64 = 2e-4,
    /// Final learning rate as a fraction of the peak (cosine floor).
    min_lr_ratio: f64 = 0.1,
    warmup_steps: usize = 10,
    /// AdamW decoupled weight decay (matrices only).
    weight_decay: f64 = 0.0,
    adam_beta1: f64 = 0.9,
    adam_beta2: f64 = 0.999,
    adam_eps: f64 = 1e-8,
    /// Packed sequences per micro-batch.
    micro_batch: usize = 1,
    /// Micro-batches per optimiser step (gradient accumulation).
    accum: usize = 1,
    /// Tokens per packed sequence (documents longer are truncated).
    seq_len: usize = 1024,
    /// Global gradient-norm clip (0: off).
    clip: f64 = 1.0,
    seed: u64 = 0,
    /// Evaluate on the validation split every N steps (0: only at the end).
    eval_every: usize = 50,
    /// Validation micro-batches per evaluation (0: all).
    eval_batches: usize = 8,
    /// Checkpoint every N steps (0: only at the end).
    ckpt_every: usize = 100,
    /// Checkpoints kept on disk.
    keep_checkpoints: usize = 2,
    /// LoRA rank.
    rank: usize = 16,
    /// LoRA alpha (scale alpha / rank).
    alpha: f64 = 32.0,
    experts: usize = 4,
    top_k: usize = 2,
    /// Attention projections with plain LoRA (comma-separated; empty: none).
    #[arg(value_delimiter = ',')]
    attn_targets: Vec<String> = ATTN_TARGETS.iter().map(|s| s.to_string()).collect(),
    /// Load-balance loss coefficient.
    aux_coef: f64 = 0.01,
    /// Router z-loss coefficient (0: off).
    z_coef: f64 = 0.0,
    /// Domain-supervised routing loss coefficient (0: off).
    domain_coef: f64 = 0.0,
    /// Train the base weights too (pretraining).
    #[arg(num_args = 0..=1, default_missing_value = "true")]
    full: bool = false,
    /// Recompute each layer's activations in the backward pass.
    #[arg(num_args = 0..=1, default_missing_value = "true")]
    checkpointing: bool = false,
    /// Worker threads (0: one per core).
    threads: usize = 0,
    /// Where the steps run: auto (the first GPU when one is usable), cpu,
    /// cuda or cuda:N.
    device: String = "auto".into(),
    /// Precision of the frozen base on the GPU: bf16 or f32 (the CPU
    /// reference is always f32).
    dtype: String = "bf16".into(),
    /// Planner profile: fast, balanced, quality, memory-efficient (empty:
    /// none, or the planner's choice when --window is set).
    profile: String = String::new(),
    /// Time window for the run, e.g. 12h, 90m, 60s (empty: none). The run
    /// ends with a final checkpoint before it closes.
    window: String = String::new(),
    /// Safety margin kept free at the end of the window.
    margin: String = "30m".into(),
    /// No progress bar.
    #[arg(num_args = 0..=1, default_missing_value = "true")]
    quiet: bool = false,
    /// Testing: stop abruptly after this step, as a kill would (0: never).
    #[arg(hide = true)]
    kill_after_step: usize = 0,
    /// Testing: sleep this long per step from --slowdown-after-step on.
    #[arg(hide = true)]
    slowdown_ms: u64 = 0,
    #[arg(hide = true)]
    slowdown_after_step: usize = 0,
}

impl TrainArgs {
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid training config {}", path.display()))
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        crate::train::engine::TrainDevice::parse(&self.device)?;
        crate::train::engine::parse_dtype(&self.dtype)?;
        for (name, p) in [
            ("model", &self.model),
            ("data", &self.data),
            ("out", &self.out),
        ] {
            if p.as_os_str().is_empty() {
                bail!(
                    "`{name}` is required (--{name} DIR or `{name} = \"DIR\"` in the config file)"
                );
            }
        }
        if self.micro_batch == 0 || self.accum == 0 {
            bail!("--micro-batch and --accum must be positive");
        }
        if self.seq_len < 8 {
            bail!("--seq-len must be at least 8");
        }
        if self.lr.is_nan() || self.lr <= 0.0 || !(0.0..=1.0).contains(&self.min_lr_ratio) {
            bail!("--lr must be positive and --min-lr-ratio in [0, 1]");
        }
        if self.steps == 0 && (self.epochs.is_nan() || self.epochs <= 0.0) {
            bail!("set --steps or a positive --epochs");
        }
        self.moe().validate()?;
        if !self.window.is_empty() {
            parse_duration(&self.window).context("--window")?;
        }
        parse_duration(&self.margin).context("--margin")?;
        Ok(())
    }

    pub fn moe(&self) -> MoeConfig {
        let names = if self.experts == 4 {
            MoeConfig::default().expert_names
        } else {
            (0..self.experts).map(|e| format!("expert_{e}")).collect()
        };
        MoeConfig {
            rank: self.rank,
            alpha: self.alpha,
            num_experts: self.experts,
            top_k: self.top_k,
            expert_names: names,
            attn_targets: self
                .attn_targets
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            aux_coef: self.aux_coef,
            z_coef: self.z_coef,
            domain_coef: self.domain_coef,
        }
    }
}

/// `12h`, `90m`, `60s`, `1h30m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>()
        && secs >= 0.0
    {
        return Ok(Duration::from_secs_f64(secs));
    }
    let mut total = 0.0;
    let mut num = String::new();
    for ch in s.chars() {
        if ch.is_ascii_digit() || ch == '.' {
            num.push(ch);
            continue;
        }
        let unit = match ch {
            'h' => 3600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => bail!("cannot read duration `{s}` (examples: 12h, 90m, 60s)"),
        };
        let v: f64 = num
            .parse()
            .map_err(|_| anyhow::anyhow!("cannot read duration `{s}` (examples: 12h, 90m, 60s)"))?;
        total += v * unit;
        num.clear();
    }
    if !num.is_empty() || s.is_empty() {
        bail!("cannot read duration `{s}` (examples: 12h, 90m, 60s)");
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let file: TrainArgs = toml::from_str("model = \"m\"\ndata = \"d\"\nout = \"o\"\nlr = 0.001\nsteps = 7\nattn_targets = [\"q_proj\"]").unwrap();
        let flags = TrainArgs {
            lr: Some(0.01),
            ..Default::default()
        };
        let cfg = flags.over(file).resolve();
        assert_eq!(cfg.lr, 0.01);
        assert_eq!(cfg.steps, 7);
        assert_eq!(cfg.rank, 16);
        assert_eq!(cfg.attn_targets, vec!["q_proj"]);
        cfg.validate().unwrap();
        assert!(toml::from_str::<TrainArgs>("learning_rate = 1").is_err());
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("60s").unwrap().as_secs(), 60);
        assert!(parse_duration("soon").is_err());
    }
}
