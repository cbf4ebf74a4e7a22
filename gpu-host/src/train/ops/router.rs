//! The MoE router after its linear layer: softmax over the experts, the
//! top-k kept, their weights renormalised to sum to one.
//! Layouts: `logits`, `dlogits`, `probs`, `dprobs`: `[n, E]`; `topk_idx`,
//! `topk_w`, `dtopk_w`: `[n, k]` (best first; ties go to the lower index).
//!
//! The selection is piecewise constant, so gradients reach the router only
//! through the selected experts' weights (and through the auxiliary losses,
//! which read `probs` or `logits` directly).

use crate::train::float::Float;

#[allow(clippy::too_many_arguments)]
pub fn router_forward<T: Float>(
    probs: &mut [T],
    topk_idx: &mut [u32],
    topk_w: &mut [T],
    logits: &[T],
    n: usize,
    e: usize,
    k: usize,
) {
    assert!(k >= 1 && k <= e, "router: need 1 ≤ k ≤ E");
    assert_eq!(logits.len(), n * e, "router: logits must be [n, E]");
    for t in 0..n {
        let (l, p) = (&logits[t * e..(t + 1) * e], &mut probs[t * e..(t + 1) * e]);
        softmax(p, l);
        let idx = &mut topk_idx[t * k..(t + 1) * k];
        let mut chosen = 0u64;
        for slot in idx.iter_mut() {
            let mut best = usize::MAX;
            for j in 0..e {
                if chosen & (1 << j) == 0 && (best == usize::MAX || p[j] > p[best]) {
                    best = j;
                }
            }
            chosen |= 1 << best;
            *slot = best as u32;
        }
        let sum: T = idx.iter().map(|&j| p[j as usize]).sum();
        for (w, &j) in topk_w[t * k..(t + 1) * k].iter_mut().zip(idx.iter()) {
            *w = p[j as usize] / sum;
        }
    }
}

/// `dlogits += ∂/∂logits` given the gradients w.r.t. the top-k weights and,
/// optionally, w.r.t. the probabilities themselves.
#[allow(clippy::too_many_arguments)]
pub fn router_backward<T: Float>(
    dlogits: &mut [T],
    dtopk_w: &[T],
    dprobs: Option<&[T]>,
    probs: &[T],
    topk_idx: &[u32],
    topk_w: &[T],
    n: usize,
    e: usize,
    k: usize,
) {
    let mut dp = vec![T::ZERO; e];
    for t in 0..n {
        let p = &probs[t * e..(t + 1) * e];
        match dprobs {
            Some(d) => dp.copy_from_slice(&d[t * e..(t + 1) * e]),
            None => dp.fill(T::ZERO),
        }
        // w_j = p_j / S over the selected: ∂w/∂p_j = (δ − w)/S.
        let idx = &topk_idx[t * k..(t + 1) * k];
        let (w, dw) = (&topk_w[t * k..(t + 1) * k], &dtopk_w[t * k..(t + 1) * k]);
        let sum: T = idx.iter().map(|&j| p[j as usize]).sum();
        let wdw: T = w.iter().zip(dw).map(|(a, b)| *a * *b).sum();
        for (&j, dw) in idx.iter().zip(dw) {
            dp[j as usize] += (*dw - wdw) / sum;
        }
        softmax_backward(&mut dlogits[t * e..(t + 1) * e], &dp, p);
    }
}

/// `p = softmax(l)` for one row.
pub fn softmax<T: Float>(p: &mut [T], l: &[T]) {
    let max = l.iter().fold(T::NEG_INFINITY, |m, x| m.max(*x));
    let mut sum = T::ZERO;
    for (p, l) in p.iter_mut().zip(l) {
        *p = (*l - max).exp();
        sum += *p;
    }
    let inv = T::ONE / sum;
    for p in p.iter_mut() {
        *p *= inv;
    }
}

/// `dl += p ⊙ (dp − Σ p·dp)` for one row.
pub fn softmax_backward<T: Float>(dl: &mut [T], dp: &[T], p: &[T]) {
    let dot: T = p.iter().zip(dp).map(|(a, b)| *a * *b).sum();
    for ((dl, dp), p) in dl.iter_mut().zip(dp).zip(p) {
        *dl += *p * (*dp - dot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::ops::gradcheck::*;

    #[test]
    fn router_top2_gradient_matches_finite_differences() {
        let mut rng = crate::rng::Rng::new(9);
        let (n, e, k) = (6, 4, 2);
        let rw = randn(&mut rng, n * k, 1.0);
        let rp = randn(&mut rng, n * e, 1.0);
        let mut inputs = vec![randn(&mut rng, n * e, 1.5)];
        let fwd = |x: &[Vec<f64>]| {
            let (mut p, mut idx, mut w) = (vec![0.0; n * e], vec![0u32; n * k], vec![0.0; n * k]);
            router_forward(&mut p, &mut idx, &mut w, &x[0], n, e, k);
            (p, idx, w)
        };
        let (p, idx, w) = fwd(&inputs);
        assert!(
            w.chunks(2)
                .all(|w| (w[0] + w[1] - 1.0).abs() < 1e-12 && w[0] >= w[1])
        );
        let mut dl = vec![0.0; n * e];
        router_backward(&mut dl, &rw, Some(&rp), &p, &idx, &w, n, e, k);
        check_gradients("router", &mut inputs, &[dl], &["logits"], 100, 1e-7, |x| {
            let (p, _, w) = fwd(x);
            project(&w, &rw) + project(&p, &rp)
        });
    }
}
