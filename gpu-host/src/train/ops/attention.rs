//! Causal grouped-query attention over packed documents: a row attends only
//! to earlier rows of its own document, never across a boundary.
//! Layouts:
//! - `q`, `dq`, `out`, `dout`: `[n, n_heads, head_dim]` (q already rotated)
//! - `k`, `v`, `dk`, `dv`: `[n, n_kv_heads, head_dim]`
//! - `docs`: `(start, len)` of each document, in order, covering `0..n`
//! - `probs`: the softmax of every (document, head), `[len, len]` each,
//!   concatenated document by document (see [`probs_len`]); saved by the
//!   forward for the backward.
//!
//! Query head `h` reads kv head `h / (n_heads / n_kv_heads)`; scores are
//! scaled by `1/sqrt(head_dim)`. Each (document, head) is two matrix
//! products, `Q·Kᵀ` then `P·V`, one rayon task each.

use crate::train::float::{Float, SendPtr};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// Size of the `probs` buffer for these documents.
pub fn probs_len(docs: &[(usize, usize)], n_heads: usize) -> usize {
    docs.iter().map(|&(_, l)| n_heads * l * l).sum()
}

fn probs_offsets(docs: &[(usize, usize)], n_heads: usize) -> Vec<usize> {
    let mut off = 0;
    docs.iter()
        .map(|&(_, l)| {
            let o = off;
            off += n_heads * l * l;
            o
        })
        .collect()
}

pub fn attention_forward<T: Float>(
    out: &mut [T],
    probs: &mut [T],
    q: &[T],
    k: &[T],
    v: &[T],
    docs: &[(usize, usize)],
    s: AttnShape,
) {
    let AttnShape {
        n_heads: h,
        n_kv_heads: kvh,
        head_dim: d,
    } = s;
    let n: usize = docs.iter().map(|&(_, l)| l).sum();
    assert_eq!(
        q.len(),
        n * h * d,
        "attention: q must be [n, n_heads, head_dim]"
    );
    assert_eq!(
        k.len(),
        n * kvh * d,
        "attention: k must be [n, n_kv_heads, head_dim]"
    );
    assert_eq!(
        v.len(),
        k.len(),
        "attention: v must be [n, n_kv_heads, head_dim]"
    );
    assert_eq!(
        out.len(),
        q.len(),
        "attention: out must be [n, n_heads, head_dim]"
    );
    assert_eq!(probs.len(), probs_len(docs, h), "attention: bad probs size");
    let group = h / kvh;
    let scale = T::from_f64(1.0 / (d as f64).sqrt());
    let offsets = probs_offsets(docs, h);
    let (out_p, probs_p) = (SendPtr(out.as_mut_ptr()), SendPtr(probs.as_mut_ptr()));
    (0..docs.len() * h).into_par_iter().for_each(|task| {
        let (di, head) = (task / h, task % h);
        let (start, l) = docs[di];
        let kv = head / group;
        // SAFETY: task (di, head) writes only its own [l, l] block of
        // probs and the rows start..start+l of head `head` in out.
        unsafe {
            let p = probs_p.get().add(offsets[di] + head * l * l);
            let pm = std::slice::from_raw_parts_mut(p, l * l);
            T::gemm(
                l,
                d,
                l,
                scale,
                q.as_ptr().add((start * h + head) * d),
                (h * d) as isize,
                1,
                k.as_ptr().add((start * kvh + kv) * d),
                1,
                (kvh * d) as isize,
                T::ZERO,
                p,
                l as isize,
                1,
            );
            for i in 0..l {
                let row = &mut pm[i * l..(i + 1) * l];
                let mut max = T::NEG_INFINITY;
                for x in &row[..=i] {
                    max = max.max(*x);
                }
                let mut sum = T::ZERO;
                for x in &mut row[..=i] {
                    *x = (*x - max).exp();
                    sum += *x;
                }
                let inv = T::ONE / sum;
                for x in &mut row[..=i] {
                    *x *= inv;
                }
                for x in &mut row[i + 1..] {
                    *x = T::ZERO;
                }
            }
            T::gemm(
                l,
                l,
                d,
                T::ONE,
                p,
                l as isize,
                1,
                v.as_ptr().add((start * kvh + kv) * d),
                (kvh * d) as isize,
                1,
                T::ZERO,
                out_p.get().add((start * h + head) * d),
                (h * d) as isize,
                1,
            );
        }
    });
}

