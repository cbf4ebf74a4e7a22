//! Losses: masked next-token cross-entropy over the vocabulary, and the
//! router's auxiliary losses (load balance, z-loss, domain supervision).
//! Layouts: `logits`, `dlogits`: `[n, V]` (vocabulary) or `[n, E]`
//! (router); `targets`: `[n]`, [`IGNORE`] where a row has no loss.

use super::router::softmax;
use crate::train::float::Float;
use rayon::prelude::*;

/// A target that contributes no loss (prompt tokens, document ends).
pub const IGNORE: u32 = u32::MAX;

fn logsumexp<T: Float>(l: &[T]) -> T {
    let max = l.iter().fold(T::NEG_INFINITY, |m, x| m.max(*x));
    let s: T = l.iter().map(|x| (*x - max).exp()).sum();
    max + s.ln()
}

/// `losses[t] = logsumexp(logits[t]) − logits[t, targets[t]]` (0 when ignored).
pub fn cross_entropy_forward<T: Float>(losses: &mut [T], logits: &[T], targets: &[u32], v: usize) {
    losses
        .par_iter_mut()
        .zip(logits.par_chunks(v))
        .zip(targets.par_iter())
        .for_each(|((loss, l), &t)| {
            *loss = if t == IGNORE {
                T::ZERO
            } else {
                logsumexp(l) - l[t as usize]
            };
        });
}

/// `dlogits[t] = dloss · (softmax(logits[t]) − onehot(targets[t]))`,
/// zero for ignored rows (overwritten).
pub fn cross_entropy_backward<T: Float>(
    dlogits: &mut [T],
    logits: &[T],
    targets: &[u32],
    dloss: T,
    v: usize,
) {
    dlogits
        .par_chunks_mut(v)
        .zip(logits.par_chunks(v))
        .zip(targets.par_iter())
        .for_each(|((d, l), &t)| {
            if t == IGNORE {
                d.fill(T::ZERO);
                return;
            }
            softmax(d, l);
            d[t as usize] -= T::ONE;
            for x in d.iter_mut() {
                *x *= dloss;
            }
        });
}

/// Switch-style load balance `E · Σ_e f_e · P_e`: `f_e` the fraction of
/// routed slots that went to expert `e` (a constant for the gradient),
/// `P_e` its mean router probability. Returns the loss and `f`.
pub fn load_balance_forward<T: Float>(
    probs: &[T],
    topk_idx: &[u32],
    n: usize,
    e: usize,
) -> (f64, Vec<f64>) {
    let mut f = vec![0.0; e];
    for &j in topk_idx {
        f[j as usize] += 1.0;
    }
    let slots = topk_idx.len().max(1) as f64;
    f.iter_mut().for_each(|x| *x /= slots);
    let mut p = vec![0.0; e];
    for row in probs.chunks_exact(e) {
        for (p, x) in p.iter_mut().zip(row) {
            *p += x.to_f64();
        }
    }
    let loss = e as f64
        * f.iter()
            .zip(&p)
            .map(|(f, p)| f * p / n.max(1) as f64)
            .sum::<f64>();
    (loss, f)
}

/// `dprobs[t, e] += coef · E · f_e / n`.
pub fn load_balance_backward<T: Float>(dprobs: &mut [T], f: &[f64], coef: f64, n: usize, e: usize) {
    for row in dprobs.chunks_exact_mut(e) {
        for (d, f) in row.iter_mut().zip(f) {
            *d += T::from_f64(coef * e as f64 * f / n as f64);
        }
    }
}

/// Router z-loss: `mean_t logsumexp(logits[t])²`.
pub fn router_z_loss_forward<T: Float>(logits: &[T], n: usize, e: usize) -> f64 {
    logits
        .chunks_exact(e)
        .map(|l| logsumexp(l).to_f64().powi(2))
        .sum::<f64>()
        / n.max(1) as f64
}

/// `dlogits[t] += coef · 2 · lse_t · softmax(logits[t]) / n`.
pub fn router_z_loss_backward<T: Float>(
    dlogits: &mut [T],
    logits: &[T],
    coef: f64,
    n: usize,
    e: usize,
) {
    let mut p = vec![T::ZERO; e];
    for (d, l) in dlogits.chunks_exact_mut(e).zip(logits.chunks_exact(e)) {
        let lse = logsumexp(l);
        softmax(&mut p, l);
        let s = T::from_f64(coef * 2.0 / n as f64) * lse;
        for (d, p) in d.iter_mut().zip(&p) {
            *d += s * *p;
        }
    }
}

