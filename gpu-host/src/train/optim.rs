//! AdamW with decoupled weight decay over the trainable tensors of a
//! [`Params`] list (f32 master weights), the warmup-then-cosine learning
//! rate, and global-norm gradient clipping.

use crate::train::model::Params;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Moments per parameter tensor (empty for frozen ones).
pub struct AdamW {
    pub config: AdamWConfig,
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    /// Updates applied so far (the bias correction's t).
    pub t: u64,
}

impl AdamW {
    pub fn new(config: AdamWConfig, params: &Params<f32>, trainable: &[bool]) -> Self {
        let zeros = |i: usize| {
            if trainable[i] {
                vec![0f32; params.data[i].len()]
            } else {
                Vec::new()
            }
        };
        Self {
            config,
            m: (0..params.len()).map(zeros).collect(),
            v: (0..params.len()).map(zeros).collect(),
            t: 0,
        }
    }

    /// One update at learning rate `lr`. Decay applies to matrices only
    /// (not to norm weights), decoupled from the gradient (Loshchilov &
    /// Hutter).
    pub fn step(&mut self, params: &mut Params<f32>, grads: &Params<f32>, lr: f64) {
        self.t += 1;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        let bc1 = 1.0 - beta1.powi(self.t as i32);
        let bc2 = 1.0 - beta2.powi(self.t as i32);
        let (b1, b2) = (beta1 as f32, beta2 as f32);
        let step = (lr / bc1) as f32;
        let inv_bc2 = (1.0 / bc2) as f32;
        for i in 0..params.len() {
            if self.m[i].is_empty() {
                continue;
            }
            let decay = if params.shapes[i].len() >= 2 {
                (lr * weight_decay) as f32
            } else {
                0.0
            };
            let (p, g, m, v) = (
                &mut params.data[i],
                &grads.data[i],
                &mut self.m[i],
                &mut self.v[i],
            );
            for j in 0..p.len() {
                m[j] = b1 * m[j] + (1.0 - b1) * g[j];
                v[j] = b2 * v[j] + (1.0 - b2) * g[j] * g[j];
                let denom = (v[j] * inv_bc2).sqrt() + eps as f32;
                p[j] -= step * m[j] / denom + decay * p[j];
            }
        }
    }
}

/// Linear warmup to `peak` over `warmup` steps, then cosine decay to
/// `peak · min_ratio` at `total`. `step` counts from 0.
pub fn lr_at(step: usize, total: usize, warmup: usize, peak: f64, min_ratio: f64) -> f64 {
    if warmup > 0 && step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup.min(step)) as f64 / span as f64).min(1.0);
    let min = peak * min_ratio;
    min + (peak - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// The global L2 norm of the trainable gradients; scales them down to
/// `max_norm` when above it (`max_norm ≤ 0`: no clipping). Returns the
/// norm before clipping.
pub fn clip_grad_norm(grads: &mut Params<f32>, trainable: &[bool], max_norm: f64) -> f64 {
    let mut ss = 0f64;
    for (g, &t) in grads.data.iter().zip(trainable) {
        if t {
            ss += g.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>();
        }
    }
    let norm = ss.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let s = (max_norm / norm) as f32;
        for (g, &t) in grads.data.iter_mut().zip(trainable) {
            if t {
                g.iter_mut().for_each(|x| *x *= s);
            }
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        assert!((lr_at(0, 100, 10, 1.0, 0.1) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, 100, 10, 1.0, 0.1) - 1.0).abs() < 1e-12);
        assert!((lr_at(10, 100, 10, 1.0, 0.1) - 1.0).abs() < 1e-12);
        assert!((lr_at(100, 100, 10, 1.0, 0.1) - 0.1).abs() < 1e-12);
        let mid = lr_at(55, 100, 10, 1.0, 0.1);
        assert!((mid - 0.55).abs() < 1e-9, "{mid}");
    }

    #[test]
    fn adamw_first_step_moves_by_lr_and_decay_is_decoupled() {
        let params = Params::<f32> {
            names: vec!["w".into(), "norm".into()],
            shapes: vec![vec![1, 2], vec![2]],
            data: vec![vec![1.0, -1.0], vec![1.0, 1.0]],
            base: vec![false, false],
        };
        let mut p = params.clone();
        let mut g = params.zeros_like();
        g.data[0] = vec![0.5, -2.0];
        g.data[1] = vec![3.0, 0.0];
        let mut opt = AdamW::new(
            AdamWConfig {
                weight_decay: 0.1,
                ..Default::default()
            },
            &p,
            &[true, true],
        );
        opt.step(&mut p, &g, 0.01);
        // First Adam step: m̂/sqrt(v̂) = sign(g); decay only on the matrix.
        assert!((p.data[0][0] - (1.0 - 0.01 - 0.001)).abs() < 1e-6);
        assert!((p.data[0][1] - (-1.0 + 0.01 + 0.001)).abs() < 1e-6);
        assert!((p.data[1][0] - 0.99).abs() < 1e-6 && p.data[1][1] == 1.0);
        let norm = clip_grad_norm(&mut g, &[true, true], 1.0);
        assert!((norm - (0.25f64 + 4.0 + 9.0).sqrt()).abs() < 1e-6);
        let after: f64 = g
            .data
            .iter()
            .flatten()
            .map(|x| f64::from(*x).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((after - 1.0).abs() < 1e-6);
    }
}
