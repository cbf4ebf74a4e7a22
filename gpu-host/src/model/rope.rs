//! Rotary embedding tables for a config: inverse frequencies (with
//! `rope_scaling` applied, as Hugging Face computes them) and the cos/sin
//! tables `[max_seq, head_dim/2]` that `rope_forward` reads.

use crate::checkpoint::{ModelConfig, RopeScaling};

/// `inv_freq[i] = theta^(-2i/head_dim)`, rescaled per `rope_scaling`.
pub fn inv_frequencies(config: &ModelConfig) -> Vec<f64> {
    let d = config.head_dim;
    let base: Vec<f64> = (0..d / 2)
        .map(|i| 1.0 / config.rope_theta.powf((2 * i) as f64 / d as f64))
        .collect();
    match config.rope_scaling {
        RopeScaling::None => base,
        RopeScaling::Linear { factor } => base.into_iter().map(|f| f / factor).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let old_len = original_max_position_embeddings as f64;
            let low_freq_wavelen = old_len / low_freq_factor;
            let high_freq_wavelen = old_len / high_freq_factor;
            base.into_iter()
                .map(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_freq_wavelen {
                        f
                    } else if wavelen > low_freq_wavelen {
                        f / factor
                    } else {
                        let smooth = (old_len / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

/// cos and sin tables `[max_seq, head_dim/2]`. The angle is rounded to f32
/// as `position · inv_freq` in f32, as transformers does, so positions far
/// from zero round the same way in both.
pub fn rope_tables(config: &ModelConfig, max_seq: usize) -> (Vec<f32>, Vec<f32>) {
    let inv: Vec<f32> = inv_frequencies(config)
        .into_iter()
        .map(|f| f as f32)
        .collect();
    let half = inv.len();
    let mut cos = Vec::with_capacity(max_seq * half);
    let mut sin = Vec::with_capacity(max_seq * half);
    for p in 0..max_seq {
        for &f in &inv {
            let angle = f64::from(p as f32 * f);
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}
