//! Causal grouped-query attention over a KV cache.
//! Layouts:
//! - `q`: `[n, n_heads, head_dim]`, row `t` at position `pos0 + t` (rotated)
//! - `k_cache`, `v_cache`: `[n_kv_heads, max_seq, head_dim]`, filled up to
//!   position `pos0 + n - 1` (see `kv_cache_write`)
//! - `out`: `[n, n_heads, head_dim]`
//!
//! Query head `h` reads kv head `h / (n_heads / n_kv_heads)`. Row `t`
//! attends to positions `max(0, p - window + 1) ..= p` with `p = pos0 + t`
//! (no window: from 0). Scores are scaled by `1/sqrt(head_dim)` and the
//! softmax is taken in f32 after subtracting the row maximum.
//!
//! Few rows (decode) go row by row, one task per (row, head), with dot
//! products over the cached keys. Many rows (prefill) go head by head as
//! two matrix products, `Q·Kᵀ` then `P·V`, through sgemm.

use super::vector::{axpy, dot};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub n: usize,
    pub pos0: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub max_seq: usize,
    /// Sliding window (Mistral): how many most recent positions a query sees.
    pub window: Option<usize>,
}

pub fn attention_forward(
    out: &mut [f32],
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    s: AttentionShape,
) {
    let AttentionShape {
        n,
        pos0,
        n_heads,
        n_kv_heads,
        head_dim,
        max_seq,
        window: _,
    } = s;
    assert_eq!(
        q.len(),
        n * n_heads * head_dim,
        "attention: q must be [n, n_heads, head_dim]"
    );
    assert_eq!(
        out.len(),
        q.len(),
        "attention: out must be [n, n_heads, head_dim]"
    );
    assert_eq!(
        k_cache.len(),
        n_kv_heads * max_seq * head_dim,
        "attention: bad k_cache size"
    );
    assert_eq!(v_cache.len(), k_cache.len(), "attention: bad v_cache size");
    assert!(pos0 + n <= max_seq, "attention: positions exceed the cache");
    assert!(
        n_heads.is_multiple_of(n_kv_heads),
        "attention: n_heads must be a multiple of n_kv_heads"
    );
    if n >= GEMM_MIN_ROWS {
        attention_by_heads(out, q, k_cache, v_cache, s);
    } else {
        attention_by_rows(out, q, k_cache, v_cache, s);
    }
}

/// From this many query rows on, attention goes through matrix products.
const GEMM_MIN_ROWS: usize = 16;

/// The first position row `t` may attend to.
fn first_visible(p: usize, window: Option<usize>) -> usize {
    window.map_or(0, |w| (p + 1).saturating_sub(w))
}

fn attention_by_rows(
    out: &mut [f32],
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    s: AttentionShape,
) {
    let AttentionShape {
        n,
        pos0,
        n_heads,
        n_kv_heads,
        head_dim,
        max_seq,
        window,
    } = s;
    let group = n_heads / n_kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();

    // One task per (row, head): `out` chunk i is row i / n_heads, head i % n_heads.
    out.par_chunks_mut(head_dim).enumerate().for_each_init(
        || Vec::<f32>::with_capacity(pos0 + n),
        |scores, (i, out_h)| {
            let (t, h) = (i / n_heads, i % n_heads);
            let p = pos0 + t;
            let start = first_visible(p, window);
            let q_h = &q[i * head_dim..(i + 1) * head_dim];
            let kv_base = (h / group) * max_seq * head_dim;
            let keys = &k_cache[kv_base..kv_base + max_seq * head_dim];
            let values = &v_cache[kv_base..kv_base + max_seq * head_dim];

            scores.clear();
            scores.extend(
                (start..=p).map(|j| dot(&keys[j * head_dim..(j + 1) * head_dim], q_h) * scale),
            );
            softmax_weighted_sum(out_h, scores, |jj| {
                let j = start + jj;
                &values[j * head_dim..(j + 1) * head_dim]
            });
        },
    );
}

/// `out = Σ_j softmax(scores)_j · value(j)`, the softmax in f32 after
/// subtracting the maximum; `scores` is overwritten. Shared by the
/// row-by-row attention here and the paged attention of serving.
pub(super) fn softmax_weighted_sum<'v>(
    out: &mut [f32],
    scores: &mut [f32],
    value: impl Fn(usize) -> &'v [f32],
) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for sc in scores.iter_mut() {
        *sc = (*sc - max).exp();
        sum += *sc;
    }
    let inv = 1.0 / sum;
    out.fill(0.0);
    for (j, sc) in scores.iter().enumerate() {
        axpy(out, sc * inv, value(j));
    }
}

