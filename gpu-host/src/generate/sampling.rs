//! Choosing the next token from logits, in Hugging Face's order:
//! repetition penalty → temperature → top-k → top-p → draw. Temperature 0
//! is greedy (argmax). The draw uses our seeded [`Rng`], so the same seed
//! gives the same tokens.

use crate::rng::Rng;

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1: off).
    pub top_p: f32,
    /// > 1 discourages tokens already in the context (1: off).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            anyhow::bail!(
                "temperature must be a finite number ≥ 0, got {}",
                self.temperature
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            anyhow::bail!("top-p must be in (0, 1], got {}", self.top_p);
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            anyhow::bail!(
                "repetition penalty must be > 0, got {}",
                self.repetition_penalty
            );
        }
        Ok(())
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    /// Reused per call: (token, logit) candidates.
    candidates: Vec<(u32, f32)>,
    seen: Vec<bool>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = Rng::new(params.seed);
        Self {
            params,
            rng,
            candidates: Vec::new(),
            seen: Vec::new(),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token. `logits` is modified (penalised, scaled);
    /// `context` is every token so far (prompt and generated).
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32]) -> u32 {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            apply_repetition_penalty(logits, context, p.repetition_penalty, &mut self.seen);
        }
        if p.temperature == 0.0 {
            return argmax(logits);
        }
        let inv_t = 1.0 / p.temperature;
        self.candidates.clear();
        self.candidates.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, l * inv_t)),
        );
        let by_logit_desc =
            |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_k > 0 && p.top_k < self.candidates.len() {
            self.candidates
                .select_nth_unstable_by(p.top_k - 1, by_logit_desc);
            self.candidates.truncate(p.top_k);
        }
        // Only top-p needs the survivors in order (sorting a 100k+ vocabulary
        // per token is not free).
        if p.top_p < 1.0 {
            self.candidates.sort_unstable_by(by_logit_desc);
        }
        // Softmax over the survivors (in place, as probabilities).
        let max = self
            .candidates
            .iter()
            .map(|c| c.1)
            .fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0f64;
        for c in self.candidates.iter_mut() {
            c.1 = (c.1 - max).exp();
            total += f64::from(c.1);
        }
        if p.top_p < 1.0 {
            let mut cum = 0f64;
            let mut keep = self.candidates.len();
            for (i, c) in self.candidates.iter().enumerate() {
                cum += f64::from(c.1) / total;
                if cum >= f64::from(p.top_p) {
                    keep = i + 1;
                    break;
                }
            }
            self.candidates.truncate(keep);
            total = self.candidates.iter().map(|c| f64::from(c.1)).sum();
        }
        let mut u = self.rng.next_f64() * total;
        for c in &self.candidates {
            u -= f64::from(c.1);
            if u < 0.0 {
                return c.0;
            }
        }
        self.candidates.last().expect("at least one candidate").0
    }
}

/// The first index of the largest logit.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// CTRL-style penalty as transformers applies it: each distinct context
/// token's logit is divided by `penalty` if positive, multiplied if not.
pub fn apply_repetition_penalty(
    logits: &mut [f32],
    context: &[u32],
    penalty: f32,
    seen: &mut Vec<bool>,
) {
    seen.clear();
    seen.resize(logits.len(), false);
    for &t in context {
        let t = t as usize;
        if t < logits.len() && !seen[t] {
            seen[t] = true;
            let l = &mut logits[t];
            *l = if *l < 0.0 { *l * penalty } else { *l / penalty };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_argmax_and_penalty_can_change_it() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&mut [0.1, 2.0, 1.9], &[]), 1);
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 1.5,
            ..Default::default()
        });
        // 2.0 / 1.5 = 1.33 < 1.9
        assert_eq!(s.sample(&mut [0.1, 2.0, 1.9], &[1, 1]), 2);
        let mut l = [-1.0f32, 1.0];
        apply_repetition_penalty(&mut l, &[0, 1], 2.0, &mut Vec::new());
        assert_eq!(l, [-2.0, 0.5]);
    }

    #[test]
    fn same_seed_same_draws_and_top_k_one_is_greedy() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 7) % 13) as f32 * 0.3).collect();
        let params = SamplingParams {
            temperature: 1.0,
            seed: 42,
            ..Default::default()
        };
        let draw = |params: &SamplingParams| {
            let mut s = Sampler::new(params.clone());
            (0..20)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(&params), draw(&params));
        assert_ne!(
            draw(&params),
            draw(&SamplingParams {
                seed: 43,
                ..params.clone()
            })
        );
        let k1 = draw(&SamplingParams {
            top_k: 1,
            ..params.clone()
        });
        assert!(k1.iter().all(|&t| t == argmax(&logits)));
    }

    #[test]
    fn top_p_and_top_k_restrict_the_support() {
        // Probabilities ~ [0.64, 0.24, 0.09, 0.03]: top_p 0.7 keeps the first two.
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_p: 0.7,
            seed: 1,
            ..Default::default()
        });
        let mut seen = [0usize; 4];
        for _ in 0..2000 {
            seen[s.sample(&mut logits.clone(), &[]) as usize] += 1;
        }
        assert!(
            seen[0] > 0 && seen[1] > 0 && seen[2] == 0 && seen[3] == 0,
            "{seen:?}"
        );
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 3,
            seed: 1,
            ..Default::default()
        });
        let mut seen = [0usize; 4];
        for _ in 0..3000 {
            seen[s.sample(&mut logits.clone(), &[]) as usize] += 1;
        }
        assert!(seen[2] > 0 && seen[3] == 0, "{seen:?}");
        // Frequencies follow the softmax: token 0 about 0.665 of top-3 mass.
        let f0 = seen[0] as f64 / 3000.0;
        assert!((f0 - 0.665).abs() < 0.04, "{f0}");
    }
}