/// Domain-supervised routing: `mean −log probs[t, domains[t]]` over rows
/// with a domain (`domains[t] < E`). Returns the loss and the row count.
pub fn domain_routing_loss_forward<T: Float>(
    probs: &[T],
    domains: &[u8],
    e: usize,
) -> (f64, usize) {
    let mut sum = 0.0;
    let mut count = 0;
    for (p, &d) in probs.chunks_exact(e).zip(domains) {
        if (d as usize) < e {
            sum -= p[d as usize].to_f64().ln();
            count += 1;
        }
    }
    (if count > 0 { sum / count as f64 } else { 0.0 }, count)
}

/// `dlogits[t] += coef · (probs[t] − onehot(domains[t])) / count`.
pub fn domain_routing_loss_backward<T: Float>(
    dlogits: &mut [T],
    probs: &[T],
    domains: &[u8],
    coef: f64,
    count: usize,
    e: usize,
) {
    if count == 0 {
        return;
    }
    let s = T::from_f64(coef / count as f64);
    for ((dl, p), &d) in dlogits
        .chunks_exact_mut(e)
        .zip(probs.chunks_exact(e))
        .zip(domains)
    {
        if (d as usize) < e {
            for (j, (dl, p)) in dl.iter_mut().zip(p).enumerate() {
                let onehot = if j == d as usize { T::ONE } else { T::ZERO };
                *dl += s * (*p - onehot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::ops::gradcheck::*;
    use crate::train::ops::router::{router_backward, router_forward};

    #[test]
    fn cross_entropy_gradient_matches_finite_differences() {
        let mut rng = crate::rng::Rng::new(10);
        let (n, v) = (4, 7);
        let targets = [3u32, IGNORE, 0, 6];
        let mut inputs = vec![randn(&mut rng, n * v, 2.0)];
        let count = 3.0;
        let mut d = vec![0.0; n * v];
        cross_entropy_backward(&mut d, &inputs[0], &targets, 1.0 / count, v);
        check_gradients(
            "cross_entropy",
            &mut inputs,
            &[d],
            &["logits"],
            100,
            1e-7,
            |x| {
                let mut losses = vec![0.0; n];
                cross_entropy_forward(&mut losses, &x[0], &targets, v);
                losses.iter().sum::<f64>() / count
            },
        );
    }

    #[test]
    fn auxiliary_losses_gradients_match_finite_differences() {
        let mut rng = crate::rng::Rng::new(11);
        let (n, e, k) = (7, 4, 2);
        let domains = [0u8, 3, 255, 1, 1, 2, 255];
        let (c_lb, c_z, c_d) = (0.7, 0.3, 0.5);
        let mut inputs = vec![randn(&mut rng, n * e, 1.5)];
        let total = |x: &[Vec<f64>]| {
            let (mut p, mut idx, mut w) = (vec![0.0; n * e], vec![0u32; n * k], vec![0.0; n * k]);
            router_forward(&mut p, &mut idx, &mut w, &x[0], n, e, k);
            let (lb, _) = load_balance_forward(&p, &idx, n, e);
            let z = router_z_loss_forward(&x[0], n, e);
            let (dom, _) = domain_routing_loss_forward(&p, &domains, e);
            c_lb * lb + c_z * z + c_d * dom
        };
        let logits = inputs[0].clone();
        let (mut p, mut idx, mut w) = (vec![0.0; n * e], vec![0u32; n * k], vec![0.0; n * k]);
        router_forward(&mut p, &mut idx, &mut w, &logits, n, e, k);
        let (_, f) = load_balance_forward(&p, &idx, n, e);
        let mut dprobs = vec![0.0; n * e];
        load_balance_backward(&mut dprobs, &f, c_lb, n, e);
        let mut dl = vec![0.0; n * e];
        router_backward(
            &mut dl,
            &vec![0.0; n * k],
            Some(&dprobs),
            &p,
            &idx,
            &w,
            n,
            e,
            k,
        );
        router_z_loss_backward(&mut dl, &logits, c_z, n, e);
        let (_, count) = domain_routing_loss_forward(&p, &domains, e);
        domain_routing_loss_backward(&mut dl, &p, &domains, c_d, count, e);
        check_gradients(
            "aux losses",
            &mut inputs,
            &[dl],
            &["router logits"],
            100,
            1e-7,
            total,
        );
    }
}