fn attention_by_heads(
    out: &mut [f32],
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    s: AttentionShape,
) {
    let AttentionShape {
        n,
        pos0,
        n_heads,
        n_kv_heads,
        head_dim: hd,
        max_seq,
        window,
    } = s;
    let group = n_heads / n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let q_dim = n_heads * hd;
    let len = pos0 + n; // keys the last row sees
    let out_ptr = SendPtr(out.as_mut_ptr());
    (0..n_heads)
        .into_par_iter()
        .for_each_init(Vec::<f32>::new, |probs, h| {
            let kv_base = (h / group) * max_seq * hd;
            let keys = &k_cache[kv_base..kv_base + len * hd];
            let values = &v_cache[kv_base..kv_base + len * hd];
            probs.clear();
            probs.resize(n * len, 0.0);
            // SAFETY (both products): the strides address q's head-h columns,
            // the first `len` cached rows and the [n, len] scratch; head h
            // writes only columns h·hd..(h+1)·hd of `out`, disjoint per task.
            unsafe {
                // scores[t, j] = scale · q[t, h, :] · keys[j, :]
                matrixmultiply::sgemm(
                    n,
                    hd,
                    len,
                    scale,
                    q.as_ptr().add(h * hd),
                    q_dim as isize,
                    1,
                    keys.as_ptr(),
                    1,
                    hd as isize,
                    0.0,
                    probs.as_mut_ptr(),
                    len as isize,
                    1,
                );
            }
            for (t, row) in probs.chunks_exact_mut(len).enumerate() {
                let p = pos0 + t;
                let start = first_visible(p, window);
                let visible = &mut row[start..=p];
                let max = visible.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for x in visible.iter_mut() {
                    *x = (*x - max).exp();
                    sum += *x;
                }
                let inv = 1.0 / sum;
                visible.iter_mut().for_each(|x| *x *= inv);
                row[..start].fill(0.0);
                row[p + 1..].fill(0.0);
            }
            unsafe {
                // out[t, h, :] = Σ_j probs[t, j] · values[j, :]
                matrixmultiply::sgemm(
                    n,
                    len,
                    hd,
                    1.0,
                    probs.as_ptr(),
                    len as isize,
                    1,
                    values.as_ptr(),
                    hd as isize,
                    1,
                    0.0,
                    out_ptr.get().add(h * hd),
                    q_dim as isize,
                    1,
                );
            }
        });
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint column ranges to rayon tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::ops::kv_cache::kv_cache_write;
    use crate::rng::Rng;

    /// Textbook attention with explicit mask, f64, no cache.
    fn naive(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        n: usize,
        nh: usize,
        nkv: usize,
        hd: usize,
    ) -> Vec<f32> {
        let mut out = vec![0f32; n * nh * hd];
        for h in 0..nh {
            let kh = h / (nh / nkv);
            for t in 0..n {
                let qv = &q[(t * nh + h) * hd..][..hd];
                let s: Vec<f64> = (0..=t)
                    .map(|j| {
                        let kv = &k[(j * nkv + kh) * hd..][..hd];
                        qv.iter()
                            .zip(kv)
                            .map(|(a, b)| f64::from(*a) * f64::from(*b))
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..hd {
                    let acc: f64 = (0..=t)
                        .map(|j| e[j] / z * f64::from(v[(j * nkv + kh) * hd + d]))
                        .sum();
                    out[(t * nh + h) * hd + d] = acc as f32;
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_gqa_prefill_and_split_decode() {
        let (n, nh, nkv, hd, max_seq) = (7, 4, 2, 8, 16);
        let mut rng = Rng::new(5);
        let mut rand =
            |len: usize| -> Vec<f32> { (0..len).map(|_| rng.next_normal() as f32).collect() };
        let (q, k, v) = (rand(n * nh * hd), rand(n * nkv * hd), rand(n * nkv * hd));
        let want = naive(&q, &k, &v, n, nh, nkv, hd);

        // All at once.
        let (mut kc, mut vc) = (
            vec![0f32; nkv * max_seq * hd],
            vec![0f32; nkv * max_seq * hd],
        );
        kv_cache_write(&mut kc, &mut vc, &k, &v, n, 0, nkv, hd, max_seq);
        let mut out = vec![0f32; n * nh * hd];
        let shape = AttentionShape {
            n,
            pos0: 0,
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
            max_seq,
            window: None,
        };
        attention_forward(&mut out, &q, &kc, &vc, shape);
        let err = out
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-5, "prefill err {err}");

        // Prefill 4 rows, then one row at a time.
        let (mut kc, mut vc) = (
            vec![0f32; nkv * max_seq * hd],
            vec![0f32; nkv * max_seq * hd],
        );
        let (qd, kvd) = (nh * hd, nkv * hd);
        let mut got = vec![0f32; n * qd];
        let mut pos = 0;
        for len in [4usize, 1, 1, 1] {
            kv_cache_write(
                &mut kc,
                &mut vc,
                &k[pos * kvd..(pos + len) * kvd],
                &v[pos * kvd..(pos + len) * kvd],
                len,
                pos,
                nkv,
                hd,
                max_seq,
            );
            let s = AttentionShape {
                n: len,
                pos0: pos,
                ..shape
            };
            attention_forward(
                &mut got[pos * qd..(pos + len) * qd],
                &q[pos * qd..(pos + len) * qd],
                &kc,
                &vc,
                s,
            );
            pos += len;
        }
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-5, "incremental err {err}");
    }

    #[test]
    fn matrix_path_matches_naive_for_long_prefill_and_continuation() {
        let (n, nh, nkv, hd, max_seq) = (45, 4, 1, 16, 64);
        assert!(n - 20 >= GEMM_MIN_ROWS && 20 >= GEMM_MIN_ROWS);
        let mut rng = Rng::new(9);
        let mut rand =
            |len: usize| -> Vec<f32> { (0..len).map(|_| 2.0 * rng.next_normal() as f32).collect() };
        let (q, k, v) = (rand(n * nh * hd), rand(n * nkv * hd), rand(n * nkv * hd));
        let want = naive(&q, &k, &v, n, nh, nkv, hd);
        let (mut kc, mut vc) = (
            vec![0f32; nkv * max_seq * hd],
            vec![0f32; nkv * max_seq * hd],
        );
        let (qd, kvd) = (nh * hd, nkv * hd);
        let mut got = vec![0f32; n * qd];
        // Two chunks: 20 rows from position 0, then 25 more after them.
        for (pos, len) in [(0usize, 20usize), (20, 25)] {
            kv_cache_write(
                &mut kc,
                &mut vc,
                &k[pos * kvd..(pos + len) * kvd],
                &v[pos * kvd..(pos + len) * kvd],
                len,
                pos,
                nkv,
                hd,
                max_seq,
            );
            let s = AttentionShape {
                n: len,
                pos0: pos,
                n_heads: nh,
                n_kv_heads: nkv,
                head_dim: hd,
                max_seq,
                window: None,
            };
            attention_forward(
                &mut got[pos * qd..(pos + len) * qd],
                &q[pos * qd..(pos + len) * qd],
                &kc,
                &vc,
                s,
            );
        }
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-5, "matrix path err {err}");
        // The row path gives the same for the same rows, window or not.
        for window in [None, Some(7)] {
            let s = AttentionShape {
                n: 25,
                pos0: 20,
                n_heads: nh,
                n_kv_heads: nkv,
                head_dim: hd,
                max_seq,
                window,
            };
            let (mut a, mut b) = (vec![0f32; 25 * qd], vec![0f32; 25 * qd]);
            attention_by_heads(&mut a, &q[20 * qd..], &kc, &vc, s);
            attention_by_rows(&mut b, &q[20 * qd..], &kc, &vc, s);
            let err = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-5, "rows vs heads, window {window:?}: {err}");
        }
    }

    #[test]
    fn window_limits_the_keys_seen() {
        let (nh, hd, max_seq) = (1, 4, 8);
        // Values are one-hot by position so the output shows which were used.
        let n = 4;
        let q = vec![0f32; n * hd]; // zero query: uniform weights over visible keys
        let k = vec![0f32; n * hd];
        let mut v = vec![0f32; n * hd];
        for j in 0..n {
            v[j * hd + j] = 1.0;
        }
        let (mut kc, mut vc) = (vec![0f32; max_seq * hd], vec![0f32; max_seq * hd]);
        kv_cache_write(&mut kc, &mut vc, &k, &v, n, 0, 1, hd, max_seq);
        let mut out = vec![0f32; n * hd];
        let s = AttentionShape {
            n,
            pos0: 0,
            n_heads: nh,
            n_kv_heads: 1,
            head_dim: hd,
            max_seq,
            window: Some(2),
        };
        attention_forward(&mut out, &q, &kc, &vc, s);
        // Row 3 sees positions 2 and 3 only.
        assert_eq!(&out[3 * hd..4 * hd], &[0.0, 0.0, 0.5, 0.5]);
    }
}