/// `dq`, `dk`, `dv` are overwritten.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<T: Float>(
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
    dout: &[T],
    q: &[T],
    k: &[T],
    v: &[T],
    probs: &[T],
    docs: &[(usize, usize)],
    s: AttnShape,
) {
    let AttnShape {
        n_heads: h,
        n_kv_heads: kvh,
        head_dim: d,
    } = s;
    assert_eq!(dq.len(), q.len(), "attention: dq must match q");
    assert_eq!(dk.len(), k.len(), "attention: dk must match k");
    assert_eq!(dv.len(), v.len(), "attention: dv must match v");
    assert_eq!(probs.len(), probs_len(docs, h), "attention: bad probs size");
    dq.fill(T::ZERO);
    dk.fill(T::ZERO);
    dv.fill(T::ZERO);
    let group = h / kvh;
    let scale = T::from_f64(1.0 / (d as f64).sqrt());
    let offsets = probs_offsets(docs, h);
    let (dq_p, dk_p, dv_p) = (
        SendPtr(dq.as_mut_ptr()),
        SendPtr(dk.as_mut_ptr()),
        SendPtr(dv.as_mut_ptr()),
    );
    // One task per (document, kv head): the query heads of a group add into
    // the same dk/dv rows, so they run in order inside the task.
    (0..docs.len() * kvh)
        .into_par_iter()
        .for_each_init(Vec::new, |dp, task| {
            let (di, kv) = (task / kvh, task % kvh);
            let (start, l) = docs[di];
            dp.clear();
            dp.resize(l * l, T::ZERO);
            for head in kv * group..(kv + 1) * group {
                let pm = &probs[offsets[di] + head * l * l..][..l * l];
                let q_h = (start * h + head) * d;
                let kv_off = (start * kvh + kv) * d;
                // SAFETY: task (di, kv) writes rows start..start+l of the heads
                // in group kv of dq, and of kv head kv in dk and dv: disjoint
                // from every other task.
                unsafe {
                    // dV += Pᵀ · dO
                    T::gemm(
                        l,
                        l,
                        d,
                        T::ONE,
                        pm.as_ptr(),
                        1,
                        l as isize,
                        dout.as_ptr().add(q_h),
                        (h * d) as isize,
                        1,
                        T::ONE,
                        dv_p.get().add(kv_off),
                        (kvh * d) as isize,
                        1,
                    );
                    // dP = dO · Vᵀ
                    T::gemm(
                        l,
                        d,
                        l,
                        T::ONE,
                        dout.as_ptr().add(q_h),
                        (h * d) as isize,
                        1,
                        v.as_ptr().add(kv_off),
                        1,
                        (kvh * d) as isize,
                        T::ZERO,
                        dp.as_mut_ptr(),
                        l as isize,
                        1,
                    );
                }
                // dS = P ⊙ (dP − rowsum(P ⊙ dP)), then the 1/sqrt(d) scale.
                for i in 0..l {
                    let (p, g) = (&pm[i * l..(i + 1) * l], &mut dp[i * l..(i + 1) * l]);
                    let dot: T = p[..=i].iter().zip(&g[..=i]).map(|(p, g)| *p * *g).sum();
                    for j in 0..=i {
                        g[j] = p[j] * (g[j] - dot) * scale;
                    }
                    for x in &mut g[i + 1..] {
                        *x = T::ZERO;
                    }
                }
                unsafe {
                    // dQ = dS · K
                    T::gemm(
                        l,
                        l,
                        d,
                        T::ONE,
                        dp.as_ptr(),
                        l as isize,
                        1,
                        k.as_ptr().add(kv_off),
                        (kvh * d) as isize,
                        1,
                        T::ONE,
                        dq_p.get().add(q_h),
                        (h * d) as isize,
                        1,
                    );
                    // dK += dSᵀ · Q
                    T::gemm(
                        l,
                        l,
                        d,
                        T::ONE,
                        dp.as_ptr(),
                        1,
                        l as isize,
                        q.as_ptr().add(q_h),
                        (h * d) as isize,
                        1,
                        T::ONE,
                        dk_p.get().add(kv_off),
                        (kvh * d) as isize,
                        1,
                    );
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::ops::gradcheck::*;

    #[test]
    fn attention_gradient_matches_finite_differences() {
        let mut rng = crate::rng::Rng::new(7);
        let s = AttnShape {
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 3,
        };
        let docs = [(0usize, 3usize), (3, 1), (4, 4)];
        let n = 8;
        let r = randn(&mut rng, n * 4 * 3, 1.0);
        let mut inputs = vec![
            randn(&mut rng, n * 4 * 3, 1.0),
            randn(&mut rng, n * 2 * 3, 1.0),
            randn(&mut rng, n * 2 * 3, 1.0),
        ];
        let fwd = |x: &[Vec<f64>]| {
            let (mut out, mut probs) = (vec![0.0; n * 12], vec![0.0; probs_len(&docs, 4)]);
            attention_forward(&mut out, &mut probs, &x[0], &x[1], &x[2], &docs, s);
            (out, probs)
        };
        let (_, probs) = fwd(&inputs);
        let mut g = vec![vec![0.0; n * 12], vec![0.0; n * 6], vec![0.0; n * 6]];
        let [dq, dk, dv] = &mut g[..] else {
            unreachable!()
        };
        attention_backward(
            dq, dk, dv, &r, &inputs[0], &inputs[1], &inputs[2], &probs, &docs, s,
        );
        check_gradients(
            "attention",
            &mut inputs,
            &g,
            &["q", "k", "v"],
            200,
            1e-7,
            |x| project(&fwd(x).0, &r),
        );
    }

    #[test]
    fn no_attention_crosses_a_document_boundary() {
        let mut rng = crate::rng::Rng::new(8);
        let s = AttnShape {
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 4,
        };
        let n = 6;
        let (q, k, mut v) = (
            randn(&mut rng, n * 8, 1.0),
            randn(&mut rng, n * 4, 1.0),
            randn(&mut rng, n * 4, 1.0),
        );
        let docs = [(0usize, 2usize), (2, 4)];
        let run = |v: &[f64]| {
            let (mut out, mut probs) = (vec![0.0; n * 8], vec![0.0; probs_len(&docs, 2)]);
            attention_forward(&mut out, &mut probs, &q, &k, v, &docs, s);
            out
        };
        let before = run(&v);
        // Changing the first document's values leaves the second untouched.
        v[0] += 10.0;
        let after = run(&v);
        assert_ne!(before[..16], after[..16]);
        assert_eq!(before[16..], after[16..]);
    }
}
